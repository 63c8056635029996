//! Namespace deletion against Capstan's Kubernetes API (in this process, over real HTTP)
//! with the namespace controller: a DELETE only marks the namespace Terminating; new
//! content is refused with upstream's 403; the controller empties it of every kind (with
//! the other controllers running and trying to recreate what goes) and then the namespace
//! is gone. An object held by a foreign finalizer keeps it Terminating, with upstream's
//! conditions, until the finalizer is removed. Without a controller, the `finalize`
//! subresource is what lets a terminating namespace go.

mod common;

use std::fmt::Debug;

use common::{eventually, start};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, NamespaceCondition, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

fn object<K: DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).expect("a valid object")
}

async fn create_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = object(json!({"metadata": {"name": name}}));
    // The API may still be creating its own namespaces.
    eventually("create the namespace", || async {
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
}

async fn create<K>(client: &Client, namespace: &str, v: Value)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &object(v))
        .await
        .unwrap_or_else(|e| panic!("create a {} in {namespace}: {e}", K::kind(&())));
}

async fn count<K>(client: &Client, namespace: &str) -> Result<usize, String>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .len())
}

fn condition<'a>(ns: &'a Namespace, kind: &str) -> Option<&'a NamespaceCondition> {
    ns.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

fn phase(ns: &Namespace) -> Option<&str> {
    ns.status.as_ref()?.phase.as_deref()
}

/// Deletes the namespace and checks the answer: the namespace itself, Terminating.
async fn delete_namespace(client: &Client, name: &str) -> Namespace {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let answer = namespaces
        .delete(name, &DeleteParams::background())
        .await
        .expect("delete the namespace");
    let ns = answer.left().expect("the namespace back, not a Status");
    assert!(ns.metadata.deletion_timestamp.is_some(), "{ns:?}");
    assert_eq!(phase(&ns), Some("Terminating"));
    assert_eq!(
        ns.spec.as_ref().and_then(|s| s.finalizers.clone()),
        Some(vec!["kubernetes".to_string()])
    );
    ns
}

async fn wait_gone(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually(&format!("namespace {name} gone"), || async {
        match namespaces.get_opt(name).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(ns) => Err(format!("still there: {:?}", ns.status)),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_empties_every_kind_then_removes_it() {
    let cluster = start().await;
    let client = cluster.client.clone();
    tokio::spawn(capstan_agents::namespace::run(client.clone()));
    tokio::spawn(capstan_agents::gc::run(client.clone()));
    tokio::spawn(capstan_agents::serviceaccount::run(client.clone()));
    tokio::spawn(capstan_agents::deployment::run(client.clone()));
    tokio::spawn(capstan_agents::replicaset::run(client.clone()));
    tokio::spawn(capstan_agents::endpoints::run(client.clone()));
    let ns = "doomed";
    create_namespace(&client, ns).await;
    let labels = json!({"app": "web"});
    create::<ConfigMap>(
        &client,
        ns,
        json!({"metadata": {"name": "settings"}, "data": {"a": "b"}}),
    )
    .await;
    create::<Secret>(
        &client,
        ns,
        json!({"metadata": {"name": "token"}, "stringData": {"k": "v"}}),
    )
    .await;
    create::<Pod>(
        &client,
        ns,
        json!({"metadata": {"name": "loose", "labels": {"app": "loose"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;
    create::<Service>(
        &client,
        ns,
        json!({"metadata": {"name": "web"}, "spec": {"selector": labels, "ports": [{"port": 80}]}}),
    )
    .await;
    create::<Deployment>(
        &client,
        ns,
        json!({"metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    )
    .await;
    create::<Lease>(
        &client,
        ns,
        json!({"metadata": {"name": "lock"}, "spec": {"holderIdentity": "me"}}),
    )
    .await;
    create::<ServiceAccount>(&client, ns, json!({"metadata": {"name": "robot"}})).await;
    eventually(
        "the controllers' objects: a replicaset, 3 pods, the default account, endpoints",
        || async {
            let seen = (
                count::<ReplicaSet>(&client, ns).await?,
                count::<Pod>(&client, ns).await?,
                count::<ServiceAccount>(&client, ns).await?,
                count::<Endpoints>(&client, ns).await?,
            );
            if seen == (1, 3, 2, 1) {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;

    delete_namespace(&client, ns).await;

    // Nothing new goes in meanwhile: upstream's 403, with its cause.
    let late: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    match late
        .create(&PostParams::default(), &object(json!({"metadata": {"name": "late"}})))
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"), "{s:?}");
            assert_eq!(
                s.message,
                "configmaps \"late\" is forbidden: unable to create new content in namespace doomed because it is being terminated"
            );
            let details = s.details.as_ref().expect("details");
            assert_eq!((details.name.as_str(), details.kind.as_str()), ("late", "configmaps"));
            let cause = details.causes.first().expect("a cause");
            assert_eq!(
                (cause.reason.as_str(), cause.message.as_str(), cause.field.as_str()),
                (
                    "NamespaceTerminating",
                    "namespace doomed is being terminated",
                    "metadata.namespace"
                )
            );
        }
        other => panic!("a create in a terminating namespace: {other:?}"),
    }
    let late: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let generated: Deployment = object(json!({"metadata": {"generateName": "late-"},
        "spec": {"selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}));
    match late.create(&PostParams::default(), &generated).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert_eq!(
                s.message,
                "deployments.apps is forbidden: unable to create new content in namespace doomed because it is being terminated"
            );
            assert_eq!(s.details.as_ref().map(|d| d.group.as_str()), Some("apps"));
        }
        other => panic!("a generated name in a terminating namespace: {other:?}"),
    }

    wait_gone(&client, ns).await;
    let left = (
        count::<ConfigMap>(&client, ns).await,
        count::<Secret>(&client, ns).await,
        count::<Pod>(&client, ns).await,
        count::<Service>(&client, ns).await,
        count::<Endpoints>(&client, ns).await,
        count::<EndpointSlice>(&client, ns).await,
        count::<Deployment>(&client, ns).await,
        count::<ReplicaSet>(&client, ns).await,
        count::<Lease>(&client, ns).await,
        count::<ServiceAccount>(&client, ns).await,
    );
    assert_eq!(
        left,
        (Ok(0), Ok(0), Ok(0), Ok(0), Ok(0), Ok(0), Ok(0), Ok(0), Ok(0), Ok(0)),
        "everything in the namespace went with it"
    );
    // The name is free again.
    create_namespace(&client, ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_finalizer_keeps_the_namespace_terminating_until_it_is_removed() {
    let cluster = start().await;
    let client = cluster.client.clone();
    tokio::spawn(capstan_agents::namespace::run(client.clone()));
    let ns = "held";
    create_namespace(&client, ns).await;
    create::<ConfigMap>(
        &client,
        ns,
        json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
    )
    .await;
    create::<ConfigMap>(&client, ns, json!({"metadata": {"name": "plain"}})).await;
    delete_namespace(&client, ns).await;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    eventually("the namespace reporting the finalizer that holds it", || async {
        let n = namespaces.get(ns).await.map_err(|e| e.to_string())?;
        let fins = condition(&n, "NamespaceFinalizersRemaining").cloned();
        let content = condition(&n, "NamespaceContentRemaining").cloned();
        let plain_gone = configmaps.get_opt("plain").await.map_err(|e| e.to_string())?.is_none();
        let want_fins = (
            "True",
            Some("SomeFinalizerRemain"),
            Some("Some finalizers are remaining: example.com/hold in 1 resource instances"),
        );
        let want_content = (
            "True",
            Some("SomeResourcesRemain"),
            Some("Some resources are remaining: configmaps. has 1 resource instances"),
        );
        let got = |c: &Option<NamespaceCondition>| {
            c.as_ref()
                .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        };
        let matches = |c: &Option<NamespaceCondition>, w: (&str, Option<&str>, Option<&str>)| {
            got(c) == Some((w.0.into(), w.1.map(Into::into), w.2.map(Into::into)))
        };
        if plain_gone && matches(&fins, want_fins) && matches(&content, want_content) {
            Ok(n)
        } else {
            Err(format!(
                "plain gone: {plain_gone}; {:?} {:?}",
                got(&fins),
                got(&content)
            ))
        }
    })
    .await;
    let n = namespaces.get(ns).await.expect("the namespace");
    assert_eq!(phase(&n), Some("Terminating"));
    assert_eq!(
        n.spec.as_ref().and_then(|s| s.finalizers.clone()),
        Some(vec!["kubernetes".to_string()]),
        "the controller keeps its finalizer while content remains"
    );
    let ok = condition(&n, "NamespaceDeletionDiscoveryFailure").expect("discovery condition");
    assert_eq!(
        (ok.status.as_str(), ok.reason.as_deref()),
        ("False", Some("ResourcesDiscovered"))
    );
    let held = configmaps.get("held").await.expect("the held configmap");
    assert!(held.metadata.deletion_timestamp.is_some(), "deleted, but held");
    // Deleting it again answers with the namespace, still Terminating.
    let again = namespaces
        .delete(ns, &DeleteParams::default())
        .await
        .expect("delete again")
        .left()
        .expect("the namespace back");
    assert_eq!(phase(&again), Some("Terminating"));

    // The finalizer's owner lets go: the configmap, then the namespace, go.
    configmaps
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("remove the finalizer");
    wait_gone(&client, ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_finalize_subresource_lets_a_terminating_namespace_go() {
    // No namespace controller: the namespace stays Terminating until finalized by hand.
    let cluster = start().await;
    let client = cluster.client.clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create_namespace(&client, "manual").await;
    create::<ConfigMap>(&client, "manual", json!({"metadata": {"name": "inside"}})).await;
    let deleted = delete_namespace(&client, "manual").await;
    assert!(
        namespaces.get_opt("manual").await.expect("get").is_some(),
        "a namespace with its kubernetes finalizer stays"
    );

    // A stale resourceVersion is a conflict; the current one finalizes it.
    let mut stale = deleted.clone();
    stale.spec = Some(Default::default());
    stale.metadata.resource_version = Some("1".into());
    match namespaces
        .replace_subresource("finalize", "manual", &PostParams::default(), &stale)
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"), "{s:?}"),
        other => panic!("finalize at a stale resourceVersion: {other:?}"),
    }
    let mut bad = deleted.clone();
    bad.spec = Some(object(json!({"finalizers": ["custom"]})));
    match namespaces
        .replace_subresource("finalize", "manual", &PostParams::default(), &bad)
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 422, "{s:?}"),
        other => panic!("finalize with an unqualified finalizer: {other:?}"),
    }
    let mut done = deleted;
    done.spec = Some(object(json!({"finalizers": []})));
    let answer = namespaces
        .replace_subresource("finalize", "manual", &PostParams::default(), &done)
        .await
        .expect("finalize");
    assert_eq!(answer.name_any(), "manual");
    assert!(
        namespaces.get_opt("manual").await.expect("get").is_none(),
        "removed by the finalize"
    );

    // The namespaces every cluster has may not be deleted.
    match namespaces.delete("kube-system", &DeleteParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
            assert_eq!(
                s.message,
                "namespaces \"kube-system\" is forbidden: this namespace may not be deleted"
            );
        }
        other => panic!("delete kube-system: {other:?}"),
    }
    // Creating in a namespace that does not exist stays a 404 on the namespace.
    let nowhere: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    match nowhere
        .create(&PostParams::default(), &object(json!({"metadata": {"name": "x"}})))
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.message.as_str()), (404, "namespaces \"nowhere\" not found"))
        }
        other => panic!("create in a missing namespace: {other:?}"),
    }
}
