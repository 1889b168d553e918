"""The mask detector's network: does an aligned face wear a mask? A tiny CNN, not a backbone.

    model = MaskClassifier()
    logits = mask_logits(model, mask_input(crops))  # crops: (N, 112, 112, 3) aligned, RGB
    probability = torch.sigmoid(logits)             # (N,) that each face wears a mask

The input is the whole aligned 112x112 crop (ArcFace template) shrunk to `MASK_INPUT_SIZE`
pixels, RGB, (x/255 - 0.5) / 0.5: the mask sits on the lower half, and the upper half tells a
mask from a hand, a scarf or a beard there. Six 3x3 convolutions (stride 2 four times) and one
linear layer on the 4x4 feature map, about 150k parameters; a few milliseconds a face on one
core. It is not in the backbone registry (`create_model`): it embeds nothing.

Model file: `save_mask_classifier` writes safetensors weights (fp16) with the card (a JSON
object: architecture, input, training data, validation and test figures) both inside the
file's metadata and in a `.json` beside it, readable by `fmr.cards.read_card`;
`load_mask_classifier` reads them back. Training: scripts/train_mask_detector.py.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fmr.errors import CheckpointError

ARCHITECTURE = "mask_cnn"
MASK_INPUT_SIZE = 64
INPUT_NORMALISATION = "(x/255 - 0.5) / 0.5"
CARD_METADATA_KEY = "fmr_card"  # as fmr.cards.CARD_METADATA_KEY


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class MaskClassifier(nn.Module):
    """(N, 3, 64, 64) normalised crops -> (N,) logits of "wears a mask"."""

    def __init__(self, width: int = 16, dropout: float = 0.2) -> None:
        super().__init__()
        w = width
        self.width = width
        self.features = nn.Sequential(
            _block(3, w, 2),  # 32x32
            _block(w, 2 * w, 2),  # 16x16
            _block(2 * w, 2 * w, 1),
            _block(2 * w, 4 * w, 2),  # 8x8
            _block(4 * w, 4 * w, 1),
            _block(4 * w, 8 * w, 2),  # 4x4
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(8 * w * 4 * 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)
        return self.head(self.dropout(x)).squeeze(1)


def mask_input(crops) -> torch.Tensor:
    """Aligned crops -> the classifier's float32 input (N, 3, 64, 64).

    crops: uint8 (N, H, W, 3) RGB numpy array or tensor (any square size, normally 112), or an
    already float (N, 3, H, W) tensor in [0, 255]."""
    x = torch.as_tensor(crops)
    if x.dtype == torch.uint8:
        x = x.permute(0, 3, 1, 2).float()
    if x.shape[-1] != MASK_INPUT_SIZE or x.shape[-2] != MASK_INPUT_SIZE:
        x = F.interpolate(x, size=(MASK_INPUT_SIZE, MASK_INPUT_SIZE), mode="bilinear",
                          align_corners=False, antialias=True)
    return (x / 255.0 - 0.5) / 0.5


def mask_logits(model: MaskClassifier, x: torch.Tensor) -> torch.Tensor:
    """(N,) logits of `mask_input` crops, averaged over each crop and its mirror image (as
    fmr's embeddings are): a mask is as much a mask mirrored."""
    return (model(x) + model(x.flip(-1))) / 2


def save_mask_classifier(path: str | Path, model: MaskClassifier, card: dict) -> Path:
    """Write `model` (fp16 weights, fp32 BN statistics) and `card` to PATH.safetensors and
    PATH.json. Returns the weights path."""
    from safetensors.torch import save_file

    path = Path(path).with_suffix(".safetensors")
    card = {**card, "architecture": ARCHITECTURE, "input_size": MASK_INPUT_SIZE,
            "input_normalisation": INPUT_NORMALISATION, "channel_order": "RGB",
            "storage": "fp16", "embedding_size": 1}
    card.setdefault("training", {})["width"] = int(model.width)
    tensors = {}
    for name, value in model.state_dict().items():
        value = value.detach().cpu().contiguous()
        if value.is_floating_point() and value.dim() > 1:
            value = value.half()
        tensors[name] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(card, indent=1, allow_nan=False) + "\n"
    save_file(tensors, str(path), metadata={CARD_METADATA_KEY: text})
    path.with_suffix(".json").write_text(text, encoding="utf-8")
    return path


def load_mask_classifier(path: str | Path) -> tuple[MaskClassifier, dict]:
    """(model in eval mode, fp32; its card) from a file `save_mask_classifier` wrote.
    Raises CheckpointError when the file is missing or not a mask classifier."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as reader:
            metadata = reader.metadata() or {}
        card = json.loads(metadata.get(CARD_METADATA_KEY, "{}"))
        tensors = load_file(str(path))
    except (OSError, SafetensorError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable mask detector ({exc}); restore it from git or train one "
            "with scripts/train_mask_detector.py"
        ) from None
    beside = path.with_suffix(".json")
    if beside.is_file():
        with contextlib.suppress(OSError, ValueError):  # else the card inside the weights
            card = json.loads(beside.read_text(encoding="utf-8"))
    if card.get("architecture") != ARCHITECTURE:
        raise CheckpointError(
            f"{path}: its card says architecture {card.get('architecture')!r}, not "
            f"{ARCHITECTURE!r}; this is not a mask detector"
        )
    model = MaskClassifier(width=int(card.get("training", {}).get("width", 16)))
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in tensors.items()})
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the mask detector ({exc})") from None
    return model.eval(), card
