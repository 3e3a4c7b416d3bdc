#!/usr/bin/env bash
# Pre-train UniSRec on a lent H100/H200 within ~6 minutes and record throughput.
# Fresh machine, no network: python3 with torch (CUDA), numpy, pyarrow, safetensors, tqdm, pyyaml.
# Expects the encoded dataset directories (with word-drop features) copied to
#   .gpu_data/{games,scientific,online_retail}   in the repository root.
# Writes at most 7 files to $OUT (default ./gpu_out): gpu_pretrain.json (throughput at batch 1,024
# and 8,192, peak CUDA memory, per-checkpoint runs), and for each of games / games_scientific:
# NAME.config.json, NAME.model.safetensors (~8 MB), NAME.training_log.jsonl.
# Rebuild a checkpoint dir for `unisrec finetune --from`:  mkdir ck && cp NAME.config.json ck/config.json
#   && cp NAME.model.safetensors ck/model.safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
for d in games scientific; do
  [ -f ".gpu_data/$d/manifest.json" ] || { echo "missing .gpu_data/$d (copy the encoded dataset dirs there)" >&2; exit 2; }
done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia_smi.csv"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
timeout 420 python3 benchmarks/pretrain_gpu.py --data .gpu_data --out "$OUT" --budget-s "${BUDGET_S:-330}"
ls -la "$OUT"
