//! What every controller shares: the runner that builds and runs a controller with its
//! queue measured ([`Queued`]), per-key retry backoff, and measuring its reconciles
//! (`instrumented`).
//!
//! The metrics a reconcile is recorded in come from the controller-manager through a
//! task-local ([`with_metrics`]) rather than as a parameter of every controller's `run`:
//! the controllers run joined in one task (never spawned; each reconcile's own task is
//! handed the metrics as it is made), so the one place that knows whether metrics are
//! wanted sets them for all, and a controller run alone (its tests) records nothing.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{BoxStream, SelectAll};
use futures::TryStreamExt;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, trigger_owners, trigger_self, trigger_with, Action, ReconcileRequest};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::error::AgentError;
use crate::metrics::ControllerMetrics;

tokio::task_local! {
    static METRICS: Option<ControllerMetrics>;
}

/// Runs `work` with its controllers' reconciles recorded in `metrics` (see
/// [`Queued::run`]); None records nothing.
pub async fn with_metrics<F: Future>(metrics: Option<ControllerMetrics>, work: F) -> F::Output {
    METRICS.scope(metrics, work).await
}

/// `reconcile`, recording each call's result and duration as `controller`'s in the
/// metrics of the task that calls it ([`with_metrics`]). Wraps the reconcile function of
/// [`Queued::run`]: it is called in the controller's task, where the task-local is read,
/// and the future it returns, which carries the metrics with it, runs on a task of its own
/// ([`Spawned`]).
fn instrumented<K, C, E, Fut>(
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
    Queued::new(namespaces, watcher::Config::default())
        .watches(
            objects,
            watcher::Config::default().fields(&format!("metadata.name={object}")),
            |o: K| o.meta().namespace.clone().map(|ns| ObjectRef::new(&ns)),
        )
        .run(controller, reconcile, error_policy, context)
        .await;
}

/// A controller: kube-rs's `Controller` builder (`new`, `owns`, `watches`, `with_config`,
/// `store`, `run`) over kube-rs's `applier`, with its queue made visible.
///
/// kube-rs's `Controller` keeps its triggers and its scheduler to itself, so its queue
/// cannot be measured. This builder makes the same trigger streams (the object's own
/// watch through a reflector, owners of owned objects, mapped watches) and hands them to
/// the same `applier`, and on the way counts the queue as client-go's work queue does:
/// an object is *waiting* from a trigger until its reconcile starts, counted once however
/// many triggers arrive meanwhile (`workqueue_depth`, `workqueue_adds_total`). A
/// reconcile asked for again while it runs waits, as kube-rs holds it until the running
/// one ends. Requeues a reconcile asks for (`Action::requeue`, the error policy) are
/// timed, not waiting, and are not counted, as client-go's delaying queue does not count
/// them before they are due.
///
/// Reconciles run on tasks of their own (as `Controller::run` does), aborted when the
/// controller's future is dropped (a leader that lost its lease stops its work).
pub struct Queued<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    reader: Store<K>,
    triggers: SelectAll<BoxStream<'static, Result<ReconcileRequest<K>, watcher::Error>>>,
    config: controller::Config,
}

impl<K> Queued<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    /// Reconciles objects of `api` (those `config` selects), triggered by their changes.
    pub fn new(api: Api<K>, config: watcher::Config) -> Queued<K> {
        let (reader, writer) = reflector::store();
        let own = trigger_self(
            reflector::reflector(writer, watcher::watcher(api, config))
                .default_backoff()
                .applied_objects(),
            (),
        )
        .boxed();
        let mut triggers = SelectAll::new();
        triggers.push(own);
        Queued {
            reader,
            triggers,
            config: controller::Config::default(),
        }
    }

    /// Also triggered by changes of the `Child` objects (all namespaces) they own, by
    /// owner reference; only the children's metadata is watched.
    pub fn owns<Child>(mut self, client: Client, config: watcher::Config) -> Queued<K>
    where
        Child: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    {
        let api: Api<PartialObjectMeta<Child>> = Api::all(client);
        let children = watcher::watcher(api, config).default_backoff().touched_objects();
        self.triggers.push(trigger_owners(children, (), ()).boxed());
        self
    }

    /// Also triggered by changes of `Other` objects, for the objects `mapper` names.
    pub fn watches<Other, I>(
        mut self,
        api: Api<Other>,
        config: watcher::Config,
        mapper: impl Fn(Other) -> I + Send + Sync + 'static,
    ) -> Queued<K>
    where
        Other: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
        I: IntoIterator<Item = ObjectRef<K>> + 'static,
        I::IntoIter: Send,
    {
        let others = watcher::watcher(api, config).default_backoff().touched_objects();
        self.triggers.push(trigger_with(others, mapper).boxed());
        self
    }

    pub fn with_config(mut self, config: controller::Config) -> Queued<K> {
        self.config = config;
        self
    }

    /// The controller's cache of its objects.
    pub fn store(&self) -> Store<K> {
        self.reader.clone()
    }

    /// Runs `reconcile` until the future is dropped, each reconcile on a task of its own,
    /// its result and duration recorded as `controller`'s in the metrics of
    /// [`with_metrics`], if any.
    pub async fn run<C, Fut>(
        self,
        controller: &'static str,
        reconcile: impl FnMut(Arc<K>, Arc<C>) -> Fut,
        error_policy: impl Fn(Arc<K>, &AgentError, Arc<C>) -> Action,
        context: Arc<C>,
    ) where
        C: Send + Sync + 'static,
        Fut: Future<Output = Result<Action, AgentError>> + Send + 'static,
    {
        let metrics = METRICS.try_with(Clone::clone).ok().flatten();
        let queue = WaitingSet::new(metrics.as_ref(), controller);
        let triggered = queue.clone();
        let triggers = self.triggers.inspect_ok(move |request| triggered.add(&request.obj_ref));
        let started = queue.clone();
        let mut reconcile = instrumented(controller, reconcile);
        let reconciler = move |object: Arc<K>, context: Arc<C>| {
            started.remove(&ObjectRef::from_obj(object.as_ref()));
            // The applier calls this inside the reconcile's span ("reconciling object",
            // its reference and reason): the task carries it on.
            Spawned(tokio::spawn(tracing::Instrument::in_current_span(reconcile(
                object, context,
            ))))
        };
        let results = controller::applier(reconciler, error_policy, context, self.reader, triggers, self.config)
            .inspect(move |result| {
                // A trigger for an object gone from the cache never reaches a reconcile.
                if let Err(controller::Error::ObjectNotFound(gone)) = result {
                    queue.remove_key(gone.namespace.as_deref(), &gone.name);
                }
            });
        drive(controller, results).await;
    }
}

/// The objects of one controller waiting for a reconcile, and the gauge that shows how
/// many (see [`Queued`]). Bounded by the objects the controller watches.
#[derive(Clone)]
struct WaitingSet {
    keys: Arc<Mutex<std::collections::HashSet<String>>>,
    depth: Option<prometheus_client::metrics::gauge::Gauge>,
    adds: Option<prometheus_client::metrics::counter::Counter>,
}

impl WaitingSet {
    fn new(metrics: Option<&ControllerMetrics>, controller: &'static str) -> WaitingSet {
        WaitingSet {
            keys: Arc::default(),
            depth: metrics.map(|m| m.depth(controller)),
            adds: metrics.map(|m| m.adds(controller)),
        }
    }

    fn key(namespace: Option<&str>, name: &str) -> String {
        format!("{}/{name}", namespace.unwrap_or_default())
    }

    fn add<K: Resource>(&self, object: &ObjectRef<K>) {
        let mut keys = self.keys.lock().expect("invariant: no panics while the lock is held");
        if keys.insert(Self::key(object.namespace.as_deref(), &object.name)) {
            if let Some(adds) = &self.adds {
                adds.inc();
            }
        }
        self.show(keys.len());
    }

    fn remove<K: Resource>(&self, object: &ObjectRef<K>) {
        self.remove_key(object.namespace.as_deref(), &object.name);
    }

    fn remove_key(&self, namespace: Option<&str>, name: &str) {
        let mut keys = self.keys.lock().expect("invariant: no panics while the lock is held");
        keys.remove(&Self::key(namespace, name));
        self.show(keys.len());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys
            .lock()
            .expect("invariant: no panics while the lock is held")
            .len()
    }

    fn show(&self, len: usize) {
        if let Some(depth) = &self.depth {
            depth.set(i64::try_from(len).unwrap_or(i64::MAX));
        }
    }
}

/// A reconcile on its own task: aborted when dropped, a panic becoming an error.
struct Spawned(tokio::task::JoinHandle<Result<Action, AgentError>>);

impl Future for Spawned {
    type Output = Result<Action, AgentError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|joined| joined.unwrap_or_else(|e| Err(AgentError::Task(e.to_string()))))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs a controller's stream of results until its future is dropped (the stream ends
/// only then); errors are logged at debug level (each was handled by its error policy).
async fn drive<T, E: Display>(controller: &'static str, results: impl Stream<Item = Result<T, E>>) {
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
    fn an_object_waits_once_from_its_first_trigger_until_its_reconcile_starts() {
        use k8s_openapi::api::apps::v1::ReplicaSet;
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = ControllerMetrics::new(&mut registry);
        let waiting = WaitingSet::new(Some(&metrics), "replicaset");
        let a = ObjectRef::<ReplicaSet>::new("a").within("ns");
        let b = ObjectRef::<ReplicaSet>::new("b").within("ns");
        let series = |text: &str, name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}{{name=\"replicaset\"}} ")))
                .map(str::to_owned)
        };
        waiting.add(&a);
        waiting.add(&a);
        waiting.add(&b);
        assert_eq!(waiting.len(), 2, "a trigger of a waiting object adds nothing");
        let text = crate::metrics::encode(&registry);
        assert_eq!(series(&text, "workqueue_depth").as_deref(), Some("2"), "{text}");
        assert_eq!(series(&text, "workqueue_adds_total").as_deref(), Some("2"), "{text}");
        waiting.remove(&a);
        waiting.remove_key(Some("ns"), "b");
        waiting.remove_key(Some("ns"), "never-added");
        assert_eq!(waiting.len(), 0);
        waiting.add(&a);
        let text = crate::metrics::encode(&registry);
        assert_eq!(series(&text, "workqueue_depth").as_deref(), Some("1"), "{text}");
        assert_eq!(series(&text, "workqueue_adds_total").as_deref(), Some("3"), "{text}");
        // Without metrics it still keeps count (and records nothing).
        let bare = WaitingSet::new(None, "replicaset");
        bare.add(&a);
        assert_eq!(bare.len(), 1);
    }

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
