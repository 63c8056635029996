//! `capstan controller-manager`: the controllers, run by whichever replica holds the
//! `kube-system/kube-controller-manager` Lease (as upstream's). The controllers run only
//! while it leads; losing the Lease drops them, and it campaigns again.
//!
//! Controllers so far: [`serviceaccount`](crate::serviceaccount),
//! [`replicaset`](crate::replicaset), [`deployment`](crate::deployment),
//! [`endpoints`](crate::endpoints) (Endpoints and EndpointSlices),
//! [`nodeipam`](crate::nodeipam) and the garbage collector, [`gc`](crate::gc).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::Client;

use crate::error::{AgentError, Result};
use crate::leader::{LeaderElector, LeaseTiming};
use crate::nodeipam::{self, Blocks};
use crate::{deployment, endpoints, gc, replicaset, serviceaccount};

/// Settings, named after upstream's `--leader-elect*` flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// Elect a leader among the replicas (`--leader-elect`); without it this replica
    /// always acts (run only one then).
    pub leader_elect: bool,
    pub timing: LeaseTiming,
    pub lease_namespace: String,
    pub lease_name: String,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// Give nodes pod CIDRs from `cluster_cidr`, blocks of `/node_cidr_mask_size`
    /// (`--allocate-node-cidrs`; None: do not).
    pub node_cidrs: Option<Blocks>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            leader_elect: true,
            timing: LeaseTiming::default(),
            lease_namespace: "kube-system".into(),
            lease_name: "kube-controller-manager".into(),
            identity: default_identity(),
            node_cidrs: None,
        }
    }
}

/// `<hostname>_<pid>_<start time>`: unique among replicas, readable in the Lease.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "capstan".into());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos();
    format!("{host}_{}_{started:x}", std::process::id())
}

/// Every controller, concurrently, until dropped.
async fn controllers(client: Client, node_cidrs: Option<Blocks>) {
    let ipam = async {
        if let Some(blocks) = node_cidrs {
            nodeipam::run(client.clone(), blocks).await;
        }
    };
    tokio::join!(
        serviceaccount::run(client.clone()),
        replicaset::run(client.clone()),
        deployment::run(client.clone()),
        endpoints::run(client.clone()),
        gc::run(client.clone()),
        ipam
    );
}

/// Runs the controller-manager until its future is dropped.
pub async fn run(client: Client, options: Options) -> Result<()> {
    if !options.leader_elect {
        controllers(client, options.node_cidrs).await;
        return Ok(());
    }
    if options.lease_name.is_empty() || options.lease_namespace.is_empty() {
        return Err(AgentError::Config(
            "the leader election lease needs a name and a namespace".into(),
        ));
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), &options.lease_namespace);
    let mut elector = LeaderElector::new(leases, &options.lease_name, &options.identity, options.timing)?;
    elector.run(|| controllers(client.clone(), options.node_cidrs)).await;
    Ok(())
}
