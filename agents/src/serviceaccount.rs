//! The ServiceAccount controller: every namespace has a ServiceAccount named `default`
//! (pods that name none run as it), created when the namespace appears and again when
//! someone deletes it, as upstream's `serviceaccount-controller` does.
//!
//! Built on kube-rs's controller runtime ([`runtime::run_per_namespace`]): a watch of
//! Namespaces (the reconciled objects) and of ServiceAccounts named `default` (a deleted
//! one triggers its namespace), a work queue that runs one reconcile per namespace at a
//! time, and [`runtime::Backoff`] for failures.
//! Namespaces being deleted are left alone.
//!
//! Left out: the token Secrets that Kubernetes before 1.24 created for each account.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};

use crate::error::AgentError;
use crate::runtime::{self, PerNamespace};

/// The account every namespace gets.
pub const DEFAULT_ACCOUNT: &str = "default";

/// Runs the controller until its future is dropped.
pub async fn run(client: Client) {
    runtime::run_per_namespace::<ServiceAccount, _, _>(
        client.clone(),
        "serviceaccount",
        DEFAULT_ACCOUNT,
        client,
        reconcile,
    )
    .await;
}

async fn reconcile(namespace: Arc<Namespace>, context: Arc<PerNamespace<Client>>) -> Result<Action, AgentError> {
    let name = namespace.name_any();
    if runtime::terminating(&namespace) {
        return Ok(Action::await_change());
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(context.work.clone(), &name);
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
