//! `pods/{name}/log` through the real apiserver (over a real single-member store, in this
//! process, on a real port) to a fake node agent (an axum server on another port): the
//! path and query the agent gets, its body back, streaming of follows chunk by chunk,
//! upstream's container errors and option validation, and the errors for a node whose
//! agent cannot be reached. And, on the same server, `/metrics`: the requests counted
//! by verb, resource and code, the latency histogram, watchers and the process's own
//! metrics after the API server's.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use capstan_apiserver::{Api, ApiConfig, Storage};
use capstan_store::{Node, NodeConfig};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);

/// What the fake agent saw, and the chunks a follow sends (one at a time, as the test says).
#[derive(Default)]
struct Fake {
    requests: Mutex<Vec<String>>,
    follow: tokio::sync::Mutex<Option<mpsc::Receiver<Bytes>>>,
}

async fn fake_logs(
    State(fake): State<Arc<Fake>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    fake.requests
        .lock()
        .expect("lock")
        .push(format!("/containerLogs/{ns}/{pod}/{container}?{query}"));
    if query.contains("previous=true") {
        return (
            StatusCode::BAD_REQUEST,
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found"),
        )
            .into_response();
    }
    if container == "gone" {
        return (
            StatusCode::NOT_FOUND,
            format!("container \"gone\" not found in pod \"{pod}\""),
        )
            .into_response();
    }
    if query.contains("follow=true") {
        let Some(rx) = fake.follow.lock().await.take() else {
            return (StatusCode::INTERNAL_SERVER_ERROR, "one follow per test").into_response();
        };
        let chunks = futures::stream::unfold(rx, |mut rx| async move {
            let chunk = rx.recv().await?;
            Some((Ok::<_, std::io::Error>(chunk), rx))
        });
        return Response::new(Body::from_stream(chunks));
    }
    format!("logs of {ns}/{pod}/{container}\nline 2\n").into_response()
}

async fn start_fake(fake: Arc<Fake>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/containerLogs/{ns}/{pod}/{container}", get(fake_logs))
        .with_state(fake);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct Env {
    node: Arc<Node>,
    _dir: tempfile::TempDir,
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.node.stop();
    }
}

async fn start() -> Env {
    start_with(ApiConfig::default()).await
}

async fn start_with(config: ApiConfig) -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(NodeConfig::new("pod-logs-test", dir.path().to_path_buf())).expect("start the store");
    let api = Api::new(Storage::local(node.clone()), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(capstan_apiserver::serve(listener, api, async move {
        let _ = rx.await;
    }));
    Env {
        node,
        _dir: dir,
        base: format!("http://{addr}"),
        client: Client::builder(TokioExecutor::new()).build_http(),
        _shutdown: tx,
    }
}

impl Env {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> hyper::Response<Incoming> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = req.body(Full::new(body)).expect("request");
        timeout(DEADLINE, self.client.request(req))
            .await
            .expect("an answer in time")
            .expect("an answer")
    }

    /// The whole answer: code and body.
    async fn get(&self, path: &str) -> (u16, String) {
        let r = self.send("GET", path, None).await;
        let code = r.status().as_u16();
        let body = timeout(DEADLINE, r.into_body().collect())
            .await
            .expect("the body in time")
            .expect("the body")
            .to_bytes();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    async fn create(&self, path: &str, obj: Value) {
        let r = self.send("POST", path, Some(obj)).await;
        let code = r.status().as_u16();
        let body = r.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(code, 201, "POST {path}: {}", String::from_utf8_lossy(&body));
    }
}

fn node(name: &str, port: Option<u16>) -> Value {
    let mut status = json!({"addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
        {"type": "Hostname", "address": name}]});
    if let Some(p) = port {
        status["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": p}});
    }
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": status})
}

fn pod(name: &str, node: Option<&str>, containers: &[&str], init: &[&str]) -> Value {
    let c = |n: &&str| json!({"name": n, "image": "busybox", "command": ["sleep", "1"]});
    let mut spec = json!({"containers": containers.iter().map(c).collect::<Vec<_>>()});
    if !init.is_empty() {
        spec["initContainers"] = json!(init.iter().map(c).collect::<Vec<_>>());
    }
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

fn status_message(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("a Status: {body}"));
    assert_eq!(v["kind"], "Status", "{body}");
    (
        v["reason"].as_str().unwrap_or("").to_string(),
        v["message"].as_str().unwrap_or("").to_string(),
    )
}

const PODS: &str = "/api/v1/namespaces/default/pods";

/// Nodes and pods of every test: `n1` with the fake agent, `bare` without a port,
/// `dead` with a port nothing listens on.
async fn setup(env: &Env, agent: SocketAddr) {
    // A port that was free a moment ago and is closed now: nothing answers there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    env.create("/api/v1/nodes", node("n1", Some(agent.port()))).await;
    env.create("/api/v1/nodes", node("bare", None)).await;
    env.create("/api/v1/nodes", node("dead", Some(closed))).await;
    env.create(PODS, pod("one", Some("n1"), &["c"], &[])).await;
    env.create(PODS, pod("two", Some("n1"), &["a", "b"], &["i"])).await;
    env.create(PODS, pod("lost", Some("bare"), &["c"], &[])).await;
    env.create(PODS, pod("cut-off", Some("dead"), &["c"], &[])).await;
    env.create(PODS, pod("pending", None, &["c"], &[])).await;
    env.create(PODS, pod("ghost", Some("n1"), &["gone"], &[])).await;
}

#[tokio::test]
async fn logs_come_from_the_agent_of_the_pods_node() {
    let env = start().await;
    let fake = Arc::new(Fake::default());
    let agent = start_fake(fake.clone()).await;
    setup(&env, agent).await;

    let (code, body) = env.get(&format!("{PODS}/one/log?container=c&tailLines=2")).await;
    assert_eq!((code, body.as_str()), (200, "logs of default/one/c\nline 2\n"));
    // The only container is the default; the options go along as upstream sends them.
    let (code, _) = env
        .get(&format!("{PODS}/one/log?limitBytes=10&timestamps=true&sinceSeconds=5"))
        .await;
    assert_eq!(code, 200);
    // An init container is a valid choice.
    let (code, body) = env.get(&format!("{PODS}/two/log?container=i")).await;
    assert_eq!((code, body.as_str()), (200, "logs of default/two/i\nline 2\n"));
    assert_eq!(
        fake.requests.lock().expect("lock").clone(),
        [
            "/containerLogs/default/one/c?tailLines=2",
            "/containerLogs/default/one/c?limitBytes=10&sinceSeconds=5&timestamps=true",
            "/containerLogs/default/two/i?",
        ]
    );

    let r = env.send("GET", &format!("{PODS}/one/log"), None).await;
    assert_eq!(
        r.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/plain")
    );
}

#[tokio::test]
async fn containers_options_and_nodes_are_checked_before_the_agent_is_asked() {
    let env = start().await;
    let fake = Arc::new(Fake::default());
    let agent = start_fake(fake.clone()).await;
    setup(&env, agent).await;

    let (code, body) = env.get(&format!("{PODS}/two/log")).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        status_message(&body),
        (
            "BadRequest".into(),
            "a container name must be specified for pod two, choose one of: [a b] or one of the init containers: [i]"
                .into()
        )
    );
    let (code, body) = env.get(&format!("{PODS}/one/log?container=x")).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(status_message(&body).1, "container x is not valid for pod one");
    let (code, body) = env.get(&format!("{PODS}/one/log?tailLines=-1")).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        status_message(&body),
        (
            "Invalid".into(),
            "PodLogOptions \"one\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0".into()
        )
    );
    let (code, body) = env
        .get(&format!("{PODS}/one/log?sinceSeconds=1&sinceTime=2024-01-01T00:00:00Z"))
        .await;
    assert_eq!(code, 422, "{body}");
    let (code, body) = env.get(&format!("{PODS}/missing/log")).await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(status_message(&body).1, "pods \"missing\" not found");
    // Not scheduled: no logs yet, as upstream (204).
    let (code, body) = env.get(&format!("{PODS}/pending/log")).await;
    assert_eq!((code, body.as_str()), (204, ""));
    assert!(
        fake.requests.lock().expect("lock").is_empty(),
        "none of these reached the agent"
    );

    // A node that publishes no agent port, and one whose agent does not answer.
    let (code, body) = env.get(&format!("{PODS}/lost/log")).await;
    assert_eq!(code, 503, "{body}");
    let (reason, message) = status_message(&body);
    assert_eq!(reason, "ServiceUnavailable");
    assert!(message.contains("node bare"), "{message}");
    let (code, body) = env.get(&format!("{PODS}/cut-off/log")).await;
    assert_eq!(code, 503, "{body}");
    assert!(status_message(&body).1.contains("node dead"), "{body}");

    // The agent's refusals: its 400 text is the message, as upstream passes it on.
    let (code, body) = env.get(&format!("{PODS}/one/log?previous=true")).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        status_message(&body),
        (
            "BadRequest".into(),
            "previous terminated container \"c\" in pod \"one\" not found".into()
        )
    );
    // Its 404 becomes upstream's generic NotFound, its text a cause.
    let (code, body) = env.get(&format!("{PODS}/ghost/log")).await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(
        status_message(&body),
        (
            "NotFound".into(),
            "the server could not find the requested resource ( pods/log ghost)".into()
        )
    );
    let status: Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "container \"gone\" not found in pod \"ghost\""
    );
}

/// The next non-empty data frame of a body, or None at its end.
async fn next_data(body: &mut Incoming) -> Option<Bytes> {
    loop {
        let frame = timeout(DEADLINE, body.frame()).await.expect("a frame in time")?;
        if let Ok(data) = frame.expect("a frame").into_data() {
            if !data.is_empty() {
                return Some(data);
            }
        }
    }
}

#[tokio::test]
async fn a_follow_streams_chunks_as_the_agent_sends_them() {
    let env = start().await;
    let fake = Arc::new(Fake::default());
    let (tx, rx) = mpsc::channel(4);
    *fake.follow.lock().await = Some(rx);
    let agent = start_fake(fake.clone()).await;
    setup(&env, agent).await;

    tx.send(Bytes::from_static(b"first\n")).await.expect("send");
    let r = env.send("GET", &format!("{PODS}/one/log?follow=true"), None).await;
    assert_eq!(r.status().as_u16(), 200);
    let mut body = r.into_body();
    // The first chunk arrives while the agent's body is still open.
    assert_eq!(next_data(&mut body).await.as_deref(), Some(&b"first\n"[..]));
    tx.send(Bytes::from_static(b"second\n")).await.expect("send");
    assert_eq!(next_data(&mut body).await.as_deref(), Some(&b"second\n"[..]));
    drop(tx);
    assert_eq!(
        next_data(&mut body).await,
        None,
        "the stream ends when the agent's does"
    );
    assert_eq!(
        fake.requests.lock().expect("lock").clone(),
        ["/containerLogs/default/one/c?follow=true"]
    );
}

#[tokio::test]
async fn a_client_that_goes_away_ends_the_agents_stream() {
    let env = start().await;
    let fake = Arc::new(Fake::default());
    let (tx, rx) = mpsc::channel(4);
    *fake.follow.lock().await = Some(rx);
    let agent = start_fake(fake.clone()).await;
    setup(&env, agent).await;

    tx.send(Bytes::from_static(b"first\n")).await.expect("send");
    let r = env.send("GET", &format!("{PODS}/one/log?follow=true"), None).await;
    let mut body = r.into_body();
    assert_eq!(next_data(&mut body).await.as_deref(), Some(&b"first\n"[..]));
    drop(body);
    // The agent's body (the receiving end of `tx`) is dropped once the API server has
    // dropped its connection to the agent.
    timeout(DEADLINE, tx.closed())
        .await
        .expect("the agent's stream ends once the client is gone");
}

/// The value of the series `series` (name and labels, as the text format writes them).
fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("a number: {v}")))
}

/// The labels of the requests below, between the verb and the code.
fn request_series(name: &str, verb: &str, resource: &str, subresource: &str, scope: &str, code: Option<u16>) -> String {
    let code = code.map_or(String::new(), |c| format!(",code=\"{c}\""));
    format!(
        "{name}{{verb=\"{verb}\",group=\"\",version=\"v1\",resource=\"{resource}\",subresource=\"{subresource}\",scope=\"{scope}\",component=\"apiserver\"{code}}}"
    )
}

#[tokio::test]
async fn metrics_count_requests_by_verb_resource_and_code() {
    let process = {
        let mut registry = prometheus_client::registry::Registry::default();
        let things = prometheus_client::metrics::counter::Counter::<u64>::default();
        things.inc_by(7);
        registry.register("capstan_test_things", "Things of the rest of the process", things);
        Arc::new(registry)
    };
    let env = start_with(ApiConfig {
        process_metrics: Some(process),
        ..ApiConfig::default()
    })
    .await;
    let cms = "/api/v1/namespaces/default/configmaps";
    env.create(
        cms,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "one"}}),
    )
    .await;
    assert_eq!(env.get(cms).await.0, 200);
    assert_eq!(env.get(&format!("{cms}/missing")).await.0, 404);
    assert_eq!(env.get(&format!("{PODS}/missing/log")).await.0, 404);

    // A watch, open: long-running, a registered watcher, not counted yet. Its timeout is
    // past every deadline of this test: it ends when this client goes away, not with time.
    let watch = env
        .send("GET", &format!("{cms}?watch=true&timeoutSeconds=3600"), None)
        .await;
    assert_eq!(watch.status().as_u16(), 200);
    let mut watch = watch.into_body();
    assert!(
        next_data(&mut watch).await.is_some(),
        "the ADDED event of the config map"
    );
    let r = env.send("GET", "/metrics", None).await;
    assert_eq!(
        r.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (code, text) = env.get("/metrics").await;
    assert_eq!(code, 200);
    let open = request_series(
        "apiserver_longrunning_requests",
        "WATCH",
        "configmaps",
        "",
        "namespace",
        None,
    );
    assert_eq!(series_value(&text, &open), Some(1.0), "{text}");
    let watchers = r#"apiserver_registered_watchers{group="",version="v1",kind="ConfigMap"}"#;
    assert_eq!(series_value(&text, watchers), Some(1.0), "{text}");
    let watched = request_series(
        "apiserver_request_total",
        "WATCH",
        "configmaps",
        "",
        "namespace",
        Some(200),
    );
    assert_eq!(series_value(&text, &watched), None, "a watch is counted when it ends");

    // The client goes away; the server finds out when it next writes to the watch, so
    // each round writes a config map (straight to the store: no REST request to count).
    // Then the watch is counted, and no longer open.
    drop(watch);
    let storage = Storage::local(env.node.clone());
    let configmaps = capstan_apiserver::resources::ResourceType::find("", "v1", "configmaps").expect("configmaps");
    // The caches keep up with the store: no lag once they heard of its revision.
    let lag = r#"capstan_watch_cache_lag_revisions{group="",resource="configmaps"}"#;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut nudges = 0;
    let text = loop {
        nudges += 1;
        let name = format!("nudge-{nudges}");
        let nudge =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}});
        storage
            .create(
                &configmaps.key(Some("default"), &name),
                Bytes::from(nudge.to_string()),
                &[],
            )
            .await
            .expect("the store")
            .expect("a new key");
        let (_, text) = env.get("/metrics").await;
        if series_value(&text, &watched) == Some(1.0)
            && series_value(&text, &open) == Some(0.0)
            && series_value(&text, lag) == Some(0.0)
        {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watch is counted once it ended: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let counted = [
        ("POST", "configmaps", "", "resource", 201),
        ("LIST", "configmaps", "", "namespace", 200),
        ("GET", "configmaps", "", "resource", 404),
        ("CONNECT", "pods", "log", "resource", 404),
    ];
    for (verb, resource, sub, scope, code) in counted {
        let series = request_series("apiserver_request_total", verb, resource, sub, scope, Some(code));
        assert_eq!(series_value(&text, &series), Some(1.0), "{series} in {text}");
    }
    // Observed in the histogram: every request but the long-running ones.
    for (verb, resource, sub, scope, _) in &counted[..3] {
        let series = request_series(
            "apiserver_request_duration_seconds_count",
            verb,
            resource,
            sub,
            scope,
            None,
        );
        assert_eq!(series_value(&text, &series), Some(1.0), "{series} in {text}");
        let inf = request_series(
            "apiserver_request_duration_seconds_bucket",
            verb,
            resource,
            sub,
            scope,
            None,
        )
        .replace("\"}", "\",le=\"+Inf\"}");
        assert_eq!(series_value(&text, &inf), Some(1.0), "{inf} in {text}");
    }
    assert!(
        !text.contains(r#"apiserver_request_duration_seconds_count{verb="WATCH""#),
        "{text}"
    );
    assert!(
        !text.contains(r#"apiserver_request_duration_seconds_count{verb="CONNECT""#),
        "{text}"
    );
    assert_eq!(series_value(&text, watchers), Some(0.0), "{text}");
    assert!(
        text.contains("apiserver_current_inflight_requests{request_kind=\"readOnly\"}"),
        "{text}"
    );
    assert!(
        text.contains("apiserver_flowcontrol_current_inqueue_requests{"),
        "{text}"
    );
    // Nothing of the requests' names or namespaces.
    assert!(!text.contains("missing") && !text.contains("=\"default\""), "{text}");
    // The process's metrics, after the API server's.
    let ours = text.find("apiserver_request_total").expect("the API server's metrics");
    let theirs = text.find("capstan_test_things_total 7").expect("the process's metrics");
    assert!(ours < theirs, "{text}");
}
