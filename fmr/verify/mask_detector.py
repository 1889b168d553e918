"""Does a face wear a mask? The shipped mask detector, and which calibration a pair gets.

    detector = load_mask_detector()                     # None when no detector is shipped
    p = detector.probability(image, face)               # P(mask) of a detected face
    p = detector.probabilities(crops)                   # (N,) for aligned 112x112 crops
    masked, reason = mask_decision(prepared_a, prepared_b)

The detector (`fmr.models.mask_classifier`, trained by scripts/train_mask_detector.py on
training-side photos with and without synthetic masks) lives in
`checkpoints/mask_detector.safetensors` (FMR_CHECKPOINT_DIR's copy first, when it has one)
and is loaded once per process. A face counts as masked at probability >=
`MASK_PROBABILITY_THRESHOLD`; a pair is compared with the masked calibration when either face
is masked so, or wears a synthetic mask.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmr.errors import CheckpointError
from fmr.faces.detect import Face
from fmr.settings import REPO_ROOT, checkpoint_dir

MASK_DETECTOR_FILE = "mask_detector.safetensors"
# A face whose mask probability is at least this counts as masked.
MASK_PROBABILITY_THRESHOLD = 0.5
BATCH_SIZE = 128


def mask_detector_path() -> Path:
    """The mask detector's file: in the checkpoint folder (FMR_CHECKPOINT_DIR) when there is
    one there, else the one that ships in the project's checkpoints/ (it is part of fmr's face
    pipeline, not a backbone a user swaps: a checkpoint folder of backbones alone keeps it)."""
    for folder in (checkpoint_dir(), REPO_ROOT / "checkpoints"):
        if (folder / MASK_DETECTOR_FILE).is_file():
            return folder / MASK_DETECTOR_FILE
    return checkpoint_dir() / MASK_DETECTOR_FILE


class MaskDetector:
    """The mask classifier behind one interface; `card` is its model card (a dict)."""

    def __init__(self, path: str | Path) -> None:
        from fmr.models.mask_classifier import load_mask_classifier

        self.path = Path(path)
        self.model, self.card = load_mask_classifier(self.path)
        self._lock = threading.Lock()  # app sessions call from several threads

    def probabilities(self, crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(N,) float32 probabilities that each aligned crop (uint8 (N, H, W, 3) RGB, the
        112x112 ArcFace template; other square sizes are resized) shows a masked face."""
        import torch

        from fmr.models.mask_classifier import mask_input, mask_logits

        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2]:
            raise ValueError(f"expected square aligned crops (N, S, S, 3), got {crops.shape}")
        out = np.zeros(len(crops), np.float32)
        with self._lock, torch.inference_mode():
            for start in range(0, len(crops), BATCH_SIZE):
                x = mask_input(np.ascontiguousarray(crops[start : start + BATCH_SIZE]))
                out[start : start + len(x)] = torch.sigmoid(mask_logits(self.model, x)).numpy()
        return out

    def probability(self, image: np.ndarray, face: Face) -> float:
        """P(mask) of `face` in `image` (RGB uint8, the photo it was detected in)."""
        from fmr.faces.align import align_face

        return float(self.probabilities(align_face(image, face.landmarks)[None])[0])


@functools.lru_cache(maxsize=2)
def _load(path: str, mtime: float) -> MaskDetector:
    return MaskDetector(path)


def load_mask_detector(required: bool = False) -> MaskDetector | None:
    """The shipped mask detector (cached per process and file version), or None when there is
    none (`required=True`: raise CheckpointError saying how to get one)."""
    path = mask_detector_path()
    if not path.is_file():
        if required:
            raise CheckpointError(
                f"no mask detector at {path}: restore checkpoints/{MASK_DETECTOR_FILE} from git "
                "or train one with scripts/train_mask_detector.py"
            )
        return None
    return _load(str(path), path.stat().st_mtime)


def face_mask_probability(image: np.ndarray, face: Face) -> float | None:
    """P(mask) of one detected face with the shipped detector; None when none is shipped."""
    detector = load_mask_detector()
    return None if detector is None else detector.probability(image, face)


@dataclass(frozen=True)
class MaskDecision:
    """Which calibration a pair gets: masked (True when either face wears a synthetic mask or
    is found masked) and why, in words."""

    masked: bool
    reason: str


def _percent(probability: float) -> str:
    return f"{probability * 100:.0f}%"


def mask_decision(sides: Sequence, labels: Sequence[str] = ("photo A", "photo B")) -> MaskDecision:
    """Masked calibration or not for a pair of prepared faces (anything with `mask`, the
    synthetic mask's description or None, and `mask_probability`, a float or None).

    Reasons read like "a synthetic mask was drawn on photo A", "photo B wears a mask
    (detected, 97%)", or "neither photo wears a mask (A 2%, B 4%)".
    """
    causes, probabilities = [], []
    for label, side in zip(labels, sides, strict=True):
        probability = getattr(side, "mask_probability", None)
        if getattr(side, "mask", None):
            causes.append(f"a synthetic mask was drawn on {label}")
        elif probability is not None and probability >= MASK_PROBABILITY_THRESHOLD:
            causes.append(f"{label} wears a mask (detected, {_percent(probability)})")
        probabilities.append(probability)
    if causes:
        return MaskDecision(True, " and ".join(causes))
    short = [label.split()[-1] for label in labels]
    if all(p is None for p in probabilities):
        return MaskDecision(False, "no synthetic mask, and no mask detector to look for real "
                            f"ones ({MASK_DETECTOR_FILE} not found)")
    found = ", ".join(f"{s} {'?' if p is None else _percent(p)}"
                      for s, p in zip(short, probabilities, strict=True))
    return MaskDecision(False, f"neither photo wears a mask ({found})")
