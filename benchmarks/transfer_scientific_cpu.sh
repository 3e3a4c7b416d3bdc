#!/usr/bin/env bash
# Scientific transfer on CPU, 3 seeds: fine-tune from a pre-trained checkpoint, and the control arm
# that fine-tunes from an UNTRAINED checkpoint with the same parts frozen (does pre-training help,
# or only freezing?). Scratch rows are the from-scratch Table 3 runs (same config and seeds),
# linked into the tree, not re-run. Inductive and transductive run side by side (2 cores).
# Usage: bash benchmarks/transfer_scientific_cpu.sh CKPT [UNTRAINED_CKPT]
#   UNTRAINED_CKPT default: made here with `unisrec pretrain --max-steps 1 --lr 0` (initial weights).
# Datasets: DATA (default $UNISREC_DATA, else data/) holds games/ and scientific/.
# Writes results/transfer/transfer_scientific.{json,md} and _curves.png.
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT="${1:?pre-trained checkpoint dir}"
UNTRAINED="${2:-runs/pretrain/games_untrained}"
DATA="${DATA:-${UNISREC_DATA:-data}}"; RUNS="${RUNS:-runs/transfer3}"; SEEDS="${SEEDS:-2020 2021 2022}"
LIMIT="${LIMIT:-10}"
if [ ! -f "$UNTRAINED/model.safetensors" ]; then
  .venv/bin/unisrec pretrain "$DATA/games" --output "$UNTRAINED" --max-steps 1 --lr 0 --batch-size 64 --no-progress
fi
for mode in inductive transductive; do
  model=$([ $mode = inductive ] && echo unisrec_t || echo unisrec_t_id)
  for s in $SEEDS; do  # scratch arm = the Table 3 run of the same seed
    mkdir -p "$RUNS/scientific/$mode/scratch"
    ln -sfn "$PWD/runs/table3/scientific/$model/seed$s" "$RUNS/scientific/$mode/scratch/seed$s"
  done
  (
    .venv/bin/python benchmarks/transfer.py --target "scientific=$DATA/scientific:$CKPT" --modes $mode --inits pretrained \
      --seeds $SEEDS --time-limit-minutes "$LIMIT" --runs "$RUNS" --out "$RUNS/report_$mode" -- --threads 1
    for s in $SEEDS; do
      out="$RUNS/scientific/$mode/frozen_untrained/seed$s"
      [ -f "$out/metrics.json" ] || .venv/bin/unisrec finetune "$DATA/scientific" --mode $mode --from "$UNTRAINED" --seed $s \
        --threads 1 --time-limit-minutes "$LIMIT" --progress false --output "$out"
    done
  ) > "$RUNS/$mode.log" 2>&1 &
done
wait
.venv/bin/python benchmarks/transfer.py --target "scientific=$DATA/scientific:$CKPT" --seeds $SEEDS --runs "$RUNS" \
  --only-report --out results/transfer/transfer_scientific -- --threads 1
