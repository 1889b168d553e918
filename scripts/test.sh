#!/usr/bin/env bash
# Set up .venv (with test tools) if needed, then lint (ruff, the import-layer contract) and run
# the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k masks).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
scripts/install_chromium.sh || echo "test: no chromium; the browser test will skip and say why" >&2
.venv/bin/ruff check .
.venv/bin/lint-imports --no-logo   # the import-layer contract in pyproject.toml
exec .venv/bin/python -m pytest "$@"
