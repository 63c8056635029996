#!/usr/bin/env bash
# Capstan's Kubernetes API under create/get/update/list load (capstan-bench kube), over
# four storages, in one run on this machine:
#   capstan-1  one Capstan store member, the API in the same process
#   etcd-1     one etcd (Debian etcd-server), `capstan apiserver` over it
#   capstan-3  three Capstan members, the load on n1's API (in n1's process)
#   etcd-3     three etcd members, `capstan apiserver` over all three
#
#   scripts/compare-apiserver.sh
#   ONLY="capstan-3 etcd-3" REPEAT=3 scripts/compare-apiserver.sh
#
# Settings (environment): CLIENTS (50), ITERATIONS (100 rounds per client of create, get,
# update, list), REPEAT (1), ONLY (all four), BUILD (1; 0 uses the binaries built),
# BASE_PORT (25400; the setups use BASE_PORT..BASE_PORT+29), ETCD (/usr/bin/etcd),
# RESULTS (target/compare-apiserver/results.jsonl: every run as one JSON line).
# Every server listens on 127.0.0.1 only and all are stopped when the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

CLIENTS=${CLIENTS:-50}
ITERATIONS=${ITERATIONS:-100}
REPEAT=${REPEAT:-1}
ONLY=${ONLY:-capstan-1 etcd-1 capstan-3 etcd-3}
BUILD=${BUILD:-1}
BASE_PORT=${BASE_PORT:-25400}
ETCD=${ETCD:-/usr/bin/etcd}
out_dir="$root/target/compare-apiserver"
RESULTS=${RESULTS:-$out_dir/results.jsonl}

log() { echo "compare-apiserver: $*" >&2; }
die() { log "$*"; exit 1; }

if [ "$BUILD" = 1 ]; then
  log "building capstan and capstan-bench (release)"
  cargo build --release -p capstan -p capstan-bench
fi
capstan="$root/target/release/capstan"
bench="$root/target/release/capstan-bench"
[ -x "$capstan" ] && [ -x "$bench" ] || die "build first (BUILD=1)"
[ -x "$ETCD" ] || die "$ETCD is missing: scripts/install-deps.sh bench"
mkdir -p "$out_dir"
work=$(mktemp -d "${TMPDIR:-/tmp}/capstan-compare-api.XXXXXX")
log "data in $work; results in $RESULTS"

pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT

wait_http() { # <url> <what>
  local i
  for i in $(seq 600); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$2 did not answer $1 within 60 s (logs in $work)"
}

wait_etcd() { # <host:port>
  local i
  for i in $(seq 600); do
    ETCDCTL_API=3 etcdctl --endpoints "$1" endpoint health >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "etcd at $1 is not healthy after 60 s"
}

initial_cluster() { # <peer base port> <members>
  local i out=""
  for i in $(seq "$2"); do out+="${out:+,}n$i=http://127.0.0.1:$(($1 + i - 1))"; done
  echo "$out"
}

# start <setup>: starts it; sets $api to the URL to load.
start() {
  local setup=$1 dir="$work/$1-$2" n=${1##*-} i
  local client=$BASE_PORT peer=$((BASE_PORT + 10)) apiport=$((BASE_PORT + 20))
  mkdir -p "$dir"
  case $setup in
    capstan-*)
      for i in $(seq "$n"); do
        local extra=()
        [ "$i" = 1 ] && extra=(--apiserver-listen "127.0.0.1:$apiport" --no-controller-manager)
        local peers=()
        [ "$n" -gt 1 ] && peers=(--listen-peer "127.0.0.1:$((peer + i - 1))" \
          --initial-cluster "$(initial_cluster "$peer" "$n")")
        "$capstan" store --insecure --name "n$i" --data-dir "$dir/n$i" \
          --listen-client "127.0.0.1:$((client + i - 1))" "${peers[@]}" "${extra[@]}" \
          >"$dir/n$i.out" 2>"$dir/n$i.log" &
        pids+=($!)
      done
      ;;
    etcd-*)
      local eps=""
      for i in $(seq "$n"); do
        "$ETCD" --name "n$i" --data-dir "$dir/n$i" \
          --listen-client-urls "http://127.0.0.1:$((client + i - 1))" \
          --advertise-client-urls "http://127.0.0.1:$((client + i - 1))" \
          --listen-peer-urls "http://127.0.0.1:$((peer + i - 1))" \
          --initial-advertise-peer-urls "http://127.0.0.1:$((peer + i - 1))" \
          --initial-cluster "$(initial_cluster "$peer" "$n")" \
          --initial-cluster-state new --initial-cluster-token "api-$2" \
          >"$dir/n$i.log" 2>&1 &
        pids+=($!)
        eps+="${eps:+,}http://127.0.0.1:$((client + i - 1))"
      done
      for i in $(seq "$n"); do wait_etcd "127.0.0.1:$((client + i - 1))"; done
      "$capstan" apiserver --insecure --listen "127.0.0.1:$apiport" --etcd-servers "$eps" \
        >"$dir/apiserver.out" 2>"$dir/apiserver.log" &
      pids+=($!)
      ;;
    *) die "unknown setup $setup" ;;
  esac
  api="http://127.0.0.1:$apiport"
  wait_http "$api/readyz" "$setup's API"
  # Ready means serving; wait until a write goes through (a cluster has a leader).
  for i in $(seq 600); do
    curl -fsS "$api/api/v1/namespaces/default" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$setup's API has no default namespace after 60 s"
}

for r in $(seq "$REPEAT"); do
  for setup in $ONLY; do
    log "run $r: $setup"
    start "$setup" "$r"
    line=$("$bench" kube --server "$api" --clients "$CLIENTS" --iterations "$ITERATIONS" --json) ||
      die "capstan-bench kube failed on $setup"
    echo "{\"setup\":\"$setup\",\"run\":$r,\"capstan\":\"$(git rev-parse --short HEAD)\",\"result\":$line}" >>"$RESULTS"
    stop_all
  done
done

# The table: medians over this run's lines.
python3 - "$RESULTS" "$REPEAT" "$ONLY" <<'EOF'
import json, statistics, sys
path, repeat, only = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
lines = [json.loads(l) for l in open(path)][-repeat * len(only):]
print(f"{'setup':<11} {'req/s':>9}  " + "  ".join(f"{v+' p50':>11} {v+' p99':>11}" for v in ("create", "get", "update", "list")) + "  errors")
for setup in only:
    runs = [l["result"] for l in lines if l["setup"] == setup]
    if not runs:
        continue
    med = lambda f: statistics.median(f(r) for r in runs)
    cells = [f"{med(lambda r: r['requests_per_s']):>9,.0f}"]
    for v in ("create", "get", "update", "list"):
        cells.append(f"{med(lambda r: r[v]['p50_us']) / 1000:>8.2f} ms {med(lambda r: r[v]['p99_us']) / 1000:>8.2f} ms")
    print(f"{setup:<11} " + "  ".join(cells) + f"  {sum(r['errors'] for r in runs)}")
print(f"cells: median over {repeat} run(s); {runs[0]['clients']} clients x {runs[0]['iterations']} rounds; load average now: {open('/proc/loadavg').read().split()[0]}")
EOF
