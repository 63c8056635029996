//! The zone's records, computed from Services and EndpointSlices, and the answer to one
//! question from them. Pure: no network, no clock (the SOA serial is passed in).
//!
//! [`Index::build`] walks every Service once and fills a map from owner name to its
//! records (A, CNAME, SRV, TXT), a map from reverse name (`d.c.b.a.in-addr.arpa.`) to
//! PTR target, and the set of empty non-terminals (every ancestor, inside the zone, of
//! a name that has records), so that `default.svc.<zone>` is NOERROR without data rather
//! than NXDOMAIN (RFC 8020: an NXDOMAIN means nothing exists below the name either).
//! [`answer`] then costs a few hash lookups; pod names (`a-b-c-d.<ns>.pod.<zone>`) are
//! parsed, not stored.
//!
//! Records, following the Kubernetes DNS specification (schema 1.1.0):
//! - `dns-version.<zone>` TXT `1.1.0`; the apex has an SOA.
//! - A Service with ClusterIPs: `<svc>.<ns>.svc.<zone>` A each IPv4 ClusterIP;
//!   `_<port>._<proto>.<svc>…` SRV (priority 0, weight 100 / count) to the service name at
//!   the Service port, for named ports; PTR from each ClusterIP.
//! - A headless Service (`clusterIP: None`): its ready endpoints from the IPv4
//!   EndpointSlices labelled with its name (`ready` unset counts as ready, as upstream;
//!   every endpoint when `publishNotReadyAddresses` or the old
//!   `service.alpha.kubernetes.io/tolerate-unready-endpoints: "true"`). The service name
//!   has an A per address and, as the specification says, does not exist (NXDOMAIN) when
//!   no endpoint is ready. Each endpoint is named by its `hostname`, or else by its first
//!   address with dashes (`10-1-0-3`, CoreDNS's choice of identifier), with A records
//!   under the service name, one SRV per endpoint and named slice port (at the slice's
//!   port number) and a PTR from each address to that name.
//! - An ExternalName Service: a CNAME to `externalName`. For any question but CNAME, an
//!   in-zone target is followed here (at most [`CNAME_CHAIN_MAX`] steps); an out-of-zone
//!   target is left to the caller ([`Decision::Chase`]), which asks the upstreams.
//! - `<a-b-c-d>.<ns>.pod.<zone>` A `a.b.c.d` for any namespace (CoreDNS's `pods insecure`,
//!   what kubeadm configures): no Pod lookup.
//!
//! Names that exist without records of the asked type get NOERROR with no answer; names
//! that do not exist get NXDOMAIN; both carry the zone's SOA in the authority section.
//! A PTR name without a record here is forwarded (CoreDNS's `fallthrough in-addr.arpa`).
//!
//! Left out: IPv6 (AAAA is always empty), NS records and the `ns.dns.<zone>` name, wildcard
//! queries, manual Endpoints objects of selector-less headless Services (EndpointSlices
//! only), SRV records on the bare service name, multiple questions in one message.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

pub use crate::endpoints::SERVICE_NAME_LABEL;
/// The schema version in the `dns-version.<zone>` TXT record.
pub const SCHEMA_VERSION: &str = "1.1.0";
/// In-zone CNAME steps followed for one answer (ExternalName Services pointing at each
/// other); a loop stops here.
pub const CNAME_CHAIN_MAX: usize = 8;
/// The pre-EndpointSlice annotation that makes every endpoint count as ready.
const TOLERATE_UNREADY_ANNOTATION: &str = "service.alpha.kubernetes.io/tolerate-unready-endpoints";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SrvTarget {
    port: u16,
    target: Name,
}

/// The records of one owner name.
#[derive(Default, Debug)]
struct Entry {
    a: Vec<Ipv4Addr>,
    cname: Option<Name>,
    srv: Vec<SrvTarget>,
    txt: Vec<String>,
}

/// The zone's records at one moment.
#[derive(Debug)]
pub struct Index {
    zone: Name,
    ttl_s: u32,
    soa: Record,
    names: HashMap<Name, Entry>,
    empty_non_terminals: HashSet<Name>,
    ptrs: HashMap<Name, Name>,
}

/// What to do with one query.
#[derive(Debug)]
pub enum Decision {
    /// Send this answer.
    Reply(Message),
    /// Not ours: relay the query to the upstream nameservers.
    Forward,
    /// `reply` holds a CNAME chain that leaves the zone at `target`: ask the upstreams
    /// for `target` and `query_type`, append their answers, send.
    Chase {
        reply: Message,
        target: Name,
        query_type: RecordType,
    },
}

/// A DNS label as Kubernetes names are (letters, digits, `-`, `_`), lowercased; `None`
/// for anything else, so no object can make a name we would mis-parse.
fn label(s: &str) -> Option<String> {
    let ok = !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| s.to_ascii_lowercase())
}

/// `labels` followed by `zone`, as a fully qualified name.
fn name_in(labels: &[&str], zone: &Name) -> Option<Name> {
    let mut text = String::new();
    for l in labels {
        text.push_str(&label(l)?);
        text.push('.');
    }
    Name::from_ascii(text).ok()?.append_domain(zone).ok()
}

/// Parses a zone as the configuration gives it (`cluster.local`, with or without the
/// final dot) into a lowercase fully qualified name.
pub fn parse_zone(zone: &str) -> Option<Name> {
    let trimmed = zone.trim().trim_end_matches('.');
    if trimmed.is_empty() || !trimmed.split('.').all(|l| label(l).is_some()) {
        return None;
    }
    Name::from_ascii(format!("{}.", trimmed.to_ascii_lowercase())).ok()
}

fn is_ready(conditions: Option<&k8s_openapi::api::discovery::v1::EndpointConditions>, publish_not_ready: bool) -> bool {
    publish_not_ready || conditions.and_then(|c| c.ready).unwrap_or(true)
}

impl Index {
    /// The zone with no Service: the apex SOA, `dns-version`, the `svc` and `pod` names.
    pub fn empty(zone: &Name, ttl_s: u32, serial: u32) -> Index {
        Self::build::<Service, EndpointSlice>(zone, ttl_s, serial, &[], &[])
    }

    /// Computes the zone from every Service and every EndpointSlice that names its
    /// Service (the rest are ignored).
    pub fn build<S: Borrow<Service>, E: Borrow<EndpointSlice>>(
        zone: &Name,
        ttl_s: u32,
        serial: u32,
        services: &[S],
        slices: &[E],
    ) -> Index {
        let zone = zone.to_lowercase();
        let soa = soa_record(&zone, ttl_s, serial);
        let mut index = Index {
            zone: zone.clone(),
            ttl_s,
            soa,
            names: HashMap::new(),
            empty_non_terminals: HashSet::new(),
            ptrs: HashMap::new(),
        };
        if let Some(version) = name_in(&["dns-version"], &zone) {
            index.entry(version).txt.push(SCHEMA_VERSION.to_owned());
        }
        for fixed in [["svc"], ["pod"]] {
            if let Some(n) = name_in(&fixed, &zone) {
                index.empty_non_terminals.insert(n);
            }
        }

        // Slices by (namespace, service): BTreeMaps and sorted Services so that where two
        // objects claim one PTR the same one wins on every rebuild.
        let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
        for slice in slices {
            let slice: &EndpointSlice = slice.borrow();
            let service = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let (Some(ns), Some(service)) = (slice.metadata.namespace.as_deref(), service) {
                by_service.entry((ns, service.as_str())).or_default().push(slice);
            }
        }
        let mut services: Vec<&Service> = services.iter().map(|s| Borrow::<Service>::borrow(s)).collect();
        services.sort_by(|a, b| {
            (a.metadata.namespace.as_deref(), a.metadata.name.as_deref())
                .cmp(&(b.metadata.namespace.as_deref(), b.metadata.name.as_deref()))
        });
        for service in services {
            let (Some(ns), Some(name)) = (service.metadata.namespace.as_deref(), service.metadata.name.as_deref())
            else {
                continue;
            };
            let Some(owner) = name_in(&[name, ns, "svc"], &zone) else {
                tracing::debug!(namespace = ns, service = name, "not a DNS name; no records");
                continue;
            };
            let slices = by_service.get(&(ns, name)).map(Vec::as_slice).unwrap_or_default();
            index.add_service(service, owner, slices);
        }

        for entry in index.names.values_mut() {
            entry.a.sort_unstable();
            entry.a.dedup();
            entry.srv.sort_unstable();
            entry.srv.dedup();
        }
        let zone_labels = zone.num_labels();
        let owners: Vec<Name> = index.names.keys().cloned().collect();
        for owner in owners {
            let mut parent = owner.base_name();
            while parent.num_labels() > zone_labels {
                if !index.empty_non_terminals.insert(parent.clone()) {
                    break;
                }
                parent = parent.base_name();
            }
        }
        index
    }

    fn entry(&mut self, owner: Name) -> &mut Entry {
        self.names.entry(owner).or_default()
    }

    fn add_service(&mut self, service: &Service, owner: Name, slices: &[&EndpointSlice]) {
        let Some(spec) = service.spec.as_ref() else {
            return;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            let target = spec.external_name.as_deref().map(str::trim).unwrap_or_default();
            match Name::from_ascii(target) {
                Ok(mut target) if !target.is_root() && target.num_labels() > 0 => {
                    target.set_fqdn(true);
                    self.entry(owner).cname = Some(target);
                }
                _ => tracing::debug!(service = %owner, target, "ExternalName is not a DNS name; no record"),
            }
            return;
        }
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if !headless {
            let ips: Vec<Ipv4Addr> = match spec.cluster_ips.as_deref() {
                Some(ips) if !ips.is_empty() => ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
                _ => spec.cluster_ip.iter().filter_map(|ip| ip.parse().ok()).collect(),
            };
            for ip in &ips {
                self.ptrs.entry(Name::from(*ip)).or_insert_with(|| owner.clone());
            }
            let mut srv = Vec::new();
            for port in spec.ports.iter().flatten() {
                let (Some(port_name), Ok(number)) = (port.name.as_deref(), u16::try_from(port.port)) else {
                    continue;
                };
                let proto = port.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                if let Some(srv_name) = srv_owner(port_name, &proto, &owner) {
                    srv.push((srv_name, number));
                }
            }
            for (srv_name, port) in srv {
                self.entry(srv_name).srv.push(SrvTarget {
                    port,
                    target: owner.clone(),
                });
            }
            self.entry(owner).a.extend(ips);
            return;
        }

        // Headless: the ready endpoints.
        let tolerate_unready = service
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TOLERATE_UNREADY_ANNOTATION))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false) || tolerate_unready;
        let mut any = false;
        for slice in slices {
            if slice.address_type != "IPv4" {
                continue;
            }
            let ports: Vec<(Name, u16)> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    let number = p.port.and_then(|n| u16::try_from(n).ok()).filter(|n| *n != 0)?;
                    let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                    Some((srv_owner(p.name.as_deref()?, &proto, &owner)?, number))
                })
                .collect();
            for endpoint in &slice.endpoints {
                if !is_ready(endpoint.conditions.as_ref(), publish_not_ready) {
                    continue;
                }
                let addresses: Vec<Ipv4Addr> = endpoint.addresses.iter().filter_map(|a| a.parse().ok()).collect();
                let Some(first) = addresses.first() else {
                    continue;
                };
                let id = match endpoint.hostname.as_deref() {
                    Some(h) => h.to_owned(),
                    None => first.to_string().replace('.', "-"),
                };
                let Some(host) = label(&id)
                    .and_then(|id| Name::from_ascii(format!("{id}.")).ok())
                    .and_then(|l| l.append_domain(&owner).ok())
                else {
                    continue;
                };
                any = true;
                for ip in &addresses {
                    self.ptrs.entry(Name::from(*ip)).or_insert_with(|| host.clone());
                }
                self.entry(owner.clone()).a.extend(&addresses);
                self.entry(host.clone()).a.extend(&addresses);
                for (srv_name, port) in &ports {
                    self.entry(srv_name.clone()).srv.push(SrvTarget {
                        port: *port,
                        target: host.clone(),
                    });
                }
            }
        }
        if !any {
            tracing::trace!(service = %owner, "headless Service without ready endpoints: NXDOMAIN");
        }
    }

    /// The zone this index answers for.
    pub fn zone(&self) -> &Name {
        &self.zone
    }

    fn record(&self, owner: &Name, data: RData) -> Record {
        Record::from_rdata(owner.clone(), self.ttl_s, data)
    }

    /// Adds the records of `entry` of type `qtype` to `reply`; whether any was added.
    fn add_records(&self, owner: &Name, entry: &Entry, qtype: RecordType, reply: &mut Message) -> bool {
        let before = reply.answers.len();
        let any = qtype == RecordType::ANY;
        if qtype == RecordType::A || any {
            for ip in &entry.a {
                reply.answers.push(self.record(owner, RData::A(A(*ip))));
            }
        }
        if (qtype == RecordType::TXT || any) && !entry.txt.is_empty() {
            reply
                .answers
                .push(self.record(owner, RData::TXT(TXT::new(entry.txt.clone()))));
        }
        if qtype == RecordType::SRV || any {
            let weight = u16::try_from(100 / entry.srv.len().max(1)).unwrap_or(1).max(1);
            let mut targets: Vec<&Name> = Vec::new();
            for srv in &entry.srv {
                reply
                    .answers
                    .push(self.record(owner, RData::SRV(SRV::new(0, weight, srv.port, srv.target.clone()))));
                if !targets.contains(&&srv.target) {
                    targets.push(&srv.target);
                }
            }
            // The targets' addresses, so a client needs no second question.
            for target in targets {
                for ip in self.names.get(target).map(|e| e.a.as_slice()).unwrap_or_default() {
                    reply.additionals.push(self.record(target, RData::A(A(*ip))));
                }
            }
        }
        reply.answers.len() > before
    }

    /// A pod name's address: `a-b-c-d.<ns>.pod.<zone>`.
    fn pod_address(&self, relative: &[&[u8]]) -> Option<Ipv4Addr> {
        let [dashed, ns, pod] = relative else {
            return None;
        };
        if !pod.eq_ignore_ascii_case(b"pod") || ns.is_empty() {
            return None;
        }
        let text = std::str::from_utf8(dashed).ok()?;
        let octets: Vec<u8> = text
            .split('-')
            .map(|o| {
                if o.is_empty() || o.len() > 3 {
                    None
                } else {
                    o.parse().ok()
                }
            })
            .collect::<Option<_>>()?;
        let [a, b, c, d] = octets[..] else {
            return None;
        };
        Some(Ipv4Addr::new(a, b, c, d))
    }

    /// Fills `reply` for the in-zone question (`qname`, `qtype`).
    fn answer_in_zone(&self, qname: &Name, qtype: RecordType, mut reply: Message) -> Decision {
        reply.metadata.authoritative = true;
        let mut current = qname.clone();
        for _ in 0..=CNAME_CHAIN_MAX {
            if let Some(entry) = self.names.get(&current) {
                if let Some(target) = &entry.cname {
                    reply
                        .answers
                        .push(self.record(&current, RData::CNAME(CNAME(target.clone()))));
                    if qtype == RecordType::CNAME {
                        return Decision::Reply(reply);
                    }
                    if !self.zone.zone_of(target) {
                        return Decision::Chase {
                            reply,
                            target: target.clone(),
                            query_type: qtype,
                        };
                    }
                    current = target.clone();
                    continue;
                }
                if !self.add_records(&current, entry, qtype, &mut reply) {
                    reply.authorities.push(self.soa.clone());
                }
                return Decision::Reply(reply);
            }
            let labels: Vec<&[u8]> = current.iter().collect();
            let relative = &labels[..labels.len().saturating_sub(usize::from(self.zone.num_labels()))];
            if let Some(ip) = self.pod_address(relative) {
                if matches!(qtype, RecordType::A | RecordType::ANY) {
                    reply.answers.push(self.record(&current, RData::A(A(ip))));
                } else {
                    reply.authorities.push(self.soa.clone());
                }
                return Decision::Reply(reply);
            }
            if relative.is_empty() {
                // The apex.
                if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                    let mut soa = self.soa.clone();
                    soa.name = current.clone();
                    reply.answers.push(soa);
                } else {
                    reply.authorities.push(self.soa.clone());
                }
                return Decision::Reply(reply);
            }
            let pod_namespace = matches!(relative, [_, pod] if pod.eq_ignore_ascii_case(b"pod"));
            if self.empty_non_terminals.contains(&current) || pod_namespace {
                reply.authorities.push(self.soa.clone());
                return Decision::Reply(reply);
            }
            reply.metadata.response_code = ResponseCode::NXDomain;
            reply.authorities.push(self.soa.clone());
            return Decision::Reply(reply);
        }
        // A CNAME loop inside the zone: what was followed so far.
        Decision::Reply(reply)
    }
}

fn srv_owner(port: &str, proto: &str, owner: &Name) -> Option<Name> {
    let (port, proto) = (label(port)?, label(proto)?);
    Name::from_ascii(format!("_{port}._{proto}."))
        .ok()?
        .append_domain(owner)
        .ok()
}

fn soa_record(zone: &Name, ttl_s: u32, serial: u32) -> Record {
    // CoreDNS's shape: ns.dns.<zone>, hostmaster.<zone>, refresh 2 h, retry 30 min,
    // expire 1 day, and the negative-caching TTL (minimum) equal to the record TTL so an
    // NXDOMAIN is not remembered longer than a positive answer.
    let mname = Name::from_ascii("ns.dns.")
        .ok()
        .and_then(|n| n.append_domain(zone).ok());
    let rname = Name::from_ascii("hostmaster.")
        .ok()
        .and_then(|n| n.append_domain(zone).ok());
    let soa = SOA::new(
        mname.unwrap_or_else(|| zone.clone()),
        rname.unwrap_or_else(|| zone.clone()),
        serial,
        7200,
        1800,
        86400,
        ttl_s,
    );
    Record::from_rdata(zone.clone(), ttl_s, RData::SOA(soa))
}

/// The response skeleton for `query`: its id, question, RD and CD, with RA set (we
/// forward what is not ours).
pub fn response_to(query: &Message) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.checking_disabled = query.metadata.checking_disabled;
    reply.metadata.recursion_available = true;
    reply.queries = query.queries.clone();
    reply
}

/// An error response to `query` with `code`.
pub fn error_to(query: &Message, code: ResponseCode) -> Message {
    let mut reply = response_to(query);
    reply.metadata.response_code = code;
    reply
}

/// What to do with `query`: `index` is `None` until the Services and EndpointSlices have
/// been listed once, and then in-zone questions get SERVFAIL. `None` for a message that
/// is not a query (a response sent to us is dropped, never answered: no loops).
pub fn answer(zone: &Name, index: Option<&Index>, query: &Message) -> Option<Decision> {
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    if query.metadata.op_code != OpCode::Query {
        return Some(Decision::Reply(error_to(query, ResponseCode::NotImp)));
    }
    let [question] = query.queries.as_slice() else {
        return Some(Decision::Reply(error_to(query, ResponseCode::FormErr)));
    };
    let qname = question.name();
    let qtype = question.query_type();
    if !zone.zone_of(qname) {
        if qtype == RecordType::PTR {
            if let Some(target) = index.and_then(|i| i.ptrs.get(qname)) {
                let mut reply = response_to(query);
                reply.metadata.authoritative = true;
                let record = Record::from_rdata(
                    qname.clone(),
                    index.map_or(0, |i| i.ttl_s),
                    RData::PTR(PTR(target.clone())),
                );
                reply.answers.push(record);
                return Some(Decision::Reply(reply));
            }
        }
        return Some(Decision::Forward);
    }
    if question.query_class() != DNSClass::IN && question.query_class() != DNSClass::ANY {
        return Some(Decision::Reply(error_to(query, ResponseCode::Refused)));
    }
    let Some(index) = index else {
        return Some(Decision::Reply(error_to(query, ResponseCode::ServFail)));
    };
    Some(index.answer_in_zone(qname, qtype, response_to(query)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use serde_json::json;

    fn zone() -> Name {
        parse_zone("Cluster.Local").expect("zone")
    }

    fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).expect("slice")
    }

    fn ask(index: &Index, name: &str, qtype: RecordType) -> Message {
        let mut query = Message::query();
        query.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
        match answer(&index.zone, Some(index), &query).expect("a query") {
            Decision::Reply(m) => m,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn a_records(m: &Message) -> Vec<Ipv4Addr> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    fn sample() -> Index {
        let services = [
            service(json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"],
                         "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}})),
            service(json!({"metadata": {"name": "db", "namespace": "default"},
                "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})),
            service(json!({"metadata": {"name": "empty", "namespace": "default"},
                "spec": {"clusterIP": "None"}})),
            service(json!({"metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "db.example.org"}})),
            service(json!({"metadata": {"name": "alias", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}})),
        ];
        let slices = [slice(json!({
        "metadata": {"name": "db-1", "namespace": "default", "labels": {SERVICE_NAME_LABEL: "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5433, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.1.0.1"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.1.0.2"]},
            {"addresses": ["10.1.0.3"], "hostname": "db-2", "conditions": {"ready": false}},
        ]}))];
        Index::build(&zone(), 5, 7, &services, &slices)
    }

    #[test]
    fn cluster_ip_services_have_a_srv_and_ptr_records() {
        let index = sample();
        let m = ask(&index, "WEB.default.svc.cluster.local.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 96, 0, 5)]);
        assert_eq!(m.answers[0].ttl, 5);

        let m = ask(&index, "_dns._udp.web.default.svc.cluster.local.", RecordType::SRV);
        let RData::SRV(srv) = &m.answers[0].data else {
            panic!("not an SRV: {m:?}");
        };
        assert_eq!(
            (srv.port, srv.target.to_ascii().as_str()),
            (53, "web.default.svc.cluster.local.")
        );
        assert_eq!(m.additionals.len(), 1);

        let mut query = Message::query();
        query.add_query(Query::query(Name::from(Ipv4Addr::new(10, 96, 0, 5)), RecordType::PTR));
        let Some(Decision::Reply(m)) = answer(&index.zone, Some(&index), &query) else {
            panic!("no PTR answer");
        };
        let RData::PTR(ptr) = &m.answers[0].data else {
            panic!("not a PTR: {m:?}");
        };
        assert_eq!(ptr.0.to_ascii(), "web.default.svc.cluster.local.");
    }

    #[test]
    fn headless_services_answer_ready_endpoints_by_service_and_hostname() {
        let index = sample();
        let m = ask(&index, "db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(
            a_records(&m),
            vec![Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 0, 2)]
        );
        let m = ask(&index, "db-0.db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 1, 0, 1)]);
        // Without a hostname: the dashed address names it.
        let m = ask(&index, "10-1-0-2.db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 1, 0, 2)]);
        // Not ready: no name.
        let m = ask(&index, "db-2.db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let m = ask(&index, "_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV);
        let mut targets: Vec<(u16, String)> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some((s.port, s.target.to_ascii())),
                _ => None,
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            vec![
                (5433, "10-1-0-2.db.default.svc.cluster.local.".to_owned()),
                (5433, "db-0.db.default.svc.cluster.local.".to_owned())
            ]
        );
        assert_eq!(m.additionals.len(), 2);
        // No ready endpoint: NXDOMAIN, as the specification says.
        let m = ask(&index, "empty.default.svc.cluster.local.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn cnames_empty_non_terminals_pods_and_missing_names() {
        let index = sample();
        let mut query = Message::query();
        query.add_query(Query::query(
            Name::from_ascii("ext.default.svc.cluster.local.").expect("name"),
            RecordType::A,
        ));
        match answer(&index.zone, Some(&index), &query) {
            Some(Decision::Chase { reply, target, .. }) => {
                assert_eq!(target.to_ascii(), "db.example.org.");
                assert_eq!(reply.answers.len(), 1);
            }
            other => panic!("expected a chase: {other:?}"),
        }
        // An in-zone target is followed here.
        let m = ask(&index, "alias.default.svc.cluster.local.", RecordType::A);
        assert_eq!(m.answers.len(), 2);
        assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 96, 0, 5)]);

        for ent in [
            "default.svc.cluster.local.",
            "_udp.web.default.svc.cluster.local.",
            "svc.cluster.local.",
        ] {
            let m = ask(&index, ent, RecordType::A);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{ent}");
            assert!(m.answers.is_empty(), "{ent}");
            assert_eq!(m.authorities[0].record_type(), RecordType::SOA, "{ent}");
        }
        let m = ask(&index, "web.default.svc.cluster.local.", RecordType::AAAA);
        assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 0));

        let m = ask(&index, "10-244-1-5.any.pod.cluster.local.", RecordType::A);
        assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 244, 1, 5)]);
        let m = ask(&index, "10-244-1-256.any.pod.cluster.local.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);

        let m = ask(&index, "nope.default.svc.cluster.local.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(m.authorities[0].ttl, 5);

        let m = ask(&index, "dns-version.cluster.local.", RecordType::TXT);
        assert_eq!(m.answers.len(), 1);
    }

    #[test]
    fn out_of_zone_is_forwarded_and_in_zone_fails_before_the_first_list() {
        let mut query = Message::query();
        query.add_query(Query::query(
            Name::from_ascii("example.org.").expect("name"),
            RecordType::A,
        ));
        assert!(matches!(answer(&zone(), None, &query), Some(Decision::Forward)));
        let mut query = Message::query();
        query.add_query(Query::query(
            Name::from_ascii("web.default.svc.cluster.local.").expect("name"),
            RecordType::A,
        ));
        let Some(Decision::Reply(m)) = answer(&zone(), None, &query) else {
            panic!("no reply");
        };
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    }
}
