//! RBAC authorization: whether one user may make one request, decided from the cluster's
//! Roles, ClusterRoles, RoleBindings and ClusterRoleBindings the way upstream's RBAC
//! authorizer decides it (`plugin/pkg/auth/authorizer/rbac/rbac.go`, the rule resolver in
//! `pkg/registry/rbac/validation/rule.go`, the matching helpers in
//! `pkg/apis/rbac/v1/evaluation_helpers.go`). Pure: no I/O, no async; the caller builds a
//! [`Policy`] snapshot from the store and asks it.
//!
//! # Requests
//!
//! [`request_attributes`] turns an HTTP method and URL path into [`Attributes`] as upstream's
//! `RequestInfoFactory` does: `/api/<version>/...` (core) and `/apis/<group>/<version>/...`
//! are resource requests, `namespaces/<ns>/<resource>[/<name>[/<subresource>]]` is
//! namespaced, `<resource>[/<name>[/<subresource>]]` cluster-scoped; the Namespace object
//! itself (`namespaces/<name>`, and its `status` and `finalize` subresources) has the
//! namespace attribute `<name>`, as upstream sets it. The verb is `create` (POST), `get`
//! (GET, HEAD) or `list`/`watch` on a collection, `update` (PUT), `patch` (PATCH), `delete`
//! or `deletecollection` (DELETE on a collection); the legacy `watch/` and `proxy/` path
//! prefixes set `watch` and `proxy`. Every other path (`/version`, `/healthz`, `/api`,
//! `/apis/<group>`, `/openapi/v2`, ...) is a non-resource request whose verb is the
//! lower-cased HTTP method (`get`, `post`, `head`, ...).
//!
//! # Rules
//!
//! A [`PolicyRule`] allows a resource request when each of these holds ([`rule_allows`]):
//!
//! * `verbs` holds `*` or the verb;
//! * `apiGroups` holds `*` or the group (core is `""`);
//! * `resources` holds `*`, the resource (no subresource requested), `resource/subresource`,
//!   or `*/subresource`; a rule for `pods` does not cover `pods/log`, and `pods/*` means
//!   nothing special;
//! * `resourceNames` is empty, or holds the request's name. A request without a name (a
//!   list, a watch of a collection, a create) never matches a rule with resource names.
//!
//! and a non-resource request when `verbs` matches and `nonResourceURLs` holds `*`, the
//! path, or a prefix of it written with a trailing `*` (`/apis/*` covers `/apis/` and
//! `/apis/apps`, not `/apis`).
//!
//! # Bindings
//!
//! [`Policy::authorize`] allows a request when any rule granted to the user allows it,
//! and denies it otherwise (RBAC only ever adds permissions):
//!
//! * a ClusterRoleBinding whose subjects match the user grants its ClusterRole's rules
//!   everywhere: for resource requests in any namespace, at the cluster scope, and for
//!   non-resource URLs;
//! * a RoleBinding grants its Role's (same namespace) or ClusterRole's rules for requests
//!   whose namespace attribute is the binding's namespace: never a non-resource URL, never a
//!   cluster-scoped or all-namespaces request (their namespace attribute is empty). As
//!   upstream, the Namespace object itself is the one exception: `get namespaces/<ns>`
//!   carries the namespace `<ns>`, so a RoleBinding there can grant it;
//! * a subject matches when it is a `User` of the user's name, a `Group` the user is in,
//!   or a `ServiceAccount` whose username `system:serviceaccount:<namespace>:<name>` is the
//!   user's name. An empty subject namespace means the binding's namespace for a
//!   RoleBinding, and matches nobody in a ClusterRoleBinding. Other kinds match nobody;
//! * a binding whose role does not exist grants nothing. As upstream, the deny reason then
//!   names the missing role (`RBAC: clusterrole.rbac.authorization.k8s.io "x" not found`,
//!   several in `[...]`), and the 403 message ends with it.
//!
//! ClusterRoles with an `aggregationRule` get the rules of every other ClusterRole whose
//! labels one of its `clusterRoleSelectors` selects (`matchLabels` and `matchExpressions`
//! with `In`, `NotIn`, `Exists`, `DoesNotExist`, through [`crate::selector`]), in selector
//! order, then by role name, without duplicates: what upstream's ClusterRole aggregation
//! controller writes into the role's `rules`. Here it is computed when the [`Policy`] is
//! built, to its fixed point, so aggregation through aggregated roles (`admin` ⊇ `edit` ⊇
//! `view`) and cycles work; the rules stored in an aggregated role are ignored, as the
//! controller overwrites them. A selector upstream would reject (bad key, bad operator)
//! selects nothing.
//!
//! # Cost
//!
//! Bindings are indexed by subject when the [`Policy`] is built (users and service-account
//! usernames in one map, groups in another; per namespace for RoleBindings), and role
//! references are resolved then too. One decision therefore costs one hash lookup for the
//! user's name and one per group, then the rules of the bindings that name the user: it
//! never walks bindings of other users. Building is linear in the objects, plus the
//! aggregation: at most (aggregated roles + 1) passes over the aggregated roles' sources.
//!
//! # Bounds
//!
//! The Policy holds whatever the store holds: every object is already bounded by the
//! request body limit ([`crate::REQUEST_BYTES_MAX`]), so there is no count limit here.
//! The one thing that can grow beyond its input is aggregation (every aggregated role may
//! copy every rule of every other role), so an aggregated ClusterRole collects at most
//! [`AGGREGATED_RULES_MAX`] rules; past that, rules are left out (a warning is logged),
//! which can only deny more, never allow more.
//!
//! # Forbidden
//!
//! [`forbidden_message`] is upstream's 403 `Status` message
//! (`responsewriters.Forbidden` wrapping `forbiddenMessage` in `NewForbidden`), e.g.
//! `pods "web" is forbidden: User "bob" cannot get resource "pods" in API group "" in the
//! namespace "default"`; [`forbidden_message_with_reason`] appends a non-empty deny
//! reason after `: `, as upstream does.
//!
//! # Default policy
//!
//! [`bootstrap_policy`] returns the default ClusterRoles and ClusterRoleBindings upstream
//! creates at startup (a subset: those Capstan's clients need), labelled
//! `kubernetes.io/bootstrapping: rbac-defaults` and annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "true"`. `admin`, `edit` and `view` are
//! aggregated roles as upstream, filled from `system:aggregate-to-{admin,edit,view}`,
//! whose rules are upstream's (they also name resource types Capstan does not serve, which
//! is harmless).
//!
//! # Deliberately left out
//!
//! * The Node authorizer, which is [`crate::nodes`] (beside this one; the default
//!   `system:node` binding has no subjects, as upstream's).
//! * Escalation checks on writes of roles and bindings (`escalate`, `bind`), webhook and
//!   ABAC modes, impersonation, and the namespaced default Roles and RoleBindings upstream
//!   creates in `kube-system` (leader-locking roles, the authentication reader).
//! * The name a `list`/`watch` gets from a `fieldSelector=metadata.name=<x>` (newer
//!   upstream fills it in for authorization); [`request_attributes`] leaves it empty.
//! * Go's `fmt.Errorf` mangling of a `%` in a forbidden message (upstream passes the text
//!   as a format string); the text is kept as it is.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as MetaLabelSelector, ObjectMeta};
use serde_json::{Map, Value};

use crate::selector::LabelSelector;
use crate::validation::go_quote;

/// Rules one aggregated ClusterRole collects, at most (see the module doc).
pub const AGGREGATED_RULES_MAX: usize = 10_000;

/// `*` in `verbs`.
pub const VERB_ALL: &str = "*";
/// `*` in `apiGroups`.
pub const API_GROUP_ALL: &str = "*";
/// `*` in `resources`.
pub const RESOURCE_ALL: &str = "*";
/// `*` in `nonResourceURLs`.
pub const NON_RESOURCE_ALL: &str = "*";

/// The API group of RBAC objects, and of `User` and `Group` subjects.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The user of a request without credentials.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group every authenticated user is in.
pub const ALL_AUTHENTICATED: &str = "system:authenticated";
/// The group of [`ANONYMOUS_USER`].
pub const ALL_UNAUTHENTICATED: &str = "system:unauthenticated";
/// The group bound to `cluster-admin`.
pub const SYSTEM_MASTERS: &str = "system:masters";
/// The group of node agents (kubelets).
pub const NODES_GROUP: &str = "system:nodes";
/// The group bound to `system:monitoring`.
pub const MONITORING_GROUP: &str = "system:monitoring";
/// The scheduler's user.
pub const KUBE_SCHEDULER_USER: &str = "system:kube-scheduler";
/// The controller manager's user.
pub const KUBE_CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";
/// kube-proxy's user.
pub const KUBE_PROXY_USER: &str = "system:kube-proxy";
/// A service account's username is this, its namespace, `:`, its name.
pub const SERVICE_ACCOUNT_USERNAME_PREFIX: &str = "system:serviceaccount:";

/// The label every default RBAC object carries (key, value).
pub const BOOTSTRAP_LABEL: (&str, &str) = ("kubernetes.io/bootstrapping", "rbac-defaults");
/// The annotation that lets the apiserver reconcile a default object at startup.
pub const AUTOUPDATE_ANNOTATION: &str = "rbac.authorization.kubernetes.io/autoupdate";
/// A ClusterRole with this label set to `"true"` is aggregated into `admin`.
pub const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
/// ... into `edit`.
pub const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
/// ... into `view`.
pub const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

/// The authenticated user of a request (upstream's `user.Info`, without `extra`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    /// Includes [`ALL_AUTHENTICATED`] for an authenticated user, [`ALL_UNAUTHENTICATED`]
    /// for the anonymous one: the authenticator adds them, this module does not.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The user of a request without credentials.
    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: ANONYMOUS_USER.to_string(),
            uid: String::new(),
            groups: vec![ALL_UNAUTHENTICATED.to_string()],
        }
    }
}

/// A request on an API resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceAttributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// `proxy`, or another verb a rule may name (`impersonate`, `bind`, ...).
    pub verb: String,
    /// `""` for core.
    pub api_group: String,
    /// Not used for matching; kept for the 403 `Status`.
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    /// Empty for a cluster-scoped resource and for a request across all namespaces.
    pub namespace: String,
    /// Empty for a collection.
    pub name: String,
}

/// A request on a URL that is not an API resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NonResourceAttributes {
    /// The lower-cased HTTP method.
    pub verb: String,
    pub path: String,
}

/// What one request asks to do (upstream's `authorizer.Attributes`, without the user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    Resource(ResourceAttributes),
    NonResource(NonResourceAttributes),
}

impl Attributes {
    /// A non-resource request.
    pub fn non_resource(verb: &str, path: &str) -> Attributes {
        Attributes::NonResource(NonResourceAttributes {
            verb: verb.to_string(),
            path: path.to_string(),
        })
    }

    pub fn verb(&self) -> &str {
        match self {
            Attributes::Resource(r) => &r.verb,
            Attributes::NonResource(n) => &n.verb,
        }
    }

    /// The namespace the RoleBindings of which apply; empty for non-resource requests.
    pub fn namespace(&self) -> &str {
        match self {
            Attributes::Resource(r) => &r.namespace,
            Attributes::NonResource(_) => "",
        }
    }

    pub fn is_resource_request(&self) -> bool {
        matches!(self, Attributes::Resource(_))
    }
}

/// The outcome of [`Policy::authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// `reason` is what upstream appends to the 403 message: empty, or the role references
    /// that could not be resolved (`RBAC: clusterrole.rbac.authorization.k8s.io "x" not found`).
    Deny {
        reason: String,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// Upstream's reading of the `watch` query parameter: present and not `false` or `0`
/// (any case). For the `query_watch` argument of [`request_attributes`].
pub fn watch_param(value: Option<&str>) -> bool {
    match value {
        None => false,
        Some(v) => !matches!(v.to_ascii_lowercase().as_str(), "false" | "0"),
    }
}

/// The attributes of a request, as upstream's `RequestInfoFactory` (API prefixes `api`,
/// groupless, and `apis`) derives them from the method and the (decoded) URL path.
/// `query_watch` is the `watch` query parameter read as [`watch_param`] does; it only turns
/// a `list` into a `watch`.
///
/// Upstream fails the request (500) for a bare `/api/v1/watch` or `/api/v1/proxy`; here it
/// is a resource request with that verb and no resource, which only a `*` resource rule
/// allows (the router then answers 404).
pub fn request_attributes(method: &str, path: &str, query_watch: bool) -> Attributes {
    let non_resource = || Attributes::non_resource(&method.to_lowercase(), path);
    let trimmed = path.trim_matches('/');
    let parts: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    };
    if parts.len() < 3 {
        return non_resource();
    }
    let (api_group, rest) = match parts[0] {
        "api" => ("", &parts[1..]),
        // One more part for the group: `/apis/<group>/<version>` alone is discovery.
        "apis" if parts.len() >= 4 => (parts[1], &parts[2..]),
        _ => return non_resource(),
    };
    let api_version = rest[0];
    // At least one part is left: checked by the lengths above.
    let mut rest = &rest[1..];
    let mut verb = match rest[0] {
        special @ ("watch" | "proxy") => {
            rest = &rest[1..];
            special
        }
        _ => match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        },
    };
    let mut namespace = "";
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        namespace = rest[1];
        // `namespaces/<ns>/status` and `/finalize` are the Namespace's own subresources;
        // anything else after the namespace is a namespaced resource.
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    let resource = rest.first().copied().unwrap_or("");
    let name = rest.get(1).copied().unwrap_or("");
    let subresource = match rest.get(2) {
        Some(sub) if verb != "proxy" => *sub,
        _ => "",
    };
    if name.is_empty() && verb == "get" {
        verb = if query_watch { "watch" } else { "list" };
    }
    if name.is_empty() && verb == "delete" {
        verb = "deletecollection";
    }
    Attributes::Resource(ResourceAttributes {
        verb: verb.to_string(),
        api_group: api_group.to_string(),
        api_version: api_version.to_string(),
        resource: resource.to_string(),
        subresource: subresource.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

fn strings(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or(&[])
}

fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == VERB_ALL || v == verb)
}

fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    strings(&rule.api_groups)
        .iter()
        .any(|g| g == API_GROUP_ALL || g == group)
}

/// `combined` is `resource` or `resource/subresource`.
fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    strings(&rule.resources).iter().any(|r| {
        r == RESOURCE_ALL || r == combined || (!subresource.is_empty() && r.strip_prefix("*/") == Some(subresource))
    })
}

fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    let names = strings(&rule.resource_names);
    names.is_empty() || names.iter().any(|n| n == name)
}

fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    strings(&rule.non_resource_urls).iter().any(|u| {
        u == NON_RESOURCE_ALL
            || u == path
            // Upstream trims every trailing `*` (`TrimRight`), not just one.
            || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
    })
}

/// Whether `rule` allows the request (upstream's `RuleAllows`).
pub fn rule_allows(attrs: &Attributes, rule: &PolicyRule) -> bool {
    match attrs {
        Attributes::Resource(r) => {
            let matches_resource = if r.subresource.is_empty() {
                resource_matches(rule, &r.resource, "")
            } else {
                resource_matches(rule, &format!("{}/{}", r.resource, r.subresource), &r.subresource)
            };
            verb_matches(rule, &r.verb)
                && api_group_matches(rule, &r.api_group)
                && matches_resource
                && resource_name_matches(rule, &r.name)
        }
        Attributes::NonResource(n) => verb_matches(rule, &n.verb) && non_resource_url_matches(rule, &n.path),
    }
}

/// The rules a binding grants, resolved when the [`Policy`] is built, or the error
/// upstream's resolver reports for its role reference.
type Grant = Result<Arc<[PolicyRule]>, String>;

/// The bindings of one scope (the cluster, or one namespace), indexed by subject.
#[derive(Debug, Default)]
struct Scope {
    /// In binding name order: the order rules are visited and listed in.
    grants: Vec<Grant>,
    /// By username: `User` subjects, and `ServiceAccount` subjects as their username.
    by_user: HashMap<String, Vec<usize>>,
    by_group: HashMap<String, Vec<usize>>,
}

impl Scope {
    /// `namespace` is the binding's: empty for a ClusterRoleBinding.
    fn add(&mut self, namespace: &str, subjects: &[Subject], grant: Grant) {
        let i = self.grants.len();
        self.grants.push(grant);
        for subject in subjects {
            match subject.kind.as_str() {
                "User" => self.by_user.entry(subject.name.clone()).or_default().push(i),
                "Group" => self.by_group.entry(subject.name.clone()).or_default().push(i),
                "ServiceAccount" => {
                    let sa_namespace = match subject.namespace.as_deref() {
                        Some(ns) if !ns.is_empty() => ns,
                        _ => namespace,
                    };
                    // Upstream: a service account subject without any namespace matches nobody.
                    if sa_namespace.is_empty() {
                        continue;
                    }
                    let username = format!("{SERVICE_ACCOUNT_USERNAME_PREFIX}{sa_namespace}:{}", subject.name);
                    self.by_user.entry(username).or_default().push(i);
                }
                _ => {}
            }
        }
    }

    /// The grants of the bindings that name the user, each once, in binding order.
    fn applicable<'a>(&'a self, user: &UserInfo) -> impl Iterator<Item = &'a Grant> + 'a {
        let mut indices: Vec<usize> = Vec::new();
        if let Some(v) = self.by_user.get(&user.name) {
            indices.extend_from_slice(v);
        }
        for group in &user.groups {
            if let Some(v) = self.by_group.get(group) {
                indices.extend_from_slice(v);
            }
        }
        indices.sort_unstable();
        indices.dedup();
        indices.into_iter().filter_map(move |i| self.grants.get(i))
    }
}

/// What [`Policy::rules_review`] finds for a user in a namespace (a SelfSubjectRulesReview's
/// status).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RulesReview {
    /// Rules with resources, carrying only verbs, groups, resources and resource names.
    pub resource_rules: Vec<PolicyRule>,
    /// Rules with non-resource URLs, carrying only verbs and URLs.
    pub non_resource_rules: Vec<PolicyRule>,
    /// Upstream's `evaluationError`: the role references that could not be resolved.
    pub evaluation_error: Option<String>,
}

/// A snapshot of every Role, ClusterRole, RoleBinding and ClusterRoleBinding, ready to
/// answer authorization questions. Immutable: build a new one when an object changes.
/// The default value holds nothing and denies everything.
#[derive(Debug, Default)]
pub struct Policy {
    /// The effective rules of every ClusterRole (aggregated ones aggregated).
    cluster_roles: HashMap<String, Arc<[PolicyRule]>>,
    cluster: Scope,
    namespaces: HashMap<String, Scope>,
}

fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("")
}

impl Policy {
    /// Builds the snapshot: aggregates ClusterRoles, resolves every binding's role and
    /// indexes bindings by subject. Objects with the same name (and namespace): the last wins
    /// for roles; bindings are all kept.
    pub fn new(
        roles: Vec<Role>,
        cluster_roles: Vec<ClusterRole>,
        role_bindings: Vec<RoleBinding>,
        cluster_role_bindings: Vec<ClusterRoleBinding>,
    ) -> Policy {
        let cluster_roles = aggregate_cluster_roles(cluster_roles);
        let mut roles_by_key: HashMap<(String, String), Arc<[PolicyRule]>> = HashMap::new();
        for role in roles {
            let key = (
                namespace_of(&role.metadata).to_string(),
                name_of(&role.metadata).to_string(),
            );
            roles_by_key.insert(key, Arc::from(role.rules.unwrap_or_default()));
        }
        let resolve = |role_ref: &RoleRef, namespace: &str| -> Grant {
            match role_ref.kind.as_str() {
                "Role" => roles_by_key
                    .get(&(namespace.to_string(), role_ref.name.clone()))
                    .cloned()
                    .ok_or_else(|| format!("role.{RBAC_GROUP} {} not found", go_quote(&role_ref.name))),
                "ClusterRole" => cluster_roles
                    .get(&role_ref.name)
                    .cloned()
                    .ok_or_else(|| format!("clusterrole.{RBAC_GROUP} {} not found", go_quote(&role_ref.name))),
                other => Err(format!("unsupported role reference kind: {}", go_quote(other))),
            }
        };

        let mut cluster_role_bindings = cluster_role_bindings;
        cluster_role_bindings.sort_by(|a, b| name_of(&a.metadata).cmp(name_of(&b.metadata)));
        let mut cluster = Scope::default();
        for binding in &cluster_role_bindings {
            let grant = resolve(&binding.role_ref, "");
            cluster.add("", binding.subjects.as_deref().unwrap_or(&[]), grant);
        }

        let mut role_bindings = role_bindings;
        role_bindings.sort_by(|a, b| name_of(&a.metadata).cmp(name_of(&b.metadata)));
        let mut namespaces: HashMap<String, Scope> = HashMap::new();
        for binding in &role_bindings {
            let namespace = namespace_of(&binding.metadata);
            // Consulted only for requests with a namespace: one without can never apply.
            if namespace.is_empty() {
                continue;
            }
            let grant = resolve(&binding.role_ref, namespace);
            namespaces.entry(namespace.to_string()).or_default().add(
                namespace,
                binding.subjects.as_deref().unwrap_or(&[]),
                grant,
            );
        }

        Policy {
            cluster_roles,
            cluster,
            namespaces,
        }
    }

    /// The effective rules of a ClusterRole: for an aggregated one, the aggregated rules
    /// (what upstream's controller writes into its `rules`).
    pub fn cluster_role_rules(&self, name: &str) -> Option<&[PolicyRule]> {
        self.cluster_roles.get(name).map(|r| &r[..])
    }

    /// The grants of every binding that applies to `user` in `namespace`: ClusterRoleBindings
    /// first, then (for a non-empty namespace) that namespace's RoleBindings, each by name.
    fn grants<'a>(&'a self, user: &'a UserInfo, namespace: &str) -> impl Iterator<Item = &'a Grant> + 'a {
        let local = match namespace {
            "" => None,
            ns => self.namespaces.get(ns),
        };
        self.cluster
            .applicable(user)
            .chain(local.into_iter().flat_map(move |scope| scope.applicable(user)))
    }

    /// Whether `user` may do what `attrs` describes.
    pub fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        let mut errors: Vec<&str> = Vec::new();
        for grant in self.grants(user, attrs.namespace()) {
            match grant {
                Ok(rules) => {
                    if rules.iter().any(|rule| rule_allows(attrs, rule)) {
                        return Decision::Allow;
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        let reason = if errors.is_empty() {
            String::new()
        } else {
            format!("RBAC: {}", aggregate_errors(&errors))
        };
        Decision::Deny { reason }
    }

    /// Every rule that applies to `user` in `namespace` (cluster-wide ones only for an empty
    /// namespace), split as upstream's `RulesFor`: (resource rules, non-resource rules). A
    /// rule with both resources and URLs lands in both lists.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, Vec<PolicyRule>) {
        let review = self.rules_review(user, namespace);
        (review.resource_rules, review.non_resource_rules)
    }

    /// [`rules_for`](Self::rules_for) with the evaluation error a SelfSubjectRulesReview reports.
    pub fn rules_review(&self, user: &UserInfo, namespace: &str) -> RulesReview {
        let mut review = RulesReview::default();
        let mut errors: Vec<&str> = Vec::new();
        for grant in self.grants(user, namespace) {
            match grant {
                Ok(rules) => {
                    for rule in rules.iter() {
                        if !strings(&rule.resources).is_empty() {
                            review.resource_rules.push(PolicyRule {
                                verbs: rule.verbs.clone(),
                                api_groups: rule.api_groups.clone(),
                                resources: rule.resources.clone(),
                                resource_names: rule.resource_names.clone(),
                                non_resource_urls: None,
                            });
                        }
                        if !strings(&rule.non_resource_urls).is_empty() {
                            review.non_resource_rules.push(PolicyRule {
                                verbs: rule.verbs.clone(),
                                non_resource_urls: rule.non_resource_urls.clone(),
                                ..PolicyRule::default()
                            });
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            review.evaluation_error = Some(aggregate_errors(&errors));
        }
        review
    }
}

/// Upstream's `utilerrors.NewAggregate(errs).Error()`: duplicates dropped, one message as
/// it is, several in `[a, b]`.
fn aggregate_errors(errors: &[&str]) -> String {
    let mut unique: Vec<&str> = Vec::new();
    for e in errors {
        if !unique.contains(e) {
            unique.push(e);
        }
    }
    match unique.as_slice() {
        [one] => (*one).to_string(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// A rule's identity for de-duplication: upstream compares with `Semantic.DeepEqual`, to
/// which a missing list and an empty one are the same.
type RuleKey<'a> = (&'a [String], &'a [String], &'a [String], &'a [String], &'a [String]);

fn rule_key(rule: &PolicyRule) -> RuleKey<'_> {
    (
        &rule.verbs,
        strings(&rule.api_groups),
        strings(&rule.resources),
        strings(&rule.resource_names),
        strings(&rule.non_resource_urls),
    )
}

/// The ClusterRoles an aggregation rule draws from, in upstream's order: selector by
/// selector, each selector's matches by name, never the role itself (`me`).
fn aggregation_sources(rule: &AggregationRule, me: usize, labels: &[Map<String, Value>]) -> Vec<usize> {
    let mut sources = Vec::new();
    for selector in rule.cluster_role_selectors.as_deref().unwrap_or(&[]) {
        let Some(selector) = label_selector(selector) else {
            continue;
        };
        for (j, role_labels) in labels.iter().enumerate() {
            if j != me && selector.matches(Some(role_labels)) {
                sources.push(j);
            }
        }
    }
    sources
}

/// A selector of an aggregation rule; None for one upstream would reject.
fn label_selector(selector: &MetaLabelSelector) -> Option<LabelSelector> {
    let json = serde_json::to_value(selector).ok()?;
    LabelSelector::from_json(&json).ok()
}

/// The effective rules of every ClusterRole, by name (see the module doc).
fn aggregate_cluster_roles(cluster_roles: Vec<ClusterRole>) -> HashMap<String, Arc<[PolicyRule]>> {
    // By name: the aggregation controller takes matching roles in name order.
    let mut by_name: BTreeMap<String, ClusterRole> = BTreeMap::new();
    for role in cluster_roles {
        by_name.insert(name_of(&role.metadata).to_string(), role);
    }
    let roles: Vec<(String, ClusterRole)> = by_name.into_iter().collect();
    let labels: Vec<Map<String, Value>> = roles
        .iter()
        .map(|(_, role)| {
            role.metadata
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect()
        })
        .collect();
    let sources: Vec<Option<Vec<usize>>> = roles
        .iter()
        .enumerate()
        .map(|(i, (_, role))| {
            role.aggregation_rule
                .as_ref()
                .map(|rule| aggregation_sources(rule, i, &labels))
        })
        .collect();
    // The least fixed point: aggregated roles start empty, plain roles keep their rules.
    let mut effective: Vec<Vec<PolicyRule>> = roles
        .iter()
        .zip(&sources)
        .map(|((_, role), from)| match from {
            Some(_) => Vec::new(),
            None => role.rules.clone().unwrap_or_default(),
        })
        .collect();
    // A rule travels one aggregation step per pass, and no path through aggregated roles
    // is longer than their count, so this many passes reach the fixed point.
    let aggregated = sources.iter().filter(|s| s.is_some()).count();
    for _ in 0..=aggregated {
        let next: Vec<Option<Vec<PolicyRule>>> = sources
            .iter()
            .map(|from| from.as_ref().map(|from| collect_rules(from, &effective)))
            .collect();
        let mut changed = false;
        for (current, next) in effective.iter_mut().zip(next) {
            if let Some(next) = next {
                if *current != next {
                    *current = next;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut out = HashMap::with_capacity(roles.len());
    for (((name, _), from), rules) in roles.into_iter().zip(&sources).zip(effective) {
        if from.is_some() && rules.len() >= AGGREGATED_RULES_MAX {
            tracing::warn!(
                cluster_role = %name,
                limit = AGGREGATED_RULES_MAX,
                "an aggregated ClusterRole reached the rule limit: further rules are left out"
            );
        }
        out.insert(name, Arc::from(rules));
    }
    out
}

/// The rules of `from`'s roles in order, without duplicates, at most [`AGGREGATED_RULES_MAX`].
fn collect_rules(from: &[usize], effective: &[Vec<PolicyRule>]) -> Vec<PolicyRule> {
    let mut seen: HashSet<RuleKey<'_>> = HashSet::new();
    let mut out = Vec::new();
    for &j in from {
        for rule in effective.get(j).into_iter().flatten() {
            if out.len() >= AGGREGATED_RULES_MAX {
                return out;
            }
            if seen.insert(rule_key(rule)) {
                out.push(rule.clone());
            }
        }
    }
    out
}

/// Upstream's `sanitizer`: a forbidden message must not look like HTML.
fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Upstream's `forbiddenMessage`: what the user cannot do.
fn forbidden_detail(user: &UserInfo, attrs: &Attributes) -> String {
    let username = go_quote(&user.name);
    match attrs {
        Attributes::NonResource(n) => format!("User {username} cannot {} path {}", n.verb, go_quote(&n.path)),
        Attributes::Resource(r) => {
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {}", go_quote(&r.namespace))
            };
            format!(
                "User {username} cannot {} resource {} in API group {} {scope}",
                r.verb,
                go_quote(&resource),
                go_quote(&r.api_group)
            )
        }
    }
}

/// The message of upstream's 403 `Status` for a denied request (`responsewriters.Forbidden`
/// with an empty reason): `apierrors.NewForbidden(<group resource>, <name>, forbiddenMessage)`.
///
/// * `pods "web" is forbidden: User "bob" cannot get resource "pods" in API group "" in the namespace "default"`
/// * `deployments.apps is forbidden: User "bob" cannot list resource "deployments" in API group "apps" at the cluster scope`
/// * `forbidden: User "bob" cannot get path "/metrics"`
///
/// The `Status` details are the request's group, its resource as `kind` (without the
/// subresource) and its name.
pub fn forbidden_message(user: &UserInfo, attrs: &Attributes) -> String {
    let detail = sanitize(&forbidden_detail(user, attrs));
    let (group, resource, name) = match attrs {
        Attributes::Resource(r) => (r.api_group.as_str(), r.resource.as_str(), r.name.as_str()),
        Attributes::NonResource(_) => ("", "", ""),
    };
    if group.is_empty() && resource.is_empty() {
        return format!("forbidden: {detail}");
    }
    let group_resource = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    if name.is_empty() {
        format!("{group_resource} is forbidden: {detail}")
    } else {
        format!("{group_resource} {} is forbidden: {detail}", go_quote(name))
    }
}

/// [`forbidden_message`] with a deny reason ([`Decision::Deny`]) appended as upstream does
/// (`<message>: <reason>`; nothing for an empty reason).
pub fn forbidden_message_with_reason(user: &UserInfo, attrs: &Attributes, reason: &str) -> String {
    let message = forbidden_message(user, attrs);
    if reason.is_empty() {
        message
    } else {
        format!("{message}: {reason}")
    }
}

// ---- The default policy ----------------------------------------------------------------

const READ: &[&str] = &["get", "list", "watch"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];
/// Upstream's `Write` in the aggregate-to-edit role: everything but reading.
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

fn sorted(items: &[&str]) -> Vec<String> {
    // Upstream's rule builder sorts every list; doing so keeps `kubectl get -o yaml` alike.
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: sorted(verbs),
        api_groups: Some(sorted(groups)),
        resources: Some(sorted(resources)),
        resource_names: None,
        non_resource_urls: None,
    }
}

fn named_rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
    PolicyRule {
        resource_names: Some(sorted(names)),
        ..rule(verbs, groups, resources)
    }
}

fn url_rule(verbs: &[&str], urls: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: sorted(verbs),
        non_resource_urls: Some(sorted(urls)),
        ..PolicyRule::default()
    }
}

/// Metadata of a default object: its name, the bootstrapping label plus `extra_labels`
/// (each set to `"true"`), and the autoupdate annotation.
fn bootstrap_meta(name: &str, extra_labels: &[&str]) -> ObjectMeta {
    let mut labels = BTreeMap::new();
    labels.insert(BOOTSTRAP_LABEL.0.to_string(), BOOTSTRAP_LABEL.1.to_string());
    for label in extra_labels {
        labels.insert(label.to_string(), "true".to_string());
    }
    let mut annotations = BTreeMap::new();
    annotations.insert(AUTOUPDATE_ANNOTATION.to_string(), "true".to_string());
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(labels),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    }
}

fn cluster_role(name: &str, extra_labels: &[&str], rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: bootstrap_meta(name, extra_labels),
        rules: Some(rules),
        aggregation_rule: None,
    }
}

/// An aggregated role: no rules of its own, those of every role labelled `aggregate_label`.
fn aggregated_role(name: &str, extra_labels: &[&str], aggregate_label: &str) -> ClusterRole {
    let mut match_labels = BTreeMap::new();
    match_labels.insert(aggregate_label.to_string(), "true".to_string());
    ClusterRole {
        metadata: bootstrap_meta(name, extra_labels),
        rules: None,
        aggregation_rule: Some(AggregationRule {
            cluster_role_selectors: Some(vec![MetaLabelSelector {
                match_labels: Some(match_labels),
                match_expressions: None,
            }]),
        }),
    }
}

fn subject(kind: &str, name: &str) -> Subject {
    Subject {
        api_group: Some(RBAC_GROUP.to_string()),
        kind: kind.to_string(),
        name: name.to_string(),
        namespace: None,
    }
}

fn cluster_binding(role: &str, subjects: Vec<Subject>) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: bootstrap_meta(role, &[]),
        role_ref: RoleRef {
            api_group: RBAC_GROUP.to_string(),
            kind: "ClusterRole".to_string(),
            name: role.to_string(),
        },
        subjects: Some(subjects),
    }
}

/// The default ClusterRoles and ClusterRoleBindings (upstream's bootstrap policy, the part
/// Capstan's clients need; see the module doc). Rules are upstream's unless a comment says
/// otherwise.
pub fn bootstrap_policy() -> (Vec<ClusterRole>, Vec<ClusterRoleBinding>) {
    let core = &[""];
    let roles = vec![
        // The root role: anything, anywhere, including every non-resource URL.
        cluster_role(
            "cluster-admin",
            &[],
            vec![rule(&["*"], &["*"], &["*"]), url_rule(&["*"], &["*"])],
        ),
        // The user-facing roles, as upstream: filled by aggregation, each one
        // aggregated into the next (view into edit, edit into admin).
        aggregated_role("admin", &[], AGGREGATE_TO_ADMIN),
        aggregated_role("edit", &[AGGREGATE_TO_ADMIN], AGGREGATE_TO_EDIT),
        aggregated_role("view", &[AGGREGATE_TO_EDIT], AGGREGATE_TO_VIEW),
        cluster_role(
            "system:aggregate-to-admin",
            &[AGGREGATE_TO_ADMIN],
            vec![
                rule(&["create"], &["authorization.k8s.io"], &["localsubjectaccessreviews"]),
                rule(READ_WRITE, &[RBAC_GROUP], &["roles", "rolebindings"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &[AGGREGATE_TO_EDIT],
            vec![
                rule(
                    READ,
                    core,
                    &[
                        "pods/attach",
                        "pods/proxy",
                        "pods/exec",
                        "pods/portforward",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                rule(&["impersonate"], core, &["serviceaccounts"]),
                rule(
                    WRITE,
                    core,
                    &["pods", "pods/attach", "pods/proxy", "pods/exec", "pods/portforward"],
                ),
                rule(&["create"], core, &["pods/eviction"]),
                rule(
                    WRITE,
                    core,
                    &[
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                        "persistentvolumeclaims",
                        "configmaps",
                        "secrets",
                        "events",
                    ],
                ),
                rule(&["create"], core, &["serviceaccounts/token"]),
                rule(
                    WRITE,
                    &["apps"],
                    &[
                        "statefulsets",
                        "statefulsets/scale",
                        "daemonsets",
                        "deployments",
                        "deployments/scale",
                        "deployments/rollback",
                        "replicasets",
                        "replicasets/scale",
                    ],
                ),
                rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(WRITE, &["batch"], &["jobs", "cronjobs"]),
                rule(
                    WRITE,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/scale",
                        "deployments/rollback",
                        "ingresses",
                        "replicasets",
                        "replicasets/scale",
                        "replicationcontrollers/scale",
                        "networkpolicies",
                    ],
                ),
                rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
                rule(WRITE, &["networking.k8s.io"], &["networkpolicies", "ingresses"]),
                rule(READ_WRITE, &["coordination.k8s.io"], &["leases"]),
            ],
        ),
        // metrics-server's: `kubectl top` for whoever may view (Capstan serves the group).
        cluster_role(
            "system:aggregated-metrics-reader",
            &[AGGREGATE_TO_VIEW, AGGREGATE_TO_EDIT, AGGREGATE_TO_ADMIN],
            vec![rule(READ, &["metrics.k8s.io"], &["pods", "nodes"])],
        ),
        cluster_role(
            "system:aggregate-to-view",
            &[AGGREGATE_TO_VIEW],
            vec![
                rule(
                    READ,
                    core,
                    &[
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "configmaps",
                    ],
                ),
                rule(
                    READ,
                    core,
                    &[
                        "limitranges",
                        "resourcequotas",
                        "bindings",
                        "events",
                        "pods/status",
                        "resourcequotas/status",
                        "namespaces/status",
                        "replicationcontrollers/status",
                        "pods/log",
                    ],
                ),
                // Read access to namespaces at the namespace scope means reading *this*
                // namespace: a RoleBinding to view lets its subject get its namespace.
                rule(READ, core, &["namespaces"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                    ],
                ),
                rule(
                    READ,
                    &["autoscaling"],
                    &["horizontalpodautoscalers", "horizontalpodautoscalers/status"],
                ),
                rule(
                    READ,
                    &["batch"],
                    &["jobs", "cronjobs", "cronjobs/status", "jobs/status"],
                ),
                rule(
                    READ,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "ingresses",
                        "ingresses/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "replicationcontrollers/scale",
                        "networkpolicies",
                    ],
                ),
                rule(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["networkpolicies", "ingresses", "ingresses/status"],
                ),
            ],
        ),
        // Discovery, for every authenticated user.
        cluster_role(
            "system:discovery",
            &[],
            vec![url_rule(
                &["get"],
                &[
                    "/healthz",
                    "/livez",
                    "/readyz",
                    "/version",
                    "/version/",
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/openapi",
                    "/openapi/*",
                ],
            )],
        ),
        // What a user needs to learn about itself.
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(&["create"], &["authentication.k8s.io"], &["selfsubjectreviews"]),
            ],
        ),
        // Non-sensitive information, for everyone including the anonymous user.
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![url_rule(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        cluster_role(
            "system:monitoring",
            &[],
            vec![url_rule(
                &["get"],
                &[
                    "/metrics",
                    "/metrics/slis",
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/livez/*",
                    "/readyz/*",
                    "/healthz/*",
                    // Capstan's: the dashboard's view of the store cluster (src/ui.rs).
                    crate::ui::CONTROLPLANE_PATH,
                ],
            )],
        ),
        cluster_role(
            "system:auth-delegator",
            &[],
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
            ],
        ),
        // What a kubelet (a Capstan node agent) needs. Bound to no one: the Node authorizer
        // (crate::nodes) grants these to each node, narrowed as upstream's (secrets and
        // config maps only of its pods; writes only to its own Node, Lease and pods).
        cluster_role(
            "system:node",
            &[],
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews", "localsubjectaccessreviews"],
                ),
                rule(READ, core, &["services"]),
                rule(&["create", "get", "list", "watch"], core, &["nodes"]),
                rule(&["update", "patch"], core, &["nodes/status"]),
                rule(&["update", "patch"], core, &["nodes"]),
                rule(&["create", "update", "patch"], core, &["events"]),
                rule(READ, core, &["pods"]),
                // Mirror pods.
                rule(&["create", "delete"], core, &["pods"]),
                rule(&["update", "patch"], core, &["pods/status"]),
                rule(&["create"], core, &["pods/eviction"]),
                rule(READ, core, &["secrets", "configmaps"]),
                rule(&["get"], core, &["persistentvolumeclaims", "persistentvolumes"]),
                // Upstream grants only `get` on endpoints; Capstan's node agent also runs the
                // service proxy, which lists and watches them (and endpoint slices, below).
                rule(READ, core, &["endpoints"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    &["create", "get", "list", "watch"],
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                ),
                // Node heartbeats. Upstream: get, create, update, patch, delete; list and
                // watch are Capstan's (an agent may watch its own lease).
                rule(
                    &["get", "create", "update", "patch", "delete", "list", "watch"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
                rule(&["get"], &["storage.k8s.io"], &["volumeattachments"]),
                rule(&["create"], core, &["serviceaccounts/token"]),
                rule(&["get", "update", "patch"], core, &["persistentvolumeclaims/status"]),
                rule(READ, &["storage.k8s.io"], &["csidrivers"]),
                rule(
                    &["get", "create", "update", "patch", "delete"],
                    &["storage.k8s.io"],
                    &["csinodes"],
                ),
                rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
            ],
        ),
        cluster_role(
            "system:node-proxier",
            &[],
            vec![
                rule(&["list", "watch"], core, &["services", "endpoints"]),
                rule(READ, core, &["nodes"]),
                rule(&["create", "update", "patch"], &["", "events.k8s.io"], &["events"]),
                rule(&["list", "watch"], &["discovery.k8s.io"], &["endpointslices"]),
            ],
        ),
        cluster_role(
            "system:kube-scheduler",
            &[],
            vec![
                rule(&["create", "update", "patch"], &["", "events.k8s.io"], &["events"]),
                // Leader election.
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                named_rule(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-scheduler"],
                ),
                rule(READ, core, &["nodes"]),
                rule(&["get", "list", "watch", "delete"], core, &["pods"]),
                rule(&["create"], core, &["pods/binding", "bindings"]),
                rule(&["patch", "update"], core, &["pods/status"]),
                rule(READ, core, &["replicationcontrollers", "services"]),
                rule(READ, &["apps", "extensions"], &["replicasets"]),
                rule(READ, &["apps"], &["statefulsets"]),
                rule(READ, &["policy"], &["poddisruptionbudgets"]),
                rule(READ, core, &["persistentvolumeclaims", "persistentvolumes"]),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
                rule(READ, &["storage.k8s.io"], &["csinodes"]),
                rule(READ, core, &["namespaces"]),
                rule(READ, &["storage.k8s.io"], &["csidrivers"]),
                rule(READ, &["storage.k8s.io"], &["csistoragecapacities"]),
            ],
        ),
        cluster_role(
            "system:kube-controller-manager",
            &[],
            vec![
                rule(&["create", "update", "patch"], &["", "events.k8s.io"], &["events"]),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                named_rule(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-controller-manager"],
                ),
                rule(&["create"], core, &["secrets", "serviceaccounts"]),
                rule(&["delete"], core, &["secrets"]),
                rule(
                    &["get"],
                    core,
                    &["namespaces", "secrets", "serviceaccounts", "configmaps"],
                ),
                rule(&["update"], core, &["secrets", "serviceaccounts"]),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
                rule(&["list", "watch"], &["*"], &["*"]),
                rule(&["create"], core, &["serviceaccounts/token"]),
                // Capstan's own: upstream runs each controller under its own service account
                // with its own `system:controller:*` role (--use-service-account-credentials);
                // Capstan's controller manager runs every controller (deployments, replica
                // sets, endpoints, namespaces and their deletion, garbage collection, node
                // lifecycle and IPAM, service accounts, events) under this one user, so it gets
                // every verb on every resource of the groups Capstan serves.
                rule(
                    &["*"],
                    &["", "apps", "coordination.k8s.io", "discovery.k8s.io", "events.k8s.io"],
                    &["*"],
                ),
            ],
        ),
    ];

    let bindings = vec![
        cluster_binding("cluster-admin", vec![subject("Group", SYSTEM_MASTERS)]),
        cluster_binding("system:basic-user", vec![subject("Group", ALL_AUTHENTICATED)]),
        cluster_binding("system:discovery", vec![subject("Group", ALL_AUTHENTICATED)]),
        cluster_binding(
            "system:public-info-viewer",
            vec![
                subject("Group", ALL_AUTHENTICATED),
                subject("Group", ALL_UNAUTHENTICATED),
            ],
        ),
        cluster_binding("system:monitoring", vec![subject("Group", MONITORING_GROUP)]),
        // No subjects, as upstream's: the Node authorizer (crate::nodes) grants nodes
        // this role's rules, and secrets and config maps only through their pods.
        cluster_binding("system:node", vec![]),
        cluster_binding("system:node-proxier", vec![subject("User", KUBE_PROXY_USER)]),
        cluster_binding("system:kube-scheduler", vec![subject("User", KUBE_SCHEDULER_USER)]),
        cluster_binding(
            "system:kube-controller-manager",
            vec![subject("User", KUBE_CONTROLLER_MANAGER_USER)],
        ),
    ];
    (roles, bindings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.to_string(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn res(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Attributes {
        Attributes::Resource(ResourceAttributes {
            verb: verb.to_string(),
            api_group: group.to_string(),
            api_version: "v1".to_string(),
            resource: resource.to_string(),
            subresource: String::new(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    fn sub(verb: &str, group: &str, resource: &str, subresource: &str, namespace: &str, name: &str) -> Attributes {
        match res(verb, group, resource, namespace, name) {
            Attributes::Resource(mut r) => {
                r.subresource = subresource.to_string();
                Attributes::Resource(r)
            }
            other => other,
        }
    }

    fn url(verb: &str, path: &str) -> Attributes {
        Attributes::non_resource(verb, path)
    }

    fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: namespace.map(str::to_string),
            ..ObjectMeta::default()
        }
    }

    fn labelled(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..meta(name, None)
        }
    }

    fn crole(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
        ClusterRole {
            metadata: meta(name, None),
            rules: Some(rules),
            aggregation_rule: None,
        }
    }

    fn nrole(namespace: &str, name: &str, rules: Vec<PolicyRule>) -> Role {
        Role {
            metadata: meta(name, Some(namespace)),
            rules: Some(rules),
        }
    }

    fn role_ref(kind: &str, name: &str) -> RoleRef {
        RoleRef {
            api_group: RBAC_GROUP.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
        }
    }

    fn u(name: &str) -> Subject {
        subject("User", name)
    }

    fn g(name: &str) -> Subject {
        subject("Group", name)
    }

    fn sa(namespace: &str, name: &str) -> Subject {
        Subject {
            api_group: None,
            kind: "ServiceAccount".to_string(),
            name: name.to_string(),
            namespace: if namespace.is_empty() {
                None
            } else {
                Some(namespace.to_string())
            },
        }
    }

    fn crb(name: &str, role: &str, subjects: Vec<Subject>) -> ClusterRoleBinding {
        ClusterRoleBinding {
            metadata: meta(name, None),
            role_ref: role_ref("ClusterRole", role),
            subjects: Some(subjects),
        }
    }

    fn rb(namespace: &str, name: &str, kind: &str, role: &str, subjects: Vec<Subject>) -> RoleBinding {
        RoleBinding {
            metadata: meta(name, Some(namespace)),
            role_ref: role_ref(kind, role),
            subjects: Some(subjects),
        }
    }

    fn allowed(policy: &Policy, user: &UserInfo, attrs: &Attributes) -> bool {
        policy.authorize(user, attrs).is_allowed()
    }

    fn bootstrap() -> Policy {
        let (roles, bindings) = bootstrap_policy();
        Policy::new(Vec::new(), roles, Vec::new(), bindings)
    }

    fn authenticated(name: &str) -> UserInfo {
        user(name, &[ALL_AUTHENTICATED])
    }

    // ---- rule matching ----

    #[test]
    fn verbs_match_exactly_or_by_star() {
        let r = rule(&["get", "list"], &[""], &["pods"]);
        assert!(rule_allows(&res("get", "", "pods", "ns", "p"), &r));
        assert!(rule_allows(&res("list", "", "pods", "ns", ""), &r));
        assert!(!rule_allows(&res("watch", "", "pods", "ns", ""), &r));
        assert!(
            !rule_allows(&res("GET", "", "pods", "ns", "p"), &r),
            "verbs are case-sensitive"
        );
        let star = rule(&["*"], &[""], &["pods"]);
        assert!(rule_allows(&res("deletecollection", "", "pods", "ns", ""), &star));
        assert!(rule_allows(&res("impersonate", "", "pods", "ns", ""), &star));
    }

    #[test]
    fn api_groups_match_core_named_and_star() {
        let core = rule(&["get"], &[""], &["deployments"]);
        assert!(!rule_allows(&res("get", "apps", "deployments", "ns", "d"), &core));
        let apps = rule(&["get"], &["apps"], &["deployments"]);
        assert!(rule_allows(&res("get", "apps", "deployments", "ns", "d"), &apps));
        assert!(!rule_allows(&res("get", "", "deployments", "ns", "d"), &apps));
        let star = rule(&["get"], &["*"], &["deployments"]);
        assert!(rule_allows(&res("get", "extensions", "deployments", "ns", "d"), &star));
        assert!(rule_allows(&res("get", "", "deployments", "ns", "d"), &star));
        let none = PolicyRule {
            verbs: sorted(&["get"]),
            resources: Some(sorted(&["pods"])),
            ..PolicyRule::default()
        };
        assert!(
            !rule_allows(&res("get", "", "pods", "ns", "p"), &none),
            "no apiGroups matches no group"
        );
    }

    #[test]
    fn resources_and_subresources() {
        let pods = rule(&["get"], &[""], &["pods"]);
        assert!(rule_allows(&res("get", "", "pods", "ns", "p"), &pods));
        assert!(!rule_allows(&res("get", "", "services", "ns", "p"), &pods));
        assert!(
            !rule_allows(&sub("get", "", "pods", "log", "ns", "p"), &pods),
            "pods does not cover pods/log"
        );
        let log = rule(&["get"], &[""], &["pods/log"]);
        assert!(rule_allows(&sub("get", "", "pods", "log", "ns", "p"), &log));
        assert!(!rule_allows(&res("get", "", "pods", "ns", "p"), &log));
        assert!(!rule_allows(&sub("get", "", "pods", "status", "ns", "p"), &log));
        let star = rule(&["get"], &[""], &["*"]);
        assert!(rule_allows(&sub("get", "", "pods", "log", "ns", "p"), &star));
        assert!(rule_allows(&res("get", "", "nodes", "", "n"), &star));
        let pods_star = rule(&["get"], &[""], &["pods/*"]);
        assert!(
            !rule_allows(&sub("get", "", "pods", "log", "ns", "p"), &pods_star),
            "pods/* is not a pattern"
        );
    }

    #[test]
    fn star_slash_subresource_matches_that_subresource_of_anything() {
        let scale = rule(&["update"], &["apps"], &["*/scale"]);
        assert!(rule_allows(
            &sub("update", "apps", "deployments", "scale", "ns", "d"),
            &scale
        ));
        assert!(rule_allows(
            &sub("update", "apps", "replicasets", "scale", "ns", "r"),
            &scale
        ));
        assert!(!rule_allows(&res("update", "apps", "deployments", "ns", "d"), &scale));
        assert!(!rule_allows(
            &sub("update", "apps", "deployments", "status", "ns", "d"),
            &scale
        ));
        // A rule subresource that merely ends with the requested one (upstream checks the length).
        let rescale = rule(&["update"], &["apps"], &["*/rescale"]);
        assert!(!rule_allows(
            &sub("update", "apps", "deployments", "scale", "ns", "d"),
            &rescale
        ));
        assert!(rule_allows(
            &sub("update", "apps", "deployments", "rescale", "ns", "d"),
            &rescale
        ));
    }

    #[test]
    fn resource_names_restrict_and_never_match_an_unnamed_request() {
        let r = named_rule(&["get", "list", "update"], &[""], &["configmaps"], &["a", "b"]);
        assert!(rule_allows(&res("get", "", "configmaps", "ns", "a"), &r));
        assert!(rule_allows(&res("update", "", "configmaps", "ns", "b"), &r));
        assert!(!rule_allows(&res("get", "", "configmaps", "ns", "c"), &r));
        assert!(
            !rule_allows(&res("list", "", "configmaps", "ns", ""), &r),
            "a list has no name"
        );
        let any = rule(&["get", "list"], &[""], &["configmaps"]);
        assert!(rule_allows(&res("list", "", "configmaps", "ns", ""), &any));
        let empty_list = PolicyRule {
            resource_names: Some(Vec::new()),
            ..rule(&["list"], &[""], &["configmaps"])
        };
        assert!(
            rule_allows(&res("list", "", "configmaps", "ns", ""), &empty_list),
            "an empty list means every name"
        );
    }

    #[test]
    fn non_resource_urls_exact_star_and_prefix() {
        let r = url_rule(&["get"], &["/healthz", "/apis/*"]);
        assert!(rule_allows(&url("get", "/healthz"), &r));
        assert!(
            !rule_allows(&url("get", "/healthz/etcd"), &r),
            "no prefix without a star"
        );
        assert!(!rule_allows(&url("post", "/healthz"), &r));
        assert!(rule_allows(&url("get", "/apis/apps"), &r));
        assert!(rule_allows(&url("get", "/apis/"), &r));
        assert!(rule_allows(&url("get", "/apis/apps/v1"), &r));
        assert!(!rule_allows(&url("get", "/apis"), &r), "/apis/* does not cover /apis");
        let bare_prefix = url_rule(&["get"], &["/ap*"]);
        assert!(rule_allows(&url("get", "/api"), &bare_prefix));
        assert!(rule_allows(&url("get", "/apis/x"), &bare_prefix));
        let star = url_rule(&["*"], &["*"]);
        assert!(rule_allows(&url("delete", "/anything/at/all"), &star));
    }

    #[test]
    fn resource_and_non_resource_rules_do_not_cross() {
        let urls = url_rule(&["*"], &["*"]);
        assert!(!rule_allows(&res("get", "", "pods", "ns", "p"), &urls));
        let resources = rule(&["*"], &["*"], &["*"]);
        assert!(!rule_allows(&url("get", "/healthz"), &resources));
    }

    // ---- bindings ----

    #[test]
    fn role_binding_to_a_cluster_role_is_limited_to_its_namespace() {
        let policy = Policy::new(
            Vec::new(),
            vec![crole("reader", vec![rule(READ, &[""], &["pods"])])],
            vec![rb("a", "read", "ClusterRole", "reader", vec![u("alice")])],
            Vec::new(),
        );
        let alice = authenticated("alice");
        assert!(allowed(&policy, &alice, &res("list", "", "pods", "a", "")));
        assert!(allowed(&policy, &alice, &res("get", "", "pods", "a", "p")));
        assert!(!allowed(&policy, &alice, &res("list", "", "pods", "b", "")));
        assert!(
            !allowed(&policy, &alice, &res("list", "", "pods", "", "")),
            "a list across all namespaces is cluster-wide"
        );
        assert!(!allowed(&policy, &user("bob", &[]), &res("list", "", "pods", "a", "")));
    }

    #[test]
    fn role_binding_never_grants_cluster_scoped_or_non_resource() {
        let policy = Policy::new(
            Vec::new(),
            vec![crole(
                "root",
                vec![rule(&["*"], &["*"], &["*"]), url_rule(&["*"], &["*"])],
            )],
            vec![rb("a", "root-in-a", "ClusterRole", "root", vec![u("alice")])],
            Vec::new(),
        );
        let alice = authenticated("alice");
        assert!(allowed(&policy, &alice, &res("delete", "", "secrets", "a", "s")));
        assert!(allowed(&policy, &alice, &res("create", "apps", "deployments", "a", "")));
        assert!(!allowed(&policy, &alice, &res("get", "", "nodes", "", "n1")));
        assert!(!allowed(&policy, &alice, &res("list", "", "namespaces", "", "")));
        assert!(!allowed(&policy, &alice, &url("get", "/healthz")));
        assert!(!allowed(&policy, &alice, &url("get", "/version")));
        // Upstream's one exception: the Namespace object carries its own name as namespace.
        assert!(allowed(&policy, &alice, &res("get", "", "namespaces", "a", "a")));
        assert!(!allowed(&policy, &alice, &res("get", "", "namespaces", "b", "b")));
    }

    #[test]
    fn role_binding_to_a_role_uses_the_role_of_its_own_namespace() {
        let policy = Policy::new(
            vec![
                nrole("a", "cm", vec![rule(READ, &[""], &["configmaps"])]),
                nrole("b", "cm", vec![rule(READ, &[""], &["secrets"])]),
            ],
            Vec::new(),
            vec![
                rb("a", "x", "Role", "cm", vec![u("alice")]),
                rb("c", "x", "Role", "cm", vec![u("alice")]),
            ],
            Vec::new(),
        );
        let alice = authenticated("alice");
        assert!(allowed(&policy, &alice, &res("get", "", "configmaps", "a", "c")));
        assert!(!allowed(&policy, &alice, &res("get", "", "secrets", "a", "s")));
        // Namespace c has no Role "cm": the one in a or b is not used.
        let decision = policy.authorize(&alice, &res("get", "", "configmaps", "c", "c"));
        assert_eq!(
            decision,
            Decision::Deny {
                reason: r#"RBAC: role.rbac.authorization.k8s.io "cm" not found"#.to_string()
            }
        );
    }

    #[test]
    fn cluster_role_binding_grants_everywhere() {
        let policy = Policy::new(
            Vec::new(),
            vec![crole(
                "r",
                vec![rule(READ, &[""], &["pods", "nodes"]), url_rule(&["get"], &["/metrics"])],
            )],
            Vec::new(),
            vec![crb("b", "r", vec![u("alice")])],
        );
        let alice = authenticated("alice");
        assert!(allowed(&policy, &alice, &res("list", "", "pods", "", "")));
        assert!(allowed(&policy, &alice, &res("get", "", "pods", "any", "p")));
        assert!(allowed(&policy, &alice, &res("get", "", "nodes", "", "n")));
        assert!(allowed(&policy, &alice, &url("get", "/metrics")));
        assert!(!allowed(&policy, &alice, &url("get", "/metrics/x")));
        assert!(!allowed(&policy, &alice, &res("delete", "", "pods", "any", "p")));
    }

    #[test]
    fn service_account_subjects() {
        let policy = Policy::new(
            Vec::new(),
            vec![
                crole("pods", vec![rule(READ, &[""], &["pods"])]),
                crole("cms", vec![rule(READ, &[""], &["configmaps"])]),
                crole("nodes", vec![rule(READ, &[""], &["nodes"])]),
            ],
            vec![
                // Empty namespace: the binding's.
                rb("team", "local", "ClusterRole", "cms", vec![sa("", "builder")]),
            ],
            vec![
                crb("sa-pods", "pods", vec![sa("kube-system", "ctrl")]),
                // Empty namespace in a ClusterRoleBinding: nobody.
                crb("sa-nodes", "nodes", vec![sa("", "ctrl")]),
            ],
        );
        let ctrl = authenticated("system:serviceaccount:kube-system:ctrl");
        assert!(allowed(&policy, &ctrl, &res("list", "", "pods", "", "")));
        assert!(!allowed(&policy, &ctrl, &res("list", "", "nodes", "", "")));
        // Not even a user whose name has an empty namespace part.
        let no_ns = authenticated("system:serviceaccount::ctrl");
        assert!(!allowed(&policy, &no_ns, &res("list", "", "nodes", "", "")));
        let other_ns = authenticated("system:serviceaccount:default:ctrl");
        assert!(!allowed(&policy, &other_ns, &res("list", "", "pods", "", "")));
        // A user merely named like the service account is not it (no prefix).
        assert!(!allowed(
            &policy,
            &authenticated("ctrl"),
            &res("list", "", "pods", "", "")
        ));
        let builder = authenticated("system:serviceaccount:team:builder");
        assert!(allowed(&policy, &builder, &res("get", "", "configmaps", "team", "c")));
        assert!(!allowed(&policy, &builder, &res("get", "", "configmaps", "other", "c")));
        assert!(!allowed(
            &policy,
            &authenticated("system:serviceaccount:other:builder"),
            &res("get", "", "configmaps", "team", "c")
        ));
    }

    #[test]
    fn group_user_and_unknown_subjects() {
        let policy = Policy::new(
            Vec::new(),
            vec![crole("pods", vec![rule(READ, &[""], &["pods"])])],
            Vec::new(),
            vec![
                crb("devs", "pods", vec![g("devs")]),
                crb(
                    "weird",
                    "pods",
                    vec![Subject {
                        kind: "Robot".to_string(),
                        ..u("carol")
                    }],
                ),
            ],
        );
        let list = res("list", "", "pods", "x", "");
        assert!(allowed(&policy, &user("alice", &["devs"]), &list));
        assert!(!allowed(&policy, &user("devs", &[]), &list), "a group is not a user");
        assert!(!allowed(&policy, &user("bob", &["ops"]), &list));
        assert!(
            !allowed(&policy, &user("carol", &[]), &list),
            "unknown kinds match nobody"
        );
    }

    #[test]
    fn missing_roles_grant_nothing_and_are_the_deny_reason() {
        let policy = Policy::new(
            Vec::new(),
            vec![crole("pods", vec![rule(READ, &[""], &["pods"])])],
            vec![rb("a", "gone", "Role", "nope", vec![u("alice")])],
            vec![
                crb("b1", "missing", vec![u("alice")]),
                crb("b2", "pods", vec![u("alice")]),
                crb("b3", "missing", vec![g("devs")]),
                crb("b4", "other-missing", vec![u("bob")]),
            ],
        );
        let alice = user("alice", &["devs"]);
        // The missing role does not stop the other binding from granting.
        assert!(allowed(&policy, &alice, &res("list", "", "pods", "a", "")));
        assert_eq!(
            policy.authorize(&alice, &res("list", "", "secrets", "", "")),
            Decision::Deny {
                // b1 and b3 give the same message: once.
                reason: r#"RBAC: clusterrole.rbac.authorization.k8s.io "missing" not found"#.to_string()
            }
        );
        assert_eq!(
            policy.authorize(&alice, &res("list", "", "secrets", "a", "")),
            Decision::Deny {
                reason: r#"RBAC: [clusterrole.rbac.authorization.k8s.io "missing" not found, role.rbac.authorization.k8s.io "nope" not found]"#.to_string()
            }
        );
        // Bindings of other users do not show up.
        assert_eq!(
            policy.authorize(&user("carol", &[]), &res("list", "", "secrets", "a", "")),
            Decision::Deny { reason: String::new() }
        );
        let bad_kind = Policy::new(
            Vec::new(),
            Vec::new(),
            Vec::new(),
            vec![ClusterRoleBinding {
                metadata: meta("x", None),
                role_ref: role_ref("Thing", "t"),
                subjects: Some(vec![u("alice")]),
            }],
        );
        assert_eq!(
            bad_kind.authorize(&alice, &url("get", "/x")),
            Decision::Deny {
                reason: r#"RBAC: unsupported role reference kind: "Thing""#.to_string()
            }
        );
    }

    #[test]
    fn empty_policy_denies_everything() {
        let policy = Policy::default();
        let root = user("root", &[SYSTEM_MASTERS]);
        assert!(!allowed(&policy, &root, &url("get", "/healthz")));
        assert!(!allowed(&policy, &root, &res("get", "", "pods", "a", "p")));
    }

    #[test]
    fn rules_for_lists_cluster_then_namespace_rules_once() {
        let both = PolicyRule {
            non_resource_urls: Some(sorted(&["/odd"])),
            ..rule(&["get"], &[""], &["odd"])
        };
        let policy = Policy::new(
            Vec::new(),
            vec![
                crole(
                    "c",
                    vec![rule(READ, &[""], &["pods"]), url_rule(&["get"], &["/healthz"])],
                ),
                crole("n", vec![rule(&["create"], &[""], &["configmaps"])]),
                crole("both", vec![both]),
            ],
            vec![rb("a", "n", "ClusterRole", "n", vec![u("alice")])],
            vec![
                // Names the user twice (as user and by group): its rules come once.
                crb("c", "c", vec![u("alice"), g("devs")]),
                crb("d", "both", vec![g("devs")]),
                crb("e", "missing", vec![u("alice")]),
            ],
        );
        let alice = user("alice", &["devs"]);
        let (resource, non_resource) = policy.rules_for(&alice, "a");
        assert_eq!(
            resource,
            vec![
                rule(READ, &[""], &["pods"]),
                rule(&["get"], &[""], &["odd"]),
                rule(&["create"], &[""], &["configmaps"]),
            ]
        );
        assert_eq!(
            non_resource,
            vec![url_rule(&["get"], &["/healthz"]), url_rule(&["get"], &["/odd"])]
        );
        let (resource, _) = policy.rules_for(&alice, "");
        assert_eq!(resource.len(), 2, "no RoleBinding rules without a namespace");
        let review = policy.rules_review(&alice, "a");
        assert_eq!(
            review.evaluation_error.as_deref(),
            Some(r#"clusterrole.rbac.authorization.k8s.io "missing" not found"#)
        );
        assert_eq!(policy.rules_review(&user("bob", &[]), "a"), RulesReview::default());
    }

    // ---- aggregation ----

    fn aggregating(name: &str, labels: &[(&str, &str)], selectors: Vec<MetaLabelSelector>) -> ClusterRole {
        ClusterRole {
            metadata: labelled(name, labels),
            // Ignored: the aggregation controller overwrites it.
            rules: Some(vec![rule(&["*"], &["*"], &["stale"])]),
            aggregation_rule: Some(AggregationRule {
                cluster_role_selectors: Some(selectors),
            }),
        }
    }

    fn match_labels(labels: &[(&str, &str)]) -> MetaLabelSelector {
        MetaLabelSelector {
            match_labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            match_expressions: None,
        }
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> MetaLabelSelector {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
        MetaLabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.to_string(),
                operator: operator.to_string(),
                values: if values.is_empty() {
                    None
                } else {
                    Some(values.iter().map(|v| v.to_string()).collect())
                },
            }]),
        }
    }

    fn labelled_role(name: &str, labels: &[(&str, &str)], resource: &str) -> ClusterRole {
        ClusterRole {
            metadata: labelled(name, labels),
            rules: Some(vec![rule(&["get"], &[""], &[resource])]),
            aggregation_rule: None,
        }
    }

    fn resources_of(policy: &Policy, role: &str) -> Vec<String> {
        policy
            .cluster_role_rules(role)
            .unwrap_or_else(|| panic!("no role {role}"))
            .iter()
            .flat_map(|r| strings(&r.resources).to_vec())
            .collect()
    }

    #[test]
    fn aggregation_collects_matching_roles_by_name_without_duplicates() {
        let policy = Policy::new(
            Vec::new(),
            vec![
                aggregating("agg", &[], vec![match_labels(&[("team", "a")])]),
                labelled_role("z-role", &[("team", "a")], "secrets"),
                labelled_role("a-role", &[("team", "a"), ("x", "y")], "pods"),
                labelled_role("dup", &[("team", "a")], "pods"),
                labelled_role("other", &[("team", "b")], "nodes"),
            ],
            Vec::new(),
            vec![crb("b", "agg", vec![u("alice")])],
        );
        assert_eq!(resources_of(&policy, "agg"), vec!["pods", "secrets"]);
        let alice = user("alice", &[]);
        assert!(allowed(&policy, &alice, &res("get", "", "secrets", "", "s")));
        assert!(!allowed(&policy, &alice, &res("get", "", "nodes", "", "n")));
        assert!(
            !allowed(&policy, &alice, &res("get", "", "stale", "", "x")),
            "stored rules of an aggregated role are replaced"
        );
    }

    /// The rules one aggregated role with `selector` gets from four labelled roles.
    fn aggregate_of(selector: MetaLabelSelector) -> Vec<String> {
        let policy = Policy::new(
            Vec::new(),
            vec![
                aggregating("agg", &[], vec![selector]),
                labelled_role("r-web", &[("tier", "web")], "pods"),
                labelled_role("r-db", &[("tier", "db")], "secrets"),
                labelled_role("r-cache", &[("tier", "cache")], "configmaps"),
                labelled_role("r-none", &[], "nodes"),
            ],
            Vec::new(),
            Vec::new(),
        );
        resources_of(&policy, "agg")
    }

    #[test]
    fn aggregation_match_expressions() {
        assert_eq!(
            aggregate_of(expression("tier", "In", &["web", "db"])),
            vec!["secrets", "pods"]
        );
        // NotIn also selects roles without the label.
        assert_eq!(
            aggregate_of(expression("tier", "NotIn", &["web"])),
            vec!["configmaps", "secrets", "nodes"]
        );
        assert_eq!(
            aggregate_of(expression("tier", "Exists", &[])),
            vec!["configmaps", "secrets", "pods"]
        );
        assert_eq!(aggregate_of(expression("tier", "DoesNotExist", &[])), vec!["nodes"]);
        assert_eq!(aggregate_of(match_labels(&[("tier", "db")])), vec!["secrets"]);
        // Selectors upstream rejects select nothing.
        assert!(aggregate_of(expression("tier", "Near", &["web"])).is_empty());
        assert!(aggregate_of(expression("tier", "In", &[])).is_empty());
        assert!(aggregate_of(match_labels(&[("bad key!", "x")])).is_empty());
    }

    #[test]
    fn aggregation_is_transitive_excludes_itself_and_survives_cycles() {
        let policy = Policy::new(
            Vec::new(),
            vec![
                aggregating("top", &[], vec![match_labels(&[("to-top", "true")])]),
                aggregating(
                    "middle",
                    &[("to-top", "true")],
                    vec![match_labels(&[("to-middle", "true")])],
                ),
                labelled_role("leaf", &[("to-middle", "true")], "pods"),
                labelled_role("side", &[("to-top", "true")], "secrets"),
                // A cycle: each aggregates the other, and one of them also a leaf.
                aggregating("ping", &[("c", "1")], vec![match_labels(&[("c", "2")])]),
                aggregating(
                    "pong",
                    &[("c", "2")],
                    vec![match_labels(&[("c", "1")]), match_labels(&[("leafy", "true")])],
                ),
                labelled_role("leaf2", &[("leafy", "true")], "nodes"),
                // Selects its own labels. Upstream skips the role itself; with the least
                // fixed point computed here taking itself would add nothing either.
                aggregating("selfish", &[("me", "true")], vec![match_labels(&[("me", "true")])]),
            ],
            Vec::new(),
            Vec::new(),
        );
        assert_eq!(resources_of(&policy, "middle"), vec!["pods"]);
        assert_eq!(resources_of(&policy, "top"), vec!["pods", "secrets"]);
        assert_eq!(resources_of(&policy, "pong"), vec!["nodes"]);
        assert_eq!(resources_of(&policy, "ping"), vec!["nodes"]);
        assert!(resources_of(&policy, "selfish").is_empty());
    }

    #[test]
    fn aggregation_with_an_empty_selector_takes_every_other_role() {
        let policy = Policy::new(
            Vec::new(),
            vec![
                aggregating("all", &[], vec![MetaLabelSelector::default()]),
                labelled_role("a", &[], "pods"),
                labelled_role("b", &[("k", "v")], "secrets"),
            ],
            Vec::new(),
            Vec::new(),
        );
        assert_eq!(resources_of(&policy, "all"), vec!["pods", "secrets"]);
    }

    #[test]
    fn aggregated_rules_are_bounded() {
        let many: Vec<PolicyRule> = (0..AGGREGATED_RULES_MAX + 5)
            .map(|i| rule(&["get"], &[""], &[&format!("r{i}")]))
            .collect();
        let policy = Policy::new(
            Vec::new(),
            vec![
                aggregating("agg", &[], vec![match_labels(&[("k", "v")])]),
                ClusterRole {
                    metadata: labelled("big", &[("k", "v")]),
                    rules: Some(many),
                    aggregation_rule: None,
                },
            ],
            Vec::new(),
            Vec::new(),
        );
        assert_eq!(
            policy.cluster_role_rules("agg").map(<[PolicyRule]>::len),
            Some(AGGREGATED_RULES_MAX)
        );
        assert_eq!(
            policy.cluster_role_rules("big").map(<[PolicyRule]>::len),
            Some(AGGREGATED_RULES_MAX + 5),
            "plain roles are kept whole"
        );
    }

    // ---- the default policy ----

    #[test]
    fn bootstrap_objects_are_labelled_and_annotated() {
        let (roles, bindings) = bootstrap_policy();
        let metas = roles
            .iter()
            .map(|r| &r.metadata)
            .chain(bindings.iter().map(|b| &b.metadata));
        for m in metas {
            let name = m.name.as_deref().unwrap_or("");
            assert_eq!(
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(BOOTSTRAP_LABEL.0))
                    .map(String::as_str),
                Some("rbac-defaults"),
                "{name}"
            );
            assert_eq!(
                m.annotations
                    .as_ref()
                    .and_then(|a| a.get(AUTOUPDATE_ANNOTATION))
                    .map(String::as_str),
                Some("true"),
                "{name}"
            );
        }
        for required in [
            "cluster-admin",
            "admin",
            "edit",
            "view",
            "system:discovery",
            "system:basic-user",
            "system:public-info-viewer",
            "system:node",
            "system:kube-scheduler",
            "system:kube-controller-manager",
        ] {
            assert!(roles.iter().any(|r| name_of(&r.metadata) == required), "{required}");
        }
        // Every binding's role exists.
        for b in &bindings {
            assert!(
                roles.iter().any(|r| name_of(&r.metadata) == b.role_ref.name),
                "{}",
                b.role_ref.name
            );
        }
        let label = |name: &str, key: &str| {
            roles
                .iter()
                .find(|r| name_of(&r.metadata) == name)
                .and_then(|r| r.metadata.labels.as_ref())
                .and_then(|l| l.get(key).cloned())
        };
        assert_eq!(label("edit", AGGREGATE_TO_ADMIN).as_deref(), Some("true"));
        assert_eq!(label("view", AGGREGATE_TO_EDIT).as_deref(), Some("true"));
        assert_eq!(
            label("system:aggregate-to-view", AGGREGATE_TO_VIEW).as_deref(),
            Some("true")
        );
    }

    #[test]
    fn bootstrap_cluster_admin_via_system_masters_can_do_anything() {
        let policy = bootstrap();
        let root = user("root", &[SYSTEM_MASTERS, ALL_AUTHENTICATED]);
        for attrs in [
            res("delete", "", "nodes", "", "n1"),
            res("deletecollection", "", "secrets", "kube-system", ""),
            sub("update", "apps", "deployments", "scale", "default", "web"),
            res("escalate", RBAC_GROUP, "clusterroles", "", "x"),
            url("get", "/metrics"),
            url("post", "/anything"),
        ] {
            assert!(allowed(&policy, &root, &attrs), "{attrs:?}");
        }
    }

    #[test]
    fn bootstrap_monitoring_group_scrapes_metrics_and_health_only() {
        let policy = bootstrap();
        let prometheus = user("prometheus", &[MONITORING_GROUP, ALL_AUTHENTICATED]);
        for path in ["/metrics", "/metrics/slis", "/livez", "/readyz/etcd", "/healthz/ping"] {
            assert!(allowed(&policy, &prometheus, &url("get", path)), "{path}");
        }
        assert!(!allowed(&policy, &prometheus, &url("post", "/metrics")));
        assert!(!allowed(&policy, &prometheus, &url("get", "/metrics/other")));
        assert!(!allowed(&policy, &prometheus, &res("list", "", "pods", "", "")));
    }

    #[test]
    fn bootstrap_authenticated_users_discover_but_do_not_read() {
        let policy = bootstrap();
        let alice = authenticated("alice");
        for path in [
            "/version",
            "/apis",
            "/api",
            "/api/v1",
            "/apis/apps/v1",
            "/healthz",
            "/openapi/v2",
        ] {
            assert!(allowed(&policy, &alice, &url("get", path)), "{path}");
        }
        assert!(!allowed(&policy, &alice, &url("post", "/version")));
        assert!(!allowed(&policy, &alice, &url("get", "/metrics")));
        assert!(!allowed(&policy, &alice, &res("list", "", "pods", "default", "")));
        assert!(!allowed(
            &policy,
            &alice,
            &res("get", "", "namespaces", "default", "default")
        ));
        assert!(allowed(
            &policy,
            &alice,
            &res("create", "authorization.k8s.io", "selfsubjectaccessreviews", "", "")
        ));
        assert!(allowed(
            &policy,
            &alice,
            &res("create", "authorization.k8s.io", "selfsubjectrulesreviews", "", "")
        ));
        assert!(!allowed(
            &policy,
            &alice,
            &res("create", "authorization.k8s.io", "subjectaccessreviews", "", "")
        ));
    }

    #[test]
    fn bootstrap_anonymous_sees_public_info_only() {
        let policy = bootstrap();
        let anon = UserInfo::anonymous();
        assert!(allowed(&policy, &anon, &url("get", "/healthz")));
        assert!(allowed(&policy, &anon, &url("get", "/version")));
        assert!(allowed(&policy, &anon, &url("get", "/readyz")));
        assert!(!allowed(&policy, &anon, &url("get", "/api")));
        assert!(!allowed(&policy, &anon, &url("get", "/apis")));
        assert!(!allowed(&policy, &anon, &url("get", "/healthz/etcd")));
        assert!(!allowed(
            &policy,
            &anon,
            &res("create", "authorization.k8s.io", "selfsubjectaccessreviews", "", "")
        ));
    }

    fn bootstrap_with(role_bindings: Vec<RoleBinding>) -> Policy {
        let (roles, bindings) = bootstrap_policy();
        Policy::new(Vec::new(), roles, role_bindings, bindings)
    }

    #[test]
    fn bootstrap_view_reads_but_not_secrets_and_writes_nothing() {
        let policy = bootstrap_with(vec![rb("dev", "v", "ClusterRole", "view", vec![u("val")])]);
        let val = authenticated("val");
        assert!(allowed(&policy, &val, &res("list", "", "pods", "dev", "")));
        assert!(allowed(&policy, &val, &res("watch", "", "pods", "dev", "")));
        assert!(allowed(&policy, &val, &sub("get", "", "pods", "log", "dev", "p")));
        assert!(allowed(&policy, &val, &res("list", "apps", "deployments", "dev", "")));
        assert!(allowed(
            &policy,
            &val,
            &res("get", "discovery.k8s.io", "endpointslices", "dev", "e")
        ));
        assert!(allowed(&policy, &val, &res("get", "", "namespaces", "dev", "dev")));
        assert!(!allowed(&policy, &val, &res("list", "", "secrets", "dev", "")));
        assert!(!allowed(&policy, &val, &res("get", "", "secrets", "dev", "s")));
        assert!(!allowed(&policy, &val, &res("create", "", "pods", "dev", "")));
        assert!(!allowed(&policy, &val, &res("delete", "", "configmaps", "dev", "c")));
        assert!(!allowed(
            &policy,
            &val,
            &res("list", "coordination.k8s.io", "leases", "dev", "")
        ));
        assert!(!allowed(&policy, &val, &res("list", "", "pods", "prod", "")));
    }

    #[test]
    fn bootstrap_edit_writes_workloads_admin_also_roles() {
        let policy = bootstrap_with(vec![
            rb("dev", "e", "ClusterRole", "edit", vec![u("ed")]),
            rb("dev", "a", "ClusterRole", "admin", vec![u("ada")]),
        ]);
        let ed = authenticated("ed");
        assert!(allowed(&policy, &ed, &res("create", "apps", "deployments", "dev", "")));
        assert!(allowed(
            &policy,
            &ed,
            &sub("update", "apps", "deployments", "scale", "dev", "d")
        ));
        assert!(
            allowed(&policy, &ed, &res("list", "apps", "deployments", "dev", "")),
            "view's rules too"
        );
        assert!(allowed(&policy, &ed, &res("get", "", "secrets", "dev", "s")));
        assert!(allowed(
            &policy,
            &ed,
            &sub("create", "", "pods", "eviction", "dev", "p")
        ));
        assert!(allowed(
            &policy,
            &ed,
            &res("update", "coordination.k8s.io", "leases", "dev", "l")
        ));
        assert!(!allowed(&policy, &ed, &res("create", RBAC_GROUP, "roles", "dev", "")));
        assert!(!allowed(&policy, &ed, &sub("update", "", "pods", "status", "dev", "p")));
        let ada = authenticated("ada");
        assert!(allowed(
            &policy,
            &ada,
            &res("create", RBAC_GROUP, "rolebindings", "dev", "")
        ));
        assert!(allowed(&policy, &ada, &res("create", "apps", "replicasets", "dev", "")));
        assert!(allowed(&policy, &ada, &res("list", "", "pods", "dev", "")));
        assert!(!allowed(
            &policy,
            &ada,
            &res("create", RBAC_GROUP, "rolebindings", "prod", "")
        ));
        assert!(!allowed(&policy, &ada, &res("list", "", "nodes", "", "")));
    }

    #[test]
    fn bootstrap_system_components() {
        let policy = bootstrap();
        // Nodes get nothing from RBAC (the binding has no subjects, as upstream's): the
        // Node authorizer grants the role's rules (crate::nodes).
        let node = user("system:node:n1", &[NODES_GROUP, ALL_AUTHENTICATED]);
        assert!(!allowed(&policy, &node, &res("list", "", "pods", "", "")));
        assert!(!allowed(&policy, &node, &res("get", "", "secrets", "default", "s")));
        assert!(policy.cluster_role_rules("system:node").is_some_and(|r| !r.is_empty()));
        assert!(!allowed(&policy, &node, &res("delete", "", "nodes", "", "n1")));
        assert!(!allowed(
            &policy,
            &node,
            &res("create", "apps", "deployments", "default", "")
        ));
        let scheduler = authenticated(KUBE_SCHEDULER_USER);
        assert!(allowed(
            &policy,
            &scheduler,
            &sub("create", "", "pods", "binding", "default", "p")
        ));
        assert!(allowed(
            &policy,
            &scheduler,
            &res(
                "update",
                "coordination.k8s.io",
                "leases",
                "kube-system",
                "kube-scheduler"
            )
        ));
        assert!(!allowed(
            &policy,
            &scheduler,
            &res("update", "coordination.k8s.io", "leases", "kube-system", "other")
        ));
        assert!(!allowed(
            &policy,
            &scheduler,
            &res("create", "", "secrets", "default", "")
        ));
        let kcm = authenticated(KUBE_CONTROLLER_MANAGER_USER);
        assert!(allowed(
            &policy,
            &kcm,
            &sub("update", "apps", "replicasets", "status", "default", "r")
        ));
        assert!(allowed(&policy, &kcm, &res("deletecollection", "", "pods", "gone", "")));
        assert!(
            allowed(&policy, &kcm, &res("list", RBAC_GROUP, "roles", "", "")),
            "list/watch everything"
        );
        assert!(!allowed(
            &policy,
            &kcm,
            &res("create", RBAC_GROUP, "clusterroles", "", "")
        ));
        let proxy = authenticated(KUBE_PROXY_USER);
        assert!(allowed(
            &policy,
            &proxy,
            &res("watch", "discovery.k8s.io", "endpointslices", "", "")
        ));
        assert!(!allowed(&policy, &proxy, &res("list", "", "pods", "", "")));
    }

    // ---- request attributes ----

    fn resource_attrs(
        verb: &str,
        group: &str,
        version: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Attributes {
        Attributes::Resource(ResourceAttributes {
            verb: verb.to_string(),
            api_group: group.to_string(),
            api_version: version.to_string(),
            resource: resource.to_string(),
            subresource: subresource.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    #[test]
    fn request_attributes_core_namespaced_and_cluster_scoped() {
        let ra = request_attributes;
        assert_eq!(
            ra("GET", "/api/v1/namespaces/default/pods", false),
            resource_attrs("list", "", "v1", "pods", "", "default", "")
        );
        assert_eq!(
            ra("GET", "/api/v1/namespaces/default/pods", true),
            resource_attrs("watch", "", "v1", "pods", "", "default", "")
        );
        assert_eq!(
            ra("GET", "/api/v1/namespaces/default/pods/web", false),
            resource_attrs("get", "", "v1", "pods", "", "default", "web")
        );
        assert_eq!(
            ra("GET", "/api/v1/namespaces/default/pods/web", true),
            resource_attrs("get", "", "v1", "pods", "", "default", "web"),
            "watch only applies to collections"
        );
        assert_eq!(
            ra("HEAD", "/api/v1/namespaces/default/pods/web", false),
            resource_attrs("get", "", "v1", "pods", "", "default", "web")
        );
        assert_eq!(
            ra("GET", "/api/v1/namespaces/default/pods/web/log", false),
            resource_attrs("get", "", "v1", "pods", "log", "default", "web")
        );
        assert_eq!(
            ra("POST", "/api/v1/namespaces/default/pods", false),
            resource_attrs("create", "", "v1", "pods", "", "default", "")
        );
        assert_eq!(
            ra("POST", "/api/v1/namespaces/default/pods/web/eviction", false),
            resource_attrs("create", "", "v1", "pods", "eviction", "default", "web")
        );
        assert_eq!(
            ra("PUT", "/api/v1/namespaces/default/pods/web/status", false),
            resource_attrs("update", "", "v1", "pods", "status", "default", "web")
        );
        assert_eq!(
            ra("PATCH", "/api/v1/namespaces/default/configmaps/c", false),
            resource_attrs("patch", "", "v1", "configmaps", "", "default", "c")
        );
        assert_eq!(
            ra("DELETE", "/api/v1/namespaces/default/configmaps/c", false),
            resource_attrs("delete", "", "v1", "configmaps", "", "default", "c")
        );
        assert_eq!(
            ra("DELETE", "/api/v1/namespaces/default/configmaps", false),
            resource_attrs("deletecollection", "", "v1", "configmaps", "", "default", "")
        );
        assert_eq!(
            ra("GET", "/api/v1/pods", false),
            resource_attrs("list", "", "v1", "pods", "", "", "")
        );
        assert_eq!(
            ra("GET", "/api/v1/nodes/n1", false),
            resource_attrs("get", "", "v1", "nodes", "", "", "n1")
        );
        assert_eq!(
            ra("PATCH", "/api/v1/nodes/n1/status", false),
            resource_attrs("patch", "", "v1", "nodes", "status", "", "n1")
        );
        assert_eq!(
            ra("OPTIONS", "/api/v1/nodes/n1", false),
            resource_attrs("", "", "v1", "nodes", "", "", "n1"),
            "other methods have no verb"
        );
    }

    #[test]
    fn request_attributes_namespaces_themselves() {
        let ra = request_attributes;
        assert_eq!(
            ra("GET", "/api/v1/namespaces", false),
            resource_attrs("list", "", "v1", "namespaces", "", "", "")
        );
        assert_eq!(
            ra("POST", "/api/v1/namespaces", false),
            resource_attrs("create", "", "v1", "namespaces", "", "", "")
        );
        assert_eq!(
            ra("GET", "/api/v1/namespaces/kube-system", false),
            resource_attrs("get", "", "v1", "namespaces", "", "kube-system", "kube-system")
        );
        assert_eq!(
            ra("DELETE", "/api/v1/namespaces/kube-system", false),
            resource_attrs("delete", "", "v1", "namespaces", "", "kube-system", "kube-system")
        );
        assert_eq!(
            ra("PUT", "/api/v1/namespaces/x/finalize", false),
            resource_attrs("update", "", "v1", "namespaces", "finalize", "x", "x")
        );
        assert_eq!(
            ra("GET", "/api/v1/namespaces/x/status", false),
            resource_attrs("get", "", "v1", "namespaces", "status", "x", "x")
        );
    }

    #[test]
    fn request_attributes_groups_and_watch_paths() {
        let ra = request_attributes;
        assert_eq!(
            ra("GET", "/apis/apps/v1/namespaces/default/deployments", false),
            resource_attrs("list", "apps", "v1", "deployments", "", "default", "")
        );
        assert_eq!(
            ra("PUT", "/apis/apps/v1/namespaces/default/deployments/web/scale", false),
            resource_attrs("update", "apps", "v1", "deployments", "scale", "default", "web")
        );
        assert_eq!(
            ra("GET", "/apis/apps/v1/deployments", true),
            resource_attrs("watch", "apps", "v1", "deployments", "", "", "")
        );
        assert_eq!(
            ra(
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1",
                false
            ),
            resource_attrs(
                "get",
                "coordination.k8s.io",
                "v1",
                "leases",
                "",
                "kube-node-lease",
                "n1"
            )
        );
        assert_eq!(
            ra("GET", "/api/v1/watch/namespaces/default/pods", false),
            resource_attrs("watch", "", "v1", "pods", "", "default", "")
        );
        assert_eq!(
            ra("GET", "/api/v1/watch/namespaces/default/pods/web", false),
            resource_attrs("watch", "", "v1", "pods", "", "default", "web")
        );
        assert_eq!(
            ra("GET", "/api/v1/watch/nodes", false),
            resource_attrs("watch", "", "v1", "nodes", "", "", "")
        );
        assert_eq!(
            ra("GET", "/apis/apps/v1/watch/namespaces/default/deployments", false),
            resource_attrs("watch", "apps", "v1", "deployments", "", "default", "")
        );
        assert_eq!(
            ra("GET", "/api/v1/proxy/namespaces/default/pods/web/some/path", false),
            resource_attrs("proxy", "", "v1", "pods", "", "default", "web"),
            "proxy takes no subresource"
        );
        assert_eq!(
            ra("GET", "/api/v1/watch", false),
            resource_attrs("watch", "", "v1", "", "", "", "")
        );
        assert_eq!(
            ra("GET", "/api/v1/namespaces/default/pods/", false),
            resource_attrs("list", "", "v1", "pods", "", "default", ""),
            "trailing slashes are trimmed"
        );
    }

    #[test]
    fn request_attributes_non_resource_paths() {
        for (method, path, verb) in [
            ("GET", "/version", "get"),
            ("GET", "/healthz", "get"),
            ("GET", "/healthz/etcd", "get"),
            ("GET", "/api", "get"),
            ("GET", "/api/v1", "get"),
            ("GET", "/apis", "get"),
            ("GET", "/apis/apps", "get"),
            ("GET", "/apis/apps/v1", "get"),
            ("GET", "/openapi/v2", "get"),
            ("GET", "/openapi/v3/apis/apps/v1", "get"),
            ("POST", "/version", "post"),
            ("HEAD", "/healthz", "head"),
            ("GET", "/", "get"),
            ("GET", "", "get"),
        ] {
            assert_eq!(
                request_attributes(method, path, false),
                url(verb, path),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn watch_param_reads_as_upstream() {
        assert!(!watch_param(None));
        assert!(watch_param(Some("true")));
        assert!(watch_param(Some("1")));
        assert!(watch_param(Some("yes")));
        assert!(watch_param(Some("")));
        assert!(!watch_param(Some("false")));
        assert!(!watch_param(Some("FALSE")));
        assert!(!watch_param(Some("0")));
    }

    // ---- forbidden messages ----

    #[test]
    fn forbidden_messages_match_upstream() {
        let bob = authenticated("bob");
        assert_eq!(
            forbidden_message(&bob, &res("get", "", "pods", "default", "web")),
            r#"pods "web" is forbidden: User "bob" cannot get resource "pods" in API group "" in the namespace "default""#
        );
        assert_eq!(
            forbidden_message(&bob, &res("list", "", "pods", "default", "")),
            r#"pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default""#
        );
        assert_eq!(
            forbidden_message(&bob, &res("list", "", "nodes", "", "")),
            r#"nodes is forbidden: User "bob" cannot list resource "nodes" in API group "" at the cluster scope"#
        );
        assert_eq!(
            forbidden_message(&bob, &res("create", "apps", "deployments", "default", "")),
            r#"deployments.apps is forbidden: User "bob" cannot create resource "deployments" in API group "apps" in the namespace "default""#
        );
        assert_eq!(
            forbidden_message(&bob, &sub("get", "", "pods", "log", "default", "web")),
            r#"pods "web" is forbidden: User "bob" cannot get resource "pods/log" in API group "" in the namespace "default""#
        );
        assert_eq!(
            forbidden_message(&bob, &sub("update", "apps", "deployments", "scale", "default", "web")),
            r#"deployments.apps "web" is forbidden: User "bob" cannot update resource "deployments/scale" in API group "apps" in the namespace "default""#
        );
        assert_eq!(
            forbidden_message(&bob, &res("get", "", "namespaces", "kube-system", "kube-system")),
            r#"namespaces "kube-system" is forbidden: User "bob" cannot get resource "namespaces" in API group "" in the namespace "kube-system""#
        );
        assert_eq!(
            forbidden_message(&bob, &url("get", "/foo")),
            r#"forbidden: User "bob" cannot get path "/foo""#
        );
        assert_eq!(
            forbidden_message(&UserInfo::anonymous(), &url("get", "/api")),
            r#"forbidden: User "system:anonymous" cannot get path "/api""#
        );
    }

    #[test]
    fn forbidden_message_quotes_and_sanitizes_the_detail() {
        let odd = authenticated("a<b>&\"c");
        assert_eq!(
            forbidden_message(&odd, &url("get", "/x<y>")),
            r#"forbidden: User "a&lt;b&gt;&amp;\"c" cannot get path "/x&lt;y&gt;""#
        );
        assert_eq!(
            forbidden_message(&odd, &res("get", "", "pods", "ns", "p<1>")),
            r#"pods "p<1>" is forbidden: User "a&lt;b&gt;&amp;\"c" cannot get resource "pods" in API group "" in the namespace "ns""#,
            "the name outside the detail is not sanitized"
        );
    }

    #[test]
    fn forbidden_message_with_a_reason() {
        let bob = authenticated("bob");
        let attrs = res("list", "", "endpoints", "", "");
        assert_eq!(
            forbidden_message_with_reason(&bob, &attrs, ""),
            forbidden_message(&bob, &attrs)
        );
        assert_eq!(
            forbidden_message_with_reason(
                &bob,
                &attrs,
                r#"RBAC: clusterrole.rbac.authorization.k8s.io "kube-state-metrics" not found"#
            ),
            r#"endpoints is forbidden: User "bob" cannot list resource "endpoints" in API group "" at the cluster scope: RBAC: clusterrole.rbac.authorization.k8s.io "kube-state-metrics" not found"#
        );
    }

    #[test]
    fn request_attributes_round_trip_through_authorize() {
        // The pieces together: a RoleBinding to view in "dev", requests as paths.
        let policy = bootstrap_with(vec![rb("dev", "v", "ClusterRole", "view", vec![g("viewers")])]);
        let val = user("val", &["viewers", ALL_AUTHENTICATED]);
        let ok = |method: &str, path: &str, watch: bool| {
            policy
                .authorize(&val, &request_attributes(method, path, watch))
                .is_allowed()
        };
        assert!(ok("GET", "/api/v1/namespaces/dev/pods", true));
        assert!(ok("GET", "/api/v1/watch/namespaces/dev/pods", false));
        assert!(ok("GET", "/api/v1/namespaces/dev", false));
        assert!(ok("GET", "/apis/apps/v1", false));
        assert!(!ok("GET", "/api/v1/namespaces", false));
        assert!(!ok("GET", "/api/v1/pods", false));
        assert!(!ok("DELETE", "/api/v1/namespaces/dev/pods/p", false));
        assert!(!ok("GET", "/api/v1/namespaces/dev/secrets", false));
    }
}
