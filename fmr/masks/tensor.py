"""Masks on batches of aligned crops as tensors: on-the-fly mask augmentation for training.

    from fmr.masks.tensor import mask_batch
    images = mask_batch(images, prob=0.5, generator=g)   # (N, 3, 112, 112), CPU or CUDA

The geometry and drawing are the "fmr" renderer's (`fmr.masks.render.render_layers`): a bank
of mask layers (coverage, surface coordinates, shading, parts) is drawn once per process on
112x112 aligned-crop geometry, with face shapes drawn from the template's shape modes and
coverage from each style's range. Each masked sample then takes one bank entry, a small random
similarity jitter, its own colour, pattern and pattern scale, and is lit like its own crop
(white point, colour cast, the face's light and shadow) - all as batched tensor operations, no
per-sample Python loop. The bank needs numpy and OpenCV once; nothing here needs dlib.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fmr.masks import shading
from fmr.masks.render import U_CM, V_CM, fmr_layers
from fmr.masks.styles import (
    EVAL_STYLES,
    MASK_STYLES,
    PATTERN_COLOURS,
    PATTERNS,
    STYLE_COLOURS,
    STYLE_COVERAGE,
    STYLE_PATTERNS,
    TRAIN_STYLES,
    canonical_style,
    draw_options,
    parse_colour,
)
from fmr.masks.template import SHAPE_MODES, TEMPLATE_LANDMARKS68, TEMPLATE_SIZE
from fmr.masks.texture import pattern_weight_map

__all__ = ["EVAL_STYLES", "TRAIN_STYLES", "VARIANTS_PER_STYLE", "mask_batch", "mask_bank"]

VARIANTS_PER_STYLE = 24
BANK_SEED = 20240601
# Similarity jitter per sample: rotation (degrees), scale and shift (pixels) of the mask layers.
JITTER_ROTATION, JITTER_SCALE, JITTER_SHIFT = 4.0, 0.04, 1.5
KEY_POINTS = (30, 48, 54)


@functools.lru_cache(maxsize=1)
def _cpu_bank() -> tuple[torch.Tensor, torch.Tensor]:
    """(len(MASK_STYLES) * VARIANTS_PER_STYLE, 8, 112, 112) float16 layers and their style ids."""
    rng = np.random.default_rng(BANK_SEED)
    layers, style_ids = [], []
    for style_id, style in enumerate(MASK_STYLES):
        for _ in range(VARIANTS_PER_STYLE):
            shape = TEMPLATE_LANDMARKS68 + np.tensordot(
                np.clip(rng.standard_normal(len(SHAPE_MODES)), -2, 2), SHAPE_MODES, axes=1
            )
            options = draw_options(style, rng, coverage=STYLE_COVERAGE[style])
            drawn = fmr_layers(shape, options, rng, (TEMPLATE_SIZE, TEMPLATE_SIZE),
                               region=(0, 0, TEMPLATE_SIZE, TEMPLATE_SIZE))
            stack = drawn.stack()
            stack[3] *= 1 + drawn.grain * rng.standard_normal(stack[3].shape).astype(np.float32)
            layers.append(stack)
            style_ids.append(style_id)
    return torch.from_numpy(np.stack(layers)).half(), torch.tensor(style_ids)


_DEVICE_BANKS: dict[str, torch.Tensor] = {}


def mask_bank(device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The layer bank on `device` (drawn on first use, about a second on one core)."""
    layers, style_ids = _cpu_bank()
    key = str(device)
    if key not in _DEVICE_BANKS:
        _DEVICE_BANKS[key] = layers.to(device)
    return _DEVICE_BANKS[key], style_ids


@functools.lru_cache(maxsize=8)
def _style_tables(styles: tuple[str, ...]):
    """Per style: colour table (C, 3), colour weights, pattern weights over PATTERNS."""
    colours, colour_weights, pattern_weights = [], [], []
    for style in styles:
        colours.append(np.stack([parse_colour(c)[1] for c, _ in STYLE_COLOURS[style]]))
        colour_weights.append(np.array([w for _, w in STYLE_COLOURS[style]], np.float64))
        table = dict(STYLE_PATTERNS[style])
        pattern_weights.append(np.array([table.get(p, 0.0) for p in PATTERNS], np.float64))
    width = max(len(c) for c in colours)
    colour_table = np.zeros((len(styles), width, 3), np.float32)
    weight_table = np.zeros((len(styles), width), np.float32)
    for i, (c, w) in enumerate(zip(colours, colour_weights, strict=True)):
        colour_table[i, : len(c)] = c
        weight_table[i, : len(w)] = w / w.sum()
    patterns = np.stack([w / w.sum() for w in pattern_weights]).astype(np.float32)
    secondary = np.stack([parse_colour(c)[1] for c in PATTERN_COLOURS]).astype(np.float32)
    return (torch.from_numpy(colour_table), torch.from_numpy(weight_table),
            torch.from_numpy(patterns), torch.from_numpy(secondary))


def _rand(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Uniform [0, 1) numbers from `generator` (whatever its device), on `device`."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _randn(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def _choice(probabilities: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Row-wise categorical draw: probabilities (M, K), uniform (M,) -> indices (M,)."""
    cumulative = probabilities.cumsum(1)
    index = (uniform[:, None] >= cumulative).sum(1)
    return index.clamp(max=probabilities.shape[1] - 1)


def _key_patches(x: torch.Tensor, theta: torch.Tensor | None, half: int = 2) -> torch.Tensor:
    """(M, 3, K * (2 * half + 1) ** 2) pixels of float images `x` (M, 3, H, W) around the face's
    key points (`KEY_POINTS`): on the aligned crop where `theta` is None, else where `theta`
    ((M, 2, 3), image normalised coordinates -> the aligned crop's) puts them."""
    m, _, height, width = x.shape
    points = torch.from_numpy(TEMPLATE_LANDMARKS68[list(KEY_POINTS)]).float().to(x.device)
    points = points.expand(m, -1, -1)  # template pixels (M, K, 2)
    if theta is not None:  # template pixels -> layer normalised -> image normalised -> pixels
        size = torch.tensor([width, height], dtype=torch.float32, device=x.device)
        normal = (2 * points + 1) / TEMPLATE_SIZE - 1
        linear, shift = theta[:, :, :2].float(), theta[:, :, 2:].float()
        normal = torch.linalg.solve(linear, (normal.transpose(1, 2) - shift)).transpose(1, 2)
        points = ((normal + 1) * size - 1) / 2
    points = points.round().long()
    offsets = torch.arange(-half, half + 1, device=x.device)
    xs = (points[..., 0, None, None] + offsets[None, :]).clamp(0, width - 1)  # (M, K, 1, P)
    ys = (points[..., 1, None, None] + offsets[:, None]).clamp(0, height - 1)  # (M, K, P, 1)
    rows = torch.arange(m, device=x.device).view(m, 1, 1, 1)
    picked = x.permute(0, 2, 3, 1)[rows, ys, xs]  # (M, K, P, P, 3)
    return picked.reshape(m, -1, 3).transpose(1, 2)


def mask_batch(
    images: torch.Tensor,
    prob: float,
    styles: Sequence[str] = TRAIN_STYLES,
    generator: torch.Generator | None = None,
    geometry: torch.Tensor | None = None,
) -> torch.Tensor:
    """Synthetic masks on a batch of aligned crops, each sample with probability `prob`.

    images: (N, 3, 112, 112) uint8, or float in [0, 255], RGB, on any device; with `geometry`,
    any (N, 3, H, W) (dlib's 150x150 chips, say). styles: the mask styles to draw from
    (uniformly); default TRAIN_STYLES. generator: a torch.Generator (on any device) for
    repeatable draws. geometry: optional (N, 2, 3) `affine_grid` matrices taking each image's
    normalised coordinates to the 112x112 aligned crop's, for crops that were rotated, zoomed,
    shifted or cut another way after alignment (`fmr.train.views.student_geometry_theta`,
    `fmr.train.views.chip_geometry_theta`): the mask then follows the face, and the colours it
    is lit and guarded against are read where the face's key points fall in each image.
    Returns a new tensor of the same dtype, shape and device.
    """
    if images.ndim != 4 or images.shape[1] != 3 or (
        geometry is None and tuple(images.shape[2:]) != (TEMPLATE_SIZE, TEMPLATE_SIZE)
    ):
        raise ValueError(
            "mask_batch expects (N, 3, 112, 112) aligned crops (or any size with a geometry), "
            f"got {tuple(images.shape)}"
        )
    styles = tuple(canonical_style(s) for s in styles)
    if not styles:
        raise ValueError("mask_batch needs at least one style")
    device, n = images.device, images.shape[0]
    height, width = int(images.shape[2]), int(images.shape[3])
    out = images.clone()
    chosen = torch.nonzero(_rand((n,), generator, device) < prob).flatten()
    m = int(chosen.numel())
    if m == 0:
        return out
    x = images[chosen].float()

    bank, bank_styles = mask_bank(device)
    style_slot = (_rand((m,), generator, device) * len(styles)).long().clamp(max=len(styles) - 1)
    style_ids = torch.tensor([MASK_STYLES.index(s) for s in styles], device=device)[style_slot]
    variant = (_rand((m,), generator, device) * VARIANTS_PER_STYLE).long()
    variant = variant.clamp(max=VARIANTS_PER_STYLE - 1)
    layers = bank[style_ids * VARIANTS_PER_STYLE + variant].float()  # (M, 8, 112, 112)

    # A small similarity jitter about the crop centre, the same for every layer of a sample.
    r = _rand((m, 4), generator, device) * 2 - 1
    angle = torch.deg2rad(r[:, 0] * JITTER_ROTATION)
    scale = 1 + r[:, 1] * JITTER_SCALE
    theta = torch.zeros(m, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle) / scale, -torch.sin(angle) / scale
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle) / scale, torch.cos(angle) / scale
    theta[:, 0, 2] = r[:, 2] * JITTER_SHIFT * 2 / 112
    theta[:, 1, 2] = r[:, 3] * JITTER_SHIFT * 2 / 112
    g = None  # where the face's key points are: on the aligned crop, or through `geometry`
    if geometry is not None:  # jitter o geometry: the view's pixel -> aligned crop -> layer
        g = geometry[chosen].to(device=device, dtype=theta.dtype)
        theta = torch.cat([theta[:, :, :2] @ g[:, :, :2],
                           theta[:, :, :2] @ g[:, :, 2:] + theta[:, :, 2:]], dim=2)
    grid = F.affine_grid(theta, [m, layers.shape[1], height, width], align_corners=False)
    layers = F.grid_sample(layers, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    alpha, u, v, shade = layers[:, 0], layers[:, 1], layers[:, 2], layers[:, 3]
    over_rgb, over_alpha = layers[:, 4:7], layers[:, 7]

    # Colours and patterns, per sample, from the style's usual ones.
    colour_table, colour_weights, pattern_weights, secondary_table = (
        t.to(device) for t in _style_tables(styles)
    )
    pick = _rand((m, 5), generator, device)
    base = colour_table[style_slot, _choice(colour_weights[style_slot], pick[:, 0])]
    base = (base * (0.92 + 0.16 * pick[:, 1:2])).clamp(0, 255)
    pattern = _choice(pattern_weights[style_slot], pick[:, 2])
    secondary = secondary_table[(pick[:, 3] * len(secondary_table)).long().clamp(
        max=len(secondary_table) - 1)]
    pattern_scale = (0.7 + 0.7 * pick[:, 4]).view(m, 1, 1)
    pattern_angle = torch.floor(_rand((m,), generator, device) * 4) * (np.pi / 4) - np.pi / 4
    pattern_angle = pattern_angle.view(m, 1, 1)

    # Lighting from the crop itself (see fmr.masks.render.composite; the maths is shared).
    lum = shading.luminance(x.movedim(1, -1))
    small = F.avg_pool2d(lum[:, None], 4).flatten(1)
    gain = shading.photo_gain(torch.quantile(small, 0.995, dim=1), x.mean(dim=(2, 3)) + 1.0)
    pool = max(1, round(16 * min(height, width) / TEMPLATE_SIZE))  # 16 px of a 112 crop
    blurred = F.interpolate(F.avg_pool2d(lum[:, None], pool), size=(height, width),
                            mode="bilinear", align_corners=False)[:, 0]
    body = (alpha > 0.5).float()
    level = (blurred * body).sum((1, 2)) / body.sum((1, 2)).clamp(min=1) + 1.0
    light = shading.face_light(blurred, level)

    skin = (x * body[:, None]).sum((2, 3)) / body.sum((1, 2)).clamp(min=1)[:, None]
    patches = _key_patches(x, g)
    references = torch.cat([skin[:, :, None], patches], dim=2).transpose(1, 2)  # (M, R, 3)
    base = shading.guard_contrast(base, references, gain)
    secondary = shading.guard_contrast(secondary, references, gain)

    weight = torch.zeros_like(u)
    for index, name in enumerate(PATTERNS):
        rows = torch.nonzero(pattern == index).flatten()
        if name == "plain" or rows.numel() == 0:
            continue
        weight[rows] = pattern_weight_map(
            name, u[rows] * U_CM, v[rows] * V_CM, pattern_scale[rows], pattern_angle[rows], torch
        ).float()
    weight = (weight * 0.9)[:, None]
    albedo = base[:, :, None, None] * (1 - weight) + secondary[:, :, None, None] * weight
    lit, total = shading.lit_layers(albedo.movedim(1, -1), shade, alpha, over_rgb.movedim(1, -1),
                                    over_alpha, light, gain)
    result = shading.blend(x.movedim(1, -1), shading.clip_lit(lit, total), total).movedim(-1, 1)
    if images.dtype == torch.uint8:
        result = result.round().clamp(0, 255).to(torch.uint8)
    else:
        result = result.to(images.dtype)
    out[chosen] = result
    return out
