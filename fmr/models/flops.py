"""Model size: parameters and multiply-adds, counted without running real arithmetic."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (frozen ones included, buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: int = 112) -> int:
    """Multiply-adds of one forward pass on one (3, input_size, input_size) image.

    Counts convolutions, linear layers and matrix products (attention included), the usual
    convention for face backbones (insightface reports r50 at 6.3G); BN, activations and
    additions are left out. The pass runs on meta tensors (shapes only, no arithmetic), so it
    takes milliseconds whatever the model's size, and the model itself is not touched.
    """
    tensors = {name: t.to("meta") for name, t in model.named_parameters()}
    tensors.update({name: t.to("meta") for name, t in model.named_buffers()})
    # two images, so BatchNorm1d also runs on a model in training mode; halved below
    images = torch.zeros(2, 3, input_size, input_size, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        functional_call(model, tensors, (images,))
    return counter.get_total_flops() // 4  # 2 FLOPs per multiply-add, 2 images
