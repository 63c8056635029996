//! Service ClusterIPs and NodePorts, allocated without duplicates across every apiserver
//! replica: each allocated IP or port is a key in the store, written in the same
//! transaction as the Service and only if absent, so two replicas can never hand out the
//! same one (the loser's transaction fails and it picks again).

use bytes::Bytes;
use serde_json::{json, Value};

use crate::error::{ApiError, Cause, Result};
use crate::object;
use crate::resources::ResourceType;
use crate::storage::Storage;

const IP_KEYS: &str = "/registry/ranges/serviceips/";
const PORT_KEYS: &str = "/registry/ranges/servicenodeports/";
/// Random picks before a range counts as full.
const PICKS_MAX: usize = 64;

/// Where Service addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRanges {
    /// The service CIDR's first address and prefix length.
    pub base: u32,
    pub prefix_len: u8,
    pub node_ports: (u16, u16),
}

impl Default for ServiceRanges {
    /// `127.64.0.0/16`: inside loopback, so that a one-machine cluster reaches its
    /// Services without routes; NodePorts 30000-32767 as upstream.
    fn default() -> Self {
        ServiceRanges {
            base: u32::from_be_bytes([127, 64, 0, 0]),
            prefix_len: 16,
            node_ports: (30000, 32767),
        }
    }
}

impl ServiceRanges {
    /// Parses `a.b.c.d/n` (n from 8 to 30).
    pub fn parse_cidr(s: &str) -> std::result::Result<ServiceRanges, String> {
        let (ip, len) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a CIDR"))?;
        let ip: std::net::Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let len: u8 = len.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if !(8..=30).contains(&len) {
            return Err(format!("{s:?}: the prefix length must be from 8 to 30"));
        }
        let mask = u32::MAX << (32 - len);
        Ok(ServiceRanges {
            base: u32::from(ip) & mask,
            prefix_len: len,
            ..ServiceRanges::default()
        })
    }

    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix_len)
    }

    fn contains(&self, ip: std::net::Ipv4Addr) -> bool {
        u32::from(ip) & (u32::MAX << (32 - self.prefix_len)) == self.base
    }
}

fn invalid(name: &str, field: &str, message: String) -> ApiError {
    ApiError::Invalid {
        kind: "Service".into(),
        group: String::new(),
        name: name.to_string(),
        message: format!("Service \"{name}\" is invalid: {field}: {message}"),
        causes: vec![Cause {
            reason: "FieldValueInvalid".into(),
            message,
            field: field.to_string(),
        }],
    }
}

async fn taken(storage: &Storage, key: &str) -> Result<bool> {
    Ok(storage.get(key, false).await?.0.is_some())
}

/// Allocates the Service's ClusterIP and NodePorts (those not given), writing them into
/// it; returns the allocation keys to create with it.
pub async fn allocate(storage: &Storage, ranges: &ServiceRanges, svc: &mut Value) -> Result<Vec<(String, Bytes)>> {
    let name = object::name(svc).to_string();
    let owner = Bytes::from(format!("{}/{}", object::meta_str(svc, "namespace").unwrap_or(""), name));
    let mut keys = Vec::new();
    let ty = svc["spec"]["type"].as_str().unwrap_or("ClusterIP").to_string();
    if ty == "ExternalName" {
        return Ok(keys);
    }
    let given = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    if given != "None" {
        let ip = if given.is_empty() {
            let mut picked = None;
            for _ in 0..PICKS_MAX {
                // Not the network address, not the broadcast one.
                let off = 1 + rand::random::<u32>() % (ranges.size() - 2);
                let ip = std::net::Ipv4Addr::from(ranges.base + off);
                if !taken(storage, &format!("{IP_KEYS}{ip}")).await? {
                    picked = Some(ip);
                    break;
                }
            }
            picked.ok_or_else(|| {
                invalid(
                    &name,
                    "spec.clusterIPs",
                    "Internal error: failed to allocate a serviceIP: range is full".into(),
                )
            })?
        } else {
            let ip: std::net::Ipv4Addr = given.parse().map_err(|_| {
                invalid(
                    &name,
                    "spec.clusterIPs",
                    format!("Invalid value: [\"{given}\"]: must be a valid IP address"),
                )
            })?;
            if !ranges.contains(ip) {
                return Err(invalid(
                    &name,
                    "spec.clusterIPs",
                    format!(
                        "Invalid value: [\"{given}\"]: failed to allocate IP {given}: the provided IP ({given}) is not in the valid range"
                    ),
                ));
            }
            if taken(storage, &format!("{IP_KEYS}{ip}")).await? {
                return Err(invalid(
                    &name,
                    "spec.clusterIPs",
                    format!(
                        "Invalid value: [\"{given}\"]: failed to allocate IP {given}: provided IP is already allocated"
                    ),
                ));
            }
            ip
        };
        svc["spec"]["clusterIP"] = json!(ip.to_string());
        svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
        keys.push((format!("{IP_KEYS}{ip}"), owner.clone()));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        let (lo, hi) = ranges.node_ports;
        let mut used: Vec<i64> = Vec::new();
        let n = svc["spec"]["ports"].as_array().map_or(0, Vec::len);
        for i in 0..n {
            let port = svc["spec"]["ports"][i]["nodePort"].as_i64().unwrap_or(0);
            let port = if port == 0 {
                let mut picked = None;
                for _ in 0..PICKS_MAX {
                    let p = i64::from(lo) + i64::from(rand::random::<u16>() % (hi - lo + 1));
                    if !used.contains(&p) && !taken(storage, &format!("{PORT_KEYS}{p}")).await? {
                        picked = Some(p);
                        break;
                    }
                }
                picked.ok_or_else(|| {
                    invalid(
                        &name,
                        &format!("spec.ports[{i}].nodePort"),
                        "Internal error: failed to allocate a nodePort: range is full".into(),
                    )
                })?
            } else {
                if !(i64::from(lo)..=i64::from(hi)).contains(&port) {
                    return Err(invalid(
                        &name,
                        &format!("spec.ports[{i}].nodePort"),
                        format!("Invalid value: {port}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                    ));
                }
                if used.contains(&port) || taken(storage, &format!("{PORT_KEYS}{port}")).await? {
                    return Err(invalid(
                        &name,
                        &format!("spec.ports[{i}].nodePort"),
                        format!("Invalid value: {port}: provided port is already allocated"),
                    ));
                }
                port
            };
            used.push(port);
            svc["spec"]["ports"][i]["nodePort"] = json!(port);
            keys.push((format!("{PORT_KEYS}{port}"), owner.clone()));
        }
    }
    Ok(keys)
}

/// The allocation keys a deleted object frees (a Service's IP and NodePorts).
pub fn release_keys(_ranges: &ServiceRanges, rt: &ResourceType, obj: &Value) -> Vec<String> {
    if rt.kind != "Service" {
        return Vec::new();
    }
    let mut keys = Vec::new();
    if let Some(ip) = obj["spec"]["clusterIP"]
        .as_str()
        .filter(|ip| !ip.is_empty() && *ip != "None")
    {
        keys.push(format!("{IP_KEYS}{ip}"));
    }
    for p in obj["spec"]["ports"].as_array().into_iter().flatten() {
        if let Some(np) = p["nodePort"].as_i64().filter(|n| *n > 0) {
            keys.push(format!("{PORT_KEYS}{np}"));
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_bound() {
        let r = ServiceRanges::parse_cidr("10.96.0.0/12").expect("cidr");
        assert_eq!(r.base, u32::from_be_bytes([10, 96, 0, 0]));
        assert!(r.contains("10.100.1.2".parse().expect("ip")));
        assert!(!r.contains("10.112.0.1".parse().expect("ip")));
        assert!(ServiceRanges::parse_cidr("10.0.0.0/31").is_err());
        assert!(ServiceRanges::parse_cidr("nope").is_err());
        let d = ServiceRanges::default();
        assert!(d.contains("127.64.3.4".parse().expect("ip")));
    }

    #[test]
    fn released_keys_match_what_was_allocated() {
        let rt = ResourceType::by_kind("Service").expect("services");
        let svc = json!({"spec": {"clusterIP": "127.64.0.9", "ports": [{"port": 80, "nodePort": 30001}]}});
        assert_eq!(
            release_keys(&ServiceRanges::default(), rt, &svc),
            vec![format!("{IP_KEYS}127.64.0.9"), format!("{PORT_KEYS}30001")]
        );
        let headless = json!({"spec": {"clusterIP": "None"}});
        assert!(release_keys(&ServiceRanges::default(), rt, &headless).is_empty());
    }
}
