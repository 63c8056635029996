//! The resource types the apiserver serves: one static table that discovery, routing,
//! storage keys and error messages all read, so that they cannot disagree.

use crate::error::GroupResource;

/// A subresource of a resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Status,
    Scale,
    Binding,
    Log,
    Eviction,
    Finalize,
}

impl Sub {
    pub fn name(self) -> &'static str {
        match self {
            Sub::Status => "status",
            Sub::Scale => "scale",
            Sub::Binding => "binding",
            Sub::Log => "log",
            Sub::Eviction => "eviction",
            Sub::Finalize => "finalize",
        }
    }

    pub fn parse(s: &str) -> Option<Sub> {
        Some(match s {
            "status" => Sub::Status,
            "scale" => Sub::Scale,
            "binding" => Sub::Binding,
            "log" => Sub::Log,
            "eviction" => Sub::Eviction,
            "finalize" => Sub::Finalize,
            _ => return None,
        })
    }
}

/// One served resource type.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub subresources: &'static [Sub],
    /// In the `all` category (`kubectl get all`).
    pub in_all: bool,
}

pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

macro_rules! rt {
    ($group:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr, [$($short:expr),*], [$($sub:expr),*], $all:expr) => {
        ResourceType {
            group: $group,
            version: "v1",
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: &[$($short),*],
            subresources: &[$($sub),*],
            in_all: $all,
        }
    };
}

/// Every served resource type. All are `v1` of their group.
pub static RESOURCES: &[ResourceType] = &[
    rt!(
        "",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        ["ns"],
        [Sub::Status, Sub::Finalize],
        false
    ),
    rt!(
        "",
        "pods",
        "pod",
        "Pod",
        true,
        ["po"],
        [Sub::Status, Sub::Binding, Sub::Log, Sub::Eviction],
        true
    ),
    rt!("", "services", "service", "Service", true, ["svc"], [Sub::Status], true),
    rt!("", "endpoints", "endpoints", "Endpoints", true, ["ep"], [], false),
    rt!("", "nodes", "node", "Node", false, ["no"], [Sub::Status], false),
    rt!("", "events", "event", "Event", true, ["ev"], [], false),
    rt!("", "configmaps", "configmap", "ConfigMap", true, ["cm"], [], false),
    rt!("", "secrets", "secret", "Secret", true, [], [], false),
    rt!(
        "",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        ["sa"],
        [],
        false
    ),
    rt!(
        "apps",
        "deployments",
        "deployment",
        "Deployment",
        true,
        ["deploy"],
        [Sub::Status, Sub::Scale],
        true
    ),
    rt!(
        "apps",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
        ["rs"],
        [Sub::Status, Sub::Scale],
        true
    ),
    rt!(
        "rbac.authorization.k8s.io",
        "roles",
        "role",
        "Role",
        true,
        [],
        [],
        false
    ),
    rt!(
        "rbac.authorization.k8s.io",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        [],
        [],
        false
    ),
    rt!(
        "rbac.authorization.k8s.io",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        [],
        [],
        false
    ),
    rt!(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        [],
        [],
        false
    ),
    rt!("coordination.k8s.io", "leases", "lease", "Lease", true, [], [], false),
    rt!(
        "discovery.k8s.io",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
        [],
        [],
        false
    ),
];

/// The API groups besides core, in discovery order: upstream's (kube-apiserver lists apps, then
/// rbac.authorization.k8s.io, then coordination.k8s.io, then discovery.k8s.io, among others).
pub const GROUPS: &[&str] = &[
    "apps",
    "rbac.authorization.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
];

impl ResourceType {
    pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    pub fn by_kind(kind: &str) -> Option<&'static ResourceType> {
        RESOURCES.iter().find(|r| r.kind == kind)
    }

    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn group_resource(&self) -> GroupResource {
        GroupResource::new(self.group, self.plural)
    }

    pub fn has(&self, sub: Sub) -> bool {
        self.subresources.contains(&sub)
    }

    /// The key prefix of every object of this type: `/registry/pods/`.
    pub fn prefix(&self) -> String {
        format!("/registry/{}/", self.plural)
    }

    /// The key prefix of the objects of one namespace: `/registry/pods/default/`.
    pub fn namespace_prefix(&self, namespace: &str) -> String {
        format!("/registry/{}/{}/", self.plural, namespace)
    }

    /// The key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/{}", self.plural, ns, name),
            _ => format!("/registry/{}/{}", self.plural, name),
        }
    }
}

/// Something to do with the k8s-openapi type of a served kind (decode an object as it,
/// describe its schema): see [`with_kind_type`].
pub trait KindType {
    type Output;
    fn with<T>(self) -> Self::Output
    where
        T: serde::de::DeserializeOwned + serde::Serialize + k8s_openapi::schemars::JsonSchema;
}

/// Runs `f` with the k8s-openapi type of `kind`; gives `f` back for a kind without one.
/// The one place that maps kinds to their Rust types.
pub fn with_kind_type<F: KindType>(kind: &str, f: F) -> Result<F::Output, F> {
    use k8s_openapi::api::{
        apps::v1 as apps, coordination::v1 as coord, core::v1 as core, discovery::v1 as disc, rbac::v1 as rbac,
    };
    Ok(match kind {
        "Namespace" => f.with::<core::Namespace>(),
        "Pod" => f.with::<core::Pod>(),
        "Service" => f.with::<core::Service>(),
        "Endpoints" => f.with::<core::Endpoints>(),
        "Node" => f.with::<core::Node>(),
        "Event" => f.with::<core::Event>(),
        "ConfigMap" => f.with::<core::ConfigMap>(),
        "Secret" => f.with::<core::Secret>(),
        "ServiceAccount" => f.with::<core::ServiceAccount>(),
        "Deployment" => f.with::<apps::Deployment>(),
        "ReplicaSet" => f.with::<apps::ReplicaSet>(),
        "Role" => f.with::<rbac::Role>(),
        "RoleBinding" => f.with::<rbac::RoleBinding>(),
        "ClusterRole" => f.with::<rbac::ClusterRole>(),
        "ClusterRoleBinding" => f.with::<rbac::ClusterRoleBinding>(),
        "Lease" => f.with::<coord::Lease>(),
        "EndpointSlice" => f.with::<disc::EndpointSlice>(),
        _ => return Err(f),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_unique_and_findable() {
        for r in RESOURCES {
            assert_eq!(ResourceType::find(r.group, "v1", r.plural), Some(r));
            assert_eq!(ResourceType::by_kind(r.kind), Some(r));
            assert!(
                r.group.is_empty() || GROUPS.contains(&r.group),
                "{} has an unlisted group",
                r.plural
            );
        }
        let pods = ResourceType::find("", "v1", "pods").expect("pods");
        assert_eq!(pods.key(Some("default"), "p1"), "/registry/pods/default/p1");
        let ns = ResourceType::find("", "v1", "namespaces").expect("namespaces");
        assert_eq!(ns.key(None, "default"), "/registry/namespaces/default");
        assert_eq!(
            ResourceType::find("apps", "v1", "deployments").map(|r| r.group_resource().to_string()),
            Some("deployments.apps".to_string())
        );
    }
}
