//! Label selectors and field selectors, parsed and matched the way the upstream Kubernetes API server
//! does it (`k8s.io/apimachinery/pkg/labels`, `pkg/fields`, and the field-label conversion and
//! `GetAttrs` functions of the built-in resources in `k8s.io/kubernetes`).
//!
//! # Label selectors
//!
//! [`LabelSelector::parse`] takes the `labelSelector` query parameter. The grammar, the lexer (byte
//! based, greedy on the operator symbols `= == != ! ( ) , < >`), the order of checks and every error
//! message follow upstream's `labels.Parse`:
//!
//! * equality requirements `k=v`, `k==v`, `k!=v` (an absent value means the empty string);
//! * set requirements `k in (a,b)`, `k notin (a)`, `k` (exists) and `!k` (does not exist); `()` and
//!   stray commas inside the parentheses stand for the empty value, and duplicates are dropped;
//! * the integer comparisons `k>1` and `k<1` that upstream's parser also accepts;
//! * keys are validated as qualified names (optional DNS-1123 subdomain prefix, `/`, a name of at
//!   most 63 bytes) and values as label values (at most 63 bytes), with upstream's texts, including
//!   its field paths (`<nil>` for a bad key, `values[0][key]` for a bad value);
//! * requirements are sorted by key, so [`Display`](fmt::Display) gives upstream's canonical
//!   `String()` form (`x in (a,b),y!=c,!z`).
//!
//! [`LabelSelector::from_json`] converts a `metav1.LabelSelector` object (`matchLabels` plus
//! `matchExpressions` with `In`, `NotIn`, `Exists`, `DoesNotExist`) as `LabelSelectorAsSelector`
//! does: `null` selects nothing, an empty object selects everything. [`LabelSelector::from_map`] is
//! `SelectorFromSet` for plain maps such as a Service's `spec.selector` (no validation, as upstream);
//! an empty map selects everything, so a caller that wants "a Service without a selector has no
//! endpoints" has to check for that itself.
//!
//! # Field selectors
//!
//! [`FieldSelector::parse`] takes the `fieldSelector` query parameter and the plural resource name.
//! Terms are `f=v`, `f==v` or `f!=v`, separated by commas; values may escape `\,`, `\=` and `\\`,
//! and an unescaped `,` or `=` in a value, or any other escape, is rejected with upstream's message.
//! The field names each resource accepts, the error for any other one, and the value each field takes
//! on an object are upstream's:
//!
//! | resource | fields besides `metadata.name` |
//! |---|---|
//! | pods | `metadata.namespace`, `spec.nodeName` (alias `spec.host`), `spec.restartPolicy`, `spec.schedulerName`, `spec.serviceAccountName`, `spec.hostNetwork`, `status.phase`, `status.podIP`, `status.podIPs`, `status.nominatedNodeName` |
//! | events | `metadata.namespace`, `involvedObject.{kind,namespace,name,uid,apiVersion,resourceVersion,fieldPath}`, `reason`, `reportingComponent`, `source`, `type` |
//! | nodes | `spec.unschedulable` (no `metadata.namespace`) |
//! | namespaces | `status.phase` (no `metadata.namespace`) |
//! | secrets | `metadata.namespace`, `type` |
//! | services | `metadata.namespace`, `spec.clusterIP`, `spec.type` |
//! | replicationcontrollers | `metadata.namespace`, `status.replicas` |
//! | replicasets | `metadata.namespace`, `status.replicas` (see below) |
//! | jobs | `metadata.namespace`, `status.successful` |
//! | certificatesigningrequests | `spec.signerName` (no `metadata.namespace`) |
//! | anything else | `metadata.namespace` |
//!
//! Resources with their own conversion function reject other fields with
//! `field label not supported: <field>`; the rest with upstream's default
//! `"<field>" is not a known field selector: only "metadata.name", "metadata.namespace"`.
//! Values follow upstream's conventions: booleans compare as `true`/`false` (absent = `false`),
//! counters as decimal numbers (absent = `0`), an event's `source` is `source.component` falling back
//! to `reportingComponent`, a pod's `status.podIP` is `status.podIP` falling back to
//! `status.podIPs[0].ip`, and a missing field compares as the empty string (so `status.podIPs`, which
//! upstream accepts but never fills in, only matches the empty value).
//!
//! # Deliberately left out
//!
//! * Upstream's `apps/v1` ReplicaSet registers no field-label conversion, so a real API server
//!   rejects `status.replicas` for ReplicaSets (`kubernetes/kubernetes#135136`) although the
//!   registry computes it and the documentation lists it. Here it is accepted, as documented.
//! * Field selectors of resources Capstan does not serve (`resource.k8s.io` slices, custom resources'
//!   `selectableFields`, `events.k8s.io` field names) fall back to the default
//!   `metadata.name`/`metadata.namespace` set. Resource names must be plain plurals (`replicasets`,
//!   not `replicasets.apps`).
//! * Go's `%q` quoting in messages is reproduced for ASCII; a few exotic non-printable Unicode
//!   characters may be quoted differently.
//! * Input is bounded: a selector longer than [`MAX_SELECTOR_BYTES`] or with more than
//!   [`MAX_REQUIREMENTS`] requirements is rejected (upstream has no such limit). Selectors built from
//!   stored objects ([`LabelSelector::from_json`], [`LabelSelector::from_map`]) are not bounded: the
//!   request body limit already bounds them.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// The longest selector string [`LabelSelector::parse`] and [`FieldSelector::parse`] accept.
pub const MAX_SELECTOR_BYTES: usize = 8 * 1024;
/// The most requirements (label) or terms (field) a parsed selector may have.
pub const MAX_REQUIREMENTS: usize = 100;

/// A selector that cannot be parsed or uses an unsupported field; `message` is the text upstream
/// puts into the 400 `BadRequest` Status.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectorError {
    pub message: String,
}

impl SelectorError {
    fn new(message: impl Into<String>) -> Self {
        SelectorError {
            message: message.into(),
        }
    }
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SelectorError {}

// ---------------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------------

/// The operator of one label requirement (upstream's `selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

impl Operator {
    /// Upstream's string for the operator (`in`, `notin`, `=`, `==`, `!=`, `exists`, `!`, `gt`, `lt`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

/// One requirement of a label selector: a key, an operator and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values (sorted and without duplicates when parsed from a string).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    fn has_value(&self, value: &str) -> bool {
        self.values.iter().any(|v| v == value)
    }

    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let label = labels.and_then(|m| m.get(&self.key));
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                label.is_some_and(|v| self.has_value(&label_text(v)))
            }
            Operator::NotIn | Operator::NotEquals => label.is_none_or(|v| !self.has_value(&label_text(v))),
            Operator::Exists => label.is_some(),
            Operator::DoesNotExist => label.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(label) = label else { return false };
                let Ok(have) = label_text(label).parse::<i64>() else {
                    return false;
                };
                let [want] = self.values.as_slice() else { return false };
                let Ok(want) = want.parse::<i64>() else { return false };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let (infix, parens) = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => ("=", false),
            Operator::DoubleEquals => ("==", false),
            Operator::NotEquals => ("!=", false),
            Operator::GreaterThan => (">", false),
            Operator::LessThan => ("<", false),
            Operator::In => (" in ", true),
            Operator::NotIn => (" notin ", true),
        };
        f.write_str(infix)?;
        if parens {
            f.write_str("(")?;
        }
        if self.values.len() == 1 {
            f.write_str(&self.values[0])?;
        } else {
            // Upstream sorts on output without touching the requirement.
            let mut sorted: Vec<&str> = self.values.iter().map(String::as_str).collect();
            sorted.sort_unstable();
            f.write_str(&sorted.join(","))?;
        }
        if parens {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A label's value as text: label values are strings; anything else (which upstream could not even
/// decode) is compared by its JSON rendering, and `null` as the empty string.
fn label_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

/// A label selector: requirements that must all hold. The default value selects everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    /// Upstream's `labels.Nothing()`: what a `null` `metav1.LabelSelector` converts to.
    nothing: bool,
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter as upstream's `labels.Parse`.
    ///
    /// # Errors
    ///
    /// A syntax error, an invalid key or value, or input over the bounds, worded as upstream.
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        if s.len() > MAX_SELECTOR_BYTES {
            return Err(SelectorError::new(format!(
                "label selector is too long: {} bytes (the limit is {MAX_SELECTOR_BYTES})",
                s.len()
            )));
        }
        let mut requirements = Parser::new(s).parse().map_err(SelectorError::new)?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Converts a `metav1.LabelSelector` object as upstream's `LabelSelectorAsSelector`: `null`
    /// selects nothing, `{}` selects everything, otherwise every `matchLabels` entry and every
    /// `matchExpressions` item becomes a validated requirement.
    ///
    /// # Errors
    ///
    /// An invalid key, value or operator (worded as upstream), or JSON of the wrong shape.
    pub fn from_json(v: &Value) -> Result<LabelSelector, SelectorError> {
        let obj = match v {
            Value::Null => return Ok(LabelSelector::nothing()),
            Value::Object(obj) => obj,
            _ => return Err(SelectorError::new("invalid label selector: expected an object")),
        };
        let empty_labels = Map::new();
        let match_labels = match obj.get("matchLabels") {
            None | Some(Value::Null) => &empty_labels,
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(SelectorError::new(
                    "invalid label selector: matchLabels must be an object",
                ))
            }
        };
        let expressions: &[Value] = match obj.get("matchExpressions") {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(_) => {
                return Err(SelectorError::new(
                    "invalid label selector: matchExpressions must be an array",
                ))
            }
        };
        if match_labels.is_empty() && expressions.is_empty() {
            return Ok(LabelSelector::default());
        }
        let mut requirements = Vec::with_capacity(match_labels.len() + expressions.len());
        for (key, value) in match_labels {
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                _ => {
                    return Err(SelectorError::new(format!(
                        "invalid label selector: matchLabels[{}] must be a string",
                        go_quote(key)
                    )))
                }
            };
            requirements.push(new_requirement(key, Operator::Equals, vec![value]).map_err(SelectorError::new)?);
        }
        for (i, expression) in expressions.iter().enumerate() {
            let Some(expression) = expression.as_object() else {
                return Err(SelectorError::new(format!(
                    "invalid label selector: matchExpressions[{i}] must be an object"
                )));
            };
            let text = |name: &str| -> Result<&str, SelectorError> {
                match expression.get(name) {
                    None | Some(Value::Null) => Ok(""),
                    Some(Value::String(s)) => Ok(s),
                    Some(_) => Err(SelectorError::new(format!(
                        "invalid label selector: matchExpressions[{i}].{name} must be a string"
                    ))),
                }
            };
            let key = text("key")?;
            let operator = match text("operator")? {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::new(format!(
                        "{} is not a valid label selector operator",
                        go_quote(other)
                    )))
                }
            };
            let values = match expression.get("values") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| {
                        SelectorError::new(format!(
                            "invalid label selector: matchExpressions[{i}].values must be an array of strings"
                        ))
                    })?,
                Some(_) => {
                    return Err(SelectorError::new(format!(
                        "invalid label selector: matchExpressions[{i}].values must be an array of strings"
                    )))
                }
            };
            requirements.push(new_requirement(key, operator, values).map_err(SelectorError::new)?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// A selector requiring every entry of a plain map (upstream's `SelectorFromSet`, used for a
    /// Service's or ReplicationController's `spec.selector`). Not validated, as upstream.
    pub fn from_map(m: &Map<String, Value>) -> LabelSelector {
        let mut requirements: Vec<Requirement> = m
            .iter()
            .map(|(key, value)| Requirement {
                key: key.clone(),
                operator: Operator::Equals,
                values: vec![label_text(value).into_owned()],
            })
            .collect();
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector {
            requirements,
            nothing: false,
        }
    }

    /// A selector that matches no object (upstream's `labels.Nothing()`).
    pub fn nothing() -> LabelSelector {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// True for [`LabelSelector::nothing`].
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    /// True if the selector does not restrict anything (selects everything).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// If the selector requires `label` to have one specific value (`=`, `==` or a one-valued `in`
    /// on the first requirement for that key), that value (upstream's `RequiresExactMatch`).
    pub fn requires_exact_match(&self, label: &str) -> Option<&str> {
        let requirement = self.requirements.iter().find(|r| r.key == label)?;
        match (requirement.operator, requirement.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [value]) => Some(value),
            _ => None,
        }
    }

    /// `labels` is an object's `metadata.labels` (absent = no labels).
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Convenience: [`matches`](Self::matches) on `obj["metadata"]["labels"]`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(
            obj.get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(Value::as_object),
        )
    }
}

impl fmt::Display for LabelSelector {
    /// Upstream's `String()`: the requirements joined by `,` (empty for everything and for nothing).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            fmt::Display::fmt(requirement, f)?;
        }
        Ok(())
    }
}

// --- Requirement construction and validation (upstream's NewRequirement) ----------------------

/// Upstream's `NewRequirement` with no field path: validates and returns the aggregated error text.
fn new_requirement(key: &str, operator: Operator, values: Vec<String>) -> Result<Requirement, String> {
    let mut errors = Vec::new();
    let key_errors = validate_label_key(key);
    if !key_errors.is_empty() {
        errors.push(invalid("key", &BadValue::Str(key), &key_errors.join("; ")));
    }
    match operator {
        Operator::In | Operator::NotIn => {
            if values.is_empty() {
                errors.push(invalid(
                    "values",
                    &BadValue::List(&values),
                    "for 'in', 'notin' operators, values set can't be empty",
                ));
            }
        }
        Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
            if values.len() != 1 {
                errors.push(invalid(
                    "values",
                    &BadValue::List(&values),
                    "exact-match compatibility requires one single value",
                ));
            }
        }
        Operator::Exists | Operator::DoesNotExist => {
            if !values.is_empty() {
                errors.push(invalid(
                    "values",
                    &BadValue::List(&values),
                    "values set must be empty for exists and does not exist",
                ));
            }
        }
        Operator::GreaterThan | Operator::LessThan => {
            if values.len() != 1 {
                errors.push(invalid(
                    "values",
                    &BadValue::List(&values),
                    "for 'Gt', 'Lt' operators, exactly one value is required",
                ));
            }
            for (i, value) in values.iter().enumerate() {
                if value.parse::<i64>().is_err() {
                    errors.push(invalid(
                        &format!("values[{i}]"),
                        &BadValue::Str(value),
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    ));
                }
            }
        }
    }
    for (i, value) in values.iter().enumerate() {
        let value_errors = validate_label_value(value);
        if !value_errors.is_empty() {
            errors.push(invalid(
                &format!("values[{i}][{key}]"),
                &BadValue::Str(value),
                &value_errors.join("; "),
            ));
        }
    }
    match aggregate(errors) {
        Some(message) => Err(message),
        None => Ok(Requirement {
            key: key.to_owned(),
            operator,
            values,
        }),
    }
}

/// The bad value of a `field.Invalid` error, printed as upstream prints it.
enum BadValue<'a> {
    /// A string, printed with Go's `%q`.
    Str(&'a str),
    /// A string slice, printed as JSON (`null` when empty: upstream's slices are nil then).
    List(&'a [String]),
}

/// `field.Invalid(path, value, detail).Error()`.
fn invalid(path: &str, value: &BadValue<'_>, detail: &str) -> String {
    let value = match value {
        BadValue::Str(s) => go_quote(s),
        BadValue::List([]) => "null".to_owned(),
        BadValue::List(items) => {
            let items: Vec<String> = items.iter().map(|s| go_json_string(s)).collect();
            format!("[{}]", items.join(","))
        }
    };
    format!("{path}: Invalid value: {value}: {detail}")
}

/// `utilerrors.NewAggregate(errs).Error()`: one message as is, several deduplicated in brackets.
fn aggregate(errors: Vec<String>) -> Option<String> {
    let mut unique: Vec<String> = Vec::with_capacity(errors.len());
    for error in errors {
        if !unique.contains(&error) {
            unique.push(error);
        }
    }
    match unique.len() {
        0 => None,
        1 => unique.pop(),
        _ => Some(format!("[{}]", unique.join(", "))),
    }
}

const LABEL_KEY_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_KEY_ERR: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const LABEL_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

// Upstream's `RegexError`: the validation module's.
use crate::validation::regex_error;

/// Upstream's `MaxLenError` as label validation words it (bytes, not characters).
fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} bytes")
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, anchored.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, anchored.
fn is_dns1123_label(s: &str) -> bool {
    let lower_alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            lower_alnum(first) && lower_alnum(last) && b.iter().all(|c| lower_alnum(c) || *c == b'-')
        }
        _ => false,
    }
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(is_dns1123_label)
}

/// Upstream's `IsDNS1123Subdomain`.
fn validate_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errors.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if !is_dns1123_subdomain(s) {
        errors.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errors
}

/// Upstream's `IsQualifiedName` (`content.IsLabelKey`).
fn validate_label_key(key: &str) -> Vec<String> {
    let name_regex_error = || regex_error(LABEL_KEY_ERR, LABEL_KEY_FMT, &["MyName", "my.name", "123-abc"]);
    let mut errors = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_owned());
            } else {
                errors.extend(
                    validate_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|e| format!("prefix part {e}")),
                );
            }
            *name
        }
        _ => {
            errors.push(format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                name_regex_error()
            ));
            return errors;
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else if name.len() > LABEL_NAME_MAX {
        errors.push(format!("name part {}", max_len_error(LABEL_NAME_MAX)));
    }
    if !is_label_name(name) {
        errors.push(format!("name part {}", name_regex_error()));
    }
    errors
}

/// Upstream's `IsValidLabelValue`.
fn validate_label_value(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > LABEL_VALUE_MAX {
        errors.push(max_len_error(LABEL_VALUE_MAX));
    }
    if !(value.is_empty() || is_label_name(value)) {
        errors.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

// --- Lexer and parser (upstream's labels.Lexer / labels.Parser) --------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

/// Whether `in`/`notin` are operators (after a key) or plain identifiers (everywhere else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn symbol_token(s: &[u8]) -> Option<Token> {
    Some(match s {
        b")" => Token::ClosedPar,
        b"," => Token::Comma,
        b"!" => Token::DoesNotExist,
        b"==" => Token::DoubleEquals,
        b"=" => Token::Equals,
        b">" => Token::GreaterThan,
        b"<" => Token::LessThan,
        b"!=" => Token::NotEquals,
        b"(" => Token::OpenPar,
        _ => return None,
    })
}

/// Upstream's byte-oriented lexer. Like upstream, a NUL byte where a token starts ends the input, and
/// one inside an identifier ends the identifier.
struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    /// The next byte, or 0 at the end (without advancing).
    fn read(&mut self) -> u8 {
        match self.s.as_bytes().get(self.pos) {
            Some(b) => {
                self.pos += 1;
                *b
            }
            None => 0,
        }
    }

    fn unread(&mut self) {
        self.pos -= 1;
    }

    fn lex(&mut self) -> (Token, &'a str) {
        let mut ch = self.read();
        while is_whitespace(ch) {
            ch = self.read();
        }
        if ch == 0 {
            return (Token::EndOfString, "");
        }
        self.unread();
        if is_special_symbol(ch) {
            self.scan_special_symbol()
        } else {
            self.scan_identifier_or_keyword()
        }
    }

    fn scan_identifier_or_keyword(&mut self) -> (Token, &'a str) {
        let start = self.pos;
        let end = loop {
            let at = self.pos;
            let ch = self.read();
            if ch == 0 {
                break at;
            }
            if is_special_symbol(ch) || is_whitespace(ch) {
                self.unread();
                break at;
            }
        };
        // `start` and `end` sit next to ASCII bytes (or the ends), so they are char boundaries.
        let literal = &self.s[start..end];
        let token = match literal {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Identifier,
        };
        (token, literal)
    }

    /// The longest operator symbol at the current position.
    fn scan_special_symbol(&mut self) -> (Token, &'a str) {
        let start = self.pos;
        let mut last: Option<(Token, usize)> = None;
        loop {
            let ch = self.read();
            if ch == 0 {
                break;
            }
            if !is_special_symbol(ch) {
                self.unread();
                break;
            }
            match symbol_token(&self.s.as_bytes()[start..self.pos]) {
                Some(token) => last = Some((token, self.pos)),
                None if last.is_some() => {
                    self.unread();
                    break;
                }
                None => {}
            }
        }
        match last {
            Some((token, end)) => (token, &self.s[start..end]),
            // Unreachable: every single special symbol is a token. Kept for parity with upstream.
            None => (Token::EndOfString, ""),
        }
    }
}

struct Parser<'a> {
    items: Vec<(Token, &'a str)>,
    position: usize,
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

impl<'a> Parser<'a> {
    fn new(s: &'a str) -> Self {
        let mut lexer = Lexer { s, pos: 0 };
        let mut items = Vec::new();
        loop {
            let item = lexer.lex();
            items.push(item);
            if item.0 == Token::EndOfString {
                break;
            }
        }
        Parser { items, position: 0 }
    }

    fn lookahead(&self, context: Context) -> (Token, &'a str) {
        let (token, literal) = self
            .items
            .get(self.position)
            .copied()
            .unwrap_or((Token::EndOfString, ""));
        match (context, token) {
            (Context::Values, Token::In | Token::NotIn) => (Token::Identifier, literal),
            _ => (token, literal),
        }
    }

    fn consume(&mut self, context: Context) -> (Token, &'a str) {
        let item = self.lookahead(context);
        self.position += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (token, literal) = self.lookahead(Context::Values);
            match token {
                Token::Identifier | Token::DoesNotExist => {
                    let requirement = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(requirement);
                    if requirements.len() > MAX_REQUIREMENTS {
                        return Err(format!(
                            "label selector has too many requirements: more than {MAX_REQUIREMENTS}"
                        ));
                    }
                    let (token, literal) = self.consume(Context::Values);
                    match token {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (next, literal) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::DoesNotExist {
                                return Err(format!("found '{literal}', expected: identifier after ','"));
                            }
                        }
                        _ => return Err(format!("found '{literal}', expected: ',' or 'end of string'")),
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(format!(
                        "found '{literal}', expected: !, identifier, or 'end of string'"
                    ))
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, operator) = self.parse_key_and_infer_operator()?;
        if let Some(operator @ (Operator::Exists | Operator::DoesNotExist)) = operator {
            return new_requirement(key, operator, Vec::new());
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        new_requirement(key, operator, values.into_iter().collect())
    }

    /// The key, with `Exists`/`DoesNotExist` when no operator follows it.
    fn parse_key_and_infer_operator(&mut self) -> Result<(&'a str, Option<Operator>), String> {
        let mut operator = None;
        let (mut token, mut literal) = self.consume(Context::Values);
        if token == Token::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (token, literal) = self.consume(Context::Values);
        }
        if token != Token::Identifier {
            return Err(format!("found '{literal}', expected: identifier"));
        }
        let errors = validate_label_key(literal);
        if !errors.is_empty() {
            // Upstream validates the key against a nil field path here.
            return Err(invalid("<nil>", &BadValue::Str(literal), &errors.join("; ")));
        }
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::EndOfString || next == Token::Comma) && operator != Some(Operator::DoesNotExist) {
            operator = Some(Operator::Exists);
        }
        Ok((literal, operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (token, literal) = self.consume(Context::KeyAndOperator);
        Ok(match token {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => return Err(format!("found '{literal}', expected: {BINARY_OPERATORS}")),
        })
    }

    /// `( values )` of a set-based requirement.
    fn parse_values(&mut self) -> Result<BTreeSet<String>, String> {
        let (token, literal) = self.consume(Context::Values);
        if token != Token::OpenPar {
            return Err(format!("found '{literal}' expected: '('"));
        }
        let (token, literal) = self.lookahead(Context::Values);
        match token {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let (token, _) = self.consume(Context::Values);
                if token != Token::ClosedPar {
                    return Err(format!("found '{literal}', expected: ')'"));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(format!("found '{literal}', expected: ',', ')' or identifier")),
        }
    }

    /// A comma-separated list of possibly empty identifiers, up to (not including) `)`.
    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut values = BTreeSet::new();
        loop {
            let (token, literal) = self.consume(Context::Values);
            match token {
                Token::Identifier => {
                    values.insert(literal.to_owned());
                    let (next, literal) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => {}
                        Token::ClosedPar => return Ok(values),
                        _ => return Err(format!("found '{literal}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.insert(String::new()); // "(,"
                    }
                    let (next, _) = self.lookahead(Context::Values);
                    if next == Token::ClosedPar {
                        values.insert(String::new()); // ",)"
                        return Ok(values);
                    }
                    if next == Token::Comma {
                        values.insert(String::new()); // ",,"
                    }
                }
                _ => return Err(format!("found '{literal}', expected: ',', or identifier")),
            }
        }
    }

    /// The single value of an equality or comparison requirement (empty when none is written).
    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        let (token, _) = self.lookahead(Context::Values);
        if token == Token::EndOfString || token == Token::Comma {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (token, literal) = self.consume(Context::Values);
        if token == Token::Identifier {
            return Ok(BTreeSet::from([literal.to_owned()]));
        }
        Err(format!("found '{literal}', expected: identifier"))
    }
}

// ---------------------------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------------------------

/// Which resource's field labels a field selector uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum FieldKind {
    /// No conversion function upstream: `metadata.name` and `metadata.namespace` only.
    #[default]
    Default,
    Pods,
    Events,
    Nodes,
    Namespaces,
    Secrets,
    Services,
    ReplicationControllers,
    ReplicaSets,
    Jobs,
    CertificateSigningRequests,
}

const META_NAME: &str = "metadata.name";
const META_NAMESPACE: &str = "metadata.namespace";

impl FieldKind {
    fn for_resource(resource: &str) -> FieldKind {
        match resource {
            "pods" => FieldKind::Pods,
            "events" => FieldKind::Events,
            "nodes" => FieldKind::Nodes,
            "namespaces" => FieldKind::Namespaces,
            "secrets" => FieldKind::Secrets,
            "services" => FieldKind::Services,
            "replicationcontrollers" => FieldKind::ReplicationControllers,
            "replicasets" => FieldKind::ReplicaSets,
            "jobs" => FieldKind::Jobs,
            "certificatesigningrequests" => FieldKind::CertificateSigningRequests,
            _ => FieldKind::Default,
        }
    }

    /// The field labels the resource's conversion function accepts.
    fn supported(self) -> &'static [&'static str] {
        match self {
            FieldKind::Default => &[META_NAME, META_NAMESPACE],
            FieldKind::Pods => &[
                META_NAME,
                META_NAMESPACE,
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.podIPs",
                "status.nominatedNodeName",
            ],
            FieldKind::Events => &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
                META_NAMESPACE,
                META_NAME,
            ],
            FieldKind::Nodes => &[META_NAME, "spec.unschedulable"],
            FieldKind::Namespaces => &["status.phase", META_NAME],
            FieldKind::Secrets => &["type", META_NAMESPACE, META_NAME],
            FieldKind::Services => &[META_NAMESPACE, META_NAME, "spec.clusterIP", "spec.type"],
            FieldKind::ReplicationControllers | FieldKind::ReplicaSets => {
                &[META_NAME, META_NAMESPACE, "status.replicas"]
            }
            FieldKind::Jobs => &[META_NAME, META_NAMESPACE, "status.successful"],
            FieldKind::CertificateSigningRequests => &[META_NAME, "spec.signerName"],
        }
    }

    /// The resource's field-label conversion: the canonical field, or upstream's error.
    fn convert(self, label: &str) -> Result<&'static str, String> {
        if self == FieldKind::Pods && label == "spec.host" {
            // Backwards compatibility with old v1 clients, as upstream.
            return Ok("spec.nodeName");
        }
        if let Some(field) = self.supported().iter().find(|f| **f == label) {
            return Ok(field);
        }
        Err(match self {
            // apps/v1 ReplicaSet has no conversion function upstream, hence the default message.
            FieldKind::Default | FieldKind::ReplicaSets => format!(
                "{} is not a known field selector: only {}, {}",
                go_quote(label),
                go_quote(META_NAME),
                go_quote(META_NAMESPACE)
            ),
            _ => format!("field label not supported: {label}"),
        })
    }

    /// The value an object has for `field` (one that [`convert`](Self::convert) returned).
    fn value<'v>(self, field: &str, obj: &'v Value) -> Cow<'v, str> {
        match (self, field) {
            (_, META_NAME) => text(at(obj, &["metadata", "name"])),
            (_, META_NAMESPACE) => text(at(obj, &["metadata", "namespace"])),
            (FieldKind::Pods, "spec.serviceAccountName") => {
                // v1's deprecated `serviceAccount` is an alias that loses to the new field.
                or_else(text(at(obj, &["spec", "serviceAccountName"])), || {
                    text(at(obj, &["spec", "serviceAccount"]))
                })
            }
            (FieldKind::Pods, "spec.hostNetwork") => flag(at(obj, &["spec", "hostNetwork"])),
            (FieldKind::Pods, "status.podIP") => {
                // v1 `status.podIP` is authoritative; otherwise the first of `status.podIPs`.
                or_else(text(at(obj, &["status", "podIP"])), || {
                    text(
                        at(obj, &["status", "podIPs"])
                            .and_then(|ips| ips.get(0))
                            .and_then(|ip| ip.get("ip")),
                    )
                })
            }
            // Accepted by upstream's conversion but absent from its field set.
            (FieldKind::Pods, "status.podIPs") => Cow::Borrowed(""),
            (FieldKind::Events, "source") => or_else(text(at(obj, &["source", "component"])), || {
                text(obj.get("reportingComponent"))
            }),
            (FieldKind::Nodes, "spec.unschedulable") => flag(at(obj, &["spec", "unschedulable"])),
            (FieldKind::ReplicationControllers | FieldKind::ReplicaSets, "status.replicas") => {
                count(at(obj, &["status", "replicas"]))
            }
            (FieldKind::Jobs, "status.successful") => count(at(obj, &["status", "succeeded"])),
            // Every other supported field is the plain JSON path of its label.
            (_, field) => {
                let path: Vec<&str> = field.split('.').collect();
                text(at(obj, &path))
            }
        }
    }
}

fn at<'v>(obj: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(obj, |v, key| v.get(key))
}

/// A scalar as upstream's field sets hold it; anything missing or structured is "".
fn text(v: Option<&Value>) -> Cow<'_, str> {
    match v {
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(Value::Bool(b)) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Some(Value::Number(n)) => Cow::Owned(n.to_string()),
        _ => Cow::Borrowed(""),
    }
}

/// A boolean field: "true" or "false", absent = false.
fn flag(v: Option<&Value>) -> Cow<'static, str> {
    Cow::Borrowed(if matches!(v, Some(Value::Bool(true))) {
        "true"
    } else {
        "false"
    })
}

/// An integer field in decimal, absent = 0.
fn count(v: Option<&Value>) -> Cow<'_, str> {
    match v {
        Some(Value::Number(n)) => Cow::Owned(n.to_string()),
        _ => Cow::Borrowed("0"),
    }
}

fn or_else<'v>(first: Cow<'v, str>, second: impl FnOnce() -> Cow<'v, str>) -> Cow<'v, str> {
    if first.is_empty() {
        second()
    } else {
        first
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldOp {
    Equals,
    NotEquals,
}

#[derive(Debug, Clone, PartialEq)]
struct FieldTerm {
    field: &'static str,
    op: FieldOp,
    value: String,
}

/// A field selector for one resource: terms that must all hold. The default value selects everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector {
    kind: FieldKind,
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter for `resource` (a plural resource name) as
    /// upstream's `fields.ParseSelector` followed by the resource's field-label conversion.
    ///
    /// # Errors
    ///
    /// A term without operator, a bad escape, a field the resource does not support, or input over
    /// the bounds, worded as upstream.
    pub fn parse(resource: &str, s: &str) -> Result<FieldSelector, SelectorError> {
        if s.len() > MAX_SELECTOR_BYTES {
            return Err(SelectorError::new(format!(
                "field selector is too long: {} bytes (the limit is {MAX_SELECTOR_BYTES})",
                s.len()
            )));
        }
        let mut parts = split_terms(s);
        parts.sort_unstable();
        parts.retain(|part| !part.is_empty());
        if parts.len() > MAX_REQUIREMENTS {
            return Err(SelectorError::new(format!(
                "field selector has too many requirements: {} (the limit is {MAX_REQUIREMENTS})",
                parts.len()
            )));
        }
        let mut parsed = Vec::with_capacity(parts.len());
        for part in parts {
            let Some((lhs, op, rhs)) = split_term(part) else {
                return Err(SelectorError::new(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            parsed.push((lhs, op, unescape_value(rhs).map_err(SelectorError::new)?));
        }
        let kind = FieldKind::for_resource(resource);
        let mut terms = Vec::with_capacity(parsed.len());
        for (lhs, op, value) in parsed {
            let field = kind.convert(lhs).map_err(SelectorError::new)?;
            terms.push(FieldTerm { field, op, value });
        }
        Ok(FieldSelector { kind, terms })
    }

    /// True if the selector does not restrict anything.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Evaluates the selector against an object's JSON.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|term| {
            let have = self.kind.value(term.field, obj);
            match term.op {
                FieldOp::Equals => have == term.value.as_str(),
                FieldOp::NotEquals => have != term.value.as_str(),
            }
        })
    }

    /// If the selector requires `field` to equal one value, that value (upstream's
    /// `RequiresExactMatch`: the first `=`/`==` term on the field, in sorted term order).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|term| term.op == FieldOp::Equals && term.field == field)
            .map(|term| term.value.as_str())
    }

    /// If the selector pins `metadata.name` to one value, that name: the server may read that one
    /// key instead of listing. It must still apply [`matches`](Self::matches) to what it reads.
    pub fn exact_name(&self) -> Option<&str> {
        self.requires_exact_match(META_NAME)
    }
}

impl fmt::Display for FieldSelector {
    /// Upstream's `String()`: `field=value` / `field!=value` terms (values escaped) joined by `,`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, term) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match term.op {
                FieldOp::Equals => "=",
                FieldOp::NotEquals => "!=",
            };
            write!(f, "{}{op}{}", term.field, escape_value(&term.value))?;
        }
        Ok(())
    }
}

/// The comma-separated terms; backslash-escaped commas stay inside their term.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first operator (`!=`, then `==`, then `=` at each position); the field name
/// cannot escape anything.
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (symbol, op) in [
            ("!=", FieldOp::NotEquals),
            ("==", FieldOp::Equals),
            ("=", FieldOp::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(symbol) {
                return Some((&term[..i], op, value));
            }
        }
    }
    None
}

/// Upstream's `EscapeValue`.
fn escape_value(s: &str) -> Cow<'_, str> {
    if !s.contains(['\\', ',', '=']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// Upstream's `UnescapeValue`, with its error texts.
fn unescape_value(s: &str) -> Result<String, String> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(format!("invalid field selector: invalid escape sequence: \\{c}"));
            }
            out.push(c);
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' || c == '=' {
            // Go prints the rune with %v, i.e. as its code point number.
            return Err(format!(
                "invalid field selector: unescaped character in value: {}",
                u32::from(c)
            ));
        } else {
            out.push(c);
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".to_owned());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Go formatting helpers
// ---------------------------------------------------------------------------------------------

/// Go's `%q` for a string: the validation module's, one implementation for both.
use crate::validation::go_quote;

/// A string as Go's `encoding/json` writes it (HTML-safe escapes included).
fn go_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn parse_err(s: &str) -> String {
        match LabelSelector::parse(s) {
            Ok(sel) => panic!("{s:?} parsed as {sel:?}, expected an error"),
            Err(e) => e.message,
        }
    }

    fn field_err(resource: &str, s: &str) -> String {
        match FieldSelector::parse(resource, s) {
            Ok(sel) => panic!("{s:?} parsed as {sel:?}, expected an error"),
            Err(e) => e.message,
        }
    }

    fn fsel(resource: &str, s: &str) -> FieldSelector {
        FieldSelector::parse(resource, s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    const NAME_REGEX_ERROR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end \
        with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is \
        '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    const VALUE_REGEX_ERROR: &str = "a valid label must be an empty string or consist of alphanumeric characters, \
        '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or \
        '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

    // --- label selectors: parsing -------------------------------------------------------------

    fn tokens(s: &str) -> Vec<Token> {
        let mut lexer = Lexer { s, pos: 0 };
        let mut out = Vec::new();
        loop {
            let (token, _) = lexer.lex();
            if token == Token::EndOfString {
                return out;
            }
            out.push(token);
        }
    }

    #[test]
    fn lexer_returns_the_longest_token() {
        // Upstream's TestLexer and TestLexerSequence.
        use Token::*;
        for (input, token) in [
            ("", EndOfString),
            (",", Comma),
            ("notin", NotIn),
            ("in", In),
            ("=", Equals),
            ("==", DoubleEquals),
            (">", GreaterThan),
            ("<", LessThan),
            ("!", DoesNotExist),
            ("!=", NotEquals),
            ("(", OpenPar),
            (")", ClosedPar),
            ("~", Identifier),
            ("||", Identifier),
        ] {
            let (got, literal) = Lexer { s: input, pos: 0 }.lex();
            assert_eq!((got, literal), (token, input), "{input:?}");
        }
        for (input, want) in [
            ("key in ( value )", vec![Identifier, In, OpenPar, Identifier, ClosedPar]),
            (
                "key notin ( value1, value2 )",
                vec![Identifier, NotIn, OpenPar, Identifier, Comma, Identifier, ClosedPar],
            ),
            ("!key", vec![DoesNotExist, Identifier]),
            ("x in (),y", vec![Identifier, In, OpenPar, ClosedPar, Comma, Identifier]),
            (
                "== != (), = notin",
                vec![DoubleEquals, NotEquals, OpenPar, ClosedPar, Comma, Equals, NotIn],
            ),
            ("key>2", vec![Identifier, GreaterThan, Identifier]),
            ("key<1", vec![Identifier, LessThan, Identifier]),
            ("a!==b", vec![Identifier, NotEquals, Equals, Identifier]),
            ("a>=b", vec![Identifier, GreaterThan, Equals, Identifier]),
        ] {
            assert_eq!(tokens(input), want, "{input:?}");
        }
    }

    #[test]
    fn good_selectors_restring_without_spaces() {
        // Upstream's TestSelectorParse.
        for s in [
            "x=a,y=b,z=c",
            "",
            "x!=a,y=b",
            "x=",
            "x= ",
            "x=,z= ",
            "x= ,z= ",
            "!x",
            "x>1",
            "x>1,z<5",
        ] {
            let sel = LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(sel.to_string(), s.replace(' ', ""), "{s:?}");
        }
    }

    #[test]
    fn bad_selectors_are_rejected() {
        for s in [
            "x=a||y=b",
            "x==a==b",
            "!x=a",
            "x<a",
            "x,,y",
            ",x,y",
            "x nott in (y)",
            "a in (xyz),",
        ] {
            assert!(LabelSelector::parse(s).is_err(), "{s:?} should not parse");
        }
        for s in [
            "a in (xyz)b notin ()",
            "a in (xyz abc)",
            "a notin(",
            "a (",
            "(",
            "!",
            "x in",
            "x in (a",
            "a=(b)",
        ] {
            assert!(LabelSelector::parse(s).is_err(), "{s:?} should not parse");
        }
    }

    #[test]
    fn parse_is_deterministic() {
        let a = LabelSelector::parse("x=a,a=x").expect("parses");
        let b = LabelSelector::parse("a=x,x=a").expect("parses");
        assert_eq!(a.to_string(), b.to_string());
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "a=x,x=a");
    }

    #[test]
    fn set_based_parser_table() {
        // Upstream's TestSetSelectorParser: input and canonical output.
        let cases = [
            ("", ""),
            ("\rx", "x"),
            (
                "this-is-a-dns.domain.com/key-with-dash",
                "this-is-a-dns.domain.com/key-with-dash",
            ),
            (
                "this-is-another-dns.domain.com/key-with-dash in (so,what)",
                "this-is-another-dns.domain.com/key-with-dash in (so,what)",
            ),
            (
                "0.1.2.domain/99 notin (10.10.100.1, tick.tack.clock)",
                "0.1.2.domain/99 notin (10.10.100.1,tick.tack.clock)",
            ),
            ("foo  in\t (abc)", "foo in (abc)"),
            ("x notin\n (abc)", "x notin (abc)"),
            ("x  notin\t\t(abc,def)", "x notin (abc,def)"),
            ("x in (abc,def)", "x in (abc,def)"),
            ("x in (abc,)", "x in (,abc)"),
            ("x in (abc,abc)", "x in (abc)"),
            ("x in ()", "x in ()"),
            ("x in (a,,)", "x in (,a)"),
            ("x in (a,,,)", "x in (,a)"),
            ("x in (a,,,,,,)", "x in (,a)"),
            ("x in (a,,a,,a,,a,,)", "x in (,a)"),
            ("x notin (abc,,def),bar,z in (),w", "bar,w,x notin (,abc,def),z in ()"),
            ("x,y in (a)", "x,y in (a)"),
            ("x=a", "x=a"),
            ("x>1", "x>1"),
            ("x<7", "x<7"),
            ("x=a,y!=b", "x=a,y!=b"),
            ("x=a,y!=b,z in (h,i,j)", "x=a,y!=b,z in (h,i,j)"),
            ("x notin ( )", "x notin ()"),
            ("x notin (, a)", "x notin (,a)"),
            ("a ", "a"),
            ("a in (x,y,notin, z,in)", "a in (in,notin,x,y,z)"),
            ("notin=in", "notin=in"),
            ("in in (in)", "in in (in)"),
            ("x==a", "x==a"),
        ];
        for (input, output) in cases {
            let sel = LabelSelector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(sel.to_string(), output, "{input:?}");
        }
    }

    #[test]
    fn requirements_expose_key_operator_and_sorted_values() {
        let sel = LabelSelector::parse("x in (b,a,b),!y,z").expect("parses");
        let reqs = sel.requirements();
        assert_eq!(reqs.len(), 3);
        assert_eq!((reqs[0].key(), reqs[0].operator()), ("x", Operator::In));
        assert_eq!(reqs[0].values(), ["a".to_owned(), "b".to_owned()]);
        assert_eq!((reqs[1].key(), reqs[1].operator()), ("y", Operator::DoesNotExist));
        assert_eq!((reqs[2].key(), reqs[2].operator()), ("z", Operator::Exists));
        assert!(reqs[2].values().is_empty());
        assert_eq!(Operator::NotIn.as_str(), "notin");
    }

    #[test]
    fn syntax_errors_carry_upstreams_messages() {
        let cases = [
            ("!", "unable to parse requirement: found '', expected: identifier"),
            (
                "x nott in (y)",
                "unable to parse requirement: found 'nott', expected: in, notin, =, ==, !=, gt, lt",
            ),
            (
                "a !b",
                "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt",
            ),
            (",x", "found ',', expected: !, identifier, or 'end of string'"),
            ("(", "found '(', expected: !, identifier, or 'end of string'"),
            ("x,,y", "found ',', expected: identifier after ','"),
            ("a in (xyz),", "found '', expected: identifier after ','"),
            ("a in (xyz)b notin ()", "found 'b', expected: ',' or 'end of string'"),
            ("!x=a", "found '=', expected: ',' or 'end of string'"),
            (
                "a in (xyz abc)",
                "unable to parse requirement: found 'abc', expected: ',' or ')'",
            ),
            (
                "a notin(",
                "unable to parse requirement: found '', expected: ',', ')' or identifier",
            ),
            (
                "a in (=)",
                "unable to parse requirement: found '=', expected: ',', ')' or identifier",
            ),
            (
                "a in (b,=)",
                "unable to parse requirement: found '=', expected: ',', or identifier",
            ),
            ("a in b", "unable to parse requirement: found 'b' expected: '('"),
            (
                "a (",
                "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt",
            ),
            ("a=(b)", "unable to parse requirement: found '(', expected: identifier"),
            ("x==a==b", "found '==', expected: ',' or 'end of string'"),
        ];
        for (input, message) in cases {
            assert_eq!(parse_err(input), message, "{input:?}");
        }
    }

    #[test]
    fn validation_errors_carry_upstreams_messages() {
        assert_eq!(
            parse_err("-a"),
            format!("unable to parse requirement: <nil>: Invalid value: \"-a\": name part {NAME_REGEX_ERROR}")
        );
        assert_eq!(
            parse_err("x=a||y"),
            format!("unable to parse requirement: values[0][x]: Invalid value: \"a||y\": {VALUE_REGEX_ERROR}")
        );
        assert_eq!(
            parse_err("x<a"),
            "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        // An integer that is not a valid label value fails the label-value check instead.
        assert_eq!(
            parse_err("x>-1"),
            format!("unable to parse requirement: values[0][x]: Invalid value: \"-1\": {VALUE_REGEX_ERROR}")
        );
        assert_eq!(
            parse_err("/x"),
            "unable to parse requirement: <nil>: Invalid value: \"/x\": prefix part must be non-empty"
        );
        assert_eq!(
            parse_err("Example.com/x"),
            "unable to parse requirement: <nil>: Invalid value: \"Example.com/x\": prefix part a lowercase RFC 1123 \
             subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an \
             alphanumeric character (e.g. 'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        assert_eq!(
            parse_err("a/b/c"),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a valid label key {NAME_REGEX_ERROR} \
                 with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )
        );
        assert_eq!(
            parse_err("example.com/"),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"example.com/\": name part must be non-empty; \
                 name part {NAME_REGEX_ERROR}"
            )
        );
        let long_key = "k".repeat(64);
        assert_eq!(
            parse_err(&long_key),
            format!("unable to parse requirement: <nil>: Invalid value: \"{long_key}\": name part must be no more than 63 bytes")
        );
        let long_value = "v".repeat(64);
        assert_eq!(
            parse_err(&format!("k={long_value}")),
            format!("unable to parse requirement: values[0][k]: Invalid value: \"{long_value}\": must be no more than 63 bytes")
        );
        // Several bad values aggregate in brackets, in value order.
        assert_eq!(
            parse_err("x in (b-,a-)"),
            format!(
                "unable to parse requirement: [values[0][x]: Invalid value: \"a-\": {VALUE_REGEX_ERROR}, \
                 values[1][x]: Invalid value: \"b-\": {VALUE_REGEX_ERROR}]"
            )
        );
        // Non-ASCII keys are quoted as Go's %q does (printable runes kept).
        assert_eq!(
            parse_err("ключ"),
            format!("unable to parse requirement: <nil>: Invalid value: \"ключ\": name part {NAME_REGEX_ERROR}")
        );
        assert!(parse_err("a\"b").contains("Invalid value: \"a\\\"b\""));
    }

    #[test]
    fn valid_keys_and_values() {
        let max_name = "n".repeat(63);
        let max_value = "v".repeat(63);
        for s in [
            format!("{max_name}={max_value}"),
            format!("{}/{max_name}", "a".repeat(253)),
            "a.b-c.d/E.f_G-h=I.j_K-l".to_owned(),
            "1=2".to_owned(),
            "x in (A,b-2,c_3,d.4)".to_owned(),
        ] {
            assert!(LabelSelector::parse(&s).is_ok(), "{s:?}");
        }
        assert!(LabelSelector::parse(&format!("{}/a", "a".repeat(254))).is_err());
        assert!(LabelSelector::parse("a_/b").is_err());
        assert!(LabelSelector::parse("a..b/c").is_err());
    }

    #[test]
    fn nul_byte_ends_input_like_upstream() {
        // A NUL where a token starts ends the input; one inside an identifier only ends the identifier.
        assert_eq!(LabelSelector::parse("a=b \0junk").expect("parses").to_string(), "a=b");
        assert_eq!(parse_err("a=b\0c=d"), "found 'c', expected: ',' or 'end of string'");
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "x in (abc,def),y notin (jkl),z",
            "x notin (abc,def),y!=jkl,!z",
            "x notin (abc),y in (jkl,mno),z notin ()",
            "x=abc,y==jkl,z!=a,z",
            "x>2,y<8,z",
            "a.io/b in (,c),!d,e=",
        ] {
            let sel = LabelSelector::parse(s).expect("parses");
            assert_eq!(sel.to_string(), s);
            assert_eq!(LabelSelector::parse(&sel.to_string()).expect("reparses"), sel);
        }
    }

    #[test]
    fn input_is_bounded() {
        let long = format!("a in ({})", vec!["v"; MAX_SELECTOR_BYTES].join(","));
        assert!(parse_err(&long).starts_with("label selector is too long"));
        let many: Vec<String> = (0..=MAX_REQUIREMENTS).map(|i| format!("k{i}")).collect();
        assert!(parse_err(&many.join(",")).contains("too many requirements"));
        let enough: Vec<String> = (0..MAX_REQUIREMENTS).map(|i| format!("k{i}")).collect();
        assert_eq!(
            LabelSelector::parse(&enough.join(","))
                .expect("parses")
                .requirements()
                .len(),
            MAX_REQUIREMENTS
        );
    }

    // --- label selectors: matching ------------------------------------------------------------

    #[test]
    fn matching_table() {
        // Upstream's TestSelectorMatches and TestRequirementSelectorMatching.
        let cases = [
            ("", json!({"x": "y"}), true),
            ("x=y", json!({"x": "y"}), true),
            ("x=y,z=w", json!({"x": "y", "z": "w"}), true),
            ("x!=y,z!=w", json!({"x": "z", "z": "a"}), true),
            ("notin=in", json!({"notin": "in"}), true),
            ("x", json!({"x": "z"}), true),
            ("!x", json!({"y": "z"}), true),
            ("x>1", json!({"x": "2"}), true),
            ("x<1", json!({"x": "0"}), true),
            ("x=z", json!({}), false),
            ("x=y", json!({"x": "z"}), false),
            ("x=y,z=w", json!({"x": "w", "z": "w"}), false),
            ("x!=y,z!=w", json!({"x": "z", "z": "w"}), false),
            ("x", json!({"y": "z"}), false),
            ("!x", json!({"x": "z"}), false),
            ("x>1", json!({"x": "0"}), false),
            ("x<1", json!({"x": "2"}), false),
            ("x>1", json!({"x": "v2"}), false),
            ("x>1", json!({}), false),
            ("x in (foo),y notin (alpha)", json!({"x": "foo", "y": "baz"}), true),
            ("x in (foo),y in (alpha)", json!({"x": "foo", "y": "baz"}), false),
            ("x notin (),y", json!({"y": ""}), true),
            ("!x,y", json!({"y": ""}), true),
            ("x notin (),!y", json!({"y": ""}), false),
            ("x in ()", json!({"y": "baz"}), false),
            ("x in ()", json!({"x": ""}), true),
            ("x=", json!({"x": ""}), true),
            ("x!=", json!({}), true),
            ("foo=bar,baz=blah", json!({"foo": "bar", "baz": "blah"}), true),
            (
                "foo=bar,foobar=bar,baz=blah",
                json!({"foo": "bar", "baz": "blah"}),
                false,
            ),
        ];
        for (selector, set, want) in cases {
            let sel = LabelSelector::parse(selector).expect("parses");
            let set = labels(set);
            assert_eq!(sel.matches(Some(&set)), want, "{selector:?} on {set:?}");
        }
    }

    #[test]
    fn absent_labels_are_an_empty_set() {
        assert!(LabelSelector::parse("").expect("parses").matches(None));
        assert!(LabelSelector::parse("!a,b!=c,d notin (e)")
            .expect("parses")
            .matches(None));
        assert!(!LabelSelector::parse("a").expect("parses").matches(None));
        let sel = LabelSelector::parse("app=web").expect("parses");
        assert!(sel.matches_object(&json!({"metadata": {"name": "p", "labels": {"app": "web"}}})));
        assert!(!sel.matches_object(&json!({"metadata": {"name": "p"}})));
        assert!(!sel.matches_object(&json!({})));
    }

    #[test]
    fn empty_and_exact_match() {
        assert!(LabelSelector::parse("").expect("parses").is_empty());
        assert!(LabelSelector::parse(" , ").is_err());
        assert!(LabelSelector::default().is_empty());
        let sel = LabelSelector::parse("a=1,b in (2),c in (3,4),d!=5").expect("parses");
        assert!(!sel.is_empty());
        assert_eq!(sel.requires_exact_match("a"), Some("1"));
        assert_eq!(sel.requires_exact_match("b"), Some("2"));
        assert_eq!(sel.requires_exact_match("c"), None);
        assert_eq!(sel.requires_exact_match("d"), None);
        assert_eq!(sel.requires_exact_match("e"), None);
    }

    // --- label selectors: objects -------------------------------------------------------------

    #[test]
    fn from_json_converts_match_labels_and_expressions() {
        let sel = LabelSelector::from_json(&json!({
            "matchLabels": {"app": "web", "tier": "front"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "canary"]},
                {"key": "track", "operator": "NotIn", "values": ["beta"]},
                {"key": "owner", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist", "values": []}
            ]
        }))
        .expect("converts");
        assert_eq!(
            sel.to_string(),
            "app=web,env in (canary,prod),!legacy,owner,tier=front,track notin (beta)"
        );
        let good = labels(json!({"app": "web", "tier": "front", "env": "prod", "owner": "me"}));
        assert!(sel.matches(Some(&good)));
        let mut bad = good.clone();
        bad.insert("legacy".into(), json!("yes"));
        assert!(!sel.matches(Some(&bad)));
        let mut bad = good.clone();
        bad.insert("track".into(), json!("beta"));
        assert!(!sel.matches(Some(&bad)));
    }

    #[test]
    fn from_json_null_selects_nothing_and_empty_selects_everything() {
        let nothing = LabelSelector::from_json(&Value::Null).expect("converts");
        assert!(nothing.is_nothing());
        assert!(!nothing.is_empty());
        assert!(!nothing.matches(None));
        assert!(!nothing.matches(Some(&labels(json!({"a": "b"})))));
        assert_eq!(nothing.to_string(), "");
        for empty in [
            json!({}),
            json!({"matchLabels": {}, "matchExpressions": []}),
            json!({"matchLabels": null}),
        ] {
            let sel = LabelSelector::from_json(&empty).expect("converts");
            assert!(sel.is_empty());
            assert!(sel.matches(None));
        }
    }

    #[test]
    fn from_json_errors() {
        let err = |v: Value| LabelSelector::from_json(&v).expect_err("should fail").message;
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]})),
            "\"Equals\" is not a valid label selector operator"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "In"}]})),
            "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b", "<c>"]}]})),
            format!(
                "[values: Invalid value: [\"b\",\"\\u003cc\\u003e\"]: values set must be empty for exists and does not \
                 exist, values[1][a]: Invalid value: \"<c>\": {VALUE_REGEX_ERROR}]"
            )
        );
        assert_eq!(
            err(json!({"matchLabels": {"-a": "b"}})),
            format!("key: Invalid value: \"-a\": name part {NAME_REGEX_ERROR}")
        );
        assert_eq!(
            err(json!({"matchLabels": {"a": "b c"}})),
            format!("values[0][a]: Invalid value: \"b c\": {VALUE_REGEX_ERROR}")
        );
        assert!(err(json!({"matchLabels": {"a": 1}})).contains("must be a string"));
        assert!(err(json!({"matchExpressions": {}})).contains("must be an array"));
        assert!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}))
                .contains("array of strings")
        );
        assert!(err(json!("app=web")).contains("expected an object"));
    }

    #[test]
    fn from_map_is_an_unvalidated_equality_selector() {
        let sel = LabelSelector::from_map(&labels(json!({"b": "2", "a": "1"})));
        assert_eq!(sel.to_string(), "a=1,b=2");
        assert!(sel.matches_object(&json!({"metadata": {"labels": {"a": "1", "b": "2", "c": "3"}}})));
        assert!(!sel.matches_object(&json!({"metadata": {"labels": {"a": "1"}}})));
        assert!(LabelSelector::from_map(&Map::new()).is_empty());
        // Not validated, as upstream's SelectorFromSet.
        let odd = LabelSelector::from_map(&labels(json!({"a b": "c d"})));
        assert!(odd.matches(Some(&labels(json!({"a b": "c d"})))));
    }

    // --- field selectors ----------------------------------------------------------------------

    #[test]
    fn field_selector_parses_operators_and_sorts_terms() {
        let sel = fsel("pods", "status.phase!=Running,spec.nodeName==node-1,metadata.name=a");
        assert_eq!(
            sel.to_string(),
            "metadata.name=a,spec.nodeName=node-1,status.phase!=Running"
        );
        assert!(!sel.is_empty());
        for empty in ["", ",", ",,"] {
            let sel = fsel("pods", empty);
            assert!(sel.is_empty());
            assert!(sel.matches(&json!({})));
            assert_eq!(sel.to_string(), "");
        }
        assert!(FieldSelector::default().is_empty());
        // The value may be empty; the field name is taken up to the first operator.
        let sel = fsel("pods", "spec.nodeName=");
        assert!(sel.matches(&json!({"spec": {}})));
        assert!(!sel.matches(&json!({"spec": {"nodeName": "n"}})));
    }

    #[test]
    fn field_selector_escaping() {
        let sel = fsel("configmaps", r"metadata.name=a\,b\=c\\d");
        assert!(sel.matches(&json!({"metadata": {"name": r"a,b=c\d"}})));
        assert_eq!(sel.to_string(), r"metadata.name=a\,b\=c\\d");
        assert_eq!(sel.exact_name(), Some(r"a,b=c\d"));
        assert_eq!(
            field_err("configmaps", r"metadata.name=a\x"),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            field_err("configmaps", r"metadata.name=a\"),
            r"invalid field selector: invalid escape sequence: \"
        );
        assert_eq!(
            field_err("configmaps", "metadata.name=a=b"),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            field_err("pods", "spec.nodeName!=a=b"),
            "invalid field selector: unescaped character in value: 61"
        );
    }

    #[test]
    fn field_selector_syntax_errors() {
        assert_eq!(
            field_err("pods", "foo"),
            "invalid selector: 'foo'; can't understand 'foo'"
        );
        // Terms are checked in sorted order, so "b" fails before "metadata.name=a" is converted.
        assert_eq!(
            field_err("pods", "metadata.name=a,b"),
            "invalid selector: 'metadata.name=a,b'; can't understand 'b'"
        );
        assert_eq!(field_err("pods", "=x"), "field label not supported: ");
    }

    #[test]
    fn unsupported_fields_are_rejected_with_upstreams_text() {
        assert_eq!(field_err("pods", "foo=bar"), "field label not supported: foo");
        assert_eq!(
            field_err("pods", "spec.nodeName=a,spec.containers=b"),
            "field label not supported: spec.containers"
        );
        assert_eq!(
            field_err("nodes", "metadata.namespace=x"),
            "field label not supported: metadata.namespace"
        );
        assert_eq!(
            field_err("namespaces", "metadata.namespace=x"),
            "field label not supported: metadata.namespace"
        );
        assert_eq!(field_err("events", "message=x"), "field label not supported: message");
        assert_eq!(field_err("secrets", "data=x"), "field label not supported: data");
        assert_eq!(
            field_err("services", "spec.ports=x"),
            "field label not supported: spec.ports"
        );
        assert_eq!(
            field_err("jobs", "status.failed=1"),
            "field label not supported: status.failed"
        );
        let default = "\"spec.replicas\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"";
        for resource in [
            "deployments",
            "configmaps",
            "endpoints",
            "serviceaccounts",
            "leases",
            "endpointslices",
            "replicasets",
        ] {
            assert_eq!(field_err(resource, "spec.replicas=1"), default, "{resource}");
            assert!(
                FieldSelector::parse(resource, "metadata.name=a,metadata.namespace=b").is_ok(),
                "{resource}"
            );
        }
        // Only the field name is compared, exactly.
        assert!(FieldSelector::parse("pods", "Metadata.name=a").is_err());
        assert!(FieldSelector::parse("pods", " metadata.name=a").is_err());
    }

    #[test]
    fn pod_fields() {
        let pod = json!({
            "metadata": {"name": "web-0", "namespace": "prod"},
            "spec": {"nodeName": "node-1", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                     "serviceAccountName": "builder", "hostNetwork": true},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.7"}, {"ip": "fd00::7"}], "nominatedNodeName": "node-2"}
        });
        for (selector, want) in [
            ("metadata.name=web-0", true),
            ("metadata.namespace=prod", true),
            ("metadata.namespace!=prod", false),
            ("spec.nodeName=node-1", true),
            ("spec.host=node-1", true),
            ("spec.restartPolicy=Always", true),
            ("spec.schedulerName=default-scheduler", true),
            ("spec.serviceAccountName=builder", true),
            ("spec.hostNetwork=true", true),
            ("spec.hostNetwork!=true", false),
            ("status.phase=Running,spec.nodeName!=node-2", true),
            ("status.phase!=Running", false),
            ("status.podIP=10.0.0.7", true),
            ("status.podIPs=", true),
            ("status.podIPs=10.0.0.7", false),
            ("status.nominatedNodeName=node-2", true),
        ] {
            assert_eq!(fsel("pods", selector).matches(&pod), want, "{selector}");
        }
        assert_eq!(fsel("pods", "spec.host=n").to_string(), "spec.nodeName=n");
        let bare =
            json!({"metadata": {"name": "p"}, "spec": {"serviceAccount": "legacy"}, "status": {"podIP": "10.1.1.1"}});
        for (selector, want) in [
            ("spec.hostNetwork=false", true),
            ("spec.nodeName=", true),
            ("status.phase=", true),
            ("spec.serviceAccountName=legacy", true),
            ("status.podIP=10.1.1.1", true),
        ] {
            assert_eq!(fsel("pods", selector).matches(&bare), want, "{selector}");
        }
    }

    #[test]
    fn event_fields() {
        let event = json!({
            "metadata": {"name": "web-0.17", "namespace": "prod"},
            "involvedObject": {"kind": "Pod", "namespace": "prod", "name": "web-0", "uid": "u-1",
                               "apiVersion": "v1", "resourceVersion": "42", "fieldPath": "spec.containers{web}"},
            "reason": "Started", "type": "Normal", "source": {"component": "kubelet", "host": "node-1"},
            "reportingComponent": "kubelet-x"
        });
        for selector in [
            "involvedObject.kind=Pod,involvedObject.name=web-0,involvedObject.namespace=prod",
            "involvedObject.uid=u-1,involvedObject.apiVersion=v1,involvedObject.resourceVersion=42",
            "involvedObject.fieldPath=spec.containers{web}",
            "reason=Started,type=Normal,source=kubelet,reportingComponent=kubelet-x",
            "metadata.name=web-0.17,metadata.namespace=prod",
            "type!=Warning",
        ] {
            assert!(fsel("events", selector).matches(&event), "{selector}");
        }
        assert!(!fsel("events", "type=Warning").matches(&event));
        // `source` falls back to reportingComponent when source.component is empty.
        let modern = json!({"metadata": {"name": "e"}, "reportingComponent": "scheduler", "source": {}});
        assert!(fsel("events", "source=scheduler").matches(&modern));
        assert!(fsel("events", "involvedObject.kind=").matches(&modern));
    }

    #[test]
    fn node_namespace_secret_service_fields() {
        let node = json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}});
        assert!(fsel("nodes", "spec.unschedulable=true,metadata.name=n1").matches(&node));
        assert!(fsel("nodes", "spec.unschedulable=false").matches(&json!({"metadata": {"name": "n2"}, "spec": {}})));
        assert!(fsel("nodes", "spec.unschedulable!=true").matches(&json!({"metadata": {"name": "n3"}})));

        let ns = json!({"metadata": {"name": "kube-system"}, "status": {"phase": "Terminating"}});
        assert!(fsel("namespaces", "status.phase=Terminating").matches(&ns));
        assert!(!fsel("namespaces", "status.phase=Active").matches(&ns));

        let secret =
            json!({"metadata": {"name": "tok", "namespace": "default"}, "type": "kubernetes.io/service-account-token"});
        assert!(fsel("secrets", "type=kubernetes.io/service-account-token").matches(&secret));
        assert!(fsel("secrets", "type!=Opaque,metadata.namespace=default").matches(&secret));

        let svc = json!({"metadata": {"name": "dns", "namespace": "kube-system"}, "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10"}});
        assert!(fsel("services", "spec.type=ClusterIP,spec.clusterIP=10.96.0.10").matches(&svc));
        assert!(fsel("services", "spec.clusterIP!=None").matches(&svc));
    }

    #[test]
    fn counter_and_misc_fields() {
        let rs = json!({"metadata": {"name": "web-abc", "namespace": "prod"}, "status": {"replicas": 3}});
        assert!(fsel("replicasets", "status.replicas=3").matches(&rs));
        assert!(fsel("replicasets", "status.replicas!=0").matches(&rs));
        assert!(fsel("replicasets", "status.replicas=0").matches(&json!({"metadata": {"name": "x"}, "status": {}})));
        assert!(fsel("replicationcontrollers", "status.replicas=3").matches(&rs));
        let job = json!({"metadata": {"name": "j"}, "status": {"succeeded": 1}});
        assert!(fsel("jobs", "status.successful=1").matches(&job));
        assert!(fsel("jobs", "status.successful=0").matches(&json!({"metadata": {"name": "j"}})));
        let csr = json!({"metadata": {"name": "c"}, "spec": {"signerName": "kubernetes.io/kubelet-serving"}});
        assert!(fsel(
            "certificatesigningrequests",
            "spec.signerName=kubernetes.io/kubelet-serving"
        )
        .matches(&csr));
        // Cluster-scoped resources without a conversion function still accept metadata.namespace,
        // which is empty on them.
        let pv = json!({"metadata": {"name": "pv-1"}});
        assert!(fsel("persistentvolumes", "metadata.namespace=").matches(&pv));
        assert!(!fsel("persistentvolumes", "metadata.namespace=default").matches(&pv));
    }

    #[test]
    fn exact_name() {
        assert_eq!(fsel("pods", "metadata.name=x").exact_name(), Some("x"));
        assert_eq!(fsel("pods", "metadata.name==x").exact_name(), Some("x"));
        assert_eq!(
            fsel("pods", "metadata.namespace=ns,metadata.name=x").exact_name(),
            Some("x")
        );
        assert_eq!(fsel("pods", "metadata.name!=x").exact_name(), None);
        assert_eq!(fsel("pods", "metadata.name!=y,metadata.name=x").exact_name(), Some("x"));
        assert_eq!(fsel("pods", "spec.nodeName=x").exact_name(), None);
        assert_eq!(fsel("pods", "").exact_name(), None);
        assert_eq!(fsel("pods", "metadata.name=").exact_name(), Some(""));
        // Two names: the first in sorted term order, as upstream; matching then selects nothing.
        let two = fsel("pods", "metadata.name=b,metadata.name=a");
        assert_eq!(two.exact_name(), Some("a"));
        assert!(!two.matches(&json!({"metadata": {"name": "a"}})));
        assert_eq!(
            fsel("pods", "spec.nodeName=n1").requires_exact_match("spec.nodeName"),
            Some("n1")
        );
    }

    #[test]
    fn field_selector_input_is_bounded() {
        let long = format!("metadata.name={}", "a".repeat(MAX_SELECTOR_BYTES));
        assert!(field_err("pods", &long).starts_with("field selector is too long"));
        let many = vec!["metadata.name=a"; MAX_REQUIREMENTS + 1].join(",");
        assert!(field_err("pods", &many).contains("too many requirements"));
        let enough = vec!["metadata.name=a"; MAX_REQUIREMENTS].join(",");
        assert!(FieldSelector::parse("pods", &enough).is_ok());
    }

    #[test]
    fn go_formatting_helpers() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}\u{7f}é"), "\"a\\\"b\\\\c\\n\\x01\\x7fé\"");
        assert_eq!(
            go_json_string("a<b>&\"\n\u{1}"),
            "\"a\\u003cb\\u003e\\u0026\\\"\\n\\u0001\""
        );
        assert_eq!(aggregate(vec!["x".into(), "x".into()]), Some("x".into()));
        assert_eq!(
            aggregate(vec!["x".into(), "y".into(), "x".into()]),
            Some("[x, y]".into())
        );
        assert_eq!(aggregate(Vec::new()), None);
        assert_eq!(SelectorError::new("boom").to_string(), "boom");
    }
}
