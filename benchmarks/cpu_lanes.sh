#!/usr/bin/env bash
# Work through a queue of benchmark cells on a small CPU machine: LANES processes at once (default 2,
# one per core), 1 torch thread each, every lane walking the queue from the top.
#   bash benchmarks/cpu_lanes.sh benchmarks/queues/online_retail.txt            # start (or restart) the lanes
#   LANES=1 bash benchmarks/cpu_lanes.sh QUEUE                                    # one lane
# QUEUE: one cell per line, fields separated by '|':  GRID.yaml | MODEL LABEL | SEED | RUNS_DIR | ARCHIVE_DIR
# ('#' starts a comment). Each line is one `unisrec benchmark run GRID.yaml --runs RUNS --archive ARCHIVE
# --models LABEL --seeds SEED --threads 1`, so the harness decides what happens to it: a finished
# cell (here or in the archive) is skipped in seconds, an interrupted one resumes (from its last
# mid-epoch checkpoint: at most 10 minutes lost; nothing when stopped with SIGTERM, see below), a cell that another lane trains is left to it
# (its lock), so the lanes share the queue without coordinating: restart this after a machine or a
# sitting ended and the campaign goes on where it was, in queue order.
# Two 2-thread jobs on 2 cores slow each other several-fold; two 1-thread lanes do not.
# Logs: RUNS_DIR/../lanes/laneN.log (what each lane did) and the cells' own logs.
# To end a sitting without losing a step:   bash benchmarks/cpu_lanes.sh --stop
# (SIGTERM to the lanes' process group: the lanes and their runs end, each running cell's worker
# finishes its step and writes its resume state; it waits until they have).
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$self")/.."
logdir=${LANE_LOGS:-runs/lanes}
if [ "${1:-}" = "--stop" ]; then
  [ -f "$logdir/lanes.pgid" ] || { echo "no lanes started from here ($logdir/lanes.pgid missing)" >&2; exit 2; }
  group=$(cat "$logdir/lanes.pgid")
  kill -TERM -- "-$group" 2>/dev/null || { echo "lanes (process group $group) are not running"; exit 0; }
  for _ in $(seq 600); do pgrep -g "$group" >/dev/null || { echo "lanes stopped"; exit 0; }; sleep 1; done
  echo "lanes (process group $group) still running after 10 minutes" >&2; exit 1
fi
queue=${1:?usage: bash benchmarks/cpu_lanes.sh QUEUE_FILE | --stop}
[ -f "$queue" ] || { echo "no queue file $queue" >&2; exit 2; }
# a process group of its own, so --stop reaches the lanes and nothing else
[ "$(ps -o pgid= -p $$ | tr -d ' ')" = "$$" ] || exec setsid bash "$self" "$@"
lanes=${LANES:-2}
UNISREC="${UNISREC:-unisrec}"
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
mkdir -p "$logdir"
echo $$ > "$logdir/lanes.pgid"

trim() { local s=$1; s=${s#"${s%%[![:space:]]*}"}; printf '%s' "${s%"${s##*[![:space:]]}"}"; }

lane() {
  local n=$1 log="$logdir/lane$1.log" line spec label seed runs archive rc
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%%#*}
    [ -n "$(trim "$line")" ] || continue
    IFS='|' read -r spec label seed runs archive <<< "$line"
    spec=$(trim "$spec"); label=$(trim "$label"); seed=$(trim "$seed"); runs=$(trim "$runs"); archive=$(trim "$archive")
    echo "$(date '+%F %T') lane $n: $label seed $seed ($spec)" >> "$log"
    "$UNISREC" benchmark run "$spec" --runs "$runs" ${archive:+--archive "$archive"} --models "$label" --seeds "$seed" \
      --threads 1 >> "$log" 2>&1 || { rc=$?; echo "$(date '+%F %T') lane $n: exit $rc for $label seed $seed" >> "$log"; }
  done < "$queue"
  echo "$(date '+%F %T') lane $n: end of the queue" >> "$log"
}

for n in $(seq 1 "$lanes"); do
  lane "$n" &
  sleep 20  # let the first lane's cell take its lock before the next lane reads the same line
done
wait
