"""ResSaNet: residual blocks and self-attention in one face-recognition backbone.

After Chang, Tsai & Lo, "ResSaNet: A Hybrid Backbone of Residual Block and Self-Attention
Module for Masked Face Recognition" (ICCV 2021 workshops). Convolutions see local texture;
self-attention in the last stage relates distant parts of the face, which matters when a mask
hides the lower half and the evidence is spread over eyes, brows and forehead.

Design choices (fmr's reading of the paper):

- Stem, stage widths (64/128/256/512, each stage starting with stride 2: 112 -> 7) and head
  (BN2d - dropout - flatten - Linear(512*7*7, E) - BatchNorm1d with frozen scale) are exactly
  IResNet's, with the same parameter names, so a ResSaNet and an IResNet of one depth differ
  only in their blocks and compare fairly.
- Stage layers mirror IResNet's at each depth (18/34/50/100: [2,2,2,2], [3,4,6,3],
  [3,4,14,3], [3,13,30,3]).
- Stage 1: plain IResNet blocks (at 56x56 the feature map is mostly edges; SE buys little).
- Stages 2-3: IResNet blocks with squeeze-and-excitation (`SqueezeExcite`, reduction 16,
  applied to the residual branch before the sum, as in SE-ResNet).
- Stage 4: `AttentionBlock`, an IResNet block whose second 3x3 convolution (the one that
  carries the stride) is replaced by multi-head self-attention (`RelPosSelfAttention`, 4 heads
  of 128 channels) with learned 2-D relative position encodings, as in Bottleneck
  Transformers (BoTNet): the logit between query (h, w) and key (h', w') is
  q.k + q.r_height[h'-h] + q.r_width[w'-w]. In the first block of the stage the attention runs
  over the 14x14 map and a 2x2 average pool then takes it to 7x7 (BoTNet's stride placement);
  the other blocks attend over 7x7. The first 3x3 convolution of each block stays: it changes
  the width (256 -> 512) and keeps a local operator in every block. As in BoTNet the attention
  has no output projection: the values are a 1x1 projection already and the next block's
  convolution mixes the heads.
- Logits, softmax and the relative-position lookup use only static shapes and constant
  indices: no data-dependent control flow, so the model compiles, exports to ONNX and runs
  under bf16 autocast (softmax is autocast to fp32).

Parameters and FLOPs (multiply-adds at 112x112, from `count_parameters` / `count_flops`):

| depth | IResNet params | IResNet GFLOPs | ResSaNet params | ResSaNet GFLOPs |
|-------|----------------|----------------|-----------------|-----------------|
| 18    | 24.0M          | 2.61           | 20.9M           | 2.62            |
| 34    | 34.1M          | 4.46           | 29.5M           | 4.39            |
| 50    | 43.6M          | 6.31           | 39.0M           | 6.24            |
| 100   | 65.2M          | 12.09          | 60.7M           | 12.02           |

ResSaNet has about 3-5M fewer parameters at each depth (in stage 4 a 512x512 3x3 convolution,
2.4M weights, becomes a 1x1 query/key/value projection, 0.8M; SE adds under 0.3M in stages
2-3) for about the same multiply-adds: the first stage-4 block attends over 196 positions at
14x14, which costs what the removed convolutions saved.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fmr.models.iresnet import (
    BN_EPS,
    HALF_WIDTHS,
    STAGE_WIDTHS,
    IBasicBlock,
    StagedBackbone,
    build_head,
    build_stem,
    conv3x3,
    feature_size,
    init_weights,
    shortcut,
)
from fmr.models.registry import register_model

RESSANET_LAYERS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
}


class SqueezeExcite(nn.Module):
    """Channel gating: global average pool - 1x1 conv (C -> C/r) - ReLU - 1x1 conv - sigmoid."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(gate))))


class SEBasicBlock(IBasicBlock):
    """IResNet block with squeeze-and-excitation on the residual branch."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, channels, stride)
        self.se = SqueezeExcite(channels)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(super().residual(x))


def relative_index(size: int) -> torch.Tensor:
    """(size, size) int64: [i, j] = j - i + size - 1, the row of offset j - i in a table of
    2*size - 1 relative embeddings."""
    positions = torch.arange(size)
    return positions[None, :] - positions[:, None] + size - 1


class RelPosSelfAttention(nn.Module):
    """Multi-head self-attention over an H x W feature map with learned 2-D relative position
    encodings (BoTNet). (N, C, H, W) -> (N, C, H, W); H and W are fixed at construction."""

    def __init__(self, channels: int, height: int, width: int, heads: int = 4) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.head_channels = channels // heads
        self.height, self.width = height, width
        self.scale = self.head_channels**-0.5
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.rel_height = nn.Parameter(torch.randn(2 * height - 1, self.head_channels) * self.scale)
        self.rel_width = nn.Parameter(torch.randn(2 * width - 1, self.head_channels) * self.scale)
        # constant lookups, rebuilt from H and W, so not part of the state dict
        self.register_buffer("index_height", relative_index(height), persistent=False)
        self.register_buffer("index_width", relative_index(width), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.qkv(x).reshape(n, 3, self.heads, self.head_channels, h * w)
        q, k, v = qkv.unbind(1)  # each (N, heads, d, HW)
        q = q * self.scale
        content = q.transpose(-2, -1) @ k  # (N, heads, HW, HW)
        q_grid = q.reshape(n, self.heads, self.head_channels, h, w).permute(0, 1, 3, 4, 2)
        # [h, h', :] = encoding of row offset h' - h; likewise for columns
        table_height = self.rel_height[self.index_height]
        table_width = self.rel_width[self.index_width]
        logits_height = torch.einsum("bnhwd,hkd->bnhwk", q_grid, table_height)
        logits_width = torch.einsum("bnhwd,wkd->bnhwk", q_grid, table_width)
        position = (logits_height[..., :, None] + logits_width[..., None, :]).reshape(
            n, self.heads, h * w, h * w
        )
        attention = (content + position).softmax(dim=-1)
        out = v @ attention.transpose(-2, -1)  # (N, heads, d, HW)
        return out.reshape(n, c, h, w)


class AttentionBlock(nn.Module):
    """IResNet block with self-attention in place of its strided 3x3 convolution:
    BN - conv3x3 - BN - PReLU - RelPosSelfAttention - [2x2 avg pool] - BN, plus the shortcut.
    `size` is the side of the input feature map (the attention runs at that size)."""

    def __init__(
        self, in_channels: int, channels: int, size: int, stride: int = 1, heads: int = 4
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=BN_EPS)
        self.conv1 = conv3x3(in_channels, channels)
        self.bn2 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.prelu = nn.PReLU(channels)
        self.attention = RelPosSelfAttention(channels, size, size, heads)
        self.pool = nn.AvgPool2d(2, ceil_mode=True) if stride == 2 else nn.Identity()
        self.bn3 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.downsample = shortcut(in_channels, channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.prelu(self.bn2(self.conv1(self.bn1(x))))
        out = self.bn3(self.pool(self.attention(out)))
        return out + identity


class ResSaNet(StagedBackbone):
    """ResSaNet backbone: (N, 3, S, S) float images normalised (x/255 - 0.5) / 0.5 -> (N, E)
    un-normalised embeddings; S = `input_size` (112 for real use)."""

    def __init__(
        self,
        layers: Sequence[int],
        embedding_size: int = 512,
        dropout: float = 0.0,
        input_size: int = 112,
        heads: int = 4,
        widths: Sequence[int] = STAGE_WIDTHS,
    ) -> None:
        super().__init__()
        self.embedding_size = embedding_size
        self.input_size = input_size
        build_stem(self, widths[0])
        in_channels, size = widths[0], input_size
        for index, (count, width) in enumerate(zip(layers, widths, strict=True)):
            if index == 3:
                blocks = [AttentionBlock(in_channels, width, size, stride=2, heads=heads)]
                size = (size + 1) // 2
                blocks += [AttentionBlock(width, width, size, heads=heads) for _ in range(1, count)]
            else:
                block = IBasicBlock if index == 0 else SEBasicBlock
                blocks = [block(in_channels, width, stride=2)]
                blocks += [block(width, width) for _ in range(1, count)]
                size = (size + 1) // 2
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            in_channels = width
        build_head(self, in_channels, feature_size(input_size), embedding_size, dropout)
        init_weights(self)


def _ressanet(depth: int, **kwargs) -> ResSaNet:
    return ResSaNet(RESSANET_LAYERS[depth], **kwargs)


@register_model
def ressanet18(**kwargs) -> ResSaNet:
    return _ressanet(18, **kwargs)


@register_model
def ressanet34(**kwargs) -> ResSaNet:
    return _ressanet(34, **kwargs)


@register_model
def ressanet50(**kwargs) -> ResSaNet:
    return _ressanet(50, **kwargs)


@register_model
def ressanet100(**kwargs) -> ResSaNet:
    return _ressanet(100, **kwargs)


@register_model
def ressanet18_half(**kwargs) -> ResSaNet:
    """ResSaNet-18 at half the widths (32/64/128/256; attention with 4 heads of 64 channels),
    the CPU-sized partner of `iresnet18_half`."""
    return ResSaNet(RESSANET_LAYERS[18], widths=HALF_WIDTHS, **kwargs)
