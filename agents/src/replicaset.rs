//! The ReplicaSet controller: keeps `spec.replicas` pods matching each ReplicaSet's
//! selector, and reports them in its status, as upstream's `replicaset-controller`.
//!
//! One reconcile of a ReplicaSet:
//! 1. lists the pods of its namespace that its selector matches, from the API (a
//!    consistent list, so a reconcile never counts from a stale cache and never creates
//!    twice: upstream needs "expectations" for that because it counts from its informer);
//! 2. claims them: pods it controls stay, orphans that match are adopted (a
//!    controller ownerReference is added), and pods it controls whose labels no longer
//!    match are released (the reference is removed);
//! 3. creates missing pods from the template (`generateName: <name>-`, in batches that
//!    double from 1 like upstream's slow start, at most [`BURST_MAX`] per reconcile) or
//!    deletes surplus ones, the least useful first (unscheduled, then pending, not ready,
//!    ready for less time; newest first);
//! 4. writes `status` (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas,
//!    observedGeneration) through `/status` when it changed, and asks to be run again
//!    when a ready pod will become available (`minReadySeconds`).
//!
//! Events (involved object the ReplicaSet, source `replicaset-controller`), as upstream's
//! pod control records them: `Normal SuccessfulCreate` "Created pod: <pod>" for each pod
//! created, `Warning FailedCreate` "Error creating: <API error message>" for each create
//! refused (none when the namespace is being deleted), `Normal SuccessfulDelete` "Deleted
//! pod: <pod>" for each pod deleted and `Warning FailedDelete` "Error deleting: <message>"
//! (none when the pod was already gone). They go through an [`events::Recorder`]: a
//! reconcile queues them and never waits for their writes.
//!
//! Triggers: the ReplicaSet itself; pods it controls (their ownerReference); any pod
//! without a controller in a namespace (an orphan may need adopting). Failures are retried
//! per ReplicaSet with client-go's backoff.
//!
//! Left out: the `ReplicaFailure` condition, and deleting a ReplicaSet's pods when it is
//! deleted (the garbage collector's job).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::error::AgentError;
use crate::events::{self, Recorder};
use crate::runtime::{self, retry_later, Backoff};

/// Pods created or deleted by one reconcile at most (upstream's `burstReplicas`).
pub const BURST_MAX: usize = 500;

/// The `source.component` of this controller's events (upstream's).
pub const COMPONENT: &str = "replicaset-controller";

struct Context {
    client: Client,
    backoff: Backoff,
    recorder: Recorder,
}

/// Runs the controller until its future is dropped.
pub async fn run(client: Client) {
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), COMPONENT),
        client,
        backoff: Backoff::default(),
    });
    let controller = runtime::Queued::new(sets, watcher::Config::default());
    // Orphans: a pod without a controller triggers every ReplicaSet of its namespace
    // (few per namespace), found in the controller's own cache of them.
    let orphan_store = controller.store();
    controller
        .watches(pods, watcher::Config::default(), move |pod: Pod| {
            let namespace = pod.namespace().unwrap_or_default();
            match controller_of(&pod.metadata) {
                Some(owner) if owner.kind == "ReplicaSet" => vec![ObjectRef::new(&owner.name).within(&namespace)],
                Some(_) => Vec::new(),
                None => orphan_store
                    .state()
                    .iter()
                    .filter(|s| s.namespace().as_deref() == Some(namespace.as_str()))
                    .map(|s| ObjectRef::from_obj(s.as_ref()))
                    .collect(),
            }
        })
        .run("replicaset", reconcile, error_policy, context)
        .await;
}

fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// `selector` as a label selector string (`a=b,c in (d,e),!f`); None for an empty one
/// (which would match every pod: upstream refuses such ReplicaSets).
pub fn selector_string(selector: &LabelSelector) -> Option<String> {
    let mut terms: Vec<String> = Vec::new();
    for (k, v) in selector.match_labels.iter().flatten() {
        terms.push(format!("{k}={v}"));
    }
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        terms.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            _ => return None,
        });
    }
    (!terms.is_empty()).then(|| terms.join(","))
}

/// Whether `labels` match `selector` (the same terms as [`selector_string`]).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// When the pod's Ready condition became True, if it is.
fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let ready = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(ready.last_transition_time.as_ref().map(|t| t.0))
}

/// Available: ready for at least `min_ready` at `now`; else, when it will be (if ready).
fn availability(pod: &Pod, min_ready: Duration, now: Timestamp) -> (bool, Option<Duration>) {
    match ready_since(pod) {
        None => (false, None),
        Some(_) if min_ready.is_zero() => (true, None),
        Some(None) => (false, None),
        Some(Some(since)) => {
            let ready_for = now.duration_since(since).unsigned_abs();
            if ready_for >= min_ready {
                (true, None)
            } else {
                (false, Some(min_ready - ready_for))
            }
        }
    }
}

/// Surplus pods to delete first come first: unscheduled, pending, unknown, running; not
/// ready before ready; ready for less time; newer.
fn deletion_rank(
    pod: &Pod,
) -> (
    u8,
    u8,
    u8,
    std::cmp::Reverse<Option<Timestamp>>,
    std::cmp::Reverse<Option<Timestamp>>,
) {
    let scheduled = u8::from(pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some());
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let ready = ready_since(pod);
    (
        scheduled,
        phase,
        u8::from(ready.is_some()),
        std::cmp::Reverse(ready.flatten()),
        std::cmp::Reverse(pod.metadata.creation_timestamp.as_ref().map(|t| t.0)),
    )
}

fn owner_reference(set: &ReplicaSet) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: set.metadata.name.clone()?,
        uid: set.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// A new pod from the ReplicaSet's template.
fn pod_from_template(set: &ReplicaSet, owner: &OwnerReference) -> Pod {
    let template = set.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", owner.name)),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

async fn reconcile(set: Arc<ReplicaSet>, context: Arc<Context>) -> Result<Action, AgentError> {
    let (Some(namespace), Some(name)) = (set.namespace(), set.metadata.name.clone()) else {
        return Ok(Action::await_change());
    };
    let key = format!("{namespace}/{name}");
    let action = reconcile_set(&set, &namespace, &context).await?;
    context.backoff.succeeded(&key);
    Ok(action)
}

async fn reconcile_set(set: &ReplicaSet, namespace: &str, context: &Context) -> Result<Action, AgentError> {
    let client = &context.client;
    let spec = set.spec.clone().unwrap_or_default();
    let (Some(_), Some(owner)) = (selector_string(&spec.selector), owner_reference(set)) else {
        return Ok(Action::await_change());
    };
    if set.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let all = pods.list(&ListParams::default()).await?.items;

    // Claim: keep ours that match, adopt matching orphans, release ours that no longer match.
    let mut owned: Vec<Pod> = Vec::new();
    for pod in all {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let matches = selector_matches(&spec.selector, &labels);
        let ours = controller_of(&pod.metadata).is_some_and(|r| r.uid == owner.uid);
        let orphan = controller_of(&pod.metadata).is_none();
        let pod_name = pod.name_any();
        if ours && matches {
            owned.push(pod);
        } else if ours {
            let refs: Vec<&OwnerReference> = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|r| r.uid != owner.uid)
                .collect();
            let patch =
                json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.metadata.resource_version}});
            pods.patch(&pod_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            tracing::info!(replicaset = %owner.name, pod = %pod_name, "released a pod that no longer matches");
        } else if orphan && matches && is_active(&pod) {
            let mut refs: Vec<OwnerReference> = pod.metadata.owner_references.clone().unwrap_or_default();
            refs.push(owner.clone());
            let patch =
                json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.metadata.resource_version}});
            let adopted = pods
                .patch(&pod_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            tracing::info!(replicaset = %owner.name, pod = %pod_name, "adopted an orphan");
            owned.push(adopted);
        }
    }
    let active: Vec<&Pod> = owned.iter().filter(|p| is_active(p)).collect();
    let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);

    if active.len() < want {
        let missing = (want - active.len()).min(BURST_MAX);
        let mut created = 0;
        let mut batch = 1;
        while created < missing {
            let n = batch.min(missing - created);
            let new_pod = pod_from_template(set, &owner);
            let params = PostParams::default();
            let results = futures::future::join_all((0..n).map(|_| pods.create(&params, &new_pod))).await;
            for result in &results {
                match result {
                    Ok(pod) => context.recorder.record(
                        events::reference(set),
                        events::NORMAL,
                        "SuccessfulCreate",
                        &format!("Created pod: {}", pod.name_any()),
                    ),
                    Err(e) if !events::namespace_terminating(e) => context.recorder.record(
                        events::reference(set),
                        events::WARNING,
                        "FailedCreate",
                        &format!("Error creating: {}", events::error_message(e)),
                    ),
                    Err(_) => {}
                }
            }
            let failed = results.into_iter().filter_map(Result::err).next();
            created += n;
            if let Some(e) = failed {
                return Err(e.into());
            }
            batch *= 2;
        }
        tracing::info!(replicaset = %owner.name, created, "created pods");
    } else if active.len() > want {
        let mut surplus: Vec<&Pod> = active.clone();
        surplus.sort_by_key(|p| deletion_rank(p));
        for pod in surplus.iter().take((active.len() - want).min(BURST_MAX)) {
            let pod_name = pod.name_any();
            match pods.delete(&pod_name, &DeleteParams::default()).await {
                Ok(_) => context.recorder.record(
                    events::reference(set),
                    events::NORMAL,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {pod_name}"),
                ),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    context.recorder.record(
                        events::reference(set),
                        events::WARNING,
                        "FailedDelete",
                        &format!("Error deleting: {}", events::error_message(&e)),
                    );
                    return Err(e.into());
                }
            }
        }
        tracing::info!(replicaset = %owner.name, deleted = active.len() - want, "deleted surplus pods");
    }

    // Status, from the pods as they were before this reconcile's creates and deletes
    // (those show in the next one, which their watch events trigger).
    let now = Timestamp::now();
    let min_ready = Duration::from_secs(u64::try_from(spec.min_ready_seconds.unwrap_or(0).max(0)).unwrap_or(0));
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut ready = 0;
    let mut available = 0;
    let mut fully_labeled = 0;
    let mut recheck: Option<Duration> = None;
    for pod in &active {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if template_labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            fully_labeled += 1;
        }
        if ready_since(pod).is_some() {
            ready += 1;
        }
        let (is_available, after) = availability(pod, min_ready, now);
        if is_available {
            available += 1;
        }
        if let Some(after) = after {
            recheck = Some(recheck.map_or(after, |r| r.min(after)));
        }
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let old = set.status.clone().unwrap_or_default();
    let status = ReplicaSetStatus {
        replicas: count(active.len()),
        fully_labeled_replicas: Some(count(fully_labeled)),
        ready_replicas: Some(count(ready)),
        available_replicas: Some(count(available)),
        observed_generation: set.metadata.generation,
        conditions: old.conditions.clone(),
        // Upstream fills it only behind an alpha feature gate.
        terminating_replicas: old.terminating_replicas,
    };
    if status != old {
        let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
        let patch = json!({"status": status});
        sets.patch_status(&owner.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(match recheck {
        // A second more, so the pod is available by then.
        Some(after) => Action::requeue(after + Duration::from_secs(1)),
        None => Action::await_change(),
    })
}

fn error_policy(set: Arc<ReplicaSet>, error: &AgentError, context: Arc<Context>) -> Action {
    let key = format!("{}/{}", set.namespace().unwrap_or_default(), set.name_any());
    retry_later(&context.backoff, "replicaset", &key, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selectors_as_strings_and_matches() {
        let s = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(selector_string(&s).as_deref(), Some("app=web,tier in (a,b),!canary"));
        assert!(selector_matches(&s, &labels(&[("app", "web"), ("tier", "b")])));
        assert!(!selector_matches(&s, &labels(&[("app", "web"), ("tier", "c")])));
        assert!(!selector_matches(
            &s,
            &labels(&[("app", "web"), ("tier", "a"), ("canary", "1")])
        ));
        assert!(!selector_matches(&s, &labels(&[("tier", "a")])));
        assert_eq!(
            selector_string(&LabelSelector::default()),
            None,
            "an empty selector selects nothing here"
        );
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("pod")
    }

    #[test]
    fn surplus_pods_go_least_useful_first() {
        let unscheduled = pod(json!({"metadata": {"name": "u"}, "spec": {"containers": []}}));
        let running_ready = pod(
            json!({"metadata": {"name": "r"}, "spec": {"containers": [], "nodeName": "n"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}),
        );
        let running_not_ready = pod(
            json!({"metadata": {"name": "nr"}, "spec": {"containers": [], "nodeName": "n"},
            "status": {"phase": "Running"}}),
        );
        let pending = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "nodeName": "n"},
            "status": {"phase": "Pending"}}),
        );
        let mut all = [&running_ready, &running_not_ready, &pending, &unscheduled];
        all.sort_by_key(|p| deletion_rank(p));
        let order: Vec<String> = all.iter().map(|p| p.name_any()).collect();
        assert_eq!(order, ["u", "p", "nr", "r"]);
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let p = pod(json!({"metadata": {"name": "r"}, "spec": {"containers": []},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}));
        let since: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let at = |s: i64| {
            since
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(s))
                .expect("time")
        };
        assert_eq!(availability(&p, Duration::ZERO, at(0)), (true, None));
        assert_eq!(
            availability(&p, Duration::from_secs(10), at(4)),
            (false, Some(Duration::from_secs(6)))
        );
        assert_eq!(availability(&p, Duration::from_secs(10), at(10)), (true, None));
        let not_ready = pod(json!({"metadata": {"name": "n"}, "spec": {"containers": []}}));
        assert_eq!(availability(&not_ready, Duration::ZERO, at(0)), (false, None));
    }
}
