//! What every controller shares: per-key retry backoff, running a controller's stream of
//! results, and measuring its reconciles ([`instrumented`]).
//!
//! The metrics a reconcile is recorded in come from the controller-manager through a
//! task-local ([`with_metrics`]) rather than as a parameter of every controller's `run`:
//! the controllers run joined in one task (never spawned), so the one place that knows
//! whether metrics are wanted sets them for all, and a controller run alone (its tests)
//! records nothing.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;

use crate::error::AgentError;
use crate::metrics::ControllerMetrics;

tokio::task_local! {
    static METRICS: Option<ControllerMetrics>;
}

/// Runs `work` with its controllers' reconciles recorded in `metrics` (see
/// [`instrumented`]); None records nothing.
pub async fn with_metrics<F: Future>(metrics: Option<ControllerMetrics>, work: F) -> F::Output {
    METRICS.scope(metrics, work).await
}

/// `reconcile`, recording each call's result and duration as `controller`'s in the
/// metrics of the task it runs in ([`with_metrics`]). Wraps the reconcile function given
/// to kube-rs's `Controller::run`; its futures are polled in the controller's stream, so
/// inside that task.
pub fn instrumented<K, C, E, Fut>(
    controller: &'static str,
    mut reconcile: impl FnMut(Arc<K>, Arc<C>) -> Fut,
) -> impl FnMut(Arc<K>, Arc<C>) -> BoxFuture<'static, Result<Action, E>>
where
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
{
    move |object, context| {
        let metrics = METRICS.try_with(Clone::clone).ok().flatten();
        let reconciling = reconcile(object, context);
        match metrics {
            None => reconciling.boxed(),
            Some(metrics) => async move {
                let _in_flight = metrics.started(controller);
                let started = Instant::now();
                let result = reconciling.await;
                metrics.reconciled(controller, result.is_ok(), started.elapsed());
                result
            }
            .boxed(),
        }
    }
}

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

/// Requeues `key` after its next backoff delay, logging why.
pub fn retry_later(backoff: &Backoff, controller: &str, key: &str, error: &AgentError) -> Action {
    let delay = backoff.failed(key);
    tracing::warn!(controller, key, %error, ?delay, "reconciling failed");
    Action::requeue(delay)
}

/// What a [`run_per_namespace`] controller's reconcile is handed: its own state, and the
/// per-namespace backoff its failures are retried with.
pub struct PerNamespace<C> {
    pub work: C,
    pub backoff: Backoff,
}

/// Whether a namespace is being deleted (nothing is to be made in it).
pub fn terminating(namespace: &Namespace) -> bool {
    namespace.metadata.deletion_timestamp.is_some()
        || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// Runs `controller`, which keeps one object of kind `K` named `object` in every namespace,
/// until its future is dropped: namespaces are the reconciled objects, and a change to an
/// object of that name (a deletion, an edit) reconciles its namespace again; a failed
/// reconcile is retried with the namespace's [`Backoff`]. The ServiceAccount controller
/// and the root CA publisher are such controllers.
pub async fn run_per_namespace<K, C, Fut>(
    client: Client,
    controller: &'static str,
    object: &'static str,
    work: C,
    reconcile: impl FnMut(Arc<Namespace>, Arc<PerNamespace<C>>) -> Fut,
) where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    C: Send + Sync + 'static,
    Fut: Future<Output = Result<Action, AgentError>> + Send + 'static,
{
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let objects: Api<K> = Api::all(client);
    let context = Arc::new(PerNamespace {
        work,
        backoff: Backoff::default(),
    });
    let error_policy = move |namespace: Arc<Namespace>, error: &AgentError, context: Arc<PerNamespace<C>>| {
        retry_later(&context.backoff, controller, &namespace.name_any(), error)
    };
    let results = Controller::new(namespaces, watcher::Config::default())
        .watches(
            objects,
            watcher::Config::default().fields(&format!("metadata.name={object}")),
            |o: K| o.meta().namespace.clone().map(|ns| ObjectRef::new(&ns)),
        )
        .run(instrumented(controller, reconcile), error_policy, context);
    drive(controller, results).await;
}

/// Runs a controller's stream of results until its future is dropped (the stream ends
/// only then); errors are logged at debug level (each was handled by its error policy).
pub async fn drive<T, E: Display>(controller: &'static str, results: impl Stream<Item = Result<T, E>>) {
    results
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(controller, error = %e, "controller");
            }
        })
        .await;
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
