"""Model cards: what a model file is and how to feed it. Torch-free, the one reader.

A model card is a small JSON object (`ModelCard`): architecture, input size and normalisation,
training data, metrics, calibrated thresholds. fmr keeps it in two places beside the weights:
the `.json` file next to a `.safetensors` model file (human-readable, preferred when present;
`fmr eval --calibrate` rewrites it) and a copy inside the safetensors metadata (key
`CARD_METADATA_KEY`), so the weights file alone describes itself. The dlib reference has a
`.json` card only (`checkpoints/dlib_reference.json`).

`read_card(path)` reads either without loading weights and without torch: the lookup of
shipped checkpoints, the app's model list and the evaluation runner all use it. Writing cards
(with the weights) is `fmr.modelfile.save_model_file` / `update_card`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from fmr.errors import CheckpointError

CARD_METADATA_KEY = "fmr_card"
_DICT_FIELDS = ("training", "metrics", "calibration", "calibration_masked")
_INT_FIELDS = ("embedding_size", "input_size")
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


@dataclass
class ModelCard:
    """What a model file is and how to feed it. JSON-serialisable via to_dict / from_dict.

    training: data, loss, schedule... as the training run recorded them.
    metrics: evaluation results (e.g. {"lfw_masked": {"accuracy": ...}}).
    calibration: verification thresholds (cosine and angle) and the FAR they were set at, for
    pairs of unmasked photos. calibration_masked: the same for a masked photo against an
    unmasked one ({} when not measured).
    input_normalisation: how pixels become the network's input (see
    `fmr.models.InputConfig`); storage: how the weights file stores them: fp32 | fp16 | int8.
    """

    name: str
    architecture: str
    embedding_size: int = 512
    input_size: int = 112
    input_normalisation: str = "(x/255 - 0.5) / 0.5"
    channel_order: str = "RGB"
    storage: str = "fp16"
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    calibration_masked: dict = field(default_factory=dict)
    notes: str = ""
    licence: str = ""
    created: str = ""
    fmr_version: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelCard:
        """Builds a card from a dict; unknown keys (from a newer fmr) are ignored. Raises
        ValueError when `name` or `architecture` is missing or a field has the wrong type."""
        if not isinstance(data, dict):
            raise ValueError(f"a model card is a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [name for name in ("name", "architecture") if name not in data]
        if missing:
            raise ValueError(f"the model card lacks {', '.join(missing)}")
        values = {key: value for key, value in data.items() if key in known}
        for key, value in values.items():
            expected = dict if key in _DICT_FIELDS else int if key in _INT_FIELDS else str
            if not isinstance(value, expected) or isinstance(value, bool):
                raise ValueError(f"model card field {key!r} should be {expected.__name__}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


def card_path(weights: str | Path) -> Path:
    """The `.json` card beside a model file."""
    return Path(weights).with_suffix(".json")


def card_from_json(text: str, where: str, hint: str = "") -> ModelCard:
    """A card from JSON text; CheckpointError naming `where` (and what to do: `hint`) when it
    is not a valid card."""
    try:
        return ModelCard.from_dict(json.loads(text))
    except (json.JSONDecodeError, ValueError) as exc:
        detail = f"; {hint}" if hint else ""
        raise CheckpointError(f"{where} is not valid ({exc}){detail}") from None


def _read_json_card(path: Path) -> ModelCard:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"model card {path} cannot be read ({exc})") from None
    return card_from_json(
        text, f"model card {path}",
        "fix or delete it (the card embedded in the .safetensors file is used when the .json "
        "is absent)" if path.with_suffix(".safetensors").is_file() else "fix or delete it",
    )


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file, read from its header alone (no weights, no
    torch). Raises CheckpointError when the file is not a readable safetensors file."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < size <= min(_MAX_HEADER, path.stat().st_size - 8):
                raise ValueError("header size does not fit the file")
            header = json.loads(handle.read(size).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        metadata = header.get("__metadata__") or {}
        if not isinstance(metadata, dict):
            raise ValueError("__metadata__ is not a JSON object")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}); it may be truncated or not a "
            "checkpoint: re-copy it or save it again with fmr"
        ) from None
    return metadata


def read_card(path: str | Path) -> ModelCard | None:
    """The model card of a model file, without loading its weights (cheap, no torch).

    path: a `.safetensors` file (the `.json` beside it when present, else the card in its
    metadata), a `.json` card, or another model file such as an insightface `backbone.pth` (the
    `.json` beside it). Returns None when the file has no fmr card. Raises CheckpointError when
    a card exists but cannot be read or is not a valid card.
    """
    path = Path(path)
    if path.suffix == ".json":
        return _read_json_card(path)
    beside = card_path(path)
    if beside.is_file():
        return _read_json_card(beside)
    if path.suffix == ".safetensors" and path.is_file():
        metadata = safetensors_metadata(path)
        if CARD_METADATA_KEY in metadata:
            return card_from_json(metadata[CARD_METADATA_KEY],
                                  f"{path}: the model card in its metadata",
                                  f"put a valid card in {beside.name} beside it")
    return None


def card_json(data: dict) -> str:
    """JSON with one key per line but lists of numbers on one line (a readable card)."""
    text = json.dumps(data, indent=1, allow_nan=False)
    number_list = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")
    return number_list.sub(lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text) + "\n"
