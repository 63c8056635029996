//! Node IPAM: every node gets a `spec.podCIDR` (and `podCIDRs`) of its own from the
//! cluster CIDR, as upstream's range allocator (`--allocate-node-cidrs`) hands them out.
//!
//! The cluster CIDR is cut into blocks of the node mask size (/24 by default); a node
//! without one gets the lowest free block. Allocation runs under one lock and starts from
//! a consistent list of the nodes, so two nodes never get the same block even when their
//! reconciles run at once (and only the leading controller-manager allocates). A node's
//! block is free again once the node is deleted. A node that already has a podCIDR keeps
//! it (upstream treats it as immutable), and its block counts as taken.
//!
//! The default cluster CIDR, `127.128.0.0/9`, lies inside loopback, beside the Service
//! range (`127.64.0.0/16`), so that pod addresses work on one machine.
//!
//! Left out: IPv6 and dual-stack (a second CIDR), and the `CIDRNotAvailable` event.

use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::error::{AgentError, Result};
use crate::runtime::{self, retry_later, Backoff};

pub const CLUSTER_CIDR_DEFAULT: &str = "127.128.0.0/9";
pub const NODE_MASK_SIZE_DEFAULT: u8 = 24;

/// An IPv4 network: its first address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: u32,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = AgentError;
    fn from_str(s: &str) -> Result<Cidr> {
        let bad = || AgentError::Config(format!("invalid CIDR {s:?}: expected an IPv4 network like 10.0.0.0/16"));
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let base = u32::from(addr);
        if base & !mask(prefix) != 0 {
            return Err(AgentError::Config(format!("invalid CIDR {s:?}: host bits are set")));
        }
        Ok(Cidr { base, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// The blocks of one size in a cluster CIDR.
#[derive(Debug, Clone, Copy)]
pub struct Blocks {
    cluster: Cidr,
    node_prefix: u8,
}

impl Blocks {
    pub fn new(cluster: Cidr, node_prefix: u8) -> Result<Blocks> {
        if node_prefix < cluster.prefix || node_prefix > 30 {
            return Err(AgentError::Config(format!(
                "the node mask size /{node_prefix} must lie between the cluster CIDR's /{} and /30",
                cluster.prefix
            )));
        }
        Ok(Blocks { cluster, node_prefix })
    }

    /// How many blocks there are.
    pub fn count(&self) -> u64 {
        1u64 << (self.node_prefix - self.cluster.prefix)
    }

    /// Block number `i`.
    pub fn block(&self, i: u64) -> Option<Cidr> {
        if i >= self.count() {
            return None;
        }
        let offset = u32::try_from(i << (32 - u32::from(self.node_prefix))).ok()?;
        Some(Cidr {
            base: self.cluster.base + offset,
            prefix: self.node_prefix,
        })
    }

    /// The number of `cidr`'s block, if it is one of these blocks.
    pub fn index(&self, cidr: &Cidr) -> Option<u64> {
        if cidr.prefix != self.node_prefix || cidr.base & mask(self.cluster.prefix) != self.cluster.base {
            return None;
        }
        Some(u64::from(
            (cidr.base - self.cluster.base) >> (32 - u32::from(self.node_prefix)),
        ))
    }

    /// The lowest block not in `taken`.
    pub fn lowest_free(&self, taken: &std::collections::BTreeSet<u64>) -> Option<Cidr> {
        let mut expected = 0;
        for &t in taken {
            if t > expected {
                break;
            }
            expected = t + 1;
        }
        self.block(expected)
    }
}

struct Context {
    client: Client,
    blocks: Blocks,
    /// Held across list-then-patch: one allocation at a time.
    allocating: tokio::sync::Mutex<()>,
    backoff: Backoff,
}

/// Runs the allocator until its future is dropped.
pub async fn run(client: Client, blocks: Blocks) {
    let nodes: Api<Node> = Api::all(client.clone());
    let context = Arc::new(Context {
        client,
        blocks,
        allocating: tokio::sync::Mutex::new(()),
        backoff: Backoff::default(),
    });
    runtime::Queued::new(nodes, watcher::Config::default())
        .run("nodeipam", reconcile, error_policy, context)
        .await;
}

fn pod_cidr(node: &Node) -> Option<&str> {
    node.spec.as_ref()?.pod_cidr.as_deref().filter(|c| !c.is_empty())
}

async fn reconcile(node: Arc<Node>, context: Arc<Context>) -> Result<Action> {
    let name = node.name_any();
    if pod_cidr(&node).is_some() || node.metadata.deletion_timestamp.is_some() {
        context.backoff.succeeded(&name);
        return Ok(Action::await_change());
    }
    let nodes: Api<Node> = Api::all(context.client.clone());
    let _one_at_a_time = context.allocating.lock().await;
    let all = nodes.list(&ListParams::default()).await?.items;
    if all.iter().any(|n| n.name_any() == name && pod_cidr(n).is_some()) {
        return Ok(Action::await_change());
    }
    let taken: std::collections::BTreeSet<u64> = all
        .iter()
        .filter_map(pod_cidr)
        .filter_map(|c| c.parse::<Cidr>().ok())
        .filter_map(|c| context.blocks.index(&c))
        .collect();
    let Some(cidr) = context.blocks.lowest_free(&taken) else {
        return Err(AgentError::Config(format!(
            "no free /{} left in the cluster CIDR for node {name}",
            context.blocks.node_prefix
        )));
    };
    let cidr = cidr.to_string();
    let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    match nodes.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => tracing::info!(node = %name, %cidr, "allocated the node's pod CIDR"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    context.backoff.succeeded(&name);
    Ok(Action::await_change())
}

fn error_policy(node: Arc<Node>, error: &AgentError, context: Arc<Context>) -> Action {
    retry_later(&context.backoff, "nodeipam", &node.name_any(), error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn cidrs_parse_and_print() {
        let c: Cidr = "127.128.0.0/9".parse().expect("cidr");
        assert_eq!(c.to_string(), "127.128.0.0/9");
        assert!("127.128.0.1/9".parse::<Cidr>().is_err(), "host bits");
        assert!("127.128.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn blocks_are_numbered_and_the_lowest_free_one_is_handed_out() {
        let b = Blocks::new("127.128.0.0/9".parse().expect("cidr"), 24).expect("blocks");
        assert_eq!(b.count(), 32_768);
        assert_eq!(b.block(0).map(|c| c.to_string()).as_deref(), Some("127.128.0.0/24"));
        assert_eq!(b.block(300).map(|c| c.to_string()).as_deref(), Some("127.129.44.0/24"));
        assert_eq!(b.block(32_768), None);
        let c: Cidr = "127.129.44.0/24".parse().expect("cidr");
        assert_eq!(b.index(&c), Some(300));
        assert_eq!(b.index(&"10.0.0.0/24".parse().expect("cidr")), None, "outside");
        assert_eq!(b.index(&"127.128.0.0/25".parse().expect("cidr")), None, "another size");
        let taken: BTreeSet<u64> = [0, 1, 3].into();
        assert_eq!(
            b.lowest_free(&taken).map(|c| c.to_string()).as_deref(),
            Some("127.128.2.0/24")
        );
        let small = Blocks::new("10.0.0.0/23".parse().expect("cidr"), 24).expect("blocks");
        assert_eq!(small.lowest_free(&[0, 1].into()), None, "exhausted");
        assert!(Blocks::new("10.0.0.0/24".parse().expect("cidr"), 16).is_err());
    }
}
