//! Discovery: what kubectl and client libraries read first to learn which resources the
//! server has. Legacy (plain JSON) discovery only, which every kubectl from 1.20 on
//! understands.
//!
//! `/version` names 1.32: the kubectl dispatcher some machines have at /usr/bin/kubectl
//! runs the kubectl whose minor version matches.

use serde_json::{json, Value};

use crate::resources::{ResourceType, Sub, GROUPS, RESOURCES, VERBS};

/// The Kubernetes version this server presents.
pub const MAJOR: &str = "1";
pub const MINOR: &str = "32";
pub const GIT_VERSION: &str = "v1.32.0-capstan";

pub fn version() -> Value {
    json!({
        "major": MAJOR,
        "minor": MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "2026-11-26T00:00:00Z",
        "goVersion": "none (Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `/api`.
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

/// Create-only resources that are answers rather than stored objects (group, plural,
/// kind): the reviews `kubectl auth whoami` and `kubectl auth can-i` post (see
/// [`crate::auth`]).
pub const REVIEWS: &[(&str, &str, &str)] = &[
    ("authentication.k8s.io", "selfsubjectreviews", "SelfSubjectReview"),
    (
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
    ),
    (
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
    ),
];

/// The groups that serve only reviews, in order.
const REVIEW_GROUPS: [&str; 2] = ["authentication.k8s.io", "authorization.k8s.io"];

fn served_group(group: &str) -> bool {
    GROUPS.contains(&group) || REVIEW_GROUPS.contains(&group)
}

fn group_entry(group: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis`.
pub fn api_groups() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": GROUPS
            .iter()
            .chain(REVIEW_GROUPS.iter())
            .map(|g| group_entry(g))
            .chain([crate::podmetrics::group_entry()])
            .collect::<Vec<_>>(),
    })
}

/// `/apis/<group>`, if served.
pub fn api_group(group: &str) -> Option<Value> {
    if group == crate::podmetrics::GROUP {
        let mut g = crate::podmetrics::group_entry();
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        return Some(g);
    }
    served_group(group).then(|| {
        let mut g = group_entry(group);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

fn sub_entry(r: &ResourceType, sub: Sub) -> Value {
    let (verbs, kind, extra): (&[&str], &str, Option<(&str, &str)>) = match sub {
        Sub::Status => (&["get", "patch", "update"], r.kind, None),
        Sub::Scale => (&["get", "patch", "update"], "Scale", Some(("autoscaling", "v1"))),
        Sub::Binding => (&["create"], "Binding", None),
        Sub::Log => (&["get"], "Pod", None),
        Sub::Eviction => (&["create"], "Eviction", Some(("policy", "v1"))),
        Sub::Finalize => (&["update"], "Namespace", None),
    };
    let mut e = json!({
        "name": format!("{}/{}", r.plural, sub.name()),
        "singularName": "",
        "namespaced": r.namespaced,
        "kind": kind,
        "verbs": verbs,
    });
    if let Some((group, version)) = extra {
        e["group"] = json!(group);
        e["version"] = json!(version);
    }
    e
}

/// `/api/v1` (group "") or `/apis/<group>/v1`, if served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if group == crate::podmetrics::GROUP {
        return (version == crate::podmetrics::VERSION).then(crate::podmetrics::resource_list);
    }
    if version != "v1" || !(group.is_empty() || served_group(group)) {
        return None;
    }
    let mut resources = Vec::new();
    for (_, plural, kind) in REVIEWS.iter().filter(|(g, ..)| *g == group) {
        resources.push(json!({
            "name": plural, "singularName": "", "namespaced": false, "kind": kind, "verbs": ["create"],
        }));
    }
    for r in RESOURCES.iter().filter(|r| r.group == group) {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if r.in_all {
            e["categories"] = json!(["all"]);
        }
        resources.push(e);
        for sub in r.subresources {
            resources.push(sub_entry(r, *sub));
        }
    }
    let group_version = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_review_groups_list_their_create_only_resources() {
        let groups = api_groups();
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .filter_map(|g| g["name"].as_str())
            .collect();
        assert!(names.contains(&"authorization.k8s.io") && names.contains(&"authentication.k8s.io"));
        assert!(api_group("authorization.k8s.io").is_some());
        let authz = resource_list("authorization.k8s.io", "v1").expect("authorization.k8s.io/v1");
        let listed: Vec<(&str, &str)> = authz["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .map(|r| (r["name"].as_str().unwrap_or(""), r["kind"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(
            listed,
            [
                ("selfsubjectaccessreviews", "SelfSubjectAccessReview"),
                ("selfsubjectrulesreviews", "SelfSubjectRulesReview")
            ]
        );
        assert_eq!(authz["resources"][0]["verbs"], json!(["create"]));
        let authn = resource_list("authentication.k8s.io", "v1").expect("authentication.k8s.io/v1");
        assert_eq!(authn["resources"][0]["name"], "selfsubjectreviews");
    }

    #[test]
    fn discovery_lists_every_resource_and_subresource() {
        let core = resource_list("", "v1").expect("core");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        for n in [
            "pods",
            "pods/log",
            "pods/status",
            "pods/binding",
            "services",
            "namespaces",
            "nodes/status",
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        let apps = resource_list("apps", "v1").expect("apps");
        let scale = apps["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .expect("deployments/scale");
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
        assert!(resource_list("apps", "v2").is_none());
        assert!(resource_list("batch", "v1").is_none());
        assert_eq!(api_groups()["groups"][0]["preferredVersion"]["groupVersion"], "apps/v1");
    }

    #[test]
    fn discovery_lists_the_rbac_kinds() {
        let groups: Vec<String> = api_groups()["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .filter_map(|g| g["name"].as_str().map(str::to_string))
            .collect();
        assert_eq!(
            groups,
            [
                "apps",
                "rbac.authorization.k8s.io",
                "coordination.k8s.io",
                "discovery.k8s.io",
                "authentication.k8s.io",
                "authorization.k8s.io",
                "metrics.k8s.io",
            ]
        );
        let m = api_group("metrics.k8s.io").expect("the metrics group");
        assert_eq!(m["preferredVersion"]["groupVersion"], "metrics.k8s.io/v1beta1");
        let kinds = resource_list("metrics.k8s.io", "v1beta1").expect("metrics resources");
        assert_eq!(kinds["resources"][0]["kind"], "NodeMetrics");
        assert!(resource_list("metrics.k8s.io", "v1").is_none());
        let g = api_group("rbac.authorization.k8s.io").expect("rbac group");
        assert_eq!(g["preferredVersion"]["groupVersion"], "rbac.authorization.k8s.io/v1");
        let list = resource_list("rbac.authorization.k8s.io", "v1").expect("rbac resources");
        assert_eq!(list["groupVersion"], "rbac.authorization.k8s.io/v1");
        let resources = list["resources"].as_array().expect("resources");
        let got: Vec<(&str, &str, bool)> = resources
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or("?"),
                    r["kind"].as_str().unwrap_or("?"),
                    r["namespaced"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("roles", "Role", true),
                ("rolebindings", "RoleBinding", true),
                ("clusterroles", "ClusterRole", false),
                ("clusterrolebindings", "ClusterRoleBinding", false),
            ]
        );
        for r in resources {
            assert_eq!(r["verbs"], json!(VERBS));
            assert!(r.get("shortNames").is_none() && r.get("categories").is_none(), "{r}");
        }
    }
}
