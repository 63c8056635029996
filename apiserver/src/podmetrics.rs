//! `metrics.k8s.io/v1beta1`: the resource usage of nodes and pods, for `kubectl top`, as
//! metrics-server serves it; here the API server itself asks the node agents.
//!
//! # Where the numbers come from
//!
//! Each node agent samples its containers' CPU time and working-set memory from the OS
//! and serves the kubelet's Summary API (`GET /stats/summary` on its port, the port of
//! `kubectl logs`: over TLS with the API server's kubelet client certificate in a secure
//! cluster, see [`crate::podlog`]). A read of this group asks the agents of the nodes it
//! concerns (for pods, the nodes its pods run on, from the pods' watch cache), at most
//! [`AGENTS_AT_ONCE`] at a time, each within [`crate::podlog::AGENT_HEAD_TIMEOUT_MS`],
//! all within [`SUMMARIES_DEADLINE`]; an agent that does not answer is left out of the
//! answer (as metrics-server leaves out a node it could not scrape), and a named object
//! whose agent did not answer is `404`, as metrics-server answers.
//!
//! - `nodes`, `nodes/<name>`: the node's CPU rate (`usage.cpu` in nanocores, `n`) and
//!   working set (`usage.memory` in `Ki`), with the node's labels.
//! - `pods`, `namespaces/<ns>/pods`, `namespaces/<ns>/pods/<name>`: each container's
//!   usage. A pod is listed once every container has a CPU rate (two samples), as
//!   metrics-server drops pods with a container missing.
//!
//! `window` is the agent's sampling interval as it reports it (10 s by default).
//!
//! A list's `labelSelector` (`kubectl top pod -l`, `top node -l`) is matched against the
//! labels of the Node or Pod objects (from the watch caches), and a PodMetrics carries
//! its pod's labels, as metrics-server's do.
//!
//! # Left out
//!
//! Field selectors, watches, and a cache of the answers: every read asks the agents
//! again.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::error::{ApiError, GroupResource, Result};
use crate::handlers::Api;
use crate::http::json_response;
use crate::resources::ResourceType;
use crate::selector::LabelSelector;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
/// Agents asked at once by one read.
pub const AGENTS_AT_ONCE: usize = 16;
/// The largest summary read from an agent.
pub const SUMMARY_BYTES_MAX: usize = 8 << 20;
/// How long one read gathers summaries: those in by then are answered with (with many
/// agents down, later ones would wait their turn behind their timeouts).
pub const SUMMARIES_DEADLINE: Duration = Duration::from_secs(30);

/// The group's entry in `/apis`.
pub fn group_entry() -> Value {
    let gv = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"name": GROUP, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis/metrics.k8s.io/v1beta1`.
pub fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
        ],
    })
}

/// What a path under the group asks for.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Nodes(Option<&'a str>),
    Pods {
        namespace: Option<&'a str>,
        name: Option<&'a str>,
    },
}

fn target(rest: &str) -> Option<Target<'_>> {
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["nodes"] => Some(Target::Nodes(None)),
        ["nodes", name] if !name.is_empty() => Some(Target::Nodes(Some(name))),
        ["pods"] => Some(Target::Pods {
            namespace: None,
            name: None,
        }),
        ["namespaces", ns, "pods"] if !ns.is_empty() => Some(Target::Pods {
            namespace: Some(ns),
            name: None,
        }),
        ["namespaces", ns, "pods", name] if !ns.is_empty() && !name.is_empty() => Some(Target::Pods {
            namespace: Some(ns),
            name: Some(name),
        }),
        _ => None,
    }
}

/// A CPU rate as a quantity (nanocores).
fn cpu_quantity(nanocores: u64) -> String {
    format!("{nanocores}n")
}

/// A memory amount as a quantity (KiB, as metrics-server writes it).
fn memory_quantity(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

/// `{"cpu", "memory"}` from a summary's `cpu` and `memory` stats, if both are there.
fn usage(stats: &Value) -> Option<Value> {
    let cpu = stats["cpu"]["usageNanoCores"].as_u64()?;
    let memory = stats["memory"]["workingSetBytes"].as_u64()?;
    Some(json!({"cpu": cpu_quantity(cpu), "memory": memory_quantity(memory)}))
}

/// The `window` of a summary (the agent's sampling interval), "10s" when it says none.
fn window(summary: &Value) -> String {
    summary["node"]["window"].as_str().unwrap_or("10s").to_owned()
}

/// A node's NodeMetrics from its agent's summary.
fn node_metrics(node: &Value, summary: &Value) -> Option<Value> {
    let usage = usage(&summary["node"])?;
    let name = node["metadata"]["name"].as_str()?;
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {"name": name, "labels": node["metadata"]["labels"].clone(),
            "creationTimestamp": crate::object::now()},
        "timestamp": summary["node"]["cpu"]["time"].clone(),
        "window": window(summary),
        "usage": usage,
    }))
}

/// The PodMetrics of a summary's pods (those with every container's usage), filtered by
/// namespace and name; `labels_of` gives a pod's labels (None: the pod is not one to list).
fn pod_metrics(
    summary: &Value,
    namespace: Option<&str>,
    name: Option<&str>,
    labels_of: impl Fn(&str, &str) -> Option<Value>,
) -> Vec<Value> {
    let mut out = Vec::new();
    for pod in summary["pods"].as_array().into_iter().flatten() {
        let (pod_ns, pod_name) = (
            pod["podRef"]["namespace"].as_str().unwrap_or_default(),
            pod["podRef"]["name"].as_str().unwrap_or_default(),
        );
        if namespace.is_some_and(|ns| ns != pod_ns) || name.is_some_and(|n| n != pod_name) {
            continue;
        }
        let Some(labels) = labels_of(pod_ns, pod_name) else {
            continue;
        };
        let containers: Option<Vec<Value>> = pod["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| Some(json!({"name": c["name"].clone(), "usage": usage(c)?})))
            .collect();
        let Some(containers) = containers.filter(|c| !c.is_empty()) else {
            continue;
        };
        let time = pod["containers"][0]["cpu"]["time"].clone();
        out.push(json!({
            "kind": "PodMetrics",
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": {"name": pod_name, "namespace": pod_ns, "labels": labels,
                "creationTimestamp": crate::object::now()},
            "timestamp": time,
            "window": window(summary),
            "containers": containers,
        }));
    }
    out
}

/// The summaries of `nodes`' agents, asked at most [`AGENTS_AT_ONCE`] at a time; a node
/// whose agent does not answer in time, or whose turn has not come by
/// [`SUMMARIES_DEADLINE`], is left out (the answers already in are kept).
async fn summaries(api: &Api, nodes: Vec<Arc<Value>>) -> Vec<(Arc<Value>, Value)> {
    futures::stream::iter(nodes)
        .map(|node| async move {
            let name = node["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let addr = crate::podlog::agent_address(&node, &name, "").ok()?;
            match crate::podlog::agent_get(api, addr, "/stats/summary", SUMMARY_BYTES_MAX).await {
                Ok(body) => serde_json::from_slice::<Value>(&body).ok().map(|s| (node, s)),
                Err(e) => {
                    tracing::debug!(node = %name, error = %e, "no summary from the node's agent");
                    None
                }
            }
        })
        .buffer_unordered(AGENTS_AT_ONCE)
        .take_until(tokio::time::sleep(SUMMARIES_DEADLINE))
        .filter_map(|x| async move { x })
        .collect()
        .await
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": format!("{kind}List"), "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items})
}

fn not_found(resource: &str, name: &str) -> ApiError {
    ApiError::NotFound {
        what: GroupResource::new(GROUP, resource),
        name: name.to_owned(),
    }
}

/// `GET /apis/metrics.k8s.io/v1beta1/<rest>` with `labelSelector` from the query.
pub async fn serve(api: &Api, rest: &str, label_selector: &str) -> Result<Response> {
    let selector = LabelSelector::parse(label_selector).map_err(|e| ApiError::BadRequest(e.message))?;
    let Some(target) = target(rest) else {
        return Err(ApiError::NotFound {
            what: GroupResource::new("", ""),
            name: String::new(),
        });
    };
    let nodes_rt = ResourceType::by_kind("Node").ok_or_else(|| ApiError::Internal("nodes are not served".into()))?;
    let (mut nodes, _) = api.caches.get(nodes_rt).list(nodes_rt.prefix().as_bytes(), 0).await?;
    match target {
        Target::Nodes(Some(name)) => nodes.retain(|n| n["metadata"]["name"] == name),
        Target::Nodes(None) => nodes.retain(|n| selector.matches_object(n)),
        Target::Pods { .. } => {}
    }
    let pods_rt = ResourceType::by_kind("Pod").ok_or_else(|| ApiError::Internal("pods are not served".into()))?;
    let pods = api.caches.get(pods_rt);
    // The pods' nodes are known from the pods: ask those agents alone.
    if let Target::Pods { namespace, name } = target {
        let hosts: std::collections::HashSet<String> = match (namespace, name) {
            (Some(ns), Some(pod)) => {
                let node = pods
                    .get(pods_rt.key(Some(ns), pod).as_bytes())
                    .and_then(|p| p["spec"]["nodeName"].as_str().map(str::to_owned))
                    .ok_or_else(|| not_found("pods", pod))?;
                std::iter::once(node).collect()
            }
            _ => {
                let prefix = namespace.map_or_else(|| pods_rt.prefix(), |ns| pods_rt.namespace_prefix(ns));
                let (listed, _) = pods.list(prefix.as_bytes(), 0).await?;
                listed
                    .iter()
                    .filter(|p| selector.matches_object(p))
                    .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_owned))
                    .collect()
            }
        };
        nodes.retain(|n| n["metadata"]["name"].as_str().is_some_and(|n| hosts.contains(n)));
    }
    let answers = summaries(api, nodes).await;
    let body = match target {
        Target::Nodes(name) => {
            let mut items: Vec<Value> = answers.iter().filter_map(|(n, s)| node_metrics(n, s)).collect();
            items.sort_by(|a, b| a["metadata"]["name"].as_str().cmp(&b["metadata"]["name"].as_str()));
            match name {
                Some(name) => items.pop().ok_or_else(|| not_found("nodes", name))?,
                None => list("NodeMetrics", items),
            }
        }
        Target::Pods { namespace, name } => {
            // Pods the cache knows and the selector takes (a named get takes any labels).
            let labels_of = |ns: &str, pod: &str| {
                let obj = pods.get(pods_rt.key(Some(ns), pod).as_bytes())?;
                (name.is_some() || selector.matches_object(&obj)).then(|| obj["metadata"]["labels"].clone())
            };
            let mut items: Vec<Value> = answers
                .iter()
                .flat_map(|(_, s)| pod_metrics(s, namespace, name, labels_of))
                .collect();
            let key = |v: &Value| {
                (
                    v["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
                    v["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
                )
            };
            items.sort_by_key(key);
            match name {
                Some(name) => items.pop().ok_or_else(|| not_found("pods", name))?,
                None => list("PodMetrics", items),
            }
        }
    };
    Ok(json_response(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Value {
        json!({
            "node": {"nodeName": "n1", "cpu": {"time": "2026-12-07T10:00:00Z", "usageNanoCores": 250_000_000u64},
                     "memory": {"time": "2026-12-07T10:00:00Z", "workingSetBytes": 2_097_152u64}},
            "pods": [
                {"podRef": {"name": "web", "namespace": "default", "uid": "u1"},
                 "containers": [{"name": "c", "cpu": {"time": "2026-12-07T10:00:00Z", "usageNanoCores": 5_000_000u64},
                                 "memory": {"workingSetBytes": 1_048_576u64}}]},
                {"podRef": {"name": "young", "namespace": "default", "uid": "u2"},
                 "containers": [{"name": "c", "cpu": {"time": "2026-12-07T10:00:00Z"},
                                 "memory": {"workingSetBytes": 1024u64}}]},
                {"podRef": {"name": "db", "namespace": "team", "uid": "u3"},
                 "containers": [{"name": "c", "cpu": {"usageNanoCores": 1u64}, "memory": {"workingSetBytes": 4096u64}}]},
            ]
        })
    }

    #[test]
    fn paths_name_nodes_and_pods() {
        assert_eq!(target("nodes"), Some(Target::Nodes(None)));
        assert_eq!(target("nodes/n1"), Some(Target::Nodes(Some("n1"))));
        assert_eq!(
            target("namespaces/team/pods/db"),
            Some(Target::Pods {
                namespace: Some("team"),
                name: Some("db")
            })
        );
        assert_eq!(
            target("pods"),
            Some(Target::Pods {
                namespace: None,
                name: None
            })
        );
        assert_eq!(target("nodes/n1/x"), None);
        assert_eq!(target("services"), None);
    }

    #[test]
    fn summaries_become_metrics_as_metrics_server_writes_them() {
        let node = json!({"metadata": {"name": "n1", "labels": {"zone": "a"}}});
        let m = node_metrics(&node, &summary()).expect("node metrics");
        assert_eq!(m["usage"], json!({"cpu": "250000000n", "memory": "2048Ki"}));
        assert_eq!(m["metadata"]["labels"], json!({"zone": "a"}));
        assert_eq!(m["window"], "10s");
        let any = |_: &str, _: &str| Some(json!({"app": "x"}));
        let pods = pod_metrics(&summary(), Some("default"), None, any);
        assert_eq!(pods.len(), 1, "a pod without a CPU rate yet is left out: {pods:?}");
        assert_eq!(pods[0]["metadata"]["name"], "web");
        assert_eq!(pods[0]["metadata"]["labels"], json!({"app": "x"}));
        assert_eq!(
            pods[0]["containers"][0]["usage"],
            json!({"cpu": "5000000n", "memory": "1024Ki"})
        );
        assert_eq!(pod_metrics(&summary(), None, None, any).len(), 2);
        assert_eq!(pod_metrics(&summary(), Some("team"), Some("db"), any).len(), 1);
        assert_eq!(pod_metrics(&summary(), Some("team"), Some("web"), any).len(), 0);
        let only_db = |_: &str, pod: &str| (pod == "db").then(|| json!({}));
        let pods = pod_metrics(&summary(), None, None, only_db);
        assert_eq!(pods.len(), 1, "the pods the selector leaves out: {pods:?}");
        assert_eq!(pods[0]["metadata"]["name"], "db");
    }
}
