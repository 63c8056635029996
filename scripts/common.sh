# Shared by the scripts that start servers (bench-pods.sh, bench-proxy.sh,
# compare-etcd.sh, compare-etcd-cluster.sh); sourced, not run. Expects `log MESSAGE`,
# `die MESSAGE` and READY_TIMEOUT_S from the script.

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_ready WHAT PID LOG COMMAND...: polls COMMAND every 100 ms until it succeeds; dies
# (with the tail of LOG) if PID exits first or READY_TIMEOUT_S passes.
wait_ready() {
  local what=$1 pid=$2 logfile=$3
  shift 3
  local deadline=$((SECONDS + READY_TIMEOUT_S))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$logfile" >&2 || true
      die "waiting for $what: pid $pid exited (its log above)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$logfile" >&2 || true
      die "$what: not within ${READY_TIMEOUT_S}s"
    fi
    sleep 0.1
  done
}

# stop_pid PID [TIMEOUT_S]: stops one process we started: TERM, then KILL if it has not
# exited within TIMEOUT_S (10 s).
stop_pid() {
  local pid=$1 timeout_s=${2:-10}
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + timeout_s))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid did not stop on TERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# kill_leftover_containers NODE_DIR: kills the containers a stopped agent left behind
# (containers outlive their agent by design): each one's process group, by the pid in its
# state.json, only if that pid still has the recorded start time (field 22 of
# /proc/<pid>/stat) and leads its group, so a reused pid is never hit.
kill_leftover_containers() {
  local dir=$1
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  python3 - "$dir" <<'EOF'
import glob, json, os, signal, sys
killed = 0
for path in glob.glob(os.path.join(sys.argv[1], "**", "state.json"), recursive=True):
    try:
        with open(path) as f:
            st = json.load(f)
        pid, ticks = int(st.get("pid", 0)), int(st.get("start_time_ticks", 0))
        if pid <= 1:
            continue
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[22 - 3]) == ticks and os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
            killed += 1
    except (OSError, ValueError, KeyError, IndexError, AttributeError):
        pass
if killed:
    print(f"killed {killed} container(s) left running", file=sys.stderr)
EOF
}
