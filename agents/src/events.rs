//! Kubernetes Events (`core/v1`), written as client-go's legacy recorder
//! (`tools/record`) writes them for upstream's controllers and the scheduler.
//!
//! An event goes to the namespace of the object it is about (`default` for
//! cluster-scoped objects), named `<involved name>.` plus a suffix the API server
//! generates, with `source.component` and `reportingComponent` the component's name,
//! `count: 1` and `firstTimestamp = lastTimestamp` = when it was recorded.
//! `reportingInstance` stays empty: client-go fills it from `source.host`, which
//! controllers do not set.
//!
//! Recording is best effort everywhere: events are informational, so a failed write is
//! logged at debug level and never fails the caller. Two ways to record:
//! - [`record`] writes one event and returns when the write is done (for callers that are
//!   not in a hurry: the node lifecycle controller, the scheduler's unschedulable report);
//! - a [`Recorder`] hands events to a background writer through a bounded queue, so a
//!   controller's reconcile never waits for them. As upstream's broadcaster (1,000 queued
//!   events, dropped when full), an event that finds the queue full is dropped.
//!
//! Left out: upstream's event correlator (identical events within 10 minutes merged into
//! one with a growing `count`, similar ones aggregated, a per-object spam filter), so a
//! failure that repeats records one event per occurrence (retries back off, so these
//! stay few).

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use tokio::sync::mpsc;

/// The type of an event about something that went as it should.
pub const NORMAL: &str = "Normal";
/// The type of an event about something that went wrong.
pub const WARNING: &str = "Warning";

/// Events a [`Recorder`] holds before dropping new ones (upstream's `maxQueuedEvents`).
pub const QUEUED_MAX: usize = 1000;
/// Event writes a [`Recorder`] has in flight at most.
const WRITES_IN_FLIGHT_MAX: usize = 8;

/// A reference to `object`, as upstream's `reference.GetReference`: apiVersion, kind,
/// name, namespace, uid and resourceVersion.
pub fn reference<K: Resource<DynamicType = ()>>(object: &K) -> ObjectReference {
    let meta = object.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

/// The event about `involved` and the namespace it goes to, stamped `now`.
pub fn new_event(
    involved: ObjectReference,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
    now: Timestamp,
) -> (String, Event) {
    let namespace = involved
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let now = Time(now);
    let name = involved.name.clone().unwrap_or_default();
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}.")),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: involved,
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some(component.into()),
        ..Event::default()
    };
    (namespace, event)
}

async fn write(client: &Client, namespace: &str, event: &Event) {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    if let Err(e) = events.create(&PostParams::default(), event).await {
        tracing::debug!(
            reason = event.reason.as_deref().unwrap_or_default(),
            object = event.involved_object.name.as_deref().unwrap_or_default(),
            error = %e,
            "could not record an event"
        );
    }
}

/// Records an event about `involved` now, best effort (a failure is logged).
pub async fn record(
    client: &Client,
    involved: ObjectReference,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let (namespace, event) = new_event(involved, type_, reason, message, component, Timestamp::now());
    write(client, &namespace, &event).await;
}

/// Records a component's events without making it wait: [`Recorder::record`] queues the
/// event (at most [`QUEUED_MAX`]) for a background task that writes them, a few at a
/// time. The task ends once every clone of the recorder is dropped and the queue is
/// written out.
#[derive(Clone)]
pub struct Recorder {
    component: &'static str,
    queue: mpsc::Sender<(String, Event)>,
}

impl Recorder {
    /// A recorder for `component` (upstream's `source.component`, e.g.
    /// `replicaset-controller`). Spawns its writer, so it must be called on a Tokio runtime.
    pub fn new(client: Client, component: &'static str) -> Recorder {
        let (queue, receiver) = mpsc::channel::<(String, Event)>(QUEUED_MAX);
        let queued = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        tokio::spawn(async move {
            queued
                .for_each_concurrent(WRITES_IN_FLIGHT_MAX, |(namespace, event)| {
                    let client = client.clone();
                    async move { write(&client, &namespace, &event).await }
                })
                .await;
        });
        Recorder { component, queue }
    }

    /// Queues an event about `involved`, stamped now; dropped (and logged) when the queue
    /// is full.
    pub fn record(&self, involved: ObjectReference, type_: &str, reason: &str, message: &str) {
        let item = new_event(involved, type_, reason, message, self.component, Timestamp::now());
        if let Err(e) = self.queue.try_send(item) {
            let (_, event) = e.into_inner();
            tracing::debug!(
                component = self.component,
                reason = event.reason.as_deref().unwrap_or_default(),
                object = event.involved_object.name.as_deref().unwrap_or_default(),
                "too many queued events: dropped one"
            );
        }
    }
}

/// An error as upstream's controllers print it into event messages (`%v` of an API
/// error is its `Status.message`).
pub fn error_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// Whether the API refused a create because the namespace is being deleted (upstream's
/// `HasStatusCause(err, NamespaceTerminatingCause)`): upstream's controllers record no
/// event for those, as every create in that namespace will fail from now on.
pub fn namespace_terminating(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    #[test]
    fn references_carry_what_get_reference_sets() {
        let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {
            "name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "42"}}))
        .expect("replicaset");
        let r = reference(&rs);
        assert_eq!(r.api_version.as_deref(), Some("apps/v1"));
        assert_eq!(r.kind.as_deref(), Some("ReplicaSet"));
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.namespace.as_deref(), Some("shop"));
        assert_eq!(r.uid.as_deref(), Some("u-1"));
        assert_eq!(r.resource_version.as_deref(), Some("42"));
        assert_eq!(r.field_path, None);
    }

    #[test]
    fn events_go_to_the_objects_namespace_or_default() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let rs: ReplicaSet =
            serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "shop"}})).expect("replicaset");
        let (ns, e) = new_event(
            reference(&rs),
            NORMAL,
            "SuccessfulCreate",
            "Created pod: web-x",
            "rc",
            now,
        );
        assert_eq!(ns, "shop");
        assert_eq!(e.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(e.metadata.generate_name.as_deref(), Some("web."));
        assert_eq!(e.type_.as_deref(), Some("Normal"));
        assert_eq!(e.reason.as_deref(), Some("SuccessfulCreate"));
        assert_eq!(e.message.as_deref(), Some("Created pod: web-x"));
        assert_eq!(e.source.and_then(|s| s.component).as_deref(), Some("rc"));
        assert_eq!(e.reporting_component.as_deref(), Some("rc"));
        assert_eq!(e.count, Some(1));
        assert_eq!(e.first_timestamp, Some(Time(now)));
        assert_eq!(e.last_timestamp, Some(Time(now)));
        assert_eq!(e.event_time, None, "a legacy event: no eventTime");

        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).expect("node");
        let (ns, e) = new_event(reference(&node), WARNING, "R", "m", "c", now);
        assert_eq!(ns, "default", "cluster-scoped objects' events go to default");
        assert_eq!(e.involved_object.namespace, None);
    }

    fn api_error(status: serde_json::Value) -> kube::Error {
        kube::Error::Api(Box::new(serde_json::from_value(status).expect("status")))
    }

    #[test]
    fn api_errors_print_their_message_and_namespace_termination_is_recognised() {
        let invalid = api_error(json!({"status": "Failure", "code": 422, "reason": "Invalid",
            "message": "Pod \"p\" is invalid: spec.containers: Required value"}));
        assert_eq!(
            error_message(&invalid),
            "Pod \"p\" is invalid: spec.containers: Required value"
        );
        assert!(!namespace_terminating(&invalid));
        let terminating = api_error(json!({"status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "pods is forbidden: unable to create new content in namespace x because it is being terminated",
            "details": {"kind": "pods", "causes": [{"reason": "NamespaceTerminating",
                "message": "namespace x is being terminated", "field": "metadata.namespace"}]}}));
        assert!(namespace_terminating(&terminating));
    }
}
