"""Resumable training state: `<out>/states/step-<N>.pt`, written atomically.

(Runs written before fmr named these "training states" kept them in `<out>/checkpoints/`; they
are found there too and resume as before. "Checkpoint" now means a shipped model file only:
see `fmr.modelfile`.)

A state file holds everything a run needs to continue exactly where it stopped: the backbone,
the class centres, the distillation projection, the optimiser and scheduler, the step, the
best validation result so far, the config and the RNG states of every rank. It is written to
a temporary file and renamed, so a crash never leaves a half-written state; the newest
`keep` files are kept. The exports meant for use (`best.safetensors` + `best.json`) are
written separately through `fmr.modelfile.save_model_file`.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from fmr.errors import CheckpointError
from fmr.files import write_atomically

STATE_FORMAT = "fmr-train-state"
STATE_DIR = "states"
LEGACY_STATE_DIR = "checkpoints"  # where runs before the rename kept their states
_STEP_FILE = re.compile(r"step-(\d+)\.pt$")


def rng_state(device: torch.device) -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def state_files(out: str | os.PathLike) -> list[Path]:
    """The run's state files, oldest step first (from `states/`, and `checkpoints/` for runs
    written before the rename; a step in both counts once, from `states/`)."""
    found: dict[int, Path] = {}
    for name in (LEGACY_STATE_DIR, STATE_DIR):
        folder = Path(out) / name
        if folder.is_dir():
            found.update((int(m.group(1)), p) for p in folder.iterdir()
                         if (m := _STEP_FILE.search(p.name)))
    return [found[step] for step in sorted(found)]


def save_state(out: str | os.PathLike, step: int, state: dict, keep: int = 2) -> Path:
    folder = Path(out) / STATE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.pt"
    write_atomically(path, lambda temporary: torch.save({"format": STATE_FORMAT, **state},
                                                        temporary))
    for old in state_files(out)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def resolve_resume(resume: str, out: str | os.PathLike | None) -> Path:
    """The state file `--resume` means: a file, a run folder (its newest), or "latest" in --out."""
    if resume == "latest":
        if out is None:
            raise CheckpointError("--resume without a path needs --out: the run folder to continue")
        candidates = state_files(out)
        if not candidates:
            raise CheckpointError(
                f"{out}: no training state to resume from (expected {STATE_DIR}/step-N.pt in it)"
            )
        return candidates[-1]
    path = Path(resume)
    if path.is_dir():
        candidates = state_files(path)
        if not candidates:
            raise CheckpointError(f"{path}: no {STATE_DIR}/step-N.pt training state in this folder")
        return candidates[-1]
    if not path.is_file():
        raise CheckpointError(f"{path}: no such training state file or run folder")
    return path


def load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or foreign files: say which and what was expected
        raise CheckpointError(
            f"{path}: cannot be read as a training state ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(
            f"{path}: not a train.py training state (to start from exported weights, that is "
            "not supported yet; pass a states/step-N.pt file or the run folder)"
        )
    return state
