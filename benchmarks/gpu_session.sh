#!/usr/bin/env bash
# One short call on a lent GPU (H100/H200): everything this project wants from a GPU, at once.
#
#   1. pre-training throughput probes alone on the GPU (batch 1,024 and 8,192, Games + Scientific)
#   2. then concurrently:
#      a. Table 3 from-scratch rows on Online Retail: SASRec, UniSRec_t+ID, UniSRec_t x 3 seeds
#         (9 processes, faithful batching, each capped at T3_MIN minutes of training)
#      b. two pre-training runs capped at PRE_MIN minutes each, batch 8,192: Games (the source
#         for the Scientific target, fine-tuned later on CPU) and Games + Scientific (the source
#         for Online Retail, cross-platform like the paper)
#      c. as soon as (b, Games + Scientific) is written: transfer to Online Retail,
#         UniSRec_t and UniSRec_t+ID x 3 seeds from that checkpoint, capped at TR_MIN minutes
#
# Fresh machine, no network: python3 with torch (CUDA), numpy, pyarrow, safetensors, tqdm, pyyaml.
# Before the call (here):  python3 benchmarks/gpu_data.py pack "${UNISREC_DATA:-data}" .gpu_data games scientific online_retail
# and carry .gpu_data (or DATA=folder). Writes at most 8 files into $OUT: driver.log, probe.json, table3_gpu.tgz,
# transfer_or.tgz (metrics.json + training_log.jsonl + config.json of every run, the summaries and
# logs), pre_games.tgz, pre_games_scientific.tgz (config.json, model.safetensors, training log).
# Runs go to WORK (default runs/gpu_session, not in git).
# A dry run on CPU with small data: DEVICE=cpu DATA=runs/dry_data PROBES="64 128" PRE_BATCH=128 T3_MIN=0.3 PRE_MIN=0.2 \
#   TR_MIN=0.3 OUT=runs/dry_out bash benchmarks/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
. benchmarks/gpu_lib.sh
OUT="${OUT:?set OUT to the output folder}"
DEVICE="${DEVICE:-cuda}"
T3_MIN="${T3_MIN:-6}"; PRE_MIN="${PRE_MIN:-2.5}"; TR_MIN="${TR_MIN:-3.2}"
SEEDS="${SEEDS:-2020,2021,2022}"
W="${WORK:-$PWD/runs/gpu_session}"
DATA="${DATA:-.gpu_data}"; PRE_BATCH="${PRE_BATCH:-8192}"
mkdir -p "$OUT" "$W"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
LOG="$OUT/driver.log"
t0=$(date +%s)
{ nvidia-smi || true; torch_info; } >> "$LOG" 2>&1
python3 benchmarks/gpu_data.py unpack "$DATA" >> "$LOG" 2>&1 || { say "unpack failed"; exit 1; }

say "probes"
timeout 120 python3 benchmarks/pretrain_gpu.py --data "$DATA" --out "$OUT" --probe ${PROBES:-1024 8192} >> "$LOG" 2>&1 || say "probe exit $?"

say "table3 online_retail (scratch)"
timeout $(( ${T3_MIN%.*} * 60 + 60 )) python3 benchmarks/reproduce_table3.py --datasets online_retail --seeds "$SEEDS" \
  --data-root "$DATA" --runs "$W/table3" --device "$DEVICE" --threads 1 --parallel 9 --time-limit-minutes "$T3_MIN" \
  --out "$W/table3_gpu" > "$W/table3_driver.log" 2>&1 &
T3=$!
say "pre-training games, games+scientific"
for job in games_scientific:games,scientific games:games; do
  OMP_NUM_THREADS=2 timeout $(( ${PRE_MIN%.*} * 60 + 60 )) python3 benchmarks/pretrain_gpu.py --data "$DATA" --out "$W/pre" \
    --job "${job%%:*}" --datasets "${job#*:}" --minutes "$PRE_MIN" --batch-size "$PRE_BATCH" > "$W/pre_${job%%:*}.log" 2>&1 &
  eval "PRE_${job%%:*}=\$!"
done
# shellcheck disable=SC2154  # PRE_games_scientific and PRE_games are set by the eval above
wait "$PRE_games_scientific"; say "games_scientific pre-training exit $?"
say "transfer online_retail"
timeout $(( ${TR_MIN%.*} * 60 + 60 )) python3 benchmarks/reproduce_table3.py --datasets online_retail --models unisrec_t_id,unisrec_t \
  --seeds "$SEEDS" --init-from "$W/pre/games_scientific" --data-root "$DATA" --runs "$W/transfer" --device "$DEVICE" \
  --threads 1 --parallel 6 --time-limit-minutes "$TR_MIN" --out "$W/transfer_or" > "$W/transfer_driver.log" 2>&1 &
TR=$!
# shellcheck disable=SC2154
wait "$PRE_games"; say "games pre-training exit $?"
wait "$T3"; say "table3 exit $?"
wait "$TR"; say "transfer exit $?"
# a run killed by the hard timeout is tested at its best epoch so far and marked truncated
python3 benchmarks/reproduce_table3.py --finalize --datasets online_retail --seeds "$SEEDS" --data-root "$DATA" \
  --runs "$W/table3" --device "$DEVICE" --time-limit-minutes "$T3_MIN" --out "$W/table3_gpu" >> "$W/table3_driver.log" 2>&1
python3 benchmarks/reproduce_table3.py --finalize --datasets online_retail --models unisrec_t_id,unisrec_t --seeds "$SEEDS" \
  --init-from "$W/pre/games_scientific" --data-root "$DATA" --runs "$W/transfer" --device "$DEVICE" \
  --time-limit-minutes "$TR_MIN" --out "$W/transfer_or" >> "$W/transfer_driver.log" 2>&1
say "finalized"
pack_runs "$OUT/table3_gpu.tgz" "$W" table3 -- table3_gpu.md table3_gpu.json table3_driver.log 2>> "$LOG"
pack_runs "$OUT/transfer_or.tgz" "$W" transfer -- transfer_or.md transfer_or.json transfer_driver.log 2>> "$LOG"
for j in games games_scientific; do
  (cd "$W/pre" && tar czf "$OUT/pre_$j.tgz" "$j/config.json" "$j/model.safetensors" "$j/training_log.jsonl" "$j.json" "../pre_$j.log") 2>> "$LOG"
done
say "done"; ls -la "$OUT" >> "$LOG"
