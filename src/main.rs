//! The `capstan` binary: every Capstan process is a subcommand of it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use capstan_apiserver::{Api, ApiConfig, Storage};
use capstan_store::{server, Node, NodeConfig};
use clap::{Parser, Subcommand};

mod certs;
mod chaos;
mod snapshot;
mod status;
mod up;

/// mimalloc instead of glibc's malloc for the Rust side (RocksDB's C++ keeps glibc's):
/// the request path allocates and frees many small buffers across threads, and glibc's
/// malloc, free and consolidation were about 11 % of the server's CPU samples at 64
/// clients. Measured on 2026-12-03 (docs/benchmarks-history.md): CPU per put 61.0 us against
/// 67.3 us (medians of 4), for 429 B per idle watcher against 366 B.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "capstan",
    version,
    about = "A Kubernetes-compatible control plane with its own Raft key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// Serve the key-value store over the etcd v3 gRPC API: one member of a 1-, 3- or
    /// 5-member cluster replicated with Raft.
    Store(StoreArgs),
    /// Run a master: a store member, the Kubernetes API over it, and replicas of the
    /// controller-manager and the scheduler (of all masters' replicas, the one holding each
    /// Lease acts). An HA cluster is three or five of these, on separate machines
    /// (docs/operations.md) or started together by `capstan up`.
    Master(MasterArgs),
    /// Start a whole cluster on this machine as separate processes: masters, and nodes
    /// (agent and proxy each) on loopback addresses; restarts the one in --data-dir if
    /// there is one. Stops on Ctrl-C.
    Up(up::UpArgs),
    /// Save a running cluster's state to a file, or rebuild a member's data directory
    /// from one (as etcdctl's `snapshot save` and `snapshot restore`).
    Snapshot(snapshot::SnapshotArgs),
    /// Write a cluster CA and a serving certificate for the Kubernetes API
    /// (`capstan apiserver --tls-cert-file`): ca.crt, ca.key, apiserver.crt (with the CA
    /// after it) and apiserver.key; the CA is kept if it exists. Keys get mode 0600.
    Certs(certs::CertsArgs),
    /// Show the cluster's health: the store's members (leader, term, index, size, or why
    /// one cannot be reached) and quorum, the active scheduler and controller-manager, and
    /// the nodes. Exits with 1 when there is no quorum or no leader.
    Status(status::StatusArgs),
    /// Serve the Kubernetes API over a remote etcd (or Capstan store) cluster. To serve
    /// it over a store member in the same process, give `capstan store --apiserver-listen`.
    Apiserver(ApiserverArgs),
    /// Run the controllers (ServiceAccount, ReplicaSet, Deployment, Endpoints, garbage
    /// collector, namespace, node IPAM and node lifecycle) against the Kubernetes API at
    /// `--master`; of several replicas, the one holding the
    /// `kube-system/kube-controller-manager` Lease acts.
    ControllerManager(ControllerManagerArgs),
    /// Bind unscheduled pods to nodes; of several replicas, the one holding the
    /// `kube-system/kube-scheduler` Lease acts.
    Scheduler(SchedulerArgs),
    /// Make Services reachable on this machine (kube-proxy's job): listen on every
    /// ClusterIP (and, for NodePort Services, `--node-ip` and the nodePort) and forward
    /// TCP and UDP to the ready endpoints.
    Proxy(ProxyArgs),
    /// Run the pods bound to this node (the kubelet's job): register the Node, heartbeat
    /// through its Lease, run each container as a local process and report pod status.
    Agent(AgentArgs),
    /// Answer DNS for the cluster (CoreDNS's job): `<service>.<namespace>.svc.cluster.local`
    /// and the rest of the Kubernetes DNS specification; other names go to this host's
    /// nameservers.
    Dns(DnsArgs),
    /// Test the cluster's promises: start masters as processes on this machine, run
    /// workloads while killing and pausing them on a seeded schedule, check that every
    /// history is linearizable and nothing acknowledged was lost, and report recovery
    /// times. Exits with 1 when a check fails.
    Chaos(chaos::ChaosArgs),
}

/// How replicas of a component elect the one that acts (upstream's `--leader-elect*`).
#[derive(clap::Args)]
struct LeaderElectFlags {
    /// The Kubernetes API server's URL (https:// or http://; its mesh API is on the same
    /// port), or several, comma separated, to fail over between (default: the
    /// kubeconfig's server).
    #[arg(long, default_value = "")]
    master: String,
    /// A kubeconfig whose current context gives the cluster's CA and this component's
    /// client certificate (`capstan up` writes one per component), for https:// URLs.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Elect a leader among the replicas before acting (`--leader-elect=false` acts at once).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// How long the other replicas wait, from their last sight of a renewal, before they
    /// take the lease (e.g. 15s, 1500ms).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    leader_elect_lease_duration: Duration,
    /// How long the leader keeps acting without renewing.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    leader_elect_renew_deadline: Duration,
    /// How often the leader renews, and the others try.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    leader_elect_retry_period: Duration,
    /// The Lease's name (default: the component's upstream name).
    #[arg(long)]
    leader_elect_resource_name: Option<String>,
    #[arg(long, default_value = "kube-system")]
    leader_elect_resource_namespace: String,
}

impl LeaderElectFlags {
    /// The API client and the election settings; `lease` names the default Lease.
    /// The component's client and election for `lease`, and the cluster CA its kubeconfig
    /// names (PEM), if any.
    #[allow(clippy::type_complexity)] // three parts of one kubeconfig, each used once
    fn election(
        &self,
        lease: &str,
    ) -> Result<
        (
            kube::Client,
            capstan_agents::controller_manager::Election,
            Option<Vec<u8>>,
        ),
        String,
    > {
        use capstan_agents::controller_manager::Election;
        use capstan_agents::leader::LeaseTiming;
        let access = Access::of(&self.master, self.kubeconfig.as_deref())?;
        let client = access.client()?;
        let election = Election {
            enabled: self.leader_elect,
            timing: LeaseTiming {
                lease_duration: self.leader_elect_lease_duration,
                renew_deadline: self.leader_elect_renew_deadline,
                retry_period: self.leader_elect_retry_period,
            },
            lease_namespace: self.leader_elect_resource_namespace.clone(),
            lease_name: self.leader_elect_resource_name.clone().unwrap_or_else(|| lease.into()),
            ..Election::default()
        };
        election.timing.check().map_err(|e| e.to_string())?;
        Ok((client, election, access.ca_pem))
    }
}

#[derive(clap::Args)]
struct ControllerManagerArgs {
    #[command(flatten)]
    election: LeaderElectFlags,
    #[command(flatten)]
    metrics: MetricsFlags,
    #[command(flatten)]
    secure: SecureServingFlags,
    /// Give every node a pod CIDR (`spec.podCIDR`) from `--cluster-cidr`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    allocate_node_cidrs: bool,
    /// The pods' addresses: each node gets a block of it (inside loopback by default, so
    /// that one machine reaches them).
    #[arg(long, default_value = capstan_agents::nodeipam::CLUSTER_CIDR_DEFAULT)]
    cluster_cidr: String,
    /// The prefix length of each node's block.
    #[arg(long, default_value_t = capstan_agents::nodeipam::NODE_MASK_SIZE_DEFAULT)]
    node_cidr_mask_size: u8,
    /// How often the node lifecycle controller checks the nodes' heartbeats.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    node_monitor_period: Duration,
    /// How long a node may go without a heartbeat (Lease renewal or status) before it is
    /// marked Ready=Unknown and tainted unreachable.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: Duration,
    /// The same for a node that never posted its status, counted from its creation.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    node_startup_grace_period: Duration,
    /// Nodes per second, per zone, that may newly get a NoExecute taint (which evicts
    /// their pods).
    #[arg(long, default_value_t = 0.1)]
    node_eviction_rate: f64,
    /// The same in a zone of more than --large-cluster-size-threshold nodes that is
    /// partly disrupted (a smaller one then evicts nothing).
    #[arg(long, default_value_t = 0.01)]
    secondary_node_eviction_rate: f64,
    /// Above this many nodes a zone is large (see --secondary-node-eviction-rate).
    #[arg(long, default_value_t = 50)]
    large_cluster_size_threshold: usize,
    /// The share of not-ready nodes (more than two) from which a zone is partly disrupted.
    #[arg(long, default_value_t = 0.55)]
    unhealthy_zone_threshold: f64,
    /// The cluster CA (PEM) published in every namespace as the ConfigMap
    /// `kube-root-ca.crt` (default: the CA of --kubeconfig; none: not published).
    #[arg(long)]
    root_ca_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// The Kubernetes API server's URL (https:// or http://; its mesh API is on the same
    /// port), or several, comma separated, to fail over between (default: the
    /// kubeconfig's server).
    #[arg(long, default_value = "")]
    master: String,
    /// A kubeconfig whose current context gives the cluster's CA and this component's
    /// client certificate (`capstan up` writes one per component), for https:// URLs.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The node this proxy runs on (for its logs; every node serves every Service).
    #[arg(long)]
    node_name: String,
    /// The node's address: NodePort Services listen on it.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: std::net::IpAddr,
    #[command(flatten)]
    metrics: MetricsFlags,
}

#[derive(clap::Args)]
struct DnsArgs {
    /// The Kubernetes API server's URL (https:// or http://; its mesh API is on the same
    /// port), or several, comma separated, to fail over between (default: the
    /// kubeconfig's server).
    #[arg(long, default_value = "")]
    master: String,
    /// A kubeconfig whose current context gives the cluster's CA and this component's
    /// client certificate (`capstan up` writes one per component), for https:// URLs.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Where to answer, UDP and TCP.
    #[arg(long, default_value = "127.0.0.1:10053")]
    listen: SocketAddr,
    /// The cluster's DNS domain.
    #[arg(long, default_value = capstan_agents::dns::ZONE_DEFAULT)]
    cluster_domain: String,
    /// Also publish the `kube-system/kube-dns` Service with this ClusterIP, pointing at
    /// --listen (pods then use it as their nameserver, through the node proxies).
    #[arg(long)]
    service_ip: Option<std::net::IpAddr>,
}

#[derive(clap::Args)]
struct AgentArgs {
    #[command(flatten)]
    metrics: MetricsFlags,
    /// The Kubernetes API server's URL (https:// or http://; its mesh API is on the same
    /// port), or several, comma separated, to fail over between (default: the
    /// kubeconfig's server).
    #[arg(long, default_value = "")]
    master: String,
    /// A kubeconfig whose current context gives the cluster's CA and this component's
    /// client certificate (`capstan up` writes one per component), for https:// URLs.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The node's name (default: this machine's hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// The node's address (its `InternalIP`).
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: std::net::IpAddr,
    /// The agent's port on --node-ip (container logs for `kubectl logs`); 0 picks a free
    /// one. HTTPS with --tls-cert-file, plain HTTP with --insecure.
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// --port over HTTPS (`capstan certs --node` issues its certificate): only
    /// `system:masters` read logs (the API server's kubelet client certificate is in it).
    #[command(flatten)]
    serving: ServingFiles,
    /// Serve --port in plain HTTP without authentication: whoever reaches it reads every
    /// container's log. Implied when the API itself is plain HTTP (an --insecure cluster).
    #[arg(long, conflicts_with = "tls_cert_file")]
    insecure: bool,
    /// Where the agent keeps its pods' files and containers' logs (default:
    /// `.capstan/nodes/<node name>`).
    #[arg(long)]
    root_dir: Option<PathBuf>,
    /// The pods' addresses (default: the node's `spec.podCIDR`, given by the
    /// controller-manager).
    #[arg(long)]
    pod_cidr: Option<String>,
    /// Labels the node registers with, as `key=value,key2=value2`.
    #[arg(long, default_value = "")]
    node_labels: String,
    /// Taints the node registers with, as `key=value:Effect,key2:Effect`.
    #[arg(long, default_value = "")]
    register_with_taints: String,
    /// CPU the node offers, in millicores (default: this machine's CPUs).
    #[arg(long)]
    cpu_millis: Option<u64>,
    /// Memory the node offers, in bytes (default: this machine's).
    #[arg(long)]
    memory_bytes: Option<u64>,
    /// Pods the node takes at most.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// The cluster DNS server's address, given to pods as their nameserver (upstream's
    /// `--cluster-dns`).
    #[arg(long)]
    cluster_dns: Option<std::net::IpAddr>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = capstan_agents::dns::ZONE_DEFAULT)]
    cluster_domain: String,
    /// A container's log is rotated once larger than this many bytes.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    container_log_max_bytes: u64,
    /// Log files kept per container, the current one included.
    #[arg(long, default_value_t = 5)]
    container_log_max_files: usize,
    /// The container runtime: `process` (each container a local process) or `simulated`
    /// (hollow nodes for scale tests: containers run nothing, are Running and Ready at
    /// once, and the node is labelled capstan.io/simulated=true).
    #[arg(long, default_value = "process")]
    runtime: capstan_agents::node::runtime::RuntimeKind,
    /// With --runtime simulated: how many hollow nodes this process runs (at most 1,000),
    /// named `<node name>-0`, `<node name>-1` … when more than one, each with its data in
    /// `<root dir>/<node name>` (root dir default: `.capstan/nodes`), all sharing the
    /// --node-ip and one log port (--port).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
}

#[derive(clap::Args)]
struct SchedulerArgs {
    #[command(flatten)]
    election: LeaderElectFlags,
    #[command(flatten)]
    metrics: MetricsFlags,
    #[command(flatten)]
    secure: SecureServingFlags,
}

/// The HTTPS port of a separate scheduler or controller-manager, as upstream's
/// `--secure-port`: `/metrics` and `/healthz` for client certificates of the cluster CA.
#[derive(clap::Args)]
struct SecureServingFlags {
    /// Serve `/metrics` and `/healthz` over HTTPS on this port (upstream uses 10259 for
    /// the scheduler and 10257 for the controller-manager); 0, the default: not served.
    /// Needs --tls-cert-file. Clients need a certificate of --client-ca-file:
    /// `system:masters` reads both, `system:monitoring` reads `/metrics`.
    #[arg(long, default_value_t = 0)]
    secure_port: u16,
    /// The address --secure-port listens on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: std::net::IpAddr,
    /// --secure-port's certificate (`capstan certs --hosts` issues one).
    #[command(flatten)]
    serving: ServingFiles,
}

/// A port's serving certificate and the CA of its clients: the agent's --port, a
/// scheduler's or controller-manager's --secure-port.
#[derive(clap::Args)]
struct ServingFiles {
    /// Serve the port over HTTPS with this certificate (PEM, its own first, then its
    /// chain), with --tls-private-key-file. Clients then need a certificate of
    /// --client-ca-file.
    #[arg(long, requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM).
    #[arg(long, requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// The CA (PEM) whose client certificates the port accepts (default: the CA of
    /// --kubeconfig). Needs --tls-cert-file.
    #[arg(long, requires = "tls_cert_file")]
    client_ca_file: Option<PathBuf>,
}

impl ServingFiles {
    /// The port's TLS, None without --tls-cert-file; without --client-ca-file its
    /// clients are verified against `kubeconfig_ca`, the CA of the component's kubeconfig.
    fn tls(&self, kubeconfig_ca: Option<&[u8]>) -> Result<Option<capstan_agents::serving::ServingTls>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_private_key_file) else {
            return Ok(None);
        };
        let read = |flag: &str, p: &std::path::Path| {
            capstan_agents::tls::read_bounded(p).map_err(|e| format!("{flag} {}: {e}", p.display()))
        };
        let client_ca = match (&self.client_ca_file, kubeconfig_ca) {
            (Some(p), _) => read("--client-ca-file", p)?,
            (None, Some(ca)) => ca.to_vec(),
            (None, None) => {
                return Err(
                    "--tls-cert-file: the port knows its clients by their certificates; give --client-ca-file, \
                     or a --kubeconfig that names the cluster's CA"
                        .into(),
                )
            }
        };
        let tls = port_tls(
            &read("--tls-cert-file", cert)?,
            &read("--tls-private-key-file", key)?,
            &client_ca,
        )
        .map_err(|e| format!("--tls-cert-file {}: {e}", cert.display()))?;
        Ok(Some(tls))
    }
}

impl SecureServingFlags {
    /// Serves `registry` at `/metrics` and `/healthz` on --secure-port, if given, from now
    /// on; `kubeconfig_ca` is the cluster CA the component's kubeconfig names.
    async fn serve(
        &self,
        registry: std::sync::Arc<prometheus_client::registry::Registry>,
        kubeconfig_ca: Option<&[u8]>,
        port: &'static str,
    ) -> Result<(), String> {
        if self.secure_port == 0 {
            return match self.serving.tls_cert_file {
                // Upstream would serve its default port; here it is off: say so.
                Some(_) => Err("--tls-cert-file is for --secure-port, which is 0 (not served); give the port".into()),
                None => Ok(()),
            };
        }
        let Some(tls) = self.serving.tls(kubeconfig_ca)? else {
            return Err(
                "--secure-port needs --tls-cert-file and --tls-private-key-file (`capstan certs --hosts` issues \
                 them); 0 turns it off"
                    .into(),
            );
        };
        let addr = SocketAddr::new(self.bind_address, self.secure_port);
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (--secure-port): {e}"))?;
        tracing::info!(addr = %l.local_addr().map_err(|e| e.to_string())?, "serving /metrics and /healthz over HTTPS");
        let router = capstan_agents::metrics::component_router(registry);
        let policy = capstan_agents::serving::Policy::Component;
        tokio::spawn(async move {
            if let Err(e) = capstan_agents::serving::serve(l, router, Some(tls), policy, port).await {
                tracing::error!(error = %e, "the secure port stopped");
            }
        });
        Ok(())
    }
}

/// Where a separate component serves its Prometheus metrics.
#[derive(clap::Args)]
struct MetricsFlags {
    /// Serve `GET /metrics` (plain HTTP, Prometheus text) on this address; none: not
    /// served.
    #[arg(long)]
    metrics_bind_address: Option<std::net::SocketAddr>,
}

impl MetricsFlags {
    /// Serves `registry` at --metrics-bind-address, if given, from now on.
    async fn serve(&self, registry: std::sync::Arc<prometheus_client::registry::Registry>) -> Result<(), String> {
        let Some(addr) = self.metrics_bind_address else {
            return Ok(());
        };
        plain_metrics_allowed(addr, None, "--metrics-bind-address")?;
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (--metrics-bind-address): {e}"))?;
        tracing::info!(addr = %l.local_addr().map_err(|e| e.to_string())?, "serving metrics at /metrics");
        tokio::spawn(capstan_agents::metrics::serve(l, registry));
        Ok(())
    }
}

/// A duration as upstream's flags write it (Go's `time.ParseDuration`): one or more
/// numbers, each with a unit (`ns`, `us` or `µs`, `ms`, `s`, `m`, `h`), as `15s`, `1m30s`
/// or `1.5h`; a bare `0` is zero. Negative durations are refused: no flag here takes one.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = |why: &str| format!("invalid duration {text:?}: {why}");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(invalid("expected numbers with units, like 15s or 1m30s"));
    }
    let mut rest = text;
    let mut seconds = 0.0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let number: f64 = number
            .parse()
            .map_err(|_| invalid("expected numbers with units, like 15s or 1m30s"))?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(invalid("a number without a unit (ns, us, ms, s, m or h)")),
            _ => return Err(invalid("the unit must be ns, us, ms, s, m or h")),
        };
        seconds += number * scale;
        rest = after;
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| invalid(&e.to_string()))
}

/// The Kubernetes API's own settings, shared by both ways of running it.
#[derive(clap::Args)]
struct ApiFlags {
    /// The CIDR Service ClusterIPs are allocated from.
    #[arg(long, default_value = "127.64.0.0/16")]
    service_cluster_ip_range: String,
    /// Write a kubeconfig for this API server to this file.
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// Recent events each resource type's watch cache keeps: a watch from an older
    /// resourceVersion gets 410 Expired and the client lists again.
    #[arg(long, default_value_t = capstan_apiserver::cache::WINDOW_EVENTS_DEFAULT)]
    watch_cache_window_events: usize,
    /// How often, in milliseconds, a watch that asked for bookmarks gets one.
    #[arg(long, default_value_t = 60_000)]
    watch_bookmark_interval_ms: u64,
    /// Open connections to the API at most; a new one past that is closed at once.
    #[arg(long, default_value_t = capstan_apiserver::listen::CONNECTIONS_MAX_DEFAULT)]
    max_connections: usize,
    /// How long, in milliseconds, a client has to send a request's headers (from the
    /// moment it connects, or its previous request ended); also bounds TLS handshakes.
    #[arg(long, default_value_t = capstan_apiserver::listen::HEADER_READ_TIMEOUT_DEFAULT.as_millis() as u64)]
    header_read_timeout_ms: u64,
    /// Requests served at once, at most (watches and other long-running requests are
    /// not counted); 0: no bound, and no flow control.
    #[arg(long, default_value_t = capstan_apiserver::flow::SEATS_MAX_DEFAULT)]
    max_requests_inflight: usize,
    /// Requests of one client (a user, or an address without authentication) served at
    /// once, at most.
    #[arg(long, default_value_t = capstan_apiserver::flow::CLIENT_SEATS_MAX_DEFAULT)]
    max_requests_inflight_per_client: usize,
    /// Requests of one client that wait for a seat, at most; past that: 429 with Retry-After.
    #[arg(long, default_value_t = capstan_apiserver::flow::CLIENT_QUEUE_MAX_DEFAULT)]
    request_queue_length: usize,
    /// How long, in milliseconds, a queued request waits for a seat at most (then 429).
    #[arg(long, default_value_t = capstan_apiserver::flow::QUEUE_WAIT_DEFAULT.as_millis() as u64)]
    request_queue_wait_ms: u64,
}

#[derive(clap::Args)]
struct ApiserverArgs {
    /// Address to serve the Kubernetes API on (plain HTTP).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// The etcd cluster's client URLs, comma separated.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    etcd_servers: String,
    /// The CA of https:// --etcd-servers (upstream's flag).
    #[arg(long)]
    etcd_cafile: Option<PathBuf>,
    /// A client certificate for the etcd API (upstream's flag).
    #[arg(long, requires = "etcd_keyfile")]
    etcd_certfile: Option<PathBuf>,
    /// The key of --etcd-certfile.
    #[arg(long, requires = "etcd_certfile")]
    etcd_keyfile: Option<PathBuf>,
    /// Authenticate requests by bearer token: a CSV file of `token,user,uid[,"group1,group2"]`
    /// lines (upstream's static token file). Then requests without a token get 401,
    /// except /healthz, /livez and /readyz.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// How authenticated requests are authorized: AlwaysAllow, or RBAC (Roles,
    /// ClusterRoles and their bindings; needs --token-auth-file).
    #[arg(long, default_value = "AlwaysAllow")]
    authorization_mode: capstan_apiserver::auth::Mode,
    /// Serve HTTPS with this certificate (PEM, the server's first, then its chain; see
    /// `capstan certs`). With --tls-private-key-file.
    #[arg(long, requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM).
    #[arg(long, requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// Authenticate clients by certificate: the CA (PEM) that issues them (`capstan certs
    /// --user`). The subject's CN is the user, each O a group. Needs --tls-cert-file.
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
    /// Serve plain HTTP (no --tls-cert-file): only with this flag, said out loud.
    #[arg(long)]
    insecure: bool,
    /// Ask the node agents for logs over HTTPS, presenting this client certificate (PEM;
    /// the agents read logs for `system:masters` only). Without it: plain HTTP.
    #[arg(long, requires = "kubelet_client_key")]
    kubelet_client_certificate: Option<PathBuf>,
    /// The key of --kubelet-client-certificate (PEM).
    #[arg(long, requires = "kubelet_client_certificate")]
    kubelet_client_key: Option<PathBuf>,
    /// Verify the agents' certificates against this CA (PEM); without it they are not
    /// verified (upstream's default).
    #[arg(long, requires = "kubelet_client_certificate")]
    kubelet_certificate_authority: Option<PathBuf>,
    #[command(flatten)]
    api: ApiFlags,
}

/// One store member's flags (etcd's names), shared by `capstan store` and `capstan master`.
#[derive(clap::Args)]
struct MemberFlags {
    /// Member name; also seeds the member and cluster IDs.
    #[arg(long, default_value = "default")]
    name: String,
    /// Directory holding the member's data (created if missing).
    #[arg(long, default_value = "./.capstan/default")]
    data_dir: PathBuf,
    /// Address to serve the etcd API on.
    #[arg(long, default_value = "127.0.0.1:2379")]
    listen_client: SocketAddr,
    /// URL advertised to clients in MemberList (default: http://<listen-client>).
    #[arg(long)]
    advertise_client: Option<String>,
    /// Address to serve the peer (Raft) service on; needed when there are other members.
    #[arg(long)]
    listen_peer: Option<SocketAddr>,
    /// URL advertised to peers (default: http://<listen-peer>).
    #[arg(long)]
    initial_advertise_peer_urls: Option<String>,
    /// Local address this member's connections to its peers leave from (default: the
    /// system's choice); lets a proxy in front of the peer ports tell members apart.
    #[arg(long)]
    peer_source_ip: Option<std::net::IpAddr>,
    /// Every initial member as name=peer-URL, comma separated, this one included. Read
    /// only on the first start; a restarted member rejoins from its data directory.
    #[arg(long, default_value = "")]
    initial_cluster: String,
    /// `new` for a member of a new cluster; `existing` to join a running one.
    #[arg(long, default_value = "new", value_parser = ["new", "existing"])]
    initial_cluster_state: String,
    /// Distinguishes clusters started from the same member list.
    #[arg(long, default_value = "capstan-cluster")]
    initial_cluster_token: String,
    /// Raft heartbeat interval in milliseconds (the Raft tick).
    #[arg(long, default_value_t = 100)]
    heartbeat_interval: u64,
    /// Raft election timeout in milliseconds.
    #[arg(long, default_value_t = 1000)]
    election_timeout: u64,
    /// As etcd: applied entries after which the state is made durable and the Raft log
    /// truncated (keeping up to 5,000 entries for followers a little behind; one further
    /// behind catches up by snapshot).
    #[arg(long, default_value_t = 100_000)]
    snapshot_count: u64,
    /// URLs to serve the store's Prometheus metrics on (`/metrics`, etcd's names, and
    /// etcd's `/health`), comma separated, e.g. http://127.0.0.1:2381. `http://` on
    /// loopback addresses only (unless --insecure); `https://` anywhere, with the etcd
    /// API's certificate, for client certificates of the CA in `system:masters` or (for
    /// `/metrics`) `system:monitoring`. The Kubernetes API's `/metrics`, when served,
    /// includes them too.
    #[arg(long, default_value = "")]
    listen_metrics_urls: String,
}

#[derive(clap::Args)]
struct StoreArgs {
    #[command(flatten)]
    member: MemberFlags,
    /// Also serve the Kubernetes API on this address (plain HTTP), over this member.
    #[arg(long)]
    apiserver_listen: Option<SocketAddr>,
    /// With --apiserver-listen: do not also run the controllers in this process. By
    /// default they run as `capstan controller-manager` would with its default flags,
    /// against this member's API and under the same Lease (so of several members, or of a
    /// member and separate controller-managers, one acts); without any controller-manager a
    /// deleted namespace stays Terminating and no dependents are collected.
    #[arg(long)]
    no_controller_manager: bool,
    /// The controllers' `--cluster-cidr`: the pods' addresses, of which each node gets a
    /// block (inside loopback by default, so that one machine reaches them).
    #[arg(long, default_value = capstan_agents::nodeipam::CLUSTER_CIDR_DEFAULT)]
    cluster_cidr: String,
    /// With --apiserver-listen: also run the scheduler in this process (with leader
    /// election, as `capstan scheduler`).
    #[arg(long)]
    scheduler: bool,
    /// With --apiserver-listen: also run a node in this process under this name: its node
    /// agent (data in `<data-dir>/node`) and its node proxy.
    #[arg(long)]
    node_name: Option<String>,
    /// With --node-name: the node's address.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: std::net::IpAddr,
    /// With --node-name: the node agent's port (HTTPS with a certificate from the cluster
    /// CA, plain HTTP with --insecure; 0 picks a free one).
    #[arg(long, default_value_t = 10250)]
    agent_port: u16,
    /// With --node-name: where the cluster DNS listens (its `kube-dns` Service forwards
    /// there).
    #[arg(long, default_value = "127.0.0.1:10053")]
    dns_listen: SocketAddr,
    #[command(flatten)]
    api: ApiFlags,
    #[command(flatten)]
    secure: SecureFlags,
}

/// How a member's Kubernetes API is secured (`capstan store --apiserver-listen`, `capstan
/// master`): TLS and client certificates from the cluster CA, unless --insecure.
#[derive(clap::Args, Clone)]
struct SecureFlags {
    /// Serve the Kubernetes API in plain HTTP without authentication (anyone who reaches
    /// it is cluster-admin), and allow the etcd and peer ports on non-loopback addresses
    /// (their TLS is not implemented yet). Without it the API is HTTPS with client
    /// certificates and RBAC, and so is the in-process node agent's port (--node-name),
    /// which the API asks for logs with its own client certificate.
    #[arg(long)]
    insecure: bool,
    /// Where the cluster CA (ca.crt, ca.key; made on first start if missing) and the
    /// admin's client certificate are kept (default: `<data-dir>/pki`); the API server's
    /// certificate is made anew, in memory, at each start. Masters of one cluster need the same CA:
    /// copy ca.crt and ca.key to each before its first start (`capstan up` shares one).
    #[arg(long)]
    pki_dir: Option<PathBuf>,
    /// More names and addresses for the API server's certificate, comma separated (it
    /// always has its listen address, 127.0.0.1, localhost and the host name).
    #[arg(long, default_value = "")]
    tls_san: String,
}

#[derive(clap::Args)]
struct MasterArgs {
    #[command(flatten)]
    member: MemberFlags,
    /// Address to serve the Kubernetes API (and the mesh API) on (plain HTTP).
    #[arg(long, default_value = "127.0.0.1:6443")]
    apiserver_listen: SocketAddr,
    /// Run no scheduler replica here (run `capstan scheduler` elsewhere).
    #[arg(long)]
    no_scheduler: bool,
    /// Run no controller-manager replica here (run `capstan controller-manager` elsewhere).
    #[arg(long)]
    no_controller_manager: bool,
    /// The controllers' `--cluster-cidr`: the pods' addresses, of which each node gets a
    /// block.
    #[arg(long, default_value = capstan_agents::nodeipam::CLUSTER_CIDR_DEFAULT)]
    cluster_cidr: String,
    #[command(flatten)]
    api: ApiFlags,
    #[command(flatten)]
    secure: SecureFlags,
}

/// A master is a store member serving the API, with the controller-manager and the
/// scheduler: `capstan store` with those on.
async fn run_master(args: MasterArgs) -> Result<(), String> {
    run_store(StoreArgs {
        member: args.member,
        apiserver_listen: Some(args.apiserver_listen),
        no_controller_manager: args.no_controller_manager,
        cluster_cidr: args.cluster_cidr,
        scheduler: !args.no_scheduler,
        node_name: None,
        node_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        agent_port: 0,
        dns_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        api: args.api,
        secure: args.secure,
    })
    .await
}

/// The addresses of `--listen-metrics-urls` (`http://host:port` or `https://host:port`,
/// comma separated; a host name is resolved, and every address it has is listened on),
/// each with whether it is HTTPS.
async fn parse_metrics_urls(s: &str) -> Result<Vec<(SocketAddr, bool)>, String> {
    let mut out = Vec::new();
    for url in s.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let (host_port, https) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest.trim_end_matches('/'), false),
            (_, Some(rest)) => (rest.trim_end_matches('/'), true),
            _ => return Err(format!("--listen-metrics-urls: {url:?} is not http(s)://host:port")),
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host_port)
            .await
            .map_err(|e| format!("--listen-metrics-urls: {url}: {e}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("--listen-metrics-urls: {url}: no address"));
        }
        for a in addrs {
            if let Some(seen) = out.iter().find(|(b, _)| *b == a) {
                if seen.1 != https {
                    return Err(format!("--listen-metrics-urls: {a} is given both as http and as https"));
                }
            } else {
                out.push((a, https));
            }
        }
    }
    Ok(out)
}

/// Metrics in plain HTTP are served on a loopback address, or elsewhere only with
/// `--insecure` where it lets them (`insecure` is None where it does not: the message
/// then offers no such way), as every plain-text listener; a store's `https://` metrics
/// URLs may be anywhere.
fn plain_metrics_allowed(addr: SocketAddr, insecure: Option<bool>, flag: &str) -> Result<(), String> {
    if addr.ip().is_loopback() || insecure == Some(true) {
        return Ok(());
    }
    let or_else = match insecure {
        Some(_) => " (or with --insecure)",
        None => "",
    };
    Err(format!(
        "{flag} {addr}: metrics are plain HTTP, served on loopback addresses only{or_else}"
    ))
}

/// Parses `n1=http://a:2380,n2=http://b:2380`.
fn parse_initial_cluster(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| format!("--initial-cluster: {part:?} is not name=URL"))?;
        if name.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("--initial-cluster: {part:?} is not name=http://host:port"));
        }
        if out.iter().any(|(n, _): &(String, String)| n == name) {
            return Err(format!("--initial-cluster: member {name:?} is named twice"));
        }
        out.push((name.to_string(), url.to_string()));
    }
    Ok(out)
}

/// The async runtime that serves gRPC. The store's Raft and apply threads each keep a
/// core busy under load, so the runtime gets one worker fewer than there are cores (at
/// least one): on 2 cores a second worker only added wake-ups and work stealing, about
/// 15% more CPU per put (docs/benchmarks-history.md). `TOKIO_WORKER_THREADS` overrides it.
///
/// Where that leaves one worker, the runtime is tokio's current-thread scheduler: the
/// multi-thread one runs a task woken from a task next (its LIFO slot), so each answered
/// request's connection task ran, and wrote to its socket, right after that one request:
/// one `writev` per response. The current-thread scheduler queues the connection task
/// behind the other answered requests, so a connection writes a batch's responses at
/// once (the store answers from a task of the runtime: `deliver_answers` in its `node`).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let configured = std::env::var_os("TOKIO_WORKER_THREADS").is_some();
    if !configured && cores <= 2 {
        return tokio::runtime::Builder::new_current_thread().enable_all().build();
    }
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if !configured {
        b.worker_threads(cores.saturating_sub(1).max(1));
    }
    b.enable_all().build()
}

fn main() -> std::process::ExitCode {
    // A container's first step (see capstan_agents::node::init): before anything else, so
    // that no thread is started and nothing is logged into the container's log.
    let mut argv = std::env::args_os();
    if argv.nth(1).is_some_and(|a| a == "container-init") {
        let e = capstan_agents::node::init::run(argv.collect());
        eprintln!("{e}");
        std::process::exit(capstan_agents::node::init::EXIT_CODE);
    }
    let cli = Cli::parse();
    // The commands a person runs and reads get warnings only; servers log what they do.
    let default_log = match cli.command {
        Command::Up(_) | Command::Status(_) | Command::Snapshot(_) | Command::Chaos(_) | Command::Certs(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        // Wall-clock time in UTC to the microsecond: the replicas' records of what they
        // did (target `capstan::acted`) are put in one order by it.
        .with_timer(tracing_subscriber::fmt::time::SystemTime)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAPSTAN_LOG").unwrap_or_else(|_| default_log.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("capstan: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Store(args) => rt.block_on(run_store(args)),
        Command::Master(args) => rt.block_on(run_master(args)),
        Command::Snapshot(args) => rt.block_on(snapshot::run(args)),
        Command::Certs(args) => certs::run(args),
        // Healthy or not: the exit status says which.
        Command::Status(args) => return exit(rt.block_on(status::run(args))),
        Command::Up(args) => rt.block_on(async move { up::run(args, shutdown_signal()?).await }),
        Command::Apiserver(args) => rt.block_on(run_apiserver(args)),
        Command::ControllerManager(args) => rt.block_on(run_controller_manager(args)),
        Command::Scheduler(args) => rt.block_on(run_scheduler(args)),
        Command::Proxy(args) => rt.block_on(run_proxy(args)),
        Command::Agent(args) => rt.block_on(run_agent(args)),
        Command::Dns(args) => rt.block_on(run_dns(args)),
        Command::Chaos(args) => {
            return match rt.block_on(chaos::run(args)) {
                Ok(passed) => exit(Ok(passed)),
                // The harness could not run: not a verdict on the cluster.
                Err(e) => {
                    eprintln!("capstan chaos: {e}");
                    std::process::ExitCode::from(2)
                }
            };
        }
    };
    exit(result.map(|()| true))
}

/// Success for `Ok(true)`; failure, with the error printed, otherwise.
fn exit(result: Result<bool, String>) -> std::process::ExitCode {
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("capstan: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_store(args: StoreArgs) -> Result<(), String> {
    let m = args.member;
    // Without --insecure every listener is TLS from the cluster CA: the etcd API and the
    // peers with client certificates required (etcd's --client-cert-auth and
    // --peer-client-cert-auth), the Kubernetes API as below.
    let pki = match args.secure.insecure {
        true => None,
        false => {
            let mut addresses = vec![m.listen_client.ip()];
            addresses.extend(m.listen_peer.map(|a| a.ip()));
            addresses.extend(args.apiserver_listen.map(|a| a.ip()));
            let mut names: Vec<String> = Vec::new();
            for url in [&m.advertise_client, &m.initial_advertise_peer_urls]
                .into_iter()
                .flatten()
            {
                names.extend(url_host(url));
            }
            Some(Pki::open(&args.secure, &m.data_dir, &addresses, &names)?)
        }
    };
    let scheme = if pki.is_some() { "https" } else { "http" };
    let client_tls = pki.as_ref().map(Pki::etcd_server).transpose()?;
    let listener = tokio::net::TcpListener::bind(m.listen_client)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", m.listen_client))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut config = NodeConfig::new(&m.name, m.data_dir.clone());
    config.client_url = m.advertise_client.unwrap_or_else(|| format!("{scheme}://{addr}"));
    config.peer_tls = pki.as_ref().map(Pki::peer).transpose()?;
    config.initial_cluster = parse_initial_cluster(&m.initial_cluster)?;
    config.initial_cluster_token = m.initial_cluster_token.clone();
    config.peer_source_ip = m.peer_source_ip;
    // One registry for the process: the store's metrics, served at --listen-metrics-urls
    // and by the Kubernetes API's /metrics when this member serves that API.
    let mut registry = prometheus_client::registry::Registry::default();
    config.metrics = capstan_store::StoreMetrics::register(&mut registry);
    // The in-process components' metrics go into the same registry.
    let serves_api = args.apiserver_listen.is_some();
    let embedded = EmbeddedMetrics {
        controllers: (serves_api && !args.no_controller_manager)
            .then(|| capstan_agents::metrics::ControllerMetrics::new(&mut registry)),
        scheduler: (serves_api && args.scheduler)
            .then(|| capstan_agents::metrics::SchedulerMetrics::new(&mut registry)),
        node: (serves_api && args.node_name.is_some())
            .then(|| capstan_agents::metrics::NodeMetrics::new(&mut registry)),
        proxy: (serves_api && args.node_name.is_some())
            .then(|| capstan_agents::metrics::ProxyMetrics::new(&mut registry)),
    };
    let registry = std::sync::Arc::new(registry);
    for (metrics_addr, https) in parse_metrics_urls(&m.listen_metrics_urls).await? {
        // HTTPS: the etcd API's certificate, and a client certificate from the cluster CA
        // in system:masters or system:monitoring (etcd asks for one from its CA).
        let tls = match (https, &client_tls) {
            (true, Some(identity)) => Some(port_tls(&identity.cert_pem, &identity.key_pem, &identity.ca_pem)?),
            (true, None) => {
                return Err(format!(
                    "--listen-metrics-urls https://{metrics_addr}: this store has no TLS (--insecure); use http://"
                ))
            }
            (false, _) => {
                plain_metrics_allowed(metrics_addr, Some(args.secure.insecure), "--listen-metrics-urls")?;
                None
            }
        };
        let l = tokio::net::TcpListener::bind(metrics_addr)
            .await
            .map_err(|e| format!("cannot listen on {metrics_addr} (--listen-metrics-urls): {e}"))?;
        let bound = l.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(%bound, https, "serving the store's metrics at /metrics and /health");
        let router = capstan_store::metrics::router(registry.clone(), config.metrics.clone());
        tokio::spawn(async move {
            let served = capstan_agents::serving::serve(
                l,
                router,
                tls,
                capstan_agents::serving::Policy::Component,
                "the store's metrics",
            )
            .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "serving the store's metrics stopped");
            }
        });
    }
    if m.heartbeat_interval == 0 || m.election_timeout < 2 * m.heartbeat_interval {
        return Err("--election-timeout must be at least twice --heartbeat-interval (and both above 0)".into());
    }
    config.tick = std::time::Duration::from_millis(m.heartbeat_interval);
    config.log_keep_entries = m.snapshot_count.max(1);
    config.election_ticks = (m.election_timeout / m.heartbeat_interval) as usize;
    // etcd: a lease lives at least 1.5 election timeouts.
    config.lease_ttl_min_s = ((m.election_timeout * 3 / 2).div_ceil(1000) as i64).max(1);
    let peer_listener = match m.listen_peer {
        Some(peer) => {
            let l = tokio::net::TcpListener::bind(peer)
                .await
                .map_err(|e| format!("cannot listen on {peer}: {e}"))?;
            let bound = l.local_addr().map_err(|e| e.to_string())?;
            config.peer_url = m
                .initial_advertise_peer_urls
                .clone()
                .unwrap_or_else(|| format!("{scheme}://{bound}"));
            Some(l)
        }
        None => {
            if config.initial_cluster.len() > 1 {
                return Err("--initial-cluster names other members: --listen-peer is needed".into());
            }
            if let Some((_, url)) = config.initial_cluster.first() {
                config.peer_url = url.clone();
            }
            None
        }
    };
    if let Some((name, url)) = config
        .initial_cluster
        .iter()
        .chain(std::iter::once(&(m.name.clone(), config.peer_url.clone())))
        .find(|(_, url)| !url.starts_with(&format!("{scheme}://")))
        .filter(|_| m.listen_peer.is_some())
    {
        return Err(match pki {
            Some(_) => format!(
                "peer URL {url} of {name}: members speak TLS to each other, so their URLs are https:// \
                 (or give every member --insecure)"
            ),
            None => format!("peer URL {url} of {name}: with --insecure the members speak plain http://"),
        });
    }
    if !config.initial_cluster.is_empty() && !config.initial_cluster.iter().any(|(n, _)| *n == m.name) {
        return Err(format!("--initial-cluster does not name this member ({})", m.name));
    }
    if m.initial_cluster_state == "existing" && !m.data_dir.join("db").exists() {
        // A member added with `member add`: the running members know its ID.
        let peers: Vec<String> = config.initial_cluster.iter().map(|(_, u)| u.clone()).collect();
        tracing::info!(?peers, "joining a running cluster");
        config.join = Some(
            capstan_store::peer::discover_identity(
                &peers,
                &config.peer_url,
                config.peer_tls.as_ref(),
                std::time::Duration::from_secs(60),
            )
            .await
            .map_err(|e| {
                format!("cannot join the cluster at {peers:?}: {e} (was this member added with `member add`?)")
            })?,
        );
    }
    let node = Node::start(config).map_err(|e| format!("cannot open the store in {}: {e}", m.data_dir.display()))?;
    if let Some(l) = peer_listener {
        let n = node.clone();
        tokio::spawn(async move {
            if let Err(e) = capstan_store::peer::serve_peer(n, l, std::future::pending()).await {
                tracing::error!(error = %e, "the peer service stopped");
            }
        });
    }
    if let Some(api_addr) = args.apiserver_listen {
        let mut config = api_config(&args.api)?;
        config.process_metrics = Some(registry.clone());
        let tls = match &pki {
            None => None,
            Some(pki) => {
                let tokens =
                    capstan_apiserver::serviceaccount::TokenKey::from_pkcs8(&certs::service_account_key(&pki.dir)?)?;
                config.auth = Some(std::sync::Arc::new(
                    capstan_apiserver::auth::Auth::new(
                        capstan_apiserver::auth::Tokens::default(),
                        capstan_apiserver::auth::Mode::Rbac,
                    )
                    .with_service_accounts(tokens),
                ));
                // Log requests go to the agents over TLS, as this API's kubelet client.
                config.kubelet_client = Some(std::sync::Arc::new(pki.kubelet_client()?));
                Some(pki.server_config()?)
            }
        };
        let api = Api::new(Storage::local(node.clone()), config);
        let admin = pki.as_ref().map(Pki::admin).transpose()?;
        let l = bind_api(
            api_addr,
            &args.api,
            pki.as_ref().map(|p| p.ca.pem.as_str()),
            admin.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
        )
        .await?;
        let bound = l.local_addr().map_err(|e| e.to_string())?;
        // In-process components dial the API where it listens (loopback for a wildcard).
        let dial = match bound.ip().is_unspecified() {
            true => SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), bound.port()),
            false => bound,
        };
        let api_url = match pki {
            Some(_) => format!("https://{dial}"),
            None => format!("http://{dial}"),
        };
        let access = |user: &str, group: Option<&str>| -> Result<Access, String> {
            let tls = match &pki {
                None => None,
                Some(pki) => Some(pki.client_tls(user, group)?),
            };
            Ok(Access {
                masters: api_url.clone(),
                tls,
                ca_pem: pki.as_ref().map(|p| p.ca.pem.clone().into_bytes()),
            })
        };
        tokio::spawn(async move {
            if let Err(e) = capstan_apiserver::serve_with(l, api, tls, std::future::pending()).await {
                tracing::error!(error = %e, "the Kubernetes API stopped");
            }
        });
        if !args.no_controller_manager {
            let access = access(capstan_apiserver::rbac::KUBE_CONTROLLER_MANAGER_USER, None)?;
            embedded_controller_manager(&access, &m.name, &args.cluster_cidr, embedded.controllers.clone())?;
        }
        if args.scheduler {
            embedded_scheduler(
                &access(capstan_apiserver::rbac::KUBE_SCHEDULER_USER, None)?,
                &m.name,
                embedded.scheduler.clone(),
            )?;
        }
        if let Some(node) = &args.node_name {
            // The cluster DNS's Service takes the tenth address of the Service range, as
            // kubeadm's kube-dns does.
            let range: capstan_agents::nodeipam::Cidr = args
                .api
                .service_cluster_ip_range
                .parse()
                .map_err(|e| format!("--service-cluster-ip-range: {e}"))?;
            let dns_ip = std::net::IpAddr::V4(std::net::Ipv4Addr::from(range.base + 10));
            // The DNS publishes its own Service in kube-system: it runs as an admin (it
            // has no role of its own yet).
            let client = access(DNS_USER, Some(capstan_apiserver::rbac::SYSTEM_MASTERS))?.client()?;
            let dns = start_dns(
                &client,
                args.dns_listen,
                capstan_agents::dns::ZONE_DEFAULT,
                Some(dns_ip),
            )
            .await?;
            tokio::spawn(async move {
                if let Err(e) = dns.run(client).await {
                    tracing::error!(error = %e, "the cluster DNS stopped");
                }
            });
            let node_access = access(
                &format!("system:node:{node}"),
                Some(capstan_apiserver::rbac::NODES_GROUP),
            )?;
            let serving = pki.as_ref().map(|p| p.agent_serving(node, args.node_ip)).transpose()?;
            embedded_node(
                &node_access,
                node,
                args.node_ip,
                args.agent_port,
                &m.data_dir.join("node"),
                dns_ip,
                serving,
                &embedded,
                registry.clone(),
            )
            .await?;
        }
    }
    tracing::info!(%addr, data_dir = %m.data_dir.display(), revision = node.mvcc.revision(), "store serving the etcd v3 API");
    // The line tests and scripts wait for.
    println!("capstan store ready on {addr}");
    // Serve until Ctrl-C or SIGTERM, or until the member stops on its own (removed from the
    // cluster, or its storage failed), as etcd exits then.
    let stopped = node.clone();
    let signal = shutdown_signal()?;
    let shutdown = async move {
        tokio::select! {
            _ = signal => {}
            _ = stopped.wait_stopped() => tracing::warn!("the member stopped; exiting"),
        }
    };
    server::serve_with(node.clone(), listener, client_tls.as_ref(), shutdown)
        .await
        .map_err(|e| e.to_string())?;
    node.stop();
    Ok(())
}

/// Runs the controller-manager in this process against the API `access` reaches, with the
/// defaults of `capstan controller-manager`: leader election on the usual Lease, as
/// `<member>_<hostname>_<pid>_<start>`, so that members of one cluster (and separate
/// controller-managers) never act at once.
fn embedded_controller_manager(
    access: &Access,
    member: &str,
    cluster_cidr: &str,
    metrics: Option<capstan_agents::metrics::ControllerMetrics>,
) -> Result<(), String> {
    use capstan_agents::controller_manager::{self, default_identity, Election};
    use capstan_agents::nodeipam::{Blocks, NODE_MASK_SIZE_DEFAULT};
    let client = access.client()?;
    let election = Election {
        identity: format!("{member}_{}", default_identity()),
        ..Election::default()
    };
    let cidr = cluster_cidr.parse().map_err(|e| format!("--cluster-cidr: {e}"))?;
    let blocks = Blocks::new(cidr, NODE_MASK_SIZE_DEFAULT).map_err(|e| format!("the default node CIDRs: {e}"))?;
    let lifecycle = capstan_agents::nodelifecycle::Config::default();
    tracing::info!(identity = %election.identity, "running the controller-manager in this process");
    let options = controller_manager::Options {
        node_cidrs: Some(blocks),
        lifecycle,
        root_ca_pem: access
            .ca_pem
            .as_ref()
            .map(|pem| String::from_utf8_lossy(pem).into_owned()),
    };
    tokio::spawn(async move {
        if let Err(e) = controller_manager::run_with_metrics(client, election, options, metrics).await {
            tracing::error!(error = %e, "the controller-manager stopped");
        }
    });
    Ok(())
}

/// The metrics of the components a store process runs in itself, registered with the
/// store's (None: that component does not run here).
struct EmbeddedMetrics {
    controllers: Option<capstan_agents::metrics::ControllerMetrics>,
    scheduler: Option<capstan_agents::metrics::SchedulerMetrics>,
    node: Option<capstan_agents::metrics::NodeMetrics>,
    proxy: Option<capstan_agents::metrics::ProxyMetrics>,
}

/// Runs the scheduler in this process against the API `access` reaches, elected as
/// `capstan scheduler` is.
fn embedded_scheduler(
    access: &Access,
    member: &str,
    metrics: Option<capstan_agents::metrics::SchedulerMetrics>,
) -> Result<(), String> {
    use capstan_agents::controller_manager::{self, default_identity, Election};
    use capstan_agents::scheduler;
    let client = access.client()?;
    let election = Election {
        identity: format!("{member}_{}", default_identity()),
        lease_name: "kube-scheduler".into(),
        ..Election::default()
    };
    tracing::info!(identity = %election.identity, "running the scheduler in this process");
    tokio::spawn(async move {
        let work = |c| scheduler::run_with_metrics(c, metrics.clone());
        if let Err(e) = controller_manager::run_elected(client, &election, work).await {
            tracing::error!(error = %e, "the scheduler stopped");
        }
    });
    Ok(())
}

/// Runs node `name` in this process: its agent (its port over TLS with `serving`) and its
/// proxy.
#[allow(clippy::too_many_arguments)]
async fn embedded_node(
    access: &Access,
    name: &str,
    node_ip: std::net::IpAddr,
    port: u16,
    root_dir: &std::path::Path,
    dns_ip: std::net::IpAddr,
    serving: Option<capstan_agents::serving::ServingTls>,
    metrics: &EmbeddedMetrics,
    registry: std::sync::Arc<prometheus_client::registry::Registry>,
) -> Result<(), String> {
    use capstan_agents::node::agent;
    use capstan_agents::proxy::{self, forward};
    let client = access.client()?;
    let mesh = access.mesh()?;
    let resources = AgentResources {
        dns: Some(pod_dns(dns_ip, capstan_agents::dns::ZONE_DEFAULT)),
        ..AgentResources::default()
    };
    let mut config = agent_config(name, node_ip, port, root_dir.to_path_buf(), resources).await?;
    // The process's registry (the store's and its components') at the agent's /metrics.
    config.port_metrics = Some(registry);
    tracing::info!(node = name, "running a node agent and a node proxy in this process");
    let proxy_mesh = mesh.clone();
    let node_metrics = metrics.node.clone();
    tokio::spawn(async move {
        if let Err(e) = agent::run_with_metrics(client, mesh, config, serving, node_metrics, |_| {}).await {
            tracing::error!(error = %e, "the node agent stopped");
        }
    });
    let node = name.to_owned();
    let proxy_metrics = metrics.proxy.clone();
    tokio::spawn(async move {
        let mut forwarder = forward::Forwarder::new(forward::Limits::default());
        if let Some(m) = proxy_metrics {
            forwarder = forwarder.with_metrics(m);
        }
        let synced = || tracing::info!(node, "the node proxy serves its first table");
        proxy::run_mesh(proxy_mesh, &node, node_ip, &forwarder, synced).await;
        tracing::error!("the node proxy's stream ended");
    });
    Ok(())
}

/// The host of a URL (`https://host:port`), if it has one.
fn url_host(url: &str) -> Option<String> {
    let uri: tonic::codegen::http::Uri = url.parse().ok()?;
    Some(uri.host()?.trim_start_matches('[').trim_end_matches(']').to_owned())
}

/// The user the in-process cluster DNS acts as.
const DNS_USER: &str = "system:capstan-dns";

/// A member's PKI (see [`SecureFlags`]): the cluster CA, and the API server's names.
struct Pki {
    dir: PathBuf,
    ca: certs::Ca,
    hosts: Vec<String>,
}

impl Pki {
    /// The PKI of `flags` (or `<data_dir>/pki`), for certificates naming `addresses` and
    /// `names` besides the usual ones.
    fn open(
        flags: &SecureFlags,
        data_dir: &std::path::Path,
        addresses: &[std::net::IpAddr],
        names: &[String],
    ) -> Result<Pki, String> {
        let dir = flags.pki_dir.clone().unwrap_or_else(|| data_dir.join("pki"));
        certs::private_dir(&dir)?;
        let ca = certs::Ca::load_or_create(&dir)?;
        let mut hosts = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        hosts.extend(addresses.iter().filter(|a| !a.is_unspecified()).map(|a| a.to_string()));
        hosts.extend(names.iter().cloned());
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            hosts.push(h.trim().to_lowercase());
        }
        hosts.extend(
            flags
                .tls_san
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned),
        );
        hosts.retain(|h| !h.is_empty());
        let mut seen = std::collections::HashSet::new();
        hosts.retain(|h| seen.insert(h.clone()));
        Ok(Pki { dir, ca, hosts })
    }

    /// The API server's TLS: a certificate made now (so a restart renews it), clients
    /// verified against the CA.
    fn server_config(&self) -> Result<std::sync::Arc<capstan_apiserver::tls::ServerConfig>, String> {
        // Kept in memory only: masters may share the directory.
        let (chain, key) = self.ca.serving(&self.hosts)?;
        capstan_apiserver::tls::server_config(chain.as_bytes(), key.as_bytes(), Some(self.ca.pem.as_bytes()))
    }

    fn admin(&self) -> Result<(String, String), String> {
        self.ca.admin(&self.dir)
    }

    /// The etcd API's TLS: a serving certificate made now.
    fn etcd_server(&self) -> Result<capstan_store::TlsIdentity, String> {
        let (cert, key) = self.ca.serving(&self.hosts)?;
        Ok(self.identity(cert, key))
    }

    /// The peers' mutual TLS: a certificate for serving and dialing, made now.
    fn peer(&self) -> Result<capstan_store::TlsIdentity, String> {
        let (cert, key) = self.ca.peer(&self.hosts)?;
        Ok(self.identity(cert, key))
    }

    fn identity(&self, cert: String, key: String) -> capstan_store::TlsIdentity {
        capstan_store::TlsIdentity {
            cert_pem: cert.into_bytes(),
            key_pem: key.into_bytes(),
            ca_pem: self.ca.pem.clone().into_bytes(),
        }
    }

    /// The API server's TLS to the node agents' ports: a client certificate made now, in
    /// memory (`kube-apiserver-kubelet-client` in `system:masters`, which the agents let
    /// read logs); the agents' certificates verified against the CA.
    fn kubelet_client(&self) -> Result<capstan_apiserver::tls::KubeletClientTls, String> {
        let (cert, key) = self.ca.client(
            certs::KUBELET_CLIENT_USER,
            Some(capstan_apiserver::rbac::SYSTEM_MASTERS),
        )?;
        capstan_apiserver::tls::KubeletClientTls::from_pem(
            cert.as_bytes(),
            key.as_bytes(),
            Some(self.ca.pem.as_bytes()),
        )
    }

    /// Node `node`'s agent port over TLS: a serving certificate made now, in memory, for
    /// `ip` (the node's InternalIP, which the API server dials) and the node's name;
    /// clients verified against the CA.
    fn agent_serving(&self, node: &str, ip: std::net::IpAddr) -> Result<capstan_agents::serving::ServingTls, String> {
        let (chain, key) = self
            .ca
            .agent_serving(node, &certs::agent_hosts(node, &[ip.to_string()]))?;
        port_tls(chain.as_bytes(), key.as_bytes(), self.ca.pem.as_bytes())
    }

    /// TLS for an in-process component acting as `user` in `group`: a certificate made
    /// now, in memory.
    fn client_tls(&self, user: &str, group: Option<&str>) -> Result<capstan_agents::tls::ClientTls, String> {
        let (cert, key) = self.ca.client(user, group)?;
        capstan_agents::tls::ClientTls::from_pem(self.ca.pem.as_bytes(), Some((cert.as_bytes(), key.as_bytes())))
            .map_err(|e| e.to_string())
    }
}

/// How a component reaches the API: the URLs of `--master` (or the kubeconfig's server)
/// and, for https://, the CA and client certificate of `--kubeconfig`.
struct Access {
    masters: String,
    tls: Option<capstan_agents::tls::ClientTls>,
    /// The cluster CA (PEM) of the kubeconfig, if it names one.
    ca_pem: Option<Vec<u8>>,
}

impl Access {
    fn of(master: &str, kubeconfig: Option<&std::path::Path>) -> Result<Access, String> {
        let from_file = kubeconfig
            .map(capstan_agents::tls::read_kubeconfig)
            .transpose()
            .map_err(|e| format!("--kubeconfig: {e}"))?;
        let masters = match (master.trim(), &from_file) {
            ("", Some(k)) => k.server.clone(),
            ("", None) => return Err("give --master (the API server's URL) or --kubeconfig".into()),
            (m, _) => m.to_owned(),
        };
        let (tls, ca_pem) = from_file.map_or((None, None), |k| (k.tls, k.ca_pem));
        Ok(Access { masters, tls, ca_pem })
    }

    fn client(&self) -> Result<kube::Client, String> {
        capstan_agents::client::api_client_tls(&self.masters, self.tls.as_ref()).map_err(|e| format!("--master: {e}"))
    }

    fn mesh(&self) -> Result<capstan_proto::mesh::mesh_client::MeshClient<tonic::transport::Channel>, String> {
        capstan_agents::node::agent::mesh_client_tls(&self.masters, self.tls.as_ref())
            .map_err(|e| format!("--master: {e}"))
    }
}

fn api_config(flags: &ApiFlags) -> Result<ApiConfig, String> {
    Ok(ApiConfig {
        services: capstan_apiserver::alloc::ServiceRanges::parse_cidr(&flags.service_cluster_ip_range)
            .map_err(|e| format!("--service-cluster-ip-range: {e}"))?,
        watch_window_events: flags.watch_cache_window_events.max(1),
        bookmark_interval: std::time::Duration::from_millis(flags.watch_bookmark_interval_ms.max(10)),
        auth: None,
        kubelet_client: None,
        process_metrics: None,
        connections: capstan_apiserver::listen::Limits {
            connections_max: flags.max_connections.max(1),
            header_read_timeout: std::time::Duration::from_millis(flags.header_read_timeout_ms.max(1)),
        },
        flow: (flags.max_requests_inflight > 0).then(|| capstan_apiserver::flow::Limits {
            seats_max: flags.max_requests_inflight,
            client_seats_max: flags
                .max_requests_inflight_per_client
                .clamp(1, flags.max_requests_inflight),
            client_queue_max: flags.request_queue_length,
            queue_wait: std::time::Duration::from_millis(flags.request_queue_wait_ms),
        }),
    })
}

/// Binds the Kubernetes API's address and writes the kubeconfig if asked (for HTTPS
/// when `tls_ca` is the CA clients should trust); prints the line tests and scripts wait
/// for.
async fn bind_api(
    addr: SocketAddr,
    flags: &ApiFlags,
    tls_ca: Option<&str>,
    client: Option<(&str, &str)>,
) -> Result<tokio::net::TcpListener, String> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = l.local_addr().map_err(|e| e.to_string())?;
    if let Some(path) = &flags.write_kubeconfig {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let scheme = if tls_ca.is_some() { "https" } else { "http" };
        let dial = match bound.ip().is_unspecified() {
            true => SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), bound.port()),
            false => bound,
        };
        let text = capstan_apiserver::kubeconfig_for(&format!("{scheme}://{dial}"), tls_ca, client);
        // It may carry a client key: readable by its owner only.
        certs::write(path, &text, client.is_some())?;
    }
    tracing::info!(addr = %bound, "serving the Kubernetes API");
    println!("capstan apiserver ready on {bound}");
    Ok(l)
}

async fn run_apiserver(args: ApiserverArgs) -> Result<(), String> {
    if args.tls_cert_file.is_none() && !args.insecure {
        return Err(
            "serving the API in plain HTTP needs --insecure (or give --tls-cert-file; see `capstan certs`)".into(),
        );
    }
    let endpoints: Vec<String> = args
        .etcd_servers
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    let etcd_tls = match &args.etcd_cafile {
        None => None,
        Some(ca) => {
            let identity = args.etcd_certfile.as_deref().zip(args.etcd_keyfile.as_deref());
            Some(status::etcd_client_tls(ca, identity)?)
        }
    };
    let storage = Storage::etcd_tls(&endpoints, etcd_tls)
        .await
        .map_err(|e| e.to_string())?;
    let mut config = api_config(&args.api)?;
    let read = |flag: &str, p: &PathBuf| std::fs::read(p).map_err(|e| format!("{flag} {}: {e}", p.display()));
    let tokens = match &args.token_auth_file {
        Some(path) => {
            let text = String::from_utf8(read("--token-auth-file", path)?)
                .map_err(|e| format!("--token-auth-file {}: {e}", path.display()))?;
            let tokens = capstan_apiserver::auth::Tokens::parse(&text)
                .map_err(|e| format!("--token-auth-file {}: {e}", path.display()))?;
            tracing::info!(users = tokens.len(), "authenticating requests by token");
            Some(tokens)
        }
        None => None,
    };
    let client_ca = match &args.client_ca_file {
        Some(path) if args.tls_cert_file.is_none() => {
            return Err(format!("--client-ca-file {}: needs --tls-cert-file", path.display()))
        }
        Some(path) => Some(read("--client-ca-file", path)?),
        None => None,
    };
    config.auth = if tokens.is_some() || client_ca.is_some() {
        tracing::info!(mode = ?args.authorization_mode, client_certificates = client_ca.is_some(), "authenticating requests");
        Some(std::sync::Arc::new(capstan_apiserver::auth::Auth::new(
            tokens.unwrap_or_default(),
            args.authorization_mode,
        )))
    } else if args.authorization_mode == capstan_apiserver::auth::Mode::Rbac {
        return Err("--authorization-mode RBAC needs --token-auth-file or --client-ca-file".into());
    } else {
        None
    };
    let (tls, ca) = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(cert), Some(key)) => {
            let (cert_pem, key_pem) = (read("--tls-cert-file", cert)?, read("--tls-private-key-file", key)?);
            let config = capstan_apiserver::tls::server_config(&cert_pem, &key_pem, client_ca.as_deref())
                .map_err(|e| format!("--tls-cert-file {}: {e}", cert.display()))?;
            (Some(config), Some(capstan_apiserver::tls::ca_of_chain(&cert_pem)?))
        }
        _ => (None, None),
    };
    if let (Some(cert), Some(key)) = (&args.kubelet_client_certificate, &args.kubelet_client_key) {
        let agents_ca = args
            .kubelet_certificate_authority
            .as_ref()
            .map(|p| read("--kubelet-certificate-authority", p))
            .transpose()?;
        let tls = capstan_apiserver::tls::KubeletClientTls::from_pem(
            &read("--kubelet-client-certificate", cert)?,
            &read("--kubelet-client-key", key)?,
            agents_ca.as_deref(),
        )
        .map_err(|e| format!("--kubelet-client-certificate {}: {e}", cert.display()))?;
        config.kubelet_client = Some(std::sync::Arc::new(tls));
    }
    let api = Api::new(storage, config);
    let l = bind_api(args.listen, &args.api, ca.as_deref(), None).await?;
    capstan_apiserver::serve_with(l, api, tls, shutdown_signal()?)
        .await
        .map_err(|e| e.to_string())
}

async fn run_controller_manager(args: ControllerManagerArgs) -> Result<(), String> {
    use capstan_agents::controller_manager;
    use capstan_agents::nodeipam::Blocks;
    let (client, election, kubeconfig_ca) = args.election.election("kube-controller-manager")?;
    let node_cidrs = if args.allocate_node_cidrs {
        let cidr = args.cluster_cidr.parse().map_err(|e| format!("--cluster-cidr: {e}"))?;
        Some(Blocks::new(cidr, args.node_cidr_mask_size).map_err(|e| format!("--node-cidr-mask-size: {e}"))?)
    } else {
        None
    };
    let lifecycle = capstan_agents::nodelifecycle::Config {
        node_monitor_period: args.node_monitor_period,
        node_monitor_grace_period: args.node_monitor_grace_period,
        node_startup_grace_period: args.node_startup_grace_period,
        node_evictions_per_s: args.node_eviction_rate,
        secondary_node_evictions_per_s: args.secondary_node_eviction_rate,
        large_cluster_size_threshold: args.large_cluster_size_threshold,
        unhealthy_zone_threshold: args.unhealthy_zone_threshold,
        ..capstan_agents::nodelifecycle::Config::default()
    };
    lifecycle.check().map_err(|e| e.to_string())?;
    let root_ca_pem = match &args.root_ca_file {
        Some(path) => {
            Some(std::fs::read_to_string(path).map_err(|e| format!("--root-ca-file {}: {e}", path.display()))?)
        }
        None => kubeconfig_ca
            .as_ref()
            .map(|pem| String::from_utf8_lossy(pem).into_owned()),
    };
    let options = controller_manager::Options {
        node_cidrs,
        lifecycle,
        root_ca_pem,
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = capstan_agents::metrics::ControllerMetrics::new(&mut registry);
    let registry = std::sync::Arc::new(registry);
    args.metrics.serve(registry.clone()).await?;
    args.secure
        .serve(
            registry,
            kubeconfig_ca.as_deref(),
            "the controller-manager's secure port",
        )
        .await?;
    println!("capstan controller-manager ready as {}", election.identity);
    let shutdown = shutdown_signal()?;
    tokio::select! {
        r = controller_manager::run_with_metrics(client, election, options, Some(metrics)) => r.map_err(|e| e.to_string()),
        () = shutdown => Ok(()),
    }
}

async fn run_scheduler(args: SchedulerArgs) -> Result<(), String> {
    use capstan_agents::{controller_manager, scheduler};
    let (client, election, kubeconfig_ca) = args.election.election("kube-scheduler")?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = capstan_agents::metrics::SchedulerMetrics::new(&mut registry);
    let registry = std::sync::Arc::new(registry);
    args.metrics.serve(registry.clone()).await?;
    args.secure
        .serve(registry, kubeconfig_ca.as_deref(), "the scheduler's secure port")
        .await?;
    println!("capstan scheduler ready as {}", election.identity);
    let shutdown = shutdown_signal()?;
    let work = |c| scheduler::run_with_metrics(c, Some(metrics.clone()));
    tokio::select! {
        // The scheduler writes only through the fenced client it is handed.
        r = controller_manager::run_elected(client, &election, work) => {
            r.map_err(|e| e.to_string())
        }
        () = shutdown => Ok(()),
    }
}

async fn run_proxy(args: ProxyArgs) -> Result<(), String> {
    use capstan_agents::proxy::{self, forward};
    let mesh = Access::of(&args.master, args.kubeconfig.as_deref())?.mesh()?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = capstan_agents::metrics::ProxyMetrics::new(&mut registry);
    args.metrics.serve(std::sync::Arc::new(registry)).await?;
    let forwarder = forward::Forwarder::new(forward::Limits::default()).with_metrics(metrics);
    let shutdown = shutdown_signal()?;
    // Ready once the first table is served, so that `up` announces a cluster whose
    // Services answer.
    let ready = || println!("capstan proxy ready on node {} ({})", args.node_name, args.node_ip);
    tokio::select! {
        () = proxy::run_mesh(mesh, &args.node_name, args.node_ip, &forwarder, ready) => Err("the proxy's stream ended".into()),
        () = shutdown => Ok(()),
    }
}

async fn run_agent(args: AgentArgs) -> Result<(), String> {
    use capstan_agents::node::agent;
    use capstan_agents::node::process::LogLimits;
    use capstan_agents::node::runtime::RuntimeKind;
    let access = Access::of(&args.master, args.kubeconfig.as_deref())?;
    let client = access.client()?;
    let serving = agent_port_tls(&args, &access)?;
    let mut registry = prometheus_client::registry::Registry::default();
    let node_metrics = capstan_agents::metrics::NodeMetrics::new(&mut registry);
    let registry = std::sync::Arc::new(registry);
    args.metrics.serve(registry.clone()).await?;
    let name = match args.node_name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .map_err(|e| format!("cannot read the hostname (give --node-name): {e}"))?,
    };
    if args.container_log_max_files < 2 {
        return Err("--container-log-max-files must be at least 2".into());
    }
    let resources = AgentResources {
        labels: parse_labels(&args.node_labels)?,
        taints: parse_taints(&args.register_with_taints)?,
        cpu_millis: args.cpu_millis,
        memory_bytes: args.memory_bytes,
        max_pods: args.max_pods,
        pod_cidr: args
            .pod_cidr
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| format!("--pod-cidr: {e}"))?,
        log_limits: LogLimits {
            file_bytes_max: args.container_log_max_bytes,
            files_max: args.container_log_max_files,
        },
        dns: args.cluster_dns.map(|ip| pod_dns(ip, &args.cluster_domain)),
    };
    if args.runtime == RuntimeKind::Simulated {
        if args.nodes == 0 || args.nodes > agent::HOLLOW_NODES_MAX {
            return Err(format!("--nodes: 1 to {}, not {}", agent::HOLLOW_NODES_MAX, args.nodes));
        }
        // The nodes' directories go under the root, each named after its node.
        let root_dir = args.root_dir.unwrap_or_else(|| PathBuf::from(".capstan/nodes"));
        // The template's listener is the one log port all the hollow nodes share.
        let mut template = agent_config(&name, args.node_ip, args.port, root_dir, resources).await?;
        template.port_metrics = Some(registry);
        let shutdown = shutdown_signal()?;
        let run = agent::run_hollow_with_metrics(
            client,
            &access.masters,
            access.tls.as_ref(),
            serving,
            Some(node_metrics),
            template,
            args.nodes,
            |a| println!("capstan agent ready on node {}", a.context.node_name),
        );
        return tokio::select! {
            r = run => r.map_err(|e| e.to_string()),
            // Simulated containers end with the process; nothing is left to adopt.
            () = shutdown => Ok(()),
        };
    }
    if args.nodes != 1 {
        return Err("--nodes is for --runtime simulated: a process node is one node".into());
    }
    let mesh = access.mesh()?;
    let root_dir = args
        .root_dir
        .unwrap_or_else(|| PathBuf::from(".capstan/nodes").join(&name));
    let mut config = agent_config(&name, args.node_ip, args.port, root_dir, resources).await?;
    config.port_metrics = Some(registry);
    let shutdown = shutdown_signal()?;
    let run = agent::run_with_metrics(client, mesh, config, serving, Some(node_metrics), |_| {
        println!("capstan agent ready on node {name}")
    });
    tokio::select! {
        r = run => r.map_err(|e| e.to_string()),
        // The containers go on; a restarted agent adopts them.
        () = shutdown => Ok(()),
    }
}

/// Whether the agent's port is HTTPS (see `AgentArgs`): with a certificate; plain HTTP
/// with --insecure, or when every API URL is `http://` (such a cluster has no CA for the
/// agent to know the API server by, and anyone may read anything through its API
/// anyway). An agent of a cluster over TLS needs one or the other, said out loud.
fn agent_port_is_tls(insecure: bool, certificate: bool, masters: &str) -> Result<bool, String> {
    if certificate {
        return Ok(true);
    }
    let api_over_tls = masters.split(',').any(|m| m.trim().starts_with("https://"));
    if insecure || !api_over_tls {
        return Ok(false);
    }
    Err(
        "the API is HTTPS, so the agent's port (--port) is too: give --tls-cert-file and \
         --tls-private-key-file (`capstan certs --node`), or --insecure to serve it in plain HTTP"
            .into(),
    )
}

/// The agent's port TLS of `args` (None: plain HTTP), clients verified against
/// --client-ca-file or the kubeconfig's CA.
fn agent_port_tls(args: &AgentArgs, access: &Access) -> Result<Option<capstan_agents::serving::ServingTls>, String> {
    let certificate = args.serving.tls_cert_file.is_some();
    if !agent_port_is_tls(args.insecure, certificate, &access.masters)? {
        tracing::info!("the agent's port is plain HTTP, without authentication");
        return Ok(None);
    }
    args.serving.tls(access.ca_pem.as_deref())
}

/// An agent's port, or a store's HTTPS metrics URL, over TLS with a certificate chain and
/// key, accepting client certificates of `client_ca` (PEM), read as the API server reads
/// them.
fn port_tls(cert_pem: &[u8], key_pem: &[u8], client_ca: &[u8]) -> Result<capstan_agents::serving::ServingTls, String> {
    use capstan_agents::serving::{Requester, ServingTls};
    Ok(ServingTls {
        config: capstan_apiserver::tls::server_config(cert_pem, key_pem, Some(client_ca))?,
        identify: |der| {
            capstan_apiserver::tls::client_identity(der).map(|id| Requester {
                user: id.user,
                groups: id.groups,
            })
        },
    })
}

/// What a node offers and how it keeps logs, beyond its name and address.
#[derive(Default)]
struct AgentResources {
    labels: std::collections::BTreeMap<String, String>,
    taints: Vec<k8s_openapi::api::core::v1::Taint>,
    cpu_millis: Option<u64>,
    memory_bytes: Option<u64>,
    /// 0: the kubelet's default of 110.
    max_pods: u32,
    pod_cidr: Option<capstan_agents::nodeipam::Cidr>,
    log_limits: capstan_agents::node::process::LogLimits,
    dns: Option<capstan_agents::node::pods::Dns>,
}

/// A node agent's settings; binds its HTTP port on `node_ip`.
async fn agent_config(
    name: &str,
    node_ip: std::net::IpAddr,
    port: u16,
    data_dir: PathBuf,
    resources: AgentResources,
) -> Result<capstan_agents::node::agent::Config, String> {
    use capstan_agents::node::pods;
    use capstan_agents::node::registration::{Capacity, Heartbeat, NodeIdentity};
    let listener = tokio::net::TcpListener::bind((node_ip, port))
        .await
        .map_err(|e| format!("cannot listen on {node_ip}:{port}: {e}"))?;
    let agent_port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let mut capacity = Capacity::of_this_machine().map_err(|e| e.to_string())?;
    capacity.cpu_millis = resources.cpu_millis.unwrap_or(capacity.cpu_millis);
    capacity.memory_bytes = resources.memory_bytes.unwrap_or(capacity.memory_bytes);
    if resources.max_pods > 0 {
        capacity.pods = resources.max_pods;
    }
    Ok(capstan_agents::node::agent::Config {
        identity: NodeIdentity {
            name: name.to_owned(),
            address: node_ip,
            labels: resources.labels,
            taints: resources.taints,
            capacity,
            agent_port,
        },
        heartbeat: Heartbeat::default(),
        data_dir,
        pod_cidr: resources.pod_cidr,
        log_limits: resources.log_limits,
        backoff_initial: pods::BACKOFF_INITIAL,
        backoff_max: pods::BACKOFF_MAX,
        usage_interval: capstan_agents::node::usage::USAGE_INTERVAL_DEFAULT,
        listener: Some(listener),
        // Containers' mounts go through this binary's `container-init`.
        init_program: std::env::current_exe().ok(),
        dns: resources.dns,
        runtime: capstan_agents::node::runtime::RuntimeKind::Process,
        port_metrics: None,
    })
}

/// Cluster DNS at `nameserver` for the pods, with this host's search domains after the
/// cluster's, as the kubelet appends them.
fn pod_dns(nameserver: std::net::IpAddr, zone: &str) -> capstan_agents::node::pods::Dns {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let host_search = host
        .lines()
        .filter_map(|l| l.trim().strip_prefix("search"))
        .flat_map(|rest| rest.split_whitespace().map(str::to_owned))
        .collect();
    capstan_agents::node::pods::Dns {
        nameserver,
        zone: zone.to_owned(),
        host_search,
    }
}

/// `key=value,key2=value2` (upstream's `--node-labels`).
fn parse_labels(text: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("--node-labels: {p:?} is not key=value"))
        })
        .collect()
}

/// `key=value:Effect,key2:Effect` (upstream's `--register-with-taints`).
fn parse_taints(text: &str) -> Result<Vec<k8s_openapi::api::core::v1::Taint>, String> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (kv, effect) = p
                .rsplit_once(':')
                .ok_or_else(|| format!("--register-with-taints: {p:?} is not key[=value]:Effect"))?;
            if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
                return Err(format!("--register-with-taints: unknown effect {effect:?}"));
            }
            let (key, value) = match kv.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (kv.to_owned(), None),
            };
            Ok(k8s_openapi::api::core::v1::Taint {
                key,
                value,
                effect: effect.to_owned(),
                time_added: None,
            })
        })
        .collect()
}

async fn run_dns(args: DnsArgs) -> Result<(), String> {
    let client = Access::of(&args.master, args.kubeconfig.as_deref())?.client()?;
    let server = start_dns(&client, args.listen, &args.cluster_domain, args.service_ip).await?;
    println!("capstan dns ready on {}", server.local_addr());
    let shutdown = shutdown_signal()?;
    tokio::select! {
        r = server.run(client) => r.map_err(|e| e.to_string()),
        () = shutdown => Ok(()),
    }
}

/// Binds the cluster DNS (forwarding to this host's nameservers) and publishes its
/// Service if given a ClusterIP for it.
async fn start_dns(
    client: &kube::Client,
    listen: SocketAddr,
    zone: &str,
    service_ip: Option<std::net::IpAddr>,
) -> Result<capstan_agents::dns::Server, String> {
    use capstan_agents::dns;
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut config = dns::Config::new(listen, dns::upstreams_from_resolv_conf(&resolv));
    config.zone = zone.to_owned();
    let server = dns::Server::bind(config)
        .await
        .map_err(|e| format!("cannot serve DNS on {listen}: {e}"))?;
    if let Some(ip) = service_ip {
        let (client, bound) = (client.clone(), server.local_addr());
        // In the background: the API may not be up yet.
        tokio::spawn(async move {
            let mut retry = Duration::from_millis(200);
            while let Err(e) = dns::publish_service(&client, ip, bound).await {
                tracing::warn!(error = %e, "publishing the kube-dns Service failed; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(7));
            }
            tracing::info!(cluster_ip = %ip, server = %bound, "published the kube-dns Service");
        });
    }
    Ok(server)
}

/// Completes on Ctrl-C or SIGTERM.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        for bad in ["", "15", "1m30", "s", "-1s", "1d", "1.2.3s", "ms5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[tokio::test]
    async fn metrics_urls_read_as_etcd_takes_them() {
        let v4 = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        assert_eq!(parse_metrics_urls("").await, Ok(vec![]));
        assert_eq!(
            parse_metrics_urls("http://127.0.0.1:2381, http://127.0.0.1:2382/,http://127.0.0.1:2381").await,
            Ok(vec![(v4(2381), false), (v4(2382), false)])
        );
        assert_eq!(
            parse_metrics_urls("https://127.0.0.1:2381,http://127.0.0.1:2382").await,
            Ok(vec![(v4(2381), true), (v4(2382), false)])
        );
        let e = parse_metrics_urls("https://127.0.0.1:2381,http://127.0.0.1:2381")
            .await
            .expect_err("both");
        assert!(e.contains("both as http and as https"), "{e}");
        assert!(parse_metrics_urls("127.0.0.1:2381").await.is_err());
        assert!(
            parse_metrics_urls("http://127.0.0.1").await.is_err(),
            "a port is needed"
        );
    }

    #[test]
    fn plain_metrics_stay_on_loopback_unless_insecure() {
        let at = |ip: [u8; 4]| SocketAddr::from((ip, 2381));
        assert!(plain_metrics_allowed(at([127, 0, 0, 1]), Some(false), "--f").is_ok());
        assert!(plain_metrics_allowed(at([127, 23, 2, 1]), None, "--f").is_ok());
        let e = plain_metrics_allowed(at([10, 0, 0, 1]), Some(false), "--f").expect_err("not loopback");
        assert!(
            e.contains("--f 10.0.0.1:2381") && e.ends_with("(or with --insecure)"),
            "{e}"
        );
        assert!(plain_metrics_allowed(at([0, 0, 0, 0]), Some(true), "--f").is_ok());
        // Where --insecure does not lift it, the message does not offer it.
        let e = plain_metrics_allowed(at([10, 0, 0, 1]), None, "--f").expect_err("not loopback");
        assert!(e.ends_with("loopback addresses only"), "{e}");
    }

    #[test]
    fn the_agent_port_is_as_secure_as_the_api_unless_told() {
        let tls = "https://10.0.0.1:6443,https://10.0.0.2:6443";
        assert_eq!(agent_port_is_tls(false, true, tls), Ok(true));
        assert_eq!(agent_port_is_tls(false, true, "http://a:6443"), Ok(true));
        assert_eq!(agent_port_is_tls(true, false, tls), Ok(false));
        assert_eq!(
            agent_port_is_tls(false, false, "http://a:6443,http://b:6443"),
            Ok(false)
        );
        let e = agent_port_is_tls(false, false, tls).expect_err("TLS API, plain port");
        assert!(e.contains("--tls-cert-file") && e.contains("--insecure"), "{e}");
    }

    /// One container log behind the agent's port.
    struct OneLog(std::path::PathBuf, tokio::sync::watch::Receiver<bool>);

    impl capstan_agents::node::logs::PodLogs for OneLog {
        fn containers(&self, _: &str, name: &str) -> Option<Vec<capstan_agents::node::logs::ContainerLog>> {
            (name == "p").then(|| {
                vec![capstan_agents::node::logs::ContainerLog {
                    name: "c".into(),
                    init: false,
                    current: self.0.clone(),
                    previous: None,
                    running: self.1.clone(),
                }]
            })
        }
    }

    /// The agent's port over TLS as the PKI sets it up, asked as the API server asks it,
    /// and by others: certificates the cluster CA made, on a loopback port.
    #[test]
    fn the_agent_port_reads_logs_to_the_api_server_only() {
        use capstan_apiserver::tls::KubeletClientTls;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = certs::Ca::load_or_create(dir.path()).expect("CA");
        let other_dir = tempfile::tempdir().expect("temp dir");
        let other_ca = certs::Ca::load_or_create(other_dir.path()).expect("another CA");
        let log = dir.path().join("current.log");
        std::fs::write(&log, "hello from c\n").expect("write the log");
        let (_running, running) = tokio::sync::watch::channel(false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (chain, key) = ca
                .agent_serving("n1", &certs::agent_hosts("n1", &["127.0.0.1".into()]))
                .expect("serving certificate");
            let serving = port_tls(chain.as_bytes(), key.as_bytes(), ca.pem.as_bytes()).expect("TLS");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("address");
            let router = capstan_agents::node::logs::router(std::sync::Arc::new(OneLog(log, running)));
            let policy = capstan_agents::serving::Policy::Kubelet;
            tokio::spawn(capstan_agents::serving::serve(
                listener,
                router,
                Some(serving),
                policy,
                "test",
            ));
            // The client side: a kubelet client TLS for `user` in `group`, from `ca`.
            let client = |ca: &certs::Ca, user: &str, group: Option<&str>, agents_ca: Option<&str>| {
                let (cert, key) = ca.client(user, group).expect("client certificate");
                KubeletClientTls::from_pem(cert.as_bytes(), key.as_bytes(), agents_ca.map(str::as_bytes))
                    .expect("client TLS")
            };
            let ask = |config: std::sync::Arc<rustls::ClientConfig>| async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                let mut tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| e.to_string())?;
                tls.write_all(b"GET /containerLogs/ns/p/c HTTP/1.1\r\nHost: n1\r\nConnection: close\r\n\r\n")
                    .await
                    .map_err(|e| e.to_string())?;
                let mut answer = Vec::new();
                let read = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut answer)).await;
                read.map_err(|_| "no answer in time".to_string())?
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(String::from_utf8_lossy(&answer).into_owned())
            };
            let apiserver = client(&ca, certs::KUBELET_CLIENT_USER, Some("system:masters"), Some(&ca.pem));
            let answer = ask(apiserver.config(false)).await.expect("the API server is answered");
            assert!(
                answer.starts_with("HTTP/1.1 200") && answer.contains("hello from c\n"),
                "{answer}"
            );
            let alice = client(&ca, "alice", Some("devs"), None);
            let answer = ask(alice.config(false)).await.expect("alice is answered");
            assert!(
                answer.starts_with("HTTP/1.1 403")
                    && answer.ends_with("Forbidden (user=alice, verb=get, resource=nodes, subresource=proxy)"),
                "{answer}"
            );
            // No certificate: 401.
            #[allow(deprecated)]
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
                roots.add(c.expect("the CA")).expect("add the CA");
            }
            let mut anonymous = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            anonymous.alpn_protocols = vec![b"http/1.1".to_vec()];
            let answer = ask(std::sync::Arc::new(anonymous)).await.expect("answered");
            assert!(
                answer.starts_with("HTTP/1.1 401") && answer.ends_with("Unauthorized"),
                "{answer}"
            );
            // Another CA's certificate, even in system:masters, fails the handshake.
            let stranger = client(&other_ca, "mallory", Some("system:masters"), None);
            let refused = ask(stranger.config(false)).await;
            assert!(refused.as_ref().map_or(true, |a| a.is_empty()), "{refused:?}");
            // The API server's side: an agent of another CA is refused when verifying,
            // taken when not (no CA, or insecureSkipTLSVerifyBackend).
            let wary = client(
                &ca,
                certs::KUBELET_CLIENT_USER,
                Some("system:masters"),
                Some(&other_ca.pem),
            );
            let refused = ask(wary.config(false))
                .await
                .expect_err("an agent the CA did not certify");
            assert!(refused.contains("certificate"), "{refused}");
            let answer = ask(wary.config(true)).await.expect("skipping verification");
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        });
    }
}
