//! The garbage collector, background propagation: an object whose owners are all gone is
//! deleted; an object some of whose owners are gone loses the references to those.
//! So deleting a Deployment takes its ReplicaSets with it, and their pods after them;
//! deleting a Service takes its EndpointSlices.
//!
//! An owner is gone when no object of its kind and name exists in the dependent's
//! namespace (or cluster-wide, for cluster-scoped kinds), or one exists with another uid
//! (a new object under the old name is not the owner). Each dependent kind is collected by
//! a kube-rs controller of its own, triggered by the dependent and by every change of an
//! object of its owner kind (which maps to the dependents that name it, from the
//! controller's cache): pods (owned by ReplicaSets), ReplicaSets (by Deployments) and
//! EndpointSlices (by Services). Kinds beyond these are not collected yet.
//!
//! Cost: every change of an owner (a ReplicaSet's status, say) re-checks its dependents,
//! one GET of the owner each, because a watch mapper cannot tell a deletion from an
//! update; triggering on deletions only needs kube-runtime's (unstable) stream triggers.
//!
//! Left out: foreground and orphan propagation (`propagationPolicy: Foreground|Orphan`;
//! the API server does not set their finalizers yet), and a cluster-wide graph of every
//! kind, which upstream builds from discovery.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PropagationPolicy,
};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::AgentError;
use crate::runtime::{self, retry_later, Backoff};

struct Context {
    client: Client,
    backoff: Backoff,
}

/// Runs the collector until its future is dropped.
pub async fn run(client: Client) {
    tokio::join!(
        collect::<Pod, ReplicaSet>(client.clone(), "gc-pods"),
        collect::<ReplicaSet, Deployment>(client.clone(), "gc-replicasets"),
        collect::<EndpointSlice, Service>(client, "gc-endpointslices"),
    );
}

/// The plural resource name of a kind Capstan serves, for looking owners up.
fn plural(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Pod" => "pods",
        "ReplicaSet" => "replicasets",
        "Deployment" => "deployments",
        "Service" => "services",
        "Node" => "nodes",
        "Namespace" => "namespaces",
        "ConfigMap" => "configmaps",
        "Secret" => "secrets",
        "ServiceAccount" => "serviceaccounts",
        "Endpoints" => "endpoints",
        "EndpointSlice" => "endpointslices",
        "Lease" => "leases",
        "Event" => "events",
        _ => return None,
    })
}

fn cluster_scoped(kind: &str) -> bool {
    matches!(kind, "Node" | "Namespace")
}

/// Whether the owner `r` names exists (with its uid); None when its kind is unknown
/// here (then it is left alone: never delete on a guess).
async fn owner_exists(client: &Client, namespace: &str, r: &OwnerReference) -> Result<Option<bool>, AgentError> {
    let Some(plural) = plural(&r.kind) else {
        return Ok(None);
    };
    let (group, version) = match r.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", r.api_version.as_str()),
    };
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, &r.kind), plural);
    let api: Api<DynamicObject> = if cluster_scoped(&r.kind) {
        Api::all_with(client.clone(), &resource)
    } else {
        Api::namespaced_with(client.clone(), namespace, &resource)
    };
    let owner = api.get_opt(&r.name).await?;
    Ok(Some(
        owner.is_some_and(|o| o.metadata.uid.as_deref() == Some(r.uid.as_str())),
    ))
}

async fn collect<K, O>(client: Client, name: &'static str)
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    O: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let dependents: Api<K> = Api::all(client.clone());
    let owners: Api<O> = Api::all(client.clone());
    let context = Arc::new(Context {
        client,
        backoff: Backoff::default(),
    });
    let controller = Controller::new(dependents, watcher::Config::default());
    let cache = controller.store();
    let results = controller
        .watches(owners, watcher::Config::default(), move |owner: O| {
            let uid = owner.meta().uid.clone().unwrap_or_default();
            cache
                .state()
                .iter()
                .filter(|d| d.owner_references().iter().any(|r| r.uid == uid))
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile::<K>, error_policy::<K>, context);
    runtime::drive(name, results).await;
}

async fn reconcile<K>(dependent: Arc<K>, context: Arc<Context>) -> Result<Action, AgentError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let refs = dependent.owner_references().to_vec();
    if refs.is_empty() || dependent.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = dependent.namespace().unwrap_or_default();
    let name = dependent.name_any();
    let mut gone: Vec<&OwnerReference> = Vec::new();
    let mut unknown = false;
    for r in &refs {
        match owner_exists(&context.client, &namespace, r).await? {
            Some(true) => {}
            Some(false) => gone.push(r),
            None => unknown = true,
        }
    }
    let api: Api<K> = Api::namespaced(context.client.clone(), &namespace);
    if gone.len() == refs.len() && !unknown {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => tracing::info!(kind = %K::kind(&()), %namespace, %name, "deleted: its owners are gone"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    } else if !gone.is_empty() {
        let kept: Vec<&OwnerReference> = refs.iter().filter(|r| !gone.iter().any(|g| g.uid == r.uid)).collect();
        let patch = json!({"metadata": {"ownerReferences": kept,
            "resourceVersion": dependent.meta().resource_version}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        tracing::info!(kind = %K::kind(&()), %namespace, %name, dropped = gone.len(), "dropped references to owners that are gone");
    }
    context.backoff.succeeded(&format!("{namespace}/{name}"));
    Ok(Action::await_change())
}

fn error_policy<K>(dependent: Arc<K>, error: &AgentError, context: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let key = format!("{}/{}", dependent.namespace().unwrap_or_default(), dependent.name_any());
    retry_later(&context.backoff, "gc", &key, error)
}
