//! The process runtime's volume mounts, through container-init: real processes, real
//! mount namespaces and bind mounts, real files.
//!
//! No libtest harness (`harness = false` in agents/Cargo.toml): this binary is also the
//! init program its containers are started through. Run as `<this> container-init
//! <args>`, it is container-init, as the `capstan` binary's hidden subcommand is;
//! otherwise it runs the cases below one after the other (those whose name contains the
//! first argument, if one is given), prints each, and exits non-zero if one fails.
//!
//! Mounting needs root: as another user every case is skipped ("skipped: not root").
//! Every mount target is under a temporary directory, never a real system path.
//!
//! The cases run in a mount namespace of this process's own, in which each case's
//! stand-in for the host's filesystem is a *shared* mount (as `/` is on systemd hosts):
//! were container-init to leave propagation alone, its mounts would show up there, and
//! the checks that the host sees none of them would fail.

use std::ffi::OsString;
use std::fs;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use capstan_agents::node::init::{self, Mount};
use capstan_agents::node::process::{ContainerSpec, Exit, LogLimits, ProcessRuntime};

/// Long enough for a loaded 2-core machine; nothing waits for it unless a case fails.
const DEADLINE: Duration = Duration::from_secs(20);

type Case = fn(Fixture) -> Pin<Box<dyn Future<Output = ()>>>;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|arg| arg == "container-init") {
        // Before anything else, as in the capstan binary: container-init must start in a
        // single-threaded process.
        let e = init::run(args[1..].to_vec());
        eprintln!("{e}");
        std::process::exit(init::EXIT_CODE);
    }
    let cases: [(&str, Case); 6] = [
        ("read_only_dir_at_a_new_path", |f| {
            Box::pin(read_only_dir_at_a_new_path(f))
        }),
        ("writable_dir_over_an_existing_one", |f| {
            Box::pin(writable_dir_over_an_existing_one(f))
        }),
        ("files_over_existing_and_new_files", |f| {
            Box::pin(files_over_existing_and_new_files(f))
        }),
        ("created_targets_go_with_the_pod", |f| {
            Box::pin(created_targets_go_with_the_pod(f))
        }),
        ("init_failures_end_the_container", |f| {
            Box::pin(init_failures_end_the_container(f))
        }),
        ("adoption_after_the_exec", |f| Box::pin(adoption_after_the_exec(f))),
    ];
    if !rustix::process::geteuid().is_root() {
        println!("skipped: not root (mounting needs it)");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = own_mount_namespace() {
        println!("cannot make a mount namespace for the cases: {e}");
        return ExitCode::FAILURE;
    }
    let filter = args
        .iter()
        .find_map(|arg| arg.to_str().filter(|arg| !arg.starts_with('-')));
    let mut failed = Vec::new();
    for (name, case) in cases {
        if filter.is_some_and(|filter| !name.contains(filter)) {
            continue;
        }
        println!("case {name} ...");
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(case(Fixture::new()));
        }));
        match outcome {
            Ok(()) => println!("case {name} ... ok"),
            Err(_) => {
                println!("case {name} ... FAILED");
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        println!("all cases passed");
        ExitCode::SUCCESS
    } else {
        println!("failed: {failed:?}");
        ExitCode::FAILURE
    }
}

/// Puts this process in a mount namespace of its own, so that the shared mounts the
/// cases make never reach the machine's. rustix deprecates its safe `unshare` because of
/// `CLONE_FILES`; with `CLONE_NEWNS` alone, before any thread starts, it is sound.
#[allow(deprecated)]
fn own_mount_namespace() -> std::io::Result<()> {
    rustix::thread::unshare(rustix::thread::UnshareFlags::NEWNS)?;
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::REC | rustix::mount::MountPropagationFlags::PRIVATE,
    )?;
    Ok(())
}

/// A runtime root and a stand-in for the host's filesystem, both temporary; the latter a
/// shared mount (see the module doc).
struct Fixture {
    _root: tempfile::TempDir,
    _host: tempfile::TempDir,
    root: PathBuf,
    host: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let root = tempfile::tempdir().expect("tempdir");
        let host = tempfile::tempdir().expect("tempdir");
        let fixture = Fixture {
            root: fs::canonicalize(root.path()).expect("canonical path"),
            host: fs::canonicalize(host.path()).expect("canonical path"),
            _root: root,
            _host: host,
        };
        rustix::mount::mount_bind(&fixture.host, &fixture.host).expect("bind-mounting the stand-in host");
        rustix::mount::mount_change(&fixture.host, rustix::mount::MountPropagationFlags::SHARED)
            .expect("making the stand-in host shared");
        fixture
    }

    fn runtime(&self) -> ProcessRuntime {
        ProcessRuntime::new(self.root.clone(), LogLimits::default())
            .expect("runtime")
            .with_init_program(std::env::current_exe().expect("this test's path"))
    }

    /// A file under the stand-in host, written with its parents.
    fn write(&self, path: &str, content: &str) -> PathBuf {
        let path = self.host.join(path);
        fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        fs::write(&path, content).expect("write");
        path
    }

    fn dir(&self, path: &str) -> PathBuf {
        let path = self.host.join(path);
        fs::create_dir_all(&path).expect("mkdir");
        path
    }

    fn created_targets(&self, pod: &str, container: &str) -> Vec<PathBuf> {
        init::read_created_targets(&self.root.join(pod).join(container).join("mount-targets")).expect("read")
    }
}

impl Drop for Fixture {
    /// Before the temporary directories go (a mount point could not be removed).
    fn drop(&mut self) {
        if let Err(e) = rustix::mount::unmount(&self.host, rustix::mount::UnmountFlags::DETACH) {
            eprintln!("unmounting {}: {e}", self.host.display());
        }
    }
}

fn mount(source: &Path, target: &Path, read_only: bool) -> Mount {
    Mount {
        source: source.to_path_buf(),
        target: target.to_path_buf(),
        read_only,
    }
}

fn spec(pod_uid: &str, container: &str, script: &str, mounts: Vec<Mount>) -> ContainerSpec {
    ContainerSpec {
        pod_uid: pod_uid.into(),
        namespace: "default".into(),
        pod_name: format!("pod-{pod_uid}"),
        container: container.into(),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        mounts,
        ..ContainerSpec::default()
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Polls `condition` until it holds; fails the case when `DEADLINE` passes first.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Field 22 of `/proc/<pid>/stat` (the fields after the parenthesised name start at 3).
fn start_time_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"))
}

/// A configMap-like volume (one key) mounted read-only where nothing was: the target and
/// its missing parent are created (and recorded), the key is readable, a write fails with
/// EROFS, and the host sees neither the mount nor the write.
async fn read_only_dir_at_a_new_path(f: Fixture) {
    let runtime = f.runtime();
    let config = f.dir("volumes/config");
    fs::write(config.join("key"), "value-from-configmap\n").expect("write");
    let target = f.host.join("new/config");
    let script = format!(
        "cat {t}/key; echo x > {t}/written && echo write-succeeded; echo end",
        t = target.display()
    );
    let mut container = runtime
        .start(&spec("pod-ro", "main", &script, vec![mount(&config, &target, true)]))
        .expect("start");
    assert_eq!(within("the exit", container.wait()).await, Exit::Code(0));
    let log = read(&runtime.log_path("pod-ro", "main", false));
    assert!(log.contains("value-from-configmap\n"), "{log}");
    assert!(log.contains("Read-only file system"), "{log}");
    assert!(!log.contains("write-succeeded"), "{log}");
    assert!(log.ends_with("end\n"), "{log}");
    // On the host: the created target is an empty directory, the volume is unwritten.
    assert!(names(&target).is_empty());
    assert_eq!(names(&config), vec!["key"]);
    assert_eq!(
        f.created_targets("pod-ro", "main"),
        vec![f.host.join("new"), target.clone()]
    );
}

/// A writable emptyDir over a directory that exists, with a read-only volume nested in it
/// (listed first: mounts are made parents first). The directory's contents are hidden
/// only inside the container; the working directory is inside the mount.
async fn writable_dir_over_an_existing_one(f: Fixture) {
    let runtime = f.runtime();
    let existing = f.dir("srv/data");
    fs::write(existing.join("original"), "host data\n").expect("write");
    let empty = f.dir("volumes/empty");
    let config = f.dir("volumes/config");
    fs::write(config.join("key"), "nested-value\n").expect("write");
    let mut given = spec(
        "pod-rw",
        "main",
        "echo \"pwd=$(pwd)\"; ls -A; echo listed; cat sub/key; echo hi > written && echo wrote",
        vec![
            mount(&config, &existing.join("sub"), true),
            mount(&empty, &existing, false),
        ],
    );
    given.working_dir = Some(existing.clone());
    let mut container = runtime.start(&given).expect("start");
    assert_eq!(within("the exit", container.wait()).await, Exit::Code(0));
    let log = read(&runtime.log_path("pod-rw", "main", false));
    assert!(log.contains(&format!("pwd={}\n", existing.display())), "{log}");
    let listing = log.split("listed\n").next().expect("a listing");
    assert!(!listing.contains("original"), "the host's file shows through: {log}");
    assert!(listing.contains("sub\n"), "{log}");
    assert!(log.contains("nested-value\n"), "{log}");
    assert!(log.contains("wrote\n"), "{log}");
    // The host's directory is untouched; the write and the nested target went to the volume.
    assert_eq!(names(&existing), vec!["original"]);
    assert_eq!(read(&existing.join("original")), "host data\n");
    assert_eq!(names(&empty), vec!["sub", "written"]);
    assert_eq!(read(&empty.join("written")), "hi\n");
    // Nothing was created on the host's filesystem: the nested target is in the volume.
    assert!(f.created_targets("pod-rw", "main").is_empty());
}

/// File bind mounts, as `/etc/resolv.conf` and `/etc/hosts` will be: over a file that
/// exists (read-only), and at a path where there is none (an empty file is created).
async fn files_over_existing_and_new_files(f: Fixture) {
    let runtime = f.runtime();
    let resolv = f.write("etc/resolv.conf", "nameserver 192.0.2.1\n");
    let hosts = f.host.join("etc/hosts");
    let pod_resolv = f.write(
        "volumes/resolv.conf",
        "nameserver 10.96.0.10\nsearch default.svc.cluster.local\n",
    );
    let pod_hosts = f.write("volumes/hosts", "127.0.0.1 localhost\n10.0.0.7 pod-files\n");
    let script = format!(
        "cat {r}; cat {h}; echo x >> {r} && echo appended-resolv; echo y >> {h} && echo appended-hosts",
        r = resolv.display(),
        h = hosts.display()
    );
    let mounts = vec![mount(&pod_resolv, &resolv, true), mount(&pod_hosts, &hosts, false)];
    let mut container = runtime
        .start(&spec("pod-files", "main", &script, mounts))
        .expect("start");
    assert_eq!(within("the exit", container.wait()).await, Exit::Code(0));
    let log = read(&runtime.log_path("pod-files", "main", false));
    assert!(log.contains("nameserver 10.96.0.10\n"), "{log}");
    assert!(!log.contains("192.0.2.1"), "{log}");
    assert!(log.contains("10.0.0.7 pod-files\n"), "{log}");
    assert!(log.contains("Read-only file system"), "{log}");
    assert!(!log.contains("appended-resolv"), "{log}");
    assert!(log.contains("appended-hosts"), "{log}");
    // The host's file is as it was; the created one is empty; the writable source took
    // the write.
    assert_eq!(read(&resolv), "nameserver 192.0.2.1\n");
    assert_eq!(fs::metadata(&hosts).expect("created").len(), 0);
    assert!(read(&pod_hosts).ends_with("pod-files\ny\n"));
    assert_eq!(f.created_targets("pod-files", "main"), vec![hosts.clone()]);
    runtime.remove_pod("pod-files").expect("remove");
    assert!(!hosts.exists());
    assert_eq!(read(&resolv), "nameserver 192.0.2.1\n");
}

/// Removing a pod removes the targets created for it that are still empty, and leaves
/// those that are not, and those another pod's container has a mount at or below.
async fn created_targets_go_with_the_pod(f: Fixture) {
    let runtime = f.runtime();
    let volume = f.dir("volumes/v");
    let only_ours = f.host.join("a/b/c");
    let gains_a_file = f.host.join("kept/dir");
    let shared = f.host.join("shared/x");
    let mounts = vec![
        mount(&volume, &only_ours, false),
        mount(&volume, &gains_a_file, true),
        mount(&volume, &shared, true),
    ];
    let mut first = runtime.start(&spec("pod-one", "main", "true", mounts)).expect("start");
    assert_eq!(within("the exit", first.wait()).await, Exit::Code(0));
    // A second pod mounts below one of the first's created targets (which it finds).
    let mut second = runtime
        .start(&spec(
            "pod-two",
            "main",
            "true",
            vec![mount(&volume, &shared.join("deeper"), true)],
        ))
        .expect("start");
    assert_eq!(within("the exit", second.wait()).await, Exit::Code(0));
    assert_eq!(
        f.created_targets("pod-one", "main"),
        // Shallower targets are mounted (and so created) first.
        ["kept", "kept/dir", "shared", "shared/x", "a", "a/b", "a/b/c"].map(|path| f.host.join(path))
    );
    assert_eq!(f.created_targets("pod-two", "main"), vec![shared.join("deeper")]);
    fs::write(f.host.join("kept/not-ours"), "").expect("write");

    runtime.remove_pod("pod-one").expect("remove");
    assert!(!f.host.join("a").exists());
    assert!(!gains_a_file.exists());
    assert_eq!(names(&f.host.join("kept")), vec!["not-ours"]);
    assert!(shared.join("deeper").is_dir(), "a target another pod uses was removed");
    runtime.remove_pod("pod-two").expect("remove");
    assert!(!shared.join("deeper").exists());
    assert!(!f.root.join("pod-one").exists() && !f.root.join("pod-two").exists());
    // The volume itself is never touched.
    assert!(volume.is_dir());
}

/// A missing source, and a command that cannot be run, end the container with
/// container-init's exit code and the reason in its log; the command never runs.
async fn init_failures_end_the_container(f: Fixture) {
    let runtime = f.runtime();
    let missing = f.host.join("volumes/missing");
    let target = f.host.join("mnt/data");
    let mut container = runtime
        .start(&spec(
            "pod-fail",
            "main",
            "echo the-command-ran",
            vec![mount(&missing, &target, true)],
        ))
        .expect("start");
    let exit = within("the exit", container.wait()).await;
    assert_eq!((exit, exit.exit_code()), (Exit::Code(init::EXIT_CODE), Some(127)));
    let log = read(&runtime.log_path("pod-fail", "main", false));
    assert!(log.starts_with("container-init: "), "{log}");
    assert!(log.contains(&missing.display().to_string()), "{log}");
    assert!(log.contains("No such file or directory"), "{log}");
    assert!(!log.contains("the-command-ran"), "{log}");
    assert!(
        !target.exists(),
        "a target was created for a mount that could not be made"
    );

    let volume = f.dir("volumes/v");
    let mut unrunnable = spec("pod-fail", "second", "", vec![mount(&volume, &target, true)]);
    unrunnable.command = vec!["/nonexistent/program".into()];
    let mut container = runtime.start(&unrunnable).expect("start");
    assert_eq!(within("the exit", container.wait()).await, Exit::Code(init::EXIT_CODE));
    let log = read(&runtime.log_path("pod-fail", "second", false));
    assert!(
        log.starts_with("container-init: running \"/nonexistent/program\""),
        "{log}"
    );
    assert!(log.contains("No such file or directory"), "{log}");
}

/// container-init `exec`s: the pid the runtime recorded is the command's, with the start
/// time recorded, in a mount namespace of its own; a new runtime adopts it.
async fn adoption_after_the_exec(f: Fixture) {
    let volume = f.dir("volumes/v");
    fs::write(volume.join("key"), "adopt-me\n").expect("write");
    let target = f.host.join("adopt/config");
    let (pid, recorded) = {
        let runtime = f.runtime();
        let container = runtime
            .start(&spec(
                "pod-adopt",
                "main",
                &format!("cat {}/key; echo up; exec sleep 30", target.display()),
                vec![mount(&volume, &target, true)],
            ))
            .expect("start");
        let log = runtime.log_path("pod-adopt", "main", false);
        eventually("the command is up", || read(&log).contains("up\n")).await;
        assert!(read(&log).starts_with("adopt-me\n"), "{}", read(&log));
        let state = runtime.state("pod-adopt", "main").expect("state").expect("a state");
        assert_eq!(state.pid, container.pid());
        (container.pid(), state.start_time_ticks)
        // The runtime and the handle go; the process stays.
    };
    // The process is now the command (sh, then sleep), not container-init.
    eventually("the command has exec'd sleep", || {
        read(Path::new(&format!("/proc/{pid}/cmdline"))).starts_with("sleep\0")
    })
    .await;
    assert_eq!(start_time_ticks(pid), Some(recorded), "the exec changed the start time");
    let namespace = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("a mount namespace");
    assert_ne!(namespace(&pid.to_string()), namespace("self"));

    let runtime = f.runtime();
    let mut adopted = runtime.adopt().expect("adopt");
    assert_eq!(adopted.len(), 1, "the container was not adopted");
    let mut container = adopted.pop().expect("one");
    assert_eq!((container.pid(), container.name()), (pid, "main"));
    assert!(container.adopted());
    let exit = within("the stop", runtime.stop(&mut container, DEADLINE))
        .await
        .expect("stop");
    assert_eq!(exit, Exit::Unknown);
    assert!(!alive(pid));
    runtime.remove_pod("pod-adopt").expect("remove");
    assert!(!f.host.join("adopt").exists());
}
