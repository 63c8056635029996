//! The node proxy (kube-proxy's job): makes Services reachable. Being built in pieces
//! (issue 6); so far:
//!
//! - [`forward`]: listeners and TCP/UDP forwarding to backends, kept in sync with a
//!   desired table.
//! - [`table`]: that table, from Services, EndpointSlices and manual Endpoints.
//! - [`run`]: the loop that keeps the forwarder on the table: reflectors of the three
//!   kinds over the Kubernetes API; after any change the whole table is computed again
//!   and applied (one round at a time, so a burst of changes costs a round or two, not
//!   one per change). Nothing is applied before all three have listed once, so a
//!   restart never serves a table missing the endpoints it has not read yet.

use std::net::IpAddr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::Notify;

pub mod forward;
pub mod table;

/// Mirrors every object of kind `K` into a store, waking `changed` after each event.
fn mirror<K>(client: &Client, config: watcher::Config, changed: Arc<Notify>) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let api: Api<K> = Api::all(client.clone());
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, config).default_backoff().reflect(writer));
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                // Retried with backoff (default_backoff): the store keeps what it had.
                Err(e) => tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying"),
            }
        }
    });
    (store, task)
}

/// Keeps `forwarder` serving every Service as the API says, on the node whose address
/// is `node_ip` (NodePorts listen there). Runs until dropped.
pub async fn run(client: Client, node_ip: IpAddr, forwarder: &forward::Forwarder) {
    let changed = Arc::new(Notify::new());
    let (services, s) = mirror::<Service>(&client, watcher::Config::default(), changed.clone());
    let (slices, e) = mirror::<EndpointSlice>(
        &client,
        watcher::Config::default().labels(table::SERVICE_NAME_LABEL),
        changed.clone(),
    );
    let (endpoints, p) = mirror::<Endpoints>(&client, watcher::Config::default(), changed.clone());
    // The watch tasks end with this future.
    struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            for t in &self.0 {
                t.abort();
            }
        }
    }
    let _tasks = AbortOnDrop(vec![s, e, p]);
    for (kind, ready) in [
        ("services", services.wait_until_ready().await),
        ("endpointslices", slices.wait_until_ready().await),
        ("endpoints", endpoints.wait_until_ready().await),
    ] {
        if ready.is_err() {
            tracing::error!(kind, "the watch ended before its first list: the proxy stops");
            return;
        }
    }
    tracing::info!("the node proxy has its first table");
    loop {
        let rules = table::rules(&services.state(), &slices.state(), &endpoints.state(), node_ip);
        let count = rules.len();
        for (listen, protocol, error) in forwarder.apply(rules) {
            tracing::warn!(%listen, %protocol, %error, "a Service address could not be served");
        }
        tracing::debug!(rules = count, "applied the forwarding table");
        changed.notified().await;
    }
}
