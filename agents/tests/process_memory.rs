//! The process runtime's memory limits and OOM reports: real cgroups (v2, or the v1
//! memory controller, whichever the runtime picks on this host), real processes that
//! allocate past their limit and are killed by the kernel's OOM killer.
//!
//! Each test is skipped, saying why, when not run as root, when the runtime cannot
//! enforce memory limits here (no usable memory controller), or when there is no
//! `python3` (the allocating program) in the containers' default `PATH`.
//!
//! A container is moved into its cgroup only after it is spawned (see the runtime's module
//! doc), so every program here waits for a `go` file, written once `start` has returned,
//! before doing anything that the cgroup must see: nothing depends on winning that race.
//! Pod uids carry this process's pid, so that two runs of these tests at once (or another
//! test binary's containers) never share a cgroup.

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use capstan_agents::node::process::{ContainerSpec, Exit, LogLimits, ProcessRuntime, DEFAULT_PATH};

/// Long enough for a loaded 2-core machine; nothing waits for it unless a test fails.
const DEADLINE: Duration = Duration::from_secs(20);
const LIMIT_BYTES: u64 = 32 * 1024 * 1024;

/// A temporary runtime root and a runtime on it, or `None` (said on stdout) when the
/// test cannot run here.
fn fixture(test: &str) -> Option<(tempfile::TempDir, ProcessRuntime)> {
    if !rustix::process::geteuid().is_root() {
        println!("{test}: skipped: not root (making cgroups needs it)");
        return None;
    }
    if !DEFAULT_PATH
        .split(':')
        .any(|dir| Path::new(dir).join("python3").exists())
    {
        println!("{test}: skipped: no python3 in {DEFAULT_PATH}");
        return None;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let runtime = ProcessRuntime::new(root.path().to_path_buf(), LogLimits::default()).expect("runtime");
    if !runtime.memory_limits_enforced() {
        println!("{test}: skipped: memory limits are not enforced here (no usable memory controller)");
        return None;
    }
    Some((root, runtime))
}

fn pod_uid(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// A container running a Python program that first waits (boundedly) for `go` in its
/// working directory, then allocates and touches `allocate_mib` MiB, says so, and sleeps
/// `sleep_s` seconds.
fn allocating(pod_uid: &str, allocate_mib: u64, sleep_s: u64) -> ContainerSpec {
    let program = format!(
        "import os, sys, time\n\
         for _ in range(3000):\n    \
             if os.path.exists('go'): break\n    \
             time.sleep(0.01)\n\
         else:\n    \
             sys.exit(3)\n\
         b = bytearray({allocate_mib} * 1024 * 1024)\n\
         print('allocated', flush=True)\n\
         time.sleep({sleep_s})\n"
    );
    ContainerSpec {
        pod_uid: pod_uid.into(),
        namespace: "default".into(),
        pod_name: format!("pod-{pod_uid}"),
        container: "main".into(),
        command: vec!["python3".into(), "-c".into(), program],
        memory_limit_bytes: Some(LIMIT_BYTES),
        ..ContainerSpec::default()
    }
}

fn go(runtime: &ProcessRuntime, pod_uid: &str) {
    fs::write(runtime.root().join(pod_uid).join("main/work/go"), "").expect("writing go");
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The container's cgroup from its state file.
fn cgroup_of(runtime: &ProcessRuntime, pod_uid: &str) -> PathBuf {
    runtime
        .state(pod_uid, "main")
        .expect("state")
        .expect("a state")
        .memory_cgroup
        .expect("a memory cgroup")
}

/// The memory limit set on a cgroup, v2 or v1.
fn limit_of(cgroup: &Path) -> u64 {
    let file = ["memory.max", "memory.limit_in_bytes"]
        .iter()
        .map(|file| cgroup.join(file))
        .find(|path| path.exists())
        .expect("a memory limit file");
    read(&file).trim().parse().expect("a number")
}

/// Checks that `pid` is in `cgroup` and that the cgroup has the limit (and, on v1 with
/// swap accounting, the same limit on memory and swap).
fn assert_limited(pid: u32, cgroup: &Path) {
    let name = cgroup.file_name().expect("a name").to_string_lossy().into_owned();
    let membership = read(Path::new(&format!("/proc/{pid}/cgroup")));
    assert!(
        membership.lines().any(|line| line.ends_with(&format!("/{name}"))),
        "{pid} is not in {name}: {membership}"
    );
    assert_eq!(limit_of(cgroup), LIMIT_BYTES);
    let memsw = cgroup.join("memory.memsw.limit_in_bytes");
    if memsw.exists() {
        assert_eq!(read(&memsw).trim(), LIMIT_BYTES.to_string());
    }
}

/// Ended: no longer in /proc, or a zombie.
fn ended(pid: u32) -> bool {
    let stat = read(Path::new(&format!("/proc/{pid}/stat")));
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_none_or(|state| state == "Z" || state == "X")
}

#[tokio::test]
async fn a_container_over_its_limit_is_oom_killed() {
    let Some((_root, runtime)) = fixture("a_container_over_its_limit_is_oom_killed") else {
        return;
    };
    let uid = pod_uid("oom");
    let mut container = runtime.start(&allocating(&uid, 200, 5)).expect("start");
    let cgroup = cgroup_of(&runtime, &uid);
    assert_limited(container.pid(), &cgroup);
    assert!(!container.oom_killed());

    go(&runtime, &uid);
    assert_eq!(within("the OOM kill", container.wait()).await, Exit::Signal(9));
    assert!(container.oom_killed());
    assert!(!read(&runtime.log_path(&uid, "main", false)).contains("allocated"));
    let state = runtime.state(&uid, "main").expect("state").expect("a state");
    assert_eq!((state.exit, state.oom_killed), (Some(Exit::Signal(9)), true));
    assert!(!cgroup.exists(), "{} is left", cgroup.display());
    runtime.remove_pod(&uid).expect("remove");
}

#[tokio::test]
async fn a_container_under_its_limit_runs_normally() {
    let Some((_root, runtime)) = fixture("a_container_under_its_limit_runs_normally") else {
        return;
    };
    let uid = pod_uid("under");
    let mut container = runtime.start(&allocating(&uid, 8, 0)).expect("start");
    let cgroup = cgroup_of(&runtime, &uid);
    assert_limited(container.pid(), &cgroup);

    go(&runtime, &uid);
    assert_eq!(within("the exit", container.wait()).await, Exit::Code(0));
    assert!(!container.oom_killed());
    assert_eq!(read(&runtime.log_path(&uid, "main", false)), "allocated\n");
    let state = runtime.state(&uid, "main").expect("state").expect("a state");
    assert_eq!((state.exit, state.oom_killed), (Some(Exit::Code(0)), false));
    assert!(!cgroup.exists(), "{} is left", cgroup.display());

    // A second run gets the cgroup anew, and its report is its own.
    let mut again = runtime.start(&allocating(&uid, 200, 5)).expect("start");
    assert_eq!(cgroup_of(&runtime, &uid), cgroup);
    assert_limited(again.pid(), &cgroup);
    go(&runtime, &uid);
    assert_eq!(within("the OOM kill", again.wait()).await, Exit::Signal(9));
    assert!(again.oom_killed());
    assert!(!cgroup.exists(), "{} is left", cgroup.display());
    runtime.remove_pod(&uid).expect("remove");
}

#[tokio::test]
async fn what_left_the_process_group_goes_with_the_cgroup() {
    let Some((_root, runtime)) = fixture("what_left_the_process_group_goes_with_the_cgroup") else {
        return;
    };
    let uid = pod_uid("escape");
    // After go: a process in a session (and so a process group) of its own, which the
    // group kill at the end misses; the main process ends once it is so.
    let script = "n=0; while [ ! -e go ] && [ $n -lt 3000 ]; do sleep 0.01; n=$((n+1)); done; \
                  setsid sleep 60 & pid=$!; \
                  n=0; while [ \"$(cut -d' ' -f6 /proc/$pid/stat)\" != \"$pid\" ] && [ $n -lt 3000 ]; do sleep 0.01; n=$((n+1)); done; \
                  echo $pid > escaped";
    let spec = ContainerSpec {
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..allocating(&uid, 0, 0)
    };
    let mut container = runtime.start(&spec).expect("start");
    let cgroup = cgroup_of(&runtime, &uid);
    go(&runtime, &uid);
    assert_eq!(within("the exit", container.wait()).await, Exit::Code(0));
    let escaped: u32 = read(&runtime.root().join(&uid).join("main/work/escaped"))
        .trim()
        .parse()
        .expect("the escaped pid");
    // Killed before the cgroup could be removed, so by the time wait returned.
    assert!(ended(escaped), "the escaped process {escaped} still runs");
    assert!(!cgroup.exists(), "{} is left", cgroup.display());
    assert!(!container.oom_killed());
    runtime.remove_pod(&uid).expect("remove");
}

#[tokio::test]
async fn an_adopted_container_keeps_its_cgroup() {
    let Some((root, first)) = fixture("an_adopted_container_keeps_its_cgroup") else {
        return;
    };
    let uid = pod_uid("adopted");
    let pid = {
        let container = first.start(&allocating(&uid, 200, 5)).expect("start");
        container.pid()
        // The runtime and the handle go: the process stays, in its cgroup.
    };
    drop(first);
    let runtime = ProcessRuntime::new(root.path().to_path_buf(), LogLimits::default()).expect("runtime");
    let cgroup = cgroup_of(&runtime, &uid);
    let mut adopted = runtime.adopt().expect("adopt");
    assert_eq!(adopted.len(), 1);
    let mut container = adopted.pop().expect("one adopted");
    assert!(container.adopted());
    assert_eq!(container.pid(), pid);
    assert_limited(pid, &cgroup);

    go(&runtime, &uid);
    // An adopted process's exit status cannot be had; the cgroup still tells the OOM kill.
    assert_eq!(within("the OOM kill", container.wait()).await, Exit::Unknown);
    assert!(container.oom_killed());
    let state = runtime.state(&uid, "main").expect("state").expect("a state");
    assert_eq!((state.exit, state.oom_killed), (Some(Exit::Unknown), true));
    // Removed by the adopted handle: the only one left that knew of it.
    assert!(!cgroup.exists(), "{} is left", cgroup.display());
    runtime.remove_pod(&uid).expect("remove");
}
