#!/usr/bin/env bash
# Two lent-GPU calls for the analyses' missing cells: the source-mix checkpoints that pre-train on Online
# Retail (configs/benchmarks/pretrain.yaml `full` on Online Retail alone, `full+online_retail` on Games),
# the Scientific target's fine-tuning from them (pretrain_sources.yaml "Online Retail", "Games + Online
# Retail", 3 seeds), and, alongside, Online Retail cells of ablation_online_retail.yaml (seed 2020) and of
# pretrain_sources_online_retail.yaml ("Games") -- all through `unisrec benchmark`, the same cells and
# commands as on a CPU.
#
# The data (Games for pre-training, Scientific and Online Retail for fine-tuning) and the checkpoints the
# cells start from do not fit one call's 64 MiB together, so the data travels first and stays there:
#   here:   python benchmarks/gpu_data.py pack "$UNISREC_DATA" .gpu_data games:half scientific online_retail_shuffled
#           move results/pretrain/cells/*/*/seed2020/model.safetensors out of the tree (back after call 1)
#   call 1: python3 benchmarks/gpu_data.py unpack .gpu_data                       (carry .gpu_data)
#   call 2: OUT=$OUT bash benchmarks/gpu_source_mix.sh                           (carry runs/pretrain/games/full,
#           the float32 Games checkpoint; .gpu_data is still there from call 1 while the machine stays warm)
#   back:   bash benchmarks/gpu_source_mix.sh --restore FILES_AT runs/gpu_source_mix
# Writes at most 8 files into $OUT: driver.log, logs.tgz (every cell's config, curve, done.json, cell log:
# finished or not; each runner's log), cells.tgz (`benchmark archive` of every finished fine-tuning cell: metrics, per-user
# ranks), weights_N.tgz (the two new pre-training checkpoints). Unfinished fine-tuning cells bring back
# only their curves (a resume state is 30-50 MB). MINUTES caps the whole call's training.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
. benchmarks/gpu_lib.sh
if [ "${1:-}" = "--restore" ]; then
  src="${2:?FILES_AT}"; dest="${3:?RUN_DIR}"; mkdir -p "$dest"
  for f in "$src"/*.tgz; do [ -f "$f" ] && tar xzf "$f" -C "$dest"; done
  find "$dest" -name done.json | sort; find "$dest" -name metrics.json | sort; exit 0
fi
OUT="${OUT:?set OUT to the output folder}"
DATA="${DATA:-.gpu_data}"; MINUTES="${MINUTES:-8}"
R=runs  # pretrain_sources*.yaml and ablation_online_retail.yaml start `from: ../../runs/pretrain/...`
mkdir -p "$OUT" "$R/pretrain/games" "$R/bench_logs"; OUT="$(cd "$OUT" && pwd)"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1 UNISREC_DATA="$PWD/$DATA"
LOG="$OUT/driver.log"
t0=$(date +%s); deadline=$(( t0 + MINUTES * 60 ))
{ nvidia-smi || true; torch_info; } >> "$LOG" 2>&1
for d in games scientific online_retail_shuffled; do
  [ -f "$DATA/$d/manifest.json" ] || { say "missing $DATA/$d (call 1 unpacks it)"; exit 1; }
done
cp -rn results/pretrain/cells/games/. "$R/pretrain/games/"   # the committed ablation checkpoints
bench() {  # bench SPEC RUNS [flags]: one `unisrec benchmark run`, stopped at the deadline
  local spec="$1" runs="$2"; shift 2
  local left=$(( deadline - $(date +%s) )); [ "$left" -gt 10 ] || { say "no time left for $runs"; return 1; }
  timeout "$left" python3 -m unisrec benchmark run "$spec" --runs "$runs" "$@" >> "$R/bench_logs/$(basename "$runs").log" 2>&1
  say "$runs: exit $?"
}
PRE=configs/benchmarks/pretrain.yaml SRC=configs/benchmarks/pretrain_sources.yaml
# chain 1: Online Retail alone -> Scientific fine-tuned from it (its own runs folder: runners do not share one)
( bench $PRE "$R/pretrain_or" --datasets online_retail_shuffled --models full --threads 3 \
  && mkdir -p "$R/pretrain/online_retail_shuffled" && cp -r "$R/pretrain_or/online_retail_shuffled/full" "$R/pretrain/online_retail_shuffled/" \
  && bench $SRC "$R/src_or" --models "Online Retail" --threads 1 --parallel 3 ) &
# chain 2: Games + Online Retail -> Scientific fine-tuned from it
( bench $PRE "$R/pretrain" --datasets games --models full+online_retail --threads 3 \
  && bench $SRC "$R/src_gor" --models "Games + Online Retail" --threads 1 --parallel 3 ) &
# alongside: Online Retail fine-tuning cells, seed 2020 (resumable, but their resume state stays there)
bench configs/benchmarks/ablation_online_retail.yaml "$R/abl_or" --seeds 2020 --threads 1 --parallel 5 \
  --models "UniSRec,without S-S,without S-I,without PW,without MoE" &
[ -f "$R/pretrain/games/full/seed2020/model.safetensors" ] && \
  bench configs/benchmarks/pretrain_sources_online_retail.yaml "$R/srcor_games" --seeds 2020 --threads 1 --models Games &
wait
say "training done"
for r in pretrain_or pretrain src_or src_gor abl_or srcor_games; do
  [ -d "$R/$r" ] && python3 -m unisrec benchmark archive "$R/$r" --out "$R/arch/$r" >> "$LOG" 2>&1
done
(cd "$R" && tar czf "$OUT/cells.tgz" arch)
pack_runs "$OUT/logs.tgz" "$R" pretrain_or pretrain/games/full+online_retail src_or src_gor abl_or srcor_games -- bench_logs
n=0
for cell in pretrain_or/online_retail_shuffled/full/seed2020 pretrain/games/full+online_retail/seed2020; do
  # what `finetune --from` reads and the archive keeps, not the resume state (a file must stay under 16 MiB)
  [ -f "$R/$cell/done.json" ] && (cd "$R" && tar czf "$OUT/weights_$n.tgz" "$cell"/{model.safetensors,config.json,done.json,training_log.jsonl} "$cell.log") \
    && say "weights_$n.tgz: $cell"; n=$((n + 1))
done
say "done"
