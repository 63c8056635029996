//! From Services and their endpoints to the forwarding table: what kube-proxy computes
//! from the same objects. Pure functions; the proxy's loop feeds them what it holds.
//!
//! The input is what the mesh API's `ProxyConfig` stream sends, decoded
//! ([`ServiceConfig::from_mesh`]): each Service with its endpoints, already chosen by
//! the API server's proxy hub as kube-proxy chooses them (see
//! `apiserver/src/mesh/proxy.rs`):
//!
//! - from the EndpointSlices labelled `kubernetes.io/service-name=<service>` in its
//!   namespace, the endpoints that are ready (`ready` unset counts as ready, as
//!   upstream), and for a port that no ready endpoint has, those that are `serving` and
//!   `terminating` (flagged [`Endpoint::terminating`]), as kube-proxy does so that a
//!   rolling update does not drop connections needlessly;
//! - for a Service without a selector and without slices (no controller writes them),
//!   the ready addresses of its manual Endpoints object (what upstream's EndpointSlice
//!   mirroring controller would have turned into slices).
//!
//! The rules ([`service_rules`]): for every Service with a ClusterIP (not `None`, not
//! `ExternalName`) and every port of it (TCP or UDP; SCTP is skipped), one [`Rule`]
//! listening on each IPv4 ClusterIP and the port, and for `NodePort` and `LoadBalancer`
//! Services one more on the node's address and the `nodePort`. The backends are the
//! IPv4 endpoints with a port of the same name and protocol, at that port; the ready
//! ones, or when none is ready, the terminating ones. (The hub already sends terminating
//! endpoints only for ports without a ready one; deciding again here keeps the table
//! right whatever the stream sends.)
//!
//! `sessionAffinity: ClientIP` gives the rule its affinity with
//! `sessionAffinityConfig.clientIP.timeoutSeconds` (10,800 s when unset).
//!
//! Left out: `externalTrafficPolicy`/`internalTrafficPolicy` (one node: every endpoint
//! is local, so the endpoints' node names are not kept), topology hints, `externalIPs`
//! and load balancer ingress addresses.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use capstan_proto::mesh::ProxyService;
use k8s_openapi::api::core::v1::{Service, ServicePort};

use super::forward::{Protocol, Rule};
use crate::{AgentError, Result};

/// ClientIP affinity's timeout when the Service does not set one.
pub const AFFINITY_TIMEOUT_DEFAULT_S: u64 = 10_800;

/// One port of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPort {
    /// "" for an unnamed port; matched against the Service port's name.
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// One endpoint (a pod's address, say) of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub ports: Vec<EndpointPort>,
    /// Not ready but serving and terminating: a backend only for a port that no ready
    /// endpoint has.
    pub terminating: bool,
}

/// A Service and its endpoints: one entry of the proxy's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub service: Service,
    pub endpoints: Vec<Endpoint>,
}

impl ServiceConfig {
    /// Decodes one Service of the mesh API's `ProxyConfig` stream. Endpoints whose
    /// address is not an IP and ports that are out of range or neither TCP nor UDP are
    /// skipped (nothing could be forwarded to them).
    pub fn from_mesh(s: &ProxyService) -> Result<ServiceConfig> {
        let service: Service = serde_json::from_slice(&s.service).map_err(|e| {
            AgentError::Config(format!("the Service {}/{} from the mesh API: {e}", s.namespace, s.name))
        })?;
        let endpoints = s
            .endpoints
            .iter()
            .filter_map(|e| {
                Some(Endpoint {
                    ip: e.address.parse().ok()?,
                    ports: e
                        .ports
                        .iter()
                        .filter_map(|p| {
                            Some(EndpointPort {
                                name: p.name.clone(),
                                port: u16::try_from(p.port).ok().filter(|p| *p != 0)?,
                                protocol: protocol(Some(p.protocol.as_str()).filter(|p| !p.is_empty()))?,
                            })
                        })
                        .collect(),
                    terminating: e.terminating,
                })
            })
            .collect();
        Ok(ServiceConfig { service, endpoints })
    }
}

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

/// The backends of one Service port: the ready IPv4 endpoints with a port of the same
/// name and protocol, else the terminating ones.
fn backends(endpoints: &[Endpoint], port: &ServicePort, proto: Protocol) -> Vec<SocketAddr> {
    let name = port.name.as_deref().unwrap_or_default();
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for endpoint in endpoints.iter().filter(|e| e.ip.is_ipv4()) {
        let Some(target) = endpoint.ports.iter().find(|p| p.name == name && p.protocol == proto) else {
            continue;
        };
        let backend = SocketAddr::new(endpoint.ip, target.port);
        if endpoint.terminating {
            terminating.push(backend);
        } else {
            ready.push(backend);
        }
    }
    let mut backends = if ready.is_empty() { terminating } else { ready };
    backends.sort();
    backends.dedup();
    backends
}

/// The forwarding table for `services` on the node whose address is `node_ip`. Rules
/// come out sorted by listen address and protocol; two Services can never claim one
/// (the API allocates ClusterIPs and NodePorts uniquely), and if they did the first in
/// that order would win.
pub fn service_rules<'a>(services: impl IntoIterator<Item = &'a ServiceConfig>, node_ip: IpAddr) -> Vec<Rule> {
    labelled_service_rules(services, node_ip)
        .into_iter()
        .map(|(rule, _)| rule)
        .collect()
}

/// [`service_rules`], each with its Service port as the metrics label it:
/// `namespace/name:port`, the port's name, or its number if it has none (upstream's
/// service port name, which leaves it empty).
pub fn labelled_service_rules<'a>(
    services: impl IntoIterator<Item = &'a ServiceConfig>,
    node_ip: IpAddr,
) -> Vec<(Rule, String)> {
    let mut table: BTreeMap<(SocketAddr, Protocol), (Rule, String)> = BTreeMap::new();
    for config in services {
        let service = &config.service;
        let Some(spec) = service.spec.as_ref() else { continue };
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
        for port in spec.ports.iter().flatten() {
            let Some(proto) = protocol(port.protocol.as_deref()) else {
                continue;
            };
            let Ok(number) = u16::try_from(port.port) else { continue };
            let backends = backends(&config.endpoints, port, proto);
            let label = format!(
                "{}/{}:{}",
                service.metadata.namespace.as_deref().unwrap_or_default(),
                service.metadata.name.as_deref().unwrap_or_default(),
                port.name
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .map_or_else(|| number.to_string(), str::to_owned),
            );
            let mut listens: Vec<SocketAddr> = cluster_ips.iter().map(|ip| SocketAddr::new(*ip, number)).collect();
            if matches!(kind, "NodePort" | "LoadBalancer") {
                if let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0) {
                    listens.push(SocketAddr::new(node_ip, node_port));
                }
            }
            for listen in listens {
                table.entry((listen, proto)).or_insert_with(|| {
                    let rule = Rule {
                        listen,
                        protocol: proto,
                        backends: backends.clone(),
                        session_affinity: affinity(service),
                    };
                    (rule, label.clone())
                });
            }
        }
    }
    table.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_proto::mesh::{ProxyEndpoint, ProxyPort};
    use serde_json::json;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    const NODE: &str = "127.0.0.1";

    fn node_ip() -> IpAddr {
        NODE.parse().expect("ip")
    }

    /// An endpoint as the mesh API sends it: `ports` as (name, port, protocol).
    fn ep(address: &str, ports: &[(&str, i32, &str)], terminating: bool) -> ProxyEndpoint {
        ProxyEndpoint {
            address: address.to_string(),
            node_name: "n1".to_string(),
            ports: ports
                .iter()
                .map(|(name, port, protocol)| ProxyPort {
                    name: name.to_string(),
                    port: *port,
                    protocol: protocol.to_string(),
                })
                .collect(),
            terminating,
        }
    }

    /// A Service of the mesh API's stream, decoded.
    fn config(service: serde_json::Value, endpoints: Vec<ProxyEndpoint>) -> ServiceConfig {
        ServiceConfig::from_mesh(&ProxyService {
            namespace: "default".into(),
            name: service["metadata"]["name"].as_str().unwrap_or_default().into(),
            service: serde_json::to_vec(&service).expect("json").into(),
            endpoints,
        })
        .expect("decodes")
    }

    #[test]
    fn ready_endpoints_by_port_name_on_the_cluster_ip_and_the_node_port() {
        let web = config(
            json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "127.64.0.10", "clusterIPs": ["127.64.0.10"],
                     "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                               {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}]}}),
            ["127.128.0.2", "127.128.0.3"]
                .iter()
                .map(|a| ep(a, &[("http", 8080, "TCP"), ("dns", 5353, "UDP")], false))
                .collect(),
        );
        let rules = service_rules([&web], node_ip());
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
    fn terminating_endpoints_serve_only_ports_without_a_ready_one() {
        let web = config(
            json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "127.64.0.11", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80}, {"name": "metrics", "port": 90}]}}),
            vec![
                ep("127.128.0.2", &[("http", 8080, "TCP")], false),
                ep("127.128.0.9", &[("http", 8080, "TCP"), ("metrics", 9090, "TCP")], true),
            ],
        );
        let r = service_rules([&web], node_ip());
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].listen, &r[0].backends[..]),
            (addr("127.64.0.11:80"), &[addr("127.128.0.2:8080")][..])
        );
        assert_eq!(
            (r[1].listen, &r[1].backends[..]),
            (addr("127.64.0.11:90"), &[addr("127.128.0.9:9090")][..])
        );
    }

    #[test]
    fn from_mesh_skips_what_cannot_be_forwarded_and_refuses_a_bad_service() {
        let web = config(
            json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "127.64.0.16", "ports": [{"port": 80}]}}),
            vec![
                ep("web.example", &[("", 8080, "TCP")], false),
                ep("::1", &[("", 8080, "TCP")], false),
                ep(
                    "127.128.0.2",
                    &[("", 8080, ""), ("", 0, "TCP"), ("", 70000, "TCP"), ("", 8081, "SCTP")],
                    false,
                ),
            ],
        );
        assert_eq!(web.endpoints.len(), 2, "{:?}", web.endpoints);
        assert_eq!(
            web.endpoints[1].ports,
            [EndpointPort {
                name: String::new(),
                port: 8080,
                protocol: Protocol::Tcp
            }],
            "an unset protocol is TCP; port 0, out of range and SCTP are skipped"
        );
        let r = service_rules([&web], node_ip());
        assert_eq!(
            r[0].backends,
            [addr("127.128.0.2:8080")],
            "IPv6 endpoints are not backends"
        );

        let bad = ServiceConfig::from_mesh(&ProxyService {
            namespace: "default".into(),
            name: "bad".into(),
            service: b"{\"spec\": 3}".to_vec().into(),
            endpoints: Vec::new(),
        });
        assert!(matches!(bad, Err(AgentError::Config(_))), "{bad:?}");
    }

    #[test]
    fn headless_external_name_and_unallocated_services_get_no_rules() {
        let services = [
            json!({"metadata": {"name": "h", "namespace": "default"},
                "spec": {"clusterIP": "None", "selector": {"a": "b"}, "ports": [{"port": 80}]}}),
            json!({"metadata": {"name": "x", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "example.com"}}),
            json!({"metadata": {"name": "s", "namespace": "default"},
                "spec": {"clusterIP": "127.64.0.12", "ports": [{"port": 80, "protocol": "SCTP"}]}}),
            json!({"metadata": {"name": "n", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}),
        ]
        .map(|s| config(s, vec![ep("127.128.0.2", &[("", 80, "TCP")], false)]));
        assert_eq!(service_rules(&services, node_ip()), Vec::<Rule>::new());
    }

    #[test]
    fn client_ip_affinity_with_its_timeout_or_the_default() {
        let with = |affinity_config: serde_json::Value| {
            config(
                json!({"metadata": {"name": "a", "namespace": "default"},
                "spec": {"clusterIP": "127.64.0.14", "selector": {"a": "b"}, "ports": [{"port": 80}],
                         "sessionAffinity": "ClientIP", "sessionAffinityConfig": affinity_config}}),
                Vec::new(),
            )
        };
        let r = service_rules([&with(json!({"clientIP": {"timeoutSeconds": 60}}))], node_ip());
        assert_eq!(r[0].session_affinity, Some(Duration::from_secs(60)));
        let r = service_rules([&with(json!({}))], node_ip());
        assert_eq!(
            r[0].session_affinity,
            Some(Duration::from_secs(AFFINITY_TIMEOUT_DEFAULT_S))
        );
        assert!(r[0].backends.is_empty(), "no endpoints: a rule that refuses");
    }
}
