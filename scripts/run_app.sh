#!/usr/bin/env bash
# Set up .venv if needed, then start the Streamlit app on http://127.0.0.1:${FMR_PORT:-8501}
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Each browser session runs in its own thread; glibc's default of up to 8 malloc arenas per core
# let the server's peak memory grow by ~55 MiB per concurrent session, 2 arenas by ~22 MiB
# (benchmarks/app_load.py, docs/benchmarks.md "Concurrent sessions").
export MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-2}
exec .venv/bin/streamlit run streamlit_app.py \
  --server.address 127.0.0.1 --server.port "${FMR_PORT:-8501}" \
  --server.headless true --browser.gatherUsageStats false "$@"
