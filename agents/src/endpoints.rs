//! The Endpoints and EndpointSlice controllers (upstream's `endpoints-controller` and
//! `endpointslice-controller`, here one control loop): for every Service with a selector,
//! an `Endpoints` object of the same name and `discovery.k8s.io/v1` EndpointSlices listing
//! the pods the selector matches, with their IPs, readiness and resolved ports.
//!
//! One reconcile of a Service (kube-rs's `Controller`, at most [`CONCURRENCY`] at a time,
//! failures retried per Service with [`Backoff`]):
//! 1. lists the pods its selector matches from the API (a consistent list, as the ReplicaSet
//!    controller does) and its managed slices (`kubernetes.io/service-name=<svc>`,
//!    `endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io`);
//! 2. computes, by pure functions of (service, pods, current objects), the Endpoints
//!    ([`endpoints_update`]: upstream's subsets, repacked so that the ports served by the
//!    same addresses share a subset, truncated at [`MAX_ENDPOINTS_CAPACITY`]) and the
//!    slice writes ([`plan_slices`]: upstream's reconciler, which keeps endpoints in the
//!    slice they are in, fills slices up to [`MAX_ENDPOINTS_PER_SLICE`], keeps one empty
//!    placeholder slice for a service without endpoints, and turns a create plus a delete
//!    into an update);
//! 3. writes only what differs (create; replace at the resourceVersion read, a 409 being
//!    an error that is retried; delete), so a steady state makes no writes.
//!
//! Services without a selector (or with an empty one) and ExternalName services get no
//! Endpoints from here (theirs are the user's), and lose any slices this controller manages.
//!
//! Triggers: the Service; its Endpoints and managed slices (a deleted or edited one is
//! repaired); pods: a pod change triggers the Services of its namespace whose selector
//! matches its labels now, and those that listed it last time (a [`Members`] index kept by
//! the reconciles: a pod relabelled out of a selector is removed without waiting).
//!
//! A deleted Service is never reconciled by kube-rs's `Controller` (it is gone from its
//! cache), and no finalizer is added. Instead a loop on a watch of Services deletes, when a
//! Service is deleted (and not recreated), its Endpoints (as upstream does, with or without
//! selector) and its managed slices (upstream leaves those to the garbage collector, as
//! [`crate::gc`] does here through their ownerReference; deleting them here as well keeps
//! this controller complete on its own, a 404 counting as done). After every (re)list of
//! that watch it also sweeps the leftovers of deletions it may have missed: managed slices,
//! and Endpoints without a Service (upstream's `checkLeftoverEndpoints`, which also spares
//! Endpoints used as leader-election locks). A reconcile that created objects checks
//! afterwards that its Service still exists, and removes them if not.
//!
//! Upstream behaviour kept: terminal pods (Succeeded, Failed) and pods without an IP are
//! left out; terminating pods are left out of Endpoints but stay in slices with
//! `terminating: true` (`serving` = the pod's readiness, `ready` false);
//! `publishNotReadyAddresses` makes every address ready (and keeps terminating pods in
//! Endpoints); named target ports resolve per pod by name and protocol (sidecar init
//! containers included), and a pod lacking one is left out of that port; addresses carry
//! `hostname` when the pod's `subdomain` is the Service; the `service.kubernetes.io/headless`
//! label; one slice address type per IP family of the Service (`spec.ipFamilies`).
//!
//! Events, as upstream's two controllers record them when a write fails (none when a
//! create is refused because the namespace is gone or being deleted):
//! - source `endpoint-controller`, involved object the Endpoints: `Warning
//!   FailedToCreateEndpoint` "Failed to create endpoint for service <ns>/<name>: <API error
//!   message>", `Warning FailedToUpdateEndpoint` "Failed to update endpoint <ns>/<name>:
//!   <message>";
//! - source `endpoint-slice-controller`, involved object the Service: `Warning
//!   FailedToUpdateEndpointSlices` "Error updating Endpoint Slices for Service
//!   <ns>/<name>: <error>", the error as upstream's reconciler words it ("failed to create
//!   EndpointSlice for Service <ns>/<name>: <message>", "failed to update <slice>
//!   EndpointSlice for Service …", "failed to delete <slice> EndpointSlice for Service …").
//!
//! They are queued on [`events::Recorder`]s, so a reconcile never waits for their writes.
//!
//! Left out: topology (endpoint `zone` from the node, hints, `trafficDistribution`, and
//! the `TopologyAwareHintsDisabled` event); the
//! `endpoints.kubernetes.io/last-change-trigger-time` annotation; skipping pods whose node
//! does not exist; upstream's stale-informer tracking (reads here come from the API).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};

use crate::error::AgentError;
use crate::events::{self, Recorder};
use crate::runtime::{self, retry_later, Backoff};

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming a slice's manager.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`] (upstream's).
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Set (empty) on the Endpoints and slices of a Service without a cluster IP.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Set to `truncated` on Endpoints cut down to [`MAX_ENDPOINTS_CAPACITY`] addresses.
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";
/// Endpoints carrying it are leader-election locks, never swept as leftovers.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
/// Endpoints per slice at most (upstream's `--max-endpoints-per-slice` default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Addresses in one Endpoints object at most (upstream's `maxCapacity`).
pub const MAX_ENDPOINTS_CAPACITY: usize = 1000;
/// Services reconciled at once (upstream's `--concurrent-service-endpoint-syncs` default).
pub const CONCURRENCY: u16 = 5;
/// Page size of the sweep's lists.
const LIST_PAGE: u32 = 500;
/// Tries at removing a deleted Service's objects before leaving them to the next sweep.
const CLEANUP_ATTEMPTS: u32 = 12;
/// The `source.component` of the events about Endpoints (upstream's endpoints controller).
pub const ENDPOINTS_COMPONENT: &str = "endpoint-controller";
/// The `source.component` of the events about slices (upstream's EndpointSlice controller).
pub const SLICES_COMPONENT: &str = "endpoint-slice-controller";

// ---------------------------------------------------------------------------------------
// Pure parts: what the objects should contain
// ---------------------------------------------------------------------------------------

/// The selector this controller acts on: None when the Service has none (or an empty one,
/// which the API does not keep), and for ExternalName Services.
pub fn service_selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether `labels` carry every `key=value` of `selector`.
pub fn selector_matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn managed_slices_selector(service: &str) -> String {
    format!("{SERVICE_NAME_LABEL}={service},{MANAGED_BY_LABEL}={CONTROLLER_NAME}")
}

/// The pod's `Ready` condition is `True`.
pub fn is_pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Upstream's `ShouldPodBeInEndpoints`: not terminal, has an IP, and (unless
/// `include_terminating`) is not being deleted.
fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let status = pod.status.as_ref();
    let terminal = matches!(status.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
    let has_ip = status.is_some_and(|s| {
        s.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty()) || s.pod_ips.as_ref().is_some_and(|ips| !ips.is_empty())
    });
    !terminal && has_ip && (include_terminating || pod.metadata.deletion_timestamp.is_none())
}

/// The pod's port for `port`: `targetPort` as a number; as a name, the pod's container port
/// of that name and protocol (None if it has none); absent, the service port itself.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    match &port.target_port {
        None | Some(IntOrString::Int(0)) => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// An IP family, the discovery API's address type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => Family::V6,
            _ => Family::V4,
        }
    }

    fn of_str(ip: &str) -> Option<Family> {
        ip.parse::<IpAddr>().ok().map(|ip| Family::of(&ip))
    }

    fn from_family_name(name: &str) -> Option<Family> {
        match name {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        }
    }

    fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The IP in its canonical text (an IPv4-mapped IPv6 address as IPv4, as Go prints it).
fn ip_string(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// `status.podIPs`, else `status.podIP`, parsed (unparsable ones skipped).
fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<&str> = status.pod_ips.iter().flatten().map(|p| p.ip.as_str()).collect();
    let raw = if listed.is_empty() {
        status.pod_ip.as_deref().into_iter().collect()
    } else {
        listed
    };
    raw.into_iter().filter_map(|ip| ip.parse().ok()).collect()
}

fn cluster_ip(service: &Service) -> &str {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or("")
}

fn service_ip_set(service: &Service) -> bool {
    !matches!(cluster_ip(service), "" | "None")
}

fn publish_not_ready(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

fn service_ports(service: &Service) -> &[ServicePort] {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
}

/// The family of a Service's Endpoints addresses: its first `ipFamilies`, else its cluster
/// IP's, else (headless) the pod's.
fn endpoints_family(service: &Service, pod: &Pod) -> Family {
    let spec = service.spec.as_ref();
    if let Some(first) = spec.and_then(|s| s.ip_families.as_ref()).and_then(|f| f.first()) {
        return Family::from_family_name(first).unwrap_or(Family::V4);
    }
    if service_ip_set(service) {
        return Family::of_str(cluster_ip(service)).unwrap_or(Family::V4);
    }
    let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).unwrap_or("");
    Family::of_str(pod_ip).unwrap_or(Family::V4)
}

/// The address types of a Service's slices (upstream's `getAddressTypesForService`).
fn slice_families(service: &Service) -> BTreeSet<Family> {
    let families: BTreeSet<Family> = service
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|f| Family::from_family_name(f))
        .collect();
    if !families.is_empty() {
        return families;
    }
    if service_ip_set(service) {
        return BTreeSet::from([Family::of_str(cluster_ip(service)).unwrap_or(Family::V4)]);
    }
    BTreeSet::from([Family::V4, Family::V6])
}

fn node_name(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

/// The pod's `hostname` if its `subdomain` is this Service (upstream's `ShouldSetHostname`).
fn hostname(service: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same = spec.subdomain.as_deref() == service.metadata.name.as_deref()
        && pod.metadata.namespace == service.metadata.namespace;
    same.then(|| hostname.to_owned())
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// (name, port, protocol, appProtocol) of an Endpoints port.
type PortKey = (Option<String>, i32, Option<String>, Option<String>);
/// (ip, target uid) of an Endpoints address: one pod's address.
type AddressKey = (String, String);
/// The addresses serving one port, each with whether it is ready.
type AddressSet = BTreeMap<AddressKey, bool>;

fn port_key(p: &EndpointPort) -> PortKey {
    (p.name.clone(), p.port, p.protocol.clone(), p.app_protocol.clone())
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// The Endpoints subsets of `service` over `pods` (those its selector matches), before
/// truncation: every (pod, resolved port) pair, repacked as upstream's `RepackSubsets` does,
/// so that the ports served by the same addresses (with the same readiness; not ready
/// prevails) share a subset. Addresses are sorted by IP, ports by name, port, protocol.
pub fn desired_subsets(service: &Service, pods: &[Pod]) -> Vec<EndpointSubset> {
    let publish = publish_not_ready(service);
    let ports = service_ports(service);
    let headless = cluster_ip(service) == "None";
    let mut addresses: BTreeMap<AddressKey, EndpointAddress> = BTreeMap::new();
    // port (None: headless without ports) -> address -> ready
    let mut by_port: BTreeMap<Option<PortKey>, (Option<EndpointPort>, AddressSet)> = BTreeMap::new();
    let mut add = |address: &EndpointAddress, ready: bool, port: Option<EndpointPort>| {
        let key = (
            address.ip.clone(),
            address
                .target_ref
                .as_ref()
                .and_then(|r| r.uid.clone())
                .unwrap_or_default(),
        );
        addresses.entry(key.clone()).or_insert_with(|| address.clone());
        let (_, set) = by_port
            .entry(port.as_ref().map(port_key))
            .or_insert_with(|| (port, BTreeMap::new()));
        let r = set.entry(key).or_insert(ready);
        *r = *r && ready;
    };
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, publish) {
            continue;
        }
        let family = endpoints_family(service, pod);
        let Some(ip) = pod_ips(pod).into_iter().find(|ip| Family::of(ip) == family) else {
            continue;
        };
        let address = EndpointAddress {
            ip: ip_string(&ip),
            hostname: hostname(service, pod),
            node_name: node_name(pod),
            target_ref: Some(pod_ref(pod)),
        };
        let ready = publish || is_pod_ready(pod);
        if ports.is_empty() {
            if headless {
                add(&address, ready, None);
            }
            continue;
        }
        for sp in ports {
            if let Some(port) = find_port(pod, sp) {
                let port = EndpointPort {
                    name: sp.name.clone().filter(|n| !n.is_empty()),
                    port,
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                };
                add(&address, ready, Some(port));
            }
        }
    }
    // The same set of (address, ready): one subset for all its ports.
    let mut groups: BTreeMap<Vec<(AddressKey, bool)>, Vec<EndpointPort>> = BTreeMap::new();
    for (port, set) in by_port.into_values() {
        let ports = groups.entry(set.into_iter().collect()).or_default();
        ports.extend(port);
    }
    groups
        .into_iter()
        .map(|(set, ports)| {
            let (ready, not_ready): (Vec<_>, Vec<_>) = set.into_iter().partition(|(_, ready)| *ready);
            let pick = |v: Vec<(AddressKey, bool)>| -> Vec<EndpointAddress> {
                v.into_iter().filter_map(|(k, _)| addresses.get(&k).cloned()).collect()
            };
            EndpointSubset {
                addresses: non_empty(pick(ready)),
                not_ready_addresses: non_empty(pick(not_ready)),
                ports: non_empty(ports),
            }
        })
        .collect()
}

/// Cuts `subsets` to [`MAX_ENDPOINTS_CAPACITY`] addresses as upstream's `truncateEndpoints`
/// does (ready ones first, each subset keeping its share); whether it cut.
pub fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let count = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
    let ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
    let not_ready: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
    if ready + not_ready <= MAX_ENDPOINTS_CAPACITY {
        return false;
    }
    let truncate_ready = ready > MAX_ENDPOINTS_CAPACITY;
    let (max, total) = if truncate_ready {
        (MAX_ENDPOINTS_CAPACITY, ready)
    } else {
        (MAX_ENDPOINTS_CAPACITY - ready, not_ready)
    };
    let mut room = max;
    for subset in subsets.iter_mut() {
        let list = if truncate_ready {
            subset.not_ready_addresses = None;
            &mut subset.addresses
        } else {
            &mut subset.not_ready_addresses
        };
        let n = count(list);
        // Each subset's proportional share, rounded up; the last ones get what is left.
        let share = (n * max).div_ceil(total.max(1)).min(room);
        if let Some(v) = list.as_mut() {
            v.truncate(share);
        }
        room -= count(list);
        if list.as_ref().is_some_and(Vec::is_empty) {
            *list = None;
        }
    }
    true
}

/// The labels of a Service's Endpoints: the Service's, plus the headless label if it has
/// no cluster IP.
fn endpoints_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    if service_ip_set(service) {
        labels.remove(HEADLESS_LABEL);
    } else {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

/// Subsets compared as the API keeps them: empty lists as absent, ports' protocol
/// defaulted, empty subsets dropped.
fn normalized_subsets(subsets: Option<&Vec<EndpointSubset>>) -> Vec<EndpointSubset> {
    let addresses = |v: &Option<Vec<EndpointAddress>>| v.clone().and_then(non_empty);
    subsets
        .into_iter()
        .flatten()
        .map(|s| EndpointSubset {
            addresses: addresses(&s.addresses),
            not_ready_addresses: addresses(&s.not_ready_addresses),
            ports: s.ports.clone().and_then(non_empty).map(|ports| {
                ports
                    .into_iter()
                    .map(|p| EndpointPort {
                        name: p.name.filter(|n| !n.is_empty()),
                        protocol: p.protocol.or_else(|| Some("TCP".into())),
                        ..p
                    })
                    .collect()
            }),
        })
        .filter(|s| s.addresses.is_some() || s.not_ready_addresses.is_some())
        .collect()
}

/// The Endpoints object `service` should have given `current`, or None when `current`
/// already is that (nothing to write). A new one (no `current`) has the Service's name;
/// an update keeps `current`'s metadata (resourceVersion included) but for the labels and
/// the over-capacity annotation.
pub fn endpoints_update(service: &Service, pods: &[Pod], current: Option<&Endpoints>) -> Option<Endpoints> {
    let mut subsets = desired_subsets(service, pods);
    let truncated = truncate(&mut subsets);
    let subsets = normalized_subsets(Some(&subsets));
    let labels = endpoints_labels(service);
    let annotations = current.and_then(|c| c.metadata.annotations.clone()).unwrap_or_default();
    let capacity_ok = annotations.contains_key(OVER_CAPACITY_ANNOTATION) == truncated;
    if let Some(current) = current {
        let same = normalized_subsets(current.subsets.as_ref()) == subsets
            && current.metadata.labels.clone().unwrap_or_default() == labels
            && capacity_ok;
        if same {
            return None;
        }
    }
    let mut annotations = annotations;
    if truncated {
        annotations.insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
    } else {
        annotations.remove(OVER_CAPACITY_ANNOTATION);
    }
    let mut next = current.cloned().unwrap_or_else(|| Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            ..ObjectMeta::default()
        },
        subsets: None,
    });
    next.subsets = non_empty(subsets);
    next.metadata.labels = non_empty_map(labels);
    next.metadata.annotations = non_empty_map(annotations);
    Some(next)
}

fn non_empty_map(m: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then_some(m)
}

/// The writes that bring a Service's managed slices to what they should be.
#[derive(Debug, Default)]
pub struct SlicePlan {
    /// New slices (`generateName: <service>-`).
    pub create: Vec<EndpointSlice>,
    /// Changed slices, each with the resourceVersion it was read at.
    pub update: Vec<EndpointSlice>,
    /// Names of slices to delete.
    pub delete: Vec<String>,
}

impl SlicePlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Sorted (name, port, protocol, appProtocol) of a slice's ports: slices group by it.
type SlicePortsKey = Vec<(String, i32, String, Option<String>)>;
/// (addresses, target uid, target name) of a slice endpoint: one pod's.
type SliceEndpointKey = (Vec<String>, String, String);

fn slice_ports_key(ports: &[SlicePort]) -> SlicePortsKey {
    let mut key: SlicePortsKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            )
        })
        .collect();
    key.sort();
    key
}

fn slice_endpoint_key(e: &Endpoint) -> SliceEndpointKey {
    let target = e.target_ref.as_ref();
    (
        e.addresses.clone(),
        target.and_then(|t| t.uid.clone()).unwrap_or_default(),
        target.and_then(|t| t.name.clone()).unwrap_or_default(),
    )
}

/// The slice labels: the Service's (but the reserved ones), the headless label, the
/// service name and the manager.
fn slice_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = service
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| ![SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !service_ip_set(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(SERVICE_NAME_LABEL.into(), service.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    labels
}

fn owner_reference(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.name_any(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn owned_by(slice: &EndpointSlice, service: &Service) -> bool {
    let uid = service.metadata.uid.as_deref().unwrap_or_default();
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == uid && r.kind == "Service" && r.api_version == "v1")
}

/// The slice ports of `pod` for `service` (unresolvable ones left out), in the Service's order.
fn slice_ports(service: &Service, pod: &Pod) -> Vec<SlicePort> {
    service_ports(service)
        .iter()
        .filter_map(|sp| {
            find_port(pod, sp).map(|port| SlicePort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// Upstream's `podToEndpoint` (without the node's zone).
fn pod_endpoint(service: &Service, pod: &Pod, family: Family) -> Endpoint {
    let serving = is_pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = publish_not_ready(service) || (serving && !terminating);
    Endpoint {
        addresses: pod_ips(pod)
            .iter()
            .filter(|ip| Family::of(ip) == family)
            .map(ip_string)
            .collect(),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        node_name: node_name(pod),
        hostname: hostname(service, pod),
        target_ref: Some(pod_ref(pod)),
        ..Endpoint::default()
    }
}

fn new_slice(
    service: &Service,
    family: Family,
    labels: &BTreeMap<String, String>,
    ports: Vec<SlicePort>,
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", service.name_any())),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner_reference(service)]),
            ..ObjectMeta::default()
        },
        address_type: family.address_type().into(),
        endpoints: Vec::new(),
        ports: Some(ports),
    }
}

fn labels_of(slice: &EndpointSlice) -> BTreeMap<String, String> {
    slice.metadata.labels.clone().unwrap_or_default()
}

/// An existing slice that is the placeholder `placeholder` would be.
fn is_placeholder(slice: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
    slice.endpoints.is_empty()
        && slice.ports.as_ref().is_none_or(Vec::is_empty)
        && slice.address_type == placeholder.address_type
        && labels_of(slice) == labels_of(placeholder)
        && slice.metadata.owner_references == placeholder.metadata.owner_references
}

/// The slice writes for `service` over `pods` (those its selector matches), given its
/// `existing` managed slices: upstream's EndpointSlice reconciler. Per address type and
/// per set of resolved ports, endpoints stay in the slice they are in (updated if changed),
/// new ones fill the slices being updated anyway, then the unchanged slice they fit best,
/// then new slices of at most [`MAX_ENDPOINTS_PER_SLICE`]; emptied slices go, one empty
/// placeholder stays for a Service without endpoints; slices of other owners (a former
/// Service of that name) or address types go; a create and a delete become an update.
pub fn plan_slices(service: &Service, pods: &[Pod], existing: &[EndpointSlice]) -> SlicePlan {
    let mut plan = SlicePlan::default();
    let families = slice_families(service);
    let mut by_family: BTreeMap<Family, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        match Family::from_family_name(&slice.address_type) {
            Some(f) if families.contains(&f) => by_family.entry(f).or_default().push(slice),
            _ => plan.delete.push(slice.name_any()),
        }
    }
    for family in families {
        plan_family(
            service,
            pods,
            by_family.remove(&family).unwrap_or_default(),
            family,
            &mut plan,
        );
    }
    plan
}

fn plan_family(service: &Service, pods: &[Pod], existing: Vec<&EndpointSlice>, family: Family, plan: &mut SlicePlan) {
    let labels = slice_labels(service);
    let total_existing = existing.len();
    let mut create: Vec<EndpointSlice> = Vec::new();
    let mut update: Vec<EndpointSlice> = Vec::new();
    let mut delete: Vec<&EndpointSlice> = Vec::new();
    let mut existing_by_ports: BTreeMap<SlicePortsKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        if owned_by(slice, service) {
            let key = slice_ports_key(slice.ports.as_deref().unwrap_or_default());
            existing_by_ports.entry(key).or_default().push(slice);
        } else {
            delete.push(slice);
        }
    }
    type Wanted = (Vec<SlicePort>, BTreeMap<SliceEndpointKey, Endpoint>);
    let mut desired: BTreeMap<SlicePortsKey, Wanted> = BTreeMap::new();
    for pod in pods.iter().filter(|p| should_pod_be_in_endpoints(p, true)) {
        let ports = slice_ports(service, pod);
        let (_, endpoints) = desired
            .entry(slice_ports_key(&ports))
            .or_insert_with(|| (ports, BTreeMap::new()));
        let endpoint = pod_endpoint(service, pod, family);
        if !endpoint.addresses.is_empty() {
            endpoints.insert(slice_endpoint_key(&endpoint), endpoint);
        }
    }
    let context = SliceContext {
        service,
        family,
        labels: &labels,
    };
    for (key, (ports, wanted)) in desired {
        let slices = existing_by_ports.remove(&key).unwrap_or_default();
        context.by_ports(slices, ports, wanted, &mut create, &mut update, &mut delete);
    }
    delete.extend(existing_by_ports.into_values().flatten());
    if total_existing == delete.len() && create.is_empty() {
        let placeholder = new_slice(service, family, &labels, Vec::new());
        if delete.len() == 1 && is_placeholder(delete[0], &placeholder) {
            delete.clear();
        } else {
            create.push(placeholder);
        }
    }
    // A slice to create replaces one to delete, if ours: one update instead of two writes.
    let mut i = 0;
    while i < delete.len() && !create.is_empty() {
        if owned_by(delete[i], service) {
            let old = delete.remove(i);
            let Some(mut slice) = create.pop() else { break };
            slice.metadata.name = old.metadata.name.clone();
            slice.metadata.generate_name = None;
            slice.metadata.resource_version = old.metadata.resource_version.clone();
            update.push(slice);
        } else {
            i += 1;
        }
    }
    // No new slices for a Service on its way out (upstream: a race with the collector).
    if service.metadata.deletion_timestamp.is_some() {
        create.clear();
    }
    plan.create.extend(create);
    plan.update.extend(update);
    plan.delete.extend(delete.into_iter().map(|s| s.name_any()));
}

struct SliceContext<'a> {
    service: &'a Service,
    family: Family,
    labels: &'a BTreeMap<String, String>,
}

impl SliceContext<'_> {
    /// Upstream's `reconcileByPortMapping`: the slices of one set of ports.
    fn by_ports<'s>(
        &self,
        existing: Vec<&'s EndpointSlice>,
        ports: Vec<SlicePort>,
        mut wanted: BTreeMap<SliceEndpointKey, Endpoint>,
        create: &mut Vec<EndpointSlice>,
        update: &mut Vec<EndpointSlice>,
        delete: &mut Vec<&'s EndpointSlice>,
    ) {
        let mut updated: Vec<EndpointSlice> = Vec::new();
        let mut unchanged: Vec<&EndpointSlice> = Vec::new();
        // 1. Endpoints stay where they are: dropped if no longer wanted, updated if changed.
        for slice in existing {
            let mut kept = Vec::new();
            let mut changed = false;
            for endpoint in &slice.endpoints {
                if let Some(want) = wanted.remove(&slice_endpoint_key(endpoint)) {
                    changed |= &want != endpoint;
                    kept.push(want);
                }
            }
            let labels_changed = labels_of(slice) != *self.labels;
            if changed || kept.len() != slice.endpoints.len() {
                if kept.is_empty() {
                    delete.push(slice);
                } else {
                    let mut next = slice.clone();
                    next.endpoints = kept;
                    next.metadata.labels = Some(self.labels.clone());
                    updated.push(next);
                }
            } else if labels_changed {
                let mut next = slice.clone();
                next.metadata.labels = Some(self.labels.clone());
                updated.push(next);
            } else {
                unchanged.push(slice);
            }
        }
        // 2. New endpoints fill the slices written anyway, the fullest first.
        updated.sort_by_key(|s| std::cmp::Reverse(s.endpoints.len()));
        for slice in &mut updated {
            fill(slice, &mut wanted);
        }
        // 3. Then the unchanged slice they fit best, then new slices.
        while !wanted.is_empty() {
            let best = (wanted.len() < MAX_ENDPOINTS_PER_SLICE)
                .then(|| {
                    unchanged
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.endpoints.len() + wanted.len() <= MAX_ENDPOINTS_PER_SLICE)
                        .max_by_key(|(_, s)| s.endpoints.len())
                        .map(|(i, _)| i)
                })
                .flatten();
            match best {
                Some(i) => {
                    let mut slice = unchanged.remove(i).clone();
                    fill(&mut slice, &mut wanted);
                    updated.push(slice);
                }
                None => {
                    let mut slice = new_slice(self.service, self.family, self.labels, ports.clone());
                    fill(&mut slice, &mut wanted);
                    create.push(slice);
                }
            }
        }
        update.extend(updated);
    }
}

fn fill(slice: &mut EndpointSlice, wanted: &mut BTreeMap<SliceEndpointKey, Endpoint>) {
    while slice.endpoints.len() < MAX_ENDPOINTS_PER_SLICE {
        match wanted.pop_first() {
            Some((_, endpoint)) => slice.endpoints.push(endpoint),
            None => break,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Which Services list which pods
// ---------------------------------------------------------------------------------------

/// The pods each Service's last reconcile listed, and its inverse, so that a pod's change
/// also triggers the Services it no longer matches. Holds one entry per (Service, matched
/// pod) pair, dropped when the Service is deleted or no longer selects.
#[derive(Default)]
pub struct Members {
    inner: Mutex<MembersInner>,
}

#[derive(Default)]
struct MembersInner {
    /// (namespace, service) -> pod names
    pods: HashMap<(String, String), BTreeSet<String>>,
    /// (namespace, pod) -> service names
    services: HashMap<(String, String), BTreeSet<String>>,
}

impl Members {
    fn lock(&self) -> std::sync::MutexGuard<'_, MembersInner> {
        self.inner
            .lock()
            .expect("invariant: no panics while the members lock is held")
    }

    /// Records that `service` now lists `pods`.
    pub fn set(&self, namespace: &str, service: &str, pods: BTreeSet<String>) {
        let mut inner = self.lock();
        let key = (namespace.to_owned(), service.to_owned());
        let old = if pods.is_empty() {
            inner.pods.remove(&key).unwrap_or_default()
        } else {
            inner.pods.insert(key, pods.clone()).unwrap_or_default()
        };
        for pod in old.difference(&pods) {
            let pod_key = (namespace.to_owned(), pod.clone());
            if let Some(services) = inner.services.get_mut(&pod_key) {
                services.remove(service);
                if services.is_empty() {
                    inner.services.remove(&pod_key);
                }
            }
        }
        for pod in pods.difference(&old) {
            inner
                .services
                .entry((namespace.to_owned(), pod.clone()))
                .or_default()
                .insert(service.to_owned());
        }
    }

    /// The Services whose last reconcile listed `pod`.
    pub fn services_of(&self, namespace: &str, pod: &str) -> BTreeSet<String> {
        self.lock()
            .services
            .get(&(namespace.to_owned(), pod.to_owned()))
            .cloned()
            .unwrap_or_default()
    }
}

/// The Services a pod event concerns: of its namespace, those whose selector matches its
/// labels and those that listed it last time.
fn pod_services(pod: &Pod, services: &Store<Service>, members: &Members) -> Vec<ObjectRef<Service>> {
    let Some(namespace) = pod.namespace() else {
        return Vec::new();
    };
    let mut names = members.services_of(&namespace, &pod.name_any());
    for service in services.state() {
        let matches = service_selector(&service).is_some_and(|selector| selector_matches(selector, pod.labels()));
        if matches && service.namespace().as_deref() == Some(namespace.as_str()) {
            names.insert(service.name_any());
        }
    }
    names
        .into_iter()
        .map(|name| ObjectRef::new(&name).within(&namespace))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The control loop
// ---------------------------------------------------------------------------------------

struct Context {
    client: Client,
    backoff: Backoff,
    members: Arc<Members>,
    endpoints_events: Recorder,
    slices_events: Recorder,
}

/// Runs the controller until its future is dropped.
pub async fn run(client: Client) {
    let members = Arc::new(Members::default());
    let context = Arc::new(Context {
        client: client.clone(),
        backoff: Backoff::default(),
        members: members.clone(),
        endpoints_events: Recorder::new(client.clone(), ENDPOINTS_COMPONENT),
        slices_events: Recorder::new(client.clone(), SLICES_COMPONENT),
    });
    let controller = runtime::Queued::new(Api::<Service>::all(client.clone()), watcher::Config::default())
        .with_config(controller::Config::default().concurrency(CONCURRENCY));
    let services = controller.store();
    let pod_members = members.clone();
    let controller = controller
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            move |pod: Pod| pod_services(&pod, &services, &pod_members),
        )
        .watches(
            Api::<Endpoints>::all(client.clone()),
            watcher::Config::default(),
            |endpoints: Endpoints| {
                let name = endpoints.name_any();
                endpoints.namespace().map(|ns| ObjectRef::new(&name).within(&ns))
            },
        )
        .watches(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={CONTROLLER_NAME}")),
            |slice: EndpointSlice| {
                let service = slice.labels().get(SERVICE_NAME_LABEL).cloned();
                slice
                    .namespace()
                    .zip(service)
                    .map(|(ns, service)| ObjectRef::new(&service).within(&ns))
            },
        )
        .run("endpoints", reconcile, error_policy, context);
    futures::future::join(controller, clean_up(client, members)).await;
}

async fn reconcile(service: Arc<Service>, context: Arc<Context>) -> Result<Action, AgentError> {
    let (Some(namespace), Some(name)) = (service.namespace(), service.metadata.name.clone()) else {
        return Ok(Action::await_change());
    };
    sync_service(&service, &namespace, &name, &context).await?;
    context.backoff.succeeded(&format!("{namespace}/{name}"));
    Ok(Action::await_change())
}

fn error_policy(service: Arc<Service>, error: &AgentError, context: Arc<Context>) -> Action {
    let key = format!("{}/{}", service.namespace().unwrap_or_default(), service.name_any());
    retry_later(&context.backoff, "endpoints", &key, error)
}

fn is_status(e: &kube::Error, codes: &[u16]) -> bool {
    matches!(e, kube::Error::Api(s) if codes.contains(&s.code))
}

/// A 404 is success for a delete.
fn deleted<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(e) if !is_status(&e, &[404]) => Err(e),
        _ => Ok(()),
    }
}

/// A create refused because the namespace is gone or terminating: nothing to do (upstream
/// drops these too).
fn namespace_closed(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404) || events::namespace_terminating(e)
}

async fn sync_service(service: &Service, namespace: &str, name: &str, context: &Context) -> Result<(), AgentError> {
    let client = &context.client;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let existing = slices
        .list(&ListParams::default().labels(&managed_slices_selector(name)))
        .await?
        .items;
    let Some(selector) = service_selector(service) else {
        // The user's Endpoints, if any; our slices go.
        context.members.set(namespace, name, BTreeSet::new());
        for slice in &existing {
            deleted(slices.delete(&slice.name_any(), &DeleteParams::default()).await)?;
            tracing::info!(service = %format!("{namespace}/{name}"), slice = %slice.name_any(), "deleted the endpoint slice of a service without selector");
        }
        return Ok(());
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods: Vec<Pod> = pods
        .list(&ListParams::default().labels(&selector_string(selector)))
        .await?
        .items
        .into_iter()
        .filter(|p| selector_matches(selector, p.labels()))
        .collect();
    context
        .members
        .set(namespace, name, pods.iter().map(ResourceExt::name_any).collect());

    let endpoints_result = sync_endpoints(service, &pods, namespace, name, context).await;
    let slices_result = sync_slices(service, &pods, &existing, &slices, &context.slices_events).await;
    let created = endpoints_result? | slices_result?;
    if created {
        // Deleted meanwhile (after the cleanup of it ran)? Then what was just created is a leftover.
        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        if services.get_opt(name).await?.is_none() {
            remove_leftovers(client, &context.members, namespace, name).await?;
        }
    }
    Ok(())
}

/// Brings the Endpoints up to date; whether it created them.
async fn sync_endpoints(
    service: &Service,
    pods: &[Pod],
    namespace: &str,
    name: &str,
    context: &Context,
) -> Result<bool, AgentError> {
    let api: Api<Endpoints> = Api::namespaced(context.client.clone(), namespace);
    let current = api.get_opt(name).await?;
    let Some(next) = endpoints_update(service, pods, current.as_ref()) else {
        return Ok(false);
    };
    let addresses: usize = next
        .subsets
        .iter()
        .flatten()
        .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
        .sum();
    // Upstream's events name the Endpoints as written (no uid yet for a create).
    let failed = |reason: &str, message: String| {
        context
            .endpoints_events
            .record(events::reference(&next), events::WARNING, reason, &message);
    };
    if current.is_none() {
        match api.create(&PostParams::default(), &next).await {
            Ok(_) => {}
            Err(e) if namespace_closed(&e) => return Ok(false),
            Err(e) => {
                let message = events::error_message(&e);
                failed(
                    "FailedToCreateEndpoint",
                    format!("Failed to create endpoint for service {namespace}/{name}: {message}"),
                );
                return Err(e.into());
            }
        }
        tracing::debug!(service = %format!("{namespace}/{name}"), ready = addresses, "created endpoints");
        Ok(true)
    } else {
        if let Err(e) = api.replace(name, &PostParams::default(), &next).await {
            let message = events::error_message(&e);
            failed(
                "FailedToUpdateEndpoint",
                format!("Failed to update endpoint {namespace}/{name}: {message}"),
            );
            return Err(e.into());
        }
        tracing::debug!(service = %format!("{namespace}/{name}"), ready = addresses, "updated endpoints");
        Ok(false)
    }
}

/// Brings the slices up to date; whether it created any.
async fn sync_slices(
    service: &Service,
    pods: &[Pod],
    existing: &[EndpointSlice],
    api: &Api<EndpointSlice>,
    recorder: &Recorder,
) -> Result<bool, AgentError> {
    let plan = plan_slices(service, pods, existing);
    if plan.is_empty() {
        return Ok(false);
    }
    let key = format!("{}/{}", service.namespace().unwrap_or_default(), service.name_any());
    // A failed write: the event (upstream's controller wording around its reconciler's
    // error), then the error.
    let failed = |what: String, e: kube::Error| -> AgentError {
        let message = format!(
            "Error updating Endpoint Slices for Service {key}: {what} EndpointSlice for Service {key}: {}",
            events::error_message(&e)
        );
        recorder.record(
            events::reference(service),
            events::WARNING,
            "FailedToUpdateEndpointSlices",
            &message,
        );
        e.into()
    };
    let mut created = false;
    for slice in &plan.create {
        match api.create(&PostParams::default(), slice).await {
            Ok(s) => {
                created = true;
                tracing::debug!(service = %key, slice = %s.name_any(), "created endpoint slice");
            }
            Err(e) if namespace_closed(&e) => return Ok(created),
            Err(e) => return Err(failed("failed to create".into(), e)),
        }
    }
    for slice in &plan.update {
        let slice_name = slice.name_any();
        if let Err(e) = api.replace(&slice_name, &PostParams::default(), slice).await {
            return Err(failed(format!("failed to update {slice_name}"), e));
        }
        tracing::debug!(service = %key, slice = %slice_name, "updated endpoint slice");
    }
    for name in &plan.delete {
        if let Err(e) = deleted(api.delete(name, &DeleteParams::default()).await) {
            return Err(failed(format!("failed to delete {name}"), e));
        }
        tracing::debug!(service = %key, slice = %name, "deleted endpoint slice");
    }
    Ok(created)
}

/// Deletes the Endpoints and managed slices of the Service `namespace/name`, which is gone.
async fn remove_leftovers(client: &Client, members: &Members, namespace: &str, name: &str) -> Result<(), AgentError> {
    members.set(namespace, name, BTreeSet::new());
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), namespace);
    deleted(endpoints.delete(name, &DeleteParams::default()).await)?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let managed = slices
        .list(&ListParams::default().labels(&managed_slices_selector(name)))
        .await?;
    for slice in managed.items {
        deleted(slices.delete(&slice.name_any(), &DeleteParams::default()).await)?;
    }
    tracing::info!(service = %format!("{namespace}/{name}"), "deleted the endpoints of a deleted service");
    Ok(())
}

/// Removes what deleted Services leave: on each deletion seen, and after each (re)list of
/// Services, the leftovers of deletions the watch may have missed.
async fn clean_up(client: Client, members: Arc<Members>) {
    let backoff = Backoff::default();
    let mut listed: HashSet<(String, String)> = HashSet::new();
    let mut events = watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Delete(service)) => {
                let namespace = service.namespace().unwrap_or_default();
                clean_up_service(&client, &members, &backoff, &namespace, &service.name_any()).await;
            }
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(service)) => {
                listed.insert((service.namespace().unwrap_or_default(), service.name_any()));
            }
            Ok(watcher::Event::InitDone) => {
                let services = std::mem::take(&mut listed);
                match orphans(&client, &services).await {
                    Ok(orphans) => {
                        for (namespace, name) in orphans {
                            clean_up_service(&client, &members, &backoff, &namespace, &name).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "listing endpoints left by deleted services failed"),
                }
            }
            Ok(watcher::Event::Apply(_)) => {}
            Err(e) => tracing::debug!(error = %e, "endpoints controller: watching services"),
        }
    }
}

/// Removes the objects of the deleted Service `namespace/name` unless it exists again,
/// retrying with backoff; after [`CLEANUP_ATTEMPTS`] failures, leaves them to the next sweep.
async fn clean_up_service(client: &Client, members: &Members, backoff: &Backoff, namespace: &str, name: &str) {
    let key = format!("{namespace}/{name}");
    for attempt in 1..=CLEANUP_ATTEMPTS {
        let result = async {
            let services: Api<Service> = Api::namespaced(client.clone(), namespace);
            if services.get_opt(name).await?.is_some() {
                return Ok(()); // recreated: its reconcile takes the objects over
            }
            remove_leftovers(client, members, namespace, name).await
        }
        .await;
        match result {
            Ok(()) => break,
            Err(error) => {
                let delay = backoff.failed(&key);
                tracing::warn!(service = %key, %error, attempt, ?delay, "deleting the endpoints of a deleted service failed");
                if attempt < CLEANUP_ATTEMPTS {
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
    backoff.succeeded(&key);
}

/// The Services, absent from `services`, that have Endpoints (not leader-election locks) or
/// managed slices.
async fn orphans(
    client: &Client,
    services: &HashSet<(String, String)>,
) -> Result<BTreeSet<(String, String)>, AgentError> {
    let mut orphans = BTreeSet::new();
    let mut note = |namespace: Option<String>, name: Option<String>| {
        if let (Some(namespace), Some(name)) = (namespace, name) {
            let key = (namespace, name);
            if !services.contains(&key) {
                orphans.insert(key);
            }
        }
    };
    list_pages(&Api::<Endpoints>::all(client.clone()), None, |e: Endpoints| {
        if !e.annotations().contains_key(LEADER_ANNOTATION) {
            note(e.namespace(), e.metadata.name);
        }
    })
    .await?;
    let managed = format!("{MANAGED_BY_LABEL}={CONTROLLER_NAME}");
    list_pages(
        &Api::<EndpointSlice>::all(client.clone()),
        Some(&managed),
        |s: EndpointSlice| {
            note(s.namespace(), s.labels().get(SERVICE_NAME_LABEL).cloned());
        },
    )
    .await?;
    Ok(orphans)
}

/// Lists in pages of [`LIST_PAGE`], handing each object to `f`.
async fn list_pages<K>(api: &Api<K>, labels: Option<&str>, mut f: impl FnMut(K)) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut params = ListParams::default().limit(LIST_PAGE);
    if let Some(labels) = labels {
        params = params.labels(labels);
    }
    loop {
        let page = api.list(&params).await?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        page.items.into_iter().for_each(&mut f);
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn service(ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("svc-uid".into()),
                labels: Some(labels(&[("team", "a")])),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(labels(&[("app", "web")])),
                cluster_ip: Some("10.96.0.10".into()),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    fn port(name: &str, port: i32, target: Option<IntOrString>) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            target_port: target,
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        }
    }

    fn pod(name: &str, ip: &str, ready: bool, named: &[(&str, i32)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("{name}-uid")),
                labels: Some(labels(&[("app", "web")])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(
                        named
                            .iter()
                            .map(|(n, p)| ContainerPort {
                                name: Some(n.to_string()),
                                container_port: *p,
                                ..ContainerPort::default()
                            })
                            .collect(),
                    ),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    fn ips(addresses: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        addresses.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    fn port_list(subset: &EndpointSubset) -> Vec<(String, i32)> {
        subset
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap_or_default(), p.port))
            .collect()
    }

    #[test]
    fn selectors_match_on_every_pair_and_empty_or_external_name_ones_select_nothing() {
        let sel = labels(&[("app", "web"), ("tier", "front")]);
        assert!(selector_matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "front"), ("x", "y")])
        ));
        assert!(!selector_matches(&sel, &labels(&[("app", "web")])));
        assert!(!selector_matches(&sel, &labels(&[("app", "web"), ("tier", "back")])));
        let mut svc = service(vec![]);
        assert!(service_selector(&svc).is_some());
        svc.spec.as_mut().expect("spec").selector = Some(BTreeMap::new());
        assert!(service_selector(&svc).is_none());
        let mut svc = service(vec![]);
        svc.spec.as_mut().expect("spec").type_ = Some("ExternalName".into());
        assert!(service_selector(&svc).is_none());
    }

    #[test]
    fn target_ports_resolve_by_number_by_name_and_protocol_or_default_to_the_port() {
        let p = pod("a", "10.0.0.1", true, &[("http", 8080)]);
        assert_eq!(find_port(&p, &port("x", 80, Some(IntOrString::Int(9090)))), Some(9090));
        assert_eq!(find_port(&p, &port("x", 80, None)), Some(80));
        assert_eq!(
            find_port(&p, &port("x", 80, Some(IntOrString::String("http".into())))),
            Some(8080)
        );
        assert_eq!(
            find_port(&p, &port("x", 80, Some(IntOrString::String("grpc".into())))),
            None
        );
        let mut udp = port("x", 80, Some(IntOrString::String("http".into())));
        udp.protocol = Some("UDP".into());
        assert_eq!(find_port(&p, &udp), None, "a named port must match the protocol too");
    }

    #[test]
    fn subsets_split_ready_from_not_ready_and_group_ports_by_the_addresses_serving_them() {
        let svc = service(vec![
            port("http", 80, Some(IntOrString::String("http".into()))),
            port("metrics", 9090, Some(IntOrString::Int(9090))),
        ]);
        let mut terminating = pod("d", "10.0.0.4", true, &[("http", 8080)]);
        terminating.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let mut no_ip = pod("e", "", true, &[("http", 8080)]);
        no_ip.status.as_mut().expect("status").pod_ip = None;
        let pods = vec![
            pod("b", "10.0.0.2", false, &[("http", 8080)]),
            pod("a", "10.0.0.1", true, &[("http", 8080)]),
            pod("c", "10.0.0.3", true, &[]), // no port named http: metrics only
            terminating,
            no_ip,
        ];
        let subsets = desired_subsets(&svc, &pods);
        assert_eq!(subsets.len(), 2, "{subsets:?}");
        // Pod c serves metrics only: http's addresses differ from metrics', so two subsets.
        let with = |name: &str| {
            subsets
                .iter()
                .find(|s| port_list(s).iter().any(|(n, _)| n == name))
                .expect("a subset")
        };
        let http = with("http");
        assert_eq!(port_list(http), vec![("http".into(), 8080)]);
        assert_eq!(ips(&http.addresses), vec!["10.0.0.1"]);
        assert_eq!(ips(&http.not_ready_addresses), vec!["10.0.0.2"]);
        let metrics = with("metrics");
        assert_eq!(port_list(metrics), vec![("metrics".into(), 9090)]);
        assert_eq!(ips(&metrics.addresses), vec!["10.0.0.1", "10.0.0.3"]);
        assert_eq!(ips(&metrics.not_ready_addresses), vec!["10.0.0.2"]);
        let target = http.addresses.as_ref().expect("addresses")[0]
            .target_ref
            .clone()
            .expect("ref");
        assert_eq!(
            (target.kind.as_deref(), target.name.as_deref()),
            (Some("Pod"), Some("a"))
        );

        // All pods with the same ports: one subset with both ports.
        let subsets = desired_subsets(&svc, &pods[..2]);
        assert_eq!(subsets.len(), 1);
        assert_eq!(
            port_list(&subsets[0]),
            vec![("http".into(), 8080), ("metrics".into(), 9090)]
        );

        // publishNotReadyAddresses: everything ready, terminating included.
        let mut publish = svc.clone();
        publish.spec.as_mut().expect("spec").publish_not_ready_addresses = Some(true);
        let subsets = desired_subsets(&publish, &pods[..4]);
        assert!(subsets.iter().all(|s| s.not_ready_addresses.is_none()));
        assert!(subsets.iter().any(|s| ips(&s.addresses).contains(&"10.0.0.4")));
    }

    #[test]
    fn endpoints_are_written_only_when_they_differ() {
        let svc = service(vec![port("http", 80, Some(IntOrString::Int(8080)))]);
        let pods = vec![pod("a", "10.0.0.1", true, &[])];
        let created = endpoints_update(&svc, &pods, None).expect("a new object");
        assert_eq!(created.metadata.name.as_deref(), Some("web"));
        assert_eq!(created.metadata.labels, Some(labels(&[("team", "a")])));
        assert!(endpoints_update(&svc, &pods, Some(&created)).is_none(), "steady state");
        let emptied = endpoints_update(&svc, &[], Some(&created)).expect("an update");
        assert_eq!(emptied.subsets, None);
        let mut headless = svc.clone();
        headless.spec.as_mut().expect("spec").cluster_ip = Some("None".into());
        let relabelled = endpoints_update(&headless, &pods, Some(&created)).expect("an update");
        assert_eq!(
            relabelled
                .metadata
                .labels
                .expect("labels")
                .get(HEADLESS_LABEL)
                .map(String::as_str),
            Some("")
        );
    }

    #[test]
    fn truncation_keeps_ready_addresses_first() {
        let address = |i: usize| EndpointAddress {
            ip: format!("10.0.{}.{}", i / 250, i % 250),
            ..EndpointAddress::default()
        };
        let mut subsets = vec![EndpointSubset {
            addresses: Some((0..900).map(address).collect()),
            not_ready_addresses: Some((900..1200).map(address).collect()),
            ports: None,
        }];
        assert!(truncate(&mut subsets));
        assert_eq!(subsets[0].addresses.as_ref().map(Vec::len), Some(900));
        assert_eq!(subsets[0].not_ready_addresses.as_ref().map(Vec::len), Some(100));
    }

    fn apply(plan: SlicePlan, existing: &[EndpointSlice]) -> Vec<EndpointSlice> {
        let mut slices: Vec<EndpointSlice> = existing
            .iter()
            .filter(|s| !plan.delete.contains(&s.name_any()))
            .filter(|s| !plan.update.iter().any(|u| u.name_any() == s.name_any()))
            .cloned()
            .collect();
        slices.extend(plan.update);
        for (i, mut s) in plan.create.into_iter().enumerate() {
            s.metadata.name = Some(format!("web-{i}{}", slices.len()));
            slices.push(s);
        }
        slices
    }

    #[test]
    fn slices_hold_the_pods_keep_them_in_place_and_keep_a_placeholder_when_empty() {
        let svc = service(vec![port("http", 80, Some(IntOrString::String("http".into())))]);
        let pods: Vec<Pod> = (1..=3)
            .map(|i| pod(&format!("p{i}"), &format!("10.0.0.{i}"), i != 2, &[("http", 8080)]))
            .collect();
        let plan = plan_slices(&svc, &pods, &[]);
        assert_eq!((plan.create.len(), plan.update.len(), plan.delete.len()), (1, 0, 0));
        let slice = &plan.create[0];
        assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(
            labels_of(slice).get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("web")
        );
        assert_eq!(
            labels_of(slice).get(MANAGED_BY_LABEL).map(String::as_str),
            Some(CONTROLLER_NAME)
        );
        assert_eq!(labels_of(slice).get("team").map(String::as_str), Some("a"));
        let owner = &slice.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Service", "svc-uid", Some(true))
        );
        assert_eq!(slice.endpoints.len(), 3);
        let p2 = slice
            .endpoints
            .iter()
            .find(|e| e.addresses == ["10.0.0.2"])
            .expect("p2");
        let conditions = p2.conditions.clone().expect("conditions");
        assert_eq!(
            (conditions.ready, conditions.serving, conditions.terminating),
            (Some(false), Some(false), Some(false))
        );

        let slices = apply(plan, &[]);
        assert!(plan_slices(&svc, &pods, &slices).is_empty(), "steady state");

        // One pod gone, one terminating: one update of the same slice.
        let mut pods2 = pods[..2].to_vec();
        pods2[0].metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let plan = plan_slices(&svc, &pods2, &slices);
        assert_eq!((plan.create.len(), plan.update.len(), plan.delete.len()), (0, 1, 0));
        assert_eq!(plan.update[0].metadata.name, slices[0].metadata.name);
        let p1 = &plan.update[0]
            .endpoints
            .iter()
            .find(|e| e.addresses == ["10.0.0.1"])
            .expect("p1");
        let conditions = p1.conditions.clone().expect("conditions");
        assert_eq!(
            (conditions.ready, conditions.serving, conditions.terminating),
            (Some(false), Some(true), Some(true))
        );

        // No pods: the slice becomes the placeholder (an update, not a delete and a create), then stays.
        let plan = plan_slices(&svc, &[], &slices);
        assert_eq!((plan.create.len(), plan.update.len(), plan.delete.len()), (0, 1, 0));
        assert!(plan.update[0].endpoints.is_empty());
        let slices = apply(plan, &slices);
        assert!(plan_slices(&svc, &[], &slices).is_empty(), "the placeholder stays");

        // A slice of a former Service of the same name goes.
        let mut other = svc.clone();
        other.metadata.uid = Some("other".into());
        let plan = plan_slices(&other, &pods, &slices);
        assert_eq!((plan.create.len(), plan.update.len(), plan.delete.len()), (1, 0, 1));
    }

    #[test]
    fn slices_split_at_the_maximum_and_new_endpoints_fill_existing_room() {
        let svc = service(vec![port("http", 80, None)]);
        let pods: Vec<Pod> = (0..150)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.0.{}.{}", i / 200, i % 200 + 1),
                    true,
                    &[],
                )
            })
            .collect();
        let slices = apply(plan_slices(&svc, &pods, &[]), &[]);
        let mut sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
        sizes.sort();
        assert_eq!(sizes, vec![50, 100]);
        let mut more = pods.clone();
        more.push(pod("new", "10.0.1.1", true, &[]));
        let plan = plan_slices(&svc, &more, &slices);
        assert_eq!((plan.create.len(), plan.update.len(), plan.delete.len()), (0, 1, 0));
        assert_eq!(plan.update[0].endpoints.len(), 51, "into the slice with room");
    }

    #[test]
    fn members_remember_which_services_listed_a_pod() {
        let m = Members::default();
        m.set("ns", "a", BTreeSet::from(["p1".to_string(), "p2".to_string()]));
        m.set("ns", "b", BTreeSet::from(["p1".to_string()]));
        assert_eq!(
            m.services_of("ns", "p1"),
            BTreeSet::from(["a".to_string(), "b".to_string()])
        );
        m.set("ns", "a", BTreeSet::from(["p2".to_string()]));
        assert_eq!(m.services_of("ns", "p1"), BTreeSet::from(["b".to_string()]));
        m.set("ns", "b", BTreeSet::new());
        assert!(m.services_of("ns", "p1").is_empty());
        assert!(
            m.lock().services.len() == 1 && m.lock().pods.len() == 1,
            "nothing left behind"
        );
    }
}
