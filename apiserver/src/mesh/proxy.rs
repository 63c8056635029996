//! The proxy configuration: every Service with its ready endpoints, for node proxies.
//!
//! One [`ProxyHub`] per server does the work once for every proxy: it subscribes to the
//! Service and EndpointSlice watch caches, keeps for each Service its object and its
//! slices (those labelled `kubernetes.io/service-name=<service>`), and when either
//! changes computes the Service's [`ProxyService`] (the Service's JSON and its ready
//! endpoints, sorted and deduplicated). Only a result that differs from the last one
//! goes out, as one shared message, to every proxy stream's bounded queue
//! (`try_send`: a proxy whose queue is full is dropped, its stream ends with
//! `UNAVAILABLE`, and it reconnects for a new snapshot). A new stream gets the current
//! results (the snapshot) and its queue in one step under the hub's lock, so nothing
//! falls between them; before that it waits until the hub is as fresh as a quorum read.
//!
//! So the memory and work per change are per Service, not per proxy: a proxy stream
//! costs a queue and a task. The hub starts with the first ProxyConfig stream and
//! follows the caches for the server's life (two cache subscriptions, no store watch
//! of its own); if a cache drops it (its restart), the hub rebuilds and every proxy
//! stream ends so that its proxy resnapshots.
//!
//! EndpointSlices rather than Endpoints: they are what upstream's kube-proxy reads, they
//! say per endpoint whether it is ready (`conditions.ready`; unset means ready, as
//! upstream reads it) and on which node, and they scale past one object per Service.
//! Left out: FQDN slices (proxies program addresses), terminating/serving endpoints as a
//! fallback when none is ready, topology hints, resuming a stream from a position.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use capstan_proto::mesh::{proxy_update, ProxyEndpoint, ProxyPort, ProxyService, ProxyUpdate};
use serde_json::Value;
use tokio::sync::{mpsc, watch, Notify};

use super::status_of;
use super::stream::{Stream, OUT_QUEUE_MESSAGES};
use crate::cache::{Event, Initial, Message};
use crate::error::{ApiError, Result};
use crate::handlers::Api;
use crate::object::meta_str;
use crate::resources::ResourceType;

/// Proxy streams at once.
pub const PROXY_STREAMS_MAX: usize = 100_000;
/// Updates queued for one proxy stream before it counts as too slow and is dropped.
pub const PROXY_QUEUE_MAX: usize = 1_024;
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// How long a new stream waits for the hub to catch up with the caches.
const FRESHNESS_WAIT: Duration = Duration::from_secs(10);
/// Pause before following the caches again after losing them.
const RESTART_PAUSE: Duration = Duration::from_millis(200);

/// One Service as the hub knows it.
#[derive(Default)]
struct Entry {
    service: Option<Arc<Value>>,
    /// The Service's JSON, encoded once per change of the Service.
    service_json: Bytes,
    /// Its EndpointSlices by name.
    slices: BTreeMap<String, Arc<Value>>,
    /// What proxies were last sent for it (None: nothing, or its deletion).
    sent: Option<Arc<ProxyService>>,
}

#[derive(Default)]
struct State {
    /// The hub has built its state from the caches.
    loaded: bool,
    /// Every change of Services (EndpointSlices) up to this revision is reflected.
    services_rev: i64,
    slices_rev: i64,
    /// By (namespace, Service name).
    entries: BTreeMap<(String, String), Entry>,
    subscribers: HashMap<u64, mpsc::Sender<Arc<ProxyUpdate>>>,
    next_id: u64,
}

/// The shared state of the proxy configuration streams.
pub struct ProxyHub {
    api: Arc<Api>,
    state: Mutex<State>,
    /// Wakes new streams waiting for the hub to catch up.
    moved: Notify,
}

fn services() -> &'static ResourceType {
    ResourceType::by_kind("Service").expect("services are served")
}

fn slices() -> &'static ResourceType {
    ResourceType::by_kind("EndpointSlice").expect("endpointslices are served")
}

/// The (namespace, Service) an EndpointSlice belongs to, if it names one.
fn service_of(slice: &Value) -> Option<(String, String)> {
    let svc = slice["metadata"]["labels"][SERVICE_NAME_LABEL].as_str()?;
    Some((meta_str(slice, "namespace")?.to_string(), svc.to_string()))
}

fn key_of(obj: &Value) -> (String, String) {
    (
        meta_str(obj, "namespace").unwrap_or("").to_string(),
        meta_str(obj, "name").unwrap_or("").to_string(),
    )
}

/// The ready endpoints of a Service's slices, sorted, without duplicates.
fn ready_endpoints(slices: &BTreeMap<String, Arc<Value>>) -> Vec<ProxyEndpoint> {
    let mut out = Vec::new();
    for slice in slices.values() {
        if slice["addressType"].as_str() == Some("FQDN") {
            continue;
        }
        let ports: Vec<ProxyPort> = slice["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some(ProxyPort {
                    name: p["name"].as_str().unwrap_or("").to_string(),
                    port: i32::try_from(p["port"].as_i64()?).ok()?,
                    protocol: p["protocol"].as_str().unwrap_or("TCP").to_string(),
                })
            })
            .collect();
        for ep in slice["endpoints"].as_array().into_iter().flatten() {
            // Unset means ready (upstream: "unknown state ... interpreted as ready").
            if ep["conditions"]["ready"].as_bool() == Some(false) {
                continue;
            }
            let node = ep["nodeName"].as_str().unwrap_or("");
            for addr in ep["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                out.push(ProxyEndpoint {
                    address: addr.to_string(),
                    node_name: node.to_string(),
                    ports: ports.clone(),
                });
            }
        }
    }
    let order = |e: &ProxyEndpoint| {
        (
            e.address.clone(),
            e.node_name.clone(),
            e.ports
                .iter()
                .map(|p| (p.name.clone(), p.port, p.protocol.clone()))
                .collect::<Vec<_>>(),
        )
    };
    out.sort_by_cached_key(order);
    out.dedup();
    out
}

/// What proxies should have for `key`: None once the Service is gone.
fn compute(key: &(String, String), e: &Entry) -> Option<ProxyService> {
    e.service.as_ref()?;
    Some(ProxyService {
        namespace: key.0.clone(),
        name: key.1.clone(),
        service: e.service_json.clone(),
        endpoints: ready_endpoints(&e.slices),
    })
}

fn update(t: proxy_update::Type, service: ProxyService, rev: i64) -> ProxyUpdate {
    ProxyUpdate {
        r#type: t as i32,
        service: Some(service),
        resource_version: if rev > 0 { rev.to_string() } else { String::new() },
    }
}

impl State {
    /// Recomputes `key` after a change at `rev`; sends what differs to every stream.
    fn refresh(&mut self, key: &(String, String), rev: i64) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        let now = compute(key, entry);
        let out = match (now, &entry.sent) {
            (Some(now), Some(sent)) if **sent == now => None,
            (Some(now), _) => {
                let now = Arc::new(now);
                entry.sent = Some(now.clone());
                Some(update(proxy_update::Type::Upsert, (*now).clone(), rev))
            }
            (None, Some(_)) => {
                entry.sent = None;
                let gone = ProxyService {
                    namespace: key.0.clone(),
                    name: key.1.clone(),
                    ..Default::default()
                };
                Some(update(proxy_update::Type::Delete, gone, rev))
            }
            (None, None) => None,
        };
        if entry.service.is_none() && entry.slices.is_empty() {
            self.entries.remove(key);
        }
        if let Some(out) = out {
            let out = Arc::new(out);
            // A stream whose queue is full (or whose client left) is dropped: it ends
            // and its proxy resnapshots. Nobody waits for it.
            self.subscribers.retain(|_, tx| tx.try_send(out.clone()).is_ok());
        }
    }

    fn service_changed(&mut self, ev: &Event) {
        self.services_rev = self.services_rev.max(ev.rev);
        let key = key_of(&ev.obj);
        let entry = self.entries.entry(key.clone()).or_default();
        if ev.deleted {
            entry.service = None;
            entry.service_json = Bytes::new();
        } else {
            entry.service = Some(ev.obj.clone());
            entry.service_json = ev.object_json();
        }
        self.refresh(&key, ev.rev);
    }

    fn slice_changed(&mut self, ev: &Event) {
        self.slices_rev = self.slices_rev.max(ev.rev);
        let name = meta_str(&ev.obj, "name").unwrap_or("").to_string();
        let before = ev.prev.as_deref().and_then(service_of);
        let after = if ev.deleted { None } else { service_of(&ev.obj) };
        if let Some(b) = &before {
            if Some(b) != after.as_ref() {
                if let Some(e) = self.entries.get_mut(b) {
                    e.slices.remove(&name);
                }
                self.refresh(b, ev.rev);
            }
        }
        if let Some(a) = after {
            self.entries
                .entry(a.clone())
                .or_default()
                .slices
                .insert(name, ev.obj.clone());
            self.refresh(&a, ev.rev);
        }
    }
}

impl ProxyHub {
    /// Creates the hub over `api`'s caches and starts following them.
    pub fn start(api: Arc<Api>) -> Arc<ProxyHub> {
        let hub = Arc::new(ProxyHub {
            api,
            state: Mutex::new(State::default()),
            moved: Notify::new(),
        });
        let weak = Arc::downgrade(&hub);
        tokio::spawn(async move {
            loop {
                let Some(hub) = weak.upgrade() else { return };
                if let Err(e) = hub.follow().await {
                    tracing::warn!(error = %e, "proxy configuration hub restarts");
                }
                {
                    // Streams cannot continue across a rebuild: they end and resnapshot.
                    let mut st = hub.lock();
                    st.loaded = false;
                    st.subscribers.clear();
                }
                drop(hub);
                tokio::time::sleep(RESTART_PAUSE).await;
            }
        });
        hub
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("proxy hub lock poisoned")
    }

    /// Builds the state from the caches, then follows their changes until a
    /// subscription ends.
    async fn follow(&self) -> Result<()> {
        let (svc_rt, slice_rt) = (services(), slices());
        let mut svcs = self
            .api
            .caches
            .get(svc_rt)
            .subscribe(svc_rt.prefix().as_bytes(), None)
            .await?;
        let mut eps = self
            .api
            .caches
            .get(slice_rt)
            .subscribe(slice_rt.prefix().as_bytes(), None)
            .await?;
        {
            let mut st = self.lock();
            st.subscribers.clear();
            st.entries.clear();
            if let Initial::Objects(objs) = std::mem::replace(&mut svcs.initial, Initial::Objects(Vec::new())) {
                for o in objs {
                    let json = Bytes::from(serde_json::to_vec(&*o).unwrap_or_default());
                    let e = st.entries.entry(key_of(&o)).or_default();
                    e.service = Some(o);
                    e.service_json = json;
                }
            }
            if let Initial::Objects(objs) = std::mem::replace(&mut eps.initial, Initial::Objects(Vec::new())) {
                for o in objs {
                    if let Some(k) = service_of(&o) {
                        let name = meta_str(&o, "name").unwrap_or("").to_string();
                        st.entries.entry(k).or_default().slices.insert(name, o);
                    }
                }
            }
            for (k, e) in st.entries.iter_mut() {
                e.sent = compute(k, e).map(Arc::new);
            }
            st.services_rev = svcs.rev;
            st.slices_rev = eps.rev;
            st.loaded = true;
        }
        self.moved.notify_waiters();
        loop {
            tokio::select! {
                m = svcs.rx.recv() => match m {
                    None => return Err(ApiError::Unavailable("the Service watch cache dropped the proxy hub".into())),
                    Some(Message::Progress(r)) => {
                        let mut st = self.lock();
                        st.services_rev = st.services_rev.max(r);
                    }
                    Some(Message::Event(ev)) => self.lock().service_changed(&ev),
                },
                m = eps.rx.recv() => match m {
                    None => return Err(ApiError::Unavailable("the EndpointSlice watch cache dropped the proxy hub".into())),
                    Some(Message::Progress(r)) => {
                        let mut st = self.lock();
                        st.slices_rev = st.slices_rev.max(r);
                    }
                    Some(Message::Event(ev)) => self.lock().slice_changed(&ev),
                },
            }
            self.moved.notify_waiters();
        }
    }

    /// A new stream: the current configuration (as fresh as a quorum read), the
    /// revision it is at, and the queue of what follows.
    async fn subscribe(&self) -> Result<(Vec<Arc<ProxyService>>, i64, mpsc::Receiver<Arc<ProxyUpdate>>)> {
        let (svc_cache, slice_cache) = (self.api.caches.get(services()), self.api.caches.get(slices()));
        svc_cache.wait_fresh(&self.api.storage).await?;
        slice_cache.wait_fresh(&self.api.storage).await?;
        let want = (svc_cache.revision(), slice_cache.revision());
        let deadline = tokio::time::Instant::now() + FRESHNESS_WAIT;
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            {
                let mut st = self.lock();
                if st.loaded && st.services_rev >= want.0 && st.slices_rev >= want.1 {
                    if st.subscribers.len() >= PROXY_STREAMS_MAX {
                        return Err(ApiError::TooManyRequests("too many proxy configuration streams".into()));
                    }
                    let snapshot = st.entries.values().filter_map(|e| e.sent.clone()).collect();
                    let (tx, rx) = mpsc::channel(PROXY_QUEUE_MAX);
                    let id = st.next_id;
                    st.next_id += 1;
                    st.subscribers.insert(id, tx);
                    return Ok((snapshot, st.services_rev.max(st.slices_rev), rx));
                }
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return Err(ApiError::Unavailable(
                    "the proxy configuration has not caught up with the store yet; try again".into(),
                ));
            }
        }
    }
}

/// `ProxyConfig`: the snapshot, its end marker, then every change.
pub(super) async fn stream(
    hub: &Arc<ProxyHub>,
    mut stop: watch::Receiver<bool>,
) -> std::result::Result<Stream<ProxyUpdate>, tonic::Status> {
    let (snapshot, rev, mut rx) = hub.subscribe().await.map_err(|e| status_of(&e))?;
    let (tx, out) = mpsc::channel(OUT_QUEUE_MESSAGES);
    tokio::spawn(async move {
        for s in snapshot {
            if tx
                .send(Ok(update(proxy_update::Type::Upsert, (*s).clone(), 0)))
                .await
                .is_err()
            {
                return;
            }
        }
        let end = ProxyUpdate {
            r#type: proxy_update::Type::SnapshotEnd as i32,
            service: None,
            resource_version: rev.to_string(),
        };
        if tx.send(Ok(end)).await.is_err() {
            return;
        }
        loop {
            let msg = tokio::select! {
                _ = tx.closed() => return,
                _ = stop.changed() => {
                    let _ = tx.send(Err(tonic::Status::unavailable("the server is shutting down"))).await;
                    return;
                }
                m = rx.recv() => m,
            };
            let Some(msg) = msg else {
                let _ = tx
                    .send(Err(tonic::Status::unavailable(
                        "the stream fell behind or the configuration was rebuilt: reconnect for a new snapshot",
                    )))
                    .await;
                return;
            };
            if tx.send(Ok((*msg).clone())).await.is_err() {
                return;
            }
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ready_endpoints_are_sorted_deduplicated_and_ready_only() {
        let slice = |name: &str, eps: Value| {
            Arc::new(json!({"metadata": {"name": name, "namespace": "ns",
                "labels": {SERVICE_NAME_LABEL: "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": eps}))
        };
        let mut slices = BTreeMap::new();
        slices.insert(
            "a".to_string(),
            slice(
                "a",
                json!([
                    {"addresses": ["127.1.0.2"], "conditions": {"ready": true}, "nodeName": "n2"},
                    {"addresses": ["127.1.0.9"], "conditions": {"ready": false}},
                    {"addresses": ["127.1.0.1"], "nodeName": "n1"},
                ]),
            ),
        );
        // The same endpoint in a second slice (a slice being replaced): once.
        slices.insert(
            "b".to_string(),
            slice(
                "b",
                json!([{"addresses": ["127.1.0.2"], "conditions": {"ready": true}, "nodeName": "n2"}]),
            ),
        );
        slices.insert(
            "c".to_string(),
            Arc::new(json!({"metadata": {"name": "c"}, "addressType": "FQDN",
                "endpoints": [{"addresses": ["web.example"]}]})),
        );
        let eps = ready_endpoints(&slices);
        let addrs: Vec<(&str, &str)> = eps.iter().map(|e| (e.address.as_str(), e.node_name.as_str())).collect();
        assert_eq!(addrs, [("127.1.0.1", "n1"), ("127.1.0.2", "n2")]);
        assert_eq!(eps[0].ports[0].port, 8080);
        assert_eq!(service_of(&slices["a"]), Some(("ns".to_string(), "web".to_string())));
    }
}
