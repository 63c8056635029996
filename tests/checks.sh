# Shared by the check scripts (tests/etcdctl.sh, tests/kubectl.sh); sourced, not run.
#
# Gives: WORK (a temp dir, removed at exit), BG_PIDS (background processes killed at
# exit), CHECKS and FAILED (counted by the scripts' checks), fail NAME DETAILS... (records
# a failed check), finish SCRIPT (prints the verdict and exits 1 if any check failed).

WORK=$(mktemp -d)
BG_PIDS=()
cleanup() {
  local p
  for p in "${BG_PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

FAILED=()
CHECKS=0

fail() { # name, details...
  FAILED+=("$1")
  echo "FAIL $1" >&2
  shift
  local line
  for line in "$@"; do printf '%s\n' "$line" | sed 's/^/     /' >&2; done
}

finish() { # script name
  echo
  if [ ${#FAILED[@]} -gt 0 ]; then
    echo "$1: ${#FAILED[@]} of $CHECKS checks FAILED:" >&2
    local f
    for f in "${FAILED[@]}"; do echo "  - $f" >&2; done
    exit 1
  fi
  echo "$1: all $CHECKS checks passed"
}
