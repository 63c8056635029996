//! The scheduler's cache: every node and every bound pod, kept up to date from the watches
//! and from this scheduler's own bindings in flight, with the aggregates a decision reads
//! kept incrementally so that no decision walks all pods.
//!
//! Per node ([`NodeInfo`]): the requests of its pods (and upstream's non-zero version for
//! scoring), the host ports taken (a multiset) and the pod count. A node is a *slot*: pods
//! that name a node the cache has not seen (or one deleted) keep a slot without facts, so
//! the counts are right when the node (re)appears, as upstream's "ghost" node infos.
//!
//! Per pod query ([`Query`]): how many bound pods on each node match it. PodTopologySpread
//! and InterPodAffinity ask these (one query per spread constraint, per anti-affinity or
//! preferred term, one for all required affinity terms together). A query is counted over
//! all pods the first time it is asked (O(pods), once), then kept up to date on every pod
//! added or removed (O(queries) per pod event); at most [`TRACKED_MAX`] are kept, the
//! least recently used dropped first. Pods of one workload share their queries.
//!
//! Per existing pod's affinity term (symmetry): pods whose own terms must be checked
//! against an incoming pod (required anti-affinity for the filter; required affinity and
//! preferred terms for the score) are grouped by identical term ([`GroupKey`]) with a
//! count per node, so a decision tests each distinct term once, not each pod.
//!
//! Bindings in flight: a pod this scheduler decided on is *assumed* on its node at once
//! (counted everywhere like a bound pod) until the pod watch shows it bound (it is then an
//! ordinary bound pod), the binding fails (it is forgotten), or [`ASSUMED_TTL`] passes after
//! a successful binding without the watch confirming it (upstream's 30 s; e.g. the pod was
//! deleted before its binding showed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;

use super::model::{host_ports, non_zero_requests, pod_requests, HostPort, NodeFacts, Resources};
use super::selector::{Labels, Query, Term};

/// A node's index in [`Cache::nodes`].
pub(crate) type Slot = usize;

/// Queries whose counts are kept at most.
pub(crate) const TRACKED_MAX: usize = 256;

/// How long an assumed pod whose binding succeeded counts without the watch showing it.
pub(crate) const ASSUMED_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub(crate) struct NodeInfo {
    /// None: pods name this node but the node object is unknown (not yet seen, or deleted).
    pub facts: Option<Arc<NodeFacts>>,
    /// What its pods request (`pods` is their number).
    pub requested: Resources,
    /// The same for scoring: cpu and memory with upstream's defaults for missing requests.
    pub non_zero_cpu_milli: i128,
    pub non_zero_memory: i128,
    pub ports: HashMap<HostPort, u32>,
}

/// Which kind of term an existing pod holds, with its weight for scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum TermKind {
    /// Required anti-affinity: repels matching incoming pods (the filter's symmetry).
    RequiredAnti,
    /// Required affinity: attracts matching pods with upstream's hardPodAffinityWeight (1).
    RequiredAffinity,
    Preferred(i32),
    PreferredAnti(i32),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct GroupKey {
    pub kind: TermKind,
    pub term: Term,
}

/// A bound (or assumed) pod, with what it contributes to the aggregates.
#[derive(Debug)]
pub(crate) struct CachedPod {
    pub namespace: String,
    pub labels: Labels,
    pub node: String,
    pub slot: Slot,
    pub requests: Resources,
    pub non_zero: (i128, i128),
    pub ports: Vec<HostPort>,
    pub terminating: bool,
    pub groups: Vec<Arc<GroupKey>>,
    /// Some while this scheduler's binding is in flight or not yet seen by the watch;
    /// then `Some(t)` once the binding succeeded at `t`.
    pub assumed: Option<Option<Instant>>,
}

impl CachedPod {
    /// `node` is where the pod is (bound) or goes (assumed).
    pub fn of(pod: &Pod, node: &str) -> CachedPod {
        let namespace = pod.namespace().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let groups = existing_terms(pod, &namespace, &labels)
            .into_iter()
            .map(Arc::new)
            .collect();
        CachedPod {
            node: node.to_string(),
            slot: 0,
            requests: pod_requests(pod),
            non_zero: non_zero_requests(pod),
            ports: host_ports(pod),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            groups,
            assumed: None,
            namespace,
            labels,
        }
    }

    /// Whether `other` contributes exactly the same (only the assumed state may differ).
    fn same_contribution(&self, other: &CachedPod) -> bool {
        self.namespace == other.namespace
            && self.labels == other.labels
            && self.node == other.node
            && self.requests == other.requests
            && self.non_zero == other.non_zero
            && self.ports == other.ports
            && self.terminating == other.terminating
            && self.groups == other.groups
    }
}

/// The terms of a pod that other pods must be checked against.
fn existing_terms(pod: &Pod, ns: &str, labels: &Labels) -> Vec<GroupKey> {
    let Some(affinity) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(a) = affinity.pod_affinity.as_ref() {
        for t in a.required_during_scheduling_ignored_during_execution.iter().flatten() {
            out.push(GroupKey {
                kind: TermKind::RequiredAffinity,
                term: Term::of(ns, labels, t),
            });
        }
        for t in a.preferred_during_scheduling_ignored_during_execution.iter().flatten() {
            out.push(GroupKey {
                kind: TermKind::Preferred(t.weight),
                term: Term::of(ns, labels, &t.pod_affinity_term),
            });
        }
    }
    if let Some(a) = affinity.pod_anti_affinity.as_ref() {
        for t in a.required_during_scheduling_ignored_during_execution.iter().flatten() {
            out.push(GroupKey {
                kind: TermKind::RequiredAnti,
                term: Term::of(ns, labels, t),
            });
        }
        for t in a.preferred_during_scheduling_ignored_during_execution.iter().flatten() {
            out.push(GroupKey {
                kind: TermKind::PreferredAnti(t.weight),
                term: Term::of(ns, labels, &t.pod_affinity_term),
            });
        }
    }
    out
}

struct Tracked {
    per_node: HashMap<Slot, u32>,
    last_used: u64,
}

/// What applying a bound pod from the watch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PodChange {
    /// A pod the cache did not count.
    Added,
    /// Its contribution changed (labels, node, termination...).
    Updated,
    /// The watch confirmed a pod this scheduler assumed, as assumed.
    Confirmed,
    Unchanged,
}

#[derive(Default)]
pub(crate) struct Cache {
    pub nodes: Vec<NodeInfo>,
    slots: HashMap<String, Slot>,
    free: Vec<Slot>,
    /// The slots with facts: the nodes pods may go to, in the order decisions walk them.
    pub order: Vec<Slot>,
    pods: HashMap<String, CachedPod>,
    namespaces: HashMap<String, Labels>,
    tracked: HashMap<Arc<Query>, Tracked>,
    pub groups: HashMap<Arc<GroupKey>, HashMap<Slot, u32>>,
    clock: u64,
    /// Where the next decision starts walking `order` (upstream's nextStartNodeIndex).
    pub next_start: usize,
}

const NO_LABELS: &Labels = &BTreeMap::new();

impl Cache {
    pub fn node_count(&self) -> usize {
        self.order.len()
    }

    pub fn has_pod(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    pub fn namespace_labels(&self, ns: &str) -> &Labels {
        self.namespaces.get(ns).unwrap_or(NO_LABELS)
    }

    fn slot_of(&mut self, name: &str) -> Slot {
        if let Some(&s) = self.slots.get(name) {
            return s;
        }
        let s = match self.free.pop() {
            Some(s) => {
                self.nodes[s] = NodeInfo::default();
                s
            }
            None => {
                self.nodes.push(NodeInfo::default());
                self.nodes.len() - 1
            }
        };
        self.slots.insert(name.to_string(), s);
        s
    }

    /// Frees a slot that has neither facts nor pods.
    fn release_if_empty(&mut self, name: &str) {
        let Some(&s) = self.slots.get(name) else {
            return;
        };
        let info = &self.nodes[s];
        if info.facts.is_none() && info.requested.pods == 0 {
            self.slots.remove(name);
            self.free.push(s);
        }
    }

    /// A node added or changed; true if what scheduling reads of it changed.
    pub fn apply_node(&mut self, node: &Node) -> bool {
        let facts = NodeFacts::of(node);
        let s = self.slot_of(&facts.name);
        let info = &mut self.nodes[s];
        if info.facts.as_deref() == Some(&facts) {
            return false;
        }
        if info.facts.is_none() {
            self.order.push(s);
        }
        self.nodes[s].facts = Some(Arc::new(facts));
        true
    }

    pub fn delete_node(&mut self, name: &str) {
        let Some(&s) = self.slots.get(name) else {
            return;
        };
        if self.nodes[s].facts.take().is_some() {
            self.order.retain(|&o| o != s);
        }
        self.release_if_empty(name);
    }

    /// After a relist: nodes not in `names` are gone.
    pub fn retain_nodes(&mut self, names: &HashSet<String>) {
        let gone: Vec<String> = self
            .slots
            .iter()
            .filter(|(n, &s)| self.nodes[s].facts.is_some() && !names.contains(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            self.delete_node(&n);
        }
    }

    /// A namespace's labels; true if they changed.
    pub fn apply_namespace(&mut self, name: &str, labels: Labels) -> bool {
        if self.namespaces.get(name) == Some(&labels) {
            return false;
        }
        self.namespaces.insert(name.to_string(), labels);
        // Counts that depended on namespace labels are counted again when next asked.
        self.tracked.retain(|q, _| !q.uses_namespace_labels());
        true
    }

    /// After a relist: namespaces not in `names` are gone.
    pub fn retain_namespaces(&mut self, names: &HashSet<String>) {
        let gone: Vec<String> = self
            .namespaces
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for n in gone {
            self.delete_namespace(&n);
        }
    }

    pub fn delete_namespace(&mut self, name: &str) {
        if self.namespaces.remove(name).is_some() {
            self.tracked.retain(|q, _| !q.uses_namespace_labels());
        }
    }

    /// Adds a pod's contribution everywhere.
    fn add(&mut self, uid: String, mut pod: CachedPod) {
        let s = self.slot_of(&pod.node);
        pod.slot = s;
        let info = &mut self.nodes[s];
        info.requested += pod.requests;
        info.non_zero_cpu_milli += pod.non_zero.0;
        info.non_zero_memory += pod.non_zero.1;
        for p in &pod.ports {
            *info.ports.entry(p.clone()).or_insert(0) += 1;
        }
        let ns_labels = self.namespaces.get(&pod.namespace).unwrap_or(NO_LABELS);
        for (q, t) in self.tracked.iter_mut() {
            if q.matches(&pod.namespace, ns_labels, &pod.labels, pod.terminating) {
                *t.per_node.entry(s).or_insert(0) += 1;
            }
        }
        for g in &pod.groups {
            *self.groups.entry(g.clone()).or_default().entry(s).or_insert(0) += 1;
        }
        self.pods.insert(uid, pod);
    }

    /// Removes a pod's contribution everywhere.
    fn remove(&mut self, uid: &str) -> Option<CachedPod> {
        let pod = self.pods.remove(uid)?;
        let s = pod.slot;
        let info = &mut self.nodes[s];
        info.requested -= pod.requests;
        info.non_zero_cpu_milli -= pod.non_zero.0;
        info.non_zero_memory -= pod.non_zero.1;
        for p in &pod.ports {
            if let Some(n) = info.ports.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    info.ports.remove(p);
                }
            }
        }
        let ns_labels = self.namespaces.get(&pod.namespace).unwrap_or(NO_LABELS);
        for (q, t) in self.tracked.iter_mut() {
            if q.matches(&pod.namespace, ns_labels, &pod.labels, pod.terminating) {
                decrement(&mut t.per_node, s);
            }
        }
        for g in &pod.groups {
            if let Some(per_node) = self.groups.get_mut(g) {
                decrement(per_node, s);
                if per_node.is_empty() {
                    self.groups.remove(g);
                }
            }
        }
        let node = pod.node.clone();
        self.release_if_empty(&node);
        Some(pod)
    }

    /// A bound pod from the watch (`node` is its `spec.nodeName`).
    pub fn apply_pod(&mut self, uid: &str, pod: &Pod, node: &str) -> PodChange {
        let fresh = CachedPod::of(pod, node);
        match self.pods.get_mut(uid) {
            Some(old) if old.same_contribution(&fresh) => {
                if old.assumed.take().is_some() {
                    PodChange::Confirmed
                } else {
                    PodChange::Unchanged
                }
            }
            Some(_) => {
                self.remove(uid);
                self.add(uid.to_string(), fresh);
                PodChange::Updated
            }
            None => {
                self.add(uid.to_string(), fresh);
                PodChange::Added
            }
        }
    }

    /// A pod gone (deleted, or finished); true if it was counted.
    pub fn delete_pod(&mut self, uid: &str) -> bool {
        self.remove(uid).is_some()
    }

    /// After a relist: pods not in `uids` are gone (assumed ones whose binding is still in
    /// flight stay: the binding's outcome decides).
    pub fn retain_pods(&mut self, uids: &HashSet<String>) -> bool {
        let gone: Vec<String> = self
            .pods
            .iter()
            .filter(|(uid, p)| !uids.contains(*uid) && p.assumed != Some(None))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in &gone {
            self.remove(uid);
        }
        !gone.is_empty()
    }

    /// Counts `pod` on `node` until its binding is seen, fails, or expires.
    pub fn assume(&mut self, uid: &str, pod: &Pod, node: &str) {
        self.remove(uid);
        let mut cached = CachedPod::of(pod, node);
        cached.assumed = Some(None);
        self.add(uid.to_string(), cached);
    }

    /// The binding succeeded: the expiry clock starts (if the watch has not confirmed it yet).
    pub fn finish_binding(&mut self, uid: &str, now: Instant) {
        if let Some(p) = self.pods.get_mut(uid) {
            if p.assumed == Some(None) {
                p.assumed = Some(Some(now));
            }
        }
    }

    /// The binding failed: the pod no longer counts (unless the watch shows it bound).
    pub fn forget(&mut self, uid: &str) -> bool {
        if self.pods.get(uid).is_some_and(|p| p.assumed.is_some()) {
            self.remove(uid);
            return true;
        }
        false
    }

    /// Drops assumed pods whose binding succeeded longer than `ttl` ago without the watch
    /// showing them; returns how many.
    pub fn expire_assumed(&mut self, now: Instant, ttl: Duration) -> usize {
        let expired: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, p)| matches!(p.assumed, Some(Some(t)) if now.saturating_duration_since(t) >= ttl))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in &expired {
            tracing::warn!(%uid, "an assumed pod's binding never showed in the watch; it no longer counts");
            self.remove(uid);
        }
        expired.len()
    }

    /// Makes sure each query's counts are kept, counting new ones over all pods; marks them
    /// used now, so that they are not the ones dropped to make room.
    pub fn track(&mut self, queries: &[Arc<Query>]) {
        self.clock += 1;
        let now = self.clock;
        for q in queries {
            if let Some(t) = self.tracked.get_mut(q) {
                t.last_used = now;
                continue;
            }
            if self.tracked.len() >= TRACKED_MAX {
                let oldest = self
                    .tracked
                    .iter()
                    .filter(|(_, t)| t.last_used != now)
                    .min_by_key(|(_, t)| t.last_used)
                    .map(|(q, _)| q.clone());
                if let Some(oldest) = oldest {
                    self.tracked.remove(&oldest);
                }
            }
            let mut per_node: HashMap<Slot, u32> = HashMap::new();
            for p in self.pods.values() {
                let ns_labels = self.namespaces.get(&p.namespace).unwrap_or(NO_LABELS);
                if q.matches(&p.namespace, ns_labels, &p.labels, p.terminating) {
                    *per_node.entry(p.slot).or_insert(0) += 1;
                }
            }
            self.tracked.insert(
                q.clone(),
                Tracked {
                    per_node,
                    last_used: now,
                },
            );
        }
    }

    /// The per-node counts of a query [`track`](Self::track)ed for this decision.
    pub fn counts(&self, q: &Query) -> &HashMap<Slot, u32> {
        static EMPTY: std::sync::OnceLock<HashMap<Slot, u32>> = std::sync::OnceLock::new();
        self.tracked
            .get(q)
            .map(|t| &t.per_node)
            .unwrap_or_else(|| EMPTY.get_or_init(HashMap::new))
    }

    /// The node's facts, if it is one pods may go to.
    pub fn facts(&self, s: Slot) -> Option<&NodeFacts> {
        self.nodes.get(s).and_then(|n| n.facts.as_deref())
    }

    #[cfg(test)]
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }
}

fn decrement(per_node: &mut HashMap<Slot, u32>, s: Slot) {
    if let Some(n) = per_node.get_mut(&s) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            per_node.remove(&s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::selector::{Clause, Namespaces, Selector};
    use super::*;
    use serde_json::json;

    fn node(name: &str, zone: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"zone": zone}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
        .expect("node")
    }

    fn pod(name: &str, app: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default", "uid": name,
            "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}))
        .expect("pod")
    }

    fn app_query(app: &str) -> Arc<Query> {
        let sel = serde_json::from_value(json!({"matchLabels": {"app": app}})).expect("selector");
        Arc::new(Query {
            clauses: vec![Clause {
                namespaces: Namespaces::only("default"),
                selector: Selector::of(Some(&sel)),
            }],
            skip_terminating: true,
        })
    }

    #[test]
    fn aggregates_follow_pods_assumed_confirmed_forgotten_and_deleted() {
        let mut c = Cache::default();
        c.apply_node(&node("a", "z1"));
        c.apply_node(&node("b", "z2"));
        let web = app_query("web");
        c.track(std::slice::from_ref(&web));
        let a = c.slots["a"];
        let b = c.slots["b"];

        c.apply_pod("p1", &pod("p1", "web"), "a");
        assert_eq!(c.nodes[a].requested.cpu_milli, 1000);
        assert_eq!(c.counts(&web).get(&a), Some(&1));

        // Assumed: counted at once; the watch then confirms it without counting it twice.
        c.assume("p2", &pod("p2", "web"), "b");
        assert_eq!(c.counts(&web).get(&b), Some(&1));
        assert_eq!(c.apply_pod("p2", &pod("p2", "web"), "b"), PodChange::Confirmed);
        assert_eq!(c.nodes[b].requested.pods, 1);
        assert!(!c.forget("p2"), "a confirmed pod is not forgotten");

        // A failed binding is forgotten.
        c.assume("p3", &pod("p3", "web"), "b");
        assert!(c.forget("p3"));
        assert_eq!(c.counts(&web).get(&b), Some(&1));

        // A query asked later is counted from the pods already there.
        let db = app_query("db");
        c.apply_pod("p4", &pod("p4", "db"), "a");
        c.track(std::slice::from_ref(&db));
        assert_eq!(c.counts(&db).get(&a), Some(&1));

        // Relabelled: moves between the counts.
        c.apply_pod("p4", &pod("p4", "web"), "a");
        assert_eq!(c.counts(&db).get(&a), None);
        assert_eq!(c.counts(&web).get(&a), Some(&2));

        assert!(c.delete_pod("p1"));
        assert_eq!(c.nodes[a].requested.cpu_milli, 1000);
        assert_eq!(c.pod_count(), 2);
    }

    #[test]
    fn assumed_pods_expire_only_after_their_binding_succeeded() {
        let mut c = Cache::default();
        c.apply_node(&node("a", "z1"));
        let t0 = Instant::now();
        c.assume("p", &pod("p", "web"), "a");
        assert_eq!(
            c.expire_assumed(t0 + ASSUMED_TTL * 2, ASSUMED_TTL),
            0,
            "still in flight"
        );
        c.finish_binding("p", t0);
        assert_eq!(c.expire_assumed(t0 + ASSUMED_TTL / 2, ASSUMED_TTL), 0);
        assert_eq!(c.expire_assumed(t0 + ASSUMED_TTL, ASSUMED_TTL), 1);
        assert_eq!(c.nodes[c.slots["a"]].requested.pods, 0);
    }

    #[test]
    fn pods_on_unknown_nodes_count_when_the_node_comes() {
        let mut c = Cache::default();
        c.apply_pod("p", &pod("p", "web"), "later");
        assert_eq!(c.node_count(), 0);
        c.apply_node(&node("later", "z1"));
        let s = c.order[0];
        assert_eq!(c.nodes[s].requested.cpu_milli, 1000);
        c.delete_node("later");
        assert_eq!(c.node_count(), 0);
        assert!(c.delete_pod("p"));
        assert!(c.slots.is_empty(), "the slot is free again");
    }
}
