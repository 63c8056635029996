//! The mesh API (gRPC) over a real single-member store and the real apiserver in this
//! process, on the REST API's own port, through tonic's generated client: lists and
//! watches with REST's resourceVersion semantics, optimistic writes and their errors,
//! node assignment streams, proxy configuration streams, and many streams sharing the
//! watch cache without store watches of their own or waiting for a stalled reader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use capstan_apiserver::mesh::kube_status;
use capstan_apiserver::resources::RESOURCES;
use capstan_apiserver::{Api, ApiConfig, Storage};
use capstan_proto::mesh::mesh_client::MeshClient;
use capstan_proto::mesh::{
    assignment, proxy_update, watch_event, Assignment, CreateRequest, DeleteRequest, GetRequest, ListRequest,
    NodeAssignmentsRequest, PodStatusReport, ProxyConfigRequest, ProxyService, ProxyUpdate, ResourceRef, UpdateRequest,
    WatchEvent, WatchRequest,
};
use capstan_store::{Node, NodeConfig};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::time::{timeout, Instant};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Streaming};

const DEADLINE: Duration = Duration::from_secs(30);

struct Env {
    node: Arc<Node>,
    _dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    client: MeshClient<Channel>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.node.stop();
    }
}

async fn start(config: ApiConfig) -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(NodeConfig::new("mesh-test", dir.path().to_path_buf())).expect("start the store");
    let api = Api::new(Storage::local(node.clone()), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(capstan_apiserver::serve(listener, api, async move {
        let _ = rx.await;
    }));
    let client = MeshClient::new(channel(addr, None).await);
    Env {
        node,
        _dir: dir,
        addr,
        client,
        shutdown: Some(tx),
        served: Some(served),
    }
}

/// A gRPC connection to the API; `window`: HTTP/2 flow-control windows (bytes).
async fn channel(addr: std::net::SocketAddr, window: Option<u32>) -> Channel {
    let mut ep = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(DEADLINE);
    if let Some(w) = window {
        ep = ep.initial_stream_window_size(w).initial_connection_window_size(w);
    }
    ep.connect().await.expect("connect")
}

fn config(window: usize) -> ApiConfig {
    ApiConfig {
        watch_window_events: window,
        bookmark_interval: Duration::from_millis(200),
        ..ApiConfig::default()
    }
}

fn rr(resource: &str, namespace: &str) -> Option<ResourceRef> {
    let group = if resource == "endpointslices" {
        "discovery.k8s.io"
    } else {
        ""
    };
    Some(ResourceRef {
        group: group.into(),
        version: "v1".into(),
        resource: resource.into(),
        namespace: namespace.into(),
    })
}

fn obj(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON object")
}

fn name_of(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn rv(s: &str) -> i64 {
    s.parse().unwrap_or_else(|_| panic!("resourceVersion {s:?}"))
}

async fn next<T>(s: &mut Streaming<T>, what: &str) -> T {
    match timeout(DEADLINE, s.message()).await {
        Err(_) => panic!("{what}: nothing within {DEADLINE:?}"),
        Ok(Err(e)) => panic!("{what}: the stream failed: {e}"),
        Ok(Ok(None)) => panic!("{what}: the stream ended"),
        Ok(Ok(Some(m))) => m,
    }
}

/// The next watch event that is not a bookmark.
async fn next_change(s: &mut Streaming<WatchEvent>, what: &str) -> WatchEvent {
    loop {
        let ev = next(s, what).await;
        if ev.r#type() != watch_event::Type::Bookmark {
            return ev;
        }
    }
}

/// The next assignment that is not a bookmark.
async fn next_assignment(s: &mut Streaming<Assignment>, what: &str) -> Assignment {
    loop {
        let a = next(s, what).await;
        if a.r#type() != assignment::Type::Bookmark {
            return a;
        }
    }
}

async fn create(client: &mut MeshClient<Channel>, resource: &str, ns: &str, o: Value) -> i64 {
    let r = client
        .create(CreateRequest {
            resource: rr(resource, ns),
            object: Bytes::from(o.to_string()),
            dry_run: false,
        })
        .await
        .unwrap_or_else(|e| panic!("create {resource}: {e}"))
        .into_inner();
    rv(&r.resource_version)
}

/// Deletes `ns/name` with default options; panics on an error.
async fn delete(client: &mut MeshClient<Channel>, resource: &str, ns: &str, name: &str) {
    client
        .delete(DeleteRequest {
            resource: rr(resource, ns),
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("delete {resource} {name}: {e}"));
}

fn configmap(name: &str, data: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": data}})
}

fn pod(name: &str, node: Option<&str>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

/// One plain HTTP/1.1 request to the REST API: status code and body.
async fn rest(addr: std::net::SocketAddr, method: &str, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = timeout(DEADLINE, client.request(req))
        .await
        .expect("in time")
        .expect("REST request");
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_watches_follow_rest_semantics_and_resume() {
    let mut env = start(config(32)).await;
    let c = &mut env.client;
    let mut a = configmap("a", "1");
    a["metadata"]["labels"] = json!({"app": "x"});
    create(c, "configmaps", "default", a).await;
    create(c, "configmaps", "default", configmap("b", "1")).await;

    let list = c
        .list(ListRequest {
            resource: rr("configmaps", "default"),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let names: Vec<String> = list.items.iter().map(|i| name_of(&obj(i))).collect();
    assert_eq!(names, ["a", "b"]);
    let listed = rv(&list.resource_version);

    // Paging and selectors, as REST.
    let page = c
        .list(ListRequest {
            resource: rr("configmaps", "default"),
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("page 1")
        .into_inner();
    assert_eq!(page.items.len(), 1);
    assert!(!page.continue_token.is_empty(), "a first page of 1 of 2 continues");
    let rest_page = c
        .list(ListRequest {
            resource: rr("configmaps", "default"),
            limit: 1,
            continue_token: page.continue_token,
            ..Default::default()
        })
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(name_of(&obj(&rest_page.items[0])), "b");
    assert!(rest_page.continue_token.is_empty());
    let selected = c
        .list(ListRequest {
            resource: rr("configmaps", "default"),
            label_selector: "app=x".into(),
            ..Default::default()
        })
        .await
        .expect("selected")
        .into_inner();
    assert_eq!(selected.items.len(), 1);

    // A watch from the list's resourceVersion: every later change, in order, then bookmarks.
    let mut w = c
        .watch(WatchRequest {
            resource: rr("configmaps", "default"),
            resource_version: listed.to_string(),
            allow_watch_bookmarks: true,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let rv_c = create(c, "configmaps", "default", configmap("c", "1")).await;
    let mut a2 = configmap("a", "2");
    a2["metadata"]["labels"] = json!({"app": "x"});
    c.update(UpdateRequest {
        resource: rr("configmaps", "default"),
        object: Bytes::from(a2.to_string()),
        ..Default::default()
    })
    .await
    .expect("update a");
    let deleted = c
        .delete(DeleteRequest {
            resource: rr("configmaps", "default"),
            name: "b".into(),
            ..Default::default()
        })
        .await
        .expect("delete b");
    assert_eq!(obj(&deleted.into_inner().json)["status"], "Success");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let ev = next_change(&mut w, "watch from the list").await;
        seen.push((ev.r#type(), name_of(&obj(&ev.object)), rv(&ev.resource_version)));
    }
    let kinds: Vec<(watch_event::Type, &str)> = seen.iter().map(|(t, n, _)| (*t, n.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (watch_event::Type::Added, "c"),
            (watch_event::Type::Modified, "a"),
            (watch_event::Type::Deleted, "b")
        ]
    );
    assert!(seen.windows(2).all(|p| p[0].2 < p[1].2), "revisions increase: {seen:?}");
    assert_eq!(seen[0].2, rv_c);
    let last = seen[2].2;
    let bm = next(&mut w, "a bookmark").await;
    assert_eq!(bm.r#type(), watch_event::Type::Bookmark, "nothing but bookmarks follow");
    assert!(rv(&bm.resource_version) >= last);
    assert_eq!(obj(&bm.object)["metadata"]["resourceVersion"], bm.resource_version);
    drop(w);

    // Resumed from the first event: only what came after it.
    let mut resumed = c
        .watch(WatchRequest {
            resource: rr("configmaps", "default"),
            resource_version: rv_c.to_string(),
            ..Default::default()
        })
        .await
        .expect("resume")
        .into_inner();
    let ev = next_change(&mut resumed, "resumed").await;
    assert_eq!(
        (ev.r#type(), name_of(&obj(&ev.object))),
        (watch_event::Type::Modified, "a".into())
    );
    let ev = next_change(&mut resumed, "resumed").await;
    assert_eq!(
        (ev.r#type(), name_of(&obj(&ev.object))),
        (watch_event::Type::Deleted, "b".into())
    );
    drop(resumed);

    // No resourceVersion: the current state first; a selector turns leaving into DELETED.
    let mut sel = c
        .watch(WatchRequest {
            resource: rr("configmaps", "default"),
            label_selector: "app=x".into(),
            ..Default::default()
        })
        .await
        .expect("watch with selector")
        .into_inner();
    let ev = next_change(&mut sel, "initial state").await;
    assert_eq!(
        (ev.r#type(), name_of(&obj(&ev.object))),
        (watch_event::Type::Added, "a".into())
    );
    c.update(UpdateRequest {
        resource: rr("configmaps", "default"),
        object: Bytes::from(configmap("a", "3").to_string()),
        ..Default::default()
    })
    .await
    .expect("unlabel a");
    let ev = next_change(&mut sel, "a leaves the selection").await;
    assert_eq!(
        (ev.r#type(), name_of(&obj(&ev.object))),
        (watch_event::Type::Deleted, "a".into())
    );
    drop(sel);

    // Beyond the cache's window: one ERROR event with a 410 Expired Status, then the end.
    for i in 0..40 {
        c.update(UpdateRequest {
            resource: rr("configmaps", "default"),
            object: Bytes::from(configmap("c", &i.to_string()).to_string()),
            ..Default::default()
        })
        .await
        .expect("churn");
    }
    let mut old = c
        .watch(WatchRequest {
            resource: rr("configmaps", "default"),
            resource_version: listed.to_string(),
            ..Default::default()
        })
        .await
        .expect("watch from too old")
        .into_inner();
    let ev = next(&mut old, "too old").await;
    assert_eq!(ev.r#type(), watch_event::Type::Error);
    let status = obj(&ev.object);
    assert_eq!(
        (status["code"].as_u64(), status["reason"].as_str()),
        (Some(410), Some("Expired"))
    );
    let end = timeout(DEADLINE, old.message()).await.expect("in time");
    assert!(matches!(end, Ok(None)), "the stream ends after the error: {end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_optimistic_and_errors_carry_the_status() {
    let mut env = start(config(1000)).await;
    let addr = env.addr;
    let c = &mut env.client;
    let r1 = create(c, "configmaps", "default", configmap("w", "1")).await;
    let mut v1 = configmap("w", "2");
    v1["metadata"]["resourceVersion"] = json!(r1.to_string());
    let updated = c
        .update(UpdateRequest {
            resource: rr("configmaps", "default"),
            object: Bytes::from(v1.to_string()),
            ..Default::default()
        })
        .await
        .expect("update at the current resourceVersion")
        .into_inner();
    let r2 = rv(&updated.resource_version);
    assert!(r2 > r1);
    assert_eq!(obj(&updated.json)["data"]["k"], "2");

    // The same precondition again is stale now: ABORTED, with the Conflict Status.
    let e = c
        .update(UpdateRequest {
            resource: rr("configmaps", "default"),
            object: Bytes::from(v1.to_string()),
            ..Default::default()
        })
        .await
        .expect_err("stale resourceVersion");
    assert_eq!(e.code(), Code::Aborted, "{e}");
    let s = kube_status(&e).expect("a Status");
    assert_eq!(
        (s["reason"].as_str(), s["code"].as_u64()),
        (Some("Conflict"), Some(409))
    );
    assert_eq!(s["details"]["name"], "w");

    let e = c
        .create(CreateRequest {
            resource: rr("configmaps", "default"),
            object: Bytes::from(configmap("w", "x").to_string()),
            dry_run: false,
        })
        .await
        .expect_err("exists");
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(kube_status(&e).expect("a Status")["reason"], "AlreadyExists");

    let e = c
        .get(GetRequest {
            resource: rr("configmaps", "default"),
            name: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("missing");
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(kube_status(&e).expect("a Status")["code"], 404);

    // Validation: INVALID_ARGUMENT with upstream's message and causes.
    let e = c
        .create(CreateRequest {
            resource: rr("configmaps", "default"),
            object: Bytes::from(configmap("Bad_Name", "x").to_string()),
            dry_run: false,
        })
        .await
        .expect_err("invalid name");
    assert_eq!(e.code(), Code::InvalidArgument);
    let s = kube_status(&e).expect("a Status");
    assert_eq!((s["reason"].as_str(), s["code"].as_u64()), (Some("Invalid"), Some(422)));
    assert!(e.message().contains("Bad_Name"), "{}", e.message());
    let causes = s["details"]["causes"].as_array().expect("causes");
    assert!(causes.iter().any(|c| c["field"] == "metadata.name"), "{causes:?}");

    // Delete preconditions.
    let e = c
        .delete(DeleteRequest {
            resource: rr("configmaps", "default"),
            name: "w".into(),
            resource_version: r1.to_string(),
            ..Default::default()
        })
        .await
        .expect_err("stale precondition");
    assert_eq!(e.code(), Code::Aborted);

    // REST on the same port is unchanged: the object, and a gRPC path without a gRPC
    // content type is just an unknown REST path.
    let (code, got) = rest(
        addr,
        "GET",
        "/api/v1/namespaces/default/configmaps/w",
        "application/json",
        "",
    )
    .await;
    assert_eq!(
        (code, got["metadata"]["resourceVersion"].as_str()),
        (200, Some(r2.to_string().as_str()))
    );
    let (code, got) = rest(addr, "POST", "/capstan.mesh.v1.Mesh/Get", "application/json", "{}").await;
    assert_eq!((code, got["kind"].as_str()), (404, Some("Status")));

    c.delete(DeleteRequest {
        resource: rr("configmaps", "default"),
        name: "w".into(),
        resource_version: r2.to_string(),
        ..Default::default()
    })
    .await
    .expect("delete at the current resourceVersion");
    let e = c
        .get(GetRequest {
            resource: rr("configmaps", "default"),
            name: "w".into(),
            ..Default::default()
        })
        .await
        .expect_err("deleted");
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_assignments_snapshot_follow_resume_and_report_status() {
    let mut env = start(config(32)).await;
    let addr = env.addr;
    let c = &mut env.client;
    create(c, "pods", "default", pod("p1", Some("n1"))).await;
    create(c, "pods", "default", pod("p2", Some("n2"))).await;
    create(c, "pods", "default", pod("p3", None)).await;

    // Full state on connect: only this node's pods, then the marker.
    let mut s = c
        .node_assignments(NodeAssignmentsRequest {
            node_name: "n1".into(),
            resource_version: String::new(),
        })
        .await
        .expect("assignments")
        .into_inner();
    let a = next_assignment(&mut s, "snapshot").await;
    assert_eq!(
        (a.r#type(), name_of(&obj(&a.pod))),
        (assignment::Type::Upsert, "p1".into())
    );
    let end = next_assignment(&mut s, "snapshot end").await;
    assert_eq!(end.r#type(), assignment::Type::SnapshotEnd);
    assert!(rv(&end.resource_version) >= rv(&a.resource_version));

    // A pod bound to the node (over REST, as the scheduler binds) arrives.
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p3"},
        "target": {"kind": "Node", "name": "n1"}});
    let (code, _) = rest(
        addr,
        "POST",
        "/api/v1/namespaces/default/pods/p3/binding",
        "application/json",
        &binding.to_string(),
    )
    .await;
    assert_eq!(code, 201);
    let a = next_assignment(&mut s, "bound pod").await;
    let p3 = obj(&a.pod);
    assert_eq!((a.r#type(), name_of(&p3)), (assignment::Type::Upsert, "p3".into()));
    assert_eq!(p3["spec"]["nodeName"], "n1");
    let rv_bound = rv(&a.resource_version);

    // Another node's pod changes (not sent here); then this node's p1 is deleted.
    c.report_pod_status(PodStatusReport {
        namespace: "default".into(),
        name: "p2".into(),
        status: Bytes::from(json!({"phase": "Running"}).to_string()),
        resource_version: String::new(),
    })
    .await
    .expect("touch p2");
    c.delete(DeleteRequest {
        resource: rr("pods", "default"),
        name: "p1".into(),
        grace_period_seconds: Some(0),
        ..Default::default()
    })
    .await
    .expect("delete p1");
    let a = next_assignment(&mut s, "deleted pod").await;
    assert_eq!(
        (a.r#type(), name_of(&obj(&a.pod))),
        (assignment::Type::Delete, "p1".into())
    );
    let rv_deleted = rv(&a.resource_version);

    // Resumed from the bound pod's position: only the later change, no snapshot.
    let mut resumed = c
        .node_assignments(NodeAssignmentsRequest {
            node_name: "n1".into(),
            resource_version: rv_bound.to_string(),
        })
        .await
        .expect("resume")
        .into_inner();
    let a = next_assignment(&mut resumed, "resumed").await;
    assert_eq!(
        (a.r#type(), name_of(&obj(&a.pod))),
        (assignment::Type::Delete, "p1".into())
    );
    loop {
        let b = next(&mut resumed, "bookmark after the resumed changes").await;
        assert_eq!(b.r#type(), assignment::Type::Bookmark, "nothing else follows: {b:?}");
        if rv(&b.resource_version) >= rv_deleted {
            break;
        }
    }
    drop(resumed);

    // The agent reports p3's status: it lands in the pod, and comes back on the stream.
    let status = json!({"phase": "Running", "podIP": "127.1.0.5",
        "conditions": [{"type": "Ready", "status": "True"}]});
    let reported = c
        .report_pod_status(PodStatusReport {
            namespace: "default".into(),
            name: "p3".into(),
            status: Bytes::from(status.to_string()),
            resource_version: String::new(),
        })
        .await
        .expect("report status")
        .into_inner();
    assert_eq!(obj(&reported.json)["status"]["phase"], "Running");
    let got = c
        .get(GetRequest {
            resource: rr("pods", "default"),
            name: "p3".into(),
            ..Default::default()
        })
        .await
        .expect("get p3")
        .into_inner();
    let got = obj(&got.json);
    assert_eq!(
        (got["status"]["phase"].as_str(), got["status"]["podIP"].as_str()),
        (Some("Running"), Some("127.1.0.5"))
    );
    assert_eq!(got["spec"]["nodeName"], "n1", "a status report changes only the status");
    let a = next_assignment(&mut s, "status change").await;
    assert_eq!(
        (a.r#type(), obj(&a.pod)["status"]["phase"].as_str()),
        (assignment::Type::Upsert, Some("Running"))
    );
    // A report at a stale resourceVersion is a conflict.
    let e = c
        .report_pod_status(PodStatusReport {
            namespace: "default".into(),
            name: "p3".into(),
            status: Bytes::from(status.to_string()),
            resource_version: rv_bound.to_string(),
        })
        .await
        .expect_err("stale report");
    assert_eq!(e.code(), Code::Aborted);

    // A position older than the cache's window: OUT_OF_RANGE with the 410 Status.
    for i in 0..40 {
        let st = json!({"phase": "Running", "message": format!("report {i}")});
        c.report_pod_status(PodStatusReport {
            namespace: "default".into(),
            name: "p3".into(),
            status: Bytes::from(st.to_string()),
            resource_version: String::new(),
        })
        .await
        .expect("report");
    }
    let e = c
        .node_assignments(NodeAssignmentsRequest {
            node_name: "n1".into(),
            resource_version: rv_bound.to_string(),
        })
        .await
        .expect_err("too old");
    assert_eq!(e.code(), Code::OutOfRange, "{e}");
    assert_eq!(kube_status(&e).expect("a Status")["code"], 410);
}

fn endpoint_slice(ready: [bool; 2]) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
    "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
    "addressType": "IPv4",
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    "endpoints": [
        {"addresses": ["127.1.0.1"], "conditions": {"ready": ready[0]}, "nodeName": "n1"},
        {"addresses": ["127.1.0.2"], "conditions": {"ready": ready[1]}, "nodeName": "n2"},
    ]})
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
}

fn addresses(s: &ProxyService) -> Vec<String> {
    s.endpoints.iter().map(|e| e.address.clone()).collect()
}

async fn next_update(s: &mut Streaming<ProxyUpdate>, what: &str) -> (proxy_update::Type, ProxyService) {
    let u = next(s, what).await;
    (u.r#type(), u.service.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_config_sends_services_with_ready_endpoints_then_changes() {
    let mut env = start(config(1000)).await;
    let c = &mut env.client;
    create(c, "services", "default", service("web")).await;
    create(c, "endpointslices", "default", endpoint_slice([true, false])).await;

    let mut s = c
        .proxy_config(ProxyConfigRequest { node_name: "n1".into() })
        .await
        .expect("proxy config")
        .into_inner();
    let mut snapshot = BTreeMap::new();
    loop {
        let (t, svc) = next_update(&mut s, "snapshot").await;
        match t {
            proxy_update::Type::Upsert => {
                snapshot.insert(format!("{}/{}", svc.namespace, svc.name), svc);
            }
            proxy_update::Type::SnapshotEnd => break,
            other => panic!("unexpected {other:?} in the snapshot"),
        }
    }
    let web = snapshot.get("default/web").expect("web in the snapshot");
    assert_eq!(addresses(web), ["127.1.0.1"], "only ready endpoints");
    assert_eq!(
        (web.endpoints[0].node_name.as_str(), web.endpoints[0].ports[0].port),
        ("n1", 8080)
    );
    assert_eq!(obj(&web.service)["spec"]["ports"][0]["port"], 80);

    // The second endpoint becomes ready.
    let got = c
        .get(GetRequest {
            resource: rr("endpointslices", "default"),
            name: "web-abc".into(),
            ..Default::default()
        })
        .await
        .expect("get slice")
        .into_inner();
    let mut slice = endpoint_slice([true, true]);
    slice["metadata"]["resourceVersion"] = json!(got.resource_version);
    c.update(UpdateRequest {
        resource: rr("endpointslices", "default"),
        object: Bytes::from(slice.to_string()),
        ..Default::default()
    })
    .await
    .expect("update slice");
    let (t, svc) = next_update(&mut s, "endpoint ready").await;
    assert_eq!((t, svc.name.as_str()), (proxy_update::Type::Upsert, "web"));
    assert_eq!(addresses(&svc), ["127.1.0.1", "127.1.0.2"]);

    // A new Service without endpoints; then web loses its slice, then goes.
    create(c, "services", "default", service("db")).await;
    let (t, svc) = next_update(&mut s, "new service").await;
    assert_eq!(
        (t, svc.name.as_str(), svc.endpoints.len()),
        (proxy_update::Type::Upsert, "db", 0)
    );
    delete(c, "endpointslices", "default", "web-abc").await;
    let (t, svc) = next_update(&mut s, "slice gone").await;
    assert_eq!(
        (t, svc.name.as_str(), svc.endpoints.len()),
        (proxy_update::Type::Upsert, "web", 0)
    );
    delete(c, "services", "default", "web").await;
    let (t, svc) = next_update(&mut s, "service gone").await;
    assert_eq!(
        (t, svc.namespace.as_str(), svc.name.as_str()),
        (proxy_update::Type::Delete, "default", "web")
    );
}

/// Store watches open on the member: the watch caches' own, one per resource type.
fn store_watches(node: &Node) -> usize {
    let (synced, unsynced) = node.hub.counts();
    synced + unsynced
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streams_share_the_cache_and_a_stalled_one_stalls_nobody() {
    const STREAMS: usize = 1_000;
    const CONNECTIONS: usize = 10;
    let env = start(ApiConfig::default()).await;
    let mut c = env.client.clone();
    create(&mut c, "pods", "default", pod("seen", Some("node-7"))).await;
    // The watch caches have started: one store watch per served type, no more.
    let deadline = Instant::now() + DEADLINE;
    while store_watches(&env.node) != RESOURCES.len() {
        assert!(
            Instant::now() < deadline,
            "{} store watches, {} types",
            store_watches(&env.node),
            RESOURCES.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(MeshClient::new(channel(env.addr, None).await));
    }
    let opened = futures::future::join_all((0..STREAMS).map(|i| {
        let mut client = clients[i % CONNECTIONS].clone();
        async move {
            let mut s = client
                .node_assignments(NodeAssignmentsRequest {
                    node_name: format!("node-{i}"),
                    resource_version: String::new(),
                })
                .await
                .unwrap_or_else(|e| panic!("stream {i}: {e}"))
                .into_inner();
            let mut pods = Vec::new();
            loop {
                let a = next_assignment(&mut s, "snapshot").await;
                match a.r#type() {
                    assignment::Type::Upsert => pods.push(name_of(&obj(&a.pod))),
                    assignment::Type::SnapshotEnd => return (s, pods),
                    other => panic!("stream {i}: unexpected {other:?}"),
                }
            }
        }
    }))
    .await;
    for (i, (_, pods)) in opened.iter().enumerate() {
        let want: &[&str] = if i == 7 { &["seen"] } else { &[] };
        assert_eq!(pods, want, "node-{i}'s snapshot");
    }
    let mut streams: Vec<Streaming<Assignment>> = opened.into_iter().map(|(s, _)| s).collect();
    // A watch and a proxy stream too: still no store watch of their own.
    let _watch = c
        .watch(WatchRequest {
            resource: rr("pods", ""),
            ..Default::default()
        })
        .await
        .expect("watch");
    let mut proxy = c
        .proxy_config(ProxyConfigRequest {
            node_name: "node-0".into(),
        })
        .await
        .expect("proxy")
        .into_inner();
    let (t, _) = next_update(&mut proxy, "proxy snapshot").await;
    assert_eq!(t, proxy_update::Type::SnapshotEnd, "no Services yet");
    assert_eq!(
        store_watches(&env.node),
        RESOURCES.len(),
        "{STREAMS} assignment streams, a watch and a proxy stream opened store watches"
    );

    // A stream whose client stops reading, on a connection with small HTTP/2 windows so
    // that little of what it is sent is buffered on the way.
    let mut slow_client = MeshClient::new(channel(env.addr, Some(65_535)).await);
    let mut stalled = slow_client
        .node_assignments(NodeAssignmentsRequest {
            node_name: "slow".into(),
            resource_version: String::new(),
        })
        .await
        .expect("stalled stream")
        .into_inner();
    assert_eq!(
        next_assignment(&mut stalled, "snapshot").await.r#type(),
        assignment::Type::SnapshotEnd
    );
    // Many large changes for its node: more than its queues hold.
    const WRITERS: usize = 8;
    const REPORTS: usize = 220;
    for w in 0..WRITERS {
        create(&mut c, "pods", "default", pod(&format!("slow-{w}"), Some("slow"))).await;
    }
    let big = "x".repeat(24 << 10);
    let writers = (0..WRITERS).map(|w| {
        let mut client = c.clone();
        let big = big.clone();
        tokio::spawn(async move {
            for i in 0..REPORTS {
                let st = json!({"phase": "Running", "message": format!("{i} {big}")});
                client
                    .report_pod_status(PodStatusReport {
                        namespace: "default".into(),
                        name: format!("slow-{w}"),
                        status: Bytes::from(st.to_string()),
                        resource_version: String::new(),
                    })
                    .await
                    .expect("report");
            }
        })
    });
    for w in futures::future::join_all(writers).await {
        w.expect("writer");
    }
    // Meanwhile nobody else waits: a pod for node-0 reaches its stream at once.
    create(&mut c, "pods", "default", pod("live", Some("node-0"))).await;
    let a = next_assignment(&mut streams[0], "node-0 while another stream is stalled").await;
    assert_eq!(
        (a.r#type(), name_of(&obj(&a.pod))),
        (assignment::Type::Upsert, "live".into())
    );

    // The stalled stream was cut off: it delivers what was queued, then UNAVAILABLE.
    let sent = WRITERS * (REPORTS + 1);
    let mut got = 0;
    let end = loop {
        match timeout(DEADLINE, stalled.message())
            .await
            .expect("the stalled stream ends in time")
        {
            Ok(Some(_)) => got += 1,
            Ok(None) => panic!("the stalled stream ended without an error after {got} messages"),
            Err(e) => break e,
        }
    };
    assert_eq!(end.code(), Code::Unavailable, "{end}");
    assert!(end.message().contains("fell behind"), "{end}");
    assert!(
        got < sent,
        "the stalled stream got all {got} of {sent} changes: it was not cut off"
    );
    assert_eq!(store_watches(&env.node), RESOURCES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_the_streams_and_the_server() {
    let mut env = start(config(1000)).await;
    let c = &mut env.client;
    let mut assignments = c
        .node_assignments(NodeAssignmentsRequest {
            node_name: "n1".into(),
            resource_version: String::new(),
        })
        .await
        .expect("assignments")
        .into_inner();
    assert_eq!(
        next_assignment(&mut assignments, "snapshot").await.r#type(),
        assignment::Type::SnapshotEnd
    );
    let mut proxy = c
        .proxy_config(ProxyConfigRequest { node_name: "n1".into() })
        .await
        .expect("proxy")
        .into_inner();
    assert_eq!(
        next_update(&mut proxy, "snapshot").await.0,
        proxy_update::Type::SnapshotEnd
    );
    let _ = env.shutdown.take().expect("not shut down yet").send(());
    for (what, end) in [
        (
            "assignments",
            timeout(DEADLINE, assignments.message()).await.map(|r| r.map(|_| ())),
        ),
        ("proxy", timeout(DEADLINE, proxy.message()).await.map(|r| r.map(|_| ()))),
    ] {
        let e = end
            .unwrap_or_else(|_| panic!("{what}: still open after shutdown"))
            .expect_err("ends with an error");
        assert_eq!(e.code(), Code::Unavailable, "{what}: {e}");
        assert!(e.message().contains("shutting down"), "{what}: {e}");
    }
    // Nothing holds the graceful shutdown up.
    let served = env.served.take().expect("serving");
    timeout(DEADLINE, served)
        .await
        .expect("the server stops in time")
        .expect("serve task")
        .expect("serve");
}
