//! One scheduling decision, as upstream's scheduling cycle with the default plugins: a
//! pre-filter step that reads the cache's counts once, filters node by node (each node
//! stops at its first failing plugin, in upstream's order), scores the feasible nodes per
//! plugin, normalizes and weighs them, and picks the best, ties broken at random.
//!
//! Filters, in order: NodeUnschedulable, TaintToleration (`NoSchedule`, `NoExecute`),
//! NodeAffinity (nodeSelector and required terms), NodePorts, NodeResourcesFit (pods, cpu,
//! memory: every shortage is a reason), PodTopologySpread (`DoNotSchedule` constraints),
//! InterPodAffinity (the pod's required affinity, its required anti-affinity, then the
//! existing pods' required anti-affinity against it). NodeName needs no filter: pods that
//! name a node are bound already and never come here.
//!
//! Scores (upstream's weights): TaintToleration ×3 (untolerated `PreferNoSchedule` taints,
//! fewer is better), NodeAffinity ×2 (preferred terms' weights, scaled to 0-100),
//! PodTopologySpread ×2 (`ScheduleAnyway` constraints: fewer matching pods in the node's
//! domains is better), InterPodAffinity ×2 (preferred terms of the pod, and the existing
//! pods' preferred terms and required affinity towards it, min-max scaled), NodeResources-
//! Fit ×1 (least allocated, with upstream's 100m / 200Mi stand-ins for missing requests),
//! BalancedAllocation ×1. A plugin whose score is the same for every node is skipped: it
//! cannot change the choice.
//!
//! Like upstream, a decision stops filtering once it has found `percentageOfNodesToScore`
//! of the nodes feasible (adaptive: all nodes below 100; else 50 % minus 1 % per 125 nodes,
//! at least 5 % and at least 100 nodes: 420 of 1,000), starting each decision where the
//! last one stopped, so the load still spreads over all nodes.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    NodeSelectorTerm, Pod, PreferredSchedulingTerm, Taint, Toleration, TopologySpreadConstraint,
};
use kube::ResourceExt;

use super::cache::{Cache, NodeInfo, Slot, TermKind};
use super::model::{
    host_ports, non_zero_requests, pod_requests, ports_conflict, term_matches, tolerated, untolerated_taint, HostPort,
    NodeFacts, Resources,
};
use super::selector::{Clause, Labels, Namespaces, Op, Query, Requirement, Selector, Term};

pub(crate) const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub(crate) const REASON_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub(crate) const REASON_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub(crate) const REASON_TOO_MANY_PODS: &str = "Too many pods";
pub(crate) const REASON_CPU: &str = "Insufficient cpu";
pub(crate) const REASON_MEMORY: &str = "Insufficient memory";
pub(crate) const REASON_SPREAD: &str = "node(s) didn't match pod topology spread constraints";
pub(crate) const REASON_SPREAD_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
pub(crate) const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub(crate) const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub(crate) const REASON_EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";

/// Upstream's `MaxNodeScore`.
const MAX_SCORE: i64 = 100;

/// Why a pod fits no node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FitError {
    /// Nodes considered (all of them: a failed decision walks every node).
    pub nodes: usize,
    /// Reason → nodes that gave it.
    pub reasons: BTreeMap<String, usize>,
    /// Some node failed on PodTopologySpread or InterPodAffinity, which a pod arriving
    /// elsewhere may resolve (not only one leaving).
    pub pod_arrivals_may_help: bool,
}

impl FitError {
    pub fn message(&self) -> String {
        unschedulable_message(self.nodes, &self.reasons)
    }
}

/// Upstream's message for a pod no node can take ("0/3 nodes are available: 1 Insufficient
/// cpu, 2 node(s) were unschedulable."): each reason with its count, sorted as strings.
pub fn unschedulable_message(nodes: usize, reasons: &BTreeMap<String, usize>) -> String {
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    if parts.is_empty() {
        format!("0/{nodes} nodes are available.")
    } else {
        format!("0/{nodes} nodes are available: {}.", parts.join(", "))
    }
}

/// How many feasible nodes a decision looks for before it stops filtering (upstream's
/// `numFeasibleNodesToFind` with the adaptive default `percentageOfNodesToScore`).
pub(crate) fn feasible_nodes_to_find(nodes: usize) -> usize {
    const MIN_NODES: usize = 100;
    const MIN_PERCENT: usize = 5;
    if nodes < MIN_NODES {
        return nodes;
    }
    let percent = 50usize.saturating_sub(nodes / 125).max(MIN_PERCENT);
    (nodes * percent / 100).max(MIN_NODES)
}

/// A small random number generator (xorshift64*) for tie-breaks; seeded per scheduler.
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// A topology spread constraint, parsed (upstream's `topologySpreadConstraint`).
struct Spread {
    max_skew: i64,
    key: String,
    query: Arc<Query>,
    min_domains: i64,
    honor_affinity: bool,
    honor_taints: bool,
    self_match: bool,
}

/// The pod being scheduled, parsed once for the decision.
struct Incoming<'a> {
    namespace: String,
    labels: Labels,
    requests: Resources,
    non_zero: (i128, i128),
    ports: Vec<HostPort>,
    tolerations: &'a [Toleration],
    node_selector: Option<&'a BTreeMap<String, String>>,
    required_terms: Option<&'a [NodeSelectorTerm]>,
    preferred_terms: &'a [PreferredSchedulingTerm],
    hard: Vec<Spread>,
    soft: Vec<Spread>,
    affinity: Vec<Term>,
    affinity_query: Option<Arc<Query>>,
    anti: Vec<(Term, Arc<Query>)>,
    /// (signed weight: + affinity, - anti-affinity, term, its query)
    preferred: Vec<(i64, Term, Arc<Query>)>,
}

fn spread_of(ns: &str, labels: &Labels, c: &TopologySpreadConstraint) -> Spread {
    let extra: Vec<Requirement> = c
        .match_label_keys
        .iter()
        .flatten()
        .filter_map(|k| labels.get(k).map(|v| Requirement::new(k, Op::In, [v.clone()])))
        .collect();
    let selector = Selector::of(c.label_selector.as_ref()).and(extra);
    Spread {
        max_skew: i64::from(c.max_skew),
        key: c.topology_key.clone(),
        self_match: selector.matches(labels),
        query: Arc::new(Query {
            clauses: vec![Clause {
                namespaces: Namespaces::only(ns),
                selector,
            }],
            skip_terminating: true,
        }),
        min_domains: i64::from(c.min_domains.unwrap_or(1).max(1)),
        honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
        honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
    }
}

fn term_query(t: &Term) -> Arc<Query> {
    Arc::new(Query {
        clauses: vec![t.clause()],
        skip_terminating: false,
    })
}

impl<'a> Incoming<'a> {
    fn of(pod: &'a Pod) -> Incoming<'a> {
        let namespace = pod.namespace().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let affinity = spec.and_then(|s| s.affinity.as_ref());
        let node_affinity = affinity.and_then(|a| a.node_affinity.as_ref());
        let (mut hard, mut soft) = (Vec::new(), Vec::new());
        for c in spec
            .and_then(|s| s.topology_spread_constraints.as_deref())
            .unwrap_or_default()
        {
            match c.when_unsatisfiable.as_str() {
                "DoNotSchedule" => hard.push(spread_of(&namespace, &labels, c)),
                "ScheduleAnyway" => soft.push(spread_of(&namespace, &labels, c)),
                _ => {}
            }
        }
        let pod_affinity = affinity.and_then(|a| a.pod_affinity.as_ref());
        let pod_anti = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let required = |terms: Option<&Vec<k8s_openapi::api::core::v1::PodAffinityTerm>>| -> Vec<Term> {
            terms
                .into_iter()
                .flatten()
                .map(|t| Term::of(&namespace, &labels, t))
                .collect()
        };
        let affinity_terms =
            required(pod_affinity.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()));
        let affinity_query = (!affinity_terms.is_empty()).then(|| {
            Arc::new(Query {
                clauses: affinity_terms.iter().map(Term::clause).collect(),
                skip_terminating: false,
            })
        });
        let anti = required(pod_anti.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()))
            .into_iter()
            .map(|t| {
                let q = term_query(&t);
                (t, q)
            })
            .collect();
        let mut preferred = Vec::new();
        let weighted = [
            (
                1,
                pod_affinity.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()),
            ),
            (
                -1,
                pod_anti.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()),
            ),
        ];
        for (sign, terms) in weighted {
            for t in terms.into_iter().flatten() {
                let term = Term::of(&namespace, &labels, &t.pod_affinity_term);
                let q = term_query(&term);
                preferred.push((sign * i64::from(t.weight), term, q));
            }
        }
        Incoming {
            requests: pod_requests(pod),
            non_zero: non_zero_requests(pod),
            ports: host_ports(pod),
            tolerations: spec.and_then(|s| s.tolerations.as_deref()).unwrap_or_default(),
            node_selector: spec.and_then(|s| s.node_selector.as_ref()),
            required_terms: node_affinity
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
                .map(|r| r.node_selector_terms.as_slice()),
            preferred_terms: node_affinity
                .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref())
                .unwrap_or_default(),
            hard,
            soft,
            affinity: affinity_terms,
            affinity_query,
            anti,
            preferred,
            namespace,
            labels,
        }
    }

    fn queries(&self) -> Vec<Arc<Query>> {
        let mut out: Vec<Arc<Query>> = self.hard.iter().chain(&self.soft).map(|s| s.query.clone()).collect();
        out.extend(self.affinity_query.clone());
        out.extend(self.anti.iter().map(|(_, q)| q.clone()));
        out.extend(self.preferred.iter().map(|(_, _, q)| q.clone()));
        out
    }

    /// NodeAffinity's filter: the node selector, and any of the required terms.
    fn node_affinity_ok(&self, node: &NodeFacts) -> bool {
        self.node_selector
            .is_none_or(|sel| sel.iter().all(|(k, v)| node.labels.get(k) == Some(v)))
            && self
                .required_terms
                .is_none_or(|terms| terms.iter().any(|t| term_matches(t, node)))
    }

    fn spread_includes(&self, c: &Spread, node: &NodeFacts) -> bool {
        (!c.honor_affinity || self.node_affinity_ok(node))
            && (!c.honor_taints || untolerated_taint(&node.taints, self.tolerations).is_none())
    }
}

type Pairs = HashMap<String, HashSet<String>>;

fn insert_pair(pairs: &mut Pairs, node: &NodeFacts, key: &str) {
    if let Some(v) = node.labels.get(key) {
        pairs.entry(key.to_string()).or_default().insert(v.clone());
    }
}

fn has_pair(pairs: &Pairs, node: &NodeFacts, key: &str) -> bool {
    node.labels
        .get(key)
        .is_some_and(|v| pairs.get(key).is_some_and(|set| set.contains(v)))
}

/// What the filters read, computed once per decision from the cache's counts.
struct PreFilter {
    /// Per hard spread constraint: matching pods per domain, and the global minimum.
    spread: Vec<(HashMap<String, i64>, i64)>,
    /// Domains holding pods that match all the pod's required affinity terms.
    affinity: Pairs,
    /// The pod matches its own affinity terms (the first of a group may go anywhere).
    affinity_self_match: bool,
    /// Domains holding pods that match one of the pod's required anti-affinity terms.
    anti: Pairs,
    /// Domains of existing pods whose required anti-affinity matches the pod.
    existing_anti: Pairs,
}

fn pre_filter(cache: &Cache, inc: &Incoming, ns_labels: &Labels) -> PreFilter {
    let mut spread: Vec<HashMap<String, i64>> = vec![HashMap::new(); inc.hard.len()];
    if !inc.hard.is_empty() {
        for &s in &cache.order {
            let Some(node) = cache.facts(s) else { continue };
            // Only nodes with every constraint's topology key count (upstream).
            if !inc.hard.iter().all(|c| node.labels.contains_key(&c.key)) {
                continue;
            }
            for (i, c) in inc.hard.iter().enumerate() {
                if !inc.spread_includes(c, node) {
                    continue;
                }
                let count = cache.counts(&c.query).get(&s).copied().unwrap_or(0);
                *spread[i].entry(node.labels[&c.key].clone()).or_insert(0) += i64::from(count);
            }
        }
    }
    let spread = spread
        .into_iter()
        .zip(&inc.hard)
        .map(|(domains, c)| {
            let min = if (domains.len() as i64) < c.min_domains {
                0
            } else {
                domains.values().copied().min().unwrap_or(0)
            };
            (domains, min)
        })
        .collect();
    let mut affinity = Pairs::new();
    if let Some(q) = &inc.affinity_query {
        for (&s, _) in cache.counts(q).iter() {
            let Some(node) = cache.facts(s) else { continue };
            for t in &inc.affinity {
                insert_pair(&mut affinity, node, &t.topology_key);
            }
        }
    }
    let affinity_self_match = inc
        .affinity
        .iter()
        .all(|t| t.matches(&inc.namespace, ns_labels, &inc.labels));
    let mut anti = Pairs::new();
    for (t, q) in &inc.anti {
        for (&s, _) in cache.counts(q).iter() {
            if let Some(node) = cache.facts(s) {
                insert_pair(&mut anti, node, &t.topology_key);
            }
        }
    }
    let mut existing_anti = Pairs::new();
    for (g, per_node) in &cache.groups {
        if g.kind != TermKind::RequiredAnti || !g.term.matches(&inc.namespace, ns_labels, &inc.labels) {
            continue;
        }
        for &s in per_node.keys() {
            if let Some(node) = cache.facts(s) {
                insert_pair(&mut existing_anti, node, &g.term.topology_key);
            }
        }
    }
    PreFilter {
        spread,
        affinity,
        affinity_self_match,
        anti,
        existing_anti,
    }
}

/// Why `node` cannot take the pod (the first failing plugin's reasons), or Ok.
fn filter(inc: &Incoming, pre: &PreFilter, node: &NodeFacts, info: &NodeInfo) -> Result<(), Vec<Cow<'static, str>>> {
    let fail = |r: &'static str| Err(vec![Cow::Borrowed(r)]);
    if node.unschedulable {
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        if !tolerated(inc.tolerations, &taint) {
            return fail(REASON_UNSCHEDULABLE);
        }
    }
    if let Some(t) = untolerated_taint(&node.taints, inc.tolerations) {
        return Err(vec![Cow::Owned(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or("")
        ))]);
    }
    if !inc.node_affinity_ok(node) {
        return fail(REASON_NODE_AFFINITY);
    }
    if inc
        .ports
        .iter()
        .any(|p| info.ports.keys().any(|taken| ports_conflict(p, taken)))
    {
        return fail(REASON_PORTS);
    }
    let alloc = node.allocatable;
    let mut short = Vec::new();
    if info.requested.pods + inc.requests.pods > alloc.pods {
        short.push(Cow::Borrowed(REASON_TOO_MANY_PODS));
    }
    if inc.requests.cpu_milli > 0 && inc.requests.cpu_milli > alloc.cpu_milli - info.requested.cpu_milli {
        short.push(Cow::Borrowed(REASON_CPU));
    }
    if inc.requests.memory > 0 && inc.requests.memory > alloc.memory - info.requested.memory {
        short.push(Cow::Borrowed(REASON_MEMORY));
    }
    if !short.is_empty() {
        return Err(short);
    }
    for (c, (domains, min)) in inc.hard.iter().zip(&pre.spread) {
        let Some(value) = node.labels.get(&c.key) else {
            return fail(REASON_SPREAD_LABEL);
        };
        let matching = domains.get(value).copied().unwrap_or(0);
        if matching + i64::from(c.self_match) - min > c.max_skew {
            return fail(REASON_SPREAD);
        }
    }
    if !inc.affinity.is_empty() {
        let mut pods_exist = true;
        for t in &inc.affinity {
            if !node.labels.contains_key(&t.topology_key) {
                return fail(REASON_AFFINITY);
            }
            pods_exist &= has_pair(&pre.affinity, node, &t.topology_key);
        }
        // The first pod of a group with affinity to itself may go anywhere.
        let first_of_its_group = pre.affinity.is_empty() && pre.affinity_self_match;
        if !(pods_exist || first_of_its_group) {
            return fail(REASON_AFFINITY);
        }
    }
    if inc.anti.iter().any(|(t, _)| has_pair(&pre.anti, node, &t.topology_key)) {
        return fail(REASON_ANTI_AFFINITY);
    }
    if pre.existing_anti.keys().any(|k| has_pair(&pre.existing_anti, node, k)) {
        return fail(REASON_EXISTING_ANTI_AFFINITY);
    }
    Ok(())
}

/// Upstream's `DefaultNormalizeScore`: scaled so that the highest is 100 (reversed: the
/// highest becomes 0).
fn normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    for s in scores.iter_mut() {
        let v = if max == 0 { 0 } else { MAX_SCORE * *s / max };
        *s = if reverse { MAX_SCORE - v } else { v };
    }
}

fn least_allocated(requested: i128, capacity: i128) -> Option<i64> {
    if capacity <= 0 {
        return None;
    }
    if requested > capacity {
        return Some(0);
    }
    Some(i64::try_from((capacity - requested) * i128::from(MAX_SCORE) / capacity).unwrap_or(0))
}

fn fraction(requested: i128, capacity: i128) -> Option<f64> {
    (capacity > 0).then(|| (requested as f64 / capacity as f64).min(1.0))
}

/// Every plugin's weighted score for each feasible node, summed.
fn score(cache: &Cache, inc: &Incoming, ns_labels: &Labels, feasible: &[Slot]) -> Vec<i64> {
    let n = feasible.len();
    let nodes: Vec<(&NodeFacts, &NodeInfo)> = feasible
        .iter()
        .map(|&s| {
            let info = &cache.nodes[s];
            (
                info.facts.as_deref().expect("invariant: feasible nodes have facts"),
                info,
            )
        })
        .collect();
    let mut total = vec![0i64; n];
    let mut plugin = vec![0i64; n];

    // NodeResourcesFit (least allocated, cpu and memory weighed alike) and
    // BalancedAllocation, ×1 each.
    for (i, (node, info)) in nodes.iter().enumerate() {
        let a = node.allocatable;
        let (cpu, memory) = (
            least_allocated(info.non_zero_cpu_milli + inc.non_zero.0, a.cpu_milli),
            least_allocated(info.non_zero_memory + inc.non_zero.1, a.memory),
        );
        total[i] += match (cpu, memory) {
            (Some(c), Some(m)) => (c + m) / 2,
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => 0,
        };
        let fractions = (
            fraction(info.requested.cpu_milli + inc.requests.cpu_milli, a.cpu_milli),
            fraction(info.requested.memory + inc.requests.memory, a.memory),
        );
        // The standard deviation of the two fractions (of one, or none: 0).
        let std = match fractions {
            (Some(c), Some(m)) => ((c - m) / 2.0).abs(),
            _ => 0.0,
        };
        total[i] += ((1.0 - std) * MAX_SCORE as f64) as i64;
    }

    // TaintToleration, ×3.
    if nodes
        .iter()
        .any(|(node, _)| node.taints.iter().any(|t| t.effect == "PreferNoSchedule"))
    {
        for (i, (node, _)) in nodes.iter().enumerate() {
            plugin[i] = node
                .taints
                .iter()
                .filter(|t| t.effect == "PreferNoSchedule" && !tolerated(inc.tolerations, t))
                .count() as i64;
        }
        normalize(&mut plugin, true);
        add_weighted(&mut total, &plugin, 3);
    }

    // NodeAffinity, ×2.
    if !inc.preferred_terms.is_empty() {
        for (i, (node, _)) in nodes.iter().enumerate() {
            plugin[i] = inc
                .preferred_terms
                .iter()
                .filter(|t| t.weight != 0 && term_matches(&t.preference, node))
                .map(|t| i64::from(t.weight))
                .sum();
        }
        normalize(&mut plugin, false);
        add_weighted(&mut total, &plugin, 2);
    }

    // PodTopologySpread, ×2.
    if !inc.soft.is_empty() {
        spread_scores(cache, inc, feasible, &nodes, &mut plugin);
        add_weighted(&mut total, &plugin, 2);
    }

    // InterPodAffinity, ×2.
    if inter_pod_scores(cache, inc, ns_labels, &nodes, &mut plugin) {
        add_weighted(&mut total, &plugin, 2);
    }
    total
}

fn add_weighted(total: &mut [i64], plugin: &[i64], weight: i64) {
    for (t, p) in total.iter_mut().zip(plugin) {
        *t += weight * p;
    }
}

/// PodTopologySpread's score (upstream's PreScore, Score and NormalizeScore) into `out`.
fn spread_scores(cache: &Cache, inc: &Incoming, feasible: &[Slot], nodes: &[(&NodeFacts, &NodeInfo)], out: &mut [i64]) {
    const HOSTNAME: &str = "kubernetes.io/hostname";
    let has_all = |node: &NodeFacts| inc.soft.iter().all(|c| node.labels.contains_key(&c.key));
    let ignored: Vec<bool> = nodes.iter().map(|(node, _)| !has_all(node)).collect();
    let scored = ignored.iter().filter(|i| !**i).count();
    // Per constraint: the domains of the scored nodes, with their matching pods.
    let mut domains: Vec<HashMap<String, i64>> = vec![HashMap::new(); inc.soft.len()];
    for ((node, _), ignored) in nodes.iter().zip(&ignored) {
        if *ignored {
            continue;
        }
        for (i, c) in inc.soft.iter().enumerate() {
            if c.key != HOSTNAME {
                domains[i].entry(node.labels[&c.key].clone()).or_insert(0);
            }
        }
    }
    let weights: Vec<f64> = inc
        .soft
        .iter()
        .zip(&domains)
        .map(|(c, d)| {
            let size = if c.key == HOSTNAME { scored } else { d.len() };
            ((size + 2) as f64).ln()
        })
        .collect();
    for &s in &cache.order {
        let Some(node) = cache.facts(s) else { continue };
        if !has_all(node) {
            continue;
        }
        for (i, c) in inc.soft.iter().enumerate() {
            if c.key == HOSTNAME || !inc.spread_includes(c, node) {
                continue;
            }
            if let Some(d) = domains[i].get_mut(&node.labels[&c.key]) {
                *d += i64::from(cache.counts(&c.query).get(&s).copied().unwrap_or(0));
            }
        }
    }
    let (mut min, mut max) = (i64::MAX, 0i64);
    for (i, (node, _)) in nodes.iter().enumerate() {
        if ignored[i] {
            continue;
        }
        let mut score = 0.0;
        for (j, c) in inc.soft.iter().enumerate() {
            let count = if c.key == HOSTNAME {
                i64::from(cache.counts(&c.query).get(&feasible[i]).copied().unwrap_or(0))
            } else {
                domains[j].get(&node.labels[&c.key]).copied().unwrap_or(0)
            };
            score += count as f64 * weights[j] + (c.max_skew - 1) as f64;
        }
        let score = score.round() as i64;
        out[i] = score;
        min = min.min(score);
        max = max.max(score);
    }
    for (i, s) in out.iter_mut().enumerate() {
        *s = if ignored[i] {
            0
        } else if max == 0 {
            MAX_SCORE
        } else {
            MAX_SCORE * (max + min - *s) / max
        };
    }
}

/// InterPodAffinity's score into `out`; false if it gives every node the same.
fn inter_pod_scores(
    cache: &Cache,
    inc: &Incoming,
    ns_labels: &Labels,
    nodes: &[(&NodeFacts, &NodeInfo)],
    out: &mut [i64],
) -> bool {
    // topology key → value → score
    let mut topo: HashMap<String, HashMap<String, i64>> = HashMap::new();
    let mut bump = |node: &NodeFacts, key: &str, delta: i64| {
        if let Some(v) = node.labels.get(key) {
            *topo.entry(key.to_string()).or_default().entry(v.clone()).or_insert(0) += delta;
        }
    };
    for (weight, term, q) in &inc.preferred {
        for (&s, &count) in cache.counts(q) {
            if let Some(node) = cache.facts(s) {
                bump(node, &term.topology_key, weight * i64::from(count));
            }
        }
    }
    for (g, per_node) in &cache.groups {
        let weight = match g.kind {
            TermKind::RequiredAnti => continue,
            TermKind::RequiredAffinity => 1,
            TermKind::Preferred(w) => i64::from(w),
            TermKind::PreferredAnti(w) => -i64::from(w),
        };
        if !g.term.matches(&inc.namespace, ns_labels, &inc.labels) {
            continue;
        }
        for (&s, &count) in per_node {
            if let Some(node) = cache.facts(s) {
                bump(node, &g.term.topology_key, weight * i64::from(count));
            }
        }
    }
    if topo.is_empty() {
        return false;
    }
    for (i, (node, _)) in nodes.iter().enumerate() {
        out[i] = topo
            .iter()
            .filter_map(|(k, values)| node.labels.get(k).and_then(|v| values.get(v)))
            .sum();
    }
    let min = out.iter().copied().min().unwrap_or(0);
    let max = out.iter().copied().max().unwrap_or(0);
    for s in out.iter_mut() {
        *s = if max > min {
            (MAX_SCORE as f64 * ((*s - min) as f64 / (max - min) as f64)) as i64
        } else {
            0
        };
    }
    true
}

/// Chooses a node for `pod` (with uid `uid`) and assumes the pod there, or says why none
/// fits.
pub(crate) fn schedule(cache: &mut Cache, uid: &str, pod: &Pod, rng: &mut Rng) -> Result<String, FitError> {
    let inc = Incoming::of(pod);
    cache.track(&inc.queries());
    let chosen = decide(cache, &inc, rng)?;
    cache.assume(uid, pod, &chosen);
    Ok(chosen)
}

fn decide(cache: &mut Cache, inc: &Incoming, rng: &mut Rng) -> Result<String, FitError> {
    let all = cache.node_count();
    let ns_labels = cache.namespace_labels(&inc.namespace).clone();
    let pre = pre_filter(cache, inc, &ns_labels);
    let to_find = feasible_nodes_to_find(all);
    let start = if all == 0 { 0 } else { cache.next_start % all };
    let mut feasible: Vec<Slot> = Vec::with_capacity(to_find);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut processed = 0;
    for i in 0..all {
        if feasible.len() >= to_find {
            break;
        }
        processed += 1;
        let s = cache.order[(start + i) % all];
        let info = &cache.nodes[s];
        let Some(node) = info.facts.as_deref() else { continue };
        match filter(inc, &pre, node, info) {
            Ok(()) => feasible.push(s),
            Err(rs) => {
                for r in rs {
                    *reasons.entry(r.into_owned()).or_insert(0) += 1;
                }
            }
        }
    }
    if all > 0 {
        cache.next_start = (start + processed) % all;
    }
    if feasible.is_empty() {
        let pod_arrivals_may_help = reasons.keys().any(|r| {
            r.starts_with(REASON_SPREAD)
                || r == REASON_AFFINITY
                || r == REASON_ANTI_AFFINITY
                || r == REASON_EXISTING_ANTI_AFFINITY
        });
        return Err(FitError {
            nodes: all,
            reasons,
            pod_arrivals_may_help,
        });
    }
    let best = if feasible.len() == 1 {
        feasible[0]
    } else {
        let scores = score(cache, inc, &ns_labels, &feasible);
        // Reservoir sampling over the highest scores: each tie equally likely (upstream's
        // selectHost).
        let mut best = 0;
        let mut ties = 0u64;
        let top = scores.iter().copied().max().unwrap_or(0);
        for (i, &sc) in scores.iter().enumerate() {
            if sc == top {
                ties += 1;
                if rng.below(ties) == 0 {
                    best = i;
                }
            }
        }
        feasible[best]
    };
    Ok(cache
        .facts(best)
        .map(|f| f.name.clone())
        .expect("invariant: feasible nodes have facts"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    fn node(name: &str, zone: &str, extra: serde_json::Value) -> Node {
        let mut v = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "zone": zone}},
            "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(v).expect("node")
    }

    fn pod(name: &str, spec: serde_json::Value) -> Pod {
        let mut s = json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]});
        if let (Some(o), Some(e)) = (s.as_object_mut(), spec.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default", "uid": name,
            "labels": {"app": "web"}}, "spec": s}))
        .expect("pod")
    }

    fn cluster(nodes: &[Node]) -> Cache {
        let mut c = Cache::default();
        for n in nodes {
            c.apply_node(n);
        }
        c
    }

    fn run(c: &mut Cache, p: &Pod) -> Result<String, String> {
        let uid = p.metadata.uid.clone().expect("uid");
        schedule(c, &uid, p, &mut Rng::new(7)).map_err(|e| e.message())
    }

    #[test]
    fn feasible_nodes_to_find_is_upstreams_adaptive_percentage() {
        assert_eq!(feasible_nodes_to_find(50), 50);
        assert_eq!(feasible_nodes_to_find(100), 100);
        assert_eq!(feasible_nodes_to_find(500), 230);
        assert_eq!(feasible_nodes_to_find(1000), 420);
        assert_eq!(feasible_nodes_to_find(5000), 500);
        assert_eq!(feasible_nodes_to_find(10000), 500);
    }

    #[test]
    fn the_unschedulable_message_is_upstreams() {
        let reasons: BTreeMap<String, usize> = [
            (REASON_SPREAD.to_string(), 2),
            (REASON_ANTI_AFFINITY.to_string(), 1),
            ("Insufficient cpu".to_string(), 10),
        ]
        .into();
        // Sorted as whole strings, count first, as upstream's FitError.
        assert_eq!(
            unschedulable_message(13, &reasons),
            "0/13 nodes are available: 1 node(s) didn't match pod anti-affinity rules, 10 Insufficient cpu, \
             2 node(s) didn't match pod topology spread constraints."
        );
    }

    #[test]
    fn resources_unschedulable_taints_and_affinity_filter_with_upstreams_reasons() {
        let mut c = cluster(&[
            node("cordoned", "a", json!({"spec": {"unschedulable": true}})),
            node(
                "tainted",
                "a",
                json!({"spec": {"taints": [{"key": "gpu", "value": "x", "effect": "NoSchedule"}]}}),
            ),
            node(
                "small",
                "b",
                json!({"status": {"allocatable": {"cpu": "100m", "memory": "64Mi", "pods": "110"}}}),
            ),
        ]);
        assert_eq!(
            run(&mut c, &pod("p", json!({}))),
            Err("0/3 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, \
                 1 node(s) had untolerated taint {gpu: x}, 1 node(s) were unschedulable."
                .into())
        );
        let tolerant = pod("t", json!({"tolerations": [{"key": "gpu", "operator": "Exists"}]}));
        assert_eq!(run(&mut c, &tolerant), Ok("tainted".into()));
        let picky = pod(
            "s",
            json!({"nodeSelector": {"zone": "b"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]}),
        );
        assert_eq!(
            run(&mut c, &picky),
            Err("0/3 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, \
                 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) were unschedulable."
                .into())
        );
    }

    #[test]
    fn assumed_pods_take_room_at_once() {
        let mut c = cluster(&[node("n", "a", json!({}))]);
        for i in 0..4 {
            assert_eq!(run(&mut c, &pod(&format!("p{i}"), json!({}))), Ok("n".into()));
        }
        assert_eq!(
            run(&mut c, &pod("p4", json!({}))),
            Err("0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory.".into())
        );
    }

    #[test]
    fn host_ports_conflict() {
        let mut c = cluster(&[node("n", "a", json!({}))]);
        let p = |name: &str| {
            pod(
                name,
                json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
            )
        };
        assert_eq!(run(&mut c, &p("a")), Ok("n".into()));
        assert_eq!(
            run(&mut c, &p("b")),
            Err(format!("0/1 nodes are available: 1 {REASON_PORTS}."))
        );
    }

    #[test]
    fn spread_keeps_the_skew_and_reports_missing_labels() {
        let mut c = cluster(&[
            node("a1", "a", json!({})),
            node("b1", "b", json!({})),
            serde_json::from_value(json!({"metadata": {"name": "bare"},
                "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}}))
            .expect("node"),
        ]);
        let spread = json!({"containers": [], "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]});
        let mut zones = Vec::new();
        for i in 0..4 {
            zones.push(run(&mut c, &pod(&format!("s{i}"), spread.clone())).expect("fits"));
        }
        zones.sort();
        assert_eq!(zones, ["a1", "a1", "b1", "b1"]);
        // Zone b full: the next pod may not make zone a two ahead.
        c.apply_node(&node("b1", "b", json!({"spec": {"unschedulable": true}})));
        c.assume("x", &pod("x", spread.clone()), "a1");
        assert_eq!(
            run(&mut c, &pod("s4", spread)),
            Err(format!(
                "0/3 nodes are available: 1 {REASON_SPREAD}, 1 {REASON_SPREAD_LABEL}, 1 {REASON_UNSCHEDULABLE}."
            ))
        );
    }

    #[test]
    fn soft_spread_prefers_the_emptier_domain() {
        let mut c = cluster(&[node("a1", "a", json!({})), node("b1", "b", json!({}))]);
        let soft = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
            "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "web"}}}]});
        let other = pod("o", json!({}));
        c.assume("o1", &other, "a1");
        c.assume("o2", &other, "a1");
        // b1 is fuller, so the resource scores favour a1; the two matching pods there make
        // the spread score pick b1.
        let heavy: Pod = serde_json::from_value(json!({"metadata": {"name": "h", "namespace": "default", "uid": "h"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1500m", "memory": "3Gi"}}}]}}))
        .expect("pod");
        c.assume("h", &heavy, "b1");
        assert_eq!(run(&mut c, &pod("s", soft)), Ok("b1".into()));
    }

    #[test]
    fn anti_affinity_affinity_and_symmetry() {
        let mut c = cluster(&[
            node("a1", "a", json!({})),
            node("a2", "a", json!({})),
            node("b1", "b", json!({})),
        ]);
        let anti = json!({"containers": [], "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "zone", "labelSelector": {"matchLabels": {"app": "web"}}}]}}});
        let first = run(&mut c, &pod("w1", anti.clone())).expect("fits");
        let second = run(&mut c, &pod("w2", anti.clone())).expect("fits");
        let zone = |n: &str| if n == "b1" { "b" } else { "a" };
        assert_ne!(zone(&first), zone(&second), "one per zone");
        assert_eq!(
            run(&mut c, &pod("w3", anti)),
            Err(format!("0/3 nodes are available: 3 {REASON_ANTI_AFFINITY}."))
        );
        // Symmetry: a plain pod labelled app=web is repelled by the existing pods' terms.
        assert_eq!(
            run(&mut c, &pod("plain", json!({}))),
            Err(format!("0/3 nodes are available: 3 {REASON_EXISTING_ANTI_AFFINITY}."))
        );
        // Affinity: a pod that wants to be with app=db goes to db's zone; with no db pod
        // anywhere (and not matching itself) it fits nowhere.
        let with_db = |name: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default", "uid": name},
                "spec": {"containers": [], "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "zone", "labelSelector": {"matchLabels": {"app": "db"}}}]}}}}))
            .expect("pod")
        };
        assert_eq!(
            run(&mut c, &with_db("f1")),
            Err(format!("0/3 nodes are available: 3 {REASON_AFFINITY}."))
        );
        let db: Pod = serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "default", "uid": "db",
            "labels": {"app": "db"}}, "spec": {"containers": []}}))
        .expect("pod");
        c.apply_pod("db", &db, "b1");
        assert_eq!(run(&mut c, &with_db("f2")), Ok("b1".into()));
    }
}
