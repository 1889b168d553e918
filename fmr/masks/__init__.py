"""Synthetic face masks drawn by our own code, on photos and on aligned crops.

    masked, info = apply_mask(image, landmarks68, "surgical", rng=7)   # 68 dlib points
    masked, info = mask_aligned(crop, "KN95", rng=7)                     # 112x112 aligned crop
    masked, info = mask_face(photo, face, "cloth", rng=7, pattern="floral")  # a fmr.faces.Face

Styles: surgical (pleats, nose wire, ear loops), N95 (cup, head straps, nose clip, sometimes a
valve), KN95 (flat fold, centre seam, sealed edges, ear loops), cloth (patterns, seams, fabric
grain) and gas (a half-face respirator with two filter cartridges, a valve and straps).

Two independent renderers:
- "fmr" (`fmr.masks.render`): the outline is fitted to the jaw line, nose and chin landmarks,
  shaded along the face's surface and lit by the face's own light; used for training.
- "warp" (`fmr.masks.warp`): MaskTheFace's method with our own drawings: a flat frontal mask
  image placed by a homography from six landmarks. Training never uses it.

Held-out masks for evaluation: models train on `TRAIN_STYLES` drawn by the "fmr" renderer;
`EVAL_STYLES` (KN95) is a shape they never saw, and the "warp" renderer (any style) a way of
drawing masks they never saw. Report both.

This package imports numpy and OpenCV only: torch (the tensor path, `fmr.masks.tensor`), dlib
(landmarks on photos) and MTCNN load only when a function needs them.
"""

from __future__ import annotations

import numpy as np

from fmr.errors import FaceError, FmrError
from fmr.masks.styles import (
    COLOURS,
    EVAL_STYLES,
    MASK_STYLES,
    PATTERNS,
    TRAIN_STYLES,
    canonical_style,
    draw_options,
    parse_colour,
    parse_coverage,
)
from fmr.masks.template import TEMPLATE_LANDMARKS68, template_landmarks68

RENDERERS = ("fmr", "warp")
TRAIN_RENDERERS = ("fmr",)
EVAL_RENDERERS = ("fmr", "warp")
# dlib point indices the mask must visibly cover: nose tip and mouth corners.
KEY_POINTS = (30, 48, 54)

__all__ = [
    "COLOURS",
    "EVAL_RENDERERS",
    "EVAL_STYLES",
    "MASK_STYLES",
    "PATTERNS",
    "RENDERERS",
    "TEMPLATE_LANDMARKS68",
    "TRAIN_RENDERERS",
    "TRAIN_STYLES",
    "apply_mask",
    "as_rng",
    "canonical_style",
    "mask_aligned",
    "mask_face",
    "parse_colour",
    "parse_coverage",
    "template_landmarks68",
]


def as_rng(rng) -> np.random.Generator:
    """A numpy Generator from a Generator, an int seed, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(None if rng is None else int(rng))
    raise FmrError(f"rng must be a numpy Generator, an int seed or None, not {type(rng).__name__}")


def _check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise FaceError(f"expected an RGB image as a numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise FaceError(
            f"expected an RGB uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}"
        )
    return image


def _aligned_landmarks(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    if width == height or (height, width) == (112, 96):
        return template_landmarks68(height, width)
    raise FaceError(
        f"an aligned face crop is square (112x112) or 112x96, this image is {width}x{height}; "
        "for photos, detect the face first (fmr mask without --aligned)"
    )


def apply_mask(
    image: np.ndarray,
    landmarks: np.ndarray | str,
    style: str = "surgical",
    rng=None,
    *,
    colour: str | None = None,
    pattern: str | None = None,
    coverage=None,
    renderer: str = "fmr",
    pattern_weight: float | None = None,
) -> tuple[np.ndarray, dict]:
    """Draw a synthetic mask on one face; returns (masked RGB uint8 copy, info).

    image: RGB uint8 (H, W, 3). landmarks: (68, 2) dlib points in image pixels, or "template"
    for an aligned crop (112x112, any square size, or 112x96). style: one of MASK_STYLES or
    "random". rng: numpy Generator, int seed or None; the same seed gives the same bytes.
    colour: name or hex (default: drawn from the style's usual colours). pattern: one of
    PATTERNS. coverage: a number or (low, high) / "LOW:HIGH" in [0, 1], where the top edge sits
    on the nose (0 just above the tip, 1 just below the eyes). renderer: "fmr" or "warp".
    pattern_weight: 0..1 strength of the pattern (MaskTheFace's --pattern_weight).

    info: style, colour (hex), pattern, coverage, renderer, parts (loops, straps, valve...),
    contrast_guard (True when the colour was shifted away from the skin's), and for the "fmr"
    renderer glasses (True when glasses were found: the mask's top edge then stays below them).
    Raises FaceError for landmarks a mask cannot be placed on, FmrError for bad options.
    """
    image = _check_image(image)
    rng = as_rng(rng)
    if renderer not in RENDERERS:
        raise FmrError(f"unknown mask renderer {renderer!r}; choose one of {', '.join(RENDERERS)}")
    if isinstance(style, str) and style.strip().lower() == "random":
        style = MASK_STYLES[int(rng.integers(len(MASK_STYLES)))]
    if isinstance(landmarks, str):
        if landmarks != "template":
            raise FmrError(f"landmarks must be a (68, 2) array or 'template', not {landmarks!r}")
        points = _aligned_landmarks(image)
    else:
        points = np.asarray(landmarks, dtype=np.float32)
    options = draw_options(style, rng, colour=colour, pattern=pattern, coverage=coverage,
                           pattern_weight=pattern_weight)
    key_points = np.asarray(points, dtype=np.float64)[list(KEY_POINTS)] if points.shape == (
        68, 2) else None
    if renderer == "fmr":
        from fmr.masks.geometry import face_frame
        from fmr.masks.glasses import glasses_rims
        from fmr.masks.render import composite, fmr_layers

        frame = face_frame(points)
        rims = glasses_rims(image, frame.to_face(points), frame)
        layers = fmr_layers(points, options, rng, image.shape, glasses=rims)
        masked, extra = composite(image, layers, options, rng, key_points)
        extra["glasses"] = rims is not None
    else:
        from fmr.masks.warp import warp_mask

        masked, extra = warp_mask(image, points, options, rng, key_points)
    return masked, {**options.info(), "renderer": renderer, **extra}


def mask_aligned(
    crop: np.ndarray, style: str = "surgical", rng=None, *, refine: bool = False, **options
) -> tuple[np.ndarray, dict]:
    """Mask an aligned face crop (112x112 ArcFace template, square of any size, or 112x96).

    The geometry comes from the mean 68-point shape of aligned crops, so no detector runs and
    no crop fails. refine=True fits dlib's 68 points on the crop instead and keeps them when
    they agree with the template (a turned head then gets a turned mask); it needs dlib.
    Other keyword options as in `apply_mask`. info["landmarks"] says which were used.
    """
    crop = _check_image(crop)
    points = _aligned_landmarks(crop)
    source = "template"
    if refine:
        fitted = _refine_on_crop(crop, points)
        if fitted is not None:
            points, source = fitted, "dlib"
    masked, info = apply_mask(crop, points, style, rng, **options)
    info["landmarks"] = source
    return masked, info


def _refine_on_crop(crop: np.ndarray, template: np.ndarray) -> np.ndarray | None:
    import dlib

    from fmr.faces.landmarks import shape_predictor

    # dlib's predictor expects a box like its HOG detector's: jaw width, brows to chin.
    x1, x2 = template[0:17, 0].min(), template[0:17, 0].max()
    y1, y2 = template[17:27, 1].min(), template[8, 1]
    rect = dlib.rectangle(int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2)))
    shape = shape_predictor(68)(np.ascontiguousarray(crop), rect)
    points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
    unit = 34.6 * crop.shape[0] / 112
    if np.linalg.norm(points - template, axis=1).mean() > 0.3 * unit:
        return None  # a bad fit (occlusion, not a face): the template is the safer guess
    return points


def mask_face(image: np.ndarray, face, style: str = "surgical", rng=None, **options):
    """Mask one detected face (`fmr.faces.Face`) of a photo; returns (masked copy, info).

    dlib's 68 landmarks are fitted in the face's box; a face that is the template face of an
    aligned crop (`face.source == "template"`) uses the template shape instead. Keyword options
    as in `apply_mask`. Raises FaceError (naming nothing: callers add the file name) when the
    face cannot take a mask.
    """
    image = _check_image(image)
    if getattr(face, "source", "") == "template":
        masked, info = apply_mask(image, _aligned_landmarks(image), style, rng, **options)
        info["landmarks"] = "template"
        return masked, info
    from fmr.faces.landmarks import landmarks68

    points = landmarks68(image, face.box)
    masked, info = apply_mask(image, points, style, rng, **options)
    info["landmarks"] = "dlib"
    return masked, info

