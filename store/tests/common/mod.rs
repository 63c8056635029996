//! Shared by the store's integration tests: an in-process node serving the etcd API on a
//! real TCP port, and small client helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use capstan_proto::etcdserverpb::kv_client::KvClient;
use capstan_proto::etcdserverpb::watch_client::WatchClient;
use capstan_proto::etcdserverpb::{watch_request, PutRequest, WatchCreateRequest, WatchRequest, WatchResponse};
use capstan_store::{server, Node, NodeConfig};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

/// The longest any test waits for a condition before failing.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub struct Server {
    pub node: Arc<Node>,
    pub endpoint: String,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.node.stop();
    }
}

pub async fn start_with(configure: impl FnOnce(&mut NodeConfig)) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut config = NodeConfig::new("test", dir.path().join("data"));
    config.client_url = format!("http://{addr}");
    configure(&mut config);
    let node = Node::start(config).expect("start node");
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(server::serve(node.clone(), listener, async {
        let _ = rx.await;
    }));
    Server {
        node,
        endpoint: format!("http://{addr}"),
        dir,
        stop: Some(tx),
    }
}

pub async fn start() -> Server {
    start_with(|_| {}).await
}

pub async fn kv(s: &Server) -> KvClient<Channel> {
    KvClient::connect(s.endpoint.clone()).await.expect("connect kv")
}

pub async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> i64 {
    let r = kv
        .put(PutRequest {
            key: Bytes::from(key.to_string()),
            value: Bytes::from(value.to_string()),
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner();
    r.header.expect("header").revision
}

/// One client watch stream: requests go in through `tx`, responses come out of `rx`.
pub struct WatchStream {
    pub tx: mpsc::Sender<WatchRequest>,
    pub rx: Streaming<WatchResponse>,
}

impl WatchStream {
    pub async fn open(s: &Server) -> WatchStream {
        let mut client = WatchClient::connect(s.endpoint.clone()).await.expect("connect watch");
        let (tx, req_rx) = mpsc::channel(1024);
        let rx = client
            .watch(ReceiverStream::new(req_rx))
            .await
            .expect("watch")
            .into_inner();
        WatchStream { tx, rx }
    }

    pub async fn send(&self, req: WatchCreateRequest) {
        self.tx
            .send(WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(req)),
            })
            .await
            .expect("send create");
    }

    /// Creates a watcher and returns its ID from the created response.
    pub async fn create(&mut self, req: WatchCreateRequest) -> i64 {
        self.send(req).await;
        let r = self.next().await;
        assert!(r.created, "expected a created response, got {r:?}");
        assert!(!r.canceled, "watch refused: {r:?}");
        r.watch_id
    }

    pub async fn next(&mut self) -> WatchResponse {
        tokio::time::timeout(DEADLINE, self.rx.message())
            .await
            .expect("no watch response before the deadline")
            .expect("watch stream error")
            .expect("watch stream ended")
    }
}

pub fn watch_req(key: &str, end: &str, start: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: Bytes::from(key.to_string()),
        range_end: Bytes::from(end.to_string()),
        start_revision: start,
        ..Default::default()
    }
}

pub fn prefix_end(p: &str) -> String {
    let mut b = p.as_bytes().to_vec();
    let last = b.pop().expect("non-empty prefix");
    b.push(last + 1);
    String::from_utf8(b).expect("ascii")
}

/// Polls `f` until it returns true or the deadline passes.
pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// SplitMix64: a tiny deterministic generator for seeded tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}
