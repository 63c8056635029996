//! Watch: `GET <collection>?watch=true`, a chunked stream of JSON events, one per line:
//! `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}}`.
//!
//! - No resourceVersion (or "0"): the current objects first, as synthetic ADDED events,
//!   then every change after the revision they were read at. resourceVersion N: every
//!   change after N; one compacted away ends the stream with an ERROR event carrying a
//!   410 `Expired` Status, which is how informers know to list again.
//! - Selectors filter as upstream's watch cache does: an object that stops matching is
//!   DELETED for this watcher, one that starts matching is ADDED.
//! - BOOKMARK events (only if `allowWatchBookmarks=true`) carry the newest revision the
//!   watcher has seen everything up to, about once a minute.
//! - The stream ends after `timeoutSeconds` (default 30 minutes); `kubectl get -w` then
//!   exits cleanly.
//!
//! Every watch is served from the resource type's watch cache ([`crate::cache`]): the
//! store sees one watch per type. Deliberately left out for now: `sendInitialEvents`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::cache::{Event, Initial, Message};
use crate::error::{ApiError, Result};
use crate::handlers::{collection_range, Api, Selectors};
use crate::http::{Format, Params, Target};
use crate::object::{self, set_resource_version};
use crate::resources::ResourceType;
use crate::table::{self, IncludeObject};

const TIMEOUT_DEFAULT_S: i64 = 1800;
const TIMEOUT_MAX_S: i64 = 3600;
/// How often a watch that asked for bookmarks gets one, by default (upstream: about a
/// minute).
pub const BOOKMARK_INTERVAL_DEFAULT: Duration = Duration::from_secs(60);
/// Encoded events buffered for a slow client before the watch waits for it (only this
/// watch waits: the store parks it and it catches up later).
const QUEUE_EVENTS_MAX: usize = 256;

struct Encoder {
    rt: &'static ResourceType,
    fmt: Format,
    include: IncludeObject,
    columns_sent: bool,
}

impl Encoder {
    fn event(&mut self, kind: &str, obj: Value) -> Bytes {
        let object = match (self.fmt, kind) {
            (Format::Table, "ADDED" | "MODIFIED" | "DELETED") => {
                let rv = object::meta_str(&obj, "resourceVersion").unwrap_or("").to_string();
                let with_columns = !self.columns_sent;
                self.columns_sent = true;
                table::table(
                    self.rt.plural,
                    &[obj],
                    object::now_unix_s(),
                    &rv,
                    None,
                    self.include,
                    with_columns,
                )
            }
            _ => obj,
        };
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    /// The line for one change: shared with every other JSON watcher when it carries
    /// the event's own object.
    fn change(&mut self, ev: &Event, out: Out) -> Bytes {
        match (out, self.fmt) {
            (Out::Shared(kind), Format::Json) => ev.line(kind),
            (Out::Shared(kind), Format::Table) => self.event(kind, (*ev.obj).clone()),
            (Out::Owned(kind, obj), _) => self.event(kind, obj),
        }
    }

    fn bookmark(&mut self, rev: i64) -> Bytes {
        let obj = json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(),
            "metadata": {"resourceVersion": rev.to_string()}});
        self.event("BOOKMARK", obj)
    }

    fn error(&mut self, e: &ApiError) -> Bytes {
        self.event("ERROR", e.status())
    }
}

pub async fn serve(api: Arc<Api>, t: Target, params: Params, fmt: Format) -> Result<Response> {
    let sel = Selectors::parse(t.rt, &params)?;
    let (prefix, _) = collection_range(&t);
    let timeout_s = params
        .int("timeoutSeconds")?
        .filter(|s| *s > 0)
        .unwrap_or(TIMEOUT_DEFAULT_S)
        .min(TIMEOUT_MAX_S);
    let bookmarks = params.flag("allowWatchBookmarks");
    let cache = api.caches.get(t.rt).clone();
    let after = match params.get("resourceVersion") {
        None => {
            // Consistent: the initial state is as fresh as a quorum read.
            cache.wait_fresh(&api.storage).await?;
            None
        }
        Some("0") => None,
        Some(v) => Some(object::parse_rv(v)?),
    };
    let include = match params.get("includeObject") {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    };
    let mut enc = Encoder {
        rt: t.rt,
        fmt,
        include,
        columns_sent: false,
    };
    let sub = cache.subscribe(&prefix, after).await;
    let (tx, rx) = mpsc::channel::<std::result::Result<Bytes, Infallible>>(QUEUE_EVENTS_MAX);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_s as u64);
        let mut sub = match sub {
            Ok(sub) => sub,
            Err(e) => {
                let _ = tx.send(Ok(enc.error(&e))).await;
                return;
            }
        };
        let mut last_rev = sub.rev;
        let initial = std::mem::replace(&mut sub.initial, Initial::Objects(Vec::new()));
        let first: Vec<Bytes> = match initial {
            Initial::Objects(objs) => objs
                .into_iter()
                .filter(|o| sel.matches(o))
                .map(|o| enc.event("ADDED", (*o).clone()))
                .collect(),
            Initial::Events(evs) => {
                last_rev = evs.iter().map(|e| e.rev).fold(last_rev, i64::max);
                evs.iter()
                    .filter_map(|e| event_for(e, &sel).map(|out| enc.change(e, out)))
                    .collect()
            }
        };
        for line in first {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let every = api.config.bookmark_interval.max(Duration::from_millis(10));
        let mut bookmark = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            let msg = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
                _ = bookmark.tick() => {
                    if bookmarks && tx.send(Ok(enc.bookmark(last_rev))).await.is_err() {
                        return;
                    }
                    continue;
                }
                m = sub.rx.recv() => m,
            };
            match msg {
                // Dropped as too slow, or the cache restarted: end; the client watches again.
                None => return,
                Some(Message::Progress(rev)) => last_rev = last_rev.max(rev),
                Some(Message::Event(ev)) => {
                    last_rev = last_rev.max(ev.rev);
                    if let Some(out) = event_for(&ev, &sel) {
                        if tx.send(Ok(enc.change(&ev, out))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    let mut r = Response::new(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

/// What one change is for a watcher with these selectors: the event's own object
/// (whose encoding all watchers share), another object, or nothing.
enum Out {
    Shared(&'static str),
    Owned(&'static str, Value),
}

fn event_for(ev: &Event, sel: &Selectors) -> Option<Out> {
    let prev_ok = ev.prev.as_ref().is_some_and(|p| sel.matches(p));
    if ev.deleted {
        return prev_ok.then_some(Out::Shared("DELETED"));
    }
    let cur_ok = sel.matches(&ev.obj);
    match (prev_ok, cur_ok) {
        (false, true) => Some(Out::Shared("ADDED")),
        (true, true) => Some(Out::Shared("MODIFIED")),
        (true, false) => {
            // Leaves the selection: the watcher sees it deleted, at this revision.
            let mut p = ev.prev.as_deref().cloned().unwrap_or(Value::Null);
            set_resource_version(&mut p, ev.rev);
            Some(Out::Owned("DELETED", p))
        }
        (false, false) => None,
    }
}
