//! Label selectors, pod affinity terms and the pod queries built from them, in the forms
//! the scheduler compares and hashes: a query is the key under which the cache keeps its
//! per-node counts of matching pods (see `cache`), so two pods of one workload, whose
//! constraints are the same, share one set of counts.
//!
//! Semantics are apimachinery's: a missing selector matches nothing, an empty one
//! everything; `In` needs the label with one of the values, `NotIn` its absence or
//! another value. An invalid selector (unknown operator) matches nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodAffinityTerm;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub(crate) type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Requirement {
    pub key: String,
    pub op: Op,
    /// Sorted, without duplicates.
    pub values: Vec<String>,
}

impl Requirement {
    pub fn new(key: &str, op: Op, values: impl IntoIterator<Item = String>) -> Requirement {
        let mut values: Vec<String> = values.into_iter().collect();
        values.sort();
        values.dedup();
        Requirement {
            key: key.to_string(),
            op,
            values,
        }
    }

    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            Op::In => value.is_some_and(|v| self.values.binary_search(v).is_ok()),
            Op::NotIn => value.is_none_or(|v| self.values.binary_search(v).is_err()),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
        }
    }
}

/// A label selector; `None` matches nothing, an empty list everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Selector(Option<Vec<Requirement>>);

impl Selector {
    /// apimachinery's `LabelSelectorAsSelector`.
    pub fn of(selector: Option<&LabelSelector>) -> Selector {
        let Some(s) = selector else {
            return Selector(None);
        };
        let mut reqs: Vec<Requirement> = s
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::new(k, Op::In, [v.clone()]))
            .collect();
        for e in s.match_expressions.iter().flatten() {
            let op = match e.operator.as_str() {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                _ => return Selector(None),
            };
            reqs.push(Requirement::new(&e.key, op, e.values.iter().flatten().cloned()));
        }
        reqs.sort();
        reqs.dedup();
        Selector(Some(reqs))
    }

    /// Adds requirements (upstream's `mergeLabelSetWithSelector`: on a selector that matches
    /// nothing, the result is the added requirements alone).
    pub fn and(self, extra: Vec<Requirement>) -> Selector {
        if extra.is_empty() {
            return self;
        }
        let mut reqs = self.0.unwrap_or_default();
        reqs.extend(extra);
        reqs.sort();
        reqs.dedup();
        Selector(Some(reqs))
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.0
            .as_ref()
            .is_some_and(|reqs| reqs.iter().all(|r| r.matches(labels)))
    }
}

/// The namespaces an affinity term looks in: named ones, and those whose labels match a
/// selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Namespaces {
    /// Sorted.
    pub names: Vec<String>,
    pub selector: Option<Selector>,
}

impl Namespaces {
    pub fn only(ns: &str) -> Namespaces {
        Namespaces {
            names: vec![ns.to_string()],
            selector: None,
        }
    }

    /// `labels` are the namespace's (empty if it is unknown, as upstream).
    pub fn matches(&self, ns: &str, labels: &Labels) -> bool {
        self.names.binary_search_by(|n| n.as_str().cmp(ns)).is_ok()
            || self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// A pod affinity term as upstream's `AffinityTerm`: namespaces resolved against the
/// owning pod, `matchLabelKeys` / `mismatchLabelKeys` merged into the selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Term {
    pub namespaces: Namespaces,
    pub selector: Selector,
    pub topology_key: String,
}

impl Term {
    pub fn of(owner_namespace: &str, owner_labels: &Labels, t: &PodAffinityTerm) -> Term {
        let mut names: Vec<String> = t.namespaces.clone().unwrap_or_default();
        let selector = t.namespace_selector.as_ref().map(|s| Selector::of(Some(s)));
        if names.is_empty() && selector.is_none() {
            names.push(owner_namespace.to_string());
        }
        names.sort();
        names.dedup();
        let mut extra = Vec::new();
        for key in t.match_label_keys.iter().flatten() {
            if let Some(v) = owner_labels.get(key) {
                extra.push(Requirement::new(key, Op::In, [v.clone()]));
            }
        }
        for key in t.mismatch_label_keys.iter().flatten() {
            if let Some(v) = owner_labels.get(key) {
                extra.push(Requirement::new(key, Op::NotIn, [v.clone()]));
            }
        }
        Term {
            namespaces: Namespaces { names, selector },
            selector: Selector::of(t.label_selector.as_ref()).and(extra),
            topology_key: t.topology_key.clone(),
        }
    }

    /// Whether a pod (its namespace, that namespace's labels, its labels) matches.
    pub fn matches(&self, ns: &str, ns_labels: &Labels, labels: &Labels) -> bool {
        self.namespaces.matches(ns, ns_labels) && self.selector.matches(labels)
    }

    pub fn clause(&self) -> Clause {
        Clause {
            namespaces: self.namespaces.clone(),
            selector: self.selector.clone(),
        }
    }
}

/// One condition of a [`Query`]: a pod in one of the namespaces, matching the selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Clause {
    pub namespaces: Namespaces,
    pub selector: Selector,
}

/// Which bound pods to count: those matching every clause (terminating ones left out if
/// `skip_terminating`, as PodTopologySpread counts).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Query {
    pub clauses: Vec<Clause>,
    pub skip_terminating: bool,
}

impl Query {
    pub fn matches(&self, ns: &str, ns_labels: &Labels, labels: &Labels, terminating: bool) -> bool {
        !(self.skip_terminating && terminating)
            && self
                .clauses
                .iter()
                .all(|c| c.namespaces.matches(ns, ns_labels) && c.selector.matches(labels))
    }

    /// Whether the answer depends on namespaces' labels (and so must be counted again when
    /// they change).
    pub fn uses_namespace_labels(&self) -> bool {
        self.clauses.iter().any(|c| c.namespaces.selector.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selectors_as_apimachinery() {
        let s: LabelSelector = serde_json::from_value(json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}))
        .expect("selector");
        let s = Selector::of(Some(&s));
        assert!(s.matches(&labels(&[("app", "web")])));
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[])));
        assert!(
            !Selector::of(None).matches(&labels(&[])),
            "a missing selector matches nothing"
        );
        assert!(Selector::of(Some(&LabelSelector::default())).matches(&labels(&[("x", "y")])));
        let bad: LabelSelector =
            serde_json::from_value(json!({"matchExpressions": [{"key": "a", "operator": "Near"}]})).expect("selector");
        assert!(!Selector::of(Some(&bad)).matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn affinity_terms_resolve_namespaces_and_label_keys() {
        let t: PodAffinityTerm = serde_json::from_value(json!({"topologyKey": "zone",
            "labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["rev"]}))
        .expect("term");
        let owner = labels(&[("app", "web"), ("rev", "1")]);
        let term = Term::of("prod", &owner, &t);
        let none = Labels::new();
        assert!(term.matches("prod", &none, &owner));
        assert!(!term.matches("dev", &none, &owner), "the owner's namespace by default");
        assert!(!term.matches("prod", &none, &labels(&[("app", "web"), ("rev", "2")])));
        let t: PodAffinityTerm = serde_json::from_value(json!({"topologyKey": "zone",
            "labelSelector": {}, "namespaceSelector": {"matchLabels": {"team": "a"}}}))
        .expect("term");
        let term = Term::of("prod", &owner, &t);
        assert!(term.matches("x", &labels(&[("team", "a")]), &none));
        assert!(
            !term.matches("prod", &none, &none),
            "a namespace selector replaces the default"
        );
    }
}
