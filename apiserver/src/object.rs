//! Objects as JSON: metadata accessors, the system fields the server sets (uid,
//! creationTimestamp, resourceVersion), generated names, and decoding a body into its
//! Kubernetes type (k8s-openapi) so that a field of the wrong type is refused, as the
//! upstream apiserver refuses it, and unknown fields are dropped.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, Result};
use crate::resources::{with_kind_type, KindType, ResourceType};
use crate::storage::Kv;

/// Largest object stored, as etcd's request limit (1.5 MiB).
pub const OBJECT_BYTES_MAX: usize = 1536 * 1024;

pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

/// The object's metadata, created if missing (the object must be a JSON object).
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(field)).and_then(Value::as_str)
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

pub fn now_unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `secs` since the epoch as RFC 3339 in UTC (`2026-11-26T20:00:00Z`), as Kubernetes
/// writes timestamps.
pub fn rfc3339(secs: i64) -> String {
    let (y, m, d) = crate::table::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn now() -> String {
    rfc3339(now_unix_s())
}

/// A random (version 4) UUID.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `generateName` + 5 random characters from upstream's alphabet (no vowels, no
/// look-alike digits).
pub fn generate_name(base: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    // Upstream truncates the base so that the name stays within 63 characters.
    let base: String = base.chars().take(58).collect();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char)
        .collect();
    format!("{base}{suffix}")
}

/// Decodes a stored value and stamps it with its resourceVersion.
pub fn from_kv(kv: &Kv) -> Result<Value> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::Internal(format!("stored object {:?} is not JSON: {e}", kv.key)))?;
    if !obj.is_object() {
        return Err(ApiError::Internal(format!(
            "stored object {:?} is not a JSON object",
            kv.key
        )));
    }
    set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

pub fn set_resource_version(obj: &mut Value, rev: i64) {
    meta_mut(obj).insert("resourceVersion".into(), json!(rev.to_string()));
}

/// The object as stored: without its resourceVersion (the key's mod_revision is that)
/// and within the size limit.
pub fn to_stored(obj: &Value) -> Result<Bytes> {
    let mut obj = obj.clone();
    let m = meta_mut(&mut obj);
    m.remove("resourceVersion");
    m.remove("selfLink");
    let bytes = serde_json::to_vec(&obj).map_err(|e| ApiError::Internal(format!("encoding: {e}")))?;
    if bytes.len() > OBJECT_BYTES_MAX {
        return Err(ApiError::TooLarge(format!(
            "object is too large: {} bytes, the limit is {OBJECT_BYTES_MAX}",
            bytes.len()
        )));
    }
    Ok(Bytes::from(bytes))
}

/// A resourceVersion as the store revision it names.
pub fn parse_rv(rv: &str) -> Result<i64> {
    rv.parse::<i64>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::BadRequest(format!("invalid resource version: \"{rv}\"")))
}

fn via<T: DeserializeOwned + Serialize>(rt: &ResourceType, obj: Value) -> Result<Value> {
    let typed: T = serde_json::from_value(obj).map_err(|e| {
        ApiError::BadRequest(format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: {e}",
            kind = rt.kind,
            v = rt.version
        ))
    })?;
    serde_json::to_value(typed).map_err(|e| ApiError::Internal(format!("encoding: {e}")))
}

/// Decodes `obj` as its Kubernetes type and encodes it again: a field of the wrong type
/// is a 400, unknown fields go, and the shape is the one clients' strict models expect.
pub fn normalize(rt: &ResourceType, obj: Value) -> Result<Value> {
    struct Normalize<'a> {
        rt: &'a ResourceType,
        obj: Value,
    }
    impl KindType for Normalize<'_> {
        type Output = Result<Value>;
        fn with<T>(self) -> Result<Value>
        where
            T: DeserializeOwned + Serialize + k8s_openapi::schemars::JsonSchema,
        {
            via::<T>(self.rt, self.obj)
        }
    }
    match with_kind_type(rt.kind, Normalize { rt, obj }) {
        Ok(result) => result,
        // A kind without a type passes as it is (nothing to check it against).
        Err(unknown) => Ok(unknown.obj),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_723_259), "2026-11-26T20:00:59Z");
    }

    #[test]
    fn uids_and_generated_names_have_upstream_shapes() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        let n = generate_name("web-");
        assert!(n.starts_with("web-") && n.len() == 9, "{n}");
        assert_ne!(generate_name("x-"), generate_name("x-"));
    }

    #[test]
    fn normalize_refuses_wrong_types_and_drops_unknown_fields() {
        let pods = ResourceType::by_kind("Pod").expect("pods");
        let bad = json!({"metadata": {"name": "p"}, "spec": {"containers": "nginx"}});
        let e = normalize(pods, bad).expect_err("a string is no container list");
        assert!(
            e.to_string()
                .starts_with("Pod in version \"v1\" cannot be handled as a Pod"),
            "{e}"
        );
        let ok = json!({"metadata": {"name": "p", "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let v = normalize(pods, ok).expect("valid");
        assert_eq!(v["kind"], "Pod");
        assert_eq!(v["apiVersion"], "v1");
        assert!(v["metadata"].get("bogus").is_none());
    }
}
