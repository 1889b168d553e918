"""Shared fixtures. Tests that need ../shared/data (or $FMR_DATA_DIR) skip with a reason when it
is absent; everything else runs everywhere."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from fmr.settings import REPO_ROOT, data_dir

os.environ.setdefault("TQDM_DISABLE", "1")  # keep test logs readable


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set FMR_DATA_DIR to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(data_dir(), "shared face data")


@pytest.fixture(scope="session")
def photos_dir(shared_data: Path) -> Path:
    return _require(shared_data / "photos", "photos/")


@pytest.fixture(scope="session")
def lfw_dir(shared_data: Path) -> Path:
    return _require(shared_data / "lfw", "LFW")


@pytest.fixture(scope="session")
def celeba_dir(shared_data: Path) -> Path:
    return _require(shared_data / "celeba299", "CelebA subset")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Put back `sys.modules["__main__"]` after each test: streamlit's AppTest leaves the page it
    ran there, and a later test that spawns processes (torch.multiprocessing, start method
    "spawn") would make every child run that page as its main module."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
