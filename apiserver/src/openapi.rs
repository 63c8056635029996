//! `/openapi/v2`: the OpenAPI v2 document of the served types, which kubectl reads to
//! validate objects before it sends them (`kubectl create|apply`, unless
//! `--validate=false`) and to answer `kubectl explain`.
//!
//! The schemas come from k8s-openapi (its `schemars` support: every type's JSON schema as
//! upstream's OpenAPI describes it, the same names, `io.k8s.api.apps.v1.Deployment` and
//! so on). [`document`] builds the document once: the definitions reachable from the
//! served kinds, each served kind's definition marked with
//! `x-kubernetes-group-version-kind` (how kubectl finds the schema of an object), and no
//! paths. It is served as JSON, or as protobuf in the gnostic `openapi.v2` model when
//! the client asks for it: kubectl (1.20 and later) only ever asks for protobuf.
//!
//! What kubectl's schema reader requires, and the tests below check: every `$ref`
//! resolves, no schema has more than one type, and every array has exactly one item
//! schema. A definition that breaks one of these makes kubectl refuse the whole document.
//!
//! Deliberately left out: paths (operations). kubectl 1.27+ looks in them for the
//! `fieldValidation` parameter to decide whether the server validates fields itself;
//! without them it validates on the client, from the definitions, which is what Capstan
//! wants (the server drops unknown fields, as upstream does without strict validation).
//! Also left out: `/openapi/v3` (kubectl falls back to v2 when it answers 404), the List
//! kinds, and the meta types no served kind refers to (`Status`, `DeleteOptions`).

use std::sync::OnceLock;

use bytes::Bytes;
use capstan_proto::openapi_v2 as pb;
use k8s_openapi::schemars::generate::SchemaSettings;
use k8s_openapi::schemars::{JsonSchema, SchemaGenerator};
use prost::Message as _;
use serde_json::{json, Map, Value};

use crate::discovery::GIT_VERSION;
use crate::resources::{with_kind_type, KindType, ResourceType, RESOURCES};

/// The content type of the protobuf form. kubectl asks with `…spec.v2@v1.0+protobuf`; the
/// answer must not echo the `@` (Go's MIME parser refuses it in a Content-Type).
pub const PROTOBUF_CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The document in both encodings, built on first use.
pub struct OpenApiV2 {
    pub json: Bytes,
    pub protobuf: Bytes,
}

/// The OpenAPI v2 document (built once per process: the schemas never change).
pub fn document() -> &'static OpenApiV2 {
    static DOC: OnceLock<OpenApiV2> = OnceLock::new();
    DOC.get_or_init(|| {
        let doc = document_json();
        let json = serde_json::to_vec(&doc).expect("invariant: a serde_json::Value always encodes");
        let protobuf = to_protobuf(&doc).encode_to_vec();
        OpenApiV2 {
            json: Bytes::from(json),
            protobuf: Bytes::from(protobuf),
        }
    })
}

/// How kubectl's strategic merge patches treat the lists (and a few maps) of the served
/// types: (definition, field, `x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`),
/// as upstream's `patchStrategy`/`patchMergeKey` tags. k8s-openapi's schemas leave these out,
/// but kubectl computes `apply` patches from them once the document has the kind: without
/// them every list is atomic, and a second `apply` of the same file would patch the
/// containers whole (what the server defaulted in them differs from the file). The server
/// merges by the same keys (`patch`).
const PATCH_STRATEGIES: &[(&str, &str, &str, &str)] = &[
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        "uid",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        "",
    ),
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "merge", "name"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        "name",
    ),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        "topologyKey",
    ),
    ("io.k8s.api.core.v1.Container", "env", "merge", "name"),
    ("io.k8s.api.core.v1.Container", "ports", "merge", "containerPort"),
    ("io.k8s.api.core.v1.Container", "volumeMounts", "merge", "mountPath"),
    ("io.k8s.api.core.v1.Container", "volumeDevices", "merge", "devicePath"),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", "merge", "name"),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "merge",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "merge",
        "devicePath",
    ),
    ("io.k8s.api.core.v1.PodStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", "ip"),
    (
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        "merge,retainKeys",
        "name",
    ),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port"),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", ""),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", "merge", "type"),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", "merge", "name"),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", "retainKeys", ""),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "merge", "type"),
];

/// The schema of a served kind, added to `generator`'s definitions; its definition name.
fn add_kind(generator: &mut SchemaGenerator, rt: &ResourceType) -> Option<String> {
    struct AddSchema<'a>(&'a mut SchemaGenerator);
    impl KindType for AddSchema<'_> {
        type Output = String;
        fn with<T>(self) -> String
        where
            T: serde::de::DeserializeOwned + serde::Serialize + JsonSchema,
        {
            self.0.subschema_for::<T>();
            T::schema_name().into_owned()
        }
    }
    with_kind_type(rt.kind, AddSchema(generator)).ok()
}

/// The document as JSON: `swagger`, `info`, empty `paths`, and the definitions.
pub fn document_json() -> Value {
    let mut settings = SchemaSettings::draft07();
    settings.definitions_path = "/definitions".into();
    // Draft 7 forbids siblings of `$ref`, so its transforms wrap a described reference in
    // `allOf`. OpenAPI v2 readers (kubectl's) expect `$ref` with its description beside.
    settings.transforms.clear();
    let mut generator = settings.into_generator();
    let mut kinds = Vec::new();
    for rt in RESOURCES {
        if let Some(name) = add_kind(&mut generator, rt) {
            kinds.push((name, rt));
        }
    }
    let mut definitions: Map<String, Value> = generator.take_definitions(false);
    for (definition, field, strategy, merge_key) in PATCH_STRATEGIES {
        let property = definitions
            .get_mut(*definition)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(*field))
            .and_then(Value::as_object_mut);
        if let Some(property) = property {
            property.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
            if !merge_key.is_empty() {
                property.insert("x-kubernetes-patch-merge-key".into(), json!(merge_key));
            }
        }
    }
    for (name, rt) in kinds {
        if let Some(Value::Object(def)) = definitions.get_mut(&name) {
            def.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": rt.group, "kind": rt.kind, "version": rt.version}]),
            );
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": {},
        "definitions": definitions,
    })
}

/// The JSON document in the protobuf model.
fn to_protobuf(doc: &Value) -> pb::Document {
    let definitions = doc
        .get("definitions")
        .and_then(Value::as_object)
        .map(|defs| pb::Definitions {
            additional_properties: named_schemas(defs),
        });
    pb::Document {
        swagger: "2.0".into(),
        info: Some(pb::Info {
            title: "Kubernetes".into(),
            version: GIT_VERSION.into(),
        }),
        paths: Some(pb::Paths {}),
        definitions,
    }
}

fn named_schemas(map: &Map<String, Value>) -> Vec<pb::NamedSchema> {
    map.iter()
        .map(|(name, schema)| pb::NamedSchema {
            name: name.clone(),
            value: Some(schema_to_protobuf(schema)),
        })
        .collect()
}

/// One JSON schema in the protobuf model. Keywords the model has no field for here
/// (`enum`, `default`, …) are left out: kubectl's validation does not use them.
fn schema_to_protobuf(schema: &Value) -> pb::Schema {
    let mut out = pb::Schema::default();
    // `true` (any value) is an empty schema; `false` never occurs in these definitions.
    let Some(obj) = schema.as_object() else {
        return out;
    };
    let string = |key: &str| obj.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    out.r#ref = string("$ref");
    out.format = string("format");
    out.title = string("title");
    out.description = string("description");
    out.required = obj
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    out.r#type = match obj.get("type") {
        Some(Value::String(t)) => Some(pb::TypeItem { value: vec![t.clone()] }),
        Some(Value::Array(ts)) => Some(pb::TypeItem {
            value: ts.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        }),
        _ => None,
    };
    out.items = match obj.get("items") {
        Some(Value::Array(items)) => Some(pb::ItemsItem {
            schema: items.iter().map(schema_to_protobuf).collect(),
        }),
        Some(item) => Some(pb::ItemsItem {
            schema: vec![schema_to_protobuf(item)],
        }),
        None => None,
    };
    out.properties = obj
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| pb::Properties {
            additional_properties: named_schemas(props),
        });
    out.additional_properties = obj.get("additionalProperties").map(|ap| {
        Box::new(pb::AdditionalPropertiesItem {
            oneof: Some(match ap {
                Value::Bool(b) => pb::additional_properties_item::Oneof::Boolean(*b),
                other => pb::additional_properties_item::Oneof::Schema(Box::new(schema_to_protobuf(other))),
            }),
        })
    });
    out.vendor_extension = obj
        .iter()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| pb::NamedAny {
            name: k.clone(),
            // JSON is YAML: kubectl reads an extension's value with a YAML parser.
            value: Some(pb::Any { yaml: v.to_string() }),
        })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition a `$ref` names (`#/definitions/<name>`), if it is one of ours.
    fn ref_target(reference: &str) -> Option<&str> {
        reference.strip_prefix("#/definitions/")
    }

    fn definitions(doc: &Value) -> &Map<String, Value> {
        doc["definitions"].as_object().expect("definitions")
    }

    /// Calls `f` on every schema nested in `schema` (itself included).
    fn walk<'a>(schema: &'a Value, f: &mut impl FnMut(&'a Value)) {
        f(schema);
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for p in props.values() {
                walk(p, f);
            }
        }
        match schema.get("items") {
            Some(Value::Array(items)) => items.iter().for_each(|i| walk(i, f)),
            Some(item) => walk(item, f),
            None => {}
        }
        if let Some(ap @ Value::Object(_)) = schema.get("additionalProperties") {
            walk(ap, f);
        }
    }

    #[test]
    fn every_served_kind_has_a_definition_marked_with_its_group_version_kind() {
        let doc = document_json();
        let defs = definitions(&doc);
        let mut marked = Vec::new();
        for def in defs.values() {
            if let Some(gvks) = def.get("x-kubernetes-group-version-kind") {
                let gvk = &gvks[0];
                marked.push((
                    gvk["group"].as_str().unwrap_or("?").to_owned(),
                    gvk["kind"].as_str().unwrap_or("?").to_owned(),
                ));
                assert_eq!(gvk["version"], "v1");
            }
        }
        for rt in RESOURCES {
            assert!(
                marked.contains(&(rt.group.to_owned(), rt.kind.to_owned())),
                "{}/{} has no marked definition",
                rt.group,
                rt.kind
            );
        }
        assert_eq!(marked.len(), RESOURCES.len());
        let spec = &defs["io.k8s.api.apps.v1.DeploymentSpec"];
        assert_eq!(spec["properties"]["replicas"]["type"], "integer");
        assert_eq!(
            spec["properties"]["template"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.PodTemplateSpec"
        );
        assert_eq!(doc["swagger"], "2.0");
    }

    /// kubectl's reader refuses the whole document over one dangling `$ref`, a schema
    /// with several types, or an array without exactly one item schema.
    #[test]
    fn the_definitions_are_what_kubectls_schema_reader_accepts() {
        let doc = document_json();
        let defs = definitions(&doc);
        let mut problems = Vec::new();
        let mut refs = 0;
        for (name, def) in defs {
            walk(def, &mut |s| {
                if let Some(r) = s.get("$ref").and_then(Value::as_str) {
                    refs += 1;
                    match ref_target(r) {
                        Some(target) if defs.contains_key(target) => {}
                        _ => problems.push(format!("{name}: dangling $ref {r}")),
                    }
                }
                if let Some(Value::Array(ts)) = s.get("type") {
                    if ts.len() != 1 {
                        problems.push(format!("{name}: several types {ts:?}"));
                    }
                }
                if s.get("type").and_then(Value::as_str) == Some("array") {
                    match s.get("items") {
                        Some(Value::Object(_)) => {}
                        Some(Value::Array(items)) if items.len() == 1 => {}
                        other => problems.push(format!("{name}: array with items {other:?}")),
                    }
                }
            });
        }
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(
            refs > 100,
            "only {refs} references: the closure of the kinds is missing"
        );
        assert!(defs.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
    }

    #[test]
    fn patch_strategies_sit_on_existing_properties() {
        let doc = document_json();
        let defs = definitions(&doc);
        for (definition, field, strategy, merge_key) in PATCH_STRATEGIES {
            let property = &defs[*definition]["properties"][*field];
            assert_eq!(
                property["x-kubernetes-patch-strategy"], *strategy,
                "{definition}.{field}"
            );
            if !merge_key.is_empty() {
                assert_eq!(
                    property["x-kubernetes-patch-merge-key"], *merge_key,
                    "{definition}.{field}"
                );
            }
        }
        let containers = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["type"], "array");
        assert_eq!(
            containers["items"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Container"
        );
    }

    #[test]
    fn the_protobuf_form_decodes_to_the_same_definitions() {
        let doc = document();
        let decoded = pb::Document::decode(doc.protobuf.clone()).expect("decodes");
        let json: Value = serde_json::from_slice(&doc.json).expect("json");
        let defs = decoded.definitions.expect("definitions").additional_properties;
        assert_eq!(defs.len(), definitions(&json).len());
        let deployment = defs
            .iter()
            .find(|d| d.name == "io.k8s.api.apps.v1.Deployment")
            .and_then(|d| d.value.as_ref())
            .expect("Deployment");
        let gvk = deployment
            .vendor_extension
            .iter()
            .find(|e| e.name == "x-kubernetes-group-version-kind")
            .and_then(|e| e.value.as_ref())
            .expect("gvk extension");
        let gvk: Value = serde_json::from_str(&gvk.yaml).expect("the YAML is JSON");
        assert_eq!(gvk, json!([{"group": "apps", "kind": "Deployment", "version": "v1"}]));
        let spec = deployment
            .properties
            .as_ref()
            .and_then(|p| p.additional_properties.iter().find(|p| p.name == "spec"))
            .and_then(|p| p.value.as_ref())
            .expect("spec");
        assert_eq!(spec.r#ref, "#/definitions/io.k8s.api.apps.v1.DeploymentSpec");
        let labels = defs
            .iter()
            .find(|d| d.name == "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
            .and_then(|d| d.value.as_ref())
            .and_then(|m| m.properties.as_ref())
            .and_then(|p| p.additional_properties.iter().find(|p| p.name == "labels"))
            .and_then(|p| p.value.as_ref())
            .expect("labels");
        assert_eq!(
            labels.r#type.as_ref().map(|t| t.value.clone()),
            Some(vec!["object".to_owned()])
        );
        match labels.additional_properties.as_ref().and_then(|a| a.oneof.as_ref()) {
            Some(pb::additional_properties_item::Oneof::Schema(s)) => {
                assert_eq!(
                    s.r#type.as_ref().map(|t| t.value.clone()),
                    Some(vec!["string".to_owned()])
                )
            }
            other => panic!("labels' values: {other:?}"),
        }
    }
}
