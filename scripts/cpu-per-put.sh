#!/usr/bin/env bash
# Server CPU per put, by thread, for a fresh single-member server or 3-member cluster.
#
#   scripts/cpu-per-put.sh capstan            # target/release/capstan, one member
#   scripts/cpu-per-put.sh etcd               # /usr/bin/etcd, one member
#   MEMBERS=3 scripts/cpu-per-put.sh capstan  # three members (n1, n2, n3) on loopback
#   CAPSTAN=/path/to/capstan scripts/cpu-per-put.sh capstan   # another build
#
# Starts the server(s) on loopback, runs WARM puts (20000) to warm up, then TOTAL puts
# (60000), both with `capstan-bench kv put --clients CLIENTS --conns CONNS` (16-byte keys,
# 256-byte values; connections spread over the members), and reads every server thread's
# utime + stime from /proc/<pid>/task/*/stat and its context switches (voluntary and
# not) from /proc/<pid>/task/*/status before and after the TOTAL puts. Prints puts/s,
# then CPU and context switches per put by thread name (per member role, leader or
# follower, with three members), the whole server(s), and the load tool (from
# /usr/bin/time). The run fails if the leader changed during it. PERF=1 also records a
# profile of the first server (`perf record -F 999 -g`) into
# target/cpu-per-put/perf.data; PERF=leader or PERF=follower profiles the leader or a
# follower instead; PERF_OPTS replaces `-g` (e.g. `--call-graph dwarf`).
#
# Settings (environment): MEMBERS (1 or 3), WARM (20000), TOTAL (60000), CLIENTS (64; 256
# with three members), CONNS (8; 9 with three members), PORT (25379: client ports PORT..),
# PEER_PORT (25389: peer ports PEER_PORT..), CAPSTAN (target/release/capstan), BENCH
# (target/release/capstan-bench), ETCD (/usr/bin/etcd).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
server=${1:?usage: cpu-per-put.sh capstan|etcd}
WARM=${WARM:-20000}
TOTAL=${TOTAL:-60000}
PORT=${PORT:-25379}
PEER_PORT=${PEER_PORT:-25389}
MEMBERS=${MEMBERS:-1}
case "$MEMBERS" in
  1) CLIENTS=${CLIENTS:-64} CONNS=${CONNS:-8} ;;
  3) CLIENTS=${CLIENTS:-256} CONNS=${CONNS:-9} ;;
  *) echo "cpu-per-put.sh: MEMBERS=$MEMBERS: expected 1 or 3" >&2; exit 2 ;;
esac
CAPSTAN=${CAPSTAN:-$root/target/release/capstan}
BENCH=${BENCH:-$root/target/release/capstan-bench}
ETCD=${ETCD:-/usr/bin/etcd}
out="$root/target/cpu-per-put"
mkdir -p "$out"
work=$(mktemp -d "$out/run.XXXX")

initial=""
endpoints=""
for i in $(seq "$MEMBERS"); do
  initial+="${initial:+,}n$i=http://127.0.0.1:$((PEER_PORT + i - 1))"
  endpoints+="${endpoints:+,}127.0.0.1:$((PORT + i - 1))"
done
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
for i in $(seq "$MEMBERS"); do
  cport=$((PORT + i - 1)) pport=$((PEER_PORT + i - 1))
  case "$server" in
    capstan)
      "$CAPSTAN" store --insecure --name "n$i" --data-dir "$work/n$i" --listen-client "127.0.0.1:$cport" \
        --listen-peer "127.0.0.1:$pport" --initial-cluster "$initial" \
        >"$work/n$i.out" 2>"$work/n$i.err" & ;;
    etcd)
      "$ETCD" --name "n$i" --data-dir "$work/n$i" \
        --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
        --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
        --initial-cluster "$initial" >"$work/n$i.out" 2>"$work/n$i.err" & ;;
    *) echo "cpu-per-put.sh: unknown server $server (capstan or etcd)" >&2; exit 2 ;;
  esac
  pids+=($!)
done
# Ready when every member answers Status and they agree on a leader.
for _ in $(seq 300); do
  "$BENCH" status --endpoints "$endpoints" --wait-leader --timeout-s 1 >/dev/null 2>&1 && break
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "cpu-per-put.sh: a server exited" >&2; cat "$work"/*.err >&2; exit 1; }
  done
  sleep 0.1
done
"$BENCH" status --endpoints "$endpoints" --wait-leader --timeout-s 1 >"$work/status" 2>&1 \
  || { echo "cpu-per-put.sh: no agreed leader in 30 s" >&2; cat "$work/status" >&2; exit 1; }

put=("$BENCH" kv put --endpoints "$endpoints" --clients "$CLIENTS" --conns "$CONNS" --json --total)
"${put[@]}" "$WARM" >/dev/null
# One line per thread: "<member>_<tid>_<name> <utime+stime ticks> <context switches>".
ticks() {
  local i=0 p t
  for p in "${pids[@]}"; do
    i=$((i + 1))
    for t in /proc/"$p"/task/*; do
      echo "n${i}_$(basename "$t")_$(tr ' ' _ <"$t/comm") $(awk '{print $14 + $15}' "$t/stat")" \
        "$(awk '/ctxt_switches/ {n += $2} END {print n}' "$t/status")"
    done
  done | sort
}
leader() { "$BENCH" status --endpoints "$endpoints" --wait-leader --timeout-s 5 --json; }
leader >"$work/leader.before"
ticks >"$work/before"
if [ -n "${PERF:-}" ]; then
  leader_index=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["leader_index"])' "$work/leader.before")
  case "$PERF" in
    leader) perf_target=${pids[$leader_index]} ;;
    follower) perf_target=${pids[$(((leader_index + 1) % MEMBERS))]} ;;
    *) perf_target=${pids[0]} ;;
  esac
  perf record -F 999 ${PERF_OPTS:--g} -p "$perf_target" -o "$out/perf.data" 2>/dev/null &
  perf_pid=$!
fi
/usr/bin/time -f "%U %S" -o "$work/client" "${put[@]}" "$TOTAL" >"$work/result"
if [ -n "${PERF:-}" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
ticks >"$work/after"
leader >"$work/leader.after"

python3 - "$work" "$TOTAL" "$(getconf CLK_TCK)" <<'EOF'
import json, sys, collections
work, total, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = json.load(open(f"{work}/result"))
if r.get("errors") or r.get("ok") != total:
    sys.exit(f"cpu-per-put.sh: the run had errors: {r}")
print(f"puts/s                {r['ops_per_s']:,.1f}")
def load(name):
    return {k: (int(t), int(c)) for k, t, c in (line.split() for line in open(f"{work}/{name}"))}
before, after = load("before"), load("after")
leaders = [json.load(open(f"{work}/leader.{w}"))["leader_index"] for w in ("before", "after")]
if leaders[0] != leaders[1]:
    sys.exit(f"cpu-per-put.sh: the leader changed during the run (member index {leaders[0]} -> {leaders[1]})")
members = sorted({k.split("_", 1)[0] for k in after})
def role(member):
    if len(members) == 1:
        return ""
    return "leader " if int(member[1:]) - 1 == leaders[0] else "follower "
by_name = collections.Counter()
switches = collections.Counter()
for k, (t, c) in after.items():
    member, _, name = k.split("_", 2)
    t0, c0 = before.get(k, (0, 0))
    by_name[role(member) + name] += t - t0
    switches[role(member) + name] += c - c0
us = lambda ticks: ticks * 1e6 / hz / total
print(f"{'thread':<28}  {'CPU':>9}  context switches")
for name, t in sorted(by_name.items(), key=lambda kv: -kv[1]):
    if t:
        print(f"{name:<28}  {us(t):6.1f} us/put  {switches[name] / total:.2f}/put")
for r in sorted({role(m) for m in members}):
    if r:
        print(f"{'whole ' + r.strip() + 's':<28}  {us(sum(t for n, t in by_name.items() if n.startswith(r))):6.1f} us/put")
print(f"{'whole server' + ('s' if len(members) > 1 else ''):<28}  {us(sum(by_name.values())):6.1f} us/put")
user, system = map(float, open(f"{work}/client").read().split()[-2:])
print(f"{'load tool':<28}  {(user + system) * 1e6 / total:6.1f} us/put")
EOF
