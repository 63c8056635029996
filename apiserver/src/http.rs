//! The HTTP side: routing a request path to a resource, the query parameters the API
//! takes, content negotiation (plain JSON or a `Table`), and JSON responses.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;

use crate::error::{ApiError, Result};
use crate::resources::{ResourceType, Sub};

pub fn json_response(code: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// What a request path names.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub rt: &'static ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<Sub>,
    /// The legacy `/watch/` path prefix.
    pub watch_path: bool,
}

/// Parses the part of a path after `/api/v1/` or `/apis/<group>/<version>/`.
pub fn parse_target(group: &str, version: &str, rest: &str) -> Result<Target> {
    let mut segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let not_found = || ApiError::NotFound {
        what: crate::error::GroupResource::new(group, rest),
        name: String::new(),
    };
    let watch_path = segs.first() == Some(&"watch");
    if watch_path {
        segs.remove(0);
    }
    let find = |plural: &str| ResourceType::find(group, version, plural);
    // namespaces/<ns>/<resource>[/<name>[/<sub>]] when <resource> is a namespaced type.
    if segs.len() >= 3 && segs[0] == "namespaces" {
        if let Some(rt) = find(segs[2]).filter(|rt| rt.namespaced) {
            if segs.len() > 5 {
                return Err(not_found());
            }
            return Ok(Target {
                rt,
                namespace: Some(segs[1].to_string()),
                name: segs.get(3).map(|s| s.to_string()),
                sub: match segs.get(4) {
                    Some(s) => Some(Sub::parse(s).filter(|sub| rt.has(*sub)).ok_or_else(not_found)?),
                    None => None,
                },
                watch_path,
            });
        }
    }
    // <resource>[/<name>[/<sub>]]: a cluster-scoped type, or a namespaced one listed
    // across all namespaces.
    let rt = segs.first().and_then(|p| find(p)).ok_or_else(not_found)?;
    if segs.len() > 3 || (rt.namespaced && segs.len() > 1) {
        return Err(not_found());
    }
    Ok(Target {
        rt,
        namespace: None,
        name: segs.get(1).map(|s| s.to_string()),
        sub: match segs.get(2) {
            Some(s) => Some(Sub::parse(s).filter(|sub| rt.has(*sub)).ok_or_else(not_found)?),
            None => None,
        },
        watch_path,
    })
}

/// The query parameters of the API, parsed.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pub raw: HashMap<String, String>,
}

impl Params {
    pub fn new(raw: HashMap<String, String>) -> Params {
        Params { raw }
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.raw.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }

    pub fn int(&self, k: &str) -> Result<Option<i64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::BadRequest(format!("invalid value for {k}: {v:?}"))),
        }
    }

    pub fn dry_run(&self) -> bool {
        self.raw.get("dryRun").is_some_and(|v| v == "All")
    }
}

/// How the client wants objects back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Table,
}

pub fn format(headers: &HeaderMap) -> Format {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    // kubectl: `application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;...`
    if accept
        .split(',')
        .any(|part| part.contains("as=Table") && part.contains("g=meta.k8s.io") && part.contains("v=v1"))
    {
        Format::Table
    } else {
        Format::Json
    }
}

pub fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_resources() {
        let t = parse_target("", "v1", "namespaces/default/pods/p1/status").expect("pod status");
        assert_eq!(t.rt.plural, "pods");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("p1"));
        assert_eq!(t.sub, Some(Sub::Status));
        let t = parse_target("", "v1", "namespaces/default").expect("a namespace");
        assert_eq!(t.rt.plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("default"));
        let t = parse_target("", "v1", "pods").expect("all pods");
        assert_eq!((t.namespace, t.name), (None, None));
        let t = parse_target("", "v1", "watch/namespaces/ns/pods").expect("legacy watch");
        assert!(t.watch_path);
        let t = parse_target("apps", "v1", "namespaces/x/deployments/web/scale").expect("scale");
        assert_eq!(t.sub, Some(Sub::Scale));
        assert!(parse_target("", "v1", "namespaces/x/pods/p/scale").is_err());
        assert!(
            parse_target("", "v1", "pods/p1").is_err(),
            "a namespaced object needs its namespace"
        );
        assert!(parse_target("", "v1", "widgets").is_err());
    }

    #[test]
    fn kubectl_table_accept_is_recognized() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
            ),
        );
        assert_eq!(format(&h), Format::Table);
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert_eq!(format(&h), Format::Json);
    }
}
