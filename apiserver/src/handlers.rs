//! The verbs: get, list, create, update, patch, delete, deletecollection, and the
//! subresources (status, scale, binding, eviction, log, a namespace's finalize). Watch is
//! in [`crate::watch`].
//!
//! Deletion follows upstream's registry: finalizers keep an object (with
//! `deletionTimestamp`) until they are removed, and a delete's propagation policy adds the
//! garbage collector's (`orphan`, `foregroundDeletion`); a namespace is only marked
//! Terminating, emptied by the namespace controller and removed when its `kubernetes`
//! finalizer goes through `finalize`; nothing new may be created in it meanwhile (the
//! NamespaceLifecycle admission's 403).
//!
//! Every write is optimistic: read the object with its `mod_revision`, compute the new
//! one, and write it in a transaction that holds only if the `mod_revision` is still the
//! same. A client that named a resourceVersion gets `409 Conflict` when it is stale;
//! otherwise (a patch, an unconditional update) the server reads again and retries, as
//! upstream's GuaranteedUpdate does.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::cache::Caches;
use crate::error::{ApiError, Cause, Result};
use crate::http::{content_type, format, json_response, parse_target, Format, Params, Target};
use crate::object::{self, from_kv, meta_mut, meta_str, normalize, set_resource_version, to_stored};
use crate::rbac::UserInfo;
use crate::resources::{ResourceType, Sub};
use crate::selector::{FieldSelector, LabelSelector};
use crate::storage::{prefix_end, Kv, Storage};
use crate::table::{self, IncludeObject};
use crate::validation;
use crate::{alloc, patch, serviceaccount, watch};

/// Attempts of a read-modify-write before giving up with a conflict.
const UPDATE_ATTEMPTS_MAX: usize = 16;

/// Settings of the API server.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub services: alloc::ServiceRanges,
    /// Recent events each resource type's watch cache keeps for watches that resume.
    pub watch_window_events: usize,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: std::time::Duration,
    /// Authentication and authorization of REST requests; None: every request is served.
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// Bounds on the listener's connections.
    pub connections: crate::listen::Limits,
    /// Requests in flight and queued per client; None: no bound.
    pub flow: Option<crate::flow::Limits>,
    /// How log requests reach the node agents: over TLS with this client certificate
    /// (upstream's `--kubelet-client-certificate`), else plain HTTP.
    pub kubelet_client: Option<Arc<crate::tls::KubeletClientTls>>,
    /// More metrics served on `/metrics` after the API server's own: those of the rest
    /// of this process (the embedded store member, controllers, scheduler, agent).
    pub process_metrics: Option<Arc<prometheus_client::registry::Registry>>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            services: alloc::ServiceRanges::default(),
            watch_window_events: crate::cache::WINDOW_EVENTS_DEFAULT,
            bookmark_interval: crate::watch::BOOKMARK_INTERVAL_DEFAULT,
            auth: None,
            connections: crate::listen::Limits::default(),
            flow: Some(crate::flow::Limits::default()),
            kubelet_client: None,
            process_metrics: None,
        }
    }
}

/// The API: its storage, watch caches and settings, shared by every request.
pub struct Api {
    pub storage: Storage,
    pub config: ApiConfig,
    pub caches: Caches,
}

impl Api {
    /// Must run inside a tokio runtime: starts the watch caches.
    pub fn new(storage: Storage, config: ApiConfig) -> Arc<Api> {
        let caches = Caches::start(&storage, config.watch_window_events.max(1));
        Arc::new(Api {
            storage,
            config,
            caches,
        })
    }
}

/// Serves one request under `/api/v1/` (group "") or `/apis/<group>/<version>/`.
#[allow(clippy::too_many_arguments)]
pub async fn handle(
    api: Arc<Api>,
    user: &UserInfo,
    method: Method,
    group: &str,
    version: &str,
    rest: &str,
    params: Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match dispatch(api, user, method, group, version, rest, params, headers, body).await {
        Ok(r) => r,
        Err(e) => {
            if e.code().is_server_error() {
                tracing::warn!(error = %e, "request failed");
            }
            axum::response::IntoResponse::into_response(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    api: Arc<Api>,
    user: &UserInfo,
    method: Method,
    group: &str,
    version: &str,
    rest: &str,
    params: Params,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let t = parse_target(group, version, rest)?;
    let fmt = format(&headers);
    // kubectl 1.32 and later send the objects of `kubectl create <kind>` as protobuf.
    let body = if matches!(method, Method::POST | Method::PUT) && content_type(&headers) == PROTOBUF {
        let obj = crate::protobuf::decode(&body).map_err(|e| ApiError::BadRequest(e.message))?;
        Bytes::from(serde_json::to_vec(&obj).map_err(|e| ApiError::Internal(format!("encoding: {e}")))?)
    } else {
        if matches!(method, Method::POST | Method::PUT) {
            check_json_body(&headers)?;
        }
        body
    };
    let name = t.name.clone();
    match (method, name.as_deref(), t.sub) {
        (Method::GET, None, None) if t.watch_path || params.flag("watch") => watch::serve(api, t, params, fmt).await,
        (Method::GET, None, None) => list(&api, &t, &params, fmt).await,
        (Method::GET, Some(n), None | Some(Sub::Status)) => get(&api, &t, n, &params, fmt).await,
        (Method::GET, Some(n), Some(Sub::Scale)) => {
            let (kv, _) = current(&api.storage, &t, n, true).await?;
            Ok(json_response(StatusCode::OK, &scale_of(&from_kv(&kv)?)))
        }
        (Method::GET, Some(n), Some(Sub::Log)) => logs(&api, &t, n, &params).await,
        (Method::POST, None, None) => create(&api, user, &t, &params, &body, fmt).await,
        (Method::POST, Some(n), Some(Sub::Binding)) => bind(&api, &t, n, &body).await,
        (Method::POST, Some(n), Some(Sub::Eviction)) => {
            delete(&api, &t, n, &params, &Bytes::new()).await?;
            Ok(success(StatusCode::CREATED))
        }
        (Method::PUT, Some(n), Some(Sub::Finalize)) => finalize_namespace(&api, &t, n, &params, &body).await,
        (Method::PUT, Some(n), sub @ (None | Some(Sub::Status) | Some(Sub::Scale))) => {
            update(&api, &t, n, sub, &params, &body, fmt).await
        }
        (Method::PATCH, Some(n), sub @ (None | Some(Sub::Status) | Some(Sub::Scale))) => {
            patch_object(&api, &t, n, sub, &params, &headers, &body, fmt).await
        }
        (Method::DELETE, Some(n), None) => {
            let obj = delete(&api, &t, n, &params, &body).await?;
            // As upstream: the object while its deletion is pending, and for the types
            // whose clients expect it back (pods, services, namespaces); else a Status.
            let pending = meta_str(&obj, "deletionTimestamp").is_some();
            if pending || matches!(t.rt.kind, "Pod" | "Service" | "Namespace") {
                Ok(json_response(StatusCode::OK, &obj))
            } else {
                let mut details = json!({"name": n, "kind": t.rt.plural,
                    "uid": meta_str(&obj, "uid").unwrap_or("")});
                if !t.rt.group.is_empty() {
                    details["group"] = json!(t.rt.group);
                }
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": details}),
                ))
            }
        }
        (Method::DELETE, None, None) => delete_collection(&api, &t, &params, &body).await,
        (m, _, _) => Err(ApiError::MethodNotAllowed(format!(
            "the server does not allow this method on the requested resource ({m} {})",
            t.rt.plural
        ))),
    }
}

fn success(code: StatusCode) -> Response {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code.as_u16()}),
    )
}

fn not_found(rt: &ResourceType, name: &str) -> ApiError {
    ApiError::NotFound {
        what: rt.group_resource(),
        name: name.to_string(),
    }
}

fn conflict(rt: &ResourceType, name: &str) -> ApiError {
    ApiError::Conflict {
        what: rt.group_resource(),
        name: name.to_string(),
        reason: "the object has been modified; please apply your changes to the latest version and try again".into(),
    }
}

fn key(t: &Target, name: &str) -> String {
    t.rt.key(t.namespace.as_deref(), name)
}

/// The stored object named by `t` and `name`, or NotFound.
async fn current(storage: &Storage, t: &Target, name: &str, consistent: bool) -> Result<(Kv, i64)> {
    match storage.get(&key(t, name), consistent).await? {
        (Some(kv), rev) => Ok((kv, rev)),
        (None, _) => Err(not_found(t.rt, name)),
    }
}

/// The object a write starts from, and its revision.
struct Current {
    obj: Value,
    rev: i64,
}

/// Reads the object a write starts from: from the watch cache when `cached` (a first
/// attempt: no store round trip, and a stale copy only makes the write's revision
/// compare fail and the next attempt read the store), else from the store.
async fn read_for_write(api: &Api, t: &Target, name: &str, cached: bool) -> Result<Current> {
    if cached {
        if let Some(obj) = api.caches.get(t.rt).get(key(t, name).as_bytes()) {
            if let Some(rev) = meta_str(&obj, "resourceVersion").and_then(|r| r.parse::<i64>().ok()) {
                return Ok(Current {
                    obj: (*obj).clone(),
                    rev,
                });
            }
        }
    }
    let (kv, _) = current(&api.storage, t, name, true).await?;
    Ok(Current {
        obj: from_kv(&kv)?,
        rev: kv.mod_revision,
    })
}

fn include_object(params: &Params) -> IncludeObject {
    match params.get("includeObject") {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    }
}

/// One object as the client asked for it (itself, or a one-row Table).
fn object_response(code: StatusCode, rt: &ResourceType, obj: Value, params: &Params, fmt: Format) -> Response {
    match fmt {
        Format::Json => json_response(code, &obj),
        Format::Table => {
            let rv = meta_str(&obj, "resourceVersion").unwrap_or("").to_string();
            let t = table::table(
                rt.plural,
                &[obj],
                object::now_unix_s(),
                &rv,
                None,
                include_object(params),
                true,
            );
            json_response(code, &t)
        }
    }
}

async fn get(api: &Api, t: &Target, name: &str, params: &Params, fmt: Format) -> Result<Response> {
    // resourceVersion "0" (or any): whatever this replica has; unset: the newest.
    let consistent = params.get("resourceVersion").is_none();
    let (kv, _) = current(&api.storage, t, name, consistent).await?;
    Ok(object_response(StatusCode::OK, t.rt, from_kv(&kv)?, params, fmt))
}

/// Label and field selectors of a list or watch.
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn parse(rt: &ResourceType, params: &Params) -> Result<Selectors> {
        let labels = LabelSelector::parse(params.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::BadRequest(e.message))?;
        let fields = FieldSelector::parse(rt.plural, params.get("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::BadRequest(e.message))?;
        Ok(Selectors { labels, fields })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches(obj)
    }
}

/// The key range of a collection: one namespace or all.
pub fn collection_range(t: &Target) -> (Vec<u8>, Vec<u8>) {
    let prefix = match &t.namespace {
        Some(ns) if t.rt.namespaced => t.rt.namespace_prefix(ns),
        _ => t.rt.prefix(),
    };
    let end = prefix_end(prefix.as_bytes());
    (prefix.into_bytes(), end)
}

fn list_kind(rt: &ResourceType) -> String {
    format!("{}List", rt.kind)
}

/// The revision (0: newest) and consistency a list reads at, from resourceVersion and
/// resourceVersionMatch.
fn list_revision(params: &Params) -> Result<(i64, bool)> {
    match (params.get("resourceVersion"), params.get("resourceVersionMatch")) {
        (None, None) => Ok((0, true)),
        (None, Some(_)) => Err(ApiError::BadRequest(
            "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
        )),
        (Some("0"), Some("Exact")) => Err(ApiError::BadRequest(
            "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"".into(),
        )),
        (Some("0"), _) => Ok((0, false)),
        (Some(rv), Some("Exact")) => Ok((object::parse_rv(rv)?, false)),
        (Some(rv), None | Some("NotOlderThan")) => {
            object::parse_rv(rv)?;
            Ok((0, true))
        }
        (Some(_), Some(m)) => Err(ApiError::BadRequest(format!(
            "resourceVersionMatch: Unsupported value: \"{m}\": supported values: \"Exact\", \"NotOlderThan\""
        ))),
    }
}

const CONTINUE_TOO_OLD: &str = "The provided continue parameter is too old to display a consistent list result. \
You can start a new list without the continue parameter, or use the continue token in this response to retrieve \
the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that \
were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

fn encode_continue(rev: i64, next_key: &[u8], start: &[u8]) -> String {
    use base64::Engine;
    let rel = String::from_utf8_lossy(next_key.strip_prefix(start).unwrap_or(next_key)).into_owned();
    let tok = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": rel});
    base64::engine::general_purpose::URL_SAFE.encode(tok.to_string())
}

fn decode_continue(token: &str, start: &[u8]) -> Result<(i64, Vec<u8>)> {
    use base64::Engine;
    let bad = || ApiError::BadRequest("continue key is not valid: incorrect encoded start resourceVersion".into());
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v["rv"].as_i64().filter(|r| *r > 0).ok_or_else(bad)?;
    let rel = v["start"].as_str().ok_or_else(bad)?;
    if rel.contains("..") {
        return Err(bad());
    }
    let mut key = start.to_vec();
    key.extend_from_slice(rel.as_bytes());
    Ok((rev, key))
}

/// Objects of a collection matching the selectors: one page of up to `limit` (0: all)
/// from `from`, read at `rev` (0: newest). Returns the items, the revision read at and
/// the key to continue from.
#[allow(clippy::too_many_arguments)]
pub async fn read_collection(
    storage: &Storage,
    start: &[u8],
    end: &[u8],
    mut from: Vec<u8>,
    limit: usize,
    rev: i64,
    consistent: bool,
    sel: &Selectors,
) -> Result<(Vec<Value>, i64, Option<Vec<u8>>)> {
    let _ = start;
    let mut items = Vec::new();
    let mut read_rev = rev;
    let mut consistent = consistent;
    // Batches from the store; with selectors a page may need several.
    let batch = if limit == 0 { 0 } else { limit.max(64) } as i64;
    loop {
        let page = storage.list(&from, end, batch, read_rev, consistent).await?;
        // Every later batch reads at the first one's revision: one consistent list.
        read_rev = page.revision;
        consistent = false;
        let n = page.kvs.len();
        for (i, kv) in page.kvs.iter().enumerate() {
            let obj = from_kv(kv)?;
            if sel.matches(&obj) {
                items.push(obj);
            }
            if limit > 0 && items.len() == limit && (i + 1 < n || page.more) {
                let mut next = kv.key.to_vec();
                next.push(0);
                return Ok((items, read_rev, Some(next)));
            }
        }
        if !page.more || n == 0 {
            return Ok((items, read_rev, None));
        }
        let mut next = page.kvs[n - 1].key.to_vec();
        next.push(0);
        from = next;
    }
}

/// A list the watch cache can answer: no paging through the store (no `continue`, and
/// no `limit` unless resourceVersion is "0", where upstream ignores it too), and no
/// exact resourceVersion.
fn from_cache(params: &Params, limit: usize) -> bool {
    params.get("continue").is_none()
        && params.get("resourceVersionMatch") != Some("Exact")
        && (limit == 0 || params.get("resourceVersion") == Some("0"))
}

async fn list(api: &Api, t: &Target, params: &Params, fmt: Format) -> Result<Response> {
    let sel = Selectors::parse(t.rt, params)?;
    let (start, end) = collection_range(t);
    let limit = params.int("limit")?.unwrap_or(0).max(0) as usize;
    if from_cache(params, limit) {
        let cache = api.caches.get(t.rt);
        let min_rev = match params.get("resourceVersion") {
            None => {
                cache.wait_fresh(&api.storage).await?;
                0
            }
            Some("0") => 0,
            Some(rv) => object::parse_rv(rv)?,
        };
        let (objs, rev) = cache.list(&start, min_rev).await?;
        let items: Vec<Value> = objs
            .into_iter()
            .filter(|o| sel.matches(o))
            .map(|o| (*o).clone())
            .collect();
        return Ok(list_response(t, params, fmt, items, rev, None));
    }
    let (from, rev, consistent, continuing) = match params.get("continue") {
        Some(tok) => {
            let (rev, from) = decode_continue(tok, &start)?;
            (from, rev, false, true)
        }
        None => {
            let (rev, consistent) = list_revision(params)?;
            (start.clone(), rev, consistent, false)
        }
    };
    let (items, rev, next) = match read_collection(&api.storage, &start, &end, from, limit, rev, consistent, &sel).await
    {
        Err(ApiError::Expired(_)) if continuing => return Err(ApiError::Expired(CONTINUE_TOO_OLD.into())),
        other => other?,
    };
    let token = next.map(|k| encode_continue(rev, &k, &start));
    Ok(list_response(t, params, fmt, items, rev, token))
}

fn list_response(
    t: &Target,
    params: &Params,
    fmt: Format,
    items: Vec<Value>,
    rev: i64,
    token: Option<String>,
) -> Response {
    let rv = rev.to_string();
    let v = match fmt {
        Format::Json => {
            let mut md = json!({"resourceVersion": rv});
            if let Some(tok) = &token {
                md["continue"] = json!(tok);
            }
            json!({"kind": list_kind(t.rt), "apiVersion": t.rt.api_version(), "metadata": md, "items": items})
        }
        Format::Table => table::table(
            t.rt.plural,
            &items,
            object::now_unix_s(),
            &rv,
            token.as_deref(),
            include_object(params),
            true,
        ),
    };
    json_response(StatusCode::OK, &v)
}

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// Refuses a body that is neither JSON nor (decoded before this) protobuf with 415.
fn check_json_body(headers: &HeaderMap) -> Result<()> {
    match content_type(headers) {
        "" | "application/json" | "application/yaml" => Ok(()),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, \
application/yaml, application/vnd.kubernetes.protobuf (got {other:?})"
        ))),
    }
}

/// A create or update body as the JSON object it must be.
pub fn parse_body(body: &Bytes) -> Result<Value> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("couldn't get version/kind; json parse error: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::BadRequest("the request body must be a JSON object".into()));
    }
    Ok(v)
}

/// Checks and fills `apiVersion` and `kind` of a body for `rt`.
pub fn check_type(rt: &ResourceType, obj: &mut Value) -> Result<()> {
    let want = rt.api_version();
    if let Some(v) = obj.get("apiVersion").and_then(Value::as_str) {
        if v != want {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({v}) does not match the expected API version ({want})"
            )));
        }
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str) {
        if k != rt.kind {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
    }
    obj["apiVersion"] = json!(want);
    obj["kind"] = json!(rt.kind);
    Ok(())
}

fn invalid(rt: &ResourceType, name: &str, errs: &[validation::FieldError]) -> ApiError {
    ApiError::Invalid {
        kind: rt.kind.to_string(),
        group: rt.group.to_string(),
        name: name.to_string(),
        message: validation::invalid_message(rt.kind, rt.group, name, errs),
        causes: errs
            .iter()
            .map(|e| Cause {
                reason: e.reason.to_string(),
                message: e.message.clone(),
                field: e.field.clone(),
            })
            .collect(),
    }
}

fn has_generation(rt: &ResourceType) -> bool {
    matches!(rt.kind, "Deployment" | "ReplicaSet")
}

/// The QoS class of a pod from its containers' resources.
fn qos_class(pod: &Value) -> &'static str {
    let containers = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = c["resources"]["requests"].as_object();
        let lim = c["resources"]["limits"].as_object();
        if req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let l = lim.and_then(|l| l.get(res));
            let r = req.and_then(|r| r.get(res)).or(l);
            if l.is_none() || r != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Refuses new objects in a namespace that does not exist (404, `namespaces "x" not
/// found`) or is being deleted (upstream's NamespaceLifecycle admission). The latter is a
/// 403 answered here as a response, since [`ApiError::Forbidden`] carries no details:
/// `<resource> "<name>" is forbidden: unable to create new content in namespace <ns>
/// because it is being terminated`, with the `NamespaceTerminating` cause.
async fn check_namespace(api: &Api, rt: &ResourceType, ns: &str, name: &str) -> Result<Option<Response>> {
    let nsrt = ResourceType::by_kind("Namespace").expect("namespaces are served");
    let key = nsrt.key(None, ns);
    // The watch cache knows the namespaces; the store is asked only when it does not
    // have this one (it may not have caught up with a namespace created just now).
    let obj = match api.caches.get(nsrt).get(key.as_bytes()) {
        Some(obj) => (*obj).clone(),
        None => match api.storage.get(&key, true).await? {
            (None, _) => return Err(not_found(nsrt, ns)),
            (Some(kv), _) => from_kv(&kv)?,
        },
    };
    let terminating = obj["status"]["phase"] == "Terminating" || meta_str(&obj, "deletionTimestamp").is_some();
    if !terminating {
        return Ok(None);
    }
    let reason = format!("unable to create new content in namespace {ns} because it is being terminated");
    let message = forbidden_text(rt, name, &reason);
    let mut details = json!({"kind": rt.plural, "causes": [{"reason": "NamespaceTerminating",
        "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]});
    if !name.is_empty() {
        details["name"] = json!(name);
    }
    if !rt.group.is_empty() {
        details["group"] = json!(rt.group);
    }
    Ok(Some(json_response(
        StatusCode::FORBIDDEN,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": "Forbidden", "details": details, "code": 403}),
    )))
}

/// The admission of a new object that needs more than its body: node restriction of the
/// names a node agent creates ([`crate::nodes::restrict_create`]), and the ServiceAccount
/// admission of pods ([`serviceaccount::admit_pod`]) on a server that issues tokens (a
/// server that authenticates no one mounts no tokens: a pod could not use one).
async fn admit_create(api: &Api, user: &UserInfo, rt: &ResourceType, ns: Option<&str>, obj: &mut Value) -> Result<()> {
    if let Some(node) = crate::nodes::node_of(user) {
        crate::nodes::restrict_create(node, rt.group, rt.plural, ns.unwrap_or_default(), object::name(obj))
            .map_err(|why| ApiError::Forbidden(forbidden_text(rt, object::name(obj), &why)))?;
    }
    let issues_tokens = api
        .config
        .auth
        .as_deref()
        .is_some_and(|a| a.service_account_key().is_some());
    if rt.kind != "Pod" || !issues_tokens {
        return Ok(());
    }
    let ns = ns.unwrap_or_default();
    let account_name = obj["spec"]["serviceAccountName"]
        .as_str()
        .or(obj["spec"]["serviceAccount"].as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
        .to_owned();
    let account = service_account(api, ns, &account_name).await?.ok_or_else(|| {
        ApiError::Forbidden(forbidden_text(
            rt,
            object::name(obj),
            &format!(
                "error looking up service account {ns}/{account_name}: serviceaccount \"{account_name}\" not found"
            ),
        ))
    })?;
    serviceaccount::admit_pod(obj, Some(&account), &serviceaccount::volume_suffix());
    Ok(())
}

/// Upstream's admission refusal (`NewForbidden`): `<resource> "<name>" is forbidden:
/// <why>`, the name only when there is one (not for generateName).
fn forbidden_text(rt: &ResourceType, name: &str, why: &str) -> String {
    let what = rt.group_resource();
    if name.is_empty() {
        format!("{what} is forbidden: {why}")
    } else {
        format!("{what} \"{name}\" is forbidden: {why}")
    }
}

/// The ServiceAccount `name` in `ns`, as upstream's admission finds it: the watch cache,
/// else the store; `default` is asked for up to [`DEFAULT_ACCOUNT_ATTEMPTS`] times, a
/// little apart, since the ServiceAccount controller makes it just after its namespace.
async fn service_account(api: &Api, ns: &str, name: &str) -> Result<Option<Value>> {
    let rt = ResourceType::find("", "v1", "serviceaccounts").expect("invariant: serviceaccounts are served");
    let key = rt.key(Some(ns), name);
    if let Some(obj) = api.caches.get(rt).get(key.as_bytes()) {
        return Ok(Some((*obj).clone()));
    }
    let attempts = if name == "default" { DEFAULT_ACCOUNT_ATTEMPTS } else { 1 };
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(DEFAULT_ACCOUNT_RETRY).await;
        }
        if let (Some(kv), _) = api.storage.get(&key, true).await? {
            return Ok(Some(from_kv(&kv)?));
        }
    }
    Ok(None)
}

/// Upstream's retries for the `default` ServiceAccount: 10, 100 to 200 ms apart.
const DEFAULT_ACCOUNT_ATTEMPTS: usize = 10;
const DEFAULT_ACCOUNT_RETRY: Duration = Duration::from_millis(150);

/// A create body made into the object to store, up to the namespace check and the
/// write: type, namespace (the request's, `namespace`), server-set metadata (`uid` and
/// `now` given: the fuzz targets fix them), normalization, defaulting and the initial
/// status. Pure.
pub fn prepare_create(rt: &ResourceType, namespace: Option<&str>, body: &Bytes, uid: &str, now: &str) -> Result<Value> {
    let mut obj = parse_body(body)?;
    check_type(rt, &mut obj)?;
    {
        let m = meta_mut(&mut obj);
        if rt.namespaced {
            let Some(ns) = namespace else {
                return Err(ApiError::MethodNotAllowed(format!(
                    "{} must be created in a namespace",
                    rt.plural
                )));
            };
            match m.get("namespace").and_then(Value::as_str) {
                Some(given) if !given.is_empty() && given != ns => {
                    return Err(ApiError::BadRequest(
                        "the namespace of the provided object does not match the namespace sent on the request".into(),
                    ))
                }
                _ => {
                    m.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            m.remove("namespace");
        }
        for f in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            m.remove(f);
        }
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(now));
        if has_generation(rt) {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
    }
    match rt.kind {
        "Deployment" | "ReplicaSet" => obj["status"] = json!({}),
        "Service" => obj["status"] = json!({"loadBalancer": {}}),
        _ => {}
    }
    let mut obj = normalize(rt, obj)?;
    validation::default_object(rt.kind, &mut obj);
    if rt.kind == "Pod" {
        let qos = qos_class(&obj);
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }
    Ok(obj)
}

async fn create(
    api: &Api,
    user: &UserInfo,
    t: &Target,
    params: &Params,
    body: &Bytes,
    fmt: Format,
) -> Result<Response> {
    let rt = t.rt;
    let mut obj = prepare_create(rt, t.namespace.as_deref(), body, &object::new_uid(), &object::now())?;
    if let Some(ns) = t.namespace.as_deref() {
        if rt.namespaced {
            if let Some(refused) = check_namespace(api, rt, ns, object::name(&obj)).await? {
                return Ok(refused);
            }
        }
    }
    admit_create(api, user, rt, t.namespace.as_deref(), &mut obj).await?;
    let generate = meta_str(&obj, "generateName").map(str::to_string);
    let given_name = object::name(&obj).to_string();
    for _ in 0..UPDATE_ATTEMPTS_MAX {
        let mut obj = obj.clone();
        if given_name.is_empty() {
            if let Some(base) = &generate {
                meta_mut(&mut obj).insert("name".into(), json!(object::generate_name(base)));
            }
        }
        let name = object::name(&obj).to_string();
        let errs = validation::validate_create(rt.kind, &obj);
        if !errs.is_empty() {
            return Err(invalid(rt, &name, &errs));
        }
        let also = if rt.kind == "Service" {
            alloc::allocate(&api.storage, &api.config.services, &mut obj).await?
        } else {
            Vec::new()
        };
        let k = key(t, &name);
        if params.dry_run() {
            return Ok(object_response(StatusCode::CREATED, rt, obj, params, fmt));
        }
        match api.storage.create(&k, to_stored(&obj)?, &also).await? {
            Ok(rev) => {
                set_resource_version(&mut obj, rev);
                return Ok(object_response(StatusCode::CREATED, rt, obj, params, fmt));
            }
            // A generated name taken: try another.
            Err(existing) if existing == k && given_name.is_empty() && generate.is_some() => continue,
            Err(existing) if existing == k => {
                return Err(ApiError::AlreadyExists {
                    what: rt.group_resource(),
                    name,
                })
            }
            // An allocation raced with another create: allocate again.
            Err(_) => continue,
        }
    }
    Err(ApiError::Timeout(format!(
        "could not create {} after {UPDATE_ATTEMPTS_MAX} attempts; try again",
        rt.plural
    )))
}

/// The `autoscaling/v1 Scale` of a deployment or replicaset.
pub fn scale_of(obj: &Value) -> Value {
    let m = object::meta(obj).cloned().unwrap_or_default();
    let selector = LabelSelector::from_json(&obj["spec"]["selector"])
        .map(|s| s.to_string())
        .unwrap_or_default();
    let mut md = json!({});
    for f in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
        if let Some(v) = m.get(f) {
            md[f] = v.clone();
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": md,
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// Merges what a client sent for `sub` into the stored object: the main resource keeps
/// its status, the status subresource changes only the status, scale only the replicas.
pub fn merge_for(rt: &ResourceType, sub: Option<Sub>, old: &Value, sent: Value) -> Value {
    match sub {
        None => {
            let mut new = sent;
            if rt.has(Sub::Status) {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            new
        }
        Some(Sub::Status) => {
            let mut new = old.clone();
            match sent.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            // Labels and annotations may change with status too.
            for f in ["labels", "annotations"] {
                if let Some(v) = object::meta(&sent).and_then(|m| m.get(f)) {
                    meta_mut(&mut new).insert(f.into(), v.clone());
                }
            }
            new
        }
        Some(_) => {
            let mut new = old.clone();
            new["spec"]["replicas"] = sent["spec"]["replicas"].clone();
            new
        }
    }
}

/// The resourceVersion a client sent as a precondition, if any.
pub fn client_rv(sent: &Value) -> Result<Option<i64>> {
    match meta_str(sent, "resourceVersion") {
        None | Some("") => Ok(None),
        Some(rv) => object::parse_rv(rv).map(Some),
    }
}

/// An update's body made into the object to store, against the stored `old`: type, the
/// URL's name and `namespace`, the metadata the server keeps, generation, normalization,
/// defaulting and validation. Pure (the fuzz targets drive it).
pub fn prepare_replacement(
    rt: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    old: &Value,
    mut new: Value,
) -> Result<Value> {
    check_type(rt, &mut new)?;
    let sent_name = object::name(&new).to_string();
    if !sent_name.is_empty() && sent_name != name {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({sent_name}) does not match the name on the URL ({name})"
        )));
    }
    {
        let om = object::meta(old).cloned().unwrap_or_default();
        let m = meta_mut(&mut new);
        m.insert("name".into(), json!(name));
        if let Some(ns) = namespace {
            m.insert("namespace".into(), json!(ns));
        }
        // The stored resourceVersion until defaulting is done: it tells create-only
        // defaults (a pod's phase, a namespace's finalizer) that this is an update.
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ] {
            match om.get(f) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
    }
    if has_generation(rt) && new.get("spec") != old.get("spec") {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        meta_mut(&mut new).insert("generation".into(), json!(g));
    }
    let mut new = normalize(rt, new)?;
    validation::default_object(rt.kind, &mut new);
    // Carries over what an update may omit (a Service's allocated IPs and node ports).
    validation::prepare_update(rt.kind, old, &mut new);
    meta_mut(&mut new).remove("resourceVersion");
    let errs = validation::validate_update(rt.kind, old, &new);
    if !errs.is_empty() {
        return Err(invalid(rt, name, &errs));
    }
    Ok(new)
}

/// Writes `new` over the stored `old_kv` (already merged per subresource). `Ok(None)`:
/// the object changed underneath and the caller should read it again.
async fn commit_update(
    api: &Api,
    t: &Target,
    name: &str,
    cur: &Current,
    new: Value,
    precondition: Option<i64>,
) -> Result<Option<Value>> {
    let rt = t.rt;
    if let Some(rv) = precondition {
        if rv != cur.rev {
            return Err(conflict(rt, name));
        }
    }
    let old = cur.obj.clone();
    let mut new = prepare_replacement(rt, t.namespace.as_deref(), name, &old, new)?;
    let k = key(t, name);
    // Nothing changed: no write, the same resourceVersion (as upstream).
    let mut old_cmp = old.clone();
    meta_mut(&mut old_cmp).remove("resourceVersion");
    if old_cmp == new {
        return Ok(Some(old));
    }
    // The last finalizer of an object being deleted is gone: it is deleted now.
    let deleting = meta_str(&new, "deletionTimestamp").is_some();
    let finalizers_left = object::meta(&new)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let graceful_pod = rt.kind == "Pod" && new["metadata"]["deletionGracePeriodSeconds"].as_i64().unwrap_or(0) > 0;
    // A namespace also waits for its `spec.finalizers` (the namespace controller's).
    let namespace_finalizers_left =
        rt.kind == "Namespace" && new["spec"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
    if deleting && !finalizers_left && !graceful_pod && !namespace_finalizers_left {
        let also = alloc::release_keys(&api.config.services, rt, &old);
        return Ok(api.storage.delete(&k, cur.rev, &also).await?.map(|_| new));
    }
    match api.storage.update(&k, to_stored(&new)?, cur.rev).await? {
        Some(rev) => {
            set_resource_version(&mut new, rev);
            Ok(Some(new))
        }
        None if precondition.is_some() => Err(conflict(rt, name)),
        None => Ok(None),
    }
}

/// Writes an update or patch already merged per subresource and answers it (the Scale
/// for the scale subresource). `Ok(None)`: the object changed underneath; read again.
#[allow(clippy::too_many_arguments)]
async fn write_merged(
    api: &Api,
    t: &Target,
    name: &str,
    sub: Option<Sub>,
    cur: &Current,
    new: Value,
    precondition: Option<i64>,
    params: &Params,
    fmt: Format,
) -> Result<Option<Response>> {
    if params.dry_run() {
        return Ok(Some(object_response(StatusCode::OK, t.rt, new, params, fmt)));
    }
    Ok(commit_update(api, t, name, cur, new, precondition)
        .await?
        .map(|obj| match sub {
            Some(Sub::Scale) => json_response(StatusCode::OK, &scale_of(&obj)),
            _ => object_response(StatusCode::OK, t.rt, obj, params, fmt),
        }))
}

async fn update(
    api: &Api,
    t: &Target,
    name: &str,
    sub: Option<Sub>,
    params: &Params,
    body: &Bytes,
    fmt: Format,
) -> Result<Response> {
    let sent = parse_body(body)?;
    let precondition = client_rv(&sent)?;
    for attempt in 0..UPDATE_ATTEMPTS_MAX {
        // With a client's resourceVersion, a stale cached copy would be a false conflict.
        let cur = read_for_write(api, t, name, attempt == 0 && precondition.is_none()).await?;
        let new = merge_for(t.rt, sub, &cur.obj, sent.clone());
        if let Some(r) = write_merged(api, t, name, sub, &cur, new, precondition, params, fmt).await? {
            return Ok(r);
        }
    }
    Err(conflict(t.rt, name))
}

/// Applies a PATCH body of content type `ctype` to `base` (an object of `kind`).
pub fn apply_patch(ctype: &str, kind: &str, base: &Value, patch_doc: &Value) -> Result<Value> {
    let r = match ctype {
        "application/merge-patch+json" => patch::merge_patch(base, patch_doc),
        "application/json-patch+json" => patch::json_patch(base, patch_doc),
        "application/strategic-merge-patch+json" => patch::strategic_merge_patch(kind, base, patch_doc),
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
            return Err(ApiError::UnsupportedMediaType(
                "server-side apply is not supported yet; use kubectl apply (client-side)".into(),
            ))
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: \
application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
            )))
        }
    };
    let patched = r.map_err(|e| {
        if e.bad_request {
            ApiError::BadRequest(e.message)
        } else {
            ApiError::Invalid {
                kind: kind.to_string(),
                group: String::new(),
                name: String::new(),
                message: e.message,
                causes: Vec::new(),
            }
        }
    })?;
    // A JSON patch may replace the whole document (path ""): anything but an object is
    // refused as upstream refuses it, 422 on the field `patch` (the steps after this
    // one index into the object, and panicked on a number or a string).
    if !patched.is_object() {
        let value = validation::go_quote(&patched.to_string());
        return Err(ApiError::Invalid {
            kind: kind.to_string(),
            group: String::new(),
            name: String::new(),
            message: format!(
                "\"\" is invalid: patch: Invalid value: {value}: the patched document is not a JSON object"
            ),
            causes: vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {value}: the patched document is not a JSON object"),
                field: "patch".into(),
            }],
        });
    }
    Ok(patched)
}

#[allow(clippy::too_many_arguments)]
async fn patch_object(
    api: &Api,
    t: &Target,
    name: &str,
    sub: Option<Sub>,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
    fmt: Format,
) -> Result<Response> {
    let ctype = content_type(headers).to_string();
    let patch_doc: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("error decoding patch: {e}")))?;
    // A JSON patch may `test` values, and a patch naming a resourceVersion is
    // conditional: both start from the store, not from a possibly stale cached copy.
    let cacheable = patch_doc.is_object() && patch_doc["metadata"]["resourceVersion"].is_null();
    for attempt in 0..UPDATE_ATTEMPTS_MAX {
        let cur = read_for_write(api, t, name, attempt == 0 && cacheable).await?;
        let old = &cur.obj;
        let (base, kind) = match sub {
            Some(Sub::Scale) => (scale_of(old), "Scale"),
            _ => (old.clone(), t.rt.kind),
        };
        let patched = apply_patch(&ctype, kind, &base, &patch_doc)?;
        // A resourceVersion the patch set (or changed) is a precondition.
        let precondition = match (
            meta_str(&patched, "resourceVersion"),
            meta_str(&base, "resourceVersion"),
        ) {
            (Some(p), Some(b)) if p != b => Some(object::parse_rv(p)?),
            _ => None,
        };
        let new = merge_for(t.rt, sub, old, patched);
        if let Some(r) = write_merged(api, t, name, sub, &cur, new, precondition, params, fmt).await? {
            return Ok(r);
        }
    }
    Err(conflict(t.rt, name))
}

/// The garbage collector's finalizers: the owner waits while its dependents lose their
/// references to it (`orphan`), or while they are deleted (`foregroundDeletion`).
const FINALIZER_ORPHAN: &str = "orphan";
const FINALIZER_FOREGROUND: &str = "foregroundDeletion";

/// Namespaces that may not be deleted (upstream's NamespaceLifecycle admission).
const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// What happens to the dependents of a deleted object (`DeleteOptions.propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Propagation {
    /// The object goes once its dependents no longer name it (the `orphan` finalizer).
    Orphan,
    /// The object goes at once, its dependents after it (the garbage collector's default).
    Background,
    /// The object stays until its blocking dependents are gone (`foregroundDeletion`).
    Foreground,
}

/// DeleteOptions from the body and the query (the query is what clients that send no
/// body use, e.g. `?propagationPolicy=Orphan`; a field in the body wins).
struct DeleteOptions {
    grace_s: Option<i64>,
    uid: Option<String>,
    rv: Option<i64>,
    propagation: Option<Propagation>,
    /// The deprecated `orphanDependents`.
    orphan_dependents: Option<bool>,
    /// Upstream's ValidateDeleteOptions errors, reported once the object is found (as
    /// upstream, whose registry reads the object first).
    invalid: Vec<validation::FieldError>,
}

impl DeleteOptions {
    fn check(&self) -> Result<()> {
        if self.invalid.is_empty() {
            return Ok(());
        }
        let (kind, group) = ("DeleteOptions", "meta.k8s.io");
        Err(ApiError::Invalid {
            kind: kind.into(),
            group: group.into(),
            name: String::new(),
            message: validation::invalid_message(kind, group, "", &self.invalid),
            causes: self
                .invalid
                .iter()
                .map(|e| Cause {
                    reason: e.reason.to_string(),
                    message: e.message.clone(),
                    field: e.field.clone(),
                })
                .collect(),
        })
    }

    /// Upstream's shouldOrphanDependents: the options, else the object's finalizers (every
    /// type served here defaults to deleting dependents).
    fn orphans(&self, finalizers: &[String]) -> bool {
        if let Some(o) = self.orphan_dependents {
            return o;
        }
        if let Some(p) = self.propagation {
            return p == Propagation::Orphan;
        }
        first_policy_finalizer(finalizers) == Some(FINALIZER_ORPHAN)
    }

    /// Upstream's shouldDeleteDependents.
    fn deletes_in_foreground(&self, finalizers: &[String]) -> bool {
        if self.orphan_dependents.is_some() {
            return false;
        }
        if let Some(p) = self.propagation {
            return p == Propagation::Foreground;
        }
        first_policy_finalizer(finalizers) == Some(FINALIZER_FOREGROUND)
    }
}

/// The first of the `orphan` and `foregroundDeletion` finalizers on an object: the policy
/// an earlier delete chose, which a delete without options keeps.
fn first_policy_finalizer(finalizers: &[String]) -> Option<&str> {
    finalizers
        .iter()
        .map(String::as_str)
        .find(|f| *f == FINALIZER_ORPHAN || *f == FINALIZER_FOREGROUND)
}

fn delete_options(params: &Params, body: &Bytes) -> Result<DeleteOptions> {
    let b: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid delete options: {e}")))?
    };
    let grace_s = match b["gracePeriodSeconds"].as_i64() {
        Some(g) => Some(g),
        None => params.int("gracePeriodSeconds")?,
    };
    let rv = match b["preconditions"]["resourceVersion"].as_str() {
        Some(rv) => Some(object::parse_rv(rv)?),
        None => None,
    };
    let policy = match &b["propagationPolicy"] {
        Value::Null => params.get("propagationPolicy").map(str::to_string),
        Value::String(s) => Some(s.clone()),
        other => {
            return Err(ApiError::BadRequest(format!(
                "invalid delete options: propagationPolicy must be a string, not {other}"
            )))
        }
    };
    let orphan_dependents = match &b["orphanDependents"] {
        Value::Null => match params.get("orphanDependents") {
            None => None,
            // Go's strconv.ParseBool, which decodes query parameters upstream.
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Some(true),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Some(false),
            Some(v) => {
                return Err(ApiError::BadRequest(format!(
                    "invalid value for orphanDependents: {v:?}"
                )))
            }
        },
        Value::Bool(o) => Some(*o),
        other => {
            return Err(ApiError::BadRequest(format!(
                "invalid delete options: orphanDependents must be a boolean, not {other}"
            )))
        }
    };
    // Upstream's ValidateDeleteOptions, with its messages.
    let mut invalid = Vec::new();
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    if let (Some(_), Some(p)) = (orphan_dependents, &policy) {
        invalid.push(validation::FieldError {
            reason: "FieldValueInvalid",
            field: "propagationPolicy".into(),
            message: format!(
                "Invalid value: {}: orphanDependents and deletionPropagation cannot be both set",
                quoted(p)
            ),
        });
    }
    let propagation = match policy.as_deref() {
        None => None,
        Some("Orphan") => Some(Propagation::Orphan),
        Some("Background") => Some(Propagation::Background),
        Some("Foreground") => Some(Propagation::Foreground),
        Some(other) => {
            invalid.push(validation::FieldError {
                reason: "FieldValueNotSupported",
                field: "propagationPolicy".into(),
                message: format!(
                    "Unsupported value: {}: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\"",
                    quoted(other)
                ),
            });
            None
        }
    };
    Ok(DeleteOptions {
        grace_s,
        uid: b["preconditions"]["uid"].as_str().map(str::to_string),
        rv,
        propagation,
        orphan_dependents,
        invalid,
    })
}

fn finalizers_of(obj: &Value) -> Vec<String> {
    object::meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The finalizers an object keeps after a delete with `opts` (upstream's
/// deletionFinalizersForGarbageCollection): `orphan` or `foregroundDeletion` as the options
/// or, without a policy, the finalizers already there say; other finalizers are kept.
/// `None` when that is the set it has.
fn gc_finalizers(current: &[String], opts: &DeleteOptions) -> Option<Vec<String>> {
    let mut new: Vec<String> = current
        .iter()
        .filter(|f| *f != FINALIZER_ORPHAN && *f != FINALIZER_FOREGROUND)
        .cloned()
        .collect();
    if opts.orphans(current) {
        new.push(FINALIZER_ORPHAN.into());
    }
    if opts.deletes_in_foreground(current) {
        new.push(FINALIZER_FOREGROUND.into());
    }
    let as_set = |l: &[String]| l.iter().cloned().collect::<std::collections::BTreeSet<String>>();
    (as_set(current) != as_set(&new)).then_some(new)
}

/// Deletes (or starts deleting) one object; returns it as last seen.
///
/// As upstream's registry: an object with finalizers (its own, or the `orphan` or
/// `foregroundDeletion` that the propagation policy adds) gets `deletionTimestamp` and
/// stays until they are removed; a scheduled pod stops gracefully; anything else is
/// removed at once. A namespace is first marked Terminating (see [`delete_namespace`]).
async fn delete(api: &Api, t: &Target, name: &str, params: &Params, body: &Bytes) -> Result<Value> {
    let opts = delete_options(params, body)?;
    let rt = t.rt;
    if rt.kind == "Namespace" && IMMORTAL_NAMESPACES.contains(&name) {
        return Err(ApiError::Forbidden(format!(
            "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
        )));
    }
    // Preconditions start from the store, not from a possibly stale cached copy.
    let cacheable = opts.uid.is_none() && opts.rv.is_none();
    for attempt in 0..UPDATE_ATTEMPTS_MAX {
        let Current { mut obj, rev } = read_for_write(api, t, name, attempt == 0 && cacheable).await?;
        opts.check()?;
        if let Some(uid) = &opts.uid {
            let have = meta_str(&obj, "uid").unwrap_or("");
            if have != uid {
                return Err(ApiError::Conflict {
                    what: rt.group_resource(),
                    name: name.to_string(),
                    reason: format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"),
                });
            }
        }
        if let Some(rv) = opts.rv {
            if rv != rev {
                return Err(ApiError::Conflict {
                    what: rt.group_resource(),
                    name: name.to_string(),
                    reason: format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        rev
                    ),
                });
            }
        }
        if params.dry_run() {
            return Ok(obj);
        }
        let k = key(t, name);
        let deleting = meta_str(&obj, "deletionTimestamp").is_some();
        if rt.kind == "Namespace" {
            if !deleting {
                match delete_namespace(api, &k, rev, obj, &opts).await? {
                    Some(obj) => return Ok(obj),
                    None => continue,
                }
            }
            // Its contents are still being removed: the namespace as it is.
            let spec_finalizers = obj["spec"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
            if spec_finalizers {
                return Ok(obj);
            }
            // Finalized: removed as any object is, once its own finalizers are gone.
        }
        let current_grace = obj["metadata"]["deletionGracePeriodSeconds"].as_i64().unwrap_or(0);
        // A pod on a node stops gracefully: its node agent deletes it once stopped.
        let mut grace = if rt.kind == "Pod" && obj["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()) {
            let done = matches!(obj["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
            let g = opts
                .grace_s
                .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30);
            if done {
                0
            } else {
                g.max(0)
            }
        } else {
            0
        };
        // A graceful deletion under way may only be shortened; the finalizers are not
        // touched then (upstream's BeforeDelete).
        let shortened = if deleting && current_grace > 0 {
            match opts.grace_s {
                Some(g) if g.max(0) < current_grace => {
                    grace = g.max(0);
                    true
                }
                _ => return Ok(obj),
            }
        } else {
            false
        };
        let new_finalizers = gc_finalizers(&finalizers_of(&obj), &opts);
        let finalizers_left = match &new_finalizers {
            Some(f) => !f.is_empty(),
            None => !finalizers_of(&obj).is_empty(),
        };
        if finalizers_left || grace > 0 {
            if deleting && !shortened && new_finalizers.is_none() {
                return Ok(obj);
            }
            let now = object::now_unix_s();
            let generation = obj["metadata"]["generation"].as_i64().unwrap_or(0);
            let m = meta_mut(&mut obj);
            if let Some(f) = new_finalizers {
                m.insert("finalizers".into(), json!(f));
            }
            if !deleting || shortened {
                m.insert("deletionTimestamp".into(), json!(object::rfc3339(now + grace)));
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
            // Upstream bumps the generation of an object when its deletion starts.
            if !deleting && generation > 0 {
                m.insert("generation".into(), json!(generation + 1));
            }
            match api.storage.update(&k, to_stored(&obj)?, rev).await? {
                Some(rev) => {
                    set_resource_version(&mut obj, rev);
                    return Ok(obj);
                }
                None => continue,
            }
        }
        let also = alloc::release_keys(&api.config.services, rt, &obj);
        if api.storage.delete(&k, rev, &also).await?.is_some() {
            return Ok(obj);
        }
    }
    Err(conflict(rt, name))
}

/// The first DELETE of a namespace (upstream's namespace registry): it gets
/// `deletionTimestamp` and phase Terminating, and stays while `spec.finalizers` has
/// entries: the namespace controller empties it and then removes its `kubernetes`
/// finalizer through `finalize`, whose update removes the namespace (see
/// [`finalize_namespace`]). `orphan` / `foregroundDeletion` go into `metadata.finalizers`
/// as the options say. `None`: it changed meanwhile; read it again.
async fn delete_namespace(api: &Api, k: &str, rev: i64, mut obj: Value, opts: &DeleteOptions) -> Result<Option<Value>> {
    let current = finalizers_of(&obj);
    // Upstream's shouldHaveOrphanFinalizer / shouldHaveDeleteDependentsFinalizer, which for
    // namespaces read `orphanDependents: false` as foreground.
    let orphan = match (opts.orphan_dependents, opts.propagation) {
        (Some(o), _) => o,
        (None, Some(p)) => p == Propagation::Orphan,
        (None, None) => current.iter().any(|f| f == FINALIZER_ORPHAN),
    };
    let foreground = match (opts.orphan_dependents, opts.propagation) {
        (Some(o), _) => !o,
        (None, Some(p)) => p == Propagation::Foreground,
        (None, None) => current.iter().any(|f| f == FINALIZER_FOREGROUND),
    };
    let mut finalizers: Vec<String> = current
        .iter()
        .filter(|f| *f != FINALIZER_ORPHAN && *f != FINALIZER_FOREGROUND)
        .cloned()
        .collect();
    if orphan {
        finalizers.push(FINALIZER_ORPHAN.into());
    }
    if foreground {
        finalizers.push(FINALIZER_FOREGROUND.into());
    }
    let m = meta_mut(&mut obj);
    m.insert("deletionTimestamp".into(), json!(object::now()));
    if finalizers != current {
        m.insert("finalizers".into(), json!(finalizers));
    }
    obj["status"]["phase"] = json!("Terminating");
    Ok(match api.storage.update(k, to_stored(&obj)?, rev).await? {
        Some(rev) => {
            set_resource_version(&mut obj, rev);
            Some(obj)
        }
        None => None,
    })
}

/// `PUT namespaces/<name>/finalize`: replaces `spec.finalizers` only (the namespace
/// controller removes its `kubernetes` there once the namespace is empty), under the
/// resourceVersion the client sent. A namespace being deleted whose finalizers, both
/// lists, are then empty is removed (upstream's ShouldDeleteNamespaceDuringUpdate).
/// Other fields of the body are ignored (upstream also applies metadata changes there).
async fn finalize_namespace(api: &Api, t: &Target, name: &str, params: &Params, body: &Bytes) -> Result<Response> {
    let rt = t.rt;
    let mut sent = parse_body(body)?;
    check_type(rt, &mut sent)?;
    let sent_name = object::name(&sent).to_string();
    if !sent_name.is_empty() && sent_name != name {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({sent_name}) does not match the name on the URL ({name})"
        )));
    }
    let precondition = client_rv(&sent)?;
    let finalizers = sent["spec"]["finalizers"].clone();
    for attempt in 0..UPDATE_ATTEMPTS_MAX {
        let cur = read_for_write(api, t, name, attempt == 0 && precondition.is_none()).await?;
        if precondition.is_some_and(|rv| rv != cur.rev) {
            return Err(conflict(rt, name));
        }
        let mut new = cur.obj.clone();
        if finalizers.is_null() {
            if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("finalizers");
            }
        } else {
            new["spec"]["finalizers"] = finalizers.clone();
        }
        let errs = validation::validate_create(rt.kind, &new);
        if !errs.is_empty() {
            return Err(invalid(rt, name, &errs));
        }
        if params.dry_run() || new == cur.obj {
            return Ok(json_response(StatusCode::OK, &new));
        }
        let k = key(t, name);
        let spec_left = new["spec"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        let removed = meta_str(&new, "deletionTimestamp").is_some() && !spec_left && finalizers_of(&new).is_empty();
        let written = if removed {
            api.storage.delete(&k, cur.rev, &[]).await?.map(|_| ())
        } else {
            api.storage.update(&k, to_stored(&new)?, cur.rev).await?.map(|rev| {
                set_resource_version(&mut new, rev);
            })
        };
        match written {
            Some(()) => return Ok(json_response(StatusCode::OK, &new)),
            None if precondition.is_some() => return Err(conflict(rt, name)),
            None => continue,
        }
    }
    Err(conflict(rt, name))
}

async fn delete_collection(api: &Api, t: &Target, params: &Params, body: &Bytes) -> Result<Response> {
    let sel = Selectors::parse(t.rt, params)?;
    let (start, end) = collection_range(t);
    let (items, rev, _) = read_collection(&api.storage, &start, &end, start.clone(), 0, 0, true, &sel).await?;
    let mut deleted = Vec::new();
    for obj in items {
        let name = object::name(&obj).to_string();
        let ns = meta_str(&obj, "namespace").map(str::to_string);
        let target = Target {
            namespace: ns.or_else(|| t.namespace.clone()),
            name: Some(name.clone()),
            ..t.clone()
        };
        match delete(api, &target, &name, params, body).await {
            Ok(o) => deleted.push(o),
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": list_kind(t.rt), "apiVersion": t.rt.api_version(),
            "metadata": {"resourceVersion": rev.to_string()}, "items": deleted}),
    ))
}

/// `POST pods/<name>/binding`: assigns the pod to a node, once.
async fn bind(api: &Api, t: &Target, name: &str, body: &Bytes) -> Result<Response> {
    let b = parse_body(body)?;
    let node = b["target"]["name"].as_str().unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::Invalid {
            kind: "Binding".into(),
            group: String::new(),
            name: name.to_string(),
            message: format!("Binding \"{name}\" is invalid: target.name: Required value"),
            causes: vec![Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "target.name".into(),
            }],
        });
    }
    for _ in 0..UPDATE_ATTEMPTS_MAX {
        let (kv, _) = current(&api.storage, t, name, true).await?;
        let mut pod = from_kv(&kv)?;
        if meta_str(&pod, "deletionTimestamp").is_some() {
            return Err(ApiError::Conflict {
                what: t.rt.group_resource(),
                name: name.to_string(),
                reason: "pod is being deleted, cannot be assigned to a host".into(),
            });
        }
        if let Some(n) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::Conflict {
                what: t.rt.group_resource(),
                name: name.to_string(),
                reason: format!("pod {name} is already assigned to node \"{n}\""),
            });
        }
        pod["spec"]["nodeName"] = json!(node);
        let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
            "lastTransitionTime": object::now()});
        let conds = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let mut conds: Vec<Value> = conds.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
        conds.push(cond);
        pod["status"]["conditions"] = json!(conds);
        meta_mut(&mut pod).remove("resourceVersion");
        if api
            .storage
            .update(&key(t, name), to_stored(&pod)?, kv.mod_revision)
            .await?
            .is_some()
        {
            return Ok(success(StatusCode::CREATED));
        }
    }
    Err(conflict(t.rt, name))
}

/// `GET pods/<name>/log`: streamed from the agent of the pod's node (see [`crate::podlog`]).
async fn logs(api: &Api, t: &Target, name: &str, params: &Params) -> Result<Response> {
    crate::podlog::serve(api, t, name, params).await
}

/// Creates the namespaces every cluster has, if missing.
pub async fn bootstrap(api: &Api) -> Result<()> {
    let rt = ResourceType::by_kind("Namespace").expect("namespaces are served");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let mut obj = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "uid": object::new_uid(), "creationTimestamp": object::now(),
                "labels": {"kubernetes.io/metadata.name": ns}}});
        validation::default_object("Namespace", &mut obj);
        if api
            .storage
            .create(&rt.key(None, ns), to_stored(&obj)?, &[])
            .await?
            .is_ok()
        {
            tracing::info!(namespace = ns, "created namespace");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_refuse_junk() {
        let start = b"/registry/pods/default/".to_vec();
        let tok = encode_continue(42, b"/registry/pods/default/p2\0", &start);
        let (rev, key) = decode_continue(&tok, &start).expect("decode");
        assert_eq!(rev, 42);
        assert_eq!(key, b"/registry/pods/default/p2\0".to_vec());
        assert!(decode_continue("!!!", &start).is_err());
        assert!(decode_continue(&encode_continue(0, b"x", b""), &start).is_err());
    }

    #[test]
    fn list_revisions_follow_upstream_rules() {
        let p =
            |pairs: &[(&str, &str)]| Params::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        assert_eq!(list_revision(&p(&[])).expect("unset"), (0, true));
        assert_eq!(list_revision(&p(&[("resourceVersion", "0")])).expect("0"), (0, false));
        assert_eq!(
            list_revision(&p(&[("resourceVersion", "7"), ("resourceVersionMatch", "Exact")])).expect("exact"),
            (7, false)
        );
        assert!(list_revision(&p(&[("resourceVersionMatch", "Exact")])).is_err());
        assert!(list_revision(&p(&[("resourceVersion", "x")])).is_err());
    }

    fn options(pairs: &[(&str, &str)], body: &str) -> DeleteOptions {
        let params = Params::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        delete_options(&params, &Bytes::from(body.to_string())).expect("parsed")
    }

    #[test]
    fn propagation_policies_set_the_garbage_collectors_finalizers() {
        let fins = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let orphan = options(&[], r#"{"propagationPolicy":"Orphan"}"#);
        assert_eq!(gc_finalizers(&fins(&["a/b"]), &orphan), Some(fins(&["a/b", "orphan"])));
        // As kubectl --cascade=orphan sends it, or a client without a body.
        let query = options(&[("propagationPolicy", "Orphan")], "");
        assert_eq!(gc_finalizers(&[], &query), Some(fins(&["orphan"])));
        let foreground = options(&[], r#"{"propagationPolicy":"Foreground"}"#);
        assert_eq!(
            gc_finalizers(&fins(&["orphan"]), &foreground),
            Some(fins(&["foregroundDeletion"]))
        );
        // Background takes both away; no policy keeps what the object has.
        let background = options(&[], r#"{"propagationPolicy":"Background"}"#);
        assert_eq!(
            gc_finalizers(&fins(&["foregroundDeletion"]), &background),
            Some(Vec::new())
        );
        assert_eq!(gc_finalizers(&fins(&["orphan"]), &options(&[], "")), None);
        assert_eq!(gc_finalizers(&[], &options(&[], "")), None);
        // The deprecated orphanDependents.
        let legacy = options(&[("orphanDependents", "true")], "");
        assert_eq!(gc_finalizers(&[], &legacy), Some(fins(&["orphan"])));
        let legacy = options(&[], r#"{"orphanDependents":false}"#);
        assert_eq!(gc_finalizers(&fins(&["orphan"]), &legacy), Some(Vec::new()));
    }

    #[test]
    fn invalid_delete_options_get_upstreams_messages() {
        let both = options(&[], r#"{"propagationPolicy":"Orphan","orphanDependents":true}"#);
        let e = both.check().expect_err("both set");
        assert_eq!(
            e.to_string(),
            "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Invalid value: \"Orphan\": \
orphanDependents and deletionPropagation cannot be both set"
        );
        assert_eq!(e.code(), StatusCode::UNPROCESSABLE_ENTITY);
        let unknown = options(&[("propagationPolicy", "Sideways")], "");
        assert_eq!(
            unknown.check().expect_err("unknown policy").to_string(),
            "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"Sideways\": \
supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
        );
        let params = Params::new([("orphanDependents".to_string(), "maybe".to_string())].into());
        assert!(delete_options(&params, &Bytes::new()).is_err(), "not a boolean: 400");
        assert!(options(&[], r#"{"propagationPolicy":"Background"}"#).check().is_ok());
    }

    #[test]
    fn qos_classes() {
        let pod = |res: Value| json!({"spec": {"containers": [{"name": "c", "resources": res}]}});
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&pod(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(qos_class(&pod(json!({"requests": {"cpu": "1"}}))), "Burstable");
    }

    /// Found by the `patch` fuzz target (fuzz/regressions/patch/): a JSON patch that makes
    /// the document a number panicked in `check_type` and `merge_for`.
    #[test]
    fn a_patch_must_leave_an_object() {
        let base = json!({"metadata": {"name": "web"}, "spec": {"replicas": 1}});
        for value in [json!(5), json!("x"), json!([1]), json!(null)] {
            let doc = json!([{"op": "add", "path": "", "value": value}]);
            let e = apply_patch("application/json-patch+json", "Deployment", &base, &doc).expect_err("not an object");
            assert_eq!(e.code(), StatusCode::UNPROCESSABLE_ENTITY, "{e}");
            assert!(e.to_string().contains("patch: Invalid value"), "{e}");
        }
        let doc = json!([{"op": "replace", "path": "/spec/replicas", "value": 2}]);
        let patched = apply_patch("application/json-patch+json", "Deployment", &base, &doc).expect("an object");
        assert_eq!(patched["spec"]["replicas"], 2);
    }
}
