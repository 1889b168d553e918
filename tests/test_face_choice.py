"""Which face fmr uses when a photo shows several (`fmr.faces.policy`, `--multi-face main`, the
default): the person the photo is of, not a bystander cut off by the photo's edge.

Composites paste real LFW photos (of training-side people: not in pair folds 6-10) onto a grey
canvas: a face half off the left edge, scaled up so that its box (which MTCNN extends past the
edge) is bigger than the centred face's.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fmr.faces import Face, detect_faces, load_image, select_face
from fmr.faces.policy import (
    EDGE_MARGIN_PIXELS,
    MIN_INSIDE_FRACTION,
    UNSURE_WIDTH_FACTOR,
    in_frame,
    likely_faces,
    main_first,
    visible_area,
)

SHAPE = (300, 500, 3)


def _face(x1, y1, x2, y2, score=0.99, eyes_y=None) -> Face:
    """A synthetic face whose eyes and nose sit inside its box, as MTCNN places them."""
    w, h = x2 - x1, y2 - y1
    ey = y1 + 0.4 * h if eyes_y is None else eyes_y
    points = [[x1 + 0.3 * w, ey], [x1 + 0.7 * w, ey], [x1 + 0.5 * w, y1 + 0.6 * h],
              [x1 + 0.35 * w, y1 + 0.8 * h], [x1 + 0.65 * w, y1 + 0.8 * h]]
    return Face(np.array([x1, y1, x2, y2], np.float32), score, np.array(points, np.float32))


# ------------------------------------------------------------------ the rule (no data needed)


def test_in_frame_needs_the_eyes_and_nose_inside_and_nearly_all_the_box() -> None:
    assert in_frame(_face(200, 100, 300, 200), SHAPE)
    assert not in_frame(_face(-70, 100, 80, 250), SHAPE)  # left eye past the left edge
    # An eye on the border's last pixels is a face cut by the edge.
    eye_on_border = _face(-28.5, 100, 71.5, 200)  # left eye at x = 1.5
    assert not in_frame(eye_on_border, SHAPE)
    margin = EDGE_MARGIN_PIXELS
    assert in_frame(_face(200, 0, 300, 100, eyes_y=margin), SHAPE)
    assert not in_frame(_face(200, 0, 300, 100, eyes_y=margin - 1), SHAPE)
    assert not in_frame(_face(200, 200, 300, 300, eyes_y=SHAPE[0] - margin), SHAPE)
    # Eyes inside but a fifth of the box past the edge: cut (the cheek and ear are outside).
    assert not in_frame(_face(-20, 100, 80, 200), SHAPE)
    # A box running a few pixels past the edge (forehead, chin) is still a face in frame.
    inside = 1 - (1 - MIN_INSIDE_FRACTION) / 2
    assert in_frame(_face(200, 300 - 100 * inside, 300, 300 + 100 * (1 - inside)), SHAPE)


def test_visible_area_counts_only_the_box_inside_the_photo() -> None:
    assert visible_area(_face(200, 100, 300, 200), SHAPE) == 100 * 100
    assert visible_area(_face(-50, 100, 100, 250), SHAPE) == 100 * 150
    assert visible_area(_face(450, 250, 600, 400), SHAPE) == 50 * 50
    assert visible_area(_face(-200, 100, -10, 200), SHAPE) == 0


def test_main_prefers_a_face_in_frame_to_a_bigger_one_cut_by_the_edge() -> None:
    bystander = _face(-70, 60, 80, 250, score=0.73)  # 150x190 box, its left eye outside
    subject = _face(200, 95, 290, 210)  # 90x115, centred
    faces = [bystander, subject]  # the detector's order: largest first
    assert select_face(faces, SHAPE) is subject  # main is the default
    assert select_face(faces, SHAPE, "main") is subject
    assert select_face(faces, SHAPE, "largest") is bystander
    assert select_face(faces, SHAPE, "center") is subject
    # Both count as faces: the subject as the main face, the bystander as the largest box.
    likely, ignored = likely_faces(faces, SHAPE)
    assert likely == [subject, bystander] and ignored == 0


def test_a_masked_subject_with_a_low_score_is_still_the_main_face() -> None:
    """MTCNN scores masked faces lower: the main face counts whatever its score, while a
    low-score detection that is neither main nor the largest stays out."""
    bystander = _face(-70, 60, 80, 250, score=0.999)
    masked_subject = _face(200, 95, 290, 210, score=0.80)
    clutter = _face(400, 20, 430, 50, score=0.85)
    likely, ignored = likely_faces([bystander, masked_subject, clutter], SHAPE)
    assert likely == [masked_subject, bystander] and ignored == 1
    assert select_face([bystander, masked_subject, clutter], SHAPE) is masked_subject
    assert select_face([bystander, masked_subject, clutter], SHAPE, "largest") is bystander


def test_several_faces_in_frame_the_largest_wins() -> None:
    small, big = _face(40, 40, 120, 140), _face(250, 60, 380, 220)
    assert select_face([small, big], SHAPE) is big
    assert main_first([small, big], SHAPE) == [big, small]
    # Among faces cut by the edge too, the bigger part inside the photo wins.
    mostly_out = _face(-180, 0, 20, 250)  # 200x250 box, 20x250 inside
    half_out = _face(440, 50, 560, 200)  # 120x150 box, 60x150 inside
    assert select_face([mostly_out, half_out], SHAPE) is half_out
    assert select_face([mostly_out, half_out], SHAPE, "largest") is mostly_out


def test_a_face_mtcnn_is_unsure_of_needs_to_be_much_bigger_to_win() -> None:
    """MTCNN's false detections (a torso, a pattern) score under 0.95 and can be bigger than
    the face; a masked face scores lower too. An unsure face beats a sure one only when it is
    more than UNSURE_WIDTH_FACTOR times as wide."""
    face = _face(200, 40, 240, 80, score=0.999)  # 40 px square
    torso = _face(180, 120, 280, 250, score=0.85)  # 100 px wide: 2.5 times
    assert select_face([torso, face], SHAPE) is face
    assert select_face([torso, face], SHAPE, "largest") is torso
    wide = 40 * UNSURE_WIDTH_FACTOR + 10
    masked = _face(100, 60, 100 + wide, 60 + wide, score=0.85)
    assert select_face([masked, face], SHAPE) is masked


def test_a_single_face_is_chosen_even_when_cut_by_the_edge() -> None:
    only = _face(-70, 60, 80, 250, score=0.9)
    for policy in ("main", "largest", "center", "require-one"):
        assert select_face([only], SHAPE, policy) is only


# ---------------------------------------------------------------- composites of real photos


def _photo(lfw_dir: Path, name: str, index: int) -> np.ndarray:
    return load_image(lfw_dir / "images" / name / f"{name}_{index:04d}.jpg")


def _paste(canvas: np.ndarray, photo: np.ndarray, x: int, y: int, scale: float) -> None:
    """Paste `photo` scaled by `scale` with its top-left corner at (x, y), clipped to the
    canvas (x < 0 puts part of it off the left edge)."""
    photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    h, w = photo.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, canvas.shape[1]), min(y + h, canvas.shape[0])
    canvas[y0:y1, x0:x1] = photo[y0 - y : y1 - y, x0 - x : x1 - x]


def _centre_of(face: Face) -> np.ndarray:
    return np.array(face.center)


@pytest.fixture(scope="module")
def edge_composite(lfw_dir: Path) -> np.ndarray:
    """Tony Blair half off the left edge, 1.4x bigger, beside Colin Powell in the middle (both
    training-side people: not in LFW pair folds 6-10)."""
    from fmr.data.splits import evaluation_people

    assert not {"Tony_Blair", "Colin_Powell"} & evaluation_people(lfw_dir.parent)
    canvas = np.full(SHAPE, 128, np.uint8)
    _paste(canvas, _photo(lfw_dir, "Tony_Blair", 1), -170, -25, 1.4)
    _paste(canvas, _photo(lfw_dir, "Colin_Powell", 1), 125, 25, 1.0)  # face near (250, 150)
    return canvas


def test_composite_bystander_half_off_the_edge_loses_to_the_centred_face(edge_composite):
    faces = detect_faces(edge_composite)
    assert len(likely_faces(faces, SHAPE)[0]) == 2
    largest = select_face(faces, SHAPE, "largest")
    main = select_face(faces, SHAPE)
    # MTCNN's box for the cut face runs past the edge and is the bigger one: `largest` takes it.
    assert largest.box[0] < 0 and not in_frame(largest, SHAPE)
    assert largest.area > main.area
    assert np.linalg.norm(_centre_of(main) - (250, 150)) < 20
    assert in_frame(main, SHAPE)
    assert select_face(faces, SHAPE, "center") is main


def test_composite_masked_centre_face_beats_an_unmasked_face_cut_by_the_edge(edge_composite):
    from fmr.masks import MASK_STYLES, mask_face

    centre = select_face(detect_faces(edge_composite), SHAPE)
    for style in MASK_STYLES:
        masked, _ = mask_face(edge_composite, centre, style, np.random.default_rng(0))
        faces = detect_faces(masked)
        main = select_face(faces, SHAPE)
        assert np.linalg.norm(_centre_of(main) - (250, 150)) < 20, style
        assert not in_frame(select_face(faces, SHAPE, "largest"), SHAPE), style


def test_composite_two_full_faces_of_different_sizes_the_largest_wins(lfw_dir: Path):
    canvas = np.full(SHAPE, 128, np.uint8)
    _paste(canvas, _photo(lfw_dir, "Tony_Blair", 2), 0, 25, 1.0)  # face near (125, 150)
    _paste(canvas, _photo(lfw_dir, "Colin_Powell", 2), 290, 80, 0.8)  # face near (390, 180)
    faces = detect_faces(canvas)
    likely, _ = likely_faces(faces, SHAPE)
    assert len(likely) == 2 and all(in_frame(f, SHAPE) for f in likely)
    main = select_face(faces, SHAPE)
    assert main is select_face(faces, SHAPE, "largest")
    assert np.linalg.norm(_centre_of(main) - (125, 150)) < 20
    assert likely[0] is main


def test_a_single_face_photo_gives_the_same_face_under_every_policy(lfw_dir: Path):
    image = _photo(lfw_dir, "Colin_Powell", 3)
    faces = detect_faces(image)
    main = select_face(faces, image.shape)
    for policy in ("largest", "center"):
        np.testing.assert_array_equal(select_face(faces, image.shape, policy).box, main.box)


# ------------------------------------------------------------------------------ real photos

# Training-side LFW photos (people outside pair folds 6-10) where the largest box is a bystander
# cut by the photo's edge (benchmarks/face_choice.py lists them), with another photo of the
# labelled person to check who each face is.
EDGE_BYSTANDER_PHOTOS = (
    ("Antonio_Banderas", 1, 2),  # bystander half off the left edge, eyes outside
    ("Charles_Schumer", 2, 1),  # bystander's eyes inside, a third of its box off the right edge
    ("Colin_Powell", 222, 1),
)


@pytest.mark.parametrize(("name", "index", "other"), EDGE_BYSTANDER_PHOTOS)
def test_real_photos_main_takes_the_labelled_person_not_the_edge_bystander(
    lfw_dir: Path, name: str, index: int, other: int
):
    from fmr.data.splits import evaluation_people
    from fmr.verify.dlib_reference import DlibReference

    assert name not in evaluation_people(lfw_dir.parent)
    image = _photo(lfw_dir, name, index)
    faces = detect_faces(image)
    main, largest = select_face(faces, image.shape), select_face(faces, image.shape, "largest")
    assert main is not largest
    assert in_frame(main, image.shape) and not in_frame(largest, image.shape)
    reference_image = _photo(lfw_dir, name, other)
    dlib = DlibReference()
    reference = dlib.embed(reference_image, select_face(detect_faces(reference_image),
                                                        reference_image.shape))
    same = float(dlib.embed(image, main) @ reference)
    bystander = float(dlib.embed(image, largest) @ reference)
    # dlib's cosine: the same person scores about 0.93 and more, other people less.
    assert same > 0.92 and bystander < same - 0.05, (same, bystander)
