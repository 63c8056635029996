//! The cache-fed streams of the mesh API: Watch (a REST watch, one message per event)
//! and NodeAssignments (the pods bound to one node).
//!
//! Both are one watch-cache subscription and one task per stream. The task sends the
//! subscription's initial state (objects as fresh as a quorum read, or the events
//! replayed from the cache's window after a resourceVersion), then forwards the live
//! changes that concern its client, with bookmarks, into a queue of
//! [`OUT_QUEUE_MESSAGES`] that tonic drains as HTTP/2 flow control allows. A client
//! that does not read blocks only its task: the subscription's queue fills, the cache
//! drops it as it drops slow REST watchers, and the stream ends with `UNAVAILABLE` once
//! the client has read what was queued; it resumes from the last `resource_version` it
//! received.
//!
//! Which changes concern a stream is decided as for a REST watch with a selector: an
//! object that starts matching is added, one that stops matching is deleted (at the
//! revision of the change), one that keeps matching is modified. For a node's
//! assignments the selection is `spec.nodeName == node` (a pod being bound arrives as
//! an UPSERT, a deleted pod leaves as a DELETE).
//!
//! Left out: the REST watch's Table output and `sendInitialEvents`; the assignment
//! stream sends no separate message for a pod's graceful deletion starting (it is an
//! UPSERT whose pod carries `metadata.deletionTimestamp`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use capstan_proto::mesh::{assignment, watch_event, Assignment, NodeAssignmentsRequest, WatchEvent, WatchRequest};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{bad_request, status_of};
use crate::cache::{Event, Initial, Message, Subscription};
use crate::error::ApiError;
use crate::handlers::{collection_range, Api, Selectors};
use crate::http::{Params, Target};
use crate::object::{self, set_resource_version};
use crate::resources::ResourceType;

/// Messages queued for one stream between its task and tonic. Small: the cache's
/// queue behind it is the one that absorbs bursts (and decides when a stream is too
/// slow).
pub const OUT_QUEUE_MESSAGES: usize = 64;
/// Longest `timeout_seconds` a Watch may ask for (0 asks for none).
const WATCH_TIMEOUT_MAX_S: i64 = 24 * 3600;

/// A server stream of the mesh API.
pub type Stream<T> = tokio_stream::wrappers::ReceiverStream<Result<T, tonic::Status>>;

/// How one change of a watched object looks to one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Added,
    Modified,
    Deleted,
}

/// What one event is for a stream selecting objects with `selects`: the change and
/// the object's JSON (the event's own encoding, shared by every stream, unless the
/// object left the selection and goes out as its previous state).
fn change_for(ev: &Event, selects: &dyn Fn(&Value) -> bool) -> Option<(Change, Bytes)> {
    let prev_ok = ev.prev.as_ref().is_some_and(|p| selects(p));
    if ev.deleted {
        return prev_ok.then(|| (Change::Deleted, ev.object_json()));
    }
    match (prev_ok, selects(&ev.obj)) {
        (false, true) => Some((Change::Added, ev.object_json())),
        (true, true) => Some((Change::Modified, ev.object_json())),
        (true, false) => {
            // Leaves the selection: deleted for this stream, at this revision.
            let mut p = ev.prev.as_deref().cloned().unwrap_or(Value::Null);
            set_resource_version(&mut p, ev.rev);
            Some((Change::Deleted, Bytes::from(serde_json::to_vec(&p).unwrap_or_default())))
        }
        (false, false) => None,
    }
}

/// What a stream sends, and to whom it applies.
trait Feed: Send + Sync + 'static {
    type Msg: Send + 'static;
    fn selects(&self, obj: &Value) -> bool;
    fn change(&self, change: Change, object: Bytes, rev: i64) -> Self::Msg;
    /// The message after the initial objects (none for a resumed stream).
    fn snapshot_end(&self, rev: i64) -> Option<Self::Msg>;
    /// A bookmark at `rev`, if this stream gets them.
    fn bookmark(&self, rev: i64) -> Option<Self::Msg>;
}

struct WatchFeed {
    rt: &'static ResourceType,
    sel: Selectors,
    bookmarks: bool,
}

fn watch_event(t: watch_event::Type, object: Bytes, rev: i64) -> WatchEvent {
    WatchEvent {
        r#type: t as i32,
        object,
        resource_version: if rev > 0 { rev.to_string() } else { String::new() },
    }
}

impl Feed for WatchFeed {
    type Msg = WatchEvent;

    fn selects(&self, obj: &Value) -> bool {
        self.sel.matches(obj)
    }

    fn change(&self, change: Change, object: Bytes, rev: i64) -> WatchEvent {
        let t = match change {
            Change::Added => watch_event::Type::Added,
            Change::Modified => watch_event::Type::Modified,
            Change::Deleted => watch_event::Type::Deleted,
        };
        watch_event(t, object, rev)
    }

    fn snapshot_end(&self, _rev: i64) -> Option<WatchEvent> {
        None
    }

    fn bookmark(&self, rev: i64) -> Option<WatchEvent> {
        self.bookmarks.then(|| {
            let obj = json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(),
                "metadata": {"resourceVersion": rev.to_string()}});
            watch_event(watch_event::Type::Bookmark, Bytes::from(obj.to_string()), rev)
        })
    }
}

struct NodeFeed {
    node: String,
}

fn assignment(t: assignment::Type, pod: Bytes, rev: i64) -> Assignment {
    Assignment {
        r#type: t as i32,
        pod,
        resource_version: rev.to_string(),
    }
}

impl Feed for NodeFeed {
    type Msg = Assignment;

    fn selects(&self, pod: &Value) -> bool {
        pod["spec"]["nodeName"].as_str() == Some(self.node.as_str())
    }

    fn change(&self, change: Change, pod: Bytes, rev: i64) -> Assignment {
        let t = match change {
            Change::Added | Change::Modified => assignment::Type::Upsert,
            Change::Deleted => assignment::Type::Delete,
        };
        assignment(t, pod, rev)
    }

    fn snapshot_end(&self, rev: i64) -> Option<Assignment> {
        Some(assignment(assignment::Type::SnapshotEnd, Bytes::new(), rev))
    }

    fn bookmark(&self, rev: i64) -> Option<Assignment> {
        // Always: most pod changes concern other nodes, and without bookmarks an idle
        // node's position would fall out of the cache's window.
        Some(assignment(assignment::Type::Bookmark, Bytes::new(), rev))
    }
}

fn rv_of(obj: &Value) -> i64 {
    object::meta_str(obj, "resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The message one event is for the stream of `feed`, if any.
fn message_for<F: Feed>(feed: &F, ev: &Event) -> Option<F::Msg> {
    let (change, bytes) = change_for(ev, &|o| feed.selects(o))?;
    Some(feed.change(change, bytes, ev.rev))
}

/// Starts the task that feeds one stream from `sub`.
fn spawn<F: Feed>(
    mut sub: Subscription,
    feed: F,
    every: Duration,
    deadline: Option<Instant>,
    mut stop: watch::Receiver<bool>,
) -> Stream<F::Msg> {
    let (tx, rx) = mpsc::channel(OUT_QUEUE_MESSAGES);
    tokio::spawn(async move {
        let mut last_rev = sub.rev;
        let initial = std::mem::replace(&mut sub.initial, Initial::Objects(Vec::new()));
        match initial {
            Initial::Objects(objs) => {
                for o in objs.into_iter().filter(|o| feed.selects(o)) {
                    let bytes = Bytes::from(serde_json::to_vec(&*o).unwrap_or_default());
                    if tx.send(Ok(feed.change(Change::Added, bytes, rv_of(&o)))).await.is_err() {
                        return;
                    }
                }
                if let Some(end) = feed.snapshot_end(last_rev) {
                    if tx.send(Ok(end)).await.is_err() {
                        return;
                    }
                }
            }
            Initial::Events(evs) => {
                for ev in evs {
                    last_rev = last_rev.max(ev.rev);
                    let Some(msg) = message_for(&feed, &ev) else { continue };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
            }
        }
        let every = every.max(Duration::from_millis(10));
        let mut bookmark = tokio::time::interval_at(Instant::now() + every, every);
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        loop {
            let msg = tokio::select! {
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => return,
                _ = tx.closed() => return,
                _ = stop.changed() => {
                    let _ = tx.send(Err(tonic::Status::unavailable("the server is shutting down"))).await;
                    return;
                }
                _ = bookmark.tick() => {
                    if let Some(b) = feed.bookmark(last_rev) {
                        if tx.send(Ok(b)).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                m = sub.rx.recv() => m,
            };
            match msg {
                None => {
                    // Dropped as too slow, or the cache restarted.
                    let _ = tx
                        .send(Err(tonic::Status::unavailable(format!(
                            "the stream fell behind or the watch cache restarted: resume from resource_version {last_rev}"
                        ))))
                        .await;
                    return;
                }
                Some(Message::Progress(rev)) => last_rev = last_rev.max(rev),
                Some(Message::Event(ev)) => {
                    last_rev = last_rev.max(ev.rev);
                    let Some(msg) = message_for(&feed, &ev) else { continue };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A stream of one ERROR event carrying `e`'s Status, as REST ends a watch it cannot
/// serve.
fn error_stream(e: &ApiError) -> Stream<WatchEvent> {
    let (tx, rx) = mpsc::channel(1);
    let status = Bytes::from(serde_json::to_vec(&e.status()).unwrap_or_default());
    // The channel has room for this one message.
    let _ = tx.try_send(Ok(watch_event(watch_event::Type::Error, status, 0)));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// `Watch`: a REST watch of `rt` as a stream of messages.
pub(super) async fn watch(
    api: &Arc<Api>,
    rt: &'static ResourceType,
    req: WatchRequest,
    stop: watch::Receiver<bool>,
) -> Result<Stream<WatchEvent>, tonic::Status> {
    let r = req.resource.unwrap_or_default();
    let mut q = std::collections::HashMap::new();
    q.insert("labelSelector".to_string(), req.label_selector);
    q.insert("fieldSelector".to_string(), req.field_selector);
    let sel = Selectors::parse(rt, &Params::new(q)).map_err(|e| status_of(&e))?;
    let t = Target {
        rt,
        namespace: (rt.namespaced && !r.namespace.is_empty()).then_some(r.namespace),
        name: None,
        sub: None,
        watch_path: false,
    };
    let (prefix, _) = collection_range(&t);
    if !(0..=WATCH_TIMEOUT_MAX_S).contains(&req.timeout_seconds) {
        return Err(bad_request(format!(
            "timeout_seconds must be between 0 and {WATCH_TIMEOUT_MAX_S}"
        )));
    }
    let deadline = (req.timeout_seconds > 0).then(|| Instant::now() + Duration::from_secs(req.timeout_seconds as u64));
    let cache = api.caches.get(rt).clone();
    let after = match req.resource_version.as_str() {
        "" => {
            // Consistent: the initial state is as fresh as a quorum read.
            cache.wait_fresh(&api.storage).await.map_err(|e| status_of(&e))?;
            None
        }
        "0" => None,
        v => Some(object::parse_rv(v).map_err(|e| status_of(&e))?),
    };
    let sub = match cache.subscribe(&prefix, after).await {
        Ok(sub) => sub,
        Err(e @ ApiError::Expired(_)) => return Ok(error_stream(&e)),
        Err(e) => return Err(status_of(&e)),
    };
    let feed = WatchFeed {
        rt,
        sel,
        bookmarks: req.allow_watch_bookmarks,
    };
    Ok(spawn(sub, feed, api.config.bookmark_interval, deadline, stop))
}

/// `NodeAssignments`: the pods bound to one node.
pub(super) async fn node_assignments(
    api: &Arc<Api>,
    req: NodeAssignmentsRequest,
    stop: watch::Receiver<bool>,
) -> Result<Stream<Assignment>, tonic::Status> {
    if req.node_name.is_empty() {
        return Err(bad_request("node_name is required"));
    }
    let pods = ResourceType::by_kind("Pod").expect("pods are served");
    let cache = api.caches.get(pods).clone();
    let after = if req.resource_version.is_empty() {
        cache.wait_fresh(&api.storage).await.map_err(|e| status_of(&e))?;
        None
    } else {
        Some(object::parse_rv(&req.resource_version).map_err(|e| status_of(&e))?)
    };
    // Too old a position: OUT_OF_RANGE with the 410 Status; the agent resnapshots.
    let sub = cache
        .subscribe(pods.prefix().as_bytes(), after)
        .await
        .map_err(|e| status_of(&e))?;
    let feed = NodeFeed { node: req.node_name };
    Ok(spawn(sub, feed, api.config.bookmark_interval, None, stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(node: &str) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": "p", "resourceVersion": "3"}, "spec": {"nodeName": node}}))
    }

    fn event(prev: Option<Arc<Value>>, obj: Arc<Value>, deleted: bool) -> Event {
        Event::new(7, Bytes::from_static(b"/registry/pods/ns/p"), obj, prev, deleted)
    }

    #[test]
    fn changes_follow_the_selection() {
        let on_n1 = |o: &Value| o["spec"]["nodeName"] == "n1";
        let bound = event(Some(pod("")), pod("n1"), false);
        assert_eq!(change_for(&bound, &on_n1).map(|c| c.0), Some(Change::Added));
        let changed = event(Some(pod("n1")), pod("n1"), false);
        assert_eq!(change_for(&changed, &on_n1).map(|c| c.0), Some(Change::Modified));
        let gone = event(Some(pod("n1")), pod("n1"), true);
        assert_eq!(change_for(&gone, &on_n1).map(|c| c.0), Some(Change::Deleted));
        let elsewhere = event(None, pod("n2"), false);
        assert!(change_for(&elsewhere, &on_n1).is_none());
        // Leaving the selection: deleted, as its previous state at the change's revision.
        let moved = event(Some(pod("n1")), pod("n2"), false);
        let (c, bytes) = change_for(&moved, &on_n1).expect("a change");
        assert_eq!(c, Change::Deleted);
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            (
                v["spec"]["nodeName"].as_str(),
                v["metadata"]["resourceVersion"].as_str()
            ),
            (Some("n1"), Some("7"))
        );
    }
}
