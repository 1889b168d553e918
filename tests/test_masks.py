"""fmr.masks on real LFW photos and aligned crops: coverage of nose and mouth, eyes untouched,
determinism, head turn, bad inputs, and the training-time tensor path."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fmr.errors import FaceError, FmrError
from fmr.faces import ARCFACE_TEMPLATE, align_face, detect_faces, landmarks68, load_image
from fmr.masks import (
    COLOURS,
    EVAL_STYLES,
    MASK_STYLES,
    RENDERERS,
    TRAIN_STYLES,
    apply_mask,
    mask_aligned,
    mask_face,
    parse_colour,
    template_landmarks68,
)
from fmr.masks.geometry import mask_geometry
from fmr.masks.render import OUTLINES
from fmr.masks.template import SHAPE_MODES, TEMPLATE_LANDMARKS68

# Different people, skin tones, lighting and head poses (LFW, 250x250); all training-side
# people: nobody from LFW folds 6-10 (the evaluation set) is used to check or tune masks.
PHOTOS = (
    "Denzel_Washington/Denzel_Washington_0001.jpg",
    "Colin_Powell/Colin_Powell_0001.jpg",
    "Hu_Jintao/Hu_Jintao_0001.jpg",
    "Salma_Hayek/Salma_Hayek_0001.jpg",
)
# Every colour family, the skin tones above all: a skin-coloured mask must still show.
TEST_COLOURS = ("white", "black", "light-blue", "red", "skin-light", "skin-medium", "skin-dark",
                "peach", "beige", "tan")
# A clear change: mean absolute difference over a 3x3 patch, summed over R, G, B (0..765).
CLEAR_CHANGE = 30.0
# Eye pixels may differ only by JPEG noise (quality 95), per channel.
JPEG_NOISE = 8


def _jpeg(image: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=95)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _patch(image: np.ndarray, point) -> np.ndarray:
    x, y = (int(round(float(v))) for v in point)
    return image[y - 1 : y + 2, x - 1 : x + 2].astype(np.int32)


def _change(before: np.ndarray, after: np.ndarray, point) -> float:
    return float(np.abs(_patch(after, point) - _patch(before, point)).sum(-1).mean())


@pytest.fixture(scope="module")
def photos(lfw_dir: Path) -> list[tuple[np.ndarray, object, np.ndarray]]:
    """(photo, largest face, its 68 landmarks) for each of PHOTOS."""
    found = []
    for name in PHOTOS:
        image = load_image(lfw_dir / "images" / name)
        face = detect_faces(image)[0]
        found.append((image, face, landmarks68(image, face.box)))
    return found


@pytest.fixture(scope="module")
def crops(photos) -> list[np.ndarray]:
    """Aligned 112x112 crops of the same faces, as JPEG files would hold them."""
    return [_jpeg(align_face(image, face.landmarks)) for image, face, _ in photos]


@pytest.mark.parametrize("renderer", RENDERERS)
def test_every_style_and_colour_covers_nose_and_mouth_and_spares_the_eyes_on_aligned_crops(
    crops, renderer: str
) -> None:
    seed = 0
    for crop in crops:
        before = _jpeg(crop)
        for style in MASK_STYLES:
            for colour in TEST_COLOURS:
                for coverage in (0.0, 1.0):  # the lowest and the highest top edge
                    seed += 1
                    masked, info = mask_aligned(crop, style, seed, colour=colour,
                                                coverage=coverage, renderer=renderer)
                    after = _jpeg(masked)
                    label = f"{renderer} {style} {colour} coverage {coverage}"
                    for point in ARCFACE_TEMPLATE[2:]:  # nose tip, mouth corners
                        assert _change(before, after, point) >= CLEAR_CHANGE, label
                    for point in ARCFACE_TEMPLATE[:2]:  # eye centres
                        diff = np.abs(_patch(after, point) - _patch(before, point)).max()
                        assert diff <= JPEG_NOISE, label
                    assert info["style"] == style and info["renderer"] == renderer
                    assert info["colour"] == parse_colour(colour)[0]


def test_every_style_on_real_photos_masks_the_lower_face_only(photos) -> None:
    for index, (image, face, points) in enumerate(photos):
        for style in MASK_STYLES:
            for renderer in RENDERERS:
                masked, info = mask_face(image, face, style, rng=index, renderer=renderer)
                assert masked.shape == image.shape and masked.dtype == np.uint8
                assert info["landmarks"] == "dlib"
                label = f"{PHOTOS[index]} {style} {renderer}"
                for i in (30, 48, 54):  # nose tip and mouth corners
                    assert _change(image, masked, points[i]) >= CLEAR_CHANGE, label
                for eye in (points[36:42].mean(0), points[42:48].mean(0)):
                    assert _change(image, masked, eye) == 0, label
                # Nothing changes above the eyebrows.
                assert np.array_equal(masked[: int(points[17:27, 1].min())],
                                      image[: int(points[17:27, 1].min())]), label
                changed = np.abs(masked.astype(int) - image).sum(-1) > 0
                assert changed.sum() > 0.05 * face.area, label


def test_the_same_seed_gives_the_same_bytes_and_another_seed_another_mask(crops) -> None:
    crop = crops[0]
    for style in MASK_STYLES:
        first, info_first = mask_aligned(crop, style, 42)
        again, info_again = mask_aligned(crop, style, np.random.default_rng(42))
        other, _ = mask_aligned(crop, style, 43)
        assert np.array_equal(first, again) and info_first == info_again
        assert not np.array_equal(first, other)
    random_styles = {mask_aligned(crop, "random", seed)[1]["style"] for seed in range(30)}
    assert random_styles == set(MASK_STYLES)


def test_options_are_used_and_reported(crops) -> None:
    masked, info = mask_aligned(crops[1], "cloth", 5, colour="#123456", pattern="checks",
                                coverage=(0.3, 0.3), pattern_weight=1.0)
    assert info["colour"] == "#123456" and info["pattern"] == "checks"
    assert info["coverage"] == 0.3
    # A higher coverage moves the top edge up the nose: more of the crop changes.
    low, _ = mask_aligned(crops[1], "surgical", 5, coverage=0.0)
    high, _ = mask_aligned(crops[1], "surgical", 5, coverage=1.0)
    rows_low = np.flatnonzero((np.abs(low.astype(int) - crops[1]).sum(-1) > 20)[:, 50:62].any(1))
    rows_high = np.flatnonzero((np.abs(high.astype(int) - crops[1]).sum(-1) > 20)[:, 50:62].any(1))
    assert rows_high.min() < rows_low.min() - 5


def test_template_geometry_covers_key_points_for_every_style_and_coverage() -> None:
    points = template_landmarks68()
    eyes = np.stack([points[36:42].mean(0), points[42:48].mean(0)])
    for style in MASK_STYLES:
        for coverage in (0.0, 0.5, 1.0):
            geometry = mask_geometry(points, OUTLINES[style], coverage)
            outline = geometry.outline_image.astype(np.float32)

            def inside(pts, outline=outline):
                return np.array([cv2.pointPolygonTest(outline, (float(x), float(y)), False) > 0
                                 for x, y in pts])

            assert inside(points[[30, 48, 54, 57, 62]]).all(), (style, coverage)
            assert not inside(eyes).any(), (style, coverage)
            assert not inside(points[36:48]).any(), (style, coverage)


def test_a_turned_head_gets_a_mask_that_follows_the_visible_jaw() -> None:
    # Mode 0 of the aligned-face shape is head turn: the nose moves towards one side.
    turned = TEMPLATE_LANDMARKS68 + 1.5 * SHAPE_MODES[0]
    frontal = mask_geometry(TEMPLATE_LANDMARKS68, OUTLINES["surgical"], 0.6)
    geometry = mask_geometry(turned, OUTLINES["surgical"], 0.6)
    left, right = geometry.half_widths
    front_left, front_right = frontal.half_widths
    assert abs(front_left - front_right) < 0.15 * front_left
    assert right < 0.8 * left  # the far side (towards which the nose moved) is narrower
    outline = geometry.outline_image
    jaw = turned[0:17]
    # The outline's sides stay on the jaw line, not a frontal template's.
    assert abs(outline[:, 0].max() - jaw[:, 0].max()) < 4
    assert abs(outline[:, 0].min() - jaw[:, 0].min()) < 4


def test_bad_inputs_give_clear_errors(crops, photos) -> None:
    crop = crops[0]
    with pytest.raises(FmrError, match="unknown mask style 'bandana'.*surgical"):
        mask_aligned(crop, "bandana")
    with pytest.raises(FmrError, match="unknown colour 'blurple'"):
        mask_aligned(crop, "surgical", colour="blurple")
    with pytest.raises(FmrError, match="unknown pattern 'paisley'"):
        mask_aligned(crop, "cloth", pattern="paisley")
    with pytest.raises(FmrError, match="bad coverage"):
        mask_aligned(crop, "surgical", coverage="0.9:0.2")
    with pytest.raises(FmrError, match="unknown mask renderer"):
        mask_aligned(crop, "surgical", renderer="paint")
    with pytest.raises(FaceError, match="68 landmarks"):
        apply_mask(crop, np.zeros((5, 2)), "surgical")
    with pytest.raises(FaceError, match="NaN"):
        apply_mask(crop, np.full((68, 2), np.nan), "surgical")
    with pytest.raises(FaceError, match="too small"):
        apply_mask(crop, TEMPLATE_LANDMARKS68 * 0.02, "surgical")
    with pytest.raises(FaceError, match="uint8"):
        apply_mask(crop.astype(np.float32), "template", "surgical")
    image = photos[0][0]
    with pytest.raises(FaceError, match="aligned face crop.*200x250"):
        mask_aligned(image[:, :200])
    # Landmarks far outside the image: the mask has nowhere to go.
    with pytest.raises(FaceError, match="outside the image"):
        apply_mask(crop, TEMPLATE_LANDMARKS68 + 500, "surgical")


def test_colour_names_and_hex_codes() -> None:
    assert parse_colour("Light Blue")[0] == COLOURS["light-blue"]
    assert parse_colour("gray")[0] == COLOURS["grey"]
    assert parse_colour("#ABC")[0] == "#aabbcc"
    assert parse_colour("8fc3e0")[0] == "#8fc3e0"
    assert parse_colour("#8fc3e0")[1].tolist() == [0x8F, 0xC3, 0xE0]


def test_narrow_and_larger_aligned_crops(crops) -> None:
    narrow = crops[2][:, 8:104]  # the 112x96 layout
    masked, _ = mask_aligned(narrow, "KN95", 1)
    nose = ARCFACE_TEMPLATE[2] - (8, 0)
    assert _change(narrow, masked, nose) >= CLEAR_CHANGE
    big = np.asarray(Image.fromarray(crops[2]).resize((224, 224)))
    masked, _ = mask_aligned(big, "N95", 1)
    assert _change(big, masked, ARCFACE_TEMPLATE[3] * 2) >= CLEAR_CHANGE
    assert np.array_equal(masked[:90], big[:90])  # everything above the eyes is untouched


def test_refine_fits_dlib_points_on_the_crop(crops) -> None:
    masked, info = mask_aligned(crops[0], "surgical", 3, refine=True)
    assert info["landmarks"] in ("dlib", "template")
    assert _change(crops[0], masked, ARCFACE_TEMPLATE[2]) >= CLEAR_CHANGE


def test_styles_held_out_for_evaluation() -> None:
    assert set(TRAIN_STYLES) | set(EVAL_STYLES) == set(MASK_STYLES)
    assert not set(TRAIN_STYLES) & set(EVAL_STYLES)


def test_importing_fmr_masks_loads_neither_torch_nor_dlib() -> None:
    code = (
        "import sys, fmr.masks, fmr.masks.render, fmr.masks.warp, fmr.commands.mask\n"
        "heavy = ('torch', 'dlib', 'facenet_pytorch', 'torchvision')\n"
        "print([m for m in heavy if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# -- the tensor path --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch(crops):
    torch = pytest.importorskip("torch")
    stacked = np.stack(crops * 4)  # (16, 112, 112, 3)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


def test_mask_batch_masks_every_sample_at_prob_1_and_keeps_dtype(batch) -> None:
    import torch

    from fmr.masks.tensor import mask_batch

    for dtype in (torch.uint8, torch.float32):
        images = batch.to(dtype)
        out = mask_batch(images, 1.0, generator=torch.Generator().manual_seed(0))
        assert out.dtype == dtype and out.shape == images.shape and out.device == images.device
        before = images.permute(0, 2, 3, 1).numpy().astype(np.uint8)
        after = out.permute(0, 2, 3, 1).numpy().round().astype(np.uint8)
        for b, a in zip(before, after, strict=True):
            for point in ARCFACE_TEMPLATE[2:]:
                assert _change(b, a, point) >= CLEAR_CHANGE
            for point in ARCFACE_TEMPLATE[:2]:
                assert np.abs(_patch(a, point) - _patch(b, point)).max() <= 1
    assert torch.equal(batch, batch.clone())  # the input is not modified


def test_mask_batch_prob_seed_and_styles(batch) -> None:
    import torch

    from fmr.masks.tensor import mask_batch

    assert torch.equal(mask_batch(batch, 0.0), batch)
    first = mask_batch(batch, 0.5, generator=torch.Generator().manual_seed(7))
    again = mask_batch(batch, 0.5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    masked = (first != batch).flatten(1).any(1)
    assert 0 < int(masked.sum()) < len(batch)
    generator = torch.Generator().manual_seed(1)
    held_out = mask_batch(batch, 1.0, styles=EVAL_STYLES, generator=generator)
    assert (held_out != batch).flatten(1).any(1).all()
    with pytest.raises(ValueError, match="112, 112"):
        mask_batch(batch[:, :, :100], 1.0)
    with pytest.raises(FmrError, match="unknown mask style"):
        mask_batch(batch, 1.0, styles=("bandana",))


def test_glasses_stay_above_the_mask(lfw_dir: Path) -> None:
    from fmr.masks.geometry import face_frame
    from fmr.masks.glasses import glasses_rims

    for name, wears in (("Theresa_Gattung/Theresa_Gattung_0001.jpg", True),
                        ("Hank_Bass/Hank_Bass_0001.jpg", True),
                        ("Colin_Powell/Colin_Powell_0001.jpg", False)):
        image = load_image(lfw_dir / "images" / name)
        points = landmarks68(image, detect_faces(image)[0].box)
        frame = face_frame(points)
        rims = glasses_rims(image, frame.to_face(points), frame)
        assert (rims is not None) == wears, name
        for style in MASK_STYLES:
            masked, info = apply_mask(image, points, style, 1, coverage=1.0)
            assert info["glasses"] == wears, name
            if not wears:
                continue
            change = np.abs(masked.astype(int) - image).sum(-1)
            for side, eye in enumerate((points[36:42], points[42:48])):
                x = int(round(eye[:, 0].mean()))
                lid = eye[4:6, 1].max()  # dlib points 40, 41 / 46, 47: the lower eyelid
                rim = lid + rims[side] * frame.unit
                # From the eyelid down to the rim, the photo shows (up to the mask edge's
                # anti-aliasing tail): the glasses sit above the mask.
                band = change[int(lid) : int(round(rim)) + 1, x - 2 : x + 3]
                assert band.max() <= 8, (name, style, band.max())
