//! Defaulting and validation of the built-in Kubernetes kinds, as the upstream kube-apiserver performs them.
//!
//! Everything here is a pure function of the object's JSON in its v1 wire shape (`serde_json::Value`):
//!
//! * [`default_object`] fills in what upstream's defaulting functions fill in (`pkg/apis/core/v1/defaults.go`,
//!   `pkg/apis/apps/v1/defaults.go`, `pkg/apis/discovery/v1/defaults.go`, `pkg/apis/rbac/v1/defaults.go`), plus
//!   the few values upstream's registry strategies and allocators set before validation that users see on every
//!   object (namespace finalizer and phase, pod phase and QoS class, service `clusterIPs`/`ipFamilies`/
//!   `ipFamilyPolicy`, secret `stringData` folded into `data`, resource quantities rounded up to milli-units and
//!   written in canonical form).
//! * [`validate_create`] and [`validate_update`] return upstream's field errors (reason, field path and the message
//!   kubectl prints), following `pkg/apis/core/validation`, `pkg/apis/apps/validation`,
//!   `pkg/apis/coordination/validation`, `pkg/apis/discovery/validation`, `pkg/apis/rbac/validation`,
//!   `k8s.io/apimachinery/pkg/api/validation` and `k8s.io/apimachinery/pkg/util/validation`.
//! * [`invalid_message`] builds the `Status.message` upstream's `errors.NewInvalid` builds from those errors.
//! * [`prepare_update`] (an extra) applies upstream's update-time carry-over that happens before validation
//!   (service `clusterIP`/`clusterIPs`/node ports kept when a replacement omits them, dropped when the type no
//!   longer needs them; `uid`/`creationTimestamp`/`deletionTimestamp` kept; namespace `spec.finalizers` kept).
//!   [`validate_update`] applies the same carry-over to its own copy of the new object.
//!
//! The wording follows Kubernetes 1.33, the last release that prints bad values in Go syntax
//! (`map[string]string{"app":"x"}`, `v1.LabelSelector{...}`); from 1.34 upstream prints them as JSON instead.
//! Only `render` in this file knows how values are printed. A few composite values that upstream prints as raw Go
//! structs (security contexts, resource quantities) are printed as JSON or as the canonical quantity string.
//!
//! ## Usage
//!
//! As upstream orders it: on create, `default_object` then `validate_create`; on update, `default_object` on the
//! new object, then `prepare_update`, then `validate_update` (the old object is the stored, already defaulted one).
//! Errors are returned in upstream's order, each distinct error once; an empty list means valid.
//!
//! ## What is validated, per kind
//!
//! * All kinds: `metadata` as upstream's `ValidateObjectMeta` (name required unless `generateName`, name format
//!   per kind, namespace required and a DNS-1123 label for namespaced kinds and forbidden for cluster-scoped ones,
//!   `generation` non-negative, label keys and values, annotation keys and their 256 KiB total, owner references,
//!   finalizer names); on update `ValidateObjectMetaUpdate` (name, namespace, uid, creationTimestamp,
//!   deletionTimestamp, deletionGracePeriodSeconds immutable, generation not decremented, no new finalizers while
//!   deleting). `resourceVersion` is left to the caller.
//! * Pod: the whole `ValidatePodSpec` except the rarely used corners listed below: containers, init containers
//!   (names, images, ports, env, envFrom, volume mounts and devices, probes, lifecycle handlers, resources,
//!   resize policy, security context IDs/procMount/seccomp, restart policies, host port clashes), volumes and their
//!   common sources, restart/DNS policy, DNS config, node selector, affinity, tolerations, host aliases,
//!   topology spread constraints, scheduling and readiness gates, pod security context IDs, OS, overhead, pod
//!   annotations (mirror pod, deletion cost). Update: only images, `activeDeadlineSeconds` (decrease only),
//!   additions to tolerations, removal of scheduling gates and a negative grace period set to 1 may change, with
//!   upstream's `pod updates may not change fields other than ...` message.
//! * Deployment, ReplicaSet: replicas, selector (required, non-empty, valid, matching the template labels,
//!   immutable on update), the pod template (full pod spec validation, restartPolicy Always, no
//!   activeDeadlineSeconds), strategy and rolling update parameters, revisionHistoryLimit, progressDeadlineSeconds.
//! * Service: ports (names, numbers, protocols, target ports, duplicates, node port range 30000-32767 as the
//!   allocator reports it), type, session affinity, clusterIP/clusterIPs/ipFamilies/ipFamilyPolicy consistency,
//!   externalName, external IPs, load balancer fields, traffic policies; on update the upgrade/downgrade rules
//!   for `clusterIPs` and `ipFamilies` (`may not change once set`) unless the type is or becomes ExternalName.
//! * ConfigMap, Secret: key format, 1 MiB total size, duplicate keys across data and binaryData, base64 of
//!   binary values, the per-type required keys of secrets, `immutable: true` and secret `type` on update.
//! * Namespace, Node (taints, pod CIDRs, capacity quantities; update rules for podCIDRs and providerID),
//!   ServiceAccount, Endpoints (addresses, ports), EndpointSlice (address type, addresses, ports, hints),
//!   Event (core/v1 rules: involvedObject namespace, reporting fields for new-style events), Lease.
//! * Role, ClusterRole, RoleBinding, ClusterRoleBinding: path-segment names, policy rules (verbs; resources with
//!   api groups, or non-resource URLs, never both, and none in a Role), a ClusterRole's aggregation rule selectors,
//!   the binding's roleRef (group, kind, name; immutable on update) and subjects (kind, apiGroup, service account
//!   names and, in a ClusterRoleBinding, namespaces). Defaulting fills roleRef and subject api groups.
//! * Any other kind: metadata only, with upstream's generic path-segment name rule; the namespace is checked only
//!   when present because the scope of an unknown kind is not known here.
//!
//! ## Deliberately left out
//!
//! * Rules that need cluster state or configuration: whether a referenced Secret, ServiceAccount, PriorityClass or
//!   RuntimeClass exists, quota, admission plugins other than DefaultTolerationSeconds (below), IP and node-port allocation (the node-port range is checked;
//!   free ports are not), and feature gates (the 1.33 defaults are assumed: relaxed environment variable names,
//!   zero-second sleep actions allowed, privileged containers allowed, pod-level resources off).
//! * Less common pod corners: the dozens of legacy volume plugins beyond "exactly one source" (secret, configMap,
//!   hostPath, emptyDir, persistentVolumeClaim, nfs, csi, ephemeral, projected and downwardAPI are checked more
//!   deeply), hugepage size divisibility, resource claims, Windows options, AppArmor, sysctls, node selector and
//!   affinity mutations of scheduling-gated pods, the ephemeral-containers and resize subresources.
//! * Type errors: where upstream's JSON decoder would reject a field of the wrong JSON type (HTTP 400), this module
//!   reports a `FieldValueInvalid` at that field (`must be of type string`, `must be a 32-bit integer`, ...).
//!   Quantities that do not parse are reported the same way with upstream's quantity error text.
//! * `default_object` does not know whether it runs for a create or an update: the defaults upstream applies only
//!   on create (namespace `kubernetes` finalizer, pod `status.phase`/`status.qosClass`) are applied only when
//!   `metadata.resourceVersion` is empty, which is only the case for objects not yet stored (and the namespace
//!   finalizer never while `metadata.deletionTimestamp` is set).
//! * Namespaced kinds need `metadata.namespace`: the caller fills it from the request path before validating, as
//!   upstream does.

use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One problem with one field, as a Kubernetes StatusCause: reason is the CauseType
/// ("FieldValueRequired", "FieldValueInvalid", "FieldValueNotSupported", "FieldValueDuplicate",
/// "FieldValueTooLong", "FieldValueForbidden"...), field the path (`spec.template.spec.containers[0].image`,
/// "metadata.name"), message as upstream prints it ("Required value",
/// `Invalid value: "Foo_Bar": a lowercase RFC 1123 subdomain must consist of ...`,
/// `Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The StatusCause type, e.g. "FieldValueInvalid".
    pub reason: &'static str,
    /// The field path, e.g. `spec.containers[0].image`; empty for a non-object root.
    pub field: String,
    /// The message without the field, e.g. "Required value".
    pub message: String,
}

const R_REQUIRED: &str = "FieldValueRequired";
const R_INVALID: &str = "FieldValueInvalid";
const R_NOT_SUPPORTED: &str = "FieldValueNotSupported";
const R_DUPLICATE: &str = "FieldValueDuplicate";
const R_TOO_LONG: &str = "FieldValueTooLong";
const R_FORBIDDEN: &str = "FieldValueForbidden";
const R_NOT_FOUND: &str = "FieldValueNotFound";
const R_TOO_MANY: &str = "FieldValueTooMany";
const R_INTERNAL: &str = "InternalError";

const MSG_NEGATIVE: &str = "must be greater than or equal to 0";
const MSG_NOT_POSITIVE: &str = "must be greater than zero";
const MSG_IMMUTABLE: &str = "field is immutable";
const MSG_FILE_MODE: &str = "must be a number between 0 and 0777 (octal), both inclusive";
const MSG_QUANTITY_FORMAT: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
const MSG_QUANTITY_SUFFIX: &str = "unable to parse quantity's suffix";
const MSG_IMMUTABLE_WHEN_SET: &str = "field is immutable when `immutable` is set";
const MAX_SECRET_SIZE: usize = 1024 * 1024;
const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;
const MAX_INT32: i64 = i32::MAX as i64;
const NODE_PORT_MIN: i64 = 30000;
const NODE_PORT_MAX: i64 = 32767;

// ---------------------------------------------------------------------------------------------------------------
// Bad values and their rendering
// ---------------------------------------------------------------------------------------------------------------

/// The value an error reports, rendered the way upstream's `field.Error.ErrorBody` prints it (Kubernetes 1.33:
/// numbers and booleans plainly, strings with Go's `%q`, everything else with Go's `%#v`).
#[derive(Debug, Clone)]
enum Bad {
    Null,
    Str(String),
    Int(i64),
    Json(Value),
    StrMap(Option<BTreeMap<String, String>>),
    StrList(Option<Vec<String>>),
    /// Already rendered (Go syntax of a struct, a time, ...).
    Raw(String),
}

fn bs(s: &str) -> Bad {
    Bad::Str(s.to_string())
}

fn render(b: &Bad) -> String {
    match b {
        Bad::Null => "null".to_string(),
        Bad::Str(s) => go_quote(s),
        Bad::Int(i) => i.to_string(),
        Bad::Json(v) => match v {
            Value::Null => "null".to_string(),
            Value::String(s) => go_quote(s),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => serde_json::to_string(other).unwrap_or_default(),
        },
        Bad::StrMap(m) => go_str_map(m.as_ref()),
        Bad::StrList(l) => go_str_list(l.as_deref()),
        Bad::Raw(s) => s.clone(),
    }
}

/// Go's `strconv.Quote`.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if go_unprintable(c) => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32))
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn go_unprintable(c: char) -> bool {
    let u = c as u32;
    c.is_control()
        || (c.is_whitespace() && c != ' ')
        || u == 0xad
        || (0x200b..=0x200f).contains(&u)
        || (0x2028..=0x202e).contains(&u)
        || (0x2060..=0x2064).contains(&u)
        || u == 0xfeff
}

fn go_str_map(m: Option<&BTreeMap<String, String>>) -> String {
    match m {
        None => "map[string]string(nil)".to_string(),
        Some(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v)))
                .collect();
            format!("map[string]string{{{}}}", items.join(", "))
        }
    }
}

fn go_str_list(l: Option<&[String]>) -> String {
    match l {
        None => "[]string(nil)".to_string(),
        Some(l) => {
            let items: Vec<String> = l.iter().map(|s| go_quote(s)).collect();
            format!("[]string{{{}}}", items.join(", "))
        }
    }
}

/// `%#v` of an `intstr.IntOrString` given as JSON (a number or a string; anything else renders as the zero value).
fn go_int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => format!("intstr.IntOrString{{Type:1, IntVal:0, StrVal:{}}}", go_quote(s)),
        Some(Value::Number(n)) => {
            format!(
                "intstr.IntOrString{{Type:0, IntVal:{}, StrVal:\"\"}}",
                n.as_i64().unwrap_or(0)
            )
        }
        _ => "intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}".to_string(),
    }
}

/// Go's `time.Time.String()` for an RFC 3339 UTC timestamp; other shapes are quoted as strings.
fn go_time(v: &Value) -> String {
    match v.as_str() {
        Some(s) if s.len() >= 20 && s.ends_with('Z') && s.as_bytes().get(10) == Some(&b'T') => {
            let date = &s[..10];
            let rest = &s[11..s.len() - 1];
            let (hms, frac) = match rest.split_once('.') {
                Some((h, f)) => (h, f.trim_end_matches('0')),
                None => (rest, ""),
            };
            if frac.is_empty() {
                format!("{date} {hms} +0000 UTC")
            } else {
                format!("{date} {hms}.{frac} +0000 UTC")
            }
        }
        _ => render(&Bad::Json(v.clone())),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Error collection
// ---------------------------------------------------------------------------------------------------------------

#[derive(Default)]
struct Errs {
    list: Vec<FieldError>,
}

fn with_detail(head: String, detail: &str) -> String {
    if detail.is_empty() {
        head
    } else {
        format!("{head}: {detail}")
    }
}

fn quote_list(valid: &[&str]) -> String {
    let quoted: Vec<String> = valid.iter().map(|v| go_quote(v)).collect();
    format!("supported values: {}", quoted.join(", "))
}

impl Errs {
    fn push(&mut self, reason: &'static str, field: &str, message: String) {
        self.list.push(FieldError {
            reason,
            field: field.to_string(),
            message,
        });
    }
    fn required(&mut self, field: &str, detail: &str) {
        self.push(R_REQUIRED, field, with_detail("Required value".to_string(), detail));
    }
    fn forbidden(&mut self, field: &str, detail: &str) {
        self.push(R_FORBIDDEN, field, with_detail("Forbidden".to_string(), detail));
    }
    fn too_long(&mut self, field: &str, max: usize) {
        let unit = if max == 1 { "byte" } else { "bytes" };
        self.push(
            R_TOO_LONG,
            field,
            format!("Too long: may not be more than {max} {unit}"),
        );
    }
    fn invalid(&mut self, field: &str, bad: Bad, detail: &str) {
        self.push(
            R_INVALID,
            field,
            with_detail(format!("Invalid value: {}", render(&bad)), detail),
        );
    }
    fn not_supported(&mut self, field: &str, bad: Bad, valid: &[&str]) {
        let detail = if valid.is_empty() {
            String::new()
        } else {
            quote_list(valid)
        };
        self.push(
            R_NOT_SUPPORTED,
            field,
            with_detail(format!("Unsupported value: {}", render(&bad)), &detail),
        );
    }
    fn duplicate(&mut self, field: &str, bad: Bad) {
        self.push(R_DUPLICATE, field, format!("Duplicate value: {}", render(&bad)));
    }
    fn duplicate_detail(&mut self, field: &str, bad: Bad, detail: &str) {
        self.push(
            R_DUPLICATE,
            field,
            with_detail(format!("Duplicate value: {}", render(&bad)), detail),
        );
    }
    fn not_found(&mut self, field: &str, bad: Bad) {
        self.push(R_NOT_FOUND, field, format!("Not found: {}", render(&bad)));
    }
    fn too_many(&mut self, field: &str, actual: usize, max: usize) {
        self.push(
            R_TOO_MANY,
            field,
            format!("Too many: {actual}: must have at most {max} items"),
        );
    }
    fn internal(&mut self, field: &str, detail: &str) {
        self.push(R_INTERNAL, field, with_detail("Internal error".to_string(), detail));
    }
    fn type_mismatch(&mut self, field: &str, v: &Value, what: &str) {
        self.invalid(field, Bad::Json(v.clone()), what);
    }
    fn msgs(&mut self, field: &str, value: &str, msgs: Vec<String>) {
        for m in msgs {
            self.invalid(field, bs(value), &m);
        }
    }
    fn len(&self) -> usize {
        self.list.len()
    }
    /// The errors in order, each reported once (several upstream code paths can report the same problem).
    fn finish(self) -> Vec<FieldError> {
        let mut out: Vec<FieldError> = Vec::with_capacity(self.list.len());
        for e in self.list {
            if !out.contains(&e) {
                out.push(e);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Paths and a typed, never-panicking view of the JSON
// ---------------------------------------------------------------------------------------------------------------

fn child(p: &str, c: &str) -> String {
    if p.is_empty() {
        c.to_string()
    } else {
        format!("{p}.{c}")
    }
}

fn index(p: &str, i: usize) -> String {
    format!("{p}[{i}]")
}

fn key(p: &str, k: &str) -> String {
    format!("{p}[{k}]")
}

/// A field of the object and its path. Accessors report a type mismatch once per call and return `None`;
/// absent and `null` fields are "not set".
#[derive(Clone, Debug)]
struct At<'a> {
    v: Option<&'a Value>,
    path: String,
}

impl<'a> At<'a> {
    fn new(v: Option<&'a Value>, path: &str) -> Self {
        At {
            v,
            path: path.to_string(),
        }
    }
    fn get(&self, k: &str) -> At<'a> {
        At {
            v: self.v.and_then(Value::as_object).and_then(|m| m.get(k)),
            path: child(&self.path, k),
        }
    }
    fn val(&self) -> Option<&'a Value> {
        self.v.filter(|v| !v.is_null())
    }
    fn is_set(&self) -> bool {
        self.val().is_some()
    }
    fn obj(&self, e: &mut Errs) -> Option<&'a Map<String, Value>> {
        match self.val() {
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                e.type_mismatch(&self.path, other, "must be of type object");
                None
            }
        }
    }
    fn items(&self, e: &mut Errs) -> Vec<At<'a>> {
        match self.val() {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| At {
                    v: Some(v),
                    path: index(&self.path, i),
                })
                .collect(),
            Some(other) => {
                e.type_mismatch(&self.path, other, "must be of type array");
                Vec::new()
            }
        }
    }
    /// Number of elements, without reporting anything.
    fn count(&self) -> usize {
        match self.val() {
            Some(Value::Array(a)) => a.len(),
            Some(Value::Object(m)) => m.len(),
            _ => 0,
        }
    }
    fn str_opt(&self, e: &mut Errs) -> Option<&'a str> {
        match self.val() {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                e.type_mismatch(&self.path, other, "must be of type string");
                None
            }
        }
    }
    fn s(&self, e: &mut Errs) -> &'a str {
        self.str_opt(e).unwrap_or("")
    }
    fn int(&self, e: &mut Errs) -> Option<i64> {
        match self.val() {
            None => None,
            Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
            Some(other) => {
                e.type_mismatch(&self.path, other, "must be of type integer");
                None
            }
        }
    }
    fn int32(&self, e: &mut Errs) -> Option<i64> {
        let v = self.int(e)?;
        if v < i32::MIN as i64 || v > MAX_INT32 {
            e.invalid(&self.path, Bad::Int(v), "must be a 32-bit integer");
            return None;
        }
        Some(v)
    }
    fn boolean(&self, e: &mut Errs) -> Option<bool> {
        match self.val() {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                e.type_mismatch(&self.path, other, "must be of type boolean");
                None
            }
        }
    }
    /// A `map[string]string`; `None` when not set.
    fn str_map(&self, e: &mut Errs) -> Option<BTreeMap<String, String>> {
        let m = self.obj(e)?;
        let mut out = BTreeMap::new();
        for (k, v) in m {
            match v {
                Value::String(s) => {
                    out.insert(k.clone(), s.clone());
                }
                Value::Null => {
                    out.insert(k.clone(), String::new());
                }
                other => e.type_mismatch(&key(&self.path, k), other, "must be of type string"),
            }
        }
        Some(out)
    }
    /// A `[]string`; `None` when not set.
    fn str_list(&self, e: &mut Errs) -> Option<Vec<String>> {
        let v = self.val()?;
        let Value::Array(a) = v else {
            e.type_mismatch(&self.path, v, "must be of type array");
            return None;
        };
        let mut out = Vec::with_capacity(a.len());
        for (i, item) in a.iter().enumerate() {
            match item {
                Value::String(s) => out.push(s.clone()),
                other => e.type_mismatch(&index(&self.path, i), other, "must be of type string"),
            }
        }
        Some(out)
    }
    /// Entries of an object, each with a `[key]` path.
    fn entries(&self, e: &mut Errs) -> Vec<(String, At<'a>)> {
        match self.obj(e) {
            None => Vec::new(),
            Some(m) => m
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        At {
                            v: Some(v),
                            path: key(&self.path, k),
                        },
                    )
                })
                .collect(),
        }
    }
}

fn nonneg(e: &mut Errs, at: &At) {
    if let Some(v) = at.int(e) {
        if v < 0 {
            e.invalid(&at.path, Bad::Int(v), MSG_NEGATIVE);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// k8s.io/apimachinery/pkg/util/validation: formats and their messages
// ---------------------------------------------------------------------------------------------------------------

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_MSG: &str =
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start \
with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' \
or '.', and must start and end with an alphanumeric character";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";
const PERCENT_FMT: &str = "[0-9]+%";
const PERCENT_MSG: &str = "a valid percent string must be a numeric string followed by an ending '%'";
const HTTP_HEADER_FMT: &str = "[-A-Za-z0-9]+";
const HTTP_HEADER_MSG: &str = "a valid HTTP header must consist of alphanumeric characters or '-'";
const RELAXED_ENV_MSG: &str =
    "a valid environment variable name must consist only of printable ASCII characters other than '='";

pub(crate) fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, ex) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(ex);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(fmt);
    out.push_str("')");
    out
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn range_error(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

fn lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && lower_alnum(b[0]) && lower_alnum(b[b.len() - 1]) && b.iter().all(|&c| lower_alnum(c) || c == b'-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_dns1123_label)
}

fn dns1123_label_errs(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !is_dns1123_label(s) {
        if is_dns1123_subdomain(s) {
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_MSG,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

fn dns1123_subdomain_errs(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !is_dns1123_subdomain(s) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

fn dns1035_label_errs(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b[0].is_ascii_lowercase()
        && lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| lower_alnum(c) || c == b'-');
    if !ok {
        errs.push(regex_error(
            DNS1035_LABEL_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

fn qualified_name_errs(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.len() {
        1 => parts[0],
        2 => {
            let prefix = parts[0];
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for m in dns1123_subdomain_errs(prefix) {
                    errs.push(format!("prefix part {m}"));
                }
            }
            parts[1]
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_MSG,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

fn label_value_errs(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !s.is_empty() && !is_qualified_name_part(s) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

fn chdir_prefix_errs(s: &str) -> Vec<String> {
    if s == "." {
        vec!["must not be '.'".to_string()]
    } else if s == ".." {
        vec!["must not be '..'".to_string()]
    } else if s.starts_with("..") {
        vec!["must not start with '..'".to_string()]
    } else {
        Vec::new()
    }
}

fn config_key_errs(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    let ok = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
    if !ok {
        errs.push(regex_error(
            CONFIG_KEY_MSG,
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    errs.extend(chdir_prefix_errs(s));
    errs
}

fn port_name_errs(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 15 {
        errs.push(max_len_error(15));
    }
    if s.is_empty() || !s.bytes().all(|c| lower_alnum(c) || c == b'-') {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string());
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

fn port_num_errs(p: i64) -> Vec<String> {
    if (1..=65535).contains(&p) {
        Vec::new()
    } else {
        vec![range_error(1, 65535)]
    }
}

fn is_percent(s: &str) -> bool {
    s.len() >= 2 && s.ends_with('%') && s[..s.len() - 1].bytes().all(|c| c.is_ascii_digit())
}

fn http_header_errs(s: &str) -> Vec<String> {
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
        Vec::new()
    } else {
        vec![regex_error(HTTP_HEADER_MSG, HTTP_HEADER_FMT, &["X-Header-Name"])]
    }
}

/// `IsRelaxedEnvVarName` (the RelaxedEnvironmentVariableValidation gate is on by default since 1.32).
fn env_name_errs(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.is_empty() {
        errs.push("environment variable name must be non-empty".to_string());
    }
    if s.chars().any(|c| !(' '..='~').contains(&c) || c == '=') {
        errs.push(RELAXED_ENV_MSG.to_string());
    }
    errs
}

/// How a kind's `metadata.name` is validated.
#[derive(Clone, Copy, PartialEq)]
enum NameRule {
    Subdomain,
    Label,
    Dns1035,
    PathSegment,
}

/// Upstream's `maskTrailingDash`: a generated-name prefix may end with a dash.
fn mask_trailing_dash(name: &str) -> String {
    if name.len() > 1 && name.ends_with('-') && name.is_ascii() {
        format!("{}a", &name[..name.len() - 2])
    } else {
        name.to_string()
    }
}

fn name_errs(rule: NameRule, name: &str, prefix: bool) -> Vec<String> {
    let name = if prefix && rule != NameRule::PathSegment {
        mask_trailing_dash(name)
    } else {
        name.to_string()
    };
    match rule {
        NameRule::Subdomain => dns1123_subdomain_errs(&name),
        NameRule::Label => dns1123_label_errs(&name),
        NameRule::Dns1035 => dns1035_label_errs(&name),
        NameRule::PathSegment => path_segment_errs(&name, prefix),
    }
}

fn path_segment_errs(name: &str, prefix: bool) -> Vec<String> {
    if !prefix {
        for bad in [".", ".."] {
            if name == bad {
                return vec![format!("may not be '{bad}'")];
            }
        }
    }
    let mut errs = Vec::new();
    for bad in ["/", "%"] {
        if name.contains(bad) {
            errs.push(format!("may not contain '{bad}'"));
        }
    }
    errs
}

// ---------------------------------------------------------------------------------------------------------------
// Resource quantities (k8s.io/apimachinery/pkg/api/resource), exact decimal arithmetic on digit strings
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QFormat {
    DecimalSI,
    BinarySI,
    DecimalExponent,
}

/// A quantity as `(-1)^neg * digits * 10^exp`; `digits` are most significant first, without leading or trailing
/// zeros, and empty for zero.
#[derive(Clone, Debug)]
struct Quantity {
    neg: bool,
    digits: Vec<u8>,
    exp: i64,
    format: QFormat,
}

const MAX_QUANTITY_DIGITS: usize = 256;

fn mul_small(d: &[u8], m: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(d.len() + 10);
    let mut carry: u64 = 0;
    for &x in d.iter().rev() {
        let v = x as u64 * m as u64 + carry;
        out.push((v % 10) as u8);
        carry = v / 10;
    }
    while carry > 0 {
        out.push((carry % 10) as u8);
        carry /= 10;
    }
    out.reverse();
    strip_leading(out)
}

fn divmod_small(d: &[u8], m: u32) -> (Vec<u8>, u32) {
    let mut out = Vec::with_capacity(d.len());
    let mut rem: u64 = 0;
    for &x in d {
        let v = rem * 10 + x as u64;
        out.push((v / m as u64) as u8);
        rem = v % m as u64;
    }
    (strip_leading(out), rem as u32)
}

fn add_one(d: &[u8]) -> Vec<u8> {
    let mut out = d.to_vec();
    for x in out.iter_mut().rev() {
        if *x == 9 {
            *x = 0;
        } else {
            *x += 1;
            return out;
        }
    }
    out.insert(0, 1);
    out
}

fn strip_leading(mut d: Vec<u8>) -> Vec<u8> {
    let n = d.iter().take_while(|&&x| x == 0).count();
    d.drain(..n);
    d
}

fn add_digits(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len().max(b.len()) + 1);
    let (mut i, mut j, mut carry) = (a.len(), b.len(), 0u8);
    while i > 0 || j > 0 || carry > 0 {
        let x = if i > 0 { a[i - 1] } else { 0 };
        let y = if j > 0 { b[j - 1] } else { 0 };
        let s = x + y + carry;
        out.push(s % 10);
        carry = s / 10;
        i = i.saturating_sub(1);
        j = j.saturating_sub(1);
    }
    out.reverse();
    strip_leading(out)
}

fn digits_to_string(d: &[u8]) -> String {
    if d.is_empty() {
        return "0".to_string();
    }
    d.iter().map(|x| char::from(b'0' + x)).collect()
}

impl Quantity {
    fn zero() -> Self {
        Quantity {
            neg: false,
            digits: Vec::new(),
            exp: 0,
            format: QFormat::DecimalSI,
        }
    }

    /// `resource.ParseQuantity`, including its rounding of sub-nano values up to 1n.
    fn parse(s: &str) -> Result<Quantity, &'static str> {
        let b = s.as_bytes();
        if b.is_empty() {
            return Err(MSG_QUANTITY_FORMAT);
        }
        let end = b.len();
        let mut pos = 0;
        let mut neg = false;
        match b[0] {
            b'-' => {
                neg = true;
                pos = 1;
            }
            b'+' => pos = 1,
            _ => {}
        }
        while pos < end && b[pos] == b'0' {
            pos += 1;
        }
        if pos >= end {
            return Ok(Quantity::zero());
        }
        let ns = pos;
        while pos < end && b[pos].is_ascii_digit() {
            pos += 1;
        }
        let num = &s[ns..pos];
        let mut denom = "";
        if pos < end && b[pos] == b'.' {
            pos += 1;
            let ds = pos;
            while pos < end && b[pos].is_ascii_digit() {
                pos += 1;
            }
            denom = &s[ds..pos];
        }
        let ss = pos;
        while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
            pos += 1;
        }
        if pos < end && (b[pos] == b'-' || b[pos] == b'+') {
            pos += 1;
        }
        while pos < end && b[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos < end {
            return Err(MSG_QUANTITY_FORMAT);
        }
        let suffix = &s[ss..];
        let (binary, exponent, format) = match suffix {
            "" => (false, 0i64, QFormat::DecimalSI),
            "n" => (false, -9, QFormat::DecimalSI),
            "u" => (false, -6, QFormat::DecimalSI),
            "m" => (false, -3, QFormat::DecimalSI),
            "k" => (false, 3, QFormat::DecimalSI),
            "M" => (false, 6, QFormat::DecimalSI),
            "G" => (false, 9, QFormat::DecimalSI),
            "T" => (false, 12, QFormat::DecimalSI),
            "P" => (false, 15, QFormat::DecimalSI),
            "E" => (false, 18, QFormat::DecimalSI),
            "Ki" => (true, 1, QFormat::BinarySI),
            "Mi" => (true, 2, QFormat::BinarySI),
            "Gi" => (true, 3, QFormat::BinarySI),
            "Ti" => (true, 4, QFormat::BinarySI),
            "Pi" => (true, 5, QFormat::BinarySI),
            "Ei" => (true, 6, QFormat::BinarySI),
            _ if suffix.len() > 1 && (suffix.starts_with('e') || suffix.starts_with('E')) => {
                match suffix[1..].parse::<i64>() {
                    Ok(x) if (i32::MIN as i64..=MAX_INT32).contains(&x) => (false, x, QFormat::DecimalExponent),
                    _ => return Err(MSG_QUANTITY_SUFFIX),
                }
            }
            _ => return Err(MSG_QUANTITY_SUFFIX),
        };
        if num.len() + denom.len() > MAX_QUANTITY_DIGITS {
            return Err(MSG_QUANTITY_FORMAT);
        }
        let mut digits: Vec<u8> = num.bytes().chain(denom.bytes()).map(|c| c - b'0').collect();
        let mut exp = -(denom.len() as i64);
        if binary {
            for _ in 0..exponent {
                digits = mul_small(&digits, 1024);
            }
        } else {
            exp += exponent;
        }
        let mut q = Quantity {
            neg,
            digits,
            exp,
            format,
        };
        q.normalize();
        q.round_up(-9);
        Ok(q)
    }

    /// A quantity given in JSON: a string, or a number (which upstream also accepts).
    fn from_json(v: &Value) -> Option<Result<Quantity, &'static str>> {
        match v {
            Value::String(s) => Some(Quantity::parse(s)),
            Value::Number(n) => Some(Quantity::parse(&n.to_string())),
            _ => None,
        }
    }

    fn normalize(&mut self) {
        let d = strip_leading(std::mem::take(&mut self.digits));
        let trailing = d.iter().rev().take_while(|&&x| x == 0).count();
        self.digits = d[..d.len() - trailing].to_vec();
        if self.digits.is_empty() {
            self.neg = false;
            self.exp = 0;
        } else {
            self.exp += trailing as i64;
        }
    }

    fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    fn is_integer(&self) -> bool {
        self.is_zero() || self.exp >= 0
    }

    /// Rounds the magnitude up to a multiple of `10^scale` (upstream's `RoundUp` / `inf.RoundUp`).
    fn round_up(&mut self, scale: i64) {
        if self.is_zero() || self.exp >= scale {
            return;
        }
        let drop = (scale - self.exp) as u64;
        if drop >= self.digits.len() as u64 {
            self.digits = vec![1];
        } else {
            let keep = self.digits.len() - drop as usize;
            let kept = self.digits[..keep].to_vec();
            self.digits = if keep == 0 { vec![1] } else { add_one(&kept) };
        }
        self.exp = scale;
        self.normalize();
    }

    fn cmp_abs(&self, o: &Quantity) -> Ordering {
        match (self.is_zero(), o.is_zero()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        let oa = self.digits.len() as i64 + self.exp;
        let ob = o.digits.len() as i64 + o.exp;
        if oa != ob {
            return oa.cmp(&ob);
        }
        let n = self.digits.len().max(o.digits.len());
        for i in 0..n {
            let x = self.digits.get(i).copied().unwrap_or(0);
            let y = o.digits.get(i).copied().unwrap_or(0);
            if x != y {
                return x.cmp(&y);
            }
        }
        Ordering::Equal
    }

    fn cmp(&self, o: &Quantity) -> Ordering {
        match (self.neg && !self.is_zero(), o.neg && !o.is_zero()) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_abs(o),
            (true, true) => o.cmp_abs(self),
        }
    }

    fn is_negative(&self) -> bool {
        self.neg && !self.is_zero()
    }

    /// Sum of two non-negative quantities (used for QoS classification).
    fn add(&self, o: &Quantity) -> Quantity {
        if self.is_zero() {
            return o.clone();
        }
        if o.is_zero() {
            return self.clone();
        }
        let exp = self.exp.min(o.exp);
        let pad = |q: &Quantity| {
            let mut d = q.digits.clone();
            d.extend(std::iter::repeat_n(0u8, (q.exp - exp).min(4096) as usize));
            d
        };
        let mut q = Quantity {
            neg: false,
            digits: add_digits(&pad(self), &pad(o)),
            exp,
            format: self.format,
        };
        q.normalize();
        q
    }

    /// `Quantity.String()`: the canonical form upstream writes back.
    fn canonical(&self) -> String {
        if self.is_zero() {
            return "0".to_string();
        }
        let sign = if self.neg { "-" } else { "" };
        let mut format = self.format;
        let mut binary_value: Option<Vec<u8>> = None;
        if format == QFormat::BinarySI {
            let kibi = Quantity {
                neg: false,
                digits: vec![1, 0, 2, 4],
                exp: 0,
                format: QFormat::DecimalSI,
            };
            if self.cmp_abs(&kibi) == Ordering::Less || !self.is_integer() || self.exp > 1000 {
                format = QFormat::DecimalSI;
            } else {
                let mut d = self.digits.clone();
                d.extend(std::iter::repeat_n(0u8, self.exp as usize));
                binary_value = Some(d);
            }
        }
        if let Some(mut d) = binary_value {
            let mut steps = 0;
            while steps < 6 {
                let (q, r) = divmod_small(&d, 1024);
                if r != 0 || q.is_empty() {
                    break;
                }
                d = q;
                steps += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][steps];
            return format!("{sign}{}{suffix}", digits_to_string(&d));
        }
        let rem = self.exp.rem_euclid(3);
        let mut d = self.digits.clone();
        d.extend(std::iter::repeat_n(0u8, rem as usize));
        let exp = self.exp - rem;
        let si = match exp {
            -9 => Some("n"),
            -6 => Some("u"),
            -3 => Some("m"),
            0 => Some(""),
            3 => Some("k"),
            6 => Some("M"),
            9 => Some("G"),
            12 => Some("T"),
            15 => Some("P"),
            18 => Some("E"),
            _ => None,
        };
        let suffix = match (format, si) {
            (QFormat::DecimalSI, Some(s)) => s.to_string(),
            (_, _) if exp == 0 => String::new(),
            _ => format!("e{exp}"),
        };
        format!("{sign}{}{suffix}", digits_to_string(&d))
    }
}

// ---------------------------------------------------------------------------------------------------------------
// IP addresses and CIDRs (k8s.io/apimachinery/pkg/util/validation/ip.go)
// ---------------------------------------------------------------------------------------------------------------

/// Go's `netutils.ParseIPSloppy`: like the strict parser but IPv4 octets may have leading zeros.
fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|c| c.is_ascii_digit()))
    {
        let mut o = [0u8; 4];
        for (i, p) in parts.iter().enumerate() {
            o[i] = p.parse::<u8>().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(o)));
    }
    None
}

fn ip_string(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// `IsValidIP`: a strictly formatted, canonical IPv4 or IPv6 address.
fn validate_ip(e: &mut Errs, path: &str, s: &str) -> Option<IpAddr> {
    match s.parse::<IpAddr>() {
        Ok(ip) => {
            if let IpAddr::V6(v6) = ip {
                if v6.to_ipv4_mapped().is_some() {
                    e.invalid(path, bs(s), "must not be an IPv4-mapped IPv6 address");
                    return None;
                }
            }
            let canon = ip_string(&ip);
            if canon != s {
                e.invalid(
                    path,
                    bs(s),
                    &format!("must be in canonical form ({})", go_quote(&canon)),
                );
                return None;
            }
            Some(ip)
        }
        Err(_) => {
            if parse_ip_sloppy(s).is_some() {
                e.invalid(path, bs(s), "must not have leading 0s");
            } else {
                e.invalid(
                    path,
                    bs(s),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                );
            }
            None
        }
    }
}

/// Whether an address may be in the loopback range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loopback {
    Refused,
    Allowed,
}

/// `ValidateNonSpecialIP` / `ValidateEndpointIP`. Capstan deviates for endpoint
/// addresses (`Loopback::Allowed`): its pods run as local processes with addresses from
/// a cluster CIDR inside 127.0.0.0/8 (node IPAM's default), so Endpoints and
/// EndpointSlices must be able to name them. Service external IPs keep upstream's rule.
fn validate_non_special_ip(e: &mut Errs, path: &str, s: &str, loopback_rule: Loopback) {
    let Some(ip) = parse_ip_sloppy(s) else {
        e.invalid(path, bs(s), "must be a valid IP address");
        return;
    };
    let (unspecified, loopback, link_local, ll_multicast) = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (
                v4.is_unspecified(),
                v4.is_loopback(),
                o[0] == 169 && o[1] == 254,
                o[0] == 224 && o[1] == 0 && o[2] == 0,
            )
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            let mapped = v6.to_ipv4_mapped();
            if let Some(v4) = mapped {
                let o = v4.octets();
                (
                    v4.is_unspecified(),
                    v4.is_loopback(),
                    o[0] == 169 && o[1] == 254,
                    o[0] == 224 && o[1] == 0 && o[2] == 0,
                )
            } else {
                (
                    v6 == Ipv6Addr::UNSPECIFIED,
                    v6 == Ipv6Addr::LOCALHOST,
                    (seg[0] & 0xffc0) == 0xfe80,
                    (seg[0] & 0xff0f) == 0xff02,
                )
            }
        }
    };
    if unspecified {
        e.invalid(path, bs(s), &format!("may not be unspecified ({s})"));
    }
    if loopback && loopback_rule == Loopback::Refused {
        e.invalid(path, bs(s), "may not be in the loopback range (127.0.0.0/8, ::1/128)");
    }
    if link_local {
        e.invalid(
            path,
            bs(s),
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        );
    }
    if ll_multicast {
        e.invalid(
            path,
            bs(s),
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        );
    }
}

fn is_ipv6_string(s: &str) -> bool {
    matches!(parse_ip_sloppy(s), Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none())
}

/// `IsValidCIDR`: a strictly formatted, canonical CIDR without host bits. Returns whether it is IPv6.
fn validate_cidr(e: &mut Errs, path: &str, s: &str) -> Option<bool> {
    let bad = |e: &mut Errs| {
        e.invalid(
            path,
            bs(s),
            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        )
    };
    let Some((ip_s, len_s)) = s.split_once('/') else {
        bad(e);
        return None;
    };
    let Some(ip) = parse_ip_sloppy(ip_s) else {
        bad(e);
        return None;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let Ok(len) = len_s.parse::<u32>() else {
        bad(e);
        return None;
    };
    if len > max || len_s.is_empty() || len_s.starts_with('+') {
        bad(e);
        return None;
    }
    if ip_s.parse::<IpAddr>().is_err() || (len_s.len() > 1 && len_s.starts_with('0')) {
        e.invalid(path, bs(s), "must not have leading 0s in IP or prefix length");
        return None;
    }
    if let IpAddr::V6(v6) = ip {
        if v6.to_ipv4_mapped().is_some() {
            e.invalid(path, bs(s), "must not have an IPv4-mapped IPv6 address");
            return None;
        }
    }
    let masked = match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4(Ipv4Addr::from(bits & mask))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
    };
    if masked != ip {
        e.invalid(path, bs(s), "must not have bits set beyond the prefix length");
        return None;
    }
    let canon = format!("{}/{}", ip_string(&masked), len);
    if canon != s {
        e.invalid(
            path,
            bs(s),
            &format!("must be in canonical form ({})", go_quote(&canon)),
        );
        return None;
    }
    Some(ip.is_ipv6())
}

// ---------------------------------------------------------------------------------------------------------------
// Object metadata (k8s.io/apimachinery/pkg/api/validation/objectmeta.go and core's additions)
// ---------------------------------------------------------------------------------------------------------------

fn validate_labels(e: &mut Errs, at: &At) {
    let Some(labels) = at.str_map(e) else { return };
    for (k, v) in &labels {
        e.msgs(&at.path, k, qualified_name_errs(k));
        e.msgs(&at.path, v, label_value_errs(v));
    }
}

fn validate_annotations(e: &mut Errs, at: &At) {
    let Some(ann) = at.str_map(e) else { return };
    let mut total = 0usize;
    for (k, v) in &ann {
        e.msgs(&at.path, k, qualified_name_errs(&k.to_lowercase()));
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE {
        e.too_long(&at.path, TOTAL_ANNOTATION_SIZE);
    }
}

/// `%#v` of a `v1.OwnerReference`.
fn go_owner_ref(r: &Value) -> String {
    let s = |k: &str| go_quote(r.get(k).and_then(Value::as_str).unwrap_or(""));
    let b = |k: &str| match r.get(k).and_then(Value::as_bool) {
        Some(v) => format!("&{v}"),
        None => "(*bool)(nil)".to_string(),
    };
    format!(
        "v1.OwnerReference{{APIVersion:{}, Kind:{}, Name:{}, UID:{}, Controller:{}, BlockOwnerDeletion:{}}}",
        s("apiVersion"),
        s("kind"),
        s("name"),
        s("uid"),
        b("controller"),
        b("blockOwnerDeletion")
    )
}

fn validate_owner_references(e: &mut Errs, at: &At) {
    let refs = at.items(e);
    let mut first_controller: Option<String> = None;
    for r in &refs {
        if r.obj(e).is_none() {
            continue;
        }
        let api_version = r.get("apiVersion").s(e);
        let kind = r.get("kind").s(e);
        let name = r.get("name").s(e);
        let uid = r.get("uid").s(e);
        // schema.ParseGroupVersion: "" -> empty, "v1" -> version only, "g/v" -> both, more slashes -> invalid.
        let (group, version) = match api_version.split('/').collect::<Vec<_>>().as_slice() {
            [v] => ("", *v),
            [g, v] => (*g, *v),
            _ => ("", ""),
        };
        if version.is_empty() {
            e.invalid(
                &child(&at.path, "apiVersion"),
                bs(api_version),
                "version must not be empty",
            );
        }
        if kind.is_empty() {
            e.invalid(&child(&at.path, "kind"), bs(kind), "kind must not be empty");
        }
        if name.is_empty() {
            e.invalid(&child(&at.path, "name"), bs(name), "name must not be empty");
        }
        if uid.is_empty() {
            e.invalid(&child(&at.path, "uid"), bs(uid), "uid must not be empty");
        }
        if group.is_empty() && version == "v1" && kind == "Event" {
            let raw = r.val().map(go_owner_ref).unwrap_or_default();
            e.invalid(
                &at.path,
                Bad::Raw(raw),
                "/v1, Kind=Event is disallowed from being an owner",
            );
        }
        if r.get("controller").boolean(e) == Some(true) {
            let current = format!("{kind}/{name}");
            match &first_controller {
                Some(first) => {
                    let all: Vec<String> = refs.iter().filter_map(|x| x.val()).map(go_owner_ref).collect();
                    e.invalid(
                        &at.path,
                        Bad::Raw(format!("[]v1.OwnerReference{{{}}}", all.join(", "))),
                        &format!(
                            "Only one reference can have Controller set to true. \
                             Found \"true\" in references for {first} and {current}"
                        ),
                    );
                }
                None => first_controller = Some(current),
            }
        }
    }
}

fn is_standard_finalizer(s: &str) -> bool {
    matches!(s, "kubernetes" | "orphan" | "foregroundDeletion")
}

/// apimachinery's `ValidateFinalizers` (errors at the list's path) plus core's `validateKubeFinalizerName`
/// (errors at each element's path).
fn validate_finalizers(e: &mut Errs, at: &At) {
    let Some(list) = at.str_list(e) else { return };
    for f in &list {
        e.msgs(&at.path, f, qualified_name_errs(f));
    }
    if list.iter().any(|f| f == "orphan") && list.iter().any(|f| f == "foregroundDeletion") {
        e.invalid(
            &at.path,
            Bad::StrList(Some(list.clone())),
            "finalizer orphan and foregroundDeletion cannot be both set",
        );
    }
    validate_kube_finalizer_names(e, at, &list);
}

fn validate_kube_finalizer_names(e: &mut Errs, at: &At, list: &[String]) {
    for (i, f) in list.iter().enumerate() {
        if !f.contains('/') && !is_standard_finalizer(f) {
            e.invalid(
                &index(&at.path, i),
                bs(f),
                "name is neither a standard finalizer name nor is it fully qualified",
            );
        }
    }
}

/// `ValidateObjectMeta` (core flavour). `requires_ns`: `Some(true)` namespaced, `Some(false)` cluster-scoped,
/// `None` unknown scope (namespace checked only when present).
fn validate_object_meta(e: &mut Errs, meta: &At, requires_ns: Option<bool>, rule: NameRule) {
    meta.obj(e);
    let generate_name = meta.get("generateName").s(e);
    if !generate_name.is_empty() {
        e.msgs(
            &child(&meta.path, "generateName"),
            generate_name,
            name_errs(rule, generate_name, true),
        );
    }
    let name = meta.get("name").s(e);
    let name_path = child(&meta.path, "name");
    if name.is_empty() {
        e.required(&name_path, "name or generateName is required");
    } else {
        e.msgs(&name_path, name, name_errs(rule, name, false));
    }
    let ns = meta.get("namespace").s(e);
    let ns_path = child(&meta.path, "namespace");
    match requires_ns {
        Some(true) if ns.is_empty() => e.required(&ns_path, ""),
        Some(false) if !ns.is_empty() => e.forbidden(&ns_path, "not allowed on this type"),
        Some(false) => {}
        _ => {
            if !ns.is_empty() {
                e.msgs(&ns_path, ns, name_errs(NameRule::Label, ns, false));
            }
        }
    }
    nonneg(e, &meta.get("generation"));
    validate_labels(e, &meta.get("labels"));
    validate_annotations(e, &meta.get("annotations"));
    validate_owner_references(e, &meta.get("ownerReferences"));
    validate_finalizers(e, &meta.get("finalizers"));
}

/// `ValidateObjectMetaUpdate` (core flavour), minus the resourceVersion check, which the caller owns.
/// Upstream's `rest.BeforeUpdate` copies uid, creationTimestamp, deletionTimestamp and
/// deletionGracePeriodSeconds from the stored object when the update omits them; an omitted value is therefore
/// not a change here either.
fn validate_object_meta_update(e: &mut Errs, new: &At, old: &At) {
    new.obj(e);
    let mut scratch = Errs::default();
    let old_fin = old.get("finalizers").str_list(&mut scratch).unwrap_or_default();
    let new_fin = new.get("finalizers").str_list(e);
    if old.get("deletionTimestamp").is_set() {
        let extra: BTreeSet<String> = new_fin
            .iter()
            .flatten()
            .filter(|f| !old_fin.contains(f))
            .cloned()
            .collect();
        if !extra.is_empty() {
            let list: Vec<String> = extra.into_iter().collect();
            e.forbidden(
                &child(&new.path, "finalizers"),
                &format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers {}",
                    go_str_list(Some(&list))
                ),
            );
        }
    }
    let new_gen = new.get("generation").int(e);
    let old_gen = old.get("generation").int(&mut scratch);
    if let (Some(n), Some(o)) = (new_gen, old_gen) {
        if n < o {
            e.invalid(&child(&new.path, "generation"), Bad::Int(n), "must not be decremented");
        }
    }
    for f in ["name", "namespace"] {
        let n = new.get(f).s(e);
        let o = old.get(f).s(&mut scratch);
        if n != o {
            e.invalid(&child(&new.path, f), bs(n), MSG_IMMUTABLE);
        }
    }
    let n_uid = new.get("uid").s(e);
    let o_uid = old.get("uid").s(&mut scratch);
    if !n_uid.is_empty() && n_uid != o_uid {
        e.invalid(&child(&new.path, "uid"), bs(n_uid), MSG_IMMUTABLE);
    }
    for f in ["creationTimestamp", "deletionTimestamp"] {
        if let Some(n) = new.get(f).val() {
            if old.get(f).val() != Some(n) {
                e.invalid(&child(&new.path, f), Bad::Raw(go_time(n)), MSG_IMMUTABLE);
            }
        }
    }
    if let Some(n) = new.get("deletionGracePeriodSeconds").int(e) {
        if old.get("deletionGracePeriodSeconds").int(&mut scratch) != Some(n) {
            e.invalid(
                &child(&new.path, "deletionGracePeriodSeconds"),
                Bad::Int(n),
                MSG_IMMUTABLE,
            );
        }
    }
    validate_labels(e, &new.get("labels"));
    validate_annotations(e, &new.get("annotations"));
    validate_owner_references(e, &new.get("ownerReferences"));
    if let Some(list) = new_fin {
        validate_kube_finalizer_names(e, &new.get("finalizers"), &list);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Label selectors (k8s.io/apimachinery/pkg/apis/meta/v1/validation)
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct Requirement {
    key: String,
    op: String,
    values: Option<Vec<String>>,
}

#[derive(Clone, Debug)]
struct Selector {
    match_labels: Option<BTreeMap<String, String>>,
    exprs: Option<Vec<Requirement>>,
}

impl Selector {
    fn is_empty(&self) -> bool {
        self.match_labels.as_ref().is_none_or(|m| m.is_empty()) && self.exprs.as_ref().is_none_or(|x| x.is_empty())
    }
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        for (k, v) in self.match_labels.iter().flatten() {
            if labels.get(k) != Some(v) {
                return false;
            }
        }
        for r in self.exprs.iter().flatten() {
            let have = labels.get(&r.key);
            let values = r.values.clone().unwrap_or_default();
            let ok = match r.op.as_str() {
                "In" => have.is_some_and(|v| values.contains(v)),
                "NotIn" => have.is_none_or(|v| !values.contains(v)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
        true
    }
    /// Semantic equality (nil and empty collections are equal).
    fn same(&self, o: &Selector) -> bool {
        self.match_labels.clone().unwrap_or_default() == o.match_labels.clone().unwrap_or_default()
            && self.exprs.clone().unwrap_or_default() == o.exprs.clone().unwrap_or_default()
    }
    /// `%#v` of the `v1.LabelSelector`.
    fn go(&self) -> String {
        let exprs = match &self.exprs {
            None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
            Some(list) => {
                let items: Vec<String> = list
                    .iter()
                    .map(|r| {
                        format!(
                            "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                            go_quote(&r.key),
                            go_quote(&r.op),
                            go_str_list(r.values.as_deref())
                        )
                    })
                    .collect();
                format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
            }
        };
        format!(
            "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{}}}",
            go_str_map(self.match_labels.as_ref()),
            exprs
        )
    }
}

/// Reads a label selector without reporting anything (for comparisons against the old object).
fn read_selector(at: &At) -> Option<Selector> {
    let mut scratch = Errs::default();
    parse_selector(&mut scratch, at)
}

fn parse_selector(e: &mut Errs, at: &At) -> Option<Selector> {
    at.obj(e)?;
    let match_labels = at.get("matchLabels").str_map(e);
    let exprs_at = at.get("matchExpressions");
    let exprs = if exprs_at.is_set() {
        let mut list = Vec::new();
        for item in exprs_at.items(e) {
            item.obj(e);
            list.push(Requirement {
                key: item.get("key").s(e).to_string(),
                op: item.get("operator").s(e).to_string(),
                values: item.get("values").str_list(e),
            });
        }
        Some(list)
    } else {
        None
    };
    Some(Selector { match_labels, exprs })
}

/// `ValidateLabelSelector` (strict label values). Returns the selector, if set.
fn validate_label_selector(e: &mut Errs, at: &At) -> Option<Selector> {
    let sel = parse_selector(e, at)?;
    validate_labels(e, &at.get("matchLabels"));
    let exprs_path = child(&at.path, "matchExpressions");
    for (i, r) in sel.exprs.iter().flatten().enumerate() {
        let p = index(&exprs_path, i);
        let n_values = r.values.as_ref().map_or(0, Vec::len);
        match r.op.as_str() {
            "In" | "NotIn" => {
                if n_values == 0 {
                    e.required(
                        &child(&p, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    );
                }
            }
            "Exists" | "DoesNotExist" => {
                if n_values > 0 {
                    e.forbidden(
                        &child(&p, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    );
                }
            }
            _ => e.invalid(&child(&p, "operator"), bs(&r.op), "not a valid selector operator"),
        }
        e.msgs(&child(&p, "key"), &r.key, qualified_name_errs(&r.key));
        for (j, v) in r.values.iter().flatten().enumerate() {
            e.msgs(&index(&child(&p, "values"), j), v, label_value_errs(v));
        }
    }
    Some(sel)
}

// ---------------------------------------------------------------------------------------------------------------
// Semantic equality of JSON (apiequality.Semantic: absent, null and empty values compare equal)
// ---------------------------------------------------------------------------------------------------------------

fn is_zero_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
    }
}

fn sem_eq(a: Option<&Value>, b: Option<&Value>) -> bool {
    let a = a.filter(|v| !is_zero_value(v));
    let b = b.filter(|v| !is_zero_value(v));
    match (a, b) {
        (None, None) => true,
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            x.keys().chain(y.keys()).all(|k| sem_eq(x.get(k), y.get(k)))
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| sem_eq(Some(p), Some(q)))
        }
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Lists the leaf paths where two values differ (for the pod update message), at most `limit` of them.
fn diff_paths(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>, limit: usize) {
    if out.len() >= limit || sem_eq(a, b) {
        return;
    }
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                diff_paths(&child(path, k), x.get(k), y.get(k), out, limit);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y.iter()).enumerate() {
                diff_paths(&index(path, i), Some(p), Some(q), out, limit);
            }
        }
        _ => {
            let show = |v: Option<&Value>| v.map_or("null".to_string(), |v| render(&Bad::Json(v.clone())));
            out.push(format!("- \t{path}: {}\n+ \t{path}: {}\n", show(a), show(b)));
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Resources (requests and limits)
// ---------------------------------------------------------------------------------------------------------------

const STANDARD_RESOURCES: [&str; 20] = [
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "persistentvolumeclaims",
    "configmaps",
    "requests.storage",
    "services.nodeports",
    "services.loadbalancers",
    "storage",
];
const INTEGER_RESOURCES: [&str; 9] = [
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
];

fn is_native_resource(n: &str) -> bool {
    !n.contains('/') || n.contains("kubernetes.io/")
}

fn is_hugepage_resource(n: &str) -> bool {
    n.starts_with("hugepages-")
}

fn is_extended_resource(n: &str) -> bool {
    !is_native_resource(n) && !n.starts_with("requests.") && qualified_name_errs(&format!("requests.{n}")).is_empty()
}

fn is_overcommit_allowed(n: &str) -> bool {
    is_native_resource(n) && !is_hugepage_resource(n)
}

fn is_integer_resource(n: &str) -> bool {
    INTEGER_RESOURCES.contains(&n) || is_extended_resource(n)
}

fn validate_resource_name(e: &mut Errs, name: &str, path: &str) {
    let errs = qualified_name_errs(name);
    if !errs.is_empty() {
        e.msgs(path, name, errs);
        return;
    }
    if !name.contains('/')
        && !STANDARD_RESOURCES.contains(&name)
        && !name.starts_with("hugepages-")
        && !name.starts_with("requests.hugepages-")
    {
        e.invalid(path, bs(name), "must be a standard resource type or fully qualified");
    }
}

fn validate_container_resource_name(e: &mut Errs, name: &str, path: &str) {
    validate_resource_name(e, name, path);
    if !name.contains('/') {
        if !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !is_hugepage_resource(name) {
            e.invalid(path, bs(name), "must be a standard resource for containers");
        }
    } else if !is_native_resource(name) && !is_extended_resource(name) {
        e.invalid(path, bs(name), "doesn't follow extended resource name standard");
    }
}

/// Parses a quantity field, reporting what upstream's decoder would reject.
fn quantity_at(e: &mut Errs, at: &At) -> Option<Quantity> {
    let v = at.val()?;
    match Quantity::from_json(v) {
        None => {
            e.type_mismatch(&at.path, v, "must be of type string");
            None
        }
        Some(Err(msg)) => {
            e.invalid(&at.path, Bad::Json(v.clone()), msg);
            None
        }
        Some(Ok(q)) => Some(q),
    }
}

/// `ValidateResourceQuantityValue`.
fn validate_quantity_value(e: &mut Errs, name: &str, q: &Quantity, path: &str) {
    if q.is_negative() {
        e.invalid(path, bs(&q.canonical()), MSG_NEGATIVE);
    }
    if is_integer_resource(name) {
        let mut milli = q.clone();
        milli.round_up(-3);
        if !milli.is_integer() {
            e.invalid(path, bs(&q.canonical()), "must be an integer");
        }
    }
}

/// `validateResourceRequirements` with the container resource-name rules.
fn validate_resources(e: &mut Errs, base: &str, limits: &At, requests: &At) {
    let mut lims: BTreeMap<String, Option<Quantity>> = BTreeMap::new();
    let (mut lim_qos, mut req_qos, mut huge) = (false, false, false);
    for (name, q_at) in limits.entries(e) {
        validate_container_resource_name(e, &name, &q_at.path);
        let q = quantity_at(e, &q_at);
        if let Some(q) = &q {
            validate_quantity_value(e, &name, q, &q_at.path);
        }
        huge |= is_hugepage_resource(&name);
        lim_qos |= name == "cpu" || name == "memory";
        lims.insert(name, q);
    }
    for (name, q_at) in requests.entries(e) {
        validate_container_resource_name(e, &name, &q_at.path);
        let q = quantity_at(e, &q_at);
        if let Some(q) = &q {
            validate_quantity_value(e, &name, q, &q_at.path);
        }
        match lims.get(&name) {
            Some(lim) => {
                if let (Some(q), Some(lim)) = (&q, lim) {
                    if q.cmp(lim) != Ordering::Equal && !is_overcommit_allowed(&name) {
                        e.invalid(
                            &requests.path,
                            bs(&q.canonical()),
                            &format!("must be equal to {name} limit of {}", lim.canonical()),
                        );
                    } else if q.cmp(lim) == Ordering::Greater {
                        e.invalid(
                            &requests.path,
                            bs(&q.canonical()),
                            &format!("must be less than or equal to {name} limit of {}", lim.canonical()),
                        );
                    }
                }
            }
            None => {
                if !is_overcommit_allowed(&name) {
                    e.required(&limits.path, "Limit must be set for non overcommitable resources");
                }
            }
        }
        huge |= is_hugepage_resource(&name);
        req_qos |= name == "cpu" || name == "memory";
    }
    if !lim_qos && !req_qos && huge {
        e.forbidden(base, "HugePages require cpu or memory");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Pod spec (pkg/apis/core/validation ValidatePodSpec and its helpers)
// ---------------------------------------------------------------------------------------------------------------

/// Volume sources in upstream's order, with the path segment upstream reports for "more than 1 volume type"
/// (upstream has typos in two of them).
const VOLUME_SOURCES: [(&str, &str); 30] = [
    ("emptyDir", "emptyDir"),
    ("hostPath", "hostPath"),
    ("gitRepo", "gitRepo"),
    ("gcePersistentDisk", "gcePersistentDisk"),
    ("awsElasticBlockStore", "awsElasticBlockStore"),
    ("secret", "secret"),
    ("nfs", "nfs"),
    ("iscsi", "iscsi"),
    ("glusterfs", "glusterfs"),
    ("flocker", "flocker"),
    ("persistentVolumeClaim", "persistentVolumeClaim"),
    ("rbd", "rbd"),
    ("cinder", "cinder"),
    ("cephfs", "cephFS"),
    ("quobyte", "quobyte"),
    ("downwardAPI", "downwarAPI"),
    ("fc", "fc"),
    ("flexVolume", "flexVolume"),
    ("configMap", "configMap"),
    ("azureFile", "azureFile"),
    ("vsphereVolume", "vsphereVolume"),
    ("photonPersistentDisk", "photonPersistentDisk"),
    ("portworxVolume", "portworxVolume"),
    ("azureDisk", "azureDisk"),
    ("storageos", "storageos"),
    ("projected", "projected"),
    ("scaleIO", "scaleIO"),
    ("csi", "csi"),
    ("ephemeral", "ephemeral"),
    ("image", "image"),
];

struct PodCtx {
    volumes: BTreeMap<String, String>,
    grace: Option<i64>,
    restart_policy: String,
    is_pod: bool,
    host_users: bool,
}

fn validate_path_no_backsteps(e: &mut Errs, path: &str, target: &str) {
    if target.split('/').any(|p| p == "..") {
        e.invalid(path, bs(target), "must not contain '..'");
    }
}

fn validate_local_descending_path(e: &mut Errs, path: &str, target: &str) {
    if target.starts_with('/') {
        e.invalid(path, bs(target), "must be a relative path");
    }
    validate_path_no_backsteps(e, path, target);
}

fn validate_local_non_reserved_path(e: &mut Errs, path: &str, target: &str) {
    validate_local_descending_path(e, path, target);
    if target.starts_with("..") && !target.starts_with("../") {
        e.invalid(path, bs(target), "must not start with '..'");
    }
}

fn validate_file_mode(e: &mut Errs, at: &At) {
    if let Some(m) = at.int32(e) {
        if !(0..=0o777).contains(&m) {
            e.invalid(&at.path, Bad::Int(m), MSG_FILE_MODE);
        }
    }
}

fn validate_key_to_paths(e: &mut Errs, items: &At) {
    for item in items.items(e) {
        item.obj(e);
        let k = item.get("key");
        if k.s(e).is_empty() {
            e.required(&k.path, "");
        }
        let p = item.get("path");
        let pv = p.s(e);
        if pv.is_empty() {
            e.required(&p.path, "");
        }
        validate_local_non_reserved_path(e, &p.path, pv);
        validate_file_mode(e, &item.get("mode"));
    }
}

fn validate_volume_source(e: &mut Errs, vol: &At, is_pod: bool) {
    let mut count = 0;
    for (k, shown) in VOLUME_SOURCES {
        let src = vol.get(k);
        if !src.is_set() {
            continue;
        }
        if count > 0 {
            e.forbidden(&child(&vol.path, shown), "may not specify more than 1 volume type");
            continue;
        }
        count += 1;
        src.obj(e);
        match k {
            "emptyDir" => {
                let sl = src.get("sizeLimit");
                if let Some(q) = quantity_at(e, &sl) {
                    if q.is_negative() {
                        e.forbidden(&sl.path, "SizeLimit field must be a valid resource quantity");
                    }
                }
            }
            "hostPath" => {
                let p = src.get("path");
                let pv = p.s(e);
                if pv.is_empty() {
                    e.required(&p.path, "");
                    continue;
                }
                validate_path_no_backsteps(e, &p.path, pv);
                let t = src.get("type");
                if let Some(tv) = t.str_opt(e) {
                    const TYPES: [&str; 8] = [
                        "",
                        "BlockDevice",
                        "CharDevice",
                        "Directory",
                        "DirectoryOrCreate",
                        "File",
                        "FileOrCreate",
                        "Socket",
                    ];
                    if !TYPES.contains(&tv) {
                        e.not_supported(&t.path, bs(tv), &TYPES);
                    }
                }
            }
            "gitRepo" => {
                let r = src.get("repository");
                if r.s(e).is_empty() {
                    e.required(&r.path, "");
                }
                let d = src.get("directory");
                let dv = d.s(e);
                validate_local_descending_path(e, &d.path, dv);
            }
            "secret" | "configMap" => {
                let n = src.get(if k == "secret" { "secretName" } else { "name" });
                if n.s(e).is_empty() {
                    e.required(&n.path, "");
                }
                validate_file_mode(e, &src.get("defaultMode"));
                validate_key_to_paths(e, &src.get("items"));
            }
            "persistentVolumeClaim" => {
                let c = src.get("claimName");
                if c.s(e).is_empty() {
                    e.required(&c.path, "");
                }
            }
            "nfs" => {
                let s = src.get("server");
                if s.s(e).is_empty() {
                    e.required(&s.path, "");
                }
                let p = src.get("path");
                let pv = p.s(e);
                if pv.is_empty() {
                    e.required(&p.path, "");
                }
                if !pv.starts_with('/') {
                    e.invalid(&p.path, bs(pv), "must be an absolute path");
                }
            }
            "downwardAPI" => {
                validate_file_mode(e, &src.get("defaultMode"));
                for item in src.get("items").items(e) {
                    item.obj(e);
                    let p = item.get("path");
                    let pv = p.s(e);
                    if pv.is_empty() {
                        e.required(&p.path, "");
                    }
                    validate_local_non_reserved_path(e, &p.path, pv);
                    validate_file_mode(e, &item.get("mode"));
                }
            }
            "projected" => {
                validate_file_mode(e, &src.get("defaultMode"));
                for s in src.get("sources").items(e) {
                    s.obj(e);
                    let kinds = [
                        "secret",
                        "downwardAPI",
                        "configMap",
                        "serviceAccountToken",
                        "clusterTrustBundle",
                    ];
                    let set: Vec<&str> = kinds.iter().copied().filter(|k| s.get(k).is_set()).collect();
                    for extra in set.iter().skip(1) {
                        e.forbidden(
                            &child(&s.path, extra),
                            "may not specify more than 1 volume type per source",
                        );
                    }
                    if set.is_empty() {
                        e.required(&s.path, "must specify exactly 1 volume type");
                    }
                    let tok = s.get("serviceAccountToken");
                    if tok.is_set() {
                        let p = tok.get("path");
                        let pv = p.s(e);
                        if pv.is_empty() {
                            e.required(&p.path, "");
                        }
                        if let Some(x) = tok.get("expirationSeconds").int(e) {
                            if x < 10 * 60 {
                                e.invalid(
                                    &child(&tok.path, "expirationSeconds"),
                                    Bad::Int(x),
                                    "may not specify a duration less than 10 minutes",
                                );
                            }
                            if x > 1 << 32 {
                                e.invalid(
                                    &child(&tok.path, "expirationSeconds"),
                                    Bad::Int(x),
                                    "may not specify a duration larger than 2^32 seconds",
                                );
                            }
                        }
                    }
                }
            }
            "csi" => {
                let d = src.get("driver");
                let dv = d.s(e);
                if dv.is_empty() {
                    e.required(&d.path, "");
                }
                if dv.len() > 63 {
                    e.too_long(&d.path, 63);
                }
                e.msgs(&d.path, dv, dns1123_subdomain_errs(&dv.to_lowercase()));
            }
            "ephemeral" => {
                let t = src.get("volumeClaimTemplate");
                if !t.is_set() {
                    e.required(&t.path, "");
                }
            }
            "image" => {
                let r = src.get("reference");
                if is_pod && r.s(e).is_empty() {
                    e.required(&r.path, "");
                }
            }
            _ => {}
        }
    }
    if count == 0 {
        e.required(&vol.path, "must specify a volume type");
    }
}

/// `ValidateVolumes`: returns the valid volumes by name, with their source kind.
fn validate_volumes(e: &mut Errs, at: &At, is_pod: bool) -> BTreeMap<String, String> {
    let mut vols = BTreeMap::new();
    for vol in at.items(e) {
        let mut el = Errs::default();
        vol.obj(&mut el);
        let name_at = vol.get("name");
        let name = name_at.s(&mut el).to_string();
        validate_volume_source(&mut el, &vol, is_pod);
        if name.is_empty() {
            el.required(&name_at.path, "");
        } else {
            el.msgs(&name_at.path, &name, dns1123_label_errs(&name));
        }
        if vols.contains_key(&name) {
            el.duplicate(&name_at.path, bs(&name));
        }
        if el.len() == 0 {
            let kind = VOLUME_SOURCES
                .iter()
                .find(|(k, _)| vol.get(k).is_set())
                .map_or("", |(k, _)| k);
            vols.insert(name, kind.to_string());
        } else {
            e.list.extend(el.list);
        }
    }
    vols
}

fn validate_container_ports(e: &mut Errs, at: &At) {
    let mut names = BTreeSet::new();
    for p in at.items(e) {
        p.obj(e);
        let name_at = p.get("name");
        let name = name_at.s(e);
        if !name.is_empty() {
            let msgs = port_name_errs(name);
            if !msgs.is_empty() {
                e.msgs(&name_at.path, name, msgs);
            } else if !names.insert(name.to_string()) {
                e.duplicate(&name_at.path, bs(name));
            }
        }
        let cp = p.get("containerPort");
        match cp.int32(e) {
            None | Some(0) => {
                if cp.val().is_none_or(|v| v.as_i64() == Some(0)) {
                    e.required(&cp.path, "");
                }
            }
            Some(v) => {
                for m in port_num_errs(v) {
                    e.invalid(&cp.path, Bad::Int(v), &m);
                }
            }
        }
        let hp = p.get("hostPort");
        if let Some(v) = hp.int32(e) {
            if v != 0 {
                for m in port_num_errs(v) {
                    e.invalid(&hp.path, Bad::Int(v), &m);
                }
            }
        }
        validate_protocol(e, &p.get("protocol"));
    }
}

fn validate_protocol(e: &mut Errs, at: &At) {
    let proto = at.s(e);
    if proto.is_empty() {
        e.required(&at.path, "");
    } else if !matches!(proto, "TCP" | "UDP" | "SCTP") {
        e.not_supported(&at.path, bs(proto), &["SCTP", "TCP", "UDP"]);
    }
}

/// `ValidatePortNumOrName` for an `IntOrString` port.
fn validate_port_num_or_name(e: &mut Errs, at: &At) {
    match at.val() {
        Some(Value::String(s)) => e.msgs(&at.path, s, port_name_errs(s)),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) => {
                for m in port_num_errs(v) {
                    e.invalid(&at.path, Bad::Int(v), &m);
                }
            }
            None => e.type_mismatch(&at.path, &Value::Number(n.clone()), "must be an integer or a string"),
        },
        None => e.invalid(&at.path, Bad::Int(0), &range_error(1, 65535)),
        Some(other) => e.type_mismatch(&at.path, other, "must be an integer or a string"),
    }
}

fn split_subscripted_path(p: &str) -> Option<(&str, &str)> {
    let inner = p.strip_suffix("']")?;
    let (path, sub) = inner.split_once("['")?;
    Some((path, sub))
}

fn validate_env(e: &mut Errs, at: &At) {
    const ENV_FIELD_PATHS: [&str; 9] = [
        "metadata.name",
        "metadata.namespace",
        "metadata.uid",
        "spec.nodeName",
        "spec.serviceAccountName",
        "status.hostIP",
        "status.hostIPs",
        "status.podIP",
        "status.podIPs",
    ];
    const RESOURCE_FIELDS: [&str; 6] = [
        "limits.cpu",
        "limits.ephemeral-storage",
        "limits.memory",
        "requests.cpu",
        "requests.ephemeral-storage",
        "requests.memory",
    ];
    for ev in at.items(e) {
        ev.obj(e);
        let name_at = ev.get("name");
        let name = name_at.s(e);
        if name.is_empty() {
            e.required(&name_at.path, "");
        } else {
            e.msgs(&name_at.path, name, env_name_errs(name));
        }
        let value = ev.get("value").s(e);
        let vf = ev.get("valueFrom");
        if vf.obj(e).is_none() {
            continue;
        }
        let mut sources = 0;
        let fr = vf.get("fieldRef");
        if fr.is_set() {
            sources += 1;
            fr.obj(e);
            let av = fr.get("apiVersion");
            let fp = fr.get("fieldPath");
            let api_version = av.s(e);
            let field_path = fp.s(e);
            if api_version.is_empty() {
                e.required(&av.path, "");
            } else if field_path.is_empty() {
                e.required(&fp.path, "");
            } else if api_version != "v1" {
                e.invalid(
                    &fp.path,
                    bs(field_path),
                    &format!("error converting fieldPath: unsupported pod version: {api_version}"),
                );
            } else if let Some((p, sub)) = split_subscripted_path(field_path) {
                match p {
                    "metadata.annotations" => {
                        e.msgs(&fr.path, &sub.to_lowercase(), qualified_name_errs(&sub.to_lowercase()))
                    }
                    "metadata.labels" => e.msgs(&fr.path, sub, qualified_name_errs(sub)),
                    _ => e.invalid(
                        &fp.path,
                        bs(field_path),
                        &format!("error converting fieldPath: field label does not support subscript: {field_path}"),
                    ),
                }
            } else {
                const KNOWN: [&str; 15] = [
                    "metadata.annotations",
                    "metadata.labels",
                    "metadata.name",
                    "metadata.namespace",
                    "metadata.uid",
                    "spec.nodeName",
                    "spec.restartPolicy",
                    "spec.serviceAccountName",
                    "spec.schedulerName",
                    "status.phase",
                    "status.hostIP",
                    "status.hostIPs",
                    "status.podIP",
                    "status.podIPs",
                    "spec.host",
                ];
                if !KNOWN.contains(&field_path) {
                    e.invalid(
                        &fp.path,
                        bs(field_path),
                        &format!("error converting fieldPath: field label not supported: {field_path}"),
                    );
                } else {
                    let internal = if field_path == "spec.host" {
                        "spec.nodeName"
                    } else {
                        field_path
                    };
                    if !ENV_FIELD_PATHS.contains(&internal) {
                        e.not_supported(&fp.path, bs(internal), &ENV_FIELD_PATHS);
                    }
                }
            }
        }
        let rf = vf.get("resourceFieldRef");
        if rf.is_set() {
            sources += 1;
            rf.obj(e);
            let r = rf.get("resource");
            let rv = r.s(e);
            if rv.is_empty() {
                e.required(&r.path, "");
            } else if !RESOURCE_FIELDS.contains(&rv)
                && !rv.starts_with("requests.hugepages-")
                && !rv.starts_with("limits.hugepages-")
            {
                e.not_supported(&r.path, bs(rv), &RESOURCE_FIELDS);
            }
        }
        for src in ["configMapKeyRef", "secretKeyRef"] {
            let r = vf.get(src);
            if !r.is_set() {
                continue;
            }
            sources += 1;
            r.obj(e);
            let n = r.get("name");
            let nv = n.s(e);
            e.msgs(&n.path, nv, dns1123_subdomain_errs(nv));
            let k = r.get("key");
            let kv = k.s(e);
            if kv.is_empty() {
                e.required(&k.path, "");
            } else {
                e.msgs(&k.path, kv, config_key_errs(kv));
            }
        }
        if sources == 0 {
            e.invalid(
                &vf.path,
                bs(""),
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            );
        } else if !value.is_empty() {
            e.invalid(&vf.path, bs(""), "may not be specified when `value` is not empty");
        } else if sources > 1 {
            e.invalid(&vf.path, bs(""), "may not have more than one field specified at a time");
        }
    }
}

fn validate_env_from(e: &mut Errs, at: &At) {
    for ev in at.items(e) {
        ev.obj(e);
        let prefix = ev.get("prefix");
        let pv = prefix.s(e);
        if !pv.is_empty() {
            e.msgs(&prefix.path, pv, env_name_errs(pv));
        }
        let mut sources = 0;
        for src in ["configMapRef", "secretRef"] {
            let r = ev.get(src);
            if !r.is_set() {
                continue;
            }
            sources += 1;
            r.obj(e);
            let n = r.get("name");
            let nv = n.s(e);
            if nv.is_empty() {
                e.required(&n.path, "");
            } else {
                e.msgs(&n.path, nv, name_errs(NameRule::Subdomain, nv, true));
            }
        }
        if sources == 0 {
            e.invalid(&at.path, bs(""), "must specify one of: `configMapRef` or `secretRef`");
        } else if sources > 1 {
            e.invalid(&at.path, bs(""), "may not have more than one field specified at a time");
        }
    }
}

fn validate_volume_mounts(e: &mut Errs, c: &At, ctx: &PodCtx) {
    let at = c.get("volumeMounts");
    let mut scratch = Errs::default();
    let device_names: BTreeMap<String, String> = c
        .get("volumeDevices")
        .items(&mut scratch)
        .iter()
        .map(|d| {
            (
                d.get("name").s(&mut scratch).to_string(),
                d.get("devicePath").s(&mut scratch).to_string(),
            )
        })
        .collect();
    let privileged = c.get("securityContext").get("privileged").val() == Some(&Value::Bool(true));
    let mut mount_points = BTreeSet::new();
    for m in at.items(e) {
        m.obj(e);
        let n = m.get("name");
        let name = n.s(e);
        if name.is_empty() {
            e.required(&n.path, "");
        }
        if !ctx.volumes.contains_key(name) {
            e.not_found(&n.path, bs(name));
        }
        let mp = m.get("mountPath");
        let mount_path = mp.s(e);
        if mount_path.is_empty() {
            e.required(&mp.path, "");
        }
        if !mount_points.insert(mount_path.to_string()) {
            e.invalid(&mp.path, bs(mount_path), "must be unique");
        }
        if device_names.contains_key(name) {
            e.invalid(&n.path, bs(name), "must not already exist in volumeDevices");
        }
        if device_names.values().any(|p| p == mount_path) {
            e.invalid(
                &mp.path,
                bs(mount_path),
                "must not already exist as a path in volumeDevices",
            );
        }
        let sub = m.get("subPath").s(e);
        if !sub.is_empty() {
            validate_local_descending_path(e, &child(&at.path, "subPath"), sub);
        }
        let sub_expr = m.get("subPathExpr").s(e);
        if !sub_expr.is_empty() {
            if !sub.is_empty() {
                e.invalid(
                    &child(&m.path, "subPathExpr"),
                    bs(sub_expr),
                    "subPathExpr and subPath are mutually exclusive",
                );
            }
            validate_local_descending_path(e, &child(&at.path, "subPathExpr"), sub_expr);
        }
        if let Some(prop) = m.get("mountPropagation").str_opt(e) {
            let p = child(&at.path, "mountPropagation");
            if !matches!(prop, "Bidirectional" | "HostToContainer" | "None") {
                e.not_supported(&p, bs(prop), &["Bidirectional", "HostToContainer", "None"]);
            }
            if prop == "Bidirectional" && !privileged {
                e.forbidden(
                    &p,
                    "Bidirectional mount propagation is available only to privileged containers",
                );
            }
        }
    }
    let mut paths = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mounts: BTreeMap<String, String> = at
        .items(&mut scratch)
        .iter()
        .map(|m| {
            (
                m.get("name").s(&mut scratch).to_string(),
                m.get("mountPath").s(&mut scratch).to_string(),
            )
        })
        .collect();
    for d in c.get("volumeDevices").items(e) {
        d.obj(e);
        let n = d.get("name");
        let name = n.s(e);
        let dp = d.get("devicePath");
        let dev_path = dp.s(e);
        if name.is_empty() {
            e.required(&n.path, "");
        }
        if names.contains(name) {
            e.invalid(&n.path, bs(name), "must be unique");
        }
        match ctx.volumes.get(name) {
            Some(kind) if kind != "persistentVolumeClaim" && kind != "ephemeral" => e.invalid(
                &n.path,
                bs(name),
                "can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode",
            ),
            Some(_) => {}
            None => e.not_found(&n.path, bs(name)),
        }
        if dev_path.is_empty() {
            e.required(&dp.path, "");
        }
        if paths.contains(dev_path) {
            e.invalid(&dp.path, bs(dev_path), "must be unique");
        }
        if dev_path.split('/').any(|p| p == "..") {
            e.invalid(&dp.path, bs(dev_path), "can not contain backsteps ('..')");
        } else {
            paths.insert(dev_path.to_string());
        }
        if mounts.contains_key(name) {
            e.invalid(&n.path, bs(name), "must not already exist in volumeMounts");
        }
        if mounts.values().any(|p| p == dev_path) {
            e.invalid(
                &dp.path,
                bs(dev_path),
                "must not already exist as a path in volumeMounts",
            );
        }
        if !name.is_empty() {
            names.insert(name.to_string());
        }
    }
}

fn validate_seccomp_profile(e: &mut Errs, at: &At) {
    if at.obj(e).is_none() {
        return;
    }
    let t = at.get("type");
    let tv = t.s(e);
    match tv {
        "Localhost" | "RuntimeDefault" | "Unconfined" => {}
        "" => e.required(&t.path, "type is required when seccompProfile is set"),
        _ => e.not_supported(&t.path, bs(tv), &["Localhost", "RuntimeDefault", "Unconfined"]),
    }
    let lp = at.get("localhostProfile");
    if tv == "Localhost" {
        match lp.str_opt(e) {
            None => e.required(&lp.path, "must be set when seccomp type is Localhost"),
            Some(p) => validate_local_descending_path(e, &lp.path, p),
        }
    } else if lp.is_set() {
        e.invalid(
            &lp.path,
            Bad::Json(at.val().cloned().unwrap_or(Value::Null)),
            "can only be set when seccomp type is Localhost",
        );
    }
}

fn validate_id(e: &mut Errs, at: &At) {
    if let Some(v) = at.int(e) {
        if !(0..=MAX_INT32).contains(&v) {
            e.invalid(&at.path, Bad::Int(v), &range_error(0, MAX_INT32));
        }
    }
}

fn validate_security_context(e: &mut Errs, sc: &At, host_users: bool) {
    if sc.obj(e).is_none() {
        return;
    }
    validate_id(e, &sc.get("runAsUser"));
    validate_id(e, &sc.get("runAsGroup"));
    let pm = sc.get("procMount");
    if let Some(p) = pm.str_opt(e) {
        if !matches!(p, "Default" | "Unmasked") {
            e.not_supported(&pm.path, bs(p), &["Default", "Unmasked"]);
        }
        if host_users && p == "Unmasked" {
            e.invalid(&pm.path, bs(p), "`hostUsers` must be false to use `Unmasked`");
        }
    }
    validate_seccomp_profile(e, &sc.get("seccompProfile"));
    if sc.get("allowPrivilegeEscalation").boolean(e) == Some(false) {
        let whole = Bad::Json(sc.val().cloned().unwrap_or(Value::Null));
        if sc.get("privileged").boolean(e) == Some(true) {
            e.invalid(
                &sc.path,
                whole.clone(),
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            );
        }
        let adds = sc.get("capabilities").get("add").str_list(e).unwrap_or_default();
        if adds.iter().any(|c| c == "CAP_SYS_ADMIN") {
            e.invalid(
                &sc.path,
                whole,
                "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            );
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

/// `validateHandler`: exactly one handler; `lifecycle` handlers may sleep, probes may use gRPC.
fn validate_handler(e: &mut Errs, h: &At, grace: Option<i64>, lifecycle: bool) {
    let kinds: &[&str] = if lifecycle {
        &["exec", "httpGet", "tcpSocket", "sleep"]
    } else {
        &["exec", "httpGet", "tcpSocket", "grpc"]
    };
    let mut count = 0;
    for k in kinds {
        let a = h.get(k);
        if !a.is_set() {
            continue;
        }
        if count > 0 {
            e.forbidden(&a.path, "may not specify more than 1 handler type");
            continue;
        }
        count += 1;
        a.obj(e);
        match *k {
            "exec" => {
                let c = a.get("command");
                if c.str_list(e).is_none_or(|l| l.is_empty()) {
                    e.required(&c.path, "");
                }
            }
            "httpGet" => {
                let p = a.get("path");
                if p.s(e).is_empty() {
                    e.required(&p.path, "");
                }
                validate_port_num_or_name(e, &a.get("port"));
                let s = a.get("scheme");
                let sv = s.s(e);
                if !matches!(sv, "HTTP" | "HTTPS") {
                    e.not_supported(&s.path, bs(sv), &["HTTP", "HTTPS"]);
                }
                let hp = a.get("httpHeaders");
                for hdr in hp.items(e) {
                    let n = hdr.get("name").s(e);
                    e.msgs(&hp.path, n, http_header_errs(n));
                }
            }
            "tcpSocket" => validate_port_num_or_name(e, &a.get("port")),
            "grpc" => {
                let p = a.get("port");
                let v = p.int32(e).unwrap_or(0);
                for m in port_num_errs(v) {
                    e.invalid(&p.path, Bad::Int(v), &m);
                }
            }
            "sleep" => {
                let secs = a.get("seconds").int(e).unwrap_or(0);
                if let Some(g) = grace {
                    if secs < 0 || secs > g {
                        e.invalid(
                            &a.path,
                            Bad::Int(secs),
                            &format!("must be non-negative and less than terminationGracePeriodSeconds ({g})"),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    if count == 0 {
        e.required(&h.path, "must specify a handler type");
    }
}

fn validate_probe(e: &mut Errs, p: &At, grace: Option<i64>, kind: ProbeKind) {
    if p.obj(e).is_none() {
        return;
    }
    validate_handler(e, p, grace, false);
    for f in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        nonneg(e, &p.get(f));
    }
    let tg = p.get("terminationGracePeriodSeconds");
    let tgv = tg.int(e);
    if let Some(v) = tgv {
        if v <= 0 {
            e.invalid(&tg.path, Bad::Int(v), "must be greater than 0");
        }
    }
    match kind {
        ProbeKind::Liveness | ProbeKind::Startup => {
            let st = p.get("successThreshold");
            let v = st.int(e).unwrap_or(0);
            if v != 1 {
                e.invalid(&st.path, Bad::Int(v), "must be 1");
            }
        }
        ProbeKind::Readiness => {
            if let Some(v) = tgv {
                e.invalid(&tg.path, Bad::Int(v), "must not be set for readinessProbes");
            }
        }
    }
}

fn validate_lifecycle(e: &mut Errs, l: &At, grace: Option<i64>) {
    if l.obj(e).is_none() {
        return;
    }
    for h in ["postStart", "preStop"] {
        let a = l.get(h);
        if a.is_set() {
            a.obj(e);
            validate_handler(e, &a, grace, true);
        }
    }
}

fn validate_resize_policy(e: &mut Errs, at: &At, pod_restart_policy: &str) {
    let mut seen = BTreeSet::new();
    for (i, p) in at.items(e).iter().enumerate() {
        p.obj(e);
        let rn = p.get("resourceName").s(e);
        let rp = p.get("restartPolicy").s(e);
        if !seen.insert(rn.to_string()) {
            e.duplicate(&index(&at.path, i), bs(rn));
        }
        match rn {
            "cpu" | "memory" => {}
            "" => e.required(&at.path, ""),
            _ => e.not_supported(&at.path, bs(rn), &["cpu", "memory"]),
        }
        match rp {
            "NotRequired" | "RestartContainer" => {}
            "" => e.required(&at.path, ""),
            _ => e.not_supported(&at.path, bs(rp), &["NotRequired", "RestartContainer"]),
        }
        if pod_restart_policy == "Never" && rp != "NotRequired" {
            e.invalid(
                &at.path,
                bs(rp),
                "must be 'NotRequired' when `restartPolicy` is 'Never'",
            );
        }
    }
}

/// `validateContainerCommon`.
fn validate_container_common(e: &mut Errs, c: &At, ctx: &PodCtx) {
    c.obj(e);
    let n = c.get("name");
    let name = n.s(e);
    if name.is_empty() {
        e.required(&n.path, "");
    } else {
        e.msgs(&n.path, name, dns1123_label_errs(name));
    }
    let img = c.get("image");
    if img.s(e).is_empty() {
        e.required(&img.path, "");
    }
    let tmp = c.get("terminationMessagePolicy");
    match tmp.s(e) {
        "File" | "FallbackToLogsOnError" => {}
        "" => e.required(&tmp.path, ""),
        other => e.not_supported(&tmp.path, bs(other), &["File", "FallbackToLogsOnError"]),
    }
    validate_container_ports(e, &c.get("ports"));
    validate_env(e, &c.get("env"));
    validate_env_from(e, &c.get("envFrom"));
    validate_volume_mounts(e, c, ctx);
    let pp = c.get("imagePullPolicy");
    match pp.s(e) {
        "Always" | "IfNotPresent" | "Never" => {}
        "" => e.required(&pp.path, ""),
        other => e.not_supported(&pp.path, bs(other), &["Always", "IfNotPresent", "Never"]),
    }
    let res = c.get("resources");
    res.obj(e);
    validate_resources(e, &res.path, &res.get("limits"), &res.get("requests"));
    validate_resize_policy(e, &c.get("resizePolicy"), &ctx.restart_policy);
    validate_security_context(e, &c.get("securityContext"), ctx.host_users);
    if ctx.is_pod {
        let image = img.s(e);
        if image.len() != image.trim().len() {
            e.invalid(&img.path, bs(image), "must not have leading or trailing whitespace");
        }
    }
}

/// Host ports must not clash within one list of containers: `Protocol/HostIP/HostPort`.
fn check_host_port_conflicts(e: &mut Errs, containers: &[At], seen: &mut BTreeSet<String>) {
    let mut scratch = Errs::default();
    for c in containers {
        for p in c.get("ports").items(&mut scratch) {
            let hp = p.get("hostPort").int(&mut scratch).unwrap_or(0);
            if hp == 0 {
                continue;
            }
            let k = format!(
                "{}/{}/{}",
                p.get("protocol").s(&mut scratch),
                p.get("hostIP").s(&mut scratch),
                hp
            );
            if !seen.insert(k.clone()) {
                e.duplicate(&child(&p.path, "hostPort"), bs(&k));
            }
        }
    }
}

fn validate_containers(e: &mut Errs, at: &At, ctx: &PodCtx) {
    let list = at.items(e);
    if list.is_empty() {
        if at.val().is_none_or(|v| v.is_array()) {
            e.required(&at.path, "");
        }
        return;
    }
    let mut names = BTreeSet::new();
    for c in &list {
        validate_container_common(e, c, ctx);
        let n = c.get("name");
        let name = n.s(e);
        if !names.insert(name.to_string()) {
            e.duplicate(&n.path, bs(name));
        }
        let lc = c.get("lifecycle");
        if lc.is_set() {
            validate_lifecycle(e, &lc, ctx.grace);
        }
        validate_probe(e, &c.get("livenessProbe"), ctx.grace, ProbeKind::Liveness);
        validate_probe(e, &c.get("readinessProbe"), ctx.grace, ProbeKind::Readiness);
        validate_probe(e, &c.get("startupProbe"), ctx.grace, ProbeKind::Startup);
        let rp = c.get("restartPolicy");
        if rp.is_set() {
            e.forbidden(&rp.path, "may not be set for non-init containers");
        }
    }
    check_host_port_conflicts(e, &list, &mut BTreeSet::new());
}

fn validate_init_containers(e: &mut Errs, at: &At, regular: &At, ctx: &PodCtx) {
    let mut scratch = Errs::default();
    let mut names: BTreeSet<String> = regular
        .items(&mut scratch)
        .iter()
        .map(|c| c.get("name").s(&mut scratch).to_string())
        .collect();
    for c in at.items(e) {
        validate_container_common(e, &c, ctx);
        let rp = c.get("restartPolicy");
        let mut restart_always = false;
        if let Some(p) = rp.str_opt(e) {
            if p != "Always" {
                e.not_supported(&rp.path, bs(p), &["Always"]);
            }
            restart_always = p == "Always";
        }
        let n = c.get("name");
        let name = n.s(e);
        if names.contains(name) {
            e.duplicate(&n.path, bs(name));
        } else if !name.is_empty() {
            names.insert(name.to_string());
        }
        check_host_port_conflicts(e, std::slice::from_ref(&c), &mut BTreeSet::new());
        if restart_always {
            let lc = c.get("lifecycle");
            if lc.is_set() {
                validate_lifecycle(e, &lc, ctx.grace);
            }
            validate_probe(e, &c.get("livenessProbe"), ctx.grace, ProbeKind::Liveness);
            validate_probe(e, &c.get("readinessProbe"), ctx.grace, ProbeKind::Readiness);
            validate_probe(e, &c.get("startupProbe"), ctx.grace, ProbeKind::Startup);
        } else {
            for f in ["lifecycle", "livenessProbe", "readinessProbe", "startupProbe"] {
                let a = c.get(f);
                if a.is_set() {
                    e.forbidden(
                        &a.path,
                        "may not be set for init containers without restartPolicy=Always",
                    );
                }
            }
        }
    }
}

fn validate_tolerations(e: &mut Errs, at: &At) {
    for t in at.items(e) {
        t.obj(e);
        let k = t.get("key");
        let key_v = k.s(e);
        if !key_v.is_empty() {
            e.msgs(&k.path, key_v, qualified_name_errs(key_v));
        }
        let op_at = t.get("operator");
        let op = op_at.s(e);
        if key_v.is_empty() && op != "Exists" {
            e.invalid(
                &op_at.path,
                bs(op),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            );
        }
        let eff = t.get("effect");
        let effect = eff.s(e);
        if t.get("tolerationSeconds").int(e).is_some() && effect != "NoExecute" {
            e.invalid(
                &eff.path,
                bs(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            );
        }
        let value = t.get("value").s(e);
        match op {
            "Equal" | "" => {
                let errs = label_value_errs(value);
                if !errs.is_empty() {
                    e.invalid(&op_at.path, bs(value), &errs.join(";"));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    e.invalid(
                        &op_at.path,
                        bs(value),
                        "value must be empty when `operator` is 'Exists'",
                    );
                }
            }
            _ => e.not_supported(&op_at.path, bs(op), &["Equal", "Exists"]),
        }
        if !effect.is_empty() {
            validate_taint_effect(e, &eff.path, effect, true);
        }
    }
}

fn validate_taint_effect(e: &mut Errs, path: &str, effect: &str, allow_empty: bool) {
    if !allow_empty && effect.is_empty() {
        e.required(path, "");
        return;
    }
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        e.not_supported(path, bs(effect), &["NoSchedule", "PreferNoSchedule", "NoExecute"]);
    }
}

fn validate_node_selector_requirement(e: &mut Errs, r: &At, check_values: bool) {
    r.obj(e);
    let op_at = r.get("operator");
    let op = op_at.s(e);
    let vals_at = r.get("values");
    let values = vals_at.str_list(e).unwrap_or_default();
    match op {
        "In" | "NotIn" => {
            if values.is_empty() {
                e.required(&vals_at.path, "must be specified when `operator` is 'In' or 'NotIn'");
            }
        }
        "Exists" | "DoesNotExist" => {
            if !values.is_empty() {
                e.forbidden(
                    &vals_at.path,
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                );
            }
        }
        "Gt" | "Lt" => {
            if values.len() != 1 {
                e.required(
                    &vals_at.path,
                    "must be specified single value when `operator` is 'Lt' or 'Gt'",
                );
            }
        }
        _ => e.invalid(&op_at.path, bs(op), "not a valid selector operator"),
    }
    let k = r.get("key");
    let kv = k.s(e);
    e.msgs(&k.path, kv, qualified_name_errs(kv));
    if check_values {
        for (i, v) in values.iter().enumerate() {
            e.msgs(&index(&vals_at.path, i), v, label_value_errs(v));
        }
    }
}

fn validate_node_selector_term(e: &mut Errs, term: &At, check_values: bool) {
    term.obj(e);
    for r in term.get("matchExpressions").items(e) {
        validate_node_selector_requirement(e, &r, check_values);
    }
    for r in term.get("matchFields").items(e) {
        r.obj(e);
        let op_at = r.get("operator");
        let op = op_at.s(e);
        let vals_at = r.get("values");
        let values = vals_at.str_list(e).unwrap_or_default();
        match op {
            "In" | "NotIn" => {
                if values.len() != 1 {
                    e.required(
                        &vals_at.path,
                        "must be only one value when `operator` is 'In' or 'NotIn' for node field selector",
                    );
                }
            }
            _ => e.invalid(&op_at.path, bs(op), "not a valid selector operator"),
        }
        let k = r.get("key");
        let kv = k.s(e);
        if kv != "metadata.name" {
            e.invalid(&k.path, bs(kv), "not a valid field selector key");
        } else {
            for (i, v) in values.iter().enumerate() {
                e.msgs(&index(&vals_at.path, i), v, dns1123_subdomain_errs(v));
            }
        }
    }
}

fn validate_pod_affinity_term(e: &mut Errs, t: &At) {
    t.obj(e);
    validate_label_selector(e, &t.get("labelSelector"));
    validate_label_selector(e, &t.get("namespaceSelector"));
    let ns_path = child(&t.path, "namespace");
    for ns in t.get("namespaces").str_list(e).unwrap_or_default() {
        e.msgs(&ns_path, &ns, dns1123_label_errs(&ns));
    }
    let tk = t.get("topologyKey");
    let tkv = tk.s(e);
    if tkv.is_empty() {
        e.required(&tk.path, "can not be empty");
    }
    e.msgs(&tk.path, tkv, qualified_name_errs(tkv));
}

fn validate_weight(e: &mut Errs, w: &At) {
    let v = w.int32(e).unwrap_or(0);
    if !(1..=100).contains(&v) {
        e.invalid(&w.path, Bad::Int(v), "must be in the range 1-100");
    }
}

fn validate_affinity(e: &mut Errs, a: &At) {
    if a.obj(e).is_none() {
        return;
    }
    let na = a.get("nodeAffinity");
    if na.obj(e).is_some() {
        let req = na.get("requiredDuringSchedulingIgnoredDuringExecution");
        if req.obj(e).is_some() {
            let terms = req.get("nodeSelectorTerms");
            let list = terms.items(e);
            if list.is_empty() {
                e.required(&terms.path, "must have at least one node selector term");
            }
            for t in list {
                validate_node_selector_term(e, &t, true);
            }
        }
        for p in na.get("preferredDuringSchedulingIgnoredDuringExecution").items(e) {
            p.obj(e);
            validate_weight(e, &p.get("weight"));
            validate_node_selector_term(e, &p.get("preference"), false);
        }
    }
    for kind in ["podAffinity", "podAntiAffinity"] {
        let pa = a.get(kind);
        if pa.obj(e).is_none() {
            continue;
        }
        for t in pa.get("requiredDuringSchedulingIgnoredDuringExecution").items(e) {
            validate_pod_affinity_term(e, &t);
        }
        for w in pa.get("preferredDuringSchedulingIgnoredDuringExecution").items(e) {
            w.obj(e);
            validate_weight(e, &w.get("weight"));
            validate_pod_affinity_term(e, &w.get("podAffinityTerm"));
        }
    }
}

fn validate_dns_config(e: &mut Errs, cfg: &At, dns_policy: &str) {
    if dns_policy == "None" {
        if !cfg.is_set() {
            e.required(&cfg.path, "must provide `dnsConfig` when `dnsPolicy` is None");
            return;
        }
        if cfg.get("nameservers").count() == 0 {
            e.required(
                &child(&cfg.path, "nameservers"),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            );
            return;
        }
    }
    if cfg.obj(e).is_none() {
        return;
    }
    let ns_at = cfg.get("nameservers");
    let ns = ns_at.str_list(e).unwrap_or_default();
    if ns.len() > 3 {
        e.invalid(
            &ns_at.path,
            Bad::StrList(Some(ns.clone())),
            "must not have more than 3 nameservers",
        );
    }
    for (i, n) in ns.iter().enumerate() {
        validate_ip(e, &index(&ns_at.path, i), n);
    }
    let s_at = cfg.get("searches");
    let searches = s_at.str_list(e).unwrap_or_default();
    if searches.len() > 32 {
        e.invalid(
            &s_at.path,
            Bad::StrList(Some(searches.clone())),
            "must not have more than 32 search paths",
        );
    }
    if searches.join(" ").len() > 2048 {
        e.invalid(
            &s_at.path,
            Bad::StrList(Some(searches.clone())),
            "must not have more than 2048 characters (including spaces) in the search list",
        );
    }
    for (i, s) in searches.iter().enumerate() {
        if s == "." {
            continue;
        }
        let trimmed = s.strip_suffix('.').unwrap_or(s);
        // AllowRelaxedDNSSearchValidation (on by default since 1.32): underscores are allowed.
        let ok = !trimmed.is_empty()
            && trimmed.len() <= 253
            && trimmed.split('.').all(|l| {
                let l = l.strip_prefix('_').unwrap_or(l);
                let b = l.as_bytes();
                !b.is_empty()
                    && lower_alnum(b[0])
                    && lower_alnum(b[b.len() - 1])
                    && b.iter().all(|&c| lower_alnum(c) || c == b'-' || c == b'_')
            });
        if !ok {
            e.invalid(
                &index(&s_at.path, i),
                bs(trimmed),
                &regex_error(
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '_', '-' \
                     or '.', and must start and end with an alphanumeric character",
                    DNS1123_SUBDOMAIN_FMT,
                    &["example.com"],
                ),
            );
        }
    }
    for (i, o) in cfg.get("options").items(e).iter().enumerate() {
        if o.get("name").s(e).is_empty() {
            e.required(&index(&child(&cfg.path, "options"), i), "must not be empty");
        }
    }
}

fn validate_topology_spread(e: &mut Errs, at: &At) {
    let items = at.items(e);
    let mut scratch = Errs::default();
    for (i, c) in items.iter().enumerate() {
        c.obj(e);
        let ms = c.get("maxSkew");
        let skew = ms.int32(e).unwrap_or(0);
        if skew <= 0 {
            e.invalid(&ms.path, Bad::Int(skew), MSG_NOT_POSITIVE);
        }
        let tk = c.get("topologyKey");
        let tkv = tk.s(e);
        if tkv.is_empty() {
            e.required(&tk.path, "can not be empty");
        }
        let wu = c.get("whenUnsatisfiable");
        let wuv = wu.s(e);
        if !matches!(wuv, "DoNotSchedule" | "ScheduleAnyway") {
            e.not_supported(&wu.path, bs(wuv), &["DoNotSchedule", "ScheduleAnyway"]);
        }
        for later in &items[i + 1..] {
            if later.get("topologyKey").s(&mut scratch) == tkv && later.get("whenUnsatisfiable").s(&mut scratch) == wuv
            {
                e.duplicate(
                    &child(&c.path, "{topologyKey, whenUnsatisfiable}"),
                    bs(&format!("{{{tkv}, {wuv}}}")),
                );
                break;
            }
        }
        let md = c.get("minDomains");
        if let Some(v) = md.int32(e) {
            if v <= 0 {
                e.invalid(&md.path, Bad::Int(v), MSG_NOT_POSITIVE);
            }
            if wuv != "DoNotSchedule" {
                e.invalid(
                    &md.path,
                    Bad::Int(v),
                    &format!("can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {wuv}"),
                );
            }
        }
        for f in ["nodeAffinityPolicy", "nodeTaintsPolicy"] {
            let p = c.get(f);
            if let Some(v) = p.str_opt(e) {
                if !matches!(v, "Honor" | "Ignore") {
                    e.not_supported(&p.path, bs(v), &["Honor", "Ignore"]);
                }
            }
        }
        validate_label_selector(e, &c.get("labelSelector"));
    }
}

fn validate_pod_security_context(e: &mut Errs, sc: &At) {
    if sc.obj(e).is_none() {
        return;
    }
    validate_id(e, &sc.get("runAsUser"));
    validate_id(e, &sc.get("runAsGroup"));
    validate_id(e, &sc.get("fsGroup"));
    for g in sc.get("supplementalGroups").items(e) {
        validate_id(e, &g);
    }
    let p = sc.get("fsGroupChangePolicy");
    if let Some(v) = p.str_opt(e) {
        if !matches!(v, "Always" | "OnRootMismatch") {
            e.not_supported(&p.path, bs(v), &["Always", "OnRootMismatch"]);
        }
    }
    validate_seccomp_profile(e, &sc.get("seccompProfile"));
}

/// `ValidatePodSpec`. `is_pod` distinguishes a Pod from a pod template (upstream's `ResourceIsPod`).
fn validate_pod_spec(e: &mut Errs, spec: &At, is_pod: bool) {
    spec.obj(e);
    let tg = spec.get("terminationGracePeriodSeconds");
    let grace = tg.int(e);
    if !tg.is_set() {
        e.required(&tg.path, "");
    }
    let volumes = validate_volumes(e, &spec.get("volumes"), is_pod);
    let restart_policy = spec.get("restartPolicy").s(e).to_string();
    let host_users = spec.get("hostUsers").boolean(e).unwrap_or(true);
    let ctx = PodCtx {
        volumes,
        grace,
        restart_policy: restart_policy.clone(),
        is_pod,
        host_users,
    };
    let containers = spec.get("containers");
    validate_containers(e, &containers, &ctx);
    validate_init_containers(e, &spec.get("initContainers"), &containers, &ctx);

    if spec.get("hostNetwork").boolean(e) == Some(true) {
        let mut scratch = Errs::default();
        for c in containers.items(&mut scratch) {
            for p in c.get("ports").items(&mut scratch) {
                let hp = p.get("hostPort").int(&mut scratch).unwrap_or(0);
                let cp = p.get("containerPort").int(&mut scratch).unwrap_or(0);
                if (is_pod || hp != 0) && hp != cp {
                    e.invalid(
                        &child(&p.path, "hostPort"),
                        Bad::Int(hp),
                        "must match `containerPort` when `hostNetwork` is true",
                    );
                }
            }
        }
        if !host_users {
            e.forbidden(&child(&spec.path, "hostNetwork"), "when `pod.Spec.HostUsers` is false");
        }
    }
    let rp = spec.get("restartPolicy");
    match restart_policy.as_str() {
        "Always" | "OnFailure" | "Never" => {}
        "" => e.required(&rp.path, ""),
        other => e.not_supported(&rp.path, bs(other), &["Always", "OnFailure", "Never"]),
    }
    let dp = spec.get("dnsPolicy");
    let dns_policy = dp.s(e);
    match dns_policy {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None" => {}
        "" => e.required(&dp.path, ""),
        other => e.not_supported(
            &dp.path,
            bs(other),
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        ),
    }
    validate_labels(e, &spec.get("nodeSelector"));
    validate_pod_security_context(e, &spec.get("securityContext"));
    for s in spec.get("imagePullSecrets").items(e) {
        if let Some(m) = s.obj(e) {
            if m.keys().any(|k| k != "name") {
                let name = s.get("name").s(e);
                e.invalid(
                    &s.path,
                    Bad::Raw(format!("core.LocalObjectReference{{Name:{}}}", go_quote(name))),
                    "only name may be set",
                );
            }
        }
    }
    validate_affinity(e, &spec.get("affinity"));
    validate_dns_config(e, &spec.get("dnsConfig"), dns_policy);
    for g in spec.get("readinessGates").items(e) {
        let ct = g.get("conditionType");
        let v = ct.s(e);
        e.msgs(&ct.path, v, qualified_name_errs(v));
    }
    let mut gates = BTreeSet::new();
    for g in spec.get("schedulingGates").items(e) {
        let n = g.get("name").s(e);
        e.msgs(&g.path, n, qualified_name_errs(n));
        if !gates.insert(n.to_string()) {
            e.duplicate(&g.path, bs(n));
        }
    }
    validate_topology_spread(e, &spec.get("topologySpreadConstraints"));
    for f in ["serviceAccountName", "nodeName", "priorityClassName"] {
        let a = spec.get(f);
        let v = a.s(e);
        if !v.is_empty() {
            e.msgs(&a.path, v, dns1123_subdomain_errs(v));
        }
    }
    let ads = spec.get("activeDeadlineSeconds");
    if let Some(v) = ads.int(e) {
        if !(1..=MAX_INT32).contains(&v) {
            e.invalid(&ads.path, Bad::Int(v), &range_error(1, MAX_INT32));
        }
    }
    for f in ["hostname", "subdomain"] {
        let a = spec.get(f);
        let v = a.s(e);
        if !v.is_empty() {
            e.msgs(&a.path, v, dns1123_label_errs(v));
        }
    }
    validate_tolerations(e, &spec.get("tolerations"));
    for ha in spec.get("hostAliases").items(e) {
        ha.obj(e);
        let ip = ha.get("ip");
        let ipv = ip.s(e);
        validate_ip(e, &ip.path, ipv);
        let hn = ha.get("hostnames");
        for (j, h) in hn.str_list(e).unwrap_or_default().iter().enumerate() {
            e.msgs(&index(&hn.path, j), h, dns1123_subdomain_errs(h));
        }
    }
    let rc = spec.get("runtimeClassName");
    if let Some(v) = rc.str_opt(e) {
        e.msgs(&rc.path, v, dns1123_subdomain_errs(v));
    }
    let pp = spec.get("preemptionPolicy");
    if let Some(v) = pp.str_opt(e) {
        match v {
            "PreemptLowerPriority" | "Never" => {}
            "" => e.required(&pp.path, ""),
            _ => e.not_supported(&pp.path, bs(v), &["PreemptLowerPriority", "Never"]),
        }
    }
    let oh = spec.get("overhead");
    if oh.is_set() {
        let lim = At {
            v: oh.v,
            path: child(&oh.path, "limits"),
        };
        let req = At {
            v: None,
            path: child(&oh.path, "requests"),
        };
        validate_resources(e, &oh.path, &lim, &req);
    }
    let os = spec.get("os");
    if os.obj(e).is_some() {
        let n = os.get("name");
        let nv = n.s(e);
        if nv.is_empty() {
            e.required(&n.path, "cannot be empty");
        } else if !matches!(nv, "linux" | "windows") {
            e.not_supported(&os.path, bs(nv), &["linux", "windows"]);
        }
    }
}

/// `ValidatePodSpecificAnnotations`.
fn validate_pod_annotations(e: &mut Errs, ann: &At, spec: &At) {
    let mut scratch = Errs::default();
    let Some(m) = ann.str_map(&mut scratch) else { return };
    if let Some(v) = m.get("kubernetes.io/config.mirror") {
        if spec.get("nodeName").s(&mut scratch).is_empty() {
            e.invalid(
                &key(&ann.path, "kubernetes.io/config.mirror"),
                bs(v),
                "must set spec.nodeName if mirror pod annotation is set",
            );
        }
    }
    if let Some(v) = m.get("controller.kubernetes.io/pod-deletion-cost") {
        let first_ok =
            v.starts_with('-') || v == "0" || v.as_bytes().first().is_some_and(|c| (b'1'..=b'9').contains(c));
        if !first_ok || v.parse::<i32>().is_err() {
            e.invalid(
                &key(&ann.path, "controller.kubernetes.io/pod-deletion-cost"),
                bs(v),
                "must be a 32bit integer",
            );
        }
    }
}

/// `ValidatePodTemplateSpec`.
fn validate_pod_template_spec(e: &mut Errs, tmpl: &At) {
    tmpl.obj(e);
    let meta = tmpl.get("metadata");
    meta.obj(e);
    validate_labels(
        e,
        &At {
            v: meta.get("labels").v,
            path: child(&tmpl.path, "labels"),
        },
    );
    let ann = At {
        v: meta.get("annotations").v,
        path: child(&tmpl.path, "annotations"),
    };
    validate_annotations(e, &ann);
    let spec = tmpl.get("spec");
    validate_pod_annotations(e, &ann, &spec);
    validate_pod_spec(e, &spec, false);
    if spec.get("ephemeralContainers").count() > 0 {
        e.forbidden(
            &child(&spec.path, "ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        );
    }
}

fn validate_pod_metadata_and_spec(e: &mut Errs, root: &At) {
    let meta = root.get("metadata");
    validate_object_meta(e, &meta, Some(true), NameRule::Subdomain);
    let spec = root.get("spec");
    validate_pod_annotations(e, &meta.get("annotations"), &spec);
    validate_pod_spec(e, &spec, true);
    if spec.get("serviceAccountName").s(e).is_empty() {
        let mut scratch = Errs::default();
        for v in spec.get("volumes").items(&mut scratch) {
            for s in v.get("projected").get("sources").items(&mut scratch) {
                let t = s.get("serviceAccountToken");
                if t.is_set() {
                    e.forbidden(&t.path, "must not be specified when serviceAccountName is not set");
                }
            }
        }
    }
    let ips = root.get("status").get("podIPs");
    for ip in ips.items(e) {
        let v = ip.get("ip").s(e);
        validate_ip(e, &ip.path, v);
    }
}

fn validate_pod_create(e: &mut Errs, root: &At) {
    validate_pod_metadata_and_spec(e, root);
    let spec = root.get("spec");
    if spec.get("ephemeralContainers").count() > 0 {
        e.forbidden(&child(&spec.path, "ephemeralContainers"), "cannot be set on create");
    }
    if !spec.get("nodeName").s(e).is_empty() && spec.get("schedulingGates").count() > 0 {
        e.forbidden(
            &child(&spec.path, "nodeName"),
            "cannot be set until all schedulingGates have been cleared",
        );
    }
}

const UPDATABLE_POD_FIELDS: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,\
`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),\
`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn validate_pod_update(e: &mut Errs, new: &At, old: &At) {
    let meta = new.get("metadata");
    validate_object_meta_update(e, &meta, &old.get("metadata"));
    validate_pod_metadata_and_spec(e, new);
    let mut scratch = Errs::default();
    let ann_path = child(&meta.path, "annotations");
    let new_ann = meta.get("annotations").str_map(&mut scratch).unwrap_or_default();
    let old_ann = old
        .get("metadata")
        .get("annotations")
        .str_map(&mut scratch)
        .unwrap_or_default();
    const MIRROR: &str = "kubernetes.io/config.mirror";
    match (old_ann.get(MIRROR), new_ann.get(MIRROR)) {
        (Some(o), Some(n)) if o == n => {}
        (Some(_), _) => e.forbidden(
            &key(&ann_path, MIRROR),
            "may not remove or update mirror pod annotation",
        ),
        (None, Some(_)) => e.forbidden(&key(&ann_path, MIRROR), "may not add mirror pod annotation"),
        (None, None) => {}
    }

    let spec = new.get("spec");
    let old_spec = old.get("spec");
    for f in ["containers", "initContainers"] {
        let nc = spec.get(f);
        let oc = old_spec.get(f);
        if nc.count() != oc.count() {
            e.forbidden(&nc.path, "pod updates may not add or remove containers");
            return;
        }
        for c in nc.items(&mut scratch) {
            let img = c.get("image");
            let iv = img.s(&mut scratch);
            if iv.is_empty() {
                e.required(&img.path, "");
            }
            if iv.len() != iv.trim().len() {
                e.invalid(&img.path, bs(iv), "must not have leading or trailing whitespace");
            }
        }
    }
    let ads = spec.get("activeDeadlineSeconds");
    let old_ads = old_spec.get("activeDeadlineSeconds").int(&mut scratch);
    match ads.int(&mut scratch) {
        Some(v) => {
            if !(0..=MAX_INT32).contains(&v) {
                e.invalid(&ads.path, Bad::Int(v), &range_error(0, MAX_INT32));
                return;
            }
            if let Some(o) = old_ads {
                if o < v {
                    e.invalid(&ads.path, Bad::Int(v), "must be less than or equal to previous value");
                    return;
                }
            }
        }
        None => {
            if old_ads.is_some() {
                e.invalid(
                    &ads.path,
                    Bad::Null,
                    "must not update from a positive integer to nil value",
                );
            }
        }
    }
    // Tolerations: existing ones may only change their tolerationSeconds.
    let tol = spec.get("tolerations");
    let new_tols: Vec<&Value> = tol
        .val()
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if let Some(old_tols) = old_spec.get("tolerations").val().and_then(Value::as_array) {
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("tolerationSeconds");
            }
            v
        };
        for o in old_tols {
            if !new_tols.iter().any(|n| sem_eq(Some(&strip(o)), Some(&strip(n)))) {
                e.forbidden(
                    &tol.path,
                    "existing toleration can not be modified except its tolerationSeconds",
                );
                break;
            }
        }
    }
    // Scheduling gates: only removals.
    let old_gates: BTreeSet<String> = old_spec
        .get("schedulingGates")
        .items(&mut scratch)
        .iter()
        .map(|g| g.get("name").s(&mut scratch).to_string())
        .collect();
    for g in spec.get("schedulingGates").items(&mut scratch) {
        let n = g.get("name").s(&mut scratch);
        if !old_gates.contains(n) {
            e.forbidden(
                &child(&g.path, "name"),
                &format!("only deletion is allowed, but found new scheduling gate '{n}'"),
            );
        }
    }
    if sem_eq(spec.val(), old_spec.val()) {
        return;
    }
    // Compare everything else: put the old values back into the fields that may change.
    let mut munged = spec.val().cloned().unwrap_or(Value::Null);
    let old_v = old_spec.val().cloned().unwrap_or(Value::Null);
    if let Some(m) = munged.as_object_mut() {
        for f in ["containers", "initContainers"] {
            if let (Some(nc), Some(oc)) = (
                m.get_mut(f).and_then(Value::as_array_mut),
                old_v.get(f).and_then(Value::as_array),
            ) {
                for (n, o) in nc.iter_mut().zip(oc.iter()) {
                    if let Some(nm) = n.as_object_mut() {
                        match o.get("image") {
                            Some(img) => nm.insert("image".to_string(), img.clone()),
                            None => nm.remove("image"),
                        };
                    }
                }
            }
        }
        for f in ["activeDeadlineSeconds", "schedulingGates", "tolerations"] {
            match old_v.get(f) {
                Some(v) => m.insert(f.to_string(), v.clone()),
                None => m.remove(f),
            };
        }
        let old_grace = old_v.get("terminationGracePeriodSeconds").and_then(Value::as_i64);
        let new_grace = m.get("terminationGracePeriodSeconds").and_then(Value::as_i64);
        if let (Some(o), Some(1)) = (old_grace, new_grace) {
            if o < 0 {
                m.insert("terminationGracePeriodSeconds".to_string(), Value::from(o));
            }
        }
    }
    if !sem_eq(Some(&munged), Some(&old_v)) {
        let mut lines = Vec::new();
        diff_paths("", Some(&old_v), Some(&munged), &mut lines, 20);
        e.forbidden(
            &spec.path,
            &format!(
                "pod updates may not change fields other than {UPDATABLE_POD_FIELDS}\n  core.PodSpec{{\n{}  }}\n",
                lines.concat()
            ),
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Deployments and ReplicaSets (pkg/apis/apps/validation)
// ---------------------------------------------------------------------------------------------------------------

/// Validates `spec.selector`; returns `(selector, usable)`, where `usable` is false when upstream's
/// `LabelSelectorAsSelector` would fail (then the template is not validated).
fn validate_workload_selector(e: &mut Errs, spec: &At) -> (Option<Selector>, bool) {
    let sel_at = spec.get("selector");
    if !sel_at.is_set() {
        e.required(&sel_at.path, "");
        return (None, true);
    }
    let before = e.len();
    let sel = validate_label_selector(e, &sel_at);
    let usable = e.len() == before;
    if let Some(s) = &sel {
        if s.is_empty() {
            e.invalid(
                &sel_at.path,
                Bad::Raw(s.go()),
                "empty selector is invalid for deployment",
            );
        }
        if !usable {
            e.invalid(&sel_at.path, Bad::Raw(s.go()), "invalid label selector");
        }
    }
    (sel, usable)
}

/// `ValidatePodTemplateSpecForReplicaSet`.
fn validate_template_for_replicas(e: &mut Errs, tmpl: &At, sel: Option<&Selector>, kind: &str) {
    let mut scratch = Errs::default();
    let labels = tmpl.get("metadata").get("labels").str_map(&mut scratch);
    let matches = match sel {
        None => false,
        Some(s) => s.is_empty() || s.matches(&labels.clone().unwrap_or_default()),
    };
    if !matches {
        e.invalid(
            &child(&child(&tmpl.path, "metadata"), "labels"),
            Bad::StrMap(labels),
            "`selector` does not match template `labels`",
        );
    }
    validate_pod_template_spec(e, tmpl);
    let spec = tmpl.get("spec");
    let rp = spec.get("restartPolicy");
    let rpv = rp.s(&mut scratch);
    if rpv != "Always" {
        e.not_supported(&rp.path, bs(rpv), &["Always"]);
    }
    let ads = spec.get("activeDeadlineSeconds");
    if ads.is_set() {
        e.forbidden(&ads.path, &format!("activeDeadlineSeconds in {kind} is not Supported"));
    }
}

fn int_or_percent_value(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::String(s)) if is_percent(s) => s[..s.len() - 1].parse().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn validate_positive_int_or_percent(e: &mut Errs, at: &At) {
    match at.val() {
        None => {}
        Some(Value::String(s)) if !is_percent(s) => e.invalid(
            &at.path,
            Bad::Raw(go_int_or_string(at.val())),
            &regex_error(PERCENT_MSG, PERCENT_FMT, &["1%", "93%"]),
        ),
        Some(Value::String(_)) => {}
        Some(Value::Number(_)) => nonneg(e, at),
        Some(_) => e.invalid(
            &at.path,
            Bad::Raw(go_int_or_string(None)),
            "must be an integer or percentage (e.g '5%%')",
        ),
    }
}

fn validate_deployment_strategy(e: &mut Errs, st: &At) {
    st.obj(e);
    let t = st.get("type").s(e);
    let ru = st.get("rollingUpdate");
    match t {
        "Recreate" => {
            if ru.is_set() {
                e.forbidden(&ru.path, "may not be specified when strategy `type` is 'Recreate'");
            }
        }
        "RollingUpdate" => {
            if ru.obj(e).is_none() {
                if !ru.is_set() {
                    e.required(&ru.path, "this should be defaulted and never be nil");
                }
                return;
            }
            let mu = ru.get("maxUnavailable");
            let ms = ru.get("maxSurge");
            validate_positive_int_or_percent(e, &mu);
            validate_positive_int_or_percent(e, &ms);
            if int_or_percent_value(mu.val()) == 0 && int_or_percent_value(ms.val()) == 0 {
                e.invalid(
                    &mu.path,
                    Bad::Raw(go_int_or_string(mu.val())),
                    "may not be 0 when `maxSurge` is 0",
                );
            }
            if let Some(Value::String(s)) = mu.val() {
                if is_percent(s) && int_or_percent_value(mu.val()) > 100 {
                    e.invalid(
                        &mu.path,
                        Bad::Raw(go_int_or_string(mu.val())),
                        "must not be greater than 100%",
                    );
                }
            }
        }
        _ => {
            let ru_go = if ru.is_set() {
                "(*apps.RollingUpdateDeployment)(0xc000000000)"
            } else {
                "(*apps.RollingUpdateDeployment)(nil)"
            };
            e.not_supported(
                &st.path,
                Bad::Raw(format!(
                    "apps.DeploymentStrategy{{Type:{}, RollingUpdate:{ru_go}}}",
                    go_quote(t)
                )),
                &["Recreate", "RollingUpdate"],
            );
        }
    }
}

fn validate_deployment_spec(e: &mut Errs, root: &At) {
    let spec = root.get("spec");
    spec.obj(e);
    nonneg(e, &spec.get("replicas"));
    let (sel, usable) = validate_workload_selector(e, &spec);
    if usable {
        validate_template_for_replicas(e, &spec.get("template"), sel.as_ref(), "ReplicaSet");
    }
    validate_deployment_strategy(e, &spec.get("strategy"));
    let mrs = spec.get("minReadySeconds");
    nonneg(e, &mrs);
    nonneg(e, &spec.get("revisionHistoryLimit"));
    let rb = spec.get("rollbackTo");
    if rb.obj(e).is_some() {
        let rev = rb.get("revision");
        if let Some(v) = rev.int(e) {
            if v < 0 {
                e.invalid(
                    &child(&child(&spec.path, "rollback"), "version"),
                    Bad::Int(v),
                    MSG_NEGATIVE,
                );
            }
        }
    }
    let pds = spec.get("progressDeadlineSeconds");
    if let Some(v) = pds.int(e) {
        if v < 0 {
            e.invalid(&pds.path, Bad::Int(v), MSG_NEGATIVE);
        }
        let min_ready = mrs.int(&mut Errs::default()).unwrap_or(0);
        if v <= min_ready {
            e.invalid(&pds.path, Bad::Int(v), "must be greater than minReadySeconds");
        }
    }
}

fn validate_replica_set_spec(e: &mut Errs, root: &At) {
    let spec = root.get("spec");
    spec.obj(e);
    nonneg(e, &spec.get("replicas"));
    nonneg(e, &spec.get("minReadySeconds"));
    let (sel, usable) = validate_workload_selector(e, &spec);
    if usable {
        validate_template_for_replicas(e, &spec.get("template"), sel.as_ref(), "ReplicaSet");
    }
}

/// apps/v1 strategies forbid changing `spec.selector`.
fn validate_selector_unchanged(e: &mut Errs, new: &At, old: &At) {
    let n = read_selector(&new.get("spec").get("selector"));
    let o = read_selector(&old.get("spec").get("selector"));
    let same = match (&n, &o) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same(b),
        _ => false,
    };
    if !same {
        let shown = n.map_or("null".to_string(), |s| s.go());
        e.invalid(
            &child(&child(&new.path, "spec"), "selector"),
            Bad::Raw(shown),
            MSG_IMMUTABLE,
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------------------------------------

fn svc_type<'a>(spec: &At<'a>) -> &'a str {
    spec.get("type").s(&mut Errs::default())
}

fn svc_cluster_ips(spec: &At) -> Vec<String> {
    spec.get("clusterIPs")
        .str_list(&mut Errs::default())
        .unwrap_or_default()
}

fn is_headless(spec: &At) -> bool {
    svc_cluster_ips(spec) == ["None"]
}

fn externally_accessible(spec: &At) -> bool {
    match svc_type(spec) {
        "LoadBalancer" | "NodePort" => true,
        "ClusterIP" => spec.get("externalIPs").count() > 0,
        _ => false,
    }
}

fn needs_health_check(spec: &At) -> bool {
    svc_type(spec) == "LoadBalancer" && spec.get("externalTrafficPolicy").s(&mut Errs::default()) == "Local"
}

fn go_service_port_key(proto: &str, port: i64) -> String {
    format!(
        "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{port}, \
TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
        go_quote(proto)
    )
}

/// `ValidateServiceClusterIPsRelatedFields`.
fn validate_cluster_ips(e: &mut Errs, spec: &At) {
    if svc_type(spec) == "ExternalName" {
        return;
    }
    let cip = spec.get("clusterIP").s(e);
    let ips_at = spec.get("clusterIPs");
    let ips = ips_at.str_list(e).unwrap_or_default();
    if !cip.is_empty() {
        if ips.is_empty() {
            e.required(&ips_at.path, "");
        } else if ips[0] != cip {
            e.invalid(
                &ips_at.path,
                Bad::StrList(Some(ips.clone())),
                "first value must match `clusterIP`",
            );
        }
    } else if !ips.is_empty() {
        e.invalid(
            &ips_at.path,
            Bad::StrList(Some(ips.clone())),
            "must be empty when `clusterIP` is not specified",
        );
    }
    let fam_at = spec.get("ipFamilies");
    let families = fam_at.str_list(e).unwrap_or_default();
    let mut seen = BTreeSet::new();
    for (i, f) in families.iter().enumerate() {
        if !matches!(f.as_str(), "IPv4" | "IPv6") {
            e.not_supported(&index(&fam_at.path, i), bs(f), &["IPv4", "IPv6"]);
        }
        if !seen.insert(f.clone()) {
            e.duplicate(&index(&fam_at.path, i), bs(f));
        }
    }
    let pol = spec.get("ipFamilyPolicy");
    if let Some(p) = pol.str_opt(e) {
        if !matches!(p, "SingleStack" | "PreferDualStack" | "RequireDualStack") {
            e.not_supported(
                &pol.path,
                bs(p),
                &["PreferDualStack", "RequireDualStack", "SingleStack"],
            );
        }
    }
    let mut has_invalid = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == "None" {
            if ips.len() > 1 {
                has_invalid = true;
                e.invalid(
                    &ips_at.path,
                    Bad::StrList(Some(ips.clone())),
                    "'None' must be the first and only value",
                );
            }
            continue;
        }
        if validate_ip(e, &index(&ips_at.path, i), ip).is_none() {
            has_invalid = true;
        }
    }
    if ips.len() > 2 {
        e.invalid(
            &ips_at.path,
            Bad::StrList(Some(ips.clone())),
            "may only hold up to 2 values",
        );
    }
    if has_invalid {
        return;
    }
    if ips.len() > 1 {
        let v6 = ips.iter().filter(|ip| is_ipv6_string(ip)).count();
        if v6 != 1 || ips.len() != 2 {
            e.invalid(
                &ips_at.path,
                Bad::StrList(Some(ips.clone())),
                "may specify no more than one IP for each IP family",
            );
        }
    }
    if ips != ["None"] && !ips.is_empty() && !families.is_empty() {
        for (i, ip) in ips.iter().enumerate().take(families.len()) {
            if families[i] == "IPv4" && is_ipv6_string(ip) {
                e.invalid(
                    &index(&ips_at.path, i),
                    bs(ip),
                    &format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                );
            }
            if families[i] == "IPv6" && !is_ipv6_string(ip) {
                e.invalid(
                    &index(&ips_at.path, i),
                    bs(ip),
                    &format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                );
            }
        }
    }
}

/// `ValidateService`, on an object whose `clusterIPs` were already synchronised with `clusterIP`.
fn validate_service(e: &mut Errs, root: &At) {
    let meta = root.get("metadata");
    validate_object_meta(e, &meta, Some(true), NameRule::Dns1035);
    let mut scratch = Errs::default();
    let ann = meta.get("annotations").str_map(&mut scratch).unwrap_or_default();
    const TOPOLOGY_MODE: &str = "service.kubernetes.io/topology-mode";
    const TOPOLOGY_HINTS: &str = "service.kubernetes.io/topology-aware-hints";
    if let (Some(mode), Some(hints)) = (ann.get(TOPOLOGY_MODE), ann.get(TOPOLOGY_HINTS)) {
        if mode != hints {
            e.invalid(
                &key(&child(&meta.path, "annotations"), TOPOLOGY_MODE),
                bs(mode),
                &format!("must match annotations[{TOPOLOGY_HINTS}] when both are specified"),
            );
        }
    }
    let spec = root.get("spec");
    spec.obj(e);
    let typ = spec.get("type").s(e);
    let headless = is_headless(&spec);
    let ports_at = spec.get("ports");
    let ports = ports_at.items(e);
    if ports.is_empty() && !headless && typ != "ExternalName" {
        e.required(&ports_at.path, "");
    }
    let ips_path = child(&spec.path, "clusterIPs");
    match typ {
        "LoadBalancer" | "NodePort" if headless => e.invalid(
            &index(&ips_path, 0),
            bs("None"),
            &format!("may not be set to 'None' for {typ} services"),
        ),
        "ExternalName" => {
            if spec.get("clusterIPs").count() > 0 {
                e.forbidden(&ips_path, "may not be set for ExternalName services");
            }
            if spec.get("ipFamilies").count() > 0 {
                e.forbidden(
                    &child(&spec.path, "ipFamilies"),
                    "may not be set for ExternalName services",
                );
            }
            if spec.get("ipFamilyPolicy").is_set() {
                e.forbidden(
                    &child(&spec.path, "ipFamilyPolicy"),
                    "may not be set for ExternalName services",
                );
            }
            let en = spec.get("externalName");
            let name = en.s(e);
            let cname = name.strip_suffix('.').unwrap_or(name);
            if cname.is_empty() {
                e.required(&en.path, "");
            } else {
                e.msgs(&en.path, cname, dns1123_subdomain_errs(cname));
            }
        }
        _ => {}
    }
    let mut names = BTreeSet::new();
    let require_name = ports.len() > 1;
    for p in &ports {
        p.obj(e);
        let n = p.get("name");
        let name = n.s(e);
        if require_name && name.is_empty() {
            e.required(&n.path, "");
        } else if !name.is_empty() {
            e.msgs(&n.path, name, dns1123_label_errs(name));
            if !names.insert(name.to_string()) {
                e.duplicate(&n.path, bs(name));
            }
        }
        let port = p.get("port");
        let pv = port.int32(e).unwrap_or(0);
        for m in port_num_errs(pv) {
            e.invalid(&port.path, Bad::Int(pv), &m);
        }
        validate_protocol(e, &p.get("protocol"));
        validate_port_num_or_name(e, &p.get("targetPort"));
        let ap = p.get("appProtocol");
        if let Some(v) = ap.str_opt(e) {
            e.msgs(&ap.path, v, qualified_name_errs(v));
        }
    }
    let sel = spec.get("selector");
    if sel.is_set() {
        validate_labels(e, &sel);
    }
    let sa = spec.get("sessionAffinity");
    let affinity = sa.s(e);
    match affinity {
        "" => e.required(&sa.path, ""),
        "ClientIP" | "None" => {}
        other => e.not_supported(&sa.path, bs(other), &["ClientIP", "None"]),
    }
    let sac = spec.get("sessionAffinityConfig");
    if affinity == "ClientIP" {
        let detail = "when session affinity type is ClientIP";
        let cip = sac.get("clientIP");
        let timeout = cip.get("timeoutSeconds");
        if sac.obj(e).is_none() {
            e.required(&sac.path, detail);
        } else if cip.obj(e).is_none() {
            e.required(&cip.path, detail);
        } else if !timeout.is_set() {
            e.required(&timeout.path, detail);
        } else if let Some(t) = timeout.int32(e) {
            if t <= 0 || t > 86400 {
                e.invalid(&timeout.path, Bad::Int(t), "must be greater than 0 and less than 86400");
            }
        }
    } else if affinity == "None" && sac.is_set() {
        e.forbidden(&sac.path, "must not be set when session affinity is None");
    }
    validate_cluster_ips(e, &spec);
    let eips = spec.get("externalIPs");
    for (i, ip) in eips.str_list(e).unwrap_or_default().iter().enumerate() {
        let p = index(&eips.path, i);
        if validate_ip(e, &p, ip).is_some() {
            validate_non_special_ip(e, &p, ip, Loopback::Refused);
        }
    }
    let t_at = spec.get("type");
    match typ {
        "" => e.required(&t_at.path, ""),
        "ClusterIP" | "ExternalName" | "LoadBalancer" | "NodePort" => {}
        other => e.not_supported(
            &t_at.path,
            bs(other),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ),
    }
    let mut node_ports = BTreeSet::new();
    let mut port_keys = BTreeSet::new();
    for p in &ports {
        let np_at = p.get("nodePort");
        let np = np_at.int(&mut scratch).unwrap_or(0);
        let proto = p.get("protocol").s(&mut scratch).to_string();
        let port = p.get("port").int(&mut scratch).unwrap_or(0);
        if typ == "ClusterIP" && np != 0 {
            e.forbidden(&np_at.path, "may not be used when `type` is 'ClusterIP'");
        }
        if np != 0 {
            if !node_ports.insert((proto.clone(), np)) {
                e.duplicate(&np_at.path, Bad::Int(np));
            }
            if matches!(typ, "NodePort" | "LoadBalancer") && !(NODE_PORT_MIN..=NODE_PORT_MAX).contains(&np) {
                e.invalid(
                    &np_at.path,
                    Bad::Int(np),
                    &format!(
                        "provided port is not in the valid range. \
                         The range of valid ports is {NODE_PORT_MIN}-{NODE_PORT_MAX}"
                    ),
                );
            }
        }
        if !port_keys.insert((proto.clone(), port)) {
            e.duplicate(&p.path, Bad::Raw(go_service_port_key(&proto, port)));
        }
    }
    let lbsr = spec.get("loadBalancerSourceRanges");
    let lb_path = child(&spec.path, "LoadBalancerSourceRanges");
    const LB_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
    if lbsr.count() > 0 {
        if typ != "LoadBalancer" {
            e.forbidden(&lb_path, "may only be used when `type` is 'LoadBalancer'");
        }
        for (i, r) in lbsr.str_list(e).unwrap_or_default().iter().enumerate() {
            validate_cidr(e, &index(&lb_path, i), r.trim());
        }
    } else if let Some(val) = ann.get(LB_RANGES_ANNOTATION) {
        let p = key(&child(&meta.path, "annotations"), LB_RANGES_ANNOTATION);
        if typ != "LoadBalancer" {
            e.forbidden(&p, "may only be used when `type` is 'LoadBalancer'");
        }
        let val = val.trim();
        if !val.is_empty() {
            for r in val.split(',') {
                validate_cidr(e, &p, r.trim());
            }
        }
    }
    let alb = spec.get("allocateLoadBalancerNodePorts");
    if alb.is_set() && typ != "LoadBalancer" {
        e.forbidden(&alb.path, "may only be used when `type` is 'LoadBalancer'");
    }
    if typ == "LoadBalancer" && !alb.is_set() {
        // Upstream reports this one without the `spec.` prefix.
        e.required("allocateLoadBalancerNodePorts", "");
    }
    let lbc = spec.get("loadBalancerClass");
    if let Some(c) = lbc.str_opt(e) {
        if typ == "LoadBalancer" {
            e.msgs(&lbc.path, c, qualified_name_errs(c));
        } else {
            e.forbidden(&lbc.path, "may only be used when `type` is 'LoadBalancer'");
        }
    }
    let etp = spec.get("externalTrafficPolicy");
    let etpv = etp.s(e);
    if !externally_accessible(&spec) {
        if !etpv.is_empty() {
            e.invalid(
                &etp.path,
                bs(etpv),
                "may only be set for externally-accessible services",
            );
        }
    } else if etpv.is_empty() {
        e.required(&etp.path, "");
    } else if !matches!(etpv, "Cluster" | "Local") {
        e.not_supported(&etp.path, bs(etpv), &["Cluster", "Local"]);
    }
    let hc = spec.get("healthCheckNodePort");
    let hcv = hc.int32(e).unwrap_or(0);
    if !needs_health_check(&spec) {
        if hcv != 0 {
            e.invalid(
                &hc.path,
                Bad::Int(hcv),
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            );
        }
    } else if hcv == 0 {
        e.required(&hc.path, "");
    } else {
        for m in port_num_errs(hcv) {
            e.invalid(&hc.path, Bad::Int(hcv), &m);
        }
    }
    let itp = spec.get("internalTrafficPolicy");
    match itp.str_opt(e) {
        None => {
            if matches!(typ, "NodePort" | "LoadBalancer" | "ClusterIP") {
                e.required(&itp.path, "");
            }
        }
        Some(v) if !matches!(v, "Cluster" | "Local") => e.not_supported(&itp.path, bs(v), &["Cluster", "Local"]),
        Some(_) => {}
    }
    let td = spec.get("trafficDistribution");
    if let Some(v) = td.str_opt(e) {
        if v != "PreferClose" {
            e.not_supported(&td.path, bs(v), &["PreferClose"]);
        }
    }
}

fn validate_service_update(e: &mut Errs, new: &At, old: &At) {
    validate_object_meta_update(e, &new.get("metadata"), &old.get("metadata"));
    let ns = new.get("spec");
    let os = old.get("spec");
    let (nt, ot) = (svc_type(&ns), svc_type(&os));
    let ips_path = "spec.clusterIPs";
    if nt != "ExternalName" && ot != "ExternalName" {
        let (nh, oh) = (is_headless(&ns), is_headless(&os));
        let new_ips = svc_cluster_ips(&ns);
        let old_ips = svc_cluster_ips(&os);
        let shown = || Bad::StrList(Some(new_ips.clone()));
        if !(nh && oh) {
            match old_ips.len().cmp(&new_ips.len()) {
                Ordering::Equal => {
                    for (i, ip) in old_ips.iter().enumerate() {
                        if *ip != new_ips[i] {
                            e.invalid(&index(ips_path, i), shown(), "may not change once set");
                        }
                    }
                }
                Ordering::Greater => {
                    if new_ips.is_empty() {
                        e.invalid(&index(ips_path, 0), shown(), "primary clusterIP can not be unset");
                    }
                    if !old_ips.is_empty() && !new_ips.is_empty() && new_ips[0] != old_ips[0] {
                        e.invalid(&index(ips_path, 0), shown(), "may not change once set");
                    }
                    let pol = ns.get("ipFamilyPolicy").val();
                    if new_ips.len() == 1 && pol.and_then(Value::as_str) != Some("SingleStack") {
                        e.invalid(
                            "spec.ipFamilyPolicy",
                            pol.map_or(Bad::Null, |v| Bad::Json(v.clone())),
                            "must be set to 'SingleStack' when releasing the secondary clusterIP",
                        );
                    }
                }
                Ordering::Less => {
                    if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
                        e.invalid(&index(ips_path, 0), shown(), "may not change once set");
                    }
                }
            }
        }
        if nh == oh && !nh {
            let mut scratch = Errs::default();
            let nf = ns.get("ipFamilies").str_list(&mut scratch).unwrap_or_default();
            let of = os.get("ipFamilies").str_list(&mut scratch).unwrap_or_default();
            let fam0 = "spec.ipFamilies[0]";
            match of.len().cmp(&nf.len()) {
                Ordering::Equal => {
                    if of != nf {
                        e.invalid(fam0, Bad::StrList(Some(nf.clone())), "may not change once set");
                    }
                }
                Ordering::Greater => {
                    if new_ips.is_empty() {
                        e.invalid(
                            fam0,
                            Bad::StrList(Some(nf.clone())),
                            "primary ipFamily can not be unset",
                        );
                    }
                    if !nf.is_empty() && nf[0] != of[0] {
                        e.invalid(fam0, Bad::StrList(Some(new_ips.clone())), "may not change once set");
                    }
                    let pol = ns.get("ipFamilyPolicy").val();
                    if nf.len() == 1 && pol.and_then(Value::as_str) != Some("SingleStack") {
                        e.invalid(
                            "spec.ipFamilyPolicy",
                            pol.map_or(Bad::Null, |v| Bad::Json(v.clone())),
                            "must be set to 'SingleStack' when releasing the secondary ipFamily",
                        );
                    }
                }
                Ordering::Less => {
                    if !of.is_empty() && !nf.is_empty() && nf[0] != of[0] {
                        e.invalid(fam0, Bad::StrList(Some(new_ips.clone())), "may not change once set");
                    }
                }
            }
        }
    }
    if nt == "LoadBalancer" && ot == "LoadBalancer" {
        let n = ns.get("loadBalancerClass").val();
        let o = os.get("loadBalancerClass").val();
        if n != o {
            e.invalid(
                "spec.loadBalancerClass",
                n.map_or(Bad::Null, |v| Bad::Json(v.clone())),
                "may not change once set",
            );
        }
    }
    if needs_health_check(&ns) && needs_health_check(&os) {
        let mut scratch = Errs::default();
        if ns.get("healthCheckNodePort").int(&mut scratch) != os.get("healthCheckNodePort").int(&mut scratch) {
            e.forbidden("spec.healthCheckNodePort", MSG_IMMUTABLE);
        }
    }
    validate_service(e, new);
}

// ---------------------------------------------------------------------------------------------------------------
// ConfigMaps, Secrets, ServiceAccounts, Namespaces
// ---------------------------------------------------------------------------------------------------------------

/// Standard base64 with padding, as Go's `encoding/json` decodes `[]byte`. Returns the byte offset of the
/// first illegal character on failure.
fn base64_decode(s: &str) -> Result<Vec<u8>, usize> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some((c - b'A') as u32),
            b'a'..=b'z' => Some((c - b'a') as u32 + 26),
            b'0'..=b'9' => Some((c - b'0') as u32 + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let b: Vec<(usize, u8)> = s
        .bytes()
        .enumerate()
        .filter(|(_, c)| *c != b'\r' && *c != b'\n')
        .collect();
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    let mut i = 0;
    while i < b.len() {
        let chunk = &b[i..(i + 4).min(b.len())];
        if chunk.len() < 4 {
            return Err(chunk.first().map_or(s.len(), |c| c.0));
        }
        let mut n: u32 = 0;
        let mut pad = 0;
        for (j, &(pos, c)) in chunk.iter().enumerate() {
            if c == b'=' && j >= 2 && i + 4 == b.len() {
                pad += 1;
                n <<= 6;
                continue;
            }
            if pad > 0 {
                return Err(pos);
            }
            match val(c) {
                Some(v) => n = (n << 6) | v,
                None => return Err(pos),
            }
        }
        out.push((n >> 16) as u8);
        if pad < 2 {
            out.push((n >> 8) as u8);
        }
        if pad < 1 {
            out.push(n as u8);
        }
        i += 4;
    }
    Ok(out)
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (chunk.get(1).copied().unwrap_or(0) as u32) << 8
            | chunk.get(2).copied().unwrap_or(0) as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(T[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes the byte values of a `map[string][]byte` field; reports bad base64 and wrong types.
fn byte_map(e: &mut Errs, at: &At) -> Option<BTreeMap<String, Vec<u8>>> {
    let entries = at.entries(e);
    at.val()?;
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        match v.val() {
            None => {
                out.insert(k, Vec::new());
            }
            Some(Value::String(s)) => match base64_decode(s) {
                Ok(b) => {
                    out.insert(k, b);
                }
                Err(pos) => e.invalid(
                    &v.path,
                    Bad::Str(s.clone()),
                    &format!("illegal base64 data at input byte {pos}"),
                ),
            },
            Some(other) => e.type_mismatch(&v.path, other, "must be of type string (base64 encoded)"),
        }
    }
    Some(out)
}

fn validate_config_map(e: &mut Errs, root: &At) {
    validate_object_meta(e, &root.get("metadata"), Some(true), NameRule::Subdomain);
    let data_at = root.get("data");
    let data = data_at.str_map(e).unwrap_or_default();
    let bin_at = root.get("binaryData");
    let binary = byte_map(e, &bin_at).unwrap_or_default();
    let mut total = 0;
    for (k, v) in &data {
        let p = key(&data_at.path, k);
        e.msgs(&p, k, config_key_errs(k));
        if binary.contains_key(k) {
            e.invalid(&p, bs(k), "duplicate of key present in binaryData");
        }
        total += v.len();
    }
    for (k, v) in &binary {
        e.msgs(&key(&bin_at.path, k), k, config_key_errs(k));
        total += v.len();
    }
    if total > MAX_SECRET_SIZE {
        e.too_long("[]", MAX_SECRET_SIZE);
    }
}

fn validate_secret(e: &mut Errs, root: &At) {
    let meta = root.get("metadata");
    validate_object_meta(e, &meta, Some(true), NameRule::Subdomain);
    let data_at = root.get("data");
    let mut data = byte_map(e, &data_at).unwrap_or_default();
    // stringData is folded into data before validation upstream (see default_object).
    for (k, v) in root.get("stringData").str_map(e).unwrap_or_default() {
        data.insert(k, v.into_bytes());
    }
    let mut total = 0;
    for (k, v) in &data {
        e.msgs(&key(&data_at.path, k), k, config_key_errs(k));
        total += v.len();
    }
    if total > MAX_SECRET_SIZE {
        e.too_long(&data_at.path, MAX_SECRET_SIZE);
    }
    let typ = root.get("type").s(e);
    let dp = |k: &str| key(&data_at.path, k);
    match typ {
        "kubernetes.io/service-account-token" => {
            let mut scratch = Errs::default();
            let ann = meta.get("annotations").str_map(&mut scratch).unwrap_or_default();
            if ann
                .get("kubernetes.io/service-account.name")
                .is_none_or(|v| v.is_empty())
            {
                e.required(
                    &key(&child(&meta.path, "annotations"), "kubernetes.io/service-account.name"),
                    "",
                );
            }
        }
        "kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson" => {
            let k = if typ == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            match data.get(k) {
                None => e.required(&dp(k), ""),
                Some(bytes) => {
                    let problem = match serde_json::from_slice::<Value>(bytes) {
                        Err(_) if bytes.iter().all(u8::is_ascii_whitespace) => {
                            Some("unexpected end of JSON input".to_string())
                        }
                        Err(err) => Some(format!("invalid JSON: {err}")),
                        Ok(Value::Object(_)) | Ok(Value::Null) => None,
                        Ok(v) => {
                            let kind = match v {
                                Value::Array(_) => "array",
                                Value::String(_) => "string",
                                Value::Number(_) => "number",
                                _ => "bool",
                            };
                            Some(format!(
                                "json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"
                            ))
                        }
                    };
                    if let Some(p) = problem {
                        e.invalid(&dp(k), bs("<secret contents redacted>"), &p);
                    }
                }
            }
        }
        "kubernetes.io/basic-auth" if !data.contains_key("username") && !data.contains_key("password") => {
            e.required(&dp("username"), "");
            e.required(&dp("password"), "");
        }
        "kubernetes.io/ssh-auth" if data.get("ssh-privatekey").is_none_or(|v| v.is_empty()) => {
            e.required(&dp("ssh-privatekey"), "");
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !data.contains_key(k) {
                    e.required(&dp(k), "");
                }
            }
        }
        _ => {}
    }
}

/// The `immutable: true` rules shared by ConfigMaps and Secrets.
fn validate_immutable_data(e: &mut Errs, new: &At, old: &At, fields: &[&str]) {
    if old.get("immutable").val() != Some(&Value::Bool(true)) {
        return;
    }
    if new.get("immutable").val() != Some(&Value::Bool(true)) {
        e.forbidden("immutable", MSG_IMMUTABLE_WHEN_SET);
    }
    for f in fields {
        let n = new.get(f).val();
        let o = old.get(f).val();
        let empty = |v: Option<&Value>| v.is_none_or(|v| v.as_object().is_some_and(Map::is_empty));
        if n != o && !(empty(n) && empty(o)) {
            e.forbidden(f, MSG_IMMUTABLE_WHEN_SET);
        }
    }
}

fn validate_namespace(e: &mut Errs, root: &At) {
    validate_object_meta(e, &root.get("metadata"), Some(false), NameRule::Label);
    let fin = root.get("spec").get("finalizers");
    for f in fin.str_list(e).unwrap_or_default() {
        e.msgs(&fin.path, &f, qualified_name_errs(&f));
        if !f.contains('/') && !is_standard_finalizer(&f) {
            e.invalid(
                &fin.path,
                bs(&f),
                "name is neither a standard finalizer name nor is it fully qualified",
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------------------------

fn validate_node_taints(e: &mut Errs, taints: &At, path: &str) {
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for (i, t) in taints.items(e).iter().enumerate() {
        t.obj(e);
        let p = index(path, i);
        let k = t.get("key").s(e);
        e.msgs(&child(&p, "key"), k, qualified_name_errs(k));
        let v = t.get("value").s(e);
        let verrs = label_value_errs(v);
        if !verrs.is_empty() {
            e.invalid(&child(&p, "value"), bs(v), &verrs.join(";"));
        }
        let eff = t.get("effect").s(e);
        validate_taint_effect(e, &child(&p, "effect"), eff, false);
        if !seen.insert((eff.to_string(), k.to_string())) {
            let added = t.get("timeAdded").val().map_or("(*v1.Time)(nil)".to_string(), |ts| {
                format!("&v1.Time{{{}}}", go_time(ts))
            });
            e.duplicate_detail(
                &p,
                Bad::Raw(format!(
                    "core.Taint{{Key:{}, Value:{}, Effect:{}, TimeAdded:{added}}}",
                    go_quote(k),
                    go_quote(v),
                    go_quote(eff)
                )),
                "taints must be unique by key and effect pair",
            );
        }
    }
}

fn validate_node_resources(e: &mut Errs, root: &At) {
    let status = root.get("status");
    for f in ["capacity", "allocatable"] {
        let at = status.get(f);
        for (name, q_at) in at.entries(e) {
            let path = child(&at.path, &name);
            let q_at = At { v: q_at.v, path };
            if let Some(q) = quantity_at(e, &q_at) {
                validate_quantity_value(e, &name, &q, &q_at.path);
            }
        }
    }
}

fn validate_node(e: &mut Errs, root: &At) {
    let meta = root.get("metadata");
    validate_object_meta(e, &meta, Some(false), NameRule::Subdomain);
    let spec = root.get("spec");
    spec.obj(e);
    // Upstream reports taint problems under `metadata.taints`.
    validate_node_taints(e, &spec.get("taints"), &child(&meta.path, "taints"));
    validate_node_resources(e, root);
    let pc = spec.get("podCIDRs");
    let cidrs = pc.str_list(e).unwrap_or_default();
    let mut families = Vec::new();
    for (i, c) in cidrs.iter().enumerate() {
        if let Some(v6) = validate_cidr(e, &index(&pc.path, i), c) {
            families.push(v6);
        }
    }
    if cidrs.len() > 1 {
        let dual = families.len() == 2 && families[0] != families[1];
        if !dual || cidrs.len() > 2 {
            e.invalid(
                &pc.path,
                Bad::StrList(Some(cidrs.clone())),
                "may specify no more than one CIDR for each IP family",
            );
        }
        let mut seen = BTreeSet::new();
        for (i, c) in cidrs.iter().enumerate() {
            if !seen.insert(c.clone()) {
                e.duplicate(&index(&pc.path, i), bs(c));
            }
        }
    }
}

fn validate_node_update(e: &mut Errs, new: &At, old: &At) {
    let meta = new.get("metadata");
    validate_object_meta_update(e, &meta, &old.get("metadata"));
    validate_node_resources(e, new);
    let mut scratch = Errs::default();
    let addrs = new.get("status").get("addresses");
    let mut seen = BTreeSet::new();
    for a in addrs.items(e) {
        let t = a.get("type").s(e).to_string();
        let v = a.get("address").s(e).to_string();
        if !seen.insert((t.clone(), v.clone())) {
            e.duplicate(
                &a.path,
                Bad::Raw(format!(
                    "core.NodeAddress{{Type:{}, Address:{}}}",
                    go_quote(&t),
                    go_quote(&v)
                )),
            );
        }
    }
    let spec = new.get("spec");
    let old_spec = old.get("spec");
    let old_cidrs = old_spec.get("podCIDRs").str_list(&mut scratch).unwrap_or_default();
    let new_cidrs = spec.get("podCIDRs").str_list(e).unwrap_or_default();
    let msg = "node updates may not change podCIDR except from \"\" to valid";
    if !old_cidrs.is_empty() && old_cidrs != new_cidrs {
        e.forbidden("spec.podCIDRs", msg);
    }
    let old_pid = old_spec.get("providerID").s(&mut scratch);
    if !old_pid.is_empty() && old_pid != spec.get("providerID").s(e) {
        e.forbidden(
            "spec.providerID",
            "node updates may not change providerID except from \"\" to valid",
        );
    }
    validate_node_taints(e, &spec.get("taints"), &child(&meta.path, "taints"));
    if spec.get("externalID").s(e) != old_spec.get("externalID").s(&mut scratch) {
        e.forbidden("spec.externalID", "may not be updated");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Endpoints and EndpointSlices
// ---------------------------------------------------------------------------------------------------------------

fn validate_endpoints(e: &mut Errs, root: &At) {
    validate_object_meta(e, &root.get("metadata"), Some(true), NameRule::Subdomain);
    for ss in root.get("subsets").items(e) {
        ss.obj(e);
        let addrs = ss.get("addresses");
        let not_ready = ss.get("notReadyAddresses");
        if addrs.count() == 0 && not_ready.count() == 0 {
            e.required(&ss.path, "must specify `addresses` or `notReadyAddresses`");
        }
        for a in addrs.items(e).into_iter().chain(not_ready.items(e)) {
            a.obj(e);
            let ip = a.get("ip");
            let ipv = ip.s(e);
            validate_ip(e, &ip.path, ipv);
            let h = a.get("hostname");
            let hv = h.s(e);
            if !hv.is_empty() {
                e.msgs(&h.path, hv, dns1123_label_errs(hv));
            }
            let nn = a.get("nodeName");
            if let Some(n) = nn.str_opt(e) {
                e.msgs(&nn.path, n, dns1123_subdomain_errs(n));
            }
            validate_non_special_ip(e, &ip.path, ipv, Loopback::Allowed);
        }
        let ports = ss.get("ports");
        let require_name = ports.count() > 1;
        for p in ports.items(e) {
            p.obj(e);
            let n = p.get("name");
            let nv = n.s(e);
            if require_name && nv.is_empty() {
                e.required(&n.path, "");
            } else if !nv.is_empty() {
                e.msgs(&n.path, nv, dns1123_label_errs(nv));
            }
            let port = p.get("port");
            let pv = port.int32(e).unwrap_or(0);
            for m in port_num_errs(pv) {
                e.invalid(&port.path, Bad::Int(pv), &m);
            }
            validate_protocol(e, &p.get("protocol"));
            let ap = p.get("appProtocol");
            if let Some(v) = ap.str_opt(e) {
                e.msgs(&ap.path, v, qualified_name_errs(v));
            }
        }
    }
}

fn validate_fqdn(e: &mut Errs, path: &str, name: &str) {
    if name.is_empty() {
        e.required(path, "");
        return;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let errs = dns1123_subdomain_errs(name);
    if !errs.is_empty() {
        e.invalid(path, bs(name), &errs.join(","));
        return;
    }
    if name.split('.').count() < 2 {
        e.invalid(
            path,
            bs(name),
            "should be a domain with at least two segments separated by dots",
        );
        return;
    }
    for label in name.split('.') {
        let errs = dns1123_label_errs(label);
        if !errs.is_empty() {
            e.invalid(path, bs(label), &errs.join(","));
            return;
        }
    }
}

fn validate_endpoint_slice(e: &mut Errs, root: &At) {
    validate_object_meta(e, &root.get("metadata"), Some(true), NameRule::Subdomain);
    let at = root.get("addressType");
    let addr_type = at.s(e);
    match addr_type {
        "" => e.required(&at.path, ""),
        "IPv4" | "IPv6" | "FQDN" => {}
        other => e.not_supported(&at.path, bs(other), &["FQDN", "IPv4", "IPv6"]),
    }
    let eps = root.get("endpoints");
    let list = eps.items(e);
    if list.len() > 1000 {
        e.too_many(&eps.path, list.len(), 1000);
    } else {
        for ep in &list {
            ep.obj(e);
            let addrs = ep.get("addresses");
            let a = addrs.str_list(e).unwrap_or_default();
            if a.is_empty() {
                e.required(&addrs.path, "must contain at least 1 address");
            } else if a.len() > 100 {
                e.too_many(&addrs.path, a.len(), 100);
            }
            for (i, address) in a.iter().enumerate() {
                let p = index(&addrs.path, i);
                match addr_type {
                    "IPv4" | "IPv6" => {
                        // ParseIPSloppy, then `To4() != nil` decides the family (IPv4-mapped IPv6 counts as IPv4).
                        let is_v4 = |ip: &IpAddr| match ip {
                            IpAddr::V4(_) => true,
                            IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
                        };
                        match parse_ip_sloppy(address) {
                            Some(ip) if is_v4(&ip) == (addr_type == "IPv4") => {
                                validate_non_special_ip(e, &p, address, Loopback::Allowed)
                            }
                            _ => e.invalid(&p, bs(address), &format!("must be a valid {addr_type} address")),
                        }
                    }
                    "FQDN" => validate_fqdn(e, &p, address),
                    _ => {}
                }
            }
            let nn = ep.get("nodeName");
            if let Some(n) = nn.str_opt(e) {
                e.msgs(&nn.path, n, dns1123_subdomain_errs(n));
            }
            let topo = ep.get("deprecatedTopology");
            if topo.count() > 16 {
                e.too_many(&topo.path, topo.count(), 16);
            }
            validate_labels(e, &topo);
            if topo.get("topology.kubernetes.io/zone").is_set() {
                e.internal(
                    &key(&topo.path, "topology.kubernetes.io/zone"),
                    "reserved key was not removed in conversion",
                );
            }
            let h = ep.get("hostname");
            if let Some(hv) = h.str_opt(e) {
                e.msgs(&h.path, hv, dns1123_label_errs(hv));
            }
            let hints = ep.get("hints");
            if hints.obj(e).is_some() {
                let fz = hints.get("forZones");
                let zones = fz.items(e);
                if zones.len() > 8 {
                    e.too_many(&fz.path, zones.len(), 8);
                } else {
                    let mut seen = BTreeSet::new();
                    for z in zones {
                        let n = z.get("name");
                        let nv = n.s(e);
                        if !seen.insert(nv.to_string()) {
                            e.duplicate(&n.path, bs(nv));
                        }
                        e.msgs(&n.path, nv, label_value_errs(nv));
                    }
                }
            }
        }
    }
    let ports = root.get("ports");
    let plist = ports.items(e);
    if plist.len() > 20000 {
        e.too_many(&ports.path, plist.len(), 20000);
        return;
    }
    let mut names = BTreeSet::new();
    for p in plist {
        p.obj(e);
        let n = p.get("name");
        let nv = n.s(e);
        if !nv.is_empty() {
            e.msgs(&n.path, nv, dns1123_label_errs(nv));
        }
        if !names.insert(nv.to_string()) {
            e.duplicate(&n.path, bs(nv));
        }
        let pr = p.get("protocol");
        match pr.str_opt(e) {
            None => e.required(&pr.path, ""),
            Some(v) if !matches!(v, "TCP" | "UDP" | "SCTP") => {
                e.not_supported(&pr.path, bs(v), &["SCTP", "TCP", "UDP"])
            }
            Some(_) => {}
        }
        let ap = p.get("appProtocol");
        if let Some(v) = ap.str_opt(e) {
            e.msgs(&ap.path, v, qualified_name_errs(v));
        }
        let port = p.get("port");
        if let Some(v) = port.int32(e) {
            for m in port_num_errs(v) {
                e.invalid(&port.path, Bad::Int(v), &m);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Events (core/v1 rules) and Leases
// ---------------------------------------------------------------------------------------------------------------

/// `legacyValidateEvent`; the event's namespace is reported at `namespace`, as upstream does.
fn validate_event_legacy(e: &mut Errs, root: &At) {
    let ns = root.get("metadata").get("namespace").s(e);
    let involved = root.get("involvedObject");
    involved.obj(e);
    let ins = involved.get("namespace").s(e);
    let event_time = root.get("eventTime").val().is_some_and(|v| !is_zero_value(v));
    let mismatch = |e: &mut Errs| e.invalid("involvedObject.namespace", bs(ins), "does not match event.namespace");
    if !event_time {
        if ins.is_empty() {
            if !ns.is_empty() && ns != "default" {
                mismatch(e);
            }
        } else if ns != ins {
            mismatch(e);
        }
    } else {
        if ins.is_empty() && ns != "default" && ns != "kube-system" {
            mismatch(e);
        }
        let rc = root.get("reportingComponent").s(e);
        if rc.is_empty() {
            e.required("reportingController", "");
        }
        e.msgs("reportingController", rc, qualified_name_errs(rc));
        for (field, json, limit) in [
            ("reportingInstance", "reportingInstance", 128usize),
            ("action", "action", 128),
            ("reason", "reason", 128),
        ] {
            let v = root.get(json).s(e);
            if v.is_empty() {
                e.required(field, "");
            }
            if v.len() > limit {
                e.invalid(field, bs(""), &format!("can have at most {limit} characters"));
            }
        }
        if root.get("message").s(e).len() > 1024 {
            e.invalid("message", bs(""), "can have at most 1024 characters");
        }
    }
    e.msgs("namespace", ns, dns1123_subdomain_errs(ns));
}

fn validate_lease_spec(e: &mut Errs, spec: &At) {
    spec.obj(e);
    let d = spec.get("leaseDurationSeconds");
    if let Some(v) = d.int32(e) {
        if v <= 0 {
            e.invalid(&d.path, Bad::Int(v), "must be greater than 0");
        }
    }
    let t = spec.get("leaseTransitions");
    if let Some(v) = t.int32(e) {
        if v < 0 {
            e.invalid(&t.path, Bad::Int(v), MSG_NEGATIVE);
        }
    }
    let st = spec.get("strategy");
    let strategy = st.str_opt(e);
    if let Some(s) = strategy {
        if !s.contains('/') {
            if s != "OldestEmulationVersion" {
                e.not_supported(&st.path, bs(s), &["OldestEmulationVersion"]);
            }
        } else {
            e.msgs(&st.path, s, qualified_name_errs(s));
        }
    }
    let ph = spec.get("preferredHolder");
    if !ph.s(e).is_empty() && strategy.is_none_or(str::is_empty) {
        e.forbidden(&ph.path, "may only be specified if `strategy` is defined");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// RBAC (pkg/apis/rbac/validation)
// ---------------------------------------------------------------------------------------------------------------

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// `ValidatePolicyRule`: a rule of a Role (`namespaced`) or ClusterRole.
fn validate_policy_rule(e: &mut Errs, rule: &At, namespaced: bool) {
    rule.obj(e);
    let list = |e: &mut Errs, f: &str| rule.get(f).str_list(e).unwrap_or_default();
    let verbs = list(e, "verbs");
    let api_groups = list(e, "apiGroups");
    let resources = list(e, "resources");
    let resource_names = list(e, "resourceNames");
    let urls = list(e, "nonResourceURLs");
    if verbs.is_empty() {
        e.required(&child(&rule.path, "verbs"), "verbs must contain at least one value");
    }
    if !urls.is_empty() {
        let path = child(&rule.path, "nonResourceURLs");
        if namespaced {
            e.invalid(
                &path,
                Bad::StrList(Some(urls.clone())),
                "namespaced rules cannot apply to non-resource URLs",
            );
        }
        if !api_groups.is_empty() || !resources.is_empty() || !resource_names.is_empty() {
            e.invalid(
                &path,
                Bad::StrList(Some(urls)),
                "rules cannot apply to both regular resources and non-resource URLs",
            );
        }
        return;
    }
    if api_groups.is_empty() {
        e.required(
            &child(&rule.path, "apiGroups"),
            "resource rules must supply at least one api group",
        );
    }
    if resources.is_empty() {
        e.required(
            &child(&rule.path, "resources"),
            "resource rules must supply at least one resource",
        );
    }
}

/// `ValidateRole` (`namespaced`) and `ValidateClusterRole` (with its aggregation rule; label values in the
/// selectors are checked strictly, as on create).
fn validate_role(e: &mut Errs, root: &At, namespaced: bool) {
    validate_object_meta(e, &root.get("metadata"), Some(namespaced), NameRule::PathSegment);
    for rule in root.get("rules").items(e) {
        validate_policy_rule(e, &rule, namespaced);
    }
    let agg = root.get("aggregationRule");
    if namespaced || !agg.is_set() {
        return;
    }
    agg.obj(e);
    let selectors = agg.get("clusterRoleSelectors");
    let items = selectors.items(e);
    if items.is_empty() {
        e.required(
            &selectors.path,
            "at least one clusterRoleSelector required if aggregationRule is non-nil",
        );
    }
    for sel in items {
        let before = e.len();
        validate_label_selector(e, &sel);
        // metav1.LabelSelectorAsSelector fails on what ValidateLabelSelector reports; upstream then reports
        // the nil selector it got back.
        if e.len() > before {
            e.invalid(&sel.path, bs("null"), "invalid label selector.");
        }
    }
}

/// `%#v` of the internal `rbac.RoleRef` of a binding.
fn go_role_ref(root: &At) -> String {
    let mut scratch = Errs::default();
    let rr = root.get("roleRef");
    format!(
        "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
        go_quote(rr.get("apiGroup").s(&mut scratch)),
        go_quote(rr.get("kind").s(&mut scratch)),
        go_quote(rr.get("name").s(&mut scratch))
    )
}

/// `ValidateRoleBindingSubject`.
fn validate_subject(e: &mut Errs, subject: &At, namespaced: bool) {
    subject.obj(e);
    let name = subject.get("name").s(e);
    let name_path = child(&subject.path, "name");
    if name.is_empty() {
        e.required(&name_path, "");
    }
    let kind = subject.get("kind").s(e);
    let api_group = subject.get("apiGroup").s(e);
    let api_group_path = child(&subject.path, "apiGroup");
    match kind {
        "ServiceAccount" => {
            if !name.is_empty() {
                // ValidateServiceAccountName.
                e.msgs(&name_path, name, name_errs(NameRule::Subdomain, name, false));
            }
            if !api_group.is_empty() {
                e.not_supported(&api_group_path, bs(api_group), &[""]);
            }
            if !namespaced && subject.get("namespace").s(e).is_empty() {
                e.required(&child(&subject.path, "namespace"), "");
            }
        }
        "User" | "Group" => {
            if api_group != RBAC_GROUP {
                e.not_supported(&api_group_path, bs(api_group), &[RBAC_GROUP]);
            }
        }
        _ => e.not_supported(
            &child(&subject.path, "kind"),
            bs(kind),
            &["ServiceAccount", "User", "Group"],
        ),
    }
}

/// `ValidateRoleBinding` (`namespaced`) and `ValidateClusterRoleBinding`.
fn validate_role_binding(e: &mut Errs, root: &At, namespaced: bool) {
    validate_object_meta(e, &root.get("metadata"), Some(namespaced), NameRule::PathSegment);
    let rr = root.get("roleRef");
    rr.obj(e);
    let api_group = rr.get("apiGroup");
    let group = api_group.s(e);
    if group != RBAC_GROUP {
        e.not_supported(&api_group.path, bs(group), &[RBAC_GROUP]);
    }
    let kind_at = rr.get("kind");
    let kind = kind_at.s(e);
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&kind) {
        e.not_supported(&kind_at.path, bs(kind), kinds);
    }
    let name_at = rr.get("name");
    let name = name_at.s(e);
    if name.is_empty() {
        e.required(&name_at.path, "");
    } else {
        e.msgs(&name_at.path, name, path_segment_errs(name, false));
    }
    for subject in root.get("subjects").items(e) {
        validate_subject(e, &subject, namespaced);
    }
}

/// `ValidateRoleBindingUpdate` and `ValidateClusterRoleBindingUpdate`.
fn validate_role_binding_update(e: &mut Errs, new: &At, old: &At, namespaced: bool) {
    validate_role_binding(e, new, namespaced);
    validate_object_meta_update(e, &new.get("metadata"), &old.get("metadata"));
    let mut scratch = Errs::default();
    let changed = ["apiGroup", "kind", "name"]
        .iter()
        .any(|f| new.get("roleRef").get(f).s(&mut scratch) != old.get("roleRef").get(f).s(&mut scratch));
    if changed {
        e.invalid("roleRef", Bad::Raw(go_role_ref(new)), "cannot change roleRef");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Defaulting (pkg/apis/core/v1/defaults.go, pkg/apis/apps/v1/defaults.go, pkg/apis/discovery/v1/defaults.go,
// pkg/apis/rbac/v1/defaults.go)
// ---------------------------------------------------------------------------------------------------------------

type Obj = Map<String, Value>;

fn unset(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

/// The object at `k`, created when absent or null; `None` when `k` holds something else.
fn ensure_obj<'a>(m: &'a mut Obj, k: &str) -> Option<&'a mut Obj> {
    let v = m.entry(k.to_string()).or_insert(Value::Null);
    if v.is_null() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut()
}

fn obj_mut<'a>(m: &'a mut Obj, k: &str) -> Option<&'a mut Obj> {
    m.get_mut(k).and_then(Value::as_object_mut)
}

fn objs_mut<'a>(m: &'a mut Obj, k: &str) -> impl Iterator<Item = &'a mut Obj> {
    m.get_mut(k)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// Go's `if x == ""` for string fields.
fn default_str(m: &mut Obj, k: &str, val: &str) {
    if unset(m.get(k)) || m.get(k).and_then(Value::as_str) == Some("") {
        m.insert(k.to_string(), Value::from(val));
    }
}

/// Go's `if x == nil` for pointer fields.
fn default_val(m: &mut Obj, k: &str, val: Value) {
    if unset(m.get(k)) {
        m.insert(k.to_string(), val);
    }
}

/// Go's `if x == 0` for integer fields.
fn default_nonzero(m: &mut Obj, k: &str, val: i64) {
    if unset(m.get(k)) || m.get(k).and_then(Value::as_i64) == Some(0) {
        m.insert(k.to_string(), Value::from(val));
    }
}

fn get_str<'a>(m: &'a Obj, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Rounds every parseable quantity of a resource list up to milli-units and writes it in canonical form
/// (`SetDefaults_ResourceList` plus upstream's serialisation).
fn canonicalize_resource_list(m: Option<&mut Obj>) {
    for v in m.into_iter().flat_map(|m| m.values_mut()) {
        if let Some(Ok(mut q)) = Quantity::from_json(v) {
            q.round_up(-3);
            *v = Value::String(q.canonical());
        }
    }
}

/// The pull policy upstream picks from the image reference: `Always` for `:latest` or no tag and no digest,
/// `IfNotPresent` otherwise (including references `ParseNormalizedNamed` rejects).
fn default_pull_policy(image: &str) -> &'static str {
    let (name_tag, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last_slash = name_tag.rfind('/');
    let (name, tag) = match name_tag.rfind(':') {
        Some(c) if last_slash.is_none_or(|s| c > s) => (&name_tag[..c], Some(&name_tag[c + 1..])),
        _ => (name_tag, None),
    };
    let mut comps: Vec<&str> = name.split('/').collect();
    if comps.len() > 1 {
        let first = comps[0];
        if first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase())
        {
            comps.remove(0);
        }
    }
    let comp_ok = |c: &&str| {
        let b = c.as_bytes();
        !b.is_empty()
            && lower_alnum(b[0])
            && lower_alnum(b[b.len() - 1])
            && b.iter().all(|&x| lower_alnum(x) || x == b'.' || x == b'_' || x == b'-')
    };
    let tag_ok = tag.is_none_or(|t| {
        let b = t.as_bytes();
        !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-')
    });
    let digest_ok = digest.is_none_or(|d| d.split_once(':').is_some_and(|(a, h)| !a.is_empty() && !h.is_empty()));
    if image.is_empty() || !comps.iter().all(comp_ok) || !tag_ok || !digest_ok {
        return "IfNotPresent";
    }
    match (tag, digest) {
        (Some("latest"), _) | (None, None) => "Always",
        _ => "IfNotPresent",
    }
}

fn default_http_get(h: Option<&mut Obj>) {
    if let Some(h) = h {
        default_str(h, "path", "/");
        default_str(h, "scheme", "HTTP");
    }
}

fn default_container(c: &mut Obj) {
    if unset(c.get("imagePullPolicy")) || get_str(c, "imagePullPolicy").is_empty() {
        let policy = default_pull_policy(get_str(c, "image"));
        c.insert("imagePullPolicy".to_string(), Value::from(policy));
    }
    default_str(c, "terminationMessagePath", "/dev/termination-log");
    default_str(c, "terminationMessagePolicy", "File");
    for p in objs_mut(c, "ports") {
        default_str(p, "protocol", "TCP");
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = obj_mut(c, probe) {
            default_nonzero(p, "timeoutSeconds", 1);
            default_nonzero(p, "periodSeconds", 10);
            default_nonzero(p, "successThreshold", 1);
            default_nonzero(p, "failureThreshold", 3);
            default_http_get(obj_mut(p, "httpGet"));
            if let Some(g) = obj_mut(p, "grpc") {
                default_val(g, "service", Value::from(""));
            }
        }
    }
    if let Some(l) = obj_mut(c, "lifecycle") {
        for h in ["postStart", "preStop"] {
            default_http_get(obj_mut(l, h).and_then(|h| obj_mut(h, "httpGet")));
        }
    }
    for env in objs_mut(c, "env") {
        if let Some(fr) = obj_mut(env, "valueFrom").and_then(|v| obj_mut(v, "fieldRef")) {
            default_str(fr, "apiVersion", "v1");
        }
    }
    if let Some(r) = obj_mut(c, "resources") {
        canonicalize_resource_list(obj_mut(r, "limits"));
        canonicalize_resource_list(obj_mut(r, "requests"));
    }
}

fn default_downward_items(m: &mut Obj) {
    for item in objs_mut(m, "items") {
        if let Some(fr) = obj_mut(item, "fieldRef") {
            default_str(fr, "apiVersion", "v1");
        }
    }
}

fn default_volume(v: &mut Obj) {
    if VOLUME_SOURCES.iter().all(|(k, _)| unset(v.get(*k))) {
        v.insert("emptyDir".to_string(), Value::Object(Map::new()));
    }
    for k in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(src) = obj_mut(v, k) {
            default_val(src, "defaultMode", Value::from(420));
        }
    }
    if let Some(d) = obj_mut(v, "downwardAPI") {
        default_downward_items(d);
    }
    if let Some(p) = obj_mut(v, "projected") {
        for s in objs_mut(p, "sources") {
            if let Some(t) = obj_mut(s, "serviceAccountToken") {
                default_val(t, "expirationSeconds", Value::from(3600));
            }
            if let Some(d) = obj_mut(s, "downwardAPI") {
                default_downward_items(d);
            }
        }
    }
    if let Some(h) = obj_mut(v, "hostPath") {
        default_val(h, "type", Value::from(""));
    }
    if let Some(ed) = obj_mut(v, "emptyDir") {
        if let Some(sl) = ed.get_mut("sizeLimit") {
            if let Some(Ok(q)) = Quantity::from_json(sl) {
                *sl = Value::String(q.canonical());
            }
        }
    }
    if let Some(spec) = obj_mut(v, "ephemeral")
        .and_then(|e| obj_mut(e, "volumeClaimTemplate"))
        .and_then(|t| obj_mut(t, "spec"))
    {
        default_val(spec, "volumeMode", Value::from("Filesystem"));
    }
}

/// `SetDefaults_PodSpec` and the defaults of everything a pod spec contains; with `is_pod`, `SetDefaults_Pod` too.
fn default_pod_spec(spec: &mut Obj, is_pod: bool) {
    default_str(spec, "dnsPolicy", "ClusterFirst");
    default_str(spec, "restartPolicy", "Always");
    default_val(spec, "securityContext", Value::Object(Map::new()));
    default_val(spec, "terminationGracePeriodSeconds", Value::from(30));
    default_str(spec, "schedulerName", "default-scheduler");
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in objs_mut(spec, list) {
            default_container(c);
        }
    }
    for v in objs_mut(spec, "volumes") {
        default_volume(v);
    }
    canonicalize_resource_list(obj_mut(spec, "overhead"));
    if !is_pod {
        return;
    }
    for list in ["containers", "initContainers"] {
        for c in objs_mut(spec, list) {
            let Some(res) = obj_mut(c, "resources") else { continue };
            let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() else {
                continue;
            };
            if let Some(req) = ensure_obj(res, "requests") {
                for (k, v) in limits {
                    req.entry(k).or_insert(v);
                }
            }
        }
    }
    default_val(spec, "enableServiceLinks", Value::Bool(true));
    if spec.get("hostNetwork") == Some(&Value::Bool(true)) {
        for list in ["containers", "initContainers"] {
            for c in objs_mut(spec, list) {
                for p in objs_mut(c, "ports") {
                    if unset(p.get("hostPort")) || p.get("hostPort").and_then(Value::as_i64) == Some(0) {
                        if let Some(cp) = p.get("containerPort").cloned() {
                            p.insert("hostPort".to_string(), cp);
                        }
                    }
                }
            }
        }
    }
}

/// `qos.ComputePodQOS` on a (defaulted) pod spec.
fn qos_class(spec: &Obj) -> &'static str {
    let mut requests: BTreeMap<String, Quantity> = BTreeMap::new();
    let mut limits: BTreeMap<String, Quantity> = BTreeMap::new();
    let mut guaranteed = true;
    let zero = Quantity::zero();
    let containers = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_object);
    for c in containers {
        let res = c.get("resources");
        let list = |k: &str| res.and_then(|r| r.get(k)).and_then(Value::as_object);
        for (name, v) in list("requests").into_iter().flatten() {
            if name != "cpu" && name != "memory" {
                continue;
            }
            if let Some(Ok(q)) = Quantity::from_json(v) {
                if q.cmp(&zero) == Ordering::Greater {
                    let sum = requests.get(name).map_or(q.clone(), |s| s.add(&q));
                    requests.insert(name.clone(), sum);
                }
            }
        }
        let mut found = BTreeSet::new();
        for (name, v) in list("limits").into_iter().flatten() {
            if name != "cpu" && name != "memory" {
                continue;
            }
            if let Some(Ok(q)) = Quantity::from_json(v) {
                if q.cmp(&zero) == Ordering::Greater {
                    found.insert(name.clone());
                    let sum = limits.get(name).map_or(q.clone(), |s| s.add(&q));
                    limits.insert(name.clone(), sum);
                }
            }
        }
        if found.len() != 2 {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed {
        for (name, r) in &requests {
            if limits.get(name).is_none_or(|l| l.cmp(r) != Ordering::Equal) {
                guaranteed = false;
            }
        }
    }
    if guaranteed && requests.len() == limits.len() {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The `DefaultTolerationSeconds` admission plugin (on by default upstream): a new pod that does not
/// tolerate `node.kubernetes.io/not-ready` or `node.kubernetes.io/unreachable` with effect NoExecute gets a
/// toleration of each for 300 s, so that its pods leave a lost node after five minutes rather than at once.
/// A toleration counts when its key is that key or empty and its effect NoExecute or empty, whatever its
/// operator, value and seconds (upstream's test). A `tolerations` that is not a list is left to validation.
fn default_toleration_seconds(spec: &mut Obj) {
    const SECONDS: i64 = 300;
    let tolerations = spec.entry("tolerations".to_string()).or_insert(Value::Null);
    if tolerations.is_null() {
        *tolerations = Value::Array(Vec::new());
    }
    let Some(list) = tolerations.as_array_mut() else { return };
    let tolerates = |list: &[Value], key: &str| {
        list.iter().filter_map(Value::as_object).any(|t| {
            let k = get_str(t, "key");
            let effect = get_str(t, "effect");
            (k == key || k.is_empty()) && (effect == "NoExecute" || effect.is_empty())
        })
    };
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        if !tolerates(list, key) {
            list.push(
                serde_json::json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": SECONDS}),
            );
        }
    }
}

fn default_pod(root: &mut Obj, creating: bool) {
    let Some(spec) = ensure_obj(root, "spec") else { return };
    default_pod_spec(spec, true);
    let qos = qos_class(spec);
    if creating {
        default_toleration_seconds(spec);
        if let Some(status) = ensure_obj(root, "status") {
            default_str(status, "phase", "Pending");
            default_str(status, "qosClass", qos);
        }
    }
}

fn default_template(spec: &mut Obj) {
    if let Some(t) = ensure_obj(spec, "template").and_then(|t| ensure_obj(t, "spec")) {
        default_pod_spec(t, false);
    }
}

fn default_deployment(root: &mut Obj) {
    let Some(spec) = ensure_obj(root, "spec") else { return };
    default_val(spec, "replicas", Value::from(1));
    if let Some(st) = ensure_obj(spec, "strategy") {
        default_str(st, "type", "RollingUpdate");
        if get_str(st, "type") == "RollingUpdate" {
            if let Some(ru) = ensure_obj(st, "rollingUpdate") {
                default_val(ru, "maxUnavailable", Value::from("25%"));
                default_val(ru, "maxSurge", Value::from("25%"));
            }
        }
    }
    default_val(spec, "revisionHistoryLimit", Value::from(10));
    default_val(spec, "progressDeadlineSeconds", Value::from(600));
    default_template(spec);
}

fn default_replica_set(root: &mut Obj) {
    let Some(spec) = ensure_obj(root, "spec") else { return };
    default_val(spec, "replicas", Value::from(1));
    default_template(spec);
}

fn default_service(root: &mut Obj) {
    let Some(spec) = ensure_obj(root, "spec") else { return };
    default_str(spec, "sessionAffinity", "None");
    match get_str(spec, "sessionAffinity") {
        "None" => {
            spec.remove("sessionAffinityConfig");
        }
        "ClientIP" => {
            let has_timeout = spec
                .get("sessionAffinityConfig")
                .and_then(|c| c.get("clientIP"))
                .and_then(|c| c.get("timeoutSeconds"))
                .is_some_and(|t| !t.is_null());
            if !has_timeout {
                spec.insert(
                    "sessionAffinityConfig".to_string(),
                    serde_json::json!({"clientIP": {"timeoutSeconds": 10800}}),
                );
            }
        }
        _ => {}
    }
    default_str(spec, "type", "ClusterIP");
    for p in objs_mut(spec, "ports") {
        default_str(p, "protocol", "TCP");
        let tp = p.get("targetPort");
        let tp_unset = unset(tp) || tp.and_then(Value::as_i64) == Some(0) || tp.and_then(Value::as_str) == Some("");
        if tp_unset {
            let port = p.get("port").filter(|v| v.is_i64()).cloned().unwrap_or(Value::from(0));
            p.insert("targetPort".to_string(), port);
        }
    }
    let typ = get_str(spec, "type").to_string();
    let has_external_ips = spec
        .get("externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let externally_accessible = typ == "LoadBalancer" || typ == "NodePort" || (typ == "ClusterIP" && has_external_ips);
    if externally_accessible {
        default_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(typ.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP") {
        default_val(spec, "internalTrafficPolicy", Value::from("Cluster"));
    }
    if typ == "LoadBalancer" {
        default_val(spec, "allocateLoadBalancerNodePorts", Value::Bool(true));
    }
    default_service_ips(spec, &typ);
    if typ == "LoadBalancer" {
        if let Some(ingress) = root
            .get_mut("status")
            .and_then(Value::as_object_mut)
            .and_then(|s| obj_mut(s, "loadBalancer"))
            .and_then(|lb| lb.get_mut("ingress"))
            .and_then(Value::as_array_mut)
        {
            for ing in ingress.iter_mut().filter_map(Value::as_object_mut) {
                if !get_str(ing, "ip").is_empty() {
                    default_val(ing, "ipMode", Value::from("VIP"));
                }
            }
        }
    }
}

/// What the registry's strategy and IP allocator fill in (a single-stack IPv4 cluster is assumed):
/// `clusterIPs` from `clusterIP`, then `ipFamilies` and `ipFamilyPolicy`.
fn default_service_ips(spec: &mut Obj, typ: &str) {
    let cip = get_str(spec, "clusterIP").to_string();
    let ips_empty = match spec.get("clusterIPs") {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    };
    if !cip.is_empty() && ips_empty {
        spec.insert("clusterIPs".to_string(), Value::Array(vec![Value::from(cip.clone())]));
    }
    if typ == "ExternalName" {
        return;
    }
    let ips: Vec<String> = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    let headless = ips == ["None"];
    let selectorless = spec
        .get("selector")
        .and_then(Value::as_object)
        .is_none_or(|m| m.is_empty());
    if unset(spec.get("ipFamilies"))
        || spec
            .get("ipFamilies")
            .and_then(Value::as_array)
            .is_some_and(|a| a.is_empty())
    {
        let mut fams: Vec<Value> = Vec::new();
        if !headless {
            for ip in &ips {
                let fam = if is_ipv6_string(ip) { "IPv6" } else { "IPv4" };
                if !fams.contains(&Value::from(fam)) {
                    fams.push(Value::from(fam));
                }
            }
        }
        if fams.is_empty() {
            fams.push(Value::from("IPv4"));
        }
        spec.insert("ipFamilies".to_string(), Value::Array(fams));
    }
    if unset(spec.get("ipFamilyPolicy")) {
        let dual = spec
            .get("ipFamilies")
            .and_then(Value::as_array)
            .is_some_and(|a| a.len() > 1);
        let policy = if (headless && selectorless) || dual {
            "RequireDualStack"
        } else {
            "SingleStack"
        };
        spec.insert("ipFamilyPolicy".to_string(), Value::from(policy));
    }
}

fn default_namespace(root: &mut Obj, creating: bool) {
    // A namespace being deleted loses its `kubernetes` finalizer through the finalize subresource: never add it
    // back then, even when the caller did not keep the resourceVersion.
    let deleting = root
        .get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|v| !v.is_null());
    let creating = creating && !deleting;
    let name = root
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !name.is_empty() {
        if let Some(labels) = ensure_obj(root, "metadata").and_then(|m| ensure_obj(m, "labels")) {
            labels.insert("kubernetes.io/metadata.name".to_string(), Value::from(name));
        }
    }
    if let Some(status) = ensure_obj(root, "status") {
        default_str(status, "phase", "Active");
    }
    if creating {
        if let Some(spec) = ensure_obj(root, "spec") {
            let fins = spec.entry("finalizers".to_string()).or_insert(Value::Null);
            if fins.is_null() {
                *fins = Value::Array(Vec::new());
            }
            if let Some(list) = fins.as_array_mut() {
                if !list.iter().any(|f| f.as_str() == Some("kubernetes")) {
                    list.push(Value::from("kubernetes"));
                }
            }
        }
    }
}

fn default_node(root: &mut Obj) {
    if let Some(spec) = obj_mut(root, "spec") {
        let cidr = get_str(spec, "podCIDR").to_string();
        let cidrs_empty = spec
            .get("podCIDRs")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty());
        if !cidr.is_empty() && cidrs_empty && unset(spec.get("podCIDRs")) {
            spec.insert("podCIDRs".to_string(), Value::Array(vec![Value::from(cidr)]));
        } else if cidr.is_empty() {
            if let Some(first) = spec
                .get("podCIDRs")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .cloned()
            {
                spec.insert("podCIDR".to_string(), first);
            }
        }
    }
    if let Some(status) = obj_mut(root, "status") {
        if unset(status.get("allocatable")) {
            if let Some(cap) = status.get("capacity").filter(|c| c.is_object()).cloned() {
                status.insert("allocatable".to_string(), cap);
            }
        }
        canonicalize_resource_list(obj_mut(status, "capacity"));
        canonicalize_resource_list(obj_mut(status, "allocatable"));
    }
}

fn default_secret(root: &mut Obj) {
    // The v1 -> internal conversion folds stringData into data (stringData wins) and stringData is never stored.
    if let Some(Value::Object(sd)) = root.get("stringData").cloned() {
        if sd.values().all(Value::is_string) {
            if let Some(data) = ensure_obj(root, "data") {
                for (k, v) in sd {
                    if let Value::String(s) = v {
                        data.insert(k, Value::String(base64_encode(s.as_bytes())));
                    }
                }
                root.remove("stringData");
            }
        }
    } else if root.get("stringData").is_some_and(Value::is_null) {
        root.remove("stringData");
    }
    default_str(root, "type", "Opaque");
}

fn default_endpoints(root: &mut Obj) {
    for ss in objs_mut(root, "subsets") {
        for p in objs_mut(ss, "ports") {
            default_str(p, "protocol", "TCP");
        }
    }
}

/// `SetDefaults_RoleBinding`/`SetDefaults_ClusterRoleBinding` (roleRef.apiGroup) and `SetDefaults_Subject`
/// (apiGroup "" for service accounts, rbac.authorization.k8s.io for users and groups, when empty).
fn default_role_binding(root: &mut Obj) {
    if let Some(rr) = ensure_obj(root, "roleRef") {
        default_str(rr, "apiGroup", RBAC_GROUP);
    }
    // A service account's default is the empty string it already has.
    for subject in objs_mut(root, "subjects") {
        if matches!(get_str(subject, "kind"), "User" | "Group") {
            default_str(subject, "apiGroup", RBAC_GROUP);
        }
    }
}

fn default_endpoint_slice(root: &mut Obj) {
    for p in objs_mut(root, "ports") {
        default_val(p, "name", Value::from(""));
        default_val(p, "protocol", Value::from("TCP"));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Update preparation (rest.BeforeUpdate and the registry strategies' PrepareForUpdate)
// ---------------------------------------------------------------------------------------------------------------

fn str_list_of(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// `patchAllocatedValues`, `normalizeClusterIPs` and `dropTypeDependentFields` of the service registry.
fn prepare_service_update(old: &Value, new: &mut Value) {
    let empty = Map::new();
    let os = old.get("spec").and_then(Value::as_object).unwrap_or(&empty);
    let Some(ns) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let o_type = get_str(os, "type").to_string();
    let n_type = get_str(ns, "type").to_string();
    let needs_ip = |t: &str| t != "ExternalName";
    let needs_np = |t: &str| t == "NodePort" || t == "LoadBalancer";
    let needs_hc = |m: &Obj| get_str(m, "type") == "LoadBalancer" && get_str(m, "externalTrafficPolicy") == "Local";

    if needs_ip(&o_type) && needs_ip(&n_type) {
        if get_str(ns, "clusterIP").is_empty() {
            if let Some(v) = os.get("clusterIP").filter(|v| !v.is_null()) {
                ns.insert("clusterIP".to_string(), v.clone());
            }
        }
        if str_list_of(ns.get("clusterIPs")).is_empty() && !str_list_of(os.get("clusterIPs")).is_empty() {
            if let Some(v) = os.get("clusterIPs") {
                ns.insert("clusterIPs".to_string(), v.clone());
            }
        }
    }
    let ports_of = |m: &Obj| -> Vec<(String, i64)> {
        m.get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                    p.get("nodePort").and_then(Value::as_i64).unwrap_or(0),
                )
            })
            .collect()
    };
    if needs_np(&o_type) && needs_np(&n_type) {
        let old_ports = ports_of(os);
        let new_ports = ports_of(ns);
        let used: BTreeSet<i64> = old_ports
            .iter()
            .map(|p| p.1)
            .filter(|np| *np != 0 && new_ports.iter().any(|q| q.1 == *np))
            .collect();
        let by_name: BTreeMap<String, i64> = old_ports.into_iter().collect();
        for p in objs_mut(ns, "ports") {
            if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                let old_val = by_name.get(get_str(p, "name")).copied().unwrap_or(0);
                if old_val != 0 && !used.contains(&old_val) {
                    p.insert("nodePort".to_string(), Value::from(old_val));
                }
            }
        }
    }
    if needs_hc(os) && needs_hc(ns) && ns.get("healthCheckNodePort").and_then(Value::as_i64).unwrap_or(0) == 0 {
        if let Some(v) = os.get("healthCheckNodePort") {
            ns.insert("healthCheckNodePort".to_string(), v.clone());
        }
    }
    // normalizeClusterIPs (update): a changed clusterIP with untouched clusterIPs moves the plural along.
    let same_ips = sem_eq(os.get("clusterIPs"), ns.get("clusterIPs"));
    let (o_cip, n_cip) = (
        get_str(os, "clusterIP").to_string(),
        get_str(ns, "clusterIP").to_string(),
    );
    if o_cip != n_cip && same_ips {
        if n_cip.is_empty() {
            ns.remove("clusterIPs");
        } else if let Some(first) = ns
            .get_mut("clusterIPs")
            .and_then(Value::as_array_mut)
            .and_then(|a| a.first_mut())
        {
            *first = Value::from(n_cip);
        } else {
            ns.insert("clusterIPs".to_string(), Value::Array(vec![Value::from(n_cip)]));
        }
    }
    // dropTypeDependentFields
    if needs_ip(&o_type) && !needs_ip(&n_type) {
        if sem_eq(os.get("clusterIPs"), ns.get("clusterIPs")) && sem_eq(os.get("clusterIP"), ns.get("clusterIP")) {
            ns.remove("clusterIP");
            ns.remove("clusterIPs");
        }
        if sem_eq(os.get("ipFamilies"), ns.get("ipFamilies")) {
            ns.remove("ipFamilies");
        }
        if sem_eq(os.get("ipFamilyPolicy"), ns.get("ipFamilyPolicy")) {
            ns.remove("ipFamilyPolicy");
        }
    }
    if needs_np(&o_type) && !needs_np(&n_type) {
        let old_ports = ports_of(os);
        for (i, p) in objs_mut(ns, "ports").enumerate() {
            let np = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
            if old_ports.get(i).is_some_and(|o| o.1 == np) {
                p.remove("nodePort");
            }
        }
    }
    if needs_hc(os) && !needs_hc(ns) && os.get("healthCheckNodePort") == ns.get("healthCheckNodePort") {
        ns.remove("healthCheckNodePort");
    }
    if o_type == "LoadBalancer" && n_type != "LoadBalancer" {
        let (o, n) = (
            os.get("allocateLoadBalancerNodePorts"),
            ns.get("allocateLoadBalancerNodePorts"),
        );
        if !unset(o) && o == n {
            ns.remove("allocateLoadBalancerNodePorts");
        }
        if os.get("loadBalancerClass") == ns.get("loadBalancerClass") {
            ns.remove("loadBalancerClass");
        }
    }
    let accessible = |m: &Obj| {
        let t = get_str(m, "type");
        t == "LoadBalancer"
            || t == "NodePort"
            || (t == "ClusterIP"
                && m.get("externalIPs")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty()))
    };
    if accessible(os) && !accessible(ns) && os.get("externalTrafficPolicy") == ns.get("externalTrafficPolicy") {
        ns.remove("externalTrafficPolicy");
    }
}

/// Applies upstream's update-time carry-over to `new` before it is validated and stored: what
/// `rest.BeforeUpdate` keeps from the stored object (`metadata.uid` when omitted, `creationTimestamp`,
/// `deletionTimestamp`, `deletionGracePeriodSeconds` when omitted), the service registry's handling of allocated
/// values (`clusterIP`/`clusterIPs`, node ports and `healthCheckNodePort` kept when a replacement omits them,
/// dropped when a type change means they no longer apply) and the namespace strategy keeping `spec.finalizers`
/// (they change only through the `finalize` subresource). Call it after [`default_object`] and before
/// [`validate_update`]; `validate_update` applies the service part to its own copy regardless.
pub fn prepare_update(kind: &str, old: &Value, new: &mut Value) {
    if let (Some(om), Some(nm)) = (
        old.get("metadata").and_then(Value::as_object),
        new.get_mut("metadata").and_then(Value::as_object_mut),
    ) {
        if get_str(nm, "uid").is_empty() {
            if let Some(u) = om.get("uid").filter(|u| !u.is_null()) {
                nm.insert("uid".to_string(), u.clone());
            }
        }
        for f in ["creationTimestamp", "deletionTimestamp"] {
            if let Some(v) = om.get(f).filter(|v| !is_zero_value(v)) {
                nm.insert(f.to_string(), v.clone());
            }
        }
        if unset(nm.get("deletionGracePeriodSeconds")) {
            if let Some(v) = om.get("deletionGracePeriodSeconds").filter(|v| !v.is_null()) {
                nm.insert("deletionGracePeriodSeconds".to_string(), v.clone());
            }
        }
    }
    match kind {
        "Service" => prepare_service_update(old, new),
        "Namespace" => {
            let old_fins = old.get("spec").and_then(|s| s.get("finalizers")).cloned();
            if let Some(spec) = new.as_object_mut().and_then(|m| ensure_obj(m, "spec")) {
                match old_fins {
                    Some(f) => spec.insert("finalizers".to_string(), f),
                    None => spec.remove("finalizers"),
                };
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------------------------

/// Fills in the defaults upstream applies on create/update of `kind` ("Pod", "Deployment", "ReplicaSet", "Service",
/// "Namespace", "Node", "ConfigMap", "Secret", "ServiceAccount", "Endpoints", "Event", "Lease", "EndpointSlice",
/// "RoleBinding", "ClusterRoleBinding"):
/// e.g. pod spec restartPolicy Always, dnsPolicy ClusterFirst, schedulerName default-scheduler,
/// terminationGracePeriodSeconds 30, securityContext {}, container imagePullPolicy (Always for :latest or no tag,
/// else IfNotPresent), terminationMessagePath/Policy, container port protocol TCP; deployment replicas 1, strategy
/// RollingUpdate 25%/25%, revisionHistoryLimit 10, progressDeadlineSeconds 600, template pod spec defaults;
/// replicaset replicas 1; service type ClusterIP, sessionAffinity None, port protocol TCP, targetPort = port,
/// ipFamilyPolicy/ipFamilies SingleStack/IPv4, internalTrafficPolicy Cluster; secret type Opaque; namespace
/// spec.finalizers ["kubernetes"] and status.phase Active; etc. Only what upstream defaults.
///
/// Never panics: parts of the object with an unexpected JSON type are left as they are for validation to report.
/// Create-only values (namespace finalizer, pod phase and QoS class) are set only while
/// `metadata.resourceVersion` is empty.
pub fn default_object(kind: &str, obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else { return };
    let creating = root
        .get("metadata")
        .and_then(|m| m.get("resourceVersion"))
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    match kind {
        "Pod" => default_pod(root, creating),
        "Deployment" => default_deployment(root),
        "ReplicaSet" => default_replica_set(root),
        "Service" => default_service(root),
        "Namespace" => default_namespace(root, creating),
        "Node" => default_node(root),
        "Secret" => default_secret(root),
        "Endpoints" => default_endpoints(root),
        "EndpointSlice" => default_endpoint_slice(root),
        "RoleBinding" | "ClusterRoleBinding" => default_role_binding(root),
        _ => {}
    }
}

/// Validation on create. Includes metadata: name required unless generateName (the caller resolves generateName
/// before calling), name format per kind (DNS-1123 subdomain for most, DNS-1123 label for namespaces, DNS-1035
/// label for services as upstream), label and annotation keys/values, and the spec rules of each kind (see the
/// module documentation). Expects a defaulted object (see [`default_object`]), as upstream validates after
/// defaulting. Returns no errors when the object is valid.
pub fn validate_create(kind: &str, obj: &Value) -> Vec<FieldError> {
    let mut e = Errs::default();
    if !obj.is_object() {
        e.type_mismatch("", obj, "must be of type object");
        return e.finish();
    }
    let root = At::new(Some(obj), "");
    let meta = root.get("metadata");
    match kind {
        "Pod" => validate_pod_create(&mut e, &root),
        "Deployment" => {
            validate_object_meta(&mut e, &meta, Some(true), NameRule::Subdomain);
            validate_deployment_spec(&mut e, &root);
        }
        "ReplicaSet" => {
            validate_object_meta(&mut e, &meta, Some(true), NameRule::Subdomain);
            validate_replica_set_spec(&mut e, &root);
        }
        "Service" => {
            // The strategy's PrepareForCreate fills clusterIPs from clusterIP before validation.
            let mut svc = obj.clone();
            if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
                let cip = get_str(spec, "clusterIP").to_string();
                if !cip.is_empty() && str_list_of(spec.get("clusterIPs")).is_empty() && unset(spec.get("clusterIPs")) {
                    spec.insert("clusterIPs".to_string(), Value::Array(vec![Value::from(cip)]));
                }
            }
            validate_service(&mut e, &At::new(Some(&svc), ""));
        }
        "ConfigMap" => validate_config_map(&mut e, &root),
        "Secret" => validate_secret(&mut e, &root),
        "ServiceAccount" => validate_object_meta(&mut e, &meta, Some(true), NameRule::Subdomain),
        "Namespace" => validate_namespace(&mut e, &root),
        "Node" => validate_node(&mut e, &root),
        "Endpoints" => validate_endpoints(&mut e, &root),
        "EndpointSlice" => validate_endpoint_slice(&mut e, &root),
        "Lease" => {
            validate_object_meta(&mut e, &meta, Some(true), NameRule::Subdomain);
            validate_lease_spec(&mut e, &root.get("spec"));
        }
        "Role" => validate_role(&mut e, &root, true),
        "ClusterRole" => validate_role(&mut e, &root, false),
        "RoleBinding" => validate_role_binding(&mut e, &root, true),
        "ClusterRoleBinding" => validate_role_binding(&mut e, &root, false),
        "Event" => {
            validate_event_legacy(&mut e, &root);
            // rest.BeforeCreate's generic metadata validation, reached only when the kind's own passed.
            if e.len() == 0 {
                validate_object_meta(&mut e, &meta, Some(true), NameRule::PathSegment);
            }
        }
        _ => validate_object_meta(&mut e, &meta, None, NameRule::PathSegment),
    }
    e.finish()
}

/// Validation on update: [`validate_create`]'s rules plus immutability as upstream: metadata
/// name/namespace/uid/creationTimestamp unchanged (the caller handles resourceVersion), pod spec immutable except
/// container/initContainer images, activeDeadlineSeconds, tolerations additions, deployment/replicaset
/// spec.selector immutable, service clusterIP(s) immutable once set (unless the type is or becomes ExternalName),
/// immutable ConfigMaps/Secrets, secret type, node podCIDRs/providerID, endpoint slice addressType, event fields.
/// Both objects are expected to be defaulted.
pub fn validate_update(kind: &str, old: &Value, new: &Value) -> Vec<FieldError> {
    let mut e = Errs::default();
    if !new.is_object() {
        e.type_mismatch("", new, "must be of type object");
        return e.finish();
    }
    let empty = Value::Object(Map::new());
    let old = if old.is_object() { old } else { &empty };
    let root = At::new(Some(new), "");
    let old_root = At::new(Some(old), "");
    let meta = root.get("metadata");
    let old_meta = old_root.get("metadata");
    match kind {
        "Pod" => validate_pod_update(&mut e, &root, &old_root),
        "Deployment" | "ReplicaSet" => {
            validate_object_meta_update(&mut e, &meta, &old_meta);
            if kind == "Deployment" {
                validate_deployment_spec(&mut e, &root);
            } else {
                validate_replica_set_spec(&mut e, &root);
            }
            validate_selector_unchanged(&mut e, &root, &old_root);
        }
        "Service" => {
            let mut svc = new.clone();
            prepare_service_update(old, &mut svc);
            validate_service_update(&mut e, &At::new(Some(&svc), ""), &old_root);
        }
        "ConfigMap" => {
            validate_object_meta_update(&mut e, &meta, &old_meta);
            validate_immutable_data(&mut e, &root, &old_root, &["data", "binaryData"]);
            validate_config_map(&mut e, &root);
        }
        "Secret" => {
            validate_object_meta_update(&mut e, &meta, &old_meta);
            let mut scratch = Errs::default();
            let t = root.get("type").s(&mut e);
            let ot = old_root.get("type").s(&mut scratch);
            let norm = |s: &str| {
                if s.is_empty() {
                    "Opaque".to_string()
                } else {
                    s.to_string()
                }
            };
            if norm(t) != norm(ot) {
                e.invalid("type", bs(t), MSG_IMMUTABLE);
            }
            validate_immutable_data(&mut e, &root, &old_root, &["data"]);
            validate_secret(&mut e, &root);
        }
        "ServiceAccount" => {
            validate_object_meta_update(&mut e, &meta, &old_meta);
            validate_object_meta(&mut e, &meta, Some(true), NameRule::Subdomain);
        }
        "Namespace" => validate_object_meta_update(&mut e, &meta, &old_meta),
        "Node" => validate_node_update(&mut e, &root, &old_root),
        "Endpoints" => {
            validate_object_meta_update(&mut e, &meta, &old_meta);
            validate_endpoints(&mut e, &root);
        }
        "EndpointSlice" => {
            validate_object_meta_update(&mut e, &meta, &old_meta);
            validate_endpoint_slice(&mut e, &root);
            let mut scratch = Errs::default();
            let t = root.get("addressType").s(&mut scratch);
            if t != old_root.get("addressType").s(&mut scratch) {
                e.invalid("addressType", bs(t), MSG_IMMUTABLE);
            }
        }
        "Lease" => {
            validate_object_meta_update(&mut e, &meta, &old_meta);
            validate_lease_spec(&mut e, &root.get("spec"));
        }
        "Role" | "ClusterRole" => {
            validate_role(&mut e, &root, kind == "Role");
            validate_object_meta_update(&mut e, &meta, &old_meta);
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            validate_role_binding_update(&mut e, &root, &old_root, kind == "RoleBinding");
        }
        "Event" => {
            validate_event_legacy(&mut e, &root);
            validate_object_meta(&mut e, &meta, Some(true), NameRule::PathSegment);
            validate_object_meta_update(&mut e, &meta, &old_meta);
        }
        _ => {
            validate_object_meta(&mut e, &meta, None, NameRule::PathSegment);
            validate_object_meta_update(&mut e, &meta, &old_meta);
        }
    }
    e.finish()
}

/// The Status message upstream builds from the errors, e.g.
/// `Deployment.apps "web" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{"app":"x"}: `selector` does not match template `labels``
/// — `{Kind}{.group if not core} "{name}" is invalid: ` + causes as `{field}: {message}` joined with ", " (and
/// wrapped in `[...]` when there are several, as upstream's ToAggregate does; repeated causes are shown once).
/// `group` is "" for core.
pub fn invalid_message(kind: &str, group: &str, name: &str, errs: &[FieldError]) -> String {
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let head = format!("{qualified} {} is invalid", go_quote(name));
    let mut msgs: Vec<String> = Vec::new();
    for err in errs {
        let m = format!("{}: {}", err.field, err.message);
        if !msgs.contains(&m) {
            msgs.push(m);
        }
    }
    match msgs.len() {
        0 => head,
        1 => format!("{head}: {}", msgs[0]),
        _ => format!("{head}: [{}]", msgs.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation \
is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

    fn defaulted(kind: &str, mut v: Value) -> Value {
        default_object(kind, &mut v);
        v
    }

    fn create(kind: &str, v: Value) -> Vec<FieldError> {
        validate_create(kind, &defaulted(kind, v))
    }

    fn update(kind: &str, old: Value, new: Value) -> Vec<FieldError> {
        validate_update(kind, &defaulted(kind, old), &defaulted(kind, new))
    }

    #[track_caller]
    fn has(errs: &[FieldError], reason: &str, field: &str, message: &str) {
        assert!(
            errs.iter()
                .any(|e| e.reason == reason && e.field == field && e.message == message),
            "expected {reason} at {field}: {message}\n got: {errs:#?}"
        );
    }

    #[track_caller]
    fn has_prefix(errs: &[FieldError], reason: &str, field: &str, prefix: &str) {
        assert!(
            errs.iter()
                .any(|e| e.reason == reason && e.field == field && e.message.starts_with(prefix)),
            "expected {reason} at {field} starting with {prefix}\n got: {errs:#?}"
        );
    }

    #[track_caller]
    fn none(errs: &[FieldError]) {
        assert!(errs.is_empty(), "expected no errors, got {errs:#?}");
    }

    fn meta(name: &str) -> Value {
        json!({"name": name, "namespace": "default"})
    }

    fn pod_with(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("p"), "spec": spec})
    }

    fn pod() -> Value {
        pod_with(json!({"containers": [{"name": "c", "image": "nginx:1.25"}]}))
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web"),
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
            }
        })
    }

    fn replica_set() -> Value {
        let mut d = deployment();
        d["kind"] = json!("ReplicaSet");
        d
    }

    fn service(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": meta("svc"), "spec": spec})
    }

    fn web_service() -> Value {
        service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}))
    }

    // ----------------------------------------------------------------------------------------------------------
    // Defaults
    // ----------------------------------------------------------------------------------------------------------

    #[test]
    fn default_minimal_pod() {
        let p = defaulted(
            "Pod",
            json!({"metadata": meta("p"), "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}}),
        );
        let s = &p["spec"];
        assert_eq!(s["restartPolicy"], "Always");
        assert_eq!(s["dnsPolicy"], "ClusterFirst");
        assert_eq!(s["schedulerName"], "default-scheduler");
        assert_eq!(s["terminationGracePeriodSeconds"], 30);
        assert_eq!(s["securityContext"], json!({}));
        assert_eq!(s["enableServiceLinks"], true);
        let c = &s["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(p["status"]["qosClass"], "BestEffort");
        none(&validate_create("Pod", &p));
    }

    #[test]
    fn default_pod_without_spec_gets_spec() {
        let p = defaulted("Pod", json!({"metadata": meta("p")}));
        assert_eq!(p["spec"]["restartPolicy"], "Always");
        let errs = validate_create("Pod", &p);
        assert_eq!(
            errs,
            vec![FieldError {
                reason: "FieldValueRequired",
                field: "spec.containers".into(),
                message: "Required value".into()
            }]
        );
    }

    #[test]
    fn default_image_pull_policy() {
        for (image, want) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.25", "IfNotPresent"),
            ("docker.io/library/nginx:1.25", "IfNotPresent"),
            ("nginx@sha256:0123456789abcdef", "IfNotPresent"),
            ("nginx:latest@sha256:0123456789abcdef", "Always"),
            ("localhost:5000/app", "Always"),
            ("registry.example.com:5000/team/app:v2", "IfNotPresent"),
            ("Nginx", "IfNotPresent"),
            ("", "IfNotPresent"),
        ] {
            assert_eq!(default_pull_policy(image), want, "image {image:?}");
        }
        let p = defaulted(
            "Pod",
            pod_with(json!({"containers": [{"name": "c", "image": "nginx", "imagePullPolicy": "Never"}]})),
        );
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Never");
    }

    #[test]
    fn default_pod_requests_from_limits_canonical_and_qos() {
        let p = defaulted(
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": "0.5", "memory": "1024Mi"}}}]}),
            ),
        );
        let r = &p["spec"]["containers"][0]["resources"];
        assert_eq!(r["limits"], json!({"cpu": "500m", "memory": "1Gi"}));
        assert_eq!(r["requests"], json!({"cpu": "500m", "memory": "1Gi"}));
        assert_eq!(p["status"]["qosClass"], "Guaranteed");

        let p = defaulted(
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": 1, "memory": "100u"}}}]}),
            ),
        );
        let r = &p["spec"]["containers"][0]["resources"];
        assert_eq!(r["requests"], json!({"cpu": "1", "memory": "1m"}));
        assert_eq!(p["status"]["qosClass"], "Burstable");
    }

    #[test]
    fn default_pod_probes_volumes_env_and_host_network() {
        let p = defaulted(
            "Pod",
            pod_with(json!({
                "hostNetwork": true,
                "containers": [{
                    "name": "c", "image": "i", "ports": [{"containerPort": 8080}],
                    "livenessProbe": {"httpGet": {"port": 8080}},
                    "readinessProbe": {"grpc": {"port": 9090}},
                    "lifecycle": {"preStop": {"httpGet": {"port": "http"}}},
                    "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
                }],
                "volumes": [
                    {"name": "scratch"},
                    {"name": "cfg", "configMap": {"name": "cfg"}},
                    {"name": "sec", "secret": {"secretName": "s"}},
                    {"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
                    {"name": "host", "hostPath": {"path": "/var/log"}}
                ]
            })),
        );
        let c = &p["spec"]["containers"][0];
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c["readinessProbe"]["grpc"]["service"], "");
        assert_eq!(c["lifecycle"]["preStop"]["httpGet"]["path"], "/");
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(c["ports"][0]["hostPort"], 8080);
        let v = &p["spec"]["volumes"];
        assert_eq!(v[0]["emptyDir"], json!({}));
        assert_eq!(v[1]["configMap"]["defaultMode"], 420);
        assert_eq!(v[2]["secret"]["defaultMode"], 420);
        assert_eq!(v[3]["projected"]["defaultMode"], 420);
        assert_eq!(
            v[3]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3600
        );
        assert_eq!(v[4]["hostPath"]["type"], "");
    }

    #[test]
    fn default_deployment() {
        let d = defaulted("Deployment", deployment());
        let s = &d["spec"];
        assert_eq!(s["replicas"], 1);
        assert_eq!(
            s["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(s["progressDeadlineSeconds"], 600);
        let t = &s["template"]["spec"];
        assert_eq!(t["restartPolicy"], "Always");
        assert_eq!(t["containers"][0]["imagePullPolicy"], "Always");
        assert!(
            t.get("enableServiceLinks").is_none(),
            "SetDefaults_Pod does not apply to templates"
        );
        assert!(d.get("status").is_none());
        none(&validate_create("Deployment", &d));

        let mut r = deployment();
        r["spec"]["strategy"] = json!({"type": "Recreate"});
        r["spec"]["replicas"] = json!(0);
        let r = defaulted("Deployment", r);
        assert_eq!(r["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(r["spec"]["replicas"], 0);
    }

    #[test]
    fn default_replica_set() {
        let r = defaulted("ReplicaSet", replica_set());
        assert_eq!(r["spec"]["replicas"], 1);
        assert!(r["spec"].get("strategy").is_none());
        assert_eq!(r["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
        none(&validate_create("ReplicaSet", &r));
    }

    #[test]
    fn default_service_cluster_ip() {
        let s = defaulted(
            "Service",
            service(
                json!({"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "ports": [{"port": 80}, {"name": "b", "port": 81, "targetPort": "http"}]}),
            ),
        );
        let spec = &s["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(
            spec["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(spec["ports"][1]["targetPort"], "http");
        assert_eq!(spec["clusterIPs"], json!(["10.96.0.10"]));
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert!(spec.get("externalTrafficPolicy").is_none());
    }

    #[test]
    fn default_service_variants() {
        let lb = defaulted(
            "Service",
            service(json!({"type": "LoadBalancer", "ports": [{"port": 80}]})),
        );
        assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
        none(&validate_create("Service", &lb));

        let headless = defaulted(
            "Service",
            service(json!({"clusterIP": "None", "ports": [{"port": 80}]})),
        );
        assert_eq!(headless["spec"]["ipFamilyPolicy"], "RequireDualStack");
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));

        let ext = defaulted(
            "Service",
            service(json!({"type": "ExternalName", "externalName": "db.example.com"})),
        );
        assert!(ext["spec"].get("ipFamilies").is_none());
        assert!(ext["spec"].get("internalTrafficPolicy").is_none());
        none(&validate_create("Service", &ext));

        let sticky = defaulted(
            "Service",
            service(json!({"sessionAffinity": "ClientIP", "ports": [{"port": 80}]})),
        );
        assert_eq!(
            sticky["spec"]["sessionAffinityConfig"],
            json!({"clientIP": {"timeoutSeconds": 10800}})
        );
        let v6 = defaulted(
            "Service",
            service(json!({"clusterIP": "fd00::10", "ports": [{"port": 80}]})),
        );
        assert_eq!(v6["spec"]["ipFamilies"], json!(["IPv6"]));
    }

    #[test]
    fn default_secret_and_string_data() {
        let s = defaulted(
            "Secret",
            json!({"metadata": meta("s"), "data": {"a": "eA=="}, "stringData": {"b": "hello", "a": "yy"}}),
        );
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["data"], json!({"a": "eXk=", "b": "aGVsbG8="}));
        assert!(s.get("stringData").is_none());
        none(&validate_create("Secret", &s));
    }

    #[test]
    fn default_namespace() {
        let n = defaulted("Namespace", json!({"metadata": {"name": "team-a"}}));
        assert_eq!(n["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(n["status"]["phase"], "Active");
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/metadata.name"], "team-a");
        none(&validate_create("Namespace", &n));
        // Stored namespaces (with a resourceVersion) do not get the finalizer back once it was removed.
        let stored = defaulted(
            "Namespace",
            json!({"metadata": {"name": "team-a", "resourceVersion": "7"}, "status": {"phase": "Terminating"}}),
        );
        assert!(stored.get("spec").is_none());
        assert_eq!(stored["status"]["phase"], "Terminating");
        let deleting = defaulted(
            "Namespace",
            json!({"metadata": {"name": "team-a", "deletionTimestamp": "2024-01-01T00:00:00Z"}, "spec": {}}),
        );
        assert_eq!(deleting["spec"], json!({}));
    }

    #[test]
    fn default_node_endpoints_and_slices() {
        let n = defaulted(
            "Node",
            json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.0.0/24"}, "status": {"capacity": {"cpu": "4", "memory": "8192Mi"}}}),
        );
        assert_eq!(n["status"]["allocatable"], json!({"cpu": "4", "memory": "8Gi"}));
        assert_eq!(n["spec"]["podCIDRs"], json!(["10.244.0.0/24"]));
        none(&validate_create("Node", &n));

        let ep = defaulted(
            "Endpoints",
            json!({"metadata": meta("svc"), "subsets": [{"addresses": [{"ip": "10.1.2.3"}], "ports": [{"port": 80}]}]}),
        );
        assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
        none(&validate_create("Endpoints", &ep));

        let es = defaulted(
            "EndpointSlice",
            json!({"metadata": meta("svc-abc"), "addressType": "IPv4", "endpoints": [{"addresses": ["10.1.2.3"]}], "ports": [{"port": 80}]}),
        );
        assert_eq!(es["ports"][0], json!({"port": 80, "name": "", "protocol": "TCP"}));
        none(&validate_create("EndpointSlice", &es));
    }

    #[test]
    fn defaulting_is_idempotent() {
        for (kind, obj) in [
            ("Pod", pod()),
            ("Deployment", deployment()),
            ("ReplicaSet", replica_set()),
            ("Service", web_service()),
            ("Namespace", json!({"metadata": {"name": "x"}})),
            ("Secret", json!({"metadata": meta("s"), "stringData": {"k": "v"}})),
        ] {
            let once = defaulted(kind, obj);
            assert_eq!(defaulted(kind, once.clone()), once, "{kind}");
        }
    }

    // ----------------------------------------------------------------------------------------------------------
    // Valid objects
    // ----------------------------------------------------------------------------------------------------------

    #[test]
    fn valid_objects_are_accepted() {
        let full_pod = pod_with(json!({
            "initContainers": [{"name": "init", "image": "busybox", "command": ["true"]}],
            "containers": [{
                "name": "web", "image": "nginx:1.25",
                "ports": [{"name": "http", "containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}],
                "env": [{"name": "A", "value": "1"}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "envFrom": [{"configMapRef": {"name": "cfg"}}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi", "example.com/gpu": "1"}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                "readinessProbe": {"tcpSocket": {"port": 80}},
                "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": false}
            }],
            "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}, {"operator": "Exists"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}],
            "serviceAccountName": "default",
            "activeDeadlineSeconds": 600
        }));
        let mut p = full_pod;
        p["metadata"]["labels"] = json!({"app": "web", "example.com/tier": "frontend"});
        p["metadata"]["annotations"] = json!({"Example.com/Note": "anything goes here"});
        p["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "1234", "controller": true}]);
        p["metadata"]["finalizers"] = json!(["example.com/cleanup", "foregroundDeletion"]);
        none(&create("Pod", p));
        none(&create("Deployment", deployment()));
        none(&create("ReplicaSet", replica_set()));
        none(&create("Service", web_service()));
        none(&create(
            "Service",
            service(
                json!({"type": "NodePort", "selector": {"a": "b"}, "ports": [{"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 80, "protocol": "UDP"}]}),
            ),
        ));
        none(&create(
            "Service",
            service(json!({"clusterIP": "None", "selector": {"a": "b"}})),
        ));
        none(&create(
            "ConfigMap",
            json!({"metadata": meta("cfg"), "data": {"app.properties": "a=b", "KEY_1": ""}, "binaryData": {"blob": "AAEC"}}),
        ));
        none(&create(
            "Secret",
            json!({"metadata": meta("tls"), "type": "kubernetes.io/tls", "data": {"tls.crt": "YQ==", "tls.key": "Yg=="}}),
        ));
        none(&create(
            "Secret",
            json!({"metadata": meta("reg"), "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": base64_encode(b"{\"auths\":{}}")}}),
        ));
        none(&create("ServiceAccount", json!({"metadata": meta("builder")})));
        none(&create(
            "Lease",
            json!({"metadata": meta("leader"), "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0}}),
        ));
        none(&create(
            "Event",
            json!({"metadata": meta("p.17a"), "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Started", "message": "ok", "type": "Normal"}),
        ));
        none(&create(
            "Node",
            json!({"metadata": {"name": "node-1"}, "spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}], "podCIDRs": ["10.244.1.0/24", "fd00::/64"]}}),
        ));
        none(&create("Anything", json!({"metadata": {"name": "Odd Name_1"}})));
    }

    // ----------------------------------------------------------------------------------------------------------
    // Metadata
    // ----------------------------------------------------------------------------------------------------------

    #[test]
    fn name_required_and_formats() {
        let mut p = pod();
        p["metadata"] = json!({"namespace": "default"});
        has(
            &create("Pod", p),
            R_REQUIRED,
            "metadata.name",
            "Required value: name or generateName is required",
        );

        let mut p = pod();
        p["metadata"]["name"] = json!("Foo_Bar");
        let errs = create("Pod", p);
        has(
            &errs,
            R_INVALID,
            "metadata.name",
            &format!("Invalid value: \"Foo_Bar\": {SUBDOMAIN_MSG}"),
        );
        assert_eq!(errs.len(), 1);

        let mut p = pod();
        p["metadata"]["name"] = json!("a".repeat(254));
        has_prefix(
            &create("Pod", p),
            R_INVALID,
            "metadata.name",
            &format!(
                "Invalid value: \"{}\": must be no more than 253 characters",
                "a".repeat(254)
            ),
        );

        let errs = create("Namespace", json!({"metadata": {"name": "a.b"}}));
        has(
            &errs,
            R_INVALID,
            "metadata.name",
            "Invalid value: \"a.b\": must not contain dots",
        );

        let mut s = web_service();
        s["metadata"]["name"] = json!("1web");
        has(&create("Service", s), R_INVALID, "metadata.name", "Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')");
    }

    #[test]
    fn generate_name_and_namespace_rules() {
        let mut p = pod();
        p["metadata"] = json!({"name": "web-x7k2p", "generateName": "web-", "namespace": "default"});
        none(&create("Pod", p));
        let mut p = pod();
        p["metadata"] = json!({"name": "x", "generateName": "Web-", "namespace": "default"});
        has_prefix(
            &create("Pod", p),
            R_INVALID,
            "metadata.generateName",
            "Invalid value: \"Web-\": a lowercase RFC 1123 subdomain",
        );

        let mut p = pod();
        p["metadata"] = json!({"name": "p"});
        has(&create("Pod", p), R_REQUIRED, "metadata.namespace", "Required value");
        let mut p = pod();
        p["metadata"]["namespace"] = json!("Team_A");
        has_prefix(
            &create("Pod", p),
            R_INVALID,
            "metadata.namespace",
            "Invalid value: \"Team_A\": a lowercase RFC 1123 label must consist of",
        );
        has(
            &create("Node", json!({"metadata": {"name": "n", "namespace": "default"}})),
            R_FORBIDDEN,
            "metadata.namespace",
            "Forbidden: not allowed on this type",
        );
        let mut p = pod();
        p["metadata"]["generation"] = json!(-1);
        has(
            &create("Pod", p),
            R_INVALID,
            "metadata.generation",
            "Invalid value: -1: must be greater than or equal to 0",
        );
    }

    #[test]
    fn labels_and_annotations() {
        let mut p = pod();
        p["metadata"]["labels"] = json!({"bad key": "ok", "app": "-bad", "example.com/": "x"});
        let errs = create("Pod", p);
        has(&errs, R_INVALID, "metadata.labels", "Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')");
        has(&errs, R_INVALID, "metadata.labels", "Invalid value: \"-bad\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')");
        has(
            &errs,
            R_INVALID,
            "metadata.labels",
            "Invalid value: \"example.com/\": name part must be non-empty",
        );

        let mut p = pod();
        p["metadata"]["labels"] = json!({"a": "x".repeat(64)});
        has(
            &create("Pod", p),
            R_INVALID,
            "metadata.labels",
            &format!(
                "Invalid value: \"{}\": must be no more than 63 characters",
                "x".repeat(64)
            ),
        );

        let mut p = pod();
        p["metadata"]["annotations"] = json!({"a/b/c": "x"});
        has_prefix(
            &create("Pod", p),
            R_INVALID,
            "metadata.annotations",
            "Invalid value: \"a/b/c\": a qualified name must consist of",
        );

        let mut p = pod();
        p["metadata"]["annotations"] = json!({"big": "x".repeat(TOTAL_ANNOTATION_SIZE)});
        has(
            &create("Pod", p),
            R_TOO_LONG,
            "metadata.annotations",
            "Too long: may not be more than 262144 bytes",
        );
    }

    #[test]
    fn owner_references_and_finalizers() {
        let mut p = pod();
        p["metadata"]["ownerReferences"] = json!([
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "controller": true},
            {"apiVersion": "v1", "kind": "Event", "name": "b", "uid": "2", "controller": true}
        ]);
        let errs = create("Pod", p);
        has(
            &errs,
            R_INVALID,
            "metadata.ownerReferences.uid",
            "Invalid value: \"\": uid must not be empty",
        );
        has_prefix(
            &errs,
            R_INVALID,
            "metadata.ownerReferences",
            "Invalid value: v1.OwnerReference{APIVersion:\"v1\", Kind:\"Event\"",
        );
        has_prefix(
            &errs,
            R_INVALID,
            "metadata.ownerReferences",
            "Invalid value: []v1.OwnerReference{",
        );
        assert!(errs.iter().any(|e| e.message.ends_with("Only one reference can have Controller set to true. Found \"true\" in references for ReplicaSet/a and Event/b")));

        let mut p = pod();
        p["metadata"]["finalizers"] = json!(["cleanup", "orphan", "foregroundDeletion"]);
        let errs = create("Pod", p);
        has(
            &errs,
            R_INVALID,
            "metadata.finalizers[0]",
            "Invalid value: \"cleanup\": name is neither a standard finalizer name nor is it fully qualified",
        );
        has(&errs, R_INVALID, "metadata.finalizers", "Invalid value: []string{\"cleanup\", \"orphan\", \"foregroundDeletion\"}: finalizer orphan and foregroundDeletion cannot be both set");
    }

    // ----------------------------------------------------------------------------------------------------------
    // Pods
    // ----------------------------------------------------------------------------------------------------------

    #[test]
    fn pod_containers_required_unique_and_named() {
        has(
            &create("Pod", pod_with(json!({"containers": []}))),
            R_REQUIRED,
            "spec.containers",
            "Required value",
        );
        let errs = create(
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "a"}, {"name": "c", "image": "b"}, {"name": "Bad_Name"}]}),
            ),
        );
        has(&errs, R_DUPLICATE, "spec.containers[1].name", "Duplicate value: \"c\"");
        has_prefix(&errs, R_INVALID, "spec.containers[2].name", "Invalid value: \"Bad_Name\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc'");
        has(&errs, R_REQUIRED, "spec.containers[2].image", "Required value");
        let errs = create(
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "a"}], "initContainers": [{"name": "c", "image": "b"}]}),
            ),
        );
        has(
            &errs,
            R_DUPLICATE,
            "spec.initContainers[0].name",
            "Duplicate value: \"c\"",
        );
        let errs = create("Pod", pod_with(json!({"containers": [{"image": "a"}]})));
        has(&errs, R_REQUIRED, "spec.containers[0].name", "Required value");
    }

    #[test]
    fn pod_ports_and_protocols() {
        let errs = create(
            "Pod",
            pod_with(json!({"containers": [{"name": "c", "image": "i", "ports": [
                {"containerPort": 70000},
                {"containerPort": 80, "protocol": "HTTP"},
                {"name": "web", "containerPort": 81},
                {"name": "web", "containerPort": 82},
                {"name": "8080", "containerPort": 83},
                {"containerPort": 84, "hostPort": 0},
                {"protocol": "TCP"}
            ]}]})),
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].ports[0].containerPort",
            "Invalid value: 70000: must be between 1 and 65535, inclusive",
        );
        has(
            &errs,
            R_NOT_SUPPORTED,
            "spec.containers[0].ports[1].protocol",
            "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        );
        has(
            &errs,
            R_DUPLICATE,
            "spec.containers[0].ports[3].name",
            "Duplicate value: \"web\"",
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].ports[4].name",
            "Invalid value: \"8080\": must contain at least one letter (a-z)",
        );
        has(
            &errs,
            R_REQUIRED,
            "spec.containers[0].ports[6].containerPort",
            "Required value",
        );
        assert_eq!(errs.len(), 5, "{errs:#?}");
    }

    #[test]
    fn pod_restart_and_dns_policy() {
        let errs = create(
            "Pod",
            pod_with(
                json!({"restartPolicy": "Sometimes", "dnsPolicy": "Magic", "containers": [{"name": "c", "image": "i"}]}),
            ),
        );
        has(
            &errs,
            R_NOT_SUPPORTED,
            "spec.restartPolicy",
            "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        );
        has(&errs, R_NOT_SUPPORTED, "spec.dnsPolicy", "Unsupported value: \"Magic\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"");
        let errs = create(
            "Pod",
            pod_with(json!({"dnsPolicy": "None", "containers": [{"name": "c", "image": "i"}]})),
        );
        has(
            &errs,
            R_REQUIRED,
            "spec.dnsConfig",
            "Required value: must provide `dnsConfig` when `dnsPolicy` is None",
        );
        // Without defaulting, the defaulted fields are required.
        let errs = validate_create("Pod", &pod());
        has(&errs, R_REQUIRED, "spec.restartPolicy", "Required value");
        has(
            &errs,
            R_REQUIRED,
            "spec.terminationGracePeriodSeconds",
            "Required value",
        );
        has(
            &errs,
            R_REQUIRED,
            "spec.containers[0].imagePullPolicy",
            "Required value",
        );
    }

    #[test]
    fn pod_resources() {
        let errs = create(
            "Pod",
            pod_with(json!({"containers": [{"name": "c", "image": "i", "resources": {
                "limits": {"cpu": "abc", "memory": "1Gi", "gpu": "1", "example.com/dongle": "1"},
                "requests": {"memory": "2Gi", "ephemeral-storage": "-1", "example.com/dongle": "2"}
            }}]})),
        );
        has(&errs, R_INVALID, "spec.containers[0].resources.limits[cpu]", "Invalid value: \"abc\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'");
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].resources.requests",
            "Invalid value: \"2Gi\": must be less than or equal to memory limit of 1Gi",
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].resources.requests[ephemeral-storage]",
            "Invalid value: \"-1\": must be greater than or equal to 0",
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].resources.limits[gpu]",
            "Invalid value: \"gpu\": must be a standard resource type or fully qualified",
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].resources.limits[gpu]",
            "Invalid value: \"gpu\": must be a standard resource for containers",
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].resources.requests",
            "Invalid value: \"2\": must be equal to example.com/dongle limit of 1",
        );
        let errs = create(
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "i", "resources": {"limits": {"example.com/dongle": "1.5", "cpu": "1Zi"}}}]}),
            ),
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].resources.limits[example.com/dongle]",
            "Invalid value: \"1500m\": must be an integer",
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].resources.limits[cpu]",
            &format!("Invalid value: \"1Zi\": {MSG_QUANTITY_FORMAT}"),
        );
        let errs = create(
            "Pod",
            pod_with(json!({"containers": [{"name": "c", "image": "i", "resources": {"limits": {"memory": "1x"}}}]})),
        );
        assert!(
            errs.iter()
                .any(|e| e.field == "spec.containers[0].resources.limits[memory]"),
            "{errs:#?}"
        );
        let errs = create(
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"example.com/dongle": "1"}}}]}),
            ),
        );
        has(
            &errs,
            R_REQUIRED,
            "spec.containers[0].resources.limits",
            "Required value: Limit must be set for non overcommitable resources",
        );
    }

    #[test]
    fn pod_volumes_and_mounts() {
        let errs = create(
            "Pod",
            pod_with(json!({
                "containers": [{"name": "c", "image": "i", "volumeMounts": [
                    {"name": "missing", "mountPath": "/a"},
                    {"name": "cfg", "mountPath": "/a"},
                    {"name": "cfg", "mountPath": "/b", "subPath": "../etc"},
                    {"name": "moded", "mountPath": "/c"}
                ]}],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "cfg"}},
                    {"name": "two", "emptyDir": {}, "hostPath": {"path": "/x"}},
                    {"name": "cfg", "emptyDir": {}},
                    {"name": "Bad", "emptyDir": {}},
                    {"name": "pvc", "persistentVolumeClaim": {}},
                    {"name": "moded", "secret": {"secretName": "s", "defaultMode": 1000}}
                ]
            })),
        );
        has(
            &errs,
            R_INVALID,
            "spec.volumes[5].secret.defaultMode",
            "Invalid value: 1000: must be a number between 0 and 0777 (octal), both inclusive",
        );
        has(
            &errs,
            R_FORBIDDEN,
            "spec.volumes[1].hostPath",
            "Forbidden: may not specify more than 1 volume type",
        );
        has(&errs, R_DUPLICATE, "spec.volumes[2].name", "Duplicate value: \"cfg\"");
        has_prefix(
            &errs,
            R_INVALID,
            "spec.volumes[3].name",
            "Invalid value: \"Bad\": a lowercase RFC 1123 label",
        );
        has(
            &errs,
            R_REQUIRED,
            "spec.volumes[4].persistentVolumeClaim.claimName",
            "Required value",
        );
        has(
            &errs,
            R_NOT_FOUND,
            "spec.containers[0].volumeMounts[0].name",
            "Not found: \"missing\"",
        );
        // The secret volume is invalid (bad mode), so mounts of it are not found either, as upstream.
        has(
            &errs,
            R_NOT_FOUND,
            "spec.containers[0].volumeMounts[3].name",
            "Not found: \"moded\"",
        );
        assert!(
            !errs
                .iter()
                .any(|e| e.field == "spec.containers[0].volumeMounts[1].name"),
            "{errs:#?}"
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].volumeMounts[1].mountPath",
            "Invalid value: \"/a\": must be unique",
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].volumeMounts.subPath",
            "Invalid value: \"../etc\": must not contain '..'",
        );
    }

    #[test]
    fn pod_probes_env_and_lifecycle() {
        let errs = create(
            "Pod",
            pod_with(json!({"containers": [{
                "name": "c", "image": "i",
                "livenessProbe": {"initialDelaySeconds": -1},
                "readinessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}, "terminationGracePeriodSeconds": 5},
                "startupProbe": {"httpGet": {"port": "http_port"}, "successThreshold": 2},
                "lifecycle": {"preStop": {"sleep": {"seconds": 60}}},
                "env": [{"name": "A=B"}, {"name": "X", "valueFrom": {}}, {"name": "Y", "value": "v", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                        {"name": "Z", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}}]
            }]})),
        );
        let c = "spec.containers[0]";
        has(
            &errs,
            R_REQUIRED,
            &format!("{c}.livenessProbe"),
            "Required value: must specify a handler type",
        );
        has(
            &errs,
            R_INVALID,
            &format!("{c}.livenessProbe.initialDelaySeconds"),
            "Invalid value: -1: must be greater than or equal to 0",
        );
        has(
            &errs,
            R_FORBIDDEN,
            &format!("{c}.readinessProbe.tcpSocket"),
            "Forbidden: may not specify more than 1 handler type",
        );
        has(
            &errs,
            R_INVALID,
            &format!("{c}.readinessProbe.terminationGracePeriodSeconds"),
            "Invalid value: 5: must not be set for readinessProbes",
        );
        has(
            &errs,
            R_INVALID,
            &format!("{c}.startupProbe.successThreshold"),
            "Invalid value: 2: must be 1",
        );
        has(
            &errs,
            R_INVALID,
            &format!("{c}.startupProbe.httpGet.port"),
            "Invalid value: \"http_port\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        );
        has(
            &errs,
            R_INVALID,
            &format!("{c}.lifecycle.preStop.sleep"),
            "Invalid value: 60: must be non-negative and less than terminationGracePeriodSeconds (30)",
        );
        has(&errs, R_INVALID, &format!("{c}.env[0].name"), "Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='");
        has(&errs, R_INVALID, &format!("{c}.env[1].valueFrom"), "Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`");
        has(
            &errs,
            R_INVALID,
            &format!("{c}.env[2].valueFrom"),
            "Invalid value: \"\": may not be specified when `value` is not empty",
        );
        has_prefix(
            &errs,
            R_NOT_SUPPORTED,
            &format!("{c}.env[3].valueFrom.fieldRef.fieldPath"),
            "Unsupported value: \"metadata.labels\": supported values: \"metadata.name\", \"metadata.namespace\"",
        );
    }

    #[test]
    fn pod_spec_misc_rules() {
        let errs = create(
            "Pod",
            pod_with(json!({
                "hostNetwork": true,
                "containers": [{"name": "c", "image": " nginx", "ports": [{"containerPort": 80, "hostPort": 81}]}],
                "tolerations": [{"key": "k", "operator": "Exists", "value": "v"}, {"operator": "Equal", "value": "x"}, {"key": "k", "effect": "Sometimes"}],
                "activeDeadlineSeconds": 0,
                "nodeName": "Node_1",
                "hostname": "a.b",
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
                "topologySpreadConstraints": [{"maxSkew": 0, "topologyKey": "", "whenUnsatisfiable": "Maybe"}],
                "os": {"name": "plan9"}
            })),
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].image",
            "Invalid value: \" nginx\": must not have leading or trailing whitespace",
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].ports[0].hostPort",
            "Invalid value: 81: must match `containerPort` when `hostNetwork` is true",
        );
        has(
            &errs,
            R_INVALID,
            "spec.tolerations[0].operator",
            "Invalid value: \"v\": value must be empty when `operator` is 'Exists'",
        );
        has(&errs, R_INVALID, "spec.tolerations[1].operator", "Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"");
        has(
            &errs,
            R_NOT_SUPPORTED,
            "spec.tolerations[2].effect",
            "Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
        );
        has(
            &errs,
            R_INVALID,
            "spec.activeDeadlineSeconds",
            "Invalid value: 0: must be between 1 and 2147483647, inclusive",
        );
        has_prefix(
            &errs,
            R_INVALID,
            "spec.nodeName",
            "Invalid value: \"Node_1\": a lowercase RFC 1123 subdomain",
        );
        has(
            &errs,
            R_INVALID,
            "spec.hostname",
            "Invalid value: \"a.b\": must not contain dots",
        );
        has(
            &errs,
            R_REQUIRED,
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
            "Required value: must have at least one node selector term",
        );
        has(
            &errs,
            R_INVALID,
            "spec.topologySpreadConstraints[0].maxSkew",
            "Invalid value: 0: must be greater than zero",
        );
        has(
            &errs,
            R_REQUIRED,
            "spec.topologySpreadConstraints[0].topologyKey",
            "Required value: can not be empty",
        );
        has(
            &errs,
            R_NOT_SUPPORTED,
            "spec.topologySpreadConstraints[0].whenUnsatisfiable",
            "Unsupported value: \"Maybe\": supported values: \"DoNotSchedule\", \"ScheduleAnyway\"",
        );
        has(
            &errs,
            R_NOT_SUPPORTED,
            "spec.os",
            "Unsupported value: \"plan9\": supported values: \"linux\", \"windows\"",
        );
    }

    #[test]
    fn pod_annotations_and_create_only_rules() {
        let mut p = pod();
        p["metadata"]["annotations"] =
            json!({"kubernetes.io/config.mirror": "x", "controller.kubernetes.io/pod-deletion-cost": "+10"});
        let errs = create("Pod", p);
        has(
            &errs,
            R_INVALID,
            "metadata.annotations[kubernetes.io/config.mirror]",
            "Invalid value: \"x\": must set spec.nodeName if mirror pod annotation is set",
        );
        has(
            &errs,
            R_INVALID,
            "metadata.annotations[controller.kubernetes.io/pod-deletion-cost]",
            "Invalid value: \"+10\": must be a 32bit integer",
        );
        let errs = create(
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "i"}], "ephemeralContainers": [{"name": "dbg", "image": "busybox"}], "nodeName": "n", "schedulingGates": [{"name": "example.com/gate"}]}),
            ),
        );
        has(
            &errs,
            R_FORBIDDEN,
            "spec.ephemeralContainers",
            "Forbidden: cannot be set on create",
        );
        has(
            &errs,
            R_FORBIDDEN,
            "spec.nodeName",
            "Forbidden: cannot be set until all schedulingGates have been cleared",
        );
    }

    // ----------------------------------------------------------------------------------------------------------
    // Deployments and ReplicaSets
    // ----------------------------------------------------------------------------------------------------------

    #[test]
    fn deployment_selector_required() {
        let mut d = deployment();
        d["spec"].as_object_mut().map(|s| s.remove("selector"));
        let errs = create("Deployment", d);
        has(&errs, R_REQUIRED, "spec.selector", "Required value");
        has(
            &errs,
            R_INVALID,
            "spec.template.metadata.labels",
            "Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`",
        );
        assert_eq!(errs.len(), 2);
    }

    #[test]
    fn deployment_selector_empty_and_mismatch() {
        let mut d = deployment();
        d["spec"]["selector"] = json!({});
        let errs = create("Deployment", d);
        has(&errs, R_INVALID, "spec.selector", "Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment");
        assert_eq!(
            errs.len(),
            1,
            "an empty selector selects everything, so the template matches"
        );

        let mut d = deployment();
        d["spec"]["template"]["metadata"]["labels"] = json!({"app": "x"});
        let errs = create("Deployment", d);
        assert_eq!(
            errs,
            vec![FieldError {
                reason: "FieldValueInvalid",
                field: "spec.template.metadata.labels".into(),
                message: "Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`"
                    .into(),
            }]
        );

        let mut d = deployment();
        d["spec"]["selector"] = json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}, {"key": "tier", "operator": "DoesNotExist"}]});
        none(&create("Deployment", d));
    }

    #[test]
    fn deployment_invalid_selector_skips_template() {
        let mut d = deployment();
        d["spec"]["selector"] = json!({"matchExpressions": [{"key": "app", "operator": "Like", "values": ["web"]}]});
        d["spec"]["template"]["spec"]["containers"] = json!([]);
        let errs = create("Deployment", d);
        has(
            &errs,
            R_INVALID,
            "spec.selector.matchExpressions[0].operator",
            "Invalid value: \"Like\": not a valid selector operator",
        );
        has(&errs, R_INVALID, "spec.selector", "Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:\"app\", Operator:\"Like\", Values:[]string{\"web\"}}}}: invalid label selector");
        assert!(!errs.iter().any(|e| e.field.starts_with("spec.template")), "{errs:#?}");
    }

    #[test]
    fn deployment_spec_rules() {
        let mut d = deployment();
        d["spec"]["replicas"] = json!(-1);
        d["spec"]["minReadySeconds"] = json!(700);
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        d["spec"]["template"]["spec"]["activeDeadlineSeconds"] = json!(10);
        d["spec"]["template"]["metadata"]["labels"]["bad key"] = json!("x");
        let errs = create("Deployment", d);
        has(
            &errs,
            R_INVALID,
            "spec.replicas",
            "Invalid value: -1: must be greater than or equal to 0",
        );
        has(
            &errs,
            R_INVALID,
            "spec.progressDeadlineSeconds",
            "Invalid value: 600: must be greater than minReadySeconds",
        );
        has(
            &errs,
            R_NOT_SUPPORTED,
            "spec.template.spec.restartPolicy",
            "Unsupported value: \"Never\": supported values: \"Always\"",
        );
        has(
            &errs,
            R_FORBIDDEN,
            "spec.template.spec.activeDeadlineSeconds",
            "Forbidden: activeDeadlineSeconds in ReplicaSet is not Supported",
        );
        has_prefix(
            &errs,
            R_INVALID,
            "spec.template.labels",
            "Invalid value: \"bad key\": name part must consist of",
        );
    }

    #[test]
    fn deployment_strategy_rules() {
        let with = |strategy: Value| {
            let mut d = deployment();
            d["spec"]["strategy"] = strategy;
            create("Deployment", d)
        };
        let errs = with(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "abc", "maxSurge": -1}}));
        has(&errs, R_INVALID, "spec.strategy.rollingUpdate.maxUnavailable", "Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"abc\"}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')");
        has(
            &errs,
            R_INVALID,
            "spec.strategy.rollingUpdate.maxSurge",
            "Invalid value: -1: must be greater than or equal to 0",
        );
        let errs = with(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}}));
        has(
            &errs,
            R_INVALID,
            "spec.strategy.rollingUpdate.maxUnavailable",
            "Invalid value: intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}: may not be 0 when `maxSurge` is 0",
        );
        let errs = with(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "150%"}}));
        has(
            &errs,
            R_INVALID,
            "spec.strategy.rollingUpdate.maxUnavailable",
            "Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"150%\"}: must not be greater than 100%",
        );
        let errs = with(json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}));
        has(
            &errs,
            R_FORBIDDEN,
            "spec.strategy.rollingUpdate",
            "Forbidden: may not be specified when strategy `type` is 'Recreate'",
        );
        let errs = with(json!({"type": "BlueGreen"}));
        has(&errs, R_NOT_SUPPORTED, "spec.strategy", "Unsupported value: apps.DeploymentStrategy{Type:\"BlueGreen\", RollingUpdate:(*apps.RollingUpdateDeployment)(nil)}: supported values: \"Recreate\", \"RollingUpdate\"");
    }

    #[test]
    fn replica_set_rules() {
        let mut r = replica_set();
        r["spec"]["selector"] = json!({"matchLabels": {}});
        let errs = create("ReplicaSet", r);
        has(&errs, R_INVALID, "spec.selector", "Invalid value: v1.LabelSelector{MatchLabels:map[string]string{}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment");
        let mut r = replica_set();
        r["spec"]["replicas"] = json!(-3);
        r["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
        let errs = create("ReplicaSet", r);
        has(
            &errs,
            R_INVALID,
            "spec.replicas",
            "Invalid value: -3: must be greater than or equal to 0",
        );
        has(
            &errs,
            R_REQUIRED,
            "spec.template.spec.containers[0].image",
            "Required value",
        );
    }

    // ----------------------------------------------------------------------------------------------------------
    // Services
    // ----------------------------------------------------------------------------------------------------------

    #[test]
    fn service_ports_rules() {
        has(
            &create("Service", service(json!({"selector": {"a": "b"}}))),
            R_REQUIRED,
            "spec.ports",
            "Required value",
        );
        let errs = create(
            "Service",
            service(
                json!({"ports": [{"port": 80}, {"port": 0, "targetPort": "Bad_Name"}, {"name": "x", "port": 80, "protocol": "ICMP"}, {"name": "x", "port": 443}]}),
            ),
        );
        has(&errs, R_REQUIRED, "spec.ports[0].name", "Required value");
        has(&errs, R_REQUIRED, "spec.ports[1].name", "Required value");
        has(
            &errs,
            R_INVALID,
            "spec.ports[1].port",
            "Invalid value: 0: must be between 1 and 65535, inclusive",
        );
        has(
            &errs,
            R_INVALID,
            "spec.ports[1].targetPort",
            "Invalid value: \"Bad_Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        );
        has(
            &errs,
            R_NOT_SUPPORTED,
            "spec.ports[2].protocol",
            "Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        );
        has(&errs, R_DUPLICATE, "spec.ports[3].name", "Duplicate value: \"x\"");
        let errs = create(
            "Service",
            service(json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]})),
        );
        has(&errs, R_DUPLICATE, "spec.ports[1]", "Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}");
    }

    #[test]
    fn service_type_and_node_ports() {
        let errs = create("Service", service(json!({"type": "Foo", "ports": [{"port": 80}]})));
        has(&errs, R_NOT_SUPPORTED, "spec.type", "Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"");
        let errs = create(
            "Service",
            service(
                json!({"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 80}, {"name": "b", "port": 81, "nodePort": 30001}, {"name": "c", "port": 82, "nodePort": 30001}]}),
            ),
        );
        has(
            &errs,
            R_INVALID,
            "spec.ports[0].nodePort",
            "Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
        );
        has(&errs, R_DUPLICATE, "spec.ports[2].nodePort", "Duplicate value: 30001");
        let errs = create("Service", service(json!({"ports": [{"port": 80, "nodePort": 30080}]})));
        has(
            &errs,
            R_FORBIDDEN,
            "spec.ports[0].nodePort",
            "Forbidden: may not be used when `type` is 'ClusterIP'",
        );
        let errs = create(
            "Service",
            service(json!({"type": "LoadBalancer", "clusterIP": "None", "ports": [{"port": 80}]})),
        );
        has(
            &errs,
            R_INVALID,
            "spec.clusterIPs[0]",
            "Invalid value: \"None\": may not be set to 'None' for LoadBalancer services",
        );
        let errs = validate_create(
            "Service",
            &service(
                json!({"type": "LoadBalancer", "sessionAffinity": "None", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}], "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster"}),
            ),
        );
        has(&errs, R_REQUIRED, "allocateLoadBalancerNodePorts", "Required value");
    }

    #[test]
    fn service_external_name_and_ips() {
        has(
            &create("Service", service(json!({"type": "ExternalName"}))),
            R_REQUIRED,
            "spec.externalName",
            "Required value",
        );
        let errs = create(
            "Service",
            service(json!({"type": "ExternalName", "externalName": "Not_A_Host", "clusterIP": "10.0.0.1"})),
        );
        has(
            &errs,
            R_INVALID,
            "spec.externalName",
            &format!("Invalid value: \"Not_A_Host\": {SUBDOMAIN_MSG}"),
        );
        has(
            &errs,
            R_FORBIDDEN,
            "spec.clusterIPs",
            "Forbidden: may not be set for ExternalName services",
        );
        let errs = create(
            "Service",
            service(json!({"clusterIP": "10.0.0.300", "ports": [{"port": 80}]})),
        );
        has(
            &errs,
            R_INVALID,
            "spec.clusterIPs[0]",
            "Invalid value: \"10.0.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        );
        let errs = create(
            "Service",
            service(json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.2"], "ports": [{"port": 80}]})),
        );
        has(
            &errs,
            R_INVALID,
            "spec.clusterIPs",
            "Invalid value: []string{\"10.0.0.2\"}: first value must match `clusterIP`",
        );
        let errs = create(
            "Service",
            service(json!({"externalIPs": ["127.0.0.1"], "ports": [{"port": 80}]})),
        );
        has(
            &errs,
            R_INVALID,
            "spec.externalIPs[0]",
            "Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
        );
        let errs = create(
            "Service",
            service(json!({"sessionAffinity": "Sticky", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]})),
        );
        has(
            &errs,
            R_NOT_SUPPORTED,
            "spec.sessionAffinity",
            "Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
        );
        has(
            &errs,
            R_INVALID,
            "spec.externalTrafficPolicy",
            "Invalid value: \"Local\": may only be set for externally-accessible services",
        );
    }

    // ----------------------------------------------------------------------------------------------------------
    // ConfigMaps, Secrets, Namespaces, Nodes, Endpoints, EndpointSlices, Events, Leases, ServiceAccounts
    // ----------------------------------------------------------------------------------------------------------

    #[test]
    fn config_map_rules() {
        let errs = create(
            "ConfigMap",
            json!({"metadata": meta("cfg"), "data": {"bad key": "x", "..": "y", "dup": "z"}, "binaryData": {"dup": "AA==", "raw": "not base64!"}}),
        );
        has(&errs, R_INVALID, "data[bad key]", "Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')");
        has(&errs, R_INVALID, "data[..]", "Invalid value: \"..\": must not be '..'");
        has(
            &errs,
            R_INVALID,
            "data[dup]",
            "Invalid value: \"dup\": duplicate of key present in binaryData",
        );
        has(
            &errs,
            R_INVALID,
            "binaryData[raw]",
            "Invalid value: \"not base64!\": illegal base64 data at input byte 3",
        );
        let errs = create(
            "ConfigMap",
            json!({"metadata": meta("cfg"), "data": {"a": "x".repeat(MAX_SECRET_SIZE), "b": "y"}}),
        );
        has(&errs, R_TOO_LONG, "[]", "Too long: may not be more than 1048576 bytes");
    }

    #[test]
    fn secret_rules() {
        let errs = create(
            "Secret",
            json!({"metadata": meta("s"), "data": {"a": base64_encode(&vec![b'x'; MAX_SECRET_SIZE]), "b": "eA=="}}),
        );
        has(
            &errs,
            R_TOO_LONG,
            "data",
            "Too long: may not be more than 1048576 bytes",
        );
        let errs = create(
            "Secret",
            json!({"metadata": meta("s"), "type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}}),
        );
        has(&errs, R_REQUIRED, "data[tls.key]", "Required value");
        assert_eq!(errs.len(), 1);
        let errs = create(
            "Secret",
            json!({"metadata": meta("s"), "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": base64_encode(b"[1]")}}),
        );
        has(&errs, R_INVALID, "data[.dockerconfigjson]", "Invalid value: \"<secret contents redacted>\": json: cannot unmarshal array into Go value of type map[string]interface {}");
        let errs = create(
            "Secret",
            json!({"metadata": meta("s"), "type": "kubernetes.io/service-account-token"}),
        );
        has(
            &errs,
            R_REQUIRED,
            "metadata.annotations[kubernetes.io/service-account.name]",
            "Required value",
        );
        let errs = create(
            "Secret",
            json!({"metadata": meta("s"), "type": "kubernetes.io/basic-auth", "data": {"bad/key": "eA=="}}),
        );
        has(&errs, R_REQUIRED, "data[username]", "Required value");
        has(&errs, R_REQUIRED, "data[password]", "Required value");
        has_prefix(
            &errs,
            R_INVALID,
            "data[bad/key]",
            "Invalid value: \"bad/key\": a valid config key",
        );
        let errs = create("Secret", json!({"metadata": meta("s"), "data": {"k": "abc"}}));
        has(
            &errs,
            R_INVALID,
            "data[k]",
            "Invalid value: \"abc\": illegal base64 data at input byte 0",
        );
    }

    #[test]
    fn namespace_node_and_service_account_rules() {
        let errs = create(
            "Namespace",
            json!({"metadata": {"name": "ns"}, "spec": {"finalizers": ["custom"]}}),
        );
        has(
            &errs,
            R_INVALID,
            "spec.finalizers",
            "Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified",
        );
        let errs = create(
            "Node",
            json!({"metadata": {"name": "n"}, "spec": {
            "taints": [{"key": "k", "effect": "NoSchedule"}, {"key": "k", "effect": "NoSchedule"}, {"key": "bad key", "value": "v v", "effect": "Never"}],
            "podCIDRs": ["10.0.0.1/24"]
        }, "status": {"capacity": {"cpu": "-1", "pods": "1.5"}}}),
        );
        has(&errs, R_DUPLICATE, "metadata.taints[1]", "Duplicate value: core.Taint{Key:\"k\", Value:\"\", Effect:\"NoSchedule\", TimeAdded:(*v1.Time)(nil)}: taints must be unique by key and effect pair");
        has_prefix(
            &errs,
            R_INVALID,
            "metadata.taints[2].key",
            "Invalid value: \"bad key\": name part must consist of",
        );
        has_prefix(
            &errs,
            R_INVALID,
            "metadata.taints[2].value",
            "Invalid value: \"v v\": a valid label must be",
        );
        has(
            &errs,
            R_NOT_SUPPORTED,
            "metadata.taints[2].effect",
            "Unsupported value: \"Never\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
        );
        has(
            &errs,
            R_INVALID,
            "spec.podCIDRs[0]",
            "Invalid value: \"10.0.0.1/24\": must not have bits set beyond the prefix length",
        );
        has(
            &errs,
            R_INVALID,
            "status.capacity.cpu",
            "Invalid value: \"-1\": must be greater than or equal to 0",
        );
        has(
            &errs,
            R_INVALID,
            "status.capacity.pods",
            "Invalid value: \"1500m\": must be an integer",
        );
        has_prefix(
            &create("ServiceAccount", json!({"metadata": meta("Bad")})),
            R_INVALID,
            "metadata.name",
            "Invalid value: \"Bad\": a lowercase RFC 1123 subdomain",
        );
    }

    #[test]
    fn endpoints_rules() {
        let errs = create(
            "Endpoints",
            json!({"metadata": meta("svc"), "subsets": [
                {"ports": [{"port": 80}]},
                {"addresses": [{"ip": "169.254.0.1"}, {"ip": "nope", "hostname": "A"}, {"ip": "127.128.0.5"}], "ports": [{"port": 80}, {"name": "b", "port": 0}]}
            ]}),
        );
        has(
            &errs,
            R_REQUIRED,
            "subsets[0]",
            "Required value: must specify `addresses` or `notReadyAddresses`",
        );
        has(
            &errs,
            R_INVALID,
            "subsets[1].addresses[0].ip",
            "Invalid value: \"169.254.0.1\": may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        );
        assert!(
            !errs.iter().any(|e| e.field == "subsets[1].addresses[2].ip"),
            "a pod address inside loopback is allowed (Capstan's pods live there): {errs:#?}"
        );
        has(
            &errs,
            R_INVALID,
            "subsets[1].addresses[1].ip",
            "Invalid value: \"nope\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        );
        has_prefix(
            &errs,
            R_INVALID,
            "subsets[1].addresses[1].hostname",
            "Invalid value: \"A\": a lowercase RFC 1123 label",
        );
        has(&errs, R_REQUIRED, "subsets[1].ports[0].name", "Required value");
        has(
            &errs,
            R_INVALID,
            "subsets[1].ports[1].port",
            "Invalid value: 0: must be between 1 and 65535, inclusive",
        );
    }

    #[test]
    fn endpoint_slice_rules() {
        has(
            &create("EndpointSlice", json!({"metadata": meta("s")})),
            R_REQUIRED,
            "addressType",
            "Required value",
        );
        let errs = create("EndpointSlice", json!({"metadata": meta("s"), "addressType": "IPX"}));
        has(
            &errs,
            R_NOT_SUPPORTED,
            "addressType",
            "Unsupported value: \"IPX\": supported values: \"FQDN\", \"IPv4\", \"IPv6\"",
        );
        let errs = create(
            "EndpointSlice",
            json!({"metadata": meta("s"), "addressType": "IPv4", "endpoints": [{"addresses": []}, {"addresses": ["fd00::1", "169.254.1.1"]}], "ports": [{"name": "a", "protocol": "ICMP"}, {"name": "a"}]}),
        );
        has(
            &errs,
            R_REQUIRED,
            "endpoints[0].addresses",
            "Required value: must contain at least 1 address",
        );
        has(
            &errs,
            R_INVALID,
            "endpoints[1].addresses[0]",
            "Invalid value: \"fd00::1\": must be a valid IPv4 address",
        );
        has(
            &errs,
            R_INVALID,
            "endpoints[1].addresses[1]",
            "Invalid value: \"169.254.1.1\": may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        );
        has(
            &errs,
            R_NOT_SUPPORTED,
            "ports[0].protocol",
            "Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        );
        has(&errs, R_DUPLICATE, "ports[1].name", "Duplicate value: \"a\"");
        let errs = create(
            "EndpointSlice",
            json!({"metadata": meta("s"), "addressType": "FQDN", "endpoints": [{"addresses": ["localhost"]}]}),
        );
        has(
            &errs,
            R_INVALID,
            "endpoints[0].addresses[0]",
            "Invalid value: \"localhost\": should be a domain with at least two segments separated by dots",
        );
        let many: Vec<Value> = (0..1001).map(|_| json!({"addresses": ["10.0.0.1"]})).collect();
        has(
            &create(
                "EndpointSlice",
                json!({"metadata": meta("s"), "addressType": "IPv4", "endpoints": many}),
            ),
            R_TOO_MANY,
            "endpoints",
            "Too many: 1001: must have at most 1000 items",
        );
    }

    #[test]
    fn event_and_lease_rules() {
        let errs = create(
            "Event",
            json!({"metadata": meta("e"), "involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"}}),
        );
        has(
            &errs,
            R_INVALID,
            "involvedObject.namespace",
            "Invalid value: \"other\": does not match event.namespace",
        );
        let errs = create(
            "Event",
            json!({"metadata": meta("a/b"), "involvedObject": {"namespace": "default"}}),
        );
        has(
            &errs,
            R_INVALID,
            "metadata.name",
            "Invalid value: \"a/b\": may not contain '/'",
        );
        let errs = create(
            "Event",
            json!({"metadata": meta("e"), "eventTime": "2024-01-01T00:00:00.000000Z", "involvedObject": {"namespace": "default"}}),
        );
        has(&errs, R_REQUIRED, "reportingController", "Required value");
        has(&errs, R_REQUIRED, "reportingInstance", "Required value");
        has(&errs, R_REQUIRED, "action", "Required value");
        has(&errs, R_REQUIRED, "reason", "Required value");

        let errs = create(
            "Lease",
            json!({"metadata": meta("l"), "spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1, "preferredHolder": "b"}}),
        );
        has(
            &errs,
            R_INVALID,
            "spec.leaseDurationSeconds",
            "Invalid value: 0: must be greater than 0",
        );
        has(
            &errs,
            R_INVALID,
            "spec.leaseTransitions",
            "Invalid value: -1: must be greater than or equal to 0",
        );
        has(
            &errs,
            R_FORBIDDEN,
            "spec.preferredHolder",
            "Forbidden: may only be specified if `strategy` is defined",
        );
        let errs = create("Lease", json!({"metadata": meta("l"), "spec": {"strategy": "Newest"}}));
        has(
            &errs,
            R_NOT_SUPPORTED,
            "spec.strategy",
            "Unsupported value: \"Newest\": supported values: \"OldestEmulationVersion\"",
        );
    }

    // ----------------------------------------------------------------------------------------------------------
    // Updates
    // ----------------------------------------------------------------------------------------------------------

    fn stored(mut v: Value) -> Value {
        v["metadata"]["uid"] = json!("uid-1");
        v["metadata"]["resourceVersion"] = json!("5");
        v["metadata"]["creationTimestamp"] = json!("2024-01-02T03:04:05Z");
        v
    }

    #[test]
    fn update_metadata_immutability() {
        let old = stored(pod());
        none(&update("Pod", old.clone(), old.clone()));
        let mut new = old.clone();
        new["metadata"]["name"] = json!("q");
        new["metadata"]["namespace"] = json!("other");
        new["metadata"]["uid"] = json!("uid-2");
        new["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
        new["metadata"]["generation"] = json!(1);
        let mut old_gen = old.clone();
        old_gen["metadata"]["generation"] = json!(2);
        let errs = update("Pod", old_gen, new);
        has(
            &errs,
            R_INVALID,
            "metadata.name",
            "Invalid value: \"q\": field is immutable",
        );
        has(
            &errs,
            R_INVALID,
            "metadata.namespace",
            "Invalid value: \"other\": field is immutable",
        );
        has(
            &errs,
            R_INVALID,
            "metadata.uid",
            "Invalid value: \"uid-2\": field is immutable",
        );
        has(
            &errs,
            R_INVALID,
            "metadata.creationTimestamp",
            "Invalid value: 2025-01-01 00:00:00 +0000 UTC: field is immutable",
        );
        has(
            &errs,
            R_INVALID,
            "metadata.generation",
            "Invalid value: 1: must not be decremented",
        );
        // Omitted uid/creationTimestamp are not changes (upstream copies them from the stored object).
        let mut new = old.clone();
        new["metadata"].as_object_mut().map(|m| {
            m.remove("uid");
            m.remove("creationTimestamp")
        });
        none(&update("Pod", old.clone(), new));
        let mut deleting = old.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2024-02-01T00:00:00Z");
        let mut new = deleting.clone();
        new["metadata"]["finalizers"] = json!(["example.com/late"]);
        has(&update("Pod", deleting, new), R_FORBIDDEN, "metadata.finalizers", "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"example.com/late\"}");
    }

    #[test]
    fn pod_update_rules() {
        let old = stored(pod_with(
            json!({"containers": [{"name": "c", "image": "nginx:1"}], "activeDeadlineSeconds": 100, "tolerations": [{"key": "a", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}]}),
        ));
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:2");
        new["spec"]["activeDeadlineSeconds"] = json!(50);
        new["spec"]["tolerations"] = json!([{"key": "a", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 20}, {"key": "b", "operator": "Exists"}]);
        none(&update("Pod", old.clone(), new));

        let mut new = old.clone();
        new["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
        let errs = update("Pod", old.clone(), new);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].reason, R_FORBIDDEN);
        assert_eq!(errs[0].field, "spec");
        assert!(errs[0].message.starts_with("Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"));
        assert!(errs[0].message.contains("containers[0].ports"), "{}", errs[0].message);

        let mut new = old.clone();
        new["spec"]["containers"] = json!([{"name": "c", "image": "nginx:1"}, {"name": "d", "image": "x"}]);
        has(
            &update("Pod", old.clone(), new),
            R_FORBIDDEN,
            "spec.containers",
            "Forbidden: pod updates may not add or remove containers",
        );

        let mut new = old.clone();
        new["spec"]["activeDeadlineSeconds"] = json!(200);
        has(
            &update("Pod", old.clone(), new),
            R_INVALID,
            "spec.activeDeadlineSeconds",
            "Invalid value: 200: must be less than or equal to previous value",
        );
        let mut new = old.clone();
        new["spec"].as_object_mut().map(|s| s.remove("activeDeadlineSeconds"));
        has(
            &update("Pod", old.clone(), new),
            R_INVALID,
            "spec.activeDeadlineSeconds",
            "Invalid value: null: must not update from a positive integer to nil value",
        );
        let mut new = old.clone();
        new["spec"]["tolerations"] = json!([{"key": "a", "operator": "Exists", "effect": "NoSchedule"}]);
        has(
            &update("Pod", old.clone(), new),
            R_FORBIDDEN,
            "spec.tolerations",
            "Forbidden: existing toleration can not be modified except its tolerationSeconds",
        );
    }

    #[test]
    fn workload_selector_is_immutable() {
        let old = stored(deployment());
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(5);
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        none(&update("Deployment", old.clone(), new));
        let mut new = old.clone();
        new["spec"]["selector"] = json!({"matchLabels": {"app": "web", "tier": "fe"}});
        new["spec"]["template"]["metadata"]["labels"]["tier"] = json!("fe");
        assert_eq!(
            update("Deployment", old, new),
            vec![FieldError {
                reason: "FieldValueInvalid",
                field: "spec.selector".into(),
                message: "Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"tier\":\"fe\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable".into(),
            }]
        );
        let old = stored(replica_set());
        let mut new = old.clone();
        new["spec"]["selector"] = json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]});
        has_prefix(&update("ReplicaSet", old, new), R_INVALID, "spec.selector", "Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:\"app\", Operator:\"Exists\", Values:[]string(nil)}}}: field is immutable");
    }

    #[test]
    fn service_cluster_ip_immutable() {
        let old = stored(defaulted(
            "Service",
            service(json!({"clusterIP": "10.96.0.10", "selector": {"a": "b"}, "ports": [{"port": 80}]})),
        ));
        // A replacement that omits the allocated clusterIP keeps it.
        let new = service(json!({"selector": {"a": "b"}, "ports": [{"port": 8080}]}));
        none(&update("Service", old.clone(), new.clone()));
        let mut prepared = defaulted("Service", new);
        prepare_update("Service", &old, &mut prepared);
        assert_eq!(prepared["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(prepared["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        assert_eq!(prepared["metadata"]["uid"], "uid-1");
        // Changing it is refused.
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("10.96.0.20");
        has(
            &update("Service", old.clone(), new),
            R_INVALID,
            "spec.clusterIPs[0]",
            "Invalid value: []string{\"10.96.0.20\"}: may not change once set",
        );
        // Unless the type becomes ExternalName, which drops the allocated fields.
        let mut new = old.clone();
        new["spec"]["type"] = json!("ExternalName");
        new["spec"]["externalName"] = json!("db.example.com");
        none(&update("Service", old.clone(), new.clone()));
        let mut prepared = defaulted("Service", new);
        prepare_update("Service", &old, &mut prepared);
        assert!(prepared["spec"].get("clusterIP").is_none() && prepared["spec"].get("ipFamilies").is_none());
        // NodePort services keep their allocated node ports on replacement.
        let np_old = stored(defaulted(
            "Service",
            service(json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 31000}]})),
        ));
        let mut np_new = defaulted(
            "Service",
            service(json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]})),
        );
        prepare_update("Service", &np_old, &mut np_new);
        assert_eq!(np_new["spec"]["ports"][0]["nodePort"], 31000);
    }

    #[test]
    fn immutable_config_maps_and_secrets() {
        let old = stored(json!({"metadata": meta("cfg"), "data": {"a": "1"}, "immutable": true}));
        none(&update("ConfigMap", old.clone(), old.clone()));
        let mut new = old.clone();
        new["data"]["a"] = json!("2");
        has(
            &update("ConfigMap", old.clone(), new),
            R_FORBIDDEN,
            "data",
            "Forbidden: field is immutable when `immutable` is set",
        );
        let mut new = old.clone();
        new["immutable"] = json!(false);
        has(
            &update("ConfigMap", old.clone(), new),
            R_FORBIDDEN,
            "immutable",
            "Forbidden: field is immutable when `immutable` is set",
        );
        let mut mutable = old.clone();
        mutable.as_object_mut().map(|m| m.remove("immutable"));
        let mut new = mutable.clone();
        new["data"]["a"] = json!("2");
        none(&update("ConfigMap", mutable, new));

        let old = stored(json!({"metadata": meta("s"), "data": {"a": "eA=="}, "immutable": true}));
        let mut new = old.clone();
        new["data"]["a"] = json!("eQ==");
        new["type"] = json!("example.com/custom");
        let errs = update("Secret", old, new);
        has(
            &errs,
            R_FORBIDDEN,
            "data",
            "Forbidden: field is immutable when `immutable` is set",
        );
        has(
            &errs,
            R_INVALID,
            "type",
            "Invalid value: \"example.com/custom\": field is immutable",
        );
    }

    #[test]
    fn other_update_rules() {
        let old = stored(
            json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.244.0.0/24"], "providerID": "aws:///i-1"}}),
        );
        let mut new = old.clone();
        new["spec"]["podCIDRs"] = json!(["10.244.1.0/24"]);
        new["spec"]["providerID"] = json!("aws:///i-2");
        new["spec"]["podCIDR"] = json!("10.244.1.0/24");
        let errs = update("Node", old.clone(), new);
        has(
            &errs,
            R_FORBIDDEN,
            "spec.podCIDRs",
            "Forbidden: node updates may not change podCIDR except from \"\" to valid",
        );
        has(
            &errs,
            R_FORBIDDEN,
            "spec.providerID",
            "Forbidden: node updates may not change providerID except from \"\" to valid",
        );
        let mut new = old.clone();
        new["spec"]["unschedulable"] = json!(true);
        none(&update("Node", old, new));

        let old = stored(json!({"metadata": meta("s"), "addressType": "IPv4", "endpoints": []}));
        let mut new = old.clone();
        new["addressType"] = json!("IPv6");
        has(
            &update("EndpointSlice", old, new),
            R_INVALID,
            "addressType",
            "Invalid value: \"IPv6\": field is immutable",
        );

        let old = stored(defaulted("Namespace", json!({"metadata": {"name": "ns"}})));
        let mut new = old.clone();
        new["metadata"]["labels"]["team"] = json!("a");
        none(&update("Namespace", old.clone(), new));
        let mut new = old.clone();
        new["metadata"]["name"] = json!("ns2");
        has(
            &update("Namespace", old.clone(), new),
            R_INVALID,
            "metadata.name",
            "Invalid value: \"ns2\": field is immutable",
        );
        let mut new = json!({"metadata": {"name": "ns", "resourceVersion": "5"}, "spec": {"finalizers": []}});
        prepare_update("Namespace", &old, &mut new);
        assert_eq!(new["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(new["metadata"]["creationTimestamp"], "2024-01-02T03:04:05Z");

        let old = stored(json!({"metadata": meta("e"), "involvedObject": {"namespace": "default"}}));
        let mut new = old.clone();
        new["metadata"]["name"] = json!("f");
        has(
            &update("Event", old, new),
            R_INVALID,
            "metadata.name",
            "Invalid value: \"f\": field is immutable",
        );

        let old = stored(json!({"metadata": meta("l"), "spec": {"holderIdentity": "a"}}));
        let mut new = old.clone();
        new["spec"]["holderIdentity"] = json!("b");
        new["spec"]["leaseDurationSeconds"] = json!(-5);
        has(
            &update("Lease", old, new),
            R_INVALID,
            "spec.leaseDurationSeconds",
            "Invalid value: -5: must be greater than 0",
        );
    }

    // ----------------------------------------------------------------------------------------------------------
    // invalid_message
    // ----------------------------------------------------------------------------------------------------------

    #[test]
    fn invalid_message_single_and_several() {
        let mut d = deployment();
        d["spec"]["template"]["metadata"]["labels"] = json!({"app": "x"});
        let errs = create("Deployment", d);
        assert_eq!(
            invalid_message("Deployment", "apps", "web", &errs),
            "Deployment.apps \"web\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`"
        );
        let errs = create(
            "Pod",
            pod_with(json!({"restartPolicy": "Sometimes", "containers": [{"name": "c"}]})),
        );
        assert_eq!(
            invalid_message("Pod", "", "p", &errs),
            "Pod \"p\" is invalid: [spec.containers[0].image: Required value, spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"]"
        );
        let twice = vec![errs[0].clone(), errs[0].clone()];
        assert_eq!(
            invalid_message("Pod", "", "p", &twice),
            "Pod \"p\" is invalid: spec.containers[0].image: Required value"
        );
        assert_eq!(invalid_message("Pod", "", "p", &[]), "Pod \"p\" is invalid");
        assert!(invalid_message("Lease", "coordination.k8s.io", "a\"b", &twice)
            .starts_with("Lease.coordination.k8s.io \"a\\\"b\" is invalid: "));
    }

    // ----------------------------------------------------------------------------------------------------------
    // Junk input
    // ----------------------------------------------------------------------------------------------------------

    const KINDS: [&str; 14] = [
        "Pod",
        "Deployment",
        "ReplicaSet",
        "Service",
        "Namespace",
        "Node",
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "Endpoints",
        "Event",
        "Lease",
        "EndpointSlice",
        "Unknown",
    ];

    #[test]
    fn junk_roots_do_not_panic() {
        for kind in KINDS {
            for junk in [
                json!(null),
                json!("pod"),
                json!(42),
                json!(true),
                json!([1, 2]),
                json!({}),
                json!({"metadata": []}),
            ] {
                let mut d = junk.clone();
                default_object(kind, &mut d);
                let errs = validate_create(kind, &d);
                if !junk.is_object() {
                    assert_eq!(errs.len(), 1, "{kind} {junk}");
                    assert_eq!(errs[0].reason, R_INVALID);
                    assert_eq!(errs[0].field, "");
                } else {
                    assert!(!errs.is_empty(), "{kind} {junk}");
                }
                let _ = validate_update(kind, &junk, &d);
                let _ = validate_update(kind, &d, &junk);
                let mut n = d.clone();
                prepare_update(kind, &junk, &mut n);
                let _ = invalid_message(kind, "", "x", &errs);
            }
        }
    }

    #[test]
    fn wrong_field_types_are_invalid_values() {
        let errs = create("Pod", json!({"metadata": "p", "spec": {"containers": {"name": "c"}}}));
        has(
            &errs,
            R_INVALID,
            "metadata",
            "Invalid value: \"p\": must be of type object",
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers",
            "Invalid value: {\"name\":\"c\"}: must be of type array",
        );
        let errs = create(
            "Pod",
            pod_with(
                json!({"containers": [{"name": 7, "image": ["x"], "ports": "80", "resources": {"limits": {"cpu": true}}, "env": [{"name": "A", "value": 1}]}], "terminationGracePeriodSeconds": "30"}),
            ),
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].name",
            "Invalid value: 7: must be of type string",
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].image",
            "Invalid value: [\"x\"]: must be of type string",
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].ports",
            "Invalid value: \"80\": must be of type array",
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].resources.limits[cpu]",
            "Invalid value: true: must be of type string",
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].env[0].value",
            "Invalid value: 1: must be of type string",
        );
        has(
            &errs,
            R_INVALID,
            "spec.terminationGracePeriodSeconds",
            "Invalid value: \"30\": must be of type integer",
        );
        let mut d = deployment();
        d["spec"]["replicas"] = json!("three");
        d["spec"]["selector"] = json!("app=web");
        d["metadata"]["labels"] = json!({"a": 1});
        let errs = create("Deployment", d);
        has(
            &errs,
            R_INVALID,
            "spec.replicas",
            "Invalid value: \"three\": must be of type integer",
        );
        has(
            &errs,
            R_INVALID,
            "spec.selector",
            "Invalid value: \"app=web\": must be of type object",
        );
        has(
            &errs,
            R_INVALID,
            "metadata.labels[a]",
            "Invalid value: 1: must be of type string",
        );
        let errs = create(
            "Service",
            service(json!({"ports": [{"port": 99999999999i64}], "clusterIPs": "x"})),
        );
        has(
            &errs,
            R_INVALID,
            "spec.ports[0].port",
            "Invalid value: 99999999999: must be a 32-bit integer",
        );
        has(
            &errs,
            R_INVALID,
            "spec.clusterIPs",
            "Invalid value: \"x\": must be of type array",
        );
        let errs = create(
            "ConfigMap",
            json!({"metadata": meta("c"), "data": {"a": 1}, "binaryData": {"b": 2}}),
        );
        has(&errs, R_INVALID, "data[a]", "Invalid value: 1: must be of type string");
        has(
            &errs,
            R_INVALID,
            "binaryData[b]",
            "Invalid value: 2: must be of type string (base64 encoded)",
        );
    }

    /// Replaces every node of a valid object, one at a time, with junk of every JSON type.
    fn mutations(v: &Value) -> Vec<Value> {
        fn walk(v: &Value, path: &mut Vec<PathSeg>, out: &mut Vec<Vec<PathSeg>>) {
            out.push(path.clone());
            match v {
                Value::Object(m) => {
                    for (k, c) in m {
                        path.push(PathSeg::Key(k.clone()));
                        walk(c, path, out);
                        path.pop();
                    }
                }
                Value::Array(a) => {
                    for (i, c) in a.iter().enumerate() {
                        path.push(PathSeg::Idx(i));
                        walk(c, path, out);
                        path.pop();
                    }
                }
                _ => {}
            }
        }
        #[derive(Clone)]
        enum PathSeg {
            Key(String),
            Idx(usize),
        }
        fn set_at(v: &mut Value, path: &[PathSeg], j: &Value) {
            let Some((first, rest)) = path.split_first() else {
                *v = j.clone();
                return;
            };
            let next = match first {
                PathSeg::Key(k) => v.get_mut(k.as_str()),
                PathSeg::Idx(i) => v.get_mut(*i),
            };
            if let Some(n) = next {
                set_at(n, rest, j);
            }
        }
        let mut paths = Vec::new();
        walk(v, &mut Vec::new(), &mut paths);
        let junk = [
            json!(null),
            json!(-1),
            json!(1.5),
            json!("j"),
            json!(""),
            json!(true),
            json!([]),
            json!({}),
            json!([{}, null, 3]),
        ];
        let mut out = Vec::new();
        for p in paths.iter().skip(1) {
            for j in &junk {
                let mut copy = v.clone();
                set_at(&mut copy, p, j);
                out.push(copy);
            }
        }
        out
    }

    #[test]
    fn junk_everywhere_does_not_panic() {
        let samples = [
            (
                "Pod",
                defaulted(
                    "Pod",
                    pod_with(json!({
                        "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}], "resources": {"limits": {"cpu": "1"}},
                            "livenessProbe": {"httpGet": {"port": 80}}, "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                            "volumeMounts": [{"name": "v", "mountPath": "/v"}], "securityContext": {"runAsUser": 1}}],
                        "volumes": [{"name": "v", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}],
                        "tolerations": [{"key": "k", "operator": "Exists"}],
                        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "podAffinityTerm": {"topologyKey": "z", "labelSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}]}}}]}},
                        "dnsConfig": {"nameservers": ["1.1.1.1"], "options": [{"name": "ndots"}]}
                    })),
                ),
            ),
            ("Deployment", defaulted("Deployment", deployment())),
            (
                "Service",
                defaulted(
                    "Service",
                    service(
                        json!({"type": "LoadBalancer", "selector": {"a": "b"}, "clusterIP": "10.0.0.1", "ports": [{"name": "a", "port": 80, "nodePort": 30000}], "loadBalancerSourceRanges": ["10.0.0.0/8"], "sessionAffinity": "ClientIP"}),
                    ),
                ),
            ),
            (
                "Secret",
                json!({"metadata": meta("s"), "type": "kubernetes.io/tls", "data": {"tls.crt": "YQ==", "tls.key": "Yg=="}}),
            ),
            (
                "ConfigMap",
                json!({"metadata": {"name": "c", "namespace": "d", "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u", "controller": true}]}, "data": {"a": "b"}, "binaryData": {"c": "AA=="}, "immutable": true}),
            ),
            (
                "Node",
                defaulted(
                    "Node",
                    json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}], "podCIDRs": ["10.0.0.0/24"]}, "status": {"capacity": {"cpu": "1"}, "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}),
                ),
            ),
            (
                "Endpoints",
                json!({"metadata": meta("e"), "subsets": [{"addresses": [{"ip": "10.0.0.1", "nodeName": "n"}], "ports": [{"port": 80, "protocol": "TCP"}]}]}),
            ),
            (
                "EndpointSlice",
                json!({"metadata": meta("s"), "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"], "hints": {"forZones": [{"name": "a"}]}}], "ports": [{"name": "", "protocol": "TCP", "port": 80}]}),
            ),
            (
                "Event",
                json!({"metadata": meta("e"), "eventTime": "2024-01-01T00:00:00Z", "involvedObject": {"namespace": "default"}, "reportingComponent": "c", "reportingInstance": "i", "action": "a", "reason": "r"}),
            ),
            (
                "Lease",
                json!({"metadata": meta("l"), "spec": {"leaseDurationSeconds": 1, "strategy": "OldestEmulationVersion", "preferredHolder": "x"}}),
            ),
            ("Namespace", defaulted("Namespace", json!({"metadata": {"name": "n"}}))),
            (
                "Role",
                json!({"metadata": meta("r"), "rules": [{"apiGroups": [""], "resources": ["pods"], "resourceNames": ["p"], "verbs": ["get"]}]}),
            ),
            (
                "ClusterRole",
                json!({"metadata": {"name": "cr"}, "rules": [{"nonResourceURLs": ["/x"], "verbs": ["get"]}],
                    "aggregationRule": {"clusterRoleSelectors": [{"matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}]}]}}),
            ),
            (
                "RoleBinding",
                defaulted(
                    "RoleBinding",
                    json!({"metadata": meta("rb"), "roleRef": {"kind": "Role", "name": "r"},
                        "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "d"}, {"kind": "User", "name": "u"}]}),
                ),
            ),
            (
                "ClusterRoleBinding",
                defaulted(
                    "ClusterRoleBinding",
                    json!({"metadata": {"name": "crb"}, "roleRef": {"kind": "ClusterRole", "name": "cr"},
                        "subjects": [{"kind": "Group", "name": "g"}]}),
                ),
            ),
        ];
        for (kind, sample) in samples {
            for m in mutations(&sample) {
                let mut d = m.clone();
                default_object(kind, &mut d);
                let errs = validate_create(kind, &d);
                let _ = validate_update(kind, &sample, &d);
                let _ = validate_update(kind, &d, &sample);
                let mut p = d.clone();
                prepare_update(kind, &sample, &mut p);
                let _ = invalid_message(kind, "", "x", &errs);
            }
        }
    }

    // ----------------------------------------------------------------------------------------------------------
    // RBAC
    // ----------------------------------------------------------------------------------------------------------

    fn rule(v: Value) -> Value {
        json!({"metadata": meta("r"), "rules": [v]})
    }

    #[test]
    fn rbac_roles() {
        none(&create(
            "Role",
            rule(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]})),
        ));
        // Roles without rules are valid.
        none(&create("Role", json!({"metadata": meta("empty")})));
        let errs = create("Role", rule(json!({"apiGroups": [""], "resources": ["pods"]})));
        has(
            &errs,
            R_REQUIRED,
            "rules[0].verbs",
            "Required value: verbs must contain at least one value",
        );
        assert_eq!(errs.len(), 1, "{errs:#?}");
        let errs = create("Role", rule(json!({"resources": ["pods"], "verbs": ["get"]})));
        has(
            &errs,
            R_REQUIRED,
            "rules[0].apiGroups",
            "Required value: resource rules must supply at least one api group",
        );
        let errs = create("Role", rule(json!({"apiGroups": [""], "verbs": ["get"]})));
        has(
            &errs,
            R_REQUIRED,
            "rules[0].resources",
            "Required value: resource rules must supply at least one resource",
        );
        let errs = create("Role", rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz"]})));
        has(
            &errs,
            R_INVALID,
            "rules[0].nonResourceURLs",
            "Invalid value: []string{\"/healthz\"}: namespaced rules cannot apply to non-resource URLs",
        );
        assert_eq!(errs.len(), 1, "{errs:#?}");
        let both = json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "nonResourceURLs": ["/a", "/b"]});
        let errs = create("Role", rule(both.clone()));
        has(
            &errs,
            R_INVALID,
            "rules[0].nonResourceURLs",
            "Invalid value: []string{\"/a\", \"/b\"}: rules cannot apply to both regular resources and non-resource URLs",
        );
        assert_eq!(errs.len(), 2, "{errs:#?}");
        let mut cr = rule(both);
        cr["metadata"] = json!({"name": "cr"});
        let errs = create("ClusterRole", cr);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(
            invalid_message(
                "Role",
                "rbac.authorization.k8s.io",
                "r",
                &create("Role", rule(json!({})))
            ),
            "Role.rbac.authorization.k8s.io \"r\" is invalid: [rules[0].verbs: Required value: verbs must contain \
at least one value, rules[0].apiGroups: Required value: resource rules must supply at least one api group, \
rules[0].resources: Required value: resource rules must supply at least one resource]"
        );
        // A ClusterRole may have non-resource URLs; names are path segments; the namespace is forbidden.
        none(&create(
            "ClusterRole",
            json!({"metadata": {"name": "system:metrics"}, "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]}),
        ));
        let errs = create(
            "ClusterRole",
            json!({"metadata": {"name": "a/b", "namespace": "default"}}),
        );
        has(
            &errs,
            R_INVALID,
            "metadata.name",
            "Invalid value: \"a/b\": may not contain '/'",
        );
        has(
            &errs,
            R_FORBIDDEN,
            "metadata.namespace",
            "Forbidden: not allowed on this type",
        );
        let errs = create("Role", json!({"metadata": {"name": "..", "namespace": "default"}}));
        has(
            &errs,
            R_INVALID,
            "metadata.name",
            "Invalid value: \"..\": may not be '..'",
        );
        let errs = create("Role", json!({"metadata": {"name": "a%b"}}));
        has(
            &errs,
            R_INVALID,
            "metadata.name",
            "Invalid value: \"a%b\": may not contain '%'",
        );
        has(&errs, R_REQUIRED, "metadata.namespace", "Required value");
        // Upper case and colons are fine in RBAC names.
        none(&create(
            "Role",
            json!({"metadata": {"name": "System:Thing", "namespace": "default"}}),
        ));
        // Aggregation rules.
        let errs = create(
            "ClusterRole",
            json!({"metadata": {"name": "agg"}, "aggregationRule": {}}),
        );
        has(
            &errs,
            R_REQUIRED,
            "aggregationRule.clusterRoleSelectors",
            "Required value: at least one clusterRoleSelector required if aggregationRule is non-nil",
        );
        let errs = create(
            "ClusterRole",
            json!({"metadata": {"name": "agg"}, "aggregationRule": {"clusterRoleSelectors": [
                {"matchLabels": {"rbac.example.com/aggregate-to-view": "true"}},
                {"matchExpressions": [{"key": "a", "operator": "Like"}]}
            ]}}),
        );
        has(
            &errs,
            R_INVALID,
            "aggregationRule.clusterRoleSelectors[1].matchExpressions[0].operator",
            "Invalid value: \"Like\": not a valid selector operator",
        );
        has(
            &errs,
            R_INVALID,
            "aggregationRule.clusterRoleSelectors[1]",
            "Invalid value: \"null\": invalid label selector.",
        );
        assert_eq!(errs.len(), 2, "{errs:#?}");
        // A Role has no aggregation rule (the field is not in its type).
        none(&create("Role", json!({"metadata": meta("r"), "aggregationRule": {}})));
        // Updates validate the new object and the metadata rules.
        let old = rule(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}));
        let mut new = old.clone();
        new["rules"][0]["verbs"] = json!([]);
        new["metadata"]["name"] = json!("other");
        let errs = update("Role", old, new);
        has(
            &errs,
            R_REQUIRED,
            "rules[0].verbs",
            "Required value: verbs must contain at least one value",
        );
        has(
            &errs,
            R_INVALID,
            "metadata.name",
            "Invalid value: \"other\": field is immutable",
        );
    }

    fn binding(kind: &str, role_kind: &str, subjects: Value) -> Value {
        let metadata = if kind == "RoleBinding" {
            meta("rb")
        } else {
            json!({"name": "rb"})
        };
        json!({"metadata": metadata, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": "r"},
            "subjects": subjects})
    }

    #[test]
    fn rbac_binding_defaults() {
        let mut b = json!({"metadata": meta("rb"), "roleRef": {"kind": "Role", "name": "r"}, "subjects": [
            {"kind": "User", "name": "alice"},
            {"kind": "Group", "name": "devs", "apiGroup": ""},
            {"kind": "ServiceAccount", "name": "sa", "namespace": "default"},
            {"kind": "User", "name": "bob", "apiGroup": "example.com"},
            {"kind": "Robot", "name": "r2"}
        ]});
        default_object("RoleBinding", &mut b);
        assert_eq!(b["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
        assert_eq!(b["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
        assert_eq!(b["subjects"][1]["apiGroup"], "rbac.authorization.k8s.io");
        assert!(b["subjects"][2].get("apiGroup").is_none());
        assert_eq!(b["subjects"][3]["apiGroup"], "example.com");
        assert!(b["subjects"][4].get("apiGroup").is_none());
        let mut b = json!({"metadata": {"name": "crb"}, "roleRef": {"apiGroup": "example.com", "kind": "ClusterRole", "name": "r"}});
        default_object("ClusterRoleBinding", &mut b);
        assert_eq!(b["roleRef"]["apiGroup"], "example.com");
        // Roles have no defaults.
        let mut r = json!({"metadata": meta("r"), "rules": [{"verbs": ["get"]}]});
        let before = r.clone();
        default_object("Role", &mut r);
        assert_eq!(r, before);
    }

    #[test]
    fn rbac_bindings() {
        let subjects = json!([
            {"kind": "User", "name": "alice"},
            {"kind": "Group", "name": "system:masters"},
            {"kind": "ServiceAccount", "name": "sa1", "namespace": "default"}
        ]);
        none(&create("RoleBinding", binding("RoleBinding", "Role", subjects.clone())));
        none(&create(
            "RoleBinding",
            binding("RoleBinding", "ClusterRole", subjects.clone()),
        ));
        none(&create(
            "ClusterRoleBinding",
            binding("ClusterRoleBinding", "ClusterRole", subjects),
        ));
        // A RoleBinding's service account may leave its namespace out (the binding's is meant).
        none(&create(
            "RoleBinding",
            binding(
                "RoleBinding",
                "Role",
                json!([{"kind": "ServiceAccount", "name": "sa1"}]),
            ),
        ));

        let errs = create("RoleBinding", binding("RoleBinding", "Foo", json!([])));
        has(
            &errs,
            R_NOT_SUPPORTED,
            "roleRef.kind",
            "Unsupported value: \"Foo\": supported values: \"Role\", \"ClusterRole\"",
        );
        assert_eq!(
            invalid_message("RoleBinding", "rbac.authorization.k8s.io", "rb", &errs),
            "RoleBinding.rbac.authorization.k8s.io \"rb\" is invalid: roleRef.kind: Unsupported value: \"Foo\": \
supported values: \"Role\", \"ClusterRole\""
        );
        let errs = create("ClusterRoleBinding", binding("ClusterRoleBinding", "Role", json!([])));
        has(
            &errs,
            R_NOT_SUPPORTED,
            "roleRef.kind",
            "Unsupported value: \"Role\": supported values: \"ClusterRole\"",
        );
        let mut b = binding("RoleBinding", "Role", json!([]));
        b["roleRef"]["apiGroup"] = json!("example.com");
        b["roleRef"]["name"] = json!("");
        let errs = create("RoleBinding", b);
        has(
            &errs,
            R_NOT_SUPPORTED,
            "roleRef.apiGroup",
            "Unsupported value: \"example.com\": supported values: \"rbac.authorization.k8s.io\"",
        );
        has(&errs, R_REQUIRED, "roleRef.name", "Required value");
        let mut b = binding("RoleBinding", "Role", json!([]));
        b["roleRef"]["name"] = json!("a/b%");
        let errs = create("RoleBinding", b);
        has(
            &errs,
            R_INVALID,
            "roleRef.name",
            "Invalid value: \"a/b%\": may not contain '/'",
        );
        has(
            &errs,
            R_INVALID,
            "roleRef.name",
            "Invalid value: \"a/b%\": may not contain '%'",
        );
        // A missing roleRef: defaulting gives it the group; kind and name are then missing.
        let errs = create("ClusterRoleBinding", json!({"metadata": {"name": "crb"}}));
        has(
            &errs,
            R_NOT_SUPPORTED,
            "roleRef.kind",
            "Unsupported value: \"\": supported values: \"ClusterRole\"",
        );
        has(&errs, R_REQUIRED, "roleRef.name", "Required value");
        assert_eq!(errs.len(), 2, "{errs:#?}");

        // Subjects.
        let errs = create(
            "RoleBinding",
            binding(
                "RoleBinding",
                "Role",
                json!([
                    {"kind": "Robot", "name": "r2d2"},
                    {"kind": "User", "name": ""},
                    {"kind": "Group", "name": "g", "apiGroup": "example.com"},
                    {"kind": "ServiceAccount", "name": "Bad_Name", "apiGroup": "v1"}
                ]),
            ),
        );
        has(
            &errs,
            R_NOT_SUPPORTED,
            "subjects[0].kind",
            "Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
        );
        has(&errs, R_REQUIRED, "subjects[1].name", "Required value");
        has(
            &errs,
            R_NOT_SUPPORTED,
            "subjects[2].apiGroup",
            "Unsupported value: \"example.com\": supported values: \"rbac.authorization.k8s.io\"",
        );
        has(
            &errs,
            R_INVALID,
            "subjects[3].name",
            &format!("Invalid value: \"Bad_Name\": {SUBDOMAIN_MSG}"),
        );
        has(
            &errs,
            R_NOT_SUPPORTED,
            "subjects[3].apiGroup",
            "Unsupported value: \"v1\": supported values: \"\"",
        );
        assert_eq!(errs.len(), 5, "{errs:#?}");
        let errs = create(
            "ClusterRoleBinding",
            binding(
                "ClusterRoleBinding",
                "ClusterRole",
                json!([{"kind": "ServiceAccount", "name": "sa1"}]),
            ),
        );
        has(&errs, R_REQUIRED, "subjects[0].namespace", "Required value");
        assert_eq!(errs.len(), 1, "{errs:#?}");
        // Names are path segments; a ClusterRoleBinding has no namespace, a RoleBinding needs one.
        let errs = create(
            "RoleBinding",
            json!({"metadata": {"name": "."}, "roleRef": {"kind": "Role", "name": "r"}}),
        );
        has(
            &errs,
            R_INVALID,
            "metadata.name",
            "Invalid value: \".\": may not be '.'",
        );
        has(&errs, R_REQUIRED, "metadata.namespace", "Required value");
    }

    #[test]
    fn rbac_role_ref_is_immutable() {
        for (kind, role_kind) in [("RoleBinding", "Role"), ("ClusterRoleBinding", "ClusterRole")] {
            let old = binding(kind, role_kind, json!([{"kind": "User", "name": "alice"}]));
            // Subjects may change; an unchanged roleRef (defaulted or not) is no change.
            let mut new = binding(kind, role_kind, json!([{"kind": "Group", "name": "devs"}]));
            new["roleRef"].as_object_mut().expect("roleRef").remove("apiGroup");
            none(&update(kind, old.clone(), new));
            let mut new = old.clone();
            new["roleRef"]["name"] = json!("other");
            let errs = update(kind, old.clone(), new);
            has(
                &errs,
                R_INVALID,
                "roleRef",
                &format!(
                    "Invalid value: rbac.RoleRef{{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"{role_kind}\", \
Name:\"other\"}}: cannot change roleRef"
                ),
            );
            assert_eq!(errs.len(), 1, "{errs:#?}");
        }
        // The new object is validated too, and its errors come first.
        let old = binding("RoleBinding", "Role", json!([]));
        let mut new = old.clone();
        new["roleRef"]["kind"] = json!("Foo");
        let errs = update("RoleBinding", old, new);
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert_eq!(errs[0].field, "roleRef.kind");
        assert_eq!(errs[1].field, "roleRef");
    }

    // ----------------------------------------------------------------------------------------------------------
    // Building blocks
    // ----------------------------------------------------------------------------------------------------------

    fn canon(s: &str) -> String {
        Quantity::parse(s)
            .map(|q| q.canonical())
            .unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn quantity_parsing_and_canonical_form() {
        for (input, want) in [
            ("100m", "100m"),
            ("0.1", "100m"),
            ("1Gi", "1Gi"),
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Ki", "512"),
            ("2", "2"),
            ("1000", "1k"),
            ("1500m", "1500m"),
            ("1e3", "1e3"),
            ("12e6", "12e6"),
            ("1E", "1E"),
            ("-1", "-1"),
            ("0", "0"),
            ("000", "0"),
            ("1n", "1n"),
            ("0.0000000001", "1n"),
            ("+5", "5"),
            ("5.", "5"),
            (".5", "500m"),
            ("1.05", "1050m"),
            ("2048Ki", "2Mi"),
            ("1e-3", "1e-3"),
        ] {
            assert_eq!(canon(input), want, "{input}");
        }
        for bad in ["", "abc", "1.2.3", "1Zi", "1KiB", " 1", "1 "] {
            assert_eq!(canon(bad), format!("ERR {MSG_QUANTITY_FORMAT}"), "{bad:?}");
        }
        for bad in ["1i", "1e", "1mi", "1e99999999999"] {
            assert_eq!(canon(bad), format!("ERR {MSG_QUANTITY_SUFFIX}"), "{bad:?}");
        }
    }

    #[test]
    fn quantity_comparison_and_rounding() {
        let q = |s: &str| Quantity::parse(s).expect("valid quantity");
        assert_eq!(q("1").cmp(&q("1000m")), Ordering::Equal);
        assert_eq!(q("1Gi").cmp(&q("1G")), Ordering::Greater);
        assert_eq!(q("-1").cmp(&q("0")), Ordering::Less);
        assert_eq!(q("-2").cmp(&q("-1")), Ordering::Less);
        assert_eq!(q("999m").cmp(&q("1")), Ordering::Less);
        assert_eq!(q("1e3").cmp(&q("1k")), Ordering::Equal);
        let mut r = q("100u");
        r.round_up(-3);
        assert_eq!(r.canonical(), "1m");
        let mut r = q("1.0001");
        r.round_up(-3);
        assert_eq!(r.canonical(), "1001m");
        assert_eq!(q("1.5").add(&q("500m")).canonical(), "2");
        assert_eq!(
            Quantity::from_json(&json!(0.25)).map(|r| r.map(|q| q.canonical())),
            Some(Ok("250m".to_string()))
        );
    }

    #[test]
    fn ip_and_cidr_formats() {
        let check = |s: &str| {
            let mut e = Errs::default();
            validate_ip(&mut e, "f", s);
            e.finish().into_iter().map(|x| x.message).collect::<Vec<_>>()
        };
        assert!(check("10.0.0.1").is_empty());
        assert!(check("2001:db8::1").is_empty());
        assert_eq!(
            check("2001:DB8::1"),
            vec!["Invalid value: \"2001:DB8::1\": must be in canonical form (\"2001:db8::1\")"]
        );
        assert_eq!(
            check("010.0.0.1"),
            vec!["Invalid value: \"010.0.0.1\": must not have leading 0s"]
        );
        assert_eq!(
            check("::ffff:1.2.3.4"),
            vec!["Invalid value: \"::ffff:1.2.3.4\": must not be an IPv4-mapped IPv6 address"]
        );
        let cidr = |s: &str| {
            let mut e = Errs::default();
            validate_cidr(&mut e, "f", s);
            e.finish().into_iter().map(|x| x.message).collect::<Vec<_>>()
        };
        assert!(cidr("10.0.0.0/24").is_empty());
        assert!(cidr("fd00::/64").is_empty());
        assert_eq!(
            cidr("10.0.0.0/33"),
            vec!["Invalid value: \"10.0.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"]
        );
        assert_eq!(
            cidr("fd00:0::/64"),
            vec!["Invalid value: \"fd00:0::/64\": must be in canonical form (\"fd00::/64\")"]
        );
    }

    #[test]
    fn go_rendering() {
        assert_eq!(
            go_quote("a\"b\\c\n\t\u{1}é\u{a0}"),
            "\"a\\\"b\\\\c\\n\\t\\x01é\\u00a0\""
        );
        assert_eq!(
            render(&Bad::StrMap(Some(BTreeMap::from([
                ("b".to_string(), "2".to_string()),
                ("a".to_string(), "1".to_string())
            ])))),
            "map[string]string{\"a\":\"1\", \"b\":\"2\"}"
        );
        assert_eq!(render(&Bad::StrList(Some(vec![]))), "[]string{}");
        assert_eq!(render(&Bad::StrList(None)), "[]string(nil)");
        assert_eq!(
            go_time(&json!("2024-05-06T07:08:09.500Z")),
            "2024-05-06 07:08:09.5 +0000 UTC"
        );
        assert_eq!(regex_error("m", "f", &[]), "m (regex used for validation is 'f')");
        assert_eq!(mask_trailing_dash("web-"), "wea");
        assert_eq!(base64_decode("aGVsbG8="), Ok(b"hello".to_vec()));
        assert_eq!(base64_decode("aGVsbG8"), Err(4));
        assert_eq!(base64_encode(b"hi"), "aGk=");
    }

    // ----------------------------------------------------------------------------------------------------------
    // More rules
    // ----------------------------------------------------------------------------------------------------------

    #[test]
    fn unknown_kinds_get_generic_metadata_validation() {
        let errs = create("Widget", json!({"metadata": {"name": "a/b", "namespace": "Bad_NS"}}));
        has(
            &errs,
            R_INVALID,
            "metadata.name",
            "Invalid value: \"a/b\": may not contain '/'",
        );
        has_prefix(
            &errs,
            R_INVALID,
            "metadata.namespace",
            "Invalid value: \"Bad_NS\": a lowercase RFC 1123 label",
        );
        has(
            &create("Widget", json!({"metadata": {"name": ".."}})),
            R_INVALID,
            "metadata.name",
            "Invalid value: \"..\": may not be '..'",
        );
        none(&update(
            "Widget",
            json!({"metadata": {"name": "w"}}),
            json!({"metadata": {"name": "w", "labels": {"a": "b"}}}),
        ));
    }

    #[test]
    fn service_cluster_ip_families() {
        let errs = create(
            "Service",
            service(json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1", "10.0.0.2"], "ports": [{"port": 80}]})),
        );
        has(
            &errs,
            R_INVALID,
            "spec.clusterIPs",
            "Invalid value: []string{\"10.0.0.1\", \"10.0.0.2\"}: may specify no more than one IP for each IP family",
        );
        let errs = create(
            "Service",
            service(
                json!({"ipFamilies": ["IPv4", "IPv4", "IPv5"], "ipFamilyPolicy": "Sometimes", "ports": [{"port": 80}]}),
            ),
        );
        has(&errs, R_DUPLICATE, "spec.ipFamilies[1]", "Duplicate value: \"IPv4\"");
        has(
            &errs,
            R_NOT_SUPPORTED,
            "spec.ipFamilies[2]",
            "Unsupported value: \"IPv5\": supported values: \"IPv4\", \"IPv6\"",
        );
        has(&errs, R_NOT_SUPPORTED, "spec.ipFamilyPolicy", "Unsupported value: \"Sometimes\": supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\"");
        let errs = create(
            "Service",
            service(json!({"clusterIP": "10.0.0.1", "ipFamilies": ["IPv6"], "ports": [{"port": 80}]})),
        );
        has(
            &errs,
            R_INVALID,
            "spec.clusterIPs[0]",
            "Invalid value: \"10.0.0.1\": expected an IPv6 value as indicated by `ipFamilies[0]`",
        );
        none(&create(
            "Service",
            service(
                json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1", "fd00::1"], "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 80}]}),
            ),
        ));
    }

    #[test]
    fn service_affinity_and_lb_rules() {
        let errs = create(
            "Service",
            service(
                json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}, "ports": [{"port": 80}]}),
            ),
        );
        has(
            &errs,
            R_INVALID,
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            "Invalid value: 0: must be greater than 0 and less than 86400",
        );
        let errs = create(
            "Service",
            service(
                json!({"loadBalancerSourceRanges": ["10.0.0.0/8"], "loadBalancerClass": "x", "ports": [{"port": 80}]}),
            ),
        );
        has(
            &errs,
            R_FORBIDDEN,
            "spec.LoadBalancerSourceRanges",
            "Forbidden: may only be used when `type` is 'LoadBalancer'",
        );
        has(
            &errs,
            R_FORBIDDEN,
            "spec.loadBalancerClass",
            "Forbidden: may only be used when `type` is 'LoadBalancer'",
        );
        let errs = create(
            "Service",
            service(
                json!({"type": "LoadBalancer", "loadBalancerSourceRanges": ["10.0.0.1/8"], "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
            ),
        );
        has(
            &errs,
            R_INVALID,
            "spec.LoadBalancerSourceRanges[0]",
            "Invalid value: \"10.0.0.1/8\": must not have bits set beyond the prefix length",
        );
        has(&errs, R_REQUIRED, "spec.healthCheckNodePort", "Required value");

        let old = stored(defaulted(
            "Service",
            service(json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/a", "ports": [{"port": 80}]})),
        ));
        let mut new = old.clone();
        new["spec"]["loadBalancerClass"] = json!("example.com/b");
        has(
            &update("Service", old, new),
            R_INVALID,
            "spec.loadBalancerClass",
            "Invalid value: \"example.com/b\": may not change once set",
        );
        let old = stored(defaulted(
            "Service",
            service(json!({"clusterIP": "10.0.0.5", "ports": [{"port": 80}]})),
        ));
        let mut new = old.clone();
        new["spec"]["ipFamilies"] = json!(["IPv6"]);
        has(
            &update("Service", old, new),
            R_INVALID,
            "spec.ipFamilies[0]",
            "Invalid value: []string{\"IPv6\"}: may not change once set",
        );
    }

    #[test]
    fn pod_update_grace_gates_and_mirror_annotation() {
        let old = stored(pod_with(
            json!({"containers": [{"name": "c", "image": "i"}], "terminationGracePeriodSeconds": -5, "schedulingGates": [{"name": "a"}, {"name": "b"}]}),
        ));
        let mut new = old.clone();
        new["spec"]["terminationGracePeriodSeconds"] = json!(1);
        new["spec"]["schedulingGates"] = json!([{"name": "a"}]);
        none(&update("Pod", old.clone(), new));
        let mut new = old.clone();
        new["spec"]["schedulingGates"] = json!([{"name": "a"}, {"name": "c"}]);
        has(
            &update("Pod", old.clone(), new),
            R_FORBIDDEN,
            "spec.schedulingGates[1].name",
            "Forbidden: only deletion is allowed, but found new scheduling gate 'c'",
        );
        let mut mirrored = pod_with(json!({"nodeName": "n", "containers": [{"name": "c", "image": "i"}]}));
        mirrored["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "abc"});
        let old = stored(mirrored);
        let mut new = old.clone();
        new["metadata"]["annotations"] = json!({});
        has(
            &update("Pod", old, new),
            R_FORBIDDEN,
            "metadata.annotations[kubernetes.io/config.mirror]",
            "Forbidden: may not remove or update mirror pod annotation",
        );
    }

    #[test]
    fn pod_dns_config_and_host_aliases() {
        let errs = create(
            "Pod",
            pod_with(json!({
                "containers": [{"name": "c", "image": "i"}],
                "dnsConfig": {"nameservers": ["1.1.1.1", "8.8.8.8", "9.9.9.9", "bad"], "searches": ["svc.cluster.local.", "_srv.example.com", "Bad_Domain"], "options": [{"value": "1"}]},
                "hostAliases": [{"ip": "300.1.1.1", "hostnames": ["ok.example", "Not OK"]}]
            })),
        );
        has(&errs, R_INVALID, "spec.dnsConfig.nameservers", "Invalid value: []string{\"1.1.1.1\", \"8.8.8.8\", \"9.9.9.9\", \"bad\"}: must not have more than 3 nameservers");
        has(
            &errs,
            R_INVALID,
            "spec.dnsConfig.nameservers[3]",
            "Invalid value: \"bad\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        );
        has_prefix(&errs, R_INVALID, "spec.dnsConfig.searches[2]", "Invalid value: \"Bad_Domain\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '_', '-' or '.'");
        assert!(
            !errs
                .iter()
                .any(|e| e.field == "spec.dnsConfig.searches[0]" || e.field == "spec.dnsConfig.searches[1]"),
            "{errs:#?}"
        );
        has(
            &errs,
            R_REQUIRED,
            "spec.dnsConfig.options[0]",
            "Required value: must not be empty",
        );
        has(
            &errs,
            R_INVALID,
            "spec.hostAliases[0].ip",
            "Invalid value: \"300.1.1.1\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        );
        has_prefix(
            &errs,
            R_INVALID,
            "spec.hostAliases[0].hostnames[1]",
            "Invalid value: \"Not OK\": a lowercase RFC 1123 subdomain",
        );
    }

    #[test]
    fn label_selector_semantics() {
        let sel = |v: Value| parse_selector(&mut Errs::default(), &At::new(Some(&v), "s")).expect("selector");
        let labels = |v: Value| At::new(Some(&v), "l").str_map(&mut Errs::default()).unwrap_or_default();
        let s = sel(json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["db"]},
            {"key": "env", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"}
        ]}));
        assert!(s.matches(&labels(json!({"app": "web", "env": "prod"}))));
        assert!(s.matches(&labels(json!({"app": "web", "env": "prod", "tier": "fe"}))));
        assert!(!s.matches(&labels(json!({"app": "web", "env": "prod", "tier": "db"}))));
        assert!(!s.matches(&labels(json!({"app": "web"}))));
        assert!(!s.matches(&labels(json!({"app": "web", "env": "prod", "legacy": ""}))));
        assert!(sel(json!({})).is_empty() && sel(json!({"matchLabels": {}, "matchExpressions": []})).is_empty());
        let errs = create("Deployment", {
            let mut d = deployment();
            d["spec"]["selector"] = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "x", "operator": "In"}, {"key": "y", "operator": "Exists", "values": ["z"]}]});
            d
        });
        has(
            &errs,
            R_REQUIRED,
            "spec.selector.matchExpressions[0].values",
            "Required value: must be specified when `operator` is 'In' or 'NotIn'",
        );
        has(
            &errs,
            R_FORBIDDEN,
            "spec.selector.matchExpressions[1].values",
            "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        );
    }

    #[test]
    fn node_update_addresses_and_metadata_carry_over() {
        let old = stored(
            json!({"metadata": {"name": "n1"}, "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}),
        );
        let mut new = old.clone();
        new["status"]["addresses"] =
            json!([{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "InternalIP", "address": "10.0.0.1"}]);
        has(
            &update("Node", old.clone(), new),
            R_DUPLICATE,
            "status.addresses[1]",
            "Duplicate value: core.NodeAddress{Type:\"InternalIP\", Address:\"10.0.0.1\"}",
        );

        let mut old = old;
        old["metadata"]["deletionTimestamp"] = json!("2024-03-01T00:00:00Z");
        old["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        let mut new = json!({"metadata": {"name": "n1", "resourceVersion": "5"}});
        prepare_update("Node", &old, &mut new);
        assert_eq!(new["metadata"]["uid"], "uid-1");
        assert_eq!(new["metadata"]["creationTimestamp"], "2024-01-02T03:04:05Z");
        assert_eq!(new["metadata"]["deletionTimestamp"], "2024-03-01T00:00:00Z");
        assert_eq!(new["metadata"]["deletionGracePeriodSeconds"], 30);
        none(&update("Node", old, new));
    }

    #[test]
    fn quantities_given_as_json_numbers() {
        none(&create(
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": 2, "memory": 1073741824}}}]}),
            ),
        ));
        let p = defaulted(
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": 2, "memory": 1073741824}}}]}),
            ),
        );
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["limits"],
            json!({"cpu": "2", "memory": "1073741824"})
        );
        let errs = create(
            "Pod",
            pod_with(json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"memory": -1}}}]})),
        );
        has(
            &errs,
            R_INVALID,
            "spec.containers[0].resources.requests[memory]",
            "Invalid value: \"-1\": must be greater than or equal to 0",
        );
    }

    #[test]
    fn secret_and_event_edge_cases() {
        let errs = create(
            "Secret",
            json!({"metadata": meta("s"), "type": "kubernetes.io/dockercfg", "data": {".dockercfg": base64_encode(b"{")}}),
        );
        has_prefix(
            &errs,
            R_INVALID,
            "data[.dockercfg]",
            "Invalid value: \"<secret contents redacted>\": invalid JSON: ",
        );
        let errs = create(
            "Secret",
            json!({"metadata": meta("s"), "type": "kubernetes.io/ssh-auth", "data": {"ssh-privatekey": ""}}),
        );
        has(&errs, R_REQUIRED, "data[ssh-privatekey]", "Required value");
        let errs = create(
            "Event",
            json!({"metadata": meta("e"), "eventTime": "2024-01-01T00:00:00Z", "involvedObject": {},
            "reportingComponent": "Bad Controller", "reportingInstance": "i", "action": "a", "reason": "r".repeat(129), "message": "m".repeat(1025)}),
        );
        has_prefix(
            &errs,
            R_INVALID,
            "reportingController",
            "Invalid value: \"Bad Controller\": name part must consist of",
        );
        has(
            &errs,
            R_INVALID,
            "reason",
            "Invalid value: \"\": can have at most 128 characters",
        );
        has(
            &errs,
            R_INVALID,
            "message",
            "Invalid value: \"\": can have at most 1024 characters",
        );
        let errs = create("Pod", {
            let mut p = pod();
            p["metadata"]["ownerReferences"] = json!([{"apiVersion": "", "kind": "", "name": "", "uid": "u"}]);
            p
        });
        has(
            &errs,
            R_INVALID,
            "metadata.ownerReferences.apiVersion",
            "Invalid value: \"\": version must not be empty",
        );
        has(
            &errs,
            R_INVALID,
            "metadata.ownerReferences.kind",
            "Invalid value: \"\": kind must not be empty",
        );
        has(
            &errs,
            R_INVALID,
            "metadata.ownerReferences.name",
            "Invalid value: \"\": name must not be empty",
        );
    }

    #[test]
    fn stored_objects_round_trip_through_update() {
        let objs = [
            (
                "Pod",
                json!({"metadata": meta("p"), "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {"limits": {"cpu": "1"}}}]}}),
            ),
            ("Deployment", deployment()),
            ("ReplicaSet", replica_set()),
            (
                "Service",
                service(
                    json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 31000, "ports": [{"port": 80, "nodePort": 30001}], "clusterIP": "10.0.0.9"}),
                ),
            ),
            (
                "Service",
                service(json!({"clusterIP": "None", "ports": [{"port": 80}]})),
            ),
            (
                "Service",
                service(json!({"type": "ExternalName", "externalName": "x.example.com"})),
            ),
            ("Namespace", json!({"metadata": {"name": "ns"}})),
            (
                "Node",
                json!({"metadata": {"name": "n"}, "status": {"capacity": {"cpu": "2"}}}),
            ),
            ("ConfigMap", json!({"metadata": meta("c"), "data": {"a": "b"}})),
            ("Secret", json!({"metadata": meta("s"), "stringData": {"a": "b"}})),
            ("ServiceAccount", json!({"metadata": meta("sa")})),
            (
                "Endpoints",
                json!({"metadata": meta("e"), "subsets": [{"addresses": [{"ip": "10.1.1.1"}], "ports": [{"port": 80}]}]}),
            ),
            (
                "EndpointSlice",
                json!({"metadata": meta("es"), "addressType": "IPv4", "endpoints": [{"addresses": ["10.1.1.1"]}], "ports": [{"port": 80}]}),
            ),
            (
                "Event",
                json!({"metadata": meta("ev"), "involvedObject": {"namespace": "default", "kind": "Pod", "name": "p"}}),
            ),
            ("Lease", json!({"metadata": meta("l"), "spec": {"holderIdentity": "x"}})),
            (
                "Role",
                json!({"metadata": meta("r"), "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
            ),
            (
                "ClusterRole",
                json!({"metadata": {"name": "system:cr"}, "rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}],
                    "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}}),
            ),
            (
                "RoleBinding",
                json!({"metadata": meta("rb"), "roleRef": {"kind": "Role", "name": "r"},
                    "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "sa"}]}),
            ),
            (
                "ClusterRoleBinding",
                json!({"metadata": {"name": "crb"}, "roleRef": {"kind": "ClusterRole", "name": "system:cr"},
                    "subjects": [{"kind": "Group", "name": "system:masters"}]}),
            ),
        ];
        for (kind, obj) in objs {
            let created = defaulted(kind, obj);
            none(&validate_create(kind, &created));
            let old = stored(created);
            let mut new = defaulted(kind, old.clone());
            prepare_update(kind, &old, &mut new);
            assert_eq!(
                new, old,
                "{kind}: defaulting and preparing a stored object changes nothing"
            );
            none(&validate_update(kind, &old, &new));
        }
    }
}
