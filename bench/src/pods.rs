//! `pods`: pod startup latency through a whole cluster (API server, scheduler, node
//! agents), measured from outside through the Kubernetes API, as a user sees it.
//!
//! # What is measured
//!
//! The tool first waits until the cluster can run pods: a scheduler holds the
//! `kube-system/kube-scheduler` Lease and at least `--min-ready-nodes` Nodes are `Ready`.
//! It then lists the run's pods (none yet) for a resourceVersion and watches them from
//! there, so the watch misses no event even if it is established after the first create.
//! `--pods` bare pods (no Deployment: the measure starts at the pod's own create, not at
//! a controller's) without `nodeName`, so the scheduler spreads them, are created with
//! `--concurrency` creates in flight. Per pod:
//!
//! - **sent**: this process's monotonic clock just before the create is sent. The pod's
//!   `metadata.creationTimestamp` has one-second resolution, far too coarse.
//! - **scheduled**: when the watch first shows `PodScheduled=True`.
//! - **ready**: when the watch first shows `phase: Running` with `Ready=True`.
//!
//! Reported: percentiles of sent → scheduled, sent → ready, scheduled → ready (the
//! node's part) and of the create requests themselves; pods per second (pods ready over
//! the time from the first create sent to the last pod ready); how the pods spread over
//! the nodes; optionally the RSS of given processes (`--rss NAME=PID`), read when every
//! pod is ready. Then, unless `--keep`, the pods are deleted one by one at the same
//! concurrency and the tool waits for the watch to show each one gone (timed too, as
//! `delete_seconds`).
//!
//! A pod that cannot start (phase `Failed`, or a container waiting with a reason that
//! does not clear by itself: `CrashLoopBackOff`, `RunContainerError`, ...) ends the run at
//! once instead of at the timeout; a failed create ends it too. Either way the created
//! pods are deleted (unless `--keep`) and the exit status is a failure. On a timeout the
//! partial figures are printed (`"complete": false`) before the failure.
//!
//! # The watch
//!
//! Times are taken when an event's bytes arrive, so they include the API's watch
//! delivery (as a user's would). If the stream ends the tool watches again from the last
//! resourceVersion; if that is too old (`410 Gone`) it lists the pods again (paged) and
//! takes what the list shows as seen at that moment, which makes those times coarser: the
//! number of such relists is reported (`relists`), and is 0 in a clean run.
//!
//! # Bounds
//!
//! At most [`PODS_MAX`] pods and [`CONCURRENCY_MAX`] creates in flight; answers are read
//! up to [`crate::kubeapi::BODY_MAX_BYTES`], watch events up to [`LINE_MAX_BYTES`]; the container's command
//! is at most [`COMMAND_ARGS_MAX`] arguments; the whole run is bounded by `--timeout-s`
//! and the deletion by `--delete-timeout-s`. Only loopback API servers are accepted.
//!
//! Left out: Deployments and other controllers (a different measure), init containers,
//! probes (a pod without a readiness probe is ready once its container runs), image
//! pulls (a process runtime has none), and the namespace's deletion (it may be shared by
//! runs; the pods carry the label `capstan-bench-run=<run id>`).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Notify;

use crate::common::{fmt_us, new_histogram, record_us, rss_bytes, BenchResult, Deadline, Json, LatencySummary};
use crate::kubeapi::{parse_json, run_id, Api};

/// The most pods one run creates.
pub const PODS_MAX: usize = 100_000;
/// The most creates (and deletes) in flight.
pub const CONCURRENCY_MAX: usize = 1024;
/// The container's command: arguments and bytes of its JSON at most.
pub const COMMAND_ARGS_MAX: usize = 256;
const COMMAND_BYTES_MAX: usize = 64 << 10;
/// `--rss` processes at most.
const RSS_PIDS_MAX: usize = 16;
/// A watch line (one event) longer than this ends the run.
pub const LINE_MAX_BYTES: usize = 16 << 20;
/// Pods per page when the watch has to list again.
const LIST_PAGE: usize = 500;
/// Consecutive failures to open the watch before the run gives up.
const WATCH_RETRIES_MAX: u32 = 5;
/// How often the cluster's readiness is polled before the run.
const POLL: Duration = Duration::from_millis(200);
/// Pods that have been waiting (or failing) on one of these will not become ready
/// without a change: the run ends rather than waiting for its timeout.
const STUCK_REASONS: [&str; 6] = [
    "CrashLoopBackOff",
    "RunContainerError",
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerError",
    "CreateContainerConfigError",
];
const RUN_LABEL: &str = "capstan-bench-run";

#[derive(clap::Args, Debug, Clone)]
pub struct PodsArgs {
    /// The Kubernetes API, `http://host:port` on loopback.
    #[arg(long, default_value = "http://127.0.0.1:6443")]
    pub api: String,
    /// Pods to create (at most 100,000).
    #[arg(long, default_value_t = 100)]
    pub pods: usize,
    /// Creates (and, at the end, deletes) in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Creates started per second at most, evenly spaced, as load generators of
    /// Kubernetes' own SLO tests pace them (0: as fast as `--concurrency` allows).
    #[arg(long, default_value_t = 0)]
    pub creates_per_second: u32,
    /// Namespace of the pods (created if missing, never deleted).
    #[arg(long, default_value = "pod-bench")]
    pub namespace: String,
    /// The container's command, a JSON array of strings.
    #[arg(long, default_value = r#"["sh","-c","exec sleep 1000000"]"#)]
    pub command: String,
    /// The container's image (a process runtime ignores it; the API requires one).
    #[arg(long, default_value = "capstan.dev/bench:1")]
    pub image: String,
    /// The container's cpu request (none if not given).
    #[arg(long)]
    pub pod_cpu: Option<String>,
    /// The container's memory request (none if not given).
    #[arg(long)]
    pub pod_memory: Option<String>,
    /// The pods' `terminationGracePeriodSeconds`: short, so the deletion does not wait on a
    /// command that ignores SIGTERM.
    #[arg(long, default_value_t = 5)]
    pub grace_period_s: u32,
    /// Ready Nodes to wait for before the first create.
    #[arg(long, default_value_t = 1)]
    pub min_ready_nodes: usize,
    /// A process whose RSS is read once every pod is ready, as `NAME=PID` (repeatable).
    #[arg(long = "rss", value_name = "NAME=PID")]
    pub rss: Vec<String>,
    /// Leave the pods in place at the end.
    #[arg(long)]
    pub keep: bool,
    /// Seconds the run may take up to every pod ready (waiting for the cluster included).
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
    /// Seconds the deletion may take.
    #[arg(long, default_value_t = 300)]
    pub delete_timeout_s: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write every pod's moments to this file, as CSV: its number, node, and the
    /// milliseconds from the first create to its create sent, create answered,
    /// scheduled seen and ready seen, with the resourceVersion of the event that showed
    /// it scheduled and ready; a first comment line gives the first create's wall-clock
    /// time (Unix milliseconds), to line the pods up with the servers' logs.
    #[arg(long, value_name = "PATH")]
    pub timeline: Option<std::path::PathBuf>,
}

/// `--command`: a non-empty JSON array of strings, within the bounds.
fn parse_command(spec: &str) -> BenchResult<Vec<String>> {
    if spec.len() > COMMAND_BYTES_MAX {
        return Err(format!("--command: longer than {COMMAND_BYTES_MAX} bytes"));
    }
    let args: Vec<String> =
        serde_json::from_str(spec).map_err(|e| format!("--command must be a JSON array of strings: {e}"))?;
    if args.is_empty() || args.len() > COMMAND_ARGS_MAX {
        return Err(format!("--command: 1 to {COMMAND_ARGS_MAX} arguments"));
    }
    Ok(args)
}

/// `--rss NAME=PID` entries.
fn parse_rss(specs: &[String]) -> BenchResult<Vec<(String, u32)>> {
    if specs.len() > RSS_PIDS_MAX {
        return Err(format!("at most {RSS_PIDS_MAX} --rss processes"));
    }
    specs
        .iter()
        .map(|s| {
            let (name, pid) = s
                .split_once('=')
                .ok_or_else(|| format!("--rss {s:?}: expected NAME=PID"))?;
            let pid: u32 = pid
                .parse()
                .map_err(|_| format!("--rss {s:?}: the pid is not a number"))?;
            if name.is_empty() || pid == 0 {
                return Err(format!("--rss {s:?}: expected NAME=PID"));
            }
            Ok((name.to_string(), pid))
        })
        .collect()
}

/// What the pods are made of, besides their names.
struct PodTemplate {
    run: String,
    image: String,
    command: Vec<String>,
    cpu: Option<String>,
    memory: Option<String>,
    grace_period_s: u32,
}

impl PodTemplate {
    fn pod_json(&self, name: &str) -> String {
        let mut requests = serde_json::Map::new();
        if let Some(cpu) = &self.cpu {
            requests.insert("cpu".into(), Value::from(cpu.as_str()));
        }
        if let Some(memory) = &self.memory {
            requests.insert("memory".into(), Value::from(memory.as_str()));
        }
        let mut container = serde_json::json!({"name": "c", "image": self.image, "command": self.command});
        if !requests.is_empty() {
            container["resources"] = serde_json::json!({ "requests": requests });
        }
        let mut labels = serde_json::Map::new();
        labels.insert(RUN_LABEL.into(), Value::from(self.run.as_str()));
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "containers": [container],
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": self.grace_period_s,
            },
        })
        .to_string()
    }
}

/// One pod's moments, on this process's monotonic clock.
#[derive(Clone, Debug, Default)]
struct PodTimes {
    sent: Option<Instant>,
    answered: Option<Instant>,
    scheduled: Option<Instant>,
    ready: Option<Instant>,
    /// The resourceVersions of the versions that showed it scheduled and ready.
    scheduled_rv: Option<String>,
    ready_rv: Option<String>,
    gone: bool,
    node: Option<String>,
    /// What keeps it from being ready, as last seen: a container's waiting reason, or
    /// the phase.
    reason: Option<String>,
}

/// Everything the watch learnt, indexed by the pod's number.
#[derive(Debug)]
struct State {
    pods: Vec<PodTimes>,
    scheduled: usize,
    ready: usize,
    gone: usize,
    /// Times the watch had to list again (its resourceVersion too old).
    relists: usize,
    /// Set once the deletes start: from then a pod missing from a relist is gone.
    deleting: bool,
    /// A pod that will not become ready, and why.
    stuck: Option<String>,
    /// Why the watch gave up.
    failed: Option<String>,
}

impl State {
    fn new(pods: usize) -> State {
        State {
            pods: vec![PodTimes::default(); pods],
            scheduled: 0,
            ready: 0,
            gone: 0,
            relists: 0,
            deleting: false,
            stuck: None,
            failed: None,
        }
    }

    /// A pod's newest version, seen at `now`.
    fn observe(&mut self, i: usize, pod: &Value, now: Instant) {
        let Some(p) = self.pods.get_mut(i) else { return };
        if p.gone {
            return;
        }
        let conditions = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        let condition = |t: &str| {
            conditions.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(t)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        };
        let rv = || {
            pod.pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if p.scheduled.is_none() && condition("PodScheduled") {
            p.scheduled = Some(now);
            p.scheduled_rv = rv();
            self.scheduled += 1;
        }
        if let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str) {
            if !node.is_empty() && p.node.as_deref() != Some(node) {
                p.node = Some(node.to_string());
            }
        }
        let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        if p.ready.is_none() && phase == "Running" && condition("Ready") {
            p.ready = Some(now);
            p.ready_rv = rv();
            self.ready += 1;
        }
        let waiting = pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.pointer("/state/waiting/reason").and_then(Value::as_str))
            .next();
        p.reason = match (waiting, phase) {
            (Some(w), _) => Some(w.to_string()),
            (None, "") => Some("Pending".to_string()),
            (None, phase) => Some(phase.to_string()),
        };
        if p.ready.is_none() && self.stuck.is_none() && !self.deleting {
            let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?");
            if phase == "Failed" || phase == "Succeeded" {
                self.stuck = Some(format!("pod {name} ended ({phase}) before it was ready"));
            } else if let Some(w) = waiting.filter(|w| STUCK_REASONS.contains(w)) {
                let message = pod
                    .pointer("/status/containerStatuses/0/state/waiting/message")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.stuck = Some(format!("pod {name} cannot start: {w}: {message}"));
            }
        }
    }

    fn observe_gone(&mut self, i: usize) {
        if let Some(p) = self.pods.get_mut(i) {
            if !p.gone {
                p.gone = true;
                self.gone += 1;
            }
        }
    }
}

/// The state, shared by the watch and the run, and a wake-up on every change.
struct Tracker {
    prefix: String,
    state: Mutex<State>,
    changed: Notify,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("invariant: no panics while the lock is held")
    }

    /// The pod's number, from its name `<prefix><n>`.
    fn index(&self, name: &str) -> Option<usize> {
        name.strip_prefix(&self.prefix)?.parse().ok()
    }

    fn fail(&self, e: String) {
        self.lock().failed = Some(e);
        self.changed.notify_waiters();
    }

    /// Waits until `done` holds, a pod is stuck, the watch fails, or the deadline.
    async fn wait(&self, deadline: Deadline, what: &str, done: impl Fn(&State) -> bool) -> BenchResult<()> {
        loop {
            let changed = self.changed.notified();
            {
                let s = self.lock();
                if done(&s) {
                    return Ok(());
                }
                if let Some(e) = &s.failed {
                    return Err(format!("the pod watch failed: {e}"));
                }
                if let Some(e) = &s.stuck {
                    if !s.deleting {
                        return Err(e.clone());
                    }
                }
                if deadline.passed() {
                    return Err(format!(
                        "{what}: not within the timeout ({} scheduled, {} ready, {} gone of {})",
                        s.scheduled,
                        s.ready,
                        s.gone,
                        s.pods.len()
                    ));
                }
            }
            let _ = tokio::time::timeout(deadline.min_after(POLL), changed).await;
        }
    }
}

fn selector(run: &str) -> String {
    format!("labelSelector={RUN_LABEL}%3D{run}")
}

/// Lists the run's pods (paged), records what the list shows as seen now, and returns
/// the list's resourceVersion. While deleting, a pod the list lacks is gone.
async fn relist(api: &Api, namespace: &str, run: &str, tracker: &Tracker) -> BenchResult<String> {
    let mut cont = String::new();
    let mut rv = None;
    let mut listed = HashSet::new();
    loop {
        let mut path = format!(
            "/api/v1/namespaces/{namespace}/pods?{}&limit={LIST_PAGE}",
            selector(run)
        );
        if !cont.is_empty() {
            path.push_str("&continue=");
            path.push_str(&cont);
        }
        let list = api.get_json(&path).await?;
        let now = Instant::now();
        if rv.is_none() {
            rv = list
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        {
            let mut s = tracker.lock();
            for item in list.get("items").and_then(Value::as_array).into_iter().flatten() {
                let name = item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
                if let Some(i) = tracker.index(name) {
                    listed.insert(i);
                    s.observe(i, item, now);
                }
            }
        }
        cont = list
            .pointer("/metadata/continue")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if cont.is_empty() {
            break;
        }
    }
    {
        let mut s = tracker.lock();
        if s.deleting {
            for i in 0..s.pods.len() {
                if s.pods[i].sent.is_some() && !listed.contains(&i) {
                    s.observe_gone(i);
                }
            }
        }
    }
    tracker.changed.notify_waiters();
    rv.ok_or_else(|| "the pod list has no resourceVersion".to_string())
}

/// Watches the run's pods from `rv` for as long as the run lasts: again from the last
/// resourceVersion when the stream ends, after a relist when that is too old.
async fn watch_pods(api: Arc<Api>, namespace: String, run: String, mut rv: String, tracker: Arc<Tracker>) {
    let mut failures = 0;
    loop {
        let path = format!(
            "/api/v1/namespaces/{namespace}/pods?watch=1&allowWatchBookmarks=true&{}&resourceVersion={rv}",
            selector(&run)
        );
        let req = match api.request(Method::GET, &path, None) {
            Ok(r) => r,
            Err(e) => return tracker.fail(e),
        };
        let resp = match api.client.request(req).await {
            Ok(r) if r.status() == StatusCode::GONE => None,
            Ok(r) if r.status().is_success() => Some(r),
            Ok(r) => return tracker.fail(format!("watch: {}", r.status())),
            Err(e) => {
                failures += 1;
                if failures > WATCH_RETRIES_MAX {
                    return tracker.fail(format!("watch: {e}"));
                }
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        failures = 0;
        let mut expired = resp.is_none();
        if let Some(resp) = resp {
            let mut body = resp.into_body();
            let mut buf: Vec<u8> = Vec::new();
            'stream: while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                let Ok(data) = frame.into_data() else { continue };
                let scanned = buf.len();
                buf.extend_from_slice(&data);
                let now = Instant::now();
                let mut start = 0;
                let mut from = scanned;
                while let Some(nl) = buf[from..].iter().position(|&b| b == b'\n') {
                    let end = from + nl;
                    let line = &buf[start..end];
                    start = end + 1;
                    from = start;
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let Ok(event) = parse_json(line) else {
                        return tracker.fail("watch: an event that is not JSON".into());
                    };
                    match handle_event(&tracker, &event, now) {
                        Event::Version(v) => rv = v,
                        Event::Expired => {
                            expired = true;
                            break 'stream;
                        }
                        Event::Error(e) => return tracker.fail(e),
                        Event::Nothing => {}
                    }
                }
                buf.drain(..start);
                if buf.len() > LINE_MAX_BYTES {
                    return tracker.fail(format!("watch: an event line beyond {LINE_MAX_BYTES} bytes"));
                }
                tracker.changed.notify_waiters();
            }
        }
        if expired {
            tracker.lock().relists += 1;
            match relist(&api, &namespace, &run, &tracker).await {
                Ok(v) => rv = v,
                Err(e) => return tracker.fail(format!("listing again after 410 Gone: {e}")),
            }
        }
        // Otherwise the server ended the stream: watch again from where it stopped.
    }
}

enum Event {
    /// The newest resourceVersion seen.
    Version(String),
    /// `410 Gone`: the resourceVersion is too old; list again.
    Expired,
    Error(String),
    Nothing,
}

fn handle_event(tracker: &Tracker, event: &Value, now: Instant) -> Event {
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
    let Some(object) = event.get("object") else {
        return Event::Nothing;
    };
    if kind == "ERROR" {
        if object.get("code").and_then(Value::as_i64) == Some(410) {
            return Event::Expired;
        }
        return Event::Error(format!("watch: {object}"));
    }
    let rv = object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    if kind != "BOOKMARK" {
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        if let Some(i) = tracker.index(name) {
            let mut s = tracker.lock();
            if kind == "DELETED" {
                s.observe_gone(i);
            } else {
                s.observe(i, object, now);
            }
        }
    }
    rv.map_or(Event::Nothing, Event::Version)
}

/// A Node as Kubernetes' e2e framework counts it ready for pods: `Ready=True`, and no
/// `not-ready` or `unreachable` taint (the node lifecycle controller removes it a moment
/// after the node turns ready).
fn schedulable(node: &Value) -> bool {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    let tainted = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|t| t["key"] == "node.kubernetes.io/not-ready" || t["key"] == "node.kubernetes.io/unreachable");
    ready && !tainted
}

/// Waits until a scheduler holds its Lease and `min_nodes` Nodes are Ready and
/// schedulable; returns the holder and their count.
async fn wait_for_cluster(api: &Api, min_nodes: usize, deadline: Deadline) -> BenchResult<(String, usize)> {
    loop {
        let (status, body) = api
            .call(
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler",
                None,
            )
            .await?;
        let holder = if status.is_success() {
            parse_json(&body)?
                .pointer("/spec/holderIdentity")
                .and_then(Value::as_str)
                .filter(|h| !h.is_empty())
                .map(str::to_string)
        } else if status == StatusCode::NOT_FOUND {
            None
        } else {
            return Err(format!("reading the scheduler's Lease: {status}"));
        };
        let nodes = api.get_json("/api/v1/nodes").await?;
        let ready = nodes
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|n| schedulable(n))
            .count();
        if let Some(holder) = holder.clone().filter(|_| ready >= min_nodes) {
            return Ok((holder, ready));
        }
        if deadline.passed() {
            return Err(format!(
                "the cluster is not ready: scheduler Lease holder {holder:?}, {ready} of the {min_nodes} Nodes \
                 wanted Ready and schedulable"
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn create_namespace(api: &Api, ns: &str) -> BenchResult<()> {
    let body = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}).to_string();
    let (status, answer) = api.call(Method::POST, "/api/v1/namespaces", Some(body)).await?;
    if status.is_success() || status == StatusCode::CONFLICT {
        Ok(())
    } else {
        Err(format!(
            "creating namespace {ns}: {status}: {}",
            String::from_utf8_lossy(&answer)
        ))
    }
}

/// Creates the pods, `concurrency` at a time; stops at the first failure.
async fn create_all(
    api: &Arc<Api>,
    tracker: &Arc<Tracker>,
    template: &Arc<PodTemplate>,
    a: &PodsArgs,
) -> BenchResult<()> {
    let path = Arc::new(format!("/api/v1/namespaces/{}/pods", a.namespace));
    let start = tokio::time::Instant::now();
    let per_second = a.creates_per_second;
    let creates = futures::stream::iter(0..a.pods)
        .then(move |i| async move {
            if per_second > 0 {
                let due = Duration::from_secs_f64(i as f64 / f64::from(per_second));
                tokio::time::sleep_until(start + due).await;
            }
            i
        })
        .map(|i| {
            let (api, tracker, template, path) = (api.clone(), tracker.clone(), template.clone(), path.clone());
            async move {
                let name = format!("{}{i}", tracker.prefix);
                let body = template.pod_json(&name);
                tracker.lock().pods[i].sent = Some(Instant::now());
                let (status, answer) = api.call(Method::POST, &path, Some(body)).await?;
                if status != StatusCode::CREATED {
                    return Err(format!(
                        "creating {name}: {status}: {}",
                        String::from_utf8_lossy(&answer)
                    ));
                }
                tracker.lock().pods[i].answered = Some(Instant::now());
                Ok(())
            }
        })
        .buffer_unordered(a.concurrency);
    let mut creates = std::pin::pin!(creates);
    while let Some(r) = creates.next().await {
        r?;
    }
    Ok(())
}

/// Deletes every pod that was sent, `concurrency` at a time, and waits for the watch to
/// show them gone. Returns the seconds from the first delete to the last pod gone.
async fn delete_all(api: &Arc<Api>, tracker: &Arc<Tracker>, a: &PodsArgs) -> BenchResult<f64> {
    let deadline = Deadline::after(Duration::from_secs(a.delete_timeout_s));
    let sent: Vec<usize> = {
        let mut s = tracker.lock();
        s.deleting = true;
        (0..s.pods.len()).filter(|&i| s.pods[i].sent.is_some()).collect()
    };
    let total = sent.len();
    let start = Instant::now();
    let mut deletes = futures::stream::iter(sent)
        .map(|i| {
            let (api, tracker) = (api.clone(), tracker.clone());
            let path = format!("/api/v1/namespaces/{}/pods/{}{i}", a.namespace, tracker.prefix);
            async move {
                let (status, answer) = api.call(Method::DELETE, &path, None).await?;
                if status.is_success() || status == StatusCode::NOT_FOUND {
                    Ok(())
                } else {
                    Err(format!("DELETE {path}: {status}: {}", String::from_utf8_lossy(&answer)))
                }
            }
        })
        .buffer_unordered(a.concurrency);
    while let Some(r) = deletes.next().await {
        r?;
        if deadline.passed() {
            return Err("deleting the pods: not within --delete-timeout-s".into());
        }
    }
    tracker.wait(deadline, "every pod gone", |s| s.gone >= total).await?;
    Ok(start.elapsed().as_secs_f64())
}

/// `--timeline`: one CSV line per pod (see [`PodsArgs::timeline`]); a moment not seen is
/// left empty.
fn timeline_csv(s: &State, start: Instant, start_unix_ms: u128) -> String {
    let ms = |t: Option<Instant>| {
        t.map_or(String::new(), |t| {
            format!("{:.3}", t.saturating_duration_since(start).as_secs_f64() * 1e3)
        })
    };
    let mut csv = format!(
        "# first create at {start_unix_ms} ms (Unix)\n\
         pod,node,sent_ms,answered_ms,scheduled_ms,ready_ms,scheduled_rv,ready_rv\n"
    );
    for (i, p) in s.pods.iter().enumerate() {
        csv.push_str(&format!(
            "{i},{},{},{},{},{},{},{}\n",
            p.node.as_deref().unwrap_or(""),
            ms(p.sent),
            ms(p.answered),
            ms(p.scheduled),
            ms(p.ready),
            p.scheduled_rv.as_deref().unwrap_or(""),
            p.ready_rv.as_deref().unwrap_or(""),
        ));
    }
    csv
}

/// The figures of a run, from the tracker's state.
struct Report {
    created: usize,
    scheduled: usize,
    ready: usize,
    relists: usize,
    create_request: Histogram<u64>,
    to_scheduled: Histogram<u64>,
    to_ready: Histogram<u64>,
    scheduled_to_ready: Histogram<u64>,
    /// First create sent → last pod ready.
    seconds: f64,
    create_seconds: f64,
    nodes_used: usize,
    pods_per_node_min: usize,
    pods_per_node_max: usize,
    /// Why the pods that are not ready are not, by count.
    not_ready: BTreeMap<String, usize>,
}

impl Report {
    fn of(s: &State, start: Instant, create_seconds: f64) -> Report {
        let (mut create_request, mut to_scheduled, mut to_ready, mut scheduled_to_ready) =
            (new_histogram(), new_histogram(), new_histogram(), new_histogram());
        let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
        let mut not_ready = BTreeMap::new();
        let mut last_ready = start;
        let mut created = 0;
        for p in &s.pods {
            let Some(sent) = p.sent else { continue };
            if let Some(answered) = p.answered {
                created += 1;
                record_us(&mut create_request, answered.saturating_duration_since(sent));
            }
            if let Some(scheduled) = p.scheduled {
                record_us(&mut to_scheduled, scheduled.saturating_duration_since(sent));
            }
            match p.ready {
                Some(ready) => {
                    record_us(&mut to_ready, ready.saturating_duration_since(sent));
                    if let Some(scheduled) = p.scheduled {
                        record_us(&mut scheduled_to_ready, ready.saturating_duration_since(scheduled));
                    }
                    last_ready = last_ready.max(ready);
                }
                None => {
                    let reason = p.reason.clone().unwrap_or_else(|| "not seen".to_string());
                    *not_ready.entry(reason).or_insert(0) += 1;
                }
            }
            if let Some(node) = &p.node {
                *per_node.entry(node.as_str()).or_insert(0) += 1;
            }
        }
        Report {
            created,
            scheduled: s.scheduled,
            ready: s.ready,
            relists: s.relists,
            create_request,
            to_scheduled,
            to_ready,
            scheduled_to_ready,
            seconds: last_ready.saturating_duration_since(start).as_secs_f64(),
            create_seconds,
            nodes_used: per_node.len(),
            pods_per_node_min: per_node.values().copied().min().unwrap_or(0),
            pods_per_node_max: per_node.values().copied().max().unwrap_or(0),
            not_ready,
        }
    }
}

pub async fn run(a: PodsArgs) -> BenchResult<()> {
    if a.pods == 0 || a.pods > PODS_MAX {
        return Err(format!("--pods must be in 1..={PODS_MAX}"));
    }
    if a.concurrency == 0 || a.concurrency > CONCURRENCY_MAX {
        return Err(format!("--concurrency must be in 1..={CONCURRENCY_MAX}"));
    }
    let command = parse_command(&a.command)?;
    let rss_pids = parse_rss(&a.rss)?;
    let deadline = Deadline::after(Duration::from_secs(a.timeout_s));
    let api = Arc::new(Api::new(&a.api, a.concurrency + 4)?);
    let (holder, ready_nodes) = wait_for_cluster(&api, a.min_ready_nodes, deadline).await?;
    create_namespace(&api, &a.namespace).await?;
    let run = run_id();
    let template = Arc::new(PodTemplate {
        run: run.clone(),
        image: a.image.clone(),
        command,
        cpu: a.pod_cpu.clone(),
        memory: a.pod_memory.clone(),
        grace_period_s: a.grace_period_s,
    });
    let tracker = Arc::new(Tracker {
        prefix: format!("pb-{run}-"),
        state: Mutex::new(State::new(a.pods)),
        changed: Notify::new(),
    });
    let rv = relist(&api, &a.namespace, &run, &tracker).await?;
    let watch = tokio::spawn(watch_pods(
        api.clone(),
        a.namespace.clone(),
        run.clone(),
        rv,
        tracker.clone(),
    ));

    let start = Instant::now();
    let start_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let created = create_all(&api, &tracker, &template, &a).await;
    let create_seconds = start.elapsed().as_secs_f64();
    let waited = match created {
        Ok(()) => {
            let n = a.pods;
            tracker
                .wait(deadline, "every pod Running and Ready", |s| s.ready >= n)
                .await
        }
        Err(e) => Err(e),
    };
    // Memory with every pod running (or as far as the run got).
    let rss: Vec<(String, Option<u64>)> = rss_pids
        .iter()
        .map(|(name, pid)| (name.clone(), rss_bytes(*pid).ok()))
        .collect();
    let report = Report::of(&tracker.lock(), start, create_seconds);
    if let Some(path) = &a.timeline {
        let csv = timeline_csv(&tracker.lock(), start, start_unix_ms);
        std::fs::write(path, csv).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let deleted = if a.keep {
        None
    } else {
        Some(delete_all(&api, &tracker, &a).await)
    };
    watch.abort();
    let complete = waited.is_ok();
    // A run that failed before any pod was created has no figures worth printing.
    if report.created > 0 {
        let delete_seconds = match &deleted {
            Some(Ok(s)) => Some(*s),
            _ => None,
        };
        print_report(&a, &holder, ready_nodes, &report, &rss, delete_seconds, complete);
    }
    waited?;
    if let Some(d) = deleted {
        d?;
    }
    Ok(())
}

fn print_report(
    a: &PodsArgs,
    scheduler: &str,
    ready_nodes: usize,
    r: &Report,
    rss: &[(String, Option<u64>)],
    delete_seconds: Option<f64>,
    complete: bool,
) {
    let rate = r.ready as f64 / r.seconds.max(1e-9);
    let creates_rate = r.created as f64 / r.create_seconds.max(1e-9);
    let latencies = [
        (
            "create_to_scheduled",
            "create sent -> PodScheduled seen",
            &r.to_scheduled,
        ),
        ("create_to_ready", "create sent -> Running+Ready seen", &r.to_ready),
        (
            "scheduled_to_ready",
            "PodScheduled -> Running+Ready",
            &r.scheduled_to_ready,
        ),
        ("create_request", "create request (sent -> answered)", &r.create_request),
    ];
    if a.json {
        let mut j = Json::new();
        j.str("api", &a.api)
            .str("scheduler", scheduler)
            .int("ready_nodes", ready_nodes as i64)
            .int("pods", a.pods as i64)
            .int("concurrency", a.concurrency as i64)
            .int("creates_per_second_max", i64::from(a.creates_per_second))
            .bool("complete", complete)
            .int("created", r.created as i64)
            .int("scheduled", r.scheduled as i64)
            .int("ready", r.ready as i64)
            .num("seconds", r.seconds)
            .num("pods_per_s", rate)
            .num("create_seconds", r.create_seconds)
            .num("creates_per_s", creates_rate)
            .int("nodes_used", r.nodes_used as i64)
            .int("pods_per_node_min", r.pods_per_node_min as i64)
            .int("pods_per_node_max", r.pods_per_node_max as i64)
            .int("relists", r.relists as i64)
            .num("delete_seconds", delete_seconds.unwrap_or(f64::NAN));
        for (key, _, h) in latencies {
            j.obj(key, LatencySummary::of(h).json());
        }
        let mut m = Json::new();
        for (name, bytes) in rss {
            m.opt_int(name, bytes.map(|b| b as i64));
        }
        j.obj("rss_bytes", m);
        let mut nr = Json::new();
        for (reason, n) in &r.not_ready {
            nr.int(reason, *n as i64);
        }
        j.obj("not_ready", nr);
        println!("{}", j.render());
        return;
    }
    let pacing = match a.creates_per_second {
        0 => String::new(),
        n => format!(" at most {n}/s"),
    };
    println!(
        "pods: {} pods, {} creates in flight{pacing}, {ready_nodes} ready node(s), scheduler {scheduler}{}",
        a.pods,
        a.concurrency,
        if complete { "" } else { " (INCOMPLETE)" }
    );
    println!(
        "  {} created in {:.3} s ({creates_rate:.1}/s); {} scheduled, {} ready; {:.3} s from the first create \
         to the last ready: {rate:.1} pods/s",
        r.created, r.create_seconds, r.scheduled, r.ready, r.seconds
    );
    println!(
        "  spread: {} node(s), {}..{} pods per node",
        r.nodes_used, r.pods_per_node_min, r.pods_per_node_max
    );
    for (_, what, h) in latencies {
        println!("  {what:<36} {}", LatencySummary::of(h).line());
    }
    for (name, bytes) in rss {
        match bytes {
            Some(b) => println!(
                "  RSS of {name} with the pods running: {:.1} MiB",
                *b as f64 / 1048576.0
            ),
            None => println!("  RSS of {name}: unreadable (the process is gone?)"),
        }
    }
    if let Some(s) = delete_seconds {
        println!("  deleted, all gone after {}", fmt_us(s * 1e6));
    }
    if r.relists > 0 {
        println!(
            "  the watch had to list again {} time(s): some times are coarse",
            r.relists
        );
    }
    for (reason, n) in &r.not_ready {
        println!("  not ready: {n} ({reason})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(n: usize) -> Tracker {
        Tracker {
            prefix: "pb-r-".into(),
            state: Mutex::new(State::new(n)),
            changed: Notify::new(),
        }
    }

    fn pod(name: &str, node: &str, phase: &str, conditions: &[(&str, &str)], waiting: Option<&str>) -> Value {
        let conditions: Vec<Value> = conditions
            .iter()
            .map(|(t, s)| serde_json::json!({"type": t, "status": s}))
            .collect();
        let mut statuses = Vec::new();
        if let Some(w) = waiting {
            statuses.push(serde_json::json!({"name": "c", "state": {"waiting": {"reason": w, "message": "m"}}}));
        }
        serde_json::json!({
            "metadata": {"name": name, "resourceVersion": "7"},
            "spec": {"nodeName": node},
            "status": {"phase": phase, "conditions": conditions, "containerStatuses": statuses},
        })
    }

    #[test]
    fn a_node_counts_once_ready_and_rid_of_the_not_ready_taint() {
        let ready = serde_json::json!({"type": "Ready", "status": "True"});
        let not_ready = serde_json::json!({"type": "Ready", "status": "False"});
        let node = |cond: &Value, taints: Value| serde_json::json!({"spec": {"taints": taints}, "status": {"conditions": [cond]}});
        let not_ready_taint = serde_json::json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]);
        assert!(schedulable(&node(&ready, serde_json::json!([]))));
        assert!(schedulable(&node(
            &ready,
            serde_json::json!([{"key": "dedicated", "effect": "NoSchedule"}])
        )));
        assert!(
            !schedulable(&node(&ready, not_ready_taint.clone())),
            "the taint not removed yet"
        );
        assert!(!schedulable(&node(&not_ready, serde_json::json!([]))));
        assert!(!schedulable(&node(&not_ready, not_ready_taint)));
        assert!(!schedulable(&serde_json::json!({})));
    }

    #[test]
    fn arguments_are_checked() {
        assert_eq!(
            parse_command(r#"["sh","-c","exec sleep 1000000"]"#).expect("command"),
            vec!["sh", "-c", "exec sleep 1000000"]
        );
        assert!(parse_command("[]").is_err());
        assert!(parse_command("sleep 1").is_err());
        assert!(parse_command(&serde_json::to_string(&vec!["x"; COMMAND_ARGS_MAX + 1]).expect("json")).is_err());
        assert_eq!(
            parse_rss(&["store=12".into()]).expect("rss"),
            vec![("store".to_string(), 12)]
        );
        assert!(parse_rss(&["store".into()]).is_err());
        assert!(parse_rss(&["store=x".into()]).is_err());
        assert!(parse_rss(&["=1".into()]).is_err());
    }

    #[test]
    fn the_pod_is_a_bare_pod_with_the_command_and_the_run_label() {
        let t = PodTemplate {
            run: "r1".into(),
            image: "img".into(),
            command: vec!["sh".into(), "-c".into(), "echo \"hi\"".into()],
            cpu: Some("10m".into()),
            memory: None,
            grace_period_s: 3,
        };
        let p: Value = serde_json::from_str(&t.pod_json("pb-r1-0")).expect("pod JSON");
        assert_eq!(p["metadata"]["labels"][RUN_LABEL], "r1");
        assert_eq!(p["spec"]["containers"][0]["command"][2], "echo \"hi\"");
        assert_eq!(p["spec"]["containers"][0]["resources"]["requests"]["cpu"], "10m");
        assert!(p["spec"]["containers"][0]["resources"]["requests"]
            .get("memory")
            .is_none());
        assert!(p["spec"].get("nodeName").is_none(), "the scheduler places the pods");
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 3);
    }

    #[test]
    fn events_record_scheduled_then_ready_once_and_gone() {
        let t = tracker(2);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(5);
        let t2 = t0 + Duration::from_millis(9);
        let ev = |kind: &str, object: Value| serde_json::json!({"type": kind, "object": object});
        let pending = pod("pb-r-1", "", "Pending", &[], None);
        assert!(matches!(handle_event(&t, &ev("ADDED", pending), t0), Event::Version(v) if v == "7"));
        let bound = pod(
            "pb-r-1",
            "n1",
            "Pending",
            &[("PodScheduled", "True")],
            Some("ContainerCreating"),
        );
        handle_event(&t, &ev("MODIFIED", bound.clone()), t1);
        handle_event(&t, &ev("MODIFIED", bound), t2);
        let running = pod(
            "pb-r-1",
            "n1",
            "Running",
            &[("PodScheduled", "True"), ("Ready", "True")],
            None,
        );
        handle_event(&t, &ev("MODIFIED", running.clone()), t2);
        // Someone else's pod, and a bookmark: ignored.
        handle_event(
            &t,
            &ev("MODIFIED", pod("other-1", "n1", "Running", &[("Ready", "True")], None)),
            t2,
        );
        handle_event(
            &t,
            &ev("BOOKMARK", serde_json::json!({"metadata": {"resourceVersion": "9"}})),
            t2,
        );
        {
            let s = t.lock();
            assert_eq!((s.scheduled, s.ready, s.gone), (1, 1, 0));
            assert_eq!(s.pods[1].scheduled, Some(t1), "the first sighting counts");
            assert_eq!(s.pods[1].ready, Some(t2));
            assert_eq!(s.pods[1].node.as_deref(), Some("n1"));
            assert!(s.stuck.is_none());
        }
        handle_event(&t, &ev("DELETED", running.clone()), t2);
        handle_event(&t, &ev("DELETED", running), t2);
        assert_eq!(t.lock().gone, 1);
        let gone = serde_json::json!({"type": "ERROR", "object": {"kind": "Status", "code": 410}});
        assert!(matches!(handle_event(&t, &gone, t2), Event::Expired));
        let other = serde_json::json!({"type": "ERROR", "object": {"kind": "Status", "code": 500}});
        assert!(matches!(handle_event(&t, &other, t2), Event::Error(_)));
    }

    #[test]
    fn a_pod_that_cannot_start_ends_the_wait() {
        let t = tracker(1);
        let now = Instant::now();
        t.lock().observe(
            0,
            &pod(
                "pb-r-0",
                "n1",
                "Pending",
                &[("PodScheduled", "True")],
                Some("ContainerCreating"),
            ),
            now,
        );
        assert!(t.lock().stuck.is_none(), "ContainerCreating passes");
        t.lock().observe(
            0,
            &pod(
                "pb-r-0",
                "n1",
                "Running",
                &[("PodScheduled", "True")],
                Some("CrashLoopBackOff"),
            ),
            now,
        );
        let stuck = t.lock().stuck.clone().expect("stuck");
        assert!(
            stuck.contains("pb-r-0") && stuck.contains("CrashLoopBackOff"),
            "{stuck}"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let waited = rt.block_on(t.wait(Deadline::after(Duration::from_secs(30)), "ready", |s| s.ready >= 1));
        assert!(waited.is_err_and(|e| e.contains("CrashLoopBackOff")));
    }

    #[test]
    fn the_report_measures_from_the_send_time() {
        let mut s = State::new(3);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        for (i, node) in ["a", "a", "b"].iter().enumerate() {
            s.pods[i].sent = Some(ms(i as u64));
            s.pods[i].answered = Some(ms(i as u64 + 1));
            s.pods[i].node = Some((*node).into());
        }
        s.pods[0].scheduled = Some(ms(10));
        s.pods[0].ready = Some(ms(100));
        s.pods[1].scheduled = Some(ms(20));
        s.pods[1].ready = Some(ms(201));
        s.pods[2].reason = Some("ContainerCreating".into());
        s.scheduled = 2;
        s.ready = 2;
        let r = Report::of(&s, t0, 0.002);
        assert_eq!((r.created, r.ready, r.nodes_used), (3, 2, 2));
        assert_eq!((r.pods_per_node_min, r.pods_per_node_max), (1, 2));
        let ready = LatencySummary::of(&r.to_ready);
        assert_eq!(ready.count, 2);
        assert!((99_000..=101_000).contains(&ready.min_us), "{ready:?}");
        assert!((199_000..=201_000).contains(&ready.max_us), "{ready:?}");
        assert!((r.seconds - 0.201).abs() < 1e-6);
        assert_eq!(r.not_ready.get("ContainerCreating"), Some(&1));
    }
}
