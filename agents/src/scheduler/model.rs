//! What the scheduler reads from pods and nodes, parsed once per object version: resource
//! requests and capacity, host ports, taints and tolerations, node selector terms.
//!
//! Nodes are kept as [`NodeFacts`] (labels, taints, cordon, allocatable), built when the
//! node's watch event arrives, so a decision never parses a quantity or clones a spec.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, ResourceRequirements, Taint, Toleration,
};
use kube::ResourceExt;

use crate::quantity;

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

impl std::ops::SubAssign for Resources {
    fn sub_assign(&mut self, o: Resources) {
        self.cpu_milli -= o.cpu_milli;
        self.memory -= o.memory;
        self.pods -= o.pods;
    }
}

/// Upstream's stand-ins for a container that requests no cpu or no memory, used only for
/// scoring (`DefaultMilliCPURequest`, `DefaultMemoryRequest`), so that such pods still
/// spread instead of piling onto one node.
const NON_ZERO_CPU_MILLI: i128 = 100;
const NON_ZERO_MEMORY: i128 = 200 * 1024 * 1024;

/// (cpu, memory) one container asks for; `non_zero` puts upstream's defaults in for the
/// ones it does not name.
fn container_requests(resources: Option<&ResourceRequirements>, non_zero: bool) -> (i128, i128) {
    let requests = resources.and_then(|r| r.requests.as_ref());
    let get = |k: &str, f: fn(&str) -> Option<i128>, default: i128| match requests.and_then(|r| r.get(k)) {
        Some(q) => f(&q.0).unwrap_or(0),
        None if non_zero => default,
        None => 0,
    };
    (
        get("cpu", quantity::milli, NON_ZERO_CPU_MILLI),
        get("memory", quantity::value, NON_ZERO_MEMORY),
    )
}

/// (cpu, memory) of the pod: its containers together, or its largest init container if that
/// is more (they run one at a time, before the others), plus its overhead.
fn cpu_memory(pod: &Pod, non_zero: bool) -> (i128, i128) {
    let Some(spec) = pod.spec.as_ref() else {
        return (0, 0);
    };
    let (mut cpu, mut memory) = (0, 0);
    for c in &spec.containers {
        let (c_cpu, c_mem) = container_requests(c.resources.as_ref(), non_zero);
        cpu += c_cpu;
        memory += c_mem;
    }
    for c in spec.init_containers.iter().flatten() {
        // Init containers count as they are: upstream's non-zero defaults apply to the
        // regular containers only.
        let (c_cpu, c_mem) = container_requests(c.resources.as_ref(), false);
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
    (cpu, memory)
}

/// What a pod asks for: cpu and memory (see [`cpu_memory`]) and one pod.
pub fn pod_requests(pod: &Pod) -> Resources {
    let (cpu_milli, memory) = cpu_memory(pod, false);
    Resources {
        cpu_milli,
        memory,
        pods: 1,
    }
}

/// The (cpu, memory) scoring counts for the pod (upstream's `NonZeroRequested`).
pub(crate) fn non_zero_requests(pod: &Pod) -> (i128, i128) {
    cpu_memory(pod, true)
}

/// A node's `status.allocatable` (its capacity if it has none).
pub(crate) fn allocatable(node: &Node) -> Resources {
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

/// (protocol, port, host IP) of a host port.
pub(crate) type HostPort = (String, i32, String);

/// The host ports a pod asks for.
pub(crate) fn host_ports(pod: &Pod) -> Vec<HostPort> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            Some((
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port,
                p.host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
            ))
        })
        .collect()
}

/// Whether two host ports collide: same protocol and port, and the same address or either
/// on every address.
pub(crate) fn ports_conflict(a: &HostPort, b: &HostPort) -> bool {
    a.0 == b.0 && a.1 == b.1 && (a.2 == b.2 || a.2 == "0.0.0.0" || b.2 == "0.0.0.0")
}

/// Upstream's `Toleration.ToleratesTaint`: an empty effect or key matches all, an empty
/// operator means `Equal`.
pub(crate) fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    if t.key.as_deref().is_some_and(|k| !k.is_empty() && k != taint.key) {
        return false;
    }
    match t.operator.as_deref() {
        None | Some("") | Some("Equal") => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        Some("Exists") => true,
        Some(_) => false,
    }
}

pub(crate) fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The first `NoSchedule` / `NoExecute` taint the tolerations do not cover.
pub(crate) fn untolerated_taint<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints
        .iter()
        .find(|t| (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerated(tolerations, t))
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
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

/// Whether a node selector term matches a node; an empty term matches nothing (upstream).
pub(crate) fn term_matches(term: &NodeSelectorTerm, node: &NodeFacts) -> bool {
    if term.match_expressions.as_ref().is_none_or(|e| e.is_empty())
        && term.match_fields.as_ref().is_none_or(|f| f.is_empty())
    {
        return false;
    }
    term.match_expressions
        .iter()
        .flatten()
        .all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)))
        && term.match_fields.iter().flatten().all(|r| {
            let value = (r.key == "metadata.name").then_some(node.name.as_str());
            requirement_matches(r, value)
        })
}

/// A node as the scheduler needs it, parsed once per version of the node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub unschedulable: bool,
    pub taints: Vec<Taint>,
    pub allocatable: Resources,
}

impl NodeFacts {
    pub fn of(node: &Node) -> NodeFacts {
        let spec = node.spec.as_ref();
        NodeFacts {
            name: node.name_any(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable) == Some(true),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            allocatable: allocatable(node),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    #[test]
    fn requests_count_containers_the_largest_init_container_and_overhead() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "250m"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1", "memory": "1Mi"}}}],
            "overhead": {"cpu": "10m"}}}));
        assert_eq!(
            pod_requests(&p),
            Resources {
                cpu_milli: 1010,
                memory: 64 << 20,
                pods: 1
            }
        );
        // For scoring, b's missing memory request counts as upstream's 200 MiB.
        assert_eq!(non_zero_requests(&p), (1010, (64 << 20) + NON_ZERO_MEMORY));
    }

    #[test]
    fn tolerations_as_upstream_matches_them() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        let t = |v: serde_json::Value| -> Toleration { serde_json::from_value(v).expect("toleration") };
        assert!(
            tolerates(&t(json!({"key": "k", "value": "v"})), &taint),
            "empty operator is Equal"
        );
        assert!(!tolerates(&t(json!({"key": "k", "value": "w"})), &taint));
        assert!(
            tolerates(&t(json!({"operator": "Exists"})), &taint),
            "empty key with Exists"
        );
        assert!(!tolerates(
            &t(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})),
            &taint
        ));
        assert!(!tolerates(&t(json!({"key": "k", "operator": "Bogus"})), &taint));
    }
}
