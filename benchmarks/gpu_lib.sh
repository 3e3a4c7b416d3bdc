# Shared by the GPU-call scripts (source it): what comes back from a lent machine.
# pack_runs TGZ WORK RUN_DIR [RUN_DIR ...] -- EXTRA_FILE [...]
#   tar into TGZ the small files of every run under WORK/RUN_DIR (metrics.json, training_log.jsonl,
#   config.json, seedN.log; no weights, no resume state) plus the EXTRA_FILEs (relative to WORK).
pack_runs() {
  local tgz work="$2"
  tgz="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; shift 2
  local dirs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do dirs+=("$1"); shift; done
  [ "${1:-}" = "--" ] && shift
  (cd "$work" && find "${dirs[@]}" -maxdepth 5 \( -name metrics.json -o -name training_log.jsonl -o -name config.json \
      -o -name 'seed*.log' \) -not -path '*/resume/*' -not -path '*/catalogue/*' | tar czf "$tgz" -T - "$@")
}
