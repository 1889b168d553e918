"""Face-recognition backbones: IResNet and ResSaNet, built by name through a registry.

    model = create_model("iresnet50")                # or "ressanet50", see list_models()
    embeddings = model(normalize_input(images_uint8))  # (N, 512), not L2-normalised

Every model maps (N, 3, 112, 112) float images, RGB, normalised (x/255 - 0.5) / 0.5, to
(N, embedding_size) un-normalised embeddings.
"""

from __future__ import annotations

import torch

from fmr.models import iresnet, ressanet  # noqa: F401  (registers the models)
from fmr.models.flops import count_flops, count_parameters
from fmr.models.registry import create_model, list_models, register_model

INPUT_SIZE = 112

__all__ = [
    "INPUT_SIZE",
    "count_flops",
    "count_parameters",
    "create_model",
    "list_models",
    "normalize_input",
    "register_model",
]


def normalize_input(images: torch.Tensor) -> torch.Tensor:
    """RGB images -> the float32 NCHW input every fmr model expects: (x/255 - 0.5) / 0.5.

    images: uint8 (N, 3, H, W) or (N, H, W, 3), or float with values in [0, 255] (not [0, 1]).
    A tensor whose dimension 1 has size 3 is read as NCHW, otherwise a last dimension of size 3
    as NHWC. Returns float32 (N, 3, H, W) in [-1, 1], on the input's device.
    """
    if images.ndim != 4:
        raise ValueError(
            f"expected a batch of images (N, 3, H, W) or (N, H, W, 3), got {tuple(images.shape)}"
        )
    if images.shape[1] != 3:
        if images.shape[3] != 3:
            raise ValueError(f"expected 3 RGB channels, got images of shape {tuple(images.shape)}")
        images = images.permute(0, 3, 1, 2)
    return (images.float().div(255.0) - 0.5) / 0.5
