//! The Kubernetes and Service workloads of a chaos run, for clusters in the Kubernetes mode
//! ([`crate::cluster`]: masters running `capstan master`, nodes running `capstan agent`
//! and `capstan proxy`), and the checks of what they leave behind.
//!
//! # The API client
//!
//! [`KubeApi`] is a minimal client of the Kubernetes REST API over plain HTTP/1.1 (hyper,
//! JSON bodies, no kube-rs: the crate depends on no Capstan crate and needs a dozen
//! requests, not typed objects). It is given every master's API URL and keeps to the one
//! that answered last. A request goes to that master; when the connection is refused it
//! goes on to the next at once (nothing was sent, so nothing can have happened). Any
//! other failure (the per-request deadline passed, the connection broke after the request
//! went out) leaves the request **in doubt**: it may have been applied. Then, and after a
//! 5xx answer, the next request starts at the next master, so a paused or partitioned
//! master is left after one deadline. Answers are read whole, up to
//! [`BODY_BYTES_MAX`].
//!
//! # The Kubernetes workload
//!
//! [`run_kube_workload`] creates a namespace and `deployments` Deployments of small HTTP
//! servers (below), then, every `interval_ms` until stopped, either scales a Deployment
//! drawn at random to `1..=replicas_max` replicas, or rolls it (sets the template
//! annotation [`ROLL_ANNOTATION`] to a value new in the run, which makes the Deployment
//! controller roll out a new ReplicaSet). Choices come from a seed; timing does not. One
//! operation at a time: each is retried (a merge patch sets absolute values, so a retry
//! is idempotent) until it is acknowledged, definitely refused, or `op_deadline_ms`
//! passes, and recorded as a [`KubeOp`]: what it asked, when (ms from the run's origin),
//! its outcome, and how many of its attempts were left in doubt.
//!
//! Beside it an observer polls the namespace's pods every `observe_interval_ms` and, when
//! given the nodes' directories, which containers run on each node ([`live_containers`]:
//! the process runtime's `state.json` files checked against `/proc`). It records the
//! first sighting of each (pod uid, source, node): a pod's node never changes once set,
//! so a second node for one uid, whether the API said so or a container of that pod ran
//! there, is a pod bound twice.
//!
//! # The pods
//!
//! Each pod runs `sh -c 'echo $POD_NAME > index.html && exec python3 -m http.server 8080
//! --bind $POD_IP'` (python3 is what `make test-deps` needs anyway, for the venv of the
//! Python client's tests; tests/node.rs and tests/ha.rs serve the same way), with
//! `POD_NAME` and `POD_IP` from the downward API, an HTTP readiness probe every second and
//! a termination grace of 2 s. The image name is ignored by the process runtime.
//!
//! # The checks
//!
//! [`check_kube`] reads the namespace ([`read_snapshot`]: Deployments, ReplicaSets, pods,
//! and the nodes' running containers) until [`judge_kube`] finds nothing wrong or the
//! deadline passes, and names what was wrong at the end. [`judge_kube`] is a pure function
//! of the history and one snapshot, so that it can be tested on doctored inputs. Its
//! rules ([`ViolationKind`]):
//! - no pod bound twice (the observer's sightings, and a container running on a node
//!   other than its pod's);
//! - every Deployment whose creation was acknowledged exists, and no other does (one
//!   whose creation is in doubt may or may not);
//! - each field the workload sets (`spec.replicas`, the roll annotation) holds the value
//!   of the last acknowledged write to it, or of a write left in doubt: a write that never
//!   got an answer may take effect at any time after it was sent, so even one sent
//!   before the last acknowledged write may be the last applied;
//! - converged: the controller observed the current generation, the status counts equal
//!   `spec.replicas`, exactly one ReplicaSet has the current template (two would be a
//!   duplicate) and has `spec.replicas`, older ones are scaled to zero and empty, exactly
//!   `spec.replicas` pods exist for the Deployment, none terminating, each Running and
//!   Ready on a node, and each has a live container on that node; no container runs for
//!   a pod that is gone.
//!
//! Violations of the first three rules are final; the others may be a cluster still
//! converging, so the check waits for them.
//!
//! # The Service workload
//!
//! [`setup_service`] puts a Service (ClusterIP) in front of a Deployment of the same
//! servers kept at a fixed number of replicas (at least 2, so that one pod's restart does
//! not take the Service down), and waits until it answers. [`run_service_client`] then
//! sends `GET /` to the ClusterIP every `interval_ms` (one request at a time, each with
//! `timeout_ms` for connect, send and read; a request late by more than the interval is
//! followed at once by the next), through whichever node proxy the kernel hands the
//! connection to (every proxy listens on every ClusterIP with `SO_REUSEPORT`). A request
//! succeeds when the answer is `200` with a pod's name as its body. [`ServiceSummary`]
//! gives the success rate and the longest time without a success, times in ms from the
//! origin the caller gives, so that requests and faults share a clock.
//!
//! # Leases
//!
//! [`lease_holders`] reads the holders of `kube-system/kube-scheduler` and
//! `kube-system/kube-controller-manager`; a master's replicas campaign as
//! `<member name>_<host>_<pid>_<start>`, so [`crate::Cluster::member_of_identity`] maps a
//! holder to its master, and [`wait_lease_takeover`] times a failover.
//!
//! Left out, deliberately: deletes of Deployments, other kinds of objects (StatefulSets,
//! DaemonSets, Jobs), watches (polling is simpler to keep going through failovers, and a
//! double binding is permanent, so a poll cannot miss it for good), the pod-name check of
//! a pod Running on two nodes under two uids (names come from `generateName` here), and
//! TLS.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::cluster::{live_containers, NodeContainer, NodeRoot};
use crate::{mix64, ChaosError, Result, SplitMix64};

/// An API answer is read whole up to this size.
pub const BODY_BYTES_MAX: usize = 32 << 20;
/// Masters one client fails over between, at most.
pub const API_URLS_MAX: usize = 16;
/// Deployments in one workload, at most.
pub const DEPLOYMENTS_MAX: usize = 50;
/// Replicas of one Deployment, at most.
pub const REPLICAS_MAX: i32 = 20;
/// Operations recorded by one workload, at most (it stops choosing new ones beyond).
pub const OPS_MAX: usize = 1_000_000;
/// Distinct pod sightings recorded, at most (the rest are counted as dropped).
pub const OBSERVATIONS_MAX: usize = 200_000;
/// Service requests recorded, at most (the client stops beyond).
pub const SERVICE_REQUESTS_MAX: usize = 10_000_000;
/// Violations kept in a verdict, at most.
pub const VIOLATIONS_MAX: usize = 100;
/// The template annotation a roll changes.
pub const ROLL_ANNOTATION: &str = "capstan-chaos/roll";
/// The Lease of the active scheduler.
pub const SCHEDULER_LEASE: &str = "kube-scheduler";
/// The Lease of the active controller-manager.
pub const CONTROLLER_MANAGER_LEASE: &str = "kube-controller-manager";
/// The port the pods serve HTTP on.
pub const POD_PORT: u16 = 8080;
/// What each pod runs (see the module doc).
pub const POD_SCRIPT: &str = "echo $POD_NAME > index.html && exec python3 -m http.server 8080 --bind $POD_IP";
/// Pause between two attempts of one operation.
const RETRY_PAUSE_MS: u64 = 200;
/// Interval between two looks at a condition.
const POLL_INTERVAL_MS: u64 = 100;
/// A Service answer is read up to this size.
const SERVICE_BODY_BYTES_MAX: usize = 64 * 1024;

fn ms_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------
// The API client
// ---------------------------------------------------------------------------------------

/// A Kubernetes API client that fails over between the masters (see the module doc).
#[derive(Clone)]
pub struct KubeApi {
    client: Client<HttpConnector, Full<Bytes>>,
    urls: Arc<Vec<String>>,
    /// Index of the master to try first.
    current: Arc<AtomicUsize>,
    timeout: Duration,
}

/// An HTTP answer from a master.
#[derive(Clone, Debug)]
pub struct ApiAnswer {
    pub status: u16,
    pub body: Bytes,
    /// The master that answered.
    pub url: String,
}

impl ApiAnswer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ChaosError::Kube(format!("an answer from {} that is not JSON: {e}", self.url)))
    }

    /// The body, short, for messages.
    pub fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.chars().take(300).collect()
    }
}

/// A request that got no answer.
#[derive(Clone, Debug)]
pub struct ApiFailure {
    /// False when no master accepted the connection: the request was not sent, so it
    /// cannot have been applied. True: in doubt.
    pub sent: bool,
    pub message: String,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.sent { "in doubt" } else { "not sent" };
        write!(f, "{} ({what})", self.message)
    }
}

impl KubeApi {
    /// A client of the APIs at `urls` (`http://host:port`, 1..=[`API_URLS_MAX`]), each
    /// request with `timeout_ms` to connect, send and read the answer.
    pub fn new(urls: Vec<String>, timeout_ms: u64) -> Result<KubeApi> {
        if urls.is_empty() || urls.len() > API_URLS_MAX {
            return Err(ChaosError::InvalidConfig(format!(
                "1..={API_URLS_MAX} API URLs, not {}",
                urls.len()
            )));
        }
        if let Some(bad) = urls.iter().find(|u| !u.starts_with("http://")) {
            return Err(ChaosError::InvalidConfig(format!(
                "API URL {bad:?}: only http:// is supported"
            )));
        }
        if timeout_ms == 0 {
            return Err(ChaosError::InvalidConfig("timeout_ms must be above 0".into()));
        }
        let timeout = Duration::from_millis(timeout_ms);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(4)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(KubeApi {
            client,
            urls: Arc::new(urls.into_iter().map(|u| u.trim_end_matches('/').to_string()).collect()),
            current: Arc::new(AtomicUsize::new(0)),
            timeout,
        })
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The master the next request goes to first.
    pub fn current_url(&self) -> &str {
        &self.urls[self.current.load(Ordering::Relaxed) % self.urls.len()]
    }

    /// One request, failing over on refused connections (see the module doc). `body` is
    /// JSON sent with `content_type`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, &Value)>,
    ) -> std::result::Result<ApiAnswer, ApiFailure> {
        let n = self.urls.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let bytes = body.map(|(_, v)| Bytes::from(v.to_string())).unwrap_or_default();
        let mut refused = Vec::new();
        for k in 0..n {
            let i = (first + k) % n;
            let url = format!("{}{path}", self.urls[i]);
            let mut builder = Request::builder()
                .method(method.clone())
                .uri(&url)
                .header("accept", "application/json");
            if let Some((content_type, _)) = body {
                builder = builder.header("content-type", content_type);
            }
            let request = builder.body(Full::new(bytes.clone())).map_err(|e| ApiFailure {
                sent: false,
                message: format!("{method} {url}: {e}"),
            })?;
            let attempt = tokio::time::timeout(self.timeout, async {
                let response = self
                    .client
                    .request(request)
                    .await
                    .map_err(|e| (e.is_connect(), e.to_string()))?;
                let status = response.status().as_u16();
                let body = Limited::new(response.into_body(), BODY_BYTES_MAX)
                    .collect()
                    .await
                    .map_err(|e| (false, format!("reading the answer: {e}")))?
                    .to_bytes();
                Ok::<_, (bool, String)>((status, body))
            })
            .await;
            let next = (i + 1) % n;
            match attempt {
                Ok(Ok((status, body))) => {
                    self.current
                        .store(if status >= 500 { next } else { i }, Ordering::Relaxed);
                    return Ok(ApiAnswer {
                        status,
                        body,
                        url: self.urls[i].clone(),
                    });
                }
                Ok(Err((true, e))) => refused.push(format!("{}: {e}", self.urls[i])),
                Ok(Err((false, e))) => {
                    self.current.store(next, Ordering::Relaxed);
                    return Err(ApiFailure {
                        sent: true,
                        message: format!("{method} {url}: {e}"),
                    });
                }
                Err(_) => {
                    self.current.store(next, Ordering::Relaxed);
                    return Err(ApiFailure {
                        sent: true,
                        message: format!("{method} {url}: no answer within {} ms", self.timeout.as_millis()),
                    });
                }
            }
        }
        Err(ApiFailure {
            sent: false,
            message: format!("{method} {path}: no master accepted: {}", refused.join("; ")),
        })
    }

    /// GET `path` as JSON; `None` on 404. Any other failure is an error.
    pub async fn get(&self, path: &str) -> Result<Option<Value>> {
        let answer = self
            .request(Method::GET, path, None)
            .await
            .map_err(|e| ChaosError::Kube(e.to_string()))?;
        match answer.status {
            404 => Ok(None),
            _ if answer.is_success() => answer.json().map(Some),
            status => Err(ChaosError::Kube(format!(
                "GET {path} on {}: {status}: {}",
                answer.url,
                answer.text()
            ))),
        }
    }

    /// The items of the list at `path` (a 404 is an error: lists exist).
    pub async fn list(&self, path: &str) -> Result<Vec<Value>> {
        let list = self
            .get(path)
            .await?
            .ok_or_else(|| ChaosError::Kube(format!("GET {path}: 404")))?;
        match list.get("items") {
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(Value::Null) | None => Ok(Vec::new()),
            Some(other) => Err(ChaosError::Kube(format!("GET {path}: items is not a list: {other}"))),
        }
    }

    /// Retries GET `path` until it succeeds or `deadline` passes.
    async fn get_until(&self, path: &str, deadline: Instant) -> Result<Option<Value>> {
        loop {
            match self.get(path).await {
                Ok(v) => return Ok(v),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await,
            }
        }
    }

    /// Creates the object `body` at `path` (a collection), retrying until it is created
    /// or found to exist already (409), or `deadline` passes.
    async fn create_until(&self, path: &str, body: &Value, deadline: Instant) -> Result<()> {
        loop {
            let error = match self.request(Method::POST, path, Some(("application/json", body))).await {
                Ok(a) if a.is_success() || a.status == 409 => return Ok(()),
                Ok(a) if a.status < 500 && a.status != 429 => {
                    return Err(ChaosError::Kube(format!(
                        "POST {path} on {}: {}: {}",
                        a.url,
                        a.status,
                        a.text()
                    )))
                }
                Ok(a) => format!("POST {path} on {}: {}: {}", a.url, a.status, a.text()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(ChaosError::Timeout(format!("creating {path}: {error}")));
            }
            tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
        }
    }
}

fn deployments_path(namespace: &str) -> String {
    format!("/apis/apps/v1/namespaces/{namespace}/deployments")
}

fn replicasets_path(namespace: &str) -> String {
    format!("/apis/apps/v1/namespaces/{namespace}/replicasets")
}

fn pods_path(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/pods")
}

fn text_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |v, key| v.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn int_at(v: &Value, path: &[&str]) -> Option<i64> {
    path.iter().try_fold(v, |v, key| v.get(key)).and_then(Value::as_i64)
}

fn name_of(v: &Value) -> &str {
    text_at(v, &["metadata", "name"])
}

fn uid_of(v: &Value) -> &str {
    text_at(v, &["metadata", "uid"])
}

fn deleting(v: &Value) -> bool {
    v.get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|t| !t.is_null())
}

/// The uid of `v`'s controller (the owner reference with `controller: true`).
fn controller_uid(v: &Value) -> Option<&str> {
    v.get("metadata")?
        .get("ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
}

fn roll_of_template(v: &Value) -> Option<&str> {
    v.get("spec")?
        .get("template")?
        .get("metadata")?
        .get("annotations")?
        .get(ROLL_ANNOTATION)?
        .as_str()
}

fn pod_running_and_ready(pod: &Value) -> bool {
    text_at(pod, &["status", "phase"]) == "Running"
        && pod
            .get("status")
            .and_then(|s| s.get("conditions"))
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| text_at(c, &["type"]) == "Ready" && text_at(c, &["status"]) == "True")
            })
}

/// The Deployment the workloads create: `replicas` pods of the HTTP server, labelled
/// `app=<name>`, with the roll annotation at `0`.
pub fn deployment_body(name: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "capstan-chaos"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"capstan-chaos/roll": "0"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "http",
                        "image": "python:3",
                        "command": ["sh", "-c", POD_SCRIPT],
                        "env": [
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                        ],
                        "ports": [{"name": "http", "containerPort": POD_PORT}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
                    }]
                }
            }
        }
    })
}

async fn ensure_namespace(api: &KubeApi, namespace: &str, deadline: Instant) -> Result<()> {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    api.create_until("/api/v1/namespaces", &body, deadline).await
}

// ---------------------------------------------------------------------------------------
// The Kubernetes workload
// ---------------------------------------------------------------------------------------

/// Live counters of a running workload, for a caller that waits on its progress.
#[derive(Debug, Default)]
pub struct KubeLive {
    acknowledged: AtomicU64,
    /// The end of the last acknowledged operation, ms from the origin, plus one (0: none).
    last_acknowledged_end: AtomicU64,
    /// Pod polls that succeeded.
    polls: AtomicU64,
}

impl KubeLive {
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// When the last acknowledged operation ended, ms from the origin.
    pub fn last_acknowledged_ms(&self) -> Option<u64> {
        self.last_acknowledged_end.load(Ordering::Relaxed).checked_sub(1)
    }

    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Debug)]
pub struct KubeWorkloadConfig {
    pub namespace: String,
    /// Deployments, 1..=[`DEPLOYMENTS_MAX`], named `d0`, `d1`...
    pub deployments: usize,
    /// Scales draw from `1..=replicas_max` (at most [`REPLICAS_MAX`]); so do creations.
    pub replicas_max: i32,
    /// Between the starts of two operations (an operation that takes longer delays the
    /// next).
    pub interval_ms: u64,
    /// Share of rolls among the operations, in percent; the rest are scales.
    pub roll_percent: u64,
    pub seed: u64,
    /// How long one operation is retried before it is recorded as it stands.
    pub op_deadline_ms: u64,
    /// Between two polls of the pods (and of the nodes' containers).
    pub observe_interval_ms: u64,
    /// The nodes' directories, to see which containers run where; empty: the API only.
    pub node_roots: Vec<NodeRoot>,
    /// Times are ms from here.
    pub origin: Instant,
    pub live: Option<Arc<KubeLive>>,
}

impl KubeWorkloadConfig {
    pub fn new(origin: Instant) -> KubeWorkloadConfig {
        KubeWorkloadConfig {
            namespace: "chaos-kube".into(),
            deployments: 3,
            replicas_max: 3,
            interval_ms: 1_000,
            roll_percent: 30,
            seed: 1,
            op_deadline_ms: 15_000,
            observe_interval_ms: 500,
            node_roots: Vec::new(),
            origin,
            live: None,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ChaosError::InvalidConfig(m));
        if self.deployments == 0 || self.deployments > DEPLOYMENTS_MAX {
            return bad(format!("deployments: 1..={DEPLOYMENTS_MAX}, not {}", self.deployments));
        }
        if !(1..=REPLICAS_MAX).contains(&self.replicas_max) {
            return bad(format!("replicas_max: 1..={REPLICAS_MAX}, not {}", self.replicas_max));
        }
        if self.interval_ms == 0 || self.observe_interval_ms == 0 || self.op_deadline_ms == 0 {
            return bad("interval_ms, observe_interval_ms and op_deadline_ms must be above 0".into());
        }
        if self.roll_percent > 100 {
            return bad(format!("roll_percent: 0..=100, not {}", self.roll_percent));
        }
        if self.namespace.is_empty() || self.namespace.len() > 63 {
            return bad(format!("namespace {:?}: 1 to 63 characters", self.namespace));
        }
        Ok(())
    }
}

/// What an operation asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum KubeAction {
    /// Create the Deployment with this many replicas (and the roll annotation at 0).
    Create {
        replicas: i32,
    },
    Scale {
        replicas: i32,
    },
    /// Set the roll annotation to this value.
    Roll {
        roll: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum KubeOutcome {
    /// An attempt was answered with success (or, for a creation, "already exists").
    Acknowledged,
    /// No attempt was acknowledged and none is in doubt: it was not applied.
    Failed,
    /// No attempt was acknowledged and at least one is in doubt.
    Unknown,
}

/// One operation of the workload.
#[derive(Clone, Debug, Serialize)]
pub struct KubeOp {
    pub deployment: String,
    pub action: KubeAction,
    /// When the first attempt was sent and when the last ended, ms from the origin.
    pub start_ms: u64,
    pub end_ms: u64,
    pub outcome: KubeOutcome,
    pub attempts: u32,
    /// Attempts that got no answer after they were sent, or a 5xx/429: each may have
    /// been applied, at any time after it was sent.
    pub in_doubt_attempts: u32,
    /// The last attempt's error, if it failed.
    pub error: Option<String>,
}

/// Where a pod was seen bound or running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ObservationSource {
    /// `spec.nodeName` in the API.
    Api,
    /// A live container of the pod under the node's directory.
    Runtime,
}

/// The first sighting of a pod (by uid) on a node from one source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodObservation {
    pub at_ms: u64,
    pub source: ObservationSource,
    pub uid: String,
    pub pod: String,
    pub node: String,
}

/// What the Kubernetes workload did and saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KubeHistory {
    pub namespace: String,
    /// The workload's Deployments, in creation order.
    pub deployments: Vec<String>,
    pub ops: Vec<KubeOp>,
    pub observations: Vec<PodObservation>,
    pub observations_dropped: u64,
    pub api_polls: u64,
    pub api_poll_errors: u64,
    pub runtime_polls: u64,
}

impl KubeHistory {
    fn count(&self, outcome: KubeOutcome) -> usize {
        self.ops.iter().filter(|o| o.outcome == outcome).count()
    }

    pub fn acknowledged(&self) -> usize {
        self.count(KubeOutcome::Acknowledged)
    }

    pub fn unknown(&self) -> usize {
        self.count(KubeOutcome::Unknown)
    }

    pub fn failed(&self) -> usize {
        self.count(KubeOutcome::Failed)
    }
}

/// Runs the Kubernetes workload until `stop` reads true (see the module doc). Errors only
/// on a bad configuration, or when the namespace cannot be created within
/// `op_deadline_ms`; operations that fail are recorded.
pub async fn run_kube_workload(
    api: &KubeApi,
    config: KubeWorkloadConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<KubeHistory> {
    config.validate()?;
    let origin = config.origin;
    let observer = tokio::spawn(observe_pods(
        api.clone(),
        config.namespace.clone(),
        config.node_roots.clone(),
        Duration::from_millis(config.observe_interval_ms),
        origin,
        config.live.clone(),
        stop.clone(),
    ));
    let namespace_deadline = Instant::now() + Duration::from_millis(config.op_deadline_ms);
    if let Err(e) = ensure_namespace(api, &config.namespace, namespace_deadline).await {
        observer.abort();
        return Err(e);
    }
    let mut rng = SplitMix64::new(mix64(config.seed ^ 0x6b75_6265));
    let names: Vec<String> = (0..config.deployments).map(|i| format!("d{i}")).collect();
    let mut ops = Vec::new();
    for name in &names {
        let replicas = 1 + rng.below(config.replicas_max as u64) as i32;
        let op = perform(api, &config, name, KubeAction::Create { replicas }).await;
        ops.push(op);
    }
    let mut ticker = tokio::time::interval(Duration::from_millis(config.interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut next_roll: u64 = 1;
    while ops.len() < OPS_MAX && !*stop.borrow() {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => continue,
        }
        if *stop.borrow() {
            break;
        }
        let name = &names[rng.below(names.len() as u64) as usize];
        let action = if rng.percent(config.roll_percent) {
            next_roll += 1;
            KubeAction::Roll { roll: next_roll - 1 }
        } else {
            KubeAction::Scale {
                replicas: 1 + rng.below(config.replicas_max as u64) as i32,
            }
        };
        ops.push(perform(api, &config, name, action).await);
    }
    let observed = match observer.await {
        Ok(o) => o,
        Err(e) => return Err(ChaosError::Task(format!("the pod observer: {e}"))),
    };
    Ok(KubeHistory {
        namespace: config.namespace,
        deployments: names,
        ops,
        observations: observed.observations,
        observations_dropped: observed.dropped,
        api_polls: observed.api_polls,
        api_poll_errors: observed.api_poll_errors,
        runtime_polls: observed.runtime_polls,
    })
}

/// One operation, retried until acknowledged, definitely refused, or its deadline.
async fn perform(api: &KubeApi, config: &KubeWorkloadConfig, name: &str, action: KubeAction) -> KubeOp {
    let ns = &config.namespace;
    let (method, path, body, content_type) = match &action {
        KubeAction::Create { replicas } => (
            Method::POST,
            deployments_path(ns),
            deployment_body(name, *replicas),
            "application/json",
        ),
        KubeAction::Scale { replicas } => (
            Method::PATCH,
            format!("{}/{name}", deployments_path(ns)),
            json!({"spec": {"replicas": replicas}}),
            "application/merge-patch+json",
        ),
        KubeAction::Roll { roll } => (
            Method::PATCH,
            format!("{}/{name}", deployments_path(ns)),
            json!({"spec": {"template": {"metadata": {"annotations": {"capstan-chaos/roll": roll.to_string()}}}}}),
            "application/merge-patch+json",
        ),
    };
    let create = matches!(action, KubeAction::Create { .. });
    let start_ms = ms_since(config.origin);
    let deadline = Instant::now() + Duration::from_millis(config.op_deadline_ms);
    let (mut attempts, mut in_doubt) = (0u32, 0u32);
    let mut acknowledged = false;
    let mut error;
    loop {
        attempts += 1;
        let retry = match api.request(method.clone(), &path, Some((content_type, &body))).await {
            Ok(a) if a.is_success() || (create && a.status == 409) => {
                acknowledged = true;
                error = None;
                false
            }
            Ok(a) => {
                error = Some(format!("{method} {path} on {}: {}: {}", a.url, a.status, a.text()));
                if a.status >= 500 || a.status == 429 {
                    // The server may have applied it before it failed (a write that
                    // timed out in the store may still commit).
                    in_doubt += 1;
                    true
                } else {
                    // Refused as it stands: a conflict is worth retrying, the rest
                    // (404: no such Deployment, 422: invalid) would be refused again.
                    a.status == 409
                }
            }
            Err(e) => {
                if e.sent {
                    in_doubt += 1;
                }
                error = Some(e.to_string());
                true
            }
        };
        if !retry || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
    }
    let end_ms = ms_since(config.origin);
    let outcome = if acknowledged {
        if let Some(live) = &config.live {
            live.acknowledged.fetch_add(1, Ordering::Relaxed);
            live.last_acknowledged_end.fetch_max(end_ms + 1, Ordering::Relaxed);
        }
        KubeOutcome::Acknowledged
    } else if in_doubt > 0 {
        KubeOutcome::Unknown
    } else {
        KubeOutcome::Failed
    };
    tracing::debug!(
        deployment = name,
        ?action,
        ?outcome,
        attempts,
        in_doubt,
        "kube workload operation"
    );
    KubeOp {
        deployment: name.to_string(),
        action,
        start_ms,
        end_ms,
        outcome,
        attempts,
        in_doubt_attempts: in_doubt,
        error,
    }
}

#[derive(Default)]
struct Observed {
    observations: Vec<PodObservation>,
    dropped: u64,
    api_polls: u64,
    api_poll_errors: u64,
    runtime_polls: u64,
}

impl Observed {
    fn record(&mut self, seen: &mut HashSet<(String, ObservationSource, String)>, observation: PodObservation) {
        let key = (observation.uid.clone(), observation.source, observation.node.clone());
        if seen.contains(&key) {
            return;
        }
        if self.observations.len() >= OBSERVATIONS_MAX {
            self.dropped += 1;
            return;
        }
        seen.insert(key);
        self.observations.push(observation);
    }
}

/// Polls the pods of `namespace` (and the nodes' containers) until `stop`.
async fn observe_pods(
    api: KubeApi,
    namespace: String,
    roots: Vec<NodeRoot>,
    interval: Duration,
    origin: Instant,
    live: Option<Arc<KubeLive>>,
    mut stop: watch::Receiver<bool>,
) -> Observed {
    let mut observed = Observed::default();
    let mut seen = HashSet::new();
    let path = pods_path(&namespace);
    while !*stop.borrow() {
        match api.list(&path).await {
            Ok(pods) => {
                observed.api_polls += 1;
                if let Some(live) = &live {
                    live.polls.fetch_add(1, Ordering::Relaxed);
                }
                let at_ms = ms_since(origin);
                for pod in &pods {
                    let node = text_at(pod, &["spec", "nodeName"]);
                    if node.is_empty() || uid_of(pod).is_empty() {
                        continue;
                    }
                    let observation = PodObservation {
                        at_ms,
                        source: ObservationSource::Api,
                        uid: uid_of(pod).to_string(),
                        pod: name_of(pod).to_string(),
                        node: node.to_string(),
                    };
                    observed.record(&mut seen, observation);
                }
            }
            Err(e) => {
                observed.api_poll_errors += 1;
                tracing::debug!(error = %e, "polling the pods failed");
            }
        }
        if !roots.is_empty() {
            let r = roots.clone();
            if let Ok(containers) =
                tokio::task::spawn_blocking(move || r.iter().flat_map(live_containers).collect::<Vec<_>>()).await
            {
                observed.runtime_polls += 1;
                let at_ms = ms_since(origin);
                for c in containers.into_iter().filter(|c| c.namespace == namespace) {
                    let observation = PodObservation {
                        at_ms,
                        source: ObservationSource::Runtime,
                        uid: c.pod_uid,
                        pod: c.pod_name,
                        node: c.node,
                    };
                    observed.record(&mut seen, observation);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
    }
    observed
}

// ---------------------------------------------------------------------------------------
// The Service workload
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub namespace: String,
    /// The Deployment's and the Service's name.
    pub name: String,
    /// The Deployment's replicas, at least 2 (see the module doc), at most [`REPLICAS_MAX`].
    pub replicas: i32,
    /// The Service's port (unprivileged by default, so that no root is needed).
    pub port: u16,
    /// How long the setup may take, the pods' start included.
    pub deadline_ms: u64,
}

impl ServiceConfig {
    pub fn new(namespace: &str) -> ServiceConfig {
        ServiceConfig {
            namespace: namespace.into(),
            name: "web".into(),
            replicas: 2,
            port: 8080,
            deadline_ms: 120_000,
        }
    }
}

/// A Deployment whose replicas nothing changes, for [`judge_kube`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FixedDeployment {
    pub name: String,
    pub replicas: i32,
}

/// A Service that answers, ready for [`run_service_client`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceTarget {
    pub namespace: String,
    pub deployment: String,
    pub replicas: i32,
    /// ClusterIP:port.
    pub addr: SocketAddr,
}

impl ServiceTarget {
    /// Its Deployment, for [`check_kube`].
    pub fn fixed(&self) -> FixedDeployment {
        FixedDeployment {
            name: self.deployment.clone(),
            replicas: self.replicas,
        }
    }
}

/// Creates the namespace (if need be), the Deployment and the Service, and waits until a
/// request through the ClusterIP gets a pod's answer.
pub async fn setup_service(api: &KubeApi, config: &ServiceConfig) -> Result<ServiceTarget> {
    if !(2..=REPLICAS_MAX).contains(&config.replicas) {
        return Err(ChaosError::InvalidConfig(format!(
            "service replicas: 2..={REPLICAS_MAX}, not {}",
            config.replicas
        )));
    }
    let deadline = Instant::now() + Duration::from_millis(config.deadline_ms);
    let ns = &config.namespace;
    ensure_namespace(api, ns, deadline).await?;
    api.create_until(
        &deployments_path(ns),
        &deployment_body(&config.name, config.replicas),
        deadline,
    )
    .await?;
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": config.name},
        "spec": {
            "selector": {"app": config.name},
            "ports": [{"name": "http", "port": config.port, "targetPort": "http"}]
        }
    });
    let services = format!("/api/v1/namespaces/{ns}/services");
    api.create_until(&services, &service, deadline).await?;
    let service = api
        .get_until(&format!("{services}/{}", config.name), deadline)
        .await?
        .ok_or_else(|| ChaosError::Kube(format!("Service {ns}/{} is gone after its creation", config.name)))?;
    let ip = text_at(&service, &["spec", "clusterIP"]);
    let addr: SocketAddr = format!("{ip}:{}", config.port)
        .parse()
        .map_err(|e| ChaosError::Kube(format!("Service {ns}/{}: ClusterIP {ip:?}: {e}", config.name)))?;
    let prefix = format!("{}-", config.name);
    let timeout = Duration::from_millis(1_000);
    loop {
        let last = match service_get(addr, timeout).await {
            Ok(body) if body.starts_with(&prefix) => {
                return Ok(ServiceTarget {
                    namespace: ns.clone(),
                    deployment: config.name.clone(),
                    replicas: config.replicas,
                    addr,
                })
            }
            Ok(body) => format!("unexpected answer {body:?}"),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(ChaosError::Timeout(format!(
                "Service {ns}/{} at {addr} did not answer within {} ms; last: {last}",
                config.name, config.deadline_ms
            )));
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

/// `GET /` over HTTP/1.0 at `addr` within `timeout`: the body of a 200 answer, trimmed.
async fn service_get(addr: SocketAddr, timeout: Duration) -> std::result::Result<String, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: capstan-chaos\r\n\r\n")
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(SERVICE_BODY_BYTES_MAX as u64)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<_, String>(answer)
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))??;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP answer ({} bytes)", answer.len()))?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(format!("status {status}"));
    }
    Ok(body.trim().to_string())
}

/// Live counters of a running Service client.
#[derive(Debug, Default)]
pub struct ServiceLive {
    requests: AtomicU64,
    successes: AtomicU64,
    /// The end of the last success, ms from the origin, plus one (0: none).
    last_success_end: AtomicU64,
}

impl ServiceLive {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    /// When the last success ended, ms from the origin.
    pub fn last_success_ms(&self) -> Option<u64> {
        self.last_success_end.load(Ordering::Relaxed).checked_sub(1)
    }
}

#[derive(Clone, Debug)]
pub struct ServiceClientConfig {
    /// Between the starts of two requests.
    pub interval_ms: u64,
    /// Each request's deadline (connect, send, read).
    pub timeout_ms: u64,
    /// Requests recorded, at most ([`SERVICE_REQUESTS_MAX`]); the client stops beyond.
    pub requests_max: usize,
    pub live: Option<Arc<ServiceLive>>,
}

impl Default for ServiceClientConfig {
    fn default() -> ServiceClientConfig {
        ServiceClientConfig {
            interval_ms: 50,
            timeout_ms: 1_000,
            requests_max: 1_000_000,
            live: None,
        }
    }
}

/// One request through the Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceRequest {
    /// Sent and ended, ms from the origin.
    pub start_ms: u64,
    pub end_ms: u64,
    pub ok: bool,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ServiceHistory {
    pub target: Option<ServiceTarget>,
    pub requests: Vec<ServiceRequest>,
}

/// The Service client's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceSummary {
    pub requests: usize,
    pub successes: usize,
    /// successes / requests (0 without requests).
    pub success_rate: f64,
    /// The longest time without a success: between two successes' ends, or from the first
    /// request's start to the first success, or from the last success to the last
    /// request's end (the whole run without any success).
    pub longest_gap_ms: u64,
    pub longest_gap_from_ms: u64,
    pub longest_gap_to_ms: u64,
}

impl ServiceHistory {
    pub fn summary(&self) -> ServiceSummary {
        let successes: Vec<u64> = self.requests.iter().filter(|r| r.ok).map(|r| r.end_ms).collect();
        let (Some(first), Some(last)) = (self.requests.first(), self.requests.last()) else {
            return ServiceSummary {
                requests: 0,
                successes: 0,
                success_rate: 0.0,
                longest_gap_ms: 0,
                longest_gap_from_ms: 0,
                longest_gap_to_ms: 0,
            };
        };
        let end = self.requests.iter().map(|r| r.end_ms).max().unwrap_or(last.end_ms);
        let mut points = vec![first.start_ms];
        points.extend(successes.iter().copied());
        points.push(end.max(first.start_ms));
        points.sort_unstable();
        let (from, to) = points
            .windows(2)
            .map(|w| (w[0], w[1]))
            .max_by_key(|(a, b)| (b - a, std::cmp::Reverse(*a)))
            .unwrap_or((first.start_ms, first.start_ms));
        ServiceSummary {
            requests: self.requests.len(),
            successes: successes.len(),
            success_rate: successes.len() as f64 / self.requests.len() as f64,
            longest_gap_ms: to - from,
            longest_gap_from_ms: from,
            longest_gap_to_ms: to,
        }
    }

    /// Successes that were sent at or after `from_ms` and ended by `to_ms`.
    pub fn successes_between(&self, from_ms: u64, to_ms: u64) -> usize {
        self.requests
            .iter()
            .filter(|r| r.ok && r.start_ms >= from_ms && r.end_ms <= to_ms)
            .count()
    }
}

/// Sends requests to `target` until `stop` reads true (see the module doc).
pub async fn run_service_client(
    target: &ServiceTarget,
    config: ServiceClientConfig,
    origin: Instant,
    mut stop: watch::Receiver<bool>,
) -> Result<ServiceHistory> {
    if config.interval_ms == 0 || config.timeout_ms == 0 {
        return Err(ChaosError::InvalidConfig(
            "interval_ms and timeout_ms must be above 0".into(),
        ));
    }
    let requests_max = config.requests_max.min(SERVICE_REQUESTS_MAX);
    let prefix = format!("{}-", target.deployment);
    let timeout = Duration::from_millis(config.timeout_ms);
    let mut ticker = tokio::time::interval(Duration::from_millis(config.interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut requests = Vec::new();
    while requests.len() < requests_max && !*stop.borrow() {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => continue,
        }
        let start_ms = ms_since(origin);
        let result = service_get(target.addr, timeout).await;
        let end_ms = ms_since(origin);
        let (ok, error) = match result {
            Ok(body) if body.starts_with(&prefix) => (true, None),
            Ok(body) => (
                false,
                Some(format!(
                    "unexpected answer {:?}",
                    body.chars().take(80).collect::<String>()
                )),
            ),
            Err(e) => (false, Some(e)),
        };
        if let Some(live) = &config.live {
            live.requests.fetch_add(1, Ordering::Relaxed);
            if ok {
                live.successes.fetch_add(1, Ordering::Relaxed);
                live.last_success_end.fetch_max(end_ms + 1, Ordering::Relaxed);
            }
        }
        requests.push(ServiceRequest {
            start_ms,
            end_ms,
            ok,
            error,
        });
    }
    Ok(ServiceHistory {
        target: Some(target.clone()),
        requests,
    })
}

// ---------------------------------------------------------------------------------------
// Leases and nodes
// ---------------------------------------------------------------------------------------

/// The holders of the scheduler's and the controller-manager's Leases.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LeaseHolders {
    pub scheduler: Option<String>,
    pub controller_manager: Option<String>,
}

/// The holder of Lease `kube-system/<name>`; `None` when the Lease or its holder is absent.
pub async fn lease_holder(api: &KubeApi, name: &str) -> Result<Option<String>> {
    let lease = api
        .get(&format!(
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}"
        ))
        .await?;
    Ok(lease
        .map(|l| text_at(&l, &["spec", "holderIdentity"]).to_string())
        .filter(|h| !h.is_empty()))
}

pub async fn lease_holders(api: &KubeApi) -> Result<LeaseHolders> {
    Ok(LeaseHolders {
        scheduler: lease_holder(api, SCHEDULER_LEASE).await?,
        controller_manager: lease_holder(api, CONTROLLER_MANAGER_LEASE).await?,
    })
}

/// Polls Lease `kube-system/<name>` until a holder other than `from` holds it, or
/// `deadline_ms` passes; returns the new holder. Failed reads are retried.
pub async fn wait_lease_takeover(api: &KubeApi, name: &str, from: &str, deadline_ms: u64) -> Result<String> {
    let deadline = Instant::now() + Duration::from_millis(deadline_ms);
    loop {
        let seen = match lease_holder(api, name).await {
            Ok(Some(h)) if h != from => return Ok(h),
            Ok(h) => format!("holder {h:?}"),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(ChaosError::Timeout(format!(
                "Lease kube-system/{name} still not taken over from {from} after {deadline_ms} ms; last: {seen}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

/// Polls the Nodes until at least `count` have `Ready=True`, or `deadline_ms` passes;
/// returns their names.
pub async fn wait_nodes_ready(api: &KubeApi, count: usize, deadline_ms: u64) -> Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_millis(deadline_ms);
    loop {
        let seen = match api.list("/api/v1/nodes").await {
            Ok(nodes) => {
                let ready: Vec<String> = nodes
                    .iter()
                    .filter(|n| {
                        n.get("status")
                            .and_then(|s| s.get("conditions"))
                            .and_then(Value::as_array)
                            .is_some_and(|cs| {
                                cs.iter()
                                    .any(|c| text_at(c, &["type"]) == "Ready" && text_at(c, &["status"]) == "True")
                            })
                    })
                    .map(|n| name_of(n).to_string())
                    .collect();
                if ready.len() >= count {
                    return Ok(ready);
                }
                format!("Ready: {ready:?}")
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(ChaosError::Timeout(format!(
                "{count} Ready nodes not within {deadline_ms} ms; last: {seen}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------

/// What kind of promise was broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ViolationKind {
    /// One pod (uid) on two nodes.
    BoundTwice,
    /// A Deployment whose creation was acknowledged (or a fixed one) does not exist, or
    /// is being deleted.
    MissingDeployment,
    /// A Deployment the workload did not create (or whose creation definitely failed).
    UnexpectedDeployment,
    /// A field holds a value no acknowledged or in-doubt write put there.
    WrongSpec,
    /// The controller has not observed the current generation.
    NotObserved,
    /// Not exactly `spec.replicas` pods (or status counts, or current ReplicaSet size).
    WrongReplicas,
    /// Two ReplicaSets of one Deployment have the current template.
    DuplicateReplicaSets,
    /// Pods of older ReplicaSets, terminating pods, older ReplicaSets not scaled to zero,
    /// pods with the Deployment's labels and no owner.
    StalePods,
    /// A pod of the right ReplicaSet that is not Running and Ready on a node.
    NotReady,
    /// A container runs for a pod that is gone or being deleted.
    StrayContainer,
    /// A pod the API says is Running has no live container on its node.
    MissingContainer,
    /// The cluster could not be read before the deadline.
    Unreadable,
}

impl ViolationKind {
    /// Whether waiting cannot mend it (the check stops at once).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ViolationKind::BoundTwice
                | ViolationKind::MissingDeployment
                | ViolationKind::UnexpectedDeployment
                | ViolationKind::WrongSpec
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KubeViolation {
    pub kind: ViolationKind,
    pub deployment: Option<String>,
    pub message: String,
}

impl fmt::Display for KubeViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.deployment {
            Some(d) => write!(f, "{:?} (Deployment {d}): {}", self.kind, self.message),
            None => write!(f, "{:?}: {}", self.kind, self.message),
        }
    }
}

fn violation(kind: ViolationKind, deployment: Option<&str>, message: String) -> KubeViolation {
    KubeViolation {
        kind,
        deployment: deployment.map(str::to_string),
        message,
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct KubeVerdict {
    pub ok: bool,
    /// The first is the first found; at most [`VIOLATIONS_MAX`].
    pub violations: Vec<KubeViolation>,
    /// How long after the check began the cluster was found converged.
    pub converged_after_ms: Option<u64>,
    pub deployments_checked: usize,
    pub pods_running: usize,
    pub ops_acknowledged: usize,
    pub ops_unknown: usize,
    pub ops_failed: usize,
    pub observations: usize,
}

impl KubeVerdict {
    pub fn first(&self) -> Option<&KubeViolation> {
        self.violations.first()
    }
}

impl fmt::Display for KubeVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.first() {
            None => write!(
                f,
                "OK: {} Deployments converged ({} pods Running) after {} ms; {} operations acknowledged, {} in doubt, {} failed",
                self.deployments_checked,
                self.pods_running,
                self.converged_after_ms.unwrap_or(0),
                self.ops_acknowledged,
                self.ops_unknown,
                self.ops_failed
            ),
            Some(first) => write!(f, "FAILED ({} violations), first: {first}", self.violations.len()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct KubeCheckConfig {
    /// How long the cluster has to converge.
    pub deadline_ms: u64,
    pub poll_interval_ms: u64,
    /// The nodes' directories, for the container checks; empty: skipped.
    pub node_roots: Vec<NodeRoot>,
}

impl KubeCheckConfig {
    pub fn new(node_roots: Vec<NodeRoot>) -> KubeCheckConfig {
        KubeCheckConfig {
            deadline_ms: 120_000,
            poll_interval_ms: 500,
            node_roots,
        }
    }
}

/// The namespace as read once: for [`judge_kube`].
#[derive(Clone, Debug, Default)]
pub struct KubeSnapshot {
    pub deployments: Vec<Value>,
    pub replicasets: Vec<Value>,
    pub pods: Vec<Value>,
    /// The containers running on the nodes, when the nodes' directories were given.
    pub containers: Option<Vec<NodeContainer>>,
}

/// Reads `namespace`'s Deployments, ReplicaSets and pods, and the containers under
/// `node_roots` (read last, so that a container started after the pod list shows a pod
/// the list has).
pub async fn read_snapshot(api: &KubeApi, namespace: &str, node_roots: &[NodeRoot]) -> Result<KubeSnapshot> {
    let deployments = api.list(&deployments_path(namespace)).await?;
    let replicasets = api.list(&replicasets_path(namespace)).await?;
    let pods = api.list(&pods_path(namespace)).await?;
    let containers = if node_roots.is_empty() {
        None
    } else {
        let roots = node_roots.to_vec();
        let all = tokio::task::spawn_blocking(move || roots.iter().flat_map(live_containers).collect::<Vec<_>>())
            .await
            .map_err(|e| ChaosError::Task(format!("reading the nodes' containers: {e}")))?;
        Some(all)
    };
    Ok(KubeSnapshot {
        deployments,
        replicasets,
        pods,
        containers,
    })
}

/// Waits up to `config.deadline_ms` for [`judge_kube`] to find nothing (or something
/// final), reading the cluster every `poll_interval_ms`.
pub async fn check_kube(
    api: &KubeApi,
    history: &KubeHistory,
    fixed: &[FixedDeployment],
    config: &KubeCheckConfig,
) -> KubeVerdict {
    let began = Instant::now();
    let deadline = began + Duration::from_millis(config.deadline_ms);
    loop {
        let (violations, snapshot) = match read_snapshot(api, &history.namespace, &config.node_roots).await {
            Ok(s) => (judge_kube(history, fixed, &s), Some(s)),
            Err(e) => (
                vec![violation(
                    ViolationKind::Unreadable,
                    None,
                    format!("reading namespace {}: {e}", history.namespace),
                )],
                None,
            ),
        };
        let done = violations.is_empty() || violations.iter().any(|v| v.kind.is_final()) || Instant::now() >= deadline;
        if done {
            let pods_running = snapshot.as_ref().map_or(0, |s| {
                s.pods
                    .iter()
                    .filter(|p| !deleting(p) && pod_running_and_ready(p))
                    .count()
            });
            let deployments_checked = snapshot.as_ref().map_or(0, |s| s.deployments.len());
            let mut violations = violations;
            violations.truncate(VIOLATIONS_MAX);
            return KubeVerdict {
                ok: violations.is_empty(),
                converged_after_ms: violations
                    .is_empty()
                    .then(|| u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX)),
                violations,
                deployments_checked,
                pods_running,
                ops_acknowledged: history.acknowledged(),
                ops_unknown: history.unknown(),
                ops_failed: history.failed(),
                observations: history.observations.len(),
            };
        }
        tokio::time::sleep(Duration::from_millis(config.poll_interval_ms)).await;
    }
}

/// The values a field may hold at the end: the last acknowledged write's, and every
/// write's left in doubt (see the module doc). `writes` in the order they were made.
fn allowed_values<T: Ord + Clone>(writes: &[(&KubeOp, T)]) -> (Option<T>, BTreeSet<T>) {
    let last = writes
        .iter()
        .rev()
        .find(|(op, _)| op.outcome == KubeOutcome::Acknowledged)
        .map(|(_, v)| v.clone());
    let mut allowed: BTreeSet<T> = writes
        .iter()
        .filter(|(op, _)| op.in_doubt_attempts > 0)
        .map(|(_, v)| v.clone())
        .collect();
    allowed.extend(last.clone());
    (last, allowed)
}

/// Pods bound to two nodes, from the sightings.
fn bound_twice(observations: &[PodObservation], namespace: &str) -> Vec<KubeViolation> {
    let mut by_uid: BTreeMap<&str, Vec<&PodObservation>> = BTreeMap::new();
    for o in observations {
        by_uid.entry(o.uid.as_str()).or_default().push(o);
    }
    let mut out = Vec::new();
    for (uid, mut seen) in by_uid {
        seen.sort_by_key(|o| (o.at_ms, o.source));
        let first = seen[0];
        if let Some(other) = seen.iter().find(|o| o.node != first.node) {
            out.push(violation(
                ViolationKind::BoundTwice,
                None,
                format!(
                    "pod {namespace}/{} (uid {uid}) on node {} ({:?}, at {} ms) and on node {} ({:?}, at {} ms)",
                    first.pod, first.node, first.source, first.at_ms, other.node, other.source, other.at_ms
                ),
            ));
        }
    }
    out.sort_by_key(|v| v.message.clone());
    out
}

/// Judges one snapshot against the history (see the module doc for the rules). Returns
/// every violation found, final ones first.
pub fn judge_kube(history: &KubeHistory, fixed: &[FixedDeployment], snapshot: &KubeSnapshot) -> Vec<KubeViolation> {
    let ns = history.namespace.as_str();
    let mut out = bound_twice(&history.observations, ns);

    // Pods and their containers: a container on a node other than its pod's.
    let pods_by_uid: HashMap<&str, &Value> = snapshot.pods.iter().map(|p| (uid_of(p), p)).collect();
    if let Some(containers) = &snapshot.containers {
        for c in containers.iter().filter(|c| c.namespace == ns) {
            if let Some(pod) = pods_by_uid.get(c.pod_uid.as_str()) {
                let node = text_at(pod, &["spec", "nodeName"]);
                if !node.is_empty() && node != c.node {
                    out.push(violation(
                        ViolationKind::BoundTwice,
                        None,
                        format!(
                            "pod {ns}/{} (uid {}) is bound to node {node}, and its container {} runs on node {} (pid {})",
                            c.pod_name, c.pod_uid, c.container, c.node, c.pid
                        ),
                    ));
                }
            }
        }
    }

    // Which Deployments must, may and may not exist.
    let present: BTreeMap<&str, &Value> = snapshot.deployments.iter().map(|d| (name_of(d), d)).collect();
    let mut created: BTreeMap<&str, KubeOutcome> = BTreeMap::new();
    for op in &history.ops {
        if matches!(op.action, KubeAction::Create { .. }) {
            let entry = created.entry(op.deployment.as_str()).or_insert(op.outcome);
            if op.outcome == KubeOutcome::Acknowledged || (*entry == KubeOutcome::Failed) {
                *entry = op.outcome;
            }
        }
    }
    let fixed_by_name: BTreeMap<&str, &FixedDeployment> = fixed.iter().map(|f| (f.name.as_str(), f)).collect();
    for (name, outcome) in &created {
        if *outcome == KubeOutcome::Acknowledged && !present.contains_key(name) {
            out.push(violation(
                ViolationKind::MissingDeployment,
                Some(name),
                format!("its creation was acknowledged, and {ns}/{name} does not exist"),
            ));
        }
    }
    for name in fixed_by_name.keys() {
        if !present.contains_key(name) {
            out.push(violation(
                ViolationKind::MissingDeployment,
                Some(name),
                format!("{ns}/{name} (fixed) does not exist"),
            ));
        }
    }
    for (name, d) in &present {
        let allowed = fixed_by_name.contains_key(name) || created.get(name).is_some_and(|o| *o != KubeOutcome::Failed);
        if !allowed {
            out.push(violation(
                ViolationKind::UnexpectedDeployment,
                Some(name),
                format!(
                    "{ns}/{name} (uid {}) exists, and {}",
                    uid_of(d),
                    if created.contains_key(name) {
                        "every attempt to create it definitely failed"
                    } else {
                        "nothing created it"
                    }
                ),
            ));
        } else if deleting(d) {
            out.push(violation(
                ViolationKind::MissingDeployment,
                Some(name),
                format!("{ns}/{name} is being deleted"),
            ));
        }
    }

    // The spec: each field the last acknowledged value or one in doubt.
    for (name, d) in &present {
        let replicas = int_at(d, &["spec", "replicas"]);
        let roll = roll_of_template(d).map(str::to_string);
        if let Some(f) = fixed_by_name.get(name) {
            if replicas != Some(i64::from(f.replicas)) || roll.as_deref() != Some("0") {
                out.push(violation(
                    ViolationKind::WrongSpec,
                    Some(name),
                    format!(
                        "spec.replicas {replicas:?} and roll {roll:?}; nothing changes it from {} and \"0\"",
                        f.replicas
                    ),
                ));
            }
            continue;
        }
        if !created.contains_key(name) {
            continue;
        }
        let ops: Vec<&KubeOp> = history.ops.iter().filter(|o| o.deployment == *name).collect();
        let replica_writes: Vec<(&KubeOp, i64)> = ops
            .iter()
            .filter_map(|o| match o.action {
                KubeAction::Create { replicas } | KubeAction::Scale { replicas } => Some((*o, i64::from(replicas))),
                KubeAction::Roll { .. } => None,
            })
            .collect();
        let roll_writes: Vec<(&KubeOp, String)> = ops
            .iter()
            .filter_map(|o| match o.action {
                KubeAction::Create { .. } => Some((*o, "0".to_string())),
                KubeAction::Roll { roll } => Some((*o, roll.to_string())),
                KubeAction::Scale { .. } => None,
            })
            .collect();
        let (last, allowed) = allowed_values(&replica_writes);
        if !replicas.is_some_and(|r| allowed.contains(&r)) {
            out.push(violation(
                ViolationKind::WrongSpec,
                Some(name),
                format!(
                    "spec.replicas is {replicas:?}; the last acknowledged scale set {last:?}, and the writes in doubt allow {:?}",
                    allowed.iter().filter(|v| Some(**v) != last).collect::<Vec<_>>()
                ),
            ));
        }
        let (last, allowed) = allowed_values(&roll_writes);
        if !roll.as_ref().is_some_and(|r| allowed.contains(r)) {
            out.push(violation(
                ViolationKind::WrongSpec,
                Some(name),
                format!(
                    "the template's {ROLL_ANNOTATION} is {roll:?}; the last acknowledged roll set {last:?}, and the writes in doubt allow {:?}",
                    allowed.iter().filter(|v| Some(*v) != last.as_ref()).collect::<Vec<_>>()
                ),
            ));
        }
    }

    // Convergence, per Deployment that should be there.
    for (name, d) in &present {
        let expected = fixed_by_name.contains_key(name) || created.get(name).is_some_and(|o| *o != KubeOutcome::Failed);
        if expected && !deleting(d) {
            converged(ns, name, d, snapshot, &mut out);
        }
    }

    // Containers for pods that are gone, and Running pods without a container.
    if let Some(containers) = &snapshot.containers {
        let ours: Vec<&NodeContainer> = containers.iter().filter(|c| c.namespace == ns).collect();
        for c in &ours {
            let gone = pods_by_uid.get(c.pod_uid.as_str()).is_none_or(|p| deleting(p));
            if gone {
                out.push(violation(
                    ViolationKind::StrayContainer,
                    None,
                    format!(
                        "container {} of pod {ns}/{} (uid {}) runs on node {} (pid {}), and the pod is {}",
                        c.container,
                        c.pod_name,
                        c.pod_uid,
                        c.node,
                        c.pid,
                        if pods_by_uid.contains_key(c.pod_uid.as_str()) {
                            "being deleted"
                        } else {
                            "gone"
                        }
                    ),
                ));
            }
        }
        let running: HashSet<(&str, &str)> = ours.iter().map(|c| (c.pod_uid.as_str(), c.node.as_str())).collect();
        for pod in &snapshot.pods {
            let node = text_at(pod, &["spec", "nodeName"]);
            if !deleting(pod)
                && text_at(pod, &["status", "phase"]) == "Running"
                && !node.is_empty()
                && !running.contains(&(uid_of(pod), node))
            {
                out.push(violation(
                    ViolationKind::MissingContainer,
                    None,
                    format!(
                        "pod {ns}/{} (uid {}) is Running on node {node} by the API, and no container of it runs there",
                        name_of(pod),
                        uid_of(pod)
                    ),
                ));
            }
        }
    }
    out.sort_by_key(|v| !v.kind.is_final());
    out
}

/// Whether Deployment `d` has converged to its spec; pushes what is not.
fn converged(ns: &str, name: &str, d: &Value, snapshot: &KubeSnapshot, out: &mut Vec<KubeViolation>) {
    let dep = Some(name);
    let replicas = int_at(d, &["spec", "replicas"]).unwrap_or(1);
    let generation = int_at(d, &["metadata", "generation"]).unwrap_or(0);
    let observed = int_at(d, &["status", "observedGeneration"]).unwrap_or(0);
    if observed < generation {
        out.push(violation(
            ViolationKind::NotObserved,
            dep,
            format!("status.observedGeneration {observed} < metadata.generation {generation}"),
        ));
        return;
    }
    let counts: Vec<(&str, i64)> = ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas"]
        .iter()
        .map(|k| (*k, int_at(d, &["status", k]).unwrap_or(0)))
        .collect();
    if counts.iter().any(|(_, c)| *c != replicas) {
        out.push(violation(
            ViolationKind::WrongReplicas,
            dep,
            format!("spec.replicas {replicas}, status {counts:?}"),
        ));
    }
    let uid = uid_of(d);
    let roll = roll_of_template(d);
    let owned: Vec<&Value> = snapshot
        .replicasets
        .iter()
        .filter(|rs| controller_uid(rs) == Some(uid))
        .collect();
    let (current, older): (Vec<&Value>, Vec<&Value>) = owned.iter().partition(|rs| roll_of_template(rs) == roll);
    match current.as_slice() {
        [] => out.push(violation(
            ViolationKind::WrongReplicas,
            dep,
            format!("no ReplicaSet has the current template (roll {roll:?})"),
        )),
        [rs] => {
            let rs_replicas = int_at(rs, &["spec", "replicas"]).unwrap_or(1);
            if rs_replicas != replicas {
                out.push(violation(
                    ViolationKind::WrongReplicas,
                    dep,
                    format!(
                        "its current ReplicaSet {} has spec.replicas {rs_replicas}, the Deployment {replicas}",
                        name_of(rs)
                    ),
                ));
            }
        }
        several => out.push(violation(
            ViolationKind::DuplicateReplicaSets,
            dep,
            format!(
                "ReplicaSets {:?} all have the current template (roll {roll:?})",
                several.iter().map(|rs| name_of(rs)).collect::<Vec<_>>()
            ),
        )),
    }
    for rs in &older {
        let (spec, status) = (
            int_at(rs, &["spec", "replicas"]).unwrap_or(1),
            int_at(rs, &["status", "replicas"]).unwrap_or(0),
        );
        if spec != 0 || status != 0 {
            out.push(violation(
                ViolationKind::StalePods,
                dep,
                format!(
                    "old ReplicaSet {} (roll {:?}) has spec.replicas {spec}, status.replicas {status}",
                    name_of(rs),
                    roll_of_template(rs)
                ),
            ));
        }
    }
    let current_uids: HashSet<&str> = current.iter().map(|rs| uid_of(rs)).collect();
    let owned_uids: HashSet<&str> = owned.iter().map(|rs| uid_of(rs)).collect();
    let mut live = Vec::new();
    for pod in &snapshot.pods {
        let owner = controller_uid(pod);
        let ours = owner.is_some_and(|o| owned_uids.contains(o));
        let orphan = owner.is_none() && text_at(pod, &["metadata", "labels", "app"]) == name;
        if orphan {
            out.push(violation(
                ViolationKind::StalePods,
                dep,
                format!("pod {ns}/{} has the Deployment's labels and no owner", name_of(pod)),
            ));
            continue;
        }
        if !ours {
            continue;
        }
        if deleting(pod) {
            out.push(violation(
                ViolationKind::StalePods,
                dep,
                format!("pod {ns}/{} is terminating", name_of(pod)),
            ));
        } else if !owner.is_some_and(|o| current_uids.contains(o)) {
            out.push(violation(
                ViolationKind::StalePods,
                dep,
                format!("pod {ns}/{} belongs to an old ReplicaSet", name_of(pod)),
            ));
        } else {
            live.push(pod);
        }
    }
    if live.len() as i64 != replicas {
        out.push(violation(
            ViolationKind::WrongReplicas,
            dep,
            format!(
                "{} pods of its current ReplicaSet ({:?}), spec.replicas {replicas}",
                live.len(),
                live.iter().map(|p| name_of(p)).collect::<Vec<_>>()
            ),
        ));
    }
    for pod in live {
        let node = text_at(pod, &["spec", "nodeName"]);
        if node.is_empty() || !pod_running_and_ready(pod) {
            out.push(violation(
                ViolationKind::NotReady,
                dep,
                format!(
                    "pod {ns}/{} is {:?} on node {node:?}, not Running and Ready",
                    name_of(pod),
                    text_at(pod, &["status", "phase"])
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(deployment: &str, action: KubeAction, outcome: KubeOutcome, in_doubt: u32) -> KubeOp {
        KubeOp {
            deployment: deployment.into(),
            action,
            start_ms: 0,
            end_ms: 0,
            outcome,
            attempts: 1 + in_doubt,
            in_doubt_attempts: in_doubt,
            error: None,
        }
    }

    /// A converged namespace: Deployment `d0` with `replicas` pods of ReplicaSet `d0-a`
    /// (roll `roll`) on node1, with their containers.
    fn converged_snapshot(replicas: i64, roll: &str) -> KubeSnapshot {
        let d = json!({
            "metadata": {"name": "d0", "uid": "u-d0", "generation": 3},
            "spec": {"replicas": replicas, "template": {"metadata": {"annotations": {ROLL_ANNOTATION: roll}}}},
            "status": {"observedGeneration": 3, "replicas": replicas, "updatedReplicas": replicas,
                "readyReplicas": replicas, "availableReplicas": replicas}
        });
        let rs = json!({
            "metadata": {"name": "d0-a", "uid": "u-rs", "ownerReferences": [{"uid": "u-d0", "controller": true}]},
            "spec": {"replicas": replicas, "template": {"metadata": {"annotations": {ROLL_ANNOTATION: roll}}}},
            "status": {"replicas": replicas}
        });
        let pods: Vec<Value> = (0..replicas)
            .map(|k| {
                json!({
                    "metadata": {"name": format!("d0-a-{k}"), "uid": format!("u-p{k}"), "labels": {"app": "d0"},
                        "ownerReferences": [{"uid": "u-rs", "controller": true}]},
                    "spec": {"nodeName": "node1"},
                    "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
                })
            })
            .collect();
        let containers = (0..replicas)
            .map(|k| NodeContainer {
                node: "node1".into(),
                pod_uid: format!("u-p{k}"),
                namespace: "ns".into(),
                pod_name: format!("d0-a-{k}"),
                container: "http".into(),
                pid: 100 + k as u32,
            })
            .collect();
        KubeSnapshot {
            deployments: vec![d],
            replicasets: vec![rs],
            pods,
            containers: Some(containers),
        }
    }

    fn history(ops: Vec<KubeOp>) -> KubeHistory {
        KubeHistory {
            namespace: "ns".into(),
            deployments: vec!["d0".into()],
            ops,
            ..KubeHistory::default()
        }
    }

    fn kinds(v: &[KubeViolation]) -> Vec<ViolationKind> {
        v.iter().map(|v| v.kind).collect()
    }

    #[test]
    fn a_converged_namespace_passes_and_each_planted_fault_is_named() {
        use KubeAction::*;
        use KubeOutcome::*;
        let h = history(vec![
            op("d0", Create { replicas: 1 }, Acknowledged, 0),
            op("d0", Scale { replicas: 3 }, Acknowledged, 0),
            op("d0", Roll { roll: 4 }, Acknowledged, 0),
            op("d0", Scale { replicas: 2 }, Acknowledged, 0),
        ]);
        let good = converged_snapshot(2, "4");
        assert_eq!(judge_kube(&h, &[], &good), vec![]);

        // The last acknowledged scale was 3, not 2.
        let mut wrong = h.clone();
        wrong.ops[3].action = Scale { replicas: 3 };
        assert_eq!(kinds(&judge_kube(&wrong, &[], &good)), [ViolationKind::WrongSpec]);
        // ...unless a scale to 2 is in doubt, even an earlier one.
        wrong.ops[1].action = Scale { replicas: 2 };
        wrong.ops[1].in_doubt_attempts = 1;
        assert_eq!(judge_kube(&wrong, &[], &good), vec![]);

        // An acknowledged Deployment that is missing.
        let mut missing = h.clone();
        missing.ops.push(op("d9", Create { replicas: 1 }, Acknowledged, 0));
        let v = judge_kube(&missing, &[], &good);
        assert_eq!(kinds(&v), [ViolationKind::MissingDeployment]);
        assert_eq!(v[0].deployment.as_deref(), Some("d9"));
        // In doubt, it may be missing.
        missing.ops.last_mut().expect("op").outcome = Unknown;
        missing.ops.last_mut().expect("op").in_doubt_attempts = 1;
        assert_eq!(judge_kube(&missing, &[], &good), vec![]);

        // A Deployment nobody created.
        let mut extra = good.clone();
        let mut other = extra.deployments[0].clone();
        other["metadata"]["name"] = json!("x");
        extra.deployments.push(other);
        assert!(kinds(&judge_kube(&h, &[], &extra)).contains(&ViolationKind::UnexpectedDeployment));

        // A pod too many, one not ready, one terminating, a duplicate ReplicaSet.
        let mut more = good.clone();
        let mut pod = more.pods[0].clone();
        pod["metadata"]["uid"] = json!("u-p9");
        pod["metadata"]["name"] = json!("d0-a-9");
        more.pods.push(pod);
        assert!(kinds(&judge_kube(&h, &[], &more)).contains(&ViolationKind::WrongReplicas));
        let mut unready = good.clone();
        unready.pods[1]["status"]["phase"] = json!("Pending");
        assert!(kinds(&judge_kube(&h, &[], &unready)).contains(&ViolationKind::NotReady));
        let mut terminating = good.clone();
        terminating.pods[0]["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let k = kinds(&judge_kube(&h, &[], &terminating));
        assert!(
            k.contains(&ViolationKind::StalePods) && k.contains(&ViolationKind::StrayContainer),
            "{k:?}"
        );
        let mut duplicate = good.clone();
        let mut rs = duplicate.replicasets[0].clone();
        rs["metadata"]["uid"] = json!("u-rs2");
        duplicate.replicasets.push(rs);
        assert!(kinds(&judge_kube(&h, &[], &duplicate)).contains(&ViolationKind::DuplicateReplicaSets));

        // Not observed yet.
        let mut behind = good.clone();
        behind.deployments[0]["metadata"]["generation"] = json!(4);
        assert_eq!(kinds(&judge_kube(&h, &[], &behind)), [ViolationKind::NotObserved]);

        // A container on the wrong node, and a Running pod without its container.
        let mut elsewhere = good.clone();
        elsewhere.containers.as_mut().expect("containers")[0].node = "node2".into();
        let k = kinds(&judge_kube(&h, &[], &elsewhere));
        assert_eq!(k[0], ViolationKind::BoundTwice, "{k:?}");
        assert!(k.contains(&ViolationKind::MissingContainer), "{k:?}");
    }

    #[test]
    fn a_pod_seen_on_two_nodes_is_bound_twice() {
        let seen = |at_ms, source, node: &str| PodObservation {
            at_ms,
            source,
            uid: "u1".into(),
            pod: "p".into(),
            node: node.into(),
        };
        let mut h = history(vec![]);
        h.observations = vec![
            seen(10, ObservationSource::Api, "node1"),
            seen(12, ObservationSource::Runtime, "node1"),
        ];
        assert!(bound_twice(&h.observations, "ns").is_empty());
        h.observations.push(seen(40, ObservationSource::Runtime, "node2"));
        let v = bound_twice(&h.observations, "ns");
        assert_eq!(kinds(&v), [ViolationKind::BoundTwice]);
        assert!(
            v[0].message.contains("node1") && v[0].message.contains("node2"),
            "{}",
            v[0]
        );
        assert!(ViolationKind::BoundTwice.is_final() && !ViolationKind::WrongReplicas.is_final());
    }

    #[test]
    fn fixed_deployments_keep_their_replicas() {
        let good = converged_snapshot(2, "0");
        let h = history(vec![]);
        let fixed = |replicas| FixedDeployment {
            name: "d0".into(),
            replicas,
        };
        assert_eq!(judge_kube(&h, &[fixed(2)], &good), vec![]);
        assert_eq!(kinds(&judge_kube(&h, &[fixed(3)], &good))[0], ViolationKind::WrongSpec);
        assert_eq!(
            kinds(&judge_kube(&h, &[], &good)),
            [ViolationKind::UnexpectedDeployment]
        );
    }

    #[test]
    fn the_service_summary_finds_the_longest_gap() {
        let r = |start_ms, end_ms, ok| ServiceRequest {
            start_ms,
            end_ms,
            ok,
            error: None,
        };
        let h = ServiceHistory {
            target: None,
            requests: vec![
                r(100, 110, true),
                r(160, 170, false),
                r(220, 1220, false),
                r(1230, 1240, true),
                r(1290, 1300, true),
            ],
        };
        let s = h.summary();
        assert_eq!((s.requests, s.successes), (5, 3));
        assert!((s.success_rate - 0.6).abs() < 1e-9);
        assert_eq!(
            (s.longest_gap_ms, s.longest_gap_from_ms, s.longest_gap_to_ms),
            (1130, 110, 1240)
        );
        assert_eq!(h.successes_between(200, 2000), 2);
        // No success at all: the whole run is the gap.
        let none = ServiceHistory {
            target: None,
            requests: vec![r(5, 10, false), r(60, 70, false)],
        };
        assert_eq!(none.summary().longest_gap_ms, 65);
        assert_eq!(ServiceHistory::default().summary().requests, 0);
    }

    #[test]
    fn the_deployment_carries_the_roll_annotation_and_the_server() {
        let d = deployment_body("d1", 2);
        assert_eq!(roll_of_template(&d), Some("0"));
        assert_eq!(int_at(&d, &["spec", "replicas"]), Some(2));
        assert_eq!(text_at(&d, &["spec", "template", "metadata", "labels", "app"]), "d1");
        assert!(d.to_string().contains("http.server 8080"));
    }

    #[test]
    fn the_client_refuses_bad_urls() {
        assert!(KubeApi::new(vec![], 1000).is_err());
        assert!(KubeApi::new(vec!["https://127.0.0.1:1".into()], 1000).is_err());
        assert!(KubeApi::new(vec!["http://127.0.0.1:1".into()], 0).is_err());
    }

    #[tokio::test]
    async fn refused_connections_fail_over_and_are_not_sent() {
        // A port nobody listens on (bound, then released), and a tiny server that answers.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
        drop(dead);
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let live_url = format!("http://{}", live.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = live.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let body = r#"{"items":[{"metadata":{"name":"a"}}]}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        let api = KubeApi::new(vec![dead_url.clone(), live_url.clone()], 2_000).expect("client");
        let items = api.list("/api/v1/nodes").await.expect("failed over to the live one");
        assert_eq!(items.len(), 1);
        assert_eq!(api.current_url(), live_url, "keeps to the one that answered");
        let only_dead = KubeApi::new(vec![dead_url], 2_000).expect("client");
        let failure = only_dead
            .request(Method::GET, "/api/v1/nodes", None)
            .await
            .expect_err("nobody listens");
        assert!(!failure.sent, "{failure}");
    }
}
