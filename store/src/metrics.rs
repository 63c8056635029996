//! The store's Prometheus metrics, under etcd's names so that etcd's dashboards and alerts
//! work on a Capstan store as they are.
//!
//! [`StoreMetrics`] is registered into a [`Registry`] the process owns (`capstan store`
//! builds one and serves it at `--listen-metrics-urls`, and at the Kubernetes API's
//! `/metrics` when the member serves that API). Two kinds of values:
//!
//! - **Events**, counted where they happen, always outside the deterministic core (the
//!   [`crate::replica`] and [`crate::mvcc`] modules read no clock and count nothing):
//!   - `etcd_disk_wal_fsync_duration_seconds`: every synced write of the Raft log, timed
//!     in `RaftLog::write_synced` (the RocksDB write with `sync` set: the log's
//!     write-ahead log append and its fsync; etcd times the fsync of its own WAL file
//!     alone). The slow-fsync failpoint of test builds is inside the timing, so a
//!     simulated slow disk shows as one. etcd's buckets.
//!   - `etcd_server_leader_changes_seen_total`: the raft thread, when a Ready names a new
//!     leader (the first one after the start counts, as in etcd).
//!   - `etcd_server_proposals_pending` and `etcd_server_proposals_failed_total`: the
//!     proposer's side of [`crate::Node`] (`submit`): proposals waiting for their answer,
//!     and those that got none from Raft (queue full, timed out, the member stopped or
//!     without a leader). A deterministic rejection by the state machine (a lease not
//!     found, a compare that failed) is an answer, not a failure.
//!   - `etcd_debugging_lease_granted_total`, `etcd_debugging_lease_revoked_total`: the
//!     apply thread, as every member applies grants and revokes (an expiry is a revoke).
//! - **States**, read when scraped (cheap reads of what the member keeps anyway, so a
//!   write costs nothing for them), from the member [`StoreMetrics::attach`]ed:
//!   `etcd_server_has_leader`, `etcd_server_is_leader`, `etcd_server_proposals_committed_total`
//!   (the commit index, a gauge in etcd too) and `etcd_server_proposals_applied_total`
//!   (the applied index), `etcd_mvcc_db_total_size_in_bytes` and
//!   `etcd_mvcc_db_total_size_in_use_in_bytes` (RocksDB's file and memtable sizes, and its
//!   estimate of live data, of the state's database; the Raft log's is left out, as
//!   etcd's WAL is), `etcd_debugging_mvcc_watcher_total` and
//!   `etcd_debugging_mvcc_slow_watcher_total` (the watch hub's watchers, and those of
//!   them unsynced: parked or catching up). Where etcd has no metric, the name has the
//!   `capstan_` prefix: `capstan_server_term` (the Raft term),
//!   `capstan_server_apply_lag_entries` (committed − applied) and `capstan_lease_live`
//!   (leases in the member's lessor).
//!
//! Left out: `etcd_disk_backend_commit_duration_seconds` (applies are RocksDB writes
//! without a sync; durability comes from the Raft log, and the state's memtable flushes
//! run in RocksDB's background, so there is no commit to time), `etcd_debugging_mvcc_keys_total`
//! (the store keeps no count of live keys, and counting them at each scrape would walk
//! the index), the network and gRPC metrics, `etcd_server_is_learner` and the
//! snapshot metrics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of the Prometheus text format, as etcd serves it.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The member's state as a scrape reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub has_leader: bool,
    pub is_leader: bool,
    pub term: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    /// RocksDB's files and memtables of the state's database.
    pub db_total_bytes: i64,
    /// RocksDB's estimate of the live data in them.
    pub db_in_use_bytes: i64,
    pub watchers: usize,
    /// Watchers not synced (parked behind a full stream, or catching up).
    pub slow_watchers: usize,
    pub leases_live: usize,
}

/// Reads the attached member's [`Sample`]; `None` once the member is gone.
type SampleSource = Box<dyn Fn() -> Option<Sample> + Send + Sync>;

/// The store's metrics. Cheap to clone (the metrics are shared): the raft thread, the
/// apply thread, the Raft log and the proposers each hold a clone. One that is not
/// registered ([`StoreMetrics::default`]) counts for nobody, at the same small cost.
#[derive(Clone)]
pub struct StoreMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    leader_changes: Counter,
    proposals_pending: Gauge,
    proposals_failed: Counter,
    wal_fsync_seconds: Histogram,
    leases_granted: Counter,
    leases_revoked: Counter,
    source: Arc<Mutex<Option<SampleSource>>>,
}

impl std::fmt::Debug for StoreMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreMetrics")
    }
}

impl Default for StoreMetrics {
    fn default() -> StoreMetrics {
        StoreMetrics {
            inner: Arc::new(Inner {
                leader_changes: Counter::default(),
                proposals_pending: Gauge::default(),
                proposals_failed: Counter::default(),
                // etcd's buckets: 1 ms to 8.192 s, doubling.
                wal_fsync_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
                leases_granted: Counter::default(),
                leases_revoked: Counter::default(),
                source: Arc::new(Mutex::new(None)),
            }),
        }
    }
}

impl StoreMetrics {
    /// New metrics, registered into `registry` (the encoder adds counters' `_total` suffix
    /// and the help texts' final period).
    pub fn register(registry: &mut Registry) -> StoreMetrics {
        let m = StoreMetrics::default();
        let i = &m.inner;
        registry.register(
            "etcd_server_leader_changes_seen",
            "The number of leader changes seen",
            i.leader_changes.clone(),
        );
        registry.register(
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit",
            i.proposals_pending.clone(),
        );
        registry.register(
            "etcd_server_proposals_failed",
            "The total number of failed proposals seen",
            i.proposals_failed.clone(),
        );
        registry.register(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL",
            i.wal_fsync_seconds.clone(),
        );
        registry.register(
            "etcd_debugging_lease_granted",
            "The total number of granted leases",
            i.leases_granted.clone(),
        );
        registry.register(
            "etcd_debugging_lease_revoked",
            "The total number of revoked leases",
            i.leases_revoked.clone(),
        );
        registry.register_collector(Box::new(StateCollector {
            source: i.source.clone(),
        }));
        m
    }

    /// Makes scrapes read the member's state from `source` (replacing the member attached
    /// before, as a member restarted in one process is).
    pub fn attach(&self, source: impl Fn() -> Option<Sample> + Send + Sync + 'static) {
        *self.inner.source.lock().expect("metrics source lock poisoned") = Some(Box::new(source));
    }

    /// The attached member's state now (`None` if none is attached or it is gone).
    pub fn sample(&self) -> Option<Sample> {
        let source = self.inner.source.lock().expect("metrics source lock poisoned");
        source.as_ref().and_then(|f| f())
    }

    pub fn leader_changed(&self) {
        self.inner.leader_changes.inc();
    }

    /// A proposal now waits for its answer; the guard counts it until dropped.
    pub fn proposal_pending(&self) -> PendingGuard {
        self.inner.proposals_pending.inc();
        PendingGuard {
            gauge: self.inner.proposals_pending.clone(),
        }
    }

    pub fn proposal_failed(&self) {
        self.inner.proposals_failed.inc();
    }

    /// One synced write of the Raft log took `took`.
    pub fn wal_fsynced(&self, took: Duration) {
        self.inner.wal_fsync_seconds.observe(took.as_secs_f64());
    }

    pub fn lease_granted(&self) {
        self.inner.leases_granted.inc();
    }

    pub fn lease_revoked(&self) {
        self.inner.leases_revoked.inc();
    }

    /// etcd's `/health` answer: (healthy, JSON body). Healthy while the member has a
    /// leader (etcd also checks that a linearizable read goes through; not here yet).
    pub fn health(&self) -> (bool, &'static str) {
        match self.sample() {
            Some(s) if s.has_leader => (true, r#"{"health":"true","reason":""}"#),
            Some(_) => (false, r#"{"health":"false","reason":"RAFT NO LEADER"}"#),
            None => (false, r#"{"health":"false","reason":"NOT STARTED"}"#),
        }
    }
}

/// Counts a proposal as pending while it lives.
pub struct PendingGuard {
    gauge: Gauge,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Encodes the attached member's state at each scrape.
struct StateCollector {
    source: Arc<Mutex<Option<SampleSource>>>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(metric)
}

/// A count as a gauge value (counts past `i64::MAX` do not happen; saturate anyway).
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = {
            let source = self.source.lock().expect("metrics source lock poisoned");
            source.as_ref().and_then(|f| f())
        };
        // No member (not started yet, or stopped): nothing to say rather than zeros that
        // would read as "no leader".
        let Some(s) = sample else { return Ok(()) };
        let e = &mut encoder;
        gauge(
            e,
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            i64::from(s.has_leader),
        )?;
        gauge(
            e,
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            i64::from(s.is_leader),
        )?;
        gauge(
            e,
            "capstan_server_term",
            "The Raft term this member is in.",
            count(s.term),
        )?;
        gauge(
            e,
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            count(s.committed_index),
        )?;
        gauge(
            e,
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            count(s.applied_index),
        )?;
        gauge(
            e,
            "capstan_server_apply_lag_entries",
            "Committed entries not yet applied on this member (committed - applied).",
            count(s.committed_index.saturating_sub(s.applied_index)),
        )?;
        gauge(
            e,
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            s.db_total_bytes,
        )?;
        gauge(
            e,
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.",
            s.db_in_use_bytes,
        )?;
        gauge(
            e,
            "etcd_debugging_mvcc_watcher_total",
            "Total number of watchers.",
            count(s.watchers as u64),
        )?;
        gauge(
            e,
            "etcd_debugging_mvcc_slow_watcher_total",
            "Total number of unsynced slow watchers.",
            count(s.slow_watchers as u64),
        )?;
        gauge(
            e,
            "capstan_lease_live",
            "Leases this member's lessor holds.",
            count(s.leases_live as u64),
        )?;
        Ok(())
    }
}

/// `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String fails only if an encoder does; ours do not.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "encoding the metrics failed");
    }
    out
}

/// etcd's metrics endpoints: `GET /metrics` (`registry`, in the text format) and
/// `GET /health` (from `metrics`, etcd's JSON; 503 without a leader).
pub fn router(registry: Arc<Registry>, metrics: StoreMetrics) -> axum::Router {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], encode(&registry)) }
            }),
        )
        .route(
            "/health",
            get(move || {
                let (healthy, body) = metrics.health();
                let code = if healthy {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                async move { (code, [(header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered() -> (Registry, StoreMetrics) {
        let mut registry = Registry::default();
        let m = StoreMetrics::register(&mut registry);
        (registry, m)
    }

    /// The value of the sample line `name` (no labels) in `text`.
    fn value(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    #[test]
    fn events_are_counted_under_etcd_names() {
        let (registry, m) = registered();
        m.leader_changed();
        m.proposal_failed();
        m.lease_granted();
        m.lease_granted();
        m.lease_revoked();
        m.wal_fsynced(Duration::from_micros(1500));
        m.wal_fsynced(Duration::from_millis(20));
        let pending = m.proposal_pending();
        let text = encode(&registry);
        assert_eq!(
            value(&text, "etcd_server_leader_changes_seen_total"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(value(&text, "etcd_server_proposals_failed_total"), Some(1.0));
        assert_eq!(value(&text, "etcd_server_proposals_pending"), Some(1.0));
        assert_eq!(value(&text, "etcd_debugging_lease_granted_total"), Some(2.0));
        assert_eq!(value(&text, "etcd_debugging_lease_revoked_total"), Some(1.0));
        assert_eq!(value(&text, "etcd_disk_wal_fsync_duration_seconds_count"), Some(2.0));
        // etcd's buckets: 0.001 holds neither, 0.002 the first, 0.032 both.
        assert!(
            text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.002\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.032\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"8.192\"} 2"),
            "{text}"
        );
        assert!(text.contains("# TYPE etcd_server_proposals_pending gauge"), "{text}");
        assert!(!text.contains(".."), "one period per help text: {text}");
        drop(pending);
        assert_eq!(value(&encode(&registry), "etcd_server_proposals_pending"), Some(0.0));
    }

    #[test]
    fn states_are_read_at_scrape_from_the_attached_member() {
        let (registry, m) = registered();
        // Nothing attached: no state lines, and unhealthy.
        let text = encode(&registry);
        assert_eq!(value(&text, "etcd_server_has_leader"), None, "{text}");
        assert!(!m.health().0);
        let sample = Arc::new(Mutex::new(Sample {
            has_leader: true,
            is_leader: false,
            term: 3,
            committed_index: 10,
            applied_index: 7,
            db_total_bytes: 4096,
            db_in_use_bytes: 1024,
            watchers: 5,
            slow_watchers: 2,
            leases_live: 4,
        }));
        let s = sample.clone();
        m.clone().attach(move || Some(s.lock().expect("lock").clone()));
        let text = encode(&registry);
        for (name, v) in [
            ("etcd_server_has_leader", 1.0),
            ("etcd_server_is_leader", 0.0),
            ("capstan_server_term", 3.0),
            ("etcd_server_proposals_committed_total", 10.0),
            ("etcd_server_proposals_applied_total", 7.0),
            ("capstan_server_apply_lag_entries", 3.0),
            ("etcd_mvcc_db_total_size_in_bytes", 4096.0),
            ("etcd_mvcc_db_total_size_in_use_in_bytes", 1024.0),
            ("etcd_debugging_mvcc_watcher_total", 5.0),
            ("etcd_debugging_mvcc_slow_watcher_total", 2.0),
            ("capstan_lease_live", 4.0),
        ] {
            assert_eq!(value(&text, name), Some(v), "{name} in {text}");
        }
        // etcd's committed and applied "totals" are gauges; ours must be too, not
        // counters (which would get a second `_total`).
        assert!(
            text.contains("# TYPE etcd_server_proposals_committed_total gauge"),
            "{text}"
        );
        assert_eq!(m.health(), (true, r#"{"health":"true","reason":""}"#));
        // The values follow the member, read again at each scrape.
        sample.lock().expect("lock").has_leader = false;
        assert_eq!(value(&encode(&registry), "etcd_server_has_leader"), Some(0.0));
        assert!(!m.health().0);
        // A member gone reads as none.
        m.attach(|| None);
        assert_eq!(value(&encode(&registry), "etcd_server_has_leader"), None);
    }

    /// One request over TCP (HTTP/1.0: the server closes after answering).
    async fn ask(addr: std::net::SocketAddr, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        c.read_to_string(&mut response).await.expect("read");
        response.to_lowercase()
    }

    #[tokio::test]
    async fn serves_etcds_endpoints_over_tcp() {
        let (registry, m) = registered();
        m.lease_granted();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(Arc::new(registry), m.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await
        });
        let response = ask(addr, "GET /metrics HTTP/1.0\r\n\r\n").await;
        assert!(response.starts_with("http/1.0 200 ok\r\n"), "{response}");
        assert!(response.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(response.contains("etcd_debugging_lease_granted_total 1"), "{response}");
        let response = ask(addr, "GET /health HTTP/1.0\r\n\r\n").await;
        assert!(response.starts_with("http/1.0 503"), "no leader yet: {response}");
        m.attach(|| {
            Some(Sample {
                has_leader: true,
                ..Sample::default()
            })
        });
        let response = ask(addr, "GET /health?serializable=true HTTP/1.0\r\n\r\n").await;
        assert!(response.starts_with("http/1.0 200"), "{response}");
        assert!(response.ends_with(r#"{"health":"true","reason":""}"#), "{response}");
        assert!(ask(addr, "GET /nope HTTP/1.0\r\n\r\n")
            .await
            .starts_with("http/1.0 404"));
        assert!(ask(addr, "POST /metrics HTTP/1.0\r\n\r\n")
            .await
            .starts_with("http/1.0 405"));
        let _ = stop_tx.send(());
        server.await.expect("server task").expect("served");
    }
}
