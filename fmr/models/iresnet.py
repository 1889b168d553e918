"""IResNet: the "improved ResNet" face-recognition backbone of the ArcFace work.

Defined as insightface's `iresnet*` models so that their `backbone.pth` state dicts load
unchanged (same parameter names and shapes):

- stem: conv3x3 (stride 1) - BN - PReLU, no max-pool (`conv1`, `bn1`, `prelu`);
- four stages `layer1..4` of widths 64/128/256/512, each starting with stride 2
  (112 -> 56 -> 28 -> 14 -> 7), built from `IBasicBlock`:
  BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN, plus a shortcut that is a 1x1 conv + BN
  (`downsample.0`, `downsample.1`) where the shape changes;
- head: BN2d (`bn2`) - dropout - flatten - Linear(512*7*7, E) (`fc`) - BatchNorm1d(E)
  (`features`) whose scale is frozen at 1 (`requires_grad=False`), so the embedding keeps the
  scale the loss sees.

| model      | stage layers   | params | GFLOPs (multiply-adds, 112x112) |
|------------|----------------|--------|---------------------------------|
| iresnet18  | 2, 2, 2, 2     | 24.0M  | 2.61                            |
| iresnet34  | 3, 4, 6, 3     | 34.1M  | 4.46                            |
| iresnet50  | 3, 4, 14, 3    | 43.6M  | 6.31                            |
| iresnet100 | 3, 13, 30, 3   | 65.2M  | 12.09                           |
| iresnet200 | 6, 26, 60, 6   | 118.8M | 23.42                           |
| iresnet18_half | 2, 2, 2, 2 (widths 32-256) | 9.2M | 0.66                   |

(parameters and FLOPs from `fmr.models.count_parameters` / `count_flops`; `fmr models` prints
them.)

The forward pass has no data-dependent Python control flow, so it works with `torch.compile`,
`channels_last` and bf16 autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fmr.models.registry import register_model

IRESNET_LAYERS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}
STAGE_WIDTHS = (64, 128, 256, 512)
HALF_WIDTHS = (32, 64, 128, 256)
BN_EPS = 1e-5


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """1x1 conv + BN where the block changes shape, else None (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels, eps=BN_EPS)
    )


class IBasicBlock(nn.Module):
    """BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN, plus the shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=BN_EPS)
        self.conv1 = conv3x3(in_channels, channels)
        self.bn2 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.prelu = nn.PReLU(channels)
        self.conv2 = conv3x3(channels, channels, stride)
        self.bn3 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.downsample = shortcut(in_channels, channels, stride)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.prelu(self.bn2(self.conv1(self.bn1(x))))
        return self.bn3(self.conv2(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.residual(x) + identity


def build_head(
    backbone: nn.Module, channels: int, feature_size: int, embedding_size: int, dropout: float
) -> None:
    """Adds the head `bn2` - `dropout` - flatten - `fc` - `features` to `backbone` (insightface's
    names), with the scale of `features` (BatchNorm1d) frozen at 1."""
    backbone.bn2 = nn.BatchNorm2d(channels, eps=BN_EPS)
    backbone.dropout = nn.Dropout(p=dropout)
    backbone.fc = nn.Linear(channels * feature_size * feature_size, embedding_size)
    backbone.features = nn.BatchNorm1d(embedding_size, eps=BN_EPS)
    nn.init.constant_(backbone.features.weight, 1.0)
    backbone.features.weight.requires_grad = False


def build_stem(backbone: nn.Module, channels: int = STAGE_WIDTHS[0]) -> None:
    """Adds `conv1`, `bn1`, `prelu`: conv3x3 (stride 1) - BN - PReLU, no max-pool."""
    backbone.conv1 = conv3x3(3, channels)
    backbone.bn1 = nn.BatchNorm2d(channels, eps=BN_EPS)
    backbone.prelu = nn.PReLU(channels)


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs, unit BN scales. Every conv is followed by a BN, so the conv scale
    only matters before the running statistics are learned (an untrained model in eval mode)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.constant_(module.weight, 1.0)
            nn.init.constant_(module.bias, 0.0)


def feature_size(input_size: int) -> int:
    """Side of the last stage's feature map: four stride-2 stages (112 -> 7)."""
    size = input_size
    for _ in STAGE_WIDTHS:
        size = (size + 1) // 2
    return size


class StagedBackbone(nn.Module):
    """What IResNet and ResSaNet share after construction: stem, four stages `layer1..4`,
    head (names from `build_stem` and `build_head`). Subclasses build the stages."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, 512, S/16, S/16) last-stage feature map."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.bn2(x))
        x = torch.flatten(x, 1)  # logical (C, H, W) order, whatever the memory format
        return self.features(self.fc(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class IResNet(StagedBackbone):
    """IResNet backbone: (N, 3, S, S) float images normalised (x/255 - 0.5) / 0.5 -> (N, E)
    un-normalised embeddings. S is `input_size` (112 for every released model; smaller sizes
    only serve quick tests)."""

    def __init__(
        self,
        layers: Sequence[int],
        embedding_size: int = 512,
        dropout: float = 0.0,
        input_size: int = 112,
        widths: Sequence[int] = STAGE_WIDTHS,
    ) -> None:
        super().__init__()
        self.embedding_size = embedding_size
        self.input_size = input_size
        build_stem(self, widths[0])
        in_channels = widths[0]
        for index, (count, width) in enumerate(zip(layers, widths, strict=True)):
            blocks = [IBasicBlock(in_channels, width, stride=2)]
            blocks += [IBasicBlock(width, width) for _ in range(1, count)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            in_channels = width
        build_head(self, in_channels, feature_size(input_size), embedding_size, dropout)
        init_weights(self)


def _iresnet(depth: int, **kwargs) -> IResNet:
    return IResNet(IRESNET_LAYERS[depth], **kwargs)


@register_model
def iresnet18(**kwargs) -> IResNet:
    return _iresnet(18, **kwargs)


@register_model
def iresnet34(**kwargs) -> IResNet:
    return _iresnet(34, **kwargs)


@register_model
def iresnet50(**kwargs) -> IResNet:
    return _iresnet(50, **kwargs)


@register_model
def iresnet100(**kwargs) -> IResNet:
    return _iresnet(100, **kwargs)


@register_model
def iresnet200(**kwargs) -> IResNet:
    return _iresnet(200, **kwargs)


@register_model
def iresnet18_half(**kwargs) -> IResNet:
    """IResNet-18 at half the widths (32/64/128/256): about a quarter of the multiply-adds, for
    training and running on a CPU (the width of dlib's own ResNet)."""
    return IResNet(IRESNET_LAYERS[18], widths=HALF_WIDTHS, **kwargs)
