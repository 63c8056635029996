//! Who a REST request comes from, and whether they may make it: the API server's
//! authentication and authorization filters, in front of every REST route.
//!
//! # Authentication
//!
//! Off unless the server is given a static token file (`--token-auth-file`, upstream's
//! format: one `token,user,uid,"group1,group2"` line per user; the groups are optional,
//! blank lines and lines starting with `#` are skipped) or a client CA
//! (`--client-ca-file`, over TLS). Then:
//!
//! - a client certificate the CA issued is its subject's common name, with each
//!   organization a group ([`crate::tls::client_identity`]); it is checked first, as
//!   upstream's x509 authenticator comes before the token one;
//! - `Authorization: Bearer <token>` with a token of the file is that user, with the
//!   group `system:authenticated` added, as upstream adds it;
//! - a bearer token not in the file, or an `Authorization` header of another scheme, is
//!   `401 Unauthorized`;
//! - a request without credentials is `401 Unauthorized` too (upstream's
//!   `--anonymous-auth=false`), except the health paths (`/healthz`, `/livez`,
//!   `/readyz` and below), which load balancers and probes reach without credentials,
//!   and the dashboard's static files (`/ui/`, `/ui/app.js`, `/ui/app.css`: a page with
//!   no data that asks for a token, see [`crate::ui`]).
//!
//! The 401 body is upstream's Status: `{"kind":"Status",…,"message":"Unauthorized",
//! "reason":"Unauthorized","code":401}`.
//!
//! # Authorization
//!
//! `--authorization-mode AlwaysAllow` (the default) lets every authenticated user do
//! anything. `RBAC` decides with [`crate::rbac`]: the request's attributes (verb, API
//! group, resource, subresource, namespace, name; or a non-resource path) against the
//! Roles, ClusterRoles and their bindings. A request no rule allows gets `403 Forbidden`
//! with upstream's message (`pods is forbidden: User "alice" cannot list resource "pods"
//! in API group "" in the namespace "default"`) and `details` naming the resource.
//!
//! The policy the authorizer reads is a snapshot kept by a task that follows the four
//! RBAC watch caches ([`follow_policy`]): it is rebuilt after every change, so a new
//! binding takes effect a moment after it is written (upstream's informer-fed RBAC
//! authorizer behaves the same). Until the caches have loaded, nothing but the health
//! paths is allowed.
//!
//! The default roles and bindings upstream creates at start (`cluster-admin` for the
//! group `system:masters`, `view`, `edit`, `admin`, the discovery roles, ...) are created
//! by [`bootstrap_policy`] when missing; ones that exist are left as they are.
//!
//! Left out so far (issue 10): ServiceAccount tokens, the mesh gRPC API (it is not behind
//! these filters yet), impersonation, the Node authorizer,
//! and authentication of the in-process controllers (the filters are offered on
//! `capstan apiserver`, which runs none).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::handlers::Api;
use crate::rbac::{self, Attributes, Decision, Policy, UserInfo};
use crate::resources::ResourceType;

/// Users a token file may hold.
pub const TOKENS_MAX: usize = 100_000;
/// The longest token file read, in bytes.
pub const TOKEN_FILE_BYTES_MAX: usize = 16 << 20;
/// The group every authenticated user belongs to.
pub const GROUP_AUTHENTICATED: &str = "system:authenticated";
/// Paths served without credentials (and without authorization).
const HEALTH_PATHS: [&str; 3] = ["/healthz", "/livez", "/readyz"];

/// The users of a static token file, by token.
#[derive(Default)]
pub struct Tokens {
    by_token: HashMap<String, UserInfo>,
}

/// Never the tokens themselves: a Debug print may end up in a log.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} users)", self.by_token.len())
    }
}

impl Tokens {
    /// Parses a token file (see the module documentation); errors name the line.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        if text.len() > TOKEN_FILE_BYTES_MAX {
            return Err(format!("the token file is over {TOKEN_FILE_BYTES_MAX} bytes"));
        }
        let mut by_token = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line).map_err(|e| format!("line {n}: {e}"))?;
            if fields.len() < 3 {
                return Err(format!(
                    "line {n}: expected token,user,uid[,\"group1,group2\"], got {} fields",
                    fields.len()
                ));
            }
            let (token, name, uid) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
            if token.is_empty() || name.is_empty() {
                return Err(format!("line {n}: the token and the user name must not be empty"));
            }
            let groups = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if by_token.len() >= TOKENS_MAX {
                return Err(format!("more than {TOKENS_MAX} users"));
            }
            let user = UserInfo {
                name: name.to_owned(),
                uid: uid.to_owned(),
                groups,
            };
            if by_token.insert(token.to_owned(), user).is_some() {
                return Err(format!("line {n}: a token given twice"));
            }
        }
        Ok(Tokens { by_token })
    }

    /// The user of `token`, with `system:authenticated` added.
    pub fn user(&self, token: &str) -> Option<UserInfo> {
        let mut user = self.by_token.get(token)?.clone();
        if !user.groups.iter().any(|g| g == GROUP_AUTHENTICATED) {
            user.groups.push(GROUP_AUTHENTICATED.to_owned());
        }
        Some(user)
    }

    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

/// One CSV line: fields split at commas, a field in double quotes may hold commas (and
/// `""` for a quote).
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', true) => quoted = false,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    if quoted {
        return Err("an unterminated quoted field".into());
    }
    fields.push(field);
    Ok(fields)
}

/// What a request's credentials say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// None given.
    None,
    /// A known user.
    User(UserInfo),
    /// A ServiceAccount token whose signature holds; good once its account (and pod)
    /// are found to exist ([`authenticate`]).
    ServiceAccount(Box<crate::serviceaccount::Verified>),
    /// A token nobody has, or a header of another scheme.
    Invalid,
}

/// How requests are authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    AlwaysAllow,
    Rbac,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "AlwaysAllow" => Ok(Mode::AlwaysAllow),
            "RBAC" => Ok(Mode::Rbac),
            other => Err(format!(
                "unknown authorization mode {other:?}: expected AlwaysAllow or RBAC"
            )),
        }
    }
}

/// The filters' settings and the RBAC policy they read.
pub struct Auth {
    tokens: Tokens,
    mode: Mode,
    /// ServiceAccount tokens: issued and accepted with this key (None: neither).
    service_accounts: Option<Arc<crate::serviceaccount::TokenKey>>,
    /// None until the RBAC caches have loaded.
    policy: RwLock<Option<Arc<Policy>>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Auth {
    pub fn new(tokens: Tokens, mode: Mode) -> Auth {
        Auth {
            tokens,
            mode,
            service_accounts: None,
            policy: RwLock::new(None),
        }
    }

    /// Issues and accepts ServiceAccount tokens signed with `key`.
    pub fn with_service_accounts(mut self, key: crate::serviceaccount::TokenKey) -> Auth {
        self.service_accounts = Some(Arc::new(key));
        self
    }

    /// The ServiceAccount token key, if tokens are issued.
    pub fn service_account_key(&self) -> Option<&crate::serviceaccount::TokenKey> {
        self.service_accounts.as_deref()
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn policy(&self) -> Option<Arc<Policy>> {
        self.policy
            .read()
            .expect("invariant: no panics while the policy lock is held")
            .clone()
    }

    fn set_policy(&self, policy: Policy) {
        *self
            .policy
            .write()
            .expect("invariant: no panics while the policy lock is held") = Some(Arc::new(policy));
    }

    /// Who sent a request: its verified client certificate (checked first, as upstream's
    /// x509 authenticator comes before the token one), else its bearer token.
    pub fn authenticate(&self, headers: &axum::http::HeaderMap, extensions: &axum::http::Extensions) -> Credentials {
        if let Some(id) = extensions.get::<crate::tls::ClientIdentity>() {
            let mut groups = id.groups.clone();
            if !groups.iter().any(|g| g == GROUP_AUTHENTICATED) {
                groups.push(GROUP_AUTHENTICATED.to_owned());
            }
            return Credentials::User(UserInfo {
                name: id.user.clone(),
                uid: String::new(),
                groups,
            });
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Credentials::None;
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(token) = token else {
            return Credentials::Invalid;
        };
        if let Some(user) = self.tokens.user(token) {
            return Credentials::User(user);
        }
        // A ServiceAccount token: checked against the wall clock (the API's, not the
        // store's core).
        let now_s = crate::object::now_unix_s();
        match self.service_accounts.as_ref().and_then(|k| k.verify(token, now_s)) {
            Some(verified) => Credentials::ServiceAccount(Box::new(verified)),
            None => Credentials::Invalid,
        }
    }
}

/// Who sent a request ([`Auth::authenticate`]), with a ServiceAccount token's account and
/// bound pod looked up: the token is good only while the ServiceAccount exists with the
/// uid in the token, and, for a token bound to a pod, while that pod exists with its uid
/// and was not marked for deletion more than [`DELETED_POD_TOKEN_GRACE_S`] ago (upstream's
/// validator). The watch cache answers; the store is asked when the cache does not have
/// the object or has another uid (it may lag behind a create made just now).
pub async fn authenticate(
    api: &Api,
    auth: &Auth,
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
) -> Credentials {
    match auth.authenticate(headers, extensions) {
        Credentials::ServiceAccount(verified) => {
            if still_valid(api, &verified).await {
                Credentials::User(verified.user)
            } else {
                Credentials::Invalid
            }
        }
        other => other,
    }
}

/// How long a bound token outlives its pod's deletion mark (upstream's 60 s: the
/// containers may still be stopping).
pub const DELETED_POD_TOKEN_GRACE_S: i64 = 60;

async fn still_valid(api: &Api, v: &crate::serviceaccount::Verified) -> bool {
    let ns = &v.subject.namespace;
    let accounts = ResourceType::find("", "v1", "serviceaccounts").expect("invariant: serviceaccounts are served");
    if current_object(api, accounts, ns, &v.subject.name, &v.subject.uid)
        .await
        .is_none()
    {
        return false;
    }
    let Some(bound) = &v.pod else {
        return true;
    };
    let pods = ResourceType::find("", "v1", "pods").expect("invariant: pods are served");
    let Some(pod) = current_object(api, pods, ns, &bound.name, &bound.uid).await else {
        return false;
    };
    let deleted_s = pod["metadata"]["deletionTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(|t| t.as_second());
    deleted_s.is_none_or(|at| at + DELETED_POD_TOKEN_GRACE_S > crate::object::now_unix_s())
}

/// The object `name` of `rt` in `ns` if it exists with `uid`: from the watch cache, else
/// from the store.
async fn current_object(api: &Api, rt: &'static ResourceType, ns: &str, name: &str, uid: &str) -> Option<Arc<Value>> {
    let key = rt.key(Some(ns), name);
    let has_uid = |o: &Value| o["metadata"]["uid"] == uid;
    if let Some(obj) = api.caches.get(rt).get(key.as_bytes()).filter(|o| has_uid(o)) {
        return Some(obj);
    }
    match api.storage.get(&key, true).await {
        Ok((Some(kv), _)) => crate::object::from_kv(&kv).ok().filter(has_uid).map(Arc::new),
        _ => None,
    }
}

pub fn is_health_path(path: &str) -> bool {
    HEALTH_PATHS
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')))
}

fn status(code: StatusCode, reason: &str, message: &str, details: Option<Value>) -> Response {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    if let Some(d) = details {
        body["details"] = d;
    }
    let mut r = (code, Body::from(body.to_string())).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The 403: upstream's Status, its message from [`rbac::forbidden_message_with_reason`],
/// its details the request's group, resource (as `kind`) and name.
pub fn forbidden(user: &UserInfo, attrs: &Attributes, reason: &str) -> Response {
    let message = rbac::forbidden_message_with_reason(user, attrs, reason);
    let details = match attrs {
        Attributes::Resource(r) => {
            let mut d = json!({"group": r.api_group, "kind": r.resource});
            if !r.name.is_empty() {
                d["name"] = json!(r.name);
            }
            d
        }
        Attributes::NonResource(_) => json!({}),
    };
    status(StatusCode::FORBIDDEN, "Forbidden", &message, Some(details))
}

/// The state of [`filter`]: the server's authentication and the API (whose caches the
/// Node authorizer reads).
#[derive(Clone)]
pub struct Guard {
    pub auth: Arc<Auth>,
    pub api: Arc<Api>,
}

/// The filter in front of the REST routes (see the module documentation).
pub async fn filter(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let auth = &guard.auth;
    let path = req.uri().path().to_owned();
    if is_health_path(&path) || crate::ui::is_public(&path) {
        return next.run(req).await;
    }
    let mut req = req;
    let user = match authenticate(&guard.api, auth, req.headers(), req.extensions()).await {
        Credentials::User(user) => user,
        Credentials::None | Credentials::Invalid | Credentials::ServiceAccount(_) => {
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized", None)
        }
    };
    if auth.mode == Mode::Rbac {
        // As the router reads the query (a query that does not parse is not a watch).
        let query = axum::extract::Query::<HashMap<String, String>>::try_from_uri(req.uri()).ok();
        let watch = rbac::watch_param(query.as_ref().and_then(|q| q.get("watch")).map(String::as_str));
        let attrs = rbac::request_attributes(req.method().as_str(), &path, watch);
        match verdict(&guard.api, auth, &user, &attrs).await {
            Ok(Verdict::Allow) => {}
            Ok(Verdict::Deny(reason)) => return forbidden(&user, &attrs, &reason),
            Err(e) => return e.into_response(),
        }
    }
    // For the reviews (whoami, can-i), which answer about the caller.
    req.extensions_mut().insert(user);
    next.run(req).await
}

/// An authorization's outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused, for this reason (may be empty).
    Deny(String),
}

/// Whether `user` may make the request `attrs` describes: RBAC, and for node agents the
/// Node authorizer beside it and node restriction after ([`crate::nodes`]).
pub async fn verdict(
    api: &Api,
    auth: &Auth,
    user: &UserInfo,
    attrs: &Attributes,
) -> std::result::Result<Verdict, ApiError> {
    if auth.mode != Mode::Rbac {
        return Ok(Verdict::Allow);
    }
    let Some(policy) = auth.policy() else {
        return Err(ApiError::Unavailable(
            "the authorization policy is not loaded yet".into(),
        ));
    };
    let (mut allowed, mut reason) = match policy.authorize(user, attrs) {
        Decision::Allow => (true, String::new()),
        Decision::Deny { reason } => (false, reason),
    };
    let Some(node) = crate::nodes::node_of(user) else {
        return Ok(if allowed { Verdict::Allow } else { Verdict::Deny(reason) });
    };
    let pods = ResourceType::find("", "v1", "pods").expect("invariant: pods are served");
    if !allowed {
        let bound = if crate::nodes::needs_pods(attrs) {
            let (bound, _) = api.caches.get(pods).pods_on_node(node, 0).await?;
            bound
        } else {
            Vec::new()
        };
        let bound: Vec<&Value> = bound.iter().map(|p| p.as_ref()).collect();
        let rules = policy.cluster_role_rules("system:node").unwrap_or(&[]);
        match crate::nodes::authorize(node, attrs, rules, &bound) {
            Decision::Allow => allowed = true,
            Decision::Deny { reason: r } if !r.is_empty() => reason = r,
            Decision::Deny { .. } => {}
        }
    }
    if !allowed {
        return Ok(Verdict::Deny(reason));
    }
    let pod = match attrs {
        Attributes::Resource(r) if r.api_group.is_empty() && r.resource == "pods" && !r.name.is_empty() => api
            .caches
            .get(pods)
            .get(pods.key(Some(&r.namespace), &r.name).as_bytes()),
        _ => None,
    };
    Ok(match crate::nodes::restrict(node, attrs, pod.as_deref()) {
        Ok(()) => Verdict::Allow,
        Err(why) => Verdict::Deny(why),
    })
}

/// [`verdict`] as a result: Ok, or the 403 (with upstream's message) as an error; for
/// the callers that are not the REST filter (the mesh API). Everything is allowed when
/// the server authenticates no one.
pub async fn authorize(api: &Api, user: &UserInfo, attrs: &Attributes) -> std::result::Result<(), ApiError> {
    let Some(auth) = api.config.auth.as_deref() else {
        return Ok(());
    };
    match verdict(api, auth, user, attrs).await? {
        Verdict::Allow => Ok(()),
        Verdict::Deny(reason) => Err(ApiError::Forbidden(rbac::forbidden_message_with_reason(
            user, attrs, &reason,
        ))),
    }
}

// ---- Reviews: what a user may do, asked by the user (kubectl auth can-i, whoami) -------

/// A review's answer from the server's authorizer, the caller and the request body.
pub type Review = fn(Option<&Auth>, &UserInfo, &[u8]) -> std::result::Result<Value, ApiError>;

/// The user a request comes from: the one the filter authenticated (it puts the user in
/// the request's extensions), else anonymous (authentication is off).
pub fn user_of(extensions: &axum::http::Extensions) -> UserInfo {
    extensions
        .get::<UserInfo>()
        .cloned()
        .unwrap_or_else(UserInfo::anonymous)
}

/// What `user` may do per the server's authorizer: RBAC's decision, or allowed when
/// every request is (no authentication, or `AlwaysAllow`).
fn decide(auth: Option<&Auth>, user: &UserInfo, attrs: &Attributes) -> std::result::Result<Decision, ApiError> {
    match auth {
        Some(a) if a.mode == Mode::Rbac => match a.policy() {
            Some(policy) => Ok(policy.authorize(user, attrs)),
            None => Err(ApiError::Unavailable(
                "the authorization policy is not loaded yet".into(),
            )),
        },
        _ => Ok(Decision::Allow),
    }
}

fn review_object(body: &[u8], kind: &str, group: &str) -> std::result::Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body of a {kind} is not JSON: {e}")))?;
    if !obj.is_object() {
        return Err(ApiError::BadRequest(format!("a {kind} must be a JSON object")));
    }
    obj["apiVersion"] = json!(format!("{group}/v1"));
    obj["kind"] = json!(kind);
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["creationTimestamp"] = Value::Null;
    Ok(obj)
}

fn invalid(kind: &str, field: &str, message: &str) -> ApiError {
    ApiError::Invalid {
        kind: kind.into(),
        group: "authorization.k8s.io".into(),
        name: String::new(),
        message: format!("{kind}.authorization.k8s.io \"\" is invalid: {field}: {message}"),
        causes: vec![crate::error::Cause {
            reason: "FieldValueInvalid".into(),
            message: message.into(),
            field: field.into(),
        }],
    }
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews` (`kubectl auth can-i`):
/// the review with `status.allowed` (false, with RBAC's reason when it gave one, as a
/// missing role; RBAC never sets `denied`: it only ever has no opinion).
pub fn self_subject_access_review(
    auth: Option<&Auth>,
    user: &UserInfo,
    body: &[u8],
) -> std::result::Result<Value, ApiError> {
    const KIND: &str = "SelfSubjectAccessReview";
    let mut obj = review_object(body, KIND, "authorization.k8s.io")?;
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let attrs = match (spec.get("resourceAttributes"), spec.get("nonResourceAttributes")) {
        (Some(r), None) if r.is_object() => Attributes::Resource(rbac::ResourceAttributes {
            verb: text(r, "verb"),
            api_group: text(r, "group"),
            api_version: text(r, "version"),
            resource: text(r, "resource"),
            subresource: text(r, "subresource"),
            namespace: text(r, "namespace"),
            name: text(r, "name"),
        }),
        (None, Some(n)) if n.is_object() => Attributes::non_resource(&text(n, "verb"), &text(n, "path")),
        (Some(_), Some(_)) => {
            return Err(invalid(
                KIND,
                "spec.nonResourceAttributes",
                "cannot be specified in combination with resourceAttributes",
            ))
        }
        _ => {
            return Err(invalid(
                KIND,
                "spec.resourceAttributes",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ))
        }
    };
    obj["status"] = match decide(auth, user, &attrs)? {
        Decision::Allow => json!({"allowed": true}),
        Decision::Deny { reason } if reason.is_empty() => json!({"allowed": false}),
        Decision::Deny { reason } => json!({"allowed": false, "reason": reason}),
    };
    Ok(obj)
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectrulesreviews` (`kubectl auth can-i
/// --list`): the rules that apply to the user in `spec.namespace`.
pub fn self_subject_rules_review(
    auth: Option<&Auth>,
    user: &UserInfo,
    body: &[u8],
) -> std::result::Result<Value, ApiError> {
    const KIND: &str = "SelfSubjectRulesReview";
    let mut obj = review_object(body, KIND, "authorization.k8s.io")?;
    let namespace = obj
        .pointer("/spec/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let everything = || {
        json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        })
    };
    obj["status"] = match auth {
        Some(a) if a.mode == Mode::Rbac => {
            let policy = a
                .policy()
                .ok_or_else(|| ApiError::Unavailable("the authorization policy is not loaded yet".into()))?;
            let review = policy.rules_review(user, &namespace);
            let mut status = json!({
                "resourceRules": review.resource_rules,
                "nonResourceRules": review.non_resource_rules,
                "incomplete": review.evaluation_error.is_some(),
            });
            if let Some(e) = review.evaluation_error {
                status["evaluationError"] = json!(e);
            }
            status
        }
        _ => everything(),
    };
    Ok(obj)
}

/// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews` (`kubectl auth whoami`).
pub fn self_subject_review(user: &UserInfo, body: &[u8]) -> std::result::Result<Value, ApiError> {
    let mut obj = review_object(body, "SelfSubjectReview", "authentication.k8s.io")?;
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    obj["status"] = json!({"userInfo": info});
    Ok(obj)
}

/// The RBAC kinds, as the policy is built from them.
const RBAC_KINDS: [&str; 4] = ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"];

/// Keeps `auth`'s policy current from the RBAC watch caches, for as long as it runs:
/// builds it from the caches' objects, then again after every change (changes that come
/// together are taken in one rebuild).
pub async fn follow_policy(api: Arc<Api>, auth: Arc<Auth>) {
    loop {
        let mut subs = Vec::with_capacity(RBAC_KINDS.len());
        let mut objects: Vec<Arc<Value>> = Vec::new();
        let mut failed = false;
        for kind in RBAC_KINDS {
            let rt = ResourceType::by_kind(kind).expect("invariant: the RBAC kinds are served");
            let cache = api.caches.get(rt).clone();
            match cache.subscribe(rt.prefix().as_bytes(), None).await {
                Ok(sub) => {
                    if let crate::cache::Initial::Objects(objs) = &sub.initial {
                        objects.extend(objs.iter().cloned());
                    }
                    subs.push(sub);
                }
                Err(e) => {
                    tracing::warn!(kind, error = %e, "following the RBAC policy");
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            continue;
        }
        auth.set_policy(build_policy(&objects));
        // Any change: build it again from fresh subscriptions (their initial objects
        // are the caches' current state). A subscription that ends (a slow or reset
        // cache) does the same.
        let mut rxs: Vec<_> = subs.iter_mut().map(|s| &mut s.rx).collect();
        wait_for_change(&mut rxs).await;
    }
}

/// Waits until one of the subscriptions delivers an event (progress notes do not count)
/// or ends.
async fn wait_for_change(rxs: &mut [&mut tokio::sync::mpsc::Receiver<crate::cache::Message>]) {
    loop {
        let next = futures::future::select_all(rxs.iter_mut().map(|rx| Box::pin(rx.recv())));
        match next.await.0 {
            Some(crate::cache::Message::Progress(_)) => continue,
            Some(crate::cache::Message::Event(_)) | None => return,
        }
    }
}

/// The policy of these RBAC objects (any of the four kinds, as JSON); an object that
/// does not decode is skipped with a warning (validation keeps them out).
pub fn build_policy(objects: &[Arc<Value>]) -> Policy {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let (mut roles, mut cluster_roles, mut bindings, mut cluster_bindings) = (vec![], vec![], vec![], vec![]);
    for obj in objects {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let value = Value::clone(obj);
        let decoded = match kind {
            "Role" => serde_json::from_value::<Role>(value).map(|o| roles.push(o)),
            "ClusterRole" => serde_json::from_value::<ClusterRole>(value).map(|o| cluster_roles.push(o)),
            "RoleBinding" => serde_json::from_value::<RoleBinding>(value).map(|o| bindings.push(o)),
            "ClusterRoleBinding" => {
                serde_json::from_value::<ClusterRoleBinding>(value).map(|o| cluster_bindings.push(o))
            }
            _ => Ok(()),
        };
        if let Err(e) = decoded {
            tracing::warn!(kind, error = %e, "an RBAC object that does not decode is left out of the policy");
        }
    }
    Policy::new(roles, cluster_roles, bindings, cluster_bindings)
}

/// Creates the default cluster roles and bindings that are missing.
pub async fn bootstrap_policy(api: &Api) -> crate::error::Result<()> {
    let (roles, bindings) = rbac::bootstrap_policy();
    let mut objects: Vec<(&str, Value)> = Vec::new();
    for r in roles {
        objects.push(("ClusterRole", serde_json::to_value(r).map_err(encode_error)?));
    }
    for b in bindings {
        objects.push(("ClusterRoleBinding", serde_json::to_value(b).map_err(encode_error)?));
    }
    for (kind, mut obj) in objects {
        let rt = ResourceType::by_kind(kind).expect("invariant: the RBAC kinds are served");
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        obj["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
        obj["kind"] = json!(kind);
        obj["metadata"]["uid"] = json!(crate::object::new_uid());
        obj["metadata"]["creationTimestamp"] = json!(crate::object::now());
        crate::validation::default_object(kind, &mut obj);
        let stored = crate::object::to_stored(&obj)?;
        if api.storage.create(&rt.key(None, &name), stored, &[]).await?.is_ok() {
            tracing::info!(kind, name, "created a default RBAC object");
        }
    }
    Ok(())
}

fn encode_error(e: serde_json::Error) -> ApiError {
    ApiError::Internal(format!("encoding the default RBAC policy: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_parse_as_upstream_writes_them() {
        let t = Tokens::parse("# admins\n\ntok1,alice,u1,\"system:masters,devs\"\ntok2, bob ,u2\ntok3,carol,u3,ops\n")
            .expect("parses");
        assert_eq!(t.len(), 3);
        let alice = t.user("tok1").expect("alice");
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.uid, "u1");
        assert_eq!(alice.groups, ["system:masters", "devs", GROUP_AUTHENTICATED]);
        let bob = t.user("tok2").expect("bob");
        assert_eq!(
            (bob.name.as_str(), bob.groups.as_slice()),
            ("bob", &[GROUP_AUTHENTICATED.to_owned()][..])
        );
        assert_eq!(t.user("tok3").expect("carol").groups, ["ops", GROUP_AUTHENTICATED]);
        assert!(t.user("nope").is_none());
        assert!(t.user("").is_none());
    }

    #[test]
    fn bad_token_files_are_refused_with_the_line() {
        for (text, want) in [
            ("tok,alice\n", "line 1: expected token,user,uid"),
            ("\n,alice,u1\n", "line 2: the token and the user name must not be empty"),
            ("t,a,u\nt,b,u\n", "line 2: a token given twice"),
            ("t,a,u,\"g1,g2\n", "line 1: an unterminated quoted field"),
        ] {
            let e = Tokens::parse(text).expect_err(text);
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
        assert!(Tokens::parse("").expect("empty").is_empty());
    }

    impl Auth {
        fn authenticate_headers(&self, headers: &axum::http::HeaderMap) -> Credentials {
            self.authenticate(headers, &axum::http::Extensions::new())
        }
    }

    #[test]
    fn a_client_certificate_comes_first_and_names_user_and_groups() {
        let auth = Auth::new(Tokens::parse("tok1,alice,u1\n").expect("tokens"), Mode::Rbac);
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer tok1"));
        let mut ext = axum::http::Extensions::new();
        ext.insert(crate::tls::ClientIdentity {
            user: "bob".into(),
            groups: vec!["devs".into()],
        });
        let Credentials::User(bob) = auth.authenticate(&headers, &ext) else {
            panic!("bob's certificate")
        };
        assert_eq!(bob.name, "bob");
        assert_eq!(bob.groups, ["devs", GROUP_AUTHENTICATED]);
    }

    #[test]
    fn bearer_tokens_authenticate_and_anything_else_does_not() {
        let auth = Auth::new(Tokens::parse("tok1,alice,u1\n").expect("tokens"), Mode::Rbac);
        let headers = |v: Option<&str>| {
            let mut h = axum::http::HeaderMap::new();
            if let Some(v) = v {
                h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).expect("header"));
            }
            h
        };
        let Credentials::User(alice) = auth.authenticate_headers(&headers(Some("Bearer tok1"))) else {
            panic!("alice's token")
        };
        assert_eq!(alice.name, "alice");
        assert!(matches!(
            auth.authenticate_headers(&headers(Some("bearer tok1"))),
            Credentials::User(_)
        ));
        assert_eq!(
            auth.authenticate_headers(&headers(None)),
            Credentials::None,
            "no credentials"
        );
        for bad in ["Bearer wrong", "Basic YTpi", "Bearer", "tok1"] {
            assert_eq!(
                auth.authenticate_headers(&headers(Some(bad))),
                Credentials::Invalid,
                "{bad}"
            );
        }
    }

    #[test]
    fn health_paths_are_exactly_those() {
        for p in ["/healthz", "/livez", "/readyz", "/readyz/etcd", "/healthz/ping"] {
            assert!(is_health_path(p), "{p}");
        }
        for p in ["/healthzz", "/api", "/version", "/", "/readyzfoo"] {
            assert!(!is_health_path(p), "{p}");
        }
    }

    #[test]
    fn reviews_answer_about_the_caller() {
        let alice = UserInfo {
            name: "alice".into(),
            uid: "u1".into(),
            groups: vec![GROUP_AUTHENTICATED.into()],
        };
        let ssar = br#"{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview",
            "spec":{"resourceAttributes":{"namespace":"default","verb":"list","resource":"pods"}}}"#;
        // No authorizer (or AlwaysAllow): everything is allowed.
        let out = self_subject_access_review(None, &alice, ssar).expect("answered");
        assert_eq!(out["status"], json!({"allowed": true}));
        assert_eq!(out["spec"]["resourceAttributes"]["verb"], "list", "the spec comes back");
        // RBAC with the default policy: an authenticated user may not list pods.
        let auth = Auth::new(Tokens::default(), Mode::Rbac);
        assert!(matches!(
            self_subject_access_review(Some(&auth), &alice, ssar),
            Err(ApiError::Unavailable(_))
        ));
        let (roles, bindings) = rbac::bootstrap_policy();
        auth.set_policy(Policy::new(vec![], roles, vec![], bindings));
        let out = self_subject_access_review(Some(&auth), &alice, ssar).expect("answered");
        assert_eq!(out["status"]["allowed"], false);
        let version = br#"{"spec":{"nonResourceAttributes":{"path":"/version","verb":"get"}}}"#;
        let out = self_subject_access_review(Some(&auth), &alice, version).expect("answered");
        assert_eq!(out["status"]["allowed"], true, "system:discovery");
        assert_eq!(out["kind"], "SelfSubjectAccessReview");
        for bad in [
            &br#"{"spec":{}}"#[..],
            br#"{"spec":{"resourceAttributes":{},"nonResourceAttributes":{}}}"#,
        ] {
            assert!(matches!(
                self_subject_access_review(None, &alice, bad),
                Err(ApiError::Invalid { .. })
            ));
        }
        assert!(matches!(
            self_subject_access_review(None, &alice, b"[1]"),
            Err(ApiError::BadRequest(_))
        ));
        // The rules: basic-user's reviews are among them.
        let out =
            self_subject_rules_review(Some(&auth), &alice, br#"{"spec":{"namespace":"default"}}"#).expect("answered");
        let rules = out["status"]["resourceRules"].to_string();
        assert!(rules.contains("selfsubjectaccessreviews"), "{rules}");
        assert_eq!(out["status"]["incomplete"], false);
        // whoami.
        let out = self_subject_review(&alice, b"{}").expect("answered");
        assert_eq!(
            out["status"]["userInfo"],
            json!({"username": "alice", "uid": "u1", "groups": [GROUP_AUTHENTICATED]})
        );
    }

    #[test]
    fn modes_parse_by_upstream_names() {
        assert_eq!("RBAC".parse::<Mode>(), Ok(Mode::Rbac));
        assert_eq!("AlwaysAllow".parse::<Mode>(), Ok(Mode::AlwaysAllow));
        assert!("rbac".parse::<Mode>().is_err());
    }
}
