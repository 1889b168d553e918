#!/usr/bin/env bash
# Train several train.py runs ("arms") side by side on one GPU, then package what comes back.
#
# On the lent GPU machine, from the repo root, with the pack carried along:
#   PACK=.devdata/shared-pack scripts/train_gpu.sh            # configs/gpu-arms.txt, results under $OUT
# Here, on CPU, the same path on a tiny pack (a smoke run of a few minutes):
#   scripts/train_gpu.sh --smoke
#
# ARMS names a file of lines "NAME CONFIG [train.py flags...]" (default configs/gpu-arms.txt).
# Every arm fits its schedule into BUDGET seconds (train.py --time-budget) and stops cleanly at
# LIMIT seconds (--time-limit). What comes back under $OUT (at most 8 files, < 16 MiB each):
#   <arm>.safetensors  each arm's best export, int8, without class centres (in .partNN pieces of
#                      15 MiB when larger: cat them back together)
#   results.tar.gz   each arm's best.json (card: metrics, calibration), log.jsonl, epochs.csv,
#                    config.json and stdout, plus env.txt (GPU, driver, torch)
# Environment: PYTHON, PACK, OUT, RUNS, BUDGET, LIMIT, ARMS.
set -uo pipefail
cd "$(dirname "$0")/.."

smoke=0
if [[ ${1:-} == --smoke ]]; then smoke=1; fi
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
ARMS=${ARMS:-configs/gpu-arms.txt}
RUNS=${RUNS:-runs/gpu-$(date +%Y%m%d-%H%M%S)}
OUT=${OUT:-$RUNS/out}
extra=()
if (( smoke )); then
  PACK=${PACK:-data/smoke-pack}
  BUDGET=${BUDGET:-60}
  LIMIT=${LIMIT:-240}
  if [[ ! -f $PACK/meta.json ]]; then
    "$PYTHON" -m fmr prepare --preset shared --teacher dlib --max-identities 8 \
      --max-validation-identities 2 --max-images-per-identity 2 --out "$PACK" --quiet || exit 1
  fi
  extra=(--device cpu --epochs 2 --batch-size 4 --workers 1 --log-every 1 --val-every 1 --quiet)
else
  PACK=${PACK:-data/shared-pack}
  BUDGET=${BUDGET:-420}
  LIMIT=${LIMIT:-480}
fi
if [[ ! -f $PACK/meta.json ]]; then
  echo "train_gpu: no pack at $PACK (run: fmr prepare --preset shared --teacher dlib)" >&2
  exit 2
fi
if [[ ! -f $ARMS ]]; then
  echo "train_gpu: no arms file $ARMS" >&2
  exit 2
fi

mkdir -p "$RUNS" "$OUT"
{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "no NVIDIA GPU"
  "$PYTHON" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
  echo "pack $PACK: $(du -sh "$PACK" | cut -f1); arms $ARMS; budget $BUDGET s, limit $LIMIT s"
} > "$RUNS/env.txt" 2>&1
cat "$RUNS/env.txt"

pids=()
names=()
while read -r name config flags; do
  [[ -z $name || $name == \#* ]] && continue
  names+=("$name")
  # shellcheck disable=SC2086  # flags are words on purpose
  PYTHONUNBUFFERED=1 "$PYTHON" train.py --config "$config" --data "$PACK" --out "$RUNS/$name" \
    $flags --time-budget "$BUDGET" --time-limit "$LIMIT" --quiet "${extra[@]}" \
    > "$RUNS/$name.log" 2>&1 &
  pids+=($!)
  echo "train_gpu: $name started (pid $!, log $RUNS/$name.log)"
done < "$ARMS"
# Package: each arm's weights (in parts when over 15 MiB), everything else in one archive.
# Also run every 60 s while the arms train, so that a call cut short still brings back the
# best exports so far.
package() {
  local members=(env.txt) name run file
  for name in "${names[@]}"; do
    [[ -f $RUNS/$name.log ]] && members+=("$name.log")
    run="$RUNS/$name"
    for file in best.json log.jsonl epochs.csv config.json; do
      [[ -f $run/$file ]] && members+=("$name/$file")
    done
    # The export without its class centres (training identities, ~8 MB for 512-d x 3,800),
    # re-stored as int8 (what ships); in 15 MiB parts when still larger (cat them together).
    local small="$run/export-int8.safetensors"
    if [[ -f $run/best.safetensors && $run/best.safetensors -nt $small ]]; then
      if "$PYTHON" -c 'import sys; from fmr.modelfile import load_model_file, save_model_file
m = load_model_file(sys.argv[1]); save_model_file(sys.argv[2], m.model, m.card, storage="int8")' \
        "$run/best.safetensors" "$small"; then
        if (( $(stat -c %s "$small") > 15 * 1024 * 1024 )); then
          split -b 15M -d -a 2 "$small" "$OUT/$name.safetensors.part"
        else
          cp "$small" "$OUT/$name.safetensors.tmp" && mv "$OUT/$name.safetensors.tmp" "$OUT/$name.safetensors"
        fi
      else
        echo "train_gpu: cannot copy $name's export" >&2
      fi
    fi
  done
  tar -czf "$OUT/results.tar.gz.tmp" -C "$RUNS" "${members[@]}" 2>/dev/null \
    && mv "$OUT/results.tar.gz.tmp" "$OUT/results.tar.gz"
}
( while sleep 60; do package; done ) &
packer=$!

status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    status=1
    echo "train_gpu: ${names[$i]} failed; the end of its log:" >&2
    tail -n 20 "$RUNS/${names[$i]}.log" >&2
  fi
done

kill "$packer" 2>/dev/null
package
for name in "${names[@]}"; do
  echo "== $name"; grep -h '"kind": "val"' "$RUNS/$name/log.jsonl" 2>/dev/null | tail -n 1 | cut -c1-300
done
ls -l "$OUT"
exit $status
