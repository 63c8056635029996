//! The ReplicaSet controller against Capstan's Kubernetes API (in this process, over real
//! HTTP): it creates the missing pods, deletes the surplus, adopts a matching orphan,
//! releases a pod relabelled out of its selector and replaces it, and reports ready and
//! available replicas in its status. It records `SuccessfulCreate` and `SuccessfulDelete`
//! events naming the pods, and a `FailedCreate` warning when the API refuses a pod.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{eventually, start, Cluster};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Pod};
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

/// The events of the namespace about the object with `uid` and of `reason`.
async fn events_about(events: &Api<Event>, uid: &str, reason: &str) -> Result<Vec<Event>, String> {
    let list = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| e.involved_object.uid.as_deref() == Some(uid) && e.reason.as_deref() == Some(reason))
        .collect())
}

/// Waits until the `reason` events about the ReplicaSet `uid` carry exactly `messages`
/// (one event each), and checks that they are upstream's: the ReplicaSet as involved
/// object, `type_`, from `replicaset-controller`.
async fn wait_events(events: &Api<Event>, uid: &str, reason: &str, type_: &str, messages: &BTreeSet<String>) {
    let found = eventually(&format!("{reason} events {messages:?}"), || async {
        let found = events_about(events, uid, reason).await?;
        let seen: Vec<String> = found.iter().map(|e| e.message.clone().unwrap_or_default()).collect();
        if seen.len() == messages.len() && seen.iter().cloned().collect::<BTreeSet<_>>() == *messages {
            Ok(found)
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
    for e in &found {
        let r = &e.involved_object;
        assert_eq!(
            (
                r.api_version.as_deref(),
                r.kind.as_deref(),
                r.name.as_deref(),
                r.namespace.as_deref()
            ),
            (Some("apps/v1"), Some("ReplicaSet"), Some("web"), Some(NS)),
            "{e:?}"
        );
        assert_eq!(e.type_.as_deref(), Some(type_), "{e:?}");
        let source = e.source.as_ref().and_then(|s| s.component.as_deref());
        assert_eq!(source, Some("replicaset-controller"), "{e:?}");
        assert_eq!(e.count, Some(1), "{e:?}");
        assert_eq!(e.metadata.namespace.as_deref(), Some(NS), "{e:?}");
    }
}

async fn scale(sets: &Api<ReplicaSet>, replicas: i32) {
    let patch = json!({"spec": {"replicas": replicas}});
    sets.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("scale");
}

/// An API with the ReplicaSet controller running, and handles on what the tests read.
async fn with_controller() -> (Cluster, Api<ReplicaSet>, Api<Pod>, Api<Event>) {
    let cluster = start().await;
    tokio::spawn(capstan_agents::replicaset::run(cluster.client.clone()));
    let sets = Api::namespaced(cluster.client.clone(), NS);
    let pods = Api::namespaced(cluster.client.clone(), NS);
    let events = Api::namespaced(cluster.client.clone(), NS);
    (cluster, sets, pods, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicaset_controller_keeps_the_count_claims_pods_and_reports_status() {
    let (_cluster, sets, pods, events) = with_controller().await;

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
    // One SuccessfulCreate per pod, naming it.
    let created: BTreeSet<String> = first.keys().map(|p| format!("Created pod: {p}")).collect();
    wait_events(&events, &uid, "SuccessfulCreate", "Normal", &created).await;
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

    // Scaled down: two deleted, one SuccessfulDelete each, naming them.
    scale(&sets, 1).await;
    let left = wait_owned(&pods, &uid, 1).await;
    let gone: Vec<&String> = first.keys().filter(|p| !left.contains_key(*p)).collect();
    assert_eq!(gone.len(), 2, "the one left is one of the first three: {left:?}");
    for p in &gone {
        let pod = pods.get_opt(p).await.expect("get");
        assert!(
            pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
            "{p} was deleted"
        );
    }
    let deleted: BTreeSet<String> = gone.iter().map(|p| format!("Deleted pod: {p}")).collect();
    wait_events(&events, &uid, "SuccessfulDelete", "Normal", &deleted).await;
    assert_eq!(
        events_about(&events, &uid, "SuccessfulCreate")
            .await
            .expect("events")
            .len(),
        3,
        "no pod created by the scale-down"
    );

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_the_api_refuses_is_a_failed_create_warning() {
    let (_cluster, sets, pods, events) = with_controller().await;

    // As upstream, a template's finalizers are not validated but a pod's are: the
    // ReplicaSet is accepted, every pod created from it refused.
    let set: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "finalizers": ["cleanup"]},
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

    let warning = eventually("a FailedCreate event", || async {
        let found = events_about(&events, &uid, "FailedCreate").await?;
        found.into_iter().next().ok_or_else(|| "none yet".to_string())
    })
    .await;
    let message = warning.message.clone().unwrap_or_default();
    // The API's own message, after upstream's prefix; the pod's name is generated.
    assert!(message.starts_with("Error creating: Pod \"web-"), "{message}");
    assert!(
        message.ends_with(
            " is invalid: metadata.finalizers[0]: Invalid value: \"cleanup\": \
             name is neither a standard finalizer name nor is it fully qualified"
        ),
        "{message}"
    );
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let source = warning.source.as_ref().and_then(|s| s.component.as_deref());
    assert_eq!(source, Some("replicaset-controller"));
    let r = &warning.involved_object;
    assert_eq!(
        (r.kind.as_deref(), r.name.as_deref(), r.namespace.as_deref()),
        (Some("ReplicaSet"), Some("web"), Some(NS))
    );
    assert!(owned(&pods, &uid).await.expect("list").is_empty(), "no pod was created");
    assert!(
        events_about(&events, &uid, "SuccessfulCreate")
            .await
            .expect("events")
            .is_empty(),
        "no SuccessfulCreate for a refused pod"
    );
}
