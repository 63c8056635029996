//! Server-side `meta.k8s.io/v1` Tables, as `kubectl get` asks for them with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! This module turns stored objects (`core/v1`, `apps/v1`, ... JSON as [`serde_json::Value`]) into the Table the
//! upstream Kubernetes apiserver (v1.32) would send for the same objects. It follows upstream's printers in
//! `kubernetes/pkg/printers/internalversion/printers.go`, the server-side table convertor (which always prints with
//! `Wide: true`, so the priority-1 `-o wide` columns are always present and kubectl hides them unless asked),
//! `apimachinery/pkg/util/duration.HumanDuration` for ages, and `apiserver/pkg/endpoints/handlers` for the
//! `includeObject` handling of `rows[].object`.
//!
//! # Resources with real printers
//!
//! `pods`, `deployments`, `replicasets`, `nodes`, `services`, `endpoints`, `namespaces`, `events` (core/v1 shape),
//! `leases`, `configmaps`, `secrets`, `serviceaccounts`, `endpointslices`, `rolebindings`, `clusterrolebindings`. Column names, types, formats,
//! descriptions (upstream's swagger docs at v1.32) and priorities match upstream, and so do the cells, including
//! their JSON type (e.g. a pod's RESTARTS is a string such as `"3 (5m ago)"`, a ReplicaSet's DESIRED an integer).
//! Pod rows of `Succeeded`/`Failed` pods carry upstream's `Completed` row condition.
//!
//! Any other resource gets upstream's default table convertor: `Name` and `Created At` (an RFC 3339 UTC string).
//! That includes `roles` and `clusterroles`, for which upstream has no printer either.
//!
//! # Deliberate choices and omissions
//!
//! - Objects are read leniently: a missing field or a field of the wrong JSON type reads as its zero value, so
//!   junk never panics (upstream would have refused to decode such an object at all).
//! - Where upstream's API defaulting or create strategy guarantees a value that a stored object might lack here,
//!   that value is assumed: pod phase `Pending`, namespace phase `Active`, service type `ClusterIP`, service port
//!   protocol `TCP`, deployment/replicaset `spec.replicas` 1, secret type `Opaque`. v1 `status.podIP` and
//!   `spec.clusterIP` win over the plural fields, as in upstream's v1-to-internal conversion; a secret's
//!   `stringData` keys count towards DATA as they would after conversion.
//! - A missing or unparsable timestamp (or Go's zero time `0001-01-01T00:00:00Z`) ages as `<unknown>`; in the
//!   default convertor it prints as Go's zero time, as upstream does for a missing one.
//! - As upstream sends them: `columnDefinitions` is `null` when `with_columns` is false (watch events after the
//!   first), `rows[].object` is `null` for `IncludeObject::None`, and the default convertor's `rows` is `null`
//!   for an empty list (the real printers send `[]`).
//! - Left out: every other upstream printer (jobs, cronjobs, statefulsets, daemonsets, ingresses, PVs, PVCs,
//!   storage, ...; they get the default columns), `events.k8s.io` Events in their own shape, the
//!   `remainingItemCount` list field, and the RFC 3339 comma fractional separator.

use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};

/// What the Table's rows[].object holds (the `includeObject` query parameter): None, Metadata (default: a
/// `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{...}}`), or Object (the full object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter as upstream does: `None`, `Metadata`, `Object`, or empty (the
    /// default, `Metadata`). Anything else is `None` here, which upstream answers with 400 Bad Request.
    pub fn from_query(value: &str) -> Option<IncludeObject> {
        match value {
            "None" => Some(IncludeObject::None),
            "Metadata" | "" => Some(IncludeObject::Metadata),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

/// The Table for `objects` of `resource` (plural name: "pods", "deployments", "replicasets", "nodes", "services",
/// "endpoints", "namespaces", "events", "leases", "configmaps", "secrets", "serviceaccounts", "endpointslices",
/// "rolebindings", "clusterrolebindings"; any other:
/// the default `NAME`, `AGE`... columns as upstream's default table convertor: Name + "Created At"). `now_unix_s` is the current
/// time (seconds since the epoch), passed in so that output is testable; ages are computed from metadata.creationTimestamp
/// (RFC 3339) with upstream's duration.HumanDuration formatting ("5s", "2m3s", "10m", "3h4m", "2d5h", "400d", "3y20d" etc).
/// `resource_version` and `continue_token` go into the Table's metadata. `with_columns` false omits columnDefinitions (upstream
/// sends them only on the first event of a watch).
pub fn table(
    resource: &str,
    objects: &[Value],
    now_unix_s: i64,
    resource_version: &str,
    continue_token: Option<&str>,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    let printer = Printer::for_resource(resource);
    let now = i128::from(now_unix_s) * NANOS_PER_SEC;

    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert("resourceVersion".into(), Value::from(resource_version));
    }
    if let Some(token) = continue_token.filter(|t| !t.is_empty()) {
        metadata.insert("continue".into(), Value::from(token));
    }

    let columns = if with_columns {
        Value::Array(printer.columns().iter().map(Column::to_json).collect())
    } else {
        Value::Null
    };

    let rows: Vec<Value> = objects.iter().map(|obj| row(printer, obj, now, include)).collect();
    let rows = if rows.is_empty() && printer == Printer::Default {
        Value::Null
    } else {
        Value::Array(rows)
    };

    let mut out = Map::new();
    out.insert("kind".into(), Value::from("Table"));
    out.insert("apiVersion".into(), Value::from("meta.k8s.io/v1"));
    out.insert("metadata".into(), Value::Object(metadata));
    out.insert("columnDefinitions".into(), columns);
    out.insert("rows".into(), rows);
    Value::Object(out)
}

fn row(printer: Printer, obj: &Value, now: i128, include: IncludeObject) -> Value {
    let (cells, conditions) = printer.cells(obj, now);
    let mut out = Map::new();
    out.insert("cells".into(), Value::Array(cells));
    if let Some(conditions) = conditions {
        out.insert("conditions".into(), conditions);
    }
    let object = match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => {
            let metadata = match obj.get("metadata") {
                Some(m @ Value::Object(_)) => m.clone(),
                _ => Value::Object(Map::new()),
            };
            let mut partial = Map::new();
            partial.insert("kind".into(), Value::from("PartialObjectMetadata"));
            partial.insert("apiVersion".into(), Value::from("meta.k8s.io/v1"));
            partial.insert("metadata".into(), metadata);
            Value::Object(partial)
        }
    };
    out.insert("object".into(), object);
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------------------------
// Printers and their columns
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printer {
    Pod,
    Deployment,
    ReplicaSet,
    Node,
    Service,
    Endpoints,
    Namespace,
    Event,
    Lease,
    RoleBinding,
    ClusterRoleBinding,
    ConfigMap,
    Secret,
    ServiceAccount,
    EndpointSlice,
    Default,
}

type Cells = (Vec<Value>, Option<Value>);

impl Printer {
    fn for_resource(resource: &str) -> Printer {
        match resource {
            "pods" => Printer::Pod,
            "deployments" => Printer::Deployment,
            "replicasets" => Printer::ReplicaSet,
            "nodes" => Printer::Node,
            "services" => Printer::Service,
            "endpoints" => Printer::Endpoints,
            "namespaces" => Printer::Namespace,
            "events" => Printer::Event,
            "leases" => Printer::Lease,
            "rolebindings" => Printer::RoleBinding,
            "clusterrolebindings" => Printer::ClusterRoleBinding,
            "configmaps" => Printer::ConfigMap,
            "secrets" => Printer::Secret,
            "serviceaccounts" => Printer::ServiceAccount,
            "endpointslices" => Printer::EndpointSlice,
            _ => Printer::Default,
        }
    }

    fn columns(self) -> &'static [Column] {
        match self {
            Printer::Pod => POD_COLUMNS,
            Printer::Deployment => DEPLOYMENT_COLUMNS,
            Printer::ReplicaSet => REPLICASET_COLUMNS,
            Printer::Node => NODE_COLUMNS,
            Printer::Service => SERVICE_COLUMNS,
            Printer::Endpoints => ENDPOINTS_COLUMNS,
            Printer::Namespace => NAMESPACE_COLUMNS,
            Printer::Event => EVENT_COLUMNS,
            Printer::Lease => LEASE_COLUMNS,
            Printer::RoleBinding => ROLEBINDING_COLUMNS,
            Printer::ClusterRoleBinding => CLUSTERROLEBINDING_COLUMNS,
            Printer::ConfigMap => CONFIGMAP_COLUMNS,
            Printer::Secret => SECRET_COLUMNS,
            Printer::ServiceAccount => SERVICEACCOUNT_COLUMNS,
            Printer::EndpointSlice => ENDPOINTSLICE_COLUMNS,
            Printer::Default => DEFAULT_COLUMNS,
        }
    }

    fn cells(self, obj: &Value, now: i128) -> Cells {
        match self {
            Printer::Pod => pod_cells(obj, now),
            Printer::Deployment => (deployment_cells(obj, now), None),
            Printer::ReplicaSet => (replicaset_cells(obj, now), None),
            Printer::Node => (node_cells(obj, now), None),
            Printer::Service => (service_cells(obj, now), None),
            Printer::Endpoints => (endpoints_cells(obj, now), None),
            Printer::Namespace => (namespace_cells(obj, now), None),
            Printer::Event => (event_cells(obj, now), None),
            Printer::Lease => (lease_cells(obj, now), None),
            Printer::RoleBinding | Printer::ClusterRoleBinding => (role_binding_cells(obj, now), None),
            Printer::ConfigMap => (configmap_cells(obj, now), None),
            Printer::Secret => (secret_cells(obj, now), None),
            Printer::ServiceAccount => (serviceaccount_cells(obj, now), None),
            Printer::EndpointSlice => (endpointslice_cells(obj, now), None),
            Printer::Default => (default_cells(obj), None),
        }
    }
}

#[derive(Debug)]
struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i32,
}

impl Column {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), Value::from(self.name));
        m.insert("type".into(), Value::from(self.kind));
        m.insert("format".into(), Value::from(self.format));
        m.insert("description".into(), Value::from(self.description));
        m.insert("priority".into(), Value::from(self.priority));
        Value::Object(m)
    }
}

/// The `Name` column every printer starts with.
const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: D_NAME,
    priority: 0,
};
/// The `Age` column.
const AGE: Column = col("Age", "string", D_CREATION_TIMESTAMP);

const fn col(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 1,
    }
}

const D_CONTAINERS: &str = "Names of each container in the template.";
const D_IMAGES: &str = "Images referenced by each container in the template.";

const POD_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", "The aggregate status of the containers in this pod."),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide("IP", "string", D_POD_IP),
    wide("Node", "string", D_NODE_NAME),
    wide("Nominated Node", "string", D_NOMINATED_NODE_NAME),
    wide("Readiness Gates", "string", D_READINESS_GATES),
];

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col("Up-to-date", "string", D_DEPLOYMENT_UPDATED_REPLICAS),
    col("Available", "string", D_DEPLOYMENT_AVAILABLE_REPLICAS),
    AGE,
    wide("Containers", "string", D_CONTAINERS),
    wide("Images", "string", D_IMAGES),
    wide("Selector", "string", D_DEPLOYMENT_SELECTOR),
];

const REPLICASET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", D_RS_SPEC_REPLICAS),
    col("Current", "integer", D_RS_STATUS_REPLICAS),
    col("Ready", "integer", D_RS_READY_REPLICAS),
    AGE,
    wide("Containers", "string", D_CONTAINERS),
    wide("Images", "string", D_IMAGES),
    wide("Selector", "string", D_RS_SELECTOR),
];

const NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", D_KUBELET_VERSION),
    wide("Internal-IP", "string", D_NODE_ADDRESSES),
    wide("External-IP", "string", D_NODE_ADDRESSES),
    wide("OS-Image", "string", D_OS_IMAGE),
    wide("Kernel-Version", "string", D_KERNEL_VERSION),
    wide("Container-Runtime", "string", D_CONTAINER_RUNTIME_VERSION),
];

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", D_SERVICE_TYPE),
    col("Cluster-IP", "string", D_CLUSTER_IP),
    col("External-IP", "string", D_EXTERNAL_IPS),
    col("Port(s)", "string", D_SERVICE_PORTS),
    AGE,
    wide("Selector", "string", D_SERVICE_SELECTOR),
];

const ENDPOINTS_COLUMNS: &[Column] = &[NAME, col("Endpoints", "string", D_ENDPOINTS_SUBSETS), AGE];

const NAMESPACE_COLUMNS: &[Column] = &[NAME, col("Status", "string", "The status of the namespace"), AGE];

const EVENT_COLUMNS: &[Column] = &[
    col("Last Seen", "string", D_EVENT_LAST_TIMESTAMP),
    col("Type", "string", D_EVENT_TYPE),
    col("Reason", "string", D_EVENT_REASON),
    col("Object", "string", D_EVENT_INVOLVED_OBJECT),
    wide("Subobject", "string", D_FIELD_PATH),
    wide("Source", "string", D_EVENT_SOURCE),
    col("Message", "string", D_EVENT_MESSAGE),
    wide("First Seen", "string", D_EVENT_FIRST_TIMESTAMP),
    wide("Count", "string", D_EVENT_COUNT),
    Column {
        name: "Name",
        kind: "string",
        format: "name",
        description: D_NAME,
        priority: 1,
    },
];

const LEASE_COLUMNS: &[Column] = &[NAME, col("Holder", "string", D_HOLDER_IDENTITY), AGE];

const ROLEBINDING_COLUMNS: &[Column] = &[
    NAME,
    col("Role", "string", D_ROLEBINDING_ROLE_REF),
    AGE,
    wide("Users", "string", "Users in the roleBinding"),
    wide("Groups", "string", "Groups in the roleBinding"),
    wide("ServiceAccounts", "string", "ServiceAccounts in the roleBinding"),
];

const CLUSTERROLEBINDING_COLUMNS: &[Column] = &[
    NAME,
    col("Role", "string", D_CLUSTERROLEBINDING_ROLE_REF),
    AGE,
    wide("Users", "string", "Users in the clusterRoleBinding"),
    wide("Groups", "string", "Groups in the clusterRoleBinding"),
    wide("ServiceAccounts", "string", "ServiceAccounts in the clusterRoleBinding"),
];

const CONFIGMAP_COLUMNS: &[Column] = &[NAME, col("Data", "string", D_CONFIGMAP_DATA), AGE];

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", D_SECRET_TYPE),
    col("Data", "string", D_SECRET_DATA),
    AGE,
];

const SERVICEACCOUNT_COLUMNS: &[Column] = &[NAME, col("Secrets", "string", D_SA_SECRETS), AGE];

const ENDPOINTSLICE_COLUMNS: &[Column] = &[
    NAME,
    col("AddressType", "string", D_SLICE_ADDRESS_TYPE),
    col("Ports", "string", D_SLICE_PORTS),
    col("Endpoints", "string", D_SLICE_ENDPOINTS),
    AGE,
];

const DEFAULT_COLUMNS: &[Column] = &[NAME, col("Created At", "date", D_CREATION_TIMESTAMP)];

// Column descriptions: upstream takes them from the generated swagger docs of k8s.io/api and
// k8s.io/apimachinery (v0.32). They are reproduced here so that `kubectl explain`-style clients see the same text.
const D_NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const D_CREATION_TIMESTAMP: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const D_POD_IP: &str =
    "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.";
const D_NODE_NAME: &str = "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename";
const D_NOMINATED_NODE_NAME: &str = "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.";
const D_READINESS_GATES: &str = "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates";
const D_SERVICE_TYPE: &str = "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types";
const D_CLUSTER_IP: &str = "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const D_EXTERNAL_IPS: &str = "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.";
const D_SERVICE_PORTS: &str = "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const D_SERVICE_SELECTOR: &str = "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/";
const D_ENDPOINTS_SUBSETS: &str = "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.";
const D_NODE_ADDRESSES: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";
const D_KUBELET_VERSION: &str = "Kubelet Version reported by the node.";
const D_OS_IMAGE: &str = "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).";
const D_KERNEL_VERSION: &str = "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).";
const D_CONTAINER_RUNTIME_VERSION: &str =
    "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).";
const D_EVENT_LAST_TIMESTAMP: &str = "The time at which the most recent occurrence of this event was recorded.";
const D_EVENT_TYPE: &str = "Type of this event (Normal, Warning), new types could be added in the future";
const D_EVENT_REASON: &str = "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.";
const D_EVENT_INVOLVED_OBJECT: &str = "The object that this event is about.";
const D_FIELD_PATH: &str = "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.";
const D_EVENT_SOURCE: &str = "The component reporting this event. Should be a short machine understandable string.";
const D_EVENT_MESSAGE: &str = "A human-readable description of the status of this operation.";
const D_EVENT_FIRST_TIMESTAMP: &str =
    "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)";
const D_EVENT_COUNT: &str = "The number of times this event has occurred.";
const D_SECRET_TYPE: &str = "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types";
const D_SECRET_DATA: &str = "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4";
const D_SA_SECRETS: &str = "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret";
const D_CONFIGMAP_DATA: &str = "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.";
const D_RS_SPEC_REPLICAS: &str = "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller";
const D_RS_STATUS_REPLICAS: &str = "Replicas is the most recently observed number of replicas. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller";
const D_RS_READY_REPLICAS: &str = "The number of ready replicas for this replica set.";
const D_RS_SELECTOR: &str = "Selector is a label query over pods that should match the replica count. If the selector is empty, it is defaulted to the labels present on the pod template. Label keys and values that must match in order to be controlled by this replica set. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const D_DEPLOYMENT_UPDATED_REPLICAS: &str =
    "Total number of non-terminated pods targeted by this deployment that have the desired template spec.";
const D_DEPLOYMENT_AVAILABLE_REPLICAS: &str =
    "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.";
const D_DEPLOYMENT_SELECTOR: &str = "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.";
const D_HOLDER_IDENTITY: &str = "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.";
// Upstream takes these two from the rbac/v1beta1 types' docs.
const D_ROLEBINDING_ROLE_REF: &str = "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.";
const D_CLUSTERROLEBINDING_ROLE_REF: &str = "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.";
const D_SLICE_ADDRESS_TYPE: &str = "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name.";
const D_SLICE_PORTS: &str = "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. When ports is empty, it indicates that there are no defined ports. When a port is defined with a nil port value, it indicates \"all ports\". Each slice may include a maximum of 100 ports.";
const D_SLICE_ENDPOINTS: &str =
    "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.";

// ---------------------------------------------------------------------------------------------------------------
// Lenient JSON access
// ---------------------------------------------------------------------------------------------------------------

/// The value at `path`, or None when any step is missing, not an object, or the value is `null` (Go's nil).
fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = cur.as_object()?.get(*key)?;
    }
    if cur.is_null() {
        None
    } else {
        Some(cur)
    }
}

/// The string at `path`, or "" (Go's zero string).
fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or("")
}

/// The optional string at `path` (Go's `*string`).
fn opt_str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

/// The integer at `path`: integral JSON numbers only.
fn opt_int_at(v: &Value, path: &[&str]) -> Option<i64> {
    let n = get(v, path)?;
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    if n.as_u64().is_some() {
        return Some(i64::MAX);
    }
    let f = n.as_f64()?;
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e18 {
        // The range check above makes this conversion exact.
        Some(f as i64)
    } else {
        None
    }
}

/// The integer at `path`, or 0.
fn int_at(v: &Value, path: &[&str]) -> i64 {
    opt_int_at(v, path).unwrap_or(0)
}

/// The boolean at `path`, or false.
fn bool_at(v: &Value, path: &[&str]) -> bool {
    get(v, path).and_then(Value::as_bool).unwrap_or(false)
}

/// The array at `path`, or an empty slice.
fn arr_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// The object at `path`, if any.
fn map_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Map<String, Value>> {
    get(v, path).and_then(Value::as_object)
}

/// Number of entries of the map at `path` (0 when missing).
fn map_len_at(v: &Value, path: &[&str]) -> i64 {
    map_at(v, path).map_or(0, |m| i64::try_from(m.len()).unwrap_or(i64::MAX))
}

fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn name_of(obj: &Value) -> Value {
    Value::from(str_at(obj, &["metadata", "name"]))
}

fn age_of(obj: &Value, now: i128) -> Value {
    Value::from(translate_timestamp_since(
        time_at(obj, &["metadata", "creationTimestamp"]),
        now,
    ))
}

/// `strings.Join` of container names and of images, as upstream's `layoutContainerCells`.
fn layout_container_cells(containers: &[Value]) -> (String, String) {
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

// ---------------------------------------------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------------------------------------------

fn pod_cells(pod: &Value, now: i128) -> Cells {
    let containers = arr_at(pod, &["spec", "containers"]);
    let init_specs = arr_at(pod, &["spec", "initContainers"]);
    let conditions = arr_at(pod, &["status", "conditions"]);

    let mut restarts: i64 = 0;
    let mut restartable_init_restarts: i64 = 0;
    let mut total_containers = len_i64(containers.len());
    let mut ready_containers: i64 = 0;
    let mut last_restart = ZERO_TIME;
    let mut last_restartable_init_restart = ZERO_TIME;

    let raw_phase = str_at(pod, &["status", "phase"]);
    // A stored pod always has a phase: upstream's create strategy sets Pending.
    let phase = if raw_phase.is_empty() { "Pending" } else { raw_phase };
    let mut reason = phase.to_string();
    let status_reason = str_at(pod, &["status", "reason"]);
    if !status_reason.is_empty() {
        reason = status_reason.to_string();
    }

    for cond in conditions {
        if str_at(cond, &["type"]) == "PodScheduled" && str_at(cond, &["reason"]) == "SchedulingGated" {
            reason = "SchedulingGated".to_string();
        }
    }

    let row_conditions = match phase {
        "Succeeded" => Some(completed_condition("Succeeded", "The pod has completed successfully.")),
        "Failed" => Some(completed_condition("Failed", "The pod failed.")),
        _ => None,
    };

    // Init containers by name; later duplicates win, as in upstream's map.
    let mut restartable_by_name: HashMap<&str, bool> = HashMap::new();
    for spec in init_specs {
        let restartable = str_at(spec, &["restartPolicy"]) == "Always";
        restartable_by_name.insert(str_at(spec, &["name"]), restartable);
        if restartable {
            total_containers += 1;
        }
    }

    let mut initializing = false;
    for (i, status) in arr_at(pod, &["status", "initContainerStatuses"]).iter().enumerate() {
        let restart_count = int_at(status, &["restartCount"]);
        restarts = restarts.saturating_add(restart_count);
        let last_terminated = get(status, &["lastState", "terminated"]);
        if let Some(terminated) = last_terminated {
            last_restart = last_restart.max(time_at(terminated, &["finishedAt"]));
        }
        let restartable = restartable_by_name
            .get(str_at(status, &["name"]))
            .copied()
            .unwrap_or(false);
        if restartable {
            restartable_init_restarts = restartable_init_restarts.saturating_add(restart_count);
            if let Some(terminated) = last_terminated {
                last_restartable_init_restart = last_restartable_init_restart.max(time_at(terminated, &["finishedAt"]));
            }
        }

        let terminated = get(status, &["state", "terminated"]);
        let waiting = get(status, &["state", "waiting"]);
        if terminated.is_some_and(|t| int_at(t, &["exitCode"]) == 0) {
            continue;
        }
        if restartable && get(status, &["started"]).and_then(Value::as_bool) == Some(true) {
            if bool_at(status, &["ready"]) {
                ready_containers += 1;
            }
            continue;
        }
        let waiting_reason = waiting.map_or("", |w| str_at(w, &["reason"]));
        reason = if let Some(t) = terminated {
            let terminated_reason = str_at(t, &["reason"]);
            if !terminated_reason.is_empty() {
                format!("Init:{terminated_reason}")
            } else if int_at(t, &["signal"]) != 0 {
                format!("Init:Signal:{}", int_at(t, &["signal"]))
            } else {
                format!("Init:ExitCode:{}", int_at(t, &["exitCode"]))
            }
        } else if waiting.is_some() && !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{}/{}", i, init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_is_true(conditions, "Initialized") {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        for status in arr_at(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts = restarts.saturating_add(int_at(status, &["restartCount"]));
            if let Some(terminated) = get(status, &["lastState", "terminated"]) {
                last_restart = last_restart.max(time_at(terminated, &["finishedAt"]));
            }
            let waiting_reason = get(status, &["state", "waiting"]).map_or("", |w| str_at(w, &["reason"]));
            let terminated = get(status, &["state", "terminated"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                let terminated_reason = str_at(t, &["reason"]);
                reason = if !terminated_reason.is_empty() {
                    terminated_reason.to_string()
                } else if int_at(t, &["signal"]) != 0 {
                    format!("Signal:{}", int_at(t, &["signal"]))
                } else {
                    format!("ExitCode:{}", int_at(t, &["exitCode"]))
                };
            } else if bool_at(status, &["ready"]) && get(status, &["state", "running"]).is_some() {
                has_running = true;
                ready_containers += 1;
            }
        }
        // Back to "Running" when at least one container still runs.
        if reason == "Completed" && has_running {
            reason = if condition_is_true_any(conditions, "Ready") {
                "Running"
            } else {
                "NotReady"
            }
            .to_string();
        }
    }

    if get(pod, &["metadata", "deletionTimestamp"]).is_some() {
        if status_reason == "NodeLost" {
            reason = "Unknown".to_string();
        } else if phase != "Failed" && phase != "Succeeded" {
            reason = "Terminating".to_string();
        }
    }

    let restarts_cell = if restarts != 0 && last_restart != ZERO_TIME {
        format!("{restarts} ({} ago)", translate_timestamp_since(last_restart, now))
    } else {
        restarts.to_string()
    };

    // v1 `podIP` is authoritative over `podIPs` (upstream's v1 -> internal conversion).
    let mut pod_ip = str_at(pod, &["status", "podIP"]);
    if pod_ip.is_empty() {
        pod_ip = arr_at(pod, &["status", "podIPs"])
            .first()
            .map_or("", |ip| str_at(ip, &["ip"]));
    }
    let readiness_gates = arr_at(pod, &["spec", "readinessGates"]);
    let gates = if readiness_gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_conditions = readiness_gates
            .iter()
            .filter(|gate| {
                let wanted = str_at(gate, &["conditionType"]);
                conditions
                    .iter()
                    .find(|c| str_at(c, &["type"]) == wanted)
                    .is_some_and(|c| str_at(c, &["status"]) == "True")
            })
            .count();
        format!("{}/{}", true_conditions, readiness_gates.len())
    };

    let cells = vec![
        name_of(pod),
        Value::from(format!("{ready_containers}/{total_containers}")),
        Value::from(reason),
        Value::from(restarts_cell),
        age_of(pod, now),
        Value::from(or_none(pod_ip)),
        Value::from(or_none(str_at(pod, &["spec", "nodeName"]))),
        Value::from(or_none(str_at(pod, &["status", "nominatedNodeName"]))),
        Value::from(gates),
    ];
    (cells, row_conditions)
}

fn completed_condition(reason: &str, message: &str) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), Value::from("Completed"));
    m.insert("status".into(), Value::from("True"));
    m.insert("reason".into(), Value::from(reason));
    m.insert("message".into(), Value::from(message));
    Value::Array(vec![Value::Object(m)])
}

/// Upstream's `isPodInitializedConditionTrue`: the first condition of `kind` decides.
fn condition_is_true(conditions: &[Value], kind: &str) -> bool {
    conditions
        .iter()
        .find(|c| str_at(c, &["type"]) == kind)
        .is_some_and(|c| str_at(c, &["status"]) == "True")
}

/// Upstream's `hasPodReadyCondition`: any condition of `kind` with status True.
fn condition_is_true_any(conditions: &[Value], kind: &str) -> bool {
    conditions
        .iter()
        .any(|c| str_at(c, &["type"]) == kind && str_at(c, &["status"]) == "True")
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "<none>"
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------------------------------

fn deployment_cells(obj: &Value, now: i128) -> Vec<Value> {
    let desired = opt_int_at(obj, &["spec", "replicas"]).unwrap_or(1);
    let ready = int_at(obj, &["status", "readyReplicas"]);
    let (names, images) = layout_container_cells(arr_at(obj, &["spec", "template", "spec", "containers"]));
    let selector = match label_selector_string(get(obj, &["spec", "selector"])) {
        Ok(s) => s,
        Err(()) => "<invalid>".to_string(),
    };
    vec![
        name_of(obj),
        Value::from(format!("{ready}/{desired}")),
        Value::from(int_at(obj, &["status", "updatedReplicas"])),
        Value::from(int_at(obj, &["status", "availableReplicas"])),
        age_of(obj, now),
        Value::from(names),
        Value::from(images),
        Value::from(selector),
    ]
}

fn replicaset_cells(obj: &Value, now: i128) -> Vec<Value> {
    let (names, images) = layout_container_cells(arr_at(obj, &["spec", "template", "spec", "containers"]));
    vec![
        name_of(obj),
        Value::from(opt_int_at(obj, &["spec", "replicas"]).unwrap_or(1)),
        Value::from(int_at(obj, &["status", "replicas"])),
        Value::from(int_at(obj, &["status", "readyReplicas"])),
        age_of(obj, now),
        Value::from(names),
        Value::from(images),
        Value::from(format_label_selector(get(obj, &["spec", "selector"]))),
    ]
}

// ---------------------------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------------------------

fn node_cells(obj: &Value, now: i128) -> Vec<Value> {
    // The last Ready condition wins, as in upstream's condition map.
    let ready = arr_at(obj, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready");
    let mut status = match ready {
        Some(c) if str_at(c, &["status"]) == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if bool_at(obj, &["spec", "unschedulable"]) {
        status.push_str(",SchedulingDisabled");
    }

    let mut roles = BTreeSet::new();
    if let Some(labels) = map_at(obj, &["metadata", "labels"]) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if key == "kubernetes.io/role" {
                let value = value.as_str().unwrap_or("");
                if !value.is_empty() {
                    roles.insert(value.to_string());
                }
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };

    let address = |kind: &str| -> String {
        arr_at(obj, &["status", "addresses"])
            .iter()
            .find(|a| str_at(a, &["type"]) == kind)
            .map_or_else(|| "<none>".to_string(), |a| str_at(a, &["address"]).to_string())
    };
    let info = |field: &str| -> Value {
        let v = str_at(obj, &["status", "nodeInfo", field]);
        Value::from(if v.is_empty() { "<unknown>" } else { v })
    };

    vec![
        name_of(obj),
        Value::from(status),
        Value::from(roles),
        age_of(obj, now),
        Value::from(str_at(obj, &["status", "nodeInfo", "kubeletVersion"])),
        Value::from(address("InternalIP")),
        Value::from(address("ExternalIP")),
        info("osImage"),
        info("kernelVersion"),
        info("containerRuntimeVersion"),
    ]
}

// ---------------------------------------------------------------------------------------------------------------
// Services, Endpoints, EndpointSlices
// ---------------------------------------------------------------------------------------------------------------

fn service_cells(obj: &Value, now: i128) -> Vec<Value> {
    let raw_type = str_at(obj, &["spec", "type"]);
    let svc_type = if raw_type.is_empty() { "ClusterIP" } else { raw_type };

    // v1 `clusterIP` is authoritative over `clusterIPs` (upstream's v1 -> internal conversion).
    let mut cluster_ip = str_at(obj, &["spec", "clusterIP"]);
    if cluster_ip.is_empty() {
        cluster_ip = arr_at(obj, &["spec", "clusterIPs"])
            .first()
            .and_then(Value::as_str)
            .unwrap_or("");
    }

    let ports: Vec<String> = arr_at(obj, &["spec", "ports"])
        .iter()
        .map(|p| {
            let raw_protocol = str_at(p, &["protocol"]);
            let protocol = if raw_protocol.is_empty() { "TCP" } else { raw_protocol };
            let port = int_at(p, &["port"]);
            let node_port = int_at(p, &["nodePort"]);
            if node_port > 0 {
                format!("{port}:{node_port}/{protocol}")
            } else {
                format!("{port}/{protocol}")
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };

    vec![
        name_of(obj),
        Value::from(svc_type),
        Value::from(or_none(cluster_ip)),
        Value::from(service_external_ip(obj, svc_type)),
        Value::from(ports),
        age_of(obj, now),
        Value::from(format_labels(map_at(obj, &["spec", "selector"]))),
    ]
}

/// Upstream's `getServiceExternalIP` with `wide` set (the server always prints wide, so nothing is clipped).
fn service_external_ip(obj: &Value, svc_type: &str) -> String {
    let external_ips: Vec<&str> = arr_at(obj, &["spec", "externalIPs"])
        .iter()
        .map(|ip| ip.as_str().unwrap_or(""))
        .collect();
    match svc_type {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let mut ingress = BTreeSet::new();
            for entry in arr_at(obj, &["status", "loadBalancer", "ingress"]) {
                let ip = str_at(entry, &["ip"]);
                let hostname = str_at(entry, &["hostname"]);
                if !ip.is_empty() {
                    ingress.insert(ip);
                } else if !hostname.is_empty() {
                    ingress.insert(hostname);
                }
            }
            let mut all: Vec<&str> = ingress.into_iter().collect();
            if !external_ips.is_empty() {
                all.extend(external_ips);
                all.join(",")
            } else if !all.is_empty() {
                all.join(",")
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => str_at(obj, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

fn endpoints_cells(obj: &Value, now: i128) -> Vec<Value> {
    vec![name_of(obj), Value::from(format_endpoints(obj)), age_of(obj, now)]
}

/// Upstream's `formatEndpoints` for all ports: at most three `ip:port` entries, then `+ N more...`.
fn format_endpoints(obj: &Value) -> String {
    let subsets = arr_at(obj, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count: usize = 0;
    for subset in subsets {
        let addresses = arr_at(subset, &["addresses"]);
        let ports = arr_at(subset, &["ports"]);
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(address, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            let port = int_at(port, &["port"]);
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(str_at(address, &["ip"]), port));
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count.saturating_sub(MAX))
    } else {
        joined
    }
}

/// Go's `net.JoinHostPort`: brackets hosts containing a colon (IPv6).
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn endpointslice_cells(obj: &Value, now: i128) -> Vec<Value> {
    const MAX: usize = 3;

    let mut ports = Vec::new();
    let mut more_ports = false;
    let mut port_count = 0;
    for port in arr_at(obj, &["ports"]) {
        if ports.len() < MAX {
            let number = match (opt_int_at(port, &["port"]), opt_str_at(port, &["name"])) {
                (Some(n), _) => n.to_string(),
                (None, Some(name)) => name.to_string(),
                (None, None) => "*".to_string(),
            };
            ports.push(number);
        } else if ports.len() == MAX {
            more_ports = true;
        }
        port_count += 1;
    }

    let mut addresses = Vec::new();
    let mut more_addresses = false;
    let mut address_count = 0;
    for endpoint in arr_at(obj, &["endpoints"]) {
        for address in arr_at(endpoint, &["addresses"]) {
            if addresses.len() < MAX {
                addresses.push(address.as_str().unwrap_or("").to_string());
            } else if addresses.len() == MAX {
                more_addresses = true;
            }
            address_count += 1;
        }
    }

    vec![
        name_of(obj),
        Value::from(str_at(obj, &["addressType"])),
        Value::from(list_with_more(&ports, more_ports, port_count, MAX)),
        Value::from(list_with_more(&addresses, more_addresses, address_count, MAX)),
        age_of(obj, now),
    ]
}

/// Upstream's `listWithMoreString`.
fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count.saturating_sub(max))
    } else if joined.is_empty() {
        "<unset>".to_string()
    } else {
        joined
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------------------------

fn event_cells(obj: &Value, now: i128) -> Vec<Value> {
    let first = time_at(obj, &["firstTimestamp"]);
    let first_seen = if first == ZERO_TIME {
        translate_timestamp_since(time_at(obj, &["eventTime"]), now)
    } else {
        translate_timestamp_since(first, now)
    };
    let last = time_at(obj, &["lastTimestamp"]);
    let mut last_seen = if last == ZERO_TIME {
        first_seen.clone()
    } else {
        translate_timestamp_since(last, now)
    };

    let mut count = int_at(obj, &["count"]);
    if let Some(series) = get(obj, &["series"]) {
        last_seen = translate_timestamp_since(time_at(series, &["lastObservedTime"]), now);
        count = int_at(series, &["count"]);
    } else if count == 0 {
        // Singleton events don't have a count set in the new API.
        count = 1;
    }

    let kind = str_at(obj, &["involvedObject", "kind"]).to_lowercase();
    let involved_name = str_at(obj, &["involvedObject", "name"]);
    let target = if involved_name.is_empty() {
        kind
    } else {
        format!("{kind}/{involved_name}")
    };

    let component = first_non_empty(
        str_at(obj, &["source", "component"]),
        str_at(obj, &["reportingComponent"]),
    );
    let instance = first_non_empty(str_at(obj, &["source", "host"]), str_at(obj, &["reportingInstance"]));
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };

    vec![
        Value::from(last_seen),
        Value::from(str_at(obj, &["type"])),
        Value::from(str_at(obj, &["reason"])),
        Value::from(target),
        Value::from(str_at(obj, &["involvedObject", "fieldPath"])),
        Value::from(source),
        Value::from(str_at(obj, &["message"]).trim()),
        Value::from(first_seen),
        Value::from(count),
        name_of(obj),
    ]
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() {
        b
    } else {
        a
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Small printers
// ---------------------------------------------------------------------------------------------------------------

fn namespace_cells(obj: &Value, now: i128) -> Vec<Value> {
    let phase = str_at(obj, &["status", "phase"]);
    vec![
        name_of(obj),
        Value::from(if phase.is_empty() { "Active" } else { phase }),
        age_of(obj, now),
    ]
}

fn lease_cells(obj: &Value, now: i128) -> Vec<Value> {
    vec![
        name_of(obj),
        Value::from(str_at(obj, &["spec", "holderIdentity"])),
        age_of(obj, now),
    ]
}

/// Upstream's `printRoleBinding`/`printClusterRoleBinding`: Name, `<kind>/<name>` of the roleRef, Age, then
/// (wide) the users, groups and service accounts (`namespace/name`) of `subjects` in their order, split as
/// `rbac.SubjectsStrings` splits them, each list joined with ", ". Subjects of any other kind are not shown.
fn role_binding_cells(obj: &Value, now: i128) -> Vec<Value> {
    let role = format!(
        "{}/{}",
        str_at(obj, &["roleRef", "kind"]),
        str_at(obj, &["roleRef", "name"])
    );
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for subject in arr_at(obj, &["subjects"]) {
        let name = str_at(subject, &["name"]);
        match str_at(subject, &["kind"]) {
            "ServiceAccount" => sas.push(format!("{}/{name}", str_at(subject, &["namespace"]))),
            "User" => users.push(name.to_string()),
            "Group" => groups.push(name.to_string()),
            _ => {}
        }
    }
    vec![
        name_of(obj),
        Value::from(role),
        age_of(obj, now),
        Value::from(users.join(", ")),
        Value::from(groups.join(", ")),
        Value::from(sas.join(", ")),
    ]
}

fn configmap_cells(obj: &Value, now: i128) -> Vec<Value> {
    let data = map_len_at(obj, &["data"]).saturating_add(map_len_at(obj, &["binaryData"]));
    vec![name_of(obj), Value::from(data), age_of(obj, now)]
}

fn secret_cells(obj: &Value, now: i128) -> Vec<Value> {
    let raw_type = str_at(obj, &["type"]);
    // `stringData` is merged into `data` on conversion: count the union of their keys.
    let mut keys: BTreeSet<&str> = BTreeSet::new();
    for field in ["data", "stringData"] {
        if let Some(m) = map_at(obj, &[field]) {
            keys.extend(m.keys().map(String::as_str));
        }
    }
    vec![
        name_of(obj),
        Value::from(if raw_type.is_empty() { "Opaque" } else { raw_type }),
        Value::from(len_i64(keys.len())),
        age_of(obj, now),
    ]
}

fn serviceaccount_cells(obj: &Value, now: i128) -> Vec<Value> {
    vec![
        name_of(obj),
        Value::from(len_i64(arr_at(obj, &["secrets"]).len())),
        age_of(obj, now),
    ]
}

/// Upstream's default table convertor: name and the creation time as RFC 3339 in UTC.
fn default_cells(obj: &Value) -> Vec<Value> {
    vec![
        name_of(obj),
        Value::from(format_rfc3339_utc(time_at(obj, &["metadata", "creationTimestamp"]))),
    ]
}

// ---------------------------------------------------------------------------------------------------------------
// Labels and label selectors
// ---------------------------------------------------------------------------------------------------------------

/// Upstream's `labels.FormatLabels`: sorted `k=v` pairs, or `<none>`.
fn format_labels(labels: Option<&Map<String, Value>>) -> String {
    let mut pairs: Vec<String> = labels
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        "<none>".to_string()
    } else {
        pairs.join(",")
    }
}

/// Upstream's `metav1.FormatLabelSelector`: `<error>` for an invalid selector, `<none>` for an empty one.
fn format_label_selector(selector: Option<&Value>) -> String {
    match label_selector_string(selector) {
        Err(()) => "<error>".to_string(),
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
    }
}

/// `metav1.LabelSelectorAsSelector(selector).String()`: requirements sorted by key, `k=v`, `k in (a,b)`,
/// `k notin (a,b)`, `k`, `!k`. A missing (nil) or empty selector prints as "".
fn label_selector_string(selector: Option<&Value>) -> Result<String, ()> {
    let Some(selector) = selector.and_then(Value::as_object) else {
        return Ok(String::new());
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(match_labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (key, value) in match_labels {
            let value = value.as_str().ok_or(())?;
            if !is_qualified_name(key) || !is_valid_label_value(value) {
                return Err(());
            }
            requirements.push((key.clone(), format!("{key}={value}")));
        }
    }
    let expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    for expr in expressions {
        let key = str_at(expr, &["key"]);
        let mut values = Vec::new();
        for v in arr_at(expr, &["values"]) {
            values.push(v.as_str().ok_or(())?);
        }
        if !is_qualified_name(key) || !values.iter().all(|v| is_valid_label_value(v)) {
            return Err(());
        }
        let rendered = match str_at(expr, &["operator"]) {
            op @ ("In" | "NotIn") => {
                if values.is_empty() {
                    return Err(());
                }
                let mut sorted = values.clone();
                sorted.sort_unstable();
                let word = if op == "In" { "in" } else { "notin" };
                format!("{key} {word} ({})", sorted.join(","))
            }
            "Exists" if values.is_empty() => key.to_string(),
            "DoesNotExist" if values.is_empty() => format!("!{key}"),
            _ => return Err(()),
        };
        requirements.push((key.to_string(), rendered));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(requirements.into_iter().map(|(_, r)| r).collect::<Vec<_>>().join(","))
}

/// `validation.IsQualifiedName`: an optional DNS-1123 subdomain prefix and `/`, then a name of at most 63
/// alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn is_qualified_name(s: &str) -> bool {
    let name = match s.split_once('/') {
        Some((prefix, name)) => {
            if name.contains('/') || prefix.is_empty() || !is_dns1123_subdomain(prefix) {
                return false;
            }
            name
        }
        None => s,
    };
    !name.is_empty() && is_label_token(name)
}

/// `validation.IsValidLabelValue`: empty, or a name part as in [`is_qualified_name`].
fn is_valid_label_value(s: &str) -> bool {
    s.is_empty() || is_label_token(s)
}

fn is_label_token(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            b.len() <= 63
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            match (b.first(), b.last()) {
                (Some(first), Some(last)) => {
                    (first.is_ascii_lowercase() || first.is_ascii_digit())
                        && (last.is_ascii_lowercase() || last.is_ascii_digit())
                        && b.iter()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                }
                _ => false,
            }
        })
}

// ---------------------------------------------------------------------------------------------------------------
// Time: RFC 3339 parsing and formatting, HumanDuration
// ---------------------------------------------------------------------------------------------------------------

const NANOS_PER_SEC: i128 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;
/// Go's zero `time.Time` (0001-01-01T00:00:00Z) in nanoseconds since the Unix epoch: what a missing
/// `metav1.Time` decodes to. Every instant here is nanoseconds since the epoch.
const ZERO_TIME: i128 = -62_135_596_800 * NANOS_PER_SEC;

/// The `metav1.Time` at `path`: ZERO_TIME when missing, null, empty or unparsable.
fn time_at(v: &Value, path: &[&str]) -> i128 {
    opt_str_at(v, path).and_then(parse_rfc3339).unwrap_or(ZERO_TIME)
}

/// Upstream's `translateTimestampSince`: `<unknown>` for the zero time, else the HumanDuration since it.
fn translate_timestamp_since(t: i128, now: i128) -> String {
    if t == ZERO_TIME {
        return "<unknown>".to_string();
    }
    // Go's Time.Sub saturates at the bounds of time.Duration (int64 nanoseconds).
    let d = now - t;
    let d = i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX });
    human_duration(d)
}

/// `k8s.io/apimachinery/pkg/util/duration.HumanDuration` for a duration in nanoseconds.
fn human_duration(d: i64) -> String {
    const SEC: i64 = 1_000_000_000;
    const MIN: i64 = 60 * SEC;
    const HOUR: i64 = 60 * MIN;
    // Up to 2s (excluded) in the future is tolerated as clock skew.
    let seconds = d / SEC;
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d / MIN;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d / HOUR;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{}h", hours / 24, h)
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{}d", hours / 24 / 365, dy)
        }
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into nanoseconds since the epoch. Fractions beyond
/// nanoseconds are truncated, as Go does. Go's zero time and anything malformed give None / ZERO_TIME.
fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter().try_fold(0i64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let expect_byte = |at: usize, allowed: &[u8]| -> Option<()> { allowed.contains(b.get(at)?).then_some(()) };

    let year = digits(0, 4)?;
    expect_byte(4, b"-")?;
    let month = digits(5, 2)?;
    expect_byte(7, b"-")?;
    let day = digits(8, 2)?;
    expect_byte(10, b"Tt")?;
    let hour = digits(11, 2)?;
    expect_byte(13, b":")?;
    let minute = digits(14, 2)?;
    expect_byte(16, b":")?;
    let second = digits(17, 2)?;
    let mut at = 19;

    let mut nanos: i64 = 0;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return None;
        }
        let mut scale = 100_000_000;
        for c in b.get(start..at.min(start + 9))? {
            nanos += i64::from(c - b'0') * scale;
            scale /= 10;
        }
    }

    let offset_secs = match b.get(at)? {
        b'Z' | b'z' => {
            at += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            let oh = digits(at + 1, 2)?;
            expect_byte(at + 3, b":")?;
            let om = digits(at + 4, 2)?;
            at += 6;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    if at != b.len() {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let secs = days_from_civil(year, month, day) * SECS_PER_DAY + hour * 3600 + minute * 60 + second - offset_secs;
    Some(i128::from(secs) * NANOS_PER_SEC + i128::from(nanos))
}

fn is_leap_year(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap_year(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Go's `t.UTC().Format(time.RFC3339)`: whole seconds, `Z`.
fn format_rfc3339_utc(t: i128) -> String {
    let secs = t.div_euclid(NANOS_PER_SEC);
    // Parsed instants lie within years -1..=10000, far inside i64 seconds.
    let secs = i64::try_from(secs).unwrap_or(0);
    let days = secs.div_euclid(SECS_PER_DAY);
    let rem = secs.rem_euclid(SECS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let year = if y < 0 {
        format!("-{:04}", -y)
    } else {
        format!("{y:04}")
    };
    format!(
        "{year}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 2023-11-14T22:13:20Z.
    const NOW: i64 = 1_700_000_000;

    /// The RFC 3339 time `secs_ago` seconds before NOW.
    fn ago(secs_ago: i64) -> String {
        format_rfc3339_utc(i128::from(NOW - secs_ago) * NANOS_PER_SEC)
    }

    fn one(resource: &str, obj: Value) -> Value {
        table(resource, &[obj], NOW, "42", None, IncludeObject::Metadata, true)
    }

    fn cells(resource: &str, obj: Value) -> Vec<Value> {
        let t = one(resource, obj);
        t["rows"][0]["cells"].as_array().cloned().unwrap_or_default()
    }

    fn column_names(resource: &str) -> Vec<(String, i64)> {
        let t = table(resource, &[], NOW, "1", None, IncludeObject::None, true);
        t["columnDefinitions"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| {
                        (
                            c["name"].as_str().unwrap_or("?").to_string(),
                            c["priority"].as_i64().unwrap_or(-1),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn names(cols: &[(String, i64)], priority: i64) -> Vec<&str> {
        cols.iter()
            .filter(|(_, p)| *p == priority)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    // ---- Table shape ---------------------------------------------------------------------------------------

    #[test]
    fn table_shape_and_metadata() {
        let t = table("pods", &[], NOW, "123", Some("tok"), IncludeObject::Metadata, true);
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"], json!({"resourceVersion": "123", "continue": "tok"}));
        assert_eq!(t["rows"], json!([]));
        assert_eq!(t["columnDefinitions"].as_array().map(Vec::len), Some(9));

        let t = table("pods", &[], NOW, "", Some(""), IncludeObject::Metadata, true);
        assert_eq!(t["metadata"], json!({}));
    }

    #[test]
    fn without_columns_column_definitions_are_null() {
        let t = table(
            "pods",
            &[json!({"metadata": {"name": "a"}})],
            NOW,
            "5",
            None,
            IncludeObject::None,
            false,
        );
        assert!(t["columnDefinitions"].is_null());
        assert_eq!(t["rows"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn column_definition_fields() {
        let t = table("pods", &[], NOW, "1", None, IncludeObject::None, true);
        let first = &t["columnDefinitions"][0];
        assert_eq!(first["name"], "Name");
        assert_eq!(first["type"], "string");
        assert_eq!(first["format"], "name");
        assert_eq!(first["priority"], 0);
        assert!(first["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("Name must be unique")));
        let restarts = &t["columnDefinitions"][3];
        assert_eq!(restarts["name"], "Restarts");
        assert_eq!(restarts["type"], "string");
        assert_eq!(restarts["format"], "");
        let ip = &t["columnDefinitions"][5];
        assert_eq!(ip["name"], "IP");
        assert_eq!(ip["priority"], 1);
    }

    #[test]
    fn every_row_has_as_many_cells_as_columns() {
        let junk = [
            json!({}),
            json!(null),
            json!(7),
            json!("x"),
            json!([1, 2]),
            json!({"metadata": 3, "spec": []}),
        ];
        for resource in [
            "pods",
            "deployments",
            "replicasets",
            "nodes",
            "services",
            "endpoints",
            "namespaces",
            "events",
            "leases",
            "configmaps",
            "secrets",
            "serviceaccounts",
            "endpointslices",
            "rolebindings",
            "clusterrolebindings",
            "widgets",
        ] {
            let t = table(resource, &junk, NOW, "1", None, IncludeObject::Object, true);
            let columns = t["columnDefinitions"].as_array().map_or(0, Vec::len);
            assert!(columns > 0, "{resource}");
            let rows = t["rows"].as_array().cloned().unwrap_or_default();
            assert_eq!(rows.len(), junk.len(), "{resource}");
            for row in rows {
                assert_eq!(
                    row["cells"].as_array().map(Vec::len),
                    Some(columns),
                    "{resource}: {row}"
                );
            }
        }
    }

    // ---- IncludeObject -------------------------------------------------------------------------------------

    #[test]
    fn include_object_variants() {
        let pod = json!({"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "p", "namespace": "default", "labels": {"a": "b"}}, "spec": {"nodeName": "n1"}});
        let t = table(
            "pods",
            std::slice::from_ref(&pod),
            NOW,
            "1",
            None,
            IncludeObject::Metadata,
            true,
        );
        assert_eq!(
            t["rows"][0]["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"name": "p", "namespace": "default", "labels": {"a": "b"}}})
        );
        let t = table(
            "pods",
            std::slice::from_ref(&pod),
            NOW,
            "1",
            None,
            IncludeObject::Object,
            true,
        );
        assert_eq!(t["rows"][0]["object"], pod);
        let t = table("pods", &[pod], NOW, "1", None, IncludeObject::None, true);
        assert!(t["rows"][0]["object"].is_null());
        assert!(t["rows"][0].as_object().is_some_and(|r| r.contains_key("object")));

        let t = table("pods", &[json!("junk")], NOW, "1", None, IncludeObject::default(), true);
        assert_eq!(t["rows"][0]["object"]["metadata"], json!({}));
    }

    #[test]
    fn include_object_from_query() {
        assert_eq!(IncludeObject::from_query(""), Some(IncludeObject::Metadata));
        assert_eq!(IncludeObject::from_query("Metadata"), Some(IncludeObject::Metadata));
        assert_eq!(IncludeObject::from_query("None"), Some(IncludeObject::None));
        assert_eq!(IncludeObject::from_query("Object"), Some(IncludeObject::Object));
        assert_eq!(IncludeObject::from_query("object"), None);
        assert_eq!(IncludeObject::default(), IncludeObject::Metadata);
    }

    // ---- Durations and timestamps --------------------------------------------------------------------------

    #[test]
    fn human_duration_table() {
        const S: i64 = 1_000_000_000;
        const M: i64 = 60 * S;
        const H: i64 = 60 * M;
        const D: i64 = 24 * H;
        const Y: i64 = 365 * D;
        let cases: &[(i64, &str)] = &[
            (-3 * S, "<invalid>"),
            (-2 * S, "<invalid>"),
            (-2 * S + 1, "0s"),
            (-S, "0s"),
            (-1, "0s"),
            (0, "0s"),
            (S - 1, "0s"),
            (5 * S, "5s"),
            (59 * S, "59s"),
            (60 * S, "60s"),
            (119 * S, "119s"),
            (2 * M, "2m"),
            (2 * M + 3 * S, "2m3s"),
            (9 * M + 59 * S, "9m59s"),
            (10 * M, "10m"),
            (10 * M + 30 * S, "10m"),
            (179 * M, "179m"),
            (3 * H, "3h"),
            (3 * H + 4 * M, "3h4m"),
            (7 * H + 59 * M, "7h59m"),
            (8 * H, "8h"),
            (47 * H + 59 * M, "47h"),
            (2 * D, "2d"),
            (2 * D + 5 * H, "2d5h"),
            (7 * D + 23 * H, "7d23h"),
            (8 * D, "8d"),
            (400 * D, "400d"),
            (2 * Y - D, "729d"),
            (2 * Y, "2y"),
            (3 * Y + 20 * D, "3y20d"),
            (7 * Y + 364 * D, "7y364d"),
            (8 * Y, "8y"),
            (100 * Y + 5 * D, "100y"),
            (i64::MAX, "292y"),
            (i64::MIN, "<invalid>"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration(*d), *want, "duration {d}ns");
        }
    }

    #[test]
    fn rfc3339_parsing() {
        let epoch = |s: &str| parse_rfc3339(s).and_then(|ns| i64::try_from(ns.div_euclid(NANOS_PER_SEC)).ok());
        assert_eq!(epoch("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(epoch("2023-11-14T22:13:20Z"), Some(NOW));
        assert_eq!(epoch("2023-11-14T23:13:20+01:00"), Some(NOW));
        assert_eq!(epoch("2023-11-14T21:13:20-01:00"), Some(NOW));
        assert_eq!(epoch("2023-11-14t22:13:20z"), Some(NOW));
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.5Z"),
            Some(i128::from(NOW) * NANOS_PER_SEC + 500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123456789123Z"),
            Some(i128::from(NOW) * NANOS_PER_SEC + 123_456_789)
        );
        assert_eq!(epoch("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), Some(ZERO_TIME));
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14 22:13:20Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "2023-13-14T22:13:20Z",
            "2023-02-29T22:13:20Z",
            "2023-11-31T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:60:00Z",
            "2023-11-14T22:13:60Z",
            "2023-11-14T22:13:20+1:00",
            "2023-11-14T22:13:20+24:00",
            "2023-11-14T22:13:20Zjunk",
            "+023-11-14T22:13:20Z",
            "２023-11-14T22:13:20Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_formatting_round_trips() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_rfc3339(s).map(format_rfc3339_utc).as_deref(), Some(s));
        }
        assert_eq!(
            parse_rfc3339("2023-11-15T00:13:20.999+02:00")
                .map(format_rfc3339_utc)
                .as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(format_rfc3339_utc(ZERO_TIME), "0001-01-01T00:00:00Z");
        assert_eq!(
            parse_rfc3339("0000-01-01T00:00:00+01:00")
                .map(format_rfc3339_utc)
                .as_deref(),
            Some("-0001-12-31T23:00:00Z")
        );
    }

    #[test]
    fn ages_from_creation_timestamp() {
        let age = |ts: Value| {
            cells(
                "namespaces",
                json!({"metadata": {"name": "x", "creationTimestamp": ts}}),
            )[2]
            .clone()
        };
        assert_eq!(age(json!(ago(5))), "5s");
        assert_eq!(age(json!(ago(123))), "2m3s");
        assert_eq!(age(json!(ago(3 * 3600 + 240))), "3h4m");
        assert_eq!(age(json!(ago(-1))), "0s");
        assert_eq!(age(json!(ago(-60))), "<invalid>");
        assert_eq!(age(json!("garbage")), "<unknown>");
        assert_eq!(age(json!("")), "<unknown>");
        assert_eq!(age(json!(null)), "<unknown>");
        assert_eq!(age(json!(12345)), "<unknown>");
        assert_eq!(age(json!("0001-01-01T00:00:00Z")), "<unknown>");
        assert_eq!(age(json!("1000-01-01T00:00:00Z")), "292y");
        // Fractional seconds: 4.5s ago is "4s".
        let ts = format!("{}.5Z", ago(5).trim_end_matches('Z'));
        assert_eq!(age(json!(ts)), "4s");
    }

    // ---- Pods ----------------------------------------------------------------------------------------------

    fn running_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-7d4b9c8f6-abcde", "namespace": "default", "creationTimestamp": ago(3600 * 5 + 60)},
            "spec": {"nodeName": "node-1", "containers": [{"name": "web", "image": "nginx:1.27"}]},
            "status": {
                "phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"},
                               {"type": "ContainersReady", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "started": true,
                    "state": {"running": {"startedAt": ago(3600 * 5)}}}]
            }
        })
    }

    #[test]
    fn pod_columns() {
        let cols = column_names("pods");
        assert_eq!(names(&cols, 0), ["Name", "Ready", "Status", "Restarts", "Age"]);
        assert_eq!(names(&cols, 1), ["IP", "Node", "Nominated Node", "Readiness Gates"]);
    }

    #[test]
    fn pod_running() {
        assert_eq!(
            cells("pods", running_pod()),
            [
                json!("web-7d4b9c8f6-abcde"),
                json!("1/1"),
                json!("Running"),
                json!("0"),
                json!("5h1m"),
                json!("10.244.1.5"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        assert!(one("pods", running_pod())["rows"][0].get("conditions").is_none());
    }

    #[test]
    fn pod_pending_container_creating() {
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": ago(10)},
            "spec": {"nodeName": "node-2", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "a", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}},
                {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}
            ]}
        });
        let c = cells("pods", pod);
        assert_eq!(c[1], "0/2");
        assert_eq!(c[2], "ContainerCreating");
        assert_eq!(c[3], "0");
        assert_eq!(c[4], "10s");
        assert_eq!(c[5], "<none>");
        assert_eq!(c[6], "node-2");
    }

    #[test]
    fn pod_unscheduled_without_status() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        let c = cells("pods", pod);
        assert_eq!(
            c,
            [
                json!("p"),
                json!("0/1"),
                json!("Pending"),
                json!("0"),
                json!("<unknown>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn pod_crash_loop_with_last_restart() {
        let pod = json!({
            "metadata": {"name": "crashy", "creationTimestamp": ago(3600)},
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "app", "ready": false, "restartCount": 5,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(300)}}
            }]}
        });
        let c = cells("pods", pod);
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "5 (5m ago)");
        assert_eq!(c[4], "60m");
    }

    #[test]
    fn pod_restarts_without_finished_at_is_plain_number() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "a", "ready": true, "restartCount": 2,
                "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 137}}}]}});
        assert_eq!(cells("pods", pod)[3], "2");
    }

    #[test]
    fn pod_terminating() {
        let mut pod = running_pod();
        pod["metadata"]["deletionTimestamp"] = json!(ago(2));
        assert_eq!(cells("pods", pod.clone())[2], "Terminating");

        pod["status"]["reason"] = json!("NodeLost");
        assert_eq!(cells("pods", pod.clone())[2], "Unknown");

        // A terminal pod being deleted keeps its terminal reason.
        let mut done = json!({"metadata": {"name": "job-x", "deletionTimestamp": ago(2)},
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "a", "ready": false,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        assert_eq!(cells("pods", done.clone())[2], "Completed");
        done["metadata"]["deletionTimestamp"] = json!(null);
        assert_eq!(cells("pods", done)[2], "Completed");
    }

    #[test]
    fn pod_succeeded_and_failed_row_conditions() {
        let pod = json!({"metadata": {"name": "done"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "a", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        let t = one("pods", pod);
        assert_eq!(t["rows"][0]["cells"][1], "0/1");
        assert_eq!(t["rows"][0]["cells"][2], "Completed");
        assert_eq!(
            t["rows"][0]["conditions"],
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                "message": "The pod has completed successfully."}])
        );

        let pod = json!({"metadata": {"name": "bad"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Failed", "containerStatuses": [{"name": "a",
                "state": {"terminated": {"exitCode": 2}}}]}});
        let t = one("pods", pod);
        assert_eq!(t["rows"][0]["cells"][2], "ExitCode:2");
        assert_eq!(t["rows"][0]["conditions"][0]["reason"], "Failed");
        assert_eq!(t["rows"][0]["conditions"][0]["message"], "The pod failed.");

        let pod = json!({"metadata": {"name": "killed"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Failed", "containerStatuses": [{"name": "a",
                "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}});
        assert_eq!(cells("pods", pod)[2], "Signal:9");

        let pod = json!({"metadata": {"name": "evicted"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Failed", "reason": "Evicted"}});
        assert_eq!(cells("pods", pod)[2], "Evicted");
    }

    #[test]
    fn pod_init_containers() {
        let base = |init_statuses: Value, conditions: Value| {
            json!({"metadata": {"name": "p"},
                "spec": {"initContainers": [{"name": "init-a"}, {"name": "init-b"}], "containers": [{"name": "app"}]},
                "status": {"phase": "Pending", "conditions": conditions, "initContainerStatuses": init_statuses,
                    "containerStatuses": [{"name": "app", "ready": false,
                        "state": {"waiting": {"reason": "PodInitializing"}}}]}})
        };
        // First init container still running.
        let pod = base(
            json!([{"name": "init-a", "ready": false, "restartCount": 0, "state": {"running": {}}},
                   {"name": "init-b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]),
            json!([{"type": "Initialized", "status": "False"}]),
        );
        assert_eq!(cells("pods", pod)[2], "Init:0/2");

        // First done, second running.
        let pod = base(
            json!([{"name": "init-a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                   {"name": "init-b", "state": {"running": {}}}]),
            json!([]),
        );
        assert_eq!(cells("pods", pod)[2], "Init:1/2");

        // Second crashing.
        let pod = base(
            json!([{"name": "init-a", "state": {"terminated": {"exitCode": 0}}},
                   {"name": "init-b", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(30)}}}]),
            json!([]),
        );
        let c = cells("pods", pod);
        assert_eq!(c[2], "Init:CrashLoopBackOff");
        assert_eq!(c[3], "3 (30s ago)");

        // Failed with and without a reason.
        let pod = base(
            json!([{"name": "init-a", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]),
            json!([]),
        );
        assert_eq!(cells("pods", pod)[2], "Init:Error");
        let pod = base(
            json!([{"name": "init-a", "state": {"terminated": {"exitCode": 3}}}]),
            json!([]),
        );
        assert_eq!(cells("pods", pod)[2], "Init:ExitCode:3");
        let pod = base(
            json!([{"name": "init-a", "state": {"terminated": {"exitCode": 3, "signal": 15}}}]),
            json!([]),
        );
        assert_eq!(cells("pods", pod)[2], "Init:Signal:15");

        // All init containers done: the main containers decide.
        let pod = base(
            json!([{"name": "init-a", "state": {"terminated": {"exitCode": 0}}},
                   {"name": "init-b", "state": {"terminated": {"exitCode": 0}}}]),
            json!([{"type": "Initialized", "status": "True"}]),
        );
        assert_eq!(cells("pods", pod)[2], "PodInitializing");
    }

    #[test]
    fn pod_sidecar_init_container_counts_as_container() {
        let pod = json!({
            "metadata": {"name": "with-sidecar"},
            "spec": {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "app"}]},
            "status": {"phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true, "restartCount": 1,
                    "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(600)}}}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 2, "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(120)}}}]}
        });
        let c = cells("pods", pod);
        assert_eq!(c[1], "2/2");
        assert_eq!(c[2], "Running");
        assert_eq!(c[3], "3 (2m ago)");
    }

    #[test]
    fn pod_completed_with_running_container_and_gates() {
        let pod = json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}],
                     "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/other"}]},
            "status": {"phase": "Running", "nominatedNodeName": "node-9", "podIPs": [{"ip": "fd00::5"}],
                "conditions": [{"type": "example.com/lb", "status": "True"}, {"type": "example.com/other", "status": "False"}],
                "containerStatuses": [
                    {"name": "a", "ready": true, "state": {"running": {}}},
                    {"name": "b", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}
        });
        let c = cells("pods", pod.clone());
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "NotReady");
        assert_eq!(c[5], "fd00::5");
        assert_eq!(c[7], "node-9");
        assert_eq!(c[8], "1/2");

        let mut ready = pod;
        ready["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        let c = cells("pods", ready);
        assert_eq!(c[2], "Running");
        assert_eq!(c[8], "0/2");
    }

    #[test]
    fn pod_scheduling_gated() {
        let pod = json!({"metadata": {"name": "g"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}});
        assert_eq!(cells("pods", pod)[2], "SchedulingGated");
    }

    // ---- Deployments and ReplicaSets -----------------------------------------------------------------------

    #[test]
    fn deployment_columns_and_cells() {
        let cols = column_names("deployments");
        assert_eq!(names(&cols, 0), ["Name", "Ready", "Up-to-date", "Available", "Age"]);
        assert_eq!(names(&cols, 1), ["Containers", "Images", "Selector"]);

        let d = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(86400 * 2 + 3600 * 5)},
            "spec": {"replicas": 3,
                "selector": {"matchLabels": {"app": "web", "tier": "front"},
                             "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "canary"]},
                                                  {"key": "legacy", "operator": "DoesNotExist"}]},
                "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"},
                                                     {"name": "log", "image": "fluent-bit:3"}]}}},
            "status": {"replicas": 3, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1}
        });
        assert_eq!(
            cells("deployments", d),
            [
                json!("web"),
                json!("1/3"),
                json!(2),
                json!(1),
                json!("2d5h"),
                json!("web,log"),
                json!("nginx:1.27,fluent-bit:3"),
                json!("app=web,env in (canary,prod),!legacy,tier=front")
            ]
        );
    }

    #[test]
    fn deployment_defaults_and_bad_selector() {
        let c = cells("deployments", json!({"metadata": {"name": "d"}}));
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], 0);
        assert_eq!(c[5], "");
        assert_eq!(c[6], "");
        assert_eq!(c[7], "");
        let c = cells(
            "deployments",
            json!({"metadata": {"name": "d"}, "spec": {"replicas": 0,
            "selector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}}}),
        );
        assert_eq!(c[1], "0/0");
        assert_eq!(c[7], "<invalid>");
    }

    #[test]
    fn replicaset_columns_and_cells() {
        let cols = column_names("replicasets");
        assert_eq!(names(&cols, 0), ["Name", "Desired", "Current", "Ready", "Age"]);
        assert_eq!(names(&cols, 1), ["Containers", "Images", "Selector"]);
        let rs = json!({
            "metadata": {"name": "web-7d4b9c8f6", "creationTimestamp": ago(400 * 86400)},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "7d4b9c8f6"}},
                     "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2}
        });
        assert_eq!(
            cells("replicasets", rs),
            [
                json!("web-7d4b9c8f6"),
                json!(3),
                json!(3),
                json!(2),
                json!("400d"),
                json!("web"),
                json!("nginx:1.27"),
                json!("app=web,pod-template-hash=7d4b9c8f6")
            ]
        );
        let c = cells("replicasets", json!({"metadata": {"name": "r"}}));
        assert_eq!(c[1], 1);
        assert_eq!(c[7], "<none>");
        let c = cells(
            "replicasets",
            json!({"spec": {"selector": {"matchLabels": {"bad key": "x"}}}}),
        );
        assert_eq!(c[7], "<error>");
    }

    #[test]
    fn label_selectors() {
        let s = |v: Value| label_selector_string(Some(&v));
        assert_eq!(s(json!({})), Ok(String::new()));
        assert_eq!(label_selector_string(None), Ok(String::new()));
        assert_eq!(
            s(json!({"matchLabels": {"b": "2", "a": "1"}})),
            Ok("a=1,b=2".to_string())
        );
        assert_eq!(
            s(
                json!({"matchExpressions": [{"key": "k", "operator": "NotIn", "values": ["z", "y"]},
                                          {"key": "e", "operator": "Exists"}]})
            ),
            Ok("e,k notin (y,z)".to_string())
        );
        assert_eq!(
            s(json!({"matchLabels": {"example.com/app": ""}})),
            Ok("example.com/app=".to_string())
        );
        assert_eq!(
            s(json!({"matchExpressions": [{"key": "k", "operator": "In", "values": []}]})),
            Err(())
        );
        assert_eq!(
            s(json!({"matchExpressions": [{"key": "k", "operator": "Exists", "values": ["x"]}]})),
            Err(())
        );
        assert_eq!(s(json!({"matchLabels": {"a": 1}})), Err(()));
        assert_eq!(s(json!({"matchLabels": {"-a": "x"}})), Err(()));
        assert_eq!(s(json!({"matchLabels": {"a": "x y"}})), Err(()));
        assert_eq!(s(json!({"matchLabels": {"Example.com/a": "x"}})), Err(()));
        assert_eq!(s(json!({"matchLabels": {"/a": "x"}})), Err(()));
        assert_eq!(s(json!({"matchLabels": {"a/b/c": "x"}})), Err(()));
        assert_eq!(s(json!({"matchLabels": {("a".repeat(64)): "x"}})), Err(()));
        assert!(is_qualified_name("node-role.kubernetes.io/control-plane"));
        assert!(is_qualified_name("A_b.c"));
        assert!(!is_qualified_name(""));
    }

    // ---- Nodes ---------------------------------------------------------------------------------------------

    fn node(ready: &str) -> Value {
        json!({
            "metadata": {"name": "node-1", "creationTimestamp": ago(30 * 86400),
                "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": "",
                           "kubernetes.io/hostname": "node-1"}},
            "spec": {},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": ready}],
                "addresses": [{"type": "Hostname", "address": "node-1"}, {"type": "InternalIP", "address": "192.168.1.10"}],
                "nodeInfo": {"kubeletVersion": "v1.32.2", "osImage": "Ubuntu 24.04.1 LTS",
                    "kernelVersion": "6.8.0-45-generic", "containerRuntimeVersion": "containerd://1.7.22"}
            }
        })
    }

    #[test]
    fn node_columns_and_ready() {
        let cols = column_names("nodes");
        assert_eq!(names(&cols, 0), ["Name", "Status", "Roles", "Age", "Version"]);
        assert_eq!(
            names(&cols, 1),
            [
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime"
            ]
        );
        assert_eq!(
            cells("nodes", node("True")),
            [
                json!("node-1"),
                json!("Ready"),
                json!("control-plane,master"),
                json!("30d"),
                json!("v1.32.2"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Ubuntu 24.04.1 LTS"),
                json!("6.8.0-45-generic"),
                json!("containerd://1.7.22")
            ]
        );
    }

    #[test]
    fn node_not_ready_unknown_and_cordoned() {
        assert_eq!(cells("nodes", node("False"))[1], "NotReady");
        assert_eq!(cells("nodes", node("Unknown"))[1], "NotReady");
        let mut n = node("True");
        n["spec"]["unschedulable"] = json!(true);
        assert_eq!(cells("nodes", n)[1], "Ready,SchedulingDisabled");

        let bare = json!({"metadata": {"name": "n", "labels": {"kubernetes.io/role": "worker", "node-role.kubernetes.io/": ""}},
            "spec": {"unschedulable": true},
            "status": {"addresses": [{"type": "ExternalIP", "address": "203.0.113.7"}]}});
        let c = cells("nodes", bare);
        assert_eq!(c[1], "Unknown,SchedulingDisabled");
        assert_eq!(c[2], "worker");
        assert_eq!(c[4], "");
        assert_eq!(c[5], "<none>");
        assert_eq!(c[6], "203.0.113.7");
        assert_eq!(c[7], "<unknown>");
        assert_eq!(c[8], "<unknown>");
        assert_eq!(c[9], "<unknown>");
        assert_eq!(cells("nodes", json!({"metadata": {"name": "n"}}))[2], "<none>");
    }

    // ---- Services, Endpoints, EndpointSlices ---------------------------------------------------------------

    #[test]
    fn service_columns_and_cells() {
        let cols = column_names("services");
        assert_eq!(
            names(&cols, 0),
            ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"]
        );
        assert_eq!(names(&cols, 1), ["Selector"]);

        let svc = json!({"metadata": {"name": "kubernetes", "creationTimestamp": ago(90)},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}});
        assert_eq!(
            cells("services", svc),
            [
                json!("kubernetes"),
                json!("ClusterIP"),
                json!("10.96.0.1"),
                json!("<none>"),
                json!("443/TCP"),
                json!("90s"),
                json!("<none>")
            ]
        );

        let svc = json!({"metadata": {"name": "web"},
            "spec": {"type": "NodePort", "clusterIPs": ["10.96.3.4", "fd00::4"], "selector": {"tier": "front", "app": "web"},
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let c = cells("services", svc);
        assert_eq!(c[1], "NodePort");
        assert_eq!(c[2], "10.96.3.4");
        assert_eq!(c[3], "<none>");
        assert_eq!(c[4], "80:30080/TCP,53/UDP");
        assert_eq!(c[6], "app=web,tier=front");
    }

    #[test]
    fn service_external_ips() {
        let lb = |status: Value, external: Value| {
            cells(
                "services",
                json!({"metadata": {"name": "lb"},
                "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.9", "externalIPs": external, "ports": [{"port": 80}]},
                "status": {"loadBalancer": status}}),
            )
        };
        let c = lb(json!({}), json!(null));
        assert_eq!(c[3], "<pending>");
        assert_eq!(c[4], "80/TCP");
        assert_eq!(
            lb(
                json!({"ingress": [{"ip": "203.0.113.9"}, {"hostname": "a.example.com"}, {"ip": "198.51.100.1"}]}),
                json!([])
            )[3],
            "198.51.100.1,203.0.113.9,a.example.com"
        );
        assert_eq!(
            lb(json!({"ingress": [{"ip": "203.0.113.9"}]}), json!(["1.2.3.4"]))[3],
            "203.0.113.9,1.2.3.4"
        );
        assert_eq!(lb(json!({}), json!(["1.2.3.4"]))[3], "1.2.3.4");
        // The server prints wide, so long load-balancer names are not clipped.
        assert_eq!(
            lb(
                json!({"ingress": [{"hostname": "a-very-long-hostname.elb.example.com"}]}),
                json!([])
            )[3],
            "a-very-long-hostname.elb.example.com"
        );

        let c = cells(
            "services",
            json!({"metadata": {"name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
        );
        assert_eq!(
            &c[1..5],
            [
                json!("ExternalName"),
                json!("<none>"),
                json!("db.example.com"),
                json!("<none>")
            ]
        );

        let c = cells(
            "services",
            json!({"metadata": {"name": "headless"},
            "spec": {"clusterIP": "None", "externalIPs": ["5.6.7.8", "9.9.9.9"], "selector": {"app": "db"}}}),
        );
        assert_eq!(
            &c[1..5],
            [
                json!("ClusterIP"),
                json!("None"),
                json!("5.6.7.8,9.9.9.9"),
                json!("<none>")
            ]
        );

        let c = cells("services", json!({"spec": {"type": "Weird"}}));
        assert_eq!(c[3], "<unknown>");
    }

    #[test]
    fn endpoints_cells() {
        assert_eq!(names(&column_names("endpoints"), 0), ["Name", "Endpoints", "Age"]);
        let ep =
            |subsets: Value| cells("endpoints", json!({"metadata": {"name": "web"}, "subsets": subsets}))[1].clone();
        assert_eq!(ep(json!(null)), "<none>");
        assert_eq!(ep(json!([])), "<none>");
        assert_eq!(
            ep(json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}]}])),
            "10.0.0.1:80,10.0.0.2:80"
        );
        assert_eq!(
            ep(
                json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}],
                       "ports": [{"port": 80}]}])
            ),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more..."
        );
        assert_eq!(
            ep(
                json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]},
                      {"addresses": [{"ip": "10.0.1.1"}], "ports": [{"port": 8080}]}])
            ),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 2 more..."
        );
        assert_eq!(
            ep(json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}])),
            "10.0.0.1,10.0.0.2"
        );
        assert_eq!(
            ep(json!([{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 53}]}])),
            "[fd00::1]:53"
        );
        assert_eq!(
            ep(json!([{"notReadyAddresses": [{"ip": "10.0.0.9"}], "ports": [{"port": 80}]}])),
            ""
        );
    }

    #[test]
    fn endpointslice_cells() {
        assert_eq!(
            names(&column_names("endpointslices"), 0),
            ["Name", "AddressType", "Ports", "Endpoints", "Age"]
        );
        let slice = json!({"metadata": {"name": "web-abc12", "creationTimestamp": ago(600)}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "metrics"}, {}, {"port": 9000}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]});
        assert_eq!(
            cells("endpointslices", slice),
            [
                json!("web-abc12"),
                json!("IPv4"),
                json!("80,metrics,* + 1 more..."),
                json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."),
                json!("10m")
            ]
        );
        let c = cells(
            "endpointslices",
            json!({"metadata": {"name": "empty"}, "addressType": "IPv6"}),
        );
        assert_eq!(&c[1..4], [json!("IPv6"), json!("<unset>"), json!("<unset>")]);
    }

    // ---- Events --------------------------------------------------------------------------------------------

    #[test]
    fn event_columns_and_cells() {
        let cols = column_names("events");
        assert_eq!(names(&cols, 0), ["Last Seen", "Type", "Reason", "Object", "Message"]);
        assert_eq!(names(&cols, 1), ["Subobject", "Source", "First Seen", "Count", "Name"]);

        let ev = json!({"metadata": {"name": "web-1.17a2b3c4d5e6f7a8", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{web}"},
            "reason": "Pulled", "message": "  Successfully pulled image \"nginx\"\n", "type": "Normal",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": ago(3600), "lastTimestamp": ago(120), "count": 4});
        assert_eq!(
            cells("events", ev),
            [
                json!("2m"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web-1"),
                json!("spec.containers{web}"),
                json!("kubelet, node-1"),
                json!("Successfully pulled image \"nginx\""),
                json!("60m"),
                json!(4),
                json!("web-1.17a2b3c4d5e6f7a8")
            ]
        );
    }

    #[test]
    fn event_new_api_fields() {
        let ev = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Node"}, "type": "Warning",
            "reason": "Rebooted", "eventTime": "2023-11-14T22:12:20.000000Z",
            "reportingComponent": "kubelet", "reportingInstance": ""});
        let c = cells("events", ev);
        assert_eq!(c[0], "60s");
        assert_eq!(c[3], "node");
        assert_eq!(c[5], "kubelet");
        assert_eq!(c[7], "60s");
        assert_eq!(c[8], 1);

        let ev = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Deployment", "name": "web"},
            "firstTimestamp": ago(7200), "lastTimestamp": ago(3600), "count": 2,
            "series": {"count": 9, "lastObservedTime": ago(5)}, "source": {"host": "h"}});
        let c = cells("events", ev);
        assert_eq!(c[0], "5s");
        assert_eq!(c[3], "deployment/web");
        assert_eq!(c[5], ", h");
        assert_eq!(c[7], "120m");
        assert_eq!(c[8], 9);

        let c = cells("events", json!({}));
        assert_eq!(c[0], "<unknown>");
        assert_eq!(c[7], "<unknown>");
        assert_eq!(c[8], 1);
    }

    // ---- Small printers ------------------------------------------------------------------------------------

    #[test]
    fn namespace_lease_configmap_secret_serviceaccount() {
        assert_eq!(names(&column_names("namespaces"), 0), ["Name", "Status", "Age"]);
        assert_eq!(
            cells(
                "namespaces",
                json!({"metadata": {"name": "kube-system", "creationTimestamp": ago(8 * 3600)},
                "status": {"phase": "Terminating"}})
            ),
            [json!("kube-system"), json!("Terminating"), json!("8h")]
        );
        assert_eq!(cells("namespaces", json!({"metadata": {"name": "new"}}))[1], "Active");

        assert_eq!(names(&column_names("leases"), 0), ["Name", "Holder", "Age"]);
        assert_eq!(
            cells(
                "leases",
                json!({"metadata": {"name": "kube-scheduler", "creationTimestamp": ago(45)},
                "spec": {"holderIdentity": "cp-1_7f3e", "leaseDurationSeconds": 15}})
            ),
            [json!("kube-scheduler"), json!("cp-1_7f3e"), json!("45s")]
        );
        assert_eq!(
            cells(
                "leases",
                json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": null}})
            )[1],
            ""
        );

        assert_eq!(names(&column_names("configmaps"), 0), ["Name", "Data", "Age"]);
        assert_eq!(
            cells(
                "configmaps",
                json!({"metadata": {"name": "kube-root-ca.crt"},
                "data": {"ca.crt": "..."}, "binaryData": {"blob": "AAEC", "other": "AA=="}})
            )[1],
            3
        );
        assert_eq!(cells("configmaps", json!({"metadata": {"name": "c"}}))[1], 0);

        assert_eq!(names(&column_names("secrets"), 0), ["Name", "Type", "Data", "Age"]);
        assert_eq!(
            cells(
                "secrets",
                json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
                "data": {"tls.crt": "Y3J0", "tls.key": "a2V5"}})
            ),
            [json!("tls"), json!("kubernetes.io/tls"), json!(2), json!("<unknown>")]
        );
        let c = cells(
            "secrets",
            json!({"metadata": {"name": "s"}, "data": {"a": "eA=="}, "stringData": {"a": "x", "b": "y"}}),
        );
        assert_eq!(&c[1..3], [json!("Opaque"), json!(2)]);

        assert_eq!(names(&column_names("serviceaccounts"), 0), ["Name", "Secrets", "Age"]);
        assert_eq!(cells("serviceaccounts", json!({"metadata": {"name": "default"}}))[1], 0);
        assert_eq!(
            cells(
                "serviceaccounts",
                json!({"metadata": {"name": "b"}, "secrets": [{"name": "t"}]})
            )[1],
            1
        );
    }

    // ---- RBAC ----------------------------------------------------------------------------------------------

    #[test]
    fn role_bindings_and_cluster_role_bindings() {
        for (resource, what) in [
            ("rolebindings", "roleBinding"),
            ("clusterrolebindings", "clusterRoleBinding"),
        ] {
            assert_eq!(names(&column_names(resource), 0), ["Name", "Role", "Age"]);
            assert_eq!(
                names(&column_names(resource), 1),
                ["Users", "Groups", "ServiceAccounts"]
            );
            let t = table(resource, &[], NOW, "1", None, IncludeObject::None, true);
            assert_eq!(
                t["rows"],
                json!([]),
                "{resource}: upstream's printer sends an empty list"
            );
            let cols = t["columnDefinitions"].as_array().cloned().unwrap_or_default();
            assert_eq!(cols[0]["format"], "name");
            assert_eq!(cols[3]["description"], format!("Users in the {what}"));
            assert_eq!(cols[4]["description"], format!("Groups in the {what}"));
            assert_eq!(cols[5]["description"], format!("ServiceAccounts in the {what}"));
            for c in &cols {
                assert_eq!(c["type"], "string");
            }
        }
        let t = table("rolebindings", &[], NOW, "1", None, IncludeObject::None, true);
        assert!(t["columnDefinitions"][1]["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("RoleRef can reference a Role in the current namespace")));
        let t = table("clusterrolebindings", &[], NOW, "1", None, IncludeObject::None, true);
        assert!(t["columnDefinitions"][1]["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("RoleRef can only reference a ClusterRole")));

        let binding = json!({
            "metadata": {"name": "read-pods", "namespace": "default", "creationTimestamp": ago(90)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [
                {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
                {"kind": "ServiceAccount", "name": "sa1", "namespace": "default"},
                {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "devs"},
                {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "bob"},
                {"kind": "ServiceAccount", "name": "sa2", "namespace": "kube-system"},
                {"kind": "Robot", "name": "r2d2"}
            ]
        });
        assert_eq!(
            cells("rolebindings", binding.clone()),
            [
                json!("read-pods"),
                json!("Role/pod-reader"),
                json!("90s"),
                json!("alice, bob"),
                json!("devs"),
                json!("default/sa1, kube-system/sa2"),
            ]
        );
        assert_eq!(cells("clusterrolebindings", binding)[1], "Role/pod-reader");
        // No subjects: empty cells; no roleRef: "/".
        assert_eq!(
            cells(
                "clusterrolebindings",
                json!({"metadata": {"name": "x", "creationTimestamp": ago(3600)}})
            ),
            [json!("x"), json!("/"), json!("60m"), json!(""), json!(""), json!("")]
        );
    }

    #[test]
    fn roles_and_cluster_roles_use_the_default_convertor() {
        for resource in ["roles", "clusterroles"] {
            assert_eq!(
                column_names(resource),
                [("Name".to_string(), 0), ("Created At".to_string(), 0)]
            );
            let t = table(resource, &[], NOW, "1", None, IncludeObject::None, true);
            assert!(
                t["rows"].is_null(),
                "{resource}: the default convertor sends no rows list"
            );
            assert_eq!(
                cells(
                    resource,
                    json!({"metadata": {"name": "pod-reader", "creationTimestamp": "2024-03-01T08:00:00Z"},
                        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})
                ),
                [json!("pod-reader"), json!("2024-03-01T08:00:00Z")]
            );
        }
    }

    // ---- Default convertor ---------------------------------------------------------------------------------

    #[test]
    fn default_convertor() {
        let cols = column_names("widgets");
        assert_eq!(cols, [("Name".to_string(), 0), ("Created At".to_string(), 0)]);
        let t = table("widgets", &[], NOW, "1", None, IncludeObject::Metadata, true);
        assert_eq!(t["columnDefinitions"][1]["type"], "date");
        assert_eq!(t["columnDefinitions"][1]["format"], "");
        assert!(t["rows"].is_null());

        assert_eq!(
            cells(
                "customthings",
                json!({"metadata": {"name": "w", "creationTimestamp": "2024-03-01T10:00:00.25+02:00"}})
            ),
            [json!("w"), json!("2024-03-01T08:00:00Z")]
        );
        assert_eq!(
            cells("widgets", json!({"metadata": {"name": "w"}})),
            [json!("w"), json!("0001-01-01T00:00:00Z")]
        );
        // Resource names are matched exactly.
        assert_eq!(column_names("Pods").len(), 2);
    }

    // ---- Junk ----------------------------------------------------------------------------------------------

    #[test]
    fn junk_never_panics() {
        let junk = vec![
            json!(null),
            json!(true),
            json!(-1),
            json!(1.5),
            json!("pod"),
            json!([]),
            json!({"metadata": null, "spec": null, "status": null}),
            json!({"metadata": {"name": 5, "creationTimestamp": [], "deletionTimestamp": {}, "labels": []}}),
            json!({"spec": {"containers": "x", "initContainers": [1, null, {"name": 2, "restartPolicy": 7}],
                "replicas": "3", "selector": [], "ports": {}, "readinessGates": [null], "template": 1, "type": 9},
                "status": {"phase": 1, "conditions": [null, 3, {"type": []}], "containerStatuses": [null, 1,
                    {"state": {"waiting": {"reason": 5}, "terminated": "x"}, "restartCount": "9", "lastState": 2}],
                    "initContainerStatuses": [{"state": {"terminated": {"exitCode": "1", "signal": 1e300}}}, "y"],
                    "podIPs": "nope", "addresses": 4, "loadBalancer": {"ingress": [null, 1]}}}),
            json!({"spec": {"replicas": 1e300, "clusterIPs": [null], "externalIPs": [1, null],
                "selector": {"matchLabels": [], "matchExpressions": {}}}}),
            json!({"spec": {"selector": {"matchExpressions": [null, {"key": 1, "operator": "In", "values": [2]}]}}}),
            json!({"spec": {"replicas": 18446744073709551615u64}, "status": {"readyReplicas": i64::MIN}}),
            json!({"subsets": [null, {"addresses": 1, "ports": [null]}, {"addresses": [null], "ports": [{"port": "x"}]}]}),
            json!({"ports": [null, {"port": null, "name": null}], "endpoints": [null, {"addresses": [null, 1]}]}),
            json!({"involvedObject": "x", "series": {"lastObservedTime": 1}, "count": -4, "source": []}),
            json!({"data": [], "binaryData": "x", "stringData": 1, "secrets": {}, "type": null}),
            json!({"metadata": {"creationTimestamp": "9999-12-31T23:59:59-23:59"}}),
            json!({"metadata": {"creationTimestamp": "0000-01-01T00:00:00+23:59"}}),
        ];
        for resource in [
            "pods",
            "deployments",
            "replicasets",
            "nodes",
            "services",
            "endpoints",
            "namespaces",
            "events",
            "leases",
            "configmaps",
            "secrets",
            "serviceaccounts",
            "endpointslices",
            "rolebindings",
            "clusterrolebindings",
            "unknown",
        ] {
            for include in [IncludeObject::None, IncludeObject::Metadata, IncludeObject::Object] {
                let t = table(resource, &junk, i64::MIN, "", None, include, true);
                assert_eq!(t["rows"].as_array().map(Vec::len), Some(junk.len()));
                let t = table(resource, &junk, i64::MAX, "9", Some("c"), include, false);
                assert_eq!(t["rows"].as_array().map(Vec::len), Some(junk.len()));
            }
        }
    }

    #[test]
    fn extreme_now_values_age_sensibly() {
        let ns = json!({"metadata": {"name": "x", "creationTimestamp": "2023-11-14T22:13:20Z"}});
        let t = table(
            "namespaces",
            std::slice::from_ref(&ns),
            i64::MAX,
            "",
            None,
            IncludeObject::None,
            true,
        );
        assert_eq!(t["rows"][0]["cells"][2], "292y");
        let t = table("namespaces", &[ns], i64::MIN, "", None, IncludeObject::None, true);
        assert_eq!(t["rows"][0]["cells"][2], "<invalid>");
    }
}
