#!/usr/bin/env bash
# Set up .venv (with test tools) if needed, then lint and run the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k masks).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
scripts/install_chromium.sh || echo "test: no chromium; the browser test will skip and say why" >&2
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
