#!/usr/bin/env bash
# Set up .venv if needed, then start the Streamlit app on http://127.0.0.1:${FMR_PORT:-8501}
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/streamlit run streamlit_app.py \
  --server.address 127.0.0.1 --server.port "${FMR_PORT:-8501}" \
  --server.headless true --browser.gatherUsageStats false "$@"
