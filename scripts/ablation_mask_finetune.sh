#!/usr/bin/env bash
# The mask fine-tune's ablation (docs/model_card.md, "dlib-mask"): arms of equal steps on the
# same canvas pack, scored on the validation split (train.py mask-finetune's own validation).
#   scripts/ablation_mask_finetune.sh PACK OUT [STEPS]
# Arms: masked views only; + the unmasked term; + a heavier unmasked term; + ArcFace;
# the last stages only. Each arm writes OUT/<arm>/log.jsonl; the summary is OUT/summary.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
pack=${1:?usage: $0 PACK OUT [STEPS]}
out=${2:?usage: $0 PACK OUT [STEPS]}
steps=${3:-700}
python=${PYTHON:-.venv/bin/python}
common=(--data "$pack" --steps "$steps" --val-every $((steps / 2)) --no-val-at-start
        --precision bf16 --lr 2e-5 --warmup-steps 50)
declare -A arms=(
  [masked-only]="--mask-prob 1.0 --unmasked-weight 0"
  [both-terms]="--mask-prob 0.5 --unmasked-weight 1"
  [both-terms-w4]="--mask-prob 0.5 --unmasked-weight 4"
  [both-terms-arcface]="--mask-prob 0.5 --unmasked-weight 1 --arcface-weight 0.05"
  [last-stages]="--mask-prob 0.5 --unmasked-weight 1 --layers last"
)
for arm in masked-only both-terms both-terms-w4 both-terms-arcface last-stages; do
  if [ -f "$out/$arm/best.safetensors" ] && grep -q '"event": "end"' "$out/$arm/log.jsonl"; then
    continue  # done in an earlier call
  fi
  echo "ablation: $arm" >&2
  # shellcheck disable=SC2086
  "$python" train.py mask-finetune "${common[@]}" ${arms[$arm]} --out "$out/$arm"
done
"$python" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = ["arm\tstep\tunmasked TAR@1e-3\tmasked TAR@1e-3\tunmasked acc\tmasked acc"]
for log in sorted(out.glob("*/log.jsonl")):
    for line in log.read_text().splitlines():
        e = json.loads(line)
        if e["event"] == "validation":
            u, m = e["unmasked"], e["masked"]
            rows.append(f"{log.parent.name}\t{e['step']}\t{u['tar_at_far_1e-3']:.4f}\t"
                        f"{m['tar_at_far_1e-3']:.4f}\t{u['accuracy']:.4f}\t{m['accuracy']:.4f}")
(out / "summary.tsv").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
