# shellcheck shell=bash
# Shared by the GPU-call scripts (source it): logging, and what comes back from a lent machine.

# say MESSAGE: append "[N s] MESSAGE" to $LOG, N = seconds since $t0 (both set by the caller).
# shellcheck disable=SC2154  # t0 and LOG are the caller's
say() { echo "[$(( $(date +%s) - t0 )) s] $*" >> "$LOG"; }

# torch_info: one line naming torch and the GPU (False when CUDA is not available).
torch_info() {
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))"
}

# pack_runs TGZ WORK RUN_DIR [RUN_DIR ...] -- EXTRA_FILE [...]
#   tar into TGZ the small files of every run under WORK/RUN_DIR (metrics.json, training_log.jsonl,
#   config.json, done.json, seedN.log; no weights, no resume state) plus the EXTRA_FILEs (relative to WORK).
pack_runs() {
  local tgz work="$2"
  tgz="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; shift 2
  local dirs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do dirs+=("$1"); shift; done
  [ "${1:-}" = "--" ] && shift
  (cd "$work" && find "${dirs[@]}" -maxdepth 5 \( -name metrics.json -o -name training_log.jsonl -o -name config.json \
      -o -name done.json -o -name 'seed*.log' \) -not -path '*/resume/*' -not -path '*/catalogue/*' | tar czf "$tgz" -T - "$@")
}
