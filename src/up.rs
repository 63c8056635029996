//! `capstan up`: a whole HA cluster on this machine, as separate OS processes, for trying
//! Capstan out and for tests: `--masters` masters (`capstan master`: store member, API,
//! controller-manager and scheduler replicas) and `--nodes` nodes (`capstan agent` and
//! `capstan proxy` each), supervised by this process until Ctrl-C.
//!
//! # Addresses
//!
//! Every process gets its own loopback address, so each can use the usual ports, as on
//! separate machines: master `m<i>` listens on `127.<net>.1.<i>` (etcd API 2379, peers
//! 2380, store metrics 2381, Kubernetes API 6443), node `node<j>` on `127.<net>.2.<j>` (agent 10250, its
//! NodePorts). Linux routes all of 127.0.0.0/8 to the loopback interface, so nothing has
//! to be set up. The Services' ClusterIPs are in 127.<64 + net>.0.0/16 and the pods'
//! addresses in 127.<128 + net>.0.0/16 (a /24 per node). `--loopback-net` picks `<net>`
//! (1 by default), so that two clusters can run side by side: every node proxy serves
//! every ClusterIP of its cluster on the shared loopback, so two clusters must not share
//! a Service range, nor pods an address.
//!
//! kubectl reaches the cluster at `--api-listen` (127.0.0.1:6443), where this process
//! forwards each connection to one of the masters' APIs, the next one when a master does
//! not accept (the node proxy's forwarder); agents and proxies are given every master's
//! URL and fail over by themselves (`capstan_agents::client`).
//!
//! # Files
//!
//! Everything lives under `--data-dir` (`./.capstan/up`): `cluster.json` (the shape and
//! the cluster token, written on the first start and checked on every later one),
//! `kubeconfig`, and per process its data (`m1/`, `nodes/node1/`), its log (`m1.log`,
//! `node1-agent.log`, `node1-proxy.log`, appended across restarts) and, while it runs, its
//! pid (`m1.pid`). Without `--insecure`, `pki/` holds the cluster CA and, made anew at
//! every start, each node's kubeconfigs (`node1-agent.kubeconfig`,
//! `node1-proxy.kubeconfig`) and its agent's serving certificate
//! (`node1-agent-serving.crt`, `.key`: the agent's port is HTTPS, and the masters' API
//! servers ask it for logs with their kubelet client certificates). Starting again with
//! the same `--data-dir` restarts the same cluster: members rejoin from their data, and
//! agents adopt the containers they left running.
//!
//! # Supervision
//!
//! A process that exits while the cluster is up is started again (`--restart`, on by
//! default) after a back-off of 1 s doubling to 30 s, reset once it has run for a minute:
//! so a killed master comes back and rejoins, as under a service manager. Ctrl-C (or
//! SIGTERM) stops the nodes first, then the masters, each with SIGTERM and, after
//! [`STOP_GRACE`], SIGKILL. Containers keep running (as the kubelet's do when it stops);
//! the next `capstan up` on the same directory adopts them.
//!
//! Left out: the cluster DNS (run `capstan dns` against the cluster to add it), and
//! placing processes on other machines (that is `capstan master` and `capstan agent` by
//! hand, see docs/operations.md).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Masters in one cluster, at most.
pub const MASTERS_MAX: usize = 9;
/// Nodes in one cluster, at most (each is two processes).
pub const NODES_MAX: usize = 50;
/// How long a process has to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long the cluster may take to come up before `up` gives up.
const START_DEADLINE: Duration = Duration::from_secs(180);
const RESTART_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A process that ran this long is restarted without back-off.
const RESTART_BACKOFF_RESET: Duration = Duration::from_secs(60);
/// Reports from the supervisors waiting for the main task, at most (a supervisor waits
/// beyond it; each process reports at most once per start).
const REPORTS_MAX: usize = 64;
/// Interval between two looks at the nodes while waiting for them to be Ready.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

pub const ETCD_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;
pub const API_PORT: u16 = 6443;
/// Each master's store metrics (`--listen-metrics-urls`, plain HTTP; etcd's usual port).
pub const METRICS_PORT: u16 = 2381;
/// Each node agent's and node proxy's metrics (`--metrics-bind-address`; the proxy's is
/// kube-proxy's usual port, the agent's the kubelet's former read-only port).
pub const AGENT_METRICS_PORT: u16 = 10255;
pub const PROXY_METRICS_PORT: u16 = 10249;

#[derive(clap::Args)]
pub struct UpArgs {
    /// Masters: an odd number (1, 3, 5, 7 or 9); each runs a store member, the API, and
    /// controller-manager and scheduler replicas.
    #[arg(long, default_value_t = 3)]
    masters: usize,
    /// Nodes, each a node agent and a node proxy (0 for none).
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Where the cluster keeps its data and logs; an existing cluster there is restarted.
    #[arg(long, default_value = "./.capstan/up")]
    data_dir: PathBuf,
    /// Where kubectl reaches the cluster: connections are forwarded to the masters' APIs.
    #[arg(long, default_value = "127.0.0.1:6443")]
    api_listen: SocketAddr,
    /// The second byte of the processes' loopback addresses (masters on
    /// 127.<net>.1.<i>, nodes on 127.<net>.2.<j>), 1 to 63.
    #[arg(long, default_value_t = 1)]
    loopback_net: u8,
    /// Start a process again when it exits while the cluster is up.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    restart: bool,
    /// Serve the APIs in plain HTTP without authentication (see `capstan master
    /// --insecure`). Without it the cluster gets a CA in `<data-dir>/pki` on first start,
    /// the masters serve HTTPS with client certificates and RBAC, and each component has
    /// its own certificate (`<data-dir>/pki/*.kubeconfig`, renewed at every start).
    #[arg(long)]
    insecure: bool,
}

/// The shape of a cluster, kept in `cluster.json` so that a restart rebuilds the same one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Shape {
    masters: usize,
    nodes: usize,
    loopback_net: u8,
    token: String,
    /// Plain HTTP without authentication (`--insecure`).
    #[serde(default)]
    insecure: bool,
}

impl Shape {
    fn master_ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.loopback_net, 1, i as u8))
    }

    fn node_ip(&self, j: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.loopback_net, 2, j as u8))
    }

    /// The Services' ClusterIPs: 127.<64 + net>.0.0/16, apart from other clusters'.
    fn service_cidr(&self) -> String {
        format!("127.{}.0.0/16", 64 + self.loopback_net)
    }

    /// The pods' addresses: 127.<128 + net>.0.0/16, a /24 per node.
    fn pod_cidr(&self) -> String {
        format!("127.{}.0.0/16", 128 + self.loopback_net)
    }

    fn scheme(&self) -> &'static str {
        if self.insecure {
            "http"
        } else {
            "https"
        }
    }

    fn api_urls(&self) -> String {
        (1..=self.masters)
            .map(|i| format!("{}://{}", self.scheme(), SocketAddr::new(self.master_ip(i), API_PORT)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Why a shape cannot be run; the message is for the user.
fn check_counts(masters: usize, nodes: usize) -> Result<(), String> {
    if masters == 0 || masters > MASTERS_MAX {
        return Err(format!("--masters: 1 to {MASTERS_MAX}, not {masters}"));
    }
    if masters.is_multiple_of(2) {
        return Err(format!(
            "--masters {masters}: an even number of masters tolerates no more failures than {} \
             (a quorum of {masters} is {}, so {} may fail, as with {}) and adds one more member \
             to every write; use {} or {}",
            masters - 1,
            masters / 2 + 1,
            (masters - 1) / 2,
            masters - 1,
            masters - 1,
            masters + 1
        ));
    }
    if nodes > NODES_MAX {
        return Err(format!("--nodes: at most {NODES_MAX}, not {nodes}"));
    }
    Ok(())
}

/// The cluster in `dir`: read from `cluster.json` if there, else made from the flags and
/// written. A cluster of another shape is refused rather than half reused.
fn load_or_create_shape(args: &UpArgs) -> Result<(Shape, bool), String> {
    let path = args.data_dir.join("cluster.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let shape: Shape =
                serde_json::from_slice(&bytes).map_err(|e| format!("{} is not a cluster file: {e}", path.display()))?;
            if shape.insecure != args.insecure {
                return Err(format!(
                    "{} holds a cluster {}; start it {} --insecure, or give another --data-dir",
                    args.data_dir.display(),
                    if shape.insecure {
                        "served in plain HTTP"
                    } else {
                        "served over TLS"
                    },
                    if shape.insecure { "with" } else { "without" }
                ));
            }
            if shape.masters != args.masters || shape.nodes != args.nodes || shape.loopback_net != args.loopback_net {
                return Err(format!(
                    "{} holds a cluster of {} masters and {} nodes on 127.{}.0.0/16; start it with \
                     --masters {} --nodes {} --loopback-net {}, or give another --data-dir",
                    args.data_dir.display(),
                    shape.masters,
                    shape.nodes,
                    shape.loopback_net,
                    shape.masters,
                    shape.nodes,
                    shape.loopback_net
                ));
            }
            Ok((shape, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let shape = Shape {
                masters: args.masters,
                nodes: args.nodes,
                loopback_net: args.loopback_net,
                token: format!("capstan-up-{:x}", random_u64()),
                insecure: args.insecure,
            };
            std::fs::create_dir_all(&args.data_dir)
                .map_err(|e| format!("cannot create {}: {e}", args.data_dir.display()))?;
            let json = serde_json::to_vec_pretty(&shape).map_err(|e| e.to_string())?;
            std::fs::write(&path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok((shape, true))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The etcd endpoints and the API URLs of the cluster `capstan up` keeps in `dir` (for
/// `capstan status --data-dir`).
pub fn addresses(dir: &Path) -> Result<(String, String), String> {
    let path = dir.join("cluster.json");
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("cannot read {}: {e} (is it a `capstan up` directory?)", path.display()))?;
    let shape: Shape =
        serde_json::from_slice(&bytes).map_err(|e| format!("{} is not a cluster file: {e}", path.display()))?;
    let etcd = (1..=shape.masters)
        .map(|i| {
            format!(
                "{}://{}",
                shape.scheme(),
                SocketAddr::new(shape.master_ip(i), ETCD_PORT)
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    Ok((etcd, shape.api_urls()))
}

/// Enough randomness for a cluster token (not a secret: it only keeps members of two
/// clusters apart).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// One supervised process.
struct Spec {
    /// `m1`, `node1-agent`, `node1-proxy`.
    name: String,
    args: Vec<String>,
    log: PathBuf,
    /// The start of the stdout line it prints once it serves.
    ready_prefix: &'static str,
    /// `Some(i)` for master `m<i>` (masters are stopped last).
    master: Option<usize>,
}

fn specs(shape: &Shape, dir: &Path) -> Vec<Spec> {
    let mut out = Vec::new();
    let initial_cluster = (1..=shape.masters)
        .map(|i| {
            format!(
                "m{i}={}://{}",
                shape.scheme(),
                SocketAddr::new(shape.master_ip(i), PEER_PORT)
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    for i in 1..=shape.masters {
        let ip = shape.master_ip(i);
        let name = format!("m{i}");
        out.push(Spec {
            args: vec![
                "master".into(),
                "--name".into(),
                name.clone(),
                "--data-dir".into(),
                dir.join(&name).display().to_string(),
                "--listen-client".into(),
                SocketAddr::new(ip, ETCD_PORT).to_string(),
                "--listen-peer".into(),
                SocketAddr::new(ip, PEER_PORT).to_string(),
                "--initial-cluster".into(),
                initial_cluster.clone(),
                "--initial-cluster-token".into(),
                shape.token.clone(),
                "--apiserver-listen".into(),
                SocketAddr::new(ip, API_PORT).to_string(),
                "--listen-metrics-urls".into(),
                format!("http://{}", SocketAddr::new(ip, METRICS_PORT)),
                "--service-cluster-ip-range".into(),
                shape.service_cidr(),
                "--cluster-cidr".into(),
                shape.pod_cidr(),
            ]
            .into_iter()
            .chain(match shape.insecure {
                true => vec!["--insecure".to_string()],
                false => vec!["--pki-dir".into(), dir.join("pki").display().to_string()],
            })
            .collect(),
            log: dir.join(format!("{name}.log")),
            name,
            ready_prefix: "capstan store ready on ",
            master: Some(i),
        });
    }
    let masters = shape.api_urls();
    for j in 1..=shape.nodes {
        let ip = shape.node_ip(j).to_string();
        let node = format!("node{j}");
        out.push(Spec {
            name: format!("{node}-agent"),
            args: vec![
                "agent".into(),
                "--node-name".into(),
                node.clone(),
                "--master".into(),
                masters.clone(),
                "--node-ip".into(),
                ip.clone(),
                "--root-dir".into(),
                dir.join("nodes").join(&node).display().to_string(),
                "--metrics-bind-address".into(),
                format!("{ip}:{AGENT_METRICS_PORT}"),
            ]
            .into_iter()
            .chain(kubeconfig_flag(shape, dir, &format!("{node}-agent")))
            .chain(agent_serving_flags(shape, dir, &node))
            .collect(),
            log: dir.join(format!("{node}-agent.log")),
            ready_prefix: "capstan agent ready on node ",
            master: None,
        });
        out.push(Spec {
            name: format!("{node}-proxy"),
            args: vec![
                "proxy".into(),
                "--node-name".into(),
                node.clone(),
                "--master".into(),
                masters.clone(),
                "--node-ip".into(),
                ip.clone(),
                "--metrics-bind-address".into(),
                format!("{ip}:{PROXY_METRICS_PORT}"),
            ]
            .into_iter()
            .chain(kubeconfig_flag(shape, dir, &format!("{node}-proxy")))
            .collect(),
            log: dir.join(format!("{node}-proxy.log")),
            ready_prefix: "capstan proxy ready on node ",
            master: None,
        });
    }
    out
}

/// `--kubeconfig <data-dir>/pki/<component>.kubeconfig` for a cluster over TLS.
fn kubeconfig_flag(shape: &Shape, dir: &Path, component: &str) -> Vec<String> {
    match shape.insecure {
        true => Vec::new(),
        false => vec![
            "--kubeconfig".into(),
            dir.join("pki")
                .join(format!("{component}.kubeconfig"))
                .display()
                .to_string(),
        ],
    }
}

/// `--tls-cert-file` and `--tls-private-key-file` of node `node`'s agent port, for a cluster
/// over TLS (clients are verified against its kubeconfig's CA).
fn agent_serving_flags(shape: &Shape, dir: &Path, node: &str) -> Vec<String> {
    match shape.insecure {
        true => Vec::new(),
        false => {
            let pki = dir.join("pki");
            vec![
                "--tls-cert-file".into(),
                pki.join(format!("{node}-agent-serving.crt")).display().to_string(),
                "--tls-private-key-file".into(),
                pki.join(format!("{node}-agent-serving.key")).display().to_string(),
            ]
        }
    }
}

/// The cluster's PKI in `<dir>/pki`: the CA (made on first start), the admin's
/// kubeconfig at `kubeconfig` for `server`, and for each node a kubeconfig with a new
/// certificate for its agent (`system:node:<node>` in `system:nodes`) and proxy
/// (`system:kube-proxy`), and a new serving certificate for its agent's port (for the
/// node's address and name). Returns the admin's TLS, for this process's own client.
fn write_pki(
    shape: &Shape,
    dir: &Path,
    kubeconfig: &Path,
    server: &str,
) -> Result<capstan_agents::tls::ClientTls, String> {
    let pki = dir.join("pki");
    crate::certs::private_dir(&pki)?;
    let ca = crate::certs::Ca::load_or_create(&pki)?;
    let (cert, key) = ca.admin(&pki)?;
    let admin = capstan_apiserver::kubeconfig_for(server, Some(&ca.pem), Some((&cert, &key)));
    crate::certs::write(kubeconfig, &admin, true)?;
    let first_master = format!("https://{}", SocketAddr::new(shape.master_ip(1), API_PORT));
    for j in 1..=shape.nodes {
        let node = format!("node{j}");
        for (component, user, group) in [
            (
                format!("{node}-agent"),
                format!("system:node:{node}"),
                Some(capstan_apiserver::rbac::NODES_GROUP),
            ),
            (
                format!("{node}-proxy"),
                capstan_apiserver::rbac::KUBE_PROXY_USER.to_string(),
                None,
            ),
        ] {
            let (cert, key) = ca.client(&user, group)?;
            let text = capstan_apiserver::kubeconfig_for(&first_master, Some(&ca.pem), Some((&cert, &key)));
            crate::certs::write(&pki.join(format!("{component}.kubeconfig")), &text, true)?;
        }
        let hosts = crate::certs::agent_hosts(&node, &[shape.node_ip(j).to_string()]);
        let (chain, key) = ca.agent_serving(&node, &hosts)?;
        crate::certs::write(&pki.join(format!("{node}-agent-serving.crt")), &chain, true)?;
        crate::certs::write(&pki.join(format!("{node}-agent-serving.key")), &key, true)?;
    }
    capstan_agents::tls::ClientTls::from_pem(ca.pem.as_bytes(), Some((cert.as_bytes(), key.as_bytes())))
        .map_err(|e| e.to_string())
}

/// What the supervisors tell the main task.
enum Report {
    Ready(usize),
    /// A process exited; the string says how.
    Exited(usize, String),
}

/// The pids of the running processes, by spec index, for stopping them.
type Pids = Arc<Mutex<Vec<Option<u32>>>>;

fn spawn(binary: &Path, spec: &Spec) -> Result<Child, String> {
    use std::io::Write as _;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(|e| format!("cannot open {}: {e}", spec.log.display()))?;
    let _ = writeln!(
        log,
        "=== capstan up: starting {} {}",
        binary.display(),
        spec.args.join(" ")
    );
    Command::new(binary)
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        // Its own process group: Ctrl-C in a terminal reaches only `up`, which then stops
        // the nodes before the masters.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", spec.name))
}

/// Runs spec `index` until `stopping`, starting it again after it exits (with `restart`).
async fn supervise(
    binary: PathBuf,
    spec: Arc<Spec>,
    index: usize,
    restart: bool,
    pids: Pids,
    stopping: Arc<AtomicBool>,
    reports: mpsc::Sender<Report>,
) {
    let mut backoff = RESTART_BACKOFF_INITIAL;
    loop {
        let started = Instant::now();
        let mut child = match spawn(&binary, &spec) {
            Ok(c) => c,
            Err(e) => {
                let _ = reports.send(Report::Exited(index, e)).await;
                return;
            }
        };
        pids.lock().expect("pids lock")[index] = child.id();
        // For operators and tests: which process to look at (or kill).
        let pid_file = spec.log.with_extension("pid");
        if let Some(pid) = child.id() {
            let _ = std::fs::write(&pid_file, format!("{pid}\n"));
        }
        // Stdout to the log, watching for the ready line.
        if let Some(stdout) = child.stdout.take() {
            let (reports, prefix, log) = (reports.clone(), spec.ready_prefix, spec.log.clone());
            tokio::spawn(async move {
                use std::io::Write as _;
                let mut lines = BufReader::new(stdout).lines();
                let mut log = std::fs::OpenOptions::new().append(true).open(log).ok();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.starts_with(prefix) {
                        let _ = reports.send(Report::Ready(index)).await;
                    }
                    if let Some(f) = log.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                }
            });
        }
        let status = child.wait().await;
        // The file first: once the pid is cleared, a stop may return and the process end.
        let _ = std::fs::remove_file(&pid_file);
        pids.lock().expect("pids lock")[index] = None;
        if stopping.load(Ordering::Acquire) {
            return;
        }
        let how = match status {
            Ok(s) => describe_exit(s),
            Err(e) => format!("cannot be waited for: {e}"),
        };
        let _ = reports.send(Report::Exited(index, how)).await;
        if !restart {
            return;
        }
        if started.elapsed() >= RESTART_BACKOFF_RESET {
            backoff = RESTART_BACKOFF_INITIAL;
        }
        // A supervisor's pause before a restart, as a service manager's RestartSec.
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
        if stopping.load(Ordering::Acquire) {
            return;
        }
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(9)) => "was killed (SIGKILL)".into(),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => "exited".into(),
    }
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return;
    };
    // The process may have exited meanwhile: nothing to do then.
    let _ = rustix::process::kill_process(pid, sig);
}

/// Stops the processes of `which` (SIGTERM, then SIGKILL after the grace period) and waits
/// until they are gone.
async fn stop_all(pids: &Pids, which: &[usize]) {
    let deadline = Instant::now() + STOP_GRACE;
    let running = |pids: &Pids| -> Vec<u32> {
        let p = pids.lock().expect("pids lock");
        which.iter().filter_map(|&i| p[i]).collect()
    };
    for pid in running(pids) {
        signal(pid, rustix::process::Signal::TERM);
    }
    while !running(pids).is_empty() {
        if Instant::now() > deadline {
            for pid in running(pids) {
                signal(pid, rustix::process::Signal::KILL);
            }
        }
        // The supervisors clear a pid once its process is reaped.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(args: UpArgs, shutdown: impl std::future::Future<Output = ()>) -> Result<(), String> {
    check_counts(args.masters, args.nodes)?;
    if !(1..=63).contains(&args.loopback_net) {
        return Err(format!("--loopback-net: 1 to 63, not {}", args.loopback_net));
    }
    let began = Instant::now();
    let (shape, created) = load_or_create_shape(&args)?;
    let dir = std::path::absolute(&args.data_dir).map_err(|e| format!("--data-dir: {e}"))?;
    let binary = std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;

    // The front door for kubectl.
    let forwarder = capstan_agents::proxy::forward::Forwarder::new(capstan_agents::proxy::forward::Limits::default());
    let backends = (1..=shape.masters)
        .map(|i| SocketAddr::new(shape.master_ip(i), API_PORT))
        .collect();
    let errors = forwarder.apply(vec![capstan_agents::proxy::forward::Rule {
        listen: args.api_listen,
        protocol: capstan_agents::proxy::forward::Protocol::Tcp,
        backends,
        session_affinity: None,
    }]);
    if let Some((addr, _, e)) = errors.into_iter().next() {
        return Err(format!("cannot listen on {addr} (--api-listen): {e}"));
    }
    let kubeconfig = dir.join("kubeconfig");
    let server = format!("{}://{}", shape.scheme(), args.api_listen);
    let admin_tls = match shape.insecure {
        true => {
            let text = capstan_apiserver::kubeconfig(&server, None);
            std::fs::write(&kubeconfig, text).map_err(|e| format!("cannot write {}: {e}", kubeconfig.display()))?;
            None
        }
        false => Some(write_pki(&shape, &dir, &kubeconfig, &server)?),
    };

    println!(
        "{} a cluster of {} master{} and {} node{} in {}",
        if created { "Creating" } else { "Restarting" },
        shape.masters,
        if shape.masters == 1 { "" } else { "s" },
        shape.nodes,
        if shape.nodes == 1 { "" } else { "s" },
        dir.display()
    );
    let specs: Vec<Arc<Spec>> = specs(&shape, &dir).into_iter().map(Arc::new).collect();
    let pids: Pids = Arc::new(Mutex::new(vec![None; specs.len()]));
    let stopping = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::channel(REPORTS_MAX);
    // Every master before any wait: a member of a new cluster serves only once a quorum
    // of its peers is up.
    for (i, spec) in specs.iter().enumerate() {
        tokio::spawn(supervise(
            binary.clone(),
            spec.clone(),
            i,
            args.restart,
            pids.clone(),
            stopping.clone(),
            tx.clone(),
        ));
    }
    drop(tx);

    let mut shutdown = std::pin::pin!(shutdown);
    let mut ready = vec![false; specs.len()];
    let mut announced = false;
    let client =
        capstan_agents::client::api_client_tls(&shape.api_urls(), admin_tls.as_ref()).map_err(|e| e.to_string())?;
    let mut nodes_ready: Vec<String> = Vec::new();
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            report = rx.recv() => match report {
                Some(Report::Ready(i)) => {
                    ready[i] = true;
                    let s = &specs[i];
                    if let Some(m) = s.master {
                        let ip = shape.master_ip(m);
                        println!(
                            "  {} ready: etcd {}://{}, API {}://{} (log {})",
                            s.name,
                            shape.scheme(),
                            SocketAddr::new(ip, ETCD_PORT),
                            shape.scheme(),
                            SocketAddr::new(ip, API_PORT),
                            s.log.display()
                        );
                    } else if announced {
                        println!("  {} ready again", s.name);
                    }
                }
                Some(Report::Exited(i, how)) => {
                    let s = &specs[i];
                    ready[i] = false;
                    let next = if args.restart { "; starting it again" } else { "" };
                    println!("  {} {how}{next} (log {})", s.name, s.log.display());
                    if !announced && !args.restart {
                        break Err(format!("{} {how} before the cluster came up; see {}", s.name, s.log.display()));
                    }
                }
                None => break Err("every process's supervisor stopped".into()),
            },
            _ = poll.tick(), if !announced => {
                if began.elapsed() > START_DEADLINE {
                    let waiting: Vec<&str> = (0..specs.len()).filter(|&i| !ready[i]).map(|i| specs[i].name.as_str()).collect();
                    break Err(format!(
                        "the cluster did not come up within {} s (not ready: {}; Ready nodes: {}); see the logs in {}",
                        START_DEADLINE.as_secs(),
                        if waiting.is_empty() { "none".to_string() } else { waiting.join(", ") },
                        nodes_ready.len(),
                        dir.display()
                    ));
                }
                if ready.iter().all(|r| *r) {
                    let now_ready = ready_nodes(&client).await;
                    for n in now_ready.iter().filter(|n| !nodes_ready.contains(n)) {
                        println!("  {n} Ready");
                    }
                    nodes_ready = now_ready;
                    if nodes_ready.len() >= shape.nodes {
                        announced = true;
                        print_summary(&shape, &dir, &kubeconfig, args.api_listen, began.elapsed());
                    }
                }
            }
        }
    };
    println!("Stopping the cluster: nodes first, then masters");
    stopping.store(true, Ordering::Release);
    let nodes: Vec<usize> = (0..specs.len()).filter(|&i| specs[i].master.is_none()).collect();
    let masters: Vec<usize> = (0..specs.len()).filter(|&i| specs[i].master.is_some()).collect();
    stop_all(&pids, &nodes).await;
    stop_all(&pids, &masters).await;
    drop(forwarder);
    println!(
        "Stopped. `capstan up --masters {} --nodes {} --data-dir {}` starts it again.",
        shape.masters,
        shape.nodes,
        args.data_dir.display()
    );
    result
}

/// The names of the Nodes whose Ready condition is True (none when the API cannot be
/// reached: the caller polls again).
async fn ready_nodes(client: &kube::Client) -> Vec<String> {
    use k8s_openapi::api::core::v1::Node;
    let api: kube::Api<Node> = kube::Api::all(client.clone());
    let Ok(list) = api.list(&kube::api::ListParams::default()).await else {
        return Vec::new();
    };
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .filter(|n| capstan_agents::nodelifecycle::ready_status(n) == Some("True"))
        .filter_map(|n| n.metadata.name)
        .collect();
    names.sort();
    names
}

fn print_summary(shape: &Shape, dir: &Path, kubeconfig: &Path, api_listen: SocketAddr, took: Duration) {
    let s = shape.scheme();
    let etcd: Vec<String> = (1..=shape.masters)
        .map(|i| SocketAddr::new(shape.master_ip(i), ETCD_PORT).to_string())
        .collect();
    println!();
    println!("The cluster is up ({:.1} s).", took.as_secs_f64());
    println!(
        "  Kubernetes API for kubectl: {}://{api_listen} (forwarded to every master's API)",
        shape.scheme()
    );
    println!("    kubectl --kubeconfig {} get nodes", kubeconfig.display());
    println!("  etcd API of the store:");
    let certs = match shape.insecure {
        true => String::new(),
        false => {
            let pki = dir.join("pki");
            format!(
                " --cacert {} --cert {} --key {}",
                pki.join("ca.crt").display(),
                pki.join("admin.crt").display(),
                pki.join("admin.key").display()
            )
        }
    };
    println!(
        "    ETCDCTL_API=3 etcdctl --endpoints={}{certs} member list -w table",
        etcd.iter().map(|e| format!("{s}://{e}")).collect::<Vec<_>>().join(",")
    );
    println!("  masters:");
    for i in 1..=shape.masters {
        let ip = shape.master_ip(i);
        println!(
            "    m{i}  etcd {s}://{}  peers {s}://{}  API {s}://{}  metrics http://{}/metrics  log {}",
            SocketAddr::new(ip, ETCD_PORT),
            SocketAddr::new(ip, PEER_PORT),
            SocketAddr::new(ip, API_PORT),
            SocketAddr::new(ip, METRICS_PORT),
            dir.join(format!("m{i}.log")).display()
        );
    }
    if shape.nodes > 0 {
        println!("  nodes:");
        for j in 1..=shape.nodes {
            println!(
                "    node{j}  {}  logs {} and {}",
                shape.node_ip(j),
                dir.join(format!("node{j}-agent.log")).display(),
                dir.join(format!("node{j}-proxy.log")).display()
            );
            println!(
                "           metrics http://{}/metrics (agent) and http://{}/metrics (proxy)",
                SocketAddr::new(shape.node_ip(j), AGENT_METRICS_PORT),
                SocketAddr::new(shape.node_ip(j), PROXY_METRICS_PORT)
            );
        }
    }
    println!("Stop it with Ctrl-C.");
    // The line tests and scripts wait for.
    println!("capstan up ready: kubeconfig {}", kubeconfig.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_even_or_out_of_range_master_count_is_refused_with_the_reason() {
        for ok in [1, 3, 5, 7, 9] {
            assert!(check_counts(ok, 2).is_ok(), "{ok}");
        }
        let e = check_counts(4, 2).expect_err("even");
        assert!(e.contains("tolerates no more failures than 3"), "{e}");
        assert!(e.contains("use 3 or 5"), "{e}");
        let e = check_counts(2, 0).expect_err("even");
        assert!(e.contains("quorum of 2 is 2, so 0 may fail"), "{e}");
        assert!(check_counts(0, 1).is_err());
        assert!(check_counts(11, 1).is_err());
        assert!(check_counts(3, NODES_MAX + 1).is_err());
    }

    #[test]
    fn every_process_gets_its_own_loopback_address_and_all_masters() {
        let shape = Shape {
            masters: 3,
            nodes: 2,
            loopback_net: 7,
            token: "t".into(),
            insecure: false,
        };
        let specs = specs(&shape, Path::new("/d"));
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "m1",
                "m2",
                "m3",
                "node1-agent",
                "node1-proxy",
                "node2-agent",
                "node2-proxy"
            ]
        );
        let m2 = specs[1].args.join(" ");
        assert!(m2.contains("--listen-client 127.7.1.2:2379"), "{m2}");
        assert!(m2.contains("--listen-peer 127.7.1.2:2380"), "{m2}");
        assert!(m2.contains("--apiserver-listen 127.7.1.2:6443"), "{m2}");
        assert!(m2.contains("--listen-metrics-urls http://127.7.1.2:2381"), "{m2}");
        assert!(m2.contains("--service-cluster-ip-range 127.71.0.0/16"), "{m2}");
        assert!(m2.contains("--cluster-cidr 127.135.0.0/16"), "{m2}");
        assert!(
            m2.contains(
                "--initial-cluster m1=https://127.7.1.1:2380,m2=https://127.7.1.2:2380,m3=https://127.7.1.3:2380"
            ),
            "{m2}"
        );
        assert!(m2.contains("--pki-dir /d/pki"), "{m2}");
        assert!(!m2.contains("--insecure"), "{m2}");
        let agent = specs[5].args.join(" ");
        assert!(agent.contains("--node-name node2"), "{agent}");
        assert!(agent.contains("--node-ip 127.7.2.2"), "{agent}");
        assert!(
            agent.contains("--master https://127.7.1.1:6443,https://127.7.1.2:6443,https://127.7.1.3:6443"),
            "{agent}"
        );
        assert!(agent.contains("--kubeconfig /d/pki/node2-agent.kubeconfig"), "{agent}");
        assert!(
            agent.contains(
                "--tls-cert-file /d/pki/node2-agent-serving.crt --tls-private-key-file /d/pki/node2-agent-serving.key"
            ),
            "{agent}"
        );
        let insecure = super::specs(
            &Shape {
                insecure: true,
                ..shape
            },
            Path::new("/d"),
        );
        let m1 = insecure[0].args.join(" ");
        assert!(m1.contains("--insecure") && !m1.contains("--pki-dir"), "{m1}");
        let agent = insecure[3].args.join(" ");
        assert!(
            agent.contains("--master http://127.7.1.1:6443")
                && !agent.contains("--kubeconfig")
                && !agent.contains("--tls-cert-file"),
            "{agent}"
        );
    }

    #[test]
    fn a_restart_with_another_shape_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = |masters, nodes| UpArgs {
            masters,
            nodes,
            data_dir: dir.path().to_path_buf(),
            api_listen: "127.0.0.1:6443".parse().expect("addr"),
            loopback_net: 1,
            restart: true,
            insecure: false,
        };
        let (first, created) = load_or_create_shape(&args(3, 2)).expect("created");
        assert!(created);
        let (again, created) = load_or_create_shape(&args(3, 2)).expect("reused");
        assert!(!created);
        assert_eq!(first, again, "the token is kept");
        let e = load_or_create_shape(&args(5, 2)).expect_err("other shape");
        assert!(e.contains("holds a cluster of 3 masters and 2 nodes"), "{e}");
        let plain = UpArgs {
            insecure: true,
            ..args(3, 2)
        };
        let e = load_or_create_shape(&plain).expect_err("TLS then plain");
        assert!(e.contains("served over TLS"), "{e}");
    }
}
