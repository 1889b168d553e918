"""Face detection with MTCNN, tuned for photos and for tight face crops.

The P-, R- and O-Nets and their weights are facenet-pytorch's; the pipeline around them is
ours (`_mtcnn_detect`): channels-last tensors, an OpenCV image pyramid, OpenCV crops and numpy
non-maximum suppression. It finds the same faces as `facenet_pytorch.MTCNN.detect` (landmarks
within about a pixel) in well under half the time on one core, and never imports
facenet_pytorch or torchvision (about 1.5 s of start-up per process).
"""

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


# MTCNN's stage thresholds and pyramid factor (Zhang et al. 2016; facenet-pytorch's defaults).
MTCNN_THRESHOLDS = (0.6, 0.7, 0.7)
MTCNN_FACTOR = 0.709
# The thresholds of a second try when the first finds nothing (`detect_faces`): a mask hides
# the nose and mouth MTCNN looks for, so a masked face scores lower at every stage.
MTCNN_RETRY_THRESHOLDS = (0.4, 0.5, 0.6)


@functools.lru_cache(maxsize=1)
def _mtcnn_weights() -> dict[str, dict]:
    """facenet-pytorch's P-, R- and O-Net weights, loaded without importing facenet_pytorch.

    Importing that package pulls in torchvision and an Inception-ResNet (about 1.5 s of start-up
    per process); the three small networks are run here directly (see `_pnet`, `_rnet`, `_onet`).
    """
    import importlib.util
    from pathlib import Path

    import torch

    from fmr.errors import FmrError

    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FmrError("facenet-pytorch is not installed; run scripts/setup.sh (it installs MTCNN)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    weights = {}
    for name in ("pnet", "rnet", "onet"):
        state = torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True)
        # Channels-last convolutions and pools are several times faster on CPU than NCHW here
        # (max_pool2d in NCHW dominated facenet-pytorch's own pipeline).
        weights[name] = {
            k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
            for k, v in state.items()
        }
    return weights


def _conv_prelu(x, w: dict, layer: str):
    import torch.nn.functional as F

    n = layer[-1]
    return F.prelu(F.conv2d(x, w[f"conv{n}.weight"], w[f"conv{n}.bias"]), w[f"prelu{n}.weight"])


def _pnet(x, w: dict):
    """(N, 3, H, W) normalised pyramid level -> (box offsets (N, 4, h, w), face prob (N, h, w))."""
    import torch.nn.functional as F

    x = F.max_pool2d(_conv_prelu(x, w, "conv1"), 2, 2, ceil_mode=True)
    x = _conv_prelu(_conv_prelu(x, w, "conv2"), w, "conv3")
    prob = F.softmax(F.conv2d(x, w["conv4_1.weight"], w["conv4_1.bias"]), dim=1)[:, 1]
    return F.conv2d(x, w["conv4_2.weight"], w["conv4_2.bias"]), prob


def _rnet(x, w: dict):
    """(N, 3, 24, 24) normalised crops -> (box offsets (N, 4), face prob (N,))."""
    import torch.nn.functional as F

    x = F.max_pool2d(_conv_prelu(x, w, "conv1"), 3, 2, ceil_mode=True)
    x = F.max_pool2d(_conv_prelu(x, w, "conv2"), 3, 2, ceil_mode=True)
    x = _conv_prelu(x, w, "conv3")
    # The dense layer was trained on (width, height, channel) order.
    x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)
    x = F.prelu(F.linear(x, w["dense4.weight"], w["dense4.bias"]), w["prelu4.weight"])
    prob = F.softmax(F.linear(x, w["dense5_1.weight"], w["dense5_1.bias"]), dim=1)[:, 1]
    return F.linear(x, w["dense5_2.weight"], w["dense5_2.bias"]), prob


def _onet(x, w: dict):
    """(N, 3, 48, 48) crops -> (box offsets (N, 4), landmarks (N, 10), face prob (N,))."""
    import torch.nn.functional as F

    x = F.max_pool2d(_conv_prelu(x, w, "conv1"), 3, 2, ceil_mode=True)
    x = F.max_pool2d(_conv_prelu(x, w, "conv2"), 3, 2, ceil_mode=True)
    x = F.max_pool2d(_conv_prelu(x, w, "conv3"), 2, 2, ceil_mode=True)
    x = _conv_prelu(x, w, "conv4")
    x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)
    x = F.prelu(F.linear(x, w["dense5.weight"], w["dense5.bias"]), w["prelu5.weight"])
    prob = F.softmax(F.linear(x, w["dense6_1.weight"], w["dense6_1.bias"]), dim=1)[:, 1]
    offsets = F.linear(x, w["dense6_2.weight"], w["dense6_2.bias"])
    return offsets, F.linear(x, w["dense6_3.weight"], w["dense6_3.bias"]), prob


def _to_net_input(batch: np.ndarray):
    """(N, H, W, 3) float32 pixels -> normalised channels-last (N, 3, H, W) tensor."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    x = (x - 127.5) * 0.0078125
    return x.permute(0, 3, 1, 2)  # a channels-last view of the NHWC buffer: no copy


def _nms(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union"
) -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, best score first.

    "union": intersection over union without the +1 pixel convention (torchvision's nms, as
    facenet-pytorch uses for the first two stages). "min": intersection over the smaller box,
    with +1 (facenet-pytorch's last stage).
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = (boxes[:, i].astype(np.float64) for i in range(4))
    plus = 1.0 if method == "min" else 0.0
    area = (x2 - x1 + plus) * (y2 - y1 + plus)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + plus)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + plus)
        inter = w * h
        if method == "min":
            overlap = inter / np.minimum(area[i], area[rest])
        else:
            overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (MTCNN's `rerec`)."""
    boxes = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    boxes[:, 0] += w * 0.5 - side * 0.5
    boxes[:, 1] += h * 0.5 - side * 0.5
    boxes[:, 2] = boxes[:, 0] + side
    boxes[:, 3] = boxes[:, 1] + side
    return boxes


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply the networks' box offsets (fractions of width + 1 and height + 1)."""
    boxes = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, 0] += offsets[:, 0] * w
    boxes[:, 1] += offsets[:, 1] * h
    boxes[:, 2] += offsets[:, 2] * w
    boxes[:, 3] += offsets[:, 3] * h
    return boxes


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Each box's pixels (clipped to the image, as facenet-pytorch does) resized to size x size."""
    height, width = image.shape[:2]
    ints = np.trunc(boxes[:, :4]).astype(np.int64)
    x1 = np.maximum(ints[:, 0], 1) - 1
    y1 = np.maximum(ints[:, 1], 1) - 1
    x2 = np.minimum(ints[:, 2], width)
    y2 = np.minimum(ints[:, 3], height)
    out = np.empty((len(boxes), size, size, 3), dtype=np.float32)
    valid = np.zeros(len(boxes), dtype=bool)
    for k in range(len(boxes)):
        if x2[k] > x1[k] and y2[k] > y1[k]:
            patch = image[y1[k] : y2[k], x1[k] : x2[k]]
            out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
            valid[k] = True
    return out[valid], valid


def _mtcnn_detect(
    image: np.ndarray, min_face_size: int, thresholds: tuple[float, float, float] = MTCNN_THRESHOLDS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MTCNN's three stages on an RGB uint8 image: boxes (N, 4), scores (N,), points (N, 5, 2).
    thresholds: the face probability each stage needs (P-, R-, O-Net).

    The same algorithm and weights as facenet-pytorch's `MTCNN.detect` (boxes agree to a pixel
    or so: the pyramid uses OpenCV's area resampling), about three times faster on one core.
    """
    import torch

    weights = _mtcnn_weights()
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
    height, width = image.shape[:2]
    pixels = image.astype(np.float32)
    scale = 12.0 / min_face_size
    shortest = min(height, width) * scale
    scales = []
    while shortest >= 12:
        scales.append(scale)
        scale *= MTCNN_FACTOR
        shortest *= MTCNN_FACTOR

    with torch.inference_mode():
        # Stage 1: the proposal net slides over every pyramid level.
        candidates = []
        for s in scales:
            level = cv2.resize(
                pixels, (int(width * s + 1), int(height * s + 1)), interpolation=cv2.INTER_AREA
            )
            offsets, prob = _pnet(_to_net_input(level[None]), weights["pnet"])
            prob, offsets = prob[0].numpy(), offsets[0].numpy()
            rows, cols = np.nonzero(prob >= thresholds[0])
            if rows.size == 0:
                continue
            cells = np.stack([cols, rows], axis=1).astype(np.float32)
            found = np.concatenate(
                [
                    np.floor((2 * cells + 1) / s),
                    np.floor((2 * cells + 12) / s),
                    prob[rows, cols, None],
                    offsets[:, rows, cols].T,
                ],
                axis=1,
            )
            candidates.append(found[_nms(found[:, :4], found[:, 4], 0.5)])
        if not candidates:
            return empty
        boxes = np.concatenate(candidates)
        boxes = boxes[_nms(boxes[:, :4], boxes[:, 4], 0.7)]
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        boxes = np.stack(
            [
                boxes[:, 0] + boxes[:, 5] * w,
                boxes[:, 1] + boxes[:, 6] * h,
                boxes[:, 2] + boxes[:, 7] * w,
                boxes[:, 3] + boxes[:, 8] * h,
                boxes[:, 4],
            ],
            axis=1,
        )
        boxes = _square(boxes)

        # Stage 2: the refinement net rescores 24 x 24 crops of the proposals.
        crops, valid = _crops(pixels, boxes, 24)
        boxes = boxes[valid]
        if len(boxes) == 0:
            return empty
        offsets, prob = _rnet(_to_net_input(crops), weights["rnet"])
        offsets, prob = offsets.numpy(), prob.numpy()
        keep = prob > thresholds[1]
        boxes, offsets = boxes[keep], offsets[keep]
        boxes[:, 4] = prob[keep]
        pick = _nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = _square(_regress(boxes[pick], offsets[pick]))
        if len(boxes) == 0:
            return empty

        # Stage 3: the output net scores 48 x 48 crops and places the five landmarks.
        crops, valid = _crops(pixels, boxes, 48)
        boxes = boxes[valid]
        if len(boxes) == 0:
            return empty
        offsets, points, prob = _onet(_to_net_input(crops), weights["onet"])
        offsets, points, prob = offsets.numpy(), points.numpy(), prob.numpy()
    keep = prob > thresholds[2]
    boxes, offsets, points = boxes[keep], offsets[keep], points[keep]
    boxes[:, 4] = prob[keep]
    w = boxes[:, 2:3] - boxes[:, 0:1] + 1
    h = boxes[:, 3:4] - boxes[:, 1:2] + 1
    points = np.stack(
        [w * points[:, :5] + boxes[:, 0:1] - 1, h * points[:, 5:] + boxes[:, 1:2] - 1], axis=2
    )
    boxes = _regress(boxes, offsets)
    pick = _nms(boxes[:, :4], boxes[:, 4], 0.7, "min")
    boxes, points = boxes[pick], points[pick]
    scores = boxes[:, 4].astype(np.float32)
    return boxes[:, :4].astype(np.float32), scores, points.astype(np.float32)


def _run_mtcnn(image: np.ndarray, min_face_size: int,
               thresholds: tuple[float, float, float] = MTCNN_THRESHOLDS) -> list[Face]:
    height, width = image.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(height, width))
    small = image
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    detector_min = max(12, round(min_face_size * scale))
    boxes, scores, points = _mtcnn_detect(small, detector_min, thresholds)
    boxes, points = boxes / scale, points / scale
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


def detect_faces(image: np.ndarray, *, min_face_size: int = 20,
                 retry: bool = True) -> list[Face]:
    """Find every face in an RGB uint8 image, largest first.

    MTCNN runs on a copy whose longer side is at most 1280 px. When nothing is found, the image
    is padded (tight crops need context) and searched again; then (retry=True, and not an
    aligned crop's size) both are searched once more with the lower thresholds
    `MTCNN_RETRY_THRESHOLDS`, which find masked faces the first pass misses (about half of
    them: docs/benchmarks.md); an aligned crop (112x112 or 112x96) where MTCNN still sees
    nothing yields its template face (`source == "template"`), so aligned data never fails.
    `min_face_size` is the smallest face looked for, in pixels of `image`.
    """
    passes = [MTCNN_THRESHOLDS]
    # Not on an aligned crop: its template face is exact, a weak detection would not be.
    if retry and MTCNN_RETRY_THRESHOLDS != MTCNN_THRESHOLDS and not is_aligned_crop(image):
        passes.append(MTCNN_RETRY_THRESHOLDS)
    for thresholds in passes:
        faces = _run_mtcnn(image, min_face_size, thresholds) or _run_padded(
            image, min_face_size, thresholds)
        if faces:
            return faces
    if is_aligned_crop(image):
        return [template_face(image)]
    return []


def _run_padded(image: np.ndarray, min_face_size: int,
                thresholds: tuple[float, float, float]) -> list[Face]:
    """MTCNN on a copy of the image with a border around it (tight crops need context), faces
    mapped back to the image's pixels."""
    height, width = image.shape[:2]
    # Pad a copy no larger than MTCNN looks at anyway (DETECT_MAX_SIDE): padding the photo itself
    # would allocate 2.6 times its size, gigabytes for a 40-megapixel panorama without a face.
    scale = min(1.0, DETECT_MAX_SIDE / (max(height, width) * (1 + 2 * CROP_PAD_FRACTION)))
    small = image
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    pad = round(CROP_PAD_FRACTION * max(small.shape[:2]))
    padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    faces = _run_mtcnn(padded, max(1, round(min_face_size * scale)), thresholds)
    shift = np.float32(pad)
    return [
        Face((f.box - shift) / scale, f.score, (f.landmarks - shift) / scale, f.source)
        for f in faces
    ]
