//! A pod's volumes as directories on this machine: `emptyDir`, and `configMap` and
//! `secret` volumes filled with their keys, under the pod's directory
//! (`<pod dir>/volumes/<volume name>/`).
//!
//! ConfigMap and Secret volumes are written as the kubelet's atomic writer writes them,
//! so that a program reading the volume never sees half an update: the files go into a
//! new directory named after the moment (`..2026_12_06_04_10_00.123456789`), a symlink
//! `..data` is switched to it in one `rename`, and each visible path is a symlink
//! through `..data` (`key -> ..data/key`). The previous directory is removed after the
//! switch. Writing the same content again changes nothing on disk.
//!
//! Keys and paths: every key of the object, or only the listed `items` at their `path`
//! (nested paths allowed; absolute paths, `..` elements and keys beginning with `..` are
//! refused, as the API refuses them); file modes from the item's `mode`, else
//! `defaultMode`, else 0644. A missing object, or a listed key it lacks, is an error
//! unless the volume is `optional` (then the volume is an empty directory).
//!
//! `downwardAPI` volumes show fields of the pod (see [`spec::downward_file`]). A
//! `projected` volume shows several sources in one directory: `configMap`, `secret` and
//! `downwardAPI` sources as the volumes of those kinds, and `serviceAccountToken` sources
//! from the tokens the agent asked the TokenRequest API for ([`Sources::tokens`]; see
//! [`super::pods`] for when they are renewed). A later source's path wins over an
//! earlier one's, as the kubelet merges them.
//!
//! Left out: `hostPath`, `clusterTrustBundle` and persistent volumes; size limits
//! of `emptyDir` (`sizeLimit`) and `medium: Memory` (a plain directory here);
//! ownership (`fsGroup`).

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use super::spec::{self, Sources};
use crate::error::{AgentError, Result};

/// The directory of the files being shown, switched atomically.
const DATA_LINK: &str = "..data";
const MODE_DEFAULT: u32 = 0o644;
/// Bounds: the API bounds an object at 1.5 MiB, so a volume's content cannot pass this.
const VOLUME_BYTES_MAX: usize = 4 << 20;

/// A volume's files: relative path → (content, mode).
type Files = BTreeMap<PathBuf, (Vec<u8>, u32)>;

fn io(what: String) -> impl FnOnce(std::io::Error) -> AgentError {
    move |e| AgentError::Io(what, e)
}

/// `path` if it is a relative path of normal elements, none starting with `..`.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    if path.is_empty() || p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) if !s.to_string_lossy().starts_with("..") => out.push(s),
            _ => return None,
        }
    }
    Some(out)
}

/// The files a configMap or secret volume shows: relative path → (content, mode).
fn files_of(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    what: &str,
) -> Result<Files> {
    let mode_of = |m: Option<i32>| m.or(default_mode).map_or(MODE_DEFAULT, |m| (m as u32) & 0o777);
    let mut out = BTreeMap::new();
    let mut bytes = 0usize;
    let mut add = |path: &str, content: &Vec<u8>, mode: u32| -> Result<()> {
        let rel = safe_relative(path)
            .ok_or_else(|| AgentError::Config(format!("{what}: the path {path:?} is not a plain relative path")))?;
        bytes += content.len();
        if bytes > VOLUME_BYTES_MAX {
            return Err(AgentError::Config(format!(
                "{what}: more than {VOLUME_BYTES_MAX} bytes"
            )));
        }
        out.insert(rel, (content.clone(), mode));
        Ok(())
    };
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                let content = data
                    .get(&item.key)
                    .ok_or_else(|| AgentError::Config(format!("{what}: no key {:?}", item.key)))?;
                add(&item.path, content, mode_of(item.mode))?;
            }
        }
        _ => {
            for (key, content) in data {
                add(key, content, mode_of(None))?;
            }
        }
    }
    Ok(out)
}

/// The files of a configMap or secret volume whose object holds `data` (None: the
/// object is missing); an optional volume with a missing object or key is empty.
fn object_files(
    data: Option<BTreeMap<String, Vec<u8>>>,
    optional: bool,
    (items, default_mode): (Option<&Vec<KeyToPath>>, Option<i32>),
    what: &str,
    not_found: impl FnOnce() -> String,
) -> Result<Files> {
    match data {
        Some(d) => match files_of(&d, items, default_mode, what) {
            Err(_) if optional => Ok(BTreeMap::new()),
            r => r,
        },
        None if optional => Ok(BTreeMap::new()),
        None => Err(AgentError::Config(not_found())),
    }
}

/// The keys of an object: its text values (as bytes), then its binary ones, which win
/// (a Secret's `data` over its `stringData`, as the API merges them).
fn keyed_data<'a>(
    text: Option<&'a BTreeMap<String, String>>,
    binary: Option<&'a BTreeMap<String, k8s_openapi::ByteString>>,
) -> BTreeMap<String, Vec<u8>> {
    let text = text
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()));
    let binary = binary.into_iter().flatten().map(|(k, v)| (k.clone(), v.0.clone()));
    text.chain(binary).collect()
}

/// The files of a ConfigMap (`kind` "configmap") or a Secret ("secret"), volume or
/// projection.
fn object_volume_files(
    sources: &Sources,
    kind: &str,
    name: &str,
    optional: Option<bool>,
    shape: (Option<&Vec<KeyToPath>>, Option<i32>),
    what: &str,
) -> Result<Files> {
    let data = match kind {
        "configmap" => sources
            .config_maps
            .get(name)
            .map(|o| keyed_data(o.data.as_ref(), o.binary_data.as_ref())),
        _ => sources
            .secrets
            .get(name)
            .map(|o| keyed_data(o.string_data.as_ref(), o.data.as_ref())),
    };
    object_files(data, optional == Some(true), shape, what, || {
        format!("{kind} \"{name}\" not found")
    })
}

/// The files of a downward API volume (or projection).
fn downward_files(
    pod: &Pod,
    sources: &Sources,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    what: &str,
) -> Result<Files> {
    let mut data = BTreeMap::new();
    let mut paths = Vec::new();
    for item in items {
        let content = spec::downward_file(pod, item, sources)
            .map_err(|e| AgentError::Config(format!("{what}: {}", e.message)))?;
        data.insert(item.path.clone(), content.into_bytes());
        paths.push(KeyToPath {
            key: item.path.clone(),
            path: item.path.clone(),
            mode: item.mode,
        });
    }
    files_of(&data, Some(&paths), default_mode, what)
}

/// Shows `files` in `dir` through a fresh timestamped directory and the `..data` link;
/// does nothing when they are what is shown already.
fn write_atomically(dir: &Path, files: &Files, now: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let data = dir.join(DATA_LINK);
    if let Ok(current) = std::fs::read_link(&data) {
        let shown = dir.join(&current);
        let same = files.iter().all(|(rel, (content, mode))| {
            let p = shown.join(rel);
            std::fs::read(&p).is_ok_and(|c| &c == content)
                && std::fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o777 == *mode)
        }) && count_files(&shown) == files.len();
        if same {
            return Ok(());
        }
    }
    // A name not taken yet, even if two writes fall in one clock tick.
    let mut fresh_name = format!("..{now}");
    let mut n = 0;
    while dir.join(&fresh_name).exists() {
        n += 1;
        fresh_name = format!("..{now}_{n}");
    }
    let fresh = dir.join(&fresh_name);
    for (rel, (content, mode)) in files {
        let path = fresh.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
        }
        std::fs::write(&path, content).map_err(io(format!("writing {}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
            .map_err(io(format!("setting the mode of {}", path.display())))?;
    }
    std::fs::create_dir_all(&fresh).map_err(io(format!("creating {}", fresh.display())))?;
    // The switch: a new link renamed over the old one.
    let staged = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&staged);
    symlink(&fresh_name, &staged).map_err(io(format!("linking {}", staged.display())))?;
    let previous = std::fs::read_link(&data).ok();
    std::fs::rename(&staged, &data).map_err(io(format!("switching {}", data.display())))?;
    // The visible names: the top element of each path, through ..data.
    let mut tops: Vec<String> = files
        .keys()
        .filter_map(|rel| rel.components().next())
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    tops.dedup();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::read_link(&link).is_ok_and(|t| t == Path::new(DATA_LINK).join(top)) {
            continue;
        }
        let staged = dir.join(format!("..{top}_tmp"));
        let _ = std::fs::remove_file(&staged);
        symlink(Path::new(DATA_LINK).join(top), &staged).map_err(io(format!("linking {}", staged.display())))?;
        std::fs::rename(&staged, &link).map_err(io(format!("linking {}", link.display())))?;
    }
    // Names no longer shown, and the previous directory.
    for entry in std::fs::read_dir(dir)
        .map_err(io(format!("listing {}", dir.display())))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !tops.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(previous) = previous.filter(|p| p != Path::new(&fresh_name)) {
        let _ = std::fs::remove_dir_all(dir.join(previous));
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

/// The moment as the kubelet names its data directories.
fn moment() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    now.strftime("%Y_%m_%d_%H_%M_%S.%f").to_string()
}

/// Where a pod's volume lives.
pub fn volume_dir(pod_dir: &Path, volume: &str) -> PathBuf {
    pod_dir.join("volumes").join(volume)
}

/// Creates or updates every volume of `pod` under `pod_dir` from `sources` (the
/// ConfigMaps and Secrets of the pod's namespace it names); returns each volume's name
/// and directory. Volumes of other kinds are an error naming them.
pub fn materialize(pod: &Pod, sources: &Sources, pod_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let volumes: &[Volume] = pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or_default();
    let now = moment();
    for v in volumes {
        let name = safe_relative(&v.name)
            .filter(|p| p.components().count() == 1)
            .ok_or_else(|| AgentError::Config(format!("volume name {:?}", v.name)))?;
        let dir = volume_dir(pod_dir, &name.to_string_lossy());
        if v.empty_dir.is_some() {
            std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        } else if let Some(cm) = &v.config_map {
            let what = format!("configMap volume {:?}", v.name);
            let files = object_volume_files(
                sources,
                "configmap",
                &cm.name,
                cm.optional,
                (cm.items.as_ref(), cm.default_mode),
                &what,
            )?;
            write_atomically(&dir, &files, &now)?;
        } else if let Some(secret) = &v.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            let what = format!("secret volume {:?}", v.name);
            let files = object_volume_files(
                sources,
                "secret",
                &name,
                secret.optional,
                (secret.items.as_ref(), secret.default_mode),
                &what,
            )?;
            write_atomically(&dir, &files, &now)?;
        } else if let Some(d) = &v.downward_api {
            let what = format!("downwardAPI volume {:?}", v.name);
            let files = downward_files(
                pod,
                sources,
                d.items.as_deref().unwrap_or_default(),
                d.default_mode,
                &what,
            )?;
            write_atomically(&dir, &files, &now)?;
        } else if let Some(p) = &v.projected {
            let mut files = BTreeMap::new();
            for (i, source) in p.sources.iter().flatten().enumerate() {
                let what = format!("projected volume {:?}, source {i}", v.name);
                let default_mode = p.default_mode;
                let more = if let Some(cm) = &source.config_map {
                    object_volume_files(
                        sources,
                        "configmap",
                        &cm.name,
                        cm.optional,
                        (cm.items.as_ref(), default_mode),
                        &what,
                    )?
                } else if let Some(secret) = &source.secret {
                    object_volume_files(
                        sources,
                        "secret",
                        &secret.name,
                        secret.optional,
                        (secret.items.as_ref(), default_mode),
                        &what,
                    )?
                } else if let Some(d) = &source.downward_api {
                    downward_files(
                        pod,
                        sources,
                        d.items.as_deref().unwrap_or_default(),
                        default_mode,
                        &what,
                    )?
                } else if let Some(t) = &source.service_account_token {
                    let token = sources
                        .tokens
                        .get(&(v.name.clone(), i))
                        .ok_or_else(|| AgentError::Config(format!("{what}: no service account token yet")))?;
                    let mut map = BTreeMap::new();
                    map.insert(t.path.clone(), token.clone().into_bytes());
                    files_of(&map, None, default_mode, &what)?
                } else {
                    return Err(AgentError::Config(format!(
                        "{what}: only configMap, secret, downwardAPI and serviceAccountToken sources are supported on this node"
                    )));
                };
                files.extend(more);
            }
            write_atomically(&dir, &files, &now)?;
        } else {
            return Err(AgentError::Config(format!(
                "volume {:?}: only emptyDir, configMap, secret, downwardAPI and projected volumes are supported on this node",
                v.name
            )));
        }
        out.push((v.name.clone(), dir));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn pod(volumes: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c"}], "volumes": volumes}}))
        .expect("pod")
    }

    fn sources(color: &str) -> Sources {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "cfg"},
            "data": {"color": color, "size": "9"}}))
        .expect("cm");
        let mut secret: Secret = serde_json::from_value(json!({"metadata": {"name": "creds"}})).expect("secret");
        secret.data = Some(BTreeMap::from([("password".into(), ByteString(b"s3cret".to_vec()))]));
        Sources {
            config_maps: BTreeMap::from([("cfg".into(), cm)]),
            secrets: BTreeMap::from([("creds".into(), secret)]),
            ..Sources::default()
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn volumes_show_their_keys_through_the_data_link_and_update_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = pod(json!([
            {"name": "scratch", "emptyDir": {}},
            {"name": "config", "configMap": {"name": "cfg"}},
            {"name": "picked", "configMap": {"name": "cfg", "defaultMode": 0o600,
                "items": [{"key": "color", "path": "nested/colour"}, {"key": "size", "path": "size", "mode": 0o640}]}},
            {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
        ]));
        let made = materialize(&p, &sources("red"), dir.path()).expect("materialize");
        assert_eq!(
            made.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["scratch", "config", "picked", "creds"]
        );
        let config = volume_dir(dir.path(), "config");
        assert!(volume_dir(dir.path(), "scratch").is_dir());
        assert_eq!(std::fs::read_to_string(config.join("color")).expect("color"), "red");
        assert_eq!(
            std::fs::read_link(config.join("color")).expect("a link"),
            Path::new("..data/color")
        );
        assert_eq!(mode(&config.join("size")), 0o644);
        let picked = volume_dir(dir.path(), "picked");
        assert_eq!(
            std::fs::read_to_string(picked.join("nested/colour")).expect("nested"),
            "red"
        );
        assert_eq!(mode(&picked.join("nested/colour")), 0o600);
        assert_eq!(mode(&picked.join("size")), 0o640);
        assert!(!picked.join("color").exists(), "only the listed items");
        let creds = volume_dir(dir.path(), "creds");
        assert_eq!(
            std::fs::read_to_string(creds.join("password")).expect("password"),
            "s3cret"
        );
        assert_eq!(mode(&creds.join("password")), 0o400);

        // The same content again: nothing moves.
        let before = std::fs::read_link(config.join(DATA_LINK)).expect("..data");
        materialize(&p, &sources("red"), dir.path()).expect("again");
        assert_eq!(std::fs::read_link(config.join(DATA_LINK)).expect("..data"), before);
        // A change: a new directory, the old one gone.
        materialize(&p, &sources("blue"), dir.path()).expect("update");
        assert_eq!(std::fs::read_to_string(config.join("color")).expect("color"), "blue");
        let after = std::fs::read_link(config.join(DATA_LINK)).expect("..data");
        assert_ne!(after, before);
        assert!(!config.join(&before).exists(), "the previous data directory is removed");
    }

    #[test]
    fn missing_objects_and_keys_fail_unless_optional_and_bad_paths_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = |volumes: serde_json::Value| {
            materialize(&pod(volumes), &sources("red"), dir.path())
                .expect_err("refused")
                .to_string()
        };
        assert!(err(json!([{"name": "v", "configMap": {"name": "nope"}}])).contains("configmap \"nope\" not found"));
        assert!(err(json!([{"name": "v", "secret": {"secretName": "nope"}}])).contains("secret \"nope\" not found"));
        assert!(
            err(json!([{"name": "v", "configMap": {"name": "cfg", "items": [{"key": "x", "path": "x"}]}}]))
                .contains("no key \"x\"")
        );
        for bad in ["/etc/passwd", "../up", "a/../../b", "..hidden"] {
            let e = err(json!([{"name": "v", "configMap": {"name": "cfg", "items": [{"key": "color", "path": bad}]}}]));
            assert!(e.contains("not a plain relative path"), "{bad}: {e}");
        }
        assert!(err(json!([{"name": "v", "hostPath": {"path": "/"}}]))
            .contains("only emptyDir, configMap, secret, downwardAPI and projected"));
        let ok = materialize(
            &pod(json!([{"name": "v", "configMap": {"name": "nope", "optional": true}}])),
            &sources("red"),
            dir.path(),
        )
        .expect("optional");
        assert!(ok[0].1.is_dir());
    }

    #[test]
    fn projected_volumes_merge_tokens_objects_and_pod_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = pod(json!([
            {"name": "kube-api-access-x", "projected": {"defaultMode": 0o640, "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "cfg", "items": [{"key": "color", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
                {"secret": {"name": "creds"}},
            ]}},
            {"name": "info", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "app", "fieldRef": {"fieldPath": "metadata.labels['app']"}},
                {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}},
            ]}},
        ]));
        p.metadata.labels = Some(BTreeMap::from([
            ("app".into(), "web".into()),
            ("tier".into(), "a b".into()),
        ]));
        let mut s = sources("red");
        s.node_memory_bytes = 512 << 20;
        // No token yet: the volume cannot be written.
        let err = materialize(&p, &s, dir.path()).expect_err("no token");
        assert!(err.to_string().contains("no service account token yet"), "{err}");
        s.tokens.insert(("kube-api-access-x".into(), 0), "tok-1".into());
        materialize(&p, &s, dir.path()).expect("volumes");
        let access = volume_dir(dir.path(), "kube-api-access-x");
        let read = |rel: &str| std::fs::read_to_string(access.join(rel)).expect(rel);
        assert_eq!(read("token"), "tok-1");
        assert_eq!(read("ca.crt"), "red");
        assert_eq!(read("namespace"), "default");
        assert_eq!(read("password"), "s3cret");
        assert_eq!(mode(&access.join("token")), 0o640);
        let info = volume_dir(dir.path(), "info");
        assert_eq!(
            std::fs::read_to_string(info.join("labels")).expect("labels"),
            "app=\"web\"\ntier=\"a b\"\n"
        );
        assert_eq!(std::fs::read_to_string(info.join("app")).expect("app"), "web");
        assert_eq!(
            std::fs::read_to_string(info.join("mem")).expect("mem"),
            "512",
            "an unset limit is the node's"
        );
        // A renewed token replaces the old one through the data link.
        s.tokens.insert(("kube-api-access-x".into(), 0), "tok-2".into());
        materialize(&p, &s, dir.path()).expect("volumes");
        assert_eq!(read("token"), "tok-2");
    }
}
