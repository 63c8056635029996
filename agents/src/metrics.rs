//! Prometheus metrics of the agents: one metric set per component, registered into a
//! [`Registry`] the caller owns and serves ([`serve`], [`router`]).
//!
//! Each set is created once per process with `new(&mut registry)` and handed to its
//! component; it is cheap to clone (every metric is an `Arc` inside), and a component
//! given none records nothing. Names are upstream's where upstream has the metric, so
//! existing dashboards and alerts read them.
//!
//! # What is measured where
//!
//! - **Scheduler** ([`SchedulerMetrics`], recorded in `scheduler.rs`):
//!   `scheduler_schedule_attempts_total{result,profile}` and
//!   `scheduler_scheduling_attempt_duration_seconds{result,profile}`: one attempt is a pod
//!   taken from the queue, from then until its binding was written (`scheduled`), no node
//!   fitted (`unschedulable`, measured at the decision: the condition and event written
//!   afterwards are not part of it), or the binding failed (`error`). `profile` is always
//!   `default-scheduler` (there are no other profiles).
//!   `scheduler_pending_pods{queue}`: `active` (waiting to be taken), `backoff` (failed,
//!   within its backoff), `unschedulable` (failed, backoff over, waiting for a cluster
//!   event or the 60 s flush); counted once a second, not on every change (a count is
//!   O(pending pods)). Pods whose binding is in flight are in none of them.
//! - **Controllers** ([`ControllerMetrics`], recorded by `runtime::instrumented`, the
//!   wrapper every kube-rs `Controller`'s reconcile function goes through):
//!   `capstan_controller_reconciles_total{controller,result=success|error}`,
//!   `capstan_controller_reconcile_duration_seconds{controller}` and
//!   `capstan_controller_reconciles_in_flight{controller}` (started, not yet finished);
//!   and by `runtime::Queued`, the controllers' runner, client-go's
//!   `workqueue_depth{name}` (objects triggered and waiting for their reconcile to start,
//!   each counted once) and `workqueue_adds_total{name}`.
//! - **Node agent** ([`NodeMetrics`], recorded by the pod workers, `node/pods.rs`):
//!   `kubelet_pod_start_duration_seconds`, from the worker first seeing the pod to every
//!   one of its containers having started (once per pod; pods whose containers an agent
//!   restart adopted are not observed: their start was long before);
//!   `kubelet_running_pods` (pods with at least one container running) and
//!   `kubelet_running_containers` (init containers included);
//!   `prober_probe_total{probe_type=Liveness|Readiness|Startup,result=successful|failed}`.
//! - **Node proxy** ([`ProxyMetrics`], recorded by `proxy/forward.rs`), per Service port,
//!   `service="namespace/name:port"` (the port's name, or its number if it has none):
//!   `capstan_proxy_connections_total` (TCP connections admitted, UDP sessions started),
//!   `capstan_proxy_active_connections` (open TCP connections and live UDP sessions),
//!   `capstan_proxy_received_bytes_total` (from clients), `capstan_proxy_sent_bytes_total`
//!   (to clients), `capstan_proxy_errors_total{reason=no_backend|over_limit|connect}`.
//!
//! # Bounds
//!
//! Every label takes a fixed set of values, except two: the controller's name (one per
//! controller, fixed in the code) and the proxy's `service`, which takes at most the
//! Service ports in the proxy's table (bounded by `proxy::SERVICES_MAX`): a Service's
//! series are removed when it leaves the table. Per-pod and per-container labels,
//! upstream's `prober_probe_total` has them, are left out: they grow with every pod the
//! node ever ran.
//!
//! # Left out
//!
//! The rest of client-go's workqueue metrics (queue and work durations, retries: the
//! reconciles' own counts and durations stand for the last two). Timed requeues are not
//! in the depth (client-go's delaying queue does not count them either). The garbage collector and the node
//! lifecycle controller run loops of their own rather than a `Controller`, and are not
//! measured. The scheduler's per-plugin and per-extension-point durations, the kubelet's
//! runtime operation and PLEG metrics, kube-proxy's sync metrics.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A label set of fixed keys and values known at compile time.
type Static<const N: usize> = [(&'static str, &'static str); N];

/// Upstream's buckets for scheduling attempts: 1 ms doubling, 15 of them (to 16 s).
fn attempt_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Reconciles and pod starts span milliseconds to minutes: 5 ms doubling to ~82 s.
fn long_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The scheduler's metrics. See the module documentation.
#[derive(Clone, Debug)]
pub struct SchedulerMetrics {
    attempts: Family<Static<2>, Counter>,
    attempt_duration: Family<Static<2>, Histogram, fn() -> Histogram>,
    pending: Family<Static<1>, Gauge>,
}

/// How one scheduling attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    Scheduled,
    Unschedulable,
    Error,
}

impl AttemptResult {
    fn label(self) -> &'static str {
        match self {
            AttemptResult::Scheduled => "scheduled",
            AttemptResult::Unschedulable => "unschedulable",
            AttemptResult::Error => "error",
        }
    }
}

/// The scheduling queue's pods by where they wait.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingPods {
    pub active: usize,
    pub backoff: usize,
    pub unschedulable: usize,
}

impl SchedulerMetrics {
    pub fn new(registry: &mut Registry) -> SchedulerMetrics {
        let m = SchedulerMetrics {
            attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(attempt_buckets),
            pending: Family::default(),
        };
        registry.register(
            "scheduler_schedule_attempts",
            "Number of attempts to schedule pods, by the result",
            m.attempts.clone(),
        );
        registry.register(
            "scheduler_scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            m.attempt_duration.clone(),
        );
        registry.register(
            "scheduler_pending_pods",
            "Number of pending pods, by the queue type",
            m.pending.clone(),
        );
        m
    }

    /// One attempt of `profile` (the scheduler's name) that took `took`.
    pub fn attempt(&self, profile: &'static str, result: AttemptResult, took: Duration) {
        let labels = [("result", result.label()), ("profile", profile)];
        self.attempts.get_or_create(&labels).inc();
        self.attempt_duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    pub fn set_pending(&self, pending: PendingPods) {
        for (queue, n) in [
            ("active", pending.active),
            ("backoff", pending.backoff),
            ("unschedulable", pending.unschedulable),
        ] {
            self.pending
                .get_or_create(&[("queue", queue)])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// The controllers' metrics. See the module documentation.
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    reconciles: Family<Static<2>, Counter>,
    duration: Family<Static<1>, Histogram, fn() -> Histogram>,
    in_flight: Family<Static<1>, Gauge>,
    depth: Family<Static<1>, Gauge>,
    adds: Family<Static<1>, Counter>,
}

/// One reconcile counted in flight until dropped (finished or cancelled).
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl ControllerMetrics {
    pub fn new(registry: &mut Registry) -> ControllerMetrics {
        let m = ControllerMetrics {
            reconciles: Family::default(),
            duration: Family::new_with_constructor(long_buckets),
            in_flight: Family::default(),
            depth: Family::default(),
            adds: Family::default(),
        };
        registry.register(
            "workqueue_depth",
            "Objects waiting for a reconcile, by controller (name)",
            m.depth.clone(),
        );
        registry.register(
            "workqueue_adds",
            "Objects added to the queue, by controller (name)",
            m.adds.clone(),
        );
        registry.register(
            "capstan_controller_reconciles_in_flight",
            "Reconciles running now, by controller",
            m.in_flight.clone(),
        );
        registry.register(
            "capstan_controller_reconciles",
            "Reconciles by controller and result",
            m.reconciles.clone(),
        );
        registry.register(
            "capstan_controller_reconcile_duration_seconds",
            "How long reconciles took, by controller",
            m.duration.clone(),
        );
        m
    }

    /// `controller`'s queue depth gauge (`workqueue_depth{name}`).
    pub fn depth(&self, controller: &'static str) -> Gauge {
        self.depth.get_or_create(&[("name", controller)]).clone()
    }

    /// `controller`'s counter of queue additions (`workqueue_adds_total{name}`).
    pub fn adds(&self, controller: &'static str) -> Counter {
        self.adds.get_or_create(&[("name", controller)]).clone()
    }

    /// A reconcile of `controller` starting: counted in flight while the guard lives.
    pub fn started(&self, controller: &'static str) -> InFlight {
        let gauge = self.in_flight.get_or_create(&[("controller", controller)]).clone();
        gauge.inc();
        InFlight(gauge)
    }

    /// One reconcile of `controller` that took `took`.
    pub fn reconciled(&self, controller: &'static str, ok: bool, took: Duration) {
        let result = if ok { "success" } else { "error" };
        self.reconciles
            .get_or_create(&[("controller", controller), ("result", result)])
            .inc();
        self.duration
            .get_or_create(&[("controller", controller)])
            .observe(took.as_secs_f64());
    }
}

/// The node agent's metrics. See the module documentation. Hollow nodes of one process
/// share one set: their pods and containers add up.
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    pod_start: Histogram,
    running_pods: Gauge,
    running_containers: Gauge,
    probes: Family<Static<2>, Counter>,
}

/// A probe's kind, as upstream labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeType {
    Liveness,
    Readiness,
    Startup,
}

impl NodeMetrics {
    pub fn new(registry: &mut Registry) -> NodeMetrics {
        let m = NodeMetrics {
            pod_start: long_buckets(),
            running_pods: Gauge::default(),
            running_containers: Gauge::default(),
            probes: Family::default(),
        };
        registry.register(
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from the agent seeing a pod for the first time to all its containers having started",
            m.pod_start.clone(),
        );
        registry.register(
            "kubelet_running_pods",
            "Number of pods that have a running container",
            m.running_pods.clone(),
        );
        registry.register(
            "kubelet_running_containers",
            "Number of running containers",
            m.running_containers.clone(),
        );
        registry.register(
            "prober_probe",
            "Cumulative number of probes, by probe type and result",
            m.probes.clone(),
        );
        m
    }

    pub fn pod_started(&self, took: Duration) {
        self.pod_start.observe(took.as_secs_f64());
    }

    pub fn probed(&self, probe: ProbeType, ok: bool) {
        let probe_type = match probe {
            ProbeType::Liveness => "Liveness",
            ProbeType::Readiness => "Readiness",
            ProbeType::Startup => "Startup",
        };
        let result = if ok { "successful" } else { "failed" };
        self.probes
            .get_or_create(&[("probe_type", probe_type), ("result", result)])
            .inc();
    }

    /// Counts one running container until the guard is dropped.
    pub fn running_container(&self) -> Running {
        Running::new(&self.running_containers)
    }

    /// Counts one pod with a running container until the guard is dropped.
    pub fn running_pod(&self) -> Running {
        Running::new(&self.running_pods)
    }
}

/// Keeps a gauge one higher for as long as it lives: whatever way the thing counted goes
/// (ended, stopped, its worker dropped), the count comes down with it.
#[derive(Debug)]
pub struct Running(Gauge);

impl Running {
    fn new(gauge: &Gauge) -> Running {
        gauge.inc();
        Running(gauge.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The node proxy's metrics. See the module documentation.
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    connections: Family<Service, Counter>,
    active: Family<Service, Gauge>,
    received: Family<Service, Counter>,
    sent: Family<Service, Counter>,
    errors: Family<ServiceReason, Counter>,
}

type Service = [(&'static str, Arc<str>); 1];
type ServiceReason = [(&'static str, Arc<str>); 2];

const ERROR_REASONS: [&str; 3] = ["no_backend", "over_limit", "connect"];

/// One Service port's series, taken once per table change and shared by its listeners'
/// connections: recording is an atomic add, no lookup.
#[derive(Clone, Debug)]
pub struct ServiceSeries {
    pub connections: Counter,
    pub active: Gauge,
    pub received: Counter,
    pub sent: Counter,
    pub no_backend: Counter,
    pub over_limit: Counter,
    pub connect_failures: Counter,
}

impl ServiceSeries {
    /// Counts one connection or session as active until the guard is dropped.
    pub fn active(&self) -> Running {
        Running::new(&self.active)
    }
}

impl ProxyMetrics {
    pub fn new(registry: &mut Registry) -> ProxyMetrics {
        let m = ProxyMetrics {
            connections: Family::default(),
            active: Family::default(),
            received: Family::default(),
            sent: Family::default(),
            errors: Family::default(),
        };
        registry.register(
            "capstan_proxy_connections",
            "TCP connections admitted and UDP sessions started, by Service port",
            m.connections.clone(),
        );
        registry.register(
            "capstan_proxy_active_connections",
            "Open TCP connections and live UDP sessions, by Service port",
            m.active.clone(),
        );
        registry.register(
            "capstan_proxy_received_bytes",
            "Bytes received from clients, by Service port",
            m.received.clone(),
        );
        registry.register(
            "capstan_proxy_sent_bytes",
            "Bytes sent to clients, by Service port",
            m.sent.clone(),
        );
        registry.register(
            "capstan_proxy_errors",
            "Connections refused for want of a backend, over the bound, and failed attempts to reach a backend, by Service port",
            m.errors.clone(),
        );
        m
    }

    /// The series of `service` (`namespace/name:port`), created if new.
    pub fn series(&self, service: &str) -> ServiceSeries {
        let name: Arc<str> = Arc::from(service);
        let one = [("service", name.clone())];
        let reason = |r: &'static str| {
            self.errors
                .get_or_create_owned(&[("service", name.clone()), ("reason", Arc::from(r))])
        };
        ServiceSeries {
            connections: self.connections.get_or_create_owned(&one),
            active: self.active.get_or_create_owned(&one),
            received: self.received.get_or_create_owned(&one),
            sent: self.sent.get_or_create_owned(&one),
            no_backend: reason(ERROR_REASONS[0]),
            over_limit: reason(ERROR_REASONS[1]),
            connect_failures: reason(ERROR_REASONS[2]),
        }
    }

    /// Drops `service`'s series (it left the table). Connections still open keep
    /// counting into their detached copies, which are no longer exported.
    pub fn remove(&self, service: &str) {
        let name: Arc<str> = Arc::from(service);
        let one = [("service", name.clone())];
        self.connections.remove(&one);
        self.active.remove(&one);
        self.received.remove(&one);
        self.sent.remove(&one);
        for r in ERROR_REASONS {
            self.errors
                .remove(&[("service", name.clone()), ("reason", Arc::from(r))]);
        }
    }
}

/// The content type of [`encode`]'s format (Prometheus text 0.0.4, as the API server and
/// the store serve theirs, and as upstream's components do).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in a metric.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, registry) {
        tracing::error!(error = %e, "encoding the metrics failed");
    }
    text
}

/// `GET /metrics`: the registry, for Prometheus to scrape.
pub fn router(registry: Arc<Registry>) -> axum::Router {
    use axum::http::header;
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], encode(&registry)) }
        }),
    )
}

/// [`router`] and `GET /healthz` (`ok` while the process serves), as a separate
/// scheduler, controller-manager or proxy serves them.
pub fn component_router(registry: Arc<Registry>) -> axum::Router {
    router(registry).route("/healthz", axum::routing::get(|| async { "ok" }))
}

/// Serves [`component_router`] on `listener` (plain HTTP) until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, registry: Arc<Registry>) -> std::io::Result<()> {
    axum::serve(listener, component_router(registry)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconcile_is_in_flight_until_its_guard_goes() {
        let mut registry = Registry::default();
        let m = ControllerMetrics::new(&mut registry);
        let series = r#"capstan_controller_reconciles_in_flight{controller="replicaset"} "#;
        let value = |text: &str| text.lines().find_map(|l| l.strip_prefix(series)).map(str::to_owned);
        let (a, b) = (m.started("replicaset"), m.started("replicaset"));
        assert_eq!(value(&encode(&registry)).as_deref(), Some("2"));
        drop(a);
        assert_eq!(value(&encode(&registry)).as_deref(), Some("1"));
        drop(b);
        m.reconciled("replicaset", true, Duration::from_millis(3));
        let text = encode(&registry);
        assert_eq!(value(&text).as_deref(), Some("0"), "{text}");
    }

    #[test]
    fn proxy_series_go_when_their_service_leaves() {
        let mut registry = Registry::default();
        let m = ProxyMetrics::new(&mut registry);
        let s = m.series("default/web:http");
        s.connections.inc();
        s.received.inc_by(10);
        s.connect_failures.inc();
        let guard = s.active();
        let text = encode(&registry);
        assert!(
            text.contains(r#"capstan_proxy_connections_total{service="default/web:http"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"capstan_proxy_active_connections{service="default/web:http"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"capstan_proxy_received_bytes_total{service="default/web:http"} 10"#),
            "{text}"
        );
        assert!(
            text.contains(r#"capstan_proxy_errors_total{service="default/web:http",reason="connect"} 1"#),
            "{text}"
        );
        drop(guard);
        assert!(encode(&registry).contains(r#"capstan_proxy_active_connections{service="default/web:http"} 0"#));
        m.remove("default/web:http");
        let text = encode(&registry);
        assert!(!text.contains("default/web"), "{text}");
    }

    #[test]
    fn scheduler_and_controller_series_carry_upstreams_names() {
        let mut registry = Registry::default();
        let s = SchedulerMetrics::new(&mut registry);
        let c = ControllerMetrics::new(&mut registry);
        s.attempt("default-scheduler", AttemptResult::Scheduled, Duration::from_millis(3));
        s.set_pending(PendingPods {
            active: 2,
            backoff: 1,
            unschedulable: 0,
        });
        c.reconciled("replicaset", false, Duration::from_millis(1));
        let text = encode(&registry);
        for line in [
            r#"scheduler_schedule_attempts_total{result="scheduled",profile="default-scheduler"} 1"#,
            r#"scheduler_scheduling_attempt_duration_seconds_count{result="scheduled",profile="default-scheduler"} 1"#,
            r#"scheduler_pending_pods{queue="active"} 2"#,
            r#"scheduler_pending_pods{queue="backoff"} 1"#,
            r#"capstan_controller_reconciles_total{controller="replicaset",result="error"} 1"#,
            r#"capstan_controller_reconcile_duration_seconds_count{controller="replicaset"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[tokio::test]
    async fn serves_the_registry_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut registry = Registry::default();
        let m = NodeMetrics::new(&mut registry);
        m.probed(ProbeType::Readiness, true);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(listener, Arc::new(registry)));
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.expect("read");
        server.abort();
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
        assert!(answer.contains("text/plain; version=0.0.4"), "{answer}");
        assert!(
            answer.contains(r#"prober_probe_total{probe_type="Readiness",result="successful"} 1"#),
            "{answer}"
        );
        assert!(!answer.contains("# EOF"), "the Prometheus text format, not OpenMetrics");
    }
}
