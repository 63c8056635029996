//! The cluster DNS (the job of CoreDNS's `kubernetes` plugin): names for Services and
//! pods under a zone (`cluster.local` by default), as the Kubernetes DNS specification
//! (schema 1.1.0) lays them out, and every other name forwarded to the host's
//! nameservers so that pods resolve external names too.
//!
//! Pieces:
//! - [`index`]: the zone's records computed from Services and EndpointSlices, and the
//!   answer to one question (pure; the record layout is described there).
//! - [`server`]: UDP and TCP on one address, truncation, forwarding.
//! - [`Server`]: binds first (so a caller learns an ephemeral port before anything
//!   runs), then [`Server::run`] keeps reflectors of Services and EndpointSlices (those
//!   labelled `kubernetes.io/service-name`) over the Kubernetes API and serves.
//!
//! **Answers come from an index rebuilt on change**, not from the reflector stores at
//! query time: after any watch event the whole index is computed again (O(Services +
//! endpoints)) and swapped in whole, one rebuild at a time, so a burst of changes costs
//! one or two rebuilds; a query costs a few hash lookups and never sees half a change.
//! Until both kinds have been listed once there is no index, and in-zone names get
//! SERVFAIL (an empty zone would answer NXDOMAIN, which resolvers cache); out-of-zone
//! names are forwarded from the start.
//!
//! **TTL 5 s** for every record and for negative answers (the SOA's minimum), where
//! CoreDNS defaults to 30: a Service created or deleted is seen by pods within seconds,
//! and the extra queries are cheap (answers come from memory, pods on one node ask one
//! server). [`Config::ttl_s`] changes it.
//!
//! [`resolv_conf`] writes what the kubelet puts in a `dnsPolicy: ClusterFirst` pod's
//! `/etc/resolv.conf`; [`upstreams_from_resolv_conf`] reads the host's nameservers.
//!
//! Limits ([`Limits`]): UDP queries in flight, TCP connections and their idle time,
//! forwards in flight and the time each waits for an upstream, our EDNS payload size.
//!
//! Left out: IPv6 records (AAAA answers are empty), caching of forwarded answers,
//! `stubDomains`-style per-zone upstreams, the `ndots`/`search` handling clients do,
//! Endpoints objects (EndpointSlices only), DNSSEC, DNS over TLS/HTTPS, metrics. See
//! [`index`] and [`server`] for the details each leaves out.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Notify, Semaphore};

use crate::error::{AgentError, Result};

pub mod index;
pub mod server;

/// The zone when the caller does not choose one.
pub const ZONE_DEFAULT: &str = "cluster.local";
/// The TTL of every record (and of negative answers), in seconds.
pub const TTL_DEFAULT_S: u32 = 5;
/// The nameservers read from a resolv.conf at most, as glibc (`MAXNS`).
pub const RESOLV_CONF_NAMESERVERS_MAX: usize = 3;
/// Search domains in a pod's resolv.conf at most, and their total length, as the kubelet
/// (`MaxDNSSearchPaths`, `MaxDNSSearchListChars`); past them the tail is dropped.
pub const SEARCH_DOMAINS_MAX: usize = 32;
/// See [`SEARCH_DOMAINS_MAX`].
pub const SEARCH_LIST_CHARS_MAX: usize = 2048;

/// Bounds on what the server holds at once and how long it waits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// How long one forward waits for one upstream (each upstream in turn).
    pub forward_timeout_ms: u64,
    /// Forwards in flight; past it a query gets REFUSED.
    pub forwards_max: usize,
    /// UDP queries being handled; past it a datagram is dropped (the client retries).
    pub udp_queries_max: usize,
    /// Open TCP connections; past it a new one is closed.
    pub tcp_connections_max: usize,
    /// A TCP connection with no query (or a stalled one) for this long is closed.
    pub tcp_idle_timeout_ms: u64,
    /// The UDP payload we advertise with EDNS and the most we send over UDP (1232: the
    /// size that avoids IP fragmentation, DNS Flag Day 2020).
    pub edns_payload_max_bytes: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            forward_timeout_ms: 2_000,
            forwards_max: 256,
            udp_queries_max: 1_024,
            tcp_connections_max: 256,
            tcp_idle_timeout_ms: 10_000,
            edns_payload_max_bytes: 1_232,
        }
    }
}

/// How to serve.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to answer, UDP and TCP (port 0: any free port, the same for both).
    pub listen: SocketAddr,
    /// The cluster domain (`cluster.local`).
    pub zone: String,
    /// Where names outside the zone go, tried in order (see [`upstreams_from_resolv_conf`]);
    /// one that is this server's own address is skipped.
    pub upstreams: Vec<SocketAddr>,
    /// TTL of every record, in seconds.
    pub ttl_s: u32,
    /// What the server holds at once and how long it waits.
    pub limits: Limits,
}

impl Config {
    /// The defaults for everything but where to listen and where to forward.
    pub fn new(listen: SocketAddr, upstreams: Vec<SocketAddr>) -> Config {
        Config {
            listen,
            zone: ZONE_DEFAULT.to_owned(),
            upstreams,
            ttl_s: TTL_DEFAULT_S,
            limits: Limits::default(),
        }
    }
}

/// The DNS server, bound and not yet serving.
pub struct Server {
    shared: Arc<server::Shared>,
    udp: UdpSocket,
    tcp: TcpListener,
    local: SocketAddr,
    ttl_s: u32,
}

impl Server {
    /// Binds UDP and TCP on `config.listen` and checks the configuration.
    pub async fn bind(config: Config) -> Result<Server> {
        let zone = index::parse_zone(&config.zone)
            .ok_or_else(|| AgentError::Config(format!("DNS zone {:?} is not a domain name", config.zone)))?;
        let (udp, tcp) = server::bind(config.listen).await?;
        let local = udp
            .local_addr()
            .map_err(|e| AgentError::Io(format!("address of DNS UDP on {}", config.listen), e))?;
        let mut upstreams = Vec::new();
        for upstream in config.upstreams {
            if server::is_self(local, upstream) {
                tracing::warn!(%upstream, "an upstream nameserver is this server itself; skipped");
            } else if !upstreams.contains(&upstream) {
                upstreams.push(upstream);
            }
        }
        if upstreams.is_empty() {
            tracing::warn!("no upstream nameserver: names outside the cluster get SERVFAIL");
        }
        tracing::info!(%local, %zone, ?upstreams, "cluster DNS bound");
        let shared = Arc::new(server::Shared {
            zone,
            forwards: Semaphore::new(config.limits.forwards_max.max(1)),
            limits: config.limits,
            upstreams,
            index: RwLock::new(None),
        });
        Ok(Server {
            shared,
            udp,
            tcp,
            local,
            ttl_s: config.ttl_s,
        })
    }

    /// The bound address (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until dropped; returns only if the watches end before their first list.
    pub async fn run(self, client: Client) -> Result<()> {
        let changed = Arc::new(Notify::new());
        let (services, s) = mirror::<Service>(&client, watcher::Config::default(), changed.clone());
        let (slices, e) = mirror::<EndpointSlice>(
            &client,
            watcher::Config::default().labels(index::SERVICE_NAME_LABEL),
            changed.clone(),
        );
        let _tasks = AbortOnDrop(vec![s, e]);
        let keep = keep_index(&self.shared, self.ttl_s, services, slices, changed);
        tokio::select! {
            r = keep => r,
            r = server::serve_udp(self.shared.clone(), Arc::new(self.udp)) => r,
            r = server::serve_tcp(self.shared.clone(), self.tcp) => r,
        }
    }
}

/// Binds and serves: [`Server::bind`] then [`Server::run`].
pub async fn serve(client: Client, config: Config) -> Result<()> {
    Server::bind(config).await?.run(client).await
}

/// Aborts the watch tasks when the server's future is dropped.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Mirrors every object of kind `K` into a store, waking `changed` after each event.
/// (The same helper as the proxy's `mirror`, kept apart so the two modules do not
/// depend on each other.)
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

/// Waits for both first lists, then rebuilds the index after every change. Returns only
/// on error.
async fn keep_index(
    shared: &server::Shared,
    ttl_s: u32,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    changed: Arc<Notify>,
) -> Result<()> {
    for (kind, ready) in [
        ("services", services.wait_until_ready().await),
        ("endpointslices", slices.wait_until_ready().await),
    ] {
        if ready.is_err() {
            return Err(AgentError::Config(format!(
                "the {kind} watch ended before its first list: the cluster DNS cannot answer"
            )));
        }
    }
    tracing::info!("cluster DNS has its first index");
    loop {
        // The serial only has to grow between versions a secondary would compare; the
        // clock in seconds does (none of our clients transfers the zone).
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| (d.as_secs() & u64::from(u32::MAX)) as u32);
        let built = index::Index::build(&shared.zone, ttl_s, serial, &services.state(), &slices.state());
        let rebuilt = Arc::new(built);
        match shared.index.write() {
            Ok(mut guard) => *guard = Some(rebuilt),
            Err(poisoned) => *poisoned.into_inner() = Some(rebuilt),
        }
        changed.notified().await;
    }
}

/// The `/etc/resolv.conf` the kubelet writes for a pod with `dnsPolicy: ClusterFirst` in
/// `namespace`: the cluster DNS at `nameserver`, the search path
/// `<ns>.svc.<zone> svc.<zone> <zone>` then the host's search domains (final dots
/// dropped, duplicates and empty ones left out, cut to [`SEARCH_DOMAINS_MAX`] domains and
/// [`SEARCH_LIST_CHARS_MAX`] characters as the kubelet does), and `options ndots:5`.
pub fn resolv_conf(nameserver: IpAddr, namespace: &str, zone: &str, host_search: &[String]) -> String {
    let zone = zone.trim().trim_end_matches('.');
    let mut search: Vec<String> = Vec::new();
    let cluster = [
        format!("{namespace}.svc.{zone}"),
        format!("svc.{zone}"),
        zone.to_owned(),
    ];
    for domain in cluster.into_iter().chain(host_search.iter().cloned()) {
        let domain = domain.trim().trim_end_matches('.').to_owned();
        if !domain.is_empty() && !search.contains(&domain) {
            search.push(domain);
        }
    }
    search.truncate(SEARCH_DOMAINS_MAX);
    while search.iter().map(String::len).sum::<usize>() + search.len().saturating_sub(1) > SEARCH_LIST_CHARS_MAX {
        search.pop();
    }
    format!(
        "nameserver {nameserver}\nsearch {}\noptions ndots:5\n",
        search.join(" ")
    )
}

/// The nameservers of a resolv.conf's text, port 53, in order, at most
/// [`RESOLV_CONF_NAMESERVERS_MAX`] as glibc reads. Comments (`#`, `;`) and other lines are
/// skipped, and so are IPv6 addresses with a zone (`fe80::1%eth0`), which need the
/// interface's index.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut upstreams = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        let upstream = SocketAddr::new(ip, 53);
        if !upstreams.contains(&upstream) {
            upstreams.push(upstream);
        }
        if upstreams.len() == RESOLV_CONF_NAMESERVERS_MAX {
            break;
        }
    }
    upstreams
}

/// The Service pods reach the cluster DNS through, as in Kubernetes: `kube-system/kube-dns`
/// with the given ClusterIP and ports 53 (UDP `dns`, TCP `dns-tcp`). It has no selector:
/// its Endpoints (written here too) point at where this server listens, and the node
/// proxies forward the ClusterIP there. Created, or brought back to this, at every start.
pub async fn publish_service(client: &Client, cluster_ip: IpAddr, server: SocketAddr) -> Result<()> {
    use k8s_openapi::api::core::v1::Endpoints;
    use kube::api::{Patch, PatchParams};
    let labels = serde_json::json!({"k8s-app": "kube-dns", "kubernetes.io/name": "CapstanDNS"});
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
        "spec": {"clusterIP": cluster_ip.to_string(), "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": server.port()},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": server.port()},
        ]},
    });
    let endpoints = serde_json::json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
        "subsets": [{"addresses": [{"ip": server.ip().to_string()}], "ports": [
            {"name": "dns", "port": server.port(), "protocol": "UDP"},
            {"name": "dns-tcp", "port": server.port(), "protocol": "TCP"},
        ]}],
    });
    // Created when missing, else merged into (the API has no server-side apply yet).
    async fn put<K>(api: Api<K>, object: serde_json::Value) -> Result<()>
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
    {
        match api.get_opt("kube-dns").await? {
            Some(_) => {
                api.patch("kube-dns", &PatchParams::default(), &Patch::Merge(&object))
                    .await?;
            }
            None => {
                let typed: K = serde_json::from_value(object)
                    .map_err(|e| AgentError::Config(format!("the kube-dns object: {e}")))?;
                api.create(&kube::api::PostParams::default(), &typed).await?;
            }
        }
        Ok(())
    }
    put(Api::<Service>::namespaced(client.clone(), "kube-system"), service).await?;
    put(Api::<Endpoints>::namespaced(client.clone(), "kube-system"), endpoints).await?;
    Ok(())
}
