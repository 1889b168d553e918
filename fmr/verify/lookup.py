"""Which checkpoint a backbone family name means.

`--backbone iresnet` (or `ressanet`, `dlib-mask`) means the shipped checkpoint in
`checkpoints/` (the newest `*.safetensors` whose model card's architecture starts with the
family name; dlib's architecture in a .safetensors file is dlib-mask), else the newest
trained `runs/**/best.safetensors` of that family. `dlib` is the reference model from
face_recognition_models. A name that is none of these may be a file in `checkpoints/` (with or
without `.safetensors`) or any path. Nothing here imports torch: it only reads model cards.
"""

from __future__ import annotations

from pathlib import Path

from fmr.cards import ModelCard, read_card
from fmr.errors import CheckpointError
from fmr.settings import REPO_ROOT, checkpoint_dir

FAMILIES = ("iresnet", "ressanet", "dlib", "dlib-mask")
TRAINED_FAMILIES = ("iresnet", "ressanet", "dlib-mask")
DISPLAY_NAMES = {"iresnet": "IResNet", "ressanet": "ResSaNet", "dlib": "dlib",
                 "dlib-mask": "dlib-mask"}
# dlib's network as fmr stores it: the reference (`dlib_reference.json`, weights in dlib's .dat)
# and its mask fine-tune (`train.py mask-finetune`, a .safetensors checkpoint) share this.
DLIB_ARCHITECTURE = "dlib_resnet_v1"
TRAIN_HINTS = {
    "iresnet": "python train.py --backbone iresnet18",
    "ressanet": "python train.py --backbone ressanet18",
    "dlib-mask": "python train.py mask-finetune --data PACK --out runs/dlib-mask",
}
DLIB_CARD = "dlib_reference.json"


def runs_dir() -> Path:
    """Where train.py writes runs (`runs/` in the repository)."""
    return REPO_ROOT / "runs"


def family_of(card: ModelCard | None, path: str | Path | None = None) -> str:
    """The family ("iresnet", "ressanet", ...) a card's architecture belongs to."""
    architecture = card.architecture.lower() if card is not None else ""
    if architecture == DLIB_ARCHITECTURE:  # the reference has no .safetensors; a fine-tune does
        return "dlib-mask" if path is not None and Path(path).suffix == ".safetensors" else "dlib"
    for family in FAMILIES:
        if architecture.startswith(family):
            return family
    if not architecture and path is not None and Path(path).name == "backbone.pth":
        return "iresnet"  # insightface's arcface_torch backbones are IResNets
    return architecture or "unknown"


def _newest_of_family(paths, family: str) -> Path | None:
    matches = []
    for path in paths:
        try:
            card = read_card(path)
        except CheckpointError:
            continue  # a broken card elsewhere must not hide a good checkpoint
        if family_of(card, path) == family:
            matches.append(path)
    return max(matches, key=lambda p: (p.stat().st_mtime, str(p)), default=None)


def find_checkpoint(family: str) -> Path:
    """The checkpoint `--backbone FAMILY` loads (see the module docstring).

    Raises `CheckpointError` saying how to get one when there is none.
    """
    if family == "dlib":
        from fmr.verify.dlib_reference import model_path

        return model_path()
    if family not in TRAINED_FAMILIES:
        raise CheckpointError(
            f"unknown backbone family {family!r}; choose one of {', '.join(FAMILIES)}, all, "
            "or pass --checkpoint FILE"
        )
    shipped = _newest_of_family(sorted(checkpoint_dir().glob("*.safetensors")), family)
    if shipped is not None:
        return shipped
    trained = _newest_of_family(sorted(runs_dir().glob("**/best.safetensors")), family)
    if trained is not None:
        return trained
    raise CheckpointError(
        f"no {DISPLAY_NAMES[family]} checkpoint found in {checkpoint_dir()} or {runs_dir()}: "
        f"train one with `{TRAIN_HINTS[family]}` or pass --checkpoint FILE"
    )


def available_backbones() -> dict[str, str | None]:
    """family -> path of the checkpoint `load_backbone(family)` would use, or None when missing.

    `missing_reason(family)` says why one is missing and what to do.
    """
    found: dict[str, str | None] = {}
    for family in FAMILIES:
        try:
            found[family] = str(find_checkpoint(family))
        except CheckpointError:
            found[family] = None
        except Exception:  # e.g. face_recognition_models not installed
            found[family] = None
    return found


def missing_reason(family: str) -> str | None:
    """Why `family` cannot be loaded (a message a person can act on), or None when it can."""
    try:
        find_checkpoint(family)
    except Exception as exc:
        return str(exc)
    return None


def resolve_checkpoint(name: str) -> Path:
    """A checkpoint named by path, or by file name (stem) inside `checkpoints/`."""
    path = Path(name).expanduser()
    if path.suffix == ".json" and path.with_suffix(".safetensors").is_file():
        return path.with_suffix(".safetensors")  # the card of a checkpoint means the checkpoint
    if path.exists():
        return path
    candidates = (Path(f"{path}.safetensors"), checkpoint_dir() / name)
    for candidate in (*candidates, checkpoint_dir() / f"{name}.safetensors"):
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        f"{name}: no such checkpoint file (nor in {checkpoint_dir()}); pass the path of a "
        ".safetensors checkpoint or an insightface backbone.pth"
    )


def dlib_card_path() -> Path:
    """Where the dlib reference's model card (with its calibration) lives."""
    return checkpoint_dir() / DLIB_CARD
