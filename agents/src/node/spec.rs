//! What a container runs with: its command line and environment, from the pod's spec
//! and the objects it refers to, by the kubelet's rules. Pure functions: the agent
//! reads the ConfigMaps and Secrets a pod names and passes them in.
//!
//! - **Environment**, in the kubelet's order: `envFrom` sources in order (ConfigMaps and
//!   Secrets, each key with the source's `prefix`; keys that are not valid variable
//!   names, printable ASCII other than `=`, are skipped), then `env` in order, a later definition replacing an earlier
//!   one. `value` may refer to variables defined before it as `$(NAME)`; `valueFrom`
//!   reads a `fieldRef` (`metadata.name`, `metadata.namespace`, `metadata.uid`,
//!   `metadata.labels['k']`, `metadata.annotations['k']`, `spec.nodeName`,
//!   `spec.serviceAccountName`, `status.hostIP`, `status.hostIPs`, `status.podIP`,
//!   `status.podIPs`), a `resourceFieldRef` (`limits.cpu`, `limits.memory`,
//!   `requests.cpu`, `requests.memory`, with its divisor; an unset limit reads as the
//!   node's allocatable, as upstream), a `configMapKeyRef` or a `secretKeyRef` (a
//!   missing object or key is an error unless the reference is `optional`).
//! - **Command line**: `command` then `args`, each with `$(NAME)` expanded from the
//!   container's environment. A container without `command` cannot run here, since
//!   there is no image to take an entrypoint from: that is an error naming it.
//! - **Expansion** as upstream's: `$(NAME)` becomes the variable's value when it is
//!   defined and stays as written when not; `$$` is a literal `$`; anything else after
//!   `$` is kept.
//!
//! Errors carry the reason the kubelet reports in the container's waiting state
//! (`CreateContainerConfigError`, or `ErrImagePull` for the missing command) and its
//! message.
//!
//! Left out: the Service environment variables (`enableServiceLinks`), which need the
//! namespace's Services.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, DownwardAPIVolumeFile, Pod, Secret};

use crate::quantity;

/// Why a container cannot start, as its waiting state reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// `CreateContainerConfigError` or `ErrImagePull`.
    pub reason: &'static str,
    pub message: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

fn config_error(message: String) -> SpecError {
    SpecError {
        reason: "CreateContainerConfigError",
        message,
    }
}

/// What a pod's containers may read besides the pod: the objects it names (by name, in
/// the pod's namespace) and facts of the node.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
    /// The node's allocatable cpu (millicores) and memory (bytes): what an unset limit
    /// reads as.
    pub node_cpu_millis: u64,
    pub node_memory_bytes: u64,
    /// ServiceAccount tokens for the pod's projected volumes, by volume name and the
    /// index of the `serviceAccountToken` source in the volume's sources.
    pub tokens: BTreeMap<(String, usize), String>,
}

/// Expands `$(NAME)` references in `s` from `vars` (upstream's expansion rules).
pub fn expand(s: &str, vars: &[(String, String)]) -> String {
    let lookup = |name: &str| vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    // No closing parenthesis: kept as written.
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Whether `k` may be an environment variable's name: printable ASCII other than `=`
/// (upstream's relaxed rule, on by default since 1.32).
fn valid_env_name(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| (' '..='~').contains(&c) && c != '=')
}

fn set(vars: &mut Vec<(String, String)>, name: String, value: String) {
    match vars.iter_mut().find(|(k, _)| *k == name) {
        Some(slot) => slot.1 = value,
        None => vars.push((name, value)),
    }
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(String::from_utf8_lossy(&v.0).into_owned());
    }
    secret.string_data.as_ref().and_then(|d| d.get(key)).cloned()
}

fn config_map_value(cm: &ConfigMap, key: &str) -> Option<String> {
    if let Some(v) = cm.data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.clone());
    }
    cm.binary_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

/// `metadata.labels['k']` → `("metadata.labels", "k")`.
fn subscript(path: &str) -> Option<(&str, &str)> {
    let (head, rest) = path.split_once("['")?;
    Some((head, rest.strip_suffix("']")?))
}

fn field_value(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Result<String, SpecError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let v = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_owned(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_owned(),
        other => match subscript(other) {
            Some(("metadata.labels", k)) => meta.labels.as_ref().and_then(|l| l.get(k)).cloned().unwrap_or_default(),
            Some(("metadata.annotations", k)) => meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .cloned()
                .unwrap_or_default(),
            _ => return Err(config_error(format!("unsupported fieldRef: {other:?}"))),
        },
    };
    Ok(v)
}

/// A quantity in thousandths, if it is one and not negative.
fn milli(q: &str) -> Option<u64> {
    quantity::milli(q).and_then(|v| u64::try_from(v).ok())
}

/// A quantity in whole units (bytes), rounded up, if it is one and not negative.
fn units(q: &str) -> Option<u64> {
    quantity::value(q).and_then(|v| u64::try_from(v).ok())
}

/// A resourceFieldRef's value: the amount divided by the divisor, rounded up (as
/// upstream's `ExtractContainerResourceValue`).
fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
    sources: &Sources,
) -> Result<String, SpecError> {
    let resources = container.resources.as_ref();
    let pick = |which: &str, name: &str| {
        let map = match which {
            "limits" => resources.and_then(|r| r.limits.as_ref()),
            _ => resources.and_then(|r| r.requests.as_ref()),
        };
        map.and_then(|m| m.get(name)).map(|q| q.0.clone())
    };
    let (which, name) = resource
        .split_once('.')
        .ok_or_else(|| config_error(format!("unsupported resourceFieldRef: {resource:?}")))?;
    let invalid = |q: &str| config_error(format!("invalid quantity {q:?} for {resource}"));
    match name {
        "cpu" => {
            let millis = match pick(which, "cpu") {
                Some(q) => milli(&q).ok_or_else(|| invalid(&q))?,
                None if which == "limits" => sources.node_cpu_millis,
                None => 0,
            };
            let divisor_millis = match divisor {
                Some(d) if !d.is_empty() => milli(d).ok_or_else(|| invalid(d))?,
                _ => 1000,
            };
            if divisor_millis == 0 {
                return Err(config_error(format!("a divisor of 0 for {resource}")));
            }
            Ok(millis.div_ceil(divisor_millis).to_string())
        }
        "memory" | "ephemeral-storage" => {
            let bytes = match pick(which, name) {
                Some(q) => units(&q).ok_or_else(|| invalid(&q))?,
                None if which == "limits" && name == "memory" => sources.node_memory_bytes,
                None => 0,
            };
            let divisor_bytes = match divisor {
                Some(d) if !d.is_empty() => units(d).ok_or_else(|| invalid(d))?,
                _ => 1,
            };
            if divisor_bytes == 0 {
                return Err(config_error(format!("a divisor of 0 for {resource}")));
            }
            Ok(bytes.div_ceil(divisor_bytes).to_string())
        }
        _ => Err(config_error(format!("unsupported resourceFieldRef: {resource:?}"))),
    }
}

/// The content of one file of a downward API volume (or projection): a `fieldRef` of the
/// pod's metadata (`metadata.labels` and `metadata.annotations` whole, as upstream writes
/// them: `key="value"` lines in key order), or a `resourceFieldRef` of a container.
pub fn downward_file(pod: &Pod, file: &DownwardAPIVolumeFile, sources: &Sources) -> Result<String, SpecError> {
    if let Some(f) = &file.field_ref {
        let lines = |map: Option<&BTreeMap<String, String>>| {
            map.into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v:?}\n"))
                .collect::<String>()
        };
        return match f.field_path.as_str() {
            "metadata.labels" => Ok(lines(pod.metadata.labels.as_ref())),
            "metadata.annotations" => Ok(lines(pod.metadata.annotations.as_ref())),
            path if path.starts_with("metadata.") => field_value(pod, path, "", ""),
            other => Err(config_error(format!(
                "fieldRef {other:?} is not supported in a downward API volume"
            ))),
        };
    }
    if let Some(r) = &file.resource_field_ref {
        let name = r.container_name.as_deref().unwrap_or_default();
        let container = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
            .find(|c| c.name == name)
            .ok_or_else(|| config_error(format!("resourceFieldRef: container {name:?} not found")))?;
        let divisor = r.divisor.as_ref().map(|q| q.0.as_str());
        return resource_value(container, &r.resource, divisor, sources);
    }
    Err(config_error(format!(
        "the downward API file {:?} has neither fieldRef nor resourceFieldRef",
        file.path
    )))
}

/// A configMapKeyRef's or secretKeyRef's value: `found` is None without the object and
/// Some(None) without the key. Ok(None): an optional reference that sets nothing.
fn keyed(
    found: Option<Option<String>>,
    optional: bool,
    kind: &str,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Option<String>, SpecError> {
    match found {
        Some(Some(v)) => Ok(Some(v)),
        _ if optional => Ok(None),
        Some(None) => Err(config_error(format!(
            "couldn't find key {key} in {kind} {namespace}/{name}"
        ))),
        None => Err(config_error(format!("{} \"{name}\" not found", kind.to_lowercase()))),
    }
}

/// The container's environment, in the kubelet's order.
pub fn environment(
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
    host_ip: &str,
    sources: &Sources,
) -> Result<Vec<(String, String)>, SpecError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut vars: Vec<(String, String)> = Vec::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match sources.config_maps.get(&r.name) {
                Some(cm) => {
                    let mut entries: Vec<(String, String)> = cm.data.clone().unwrap_or_default().into_iter().collect();
                    for (k, v) in cm.binary_data.iter().flatten() {
                        entries.push((k.clone(), String::from_utf8_lossy(&v.0).into_owned()));
                    }
                    for (k, v) in entries {
                        let name = format!("{prefix}{k}");
                        if valid_env_name(&name) {
                            set(&mut vars, name, v);
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(config_error(format!("configmap \"{}\" not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            match sources.secrets.get(&r.name) {
                Some(secret) => {
                    let mut keys: Vec<String> = secret.data.iter().flatten().map(|(k, _)| k.clone()).collect();
                    keys.extend(secret.string_data.iter().flatten().map(|(k, _)| k.clone()));
                    for k in keys {
                        let name = format!("{prefix}{k}");
                        if let (true, Some(v)) = (valid_env_name(&name), secret_value(secret, &k)) {
                            set(&mut vars, name, v);
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(config_error(format!("secret \"{}\" not found", r.name))),
            }
        }
    }
    for e in container.env.iter().flatten() {
        let value = match &e.value_from {
            None => expand(e.value.as_deref().unwrap_or_default(), &vars),
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    field_value(pod, &f.field_path, pod_ip, host_ip)?
                } else if let Some(r) = &from.resource_field_ref {
                    let target = match r.container_name.as_deref() {
                        Some(name) if !name.is_empty() && name != container.name => pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.containers.iter().find(|c| c.name == name))
                            .ok_or_else(|| config_error(format!("resourceFieldRef: no container {name:?}")))?,
                        _ => container,
                    };
                    resource_value(target, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()), sources)?
                } else if let Some(r) = &from.config_map_key_ref {
                    let found = sources.config_maps.get(&r.name).map(|cm| config_map_value(cm, &r.key));
                    match keyed(found, r.optional == Some(true), "ConfigMap", namespace, &r.name, &r.key)? {
                        Some(v) => v,
                        None => continue,
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let found = sources.secrets.get(&r.name).map(|s| secret_value(s, &r.key));
                    match keyed(found, r.optional == Some(true), "Secret", namespace, &r.name, &r.key)? {
                        Some(v) => v,
                        None => continue,
                    }
                } else {
                    return Err(config_error(format!("env {}: valueFrom names no source", e.name)));
                }
            }
        };
        set(&mut vars, e.name.clone(), value);
    }
    Ok(vars)
}

/// The command line: `command` then `args`, each expanded from `env`.
pub fn command_line(container: &Container, env: &[(String, String)]) -> Result<Vec<String>, SpecError> {
    let command = container.command.clone().unwrap_or_default();
    if command.is_empty() {
        return Err(SpecError {
            reason: "ErrImagePull",
            message: format!(
                "container {:?} has no command: this node runs containers as local processes and cannot pull \
                 image {:?} for its entrypoint; set the container's command",
                container.name,
                container.image.as_deref().unwrap_or_default()
            ),
        });
    }
    Ok(command
        .iter()
        .chain(container.args.iter().flatten())
        .map(|a| expand(a, env))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1",
                         "labels": {"app": "web"}, "annotations": {"team": "blue"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "sa", "containers": containers},
        }))
        .expect("pod")
    }

    fn only_container(p: &Pod) -> &Container {
        &p.spec.as_ref().expect("spec").containers[0]
    }

    fn sources() -> Sources {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "cfg"},
            "data": {"COLOR": "red", "SIZE": "9", "1BAD": "x"}}))
        .expect("cm");
        let mut secret: Secret = serde_json::from_value(json!({"metadata": {"name": "creds"}})).expect("secret");
        secret.data = Some(BTreeMap::from([("PASSWORD".into(), ByteString(b"s3cret".to_vec()))]));
        Sources {
            config_maps: BTreeMap::from([("cfg".into(), cm)]),
            secrets: BTreeMap::from([("creds".into(), secret)]),
            node_cpu_millis: 4000,
            node_memory_bytes: 8 << 30,
            tokens: BTreeMap::new(),
        }
    }

    #[test]
    fn expansion_follows_upstream() {
        let vars = vec![("A".to_string(), "1".to_string()), ("B".to_string(), "two".to_string())];
        assert_eq!(expand("$(A)-$(B)", &vars), "1-two");
        assert_eq!(expand("$(C) stays", &vars), "$(C) stays");
        assert_eq!(expand("$$(A) is escaped", &vars), "$(A) is escaped");
        assert_eq!(expand("cost: $5 and $", &vars), "cost: $5 and $");
        assert_eq!(expand("$(A", &vars), "$(A");
        assert_eq!(expand("", &vars), "");
    }

    #[test]
    fn env_from_then_env_in_order_with_references_and_every_source() {
        let p = pod(json!([{
            "name": "app", "image": "web", "command": ["/bin/sh"],
            "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}},
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "creds"}}],
            "env": [
                {"name": "GREETING", "value": "hello $(CFG_COLOR)"},
                {"name": "CFG_SIZE", "value": "10"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['team']"}}},
                {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                {"name": "CPU_REQ_M", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
                {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "COLOR"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "PASSWORD"}}},
                {"name": "MAYBE", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
            ],
        }]));
        let env = environment(&p, only_container(&p), "127.128.0.5", "127.0.0.1", &sources()).expect("env");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CFG_COLOR"), Some("red"));
        assert_eq!(get("CFG_1BAD"), Some("x"));
        assert_eq!(get("PASSWORD"), Some("s3cret"));
        assert_eq!(get("GREETING"), Some("hello red"));
        assert_eq!(get("CFG_SIZE"), Some("10"), "env replaces envFrom");
        assert_eq!(
            env.iter().filter(|(n, _)| n == "CFG_SIZE").count(),
            1,
            "one definition per name"
        );
        assert_eq!(get("POD"), Some("web-1"));
        assert_eq!(get("NS"), Some("shop"));
        assert_eq!(get("IP"), Some("127.128.0.5"));
        assert_eq!(get("HOST"), Some("127.0.0.1"));
        assert_eq!(get("NODE"), Some("n1"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("TEAM"), Some("blue"));
        assert_eq!(get("MEM_MI"), Some("64"));
        assert_eq!(get("CPU_LIMIT"), Some("4"), "no limit: the node's allocatable");
        assert_eq!(get("CPU_REQ_M"), Some("250"));
        assert_eq!(get("COLOR"), Some("red"));
        assert_eq!(get("PW"), Some("s3cret"));
        assert_eq!(get("MAYBE"), None, "an optional missing source sets nothing");
        // envFrom keys that are not variable names are skipped.
        let mut odd = sources();
        let cm = odd.config_maps.get_mut("cfg").expect("cfg");
        cm.data
            .get_or_insert_with(BTreeMap::new)
            .insert("A=B".into(), "x".into());
        let p = pod(json!([{"name": "app", "command": ["x"], "envFrom": [{"configMapRef": {"name": "cfg"}}]}]));
        let env = environment(&p, only_container(&p), "", "", &odd).expect("env");
        assert!(env.iter().all(|(n, _)| n != "A=B"), "{env:?}");
        assert!(
            env.iter().any(|(n, _)| n == "1BAD"),
            "a leading digit is allowed: {env:?}"
        );
    }

    #[test]
    fn missing_sources_fail_as_the_kubelet_says() {
        let cases = [
            (
                json!({"configMapKeyRef": {"name": "nope", "key": "k"}}),
                "configmap \"nope\" not found",
            ),
            (
                json!({"configMapKeyRef": {"name": "cfg", "key": "nokey"}}),
                "couldn't find key nokey in ConfigMap shop/cfg",
            ),
            (
                json!({"secretKeyRef": {"name": "nope", "key": "k"}}),
                "secret \"nope\" not found",
            ),
            (
                json!({"secretKeyRef": {"name": "creds", "key": "nokey"}}),
                "couldn't find key nokey in Secret shop/creds",
            ),
        ];
        for (from, message) in cases {
            let p = pod(json!([{"name": "app", "command": ["x"], "env": [{"name": "V", "valueFrom": from}]}]));
            let e = environment(&p, only_container(&p), "", "", &sources()).expect_err("a missing source");
            assert_eq!(e.reason, "CreateContainerConfigError");
            assert_eq!(e.message, message);
        }
        let p = pod(json!([{"name": "app", "command": ["x"], "envFrom": [{"secretRef": {"name": "nope"}}]}]));
        let e = environment(&p, only_container(&p), "", "", &sources()).expect_err("a missing secret");
        assert_eq!(e.message, "secret \"nope\" not found");
    }

    #[test]
    fn the_command_line_is_command_then_args_expanded_and_required() {
        let p = pod(
            json!([{"name": "app", "image": "python:3", "command": ["python3", "-m"],
            "args": ["http.server", "$(PORT)", "--bind", "$(IP)"]}]),
        );
        let env = vec![
            ("PORT".to_string(), "8080".to_string()),
            ("IP".to_string(), "127.128.0.5".to_string()),
        ];
        assert_eq!(
            command_line(only_container(&p), &env).expect("command line"),
            ["python3", "-m", "http.server", "8080", "--bind", "127.128.0.5"]
        );
        let p = pod(json!([{"name": "app", "image": "nginx:1.27"}]));
        let e = command_line(only_container(&p), &[]).expect_err("no command");
        assert_eq!(e.reason, "ErrImagePull");
        assert!(
            e.message.contains("\"nginx:1.27\"") && e.message.contains("set the container's command"),
            "{e}"
        );
    }
}
