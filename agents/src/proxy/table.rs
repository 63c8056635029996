//! From Services and their endpoints to the forwarding table: what kube-proxy computes
//! from the same objects. A pure function; the proxy's loop feeds it its caches.
//!
//! For every Service with a ClusterIP (not `None`, not `ExternalName`) and every port of
//! it (TCP or UDP; SCTP is skipped), one [`Rule`] listening on each IPv4 ClusterIP and
//! the port, and for `NodePort` and `LoadBalancer` Services one more on the node's
//! address and the `nodePort`. The backends are the Service's endpoints for that port:
//!
//! - From the EndpointSlices labelled `kubernetes.io/service-name=<service>` in its
//!   namespace (IPv4 slices), the endpoints that are ready (`ready` unset counts as
//!   ready, as upstream), each at the slice's port of the same name and protocol. When
//!   no endpoint is ready, those that are `serving` and `terminating` are used instead,
//!   as kube-proxy does so that a rolling update does not drop connections needlessly.
//! - A Service without a selector has no controller writing its slices; if it has no
//!   slices, its manual Endpoints object's ready addresses are used (what upstream's
//!   EndpointSlice mirroring controller would have turned into slices).
//!
//! `sessionAffinity: ClientIP` gives the rule its affinity with
//! `sessionAffinityConfig.clientIP.timeoutSeconds` (10,800 s when unset).
//!
//! Left out: `externalTrafficPolicy`/`internalTrafficPolicy` (one node: every endpoint
//! is local), topology hints, `externalIPs` and load balancer ingress addresses.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::forward::{Protocol, Rule};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// ClientIP affinity's timeout when the Service does not set one.
pub const AFFINITY_TIMEOUT_DEFAULT_S: u64 = 10_800;

fn protocol(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None,
    }
}

fn affinity(service: &Service) -> Option<Duration> {
    let spec = service.spec.as_ref()?;
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return None;
    }
    let timeout_s = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(AFFINITY_TIMEOUT_DEFAULT_S);
    Some(Duration::from_secs(timeout_s))
}

/// The backends of one Service port from its EndpointSlices: the ready ones, else the
/// serving and terminating ones.
fn slice_backends(slices: &[&EndpointSlice], port: &ServicePort, proto: Protocol) -> Vec<SocketAddr> {
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(target) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port.name.as_deref().unwrap_or_default()
                && protocol(p.protocol.as_deref()) == Some(proto)
        }) else {
            continue;
        };
        let Some(number) = target.port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let is_fallback = conditions.is_some_and(|c| c.serving == Some(true) && c.terminating == Some(true));
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else { continue };
                if is_ready {
                    ready.push(SocketAddr::new(ip, number));
                } else if is_fallback {
                    terminating.push(SocketAddr::new(ip, number));
                }
            }
        }
    }
    let mut backends = if ready.is_empty() { terminating } else { ready };
    backends.sort();
    backends.dedup();
    backends
}

/// The backends of one Service port from a manual Endpoints object.
fn endpoints_backends(endpoints: &Endpoints, port: &ServicePort, proto: Protocol) -> Vec<SocketAddr> {
    let mut backends = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        let Some(target) = subset.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port.name.as_deref().unwrap_or_default()
                && protocol(p.protocol.as_deref()) == Some(proto)
        }) else {
            continue;
        };
        let Ok(number) = u16::try_from(target.port) else {
            continue;
        };
        for address in subset.addresses.iter().flatten() {
            if let Ok(ip) = address.ip.parse::<IpAddr>() {
                backends.push(SocketAddr::new(ip, number));
            }
        }
    }
    backends.sort();
    backends.dedup();
    backends
}

/// The forwarding table for `services`, with their `slices` and manual `endpoints`, on
/// the node whose address is `node_ip`. Rules come out sorted by listen address and
/// protocol; two Services can never claim one (the API allocates ClusterIPs and
/// NodePorts uniquely), and if they did the first in that order would win.
pub fn rules<S, E, P>(services: &[S], slices: &[E], endpoints: &[P], node_ip: IpAddr) -> Vec<Rule>
where
    S: Borrow<Service>,
    E: Borrow<EndpointSlice>,
    P: Borrow<Endpoints>,
{
    // Slices and Endpoints by (namespace, service name).
    let mut slices_of: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let slice = slice.borrow();
        let (Some(ns), Some(service)) = (
            slice.metadata.namespace.as_deref(),
            slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)),
        ) else {
            continue;
        };
        slices_of.entry((ns, service.as_str())).or_default().push(slice);
    }
    let endpoints_of: BTreeMap<(&str, &str), &Endpoints> = endpoints
        .iter()
        .map(Borrow::borrow)
        .filter_map(|e| Some(((e.metadata.namespace.as_deref()?, e.metadata.name.as_deref()?), e)))
        .collect();
    let mut table: BTreeMap<(SocketAddr, Protocol), Rule> = BTreeMap::new();
    for service in services {
        let service = service.borrow();
        let (Some(ns), Some(name), Some(spec)) = (
            service.metadata.namespace.as_deref(),
            service.metadata.name.as_deref(),
            service.spec.as_ref(),
        ) else {
            continue;
        };
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        if kind == "ExternalName" {
            continue;
        }
        let mut cluster_ips: Vec<IpAddr> = spec
            .cluster_ips
            .clone()
            .unwrap_or_else(|| spec.cluster_ip.clone().into_iter().collect())
            .iter()
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .filter(IpAddr::is_ipv4)
            .collect();
        cluster_ips.dedup();
        if cluster_ips.is_empty() {
            // Headless (`None`) or not allocated yet: nothing to listen on.
            continue;
        }
        let service_slices = slices_of.get(&(ns, name)).map(Vec::as_slice).unwrap_or_default();
        let manual = spec.selector.as_ref().is_none_or(|s| s.is_empty()) && service_slices.is_empty();
        for port in spec.ports.iter().flatten() {
            let Some(proto) = protocol(port.protocol.as_deref()) else {
                continue;
            };
            let Ok(number) = u16::try_from(port.port) else { continue };
            let backends = match endpoints_of.get(&(ns, name)) {
                Some(e) if manual => endpoints_backends(e, port, proto),
                _ => slice_backends(service_slices, port, proto),
            };
            let mut listens: Vec<SocketAddr> = cluster_ips.iter().map(|ip| SocketAddr::new(*ip, number)).collect();
            if matches!(kind, "NodePort" | "LoadBalancer") {
                if let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0) {
                    listens.push(SocketAddr::new(node_ip, node_port));
                }
            }
            for listen in listens {
                table.entry((listen, proto)).or_insert_with(|| Rule {
                    listen,
                    protocol: proto,
                    backends: backends.clone(),
                    session_affinity: affinity(service),
                });
            }
        }
    }
    table.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    fn slice(service: &str, ports: serde_json::Value, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-abc"), "namespace": "default",
                         "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints,
        }))
        .expect("slice")
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    const NODE: &str = "127.0.0.1";
    const NO_SLICES: &[EndpointSlice] = &[];
    const NO_ENDPOINTS: &[Endpoints] = &[];

    fn node_ip() -> IpAddr {
        NODE.parse().expect("ip")
    }

    #[test]
    fn ready_endpoints_by_port_name_on_the_cluster_ip_and_the_node_port() {
        let web = service(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "127.64.0.10", "clusterIPs": ["127.64.0.10"],
                     "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                               {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}]}}));
        let s = slice(
            "web",
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]),
            json!([
                {"addresses": ["127.128.0.2"], "conditions": {"ready": true}},
                {"addresses": ["127.128.0.3"]},
                {"addresses": ["127.128.0.4"], "conditions": {"ready": false}},
            ]),
        );
        let rules = rules(&[web], &[s], NO_ENDPOINTS, node_ip());
        let http = vec![addr("127.128.0.2:8080"), addr("127.128.0.3:8080")];
        assert_eq!(
            rules,
            vec![
                Rule {
                    listen: addr("127.0.0.1:30080"),
                    protocol: Protocol::Tcp,
                    backends: http.clone(),
                    session_affinity: None
                },
                Rule {
                    listen: addr("127.64.0.10:53"),
                    protocol: Protocol::Udp,
                    backends: vec![addr("127.128.0.2:5353"), addr("127.128.0.3:5353")],
                    session_affinity: None
                },
                Rule {
                    listen: addr("127.64.0.10:80"),
                    protocol: Protocol::Tcp,
                    backends: http,
                    session_affinity: None
                },
            ]
        );
    }

    #[test]
    fn serving_terminating_endpoints_only_when_none_is_ready() {
        let web = service(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "127.64.0.11", "selector": {"app": "web"}, "ports": [{"port": 80}]}}));
        let ports = json!([{"port": 8080}]);
        let terminating = json!({"addresses": ["127.128.0.9"],
            "conditions": {"ready": false, "serving": true, "terminating": true}});
        let with_ready = slice(
            "web",
            ports.clone(),
            json!([terminating.clone(), {"addresses": ["127.128.0.2"]}]),
        );
        let r = rules(std::slice::from_ref(&web), &[with_ready], NO_ENDPOINTS, node_ip());
        assert_eq!(r[0].backends, [addr("127.128.0.2:8080")]);
        let without_ready = slice("web", ports, json!([terminating]));
        let r = rules(&[web], &[without_ready], NO_ENDPOINTS, node_ip());
        assert_eq!(r[0].backends, [addr("127.128.0.9:8080")]);
    }

    #[test]
    fn headless_external_name_and_unallocated_services_get_no_rules() {
        let services = [
            service(json!({"metadata": {"name": "h", "namespace": "default"},
                "spec": {"clusterIP": "None", "selector": {"a": "b"}, "ports": [{"port": 80}]}})),
            service(json!({"metadata": {"name": "x", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "example.com"}})),
            service(json!({"metadata": {"name": "s", "namespace": "default"},
                "spec": {"clusterIP": "127.64.0.12", "ports": [{"port": 80, "protocol": "SCTP"}]}})),
            service(json!({"metadata": {"name": "n", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}})),
        ];
        assert_eq!(rules(&services, NO_SLICES, NO_ENDPOINTS, node_ip()), Vec::<Rule>::new());
    }

    #[test]
    fn a_service_without_selector_uses_its_manual_endpoints() {
        let db = service(json!({"metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "127.64.0.13", "ports": [{"name": "pg", "port": 5432}]}}));
        let endpoints: Endpoints = serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "notReadyAddresses": [{"ip": "127.0.0.2"}],
                         "ports": [{"name": "pg", "port": 15432}]}]}))
        .expect("endpoints");
        let r = rules(&[db], NO_SLICES, &[endpoints], node_ip());
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].backends, [addr("127.0.0.1:15432")]);
    }

    #[test]
    fn client_ip_affinity_with_its_timeout_or_the_default() {
        let with = |config: serde_json::Value| {
            service(json!({"metadata": {"name": "a", "namespace": "default"},
                "spec": {"clusterIP": "127.64.0.14", "selector": {"a": "b"}, "ports": [{"port": 80}],
                         "sessionAffinity": "ClientIP", "sessionAffinityConfig": config}}))
        };
        let r = rules(
            &[with(json!({"clientIP": {"timeoutSeconds": 60}}))],
            NO_SLICES,
            NO_ENDPOINTS,
            node_ip(),
        );
        assert_eq!(r[0].session_affinity, Some(Duration::from_secs(60)));
        let r = rules(&[with(json!({}))], NO_SLICES, NO_ENDPOINTS, node_ip());
        assert_eq!(
            r[0].session_affinity,
            Some(Duration::from_secs(AFFINITY_TIMEOUT_DEFAULT_S))
        );
        assert!(r[0].backends.is_empty(), "no endpoints: a rule that refuses");
    }

    #[test]
    fn slices_of_another_namespace_or_service_do_not_count() {
        let web = service(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "127.64.0.15", "selector": {"a": "b"}, "ports": [{"port": 80}]}}));
        let mut elsewhere = slice("web", json!([{"port": 8080}]), json!([{"addresses": ["127.128.0.2"]}]));
        elsewhere.metadata.namespace = Some("other".into());
        let other_service = slice("api", json!([{"port": 8080}]), json!([{"addresses": ["127.128.0.3"]}]));
        let r = rules(&[web], &[elsewhere, other_service], NO_ENDPOINTS, node_ip());
        assert_eq!(r.len(), 1);
        assert!(r[0].backends.is_empty(), "{:?}", r[0].backends);
    }
}
