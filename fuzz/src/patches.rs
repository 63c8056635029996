//! The `patch` target: PATCH bodies of the three formats through the patch functions and
//! the handler's read-modify-write (defaulting and validation of the result included).

use std::sync::OnceLock;

use bytes::Bytes;
use capstan_apiserver::patch;
use capstan_apiserver::resources::{ResourceType, RESOURCES};
use serde_json::Value;

use crate::api;
use crate::input::split_once;
use crate::rest::index_of;
use crate::seeds;

/// The content types of the three patch formats, as the selector's low two bits pick
/// them (3: each in turn).
const CONTENT_TYPES: [&str; 3] = [
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
];

/// Stored objects to patch: each of [`seeds::objects`] as create stores it.
fn fixed() -> &'static [(&'static ResourceType, Value)] {
    static FIXED: OnceLock<Vec<(&'static ResourceType, Value)>> = OnceLock::new();
    FIXED.get_or_init(|| {
        seeds::objects()
            .into_iter()
            .filter_map(|obj| {
                let rt = &RESOURCES[index_of(obj["kind"].as_str()?)?];
                let body = Bytes::from(serde_json::to_vec(&obj).ok()?);
                Some((rt, api::create(rt, &body).ok()?))
            })
            .collect()
    })
}

/// The selector value (bits 2..8) that picks the stored object of `kind`.
pub fn fixed_index(kind: &str) -> Option<usize> {
    fixed().iter().position(|(rt, _)| rt.kind == kind)
}

/// Input: one selector byte (bits 0-1: merge patch, JSON patch, strategic merge patch, or
/// all three; bits 2-7: which stored object, of [`seeds::objects`], is patched), then the
/// patch. A NUL byte (never in JSON) splits off a target document of the input's own
/// before the patch: the three patch functions patch it as it is (any JSON value), and
/// the handler path patches it as the stored object if create accepts it as one of the
/// chosen object's type.
///
/// The handler path runs for the main resource and its status and scale subresources,
/// as `PATCH .../name[/status|/scale]` would.
pub fn patch(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let fixed = fixed();
    if fixed.is_empty() {
        return;
    }
    let (rt, stored) = &fixed[usize::from(selector >> 2) % fixed.len()];
    let types: &[&str] = match selector & 3 {
        3 => &CONTENT_TYPES,
        i => &CONTENT_TYPES[usize::from(i)..=usize::from(i)],
    };
    let (target, body) = match split_once(rest, b"\0") {
        (target, Some(body)) => (Some(target), body),
        (body, None) => (None, body),
    };
    let mut old = stored;
    let created;
    if let Some(target) = target {
        let patch_doc: Option<Value> = serde_json::from_slice(body).ok();
        if let (Ok(doc), Some(patch_doc)) = (serde_json::from_slice::<Value>(target), &patch_doc) {
            for ty in types {
                let _ = match *ty {
                    "application/merge-patch+json" => patch::merge_patch(&doc, patch_doc),
                    "application/json-patch+json" => patch::json_patch(&doc, patch_doc),
                    _ => patch::strategic_merge_patch(rt.kind, &doc, patch_doc),
                };
            }
        }
        if let Ok(obj) = api::create(rt, &Bytes::copy_from_slice(target)) {
            created = obj;
            old = &created;
        }
    }
    for ty in types {
        for sub in api::write_subresources(rt) {
            let _ = api::patch(rt, sub, old, ty, body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_object_is_a_valid_stored_object() {
        let fixed = fixed();
        let kinds: Vec<&str> = fixed.iter().map(|(rt, _)| rt.kind).collect();
        assert_eq!(
            fixed.len(),
            seeds::objects().len(),
            "some seed objects were refused: {kinds:?}"
        );
    }
}
