# Shared by the check scripts (tests/etcdctl.sh, tests/kubectl.sh); sourced, not run.
#
# Gives: WORK (a temp dir, removed at exit), BG_PIDS (background processes killed at
# exit), CHECKS and FAILED (counted by the scripts' checks), fail NAME DETAILS... (records
# a failed check), finish SCRIPT (prints the verdict and exits 1 if any check failed), and
# the checks: check, check_not, check_eq, wait_for, wait_eq.

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

# check NAME EXPECTED-SUBSTRING OUTPUT: OUTPUT must contain the substring.
check() {
  CHECKS=$((CHECKS + 1))
  if [[ "$3" == *"$2"* ]]; then
    echo "ok   $1"
  else
    fail "$1" "expected to contain: $2" "got: $3"
  fi
}

# check_not NAME UNEXPECTED-SUBSTRING OUTPUT
check_not() {
  CHECKS=$((CHECKS + 1))
  if [[ "$3" != *"$2"* ]]; then
    echo "ok   $1"
  else
    fail "$1" "expected not to contain: $2" "got: $3"
  fi
}

# check_eq NAME EXPECTED OUTPUT
check_eq() {
  CHECKS=$((CHECKS + 1))
  if [ "$3" = "$2" ]; then
    echo "ok   $1"
  else
    fail "$1" "expected: $2" "got: $3"
  fi
}

# wait_for NAME FILE SUBSTRING: waits (30 s at most) until FILE contains SUBSTRING.
wait_for() {
  CHECKS=$((CHECKS + 1))
  local i
  for i in $(seq 300); do
    if grep -qF -- "$3" "$2" 2>/dev/null; then
      echo "ok   $1"
      return 0
    fi
    sleep 0.1
  done
  fail "$1" "expected $2 to contain: $3" "got: $(cat "$2" 2>/dev/null)"
}

# wait_eq NAME EXPECTED CMD...: waits (30 s at most) until CMD prints exactly EXPECTED.
wait_eq() {
  CHECKS=$((CHECKS + 1))
  local name=$1 want=$2 got i
  shift 2
  for i in $(seq 300); do
    got=$("$@" 2>&1)
    if [ "$got" = "$want" ]; then
      echo "ok   $name"
      return 0
    fi
    sleep 0.1
  done
  fail "$name" "expected: $want" "got: $got"
}
