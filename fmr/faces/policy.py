"""Which face to use when a photo shows several."""

from __future__ import annotations

import numpy as np

from fmr.errors import FaceError
from fmr.faces.detect import Face, detect_faces

MULTI_FACE_POLICIES = ("largest", "center", "require-one")
# Faces besides the largest count as faces only when MTCNN is this sure: its false detections
# in clutter score lower. One rule everywhere: `select_face` (so verify, align, embed, eval and
# prepare), fmr mask and the app all count and choose among `likely_faces` only.
SECONDARY_MIN_SCORE = 0.95
# The smallest face the detector looks for by default (pixels); a thinner image cannot hold one.
MIN_FACE_PIXELS = 20


def likely_faces(faces: list[Face]) -> tuple[list[Face], int]:
    """The largest face plus the other faces scoring at least `SECONDARY_MIN_SCORE`, largest
    first, and how many detections were left out."""
    ordered = sorted(faces, key=lambda f: f.area, reverse=True)
    kept = ordered[:1] + [f for f in ordered[1:] if f.score >= SECONDARY_MIN_SCORE]
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
    faces: list[Face], image_shape: tuple[int, ...], policy: str = "largest", name: str = "image"
) -> Face:
    """Pick one face by `policy`, among the likely faces (`likely_faces`: the largest detection
    and the others MTCNN is sure of), so a false detection in the background neither becomes
    "the centre face" nor makes require-one refuse a portrait.

    largest: the face with the biggest box (the default). center: the face whose box centre is
    nearest the image centre. require-one: the only face, or an error when there are several.
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
    faces, _ = likely_faces(faces)
    if policy == "largest":
        return max(faces, key=lambda f: f.area)
    if policy == "center":
        cy, cx = image_shape[0] / 2, image_shape[1] / 2
        return min(faces, key=lambda f: (f.center[0] - cx) ** 2 + (f.center[1] - cy) ** 2)
    if len(faces) > 1:
        raise FaceError(
            f"{name}: {len(faces)} faces found but exactly one is required; crop the photo, "
            "or choose the face with --multi-face largest or center"
        )
    return faces[0]


def find_face(
    image: np.ndarray, policy: str = "largest", name: str = "image", min_face_size: int = 20
) -> Face:
    """Detect the faces in `image` and return the one `policy` selects (see `select_face`)."""
    faces = detect_faces(image, min_face_size=min_face_size)
    return select_face(faces, image.shape, policy, name)
