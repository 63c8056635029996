//! The node lifecycle controller: notices nodes that stopped heartbeating, marks them
//! `Ready=Unknown` and taints them, evicts the pods that do not tolerate the taints (the
//! taint manager), and collects the pods of nodes that are gone (the pod GC's part for
//! nodes). Upstream these are `node-lifecycle-controller`, `taint-eviction-controller`
//! and `pod-garbage-collector`; here they share one loop because they share its caches.
//!
//! ## Heartbeats
//!
//! A node agent heartbeats by renewing the Lease of the node's name in
//! `kube-node-lease` (`spec.renewTime`) and, less often, by posting its status (the
//! `Ready` condition's `lastHeartbeatTime`). As upstream, the controller never compares
//! those times with its own clock: it remembers, per node, *when it saw* either of them
//! change (the probe time, on this controller's clock), so clock skew between the agent
//! and the controller does not matter. A node seen for the first time gets a full grace
//! period from then (also after a controller-manager failover); a node that never posted
//! a `Ready` condition is judged against `--node-startup-grace-period` counted from its
//! creation, every other one against `--node-monitor-grace-period`.
//!
//! ## Not heard from for the grace period
//!
//! Every `--node-monitor-period` the controller goes over the nodes. A node whose probe
//! time is older than its grace period gets `Ready`, `MemoryPressure`, `DiskPressure`
//! and `PIDPressure` set to `Unknown` (reason `NodeStatusUnknown`, "Kubelet stopped
//! posting node status."; a condition never posted is added with
//! `NodeStatusNeverUpdated`, "Kubelet never posted node status."), written through
//! `nodes/status` with the resourceVersion read as precondition (a heartbeat that lands
//! meanwhile wins; the node is read again and judged again). The write happens only when
//! `Ready` changes, as upstream. The node's pods with `Ready=True` are then marked
//! `Ready=False` (so that Services stop sending them traffic), and a `NodeNotReady`
//! event is recorded.
//!
//! ## Taints
//!
//! From the conditions, as upstream's NoSchedule pass: `Ready=False` →
//! `node.kubernetes.io/not-ready:NoSchedule`, `Ready=Unknown` →
//! `node.kubernetes.io/unreachable:NoSchedule`, `MemoryPressure`/`DiskPressure`/
//! `PIDPressure`/`NetworkUnavailable=True` → `node.kubernetes.io/<…>-pressure`
//! (`network-unavailable`), `spec.unschedulable` → `node.kubernetes.io/unschedulable`.
//! And the NoExecute pair: `not-ready:NoExecute` while `Ready=False`,
//! `unreachable:NoExecute` while `Ready=Unknown` (never both: one is swapped for the
//! other at once), neither while `Ready=True`. Added taints carry `timeAdded`. Taints of
//! other keys are left alone. The NoSchedule taints are also mended on every node update,
//! as upstream's `doNoScheduleTaintingPass` is, so a node that turns ready (a new node
//! whose agent just got its pod CIDR) is schedulable at once, not at the next pass. Taint writes are merge patches of `spec.taints` with the
//! resourceVersion as precondition.
//!
//! Adding a NoExecute taint starts evictions, so, as upstream, it is rate limited per
//! zone (`topology.kubernetes.io/region` and `zone`, or their beta labels):
//! `--node-eviction-rate` nodes per second (0.1, burst 1); in a zone where more than two
//! nodes and at least `--unhealthy-zone-threshold` (55 %) of them are not ready,
//! `--secondary-node-eviction-rate` if the zone has more than
//! `--large-cluster-size-threshold` nodes, otherwise none. When no counted node of any
//! zone is ready (a partitioned control plane looks like this), no NoExecute taints are
//! kept at all, and once some node is ready again every node gets a fresh grace period.
//! So a cluster of one node never evicts its pods. Nodes labelled
//! `node.kubernetes.io/exclude-disruption` are not counted.
//!
//! ## Eviction (the taint manager)
//!
//! A pod bound to a node with NoExecute taints is deleted at once when some taint is not
//! tolerated by any of its tolerations; otherwise, for each taint the first toleration
//! that tolerates it decides: without `tolerationSeconds` the pod stays for as long as
//! the taint does, with it the pod is deleted that many seconds after the taint was added
//! (the earliest over the taints). The DefaultTolerationSeconds admission of the API
//! server gives every new pod 300 s for `not-ready` and `unreachable`. Before the delete,
//! the pod gets the condition `DisruptionTarget=True` (`DeletionByTaintManager`,
//! "Taint manager: deleting due to NoExecute taint") and a `TaintManagerEviction` event.
//!
//! The delete is upstream's: an ordinary graceful delete (the pod's
//! `terminationGracePeriodSeconds`), which for a bound pod sets `deletionTimestamp` and
//! waits for the node agent to confirm. On a lost node nobody confirms, so the pod stays
//! `Terminating`, as upstream, until the node comes back, the Node is deleted, or an
//! administrator taints it `node.kubernetes.io/out-of-service` (then it is force deleted,
//! below). Deleting with grace 0 instead would free the pod's name and volumes while its
//! containers may still run on a partitioned node; upstream does not, nor does this.
//! Controllers do not wait for it: the ReplicaSet controller does not count pods with a
//! `deletionTimestamp`, so it creates replacements at once, which the scheduler places
//! elsewhere (the tainted node is `unreachable:NoSchedule`).
//!
//! The deadline is counted from the taint's `timeAdded` (a taint without one counts from
//! when this controller first saw it). Upstream's taint manager counts from when *it*
//! saw the taint, so a controller-manager restart starts the countdown again; counting
//! from `timeAdded` keeps it across leader changes. `timeAdded` is written by this
//! controller, so the times compared come from the controller-managers' clocks.
//!
//! There are no per-pod timers: the index of pods by node is the queue. A pass over the
//! pods of NoExecute-tainted nodes runs when a taint or such a pod changes, at the
//! earliest pending deadline, and every monitor period; it deletes at most
//! `EVICTIONS_PER_PASS_MAX` pods (8 at a time) and goes on at once if there were more.
//!
//! ## Pods of nodes that are gone (pod GC)
//!
//! A pod bound to a node that does not exist is force deleted (phase `Failed` and
//! `DisruptionTarget=True`, `DeletionByPodGC`, "PodGC: node no longer exists", then a
//! delete with grace 0) once the node has been missing for the quarantine (upstream 40 s,
//! so that a pod bound just before its Node object shows up survives) and a read from
//! the API confirms it is gone. A terminating pod on a node that is not ready and
//! carries the `node.kubernetes.io/out-of-service` taint is force deleted too.
//!
//! ## Caches and bounds
//!
//! Nodes (whole), node Leases (renew time only) and bound pods (what eviction needs:
//! tolerations, deletion and ready state), each from a watch, indexed by node; the
//! controller acts only once all three have listed. What it keeps besides is bounded by
//! the number of nodes (health records, zone limiters, missing nodes) or capped
//! (`RECENTLY_EVICTED_MAX`).
//!
//! ## Left out
//!
//! Zone-aware rate limiting of evictions is per zone as upstream, but the order of nodes
//! waiting for a token is by when they became not ready rather than a queue; upstream's
//! cancellation events (`TaintManagerEviction` "Cancelling deletion"); the `RegisteredNode`
//! and `RemovingNode` events; reconciling the beta OS/arch labels; the pod GC's collection
//! of terminated pods beyond `--terminated-pod-gc-threshold` and of unscheduled
//! terminating pods (the API server deletes unbound pods at once); `Gt`/`Lt` toleration
//! operators. Pods bound to a node that is not ready are marked not ready when the
//! controller notices it (at the transition it causes, or when it sees the pod bound);
//! upstream marks each pod once, this may mark a pod again on a later pass if something
//! set it ready in between.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, ObjectReference, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::error::{AgentError, Result};
use crate::events;

/// Where node agents keep their heartbeat Leases (one per node, named after it).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
pub const TAINT_OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";
/// Nodes with this label are not counted when judging a zone's disruption.
pub const LABEL_EXCLUDE_DISRUPTION: &str = "node.kubernetes.io/exclude-disruption";

/// The NoSchedule taints this controller owns (it adds and removes only these).
const NO_SCHEDULE_KEYS: [&str; 7] = [
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    TAINT_UNSCHEDULABLE,
    TAINT_MEMORY_PRESSURE,
    TAINT_DISK_PRESSURE,
    TAINT_PID_PRESSURE,
    TAINT_NETWORK_UNAVAILABLE,
];
/// The conditions set to Unknown when a node stops heartbeating (NetworkUnavailable is
/// left alone: the network plugin owns it, as upstream).
const UNKNOWN_CONDITION_TYPES: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Pods deleted by one eviction pass at most; the pass runs again at once when more are due.
pub const EVICTIONS_PER_PASS_MAX: usize = 256;
/// Deletes in flight at once during an eviction pass.
const EVICTIONS_IN_FLIGHT_MAX: usize = 8;
/// Pods force deleted by one pod GC pass at most.
const COLLECTIONS_PER_PASS_MAX: usize = 500;
/// Uids of pods this controller deleted and has not yet seen terminating or gone (so a
/// pass before the watch catches up does not delete them again); cleared when full.
const RECENTLY_EVICTED_MAX: usize = 10_000;
/// How long a uid stays in that set at most.
const RECENTLY_EVICTED_TTL: Duration = Duration::from_secs(60);
/// A failed eviction is tried again after this long.
const EVICTION_RETRY: Duration = Duration::from_secs(1);
/// Reads and writes of one node per pass at most (a write that lost to a concurrent one
/// reads the node again).
const NODE_ATTEMPTS_MAX: usize = 3;

/// The controller's settings, named after upstream's flags.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// How often nodes are checked (`--node-monitor-period`).
    pub node_monitor_period: Duration,
    /// How long a node that has posted status may go without a heartbeat
    /// (`--node-monitor-grace-period`).
    pub node_monitor_grace_period: Duration,
    /// The same for a node that never posted a Ready condition, from its creation
    /// (`--node-startup-grace-period`).
    pub node_startup_grace_period: Duration,
    /// Nodes per second newly given a NoExecute taint, per zone (`--node-eviction-rate`).
    pub node_evictions_per_s: f64,
    /// The same in a large zone that is partly disrupted (`--secondary-node-eviction-rate`).
    pub secondary_node_evictions_per_s: f64,
    /// Above this many nodes a zone counts as large (`--large-cluster-size-threshold`).
    pub large_cluster_size_threshold: usize,
    /// The share of not-ready nodes from which a zone is partly disrupted
    /// (`--unhealthy-zone-threshold`).
    pub unhealthy_zone_threshold: f64,
    /// How long a pod's node must be missing before the pod is collected (upstream's pod
    /// GC quarantine, not a flag there).
    pub orphan_quarantine: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            node_monitor_period: Duration::from_secs(5),
            node_monitor_grace_period: Duration::from_secs(40),
            node_startup_grace_period: Duration::from_secs(60),
            node_evictions_per_s: 0.1,
            secondary_node_evictions_per_s: 0.01,
            large_cluster_size_threshold: 50,
            unhealthy_zone_threshold: 0.55,
            orphan_quarantine: Duration::from_secs(40),
        }
    }
}

impl Config {
    /// Refuses settings that cannot work.
    pub fn check(&self) -> Result<()> {
        if self.node_monitor_period.is_zero() {
            return Err(AgentError::Config("the node monitor period must be positive".into()));
        }
        if self.node_monitor_grace_period.is_zero() || self.node_startup_grace_period.is_zero() {
            return Err(AgentError::Config("node grace periods must be positive".into()));
        }
        let rate_ok = |r: f64| r.is_finite() && r >= 0.0;
        if !rate_ok(self.node_evictions_per_s) || !rate_ok(self.secondary_node_evictions_per_s) {
            return Err(AgentError::Config(
                "node eviction rates must be non-negative numbers".into(),
            ));
        }
        if !(self.unhealthy_zone_threshold > 0.0 && self.unhealthy_zone_threshold <= 1.0) {
            return Err(AgentError::Config(
                "the unhealthy zone threshold must lie in (0, 1]".into(),
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Pure planning: everything below up to the controller takes the time as input.
// ---------------------------------------------------------------------------------------

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    // Only spans with units above hours can fail; a std Duration cannot.
    t.saturating_add(d).unwrap_or(Timestamp::MAX)
}

/// A node's condition of one type, if it has one.
pub fn node_condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The status of the node's Ready condition, if it has one.
pub fn ready_status(node: &Node) -> Option<&str> {
    node_condition(node, "Ready").map(|c| c.status.as_str())
}

/// What the controller remembers of one node between passes: upstream's
/// `nodeHealthData`.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    uid: String,
    /// When this controller last saw the node's heartbeat move, on its own clock.
    pub probe: Timestamp,
    /// The Ready condition's `lastHeartbeatTime` last seen; outer None: no Ready condition.
    ready_heartbeat: Option<Option<Timestamp>>,
    /// The Lease's `renewTime` last seen; outer None: no Lease seen yet.
    lease_renew: Option<Option<Timestamp>>,
    /// The node's pods still to be marked not ready.
    mark_pods: bool,
}

/// Upstream's `tryUpdateNodeHealth` bookkeeping: the health record after seeing `node`
/// (and the renew time of its Lease, outer None when it has none) at `now`.
pub fn observe(prev: Option<&Health>, node: &Node, lease_renew: Option<Option<Timestamp>>, now: Timestamp) -> Health {
    let uid = node.metadata.uid.clone().unwrap_or_default();
    let heartbeat = node_condition(node, "Ready").map(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
    let mut health = match prev.filter(|p| p.uid == uid) {
        None => Health {
            uid,
            // A node that never posted status is judged from its creation.
            probe: match heartbeat {
                None => node.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0),
                Some(_) => now,
            },
            ready_heartbeat: heartbeat,
            lease_renew: None,
            mark_pods: false,
        },
        Some(p) => {
            let mut h = p.clone();
            let moved = match (&p.ready_heartbeat, &heartbeat) {
                (None, None) => false,
                (Some(before), Some(after)) => before != after,
                // Appeared, or (against the rules) removed: count it as a heartbeat.
                _ => true,
            };
            if moved {
                h.probe = now;
            }
            h.ready_heartbeat = heartbeat;
            h
        }
    };
    if let Some(renew) = lease_renew {
        if health.lease_renew.is_none_or(|before| before < renew) {
            health.lease_renew = Some(renew);
            health.probe = now;
        }
    }
    health
}

/// The grace period `node` is entitled to.
pub fn grace_period(node: &Node, config: &Config) -> Duration {
    if node_condition(node, "Ready").is_some() {
        config.node_monitor_grace_period
    } else {
        config.node_startup_grace_period
    }
}

/// Whether the node has gone unheard for longer than `grace`.
pub fn expired(health: &Health, grace: Duration, now: Timestamp) -> bool {
    now > plus(health.probe, grace)
}

/// The conditions of a node not heard from for its grace period: Ready, MemoryPressure,
/// DiskPressure and PIDPressure Unknown. None when the Ready condition would not change
/// (upstream writes only then).
pub fn unknown_conditions(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let before: Vec<NodeCondition> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut after = before.clone();
    for type_ in UNKNOWN_CONDITION_TYPES {
        match after.iter_mut().find(|c| c.type_ == type_) {
            None => after.push(NodeCondition {
                type_: type_.into(),
                status: "Unknown".into(),
                reason: Some("NodeStatusNeverUpdated".into()),
                message: Some("Kubelet never posted node status.".into()),
                last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                last_transition_time: Some(Time(now)),
            }),
            Some(c) if c.status != "Unknown" => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
            }
            Some(_) => {}
        }
    }
    let ready = |cs: &[NodeCondition]| cs.iter().find(|c| c.type_ == "Ready").cloned();
    (ready(&before) != ready(&after)).then_some(after)
}

/// The NoSchedule taints the node's conditions (and `spec.unschedulable`) call for.
pub fn no_schedule_keys(node: &Node) -> BTreeSet<&'static str> {
    let mut keys = BTreeSet::new();
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    for c in conditions {
        let key = match (c.type_.as_str(), c.status.as_str()) {
            ("Ready", "False") => TAINT_NOT_READY,
            ("Ready", "Unknown") => TAINT_UNREACHABLE,
            ("MemoryPressure", "True") => TAINT_MEMORY_PRESSURE,
            ("DiskPressure", "True") => TAINT_DISK_PRESSURE,
            ("PIDPressure", "True") => TAINT_PID_PRESSURE,
            ("NetworkUnavailable", "True") => TAINT_NETWORK_UNAVAILABLE,
            _ => continue,
        };
        keys.insert(key);
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        keys.insert(TAINT_UNSCHEDULABLE);
    }
    keys
}

/// What to do with the node's NoExecute pair (`not-ready`, `unreachable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoExecute {
    /// No Ready condition: leave them as they are (upstream skips such nodes).
    Leave,
    /// Neither.
    Remove,
    /// This one (swapped in for the other at once; newly added only with a token).
    Want(&'static str),
}

/// The NoExecute taint the node's Ready status calls for; none at all while every zone
/// is fully disrupted.
pub fn no_execute_for(ready: Option<&str>, all_disrupted: bool) -> NoExecute {
    match ready {
        None => NoExecute::Leave,
        Some(_) if all_disrupted => NoExecute::Remove,
        Some("True") => NoExecute::Remove,
        Some("False") => NoExecute::Want(TAINT_NOT_READY),
        Some(_) => NoExecute::Want(TAINT_UNREACHABLE),
    }
}

fn is_no_execute_pair(t: &Taint) -> bool {
    t.effect == "NoExecute" && (t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE)
}

/// Whether carrying out `want` adds a NoExecute taint to a node that has neither of the
/// pair, which is what the rate limiter meters (a swap is not).
pub fn adds_no_execute(current: &[Taint], want: NoExecute) -> bool {
    matches!(want, NoExecute::Want(_)) && !current.iter().any(is_no_execute_pair)
}

/// The node's taints after this controller's changes, or None when they stay.
/// `may_add_no_execute`: the rate limiter allows a NoExecute taint on a node without one.
pub fn plan_taints(
    current: &[Taint],
    no_schedule: &BTreeSet<&'static str>,
    want: NoExecute,
    may_add_no_execute: bool,
    now: Timestamp,
) -> Option<Vec<Taint>> {
    let has_pair = current.iter().any(is_no_execute_pair);
    let keep_pair: Option<&str> = match want {
        NoExecute::Want(key) if has_pair || may_add_no_execute => Some(key),
        _ => None,
    };
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| {
            if t.effect == "NoSchedule" && NO_SCHEDULE_KEYS.contains(&t.key.as_str()) {
                no_schedule.contains(t.key.as_str())
            } else if is_no_execute_pair(t) {
                want == NoExecute::Leave || keep_pair == Some(t.key.as_str())
            } else {
                true
            }
        })
        .cloned()
        .collect();
    let add = |out: &mut Vec<Taint>, key: &str, effect: &str| {
        if !out.iter().any(|t| t.key == key && t.effect == effect) {
            out.push(Taint {
                key: key.into(),
                effect: effect.into(),
                value: None,
                time_added: Some(Time(now)),
            });
        }
    };
    for key in no_schedule {
        add(&mut out, key, "NoSchedule");
    }
    if let Some(key) = keep_pair {
        add(&mut out, key, "NoExecute");
    }
    (out.as_slice() != current).then_some(out)
}

/// The node's taints with only its NoSchedule ones brought in line with its conditions
/// (the NoExecute pair left as it is), or None when they stay: upstream's
/// `doNoScheduleTaintingPass`, run on every node update.
pub fn no_schedule_plan(node: &Node, now: Timestamp) -> Option<Vec<Taint>> {
    let current = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    plan_taints(current, &no_schedule_keys(node), NoExecute::Leave, false, now)
}

/// Upstream's zone key: region and zone (the beta labels first), empty without either.
pub fn zone_key(node: &Node) -> String {
    let labels = node.labels();
    let get = |beta: &str, ga: &str| labels.get(beta).or_else(|| labels.get(ga)).cloned().unwrap_or_default();
    let zone = get("failure-domain.beta.kubernetes.io/zone", "topology.kubernetes.io/zone");
    let region = get(
        "failure-domain.beta.kubernetes.io/region",
        "topology.kubernetes.io/region",
    );
    if zone.is_empty() && region.is_empty() {
        String::new()
    } else {
        format!("{region}:\0:{zone}")
    }
}

/// A zone's health, upstream's `ComputeZoneState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    PartialDisruption,
    FullDisruption,
}

pub fn zone_state(ready: usize, not_ready: usize, unhealthy_threshold: f64) -> ZoneState {
    let total = ready + not_ready;
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / total as f64 >= unhealthy_threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// Nodes per second that may newly get a NoExecute taint in a zone of `size` counted
/// nodes (upstream's `setLimiterInZone`; a fully disrupted zone among healthy ones
/// evicts at the normal rate).
pub fn zone_rate_per_s(state: ZoneState, size: usize, config: &Config) -> f64 {
    match state {
        ZoneState::Normal | ZoneState::FullDisruption => config.node_evictions_per_s,
        ZoneState::PartialDisruption if size > config.large_cluster_size_threshold => {
            config.secondary_node_evictions_per_s
        }
        ZoneState::PartialDisruption => 0.0,
    }
}

/// A token bucket of burst 1 on the injected clock.
#[derive(Debug, Clone, Default)]
pub struct Limiter {
    available_at: Option<Timestamp>,
}

impl Limiter {
    /// Takes the token if there is one at `now` (never at rate 0).
    pub fn try_take(&mut self, rate_per_s: f64, now: Timestamp) -> bool {
        if rate_per_s <= 0.0 || !rate_per_s.is_finite() {
            return false;
        }
        if self.available_at.is_some_and(|at| now < at) {
            return false;
        }
        let interval = Duration::try_from_secs_f64(1.0 / rate_per_s).unwrap_or(Duration::MAX);
        self.available_at = Some(plus(now, interval));
        true
    }
}

/// Upstream's `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// What the taint manager does with a pod on a node with NoExecute taints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    EvictNow,
    EvictAt(Timestamp),
}

/// The verdict for a pod with `tolerations` on a node whose NoExecute taints are
/// `taints`, each with the time it counts from.
pub fn eviction_verdict(taints: &[(Taint, Timestamp)], tolerations: &[Toleration], now: Timestamp) -> Verdict {
    let mut deadline: Option<Timestamp> = None;
    for (taint, since) in taints {
        let Some(t) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Verdict::EvictNow;
        };
        let Some(seconds) = t.toleration_seconds else {
            continue;
        };
        let at = plus(*since, Duration::from_secs(u64::try_from(seconds).unwrap_or(0)));
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
    }
    match deadline {
        None => Verdict::Keep,
        Some(at) if at <= now => Verdict::EvictNow,
        Some(at) => Verdict::EvictAt(at),
    }
}

// ---------------------------------------------------------------------------------------
// The caches.
// ---------------------------------------------------------------------------------------

/// A node and when each of its NoExecute taints counts from.
struct NodeEntry {
    node: Node,
    no_execute: Vec<(Taint, Timestamp)>,
}

impl NodeEntry {
    /// `prev`: the entry this replaces, for the first sighting of taints without `timeAdded`.
    fn new(node: Node, prev: Option<&NodeEntry>, now: Timestamp) -> NodeEntry {
        let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
        let no_execute = taints
            .iter()
            .filter(|t| t.effect == "NoExecute")
            .map(|t| {
                let since = t.time_added.as_ref().map(|a| a.0).or_else(|| {
                    prev.and_then(|p| p.no_execute.iter().find(|(o, _)| o.key == t.key && o.value == t.value))
                        .map(|(_, s)| *s)
                });
                (t.clone(), since.unwrap_or(now))
            })
            .collect();
        NodeEntry { node, no_execute }
    }
}

/// What the controller needs of a bound pod.
#[derive(Debug, Clone)]
struct PodInfo {
    namespace: String,
    name: String,
    uid: String,
    node: String,
    tolerations: Vec<Toleration>,
    terminating: bool,
    terminal: bool,
    ready: Option<String>,
    disruption_target: bool,
}

impl PodInfo {
    fn of(pod: &Pod) -> Option<PodInfo> {
        let node = pod.spec.as_ref()?.node_name.clone().filter(|n| !n.is_empty())?;
        let status = pod.status.as_ref();
        let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or_default();
        Some(PodInfo {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            node,
            tolerations: pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default(),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            terminal: matches!(status.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")),
            ready: conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone()),
            disruption_target: conditions
                .iter()
                .any(|c| c.type_ == "DisruptionTarget" && c.status == "True"),
        })
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Bound pods by node.
#[derive(Default)]
struct PodIndex {
    by_node: BTreeMap<String, BTreeMap<String, PodInfo>>,
    node_of: HashMap<String, String>,
}

impl PodIndex {
    fn remove(&mut self, key: &str) -> Option<PodInfo> {
        let node = self.node_of.remove(key)?;
        let pods = self.by_node.get_mut(&node)?;
        let gone = pods.remove(key);
        if pods.is_empty() {
            self.by_node.remove(&node);
        }
        gone
    }

    /// Returns the entry it replaced.
    fn insert(&mut self, info: PodInfo) -> Option<PodInfo> {
        let key = info.key();
        let before = self.remove(&key);
        self.node_of.insert(key.clone(), info.node.clone());
        self.by_node.entry(info.node.clone()).or_default().insert(key, info);
        before
    }
}

/// Applies a watcher's events to a map, with the relist buffered until it is complete.
struct Mirror<V> {
    current: BTreeMap<String, V>,
    relist: Option<BTreeMap<String, V>>,
    synced: bool,
}

impl<V> Default for Mirror<V> {
    fn default() -> Self {
        Mirror {
            current: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The controller.
// ---------------------------------------------------------------------------------------

struct Controller {
    client: Client,
    config: Config,
    nodes: Mirror<NodeEntry>,
    /// Lease renew times by node name (outer Option: a Lease exists).
    leases: Mirror<Option<Timestamp>>,
    pods: PodIndex,
    pods_relist: Option<PodIndex>,
    pods_synced: bool,
    health: HashMap<String, Health>,
    limiters: HashMap<String, Limiter>,
    /// Whether every zone was fully disrupted on the last pass.
    all_disrupted: bool,
    /// Node names pods are bound to that no Node has, since when.
    missing_since: HashMap<String, Timestamp>,
    /// Pods this controller deleted, by uid, and when.
    evicted: HashMap<String, Timestamp>,
    /// Something changed that may make a pod due for eviction.
    evict_dirty: bool,
    /// Nodes whose NoSchedule taints no longer match their conditions, to be mended
    /// at once rather than at the next monitor pass (at most one entry per node).
    no_schedule_dirty: BTreeSet<String>,
}

/// Runs the node lifecycle controller until its future is dropped.
pub async fn run(client: Client, config: Config) {
    let nodes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();
    let leases = watcher(
        Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
        watcher::Config::default(),
    )
    .default_backoff()
    .boxed();
    // Only bound pods concern this controller.
    let pods = watcher(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().fields("spec.nodeName!="),
    )
    .default_backoff()
    .boxed();
    let mut controller = Controller::new(client, config);
    controller.run(nodes, leases, pods).await;
}

type Events<K> = std::pin::Pin<Box<dyn Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send>>;

impl Controller {
    fn new(client: Client, config: Config) -> Controller {
        Controller {
            client,
            config,
            nodes: Mirror::default(),
            leases: Mirror::default(),
            pods: PodIndex::default(),
            pods_relist: None,
            pods_synced: false,
            health: HashMap::new(),
            limiters: HashMap::new(),
            all_disrupted: false,
            missing_since: HashMap::new(),
            evicted: HashMap::new(),
            evict_dirty: false,
            no_schedule_dirty: BTreeSet::new(),
        }
    }

    fn synced(&self) -> bool {
        self.nodes.synced && self.leases.synced && self.pods_synced
    }

    async fn run(&mut self, mut nodes: Events<Node>, mut leases: Events<Lease>, mut pods: Events<Pod>) {
        let mut tick = tokio::time::interval(self.config.node_monitor_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wake: Option<tokio::time::Instant> = None;
        loop {
            let wake_at = wake;
            let deadline = async move {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(event) = nodes.next() => match event {
                    Ok(e) => self.on_node(e, Timestamp::now()),
                    Err(e) => tracing::warn!(error = %e, "nodelifecycle: watching nodes"),
                },
                Some(event) = leases.next() => match event {
                    Ok(e) => self.on_lease(e),
                    Err(e) => tracing::warn!(error = %e, "nodelifecycle: watching node leases"),
                },
                Some(event) = pods.next() => match event {
                    Ok(e) => self.on_pod(e),
                    Err(e) => tracing::warn!(error = %e, "nodelifecycle: watching pods"),
                },
                _ = tick.tick() => {
                    if self.synced() {
                        self.monitor(Timestamp::now()).await;
                        self.collect_pods(Timestamp::now()).await;
                        self.evict_dirty = true;
                    }
                }
                () = deadline => {
                    wake = None;
                    self.evict_dirty = true;
                }
            }
            // Upstream's NoSchedule tainting pass on node updates: a node that became
            // ready (its agent got its pod CIDR) is schedulable at once, and one that
            // became not ready is not, without waiting for the next tick.
            if self.nodes.synced {
                for name in std::mem::take(&mut self.no_schedule_dirty) {
                    if let Err(e) = self.update_taints(&name, None, Timestamp::now()).await {
                        tracing::warn!(node = %name, error = %e, "nodelifecycle: updating the node's NoSchedule taints");
                    }
                }
            }
            if self.evict_dirty && self.synced() {
                self.evict_dirty = false;
                let now = Timestamp::now();
                wake = self.evict(now).await.map(|at| {
                    let wait = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
                    tokio::time::Instant::now() + wait
                });
            }
        }
    }

    fn on_node(&mut self, event: watcher::Event<Node>, now: Timestamp) {
        match event {
            watcher::Event::Init => self.nodes.relist = Some(BTreeMap::new()),
            watcher::Event::InitApply(node) => {
                let name = node.name_any();
                let entry = NodeEntry::new(node, self.nodes.current.get(&name), now);
                if let Some(relist) = self.nodes.relist.as_mut() {
                    relist.insert(name, entry);
                }
            }
            watcher::Event::InitDone => {
                if let Some(relist) = self.nodes.relist.take() {
                    self.nodes.current = relist;
                }
                self.nodes.synced = true;
                self.evict_dirty = true;
                let stale = self
                    .nodes
                    .current
                    .iter()
                    .filter(|(_, e)| no_schedule_plan(&e.node, now).is_some())
                    .map(|(name, _)| name.clone());
                self.no_schedule_dirty.extend(stale);
            }
            watcher::Event::Apply(node) => {
                let name = node.name_any();
                if no_schedule_plan(&node, now).is_some() {
                    self.no_schedule_dirty.insert(name.clone());
                }
                let entry = NodeEntry::new(node, self.nodes.current.get(&name), now);
                let before = self.nodes.current.get(&name).map(|e| &e.no_execute);
                if before != Some(&entry.no_execute) {
                    self.evict_dirty = true;
                }
                self.nodes.current.insert(name, entry);
            }
            watcher::Event::Delete(node) => {
                self.nodes.current.remove(&node.name_any());
                self.no_schedule_dirty.remove(&node.name_any());
                self.evict_dirty = true;
            }
        }
    }

    fn on_lease(&mut self, event: watcher::Event<Lease>) {
        let renew = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
        match event {
            watcher::Event::Init => self.leases.relist = Some(BTreeMap::new()),
            watcher::Event::InitApply(lease) => {
                if let Some(relist) = self.leases.relist.as_mut() {
                    relist.insert(lease.name_any(), renew(&lease));
                }
            }
            watcher::Event::InitDone => {
                if let Some(relist) = self.leases.relist.take() {
                    self.leases.current = relist;
                }
                self.leases.synced = true;
            }
            watcher::Event::Apply(lease) => {
                self.leases.current.insert(lease.name_any(), renew(&lease));
            }
            watcher::Event::Delete(lease) => {
                self.leases.current.remove(&lease.name_any());
            }
        }
    }

    fn on_pod(&mut self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Init => self.pods_relist = Some(PodIndex::default()),
            watcher::Event::InitApply(pod) => {
                if let (Some(relist), Some(info)) = (self.pods_relist.as_mut(), PodInfo::of(&pod)) {
                    relist.insert(info);
                }
            }
            watcher::Event::InitDone => {
                if let Some(relist) = self.pods_relist.take() {
                    self.pods = relist;
                }
                self.pods_synced = true;
                self.evict_dirty = true;
            }
            watcher::Event::Apply(pod) => {
                let Some(info) = PodInfo::of(&pod) else {
                    self.pods
                        .remove(&format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()));
                    return;
                };
                if info.terminating {
                    self.evicted.remove(&info.uid);
                }
                let node = info.node.clone();
                let before = self.pods.insert(info);
                let tainted = self.nodes.current.get(&node).is_some_and(|e| !e.no_execute.is_empty());
                if tainted {
                    self.evict_dirty = true;
                }
                // Upstream's processPod: a pod newly bound to a node that is not ready is
                // marked not ready too (on the next pass).
                let newly_bound = before.is_none_or(|b| b.node != node);
                let node_ready = self
                    .nodes
                    .current
                    .get(&node)
                    .map(|e| ready_status(&e.node) == Some("True"));
                if newly_bound && node_ready == Some(false) {
                    if let Some(h) = self.health.get_mut(&node) {
                        h.mark_pods = true;
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_ref() {
                    self.evicted.remove(uid);
                }
                self.pods
                    .remove(&format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()));
            }
        }
    }

    // -- node health -------------------------------------------------------------------

    /// One monitor pass: health and conditions, then taints, then pods to mark.
    async fn monitor(&mut self, now: Timestamp) {
        let names: Vec<String> = self.nodes.current.keys().cloned().collect();
        self.health.retain(|n, _| names.binary_search(n).is_ok());
        for name in &names {
            if let Err(e) = self.update_health(name, now).await {
                tracing::warn!(node = %name, error = %e, "nodelifecycle: updating the node's health");
            }
        }

        // Zones, from the Ready conditions after this pass's writes.
        let mut zones: HashMap<String, (usize, usize)> = HashMap::new();
        for entry in self.nodes.current.values() {
            if entry.node.labels().contains_key(LABEL_EXCLUDE_DISRUPTION) {
                continue;
            }
            let counts = zones.entry(zone_key(&entry.node)).or_default();
            if ready_status(&entry.node) == Some("True") {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
        let states: HashMap<String, (ZoneState, usize)> = zones
            .iter()
            .map(|(z, (r, n))| {
                (
                    z.clone(),
                    (zone_state(*r, *n, self.config.unhealthy_zone_threshold), r + n),
                )
            })
            .collect();
        let all_disrupted = !states.is_empty() && states.values().all(|(s, _)| *s == ZoneState::FullDisruption);
        if all_disrupted && !self.all_disrupted {
            tracing::warn!("nodelifecycle: no node is ready; NoExecute taints are held back");
        }
        if self.all_disrupted && !all_disrupted {
            tracing::info!("nodelifecycle: some nodes are ready again; every node gets a fresh grace period");
            for h in self.health.values_mut() {
                h.probe = now;
            }
        }
        self.all_disrupted = all_disrupted;
        self.limiters.retain(|z, _| zones.contains_key(z));

        // Taints: nodes that became not ready first get the limiters' tokens.
        let mut order: Vec<(Option<Timestamp>, String)> = self
            .nodes
            .current
            .iter()
            .map(|(name, e)| {
                let since = node_condition(&e.node, "Ready").and_then(|c| c.last_transition_time.as_ref().map(|t| t.0));
                (since, name.clone())
            })
            .collect();
        order.sort();
        for (_, name) in order {
            if let Err(e) = self.update_taints(&name, Some(&states), now).await {
                tracing::warn!(node = %name, error = %e, "nodelifecycle: updating the node's taints");
            }
        }

        for name in &names {
            if self.health.get(name).is_some_and(|h| h.mark_pods) {
                let done = self.mark_pods_not_ready(name, now).await;
                if let Some(h) = self.health.get_mut(name) {
                    h.mark_pods = !done;
                }
            }
        }
    }

    /// Upstream's `tryUpdateNodeHealth` for one node, with its retries.
    async fn update_health(&mut self, name: &str, now: Timestamp) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        for _ in 0..NODE_ATTEMPTS_MAX {
            let Some(entry) = self.nodes.current.get(name) else {
                return Ok(());
            };
            let node = entry.node.clone();
            let lease = self.leases.current.get(name).copied();
            let mut health = observe(self.health.get(name), &node, lease, now);
            let grace = grace_period(&node, &self.config);
            let planned = if expired(&health, grace, now) {
                unknown_conditions(&node, now)
            } else {
                None
            };
            let Some(conditions) = planned else {
                self.health.insert(name.to_owned(), health);
                return Ok(());
            };
            let patch = json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "status": {"conditions": conditions},
            });
            match nodes
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(written) => {
                    tracing::info!(node = %name, ?grace, "nodelifecycle: node not heard from; its status is now Unknown");
                    // Our own write is no heartbeat.
                    health.ready_heartbeat =
                        node_condition(&written, "Ready").map(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
                    if ready_status(&node) == Some("True") {
                        health.mark_pods = true;
                        let message = format!("Node {name} status is now: NodeNotReady");
                        self.record_event(
                            node_reference(&written),
                            "Normal",
                            "NodeNotReady",
                            &message,
                            "node-controller",
                        )
                        .await;
                    }
                    self.health.insert(name.to_owned(), health);
                    let entry = NodeEntry::new(written, self.nodes.current.get(name), now);
                    self.nodes.current.insert(name.to_owned(), entry);
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // A heartbeat or another write came first: judge the node as it is now.
                    self.health.insert(name.to_owned(), health);
                    self.refresh_node(name, now).await?;
                }
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(e) => {
                    self.health.insert(name.to_owned(), health);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Reads the node from the API into the cache (removing it if it is gone).
    async fn refresh_node(&mut self, name: &str, now: Timestamp) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        match nodes.get_opt(name).await? {
            Some(node) => {
                let entry = NodeEntry::new(node, self.nodes.current.get(name), now);
                self.nodes.current.insert(name.to_owned(), entry);
            }
            None => {
                self.nodes.current.remove(name);
            }
        }
        Ok(())
    }

    /// Brings the node's taints in line with its conditions: all of them with the zones'
    /// states (the monitor pass), or with `None` only the NoSchedule ones (on a node
    /// update; the NoExecute pair is left as it is).
    async fn update_taints(
        &mut self,
        name: &str,
        zones: Option<&HashMap<String, (ZoneState, usize)>>,
        now: Timestamp,
    ) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        for _ in 0..NODE_ATTEMPTS_MAX {
            let Some(entry) = self.nodes.current.get(name) else {
                return Ok(());
            };
            let node = &entry.node;
            let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
            let planned = match zones {
                None => no_schedule_plan(node, now),
                Some(zones) => {
                    let want = no_execute_for(ready_status(node), self.all_disrupted);
                    let mut may_add = false;
                    if adds_no_execute(&current, want) {
                        let zone = zone_key(node);
                        let (state, size) = zones.get(&zone).copied().unwrap_or((ZoneState::Normal, 1));
                        let rate = zone_rate_per_s(state, size, &self.config);
                        may_add = self.limiters.entry(zone).or_default().try_take(rate, now);
                    }
                    plan_taints(&current, &no_schedule_keys(node), want, may_add, now)
                }
            };
            let Some(taints) = planned else {
                return Ok(());
            };
            let patch = json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"taints": taints},
            });
            match nodes.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(written) => {
                    let keys = |ts: &[Taint]| ts.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>();
                    tracing::info!(node = %name, taints = ?keys(&taints), was = ?keys(&current), "nodelifecycle: tainted the node");
                    let entry = NodeEntry::new(written, self.nodes.current.get(name), now);
                    if entry.no_execute
                        != self
                            .nodes
                            .current
                            .get(name)
                            .map(|e| e.no_execute.clone())
                            .unwrap_or_default()
                    {
                        self.evict_dirty = true;
                    }
                    self.nodes.current.insert(name.to_owned(), entry);
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 409 => self.refresh_node(name, now).await?,
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Upstream's `MarkPodsNotReady`: `Ready=False` on the node's pods that are ready.
    /// Whether all of them were.
    async fn mark_pods_not_ready(&mut self, node: &str, now: Timestamp) -> bool {
        let pods: Vec<PodInfo> = self
            .pods
            .by_node
            .get(node)
            .map(|ps| {
                ps.values()
                    .filter(|p| p.ready.as_deref() == Some("True"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut done = true;
        for pod in pods {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
            let patch = json!({"metadata": {"uid": pod.uid},
                "status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": Time(now)}]}});
            match api
                .patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(pod = %pod.key(), node, "nodelifecycle: marked the pod not ready");
                    self.record_event(
                        pod_reference(&pod),
                        "Warning",
                        "NodeNotReady",
                        "Node is not ready",
                        "node-controller",
                    )
                    .await;
                }
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => {
                    tracing::warn!(pod = %pod.key(), error = %e, "nodelifecycle: marking the pod not ready");
                    done = false;
                }
            }
        }
        done
    }

    // -- eviction ----------------------------------------------------------------------

    /// One eviction pass; returns when the next pod falls due.
    async fn evict(&mut self, now: Timestamp) -> Option<Timestamp> {
        let oldest = now.saturating_sub(RECENTLY_EVICTED_TTL).unwrap_or(Timestamp::MIN);
        self.evicted.retain(|_, at| *at >= oldest);
        if self.evicted.len() >= RECENTLY_EVICTED_MAX {
            self.evicted.clear();
        }
        let mut due: Vec<PodInfo> = Vec::new();
        let mut next: Option<Timestamp> = None;
        let mut more = false;
        'nodes: for (name, entry) in &self.nodes.current {
            if entry.no_execute.is_empty() {
                continue;
            }
            for pod in self.pods.by_node.get(name).into_iter().flat_map(|ps| ps.values()) {
                if pod.terminating || self.evicted.contains_key(&pod.uid) {
                    continue;
                }
                match eviction_verdict(&entry.no_execute, &pod.tolerations, now) {
                    Verdict::Keep => {}
                    Verdict::EvictAt(at) => next = Some(next.map_or(at, |n| n.min(at))),
                    Verdict::EvictNow => {
                        if due.len() == EVICTIONS_PER_PASS_MAX {
                            more = true;
                            break 'nodes;
                        }
                        due.push(pod.clone());
                    }
                }
            }
        }
        let client = self.client.clone();
        let results: Vec<(String, bool)> = futures::stream::iter(due)
            .map(|pod| {
                let client = client.clone();
                async move {
                    let ok = match evict_pod(&client, &pod, now).await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(pod = %pod.key(), error = %e, "nodelifecycle: evicting the pod");
                            false
                        }
                    };
                    (pod.uid, ok)
                }
            })
            .buffer_unordered(EVICTIONS_IN_FLIGHT_MAX)
            .collect()
            .await;
        for (uid, ok) in results {
            if ok {
                self.evicted.insert(uid, now);
            } else {
                let retry = plus(now, EVICTION_RETRY);
                next = Some(next.map_or(retry, |n| n.min(retry)));
            }
        }
        if more {
            self.evict_dirty = true;
        }
        next
    }

    // -- pod GC ------------------------------------------------------------------------

    /// Force deletes the pods of nodes that are gone (after the quarantine) and the
    /// terminating pods of out-of-service nodes that are not ready.
    async fn collect_pods(&mut self, now: Timestamp) {
        let missing: Vec<String> = self
            .pods
            .by_node
            .keys()
            .filter(|n| !self.nodes.current.contains_key(*n))
            .cloned()
            .collect();
        self.missing_since.retain(|n, _| missing.binary_search(n).is_ok());
        let mut gone: Vec<String> = Vec::new();
        for name in missing {
            let since = *self.missing_since.entry(name.clone()).or_insert(now);
            if now >= plus(since, self.config.orphan_quarantine) {
                gone.push(name);
            }
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut budget = COLLECTIONS_PER_PASS_MAX;
        for name in gone {
            match nodes.get_opt(&name).await {
                Ok(None) => {}
                Ok(Some(_)) => {
                    // The cache is behind: the node exists.
                    self.missing_since.remove(&name);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "nodelifecycle: checking for a node");
                    continue;
                }
            }
            let pods: Vec<PodInfo> = self
                .pods
                .by_node
                .get(&name)
                .map(|ps| ps.values().take(budget).cloned().collect())
                .unwrap_or_default();
            budget -= pods.len();
            for pod in pods {
                let condition = ("DeletionByPodGC", "PodGC: node no longer exists");
                match force_delete(&self.client, &pod, Some(condition), now).await {
                    Ok(()) => {
                        tracing::info!(pod = %pod.key(), node = %name, "nodelifecycle: deleted the pod of a node that is gone")
                    }
                    Err(e) => {
                        tracing::warn!(pod = %pod.key(), error = %e, "nodelifecycle: deleting the pod of a node that is gone")
                    }
                }
            }
        }
        // Upstream's gcTerminating: the administrator declared the node out of service.
        let out_of_service: Vec<String> = self
            .nodes
            .current
            .iter()
            .filter(|(_, e)| {
                let taints = e
                    .node
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_deref())
                    .unwrap_or_default();
                taints.iter().any(|t| t.key == TAINT_OUT_OF_SERVICE) && ready_status(&e.node) != Some("True")
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in out_of_service {
            let pods: Vec<PodInfo> = self
                .pods
                .by_node
                .get(&name)
                .map(|ps| {
                    ps.values()
                        .filter(|p| p.terminating && !p.terminal)
                        .take(budget)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            budget -= pods.len();
            for pod in pods {
                match force_delete(&self.client, &pod, None, now).await {
                    Ok(()) => {
                        tracing::info!(pod = %pod.key(), node = %name, "nodelifecycle: deleted a terminating pod of an out-of-service node")
                    }
                    Err(e) => tracing::warn!(pod = %pod.key(), error = %e, "nodelifecycle: deleting a terminating pod"),
                }
            }
        }
    }

    async fn record_event(&self, involved: ObjectReference, type_: &str, reason: &str, message: &str, component: &str) {
        events::record(&self.client, involved, type_, reason, message, component).await;
    }
}

fn node_reference(node: &Node) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.name_any()),
        uid: node.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

fn pod_reference(pod: &PodInfo) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(pod.name.clone()),
        namespace: Some(pod.namespace.clone()),
        uid: Some(pod.uid.clone()),
        ..ObjectReference::default()
    }
}

fn disruption_condition(reason: &str, message: &str, now: Timestamp) -> serde_json::Value {
    json!({"type": "DisruptionTarget", "status": "True", "reason": reason, "message": message,
        "lastTransitionTime": Time(now)})
}

/// The taint manager's delete: `DisruptionTarget`, an event, then an ordinary (graceful)
/// delete of exactly this pod.
async fn evict_pod(client: &Client, pod: &PodInfo, now: Timestamp) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    if !pod.disruption_target {
        let condition = disruption_condition(
            "DeletionByTaintManager",
            "Taint manager: deleting due to NoExecute taint",
            now,
        );
        let patch = json!({"metadata": {"uid": pod.uid}, "status": {"conditions": [condition]}});
        match api
            .patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    let message = format!("Marking for deletion Pod {}", pod.key());
    events::record(
        client,
        pod_reference(pod),
        "Normal",
        "TaintManagerEviction",
        &message,
        "taint-eviction-controller",
    )
    .await;
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(pod.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&pod.name, &params).await {
        Ok(_) => {
            tracing::info!(pod = %pod.key(), node = %pod.node, "nodelifecycle: evicted the pod (NoExecute taint)");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The pod GC's delete: phase `Failed` (and `DisruptionTarget` when given) unless the pod
/// already finished, then a delete with grace 0.
async fn force_delete(client: &Client, pod: &PodInfo, condition: Option<(&str, &str)>, now: Timestamp) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    if !pod.terminal {
        let mut status = json!({"phase": "Failed"});
        if let Some((reason, message)) = condition {
            status["conditions"] = json!([disruption_condition(reason, message, now)]);
        }
        let patch = json!({"metadata": {"uid": pod.uid}, "status": status});
        match api
            .patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(pod.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&pod.name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn at(seconds: u64) -> Timestamp {
        plus(ts("2026-01-01T00:00:00Z"), Duration::from_secs(seconds))
    }

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).expect("node")
    }

    fn ready_node(status: &str, heartbeat: &str) -> Node {
        node(json!({
            "metadata": {"name": "a", "uid": "u1", "creationTimestamp": "2025-12-31T23:00:00Z"},
            "status": {"conditions": [
                {"type": "Ready", "status": status, "reason": "KubeletReady", "message": "kubelet is posting ready status",
                 "lastHeartbeatTime": heartbeat, "lastTransitionTime": "2025-12-31T23:00:00Z"},
                {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": heartbeat,
                 "lastTransitionTime": "2025-12-31T23:00:00Z"},
                {"type": "NetworkUnavailable", "status": "False"}
            ]}
        }))
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: None,
        }
    }

    fn toleration(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).expect("toleration")
    }

    fn keys(taints: &[Taint]) -> Vec<String> {
        taints.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect()
    }

    #[test]
    fn probe_moves_only_when_a_heartbeat_moves_on_the_controllers_clock() {
        let config = Config::default();
        let n = ready_node("True", "2020-01-01T00:00:00Z");
        // First sight: a full grace period from now, whatever the heartbeat says (skew).
        let h = observe(None, &n, None, at(0));
        assert_eq!(h.probe, at(0));
        let grace = grace_period(&n, &config);
        assert_eq!(grace, Duration::from_secs(40));
        assert!(!expired(&h, grace, at(40)), "exactly the grace period is still fine");
        assert!(expired(&h, grace, at(41)));
        // Seen again unchanged: the probe stays.
        let h2 = observe(Some(&h), &n, None, at(30));
        assert_eq!(h2.probe, at(0));
        // A new status heartbeat moves it.
        let n2 = ready_node("True", "2020-01-01T00:00:10Z");
        let h3 = observe(Some(&h2), &n2, None, at(35));
        assert_eq!(h3.probe, at(35));
        // A Lease: first sight and each later renewal move it; the same renewal does not.
        let h4 = observe(Some(&h3), &n2, Some(Some(ts("2020-01-01T00:00:20Z"))), at(50));
        assert_eq!(h4.probe, at(50));
        let h5 = observe(Some(&h4), &n2, Some(Some(ts("2020-01-01T00:00:20Z"))), at(60));
        assert_eq!(h5.probe, at(50));
        let h6 = observe(Some(&h5), &n2, Some(Some(ts("2020-01-01T00:00:21Z"))), at(70));
        assert_eq!(h6.probe, at(70));
        // Another node of the same name (new uid) starts over.
        let mut other = n2.clone();
        other.metadata.uid = Some("u2".into());
        assert_eq!(observe(Some(&h6), &other, None, at(80)).probe, at(80));
    }

    #[test]
    fn a_node_that_never_posted_status_is_judged_from_its_creation_with_the_startup_grace() {
        let config = Config::default();
        let n = node(json!({"metadata": {"name": "a", "uid": "u", "creationTimestamp": "2026-01-01T00:00:00Z"}}));
        let h = observe(None, &n, None, at(30));
        assert_eq!(h.probe, at(0), "from creation");
        let grace = grace_period(&n, &config);
        assert_eq!(grace, Duration::from_secs(60));
        assert!(!expired(&h, grace, at(60)));
        assert!(expired(&h, grace, at(61)));
        let conditions = unknown_conditions(&n, at(61)).expect("Ready appears");
        let ready = conditions.iter().find(|c| c.type_ == "Ready").expect("ready");
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert_eq!(ready.message.as_deref(), Some("Kubelet never posted node status."));
        assert_eq!(ready.last_heartbeat_time, n.metadata.creation_timestamp);
        assert_eq!(ready.last_transition_time, Some(Time(at(61))));
        let types: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, UNKNOWN_CONDITION_TYPES);
        // A Lease alone keeps such a node healthy (upstream: the node controller then
        // takes no action).
        let h2 = observe(Some(&h), &n, Some(Some(at(100))), at(100));
        assert!(!expired(&h2, grace, at(150)));
    }

    #[test]
    fn lost_nodes_get_unknown_conditions_and_only_a_ready_change_is_written() {
        let n = ready_node("True", "2026-01-01T00:00:00Z");
        let conditions = unknown_conditions(&n, at(50)).expect("Ready changes");
        let by = |t: &str| conditions.iter().find(|c| c.type_ == t).expect("condition").clone();
        let ready = by("Ready");
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(ready.message.as_deref(), Some("Kubelet stopped posting node status."));
        assert_eq!(ready.last_transition_time, Some(Time(at(50))));
        assert_eq!(
            ready.last_heartbeat_time,
            Some(Time(ts("2026-01-01T00:00:00Z"))),
            "the heartbeat is the node's, untouched"
        );
        assert_eq!(by("MemoryPressure").status, "Unknown");
        assert_eq!(by("DiskPressure").reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert_eq!(by("PIDPressure").status, "Unknown");
        assert_eq!(by("NetworkUnavailable").status, "False", "not ours to change");
        // Already Unknown: nothing to write.
        let mut unknown = n.clone();
        unknown.status.as_mut().expect("status").conditions = Some(conditions);
        assert_eq!(unknown_conditions(&unknown, at(60)), None);
    }

    #[test]
    fn a_node_update_mends_only_the_no_schedule_taints() {
        // A new node not ready yet (its agent has no pod CIDR): not-ready:NoSchedule, and
        // no NoExecute taint, which only the rate-limited monitor pass adds.
        let new = node(json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}));
        let out = no_schedule_plan(&new, at(1)).expect("a taint to add");
        assert_eq!(keys(&out), ["node.kubernetes.io/not-ready:NoSchedule"]);
        assert_eq!(out[0].time_added, Some(Time(at(1))));
        // Ready now: the NoSchedule taint goes, the NoExecute one stays for the monitor.
        let ready = node(json!({
            "spec": {"taints": [
                {"key": "dedicated", "effect": "NoSchedule"},
                {"key": TAINT_NOT_READY, "effect": "NoSchedule"},
                {"key": TAINT_NOT_READY, "effect": "NoExecute"},
            ]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }));
        let out = no_schedule_plan(&ready, at(2)).expect("a taint to remove");
        assert_eq!(
            keys(&out),
            ["dedicated:NoSchedule", "node.kubernetes.io/not-ready:NoExecute"]
        );
        // Taints in line with the conditions: nothing to write.
        let settled = node(json!({
            "spec": {"taints": [{"key": TAINT_NOT_READY, "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]},
        }));
        assert_eq!(no_schedule_plan(&settled, at(3)), None);
    }

    #[test]
    fn taints_follow_the_ready_condition() {
        let none = BTreeSet::new();
        // Ready=Unknown: both unreachable taints, with timeAdded.
        let n = node(json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}));
        let want = no_execute_for(ready_status(&n), false);
        assert_eq!(want, NoExecute::Want(TAINT_UNREACHABLE));
        let current = vec![taint("dedicated", "NoSchedule")];
        assert!(adds_no_execute(&current, want));
        let out = plan_taints(&current, &no_schedule_keys(&n), want, true, at(5)).expect("changes");
        assert_eq!(
            keys(&out),
            [
                "dedicated:NoSchedule",
                &format!("{TAINT_UNREACHABLE}:NoSchedule"),
                &format!("{TAINT_UNREACHABLE}:NoExecute")
            ]
        );
        assert!(out[1..].iter().all(|t| t.time_added == Some(Time(at(5)))));
        assert_eq!(out[0].time_added, None, "other taints untouched");
        // Without a token the NoExecute taint waits; the NoSchedule one does not.
        let out_no_token = plan_taints(&current, &no_schedule_keys(&n), want, false, at(5)).expect("changes");
        assert_eq!(
            keys(&out_no_token),
            ["dedicated:NoSchedule", &format!("{TAINT_UNREACHABLE}:NoSchedule")]
        );
        // Planned again on its own result: nothing to do (timeAdded kept).
        assert_eq!(plan_taints(&out, &no_schedule_keys(&n), want, true, at(9)), None);

        // Ready=False: swapped for not-ready at once, no token needed.
        let f = node(json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}));
        let want = no_execute_for(ready_status(&f), false);
        assert!(!adds_no_execute(&out, want), "a swap is not rate limited");
        let swapped = plan_taints(&out, &no_schedule_keys(&f), want, false, at(10)).expect("swap");
        assert_eq!(
            keys(&swapped),
            [
                "dedicated:NoSchedule",
                &format!("{TAINT_NOT_READY}:NoSchedule"),
                &format!("{TAINT_NOT_READY}:NoExecute")
            ]
        );

        // Ready=True: all of ours go.
        let t = node(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}));
        let back = plan_taints(
            &swapped,
            &no_schedule_keys(&t),
            no_execute_for(ready_status(&t), false),
            false,
            at(20),
        )
        .expect("removed");
        assert_eq!(keys(&back), ["dedicated:NoSchedule"]);

        // Every zone fully disrupted: no NoExecute taints, NoSchedule ones stay.
        let held = plan_taints(
            &out,
            &no_schedule_keys(&n),
            no_execute_for(ready_status(&n), true),
            true,
            at(30),
        )
        .expect("removed");
        assert_eq!(
            keys(&held),
            ["dedicated:NoSchedule", &format!("{TAINT_UNREACHABLE}:NoSchedule")]
        );

        // No Ready condition: the NoExecute pair is left as it is.
        let bare = node(json!({}));
        assert_eq!(no_execute_for(ready_status(&bare), false), NoExecute::Leave);
        let pair = vec![taint(TAINT_UNREACHABLE, "NoExecute")];
        assert_eq!(plan_taints(&pair, &none, NoExecute::Leave, false, at(0)), None);
    }

    #[test]
    fn pressure_and_unschedulable_taints() {
        let n = node(json!({
            "spec": {"unschedulable": true},
            "status": {"conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "MemoryPressure", "status": "True"},
                {"type": "DiskPressure", "status": "False"},
                {"type": "PIDPressure", "status": "True"},
                {"type": "NetworkUnavailable", "status": "True"}
            ]}
        }));
        let keys_: Vec<&str> = no_schedule_keys(&n).into_iter().collect();
        assert_eq!(
            keys_,
            [
                TAINT_MEMORY_PRESSURE,
                TAINT_NETWORK_UNAVAILABLE,
                TAINT_PID_PRESSURE,
                TAINT_UNSCHEDULABLE
            ]
        );
        // A stale one of ours goes; an admin's NoExecute taint of the same key stays.
        let current = vec![
            taint(TAINT_DISK_PRESSURE, "NoSchedule"),
            taint(TAINT_DISK_PRESSURE, "NoExecute"),
        ];
        let out = plan_taints(&current, &no_schedule_keys(&n), NoExecute::Remove, false, at(0)).expect("changes");
        assert_eq!(out[0].key, TAINT_DISK_PRESSURE);
        assert_eq!(out[0].effect, "NoExecute");
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn zones_and_their_eviction_rates() {
        let config = Config::default();
        assert_eq!(zone_state(0, 1, 0.55), ZoneState::FullDisruption);
        assert_eq!(zone_state(1, 0, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(1, 2, 0.55), ZoneState::Normal, "two not ready never disrupt");
        assert_eq!(zone_state(2, 3, 0.55), ZoneState::PartialDisruption);
        assert_eq!(zone_state(3, 3, 0.55), ZoneState::Normal);
        assert_eq!(zone_rate_per_s(ZoneState::Normal, 3, &config), 0.1);
        assert_eq!(zone_rate_per_s(ZoneState::FullDisruption, 3, &config), 0.1);
        assert_eq!(zone_rate_per_s(ZoneState::PartialDisruption, 50, &config), 0.0);
        assert_eq!(zone_rate_per_s(ZoneState::PartialDisruption, 51, &config), 0.01);

        let mut l = Limiter::default();
        assert!(l.try_take(0.1, at(0)), "burst 1");
        assert!(!l.try_take(0.1, at(9)));
        assert!(l.try_take(0.1, at(10)));
        assert!(!Limiter::default().try_take(0.0, at(0)), "rate 0 never");

        let zoned = node(json!({"metadata": {"labels": {"topology.kubernetes.io/zone": "z1",
            "failure-domain.beta.kubernetes.io/region": "r-beta", "topology.kubernetes.io/region": "r"}}}));
        assert_eq!(zone_key(&zoned), "r-beta:\0:z1");
        assert_eq!(zone_key(&node(json!({}))), "");
    }

    #[test]
    fn tolerations_match_as_upstream() {
        let unreachable = taint(TAINT_UNREACHABLE, "NoExecute");
        let yes = [
            json!({"operator": "Exists"}),
            json!({"key": TAINT_UNREACHABLE, "operator": "Exists"}),
            json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}),
            json!({"key": TAINT_UNREACHABLE, "effect": "NoExecute"}),
            json!({"key": TAINT_UNREACHABLE, "operator": "Equal", "value": ""}),
        ];
        for t in yes {
            assert!(tolerates(&toleration(t.clone()), &unreachable), "{t}");
        }
        let no = [
            json!({"key": TAINT_NOT_READY, "operator": "Exists"}),
            json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}),
            json!({"key": TAINT_UNREACHABLE, "operator": "Equal", "value": "x"}),
            json!({"key": TAINT_UNREACHABLE, "operator": "Gt", "value": "1"}),
        ];
        for t in no {
            assert!(!tolerates(&toleration(t.clone()), &unreachable), "{t}");
        }
    }

    #[test]
    fn eviction_verdicts() {
        let unreachable = (taint(TAINT_UNREACHABLE, "NoExecute"), at(100));
        let seconds = |s: i64| {
            toleration(
                json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": s}),
            )
        };
        let forever = toleration(json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}));
        let taints = [unreachable.clone()];
        assert_eq!(eviction_verdict(&[], &[], at(0)), Verdict::Keep, "no taints");
        assert_eq!(
            eviction_verdict(&taints, &[], at(100)),
            Verdict::EvictNow,
            "not tolerated"
        );
        let other = toleration(json!({"key": "dedicated", "operator": "Exists"}));
        assert_eq!(eviction_verdict(&taints, &[other], at(100)), Verdict::EvictNow);
        assert_eq!(
            eviction_verdict(&taints, std::slice::from_ref(&forever), at(1_000_000)),
            Verdict::Keep
        );
        assert_eq!(
            eviction_verdict(&taints, &[seconds(300)], at(150)),
            Verdict::EvictAt(at(400)),
            "from timeAdded"
        );
        assert_eq!(eviction_verdict(&taints, &[seconds(300)], at(400)), Verdict::EvictNow);
        assert_eq!(eviction_verdict(&taints, &[seconds(0)], at(100)), Verdict::EvictNow);
        assert_eq!(eviction_verdict(&taints, &[seconds(-5)], at(100)), Verdict::EvictNow);
        // The first toleration that matches a taint decides for it.
        assert_eq!(
            eviction_verdict(&taints, &[forever.clone(), seconds(1)], at(100)),
            Verdict::Keep
        );
        assert_eq!(
            eviction_verdict(&taints, &[seconds(1), forever], at(100)),
            Verdict::EvictAt(at(101))
        );
        // Several taints: the earliest deadline; one untolerated one evicts at once.
        let not_ready = (taint(TAINT_NOT_READY, "NoExecute"), at(200));
        let nr = toleration(
            json!({"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}),
        );
        assert_eq!(
            eviction_verdict(
                &[unreachable.clone(), not_ready.clone()],
                &[seconds(300), nr.clone()],
                at(150)
            ),
            Verdict::EvictAt(at(210))
        );
        assert_eq!(
            eviction_verdict(&[unreachable, not_ready], &[seconds(300)], at(150)),
            Verdict::EvictNow
        );
    }

    #[test]
    fn taints_without_time_added_count_from_their_first_sighting() {
        let tainted = |time_added: Option<&str>| {
            let mut t = json!({"key": TAINT_UNREACHABLE, "effect": "NoExecute"});
            if let Some(a) = time_added {
                t["timeAdded"] = json!(a);
            }
            node(json!({"metadata": {"name": "a"}, "spec": {"taints": [t, {"key": "x", "effect": "NoSchedule"}]}}))
        };
        let first = NodeEntry::new(tainted(None), None, at(10));
        assert_eq!(first.no_execute.len(), 1, "NoExecute taints only");
        assert_eq!(first.no_execute[0].1, at(10));
        let again = NodeEntry::new(tainted(None), Some(&first), at(20));
        assert_eq!(again.no_execute[0].1, at(10), "kept from the first sighting");
        let stamped = NodeEntry::new(tainted(Some("2026-01-01T00:00:03Z")), Some(&again), at(30));
        assert_eq!(stamped.no_execute[0].1, at(3), "timeAdded wins");
    }

    #[test]
    fn config_checks() {
        assert!(Config::default().check().is_ok());
        let bad = [
            Config {
                node_monitor_period: Duration::ZERO,
                ..Config::default()
            },
            Config {
                node_monitor_grace_period: Duration::ZERO,
                ..Config::default()
            },
            Config {
                node_evictions_per_s: -1.0,
                ..Config::default()
            },
            Config {
                unhealthy_zone_threshold: 0.0,
                ..Config::default()
            },
        ];
        for c in bad {
            assert!(c.check().is_err(), "{c:?}");
        }
    }
}
