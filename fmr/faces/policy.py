"""Which face to use when a photo shows several."""

from __future__ import annotations

import numpy as np

from fmr.errors import FaceError
from fmr.faces.detect import Face, detect_faces

MULTI_FACE_POLICIES = ("main", "largest", "center", "require-one")
DEFAULT_POLICY = "main"
# Faces besides the main one (and the largest box) count as faces only when MTCNN is this sure:
# its false detections in clutter score lower. One rule everywhere: `select_face` (so verify,
# align, embed, eval and prepare), fmr mask and the app all count and choose among
# `likely_faces` only.
SECONDARY_MIN_SCORE = 0.95
# The smallest face the detector looks for by default (pixels); a thinner image cannot hold one.
MIN_FACE_PIXELS = 20
# A face is in frame when its eyes and nose tip lie at least this many pixels inside the image
# and this much of its box does. MTCNN extends the box of a face cut by the border past the edge
# and puts the points of its hidden side on the border or past it; the box of a face that is
# in the photo can still run a few pixels past the edge (forehead, chin).
EDGE_MARGIN_PIXELS = 3
MIN_INSIDE_FRACTION = 0.95
# `main` weighs a face MTCNN is unsure of (score under SECONDARY_MIN_SCORE) as if it were this
# many times narrower: most such detections are false (a torso, a pattern), but a masked face
# also scores lower, so a much bigger unsure face still beats a small sure one.
UNSURE_WIDTH_FACTOR = 3.0


def visible_area(face: Face, image_shape: tuple[int, ...]) -> float:
    """The area of the face's box clipped to the image (MTCNN extends the box of a face cut by
    the border past the edge; only the part in the photo counts)."""
    height, width = image_shape[:2]
    x1, y1, x2, y2 = (float(v) for v in face.box)
    return max(0.0, min(x2, width) - max(x1, 0.0)) * max(0.0, min(y2, height) - max(y1, 0.0))


def in_frame(face: Face, image_shape: tuple[int, ...], margin: float = EDGE_MARGIN_PIXELS) -> bool:
    """True when the face is in the photo, not cut by its border: its eyes and nose tip lie
    `margin` pixels or more inside, and `MIN_INSIDE_FRACTION` of its box is inside (an aligned
    crop's template face always is)."""
    height, width = image_shape[:2]
    points = np.asarray(face.landmarks, dtype=np.float64)[:3]  # left eye, right eye, nose tip
    inside_x = (points[:, 0] >= margin) & (points[:, 0] <= width - 1 - margin)
    inside_y = (points[:, 1] >= margin) & (points[:, 1] <= height - 1 - margin)
    if not np.all(inside_x & inside_y):
        return False
    return visible_area(face, image_shape) >= MIN_INSIDE_FRACTION * face.area


def main_rank(face: Face, image_shape: tuple[int, ...]) -> tuple[bool, float]:
    """How `main` ranks faces, highest first: a face in frame (`in_frame`) before one cut by the
    border, then the bigger `visible_area`, where a face MTCNN is unsure of (score under
    `SECONDARY_MIN_SCORE`) counts as `UNSURE_WIDTH_FACTOR` times narrower."""
    size = visible_area(face, image_shape)
    if face.score < SECONDARY_MIN_SCORE:  # NaN (a template face) is not unsure
        size /= UNSURE_WIDTH_FACTOR**2
    return in_frame(face, image_shape), size


def main_first(faces: list[Face], image_shape: tuple[int, ...]) -> list[Face]:
    """`faces` ordered by `main_rank`, the main face first (ties keep the detector's order)."""
    return sorted(faces, key=lambda f: main_rank(f, image_shape), reverse=True)


def likely_faces(faces: list[Face], image_shape: tuple[int, ...]) -> tuple[list[Face], int]:
    """The faces of a photo that count as faces, main first (`main_first`), and how many
    detections were left out: the main face, the largest box, and every other face scoring at
    least `SECONDARY_MIN_SCORE`.

    The main face counts whatever its score (MTCNN scores a masked face lower than an unmasked
    bystander), and so does the largest box, which `--multi-face largest` picks.
    """
    ordered = main_first(faces, image_shape)
    largest = max(faces, key=lambda f: f.area, default=None)
    kept = [
        f for i, f in enumerate(ordered)
        if i == 0 or f is largest or f.score >= SECONDARY_MIN_SCORE
    ]
    return kept, len(ordered) - len(kept)


def too_thin_message(name: str, image_shape: tuple[int, ...]) -> str | None:
    """Why an image with no face found cannot hold one (its shorter side is under
    `MIN_FACE_PIXELS`), or None when it could."""
    height, width = image_shape[:2]
    if min(height, width) >= MIN_FACE_PIXELS:
        return None
    return (
        f"{name}: the image is {width} x {height} pixels, too thin to hold a face (a face "
        f"needs at least {MIN_FACE_PIXELS} pixels each way); use a photo of the face"
    )


def select_face(
    faces: list[Face], image_shape: tuple[int, ...], policy: str = DEFAULT_POLICY,
    name: str = "image",
) -> Face:
    """Pick one face by `policy`, among the likely faces (`likely_faces`: the main face, the
    largest box and the others MTCNN is sure of), so a false detection in the background neither
    becomes "the centre face" nor makes require-one refuse a portrait.

    main (the default): the person the photo is of: a face in the photo (its eyes, nose tip and
    nearly all its box inside) beats one cut by its border, then the biggest box counting only
    its part inside the photo, a face MTCNN is unsure of counting as a third of its width
    (`main_rank`). So a half-visible bystander at the edge does not win over the person in the
    middle, nor a false detection over a face, and in a group photo the largest face wins.
    largest: the face with the biggest box, even one cut by the border. center: the face whose
    box centre is nearest the image centre. require-one: the only face, or an error when there
    are several.
    Raises `FaceError` naming `name` when there is no face or the policy refuses the photo.
    """
    if policy not in MULTI_FACE_POLICIES:
        raise FaceError(
            f"unknown multi-face policy {policy!r}; choose one of {', '.join(MULTI_FACE_POLICIES)}"
        )
    if not faces:
        thin = too_thin_message(name, image_shape)
        if thin:
            raise FaceError(thin)
        raise FaceError(
            f"{name}: no face found; use a photo where the face is visible and at least "
            f"{MIN_FACE_PIXELS} pixels wide (or pass --aligned for 112x112 aligned crops)"
        )
    faces, _ = likely_faces(faces, image_shape)
    if policy == "main":
        return faces[0]
    if policy == "largest":
        return max(faces, key=lambda f: f.area)
    if policy == "center":
        cy, cx = image_shape[0] / 2, image_shape[1] / 2
        return min(faces, key=lambda f: (f.center[0] - cx) ** 2 + (f.center[1] - cy) ** 2)
    if len(faces) > 1:
        raise FaceError(
            f"{name}: {len(faces)} faces found but exactly one is required; crop the photo, "
            "or choose the face with --multi-face main, largest or center"
        )
    return faces[0]


def find_face(
    image: np.ndarray, policy: str = DEFAULT_POLICY, name: str = "image", min_face_size: int = 20
) -> Face:
    """Detect the faces in `image` and return the one `policy` selects (see `select_face`)."""
    faces = detect_faces(image, min_face_size=min_face_size)
    return select_face(faces, image.shape, policy, name)
