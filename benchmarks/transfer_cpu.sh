#!/usr/bin/env bash
# The CPU-budget transfer run of this session (2 shared cores): pre-train on Games for a fixed
# time, then fine-tune on Scientific, scratch vs pre-trained, inductive + transductive, one seed,
# a few epochs each (every-position batching for both arms, to fit the budget).
# Usage: bash benchmarks/transfer_cpu.sh [PRETRAIN_MINUTES] [FINETUNE_EPOCHS]
# Datasets: DATA (default $UNISREC_DATA, else data/) holds games/ and scientific/.
# Its results (session 1, superseded by transfer_scientific_cpu.sh) are in results/archive/transfer/.
set -euo pipefail
cd "$(dirname "$0")/.."
PT_MIN="${1:-20}"
FT_EPOCHS="${2:-2}"
DATA="${DATA:-${UNISREC_DATA:-data}}"
PY=.venv/bin/python
if [ ! -f runs/pretrain/games/model.safetensors ]; then
  .venv/bin/unisrec pretrain "$DATA/games" --output runs/pretrain/games --batch-size 512 \
      --time-limit-minutes "$PT_MIN" --epochs 100 --save-every 1 --no-progress
fi
$PY benchmarks/transfer.py --target "scientific=$DATA/scientific:runs/pretrain/games" \
    --seeds 2020 --time-limit-minutes 12 --out results/archive/transfer/transfer -- --every-position true --epochs "$FT_EPOCHS"
