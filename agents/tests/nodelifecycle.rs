//! The node lifecycle controller against Capstan's Kubernetes API (in this process, over
//! real HTTP), with short grace periods. Nodes heartbeat through a stand-in node agent
//! (a task that renews the node's Lease in `kube-node-lease` and posts the Ready
//! condition it is told to); a second node keeps heartbeating throughout, so the cluster
//! is never wholly disrupted (then no NoExecute taints would be kept, as upstream).
//!
//! - A node whose agent stops becomes `Ready=Unknown` with both unreachable taints; one
//!   that posts `Ready=False` gets the not-ready taints instead; `Ready=True` clears them.
//! - Node loss eviction: of a lost node's pods, those that do not tolerate the unreachable
//!   taint (or tolerate it for 0 s) are deleted at once, a ReplicaSet's pods that tolerate
//!   it for 2 s no sooner than 2 s after the node went Unknown, and one that tolerates it
//!   without `tolerationSeconds` stays; the ReplicaSet replaces its pods, and the scheduler
//!   puts the replacements on the healthy node. Deleting the lost Node then removes the
//!   pods left on it, Terminating or not.
//! - Deleting a Node deletes its pods (and a pod bound to a node that never existed);
//!   pods of other nodes stay.
//! - The API server's DefaultTolerationSeconds admission.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use capstan_agents::nodelifecycle::node_condition;
use capstan_agents::nodelifecycle::{self, Config, TAINT_NOT_READY, TAINT_UNREACHABLE};
use common::{eventually, start};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const NS: &str = "default";
/// How often the stand-in node agent heartbeats: well within the grace period below.
const HEARTBEAT: Duration = Duration::from_millis(200);

fn config() -> Config {
    Config {
        node_monitor_period: Duration::from_millis(200),
        node_monitor_grace_period: Duration::from_secs(3),
        node_startup_grace_period: Duration::from_secs(3),
        // Not what these tests are about: a lost node is tainted at its first chance.
        node_evictions_per_s: 100.0,
        orphan_quarantine: Duration::from_millis(500),
        ..Config::default()
    }
}

/// A stand-in node agent; dropping it stops the heartbeats (the node is lost).
struct Agent(tokio::task::JoinHandle<()>);

impl Drop for Agent {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews `node`'s Lease every [`HEARTBEAT`] and posts `Ready=<ready>` whenever the node
/// says otherwise (as a kubelet posts its status on changes).
fn agent(client: &Client, node: &str, ready: &'static str) -> Agent {
    let (client, node) = (client.clone(), node.to_owned());
    Agent(tokio::spawn(async move {
        let leases: Api<Lease> = Api::namespaced(client.clone(), nodelifecycle::NODE_LEASE_NAMESPACE);
        let nodes: Api<Node> = Api::all(client);
        loop {
            // A failed heartbeat is simply tried again on the next one.
            let _ = heartbeat(&leases, &nodes, &node, ready).await;
            tokio::time::sleep(HEARTBEAT).await;
        }
    }))
}

async fn heartbeat(leases: &Api<Lease>, nodes: &Api<Node>, node: &str, ready: &str) -> Result<(), kube::Error> {
    let now = Timestamp::now();
    let spec = json!({"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": MicroTime(now)});
    if leases.get_opt(node).await?.is_some() {
        leases
            .patch(node, &PatchParams::default(), &Patch::Merge(&json!({"spec": spec})))
            .await?;
    } else {
        let lease: Lease = serde_json::from_value(json!({"metadata": {"name": node}, "spec": spec})).expect("lease");
        leases.create(&PostParams::default(), &lease).await?;
    }
    let current = nodes.get(node).await?;
    if ready_of(&current).as_deref() != Some(ready) {
        let condition = json!({"type": "Ready", "status": ready, "reason": "KubeletReady",
            "message": "kubelet is posting ready status", "lastHeartbeatTime": Time(now),
            "lastTransitionTime": Time(now)});
        let patch = json!({"status": {"conditions": [condition]}});
        nodes
            .patch_status(node, &PatchParams::default(), &Patch::Strategic(&patch))
            .await?;
    }
    Ok(())
}

fn ready_of(node: &Node) -> Option<String> {
    condition_of(node, "Ready").map(|c| c.0)
}

/// A node condition's status, reason, message and last transition.
fn condition_of(node: &Node, type_: &str) -> Option<(String, String, String, Option<Timestamp>)> {
    let c = node_condition(node, type_)?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
        c.last_transition_time.as_ref().map(|t| t.0),
    ))
}

fn taints_of(node: &Node) -> Vec<Taint> {
    node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default()
}

/// The node's `node.kubernetes.io/...` taints as `key:effect`, all carrying timeAdded.
fn lifecycle_taints(node: &Node) -> Result<BTreeSet<String>, String> {
    let ours: Vec<Taint> = taints_of(node)
        .into_iter()
        .filter(|t| t.key.starts_with("node.kubernetes.io/"))
        .collect();
    if let Some(t) = ours.iter().find(|t| t.time_added.is_none()) {
        return Err(format!("{t:?} has no timeAdded"));
    }
    Ok(ours.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect())
}

fn pair(key: &str) -> BTreeSet<String> {
    [format!("{key}:NoExecute"), format!("{key}:NoSchedule")].into()
}

async fn create_node(nodes: &Api<Node>, name: &str) {
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                   "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
    .expect("node");
    eventually(&format!("create node {name}"), || async {
        nodes
            .create(&PostParams::default(), &node)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
}

/// Waits until `name` is Ready=True without taints of ours.
async fn wait_healthy(nodes: &Api<Node>, name: &str) {
    eventually(&format!("{name} ready and untainted"), || async {
        let node = nodes.get(name).await.map_err(|e| e.to_string())?;
        let taints = lifecycle_taints(&node)?;
        if ready_of(&node).as_deref() == Some("True") && taints.is_empty() {
            Ok(())
        } else {
            Err(format!("ready {:?}, taints {taints:?}", ready_of(&node)))
        }
    })
    .await;
}

fn pod(name: &str, node: Option<&str>, tolerations: serde_json::Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "nginx"}], "tolerations": tolerations});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("pod")
}

fn unreachable_for(seconds: Option<i64>) -> serde_json::Value {
    let mut t = json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"});
    if let Some(s) = seconds {
        t["tolerationSeconds"] = json!(s);
    }
    t
}

fn default_toleration(key: &str) -> serde_json::Value {
    json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
}

fn tolerations_of(pod: &Pod) -> serde_json::Value {
    serde_json::to_value(
        pod.spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default(),
    )
    .expect("tolerations")
}

/// When the pod got `DisruptionTarget=True` with `reason`, if it did.
fn disruption_time(pod: &Pod, reason: &str) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True" && c.reason.as_deref() == Some(reason))?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_heartbeating_becomes_unknown_and_tainted_until_it_is_ready_again() {
    let cluster = start().await;
    let client = cluster.client.clone();
    tokio::spawn(nodelifecycle::run(client.clone(), config()));
    let nodes: Api<Node> = Api::all(client.clone());
    create_node(&nodes, "a").await;
    create_node(&nodes, "b").await;
    let _b = agent(&client, "b", "True");
    let a = agent(&client, "a", "True");
    wait_healthy(&nodes, "a").await;

    drop(a);
    eventually("a Unknown with both unreachable taints", || async {
        let node = nodes.get("a").await.map_err(|e| e.to_string())?;
        let taints = lifecycle_taints(&node)?;
        let stopped = "Kubelet stopped posting node status.";
        let never = "Kubelet never posted node status.";
        let conditions: Vec<_> = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]
            .map(|t| condition_of(&node, t).map(|(s, r, m, at)| (s, r, m, at.is_some())))
            .into();
        let want = vec![
            Some(("Unknown".into(), "NodeStatusUnknown".into(), stopped.into(), true)),
            Some(("Unknown".into(), "NodeStatusNeverUpdated".into(), never.into(), true)),
            Some(("Unknown".into(), "NodeStatusNeverUpdated".into(), never.into(), true)),
            Some(("Unknown".into(), "NodeStatusNeverUpdated".into(), never.into(), true)),
        ];
        if conditions == want && taints == pair(TAINT_UNREACHABLE) {
            Ok(())
        } else {
            Err(format!("conditions {conditions:?}, taints {taints:?}"))
        }
    })
    .await;
    let b = nodes.get("b").await.expect("b");
    assert_eq!(ready_of(&b).as_deref(), Some("True"), "the healthy node is left alone");
    assert_eq!(lifecycle_taints(&b), Ok(BTreeSet::new()));
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    eventually("a NodeNotReady event for a", || async {
        let list = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        list.items
            .iter()
            .find(|e| {
                e.involved_object.kind.as_deref() == Some("Node")
                    && e.involved_object.name.as_deref() == Some("a")
                    && e.reason.as_deref() == Some("NodeNotReady")
            })
            .map(|e| assert_eq!(e.message.as_deref(), Some("Node a status is now: NodeNotReady")))
            .ok_or_else(|| "none yet".to_string())
    })
    .await;

    // Back, but not ready: the not-ready taints replace the unreachable ones.
    let a = agent(&client, "a", "False");
    eventually("a not-ready taints", || async {
        let node = nodes.get("a").await.map_err(|e| e.to_string())?;
        let taints = lifecycle_taints(&node)?;
        if ready_of(&node).as_deref() == Some("False") && taints == pair(TAINT_NOT_READY) {
            Ok(())
        } else {
            Err(format!("ready {:?}, taints {taints:?}", ready_of(&node)))
        }
    })
    .await;
    drop(a);

    // Ready again: no taints of ours left.
    let _a = agent(&client, "a", "True");
    wait_healthy(&nodes, "a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_loss_eviction() {
    let cluster = start().await;
    let client = cluster.client.clone();
    tokio::spawn(nodelifecycle::run(client.clone(), config()));
    tokio::spawn(capstan_agents::replicaset::run(client.clone()));
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    create_node(&nodes, "a").await;
    create_node(&nodes, "b").await;
    let _b = agent(&client, "b", "True");
    let a = agent(&client, "a", "True");
    wait_healthy(&nodes, "a").await;
    wait_healthy(&nodes, "b").await;

    // A ReplicaSet whose pods tolerate an unreachable node for 2 s, bound to a by hand.
    let set: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}],
                                       "tolerations": [unreachable_for(Some(2))]}}}
    }))
    .expect("replicaset");
    sets.create(&PostParams::default(), &set)
        .await
        .expect("create the replicaset");
    let originals: BTreeSet<String> = eventually("the replicaset's 2 pods", || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .map_err(|e| e.to_string())?;
        let names: BTreeSet<String> = list.items.iter().map(|p| p.name_any()).collect();
        if names.len() == 2 {
            Ok(names)
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
    for name in &originals {
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "a"}});
        pods.create_subresource::<serde_json::Value, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
        .expect("bind to a");
    }
    // The admission added the default not-ready toleration, not a second unreachable one.
    let web = pods.get(originals.first().expect("a pod")).await.expect("web pod");
    assert_eq!(
        tolerations_of(&web),
        json!([unreachable_for(Some(2)), default_toleration(TAINT_NOT_READY)])
    );

    // Tolerates forever; tolerates for 0 s; does not tolerate (its toleration names the
    // key and effect, so the admission adds none, but wants another value).
    let intolerant = json!({"key": TAINT_UNREACHABLE, "operator": "Equal", "value": "other", "effect": "NoExecute"});
    for (name, toleration) in [
        ("forever", unreachable_for(None)),
        ("at-once", unreachable_for(Some(0))),
        ("intolerant", intolerant),
    ] {
        pods.create(&PostParams::default(), &pod(name, Some("a"), json!([toleration])))
            .await
            .expect("create a pod on a");
    }

    drop(a);
    let lost_at = eventually("a Unknown", || async {
        let node = nodes.get("a").await.map_err(|e| e.to_string())?;
        match condition_of(&node, "Ready") {
            Some((status, _, _, Some(at))) if status == "Unknown" => Ok(at),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let deleted = |p: &Pod| p.metadata.deletion_timestamp.is_some();
    for name in ["at-once", "intolerant"] {
        eventually(&format!("{name} evicted"), || async {
            let p = pods.get(name).await.map_err(|e| e.to_string())?;
            match (deleted(&p), disruption_time(&p, "DeletionByTaintManager")) {
                (true, Some(_)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    for name in &originals {
        let evicted_at = eventually(&format!("{name} evicted"), || async {
            let p = pods.get(name).await.map_err(|e| e.to_string())?;
            match (deleted(&p), disruption_time(&p, "DeletionByTaintManager")) {
                (true, Some(at)) => Ok(at),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        let waited = evicted_at.duration_since(lost_at);
        assert!(
            waited.as_secs() >= 2,
            "{name} was evicted {waited:?} after a went Unknown; it tolerates 2 s"
        );
    }
    let forever = pods.get("forever").await.expect("forever");
    assert!(
        !deleted(&forever),
        "a pod that tolerates the taint without tolerationSeconds stays"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let list = events.list(&ListParams::default()).await.expect("events");
    let evicted: BTreeSet<String> = list
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("TaintManagerEviction"))
        .filter_map(|e| e.involved_object.name.clone())
        .collect();
    let mut want: BTreeSet<String> = originals.clone();
    want.extend(["at-once".to_string(), "intolerant".to_string()]);
    assert_eq!(evicted, want, "one TaintManagerEviction event per evicted pod");

    // The ReplicaSet replaces its pods at once; the scheduler puts them on b.
    tokio::spawn(capstan_agents::scheduler::run(client.clone()));
    eventually("2 replacements bound to b", || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .map_err(|e| e.to_string())?;
        let placed: Vec<(String, Option<String>)> = list
            .items
            .iter()
            .filter(|p| !deleted(p) && !originals.contains(&p.name_any()))
            .map(|p| (p.name_any(), p.spec.as_ref().and_then(|s| s.node_name.clone())))
            .collect();
        if placed.len() == 2 && placed.iter().all(|(_, n)| n.as_deref() == Some("b")) {
            Ok(())
        } else {
            Err(format!("{placed:?}"))
        }
    })
    .await;

    // Nobody will finish the graceful deletes on a: deleting the Node removes its pods.
    nodes.delete("a", &DeleteParams::default()).await.expect("delete a");
    eventually("every pod of a gone", || async {
        let list = pods.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        let left: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("a"))
            .map(|p| p.name_any())
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_node_deletes_its_pods() {
    let cluster = start().await;
    let client = cluster.client.clone();
    tokio::spawn(nodelifecycle::run(client.clone(), config()));
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    create_node(&nodes, "doomed").await;
    create_node(&nodes, "kept").await;
    let _doomed = agent(&client, "doomed", "True");
    let _kept = agent(&client, "kept", "True");
    for (name, node) in [
        ("p1", "doomed"),
        ("p2", "doomed"),
        ("p3", "kept"),
        ("ghost", "never-existed"),
    ] {
        pods.create(&PostParams::default(), &pod(name, Some(node), json!([])))
            .await
            .expect("create a bound pod");
    }
    nodes
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete the node");
    eventually("the pods of doomed and never-existed gone", || async {
        let mut left = Vec::new();
        for name in ["p1", "p2", "ghost"] {
            if pods.get_opt(name).await.map_err(|e| e.to_string())?.is_some() {
                left.push(name);
            }
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
    let p3 = pods.get("p3").await.expect("the pod of a node that exists stays");
    assert!(p3.metadata.deletion_timestamp.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_pods_get_the_default_toleration_seconds() {
    let cluster = start().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NS);
    let create = |name: &'static str, tolerations: serde_json::Value| {
        let pods = pods.clone();
        async move {
            let created = pods
                .create(&PostParams::default(), &pod(name, None, tolerations))
                .await
                .expect("create");
            tolerations_of(&created)
        }
    };
    assert_eq!(
        create("plain", json!([])).await,
        json!([
            default_toleration(TAINT_NOT_READY),
            default_toleration(TAINT_UNREACHABLE)
        ])
    );
    let all = json!({"operator": "Exists"});
    assert_eq!(
        create("all", json!([all])).await,
        json!([all]),
        "tolerates everything already"
    );
    let own = json!({"key": TAINT_NOT_READY, "operator": "Exists", "tolerationSeconds": 10, "effect": "NoExecute"});
    assert_eq!(
        create("own", json!([own])).await,
        json!([own, default_toleration(TAINT_UNREACHABLE)])
    );
    let no_schedule = json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"});
    assert_eq!(
        create("other-effect", json!([no_schedule])).await,
        json!([
            no_schedule,
            default_toleration(TAINT_NOT_READY),
            default_toleration(TAINT_UNREACHABLE)
        ]),
        "only NoExecute (or any effect) counts"
    );
    // An update leaves the list as it is.
    let patched = pods
        .patch(
            "own",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect("patch");
    assert_eq!(
        tolerations_of(&patched),
        json!([own, default_toleration(TAINT_UNREACHABLE)])
    );
}
