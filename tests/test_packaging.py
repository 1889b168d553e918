"""pyproject.toml declares what requirements.txt pins (all but facenet-pytorch, installed apart
with --no-deps), and the package holds no repository tooling."""

from __future__ import annotations

import tomllib

from fmr.settings import REPO_ROOT


def _requirements() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name = line.split("=")[0].split("<")[0].split(">")[0].strip().lower()
            pins[name] = line.replace(" ", "")
    return pins


def test_pyproject_declares_the_pinned_runtime_dependencies():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = {d.split("=")[0].split("<")[0].strip().lower(): d.replace(" ", "")
                for d in project["dependencies"]}
    pinned = _requirements()
    assert "facenet-pytorch" not in declared
    assert declared == pinned


def test_no_dev_tools_inside_the_package():
    package = REPO_ROOT / "fmr"
    assert not (package / "app" / "server.py").exists()
    assert not (package / "app" / "screenshots.py").exists()
    assert not (package / "masks" / "preload.py").exists()
    assert "__main__" not in (package / "masks" / "template.py").read_text()
