#!/usr/bin/env bash
# Train the shipped IResNet and ResSaNet checkpoints side by side on one GPU (issue 8).
#
# On the lent GPU machine, from the repo root, with the pack carried along (data/shared-pack,
# made here by `fmr prepare --preset shared --teacher dlib`):
#   scripts/train_shipped.sh                 # results under $OUT
# Here, on CPU, the same path on a tiny pack (a smoke run of a few minutes):
#   scripts/train_shipped.sh --smoke
#
# Both runs share the GPU; each fits its schedule into BUDGET seconds (train.py --time-budget)
# and stops hard at LIMIT seconds. What comes back under $OUT (at most 8 files, < 16 MiB each):
#   <architecture>.safetensors.partNN   the best export (int8), in 15 MiB parts; rejoin with
#                                       cat <architecture>.safetensors.part* > <architecture>.safetensors
#   results.tar.gz                      the cards (<run>/best.json: metrics, calibration),
#                                       log.jsonl, epochs.csv, config.json, stdout, env.txt
# Environment: PYTHON, PACK, OUT, RUNS, BUDGET, LIMIT, CONFIGS (space-separated), and
# ABLATION=1 to train configs/ablation-*.toml beside them (ArcFace alone; + masks) for the
# model card's ablation table: their cards and logs come back, not their weights.
set -uo pipefail
cd "$(dirname "$0")/.."

smoke=0
if [[ ${1:-} == --smoke ]]; then smoke=1; fi
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
CONFIGS=${CONFIGS:-"configs/gpu-iresnet.toml configs/gpu-ressanet.toml"}
if [[ ${ABLATION:-0} == 1 ]]; then
  CONFIGS="$CONFIGS configs/ablation-iresnet-arcface.toml configs/ablation-iresnet-masks.toml"
fi
RUNS=${RUNS:-runs/shipped-$(date +%Y%m%d-%H%M%S)}
OUT=${OUT:-$RUNS/out}
extra=()
if (( smoke )); then
  PACK=${PACK:-data/smoke-pack}
  BUDGET=${BUDGET:-120}
  LIMIT=${LIMIT:-300}
  if [[ ! -f $PACK/meta.json ]]; then
    "$PYTHON" -m fmr prepare --preset shared --teacher dlib --max-identities 8 \
      --max-validation-identities 2 --max-images-per-identity 2 --out "$PACK" --quiet || exit 1
  fi
  extra=(--device cpu --epochs 2 --batch-size 4 --workers 1 --log-every 1 --quiet)
else
  PACK=${PACK:-data/shared-pack}
  BUDGET=${BUDGET:-420}
  LIMIT=${LIMIT:-480}
fi
if [[ ! -f $PACK/meta.json ]]; then
  echo "train_shipped: no pack at $PACK (run: fmr prepare --preset shared --teacher dlib)" >&2
  exit 2
fi

mkdir -p "$RUNS" "$OUT"
{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "no NVIDIA GPU"
  "$PYTHON" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
  echo "pack $PACK: $(du -sh "$PACK" | cut -f1)"
} > "$RUNS/env.txt" 2>&1
cat "$RUNS/env.txt"

pids=()
names=()
for config in $CONFIGS; do
  name=$(basename "$config" .toml)
  names+=("$name")
  PYTHONUNBUFFERED=1 "$PYTHON" train.py --config "$config" --data "$PACK" --out "$RUNS/$name" \
    --time-budget "$BUDGET" --time-limit "$LIMIT" "${extra[@]}" > "$RUNS/$name.log" 2>&1 &
  pids+=($!)
  echo "train_shipped: $name started (pid $!, log $RUNS/$name.log)"
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    status=1
    echo "train_shipped: ${names[$i]} failed; the end of its log:" >&2
    tail -n 20 "$RUNS/${names[$i]}.log" >&2
  fi
done

# Package: weights in parts under 16 MiB, everything else in one archive.
members=(env.txt)
for name in "${names[@]}"; do
  members+=("$name.log")
  run="$RUNS/$name"
  for file in best.json log.jsonl epochs.csv config.json; do
    [[ -f $run/$file ]] && members+=("$name/$file")
  done
  # Only the shipped models' weights come back (at most 8 files of 16 MiB per call).
  if [[ -f $run/best.safetensors && $name == shipped-* ]]; then
    arch=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["architecture"])' \
      "$run/best.json")
    split -b 15M -d -a 2 "$run/best.safetensors" "$OUT/$arch.safetensors.part"
    grep -h '"kind": "stop"' "$run/log.jsonl" | tail -n 1 | cut -c1-400
  fi
done
tar -czf "$OUT/results.tar.gz" -C "$RUNS" "${members[@]}"
ls -l "$OUT"
exit $status
