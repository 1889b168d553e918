"""Paths and limits that users may change through environment variables.

`FMR_HOME`: the project folder, holding `checkpoints/` (shipped checkpoints), `runs/` (training
runs) and `assets/`. Default: the repository checkout when fmr runs from one (an editable
install, or PYTHONPATH), else the current folder (fmr installed with `pip install .`).
`FMR_DATA_DIR`: the shared face data (LFW, CelebA subset, photos). Default: `../shared/data`
beside the project folder, the layout the project's development machines use.
`FMR_CHECKPOINT_DIR`: where shipped checkpoints are looked up. Default: `checkpoints/` in the
project folder.
`FMR_MAX_PIXELS`: the largest image (width x height) `load_image` accepts; default 40 megapixels.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_PARENT = Path(__file__).resolve().parent.parent


def project_root() -> Path:
    """The project folder: `FMR_HOME`, else the checkout fmr runs from, else the current folder."""
    env = os.environ.get("FMR_HOME")
    if env:
        return Path(env).expanduser().resolve()
    if (_PACKAGE_PARENT / "pyproject.toml").is_file() and (_PACKAGE_PARENT / "fmr").is_dir():
        return _PACKAGE_PARENT
    return Path.cwd().resolve()


REPO_ROOT = project_root()  # the project folder when fmr was imported (see project_root)
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
