//! The namespace controller: empties a namespace being deleted, then lets it go, as
//! upstream's `namespace-controller` (its `namespacedResourcesDeleter`) does.
//!
//! Deleting a namespace only marks it: the API server sets `metadata.deletionTimestamp`
//! and `status.phase: Terminating`, and keeps it while `spec.finalizers` has entries
//! (`kubernetes`, put there at creation). New objects in it are refused from then on. For
//! such a namespace this controller, on every change of it and until it is done:
//!
//! 1. reads it fresh and makes sure its phase is Terminating;
//! 2. finds every namespaced resource the API serves with the `delete` verb (discovery,
//!    `kube::discovery`, once per pass, so a type added to the API is covered without a
//!    change here), and for each: a `deletecollection` with propagation Background (a
//!    list and one delete per object where the collection verb is not served), then a
//!    list of what is left. Pods go first; while any remain, nothing else is deleted
//!    (upstream's OrderedNamespaceDeletion, on by default since 1.33), so that running
//!    pods never lose the ConfigMaps and Secrets they use;
//! 3. writes the status conditions upstream writes, with its reasons and messages:
//!    `NamespaceDeletionDiscoveryFailure`, `NamespaceDeletionGroupVersionParsingFailure`
//!    (never True here: kube-rs parses group versions itself), `NamespaceDeletionContentFailure`,
//!    `NamespaceContentRemaining` and `NamespaceFinalizersRemaining`, each False with its
//!    "ok" reason when nothing is wrong;
//! 4. once nothing is left, removes its `kubernetes` finalizer through
//!    `PUT namespaces/<name>/finalize`; the API server then removes the namespace (unless
//!    other finalizers are still on it, which are someone else's).
//!
//! Objects that remain because of finalizers (theirs, not ours to remove) are waited for:
//! the namespace is looked at again after half of upstream's 15 s estimate, plus one
//! second; pods still terminating gracefully, after half their longest grace period.
//! Failures (discovery, a delete refused, objects left that have no finalizer to explain
//! them) are retried with the per-namespace backoff of [`Backoff`]; a conflict on the
//! namespace itself is retried at once a few times ([`CONFLICT_ATTEMPTS_MAX`]).
//!
//! Left out: upstream's cache of verbs a resource turned out not to support (discovery is
//! trusted instead), and the metadata-only (`PartialObjectMetadata`) lists it uses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, NamespaceStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{verbs, ApiCapabilities, Discovery, Scope};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::error::AgentError;
use crate::runtime::{self, retry_later, Backoff};

/// The finalizer this controller owns on every namespace (`spec.finalizers`).
pub const FINALIZER: &str = "kubernetes";

/// Upstream's estimate for objects that wait on finalizers, in seconds.
const FINALIZER_ESTIMATE_S: i64 = 15;

/// Attempts of a write to the namespace that meets a conflict, each after a fresh read.
pub const CONFLICT_ATTEMPTS_MAX: usize = 5;

/// The conditions this controller keeps, in upstream's order, with the reason and
/// message each has when nothing is wrong.
const CONDITIONS: [(&str, &str, &str); 5] = [
    (
        "NamespaceDeletionDiscoveryFailure",
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        "NamespaceDeletionGroupVersionParsingFailure",
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        "NamespaceDeletionContentFailure",
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        "NamespaceContentRemaining",
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        "NamespaceFinalizersRemaining",
        "ContentRemoved",
        "All content successfully removed",
    ),
];

struct Context {
    client: Client,
    backoff: Backoff,
}

/// Runs the controller until its future is dropped.
pub async fn run(client: Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let context = Arc::new(Context {
        client,
        backoff: Backoff::default(),
    });
    runtime::Queued::new(namespaces, watcher::Config::default())
        .run("namespace", reconcile, error_policy, context)
        .await;
}

/// What one pass over a terminating namespace found.
enum Outcome {
    /// Gone, finalized, or not being deleted: nothing to wait for.
    Done,
    /// Content remains that should go by itself (finalizers, graceful pods): look again
    /// after this long.
    Remaining(Duration),
    /// Something failed: retry with backoff (the messages say what).
    Failed(Vec<String>),
}

async fn reconcile(namespace: Arc<Namespace>, context: Arc<Context>) -> Result<Action, AgentError> {
    if namespace.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = namespace.name_any();
    match delete_namespace(&context.client, &name).await? {
        Outcome::Done => {
            context.backoff.succeeded(&name);
            Ok(Action::await_change())
        }
        Outcome::Remaining(after) => {
            context.backoff.succeeded(&name);
            tracing::debug!(namespace = %name, ?after, "content remains; looking again later");
            Ok(Action::requeue(after))
        }
        Outcome::Failed(errors) => {
            let delay = context.backoff.failed(&name);
            tracing::warn!(namespace = %name, ?errors, ?delay, "deleting the namespace's content failed");
            Ok(Action::requeue(delay))
        }
    }
}

fn error_policy(namespace: Arc<Namespace>, error: &AgentError, context: Arc<Context>) -> Action {
    retry_later(&context.backoff, "namespace", &namespace.name_any(), error)
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// An error as upstream's messages show it: the API's own message for a `Status`.
fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => other.to_string(),
    }
}

/// Upstream's `namespacedResourcesDeleter.Delete` for one namespace.
async fn delete_namespace(client: &Client, name: &str) -> Result<Outcome, AgentError> {
    let api: Api<Namespace> = Api::all(client.clone());
    // Others edit a namespace while it terminates: start from its newest state.
    let Some(namespace) = api.get_opt(name).await? else {
        return Ok(Outcome::Done);
    };
    if namespace.metadata.deletion_timestamp.is_none() {
        return Ok(Outcome::Done);
    }
    let namespace = match with_retries(&api, namespace, |ns| mark_terminating(&api, ns)).await {
        Ok(Some(ns)) => ns,
        Ok(None) => return Ok(Outcome::Done),
        Err(e) => return Err(e.into()),
    };
    if !has_finalizer(&namespace) {
        return Ok(Outcome::Done);
    }
    let content = delete_content(client, namespace).await;
    if !content.errors.is_empty() {
        return Ok(Outcome::Failed(content.errors));
    }
    if content.estimate_s > 0 {
        // Upstream's requeue for ResourcesRemainingError.
        let after_s = content.estimate_s / 2 + 1;
        return Ok(Outcome::Remaining(Duration::from_secs(after_s.unsigned_abs())));
    }
    match with_retries(&api, content.namespace, |ns| finalize(&api, ns)).await {
        Ok(_) => {
            tracing::info!(namespace = %name, "namespace emptied; removed its kubernetes finalizer");
            Ok(Outcome::Done)
        }
        Err(e) => Err(e.into()),
    }
}

fn has_finalizer(namespace: &Namespace) -> bool {
    namespace
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

/// Runs `write` on `namespace`, and again on a fresh read after each conflict (at most
/// [`CONFLICT_ATTEMPTS_MAX`] times, and never on a new namespace of the same name).
/// `None`: the namespace is gone.
async fn with_retries<F, Fut>(api: &Api<Namespace>, namespace: Namespace, write: F) -> kube::Result<Option<Namespace>>
where
    F: Fn(Namespace) -> Fut,
    Fut: std::future::Future<Output = kube::Result<Namespace>>,
{
    let uid = namespace.metadata.uid.clone();
    let name = namespace.name_any();
    let mut latest = namespace;
    let mut attempt = 1;
    loop {
        match write(latest).await {
            Ok(ns) => return Ok(Some(ns)),
            Err(e) if is_status(&e, 404) => return Ok(None),
            Err(e) if is_status(&e, 409) && attempt < CONFLICT_ATTEMPTS_MAX => {
                attempt += 1;
                match api.get_opt(&name).await? {
                    Some(ns) if ns.metadata.uid == uid => latest = ns,
                    Some(_) | None => return Ok(None),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Upstream's updateNamespaceStatusFunc: phase Terminating (the API server sets it with
/// `deletionTimestamp`; this repairs a namespace deleted by an older server).
async fn mark_terminating(api: &Api<Namespace>, mut namespace: Namespace) -> kube::Result<Namespace> {
    let phase = namespace.status.as_ref().and_then(|s| s.phase.as_deref());
    if phase == Some("Terminating") {
        return Ok(namespace);
    }
    namespace.status.get_or_insert_with(NamespaceStatus::default).phase = Some("Terminating".into());
    api.replace_status(&namespace.name_any(), &PostParams::default(), &namespace)
        .await
}

/// Upstream's finalizeNamespace: `spec.finalizers` without ours (sorted, as upstream
/// writes the set), through the finalize subresource.
async fn finalize(api: &Api<Namespace>, mut namespace: Namespace) -> kube::Result<Namespace> {
    let spec = namespace.spec.get_or_insert_with(Default::default);
    let kept: BTreeSet<String> = spec
        .finalizers
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != FINALIZER)
        .collect();
    spec.finalizers = Some(kept.into_iter().collect());
    api.replace_subresource("finalize", &namespace.name_any(), &PostParams::default(), &namespace)
        .await
}

/// What is left of one resource type after its deletion (upstream's gvrDeletionMetadata).
#[derive(Default)]
struct Left {
    /// Seconds to wait before looking again (0: no reason known to wait).
    estimate_s: i64,
    remaining: usize,
    by_finalizer: BTreeMap<String, usize>,
}

/// The result of deleting everything in a namespace.
struct Content {
    /// The namespace, with the conditions as written (or as they were, if that failed).
    namespace: Namespace,
    estimate_s: i64,
    errors: Vec<String>,
}

/// A served namespaced resource that can be deleted.
struct Deletable {
    resource: ApiResource,
    caps: ApiCapabilities,
}

impl Deletable {
    fn is_pods(&self) -> bool {
        self.resource.group.is_empty() && self.resource.plural == "pods"
    }

    /// As Go prints a GroupVersionResource: `{apps v1 deployments}`, `{ v1 pods}`.
    fn gvr(&self) -> String {
        format!(
            "{{{} {} {}}}",
            self.resource.group, self.resource.version, self.resource.plural
        )
    }
}

/// Every namespaced resource with the delete verb, at its group's preferred version.
async fn deletable_resources(client: &Client) -> kube::Result<Vec<Deletable>> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut found = Vec::new();
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            if caps.scope == Scope::Namespaced && caps.supports_operation(verbs::DELETE) {
                found.push(Deletable { resource, caps });
            }
        }
    }
    Ok(found)
}

/// Upstream's deleteAllContent: deletes what it can, records what is left in the
/// conditions, and says how long to wait.
async fn delete_content(client: &Client, mut namespace: Namespace) -> Content {
    let name = namespace.name_any();
    let deleted_at = namespace.metadata.deletion_timestamp.clone();
    let mut errors: Vec<String> = Vec::new();
    let mut new_conditions: Vec<NamespaceCondition> = Vec::new();
    let resources = match deletable_resources(client).await {
        Ok(r) => r,
        Err(e) => {
            new_conditions.push(failed_condition(
                "NamespaceDeletionDiscoveryFailure",
                "DiscoveryFailed",
                message(&e),
            ));
            errors.push(message(&e));
            Vec::new()
        }
    };
    let mut content_errors: Vec<String> = Vec::new();
    let mut estimate_s = 0;
    let mut remaining: Vec<(String, usize)> = Vec::new();
    let mut by_finalizer: BTreeMap<String, usize> = BTreeMap::new();
    // Pods first: while any remain, the rest waits.
    let (pods, others): (Vec<Deletable>, Vec<Deletable>) = resources.into_iter().partition(Deletable::is_pods);
    for (round, group) in [pods, others].into_iter().enumerate() {
        for resource in &group {
            match delete_resource(client, &name, resource, deleted_at.as_ref()).await {
                Ok(left) => {
                    estimate_s = estimate_s.max(left.estimate_s);
                    if left.remaining > 0 {
                        remaining.push((
                            format!("{}.{}", resource.resource.plural, resource.resource.group),
                            left.remaining,
                        ));
                        for (f, n) in left.by_finalizer {
                            *by_finalizer.entry(f).or_default() += n;
                        }
                    }
                }
                Err((e, left)) => {
                    estimate_s = estimate_s.max(left.estimate_s);
                    if left.remaining > 0 {
                        remaining.push((
                            format!("{}.{}", resource.resource.plural, resource.resource.group),
                            left.remaining,
                        ));
                    }
                    content_errors.push(e.clone());
                    errors.push(e);
                }
            }
        }
        if round == 0 && !remaining.is_empty() {
            break;
        }
    }
    if !remaining.is_empty() {
        let mut items: Vec<String> = remaining
            .iter()
            .map(|(r, n)| format!("{r} has {n} resource instances"))
            .collect();
        items.sort();
        new_conditions.push(failed_condition(
            "NamespaceContentRemaining",
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", items.join(", ")),
        ));
    }
    if !by_finalizer.is_empty() {
        let mut items: Vec<String> = by_finalizer
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        items.sort();
        new_conditions.push(failed_condition(
            "NamespaceFinalizersRemaining",
            "SomeFinalizerRemain",
            format!("Some finalizers are remaining: {}", items.join(", ")),
        ));
    }
    if !content_errors.is_empty() {
        content_errors.sort();
        new_conditions.push(failed_condition(
            "NamespaceDeletionContentFailure",
            "ContentDeletionFailed",
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                content_errors.len(),
                content_errors.join(", ")
            ),
        ));
    }
    let status = namespace.status.get_or_insert_with(NamespaceStatus::default);
    if update_conditions(status, &new_conditions) {
        let api: Api<Namespace> = Api::all(client.clone());
        match api.replace_status(&name, &PostParams::default(), &namespace).await {
            Ok(written) => namespace = written,
            // As upstream: only logged; the next pass writes them again.
            Err(e) => tracing::info!(namespace = %name, error = %e, "could not update the namespace's conditions"),
        }
    }
    Content {
        namespace,
        estimate_s,
        errors,
    }
}

/// Deletes every object of one resource in the namespace and reports what is left
/// (upstream's deleteAllContentForGroupVersionResource). On error, also what is known.
async fn delete_resource(
    client: &Client,
    namespace: &str,
    resource: &Deletable,
    deleted_at: Option<&Time>,
) -> Result<Left, (String, Left)> {
    let estimate_s = if resource.is_pods() {
        pods_estimate_s(client, namespace, deleted_at)
            .await
            .map_err(|e| (message(&e), Left::default()))?
    } else {
        0
    };
    let with_estimate = |e: kube::Error| {
        (
            message(&e),
            Left {
                estimate_s,
                ..Left::default()
            },
        )
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource.resource);
    // Background: the namespace empties itself, so no object needs to wait for its
    // dependents (and none gets the orphan finalizer).
    let params = DeleteParams::background();
    let mut collection_deleted = false;
    if resource.caps.supports_operation(verbs::DELETE_COLLECTION) {
        match api.delete_collection(&params, &ListParams::default()).await {
            Ok(_) => collection_deleted = true,
            Err(e) if is_status(&e, 405) || is_status(&e, 404) => {}
            Err(e) => return Err(with_estimate(e)),
        }
    }
    if !resource.caps.supports_operation(verbs::LIST) {
        return Ok(Left {
            estimate_s,
            ..Left::default()
        });
    }
    if !collection_deleted {
        let items = api.list(&ListParams::default()).await.map_err(with_estimate)?.items;
        for item in items {
            match api.delete(&item.name_any(), &params).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) || is_status(&e, 405) => {}
                Err(e) => return Err(with_estimate(e)),
            }
        }
    }
    // What is left, and why.
    let items = api.list(&ListParams::default()).await.map_err(with_estimate)?.items;
    if items.is_empty() {
        return Ok(Left::default());
    }
    let mut by_finalizer: BTreeMap<String, usize> = BTreeMap::new();
    for item in &items {
        for f in item.finalizers() {
            *by_finalizer.entry(f.clone()).or_default() += 1;
        }
    }
    let left = Left {
        estimate_s,
        remaining: items.len(),
        by_finalizer,
    };
    if estimate_s != 0 {
        return Ok(left);
    }
    // Finalizers are someone else's to remove: wait for them.
    if !left.by_finalizer.is_empty() {
        return Ok(Left {
            estimate_s: FINALIZER_ESTIMATE_S,
            ..left
        });
    }
    Err((
        format!(
            "unexpected items still remain in namespace: {namespace} for gvr: {}",
            resource.gvr()
        ),
        left,
    ))
}

/// The longest grace period of the namespace's pods that have not finished, unless the
/// namespace has been terminating for longer than that (upstream's
/// estimateGracefulTerminationForPods).
async fn pods_estimate_s(client: &Client, namespace: &str, deleted_at: Option<&Time>) -> kube::Result<i64> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let estimate_s = pods
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .filter_map(|p| p.spec.as_ref()?.termination_grace_period_seconds)
        .max()
        .unwrap_or(0);
    let elapsed_s = deleted_at.map_or(0, |t| k8s_openapi::jiff::Timestamp::now().duration_since(t.0).as_secs());
    Ok(if elapsed_s >= estimate_s { 0 } else { estimate_s })
}

fn failed_condition(kind: &str, reason: &str, message: String) -> NamespaceCondition {
    NamespaceCondition {
        type_: kind.into(),
        status: "True".into(),
        last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        reason: Some(reason.into()),
        message: Some(message),
    }
}

/// Upstream's updateConditions: every kept condition type gets the new failure, or its
/// "ok" variant; an existing condition's transition time moves only when its status
/// changes. Whether anything changed.
fn update_conditions(status: &mut NamespaceStatus, new: &[NamespaceCondition]) -> bool {
    let mut changed = false;
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    for (kind, ok_reason, ok_message) in CONDITIONS {
        let wanted = new
            .iter()
            .find(|c| c.type_ == kind)
            .cloned()
            .unwrap_or_else(|| NamespaceCondition {
                type_: kind.into(),
                status: "False".into(),
                last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                reason: Some(ok_reason.into()),
                message: Some(ok_message.into()),
            });
        match conditions.iter_mut().find(|c| c.type_ == kind) {
            None => {
                conditions.push(wanted);
                changed = true;
            }
            Some(old) => {
                if old.status != wanted.status || old.reason != wanted.reason || old.message != wanted.message {
                    if old.status != wanted.status {
                        old.last_transition_time = wanted.last_transition_time;
                    }
                    old.status = wanted.status;
                    old.reason = wanted.reason;
                    old.message = wanted.message;
                    changed = true;
                }
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition<'a>(status: &'a NamespaceStatus, kind: &str) -> &'a NamespaceCondition {
        status
            .conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_ == kind))
            .expect("condition")
    }

    #[test]
    fn conditions_get_their_ok_variant_and_move_only_on_change() {
        let mut status = NamespaceStatus::default();
        let remaining = failed_condition(
            "NamespaceFinalizersRemaining",
            "SomeFinalizerRemain",
            "Some finalizers are remaining: example.com/hold in 1 resource instances".into(),
        );
        assert!(update_conditions(&mut status, std::slice::from_ref(&remaining)));
        assert_eq!(status.conditions.as_ref().map(Vec::len), Some(5));
        let c = condition(&status, "NamespaceFinalizersRemaining");
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("True", Some("SomeFinalizerRemain"))
        );
        let c = condition(&status, "NamespaceContentRemaining");
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
            (
                "False",
                Some("ContentRemoved"),
                Some("All content successfully removed")
            )
        );
        // The same again changes nothing; the failure gone turns it to its ok variant.
        assert!(!update_conditions(&mut status, std::slice::from_ref(&remaining)));
        assert!(update_conditions(&mut status, &[]));
        let c = condition(&status, "NamespaceFinalizersRemaining");
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some("ContentRemoved"))
        );
    }

    #[test]
    fn resources_print_as_go_prints_them() {
        let d = Deletable {
            resource: ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: "Pod".into(),
                plural: "pods".into(),
            },
            caps: ApiCapabilities {
                scope: Scope::Namespaced,
                subresources: Vec::new(),
                operations: Vec::new(),
            },
        };
        assert!(d.is_pods());
        assert_eq!(d.gvr(), "{ v1 pods}");
    }
}
