"""Face detection with MTCNN (facenet-pytorch), tuned for photos and for tight face crops."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from fmr.faces.align import TEMPLATE_SIZE, template_landmarks

# Aligned crops come in these sizes (ArcFace 112x112, and the 112x96 SphereFace variant).
ALIGNED_SHAPES = ((112, 112), (112, 96))
# Tight crops get this much border (fraction of each side) before a second detection try:
# MTCNN needs some context around a face that fills the frame.
CROP_PAD_FRACTION = 0.3
# Detection runs on a copy whose longer side is at most this; the result is mapped back.
DETECT_MAX_SIDE = 1280


@dataclass(frozen=True, eq=False)  # arrays inside: compare boxes explicitly
class Face:
    """One detected face, in the pixel coordinates of the image it was found in.

    box: (4,) float32, x1, y1, x2, y2. score: detector confidence in [0, 1], NaN where the face
    was not detected but assumed at the template position of an aligned crop.
    landmarks: (5, 2) float32, (x, y) of left eye, right eye, nose tip, left and right mouth
    corner (left and right as seen in the image).
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    source: str = "mtcnn"  # "mtcnn" or "template"

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return float(self.box[0] + self.box[2]) / 2, float(self.box[1] + self.box[3]) / 2

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "score": None if np.isnan(self.score) else round(float(self.score), 4),
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
            "source": self.source,
        }


@functools.lru_cache(maxsize=4)
def _mtcnn(min_face_size: int):
    # Imported here: torch and facenet-pytorch are heavy, and the training path never needs them.
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device="cpu", min_face_size=min_face_size, post_process=False)


def _run_mtcnn(image: np.ndarray, min_face_size: int) -> list[Face]:
    import torch

    height, width = image.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(height, width))
    small = image
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    detector_min = max(12, round(min_face_size * scale))
    with torch.inference_mode():
        boxes, scores, points = _mtcnn(detector_min).detect(small, landmarks=True)
    if boxes is None:
        return []
    # facenet-pytorch returns object arrays: cast before arithmetic.
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / scale
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    points = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2) / scale
    faces = [Face(b, float(s), p) for b, s, p in zip(boxes, scores, points, strict=True)]
    return sorted(faces, key=lambda f: f.area, reverse=True)


def is_aligned_crop(image: np.ndarray) -> bool:
    """True when the image has the size of an aligned face crop (112x112 or 112x96)."""
    return tuple(image.shape[:2]) in ALIGNED_SHAPES


def template_face(image: np.ndarray) -> Face:
    """The face an aligned crop holds by construction: landmarks at the template points."""
    height, width = image.shape[:2]
    points = template_landmarks(TEMPLATE_SIZE).copy()
    points[:, 0] -= (TEMPLATE_SIZE - width) / 2  # 112x96 crops drop 8 px on each side
    box = np.array([0, 0, width, height], dtype=np.float32)
    return Face(box, float("nan"), points.astype(np.float32), source="template")


def detect_faces(image: np.ndarray, *, min_face_size: int = 20) -> list[Face]:
    """Find every face in an RGB uint8 image, largest first.

    MTCNN runs on a copy whose longer side is at most 1280 px. When nothing is found, the image
    is padded (tight crops need context) and searched again; an aligned crop (112x112 or 112x96)
    where MTCNN still sees nothing yields its template face (`source == "template"`), so aligned
    data never fails. `min_face_size` is the smallest face looked for, in pixels of `image`.
    """
    faces = _run_mtcnn(image, min_face_size)
    if faces:
        return faces
    height, width = image.shape[:2]
    pad = round(CROP_PAD_FRACTION * max(height, width))
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    faces = _run_mtcnn(padded, min_face_size)
    if faces:
        shift = np.float32(pad)
        return [
            Face(f.box - shift, f.score, f.landmarks - shift, f.source)
            for f in faces
        ]
    if is_aligned_crop(image):
        return [template_face(image)]
    return []
