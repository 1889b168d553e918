#!/usr/bin/env bash
# Set up (or bring up to date) the project-local virtual environment in .venv.
#   scripts/setup.sh          runtime dependencies, and fmr installed in editable mode
#   scripts/setup.sh --dev    the same plus test tools (pytest, ruff, playwright)
# Re-running is fast: nothing is reinstalled unless requirements*.txt, pyproject.toml or this
# script changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1
python=${PYTHON:-python3}
venv=.venv

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv with $($python --version 2>&1)" >&2
  "$python" -m venv "$venv"
fi

files=(requirements.txt pyproject.toml scripts/setup.sh)
[ $dev = 1 ] && files+=(requirements-dev.txt)
stamp="$venv/.fmr-setup-$dev"
digest=$(cat "${files[@]}" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
  exit 0
fi

pip=("$venv/bin/python" -m pip --disable-pip-version-check)
# pip's notes about the machine's extra package folders are noise here: keep errors only.
quiet() { "$@" 2> >(grep -v '^WARNING: Location' >&2); }

echo "setup: installing dependencies into $venv (first run: several minutes, torch is ~5 GB)" >&2
reqs=(-r requirements.txt)
[ $dev = 1 ] && reqs+=(-r requirements-dev.txt)
quiet "${pip[@]}" install -q "${reqs[@]}"
# facenet-pytorch pins old torch/numpy releases it does not need: install it without them.
quiet "${pip[@]}" install -q --no-deps facenet-pytorch==2.6.0
quiet "${pip[@]}" install -q --no-deps -e .
"$venv/bin/python" -c "import torch, cv2, dlib, facenet_pytorch, streamlit, faiss" \
  || { echo "setup: the environment does not import; see the messages above" >&2; exit 1; }
echo "$digest" > "$stamp"
echo "setup: done" >&2
