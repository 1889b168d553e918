"""Training augmentation on whole batches, on the training device.

One call per step turns a uint8 batch of aligned crops into the normalised float input:

1. synthetic masks on a share of the images (`fmr.masks.tensor.mask_batch`, training styles),
   drawn first, on the aligned geometry the mask renderer expects;
2. one affine warp per image (horizontal flip, rotation, zoom, shift) as a single
   `grid_sample` over the batch; pixels from outside the crop are black, as in aligned crops;
3. colour jitter (brightness, contrast, saturation) and occasional greyscale;
4. `(x/255 - 0.5) / 0.5`, the input every fmr model expects.

Every random number comes from the `generator` argument (on the batch's device): the same
generator state gives the same batch, which is what makes resumed runs exact. Nothing here
reads values back to the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma


@dataclass(frozen=True)
class AugmentSettings:
    mask_prob: float = 0.5
    flip_prob: float = 0.5
    rotation: float = 8.0  # degrees, either way
    scale_jitter: float = 0.08  # relative zoom, either way
    translate: float = 0.04  # fraction of the side, either way
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    grayscale_prob: float = 0.05

    @classmethod
    def from_config(cls, config) -> AugmentSettings:
        return cls(**{name: getattr(config, name) for name in cls.__dataclass_fields__})


def _uniform(n: int, low: float, high: float, generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def affine_matrices(
    n: int, settings: AugmentSettings, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(n, 2, 3) float32 matrices for `F.affine_grid` (output -> input, normalised coordinates)."""
    angle = _uniform(n, -settings.rotation, settings.rotation, generator, device) * (math.pi / 180)
    zoom = 1.0 + _uniform(n, -settings.scale_jitter, settings.scale_jitter, generator, device)
    shift = _uniform(2 * n, -settings.translate, settings.translate, generator, device).view(n, 2)
    flip = torch.rand(n, generator=generator, device=device) < settings.flip_prob
    sign = 1.0 - 2.0 * flip.float()  # -1 mirrors x
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [
            torch.stack([cos * sign, -sin, 2 * shift[:, 0]], dim=1),
            torch.stack([sin * sign, cos, 2 * shift[:, 1]], dim=1),
        ],
        dim=1,
    )
    return theta


def colour_jitter(
    images: torch.Tensor, settings: AugmentSettings, generator: torch.Generator
) -> torch.Tensor:
    """Per-image brightness, contrast, saturation, greyscale: float (N, 3, H, W) in [0, 255]."""
    n, device = images.shape[0], images.device
    weights = torch.tensor(GREY_WEIGHTS, device=device, dtype=images.dtype).view(1, 3, 1, 1)

    def factors(amount: float) -> torch.Tensor:
        return _uniform(n, 1.0 - amount, 1.0 + amount, generator, device).view(n, 1, 1, 1)

    images = images * factors(settings.brightness)
    grey = (images * weights).sum(dim=1, keepdim=True)
    mean = grey.mean(dim=(2, 3), keepdim=True)
    images = (images - mean) * factors(settings.contrast) + mean
    grey = (images * weights).sum(dim=1, keepdim=True)
    images = (images - grey) * factors(settings.saturation) + grey
    to_grey = (torch.rand(n, generator=generator, device=device) < settings.grayscale_prob)
    images = torch.where(to_grey.view(n, 1, 1, 1), grey.expand_as(images), images)
    return images.clamp_(0.0, 255.0)


def apply_masks(images: torch.Tensor, prob: float, generator: torch.Generator) -> torch.Tensor:
    """Synthetic masks (training styles) on a share `prob` of uint8 aligned crops."""
    if prob <= 0:
        return images
    from fmr.masks.tensor import mask_batch  # its default styles are the training styles

    return mask_batch(images, prob, generator=generator)


def augment_batch(
    images: torch.Tensor,
    settings: AugmentSettings,
    generator: torch.Generator,
    *,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 (N, 3, 112, 112) aligned crops -> float32 normalised (N, 3, 112, 112) model input."""
    images = apply_masks(images, settings.mask_prob, generator)
    x = images.float()
    theta = affine_matrices(x.shape[0], settings, generator, x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = colour_jitter(x, settings, generator)
    x = x.mul_(2.0 / 255.0).sub_(1.0)  # == (x/255 - 0.5) / 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
