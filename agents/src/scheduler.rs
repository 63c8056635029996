//! The scheduler: binds each unscheduled pod to a node (`pods/binding`), as upstream's
//! `kube-scheduler` with its default plugins (the ones that need no volumes or images).
//!
//! For a pod, nodes are **filtered** (NodeUnschedulable, TaintToleration, NodeAffinity and
//! nodeSelector, NodePorts, NodeResourcesFit, PodTopologySpread `DoNotSchedule`,
//! InterPodAffinity: required affinity, required anti-affinity, and the existing pods'
//! required anti-affinity against it), then the feasible ones **scored** (least allocated,
//! balanced allocation, preferred node affinity, `PreferNoSchedule` taints, spread
//! `ScheduleAnyway`, preferred pod affinity and anti-affinity both ways) with upstream's
//! normalization and weights; the best wins, ties broken at random. The details, and the
//! messages, are in [`algorithm`]'s documentation. As upstream, a decision stops filtering
//! once `percentageOfNodesToScore` of the nodes (adaptive: 420 of 1,000) are feasible.
//!
//! A pod that fits nowhere gets `PodScheduled=False` (reason `Unschedulable`, with
//! upstream's message "0/N nodes are available: …") and a `FailedScheduling` event (both
//! only when the message changes), and waits in the [`queue`] until an event may have made
//! room (after a backoff of 1 s doubling to 10 s), or 60 s. Pods that name a node
//! (`spec.nodeName`), another scheduler, have scheduling gates, or are terminating are not
//! touched. Higher `spec.priority` goes first.
//!
//! **Throughput.** One watch of all pods, one of nodes, one of namespaces (for affinity
//! terms' `namespaceSelector`) feed an incremental [`cache`]: per node the requested
//! resources, host ports and pod count; per spread constraint or affinity term the matching
//! pods per node; per distinct affinity term of existing pods the nodes holding them. A
//! decision reads those (O(nodes), not O(pods)) under one lock and assumes the pod on the
//! chosen node at once; the binding is then written while the next pods are decided, with
//! at most [`BINDINGS_IN_FLIGHT_MAX`] requests in flight. An assumed pod counts like a bound
//! one, so bindings in flight never double-book a node; it stops counting when its binding
//! fails, or 30 s after its binding succeeded if the watch never shows it bound.
//!
//! Decisions wait until the three watches have listed everything once (a decision from a
//! half-filled cache could overcommit). A relist (after a watch error) replaces the cache's
//! contents, keeping the assumed pods whose bindings are still in flight.
//!
//! **Metrics** ([`crate::metrics::SchedulerMetrics`], given to [`run_with_metrics`]): each
//! attempt (a pod taken from the queue, until its binding is written or it is parked) by
//! result and duration, and the queue's pods every [`EXPIRY_CHECK_PERIOD`].
//!
//! Left out: preemption (DefaultPreemption, so no "preemption: …" part in the message), the
//! volume plugins, ImageLocality, extended and ephemeral-storage resources, sidecar
//! (restartable init) containers' own accounting (they count as init containers), upstream's
//! system default spread constraints (a pod without constraints is not spread by its
//! Service or ReplicaSet), the NodeAffinity pre-filter that narrows the nodes of a
//! `metadata.name` term (such a pod gets the usual per-node reasons), event series (one
//! event per new message), scheduling profiles and extenders, and queueing hints finer than
//! the two kinds of [`queue::ClusterEvent`].

mod algorithm;
mod cache;
mod model;
mod queue;
mod selector;

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{Future, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

pub use algorithm::unschedulable_message;
pub use model::{pod_requests, Resources};

use crate::error::AgentError;
use crate::events;
use crate::metrics::{AttemptResult, SchedulerMetrics};
use algorithm::{FitError, Rng};
use cache::{Cache, PodChange, ASSUMED_TTL};
use queue::{ClusterEvent, Queue};

pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Bindings (and Unschedulable reports) being written at once, at most.
pub const BINDINGS_IN_FLIGHT_MAX: usize = 32;

/// How often assumed pods are checked for expiry.
const EXPIRY_CHECK_PERIOD: Duration = Duration::from_secs(1);

/// Whether this scheduler should place the pod.
fn wants_us(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty)
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|n| n.is_empty() || n == SCHEDULER_NAME)
        && spec
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_none_or(|g| g.is_empty())
        && pod.metadata.deletion_timestamp.is_none()
        && !terminal(pod)
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Objects seen during a relist (between a watch's `Init` and `InitDone`).
type Relist = Option<HashSet<String>>;

struct State {
    cache: Cache,
    queue: Queue,
    rng: Rng,
    nodes_synced: bool,
    pods_synced: bool,
    namespaces_synced: bool,
    pods_relist: Relist,
    nodes_relist: Relist,
    namespaces_relist: Relist,
}

impl State {
    fn synced(&self) -> bool {
        self.nodes_synced && self.pods_synced && self.namespaces_synced
    }

    fn on_pod(&mut self, pod: Pod, now: Instant) {
        let Some(uid) = pod.uid() else { return };
        if let Some(seen) = self.pods_relist.as_mut() {
            seen.insert(uid.clone());
        }
        if let Some(node) = node_name(&pod) {
            self.queue.remove(&uid);
            if terminal(&pod) {
                // Upstream's scheduler does not see finished pods at all.
                if self.cache.delete_pod(&uid) {
                    self.queue.on_event(ClusterEvent::RoomFreed, now);
                }
                return;
            }
            let node = node.to_string();
            match self.cache.apply_pod(&uid, &pod, &node) {
                // A pod bound (ours included, as upstream's informer reports it) may be
                // what a waiting pod's affinity or spread needs.
                PodChange::Added | PodChange::Confirmed => self.queue.on_event(ClusterEvent::PodArrived, now),
                PodChange::Updated => self.queue.on_event(ClusterEvent::RoomFreed, now),
                PodChange::Unchanged => {}
            }
        } else if self.cache.has_pod(&uid) {
            // Ours, with its binding in flight or not yet seen: an older version of it.
        } else if wants_us(&pod) {
            self.queue.add_or_update(&uid, Arc::new(pod), now);
        } else {
            self.queue.remove(&uid);
        }
    }

    fn on_pod_deleted(&mut self, uid: &str, now: Instant) {
        self.queue.remove(uid);
        if self.cache.delete_pod(uid) {
            self.queue.on_event(ClusterEvent::RoomFreed, now);
        }
    }
}

struct Scheduler {
    client: Client,
    state: Mutex<State>,
    /// Wakes the scheduling loop: a pod queued, caches synced, parked pods retried.
    wake: Notify,
    metrics: Option<SchedulerMetrics>,
}

impl Scheduler {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("invariant: no panics while the lock is held")
    }

    /// Records one attempt that began at `started`.
    fn attempted(&self, result: AttemptResult, started: Instant) {
        if let Some(m) = &self.metrics {
            m.attempt(SCHEDULER_NAME, result, started.elapsed());
        }
    }
}

/// Runs the scheduler until its future is dropped.
pub async fn run(client: Client) {
    run_with_metrics(client, None).await;
}

/// [`run`], recording its attempts and queue in `metrics`.
pub async fn run_with_metrics(client: Client, metrics: Option<SchedulerMetrics>) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let s = Arc::new(Scheduler {
        client,
        state: Mutex::new(State {
            cache: Cache::default(),
            queue: Queue::default(),
            rng: Rng::new(seed),
            nodes_synced: false,
            pods_synced: false,
            namespaces_synced: false,
            pods_relist: None,
            nodes_relist: None,
            namespaces_relist: None,
        }),
        wake: Notify::new(),
        metrics: metrics.clone(),
    });
    // A scheduler that stops (its lead lost) has no queue: its last counts must not stay.
    let _pending = metrics.map(ClearPending);
    tokio::join!(
        watch(&s, "pods", State::on_pod_event),
        watch(&s, "nodes", State::on_node_event),
        watch(&s, "namespaces", State::on_namespace_event),
        schedule_loop(&s),
        expire_assumed(&s)
    );
}

/// Sets the pending pods to none when dropped.
struct ClearPending(SchedulerMetrics);

impl Drop for ClearPending {
    fn drop(&mut self) {
        self.0.set_pending(crate::metrics::PendingPods::default());
    }
}

/// Feeds one resource's watch events to `handle` under the lock, then wakes the loop.
async fn watch<K>(s: &Scheduler, what: &str, handle: fn(&mut State, watcher::Event<K>, Instant))
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let api: Api<K> = Api::all(s.client.clone());
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => handle(&mut s.lock(), event, Instant::now()),
            Err(error) => {
                tracing::warn!(what, %error, "watch failed; retrying");
                continue;
            }
        }
        s.wake.notify_one();
    }
}

impl State {
    fn on_pod_event(&mut self, event: watcher::Event<Pod>, now: Instant) {
        match event {
            watcher::Event::Init => self.pods_relist = Some(HashSet::new()),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => self.on_pod(pod, now),
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.uid() {
                    self.on_pod_deleted(&uid, now);
                }
            }
            watcher::Event::InitDone => {
                let seen = self.pods_relist.take().unwrap_or_default();
                if self.cache.retain_pods(&seen) {
                    self.queue.on_event(ClusterEvent::RoomFreed, now);
                }
                // Pods in flight stay queued (they were listed): a failed binding parks them.
                self.queue.retain(|uid| seen.contains(uid));
                self.pods_synced = true;
            }
        }
    }

    fn on_node_event(&mut self, event: watcher::Event<Node>, now: Instant) {
        match event {
            watcher::Event::Init => self.nodes_relist = Some(HashSet::new()),
            watcher::Event::InitApply(node) | watcher::Event::Apply(node) => {
                if let Some(seen) = self.nodes_relist.as_mut() {
                    seen.insert(node.name_any());
                }
                if self.cache.apply_node(&node) {
                    self.queue.on_event(ClusterEvent::RoomFreed, now);
                }
            }
            watcher::Event::Delete(node) => {
                self.cache.delete_node(&node.name_any());
                // One domain fewer may lower a spread constraint's skew.
                self.queue.on_event(ClusterEvent::RoomFreed, now);
            }
            watcher::Event::InitDone => {
                let seen = self.nodes_relist.take().unwrap_or_default();
                self.cache.retain_nodes(&seen);
                self.queue.on_event(ClusterEvent::RoomFreed, now);
                self.nodes_synced = true;
            }
        }
    }

    fn on_namespace_event(&mut self, event: watcher::Event<Namespace>, now: Instant) {
        match event {
            watcher::Event::Init => self.namespaces_relist = Some(HashSet::new()),
            watcher::Event::InitApply(ns) | watcher::Event::Apply(ns) => {
                let name = ns.name_any();
                if let Some(seen) = self.namespaces_relist.as_mut() {
                    seen.insert(name.clone());
                }
                if self
                    .cache
                    .apply_namespace(&name, ns.metadata.labels.unwrap_or_default())
                {
                    // Namespace selectors of affinity terms may match differently now.
                    self.queue.on_event(ClusterEvent::RoomFreed, now);
                }
            }
            watcher::Event::Delete(ns) => self.cache.delete_namespace(&ns.name_any()),
            watcher::Event::InitDone => {
                let seen = self.namespaces_relist.take().unwrap_or_default();
                self.cache.retain_namespaces(&seen);
                self.namespaces_synced = true;
            }
        }
    }
}

/// Drops assumed pods whose binding succeeded long ago but never showed in the watch;
/// counts the queue's pods for the metrics.
async fn expire_assumed(s: &Scheduler) {
    let mut tick = tokio::time::interval(EXPIRY_CHECK_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let mut st = s.lock();
        if let Some(m) = &s.metrics {
            // O(pending pods) under the lock, once a period: not on every change.
            m.set_pending(st.queue.pending(now));
        }
        if st.cache.expire_assumed(now, ASSUMED_TTL) > 0 {
            st.queue.on_event(ClusterEvent::RoomFreed, now);
            drop(st);
            s.wake.notify_one();
        }
    }
}

/// The next pod to schedule, once the caches are synced. Cancel-safe: a pod is taken from
/// the queue only right before returning.
async fn next_pod(s: &Scheduler) -> (String, Arc<Pod>) {
    loop {
        let timer = {
            let mut st = s.lock();
            if st.synced() {
                if let Some(next) = st.queue.pop(Instant::now()) {
                    return next;
                }
            }
            st.queue.next_timer()
        };
        match timer {
            Some(at) => {
                tokio::select! {
                    () = s.wake.notified() => {}
                    () = tokio::time::sleep_until(at.into()) => {}
                }
            }
            None => s.wake.notified().await,
        }
    }
}

/// What a binding or a report ended with.
enum Outcome {
    Bound {
        uid: String,
        pod: String,
        node: String,
        result: Result<(), kube::Error>,
        /// When the attempt began (the pod was taken from the queue).
        started: Instant,
    },
    Reported {
        pod: String,
        result: Result<(), AgentError>,
    },
}

type Pending = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Takes pods one at a time, decides under the lock, and writes bindings and reports
/// concurrently (at most [`BINDINGS_IN_FLIGHT_MAX`]).
async fn schedule_loop(s: &Scheduler) {
    let mut in_flight: FuturesUnordered<Pending> = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(outcome) = in_flight.next(), if !in_flight.is_empty() => finish(s, outcome),
            (uid, pod) = next_pod(s), if in_flight.len() < BINDINGS_IN_FLIGHT_MAX => {
                let started = Instant::now();
                let decision = {
                    let mut st = s.lock();
                    let st = &mut *st;
                    algorithm::schedule(&mut st.cache, &uid, &pod, &mut st.rng)
                };
                in_flight.push(match decision {
                    Ok(node) => Box::pin(bind(s.client.clone(), uid, pod, node, started)),
                    Err(fit) => {
                        let now = Instant::now();
                        s.lock().queue.park(&uid, now, fit.pod_arrivals_may_help, false);
                        s.attempted(AttemptResult::Unschedulable, started);
                        Box::pin(report(s.client.clone(), pod, fit))
                    }
                });
            }
        }
    }
}

async fn bind(client: Client, uid: String, pod: Arc<Pod>, node: String, started: Instant) -> Outcome {
    let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    let result = pods
        .create_subresource::<serde_json::Value, serde_json::Value>("binding", &name, &PostParams::default(), &binding)
        .await
        .map(|_| ());
    Outcome::Bound {
        uid,
        pod: format!("{namespace}/{name}"),
        node,
        result,
        started,
    }
}

async fn report(client: Client, pod: Arc<Pod>, fit: FitError) -> Outcome {
    let message = fit.message();
    let result = report_unschedulable(&client, &pod, &message).await;
    Outcome::Reported {
        pod: format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
        result,
    }
}

fn finish(s: &Scheduler, outcome: Outcome) {
    let now = Instant::now();
    match outcome {
        Outcome::Bound {
            uid,
            pod,
            node,
            result: Ok(()),
            started,
        } => {
            tracing::debug!(%pod, %node, "bound");
            s.attempted(AttemptResult::Scheduled, started);
            let mut st = s.lock();
            st.cache.finish_binding(&uid, now);
            st.queue.bound(&uid);
        }
        Outcome::Bound {
            uid,
            pod,
            node,
            result: Err(error),
            started,
        } => {
            s.attempted(AttemptResult::Error, started);
            let mut st = s.lock();
            let freed = st.cache.forget(&uid);
            match &error {
                // Gone: its deletion comes through the watch.
                kube::Error::Api(e) if e.code == 404 => st.queue.remove(&uid),
                _ => {
                    // Bound meanwhile (409: the watch will show it, and take it out of the
                    // queue), or the request failed: tried again after a backoff.
                    tracing::warn!(%pod, %node, %error, "binding failed");
                    st.queue.park(&uid, now, false, true);
                }
            }
            if freed {
                st.queue.on_event(ClusterEvent::RoomFreed, now);
            }
            drop(st);
            s.wake.notify_one();
        }
        Outcome::Reported { pod, result } => {
            if let Err(error) = result {
                tracing::warn!(%pod, %error, "could not report the pod unschedulable");
            }
        }
    }
}

/// `PodScheduled=False` on the pod and a `FailedScheduling` event, unless the pod already
/// carries this message.
async fn report_unschedulable(client: &Client, pod: &Pod, message: &str) -> Result<(), AgentError> {
    let name = pod.name_any();
    let namespace = pod.namespace().unwrap_or_default();
    tracing::debug!(pod = %name, %message, "unschedulable");
    let already = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "PodScheduled" && c.status == "False" && c.message.as_deref() == Some(message))
        });
    if already {
        return Ok(());
    }
    let now = Time(Timestamp::now());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut conditions: Vec<serde_json::Value> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .filter(|c| c.type_ != "PodScheduled")
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default();
    conditions.push(
        json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastProbeTime": null, "lastTransitionTime": now}),
    );
    let patch = json!({"status": {"conditions": conditions}});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    events::record(
        client,
        events::reference(pod),
        events::WARNING,
        "FailedScheduling",
        message,
        SCHEDULER_NAME,
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pending_pods_of_this_scheduler_are_taken() {
        let pod = |spec: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).expect("pod")
        };
        assert!(wants_us(&pod(json!({"containers": []}))));
        assert!(wants_us(&pod(
            json!({"containers": [], "schedulerName": SCHEDULER_NAME})
        )));
        assert!(!wants_us(&pod(json!({"containers": [], "schedulerName": "other"}))));
        assert!(!wants_us(&pod(json!({"containers": [], "nodeName": "n"}))));
        assert!(!wants_us(&pod(
            json!({"containers": [], "schedulingGates": [{"name": "g"}]})
        )));
    }

    #[test]
    fn a_relist_keeps_bindings_in_flight_and_drops_what_is_gone() {
        let pod = |name: &str, node: Option<&str>| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default", "uid": name},
                "spec": {"containers": [], "nodeName": node}}))
            .expect("pod")
        };
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n"},
            "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "10"}}}))
        .expect("node");
        let mut st = State {
            cache: Cache::default(),
            queue: Queue::default(),
            rng: Rng::new(1),
            nodes_synced: true,
            pods_synced: true,
            namespaces_synced: true,
            pods_relist: None,
            nodes_relist: None,
            namespaces_relist: None,
        };
        let now = Instant::now();
        st.cache.apply_node(&node);
        st.on_pod(pod("bound", Some("n")), now);
        st.on_pod(pod("waiting", None), now);
        let (uid, p) = st.queue.pop(now).expect("queued");
        assert_eq!(
            algorithm::schedule(&mut st.cache, &uid, &p, &mut st.rng),
            Ok("n".to_string())
        );
        // An older, unbound version of the pod in flight does not queue it again.
        st.on_pod(pod("waiting", None), now);
        assert!(st.queue.pop(now).is_none());
        // A relist that no longer has "bound" and still shows "waiting" unbound.
        st.on_pod_event(watcher::Event::Init, now);
        st.on_pod_event(watcher::Event::InitApply(pod("waiting", None)), now);
        st.on_pod_event(watcher::Event::InitDone, now);
        assert!(!st.cache.has_pod("bound"));
        assert!(st.cache.has_pod("waiting"), "its binding is still in flight");
        // The binding fails: the pod is forgotten and tried again after its backoff.
        assert!(st.cache.forget("waiting"));
        st.queue.park("waiting", now, false, true);
        let later = now + queue::BACKOFF_INITIAL;
        assert_eq!(st.queue.pop(later).map(|(uid, _)| uid).as_deref(), Some("waiting"));
    }
}
