//! Bad input to the Kubernetes API gets a clear answer: a `Status` object with upstream's
//! code and reason, never a crash or a hang; the server keeps serving afterwards.

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use common::Server;

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn send(c: &Http, base: &str, method: &str, path: &str, ctype: &str, body: Vec<u8>) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = c.request(req).await.expect("the server answers");
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let v = serde_json::from_slice(&body).unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&body)}));
    (code, v)
}

/// Checks an error answer: the HTTP code, a Status with the same code, the reason.
fn status(what: &str, (code, v): &(u16, Value), want_code: u16, want_reason: &str) {
    assert_eq!(*code, want_code, "{what}: HTTP {code}, body {v}");
    assert_eq!(v["kind"], "Status", "{what}: not a Status: {v}");
    assert_eq!(v["status"], "Failure", "{what}: {v}");
    assert_eq!(v["code"], want_code, "{what}: {v}");
    assert_eq!(v["reason"], want_reason, "{what}: {v}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: no message: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_kubernetes_statuses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let _server = Server::start_with(
        &dir.path().join("data"),
        &dir.path().join("server.log"),
        &["--apiserver-listen", &listen],
    );
    let base = format!("http://{listen}");
    let c: Http = Client::builder(TokioExecutor::new()).build_http();
    let json = "application/json";
    let cms = "/api/v1/namespaces/default/configmaps";
    // The API answers once its default namespace exists.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while send(&c, &base, "GET", "/api/v1/namespaces/default", json, vec![])
        .await
        .0
        != 200
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the API never served the default namespace"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let r = send(&c, &base, "POST", cms, json, b"{not json".to_vec()).await;
    status("malformed JSON", &r, 400, "BadRequest");
    let r = send(&c, &base, "POST", cms, json, b"[1,2]".to_vec()).await;
    status("a body that is not an object", &r, 400, "BadRequest");
    let r = send(&c, &base, "POST", cms, json, vec![b' '; 4 << 20]).await;
    status("a 4 MiB body", &r, 413, "RequestEntityTooLarge");
    let big = json!({"metadata": {"name": "big"}, "data": {"x": "a".repeat(2 << 20)}});
    let r = send(&c, &base, "POST", cms, json, big.to_string().into_bytes()).await;
    // Upstream's ConfigMap validation (1 MiB of data) answers first.
    status("a ConfigMap with 2 MiB of data", &r, 422, "Invalid");
    let wrong_kind = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}});
    let r = send(&c, &base, "POST", cms, json, wrong_kind.to_string().into_bytes()).await;
    status("a Secret posted as a ConfigMap", &r, 400, "BadRequest");
    let other_ns = json!({"metadata": {"name": "x", "namespace": "kube-system"}});
    let r = send(&c, &base, "POST", cms, json, other_ns.to_string().into_bytes()).await;
    status("a namespace other than the URL's", &r, 400, "BadRequest");
    let wrong_type = json!({"metadata": {"name": "x"}, "data": {"k": 5}});
    let r = send(&c, &base, "POST", cms, json, wrong_type.to_string().into_bytes()).await;
    status("a number where a string belongs", &r, 400, "BadRequest");
    let r = send(
        &c,
        &base,
        "POST",
        cms,
        "application/vnd.kubernetes.protobuf",
        vec![0x6b, 0x38, 0x73, 0, 0x0a],
    )
    .await;
    status("a truncated protobuf body", &r, 400, "BadRequest");
    let r = send(&c, &base, "POST", cms, "text/plain", b"hello".to_vec()).await;
    status("a body of an unknown type", &r, 415, "UnsupportedMediaType");

    let bad_deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    let r = send(
        &c,
        &base,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        json,
        bad_deploy.to_string().into_bytes(),
    )
    .await;
    status("a selector that does not match the template", &r, 422, "Invalid");
    let causes = r.1["details"]["causes"].as_array().cloned().unwrap_or_default();
    assert!(
        causes.iter().any(|c| c["field"] == "spec.template.metadata.labels"),
        "the cause names the field: {}",
        r.1
    );
    assert!(
        r.1["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Deployment.apps \"web\" is invalid")),
        "{}",
        r.1
    );
    let no_name = json!({"metadata": {}});
    let r = send(&c, &base, "POST", cms, json, no_name.to_string().into_bytes()).await;
    status("no name and no generateName", &r, 422, "Invalid");

    let r = send(&c, &base, "GET", "/api/v1/widgets", json, vec![]).await;
    status("an unknown resource", &r, 404, "NotFound");
    let r = send(&c, &base, "GET", &format!("{cms}/missing"), json, vec![]).await;
    status("a missing object", &r, 404, "NotFound");
    let r = send(
        &c,
        &base,
        "DELETE",
        "/api/v1/namespaces/default/pods/p/log",
        json,
        vec![],
    )
    .await;
    status("DELETE on pods/log", &r, 405, "MethodNotAllowed");
    let r = send(
        &c,
        &base,
        "GET",
        &format!("{cms}?labelSelector=a%20in%20(b"),
        json,
        vec![],
    )
    .await;
    status("a label selector that does not parse", &r, 400, "BadRequest");
    let r = send(
        &c,
        &base,
        "GET",
        &format!("{cms}?fieldSelector=spec.nodeName%3Dx"),
        json,
        vec![],
    )
    .await;
    status("a field selector configmaps do not have", &r, 400, "BadRequest");
    let r = send(
        &c,
        &base,
        "GET",
        &format!("{cms}?continue=garbage&limit=1"),
        json,
        vec![],
    )
    .await;
    status("a continue token that does not decode", &r, 400, "BadRequest");

    let ok = json!({"metadata": {"name": "ok"}, "data": {"a": "1"}});
    let r = send(&c, &base, "POST", cms, json, ok.to_string().into_bytes()).await;
    assert_eq!(r.0, 201, "a good create after the bad ones: {}", r.1);
    let r = send(&c, &base, "PATCH", &format!("{cms}/ok"), "text/plain", b"{}".to_vec()).await;
    status("a patch of an unknown type", &r, 415, "UnsupportedMediaType");
    let r = send(
        &c,
        &base,
        "PATCH",
        &format!("{cms}/ok"),
        "application/json-patch+json",
        br#"[{"op":"test","path":"/data/a","value":"2"}]"#.to_vec(),
    )
    .await;
    status("a JSON patch whose test fails", &r, 422, "Invalid");
    let r = send(
        &c,
        &base,
        "PATCH",
        &format!("{cms}/ok"),
        "application/merge-patch+json",
        b"{broken".to_vec(),
    )
    .await;
    status("a patch that is not JSON", &r, 400, "BadRequest");
    let stale = json!({"metadata": {"name": "ok", "resourceVersion": "1"}, "data": {"a": "3"}});
    let r = send(
        &c,
        &base,
        "PUT",
        &format!("{cms}/ok"),
        json,
        stale.to_string().into_bytes(),
    )
    .await;
    status("an update with a stale resourceVersion", &r, 409, "Conflict");
    let r = send(&c, &base, "POST", cms, json, ok.to_string().into_bytes()).await;
    status("a create of an existing name", &r, 409, "AlreadyExists");
    // Still serving.
    let r = send(&c, &base, "GET", &format!("{cms}/ok"), json, vec![]).await;
    assert_eq!((r.0, &r.1["data"]["a"]), (200, &json!("1")), "{}", r.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_get_bookmarks_when_they_ask() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = format!("127.0.0.1:{}", common::free_port());
    let _server = Server::start_with(
        &dir.path().join("data"),
        &dir.path().join("server.log"),
        &["--apiserver-listen", &listen, "--watch-bookmark-interval-ms", "200"],
    );
    let base = format!("http://{listen}");
    let c: Http = Client::builder(TokioExecutor::new()).build_http();
    let cms = "/api/v1/namespaces/default/configmaps";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let body = json!({"metadata": {"name": "marked"}}).to_string().into_bytes();
        if send(&c, &base, "POST", cms, "application/json", body).await.0 == 201 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the API never took the ConfigMap");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, list) = send(&c, &base, "GET", cms, "application/json", vec![]).await;
    let rv: i64 = list["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("the list's resourceVersion");
    let req = Request::builder()
        .uri(format!(
            "{base}{cms}?watch=true&allowWatchBookmarks=true&resourceVersion={rv}"
        ))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let mut body = c.request(req).await.expect("watch").into_body();
    let mut seen = Vec::new();
    let bookmark = loop {
        let frame = tokio::time::timeout_at(deadline.into(), body.frame())
            .await
            .expect("a bookmark within the deadline")
            .expect("the stream stays open")
            .expect("a frame");
        if let Some(data) = frame.data_ref() {
            seen.extend_from_slice(data);
        }
        let text = String::from_utf8_lossy(&seen).to_string();
        if let Some(line) = text.lines().find(|l| l.contains("\"BOOKMARK\"")) {
            break serde_json::from_str::<Value>(line).expect("a JSON event");
        }
    };
    assert_eq!(bookmark["object"]["kind"], "ConfigMap", "{bookmark}");
    let at: i64 = bookmark["object"]["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("the bookmark's resourceVersion");
    assert!(at >= rv, "the bookmark ({at}) is not behind the watch's start ({rv})");
}
