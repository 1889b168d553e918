"""How a model wants its pixels, and the flip-averaged embedding: one place for both.

`InputConfig` is fmr's version of timm's `pretrained_cfg`: every model built by
`create_model` carries one (`model.input_config`), model cards record it
(`input_size`, `channel_order`, `input_normalisation`), and everything that feeds a model
(training, validation, `fmr verify`, the ONNX export) normalises through it. fmr's models and
insightface's arcface_torch backbones take RGB 112x112 crops scaled as (x/255 - 0.5) / 0.5.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_PER_255 = re.compile(r"^\(x/255-(?P<mean>[\d.]+)\)/(?P<std>[\d.]+)$")  # (x/255 - m) / s
_RAW = re.compile(r"^\(x-(?P<mean>[\d.]+)\)/(?P<std>[\d.]+)$")  # (x - m) / s, pixel units


@dataclass(frozen=True)
class InputConfig:
    """A model's input: `input_size` square crops, `channel_order` "RGB" or "BGR", pixels x in
    [0, 255] scaled to (x/255 - mean) / std."""

    input_size: int = 112
    channel_order: str = "RGB"
    mean: float = 0.5
    std: float = 0.5

    @property
    def normalisation(self) -> str:
        """The model card's `input_normalisation` text for this config."""
        return f"(x/255 - {self.mean:g}) / {self.std:g}"

    @classmethod
    def from_card(cls, card) -> InputConfig:
        """The config a model card describes; ValueError for a normalisation fmr cannot read
        (it reads "(x/255 - m) / s" and "(x - m) / s" in pixel units, as insightface writes
        "(x - 127.5) / 127.5")."""
        text = str(card.input_normalisation).replace(" ", "")
        order = str(card.channel_order).upper()
        if order not in ("RGB", "BGR"):
            raise ValueError(f"channel order {card.channel_order!r} is neither RGB nor BGR")
        if match := _PER_255.match(text):
            mean, std = float(match["mean"]), float(match["std"])
        elif match := _RAW.match(text):
            mean, std = float(match["mean"]) / 255.0, float(match["std"]) / 255.0
        else:
            raise ValueError(f"input normalisation {card.input_normalisation!r} is not of the form "
                             "(x/255 - mean) / std")
        if std <= 0:
            raise ValueError(f"input normalisation {card.input_normalisation!r} divides by {std}")
        return cls(int(card.input_size), order, mean, std)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> the float32 NCHW model input, on the images' device.

        images: uint8 (N, 3, H, W) or (N, H, W, 3) RGB, or float with values in [0, 255] (not
        [0, 1]). A tensor whose dimension 1 has size 3 is read as NCHW, otherwise a last
        dimension of size 3 as NHWC. BGR models get their channels reversed here.
        """
        if images.ndim != 4:
            raise ValueError("expected a batch of images (N, 3, H, W) or (N, H, W, 3), got "
                             f"{tuple(images.shape)}")
        if images.shape[1] != 3:
            if images.shape[3] != 3:
                raise ValueError(
                    f"expected 3 RGB channels, got images of shape {tuple(images.shape)}")
            images = images.permute(0, 3, 1, 2)
        x = images.float().mul(1.0 / (255.0 * self.std)).sub_(self.mean / self.std)
        return x.flip(1) if self.channel_order == "BGR" else x


DEFAULT_INPUT = InputConfig()


def normalize_input(images: torch.Tensor) -> torch.Tensor:
    """RGB images -> the float32 NCHW input every fmr model expects, (x/255 - 0.5) / 0.5 in
    [-1, 1] (`DEFAULT_INPUT.normalise`)."""
    return DEFAULT_INPUT.normalise(images)


def embed_flip_averaged(model: torch.nn.Module, x: torch.Tensor, *, prepare=None,
                        autocast=contextlib.nullcontext) -> torch.Tensor:
    """L2-normalised (N, E) float32 embeddings of normalised inputs x (N, 3, S, S): the sum of
    the model's embeddings of each crop and of its mirror image, as ArcFace evaluates.

    prepare: a function applied to the batch of crops and mirrors (e.g. a memory layout);
    autocast: a context manager factory for the forward pass (e.g. bf16)."""
    n = x.shape[0]
    both = torch.cat([x, x.flip(3)])
    if prepare is not None:
        both = prepare(both)
    with autocast():
        features = model(both).float()
    return F.normalize(features[:n] + features[n:], dim=1)
