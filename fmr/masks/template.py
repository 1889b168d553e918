"""The 68-point face shape of aligned 112x112 crops: a mean and its main modes of variation.

An aligned crop (ArcFace template, `fmr.faces.align_face`) holds a face whose five points sit at
the template; its 68 dlib points vary only a little around a mean shape. Masks on aligned crops
use that mean (no detector, no dlib: aligned data never fails), and the training-time tensor path
draws shapes from `TEMPLATE_LANDMARKS68 + sum_k b_k * SHAPE_MODES[k]` with b_k ~ N(0, 1).

Fitted by `python -m devtools.mask_template` on 1,500 training-side LFW photos (one per
person, never a person from LFW folds 6-10): MTCNN face, dlib 68 points on the photo, mapped into
the crop by the photo's alignment matrix; the 5% of shapes farthest from the median were dropped
(bad fits). Units: pixels of a 112x112 crop, (x, y), dlib's point order. SHAPE_MODES are
principal axes scaled to one standard deviation: mode 0 is head turn (nose and jaw shift
sideways, about 4 px at the nose tip), mode 1 face length and pitch, mode 2 jaw and chin height.
"""

from __future__ import annotations

import numpy as np

TEMPLATE_LANDMARKS68 = np.array(
    [
        [14.5, 54.5], [14.9, 65.1], [16.0, 75.7], [18.0, 86.2], [21.8, 96.0], [27.9, 104.8],
        [35.8, 111.9], [45.0, 117.6], [55.5, 119.2], [66.0, 117.4], [75.2, 111.8], [83.1, 104.6],
        [89.1, 95.9], [92.8, 85.9], [94.6, 75.4], [95.6, 64.7], [95.9, 54.0], [22.9, 46.3],
        [27.6, 41.6], [34.4, 39.9], [41.6, 40.6], [48.3, 43.2], [61.4, 43.0], [68.2, 40.3],
        [75.4, 39.5], [82.2, 41.1], [87.0, 45.7], [55.0, 51.1], [55.1, 57.7], [55.1, 64.3],
        [55.1, 71.1], [47.2, 76.3], [51.0, 77.7], [55.2, 78.9], [59.3, 77.6], [63.1, 76.2],
        [31.0, 53.0], [35.2, 50.5], [40.2, 50.4], [44.6, 53.4], [40.0, 54.3], [35.1, 54.4],
        [65.4, 53.2], [69.8, 50.2], [74.8, 50.2], [78.9, 52.6], [75.0, 54.1], [70.1, 54.1],
        [39.6, 90.4], [45.2, 87.2], [51.0, 85.9], [55.2, 86.8], [59.5, 85.8], [65.4, 87.1],
        [71.1, 90.2], [65.7, 95.6], [60.0, 98.0], [55.3, 98.5], [50.7, 98.1], [45.0, 95.8],
        [42.0, 90.5], [50.9, 89.2], [55.2, 89.5], [59.6, 89.2], [68.6, 90.3], [59.7, 93.0],
        [55.3, 93.5], [50.9, 93.0],
    ],
    dtype=np.float32,
)

SHAPE_MODES = np.array(
    [
        [
            [-8.6, -0.7], [-8.2, 0.3], [-7.8, 1.3], [-7.4, 2.0], [-6.2, 2.2], [-4.4, 2.0],
            [-2.5, 1.4], [-0.7, 0.6], [0.0, 0.0], [-0.6, -0.6], [-2.4, -1.5], [-4.2, -2.2],
            [-6.0, -2.6], [-7.1, -2.5], [-7.6, -1.9], [-7.9, -1.1], [-8.3, -0.1], [-3.0, 0.1],
            [-1.6, 0.0], [-0.7, -0.1], [0.1, -0.1], [0.7, 0.0], [0.9, 0.1], [0.2, 0.2],
            [-0.6, 0.2], [-1.6, -0.1], [-2.8, -0.4], [1.3, 0.1], [2.1, 0.2], [3.0, 0.3],
            [3.9, 0.3], [1.4, 0.3], [2.0, 0.2], [2.3, 0.2], [2.0, 0.2], [1.4, 0.1],
            [-1.8, -0.1], [-1.2, -0.0], [-1.0, -0.0], [-1.2, -0.0], [-1.0, 0.0], [-1.2, 0.0],
            [-1.1, -0.0], [-0.9, -0.0], [-1.1, -0.1], [-1.7, -0.0], [-1.1, -0.0], [-0.9, 0.0],
            [-1.1, 0.1], [0.6, 0.2], [1.6, 0.2], [1.5, 0.2], [1.5, 0.2], [0.6, 0.1],
            [-1.0, -0.1], [0.3, -0.2], [1.3, -0.0], [1.3, 0.1], [1.3, 0.2], [0.3, 0.3],
            [-0.9, 0.1], [1.5, 0.2], [1.5, 0.2], [1.4, 0.1], [-0.9, -0.1], [1.3, -0.1],
            [1.3, 0.1], [1.4, 0.2],
        ],
        [
            [-0.4, 5.0], [-0.4, 4.6], [-0.6, 4.3], [-0.7, 4.1], [-0.8, 3.9], [-0.9, 3.5],
            [-0.6, 3.0], [-0.3, 2.3], [-0.0, 2.1], [0.3, 2.2], [0.5, 2.9], [0.6, 3.4],
            [0.5, 3.8], [0.3, 4.0], [0.2, 4.3], [0.0, 4.6], [-0.1, 4.9], [-0.2, 1.8],
            [-0.5, 1.1], [-0.5, 0.3], [-0.2, -0.3], [-0.0, -0.4], [-0.0, -0.4], [0.1, -0.3],
            [0.4, 0.2], [0.4, 1.0], [0.0, 1.7], [-0.0, -0.1], [-0.0, -0.9], [0.0, -1.6],
            [0.0, -2.2], [-0.0, -0.8], [0.0, -1.0], [0.0, -1.2], [-0.0, -1.1], [0.0, -0.8],
            [-0.2, 1.3], [-0.2, 0.8], [-0.3, 0.7], [-0.1, 0.8], [-0.1, 0.7], [-0.1, 0.8],
            [0.0, 0.7], [0.2, 0.6], [0.2, 0.7], [0.1, 1.2], [0.0, 0.7], [0.0, 0.6],
            [-0.6, 0.7], [-0.5, -0.6], [-0.1, -1.0], [0.0, -1.1], [0.2, -1.0], [0.5, -0.6],
            [0.6, 0.6], [0.4, 0.5], [0.2, 0.3], [0.0, 0.3], [-0.1, 0.3], [-0.4, 0.5],
            [-0.5, 0.4], [-0.1, -0.7], [0.0, -0.8], [0.2, -0.7], [0.6, 0.4], [0.2, 0.5],
            [0.0, 0.4], [-0.1, 0.5],
        ],
        [
            [0.6, -1.1], [0.6, -0.9], [0.5, -0.7], [0.5, -0.4], [0.6, -0.1], [0.7, 0.3],
            [0.4, 1.1], [0.1, 1.9], [-0.1, 2.1], [-0.3, 1.9], [-0.5, 1.1], [-0.7, 0.5],
            [-0.6, 0.1], [-0.5, -0.2], [-0.5, -0.5], [-0.5, -0.7], [-0.5, -0.9], [0.2, 0.3],
            [0.3, 0.6], [0.2, 0.9], [0.0, 1.1], [-0.1, 1.1], [0.2, 1.2], [0.1, 1.1],
            [-0.1, 1.0], [-0.1, 0.7], [-0.1, 0.5], [0.1, 0.8], [0.1, 1.1], [0.0, 1.3],
            [0.0, 1.6], [-0.3, 0.6], [-0.2, 0.8], [0.0, 1.0], [0.2, 0.8], [0.4, 0.6],
            [0.1, 0.2], [0.2, 0.4], [0.1, 0.5], [0.1, 0.4], [0.1, 0.3], [0.1, 0.2],
            [0.0, 0.5], [0.0, 0.6], [-0.1, 0.5], [-0.0, 0.3], [-0.0, 0.3], [0.1, 0.3],
            [-1.3, -0.8], [-1.0, -0.4], [-0.4, 0.0], [0.0, 0.0], [0.5, 0.0], [1.1, -0.4],
            [1.4, -0.7], [1.2, 1.6], [0.5, 2.7], [-0.0, 2.9], [-0.5, 2.7], [-1.2, 1.6],
            [-1.4, -0.4], [-0.4, -0.2], [0.0, -0.2], [0.5, -0.2], [1.4, -0.4], [0.5, 2.5],
            [-0.0, 2.6], [-0.5, 2.5],
        ],
    ],
    dtype=np.float32,
)

TEMPLATE_SIZE = 112
# 112x96 crops (SphereFace layout) are the 112x112 template with 8 px cut from each side.
NARROW_WIDTH = 96


def template_landmarks68(height: int = TEMPLATE_SIZE, width: int | None = None) -> np.ndarray:
    """The mean 68 points (68, 2) float32 for an aligned crop of `height` x `width` pixels.

    Square crops of any size scale the 112x112 shape; 112x96 crops shift it left by 8 px.
    """
    width = height if width is None else width
    points = TEMPLATE_LANDMARKS68 * (height / TEMPLATE_SIZE)
    if width != height:
        points = points.copy()
        points[:, 0] -= (height - width) / 2
    return points.astype(np.float32)


def fit_template_shape(
    shapes: np.ndarray, n_modes: int = 3, keep: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Mean shape (68, 2) and `n_modes` principal modes (n_modes, 68, 2) scaled to one std.

    `shapes` is (N, 68, 2) in crop pixels. The `1 - keep` fraction of shapes farthest (mean
    point distance) from the median shape are dropped first: they are landmark-fit failures.
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    distance = np.sqrt(((shapes - np.median(shapes, axis=0)) ** 2).sum(-1)).mean(1)
    kept = shapes[distance <= np.quantile(distance, keep)]
    mean = kept.mean(axis=0)
    centred = (kept - mean).reshape(len(kept), -1)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    std = singular[:n_modes] / np.sqrt(max(len(kept) - 1, 1))
    modes = (axes[:n_modes] * std[:, None]).reshape(n_modes, 68, 2)
    return mean.astype(np.float32), modes.astype(np.float32)


def measure_aligned_shapes(paths) -> np.ndarray:
    """dlib's 68 points of each photo's largest face, in its aligned 112x112 crop (N, 68, 2)."""
    from fmr.faces import alignment_matrix, detect_faces, landmarks68, load_image
    from fmr.faces.align import transform_points

    shapes = []
    for path in paths:
        image = load_image(path)
        faces = detect_faces(image)
        if faces:
            points = landmarks68(image, faces[0].box)
            shapes.append(transform_points(points, alignment_matrix(faces[0].landmarks)))
    return np.stack(shapes)
