//! The Deployment controller with the ReplicaSet controller, against Capstan's Kubernetes
//! API (in this process, over real HTTP). A stand-in for the node agents marks every pod
//! running and ready as soon as it appears. A rolling update of 4 replicas (maxSurge 1,
//! maxUnavailable 1) never has fewer than 3 ready pods nor more than 5 pods, watched from
//! the pods themselves; a rollback brings the first ReplicaSet back as the newest
//! revision; Recreate empties the old ReplicaSet before the new one grows. Scaling records
//! upstream's `ScalingReplicaSet` events, and a ReplicaSet the API refuses a
//! `ReplicaSetCreateError` warning.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, start};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const NS: &str = "default";

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Marks every pod of the namespace running and ready, like a node agent would.
async fn kubelet_stand_in(client: Client) {
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let status = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    loop {
        if let Ok(list) = pods.list(&ListParams::default()).await {
            for p in list
                .items
                .iter()
                .filter(|p| !is_ready(p) && p.metadata.deletion_timestamp.is_none())
            {
                let _ = pods
                    .patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(&status))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (pods, ready pods) of the deployment's label.
async fn counts(pods: &Api<Pod>, app: &str) -> Result<(usize, usize), String> {
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map_err(|e| e.to_string())?;
    let live: Vec<&Pod> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    Ok((live.len(), live.iter().filter(|p| is_ready(p)).count()))
}

async fn rolled_out(deployments: &Api<Deployment>, name: &str, replicas: i32) -> Deployment {
    eventually(&format!("{name} rolled out"), || async {
        let d = deployments.get(name).await.map_err(|e| e.to_string())?;
        let s = d.status.clone().unwrap_or_default();
        let progressing = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Progressing")
            .and_then(|c| c.reason.clone());
        let done = s.observed_generation == d.metadata.generation
            && s.updated_replicas == Some(replicas)
            && s.replicas == Some(replicas)
            && s.available_replicas == Some(replicas)
            && progressing.as_deref() == Some("NewReplicaSetAvailable");
        if done {
            Ok(d)
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await
}

async fn replica_sets(sets: &Api<ReplicaSet>, uid: &str) -> Vec<ReplicaSet> {
    let mut v: Vec<ReplicaSet> = sets
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|rs| rs.owner_references().iter().any(|r| r.uid == uid))
        .collect();
    v.sort_by_key(|rs| rs.name_any());
    v
}

fn revision(rs: &ReplicaSet) -> String {
    rs.annotations()
        .get("deployment.kubernetes.io/revision")
        .cloned()
        .unwrap_or_default()
}

fn image_patch(image: &str) -> serde_json::Value {
    json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_rollback_and_recreate() {
    let cluster = start().await;
    let client = cluster.client.clone();
    // The two controllers' reconciles measured, as the controller-manager has them.
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = capstan_agents::metrics::ControllerMetrics::new(&mut registry);
    tokio::spawn(capstan_agents::runtime::with_metrics(
        Some(metrics.clone()),
        capstan_agents::replicaset::run(client.clone()),
    ));
    tokio::spawn(capstan_agents::runtime::with_metrics(
        Some(metrics),
        capstan_agents::deployment::run(client.clone()),
    ));
    tokio::spawn(kubelet_stand_in(client.clone()));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}
        }
    }))
    .expect("deployment");
    let d = eventually("create the deployment", || async {
        deployments
            .create(&PostParams::default(), &d)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let uid = d.uid().expect("uid");
    rolled_out(&deployments, "web", 4).await;
    let text = capstan_agents::metrics::encode(&registry);
    for controller in ["replicaset", "deployment"] {
        let reconciles =
            format!(r#"capstan_controller_reconciles_total{{controller="{controller}",result="success"}}"#);
        let timed = format!(r#"capstan_controller_reconcile_duration_seconds_count{{controller="{controller}"}}"#);
        assert!(
            common::metric(&text, &reconciles).unwrap_or_default() >= 1.0,
            "{reconciles} in:\n{text}"
        );
        assert!(
            common::metric(&text, &timed).unwrap_or_default() >= 1.0,
            "{timed} in:\n{text}"
        );
        let adds = format!(r#"workqueue_adds_total{{name="{controller}"}}"#);
        assert!(
            common::metric(&text, &adds).unwrap_or_default() >= 1.0,
            "{adds} in:\n{text}"
        );
        // Once the rollout settles, nothing waits in the queue.
        let depth = format!(r#"workqueue_depth{{name="{controller}"}}"#);
        eventually(&format!("{depth} is 0"), || async {
            let text = capstan_agents::metrics::encode(&registry);
            if common::metric(&text, &depth) == Some(0.0) {
                Ok(())
            } else {
                Err(format!("in:\n{text}"))
            }
        })
        .await;
    }
    let first = replica_sets(&sets, &uid).await;
    assert_eq!(first.len(), 1);
    assert_eq!(revision(&first[0]), "1");
    let first_name = first[0].name_any();

    // Roll to a new image while watching the pods.
    let watching = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(Mutex::new((usize::MAX, 0usize)));
    let sampler = {
        let (pods, watching, seen) = (pods.clone(), watching.clone(), seen.clone());
        tokio::spawn(async move {
            while watching.load(Ordering::Relaxed) {
                if let Ok((total, ready)) = counts(&pods, "web").await {
                    let mut s = seen.lock().expect("seen");
                    s.0 = s.0.min(ready);
                    s.1 = s.1.max(total);
                }
            }
        })
    };
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&image_patch("nginx:1.26")),
        )
        .await
        .expect("new image");
    rolled_out(&deployments, "web", 4).await;
    watching.store(false, Ordering::Relaxed);
    sampler.await.expect("sampler");
    let (min_ready, max_total) = *seen.lock().expect("seen");
    assert!(
        min_ready >= 3,
        "ready pods fell to {min_ready} (replicas 4, maxUnavailable 1)"
    );
    assert!(max_total <= 5, "{max_total} pods at once (replicas 4, maxSurge 1)");
    assert!(max_total >= 4, "the sampler saw the pods");
    eprintln!("rolling update: at least {min_ready} ready, at most {max_total} pods");
    let two = replica_sets(&sets, &uid).await;
    assert_eq!(two.len(), 2);
    for rs in &two {
        let spec = rs.spec.clone().unwrap_or_default();
        if rs.name_any() == first_name {
            assert_eq!(spec.replicas, Some(0), "the old one scaled to zero");
        } else {
            assert_eq!(spec.replicas, Some(4));
            assert_eq!(revision(rs), "2");
        }
    }

    // Roll back: the first template again, as `kubectl rollout undo` sends it.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&image_patch("nginx:1.25")),
        )
        .await
        .expect("rollback");
    rolled_out(&deployments, "web", 4).await;
    let back = replica_sets(&sets, &uid).await;
    assert_eq!(back.len(), 2, "the first replicaset is reused");
    let reused = back.iter().find(|rs| rs.name_any() == first_name).expect("first");
    assert_eq!(revision(reused), "3");
    assert_eq!(reused.spec.clone().unwrap_or_default().replicas, Some(4));

    // Recreate: the old pods are gone before any new one exists.
    let mixed = Arc::new(AtomicBool::new(false));
    watching.store(true, Ordering::Relaxed);
    let sampler = {
        let (pods, watching, mixed) = (pods.clone(), watching.clone(), mixed.clone());
        tokio::spawn(async move {
            while watching.load(Ordering::Relaxed) {
                if let Ok(list) = pods.list(&ListParams::default().labels("app=web")).await {
                    let images: std::collections::BTreeSet<Option<String>> = list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .map(|p| p.spec.as_ref().and_then(|s| s.containers[0].image.clone()))
                        .collect();
                    if images.len() > 1 {
                        mixed.store(true, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let patch = json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": null},
        "template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("recreate");
    rolled_out(&deployments, "web", 4).await;
    watching.store(false, Ordering::Relaxed);
    sampler.await.expect("sampler");
    assert!(
        !mixed.load(Ordering::Relaxed),
        "old and new pods at once under Recreate"
    );
    let sets_now = replica_sets(&sets, &uid).await;
    let newest = sets_now
        .iter()
        .max_by_key(|rs| revision(rs).parse::<i64>().unwrap_or(0))
        .expect("a set");
    assert_eq!(revision(newest), "4");
    let pods_now = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods")
        .items;
    assert_eq!(pods_now.len(), 4);
    assert!(pods_now
        .iter()
        .all(|p| p.spec.as_ref().map(|s| s.containers[0].image.clone()) == Some(Some("nginx:1.27".into()))));
}

/// The messages of the `reason` events about the Deployment `uid`, oldest first, after
/// checking that they are upstream's: the Deployment as involved object, `type_`, from
/// `deployment-controller`.
async fn deployment_events(events: &Api<Event>, uid: &str, reason: &str, type_: &str) -> Result<Vec<String>, String> {
    let mut found: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter(|e| e.involved_object.uid.as_deref() == Some(uid) && e.reason.as_deref() == Some(reason))
        .collect();
    found.sort_by_key(|e| e.metadata.resource_version.as_ref().and_then(|v| v.parse::<u64>().ok()));
    for e in &found {
        let r = &e.involved_object;
        assert_eq!(
            (r.api_version.as_deref(), r.kind.as_deref(), r.namespace.as_deref()),
            (Some("apps/v1"), Some("Deployment"), Some(NS)),
            "{e:?}"
        );
        assert_eq!(e.type_.as_deref(), Some(type_), "{e:?}");
        let source = e.source.as_ref().and_then(|s| s.component.as_deref());
        assert_eq!(source, Some("deployment-controller"), "{e:?}");
    }
    Ok(found.into_iter().map(|e| e.message.unwrap_or_default()).collect())
}

/// Waits until the `ScalingReplicaSet` events about `uid` are exactly `want`, in order.
async fn wait_scaling(events: &Api<Event>, uid: &str, want: &[String]) {
    eventually(&format!("ScalingReplicaSet events {want:?}"), || async {
        let seen = deployment_events(events, uid, "ScalingReplicaSet", "Normal").await?;
        if seen == want {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
}

fn replicas_patch(replicas: i32) -> Patch<serde_json::Value> {
    Patch::Merge(json!({"spec": {"replicas": replicas}}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_is_recorded_as_events_and_a_refused_replicaset_as_a_warning() {
    let cluster = start().await;
    let client = cluster.client.clone();
    // The Deployment controller alone: its events do not depend on pods.
    tokio::spawn(capstan_agents::deployment::run(client.clone()));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let deployment = |name: &str, replicas: i32| -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
            }
        }))
        .expect("deployment")
    };

    // Created with 2: the new ReplicaSet is created with 2, "from 0".
    let d = eventually("create the deployment", || async {
        deployments
            .create(&PostParams::default(), &deployment("web", 2))
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let uid = d.uid().expect("uid");
    let rs = eventually("the deployment's replicaset", || async {
        let found = replica_sets(&sets, &uid).await;
        match found.as_slice() {
            [rs] => Ok(rs.name_any()),
            other => Err(format!("{} replicasets", other.len())),
        }
    })
    .await;
    let mut want = vec![format!("Scaled up replica set {rs} from 0 to 2")];
    wait_scaling(&events, &uid, &want).await;

    // Scaled up, then down: one event each, with both sizes.
    deployments
        .patch("web", &PatchParams::default(), &replicas_patch(5))
        .await
        .expect("scale up");
    want.push(format!("Scaled up replica set {rs} from 2 to 5"));
    wait_scaling(&events, &uid, &want).await;
    deployments
        .patch("web", &PatchParams::default(), &replicas_patch(1))
        .await
        .expect("scale down");
    want.push(format!("Scaled down replica set {rs} from 5 to 1"));
    wait_scaling(&events, &uid, &want).await;
    let spec_replicas = sets.get(&rs).await.expect("replicaset").spec.and_then(|s| s.replicas);
    assert_eq!(spec_replicas, Some(1), "the events follow the writes");

    // A Deployment name the API accepts whose ReplicaSet name (name-hash) is too long.
    let long = "a".repeat(250);
    let d = deployments
        .create(&PostParams::default(), &deployment(&long, 1))
        .await
        .expect("create the long-named deployment");
    let uid = d.uid().expect("uid");
    let hash = capstan_agents::deployment::template_hash(&d.spec.expect("spec").template);
    let rs = format!("{long}-{hash}");
    let messages = eventually("a ReplicaSetCreateError event", || async {
        let seen = deployment_events(&events, &uid, "ReplicaSetCreateError", "Warning").await?;
        if seen.is_empty() {
            Err("none yet".into())
        } else {
            Ok(seen)
        }
    })
    .await;
    let prefix =
        format!("Failed to create new replica set \"{rs}\": ReplicaSet.apps \"{rs}\" is invalid: metadata.name: ");
    assert!(messages[0].starts_with(&prefix), "{}", messages[0]);
    assert!(
        messages[0].ends_with("must be no more than 253 characters"),
        "{}",
        messages[0]
    );
    assert!(
        replica_sets(&sets, &uid).await.is_empty(),
        "no replicaset for the long-named deployment"
    );
}
