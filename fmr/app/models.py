"""Which backbones the app can use, and loading them once per server process.

`backbone_inventory()` is cheap (it reads model cards only) and says, for every family fmr
knows, which checkpoint would be used or why there is none. `loaded_models()` loads every
available backbone once (`st.cache_resource`, with a spinner the first time) and warms up the
face detector, so the first comparison a user asks for does not pay for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st

from fmr.cards import read_card
from fmr.verify import FAMILIES, Embedder
from fmr.verify.lookup import DISPLAY_NAMES, available_backbones, dlib_card_path, missing_reason

FAMILY_TITLES = {"iresnet": "IResNet", "ressanet": "ResSaNet", "dlib": "dlib reference",
                 "dlib-mask": "dlib-mask (dlib fine-tuned for masks)"}


@dataclass(frozen=True)
class BackboneInfo:
    """One backbone family as the app reports it.

    path: the checkpoint `load_backbone(family)` would use, None when missing; reason: why it
    is missing and what to do (None when present); card: the model card as a dict ({} when
    missing).
    """

    family: str
    path: str | None
    reason: str | None
    card: dict = field(default_factory=dict)

    @property
    def title(self) -> str:
        return FAMILY_TITLES.get(self.family, DISPLAY_NAMES.get(self.family, self.family))

    @property
    def available(self) -> bool:
        return self.path is not None


def _read_card(family: str, path: str | None) -> dict:
    """The model card of a found checkpoint as a dict ({} when it cannot be read)."""
    if path is None:
        return {}
    try:
        card = read_card(dlib_card_path() if family == "dlib" else path)
    except Exception:  # a broken card shows up when the model loads; the list still renders
        return {}
    return card.to_dict() if card is not None else {}


def backbone_inventory() -> list[BackboneInfo]:
    """Every family fmr knows (IResNet, ResSaNet, dlib, dlib-mask), found or not, in that
    order."""
    found = available_backbones()
    return [
        BackboneInfo(
            family,
            found.get(family),
            None if found.get(family) else (missing_reason(family) or "not found"),
            _read_card(family, found.get(family)),
        )
        for family in FAMILIES
    ]


def _signature() -> tuple:
    """What the loaded models depend on: checkpoint paths, their and the dlib card's mtimes.

    A retrained or newly shipped checkpoint (or a different FMR_CHECKPOINT_DIR) changes it, so
    the cache loads the new models instead of serving stale ones.
    """

    def mtime(path: str | Path | None) -> float:
        try:
            return Path(path).stat().st_mtime if path else 0.0
        except OSError:
            return 0.0

    found = available_backbones()
    card = dlib_card_path()
    return tuple((f, found.get(f), mtime(found.get(f))) for f in FAMILIES) + (
        (str(card), mtime(card)),
    )


@dataclass
class LoadedModels:
    """embedders: loaded backbones in FAMILIES order; missing: [{"backbone", "reason"}]."""

    embedders: list[Embedder]
    missing: list[dict]

    def by_family(self, family: str) -> Embedder | None:
        return next((e for e in self.embedders if e.family == family), None)


def _warm_up(embedders: list[Embedder]) -> None:
    """Load the detector and landmark models and run each network once on a dummy input."""
    from fmr.faces.detect import detect_faces
    from fmr.faces.landmarks import shape_predictor

    detect_faces(np.full((96, 96, 3), 127, np.uint8))
    shape_predictor(68)
    for embedder in embedders:
        if embedder.reads_aligned_crops:
            embedder.embed_aligned(np.full((1, 112, 112, 3), 127, np.uint8))


# One entry: when a checkpoint changes, the models loaded for the old one are let go instead of
# staying in memory beside the new ones.
@st.cache_resource(max_entries=1,
                   show_spinner="Loading the face models (once per server start)...")
def _load_models(signature: tuple) -> LoadedModels:
    from fmr.verify import load_backbone

    embedders, missing = [], []
    for family, path, _ in signature[: len(FAMILIES)]:
        if path is None:
            missing.append({"backbone": family, "reason": missing_reason(family) or "not found"})
            continue
        try:
            embedders.append(load_backbone(family))
        except Exception as exc:  # a broken checkpoint: say so, keep the others
            missing.append({"backbone": family, "reason": f"{path}: could not be loaded ({exc})"})
    _warm_up(embedders)
    return LoadedModels(embedders, missing)


def loaded_models() -> LoadedModels:
    """Every available backbone, loaded once per server process (and per checkpoint set)."""
    return _load_models(_signature())


def missing_note(missing: list[dict]) -> str | None:
    """One markdown paragraph saying which backbones are missing and how to get them (without
    the server's paths: `fmr.app.page.for_browser`)."""
    from fmr.app.page import for_browser

    if not missing:
        return None
    lines = [
        f"- **{FAMILY_TITLES.get(m['backbone'], m['backbone'])}** is not loaded: "
        f"{for_browser(m['reason'])}"
        for m in missing
    ]
    return "Not every backbone is available, so results show only the others.\n\n" + "\n".join(
        lines
    )


def _where(path: list[str], entry: dict) -> str:
    """ "lfw-folds6-10/second-surgical-warp-seed0" + its condition -> "LFW folds 6-10, one photo
    masked: surgical, warp renderer"; other paths joined with " / "."""
    words = []
    for part in path:
        for piece in part.split("/"):
            folds = re.fullmatch(r"lfw-folds(\d+)-(\d+)", piece)
            words.append(f"LFW folds {folds[1]}-{folds[2]}" if folds else piece)
    condition = str(entry.get("condition", ""))
    masked = re.fullmatch(r"first photo unmasked, second photo masked \((.+)\)", condition)
    if condition == "unmasked" or masked:
        words[-1] = "unmasked" if not masked else f"one photo masked: {masked[1]}"
    return ", ".join(words) if len(words) <= 2 else " / ".join(words)


def accuracy_lines(card: dict) -> list[str]:
    """Measured accuracies recorded in a model card's `metrics`, as "where: 97.12%" lines.

    `fmr eval --record` stores {"lfw-folds6-10/<condition>": {"accuracy", "accuracy_std",
    "condition", ...}}; train.py nests validation results (validation.unmasked.accuracy).
    Any "accuracy" number in the tree is reported with where it was measured.
    """
    lines: list[str] = []

    def walk(node, path: list[str]) -> None:
        if not isinstance(node, dict):
            return
        value = node.get("accuracy")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            spread = node.get("accuracy_std")
            spread = f" ± {spread * 100:.2f}" if isinstance(spread, (int, float)) else ""
            lines.append(f"{_where(path, node) or 'accuracy'}: {value * 100:.2f}%{spread}")
        for key, child in node.items():
            if key != "selected":
                walk(child, [*path, str(key)])

    walk(card.get("metrics") or {}, [])
    return lines


def training_data(card: dict) -> str:
    """What the model was trained on, in a few words (from the card's `training`)."""
    training = card.get("training") or {}
    data = training.get("data")
    if isinstance(data, dict):
        data = data.get("description") or ", ".join(f"{k}: {v}" for k, v in data.items())
    return str(data or training.get("source") or "not recorded")
