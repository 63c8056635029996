#!/usr/bin/env bash
# Runs the same workloads against a single-member Capstan store and a single-member etcd
# on this machine and prints them side by side.
#
#   scripts/compare-etcd.sh
#
# Workloads (each repeated REPEAT times, servers alternating; the table shows the median
# and, in brackets, the smallest and largest run):
#   - put, 1 client                  (capstan-bench kv put --clients 1)
#   - put, 64 clients over 8 conns   (capstan-bench kv put --clients 64 --conns 8); each
#     run is PUT64_TOTAL puts, long enough (seconds) that memtable flushes and compactions
#     fall inside the runs and a hiccup of the machine weighs little (20,000 puts, the
#     default before 2026-12-04, took under a second)
#   - put, 256 clients over 8 conns  (capstan-bench kv put --clients 256 --conns 8),
#     PUT256_TOTAL puts
#   - range, linearizable, RANGE_CLIENTS clients over 8 conns, after writing RANGE_KEYS
#     keys (kv range --consistency linearizable --preload-clients 64), RANGE_TOTAL reads;
#     workload "range-l", as in compare-etcd-cluster.sh
#   - range, serializable, the same keys (kv range --consistency serializable
#     --no-preload); workload "range-s"
#   - watch fan-out: WATCHERS watchers of one key over STREAMS streams, EVENTS puts one at a
#     time; delivery p99, deliveries/s, and server RSS growth per idle watcher. Every
#     fan-out run uses freshly started servers, so memory freed by an earlier run cannot
#     hide the cost of new watchers.
#   - memory only: MEM_WATCHERS watchers (one event), where the RSS growth is large
#     enough to stand well above the noise of the allocator and the Go GC.
#   - compaction: freshly started servers for every run (capstan, then etcd); capstan-bench
#     compaction writes COMPACTION_HISTORY revisions over 1,000 keys, puts with 64 clients
#     over 8 conns for 12 s, and 4 s into that load compacts the whole history at the
#     current revision (physical: answered once the old revisions are deleted); puts/s
#     and p99 before and during the compaction (during = until 1 s after its answer), its
#     duration, and the slowest 100 ms window of the load.
#
# Settings (environment): REPEAT (3), PUT1_TOTAL (2000), PUT64_TOTAL (100000),
# PUT256_TOTAL (100000), RANGE_TOTAL (20000), RANGE_CLIENTS (64), RANGE_KEYS (10000),
# KV (1; 0 skips the put and range workloads), FANOUT (1; 0 skips the fan-out runs, not
# the memory runs), RATE (0: fan-out events one at a time; R: R puts per second, open loop),
# WATCHERS (10000), STREAMS (100), EVENTS (100), MEM_WATCHERS (100000; 0 skips), KEY_SIZE (16), VAL_SIZE (256),
# COMPACTION (1; 0 skips the compaction runs), COMPACTION_HISTORY (200000),
# COMPACTION_REPEAT (REPEAT), COMPACTION_DURATION_S (12: the load's length), COMPACTION_AT_S
# (4: the Compact's time into it),
# CAPSTAN_PORT (24379), ETCD_PORT (24479), ETCD_PEER_PORT (24480), ETCD (/usr/bin/etcd),
# RESULTS (target/compare-etcd/results.jsonl: every run as one JSON line), KEEP_DATA (0),
# BUILD (1; 0 measures the binaries already built), CAPSTAN_BIN (target/release/capstan).
#
# Both servers listen on 127.0.0.1 only and both are stopped when the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

REPEAT=${REPEAT:-3}
PUT1_TOTAL=${PUT1_TOTAL:-2000}
PUT64_TOTAL=${PUT64_TOTAL:-100000}
PUT256_TOTAL=${PUT256_TOTAL:-100000}
RANGE_TOTAL=${RANGE_TOTAL:-20000}
RANGE_CLIENTS=${RANGE_CLIENTS:-64}
RANGE_KEYS=${RANGE_KEYS:-10000}
KV=${KV:-1}
FANOUT=${FANOUT:-1}
RATE=${RATE:-0}
COMPACTION=${COMPACTION:-1}
COMPACTION_HISTORY=${COMPACTION_HISTORY:-200000}
COMPACTION_REPEAT=${COMPACTION_REPEAT:-$REPEAT}
COMPACTION_DURATION_S=${COMPACTION_DURATION_S:-12}
COMPACTION_AT_S=${COMPACTION_AT_S:-4}
WATCHERS=${WATCHERS:-10000}
STREAMS=${STREAMS:-100}
EVENTS=${EVENTS:-100}
MEM_WATCHERS=${MEM_WATCHERS:-100000}
KEY_SIZE=${KEY_SIZE:-16}
VAL_SIZE=${VAL_SIZE:-256}
CAPSTAN_PORT=${CAPSTAN_PORT:-24379}
ETCD_PORT=${ETCD_PORT:-24479}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-24480}
ETCD=${ETCD:-/usr/bin/etcd}
RESULTS=${RESULTS:-$root/target/compare-etcd/results.jsonl}
KEEP_DATA=${KEEP_DATA:-0}
READY_TIMEOUT_S=60
BENCH_TIMEOUT_S=300

log() { echo "compare-etcd: $*" >&2; }
die() { log "$*"; exit 1; }

scripts/install-deps.sh bench
command -v python3 >/dev/null || die "python3 is needed to tabulate the results"
[ -x "$ETCD" ] || die "$ETCD is not executable (scripts/install-deps.sh bench installs Debian's etcd-server)"

if [ "${BUILD:-1}" = 1 ]; then
  log "building capstan and capstan-bench (release)"
  cargo build --release -p capstan -p capstan-bench
fi
# CAPSTAN_BIN: another capstan binary to measure (an A/B run against an older build).
capstan=${CAPSTAN_BIN:-$root/target/release/capstan}
bench="$root/target/release/capstan-bench"

# shellcheck source=scripts/common.sh
source "$root/scripts/common.sh"
for p in "$CAPSTAN_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT"; do
  port_free "$p" || die "127.0.0.1:$p is already in use; set CAPSTAN_PORT/ETCD_PORT/ETCD_PEER_PORT"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/capstan-compare.XXXXXX")
mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"
capstan_pid=""
etcd_pid=""

cleanup() {
  local rc=$?
  stop_pid "$capstan_pid"
  stop_pid "$etcd_pid"
  capstan_pid=""
  etcd_pid=""
  if [ "$KEEP_DATA" = 1 ]; then
    log "data and server logs kept in $work"
  else
    rm -rf "$work"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_capstan() {
  local dir="$work/capstan-$1"
  "$capstan" store --insecure --data-dir "$dir" --listen-client "127.0.0.1:$CAPSTAN_PORT" \
    >"$dir.out" 2>"$dir.err" &
  capstan_pid=$!
  wait_ready capstan "$capstan_pid" "$dir.err" grep -q "capstan store ready on" "$dir.out"
}

etcd_healthy() {
  "$bench" kv range --endpoints "127.0.0.1:$ETCD_PORT" --no-preload --total 1 --timeout-s 2 --json \
    | grep -q '"errors":0'
}

start_etcd() {
  local dir="$work/etcd-$1"
  "$ETCD" --name compare --data-dir "$dir" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "compare=http://127.0.0.1:$ETCD_PEER_PORT" \
    >"$dir.log" 2>&1 &
  etcd_pid=$!
  wait_ready etcd "$etcd_pid" "$dir.log" etcd_healthy
}

stop_servers() {
  stop_pid "$capstan_pid"
  stop_pid "$etcd_pid"
  capstan_pid=""
  etcd_pid=""
}

# run <server> <workload> <capstan-bench args...>: one run, appended to $RESULTS.
run() {
  local server=$1 workload=$2
  shift 2
  local port=$CAPSTAN_PORT
  [ "$server" = etcd ] && port=$ETCD_PORT
  log "$workload on $server"
  local out load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  out=$(timeout $((BENCH_TIMEOUT_S + 30)) "$bench" "$@" --endpoints "127.0.0.1:$port" \
    --timeout-s "$BENCH_TIMEOUT_S" --json) || die "capstan-bench failed: $workload on $server"
  printf '{"server":"%s","workload":"%s","loadavg_before":"%s","result":%s}\n' \
    "$server" "$workload" "$load" "$out" >>"$RESULTS"
}

log "data in $work; results in $RESULTS"
{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "memory: $(free -h | awk '/^Mem:/ {print $2}') total"
  echo "capstan: $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- store src proto || echo '+uncommitted')"
  echo "etcd: $("$ETCD" --version | head -1)"
} >"$work/machine.txt"

# Puts and reads: both servers up, runs alternating.
if [ "$KV" = 1 ]; then
  start_capstan kv
  start_etcd kv
  for r in $(seq "$REPEAT"); do
    for s in capstan etcd; do
      run "$s" put1 kv put --clients 1 --conns 1 --total "$PUT1_TOTAL" \
        --key-size "$KEY_SIZE" --val-size "$VAL_SIZE"
      run "$s" put64 kv put --clients 64 --conns 8 --total "$PUT64_TOTAL" \
        --key-size "$KEY_SIZE" --val-size "$VAL_SIZE"
      run "$s" put256 kv put --clients 256 --conns 8 --total "$PUT256_TOTAL" \
        --key-size "$KEY_SIZE" --val-size "$VAL_SIZE"
      run "$s" range-l kv range --consistency linearizable \
        --clients "$RANGE_CLIENTS" --conns 8 --preload-clients 64 \
        --key-space "$RANGE_KEYS" --total "$RANGE_TOTAL" --key-size "$KEY_SIZE" --val-size "$VAL_SIZE"
      # The keys are there from the linearizable run just before, on the same server.
      run "$s" range-s kv range --consistency serializable --no-preload \
        --clients "$RANGE_CLIENTS" --conns 8 \
        --key-space "$RANGE_KEYS" --total "$RANGE_TOTAL" --key-size "$KEY_SIZE" --val-size "$VAL_SIZE"
    done
  done
  stop_servers
fi

# Watch fan-out: fresh servers for every run.
if [ "$FANOUT" = 1 ]; then
  for r in $(seq "$REPEAT"); do
    start_capstan "fanout$r"
    run capstan fanout watch-fanout --watchers "$WATCHERS" --streams "$STREAMS" \
      --events "$EVENTS" --rate "$RATE" --pid "$capstan_pid"
    stop_pid "$capstan_pid"
    capstan_pid=""
    start_etcd "fanout$r"
    run etcd fanout watch-fanout --watchers "$WATCHERS" --streams "$STREAMS" \
      --events "$EVENTS" --rate "$RATE" --pid "$etcd_pid"
    stop_pid "$etcd_pid"
    etcd_pid=""
  done
fi
if [ "$MEM_WATCHERS" -gt 0 ]; then
  for r in $(seq "$REPEAT"); do
    start_capstan "mem$r"
    run capstan mem watch-fanout --watchers "$MEM_WATCHERS" --streams "$STREAMS" --events 1 \
      --pid "$capstan_pid"
    stop_pid "$capstan_pid"
    capstan_pid=""
    start_etcd "mem$r"
    run etcd mem watch-fanout --watchers "$MEM_WATCHERS" --streams "$STREAMS" --events 1 \
      --pid "$etcd_pid"
    stop_pid "$etcd_pid"
    etcd_pid=""
  done
fi
# Compaction under put load: fresh servers for every run, so each compacts one history.
if [ "$COMPACTION" = 1 ]; then
  for r in $(seq "$COMPACTION_REPEAT"); do
    start_capstan "compaction$r"
    run capstan compaction compaction --history "$COMPACTION_HISTORY" \
      --duration-s "$COMPACTION_DURATION_S" --compact-at-s "$COMPACTION_AT_S" \
      --key-size "$KEY_SIZE" --val-size "$VAL_SIZE"
    stop_pid "$capstan_pid"
    capstan_pid=""
    start_etcd "compaction$r"
    run etcd compaction compaction --history "$COMPACTION_HISTORY" \
      --duration-s "$COMPACTION_DURATION_S" --compact-at-s "$COMPACTION_AT_S" \
      --key-size "$KEY_SIZE" --val-size "$VAL_SIZE"
    stop_pid "$etcd_pid"
    etcd_pid=""
  done
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$work/machine.txt"

cat "$work/machine.txt"
PYTHONPATH="$root/scripts" python3 - "$RESULTS" "$WATCHERS" "$STREAMS" "$EVENTS" "$MEM_WATCHERS" \
  "$RANGE_CLIENTS" "$COMPACTION_HISTORY" <<'EOF'
import json, statistics, sys

path, watchers, streams, events, mem_watchers, range_clients, compaction_history = sys.argv[1:8]
runs = [json.loads(line) for line in open(path) if line.strip()]

def values(server, workload, get):
    return [get(r["result"]) for r in runs if r["server"] == server and r["workload"] == workload]

from compare_common import cell, ops, ms
byt = lambda b: f"{b:,.0f} B"
msf = lambda v: f"{v:,.1f} ms"

rows = [
    ("put, 1 client: ops/s", "put1", lambda r: r["ops_per_s"], ops),
    ("put, 1 client: p50", "put1", lambda r: r["latency"]["p50_us"], ms),
    ("put, 1 client: p99", "put1", lambda r: r["latency"]["p99_us"], ms),
    ("put, 64 clients: ops/s", "put64", lambda r: r["ops_per_s"], ops),
    ("put, 64 clients: p50", "put64", lambda r: r["latency"]["p50_us"], ms),
    ("put, 64 clients: p99", "put64", lambda r: r["latency"]["p99_us"], ms),
    ("put, 64 clients: max", "put64", lambda r: r["latency"]["max_us"], ms),
    ("put, 256 clients: ops/s", "put256", lambda r: r["ops_per_s"], ops),
    ("put, 256 clients: p50", "put256", lambda r: r["latency"]["p50_us"], ms),
    ("put, 256 clients: p99", "put256", lambda r: r["latency"]["p99_us"], ms),
    (f"range linearizable, {range_clients} clients: ops/s", "range-l", lambda r: r["ops_per_s"], ops),
    (f"range linearizable, {range_clients} clients: p50", "range-l", lambda r: r["latency"]["p50_us"], ms),
    (f"range linearizable, {range_clients} clients: p99", "range-l", lambda r: r["latency"]["p99_us"], ms),
    (f"range serializable, {range_clients} clients: ops/s", "range-s", lambda r: r["ops_per_s"], ops),
    (f"range serializable, {range_clients} clients: p50", "range-s", lambda r: r["latency"]["p50_us"], ms),
    (f"range serializable, {range_clients} clients: p99", "range-s", lambda r: r["latency"]["p99_us"], ms),
    ("fan-out: delivery p50", "fanout", lambda r: r["delivery_from_send"]["p50_us"], ms),
    ("fan-out: delivery p99", "fanout", lambda r: r["delivery_from_send"]["p99_us"], ms),
    ("fan-out: all have event p99", "fanout", lambda r: r["all_watchers_have_event"]["p99_us"], ms),
    ("fan-out: deliveries/s", "fanout", lambda r: r["deliveries_per_s"], ops),
    ("fan-out: put p99", "fanout", lambda r: r["put"]["p99_us"], ms),
    ("fan-out: bytes per idle watcher", "fanout", lambda r: r["bytes_per_idle_watcher"], byt),
    (f"{int(mem_watchers):,} watchers: bytes per idle watcher", "mem", lambda r: r["bytes_per_idle_watcher"], byt),
    ("compaction: puts/s before", "compaction", lambda r: r["before"]["ops_per_s"], ops),
    ("compaction: puts/s during", "compaction", lambda r: r["during"]["ops_per_s"], ops),
    ("compaction: put p99 before", "compaction", lambda r: r["before"]["p99_us"], ms),
    ("compaction: put p99 during", "compaction", lambda r: r["during"]["p99_us"], ms),
    ("compaction: Compact sent -> answered", "compaction", lambda r: r["compact_ms"], msf),
    ("compaction: slowest 100 ms window, puts/s", "compaction", lambda r: r["min_window_ops_per_s"], ops),
]
rows = [r for r in rows if any(x["workload"] == r[1] for x in runs)]
incomplete = [
    r for r in runs
    if r["result"].get("timed_out") or r["result"].get("errors", 0) or r["result"].get("misses", 0)
]
print()
if any(r["workload"] == "fanout" for r in runs):
    rate = next(r["result"].get("rate", 0) for r in runs if r["workload"] == "fanout")
    pace = f"at {rate:g} per second" if rate else "one at a time"
    print(f"fan-out: {watchers} watchers of one key over {streams} streams, {events} events {pace}")
if any(r["workload"] == "compaction" for r in runs):
    print(f"compaction: a history of {int(compaction_history):,} revisions over 1,000 keys compacted under put load")
print("cells: median [min..max] over runs; latencies from the put being sent")
w = max(len(r[0]) for r in rows)
print(f"{'':{w}}  {'capstan':>32}  {'etcd':>32}  capstan/etcd")
for name, wl, get, fmt in rows:
    c = [v for v in values("capstan", wl, get) if v is not None]
    e = [v for v in values("etcd", wl, get) if v is not None]
    ratio = ""
    if c and e and statistics.median(e):
        ratio = f"{statistics.median(c) / statistics.median(e):.2f}x"
    print(f"{name:{w}}  {cell(c, fmt):>32}  {cell(e, fmt):>32}  {ratio}")
loads = sorted(float(r["loadavg_before"].split()[0]) for r in runs)
print(f"1-minute load average before the runs: {loads[0]:.2f} to {loads[-1]:.2f}")
if incomplete:
    print(f"WARNING: {len(incomplete)} runs timed out or had errors; see {path}")
EOF
