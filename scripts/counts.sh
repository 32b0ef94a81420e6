# Sourced by the scripts/vs_* measurements: their ROUNDS and THREADS arguments checked before
# anything is installed or run. count NAME VALUE [MAX]: VALUE must be an integer from 1 to MAX
# (default 1000); otherwise one line naming the calling script, exit 2.
count() {
  local max=${3:-1000}
  if ! [[ $2 =~ ^[0-9]{1,6}$ ]] || [ "$2" -lt 1 ] || [ "$2" -gt "$max" ]; then
    echo "$(basename "$0"): $1=$2 is not a count from 1 to $max" >&2
    exit 2
  fi
}
