//! Pod workers: one task per pod bound to the node, which runs the pod's containers
//! through the runtime and keeps the pod's status true (the kubelet's pod workers, sync
//! loop and status manager, for one pod each).
//!
//! # One worker per pod
//!
//! The agent hands each pod's newest version to its [`Worker`] through a `watch`
//! channel (`None`: the pod is gone from the API). A worker owns everything about its pod:
//! the pod's address, its volumes, its containers' runs, their probes and restarts; it
//! never shares mutable state with another worker, so a slow pod (a long grace period,
//! a hanging probe) never holds up another.
//!
//! Inside a worker, every running container has a *supervisor* task that owns the
//! runtime's handle and waits for the process to end (or stops it when told to), and a
//! *prober* task that runs the container's probes; both report to the worker through one
//! bounded channel of [`Event`]s, tagged with the run's number so that a late event of an
//! earlier run is ignored. The worker itself only decides: start, restart after back-off,
//! stop, and what the status says.
//!
//! # Lifecycle, as the kubelet's
//!
//! - **Sandbox.** The pod gets its address ([`IpPool`], from the node's `podCIDR`; the
//!   node's address for `hostNetwork` pods) and its volumes ([`super::volumes`]). Failures
//!   here (a missing ConfigMap) leave the containers waiting with the kubelet's reason and
//!   are retried.
//! - **Init containers** run one at a time, in order, each to success; a failure is
//!   retried with back-off, or fails the pod under `restartPolicy: Never`.
//! - **Containers** then start together. When one ends, `restartPolicy` decides:
//!   `Always` restarts it, `OnFailure` restarts it unless it exited 0, `Never` leaves it.
//!   Restarts back off as the kubelet's do: the first is immediate, then 10 s doubling to
//!   5 min ([`BACKOFF_INITIAL`], [`BACKOFF_MAX`]), shown as `CrashLoopBackOff`; a run that
//!   lasted [`BACKOFF_RESET`] starts the count again.
//! - **Probes** ([`super::probe`]): the startup probe first (its failure restarts the
//!   container), then liveness (its failure restarts the container) and readiness (its
//!   result is the container's `ready`). A container without a startup probe is
//!   `started` once running; without a readiness probe, ready once started.
//! - **Termination.** When the pod has a `deletionTimestamp` (or is gone from the API),
//!   each running container gets its `preStop` hook, then `SIGTERM` and what is left of
//!   the grace period (at least [`GRACE_AFTER_HOOK_MIN`] after the hook, as upstream),
//!   then `SIGKILL`. Then the final status is posted, the pod's directories and address
//!   are released, and the pod is deleted for good (grace 0, with its uid as
//!   precondition), which is what the API's graceful deletion waits for.
//!
//! # Status
//!
//! After every change the worker computes the whole status (phase, conditions,
//! `containerStatuses` and `initContainerStatuses` with state, lastState, restartCount,
//! ready, started; podIP, hostIP, startTime) by the kubelet's rules and hands it to a
//! reporter task that posts the newest one (`ReportPodStatus` over the mesh API),
//! retrying with back-off while the API is unreachable: the containers go on meanwhile,
//! and the status catches up when the API is back. Conditions other than the agent's own
//! (`PodScheduled` from the scheduler, `DisruptionTarget`) are kept as the API has them.
//!
//! # Restarts of the agent
//!
//! Containers outlive the agent (see [`super::process`]). A new worker first takes the
//! containers the runtime adopted for its pod and supervises them as they are; the pod
//! keeps its address (kept in `<pods dir>/<uid>/ip`) and its restart counts. A pod that
//! ran before (any container has a state) does not run its init containers again.
//!
//! # The simulated runtime
//!
//! On a hollow node ([`super::simulated`]) the workers are the same, with four
//! differences: containers are not probed (reported started and ready once running), no
//! `preStop` hook runs, a container needs no command, and volumeMounts are not mounted
//! (so they need no root).
//!
//! # Metrics
//!
//! With [`Context::metrics`], each worker records (see [`crate::metrics::NodeMetrics`]) its
//! pod's start (from the worker's creation to every container having started, once), its
//! running containers (a guard in each run) and whether any is running (a guard the
//! worker holds), and every probe's result; dropping a worker or a run takes its counts
//! down, whichever way it ends.
//!
//! Left out: ephemeral containers, sidecar init containers (`restartPolicy: Always` on
//! an init container: run as a plain init container here), `postStart` hooks,
//! `activeDeadlineSeconds`, readiness gates other than the agent's own conditions, pod
//! resize, and eviction under pressure.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus, Probe, Secret, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::Client;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::init;
use super::probe::{self, Kind, Timing, Tracker};
use super::process::{ContainerSpec, Exit};
use super::runtime::{self, Runtime};
use super::spec::{self, Sources};
use super::volumes;
use crate::metrics::{NodeMetrics, ProbeType, Running};
use crate::nodeipam::Cidr;
use crate::{AgentError, Result};

/// The delay before the second restart of a crashing container; each further one doubles it.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// The longest delay between restarts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A run at least this long forgets the container's earlier crashes (twice the longest
/// delay, as the kubelet's back-off forgets an entry).
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// After a `preStop` hook, a container still gets at least this long after `SIGTERM`.
pub const GRACE_AFTER_HOOK_MIN: Duration = Duration::from_secs(2);
/// The grace period of a pod that sets none (the API's default).
pub const GRACE_DEFAULT_S: i64 = 30;
/// Events a worker's containers may have queued for it.
const EVENTS_MAX: usize = 64;
/// How long a failed sandbox setup (a missing ConfigMap, no address free) waits before
/// it is tried again.
const SETUP_RETRY: Duration = Duration::from_secs(2);
/// A token source's lifetime when it names none (the API's default, upstream's).
const TOKEN_EXPIRATION_DEFAULT_S: i64 = 3600;
/// The token volume the API's ServiceAccount admission adds (upstream's names; this
/// crate does not depend on the API server's).
const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// How soon a failed token renewal is tried again.
const TOKEN_RENEW_RETRY: Duration = Duration::from_secs(10);
/// Status reports: the first and the longest pause between tries while they fail.
const REPORT_RETRY_FIRST: Duration = Duration::from_millis(200);
const REPORT_RETRY_MAX: Duration = Duration::from_secs(10);
/// A report or the final delete that takes longer is abandoned and tried again.
const API_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The file in a pod's directory that keeps its address across agent restarts.
const IP_FILE: &str = "ip";
/// The pod's `/etc/hosts` and `/etc/resolv.conf`, in its directory.
const HOSTS_FILE: &str = "hosts";
const RESOLV_FILE: &str = "resolv.conf";

/// Posts a pod's status; implemented over the mesh API by the agent, and by tests.
pub trait StatusSink: Send + Sync + 'static {
    /// Replaces the status of `namespace/name`. `Ok(false)`: the pod no longer exists.
    fn report(
        &self,
        namespace: String,
        name: String,
        status: serde_json::Value,
    ) -> futures::future::BoxFuture<'static, std::result::Result<bool, String>>;
}

/// What every worker of one node shares.
pub struct Context {
    pub runtime: Arc<Runtime>,
    /// The Kubernetes API: ConfigMaps and Secrets the pods use, and the final deletes.
    pub client: Client,
    pub status: Arc<dyn StatusSink>,
    pub node_name: String,
    pub host_ip: IpAddr,
    /// `<dir>/<pod uid>/`: each pod's address file and volumes.
    pub pods_dir: PathBuf,
    pub ips: Mutex<IpPool>,
    /// For `resourceFieldRef`s of containers without limits.
    pub node_cpu_millis: u64,
    pub node_memory_bytes: u64,
    /// The crash back-off's first delay and cap (the constants above; tests shorten them).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Cluster DNS for the pods (`dnsPolicy: ClusterFirst`), if the cluster has it.
    pub dns: Option<Dns>,
    /// Whether containers can get mounts (volumeMounts, the pod's resolv.conf and hosts
    /// files): the runtime has an init program and the agent may make mount namespaces.
    pub mounts: bool,
    /// Running state of each container, for the log server's follows.
    pub running: Mutex<BTreeMap<(String, String), Arc<PodRuns>>>,
    /// Where the workers record pod starts, running pods and containers, and probes.
    pub metrics: Option<NodeMetrics>,
}

/// The cluster DNS a pod's `/etc/resolv.conf` names.
#[derive(Debug, Clone)]
pub struct Dns {
    pub nameserver: IpAddr,
    /// `cluster.local`.
    pub zone: String,
    /// The host's own search domains, appended as the kubelet does.
    pub host_search: Vec<String>,
}

/// Which containers of one pod are running, as the log server needs it.
pub struct PodRuns {
    pub uid: String,
    /// Container name → (is it an init container, running?).
    pub containers: BTreeMap<String, (bool, watch::Sender<bool>)>,
}

/// The pod addresses of a node: its `podCIDR`, less the network address, the first
/// address (a gateway's, by convention) and the broadcast address.
#[derive(Debug)]
pub struct IpPool {
    cidr: Cidr,
    used: BTreeMap<Ipv4Addr, String>,
}

impl IpPool {
    pub fn new(cidr: Cidr) -> IpPool {
        IpPool {
            cidr,
            used: BTreeMap::new(),
        }
    }

    fn range(&self) -> (u32, u32) {
        let size = 1u64 << (32 - u32::from(self.cidr.prefix));
        let first = self.cidr.base as u64 + 2;
        let last = self.cidr.base as u64 + size.saturating_sub(2);
        (first as u32, last.min(u64::from(u32::MAX)) as u32)
    }

    /// The pod's address: the one it has, or the lowest free.
    pub fn allocate(&mut self, uid: &str) -> Option<Ipv4Addr> {
        if let Some((ip, _)) = self.used.iter().find(|(_, u)| *u == uid) {
            return Some(*ip);
        }
        let (first, last) = self.range();
        let ip = (first..=last)
            .map(Ipv4Addr::from)
            .find(|ip| !self.used.contains_key(ip))?;
        self.used.insert(ip, uid.to_owned());
        Some(ip)
    }

    /// Takes back an address a pod had before the agent restarted; false if it is not
    /// in the pool's range or another pod has it.
    pub fn restore(&mut self, ip: Ipv4Addr, uid: &str) -> bool {
        let (first, last) = self.range();
        let n = u32::from(ip);
        if n < first || n > last || self.used.get(&ip).is_some_and(|u| u != uid) {
            return false;
        }
        self.used.insert(ip, uid.to_owned());
        true
    }

    pub fn release(&mut self, uid: &str) {
        self.used.retain(|_, u| u != uid);
    }

    pub fn used(&self) -> usize {
        self.used.len()
    }
}

/// What a container's tasks tell its worker.
#[derive(Debug)]
enum Event {
    Exited {
        name: String,
        run: u64,
        exit: Exit,
        /// The kernel killed a process of it for want of memory (its memory limit).
        oom_killed: bool,
        finished_at: Timestamp,
    },
    Started {
        name: String,
        run: u64,
    },
    Ready {
        name: String,
        run: u64,
        ready: bool,
    },
    /// The liveness or startup probe failed: the container is to be restarted.
    Unhealthy {
        name: String,
        run: u64,
        message: String,
    },
}

/// One run of a container.
struct Run {
    number: u64,
    id: String,
    started_at: Timestamp,
    since: Instant,
    /// Tells the supervisor to stop the process with this grace period.
    stop: Option<oneshot::Sender<Duration>>,
    prober: Option<tokio::task::JoinHandle<()>>,
    started: bool,
    ready: bool,
    /// Counts the container as running while the run lives (metrics on).
    _counted: Option<Running>,
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(p) = self.prober.take() {
            p.abort();
        }
    }
}

/// How a run ended, for `state` and `lastState`.
#[derive(Clone)]
struct Ended {
    id: String,
    exit_code: i32,
    signal: Option<i32>,
    reason: String,
    message: Option<String>,
    started_at: Option<Timestamp>,
    finished_at: Timestamp,
}

impl Ended {
    fn state(&self) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                container_id: (!self.id.is_empty()).then(|| self.id.clone()),
                exit_code: self.exit_code,
                signal: self.signal,
                reason: Some(self.reason.clone()),
                message: self.message.clone(),
                started_at: self.started_at.map(Time),
                finished_at: Some(Time(self.finished_at)),
            }),
            ..Default::default()
        }
    }
}

/// One container of the pod, as the worker tracks it.
struct Slot {
    spec: Container,
    init: bool,
    restart_count: u32,
    run: Option<Run>,
    /// The latest end; while not running, the state; once running again, `lastState`.
    last: Option<Ended>,
    /// Not running and not to be restarted (done, or under `Never`).
    finished: bool,
    /// When it may start again, and the delay that was (for the back-off message).
    restart_at: Option<(Instant, Duration)>,
    /// Crashes since the last long run, for the back-off.
    crashes: u32,
    /// Why it is waiting, when it is not running and has not ended.
    waiting: Option<(String, String)>,
    /// A liveness or startup failure that is stopping the current run (its message).
    killing: Option<String>,
    running_tx: watch::Sender<bool>,
}

impl Slot {
    fn new(spec: Container, init: bool) -> Slot {
        Slot {
            spec,
            init,
            restart_count: 0,
            run: None,
            last: None,
            finished: false,
            restart_at: None,
            crashes: 0,
            waiting: Some(("ContainerCreating".into(), String::new())),
            killing: None,
            running_tx: watch::channel(false).0,
        }
    }

    fn exited_ok(&self) -> bool {
        self.last.as_ref().is_some_and(|e| e.exit_code == 0)
    }

    fn status(&self) -> ContainerStatus {
        let state = match (&self.run, &self.last, &self.waiting) {
            (Some(run), _, _) => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(run.started_at)),
                }),
                ..Default::default()
            },
            (None, _, Some((reason, message))) => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: (!message.is_empty()).then(|| message.clone()),
                }),
                ..Default::default()
            },
            (None, Some(ended), None) => ended.state(),
            (None, None, None) => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ContainerCreating".into()),
                    message: None,
                }),
                ..Default::default()
            },
        };
        // lastState: the previous run's end, once the container runs (or waits) again.
        let last_state = match (&self.run, &self.waiting) {
            (None, None) => None,
            _ => self.last.as_ref().map(Ended::state),
        };
        let image = self.spec.image.clone().unwrap_or_default();
        ContainerStatus {
            name: self.spec.name.clone(),
            image: image.clone(),
            image_id: image,
            container_id: self
                .run
                .as_ref()
                .map(|r| r.id.clone())
                .or_else(|| self.last.as_ref().map(|e| e.id.clone())),
            // A finished init container counts as ready, as upstream reports it.
            ready: self.run.as_ref().is_some_and(|r| r.ready) || (self.init && self.finished && self.exited_ok()),
            started: Some(self.run.as_ref().is_some_and(|r| r.started)),
            restart_count: self.restart_count as i32,
            state: Some(state),
            last_state: Some(last_state.unwrap_or_default()),
            ..Default::default()
        }
    }
}

/// The desired state of one pod, as its worker is handed it.
pub type Desired = watch::Receiver<Option<Arc<Pod>>>;

/// Runs one pod until it is deleted (and its end reported) or the channel's sender is
/// dropped (the agent stops: its containers are left running, to be adopted).
pub struct Worker {
    ctx: Arc<Context>,
    pod: Arc<Pod>,
    uid: String,
    namespace: String,
    name: String,
    slots: Vec<Slot>,
    /// Index of the first main container in `slots`.
    mains: usize,
    pod_ip: Option<IpAddr>,
    sandbox_ready: bool,
    volumes: Vec<(String, PathBuf)>,
    start_time: Timestamp,
    next_run: u64,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    status_tx: watch::Sender<Option<serde_json::Value>>,
    /// The pod had reached Succeeded or Failed before this worker took it.
    already_terminal: bool,
    /// The ConfigMaps and Secrets as last read, for restarts while the API is away.
    last_sources: Option<Sources>,
    /// When the projected volumes' ServiceAccount tokens are to be renewed (None: the
    /// pod has none, or the sandbox is not set up yet).
    tokens_renew_at: Option<Instant>,
    /// When this worker took the pod, for its start duration.
    seen: Instant,
    /// The start duration was recorded, or is not to be (the pod ran before this worker).
    start_recorded: bool,
    /// Counts the pod as running while it has a running container (metrics on).
    pod_running: Option<Running>,
}

impl Worker {
    /// A worker for `pod`, taking over the `adopted` containers of it.
    pub fn new(ctx: Arc<Context>, pod: Arc<Pod>, adopted: Vec<runtime::Container>) -> Worker {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let mut slots: Vec<Slot> = spec
            .init_containers
            .unwrap_or_default()
            .into_iter()
            .map(|c| Slot::new(c, true))
            .collect();
        let mains = slots.len();
        slots.extend(spec.containers.into_iter().map(|c| Slot::new(c, false)));
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or_else(Timestamp::now, |t| t.0);
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let already_terminal = matches!(phase, Some("Succeeded" | "Failed")) && adopted.is_empty();
        // A pod past Pending, or with containers to adopt, started before this worker
        // (an agent restart): its start is not this worker's to measure.
        let start_recorded = !adopted.is_empty() || phase.is_some_and(|p| p != "Pending");
        let (events_tx, events) = mpsc::channel(EVENTS_MAX);
        let (status_tx, status_rx) = watch::channel(None);
        tokio::spawn(report_statuses(
            ctx.status.clone(),
            namespace.clone(),
            name.clone(),
            status_rx,
        ));
        let mut worker = Worker {
            ctx,
            pod,
            uid,
            namespace,
            name,
            slots,
            mains,
            pod_ip: None,
            sandbox_ready: false,
            volumes: Vec::new(),
            start_time,
            next_run: 0,
            events_tx,
            events,
            status_tx,
            already_terminal,
            last_sources: None,
            tokens_renew_at: None,
            seen: Instant::now(),
            start_recorded,
            pod_running: None,
        };
        worker.resume(adopted);
        worker.publish_runs();
        worker
    }

    /// Takes over adopted containers, and what the runtime remembers of earlier runs.
    fn resume(&mut self, adopted: Vec<runtime::Container>) {
        let ran_before = self
            .slots
            .iter()
            .any(|s| !s.init && matches!(self.ctx.runtime.state(&self.uid, &s.spec.name), Ok(Some(_))));
        for i in 0..self.slots.len() {
            let name = self.slots[i].spec.name.clone();
            if let Ok(Some(state)) = self.ctx.runtime.state(&self.uid, &name) {
                self.slots[i].restart_count = state.restart_count;
                if let Some(exit) = state.exit {
                    let finished_at = state
                        .finished_at
                        .as_deref()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or_else(Timestamp::now);
                    let mut ended = ended_of(
                        format!("process://{}/{}/{}", self.uid, name, state.restart_count),
                        exit,
                        state.started_at.parse().ok(),
                        finished_at,
                        None,
                    );
                    if state.oom_killed {
                        oom(&mut ended);
                    }
                    // As if it had just ended: the restart policy decides.
                    self.ended(i, ended, Duration::ZERO);
                }
            }
            if self.slots[i].init && ran_before {
                // The pod's containers ran before: its init containers had all succeeded.
                self.slots[i].finished = true;
                self.slots[i].waiting = None;
                if self.slots[i].last.is_none() {
                    self.slots[i].last = Some(Ended {
                        id: String::new(),
                        exit_code: 0,
                        signal: None,
                        reason: "Completed".into(),
                        message: None,
                        started_at: None,
                        finished_at: self.start_time,
                    });
                }
            }
        }
        for c in adopted {
            let Some(i) = self.slots.iter().position(|s| s.spec.name == c.name()) else {
                continue;
            };
            let started_at = self
                .ctx
                .runtime
                .state(&self.uid, c.name())
                .ok()
                .flatten()
                .and_then(|s| s.started_at.parse().ok())
                .unwrap_or_else(Timestamp::now);
            self.slots[i].restart_count = c.restart_count();
            self.slots[i].waiting = None;
            self.supervise(i, c, started_at);
        }
    }

    /// Runs the pod; returns when it is done with (deleted and cleaned up, or the agent
    /// dropped the sender).
    pub async fn run(mut self, mut desired: Desired) {
        loop {
            let pod = desired.borrow_and_update().clone();
            let Some(pod) = pod else {
                // Gone from the API (deleted for good, or no longer bound here).
                self.terminate(None).await;
                self.clean_up().await;
                return;
            };
            self.pod = pod;
            if self.pod.metadata.deletion_timestamp.is_some() {
                let grace = self
                    .pod
                    .metadata
                    .deletion_grace_period_seconds
                    .or_else(|| self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
                    .unwrap_or(GRACE_DEFAULT_S)
                    .max(0);
                self.terminate(Some(Duration::from_secs(grace as u64))).await;
                self.publish_status();
                self.clean_up().await;
                self.delete_from_api().await;
                return;
            }
            if !self.already_terminal {
                self.step().await;
                self.publish_status();
            }
            self.record_metrics();
            let wake = self.next_wake();
            tokio::select! {
                changed = desired.changed() => {
                    if changed.is_err() {
                        // The agent is stopping: containers stay for a later adoption.
                        return;
                    }
                }
                Some(event) = self.events.recv() => self.handle(event).await,
                () = sleep_until(wake) => {}
            }
        }
    }

    /// Whether the pod has a running container, and its start once every container has
    /// started (running now, or ended since).
    fn record_metrics(&mut self) {
        let Some(m) = &self.ctx.metrics else { return };
        let running = self.slots.iter().any(|s| s.run.is_some());
        if running != self.pod_running.is_some() {
            self.pod_running = running.then(|| m.running_pod());
        }
        if !self.start_recorded
            && self.slots[self.mains..]
                .iter()
                .all(|s| s.run.is_some() || s.last.is_some())
        {
            self.start_recorded = true;
            m.pod_started(self.seen.elapsed());
        }
    }

    /// The earliest moment something is due (a restart, a sandbox retry).
    fn next_wake(&self) -> Option<Instant> {
        let restart = self.slots.iter().filter_map(|s| s.restart_at.map(|(at, _)| at)).min();
        if !self.sandbox_ready && !self.already_terminal {
            let retry = Instant::now() + SETUP_RETRY;
            return Some(restart.map_or(retry, |r| r.min(retry)));
        }
        match (restart, self.tokens_renew_at) {
            (Some(r), Some(t)) => Some(r.min(t)),
            (r, t) => r.or(t),
        }
    }

    fn restart_policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    /// Does what is due: the sandbox, the next init container, the containers.
    async fn step(&mut self) {
        if !self.sandbox_ready {
            match self.set_up_sandbox().await {
                Ok(()) => {
                    self.sandbox_ready = true;
                    // Adopted containers' probes waited for the address.
                    for i in 0..self.slots.len() {
                        self.start_prober(i);
                    }
                }
                Err((reason, message)) => {
                    for s in self.slots.iter_mut().filter(|s| s.run.is_none() && !s.finished) {
                        s.waiting = Some((reason.to_owned(), message.clone()));
                    }
                    return;
                }
            }
        }
        let now = Instant::now();
        if self.tokens_renew_at.is_some_and(|at| at <= now) {
            let pod_dir = self.ctx.pods_dir.join(&self.uid);
            if let Err((_, message)) = self.write_volumes(&pod_dir).await {
                // The old tokens stay in place until they expire; try again soon.
                tracing::warn!(pod = %self.key(), error = %message, "renewing the service account tokens failed");
                self.tokens_renew_at = Some(now + TOKEN_RENEW_RETRY);
            }
        }
        if self.pod_failed() {
            // An init container failed for good: nothing else runs.
            return;
        }
        // Init containers: the first one not finished runs, alone.
        if let Some(i) = (0..self.mains).find(|&i| !self.slots[i].finished) {
            let s = &self.slots[i];
            if s.run.is_none() && s.restart_at.is_none_or(|(at, _)| at <= now) {
                self.start(i).await;
            }
            return;
        }
        for i in self.mains..self.slots.len() {
            let s = &self.slots[i];
            if s.run.is_none() && !s.finished && s.restart_at.is_none_or(|(at, _)| at <= now) {
                self.start(i).await;
            }
        }
    }

    /// Whether an init container failed under `restartPolicy: Never`.
    fn pod_failed(&self) -> bool {
        self.restart_policy() == "Never" && self.slots[..self.mains].iter().any(|s| s.finished && !s.exited_ok())
    }

    /// The pod's address and volumes; on failure, the waiting reason and message.
    async fn set_up_sandbox(&mut self) -> std::result::Result<(), (&'static str, String)> {
        let host_network = self.pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        let pod_dir = self.ctx.pods_dir.join(&self.uid);
        if self.pod_ip.is_none() {
            self.pod_ip = Some(if host_network {
                self.ctx.host_ip
            } else {
                // Off the async workers: a file create can wait behind another process's
                // fsync (the journal), and would stall every pod of the agent meanwhile.
                let (ctx, uid, dir) = (self.ctx.clone(), self.uid.clone(), pod_dir.clone());
                let simulated = self.ctx.runtime.is_simulated();
                let ip = tokio::task::spawn_blocking(move || address(&ctx, &uid, &dir, !simulated))
                    .await
                    .map_err(|e| ("ContainerCreating", format!("allocating the address: {e}")))?
                    .map_err(|e| ("ContainerCreating", e.to_string()))?;
                IpAddr::V4(ip)
            });
        }
        if self.ctx.runtime.is_simulated() {
            // Nothing reads a simulated pod's files: hollow nodes write none.
            return Ok(());
        }
        self.write_volumes(&pod_dir).await?;
        if self.ctx.mounts {
            self.write_network_files(&pod_dir, host_network)
                .map_err(|e| ("ContainerCreating", e.to_string()))?;
        }
        Ok(())
    }

    /// Writes (or rewrites) the pod's volumes from the objects and tokens read now, and
    /// sets when its tokens are due for renewal.
    async fn write_volumes(&mut self, pod_dir: &Path) -> std::result::Result<(), (&'static str, String)> {
        let mut sources = self
            .sources()
            .await
            .map_err(|e| ("CreateContainerConfigError", e.to_string()))?;
        let (tokens, renew_in) = self
            .tokens()
            .await
            .map_err(|e| ("CreateContainerConfigError", e.to_string()))?;
        sources.tokens = tokens;
        let pod = self.pod.clone();
        let dir = pod_dir.to_owned();
        self.volumes = tokio::task::spawn_blocking(move || volumes::materialize(&pod, &sources, &dir))
            .await
            .map_err(|e| ("ContainerCreating", format!("writing the volumes: {e}")))?
            .map_err(|e| ("CreateContainerConfigError", e.to_string()))?;
        self.tokens_renew_at = renew_in.map(|d| Instant::now() + d);
        Ok(())
    }

    /// A token for every `serviceAccountToken` source of the pod's projected volumes,
    /// from the TokenRequest API, bound to this pod (as the kubelet's token manager asks
    /// for them); and how soon the first of them is to be renewed: at 80% of its life,
    /// as the kubelet renews.
    async fn tokens(&self) -> Result<(std::collections::BTreeMap<(String, usize), String>, Option<Duration>)> {
        let mut tokens = std::collections::BTreeMap::new();
        let mut renew_in: Option<Duration> = None;
        let spec = self.pod.spec.as_ref();
        let account = spec
            .and_then(|s| s.service_account_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        for v in spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
            let Some(projected) = &v.projected else { continue };
            for (i, source) in projected.sources.iter().flatten().enumerate() {
                let Some(t) = &source.service_account_token else {
                    continue;
                };
                let expiration_s = t.expiration_seconds.unwrap_or(TOKEN_EXPIRATION_DEFAULT_S);
                let request = TokenRequest {
                    spec: TokenRequestSpec {
                        audiences: t.audience.iter().cloned().collect(),
                        expiration_seconds: Some(expiration_s),
                        bound_object_ref: Some(BoundObjectReference {
                            api_version: Some("v1".into()),
                            kind: Some("Pod".into()),
                            name: Some(self.name.clone()),
                            uid: Some(self.uid.clone()),
                        }),
                    },
                    ..TokenRequest::default()
                };
                let accounts: Api<ServiceAccount> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
                let answer = accounts
                    .create_token_request(&account, &PostParams::default(), &request)
                    .await?;
                let token = answer.status.map(|s| s.token).unwrap_or_default();
                if token.is_empty() {
                    return Err(AgentError::Config(format!(
                        "the TokenRequest for service account {account:?} returned no token"
                    )));
                }
                tokens.insert((v.name.clone(), i), token);
                let renew = Duration::from_secs(expiration_s.max(1) as u64 * 8 / 10);
                renew_in = Some(renew_in.map_or(renew, |r| r.min(renew)));
            }
        }
        Ok((tokens, renew_in))
    }

    /// The pod's `hosts` file (its address and name, as the kubelet writes it) and, under
    /// `dnsPolicy: ClusterFirst` with cluster DNS, its `resolv.conf`.
    fn write_network_files(&mut self, pod_dir: &Path, host_network: bool) -> Result<()> {
        let write = |name: &str, text: &str| {
            let path = pod_dir.join(name);
            std::fs::write(&path, text).map_err(|e| AgentError::Io(format!("writing {}", path.display()), e))
        };
        let spec = self.pod.spec.clone().unwrap_or_default();
        if !host_network {
            let hostname = spec.hostname.clone().unwrap_or_else(|| self.name.clone());
            let fqdn = match &spec.subdomain {
                Some(sub) => {
                    let zone = self.ctx.dns.as_ref().map_or("cluster.local", |d| d.zone.as_str());
                    format!("{hostname}.{sub}.{}.svc.{zone}\t", self.namespace)
                }
                None => String::new(),
            };
            let ip = self.pod_ip.map(|ip| ip.to_string()).unwrap_or_default();
            let hosts = format!(
                "# Kubernetes-managed hosts file (written by the Capstan node agent).\n\
                 127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                 {ip}\t{fqdn}{hostname}\n"
            );
            write(HOSTS_FILE, &hosts)?;
        }
        let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
        let cluster_first = policy == "ClusterFirstWithHostNet" || (policy == "ClusterFirst" && !host_network);
        if let (true, Some(dns)) = (cluster_first, &self.ctx.dns) {
            write(
                RESOLV_FILE,
                &crate::dns::resolv_conf(dns.nameserver, &self.namespace, &dns.zone, &dns.host_search),
            )?;
        }
        Ok(())
    }

    /// Container `i`'s mounts: its volumeMounts, and the pod's hosts and resolv.conf.
    fn mounts(&self, i: usize) -> std::result::Result<Vec<init::Mount>, String> {
        let pod_dir = self.ctx.pods_dir.join(&self.uid);
        let mut mounts = Vec::new();
        for m in self.slots[i].spec.volume_mounts.iter().flatten() {
            // The token volume the API's admission added to every pod: an agent that
            // cannot mount (not root) still runs the pod, without it (its files are
            // written all the same), rather than failing every pod of a secure cluster.
            let admitted = m.name.starts_with(TOKEN_VOLUME_PREFIX) && m.mount_path == TOKEN_MOUNT_PATH;
            if admitted && !self.ctx.mounts {
                continue;
            }
            let Some((_, dir)) = self.volumes.iter().find(|(name, _)| *name == m.name) else {
                return Err(format!("volume {:?} is not one of the pod's volumes", m.name));
            };
            let mut source = dir.clone();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                let rel = Path::new(sub);
                if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                    return Err(format!("subPath {sub:?} must be a relative path without '..'"));
                }
                source = source.join(rel);
                if !source.exists() {
                    std::fs::create_dir_all(&source).map_err(|e| format!("creating subPath {sub:?}: {e}"))?;
                }
            }
            mounts.push(init::Mount {
                source,
                target: PathBuf::from(&m.mount_path),
                read_only: m.read_only.unwrap_or(false),
            });
        }
        if !self.ctx.mounts {
            if !mounts.is_empty() {
                return Err("volumeMounts need the node agent to run as root (a mount namespace per container)".into());
            }
            return Ok(mounts);
        }
        for (file, target) in [(HOSTS_FILE, "/etc/hosts"), (RESOLV_FILE, "/etc/resolv.conf")] {
            let source = pod_dir.join(file);
            let explicit = mounts.iter().any(|m| m.target == Path::new(target));
            if source.exists() && !explicit {
                mounts.push(init::Mount {
                    source,
                    target: PathBuf::from(target),
                    read_only: true,
                });
            }
        }
        Ok(mounts)
    }

    /// The ConfigMaps and Secrets the pod refers to (volumes, envFrom, env), read now.
    async fn sources(&self) -> Result<Sources> {
        let (config_maps, secrets) = referenced_objects(&self.pod);
        let mut sources = Sources {
            node_cpu_millis: self.ctx.node_cpu_millis,
            node_memory_bytes: self.ctx.node_memory_bytes,
            ..Sources::default()
        };
        let cms: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for name in config_maps {
            if let Some(cm) = cms.get_opt(&name).await? {
                sources.config_maps.insert(name, cm);
            }
        }
        let ss: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for name in secrets {
            if let Some(s) = ss.get_opt(&name).await? {
                sources.secrets.insert(name, s);
            }
        }
        Ok(sources)
    }

    /// Starts container `i` (its command line and environment resolved now).
    async fn start(&mut self, i: usize) {
        let sources = match (self.sources().await, &self.last_sources) {
            (Ok(s), _) => {
                self.last_sources = Some(s.clone());
                s
            }
            // The API is away (an outage): restart with what was read last, as the
            // kubelet's cached ConfigMaps and Secrets let it.
            (Err(e), Some(last)) => {
                tracing::debug!(pod = %self.key(), error = %e, "reading the pod's ConfigMaps and Secrets failed; using the last read");
                last.clone()
            }
            (Err(e), None) => {
                self.slots[i].waiting = Some(("CreateContainerConfigError".into(), e.to_string()));
                self.slots[i].restart_at = Some((Instant::now() + SETUP_RETRY, Duration::ZERO));
                return;
            }
        };
        let pod_ip = self.pod_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let host_ip = self.ctx.host_ip.to_string();
        let container = self.slots[i].spec.clone();
        let simulated = self.ctx.runtime.is_simulated();
        let resolved = spec::environment(&self.pod, &container, &pod_ip, &host_ip, &sources).and_then(|env| {
            match spec::command_line(&container, &env) {
                Ok(cmd) => Ok((env, cmd)),
                // A simulated container runs nothing: it needs no command (pods that rely
                // on their image's entrypoint run on hollow nodes too).
                Err(_) if simulated => Ok((env, Vec::new())),
                Err(e) => Err(e),
            }
        });
        let (env, command) = match resolved {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(pod = %self.key(), container = %container.name, reason = e.reason, message = %e.message, "cannot start container");
                self.slots[i].waiting = Some((e.reason.to_owned(), e.message));
                self.slots[i].restart_at = Some((Instant::now() + SETUP_RETRY, Duration::ZERO));
                return;
            }
        };
        let memory_limit_bytes = container
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .and_then(|q| crate::quantity::value(&q.0))
            .and_then(|v| u64::try_from(v).ok());
        let working_dir = container.working_dir.as_ref().map(PathBuf::from);
        // A simulated container mounts nothing, so its volumeMounts need no root either.
        let mounts = if simulated { Ok(Vec::new()) } else { self.mounts(i) };
        let mounts = match mounts {
            Ok(m) => m,
            Err(message) => {
                self.slots[i].waiting = Some(("CreateContainerConfigError".into(), message));
                self.slots[i].restart_at = Some((Instant::now() + SETUP_RETRY, Duration::ZERO));
                return;
            }
        };
        let spec = ContainerSpec {
            mounts,
            pod_uid: self.uid.clone(),
            namespace: self.namespace.clone(),
            pod_name: self.name.clone(),
            container: container.name.clone(),
            command,
            env,
            working_dir,
            memory_limit_bytes,
        };
        // As a container runtime fails `exec` of a missing file at start, rather than
        // showing the container running until its init step exits 127.
        let missing = match simulated {
            true => None,
            false => missing_executable(&spec.command[0], &spec.env, &spec.mounts),
        };
        let started = match missing {
            Some(message) => Err(message),
            None => self
                .ctx
                .runtime
                .start(spec, self.slots[i].init)
                .await
                .map_err(|e| e.to_string()),
        };
        match started {
            Ok(c) => {
                tracing::info!(pod = %self.key(), container = %container.name, pid = ?c.pid(), "started container");
                self.slots[i].restart_count = c.restart_count();
                self.slots[i].waiting = None;
                self.slots[i].restart_at = None;
                self.supervise(i, c, Timestamp::now());
            }
            Err(e) => {
                tracing::warn!(pod = %self.key(), container = %container.name, error = %e, "starting container failed");
                // As a crash: restarted with back-off, under the restart policy.
                let now = Timestamp::now();
                let ended = Ended {
                    id: String::new(),
                    exit_code: 128,
                    signal: None,
                    reason: "StartError".into(),
                    message: Some(e),
                    started_at: None,
                    finished_at: now,
                };
                self.ended(i, ended, Duration::ZERO);
            }
        }
    }

    /// Hands a running container to a supervisor and a prober.
    fn supervise(&mut self, i: usize, mut c: runtime::Container, started_at: Timestamp) {
        self.next_run += 1;
        let number = self.next_run;
        let name = self.slots[i].spec.name.clone();
        let (stop_tx, stop_rx) = oneshot::channel::<Duration>();
        let events = self.events_tx.clone();
        let runtime = self.ctx.runtime.clone();
        let id = c.id().to_owned();
        let sup_name = name.clone();
        tokio::spawn(async move {
            let mut stop_rx = stop_rx;
            let exit = tokio::select! {
                exit = c.wait() => exit,
                grace = &mut stop_rx => match grace {
                    Ok(grace) => match runtime.stop(&mut c, grace).await {
                        Ok(exit) => exit,
                        Err(e) => {
                            tracing::error!(container = %c.id(), error = %e, "stopping the container failed");
                            c.wait().await
                        }
                    },
                    // The worker is gone (the agent stops): the container goes on.
                    Err(_) => return,
                },
            };
            let _ = events
                .send(Event::Exited {
                    name: sup_name,
                    run: number,
                    exit,
                    oom_killed: c.oom_killed(),
                    finished_at: Timestamp::now(),
                })
                .await;
        });
        // Simulated containers are not probed (there is nothing to probe): started and
        // ready as soon as they run.
        let simulated = self.ctx.runtime.is_simulated() && !self.slots[i].init;
        self.slots[i].run = Some(Run {
            number,
            id,
            started_at,
            since: Instant::now(),
            stop: Some(stop_tx),
            prober: None,
            started: simulated,
            ready: simulated,
            _counted: self.ctx.metrics.as_ref().map(NodeMetrics::running_container),
        });
        self.slots[i].running_tx.send_replace(true);
        self.start_prober(i);
    }

    /// Starts the probes of slot `i`'s run once the pod's address is known: a container
    /// adopted after an agent restart is supervised before the sandbox is set up again,
    /// and probing the node's address instead of the pod's would fail its probes (the
    /// sandbox step calls this again).
    fn start_prober(&mut self, i: usize) {
        let simulated = self.ctx.runtime.is_simulated();
        let host_network = self.pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        let Some(pod_ip) = self.pod_ip.or(host_network.then_some(self.ctx.host_ip)) else {
            return;
        };
        if self.slots[i].init || simulated {
            return;
        }
        let env = self.probe_env(i);
        let (spec, events) = (self.slots[i].spec.clone(), self.events_tx.clone());
        let metrics = self.ctx.metrics.clone();
        let name = self.slots[i].spec.name.clone();
        let Some(run) = self.slots[i].run.as_mut() else {
            return;
        };
        if run.prober.is_none() {
            run.prober = Some(tokio::spawn(probe_container(
                spec, pod_ip, env, name, run.number, events, metrics,
            )));
        }
    }

    /// The environment exec probes and hooks run with: the container's, as far as it
    /// can be had without reading sources again (plain values and the pod's fields).
    fn probe_env(&self, i: usize) -> Vec<(String, String)> {
        let pod_ip = self.pod_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let sources = Sources {
            node_cpu_millis: self.ctx.node_cpu_millis,
            node_memory_bytes: self.ctx.node_memory_bytes,
            ..Sources::default()
        };
        let mut c = self.slots[i].spec.clone();
        c.env_from = None;
        if let Some(env) = c.env.as_mut() {
            env.retain(|e| {
                e.value_from
                    .as_ref()
                    .is_none_or(|v| v.config_map_key_ref.is_none() && v.secret_key_ref.is_none())
            });
        }
        spec::environment(&self.pod, &c, &pod_ip, &self.ctx.host_ip.to_string(), &sources).unwrap_or_default()
    }

    fn slot_of(&mut self, name: &str, run: u64) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.spec.name == name && s.run.as_ref().is_some_and(|r| r.number == run))
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Exited {
                name,
                run,
                exit,
                oom_killed,
                finished_at,
            } => {
                let Some(i) = self.slot_of(&name, run) else { return };
                let r = self.slots[i].run.take().expect("invariant: slot_of found a run");
                self.slots[i].running_tx.send_replace(false);
                let lasted = r.since.elapsed();
                let killed_for = self.slots[i].killing.take();
                let mut ended = ended_of(r.id.clone(), exit, Some(r.started_at), finished_at, killed_for);
                if oom_killed {
                    oom(&mut ended);
                }
                tracing::info!(pod = %self.key(), container = %name, exit_code = ended.exit_code, reason = %ended.reason, "container ended");
                self.ended(i, ended, lasted);
            }
            Event::Started { name, run } => {
                if let Some(i) = self.slot_of(&name, run) {
                    if let Some(r) = self.slots[i].run.as_mut() {
                        r.started = true;
                    }
                }
            }
            Event::Ready { name, run, ready } => {
                if let Some(i) = self.slot_of(&name, run) {
                    if let Some(r) = self.slots[i].run.as_mut() {
                        r.ready = ready;
                    }
                }
            }
            Event::Unhealthy { name, run, message } => {
                let Some(i) = self.slot_of(&name, run) else { return };
                tracing::info!(pod = %self.key(), container = %name, %message, "container unhealthy; restarting it");
                let grace = self.grace_default();
                self.slots[i].killing = Some(message);
                if let Some(r) = self.slots[i].run.as_mut() {
                    r.ready = false;
                    if let Some(stop) = r.stop.take() {
                        let _ = stop.send(grace);
                    }
                }
            }
        }
    }

    fn grace_default(&self) -> Duration {
        let s = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(GRACE_DEFAULT_S);
        Duration::from_secs(s.max(0) as u64)
    }

    /// A run of container `i` ended: decide whether and when it runs again.
    fn ended(&mut self, i: usize, ended: Ended, lasted: Duration) {
        let policy = self.restart_policy().to_owned();
        let ok = ended.exit_code == 0 && ended.reason != "StartError";
        let s = &mut self.slots[i];
        s.last = Some(ended);
        s.waiting = None;
        let restart = if s.init {
            // An init container runs to success; failures are retried unless Never.
            !ok && policy != "Never"
        } else {
            match policy.as_str() {
                "Never" => false,
                "OnFailure" => !ok,
                _ => true,
            }
        };
        if s.init && ok {
            s.finished = true;
            return;
        }
        if !restart {
            s.finished = true;
            return;
        }
        if lasted >= BACKOFF_RESET {
            s.crashes = 0;
        }
        let delay = backoff_delay(s.crashes, self.ctx.backoff_initial, self.ctx.backoff_max);
        s.crashes = s.crashes.saturating_add(1);
        s.restart_at = Some((Instant::now() + delay, delay));
        if !delay.is_zero() {
            s.waiting = Some((
                "CrashLoopBackOff".into(),
                format!(
                    "back-off {} restarting failed container={} pod={}_{}({})",
                    go_duration(delay),
                    s.spec.name,
                    self.name,
                    self.namespace,
                    self.uid
                ),
            ));
        }
    }

    /// Stops every running container: `preStop`, `SIGTERM`, the grace period, `SIGKILL`
    /// (`grace` None: the pod is gone from the API; its own grace period applies).
    async fn terminate(&mut self, grace: Option<Duration>) {
        let grace = grace.unwrap_or_else(|| self.grace_default());
        let deadline = Instant::now() + grace;
        for s in self.slots.iter_mut() {
            s.restart_at = None;
            s.finished = true;
        }
        let mut stopping = 0usize;
        for i in 0..self.slots.len() {
            let Some(run) = self.slots[i].run.as_mut() else {
                continue;
            };
            let Some(stop) = run.stop.take() else {
                stopping += 1;
                continue;
            };
            stopping += 1;
            let hook = self.slots[i]
                .spec
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.clone())
                // A simulated container's hook would run on the host, not in it: none run.
                .filter(|_| !self.slots[i].init && !self.ctx.runtime.is_simulated());
            let pod_ip = self.pod_ip.unwrap_or(self.ctx.host_ip);
            let env = self.probe_env(i);
            let container = self.slots[i].spec.clone();
            let key = self.key();
            tokio::spawn(async move {
                if let Some(hook) = hook {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if let Some(sleep) = &hook.sleep {
                        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(left)).await;
                    } else {
                        let as_probe = Probe {
                            exec: hook.exec.clone(),
                            http_get: hook.http_get.clone(),
                            tcp_socket: hook.tcp_socket.clone(),
                            ..Probe::default()
                        };
                        let action = probe::action(&as_probe, &container, pod_ip);
                        let workdir = container.working_dir.as_ref().map(PathBuf::from);
                        if let Err(message) = probe::run_once(&action, left, &env, workdir.as_ref()).await {
                            tracing::warn!(pod = %key, container = %container.name, %message, "the preStop hook failed");
                        }
                    }
                }
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(GRACE_AFTER_HOOK_MIN);
                let _ = stop.send(left);
            });
        }
        while stopping > 0 {
            let Some(event) = self.events.recv().await else { break };
            if let Event::Exited { name, run, .. } = &event {
                if self.slot_of(name, *run).is_some() {
                    stopping -= 1;
                }
            }
            if matches!(event, Event::Exited { .. }) {
                self.handle(event).await;
            }
        }
        for s in self.slots.iter_mut() {
            s.restart_at = None;
            s.waiting = None;
            s.finished = true;
        }
    }

    /// Removes the pod's directories and gives its address back.
    async fn clean_up(&mut self) {
        let (ctx, uid, key) = (self.ctx.clone(), self.uid.clone(), self.key());
        let removed = tokio::task::spawn_blocking(move || {
            if let Err(e) = ctx.runtime.remove_pod(&uid) {
                tracing::warn!(pod = %key, error = %e, "removing the pod's containers' files failed");
            }
            let dir = ctx.pods_dir.join(&uid);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(pod = %key, dir = %dir.display(), error = %e, "removing the pod's directory failed");
                }
            }
        })
        .await;
        if let Err(e) = removed {
            tracing::warn!(pod = %self.key(), error = %e, "removing the pod's files panicked");
        }
        self.ctx
            .ips
            .lock()
            .expect("invariant: no panics while the lock is held")
            .release(&self.uid);
        self.ctx
            .running
            .lock()
            .expect("invariant: no panics while the lock is held")
            .remove(&(self.namespace.clone(), self.name.clone()));
    }

    /// Deletes the pod for good once its containers have stopped (grace 0, this uid).
    async fn delete_from_api(&self) {
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let mut retry = REPORT_RETRY_FIRST;
        loop {
            match tokio::time::timeout(API_CALL_TIMEOUT, pods.delete(&self.name, &params)).await {
                Ok(Ok(_)) => {
                    tracing::info!(pod = %self.key(), "pod stopped and deleted");
                    return;
                }
                // Gone already, or a newer pod of the same name (uid precondition).
                Ok(Err(kube::Error::Api(s))) if s.code == 404 || s.code == 409 => return,
                Ok(Err(e)) => {
                    tracing::warn!(pod = %self.key(), error = %e, "deleting the stopped pod failed; retrying")
                }
                Err(_) => tracing::warn!(pod = %self.key(), "deleting the stopped pod timed out; retrying"),
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(REPORT_RETRY_MAX);
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Tells the log server which containers run.
    fn publish_runs(&self) {
        let runs = PodRuns {
            uid: self.uid.clone(),
            containers: self
                .slots
                .iter()
                .map(|s| (s.spec.name.clone(), (s.init, s.running_tx.clone())))
                .collect(),
        };
        self.ctx
            .running
            .lock()
            .expect("invariant: no panics while the lock is held")
            .insert((self.namespace.clone(), self.name.clone()), Arc::new(runs));
    }

    /// Computes the status and hands it to the reporter if it changed.
    fn publish_status(&self) {
        let status = self.status();
        let value = match serde_json::to_value(&status) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(pod = %self.key(), error = %e, "encoding the pod status failed");
                return;
            }
        };
        self.status_tx.send_if_modified(|current| {
            if current.as_ref() == Some(&value) {
                return false;
            }
            *current = Some(value);
            true
        });
    }

    /// The pod's status by the kubelet's rules.
    fn status(&self) -> PodStatus {
        let inits = &self.slots[..self.mains];
        let mains = &self.slots[self.mains..];
        let policy = self.restart_policy();
        let init_done = inits.iter().all(|s| s.finished && s.exited_ok());
        let phase = if self.pod_failed() {
            "Failed"
        } else if !init_done {
            "Pending"
        } else {
            let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
            for s in mains {
                if s.run.is_some() {
                    running += 1;
                } else if s.last.is_some() {
                    stopped += 1;
                    if s.exited_ok() {
                        succeeded += 1;
                    }
                } else {
                    waiting += 1;
                }
            }
            if waiting > 0 {
                "Pending"
            } else if running > 0 {
                "Running"
            } else if stopped > 0 {
                match policy {
                    "Never" if stopped == succeeded => "Succeeded",
                    "Never" => "Failed",
                    "OnFailure" if stopped == succeeded => "Succeeded",
                    "OnFailure" => "Running",
                    _ => "Running",
                }
            } else {
                "Pending"
            }
        };
        let terminal = matches!(phase, "Succeeded" | "Failed");
        let previous = self.pod.status.clone().unwrap_or_default();
        let now = Timestamp::now();
        let condition = |type_: &str, ok: bool, reason: Option<String>, message: Option<String>| {
            let status = if ok { "True" } else { "False" };
            let old = previous
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == type_ && c.status == status);
            PodCondition {
                type_: type_.into(),
                status: status.into(),
                last_transition_time: Some(old.and_then(|c| c.last_transition_time.clone()).unwrap_or(Time(now))),
                last_probe_time: None,
                reason: if ok { None } else { reason },
                message: if ok { None } else { message },
                observed_generation: None,
            }
        };
        let unready: Vec<&str> = mains
            .iter()
            .filter(|s| !s.run.as_ref().is_some_and(|r| r.ready))
            .map(|s| s.spec.name.as_str())
            .collect();
        let uninitialized: Vec<&str> = inits
            .iter()
            .filter(|s| !(s.finished && s.exited_ok()))
            .map(|s| s.spec.name.as_str())
            .collect();
        let (ready_reason, ready_message) = if terminal {
            ("PodCompleted".to_owned(), None)
        } else {
            (
                "ContainersNotReady".to_owned(),
                Some(format!("containers with unready status: [{}]", unready.join(" "))),
            )
        };
        let ours = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady"];
        let mut conditions: Vec<PodCondition> = previous
            .conditions
            .iter()
            .flatten()
            .filter(|c| !ours.contains(&c.type_.as_str()))
            .cloned()
            .collect();
        conditions.push(condition(
            "PodReadyToStartContainers",
            self.sandbox_ready && !terminal,
            None,
            None,
        ));
        conditions.push(condition(
            "Initialized",
            init_done,
            Some(
                if terminal {
                    "PodCompleted"
                } else {
                    "ContainersNotInitialized"
                }
                .into(),
            ),
            Some(format!(
                "containers with incomplete status: [{}]",
                uninitialized.join(" ")
            )),
        ));
        let all_ready = unready.is_empty() && !terminal;
        conditions.push(condition(
            "ContainersReady",
            all_ready,
            Some(ready_reason.clone()),
            ready_message.clone(),
        ));
        conditions.push(condition("Ready", all_ready, Some(ready_reason), ready_message));
        let pod_ip = self.pod_ip.map(|ip| ip.to_string());
        PodStatus {
            phase: Some(phase.into()),
            conditions: Some(conditions),
            host_ip: Some(self.ctx.host_ip.to_string()),
            host_ips: Some(vec![HostIP {
                ip: self.ctx.host_ip.to_string(),
            }]),
            pod_ip: pod_ip.clone(),
            pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
            start_time: Some(Time(self.start_time)),
            container_statuses: Some(mains.iter().map(Slot::status).collect()),
            init_container_statuses: (!inits.is_empty()).then(|| inits.iter().map(Slot::status).collect()),
            qos_class: previous.qos_class.clone(),
            nominated_node_name: previous.nominated_node_name.clone(),
            ..PodStatus::default()
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The pod's address: the one in its address file, or a new one (written there when
/// `keep`, so that it survives an agent restart). Blocking.
fn address(ctx: &Context, uid: &str, pod_dir: &Path, keep: bool) -> Result<Ipv4Addr> {
    let file = pod_dir.join(IP_FILE);
    let mut pool = ctx.ips.lock().expect("invariant: no panics while the lock is held");
    if let Some(ip) = restore_recorded(&mut pool, uid, pod_dir) {
        return Ok(ip);
    }
    let ip = pool
        .allocate(uid)
        .ok_or_else(|| AgentError::Config(format!("no pod address free in {}", pool.cidr)))?;
    if keep {
        std::fs::create_dir_all(pod_dir).map_err(|e| AgentError::Io(format!("creating {}", pod_dir.display()), e))?;
        std::fs::write(&file, ip.to_string()).map_err(|e| AgentError::Io(format!("writing {}", file.display()), e))?;
    }
    Ok(ip)
}

/// The address recorded in a pod's directory, reserved for the pod in `pool` if it is
/// free there (or the pod's already). An agent that adopts containers calls this for
/// their pods before any pod is given an address: a new pod must not get an address an
/// adopted container still listens on.
pub fn restore_recorded(pool: &mut IpPool, uid: &str, pod_dir: &Path) -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string(pod_dir.join(IP_FILE)).ok()?;
    let ip = text.trim().parse::<Ipv4Addr>().ok()?;
    pool.restore(ip, uid).then_some(ip)
}

/// How a run ended, in the API's terms.
fn ended_of(
    id: String,
    exit: Exit,
    started_at: Option<Timestamp>,
    finished_at: Timestamp,
    killed_for: Option<String>,
) -> Ended {
    let (exit_code, signal, reason, message) = match exit {
        Exit::Code(0) => (0, None, "Completed".to_owned(), None),
        Exit::Code(code) => (code, None, "Error".to_owned(), None),
        Exit::Signal(signal) => (128 + signal, Some(signal), "Error".to_owned(), None),
        Exit::Unknown => (
            137,
            None,
            "ContainerStatusUnknown".to_owned(),
            Some("the container was adopted after an agent restart, so how it ended is not known".to_owned()),
        ),
    };
    Ended {
        id,
        exit_code,
        signal,
        reason,
        message: killed_for.or(message),
        started_at,
        finished_at,
    }
}

/// A run the kernel ended for want of memory reads as the kubelet reports it: reason
/// `OOMKilled`, exit code 137 when the end itself was not seen (an adopted container).
fn oom(ended: &mut Ended) {
    ended.reason = "OOMKilled".to_owned();
    if ended.signal.is_none() && ended.exit_code == 137 {
        ended.message = None;
    }
}

/// The wait before restarting a container that has crashed `crashes` times before this
/// crash since its last long run: none the first time, then `initial` doubling up to `max`.
fn backoff_delay(crashes: u32, initial: Duration, max: Duration) -> Duration {
    if crashes == 0 {
        return Duration::ZERO;
    }
    initial
        .saturating_mul(1u32.checked_shl(crashes - 1).unwrap_or(u32::MAX))
        .min(max)
}

/// Why `program` cannot be executed, as runc words it, if it surely cannot: a name without
/// `/` found in none of the `PATH` directories (the container's, else the default), or an
/// absolute path that is not an executable file. Paths inside the container's mounts, and
/// relative ones, are left to the start itself.
fn missing_executable(program: &str, env: &[(String, String)], mounts: &[init::Mount]) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let path = Path::new(program);
        if !path.is_absolute() || mounts.iter().any(|m| path.starts_with(&m.target)) || executable(path) {
            return None;
        }
        return Some(format!(
            "exec: \"{program}\": stat {program}: no such file or directory (or not executable)"
        ));
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(super::process::DEFAULT_PATH, |(_, v)| v.as_str());
    let found = path.split(':').filter(|d| !d.is_empty()).any(|dir| {
        let dir = Path::new(dir);
        mounts.iter().any(|m| dir.starts_with(&m.target)) || executable(&dir.join(program))
    });
    (!found).then(|| format!("exec: \"{program}\": executable file not found in $PATH"))
}

/// A duration as Go prints it (`10s`, `1m20s`, `5m0s`), for the back-off message.
fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The names of the ConfigMaps and Secrets a pod refers to.
fn referenced_objects(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut cms = std::collections::BTreeSet::new();
    let mut secrets = std::collections::BTreeSet::new();
    let Some(spec) = pod.spec.as_ref() else {
        return (Vec::new(), Vec::new());
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            cms.insert(cm.name.clone());
        }
        if let Some(s) = &v.secret {
            secrets.extend(s.secret_name.clone());
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &source.config_map {
                cms.insert(cm.name.clone());
            }
            if let Some(s) = &source.secret {
                secrets.insert(s.name.clone());
            }
        }
    }
    for c in spec.init_containers.iter().flatten().chain(spec.containers.iter()) {
        for from in c.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
        for e in c.env.iter().flatten() {
            if let Some(v) = &e.value_from {
                if let Some(r) = &v.config_map_key_ref {
                    cms.insert(r.name.clone());
                }
                if let Some(r) = &v.secret_key_ref {
                    secrets.insert(r.name.clone());
                }
            }
        }
    }
    (cms.into_iter().collect(), secrets.into_iter().collect())
}

/// Runs a container's probes for one run and reports what they find.
async fn probe_container(
    container: Container,
    pod_ip: IpAddr,
    env: Vec<(String, String)>,
    name: String,
    run: u64,
    events: mpsc::Sender<Event>,
    metrics: Option<NodeMetrics>,
) {
    let workdir = container.working_dir.as_ref().map(PathBuf::from);
    let record = |probe: ProbeType, ok: bool| {
        if let Some(m) = &metrics {
            m.probed(probe, ok);
        }
    };
    let send = |e: Event| {
        let events = events.clone();
        async move { events.send(e).await.is_ok() }
    };
    if let Some(p) = &container.startup_probe {
        let timing = Timing::of(p);
        let action = probe::action(p, &container, pod_ip);
        tokio::time::sleep(timing.initial_delay).await;
        let mut failures = 0u32;
        loop {
            let result = probe::run_once(&action, timing.timeout, &env, workdir.as_ref()).await;
            record(ProbeType::Startup, result.is_ok());
            match result {
                Ok(()) => break,
                Err(message) => {
                    failures += 1;
                    if failures >= timing.failure_threshold {
                        send(Event::Unhealthy {
                            name: name.clone(),
                            run,
                            message: format!("Startup probe failed: {message}"),
                        })
                        .await;
                        return;
                    }
                }
            }
            tokio::time::sleep(timing.period).await;
        }
    }
    if !send(Event::Started {
        name: name.clone(),
        run,
    })
    .await
    {
        return;
    }
    let liveness = async {
        let Some(p) = &container.liveness_probe else {
            return std::future::pending().await;
        };
        let timing = Timing::of(p);
        let action = probe::action(p, &container, pod_ip);
        let mut tracker = Tracker::new(Kind::Liveness, &timing);
        tokio::time::sleep(timing.initial_delay).await;
        loop {
            let result = probe::run_once(&action, timing.timeout, &env, workdir.as_ref()).await;
            record(ProbeType::Liveness, result.is_ok());
            if let (Some(false), Err(message)) = (tracker.record(result.is_ok()), &result) {
                send(Event::Unhealthy {
                    name: name.clone(),
                    run,
                    message: format!("Liveness probe failed: {message}"),
                })
                .await;
                return std::future::pending().await;
            }
            tokio::time::sleep(timing.period).await;
        }
    };
    let readiness = async {
        let Some(p) = &container.readiness_probe else {
            send(Event::Ready {
                name: name.clone(),
                run,
                ready: true,
            })
            .await;
            return std::future::pending().await;
        };
        let timing = Timing::of(p);
        let action = probe::action(p, &container, pod_ip);
        let mut tracker = Tracker::new(Kind::Readiness, &timing);
        tokio::time::sleep(timing.initial_delay).await;
        loop {
            let result = probe::run_once(&action, timing.timeout, &env, workdir.as_ref()).await;
            record(ProbeType::Readiness, result.is_ok());
            if let Some(ready) = tracker.record(result.is_ok()) {
                if let Err(message) = &result {
                    tracing::info!(container = %name, %message, "readiness probe failed");
                }
                if !send(Event::Ready {
                    name: name.clone(),
                    run,
                    ready,
                })
                .await
                {
                    return;
                }
            }
            tokio::time::sleep(timing.period).await;
        }
    };
    tokio::join!(liveness, readiness);
}

/// Posts the newest status handed to it, retrying with back-off while posts fail; ends
/// when the pod is gone, or when the worker has dropped its sender and the last status
/// it set is posted.
async fn report_statuses(
    sink: Arc<dyn StatusSink>,
    namespace: String,
    name: String,
    mut statuses: watch::Receiver<Option<serde_json::Value>>,
) {
    let mut retry = REPORT_RETRY_FIRST;
    let mut posted: Option<serde_json::Value> = None;
    loop {
        let newest = statuses.borrow_and_update().clone();
        if let Some(status) = newest.filter(|s| posted.as_ref() != Some(s)) {
            let report = sink.report(namespace.clone(), name.clone(), status.clone());
            let error = match tokio::time::timeout(API_CALL_TIMEOUT, report).await {
                Ok(Ok(true)) => {
                    posted = Some(status);
                    retry = REPORT_RETRY_FIRST;
                    continue;
                }
                Ok(Ok(false)) => return,
                Ok(Err(e)) => e,
                Err(_) => "timed out".to_owned(),
            };
            tracing::debug!(pod = %format!("{namespace}/{name}"), %error, "posting the pod status failed; retrying");
            if statuses.has_changed().is_err() {
                tokio::time::sleep(retry).await;
            } else {
                // A newer status replaces the one being retried.
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    _ = statuses.changed() => {}
                }
            }
            retry = (retry * 2).min(REPORT_RETRY_MAX);
            continue;
        }
        if statuses.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_skips_network_gateway_and_broadcast_and_restores() {
        let mut pool = IpPool::new("127.128.0.0/30".parse().expect("cidr"));
        assert_eq!(pool.allocate("a"), Some(Ipv4Addr::new(127, 128, 0, 2)));
        assert_eq!(
            pool.allocate("a"),
            Some(Ipv4Addr::new(127, 128, 0, 2)),
            "same pod, same address"
        );
        assert_eq!(pool.allocate("b"), None, "a /30 has one pod address");
        pool.release("a");
        assert!(pool.restore(Ipv4Addr::new(127, 128, 0, 2), "b"));
        assert!(!pool.restore(Ipv4Addr::new(127, 128, 0, 2), "c"), "taken");
        assert!(!pool.restore(Ipv4Addr::new(127, 128, 0, 1), "c"), "the gateway's");
        assert_eq!(pool.used(), 1);
    }

    #[test]
    fn recorded_addresses_are_reserved_for_their_pods() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut pool = IpPool::new("127.128.0.0/29".parse().expect("cidr"));
        let adopted = dir.path().join("adopted-uid");
        std::fs::create_dir_all(&adopted).expect("pod dir");
        std::fs::write(adopted.join(IP_FILE), "127.128.0.2\n").expect("ip file");
        assert_eq!(
            restore_recorded(&mut pool, "adopted-uid", &adopted),
            Some(Ipv4Addr::new(127, 128, 0, 2))
        );
        // A new pod allocated after the adopted one was restored gets another address
        // (before the fix, the first free one: the adopted pod's).
        assert_eq!(pool.allocate("new-uid"), Some(Ipv4Addr::new(127, 128, 0, 3)));
        // Another pod's directory naming a taken address is not given it; no file, no
        // address.
        let other = dir.path().join("other-uid");
        std::fs::create_dir_all(&other).expect("pod dir");
        std::fs::write(other.join(IP_FILE), "127.128.0.3").expect("ip file");
        assert_eq!(restore_recorded(&mut pool, "other-uid", &other), None);
        assert_eq!(restore_recorded(&mut pool, "none", &dir.path().join("none")), None);
    }

    #[test]
    fn crash_back_off_is_the_kubelets() {
        let delays: Vec<u64> = (0..9)
            .map(|n| backoff_delay(n, BACKOFF_INITIAL, BACKOFF_MAX).as_secs())
            .collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff_delay(u32::MAX, BACKOFF_INITIAL, BACKOFF_MAX), BACKOFF_MAX);
    }

    #[test]
    fn missing_executables_are_found_before_the_start() {
        let env = vec![("PATH".to_owned(), "/nonexistent:/bin:/usr/bin".to_owned())];
        assert_eq!(missing_executable("sh", &env, &[]), None);
        assert_eq!(missing_executable("/bin/sh", &env, &[]), None);
        assert_eq!(
            missing_executable("no-such-program", &env, &[]).as_deref(),
            Some("exec: \"no-such-program\": executable file not found in $PATH")
        );
        assert!(missing_executable("/no/such/program", &env, &[]).is_some());
        assert_eq!(missing_executable("./relative", &env, &[]), None, "left to the start");
        let mount = init::Mount {
            source: PathBuf::from("/tmp"),
            target: PathBuf::from("/opt/tools"),
            read_only: true,
        };
        assert_eq!(
            missing_executable("/opt/tools/run", &env, &[mount]),
            None,
            "inside a mount"
        );
    }

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
    }

    #[test]
    fn exits_read_as_the_api_reports_them() {
        let now = Timestamp::now();
        let e = ended_of("x".into(), Exit::Signal(9), None, now, None);
        assert_eq!((e.exit_code, e.signal, e.reason.as_str()), (137, Some(9), "Error"));
        let e = ended_of("x".into(), Exit::Code(0), None, now, None);
        assert_eq!(e.reason, "Completed");
        let e = ended_of(
            "x".into(),
            Exit::Code(1),
            None,
            now,
            Some("Liveness probe failed: x".into()),
        );
        assert_eq!(e.message.as_deref(), Some("Liveness probe failed: x"));
    }
}
