//! Capstan's apiserver: the Kubernetes REST API over the store.
//!
//! kubectl, client-go style informers, the Python `kubernetes` client and kube-rs talk
//! to it unchanged. Objects are JSON in the Kubernetes wire shape, stored under
//! `/registry/<resource>/[<namespace>/]<name>`; an object's `resourceVersion` is the
//! store's `mod_revision` of its key, so optimistic concurrency is a compare on it.
//!
//! Layers, each usable alone:
//!
//! - [`storage`]: the etcd v3 semantics the API needs, over the in-process store member
//!   or a remote etcd.
//! - [`resources`]: the served resource types (one table for discovery, routing, keys).
//! - [`object`], [`validation`], [`patch`], [`selector`], [`table`], [`alloc`],
//!   [`protobuf`] (request bodies kubectl 1.32+ sends as protobuf, decoded to JSON): pure
//!   pieces of the API's semantics (metadata, defaulting and validation, the three
//!   patch formats, label and field selectors, kubectl's Table output, Service IPs).
//! - [`handlers`] and [`watch`]: the verbs; [`discovery`] and [`openapi`] (the schemas
//!   kubectl validates with); [`http`]: routing and content negotiation.
//!
//! - [`cache`]: the watch cache, one store watch per resource type serving every client
//!   watch and unpaged list.
//! - [`mesh`]: the gRPC mesh API for the cluster's own components (list, watch and
//!   writes of any resource; node assignment and proxy configuration streams), on the
//!   same listener as REST: requests with a gRPC content type go to it.
//!
//! - [`auth`] and [`rbac`]: bearer-token authentication and RBAC authorization, when
//!   configured (`capstan apiserver --token-auth-file ... --authorization-mode RBAC`).
//! - [`nodes`]: the Node authorizer and node restriction for node agents.
//! - [`serviceaccount`]: ServiceAccount tokens (the TokenRequest API, bearer JWTs).
//! - [`listen`] (the connections and their bounds), [`tls`] (HTTPS, client certificates)
//!   and [`flow`] (requests in flight, shared fairly between clients; 429 past that).
//! - [`metrics`]: Prometheus metrics on `GET /metrics` (requests, watchers, watch cache
//!   lag, flow control), recorded by one middleware around the routes.
//! - [`ui`]: the web dashboard at `/ui/`, built from `ui/` with npm at build time and
//!   embedded; it drives the same API as its user.
//!
//! Deliberately left out for now (see the issue notes): OpenAPI v3 and operations in the
//! OpenAPI document, server-side apply.
//!
//! The apiserver knows nothing of Raft or RocksDB: it sees only the store's etcd API.

pub mod alloc;
pub mod auth;
pub mod cache;
pub mod discovery;
pub mod error;
pub mod flow;
pub mod handlers;
pub mod http;
pub mod listen;
pub mod mesh;
pub mod metrics;
pub mod nodes;
pub mod object;
pub mod openapi;
pub mod patch;
pub mod podlog;
pub mod podmetrics;
pub mod protobuf;
pub mod rbac;
pub mod resources;
pub mod selector;
pub mod serviceaccount;
pub mod storage;
pub mod table;
pub mod tls;
pub mod ui;
pub mod validation;
pub mod watch;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;

pub use error::ApiError;
pub use handlers::{Api, ApiConfig};
pub use storage::Storage;

use crate::http::{json_response, Params};

/// Largest request body (upstream: 3 MiB).
pub const REQUEST_BYTES_MAX: usize = 3 << 20;
/// Every request but a watch ends within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn ok_text() -> Response {
    let mut r = Response::new(Body::from("ok"));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn not_found_path() -> Response {
    ApiError::NotFound {
        what: error::GroupResource::new("", ""),
        name: String::new(),
    }
    .into_response()
}

/// `/openapi/v2` (see [`openapi`]): protobuf when the client asks for it (kubectl does),
/// JSON otherwise.
fn openapi_v2(headers: &axum::http::HeaderMap) -> Response {
    let doc = openapi::document();
    let wants_protobuf = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("protobuf"));
    let (body, content_type) = if wants_protobuf {
        (doc.protobuf.clone(), openapi::PROTOBUF_CONTENT_TYPE)
    } else {
        (doc.json.clone(), "application/json")
    };
    let mut r = Response::new(Body::from(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Bytes of an oversized request body read on and dropped, at most, before the 413 goes out.
const LINGER_BYTES_MAX: usize = 16 << 20;
/// How long reading on an oversized body may take, at most.
const LINGER_TIMEOUT: Duration = Duration::from_secs(5);

/// A request body of at most [`REQUEST_BYTES_MAX`]. A larger one is refused (413), but
/// first read on and dropped, up to [`LINGER_BYTES_MAX`] more within [`LINGER_TIMEOUT`]:
/// a server that answers and closes while the client is still sending resets the
/// connection, and the client then loses the answer (hyper: `IncompleteMessage`).
async fn read_body(mut body: Body) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut buf = bytes::BytesMut::new();
    let too_large = || ApiError::TooLarge(format!("Request entity too large: limit is {REQUEST_BYTES_MAX}"));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest(format!("reading the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if buf.len() + data.len() > REQUEST_BYTES_MAX {
            let linger = async {
                let mut dropped = data.len();
                while dropped <= LINGER_BYTES_MAX {
                    match body.frame().await {
                        Some(Ok(f)) => dropped += f.data_ref().map_or(0, |d| d.len()),
                        _ => return,
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_TIMEOUT, linger).await;
            return Err(too_large());
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

async fn resource_request(
    api: Arc<Api>,
    method: Method,
    group: &str,
    version: &str,
    rest: &str,
    query: HashMap<String, String>,
    req: Request,
) -> Response {
    let params = Params::new(query);
    let is_watch = params.flag("watch") || rest.starts_with("watch/");
    let work = async move {
        let (parts, body) = req.into_parts();
        let body = match read_body(body).await {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        };
        let user = auth::user_of(&parts.extensions);
        handlers::handle(api, &user, method, group, version, rest, params, parts.headers, body).await
    };
    if is_watch {
        return work.await;
    }
    // The body's upload counts: a client that sends it slowly holds its request (and a
    // seat of the flow control) no longer than any other.
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => ApiError::Timeout("the request did not finish in time".into()).into_response(),
    }
}

/// The body of a request answered here rather than stored (the reviews, TokenRequest),
/// as JSON: kubectl 1.32 posts them as protobuf, which is decoded.
async fn json_body(headers: &axum::http::HeaderMap, body: Body) -> Result<bytes::Bytes, ApiError> {
    let body = read_body(body).await?;
    let is_protobuf = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/vnd.kubernetes.protobuf"));
    if !is_protobuf || body.is_empty() {
        return Ok(body);
    }
    protobuf::decode(&body)
        .map(|v| bytes::Bytes::from(v.to_string()))
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// One of the reviews ([`auth`]): about the caller, answered and not stored (201, as
/// upstream answers a create).
async fn review(api: Arc<Api>, req: Request, answer: auth::Review) -> Response {
    let (parts, body) = req.into_parts();
    let user = auth::user_of(&parts.extensions);
    let body = match json_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match answer(api.config.auth.as_deref(), &user, &body) {
        Ok(v) => json_response(StatusCode::CREATED, &v),
        Err(e) => e.into_response(),
    }
}

/// `POST .../serviceaccounts/<name>/token` (the TokenRequest API, `kubectl create
/// token`): a signed token for an existing ServiceAccount ([`serviceaccount`]).
async fn token_request(api: Arc<Api>, namespace: &str, name: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(key) = api.config.auth.as_deref().and_then(auth::Auth::service_account_key) else {
        return ApiError::BadRequest("this server issues no service account tokens (it authenticates no one)".into())
            .into_response();
    };
    let body = match json_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let request: serde_json::Value = if body.is_empty() {
        serde_json::json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return ApiError::BadRequest(format!("the TokenRequest: {e}")).into_response(),
        }
    };
    let (expiration_s, audiences) = match serviceaccount::requested(&request) {
        Ok(r) => r,
        Err(message) => return ApiError::BadRequest(message).into_response(),
    };
    let rt = resources::ResourceType::find("", "v1", "serviceaccounts").expect("invariant: serviceaccounts are served");
    let account: serde_json::Value = match api.storage.get(&rt.key(Some(namespace), name), true).await {
        Ok((Some(kv), _)) => serde_json::from_slice(&kv.value).unwrap_or_default(),
        Ok((None, _)) => {
            return ApiError::NotFound {
                what: rt.group_resource(),
                name: name.to_owned(),
            }
            .into_response()
        }
        Err(e) => return e.into_response(),
    };
    let subject = serviceaccount::Subject {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: account["metadata"]["uid"].as_str().unwrap_or_default().to_owned(),
    };
    let user = auth::user_of(&parts.extensions);
    let pod = match bound_pod(&api, &user, namespace, name, &request["spec"]["boundObjectRef"]).await {
        Ok(pod) => pod,
        Err(e) => return e.into_response(),
    };
    let now = object::now_unix_s();
    let token = match key.issue(&subject, pod.as_ref(), &audiences, now, expiration_s) {
        Ok(t) => t,
        Err(e) => return ApiError::Internal(e).into_response(),
    };
    let expires = object::rfc3339(now + expiration_s);
    let answer = serde_json::json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": serde_json::Value::Null},
        "spec": {"audiences": audiences, "expirationSeconds": expiration_s, "boundObjectRef": request["spec"]["boundObjectRef"].clone()},
        "status": {"token": token, "expirationTimestamp": expires},
    });
    json_response(StatusCode::CREATED, &answer)
}

/// The pod a TokenRequest binds its token to (`spec.boundObjectRef`), checked as
/// upstream's token REST and NodeRestriction check it: the pod exists with the uid given,
/// runs as the ServiceAccount asked for, and, when a node agent asks, is bound to that
/// node (and a node may ask only for tokens bound to a pod, with its uid).
async fn bound_pod(
    api: &Api,
    user: &rbac::UserInfo,
    namespace: &str,
    account: &str,
    reference: &serde_json::Value,
) -> Result<Option<serviceaccount::BoundPod>, ApiError> {
    let node = nodes::node_of(user);
    let forbidden = |why: &str| ApiError::Forbidden(format!("serviceaccounts \"{account}\" is forbidden: {why}"));
    if reference.is_null() {
        return match node {
            Some(_) => Err(forbidden("node requested token not bound to a pod")),
            None => Ok(None),
        };
    }
    let kind = reference["kind"].as_str().unwrap_or_default();
    if kind != "Pod" {
        return Err(match node {
            Some(_) => forbidden("node requested token not bound to a pod"),
            None => ApiError::BadRequest(format!(
                "cannot bind token for serviceaccount \"{account}\" to object of kind {kind:?}: only Pod is supported"
            )),
        });
    }
    let pod_name = reference["name"].as_str().unwrap_or_default();
    let given_uid = reference["uid"].as_str().unwrap_or_default();
    if node.is_some() && given_uid.is_empty() {
        return Err(forbidden("node requested token with a pod binding without a uid"));
    }
    let pods = resources::ResourceType::find("", "v1", "pods").expect("invariant: pods are served");
    let pod = match api.storage.get(&pods.key(Some(namespace), pod_name), true).await? {
        (Some(kv), _) => object::from_kv(&kv)?,
        (None, _) => {
            return Err(ApiError::NotFound {
                what: pods.group_resource(),
                name: pod_name.to_owned(),
            })
        }
    };
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    if !given_uid.is_empty() && given_uid != uid {
        return Err(ApiError::Conflict {
            what: pods.group_resource(),
            name: pod_name.to_owned(),
            reason: format!(
                "the UID in the bound object reference ({given_uid}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        });
    }
    let runs_as = pod["spec"]["serviceAccountName"].as_str().unwrap_or("default");
    if runs_as != account {
        return Err(ApiError::BadRequest(format!(
            "cannot bind token for serviceaccount \"{account}\" to pod running with different serviceaccount name."
        )));
    }
    if let Some(node) = node {
        if !nodes::bound_to(&pod, node) {
            return Err(forbidden(
                "node requested token bound to a pod scheduled on a different node",
            ));
        }
    }
    Ok(Some(serviceaccount::BoundPod {
        name: pod_name.to_owned(),
        uid,
    }))
}

/// The HTTP router of the API, with metrics of its own.
pub fn router(api: Arc<Api>) -> Router {
    router_with(api, metrics::Metrics::new(None))
}

/// The HTTP router of the API: every route recorded in `metrics` (and `/metrics`
/// serving them).
pub fn router_with(api: Arc<Api>, metrics: Arc<metrics::Metrics>) -> Router {
    let scraped = metrics.clone();
    Router::new()
        .route(
            "/version",
            get(|| async { json_response(StatusCode::OK, &discovery::version()) }),
        )
        .route("/healthz", get(|| async { ok_text() }))
        .route("/livez", get(|| async { ok_text() }))
        .route("/readyz", get(|| async { ok_text() }))
        .route(
            "/metrics",
            get(|State(api): State<Arc<Api>>| async move { scraped.serve(&api).await }),
        )
        .route(
            "/api",
            get(|| async { json_response(StatusCode::OK, &discovery::api_versions()) }),
        )
        .route(
            "/apis",
            get(|| async { json_response(StatusCode::OK, &discovery::api_groups()) }),
        )
        .route(
            "/api/v1",
            get(|| async {
                match discovery::resource_list("", "v1") {
                    Some(v) => json_response(StatusCode::OK, &v),
                    None => not_found_path(),
                }
            }),
        )
        .route(
            "/apis/{group}",
            get(|Path(group): Path<String>| async move {
                match discovery::api_group(&group) {
                    Some(v) => json_response(StatusCode::OK, &v),
                    None => not_found_path(),
                }
            }),
        )
        .route(
            "/apis/{group}/{version}",
            get(|Path((group, version)): Path<(String, String)>| async move {
                match discovery::resource_list(&group, &version) {
                    Some(v) => json_response(StatusCode::OK, &v),
                    None => not_found_path(),
                }
            }),
        )
        .route(
            "/openapi/v2",
            get(|headers: axum::http::HeaderMap| async move { openapi_v2(&headers) }),
        )
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            axum::routing::post(|State(api): State<Arc<Api>>, req: Request| async move {
                review(api, req, auth::self_subject_access_review).await
            }),
        )
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            axum::routing::post(|State(api): State<Arc<Api>>, req: Request| async move {
                review(api, req, auth::self_subject_rules_review).await
            }),
        )
        .route(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            axum::routing::post(|State(api): State<Arc<Api>>, req: Request| async move {
                review(api, req, |_, user, body| auth::self_subject_review(user, body)).await
            }),
        )
        .route(
            "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            axum::routing::post(
                |State(api): State<Arc<Api>>, Path((namespace, name)): Path<(String, String)>, req: Request| async move {
                    token_request(api, &namespace, &name, req).await
                },
            ),
        )
        .route(
            "/api/v1/{*rest}",
            any(
                |State(api): State<Arc<Api>>,
                 Path(rest): Path<String>,
                 Query(q): Query<HashMap<String, String>>,
                 req: Request| async move {
                    let method = req.method().clone();
                    resource_request(api, method, "", "v1", &rest, q, req).await
                },
            ),
        )
        .route(
            "/apis/{group}/{version}/{*rest}",
            any(
                |State(api): State<Arc<Api>>,
                 Path((group, version, rest)): Path<(String, String, String)>,
                 Query(q): Query<HashMap<String, String>>,
                 req: Request| async move {
                    let method = req.method().clone();
                    if group == podmetrics::GROUP && version == podmetrics::VERSION {
                        if method != Method::GET {
                            return ApiError::MethodNotAllowed(format!("{method} is not supported on {group}")).into_response();
                        }
                        let selector = q.get("labelSelector").map_or("", String::as_str);
                        return podmetrics::serve(&api, &rest, selector)
                            .await
                            .unwrap_or_else(|e| e.into_response());
                    }
                    resource_request(api, method, &group, &version, &rest, q, req).await
                },
            ),
        )
        .merge(ui::routes())
        .fallback(|| async { not_found_path() })
        // Around every route (and the fallback): requests are recorded in one place.
        .layer(axum::middleware::from_fn_with_state(metrics, metrics::record))
        .with_state(api)
}

/// Serves the API on `listener` until `shutdown` completes: REST, and the gRPC mesh
/// API ([`mesh`]) for requests with a gRPC content type (HTTP/2 with prior knowledge).
/// Creates the namespaces every cluster has first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Arc<Api>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, api, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given (see [`tls`]).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    api: Arc<Api>,
    tls: Option<Arc<tls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Err(e) = handlers::bootstrap(&api).await {
        tracing::warn!(error = %e, "could not create the default namespaces yet");
    }
    if let Err(e) = auth::bootstrap_policy(&api).await {
        tracing::warn!(error = %e, "could not create the default RBAC roles and bindings yet");
    }
    // Mesh streams last as long as their clients: on shutdown they are told to end, so
    // that the graceful shutdown below does not wait for them forever.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let control = api.config.flow.map(flow::FlowControl::new);
    let metrics = metrics::Metrics::new(control.clone());
    let mut app = router_with(api.clone(), metrics.clone());
    // Flow control (when on) sees the user the authentication below found: it is the
    // inner layer; the metrics' recording is inside it (a request in flight is one with
    // a seat) and it counts its refusals itself.
    if let Some(control) = control {
        app = app.layer(axum::middleware::from_fn_with_state(
            flow::Filter {
                control,
                metrics: Some(metrics),
            },
            flow::filter,
        ));
    }
    // Authentication and authorization, when configured, in front of every REST route
    // (the mesh API below does the same for its calls).
    let mut policy_task = None;
    if let Some(auth) = api.config.auth.clone() {
        if auth.mode() == auth::Mode::Rbac {
            policy_task = Some(AbortOnDrop(tokio::spawn(auth::follow_policy(
                api.clone(),
                auth.clone(),
            ))));
        }
        app = app.layer(axum::middleware::from_fn_with_state(
            auth::Guard { auth, api: api.clone() },
            auth::filter,
        ));
    }
    let app = app.layer(axum::middleware::from_fn_with_state(
        mesh::MeshLayer {
            routes: mesh::routes(api.clone(), stop_rx),
            api: api.clone(),
        },
        mesh::serve_layer,
    ));
    let served = listen::serve(listener, app, tls, api.config.connections, shutdown).await;
    drop(policy_task);
    served
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A kubeconfig for `server` (no credentials), as kubectl reads it; `ca_pem`: the CA to
/// trust for an `https://` server.
pub fn kubeconfig(server: &str, ca_pem: Option<&str>) -> String {
    kubeconfig_for(server, ca_pem, None)
}

/// [`kubeconfig`] whose user presents `client`: a certificate and its key, PEM.
pub fn kubeconfig_for(server: &str, ca_pem: Option<&str>, client: Option<(&str, &str)>) -> String {
    use base64::Engine;
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let ca = ca_pem.map_or(String::new(), |pem| {
        format!("    certificate-authority-data: {}\n", b64(pem))
    });
    let user = match client {
        None => " {}\n".to_owned(),
        Some((cert, key)) => format!(
            "\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(cert),
            b64(key)
        ),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: capstan\n  cluster:\n    server: {server}\n{ca}contexts:\n- name: capstan\n  context:\n    cluster: capstan\n    user: capstan\n    namespace: default\ncurrent-context: capstan\nusers:\n- name: capstan\n  user:{user}"
    )
}
