//! The node agent against Capstan's Kubernetes API (in this process, over real HTTP):
//! registration, the node Lease and the status heartbeat, with short intervals.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use capstan_agents::node::registration::{self, Capacity, Heartbeat, NodeIdentity, LEASE_DURATION_S, LEASE_NAMESPACE};
use capstan_agents::nodelifecycle::node_condition;
use common::{eventually, start};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch;

fn identity(name: &str) -> NodeIdentity {
    NodeIdentity {
        name: name.into(),
        address: "127.0.0.1".parse().expect("ip"),
        labels: BTreeMap::from([("topology.kubernetes.io/zone".into(), "z1".into())]),
        taints: vec![Taint {
            key: "dedicated".into(),
            value: Some("tests".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        }],
        capacity: Capacity {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            pods: 110,
        },
        agent_port: 10250,
    }
}

fn fast() -> Heartbeat {
    Heartbeat {
        lease_renew_interval: Duration::from_millis(100),
        status_check_interval: Duration::from_millis(100),
        status_report_interval: Duration::from_secs(300),
    }
}

fn condition(node: &Node, type_: &str) -> Option<(String, String)> {
    let c = node_condition(node, type_)?;
    Some((c.status.clone(), c.reason.clone().unwrap_or_default()))
}

#[tokio::test]
async fn a_new_node_registers_with_its_labels_taints_capacity_and_conditions_and_keeps_its_lease() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let node = registration::register(&client, &identity("n1"), true)
        .await
        .expect("register");
    let nodes: Api<Node> = Api::all(client.clone());
    let read = nodes.get("n1").await.expect("the node");
    let labels = read.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("kubernetes.io/hostname").map(String::as_str), Some("n1"));
    assert_eq!(labels.get("kubernetes.io/os").map(String::as_str), Some("linux"));
    assert!(labels.contains_key("kubernetes.io/arch"));
    assert_eq!(
        labels.get("topology.kubernetes.io/zone").map(String::as_str),
        Some("z1")
    );
    let taints = read.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    assert_eq!(taints.len(), 1, "{taints:?}");
    assert_eq!(taints[0].key, "dedicated");
    let status = read.status.clone().expect("a status");
    let capacity = status.capacity.clone().expect("capacity");
    assert_eq!(capacity["cpu"].0, "4");
    // The agent writes 8388608Ki; the API answers quantities in canonical form.
    assert_eq!(capacity["memory"].0, "8Gi");
    assert_eq!(capacity["pods"].0, "110");
    assert_eq!(status.allocatable, Some(capacity));
    let agent_port = status
        .daemon_endpoints
        .as_ref()
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .map(|e| e.port);
    assert_eq!(
        agent_port,
        Some(10250),
        "the agent's port is where the API server finds it"
    );
    assert_eq!(condition(&read, "Ready"), Some(("True".into(), "KubeletReady".into())));
    for (type_, reason) in [
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ] {
        assert_eq!(condition(&read, type_), Some(("False".into(), reason.into())));
    }
    let addresses: Vec<(String, String)> = status
        .addresses
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addresses,
        [
            ("InternalIP".into(), "127.0.0.1".into()),
            ("Hostname".into(), "n1".into())
        ]
    );
    let info = status.node_info.expect("nodeInfo");
    assert_eq!(info.operating_system, "linux");
    assert!(info.container_runtime_version.starts_with("capstan-process://"));

    // The Lease: created, owned by the Node, and renewed.
    let heartbeat = tokio::spawn(registration::keep_heartbeating(
        client.clone(),
        identity("n1"),
        node.clone(),
        fast(),
        watch::channel(true).1,
    ));
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let first = eventually("the node's Lease", || async {
        leases
            .get_opt("n1")
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no Lease yet".to_string())
    })
    .await;
    let spec = first.spec.clone().expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
    assert_eq!(spec.lease_duration_seconds, Some(LEASE_DURATION_S));
    let owner = &first.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", "n1"));
    assert_eq!(Some(owner.uid.clone()), node.metadata.uid);
    let renewed = spec.renew_time.expect("renewTime");
    eventually("the Lease renewed", || async {
        let now = leases.get("n1").await.map_err(|e| e.to_string())?;
        let t = now.spec.and_then(|s| s.renew_time).ok_or("no renewTime")?;
        if t.0 > renewed.0 {
            Ok(())
        } else {
            Err(format!("renewTime still {t:?}"))
        }
    })
    .await;
    heartbeat.abort();
}

#[tokio::test]
async fn an_existing_node_keeps_what_others_set_and_gets_what_the_agent_sets() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let existing: Node = serde_json::from_value(json!({
        "metadata": {"name": "n2", "labels": {"team": "blue", "topology.kubernetes.io/zone": "old"}},
        "spec": {"podCIDR": "127.128.5.0/24", "unschedulable": true,
                 "taints": [{"key": "other", "effect": "NoExecute"}]},
    }))
    .expect("node");
    nodes.create(&PostParams::default(), &existing).await.expect("create");
    // No CIDR of its own, but the Node has one: ready.
    registration::register(&client, &identity("n2"), false)
        .await
        .expect("register over an existing node");
    let read = nodes.get("n2").await.expect("the node");
    let labels = read.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("blue"));
    assert_eq!(
        labels.get("topology.kubernetes.io/zone").map(String::as_str),
        Some("z1")
    );
    assert_eq!(labels.get("kubernetes.io/hostname").map(String::as_str), Some("n2"));
    let spec = read.spec.clone().expect("spec");
    assert_eq!(spec.pod_cidr.as_deref(), Some("127.128.5.0/24"));
    assert_eq!(spec.unschedulable, Some(true));
    let mut keys: Vec<String> = spec.taints.unwrap_or_default().into_iter().map(|t| t.key).collect();
    keys.sort();
    assert_eq!(keys, ["dedicated", "other"]);
    assert_eq!(condition(&read, "Ready").map(|c| c.0).as_deref(), Some("True"));
}

#[tokio::test]
async fn a_node_marked_unknown_is_ready_again_at_the_next_status_check() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let node = registration::register(&client, &identity("n3"), true)
        .await
        .expect("register");
    let heartbeat = tokio::spawn(registration::keep_heartbeating(
        client.clone(),
        identity("n3"),
        node,
        fast(),
        watch::channel(true).1,
    ));
    let nodes: Api<Node> = Api::all(client.clone());
    // As the node lifecycle controller writes it for a node it stopped hearing from.
    let unknown = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown",
        "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."}]}});
    nodes
        .patch_status("n3", &PatchParams::default(), &Patch::Strategic(&unknown))
        .await
        .expect("mark Unknown");
    eventually("Ready=True posted again", || async {
        let read = nodes.get("n3").await.map_err(|e| e.to_string())?;
        match condition(&read, "Ready") {
            Some((status, reason)) if status == "True" && reason == "KubeletReady" => Ok(()),
            other => Err(format!("Ready is {other:?}")),
        }
    })
    .await;
    heartbeat.abort();
}

#[tokio::test]
async fn a_node_without_a_pod_cidr_is_not_ready_until_it_has_one_and_says_so_at_once() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let node = registration::register(&client, &identity("n4"), false)
        .await
        .expect("register");
    let nodes: Api<Node> = Api::all(client.clone());
    let read = nodes.get("n4").await.expect("the node");
    let ready = node_condition(&read, "Ready").expect("Ready").clone();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref(), ready.message.as_deref()),
        ("False", Some("KubeletNotReady"), Some(registration::NETWORK_NOT_READY))
    );
    // Status checks so far apart that only the change of `network` can post Ready=True
    // within the wait.
    let slow = Heartbeat {
        status_check_interval: Duration::from_secs(3600),
        ..fast()
    };
    let (network, network_ready) = watch::channel(false);
    let heartbeat = tokio::spawn(registration::keep_heartbeating(
        client.clone(),
        identity("n4"),
        node,
        slow,
        network_ready,
    ));
    network.send_replace(true);
    eventually("Ready=True posted once the CIDR is there", || async {
        let read = nodes.get("n4").await.map_err(|e| e.to_string())?;
        match condition(&read, "Ready") {
            Some((status, reason)) if status == "True" && reason == "KubeletReady" => Ok(()),
            other => Err(format!("Ready is {other:?}")),
        }
    })
    .await;
    heartbeat.abort();
}
