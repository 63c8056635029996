//! The root CA publisher: every namespace has a ConfigMap `kube-root-ca.crt` whose
//! `ca.crt` is the cluster's CA certificate, so that a pod can check the API server's
//! certificate (the ServiceAccount admission mounts it beside the pod's token), as
//! upstream's `root-ca-cert-publisher` keeps it.
//!
//! Built as the [`crate::serviceaccount`] controller is ([`runtime::run_per_namespace`]):
//! a watch of Namespaces (the reconciled objects) and of the ConfigMaps of that name (one changed or deleted
//! triggers its namespace); the ConfigMap is created when missing and its data put back
//! when someone changed it. Namespaces being deleted are left alone. The controller runs
//! only when the controller manager is given the CA (`--root-ca-file`, or the cluster's
//! own in secure mode): a cluster without TLS has no CA to publish.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};

use crate::error::AgentError;
use crate::runtime::{self, PerNamespace};

/// The ConfigMap every namespace gets.
pub const CONFIG_MAP: &str = "kube-root-ca.crt";
/// Its key.
pub const KEY: &str = "ca.crt";
/// Upstream's description annotation.
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Runs the controller, publishing `ca_pem`, until its future is dropped.
pub async fn run(client: Client, ca_pem: String) {
    let context = Context {
        client: client.clone(),
        ca_pem,
    };
    runtime::run_per_namespace::<ConfigMap, _, _>(client, CONTROLLER, CONFIG_MAP, context, reconcile).await;
}

/// The controller's name (upstream's).
const CONTROLLER: &str = "root-ca-cert-publisher";

struct Context {
    client: Client,
    ca_pem: String,
}

/// The ConfigMap as it should be, on top of `existing` (its other fields kept).
fn desired(existing: Option<ConfigMap>, ca_pem: &str) -> ConfigMap {
    let mut cm = existing.unwrap_or_else(|| ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIG_MAP.to_owned()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    });
    cm.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert("kubernetes.io/description".into(), DESCRIPTION.into());
    cm.data = Some(BTreeMap::from([(KEY.to_owned(), ca_pem.to_owned())]));
    cm.binary_data = None;
    cm
}

async fn reconcile(namespace: Arc<Namespace>, context: Arc<PerNamespace<Context>>) -> Result<Action, AgentError> {
    let name = namespace.name_any();
    if runtime::terminating(&namespace) {
        return Ok(Action::await_change());
    }
    let (backoff, context) = (&context.backoff, &context.work);
    let config_maps: Api<ConfigMap> = Api::namespaced(context.client.clone(), &name);
    let existing = config_maps.get_opt(CONFIG_MAP).await?;
    let written = match existing {
        None => config_maps
            .create(&PostParams::default(), &desired(None, &context.ca_pem))
            .await
            .map(|_| tracing::info!(namespace = %name, "published the root CA")),
        Some(cm) => {
            let want = desired(Some(cm.clone()), &context.ca_pem);
            if want.data == cm.data && want.binary_data == cm.binary_data {
                Ok(())
            } else {
                config_maps
                    .replace(CONFIG_MAP, &PostParams::default(), &want)
                    .await
                    .map(|_| tracing::info!(namespace = %name, "put the root CA back"))
            }
        }
    };
    match written {
        Ok(()) => {}
        // Written meanwhile (the watch brings us back), or the namespace went away.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    backoff.succeeded(&name);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_map_is_put_back_and_keeps_what_else_it_has() {
        let fresh = desired(None, "PEM");
        assert_eq!(fresh.metadata.name.as_deref(), Some(CONFIG_MAP));
        assert_eq!(fresh.data, Some(BTreeMap::from([(KEY.to_owned(), "PEM".to_owned())])));
        let mut changed = fresh.clone();
        changed.data = Some(BTreeMap::from([
            (KEY.to_owned(), "forged".to_owned()),
            ("x".into(), "y".into()),
        ]));
        changed.metadata.labels = Some(BTreeMap::from([("team".into(), "a".into())]));
        let mended = desired(Some(changed), "PEM");
        assert_eq!(mended.data, fresh.data, "only the CA is published");
        assert_eq!(
            mended.metadata.labels,
            Some(BTreeMap::from([("team".into(), "a".into())]))
        );
    }
}
