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
//! The link proxies (with `network_faults`) listen on 127.0.2.1, so that they cannot be
//! given one of those released ports.
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
//! # Masters and nodes (the Kubernetes mode)
//!
//! With [`ClusterConfig::kubernetes`] the members run `capstan master` instead of
//! `capstan store`: each is a store member, the Kubernetes API (on its third port,
//! 127.0.0.1 like the others, so that the link proxies and `--peer-source-ip` work as
//! above) and a replica of the controller-manager and of the scheduler, elected through
//! the Leases `kube-system/kube-controller-manager` and `kube-system/kube-scheduler`
//! ([`Cluster::member_of_identity`] maps a Lease holder back to its member). Beside them
//! run [`KubernetesConfig::nodes`] nodes, each two processes started as `capstan up`
//! starts them (`src/up.rs`): `capstan agent` (files under `nodes/node<j>/`) and
//! `capstan proxy`, both given every master's API URL (`--master a,b,c`), and both
//! killed, restarted, paused and resumed like members ([`Cluster::kill_node_process`]
//! and the others, with [`NodeProcess`]). Logs: `node<j>-agent.log`, `node<j>-proxy.log`.
//!
//! Addresses, with `<net>` = [`KubernetesConfig::loopback_net`] (default
//! [`KUBE_LOOPBACK_NET_DEFAULT`], 40): node j (1-based) is `127.<net>.2.<j>` (its agent's
//! port 10250 and its NodePorts), Services get ClusterIPs in `127.<64+net>.0.0/16`
//! (`--service-cluster-ip-range`) and pods addresses in `127.<128+net>.0.0/16`
//! (`--cluster-cidr`, a /24 per node). `capstan up` uses net 1 by default, tests/ha.rs
//! nets 9 and 10, the tests of the root package 127.64–69.x and 127.128–129.x, so 40 is
//! apart from all of them. Every node proxy listens on every ClusterIP of its cluster on
//! the machine's shared loopback (with `SO_REUSEPORT`), so **two clusters in the
//! Kubernetes mode must not run at once on one machine with the same net**: their proxies
//! would share listeners and their agents' ports would clash. Give each its own net.
//!
//! Containers outlive their agent, as the kubelet's do: a killed agent leaves its pods
//! running and the restarted one adopts them (`agents/src/node/process.rs`). That is the
//! behaviour under test, so [`Cluster::kill_node_process`] leaves them alone;
//! [`Cluster::reap_node_containers`] kills a node's containers (a machine that died).
//! When the cluster is dropped, the nodes' processes are killed first, then every
//! container under any node's directory (the process groups named by the runtime's
//! `state.json` files, and any process whose working directory is under a node's
//! directory, which catches one whose agent died before it wrote the state file), then the
//! members: nothing started during a run outlives the [`Cluster`].
//!
//! Left out: faults on the client ports, disk faults, membership changes, clock skew;
//! network faults between nodes and masters (the agents and proxies reach the APIs
//! directly), the cluster DNS.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use tempfile::TempDir;

use crate::netproxy::{self, LinkFault, LinkStats, NetProxy, NetProxyConfig};
use crate::{ChaosError, Result};

/// Members in one cluster, at most.
pub const MEMBERS_MAX: usize = 9;
/// Nodes in one cluster, at most (each is two processes, and its pods).
pub const NODES_MAX: usize = 20;
/// Where the link proxies listen (any 127/8 address is local on Linux); apart from the
/// members' 127.0.0.1 and their source addresses 127.0.1.x.
const PROXY_LISTEN_IP: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 2, 1));
/// What a member prints on stdout once it serves.
pub const READY_PREFIX: &str = "capstan store ready on ";
/// What a node agent prints on stdout once it runs pods (then its node's name).
pub const AGENT_READY_PREFIX: &str = "capstan agent ready on node ";
/// What a node proxy prints on stdout once it forwards (then its node's name).
pub const PROXY_READY_PREFIX: &str = "capstan proxy ready on node ";
/// The default `<net>` of the Kubernetes mode's loopback addresses (see the module doc).
pub const KUBE_LOOPBACK_NET_DEFAULT: u8 = 40;
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
/// A container's `state.json` larger than this is not the runtime's (its are a few
/// hundred bytes).
const STATE_FILE_BYTES_MAX: u64 = 64 * 1024;
/// Directories walked under one node's `containers/`, at most (pods times containers).
const CONTAINER_DIRS_MAX: usize = 100_000;

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
    /// Environment variables set in every member's process (failpoints, log filters),
    /// and in every node process.
    pub env: Vec<(String, String)>,
    /// Members talk through a fault-injecting proxy (see the module doc); without it the
    /// network fault methods fail. Ignored for one member.
    pub network_faults: bool,
    /// Seeds the proxy's random draws (`Lossy` links).
    pub network_seed: u64,
    /// Masters and nodes: members run `capstan master` (the API is implied, whatever
    /// [`ClusterConfig::apiserver`] says) and nodes run beside them (see the module doc).
    pub kubernetes: Option<KubernetesConfig>,
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
            kubernetes: None,
        }
    }
}

/// The Kubernetes mode's shape (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// Nodes, 0..=[`NODES_MAX`], each a `capstan agent` and a `capstan proxy` process.
    pub nodes: usize,
    /// `<net>` of the addresses: nodes on `127.<net>.2.<j>`, Services in
    /// `127.<64+net>.0.0/16`, pods in `127.<128+net>.0.0/16`; 1..=63.
    pub loopback_net: u8,
}

impl KubernetesConfig {
    pub fn new(nodes: usize) -> KubernetesConfig {
        KubernetesConfig {
            nodes,
            loopback_net: KUBE_LOOPBACK_NET_DEFAULT,
        }
    }

    /// Node `j`'s (0-based) address, `127.<net>.2.<j+1>`.
    pub fn node_ip(&self, j: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, self.loopback_net, 2, (j + 1) as u8)
    }

    /// The Services' ClusterIPs, `127.<64+net>.0.0/16`.
    pub fn service_cidr(&self) -> String {
        format!("127.{}.0.0/16", 64 + u16::from(self.loopback_net))
    }

    /// The pods' addresses, `127.<128+net>.0.0/16`.
    pub fn pod_cidr(&self) -> String {
        format!("127.{}.0.0/16", 128 + u16::from(self.loopback_net))
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

/// One of a node's two processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeProcess {
    /// `capstan agent`: registers the node, runs its pods.
    Agent,
    /// `capstan proxy`: forwards the Services' ClusterIPs to their endpoints.
    Proxy,
}

impl NodeProcess {
    pub const ALL: [NodeProcess; 2] = [NodeProcess::Agent, NodeProcess::Proxy];

    pub fn name(self) -> &'static str {
        match self {
            NodeProcess::Agent => "agent",
            NodeProcess::Proxy => "proxy",
        }
    }

    fn index(self) -> usize {
        match self {
            NodeProcess::Agent => 0,
            NodeProcess::Proxy => 1,
        }
    }

    fn ready_prefix(self) -> &'static str {
        match self {
            NodeProcess::Agent => AGENT_READY_PREFIX,
            NodeProcess::Proxy => PROXY_READY_PREFIX,
        }
    }
}

impl std::fmt::Display for NodeProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A node's name and the directory its agent keeps its pods' files in (the containers'
/// `state.json` under `containers/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRoot {
    pub node: String,
    pub root: PathBuf,
}

/// A container process that runs now under a node's directory, from its `state.json`
/// (see `agents/src/node/process.rs`): the pod it belongs to, as the agent recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeContainer {
    pub node: String,
    pub pod_uid: String,
    pub namespace: String,
    pub pod_name: String,
    pub container: String,
    pub pid: u32,
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

/// One node process (agent or proxy) as the harness runs it.
struct NodeProc {
    log_path: PathBuf,
    child: Option<Child>,
    state: MemberState,
    starts: u32,
}

struct Node {
    /// `node<j+1>`.
    name: String,
    ip: Ipv4Addr,
    /// The agent's `--root-dir`.
    root: PathBuf,
    /// By [`NodeProcess::index`].
    procs: [NodeProc; 2],
}

pub struct Cluster {
    config: ClusterConfig,
    members: Vec<Member>,
    /// Empty unless in the Kubernetes mode.
    nodes: Vec<Node>,
    /// The peer links' proxy, with network faults on.
    proxy: Option<NetProxy>,
    /// Declared last: dropped after the members' processes are gone.
    dir: TempDir,
}

impl Cluster {
    /// Starts every member and waits until each prints its ready line. All processes are
    /// spawned before any wait, since a member of a new cluster may not serve until it
    /// has heard from a quorum. In the Kubernetes mode the nodes' processes start once
    /// every master is ready, and are waited for as well (an agent is ready once its Node
    /// is registered and has its pod CIDR).
    pub fn start(config: ClusterConfig) -> Result<Cluster> {
        if config.members == 0 || config.members > MEMBERS_MAX {
            return Err(ChaosError::InvalidConfig(format!(
                "members must be 1..={MEMBERS_MAX}, not {}",
                config.members
            )));
        }
        if let Some(kube) = &config.kubernetes {
            if kube.nodes > NODES_MAX {
                return Err(ChaosError::InvalidConfig(format!(
                    "nodes must be 0..={NODES_MAX}, not {}",
                    kube.nodes
                )));
            }
            if !(1..=63).contains(&kube.loopback_net) {
                return Err(ChaosError::InvalidConfig(format!(
                    "loopback_net must be 1..=63, not {}",
                    kube.loopback_net
                )));
            }
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
        let nodes: Vec<Node> = match &config.kubernetes {
            None => Vec::new(),
            Some(kube) => (0..kube.nodes)
                .map(|j| {
                    let name = format!("node{}", j + 1);
                    let proc = |p: NodeProcess| NodeProc {
                        log_path: dir.path().join(format!("{name}-{p}.log")),
                        child: None,
                        state: MemberState::Stopped,
                        starts: 0,
                    };
                    Node {
                        ip: kube.node_ip(j),
                        root: dir.path().join("nodes").join(&name),
                        procs: [proc(NodeProcess::Agent), proc(NodeProcess::Proxy)],
                        name,
                    }
                })
                .collect(),
        };
        let proxy = if config.network_faults && config.members > 1 {
            let mut proxy_config = NetProxyConfig::new(members.iter().map(|m| m.peer_addr).collect());
            proxy_config.seed = config.network_seed;
            // Not 127.0.0.1: the members' ports there were picked and released above and
            // are bound only when the members start, so a proxy listening on port 0 of
            // the same address could be given one of them (seen: a member then failed
            // with "Address already in use" on its peer port).
            proxy_config.listen_ip = PROXY_LISTEN_IP;
            Some(NetProxy::start(proxy_config)?)
        } else {
            None
        };
        let mut cluster = Cluster {
            config,
            members,
            nodes,
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
        let mut ready = Vec::with_capacity(2 * cluster.nodes.len());
        for j in 0..cluster.nodes.len() {
            for p in NodeProcess::ALL {
                ready.push((j, p, cluster.spawn_node_process(j, p)?));
            }
        }
        let deadline = Instant::now() + Duration::from_millis(cluster.config.start_deadline_ms);
        for (j, p, ready) in ready {
            cluster.wait_node_ready(j, p, ready, deadline)?;
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

    /// Whether the members serve the Kubernetes API (with [`ClusterConfig::apiserver`] or
    /// in the Kubernetes mode).
    pub fn serves_api(&self) -> bool {
        self.config.apiserver || self.config.kubernetes.is_some()
    }

    /// Member `i`'s Kubernetes API URL, `http://127.0.0.1:P` (served only when
    /// [`Cluster::serves_api`]).
    pub fn api_url(&self, i: usize) -> String {
        format!("http://{}", self.members[i].api_addr)
    }

    /// Every member's Kubernetes API URL, in member order, whatever their state.
    pub fn api_urls(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.api_url(i)).collect()
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

    /// The member a controller-manager or scheduler replica identity belongs to: masters
    /// campaign as `<member name>_<host>_<pid>_<start>` (`src/main.rs`), so the Lease
    /// holders name their master. `None` for an identity of no member of this cluster.
    /// The identity may be of an earlier process of that member (a Lease outlives its
    /// holder until it expires): compare its pid with [`Cluster::pid`] to tell.
    pub fn member_of_identity(&self, identity: &str) -> Option<usize> {
        let name = identity.split('_').next()?;
        self.members.iter().position(|m| m.name == name)
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
        member.state = MemberState::Stopped;
        let Some(child) = member.child.take() else {
            return Ok(());
        };
        kill_and_reap(child).map_err(|message| ChaosError::Member { member: i, message })
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
        log_tail(&member.log_path, lines_max)
    }

    /// Every member's log tail, headed by its name and state, then every node process's:
    /// for failure messages.
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
        for (j, node) in self.nodes.iter().enumerate() {
            for p in NodeProcess::ALL {
                out.push_str(&format!(
                    "--- node {j} {p} ({}, {:?}) log tail ---\n{}\n",
                    node.name,
                    node.procs[p.index()].state,
                    self.node_log_tail(j, p, lines_max)
                ));
            }
        }
        out
    }

    // ---- Nodes (the Kubernetes mode) ----

    /// Nodes (0 outside the Kubernetes mode).
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The Kubernetes mode's shape, if on.
    pub fn kubernetes(&self) -> Option<&KubernetesConfig> {
        self.config.kubernetes.as_ref()
    }

    /// Node `j`'s name, `node{j+1}` (its Node object's name).
    pub fn node_name(&self, j: usize) -> &str {
        &self.nodes[j].name
    }

    /// Node `j`'s address, `127.<net>.2.<j+1>`.
    pub fn node_ip(&self, j: usize) -> Ipv4Addr {
        self.nodes[j].ip
    }

    /// Every node's name and agent directory, for reading which containers run where
    /// ([`live_containers`]).
    pub fn node_roots(&self) -> Vec<NodeRoot> {
        self.nodes
            .iter()
            .map(|n| NodeRoot {
                node: n.name.clone(),
                root: n.root.clone(),
            })
            .collect()
    }

    pub fn node_state(&self, j: usize, p: NodeProcess) -> MemberState {
        self.nodes[j].procs[p.index()].state
    }

    /// Process id of node `j`'s process `p`, when it has one.
    pub fn node_pid(&self, j: usize, p: NodeProcess) -> Option<u32> {
        self.nodes[j].procs[p.index()].child.as_ref().map(Child::id)
    }

    /// SIGKILLs node `j`'s process `p` and waits until it is gone; a no-op on a stopped
    /// one. An agent's containers keep running (see the module doc).
    pub fn kill_node_process(&mut self, j: usize, p: NodeProcess) -> Result<()> {
        self.check_node(j)?;
        let proc = &mut self.nodes[j].procs[p.index()];
        proc.state = MemberState::Stopped;
        let Some(child) = proc.child.take() else {
            return Ok(());
        };
        kill_and_reap(child).map_err(|message| node_error(j, p, message))
    }

    /// Starts node `j`'s process `p` again (killing it first if it has a process) and
    /// waits for its ready line: a restarted agent adopts the containers it left.
    pub fn restart_node_process(&mut self, j: usize, p: NodeProcess) -> Result<()> {
        self.kill_node_process(j, p)?;
        let ready = self.spawn_node_process(j, p)?;
        let deadline = Instant::now() + Duration::from_millis(self.config.start_deadline_ms);
        self.wait_node_ready(j, p, ready, deadline)
    }

    /// SIGSTOPs node `j`'s process `p`, which must be running.
    pub fn pause_node_process(&mut self, j: usize, p: NodeProcess) -> Result<()> {
        self.signal_node(j, p, "STOP", MemberState::Running, MemberState::Paused)
    }

    /// SIGCONTs node `j`'s process `p`, which must be paused.
    pub fn resume_node_process(&mut self, j: usize, p: NodeProcess) -> Result<()> {
        self.signal_node(j, p, "CONT", MemberState::Paused, MemberState::Running)
    }

    /// Marks as stopped the node processes that exited on their own, and returns them
    /// with their exit status.
    pub fn poll_node_exits(&mut self) -> Vec<(usize, NodeProcess, String)> {
        let mut exited = Vec::new();
        for (j, node) in self.nodes.iter_mut().enumerate() {
            for p in NodeProcess::ALL {
                let proc = &mut node.procs[p.index()];
                let Some(child) = proc.child.as_mut() else { continue };
                if let Ok(Some(status)) = child.try_wait() {
                    proc.child = None;
                    proc.state = MemberState::Stopped;
                    exited.push((j, p, status.to_string()));
                }
            }
        }
        exited
    }

    /// Kills (SIGKILL to its process group) every container running under node `j`'s
    /// directory, as if the machine had died; returns how many processes were signalled.
    /// Its agent is not touched: a running agent notices and starts them again.
    pub fn reap_node_containers(&self, j: usize) -> Result<usize> {
        self.check_node(j)?;
        Ok(reap_containers(&self.nodes[j].root))
    }

    /// The containers running now on every node ([`live_containers`] of each).
    pub fn live_containers(&self) -> Vec<NodeContainer> {
        self.node_roots().iter().flat_map(live_containers).collect()
    }

    /// The last `lines_max` lines of node `j`'s process `p`'s log (all its runs).
    pub fn node_log_tail(&self, j: usize, p: NodeProcess, lines_max: usize) -> String {
        match self.nodes.get(j) {
            Some(node) => log_tail(&node.procs[p.index()].log_path, lines_max),
            None => format!("(no node {j})"),
        }
    }

    fn check_node(&self, j: usize) -> Result<()> {
        check_in(j, self.nodes.len(), "node")
    }

    fn signal_node(
        &mut self,
        j: usize,
        p: NodeProcess,
        signal: &str,
        from: MemberState,
        to: MemberState,
    ) -> Result<()> {
        self.check_node(j)?;
        let proc = &mut self.nodes[j].procs[p.index()];
        let pid = match (&proc.child, proc.state) {
            (Some(child), state) if state == from => child.id(),
            (_, state) => return Err(node_error(j, p, format!("cannot SIG{signal} a {state:?} process"))),
        };
        send_signal(pid, signal).map_err(|message| node_error(j, p, message))?;
        proc.state = to;
        Ok(())
    }

    /// The command line of node `j`'s process `p`, as `capstan up` builds it.
    fn node_args(&self, j: usize, p: NodeProcess) -> Vec<String> {
        let node = &self.nodes[j];
        let masters = self.api_urls().join(",");
        let mut args = vec![
            p.name().to_string(),
            "--node-name".to_string(),
            node.name.clone(),
            "--master".to_string(),
            masters,
            "--node-ip".to_string(),
            node.ip.to_string(),
        ];
        if p == NodeProcess::Agent {
            args.extend(["--root-dir".to_string(), node.root.display().to_string()]);
        }
        args
    }

    fn spawn_node_process(&mut self, j: usize, p: NodeProcess) -> Result<mpsc::Receiver<String>> {
        let args = self.node_args(j, p);
        let node = &mut self.nodes[j];
        let proc = &mut node.procs[p.index()];
        let (child, rx) = spawn_process(
            &self.config,
            &args,
            &proc.log_path,
            &format!("{}-{p} (start {})", node.name, proc.starts + 1),
            p.ready_prefix(),
        )?;
        proc.child = Some(child);
        proc.state = MemberState::Running;
        proc.starts += 1;
        Ok(rx)
    }

    fn wait_node_ready(
        &mut self,
        j: usize,
        p: NodeProcess,
        ready: mpsc::Receiver<String>,
        deadline: Instant,
    ) -> Result<()> {
        let fail = |cluster: &Cluster, message: String| {
            node_error(
                j,
                p,
                format!("{message}; log tail:\n{}", cluster.node_log_tail(j, p, PANIC_LOG_LINES)),
            )
        };
        let proc = &mut self.nodes[j].procs[p.index()];
        match wait_for_line(&mut proc.child, &ready, deadline) {
            LineWait::Ready(rest) => {
                let name = &self.nodes[j].name;
                // The agent says `<name>`, the proxy `<name> (<ip>)`.
                if rest.split_whitespace().next() == Some(name.as_str()) {
                    Ok(())
                } else {
                    Err(fail(self, format!("ready as {rest:?}, expected node {name}")))
                }
            }
            LineWait::Exited(status) => {
                proc.state = MemberState::Stopped;
                Err(fail(self, format!("exited before it was ready ({status})")))
            }
            LineWait::TimedOut => Err(fail(
                self,
                format!(
                    "not ready within {} ms (start_deadline_ms)",
                    self.config.start_deadline_ms
                ),
            )),
        }
    }

    // ---- Members ----

    fn check_index(&self, i: usize) -> Result<()> {
        check_in(i, self.members.len(), "member")
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
        send_signal(pid, signal).map_err(|message| ChaosError::Member { member: i, message })?;
        member.state = to;
        Ok(())
    }

    /// The command line of member `i`.
    fn args(&self, i: usize) -> Vec<String> {
        let member = &self.members[i];
        let command = if self.config.kubernetes.is_some() {
            "master"
        } else {
            "store"
        };
        let mut args = vec![
            command.to_string(),
            "--name".to_string(),
            member.name.clone(),
            "--data-dir".to_string(),
            member.data_dir.display().to_string(),
            "--listen-client".to_string(),
            member.client_addr.to_string(),
            // Plain HTTP: the workloads' clients speak it.
            "--insecure".to_string(),
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
        if self.serves_api() {
            args.extend([
                "--apiserver-listen".to_string(),
                self.members[i].api_addr.to_string(),
                "--write-kubeconfig".to_string(),
                self.kubeconfig(i).display().to_string(),
            ]);
        }
        if let Some(kube) = &self.config.kubernetes {
            args.extend([
                "--service-cluster-ip-range".to_string(),
                kube.service_cidr(),
                "--cluster-cidr".to_string(),
                kube.pod_cidr(),
            ]);
        }
        args.extend(self.config.extra_args.iter().cloned());
        args
    }

    /// The kubeconfig of member `i`'s Kubernetes API (when [`Cluster::serves_api`]).
    pub fn kubeconfig(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.kubeconfig", self.members[i].name))
    }

    /// Spawns member `i`'s process; returns the channel its ready address arrives on.
    fn spawn(&mut self, i: usize) -> Result<mpsc::Receiver<String>> {
        let args = self.args(i);
        let member = &mut self.members[i];
        let (child, rx) = spawn_process(
            &self.config,
            &args,
            &member.log_path,
            &format!("{} (start {})", member.name, member.starts + 1),
            READY_PREFIX,
        )?;
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
        match wait_for_line(&mut self.members[i].child, &ready, deadline) {
            LineWait::Ready(addr) => {
                let expected = self.members[i].client_addr;
                match addr.parse::<SocketAddr>() {
                    Ok(addr) if addr == expected => Ok(()),
                    _ => Err(fail(self, format!("ready on {addr:?}, expected {expected}"))),
                }
            }
            LineWait::Exited(status) => {
                self.members[i].state = MemberState::Stopped;
                Err(fail(self, format!("exited before it was ready ({status})")))
            }
            LineWait::TimedOut => Err(fail(
                self,
                format!(
                    "not ready within {} ms (start_deadline_ms)",
                    self.config.start_deadline_ms
                ),
            )),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Nodes first, so that no agent starts a container after the reaping, then the
        // containers, then the members.
        for node in &mut self.nodes {
            for proc in &mut node.procs {
                if let Some(child) = proc.child.take() {
                    let _ = kill_and_reap(child);
                }
                proc.state = MemberState::Stopped;
            }
        }
        for node in &self.nodes {
            reap_containers(&node.root);
        }
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

fn node_error(node: usize, process: NodeProcess, message: String) -> ChaosError {
    ChaosError::Node {
        node,
        process: process.name(),
        message,
    }
}

fn log_tail(path: &Path, lines_max: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(lines_max)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Spawns `binary args` with stderr appended to `log_path` (after a [`START_MARKER`] line
/// naming `what`); returns the process and the channel on which the rest of its first
/// stdout line starting with `ready_prefix` arrives.
fn spawn_process(
    config: &ClusterConfig,
    args: &[String],
    log_path: &Path,
    what: &str,
    ready_prefix: &'static str,
) -> Result<(Child, mpsc::Receiver<String>)> {
    let log_error = |source| ChaosError::Io {
        context: format!("writing {}", log_path.display()),
        source,
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(log_error)?;
    // Marks where each run starts in the appended log.
    writeln!(
        log,
        "{START_MARKER} {what}: {} {}",
        config.binary.display(),
        args.join(" ")
    )
    .map_err(log_error)?;
    let mut child = Command::new(&config.binary)
        .args(args)
        .env("NO_COLOR", "1")
        .envs(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|source| ChaosError::Io {
            context: format!("spawning {} {}", config.binary.display(), args.join(" ")),
            source,
        })?;
    let stdout = child.stdout.take().expect("stdout was configured as a pipe");
    let (tx, rx) = mpsc::channel();
    // Drains stdout until the process closes it (exit or kill), reporting the ready
    // line once. Ends by itself: it holds nothing but the pipe.
    let spawned = std::thread::Builder::new()
        .name(format!(
            "{}-stdout",
            what.split_whitespace().next().unwrap_or("capstan")
        ))
        .spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix(ready_prefix) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
            }
        });
    if let Err(source) = spawned {
        let _ = kill_and_reap(child);
        return Err(ChaosError::Io {
            context: "spawning a stdout reader thread".into(),
            source,
        });
    }
    Ok((child, rx))
}

enum LineWait {
    Ready(String),
    Exited(ExitStatus),
    TimedOut,
}

/// Waits for the ready line on `ready`, the process's exit (then `child` is cleared), or
/// `deadline`.
fn wait_for_line(child: &mut Option<Child>, ready: &mpsc::Receiver<String>, deadline: Instant) -> LineWait {
    loop {
        match ready.recv_timeout(Duration::from_millis(POLL_INTERVAL_MS)) {
            Ok(rest) => return LineWait::Ready(rest),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Stdout is closed: the process is exiting; look again shortly.
            Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS)),
        }
        if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            *child = None;
            return LineWait::Exited(status);
        }
        if Instant::now() >= deadline {
            return LineWait::TimedOut;
        }
    }
}

/// SIGKILLs `child` and waits until it is reaped; the error says what went wrong.
fn kill_and_reap(mut child: Child) -> std::result::Result<(), String> {
    if let Err(e) = child.kill() {
        // Already exited (and so not reaped yet) is the only expected failure.
        if child.try_wait().ok().flatten().is_none() {
            return Err(format!("SIGKILL failed: {e}"));
        }
    }
    let deadline = Instant::now() + Duration::from_millis(EXIT_DEADLINE_MS);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS)),
            Ok(None) => return Err(format!("still running {EXIT_DEADLINE_MS} ms after SIGKILL")),
            Err(e) => return Err(format!("waiting for the process: {e}")),
        }
    }
}

/// Sends `signal` (a name the `kill` command knows) to `pid` through the `kill` command.
fn send_signal(pid: u32, signal: &str) -> std::result::Result<(), String> {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("running the kill command: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`kill -s {signal} {pid}` failed: {status}"))
    }
}

/// What the harness reads of `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ProcStat {
    /// Not ended (a zombie has ended).
    running: bool,
    process_group: u32,
    start_time_ticks: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&text)
}

fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    // Field 2, the command name, is in parentheses and may hold spaces and parentheses:
    // fields 3 on follow the last ')'.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    Some(ProcStat {
        running: !matches!(state, 'Z' | 'X' | 'x'),
        process_group: fields.get(5 - 3)?.parse().ok()?,
        start_time_ticks: fields.get(22 - 3)?.parse().ok()?,
    })
}

/// One container's `state.json`, the fields the harness needs.
struct ContainerStateFile {
    pod_uid: String,
    container: String,
    namespace: String,
    pod_name: String,
    pid: u32,
    start_time_ticks: u64,
}

/// Every `state.json` under `<root>/containers/<pod uid>/<container>/`.
fn container_states(root: &Path) -> Vec<ContainerStateFile> {
    let mut out = Vec::new();
    let Ok(pods) = std::fs::read_dir(root.join("containers")) else {
        return out;
    };
    for pod in pods.flatten().take(CONTAINER_DIRS_MAX) {
        let Ok(containers) = std::fs::read_dir(pod.path()) else {
            continue;
        };
        for container in containers.flatten().take(CONTAINER_DIRS_MAX) {
            let path = container.path().join("state.json");
            let small = std::fs::metadata(&path).is_ok_and(|m| m.len() <= STATE_FILE_BYTES_MAX);
            let Some(state) = small
                .then(|| std::fs::read(&path).ok())
                .flatten()
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            else {
                continue;
            };
            let text = |key: &str| state.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            let number = |key: &str| state.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
            out.push(ContainerStateFile {
                pod_uid: pod.file_name().to_string_lossy().into_owned(),
                container: container.file_name().to_string_lossy().into_owned(),
                namespace: text("namespace"),
                pod_name: text("pod_name"),
                pid: u32::try_from(number("pid")).unwrap_or(0),
                start_time_ticks: number("start_time_ticks"),
            });
        }
    }
    out
}

/// The containers whose process runs now under `node.root`, from their `state.json` (a
/// pid counts only while `/proc` shows it with the recorded start time, so a reused pid
/// is not taken for the container).
pub fn live_containers(node: &NodeRoot) -> Vec<NodeContainer> {
    container_states(&node.root)
        .into_iter()
        .filter(|s| {
            s.pid > 1 && proc_stat(s.pid).is_some_and(|p| p.running && p.start_time_ticks == s.start_time_ticks)
        })
        .map(|s| NodeContainer {
            node: node.node.clone(),
            pod_uid: s.pod_uid,
            namespace: s.namespace,
            pod_name: s.pod_name,
            container: s.container,
            pid: s.pid,
        })
        .collect()
}

/// SIGKILLs every container under an agent's `root`: the process group of each live
/// `state.json`, and every process whose working directory is under `root` (a container
/// whose agent died between starting it and writing its state file; containers start
/// in `<root>/containers/<uid>/<name>/work` unless their pod says otherwise). Never this
/// process or its group, never pid 1. Returns how many signals were sent.
fn reap_containers(root: &Path) -> usize {
    let own = std::process::id();
    let own_group = proc_stat(own).map(|s| s.process_group);
    let mut killed = 0;
    let mut kill = |pid: u32, group: bool| {
        if pid <= 1 || pid == own || (group && Some(pid) == own_group) {
            return;
        }
        let Some(target) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
            return;
        };
        let sent = if group {
            rustix::process::kill_process_group(target, rustix::process::Signal::KILL)
        } else {
            rustix::process::kill_process(target, rustix::process::Signal::KILL)
        };
        if sent.is_ok() {
            killed += 1;
        }
    };
    for state in container_states(root) {
        if state.pid > 1
            && proc_stat(state.pid).is_some_and(|p| p.running && p.start_time_ticks == state.start_time_ticks)
        {
            kill(state.pid, true);
        }
    }
    let Ok(root) = std::fs::canonicalize(root) else {
        return killed;
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return killed;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let under_root = std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&root));
        if under_root {
            // The whole group if it leads one (a container's main process does).
            let leads = proc_stat(pid).is_some_and(|s| s.process_group == pid);
            kill(pid, leads);
        }
    }
    killed
}

/// `count` distinct free ports on 127.0.0.1 (see [`crate::ports`]).
fn free_loopback_ports(count: usize) -> Result<Vec<SocketAddr>> {
    (0..count)
        .map(|_| {
            crate::ports::free_port(Ipv4Addr::LOCALHOST)
                .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .map_err(|source| ChaosError::Io {
                    context: "finding a free port on 127.0.0.1".into(),
                    source,
                })
        })
        .collect()
}

/// One member's (member ID, leader ID) from Maintenance.Status.
/// `Ok` when `i` indexes one of `len` things of a kind (`what`: member, node).
fn check_in(i: usize, len: usize, what: &str) -> Result<()> {
    if i < len {
        Ok(())
    } else {
        Err(ChaosError::InvalidConfig(format!(
            "no {what} {i} in a cluster of {len} {what}s"
        )))
    }
}

pub(crate) async fn status(endpoint: String) -> Result<(u64, u64)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_addresses_follow_capstan_up() {
        let kube = KubernetesConfig::new(2);
        assert_eq!(kube.loopback_net, KUBE_LOOPBACK_NET_DEFAULT);
        assert_eq!(kube.node_ip(0), Ipv4Addr::new(127, 40, 2, 1));
        assert_eq!(kube.node_ip(1), Ipv4Addr::new(127, 40, 2, 2));
        assert_eq!(kube.service_cidr(), "127.104.0.0/16");
        assert_eq!(kube.pod_cidr(), "127.168.0.0/16");
        let kube = KubernetesConfig {
            nodes: 1,
            loopback_net: 63,
        };
        assert_eq!(kube.service_cidr(), "127.127.0.0/16");
        assert_eq!(kube.pod_cidr(), "127.191.0.0/16");
    }

    #[test]
    fn proc_stat_is_read_after_the_last_parenthesis() {
        let line = "4242 (sh (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            parse_proc_stat(line),
            Some(ProcStat {
                running: true,
                process_group: 4242,
                start_time_ticks: 987654,
            })
        );
        let zombie = line.replace(") S ", ") Z ");
        assert_eq!(parse_proc_stat(&zombie).map(|s| s.running), Some(false));
        assert_eq!(parse_proc_stat("garbage"), None);
        let own = proc_stat(std::process::id()).expect("this process's stat");
        assert!(own.running && own.start_time_ticks > 0);
    }

    #[test]
    fn live_containers_need_a_matching_start_time_and_reaping_kills_their_groups() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("containers/uid-1/web/work");
        std::fs::create_dir_all(&work).expect("dirs");
        let mut child = Command::new("sleep")
            .arg("600")
            .current_dir(&work)
            .process_group(0)
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let ticks = proc_stat(pid).expect("stat").start_time_ticks;
        let write = |ticks: u64| {
            let state =
                serde_json::json!({"namespace": "ns", "pod_name": "web-1", "pid": pid, "start_time_ticks": ticks});
            std::fs::write(dir.path().join("containers/uid-1/web/state.json"), state.to_string()).expect("state");
        };
        let node = NodeRoot {
            node: "node1".into(),
            root: dir.path().to_path_buf(),
        };
        write(ticks + 1);
        assert!(
            live_containers(&node).is_empty(),
            "another start time is another process"
        );
        write(ticks);
        let live = live_containers(&node);
        assert_eq!(live.len(), 1);
        assert_eq!(
            (
                live[0].pod_uid.as_str(),
                live[0].pod_name.as_str(),
                live[0].node.as_str(),
                live[0].pid
            ),
            ("uid-1", "web-1", "node1", pid)
        );
        assert!(reap_containers(dir.path()) >= 1);
        let status = child.wait().expect("wait");
        assert!(!status.success(), "killed: {status}");
        assert!(live_containers(&node).is_empty());
    }
}
