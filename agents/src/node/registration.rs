//! The node agent's first duty: its Node object and its heartbeats.
//!
//! As the kubelet does:
//!
//! - **Registration.** On start the agent creates its Node: the well-known labels
//!   (`kubernetes.io/hostname`, `kubernetes.io/os`, `kubernetes.io/arch`) and any given
//!   ones, the given taints, and a status with capacity and allocatable (cpu, memory,
//!   pods), addresses (`InternalIP`, `Hostname`), `nodeInfo` and the four conditions. If
//!   the Node exists (an agent restart, or one created by hand), its labels and taints
//!   are completed with the agent's and its status is posted; what others set (a
//!   `podCIDR`, other labels, `spec.unschedulable`) stays.
//! - **The Lease** `kube-node-lease/<node>` (holder the node's name, 40 s, owned by the
//!   Node so it goes with it) is renewed every [`Heartbeat::lease_renew_interval`]
//!   (10 s, a quarter of its duration). A failed renewal is retried after 200 ms,
//!   doubling up to 7 s, as the kubelet's lease controller does. This is what the node
//!   lifecycle controller watches.
//! - **Status.** The conditions are computed every
//!   [`Heartbeat::status_check_interval`] (10 s) and posted when one changed or
//!   [`Heartbeat::status_report_interval`] (5 min) passed since the last post; a post
//!   reads the Node and replaces its status with the read resourceVersion as
//!   precondition, retried on conflict at most [`STATUS_UPDATE_TRIES`] times (the
//!   kubelet's `nodeStatusUpdateRetry`). A condition's `lastTransitionTime` moves only
//!   when its status does.
//!
//! Conditions: `Ready` is `True` once the agent can give its pods addresses: it has a pod
//! CIDR (its own `--pod-cidr`, or the Node's `spec.podCIDR` from the node IPAM
//! controller). Until then it is `False` with reason `KubeletNotReady` and the message
//! the kubelet gives while its network plugin is not ready ([`NETWORK_NOT_READY`]), so
//! that the node lifecycle controller taints the node `not-ready` and nothing waits on
//! it; the agent posts the change as soon as it has its CIDR, not at the next check
//! ([`keep_heartbeating`]'s `network`). A Node that has a CIDR already (an agent
//! restart) registers ready. `MemoryPressure`,
//! `DiskPressure` and `PIDPressure` are `False` with the kubelet's reasons. The agent
//! does not evict pods, so it never reports pressure; the conditions are there because
//! clients and the scheduler read them.
//!
//! The agent's own HTTP port (the kubelet's 10250 role: `kubectl logs` goes there through
//! the API server, see [`super::logs`]) is published as `daemonEndpoints.kubeletEndpoint`
//! when [`NodeIdentity::agent_port`] is set.
//!
//! Left out: node status images and volumes, extended resources, and the kubelet's node
//! status `ephemeral-storage`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;

use crate::error::{AgentError, Result};
use crate::nodeipam::Cidr;

/// The namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// A node Lease's duration, as the kubelet's default `nodeLeaseDurationSeconds`.
pub const LEASE_DURATION_S: i32 = 40;
/// Status posts tried per report (a read and a replace each) before giving up until the
/// next check.
pub const STATUS_UPDATE_TRIES: usize = 5;
/// Bounds of the retry delay after a failed Lease renewal.
const LEASE_RETRY_FIRST: Duration = Duration::from_millis(200);
const LEASE_RETRY_MAX: Duration = Duration::from_secs(7);
/// What the runtime reports itself as in `nodeInfo.containerRuntimeVersion`.
pub const RUNTIME_VERSION: &str = concat!("capstan-process://", env!("CARGO_PKG_VERSION"));
/// The same for a hollow node (the simulated runtime, see [`super::simulated`]).
pub const SIMULATED_RUNTIME_VERSION: &str = concat!("capstan-simulated://", env!("CARGO_PKG_VERSION"));
/// The label that marks a hollow node (value `true`), so users see which nodes run
/// nothing. The agent adds it to its identity's labels; a node carrying it reports
/// [`SIMULATED_RUNTIME_VERSION`].
pub const SIMULATED_LABEL: &str = "capstan.io/simulated";
/// The `Ready=False` message while the node has no pod CIDR: the kubelet's form for a
/// network plugin that is not ready.
pub const NETWORK_NOT_READY: &str =
    "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:the node has no pod CIDR yet (spec.podCIDR)";
/// `nodeInfo.kubeletVersion`: the version the API server reports.
pub const AGENT_VERSION: &str = "v1.32.0-capstan";

/// What the node offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pods: u32,
}

impl Capacity {
    /// This machine's: its CPUs (as the scheduler counts them), its memory from
    /// `/proc/meminfo` (`MemTotal`), and the kubelet's default of 110 pods.
    pub fn of_this_machine() -> Result<Capacity> {
        let cpus = std::thread::available_parallelism()
            .map_err(|e| AgentError::Io("counting CPUs".into(), e))?
            .get() as u64;
        let meminfo =
            std::fs::read_to_string("/proc/meminfo").map_err(|e| AgentError::Io("reading /proc/meminfo".into(), e))?;
        let memory_bytes = parse_mem_total(&meminfo)
            .ok_or_else(|| AgentError::Config("/proc/meminfo has no MemTotal line in kB".into()))?;
        Ok(Capacity {
            cpu_millis: cpus * 1000,
            memory_bytes,
            pods: 110,
        })
    }

    fn quantities(&self) -> BTreeMap<String, Quantity> {
        let cpu = if self.cpu_millis.is_multiple_of(1000) {
            (self.cpu_millis / 1000).to_string()
        } else {
            format!("{}m", self.cpu_millis)
        };
        let memory = if self.memory_bytes.is_multiple_of(1024) {
            format!("{}Ki", self.memory_bytes / 1024)
        } else {
            self.memory_bytes.to_string()
        };
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu)),
            ("memory".to_owned(), Quantity(memory)),
            ("pods".to_owned(), Quantity(self.pods.to_string())),
        ])
    }
}

/// `MemTotal:  16384 kB` → bytes.
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kib.checked_mul(1024)?)
}

/// Who the node is.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub name: String,
    /// Its `InternalIP`: where its pods' traffic and the API reach it.
    pub address: IpAddr,
    /// Labels besides the well-known ones (`--node-labels`).
    pub labels: BTreeMap<String, String>,
    /// Taints the node registers with (`--register-with-taints`).
    pub taints: Vec<Taint>,
    pub capacity: Capacity,
    /// The port of the agent's HTTP server (logs), published as
    /// `status.daemonEndpoints.kubeletEndpoint.Port`; 0: none (nothing is published).
    pub agent_port: u16,
}

/// How often the agent heartbeats.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub lease_renew_interval: Duration,
    pub status_check_interval: Duration,
    pub status_report_interval: Duration,
}

impl Default for Heartbeat {
    /// The kubelet's: Lease renewed every 10 s, status checked every 10 s
    /// (`nodeStatusUpdateFrequency`) and posted at least every 5 min
    /// (`nodeStatusReportFrequency`).
    fn default() -> Self {
        Heartbeat {
            lease_renew_interval: Duration::from_secs(10),
            status_check_interval: Duration::from_secs(10),
            status_report_interval: Duration::from_secs(300),
        }
    }
}

/// `kubernetes.io/arch` for this build: Go's names, as the kubelet reports them.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `PRETTY_NAME` from /etc/os-release, as the kubelet reports `osImage`.
fn os_image() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".to_owned())
}

fn node_info(identity: &NodeIdentity) -> NodeSystemInfo {
    let simulated = identity.labels.get(SIMULATED_LABEL).is_some_and(|v| v == "true");
    NodeSystemInfo {
        architecture: go_arch().to_owned(),
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        container_runtime_version: if simulated {
            SIMULATED_RUNTIME_VERSION
        } else {
            RUNTIME_VERSION
        }
        .to_owned(),
        kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
        kube_proxy_version: AGENT_VERSION.to_owned(),
        kubelet_version: AGENT_VERSION.to_owned(),
        machine_id: read_trimmed("/etc/machine-id"),
        operating_system: std::env::consts::OS.to_owned(),
        os_image: os_image(),
        system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid"),
        ..Default::default()
    }
}

/// The labels the agent sets: the well-known ones, then the given ones.
fn labels(identity: &NodeIdentity) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), identity.name.clone()),
        ("kubernetes.io/os".to_owned(), std::env::consts::OS.to_owned()),
        ("kubernetes.io/arch".to_owned(), go_arch().to_owned()),
    ]);
    labels.extend(identity.labels.clone());
    labels
}

/// The node's pod CIDR, if it has a usable one.
pub fn pod_cidr(node: &Node) -> Option<Cidr> {
    node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()
}

/// The conditions as the agent sees them now (type, status, reason, message);
/// `network_ready`: it has a pod CIDR.
fn current_conditions(network_ready: bool) -> [(&'static str, &'static str, &'static str, &'static str); 4] {
    let ready = if network_ready {
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status")
    } else {
        ("Ready", "False", "KubeletNotReady", NETWORK_NOT_READY)
    };
    [
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        ready,
    ]
}

/// `old` with the agent's conditions, capacity, addresses and info as of `now`; whether
/// a condition's status, reason or message changed.
fn status_now(
    old: Option<&NodeStatus>,
    identity: &NodeIdentity,
    network_ready: bool,
    now: Timestamp,
) -> (NodeStatus, bool) {
    let mut status = old.cloned().unwrap_or_default();
    let previous = status.conditions.take().unwrap_or_default();
    let mut changed = false;
    let mut conditions = Vec::with_capacity(4);
    let current = current_conditions(network_ready);
    for (type_, value, reason, message) in current {
        let before = previous.iter().find(|c| c.type_ == type_);
        let transition = match before {
            Some(b) if b.status == value => b.last_transition_time.clone(),
            _ => Some(Time(now)),
        };
        if before.is_none_or(|b| {
            b.status != value || b.reason.as_deref() != Some(reason) || b.message.as_deref() != Some(message)
        }) {
            changed = true;
        }
        conditions.push(NodeCondition {
            type_: type_.to_owned(),
            status: value.to_owned(),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: transition,
        });
    }
    // Conditions others added (NetworkUnavailable, say) stay as they are.
    conditions.extend(
        previous
            .into_iter()
            .filter(|c| !current.iter().any(|(t, ..)| *t == c.type_)),
    );
    status.conditions = Some(conditions);
    let quantities = identity.capacity.quantities();
    status.capacity = Some(quantities.clone());
    status.allocatable = Some(quantities);
    status.addresses = Some(vec![
        NodeAddress {
            type_: "InternalIP".to_owned(),
            address: identity.address.to_string(),
        },
        NodeAddress {
            type_: "Hostname".to_owned(),
            address: identity.name.clone(),
        },
    ]);
    status.node_info = Some(node_info(identity));
    // Without a port the field is left as it was: another agent version, or someone,
    // may have set it, and an empty endpoint would tell the API server nothing.
    if identity.agent_port != 0 {
        status.daemon_endpoints = Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(identity.agent_port),
            }),
        });
    }
    (status, changed)
}

/// The Node as the agent registers it.
fn new_node(identity: &NodeIdentity, network_ready: bool, now: Timestamp) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(identity.name.clone()),
            labels: Some(labels(identity)),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!identity.taints.is_empty()).then(|| identity.taints.clone()),
            ..Default::default()
        }),
        status: Some(status_now(None, identity, network_ready, now).0),
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Creates the node's Node, or completes an existing one's labels and taints with the
/// agent's; then posts its status. Returns the Node as it then is. `own_pod_cidr`: the
/// agent has a pod CIDR of its own (`--pod-cidr`); otherwise the node is ready only if
/// the Node has one.
pub async fn register(client: &Client, identity: &NodeIdentity, own_pod_cidr: bool) -> Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes
        .create(
            &PostParams::default(),
            &new_node(identity, own_pod_cidr, Timestamp::now()),
        )
        .await
    {
        Ok(node) => {
            tracing::info!(node = %identity.name, "registered the node");
            // Posted again through the status subresource, as every later post is; if
            // that fails the heartbeat posts it at its first check.
            return match post_status(&nodes, identity, own_pod_cidr, Some(node.clone())).await {
                Ok((node, _)) => Ok(node),
                Err(e) => {
                    tracing::warn!(node = %identity.name, error = %e, "posting the first node status failed");
                    Ok(node)
                }
            };
        }
        Err(e) if is_status(&e, 409) => {}
        Err(e) => return Err(e.into()),
    }
    for _ in 0..STATUS_UPDATE_TRIES {
        let mut node = nodes.get(&identity.name).await?;
        let mut changed = false;
        let have = node.metadata.labels.get_or_insert_with(BTreeMap::new);
        for (k, v) in labels(identity) {
            if have.get(&k) != Some(&v) {
                have.insert(k, v);
                changed = true;
            }
        }
        let spec = node.spec.get_or_insert_with(NodeSpec::default);
        let taints = spec.taints.get_or_insert_with(Vec::new);
        for t in &identity.taints {
            if !taints.iter().any(|have| have.key == t.key && have.effect == t.effect) {
                taints.push(t.clone());
                changed = true;
            }
        }
        if changed {
            node = match nodes.replace(&identity.name, &PostParams::default(), &node).await {
                Ok(written) => written,
                Err(e) if is_status(&e, 409) => continue,
                Err(e) => return Err(e.into()),
            };
        }
        tracing::info!(node = %identity.name, "the node was registered before; took it over");
        let network_ready = own_pod_cidr || pod_cidr(&node).is_some();
        return post_status(&nodes, identity, network_ready, Some(node))
            .await
            .map(|(node, _)| node);
    }
    Err(AgentError::Config(format!(
        "node {}: its labels could not be updated in {STATUS_UPDATE_TRIES} tries (conflicts)",
        identity.name
    )))
}

/// Replaces the Node's status with the agent's, starting from `read` (the Node as just
/// read, if the caller has it) and reading it again after each conflict. Returns the
/// Node written and whether a condition changed.
async fn post_status(
    nodes: &Api<Node>,
    identity: &NodeIdentity,
    network_ready: bool,
    mut read: Option<Node>,
) -> Result<(Node, bool)> {
    let mut last = None;
    for _ in 0..STATUS_UPDATE_TRIES {
        let mut node = match read.take() {
            Some(node) => node,
            None => nodes.get(&identity.name).await?,
        };
        let (status, changed) = status_now(node.status.as_ref(), identity, network_ready, Timestamp::now());
        node.status = Some(status);
        match nodes
            .replace_status(&identity.name, &PostParams::default(), &node)
            .await
        {
            Ok(node) => return Ok((node, changed)),
            Err(e) if is_status(&e, 409) => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last
        .map(AgentError::from)
        .unwrap_or_else(|| AgentError::Config("no status update was tried".into())))
}

/// Creates or renews the node's Lease; returns the Lease written.
pub async fn renew_lease(client: &Client, node: &Node) -> Result<Lease> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let spec = LeaseSpec {
        holder_identity: Some(name.clone()),
        lease_duration_seconds: Some(LEASE_DURATION_S),
        renew_time: Some(MicroTime(Timestamp::now())),
        ..Default::default()
    };
    match leases.get_opt(&name).await? {
        Some(mut lease) => {
            lease.spec = Some(spec);
            Ok(leases.replace(&name, &PostParams::default(), &lease).await?)
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(LEASE_NAMESPACE.to_owned()),
                    // As the kubelet: the Lease goes when its Node does.
                    owner_references: node.metadata.uid.clone().map(|uid| {
                        vec![OwnerReference {
                            api_version: "v1".to_owned(),
                            kind: "Node".to_owned(),
                            name: name.clone(),
                            uid,
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            Ok(leases.create(&PostParams::default(), &lease).await?)
        }
    }
}

/// Renews the Lease and posts the status for as long as it runs (until dropped).
/// `network`: whether the agent has its pod CIDR; a change is checked and posted at once.
/// If its sender goes, the last value holds.
pub async fn keep_heartbeating(
    client: Client,
    identity: NodeIdentity,
    node: Node,
    timing: Heartbeat,
    mut network: watch::Receiver<bool>,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let lease = async {
        let mut retry = LEASE_RETRY_FIRST;
        loop {
            match renew_lease(&client, &node).await {
                Ok(_) => {
                    retry = LEASE_RETRY_FIRST;
                    tokio::time::sleep(timing.lease_renew_interval).await;
                }
                Err(e) => {
                    tracing::warn!(node = %identity.name, error = %e, retry_ms = retry.as_millis() as u64, "renewing the node lease failed");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(LEASE_RETRY_MAX);
                }
            }
        }
    };
    let status = async {
        let mut last_post = tokio::time::Instant::now();
        let mut network_open = true;
        loop {
            tokio::select! {
                () = tokio::time::sleep(timing.status_check_interval) => {}
                changed = network.changed(), if network_open => network_open = changed.is_ok(),
            }
            let network_ready = *network.borrow_and_update();
            let due = last_post.elapsed() >= timing.status_report_interval;
            let current = match nodes.get(&identity.name).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(node = %identity.name, error = %e, "reading the node failed");
                    continue;
                }
            };
            let (_, changed) = status_now(current.status.as_ref(), &identity, network_ready, Timestamp::now());
            if !(due || changed) {
                continue;
            }
            match post_status(&nodes, &identity, network_ready, Some(current)).await {
                Ok(_) => last_post = tokio::time::Instant::now(),
                Err(e) => tracing::warn!(node = %identity.name, error = %e, "posting the node status failed"),
            }
        }
    };
    tokio::join!(lease, status);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> NodeIdentity {
        NodeIdentity {
            name: "n1".into(),
            address: "127.0.0.1".parse().expect("ip"),
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            taints: Vec::new(),
            capacity: Capacity {
                cpu_millis: 2000,
                memory_bytes: 4 << 30,
                pods: 110,
            },
            agent_port: 10250,
        }
    }

    #[test]
    fn mem_total_is_read_in_bytes() {
        assert_eq!(
            parse_mem_total("MemTotal:       24567892 kB\nMemFree: 1 kB\n"),
            Some(24567892 * 1024)
        );
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: 12 MB\n"), None);
    }

    #[test]
    fn capacity_reads_as_the_kubelet_writes_it() {
        let q = identity().capacity.quantities();
        assert_eq!(q["cpu"].0, "2");
        assert_eq!(q["memory"].0, "4194304Ki");
        assert_eq!(q["pods"].0, "110");
        let odd = Capacity {
            cpu_millis: 1500,
            memory_bytes: 1000,
            pods: 1,
        };
        assert_eq!(odd.quantities()["cpu"].0, "1500m");
        assert_eq!(odd.quantities()["memory"].0, "1000");
    }

    #[test]
    fn a_transition_time_moves_only_when_the_status_does() {
        let t0 = Timestamp::from_second(1_000).expect("time");
        let t1 = Timestamp::from_second(2_000).expect("time");
        let (first, changed) = status_now(None, &identity(), true, t0);
        assert!(changed, "new conditions are a change");
        let (second, changed) = status_now(Some(&first), &identity(), true, t1);
        assert!(!changed, "the same conditions again are no change");
        let ready = |s: &NodeStatus| {
            s.conditions
                .as_ref()
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready").cloned())
                .expect("Ready")
        };
        assert_eq!(ready(&second).last_transition_time, Some(Time(t0)));
        assert_eq!(ready(&second).last_heartbeat_time, Some(Time(t1)));
        // Ready=False before (the node lifecycle controller's Unknown, say) → a transition.
        let mut unknown = second.clone();
        for c in unknown.conditions.iter_mut().flatten() {
            if c.type_ == "Ready" {
                c.status = "Unknown".into();
            }
        }
        let (third, changed) = status_now(Some(&unknown), &identity(), true, t1);
        assert!(changed);
        assert_eq!(ready(&third).last_transition_time, Some(Time(t1)));
        assert_eq!(ready(&third).status, "True");
    }

    #[test]
    fn a_node_without_its_pod_cidr_is_not_ready_until_it_has_one() {
        let t0 = Timestamp::from_second(1_000).expect("time");
        let t1 = Timestamp::from_second(2_000).expect("time");
        let ready = |s: &NodeStatus| {
            s.conditions
                .as_ref()
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready").cloned())
                .expect("Ready")
        };
        let (waiting, _) = status_now(None, &identity(), false, t0);
        let r = ready(&waiting);
        assert_eq!(
            (r.status.as_str(), r.reason.as_deref(), r.message.as_deref()),
            ("False", Some("KubeletNotReady"), Some(NETWORK_NOT_READY))
        );
        let (still, changed) = status_now(Some(&waiting), &identity(), false, t1);
        assert!(!changed, "no CIDR yet: nothing to post");
        assert_eq!(ready(&still).last_transition_time, Some(Time(t0)));
        let (now, changed) = status_now(Some(&still), &identity(), true, t1);
        assert!(changed, "the CIDR came: Ready=True is a change");
        assert_eq!(ready(&now).status, "True");
        assert_eq!(ready(&now).last_transition_time, Some(Time(t1)));

        let node = |cidr: Option<&str>| Node {
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(pod_cidr(&node(Some("10.1.2.0/24"))).is_some());
        assert!(pod_cidr(&node(Some("not a cidr"))).is_none(), "unusable is none");
        assert!(pod_cidr(&node(None)).is_none());
        assert!(pod_cidr(&Node::default()).is_none());
    }

    #[test]
    fn the_agent_port_is_published_as_the_kubelet_endpoint() {
        let (status, _) = status_now(None, &identity(), true, Timestamp::UNIX_EPOCH);
        let port = |s: &NodeStatus| {
            s.daemon_endpoints
                .as_ref()
                .and_then(|d| d.kubelet_endpoint.as_ref())
                .map(|e| e.port)
        };
        assert_eq!(port(&status), Some(10250));
        let none = NodeIdentity {
            agent_port: 0,
            ..identity()
        };
        assert_eq!(port(&status_now(None, &none, true, Timestamp::UNIX_EPOCH).0), None);
        // No port of its own: what the status had stays.
        assert_eq!(
            port(&status_now(Some(&status), &none, true, Timestamp::UNIX_EPOCH).0),
            Some(10250)
        );
    }

    #[test]
    fn conditions_others_added_stay() {
        let mut old = status_now(None, &identity(), true, Timestamp::UNIX_EPOCH).0;
        old.conditions.get_or_insert_with(Vec::new).push(NodeCondition {
            type_: "NetworkUnavailable".into(),
            status: "False".into(),
            ..Default::default()
        });
        let (now, _) = status_now(Some(&old), &identity(), true, Timestamp::UNIX_EPOCH);
        let types: Vec<_> = now.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            [
                "MemoryPressure",
                "DiskPressure",
                "PIDPressure",
                "Ready",
                "NetworkUnavailable"
            ]
        );
    }
}
