//! The three patch formats a Kubernetes API server accepts on `PATCH`, as pure functions on
//! [`serde_json::Value`]. The HTTP layer parses the body, calls one of these with the stored
//! object, and turns a [`PatchError`] into a `Status` (400 BadRequest or 422 Invalid).
//!
//! # `application/merge-patch+json` — [`merge_patch`]
//!
//! JSON Merge Patch, RFC 7386: objects in the patch are merged recursively into the target,
//! `null` deletes a member, anything else (arrays included) replaces the target's value. The
//! top-level patch must be an object: upstream answers "Invalid JSON Patch" to a scalar or
//! `null`, and an array would replace the whole Kubernetes object by a non-object.
//!
//! # `application/json-patch+json` — [`json_patch`]
//!
//! JSON Patch, RFC 6902, with JSON Pointers per RFC 6901: `add`, `remove`, `replace`, `move`,
//! `copy` and `test`; `~0`/`~1` escapes; `-` appends to an array; the empty pointer is the
//! whole document. Operations run in order on a copy of the target; the first failure aborts
//! the patch. `test` compares numbers by value (`1` equals `1.0`). The accumulated size of
//! `copy` results is capped at [`MAX_COPY_BYTES`] (3 MiB, as `--json-patch-max-copy-bytes`
//! defaults upstream) so that a few `copy` operations cannot grow a document exponentially.
//! A patch that is not an array of objects is a 400; any failing operation (unknown `op`,
//! missing member, bad pointer, failed `test`) is a 422, as upstream.
//!
//! # `application/strategic-merge-patch+json` — [`strategic_merge_patch`]
//!
//! Kubernetes' strategic merge patch, following the server-side half of
//! `k8s.io/apimachinery/pkg/util/strategicpatch` (`StrategicMergeMapPatch`). Maps merge
//! recursively and `null` deletes a field, like a merge patch; lists are merged according to
//! the `patchStrategy`/`patchMergeKey` tags of the built-in types, which this module carries as
//! a small path-aware schema (the same field name can differ by context: a container's
//! `ports` merge by `containerPort`, a Service's `spec.ports` by `port`):
//!
//! * `metadata` of every known kind: `ownerReferences` by `uid`, `finalizers` as a merged set.
//! * The pod spec (`spec` of a Pod; `spec.template.spec` of a Deployment, ReplicaSet,
//!   DaemonSet, StatefulSet, ReplicationController, Job; `spec.jobTemplate.spec.template.spec`
//!   of a CronJob; `template.spec` of a PodTemplate): `containers`, `initContainers`,
//!   `ephemeralContainers`, `volumes`, `imagePullSecrets`, `resourceClaims`, `schedulingGates`
//!   by `name`; `hostAliases` by `ip`; `topologySpreadConstraints` by `topologyKey`.
//! * Containers: `env` by `name`, `ports` by `containerPort`, `volumeMounts` by `mountPath`,
//!   `volumeDevices` by `devicePath`.
//! * Status: `conditions` by `type` (Pod, Node, Namespace, Service and the workloads), Pod
//!   `podIPs`/`hostIPs` by `ip`, Pod `resourceClaimStatuses` by `name`, Node `addresses` by
//!   `type`; Node `spec.podCIDRs` is a merged set; ServiceAccount `secrets` by `name`; Service
//!   `spec.ports` by `port`.
//! * Every other list (`args`, `command`, `tolerations`, Endpoints `subsets`, ...) is atomic:
//!   the patch's list replaces the target's. A kind this module does not know (anything but
//!   Pod, Deployment, ReplicaSet, DaemonSet, StatefulSet, ReplicationController, Job, CronJob,
//!   PodTemplate, Service, Endpoints, EndpointSlice, Node, Namespace, ConfigMap, Secret,
//!   ServiceAccount, Event, Lease, Role, ClusterRole, RoleBinding, ClusterRoleBinding) has no
//!   merge lists at all, like a merge patch, but its patches still honour the directives below.
//!   (The RBAC kinds are known, but only for their `metadata`: their `rules` and `subjects`
//!   are atomic upstream too.)
//!
//! The patch directives are honoured as upstream applies them:
//!
//! * `$patch: replace` in a map replaces the map by the rest of the patch map; as an element
//!   of a merge list it replaces the whole list by the other elements.
//! * `$patch: delete` in a map empties that map (upstream leaves `{}` at its key; a map that
//!   did not exist is not created); as an element of a merge list it deletes every element
//!   with that merge key.
//! * `$patch: merge` in a map is the default and ignored, as kustomize does (upstream's server
//!   rejects it as an unknown patch type). In a list element it is rejected as upstream does
//!   ("merging lists cannot yet be specified in the patch").
//! * `$setElementOrder/<list>` fixes the order of the merged list with upstream's rule
//!   (`normalizeElementOrder`/`mergeSortedSlice`): the elements it names come in its order,
//!   the target's other elements keep their relative order, and the two runs are merged so
//!   that a target-only element comes before the next named element exactly when that named
//!   element is also in the target and came after it there. Without `$setElementOrder` the
//!   patch list's own order plays its part — so, exactly as upstream, an element new to the
//!   list lands *ahead of* the target's untouched elements that no patched element follows
//!   (live `[a, b]` + patch `[n]` gives `[n, a, b]`). kubectl always sends
//!   `$setElementOrder`, which yields the configured order.
//! * `$retainKeys: [...]` drops every key of the target map not listed (and rejects a patch
//!   that sets a key it does not list).
//! * `$deleteFromPrimitiveList/<list>: [...]` removes those values from a primitive list.
//!
//! Directive keys never reach the result: values the patch brings in whole (a new field, a
//! new list element, an atomic list, a `$patch: replace` map) are cleaned as upstream cleans
//! new fields (`null` members dropped, maps carrying `$patch` dropped) and additionally lose
//! any other directive key. Errors carry upstream's wording ("map: map[...] does not contain
//! declared merge key: name", "unknown patch type: ...", "invalid patch format of retainKeys",
//! ...). Errors about the shape of the patch are 400s (upstream answers the ones it has no
//! sentinel for, such as a missing merge key, with a 500); "lists of lists are not supported"
//! is a 422, as upstream.
//!
//! # Deliberately left out
//!
//! * The client-side half of the strategic-merge-patch package (computing two- and three-way
//!   patches) and server-side apply (`application/apply-patch+yaml`).
//! * Custom resources: upstream refuses strategic merge patch for them (415); the caller should
//!   not route them here (an unknown kind is treated as "all lists atomic").
//! * Upstream's 10 000-operation cap on JSON patches answers 413, which a [`PatchError`] cannot
//!   express: the HTTP layer should count the operations before calling [`json_patch`].
//! * evanphx/json-patch's non-standard extensions: negative array indices and `{'key':'value'}`
//!   lookups in pointers. Indices are RFC 6901's: decimal, no leading zeros.
//! * Upstream quirks that only a nonsensical patch reaches (a panic on `$setElementOrder` for an
//!   atomic list of maps, setting a scalar from a `$deleteFromPrimitiveList` value, an error on
//!   `$setElementOrder` for a list that is empty on both sides) behave sanely here instead.
//!
//! # Limits
//!
//! Patches nested deeper than [`MAX_DEPTH`] levels are refused before any work (400), and a
//! JSON patch may not build a document deeper than that (422), so that a hostile patch cannot
//! exhaust the stack; recursion everywhere else follows the patch's nesting. List merging uses
//! hash maps keyed by merge-key values, so large lists merge in near-linear time.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde_json::{Map, Value};

/// Deepest nesting of arrays and objects accepted in a patch document (and, for JSON patch,
/// in the document it builds).
pub const MAX_DEPTH: usize = 100;

/// Upper bound on the total serialized size of the values `copy` operations of one JSON patch
/// may duplicate (upstream `--json-patch-max-copy-bytes` default).
pub const MAX_COPY_BYTES: usize = 3 * 1024 * 1024;

/// A patch that cannot be applied. `message` is what goes into the Kubernetes Status
/// (the apiserver answers 422 Invalid or 400 BadRequest with it, as upstream does).
#[derive(Debug, Clone, PartialEq)]
pub struct PatchError {
    /// Human-readable reason, worded like upstream's.
    pub message: String,
    /// true → 400 BadRequest (malformed patch document), false → 422 (e.g. a JSON patch
    /// `test` failed or a path is missing).
    pub bad_request: bool,
}

impl PatchError {
    fn bad_request(message: impl Into<String>) -> Self {
        PatchError {
            message: message.into(),
            bad_request: true,
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        PatchError {
            message: message.into(),
            bad_request: false,
        }
    }
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PatchError {}

type Result<T> = std::result::Result<T, PatchError>;
type Object = Map<String, Value>;

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// Nesting depth of `v` (a scalar is 0, `[]` and `{}` are 1), computed without recursion.
fn depth_of(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(m) => stack.extend(m.values().map(|x| (x, d + 1))),
            _ => {}
        }
        if d > MAX_DEPTH {
            // Deep enough to refuse; no need to walk the rest.
            break;
        }
    }
    deepest
}

/// Refuses a patch document nested deeper than [`MAX_DEPTH`].
fn check_patch_depth(patch: &Value) -> Result<()> {
    if depth_of(patch) > MAX_DEPTH {
        return Err(PatchError::bad_request(format!(
            "invalid JSON document: the patch is nested more than {MAX_DEPTH} levels deep"
        )));
    }
    Ok(())
}

/// Guard for the recursive walks (the up-front depth check already bounds them).
fn check_recursion(depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(PatchError::bad_request(format!(
            "invalid JSON document: the patch is nested more than {MAX_DEPTH} levels deep"
        )));
    }
    Ok(())
}

/// Longest dump of a value that goes into an error message.
const MAX_DUMP: usize = 1024;

/// Formats `v` the way Go's `%v` prints decoded JSON (`map[k:v]`, `[a b]`, `<nil>`), which is
/// how upstream's error messages show patch fragments. Long dumps are cut short.
fn go_fmt(v: &Value) -> String {
    let mut out = String::new();
    write_go(v, &mut out);
    if out.len() > MAX_DUMP {
        let mut cut = MAX_DUMP;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

fn go_fmt_map(m: &Object) -> String {
    let mut out = String::new();
    write_go_map(m, &mut out);
    if out.len() > MAX_DUMP {
        return go_fmt(&Value::Object(m.clone()));
    }
    out
}

fn write_go(v: &Value, out: &mut String) {
    if out.len() > MAX_DUMP {
        return;
    }
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => out.push_str(s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_go(x, out);
                if out.len() > MAX_DUMP {
                    return;
                }
            }
            out.push(']');
        }
        Value::Object(m) => write_go_map(m, out),
    }
}

fn write_go_map(m: &Object, out: &mut String) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    out.push_str("map[");
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(k);
        out.push(':');
        if let Some(v) = m.get(k) {
            write_go(v, out);
        }
        if out.len() > MAX_DUMP {
            return;
        }
    }
    out.push(']');
}

/// Go's name for the type `encoding/json` decodes `v` into (for "expected a X, but received a Y").
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// JSON's name for the type of `v` (for Go's "cannot unmarshal X into ..." messages).
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

// ---------------------------------------------------------------------------------------------
// JSON Merge Patch (RFC 7386)
// ---------------------------------------------------------------------------------------------

/// application/merge-patch+json (RFC 7386).
///
/// The patch must be a JSON object (anything else is a 400 "Invalid JSON Patch", as
/// upstream); a target that is not an object is patched as if it were `{}`.
///
/// # Errors
///
/// A 400 ([`PatchError`] with `bad_request` true) when the patch is not an object or is nested more
/// than [`MAX_DEPTH`] levels deep.
pub fn merge_patch(target: &Value, patch: &Value) -> std::result::Result<Value, PatchError> {
    let patch_value = patch;
    let Value::Object(patch) = patch else {
        return Err(PatchError::bad_request(format!(
            "Invalid JSON Patch: a merge patch must be a JSON object, not {}",
            json_type(patch)
        )));
    };
    check_patch_depth(patch_value)?;
    let base = match target {
        Value::Object(m) => m.clone(),
        _ => Object::new(),
    };
    Ok(Value::Object(merge_objects(base, patch)))
}

/// RFC 7386 `MergePatch` for an object patch; recursion follows the (depth-checked) patch.
fn merge_objects(mut target: Object, patch: &Object) -> Object {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(sub_patch) => {
                let base = match target.get_mut(key).map(Value::take) {
                    Some(Value::Object(m)) => m,
                    _ => Object::new(),
                };
                target.insert(key.clone(), Value::Object(merge_objects(base, sub_patch)));
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
    target
}

// ---------------------------------------------------------------------------------------------
// JSON Patch (RFC 6902) and JSON Pointer (RFC 6901)
// ---------------------------------------------------------------------------------------------

/// application/json-patch+json (RFC 6902): add, remove, replace, move, copy, test; JSON pointers
/// with ~0/~1 escapes and "-" for append.
///
/// # Errors
///
/// A 400 when the patch is not an array of objects or is nested more than [`MAX_DEPTH`] levels
/// deep; a 422 when an operation fails (unknown `op`, missing member, unresolvable pointer,
/// failed `test`, copy size or result depth over the limits). Nothing is applied then.
pub fn json_patch(target: &Value, patch: &Value) -> std::result::Result<Value, PatchError> {
    let Value::Array(ops) = patch else {
        return Err(PatchError::bad_request(format!(
            "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
            json_type(patch)
        )));
    };
    if let Some(bad) = ops.iter().find(|op| !op.is_object()) {
        return Err(PatchError::bad_request(format!(
            "json: cannot unmarshal {} into Go value of type jsonpatch.Operation",
            json_type(bad)
        )));
    }
    check_patch_depth(patch)?;
    let mut doc = target.clone();
    let mut copied = 0usize;
    for op in ops {
        if let Value::Object(op) = op {
            apply_operation(&mut doc, op, &mut copied)?;
        }
    }
    Ok(doc)
}

/// Why a pointer did not lead where an operation needed it to.
#[derive(Debug)]
enum PointerError {
    /// A member or element on the way (or at the end) does not exist.
    Missing,
    /// An object member to remove does not exist.
    NoKey(String),
    /// A token used on an array is not an RFC 6901 index.
    BadIndex(String),
    /// An index past the end of an array.
    OutOfRange(usize),
    /// `remove` of the whole document.
    Root,
}

impl fmt::Display for PointerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PointerError::Missing => f.write_str("missing value"),
            PointerError::NoKey(k) => write!(f, "Unable to remove nonexistent key: {k}: missing value"),
            PointerError::BadIndex(t) => write!(f, "value was not a proper array index: '{t}'"),
            PointerError::OutOfRange(i) => {
                write!(f, "Unable to access invalid index: {i}: invalid index referenced")
            }
            PointerError::Root => f.write_str("the document root cannot be removed"),
        }
    }
}

/// Splits an RFC 6901 pointer into unescaped reference tokens.
fn parse_pointer(pointer: &str) -> std::result::Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!("JSON pointer {pointer:?} must be empty or start with \"/\""));
    };
    rest.split('/')
        .map(|token| {
            if !token.contains('~') {
                return Ok(token.to_owned());
            }
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => return Err(format!("JSON pointer {pointer:?} has an invalid escape sequence")),
                }
            }
            Ok(out)
        })
        .collect()
}

/// An RFC 6901 array index: `0` or digits without a leading zero; `-` (one past the end)
/// only where `allow_end` (the last token of `add`). Must be `< len`, or `<= len` with
/// `allow_end`.
fn array_index(token: &str, len: usize, allow_end: bool) -> std::result::Result<usize, PointerError> {
    if token == "-" {
        return if allow_end {
            Ok(len)
        } else {
            Err(PointerError::BadIndex(token.to_owned()))
        };
    }
    let well_formed =
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) && (token == "0" || !token.starts_with('0'));
    if !well_formed {
        return Err(PointerError::BadIndex(token.to_owned()));
    }
    let index: usize = token.parse().map_err(|_| PointerError::BadIndex(token.to_owned()))?;
    let limit = if allow_end { len + 1 } else { len };
    if index >= limit {
        return Err(PointerError::OutOfRange(index));
    }
    Ok(index)
}

fn resolve<'a>(doc: &'a Value, tokens: &[String]) -> std::result::Result<&'a Value, PointerError> {
    let mut cur = doc;
    for token in tokens {
        cur = match cur {
            Value::Object(m) => m.get(token).ok_or(PointerError::Missing)?,
            Value::Array(a) => &a[array_index(token, a.len(), false)?],
            _ => return Err(PointerError::Missing),
        };
    }
    Ok(cur)
}

fn resolve_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> std::result::Result<&'a mut Value, PointerError> {
    let mut cur = doc;
    for token in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(token).ok_or(PointerError::Missing)?,
            Value::Array(a) => {
                let i = array_index(token, a.len(), false)?;
                &mut a[i]
            }
            _ => return Err(PointerError::Missing),
        };
    }
    Ok(cur)
}

fn pointer_add(doc: &mut Value, tokens: &[String], value: Value) -> std::result::Result<(), PointerError> {
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match resolve_mut(doc, parents)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true)?;
            a.insert(i, value);
        }
        _ => return Err(PointerError::Missing),
    }
    Ok(())
}

fn pointer_remove(doc: &mut Value, tokens: &[String]) -> std::result::Result<Value, PointerError> {
    let Some((last, parents)) = tokens.split_last() else {
        return Err(PointerError::Root);
    };
    match resolve_mut(doc, parents)? {
        Value::Object(m) => m.remove(last).ok_or_else(|| PointerError::NoKey(last.clone())),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(PointerError::Missing),
    }
}

/// RFC 6902 equality: numbers by value, objects regardless of member order.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(i), Some(j), _, _) => i == j,
            (_, _, Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Serialized size of `v`, without building the string.
fn serialized_len(v: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a `Value` into a writer that never fails cannot fail; if it somehow did, the
    // bytes counted so far are still a lower bound.
    let _ = serde_json::to_writer(&mut counter, v);
    counter.0
}

/// Refuses to put `value` where it would make the document deeper than [`MAX_DEPTH`].
fn check_nesting(op: &str, path: &str, tokens: &[String], value: &Value) -> Result<()> {
    if tokens.len() + depth_of(value) > MAX_DEPTH {
        return Err(PatchError::invalid(format!(
            "{op} operation does not apply: the value at {path:?} would nest the document more than \
             {MAX_DEPTH} levels deep"
        )));
    }
    Ok(())
}

/// The `value` member of an operation that needs one.
fn op_value<'a>(op: &'a Object, kind: &str) -> Result<&'a Value> {
    op.get("value")
        .ok_or_else(|| PatchError::invalid(format!("{kind} operation, missing value field")))
}

/// The `from` member of a `move` or `copy`, and its tokens.
fn op_from<'a>(op: &'a Object, kind: &str) -> Result<(&'a str, Vec<String>)> {
    let from = op
        .get("from")
        .and_then(Value::as_str)
        .ok_or_else(|| PatchError::invalid(format!("{kind} operation failed to decode from")))?;
    let tokens =
        parse_pointer(from).map_err(|e| PatchError::invalid(format!("{kind} operation does not apply: {e}")))?;
    Ok((from, tokens))
}

fn apply_operation(doc: &mut Value, op: &Object, copied: &mut usize) -> Result<()> {
    let kind = op.get("op").and_then(Value::as_str).unwrap_or("unknown");
    if !matches!(kind, "add" | "remove" | "replace" | "move" | "copy" | "test") {
        return Err(PatchError::invalid(format!("Unexpected kind: {kind}")));
    }
    let path = op
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| PatchError::invalid(format!("{kind} operation failed to decode path")))?;
    let tokens =
        parse_pointer(path).map_err(|e| PatchError::invalid(format!("{kind} operation does not apply: {e}")))?;
    let value = || op_value(op, kind);
    let from = || op_from(op, kind);
    let missing_path = |e: PointerError| {
        PatchError::invalid(format!(
            "{kind} operation does not apply: doc is missing path: {path:?}: {e}"
        ))
    };

    match kind {
        "add" => {
            let value = value()?;
            check_nesting(kind, path, &tokens, value)?;
            pointer_add(doc, &tokens, value.clone()).map_err(missing_path)
        }
        "remove" => pointer_remove(doc, &tokens).map(drop).map_err(missing_path),
        "replace" => {
            let value = value()?;
            check_nesting(kind, path, &tokens, value)?;
            let slot = resolve_mut(doc, &tokens).map_err(|e| {
                PatchError::invalid(format!(
                    "replace operation does not apply: doc is missing key: {path}: {e}"
                ))
            })?;
            *slot = value.clone();
            Ok(())
        }
        "test" => {
            let expected = value()?;
            let actual = resolve(doc, &tokens).map_err(|e| {
                PatchError::invalid(format!("test operation does not apply: is missing path: {path}: {e}"))
            })?;
            if json_equal(actual, expected) {
                Ok(())
            } else {
                Err(PatchError::invalid(format!("testing value {path} failed: test failed")))
            }
        }
        "move" => {
            let (from_path, from_tokens) = from()?;
            let missing_from = |e: PointerError| {
                PatchError::invalid(format!(
                    "move operation does not apply: doc is missing from path: {from_path}: {e}"
                ))
            };
            if from_tokens == tokens {
                return resolve(doc, &from_tokens).map(drop).map_err(missing_from);
            }
            if tokens.len() > from_tokens.len() && tokens.starts_with(&from_tokens) {
                return Err(PatchError::invalid(format!(
                    "move operation does not apply: {from_path} cannot be moved into its own child {path}"
                )));
            }
            let moved = pointer_remove(doc, &from_tokens).map_err(missing_from)?;
            check_nesting(kind, path, &tokens, &moved)?;
            pointer_add(doc, &tokens, moved).map_err(|e| {
                PatchError::invalid(format!(
                    "move operation does not apply: doc is missing destination path: {path}: {e}"
                ))
            })
        }
        _ => {
            // "copy"
            let (from_path, from_tokens) = from()?;
            let source = resolve(doc, &from_tokens).map_err(|e| {
                PatchError::invalid(format!(
                    "copy operation does not apply: doc is missing from path: {from_path}: {e}"
                ))
            })?;
            *copied = copied.saturating_add(serialized_len(source));
            if *copied > MAX_COPY_BYTES {
                return Err(PatchError::invalid(format!(
                    "Unable to complete the copy, the accumulated size increase of copy is {}, exceeding the limit {}",
                    *copied, MAX_COPY_BYTES
                )));
            }
            check_nesting(kind, path, &tokens, source)?;
            let duplicate = source.clone();
            pointer_add(doc, &tokens, duplicate).map_err(|e| {
                PatchError::invalid(format!(
                    "copy operation does not apply: doc is missing destination path: {path}: {e}"
                ))
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch: the schema of the built-in kinds
// ---------------------------------------------------------------------------------------------

/// A node of the built-in types' schema, as far as strategic merge patch cares: which of its
/// fields are merge lists, and the type of its map-valued and list-element fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    /// No metadata: maps merge, lists are atomic.
    Free,
    /// The top level of an object of a known kind.
    Root(Kind),
    ObjectMeta,
    PodTemplateSpec,
    JobTemplateSpec,
    /// A spec with a pod `template` (Deployment, ReplicaSet, DaemonSet, StatefulSet,
    /// ReplicationController, Job).
    WorkloadSpec,
    CronJobSpec,
    PodSpec,
    /// Container, init container, ephemeral container.
    Container,
    PodStatus,
    /// A status whose `conditions` merge by `type`.
    ConditionsStatus,
    ServiceSpec,
    NodeSpec,
    NodeStatus,
}

/// Known kinds, grouped by the shape of their top level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pod,
    Workload,
    CronJob,
    PodTemplate,
    Service,
    Node,
    Namespace,
    ServiceAccount,
    /// Kinds with no merge list outside `metadata`.
    MetadataOnly,
}

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// Replaced whole by the patch's list.
    Atomic,
    /// `patchStrategy:"merge"`; the merge key, or "" for a list of primitives (a set).
    Merge(&'static str),
}

impl ListStrategy {
    fn merge_key(self) -> &'static str {
        match self {
            ListStrategy::Atomic => "",
            ListStrategy::Merge(key) => key,
        }
    }
}

fn root_type(kind: &str) -> Ty {
    match kind {
        "Pod" => Ty::Root(Kind::Pod),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "ReplicationController" | "Job" => {
            Ty::Root(Kind::Workload)
        }
        "CronJob" => Ty::Root(Kind::CronJob),
        "PodTemplate" => Ty::Root(Kind::PodTemplate),
        "Service" => Ty::Root(Kind::Service),
        "Node" => Ty::Root(Kind::Node),
        "Namespace" => Ty::Root(Kind::Namespace),
        "ServiceAccount" => Ty::Root(Kind::ServiceAccount),
        // RBAC: `rules`, `subjects` and `aggregationRule.clusterRoleSelectors` carry no patchStrategy upstream
        // (atomic lists); `roleRef` is a plain struct.
        "Endpoints" | "EndpointSlice" | "ConfigMap" | "Secret" | "Event" | "Lease" | "Role" | "ClusterRole"
        | "RoleBinding" | "ClusterRoleBinding" => Ty::Root(Kind::MetadataOnly),
        _ => Ty::Free,
    }
}

/// The type of field `name` of `ty` (for a list: of its elements) and how it merges if it is a
/// list. Mirrors the `patchStrategy`/`patchMergeKey` tags of k8s.io/api.
fn lookup(ty: Ty, name: &str) -> (Ty, ListStrategy) {
    use ListStrategy::{Atomic, Merge};
    let free = (Ty::Free, Atomic);
    match ty {
        Ty::Free => free,
        Ty::Root(kind) => match (kind, name) {
            (_, "metadata") => (Ty::ObjectMeta, Atomic),
            (Kind::Pod, "spec") => (Ty::PodSpec, Atomic),
            (Kind::Pod, "status") => (Ty::PodStatus, Atomic),
            (Kind::Workload, "spec") => (Ty::WorkloadSpec, Atomic),
            (Kind::Workload | Kind::Service | Kind::Namespace, "status") => (Ty::ConditionsStatus, Atomic),
            (Kind::CronJob, "spec") => (Ty::CronJobSpec, Atomic),
            (Kind::PodTemplate, "template") => (Ty::PodTemplateSpec, Atomic),
            (Kind::Service, "spec") => (Ty::ServiceSpec, Atomic),
            (Kind::Node, "spec") => (Ty::NodeSpec, Atomic),
            (Kind::Node, "status") => (Ty::NodeStatus, Atomic),
            (Kind::ServiceAccount, "secrets") => (Ty::Free, Merge("name")),
            _ => free,
        },
        Ty::ObjectMeta => match name {
            "ownerReferences" => (Ty::Free, Merge("uid")),
            "finalizers" => (Ty::Free, Merge("")),
            _ => free,
        },
        Ty::PodTemplateSpec => match name {
            "metadata" => (Ty::ObjectMeta, Atomic),
            "spec" => (Ty::PodSpec, Atomic),
            _ => free,
        },
        Ty::JobTemplateSpec => match name {
            "metadata" => (Ty::ObjectMeta, Atomic),
            "spec" => (Ty::WorkloadSpec, Atomic),
            _ => free,
        },
        Ty::WorkloadSpec => match name {
            "template" => (Ty::PodTemplateSpec, Atomic),
            _ => free,
        },
        Ty::CronJobSpec => match name {
            "jobTemplate" => (Ty::JobTemplateSpec, Atomic),
            _ => free,
        },
        Ty::PodSpec => match name {
            "containers" | "initContainers" | "ephemeralContainers" => (Ty::Container, Merge("name")),
            "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates" => (Ty::Free, Merge("name")),
            "hostAliases" => (Ty::Free, Merge("ip")),
            "topologySpreadConstraints" => (Ty::Free, Merge("topologyKey")),
            _ => free,
        },
        Ty::Container => match name {
            "env" => (Ty::Free, Merge("name")),
            "ports" => (Ty::Free, Merge("containerPort")),
            "volumeMounts" => (Ty::Free, Merge("mountPath")),
            "volumeDevices" => (Ty::Free, Merge("devicePath")),
            _ => free,
        },
        Ty::PodStatus => match name {
            "conditions" => (Ty::Free, Merge("type")),
            "podIPs" | "hostIPs" => (Ty::Free, Merge("ip")),
            "resourceClaimStatuses" => (Ty::Free, Merge("name")),
            _ => free,
        },
        Ty::ConditionsStatus => match name {
            "conditions" => (Ty::Free, Merge("type")),
            _ => free,
        },
        Ty::ServiceSpec => match name {
            "ports" => (Ty::Free, Merge("port")),
            _ => free,
        },
        Ty::NodeSpec => match name {
            "podCIDRs" => (Ty::Free, Merge("")),
            _ => free,
        },
        Ty::NodeStatus => match name {
            "conditions" | "addresses" => (Ty::Free, Merge("type")),
            _ => free,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch: the merge
// ---------------------------------------------------------------------------------------------

const DIRECTIVE_MARKER: &str = "$patch";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList";

const ERR_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const ERR_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const ERR_SET_ELEMENT_ORDER: &str = "invalid patch format of setElementOrder list";

/// application/strategic-merge-patch+json for the built-in kinds. `kind` is the object's kind
/// (see the module documentation for the kinds with merge lists); any other kind has every list
/// atomic, as a merge patch would, but its patches still honour the directives.
///
/// # Errors
///
/// A 400 for a malformed patch (not an object, too deep, a merge-list element without its merge
/// key, an unknown `$patch` value, a malformed `$retainKeys`, `$setElementOrder` or
/// `$deleteFromPrimitiveList`, mixed element types); a 422 for lists of lists or a target that
/// is not an object.
pub fn strategic_merge_patch(kind: &str, target: &Value, patch: &Value) -> std::result::Result<Value, PatchError> {
    let Value::Object(patch_map) = patch else {
        return Err(PatchError::bad_request(format!(
            "invalid JSON document: a strategic merge patch must be a JSON object, not {}",
            json_type(patch)
        )));
    };
    check_patch_depth(patch)?;
    let Value::Object(original) = target else {
        return Err(PatchError::invalid(
            "invalid JSON document: the object to patch is not a JSON object",
        ));
    };
    let merged = merge_map(original.clone(), patch_map.clone(), root_type(kind), 0)?;
    Ok(Value::Object(merged))
}

fn is_directive_key(key: &str) -> bool {
    key == DIRECTIVE_MARKER
        || key == RETAIN_KEYS_DIRECTIVE
        || key.starts_with(SET_ELEMENT_ORDER_PREFIX)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
}

/// A map carrying a (non-null) `$patch`.
fn has_directive_marker(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.get(DIRECTIVE_MARKER).is_some_and(|d| !d.is_null()))
}

fn is_delete_directive(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.get(DIRECTIVE_MARKER).and_then(Value::as_str) == Some("delete"))
}

/// Cleans a value the patch brings in whole (upstream's `discardNullValuesFromPatch` and
/// `removeDirectives`): `null` members go, a map carrying `$patch` goes entirely (`None`) —
/// but for the no-op `$patch: merge` — and other directive keys are dropped too. `null` list
/// elements stay.
fn sanitize(v: Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.get(DIRECTIVE_MARKER)
                .is_some_and(|d| !d.is_null() && d.as_str() != Some("merge"))
            {
                return None;
            }
            Some(Value::Object(sanitize_map(m)))
        }
        Value::Array(a) => Some(Value::Array(sanitize_list(a))),
        other => Some(other),
    }
}

fn sanitize_map(m: Object) -> Object {
    m.into_iter()
        .filter(|(k, v)| !v.is_null() && !is_directive_key(k))
        .filter_map(|(k, v)| sanitize(v).map(|v| (k, v)))
        .collect()
}

fn sanitize_list(a: Vec<Value>) -> Vec<Value> {
    a.into_iter().filter_map(sanitize).collect()
}

fn no_merge_key(m: &Object, key: &str) -> PatchError {
    PatchError::bad_request(format!(
        "map: {} does not contain declared merge key: {key}",
        go_fmt_map(m)
    ))
}

fn bad_arg_type(expected: &str, actual: &Value) -> PatchError {
    PatchError::bad_request(format!("expected a {expected}, but received a {}", go_type(actual)))
}

/// The value an element is identified by: its merge key's value, or itself in a list without a
/// merge key.
fn key_of<'a>(item: &'a Value, merge_key: &str) -> Result<&'a Value> {
    if merge_key.is_empty() {
        return Ok(item);
    }
    let Value::Object(m) = item else {
        return Err(bad_arg_type("map[string]interface {}", item));
    };
    m.get(merge_key).ok_or_else(|| no_merge_key(m, merge_key))
}

/// A hashable rendering of an identifying value (equal exactly when the values are equal).
fn key_string(v: &Value) -> String {
    v.to_string()
}

fn keys_of(items: &[Value], merge_key: &str) -> Result<Vec<String>> {
    items
        .iter()
        .map(|item| key_of(item, merge_key).map(key_string))
        .collect()
}

/// Position of each key's first occurrence.
fn first_positions(keys: &[String]) -> HashMap<&str, usize> {
    let mut positions = HashMap::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        positions.entry(k.as_str()).or_insert(i);
    }
    positions
}

/// The element types of JSON lists, as Go's decoder would type them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElemKind {
    Object,
    String,
    Int,
    Float,
    Bool,
    Null,
}

/// Upstream's `sliceElementType`: the common element type of the lists, `None` if they are
/// all empty; lists of lists and mixed element types are refused.
fn element_kind(lists: &[&[Value]]) -> Result<Option<ElemKind>> {
    let mut kind = None;
    for item in lists.iter().flat_map(|l| l.iter()) {
        let this = match item {
            Value::Array(_) => return Err(PatchError::invalid("lists of lists are not supported")),
            Value::Object(_) => ElemKind::Object,
            Value::String(_) => ElemKind::String,
            Value::Number(n) if n.is_f64() => ElemKind::Float,
            Value::Number(_) => ElemKind::Int,
            Value::Bool(_) => ElemKind::Bool,
            Value::Null => ElemKind::Null,
        };
        match kind {
            None => kind = Some(this),
            Some(k) if k != this => {
                let all: Vec<Value> = lists.iter().map(|l| Value::Array(l.to_vec())).collect();
                return Err(PatchError::bad_request(format!(
                    "list element types are not identical: {}",
                    go_fmt(&Value::Array(all))
                )));
            }
            Some(_) => {}
        }
    }
    Ok(kind)
}

/// Merges `patch` into `original` (both maps at type `ty`); upstream's `mergeMap`.
fn merge_map(mut original: Object, mut patch: Object, ty: Ty, depth: usize) -> Result<Object> {
    check_recursion(depth)?;
    if let Some(directive) = patch.get(DIRECTIVE_MARKER) {
        match directive.as_str() {
            Some("replace") => {
                patch.remove(DIRECTIVE_MARKER);
                return Ok(sanitize_map(patch));
            }
            Some("delete") => return Ok(Object::new()),
            Some("merge") => {
                patch.remove(DIRECTIVE_MARKER);
            }
            _ => {
                let shown = match directive {
                    Value::String(s) => s.clone(),
                    other => go_fmt(other),
                };
                return Err(PatchError::bad_request(format!(
                    "unknown patch type: {shown} in map: {}",
                    go_fmt_map(&patch)
                )));
            }
        }
    }

    apply_retain_keys(&mut original, &mut patch)?;
    apply_element_orders(&mut original, &mut patch, ty, depth)?;

    for (key, patch_value) in patch {
        if let Some(rest) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
            let Some(field) = rest.strip_prefix('/') else {
                return Err(PatchError::bad_request(ERR_PRIMITIVE_LIST));
            };
            let Value::Array(to_delete) = patch_value else {
                return Err(PatchError::bad_request(ERR_PRIMITIVE_LIST));
            };
            if let Some(Value::Array(current)) = original.get_mut(field) {
                let (elem_ty, strategy) = lookup(ty, field);
                let list = std::mem::take(current);
                *current = merge_slice(list, to_delete, elem_ty, strategy.merge_key(), true, field, depth + 1)?;
            }
            continue;
        }

        if patch_value.is_null() {
            original.remove(&key);
            continue;
        }
        let Some(current) = original.get_mut(&key) else {
            if let Some(clean) = sanitize(patch_value) {
                original.insert(key, clean);
            }
            continue;
        };
        let (sub_ty, strategy) = lookup(ty, &key);
        let mut drop_field = false;
        match (current, patch_value) {
            (Value::Object(cur), Value::Object(sub_patch)) => {
                let base = std::mem::take(cur);
                *cur = merge_map(base, sub_patch, sub_ty, depth + 1)?;
            }
            (Value::Array(cur), Value::Array(list)) => {
                *cur = match strategy {
                    ListStrategy::Merge(merge_key) => {
                        let base = std::mem::take(cur);
                        merge_slice(base, list, sub_ty, merge_key, false, &key, depth + 1)?
                    }
                    ListStrategy::Atomic => sanitize_list(list),
                };
            }
            (cur, other) => match sanitize(other) {
                Some(clean) => *cur = clean,
                None => drop_field = true,
            },
        }
        if drop_field {
            original.remove(&key);
        }
    }
    Ok(original)
}

/// `$retainKeys`: keep only the listed keys of `original`; every key the patch sets must be
/// listed.
fn apply_retain_keys(original: &mut Object, patch: &mut Object) -> Result<()> {
    let Some(retain) = patch.remove(RETAIN_KEYS_DIRECTIVE) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(PatchError::bad_request(ERR_RETAIN_KEYS));
    };
    let keep: HashSet<&str> = retain.iter().filter_map(Value::as_str).collect();
    let unlisted = patch.iter().any(|(k, v)| {
        !v.is_null()
            && !k.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
            && !k.starts_with(SET_ELEMENT_ORDER_PREFIX)
            && !keep.contains(k.as_str())
    });
    if unlisted {
        return Err(PatchError::bad_request(ERR_RETAIN_KEYS));
    }
    original.retain(|k, _| keep.contains(k.as_str()));
    Ok(())
}

/// Upstream's `mergePatchIntoOriginal`: merges every list that has a `$setElementOrder` and puts
/// it in that order; both the directive and the list leave the patch.
fn apply_element_orders(original: &mut Object, patch: &mut Object, ty: Ty, depth: usize) -> Result<()> {
    let directives: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER_PREFIX))
        .cloned()
        .collect();
    for directive in directives {
        let Some(order) = patch.remove(&directive) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(bad_arg_type("[]interface {}", &order));
        };
        let Some(field) = directive
            .strip_prefix(SET_ELEMENT_ORDER_PREFIX)
            .and_then(|rest| rest.strip_prefix('/'))
            .map(str::to_owned)
        else {
            return Err(PatchError::bad_request(ERR_SET_ELEMENT_ORDER));
        };

        let original_list = match original.get_mut(&field) {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(std::mem::take(a)),
            Some(other) => return Err(bad_arg_type("[]interface {}", other)),
        };
        let patch_list = match patch.remove(&field) {
            None => None,
            Some(Value::Array(a)) => Some(a),
            Some(other) => return Err(bad_arg_type("[]interface {}", &other)),
        };
        let (elem_ty, strategy) = lookup(ty, &field);
        let merge_key = strategy.merge_key();
        validate_order(patch_list.as_deref().unwrap_or_default(), &order, merge_key)?;
        let kind = element_kind(&[
            original_list.as_deref().unwrap_or_default(),
            patch_list.as_deref().unwrap_or_default(),
        ])?;
        let server_keys = match &original_list {
            Some(list) => keys_of(list, merge_key)?,
            None => Vec::new(),
        };

        let merged = match (original_list, patch_list) {
            (None, None) => continue,
            (Some(list), None) => list,
            (None, Some(list)) => sanitize_list(list),
            (Some(list), Some(patch_list)) => match strategy {
                ListStrategy::Merge(_) => merge_slice(list, patch_list, elem_ty, merge_key, false, &field, depth + 1)?,
                ListStrategy::Atomic => sanitize_list(patch_list),
            },
        };
        let ordered = if kind.is_some() {
            let order_keys = keys_of(&order, merge_key)?;
            order_merged(merged, &order_keys, &server_keys, merge_key)?
        } else {
            merged
        };
        original.insert(field, Value::Array(ordered));
    }
    Ok(())
}

/// Upstream's `validatePatchWithSetOrderList`: the patch list's elements (but for directive
/// elements) must appear in `$setElementOrder` in the same relative order.
fn validate_order(patch_list: &[Value], order: &[Value], merge_key: &str) -> Result<()> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let mut candidates = Vec::with_capacity(patch_list.len());
    for item in patch_list {
        if !merge_key.is_empty() {
            if !item.is_object() {
                return Err(bad_arg_type("map[string]interface {}", item));
            }
            if is_delete_directive(item) {
                continue;
            }
        }
        candidates.push(item);
    }
    let (mut p, mut o) = (0, 0);
    while p < candidates.len() && o < order.len() {
        if has_directive_marker(candidates[p]) {
            p += 1;
            continue;
        }
        let equal = if merge_key.is_empty() {
            candidates[p] == &order[o]
        } else {
            let Value::Object(ordered) = &order[o] else {
                return Err(bad_arg_type("map[string]interface {}", &order[o]));
            };
            let left = key_of(candidates[p], merge_key)?;
            let right = ordered.get(merge_key).ok_or_else(|| no_merge_key(ordered, merge_key))?;
            left == right
        };
        if equal {
            p += 1;
        }
        o += 1;
    }
    if p < candidates.len() && o >= order.len() {
        return Err(PatchError::bad_request(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER_PREFIX} list:\n{}\n",
            go_fmt(&Value::Array(patch_list.to_vec())),
            go_fmt(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}

/// Merges two lists of a merge list field (or applies a `$deleteFromPrimitiveList`); upstream's
/// `mergeSlice`.
fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    elem_ty: Ty,
    merge_key: &str,
    delete_list: bool,
    field: &str,
    depth: usize,
) -> Result<Vec<Value>> {
    check_recursion(depth)?;
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let kind = element_kind(&[original.as_slice(), patch.as_slice()])?;

    if kind != Some(ElemKind::Object) {
        if delete_list {
            let doomed: HashSet<String> = patch.iter().map(key_string).collect();
            return Ok(original
                .into_iter()
                .filter(|v| !doomed.contains(&key_string(v)))
                .collect());
        }
        let server_keys = keys_of(&original, merge_key)?;
        let patch_keys = keys_of(&patch, merge_key)?;
        let mut seen = HashSet::new();
        let merged: Vec<Value> = original
            .into_iter()
            .chain(patch)
            .filter(|v| seen.insert(key_string(v)))
            .collect();
        return order_merged(merged, &patch_keys, &server_keys, merge_key);
    }

    if merge_key.is_empty() {
        return Err(PatchError::bad_request(format!(
            "cannot merge lists without merge key for {field}"
        )));
    }
    let (original, patch) = split_special_elements(original, patch, merge_key)?;
    let server_keys = keys_of(&original, merge_key)?;
    let patch_keys = keys_of(&patch, merge_key)?;
    let merged = merge_elements(original, patch, &patch_keys, merge_key, elem_ty, depth)?;
    order_merged(merged, &patch_keys, &server_keys, merge_key)
}

/// Upstream's `mergeSliceWithSpecialElements`: applies the `$patch` elements of a merge list.
/// Returns the new original and the patch without its directive elements (empty after a
/// `$patch: replace`, whose list becomes the original).
fn split_special_elements(
    original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut doomed = HashSet::new();
    let mut replace = false;
    for item in patch {
        let Value::Object(m) = &item else {
            return Err(bad_arg_type("map[string]interface {}", &item));
        };
        let Some(directive) = m.get(DIRECTIVE_MARKER) else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let key = m.get(merge_key).ok_or_else(|| no_merge_key(m, merge_key))?;
                doomed.insert(key_string(key));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(PatchError::bad_request(
                    "merging lists cannot yet be specified in the patch",
                ));
            }
            _ => {
                let shown = match directive {
                    Value::String(s) => s.clone(),
                    other => go_fmt(other),
                };
                return Err(PatchError::bad_request(format!(
                    "unknown patch type: {shown} in map: {}",
                    go_fmt_map(m)
                )));
            }
        }
    }
    if replace {
        return Ok((sanitize_list(plain), Vec::new()));
    }
    if doomed.is_empty() {
        return Ok((original, plain));
    }
    let kept = original
        .into_iter()
        .filter(|item| {
            let key = match item {
                Value::Object(m) => m.get(merge_key),
                _ => None,
            };
            !key.is_some_and(|k| doomed.contains(&key_string(k)))
        })
        .collect();
    Ok((kept, plain))
}

/// Upstream's `mergeSliceWithoutSpecialElements`: each patch element merges into the first
/// element with the same merge key, or is appended (later patch elements with that key then
/// merge into it).
fn merge_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    patch_keys: &[String],
    merge_key: &str,
    elem_ty: Ty,
    depth: usize,
) -> Result<Vec<Value>> {
    let mut index: HashMap<String, usize> = HashMap::with_capacity(original.len() + patch.len());
    for (i, item) in original.iter().enumerate() {
        if let Value::Object(m) = item {
            if let Some(k) = m.get(merge_key) {
                index.entry(key_string(k)).or_insert(i);
            }
        }
    }
    for (item, key) in patch.into_iter().zip(patch_keys) {
        let Value::Object(sub_patch) = item else {
            return Err(bad_arg_type("map[string]interface {}", &item));
        };
        match index.get(key) {
            Some(&i) => {
                let base = match original[i].take() {
                    Value::Object(m) => m,
                    _ => Object::new(),
                };
                original[i] = Value::Object(merge_map(base, sub_patch, elem_ty, depth + 1)?);
            }
            None => {
                index.insert(key.clone(), original.len());
                original.push(Value::Object(sanitize_map(sub_patch)));
            }
        }
    }
    Ok(original)
}

/// Upstream's partition + `normalizeElementOrder`: the merged elements named in `order_keys`
/// (the patch list, or `$setElementOrder`) are sorted in that order, the others keep the
/// target's order, and the two runs are interleaved by the target's order (see
/// [`interleave`]).
fn order_merged(
    merged: Vec<Value>,
    order_keys: &[String],
    server_keys: &[String],
    merge_key: &str,
) -> Result<Vec<Value>> {
    let named: HashSet<&str> = order_keys.iter().map(String::as_str).collect();
    let mut from_patch = Vec::new();
    let mut server_only = Vec::new();
    for item in merged {
        let key = key_string(key_of(&item, merge_key)?);
        if named.contains(key.as_str()) {
            from_patch.push((key, item));
        } else {
            server_only.push((key, item));
        }
    }
    let patch_positions = first_positions(order_keys);
    let server_positions = first_positions(server_keys);
    let from_patch = sort_by_positions(from_patch, &patch_positions, merge_key);
    let server_only = sort_by_positions(server_only, &server_positions, merge_key);
    Ok(interleave(server_only, from_patch, &server_positions))
}

/// Upstream's `normalizeSliceOrder`: a stable sort by position in the reference order; elements
/// carrying `$patch: delete` go last.
fn sort_by_positions(
    items: Vec<(String, Value)>,
    positions: &HashMap<&str, usize>,
    merge_key: &str,
) -> Vec<(String, Value)> {
    let (mut kept, deletions): (Vec<_>, Vec<_>) = items
        .into_iter()
        .partition(|(_, v)| merge_key.is_empty() || !is_delete_directive(v));
    kept.sort_by_key(|(k, _)| positions.get(k.as_str()).copied().unwrap_or(usize::MAX));
    kept.extend(deletions);
    kept
}

/// Upstream's `mergeSortedSlice`: merges the server-only run into the patch run. A server-only
/// element goes first only when both it and the next patch element are in the target and it
/// came earlier there; otherwise the patch element goes first.
fn interleave(
    left: Vec<(String, Value)>,
    right: Vec<(String, Value)>,
    server_positions: &HashMap<&str, usize>,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (Some((lk, _)), Some((rk, _))) => {
                match (server_positions.get(lk.as_str()), server_positions.get(rk.as_str())) {
                    (Some(l), Some(r)) => l < r,
                    _ => false,
                }
            }
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_left { left.next() } else { right.next() };
        if let Some((_, v)) = next {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(kind: &str, target: Value, patch: Value) -> Value {
        match strategic_merge_patch(kind, &target, &patch) {
            Ok(v) => v,
            Err(e) => panic!("strategic merge patch failed: {}", e.message),
        }
    }

    fn smp_err(kind: &str, target: Value, patch: Value) -> PatchError {
        match strategic_merge_patch(kind, &target, &patch) {
            Ok(v) => panic!("expected an error, got {v}"),
            Err(e) => e,
        }
    }

    fn jp(target: Value, patch: Value) -> std::result::Result<Value, PatchError> {
        json_patch(&target, &patch)
    }

    /// `{"a":{"a":...{"a":leaf}}}` nested `levels` objects deep, built without recursion.
    fn nested(levels: usize, leaf: Value) -> Value {
        let mut v = leaf;
        for _ in 0..levels {
            let mut m = Map::new();
            m.insert("a".into(), v);
            v = Value::Object(m);
        }
        v
    }

    fn names(list: &Value) -> Vec<String> {
        list.as_array()
            .expect("a list")
            .iter()
            .map(|c| c["name"].as_str().expect("a name").to_owned())
            .collect()
    }

    fn assert_no_directives(v: &Value) {
        let mut stack = vec![v];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(m) => {
                    for (k, x) in m {
                        assert!(!is_directive_key(k), "directive key {k} left in {v}");
                        stack.push(x);
                    }
                }
                Value::Array(a) => stack.extend(a),
                _ => {}
            }
        }
    }

    // ---------------------------------------------------------------- RFC 7386 merge patch

    #[test]
    fn merge_patch_rfc7386_appendix_a() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (json!({}), json!({"a":{"bb":{"ccc":null}}}), json!({"a":{"bb":{}}})),
        ];
        for (target, patch, want) in cases {
            assert_eq!(merge_patch(&target, &patch), Ok(want), "{target} + {patch}");
        }
    }

    #[test]
    fn merge_patch_rejects_non_object_patches() {
        // RFC 7386 would replace the whole target; for a Kubernetes object that is never
        // valid, and upstream answers 400 "Invalid JSON Patch".
        for patch in [json!(["c", "d"]), json!(null), json!("bar"), json!(1)] {
            let err = merge_patch(&json!({"a":"b"}), &patch).expect_err("a non-object patch");
            assert!(err.bad_request);
            assert!(err.message.starts_with("Invalid JSON Patch"), "{}", err.message);
        }
    }

    #[test]
    fn merge_patch_replaces_lists_and_keeps_untouched_fields() {
        let target = json!({"metadata":{"name":"x","labels":{"a":"1","b":"2"}},
                            "spec":{"containers":[{"name":"a"},{"name":"b"}]}});
        let patch = json!({"metadata":{"labels":{"a":null,"c":"3"}},"spec":{"containers":[{"name":"z"}]}});
        assert_eq!(
            merge_patch(&target, &patch),
            Ok(json!({"metadata":{"name":"x","labels":{"b":"2","c":"3"}},"spec":{"containers":[{"name":"z"}]}}))
        );
    }

    #[test]
    fn merge_patch_rejects_deep_patches() {
        let err = merge_patch(&json!({}), &nested(MAX_DEPTH + 5, json!(1))).expect_err("too deep");
        assert!(err.bad_request);
        assert!(merge_patch(&json!({}), &nested(MAX_DEPTH, json!(1))).is_ok());
    }

    // ---------------------------------------------------------------- RFC 6902 JSON patch

    #[test]
    fn json_patch_rfc6902_appendix_a_successes() {
        let cases = [
            // A.1 adding an object member
            (
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/baz","value":"qux"}]),
                json!({"baz":"qux","foo":"bar"}),
            ),
            // A.2 adding an array element
            (
                json!({"foo":["bar","baz"]}),
                json!([{"op":"add","path":"/foo/1","value":"qux"}]),
                json!({"foo":["bar","qux","baz"]}),
            ),
            // A.3 removing an object member
            (
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"remove","path":"/baz"}]),
                json!({"foo":"bar"}),
            ),
            // A.4 removing an array element
            (
                json!({"foo":["bar","qux","baz"]}),
                json!([{"op":"remove","path":"/foo/1"}]),
                json!({"foo":["bar","baz"]}),
            ),
            // A.5 replacing a value
            (
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"replace","path":"/baz","value":"boo"}]),
                json!({"baz":"boo","foo":"bar"}),
            ),
            // A.6 moving a value
            (
                json!({"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}),
                json!([{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]),
                json!({"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}),
            ),
            // A.7 moving an array element
            (
                json!({"foo":["all","grass","cows","eat"]}),
                json!([{"op":"move","from":"/foo/1","path":"/foo/3"}]),
                json!({"foo":["all","cows","eat","grass"]}),
            ),
            // A.8 testing a value: success
            (
                json!({"baz":"qux","foo":["a",2,"c"]}),
                json!([{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}]),
                json!({"baz":"qux","foo":["a",2,"c"]}),
            ),
            // A.10 adding a nested member object
            (
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/child","value":{"grandchild":{}}}]),
                json!({"foo":"bar","child":{"grandchild":{}}}),
            ),
            // A.11 ignoring unrecognized elements
            (
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/baz","value":"qux","xyz":123}]),
                json!({"foo":"bar","baz":"qux"}),
            ),
            // A.14 ~ escape ordering
            (
                json!({"/":9,"~1":10}),
                json!([{"op":"test","path":"/~01","value":10}]),
                json!({"/":9,"~1":10}),
            ),
            // A.16 adding an array value
            (
                json!({"foo":["bar"]}),
                json!([{"op":"add","path":"/foo/-","value":["abc","def"]}]),
                json!({"foo":["bar",["abc","def"]]}),
            ),
        ];
        for (target, patch, want) in cases {
            assert_eq!(jp(target.clone(), patch.clone()), Ok(want), "{target} + {patch}");
        }
    }

    #[test]
    fn json_patch_rfc6902_appendix_a_failures() {
        // A.9 testing a value: error
        let err = jp(json!({"baz":"qux"}), json!([{"op":"test","path":"/baz","value":"bar"}])).expect_err("A.9");
        assert_eq!(err, PatchError::invalid("testing value /baz failed: test failed"));
        // A.12 adding to a nonexistent target
        let err = jp(
            json!({"foo":"bar"}),
            json!([{"op":"add","path":"/baz/bat","value":"qux"}]),
        )
        .expect_err("A.12");
        assert!(!err.bad_request);
        assert!(err.message.contains("doc is missing path"), "{}", err.message);
        // A.15 comparing strings and numbers
        let err = jp(
            json!({"/":9,"~1":10}),
            json!([{"op":"test","path":"/~01","value":"10"}]),
        )
        .expect_err("A.15");
        assert!(err.message.contains("test failed"));
    }

    #[test]
    fn json_patch_failed_test_leaves_nothing_applied() {
        let target = json!({"a":1});
        let patch = json!([{"op":"add","path":"/b","value":2},{"op":"test","path":"/a","value":2}]);
        assert!(jp(target, patch).is_err());
    }

    #[test]
    fn json_patch_malformed_documents_are_bad_requests() {
        let err = jp(json!({}), json!({"op":"add"})).expect_err("not an array");
        assert!(err.bad_request);
        assert_eq!(
            err.message,
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
        );
        let err = jp(json!({}), json!(["add"])).expect_err("element not an object");
        assert!(err.bad_request);
        let err = jp(json!({}), json!(null)).expect_err("null");
        assert!(err.bad_request);
    }

    #[test]
    fn json_patch_operation_errors_are_invalid() {
        let cases = [
            (json!([{"op":"frobnicate","path":"/a"}]), "Unexpected kind: frobnicate"),
            (json!([{"path":"/a","value":1}]), "Unexpected kind: unknown"),
            (json!([{"op":"add","value":1}]), "add operation failed to decode path"),
            (json!([{"op":"add","path":"/a"}]), "add operation, missing value field"),
            (
                json!([{"op":"test","path":"/a"}]),
                "test operation, missing value field",
            ),
            (
                json!([{"op":"move","path":"/a"}]),
                "move operation failed to decode from",
            ),
            (
                json!([{"op":"remove","path":"/nope"}]),
                "Unable to remove nonexistent key: nope",
            ),
            (
                json!([{"op":"replace","path":"/nope","value":1}]),
                "doc is missing key: /nope",
            ),
            (
                json!([{"op":"add","path":"a","value":1}]),
                "must be empty or start with",
            ),
            (json!([{"op":"add","path":"/x~2","value":1}]), "invalid escape sequence"),
            (
                json!([{"op":"add","path":"/list/5","value":1}]),
                "Unable to access invalid index: 5",
            ),
            (
                json!([{"op":"add","path":"/list/01","value":1}]),
                "not a proper array index: '01'",
            ),
            (
                json!([{"op":"add","path":"/list/-1","value":1}]),
                "not a proper array index: '-1'",
            ),
            (
                json!([{"op":"remove","path":"/list/-"}]),
                "not a proper array index: '-'",
            ),
            (
                json!([{"op":"remove","path":"/list/3"}]),
                "Unable to access invalid index: 3",
            ),
            (
                json!([{"op":"replace","path":"/list/x","value":1}]),
                "not a proper array index: 'x'",
            ),
            (json!([{"op":"remove","path":""}]), "root cannot be removed"),
            (
                json!([{"op":"move","from":"/a","path":"/a/b"}]),
                "cannot be moved into its own child",
            ),
            (
                json!([{"op":"copy","from":"/nope","path":"/b"}]),
                "doc is missing from path: /nope",
            ),
            (
                json!([{"op":"test","path":"/nope","value":1}]),
                "is missing path: /nope",
            ),
            (json!([{"op":"add","path":"/a/b/c","value":1}]), "doc is missing path"),
        ];
        for (patch, want) in cases {
            let err = jp(json!({"a":{"b":1},"list":[1,2,3]}), patch.clone()).expect_err("should fail");
            assert!(!err.bad_request, "{patch}: {err:?}");
            assert!(
                err.message.contains(want),
                "{patch}: {:?} does not contain {want:?}",
                err.message
            );
        }
    }

    #[test]
    fn json_patch_pointers_and_arrays() {
        let target = json!({"a/b":{"m~n":[1]},"list":[1,2,3],"":"empty key"});
        let patch = json!([
            {"op":"add","path":"/a~1b/m~0n/-","value":2},
            {"op":"add","path":"/list/0","value":0},
            {"op":"add","path":"/list/4","value":4},
            {"op":"replace","path":"/","value":"root-level empty key"},
            {"op":"copy","from":"/list","path":"/copy"},
            {"op":"move","from":"/list/0","path":"/list/-"},
            {"op":"move","from":"/copy","path":"/copy"},
            {"op":"test","path":"/list","value":[1.0,2,3,4,0]}
        ]);
        assert_eq!(
            jp(target, patch),
            Ok(json!({"a/b":{"m~n":[1,2]},"list":[1,2,3,4,0],"copy":[0,1,2,3,4],"":"root-level empty key"}))
        );
    }

    #[test]
    fn json_patch_whole_document() {
        assert_eq!(
            jp(json!({"a":1}), json!([{"op":"replace","path":"","value":{"b":2}}])),
            Ok(json!({"b":2}))
        );
        assert_eq!(
            jp(json!({"a":1}), json!([{"op":"add","path":"","value":{"c":3}}])),
            Ok(json!({"c":3}))
        );
        assert_eq!(
            jp(json!({"a":1}), json!([{"op":"test","path":"","value":{"a":1.0}}])),
            Ok(json!({"a":1}))
        );
        assert_eq!(jp(json!({"a":1}), json!([])), Ok(json!({"a":1})));
    }

    #[test]
    fn json_patch_typical_kubectl_use() {
        let pod = json!({"metadata":{"name":"p","labels":{"app":"x"}},"spec":{"containers":[{"name":"c","image":"nginx:1.25"}]}});
        let patch = json!([
            {"op":"test","path":"/spec/containers/0/name","value":"c"},
            {"op":"replace","path":"/spec/containers/0/image","value":"nginx:1.26"},
            {"op":"add","path":"/metadata/labels/tier","value":"web"},
            {"op":"remove","path":"/metadata/labels/app"}
        ]);
        assert_eq!(
            jp(pod, patch),
            Ok(
                json!({"metadata":{"name":"p","labels":{"tier":"web"}},"spec":{"containers":[{"name":"c","image":"nginx:1.26"}]}})
            )
        );
    }

    #[test]
    fn json_patch_copy_growth_is_bounded() {
        // Each copy doubles the document: the accumulated copy size limit stops it.
        let mut ops = Vec::new();
        for i in 0..64 {
            ops.push(json!({"op":"copy","from":"","path":format!("/k{i}")}));
        }
        let big = json!({"data": "x".repeat(4096)});
        let err = jp(big, Value::Array(ops)).expect_err("copy growth");
        assert!(!err.bad_request);
        assert!(
            err.message.contains("accumulated size increase of copy"),
            "{}",
            err.message
        );
    }

    #[test]
    fn json_patch_depth_is_bounded() {
        let err = jp(
            json!({}),
            json!([{"op":"add","path":"/a","value":nested(MAX_DEPTH + 1, json!(1))}]),
        )
        .expect_err("deep patch");
        assert!(err.bad_request);
        // Nesting a document into itself grows it one level per copy: refused at the limit.
        let ops: Vec<Value> = (0..MAX_DEPTH + 2)
            .map(|_| json!({"op":"copy","from":"","path":"/a"}))
            .collect();
        let err = jp(json!({}), Value::Array(ops)).expect_err("deep result");
        assert!(!err.bad_request);
        assert!(err.message.contains("levels deep"), "{}", err.message);
    }

    // ---------------------------------------------------------------- strategic merge patch

    fn deployment() -> Value {
        json!({
            "apiVersion":"apps/v1","kind":"Deployment",
            "metadata":{"name":"web","namespace":"default","labels":{"app":"web"},
                        "annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}"}},
            "spec":{
                "replicas":2,
                "selector":{"matchLabels":{"app":"web"}},
                "strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":"25%","maxUnavailable":"25%"}},
                "template":{
                    "metadata":{"labels":{"app":"web"}},
                    "spec":{
                        "containers":[{"name":"c","image":"nginx:1.25","imagePullPolicy":"IfNotPresent",
                                       "ports":[{"containerPort":80,"protocol":"TCP"}],
                                       "terminationMessagePath":"/dev/termination-log"}],
                        "restartPolicy":"Always","dnsPolicy":"ClusterFirst"
                    }
                }
            },
            "status":{"replicas":2,"conditions":[
                {"type":"Available","status":"True"},{"type":"Progressing","status":"True"}]}
        })
    }

    #[test]
    fn kubectl_second_apply() {
        let patch = json!({"spec":{"template":{"spec":{
            "$setElementOrder/containers":[{"name":"c"}],
            "containers":[{"image":"nginx:1.26","name":"c"}]}}}});
        let got = smp("Deployment", deployment(), patch);
        let mut want = deployment();
        want["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.26");
        assert_eq!(got, want);
        assert_no_directives(&got);
    }

    #[test]
    fn kubectl_apply_adds_and_removes_containers_in_configured_order() {
        let mut target = deployment();
        target["spec"]["template"]["spec"]["containers"] =
            json!([{"name":"a","image":"a:1"},{"name":"b","image":"b:1"},{"name":"c","image":"c:1"}]);
        // Configured: [c, d, a] — b deleted, d added, c moved first.
        let patch = json!({"spec":{"template":{"spec":{
            "$setElementOrder/containers":[{"name":"c"},{"name":"d"},{"name":"a"}],
            "containers":[{"name":"d","image":"d:1"},{"$patch":"delete","name":"b"}]}}}});
        let got = smp("Deployment", target, patch);
        assert_eq!(
            got["spec"]["template"]["spec"]["containers"],
            json!([{"name":"c","image":"c:1"},{"name":"d","image":"d:1"},{"name":"a","image":"a:1"}])
        );
        assert_no_directives(&got);
    }

    #[test]
    fn replicaset_pod_template_is_path_aware() {
        let target = json!({"spec":{"template":{"spec":{"containers":[
            {"name":"c","image":"x:1","env":[{"name":"A","value":"1"}]}]}}}});
        let patch =
            json!({"spec":{"template":{"spec":{"containers":[{"name":"c","env":[{"name":"B","value":"2"}]}]}}}});
        let got = smp("ReplicaSet", target, patch);
        assert_eq!(
            got["spec"]["template"]["spec"]["containers"],
            json!([{"name":"c","image":"x:1","env":[{"name":"B","value":"2"},{"name":"A","value":"1"}]}])
        );
        // A Pod's `spec.template` means nothing: there the pod spec is `spec`.
        let pod = json!({"spec":{"containers":[{"name":"c","image":"x:1"}]}});
        let got = smp("Pod", pod, json!({"spec":{"containers":[{"name":"c","image":"x:2"}]}}));
        assert_eq!(got["spec"]["containers"], json!([{"name":"c","image":"x:2"}]));
    }

    #[test]
    fn containers_merge_by_name() {
        let pod = json!({"spec":{"containers":[
            {"name":"a","image":"a:1","args":["--x"]},
            {"name":"b","image":"b:1"}]}});
        let patch = json!({"spec":{"containers":[{"name":"b","image":"b:2"},{"name":"a","args":["--y"]}]}});
        let got = smp("Pod", pod, patch);
        // Patch order wins for the elements it names (upstream "preserve the order from the patch").
        assert_eq!(
            got["spec"]["containers"],
            json!([{"name":"b","image":"b:2"},{"name":"a","image":"a:1","args":["--y"]}])
        );
    }

    #[test]
    fn new_elements_without_set_element_order_follow_upstreams_rule() {
        // Upstream's mergeSortedSlice puts a new element ahead of the target's elements that no
        // patch element follows ("best effort" order when $setElementOrder is absent).
        let pod = json!({"spec":{"containers":[{"name":"a"},{"name":"b"}]}});
        let got = smp("Pod", pod.clone(), json!({"spec":{"containers":[{"name":"n"}]}}));
        assert_eq!(names(&got["spec"]["containers"]), ["n", "a", "b"]);
        // A patched element pulls the new one after the target's elements before it.
        let got = smp(
            "Pod",
            pod,
            json!({"spec":{"containers":[{"name":"b","image":"b:2"},{"name":"n"}]}}),
        );
        assert_eq!(names(&got["spec"]["containers"]), ["a", "b", "n"]);
        // The design proposal's example: live [B, C, A], patch [A', B', D] → [C, A', B', D].
        let target = json!({"spec":{"containers":[{"name":"B"},{"name":"C"},{"name":"A"}]}});
        let patch = json!({"spec":{"containers":[{"name":"A","x":1},{"name":"B","x":1},{"name":"D"}]}});
        assert_eq!(
            names(&smp("Pod", target, patch)["spec"]["containers"]),
            ["C", "A", "B", "D"]
        );
    }

    #[test]
    fn upstream_custom_order_cases() {
        // "preserve the order from the patch in a merging list 2"
        let target = json!({"spec":{"containers":[{"name":"1"},{"name":"2","value":"b"},{"name":"3"}]}});
        let patch = json!({"spec":{"containers":[{"name":"3","value":"c"},{"name":"1","value":"a"}]}});
        assert_eq!(
            smp("Pod", target, patch)["spec"]["containers"],
            json!([{"name":"2","value":"b"},{"name":"3","value":"c"},{"name":"1","value":"a"}])
        );
        // "preserve the order from the patch in a merging int list" (finalizers are a merged set)
        let target = json!({"metadata":{"finalizers":["1","2","3"]}});
        let got = smp("ConfigMap", target, json!({"metadata":{"finalizers":["3","1"]}}));
        assert_eq!(got["metadata"]["finalizers"], json!(["2", "3", "1"]));
        // "unique scalars when merging lists"
        let got = smp(
            "ConfigMap",
            json!({"metadata":{"finalizers":["1","2"]}}),
            json!({"metadata":{"finalizers":["2","3"]}}),
        );
        assert_eq!(got["metadata"]["finalizers"], json!(["1", "2", "3"]));
    }

    #[test]
    fn env_merges_by_name_and_null_deletes_a_member() {
        let pod = json!({"spec":{"containers":[{"name":"c","env":[
            {"name":"A","value":"1"},
            {"name":"B","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}}]}]}});
        let patch = json!({"spec":{"containers":[{"name":"c","env":[
            {"name":"B","value":"2","valueFrom":null},
            {"name":"A","value":null}]}]}});
        let got = smp("Pod", pod, patch);
        assert_eq!(
            got["spec"]["containers"][0]["env"],
            json!([{"name":"B","value":"2"},{"name":"A"}])
        );
    }

    #[test]
    fn container_ports_merge_by_container_port_and_service_ports_by_port() {
        let pod = json!({"spec":{"containers":[{"name":"c","ports":[
            {"containerPort":80,"protocol":"TCP"},{"containerPort":443,"protocol":"TCP"}]}]}});
        let patch = json!({"spec":{"containers":[{"name":"c","ports":[{"containerPort":80,"name":"http"}]}]}});
        let got = smp("Pod", pod, patch);
        assert_eq!(
            got["spec"]["containers"][0]["ports"],
            json!([{"containerPort":80,"protocol":"TCP","name":"http"},{"containerPort":443,"protocol":"TCP"}])
        );

        let svc = json!({"spec":{"ports":[{"port":80,"targetPort":8080},{"port":443,"targetPort":8443}],
                                 "selector":{"app":"web"}}});
        let got = smp(
            "Service",
            svc.clone(),
            json!({"spec":{"ports":[{"port":443,"targetPort":9443}]}}),
        );
        assert_eq!(
            got["spec"]["ports"],
            json!([{"port":80,"targetPort":8080},{"port":443,"targetPort":9443}])
        );
        // A Service port element is keyed by `port`, not `containerPort`.
        let err = smp_err("Service", svc, json!({"spec":{"ports":[{"containerPort":80}]}}));
        assert!(
            err.message.contains("does not contain declared merge key: port"),
            "{}",
            err.message
        );
    }

    #[test]
    fn other_pod_spec_merge_lists() {
        let pod = json!({"spec":{
            "containers":[{"name":"c","volumeMounts":[{"mountPath":"/a","name":"v1"}],
                           "volumeDevices":[{"devicePath":"/dev/x","name":"d"}]}],
            "initContainers":[{"name":"i","image":"i:1"}],
            "volumes":[{"name":"v1","emptyDir":{}}],
            "imagePullSecrets":[{"name":"s1"}],
            "hostAliases":[{"ip":"10.0.0.1","hostnames":["a"]}],
            "topologySpreadConstraints":[{"topologyKey":"zone","maxSkew":1}],
            "tolerations":[{"key":"a","operator":"Exists"}]}});
        let patch = json!({"spec":{
            "containers":[{"name":"c","volumeMounts":[{"mountPath":"/a","readOnly":true}],
                           "volumeDevices":[{"devicePath":"/dev/y","name":"e"}]}],
            "initContainers":[{"name":"i","image":"i:2"}],
            "volumes":[{"name":"v2","configMap":{"name":"cm"}}],
            "imagePullSecrets":[{"name":"s2"}],
            "hostAliases":[{"ip":"10.0.0.1","hostnames":["b"]}],
            "topologySpreadConstraints":[{"topologyKey":"zone","maxSkew":2}],
            "tolerations":[{"key":"b","operator":"Exists"}]}});
        let got = smp("Pod", pod, patch);
        let spec = &got["spec"];
        assert_eq!(
            spec["containers"][0]["volumeMounts"],
            json!([{"mountPath":"/a","name":"v1","readOnly":true}])
        );
        assert_eq!(
            spec["containers"][0]["volumeDevices"],
            json!([{"devicePath":"/dev/y","name":"e"},{"devicePath":"/dev/x","name":"d"}])
        );
        assert_eq!(spec["initContainers"], json!([{"name":"i","image":"i:2"}]));
        assert_eq!(names(&spec["volumes"]), ["v2", "v1"]);
        assert_eq!(names(&spec["imagePullSecrets"]), ["s2", "s1"]);
        assert_eq!(spec["hostAliases"], json!([{"ip":"10.0.0.1","hostnames":["b"]}]));
        assert_eq!(
            spec["topologySpreadConstraints"],
            json!([{"topologyKey":"zone","maxSkew":2}])
        );
        // Tolerations have no merge key: atomic.
        assert_eq!(spec["tolerations"], json!([{"key":"b","operator":"Exists"}]));
    }

    #[test]
    fn atomic_lists_are_replaced() {
        let pod = json!({"spec":{"containers":[{"name":"c","args":["a","b"],"command":["sh"]}]}});
        let patch = json!({"spec":{"containers":[{"name":"c","args":["z"]}]}});
        assert_eq!(
            smp("Pod", pod, patch)["spec"]["containers"][0],
            json!({"name":"c","args":["z"],"command":["sh"]})
        );

        let ep = json!({"subsets":[{"addresses":[{"ip":"10.0.0.1"}],"ports":[{"port":80}]}]});
        let patch = json!({"subsets":[{"addresses":[{"ip":"10.0.0.2"}],"ports":[{"port":80}]}]});
        assert_eq!(smp("Endpoints", ep, patch.clone()), patch);
    }

    #[test]
    fn status_and_metadata_merge_lists() {
        let pod = json!({"metadata":{"ownerReferences":[{"uid":"u1","kind":"ReplicaSet","name":"rs"}]},
                         "status":{"conditions":[{"type":"Ready","status":"False"},{"type":"PodScheduled","status":"True"}],
                                   "podIPs":[{"ip":"10.0.0.1"}]}});
        let patch = json!({"metadata":{"ownerReferences":[{"uid":"u1","controller":true},{"uid":"u2","kind":"X","name":"x"}]},
                           "status":{"conditions":[{"type":"Ready","status":"True"}],"podIPs":[{"ip":"fd00::1"}]}});
        let got = smp("Pod", pod, patch);
        assert_eq!(
            got["metadata"]["ownerReferences"],
            json!([{"uid":"u1","kind":"ReplicaSet","name":"rs","controller":true},{"uid":"u2","kind":"X","name":"x"}])
        );
        assert_eq!(
            got["status"]["conditions"],
            json!([{"type":"Ready","status":"True"},{"type":"PodScheduled","status":"True"}])
        );
        assert_eq!(got["status"]["podIPs"], json!([{"ip":"fd00::1"},{"ip":"10.0.0.1"}]));

        let node = json!({"spec":{"podCIDRs":["10.0.0.0/24"],"taints":[{"key":"a","effect":"NoSchedule"}]},
                          "status":{"addresses":[{"type":"InternalIP","address":"10.1.1.1"},{"type":"Hostname","address":"n1"}],
                                    "conditions":[{"type":"Ready","status":"True"}]}});
        let patch = json!({"spec":{"podCIDRs":["fd00::/64"],"taints":[]},
                           "status":{"addresses":[{"type":"InternalIP","address":"10.1.1.2"}],
                                     "conditions":[{"type":"MemoryPressure","status":"False"}]}});
        let got = smp("Node", node, patch);
        assert_eq!(got["spec"]["podCIDRs"], json!(["fd00::/64", "10.0.0.0/24"]));
        assert_eq!(got["spec"]["taints"], json!([]));
        assert_eq!(
            got["status"]["addresses"],
            json!([{"type":"InternalIP","address":"10.1.1.2"},{"type":"Hostname","address":"n1"}])
        );
        assert_eq!(got["status"]["conditions"].as_array().map(Vec::len), Some(2));

        let rs = json!({"status":{"conditions":[{"type":"ReplicaFailure","status":"True","reason":"x"}]}});
        let got = smp(
            "ReplicaSet",
            rs,
            json!({"status":{"conditions":[{"type":"ReplicaFailure","status":"False"}]}}),
        );
        assert_eq!(
            got["status"]["conditions"],
            json!([{"type":"ReplicaFailure","status":"False","reason":"x"}])
        );
    }

    #[test]
    fn delete_directive_on_list_elements() {
        let pod = json!({"spec":{"containers":[
            {"name":"a","env":[{"name":"X","value":"1"},{"name":"Y","value":"2"}]},
            {"name":"b"}]}});
        let patch = json!({"spec":{"containers":[
            {"name":"a","env":[{"$patch":"delete","name":"X"}]},
            {"$patch":"delete","name":"b"}]}});
        let got = smp("Pod", pod, patch);
        assert_eq!(
            got["spec"]["containers"],
            json!([{"name":"a","env":[{"name":"Y","value":"2"}]}])
        );
        assert_no_directives(&got);

        // "delete all duplicate entries in a merging list"; a missing element is no error.
        let target =
            json!({"spec":{"volumes":[{"name":"1"},{"name":"1"},{"name":"2","x":"a"},{"name":"3"},{"name":"3"}]}});
        let patch = json!({"spec":{"volumes":[{"name":"1","$patch":"delete"},{"name":"3","$patch":"delete"},
                                              {"name":"9","$patch":"delete"}]}});
        assert_eq!(
            smp("Pod", target, patch)["spec"]["volumes"],
            json!([{"name":"2","x":"a"}])
        );
    }

    #[test]
    fn replace_directive() {
        // On a list: the other elements become the list.
        let pod = json!({"spec":{"containers":[{"name":"a","image":"a"},{"name":"b","image":"b"}]}});
        let patch = json!({"spec":{"containers":[{"name":"z","image":"z"},{"$patch":"replace"}]}});
        assert_eq!(
            smp("Pod", pod.clone(), patch)["spec"]["containers"],
            json!([{"name":"z","image":"z"}])
        );
        // "delete all items from merging list"
        let got = smp("Pod", pod, json!({"spec":{"containers":[{"$patch":"replace"}]}}));
        assert_eq!(got["spec"]["containers"], json!([]));

        // On a map: replaces it instead of merging.
        let target = json!({"metadata":{"labels":{"a":"1","b":"2"}},"data":{"k":"v"}});
        let patch = json!({"metadata":{"labels":{"$patch":"replace","c":"3"}}});
        assert_eq!(
            smp("ConfigMap", target.clone(), patch),
            json!({"metadata":{"labels":{"c":"3"}},"data":{"k":"v"}})
        );
        // On the whole object ("add key and delete all keys from map").
        assert_eq!(
            smp("ConfigMap", target, json!({"$patch":"replace","data":{"x":"y"}})),
            json!({"data":{"x":"y"}})
        );
    }

    #[test]
    fn delete_and_merge_directives_on_maps() {
        // "delete map from nested map": upstream leaves an empty map.
        let target = json!({"data":{"a":"1"},"metadata":{"labels":{"x":"y"},"name":"n"}});
        let got = smp(
            "ConfigMap",
            target.clone(),
            json!({"metadata":{"labels":{"$patch":"delete"}}}),
        );
        assert_eq!(got, json!({"data":{"a":"1"},"metadata":{"labels":{},"name":"n"}}));
        // A map that does not exist is not created by a delete.
        let got = smp(
            "ConfigMap",
            target.clone(),
            json!({"metadata":{"annotations":{"$patch":"delete"}}}),
        );
        assert_eq!(got, target);
        // `$patch: merge` is the default, for an existing map and a new one.
        let patch = json!({"metadata":{"labels":{"$patch":"merge","z":"1"}}});
        assert_eq!(
            smp("ConfigMap", target.clone(), patch)["metadata"]["labels"],
            json!({"x":"y","z":"1"})
        );
        let patch = json!({"metadata":{"annotations":{"$patch":"merge","z":"1"}}});
        assert_eq!(
            smp("ConfigMap", target, patch)["metadata"]["annotations"],
            json!({"z":"1"})
        );
    }

    #[test]
    fn set_element_order() {
        // Reorder only (no patch list).
        let pod = json!({"spec":{"containers":[{"name":"a"},{"name":"b"},{"name":"c"}]}});
        let patch = json!({"spec":{"$setElementOrder/containers":[{"name":"c"},{"name":"a"},{"name":"b"}]}});
        assert_eq!(names(&smp("Pod", pod, patch)["spec"]["containers"]), ["c", "a", "b"]);

        // Elements absent from the order keep their place relative to the target.
        let pod = json!({"spec":{"containers":[{"name":"x"},{"name":"a"},{"name":"b"}]}});
        let patch = json!({"spec":{"$setElementOrder/containers":[{"name":"b"},{"name":"a"}],
                                   "containers":[{"name":"b","image":"b:2"}]}});
        let got = smp("Pod", pod, patch);
        assert_eq!(
            got["spec"]["containers"],
            json!([{"name":"x"},{"name":"b","image":"b:2"},{"name":"a"}])
        );

        // "$setElementOrder contains item that is not present in the list to be merged"
        let pod = json!({"spec":{"containers":[{"name":"1"},{"name":"3"}]}});
        let patch = json!({"spec":{"$setElementOrder/containers":[{"name":"3"},{"name":"2"},{"name":"1"}],
                                   "containers":[{"name":"3","value":"3"},{"name":"1","value":"1"}]}});
        assert_eq!(
            smp("Pod", pod, patch)["spec"]["containers"],
            json!([{"name":"3","value":"3"},{"name":"1","value":"1"}])
        );

        // Primitive list.
        let target = json!({"metadata":{"finalizers":["1","3"]}});
        let patch = json!({"metadata":{"$setElementOrder/finalizers":["3","2","1"]}});
        assert_eq!(
            smp("Secret", target, patch)["metadata"]["finalizers"],
            json!(["3", "1"])
        );

        // A list the target does not have yet: created in order, directive elements dropped.
        let patch = json!({"spec":{"$setElementOrder/containers":[{"name":"b"},{"name":"a"}],
                                   "containers":[{"name":"b"},{"name":"z","$patch":"delete"},{"name":"a"}]}});
        let got = smp("Pod", json!({"spec":{}}), patch);
        assert_eq!(names(&got["spec"]["containers"]), ["b", "a"]);
        assert_no_directives(&got);
    }

    #[test]
    fn set_element_order_must_agree_with_the_patch_list() {
        let pod = json!({"spec":{"containers":[{"name":"1"},{"name":"3"},{"name":"2"}]}});
        let patch = json!({"spec":{"$setElementOrder/containers":[{"name":"1"},{"name":"2"},{"name":"3"}],
                                   "containers":[{"name":"3","value":"3"},{"name":"1","value":"1"}]}});
        let err = smp_err("Pod", pod, patch);
        assert!(err.bad_request);
        assert!(
            err.message.contains("doesn't match $setElementOrder list"),
            "{}",
            err.message
        );

        let err = smp_err("Pod", json!({}), json!({"$setElementOrder":[]}));
        assert_eq!(
            err,
            PatchError::bad_request("invalid patch format of setElementOrder list")
        );
        let err = smp_err("Pod", json!({}), json!({"$setElementOrder/x":"y"}));
        assert_eq!(err.message, "expected a []interface {}, but received a string");
    }

    #[test]
    fn retain_keys() {
        // kubectl switching a Deployment from RollingUpdate to Recreate.
        let patch = json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate","rollingUpdate":null}}});
        let got = smp("Deployment", deployment(), patch);
        assert_eq!(got["spec"]["strategy"], json!({"type":"Recreate"}));
        assert_no_directives(&got);

        // Volumes are merge,retainKeys: changing a volume's source drops the old one.
        let pod = json!({"spec":{"volumes":[{"name":"v","emptyDir":{}},{"name":"w","emptyDir":{}}]}});
        let patch =
            json!({"spec":{"volumes":[{"name":"v","$retainKeys":["configMap","name"],"configMap":{"name":"cm"}}]}});
        assert_eq!(
            smp("Pod", pod, patch)["spec"]["volumes"],
            json!([{"name":"v","configMap":{"name":"cm"}},{"name":"w","emptyDir":{}}])
        );

        // Every key the patch sets must be retained.
        let err = smp_err(
            "Deployment",
            deployment(),
            json!({"spec":{"strategy":{"$retainKeys":["type"],"other":1}}}),
        );
        assert_eq!(err, PatchError::bad_request("invalid patch format of retainKeys"));
        let err = smp_err(
            "Deployment",
            deployment(),
            json!({"spec":{"strategy":{"$retainKeys":"type"}}}),
        );
        assert_eq!(err.message, "invalid patch format of retainKeys");
    }

    #[test]
    fn delete_from_primitive_list() {
        let target = json!({"metadata":{"finalizers":["a","b","c","b"]}});
        let patch = json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["b","zzz"]}});
        assert_eq!(
            smp("ConfigMap", target.clone(), patch)["metadata"]["finalizers"],
            json!(["a", "c"])
        );

        // Together with an addition, the way kubectl sends it.
        let patch = json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["a"],
                                       "$setElementOrder/finalizers":["c","d"],"finalizers":["d"]}});
        assert_eq!(
            smp("ConfigMap", target.clone(), patch)["metadata"]["finalizers"],
            json!(["b", "c", "d"])
        );

        // On a list without merge strategy too; on a missing list it does nothing.
        let pod = json!({"spec":{"containers":[{"name":"c","args":["1","2","3"]}]}});
        let patch = json!({"spec":{"containers":[{"name":"c","$deleteFromPrimitiveList/args":["2"]}]}});
        assert_eq!(
            smp("Pod", pod, patch)["spec"]["containers"][0]["args"],
            json!(["1", "3"])
        );
        let got = smp(
            "ConfigMap",
            json!({"data":{}}),
            json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["x"]}}),
        );
        assert_eq!(got, json!({"data":{},"metadata":{}}));

        let err = smp_err(
            "ConfigMap",
            target.clone(),
            json!({"$deleteFromPrimitiveListfinalizers":["a"]}),
        );
        assert_eq!(err, PatchError::bad_request("invalid patch format of primitive list"));
        let err = smp_err(
            "ConfigMap",
            target,
            json!({"metadata":{"$deleteFromPrimitiveList/finalizers":"a"}}),
        );
        assert_eq!(err.message, "invalid patch format of primitive list");
    }

    #[test]
    fn null_deletes_fields() {
        let target = json!({"metadata":{"name":"x","labels":{"a":"1","b":"2"}},"data":{"k":"v"}});
        let patch = json!({"metadata":{"labels":{"a":null,"missing":null}},"data":null,"extra":null});
        assert_eq!(
            smp("ConfigMap", target, patch),
            json!({"metadata":{"name":"x","labels":{"b":"2"}}})
        );
    }

    #[test]
    fn values_brought_in_whole_are_cleaned() {
        let target = json!({"spec":{"containers":[{"name":"a"}]}});
        let patch = json!({"spec":{
            "containers":[{"name":"b","image":null,"env":[{"name":"E","value":"1"},{"name":"F","$patch":"delete"}],
                           "$setElementOrder/env":[{"name":"E"}]}],
            "initContainers":[{"name":"i","$retainKeys":["name"]},{"name":"j","$patch":"delete"}],
            "securityContext":{"runAsUser":1,"fsGroup":null,"seccompProfile":{"$patch":"delete"}}}});
        let got = smp("Pod", target, patch);
        assert_eq!(
            got,
            json!({"spec":{
                "containers":[{"name":"b","env":[{"name":"E","value":"1"}]},{"name":"a"}],
                "initContainers":[{"name":"i"}],
                "securityContext":{"runAsUser":1}}})
        );
        assert_no_directives(&got);
    }

    #[test]
    fn unknown_kinds_have_atomic_lists_but_honour_directives() {
        let target = json!({"metadata":{"finalizers":["a"]},
                            "spec":{"containers":[{"name":"a","image":"a"}],"items":["1","2","3"],
                                    "strategy":{"type":"A","a":{}},"ref":{"$ref":"#/x"}}});
        let patch = json!({"metadata":{"finalizers":["b"]},
                           "spec":{"containers":[{"name":"b"}],"$deleteFromPrimitiveList/items":["2"],
                                   "strategy":{"$retainKeys":["type"],"type":"B"}}});
        let got = smp("Widget", target, patch);
        assert_eq!(
            got,
            json!({"metadata":{"finalizers":["b"]},
                   "spec":{"containers":[{"name":"b"}],"items":["1","3"],"strategy":{"type":"B"},"ref":{"$ref":"#/x"}}})
        );
    }

    #[test]
    fn malformed_strategic_patches() {
        let err = smp_err("Pod", json!({}), json!([{"op":"add"}]));
        assert!(err.bad_request);
        assert!(err.message.starts_with("invalid JSON document"), "{}", err.message);

        let pod = json!({"spec":{"containers":[{"name":"a","image":"x"}]}});
        let err = smp_err("Pod", pod.clone(), json!({"spec":{"containers":[{"image":"y"}]}}));
        assert_eq!(
            err,
            PatchError::bad_request("map: map[image:y] does not contain declared merge key: name")
        );

        let err = smp_err("Pod", pod.clone(), json!({"spec":{"$patch":"frobnicate"}}));
        assert_eq!(
            err,
            PatchError::bad_request("unknown patch type: frobnicate in map: map[$patch:frobnicate]")
        );

        let err = smp_err(
            "Pod",
            pod.clone(),
            json!({"spec":{"containers":[{"name":"a","$patch":"bogus"}]}}),
        );
        assert!(
            err.message.starts_with("unknown patch type: bogus in map:"),
            "{}",
            err.message
        );

        let err = smp_err(
            "Pod",
            pod.clone(),
            json!({"spec":{"containers":[{"name":"a","$patch":"merge"}]}}),
        );
        assert_eq!(err.message, "merging lists cannot yet be specified in the patch");

        let err = smp_err("Pod", pod.clone(), json!({"spec":{"containers":[{"$patch":"delete"}]}}));
        assert!(
            err.message.contains("does not contain declared merge key: name"),
            "{}",
            err.message
        );

        let err = smp_err("Pod", pod.clone(), json!({"spec":{"containers":["a"]}}));
        assert!(
            err.message.contains("list element types are not identical"),
            "{}",
            err.message
        );

        let err = smp_err(
            "ConfigMap",
            json!({"metadata":{"finalizers":["a"]}}),
            json!({"metadata":{"finalizers":[["b"]]}}),
        );
        assert_eq!(err, PatchError::invalid("lists of lists are not supported"));

        let err = smp_err("Pod", json!("not an object"), json!({}));
        assert!(!err.bad_request);
    }

    #[test]
    fn deep_strategic_patches_are_rejected() {
        let err = smp_err("ConfigMap", json!({}), nested(MAX_DEPTH + 50, json!("x")));
        assert!(err.bad_request);
        assert!(err.message.contains("levels deep"), "{}", err.message);
        // Deep but within the limit is fine, and merges into a deep target.
        let target = nested(MAX_DEPTH - 1, json!({"keep":1}));
        let got = smp("ConfigMap", target, nested(MAX_DEPTH - 1, json!({"add":2})));
        assert_eq!(got, nested(MAX_DEPTH - 1, json!({"keep":1,"add":2})));
        // A hostile list nesting is refused as well.
        let mut v = json!(1);
        for _ in 0..1_000 {
            v = Value::Array(vec![v]);
        }
        let mut hostile = Map::new();
        hostile.insert("a".into(), v);
        let err = strategic_merge_patch("Pod", &json!({}), &Value::Object(hostile)).expect_err("hostile");
        assert!(err.bad_request);
    }

    #[test]
    fn large_merge_lists_merge_quickly() {
        let n = 20_000;
        let env: Vec<Value> = (0..n).map(|i| json!({"name":format!("V{i}"),"value":"0"})).collect();
        let patch_env: Vec<Value> = (0..n)
            .rev()
            .map(|i| json!({"name":format!("V{i}"),"value":"1"}))
            .collect();
        let pod = json!({"spec":{"containers":[{"name":"c","env":env}]}});
        let got = smp(
            "Pod",
            pod,
            json!({"spec":{"containers":[{"name":"c","env":patch_env}]}}),
        );
        let env = got["spec"]["containers"][0]["env"].as_array().expect("env");
        assert_eq!(env.len(), n);
        assert_eq!(env[0], json!({"name":format!("V{}", n - 1),"value":"1"}));
    }

    #[test]
    fn rbac_rules_and_subjects_are_atomic_and_metadata_merges() {
        let binding = json!({
            "metadata": {"name": "rb", "finalizers": ["a/x"]},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [
                {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
                {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "devs"}
            ]
        });
        let got = smp(
            "RoleBinding",
            binding.clone(),
            json!({"metadata": {"finalizers": ["b/y"]}, "subjects": [{"kind": "User", "name": "bob"}]}),
        );
        assert_eq!(got["subjects"], json!([{"kind": "User", "name": "bob"}]));
        let finalizers = got["metadata"]["finalizers"].as_array().expect("finalizers");
        assert!(
            finalizers.len() == 2 && finalizers.contains(&json!("a/x")) && finalizers.contains(&json!("b/y")),
            "{finalizers:?}"
        );
        assert_eq!(got["roleRef"], binding["roleRef"]);
        let got = smp("ClusterRoleBinding", binding, json!({"roleRef": {"name": "other"}}));
        assert_eq!(got["roleRef"]["name"], "other");
        assert_eq!(got["roleRef"]["kind"], "Role");
        let role = json!({"metadata": {"name": "r"}, "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["services"], "verbs": ["list"]}
        ]});
        for kind in ["Role", "ClusterRole"] {
            let got = smp(
                kind,
                role.clone(),
                json!({"rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["watch"]}]}),
            );
            assert_eq!(
                got["rules"],
                json!([{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["watch"]}]),
                "{kind}"
            );
        }
    }

    #[test]
    fn error_type_is_displayable() {
        let e = PatchError::invalid("x");
        assert_eq!(e.to_string(), "x");
        let _: &dyn std::error::Error = &e;
    }
}
