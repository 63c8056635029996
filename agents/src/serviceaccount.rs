//! The ServiceAccount controller: every namespace has a ServiceAccount named `default`
//! (pods that name none run as it), created when the namespace appears and again when
//! someone deletes it, as upstream's `serviceaccount-controller` does.
//!
//! Built on kube-rs's controller runtime: a watch of Namespaces (the reconciled objects)
//! and of ServiceAccounts named `default` (a deleted one triggers its namespace), a work
//! queue that runs one reconcile per namespace at a time, and [`Backoff`] for failures.
//! Namespaces being deleted are left alone.
//!
//! Left out: the token Secrets that Kubernetes before 1.24 created for each account.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};

use crate::error::AgentError;
use crate::runtime::{self, retry_later, Backoff};

/// The account every namespace gets.
pub const DEFAULT_ACCOUNT: &str = "default";

struct Context {
    client: Client,
    backoff: Backoff,
}

/// Runs the controller until its future is dropped.
pub async fn run(client: Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let accounts: Api<ServiceAccount> = Api::all(client.clone());
    let context = Arc::new(Context {
        client,
        backoff: Backoff::default(),
    });
    let results = Controller::new(namespaces, watcher::Config::default())
        .watches(
            accounts,
            watcher::Config::default().fields(&format!("metadata.name={DEFAULT_ACCOUNT}")),
            |account| account.metadata.namespace.map(|ns| ObjectRef::new(&ns)),
        )
        .run(
            runtime::instrumented("serviceaccount", reconcile),
            error_policy,
            context,
        );
    runtime::drive("serviceaccount", results).await;
}

async fn reconcile(namespace: Arc<Namespace>, context: Arc<Context>) -> Result<Action, AgentError> {
    let name = namespace.name_any();
    let terminating = namespace.metadata.deletion_timestamp.is_some()
        || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(context.client.clone(), &name);
    if accounts.get_opt(DEFAULT_ACCOUNT).await?.is_none() {
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT_ACCOUNT.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => tracing::info!(namespace = %name, "created the default service account"),
            // Created meanwhile, or the namespace went away: nothing to do.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    context.backoff.succeeded(&name);
    Ok(Action::await_change())
}

fn error_policy(namespace: Arc<Namespace>, error: &AgentError, context: Arc<Context>) -> Action {
    retry_later(&context.backoff, "serviceaccount", &namespace.name_any(), error)
}
