#!/usr/bin/env bash
# Table 3 (from-scratch rows) on Online Retail, 3 seeds x (SASRec, UniSRec_t+ID, UniSRec_t), one GPU.
#
# For a lent H100/H200 with NO internet: python3 has torch (CUDA), numpy, pyarrow, safetensors, tqdm,
# pyyaml; nothing is installed (PYTHONPATH=src). Expects the prepared + encoded dataset dirs at
# .gpu_data/online_retail (and optionally .gpu_data/scientific) in the repository root.
# Runs all 9 trainings at once on the one GPU (each its own process, 1 CPU thread), each capped at
# TIME_LIMIT_MIN minutes of training (a capped run is marked TRUNCATED in the table; early-stopped
# runs are marked with their best/run epochs). Writes at most 8 files into $OUT:
#   table3_gpu.md, table3_gpu.json (or table3_gpu_every_position.*), runs.log (all 9 training logs), nvidia-smi.txt, driver.log
# Usage (repository root):  OUT=DIR bash benchmarks/gpu_table3.sh   (runs go to RUNS, default runs/TAG, not in git)
# EVERY_POSITION=1 trains with --every-position instead (to compare it with the faithful batching);
# DATASETS=online_retail,scientific adds Scientific (18 runs at once: raise TIME_LIMIT_MIN).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT="${OUT:?set OUT to the output folder}"
DATASETS="${DATASETS:-online_retail}"
SEEDS="${SEEDS:-2020,2021,2022}"
TIME_LIMIT_MIN="${TIME_LIMIT_MIN:-6}"
EP=""; TAG="table3_gpu"
if [ "${EVERY_POSITION:-0}" = "1" ]; then EP="--every-position"; TAG="table3_gpu_every_position"; fi
RUNS="${RUNS:-$PWD/runs/$TAG}"
mkdir -p "$OUT" "$RUNS"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print('torch', torch.__version__, torch.cuda.get_device_name(0))" \
  >> "$OUT/driver.log" 2>&1 || { echo "CUDA not available" >> "$OUT/driver.log"; exit 1; }
for d in ${DATASETS//,/ }; do
  [ -f ".gpu_data/$d/manifest.json" ] || { echo "missing .gpu_data/$d" >> "$OUT/driver.log"; exit 1; }
done
start=$(date +%s)
# hard stop a little after the per-run cap so the summary is always written
timeout $(( (TIME_LIMIT_MIN + 2) * 60 )) env PYTHONPATH=src python3 benchmarks/reproduce_table3.py \
  --datasets "$DATASETS" --seeds "$SEEDS" --data-root .gpu_data --runs "$RUNS" \
  --device cuda --threads 1 --parallel 18 --time-limit-minutes "$TIME_LIMIT_MIN" $EP \
  --out "$OUT/$TAG" >> "$OUT/driver.log" 2>&1
echo "training exit $? after $(( $(date +%s) - start )) s" >> "$OUT/driver.log"
# summary; a run cut by the timeout is tested at its best epoch so far and marked truncated
PYTHONPATH=src python3 benchmarks/reproduce_table3.py --finalize --datasets "$DATASETS" --seeds "$SEEDS" \
  --data-root .gpu_data --runs "$RUNS" --device cuda --time-limit-minutes "$TIME_LIMIT_MIN" $EP --out "$OUT/$TAG" >> "$OUT/driver.log" 2>&1
for f in "$RUNS"/*/*/seed*.log; do echo "=== $f"; tail -n 400 "$f"; done > "$OUT/runs.log" 2>&1
echo "total $(( $(date +%s) - start )) s" >> "$OUT/driver.log"
