# Sourced by the scripts/vs_* measurements.
#
# count NAME VALUE [MAX]: their ROUNDS and THREADS arguments checked before anything is installed
# or run: VALUE must be an integer from 1 to MAX (default 1000); otherwise one line naming the
# calling script, exit 2.
count() {
  local max=${3:-1000}
  if ! [[ $2 =~ ^[0-9]{1,6}$ ]] || [ "$2" -lt 1 ] || [ "$2" -gt "$max" ]; then
    echo "$(basename "$0"): $1=$2 is not a count from 1 to $max" >&2
    exit 2
  fi
}

# quietly [-1] LOG COMMAND...: runs a measured program with its output in LOG; where it fails,
# the last lines of LOG and one line naming the calling script and the exit status, exit 1 (a
# measurement never goes on with a figure of a run that failed). With -1, exit status 1 is not a
# failure: pairbench's for a case that failed its check, which its report names.
quietly() {
  local ok=0 rc=0
  [ "$1" = -1 ] && { ok=1; shift; }
  local log=$1
  shift
  "$@" >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne "$ok" ]; then
    tail -n 5 "$log" >&2
    echo "$(basename "$0"): $(basename "$1") exited $rc (its last lines above)" >&2
    exit 1
  fi
}
