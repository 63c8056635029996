//! The Deployment controller: rolls each Deployment's pod template out through
//! ReplicaSets, as upstream's `deployment-controller`.
//!
//! A Deployment owns one ReplicaSet per template it has had, named
//! `<deployment>-<pod-template-hash>`: the hash of the template is added to the
//! ReplicaSet's selector and pod labels, so the ReplicaSets never fight over pods. The
//! ReplicaSet whose hash is the current template's is the *new* one; the others are *old*.
//! One reconcile (from consistent lists, like the ReplicaSet controller):
//!
//! - creates the new ReplicaSet when missing, with the revision annotation one above the
//!   old ones (a template that comes back, `kubectl rollout undo`, gets the next revision);
//! - **RollingUpdate**: scales the new one up while all ReplicaSets together stay within
//!   `replicas + maxSurge`, and the old ones down while `replicas - maxUnavailable` pods
//!   stay available (old unavailable pods go first, then the oldest ReplicaSets);
//!   `maxSurge` rounds up and `maxUnavailable` down from percentages (25 % each by
//!   default; both 0 means 1 unavailable);
//! - **Recreate**: scales every old ReplicaSet to 0, and the new one up once their pods
//!   are gone;
//! - **paused**: only the scale follows `replicas`; no rollout;
//! - deletes old ReplicaSets with no pods beyond `revisionHistoryLimit` (10), oldest first;
//! - writes `status`: replicas, updatedReplicas, readyReplicas, availableReplicas,
//!   unavailableReplicas, observedGeneration, and the `Available` and `Progressing`
//!   conditions `kubectl rollout status` reads (`ProgressDeadlineExceeded` once
//!   `progressDeadlineSeconds` pass without progress).
//!
//! Events (involved object the Deployment, source `deployment-controller`), as upstream's:
//! `Normal ScalingReplicaSet` "Scaled up replica set <name> from <old> to <new>" (or
//! "Scaled down …") for every change of a ReplicaSet's `spec.replicas`, including "from 0"
//! when the new ReplicaSet is created with replicas; `Warning ReplicaSetCreateError`
//! "Failed to create new replica set \"<name>\": <API error message>" when creating it is
//! refused (none when the namespace is being deleted). They are queued on an
//! [`events::Recorder`], so a reconcile never waits for their writes.
//!
//! Left out: proportional scaling of old ReplicaSets when `replicas` changes mid-rollout
//! (the new one takes the change), adopting orphan ReplicaSets, `collisionCount`
//! (a hash collision between two templates is not handled), and the `Progressing=False`
//! condition (`ReplicaSetCreateError`) upstream writes with that event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::error::AgentError;
use crate::events::{self, Recorder};
use crate::runtime::{self, retry_later, Backoff};

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The `source.component` of this controller's events (upstream's).
pub const COMPONENT: &str = "deployment-controller";

struct Context {
    client: Client,
    backoff: Backoff,
    recorder: Recorder,
}

/// Runs the controller until its future is dropped.
pub async fn run(client: Client) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), COMPONENT),
        client,
        backoff: Backoff::default(),
    });
    runtime::Queued::new(deployments, watcher::Config::default())
        .owns::<ReplicaSet>(context.client.clone(), watcher::Config::default())
        .run("deployment", reconcile, error_policy, context)
        .await;
}

fn error_policy(d: Arc<Deployment>, error: &AgentError, context: Arc<Context>) -> Action {
    let key = format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any());
    retry_later(&context.backoff, "deployment", &key, error)
}

/// The template's hash: FNV-1a (32 bits) of its JSON, in the alphabet upstream uses for
/// names (no vowels, so no words).
pub fn template_hash(template: &PodTemplateSpec) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let text = serde_json::to_string(template).unwrap_or_default();
    let mut hash: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let mut n = hash;
    let mut out = String::new();
    loop {
        out.push(char::from(ALPHABET[(n % 27) as usize]));
        n /= 27;
        if n == 0 {
            break;
        }
    }
    out
}

/// `value` of `total`: a number, or a percentage rounded up or down.
fn scaled(value: Option<&IntOrString>, default_percent: i32, total: i32, round_up: bool) -> i32 {
    let percent = match value {
        Some(IntOrString::Int(n)) => return (*n).max(0),
        Some(IntOrString::String(s)) => s.trim_end_matches('%').parse::<i32>().unwrap_or(default_percent),
        None => default_percent,
    };
    let product = i64::from(total) * i64::from(percent.max(0));
    let v = if round_up { (product + 99) / 100 } else { product / 100 };
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// (maxSurge, maxUnavailable) for `replicas`, as upstream resolves them.
pub fn surge_and_unavailable(d: &Deployment, replicas: i32) -> (i32, i32) {
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = scaled(rolling.and_then(|r| r.max_surge.as_ref()), 25, replicas, true);
    let unavailable = scaled(rolling.and_then(|r| r.max_unavailable.as_ref()), 25, replicas, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable.min(replicas))
    }
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// How many replicas each ReplicaSet should have next, for a rolling update: the new one
/// first (`new`, its index), then the old ones. Pure: sizes and availabilities in, sizes out.
pub fn rolling_targets(replicas: i32, surge: i32, unavailable: i32, sets: &[(i32, i32)], new: usize) -> Vec<i32> {
    let mut target: Vec<i32> = sets.iter().map(|s| s.0).collect();
    let total: i32 = target.iter().sum();
    // Scale up the new one within replicas + surge.
    if target[new] < replicas {
        let room = (replicas + surge - total).max(0);
        target[new] += room.min(replicas - target[new]);
    } else if target[new] > replicas {
        target[new] = replicas;
    }
    // Scale down old ones while replicas - unavailable stay available (upstream's two
    // steps): first old pods that are not available, as far as the total allows
    // (new pods not yet available may still come up), oldest first...
    let min_available = replicas - unavailable;
    let all_pods: i32 = target.iter().sum();
    let new_unavailable = (target[new] - sets[new].1).max(0);
    let mut cleanup = (all_pods - min_available - new_unavailable).max(0);
    for (i, s) in sets.iter().enumerate() {
        if i != new {
            let unhealthy = (target[i] - s.1).max(0).min(cleanup);
            target[i] -= unhealthy;
            cleanup -= unhealthy;
        }
    }
    // ...then available ones, as far as availability allows, oldest first.
    let available: i32 = sets.iter().map(|s| s.1).sum();
    let mut budget = (available - min_available).max(0);
    for (i, t) in target.iter_mut().enumerate() {
        if i != new && budget > 0 {
            let down = (*t).min(budget);
            *t -= down;
            budget -= down;
        }
    }
    target
}

async fn reconcile(d: Arc<Deployment>, context: Arc<Context>) -> Result<Action, AgentError> {
    let Some(namespace) = d.namespace() else {
        return Ok(Action::await_change());
    };
    let key = format!("{namespace}/{}", d.name_any());
    let action = reconcile_deployment(&d, &namespace, &context).await?;
    context.backoff.succeeded(&key);
    Ok(action)
}

async fn reconcile_deployment(d: &Deployment, namespace: &str, context: &Context) -> Result<Action, AgentError> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let (Some(name), Some(uid), Some(spec)) = (d.metadata.name.clone(), d.metadata.uid.clone(), d.spec.clone()) else {
        return Ok(Action::await_change());
    };
    let sets_api: Api<ReplicaSet> = Api::namespaced(context.client.clone(), namespace);
    let mut sets: Vec<ReplicaSet> = sets_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .collect();
    sets.sort_by_key(|rs| (rs.metadata.creation_timestamp.as_ref().map(|t| t.0), rs.name_any()));

    let replicas = spec.replicas.unwrap_or(1).max(0);
    let hash = template_hash(&spec.template);
    let max_revision = sets.iter().map(revision).max().unwrap_or(0);
    let new_index = sets.iter().position(|rs| rs.labels().get(HASH_LABEL) == Some(&hash));
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let paused = spec.paused.unwrap_or(false);

    // The new ReplicaSet: created, or brought to the newest revision.
    let new_index = match new_index {
        Some(i) => {
            if revision(&sets[i]) < max_revision || revision(&sets[i]) == 0 {
                let patch = json!({"metadata": {"annotations": {REVISION_ANNOTATION: (max_revision + 1).to_string()}}});
                sets[i] = sets_api
                    .patch(&sets[i].name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            Some(i)
        }
        None if paused => None,
        None => {
            let old_total: i32 = sets.iter().map(spec_replicas).sum();
            let initial = if recreate || !sets.is_empty() && old_total > 0 {
                0
            } else {
                replicas
            };
            let rs = new_replica_set(d, &name, &uid, &hash, initial, max_revision + 1);
            let created = match sets_api.create(&PostParams::default(), &rs).await {
                Ok(created) => {
                    if initial > 0 {
                        scaled_event(d, &created, 0, initial, context);
                    }
                    created
                }
                Err(kube::Error::Api(s)) if s.code == 409 => sets_api.get(&format!("{name}-{hash}")).await?,
                Err(e) => {
                    if !events::namespace_terminating(&e) {
                        let message = format!(
                            "Failed to create new replica set \"{}\": {}",
                            rs.name_any(),
                            events::error_message(&e)
                        );
                        context.recorder.record(
                            events::reference(d),
                            events::WARNING,
                            "ReplicaSetCreateError",
                            &message,
                        );
                    }
                    return Err(e.into());
                }
            };
            tracing::info!(deployment = %name, replicaset = %created.name_any(), "created a new replicaset");
            sets.push(created);
            Some(sets.len() - 1)
        }
    };

    // Target sizes.
    let mut targets: Vec<i32> = sets.iter().map(spec_replicas).collect();
    match new_index {
        None => {}
        Some(new) if paused => targets[new] = replicas.max(targets[new].min(replicas)),
        Some(new) if recreate => {
            let old_left = sets
                .iter()
                .enumerate()
                .any(|(i, rs)| i != new && (spec_replicas(rs) > 0 || status_of(rs).0 > 0));
            for (i, t) in targets.iter_mut().enumerate() {
                *t = if i != new {
                    0
                } else if old_left {
                    spec_replicas(&sets[new])
                } else {
                    replicas
                };
            }
        }
        Some(new) => {
            let (surge, unavailable) = surge_and_unavailable(d, replicas);
            // A ReplicaSet's status may still count pods its controller is deleting after
            // a scale-down: no more of them are available than it is to have.
            let shape: Vec<(i32, i32)> = sets
                .iter()
                .map(|rs| (spec_replicas(rs), status_of(rs).2.min(spec_replicas(rs))))
                .collect();
            targets = rolling_targets(replicas, surge, unavailable, &shape, new);
        }
    }
    for (rs, target) in sets.iter_mut().zip(&targets) {
        let old = spec_replicas(rs);
        if old != *target {
            let patch = json!({"spec": {"replicas": target}});
            *rs = sets_api
                .patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            scaled_event(d, rs, old, *target, context);
            tracing::info!(deployment = %name, replicaset = %rs.name_any(), replicas = target, "scaled");
        }
    }

    // History: old ReplicaSets without pods beyond the limit, oldest first.
    let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10).max(0)).unwrap_or(10);
    let idle_old: Vec<&ReplicaSet> = sets
        .iter()
        .enumerate()
        .filter(|(i, rs)| Some(*i) != new_index && spec_replicas(rs) == 0 && status_of(rs).0 == 0)
        .map(|(_, rs)| rs)
        .collect();
    for rs in idle_old.iter().take(idle_old.len().saturating_sub(limit)) {
        match sets_api.delete(&rs.name_any(), &DeleteParams::default()).await {
            Ok(_) => tracing::info!(deployment = %name, replicaset = %rs.name_any(), "deleted an old replicaset"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }

    write_status(d, &name, namespace, &sets, new_index, replicas, context).await
}

/// Upstream's `ScalingReplicaSet` event (its wording since Kubernetes 1.28, with "from").
fn scaled_event(d: &Deployment, rs: &ReplicaSet, old: i32, new: i32, context: &Context) {
    let direction = if old < new { "up" } else { "down" };
    let message = format!("Scaled {direction} replica set {} from {old} to {new}", rs.name_any());
    context
        .recorder
        .record(events::reference(d), events::NORMAL, "ScalingReplicaSet", &message);
}

fn new_replica_set(d: &Deployment, name: &str, uid: &str, hash: &str, replicas: i32, revision: i64) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    let mut annotations = BTreeMap::new();
    annotations.insert(REVISION_ANNOTATION.to_string(), revision.to_string());
    annotations.insert(
        "deployment.kubernetes.io/desired-replicas".to_string(),
        spec.replicas.unwrap_or(1).to_string(),
    );
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: name.into(),
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

fn condition(type_: &str, status: bool, reason: &str, message: String, now: &Time) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

/// Keeps a condition's times when nothing about it changed (so that status writes stop).
fn merge_condition(old: Option<&DeploymentCondition>, mut new: DeploymentCondition) -> DeploymentCondition {
    if let Some(old) = old {
        if old.status == new.status {
            new.last_transition_time = old.last_transition_time.clone();
            if old.reason == new.reason && old.message == new.message {
                new.last_update_time = old.last_update_time.clone();
            }
        }
    }
    new
}

async fn write_status(
    d: &Deployment,
    name: &str,
    namespace: &str,
    sets: &[ReplicaSet],
    new_index: Option<usize>,
    replicas: i32,
    context: &Context,
) -> Result<Action, AgentError> {
    let spec = d.spec.clone().unwrap_or_default();
    let (mut total, mut ready, mut available) = (0, 0, 0);
    for rs in sets {
        let (t, r, a) = status_of(rs);
        total += t;
        ready += r;
        available += a;
    }
    let (updated, updated_available, new_name) = match new_index {
        Some(i) => {
            let (t, _, a) = status_of(&sets[i]);
            (t, a, sets[i].name_any())
        }
        None => (0, 0, String::new()),
    };
    let (_, unavailable_allowed) = surge_and_unavailable(d, replicas);
    let now = Time(Timestamp::now());
    let old = d.status.clone().unwrap_or_default();
    let old_condition = |t: &str| old.conditions.iter().flatten().find(|c| c.type_ == t).cloned();

    let available_ok = available >= replicas - unavailable_allowed;
    let available_condition = merge_condition(
        old_condition("Available").as_ref(),
        if available_ok {
            condition(
                "Available",
                true,
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                &now,
            )
        } else {
            condition(
                "Available",
                false,
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                &now,
            )
        },
    );
    let complete = new_index.is_some() && updated == replicas && updated_available == replicas && total == replicas;
    let deadline =
        Duration::from_secs(u64::try_from(spec.progress_deadline_seconds.unwrap_or(600).max(0)).unwrap_or(600));
    let old_progressing = old_condition("Progressing");
    let mut recheck = None;
    let progressing = if spec.paused.unwrap_or(false) {
        condition(
            "Progressing",
            true,
            "DeploymentPaused",
            "Deployment is paused".into(),
            &now,
        )
    } else if complete {
        condition(
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            &now,
        )
    } else {
        // Progress is a change of the counts; without one for the deadline, it failed.
        let counts_changed = old.updated_replicas != Some(updated)
            || old.available_replicas != Some(available)
            || old.replicas != Some(total)
            || old.observed_generation != d.metadata.generation;
        let since = old_progressing
            .as_ref()
            .filter(|c| c.reason.as_deref() == Some("ReplicaSetUpdated") && !counts_changed)
            .and_then(|c| c.last_update_time.as_ref())
            .map(|t| t.0);
        let waited = since
            .map(|s| now.0.duration_since(s).unsigned_abs())
            .unwrap_or(Duration::ZERO);
        if waited >= deadline {
            condition(
                "Progressing",
                false,
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                &now,
            )
        } else {
            recheck = Some(deadline - waited);
            let mut c = condition(
                "Progressing",
                true,
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
                &now,
            );
            if !counts_changed {
                // No progress: keep when the last progress was.
                c.last_update_time = old_progressing
                    .as_ref()
                    .and_then(|o| o.last_update_time.clone())
                    .or(c.last_update_time);
            }
            c
        }
    };
    let progressing_condition = merge_condition(old_progressing.as_ref(), progressing);
    let status = DeploymentStatus {
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((replicas - available).max(0)),
        observed_generation: d.metadata.generation,
        conditions: Some(vec![available_condition, progressing_condition]),
        collision_count: old.collision_count,
        terminating_replicas: old.terminating_replicas,
    };
    if status != old {
        let deployments: Api<Deployment> = Api::namespaced(context.client.clone(), namespace);
        deployments
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({"status": status})))
            .await?;
    }
    Ok(match recheck {
        Some(after) => Action::requeue(after + Duration::from_secs(1)),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(strategy: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
            "strategy": strategy}}))
        .expect("deployment")
    }

    #[test]
    fn surge_rounds_up_and_unavailable_down() {
        let d = deployment(json!({"type": "RollingUpdate"}));
        assert_eq!(surge_and_unavailable(&d, 10), (3, 2), "25 % of 10");
        assert_eq!(surge_and_unavailable(&d, 1), (1, 0));
        let d = deployment(json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}));
        assert_eq!(
            surge_and_unavailable(&d, 4),
            (0, 1),
            "both zero: one may be unavailable"
        );
        let d = deployment(json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 1}}));
        assert_eq!(surge_and_unavailable(&d, 3), (2, 1));
    }

    #[test]
    fn hashes_are_stable_and_differ_by_template() {
        let a = deployment(json!({})).spec.expect("spec").template;
        let mut b = a.clone();
        assert_eq!(template_hash(&a), template_hash(&b));
        b.metadata.get_or_insert_with(ObjectMeta::default).labels = Some([("app".into(), "b".into())].into());
        assert_ne!(template_hash(&a), template_hash(&b));
        assert!(template_hash(&a)
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn a_rolling_update_stays_within_surge_and_unavailability() {
        // 4 replicas, surge 1, unavailable 1; old set has 4 available, new none yet.
        let t = rolling_targets(4, 1, 1, &[(4, 4), (0, 0)], 1);
        assert_eq!(t, vec![3, 1], "the new one grows by the surge; one old may go");
        // New has 1 (not available yet), old 3 available: total 4 = max 5? room 1.
        let t = rolling_targets(4, 1, 1, &[(3, 3), (1, 0)], 1);
        assert_eq!(t, vec![3, 2], "no old pod may go while only 3 are available");
        // New 2 available, old 3: available 5, min 3: two old may go.
        let t = rolling_targets(4, 1, 1, &[(3, 3), (2, 2)], 1);
        assert_eq!(t, vec![1, 2]);
        // Unavailable old pods go first, as far as the total allows.
        let t = rolling_targets(4, 1, 1, &[(4, 1), (0, 0)], 1);
        assert_eq!(t, vec![3, 1]);
        let t = rolling_targets(4, 1, 1, &[(3, 1), (1, 1)], 1);
        assert_eq!(
            t,
            vec![2, 2],
            "the new one grows; one unavailable old pod goes, as the new one's may come up"
        );
        // Done.
        assert_eq!(rolling_targets(4, 1, 1, &[(0, 0), (4, 4)], 1), vec![0, 4]);
    }
}
