//! `scheduler`: the scheduler's throughput, latency and failover, measured from outside
//! through the Kubernetes API (over HTTP), as a user sees them.
//!
//! - `throughput`: creates `--nodes` nodes (API objects only: allocatable capacity, a
//!   hostname and a zone label, no agent behind them), then `--pods` pods with requests as
//!   fast as `--concurrency` requests in flight allow. A watch of those pods (started
//!   before the first create, from the list's resourceVersion, so no event is missed)
//!   records when each is first seen bound. Latency per pod: the create acknowledged → the
//!   binding seen in the watch (a binding seen before its create's answer counts as 0 and
//!   is counted apart). Throughput: pods bound over the time from the first create sent to
//!   the last binding seen. The scheduler must be running: the tool first waits for the
//!   `kube-system/kube-scheduler` Lease to have a holder.
//! - `failover`: starts `--schedulers` `capstan scheduler` processes (its path in
//!   `--capstan`) with the given leader election settings; each round finds the active one
//!   from the Lease's `holderIdentity` (the processes print their identity when they
//!   start), checks that it schedules (a pod bound), SIGKILLs it, creates a pod at once and
//!   times kill → the pod's binding seen in the watch, and kill → the Lease first seen held
//!   by another (polled every 10 ms). The killed process is replaced by a fresh standby
//!   before the next round. One JSON line per round with `--json`.
//!
//! Every run is bounded by `--timeout-s`; only loopback API servers are accepted. Objects
//! carry the label `capstan-bench-run=<run id>` and are deleted at the end (not timed)
//! unless `--keep`.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Notify;

use crate::common::{fmt_us, new_histogram, record_us, BenchResult, Deadline, Json, LatencySummary};
use crate::kubeapi::{parse_json, run_id, Api};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum SchedulerCommand {
    /// Pods per second and scheduling latency: N nodes (API objects only), M pods.
    Throughput(ThroughputArgs),
    /// Kill the active scheduler; time to the next binding.
    Failover(FailoverArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ThroughputArgs {
    /// The Kubernetes API, `http://host:port` on loopback.
    #[arg(long, default_value = "http://127.0.0.1:6443")]
    pub api: String,
    /// Nodes to create.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Pods to create.
    #[arg(long, default_value_t = 5000)]
    pub pods: usize,
    /// Creates in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Zones the nodes are spread over (label topology.kubernetes.io/zone).
    #[arg(long, default_value_t = 3)]
    pub zones: usize,
    /// Each node's allocatable cpu, memory and pods.
    #[arg(long, default_value = "32")]
    pub node_cpu: String,
    #[arg(long, default_value = "256Gi")]
    pub node_memory: String,
    #[arg(long, default_value_t = 110)]
    pub node_pods: u32,
    /// Each pod's requests.
    #[arg(long, default_value = "100m")]
    pub pod_cpu: String,
    #[arg(long, default_value = "128Mi")]
    pub pod_memory: String,
    /// Namespace of the pods (created if missing).
    #[arg(long, default_value = "sched-bench")]
    pub namespace: String,
    /// Leave the nodes and pods in place at the end.
    #[arg(long)]
    pub keep: bool,
    /// Seconds the whole run may take.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct FailoverArgs {
    /// The Kubernetes API, `http://host:port` on loopback.
    #[arg(long, default_value = "http://127.0.0.1:6443")]
    pub api: String,
    /// The `capstan` binary that runs the schedulers.
    #[arg(long, default_value = "capstan")]
    pub capstan: String,
    /// Scheduler processes kept running (one active, the others standing by).
    #[arg(long, default_value_t = 2)]
    pub schedulers: usize,
    /// Passed to the schedulers as `--leader-elect-lease-duration` etc.
    #[arg(long, default_value = "15s")]
    pub lease_duration: String,
    #[arg(long, default_value = "10s")]
    pub renew_deadline: String,
    #[arg(long, default_value = "2s")]
    pub retry_period: String,
    /// Rounds (kills).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Namespace of the pods (created if missing).
    #[arg(long, default_value = "sched-failover")]
    pub namespace: String,
    /// Directory for the schedulers' logs (stderr); none if not given.
    #[arg(long)]
    pub log_dir: Option<String>,
    /// Leave the node and pods in place at the end.
    #[arg(long)]
    pub keep: bool,
    /// Seconds each round may take.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// Print one JSON object per round instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: SchedulerCommand) -> BenchResult<()> {
    match command {
        SchedulerCommand::Throughput(a) => throughput(a).await,
        SchedulerCommand::Failover(a) => failover(a).await,
    }
}

/// A watch line (one event) longer than this ends the run.
const LINE_MAX_BYTES: usize = 16 << 20;

impl Api {
    /// POST that may find the object there already.
    async fn create(&self, path: &str, body: String) -> BenchResult<()> {
        let (status, answer) = self.call(Method::POST, path, Some(body)).await?;
        if status.is_success() || status == StatusCode::CONFLICT {
            Ok(())
        } else {
            Err(format!("POST {path}: {status}: {}", String::from_utf8_lossy(&answer)))
        }
    }

    /// The Lease `kube-system/kube-scheduler`'s holder, if any.
    async fn scheduler_lease_holder(&self) -> BenchResult<Option<String>> {
        let (status, body) = self
            .call(
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler",
                None,
            )
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(format!("reading the scheduler's Lease: {status}"));
        }
        let v = parse_json(&body)?;
        Ok(v.pointer("/spec/holderIdentity")
            .and_then(serde_json::Value::as_str)
            .filter(|h| !h.is_empty())
            .map(str::to_string))
    }
}

const RUN_LABEL: &str = "capstan-bench-run";

/// How often `failover` reads the Lease after a kill.
const LEASE_POLL: Duration = Duration::from_millis(10);

fn node_json(name: &str, zone: &str, run: &str, cpu: &str, memory: &str, pods: u32) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}","labels":{{"kubernetes.io/hostname":"{name}","topology.kubernetes.io/zone":"{zone}","{RUN_LABEL}":"{run}"}}}},"status":{{"capacity":{{"cpu":"{cpu}","memory":"{memory}","pods":"{pods}"}},"allocatable":{{"cpu":"{cpu}","memory":"{memory}","pods":"{pods}"}}}}}}"#
    )
}

fn pod_json(name: &str, run: &str, cpu: &str, memory: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"{RUN_LABEL}":"{run}"}}}},"spec":{{"containers":[{{"name":"c","image":"registry.k8s.io/pause:3.10","resources":{{"requests":{{"cpu":"{cpu}","memory":"{memory}"}}}}}}]}}}}"#
    )
}

/// Bindings seen by a watch: pod name → when first seen bound.
#[derive(Default)]
struct Bindings {
    seen: Mutex<HashMap<String, Instant>>,
    changed: Notify,
    /// Set when the watch gave up (the message).
    failed: Mutex<Option<String>>,
}

impl Bindings {
    fn get(&self, name: &str) -> Option<Instant> {
        self.seen
            .lock()
            .expect("invariant: no panics while the lock is held")
            .get(name)
            .copied()
    }

    fn count(&self) -> usize {
        self.seen
            .lock()
            .expect("invariant: no panics while the lock is held")
            .len()
    }

    fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .expect("invariant: no panics while the lock is held")
            .clone()
    }

    /// Waits until `done` holds for the bindings seen, or the deadline.
    async fn wait(&self, deadline: Deadline, what: &str, done: impl Fn(&Bindings) -> bool) -> BenchResult<()> {
        loop {
            let changed = self.changed.notified();
            if done(self) {
                return Ok(());
            }
            if let Some(e) = self.failure() {
                return Err(format!("the pod watch failed: {e}"));
            }
            if deadline.passed() {
                return Err(format!(
                    "{what}: not within the timeout ({} bindings seen)",
                    self.count()
                ));
            }
            let _ = tokio::time::timeout(deadline.min_after(Duration::from_millis(200)), changed).await;
        }
    }
}

/// Watches the run's pods in `namespace` from `rv` (re-watching from the last event's
/// resourceVersion if the stream ends) and records first bindings.
async fn watch_bindings(api: Arc<Api>, namespace: String, run: String, mut rv: String, bindings: Arc<Bindings>) {
    let fail = |e: String| {
        *bindings
            .failed
            .lock()
            .expect("invariant: no panics while the lock is held") = Some(e);
        bindings.changed.notify_waiters();
    };
    let mut failures = 0;
    loop {
        let path = format!(
            "/api/v1/namespaces/{namespace}/pods?watch=1&labelSelector={RUN_LABEL}%3D{run}&resourceVersion={rv}"
        );
        let req = match api.request(Method::GET, &path, None) {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let resp = match api.client.request(req).await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => return fail(format!("watch: {}", r.status())),
            Err(e) => {
                failures += 1;
                if failures > 5 {
                    return fail(format!("watch: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Ok(data) = frame.into_data() else { continue };
            buf.extend_from_slice(&data);
            let now = Instant::now();
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let Ok(event) = parse_json(&line) else {
                    return fail("watch: an event that is not JSON".into());
                };
                if event.get("type").and_then(serde_json::Value::as_str) == Some("ERROR") {
                    return fail(format!("watch: {}", String::from_utf8_lossy(&line)));
                }
                let Some(object) = event.get("object") else { continue };
                if let Some(v) = object
                    .pointer("/metadata/resourceVersion")
                    .and_then(serde_json::Value::as_str)
                {
                    rv = v.to_string();
                }
                let name = object.pointer("/metadata/name").and_then(serde_json::Value::as_str);
                let node = object.pointer("/spec/nodeName").and_then(serde_json::Value::as_str);
                if let (Some(name), Some(node)) = (name, node.filter(|n| !n.is_empty())) {
                    let _ = node;
                    let mut seen = bindings
                        .seen
                        .lock()
                        .expect("invariant: no panics while the lock is held");
                    seen.entry(name.to_string()).or_insert(now);
                }
            }
            if buf.len() > LINE_MAX_BYTES {
                return fail("watch: an event line beyond 16 MiB".into());
            }
            bindings.changed.notify_waiters();
        }
        // The server ended the stream: watch again from where it stopped.
    }
}

/// The resourceVersion to watch the run's pods from.
async fn list_rv(api: &Api, namespace: &str, run: &str) -> BenchResult<String> {
    let (status, body) = api
        .call(
            Method::GET,
            &format!("/api/v1/namespaces/{namespace}/pods?labelSelector={RUN_LABEL}%3D{run}&limit=1"),
            None,
        )
        .await?;
    if !status.is_success() {
        return Err(format!("listing pods: {status}"));
    }
    parse_json(&body)?
        .pointer("/metadata/resourceVersion")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| "the pod list has no resourceVersion".to_string())
}

async fn create_namespace(api: &Api, ns: &str) -> BenchResult<()> {
    api.create(
        "/api/v1/namespaces",
        format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{ns}"}}}}"#),
    )
    .await
}

/// Deletes the run's pods and nodes (not timed).
async fn cleanup(api: &Api, namespace: &str, run: &str) {
    for path in [
        format!("/api/v1/namespaces/{namespace}/pods?labelSelector={RUN_LABEL}%3D{run}"),
        format!("/api/v1/nodes?labelSelector={RUN_LABEL}%3D{run}"),
    ] {
        if let Err(e) = api.call(Method::DELETE, &path, None).await {
            eprintln!("capstan-bench: cleaning up {path}: {e}");
        }
    }
}

async fn wait_for_leader(api: &Api, deadline: Deadline) -> BenchResult<String> {
    loop {
        if let Some(holder) = api.scheduler_lease_holder().await? {
            return Ok(holder);
        }
        if deadline.passed() {
            return Err("no scheduler holds the kube-system/kube-scheduler Lease; start one".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn throughput(a: ThroughputArgs) -> BenchResult<()> {
    if a.nodes == 0 || a.pods == 0 || a.concurrency == 0 || a.concurrency > 1024 || a.zones == 0 {
        return Err("--nodes, --pods, --zones must be above 0 and --concurrency in 1..=1024".into());
    }
    let deadline = Deadline::after(Duration::from_secs(a.timeout_s));
    let api = Arc::new(Api::new(&a.api, a.concurrency + 2)?);
    let holder = wait_for_leader(&api, deadline).await?;
    let run = run_id();
    create_namespace(&api, &a.namespace).await?;

    let t_nodes = Instant::now();
    let results: Vec<BenchResult<()>> = futures::stream::iter(0..a.nodes)
        .map(|i| {
            let api = api.clone();
            let body = node_json(
                &format!("sb-{run}-n{i}"),
                &format!("zone-{}", i % a.zones),
                &run,
                &a.node_cpu,
                &a.node_memory,
                a.node_pods,
            );
            async move { api.create("/api/v1/nodes", body).await }
        })
        .buffer_unordered(a.concurrency)
        .collect()
        .await;
    results.into_iter().collect::<BenchResult<Vec<()>>>()?;
    let nodes_s = t_nodes.elapsed().as_secs_f64();

    let rv = list_rv(&api, &a.namespace, &run).await?;
    let bindings = Arc::new(Bindings::default());
    let watch = tokio::spawn(watch_bindings(
        api.clone(),
        a.namespace.clone(),
        run.clone(),
        rv,
        bindings.clone(),
    ));

    let path = format!("/api/v1/namespaces/{}/pods", a.namespace);
    let start = Instant::now();
    let acks: Vec<BenchResult<(String, Instant)>> = futures::stream::iter(0..a.pods)
        .map(|i| {
            let (api, path) = (api.clone(), path.clone());
            let name = format!("sb-{run}-p{i}");
            let body = pod_json(&name, &run, &a.pod_cpu, &a.pod_memory);
            async move {
                let (status, answer) = api.call(Method::POST, &path, Some(body)).await?;
                if status != StatusCode::CREATED {
                    return Err(format!(
                        "creating {name}: {status}: {}",
                        String::from_utf8_lossy(&answer)
                    ));
                }
                Ok((name, Instant::now()))
            }
        })
        .buffer_unordered(a.concurrency)
        .collect()
        .await;
    let created_s = start.elapsed().as_secs_f64();
    let acks: Vec<(String, Instant)> = acks.into_iter().collect::<BenchResult<_>>()?;
    let waited = bindings
        .wait(deadline, "every pod bound", |b| b.count() >= acks.len())
        .await;
    watch.abort();
    let seen = bindings
        .seen
        .lock()
        .expect("invariant: no panics while the lock is held")
        .clone();
    let mut hist: Histogram<u64> = new_histogram();
    let mut before_ack = 0u64;
    for (name, acked) in &acks {
        if let Some(bound) = seen.get(name) {
            if bound < acked {
                before_ack += 1;
            }
            record_us(&mut hist, bound.saturating_duration_since(*acked));
        }
    }
    let last = seen.values().max().copied().unwrap_or(start);
    let wall_s = last.saturating_duration_since(start).as_secs_f64();
    let bound = seen.len();
    let rate = bound as f64 / wall_s.max(1e-9);
    if !a.keep {
        cleanup(&api, &a.namespace, &run).await;
    }
    waited?;
    let lat = LatencySummary::of(&hist);
    if a.json {
        let mut j = Json::new();
        j.str("api", &a.api)
            .str("scheduler", &holder)
            .int("nodes", a.nodes as i64)
            .int("pods", a.pods as i64)
            .int("concurrency", a.concurrency as i64)
            .int("bound", bound as i64)
            .num("seconds", wall_s)
            .num("pods_per_s", rate)
            .num("create_seconds", created_s)
            .num("creates_per_s", a.pods as f64 / created_s.max(1e-9))
            .num("nodes_seconds", nodes_s)
            .int("bound_before_create_answer", before_ack as i64)
            .obj("latency", lat.json());
        println!("{}", j.render());
    } else {
        println!(
            "scheduler throughput: {} pods onto {} nodes (scheduler {holder}), {} creates in flight",
            a.pods, a.nodes, a.concurrency
        );
        println!(
            "  {bound} bound in {wall_s:.3} s (first create -> last binding): {rate:.1} pods/s; creates took {created_s:.3} s"
        );
        println!("  latency (create answered -> binding seen): {}", lat.line());
        if before_ack > 0 {
            println!("  {before_ack} bindings were seen before their create's answer (counted as 0)");
        }
    }
    Ok(())
}

/// One `capstan scheduler` process and the identity it reported.
struct SchedulerProcess {
    identity: String,
    child: tokio::process::Child,
}

async fn start_scheduler(a: &FailoverArgs, n: usize, deadline: Deadline) -> BenchResult<SchedulerProcess> {
    let mut cmd = tokio::process::Command::new(&a.capstan);
    cmd.args([
        "scheduler",
        "--master",
        &a.api,
        "--leader-elect-lease-duration",
        &a.lease_duration,
        "--leader-elect-renew-deadline",
        &a.renew_deadline,
        "--leader-elect-retry-period",
        &a.retry_period,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .kill_on_drop(true);
    match &a.log_dir {
        Some(dir) => {
            let path = format!("{dir}/scheduler-{n}.log");
            let f = std::fs::File::create(&path).map_err(|e| format!("{path}: {e}"))?;
            cmd.stderr(f);
        }
        None => {
            cmd.stderr(Stdio::null());
        }
    }
    let mut child = cmd.spawn().map_err(|e| format!("starting {}: {e}", a.capstan))?;
    let stdout = child.stdout.take().ok_or("the scheduler's stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(deadline.min_after(Duration::from_secs(30)), lines.next_line())
        .await
        .map_err(|_| "a scheduler did not report ready within 30 s".to_string())?
        .map_err(|e| format!("reading the scheduler's output: {e}"))?
        .ok_or("a scheduler exited before it was ready")?;
    let identity = line
        .strip_prefix("capstan scheduler ready as ")
        .ok_or_else(|| format!("unexpected first line from the scheduler: {line:?}"))?
        .trim()
        .to_string();
    // Keep draining stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(SchedulerProcess { identity, child })
}

/// A round's result.
struct Round {
    killed: String,
    successor: String,
    kill_to_lease: Option<Duration>,
    kill_to_bound: Duration,
}

async fn failover(a: FailoverArgs) -> BenchResult<()> {
    if a.schedulers < 2 || a.schedulers > 16 || a.repeat == 0 {
        return Err("--schedulers must be in 2..=16 and --repeat at least 1".into());
    }
    let api = Arc::new(Api::new(&a.api, 4)?);
    let setup_deadline = Deadline::after(Duration::from_secs(a.timeout_s));
    let run = run_id();
    create_namespace(&api, &a.namespace).await?;
    api.create(
        "/api/v1/nodes",
        node_json(&format!("fo-{run}"), "zone-0", &run, "1000", "4Ti", 10_000),
    )
    .await?;
    let rv = list_rv(&api, &a.namespace, &run).await?;
    let bindings = Arc::new(Bindings::default());
    let watch = tokio::spawn(watch_bindings(
        api.clone(),
        a.namespace.clone(),
        run.clone(),
        rv,
        bindings.clone(),
    ));
    let mut procs: Vec<SchedulerProcess> = Vec::new();
    let mut started = 0;
    for _ in 0..a.schedulers {
        procs.push(start_scheduler(&a, started, setup_deadline).await?);
        started += 1;
    }
    let pods_path = format!("/api/v1/namespaces/{}/pods", a.namespace);
    let mut rounds = Vec::new();
    let mut outcome: BenchResult<()> = Ok(());
    for r in 0..a.repeat {
        let deadline = Deadline::after(Duration::from_secs(a.timeout_s));
        let result: BenchResult<Round> = async {
            // The active scheduler, and proof that it schedules.
            let holder = loop {
                let h = api.scheduler_lease_holder().await?;
                if let Some(h) = h.filter(|h| procs.iter().any(|p| &p.identity == h)) {
                    break h;
                }
                if deadline.passed() {
                    return Err("none of the schedulers took the Lease".to_string());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let warm = format!("fo-{run}-{r}-warm");
            api.create(&pods_path, pod_json(&warm, &run, "10m", "16Mi")).await?;
            bindings
                .wait(deadline, "the warm-up pod bound", |b| b.get(&warm).is_some())
                .await?;
            let holder_now = api.scheduler_lease_holder().await?;
            if holder_now.as_deref() != Some(holder.as_str()) {
                return Err(format!("the Lease moved from {holder} to {holder_now:?} on its own"));
            }
            let i = procs
                .iter()
                .position(|p| p.identity == holder)
                .ok_or("the holder is not one of ours")?;
            let mut victim = procs.swap_remove(i);

            victim.child.start_kill().map_err(|e| format!("kill: {e}"))?;
            let killed_at = Instant::now();
            // Who takes the Lease, and when (polled apart, so the binding's wait does not
            // slow it down).
            let mut lease_watch = {
                let (api, holder) = (api.clone(), holder.clone());
                tokio::spawn(async move {
                    loop {
                        if let Ok(Some(h)) = api.scheduler_lease_holder().await {
                            if h != holder {
                                return (killed_at.elapsed(), h);
                            }
                        }
                        tokio::time::sleep(LEASE_POLL).await;
                    }
                })
            };
            let name = format!("fo-{run}-{r}");
            api.create(&pods_path, pod_json(&name, &run, "10m", "16Mi")).await?;
            let waited = bindings
                .wait(deadline, &format!("{name} bound after the kill"), |b| {
                    b.get(&name).is_some()
                })
                .await;
            let _ = victim.child.wait().await;
            if let Err(e) = waited {
                lease_watch.abort();
                return Err(e);
            }
            let bound = bindings.get(&name).ok_or("the binding vanished")?;
            // The binding means a new leader: its Lease shows within a few polls.
            let lease = tokio::time::timeout(Duration::from_secs(5), &mut lease_watch).await;
            lease_watch.abort();
            let (kill_to_lease, successor) = match lease {
                Ok(Ok((d, h))) => (Some(d), h),
                _ => (None, String::new()),
            };
            Ok(Round {
                killed: holder,
                successor,
                kill_to_lease,
                kill_to_bound: bound.saturating_duration_since(killed_at),
            })
        }
        .await;
        match result {
            Ok(round) => {
                report_round(&a, r, &round);
                rounds.push(round);
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
        // A fresh standby replaces the killed one.
        match start_scheduler(&a, started, deadline).await {
            Ok(p) => procs.push(p),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
        started += 1;
    }
    watch.abort();
    drop(procs);
    if !a.keep {
        cleanup(&api, &a.namespace, &run).await;
    }
    outcome?;
    if !a.json {
        let mut ms: Vec<f64> = rounds.iter().map(|r| r.kill_to_bound.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        println!(
            "kill -> binding over {} round(s): median {:.1} ms, min {:.1} ms, max {:.1} ms",
            ms.len(),
            ms[ms.len() / 2],
            ms[0],
            ms[ms.len() - 1]
        );
    }
    Ok(())
}

fn report_round(a: &FailoverArgs, r: usize, round: &Round) {
    let lease_ms = round.kill_to_lease.map(|d| d.as_secs_f64() * 1e3);
    if a.json {
        let mut j = Json::new();
        j.str("api", &a.api)
            .int("schedulers", a.schedulers as i64)
            .str("lease_duration", &a.lease_duration)
            .str("renew_deadline", &a.renew_deadline)
            .str("retry_period", &a.retry_period)
            .int("round", r as i64)
            .str("killed", &round.killed)
            .str("successor", &round.successor)
            .num("kill_to_bound_ms", round.kill_to_bound.as_secs_f64() * 1e3)
            .num("kill_to_lease_ms", lease_ms.unwrap_or(f64::NAN));
        println!("{}", j.render());
    } else {
        println!(
            "round {r}: killed {} -> {} took the Lease after {}, binding after {}",
            round.killed,
            round.successor,
            round
                .kill_to_lease
                .map_or("?".to_string(), |d| fmt_us(d.as_micros() as f64)),
            fmt_us(round.kill_to_bound.as_micros() as f64)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_objects_are_json() {
        let n = parse_json(node_json("n", "z", "r", "32", "256Gi", 110).as_bytes()).expect("node");
        assert_eq!(
            n.pointer("/status/allocatable/pods")
                .and_then(serde_json::Value::as_str),
            Some("110")
        );
        let p = parse_json(pod_json("p", "r", "100m", "128Mi").as_bytes()).expect("pod");
        assert_eq!(p["metadata"]["labels"][RUN_LABEL].as_str(), Some("r"));
    }
}
