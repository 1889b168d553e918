"""Photo inputs and the per-photo work the pages share, cached per photo.

A photo comes from an upload, the camera, or a sample. Decoding and face detection run once
per photo (`detect_photo`), a synthetic mask once per photo, face and mask options
(`prepare_face`), and each backbone's embedding once per prepared face (`embed_prepared`):
moving a slider elsewhere on the page recomputes nothing. The face work itself is the verify
pipeline's (`fmr.verify.pipeline`), so the app and `fmr verify` embed the same face.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from fmr.errors import FaceError
from fmr.faces.detect import Face
from fmr.verify.pipeline import PreparedFace, prepare_detected, side_rng

# Everything fmr.faces.load_image reads (an animated GIF gives its first frame).
ACCEPTED_TYPES = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"]
# Cached decoded photos are bounded by size as well as by count: one 40-megapixel upload
# decodes to 120 MB, so 16 of them would otherwise hold 2 GB (server.maxCacheDataSize in
# .streamlit/config.toml bounds all caches together).
PHOTO_CACHE_SIZE = "256MiB"
DEFAULT_COLOUR = "the style's usual"
# Occlusion squares every 1/6 of the crop: 6 x 6 positions per face, a few seconds on a CPU.
OCCLUSION_STRIDE = 1 / 6


@dataclass(frozen=True)
class PhotoInput:
    """A photo the user gave: name (for messages), its file bytes, and where it came from
    ("upload", "camera" or "sample")."""

    name: str
    data: bytes
    origin: str

    @property
    def digest(self) -> str:
        return hashlib.sha1(self.data).hexdigest()


def sample_input(path: Path) -> PhotoInput:
    """A sample photo as an input (named "person/file.jpg")."""
    return PhotoInput(f"{path.parent.name}/{path.name}", path.read_bytes(), "sample")


def photo_input(
    side: str, label: str, sample: Path | None = None, camera: bool = True
) -> PhotoInput | None:
    """Upload (key `upload_<side>`), optional camera (toggle `camera_on_<side>`, widget
    `camera_<side>`); an upload wins over the camera, which wins over `sample`."""
    upload = st.file_uploader(
        label,
        type=ACCEPTED_TYPES,
        key=f"upload_{side}",
        help="JPEG, PNG, WebP, GIF, BMP or TIFF. The photo stays in this server's memory "
        "only: it is never written to disk.",
    )
    shot = None
    if camera and st.toggle("Use the camera", key=f"camera_on_{side}"):
        shot = st.camera_input(f"Take {label.lower()}", key=f"camera_{side}")
    if upload is not None:
        return PhotoInput(upload.name, upload.getvalue(), "upload")
    if shot is not None:
        return PhotoInput(f"camera photo {side.upper()}", shot.getvalue(), "camera")
    if sample is not None:
        return sample_input(sample)
    return None


@dataclass
class DetectedPhoto:
    """A decoded photo and its likely faces, the one fmr uses by default (`main`) first.
    image: RGB uint8 (H, W, 3). hidden: detections left out as unlikely faces
    (`fmr.faces.policy.likely_faces`)."""

    name: str
    image: np.ndarray
    faces: list[Face]
    hidden: int = 0


@st.cache_data(max_entries=16, max_size=PHOTO_CACHE_SIZE, show_spinner=False)
def detect_photo(data: bytes, name: str) -> DetectedPhoto:
    """Decode and detect (cached per photo). Raises FaceError with a message naming `name` for
    unreadable, truncated or oversized files."""
    from fmr.faces import detect_faces, load_image
    from fmr.faces.policy import likely_faces

    image = load_image(data, name=name)
    faces, hidden = likely_faces(detect_faces(image), image.shape)
    return DetectedPhoto(name, image, faces, hidden)


def no_face_message(name: str, image_shape: tuple[int, ...] | None = None) -> str:
    """What the page says when no face was found in a photo of `image_shape`."""
    from fmr.faces.policy import too_thin_message

    thin = too_thin_message(name, image_shape) if image_shape is not None else None
    if thin:
        return f"{thin}."
    return (
        f"{name}: no face found. Use a photo where the face is visible, roughly frontal and "
        "at least 20 pixels wide."
    )


def face_labels(photo: DetectedPhoto) -> list[str]:
    """The face picker's options: each face's number, whether it is in frame or cut by the
    photo's edge, and its width in the photo; the first, the default (`main`), says so."""
    from fmr.faces.policy import in_frame, visible_area

    shape = photo.image.shape
    framed = [in_frame(face, shape) for face in photo.faces]
    areas = [visible_area(face, shape) for face in photo.faces]
    labels = []
    for index, face in enumerate(photo.faces):
        # The box's width inside the photo (MTCNN extends a cut face's box past the edge).
        width = max(0.0, min(float(face.box[2]), shape[1]) - max(float(face.box[0]), 0.0))
        size = f"{width:.0f} px wide"
        if index > 0:
            where = "in frame" if framed[index] else "cut by the edge"
            labels.append(f"face {index + 1} ({where}, {size})")
        elif not framed[0]:
            labels.append(f"face 1: the default (every face is cut by the edge; the biggest, "
                          f"{size})")
        elif areas[0] >= max(areas):
            labels.append(f"face 1: the default (in frame, the biggest, {size})")
        elif any(framed[i] for i in range(1, len(areas)) if areas[i] > areas[0]):
            # A bigger face in frame that the detector is unsure of (main_rank weighs it less).
            labels.append(f"face 1: the default (in frame, the biggest the detector is sure "
                          f"of, {size})")
        elif any(framed[1:]):
            labels.append(f"face 1: the default (in frame, the biggest of those in frame, "
                          f"{size})")
        else:
            labels.append(f"face 1: the default (the only face in frame, {size})")
    return labels


def face_picker(photo: DetectedPhoto, side: str, label: str) -> int:
    """Index of the face to use: 0 (the default, `main`) unless the photo has several and the
    user picks another (selectbox `face_<side>`, numbered like the boxes on the photo)."""
    count = len(photo.faces)
    if count < 2:
        return 0
    labels = face_labels(photo)
    choice = st.selectbox(
        f"{count} faces in {label}: which one?",
        list(range(count)),
        format_func=lambda i: labels[i],
        key=f"face_{side}",
        help="By default fmr uses the person the photo is of: a face in frame (eyes, nose and "
        "nearly all its box inside the photo) comes before one cut by the photo's edge, then "
        "the biggest (only the part inside the photo counts; a detection the detector is unsure "
        "of counts as a third as wide). fmr verify, embed and align choose the same way "
        "(--multi-face main).",
    )
    return min(int(choice or 0), count - 1)


@dataclass(frozen=True)
class MaskChoice:
    """Synthetic mask options: style (fmr.masks.MASK_STYLES), colour name or None for the
    style's usual, coverage in [0, 1] or None, pattern or None, renderer, seed."""

    style: str
    colour: str | None = None
    coverage: float | None = None
    pattern: str | None = None
    renderer: str = "fmr"
    seed: int = 0

    def key(self) -> tuple:
        return (self.style, self.colour, self.coverage, self.pattern, self.renderer, self.seed)


def mask_controls(side: str, label: str) -> MaskChoice | None:
    """A toggle (`mask_on_<side>`) and, when on, style / colour / coverage widgets."""
    from fmr.masks import COLOURS, MASK_STYLES

    if not st.toggle(f"Add a synthetic mask to {label}", key=f"mask_on_{side}"):
        return None
    style_col, colour_col, coverage_col = st.columns(3)
    style = style_col.selectbox("Mask style", MASK_STYLES, key=f"mask_style_{side}")
    colour = colour_col.selectbox(
        "Colour", [DEFAULT_COLOUR, *COLOURS], key=f"mask_colour_{side}"
    )
    coverage = coverage_col.slider(
        "Coverage",
        0.0,
        1.0,
        0.7,
        0.05,
        key=f"mask_coverage_{side}",
        help="How high the mask sits on the nose: 0 just above the nose tip, 1 just below "
        "the eyes.",
    )
    return MaskChoice(style, None if colour == DEFAULT_COLOUR else colour, float(coverage))


@st.cache_data(max_entries=16, max_size=PHOTO_CACHE_SIZE, show_spinner=False)
def masked_photo(data: bytes, name: str, face_index: int, mask_key: tuple):
    """`masked_copy` of face `face_index` of a photo (cached per photo, face and options)."""
    photo = detect_photo(data, name)
    return masked_copy(photo.image, photo.faces[face_index], MaskChoice(*mask_key))


def masked_copy(image: np.ndarray, face: Face, choice: MaskChoice) -> tuple[np.ndarray, dict]:
    """`image` with a synthetic mask on `face` (fmr.masks.mask_face); returns (copy, info).
    The mask studio's picture; the verify pages mask through `prepare_face`."""
    from fmr.masks import mask_face

    return mask_face(
        image,
        face,
        choice.style,
        np.random.default_rng(choice.seed),
        colour=choice.colour,
        pattern=choice.pattern,
        coverage=choice.coverage,
        renderer=choice.renderer,
    )


# Only masked faces are cached here: an unmasked face is the detected photo itself, already
# cached by detect_photo (caching it twice held every photo twice).
@st.cache_data(max_entries=16, max_size=PHOTO_CACHE_SIZE, show_spinner=False)
def _masked_face(data: bytes, name: str, face_index: int, mask_key: tuple,
                 side: int) -> PreparedFace:
    photo = detect_photo(data, name)
    choice = MaskChoice(*mask_key)
    options = {"colour": choice.colour, "coverage": choice.coverage, "pattern": choice.pattern}
    return prepare_detected(
        photo.image, photo.faces, name=name, face_index=face_index, mask=choice.style,
        mask_renderer=choice.renderer, seed=side_rng(choice.seed, side), mask_options=options,
    )


def prepare_face(photo: PhotoInput, face_index: int = 0, mask: MaskChoice | None = None,
                 side: int = 0) -> PreparedFace:
    """The face to embed from `photo` (cached), through the verify pipeline
    (`fmr.verify.pipeline.prepare_detected`): face `face_index` of the likely faces, with the
    synthetic `mask` drawn as `fmr verify` draws it on photo `side` (0: A, 1: B) with the same
    seed. Raises FaceError with a message for the page."""
    if mask is not None:
        return _masked_face(photo.data, photo.name, face_index, mask.key(), side)
    detected = detect_photo(photo.data, photo.name)
    if not detected.faces:
        raise FaceError(no_face_message(photo.name, detected.image.shape))
    return prepare_detected(detected.image, detected.faces, name=photo.name,
                            face_index=face_index)


def mask_caption(prepared: PreparedFace) -> str | None:
    """"wears a mask: 97%" under a face (the mask detector's probability; "synthetic mask"
    added when fmr drew one), or None when no mask detector is shipped."""
    if prepared.mask_probability is None:
        return None
    text = f"wears a mask: {prepared.mask_probability * 100:.0f}%"
    if prepared.mask is not None:
        text += f" (a synthetic {prepared.mask.get('style', '')} mask was drawn)"
    return text


def _face_key(photo: PhotoInput, prepared: PreparedFace, mask: MaskChoice | None,
              side: int) -> tuple:
    """What a prepared face depends on: the photo, the face, and the mask with its side (each
    side draws its mask from its own seed, as `fmr verify` does)."""
    return (photo.digest, prepared.face_index, None if mask is None else (*mask.key(), side))


@st.cache_data(max_entries=64, show_spinner=False)
def _embed(_embedder, family: str, model_key: str, face_key: tuple,
           _prepared: PreparedFace) -> np.ndarray:
    return _embedder.embed_face(_prepared.image, _prepared.face)


def embed_prepared(embedder, photo: PhotoInput, prepared: PreparedFace,
                   mask: MaskChoice | None, side: int = 0) -> np.ndarray:
    """`embedder`'s unit-norm embedding of a prepared face (cached per photo, face, mask, side
    and checkpoint)."""
    return _embed(embedder, embedder.family, _model_key(embedder),
                  _face_key(photo, prepared, mask, side), prepared)


def _model_key(embedder) -> str:
    return ":".join(
        f"{path}@{Path(path).stat().st_mtime if Path(path).exists() else 0}"
        for path in (embedder.path, getattr(embedder, "card_path", ""))
        if path
    )


@st.cache_data(max_entries=8, max_size="64MiB", show_spinner=False)
def _occlusion(_embedder, model_key: str, key_a: tuple, key_b: tuple, _a: PreparedFace,
               _b: PreparedFace):
    from fmr.explain import explain_pair, model_view

    return explain_pair(
        model_view(_embedder, _a.image, _a.face),
        model_view(_embedder, _b.image, _b.face),
        stride_fraction=OCCLUSION_STRIDE,
    )


def occlusion_maps(embedder, inputs: dict, prepared: dict, masks: dict):
    """`fmr.explain.explain_pair` for the prepared faces "a" and "b" (cached per pair, faces,
    masks and model): (OcclusionMap of A against B, of B against A)."""

    def key(side: str) -> tuple:
        return _face_key(inputs[side], prepared[side], masks[side], "ab".index(side))

    return _occlusion(embedder, _model_key(embedder), key("a"), key("b"), prepared["a"],
                      prepared["b"])
