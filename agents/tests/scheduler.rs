//! The scheduler against Capstan's Kubernetes API (in this process, over real HTTP):
//! resources, unschedulable and tainted nodes, tolerations and node affinity; a pod that
//! fits nowhere gets upstream's condition and event, then is bound when a node comes; a
//! burst of pods never overcommits a node.

mod common;

use std::collections::BTreeMap;

use capstan_agents::scheduler::pod_requests;
use common::{eventually, start};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

const NS: &str = "default";

async fn create_node(nodes: &Api<Node>, v: serde_json::Value) {
    let node: Node = serde_json::from_value(v).expect("node");
    eventually("create a node", || async {
        nodes
            .create(&PostParams::default(), &node)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
}

fn node(name: &str, cpu: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}, "spec": spec,
           "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}})
}

fn pod(name: &str, cpu: &str, extra: serde_json::Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "i",
        "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("pod")
}

async fn bound_to(pods: &Api<Pod>, name: &str) -> String {
    eventually(&format!("{name} bound"), || async {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        p.spec
            .and_then(|s| s.node_name)
            .ok_or_else(|| format!("{:?}", p.status.and_then(|s| s.conditions)))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_go_where_they_fit_and_wait_where_they_do_not() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    create_node(&nodes, node("n1", "2", json!({}))).await;
    create_node(&nodes, node("n2", "8", json!({"unschedulable": true}))).await;
    create_node(
        &nodes,
        node(
            "n3",
            "8",
            json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
        ),
    )
    .await;
    tokio::spawn(capstan_agents::scheduler::run(client.clone()));

    pods.create(&PostParams::default(), &pod("p1", "1500m", json!({})))
        .await
        .expect("p1");
    assert_eq!(
        bound_to(&pods, "p1").await,
        "n1",
        "the only node without a taint or a cordon"
    );

    // Fits nowhere: the condition and the event, with upstream's message.
    pods.create(&PostParams::default(), &pod("p2", "1", json!({})))
        .await
        .expect("p2");
    let want = "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: gpu}, \
                1 node(s) were unschedulable.";
    eventually("p2 marked unschedulable", || async {
        let p = pods.get("p2").await.map_err(|e| e.to_string())?;
        let c = p
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "PodScheduled");
        match c {
            Some(c)
                if c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
                    && c.message.as_deref() == Some(want) =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    eventually("a FailedScheduling event for p2", || async {
        let all = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items;
        let found = all.iter().any(|e| {
            e.reason.as_deref() == Some("FailedScheduling")
                && e.involved_object.name.as_deref() == Some("p2")
                && e.message.as_deref() == Some(want)
        });
        if found {
            Ok(())
        } else {
            Err(format!("{all:?}"))
        }
    })
    .await;

    // A node comes: p2 goes there.
    create_node(&nodes, node("n4", "4", json!({}))).await;
    assert_eq!(bound_to(&pods, "p2").await, "n4");

    // Tolerating the taint and asking for n3 by name.
    let p3 = pod(
        "p3",
        "1",
        json!({"tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
               "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                   {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n3"]}]}]}}}}),
    );
    pods.create(&PostParams::default(), &p3).await.expect("p3");
    assert_eq!(bound_to(&pods, "p3").await, "n3");

    // A burst of pods asking 1 cpu each: n1 has 0.5 left, n4 3, n3 and n2 are closed to
    // them. Three fit; no node is ever given more than it has.
    for i in 0..6 {
        pods.create(&PostParams::default(), &pod(&format!("burst-{i}"), "1", json!({})))
            .await
            .expect("burst pod");
    }
    let placed = eventually("three of the burst bound, three waiting", || async {
        let list = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items;
        let burst: Vec<&Pod> = list.iter().filter(|p| p.name_any().starts_with("burst-")).collect();
        let bound = burst
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        let waiting = burst
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "PodScheduled" && c.status == "False"))
            })
            .count();
        if bound == 3 && waiting == 3 {
            Ok(list)
        } else {
            Err(format!("{bound} bound, {waiting} waiting"))
        }
    })
    .await;
    let mut cpu: BTreeMap<String, i128> = BTreeMap::new();
    for p in &placed {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *cpu.entry(n).or_insert(0) += pod_requests(p).cpu_milli;
        }
    }
    assert_eq!(cpu.get("n1"), Some(&1500));
    assert_eq!(cpu.get("n4"), Some(&4000), "n4 full, not over: {cpu:?}");
}
