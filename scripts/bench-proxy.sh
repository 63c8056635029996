#!/usr/bin/env bash
# The node proxy's overhead: HTTP load (wrk) against pods directly and through their
# Service's ClusterIP (the node proxy inside the store process), side by side.
#
# One cluster of real processes: a single-member store serving the Kubernetes API with the
# controllers, the scheduler and one node in process (`capstan store --apiserver-listen ...
# --scheduler --node-name n1`: node agent, node proxy, cluster DNS). A Deployment runs
# `capstan-bench http-echo` (hyper, `200 ok` to every request; a fast pod, so that the
# figures are the path's and not the server's) on each pod's address, port 8080; a
# ClusterIP Service `echo` (port 8080) selects them. For REPLICAS in 1 and 2:
#   direct  wrk against the pod's address. With 2 replicas, one wrk per pod at once, the
#           threads and connections split between them: requests/s are summed, and the
#           latency percentiles are the larger of the two (a conservative merge)
#   proxy   wrk against the ClusterIP: the node proxy spreads the connections over the pods
# Each round measures both, in alternating order (ROUND 1 direct first, round 2 proxy
# first, ...), REPEAT rounds, after one discarded warm-up run of each. The table shows the
# median [min..max] over rounds and the proxy/direct ratio of the medians.
#
#   scripts/bench-proxy.sh
#   BUILD=0 PROFILE=debug DURATION=2 REPEAT=1 scripts/bench-proxy.sh   # a smoke test
#
# Settings (environment): DURATION (10 s per wrk run), CONNECTIONS (50), THREADS (2, wrk
# threads), REPEAT (3), REPLICAS ("1 2"), WARMUP (2 s; 0 skips), ECHO_THREADS (the echo
# server's tokio workers; default one per core), PROFILE (release; debug for checks), BUILD
# (1: build PROFILE first; 0 uses the binaries there), CAPSTAN and BENCH (the binaries;
# target/PROFILE/... by default), BASE_PORT (25800; uses BASE_PORT..BASE_PORT+1), RESULTS
# (target/bench-proxy/results.jsonl: every wrk run as one JSON line), KEEP_DATA (0; data
# and logs are kept anyway when the script fails). wrk is installed by
# `scripts/install-deps.sh bench` when missing. Servers listen on 127.0.0.1 (and the
# cluster's loopback pod and Service addresses) only; every process started here is
# stopped when the script exits, the pods' processes included.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}
REPEAT=${REPEAT:-3}
REPLICAS=${REPLICAS:-1 2}
WARMUP=${WARMUP:-2}
ECHO_THREADS=${ECHO_THREADS:-}
PROFILE=${PROFILE:-release}
BUILD=${BUILD:-1}
BASE_PORT=${BASE_PORT:-25800}
KEEP_DATA=${KEEP_DATA:-0}
out_dir="$root/target/bench-proxy"
RESULTS=${RESULTS:-$out_dir/results.jsonl}
READY_TIMEOUT_S=120
NS=proxy-bench
PORT=8080

log() { echo "bench-proxy: $*" >&2; }
die() { log "$*"; exit 1; }

case $PROFILE in
  release) profile_flag=(--release) ;;
  debug) profile_flag=() ;;
  *) die "PROFILE must be release or debug" ;;
esac
for n in "$DURATION" "$CONNECTIONS" "$THREADS" "$REPEAT"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "DURATION, CONNECTIONS, THREADS and REPEAT must be positive integers"
done
[ "$CONNECTIONS" -ge "$THREADS" ] || die "wrk needs CONNECTIONS >= THREADS"
for n in $REPLICAS; do
  [ "$n" = 1 ] || [ "$n" = 2 ] || die "REPLICAS may list 1 and 2"
done
command -v wrk >/dev/null || scripts/install-deps.sh bench
command -v wrk >/dev/null || die "wrk is missing (scripts/install-deps.sh bench installs it)"
command -v curl >/dev/null || die "curl is needed to talk to the API"
command -v python3 >/dev/null || die "python3 is needed to read the answers and tabulate the results"
if [ "$BUILD" = 1 ]; then
  log "building capstan and capstan-bench ($PROFILE)"
  cargo build "${profile_flag[@]}" -p capstan -p capstan-bench
fi
capstan=${CAPSTAN:-$root/target/$PROFILE/capstan}
bench=${BENCH:-$root/target/$PROFILE/capstan-bench}
[ -x "$capstan" ] && [ -x "$bench" ] || die "missing $capstan or $bench (BUILD=1, or set CAPSTAN and BENCH)"
# The pods run it from wherever the agent's working directory is.
bench=$(realpath "$bench")

# shellcheck source=scripts/common.sh
source "$root/scripts/common.sh"
for p in "$BASE_PORT" "$((BASE_PORT + 1))"; do
  port_free "$p" || die "127.0.0.1:$p is already in use; set BASE_PORT"
done

mkdir -p "$out_dir" "$(dirname "$RESULTS")"
work=$(mktemp -d "${TMPDIR:-/tmp}/capstan-bench-proxy.XXXXXX")
log "data and logs in $work; results in $RESULTS"
api="http://127.0.0.1:$((BASE_PORT + 1))"
store_pid=""

cleanup() {
  local rc=$?
  stop_pid "$store_pid"
  store_pid=""
  kill_leftover_containers "$work/store/node"
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

# Reads the cluster's state through the API: q <what> [args].
cat >"$work/q.py" <<'EOF'
import json, sys, urllib.request
api, what, args = sys.argv[1], sys.argv[2], sys.argv[3:]
def get(path):
    with urllib.request.urlopen(api + path, timeout=10) as r:
        return json.load(r)
def ready(obj):
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in obj.get("status", {}).get("conditions", []))
if what == "node-ready":          # <node>: exit 0 once Ready
    sys.exit(0 if ready(get(f"/api/v1/nodes/{args[0]}")) else 1)
elif what == "ready-pod-ips":     # <ns> <label selector> <count>: the IPs, once that many are ready
    pods = get(f"/api/v1/namespaces/{args[0]}/pods?labelSelector={args[1]}")["items"]
    ips = sorted(p["status"]["podIP"] for p in pods
                 if ready(p) and p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp"))
    if len(ips) != int(args[2]) or len(pods) != int(args[2]):
        sys.exit(1)
    print(" ".join(ips))
elif what == "cluster-ip":        # <ns> <service>
    print(get(f"/api/v1/namespaces/{args[0]}/services/{args[1]}")["spec"]["clusterIP"])
elif what == "ready-endpoints":   # <ns> <service> <count>: exit 0 once exactly that many are ready
    slices = get(f"/apis/discovery.k8s.io/v1/namespaces/{args[0]}/endpointslices"
                 f"?labelSelector=kubernetes.io%2Fservice-name%3D{args[1]}")["items"]
    n = sum(1 for s in slices for e in s.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready", True))
    sys.exit(0 if n == int(args[2]) else 1)
else:
    sys.exit(f"q.py: unknown query {what}")
EOF
q() { python3 "$work/q.py" "$api" "$@"; }

# wait_for WHAT COMMAND...: wait_ready (common.sh) while the store runs.
wait_for() {
  local what=$1
  shift
  wait_ready "$what" "$store_pid" "$work/store.log" "$@"
}

# api_send <method> <path> <JSON body>: must succeed.
api_send() {
  local out
  out=$(curl -sS -X "$1" -H 'content-type: application/json' --data-binary "$3" -w '\n%{http_code}' "$api$2") ||
    die "$1 $2: curl failed"
  case ${out##*$'\n'} in
    2??) ;;
    *) die "$1 $2: ${out%$'\n'*}" ;;
  esac
}
api_patch() {
  curl -fsS -X PATCH -H 'content-type: application/merge-patch+json' --data-binary "$2" "$api$1" >/dev/null ||
    die "PATCH $1 failed"
}

"$capstan" store --name n1 --data-dir "$work/store" --listen-client "127.0.0.1:$BASE_PORT" \
  --apiserver-listen "127.0.0.1:$((BASE_PORT + 1))" --insecure --scheduler --node-name n1 --agent-port 0 \
  --dns-listen 127.0.0.1:0 >"$work/store.out" 2>"$work/store.log" &
store_pid=$!
wait_for "the store" grep -q "capstan store ready on" "$work/store.out"
wait_for "the API" curl -fsS "$api/api/v1/namespaces/default"
wait_for "node n1 Ready" q node-ready n1

echo_args=()
[ -n "$ECHO_THREADS" ] && echo_args=(--threads "$ECHO_THREADS")
command_json=$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' \
  "$bench" "${echo_args[@]}" http-echo --listen "\$(POD_IP):$PORT")
api_send POST /api/v1/namespaces "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$NS\"}}"
first_replicas=${REPLICAS%% *}
api_send POST "/apis/apps/v1/namespaces/$NS/deployments" "$(cat <<EOF
{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo"},
 "spec": {"replicas": $first_replicas, "selector": {"matchLabels": {"app": "echo"}},
  "template": {"metadata": {"labels": {"app": "echo"}},
   "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
     "name": "echo", "image": "capstan.dev/http-echo:1", "command": $command_json,
     "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
     "ports": [{"name": "http", "containerPort": $PORT}],
     "readinessProbe": {"httpGet": {"path": "/", "port": $PORT}, "periodSeconds": 1}}]}}}}
EOF
)"
api_send POST "/api/v1/namespaces/$NS/services" "$(cat <<EOF
{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
 "spec": {"type": "ClusterIP", "selector": {"app": "echo"}, "ports": [{"port": $PORT, "targetPort": "http"}]}}
EOF
)"
cluster_ip=$(q cluster-ip "$NS" echo)
[ -n "$cluster_ip" ] || die "the Service got no ClusterIP"

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "memory: $(free -h | awk '/^Mem:/ {print $2}') total"
  echo "capstan: $commit$(git diff --quiet HEAD -- src agents apiserver store 2>/dev/null || echo '+uncommitted'), $PROFILE build"
  echo "wrk: $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), ${DURATION}s runs, -t $THREADS -c $CONNECTIONS"
} >"$work/machine.txt"

# wrk_run <file> <threads> <connections> <seconds> <url>: one wrk run, its output in <file>.
wrk_run() {
  timeout $(($4 + 60)) wrk -t "$2" -c "$3" -d "${4}s" --latency "$5" >"$1" 2>&1 ||
    { cat "$1" >&2; die "wrk failed against $5"; }
}

# measure <replicas> <target> <round> <seconds> [record]: one measurement, recorded as a
# JSON line when the fifth argument is given.
measure() {
  local replicas=$1 target=$2 round=$3 secs=$4 record=${5:-}
  local base="$work/wrk-$replicas-$target-$round" files=() ip i=0 load
  load=$(cut -d' ' -f1 /proc/loadavg)
  if [ "$target" = proxy ]; then
    wrk_run "$base.txt" "$THREADS" "$CONNECTIONS" "$secs" "http://$cluster_ip:$PORT/"
    files=("$base.txt")
  else
    local n=${#pod_ips[@]} pids=()
    local t=$(((THREADS + n - 1) / n)) c=$((CONNECTIONS / n))
    [ "$c" -ge "$t" ] || c=$t
    for ip in "${pod_ips[@]}"; do
      wrk_run "$base-$i.txt" "$t" "$c" "$secs" "http://$ip:$PORT/" &
      pids+=($!)
      files+=("$base-$i.txt")
      i=$((i + 1))
    done
    for p in "${pids[@]}"; do wait "$p" || die "wrk failed (outputs in $work)"; done
  fi
  [ -n "$record" ] || return 0
  COMMIT=$commit PROFILE=$PROFILE SECS=$secs THREADS=$THREADS CONNECTIONS=$CONNECTIONS \
    python3 - "$replicas" "$target" "$round" "$load" "${files[@]}" >>"$RESULTS" <<'EOF'
import json, os, re, sys
replicas, target, rnd, load, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
UNITS = {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
def duration_us(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not m:
        raise SystemExit(f"bench-proxy: cannot read the wrk duration {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]
runs = []
for path in files:
    out = open(path).read()
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", out, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and p50 and p99):
        raise SystemExit(f"bench-proxy: cannot read the wrk output in {path}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    runs.append({"rps": float(rps.group(1)), "p50_us": duration_us(p50.group(1)),
                 "p99_us": duration_us(p99.group(1)), "errors": errors + (int(non2xx.group(1)) if non2xx else 0)})
print(json.dumps({
    "bench": "proxy", "capstan": os.environ["COMMIT"], "profile": os.environ["PROFILE"],
    "seconds": int(os.environ["SECS"]), "threads": int(os.environ["THREADS"]),
    "connections": int(os.environ["CONNECTIONS"]), "replicas": int(replicas), "target": target, "round": int(rnd), "load_before": float(load),
    "wrk_processes": len(runs), "requests_per_s": sum(r["rps"] for r in runs),
    "p50_us": max(r["p50_us"] for r in runs), "p99_us": max(r["p99_us"] for r in runs),
    "errors": sum(r["errors"] for r in runs)}))
EOF
}

lines=0
for replicas in $REPLICAS; do
  api_patch "/apis/apps/v1/namespaces/$NS/deployments/echo" "{\"spec\":{\"replicas\":$replicas}}"
  wait_for "$replicas ready echo pod(s)" q ready-pod-ips "$NS" app%3Decho "$replicas"
  read -r -a pod_ips <<<"$(q ready-pod-ips "$NS" app%3Decho "$replicas")"
  wait_for "$replicas ready endpoint(s) of the Service" q ready-endpoints "$NS" echo "$replicas"
  for ip in "${pod_ips[@]}"; do
    wait_for "the pod at $ip answering" curl -fsS "http://$ip:$PORT/"
  done
  wait_for "the ClusterIP $cluster_ip answering" curl -fsS "http://$cluster_ip:$PORT/"
  log "$replicas replica(s) at ${pod_ips[*]}, ClusterIP $cluster_ip"
  if [ "$WARMUP" != 0 ]; then
    measure "$replicas" direct warmup "$WARMUP"
    measure "$replicas" proxy warmup "$WARMUP"
  fi
  for r in $(seq "$REPEAT"); do
    if [ $((r % 2)) = 1 ]; then order="direct proxy"; else order="proxy direct"; fi
    for target in $order; do
      log "replicas $replicas, round $r: $target"
      measure "$replicas" "$target" "$r" "$DURATION" record
      lines=$((lines + 1))
    done
  done
done
echo "store RSS at the end: $(awk '/^VmRSS:/ {print $2, $3}' "/proc/$store_pid/status")" >>"$work/machine.txt"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$work/machine.txt"

cat "$work/machine.txt"
PYTHONPATH="$root/scripts" python3 - "$RESULTS" "$lines" <<'EOF'
import json, statistics, sys
from compare_common import cell, ops, ms
path, n = sys.argv[1], int(sys.argv[2])
lines = [json.loads(l) for l in open(path) if l.strip()][-n:]
print("cells: median [min..max] over rounds; direct with 2 replicas = one wrk per pod at once")
print(f"{'':24} {'direct (pod IP)':>28} {'proxy (ClusterIP)':>28}  proxy/direct")
for replicas in dict.fromkeys(l["replicas"] for l in lines):
    for name, key, fmt in [("requests/s", "requests_per_s", ops), ("latency p50", "p50_us", ms),
                           ("latency p99", "p99_us", ms)]:
        d = [l[key] for l in lines if l["replicas"] == replicas and l["target"] == "direct"]
        p = [l[key] for l in lines if l["replicas"] == replicas and l["target"] == "proxy"]
        ratio = f"{statistics.median(p) / statistics.median(d):.2f}x" if d and p and statistics.median(d) else ""
        print(f"{f'{replicas} replica(s): {name}':24} {cell(d, fmt):>28} {cell(p, fmt):>28}  {ratio}")
errors = sum(l["errors"] for l in lines)
if errors:
    print(f"WARNING: {errors} socket errors or non-2xx answers in the runs; see {path}")
print("1-minute load average before the runs: "
      f"{min(l['load_before'] for l in lines):.2f} to {max(l['load_before'] for l in lines):.2f}")
EOF
