"""Model files: safetensors weights plus a JSON model card, self-describing.

Three words, three things: a *model file* is what this module writes and reads (a training
run's `best.safetensors`, `fmr export --safetensors`); a *shipped checkpoint* is a model file in
the `checkpoints/` folder, found by `fmr.verify.lookup` (`--backbone`, `--checkpoint`,
`FMR_CHECKPOINT_DIR`); a *training state* is train.py's resumable `runs/<run>/states/step-N.pt`
(`fmr.train.state`), never loaded as a model.

`save_model_file("runs/r50", model, card)` writes two files:

- `runs/r50.safetensors`: the weights, with the card's JSON also embedded in the safetensors
  metadata (key "fmr_card"), so the weights file alone is enough to load the model;
- `runs/r50.json`: the same card, human-readable; when present it takes precedence (it is
  where `update_card` and `fmr eval --calibrate` store thresholds and metrics).

Storage (`card.storage`):
- fp32: weights as trained.
- fp16: floating-point weights as fp16; BN statistics, biases, PReLU slopes and other 1-D
  tensors stay fp32 (they are small, and BN variances lose most from rounding).
- int8: conv and linear weights quantised symmetrically per output channel (int8 values and an
  fp16 scale per output channel, stored as "<name>.int8_scale"); other 2-D or larger tensors
  fp16, 1-D ones fp32. Expanded back to fp32 at load time; only the file is smaller.

Class centres (only runs whose pack has a held-out split, `fmr prepare --preset original`):
the margin head's weights go in as the extra tensor `fmr_extra.class_centres` ((C, D) fp32;
tensors under `fmr_extra.` are not part of the backbone and the loader sets them aside) and the
identity names in `card.training["closed_set"]`, for `fmr eval --closed-set` only. They never
go into `checkpoints/` (`save_model_file` refuses), and a re-export without them drops the
card entry.

`load_model_file` also reads insightface `backbone.pth` state dicts (IResNet 18-200): the
architecture is inferred from the number of blocks per stage, and the card notes
insightface's input convention (RGB, (x/255 - 0.5) / 0.5, 112x112), which is fmr's own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from fmr.cards import CARD_METADATA_KEY, ModelCard, card_from_json, card_path, read_card
from fmr.errors import CheckpointError
from fmr.files import write_atomically, write_text_atomically

STORAGE_KINDS = ("fp32", "fp16", "int8")
INT8_SCALE_SUFFIX = ".int8_scale"
EXTRA_TENSOR_PREFIX = "fmr_extra."  # tensors beside the backbone's; the loader sets them aside
CENTRES_TENSOR = EXTRA_TENSOR_PREFIX + "class_centres"
CLOSED_SET_KEY = "closed_set"  # card.training entry: identity names of the class centres
CLOSED_SET_NOTE = (
    "The class centres (the margin head's weights, one per training identity, tensor "
    f"{CENTRES_TENSOR}) and the identity names are stored only for closed-set accuracy on the "
    "held-out photos of this run's pack (fmr eval --closed-set). They are not part of the "
    "model, describe the training people, and never go into shipped checkpoints."
)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")  # torch.save files: insightface state dicts
INSIGHTFACE_NOTE = (
    "Converted from an insightface backbone.pth state dict. insightface's input convention: "
    "RGB, 112x112 crops aligned to the ArcFace 5-point template, (x/255 - 0.5) / 0.5 (fmr's own)."
)


@dataclass
class LoadedModel:
    """A loaded checkpoint: `model` in eval mode, fp32, on the requested device."""

    model: nn.Module
    card: ModelCard
    path: Path


# ---------------------------------------------------------------------------------------------
# paths


def _weights_path(path: str | Path) -> Path:
    """<path>.safetensors for a base path, the path itself when it already ends so."""
    path = Path(path)
    return path if path.suffix == ".safetensors" else Path(f"{path}.safetensors")


def _resolve(path: str | Path) -> Path:
    """The weights file a user means: the path itself, or <path>.safetensors, or the
    .safetensors beside a card .json."""
    path = Path(path).expanduser()
    if path.is_file():
        if path.suffix == ".json" and path.with_suffix(".safetensors").is_file():
            return path.with_suffix(".safetensors")
        return path
    with_suffix = Path(f"{path}.safetensors")
    if with_suffix.is_file():
        return with_suffix
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder, not a checkpoint file: give the .safetensors file written by "
            "fmr (or an insightface backbone.pth)"
        )
    raise CheckpointError(
        f"checkpoint {path} not found: give the .safetensors file written by fmr (or an "
        "insightface backbone.pth)"
    )


# ---------------------------------------------------------------------------------------------
# saving


def _quantisable_names(model: nn.Module) -> set[str]:
    """State-dict names of conv and linear weights (int8 candidates)."""
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            names.add(f"{module_name}.weight" if module_name else "weight")
    return names


def quantise_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: weight (O, ...) fp32 -> (int8 values (O, ...),
    fp16 scales (O,)) with weight ~= values * scale[:, None, ...]."""
    flat = weight.detach().float().reshape(weight.shape[0], -1)
    scale = (flat.abs().amax(dim=1) / 127.0).clamp(min=1e-7).half()
    # quantise with the scale as stored (fp16), so the rounding error stays within half a step
    values = torch.round(flat / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)
    return values.reshape(weight.shape), scale


def dequantise_int8(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    shape = (-1,) + (1,) * (values.ndim - 1)
    return values.float() * scale.float().reshape(shape)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The backbone inside DistributedDataParallel / DataParallel / torch.compile wrappers (whose
    state-dict keys carry 'module.' or '_orig_mod.' prefixes)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _stored_tensors(model: nn.Module, storage: str) -> dict[str, torch.Tensor]:
    quantisable = _quantisable_names(model) if storage == "int8" else set()
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if not tensor.is_floating_point():
            tensors[name] = tensor.contiguous()
        elif storage == "fp32":
            tensors[name] = tensor.float().contiguous()
        elif name in quantisable:
            tensors[name], tensors[name + INT8_SCALE_SUFFIX] = quantise_int8(tensor)
        elif tensor.ndim >= 2:
            tensors[name] = tensor.half().contiguous()
        else:
            tensors[name] = tensor.float().contiguous()
    return tensors


def _write_card(path: Path, card: ModelCard) -> None:
    write_text_atomically(path, card.to_json())


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def save_model_file(
    path: str | Path, model: nn.Module, card: ModelCard, storage: str = "fp16",
    *, class_centres: tuple[torch.Tensor, list[str]] | None = None,
) -> Path:
    """Writes <path>.safetensors (weights + embedded card) and <path>.json (the card).

    `path` may end in .safetensors or be a base name. `card.storage` is set to `storage`,
    `card.created` (UTC, ISO 8601) and `card.fmr_version` are filled in when empty, and
    `card.embedding_size` / `card.input_size` from the model when it has those attributes.
    class_centres: optional ((C, D) centres, C identity names) for closed-set accuracy (see the
    module docstring); refused (CheckpointError) for a path inside the shipped checkpoint
    folder (`fmr.settings.checkpoint_dir`). Without it, a card's closed-set entry is dropped.
    Returns the .safetensors path.
    """
    from safetensors.torch import save_file

    from fmr import __version__
    from fmr.settings import checkpoint_dir

    if storage not in STORAGE_KINDS:
        raise ValueError(f"storage must be one of {', '.join(STORAGE_KINDS)}, got {storage!r}")
    model = unwrap_model(model)
    training = {k: v for k, v in card.training.items() if k != CLOSED_SET_KEY}
    card = dataclasses.replace(card, storage=storage, training=training)
    weights = _weights_path(path)
    extra: dict[str, torch.Tensor] = {}
    if class_centres is not None:
        centres, names = class_centres
        centres = centres.detach().float().cpu().contiguous()
        if centres.ndim != 2 or centres.shape[0] != len(names):
            raise ValueError(f"{len(names)} identity names for centres of shape "
                             f"{tuple(centres.shape)}")
        if _inside(weights, checkpoint_dir()):
            raise CheckpointError(
                f"{weights}: class centres (training identities) never go into the shipped "
                f"checkpoint folder {checkpoint_dir()}; export the run elsewhere (runs/) or "
                "without them"
            )
        extra[CENTRES_TENSOR] = centres
        card.training[CLOSED_SET_KEY] = {
            "tensor": CENTRES_TENSOR, "identities": [str(n) for n in names],
            "note": CLOSED_SET_NOTE,
        }
        if CLOSED_SET_NOTE not in card.notes:
            card.notes = f"{card.notes} {CLOSED_SET_NOTE}".strip()
    else:
        card.notes = card.notes.replace(CLOSED_SET_NOTE, "").strip()
    card.created = card.created or datetime.now(UTC).isoformat(timespec="seconds")
    card.fmr_version = card.fmr_version or __version__
    card.embedding_size = int(getattr(model, "embedding_size", card.embedding_size))
    card.input_size = int(getattr(model, "input_size", card.input_size))
    config = getattr(model, "input_config", None)  # fmr.models.InputConfig: how it is fed
    if config is not None:
        card.input_normalisation, card.channel_order = config.normalisation, config.channel_order
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {**_stored_tensors(model, storage), **extra}
    metadata = {"format": "pt", CARD_METADATA_KEY: json.dumps(card.to_dict())}
    write_atomically(weights, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    _write_card(card_path(weights), card)
    return weights


# ---------------------------------------------------------------------------------------------
# loading


def _read_safetensors(weights: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    try:
        with safe_open(str(weights), framework="pt", device="cpu") as reader:
            metadata = reader.metadata() or {}
            tensors = {key: reader.get_tensor(key) for key in reader.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{weights} is not a readable safetensors file ({exc}); it may be truncated or "
            "not a checkpoint: re-copy it or save it again with fmr"
        ) from None
    return tensors, metadata


def _expand_stored(tensors: dict[str, torch.Tensor], weights: Path) -> dict[str, torch.Tensor]:
    """int8 weights and their scales -> fp32 weights; everything floating -> fp32."""
    state = {}
    for name, tensor in tensors.items():
        if name.endswith(INT8_SCALE_SUFFIX) or name.startswith(EXTRA_TENSOR_PREFIX):
            continue
        scale = tensors.get(name + INT8_SCALE_SUFFIX)
        if scale is not None:
            if tensor.dtype != torch.int8 or scale.shape != tensor.shape[:1]:
                raise CheckpointError(
                    f"{weights}: int8 weight {name} and its scale do not match "
                    f"({tuple(tensor.shape)} {tensor.dtype}, scale {tuple(scale.shape)})"
                )
            tensor = dequantise_int8(tensor, scale)
        elif tensor.is_floating_point():
            tensor = tensor.float()
        state[name] = tensor
    return state


def _load_safetensors(weights: Path) -> tuple[dict[str, torch.Tensor], ModelCard]:
    tensors, metadata = _read_safetensors(weights)
    beside = card_path(weights)
    if beside.is_file():
        card = read_card(beside)
    elif CARD_METADATA_KEY in metadata:
        card = card_from_json(metadata[CARD_METADATA_KEY],
                              f"{weights}: the model card in its metadata",
                              f"put a valid card in {beside.name} beside it")
    else:
        raise CheckpointError(
            f"{weights} has no fmr model card (neither {beside.name} beside it nor "
            f"'{CARD_METADATA_KEY}' in its metadata), so fmr does not know its architecture; "
            "save it with fmr.modelfile.save_model_file"
        )
    return _expand_stored(tensors, weights), card


def _unwrap_state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    """A state dict from what torch.load returned: plain, or under 'state_dict' / 'model',
    with DataParallel's 'module.' prefix removed."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "backbone"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise CheckpointError(
            f"{path} is not a state dict of tensors: fmr reads insightface backbone.pth files "
            "saved with torch.save(model.state_dict(), ...)"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def infer_iresnet(state: dict[str, torch.Tensor], path: Path) -> tuple[str, int]:
    """Architecture name and embedding size of an insightface IResNet state dict, from the
    number of blocks in each of layer1..4 and the shape of fc.weight."""
    from fmr.models.iresnet import IRESNET_LAYERS

    blocks = [set() for _ in range(4)]
    for key in state:
        match = re.match(r"layer([1-4])\.(\d+)\.", key)
        if match:
            blocks[int(match.group(1)) - 1].add(int(match.group(2)))
    layers = tuple(len(b) for b in blocks)
    by_layers = {v: k for k, v in IRESNET_LAYERS.items()}
    fc = state.get("fc.weight")
    if layers not in by_layers or fc is None or fc.ndim != 2:
        raise CheckpointError(
            f"{path} does not look like an insightface IResNet state dict: found blocks per "
            f"stage {list(layers)}{'' if fc is not None else ' and no fc.weight'}; fmr expects "
            "the keys conv1, bn1, prelu, layer1..4.N.*, bn2, fc, features with blocks per stage "
            + ", ".join(f"r{d} {list(v)}" for d, v in IRESNET_LAYERS.items())
        )
    return f"iresnet{by_layers[layers]}", int(fc.shape[0])


def _load_torch_state(path: Path) -> tuple[dict[str, torch.Tensor], ModelCard]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{path} could not be read as a PyTorch state dict ({str(exc).splitlines()[0]}); "
            "it may be truncated, or a pickled model object rather than model.state_dict(). "
            "fmr reads .safetensors checkpoints it wrote and insightface backbone.pth files"
        ) from None
    except Exception as exc:  # the unpickler raises several unrelated types on foreign files
        raise CheckpointError(
            f"{path} is not a PyTorch state dict ({type(exc).__name__}); fmr reads "
            ".safetensors checkpoints it wrote and insightface backbone.pth files"
        ) from None
    state = _unwrap_state_dict(obj, path)
    architecture, embedding_size = infer_iresnet(state, path)
    card = read_card(path)
    if card is not None:
        if card.architecture != architecture:
            raise CheckpointError(
                f"{card_path(path)} says {card.architecture} but {path} holds an {architecture}; "
                "fix or delete the card"
            )
    else:
        card = ModelCard(
            name=path.stem,
            architecture=architecture,
            embedding_size=embedding_size,
            storage="fp32" if state["fc.weight"].dtype == torch.float32 else "fp16",
            notes=INSIGHTFACE_NOTE,
            licence="see the source of the insightface weights",
        )
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return state, card


def _build_model(state: dict[str, torch.Tensor], card: ModelCard, path: Path) -> nn.Module:
    from fmr.models import create_model, list_models
    from fmr.models.dlib_resnet import ARCHITECTURE as DLIB_ARCHITECTURE
    from fmr.models.dlib_resnet import DlibResNet

    known = [*list_models(), DLIB_ARCHITECTURE]
    if card.architecture not in known:
        raise CheckpointError(
            f"{path}: architecture {card.architecture!r} is not one fmr knows "
            f"({', '.join(known)}); is this checkpoint from a newer fmr?"
        )
    if card.architecture == DLIB_ARCHITECTURE:  # dlib's network (fine-tuned): its own input
        model = DlibResNet()
    else:
        model = create_model(
            card.architecture, embedding_size=card.embedding_size, input_size=card.input_size
        )
    expected = model.state_dict()
    # num_batches_tracked is bookkeeping that older insightface files lack
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")

        detail = "; ".join(
            part
            for part in (missing and f"missing {few(missing)}",
                         unexpected and f"unexpected {few(unexpected)}")
            if part
        )
        raise CheckpointError(
            f"{path}: its weights do not fit {card.architecture} ({detail}); the file's model "
            "card and its weights disagree, or the file comes from another model"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{path}: weight {name} has shape {tuple(tensor.shape)} but {card.architecture} "
                f"(embedding size {card.embedding_size}) expects {tuple(expected[name].shape)}"
            )
    model.load_state_dict(state, strict=False)
    from fmr.models import InputConfig

    if card.architecture == DLIB_ARCHITECTURE:
        return model.eval()
    # A card whose input fmr cannot read still loads; an embedder refuses to feed it.
    with contextlib.suppress(ValueError):
        model.input_config = InputConfig.from_card(card)
    return model


def load_model_file(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Loads an fmr .safetensors checkpoint or an insightface backbone.pth.

    path: the .safetensors file, its base name (without suffix) or its .json card; or a .pth /
    .pt state dict. Returns the model in eval mode, fp32, on `device`, with its card. Raises
    CheckpointError, naming the file and what fmr expected, for anything it cannot load.
    """
    weights = _resolve(path)
    if weights.suffix == ".safetensors":
        state, card = _load_safetensors(weights)
    elif weights.suffix in TORCH_SUFFIXES:
        state, card = _load_torch_state(weights)
    else:
        hint = " (ONNX files run under onnxruntime, not fmr.load_model_file)" if (
            weights.suffix == ".onnx") else ""
        raise CheckpointError(
            f"{weights}: fmr loads .safetensors checkpoints (written by fmr) and insightface "
            f"backbone.pth state dicts, not '{weights.suffix or 'no suffix'}' files{hint}"
        )
    model = _build_model(state, card, weights)
    return LoadedModel(model.to(device).eval(), card, weights)


def read_class_centres(path: str | Path) -> tuple[torch.Tensor, list[str]] | None:
    """The class centres ((C, D) float32) and identity names a training export carries for
    closed-set accuracy, or None when the checkpoint has none. Raises CheckpointError when the
    tensor and the card's names disagree."""
    weights = _resolve(path)
    if weights.suffix != ".safetensors":
        return None
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    card = read_card(weights)
    entry = card.training.get(CLOSED_SET_KEY) if card is not None else None
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as reader:
            keys = set(reader.keys())  # noqa: SIM118
            centres = reader.get_tensor(CENTRES_TENSOR) if CENTRES_TENSOR in keys else None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({exc})") from None
    if centres is None or not isinstance(entry, dict):
        return None
    names = [str(n) for n in entry.get("identities", [])]
    if centres.ndim != 2 or centres.shape[0] != len(names):
        raise CheckpointError(
            f"{weights}: {CENTRES_TENSOR} has shape {tuple(centres.shape)} but the card names "
            f"{len(names)} identities; export the run again"
        )
    return centres.float(), names


def card_of(path: str | Path) -> ModelCard:
    """The card of a model file: its fmr card (`fmr.cards.read_card`, no weights loaded) or,
    for an insightface state dict without one, the card fmr infers from its weights."""
    weights = _resolve(path)
    card = read_card(weights)
    if card is not None:
        return card
    if weights.suffix in TORCH_SUFFIXES:
        return _load_torch_state(weights)[1]
    return load_model_file(weights).card  # raises the loader's error (no card, not a model)


def update_card(path: str | Path, **fields) -> ModelCard:
    """Sets card fields (e.g. calibration={...}, metrics={...}) and rewrites the card: the .json
    beside the weights and, for .safetensors, the metadata copy inside it (the weights are
    rewritten byte for byte). A field given replaces the old value (merge dicts before calling).
    For an insightface .pth the card goes to a .json beside it. Returns the new card."""
    known = {f.name for f in dataclasses.fields(ModelCard)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"unknown model card fields: {', '.join(unknown)}")
    weights = _resolve(path)
    card = dataclasses.replace(card_of(weights), **fields)
    card = ModelCard.from_dict(card.to_dict())  # type-checks the new values
    if weights.suffix == ".safetensors":
        from safetensors.torch import save_file

        tensors, metadata = _read_safetensors(weights)
        metadata = {**metadata, CARD_METADATA_KEY: json.dumps(card.to_dict())}
        write_atomically(weights, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    _write_card(card_path(weights), card)
    return card
