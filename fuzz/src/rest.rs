//! The `rest_body` target: create and update bodies through the handlers' decoding,
//! defaulting and validation.

use std::sync::OnceLock;

use capstan_apiserver::resources::{ResourceType, RESOURCES};
use serde_json::Value;

use crate::api;
use crate::input::split_once;

/// Between the create body and the update body of one input (never valid JSON, so a
/// JSON body is never cut by it).
pub const SEPARATOR: &[u8] = b"\n---\n";

/// Input: one selector byte (low 7 bits: the resource type, an index into
/// `resources::RESOURCES`; high bit: the bodies are Kubernetes protobuf, else JSON), then
/// the create body, optionally followed by [`SEPARATOR`] and an update body.
///
/// The create body goes through `handlers::create`'s steps; the object it makes (or a
/// minimal valid one of the type when it is refused) is then the stored object that the
/// update body replaces, through the main resource and each of its status and scale
/// subresources. Errors are the expected outcome of most inputs; only a panic counts.
pub fn rest_body(data: &[u8]) {
    let Some((&selector, bodies)) = data.split_first() else {
        return;
    };
    let index = usize::from(selector & 0x7f) % RESOURCES.len();
    let rt = &RESOURCES[index];
    let protobuf = selector & 0x80 != 0;
    let (create_body, update_body) = split_once(bodies, SEPARATOR);
    let created = api::request_body(create_body, protobuf).and_then(|body| api::create(rt, &body));
    let old = match created {
        Ok(obj) => obj,
        Err(_) => minimal(index).clone(),
    };
    let Ok(update_body) = api::request_body(update_body.unwrap_or(create_body), protobuf) else {
        return;
    };
    for sub in api::write_subresources(rt) {
        let _ = api::update(rt, sub, &old, &update_body);
    }
}

/// The minimal stored object of `RESOURCES[index]`, made once.
pub(crate) fn minimal(index: usize) -> &'static Value {
    static MINIMAL: OnceLock<Vec<Value>> = OnceLock::new();
    &MINIMAL.get_or_init(|| RESOURCES.iter().map(api::minimal).collect())[index]
}

/// The index of `kind` in `RESOURCES`.
pub(crate) fn index_of(kind: &str) -> Option<usize> {
    RESOURCES.iter().position(|r: &ResourceType| r.kind == kind)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::seeds;

    /// The seeds reach the end of the handlers' path: create and update accepted.
    #[test]
    fn seed_objects_are_created_and_updated() {
        for s in seeds::corpus().into_iter().filter(|s| s.target == "rest_body") {
            let (&selector, bodies) = s.data.split_first().expect("a selector");
            let rt = &RESOURCES[usize::from(selector & 0x7f) % RESOURCES.len()];
            let protobuf = selector & 0x80 != 0;
            let (create_body, update_body) = split_once(bodies, SEPARATOR);
            let created = api::request_body(create_body, protobuf)
                .and_then(|b| api::create(rt, &b))
                .unwrap_or_else(|e| panic!("seed {}: create refused: {e}", s.name));
            if let Some(update_body) = update_body {
                let body = Bytes::copy_from_slice(update_body);
                api::update(rt, None, &created, &body)
                    .unwrap_or_else(|e| panic!("seed {}: update refused: {e}", s.name));
            }
        }
    }
}
