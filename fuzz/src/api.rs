//! The pure part of the apiserver's create, update and patch handlers, as
//! `capstan_apiserver::handlers` runs it, without storage: the same functions in the same
//! order (`handlers::parse_body`, `check_type`, `merge_for`, `apply_patch`,
//! `object::normalize`, `validation::*`, `object::to_stored`). The glue between them (the
//! metadata the server stamps) is copied from `handlers::create` and `commit_update`, with
//! fixed values where the server takes a clock or a random choice, so that a run is
//! reproducible.

use bytes::Bytes;
use capstan_apiserver::error::ApiError;
use capstan_apiserver::handlers;
use capstan_apiserver::object::{self, meta_mut, meta_str};
use capstan_apiserver::resources::{ResourceType, Sub};
use capstan_apiserver::validation;
use serde_json::{json, Value};

/// The namespace on the request's URL for namespaced kinds.
pub const NAMESPACE: &str = "default";
/// The uid, creation time and resourceVersion the server would make up.
const UID: &str = "6f1c1bde-8a53-4c1e-9b2a-2b0d5c3f7e10";
const CREATED: &str = "2026-01-01T00:00:00Z";
const STORED_REVISION: i64 = 7;

/// A create or update body as the handler receives it: protobuf (kubectl 1.32+) is
/// decoded and re-encoded as JSON first, as `handlers::dispatch` does.
pub fn request_body(body: &[u8], protobuf: bool) -> Result<Bytes, ApiError> {
    if !protobuf {
        return Ok(Bytes::copy_from_slice(body));
    }
    let obj = capstan_apiserver::protobuf::decode(body).map_err(|e| ApiError::BadRequest(e.message))?;
    let json = serde_json::to_vec(&obj).map_err(|e| ApiError::Internal(format!("encoding: {e}")))?;
    Ok(Bytes::from(json))
}

/// `handlers::create` up to the write: the object as it would be stored (with the
/// resourceVersion the write would give it), or the error the client would get.
pub fn create(rt: &'static ResourceType, body: &Bytes) -> Result<Value, ApiError> {
    let mut obj = handlers::prepare_create(rt, Some(NAMESPACE), body, UID, CREATED)?;
    if object::name(&obj).is_empty() {
        if let Some(base) = meta_str(&obj, "generateName").map(str::to_string) {
            // object::generate_name's shape, without its random suffix.
            let base: String = base.chars().take(58).collect();
            meta_mut(&mut obj).insert("name".into(), json!(format!("{base}bcdfg")));
        }
    }
    let errs = validation::validate_create(rt.kind, &obj);
    if !errs.is_empty() {
        return Err(invalid(rt, &obj, &errs));
    }
    object::to_stored(&obj)?;
    object::set_resource_version(&mut obj, STORED_REVISION);
    Ok(obj)
}

/// A stored object of `rt` when no better one is at hand: only what create requires.
pub fn minimal(rt: &'static ResourceType) -> Value {
    let body = json!({"metadata": {"name": "fuzz"}});
    let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    create(rt, &body).unwrap_or_else(|_| {
        let mut obj = json!({"apiVersion": rt.api_version(), "kind": rt.kind,
            "metadata": {"name": "fuzz", "uid": UID, "creationTimestamp": CREATED}});
        if rt.namespaced {
            obj["metadata"]["namespace"] = json!(NAMESPACE);
        }
        object::set_resource_version(&mut obj, STORED_REVISION);
        obj
    })
}

/// `handlers::update`: a PUT of `body` over the stored `old`, for `sub`.
pub fn update(rt: &'static ResourceType, sub: Option<Sub>, old: &Value, body: &Bytes) -> Result<Value, ApiError> {
    let sent = handlers::parse_body(body)?;
    let precondition = handlers::client_rv(&sent)?;
    let new = handlers::merge_for(rt, sub, old, sent);
    commit_update(rt, old, new, precondition)
}

/// `handlers::patch_object`: a PATCH of content type `ctype` over the stored `old`.
pub fn patch(
    rt: &'static ResourceType,
    sub: Option<Sub>,
    old: &Value,
    ctype: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let patch_doc: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("error decoding patch: {e}")))?;
    let (base, kind) = match sub {
        Some(Sub::Scale) => (handlers::scale_of(old), "Scale"),
        _ => (old.clone(), rt.kind),
    };
    let patched = handlers::apply_patch(ctype, kind, &base, &patch_doc)?;
    let precondition = match (
        meta_str(&patched, "resourceVersion"),
        meta_str(&base, "resourceVersion"),
    ) {
        (Some(p), Some(b)) if p != b => Some(object::parse_rv(p)?),
        _ => None,
    };
    let new = handlers::merge_for(rt, sub, old, patched);
    commit_update(rt, old, new, precondition)
}

/// `handlers::commit_update` up to the write.
fn commit_update(
    rt: &'static ResourceType,
    old: &Value,
    new: Value,
    precondition: Option<i64>,
) -> Result<Value, ApiError> {
    if precondition.is_some_and(|rv| rv != STORED_REVISION) {
        return Err(ApiError::Conflict {
            what: rt.group_resource(),
            name: object::name(old).to_string(),
            reason: "the object has been modified; please apply your changes to the latest version and try again"
                .into(),
        });
    }
    let name = object::name(old).to_string();
    let namespace = rt.namespaced.then_some(NAMESPACE);
    let mut new = handlers::prepare_replacement(rt, namespace, &name, old, new)?;
    object::to_stored(&new)?;
    object::set_resource_version(&mut new, STORED_REVISION + 1);
    Ok(new)
}

/// `handlers::invalid`: the 422 with upstream's message.
fn invalid(rt: &ResourceType, obj: &Value, errs: &[validation::FieldError]) -> ApiError {
    let name = object::name(obj);
    ApiError::Invalid {
        kind: rt.kind.to_string(),
        group: rt.group.to_string(),
        name: name.to_string(),
        message: validation::invalid_message(rt.kind, rt.group, name, errs),
        causes: Vec::new(),
    }
}

/// The subresources a PUT or PATCH of `rt` can name (`handlers::dispatch`).
pub fn write_subresources(rt: &ResourceType) -> Vec<Option<Sub>> {
    let mut subs = vec![None];
    subs.extend([Sub::Status, Sub::Scale].into_iter().filter(|s| rt.has(*s)).map(Some));
    subs
}
