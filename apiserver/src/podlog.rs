//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: a pod's logs, streamed from the agent
//! of its node, as kube-apiserver streams them from the kubelet.
//!
//! # The path of a request
//!
//! 1. The query is parsed and validated as upstream's `PodLogOptions` (`container`,
//!    `follow`, `previous`, `timestamps`, `sinceSeconds` > 0, `sinceTime` in RFC 3339,
//!    `tailLines` >= 0, `limitBytes` > 0, `insecureSkipTLSVerifyBackend` (see below); not
//!    both `since*`). A malformed value is `400`; a value out of range is `422` with
//!    upstream's `PodLogOptions "p" is invalid: tailLines: Invalid value: -1: must be
//!    greater than or equal to 0`. Unknown parameters are ignored.
//! 2. The pod is read; the container is the named one (which must be one of its
//!    containers, init containers or ephemeral containers: `container x is not valid for
//!    pod p`), or its only container; with several, upstream's `LogLocation` message:
//!    `a container name must be specified for pod p, choose one of: [a b] or one of the
//!    init containers: [i]` (`400`).
//! 3. A pod not bound to a node has no logs yet: `204 No Content`, as upstream (its
//!    location is empty). Otherwise the Node is read: the agent is at its `InternalIP`
//!    and `status.daemonEndpoints.kubeletEndpoint.Port`. A node without either, or an
//!    agent that cannot be reached, is a `503` naming the node.
//! 4. `GET http://<ip>:<port>/containerLogs/<ns>/<pod>/<container>?<options>` (`https://`
//!    with TLS, below) with the options upstream forwards, in its order; the agent's answer
//!    head must come within [`AGENT_HEAD_TIMEOUT_MS`] (connecting:
//!    [`AGENT_CONNECT_TIMEOUT_MS`]; the TLS handshake is within the first). A `2xx` body
//!    is forwarded as `text/plain` **chunk by chunk as it arrives**, never gathered: a
//!    follow lasts as long as the container runs, so nothing bounds the body's time. The
//!    stream ends when the agent ends it; a client that goes away drops the body and
//!    with it the connection to the agent, which ends the agent's side. Any other
//!    answer becomes a Status as upstream's `GenericHttpResponseChecker` makes it: the
//!    agent's text as the message of a `400` or `500`, else the generic message of the
//!    code (`the server could not find the requested resource ( pods/log p)`) with the
//!    agent's text as its cause; at most [`AGENT_ERROR_BYTES_MAX`] of it are read.
//!
//! At most [`LOG_STREAMS_MAX`] streams are forwarded at once by this process; one more
//! gets `429`.
//!
//! # TLS to the agent
//!
//! With a kubelet client certificate ([`ApiConfig::kubelet_client`](crate::ApiConfig::kubelet_client): `capstan apiserver
//! --kubelet-client-certificate --kubelet-client-key`, or the PKI of a secure `capstan
//! store`, `master` or `up`, which issues `kube-apiserver-kubelet-client` in
//! `system:masters`), the agent is asked over `https://` with that certificate, as
//! kube-apiserver asks the kubelet: the agent reads logs only for `system:masters` and
//! answers others `401`/`403`, which become Statuses as above. The agent's certificate is
//! verified against `--kubelet-certificate-authority` (the cluster CA in a secure store)
//! for its `InternalIP`; without that CA, or for a request with
//! `insecureSkipTLSVerifyBackend=true`, it is not verified (upstream's behaviour). Each
//! log request over TLS has a connection of its own (no pool: a follow holds its
//! connection for as long as it lasts anyway, and a handshake is small beside a log).
//! Without a client certificate the agent is asked over plain HTTP, pooled.
//!
//! The setting is one per process (a `capstan` process serves one API); it belongs in
//! `ApiConfig` once that can take it.
//!
//! # Left out, on purpose
//!
//! - The kubelet's default port 10250 for a node that publishes none: a Capstan agent
//!   always publishes its own, and guessing would reach whatever else listens there.
//! - `--kubelet-preferred-address-types`: only `InternalIP` is used.
//! - The `stream` option (stdout or stderr alone): the agent keeps both in one file.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_rustls::rustls;

use crate::error::{ApiError, GroupResource, Result};
use crate::handlers::Api;
use crate::http::{json_response, Params, Target};
use crate::object::from_kv;
use crate::resources::ResourceType;
use crate::validation::{invalid_message, FieldError};

/// Connecting to an agent.
pub const AGENT_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// From the start of the request to the agent to the head of its answer (connecting
/// included). The body has no bound: a follow lasts as long as the container.
pub const AGENT_HEAD_TIMEOUT_MS: u64 = 5_000;
/// Of an agent's error answer, what is read (upstream's `maxReadLength`).
pub const AGENT_ERROR_BYTES_MAX: usize = 50_000;
/// Log streams this process forwards at once.
pub const LOG_STREAMS_MAX: usize = 1024;
/// Idle connections to agents are closed after this.
const AGENT_IDLE_TIMEOUT_MS: u64 = 30_000;

/// The query of a log request, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub since_seconds: Option<i64>,
    /// RFC 3339, whole seconds, UTC (upstream forwards `time.RFC3339`).
    pub since_time: Option<String>,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
    /// Do not verify the agent's certificate for this request.
    pub insecure_skip_tls_verify_backend: bool,
}

/// A query boolean as upstream converts it: absent or empty, `0` and `false` (any case)
/// are false, anything else true.
fn boolean(params: &Params, key: &str) -> bool {
    params
        .get(key)
        .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
}

fn invalid_value(field: &str, value: i64, message: &str) -> FieldError {
    FieldError {
        reason: "FieldValueInvalid",
        field: field.to_string(),
        message: format!("Invalid value: {value}: {message}"),
    }
}

/// Parses and validates the query of `pods/<name>/log` as upstream's `PodLogOptions`.
pub fn parse_options(name: &str, params: &Params) -> Result<LogOptions> {
    let since_time = match params.get("sinceTime") {
        None => None,
        Some(v) => {
            let t = v
                .parse::<k8s_openapi::jiff::Timestamp>()
                .map_err(|_| ApiError::BadRequest(format!("invalid value for sinceTime: {v:?} (RFC 3339 expected)")))?;
            let whole = k8s_openapi::jiff::Timestamp::from_second(t.as_second())
                .map_err(|_| ApiError::BadRequest(format!("invalid value for sinceTime: {v:?}")))?;
            Some(whole.to_string())
        }
    };
    let options = LogOptions {
        container: params.get("container").map(str::to_string),
        follow: boolean(params, "follow"),
        previous: boolean(params, "previous"),
        timestamps: boolean(params, "timestamps"),
        since_seconds: params.int("sinceSeconds")?,
        since_time,
        tail_lines: params.int("tailLines")?,
        limit_bytes: params.int("limitBytes")?,
        insecure_skip_tls_verify_backend: boolean(params, "insecureSkipTLSVerifyBackend"),
    };
    let mut errs = Vec::new();
    if let Some(n) = options.tail_lines.filter(|n| *n < 0) {
        errs.push(invalid_value("tailLines", n, "must be greater than or equal to 0"));
    }
    if let Some(n) = options.limit_bytes.filter(|n| *n < 1) {
        errs.push(invalid_value("limitBytes", n, "must be greater than 0"));
    }
    match (options.since_seconds, &options.since_time) {
        (Some(_), Some(_)) => errs.push(FieldError {
            reason: "FieldValueForbidden",
            field: String::new(),
            message: "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
        }),
        (Some(n), None) if n < 1 => errs.push(invalid_value("sinceSeconds", n, "must be greater than 0")),
        _ => {}
    }
    if errs.is_empty() {
        return Ok(options);
    }
    Err(ApiError::Invalid {
        kind: "PodLogOptions".into(),
        group: String::new(),
        name: name.to_string(),
        message: invalid_message("PodLogOptions", "", name, &errs),
        causes: errs
            .iter()
            .map(|e| crate::error::Cause {
                reason: e.reason.to_string(),
                message: e.message.clone(),
                field: e.field.clone(),
            })
            .collect(),
    })
}

fn container_names<'a>(pod: &'a Value, field: &str) -> Vec<&'a str> {
    pod["spec"][field]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

/// The container whose log is asked for, as upstream's `LogLocation` picks it.
pub fn choose_container(pod: &Value, name: &str, requested: Option<&str>) -> Result<String> {
    let containers = container_names(pod, "containers");
    if let Some(c) = requested {
        let known = containers.contains(&c)
            || container_names(pod, "initContainers").contains(&c)
            || container_names(pod, "ephemeralContainers").contains(&c);
        return if known {
            Ok(c.to_string())
        } else {
            Err(ApiError::BadRequest(format!(
                "container {c} is not valid for pod {name}"
            )))
        };
    }
    match containers.as_slice() {
        [only] => Ok(only.to_string()),
        [] => Err(ApiError::BadRequest(format!(
            "a container name must be specified for pod {name}"
        ))),
        several => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                several.join(" ")
            );
            let init = container_names(pod, "initContainers");
            if !init.is_empty() {
                message.push_str(&format!(" or one of the init containers: [{}]", init.join(" ")));
            }
            Err(ApiError::BadRequest(message))
        }
    }
}

/// Where the agent of `node` listens: its `InternalIP` and published port.
pub fn agent_address(node: &Value, node_name: &str, pod: &str) -> Result<SocketAddr> {
    let kept = format!("the logs of pod {pod} are kept by the agent of node {node_name}");
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_i64()
        .filter(|p| (1..=i64::from(u16::MAX)).contains(p))
        .ok_or_else(|| {
            ApiError::Unavailable(format!(
                "{kept}, which publishes no port (status.daemonEndpoints.kubeletEndpoint.Port)"
            ))
        })?;
    let ip = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["type"] == "InternalIP")
        .find_map(|a| a["address"].as_str().and_then(|s| s.parse::<IpAddr>().ok()))
        .ok_or_else(|| ApiError::Unavailable(format!("{kept}, which has no InternalIP address")))?;
    Ok(SocketAddr::new(ip, port as u16))
}

/// A path segment or query value, percent-encoded but for RFC 3986's unreserved bytes.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The agent's path and query for `container` of `namespace/pod`, with the options
/// upstream forwards, sorted by name as Go's `url.Values.Encode` sorts them.
pub fn agent_path(namespace: &str, pod: &str, container: &str, o: &LogOptions) -> String {
    let mut query: Vec<(&str, String)> = Vec::new();
    if o.follow {
        query.push(("follow", "true".into()));
    }
    if let Some(n) = o.limit_bytes {
        query.push(("limitBytes", n.to_string()));
    }
    if o.previous {
        query.push(("previous", "true".into()));
    }
    if let Some(n) = o.since_seconds {
        query.push(("sinceSeconds", n.to_string()));
    }
    if let Some(t) = &o.since_time {
        query.push(("sinceTime", t.clone()));
    }
    if let Some(n) = o.tail_lines {
        query.push(("tailLines", n.to_string()));
    }
    if o.timestamps {
        query.push(("timestamps", "true".into()));
    }
    let mut path = format!(
        "/containerLogs/{}/{}/{}",
        escape(namespace),
        escape(pod),
        escape(container)
    );
    for (i, (k, v)) in query.iter().enumerate() {
        path.push(if i == 0 { '?' } else { '&' });
        path.push_str(k);
        path.push('=');
        path.push_str(&escape(v));
    }
    path
}

fn client() -> &'static Client<HttpConnector, Empty<Bytes>> {
    static CLIENT: OnceLock<Client<HttpConnector, Empty<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(AGENT_CONNECT_TIMEOUT_MS)));
        // Log lines go out as they come, not when the kernel's Nagle timer says.
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_millis(AGENT_IDLE_TIMEOUT_MS))
            .build(connector)
    })
}

/// One log request to an agent over TLS, on a connection of its own: `path` is the
/// agent's path and query.
async fn request_tls(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> std::result::Result<hyper::Response<hyper::body::Incoming>, String> {
    let connect = tokio::net::TcpStream::connect(addr);
    let tcp = match tokio::time::timeout(Duration::from_millis(AGENT_CONNECT_TIMEOUT_MS), connect).await {
        Err(_) => return Err(format!("no connection within {AGENT_CONNECT_TIMEOUT_MS} ms")),
        Ok(Err(e)) => return Err(format!("connecting: {e}")),
        Ok(Ok(tcp)) => tcp,
    };
    // Log lines go out as they come, as over plain HTTP.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
    // The agent's certificate names its InternalIP, which is what was dialled.
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {}", error_chain(&e)))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| error_chain(&e))?;
    // Driven until the response body is read or dropped; `sender` goes when this returns,
    // so the connection then closes (and a follow on the agent with it).
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(agent = %addr, error = %error_chain(&e), "a log connection to an agent ended");
        }
    });
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    sender.send_request(request).await.map_err(|e| error_chain(&e))
}

fn streams() -> &'static Arc<Semaphore> {
    static STREAMS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    STREAMS.get_or_init(|| Arc::new(Semaphore::new(LOG_STREAMS_MAX)))
}

/// An agent's answer other than `2xx`, as upstream's `GenericHttpResponseChecker` turns
/// it into a Status (`NewGenericServerResponse` for codes other than 400 and 500).
fn agent_error(code: StatusCode, text: &str, pod: &str) -> Response {
    match code {
        StatusCode::BAD_REQUEST => {
            return axum::response::IntoResponse::into_response(ApiError::BadRequest(text.into()))
        }
        StatusCode::INTERNAL_SERVER_ERROR => {
            return axum::response::IntoResponse::into_response(ApiError::Internal(text.into()))
        }
        _ => {}
    }
    let (reason, message) = match code.as_u16() {
        401 => (
            "Unauthorized",
            "the server has asked for the client to provide credentials".to_string(),
        ),
        403 => (
            "Forbidden",
            "the server does not allow access to the requested resource".into(),
        ),
        404 => ("NotFound", "the server could not find the requested resource".into()),
        409 => ("Conflict", "the server reported a conflict".into()),
        410 => (
            "Gone",
            "the server has asked for the client to close the connection".into(),
        ),
        422 => (
            "Invalid",
            "the server rejected our request due to an error in our request".into(),
        ),
        429 => (
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later".into(),
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request".into(),
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be processing the request"
                .into(),
        ),
        c => (
            "Unknown",
            format!("the server responded with the status code {c} but did not return more information"),
        ),
    };
    let mut details = json!({"name": pod, "kind": "pods/log"});
    if !text.is_empty() {
        details["causes"] = json!([{"reason": "UnexpectedServerResponse", "message": text}]);
    }
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{message} ( pods/log {pod})"), "reason": reason, "details": details,
            "code": code.as_u16()}),
    )
}

/// Serves `GET pods/<name>/log` (see the module doc).
pub async fn serve(api: &Api, t: &Target, name: &str, params: &Params) -> Result<Response> {
    let options = parse_options(name, params)?;
    let namespace = t.namespace.as_deref().unwrap_or("");
    let pod = match api.storage.get(&t.rt.key(t.namespace.as_deref(), name), true).await? {
        (Some(kv), _) => from_kv(&kv)?,
        (None, _) => {
            return Err(ApiError::NotFound {
                what: t.rt.group_resource(),
                name: name.to_string(),
            })
        }
    };
    let container = choose_container(&pod, name, options.container.as_deref())?;
    let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
        // Not scheduled: no logs yet. Upstream answers an empty location with 204.
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        return Ok(r);
    };
    let nodes = ResourceType::by_kind("Node").ok_or_else(|| ApiError::Internal("nodes are not served".into()))?;
    let node = match api.storage.get(&nodes.key(None, node_name), true).await? {
        (Some(kv), _) => from_kv(&kv)?,
        (None, _) => {
            return Err(ApiError::NotFound {
                what: GroupResource::new("", "nodes"),
                name: node_name.to_string(),
            })
        }
    };
    let addr = agent_address(&node, node_name, name)?;
    let permit = Arc::clone(streams()).try_acquire_owned().map_err(|_| {
        ApiError::TooManyRequests(format!(
            "too many log streams are open on this server ({LOG_STREAMS_MAX}); try again later"
        ))
    })?;
    let path = agent_path(namespace, name, &container, &options);
    let tls = api.config.kubelet_client.as_deref();
    let unreachable = |why: String| {
        ApiError::Unavailable(format!(
            "the logs of pod {name} are kept by the agent of node {node_name} at {addr}, which this server cannot reach: {why}"
        ))
    };
    let request = agent_request(addr, tls, options.insecure_skip_tls_verify_backend, &path);
    let head_timeout = Duration::from_millis(AGENT_HEAD_TIMEOUT_MS);
    let deadline = tokio::time::Instant::now() + head_timeout;
    let answer = match tokio::time::timeout_at(deadline, request).await {
        Err(_) => return Err(unreachable(format!("no answer within {AGENT_HEAD_TIMEOUT_MS} ms"))),
        Ok(Err(e)) => return Err(unreachable(e)),
        Ok(Ok(answer)) => answer,
    };
    let (head, body) = answer.into_parts();
    if !head.status.is_success() {
        let text = match tokio::time::timeout_at(deadline, Limited::new(body, AGENT_ERROR_BYTES_MAX).collect()).await {
            Ok(Ok(collected)) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            // Longer than the bound, cut short or too slow: the code says enough.
            _ => String::new(),
        };
        tracing::debug!(node = node_name, pod = name, code = head.status.as_u16(), %text, "the agent refused a log request");
        return Ok(agent_error(head.status, text.trim_end(), name));
    }
    // Chunk by chunk as the agent sends them; the permit goes with the stream.
    let stream = body.into_data_stream().map(move |chunk| {
        let _held = &permit;
        chunk
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(r)
}

/// `GET <path>` of the agent at `addr` (over TLS with the API's kubelet client
/// certificate when it has one, as [`serve`] asks), its whole body of at most
/// `bytes_max`, all within [`AGENT_HEAD_TIMEOUT_MS`]; any answer but a 2xx is an error.
pub async fn agent_get(
    api: &Api,
    addr: SocketAddr,
    path: &str,
    bytes_max: usize,
) -> std::result::Result<Bytes, String> {
    let work = async {
        let answer = agent_request(addr, api.config.kubelet_client.as_deref(), false, path).await?;
        let (head, body) = answer.into_parts();
        if !head.status.is_success() {
            return Err(format!("the agent answered {}", head.status));
        }
        Limited::new(body, bytes_max)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| format!("reading the answer: {e}"))
    };
    tokio::time::timeout(Duration::from_millis(AGENT_HEAD_TIMEOUT_MS), work)
        .await
        .map_err(|_| format!("no answer within {AGENT_HEAD_TIMEOUT_MS} ms"))?
}

/// `GET <path>` of the agent at `addr`: over TLS with the API's kubelet client
/// certificate `tls` when it has one (the agent's certificate checked unless
/// `skip_verify`), else plain HTTP on the shared client; the answer's head, its body to
/// come.
async fn agent_request(
    addr: SocketAddr,
    tls: Option<&crate::tls::KubeletClientTls>,
    skip_verify: bool,
    path: &str,
) -> std::result::Result<hyper::Response<hyper::body::Incoming>, String> {
    match tls {
        Some(tls) => request_tls(addr, tls.config(skip_verify), path).await,
        None => {
            let request = Request::get(format!("http://{addr}{path}"))
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            client().request(request).await.map_err(|e| error_chain(&e))
        }
    }
}

/// An error with its sources (hyper's own message is only "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        )
    }

    #[test]
    fn options_are_validated_as_upstream() {
        let o = parse_options(
            "p",
            &params(&[
                ("follow", "true"),
                ("tailLines", "2"),
                ("container", "c"),
                ("timestamps", "false"),
            ]),
        )
        .expect("valid");
        assert_eq!(o.container.as_deref(), Some("c"));
        assert!(o.follow && !o.timestamps && !o.insecure_skip_tls_verify_backend);
        let skip = parse_options("p", &params(&[("insecureSkipTLSVerifyBackend", "true")])).expect("valid");
        assert!(skip.insecure_skip_tls_verify_backend);
        assert_eq!(o.tail_lines, Some(2));
        let message = |pairs: &[(&str, &str)]| parse_options("p", &params(pairs)).err().map(|e| e.to_string());
        assert_eq!(
            message(&[("tailLines", "-1")]).as_deref(),
            Some("PodLogOptions \"p\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0")
        );
        assert_eq!(
            message(&[("sinceSeconds", "3"), ("sinceTime", "2024-05-01T10:00:00Z")]).as_deref(),
            Some("PodLogOptions \"p\" is invalid: : Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified")
        );
        assert!(matches!(
            parse_options("p", &params(&[("limitBytes", "0"), ("sinceSeconds", "0")])),
            Err(ApiError::Invalid { ref causes, .. }) if causes.len() == 2
        ));
        assert!(matches!(
            parse_options("p", &params(&[("tailLines", "x")])),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse_options("p", &params(&[("sinceTime", "noon")])),
            Err(ApiError::BadRequest(_))
        ));
        let o = parse_options("p", &params(&[("sinceTime", "2024-05-01T12:00:00.75+02:00")])).expect("valid");
        assert_eq!(o.since_time.as_deref(), Some("2024-05-01T10:00:00Z"));
    }

    #[test]
    fn containers_are_chosen_as_upstream() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(
            choose_container(&pod, "p", None)
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some(
                "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
            )
        );
        assert_eq!(choose_container(&pod, "p", Some("i")).ok().as_deref(), Some("i"));
        assert_eq!(
            choose_container(&pod, "p", Some("x"))
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some("container x is not valid for pod p")
        );
        let one = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(choose_container(&one, "p", None).ok().as_deref(), Some("only"));
    }

    #[test]
    fn the_agent_is_addressed_as_upstream_forwards() {
        let o = LogOptions {
            follow: true,
            tail_lines: Some(2),
            since_time: Some("2024-05-01T10:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(
            agent_path("ns", "p", "c", &o),
            "/containerLogs/ns/p/c?follow=true&sinceTime=2024-05-01T10%3A00%3A00Z&tailLines=2"
        );
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n"},
            {"type": "InternalIP", "address": "::1"}], "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
        assert_eq!(
            agent_address(&node, "n", "p").expect("address").to_string(),
            "[::1]:10250"
        );
        let bare = json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        let e = agent_address(&bare, "n", "p").expect_err("no port");
        assert_eq!(e.code(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.to_string().contains("node n"), "{e}");
    }
}
