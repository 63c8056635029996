#!/usr/bin/env bash
# The whole benchmark run behind `make bench` and `make bench-full`: Capstan against etcd
# 3.4 on this machine, then docs/BENCHMARKS.md and its plots (capstan-bench report).
#
#   scripts/bench.sh                 # the bounded run (make bench): under 15 minutes of
#                                    # measurement on 2 cores, after the release build
#   PROFILE=full scripts/bench.sh    # the large sizes too (make bench-full)
#   STAGES="store-1 fanout" scripts/bench.sh   # some stages only (the report shows what ran)
#
# Stages, in this order, each one of the scripts here (see its header for what it does)
# with its results in target/bench/<stage>.jsonl:
#   criterion  cargo bench -p capstan-bench (watch fan-out by layer, MVCC, Raft), criterion's
#              estimates in target/bench/criterion
#   store-1    compare-etcd.sh: one member each; puts at 1/64/256 clients, linearizable and
#              serializable reads, throughput during a compaction
#   fanout     compare-etcd.sh (fan-out only): watch fan-out at FANOUT_WATCHERS watchers,
#              events at FANOUT_RATE per second; memory per watcher
#   store-3    compare-etcd-cluster.sh: three members each; puts, reads, compaction, failover
#   apiserver  compare-apiserver.sh: the Kubernetes API over Capstan and over etcd, 1 and 3
#              members, 50 clients
#   scheduler  bench-scheduler.sh (throughput): pods bound per second on fake nodes
#   pods       bench-pods.sh: pod startup on hollow nodes at POD_COUNTS pods on one master,
#              then at HA_PODS pods on three (MASTERS=3: `capstan up`), memory per master;
#              then the PACED_PODS runs (creates paced below capacity)
#
# Settings (environment): PROFILE (default | full), STAGES (all), RESULTS_DIR
# (target/bench; target/bench-full with PROFILE=full), OUT (docs/BENCHMARKS.md;
# docs/BENCHMARKS-full.md), PLOTS (docs/bench; docs/bench-full), REPORT (1; 0 skips writing
# the report); the sizes come from the profile below (REPEAT, FANOUT_WATCHERS,
# FANOUT_REPEAT, FANOUT_RATE, POD_COUNTS, HA_PODS (1000), HA_POD_REPEAT (REPEAT), PACED_PODS
# (MASTERS:PODS:RATE runs of bench-pods.sh; 3:1000:400, full 1:10000:500 3:3000:400), PUT_TOTAL,
# STORE3_PUT_TOTAL, COMPACTION_HISTORY, COMPACTION_REPEAT, COMPACTION_DURATION_S,
# COMPACTION_AT_S, FAILOVER_REPEAT, API_REPEAT, ITERATIONS, CRITERION_ENV), each
# overridable.
# Other settings of the stage scripts pass through the environment. A stage that fails
# is recorded as failed and the run goes on; the exit status is then 1.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

PROFILE=${PROFILE:-default}
# `make bench-full` passes PROFILE in the environment, where the stage scripts would read
# it as their build profile (release | debug): it is this script's only.
export -n PROFILE
STAGES=${STAGES:-criterion store-1 fanout store-3 apiserver scheduler pods}
# The stage scripts read ONLY for their own purposes; it must not leak from here.
unset ONLY
# The full run has a report of its own, so that it does not replace the bounded one.
case "$PROFILE" in
  full) suffix=-full ;;
  *) suffix= ;;
esac
RESULTS_DIR=${RESULTS_DIR:-$root/target/bench$suffix}
OUT=${OUT:-$root/docs/BENCHMARKS$suffix.md}
PLOTS=${PLOTS:-$root/docs/bench$suffix}
REPORT=${REPORT:-1}

# The profiles' sizes; each can be overridden from the environment (e.g. for a smoke run:
# REPEAT=1 FANOUT_WATCHERS=100 POD_COUNTS=50 HA_PODS=50 ...).
case "$PROFILE" in
  default)
    : "${REPEAT:=3}" "${FANOUT_WATCHERS:=1000 10000 100000}" "${FANOUT_REPEAT:=2}"
    : "${POD_COUNTS:=1000}" "${CRITERION_ENV:=}" "${COMPACTION_HISTORY:=50000}" "${API_REPEAT:=2}"
    : "${COMPACTION_REPEAT:=2}" "${COMPACTION_DURATION_S:=8}" "${COMPACTION_AT_S:=3}" "${FAILOVER_REPEAT:=2}"
    : "${STORE3_PUT_TOTAL:=50000}" "${ITERATIONS:=50}"
    ;;
  full)
    : "${REPEAT:=5}" "${FANOUT_WATCHERS:=1000 10000 100000}" "${FANOUT_REPEAT:=3}"
    : "${POD_COUNTS:=1000 3000 10000}" "${CRITERION_ENV:=CAPSTAN_BENCH_FULL=1}"
    : "${COMPACTION_HISTORY:=1000000}" "${API_REPEAT:=5}"
    : "${COMPACTION_REPEAT:=5}" "${COMPACTION_DURATION_S:=30}" "${COMPACTION_AT_S:=5}" "${FAILOVER_REPEAT:=10}"
    : "${STORE3_PUT_TOTAL:=100000}" "${ITERATIONS:=100}"
    ;;
  *)
    echo "bench: PROFILE must be default or full, not $PROFILE" >&2
    exit 2
    ;;
esac
: "${PUT_TOTAL:=100000}"
# The pods stage's 3-master measurement (about 7 s a run at 1,000 pods on 2 cores).
: "${HA_PODS:=1000}" "${HA_POD_REPEAT:=$REPEAT}"
# And its paced runs, MASTERS:PODS:RATE each (RATE creates a second at most, below what
# the cluster completes: the SLO-style measure, where unpaced bursts measure a backlog).
case "$PROFILE" in
  full) : "${PACED_PODS:=1:10000:500 3:3000:400}" ;;
  *) : "${PACED_PODS:=3:1000:400}" ;;
esac
export COMPACTION_REPEAT COMPACTION_DURATION_S COMPACTION_AT_S FAILOVER_REPEAT ITERATIONS
compaction_settings="COMPACTION_HISTORY=$COMPACTION_HISTORY COMPACTION_REPEAT=$COMPACTION_REPEAT COMPACTION_DURATION_S=$COMPACTION_DURATION_S COMPACTION_AT_S=$COMPACTION_AT_S"
: "${FANOUT_RATE:=100}"

log() { echo "bench: $*" >&2; }

scripts/install-deps.sh bench
log "building the release binaries and the criterion suites (not counted in the stages' times)"
cargo build --release -p capstan -p capstan-bench
cargo bench -p capstan-bench --no-run

# A report shows one run only: results of an earlier run go (some stage scripts append).
rm -rf "$RESULTS_DIR"
mkdir -p "$RESULTS_DIR"
stages="$RESULTS_DIR/stages.tsv"
: >"$stages"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
loadavg_start=$(cut -d' ' -f1 /proc/loadavg)
failed=0

wanted() { [[ " $STAGES " == *" $1 "* ]]; }

# stage <name> <results file or -> <command...>: runs the command, records its time and
# status. The command line recorded is the one shown in the report.
stage() {
  local name=$1 shown=$2
  shift 2
  wanted "$name" || return 0
  log "stage $name: $shown"
  local t0 t1 status=ok
  t0=$(date +%s%N)
  if ! "$@"; then
    status="failed"
    failed=1
  fi
  t1=$(date +%s%N)
  printf '%s\t%s\t%s\t%s\n' "$name" "$shown" "$(((t1 - t0) / 1000000))" "$status" >>"$stages"
}

run_criterion() {
  rm -rf "$RESULTS_DIR/criterion"
  # The output too: the raft suite prints its proposals per fsync there.
  env CRITERION_HOME="$RESULTS_DIR/criterion" $CRITERION_ENV cargo bench -p capstan-bench 2>&1 \
    | tee "$RESULTS_DIR/criterion.log"
}

run_store1() {
  REPEAT=$REPEAT FANOUT=0 MEM_WATCHERS=0 PUT64_TOTAL=$PUT_TOTAL PUT256_TOTAL=$PUT_TOTAL \
    COMPACTION_HISTORY=$COMPACTION_HISTORY RESULTS="$RESULTS_DIR/store-1.jsonl" scripts/compare-etcd.sh
}

run_fanout() {
  local out="$RESULTS_DIR/fanout.jsonl" n rc=0
  : >"$out"
  for n in $FANOUT_WATCHERS; do
    KV=0 COMPACTION=0 FANOUT=1 MEM_WATCHERS=0 REPEAT=$FANOUT_REPEAT WATCHERS="$n" RATE=$FANOUT_RATE \
      RESULTS="$RESULTS_DIR/fanout-$n.jsonl" scripts/compare-etcd.sh || rc=1
    cat "$RESULTS_DIR/fanout-$n.jsonl" >>"$out" 2>/dev/null || true
  done
  return $rc
}

run_store3() {
  BUILD=0 REPEAT=$REPEAT PUT64_TOTAL=$STORE3_PUT_TOTAL PUT256_TOTAL=$STORE3_PUT_TOTAL \
    COMPACTION_HISTORY=$COMPACTION_HISTORY RESULTS="$RESULTS_DIR/store-3.jsonl" scripts/compare-etcd-cluster.sh
}

run_apiserver() {
  BUILD=0 REPEAT=$API_REPEAT RESULTS="$RESULTS_DIR/apiserver.jsonl" scripts/compare-apiserver.sh
}

run_scheduler() {
  BUILD=0 ONLY=throughput REPEAT=$REPEAT RESULTS="$RESULTS_DIR/scheduler.jsonl" scripts/bench-scheduler.sh
}

run_pods() {
  local out="$RESULTS_DIR/pods.jsonl" n rc=0
  : >"$out"
  for n in $POD_COUNTS; do
    BUILD=0 REPEAT=$REPEAT PODS="$n" RESULTS="$RESULTS_DIR/pods-$n.jsonl" scripts/bench-pods.sh || rc=1
    cat "$RESULTS_DIR/pods-$n.jsonl" >>"$out" 2>/dev/null || true
  done
  BUILD=0 MASTERS=3 REPEAT=$HA_POD_REPEAT PODS="$HA_PODS" RESULTS="$RESULTS_DIR/pods-3m-$HA_PODS.jsonl" \
    scripts/bench-pods.sh || rc=1
  cat "$RESULTS_DIR/pods-3m-$HA_PODS.jsonl" >>"$out" 2>/dev/null || true
  local spec masters pods rate
  for spec in $PACED_PODS; do
    IFS=: read -r masters pods rate <<<"$spec"
    BUILD=0 MASTERS="$masters" RATE="$rate" REPEAT=$HA_POD_REPEAT PODS="$pods" \
      RESULTS="$RESULTS_DIR/pods-paced-$masters-$pods-$rate.jsonl" scripts/bench-pods.sh || rc=1
    cat "$RESULTS_DIR/pods-paced-$masters-$pods-$rate.jsonl" >>"$out" 2>/dev/null || true
  done
  return $rc
}

stage criterion "$CRITERION_ENV${CRITERION_ENV:+ }cargo bench -p capstan-bench" run_criterion
stage store-1 "REPEAT=$REPEAT FANOUT=0 MEM_WATCHERS=0 PUT64_TOTAL=$PUT_TOTAL PUT256_TOTAL=$PUT_TOTAL $compaction_settings scripts/compare-etcd.sh" run_store1
stage fanout "KV=0 COMPACTION=0 REPEAT=$FANOUT_REPEAT WATCHERS=<$FANOUT_WATCHERS> RATE=$FANOUT_RATE scripts/compare-etcd.sh" run_fanout
stage store-3 "REPEAT=$REPEAT PUT64_TOTAL=$STORE3_PUT_TOTAL PUT256_TOTAL=$STORE3_PUT_TOTAL FAILOVER_REPEAT=$FAILOVER_REPEAT $compaction_settings scripts/compare-etcd-cluster.sh" run_store3
stage apiserver "REPEAT=$API_REPEAT ITERATIONS=$ITERATIONS scripts/compare-apiserver.sh" run_apiserver
stage scheduler "ONLY=throughput REPEAT=$REPEAT scripts/bench-scheduler.sh" run_scheduler
stage pods "REPEAT=$REPEAT PODS=<$POD_COUNTS> scripts/bench-pods.sh; MASTERS=3 REPEAT=$HA_POD_REPEAT PODS=$HA_PODS scripts/bench-pods.sh; paced (MASTERS:PODS:RATE, REPEAT=$HA_POD_REPEAT) <$PACED_PODS>" run_pods

# run.json: how this run was made, for the report's header.
python3 - "$RESULTS_DIR/run.json" "$stages" <<EOF
import json, sys, subprocess

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "?"

out, stages_path = sys.argv[1:3]
stages = []
for line in open(stages_path):
    name, command, ms, status = line.rstrip("\n").split("\t")
    stages.append({"name": name, "command": command, "seconds": int(ms) / 1000, "status": status})
dirty = sh("git -C '$root' status --porcelain --untracked-files=no -- store apiserver agents proto src bench")
run = {
    "profile": "$PROFILE",
    "started": "$started",
    "commit": sh("git -C '$root' rev-parse --short HEAD") + (" + uncommitted changes" if dirty else ""),
    "loadavg_start": "$loadavg_start",
    "loadavg_end": sh("cut -d' ' -f1 /proc/loadavg"),
    "machine": {
        "cores": int(sh("nproc") or 0),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'"),
        "memory": sh("free -h | awk '/^Mem:/ {print \$2}'") + " total",
        "kernel": sh("uname -r"),
        "disk": sh("findmnt -no SOURCE,FSTYPE -T '$root/target'"),
        "rustc": sh("rustc --version"),
        "etcd": sh("/usr/bin/etcd --version | head -1"),
    },
    "stages": stages,
}
json.dump(run, open(out, "w"), indent=1)
EOF

if [ "$REPORT" = 1 ]; then
  "$root/target/release/capstan-bench" report --results "$RESULTS_DIR" --out "$OUT" --plots "$PLOTS"
fi
[ "$failed" = 0 ] || { log "some stages failed: see $stages"; exit 1; }
