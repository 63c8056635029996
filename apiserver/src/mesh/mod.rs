//! The mesh API: gRPC for the cluster's own components (`capstan.mesh.v1.Mesh`, in
//! `proto/capstan/mesh.proto`), served on the same listener as the REST API.
//!
//! What it offers over REST: one long-lived HTTP/2 stream per node agent and per node
//! proxy carrying exactly what that component needs (the pods bound to its node; every
//! Service with its ready endpoints), in typed messages with a snapshot marker and
//! resumable positions, instead of each component running informers over several REST
//! watches and joining them itself.
//!
//! Design:
//!
//! - **One implementation of the semantics.** The unary verbs (Get, List, Create,
//!   Update, UpdateStatus, Delete, ReportPodStatus) are turned into the REST request
//!   they mean and run through [`crate::handlers::handle`], the very code REST requests
//!   run: the same validation, defaulting, admission (namespace lifecycle), optimistic
//!   concurrency, watch-cache reads and storage. The response body is the object's JSON
//!   as REST would send it, passed on as bytes; an error's `Status` becomes a gRPC
//!   status ([`status_from_rest`]) whose trailing metadata carries the Status JSON under
//!   [`STATUS_METADATA_KEY`].
//! - **Streams from the watch cache.** Watch and NodeAssignments subscribe to the
//!   resource type's watch cache ([`crate::cache`]), as REST watches do: however many
//!   agents connect, the store sees one watch per resource type. A node's assignment
//!   stream is a watch of all pods filtered by `spec.nodeName` (selection changes
//!   become UPSERT/DELETE as a selector's do for REST watches). ProxyConfig streams are
//!   fed by one shared [`proxy::ProxyHub`], which follows the Service, EndpointSlice and
//!   Endpoints caches once, joins them (a selectorless Service's manual Endpoints; the
//!   serving terminating endpoints of a port without a ready one), and fans finished
//!   per-Service messages out.
//! - **Slow readers.** A stream's task forwards from its cache subscription into a
//!   small queue that tonic drains as HTTP/2 flow control allows. A client that stops
//!   reading stalls only its own task; its cache subscription then fills and is dropped
//!   by the cache (as a slow REST watcher is), and once the client reads again the
//!   stream ends with `UNAVAILABLE`: the client resumes from the last
//!   `resource_version` it got (or resnapshots). Writers and other streams never wait.
//! - **Bounds.** Request messages: the REST body limit plus a little; responses:
//!   [`RESPONSE_BYTES_MAX`] (page larger lists); HTTP/2 streams per connection: hyper's
//!   default of 200 (the listener is `axum::serve`'s); cache subscribers per type: the
//!   cache's bound; proxy streams: [`proxy::PROXY_STREAMS_MAX`]; per stream: the
//!   cache's queue, [`stream::OUT_QUEUE_MESSAGES`] and HTTP/2's windows. Unary calls end
//!   within [`crate::REQUEST_TIMEOUT`].
//! - **Serving.** [`serve_layer`] routes requests whose content type is
//!   `application/grpc*` to the tonic service and everything else to the REST router
//!   unchanged; `axum::serve` speaks HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on
//!   one port, which is what gRPC clients use. Streams end (`UNAVAILABLE`) when the
//!   server shuts down, so a graceful shutdown does not wait for them.
//!
//! Deliberately left out: authentication (the whole API is plain loopback HTTP for
//! now), an index of pod watchers by node name (each pod change is offered to every
//! assignment stream, which filters it: O(streams) per pod change, as a REST watch with
//! a field selector costs; upstream's cache indexes this), resuming ProxyConfig streams
//! (a proxy that reconnects gets a new snapshot), topology hints in the proxy
//! configuration, patch verbs, and a Binding verb (the
//! scheduler binds over REST).

pub mod proxy;
pub mod stream;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use capstan_proto::mesh::mesh_server::{Mesh, MeshServer};
use capstan_proto::mesh::{
    CreateRequest, DeleteRequest, GetRequest, ListRequest, ListResponse, NodeAssignmentsRequest, Object,
    PodStatusReport, ProxyConfigRequest, ResourceRef, UpdateRequest, WatchRequest,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tonic::codegen::Service;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::Code;

use crate::auth;
use crate::error::{ApiError, GroupResource};
use crate::handlers::{self, Api};
use crate::http::Params;
use crate::rbac::{self, UserInfo};
use crate::resources::ResourceType;

/// The trailing metadata key under which a failed call carries the Kubernetes Status
/// as JSON.
pub const STATUS_METADATA_KEY: &str = "k8s-status-bin";
/// A Status larger than this goes without its details (HTTP/2 header lists are
/// bounded by the peer).
const STATUS_METADATA_BYTES_MAX: usize = 8 << 10;
/// Largest response message (and REST response body read for one).
pub const RESPONSE_BYTES_MAX: usize = 64 << 20;
/// Largest request message: an object as large as REST takes, and the other fields.
const REQUEST_MESSAGE_BYTES_MAX: usize = crate::REQUEST_BYTES_MAX + (64 << 10);

/// The gRPC code for a Kubernetes Status `reason` (and its HTTP code, for reasons this
/// table does not know).
pub fn grpc_code(reason: &str, http: StatusCode) -> Code {
    match reason {
        "NotFound" => Code::NotFound,
        "AlreadyExists" => Code::AlreadyExists,
        "Conflict" => Code::Aborted,
        "Invalid" | "BadRequest" | "NotAcceptable" | "UnsupportedMediaType" => Code::InvalidArgument,
        // As etcd answers a compacted revision: the position is outside what is kept.
        "Expired" | "Gone" => Code::OutOfRange,
        "Forbidden" => Code::PermissionDenied,
        "Unauthorized" => Code::Unauthenticated,
        "MethodNotAllowed" => Code::Unimplemented,
        "TooManyRequests" | "RequestEntityTooLarge" => Code::ResourceExhausted,
        "Timeout" | "ServerTimeout" => Code::DeadlineExceeded,
        "ServiceUnavailable" => Code::Unavailable,
        "InternalError" => Code::Internal,
        _ => match http.as_u16() {
            400 | 422 => Code::InvalidArgument,
            404 => Code::NotFound,
            409 => Code::Aborted,
            410 => Code::OutOfRange,
            429 => Code::ResourceExhausted,
            503 => Code::Unavailable,
            504 => Code::DeadlineExceeded,
            500..=599 => Code::Internal,
            _ => Code::Unknown,
        },
    }
}

/// A gRPC status for a REST error response: its code from the Status's reason, its
/// message the Status's, and the Status itself in the trailing metadata.
pub fn status_from_rest(http: StatusCode, body: &[u8]) -> tonic::Status {
    let mut status: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": String::from_utf8_lossy(body), "code": http.as_u16()})
    });
    let code = grpc_code(status["reason"].as_str().unwrap_or(""), http);
    let message = status["message"].as_str().unwrap_or("").to_string();
    let mut encoded = serde_json::to_vec(&status).unwrap_or_default();
    if encoded.len() > STATUS_METADATA_BYTES_MAX {
        if let Some(o) = status.as_object_mut() {
            o.remove("details");
        }
        encoded = serde_json::to_vec(&status).unwrap_or_default();
        encoded.truncate(STATUS_METADATA_BYTES_MAX);
    }
    let mut md = MetadataMap::new();
    md.insert_bin(STATUS_METADATA_KEY, MetadataValue::from_bytes(&encoded));
    tonic::Status::with_metadata(code, message, md)
}

/// A gRPC status for an error of the API.
pub fn status_of(e: &ApiError) -> tonic::Status {
    let body = serde_json::to_vec(&e.status()).unwrap_or_default();
    status_from_rest(e.code(), &body)
}

/// The Kubernetes Status a failed mesh call carried, for clients.
pub fn kube_status(status: &tonic::Status) -> Option<Value> {
    let v = status.metadata().get_bin(STATUS_METADATA_KEY)?.to_bytes().ok()?;
    serde_json::from_slice(&v).ok()
}

fn bad_request(message: impl Into<String>) -> tonic::Status {
    status_of(&ApiError::BadRequest(message.into()))
}

/// What the mesh reads of an object's metadata (everything else is passed through).
#[derive(Deserialize, Default)]
struct Head {
    #[serde(default)]
    metadata: HeadMeta,
}

#[derive(Deserialize, Default)]
struct HeadMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default, rename = "resourceVersion")]
    resource_version: String,
}

fn head(json: &[u8]) -> HeadMeta {
    serde_json::from_slice::<Head>(json).unwrap_or_default().metadata
}

/// A REST request a mesh call stands for.
struct Rest {
    method: Method,
    group: String,
    version: String,
    /// The path after `/api/v1/` or `/apis/<group>/<version>/`.
    path: String,
    params: HashMap<String, String>,
    body: Bytes,
}

/// Where a mesh call goes: the resource type and the REST path under its group
/// version. `name`: None for a collection. `namespace_required`: the call names (or
/// creates) one object, so a namespaced type needs its namespace.
fn rest_path(
    r: Option<&ResourceRef>,
    namespace: &str,
    name: Option<&str>,
    sub: Option<&str>,
    namespace_required: bool,
) -> Result<(&'static ResourceType, String), tonic::Status> {
    let r = r.ok_or_else(|| bad_request("resource is required"))?;
    // Every part becomes one path segment: a '/' would make it another request.
    for (what, v) in [
        ("group", r.group.as_str()),
        ("version", r.version.as_str()),
        ("resource", r.resource.as_str()),
        ("namespace", namespace),
        ("name", name.unwrap_or("")),
    ] {
        if v.contains('/') || v == "." || v == ".." {
            return Err(bad_request(format!("{what} {v:?} is not a valid path segment")));
        }
    }
    let rt = ResourceType::find(&r.group, &r.version, &r.resource).ok_or_else(|| {
        status_of(&ApiError::NotFound {
            what: GroupResource::new(&r.group, &r.resource),
            name: String::new(),
        })
    })?;
    if name == Some("") {
        return Err(bad_request("name is required"));
    }
    let mut path = if rt.namespaced && !namespace.is_empty() {
        format!("namespaces/{namespace}/{}", rt.plural)
    } else if rt.namespaced && namespace_required {
        return Err(bad_request(format!(
            "{} are namespaced: namespace is required",
            rt.plural
        )));
    } else if !rt.namespaced && !namespace.is_empty() {
        return Err(bad_request(format!("{} are not namespaced", rt.plural)));
    } else {
        rt.plural.to_string()
    };
    if let Some(n) = name {
        path.push('/');
        path.push_str(n);
    }
    if let Some(s) = sub {
        path.push('/');
        path.push_str(s);
    }
    Ok((rt, path))
}

fn dry_run(params: &mut HashMap<String, String>, on: bool) {
    if on {
        params.insert("dryRun".into(), "All".into());
    }
}

/// The mesh service over one [`Api`].
pub struct MeshService {
    api: Arc<Api>,
    /// Becomes true (or closes) when the server shuts down: streams end.
    stop: watch::Receiver<bool>,
    /// The proxy configuration's shared state, started by the first ProxyConfig call.
    proxy: OnceLock<Arc<proxy::ProxyHub>>,
}

impl MeshService {
    pub fn new(api: Arc<Api>, stop: watch::Receiver<bool>) -> MeshService {
        MeshService {
            api,
            stop,
            proxy: OnceLock::new(),
        }
    }

    /// Runs the REST request a call stands for; the response body on success.
    async fn rest(&self, user: &UserInfo, r: Rest) -> Result<Bytes, tonic::Status> {
        // The same decision as for the REST request the call stands for.
        let full = if r.group.is_empty() {
            format!("/api/{}/{}", r.version, r.path)
        } else {
            format!("/apis/{}/{}/{}", r.group, r.version, r.path)
        };
        let attrs = rbac::request_attributes(r.method.as_str(), &full, false);
        auth::authorize(&self.api, user, &attrs)
            .await
            .map_err(|e| status_of(&e))?;
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let work = handlers::handle(
            self.api.clone(),
            user,
            r.method,
            &r.group,
            &r.version,
            &r.path,
            Params::new(r.params),
            headers,
            r.body,
        );
        let response = match tokio::time::timeout(crate::REQUEST_TIMEOUT, work).await {
            Ok(response) => response,
            Err(_) => {
                return Err(status_of(&ApiError::Timeout(
                    "the request did not finish in time".into(),
                )))
            }
        };
        let code = response.status();
        let body = axum::body::to_bytes(response.into_body(), RESPONSE_BYTES_MAX)
            .await
            .map_err(|e| {
                status_of(&ApiError::TooLarge(format!(
                    "the response is larger than {RESPONSE_BYTES_MAX} bytes (page with limit): {e}"
                )))
            })?;
        if code.is_success() {
            Ok(body)
        } else {
            Err(status_from_rest(code, &body))
        }
    }

    /// A REST call answered with one object.
    async fn object(&self, user: &UserInfo, r: Rest) -> Result<tonic::Response<Object>, tonic::Status> {
        let json = self.rest(user, r).await?;
        let resource_version = head(&json).resource_version;
        Ok(tonic::Response::new(Object { json, resource_version }))
    }

    fn rest_for(r: &ResourceRef, method: Method, path: String, params: HashMap<String, String>, body: Bytes) -> Rest {
        Rest {
            method,
            group: r.group.clone(),
            version: r.version.clone(),
            path,
            params,
            body,
        }
    }

    async fn put(
        &self,
        user: &UserInfo,
        req: UpdateRequest,
        sub: Option<&str>,
    ) -> Result<tonic::Response<Object>, tonic::Status> {
        let r = req.resource.unwrap_or_default();
        let meta = head(&req.object);
        let name = if req.name.is_empty() { meta.name } else { req.name };
        let namespace = if r.namespace.is_empty() {
            meta.namespace
        } else {
            r.namespace.clone()
        };
        let (_, path) = rest_path(Some(&r), &namespace, Some(&name), sub, true)?;
        let mut params = HashMap::new();
        dry_run(&mut params, req.dry_run);
        self.object(user, Self::rest_for(&r, Method::PUT, path, params, req.object))
            .await
    }

    /// A stream of `resource` objects (in `namespace`, or all) for `user`: the decision
    /// for a list and a watch of them.
    async fn authorize_stream(&self, user: &UserInfo, r: &ResourceRef, namespace: &str) -> Result<(), tonic::Status> {
        for verb in ["list", "watch"] {
            let attrs = rbac::Attributes::Resource(rbac::ResourceAttributes {
                verb: verb.into(),
                api_group: r.group.clone(),
                api_version: r.version.clone(),
                resource: r.resource.clone(),
                subresource: String::new(),
                namespace: namespace.into(),
                name: String::new(),
            });
            auth::authorize(&self.api, user, &attrs)
                .await
                .map_err(|e| status_of(&e))?;
        }
        Ok(())
    }

    fn proxy_hub(&self) -> &Arc<proxy::ProxyHub> {
        self.proxy.get_or_init(|| proxy::ProxyHub::start(self.api.clone()))
    }
}

#[tonic::async_trait]
impl Mesh for MeshService {
    async fn get(&self, request: tonic::Request<GetRequest>) -> Result<tonic::Response<Object>, tonic::Status> {
        let user = auth::user_of(request.extensions());
        let req = request.into_inner();
        let r = req.resource.unwrap_or_default();
        let (_, path) = rest_path(Some(&r), &r.namespace, Some(&req.name), None, true)?;
        let mut params = HashMap::new();
        if !req.resource_version.is_empty() {
            params.insert("resourceVersion".into(), req.resource_version);
        }
        self.object(&user, Self::rest_for(&r, Method::GET, path, params, Bytes::new()))
            .await
    }

    async fn list(&self, request: tonic::Request<ListRequest>) -> Result<tonic::Response<ListResponse>, tonic::Status> {
        let user = auth::user_of(request.extensions());
        let req = request.into_inner();
        let r = req.resource.unwrap_or_default();
        let (_, path) = rest_path(Some(&r), &r.namespace, None, None, false)?;
        let mut params = HashMap::new();
        for (k, v) in [
            ("labelSelector", req.label_selector),
            ("fieldSelector", req.field_selector),
            ("continue", req.continue_token),
            ("resourceVersion", req.resource_version),
            ("resourceVersionMatch", req.resource_version_match),
        ] {
            if !v.is_empty() {
                params.insert(k.to_string(), v);
            }
        }
        if req.limit > 0 {
            params.insert("limit".into(), req.limit.to_string());
        }
        let body = self
            .rest(&user, Self::rest_for(&r, Method::GET, path, params, Bytes::new()))
            .await?;
        let mut list: Value = serde_json::from_slice(&body)
            .map_err(|e| status_of(&ApiError::Internal(format!("decoding the list: {e}"))))?;
        let items = match list.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        let items = items
            .iter()
            .map(|item| serde_json::to_vec(item).map(Bytes::from))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| status_of(&ApiError::Internal(format!("encoding an item: {e}"))))?;
        let md = &list["metadata"];
        Ok(tonic::Response::new(ListResponse {
            items,
            resource_version: md["resourceVersion"].as_str().unwrap_or("").to_string(),
            continue_token: md["continue"].as_str().unwrap_or("").to_string(),
        }))
    }

    type WatchStream = stream::Stream<capstan_proto::mesh::WatchEvent>;

    async fn watch(
        &self,
        request: tonic::Request<WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        let user = auth::user_of(request.extensions());
        let req = request.into_inner();
        let r = req.resource.clone().unwrap_or_default();
        let (rt, _) = rest_path(Some(&r), &r.namespace, None, None, false)?;
        self.authorize_stream(&user, &r, &r.namespace).await?;
        stream::watch(&self.api, rt, req, self.stop.clone())
            .await
            .map(tonic::Response::new)
    }

    async fn create(&self, request: tonic::Request<CreateRequest>) -> Result<tonic::Response<Object>, tonic::Status> {
        let user = auth::user_of(request.extensions());
        let req = request.into_inner();
        let r = req.resource.unwrap_or_default();
        let namespace = if r.namespace.is_empty() {
            head(&req.object).namespace
        } else {
            r.namespace.clone()
        };
        let (_, path) = rest_path(Some(&r), &namespace, None, None, true)?;
        let mut params = HashMap::new();
        dry_run(&mut params, req.dry_run);
        self.object(&user, Self::rest_for(&r, Method::POST, path, params, req.object))
            .await
    }

    async fn update(&self, request: tonic::Request<UpdateRequest>) -> Result<tonic::Response<Object>, tonic::Status> {
        let user = auth::user_of(request.extensions());
        self.put(&user, request.into_inner(), None).await
    }

    async fn update_status(
        &self,
        request: tonic::Request<UpdateRequest>,
    ) -> Result<tonic::Response<Object>, tonic::Status> {
        let user = auth::user_of(request.extensions());
        self.put(&user, request.into_inner(), Some("status")).await
    }

    async fn delete(&self, request: tonic::Request<DeleteRequest>) -> Result<tonic::Response<Object>, tonic::Status> {
        let user = auth::user_of(request.extensions());
        let req = request.into_inner();
        let r = req.resource.unwrap_or_default();
        let (_, path) = rest_path(Some(&r), &r.namespace, Some(&req.name), None, true)?;
        let mut options = json!({"kind": "DeleteOptions", "apiVersion": "v1"});
        if let Some(g) = req.grace_period_seconds {
            options["gracePeriodSeconds"] = json!(g);
        }
        if !req.uid.is_empty() {
            options["preconditions"]["uid"] = json!(req.uid);
        }
        if !req.resource_version.is_empty() {
            options["preconditions"]["resourceVersion"] = json!(req.resource_version);
        }
        let mut params = HashMap::new();
        dry_run(&mut params, req.dry_run);
        let body = Bytes::from(options.to_string());
        self.object(&user, Self::rest_for(&r, Method::DELETE, path, params, body))
            .await
    }

    type NodeAssignmentsStream = stream::Stream<capstan_proto::mesh::Assignment>;

    async fn node_assignments(
        &self,
        request: tonic::Request<NodeAssignmentsRequest>,
    ) -> Result<tonic::Response<Self::NodeAssignmentsStream>, tonic::Status> {
        let user = auth::user_of(request.extensions());
        self.authorize_stream(&user, &core_v1("pods"), "").await?;
        let req = request.into_inner();
        // A node agent streams its own node's assignments only.
        if let Some(node) = crate::nodes::node_of(&user) {
            if req.node_name != node {
                return Err(status_of(&ApiError::Forbidden(format!(
                    "node \"{node}\" may only stream its own assignments, not node \"{}\"'s",
                    req.node_name
                ))));
            }
        }
        stream::node_assignments(&self.api, req, self.stop.clone())
            .await
            .map(tonic::Response::new)
    }

    async fn report_pod_status(
        &self,
        request: tonic::Request<PodStatusReport>,
    ) -> Result<tonic::Response<Object>, tonic::Status> {
        let user = auth::user_of(request.extensions());
        let req = request.into_inner();
        let status: Value =
            serde_json::from_slice(&req.status).map_err(|e| bad_request(format!("status is not valid JSON: {e}")))?;
        if !status.is_object() {
            return Err(bad_request("status must be a JSON object"));
        }
        let mut metadata = json!({"name": req.name, "namespace": req.namespace});
        if !req.resource_version.is_empty() {
            metadata["resourceVersion"] = json!(req.resource_version);
        }
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "status": status});
        let r = ResourceRef {
            group: String::new(),
            version: "v1".into(),
            resource: "pods".into(),
            namespace: req.namespace.clone(),
        };
        let (_, path) = rest_path(Some(&r), &req.namespace, Some(&req.name), Some("status"), true)?;
        let body = Bytes::from(pod.to_string());
        self.object(&user, Self::rest_for(&r, Method::PUT, path, HashMap::new(), body))
            .await
    }

    type ProxyConfigStream = stream::Stream<capstan_proto::mesh::ProxyUpdate>;

    async fn proxy_config(
        &self,
        request: tonic::Request<ProxyConfigRequest>,
    ) -> Result<tonic::Response<Self::ProxyConfigStream>, tonic::Status> {
        let user = auth::user_of(request.extensions());
        let req = request.into_inner();
        tracing::debug!(node = %req.node_name, "proxy configuration stream");
        for resource in ["services", "endpoints"] {
            self.authorize_stream(&user, &core_v1(resource), "").await?;
        }
        let hub = self.proxy_hub().clone();
        proxy::stream(&hub, self.stop.clone()).await.map(tonic::Response::new)
    }
}

fn core_v1(resource: &str) -> ResourceRef {
    ResourceRef {
        group: String::new(),
        version: "v1".into(),
        resource: resource.into(),
        namespace: String::new(),
    }
}

/// The state of [`serve_layer`]: the mesh's routes, and the server's authentication.
#[derive(Clone)]
pub struct MeshLayer {
    pub routes: tonic::service::Routes,
    /// Its authentication (`config.auth`) and the caches a token's check reads.
    pub api: Arc<Api>,
}

/// The gRPC routes of the mesh service over `api`; its streams end once `stop` turns
/// true (or its sender goes away).
pub fn routes(api: Arc<Api>, stop: watch::Receiver<bool>) -> tonic::service::Routes {
    let server = MeshServer::new(MeshService::new(api, stop))
        .max_decoding_message_size(REQUEST_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(RESPONSE_BYTES_MAX);
    tonic::service::Routes::new(server).prepare()
}

/// Middleware in front of the REST router: gRPC requests (content type
/// `application/grpc`, `application/grpc+proto`, ...) go to the mesh service, every
/// other request on to REST untouched.
pub async fn serve_layer(State(layer): State<MeshLayer>, mut req: Request, next: Next) -> Response {
    let is_grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if !is_grpc {
        return next.run(req).await;
    }
    // Who calls, as the REST filter finds it (client certificate or token); each call is
    // then authorized as the REST request it stands for.
    if let Some(auth) = &layer.api.config.auth {
        match auth::authenticate(&layer.api, auth, req.headers(), req.extensions()).await {
            auth::Credentials::User(user) => {
                req.extensions_mut().insert(user);
            }
            auth::Credentials::None | auth::Credentials::Invalid | auth::Credentials::ServiceAccount(_) => {
                return tonic::Status::unauthenticated("Unauthorized").into_http();
            }
        }
    }
    let mut grpc = layer.routes;
    // The routes are an axum router, always ready; poll anyway, as the contract asks.
    if let Err(never) = std::future::poll_fn(|cx| Service::<Request>::poll_ready(&mut grpc, cx)).await {
        match never {}
    }
    match grpc.call(req).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_grpc_codes_and_travel_whole() {
        let conflict = ApiError::Conflict {
            what: GroupResource::new("", "configmaps"),
            name: "c".into(),
            reason: "the object has been modified".into(),
        };
        let s = status_of(&conflict);
        assert_eq!(s.code(), Code::Aborted);
        let k = kube_status(&s).expect("the Status travels in the metadata");
        assert_eq!(
            (k["reason"].as_str(), k["code"].as_u64()),
            (Some("Conflict"), Some(409))
        );
        assert_eq!(s.message(), conflict.to_string());
        assert_eq!(status_of(&ApiError::Expired("old".into())).code(), Code::OutOfRange);
        assert_eq!(
            status_of(&ApiError::AlreadyExists {
                what: GroupResource::new("", "pods"),
                name: "p".into()
            })
            .code(),
            Code::AlreadyExists
        );
        assert_eq!(
            grpc_code("Whatever", StatusCode::UNPROCESSABLE_ENTITY),
            Code::InvalidArgument
        );
        // Not a Status at all: still a status, with the body as its message.
        let s = status_from_rest(StatusCode::BAD_GATEWAY, b"upstream gone");
        assert_eq!((s.code(), s.message()), (Code::Internal, "upstream gone"));
    }

    #[test]
    fn huge_statuses_lose_their_details_not_their_reason() {
        let causes = (0..2000)
            .map(|i| crate::error::Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("cause number {i}"),
                field: format!("spec.items[{i}]"),
            })
            .collect();
        let e = ApiError::Invalid {
            kind: "ConfigMap".into(),
            group: String::new(),
            name: "c".into(),
            message: "ConfigMap \"c\" is invalid".into(),
            causes,
        };
        let s = status_of(&e);
        assert_eq!(s.code(), Code::InvalidArgument);
        let k = kube_status(&s).expect("a Status");
        assert_eq!(k["reason"], "Invalid");
        assert!(k.get("details").is_none());
    }

    #[test]
    fn paths_are_built_from_single_segments() {
        let pods = ResourceRef {
            group: String::new(),
            version: "v1".into(),
            resource: "pods".into(),
            namespace: "ns".into(),
        };
        let (rt, p) = rest_path(Some(&pods), "ns", Some("p1"), Some("status"), true).expect("pod status");
        assert_eq!((rt.plural, p.as_str()), ("pods", "namespaces/ns/pods/p1/status"));
        let (_, p) = rest_path(Some(&pods), "", None, None, false).expect("all pods");
        assert_eq!(p, "pods");
        // A name with a '/' would name a subresource or another object.
        let e = rest_path(Some(&pods), "ns", Some("p1/status"), None, true).expect_err("slash");
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = rest_path(Some(&pods), "", Some("p1"), None, true).expect_err("no namespace");
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = rest_path(Some(&pods), "ns", Some(""), None, true).expect_err("no name");
        assert_eq!(e.code(), Code::InvalidArgument);
        let widgets = ResourceRef {
            resource: "widgets".into(),
            ..pods.clone()
        };
        let e = rest_path(Some(&widgets), "ns", None, None, false).expect_err("unknown");
        assert_eq!(e.code(), Code::NotFound);
        let nodes = ResourceRef {
            resource: "nodes".into(),
            namespace: String::new(),
            ..pods
        };
        let (_, p) = rest_path(Some(&nodes), "", Some("n1"), None, true).expect("a node");
        assert_eq!(p, "nodes/n1");
        let e = rest_path(Some(&nodes), "ns", Some("n1"), None, true).expect_err("namespaced node");
        assert_eq!(e.code(), Code::InvalidArgument);
    }
}
