//! Prometheus metrics of the API server, served on `GET /metrics` in the classic text
//! format (`text/plain; version=0.0.4`), followed by the rest of the process's metrics
//! ([`crate::ApiConfig::process_metrics`]: the embedded store member and whatever else
//! runs in this process).
//!
//! What is measured, with upstream kube-apiserver's names, labels and buckets:
//!
//! - `apiserver_request_total` (counter: verb, group, version, resource, subresource,
//!   scope, component, code) and `apiserver_request_duration_seconds` (histogram, the
//!   same labels without code, upstream's 23 buckets from 5 ms to 60 s). Recorded by
//!   one middleware ([`record`]) around every route, for resource requests only (what
//!   [`rbac::request_attributes`] calls one: `/api/v1/...`, `/apis/<g>/<v>/...`), once
//!   per request when its response is made. Long-running requests (watches, logs,
//!   exec, attach, port-forward, proxy; the [`flow`] module's list) are counted when
//!   their response body ends (as upstream, whose handler returns when the watch
//!   ends), and their duration is *not* observed: hours-long watches would only fill
//!   the `+Inf` bucket. (Upstream does observe them and its dashboards filter
//!   `verb!~"WATCH|CONNECT"`; its SLI histogram leaves them out, as this one does.)
//!   The verb is upstream's reported verb: `GET` of one object, `LIST` of a
//!   collection, `WATCH`, `POST`, `PUT`, `PATCH`, `APPLY` (a server-side apply patch),
//!   `DELETE` (also of a collection), `CONNECT` (the streaming subresources), and
//!   `other` for any other method. The scope is `resource` (a named object, or a
//!   create), `namespace` or `cluster`; the component always `apiserver`.
//! - `apiserver_current_inflight_requests` (gauge, `request_kind` `readOnly` or
//!   `mutating`): requests being served now, long-running ones excepted. The
//!   middleware sits inside the flow control, so a request waiting for its seat is not
//!   in flight yet (upstream's meaning: the seats in use). Upstream reports the
//!   maximum of the last second; this is the value at the scrape.
//! - `apiserver_longrunning_requests` (gauge, labels of the request counter without
//!   code): long-running requests open now.
//! - `apiserver_registered_watchers` (gauge: group, version, kind): the watchers of
//!   each watch cache ([`crate::cache`]), REST watches and mesh streams alike, read at
//!   scrape time.
//! - `capstan_watch_cache_lag_revisions` (gauge: group, resource): how many revisions
//!   each watch cache is behind the store. At scrape time the store's current revision
//!   is read as a consistent read does (a quorum read of one key, at most
//!   [`STORE_READ_MAX`]), each cache is asked for a progress notification and given
//!   [`CATCH_UP_MAX`] to reach that revision (a cache of a type nobody writes only
//!   hears of newer revisions on request), and what is left is the lag: 0 for a
//!   healthy cache. If the store does not answer in time, the series are dropped for
//!   that scrape rather than reported stale.
//! - `apiserver_flowcontrol_rejected_requests_total` (counter: priority_level,
//!   flow_schema, reason `queue-full` or `time-out`) and
//!   `apiserver_flowcontrol_current_inqueue_requests` (gauge: priority_level,
//!   flow_schema): the requests [`flow`] refused with 429, and those waiting in its
//!   queues at scrape time. The flow control has one level, reported under upstream's
//!   catch-all names (`global-default` for both). A refused resource request is also
//!   counted in `apiserver_request_total` with code 429, as upstream counts it.
//!
//! Label values are bounded: group, version and resource come from the served types
//! ([`crate::resources`]) and the few resources answered in place (the reviews), the
//! subresource from a fixed list; anything else is `""`. Names, namespaces and paths
//! are never labels.
//!
//! Left out: requests refused before the middleware (401 and 403 of [`crate::auth`],
//! which upstream does not count here either; requests the listener refuses), the
//! non-resource URLs (discovery, OpenAPI, health, `/metrics` itself), the mesh API's
//! gRPC calls, the `dry_run` label, response sizes, and upstream's many other
//! families (admission, etcd request latencies, watch events, ...).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::flow::{self, FlowControl};
use crate::handlers::Api;
use crate::rbac;
use crate::resources::{ResourceType, RESOURCES};

/// The `Content-Type` of `/metrics` (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;
/// How long a scrape waits for the store's revision, at most.
pub const STORE_READ_MAX: Duration = Duration::from_secs(2);
/// How long a scrape gives the watch caches to catch up with it, at most (together).
pub const CATCH_UP_MAX: Duration = Duration::from_millis(250);

/// Upstream's buckets of `apiserver_request_duration_seconds`.
pub const DURATION_BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0,
    45.0, 60.0,
];

/// The only component this process reports requests for.
const COMPONENT: &str = "apiserver";
/// Upstream's catch-all priority level and flow schema: the flow control has one level.
const FLOW_LEVEL: &str = "global-default";

/// Subresources reported by name (with a served resource); any other is `""`.
const SUBRESOURCES: &[&str] = &[
    "status",
    "scale",
    "binding",
    "log",
    "eviction",
    "finalize",
    "token",
    "exec",
    "attach",
    "portforward",
    "proxy",
    "ephemeralcontainers",
];

/// Resources answered in place rather than stored (not in [`RESOURCES`]), reported by
/// name: (group, version, resource).
const ANSWERED_IN_PLACE: &[(&str, &str, &str)] = &[
    ("authorization.k8s.io", "v1", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "v1", "selfsubjectrulesreviews"),
    ("authentication.k8s.io", "v1", "selfsubjectreviews"),
];

/// The labels of a request (upstream's, without `dry_run`). Every value is static: the
/// set of label sets is bounded by construction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    pub scope: &'static str,
    pub component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    #[prometheus(flatten)]
    request: RequestLabels,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    request_kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatcherLabels {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    group: &'static str,
    resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabels {
    priority_level: &'static str,
    flow_schema: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectedLabels {
    #[prometheus(flatten)]
    flow: FlowLabels,
    reason: &'static str,
}

/// What the metrics need to know of one resource request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub labels: RequestLabels,
    /// Counted when its response body ends; its duration is not observed.
    pub long_running: bool,
    /// Upstream's `mutating` request kind: anything but get, list and watch.
    pub mutating: bool,
}

/// Upstream's reported verb for the method, before the WATCH and CONNECT corrections.
fn method_verb(method: &str, scope: &str, content_type: Option<&str>) -> &'static str {
    match method {
        "GET" | "HEAD" if scope == "resource" => "GET",
        "GET" | "HEAD" => "LIST",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" if content_type.is_some_and(|ct| ct.starts_with("application/apply-patch")) => "APPLY",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        _ => "other",
    }
}

/// Group, version and resource as reported: a served type's or one answered in place,
/// else all empty (the path's own words are the client's, unbounded).
fn known_resource(r: &rbac::ResourceAttributes) -> (&'static str, &'static str, &'static str) {
    if let Some(rt) = ResourceType::find(&r.api_group, &r.api_version, &r.resource) {
        return (rt.group, rt.version, rt.plural);
    }
    ANSWERED_IN_PLACE
        .iter()
        .find(|(g, v, res)| *g == r.api_group && *v == r.api_version && *res == r.resource)
        .map_or(("", "", ""), |&(g, v, res)| (g, v, res))
}

/// The labels of a request from its method, (raw) path, query and `Content-Type`; None
/// for a request that is not on an API resource (discovery, health, `/metrics`).
pub fn classify(method: &str, path: &str, query: Option<&str>, content_type: Option<&str>) -> Option<Classified> {
    let watch_param = flow::query_watch(query);
    let rbac::Attributes::Resource(r) = rbac::request_attributes(method, path, watch_param) else {
        return None;
    };
    let scope = if !r.name.is_empty() || r.verb == "create" {
        "resource"
    } else if !r.namespace.is_empty() {
        "namespace"
    } else {
        "cluster"
    };
    let (group, version, resource) = known_resource(&r);
    let subresource = if resource.is_empty() {
        ""
    } else {
        SUBRESOURCES.iter().copied().find(|s| *s == r.subresource).unwrap_or("")
    };
    let long_running = flow::long_running(&r, watch_param && method == "GET");
    // Upstream's corrections, in its order: a watch (by path or parameter), then the
    // streaming subresources.
    let mut verb = method_verb(method, scope, content_type);
    if r.verb == "watch" || (watch_param && matches!(method, "GET" | "HEAD")) {
        verb = "WATCH";
    }
    if matches!(
        r.subresource.as_str(),
        "log" | "exec" | "portforward" | "attach" | "proxy"
    ) {
        verb = "CONNECT";
    }
    Some(Classified {
        labels: RequestLabels {
            verb,
            group,
            version,
            resource,
            subresource,
            scope,
            component: COMPONENT,
        },
        long_running,
        mutating: !matches!(r.verb.as_str(), "get" | "list" | "watch"),
    })
}

fn classify_request(req: &Request) -> Option<Classified> {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    classify(req.method().as_str(), req.uri().path(), req.uri().query(), content_type)
}

/// The API server's metrics (see the module docs).
pub struct Metrics {
    registry: Registry,
    requests: Family<CodeLabels, Counter>,
    durations: Family<RequestLabels, Histogram, fn() -> Histogram>,
    inflight: Family<KindLabels, Gauge>,
    longrunning: Family<RequestLabels, Gauge>,
    watchers: Family<WatcherLabels, Gauge>,
    cache_lag: Family<CacheLabels, Gauge>,
    rejected: Family<RejectedLabels, Counter>,
    inqueue: Family<FlowLabels, Gauge>,
    flow: Option<Arc<FlowControl>>,
    /// One scrape at a time: the scrape-time gauges are set, then encoded.
    scrape: tokio::sync::Mutex<()>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Metrics {
    /// `flow`: the flow control whose queues are reported, if any.
    pub fn new(flow: Option<Arc<FlowControl>>) -> Arc<Metrics> {
        let mut registry = Registry::default();
        let requests = Family::<CodeLabels, Counter>::default();
        // A counter is registered without its `_total`, which the encoder adds.
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, group, version, resource, scope, component, and HTTP response code",
            requests.clone(),
        );
        let durations: Family<RequestLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, group, version, resource, subresource, scope and component (long-running requests excepted)",
            durations.clone(),
        );
        let inflight = Family::<KindLabels, Gauge>::default();
        registry.register(
            "apiserver_current_inflight_requests",
            "Number of requests being served by this apiserver per request kind, long-running ones excepted",
            inflight.clone(),
        );
        let longrunning = Family::<RequestLabels, Gauge>::default();
        registry.register(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests broken out by verb, group, version, resource, scope and component",
            longrunning.clone(),
        );
        let watchers = Family::<WatcherLabels, Gauge>::default();
        registry.register(
            "apiserver_registered_watchers",
            "Number of currently registered watchers for a given resource",
            watchers.clone(),
        );
        let cache_lag = Family::<CacheLabels, Gauge>::default();
        registry.register(
            "capstan_watch_cache_lag_revisions",
            "Revisions each watch cache is behind the store's current revision, measured at scrape time",
            cache_lag.clone(),
        );
        let rejected = Family::<RejectedLabels, Counter>::default();
        registry.register(
            "apiserver_flowcontrol_rejected_requests",
            "Number of requests rejected by API Priority and Fairness subsystem",
            rejected.clone(),
        );
        let inqueue = Family::<FlowLabels, Gauge>::default();
        registry.register(
            "apiserver_flowcontrol_current_inqueue_requests",
            "Number of requests currently pending in queues of the API Priority and Fairness subsystem",
            inqueue.clone(),
        );
        // Both kinds from the start, as upstream: a dashboard sees 0 rather than nothing.
        for kind in ["readOnly", "mutating"] {
            drop(inflight.get_or_create(&KindLabels { request_kind: kind }));
        }
        Arc::new(Metrics {
            registry,
            requests,
            durations,
            inflight,
            longrunning,
            watchers,
            cache_lag,
            rejected,
            inqueue,
            flow,
            scrape: tokio::sync::Mutex::new(()),
        })
    }

    fn count(&self, labels: &RequestLabels, code: u16) {
        self.requests
            .get_or_create(&CodeLabels {
                request: labels.clone(),
                code,
            })
            .inc();
    }

    /// A request the flow control refused (429): counted as upstream counts it.
    pub fn rejected(&self, req: &Request, why: flow::Rejected) {
        let reason = match why {
            flow::Rejected::QueueFull => "queue-full",
            flow::Rejected::WaitedTooLong => "time-out",
        };
        self.rejected
            .get_or_create(&RejectedLabels {
                flow: FlowLabels {
                    priority_level: FLOW_LEVEL,
                    flow_schema: FLOW_LEVEL,
                },
                reason,
            })
            .inc();
        if let Some(c) = classify_request(req) {
            self.count(&c.labels, StatusCode::TOO_MANY_REQUESTS.as_u16());
        }
    }

    /// Sets the gauges read at scrape time (see the module docs).
    async fn refresh(&self, api: &Api) {
        for rt in RESOURCES {
            let n = api.caches.get(rt).watchers();
            self.watchers
                .get_or_create(&WatcherLabels {
                    group: rt.group,
                    version: rt.version,
                    kind: rt.kind,
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(control) = &self.flow {
            let queued = control.queued();
            self.inqueue
                .get_or_create(&FlowLabels {
                    priority_level: FLOW_LEVEL,
                    flow_schema: FLOW_LEVEL,
                })
                .set(i64::try_from(queued).unwrap_or(i64::MAX));
        }
        // The store's revision, as the caches' freshness check reads it.
        let Some(first) = RESOURCES.first() else { return };
        let store_rev = match tokio::time::timeout(STORE_READ_MAX, api.storage.get(&first.prefix(), true)).await {
            Ok(Ok((_, rev))) => rev,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "metrics: no store revision for the watch cache lag");
                self.cache_lag.clear();
                return;
            }
            Err(_) => {
                tracing::debug!("metrics: the store revision did not come in time");
                self.cache_lag.clear();
                return;
            }
        };
        let caught_up = RESOURCES.iter().map(|rt| {
            let cache = api.caches.get(rt).clone();
            async move {
                // A cache that does not catch up in time is simply behind: its lag says so.
                let _ = tokio::time::timeout(CATCH_UP_MAX, cache.wait_for(store_rev)).await;
                (rt, cache.revision())
            }
        });
        for (rt, rev) in futures::future::join_all(caught_up).await {
            self.cache_lag
                .get_or_create(&CacheLabels {
                    group: rt.group,
                    resource: rt.plural,
                })
                .set(store_rev.saturating_sub(rev).max(0));
        }
    }

    /// The body of `/metrics`: this server's metrics, then the process's.
    pub async fn render(&self, api: &Api) -> Result<String, std::fmt::Error> {
        let _one = self.scrape.lock().await;
        self.refresh(api).await;
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry)?;
        if let Some(process) = &api.config.process_metrics {
            prometheus_text::encode(&mut out, process)?;
        }
        Ok(out)
    }

    /// `GET /metrics`.
    pub async fn serve(&self, api: &Api) -> Response {
        match self.render(api).await {
            Ok(text) => {
                let mut r = Response::new(Body::from(text));
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
                r
            }
            Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "the metrics could not be encoded").into_response(),
        }
    }
}

/// A request's place in a gauge, given back when dropped (also when the client goes
/// away before the response is made).
struct Held(Gauge);

impl Held {
    fn new(gauge: Gauge) -> Held {
        gauge.inc();
        Held(gauge)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A long-running request: counted when its response body ends (or is dropped), with
/// the code its response started with.
struct LongRunning {
    metrics: Arc<Metrics>,
    labels: RequestLabels,
    /// Set once the response is made; a request dropped before is not counted.
    code: Option<u16>,
    _open: Held,
}

impl Drop for LongRunning {
    fn drop(&mut self) {
        if let Some(code) = self.code {
            self.metrics.count(&self.labels, code);
        }
    }
}

/// The middleware: records every resource request (see the module docs). Sits inside
/// the flow control, around the router.
pub async fn record(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let Some(c) = classify_request(&req) else {
        return next.run(req).await;
    };
    if c.long_running {
        let open = Held::new(metrics.longrunning.get_or_create_owned(&c.labels));
        let mut guard = LongRunning {
            metrics: metrics.clone(),
            labels: c.labels,
            code: None,
            _open: open,
        };
        let response = next.run(req).await;
        guard.code = Some(response.status().as_u16());
        // The body carries the guard: the request ends with it (a watch's last event,
        // or the client going away).
        let (parts, body) = response.into_parts();
        let body = http_body_util::BodyExt::map_frame(body, move |frame| {
            let _ = &guard;
            frame
        });
        return Response::from_parts(parts, Body::new(body));
    }
    let kind = if c.mutating { "mutating" } else { "readOnly" };
    let inflight = Held::new(metrics.inflight.get_or_create_owned(&KindLabels { request_kind: kind }));
    let start = Instant::now();
    let response = next.run(req).await;
    drop(inflight);
    metrics.count(&c.labels, response.status().as_u16());
    metrics
        .durations
        .get_or_create(&c.labels)
        .observe(start.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(method: &str, path: &str, query: Option<&str>) -> Classified {
        classify(method, path, query, None).unwrap_or_else(|| panic!("{method} {path} is a resource request"))
    }

    fn verb_scope(method: &str, path: &str, query: Option<&str>) -> (&'static str, &'static str) {
        let c = labels(method, path, query);
        (c.labels.verb, c.labels.scope)
    }

    #[test]
    fn verbs_and_scopes_are_upstreams() {
        let cms = "/api/v1/namespaces/default/configmaps";
        assert_eq!(verb_scope("GET", cms, None), ("LIST", "namespace"));
        assert_eq!(verb_scope("GET", "/api/v1/configmaps", None), ("LIST", "cluster"));
        assert_eq!(verb_scope("GET", &format!("{cms}/x"), None), ("GET", "resource"));
        assert_eq!(verb_scope("POST", cms, None), ("POST", "resource"));
        assert_eq!(verb_scope("PUT", &format!("{cms}/x"), None), ("PUT", "resource"));
        assert_eq!(verb_scope("PATCH", &format!("{cms}/x"), None), ("PATCH", "resource"));
        assert_eq!(verb_scope("DELETE", &format!("{cms}/x"), None), ("DELETE", "resource"));
        assert_eq!(verb_scope("DELETE", cms, None), ("DELETE", "namespace"));
        assert_eq!(verb_scope("GET", cms, Some("watch=true")), ("WATCH", "namespace"));
        assert_eq!(verb_scope("GET", cms, Some("watch=1&limit=5")), ("WATCH", "namespace"));
        assert_eq!(verb_scope("GET", cms, Some("watch=false")), ("LIST", "namespace"));
        assert_eq!(
            verb_scope("GET", "/api/v1/watch/namespaces/default/configmaps", None),
            ("WATCH", "namespace")
        );
        assert_eq!(verb_scope("OPTIONS", cms, None), ("other", "namespace"));
        // A namespace is a cluster-scoped object of its own.
        assert_eq!(
            verb_scope("GET", "/api/v1/namespaces/default", None),
            ("GET", "resource")
        );
        assert_eq!(verb_scope("GET", "/api/v1/namespaces", None), ("LIST", "cluster"));
        let apply = classify("PATCH", &format!("{cms}/x"), None, Some("application/apply-patch+yaml"))
            .expect("a resource request");
        assert_eq!(apply.labels.verb, "APPLY");
    }

    #[test]
    fn streaming_subresources_are_connect_and_long_running() {
        let log = labels("GET", "/api/v1/namespaces/default/pods/p/log", Some("follow=true"));
        assert_eq!((log.labels.verb, log.labels.subresource), ("CONNECT", "log"));
        assert!(log.long_running && !log.mutating);
        let exec = labels("POST", "/api/v1/namespaces/default/pods/p/exec", None);
        assert_eq!((exec.labels.verb, exec.labels.subresource), ("CONNECT", "exec"));
        assert!(exec.long_running);
        let watch = labels("GET", "/apis/apps/v1/deployments", Some("watch=true"));
        assert!(watch.long_running && !watch.mutating);
        // A watch of one object by name, which the handlers serve as a watch too.
        let one = labels("GET", "/api/v1/namespaces/default/pods/p", Some("watch=true"));
        assert_eq!(one.labels.verb, "WATCH");
        assert!(one.long_running);
        let list = labels("GET", "/apis/apps/v1/deployments", None);
        assert!(!list.long_running && !list.mutating);
        assert!(labels("POST", "/apis/apps/v1/namespaces/a/deployments", None).mutating);
        assert!(labels("DELETE", "/apis/apps/v1/namespaces/a/deployments/d", None).mutating);
    }

    #[test]
    fn label_values_are_bounded() {
        // Known: the served type's group, version and plural.
        let c = labels("PUT", "/apis/apps/v1/namespaces/ns-1/deployments/web/scale", None);
        assert_eq!(
            c.labels,
            RequestLabels {
                verb: "PUT",
                group: "apps",
                version: "v1",
                resource: "deployments",
                subresource: "scale",
                scope: "resource",
                component: "apiserver",
            }
        );
        // Unknown groups, versions, resources and subresources: empty, whatever the path.
        for (path, what) in [
            ("/apis/evil.example.com/v1/namespaces/a/things/b", "unknown group"),
            ("/apis/apps/v9/namespaces/a/deployments/b", "unknown version"),
            ("/api/v1/namespaces/a/widgets-1234/b", "unknown resource"),
        ] {
            let c = labels("GET", path, None);
            assert_eq!(
                (c.labels.group, c.labels.version, c.labels.resource),
                ("", "", ""),
                "{what}"
            );
            assert_eq!(c.labels.subresource, "", "{what}");
        }
        let c = labels("GET", "/api/v1/namespaces/a/pods/b/random-sub-7", None);
        assert_eq!((c.labels.resource, c.labels.subresource), ("pods", ""));
        // The reviews, answered in place, are named.
        let c = labels("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", None);
        assert_eq!(c.labels.resource, "selfsubjectaccessreviews");
        // Not resource requests: not recorded.
        for path in [
            "/metrics",
            "/healthz",
            "/api",
            "/apis/apps/v1",
            "/openapi/v2",
            "/version",
        ] {
            assert_eq!(classify("GET", path, None, None), None, "{path}");
        }
    }

    #[test]
    fn methods_outside_upstreams_list_are_other() {
        assert_eq!(method_verb("HEAD", "resource", None), "GET");
        assert_eq!(method_verb("OPTIONS", "resource", None), "other");
        assert_eq!(method_verb("TRACE", "cluster", None), "other");
        assert_eq!(
            method_verb("PATCH", "resource", Some("application/merge-patch+json")),
            "PATCH"
        );
    }

    #[test]
    fn the_text_format_has_upstreams_names_and_buckets() {
        let m = Metrics::new(None);
        let c = labels("GET", "/api/v1/namespaces/default/configmaps/x", None);
        m.count(&c.labels, 404);
        m.durations.get_or_create(&c.labels).observe(0.01);
        m.rejected(
            &Request::builder()
                .method("GET")
                .uri("/api/v1/pods")
                .body(Body::empty())
                .expect("a request"),
            flow::Rejected::QueueFull,
        );
        let mut out = String::new();
        prometheus_text::encode(&mut out, &m.registry).expect("encode");
        let get = r#"verb="GET",group="",version="v1",resource="configmaps",subresource="",scope="resource",component="apiserver""#;
        assert!(out.contains("# TYPE apiserver_request_total counter\n"), "{out}");
        assert!(
            out.contains(&format!("apiserver_request_total{{{get},code=\"404\"}} 1\n")),
            "{out}"
        );
        assert!(
            out.contains("# TYPE apiserver_request_duration_seconds histogram\n"),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "apiserver_request_duration_seconds_bucket{{{get},le=\"0.005\"}} 0\n"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "apiserver_request_duration_seconds_bucket{{{get},le=\"0.025\"}} 1\n"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "apiserver_request_duration_seconds_bucket{{{get},le=\"60\"}} 1\n"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "apiserver_request_duration_seconds_bucket{{{get},le=\"+Inf\"}} 1\n"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!("apiserver_request_duration_seconds_count{{{get}}} 1\n")),
            "{out}"
        );
        assert!(
            out.contains(r#"apiserver_current_inflight_requests{request_kind="readOnly"} 0"#),
            "{out}"
        );
        assert!(
            out.contains(r#"apiserver_current_inflight_requests{request_kind="mutating"} 0"#),
            "{out}"
        );
        assert!(
            out.contains(r#"apiserver_flowcontrol_rejected_requests_total{priority_level="global-default",flow_schema="global-default",reason="queue-full"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"apiserver_request_total{verb="LIST",group="",version="v1",resource="pods",subresource="",scope="cluster",component="apiserver",code="429"} 1"#),
            "{out}"
        );
        assert!(!out.contains("# EOF"), "the classic format has no EOF line");
    }

    #[test]
    fn buckets_are_upstreams() {
        assert_eq!(DURATION_BUCKETS.len(), 23);
        assert!(DURATION_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!((DURATION_BUCKETS[0], DURATION_BUCKETS[22]), (0.005, 60.0));
    }
}
