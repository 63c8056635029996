//! The ReplicaSet controller against Capstan's Kubernetes API (in this process, over real
//! HTTP): it creates the missing pods, deletes the surplus, adopts a matching orphan,
//! releases a pod relabelled out of its selector and replaces it, and reports ready and
//! available replicas in its status.

mod common;

use std::collections::BTreeMap;

use common::{eventually, start};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

const NS: &str = "default";

/// Active pods whose controller is the ReplicaSet with `uid`, by name.
async fn owned(pods: &Api<Pod>, uid: &str) -> Result<BTreeMap<String, Pod>, String> {
    let list = pods.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .map(|p| (p.name_any(), p))
        .collect())
}

async fn wait_owned(pods: &Api<Pod>, uid: &str, n: usize) -> BTreeMap<String, Pod> {
    eventually(&format!("{n} owned pods"), || async {
        let owned = owned(pods, uid).await?;
        if owned.len() == n {
            Ok(owned)
        } else {
            Err(format!("{:?}", owned.keys().collect::<Vec<_>>()))
        }
    })
    .await
}

async fn scale(sets: &Api<ReplicaSet>, replicas: i32) {
    let patch = json!({"spec": {"replicas": replicas}});
    sets.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("scale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicaset_controller_keeps_the_count_claims_pods_and_reports_status() {
    let cluster = start().await;
    tokio::spawn(capstan_agents::replicaset::run(cluster.client.clone()));
    let sets: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NS);

    let set: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "front"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}
            }
        }
    }))
    .expect("replicaset");
    let set = eventually("create the replicaset", || async {
        sets.create(&PostParams::default(), &set)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let uid = set.uid().expect("uid");

    // Created from the template, owned, counted in the status.
    let first = wait_owned(&pods, &uid, 3).await;
    for pod in first.values() {
        assert!(pod.name_any().starts_with("web-"), "{}", pod.name_any());
        assert_eq!(pod.labels().get("tier").map(String::as_str), Some("front"));
        let owner = &pod.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("ReplicaSet", "web"));
        assert_eq!(owner.block_owner_deletion, Some(true));
    }
    eventually("status: 3 replicas, generation observed", || async {
        let s = sets.get("web").await.map_err(|e| e.to_string())?;
        let status = s.status.clone().unwrap_or_default();
        match (
            status.replicas,
            status.fully_labeled_replicas,
            status.observed_generation,
        ) {
            (3, Some(3), g) if g == s.metadata.generation => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Scaled down: two deleted.
    scale(&sets, 1).await;
    wait_owned(&pods, &uid, 1).await;

    // A matching orphan is adopted, and then one of the two is surplus.
    let stray: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stray", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &stray)
        .await
        .expect("create the orphan");
    eventually("the orphan adopted or removed, one pod left", || async {
        let owned = owned(&pods, &uid).await?;
        let stray = pods.get_opt("stray").await.map_err(|e| e.to_string())?;
        let stray_is_orphan = stray
            .as_ref()
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none() && p.owner_references().is_empty());
        if owned.len() == 1 && !stray_is_orphan {
            Ok(())
        } else {
            Err(format!("owned {:?}, stray {stray:?}", owned.keys().collect::<Vec<_>>()))
        }
    })
    .await;

    // Relabelled out of the selector: released, and replaced.
    let (kept, _) = owned(&pods, &uid)
        .await
        .expect("list")
        .into_iter()
        .next()
        .expect("one pod");
    let patch = json!({"metadata": {"labels": {"app": "other"}}});
    pods.patch(&kept, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("relabel");
    let replacement = eventually("the relabelled pod released and replaced", || async {
        let released = pods.get(&kept).await.map_err(|e| e.to_string())?;
        let owned = owned(&pods, &uid).await?;
        if released.owner_references().is_empty() && owned.len() == 1 && !owned.contains_key(&kept) {
            Ok(owned.into_keys().next().expect("one pod"))
        } else {
            Err(format!(
                "released {:?}, owned {:?}",
                released.owner_references(),
                owned.keys().collect::<Vec<_>>()
            ))
        }
    })
    .await;

    // Ready (minReadySeconds 0): ready and available.
    let status = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    pods.patch_status(&replacement, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status");
    eventually("status: one ready and available", || async {
        let s = sets
            .get("web")
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        match (s.replicas, s.ready_replicas, s.available_replicas) {
            (1, Some(1), Some(1)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}
