#!/usr/bin/env bash
# The HA cluster's numbers (issue 7): `capstan up --masters 3 --nodes 2` of release
# binaries, fresh each run:
#   1. time from `capstan up` to all nodes Ready ("capstan up ready");
#   2. RSS of every process after IDLE_S seconds idle;
#   3. RSS of the masters under the scheduling benchmark (capstan-bench scheduler
#      throughput through kubectl's address: SCHED_NODES fake nodes, SCHED_PODS pods),
#      sampled every 200 ms, max per master;
#   4. KILLS times: SIGKILL the store's leader (capstan-bench failover, under a gentle put
#      load) and time, from the kill, the first acknowledged put (store failover), the
#      first answer to an API request through kubectl's address (a GET sent 10 ms after
#      the last one ended, 1 s timeout each; the answer's time), and the scheduler's and
#      controller-manager's Leases changing
#      holder (polled every 100 ms); then wait until up has the master back and the
#      cluster is healthy.
#
#   scripts/bench-ha.sh                       # build release, 1 run
#   BUILD=0 REPEAT=3 KILLS=5 scripts/bench-ha.sh
#
# Every run is one JSON line in target/bench-ha/results.jsonl; a summary is printed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
BUILD=${BUILD:-1}
REPEAT=${REPEAT:-1}
KILLS=${KILLS:-3}
IDLE_S=${IDLE_S:-20}
SCHED_NODES=${SCHED_NODES:-1000}
SCHED_PODS=${SCHED_PODS:-5000}
NET=${NET:-42}
PROFILE=${PROFILE:-release}
CAPSTAN=${CAPSTAN:-$root/target/$PROFILE/capstan}
BENCH=${BENCH:-$root/target/$PROFILE/capstan-bench}
out_dir="$root/target/bench-ha"
mkdir -p "$out_dir"
if [ "$BUILD" = 1 ]; then
    flag=$([ "$PROFILE" = release ] && echo --release || true)
    cargo build $flag -p capstan -p capstan-bench
fi

for run in $(seq 1 "$REPEAT"); do
    dir="$out_dir/run$run"
    rm -rf "$dir"
    CAPSTAN="$CAPSTAN" BENCH="$BENCH" DIR="$dir" NET="$NET" KILLS="$KILLS" IDLE_S="$IDLE_S" \
        SCHED_NODES="$SCHED_NODES" SCHED_PODS="$SCHED_PODS" python3 - <<'EOF' | tee -a "$out_dir/results.jsonl"
import json, os, re, signal, subprocess, sys, threading, time, urllib.request

capstan, bench, d, net = os.environ["CAPSTAN"], os.environ["BENCH"], os.environ["DIR"], int(os.environ["NET"])
kills, idle_s = int(os.environ["KILLS"]), float(os.environ["IDLE_S"])
api = "127.0.0.1:%d" % (16000 + net)
masters = ["m1", "m2", "m3"]
etcd = ",".join("127.%d.1.%d:2379" % (net, i) for i in (1, 2, 3))
log = lambda *a: print(*a, file=sys.stderr, flush=True)

def pid(name):
    try:
        return int(open(os.path.join(d, name + ".pid")).read())
    except (OSError, ValueError):
        return None

def rss_kib(p):
    try:
        for line in open("/proc/%d/status" % p):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None

def get(path, timeout=1.0):
    with urllib.request.urlopen("http://%s%s" % (api, path), timeout=timeout) as r:
        return json.load(r)

def holder(lease):
    try:
        return get("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/" + lease)["spec"].get("holderIdentity")
    except Exception:
        return None

def healthy():
    r = subprocess.run([capstan, "status", "--data-dir", d], capture_output=True, text=True)
    return r.returncode == 0 and "3 of 3 voting members answer" in r.stdout, r.stdout

result = {"bench": "ha", "masters": 3, "nodes": 2}
t0 = time.monotonic()
up = subprocess.Popen([capstan, "up", "--insecure", "--masters", "3", "--nodes", "2", "--data-dir", d,
                       "--api-listen", api, "--loopback-net", str(net)],
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
lines = []
for line in up.stdout:
    lines.append(line)
    if line.startswith("capstan up ready"):
        break
result["up_to_ready_s"] = round(time.monotonic() - t0, 3)
m = re.search(r"The cluster is up \(([\d.]+) s\)", "".join(lines))
result["up_reported_s"] = float(m.group(1)) if m else None
threading.Thread(target=lambda: [None for _ in up.stdout], daemon=True).start()
log("up in %.3f s" % result["up_to_ready_s"])
try:
    time.sleep(idle_s)  # a benchmark's settle time, not a test's wait
    procs = masters + ["node1-agent", "node1-proxy", "node2-agent", "node2-proxy"]
    idle = {n: rss_kib(pid(n)) for n in procs}
    idle["up"] = rss_kib(up.pid)
    result["idle_rss_kib"] = idle
    result["idle_rss_masters_total_kib"] = sum(idle[m] for m in masters)
    result["idle_rss_all_total_kib"] = sum(v for v in idle.values() if v)
    log("idle RSS (KiB)", idle)

    # Under the scheduling benchmark.
    peak = {m: 0 for m in masters}
    stop = threading.Event()
    def sample():
        while not stop.is_set():
            for m in masters:
                p = pid(m)
                r = rss_kib(p) if p else None
                if r:
                    peak[m] = max(peak[m], r)
            time.sleep(0.2)
    t = threading.Thread(target=sample); t.start()
    s = subprocess.run([bench, "scheduler", "throughput", "--api", "http://" + api,
                        "--nodes", os.environ["SCHED_NODES"], "--pods", os.environ["SCHED_PODS"], "--json"],
                       capture_output=True, text=True)
    stop.set(); t.join()
    result["sched_rss_peak_kib"] = peak
    try:
        sj = json.loads(s.stdout.strip().splitlines()[-1])
        result["sched"] = {k: sj.get(k) for k in ("pods_per_s", "pods", "nodes", "bound", "seconds") if k in sj}
    except Exception:
        result["sched"] = {"error": (s.stderr or s.stdout)[-300:]}
    log("scheduling: peak RSS (KiB)", peak, result["sched"])

    # Kills of the store's leader.
    rounds = []
    for k in range(kills):
        deadline = time.monotonic() + 120
        while not healthy()[0]:
            if time.monotonic() > deadline:
                raise SystemExit("the cluster was not healthy again: " + healthy()[1])
            time.sleep(0.2)
        before = {l: holder(l) for l in ("kube-scheduler", "kube-controller-manager")}
        pids = ",".join(str(pid(m)) for m in masters)
        killed_at = [None]
        api_back = [None]
        lease_moved = {}
        done = threading.Event()
        leader_pid_box = [None]
        def watch_kill():
            while not done.is_set():
                lp = leader_pid_box[0]
                if lp and not os.path.exists("/proc/%d" % lp):
                    killed_at[0] = time.monotonic(); return
                if lp:
                    try:
                        if open("/proc/%d/stat" % lp).read().split()[2] == "Z":
                            killed_at[0] = time.monotonic(); return
                    except OSError:
                        killed_at[0] = time.monotonic(); return
                time.sleep(0.001)
        def watch_api():
            while killed_at[0] is None and not done.is_set():
                time.sleep(0.002)
            while not done.is_set():
                sent = time.monotonic()
                try:
                    get("/api/v1/namespaces/default", timeout=1.0)
                    # When the answer came (a request sent during the election waits
                    # for the new leader: a consistent read needs a read index).
                    api_back[0] = (time.monotonic() - killed_at[0], sent - killed_at[0])
                    return
                except Exception:
                    time.sleep(0.01)
        def watch_leases():
            while killed_at[0] is None and not done.is_set():
                time.sleep(0.002)
            while not done.is_set() and len(lease_moved) < 2:
                for l, was in before.items():
                    if l not in lease_moved:
                        h = holder(l)
                        if h and h != was:
                            lease_moved[l] = time.monotonic() - killed_at[0]
                time.sleep(0.1)
        # The leader's pid, as capstan-bench will find it.
        st = subprocess.run([capstan, "status", "--data-dir", d], capture_output=True, text=True).stdout
        lm = re.search(r"Leader: (m\d)\.", st)
        leader = lm.group(1) if lm else None
        leader_pid_box[0] = pid(leader) if leader else None
        threads = [threading.Thread(target=f) for f in (watch_kill, watch_api, watch_leases)]
        for th in threads: th.start()
        f = subprocess.run([bench, "failover", "--endpoints", etcd, "--pids", pids, "--json"],
                           capture_output=True, text=True)
        try:
            fj = json.loads(f.stdout.strip().splitlines()[-1])
        except Exception:
            fj = {"error": (f.stderr or f.stdout)[-300:]}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (api_back[0] is None or len(lease_moved) < sum(1 for l, w in before.items() if w and w.startswith(leader + "_"))):
            time.sleep(0.1)
        done.set()
        for th in threads: th.join()
        r = {"leader": leader, "store_failover_ms": fj.get("failover_ms"), "new_leader_seen_ms": fj.get("new_leader_seen_ms"),
             "api_back_ms": None if api_back[0] is None else round(api_back[0][0] * 1e3, 1),
             "api_back_request_sent_ms": None if api_back[0] is None else round(api_back[0][1] * 1e3, 1),
             "leases_held_on_leader": [l for l, w in before.items() if w and w.startswith(leader + "_")],
             "lease_moved_ms": {l: round(v * 1e3, 1) for l, v in lease_moved.items()}}
        log("kill %d:" % (k + 1), r)
        rounds.append(r)
    result["kills"] = rounds
finally:
    up.send_signal(signal.SIGINT)
    try:
        up.wait(timeout=60)
    except subprocess.TimeoutExpired:
        up.kill()
    result["up_exit"] = up.returncode
    # The nodes' containers (none are started by this benchmark's pods, which name no command).
print(json.dumps(result))
EOF
done
