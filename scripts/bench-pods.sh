#!/usr/bin/env bash
# Pod startup latency (capstan-bench pods) on a cluster of real processes, freshly started
# for every run:
#   MASTERS=1  a single-member store serving the Kubernetes API with the controllers and
#              the scheduler in process (`capstan store --apiserver-listen ... --scheduler`)
#   MASTERS=3 (or 5, 7, 9)  a real HA control plane: `capstan up --masters MASTERS
#              --nodes 0 --restart false` (each master its own process: store member, API,
#              controller-manager and scheduler replicas, on 127.LOOPBACK_NET.1.<i>); the
#              benchmark reaches the API through up's forwarder on 127.0.0.1 (connections
#              round-robin over the masters), the agent is given every master's URL
# and, on that control plane,
#   REAL=1   one real node: `capstan agent --node-name real-0`, each container a local
#            process; PODS defaults to 50
#   REAL=0   hollow nodes: one `capstan agent --runtime simulated --nodes HOLLOW_NODES`,
#            containers simulated; PODS defaults to 1,000 (the default)
# Each run creates PODS bare pods (no nodeName: the scheduler spreads them) with
# CONCURRENCY creates in flight and times, per pod, create sent -> PodScheduled seen ->
# Running and Ready seen in a watch; then deletes them and waits for them to go. The RSS
# of every master (`store` with MASTERS=1; `master-1` .. `master-N`, from up's m<i>.pid
# files, otherwise) and of the agent is read twice: with every pod running (by
# capstan-bench) and at the end, after the deletion (here, from /proc/<pid>/status VmRSS).
# A master that exits during a run fails it (up does not restart it: --restart false).
#
#   scripts/bench-pods.sh                                   # hollow, release build
#   MASTERS=3 scripts/bench-pods.sh                         # hollow, 3 masters
#   REAL=1 scripts/bench-pods.sh                            # one real node
#   BUILD=0 PROFILE=debug REAL=1 PODS=5 REPEAT=1 scripts/bench-pods.sh   # a smoke test
#
# Settings (environment): MASTERS (1; else 3, 5, 7 or 9), REAL (0), PODS (50 real, 1000
# hollow; at most 100000), HOLLOW_NODES (100), CONCURRENCY (16 creates in flight), RATE
# (creates started per second at most, evenly spaced, as Kubernetes' SLO tests pace them;
# 0: unpaced), REPEAT (3), MAX_PODS (the real node's --max-pods; 110, or PODS when
# larger), COMMAND (the container's command, a JSON array; '["sh","-c","exec sleep
# 1000000"]'), TIMEOUT_S (600: each run, cluster start to every pod ready), PROFILE
# (release; debug for checks), BUILD (1: build PROFILE first; 0 uses the binaries there),
# CAPSTAN and BENCH (the binaries; target/PROFILE/... by default), BASE_PORT (25700; uses
# BASE_PORT..BASE_PORT+1: the store's client port and its API, or with MASTERS > 1 up's
# forwarder to the masters' APIs on BASE_PORT+1), LOOPBACK_NET (57; MASTERS > 1 only:
# up's --loopback-net, the masters on 127.57.1.<i> ports 2379, 2380, 6443, apart from
# up's default 1, tests/ha.rs' 9 and 10, the chaos tool's 40 and bench-ha.sh's 42),
# RESULTS (target/bench-pods/results.jsonl: every run as one JSON line, with "masters"),
# KEEP_DATA (0; data and logs are kept anyway when the script fails). Servers listen on
# loopback only; every process started here is stopped when the script exits (up stops
# its masters; a master it left running is stopped by its recorded pid), and containers a
# stopped agent left running (containers outlive their agent by design) are killed by
# their recorded pid and start time.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

MASTERS=${MASTERS:-1}
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
LOOPBACK_NET=${LOOPBACK_NET:-57}
KEEP_DATA=${KEEP_DATA:-0}
out_dir="$root/target/bench-pods"
RESULTS=${RESULTS:-$out_dir/results.jsonl}
READY_TIMEOUT_S=60
DELETE_TIMEOUT_S=300
# `capstan up` gives each master 15 s after SIGTERM before SIGKILL; this is its own limit.
UP_STOP_TIMEOUT_S=40

log() { echo "bench-pods: $*" >&2; }
die() { log "$*"; exit 1; }

case $MASTERS in
  1 | 3 | 5 | 7 | 9) ;;
  *) die "MASTERS must be 1, 3, 5, 7 or 9" ;;
esac
[ "$MASTERS" = 1 ] || { [ "$LOOPBACK_NET" -ge 1 ] && [ "$LOOPBACK_NET" -le 63 ]; } 2>/dev/null ||
  die "LOOPBACK_NET must be 1 to 63"
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
if [ "$MASTERS" != 1 ]; then
  for i in $(seq "$MASTERS"); do
    for p in 2379 2380 6443; do
      ! (exec 3<>"/dev/tcp/127.$LOOPBACK_NET.1.$i/$p") 2>/dev/null ||
        die "127.$LOOPBACK_NET.1.$i:$p is already in use (another cluster on that loopback net?); set LOOPBACK_NET"
    done
  done
fi

mkdir -p "$out_dir" "$(dirname "$RESULTS")"
work=$(mktemp -d "${TMPDIR:-/tmp}/capstan-bench-pods.XXXXXX")
log "data and logs in $work; results in $RESULTS"
api="http://127.0.0.1:$((BASE_PORT + 1))"
store_pid=""
up_pid=""
up_dir=""
master_pids=()
agent_pid=""
node_dir=""

# is_master PID: PID is still one of the masters this script's `capstan up` started (its
# command line names our data directory), not a reused pid.
is_master() {
  local cmdline
  [ -n "$up_dir" ] && cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
  [[ $cmdline == *" master --name m"* && $cmdline == *" --data-dir $up_dir/m"* ]]
}

# stop_up: SIGTERM to `capstan up`, which stops its masters (each SIGTERM, then SIGKILL
# after 15 s); past UP_STOP_TIMEOUT_S, SIGKILL to up, and to every master still running.
stop_up() {
  [ -n "$up_pid" ] || return 0
  stop_pid "$up_pid" "$UP_STOP_TIMEOUT_S"
  up_pid=""
  local p
  for p in "${master_pids[@]}"; do
    if is_master "$p"; then
      log "master pid $p outlived capstan up; stopping it"
      stop_pid "$p"
    fi
  done
  master_pids=()
}

stop_cluster() {
  stop_pid "$agent_pid"
  agent_pid=""
  kill_leftover_containers "$node_dir"
  stop_pid "$store_pid"
  store_pid=""
  stop_up
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

# start_masters <dir>: `capstan up --masters MASTERS --nodes 0` in <dir>/up, until it says
# "capstan up ready" (every master printed its ready line) and its forwarder answers; then
# master_pids holds each master's pid (m<i>.pid, which up writes when it starts m<i> and
# removes when it exits), checked to be up's child running `capstan master --name m<i>`.
start_masters() {
  local dir=$1 i pid
  up_dir="$dir/up"
  "$capstan" up --insecure --masters "$MASTERS" --nodes 0 --data-dir "$up_dir" --api-listen "127.0.0.1:$((BASE_PORT + 1))" \
    --loopback-net "$LOOPBACK_NET" --restart false >"$dir/up.out" 2>"$dir/up.log" &
  up_pid=$!
  # up's deadline for the masters is 180 s; READY_TIMEOUT_S is this script's. up prints its
  # progress to up.out, its errors (why it exited) to up.log.
  wait_ready "capstan up" "$up_pid" "$dir/up.log" grep -q "^capstan up ready" "$dir/up.out"
  master_pids=()
  for i in $(seq "$MASTERS"); do
    pid=$(cat "$up_dir/m$i.pid" 2>/dev/null) || die "no $up_dir/m$i.pid: master m$i is not running (see $up_dir/m$i.log)"
    [ "$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null)" = "$up_pid" ] && is_master "$pid" ||
      die "pid $pid in $up_dir/m$i.pid is not capstan up's master m$i"
    master_pids+=("$pid")
  done
  wait_ready "the API through capstan up" "$up_pid" "$dir/up.log" curl -fsS "$api/api/v1/namespaces/default"
}

# start_cluster <dir>: a fresh control plane (a store with the API, controllers and
# scheduler, or MASTERS masters), and the agent.
start_cluster() {
  local dir=$1 masters_url=$api i
  mkdir -p "$dir"
  if [ "$MASTERS" = 1 ]; then
    "$capstan" store --name n1 --data-dir "$dir/store" --listen-client "127.0.0.1:$BASE_PORT" \
      --apiserver-listen "127.0.0.1:$((BASE_PORT + 1))" --insecure --scheduler \
      >"$dir/store.out" 2>"$dir/store.log" &
    store_pid=$!
    wait_ready store "$store_pid" "$dir/store.log" grep -q "capstan store ready on" "$dir/store.out"
    wait_ready "the store's API" "$store_pid" "$dir/store.log" curl -fsS "$api/api/v1/namespaces/default"
  else
    start_masters "$dir"
    # As up gives its own nodes: every master's API, the agent fails over between them.
    masters_url=$(for i in $(seq "$MASTERS"); do printf 'http://127.%s.1.%s:6443\n' "$LOOPBACK_NET" "$i"; done | paste -sd,)
  fi
  node_dir="$dir/node"
  if [ "$REAL" = 1 ]; then
    "$capstan" agent --master "$masters_url" --node-name real-0 --root-dir "$node_dir" --port 0 \
      --max-pods "$MAX_PODS" >"$dir/agent.out" 2>"$dir/agent.log" &
  else
    "$capstan" agent --master "$masters_url" --runtime simulated --nodes "$HOLLOW_NODES" \
      --node-name hollow --root-dir "$node_dir" --port 0 \
      >"$dir/agent.out" 2>"$dir/agent.log" &
  fi
  agent_pid=$!
  wait_ready agent "$agent_pid" "$dir/agent.log" grep -q "capstan agent ready" "$dir/agent.out"
}

rss_kb() {
  local kb
  kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null) || true
  echo "${kb:-null}"
}
# The processes whose RSS is read: name=pid, one a line.
rss_procs() {
  local i
  if [ "$MASTERS" = 1 ]; then
    echo "store=$store_pid"
  else
    for i in $(seq "$MASTERS"); do echo "master-$i=${master_pids[$((i - 1))]}"; done
  fi
  echo "agent=$agent_pid"
}

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
    log "run $r: $PODS pods on one real node, $MASTERS master(s), $CONCURRENCY creates in flight (RATE=$RATE)"
  else
    log "run $r: $PODS pods on $HOLLOW_NODES hollow nodes, $MASTERS master(s), $CONCURRENCY creates in flight (RATE=$RATE)"
  fi
  start_cluster "$dir"
  before=$(load)
  status=0
  rss_args=()
  for p in $(rss_procs); do rss_args+=(--rss "$p"); done
  line=$(timeout $((TIMEOUT_S + DELETE_TIMEOUT_S + 60)) "$bench" pods --api "$api" --pods "$PODS" \
    --concurrency "$CONCURRENCY" --creates-per-second "$RATE" --min-ready-nodes "$min_nodes" --command "$COMMAND" \
    "${rss_args[@]}" --timeout-s "$TIMEOUT_S" --timeline "$dir/timeline.csv" \
    --delete-timeout-s "$DELETE_TIMEOUT_S" --json 2>"$dir/bench.err") || status=$?
  rss_end=$(for p in $(rss_procs); do printf '"%s":%s\n' "${p%%=*}" "$(rss_kb "${p#*=}")"; done | paste -sd,)
  rss_end="{$rss_end}"
  gone=""
  for p in "${master_pids[@]}"; do is_master "$p" || gone="$gone $p"; done
  if [ -n "$line" ]; then
    echo "{\"bench\":\"pods\",\"mode\":\"$mode\",\"masters\":$MASTERS,\"run\":$r,\"capstan\":\"$commit\",\"profile\":\"$PROFILE\",\"hollow_nodes\":$([ "$REAL" = 1 ] && echo 0 || echo "$HOLLOW_NODES"),\"load_before\":$before,\"rss_end_kb\":$rss_end,\"result\":$line}" >>"$RESULTS"
  fi
  if [ "$status" != 0 ]; then
    cat "$dir/bench.err" >&2
    die "capstan-bench pods failed (exit $status; logs in $dir)"
  fi
  [ -z "$gone" ] || die "master pid(s)$gone exited during the run (see $dir/up.out and $up_dir/m*.log)"
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
masters = l0.get("masters", 1)
where += ", one master (capstan store)" if masters == 1 else f", {masters} masters (capstan up)"
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
for proc in l0["rss_end_kb"]:
    print(f"  {'RSS ' + proc + ', pods running':<40} {cell([r['rss_bytes'].get(proc) for r in rs], mib)}")
    print(f"  {'RSS ' + proc + ', at the end':<40} "
          f"{cell([l['rss_end_kb'].get(proc) * 1024 if l['rss_end_kb'].get(proc) else None for l in lines], mib)}")
if masters > 1:
    per_run = [[r["rss_bytes"].get(f"master-{i}") for i in range(1, masters + 1)] for r in rs]
    per_run = [[v for v in m if v is not None] for m in per_run]
    print(f"  {'RSS largest master, pods running':<40} {cell([max(m) if m else None for m in per_run], mib)}")
    print(f"  {'RSS mean per master, pods running':<40} "
          f"{cell([sum(m) / len(m) if m else None for m in per_run], mib)}")
if any(r["relists"] for r in rs):
    print("  note: the watch listed again in some runs (coarser times); see", path)
print(f"1-minute load average before the runs: " + ", ".join(str(l["load_before"]) for l in lines))
EOF
