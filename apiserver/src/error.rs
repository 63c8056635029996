//! The apiserver's one error type, and how it goes out: a Kubernetes `Status` object
//! with the HTTP code, `reason` and `details` upstream uses, so that kubectl prints
//! `Error from server (NotFound): pods "p1" not found` and client libraries map it to
//! their own error types.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// A resource as error messages name it: `pods`, `deployments.apps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

impl GroupResource {
    pub fn new(group: &str, resource: &str) -> GroupResource {
        GroupResource {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }
}

impl std::fmt::Display for GroupResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}", self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// One cause of an `Invalid` error (a field and what is wrong with it).
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{what} \"{name}\" not found")]
    NotFound { what: GroupResource, name: String },
    #[error("{what} \"{name}\" already exists")]
    AlreadyExists { what: GroupResource, name: String },
    #[error("Operation cannot be fulfilled on {what} \"{name}\": {reason}")]
    Conflict {
        what: GroupResource,
        name: String,
        reason: String,
    },
    /// 422; `message` is the whole message (`Pod "p" is invalid: ...`).
    #[error("{message}")]
    Invalid {
        kind: String,
        group: String,
        name: String,
        message: String,
        causes: Vec<Cause>,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 410: a resource version too old for the history that is left.
    #[error("{0}")]
    Expired(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Expired(_) => StatusCode::GONE,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `reason` field of the Status (metav1.StatusReason).
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::Expired(_) => "Expired",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::TooLarge(_) => "RequestEntityTooLarge",
            ApiError::TooManyRequests(_) => "TooManyRequests",
            ApiError::Timeout(_) => "Timeout",
            ApiError::Unavailable(_) => "ServiceUnavailable",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// The error as a `Status` object.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        let details = match self {
            ApiError::NotFound { what, name }
            | ApiError::AlreadyExists { what, name }
            | ApiError::Conflict { what, name, .. } => {
                let mut d = json!({"name": name, "kind": what.resource});
                if !what.group.is_empty() {
                    d["group"] = json!(what.group);
                }
                Some(d)
            }
            ApiError::Invalid {
                kind,
                group,
                name,
                causes,
                ..
            } => {
                let mut d = json!({
                    "name": name,
                    "kind": kind,
                    "causes": causes.iter().map(|c| json!({
                        "reason": c.reason, "message": c.message, "field": c.field,
                    })).collect::<Vec<_>>(),
                });
                if !group.is_empty() {
                    d["group"] = json!(group);
                }
                Some(d)
            }
            ApiError::Internal(m) => Some(json!({"causes": [{"message": m}]})),
            _ => None,
        };
        if let Some(d) = details {
            status["details"] = d;
        }
        status
    }

    /// Maps an error of the store's etcd API (local member or remote etcd) to the status
    /// the Kubernetes API gives for it.
    pub fn from_store(s: &tonic::Status) -> ApiError {
        use tonic::Code;
        let m = s.message();
        match s.code() {
            Code::OutOfRange if m.contains("compacted") => {
                ApiError::Expired("The resourceVersion for the provided list is too old.".into())
            }
            Code::OutOfRange if m.contains("future") => ApiError::Timeout(format!("Too large resource version: {m}")),
            Code::ResourceExhausted => ApiError::TooManyRequests(format!("storage is busy: {m}")),
            Code::DeadlineExceeded => ApiError::Timeout(format!("storage request timed out: {m}")),
            Code::Unavailable => ApiError::Unavailable(format!("storage unavailable: {m}")),
            Code::InvalidArgument if m.contains("too large") => {
                ApiError::TooLarge("etcdserver: request is too large".into())
            }
            _ => ApiError::Internal(format!("storage: {m}")),
        }
    }
}

impl From<capstan_store::StoreError> for ApiError {
    fn from(e: capstan_store::StoreError) -> ApiError {
        ApiError::from_store(&tonic::Status::from(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        crate::http::json_response(code, &self.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_name_the_qualified_resource() {
        let e = ApiError::NotFound {
            what: GroupResource::new("apps", "deployments"),
            name: "web".into(),
        };
        assert_eq!(e.to_string(), "deployments.apps \"web\" not found");
        let s = e.status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(
            s["details"],
            json!({"name": "web", "group": "apps", "kind": "deployments"})
        );
        let e = ApiError::NotFound {
            what: GroupResource::new("", "pods"),
            name: "p1".into(),
        };
        assert_eq!(e.to_string(), "pods \"p1\" not found");
        assert_eq!(e.status()["details"], json!({"name": "p1", "kind": "pods"}));
    }

    #[test]
    fn store_errors_map_to_kubernetes_reasons() {
        let compacted = tonic::Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        assert_eq!(ApiError::from_store(&compacted).code(), StatusCode::GONE);
        let busy = tonic::Status::resource_exhausted("etcdserver: too many requests");
        assert_eq!(ApiError::from_store(&busy).code(), StatusCode::TOO_MANY_REQUESTS);
    }
}
