"""Five-point alignment onto the ArcFace 112x112 template."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# insightface's reference points for a 112x112 crop, in pixels (x, y): left eye, right eye,
# nose tip, left mouth corner, right mouth corner ("left" = the image's left).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
TEMPLATE_SIZE = 112
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def template_landmarks(size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The template's 5 points (5, 2) float32 for a square crop of `size` pixels."""
    return ARCFACE_TEMPLATE * (size / TEMPLATE_SIZE)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking `src` to `dst`.

    Umeyama's closed form, in float64 so the result does not depend on the input dtype.
    `src` and `dst` are (N, 2) point sets; returns the 2x3 matrix for `cv2.warpAffine`.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = src.shape[0]
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n
    u, sigma, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection: flip the weakest axis
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    src_var = (src_c**2).sum() / n
    scale = float((sigma * d).sum() / src_var) if src_var > 0 else 1.0
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def alignment_matrix(landmarks: np.ndarray, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The 2x3 similarity matrix taking a face's 5 landmarks onto the template of `size`."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    return similarity_transform(points, template_landmarks(size))


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """Warp the face with these 5 landmarks onto the ArcFace template.

    `image` is RGB uint8 (H, W, 3); `landmarks` is (5, 2) in image pixels, in template order
    (left eye, right eye, nose, left mouth corner, right mouth corner). Returns a (size, size, 3)
    uint8 crop; pixels outside the photo are black, as in insightface's crops. The same input
    always gives the same bytes.
    """
    matrix = alignment_matrix(landmarks, size)
    return cv2.warpAffine(
        np.ascontiguousarray(image),
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    points = np.asarray(points, dtype=np.float64)
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


@dataclass(frozen=True)
class Canvas:
    """A wider aligned image: the template with `margin` template pixels on every side, at
    `scale` pixels per template pixel. Canvas pixel c shows template point c / scale - margin,
    so the 112x112 crop is its centre, and other crops of the same face (dlib's chip, which
    reaches below the chin) can be cut from it too."""

    margin: float
    scale: float

    @property
    def size(self) -> int:
        return int(round((TEMPLATE_SIZE + 2 * self.margin) * self.scale))

    def from_template(self) -> np.ndarray:
        """2x3 float64: template coordinates -> canvas pixels."""
        offset = self.margin * self.scale
        return np.array([[self.scale, 0.0, offset], [0.0, self.scale, offset]])


CROP_CANVAS = Canvas(0.0, 1.0)  # the 112x112 crop itself
WIDE_CANVAS = Canvas(24.0, 1.5)  # 240x240: what `fmr prepare --canvases` stores


def align_to_canvas(image: np.ndarray, landmarks: np.ndarray, canvas: Canvas) -> np.ndarray:
    """Like `align_face`, onto `canvas` instead of the bare 112x112 crop: (S, S, 3) uint8."""
    to_template = np.vstack([alignment_matrix(landmarks), [0.0, 0.0, 1.0]])
    matrix = canvas.from_template() @ to_template
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (canvas.size, canvas.size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))
