//! `capstan controller-manager`: the controllers, run by whichever replica holds the
//! `kube-system/kube-controller-manager` Lease (as upstream's). The controllers run only
//! while it leads, with a client fenced by the Lease ([`crate::leader`]); losing the
//! Lease drops them, and it campaigns again.
//!
//! Controllers so far: [`serviceaccount`](crate::serviceaccount),
//! [`replicaset`](crate::replicaset), [`deployment`](crate::deployment),
//! [`endpoints`](crate::endpoints) (Endpoints and EndpointSlices),
//! [`nodeipam`](crate::nodeipam), [`nodelifecycle`](crate::nodelifecycle) (node health,
//! NoExecute taint eviction and the pods of deleted nodes), the garbage collector,
//! [`gc`](crate::gc), and the root CA publisher, [`rootca`](crate::rootca).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::Client;

use crate::error::{AgentError, Result};
use crate::leader::{fenced_client, Fence, LeaderElector, LeaseTiming};
use crate::metrics::ControllerMetrics;
use crate::nodeipam::{self, Blocks};
use crate::nodelifecycle;
use crate::{deployment, endpoints, gc, replicaset, rootca, serviceaccount};

/// How the replicas of a component elect the one that acts, named after upstream's
/// `--leader-elect*` flags.
#[derive(Debug, Clone)]
pub struct Election {
    /// Elect a leader among the replicas (`--leader-elect`); without it this replica
    /// always acts (run only one then).
    pub enabled: bool,
    pub timing: LeaseTiming,
    pub lease_namespace: String,
    pub lease_name: String,
    /// This replica's identity in the Lease.
    pub identity: String,
}

impl Default for Election {
    fn default() -> Election {
        Election {
            enabled: true,
            timing: LeaseTiming::default(),
            lease_namespace: "kube-system".into(),
            lease_name: "kube-controller-manager".into(),
            identity: default_identity(),
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

/// Every controller, concurrently, until dropped; their reconciles recorded in `metrics`.
async fn controllers(client: Client, options: Options, metrics: Option<ControllerMetrics>) {
    crate::runtime::with_metrics(metrics, all_controllers(client, options)).await;
}

async fn all_controllers(client: Client, options: Options) {
    let Options {
        node_cidrs,
        lifecycle,
        root_ca_pem,
    } = options;
    let ipam = async {
        if let Some(blocks) = node_cidrs {
            nodeipam::run(client.clone(), blocks).await;
        }
    };
    let root_ca = async {
        if let Some(pem) = root_ca_pem {
            rootca::run(client.clone(), pem).await;
        }
    };
    tokio::join!(
        serviceaccount::run(client.clone()),
        replicaset::run(client.clone()),
        deployment::run(client.clone()),
        endpoints::run(client.clone()),
        gc::run(client.clone()),
        crate::namespace::run(client.clone()),
        nodelifecycle::run(client.clone(), lifecycle),
        ipam,
        root_ca
    );
}

/// Runs `work(client)` whenever this replica leads (always, if election is off), until
/// its future is dropped; `work`'s future is dropped when the lead is lost. `client`
/// is `client` fenced for that term ([`crate::leader::fenced_client`]): its writes are
/// refused, unsent, unless this replica renewed the Lease less than the renew deadline
/// ago, and recorded (target `capstan::acted`). The Lease itself is kept with the plain
/// `client`.
pub async fn run_elected<F, Fut>(client: Client, election: &Election, work: F) -> Result<()>
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut work = work;
    if !election.enabled {
        // Nothing to fence, but the writes are still recorded as this replica's.
        work(fenced_client(client, Fence::open(&election.identity))).await;
        return Ok(());
    }
    if election.lease_name.is_empty() || election.lease_namespace.is_empty() {
        return Err(AgentError::Config(
            "the leader election lease needs a name and a namespace".into(),
        ));
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), &election.lease_namespace);
    let mut elector = LeaderElector::new(leases, &election.lease_name, &election.identity, election.timing)?;
    elector.lead(|fence| work(fenced_client(client.clone(), fence))).await;
    Ok(())
}

/// What the controllers are given beyond the API.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Turns node IPAM on (`--allocate-node-cidrs`).
    pub node_cidrs: Option<Blocks>,
    /// Configures the node lifecycle controller.
    pub lifecycle: nodelifecycle::Config,
    /// The cluster CA (PEM) the root CA publisher puts in every namespace
    /// (`--root-ca-file`); None turns it off.
    pub root_ca_pem: Option<String>,
}

/// Runs the controller-manager until its future is dropped.
pub async fn run(client: Client, election: Election, options: Options) -> Result<()> {
    run_with_metrics(client, election, options, None).await
}

/// [`run`], with the controllers' reconciles recorded in `metrics` (see
/// [`crate::metrics`]: the controllers that run on kube-rs's `Controller`).
pub async fn run_with_metrics(
    client: Client,
    election: Election,
    options: Options,
    metrics: Option<ControllerMetrics>,
) -> Result<()> {
    options.lifecycle.check()?;
    run_elected(client, &election, |fenced| {
        controllers(fenced, options.clone(), metrics.clone())
    })
    .await
}
