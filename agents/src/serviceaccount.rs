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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};

use crate::error::AgentError;

/// The account every namespace gets.
pub const DEFAULT_ACCOUNT: &str = "default";

/// Per-key exponential backoff for failed reconciles, client-go's default item rate
/// limiter: 5 ms doubled on each failure in a row, at most 1,000 s; a success forgets it.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1000);
    /// Keys tracked at most; beyond it the oldest failures are not remembered (a key
    /// then starts again from the base delay).
    const KEYS_MAX: usize = 100_000;

    /// The delay before `key` is tried again after one more failure.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self
            .failures
            .lock()
            .expect("invariant: no panics while the lock is held");
        if failures.len() >= Self::KEYS_MAX && !failures.contains_key(key) {
            failures.clear();
        }
        let n = failures.entry(key.to_owned()).or_insert(0);
        let delay = Self::BASE
            .saturating_mul(1u32.checked_shl(*n).unwrap_or(u32::MAX))
            .min(Self::MAX);
        *n = n.saturating_add(1);
        delay
    }

    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .expect("invariant: no panics while the lock is held")
            .remove(key);
    }
}

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
    Controller::new(namespaces, watcher::Config::default())
        .watches(
            accounts,
            watcher::Config::default().fields(&format!("metadata.name={DEFAULT_ACCOUNT}")),
            |account| account.metadata.namespace.map(|ns| ObjectRef::new(&ns)),
        )
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "serviceaccount controller");
            }
        })
        .await;
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
    let name = namespace.name_any();
    let delay = context.backoff.failed(&name);
    tracing::warn!(namespace = %name, %error, ?delay, "reconciling the default service account failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_key_up_to_its_cap_and_forgets_on_success() {
        let b = Backoff::default();
        assert_eq!(b.failed("a"), Duration::from_millis(5));
        assert_eq!(b.failed("a"), Duration::from_millis(10));
        assert_eq!(b.failed("a"), Duration::from_millis(20));
        assert_eq!(b.failed("b"), Duration::from_millis(5), "keys are independent");
        for _ in 0..40 {
            b.failed("a");
        }
        assert_eq!(b.failed("a"), Duration::from_secs(1000));
        b.succeeded("a");
        assert_eq!(b.failed("a"), Duration::from_millis(5));
    }
}
