#!/usr/bin/env bash
# Server CPU per put, by thread, for one single-member server at 64 clients.
#
#   scripts/cpu-per-put.sh capstan            # target/release/capstan
#   scripts/cpu-per-put.sh etcd               # /usr/bin/etcd
#   CAPSTAN=/path/to/capstan scripts/cpu-per-put.sh capstan   # another build
#
# Starts a fresh server on loopback, runs WARM puts (20000) to warm it up, then TOTAL puts
# (60000), both with `capstan-bench kv put --clients 64 --conns 8` (16-byte keys, 256-byte
# values), and reads every server thread's utime + stime from /proc/<pid>/task/*/stat
# before and after the TOTAL puts. Prints puts/s, then CPU per put by thread name, the
# whole server, and the load tool (from /usr/bin/time). PERF=1 also records a profile
# of the server (`perf record -F 999 -g`) into target/cpu-per-put/perf.data.
#
# Settings (environment): WARM (20000), TOTAL (60000), PORT (25379), PEER_PORT (25380),
# CAPSTAN (target/release/capstan), BENCH (target/release/capstan-bench), ETCD (/usr/bin/etcd).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
server=${1:?usage: cpu-per-put.sh capstan|etcd}
WARM=${WARM:-20000}
TOTAL=${TOTAL:-60000}
PORT=${PORT:-25379}
PEER_PORT=${PEER_PORT:-25380}
CAPSTAN=${CAPSTAN:-$root/target/release/capstan}
BENCH=${BENCH:-$root/target/release/capstan-bench}
ETCD=${ETCD:-/usr/bin/etcd}
out="$root/target/cpu-per-put"
mkdir -p "$out"
work=$(mktemp -d "$out/run.XXXX")

case "$server" in
  capstan)
    "$CAPSTAN" store --data-dir "$work/data" --listen-client "127.0.0.1:$PORT" >"$work/out" 2>"$work/err" &
    ready() { grep -q "ready on" "$work/out"; } ;;
  etcd)
    "$ETCD" --name c --data-dir "$work/data" \
      --listen-client-urls "http://127.0.0.1:$PORT" --advertise-client-urls "http://127.0.0.1:$PORT" \
      --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
      --initial-cluster "c=http://127.0.0.1:$PEER_PORT" >"$work/out" 2>"$work/err" &
    ready() { grep -q "ready to serve client" "$work/err"; } ;;
  *) echo "cpu-per-put.sh: unknown server $server (capstan or etcd)" >&2; exit 2 ;;
esac
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 300); do
  ready && break
  kill -0 "$pid" 2>/dev/null || { echo "cpu-per-put.sh: the server exited" >&2; cat "$work/err" >&2; exit 1; }
  sleep 0.1
done
ready || { echo "cpu-per-put.sh: the server did not become ready in 30 s" >&2; exit 1; }

put() { "$BENCH" kv put --endpoints "127.0.0.1:$PORT" --clients 64 --conns 8 --total "$1" --json; }
put "$WARM" >/dev/null
# One line per thread: "<tid>_<name> <utime+stime ticks>".
ticks() {
  for t in /proc/"$pid"/task/*; do
    echo "$(basename "$t")_$(tr ' ' _ <"$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
  done | sort
}
ticks >"$work/before"
if [ -n "${PERF:-}" ]; then
  perf record -F 999 -g -p "$pid" -o "$out/perf.data" 2>/dev/null &
  perf_pid=$!
fi
/usr/bin/time -f "%U %S" -o "$work/client" \
  "$BENCH" kv put --endpoints "127.0.0.1:$PORT" --clients 64 --conns 8 --total "$TOTAL" --json >"$work/result"
if [ -n "${PERF:-}" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
ticks >"$work/after"

python3 - "$work" "$TOTAL" "$(getconf CLK_TCK)" <<'EOF'
import json, sys, collections
work, total, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = json.load(open(f"{work}/result"))
if r.get("errors") or r.get("ok") != total:
    sys.exit(f"cpu-per-put.sh: the run had errors: {r}")
print(f"puts/s                {r['ops_per_s']:,.1f}")
def load(name):
    return dict(line.split() for line in open(f"{work}/{name}"))
before, after = load("before"), load("after")
by_name = collections.Counter()
for k, v in after.items():
    name = k.split("_", 1)[1]
    by_name[name] += int(v) - int(before.get(k, 0))
us = lambda ticks: ticks * 1e6 / hz / total
for name, t in sorted(by_name.items(), key=lambda kv: -kv[1]):
    if t:
        print(f"{name:<20}  {us(t):6.1f} us/put")
print(f"{'whole server':<20}  {us(sum(by_name.values())):6.1f} us/put")
user, system = map(float, open(f"{work}/client").read().split()[-2:])
print(f"{'load tool':<20}  {(user + system) * 1e6 / total:6.1f} us/put")
EOF
