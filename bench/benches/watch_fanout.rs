//! Watch fan-out at every layer: one change delivered to N watchers, and bursts of
//! changes delivered to N watchers, from the store's hub up to the Kubernetes API.
//!
//! ```text
//! cargo bench -p capstan-bench --bench watch_fanout              # N = 1 .. 10,000
//! CAPSTAN_BENCH_FULL=1 cargo bench -p capstan-bench --bench watch_fanout  # and 100,000 (~5 min more)
//! cargo bench -p capstan-bench --bench watch_fanout -- fanout_grpc  # one group
//! ```
//!
//! # Groups
//!
//! Every group's benchmark id is N, the number of watchers (1, 100, 1,000, 10,000; and
//! 100,000 with `CAPSTAN_BENCH_FULL=1`). The unit is time per iteration; criterion's
//! throughput is in deliveries (one event to one watcher): `Throughput::Elements(N)` for
//! `fanout_*`, `Throughput::Elements(M * N)` for `burst_*`.
//!
//! - `fanout_hub`: the store's [`WatchHub`] alone (no Raft, no gRPC), as the apply loop
//!   drives it. N synced watchers of one key over 4 streams. One iteration: the hub is
//!   notified of one revision (one put event of 256 bytes), then every response is taken
//!   off the streams' queues, on one thread; timed from the notify to the last response
//!   taken. The event is built before the clock starts.
//! - `fanout_cache`: the apiserver's watch cache ([`WatchCache`] of ConfigMaps) over a
//!   single store member in this process (`Storage::local`: real Raft and RocksDB, fsync
//!   included), N in-process subscriptions (no HTTP, no JSON encoding: a subscriber gets
//!   the decoded event). One iteration: one put of a ConfigMap proposed to the member,
//!   then every subscription's queue is read until it has the event; timed from the
//!   proposal to the last subscription read. So it includes one Raft write (one fsync)
//!   and the store's own watch that feeds the cache.
//! - `fanout_grpc`: the etcd v3 Watch service of a member served on a real TCP port of
//!   127.0.0.1 in this process, with tonic clients: N watchers of one key spread over
//!   `min(N, 100)` watch streams on 4 connections, and one more connection for the
//!   writes. One iteration: one etcd `Put` over gRPC, timed until every watcher's
//!   response has been read by its client stream (each stream's task counts the events
//!   it reads; the waiter is woken once when the count reaches its target).
//! - `fanout_http`: the Kubernetes watch over HTTP: the apiserver served over the member
//!   on a real port, N `?watch=true` streams of one ConfigMap (a field selector on its
//!   name) over `max(100, N / 100)` HTTP/2 (h2c) connections, 100 streams or fewer per
//!   connection as hyper's server allows 200. One iteration: one merge PATCH of the
//!   ConfigMap over HTTP (read, modify, conditional write: a Raft write), timed until
//!   every stream has read the event's JSON line.
//! - `burst_hub`, `burst_cache`, `burst_grpc`: the same rigs, but one iteration is
//!   M = 100 events written back to back, timed until every watcher has all M: the
//!   throughput that fan-out sustains until delivery lags. `burst_hub` notifies the 100
//!   revisions, then drains (its queues hold the whole burst, so nothing parks: this is
//!   the hub's delivery cost, not its catch-up). `burst_cache` proposes the 100 puts at
//!   once (they share group commits) and drains every subscription. `burst_grpc` sends
//!   the 100 `Put`s at once over one connection; a stream's queue holds 4,096 responses
//!   (the server's default), so at 10,000 watchers (100 per stream, 10,000 responses
//!   per stream per burst) watchers park and catch up from the hub's ring of recent
//!   revisions, as they would on a real server.
//!
//! # Left out
//!
//! - `burst_http`: a burst at 10,000 HTTP watchers is a million JSON lines over HTTP per
//!   iteration, seconds each; ten samples of it would take most of the suite's time.
//!   `capstan-bench kube` measures the API under sustained load instead.
//! - Watchers of different keys or prefixes, filters, `prev_kv`, progress
//!   notifications; watchers that are slow on purpose; the mesh API's streams.
//! - Clients on other machines: every client here shares the two cores with the server,
//!   so the gRPC and HTTP numbers include the clients' decoding.
//!
//! Data lives in temporary directories under the target directory (never /tmp). Each
//! group is short: 10 samples, half a second of warm-up, two seconds of measurement
//! (flat sampling for all but `fanout_hub`, whose iterations take microseconds); an
//! iteration longer than a fifth of a second makes its id take about 11 of them.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use capstan_apiserver::cache::{Message, Subscription, WatchCache};
use capstan_apiserver::resources::ResourceType;
use capstan_apiserver::{Api, ApiConfig, Storage};
use capstan_proto::etcdserverpb::kv_client::KvClient;
use capstan_proto::etcdserverpb::watch_client::WatchClient;
use capstan_proto::etcdserverpb::{watch_request, PutRequest, WatchCreateRequest, WatchRequest};
use capstan_proto::mvccpb::{event::EventType, Event, KeyValue};
use capstan_proto::store::{command, Command};
use capstan_store::header::HeaderSource;
use capstan_store::watch::{StreamId, WatchRx};
use capstan_store::{server, HubConfig, Mvcc, Node, NodeConfig, WatchHub};
use common::{Counter, DEADLINE};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use futures::channel::mpsc;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Runtime;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

// The capstan binary's allocator: the server side measured as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Events of one `burst_*` iteration.
const BURST_EVENTS: usize = 100;
/// The key every store-level watcher watches.
const HOT_KEY: &[u8] = b"/bench/hot";
/// The value written: 256 bytes, a small object.
const VALUE_BYTES: usize = 256;
/// Hub streams of the `*_hub` groups.
const HUB_STREAMS_MAX: usize = 4;
/// gRPC watch streams, and the connections they share.
const GRPC_STREAMS_MAX: usize = 100;
const GRPC_CONNECTIONS: usize = 4;
/// HTTP connections at least, and watch streams per connection at most.
const HTTP_CONNECTIONS_MIN: usize = 100;
const HTTP_STREAMS_PER_CONNECTION_MAX: usize = 100;
/// The ConfigMap the cache and HTTP groups change.
const CONFIGMAP_KEY: &str = "/registry/configmaps/default/hot";

/// A group of this suite: 10 samples, short warm-up and measurement.
fn group<'a>(c: &'a mut Criterion, name: &str, flat: bool) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    if flat {
        g.sampling_mode(SamplingMode::Flat);
    }
    g
}

fn put_event(rev: i64, value: &Bytes) -> Vec<Event> {
    vec![Event {
        r#type: EventType::Put as i32,
        kv: Some(KeyValue {
            key: Bytes::from_static(HOT_KEY),
            create_revision: 2,
            mod_revision: rev,
            version: rev,
            value: value.clone(),
            lease: 0,
        }),
        prev_kv: None,
    }]
}

// ---- hub ------------------------------------------------------------------------------

struct HubRig {
    hub: Arc<WatchHub>,
    receivers: Vec<(StreamId, WatchRx, usize)>,
    rev: i64,
    value: Bytes,
    _dir: tempfile::TempDir,
}

impl HubRig {
    /// A hub with `n` synced watchers of one key over a few streams, whose queues hold
    /// `burst` revisions for every watcher (and one more), so that nothing parks.
    fn new(n: usize, burst: usize) -> HubRig {
        let dir = common::tempdir("hub-");
        let mvcc = Arc::new(Mvcc::open(&dir.path().join("db")).expect("opening the store"));
        let header = Arc::new(HeaderSource::new(1, 1));
        let streams = n.clamp(1, HUB_STREAMS_MAX);
        let per_stream = n.div_ceil(streams);
        let config = HubConfig {
            stream_queue_max: (burst + 1) * per_stream + 16,
            watchers_per_stream_max: per_stream + 1,
            watchers_max: n + 1,
            ..HubConfig::default()
        };
        let hub = WatchHub::start(mvcc, header, config);
        let req = WatchCreateRequest {
            key: Bytes::from_static(HOT_KEY),
            ..Default::default()
        };
        let mut receivers = Vec::with_capacity(streams);
        let mut left = n;
        for _ in 0..streams {
            let (sid, rx) = hub.open_stream();
            let count = per_stream.min(left);
            left -= count;
            for _ in 0..count {
                let (id, created) = hub.reserve(sid, &req).expect("reserving a watcher");
                hub.register(sid, id, &req, created);
            }
            receivers.push((sid, rx, count));
        }
        assert_eq!(hub.counts(), (n, 0), "every watcher is synced");
        let rev = hub.revision();
        HubRig {
            hub,
            receivers,
            rev,
            value: Bytes::from(vec![b'v'; VALUE_BYTES]),
            _dir: dir,
        }
    }

    /// Notifies `events` revisions and takes every response off the queues; the time
    /// from the first notify to the last response taken.
    fn notify_and_drain(&mut self, events: usize) -> Duration {
        let batch: Vec<(i64, Vec<Event>)> = (1..=events as i64)
            .map(|i| (self.rev + i, put_event(self.rev + i, &self.value)))
            .collect();
        self.rev += events as i64;
        let t0 = Instant::now();
        for (rev, evs) in batch {
            self.hub.notify(rev, evs, None);
        }
        for (sid, rx, count) in &mut self.receivers {
            for _ in 0..*count * events {
                match rx.try_recv() {
                    Ok(resp) => {
                        std::hint::black_box(resp);
                    }
                    Err(e) => panic!("stream {sid}: a watcher did not get its event: {e}"),
                }
            }
        }
        t0.elapsed()
    }
}

fn hub(c: &mut Criterion) {
    for (name, events) in [("fanout_hub", 1), ("burst_hub", BURST_EVENTS)] {
        // A burst at 10,000 watchers takes a third of a second: flat sampling.
        let mut g = group(c, name, events > 1);
        for n in common::watchers() {
            let mut rig = HubRig::new(n, events);
            g.throughput(Throughput::Elements((n * events) as u64));
            g.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| rig.notify_and_drain(events)).sum())
            });
            rig.hub.stop();
        }
        g.finish();
    }
}

// ---- a member in this process ---------------------------------------------------------

/// A single store member, optionally serving the etcd API on a port of 127.0.0.1.
struct Member {
    node: Arc<Node>,
    endpoint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Member {
    /// Starts a member (inside `rt`); with `serve`, its etcd gRPC services too.
    fn start(rt: &Runtime, serve: bool) -> Member {
        let dir = common::tempdir("fanout-");
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("local address");
            let mut config = NodeConfig::new("bench", dir.path().join("data"));
            config.client_url = format!("http://{addr}");
            let node = Node::start(config).expect("starting the member");
            let deadline = Instant::now() + DEADLINE;
            while !node.is_leader() {
                assert!(Instant::now() < deadline, "the member did not become leader");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut stop = None;
            if serve {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                tokio::spawn(server::serve(node.clone(), listener, async {
                    let _ = rx.await;
                }));
                stop = Some(tx);
            }
            Member {
                node,
                endpoint: format!("http://{addr}"),
                stop,
                _dir: dir,
            }
        })
    }

    async fn put(&self, key: &str, value: Bytes) {
        let cmd = Command {
            op: Some(command::Op::Put(PutRequest {
                key: Bytes::from(key.to_string()),
                value,
                ..Default::default()
            })),
        };
        self.node.propose(cmd).await.expect("put");
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.node.stop();
    }
}

/// A ConfigMap's JSON, `round` in its data, padded to about [`VALUE_BYTES`].
fn configmap(round: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"hot","namespace":"default"}},"data":{{"n":"{round}","pad":"{}"}}}}"#,
        "p".repeat(VALUE_BYTES / 2)
    ))
}

// ---- watch cache ----------------------------------------------------------------------

/// Reads `subscription`'s queue until it has had `events` events (progress messages
/// skipped); panics after the deadline.
async fn drain(sub: &mut Subscription, events: usize) {
    let mut got = 0;
    while got < events {
        let msg = match sub.rx.try_recv() {
            Ok(m) => m,
            Err(TryRecvError::Empty) => tokio::time::timeout(DEADLINE, sub.rx.recv())
                .await
                .expect("a subscription had no event before the deadline")
                .expect("a subscription was dropped by the cache"),
            Err(TryRecvError::Disconnected) => panic!("a subscription was dropped by the cache"),
        };
        if let Message::Event(ev) = msg {
            std::hint::black_box(ev);
            got += 1;
        }
    }
}

fn cache(c: &mut Criterion) {
    let rt = common::runtime();
    let member = Member::start(&rt, false);
    let configmaps = ResourceType::find("", "v1", "configmaps").expect("ConfigMaps are served");
    let cache = rt.block_on(async {
        let cache = WatchCache::start(Storage::local(member.node.clone()), configmaps, 10_000);
        member.put(CONFIGMAP_KEY, configmap(0)).await;
        let deadline = Instant::now() + DEADLINE;
        while cache.get(CONFIGMAP_KEY.as_bytes()).is_none() {
            assert!(Instant::now() < deadline, "the watch cache did not load");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cache
    });
    let mut round = 0u64;
    for (name, events) in [("fanout_cache", 1), ("burst_cache", BURST_EVENTS)] {
        let mut g = group(c, name, true);
        for n in common::watchers() {
            let mut subs: Vec<Subscription> = rt.block_on(async {
                let after = Some(cache.revision());
                let mut subs = Vec::with_capacity(n);
                for _ in 0..n {
                    subs.push(
                        cache
                            .subscribe(b"/registry/configmaps/default/", after)
                            .await
                            .expect("subscribing"),
                    );
                }
                subs
            });
            g.throughput(Throughput::Elements((n * events) as u64));
            g.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let values: Vec<Bytes> = (0..events)
                                .map(|_| {
                                    round += 1;
                                    configmap(round)
                                })
                                .collect();
                            let t0 = Instant::now();
                            futures::future::join_all(values.into_iter().map(|v| member.put(CONFIGMAP_KEY, v))).await;
                            for s in &mut subs {
                                drain(s, events).await;
                            }
                            total += t0.elapsed();
                        }
                        total
                    })
                })
            });
        }
        g.finish();
    }
    drop(cache);
    drop(member);
}

// ---- etcd gRPC ------------------------------------------------------------------------

async fn connect(endpoint: &str) -> Channel {
    Endpoint::from_shared(endpoint.to_string())
        .expect("endpoint")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connecting")
}

/// N watchers of [`HOT_KEY`] over gRPC streams whose reader tasks count the events.
struct GrpcWatchers {
    delivered: Arc<Counter>,
    /// The request side of each stream (kept open) and its reader.
    streams: Vec<(mpsc::UnboundedSender<WatchRequest>, JoinHandle<()>)>,
}

impl GrpcWatchers {
    async fn open(channels: &[Channel], n: usize) -> GrpcWatchers {
        let delivered = Arc::new(Counter::default());
        let streams_n = n.clamp(1, GRPC_STREAMS_MAX);
        let per_stream = n.div_ceil(streams_n);
        let mut left = n;
        let mut streams = Vec::with_capacity(streams_n);
        for i in 0..streams_n {
            let count = per_stream.min(left);
            left -= count;
            let mut client = WatchClient::new(channels[i % channels.len()].clone());
            let (tx, rx) = mpsc::unbounded();
            let mut responses = client.watch(rx).await.expect("opening a watch stream").into_inner();
            for _ in 0..count {
                tx.unbounded_send(WatchRequest {
                    request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
                        key: Bytes::from_static(HOT_KEY),
                        ..Default::default()
                    })),
                })
                .expect("sending a create request");
            }
            let mut created = 0;
            while created < count {
                let resp = tokio::time::timeout(DEADLINE, responses.message())
                    .await
                    .expect("no created response before the deadline")
                    .expect("watch stream error")
                    .expect("watch stream ended");
                assert!(resp.created && !resp.canceled, "watch refused: {resp:?}");
                created += 1;
            }
            let counter = delivered.clone();
            let reader = tokio::spawn(async move {
                while let Ok(Some(resp)) = responses.message().await {
                    if !resp.events.is_empty() {
                        counter.add(resp.events.len() as u64);
                    }
                }
            });
            streams.push((tx, reader));
        }
        GrpcWatchers { delivered, streams }
    }

    fn close(self) {
        for (tx, reader) in self.streams {
            drop(tx);
            reader.abort();
        }
    }
}

async fn grpc_put(kv: &mut KvClient<Channel>, value: Bytes) {
    kv.put(PutRequest {
        key: Bytes::from_static(HOT_KEY),
        value,
        ..Default::default()
    })
    .await
    .expect("put over gRPC");
}

fn grpc(c: &mut Criterion) {
    let rt = common::runtime();
    let member = Member::start(&rt, true);
    let (channels, kv) = rt.block_on(async {
        let mut channels = Vec::with_capacity(GRPC_CONNECTIONS);
        for _ in 0..GRPC_CONNECTIONS {
            channels.push(connect(&member.endpoint).await);
        }
        (channels, KvClient::new(connect(&member.endpoint).await))
    });
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    for (name, events) in [("fanout_grpc", 1), ("burst_grpc", BURST_EVENTS)] {
        let mut g = group(c, name, true);
        for n in common::watchers() {
            let watchers = rt.block_on(GrpcWatchers::open(&channels, n));
            g.throughput(Throughput::Elements((n * events) as u64));
            g.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let target = watchers.delivered.get() + (n * events) as u64;
                            let t0 = Instant::now();
                            futures::future::join_all((0..events).map(|_| {
                                let mut kv = kv.clone();
                                let value = value.clone();
                                async move { grpc_put(&mut kv, value).await }
                            }))
                            .await;
                            watchers.delivered.wait_for(target, "gRPC deliveries").await;
                            total += t0.elapsed();
                        }
                        total
                    })
                })
            });
            watchers.close();
            // The server drops the closed streams' watchers before the next N opens.
            rt.block_on(async {
                let deadline = Instant::now() + DEADLINE;
                while member.node.hub.counts() != (0, 0) {
                    assert!(Instant::now() < deadline, "closed streams kept their watchers");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        g.finish();
    }
    drop(member);
}

// ---- Kubernetes watch over HTTP -------------------------------------------------------

type H2 = Client<HttpConnector, Full<Bytes>>;

fn h2_client() -> H2 {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .http2_max_concurrent_reset_streams(1024)
        .build({
            let mut c = HttpConnector::new();
            c.set_nodelay(true);
            c
        })
}

async fn call(client: &H2, method: &str, url: &str, ctype: &str, body: String) -> Result<u16, String> {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    resp.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok(code)
}

/// `n` HTTP watch streams of the ConfigMap, each counting the event lines it reads,
/// open once every stream has read its first line (the synthetic ADDED).
async fn open_http_watchers(base: &str, clients: &[H2], n: usize, delivered: &Arc<Counter>) -> Vec<JoinHandle<()>> {
    let url = format!(
        "{base}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0&fieldSelector=metadata.name%3Dhot"
    );
    let start = delivered.get();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let client = clients[i % clients.len()].clone();
        let (url, delivered) = (url.clone(), delivered.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + DEADLINE;
            let resp = loop {
                let req = Request::builder()
                    .uri(url.as_str())
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                match client.request(req).await {
                    Ok(resp) if resp.status() == 200 => break resp,
                    // The previous size's watchers, just aborted, may not all be gone
                    // from the server yet: its cache refuses watchers past its limit
                    // (429) until they are. The opening count below fails the run if
                    // this never succeeds.
                    _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                    _ => return,
                }
            };
            let mut body = resp.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    let lines = data.iter().filter(|b| **b == b'\n').count() as u64;
                    if lines > 0 {
                        delivered.add(lines);
                    }
                }
            }
        }));
    }
    delivered.wait_for(start + n as u64, "HTTP watches opening").await;
    tasks
}

fn http(c: &mut Criterion) {
    let rt = common::runtime();
    let member = Member::start(&rt, false);
    let base = rt.block_on(async {
        let api = Api::new(Storage::local(member.node.clone()), ApiConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("local address"));
        tokio::spawn(capstan_apiserver::serve(listener, api, std::future::pending()));
        base
    });
    let writer = h2_client();
    rt.block_on(async {
        let deadline = Instant::now() + DEADLINE;
        let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"hot"},"data":{"n":"0"}}"#;
        let url = format!("{base}/api/v1/namespaces/default/configmaps");
        loop {
            match call(&writer, "POST", &url, "application/json", body.to_string()).await {
                Ok(201 | 409) => break,
                _ => {
                    assert!(Instant::now() < deadline, "the API did not come up");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    let patch_url = format!("{base}/api/v1/namespaces/default/configmaps/hot");
    let mut round = 0u64;
    let mut g = group(c, "fanout_http", true);
    for n in common::watchers() {
        let connections = HTTP_CONNECTIONS_MIN.max(n.div_ceil(HTTP_STREAMS_PER_CONNECTION_MAX));
        let clients: Vec<H2> = (0..connections).map(|_| h2_client()).collect();
        let delivered = Arc::new(Counter::default());
        let tasks = rt.block_on(open_http_watchers(&base, &clients, n, &delivered));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        round += 1;
                        let body = format!(r#"{{"data":{{"n":"{round}"}}}}"#);
                        let target = delivered.get() + n as u64;
                        let t0 = Instant::now();
                        let code = call(&writer, "PATCH", &patch_url, "application/merge-patch+json", body)
                            .await
                            .expect("patch");
                        assert_eq!(code, 200, "the patch was answered {code}");
                        delivered.wait_for(target, "HTTP deliveries").await;
                        total += t0.elapsed();
                    }
                    total
                })
            })
        });
        for t in tasks {
            t.abort();
        }
    }
    g.finish();
    drop(member);
}

criterion_group!(benches, hub, cache, grpc, http);
criterion_main!(benches);
