//! The proxy configuration: every Service with its endpoints, for node proxies.
//!
//! One [`ProxyHub`] per server does the work once for every proxy: it subscribes to the
//! Service, EndpointSlice and Endpoints watch caches, keeps for each Service its object,
//! its slices (those labelled `kubernetes.io/service-name=<service>`) and its Endpoints
//! object (same namespace and name), and when one of them changes computes the
//! Service's [`ProxyService`] (the Service's JSON and its endpoints, sorted and
//! deduplicated; see [`service_endpoints`]). Only a result that differs from the last one
//! goes out, as one shared message, to every proxy stream's bounded queue
//! (`try_send`: a proxy whose queue is full is dropped, its stream ends with
//! `UNAVAILABLE`, and it reconnects for a new snapshot). A new stream gets the current
//! results (the snapshot) and its queue in one step under the hub's lock, so nothing
//! falls between them; before that it waits until the hub is as fresh as a quorum read.
//!
//! So the memory and work per change are per Service, not per proxy: a proxy stream
//! costs a queue and a task. The hub starts with the first ProxyConfig stream and
//! follows the caches for the server's life (three cache subscriptions, no store watch
//! of its own); if a cache drops it (its restart), the hub rebuilds and every proxy
//! stream ends so that its proxy resnapshots.
//!
//! Which endpoints, as kube-proxy chooses them:
//!
//! - EndpointSlices first: they are what upstream's kube-proxy reads, they say per
//!   endpoint whether it is ready (`conditions.ready`; unset means ready, as upstream
//!   reads it) and on which node, and they scale past one object per Service. The ready
//!   endpoints go out; for a port (its name, protocol and the slice's address type) that
//!   no ready endpoint has, the endpoints that are `serving` and `terminating` go out
//!   instead, flagged `terminating` and listing only such ports (kube-proxy's fallback
//!   during a rolling update, decided per Service port as kube-proxy does). Deciding it
//!   here rather than sending both sets means a proxy that does not know the flag still
//!   routes correctly.
//! - A Service without a selector has no controller writing its slices: when it has
//!   none, the ready addresses (`subsets[].addresses`, not `notReadyAddresses`) of its
//!   manual Endpoints object go out, which is what upstream's EndpointSlice mirroring
//!   controller would have turned into slices. The Endpoints of Services with selectors
//!   are kept (shared with the cache, not copied) but change nothing, so their changes
//!   cost no recomputation.
//!
//! Left out: FQDN slices (proxies program addresses), topology hints, the mirroring
//! controller's own slices for selectorless Services (a selectorless Service's slices,
//! when someone writes them, win over its Endpoints as they would upstream), resuming a
//! stream from a position.

use std::collections::{BTreeMap, HashMap, HashSet};
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
    /// Its Endpoints object (used only when the Service has no selector and no slices).
    endpoints: Option<Arc<Value>>,
    /// What proxies were last sent for it (None: nothing, or its deletion).
    sent: Option<Arc<ProxyService>>,
}

impl Entry {
    /// Whether the Endpoints object decides this Service's endpoints.
    fn uses_manual_endpoints(&self) -> bool {
        self.service.as_deref().is_some_and(|s| !has_selector(s)) && self.slices.is_empty()
    }

    fn is_empty(&self) -> bool {
        self.service.is_none() && self.slices.is_empty() && self.endpoints.is_none()
    }
}

#[derive(Default)]
struct State {
    /// The hub has built its state from the caches.
    loaded: bool,
    /// Every change of Services (EndpointSlices, Endpoints) up to this revision is
    /// reflected.
    services_rev: i64,
    slices_rev: i64,
    endpoints_rev: i64,
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
    ResourceType::by_kind("Service").expect("invariant: services are served")
}

fn slices() -> &'static ResourceType {
    ResourceType::by_kind("EndpointSlice").expect("invariant: endpointslices are served")
}

fn endpoints() -> &'static ResourceType {
    ResourceType::by_kind("Endpoints").expect("invariant: endpoints are served")
}

/// Whether a Service selects pods (an empty selector selects none: upstream's endpoints
/// controllers leave such a Service alone, as one without a selector).
fn has_selector(service: &Value) -> bool {
    service["spec"]["selector"].as_object().is_some_and(|m| !m.is_empty())
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

/// A port as the mesh API sends it, from a slice's or a subset's port (`port` unset or
/// out of range: skipped; `protocol` unset: TCP).
fn port_of(p: &Value) -> Option<ProxyPort> {
    Some(ProxyPort {
        name: p["name"].as_str().unwrap_or("").to_string(),
        port: i32::try_from(p["port"].as_i64()?).ok().filter(|p| *p > 0)?,
        protocol: p["protocol"].as_str().unwrap_or("TCP").to_string(),
    })
}

/// Sorted (by address, node, ports, terminating) and without duplicates.
fn sorted(mut out: Vec<ProxyEndpoint>) -> Vec<ProxyEndpoint> {
    out.sort_by_cached_key(|e| {
        (
            e.address.clone(),
            e.node_name.clone(),
            e.ports
                .iter()
                .map(|p| (p.name.clone(), p.port, p.protocol.clone()))
                .collect::<Vec<_>>(),
            e.terminating,
        )
    });
    out.dedup();
    out
}

/// The endpoints of a Service's slices: the ready ones and, for each port (address
/// type, name, protocol) that none of them has, the serving and terminating ones.
fn slice_endpoints(slices: &BTreeMap<String, Arc<Value>>) -> Vec<ProxyEndpoint> {
    let mut out = Vec::new();
    // Ports that some ready endpoint serves: no fallback for them.
    let mut ready_ports: HashSet<(&str, String, String)> = HashSet::new();
    let mut fallback: Vec<(&str, ProxyEndpoint)> = Vec::new();
    for slice in slices.values() {
        let address_type = slice["addressType"].as_str().unwrap_or("");
        if address_type == "FQDN" {
            continue;
        }
        let ports: Vec<ProxyPort> = slice["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(port_of)
            .collect();
        for ep in slice["endpoints"].as_array().into_iter().flatten() {
            let conditions = &ep["conditions"];
            // Unset means ready (upstream: "unknown state ... interpreted as ready").
            let ready = conditions["ready"].as_bool() != Some(false);
            let terminating = !ready
                && conditions["serving"].as_bool() == Some(true)
                && conditions["terminating"].as_bool() == Some(true);
            if !ready && !terminating {
                continue;
            }
            if ready {
                ready_ports.extend(ports.iter().map(|p| (address_type, p.name.clone(), p.protocol.clone())));
            }
            let node = ep["nodeName"].as_str().unwrap_or("");
            for addr in ep["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let endpoint = ProxyEndpoint {
                    address: addr.to_string(),
                    node_name: node.to_string(),
                    ports: ports.clone(),
                    terminating,
                };
                if ready {
                    out.push(endpoint);
                } else {
                    fallback.push((address_type, endpoint));
                }
            }
        }
    }
    let any_ready = !out.is_empty();
    for (address_type, mut endpoint) in fallback {
        let portless = endpoint.ports.is_empty();
        endpoint
            .ports
            .retain(|p| !ready_ports.contains(&(address_type, p.name.clone(), p.protocol.clone())));
        // An endpoint left with no port stands in for nothing; one that never had ports
        // (a headless Service's) stands in only when nothing is ready.
        if endpoint.ports.is_empty() && (!portless || any_ready) {
            continue;
        }
        out.push(endpoint);
    }
    sorted(out)
}

/// The ready addresses of a manual Endpoints object, each with its subset's ports.
fn manual_endpoints(endpoints: &Value) -> Vec<ProxyEndpoint> {
    let mut out = Vec::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        let ports: Vec<ProxyPort> = subset["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(port_of)
            .collect();
        for address in subset["addresses"].as_array().into_iter().flatten() {
            let Some(ip) = address["ip"].as_str() else { continue };
            out.push(ProxyEndpoint {
                address: ip.to_string(),
                node_name: address["nodeName"].as_str().unwrap_or("").to_string(),
                ports: ports.clone(),
                terminating: false,
            });
        }
    }
    sorted(out)
}

/// What proxies get as a Service's endpoints: from its slices, or from its manual
/// Endpoints when it has no selector and no slices.
fn service_endpoints(e: &Entry) -> Vec<ProxyEndpoint> {
    match &e.endpoints {
        Some(manual) if e.uses_manual_endpoints() => manual_endpoints(manual),
        _ => slice_endpoints(&e.slices),
    }
}

/// What proxies should have for `key`: None once the Service is gone.
fn compute(key: &(String, String), e: &Entry) -> Option<ProxyService> {
    e.service.as_ref()?;
    Some(ProxyService {
        namespace: key.0.clone(),
        name: key.1.clone(),
        service: e.service_json.clone(),
        endpoints: service_endpoints(e),
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
        if entry.is_empty() {
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

    fn endpoints_changed(&mut self, ev: &Event) {
        self.endpoints_rev = self.endpoints_rev.max(ev.rev);
        let key = key_of(&ev.obj);
        let entry = self.entries.entry(key.clone()).or_default();
        entry.endpoints = if ev.deleted { None } else { Some(ev.obj.clone()) };
        // Most Endpoints belong to Services with selectors, whose endpoints come from
        // their slices: nothing to recompute for them.
        if entry.uses_manual_endpoints() {
            self.refresh(&key, ev.rev);
        } else if entry.is_empty() {
            self.entries.remove(&key);
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
        self.state
            .lock()
            .expect("invariant: nothing panics while holding the proxy hub's lock")
    }

    /// Builds the state from the caches, then follows their changes until a
    /// subscription ends.
    async fn follow(&self) -> Result<()> {
        let (svc_rt, slice_rt, ep_rt) = (services(), slices(), endpoints());
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
        let mut manual = self
            .api
            .caches
            .get(ep_rt)
            .subscribe(ep_rt.prefix().as_bytes(), None)
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
            if let Initial::Objects(objs) = std::mem::replace(&mut manual.initial, Initial::Objects(Vec::new())) {
                for o in objs {
                    let key = key_of(&o);
                    st.entries.entry(key).or_default().endpoints = Some(o);
                }
            }
            for (k, e) in st.entries.iter_mut() {
                e.sent = compute(k, e).map(Arc::new);
            }
            st.services_rev = svcs.rev;
            st.slices_rev = eps.rev;
            st.endpoints_rev = manual.rev;
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
                m = manual.rx.recv() => match m {
                    None => return Err(ApiError::Unavailable("the Endpoints watch cache dropped the proxy hub".into())),
                    Some(Message::Progress(r)) => {
                        let mut st = self.lock();
                        st.endpoints_rev = st.endpoints_rev.max(r);
                    }
                    Some(Message::Event(ev)) => self.lock().endpoints_changed(&ev),
                },
            }
            self.moved.notify_waiters();
        }
    }

    /// A new stream: the current configuration (as fresh as a quorum read), the
    /// revision it is at, and the queue of what follows.
    async fn subscribe(&self) -> Result<(Vec<Arc<ProxyService>>, i64, mpsc::Receiver<Arc<ProxyUpdate>>)> {
        let (svc_cache, slice_cache, ep_cache) = (
            self.api.caches.get(services()),
            self.api.caches.get(slices()),
            self.api.caches.get(endpoints()),
        );
        svc_cache.wait_fresh(&self.api.storage).await?;
        slice_cache.wait_fresh(&self.api.storage).await?;
        ep_cache.wait_fresh(&self.api.storage).await?;
        let want = (svc_cache.revision(), slice_cache.revision(), ep_cache.revision());
        let deadline = tokio::time::Instant::now() + FRESHNESS_WAIT;
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            {
                let mut st = self.lock();
                if st.loaded && st.services_rev >= want.0 && st.slices_rev >= want.1 && st.endpoints_rev >= want.2 {
                    if st.subscribers.len() >= PROXY_STREAMS_MAX {
                        return Err(ApiError::TooManyRequests("too many proxy configuration streams".into()));
                    }
                    let snapshot = st.entries.values().filter_map(|e| e.sent.clone()).collect();
                    let (tx, rx) = mpsc::channel(PROXY_QUEUE_MAX);
                    let id = st.next_id;
                    st.next_id += 1;
                    st.subscribers.insert(id, tx);
                    return Ok((snapshot, st.services_rev.max(st.slices_rev).max(st.endpoints_rev), rx));
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

    fn slice(name: &str, ports: Value, eps: Value) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": name, "namespace": "ns",
            "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4", "ports": ports, "endpoints": eps}))
    }

    fn http() -> Value {
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    }

    /// (address, terminating, port numbers) of each endpoint.
    fn summary(eps: &[ProxyEndpoint]) -> Vec<(String, bool, Vec<i32>)> {
        eps.iter()
            .map(|e| {
                (
                    e.address.clone(),
                    e.terminating,
                    e.ports.iter().map(|p| p.port).collect(),
                )
            })
            .collect()
    }

    fn terminating(addr: &str, serving: bool) -> Value {
        json!({"addresses": [addr], "conditions": {"ready": false, "serving": serving, "terminating": true}})
    }

    #[test]
    fn ready_endpoints_are_sorted_deduplicated_and_ready_only() {
        let mut slices = BTreeMap::new();
        slices.insert(
            "a".to_string(),
            slice(
                "a",
                http(),
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
                http(),
                json!([{"addresses": ["127.1.0.2"], "conditions": {"ready": true}, "nodeName": "n2"}]),
            ),
        );
        slices.insert(
            "c".to_string(),
            Arc::new(json!({"metadata": {"name": "c"}, "addressType": "FQDN",
                "endpoints": [{"addresses": ["web.example"]}]})),
        );
        let eps = slice_endpoints(&slices);
        let addrs: Vec<(&str, &str)> = eps.iter().map(|e| (e.address.as_str(), e.node_name.as_str())).collect();
        assert_eq!(addrs, [("127.1.0.1", "n1"), ("127.1.0.2", "n2")]);
        assert_eq!(eps[0].ports[0].port, 8080);
        assert!(eps.iter().all(|e| !e.terminating));
        assert_eq!(service_of(&slices["a"]), Some(("ns".to_string(), "web".to_string())));
    }

    #[test]
    fn serving_terminating_endpoints_stand_in_for_the_ports_no_ready_endpoint_has() {
        let mut slices = BTreeMap::new();
        slices.insert(
            "a".to_string(),
            slice(
                "a",
                http(),
                json!([
                    {"addresses": ["127.1.0.1"], "conditions": {"ready": true}},
                    terminating("127.1.0.9", true),
                    terminating("127.1.0.8", false),
                ]),
            ),
        );
        // Another port that only terminating endpoints serve.
        slices.insert(
            "b".to_string(),
            slice(
                "b",
                json!([{"name": "metrics", "port": 9090}, {"name": "http", "port": 8080}]),
                json!([terminating("127.1.0.7", true)]),
            ),
        );
        assert_eq!(
            summary(&slice_endpoints(&slices)),
            [
                ("127.1.0.1".to_string(), false, vec![8080]),
                ("127.1.0.7".to_string(), true, vec![9090]),
            ],
            "http has a ready endpoint: no fallback for it; metrics has none"
        );

        // Nothing ready: the serving terminating ones, not the others.
        slices.insert(
            "a".to_string(),
            slice(
                "a",
                http(),
                json!([terminating("127.1.0.9", true), terminating("127.1.0.8", false)]),
            ),
        );
        slices.remove("b");
        assert_eq!(
            summary(&slice_endpoints(&slices)),
            [("127.1.0.9".to_string(), true, vec![8080])]
        );
    }

    fn service(selector: Option<Value>) -> Arc<Value> {
        let mut spec = json!({"clusterIP": "10.0.0.1", "ports": [{"name": "pg", "port": 5432}]});
        if let Some(selector) = selector {
            spec["selector"] = selector;
        }
        Arc::new(json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": spec}))
    }

    fn manual(ip: &str) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": "web", "namespace": "ns"},
            "subsets": [{"addresses": [{"ip": ip, "nodeName": "n1"}], "notReadyAddresses": [{"ip": "127.1.0.99"}],
                         "ports": [{"name": "pg", "port": 15432}]}]}))
    }

    #[test]
    fn a_selectorless_service_without_slices_uses_its_manual_endpoints() {
        let mut entry = Entry {
            service: Some(service(None)),
            endpoints: Some(manual("127.1.0.5")),
            ..Default::default()
        };
        let eps = service_endpoints(&entry);
        assert_eq!(summary(&eps), [("127.1.0.5".to_string(), false, vec![15432])]);
        assert_eq!((eps[0].node_name.as_str(), eps[0].ports[0].name.as_str()), ("n1", "pg"));

        // An empty selector selects nothing: the same.
        entry.service = Some(service(Some(json!({}))));
        assert_eq!(service_endpoints(&entry).len(), 1);

        // Slices, when someone writes them, win.
        entry.slices.insert(
            "s".to_string(),
            slice("s", http(), json!([{"addresses": ["127.1.0.6"]}])),
        );
        assert_eq!(
            summary(&service_endpoints(&entry)),
            [("127.1.0.6".to_string(), false, vec![8080])]
        );

        // A Service with a selector: its Endpoints (the controller's copy) never count.
        entry.slices.clear();
        entry.service = Some(service(Some(json!({"app": "web"}))));
        assert!(service_endpoints(&entry).is_empty());
    }

    fn event(rev: i64, obj: &Arc<Value>, deleted: bool) -> Event {
        Event::new(rev, Bytes::new(), obj.clone(), None, deleted)
    }

    /// The next update sent to `rx`, if any: (type, endpoint addresses).
    fn next(rx: &mut mpsc::Receiver<Arc<ProxyUpdate>>) -> Option<(proxy_update::Type, Vec<String>)> {
        let u = rx.try_recv().ok()?;
        let addrs = u
            .service
            .iter()
            .flat_map(|s| s.endpoints.iter().map(|e| e.address.clone()))
            .collect();
        Some((u.r#type(), addrs))
    }

    #[test]
    fn manual_endpoints_changes_reach_the_streams_only_for_selectorless_services() {
        let mut st = State::default();
        let (tx, mut rx) = mpsc::channel(16);
        st.subscribers.insert(0, tx);
        let key = ("ns".to_string(), "web".to_string());

        st.service_changed(&event(2, &service(None), false));
        assert_eq!(next(&mut rx), Some((proxy_update::Type::Upsert, vec![])));
        st.endpoints_changed(&event(3, &manual("127.1.0.5"), false));
        assert_eq!(
            next(&mut rx),
            Some((proxy_update::Type::Upsert, vec!["127.1.0.5".to_string()]))
        );
        assert_eq!(st.endpoints_rev, 3);
        st.endpoints_changed(&event(4, &manual("127.1.0.6"), false));
        assert_eq!(
            next(&mut rx),
            Some((proxy_update::Type::Upsert, vec!["127.1.0.6".to_string()]))
        );

        // The Service gains a selector: its (slice-less) endpoints are none, and its
        // Endpoints changing no longer sends anything.
        st.service_changed(&event(5, &service(Some(json!({"app": "web"}))), false));
        assert_eq!(next(&mut rx), Some((proxy_update::Type::Upsert, vec![])));
        st.endpoints_changed(&event(6, &manual("127.1.0.7"), false));
        assert_eq!(next(&mut rx), None);

        // Selectorless again: the Endpoints it has now.
        st.service_changed(&event(7, &service(None), false));
        assert_eq!(
            next(&mut rx),
            Some((proxy_update::Type::Upsert, vec!["127.1.0.7".to_string()]))
        );
        st.endpoints_changed(&event(8, &manual("127.1.0.7"), true));
        assert_eq!(next(&mut rx), Some((proxy_update::Type::Upsert, vec![])));
        st.service_changed(&event(9, &service(None), true));
        assert_eq!(next(&mut rx), Some((proxy_update::Type::Delete, vec![])));
        assert!(!st.entries.contains_key(&key), "nothing left of the Service is kept");

        // Endpoints of no Service are kept (for when the Service comes) but send nothing.
        st.endpoints_changed(&event(10, &manual("127.1.0.8"), false));
        assert_eq!(next(&mut rx), None);
        st.service_changed(&event(11, &service(None), false));
        assert_eq!(
            next(&mut rx),
            Some((proxy_update::Type::Upsert, vec!["127.1.0.8".to_string()]))
        );
    }
}
