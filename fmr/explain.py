"""Why a score: occlusion sensitivity of a face-pair similarity.

A grey square is slid over face A's crop (the pixels the model actually sees); each occluded
crop is embedded and compared with face B's embedding. Where hiding a region lowers the
similarity, that region was helping the match; where it raises it, the region was counting
against it. Averaged over every square covering a pixel, this gives a map in similarity units
(Zeiler and Fergus 2014, applied to verification instead of classification).

    view_a = model_view(embedder, image_a, face_a)        # crop (H, W, 3) + its embed function
    view_b = model_view(embedder, image_b, face_b)
    maps = explain_pair(view_a, view_b)                   # (OcclusionMap for A, for B)
    maps[0].heatmap                                       # (H, W) similarity drop, A's pixels

On a masked face the map sits on the eyes and brows: hiding the mask changes little.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Patch side and stride as fractions of the crop side: 1/4 hides about one eye or the mouth.
DEFAULT_PATCH_FRACTION = 0.25
DEFAULT_STRIDE_FRACTION = 0.125
OCCLUDER_GREY = 128

EmbedFunction = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class OcclusionMap:
    """Occlusion sensitivity of one face against a fixed reference embedding.

    crop: (H, W, 3) uint8 RGB, the face as the model sees it. heatmap: (H, W) float32, for each
    pixel the mean drop in cosine similarity over the occluding squares that cover it (positive:
    hiding it lowers the score, so it supports the match; negative: it counts against it).
    baseline: the similarity with nothing hidden. patch, stride: square side and step, pixels.
    """

    crop: np.ndarray
    heatmap: np.ndarray
    baseline: float
    patch: int
    stride: int

    def region_mean(self, top: float, bottom: float) -> float:
        """Mean of the heatmap over the rows between `top` and `bottom` (fractions of H)."""
        height = self.heatmap.shape[0]
        rows = self.heatmap[int(round(top * height)) : int(round(bottom * height))]
        return float(rows.mean())


@dataclass(frozen=True)
class ModelView:
    """A face as one model sees it: the crop and the function that embeds a batch of such crops
    ((N, H, W, 3) uint8 -> (N, D) unit-norm float32)."""

    crop: np.ndarray
    embed: EmbedFunction


def patch_positions(size: int, patch: int, stride: int) -> list[int]:
    """Top-left offsets of squares of side `patch` every `stride` pixels along a side of `size`,
    with a last square flush with the far edge so every pixel is covered."""
    if not 0 < patch <= size or stride <= 0:
        raise ValueError(f"patch {patch} and stride {stride} do not fit a side of {size}")
    positions = list(range(0, size - patch + 1, stride))
    if positions[-1] != size - patch:
        positions.append(size - patch)
    return positions


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def occlusion_map(
    embed: EmbedFunction,
    crop: np.ndarray,
    reference: np.ndarray,
    *,
    patch_fraction: float = DEFAULT_PATCH_FRACTION,
    stride_fraction: float = DEFAULT_STRIDE_FRACTION,
    fill: int = OCCLUDER_GREY,
    batch_size: int = 32,
) -> OcclusionMap:
    """Which pixels of `crop` drive its cosine similarity to `reference`.

    embed: (N, H, W, 3) uint8 crops -> (N, D) embeddings (normalised here anyway).
    crop: (H, W, 3) uint8 RGB, aligned the way `embed` expects. reference: (D,) embedding of
    the other face. patch_fraction, stride_fraction: square side and step as fractions of the
    crop's shorter side. fill: the grey level of the occluder (0-255).
    Costs one embedding per square position (49 for a 112x112 crop with the defaults), batched.
    """
    crop = np.ascontiguousarray(crop, dtype=np.uint8)
    if crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"expected an RGB crop (H, W, 3), got shape {crop.shape}")
    height, width = crop.shape[:2]
    side = min(height, width)
    patch = max(1, int(round(patch_fraction * side)))
    stride = max(1, int(round(stride_fraction * side)))
    reference = _unit(np.asarray(reference).reshape(-1))
    boxes = [
        (y, x)
        for y in patch_positions(height, patch, stride)
        for x in patch_positions(width, patch, stride)
    ]
    baseline = float(_unit(embed(crop[None]))[0] @ reference)
    drops = np.empty(len(boxes), dtype=np.float64)
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        batch = np.repeat(crop[None], len(chunk), axis=0)
        for i, (y, x) in enumerate(chunk):
            batch[i, y : y + patch, x : x + patch] = fill
        similarities = _unit(embed(batch)) @ reference
        drops[start : start + len(chunk)] = baseline - similarities
    total = np.zeros((height, width), dtype=np.float64)
    count = np.zeros((height, width), dtype=np.float64)
    for drop, (y, x) in zip(drops, boxes, strict=True):
        total[y : y + patch, x : x + patch] += drop
        count[y : y + patch, x : x + patch] += 1
    heatmap = (total / np.maximum(count, 1)).astype(np.float32)
    return OcclusionMap(crop, heatmap, baseline, patch, stride)


def model_view(embedder, image: np.ndarray, face) -> ModelView:
    """The crop an `fmr.verify.Embedder` computes for `face` in `image`, and its batch embedder.

    fmr's backbones see the 5-point aligned crop at their card's input size (flip-averaged by
    `embed_aligned`); dlib's networks (the reference and dlib-mask) see their own 150x150 chip
    (`embedder.chip`, dlib's own landmarks).
    """
    if not getattr(embedder, "reads_aligned_crops", True):
        return ModelView(*embedder.chip_view(image, face))
    from fmr.faces.align import align_face

    size = int(getattr(embedder, "input_size", 112))
    return ModelView(align_face(image, face.landmarks, size), embedder.embed_aligned)


def explain_pair(
    view_a: ModelView, view_b: ModelView, **options
) -> tuple[OcclusionMap, OcclusionMap]:
    """Occlusion maps of both faces of a pair: A against B's embedding, and B against A's.

    options: as in `occlusion_map`. Both baselines equal the pair's similarity.
    """
    emb_a = view_a.embed(view_a.crop[None])[0]
    emb_b = view_b.embed(view_b.crop[None])[0]
    return (
        occlusion_map(view_a.embed, view_a.crop, emb_b, **options),
        occlusion_map(view_b.embed, view_b.crop, emb_a, **options),
    )
