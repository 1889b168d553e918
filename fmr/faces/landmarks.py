"""dlib's shape predictors (68 and 5 points) from face_recognition_models, loaded once."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from fmr.errors import FmrError


def dlib_model_path(filename: str) -> Path:
    """Path of a model file shipped by face_recognition_models (no pkg_resources import)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FmrError(
            "face_recognition_models is not installed; run scripts/setup.sh (it installs the "
            "dlib landmark and reference models)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / filename
    if not path.exists():
        raise FmrError(f"{path} is missing; reinstall face_recognition_models")
    return path


@functools.cache
def load_face_models() -> None:
    """Load the models a masked photo needs (MTCNN's weights, dlib's 68-point predictor) now
    rather than at the first face: `fmr mask --workers N` calls it once in each worker."""
    from fmr.faces.detect import _mtcnn_weights

    _mtcnn_weights()
    shape_predictor(68)


@functools.cache
def shape_predictor(points: int = 68):
    """dlib's 68-point (or 5-point) shape predictor, loaded once per process (loading the
    68-point file takes about a second: far longer than fitting it to a face)."""
    import dlib

    filename = {
        68: "shape_predictor_68_face_landmarks.dat",
        5: "shape_predictor_5_face_landmarks.dat",
    }
    return dlib.shape_predictor(str(dlib_model_path(filename[points])))


def to_dlib_rect(box: np.ndarray):
    import dlib

    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    return dlib.rectangle(x1, y1, x2, y2)


def landmarks68(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """dlib's 68 facial landmarks (68, 2) float32 (x, y) for the face in `box` (x1, y1, x2, y2).

    The predictor was trained on boxes from dlib's HOG detector; any detector's box works, and
    MTCNN boxes are first mapped to that convention (see `mtcnn_box_to_dlib`).
    """
    shape = shape_predictor(68)(np.ascontiguousarray(image), to_dlib_rect(mtcnn_box_to_dlib(box)))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def mtcnn_box_to_dlib(box: np.ndarray) -> np.ndarray:
    """Map an MTCNN box to the box dlib's HOG detector would draw around the same face.

    MTCNN boxes reach from above the brows to below the chin; HOG boxes are tighter and sit a
    little lower. The factors were fitted on LFW photos where both detectors found the face.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2 + BOX_FIT[0] * w, (y1 + y2) / 2 + BOX_FIT[1] * h
    half_w, half_h = BOX_FIT[2] * w / 2, BOX_FIT[3] * h / 2
    return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dtype=np.float32)


# centre shift (x, y) as a fraction of the box size, then width and height scale.
BOX_FIT = (0.0, 0.05, 1.13, 0.85)
