"""dlib's ResNet face descriptor, the reference model every table shows beside ours.

dlib needs its own alignment: its 5-point shape predictor runs on the ORIGINAL photo inside the
face box (any detector's box: ours is MTCNN, mapped to dlib's box convention), and
`dlib.get_face_chip` cuts a 150x150 chip with 0.25 padding, the crop the network was trained
on. Our 112x112 ArcFace crop would not do. The 128-d descriptor is L2-normalised and compared by
cosine like the other backbones (dlib's own rule is Euclidean distance < 0.6 on unnormalised
vectors, which are already near unit length: cosine ~= 1 - d^2 / 2).
No flip averaging: the reference is dlib's model exactly as it ships.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np

from fmr.faces.detect import Face
from fmr.faces.landmarks import dlib_model_path, mtcnn_box_to_dlib, shape_predictor, to_dlib_rect

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150
CHIP_PADDING = 0.25
EMBEDDING_SIZE = 128
# dlib's network object keeps its layer outputs between calls, so one forward at a time (the
# app's sessions run in several threads; costs nothing in a single-threaded command).
_FORWARD_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _recognition_model():
    import dlib

    return dlib.face_recognition_model_v1(str(dlib_model_path(MODEL_FILE)))


def model_path() -> Path:
    """Where face_recognition_models keeps dlib's descriptor network."""
    return dlib_model_path(MODEL_FILE)


class DlibReference:
    """dlib's 128-d descriptor behind fmr's face interface.

    `embed(image, face)`: image RGB uint8 (H, W, 3), the original photo (not an aligned crop);
    face: an `fmr.faces.Face` found in it. Returns (128,) float32 with unit L2 norm.
    """

    embedding_size = EMBEDDING_SIZE

    def __init__(self) -> None:
        self._model = _recognition_model()
        self._predictor = shape_predictor(5)

    def shape(self, image: np.ndarray, face: Face):
        """dlib's 5-point landmarks for `face` (a dlib full_object_detection)."""
        box = face.box if face.source == "template" else mtcnn_box_to_dlib(face.box)
        return self._predictor(image, to_dlib_rect(box))

    def chip(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The 150x150 RGB uint8 face chip dlib's network sees."""
        import dlib

        image = np.ascontiguousarray(image, dtype=np.uint8)
        return dlib.get_face_chip(
            image, self.shape(image, face), size=CHIP_SIZE, padding=CHIP_PADDING
        )

    def embed_chips(self, chips: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """Descriptors (N, 128) float32, unit norm, of 150x150 chips from `chip`."""
        chips = [np.ascontiguousarray(c, dtype=np.uint8) for c in chips]
        if not chips:
            return np.zeros((0, EMBEDDING_SIZE), np.float32)
        with _FORWARD_LOCK:
            vectors = np.asarray(self._model.compute_face_descriptor(chips), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """Unit-norm (128,) float32 descriptor of `face` in the original photo `image`."""
        return self.embed_chips([self.chip(image, face)])[0]
