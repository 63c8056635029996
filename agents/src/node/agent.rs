//! The node agent's main loop (`capstan agent`): registers the node, heartbeats, follows
//! the node's pod assignments and keeps one [`Worker`] per pod.
//!
//! - **Assignments** come over the mesh API's `NodeAssignments` stream: a snapshot of the
//!   node's pods, then changes, resumable from the last `resource_version` (a position
//!   the watch cache no longer has gives `OUT_OF_RANGE`, and the agent starts again with
//!   a snapshot). When a snapshot ends, every worker whose pod was not in it stops its
//!   pod (it was deleted while the stream was down), and containers the runtime adopted
//!   for pods that are gone are stopped and their files removed.
//! - **Status reports** go over the mesh API's `ReportPodStatus`.
//! - **The API unreachable**: the stream is retried with back-off (200 ms doubling to
//!   7 s); workers and their containers go on as they were, status reports wait and
//!   retry. Nothing is stopped for want of the API.
//! - **Agent restarts**: the runtime adopts the containers that outlived the previous
//!   agent before the first snapshot, and each pod's worker takes its own back.
//! - **Pod addresses** come from the node's `spec.podCIDR` (set by the controller
//!   manager's node IPAM, and waited for with a watch of the Node), or from
//!   `--pod-cidr`. Until the agent has one the node is not Ready (see
//!   [`registration`]), and no pod worker runs.
//!
//! - **The runtime** ([`Config::runtime`]): the process runtime, or the simulated one
//!   (hollow nodes, see [`super::simulated`]): a simulated node is labelled
//!   `capstan.io/simulated=true`, reports `capstan-simulated://…` as its container
//!   runtime, and has no log rotation task.
//!
//! # Hollow nodes: many in one process
//!
//! [`run_hollow`] runs up to [`HOLLOW_NODES_MAX`] simulated nodes in one process, for
//! scale tests. Each is a whole agent as above (its own registration, heartbeat,
//! assignment stream, data directory), and what can be shared is: one `kube::Client`
//! (one HTTP/1.1 connection pool), one mesh API connection per
//! [`HOLLOW_NODES_PER_CONNECTION`] nodes (the API server allows 200 concurrent HTTP/2
//! streams per connection, hyper's default; each node keeps one open for its
//! assignments), and one log port for all of them (`kubectl logs` reaches every hollow
//! node at the same address and port, and the port finds the pod among the nodes).
//!
//! **Metrics**: [`run_with_metrics`] and [`run_hollow_with_metrics`] take a
//! [`NodeMetrics`] that the pod workers record in (see [`super::pods`]); hollow nodes of
//! one process share it.
//!
//! Left out: static pods, the node's own status about images and volumes, eviction.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_proto::mesh::assignment::Type as AssignmentType;
use capstan_proto::mesh::mesh_client::MeshClient;
use capstan_proto::mesh::{NodeAssignmentsRequest, PodStatusReport};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::logs::{self, ContainerLog, PodLogs};
use super::pods::{self, Context, IpPool, StatusSink, Worker};
use super::process::{LogLimits, ProcessRuntime};
use super::registration::{self, Heartbeat, NodeIdentity};
use super::runtime::{self, Runtime, RuntimeKind};
use super::simulated::SimulatedRuntime;
use super::usage::Usage;
use crate::metrics::NodeMetrics;
use crate::nodeipam::Cidr;
use crate::serving::{serve, Policy, ServingTls};
use crate::{AgentError, Result};

/// Retries of the assignment stream and of registration: first and longest pause.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(7);
/// How often the containers' logs are checked for rotation.
const LOG_ROTATION_INTERVAL: Duration = Duration::from_secs(10);
/// How often the agent says it is still waiting for its `podCIDR`.
const POD_CIDR_WAIT_WARN: Duration = Duration::from_secs(10);
/// Uids of pods the agent has finished with, remembered so that a late assignment of
/// one does not start it again; forgotten beyond this many.
const DONE_UIDS_MAX: usize = 10_000;
/// The grace period of an adopted container whose pod is gone.
const ORPHAN_GRACE: Duration = Duration::from_secs(10);
/// The most hollow nodes one process runs ([`run_hollow`]). Each renews its Lease every
/// 10 s and checks its status as often, and holds an assignment stream and a few tasks:
/// at 1,000 that is 100 Lease writes a second from one process, and on the 2 cores
/// Capstan targets, more nodes would measure this process rather than the control plane;
/// run several processes for more.
pub const HOLLOW_NODES_MAX: usize = 1_000;
/// Hollow nodes whose mesh API calls share one HTTP/2 connection. The API server allows
/// 200 concurrent streams on a connection (hyper's default; see the apiserver's `mesh`
/// module): each node keeps one open for its assignments, and 50 nodes leave 150 for
/// their status reports in flight (a report beyond that waits for a stream, it does not
/// fail).
pub const HOLLOW_NODES_PER_CONNECTION: usize = 50;

/// How to run one node agent.
pub struct Config {
    pub identity: NodeIdentity,
    pub heartbeat: Heartbeat,
    /// Everything the agent keeps: `containers/` (the runtime's) and `pods/`.
    pub data_dir: PathBuf,
    /// The pods' addresses, if not the node's `spec.podCIDR`.
    pub pod_cidr: Option<Cidr>,
    pub log_limits: LogLimits,
    /// The crash back-off's first delay and cap.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Where the agent's HTTP port (container logs, for the API's `pods/log`) listens;
    /// its port should be `identity.agent_port`.
    pub listener: Option<tokio::net::TcpListener>,
    /// The program containers with mounts start through (`capstan`, for its
    /// `container-init`); without it containers get no mounts.
    pub init_program: Option<PathBuf>,
    /// Cluster DNS for the pods' resolv.conf.
    pub dns: Option<pods::Dns>,
    /// The container runtime: processes, or simulated containers (a hollow node).
    pub runtime: RuntimeKind,
    /// How often the containers' CPU and memory are sampled for `/stats/summary` (see
    /// [`super::usage`]); [`super::usage::USAGE_INTERVAL_DEFAULT`] unless a test wants it sooner.
    /// Not sampled without a `listener` to serve them on.
    pub usage_interval: Duration,
    /// A registry served at `GET /metrics` on the agent's port (where the kubelet serves
    /// its own), under the port's TLS: `system:masters` and `system:monitoring` read it.
    pub port_metrics: Option<Arc<prometheus_client::registry::Registry>>,
}

/// Status reports over the mesh API.
struct MeshStatus(MeshClient<Channel>);

impl StatusSink for MeshStatus {
    fn report(
        &self,
        namespace: String,
        name: String,
        status: serde_json::Value,
    ) -> futures::future::BoxFuture<'static, std::result::Result<bool, String>> {
        let mut client = self.0.clone();
        Box::pin(async move {
            let status = serde_json::to_vec(&status).map_err(|e| e.to_string())?.into();
            let report = PodStatusReport {
                namespace,
                name,
                status,
                resource_version: String::new(),
            };
            match client.report_pod_status(report).await {
                Ok(_) => Ok(true),
                Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
                Err(s) => Err(format!("{}: {}", s.code(), s.message())),
            }
        })
    }
}

/// The running agent: what `run` built, for the log server and tests.
pub struct Agent {
    pub context: Arc<Context>,
}

/// Registers the node and runs its pods until the future is dropped. `client` reaches the
/// Kubernetes API over REST, `mesh` the same server's mesh API. The agent's port, if
/// `config` has a listener, is plain HTTP (see [`run_with_metrics`]).
pub async fn run(
    client: Client,
    mesh: MeshClient<Channel>,
    config: Config,
    started: impl FnOnce(&Agent),
) -> Result<()> {
    run_with_metrics(client, mesh, config, None, None, started).await
}

/// [`run`] with the agent's port over TLS with `tls` (client certificates of the cluster
/// CA, logs for `system:masters` only: see [`crate::serving`]), and the pods recorded in `metrics`
/// (see [`crate::metrics`]); None for either: plain HTTP, nothing recorded.
pub async fn run_with_metrics(
    client: Client,
    mesh: MeshClient<Channel>,
    config: Config,
    tls: Option<ServingTls>,
    metrics: Option<NodeMetrics>,
    started: impl FnOnce(&Agent),
) -> Result<()> {
    // Absolute: paths under it are handed to containers (mount sources, working dirs).
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| AgentError::Io(format!("creating {}", config.data_dir.display()), e))?;
    let data_dir = std::fs::canonicalize(&config.data_dir)
        .map_err(|e| AgentError::Io(format!("resolving {}", config.data_dir.display()), e))?;
    let mut config = config;
    let (runtime, mounts) = match config.runtime {
        RuntimeKind::Process => {
            let mut runtime = ProcessRuntime::new(data_dir.join("containers"), config.log_limits)?;
            // Mount namespaces need root (CAP_SYS_ADMIN); without it volumeMounts fail clearly.
            let mounts = config.init_program.is_some() && rustix::process::geteuid().is_root();
            if let Some(program) = config.init_program.clone().filter(|_| mounts) {
                runtime = runtime.with_init_program(program);
            } else {
                tracing::warn!(
                    "containers get no mounts (volumeMounts, resolv.conf, hosts): the agent needs root and an init program"
                );
            }
            (Runtime::Process(runtime), mounts)
        }
        RuntimeKind::Simulated => {
            // Users see which nodes run nothing; registration reports the runtime by it.
            config
                .identity
                .labels
                .insert(registration::SIMULATED_LABEL.to_owned(), "true".to_owned());
            (
                Runtime::Simulated(SimulatedRuntime::new(data_dir.join("containers"))?),
                false,
            )
        }
    };
    let runtime = Arc::new(runtime);
    let pods_dir = data_dir.join("pods");
    std::fs::create_dir_all(&pods_dir).map_err(|e| AgentError::Io(format!("creating {}", pods_dir.display()), e))?;
    // Before anything else: the containers a previous agent left running.
    let mut adopted: HashMap<String, Vec<runtime::Container>> = HashMap::new();
    for c in runtime.adopt()? {
        adopted.entry(c.pod_uid().to_owned()).or_default().push(c);
    }
    let node = register(&client, &config.identity, config.pod_cidr.is_some()).await;
    // The node is Ready once it has its pod CIDR (see `registration`).
    let known = config.pod_cidr.or_else(|| registration::pod_cidr(&node));
    let (network, network_ready) = watch::channel(known.is_some());
    let heartbeat = tokio::spawn(registration::keep_heartbeating(
        client.clone(),
        config.identity.clone(),
        node,
        config.heartbeat.clone(),
        network_ready,
    ));
    let _heartbeat = AbortOnDrop(heartbeat);
    let cidr = match known {
        Some(c) => c,
        None => wait_for_pod_cidr(&client, &config.identity.name).await,
    };
    network.send_replace(true);
    tracing::info!(node = %config.identity.name, pod_cidr = %cidr, "the node's pods get addresses from its pod CIDR");
    // The adopted containers' pods keep their addresses, reserved before any worker
    // starts: otherwise a new pod's worker, running first, could take an address an
    // adopted container still listens on (found by the chaos Kubernetes workload).
    let mut ips = IpPool::new(cidr);
    for uid in adopted.keys() {
        // None: a pod on the host's network (no address of its own), or an address
        // taken already; its worker sorts that out as on a first start.
        let _ = pods::restore_recorded(&mut ips, uid, &pods_dir.join(uid));
    }
    let context = Arc::new(Context {
        runtime: runtime.clone(),
        client: client.clone(),
        status: Arc::new(MeshStatus(mesh.clone())),
        node_name: config.identity.name.clone(),
        host_ip: config.identity.address,
        pods_dir,
        ips: Mutex::new(ips),
        node_cpu_millis: config.identity.capacity.cpu_millis,
        node_memory_bytes: config.identity.capacity.memory_bytes,
        backoff_initial: config.backoff_initial,
        backoff_max: config.backoff_max,
        dns: config.dns.clone(),
        mounts,
        running: Mutex::new(BTreeMap::new()),
        metrics,
    });
    // Simulated containers write one line each: nothing to rotate, no task per node.
    let rotation = (!runtime.is_simulated()).then(|| {
        let runtime = runtime.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LOG_ROTATION_INTERVAL).await;
                let r = runtime.clone();
                match tokio::task::spawn_blocking(move || r.rotate_logs()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "rotating container logs failed"),
                    Err(e) => tracing::warn!(error = %e, "rotating container logs panicked"),
                }
            }
        })
    });
    let _rotation = rotation.map(AbortOnDrop);
    // Simulated containers have no process to measure: no sampler, and no summary. Nor
    // without a port to serve the summary on.
    let usage = (!runtime.is_simulated() && config.listener.is_some()).then(|| Arc::new(Usage::default()));
    let _sampler = usage.clone().map(|usage| {
        AbortOnDrop(tokio::spawn(sample_usage(
            context.clone(),
            usage,
            config.usage_interval,
        )))
    });
    let _server = config.listener.take().map(|listener| {
        let router = port_router(Arc::new(Logs(context.clone(), usage)), config.port_metrics.clone());
        AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = serve(listener, router, tls, Policy::Kubelet, "the agent's port").await {
                tracing::error!(error = %e, "the agent's HTTP port stopped");
            }
        }))
    });
    started(&Agent {
        context: context.clone(),
    });
    follow_assignments(context, mesh, &config.identity.name, adopted).await;
    Ok(())
}

/// The agent's port: logs and the Summary API, and `/metrics` when given a registry.
fn port_router(
    logs: Arc<dyn logs::PodLogs>,
    metrics: Option<Arc<prometheus_client::registry::Registry>>,
) -> axum::Router {
    let router = logs::router(logs);
    match metrics {
        Some(registry) => router.merge(crate::metrics::router(registry)),
        None => router,
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Samples the containers' usage every `interval` (at least 1 ms), on the blocking pool.
async fn sample_usage(ctx: Arc<Context>, usage: Arc<Usage>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
    // A round that ran late is not made up with a burst: rates use the real wall time.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (ctx, usage) = (ctx.clone(), usage.clone());
        // The round reads its own time, once on the blocking pool (queueing is not counted).
        if let Err(e) = tokio::task::spawn_blocking(move || usage.sample(&ctx)).await {
            tracing::warn!(error = %e, "sampling the containers' usage panicked");
        }
    }
}

/// The log server's view of the pods: their containers' log files and running state,
/// and their usage (none on a simulated node).
struct Logs(Arc<Context>, Option<Arc<Usage>>);

impl PodLogs for Logs {
    fn containers(&self, namespace: &str, name: &str) -> Option<Vec<ContainerLog>> {
        pod_logs(&self.0, namespace, name)
    }

    fn summary(&self) -> Option<serde_json::Value> {
        Some(self.1.as_ref()?.summary(&self.0.node_name))
    }
}

/// The pods of several agents of this process behind one log port (hollow nodes): at
/// most [`HOLLOW_NODES_MAX`] agents, searched in turn (pod names are unique in their
/// namespace, so at most one has the pod).
#[derive(Default)]
struct SharedLogs(Mutex<Vec<Arc<Context>>>);

impl PodLogs for SharedLogs {
    fn containers(&self, namespace: &str, name: &str) -> Option<Vec<ContainerLog>> {
        self.0
            .lock()
            .expect("invariant: no panics while the lock is held")
            .iter()
            .find_map(|ctx| pod_logs(ctx, namespace, name))
    }
}

/// The log files and running state of pod `namespace/name`'s containers on one node.
fn pod_logs(ctx: &Context, namespace: &str, name: &str) -> Option<Vec<ContainerLog>> {
    let runs = ctx
        .running
        .lock()
        .expect("invariant: no panics while the lock is held")
        .get(&(namespace.to_owned(), name.to_owned()))
        .cloned()?;
    let runtime = &ctx.runtime;
    Some(
        runs.containers
            .iter()
            .map(|(container, (init, running))| {
                let previous = runtime.log_path(&runs.uid, container, true);
                ContainerLog {
                    name: container.clone(),
                    init: *init,
                    current: runtime.log_path(&runs.uid, container, false),
                    previous: previous.exists().then_some(previous),
                    running: running.subscribe(),
                }
            })
            .collect(),
    )
}

/// Registers the node, retrying until the API answers.
async fn register(client: &Client, identity: &NodeIdentity, own_pod_cidr: bool) -> Node {
    let mut retry = RETRY_FIRST;
    loop {
        match registration::register(client, identity, own_pod_cidr).await {
            Ok(node) => return node,
            Err(e) => {
                tracing::warn!(node = %identity.name, error = %e, "registering the node failed; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Waits until the node has a `spec.podCIDR` it can use, watching the Node (the node
/// IPAM controller writes it a moment after registration; the node is Ready from then).
async fn wait_for_pod_cidr(client: &Client, node: &str) -> Cidr {
    let nodes: Api<Node> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut warn = tokio::time::interval_at(tokio::time::Instant::now() + POD_CIDR_WAIT_WARN, POD_CIDR_WAIT_WARN);
    let mut unusable: Option<String> = None;
    loop {
        // The watcher retries with back-off by itself; its stream never ends, but if it
        // did, it is started again.
        let mut events = std::pin::pin!(watcher(nodes.clone(), config.clone())
            .default_backoff()
            .applied_objects());
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(n)) => {
                        if let Some(cidr) = registration::pod_cidr(&n) {
                            return cidr;
                        }
                        let text = n.spec.and_then(|s| s.pod_cidr);
                        if text.is_some() && text != unusable {
                            tracing::error!(node, pod_cidr = ?text, "the node's pod CIDR is not usable");
                            unusable = text;
                        }
                    }
                    Some(Err(e)) => tracing::warn!(node, error = %e, "watching the node failed"),
                    None => break,
                },
                _ = warn.tick() => tracing::warn!(
                    node,
                    "still waiting for the node's pod CIDR (is the controller-manager's node IPAM running? --pod-cidr sets one)"
                ),
            }
        }
        tokio::time::sleep(RETRY_FIRST).await;
    }
}

/// One worker's handle: its pod's channel and its task.
struct Handle {
    desired: watch::Sender<Option<Arc<Pod>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Follows the node's assignments, for as long as it runs.
async fn follow_assignments(
    ctx: Arc<Context>,
    mut mesh: MeshClient<Channel>,
    node: &str,
    mut adopted: HashMap<String, Vec<runtime::Container>>,
) {
    let mut workers: HashMap<String, Handle> = HashMap::new();
    let mut done: HashSet<String> = HashSet::new();
    let mut resource_version = String::new();
    let mut retry = RETRY_FIRST;
    loop {
        let request = NodeAssignmentsRequest {
            node_name: node.to_owned(),
            resource_version: resource_version.clone(),
        };
        let mut stream = match mesh.node_assignments(request).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                if s.code() == tonic::Code::OutOfRange {
                    tracing::info!(
                        node,
                        "the assignment position is too old; starting again from a snapshot"
                    );
                    resource_version.clear();
                    continue;
                }
                tracing::warn!(node, code = ?s.code(), message = s.message(), "the assignment stream failed; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        let mut snapshot: Option<HashSet<String>> = resource_version.is_empty().then(HashSet::new);
        loop {
            let message = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    tracing::info!(node, "the assignment stream ended; reconnecting");
                    break;
                }
                Err(s) => {
                    if s.code() == tonic::Code::OutOfRange {
                        resource_version.clear();
                    }
                    tracing::warn!(node, code = ?s.code(), message = s.message(), "the assignment stream failed; reconnecting");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                    break;
                }
            };
            retry = RETRY_FIRST;
            workers.retain(|_, h| !h.task.is_finished());
            match AssignmentType::try_from(message.r#type) {
                Ok(AssignmentType::Upsert) => {
                    let pod: Pod = match serde_json::from_slice(&message.pod) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::error!(node, error = %e, "an assigned pod could not be decoded; skipping it");
                            continue;
                        }
                    };
                    let Some(uid) = pod.metadata.uid.clone() else { continue };
                    if let Some(seen) = snapshot.as_mut() {
                        seen.insert(uid.clone());
                    }
                    if done.contains(&uid) {
                        continue;
                    }
                    let pod = Arc::new(pod);
                    match workers.get(&uid) {
                        Some(h) => {
                            h.desired.send_replace(Some(pod));
                        }
                        None => {
                            let (tx, rx) = watch::channel(Some(pod.clone()));
                            let worker = Worker::new(ctx.clone(), pod, adopted.remove(&uid).unwrap_or_default());
                            let task = tokio::spawn(worker.run(rx));
                            workers.insert(uid.clone(), Handle { desired: tx, task });
                            if done.len() >= DONE_UIDS_MAX {
                                done.clear();
                            }
                        }
                    }
                }
                Ok(AssignmentType::Delete) => {
                    let uid = serde_json::from_slice::<Pod>(&message.pod)
                        .ok()
                        .and_then(|p| p.metadata.uid);
                    if let Some(uid) = uid {
                        if let Some(h) = workers.remove(&uid) {
                            h.desired.send_replace(None);
                            // The task goes on stopping the pod; it is not awaited here.
                        }
                        done.insert(uid);
                    }
                }
                Ok(AssignmentType::SnapshotEnd) => {
                    if let Some(seen) = snapshot.take() {
                        let gone: Vec<String> = workers.keys().filter(|u| !seen.contains(*u)).cloned().collect();
                        for uid in gone {
                            if let Some(h) = workers.remove(&uid) {
                                tracing::info!(node, pod_uid = %uid, "a pod was removed while the stream was down; stopping it");
                                h.desired.send_replace(None);
                            }
                        }
                        stop_orphans(&ctx, std::mem::take(&mut adopted), &seen);
                    }
                }
                Ok(AssignmentType::Bookmark) | Ok(AssignmentType::Unspecified) | Err(_) => {}
            }
            if !message.resource_version.is_empty() {
                resource_version = message.resource_version;
            }
        }
    }
}

/// Stops the adopted containers of pods that are no longer assigned here and removes
/// their files; removes the files of pods with nothing running too.
fn stop_orphans(ctx: &Arc<Context>, adopted: HashMap<String, Vec<runtime::Container>>, assigned: &HashSet<String>) {
    for (uid, containers) in adopted {
        if assigned.contains(&uid) {
            continue;
        }
        let ctx = ctx.clone();
        tokio::spawn(async move {
            for mut c in containers {
                tracing::info!(pod_uid = %uid, container = c.name(), "stopping a container whose pod is gone");
                if let Err(e) = ctx.runtime.stop(&mut c, ORPHAN_GRACE).await {
                    tracing::warn!(pod_uid = %uid, error = %e, "stopping an orphaned container failed");
                }
            }
            remove_pod_files(&ctx, &uid);
        });
    }
    // Pods whose containers all ended while no agent ran, and which are gone.
    for dir in [ctx.pods_dir.clone(), ctx.runtime.root().to_path_buf()] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let uid = entry.file_name().to_string_lossy().into_owned();
            if !assigned.contains(&uid) && is_stale(ctx, &uid) {
                remove_pod_files(ctx, &uid);
            }
        }
    }
}

/// Whether nothing of pod `uid` runs (no worker has it either: the caller checked it is
/// not assigned).
fn is_stale(ctx: &Context, uid: &str) -> bool {
    !ctx.running
        .lock()
        .expect("invariant: no panics while the lock is held")
        .values()
        .any(|r| r.uid == uid)
}

fn remove_pod_files(ctx: &Context, uid: &str) {
    if let Err(e) = ctx.runtime.remove_pod(uid) {
        tracing::warn!(pod_uid = %uid, error = %e, "removing an old pod's container files failed");
    }
    let dir = ctx.pods_dir.join(uid);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "removing an old pod's directory failed"),
    }
}

/// A mesh API client for the API servers at `url` (one URL, or several comma separated,
/// failed over as [`crate::client`] describes; plain HTTP/2), connecting on first use.
/// Must be called within a tokio runtime.
pub fn mesh_client(url: &str) -> Result<MeshClient<Channel>> {
    mesh_client_tls(url, None)
}

/// [`mesh_client`] over TLS with `tls` (for `https://` URLs).
pub fn mesh_client_tls(url: &str, tls: Option<&crate::tls::ClientTls>) -> Result<MeshClient<Channel>> {
    Ok(MeshClient::new(crate::client::mesh_channel_tls(url, tls)?))
}

/// Runs `count` hollow nodes (the simulated runtime) in this process until the future is
/// dropped or one of them fails (its error is returned; the others stop with it). See the
/// module doc.
///
/// `template` describes them all: node `i` is named `<template name>-<i>` (the template's
/// name itself when `count` is 1) and keeps its files in `<template data_dir>/<node name>`;
/// its runtime is the simulated one, whatever the template says, and it has no init
/// program. The template's `listener`, if any, becomes the one log port of all the nodes
/// (each publishes `template.identity.agent_port`, which should be its port); without one,
/// they publish none. A `pod_cidr` is only taken with `count` 1: shared, it would give
/// pods of different nodes the same addresses (leave it to the controller manager's node
/// IPAM). Mesh API connections to `api_url` are made here, one per
/// [`HOLLOW_NODES_PER_CONNECTION`] nodes; `client` is shared by all. `started` is called
/// once per node as it starts (it is `run`'s callback).
pub async fn run_hollow<F>(client: Client, api_url: &str, template: Config, count: usize, started: F) -> Result<()>
where
    F: Fn(&Agent) + Send + Sync + 'static,
{
    run_hollow_with_metrics(client, api_url, None, None, None, template, count, started).await
}

/// [`run_hollow`] with the mesh connections over TLS with `tls` (for `https://` URLs), the
/// shared log port over TLS with `serving` (as [`run_with_metrics`]'s), and every node's
/// pods recorded in `metrics` (one set for all the nodes: their pods and containers add
/// up).
#[allow(clippy::too_many_arguments)] // run_hollow's, TLS on both sides, and the metrics
pub async fn run_hollow_with_metrics<F>(
    client: Client,
    api_url: &str,
    tls: Option<&crate::tls::ClientTls>,
    serving: Option<ServingTls>,
    metrics: Option<NodeMetrics>,
    template: Config,
    count: usize,
    started: F,
) -> Result<()>
where
    F: Fn(&Agent) + Send + Sync + 'static,
{
    if count == 0 || count > HOLLOW_NODES_MAX {
        return Err(AgentError::Config(format!(
            "hollow nodes per process: 1 to {HOLLOW_NODES_MAX}, not {count}"
        )));
    }
    if count > 1 && template.pod_cidr.is_some() {
        return Err(AgentError::Config(
            "one pod CIDR for several hollow nodes would give their pods the same addresses; leave it to node IPAM"
                .into(),
        ));
    }
    let shared = Arc::new(SharedLogs::default());
    let agent_port = if template.listener.is_some() {
        template.identity.agent_port
    } else {
        0
    };
    let port_metrics = template.port_metrics.clone();
    let _server = template.listener.map(|listener| {
        let router = port_router(shared.clone(), port_metrics);
        AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = serve(listener, router, serving, Policy::Kubelet, "the hollow nodes' port").await {
                tracing::error!(error = %e, "the hollow nodes' HTTP port stopped");
            }
        }))
    });
    let connections = (0..count.div_ceil(HOLLOW_NODES_PER_CONNECTION))
        .map(|_| mesh_client_tls(api_url, tls))
        .collect::<Result<Vec<_>>>()?;
    let started = Arc::new(started);
    let mut nodes = tokio::task::JoinSet::new();
    for i in 0..count {
        let name = if count == 1 {
            template.identity.name.clone()
        } else {
            format!("{}-{i}", template.identity.name)
        };
        let config = Config {
            identity: NodeIdentity {
                name: name.clone(),
                agent_port,
                ..template.identity.clone()
            },
            heartbeat: template.heartbeat.clone(),
            data_dir: template.data_dir.join(&name),
            pod_cidr: template.pod_cidr,
            log_limits: template.log_limits,
            backoff_initial: template.backoff_initial,
            backoff_max: template.backoff_max,
            listener: None,
            init_program: None,
            dns: template.dns.clone(),
            runtime: RuntimeKind::Simulated,
            usage_interval: template.usage_interval,
            // The shared port above serves it.
            port_metrics: None,
        };
        let mesh = connections[i / HOLLOW_NODES_PER_CONNECTION].clone();
        let (client, shared, started) = (client.clone(), shared.clone(), started.clone());
        let metrics = metrics.clone();
        nodes.spawn(async move {
            let result = run_with_metrics(client, mesh, config, None, metrics, move |agent| {
                shared
                    .0
                    .lock()
                    .expect("invariant: no panics while the lock is held")
                    .push(agent.context.clone());
                started(agent);
            })
            .await;
            (name, result)
        });
    }
    while let Some(joined) = nodes.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(e))) => {
                tracing::error!(node = %name, error = %e, "a hollow node stopped; stopping them all");
                return Err(e);
            }
            Err(e) => {
                return Err(AgentError::Config(format!("a hollow node's task ended: {e}")));
            }
        }
    }
    Ok(())
}
