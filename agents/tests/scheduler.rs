//! The scheduler against Capstan's Kubernetes API (in this process, over real HTTP):
//! resources, unschedulable and tainted nodes, tolerations and node affinity; a pod that
//! fits nowhere gets upstream's condition and event, then is bound when a node comes; a
//! burst of pods never overcommits a node. Topology spread (two zones, maxSkew 1), required
//! anti-affinity (one per node), required affinity (to a target's zone), the symmetry of
//! existing pods' anti-affinity, and no double booking with many bindings in flight.

mod common;

use std::collections::{BTreeMap, BTreeSet};

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

fn zoned_node(name: &str, zone: &str, cpu: &str) -> serde_json::Value {
    json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, ZONE: zone}},
           "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}})
}

const ZONE: &str = "topology.kubernetes.io/zone";

fn pod(name: &str, cpu: &str, extra: serde_json::Value) -> Pod {
    labelled_pod(name, json!({}), cpu, extra)
}

fn labelled_pod(name: &str, labels: serde_json::Value, cpu: &str, extra: serde_json::Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "i",
        "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": spec})).expect("pod")
}

/// Waits until the pod carries `PodScheduled=False`, reason Unschedulable, with `want`.
async fn unschedulable_with(pods: &Api<Pod>, name: &str, want: &str) {
    eventually(&format!("{name} marked unschedulable"), || async {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_ref()) {
            return Err(format!("bound to {node}"));
        }
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
}

fn zone_of(node: &str) -> &str {
    node.split('-').next().unwrap_or("")
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
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = capstan_agents::metrics::SchedulerMetrics::new(&mut registry);
    tokio::spawn(capstan_agents::scheduler::run_with_metrics(
        client.clone(),
        Some(metrics),
    ));
    let series = |name: &str| common::metric(&capstan_agents::metrics::encode(&registry), name).unwrap_or_default();

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
    unschedulable_with(&pods, "p2", want).await;
    // One attempt each way so far, measured; p2 waits in the queue.
    let profile = r#"profile="default-scheduler""#;
    assert!(
        series(&format!(
            r#"scheduler_schedule_attempts_total{{result="scheduled",{profile}}}"#
        )) >= 1.0
    );
    assert!(
        series(&format!(
            r#"scheduler_schedule_attempts_total{{result="unschedulable",{profile}}}"#
        )) >= 1.0
    );
    assert!(
        series(&format!(
            r#"scheduler_scheduling_attempt_duration_seconds_count{{result="scheduled",{profile}}}"#
        )) >= 1.0
    );
    eventually("p2 counted as pending", || async {
        let waiting = series(r#"scheduler_pending_pods{queue="backoff"}"#)
            + series(r#"scheduler_pending_pods{queue="unschedulable"}"#);
        (waiting >= 1.0).then_some(()).ok_or(format!("{waiting}"))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_alternates_zones_and_blocks_beyond_the_skew() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    create_node(&nodes, zoned_node("a-1", "a", "8")).await;
    create_node(&nodes, zoned_node("b-1", "b", "8")).await;
    tokio::spawn(capstan_agents::scheduler::run(client.clone()));
    let spread = |name: &str| {
        labelled_pod(
            name,
            json!({"app": "web"}),
            "100m",
            json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": ZONE,
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]}),
        )
    };

    // One at a time: each pod must go to the zone with fewer, so they alternate.
    let mut zones = Vec::new();
    for i in 0..4 {
        let name = format!("web-{i}");
        pods.create(&PostParams::default(), &spread(&name))
            .await
            .expect("create");
        zones.push(zone_of(&bound_to(&pods, &name).await).to_string());
    }
    assert_ne!(zones[0], zones[1], "{zones:?}");
    assert_ne!(zones[2], zones[3], "{zones:?}");

    // Pods held to zone a (counting b's pods all the same: nodeAffinityPolicy Ignore): one
    // more fits there (skew 1), the next would make it 2 and waits.
    let held_to_a = |name: &str| {
        labelled_pod(
            name,
            json!({"app": "web"}),
            "100m",
            json!({"nodeSelector": {ZONE: "a"}, "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": ZONE,
                "whenUnsatisfiable": "DoNotSchedule", "nodeAffinityPolicy": "Ignore",
                "labelSelector": {"matchLabels": {"app": "web"}}}]}),
        )
    };
    pods.create(&PostParams::default(), &held_to_a("web-4"))
        .await
        .expect("create");
    assert_eq!(bound_to(&pods, "web-4").await, "a-1");
    pods.create(&PostParams::default(), &held_to_a("web-5"))
        .await
        .expect("create");
    unschedulable_with(
        &pods,
        "web-5",
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) didn't match pod topology spread constraints.",
    )
    .await;

    // A free pod must go to b (a is ahead); that evens the zones, and the waiting pod follows.
    pods.create(&PostParams::default(), &spread("web-6"))
        .await
        .expect("create");
    assert_eq!(bound_to(&pods, "web-6").await, "b-1");
    assert_eq!(bound_to(&pods, "web-5").await, "a-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_anti_affinity_puts_one_per_node_and_waits_for_a_new_node() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for n in ["n1", "n2", "n3"] {
        create_node(&nodes, node(n, "8", json!({}))).await;
    }
    tokio::spawn(capstan_agents::scheduler::run(client.clone()));
    let solo = |name: &str| {
        labelled_pod(
            name,
            json!({"app": "solo"}),
            "100m",
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "solo"}}}]}}}),
        )
    };
    // All four at once: the decisions overlap with bindings in flight.
    let names: Vec<String> = (0..4).map(|i| format!("solo-{i}")).collect();
    futures::future::join_all(names.iter().map(|n| {
        let (pods, p) = (pods.clone(), solo(n));
        async move { pods.create(&PostParams::default(), &p).await.expect("create") }
    }))
    .await;
    let (placed, waiting) = eventually("three bound, one waiting", || async {
        let list = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items;
        let placed: Vec<String> = list
            .iter()
            .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
            .collect();
        let waiting: Vec<String> = list
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
            .map(|p| p.name_any())
            .collect();
        if placed.len() == 3 && waiting.len() == 1 {
            Ok((placed, waiting))
        } else {
            Err(format!("placed {placed:?}, waiting {waiting:?}"))
        }
    })
    .await;
    let distinct: BTreeSet<&String> = placed.iter().collect();
    assert_eq!(distinct.len(), 3, "one per node: {placed:?}");
    unschedulable_with(
        &pods,
        &waiting[0],
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.",
    )
    .await;

    create_node(&nodes, node("n4", "8", json!({}))).await;
    assert_eq!(bound_to(&pods, &waiting[0]).await, "n4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_affinity_follows_its_target_into_its_zone() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for (n, z) in [("a-1", "a"), ("a-2", "a"), ("b-1", "b"), ("b-2", "b")] {
        create_node(&nodes, zoned_node(n, z, "8")).await;
    }
    tokio::spawn(capstan_agents::scheduler::run(client.clone()));
    let follower = |name: &str| {
        pod(
            name,
            "100m",
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": ZONE, "labelSelector": {"matchLabels": {"app": "db"}}}]}}}),
        )
    };
    // No db anywhere yet (and the follower does not match itself): it waits.
    pods.create(&PostParams::default(), &follower("f-0"))
        .await
        .expect("create");
    unschedulable_with(
        &pods,
        "f-0",
        "0/4 nodes are available: 4 node(s) didn't match pod affinity rules.",
    )
    .await;

    // The target lands in zone b; the waiting follower and new ones join it there.
    let db = labelled_pod("db", json!({"app": "db"}), "100m", json!({"nodeSelector": {ZONE: "b"}}));
    pods.create(&PostParams::default(), &db).await.expect("create db");
    assert_eq!(zone_of(&bound_to(&pods, "db").await), "b");
    for i in 1..5 {
        pods.create(&PostParams::default(), &follower(&format!("f-{i}")))
            .await
            .expect("create");
    }
    for i in 0..5 {
        let name = format!("f-{i}");
        assert_eq!(zone_of(&bound_to(&pods, &name).await), "b", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_pods_anti_affinity_repels_newcomers() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    create_node(&nodes, node("n1", "8", json!({}))).await;
    create_node(&nodes, node("n2", "8", json!({}))).await;
    tokio::spawn(capstan_agents::scheduler::run(client.clone()));
    let guard = pod(
        "guard",
        "100m",
        json!({"nodeSelector": {"kubernetes.io/hostname": "n1"},
               "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                   {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "noisy"}}}]}}}),
    );
    pods.create(&PostParams::default(), &guard).await.expect("create guard");
    assert_eq!(bound_to(&pods, "guard").await, "n1");

    // Pods with no affinity of their own, matching the guard's term: never on n1.
    for i in 0..4 {
        let p = labelled_pod(&format!("noisy-{i}"), json!({"app": "noisy"}), "100m", json!({}));
        pods.create(&PostParams::default(), &p).await.expect("create");
    }
    for i in 0..4 {
        assert_eq!(bound_to(&pods, &format!("noisy-{i}")).await, "n2");
    }
    let pinned = labelled_pod(
        "noisy-pinned",
        json!({"app": "noisy"}),
        "100m",
        json!({"nodeSelector": {"kubernetes.io/hostname": "n1"}}),
    );
    pods.create(&PostParams::default(), &pinned).await.expect("create");
    unschedulable_with(
        &pods,
        "noisy-pinned",
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) didn't satisfy existing pods anti-affinity rules.",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bindings_never_double_book() {
    let cluster = start().await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    // Five nodes with room for exactly four 1-cpu pods each: 20 places for 30 pods.
    for i in 0..5 {
        create_node(&nodes, node(&format!("n{i}"), "4", json!({}))).await;
    }
    tokio::spawn(capstan_agents::scheduler::run(client.clone()));
    futures::future::join_all((0..30).map(|i| {
        let (pods, p) = (pods.clone(), pod(&format!("p-{i}"), "1", json!({})));
        async move { pods.create(&PostParams::default(), &p).await.expect("create") }
    }))
    .await;
    let list = eventually("20 bound, 10 unschedulable", || async {
        let list = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items;
        let bound = list
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        let waiting = list
            .iter()
            .filter(|p| {
                p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.type_ == "PodScheduled"
                            && c.status == "False"
                            && c.message.as_deref() == Some("0/5 nodes are available: 5 Insufficient cpu.")
                    })
                })
            })
            .count();
        if bound == 20 && waiting == 10 {
            Ok(list)
        } else {
            Err(format!("{bound} bound, {waiting} unschedulable"))
        }
    })
    .await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in &list {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *per_node.entry(n).or_insert(0) += 1;
        }
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        vec![4; 5],
        "{per_node:?}"
    );
}
