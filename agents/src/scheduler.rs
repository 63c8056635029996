//! The scheduler: binds each unscheduled pod to a node (`pods/binding`), as upstream's
//! `kube-scheduler` with its default plugins, in part.
//!
//! For a pod, every node is first **filtered**:
//! - NodeUnschedulable: `spec.unschedulable` nodes, unless the pod tolerates
//!   `node.kubernetes.io/unschedulable:NoSchedule`;
//! - NodeAffinity: `nodeSelector`, and the required node affinity terms (`In`, `NotIn`,
//!   `Exists`, `DoesNotExist`, `Gt`, `Lt` on labels; `metadata.name` fields);
//! - TaintToleration: every `NoSchedule` / `NoExecute` taint must be tolerated;
//! - NodeResourcesFit: cpu, memory and pod count requested by the pods already bound
//!   (and those this scheduler bound whose binding it has not seen yet), plus this pod,
//!   within `allocatable`;
//! - NodePorts: no host port already taken.
//!
//! then the feasible ones are **scored**: least allocated and balanced allocation of cpu
//! and memory (0-100 each), plus the weights of the preferred node affinity terms that
//! match; the highest wins, ties broken at random.
//!
//! A pod that fits nowhere gets `PodScheduled=False` (reason `Unschedulable`, with
//! upstream's message "0/N nodes are available: …") and a `FailedScheduling` event, and
//! is tried again when a node changes, and after a backoff (1 s doubling to 60 s).
//! Pods that name a node (`spec.nodeName`) or another scheduler are not touched.
//!
//! Decisions are made one at a time under a lock, from caches of the nodes and of all
//! pods (watches), with the pods this scheduler has bound but not yet seen bound counted
//! as *assumed*; so two pods in flight never take the same room. The binding itself
//! happens outside the lock.
//!
//! Left out: PodTopologySpread, InterPodAffinity, preemption, extended resources and
//! volumes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Event, Node, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference, Pod, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::error::AgentError;
use crate::quantity;
use crate::runtime;

pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Requests or capacity: cpu in millicores, memory in bytes, pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_milli: i128,
    pub memory: i128,
    pub pods: i128,
}

impl std::ops::AddAssign for Resources {
    fn add_assign(&mut self, o: Resources) {
        self.cpu_milli += o.cpu_milli;
        self.memory += o.memory;
        self.pods += o.pods;
    }
}

fn requests_of(resources: Option<&k8s_openapi::api::core::v1::ResourceRequirements>) -> (i128, i128) {
    let requests = resources.and_then(|r| r.requests.as_ref());
    let get = |k: &str, f: fn(&str) -> Option<i128>| requests.and_then(|r| r.get(k)).and_then(|q| f(&q.0)).unwrap_or(0);
    (get("cpu", quantity::milli), get("memory", quantity::value))
}

/// What a pod asks for: its containers together, or its largest init container if that
/// is more (they run one at a time, before the others), plus its overhead; one pod.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources {
            pods: 1,
            ..Resources::default()
        };
    };
    let (mut cpu, mut memory) = (0, 0);
    for c in &spec.containers {
        let (c_cpu, c_mem) = requests_of(c.resources.as_ref());
        cpu += c_cpu;
        memory += c_mem;
    }
    for c in spec.init_containers.iter().flatten() {
        let (c_cpu, c_mem) = requests_of(c.resources.as_ref());
        cpu = cpu.max(c_cpu);
        memory = memory.max(c_mem);
    }
    for (k, q) in spec.overhead.iter().flatten() {
        match k.as_str() {
            "cpu" => cpu += quantity::milli(&q.0).unwrap_or(0),
            "memory" => memory += quantity::value(&q.0).unwrap_or(0),
            _ => {}
        }
    }
    Resources {
        cpu_milli: cpu,
        memory,
        pods: 1,
    }
}

fn allocatable(node: &Node) -> Resources {
    let alloc = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
    let get = |k: &str, f: fn(&str) -> Option<i128>| alloc.and_then(|a| a.get(k)).and_then(|q| f(&q.0)).unwrap_or(0);
    Resources {
        cpu_milli: get("cpu", quantity::milli),
        memory: get("memory", quantity::value),
        pods: get("pods", quantity::value),
    }
}

/// (protocol, port, host IP) of each host port a pod asks for.
fn host_ports(pod: &Pod) -> Vec<(String, i32, String)> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            Some((
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port,
                p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
            ))
        })
        .collect()
}

/// A node as the scheduler sees it for one decision.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub requested: Resources,
    pub ports: BTreeSet<(String, i32, String)>,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> NodeInfo {
        NodeInfo {
            node,
            requested: Resources::default(),
            ports: BTreeSet::new(),
        }
    }

    pub fn add_pod(&mut self, pod: &Pod) {
        self.requested += pod_requests(pod);
        self.ports.extend(host_ports(pod));
    }
}

fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
        let key_ok = t.key.as_deref().is_none_or(|k| k.is_empty()) || t.key.as_deref() == Some(taint.key.as_str());
        let value_ok = match t.operator.as_deref() {
            Some("Exists") => true,
            _ => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        };
        // An empty key with Exists tolerates everything.
        effect_ok && key_ok && value_ok
    })
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.clone().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let exprs = term.match_expressions.iter().flatten();
    let fields = term.match_fields.iter().flatten();
    if term.match_expressions.as_ref().is_none_or(|e| e.is_empty())
        && term.match_fields.as_ref().is_none_or(|f| f.is_empty())
    {
        return false;
    }
    exprs
        .into_iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.into_iter().all(|r| {
            let value = (r.key == "metadata.name").then(|| node.name_any());
            requirement_matches(r, value.as_deref())
        })
}

/// Why `node` cannot take `pod`, or Ok.
pub fn filter(pod: &Pod, requests: &Resources, info: &NodeInfo) -> Result<(), String> {
    let node = &info.node;
    let spec = pod.spec.clone().unwrap_or_default();
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    let node_spec = node.spec.clone().unwrap_or_default();
    if node_spec.unschedulable == Some(true) {
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        if !tolerates(&tolerations, &taint) {
            return Err("node(s) were unschedulable".into());
        }
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let affinity_ok = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .is_none_or(|required| required.node_selector_terms.iter().any(|t| term_matches(t, node)));
    if !selector_ok || !affinity_ok {
        return Err("node(s) didn't match Pod's node affinity/selector".into());
    }
    for taint in node_spec.taints.iter().flatten() {
        if (taint.effect == "NoSchedule" || taint.effect == "NoExecute") && !tolerates(&tolerations, taint) {
            return Err(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ));
        }
    }
    let alloc = allocatable(node);
    if info.requested.pods + requests.pods > alloc.pods {
        return Err("Too many pods".into());
    }
    if requests.cpu_milli > 0 && info.requested.cpu_milli + requests.cpu_milli > alloc.cpu_milli {
        return Err("Insufficient cpu".into());
    }
    if requests.memory > 0 && info.requested.memory + requests.memory > alloc.memory {
        return Err("Insufficient memory".into());
    }
    let conflict = host_ports(pod).iter().any(|(proto, port, ip)| {
        info.ports
            .iter()
            .any(|(p2, port2, ip2)| p2 == proto && port2 == port && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0"))
    });
    if conflict {
        return Err("node(s) didn't have free ports for the requested pod ports".into());
    }
    Ok(())
}

/// The node's score for the pod: least allocated + balanced allocation (0-100 each) +
/// the weights of the matching preferred node affinity terms.
pub fn score(pod: &Pod, requests: &Resources, info: &NodeInfo) -> i64 {
    let alloc = allocatable(&info.node);
    let fraction = |used: i128, total: i128| {
        if total <= 0 {
            1.0
        } else {
            (used as f64 / total as f64).min(1.0)
        }
    };
    let cpu = fraction(info.requested.cpu_milli + requests.cpu_milli, alloc.cpu_milli);
    let memory = fraction(info.requested.memory + requests.memory, alloc.memory);
    let least = ((1.0 - cpu) * 50.0 + (1.0 - memory) * 50.0).round() as i64;
    let balanced = ((1.0 - (cpu - memory).abs()) * 100.0).round() as i64;
    let preferred: i64 = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
        .map(|terms| {
            terms
                .iter()
                .filter(|t| term_matches(&t.preference, &info.node))
                .map(|t| i64::from(t.weight))
                .sum()
        })
        .unwrap_or(0);
    least + balanced + preferred
}

/// Upstream's message for a pod no node can take: "0/3 nodes are available: 1 Insufficient
/// cpu, 2 node(s) were unschedulable."
pub fn unschedulable_message(nodes: usize, reasons: &BTreeMap<String, usize>) -> String {
    let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    if parts.is_empty() {
        format!("0/{nodes} nodes are available.")
    } else {
        format!("0/{nodes} nodes are available: {}.", parts.join(", "))
    }
}

/// A pod bound by this scheduler, counted until the pod cache shows it bound, or, if the
/// cache never shows it (deleted meanwhile), for [`ASSUMED_TTL`] (upstream's 30 s).
struct Assumed {
    node: String,
    pod: Pod,
    at: std::time::Instant,
}

const ASSUMED_TTL: Duration = Duration::from_secs(30);

struct State {
    assumed: HashMap<String, Assumed>,
    /// Consecutive failures per pod, for the retry backoff.
    failures: HashMap<String, u32>,
}

struct Context {
    client: Client,
    nodes: Store<Node>,
    pods: Store<Pod>,
    state: Mutex<State>,
}

/// Pods waiting here at most (beyond it, the oldest failures are forgotten).
const FAILURES_MAX: usize = 100_000;

fn wants_us(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty)
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|n| n == SCHEDULER_NAME)
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Runs the scheduler until its future is dropped.
pub async fn run(client: Client) {
    let (nodes, nodes_writer) = reflector::store::<Node>();
    let (all_pods, pods_writer) = reflector::store::<Pod>();
    let node_api: Api<Node> = Api::all(client.clone());
    let pod_api: Api<Pod> = Api::all(client.clone());
    let node_watch = reflector::reflector(nodes_writer, watcher(node_api.clone(), watcher::Config::default()))
        .default_backoff()
        .for_each(|_| async {});
    let pod_watch = reflector::reflector(pods_writer, watcher(pod_api.clone(), watcher::Config::default()))
        .default_backoff()
        .for_each(|_| async {});
    let context = Arc::new(Context {
        client,
        nodes: nodes.clone(),
        pods: all_pods,
        state: Mutex::new(State {
            assumed: HashMap::new(),
            failures: HashMap::new(),
        }),
    });
    let pending = Controller::new(pod_api, watcher::Config::default().fields("spec.nodeName="));
    let pending_store = pending.store();
    let results = pending
        .watches(node_api, watcher::Config::default(), move |_node: Node| {
            // A node came, changed or went: every waiting pod may fit now.
            pending_store
                .state()
                .iter()
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, context);
    tokio::join!(node_watch, pod_watch, runtime::drive("scheduler", results));
}

fn error_policy(pod: Arc<Pod>, error: &AgentError, _context: Arc<Context>) -> Action {
    tracing::warn!(pod = %pod.name_any(), %error, "scheduling failed");
    Action::requeue(Duration::from_secs(1))
}

/// Chooses a node for `pod` and assumes it there, or says why none fits.
fn decide(context: &Context, pod: &Pod) -> Result<String, String> {
    let uid = pod.uid().unwrap_or_default();
    let requests = pod_requests(pod);
    let mut state = context
        .state
        .lock()
        .expect("invariant: no panics while the lock is held");
    let mut infos: BTreeMap<String, NodeInfo> = context
        .nodes
        .state()
        .into_iter()
        .map(|n| (n.name_any(), NodeInfo::new(n)))
        .collect();
    let mut seen_bound: HashMap<String, bool> = HashMap::new();
    for p in context.pods.state() {
        let bound_to = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        if let Some(uid) = p.uid() {
            seen_bound.insert(uid, bound_to.is_some());
        }
        let terminal = matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if let (Some(node), false) = (bound_to, terminal) {
            if let Some(info) = infos.get_mut(&node) {
                info.add_pod(&p);
            }
        }
    }
    // Assumed pods count until the cache shows them bound; one the cache does not have
    // (deleted before its binding showed) is dropped after the TTL, so the map stays bounded.
    state.assumed.retain(|uid, a| match seen_bound.get(uid) {
        Some(bound) => !bound,
        None => a.at.elapsed() < ASSUMED_TTL,
    });
    for a in state.assumed.values() {
        if let Some(info) = infos.get_mut(&a.node) {
            info.add_pod(&a.pod);
        }
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Vec<(i64, String)> = Vec::new();
    for (name, info) in &infos {
        match filter(pod, &requests, info) {
            Ok(()) => best.push((score(pod, &requests, info), name.clone())),
            Err(reason) => *reasons.entry(reason).or_insert(0) += 1,
        }
    }
    let top = best.iter().map(|b| b.0).max();
    let winners: Vec<&String> = best.iter().filter(|b| Some(b.0) == top).map(|b| &b.1).collect();
    if winners.is_empty() {
        return Err(unschedulable_message(infos.len(), &reasons));
    }
    let node = winners[rand_index(winners.len(), &uid)].clone();
    state.assumed.insert(
        uid,
        Assumed {
            node: node.clone(),
            pod: pod.clone(),
            at: std::time::Instant::now(),
        },
    );
    Ok(node)
}

/// A tie-break that differs from pod to pod (no random number generator needed).
fn rand_index(n: usize, seed: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    usize::try_from(h % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
}

async fn reconcile(pod: Arc<Pod>, context: Arc<Context>) -> Result<Action, AgentError> {
    if !wants_us(&pod) {
        return Ok(Action::await_change());
    }
    let (Some(namespace), name, uid) = (pod.namespace(), pod.name_any(), pod.uid().unwrap_or_default()) else {
        return Ok(Action::await_change());
    };
    context.nodes.wait_until_ready().await.ok();
    context.pods.wait_until_ready().await.ok();
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    match decide(&context, &pod) {
        Ok(node) => {
            let binding = json!({"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
            let result = pods
                .create_subresource::<serde_json::Value, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await;
            let mut state = context
                .state
                .lock()
                .expect("invariant: no panics while the lock is held");
            match result {
                Ok(_) => {
                    state.failures.remove(&uid);
                    drop(state);
                    tracing::debug!(pod = %name, %node, "bound");
                    Ok(Action::await_change())
                }
                Err(e) => {
                    state.assumed.remove(&uid);
                    match e {
                        // Bound meanwhile, or gone.
                        kube::Error::Api(s) if s.code == 409 || s.code == 404 => Ok(Action::await_change()),
                        e => Err(e.into()),
                    }
                }
            }
        }
        Err(message) => {
            let delay = {
                let mut state = context
                    .state
                    .lock()
                    .expect("invariant: no panics while the lock is held");
                if state.failures.len() >= FAILURES_MAX && !state.failures.contains_key(&uid) {
                    state.failures.clear();
                }
                let n = state.failures.entry(uid).or_insert(0);
                *n = n.saturating_add(1);
                Duration::from_secs(1u64 << (*n - 1).min(6)).min(Duration::from_secs(60))
            };
            report_unschedulable(&context, &pod, &namespace, &message).await?;
            Ok(Action::requeue(delay))
        }
    }
}

/// `PodScheduled=False` on the pod (when it changed) and a `FailedScheduling` event.
async fn report_unschedulable(context: &Context, pod: &Pod, namespace: &str, message: &str) -> Result<(), AgentError> {
    let name = pod.name_any();
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
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), namespace);
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
    let events: Api<Event> = Api::namespaced(context.client.clone(), namespace);
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}.")),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.clone()),
            namespace: Some(namespace.into()),
            uid: pod.uid(),
            ..ObjectReference::default()
        },
        reason: Some("FailedScheduling".into()),
        message: Some(message.into()),
        type_: Some("Warning".into()),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some(SCHEDULER_NAME.into()),
            host: None,
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now.clone()),
        count: Some(1),
        ..Event::default()
    };
    if let Err(e) = events.create(&PostParams::default(), &event).await {
        tracing::warn!(pod = %name, error = %e, "could not record the FailedScheduling event");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: serde_json::Value) -> NodeInfo {
        NodeInfo::new(Arc::new(serde_json::from_value(v).expect("node")))
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    fn big_node(name: &str) -> serde_json::Value {
        json!({"metadata": {"name": name, "labels": {"disk": "ssd", "rank": "5"}},
               "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}})
    }

    fn asking(cpu: &str) -> Pod {
        pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]}}))
    }

    #[test]
    fn resources_fit_counts_what_is_bound() {
        let mut n = node(big_node("n"));
        let p = asking("1500m");
        let r = pod_requests(&p);
        assert_eq!(
            r,
            Resources {
                cpu_milli: 1500,
                memory: 1 << 30,
                pods: 1
            }
        );
        assert_eq!(filter(&p, &r, &n), Ok(()));
        n.add_pod(&p);
        assert_eq!(filter(&p, &r, &n), Err("Insufficient cpu".into()));
        let small = asking("500m");
        assert_eq!(filter(&small, &pod_requests(&small), &n), Ok(()));
    }

    #[test]
    fn unschedulable_nodes_taints_and_tolerations() {
        let mut v = big_node("n");
        v["spec"] = json!({"unschedulable": true});
        let n = node(v);
        let p = asking("1");
        assert_eq!(
            filter(&p, &pod_requests(&p), &n),
            Err("node(s) were unschedulable".into())
        );
        let mut v = big_node("t");
        v["spec"] = json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]});
        let t = node(v);
        assert_eq!(
            filter(&p, &pod_requests(&p), &t),
            Err("node(s) had untolerated taint {dedicated: gpu}".into())
        );
        let tolerant = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [],
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}}));
        assert_eq!(filter(&tolerant, &pod_requests(&tolerant), &t), Ok(()));
        let everything = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [],
            "tolerations": [{"operator": "Exists"}]}}));
        assert_eq!(filter(&everything, &pod_requests(&everything), &t), Ok(()));
    }

    #[test]
    fn node_selectors_and_affinity() {
        let n = node(big_node("n"));
        let sel = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "nodeSelector": {"disk": "hdd"}}}));
        assert!(filter(&sel, &pod_requests(&sel), &n).is_err());
        let aff = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "rank", "operator": "Gt", "values": ["3"]}]},
            ]}}}}}),
        );
        assert_eq!(filter(&aff, &pod_requests(&aff), &n), Ok(()));
        let by_name = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["other"]}]},
            ]}}}}}),
        );
        assert!(filter(&by_name, &pod_requests(&by_name), &n).is_err());
    }

    #[test]
    fn host_ports_conflict() {
        let mut n = node(big_node("n"));
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c",
            "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}));
        n.add_pod(&p);
        assert_eq!(
            filter(&p, &pod_requests(&p), &n),
            Err("node(s) didn't have free ports for the requested pod ports".into())
        );
    }

    #[test]
    fn emptier_nodes_score_higher_and_preferences_add() {
        let empty = node(big_node("a"));
        let mut busy = node(big_node("b"));
        busy.add_pod(&asking("1"));
        let p = asking("500m");
        assert!(score(&p, &pod_requests(&p), &empty) > score(&p, &pod_requests(&p), &busy));
        let pref = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "affinity": {"nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 40, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}
            ]}}}}),
        );
        let plain = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
        assert_eq!(
            score(&pref, &pod_requests(&pref), &empty) - score(&plain, &pod_requests(&plain), &empty),
            40
        );
    }

    #[test]
    fn the_unschedulable_message_is_upstreams() {
        let reasons: BTreeMap<String, usize> = [
            ("Insufficient cpu".to_string(), 1),
            ("node(s) were unschedulable".to_string(), 2),
        ]
        .into();
        assert_eq!(
            unschedulable_message(3, &reasons),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) were unschedulable."
        );
    }
}
