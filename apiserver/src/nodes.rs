//! The Node authorizer and node restriction: what a node agent (`system:node:<name>` in
//! the group `system:nodes`) may do, as upstream's Node authorizer and NodeRestriction
//! admission plugin decide it.
//!
//! **Authorization** ([`authorize`]) runs beside RBAC (a request is allowed when either
//! allows it; the default `system:node` ClusterRoleBinding has no subjects, as upstream's):
//!
//! - Secrets, ConfigMaps and PersistentVolumeClaims: `get` of one that a pod bound to the
//!   node uses (volumes, projected sources, `env[].valueFrom`, `envFrom`,
//!   `imagePullSecrets`); nothing else (no list or watch). A ServiceAccount token may be
//!   created for the ServiceAccount of a pod bound to the node.
//! - Everything else the `system:node` ClusterRole grants (read pods, services,
//!   endpoints and nodes, write events, leases and nodes, pod status ...).
//!
//! **Restriction** ([`restrict`]), after any authorizer allowed a write:
//!
//! - Nodes: a node updates, patches or deletes only its own Node (and its status).
//! - Pods: a node updates the status of, evicts or deletes only pods bound to it, and
//!   creates none (upstream lets it create mirror pods; Capstan has no static pods).
//! - Leases in `kube-node-lease`: only the one named after the node.
//!
//! The relations come from the watch cache of pods, which keeps its pods by the node they
//! are bound to (`spec.nodeName`): for a related request the caller reads the pods of the
//! node from that index ([`crate::cache::WatchCache::pods_on_node`], as fresh as a list
//! of the cache, and costing the node's pods, not the cluster's), and [`authorize`] looks
//! through their references; for a pod write it looks up the one pod. No graph of the
//! other objects is kept. The names of the objects a node *creates* (a create's
//! attributes have none) are checked on the object, by the create handler
//! ([`restrict_create`]), and the pod a node binds a token to by the TokenRequest route.
//! Left out: PersistentVolumes through their claims, and VolumeAttachments, CSINodes and
//! ResourceSlices.

use serde_json::Value;

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::rbac::{self, Attributes, Decision, ResourceAttributes, UserInfo};

/// The group every node agent is in.
pub const NODES_GROUP: &str = rbac::NODES_GROUP;
/// A node agent's user name is this and its node's name.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// Where node Leases live.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node a user is the agent of, if it is one.
pub fn node_of(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    (!name.is_empty() && user.groups.iter().any(|g| g == NODES_GROUP)).then_some(name)
}

/// What a pod uses that only its node may read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PodRefs {
    pub secrets: Vec<String>,
    pub config_maps: Vec<String>,
    pub claims: Vec<String>,
    pub service_account: String,
}

/// The objects `pod` refers to.
pub fn references(pod: &Value) -> PodRefs {
    let spec = &pod["spec"];
    let mut refs = PodRefs {
        service_account: spec["serviceAccountName"].as_str().unwrap_or("default").to_owned(),
        ..PodRefs::default()
    };
    let add = |list: &mut Vec<String>, v: &Value| {
        if let Some(name) = v.as_str().filter(|n| !n.is_empty()) {
            if !list.iter().any(|n| n == name) {
                list.push(name.to_owned());
            }
        }
    };
    for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        add(&mut refs.secrets, &s["name"]);
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        add(&mut refs.secrets, &v["secret"]["secretName"]);
        add(&mut refs.config_maps, &v["configMap"]["name"]);
        add(&mut refs.claims, &v["persistentVolumeClaim"]["claimName"]);
        for source in v["projected"]["sources"].as_array().into_iter().flatten() {
            add(&mut refs.secrets, &source["secret"]["name"]);
            add(&mut refs.config_maps, &source["configMap"]["name"]);
        }
    }
    let containers = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten());
    for c in containers {
        for e in c["env"].as_array().into_iter().flatten() {
            add(&mut refs.secrets, &e["valueFrom"]["secretKeyRef"]["name"]);
            add(&mut refs.config_maps, &e["valueFrom"]["configMapKeyRef"]["name"]);
        }
        for e in c["envFrom"].as_array().into_iter().flatten() {
            add(&mut refs.secrets, &e["secretRef"]["name"]);
            add(&mut refs.config_maps, &e["configMapRef"]["name"]);
        }
    }
    refs
}

/// Whether `pod` is bound to `node`.
pub fn bound_to(pod: &Value, node: &str) -> bool {
    pod["spec"]["nodeName"].as_str() == Some(node)
}

/// The resource a request is about when only the pods of a node relate it to the node.
fn related_resource(r: &ResourceAttributes) -> bool {
    r.api_group.is_empty()
        && (matches!(r.resource.as_str(), "secrets" | "configmaps" | "persistentvolumeclaims")
            && r.subresource.is_empty()
            || r.resource == "serviceaccounts" && r.subresource == "token")
}

/// Whether the request needs the pods of the node to be decided ([`authorize`]).
pub fn needs_pods(attrs: &Attributes) -> bool {
    matches!(attrs, Attributes::Resource(r) if related_resource(r))
}

/// The Node authorizer's decision for node `node`: `node_rules` are the `system:node`
/// ClusterRole's, `pods` the pods bound to the node (read only when [`needs_pods`]).
pub fn authorize(node: &str, attrs: &Attributes, node_rules: &[PolicyRule], pods: &[&Value]) -> Decision {
    let Attributes::Resource(r) = attrs else {
        return Decision::Deny { reason: String::new() };
    };
    if related_resource(r) {
        let pods: Vec<&Value> = pods.iter().copied().filter(|p| bound_to(p, node)).collect();
        let allowed = match (r.resource.as_str(), r.verb.as_str()) {
            ("serviceaccounts", "create") => pods
                .iter()
                .any(|p| p["metadata"]["namespace"] == r.namespace.as_str() && references(p).service_account == r.name),
            (kind, "get") if !r.name.is_empty() => pods.iter().any(|p| {
                if p["metadata"]["namespace"] != r.namespace.as_str() {
                    return false;
                }
                let refs = references(p);
                let names = match kind {
                    "secrets" => refs.secrets,
                    "configmaps" => refs.config_maps,
                    _ => refs.claims,
                };
                names.contains(&r.name)
            }),
            _ => false,
        };
        return match allowed {
            true => Decision::Allow,
            false => Decision::Deny {
                reason: format!("no relationship found between node '{node}' and this object"),
            },
        };
    }
    match node_rules.iter().any(|rule| rbac::rule_allows(attrs, rule)) {
        true => Decision::Allow,
        false => Decision::Deny { reason: String::new() },
    }
}

/// NodeRestriction: whether node `node` may make the write `attrs` describes (reads
/// pass). `pod` is the pod the request names, looked up by the caller (None when it is
/// not a pod request, or the pod is not known).
pub fn restrict(node: &str, attrs: &Attributes, pod: Option<&Value>) -> Result<(), String> {
    let Attributes::Resource(r) = attrs else {
        return Ok(());
    };
    let write = matches!(
        r.verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    );
    if !write || !r.api_group.is_empty() && r.api_group != "coordination.k8s.io" {
        return Ok(());
    }
    let own = |what: &str| -> Result<(), String> {
        match r.name == node {
            true => Ok(()),
            false => Err(format!(
                "node \"{node}\" is not allowed to modify {what} \"{}\"",
                r.name
            )),
        }
    };
    match (r.api_group.as_str(), r.resource.as_str()) {
        ("", "nodes") if r.verb == "create" => Ok(()),
        ("", "nodes") => own("node"),
        ("coordination.k8s.io", "leases") if r.namespace == NODE_LEASE_NAMESPACE && r.verb != "create" => {
            own("node lease")
        }
        ("coordination.k8s.io", "leases") if r.namespace != NODE_LEASE_NAMESPACE => Err(format!(
            "node \"{node}\" can only access leases in the {NODE_LEASE_NAMESPACE} namespace"
        )),
        ("", "pods") if r.verb == "create" && r.subresource.is_empty() => Err(format!(
            "node \"{node}\" can only create mirror pods, which Capstan does not have"
        )),
        ("", "pods") => match pod {
            Some(p) if bound_to(p, node) => Ok(()),
            Some(_) => Err(format!(
                "node \"{node}\" can only modify pods bound to it; pod \"{}\" is not",
                r.name
            )),
            None if r.name.is_empty() => Err(format!("node \"{node}\" cannot modify pods it does not name")),
            // Gone already: nothing to protect.
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Node restriction of the objects a node agent creates, judged on the new object's name
/// (which a create's attributes lack): a node creates only its own Node, and only its
/// own Lease in [`NODE_LEASE_NAMESPACE`] (upstream's NodeRestriction messages).
pub fn restrict_create(node: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Result<(), String> {
    match (group, resource) {
        ("", "nodes") if name != node => Err(format!("node \"{node}\" is not allowed to modify node \"{name}\"")),
        ("coordination.k8s.io", "leases") if namespace == NODE_LEASE_NAMESPACE && name != node => {
            Err("can only access node lease with the same name as the requesting node".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node_user(name: &str) -> UserInfo {
        UserInfo {
            name: format!("system:node:{name}"),
            uid: String::new(),
            groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
        }
    }

    fn attrs(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes::Resource(ResourceAttributes {
            verb: verb.into(),
            api_group: group.into(),
            api_version: "v1".into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
        })
    }

    fn pod(node: &str) -> Value {
        json!({
            "metadata": {"namespace": "team", "name": "p"},
            "spec": {
                "nodeName": node,
                "serviceAccountName": "builder",
                "imagePullSecrets": [{"name": "pull"}],
                "volumes": [
                    {"name": "a", "secret": {"secretName": "vol-secret"}},
                    {"name": "b", "configMap": {"name": "vol-cm"}},
                    {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "d", "projected": {"sources": [{"secret": {"name": "proj"}}]}}
                ],
                "containers": [{
                    "name": "c",
                    "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}],
                    "envFrom": [{"secretRef": {"name": "env-secret"}}]
                }]
            }
        })
    }

    #[test]
    fn a_node_user_is_recognized_only_with_its_group() {
        assert_eq!(node_of(&node_user("n1")), Some("n1"));
        let mut no_group = node_user("n1");
        no_group.groups.clear();
        assert_eq!(node_of(&no_group), None);
        assert_eq!(node_of(&node_user("")), None);
    }

    #[test]
    fn a_pods_references_are_all_found() {
        let refs = references(&pod("n1"));
        assert_eq!(refs.secrets, ["pull", "vol-secret", "proj", "env-secret"]);
        assert_eq!(refs.config_maps, ["vol-cm", "env-cm"]);
        assert_eq!(refs.claims, ["data"]);
        assert_eq!(refs.service_account, "builder");
    }

    #[test]
    fn a_node_reads_only_the_secrets_and_config_maps_of_its_pods() {
        let p = pod("n1");
        let pods = [&p];
        let rules: Vec<PolicyRule> = Vec::new();
        let allowed = |a: &Attributes| matches!(authorize("n1", a, &rules, &pods), Decision::Allow);
        assert!(allowed(&attrs("get", "", "secrets", "", "team", "env-secret")));
        assert!(allowed(&attrs("get", "", "configmaps", "", "team", "vol-cm")));
        assert!(allowed(&attrs("get", "", "persistentvolumeclaims", "", "team", "data")));
        assert!(allowed(&attrs(
            "create",
            "",
            "serviceaccounts",
            "token",
            "team",
            "builder"
        )));
        assert!(!allowed(&attrs("get", "", "secrets", "", "team", "other")));
        assert!(!allowed(&attrs("get", "", "secrets", "", "elsewhere", "env-secret")));
        assert!(!allowed(&attrs("list", "", "secrets", "", "team", "")));
        assert!(!allowed(&attrs("watch", "", "configmaps", "", "", "")));
        assert!(!allowed(&attrs(
            "create",
            "",
            "serviceaccounts",
            "token",
            "team",
            "default"
        )));
        // Another node's pod relates nothing to n1.
        let other = pod("n2");
        let Decision::Deny { reason } = authorize(
            "n1",
            &attrs("get", "", "secrets", "", "team", "pull"),
            &rules,
            &[&other],
        ) else {
            panic!("allowed");
        };
        assert_eq!(reason, "no relationship found between node 'n1' and this object");
    }

    #[test]
    fn other_requests_follow_the_node_role() {
        let (roles, _) = rbac::bootstrap_policy();
        let role = roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some("system:node"))
            .expect("the system:node role");
        let rules = role.rules.clone().unwrap_or_default();
        let allowed = |a: &Attributes| matches!(authorize("n1", a, &rules, &[]), Decision::Allow);
        assert!(allowed(&attrs("list", "", "pods", "", "", "")));
        assert!(allowed(&attrs("update", "", "nodes", "status", "", "n1")));
        assert!(allowed(&attrs(
            "update",
            "coordination.k8s.io",
            "leases",
            "",
            "kube-node-lease",
            "n1"
        )));
        assert!(!allowed(&attrs("delete", "", "namespaces", "", "", "team")));
        assert!(!allowed(&attrs("create", "apps", "deployments", "", "team", "")));
    }

    #[test]
    fn a_node_writes_only_its_own_node_lease_and_pods() {
        let mine = pod("n1");
        let theirs = pod("n2");
        assert!(restrict("n1", &attrs("update", "", "nodes", "status", "", "n1"), None).is_ok());
        assert!(restrict("n1", &attrs("patch", "", "nodes", "", "", "n2"), None).is_err());
        assert!(restrict("n1", &attrs("delete", "", "nodes", "", "", "n2"), None).is_err());
        assert!(restrict("n1", &attrs("get", "", "nodes", "", "", "n2"), None).is_ok());
        assert!(restrict(
            "n1",
            &attrs("update", "coordination.k8s.io", "leases", "", "kube-node-lease", "n1"),
            None
        )
        .is_ok());
        assert!(restrict(
            "n1",
            &attrs("update", "coordination.k8s.io", "leases", "", "kube-node-lease", "n2"),
            None
        )
        .is_err());
        assert!(restrict(
            "n1",
            &attrs("update", "coordination.k8s.io", "leases", "", "kube-system", "n1"),
            None
        )
        .is_err());
        assert!(restrict("n1", &attrs("update", "", "pods", "status", "team", "p"), Some(&mine)).is_ok());
        let e = restrict("n1", &attrs("update", "", "pods", "status", "team", "p"), Some(&theirs))
            .expect_err("not its pod");
        assert!(e.contains("bound to it"), "{e}");
        assert!(restrict("n1", &attrs("delete", "", "pods", "", "team", "p"), Some(&theirs)).is_err());
        assert!(restrict("n1", &attrs("create", "", "pods", "", "team", ""), None).is_err());
        assert!(restrict("n1", &attrs("create", "", "events", "", "team", ""), None).is_ok());
    }

    #[test]
    fn a_node_creates_only_its_own_node_and_lease() {
        assert!(restrict_create("n1", "", "nodes", "", "n1").is_ok());
        assert_eq!(
            restrict_create("n1", "", "nodes", "", "n2"),
            Err("node \"n1\" is not allowed to modify node \"n2\"".into())
        );
        assert!(restrict_create("n1", "coordination.k8s.io", "leases", NODE_LEASE_NAMESPACE, "n1").is_ok());
        assert!(restrict_create("n1", "coordination.k8s.io", "leases", NODE_LEASE_NAMESPACE, "n2").is_err());
        assert!(restrict_create("n1", "", "events", "default", "n2.123").is_ok());
    }
}
