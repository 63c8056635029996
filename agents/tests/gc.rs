//! The garbage collector against Capstan's Kubernetes API (in this process, over real
//! HTTP), with each propagation policy of a delete:
//!
//! - Background (with the Deployment and ReplicaSet controllers): deleting a Deployment
//!   takes its ReplicaSet and pods with it; a pod whose only owner never existed is
//!   deleted; a pod with one owner left only loses the reference to the missing one.
//! - Foreground: the owner stays, with `deletionTimestamp` and the `foregroundDeletion`
//!   finalizer, until no dependent whose reference blocks is left; dependents that do not
//!   block and dependents with another live owner do not hold it. Through a Deployment,
//!   the cascade reaches the pods before the Deployment goes.
//! - Orphan: the owner goes, its dependents stay without their reference to it.

mod common;

use common::{eventually, start, Cluster};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
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

/// Starts the ReplicaSet, Deployment and garbage collectors, creates Deployment `name`
/// (pods labelled `app=<name>`) and waits for its ReplicaSet and `replicas` pods.
async fn deployment_with_pods(
    cluster: &Cluster,
    name: &str,
    replicas: usize,
) -> (Api<Deployment>, Api<ReplicaSet>, Api<Pod>) {
    let client = cluster.client.clone();
    tokio::spawn(capstan_agents::replicaset::run(client.clone()));
    tokio::spawn(capstan_agents::deployment::run(client.clone()));
    tokio::spawn(capstan_agents::gc::run(client.clone()));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
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
    let selector = format!("app={name}");
    eventually(&format!("a replicaset and {replicas} pods"), || async {
        match (count(&sets, &selector).await?, count(&pods, &selector).await?) {
            (1, n) if n == replicas => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    (deployments, sets, pods)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_go_with_their_owners() {
    let cluster = start().await;
    let (deployments, sets, pods) = deployment_with_pods(&cluster, "web", 3).await;

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

fn configmap(name: &str, owners: serde_json::Value, finalizers: &[&str]) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": owners, "finalizers": finalizers}}))
        .expect("configmap")
}

fn reference(owner: &ConfigMap, block: bool) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "name": owner.name_any(), "uid": owner.uid().expect("uid"),
        "blockOwnerDeletion": block})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let cluster = start().await;
    let client = cluster.client.clone();
    tokio::spawn(capstan_agents::gc::run(client.clone()));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let owner = eventually("create the owner", || async {
        cms.create(&PostParams::default(), &configmap("owner", json!([]), &[]))
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let other = cms
        .create(&PostParams::default(), &configmap("other-owner", json!([]), &[]))
        .await
        .expect("create another owner");
    // Blocks, and is held by a finalizer of its own once deleted.
    cms.create(
        &PostParams::default(),
        &configmap("held", json!([reference(&owner, true)]), &["example.com/hold"]),
    )
    .await
    .expect("create held");
    // Blocks, goes at once.
    pods.create(
        &PostParams::default(),
        &pod_owned_by("child", json!([reference(&owner, true)])),
    )
    .await
    .expect("create child");
    // Does not block.
    cms.create(
        &PostParams::default(),
        &configmap("free", json!([reference(&owner, false)]), &[]),
    )
    .await
    .expect("create free");
    // Has another, live owner: only loses its reference.
    cms.create(
        &PostParams::default(),
        &configmap(
            "shared",
            json!([reference(&owner, true), reference(&other, false)]),
            &[],
        ),
    )
    .await
    .expect("create shared");

    let answer = cms
        .delete("owner", &DeleteParams::foreground())
        .await
        .expect("delete the owner")
        .left()
        .expect("the owner back while its deletion is pending");
    assert!(answer.metadata.deletion_timestamp.is_some());
    assert!(
        answer.finalizers().iter().any(|f| f == "foregroundDeletion"),
        "{answer:?}"
    );

    eventually(
        "the dependents deleted, the held one pending, the shared one kept",
        || async {
            let child = pods.get_opt("child").await.map_err(|e| e.to_string())?;
            let free = cms.get_opt("free").await.map_err(|e| e.to_string())?;
            let held = cms.get("held").await.map_err(|e| e.to_string())?;
            let shared = cms.get("shared").await.map_err(|e| e.to_string())?;
            let shared_owners: Vec<String> = shared.owner_references().iter().map(|r| r.name.clone()).collect();
            if child.is_none()
                && free.is_none()
                && held.metadata.deletion_timestamp.is_some()
                && shared_owners == ["other-owner"]
            {
                Ok(())
            } else {
                Err(format!(
                    "child {}, free {}, held deleting {}, shared's owners {shared_owners:?}",
                    child.is_some(),
                    free.is_some(),
                    held.metadata.deletion_timestamp.is_some()
                ))
            }
        },
    )
    .await;
    // The blocking dependent is still there: so is the owner, waiting.
    let waiting = cms
        .get("owner")
        .await
        .expect("the owner waits for its blocking dependent");
    assert!(waiting.finalizers().iter().any(|f| f == "foregroundDeletion"));
    assert!(waiting.metadata.deletion_timestamp.is_some());

    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("let the held dependent go");
    eventually("the owner gone once nothing blocks it", || async {
        let owner = cms.get_opt("owner").await.map_err(|e| e.to_string())?;
        let held = cms.get_opt("held").await.map_err(|e| e.to_string())?;
        match (owner, held) {
            (None, None) => Ok(()),
            (o, h) => Err(format!(
                "owner {:?}, held {}",
                o.map(|o| o.finalizers().to_vec()),
                h.is_some()
            )),
        }
    })
    .await;
    assert!(
        cms.get_opt("shared").await.expect("get").is_some(),
        "the shared dependent stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_cascades_through_a_deployment() {
    let cluster = start().await;
    let (deployments, sets, pods) = deployment_with_pods(&cluster, "fg", 2).await;
    let answer = deployments
        .delete("fg", &DeleteParams::foreground())
        .await
        .expect("delete")
        .left()
        .expect("the deployment back");
    assert!(answer.finalizers().iter().any(|f| f == "foregroundDeletion"));
    // Whenever the Deployment is still there, its ReplicaSet's pods may be too; once it
    // is gone, nothing it owned (through its ReplicaSet) is left.
    eventually("the deployment gone, and everything below it", || async {
        let d = deployments.get_opt("fg").await.map_err(|e| e.to_string())?;
        let left = (count(&sets, "app=fg").await?, count(&pods, "app=fg").await?);
        match d {
            Some(_) => Err(format!("deployment still there; {left:?}")),
            None if left == (0, 0) => Ok(()),
            None => panic!("the deployment went before its dependents: {left:?} left"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_deletion_keeps_dependents_without_the_reference() {
    let cluster = start().await;
    let client = cluster.client.clone();
    tokio::spawn(capstan_agents::replicaset::run(client.clone()));
    tokio::spawn(capstan_agents::gc::run(client.clone()));
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "keep"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "keep"}},
                 "template": {"metadata": {"labels": {"app": "keep"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .expect("replicaset");
    let rs = eventually("create the replicaset", || async {
        sets.create(&PostParams::default(), &rs)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let uid = rs.uid().expect("uid");
    let names = eventually("2 pods owned by the replicaset", || async {
        let list = pods
            .list(&ListParams::default().labels("app=keep"))
            .await
            .map_err(|e| e.to_string())?;
        let owned: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.owner_references().iter().any(|r| r.uid == uid))
            .map(|p| p.name_any())
            .collect();
        if owned.len() == 2 {
            Ok(owned)
        } else {
            Err(format!("{owned:?}"))
        }
    })
    .await;
    let answer = sets
        .delete("keep", &DeleteParams::orphan())
        .await
        .expect("delete")
        .left()
        .expect("the replicaset back while its deletion is pending");
    assert!(answer.finalizers().iter().any(|f| f == "orphan"), "{answer:?}");
    eventually("the replicaset gone", || async {
        match sets.get_opt("keep").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(rs) => Err(format!("finalizers {:?}", rs.finalizers())),
        }
    })
    .await;
    for name in &names {
        let p = pods.get(name).await.expect("the orphaned pod stays");
        assert!(
            p.owner_references().is_empty(),
            "{name} still names an owner: {:?}",
            p.owner_references()
        );
        assert!(p.metadata.deletion_timestamp.is_none(), "{name} is being deleted");
    }
}
