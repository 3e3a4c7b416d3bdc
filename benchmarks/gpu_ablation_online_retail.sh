#!/usr/bin/env bash
# One lent-GPU call: Online Retail's Fig. 3 ablation cells (configs/benchmarks/ablation_online_retail.yaml,
# seed 2020: UniSRec, without S-S, S-I, PW, MoE -- five fine-tunings from the committed Games checkpoints),
# through `unisrec benchmark` as on a CPU, after a short A/B of the step's encoder passes on the GPU
# (benchmarks/encoder_passes_ab.py: length buckets vs one padded pass).
#
# The committed checkpoints travel with the tree; with the Online Retail data beside them one is too many:
#   here:  python benchmarks/gpu_data.py pack "$UNISREC_DATA" .gpu_data online_retail_shuffled
#          move results/pretrain/cells/games/full+scientific/seed2020/model.safetensors out of the tree (back after)
#   call:  OUT=$OUT MINUTES=8 bash benchmarks/gpu_ablation_online_retail.sh          (carry .gpu_data)
#   back:  bash benchmarks/gpu_source_mix.sh --restore FILES_AT runs/gpu_ablation_online_retail
# Writes into $OUT: driver.log, encoder_passes_cuda.{json,md}, logs.tgz (every cell's config, curve, cell log,
# finished or not), cells.tgz (`benchmark archive` of the finished cells). MINUTES caps the cells' training.
set -uo pipefail
cd "$(dirname "$0")/.."
. benchmarks/gpu_lib.sh
OUT="${OUT:?set OUT to the output folder}"
DATA="${DATA:-.gpu_data}"; MINUTES="${MINUTES:-8}"
R=runs  # ablation_online_retail.yaml starts `from: ../../runs/pretrain/...`
mkdir -p "$OUT" "$R/pretrain/games" "$R/bench_logs"; OUT="$(cd "$OUT" && pwd)"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1 UNISREC_DATA="$PWD/$DATA"
LOG="$OUT/driver.log"
t0=$(date +%s)
{ nvidia-smi || true; torch_info; } >> "$LOG" 2>&1
python3 benchmarks/gpu_data.py unpack "$DATA" >> "$LOG" 2>&1
[ -f "$DATA/online_retail_shuffled/manifest.json" ] || { say "missing $DATA/online_retail_shuffled"; exit 1; }
cp -rn results/pretrain/cells/games/. "$R/pretrain/games/"
python3 benchmarks/encoder_passes_ab.py configs/benchmarks/table3_online_retail.yaml online_retail_shuffled \
  --device cuda --steps 10 --models SASRec,UniSRec_t+ID --out "$OUT/encoder_passes_cuda" >> "$LOG" 2>&1
say "encoder-pass A/B: exit $?"
deadline=$(( $(date +%s) + MINUTES * 60 ))
timeout $(( deadline - $(date +%s) )) python3 -m unisrec benchmark run configs/benchmarks/ablation_online_retail.yaml \
  --runs "$R/abl_or" --seeds 2020 --threads 2 --parallel 5 \
  --models "UniSRec,without S-S,without S-I,without PW,without MoE" >> "$R/bench_logs/abl_or.log" 2>&1
say "cells: exit $?"
python3 -m unisrec benchmark archive "$R/abl_or" --out "$R/arch/abl_or" >> "$LOG" 2>&1
(cd "$R" && tar czf "$OUT/cells.tgz" arch)
pack_runs "$OUT/logs.tgz" "$R" abl_or -- bench_logs
say "done"
