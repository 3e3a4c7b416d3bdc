#!/usr/bin/env bash
# One lent-GPU call: the pre-training cells of configs/benchmarks/pretrain.yaml that the analyses wait
# for, through `unisrec benchmark` (the same cells, commands and resume rules as on a CPU), all at once.
#
#   here:  python benchmarks/gpu_data.py pack "$UNISREC_DATA" .gpu_data games:half scientific
#   call:  OUT=$OUT bash benchmarks/gpu_pretrain_cells.sh            (carry .gpu_data)
#   back:  bash benchmarks/gpu_pretrain_cells.sh --restore FILES_AT runs/pretrain_gpu
#
# Default cells (MODELS x DATASETS of the spec): the four ablation checkpoints (no_ss, no_si, no_pw,
# no_moe; bfloat16), full+scientific (the Online Retail target's Games + Scientific source), `full` on
# Games (float32) and on Scientific (the single-source checkpoint of the source-mix figure), and
# `full (bfloat16)` again (its CPU twin is committed: a cross-check of the device).
# Fresh machine, no network: python3 with torch (CUDA), numpy, pyarrow, safetensors, tqdm, pyyaml
# (PYTHONPATH=src; the CLI imports only what a sub-command needs). Each cell gets THREADS CPU threads.
# Writes at most 8 files into $OUT: driver.log, logs.tgz (every cell's config, curve, done.json, cell
# log, the archive's benchmark.json) and weights_N.tgz (the archive's cell folders with
# model.safetensors, two or so per file: a file must stay under 16 MiB).
# A device call carries the whole working tree with .gpu_data (64 MiB in all): the checkpoints committed
# under results/pretrain/cells/ (~35 MiB) leave no room for Games' 28 MiB pack, so a later call that
# pre-trains on Games moves those model.safetensors out of the tree for the call and back after it.
# A CPU dry run with small data: SPEC=a_small_spec.yaml DATA=runs/dry_data OUT=runs/dry_out bash benchmarks/gpu_pretrain_cells.sh
#
# Any other grid's cells the same way: SPEC, MODELS, DATASETS, SEEDS (default: all of the spec's) and
# CHECKPOINTS=0 (trained cells are kept without weights: each finished cell's folder -- metrics, per-user
# test ranks, curve, config -- comes back in cells.tgz). E.g. the Online Retail baselines of Table 3 that
# cost a CPU 7-40 thread-hours each (results/table3/epoch_speed_online_retail.md), one seed, at once:
#   here:  python benchmarks/gpu_data.py stash && python benchmarks/gpu_data.py pack "$UNISREC_DATA" .gpu_data \
#            online_retail_shuffled games:half scientific:half     (sources only there: 59.8 of the 64 MiB a call carries)
#   call:  SPEC=configs/benchmarks/table3_online_retail.yaml DATASETS=online_retail_shuffled SEEDS=2020 CHECKPOINTS=0 \
#            MODELS="BERT4Rec,BERT4Rec-paper,S3-Rec,RecGURU,CCDR" PARALLEL=5 MINUTES=9 OUT=$OUT bash benchmarks/gpu_pretrain_cells.sh
#   back:  bash benchmarks/gpu_pretrain_cells.sh --restore FILES_AT runs/table3_or_gpu; then copy the finished cells into
#          results/table3/cells_online_retail/ and `python benchmarks/gpu_data.py unstash`
# A cell the cap cuts writes its resume state (SIGTERM); a call made at once on the still-warm machine resumes it.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
. benchmarks/gpu_lib.sh
if [ "${1:-}" = "--restore" ]; then  # here: unpack what came back into a run tree (cells with their weights)
  src="${2:?FILES_AT}"; dest="${3:?RUN_DIR}"; mkdir -p "$dest"
  for f in "$src"/weights_*.tgz "$src"/cells.tgz "$src"/logs.tgz; do [ -f "$f" ] && tar xzf "$f" -C "$dest"; done
  find "$dest" -name done.json | sort; exit 0
fi
OUT="${OUT:?set OUT to the output folder}"
DATA="${DATA:-.gpu_data}"; SPEC="${SPEC:-configs/benchmarks/pretrain.yaml}"
MODELS="${MODELS:-no_ss,no_si,no_pw,no_moe,full+scientific,full (bfloat16),full}"
DATASETS="${DATASETS:-games,scientific}"
PARALLEL="${PARALLEL:-8}"; THREADS="${THREADS:-2}"; MINUTES="${MINUTES:-6}"; CHECKPOINTS="${CHECKPOINTS:-1}"
seeds=(); [ -n "${SEEDS:-}" ] && seeds=(--seeds "$SEEDS")
keep=(); [ "$CHECKPOINTS" = "1" ] && keep=(--checkpoints)
W="${WORK:-$PWD/runs/pretrain_gpu}"
mkdir -p "$OUT" "$W"; OUT="$(cd "$OUT" && pwd)"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1 UNISREC_DATA="$PWD/$DATA"
LOG="$OUT/driver.log"
t0=$(date +%s)
{ nvidia-smi || true; torch_info; } >> "$LOG" 2>&1
python3 benchmarks/gpu_data.py unpack "$DATA" >> "$LOG" 2>&1 || { say "unpack failed"; exit 1; }
say "cells: $MODELS on $DATASETS, $PARALLEL at once, $THREADS threads each, cap $MINUTES min"
timeout "$(( MINUTES * 60 ))" python3 -m unisrec benchmark run "$SPEC" --runs "$W" --threads "$THREADS" \
  --parallel "$PARALLEL" --datasets "$DATASETS" --models "$MODELS" "${seeds[@]}" >> "$LOG" 2>&1
say "benchmark exit $?"
rm -rf "$W.archive"
python3 -m unisrec benchmark archive "$W" --out "$W.archive" --spec "$SPEC" "${keep[@]}" >> "$LOG" 2>&1
say "archive exit $?"
pack_runs "$OUT/logs.tgz" "$W" . -- benchmark.json
if [ "$CHECKPOINTS" != "1" ]; then  # no weights: the finished cells whole (a few hundred KB each)
  (cd "$W.archive" && tar czf "$OUT/cells.tgz" .) && say "cells.tgz: $(cd "$W.archive" && find . -name metrics.json | wc -l) finished cells"
fi
# weights: greedily two or three cells per file, each file < 15 MiB before compression
n=0; size=0; batch=()
flush() { [ ${#batch[@]} -gt 0 ] && (cd "$W.archive" && tar czf "$OUT/weights_$n.tgz" "${batch[@]}") && say "weights_$n.tgz: ${batch[*]}"; n=$((n + 1)); size=0; batch=(); }
while IFS= read -r f; do
  cell="$(dirname "$f")"; s=$(du -k "$W.archive/$f" | cut -f1)
  if [ $(( size + s )) -gt 15000 ]; then flush; fi
  batch+=("$cell"); size=$(( size + s ))
done < <(cd "$W.archive" && find . -name model.safetensors | sort)
flush
for f in "$W"/*/*/seed*.log; do [ -f "$f" ] && { echo "=== $f"; tail -n 5 "$f"; }; done >> "$LOG" 2>&1
say "done"
