//! A cluster of real `capstan store` processes on loopback, and the faults a process can
//! suffer: SIGKILL (crash), restart on the same data, SIGSTOP/SIGCONT (a pause, as a long
//! GC or a VM freeze: the process keeps its sockets but answers nothing).
//!
//! # Layout
//!
//! Everything lives in one temporary directory, removed when the [`Cluster`] is dropped:
//! member i (0-based, named `n{i+1}`) keeps its data in `n{i+1}/` and its stderr in
//! `n{i+1}.log`, appended across restarts, so a failure message can show what each member
//! said ([`Cluster::member_log_tail`]; on a panicking drop every member's tail is printed).
//! The harness writes a [`START_MARKER`] line with the command line before each start.
//!
//! # Ports
//!
//! Each member gets a client port and a peer port, fixed for the cluster's life so that a
//! restarted member keeps its endpoint and its peers' view of it. They are chosen by
//! binding `127.0.0.1:0` for all of them at once (so they are distinct) and releasing
//! them just before the processes start: another process could take one in between; the
//! member then fails to start and [`Cluster::start`] reports it with the member's log.
//!
//! # The command line
//!
//! One member: `capstan store --name n1 --data-dir D --listen-client 127.0.0.1:P`. More:
//! also `--listen-peer`, `--initial-cluster n1=http://127.0.0.1:P1,...`,
//! `--initial-cluster-state new` (`existing` on restart), `--election-timeout` and
//! `--heartbeat-interval` (milliseconds); with network faults, also
//! `--initial-advertise-peer-urls` and `--peer-source-ip` (below). Then `extra_args`. A
//! member is ready when it prints `capstan store ready on <addr>` on stdout; a thread per
//! process drains stdout to its end (a full pipe would block the member) and reports that
//! line.
//!
//! # Waiting
//!
//! Nothing here sleeps for a fixed time to let something happen: every wait polls a
//! condition (a ready line, an exit status, an agreed leader) with a short interval, up
//! to a deadline, and says what it last saw when the deadline passes.
//!
//! Process control is synchronous (std::process; a kill waits for the exit), and blocks
//! the calling thread for at most its deadline; [`Cluster::leader`] is async because it
//! speaks gRPC. Signals other than SIGKILL go through the `kill` command: the workspace
//! forbids `unsafe`, and libc would need it.
//!
//! # Network faults
//!
//! With [`ClusterConfig::network_faults`] (and more than one member) the members talk to
//! each other through a [`NetProxy`] owned by the cluster, no root needed: member i's
//! peer URL, in everyone's `--initial-cluster` and its own `--initial-advertise-peer-urls`,
//! is the proxy's listener for it, which forwards to the member's real `--listen-peer`;
//! member i dials its peers from its own loopback address, `--peer-source-ip 127.0.1.(i+1)`,
//! so that the proxy knows each connection's directed link. [`Cluster::set_link`],
//! [`Cluster::partition`], [`Cluster::isolate`] and [`Cluster::heal`] set the links' faults
//! (down, delayed, lossy: see [`crate::netproxy`]); [`Cluster::link_stats`] and
//! [`Cluster::network_report`] read the proxy's counters. The proxy lives as long as the
//! cluster, so a restarted member keeps its peer URL and its links' faults. Clients reach
//! the members directly: only peer traffic is faulted. [`Cluster::leader_among`] finds the
//! leader of one side of a partition.
//!
//! Left out: faults on the client ports, disk faults, membership changes, clock skew.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use tempfile::TempDir;

use crate::netproxy::{self, LinkFault, LinkStats, NetProxy, NetProxyConfig};
use crate::{ChaosError, Result};

/// Members in one cluster, at most.
pub const MEMBERS_MAX: usize = 9;
/// What a member prints on stdout once it serves.
pub const READY_PREFIX: &str = "capstan store ready on ";
/// Interval between two looks at a condition.
const POLL_INTERVAL_MS: u64 = 20;
/// Deadline of one Status request while looking for the leader.
const STATUS_TIMEOUT_MS: u64 = 1_000;
/// Deadline for a killed process to be reaped (SIGKILL cannot be ignored; this only
/// bounds a kernel that is very slow to tear the process down).
const EXIT_DEADLINE_MS: u64 = 10_000;
/// Written to a member's log before each start of its process.
pub const START_MARKER: &str = "=== capstan-chaos: starting";
/// Log lines printed per member when a cluster is dropped during a panic.
const PANIC_LOG_LINES: usize = 40;

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Members, 1..=[`MEMBERS_MAX`].
    pub members: usize,
    /// The `capstan` binary (see [`crate::capstan_binary`]).
    pub binary: PathBuf,
    pub election_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// Appended to every member's command line.
    pub extra_args: Vec<String>,
    /// How long a member may take to print its ready line, on start and restart.
    pub start_deadline_ms: u64,
    /// Each member also serves the Kubernetes API (`--apiserver-listen`), with a
    /// kubeconfig for it at [`Cluster::kubeconfig`].
    pub apiserver: bool,
    /// Environment variables set in every member's process (failpoints, log filters).
    pub env: Vec<(String, String)>,
    /// Members talk through a fault-injecting proxy (see the module doc); without it the
    /// network fault methods fail. Ignored for one member.
    pub network_faults: bool,
    /// Seeds the proxy's random draws (`Lossy` links).
    pub network_seed: u64,
}

impl ClusterConfig {
    pub fn new(members: usize, binary: PathBuf) -> ClusterConfig {
        ClusterConfig {
            members,
            binary,
            election_timeout_ms: 1_000,
            heartbeat_interval_ms: 100,
            extra_args: Vec::new(),
            start_deadline_ms: 60_000,
            apiserver: false,
            env: Vec::new(),
            network_faults: false,
            network_seed: 0,
        }
    }
}

/// What a member's process is doing, as far as the harness made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    Running,
    /// Stopped by SIGSTOP; holds its sockets, answers nothing.
    Paused,
    /// Killed (or exited on its own, if [`Cluster::poll_exits`] noticed).
    Stopped,
}

struct Member {
    name: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    api_addr: SocketAddr,
    child: Option<Child>,
    state: MemberState,
    /// Times started, the first start included.
    starts: u32,
}

pub struct Cluster {
    config: ClusterConfig,
    members: Vec<Member>,
    /// The peer links' proxy, with network faults on.
    proxy: Option<NetProxy>,
    /// Declared last: dropped after the members' processes are gone.
    dir: TempDir,
}

impl Cluster {
    /// Starts every member and waits until each prints its ready line. All processes are
    /// spawned before any wait, since a member of a new cluster may not serve until it
    /// has heard from a quorum.
    pub fn start(config: ClusterConfig) -> Result<Cluster> {
        if config.members == 0 || config.members > MEMBERS_MAX {
            return Err(ChaosError::InvalidConfig(format!(
                "members must be 1..={MEMBERS_MAX}, not {}",
                config.members
            )));
        }
        if !config.binary.is_file() {
            return Err(ChaosError::BinaryMissing {
                path: config.binary.clone(),
                hint: "build it with `cargo build --bin capstan`".into(),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("capstan-chaos-")
            .tempdir()
            .map_err(|source| ChaosError::Io {
                context: "creating the cluster's temp dir".into(),
                source,
            })?;
        let ports = free_loopback_ports(3 * config.members)?;
        let members: Vec<Member> = (0..config.members)
            .map(|i| {
                let name = format!("n{}", i + 1);
                Member {
                    data_dir: dir.path().join(&name),
                    log_path: dir.path().join(format!("{name}.log")),
                    name,
                    client_addr: ports[3 * i],
                    peer_addr: ports[3 * i + 1],
                    api_addr: ports[3 * i + 2],
                    child: None,
                    state: MemberState::Stopped,
                    starts: 0,
                }
            })
            .collect();
        let proxy = if config.network_faults && config.members > 1 {
            let mut proxy_config = NetProxyConfig::new(members.iter().map(|m| m.peer_addr).collect());
            proxy_config.seed = config.network_seed;
            Some(NetProxy::start(proxy_config)?)
        } else {
            None
        };
        let mut cluster = Cluster {
            config,
            members,
            proxy,
            dir,
        };
        let mut ready = Vec::with_capacity(cluster.members.len());
        for i in 0..cluster.members.len() {
            ready.push(cluster.spawn(i)?);
        }
        let deadline = Instant::now() + Duration::from_millis(cluster.config.start_deadline_ms);
        for (i, ready) in ready.into_iter().enumerate() {
            cluster.wait_ready(i, ready, deadline)?;
        }
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The directory holding every member's data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Client URLs of all members, in member order, whatever their state.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Member `i`'s client URL, `http://127.0.0.1:P`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://{}", self.members[i].client_addr)
    }

    pub fn state(&self, i: usize) -> MemberState {
        self.members[i].state
    }

    /// Member `i`'s name (`n{i+1}`), as on its command line.
    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// Process id of member `i`, when it has a process.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Marks as stopped the members whose process exited on its own (a crash), and
    /// returns their indices with their exit status.
    pub fn poll_exits(&mut self) -> Vec<(usize, String)> {
        let mut exited = Vec::new();
        for (i, member) in self.members.iter_mut().enumerate() {
            let Some(child) = member.child.as_mut() else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                member.child = None;
                member.state = MemberState::Stopped;
                exited.push((i, status.to_string()));
            }
        }
        exited
    }

    /// SIGKILLs member `i` and waits until it is gone. Killing a stopped member is a no-op;
    /// a paused one dies as well (SIGKILL needs no cooperation).
    pub fn kill(&mut self, i: usize) -> Result<()> {
        self.check_index(i)?;
        let member = &mut self.members[i];
        let Some(mut child) = member.child.take() else {
            member.state = MemberState::Stopped;
            return Ok(());
        };
        member.state = MemberState::Stopped;
        if let Err(source) = child.kill() {
            // Already exited (and so not reaped yet) is the only expected failure.
            if child.try_wait().ok().flatten().is_none() {
                return Err(ChaosError::Io {
                    context: format!("SIGKILL to member {i}"),
                    source,
                });
            }
        }
        let deadline = Instant::now() + Duration::from_millis(EXIT_DEADLINE_MS);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS)),
                Ok(None) => {
                    return Err(ChaosError::Member {
                        member: i,
                        message: format!("still running {EXIT_DEADLINE_MS} ms after SIGKILL"),
                    })
                }
                Err(source) => {
                    return Err(ChaosError::Io {
                        context: format!("waiting for member {i}"),
                        source,
                    })
                }
            }
        }
    }

    /// Starts member `i` again on the same data directory and ports (killing it first if
    /// it has a process) and waits for its ready line.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i)?;
        let ready = self.spawn(i)?;
        let deadline = Instant::now() + Duration::from_millis(self.config.start_deadline_ms);
        self.wait_ready(i, ready, deadline)
    }

    /// SIGSTOPs member `i`, which must be running.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.signal(i, "STOP", MemberState::Running, MemberState::Paused)
    }

    /// SIGCONTs member `i`, which must be paused.
    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.signal(i, "CONT", MemberState::Paused, MemberState::Running)
    }

    /// Finds the leader: asks every running member for its Maintenance.Status and
    /// returns the index of the member whose ID is the leader they report, once every
    /// running member that answers names the same, non-zero leader and that leader is
    /// among those that answered. Polls until then or until `deadline_ms` passes.
    /// Paused and stopped members are not asked.
    pub async fn leader(&self, deadline_ms: u64) -> Result<usize> {
        let all: Vec<usize> = (0..self.members.len()).collect();
        self.leader_among(&all, deadline_ms).await
    }

    /// [`Cluster::leader`] asking only `members` (those of them running): the leader of
    /// one side of a partition, whatever the members on the other side believe.
    pub async fn leader_among(&self, members: &[usize], deadline_ms: u64) -> Result<usize> {
        for &i in members {
            self.check_index(i)?;
        }
        let deadline = Instant::now() + Duration::from_millis(deadline_ms);
        loop {
            let mut polls = tokio::task::JoinSet::new();
            for (i, member) in self.members.iter().enumerate() {
                if member.state == MemberState::Running && members.contains(&i) {
                    let endpoint = self.endpoint(i);
                    polls.spawn(async move { (i, status(endpoint).await) });
                }
            }
            // (member index, its member ID, the leader ID it reports)
            let mut answers: Vec<(usize, u64, u64)> = Vec::new();
            let mut errors: Vec<String> = Vec::new();
            while let Some(joined) = polls.join_next().await {
                match joined {
                    Ok((i, Ok((id, leader)))) => answers.push((i, id, leader)),
                    Ok((i, Err(e))) => errors.push(format!("member {i}: {e}")),
                    Err(e) => errors.push(format!("status task: {e}")),
                }
            }
            answers.sort_unstable();
            if let Some(&(_, _, leader)) = answers.first() {
                let agreed = leader != 0 && answers.iter().all(|&(_, _, l)| l == leader);
                if let Some(&(index, _, _)) = answers.iter().find(|&&(_, id, _)| agreed && id == leader) {
                    return Ok(index);
                }
            }
            let seen = format!(
                "answers (member, id, leader): {answers:?}; errors: {}",
                if errors.is_empty() {
                    "none".into()
                } else {
                    errors.join("; ")
                }
            );
            if Instant::now() >= deadline {
                return Err(ChaosError::Timeout(format!(
                    "no agreed leader within {deadline_ms} ms; last poll: {seen}"
                )));
            }
            let pause = Duration::from_millis(POLL_INTERVAL_MS).min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
    }

    /// Whether the members talk through the fault-injecting proxy.
    pub fn network_faults(&self) -> bool {
        self.proxy.is_some()
    }

    /// Member `i`'s peer URL, as every member knows it (the proxy's listener for it, with
    /// network faults on).
    pub fn peer_url(&self, i: usize) -> String {
        match &self.proxy {
            Some(proxy) => format!("http://{}", proxy.listen_addr(i)),
            None => format!("http://{}", self.members[i].peer_addr),
        }
    }

    fn proxy(&self) -> Result<&NetProxy> {
        self.proxy.as_ref().ok_or_else(|| {
            ChaosError::NetworkFaultsOff(if self.members.len() > 1 {
                "start it with ClusterConfig::network_faults".into()
            } else {
                "one member has no peer links".into()
            })
        })
    }

    /// Sets the fault of the link from member `from` to member `to`: what `from` sends to
    /// `to` and the answers on the same connections (see [`crate::netproxy`]).
    pub fn set_link(&self, from: usize, to: usize, fault: LinkFault) -> Result<()> {
        self.proxy()?.set_link(from, to, fault)
    }

    /// Sets every link between two members to `fault`.
    pub fn set_all_links(&self, fault: LinkFault) -> Result<()> {
        self.proxy()?.set_all_links(fault)
    }

    /// The fault of the link from member `from` to member `to`.
    pub fn link_fault(&self, from: usize, to: usize) -> Result<LinkFault> {
        self.proxy()?.link_fault(from, to)
    }

    /// Members in different groups cannot reach each other (both directions down), members
    /// of one group can (those links up); members named in no group form one more group.
    /// Replaces every link's fault.
    pub fn partition(&self, groups: &[&[usize]]) -> Result<()> {
        self.proxy()?.partition(groups)
    }

    /// Cuts member `i` off from every other member, both ways; the others still reach each
    /// other.
    pub fn isolate(&self, i: usize) -> Result<()> {
        self.proxy()?.isolate(i)
    }

    /// Every link up again.
    pub fn heal(&self) -> Result<()> {
        self.proxy()?.heal();
        Ok(())
    }

    /// The proxy's counters for the link from member `from` to member `to`.
    pub fn link_stats(&self, from: usize, to: usize) -> Result<LinkStats> {
        self.proxy()?.stats(from, to)
    }

    /// Every link's fault and counters, one line each.
    pub fn network_report(&self) -> Result<String> {
        Ok(self.proxy()?.report())
    }

    /// The last `lines_max` lines of member `i`'s log (all its runs).
    pub fn member_log_tail(&self, i: usize, lines_max: usize) -> String {
        let Some(member) = self.members.get(i) else {
            return format!("(no member {i})");
        };
        match std::fs::read_to_string(&member.log_path) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(lines_max)..].join("\n")
            }
            Err(e) => format!("(cannot read {}: {e})", member.log_path.display()),
        }
    }

    /// Every member's log tail, headed by its name and state: for failure messages.
    pub fn log_tails(&self, lines_max: usize) -> String {
        let mut out = String::new();
        for (i, member) in self.members.iter().enumerate() {
            out.push_str(&format!(
                "--- member {i} ({}, {:?}, {}) log tail ---\n{}\n",
                member.name,
                member.state,
                self.endpoint(i),
                self.member_log_tail(i, lines_max)
            ));
        }
        out
    }

    fn check_index(&self, i: usize) -> Result<()> {
        if i < self.members.len() {
            Ok(())
        } else {
            Err(ChaosError::InvalidConfig(format!(
                "no member {i} in a cluster of {}",
                self.members.len()
            )))
        }
    }

    fn signal(&mut self, i: usize, signal: &str, from: MemberState, to: MemberState) -> Result<()> {
        self.check_index(i)?;
        let member = &mut self.members[i];
        let pid = match (&member.child, member.state) {
            (Some(child), state) if state == from => child.id(),
            (_, state) => {
                return Err(ChaosError::Member {
                    member: i,
                    message: format!("cannot SIG{signal} a {state:?} member"),
                })
            }
        };
        let status = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|source| ChaosError::Io {
                context: "running the kill command".into(),
                source,
            })?;
        if !status.success() {
            return Err(ChaosError::Member {
                member: i,
                message: format!("`kill -s {signal} {pid}` failed: {status}"),
            });
        }
        member.state = to;
        Ok(())
    }

    /// The command line of member `i`.
    fn args(&self, i: usize) -> Vec<String> {
        let member = &self.members[i];
        let mut args = vec![
            "store".to_string(),
            "--name".to_string(),
            member.name.clone(),
            "--data-dir".to_string(),
            member.data_dir.display().to_string(),
            "--listen-client".to_string(),
            member.client_addr.to_string(),
        ];
        if self.members.len() > 1 {
            let initial_cluster: Vec<String> = (0..self.members.len())
                .map(|j| format!("{}={}", self.members[j].name, self.peer_url(j)))
                .collect();
            let state = if member.starts == 0 { "new" } else { "existing" };
            args.extend([
                "--listen-peer".to_string(),
                member.peer_addr.to_string(),
                "--initial-cluster".to_string(),
                initial_cluster.join(","),
                "--initial-cluster-state".to_string(),
                state.to_string(),
                "--election-timeout".to_string(),
                self.config.election_timeout_ms.to_string(),
                "--heartbeat-interval".to_string(),
                self.config.heartbeat_interval_ms.to_string(),
            ]);
        }
        if self.proxy.is_some() {
            args.extend([
                "--initial-advertise-peer-urls".to_string(),
                self.peer_url(i),
                "--peer-source-ip".to_string(),
                netproxy::source_ip(i).to_string(),
            ]);
        }
        if self.config.apiserver {
            args.extend([
                "--apiserver-listen".to_string(),
                self.members[i].api_addr.to_string(),
                "--write-kubeconfig".to_string(),
                self.kubeconfig(i).display().to_string(),
            ]);
        }
        args.extend(self.config.extra_args.iter().cloned());
        args
    }

    /// The kubeconfig of member `i`'s Kubernetes API (when [`ClusterConfig::apiserver`]).
    pub fn kubeconfig(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.kubeconfig", self.members[i].name))
    }

    /// Spawns member `i`'s process; returns the channel its ready address arrives on.
    fn spawn(&mut self, i: usize) -> Result<mpsc::Receiver<String>> {
        let args = self.args(i);
        let member = &mut self.members[i];
        let log_error = |source| ChaosError::Io {
            context: format!("writing {}", member.log_path.display()),
            source,
        };
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log_path)
            .map_err(log_error)?;
        // Marks where each run starts in the appended log.
        writeln!(
            log,
            "{START_MARKER} {} (start {}): {} {}",
            member.name,
            member.starts + 1,
            self.config.binary.display(),
            args.join(" ")
        )
        .map_err(log_error)?;
        let mut child = Command::new(&self.config.binary)
            .args(&args)
            .env("NO_COLOR", "1")
            .envs(self.config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|source| ChaosError::Io {
                context: format!("spawning {} {}", self.config.binary.display(), args.join(" ")),
                source,
            })?;
        let stdout = child.stdout.take().expect("stdout was configured as a pipe");
        let (tx, rx) = mpsc::channel();
        // Drains stdout until the process closes it (exit or kill), reporting the ready
        // line once. Ends by itself: it holds nothing but the pipe.
        std::thread::Builder::new()
            .name(format!("{}-stdout", member.name))
            .spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = line.strip_prefix(READY_PREFIX) {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(addr.trim().to_string());
                        }
                    }
                }
            })
            .map_err(|source| ChaosError::Io {
                context: "spawning a stdout reader thread".into(),
                source,
            })?;
        member.child = Some(child);
        member.state = MemberState::Running;
        member.starts += 1;
        Ok(rx)
    }

    fn wait_ready(&mut self, i: usize, ready: mpsc::Receiver<String>, deadline: Instant) -> Result<()> {
        let fail = |cluster: &Cluster, message: String| ChaosError::Member {
            member: i,
            message: format!("{message}; log tail:\n{}", cluster.member_log_tail(i, PANIC_LOG_LINES)),
        };
        loop {
            match ready.recv_timeout(Duration::from_millis(POLL_INTERVAL_MS)) {
                Ok(addr) => {
                    let expected = self.members[i].client_addr;
                    return match addr.parse::<SocketAddr>() {
                        Ok(addr) if addr == expected => Ok(()),
                        _ => Err(fail(self, format!("ready on {addr:?}, expected {expected}"))),
                    };
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Stdout is closed: the process is exiting; look again shortly.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS))
                }
            }
            let exited = self.members[i].child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.members[i].child = None;
                self.members[i].state = MemberState::Stopped;
                return Err(fail(self, format!("exited before it was ready ({status})")));
            }
            if Instant::now() >= deadline {
                return Err(fail(
                    self,
                    format!(
                        "not ready within {} ms (start_deadline_ms)",
                        self.config.start_deadline_ms
                    ),
                ));
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            member.state = MemberState::Stopped;
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(PANIC_LOG_LINES));
            if let Some(proxy) = &self.proxy {
                eprintln!("--- network links ---\n{}", proxy.report());
            }
        }
    }
}

/// `count` distinct free ports on 127.0.0.1, released on return.
fn free_loopback_ports(count: usize) -> Result<Vec<SocketAddr>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|source| ChaosError::Io {
            context: "binding 127.0.0.1:0 to find a free port".into(),
            source,
        })?;
    listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|source| ChaosError::Io {
            context: "reading a bound port".into(),
            source,
        })
}

/// One member's (member ID, leader ID) from Maintenance.Status.
async fn status(endpoint: String) -> Result<(u64, u64)> {
    let timeout = Duration::from_millis(STATUS_TIMEOUT_MS);
    let options = ConnectOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(timeout);
    let request = async {
        let mut client = Client::connect([endpoint.as_str()], Some(options)).await?;
        client.status().await
    };
    let response = match tokio::time::timeout(timeout, request).await {
        Ok(response) => response?,
        Err(_) => {
            return Err(ChaosError::Timeout(format!(
                "Status on {endpoint} took over {STATUS_TIMEOUT_MS} ms"
            )))
        }
    };
    let id = response.header().map(|h| h.member_id()).unwrap_or(0);
    Ok((id, response.leader()))
}
