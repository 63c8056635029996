//! Node IPAM against Capstan's Kubernetes API (in this process, over real HTTP): nodes
//! get distinct blocks of the cluster CIDR, the lowest free first; a node's own podCIDR
//! is kept and its block skipped; a deleted node's block goes to the next node.

mod common;

use std::collections::BTreeSet;

use capstan_agents::nodeipam::{self, Blocks};
use common::{eventually, start};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

async fn create(nodes: &Api<Node>, name: &str, pod_cidr: Option<&str>) {
    let mut node = json!({"metadata": {"name": name}, "spec": {}});
    if let Some(c) = pod_cidr {
        node["spec"] = json!({"podCIDR": c, "podCIDRs": [c]});
    }
    let node: Node = serde_json::from_value(node).expect("node");
    eventually(&format!("create node {name}"), || async {
        nodes
            .create(&PostParams::default(), &node)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
}

async fn cidr_of(nodes: &Api<Node>, name: &str) -> String {
    eventually(&format!("a pod CIDR for {name}"), || async {
        let node = nodes.get(name).await.map_err(|e| e.to_string())?;
        let spec = node.spec.unwrap_or_default();
        match (spec.pod_cidr, spec.pod_cidrs) {
            (Some(c), Some(cs)) if cs == [c.clone()] => Ok(c),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_lowest_free_blocks_and_freed_ones_are_reused() {
    let cluster = start().await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    create(&nodes, "preset", Some("127.128.1.0/24")).await;
    let blocks = Blocks::new(nodeipam::CLUSTER_CIDR_DEFAULT.parse().expect("cidr"), 24).expect("blocks");
    tokio::spawn(nodeipam::run(cluster.client.clone(), blocks));

    for name in ["a", "b", "c"] {
        create(&nodes, name, None).await;
    }
    let mut got = BTreeSet::new();
    for name in ["a", "b", "c"] {
        got.insert(cidr_of(&nodes, name).await);
    }
    let want: BTreeSet<String> = ["127.128.0.0/24", "127.128.2.0/24", "127.128.3.0/24"]
        .map(String::from)
        .into();
    assert_eq!(got, want, "distinct, lowest first, the preset block skipped");
    assert_eq!(cidr_of(&nodes, "preset").await, "127.128.1.0/24", "kept");

    let freed = cidr_of(&nodes, "b").await;
    nodes.delete("b", &DeleteParams::default()).await.expect("delete b");
    eventually("b gone", || async {
        match nodes.get_opt("b").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    })
    .await;
    create(&nodes, "d", None).await;
    assert_eq!(cidr_of(&nodes, "d").await, freed, "a deleted node's block is reused");
}
