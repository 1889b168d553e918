"""Paths and limits that users may change through environment variables.

`FMR_DATA_DIR`: the shared face data (LFW, CelebA subset, photos). Default: `../shared/data`
beside the repository checkout, the layout the project's development machines use.
`FMR_CHECKPOINT_DIR`: where bundled checkpoints are looked up. Default: `checkpoints/` in the repo.
`FMR_MAX_PIXELS`: the largest image (width x height) `load_image` accepts; default 40 megapixels.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MAX_PIXELS = 40_000_000


def data_dir() -> Path:
    """The shared data folder (it may not exist: callers check and skip or explain)."""
    env = os.environ.get("FMR_DATA_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT.parent / "shared" / "data").resolve()


def checkpoint_dir() -> Path:
    env = os.environ.get("FMR_CHECKPOINT_DIR")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "checkpoints"


def max_pixels() -> int:
    env = os.environ.get("FMR_MAX_PIXELS")
    return int(env) if env else DEFAULT_MAX_PIXELS
