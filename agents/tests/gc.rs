//! The garbage collector with the Deployment and ReplicaSet controllers, against
//! Capstan's Kubernetes API (in this process, over real HTTP): deleting a Deployment
//! takes its ReplicaSet and pods with it; a pod whose only owner never existed is
//! deleted; a pod with one owner left only loses the reference to the missing one.

mod common;

use common::{eventually, start};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

const NS: &str = "default";

async fn count<K>(api: &Api<K>, labels: &str) -> Result<usize, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let list = api
        .list(&ListParams::default().labels(labels))
        .await
        .map_err(|e| e.to_string())?;
    Ok(list.items.len())
}

fn pod_owned_by(name: &str, owners: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "loose"}, "ownerReferences": owners},
        "spec": {"containers": [{"name": "c", "image": "i"}]}
    }))
    .expect("pod")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_go_with_their_owners() {
    let cluster = start().await;
    let client = cluster.client.clone();
    tokio::spawn(capstan_agents::replicaset::run(client.clone()));
    tokio::spawn(capstan_agents::deployment::run(client.clone()));
    tokio::spawn(capstan_agents::gc::run(client.clone()));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .expect("deployment");
    eventually("create the deployment", || async {
        deployments
            .create(&PostParams::default(), &d)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    eventually("a replicaset and 3 pods", || async {
        match (count(&sets, "app=web").await?, count(&pods, "app=web").await?) {
            (1, 3) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // A pod whose owner never existed, and one with a live owner beside a missing one.
    let live_owner = sets
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list")
        .items[0]
        .clone();
    let missing = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "ghost",
        "uid": "00000000-0000-4000-8000-000000000000"});
    let live = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": live_owner.name_any(),
        "uid": live_owner.uid().expect("uid")});
    pods.create(&PostParams::default(), &pod_owned_by("orphaned", json!([missing])))
        .await
        .expect("create orphaned");
    pods.create(&PostParams::default(), &pod_owned_by("half", json!([missing, live])))
        .await
        .expect("create half");
    eventually(
        "the orphaned pod deleted, the other one's dangling reference dropped",
        || async {
            let orphaned = pods.get_opt("orphaned").await.map_err(|e| e.to_string())?;
            let half = pods.get("half").await.map_err(|e| e.to_string())?;
            let refs: Vec<String> = half.owner_references().iter().map(|r| r.name.clone()).collect();
            if orphaned.is_none() && refs == [live_owner.name_any()] {
                Ok(())
            } else {
                Err(format!(
                    "orphaned {:?}, half's owners {refs:?}",
                    orphaned.map(|p| p.name_any())
                ))
            }
        },
    )
    .await;

    // Deleting the Deployment takes the ReplicaSet, then the pods (and "half", whose one
    // remaining owner is that ReplicaSet).
    deployments
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete the deployment");
    eventually("the replicaset and every pod gone", || async {
        let left = (
            count(&sets, "app=web").await?,
            count(&pods, "app=web").await?,
            pods.get_opt("half").await.map_err(|e| e.to_string())?.is_some(),
        );
        if left == (0, 0, false) {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
}
