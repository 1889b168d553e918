"""The import-layer contract (pyproject.toml, docs/architecture.md) holds, and the scripts on top
of the package stay thin: pages reach fmr through `fmr.app` and the lower layers, never the
command line or the pipelines; train.py only through `fmr.train.cli`."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fmr.settings import REPO_ROOT


def _fmr_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return {n for n in names if n == "fmr" or n.startswith("fmr.")}


def test_the_import_layer_contract_is_kept():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (requirements-dev.txt)")
    result = subprocess.run([lint, "--no-logo", "--no-cache"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_pages_and_train_py_sit_on_top():
    above_pages = ("fmr.cli", "fmr.commands", "fmr.pipelines", "fmr.train")
    for page in [REPO_ROOT / "streamlit_app.py", *sorted((REPO_ROOT / "pages").glob("*.py"))]:
        imports = _fmr_imports(page)
        assert any(n.startswith("fmr.app") for n in imports), page.name
        assert not [n for n in imports if n.startswith(above_pages)], (page.name, imports)
    assert _fmr_imports(REPO_ROOT / "train.py") == {"fmr.train.cli"}
