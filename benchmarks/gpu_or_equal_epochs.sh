#!/usr/bin/env bash
# Online Retail on a lent GPU, scratch vs pre-trained at an EQUAL number of epochs (one short call).
#
# 15 processes at once: SASRec, UniSRec_t+ID, UniSRec_t from scratch and UniSRec_t+ID, UniSRec_t
# fine-tuned from a pre-trained checkpoint, 3 seeds each, every run stopped after EPOCHS epochs
# (or early stopping, or the MINUTES safety cap), then tested at its best validation epoch.
# Fresh machine, no network: python3 with torch (CUDA), numpy, pyarrow, safetensors, tqdm, pyyaml.
# Carry DATA (default .gpu_data) holding the dataset folder NAME and the checkpoint folder CKPT:
#   .gpu_data/online_retail_shuffled/   (unisrec prepare online-retail --ties shuffle + unisrec encode)
#   .gpu_data/pre_games_scientific/     (config.json + model.safetensors of a pre-training run)
# Runs go to WORK (default runs/gpu_or_equal_epochs, not in git).
# Writes $OUT/driver.log and $OUT/or_equal_epochs.tgz (metrics.json, training_log.jsonl, config.json
# of every run, the two summaries, logs).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
. benchmarks/gpu_lib.sh
OUT="${OUT:?set OUT to the output folder}"
DATA="${DATA:-.gpu_data}"; NAME="${NAME:-online_retail_shuffled}"; CKPT="${CKPT:-$DATA/pre_games_scientific}"
DEVICE="${DEVICE:-cuda}"; EPOCHS="${EPOCHS:-5}"; MINUTES="${MINUTES:-6}"; SEEDS="${SEEDS:-2020,2021,2022}"
W="${WORK:-$PWD/runs/gpu_or_equal_epochs}"
mkdir -p "$OUT" "$W"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
LOG="$OUT/driver.log"; t0=$(date +%s)
torch_info >> "$LOG" 2>&1
common=(--datasets "$NAME" --seeds "$SEEDS" --data-root "$DATA" --device "$DEVICE" --threads 1 --epochs "$EPOCHS"
        --time-limit-minutes "$MINUTES")
HARD=$(( ${MINUTES%.*} * 60 + 60 ))
say "start"
timeout $HARD python3 benchmarks/reproduce_table3.py "${common[@]}" --parallel 9 --runs "$W/scratch" \
  --out "$W/scratch" > "$W/scratch_driver.log" 2>&1 &
A=$!
timeout $HARD python3 benchmarks/reproduce_table3.py "${common[@]}" --models unisrec_t_id,unisrec_t --init-from "$CKPT" \
  --parallel 6 --runs "$W/pretrained" --out "$W/pretrained" > "$W/pretrained_driver.log" 2>&1 &
B=$!
wait $A; say "scratch exit $?"
wait $B; say "pre-trained exit $?"
python3 benchmarks/reproduce_table3.py "${common[@]}" --finalize --runs "$W/scratch" --out "$W/scratch" >> "$W/scratch_driver.log" 2>&1
python3 benchmarks/reproduce_table3.py "${common[@]}" --models unisrec_t_id,unisrec_t --init-from "$CKPT" --finalize \
  --runs "$W/pretrained" --out "$W/pretrained" >> "$W/pretrained_driver.log" 2>&1
say "finalized"
pack_runs "$OUT/or_equal_epochs.tgz" "$W" scratch pretrained -- scratch.md scratch.json pretrained.md pretrained.json \
  scratch_driver.log pretrained_driver.log 2>> "$LOG"
say "done"
