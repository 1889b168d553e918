"""dlib's face-recognition ResNet in PyTorch, with the weights of the `.dat` file dlib ships.

dlib's model (`dlib_face_recognition_resnet_model_v1.dat`, from face_recognition_models) is the
teacher fmr distils into its students. dlib runs it one chip at a time, single-threaded and
without BLAS in the `dlib-bin` wheel: about 0.1 s per face here. This port runs the same network
batched on torch's kernels (any device, also where dlib is not installed, e.g. a GPU machine),
so a teacher can label many augmented views cheaply. It reproduces dlib's descriptors to about
1e-5 (see tests/test_dlib_resnet.py).

The network (dlib's `dnn_face_recognition_ex.cpp`): 150x150 RGB chip, (x - mean) / 256 ->
conv 7x7/2 (32) - affine - ReLU - max-pool 3x3/2 -> residual stages of widths 32 (3 blocks),
64 (4), 128 (3), 256 (3), 256 (1); each block conv 3x3 - affine - ReLU - conv 3x3 - affine,
plus the input, then ReLU. A stage's first block (but the first stage's) has stride 2 in its
first conv and a 2x2/2 average pool on the shortcut. dlib's strided layers have no padding, and
where the two branches differ in size the sum takes the larger shape with the smaller branch
zero-padded at the bottom and right (dlib's `add_prev`). Then global average pooling and a
128x256 linear layer without bias. Batch norm is folded into per-channel affine layers.

The `.dat` format: dlib serialises layers from the input up; every parameter tensor is written as
five compact integers (version 2, then its four dimensions) and raw little-endian float32
values. `read_dlib_tensors` finds them in order; `load_dlib_resnet` checks their sizes against
the architecture above before using them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURE = "dlib_resnet_v1"  # the model card's name for this network (fmr.modelfile)
INPUT_SIZE = 150
EMBEDDING_SIZE = 128
CHANNEL_MEANS = (122.782, 117.001, 104.298)  # RGB, dlib's input_rgb_image defaults
INPUT_DIVISOR = 256.0
# (width, blocks, first block downsamples) per stage, input side first.
STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


class DlibFormatError(ValueError):
    """The file is not the dlib face-recognition ResNet this port knows."""


def _read_int(data: bytes, position: int) -> tuple[int | None, int]:
    """dlib's compact integer: a control byte (low 4 bits: byte count; 0x80: negative), then
    the magnitude, little-endian. Returns (None, position) where the bytes are not one."""
    control = data[position]
    count = control & 0x0F
    if count == 0 or count > 8 or control & 0x70 or position + 1 + count > len(data):
        return None, position
    value = int.from_bytes(data[position + 1 : position + 1 + count], "little")
    return (-value if control & 0x80 else value), position + 1 + count


def read_dlib_tensors(data: bytes, min_values: int = 32) -> list[np.ndarray]:
    """Every serialised float tensor of at least `min_values` values (all finite and below
    1e4 in magnitude), in file order, shaped (n, k, rows, cols) as dlib stores them."""
    tensors = []
    position = 0
    end = len(data) - 10
    while position < end:
        version, cursor = _read_int(data, position)
        if version == 2:
            dims = []
            for _ in range(4):
                value, cursor = _read_int(data, cursor)
                if value is None or not 0 < value <= 10**7:
                    break
                dims.append(value)
            if len(dims) == 4:
                count = int(np.prod(dims))
                stop = cursor + 4 * count
                if count >= min_values and stop <= len(data):
                    values = np.frombuffer(data[cursor:stop], "<f4")
                    # Weights are small; bytes that merely look like a header decode to junk.
                    if np.isfinite(values).all() and np.abs(values).max() < 1e4:
                        tensors.append(values.reshape(dims))
                        position = stop
                        continue
        position += 1
    return tensors


class Affine(nn.Module):
    """Per-channel scale and shift (dlib's `affine` layer: batch norm folded for inference)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b with the smaller one zero-padded at the end of each dimension (dlib's add_prev)."""
    shape = [max(x, y) for x, y in zip(a.shape, b.shape, strict=True)]

    def grow(t: torch.Tensor) -> torch.Tensor:
        pads = []
        for axis in (3, 2, 1):
            pads += [0, shape[axis] - t.shape[axis]]
        return F.pad(t, pads) if any(pads) else t

    return grow(a) + grow(b)


class DlibBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, downsample: bool) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=0 if downsample else 1)
        self.affine1 = Affine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, padding=1)
        self.affine2 = Affine(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(add_padded(out, shortcut))


class DlibResNet(nn.Module):
    """(N, 3, 150, 150) float RGB chips in [0, 255] -> (N, 128) descriptors (not normalised;
    dlib's own are near unit length)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, 2, padding=0)
        self.affine1 = Affine(32)
        blocks = []
        in_channels = 32
        for width, count, downsample in STAGES:
            for index in range(count):
                blocks.append(DlibBlock(in_channels, width, downsample and index == 0))
                in_channels = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_channels, EMBEDDING_SIZE, bias=False)
        self.register_buffer("mean", torch.tensor(CHANNEL_MEANS).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / INPUT_DIVISOR
        x = F.max_pool2d(F.relu(self.affine1(self.conv1(x))), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean((2, 3)))

    @torch.no_grad()
    def embed_chips(self, chips: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """Unit-norm (N, 128) float32 descriptors of uint8 (N, 150, 150, 3) RGB chips."""
        chips = torch.as_tensor(np.asarray(chips)) if not torch.is_tensor(chips) else chips
        device = self.mean.device
        out = []
        for start in range(0, len(chips), batch_size):
            x = chips[start : start + batch_size].to(device).permute(0, 3, 1, 2).float()
            out.append(F.normalize(self(x).float(), dim=1).cpu())
        if not out:
            return np.zeros((0, EMBEDDING_SIZE), np.float32)
        return torch.cat(out).numpy()


def _layers(model: DlibResNet) -> list[nn.Module]:
    """The parameterised layers in dlib's file order."""
    layers: list[nn.Module] = [model.conv1, model.affine1]
    for block in model.blocks:
        layers += [block.conv1, block.affine1, block.conv2, block.affine2]
    return [*layers, model.fc]


def load_dlib_resnet(path: str | Path) -> DlibResNet:
    """The port with the weights of dlib's `.dat` file at `path`, in eval mode on the CPU.
    Raises `DlibFormatError` when the file's tensors do not fit the architecture."""
    data = Path(path).read_bytes()
    tensors = read_dlib_tensors(data)
    model = DlibResNet()
    layers = _layers(model)
    if len(tensors) != len(layers):
        raise DlibFormatError(f"{path}: {len(tensors)} parameter tensors, expected "
                              f"{len(layers)} for dlib's face-recognition ResNet")
    with torch.no_grad():
        for layer, tensor in zip(layers, tensors, strict=True):
            values = torch.from_numpy(tensor.reshape(-1).copy())
            if isinstance(layer, nn.Conv2d):
                weight, bias = layer.weight, layer.bias
                expected = weight.numel() + bias.numel()
                if values.numel() != expected:
                    raise DlibFormatError(f"{path}: a convolution has {values.numel()} values, "
                                          f"expected {expected}")
                weight.copy_(values[: weight.numel()].view_as(weight))
                bias.copy_(values[weight.numel() :])
            elif isinstance(layer, Affine):
                if values.numel() != 2 * layer.weight.numel():
                    raise DlibFormatError(f"{path}: an affine layer has {values.numel()} values")
                layer.weight.copy_(values[: layer.weight.numel()])
                layer.bias.copy_(values[layer.weight.numel() :])
            else:  # fc: dlib stores (inputs, outputs), row-major
                if tuple(tensor.shape[:2]) != (layer.in_features, layer.out_features):
                    raise DlibFormatError(f"{path}: the last layer is {tensor.shape}")
                layer.weight.copy_(torch.from_numpy(tensor.reshape(layer.in_features,
                                                                   layer.out_features).T.copy()))
    return model.eval()
