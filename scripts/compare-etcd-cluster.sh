#!/usr/bin/env bash
# Runs the same workloads against a 3-member Capstan cluster and a 3-member etcd cluster
# on this machine and prints them side by side.
#
#   scripts/compare-etcd-cluster.sh              # both clusters
#   ONLY=etcd scripts/compare-etcd-cluster.sh    # one side only (etcd or capstan)
#
# Both clusters: members n1, n2, n3 on loopback, election timeout 1000 ms, heartbeat
# 100 ms, data under target/compare-etcd-cluster/data/. Workloads (each repeated REPEAT
# times, clusters alternating, and which cluster goes first alternating too; the table
# shows the median and, in brackets, the smallest and largest run):
#   - put, 1 client, to the leader         (kv put --clients 1 --target leader)
#   - put, 64 clients over 9 conns         (3 connections per member)
#   - put, 256 clients over 9 conns
#   - range, linearizable, RANGE_CLIENTS clients over 9 conns, after writing
#     RANGE_KEYS keys (kv range --consistency linearizable)
#   - range, serializable, the same        (kv range --consistency serializable)
#   - failover: a freshly started cluster for every run; capstan-bench failover finds the
#     leader, puts a light load on the two other members (16 clients, at most one put per
#     client per 20 ms, 100 ms timeout per put), kill -9s the leader and reports the time
#     from the kill to the first acknowledged put sent after it, to the first such put on
#     each survivor, and to a survivor naming a new leader in its Status (polled every
#     10 ms).
#   - compaction: a freshly started cluster for every run; capstan-bench compaction
#     writes COMPACTION_HISTORY revisions over 1,000 keys, then puts with 64 clients over
#     9 conns spread over the three members as the put workloads are (3 connections per
#     member), for 12 s; 4 s into that load it sends one physical Compact at the current
#     revision to the leader (found with Status; physical: answered once the leader has
#     deleted the old revisions). Puts/s and p99 before and during the compaction (during
#     = until 1 s after its answer), its duration, and the slowest 100 ms window.
#
# Settings (environment): REPEAT (3), ONLY (both; or capstan, etcd), PUT1_TOTAL (1000),
# PUT64_TOTAL (20000), PUT256_TOTAL (20000), RANGE_TOTAL (20000), RANGE_CLIENTS (64),
# RANGE_KEYS (10000), FAILOVER (1; 0 skips), KV (1; 0 skips the put and range workloads,
# e.g. KV=0 REPEAT=10 for more failover samples), COMPACTION (1; 0 skips the compaction
# runs), COMPACTION_HISTORY (200000), COMPACTION_REPEAT (REPEAT), COMPACTION_DURATION_S (12:
# the load's length), COMPACTION_AT_S (4: the Compact's time into it), FAILOVER_REPEAT (REPEAT), KEY_SIZE (16), VAL_SIZE (256),
# ELECTION_MS (1000), HEARTBEAT_MS (100),
# CAPSTAN_PORT (24400: client ports 24400-24402), CAPSTAN_PEER_PORT (24410: 24410-24412),
# ETCD_PORT (24500), ETCD_PEER_PORT (24510), ETCD (/usr/bin/etcd),
# CAPSTAN (target/release/capstan), BUILD (1; 0 uses the binaries already built),
# RESULTS (target/compare-etcd-cluster/results.jsonl: every run as one JSON line),
# KEEP_DATA (0; data and logs are also kept when the script fails).
#
# Every server listens on 127.0.0.1 only and all are stopped when the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

REPEAT=${REPEAT:-3}
ONLY=${ONLY:-}
PUT1_TOTAL=${PUT1_TOTAL:-1000}
PUT64_TOTAL=${PUT64_TOTAL:-20000}
PUT256_TOTAL=${PUT256_TOTAL:-20000}
RANGE_TOTAL=${RANGE_TOTAL:-20000}
RANGE_CLIENTS=${RANGE_CLIENTS:-64}
RANGE_KEYS=${RANGE_KEYS:-10000}
FAILOVER=${FAILOVER:-1}
COMPACTION=${COMPACTION:-1}
COMPACTION_HISTORY=${COMPACTION_HISTORY:-200000}
COMPACTION_REPEAT=${COMPACTION_REPEAT:-$REPEAT}
COMPACTION_DURATION_S=${COMPACTION_DURATION_S:-12}
COMPACTION_AT_S=${COMPACTION_AT_S:-4}
FAILOVER_REPEAT=${FAILOVER_REPEAT:-$REPEAT}
KV=${KV:-1}
KEY_SIZE=${KEY_SIZE:-16}
VAL_SIZE=${VAL_SIZE:-256}
ELECTION_MS=${ELECTION_MS:-1000}
HEARTBEAT_MS=${HEARTBEAT_MS:-100}
CAPSTAN_PORT=${CAPSTAN_PORT:-24400}
CAPSTAN_PEER_PORT=${CAPSTAN_PEER_PORT:-24410}
ETCD_PORT=${ETCD_PORT:-24500}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-24510}
ETCD=${ETCD:-/usr/bin/etcd}
BUILD=${BUILD:-1}
out_dir="$root/target/compare-etcd-cluster"
RESULTS=${RESULTS:-$out_dir/results.jsonl}
KEEP_DATA=${KEEP_DATA:-0}
READY_TIMEOUT_S=60
BENCH_TIMEOUT_S=300
CONNS=9 # three connections per member

log() { echo "compare-etcd-cluster: $*" >&2; }
die() { log "$*"; exit 1; }

case "$ONLY" in
  "") sides=(capstan etcd) ;;
  capstan | etcd) sides=("$ONLY") ;;
  *) die "ONLY=$ONLY: expected capstan or etcd (or unset for both)" ;;
esac
has_side() { [[ " ${sides[*]} " == *" $1 "* ]]; }

if has_side etcd; then
  scripts/install-deps.sh bench
  [ -x "$ETCD" ] || die "$ETCD is not executable (scripts/install-deps.sh bench installs Debian's etcd-server)"
fi
command -v python3 >/dev/null || die "python3 is needed to tabulate the results"

capstan=${CAPSTAN:-$root/target/release/capstan}
bench="$root/target/release/capstan-bench"
if [ "$BUILD" = 1 ]; then
  packages=(-p capstan-bench)
  has_side capstan && packages+=(-p capstan)
  log "building ${packages[*]} (release)"
  cargo build --release "${packages[@]}"
fi
[ -x "$bench" ] || die "$bench is missing (BUILD=1 builds it)"
if has_side capstan; then
  [ -x "$capstan" ] || die "$capstan is missing (BUILD=1 builds it)"
  "$capstan" store --help | grep -q -- '--initial-cluster' \
    || die "$capstan store has no --initial-cluster (no cluster mode in this build); ONLY=etcd runs etcd alone"
fi

# shellcheck source=scripts/common.sh
source "$root/scripts/common.sh"
member_ports() { # <base> -> the three ports
  echo "$1" "$(($1 + 1))" "$(($1 + 2))"
}
all_ports=()
has_side capstan && all_ports+=($(member_ports "$CAPSTAN_PORT") $(member_ports "$CAPSTAN_PEER_PORT"))
has_side etcd && all_ports+=($(member_ports "$ETCD_PORT") $(member_ports "$ETCD_PEER_PORT"))
for p in "${all_ports[@]}"; do
  port_free "$p" || die "127.0.0.1:$p is already in use; set CAPSTAN_PORT/CAPSTAN_PEER_PORT/ETCD_PORT/ETCD_PEER_PORT"
done

work="$out_dir/data"
rm -rf "$work"
mkdir -p "$work" "$(dirname "$RESULTS")"
: >"$RESULTS"
capstan_pids=()
etcd_pids=()

# Stops the processes given: TERM to all at once (a leader stopping alone may first try to
# hand its leadership over), then KILL what is left after 10 s. Reaps them all.
stop_pids() {
  local pid live=()
  for pid in "$@"; do
    [ -n "$pid" ] || continue
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      live+=("$pid")
    fi
  done
  local deadline=$((SECONDS + 10))
  for pid in "${live[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid did not stop on TERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for pid in "$@"; do
    [ -n "$pid" ] && { wait "$pid" 2>/dev/null || true; }
  done
  return 0
}

stop_cluster() { # <capstan|etcd>
  if [ "$1" = capstan ]; then
    stop_pids "${capstan_pids[@]}"
    capstan_pids=()
  else
    stop_pids "${etcd_pids[@]}"
    etcd_pids=()
  fi
}

cleanup() {
  local rc=$?
  stop_pids "${capstan_pids[@]}" "${etcd_pids[@]}"
  capstan_pids=()
  etcd_pids=()
  if [ "$KEEP_DATA" = 1 ] || [ "$rc" != 0 ]; then
    log "data and server logs kept in $work"
  else
    rm -rf "$work"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

endpoints_of() { # <capstan|etcd> -> host:port,host:port,host:port
  local base=$CAPSTAN_PORT
  [ "$1" = etcd ] && base=$ETCD_PORT
  echo "127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))"
}

initial_cluster() { # <peer base port>
  echo "n1=http://127.0.0.1:$1,n2=http://127.0.0.1:$(($1 + 1)),n3=http://127.0.0.1:$(($1 + 2))"
}

# Waits until every member is up and the three agree on a leader; dies with the members'
# logs if one exits or the deadline passes.
wait_cluster() { # <name> <dir> <pids...>
  local name=$1 dir=$2
  shift 2
  local deadline=$((SECONDS + READY_TIMEOUT_S)) pid i ready eps
  eps=$(endpoints_of "$name")
  while :; do
    i=0
    for pid in "$@"; do
      i=$((i + 1))
      if ! kill -0 "$pid" 2>/dev/null; then
        tail -n 20 "$dir/n$i.log" >&2 || true
        die "$name member n$i exited before the cluster was ready (log above)"
      fi
    done
    if [ "$name" = capstan ]; then
      ready=1
      for i in 1 2 3; do
        grep -q "capstan store ready on" "$dir/n$i.out" 2>/dev/null || ready=0
      done
    else
      ready=1
    fi
    if [ "$ready" = 1 ] && "$bench" status --endpoints "$eps" --wait-leader --timeout-s 2 >/dev/null 2>&1; then
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      "$bench" status --endpoints "$eps" >&2 || true
      for i in 1 2 3; do
        echo "--- $name n$i" >&2
        tail -n 10 "$dir/n$i.log" >&2 || true
      done
      die "$name cluster had no agreed leader within ${READY_TIMEOUT_S}s"
    fi
    sleep 0.2
  done
}

start_capstan() { # <tag>
  local dir="$work/capstan-$1" i
  mkdir -p "$dir"
  capstan_pids=()
  for i in 1 2 3; do
    "$capstan" store --insecure --name "n$i" --data-dir "$dir/n$i" \
      --listen-client "127.0.0.1:$((CAPSTAN_PORT + i - 1))" \
      --listen-peer "127.0.0.1:$((CAPSTAN_PEER_PORT + i - 1))" \
      --initial-cluster "$(initial_cluster "$CAPSTAN_PEER_PORT")" \
      --initial-cluster-state new \
      --election-timeout "$ELECTION_MS" --heartbeat-interval "$HEARTBEAT_MS" \
      >"$dir/n$i.out" 2>"$dir/n$i.log" &
    capstan_pids+=($!)
    disown "$!" # no "Killed" notice from bash when the failover run kills the leader
  done
  wait_cluster capstan "$dir" "${capstan_pids[@]}"
}

start_etcd() { # <tag>
  local dir="$work/etcd-$1" i
  mkdir -p "$dir"
  etcd_pids=()
  for i in 1 2 3; do
    local cport=$((ETCD_PORT + i - 1)) pport=$((ETCD_PEER_PORT + i - 1))
    "$ETCD" --name "n$i" --data-dir "$dir/n$i" \
      --listen-client-urls "http://127.0.0.1:$cport" \
      --advertise-client-urls "http://127.0.0.1:$cport" \
      --listen-peer-urls "http://127.0.0.1:$pport" \
      --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
      --initial-cluster "$(initial_cluster "$ETCD_PEER_PORT")" \
      --initial-cluster-state new --initial-cluster-token "compare-$1" \
      --election-timeout "$ELECTION_MS" --heartbeat-interval "$HEARTBEAT_MS" \
      >"$dir/n$i.log" 2>&1 &
    etcd_pids+=($!)
    disown "$!" # no "Killed" notice from bash when the failover run kills the leader
  done
  wait_cluster etcd "$dir" "${etcd_pids[@]}"
}

start_cluster() { # <capstan|etcd> <tag>
  log "starting the $1 cluster ($2)"
  if [ "$1" = capstan ]; then start_capstan "$2"; else start_etcd "$2"; fi
}

# run <server> <workload> <capstan-bench args...>: one run, appended to $RESULTS.
run() {
  local server=$1 workload=$2
  shift 2
  log "$workload on $server"
  local out load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  out=$(timeout $((BENCH_TIMEOUT_S + 30)) "$bench" "$@" --timeout-s "$BENCH_TIMEOUT_S" --json) \
    || die "capstan-bench failed: $workload on $server"
  printf '{"server":"%s","workload":"%s","loadavg_before":"%s","result":%s}\n' \
    "$server" "$workload" "$load" "$out" >>"$RESULTS"
}

# The cluster order for repetition r: alternate which goes first.
order() { # <r>
  if [ "${#sides[@]}" = 1 ] || [ $(($1 % 2)) = 1 ]; then
    echo "${sides[@]}"
  else
    echo "${sides[1]} ${sides[0]}"
  fi
}

log "data in $work; results in $RESULTS"
{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "memory: $(free -h | awk '/^Mem:/ {print $2}') total"
  if has_side capstan; then
    echo "capstan: $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- store src proto || echo '+uncommitted')$(
      [ "$BUILD" = 1 ] || echo " (BUILD=0: the binary was built $(date -r "$capstan" '+%F %T'), maybe from other sources)")"
  fi
  if has_side etcd; then
    echo "etcd: $("$ETCD" --version | head -1)"
  fi
  echo "clusters: 3 members each, election timeout ${ELECTION_MS} ms, heartbeat ${HEARTBEAT_MS} ms"
} >"$out_dir/machine.txt"

# Key-value workloads: both clusters up, runs alternating.
kv_common=(--key-size "$KEY_SIZE" --val-size "$VAL_SIZE")
if [ "$KV" = 1 ]; then
for s in "${sides[@]}"; do
  start_cluster "$s" kv
done
for r in $(seq "$REPEAT"); do
  for s in $(order "$r"); do
    eps=$(endpoints_of "$s")
    run "$s" put1 kv put --endpoints "$eps" --target leader --clients 1 --conns 1 \
      --total "$PUT1_TOTAL" "${kv_common[@]}"
    run "$s" put64 kv put --endpoints "$eps" --clients 64 --conns "$CONNS" \
      --total "$PUT64_TOTAL" "${kv_common[@]}"
    run "$s" put256 kv put --endpoints "$eps" --clients 256 --conns "$CONNS" \
      --total "$PUT256_TOTAL" "${kv_common[@]}"
    run "$s" range-l kv range --endpoints "$eps" --consistency linearizable \
      --clients "$RANGE_CLIENTS" --conns "$CONNS" --preload-clients 64 \
      --key-space "$RANGE_KEYS" --total "$RANGE_TOTAL" "${kv_common[@]}"
    # The keys are there from the linearizable run just before, on the same cluster.
    run "$s" range-s kv range --endpoints "$eps" --consistency serializable --no-preload \
      --clients "$RANGE_CLIENTS" --conns "$CONNS" \
      --key-space "$RANGE_KEYS" --total "$RANGE_TOTAL" "${kv_common[@]}"
  done
done
for s in "${sides[@]}"; do
  stop_cluster "$s"
done
fi

# Failover: a fresh cluster for every run.
if [ "$FAILOVER" = 1 ]; then
  for r in $(seq "$FAILOVER_REPEAT"); do
    for s in $(order "$r"); do
      start_cluster "$s" "failover$r"
      if [ "$s" = capstan ]; then pids=("${capstan_pids[@]}"); else pids=("${etcd_pids[@]}"); fi
      run "$s" failover failover --endpoints "$(endpoints_of "$s")" \
        --pids "$(IFS=,; echo "${pids[*]}")" "${kv_common[@]}"
      stop_cluster "$s"
    done
  done
fi

# Compaction under put load: a fresh cluster for every run, so each compacts one history.
if [ "$COMPACTION" = 1 ]; then
  for r in $(seq "$COMPACTION_REPEAT"); do
    for s in $(order "$r"); do
      start_cluster "$s" "compaction$r"
      run "$s" compaction compaction --endpoints "$(endpoints_of "$s")" --clients 64 --conns "$CONNS" \
        --history "$COMPACTION_HISTORY" --duration-s "$COMPACTION_DURATION_S" \
        --compact-at-s "$COMPACTION_AT_S" "${kv_common[@]}"
      stop_cluster "$s"
    done
  done
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out_dir/machine.txt"

cat "$out_dir/machine.txt"
PYTHONPATH="$root/scripts" python3 - "$RESULTS" "$RANGE_CLIENTS" "${sides[@]}" <<'EOF'
import json, statistics, sys

path, range_clients, *sides = sys.argv[1:]
runs = [json.loads(line) for line in open(path) if line.strip()]

def values(server, workload, get):
    out = []
    for r in runs:
        if r["server"] == server and r["workload"] == workload:
            try:
                out.append(get(r["result"]))
            except (KeyError, TypeError):
                out.append(None)
    return out

from compare_common import cell, ops, ms
msf = lambda v: f"{v:.2f} ms"
msf1 = lambda v: f"{v:,.1f} ms"
lat = lambda key: (lambda r: r["latency"][key])

rows = []
for wl, label in [
    ("put1", "put, 1 client (leader)"),
    ("put64", "put, 64 clients"),
    ("put256", "put, 256 clients"),
    ("range-l", f"range linearizable, {range_clients} clients"),
    ("range-s", f"range serializable, {range_clients} clients"),
]:
    rows += [
        (f"{label}: ops/s", wl, lambda r: r["ops_per_s"], ops),
        (f"{label}: p50", wl, lat("p50_us"), ms),
        (f"{label}: p99", wl, lat("p99_us"), ms),
    ]
rows += [
    ("failover: kill -> first acked put", "failover", lambda r: r["failover_ms"], msf),
    ("failover: kill -> acked on both survivors", "failover", lambda r: r["all_survivors_ms"], msf),
    ("failover: kill -> new leader in Status", "failover", lambda r: r["new_leader_seen_ms"], msf),
    ("compaction: puts/s before", "compaction", lambda r: r["before"]["ops_per_s"], ops),
    ("compaction: puts/s during", "compaction", lambda r: r["during"]["ops_per_s"], ops),
    ("compaction: put p99 before", "compaction", lambda r: r["before"]["p99_us"], ms),
    ("compaction: put p99 during", "compaction", lambda r: r["during"]["p99_us"], ms),
    ("compaction: Compact sent -> answered", "compaction", lambda r: r["compact_ms"], msf1),
    ("compaction: slowest 100 ms window, puts/s", "compaction", lambda r: r["min_window_ops_per_s"], ops),
]
rows = [r for r in rows if any(x["workload"] == r[1] for x in runs)]
incomplete = [
    r for r in runs
    if r["result"].get("timed_out") or (r["workload"] != "failover" and r["result"].get("errors", 0))
    or r["result"].get("misses", 0)
]
print()
print("3-member clusters on loopback; cells: median [min..max] over runs")
w = max(len(r[0]) for r in rows)
header = f"{'':{w}}" + "".join(f"  {s:>34}" for s in sides)
if len(sides) == 2:
    header += f"  {sides[0]}/{sides[1]}"
print(header)
for name, wl, get, fmt in rows:
    cols = [values(s, wl, get) for s in sides]
    line = f"{name:{w}}" + "".join(f"  {cell(c, fmt):>34}" for c in cols)
    if len(sides) == 2:
        a = [v for v in cols[0] if v is not None]
        b = [v for v in cols[1] if v is not None]
        if a and b and statistics.median(b):
            line += f"  {statistics.median(a) / statistics.median(b):.2f}x"
    print(line)
fo = [r for r in runs if r["workload"] == "failover"]
if fo:
    print()
    print("failover per run (kill -> first acked put, ms; new leader's endpoint, raft term before -> after):")
    for s in sides:
        parts = []
        for r in fo:
            if r["server"] != s:
                continue
            v = r["result"].get("failover_ms")
            res = r["result"]
            parts.append(("n/a" if v is None else f"{v:.2f}")
                         + f" ({res.get('new_leader_endpoint', '?')}, term {res.get('old_term', '?')}->{res.get('term_after', '?')})")
        print(f"  {s}: {', '.join(parts)}")
loads = sorted(float(r["loadavg_before"].split()[0]) for r in runs)
print(f"1-minute load average before the runs: {loads[0]:.2f} to {loads[-1]:.2f}")
if incomplete:
    print(f"WARNING: {len(incomplete)} runs timed out, had errors or missed keys; see {path}")
EOF
