//! The node proxy (kube-proxy's job, `capstan proxy`): makes Services reachable.
//!
//! - [`forward`]: listeners and TCP/UDP forwarding to backends, kept in sync with a
//!   desired table.
//! - [`table`]: that table, from each Service and its endpoints.
//! - [`run_mesh`]: the loop that keeps the forwarder on the table, fed by the mesh API's
//!   `ProxyConfig` stream: every Service with its endpoints as the API server's proxy
//!   hub chose them (ready ones; serving and terminating ones for ports without a ready
//!   one; a selectorless Service's manual Endpoints), a snapshot, its end marker, then
//!   every change. One stream per proxy, however many Services, and the join of
//!   Services with their slices and Endpoints is done once in the API server rather
//!   than in every proxy.
//!
//! [`run_mesh`]'s design:
//!
//! - **Nothing partial is ever served.** A stream's snapshot is gathered apart and
//!   replaces the table whole only at `SNAPSHOT_END`; until then the forwarder goes on
//!   with what it had (nothing, at the first start). After it, each change updates the
//!   held Services and the table is computed again and applied.
//! - **Bursts cost a round, not one per change**: after a message, those already
//!   received are taken too (at most [`BATCH_UPDATES_MAX`]) before the table is applied.
//! - **The stream failing** (the API server restarting, this proxy too slow and cut off,
//!   the network) changes nothing being served: the proxy reconnects with back-off
//!   (200 ms doubling to 7 s, back to 200 ms once a stream has delivered its snapshot)
//!   and the new stream's snapshot replaces the table when it is complete, so Services
//!   deleted while it was away go then.
//! - **Bounds**: [`SERVICES_MAX`] Services held (more are ignored, with an error in the
//!   log), [`MESSAGE_BYTES_MAX`] per message (one Service with its endpoints), and the
//!   forwarder's own per-rule limits.
//!
//! - **Metrics**: a forwarder made [`forward::Forwarder::with_metrics`] counts each
//!   Service port's traffic (see [`crate::metrics::ProxyMetrics`]); its series go when the
//!   Service (or the port) leaves the table, so the labels are bounded by
//!   [`SERVICES_MAX`] Services' ports.
//!
//! Left out: resuming a stream from a position (the API does not offer it: a reconnect
//! is a new snapshot), preferring endpoints on this node (one node serves every endpoint
//! as local), a health endpoint of the proxy itself (its readiness is [`run_mesh`]'s
//! `on_synced`: `capstan proxy` prints its ready line then).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use capstan_proto::mesh::mesh_client::MeshClient;
use capstan_proto::mesh::proxy_update::Type as UpdateType;
use capstan_proto::mesh::{ProxyConfigRequest, ProxyUpdate};
use futures::FutureExt;
use tonic::transport::Channel;

pub mod forward;
pub mod table;

/// Services held at most; a new one beyond it is ignored (and logged).
pub const SERVICES_MAX: usize = 100_000;
/// The largest `ProxyConfig` message accepted: one Service with its endpoints (tens of
/// thousands of them fit).
pub const MESSAGE_BYTES_MAX: usize = 16 << 20;
/// Updates taken from the stream before the table is applied.
pub const BATCH_UPDATES_MAX: usize = 1_024;
/// Reconnecting the stream: first and longest pause.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(7);

/// Keeps `forwarder` serving every Service as the mesh API's `ProxyConfig` stream says,
/// on node `node_name` whose address is `node_ip` (NodePorts listen there). Reconnects
/// whenever the stream fails; runs until dropped.
///
/// `on_synced` runs once, when the first snapshot's table is being served: the proxy is
/// ready then, not when it starts, so whoever waits for it can rely on every Service
/// of that snapshot having its listeners.
pub async fn run_mesh(
    mesh: MeshClient<Channel>,
    node_name: &str,
    node_ip: IpAddr,
    forwarder: &forward::Forwarder,
    on_synced: impl FnOnce(),
) {
    let mut mesh = mesh.max_decoding_message_size(MESSAGE_BYTES_MAX);
    let mut retry = RETRY_FIRST;
    let mut on_synced = Some(on_synced);
    loop {
        let mut synced = false;
        let why = follow(&mut mesh, node_name, node_ip, forwarder, &mut synced, &mut on_synced).await;
        if synced {
            retry = RETRY_FIRST;
        }
        tracing::warn!(
            node = node_name,
            reason = %why,
            retry_ms = retry.as_millis() as u64,
            "the proxy configuration stream failed; serving the current table and reconnecting"
        );
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// Follows one `ProxyConfig` stream until it fails; returns why. Sets `synced` once its
/// snapshot has been applied, and then runs `on_synced` if it has not run yet.
async fn follow(
    mesh: &mut MeshClient<Channel>,
    node: &str,
    node_ip: IpAddr,
    forwarder: &forward::Forwarder,
    synced: &mut bool,
    on_synced: &mut Option<impl FnOnce()>,
) -> String {
    let request = ProxyConfigRequest {
        node_name: node.to_owned(),
    };
    let mut stream = match mesh.proxy_config(request).await {
        Ok(r) => r.into_inner(),
        Err(s) => return format!("{:?}: {}", s.code(), s.message()),
    };
    // This stream's Services; the forwarder keeps the previous stream's table until
    // this one's snapshot is complete.
    let mut services: BTreeMap<(String, String), table::ServiceConfig> = BTreeMap::new();
    loop {
        // Wait for one message, then take those already here (`message` is cancel-safe:
        // a message not ready stays in the stream).
        let mut end = None;
        let mut dirty = false;
        for taken in 0..BATCH_UPDATES_MAX {
            let next = if taken == 0 {
                Some(stream.message().await)
            } else {
                stream.message().now_or_never()
            };
            match next {
                None => break,
                Some(Ok(Some(update))) => {
                    if take(&mut services, update, node) {
                        *synced = true;
                        tracing::info!(node, services = services.len(), "the node proxy has a complete table");
                    }
                    dirty = true;
                }
                Some(Ok(None)) => {
                    end = Some("the server ended the stream".to_owned());
                    break;
                }
                Some(Err(s)) => {
                    end = Some(format!("{:?}: {}", s.code(), s.message()));
                    break;
                }
            }
        }
        // Complete messages count even when the stream then failed.
        if dirty && *synced {
            let rules = table::labelled_service_rules(services.values(), node_ip);
            let count = rules.len();
            for (listen, protocol, error) in forwarder.apply_labelled(rules) {
                tracing::warn!(%listen, %protocol, %error, "a Service address could not be served");
            }
            tracing::debug!(rules = count, "applied the forwarding table");
            if let Some(ready) = on_synced.take() {
                ready();
            }
        }
        if let Some(why) = end {
            return why;
        }
    }
}

/// Takes one update into `services`; true at the end of the snapshot.
fn take(services: &mut BTreeMap<(String, String), table::ServiceConfig>, update: ProxyUpdate, node: &str) -> bool {
    let kind = update.r#type();
    let Some(service) = update.service else {
        return kind == UpdateType::SnapshotEnd;
    };
    let key = (service.namespace.clone(), service.name.clone());
    match kind {
        UpdateType::Upsert => match table::ServiceConfig::from_mesh(&service) {
            Ok(config) => {
                if services.len() >= SERVICES_MAX && !services.contains_key(&key) {
                    tracing::error!(node, namespace = %key.0, name = %key.1, max = SERVICES_MAX, "too many Services: this one is not served");
                    return false;
                }
                services.insert(key, config);
            }
            Err(e) => {
                // Serving its previous version would be serving what the API no longer says.
                tracing::error!(node, error = %e, "a Service could not be decoded; it is not served");
                services.remove(&key);
            }
        },
        UpdateType::Delete => {
            services.remove(&key);
        }
        UpdateType::SnapshotEnd => return true,
        UpdateType::Unspecified => {}
    }
    false
}
