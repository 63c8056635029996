#!/usr/bin/env bash
# Pod startup latency (capstan-bench pods) on a cluster of real processes, freshly started
# for every run: a single-member store serving the Kubernetes API with the controllers and
# the scheduler in process (`capstan store --apiserver-listen ... --scheduler`), and
#   REAL=1   one real node: `capstan agent --node-name real-0`, each container a local
#            process; PODS defaults to 50
#   REAL=0   hollow nodes: one `capstan agent --runtime simulated --nodes HOLLOW_NODES`,
#            containers simulated; PODS defaults to 1,000 (the default)
# Each run creates PODS bare pods (no nodeName: the scheduler spreads them) with
# CONCURRENCY creates in flight and times, per pod, create sent -> PodScheduled seen ->
# Running and Ready seen in a watch; then deletes them and waits for them to go. The RSS
# of the store and the agent is read twice: with every pod running (by capstan-bench) and
# at the end, after the deletion (here, from /proc/<pid>/status VmRSS).
#
#   scripts/bench-pods.sh                                   # hollow, release build
#   REAL=1 scripts/bench-pods.sh                            # one real node
#   BUILD=0 PROFILE=debug REAL=1 PODS=5 REPEAT=1 scripts/bench-pods.sh   # a smoke test
#
# Settings (environment): REAL (0), PODS (50 real, 1000 hollow; at most 100000),
# HOLLOW_NODES (100), CONCURRENCY (16 creates in flight), RATE (creates started per second
# at most, evenly spaced, as Kubernetes' SLO tests pace them; 0: unpaced), REPEAT (3), MAX_PODS (the real
# node's --max-pods; 110, or PODS when larger), COMMAND (the container's command, a JSON
# array; '["sh","-c","exec sleep 1000000"]'), TIMEOUT_S (600: each run, cluster start to
# every pod ready), PROFILE (release; debug for checks), BUILD (1: build PROFILE first; 0
# uses the binaries there), CAPSTAN and BENCH (the binaries; target/PROFILE/... by
# default), BASE_PORT (25700; uses BASE_PORT..BASE_PORT+1), RESULTS
# (target/bench-pods/results.jsonl: every run as one JSON line), KEEP_DATA (0; data and
# logs are kept anyway when the script fails). Servers listen on 127.0.0.1 only; every
# process started here is stopped when the script exits, and containers a stopped agent
# left running (containers outlive their agent by design) are killed by their recorded
# pid and start time.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

REAL=${REAL:-0}
if [ "$REAL" = 1 ]; then PODS=${PODS:-50}; else PODS=${PODS:-1000}; fi
HOLLOW_NODES=${HOLLOW_NODES:-100}
CONCURRENCY=${CONCURRENCY:-16}
RATE=${RATE:-0}
REPEAT=${REPEAT:-3}
MAX_PODS=${MAX_PODS:-$((PODS > 110 ? PODS : 110))}
COMMAND=${COMMAND:-'["sh","-c","exec sleep 1000000"]'}
TIMEOUT_S=${TIMEOUT_S:-600}
PROFILE=${PROFILE:-release}
BUILD=${BUILD:-1}
BASE_PORT=${BASE_PORT:-25700}
KEEP_DATA=${KEEP_DATA:-0}
out_dir="$root/target/bench-pods"
RESULTS=${RESULTS:-$out_dir/results.jsonl}
READY_TIMEOUT_S=60
DELETE_TIMEOUT_S=300

log() { echo "bench-pods: $*" >&2; }
die() { log "$*"; exit 1; }

case $PROFILE in
  release) profile_flag=(--release) ;;
  debug) profile_flag=() ;;
  *) die "PROFILE must be release or debug" ;;
esac
if [ "$BUILD" = 1 ]; then
  log "building capstan and capstan-bench ($PROFILE)"
  cargo build "${profile_flag[@]}" -p capstan -p capstan-bench
fi
capstan=${CAPSTAN:-$root/target/$PROFILE/capstan}
bench=${BENCH:-$root/target/$PROFILE/capstan-bench}
[ -x "$capstan" ] && [ -x "$bench" ] || die "missing $capstan or $bench (BUILD=1, or set CAPSTAN and BENCH)"
command -v curl >/dev/null || die "curl is needed to wait for the API"
command -v python3 >/dev/null || die "python3 is needed to tabulate the results"
if [ "$REAL" = 1 ]; then
  mode=real
  min_nodes=1
else
  mode=hollow
  min_nodes=$HOLLOW_NODES
  "$capstan" agent --help 2>/dev/null | grep -q -- '--runtime' ||
    die "this capstan agent has no --runtime (the hollow runtime); run with REAL=1"
fi

# shellcheck source=scripts/common.sh
source "$root/scripts/common.sh"
for p in "$BASE_PORT" "$((BASE_PORT + 1))"; do
  port_free "$p" || die "127.0.0.1:$p is already in use; set BASE_PORT"
done

mkdir -p "$out_dir" "$(dirname "$RESULTS")"
work=$(mktemp -d "${TMPDIR:-/tmp}/capstan-bench-pods.XXXXXX")
log "data and logs in $work; results in $RESULTS"
api="http://127.0.0.1:$((BASE_PORT + 1))"
store_pid=""
agent_pid=""
node_dir=""

stop_cluster() {
  stop_pid "$agent_pid"
  agent_pid=""
  kill_leftover_containers "$node_dir"
  stop_pid "$store_pid"
  store_pid=""
}

cleanup() {
  local rc=$?
  stop_cluster
  if [ "$KEEP_DATA" = 1 ] || [ "$rc" != 0 ]; then
    log "data and logs kept in $work"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_cluster <dir>: a fresh store with the API, controllers and scheduler, and the agent.
start_cluster() {
  local dir=$1
  mkdir -p "$dir"
  "$capstan" store --name n1 --data-dir "$dir/store" --listen-client "127.0.0.1:$BASE_PORT" \
    --apiserver-listen "127.0.0.1:$((BASE_PORT + 1))" --scheduler \
    >"$dir/store.out" 2>"$dir/store.log" &
  store_pid=$!
  wait_ready store "$store_pid" "$dir/store.log" grep -q "capstan store ready on" "$dir/store.out"
  wait_ready "the store's API" "$store_pid" "$dir/store.log" curl -fsS "$api/api/v1/namespaces/default"
  node_dir="$dir/node"
  if [ "$REAL" = 1 ]; then
    "$capstan" agent --master "$api" --node-name real-0 --root-dir "$node_dir" --port 0 \
      --max-pods "$MAX_PODS" >"$dir/agent.out" 2>"$dir/agent.log" &
  else
    "$capstan" agent --master "$api" --runtime simulated --nodes "$HOLLOW_NODES" \
      --node-name hollow --root-dir "$node_dir" --port 0 \
      >"$dir/agent.out" 2>"$dir/agent.log" &
  fi
  agent_pid=$!
  wait_ready agent "$agent_pid" "$dir/agent.log" grep -q "capstan agent ready" "$dir/agent.out"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo null; }

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
load() { cut -d' ' -f1 /proc/loadavg; }
{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "memory: $(free -h | awk '/^Mem:/ {print $2}') total"
  echo "capstan: $commit$(git diff --quiet HEAD -- src agents apiserver store 2>/dev/null || echo '+uncommitted'), $PROFILE build"
} >"$work/machine.txt"

for r in $(seq "$REPEAT"); do
  dir="$work/run-$r"
  if [ "$REAL" = 1 ]; then
    log "run $r: $PODS pods on one real node, $CONCURRENCY creates in flight (RATE=$RATE)"
  else
    log "run $r: $PODS pods on $HOLLOW_NODES hollow nodes, $CONCURRENCY creates in flight (RATE=$RATE)"
  fi
  start_cluster "$dir"
  before=$(load)
  status=0
  line=$(timeout $((TIMEOUT_S + DELETE_TIMEOUT_S + 60)) "$bench" pods --api "$api" --pods "$PODS" \
    --concurrency "$CONCURRENCY" --creates-per-second "$RATE" --min-ready-nodes "$min_nodes" --command "$COMMAND" \
    --rss "store=$store_pid" --rss "agent=$agent_pid" --timeout-s "$TIMEOUT_S" \
    --delete-timeout-s "$DELETE_TIMEOUT_S" --json 2>"$dir/bench.err") || status=$?
  rss_end="{\"store\":$(rss_kb "$store_pid"),\"agent\":$(rss_kb "$agent_pid")}"
  if [ -n "$line" ]; then
    echo "{\"bench\":\"pods\",\"mode\":\"$mode\",\"run\":$r,\"capstan\":\"$commit\",\"profile\":\"$PROFILE\",\"hollow_nodes\":$([ "$REAL" = 1 ] && echo 0 || echo "$HOLLOW_NODES"),\"load_before\":$before,\"rss_end_kb\":$rss_end,\"result\":$line}" >>"$RESULTS"
  fi
  if [ "$status" != 0 ]; then
    cat "$dir/bench.err" >&2
    die "capstan-bench pods failed (exit $status; logs in $dir)"
  fi
  stop_cluster
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$work/machine.txt"

cat "$work/machine.txt"
PYTHONPATH="$root/scripts" python3 - "$RESULTS" "$REPEAT" <<'EOF'
import json, sys
from compare_common import cell, ops

path, n = sys.argv[1], int(sys.argv[2])
lines = [json.loads(l) for l in open(path) if l.strip()][-n:]
rs = [l["result"] for l in lines]
r0, l0 = rs[0], lines[0]
where = "one real node" if l0["mode"] == "real" else f"{l0['hollow_nodes']} hollow nodes"
pace = f" at most {r0['creates_per_second_max']}/s" if r0.get("creates_per_second_max") else ""
print(f"pod startup: {r0['pods']} pods on {where}, {r0['concurrency']} creates in flight{pace}, "
      f"{l0['profile']} build; median [min..max] over {len(rs)} run(s)")
sec = lambda us: f"{us / 1e6:.3f} s" if us >= 1e6 else f"{us / 1000:.1f} ms"
mib = lambda b: f"{b / 1048576:.1f} MiB"
print(f"  {'pods/s (first create -> last ready)':<40} {cell([r['pods_per_s'] for r in rs], lambda v: f'{v:,.1f}')}")
for key, what in [("create_to_ready", "create -> running+ready"),
                  ("create_to_scheduled", "create -> scheduled"),
                  ("scheduled_to_ready", "scheduled -> running+ready")]:
    for q in ["p50", "p90", "p99", "max"]:
        print(f"  {what + ' ' + q:<40} {cell([r[key][q + '_us'] for r in rs], sec)}")
print(f"  {'creates/s':<40} {cell([r['creates_per_s'] for r in rs], ops)}")
print(f"  {'nodes used':<40} {cell([r['nodes_used'] for r in rs], lambda v: f'{v:g}')}")
print(f"  {'delete -> all gone':<40} {cell([r['delete_seconds'] for r in rs], lambda v: f'{v:.3f} s')}")
for proc in ["store", "agent"]:
    print(f"  {'RSS ' + proc + ', pods running':<40} {cell([r['rss_bytes'].get(proc) for r in rs], mib)}")
    print(f"  {'RSS ' + proc + ', at the end':<40} "
          f"{cell([l['rss_end_kb'][proc] * 1024 if l['rss_end_kb'][proc] else None for l in lines], mib)}")
if any(r["relists"] for r in rs):
    print("  note: the watch listed again in some runs (coarser times); see", path)
print(f"1-minute load average before the runs: " + ", ".join(str(l["load_before"]) for l in lines))
EOF
