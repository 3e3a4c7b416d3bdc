#!/usr/bin/env bash
# Cells of any benchmark spec on a lent GPU, through `unisrec benchmark run` -- the same cells, commands,
# resume rules and archive as on a CPU -- several processes sharing the one GPU, stopped at a deadline.
#
#   here:  python benchmarks/gpu_data.py pack "$UNISREC_DATA" .gpu_data DATASET...   (what the cells read)
#   call:  OUT=$OUT SPEC=configs/benchmarks/X.yaml MODELS="A,B" SEEDS=2020 PARALLEL=5 MINUTES=8 \
#            bash benchmarks/gpu_bench.sh                                             (carry .gpu_data)
#   again: the same command while the machine is still warm resumes the unfinished cells where they were
#   back:  bash benchmarks/gpu_source_mix.sh --restore FILES_AT runs/NAME
# A call carries the working tree and .gpu_data, 64 MiB in all: the checkpoints committed under results/
# (~43 MB) travel with the tree, so first move those the cells do not start from out of it, check, and
# after the call move them back:
#   python benchmarks/gpu_data.py stash KEEP...; python benchmarks/gpu_data.py size .gpu_data; ...; unstash
# Made with it (its first form, commit 342fa7c, which also ran benchmarks/encoder_passes_ab.py first):
#   results/analyses/ablation_online_retail.md: .gpu_data = online_retail_shuffled, full+scientific's weights
#   moved out; SPEC=configs/benchmarks/ablation_online_retail.yaml SEEDS=2020 PARALLEL=5 THREADS=2
#   MODELS="UniSRec,without S-S,without S-I,without PW,without MoE" MINUTES=8, then the same again (4 min).
# Env: TAG names this spec's run folder and output files (default: the spec's file stem; TAG=pretrain for
# configs/benchmarks/pretrain.yaml, whose cells other specs start `from:` runs/pretrain/...), DATASETS only
# these of the spec's datasets, THREADS CPU threads per cell (default 2), DATA the unpacked data folder
# (default .gpu_data), CHECKPOINTS=1 to bring the finished cells' weights back in the archive (a file
# comes back only under 16 MiB: two pre-training checkpoints at most), ARCHIVE=DIR a committed archive of
# the same spec (e.g. results/table3/cells_online_retail) copied into the run folder first, so the cells
# it holds count as finished and are skipped. Writes into $OUT: driver.log,
# cells_TAG.tgz (`benchmark archive` of the finished cells: metrics, per-user ranks, curves) and logs_TAG.tgz
# (every cell's config, curve and log, finished or not; a resume state, 15-50 MB, stays on the machine).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
. benchmarks/gpu_lib.sh
OUT="${OUT:?set OUT to the output folder}"; SPEC="${SPEC:?set SPEC to a benchmark spec}"
MODELS="${MODELS:?set MODELS (comma-separated labels of the spec)}"
SEEDS="${SEEDS:-2020}"; PARALLEL="${PARALLEL:-4}"; THREADS="${THREADS:-2}"; MINUTES="${MINUTES:-8}"
DATA="${DATA:-.gpu_data}"; TAG="${TAG:-$(basename "$SPEC" .yaml)}"
R=runs  # specs start `from: ../../runs/pretrain/...` and `runs/zesrec_source/...`
mkdir -p "$OUT" "$R/pretrain" "$R/bench_logs"; OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/driver.log"
t0=$(date +%s)
{ nvidia-smi --query-gpu=name,memory.used --format=csv || true; torch_info; } >> "$LOG" 2>&1
python3 benchmarks/gpu_data.py unpack "$DATA" >> "$LOG" 2>&1  # a no-op once unpacked
UNISREC_DATA="$(cd "$DATA" && pwd)"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1 UNISREC_DATA
cp -rn results/pretrain/cells/. "$R/pretrain/" 2>/dev/null  # the committed checkpoints (those still in the tree)
if [ -n "${ARCHIVE:-}" ]; then mkdir -p "$R/$TAG" && cp -rn "$ARCHIVE"/. "$R/$TAG/"; fi
timeout $(( MINUTES * 60 )) python3 -m unisrec benchmark run "$SPEC" --runs "$R/$TAG" --seeds "$SEEDS" \
  --threads "$THREADS" --parallel "$PARALLEL" --models "$MODELS" ${DATASETS:+--datasets "$DATASETS"} \
  >> "$R/bench_logs/$TAG.log" 2>&1
say "$TAG: exit $? (124 = stopped at the deadline)"
python3 -m unisrec benchmark archive "$R/$TAG" --out "$R/arch/$TAG" ${CHECKPOINTS:+--checkpoints} >> "$LOG" 2>&1
(cd "$R/arch" && tar czf "$OUT/cells_$TAG.tgz" "$TAG")
pack_runs "$OUT/logs_$TAG.tgz" "$R" "$TAG" -- "bench_logs/$TAG.log"
say "done"
