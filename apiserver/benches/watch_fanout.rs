//! Watch-cache fan-out over HTTP: one change to a ConfigMap delivered to N HTTP watch
//! streams (N = 1, 100, 1,000, 10,000), measured from the update request being sent
//! until every watcher has read its event line. The API runs in this process over a
//! single store member (real RocksDB and Raft, fsync included); the watchers share
//! 100 HTTP/2 connections (h2c), as informers of many clients would share a proxy.
//!
//!   cargo bench -p capstan-apiserver --bench watch_fanout
//!
//! Short by default (a second of warm-up, three of measurement per N).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use capstan_apiserver::{Api, ApiConfig, Storage};
use capstan_store::{Node, NodeConfig};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;

const CONNECTIONS: usize = 100;
const WATCHERS: [usize; 4] = [1, 100, 1_000, 10_000];

type H2 = Client<HttpConnector, Full<Bytes>>;

struct Setup {
    rt: tokio::runtime::Runtime,
    base: String,
    clients: Vec<H2>,
    node: Arc<Node>,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, base) = rt.block_on(async {
        let node = Node::start(NodeConfig::new("bench", dir.path().to_path_buf())).expect("store");
        let api = Api::new(Storage::local(node.clone()), ApiConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(capstan_apiserver::serve(listener, api, std::future::pending()));
        (node, base)
    });
    let clients = (0..CONNECTIONS)
        .map(|_| {
            Client::builder(TokioExecutor::new())
                .http2_only(true)
                .http2_max_concurrent_reset_streams(1024)
                .build({
                    let mut c = HttpConnector::new();
                    c.set_nodelay(true);
                    c
                })
        })
        .collect();
    let s = Setup {
        rt,
        base,
        clients,
        node,
        _dir: dir,
    };
    // The ConfigMap every round changes.
    s.rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"hot"},"data":{"n":"0"}}"#;
            if let Ok(code) = call(
                &s.clients[0],
                "POST",
                &s.url("/api/v1/namespaces/default/configmaps"),
                body,
            )
            .await
            {
                if code == 201 || code == 409 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the API did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    s
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

async fn call(client: &H2, method: &str, url: &str, body: &str) -> Result<u16, String> {
    let ctype = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    resp.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok(code)
}

/// Waits until `delivered` reaches `target`. The waiter registers before it checks, so
/// no notification between the check and the wait is lost.
async fn wait_until(delivered: &AtomicU64, arrived: &Notify, target: u64) {
    loop {
        let wait = arrived.notified();
        tokio::pin!(wait);
        wait.as_mut().enable();
        if delivered.load(Ordering::Acquire) >= target {
            return;
        }
        // Bounded, so that a lost watcher shows as a slow sample, not a hang.
        let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
    }
}

fn fanout(c: &mut Criterion) {
    let s = setup();
    let mut group = c.benchmark_group("watch_cache_fanout_http");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut round = 0u64;
    for n in WATCHERS {
        let delivered = Arc::new(AtomicU64::new(0));
        let arrived = Arc::new(Notify::new());
        let watch_url = s.url(
            "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0&fieldSelector=metadata.name%3Dhot",
        );
        // Open the watchers; each counts the event lines it reads (the first is the
        // synthetic ADDED of the current state).
        let tasks: Vec<_> = s.rt.block_on(async {
            let mut tasks = Vec::with_capacity(n);
            for i in 0..n {
                let client = s.clients[i % CONNECTIONS].clone();
                let (url, delivered, arrived) = (watch_url.clone(), delivered.clone(), arrived.clone());
                tasks.push(tokio::spawn(async move {
                    let req = Request::builder()
                        .uri(url)
                        .body(Full::new(Bytes::new()))
                        .expect("request");
                    let Ok(resp) = client.request(req).await else { return };
                    let mut body = resp.into_body();
                    while let Some(Ok(frame)) = body.frame().await {
                        if let Some(data) = frame.data_ref() {
                            let lines = data.iter().filter(|b| **b == b'\n').count() as u64;
                            if lines > 0 {
                                delivered.fetch_add(lines, Ordering::AcqRel);
                                arrived.notify_waiters();
                            }
                        }
                    }
                }));
            }
            // Every watcher has its ADDED event: all are subscribed.
            wait_until(&delivered, &arrived, n as u64).await;
            tasks
        });
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| {
                s.rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        round += 1;
                        let target = delivered.load(Ordering::Acquire) + n as u64;
                        let t = Instant::now();
                        let code = call(
                            &s.clients[0],
                            "PATCH",
                            &s.url("/api/v1/namespaces/default/configmaps/hot"),
                            &format!(r#"{{"data":{{"n":"{round}"}}}}"#),
                        )
                        .await
                        .expect("patch");
                        assert_eq!(code, 200, "patch answered {code}");
                        wait_until(&delivered, &arrived, target).await;
                        total += t.elapsed();
                    }
                    total
                })
            })
        });
        for t in tasks {
            t.abort();
        }
    }
    group.finish();
    s.node.stop();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
