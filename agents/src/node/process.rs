//! The process runtime: the node agent's default container runtime, which runs each
//! container of a pod as a local OS process.
//!
//! # Layout
//!
//! Everything lives under one root directory, one directory per container:
//!
//! ```text
//! <root>/<pod uid>/<container>/current.log      stdout and stderr of the current run
//!                              current.log.1 …  rotated copies, newest first
//!                              previous.log     the previous run's current.log
//!                              state.json       pid, /proc start time, restart count, …
//!                              work/            the default working directory
//!                              mount-targets    mount targets container-init created
//! ```
//!
//! # Files, not pipes
//!
//! A container's stdout and stderr are one file opened with `O_APPEND` and handed to the
//! process as its fds 1 and 2; nothing of the output passes through the agent. A pipe
//! would tie the container to the agent: if the agent died, the container would get
//! `SIGPIPE` (or block on a full pipe) at its next write, and a restarted agent could not
//! reopen the other end. With a file the container keeps running and logging while the
//! agent is down, and the agent only ever reads the file (as `kubectl logs` wants).
//!
//! # Process groups
//!
//! Each container starts in a process group of its own (`setpgid(0, 0)`, its pgid is its
//! pid), so that a stop reaches everything the container forked: `SIGTERM` to the group,
//! up to the grace period, then `SIGKILL` to the group. When the container's main process
//! ends, on its own or stopped, what is left of its group is killed, as the end of a
//! container's pid namespace would. A process that leaves the group (`setsid`, a shell's
//! job control) escapes this; with a memory cgroup (below) it is still killed when the
//! cgroup is removed.
//!
//! # Adoption, and PIDs that are reused
//!
//! A container outlives the agent. On start the runtime writes `state.json` with the pid
//! and the process's start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot);
//! [`ProcessRuntime::adopt`] takes back every container whose pid is alive, still leads
//! its own process group and still has that start time. A pid the kernel has given to
//! another process since has another start time, so a reused pid is never taken for the
//! container. An adopted process is no longer this process's child: its exit status
//! cannot be had, [`Container::wait`] sees its end by polling `/proc` and returns
//! [`Exit::Unknown`]. (Between the last check of `/proc` and a signal a pid could in
//! theory be reused; that takes the pid space wrapping around within microseconds.)
//!
//! # Log rotation: copytruncate
//!
//! [`ProcessRuntime::rotate_logs`] copies a `current.log` larger than
//! [`LogLimits::file_bytes_max`] to `current.log.1` (after shifting the older copies up
//! and deleting the oldest, so at most [`LogLimits::files_max`] files including
//! `current.log`) and truncates `current.log`. The file cannot be renamed away as logrotate
//! would, since the container holds it open and cannot be told to reopen it; because it
//! writes with `O_APPEND`, each write after the truncation lands at the new end. **What the
//! container writes between the end of the copy and the truncation is lost** (usually
//! nothing, at most what it writes in that moment).
//!
//! # Memory limits: cgroup v2, else the cgroup v1 memory controller
//!
//! A container with a memory limit gets a cgroup of its own, `capstan-<pod uid>-<container>`,
//! under this process's own cgroup (from `/proc/self/cgroup`), in the first of these that
//! works (a probe cgroup is created and removed when the runtime starts, to find out):
//!
//! - **cgroup v2** mounted at `/sys/fs/cgroup`, with the `memory` controller enabled in the
//!   `cgroup.subtree_control` of this process's cgroup: `memory.max` is set, and
//!   `memory.oom.group`, so that an OOM kill takes the whole container, as the kubelet
//!   does. (cgroup v2 lets a cgroup other than the root hand controllers to children only
//!   if it has no processes of its own, so outside the root cgroup the agent must be run
//!   in a layout that allows this.)
//! - **the cgroup v1 memory controller** (a v1 or hybrid host), wherever it is mounted:
//!   the mount is found in `/proc/self/mountinfo` (a `cgroup` mount with the `memory`
//!   option whose root holds this process's memory cgroup). `memory.limit_in_bytes` is
//!   set, and `memory.memsw.limit_in_bytes` to the same value where that file exists (swap
//!   accounting on), so that swapping out does not dodge the limit; without it the limit
//!   holds for RAM only. v1 allows children under a cgroup with processes of its own, so
//!   this works from whatever cgroup the agent runs in. v1 has no `memory.oom.group`: an
//!   OOM kill takes the one process the kernel picks (the largest), which ends the
//!   container only when that is its main process (the rest of the group then goes as on
//!   any end).
//!
//! The process is moved into its cgroup right after it is spawned: **for that moment it
//! runs without the limit** (a process it forks in that moment stays outside, and on v1
//! what it allocated by then stays charged to the agent's cgroup). When neither hierarchy is usable the runtime says once, at warn level,
//! why, [`ProcessRuntime::memory_limits_enforced`] is false, and containers start anyway.
//! A cgroup problem never fails a start: that container runs without a limit, said at
//! warn level.
//!
//! When the container ends, what is left in its cgroup (processes that left the process
//! group) is killed, with `cgroup.kill` on v2 (Linux 5.14), else with `SIGKILL` to every
//! process in `cgroup.procs`, again and again (one may fork meanwhile) until the cgroup can
//! be removed, for up to [`CGROUP_EMPTY_WAIT_MAX`]; one still busy then is left for
//! [`ProcessRuntime::remove_pod`]. A handle whose container has been started again before
//! it saw the end leaves the cgroup alone: it has the same name and holds the new run. A
//! cgroup of the same name left from an unclean end is removed (what is in it killed)
//! before a start creates it anew, so that its counters start at zero. An adopted
//! container keeps its cgroup (`memory_cgroup` in `state.json`; only a `capstan-…`
//! directory on a cgroup filesystem, v1 or v2, is ever taken from there).
//!
//! ## OOM kills
//!
//! At the end of a container, before its cgroup goes (with its counters), the runtime
//! reads whether the kernel's OOM killer killed a process in it during the run:
//! [`Container::oom_killed`], kept as `oom_killed` in `state.json`, which the agent
//! reports as the reason `OOMKilled`.
//!
//! - v2: `oom_kill` in `memory.events` is above 0.
//! - v1: `oom_kill` in `memory.oom_control` is above 0 (Linux 4.13 on). Older kernels
//!   count no kills; there the run counts as OOM-killed when its main process was killed
//!   by `SIGKILL` and `memory.failcnt` (or `memory.memsw.failcnt`) is above 0, i.e. the
//!   cgroup hit its limit at some point: a guess, wrong when something else sent that
//!   `SIGKILL`, and never yes for an adopted container (its exit is unknown).
//!
//! The kill of a process other than the main one (on v1, or on v2 where
//! `memory.oom.group` could not be set) counts too, even when the main process then exits
//! on its own. A container without a cgroup is never reported OOM-killed: a host-wide OOM
//! kill looks like any other `SIGKILL`.
//!
//! # Mounts: container-init
//!
//! A container without mounts sees the host's filesystem as the agent does. A container
//! with [`ContainerSpec::mounts`] is started through the init program
//! ([`ProcessRuntime::with_init_program`], the `capstan` binary): the runtime spawns
//! `<init program> container-init <args>` (see [`super::init`]) in place of the command,
//! with everything else the same; container-init makes a mount namespace of its own with
//! the bind mounts, changes to the working directory (after mounting, so that it may be
//! inside a mount) and `exec`s the command. The pid and start time recorded are then the
//! command's, so adoption is unchanged. A failure there (a missing source) ends the
//! container with exit code [`super::init::EXIT_CODE`] and the reason in its log. Without
//! an init program, a container with mounts is refused.
//!
//! Targets that container-init had to create on the host are listed in `mount-targets`;
//! [`ProcessRuntime::remove_pod`] removes those still empty, except where a container of
//! another pod still on this root has a mount target at or below them: on the host the
//! path is just an empty directory, but removing it would detach the other container's
//! mount in its namespace.
//!
//! # Left out, on purpose
//!
//! - An image's root filesystem: a container sees the host's filesystem, with its mounts
//!   on top; an empty `command` (which would need the image's entrypoint) is refused.
//! - User switching: the container runs as the agent's user.
//! - Network namespaces: pods share the host network; each pod binds its own 127.x
//!   address.
//! - PID and IPC namespaces, CPU limits, seccomp and capabilities.
//! - cgroup v2 mounted anywhere but `/sys/fs/cgroup`, and a v1 memory controller whose
//!   every mount leaves out this process's memory cgroup (a cgroup namespace, a bind mount
//!   of another subtree): memory limits are then not enforced. A container without
//!   `memory_limit_bytes` gets no cgroup (nor an OOM report), and a pod as a whole has
//!   no cgroup or limit.
//! - The exit status of an adopted container (it would take a small monitor process per
//!   container, as conmon is, to keep it across an agent restart).
//!
//! All methods do blocking filesystem work; [`ProcessRuntime::start`] must be called
//! within a tokio runtime (it registers the child with tokio's process driver), and
//! [`ProcessRuntime::rotate_logs`], which copies files of up to
//! [`LogLimits::file_bytes_max`], is best called from `spawn_blocking`. The end of a
//! container whose cgroup still holds processes blocks for up to
//! [`CGROUP_EMPTY_WAIT_MAX`] while they go.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::fs::FsWord;
use rustix::io::Errno;
use rustix::process::{kill_process, kill_process_group, Pid, Signal};
use serde::{Deserialize, Serialize};

use super::init;
use crate::{AgentError, Result};

/// The `PATH` a container gets when its spec sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The command and its arguments together, counting a terminating NUL for each.
pub const COMMAND_BYTES_MAX: usize = 64 * 1024;
/// The environment, counting `NAME=value` and a NUL for each variable. (Linux allows
/// about 2 MiB for arguments and environment together.)
pub const ENV_BYTES_MAX: usize = 1024 * 1024;
/// A pod uid (a UUID has 36 bytes); it names a directory and part of a cgroup.
pub const POD_UID_BYTES_MAX: usize = 128;
/// A container name (a DNS label in Kubernetes); it names a directory and part of a cgroup.
pub const CONTAINER_NAME_BYTES_MAX: usize = 63;
/// A namespace or pod name (DNS subdomains), kept in the state file.
pub const OBJECT_NAME_BYTES_MAX: usize = 253;
/// The root directory: leaves room under Linux's 4,096-byte paths for what goes below it.
pub const ROOT_PATH_BYTES_MAX: usize = 3072;
/// A working directory given in a spec.
pub const WORKING_DIR_BYTES_MAX: usize = 4095;
/// Log files per container, `current.log` included.
pub const LOG_FILES_MAX: usize = 100;
/// A state file larger than this is not ours (ours are a few hundred bytes).
const STATE_FILE_BYTES_MAX: u64 = 64 * 1024;
/// `/proc/<pid>/stat` is a few hundred bytes; a long `comm` cannot make it longer than this.
const PROC_STAT_BYTES_MAX: u64 = 4096;
/// Longest wait for a process to go after `SIGKILL` (only a process stuck in the kernel
/// takes more than a moment).
const KILL_WAIT_MAX: Duration = Duration::from_secs(10);
/// First and longest pause between two looks at `/proc` for the end of an adopted process.
const ADOPTED_POLL_FIRST: Duration = Duration::from_millis(10);
const ADOPTED_POLL_MAX: Duration = Duration::from_secs(1);

/// Longest wait for a container's cgroup to empty after its processes were killed (a
/// moment, unless one is stuck in the kernel); the cgroup is then left for
/// [`ProcessRuntime::remove_pod`].
pub const CGROUP_EMPTY_WAIT_MAX: Duration = Duration::from_secs(1);
/// `/proc/self/cgroup`: a line per hierarchy.
const PROC_CGROUP_BYTES_MAX: u64 = 64 * 1024;
/// `/proc/self/mountinfo`: about 100 bytes a mount, so thousands of mounts.
const MOUNTINFO_BYTES_MAX: u64 = 1024 * 1024;
/// A cgroup's counter files (`memory.events`, `memory.oom_control`, `memory.failcnt`;
/// `cpu.stat`, `memory.current` and `memory.stat` for [`super::usage`]).
pub(super) const CGROUP_FILE_BYTES_MAX: u64 = 4096;
/// `cgroup.procs` of a container's cgroup: a line per process, so ~100,000 processes.
const CGROUP_PROCS_BYTES_MAX: u64 = 1024 * 1024;
/// `statfs`'s `f_type` of the cgroup v1 and v2 filesystems (linux/magic.h).
const CGROUP_SUPER_MAGIC: FsWord = 0x0027_e0eb;
const CGROUP2_SUPER_MAGIC: FsWord = 0x6367_7270;

/// Where cgroup v2 is looked for.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CURRENT_LOG: &str = "current.log";
const PREVIOUS_LOG: &str = "previous.log";
const STATE_FILE: &str = "state.json";
const WORK_DIR: &str = "work";
const MOUNT_TARGETS: &str = "mount-targets";

/// How much log a container keeps (the kubelet's `containerLogMaxSize` and
/// `containerLogMaxFiles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// `current.log` is rotated once it is larger than this.
    pub file_bytes_max: u64,
    /// Files kept per container, `current.log` included (at least 2).
    pub files_max: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            file_bytes_max: 10 * 1024 * 1024,
            files_max: 5,
        }
    }
}

/// What to run for one container of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    pub pod_uid: String,
    pub namespace: String,
    pub pod_name: String,
    pub container: String,
    /// `command` followed by `args`, already resolved (`$(VAR)` expanded); the first is
    /// looked up in the container's `PATH` when it has no `/`.
    pub command: Vec<String>,
    /// The whole environment; later entries win over earlier ones of the same name.
    pub env: Vec<(String, String)>,
    /// An absolute path that exists; default: `work/` in the container's directory.
    pub working_dir: Option<PathBuf>,
    pub memory_limit_bytes: Option<u64>,
    /// Bind mounts (volumes, `/etc/resolv.conf`): these need an init program (see the
    /// module doc). At most [`init::MOUNTS_MAX`].
    pub mounts: Vec<init::Mount>,
}

/// How a container's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It ended, but how cannot be known (an adopted process: not this process's child).
    Unknown,
}

impl Exit {
    /// The exit code Kubernetes reports: the code, or 128 + the signal (137 for `SIGKILL`).
    pub fn exit_code(self) -> Option<i32> {
        match self {
            Exit::Code(code) => Some(code),
            Exit::Signal(signal) => Some(128 + signal),
            Exit::Unknown => None,
        }
    }

    fn from_status(status: ExitStatus) -> Exit {
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Unknown,
        }
    }
}

/// What `state.json` holds about a container's latest run (or attempt at one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub namespace: String,
    pub pod_name: String,
    /// 0 when the process could not be started (see `start_error`).
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: clock ticks from boot to the process's start.
    pub start_time_ticks: u64,
    /// Starts of this container before this one.
    pub restart_count: u32,
    /// RFC 3339, seconds.
    pub started_at: String,
    /// Why the process could not be started, if it could not.
    #[serde(default)]
    pub start_error: Option<String>,
    /// How it ended, when the runtime saw it end.
    #[serde(default)]
    pub exit: Option<Exit>,
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Whether the kernel's OOM killer killed a process in the container's memory cgroup
    /// during the run (see the module doc); recorded with the exit.
    #[serde(default)]
    pub oom_killed: bool,
    /// The memory cgroup it was put in.
    #[serde(default)]
    pub memory_cgroup: Option<PathBuf>,
    /// Where its mounts are, as the container sees them (kept so that removing another
    /// pod leaves alone the targets this one uses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_targets: Vec<PathBuf>,
}

/// The process runtime (see the module doc).
#[derive(Debug)]
pub struct ProcessRuntime {
    root: PathBuf,
    log_limits: LogLimits,
    /// The cgroup under which containers get theirs, when memory limits can be enforced.
    cgroup_parent: Option<CgroupParent>,
    /// The program that runs `container-init`, for containers with mounts.
    init_program: Option<PathBuf>,
    /// Serialises changes to the directory layout (start, rotation, removal, adoption,
    /// recording an exit), so that e.g. a rotation never copies a log a start is moving.
    layout: Arc<Mutex<()>>,
}

/// A handle on a running (or ended) container. Dropping it leaves the process running
/// (a later [`ProcessRuntime::adopt`] takes it back).
#[derive(Debug)]
pub struct Container {
    id: String,
    pod_uid: String,
    name: String,
    pid: u32,
    start_time_ticks: u64,
    restart_count: u32,
    dir: PathBuf,
    memory_cgroup: Option<PathBuf>,
    /// `None` for an adopted process.
    child: Option<tokio::process::Child>,
    /// Set once the end has been seen (and cleaned up after).
    exit: Option<Exit>,
    /// Read from the cgroup at the end.
    oom_killed: bool,
    layout: Arc<Mutex<()>>,
}

/// The cgroup hierarchy that containers' memory cgroups are made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CgroupVersion {
    V1,
    V2,
}

impl CgroupVersion {
    fn describe(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "the cgroup v1 memory controller",
            CgroupVersion::V2 => "cgroup v2",
        }
    }
}

/// The cgroup under which containers get theirs (this process's own).
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupParent {
    path: PathBuf,
    version: CgroupVersion,
}

impl Container {
    /// Unique per run: `process://<pod uid>/<container>/<restart count>` (the form of a
    /// pod status's `containerID`).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn pod_uid(&self) -> &str {
        &self.pod_uid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The main process, which leads the container's process group.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn restart_count(&self) -> u32 {
        self.restart_count
    }

    /// Whether this handle came from [`ProcessRuntime::adopt`] (its exit will be
    /// [`Exit::Unknown`]).
    pub fn adopted(&self) -> bool {
        self.child.is_none()
    }

    /// Whether the kernel's OOM killer killed a process in the container's memory cgroup
    /// during this run (see the module doc). Valid once [`Container::wait`] (or
    /// [`ProcessRuntime::stop`]) has returned; false before, for a container without a
    /// memory cgroup, and for a handle whose container was started again before it saw
    /// the end.
    pub fn oom_killed(&self) -> bool {
        self.oom_killed
    }

    /// Waits for the main process to end, then kills what is left of its process group,
    /// removes its cgroup and records the exit in `state.json`. Cancel-safe; once ended,
    /// returns the same exit at once.
    pub async fn wait(&mut self) -> Exit {
        if let Some(exit) = self.exit {
            return exit;
        }
        let exit = match self.child.as_mut() {
            Some(child) => match child.wait().await {
                Ok(status) => Exit::from_status(status),
                Err(e) => {
                    tracing::warn!(container = %self.id, error = %e, "waiting for a container process failed");
                    Exit::Unknown
                }
            },
            None => {
                let mut pause = ADOPTED_POLL_FIRST;
                while process_is(self.pid, self.start_time_ticks) {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(ADOPTED_POLL_MAX);
                }
                Exit::Unknown
            }
        };
        // Nothing awaits from here on, so a cancelled wait never loses the exit.
        self.finish(exit);
        exit
    }

    /// The end without waiting: `Some` once the main process has ended.
    fn try_exit(&mut self) -> Option<Exit> {
        if let Some(exit) = self.exit {
            return Some(exit);
        }
        let exit = match self.child.as_mut() {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Exit::from_status(status),
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(container = %self.id, error = %e, "checking on a container process failed");
                    return None;
                }
            },
            None if process_is(self.pid, self.start_time_ticks) => return None,
            None => Exit::Unknown,
        };
        self.finish(exit);
        Some(exit)
    }

    /// What follows the end of the main process (see [`Container::wait`]); best effort.
    fn finish(&mut self, exit: Exit) {
        self.exit = Some(exit);
        // Only leftovers of this container (ESRCH when there are none; see signal_group).
        match signal_group(self.pid, Some(self.start_time_ticks), Signal::KILL) {
            Ok(()) => tracing::debug!(container = %self.id, "killed what was left of the container's process group"),
            Err(e) if e.raw_os_error() == Some(Errno::SRCH.raw_os_error()) => {}
            Err(e) => {
                tracing::warn!(container = %self.id, error = %e, "killing the rest of a container's process group failed")
            }
        }
        // Held through the cgroup's removal too, so that no start of the container can
        // come between the check below and the removal.
        let _layout = lock(&self.layout);
        let path = self.dir.join(STATE_FILE);
        let state = read_state(&path);
        // Whether this run is still the container's latest: it may have been started again
        // since, in a cgroup of the same name, which must then be left alone. When the state
        // cannot be read that is not known either, and the cgroup stays for remove_pod.
        let latest = match &state {
            Ok(Some(state)) => state.pid == self.pid && state.start_time_ticks == self.start_time_ticks,
            Ok(None) => true,
            Err(_) => false,
        };
        if let Some(cgroup) = self.memory_cgroup.take() {
            if latest {
                // Before the removal, which takes the counters with it.
                self.oom_killed = oom_killed_in(&cgroup, exit);
                remove_cgroup(&cgroup);
            }
        }
        match state {
            Ok(Some(mut state)) if latest => {
                state.exit = Some(exit);
                state.finished_at = Some(rfc3339_now());
                state.oom_killed = self.oom_killed;
                if let Err(e) = write_state(&path, &state) {
                    tracing::warn!(container = %self.id, error = %e, "recording a container's exit failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(container = %self.id, error = %e, "recording a container's exit failed"),
        }
        tracing::info!(container = %self.id, pid = self.pid, ?exit, oom_killed = self.oom_killed, "container ended");
    }
}

impl ProcessRuntime {
    /// A runtime keeping its containers' directories under `root` (created if missing).
    pub fn new(root: PathBuf, log_limits: LogLimits) -> Result<ProcessRuntime> {
        if log_limits.file_bytes_max == 0 {
            return Err(AgentError::Config("log file_bytes_max must be positive".into()));
        }
        if !(2..=LOG_FILES_MAX).contains(&log_limits.files_max) {
            return Err(AgentError::Config(format!(
                "log files_max must be between 2 and {LOG_FILES_MAX} (current.log included), not {}",
                log_limits.files_max
            )));
        }
        fs::create_dir_all(&root).map_err(|e| io_error(format!("creating the runtime root {}", root.display()), e))?;
        // Absolute from here on: paths are handed to children and kept in state files.
        let root = fs::canonicalize(&root)
            .map_err(|e| io_error(format!("resolving the runtime root {}", root.display()), e))?;
        if root.as_os_str().len() > ROOT_PATH_BYTES_MAX {
            return Err(AgentError::Config(format!(
                "the runtime root {} is longer than {ROOT_PATH_BYTES_MAX} bytes",
                root.display()
            )));
        }
        // Adoption and stopping adopted processes depend on /proc.
        read_proc_stat(std::process::id())
            .map_err(|e| io_error("reading /proc/self/stat (the process runtime needs /proc)".into(), e))?;
        let cgroup_parent = match memory_cgroup_parent() {
            Ok(parent) => {
                tracing::info!(
                    cgroup = %parent.path.display(),
                    "container memory limits are enforced with {}",
                    parent.version.describe()
                );
                Some(parent)
            }
            Err(why) => {
                tracing::warn!("container memory limits are not enforced: {why}");
                None
            }
        };
        Ok(ProcessRuntime {
            root,
            log_limits,
            cgroup_parent,
            init_program: None,
            layout: Arc::new(Mutex::new(())),
        })
    }

    /// The program containers with mounts are started through, as `<path> container-init
    /// <args>` (the `capstan` binary: `std::env::current_exe()`). An absolute path.
    pub fn with_init_program(mut self, path: PathBuf) -> Self {
        self.init_program = Some(path);
        self
    }

    /// The (absolute) root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether a container's `memory_limit_bytes` is enforced (see the module doc).
    pub fn memory_limits_enforced(&self) -> bool {
        self.cgroup_parent.is_some()
    }

    /// Starts a container's process (see the module doc). Refused (`Config`) when the spec
    /// is unreasonable or the container's previous run is still alive; a failure to spawn
    /// counts as a run (restart count, `start_error` in the state) as it does in
    /// Kubernetes.
    pub fn start(&self, spec: &ContainerSpec) -> Result<Container> {
        validate_spec(spec)?;
        let dir = self.container_dir(&spec.pod_uid, &spec.container);
        let init = self.init_command(spec, &dir)?;
        let _layout = lock(&self.layout);
        fs::create_dir_all(&dir).map_err(|e| io_error(format!("creating {}", dir.display()), e))?;
        let state_path = dir.join(STATE_FILE);
        let previous = match read_state(&state_path) {
            Ok(previous) => previous,
            Err(e) => {
                // The count starts again rather than the container never starting.
                tracing::warn!(path = %state_path.display(), error = %e, "ignoring an unreadable container state");
                None
            }
        };
        if let Some(previous) = &previous {
            if previous.pid != 0 && process_is(previous.pid, previous.start_time_ticks) {
                return Err(AgentError::Config(format!(
                    "container {} of pod {} is already running (pid {})",
                    spec.container, spec.pod_uid, previous.pid
                )));
            }
        }
        let working_dir = match &spec.working_dir {
            // container-init changes to it after mounting, and says so if it cannot.
            Some(working_dir) if spec.mounts.iter().any(|mount| working_dir.starts_with(&mount.target)) => {
                working_dir.clone()
            }
            Some(working_dir) => {
                let meta = fs::metadata(working_dir).map_err(|e| {
                    io_error(
                        format!(
                            "working directory {} of container {}",
                            working_dir.display(),
                            spec.container
                        ),
                        e,
                    )
                })?;
                if !meta.is_dir() {
                    return Err(AgentError::Config(format!(
                        "working directory {} of container {} is not a directory",
                        working_dir.display(),
                        spec.container
                    )));
                }
                working_dir.clone()
            }
            None => {
                let work = dir.join(WORK_DIR);
                fs::create_dir_all(&work).map_err(|e| io_error(format!("creating {}", work.display()), e))?;
                work
            }
        };
        let restart_count = previous.map_or(0, |previous| previous.restart_count.saturating_add(1));
        let mut state = ContainerState {
            namespace: spec.namespace.clone(),
            pod_name: spec.pod_name.clone(),
            pid: 0,
            start_time_ticks: 0,
            restart_count,
            started_at: rfc3339_now(),
            start_error: None,
            exit: None,
            finished_at: None,
            oom_killed: false,
            memory_cgroup: None,
            mount_targets: spec.mounts.iter().map(|mount| mount.target.clone()).collect(),
        };
        let id = format!("process://{}/{}/{restart_count}", spec.pod_uid, spec.container);

        let spawned = self.spawn(spec, &dir, &working_dir, init.as_ref(), &id);
        let (child, pid, start_time_ticks, memory_cgroup) = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                state.start_error = Some(e.to_string());
                state.finished_at = Some(rfc3339_now());
                if let Err(write_error) = write_state(&state_path, &state) {
                    tracing::warn!(container = %id, error = %write_error, "recording a failed start failed");
                }
                return Err(e);
            }
        };
        state.pid = pid;
        state.start_time_ticks = start_time_ticks;
        state.memory_cgroup = memory_cgroup.clone();
        if let Err(e) = write_state(&state_path, &state) {
            // Unrecorded, the process could neither be adopted nor told from a reused pid
            // after an agent restart: better not to run it.
            abandon(pid, child, memory_cgroup.as_deref());
            return Err(e);
        }
        tracing::info!(container = %id, pid, restart_count, "container started");
        Ok(Container {
            id,
            pod_uid: spec.pod_uid.clone(),
            name: spec.container.clone(),
            pid,
            start_time_ticks,
            restart_count,
            dir,
            memory_cgroup,
            child: Some(child),
            exit: None,
            oom_killed: false,
            layout: Arc::clone(&self.layout),
        })
    }

    /// For a container with mounts, the init program and the arguments of
    /// `container-init`; refused (`Config`) without an init program or when they would be
    /// too long.
    fn init_command(&self, spec: &ContainerSpec, dir: &Path) -> Result<Option<(PathBuf, Vec<OsString>)>> {
        if spec.mounts.is_empty() {
            return Ok(None);
        }
        let Some(init_program) = &self.init_program else {
            return Err(AgentError::Config(format!(
                "container {} of pod {} has volume mounts, which need an init program (container-init), and the process runtime was given none",
                spec.container, spec.pod_uid
            )));
        };
        if !init_program.is_absolute() {
            return Err(AgentError::Config(format!(
                "the init program {} is not an absolute path",
                init_program.display()
            )));
        }
        let working_dir = spec.working_dir.clone().unwrap_or_else(|| dir.join(WORK_DIR));
        let args = init::init_args(&spec.mounts, &dir.join(MOUNT_TARGETS), &working_dir, &spec.command);
        let bytes = init::args_bytes(&args);
        if bytes > init::ARGS_BYTES_MAX {
            return Err(AgentError::Config(format!(
                "the command and mounts of container {} take {bytes} bytes as container-init's arguments, more than {}",
                spec.container,
                init::ARGS_BYTES_MAX
            )));
        }
        Ok(Some((init_program.clone(), args)))
    }

    /// Moves the logs along, spawns the process (through container-init when `init_args`
    /// are given) and puts it in its cgroup.
    fn spawn(
        &self,
        spec: &ContainerSpec,
        dir: &Path,
        working_dir: &Path,
        init: Option<&(PathBuf, Vec<OsString>)>,
        id: &str,
    ) -> Result<(tokio::process::Child, u32, u64, Option<PathBuf>)> {
        let current = dir.join(CURRENT_LOG);
        match fs::rename(&current, dir.join(PREVIOUS_LOG)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(format!("keeping {} as {PREVIOUS_LOG}", current.display()), e)),
        }
        // The previous run's rotated copies go: previous.log is its latest output.
        remove_rotated_logs(dir, 1)?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&current)
            .map_err(|e| io_error(format!("opening {}", current.display()), e))?;
        let log_for_stderr = log
            .try_clone()
            .map_err(|e| io_error(format!("duplicating {}", current.display()), e))?;

        let memory_cgroup = match (&self.cgroup_parent, spec.memory_limit_bytes) {
            (Some(parent), Some(limit)) => prepare_cgroup(parent, spec, limit),
            _ => None,
        };

        let mut env = spec.env.clone();
        if !env.iter().any(|(name, _)| name == "PATH") {
            env.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        let (mut command, program) = match init {
            Some((init_program, init_args)) => {
                let mut command = tokio::process::Command::new(init_program);
                // container-init changes to the working directory itself, after mounting.
                command.arg("container-init").args(init_args).current_dir("/");
                (command, init_program.as_os_str())
            }
            None => {
                let mut command = tokio::process::Command::new(&spec.command[0]);
                command.args(&spec.command[1..]).current_dir(working_dir);
                (command, std::ffi::OsStr::new(&spec.command[0]))
            }
        };
        command
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_for_stderr))
            .process_group(0)
            // The container must outlive its handle and the agent.
            .kill_on_drop(false);
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                if let Some(cgroup) = &memory_cgroup {
                    remove_cgroup(cgroup);
                }
                return Err(io_error(format!("starting container {id}: running {program:?}"), e));
            }
        };
        let Some(pid) = child.id() else {
            // tokio forgets the pid only once the child has been waited for, which it has not.
            abandon(0, child, memory_cgroup.as_deref());
            return Err(AgentError::Config(format!("container {id}: its process has no pid")));
        };
        let memory_cgroup = memory_cgroup.and_then(|cgroup| match fs::write(cgroup.join("cgroup.procs"), pid.to_string()) {
            Ok(()) => Some(cgroup),
            Err(e) => {
                tracing::warn!(container = %id, cgroup = %cgroup.display(), error = %e, "could not put the container in its memory cgroup; it runs without a memory limit");
                remove_cgroup(&cgroup);
                None
            }
        });
        // Readable even if it has ended already: unreaped, it stays in /proc.
        match read_proc_stat(pid) {
            Ok(stat) => Ok((child, pid, stat.start_time_ticks, memory_cgroup)),
            Err(e) => {
                abandon(pid, child, memory_cgroup.as_deref());
                Err(io_error(format!("reading /proc/{pid}/stat of container {id}"), e))
            }
        }
    }

    /// Stops a container: `SIGTERM` to its process group, up to `grace` for it to end,
    /// then `SIGKILL` to the group. Returns how the main process ended, at once if it
    /// already had.
    pub async fn stop(&self, container: &mut Container, grace: Duration) -> Result<Exit> {
        if let Some(exit) = container.try_exit() {
            return Ok(exit);
        }
        tracing::info!(container = %container.id, pid = container.pid, ?grace, "stopping container");
        if let Err(e) = signal_group(container.pid, Some(container.start_time_ticks), Signal::TERM) {
            // Gone meanwhile (ESRCH): the wait below returns at once.
            if e.raw_os_error() != Some(Errno::SRCH.raw_os_error()) {
                return Err(io_error(format!("sending SIGTERM to container {}", container.id), e));
            }
        }
        if let Ok(exit) = tokio::time::timeout(grace, container.wait()).await {
            return Ok(exit);
        }
        tracing::info!(container = %container.id, pid = container.pid, "container outlived its grace period; killing it");
        if let Err(e) = signal_group(container.pid, Some(container.start_time_ticks), Signal::KILL) {
            if e.raw_os_error() != Some(Errno::SRCH.raw_os_error()) {
                return Err(io_error(format!("sending SIGKILL to container {}", container.id), e));
            }
        }
        tokio::time::timeout(KILL_WAIT_MAX, container.wait())
            .await
            .map_err(|_| {
                io_error(
                    format!(
                        "container {} (pid {}) did not end within {KILL_WAIT_MAX:?} of SIGKILL",
                        container.id, container.pid
                    ),
                    io::Error::from(io::ErrorKind::TimedOut),
                )
            })
    }

    /// Takes back the containers whose processes outlived a previous runtime on the same
    /// root: every state file whose pid is alive, leads its own process group and has the
    /// recorded start time. The state of the others stays for the agent to read
    /// ([`ProcessRuntime::state`]) and report as exited.
    pub fn adopt(&self) -> Result<Vec<Container>> {
        let _layout = lock(&self.layout);
        let mut adopted = Vec::new();
        let own_pid = std::process::id();
        for (pod_uid, name, dir) in self.container_dirs()? {
            let path = dir.join(STATE_FILE);
            let state = match read_state(&path) {
                Ok(Some(state)) => state,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable container state");
                    continue;
                }
            };
            if state.pid <= 1 || state.pid == own_pid || state.exit.is_some() || state.start_error.is_some() {
                continue;
            }
            match read_proc_stat(state.pid) {
                Ok(stat)
                    if stat.running()
                        && stat.start_time_ticks == state.start_time_ticks
                        && stat.process_group == state.pid => {}
                _ => continue,
            }
            let memory_cgroup = state.memory_cgroup.filter(|cgroup| is_our_cgroup(cgroup));
            let id = format!("process://{pod_uid}/{name}/{}", state.restart_count);
            tracing::info!(container = %id, pid = state.pid, "adopted a running container");
            adopted.push(Container {
                id,
                pod_uid,
                name,
                pid: state.pid,
                start_time_ticks: state.start_time_ticks,
                restart_count: state.restart_count,
                dir,
                memory_cgroup,
                child: None,
                exit: None,
                oom_killed: false,
                layout: Arc::clone(&self.layout),
            });
        }
        Ok(adopted)
    }

    /// Kills (`SIGKILL` to its process group) every container still running under the
    /// root; returns how many. Containers outlive the agent by design: this is for tearing
    /// a node down for good, and for tests, which must not leave processes behind.
    pub fn kill_all(&self) -> usize {
        let Ok(dirs) = self.container_dirs() else { return 0 };
        let mut killed = 0;
        for (_, _, dir) in dirs {
            let Ok(Some(state)) = read_state(&dir.join(STATE_FILE)) else {
                continue;
            };
            if state.pid > 1
                && process_is(state.pid, state.start_time_ticks)
                && signal_group(state.pid, Some(state.start_time_ticks), Signal::KILL).is_ok()
            {
                killed += 1;
            }
        }
        killed
    }

    /// The state file of a container, if it has one.
    pub fn state(&self, pod_uid: &str, container: &str) -> Result<Option<ContainerState>> {
        validate_names(pod_uid, container)?;
        read_state(&self.container_dir(pod_uid, container).join(STATE_FILE))
    }

    /// The log of a container's current run, or of its previous one. The names are not
    /// checked here: they must be ones [`ProcessRuntime::start`] accepted.
    pub fn log_path(&self, pod_uid: &str, container: &str, previous: bool) -> PathBuf {
        self.container_dir(pod_uid, container)
            .join(if previous { PREVIOUS_LOG } else { CURRENT_LOG })
    }

    /// Rotates every `current.log` larger than [`LogLimits::file_bytes_max`] (copytruncate,
    /// see the module doc). A failure for one container does not stop the others; the
    /// first is returned.
    pub fn rotate_logs(&self) -> Result<()> {
        let mut first_error = None;
        for (_, _, dir) in self.container_dirs()? {
            // One container at a time, so that a pass over many large logs does not hold
            // up starts and waits for its whole length.
            let rotated = {
                let _layout = lock(&self.layout);
                self.rotate(&dir)
            };
            if let Err(e) = rotated {
                tracing::warn!(dir = %dir.display(), error = %e, "rotating a container log failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn rotate(&self, dir: &Path) -> Result<()> {
        let current = dir.join(CURRENT_LOG);
        let len = match fs::metadata(&current) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(format!("reading the size of {}", current.display()), e)),
        };
        if len <= self.log_limits.file_bytes_max {
            return Ok(());
        }
        let oldest = self.log_limits.files_max - 1;
        // The oldest copy, and any left from a larger files_max, make room.
        remove_rotated_logs(dir, oldest)?;
        for n in (1..oldest).rev() {
            let from = rotated_log(dir, n);
            match fs::rename(&from, rotated_log(dir, n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(format!("shifting {}", from.display()), e)),
            }
        }
        let first = rotated_log(dir, 1);
        let mut source = File::open(&current).map_err(|e| io_error(format!("opening {}", current.display()), e))?;
        let mut copy = File::create(&first).map_err(|e| io_error(format!("creating {}", first.display()), e))?;
        // What was written meanwhile is copied too, up to a bound, so that a fast writer
        // cannot keep the copy going.
        io::copy(
            &mut (&mut source).take(len.saturating_add(self.log_limits.file_bytes_max)),
            &mut copy,
        )
        .map_err(|e| io_error(format!("copying {} to {}", current.display(), first.display()), e))?;
        OpenOptions::new()
            .write(true)
            .open(&current)
            .and_then(|file| file.set_len(0))
            .map_err(|e| io_error(format!("truncating {}", current.display()), e))?;
        tracing::debug!(log = %current.display(), bytes = len, "rotated a container log");
        Ok(())
    }

    /// Deletes a pod's directory (logs, state, default working directories), what is left
    /// of its containers' cgroups, and the mount targets created for it that are still
    /// empty and used by no other pod (see the module doc). Refused while one of its
    /// containers runs.
    pub fn remove_pod(&self, pod_uid: &str) -> Result<()> {
        validate_path_name("pod uid", pod_uid, POD_UID_BYTES_MAX)?;
        let _layout = lock(&self.layout);
        let pod_dir = self.root.join(pod_uid);
        let containers = match fs::read_dir(&pod_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(format!("listing {}", pod_dir.display()), e)),
        };
        let mut cgroups = Vec::new();
        let mut created_targets = Vec::new();
        for entry in containers {
            let entry = entry.map_err(|e| io_error(format!("listing {}", pod_dir.display()), e))?;
            let record = entry.path().join(MOUNT_TARGETS);
            match init::read_created_targets(&record) {
                Ok(created) => created_targets.push(created),
                Err(e) => {
                    tracing::warn!(path = %record.display(), error = %e, "reading created mount targets failed; they stay")
                }
            }
            let Ok(Some(state)) = read_state(&entry.path().join(STATE_FILE)) else {
                continue;
            };
            if state.pid > 1 && process_is(state.pid, state.start_time_ticks) {
                return Err(AgentError::Config(format!(
                    "container {} of pod {pod_uid} is still running (pid {})",
                    entry.file_name().to_string_lossy(),
                    state.pid
                )));
            }
            cgroups.extend(state.memory_cgroup.filter(|cgroup| is_our_cgroup(cgroup)));
        }
        for cgroup in &cgroups {
            remove_cgroup(cgroup);
        }
        if created_targets.iter().any(|created| !created.is_empty()) {
            let in_use = self.mount_targets_of_others(pod_uid);
            for created in &created_targets {
                // The deepest first, so that a created parent is empty when its turn comes.
                for path in created.iter().rev() {
                    if in_use.iter().any(|target| target.starts_with(path)) {
                        tracing::debug!(path = %path.display(), "keeping a created mount target another pod uses");
                        continue;
                    }
                    remove_if_empty(path);
                }
            }
        }
        fs::remove_dir_all(&pod_dir).map_err(|e| io_error(format!("removing {}", pod_dir.display()), e))?;
        tracing::debug!(pod = pod_uid, "removed the pod's directory");
        Ok(())
    }

    /// The mount targets of the containers of every pod but `pod_uid` (from their state
    /// files; an unreadable one counts as none).
    fn mount_targets_of_others(&self, pod_uid: &str) -> Vec<PathBuf> {
        let dirs = match self.container_dirs() {
            Ok(dirs) => dirs,
            Err(e) => {
                tracing::warn!(error = %e, "listing containers failed; mount targets other pods may use are kept");
                // Every path counts as used: nothing is removed.
                return vec![PathBuf::from("/")];
            }
        };
        dirs.into_iter()
            .filter(|(other, _, _)| other != pod_uid)
            .filter_map(|(_, _, dir)| read_state(&dir.join(STATE_FILE)).ok().flatten())
            .flat_map(|state| state.mount_targets)
            .collect()
    }

    fn container_dir(&self, pod_uid: &str, container: &str) -> PathBuf {
        self.root.join(pod_uid).join(container)
    }

    /// Every `<root>/<pod uid>/<container>` directory with valid names.
    fn container_dirs(&self) -> Result<Vec<(String, String, PathBuf)>> {
        let mut dirs = Vec::new();
        let list = |dir: &Path| fs::read_dir(dir).map_err(|e| io_error(format!("listing {}", dir.display()), e));
        for pod in list(&self.root)? {
            let pod = pod.map_err(|e| io_error(format!("listing {}", self.root.display()), e))?;
            let Ok(pod_uid) = pod.file_name().into_string() else {
                continue;
            };
            if validate_path_name("pod uid", &pod_uid, POD_UID_BYTES_MAX).is_err() || !pod.path().is_dir() {
                continue;
            }
            for container in list(&pod.path())? {
                let container = container.map_err(|e| io_error(format!("listing {}", pod.path().display()), e))?;
                let Ok(name) = container.file_name().into_string() else {
                    continue;
                };
                if validate_path_name("container name", &name, CONTAINER_NAME_BYTES_MAX).is_err()
                    || !container.path().is_dir()
                {
                    continue;
                }
                dirs.push((pod_uid.clone(), name, container.path()));
            }
        }
        Ok(dirs)
    }
}

fn io_error(what: String, e: io::Error) -> AgentError {
    AgentError::Io(what, e)
}

/// The lock guards no data, so a panic while it was held leaves nothing inconsistent.
fn lock(layout: &Mutex<()>) -> MutexGuard<'_, ()> {
    layout.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn validate_spec(spec: &ContainerSpec) -> Result<()> {
    validate_names(&spec.pod_uid, &spec.container)?;
    for (what, name) in [("namespace", &spec.namespace), ("pod name", &spec.pod_name)] {
        if name.len() > OBJECT_NAME_BYTES_MAX || name.contains('\0') {
            return Err(AgentError::Config(format!(
                "{what} {name:?} is longer than {OBJECT_NAME_BYTES_MAX} bytes or holds a NUL"
            )));
        }
    }
    if spec.command.is_empty() {
        return Err(AgentError::Config(format!(
            "container {} has no command: the process runtime cannot use an image's entrypoint, so the container must set `command`",
            spec.container
        )));
    }
    let command_bytes: usize = spec.command.iter().map(|arg| arg.len() + 1).sum();
    if command_bytes > COMMAND_BYTES_MAX {
        return Err(AgentError::Config(format!(
            "the command of container {} takes {command_bytes} bytes, more than {COMMAND_BYTES_MAX}",
            spec.container
        )));
    }
    if spec.command[0].is_empty() || spec.command.iter().any(|arg| arg.contains('\0')) {
        return Err(AgentError::Config(format!(
            "the command of container {} has an empty program or an argument with a NUL",
            spec.container
        )));
    }
    let mut env_bytes = 0;
    for (name, value) in &spec.env {
        if name.is_empty() || name.contains('=') || name.contains('\0') || value.contains('\0') {
            return Err(AgentError::Config(format!(
                "container {}: environment variable {name:?} has an empty name, or a name with '=' or a NUL, or a value with a NUL",
                spec.container
            )));
        }
        env_bytes += name.len() + value.len() + 2;
    }
    if env_bytes > ENV_BYTES_MAX {
        return Err(AgentError::Config(format!(
            "the environment of container {} takes {env_bytes} bytes, more than {ENV_BYTES_MAX}",
            spec.container
        )));
    }
    if let Some(working_dir) = &spec.working_dir {
        if !working_dir.is_absolute() || working_dir.as_os_str().len() > WORKING_DIR_BYTES_MAX {
            return Err(AgentError::Config(format!(
                "the working directory {} of container {} is not an absolute path of at most {WORKING_DIR_BYTES_MAX} bytes",
                working_dir.display(),
                spec.container
            )));
        }
    }
    init::validate_mounts(&spec.mounts)
        .map_err(|why| AgentError::Config(format!("container {}: {why}", spec.container)))?;
    if spec.memory_limit_bytes == Some(0) {
        return Err(AgentError::Config(format!(
            "the memory limit of container {} is 0",
            spec.container
        )));
    }
    Ok(())
}

pub(crate) fn validate_names(pod_uid: &str, container: &str) -> Result<()> {
    validate_path_name("pod uid", pod_uid, POD_UID_BYTES_MAX)?;
    validate_path_name("container name", container, CONTAINER_NAME_BYTES_MAX)
}

/// A name that becomes one path component (and part of a cgroup's name): letters, digits,
/// `-`, `_` and `.`, not starting with `.` (so never `.` or `..`).
pub(crate) fn validate_path_name(what: &str, name: &str, bytes_max: usize) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= bytes_max
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(AgentError::Config(format!(
            "{what} {name:?} must be 1 to {bytes_max} letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
}

/// Removes a created mount target if it is an empty directory or an empty regular file
/// (not following a symlink); anything else stays. Best effort.
fn remove_if_empty(path: &Path) {
    let removed = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir(path),
        Ok(meta) if meta.is_file() && meta.len() == 0 => fs::remove_file(path),
        Ok(_) => return,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => Err(e),
    };
    match removed {
        Ok(()) => tracing::debug!(path = %path.display(), "removed a created mount target"),
        // Something was put in it since: it is no longer only ours.
        Err(e) if e.raw_os_error() == Some(Errno::NOTEMPTY.raw_os_error()) => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "removing a created mount target failed"),
    }
}

fn rotated_log(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("{CURRENT_LOG}.{n}"))
}

/// Removes the rotated logs `current.log.<n>` with `n >= from`.
fn remove_rotated_logs(dir: &Path, from: usize) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| io_error(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|name| name.strip_prefix(CURRENT_LOG))
            .and_then(|n| n.strip_prefix('.'))
        else {
            continue;
        };
        if n.parse::<usize>().is_ok_and(|n| n >= from) {
            fs::remove_file(entry.path()).map_err(|e| io_error(format!("removing {}", entry.path().display()), e))?;
        }
    }
    Ok(())
}

/// The text of `path`, at most its first `bytes_max` bytes.
pub(super) fn read_bounded(path: &Path, bytes_max: u64) -> io::Result<String> {
    let mut text = String::new();
    File::open(path)?.take(bytes_max).read_to_string(&mut text)?;
    Ok(text)
}

fn read_state(path: &Path) -> Result<Option<ContainerState>> {
    let text = match read_bounded(path, STATE_FILE_BYTES_MAX) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(format!("reading {}", path.display()), e)),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        io_error(
            format!("parsing {}", path.display()),
            io::Error::new(io::ErrorKind::InvalidData, e),
        )
    })
}

/// Written to a temporary file and renamed over the old one, so that a reader (a restarted
/// agent) sees the old state or the new, never half of one. Not synced: after a power
/// loss the processes it describes are gone anyway.
fn write_state(path: &Path, state: &ContainerState) -> Result<()> {
    let text = serde_json::to_string_pretty(state).expect("a ContainerState serialises to JSON");
    let temporary = path.with_extension("json.tmp");
    let mut file = File::create(&temporary).map_err(|e| io_error(format!("creating {}", temporary.display()), e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| io_error(format!("writing {}", temporary.display()), e))?;
    fs::rename(&temporary, path)
        .map_err(|e| io_error(format!("renaming {} to {}", temporary.display(), path.display()), e))
}

/// What the runtime (and [`super::usage`]) reads from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `Z` (ended, not reaped), …
    state: char,
    /// Field 5.
    process_group: u32,
    /// Fields 14 and 15, `utime + stime`: the CPU time the process has used, in clock
    /// ticks (`USER_HZ`).
    pub(super) cpu_ticks: u64,
    /// Field 22: clock ticks from boot to the start.
    pub(super) start_time_ticks: u64,
}

impl ProcStat {
    /// Not ended (a zombie has ended; only its exit status waits to be collected).
    pub(super) fn running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

pub(super) fn read_proc_stat(pid: u32) -> io::Result<ProcStat> {
    let text = read_bounded(Path::new(&format!("/proc/{pid}/stat")), PROC_STAT_BYTES_MAX)?;
    parse_proc_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat: {text:?}"),
        )
    })
}

pub(super) fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    // Field 2, the command name, is in parentheses and may itself hold spaces and
    // parentheses: the fields from 3 on follow the last ')'.
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3.
    let state = fields.first()?.chars().next()?;
    let process_group = fields.get(5 - 3)?.parse().ok()?;
    let ticks = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let cpu_ticks = ticks(14)?.saturating_add(ticks(15)?);
    let start_time_ticks = ticks(22)?;
    Some(ProcStat {
        state,
        process_group,
        cpu_ticks,
        start_time_ticks,
    })
}

/// Whether `pid` is still the (not ended) process that started at `start_time_ticks`.
fn process_is(pid: u32, start_time_ticks: u64) -> bool {
    read_proc_stat(pid).is_ok_and(|stat| stat.running() && stat.start_time_ticks == start_time_ticks)
}

/// Sends `signal` to the process group led by `pid`, the container's main process, which
/// started at `start_time_ticks` if known. Never to pid 0 or 1 (`kill(-1)` would reach
/// every process) nor to this process's own group.
///
/// The group's id is the leader's pid. While the leader lives, or is a zombie not yet
/// reaped, the pid is its own; once the leader is gone, the kernel keeps the id from new
/// processes while any member of the group lives. So when `/proc/<pid>` shows another
/// start time, the pid went to a new process, no member of the container's group is left,
/// and nothing is sent (`ESRCH`, as for a group that is gone).
fn signal_group(pid: u32, start_time_ticks: Option<u64>, signal: Signal) -> io::Result<()> {
    if let Some(start_time_ticks) = start_time_ticks {
        if read_proc_stat(pid).is_ok_and(|stat| stat.start_time_ticks != start_time_ticks) {
            return Err(io::Error::from_raw_os_error(Errno::SRCH.raw_os_error()));
        }
    }
    let own = std::process::id();
    let target = i32::try_from(pid)
        .ok()
        .filter(|&pid| pid > 1 && pid as u32 != own)
        .and_then(Pid::from_raw);
    let Some(target) = target else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pid}"),
        ));
    };
    kill_process_group(target, signal).map_err(io::Error::from)
}

/// Kills a process that must not run after all (its start could not be completed).
fn abandon(pid: u32, child: tokio::process::Child, memory_cgroup: Option<&Path>) {
    if pid != 0 {
        // Not reaped yet, so the pid is still this process's.
        if let Err(e) = signal_group(pid, None, Signal::KILL) {
            tracing::warn!(pid, error = %e, "killing a container process that could not be recorded failed");
        }
    }
    // Dropped, tokio reaps it in the background.
    drop(child);
    if let Some(cgroup) = memory_cgroup {
        remove_cgroup(cgroup);
    }
}

/// The unified-hierarchy (`0::`) path in `/proc/self/cgroup`.
fn unified_cgroup_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup.lines().find_map(|line| line.strip_prefix("0::"))
}

/// The path of the cgroup v1 memory hierarchy's line (`4:memory:/a/b`; a hierarchy may
/// carry more controllers than one: `4:cpu,memory:/a`) in `/proc/self/cgroup`.
fn v1_memory_cgroup_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|controller| controller == "memory")
            .then_some(path)
    })
}

/// The directory of the cgroup `own` (a path in the v1 memory hierarchy) on the first
/// mount of that hierarchy in `mountinfo` whose root holds it.
fn v1_memory_cgroup_dir(mountinfo: &str, own: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // `36 25 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory`:
        // the optional fields before " - " vary in number; paths have spaces escaped.
        let (mount, filesystem) = line.split_once(" - ")?;
        let mut filesystem = filesystem.split_whitespace();
        let (fs_type, _source, options) = (filesystem.next()?, filesystem.next()?, filesystem.next()?);
        if fs_type != "cgroup" || !options.split(',').any(|option| option == "memory") {
            return None;
        }
        let mut mount = mount.split_whitespace().skip(3);
        let (root, mount_point) = (unescape_mountinfo(mount.next()?), unescape_mountinfo(mount.next()?));
        let below = Path::new(own.trim()).strip_prefix(&root).ok()?;
        Some(if below.as_os_str().is_empty() {
            mount_point
        } else {
            mount_point.join(below)
        })
    })
}

/// Undoes mountinfo's escapes of space, tab, newline and backslash (`\040` and the like).
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut path = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)))
            .and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok());
        match octal {
            Some(byte) => {
                path.push(byte);
                i += 4;
            }
            None => {
                path.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(path))
}

/// This process's cgroup, if containers can get memory cgroups under it: cgroup v2 first,
/// else the v1 memory controller; otherwise why not.
fn memory_cgroup_parent() -> Result<CgroupParent, String> {
    let v2_why = match v2_memory_cgroup_parent() {
        Ok(path) => {
            return Ok(CgroupParent {
                path,
                version: CgroupVersion::V2,
            })
        }
        Err(why) => why,
    };
    match v1_memory_cgroup_parent() {
        Ok(path) => {
            tracing::debug!("cgroup v2 is not used: {v2_why}");
            Ok(CgroupParent {
                path,
                version: CgroupVersion::V1,
            })
        }
        Err(v1_why) => Err(format!("{v2_why}; and {v1_why}")),
    }
}

fn v2_memory_cgroup_parent() -> Result<PathBuf, String> {
    let root = Path::new(CGROUP_ROOT);
    if !root.join("cgroup.controllers").exists() {
        return Err(format!(
            "cgroup v2 is not mounted at {CGROUP_ROOT} (cgroup v1 or hybrid)"
        ));
    }
    let own = read_bounded(Path::new("/proc/self/cgroup"), PROC_CGROUP_BYTES_MAX)
        .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
    let own = unified_cgroup_path(&own).ok_or("/proc/self/cgroup has no cgroup v2 entry")?;
    let parent = root.join(own.trim().trim_start_matches('/'));
    let control = parent.join("cgroup.subtree_control");
    let enabled = read_bounded(&control, 4096).map_err(|e| format!("reading {}: {e}", control.display()))?;
    if !enabled.split_whitespace().any(|controller| controller == "memory") {
        return Err(format!(
            "the memory controller is not enabled in {} (cgroup v2 enables it there only for a cgroup without processes of its own, or the root)",
            control.display()
        ));
    }
    probe_cgroup(&parent, "memory.max")?;
    Ok(parent)
}

fn v1_memory_cgroup_parent() -> Result<PathBuf, String> {
    let own = read_bounded(Path::new("/proc/self/cgroup"), PROC_CGROUP_BYTES_MAX)
        .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
    let own = v1_memory_cgroup_path(&own)
        .ok_or("/proc/self/cgroup has no cgroup v1 memory entry (the v1 memory controller is not mounted)")?;
    let mountinfo = read_bounded(Path::new("/proc/self/mountinfo"), MOUNTINFO_BYTES_MAX)
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let parent = v1_memory_cgroup_dir(&mountinfo, own).ok_or_else(|| {
        format!("no cgroup v1 memory mount in /proc/self/mountinfo holds this process's memory cgroup {own}")
    })?;
    probe_cgroup(&parent, "memory.limit_in_bytes")?;
    Ok(parent)
}

/// Whether a child cgroup with the file `limit_file` can be created under `parent`.
fn probe_cgroup(parent: &Path, limit_file: &str) -> Result<(), String> {
    let probe = parent.join(format!("capstan-probe-{}", std::process::id()));
    match fs::create_dir(&probe) {
        Ok(()) => {}
        // Left by an earlier process with this pid (a removal failed): good as new.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create a cgroup under {}: {e}", parent.display())),
    }
    let has_limit_file = probe.join(limit_file).exists();
    if let Err(e) = fs::remove_dir(&probe) {
        tracing::warn!(cgroup = %probe.display(), error = %e, "removing a probe cgroup failed");
    }
    if !has_limit_file {
        return Err(format!(
            "a cgroup created under {} has no {limit_file}",
            parent.display()
        ));
    }
    Ok(())
}

/// Creates the container's cgroup and sets its limit (see the module doc). `None`, said at
/// warn level, when that fails: the container then runs without a limit.
fn prepare_cgroup(parent: &CgroupParent, spec: &ContainerSpec, limit_bytes: u64) -> Option<PathBuf> {
    let cgroup = parent.path.join(format!("capstan-{}-{}", spec.pod_uid, spec.container));
    let limit = limit_bytes.to_string();
    let prepared = create_cgroup(&cgroup).and_then(|()| match parent.version {
        CgroupVersion::V2 => {
            fs::write(cgroup.join("memory.max"), &limit)?;
            // Best effort: an OOM kill takes the whole container (the kubelet's default).
            if let Err(e) = fs::write(cgroup.join("memory.oom.group"), "1") {
                tracing::debug!(cgroup = %cgroup.display(), error = %e, "could not set memory.oom.group");
            }
            Ok(())
        }
        CgroupVersion::V1 => {
            let memsw = cgroup.join("memory.memsw.limit_in_bytes");
            // Present only with swap accounting. The kernel keeps memsw >= the memory
            // limit: lifted first, a reused cgroup's lower old value cannot refuse the new
            // limit.
            let swap_accounted = memsw.exists();
            if swap_accounted {
                if let Err(e) = fs::write(&memsw, "-1") {
                    tracing::debug!(cgroup = %cgroup.display(), error = %e, "could not lift memory.memsw.limit_in_bytes");
                }
            }
            fs::write(cgroup.join("memory.limit_in_bytes"), &limit)?;
            // Best effort (see the module doc): without it, swap can hold more.
            if swap_accounted {
                if let Err(e) = fs::write(&memsw, &limit) {
                    tracing::debug!(cgroup = %cgroup.display(), error = %e, "could not set memory.memsw.limit_in_bytes");
                }
            }
            Ok(())
        }
    });
    match prepared {
        Ok(()) => Some(cgroup),
        Err(e) => {
            tracing::warn!(cgroup = %cgroup.display(), error = %e, "could not prepare a memory cgroup; the container runs without a memory limit");
            remove_cgroup(&cgroup);
            None
        }
    }
}

/// Creates a container's cgroup. One of the same name is left from an unclean end (the
/// agent died between the container's end and the removal, or the removal failed): it is
/// removed first, what is in it killed, so that the new run's counters start at zero;
/// failing that, it is reused.
fn create_cgroup(cgroup: &Path) -> io::Result<()> {
    match fs::create_dir(cgroup) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            remove_cgroup(cgroup);
            match fs::create_dir(cgroup) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    tracing::warn!(cgroup = %cgroup.display(), "reusing a container's cgroup left from an earlier run; its OOM counters carry over");
                    Ok(())
                }
                created => created,
            }
        }
        created => created,
    }
}

/// Whether the kernel's OOM killer killed a process in `cgroup`, read at the end of a run
/// that ended with `exit` (see the module doc).
fn oom_killed_in(cgroup: &Path, exit: Exit) -> bool {
    let read = |file: &str| read_bounded(&cgroup.join(file), CGROUP_FILE_BYTES_MAX).ok();
    if let Some(events) = read("memory.events") {
        return counter(&events, "oom_kill").is_some_and(|kills| kills > 0);
    }
    if let Some(kills) = read("memory.oom_control").and_then(|control| counter(&control, "oom_kill")) {
        return kills > 0;
    }
    // v1 before Linux 4.13: the limit was hit, and the main process was killed by SIGKILL.
    exit == Exit::Signal(Signal::KILL.as_raw())
        && ["memory.failcnt", "memory.memsw.failcnt"].iter().any(|file| {
            read(file)
                .and_then(|text| text.trim().parse::<u64>().ok())
                .is_some_and(|failures| failures > 0)
        })
}

/// The value of `name` in a cgroup file of `name value` lines (`memory.events`,
/// `cpu.stat`, `memory.stat`, …).
pub(super) fn counter(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        if key == name {
            value.trim().parse().ok()
        } else {
            None
        }
    })
}

/// Only cgroups this runtime names are ever emptied and removed (the path comes from a
/// state file): a `capstan-…` directory on a cgroup filesystem (v1 or v2, wherever it is
/// mounted), named without `..`. One that no longer exists is none.
fn is_our_cgroup(cgroup: &Path) -> bool {
    has_our_cgroup_name(cgroup)
        && rustix::fs::statfs(cgroup)
            .is_ok_and(|filesystem| filesystem.f_type == CGROUP_SUPER_MAGIC || filesystem.f_type == CGROUP2_SUPER_MAGIC)
}

fn has_our_cgroup_name(cgroup: &Path) -> bool {
    cgroup.is_absolute()
        && cgroup
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with("capstan-"))
        && !cgroup
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

/// Removes a container's cgroup. Processes still in it (that left the process group) are
/// killed first: with `cgroup.kill` (cgroup v2, Linux 5.14), else with `SIGKILL` to each
/// process in `cgroup.procs`, again on every try; a cgroup still busy after
/// [`CGROUP_EMPTY_WAIT_MAX`] is left for [`ProcessRuntime::remove_pod`].
fn remove_cgroup(cgroup: &Path) {
    let busy = |e: &io::Error| e.raw_os_error() == Some(Errno::BUSY.raw_os_error());
    match fs::remove_dir(cgroup) {
        Ok(()) => return,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) if busy(&e) => {}
        Err(e) => {
            tracing::warn!(cgroup = %cgroup.display(), error = %e, "removing a container's cgroup failed");
            return;
        }
    }
    let killed_at_once = fs::write(cgroup.join("cgroup.kill"), "1").is_ok();
    let deadline = Instant::now() + CGROUP_EMPTY_WAIT_MAX;
    let mut pause = Duration::from_millis(1);
    loop {
        if !killed_at_once {
            kill_cgroup_procs(cgroup);
        }
        match fs::remove_dir(cgroup) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) if busy(&e) && Instant::now() < deadline => {}
            Err(e) => {
                tracing::warn!(cgroup = %cgroup.display(), error = %e, "removing a container's cgroup failed (it still has processes?)");
                return;
            }
        }
        // Killed processes take a moment to exit.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// `SIGKILL` to every process in a cgroup (v1 has no `cgroup.kill`). Never to pid 0 or 1
/// nor to this process.
fn kill_cgroup_procs(cgroup: &Path) {
    let procs = match read_bounded(&cgroup.join("cgroup.procs"), CGROUP_PROCS_BYTES_MAX) {
        Ok(procs) => procs,
        Err(e) => {
            tracing::debug!(cgroup = %cgroup.display(), error = %e, "could not read cgroup.procs");
            return;
        }
    };
    let own = std::process::id();
    for pid in procs.lines().filter_map(|line| line.trim().parse::<u32>().ok()) {
        let Some(target) = i32::try_from(pid)
            .ok()
            .filter(|&pid| pid > 1 && pid as u32 != own)
            .and_then(Pid::from_raw)
        else {
            continue;
        };
        match kill_process(target, Signal::KILL) {
            Ok(()) => tracing::debug!(cgroup = %cgroup.display(), pid, "killed a process left in a container's cgroup"),
            Err(Errno::SRCH) => {}
            Err(e) => {
                tracing::debug!(cgroup = %cgroup.display(), pid, error = %e, "killing a process in a container's cgroup failed")
            }
        }
    }
}

fn rfc3339_now() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    rfc3339(seconds)
}

/// Seconds since the epoch as Kubernetes writes times: `2006-01-02T15:04:05Z`.
pub(crate) fn rfc3339(seconds: u64) -> String {
    i64::try_from(seconds)
        .ok()
        .and_then(|seconds| k8s_openapi::jiff::Timestamp::from_second(seconds).ok())
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::time::Instant;

    /// Long enough for a loaded 2-core machine; nothing waits for it unless a test fails.
    const DEADLINE: Duration = Duration::from_secs(10);

    fn spec(pod_uid: &str, container: &str, script: &str) -> ContainerSpec {
        ContainerSpec {
            pod_uid: pod_uid.into(),
            namespace: "default".into(),
            pod_name: format!("pod-{pod_uid}"),
            container: container.into(),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            ..ContainerSpec::default()
        }
    }

    fn runtime(root: &Path) -> ProcessRuntime {
        ProcessRuntime::new(root.to_path_buf(), LogLimits::default()).expect("runtime")
    }

    /// Polls `condition` until it holds; fails the test when `DEADLINE` passes first.
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

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }

    fn alive(pid: u32) -> bool {
        read_proc_stat(pid).is_ok_and(|stat| stat.running())
    }

    #[tokio::test]
    async fn output_env_and_working_dir_go_to_the_log() {
        let root = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let runtime = runtime(root.path());
        // A variable of the test process that the shell would not set itself: it must
        // not reach the container.
        let leaked = std::env::vars()
            .map(|(name, _)| name)
            .find(|name| {
                ![
                    "PATH", "PWD", "OLDPWD", "SHLVL", "_", "IFS", "PS1", "PS2", "PS4", "OPTIND",
                ]
                .contains(&name.as_str())
            })
            .expect("the test process has some environment");

        let mut given = spec(
            "pod-a",
            "main",
            "echo to-stdout; echo to-stderr >&2; echo \"FOO=$FOO\"; echo \"cwd=$(pwd)\"; env; exit 3",
        );
        given.env = vec![("FOO".into(), "first".into()), ("FOO".into(), "bar".into())];
        let working_dir = fs::canonicalize(elsewhere.path()).expect("canonical path");
        given.working_dir = Some(working_dir.clone());
        let mut container = runtime.start(&given).expect("start");
        assert_eq!(within("the exit", container.wait()).await, Exit::Code(3));

        let log = read(&runtime.log_path("pod-a", "main", false));
        assert!(log.contains("to-stdout\n"), "{log}");
        assert!(log.contains("to-stderr\n"), "{log}");
        assert!(log.contains("FOO=bar\n"), "{log}");
        assert!(log.contains(&format!("cwd={}\n", working_dir.display())), "{log}");
        assert!(log.contains(&format!("PATH={DEFAULT_PATH}\n")), "{log}");
        assert!(
            !log.lines().any(|line| line.starts_with(&format!("{leaked}="))),
            "{leaked} leaked into {log}"
        );
        let state = runtime.state("pod-a", "main").expect("state").expect("a state");
        assert_eq!(state.exit, Some(Exit::Code(3)));
        assert_eq!(state.pid, container.pid());

        // Without a working dir: the container's own, and a PATH the spec sets is kept.
        let mut given = spec("pod-a", "second", "echo \"cwd=$(pwd)\"; echo \"PATH=$PATH\"");
        given.env = vec![("PATH".into(), "/bin:/usr/bin".into())];
        let mut container = runtime.start(&given).expect("start");
        assert_eq!(within("the exit", container.wait()).await, Exit::Code(0));
        let log = read(&runtime.log_path("pod-a", "second", false));
        let default_dir = runtime.root().join("pod-a/second/work");
        assert!(log.contains(&format!("cwd={}\n", default_dir.display())), "{log}");
        assert!(log.contains("PATH=/bin:/usr/bin\n"), "{log}");
    }

    #[tokio::test]
    async fn unreasonable_specs_are_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let runtime = runtime(root.path());
        let mut empty = spec("pod-b", "main", "");
        empty.command.clear();
        match runtime.start(&empty) {
            Err(AgentError::Config(message)) => {
                assert!(
                    message.contains("entrypoint") && message.contains("must set `command`"),
                    "{message}"
                )
            }
            other => panic!("an empty command was not refused: {other:?}"),
        }
        let long = spec("pod-b", "main", &"x".repeat(COMMAND_BYTES_MAX));
        assert!(matches!(runtime.start(&long), Err(AgentError::Config(_))));
        for pod_uid in ["../escape", "a/b", ".", ""] {
            assert!(
                matches!(
                    runtime.start(&spec(pod_uid, "main", "true")),
                    Err(AgentError::Config(_))
                ),
                "{pod_uid:?}"
            );
        }
        let mut relative = spec("pod-b", "main", "true");
        relative.working_dir = Some("relative".into());
        assert!(matches!(runtime.start(&relative), Err(AgentError::Config(_))));
        // Nothing refused left anything behind.
        assert!(!runtime.root().join("pod-b").exists());
        assert!(matches!(
            ProcessRuntime::new(
                root.path().into(),
                LogLimits {
                    file_bytes_max: 1,
                    files_max: 1
                }
            ),
            Err(AgentError::Config(_))
        ));
    }

    #[tokio::test]
    async fn mounts_need_an_init_program() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut mounted = spec("pod-m", "main", "true");
        mounted.mounts = vec![init::Mount {
            source: "/tmp".into(),
            target: "/mnt/data".into(),
            read_only: true,
        }];
        match runtime(root.path()).start(&mounted) {
            Err(AgentError::Config(message)) => {
                assert!(
                    message.contains("init program") && message.contains("mounts"),
                    "{message}"
                )
            }
            other => panic!("mounts without an init program were not refused: {other:?}"),
        }
        let runtime = runtime(root.path()).with_init_program("/bin/true".into());
        let mut relative = mounted.clone();
        relative.mounts[0].target = "mnt/data".into();
        assert!(matches!(runtime.start(&relative), Err(AgentError::Config(_))));
        let mut too_many = mounted.clone();
        too_many.mounts = vec![mounted.mounts[0].clone(); init::MOUNTS_MAX + 1];
        assert!(matches!(runtime.start(&too_many), Err(AgentError::Config(_))));
        // Each mount is within bounds; all of them together are too long an argument list.
        let mut too_long = mounted.clone();
        too_long.mounts = vec![
            init::Mount {
                source: PathBuf::from(format!("/{}", "s".repeat(init::PATH_BYTES_MAX - 1))),
                target: PathBuf::from(format!("/{}", "t".repeat(init::PATH_BYTES_MAX - 1))),
                read_only: false,
            };
            init::MOUNTS_MAX
        ];
        match runtime.start(&too_long) {
            Err(AgentError::Config(message)) => assert!(message.contains("container-init's arguments"), "{message}"),
            other => panic!("too long arguments were not refused: {other:?}"),
        }
        // Nothing refused left anything behind.
        assert!(!runtime.root().join("pod-m").exists());
    }

    #[tokio::test]
    async fn a_failed_spawn_counts_as_a_run() {
        let root = tempfile::tempdir().expect("tempdir");
        let runtime = runtime(root.path());
        let mut missing = spec("pod-c", "main", "");
        missing.command = vec!["/nonexistent/program".into()];
        assert!(matches!(runtime.start(&missing), Err(AgentError::Io(..))));
        let state = runtime.state("pod-c", "main").expect("state").expect("a state");
        assert!(state.start_error.is_some());
        assert_eq!(state.restart_count, 0);
        let mut container = runtime.start(&spec("pod-c", "main", "true")).expect("start");
        assert_eq!(container.restart_count(), 1);
        assert_eq!(within("the exit", container.wait()).await, Exit::Code(0));
    }

    #[tokio::test]
    async fn stop_terminates_within_the_grace() {
        let root = tempfile::tempdir().expect("tempdir");
        let runtime = runtime(root.path());
        let mut container = runtime
            .start(&spec("pod-d", "main", "echo up; sleep 30"))
            .expect("start");
        let log = runtime.log_path("pod-d", "main", false);
        eventually("the container is up", || read(&log).contains("up")).await;
        let exit = within("the stop", runtime.stop(&mut container, DEADLINE))
            .await
            .expect("stop");
        // SIGTERM did it: a SIGKILL would have been Signal(9).
        assert_eq!(exit, Exit::Signal(15));
        assert_eq!(exit.exit_code(), Some(143));
        // Stopping an ended container returns its exit at once.
        assert_eq!(
            runtime.stop(&mut container, DEADLINE).await.expect("stop"),
            Exit::Signal(15)
        );
        assert_eq!(
            runtime.state("pod-d", "main").expect("state").expect("a state").exit,
            Some(Exit::Signal(15))
        );
    }

    #[tokio::test]
    async fn stop_kills_a_group_that_ignores_sigterm() {
        let root = tempfile::tempdir().expect("tempdir");
        let runtime = runtime(root.path());
        // The ignored SIGTERM is inherited by the background child as well. (Every script
        // here ends by itself within about 30 s, should a failing test leave it behind.)
        let script =
            "trap '' TERM; sleep 30 & echo $! > child.pid; n=0; while [ $n -lt 30 ]; do sleep 1; n=$((n+1)); done";
        let mut container = runtime.start(&spec("pod-e", "main", script)).expect("start");
        let child_pid_file = runtime.root().join("pod-e/main/work/child.pid");
        eventually("the background child is up", || {
            read(&child_pid_file).trim().parse::<u32>().is_ok()
        })
        .await;
        let child: u32 = read(&child_pid_file).trim().parse().expect("a pid");
        assert!(alive(child));

        let exit = within("the stop", runtime.stop(&mut container, Duration::from_millis(200)))
            .await
            .expect("stop");
        assert_eq!(exit, Exit::Signal(9));
        assert!(!alive(container.pid()));
        eventually("the background child is dead", || !alive(child)).await;
    }

    #[tokio::test]
    async fn a_new_runtime_adopts_running_containers() {
        let root = tempfile::tempdir().expect("tempdir");
        let (pid, start_time_ticks) = {
            let runtime = runtime(root.path());
            let container = runtime
                .start(&spec("pod-f", "main", "echo up; exec sleep 30"))
                .expect("start");
            let log = runtime.log_path("pod-f", "main", false);
            eventually("the container is up", || read(&log).contains("up")).await;
            (
                container.pid(),
                read_proc_stat(container.pid()).expect("/proc stat").start_time_ticks,
            )
            // The runtime and the handle go: the process stays.
        };
        assert!(alive(pid));

        let runtime = runtime(root.path());
        let mut adopted = runtime.adopt().expect("adopt");
        assert_eq!(adopted.len(), 1);
        let mut container = adopted.pop().expect("one adopted");
        assert_eq!(
            (container.pid(), container.pod_uid(), container.name()),
            (pid, "pod-f", "main")
        );
        assert!(container.adopted());
        assert_eq!(container.start_time_ticks, start_time_ticks);
        // Starting it again while it runs is refused.
        assert!(matches!(
            runtime.start(&spec("pod-f", "main", "true")),
            Err(AgentError::Config(_))
        ));

        let exit = within("the stop", runtime.stop(&mut container, DEADLINE))
            .await
            .expect("stop");
        assert_eq!(exit, Exit::Unknown);
        assert!(!alive(pid));
        // An ended container is not adopted again.
        assert!(runtime.adopt().expect("adopt").is_empty());
    }

    #[tokio::test]
    async fn a_pid_with_another_start_time_is_not_adopted() {
        let root = tempfile::tempdir().expect("tempdir");
        let runtime = runtime(root.path());
        let state_for = |pid: u32, start_time_ticks: u64| ContainerState {
            namespace: "default".into(),
            pod_name: "pod-g".into(),
            pid,
            start_time_ticks,
            restart_count: 0,
            started_at: rfc3339_now(),
            start_error: None,
            exit: None,
            finished_at: None,
            oom_killed: false,
            memory_cgroup: None,
            mount_targets: Vec::new(),
        };
        let write = |container: &str, state: &ContainerState| {
            let dir = runtime.root().join("pod-g").join(container);
            fs::create_dir_all(&dir).expect("mkdir");
            write_state(&dir.join(STATE_FILE), state).expect("write state");
        };

        // This test process: alive, but not with that start time.
        let own = std::process::id();
        write(
            "own",
            &state_for(own, read_proc_stat(own).expect("/proc stat").start_time_ticks + 1),
        );
        // A process that leads its own group, as a container does: adopted with its start
        // time, not with another, so the start time is what decides.
        let mut leader = tokio::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30"])
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let leader_pid = leader.id().expect("a pid");
        let leader_start = read_proc_stat(leader_pid).expect("/proc stat").start_time_ticks;
        write("leader", &state_for(leader_pid, leader_start + 1));
        assert!(runtime.adopt().expect("adopt").is_empty());

        write("leader", &state_for(leader_pid, leader_start));
        let adopted = runtime.adopt().expect("adopt");
        assert_eq!(
            adopted.iter().map(|c| (c.name(), c.pid())).collect::<Vec<_>>(),
            vec![("leader", leader_pid)]
        );
        leader.kill().await.expect("kill");
    }

    #[tokio::test]
    async fn a_second_start_counts_a_restart_and_keeps_the_previous_log() {
        let root = tempfile::tempdir().expect("tempdir");
        let runtime = runtime(root.path());
        let mut first = runtime
            .start(&spec("pod-h", "main", "echo run-one; exit 1"))
            .expect("start");
        assert_eq!(first.restart_count(), 0);
        // Ended but not waited for: its handle will see the end only after the next run.
        let first_pid = first.pid();
        eventually("the first run ends", || !alive(first_pid)).await;
        let mut second = runtime.start(&spec("pod-h", "main", "echo run-two")).expect("start");
        assert_eq!(second.restart_count(), 1);
        assert_ne!(first.id(), second.id());
        assert_eq!(within("the exit", second.wait()).await, Exit::Code(0));

        assert_eq!(read(&runtime.log_path("pod-h", "main", true)), "run-one\n");
        assert_eq!(read(&runtime.log_path("pod-h", "main", false)), "run-two\n");
        // The first handle's late wait records nothing in the second run's state.
        assert_eq!(within("the exit", first.wait()).await, Exit::Code(1));
        let state = runtime.state("pod-h", "main").expect("state").expect("a state");
        assert_eq!(
            (state.restart_count, state.pid, state.exit),
            (1, second.pid(), Some(Exit::Code(0)))
        );

        runtime.remove_pod("pod-h").expect("remove");
        assert!(!runtime.root().join("pod-h").exists());
    }

    #[tokio::test]
    async fn rotation_keeps_files_max_files_and_truncates() {
        let root = tempfile::tempdir().expect("tempdir");
        let limits = LogLimits {
            file_bytes_max: 100,
            files_max: 3,
        };
        let runtime = ProcessRuntime::new(root.path().into(), limits).expect("runtime");
        // Writes 150 bytes for each go-<i> file the test creates, then says so with done-<i>.
        let script = "i=1; while [ $i -le 6 ]; do \
                        n=0; while [ ! -e go-$i ] && [ $n -lt 3000 ]; do sleep 0.01; n=$((n+1)); done; \
                        if [ $i -le 5 ]; then printf 'line-%s-%0142d\\n' $i 0; else echo tail; fi; \
                        touch done-$i; i=$((i+1)); \
                      done; sleep 30";
        let mut container = runtime.start(&spec("pod-i", "main", script)).expect("start");
        let work = runtime.root().join("pod-i/main/work");
        let dir = runtime.root().join("pod-i/main");
        for i in 1..=5 {
            fs::write(work.join(format!("go-{i}")), "").expect("write");
            eventually(&format!("line {i} is written"), || {
                work.join(format!("done-{i}")).exists()
            })
            .await;
            runtime.rotate_logs().expect("rotate");
            assert_eq!(
                fs::metadata(dir.join(CURRENT_LOG)).expect("metadata").len(),
                0,
                "after line {i}"
            );
        }
        assert!(read(&rotated_log(&dir, 1)).starts_with("line-5-"));
        assert!(read(&rotated_log(&dir, 2)).starts_with("line-4-"));
        assert!(!rotated_log(&dir, 3).exists());
        let logs = fs::read_dir(&dir)
            .expect("list")
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with(CURRENT_LOG))
            .count();
        assert_eq!(logs, 3);

        // The process goes on writing at the new end of the truncated file (O_APPEND): no
        // hole of zeros before its next line.
        fs::write(work.join("go-6"), "").expect("write");
        eventually("the tail is written", || work.join("done-6").exists()).await;
        assert_eq!(read(&dir.join(CURRENT_LOG)), "tail\n");
        // Under the limit, nothing moves.
        runtime.rotate_logs().expect("rotate");
        assert_eq!(read(&dir.join(CURRENT_LOG)), "tail\n");
        within("the stop", runtime.stop(&mut container, DEADLINE))
            .await
            .expect("stop");
    }

    #[tokio::test]
    async fn memory_limits_never_fail_a_start() {
        let root = tempfile::tempdir().expect("tempdir");
        let runtime = runtime(root.path());
        // It looks only once the test says so: start() returns after the move into the
        // cgroup, which the process may beat (see the module doc).
        let script =
            "n=0; while [ ! -e go ] && [ $n -lt 3000 ]; do sleep 0.01; n=$((n+1)); done; cat /proc/self/cgroup";
        let mut limited = spec("pod-j", "main", script);
        limited.memory_limit_bytes = Some(64 * 1024 * 1024);
        let mut container = runtime.start(&limited).expect("start");
        fs::write(runtime.root().join("pod-j/main/work/go"), "").expect("write");
        assert_eq!(within("the exit", container.wait()).await, Exit::Code(0));
        assert!(!container.oom_killed());
        let log = read(&runtime.log_path("pod-j", "main", false));
        let cgroup = runtime
            .state("pod-j", "main")
            .expect("state")
            .expect("a state")
            .memory_cgroup;
        if runtime.memory_limits_enforced() {
            assert!(log.contains("/capstan-pod-j-main"), "{log}");
            let cgroup = cgroup.expect("a cgroup");
            assert!(!cgroup.exists(), "{} is left", cgroup.display());
        } else {
            assert_eq!(cgroup, None);
        }
    }

    #[test]
    fn proc_files_are_parsed() {
        let stat = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200";
        assert_eq!(
            parse_proc_stat(stat),
            Some(ProcStat {
                state: 'S',
                process_group: 1234,
                cpu_ticks: 3,
                start_time_ticks: 98765
            })
        );
        assert_eq!(parse_proc_stat("1234 (x) Z 1"), None);
        assert_eq!(
            unified_cgroup_path("4:memory:/a\n0::/system.slice/capstan.service\n"),
            Some("/system.slice/capstan.service")
        );
        assert_eq!(unified_cgroup_path("4:memory:/a\n"), None);
        assert_eq!(
            v1_memory_cgroup_path("5:devices:/\n4:memory:/process_api/ab12\n0::/\n"),
            Some("/process_api/ab12")
        );
        assert_eq!(v1_memory_cgroup_path("3:cpu,memory:/a/b\n"), Some("/a/b"));
        assert_eq!(v1_memory_cgroup_path("3:memory_x:/a\n0::/\n"), None);
        assert_eq!(
            counter(
                "low 0\nhigh 3\nmax 2\noom 1\noom_kill 1\noom_group_kill 0\n",
                "oom_kill"
            ),
            Some(1)
        );
        assert_eq!(counter("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"), None);
    }

    #[test]
    fn the_v1_memory_mount_is_found_in_mountinfo() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            v1_memory_cgroup_dir(mountinfo, "/process_api/ab12"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/process_api/ab12"))
        );
        assert_eq!(
            v1_memory_cgroup_dir(mountinfo, "/"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        // A mount of a subtree (a container's view), at an escaped path, with the memory
        // controller among others: only a cgroup inside the subtree is on it.
        let subtree = "50 40 0:32 /kubepods/pod1 /run/my\\040cgroups rw - cgroup cgroup rw,cpu,memory\n";
        assert_eq!(
            v1_memory_cgroup_dir(subtree, "/kubepods/pod1/agent"),
            Some(PathBuf::from("/run/my cgroups/agent"))
        );
        assert_eq!(v1_memory_cgroup_dir(subtree, "/kubepods/pod2"), None);
        assert_eq!(
            v1_memory_cgroup_dir("41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "/"),
            None
        );
    }

    #[test]
    fn only_capstan_directories_on_a_cgroup_filesystem_are_our_cgroups() {
        assert!(has_our_cgroup_name(Path::new("/sys/fs/cgroup/x/capstan-a-b")));
        assert!(has_our_cgroup_name(Path::new("/sys/fs/cgroup/memory/x/capstan-a-b")));
        assert!(!has_our_cgroup_name(Path::new("/sys/fs/cgroup/x/other")));
        assert!(!has_our_cgroup_name(Path::new("/sys/fs/cgroup/../../etc/capstan-a")));
        assert!(!has_our_cgroup_name(Path::new("capstan-a")));
        // The right name, on another filesystem.
        let dir = tempfile::tempdir().expect("tempdir");
        let named = dir.path().join("capstan-a-b");
        fs::create_dir(&named).expect("mkdir");
        assert!(!is_our_cgroup(&named));
        // A real cgroup of ours (v1 or v2), when this runtime can make them.
        if let Ok(parent) = memory_cgroup_parent() {
            let cgroup = parent.path.join(format!("capstan-test-{}", std::process::id()));
            fs::create_dir(&cgroup).expect("a cgroup");
            assert!(is_our_cgroup(&cgroup));
            remove_cgroup(&cgroup);
            assert!(!cgroup.exists());
            assert!(!is_our_cgroup(&cgroup));
        }
    }

    #[test]
    fn times_are_rfc3339_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
