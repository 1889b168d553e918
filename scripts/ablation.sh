#!/usr/bin/env bash
# The recipe ablation of docs/model_card.md: iresnet18_half, the same wall-clock CPU time per arm
# (an online teacher's time counts), the same canvas pack, validation TAR at FAR 1e-3.
#
#   scripts/ablation.sh [PACK] [OUT] [SECONDS]     (defaults: data/canvas-pack runs/ablation 900)
#
# An arm whose best.json exists is skipped, so the script can be rerun after an interruption.
# Run it from a copy of the code (git worktree add --detach ...) if you edit while it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=${1:-data/canvas-pack}
OUT=${2:-runs/ablation}
BUDGET=${3:-900}
PY=${PYTHON:-.venv/bin/python}
COMMON=(--data "$PACK" --device cpu --backbone iresnet18_half --embedding-size 128
        --batch-size 64 --log-every 10 --warmup-epochs 0.1 --time-budget "$BUDGET" --epochs 40
        --val-every 100 --quiet --lr 0.05 --blur-prob 0.2 --seed 0)
arm() {  # name, flags...
  local name=$1; shift
  if [ -f "$OUT/$name/best.json" ]; then echo "ablation: $name done already"; return 0; fi
  rm -rf "${OUT:?}/$name"
  mkdir -p "$OUT"
  echo "ablation: $name ($BUDGET s): $*"
  "$PY" train.py "${COMMON[@]}" --out "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
}
arm a1-margin     --mask-prob 0 --distill-weight 0 --margin-weight 1
arm a2-masks      --mask-prob 0.5 --distill-weight 0 --margin-weight 1
arm a3-fixed      --mask-prob 0.5 --distill-weight 10 --margin-weight 0.1 --distill-targets fixed
arm a4-consistent --mask-prob 0.5 --distill-weight 10 --margin-weight 0.1 \
                  --distill-targets consistent
arm a5-mixup      --mask-prob 0.5 --distill-weight 10 --margin-weight 0.1 \
                  --distill-targets consistent --mix-prob 0.3
arm a6-adamw      --mask-prob 0.5 --distill-weight 10 --margin-weight 0.1 \
                  --distill-targets consistent --mix-prob 0.3 --optimizer adamw --lr 0.002 \
                  --weight-decay 0.05
# one line per arm: validation accuracy and TAR at FAR 1e-3, unmasked and masked
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

print("| arm | steps | unmasked acc | unmasked TAR@1e-3 | masked acc | masked TAR@1e-3 |")
print("|---|---:|---:|---:|---:|---:|")
for card in sorted(Path(sys.argv[1]).glob("a*/best.json")):
    metrics = json.loads(card.read_text())["metrics"]
    val, step = metrics["validation"], metrics["selected"]["step"]
    u, m = val["unmasked"], val["masked"]
    print(f"| {card.parent.name} | {step} | {u['accuracy']:.1%} | {u['tar_at_far_1e-3']:.2%} "
          f"| {m['accuracy']:.1%} | {m['tar_at_far_1e-3']:.2%} |")
EOF
