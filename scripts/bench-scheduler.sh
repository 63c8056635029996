#!/usr/bin/env bash
# The scheduler's benchmarks (capstan-bench scheduler), each on a freshly started
# single-member store serving the Kubernetes API in process:
#   throughput  one `capstan scheduler`; NODES nodes (API objects only), PODS pods with
#               requests; pods/s (first create -> last binding seen) and the latency from
#               each create's answer to its binding in a watch; REPEAT runs
#   failover    SCHEDULERS scheduler processes; the active one (from the Lease's holder) is
#               SIGKILLed and a pod created; kill -> its binding, FAILOVER_REPEAT times, with
#               the default lease settings (15s/10s/2s) and with 3s/2s/0.5s
#
#   scripts/bench-scheduler.sh
#   BUILD=0 CAPSTAN=target/debug/capstan BENCH=target/debug/capstan-bench \
#     NODES=100 PODS=500 REPEAT=1 FAILOVER_REPEAT=1 scripts/bench-scheduler.sh   # a smoke test
#
# Settings (environment): NODES (1000), PODS (5000), CONCURRENCY (32 creates in flight),
# REPEAT (3), FAILOVER_REPEAT (3), SCHEDULERS (2), ONLY ("throughput failover"), SETTINGS
# (failover lease settings, "15s/10s/2s 3s/2s/500ms"), BUILD (1: release build first; 0 uses
# the binaries there), CAPSTAN and BENCH (the binaries; target/release/... by default),
# BASE_PORT (25600; uses BASE_PORT..BASE_PORT+1), RESULTS (target/bench-scheduler/
# results.jsonl: every run as one JSON line). Servers listen on 127.0.0.1 only and are all
# stopped when the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

NODES=${NODES:-1000}
PODS=${PODS:-5000}
CONCURRENCY=${CONCURRENCY:-32}
REPEAT=${REPEAT:-3}
FAILOVER_REPEAT=${FAILOVER_REPEAT:-3}
SCHEDULERS=${SCHEDULERS:-2}
ONLY=${ONLY:-throughput failover}
SETTINGS=${SETTINGS:-15s/10s/2s 3s/2s/500ms}
BUILD=${BUILD:-1}
BASE_PORT=${BASE_PORT:-25600}
out_dir="$root/target/bench-scheduler"
RESULTS=${RESULTS:-$out_dir/results.jsonl}

log() { echo "bench-scheduler: $*" >&2; }
die() { log "$*"; exit 1; }

if [ "$BUILD" = 1 ]; then
  log "building capstan and capstan-bench (release)"
  cargo build --release -p capstan -p capstan-bench
fi
capstan=${CAPSTAN:-$root/target/release/capstan}
bench=${BENCH:-$root/target/release/capstan-bench}
[ -x "$capstan" ] && [ -x "$bench" ] || die "missing $capstan or $bench (BUILD=1, or set CAPSTAN and BENCH)"
mkdir -p "$out_dir" "$(dirname "$RESULTS")"
work=$(mktemp -d "${TMPDIR:-/tmp}/capstan-bench-scheduler.XXXXXX")
log "data and logs in $work; results in $RESULTS"

# When the store can run the controllers in process, they stay off here: only the
# scheduler under test acts on the nodes and pods.
store_flags=()
if "$capstan" store --help 2>/dev/null | grep -q -- '--no-controller-manager'; then
  store_flags+=(--no-controller-manager)
fi

pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT

api="http://127.0.0.1:$((BASE_PORT + 1))"

# start_store <dir>: a fresh store with the API; waits until it takes writes.
start_store() {
  local dir=$1 i
  mkdir -p "$dir"
  "$capstan" store --name n1 --data-dir "$dir/store" --listen-client "127.0.0.1:$BASE_PORT" \
    --apiserver-listen "127.0.0.1:$((BASE_PORT + 1))" --insecure "${store_flags[@]}" \
    >"$dir/store.out" 2>"$dir/store.log" &
  pids+=($!)
  for i in $(seq 600); do
    curl -fsS "$api/api/v1/namespaces/default" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "the store's API did not come up within 60 s (logs in $dir)"
}

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
load() { cut -d' ' -f1 /proc/loadavg; }

for what in $ONLY; do
  case $what in
    throughput)
      for r in $(seq "$REPEAT"); do
        dir="$work/throughput-$r"
        log "throughput run $r: $NODES nodes, $PODS pods"
        start_store "$dir"
        "$capstan" scheduler --master "$api" >"$dir/scheduler.out" 2>"$dir/scheduler.log" &
        pids+=($!)
        before=$(load)
        line=$("$bench" scheduler throughput --api "$api" --nodes "$NODES" --pods "$PODS" \
          --concurrency "$CONCURRENCY" --keep --json) ||
          die "capstan-bench scheduler throughput failed (logs in $dir)"
        echo "{\"bench\":\"throughput\",\"run\":$r,\"capstan\":\"$commit\",\"load_before\":$before,\"result\":$line}" >>"$RESULTS"
        stop_all
      done
      ;;
    failover)
      for s in $SETTINGS; do
        IFS=/ read -r lease renew retry <<<"$s"
        dir="$work/failover-${lease}-${renew}-${retry}"
        log "failover: $SCHEDULERS schedulers, lease $lease, renew deadline $renew, retry $retry; $FAILOVER_REPEAT kill(s)"
        start_store "$dir"
        before=$(load)
        "$bench" scheduler failover --api "$api" --capstan "$capstan" --schedulers "$SCHEDULERS" \
          --lease-duration "$lease" --renew-deadline "$renew" --retry-period "$retry" \
          --repeat "$FAILOVER_REPEAT" --log-dir "$dir" --keep --json >"$dir/rounds.jsonl" ||
          die "capstan-bench scheduler failover failed (logs in $dir)"
        while read -r line; do
          echo "{\"bench\":\"failover\",\"setting\":\"$s\",\"capstan\":\"$commit\",\"load_before\":$before,\"result\":$line}" >>"$RESULTS"
        done <"$dir/rounds.jsonl"
        stop_all
      done
      ;;
    *) die "unknown benchmark $what (throughput, failover)" ;;
  esac
done

# The table: this invocation's lines.
lines=0
for what in $ONLY; do
  case $what in
    throughput) lines=$((lines + REPEAT)) ;;
    failover) lines=$((lines + FAILOVER_REPEAT * $(wc -w <<<"$SETTINGS"))) ;;
  esac
done
python3 - "$RESULTS" "$lines" <<'EOF'
import json, statistics, sys
path, n = sys.argv[1], int(sys.argv[2])
lines = [json.loads(l) for l in open(path)][-n:] if n else []
def cell(values, fmt):
    values = sorted(values)
    return f"{fmt(statistics.median(values))} [{fmt(values[0])}..{fmt(values[-1])}]"
ms = lambda v: f"{v:,.2f} ms"
tp = [l["result"] for l in lines if l["bench"] == "throughput"]
if tp:
    r0 = tp[0]
    print(f"scheduler throughput: {r0['pods']} pods onto {r0['nodes']} nodes, {r0['concurrency']} creates in flight; "
          f"median [min..max] over {len(tp)} run(s)")
    print(f"  pods/s (first create -> last binding)   {cell([r['pods_per_s'] for r in tp], lambda v: f'{v:,.0f}')}")
    print(f"  latency p50 (create answered -> bound)  {cell([r['latency']['p50_us'] / 1000 for r in tp], ms)}")
    print(f"  latency p99                             {cell([r['latency']['p99_us'] / 1000 for r in tp], ms)}")
    print(f"  creates/s                               {cell([r['creates_per_s'] for r in tp], lambda v: f'{v:,.0f}')}")
    print("  per run: " + ", ".join(f"{r['pods_per_s']:,.1f} pods/s (p50 {r['latency']['p50_us'] / 1000:.2f} ms, "
                                     f"p99 {r['latency']['p99_us'] / 1000:.2f} ms)" for r in tp))
fo = [l for l in lines if l["bench"] == "failover"]
for setting in dict.fromkeys(l["setting"] for l in fo):
    rs = [l["result"] for l in fo if l["setting"] == setting]
    print(f"scheduler failover, lease/renew/retry {setting}, {rs[0]['schedulers']} schedulers, {len(rs)} kill(s):")
    print(f"  kill -> next binding   {cell([r['kill_to_bound_ms'] for r in rs], ms)}")
    lease = [r['kill_to_lease_ms'] for r in rs if r['kill_to_lease_ms'] is not None]
    if lease:
        print(f"  kill -> Lease taken    {cell(lease, ms)}")
    print("  per kill: " + ", ".join(f"{r['kill_to_bound_ms']:.1f} ms" for r in rs))
print(f"load average now: {open('/proc/loadavg').read().split()[0]}; before the runs: "
      + ", ".join(str(l['load_before']) for l in lines))
EOF
