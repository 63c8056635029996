//! A whole chaos run, as `capstan chaos` does it: start a cluster of real processes,
//! run the workloads while the nemesis injects faults, heal, check the histories, and
//! report.
//!
//! # Order of a run
//!
//! 1. Start `masters` store members ([`Cluster`]) and wait for a leader. The run's
//!    origin, the instant every recorded time counts from, is taken then.
//! 2. Start the register workload ([`crate::workload`]): `clients` closed-loop clients,
//!    each bound to one member (so a fault on a member shows up as its clients'
//!    errors), on `keys` keys rotated every `key_rotate_ms`.
//!    Beside it, a writer of multi-key transactions, and a watcher on every member
//!    watching them (resuming after every disconnect).
//!    With nodes (`nodes` > 0): the masters run `capstan master` and the nodes an agent
//!    and a proxy each; once the nodes are Ready and a Service answers, a Kubernetes
//!    workload scales and rolls Deployments and a client calls the Service through the
//!    node proxies ([`crate::kube`]).
//! 3. Run the nemesis ([`crate::nemesis`]) on a blocking thread for `duration_ms`; it
//!    heals its last fault, so the cluster ends with every member running.
//! 4. Stop the workloads (clients finish their request in flight), write an end marker
//!    and let the watchers catch up to it; read every key
//!    the workload touched once more, linearizably, through one healthy member, and add
//!    those reads to the history: a write lost at the end shows up as a final read that
//!    no linearization can explain.
//! 5. Check: the history is linearizable ([`crate::linearizability`]); the cluster
//!    recovered from every fault in time; every acknowledged write and transaction is
//!    in the store's final log at its revision; the watchers' streams kept etcd's watch
//!    guarantees ([`crate::watch`]); with nodes, every Deployment converged to exactly
//!    its replicas Running and Ready, nothing lost, duplicated or bound twice.
//! 6. Report ([`crate::report`]): recovery figures from the history and the fault
//!    records, the timeline, the verdicts; write `report.json`, `report.txt`,
//!    `timeline.svg` and the members' logs into `out_dir` when one is given.
//!
//! A run that fails names the seed and the command line that replays its choices.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};

use crate::cluster::{Cluster, ClusterConfig, KubernetesConfig, NODES_MAX};
use crate::kube::{
    check_kube, run_kube_workload, run_service_client, setup_service, wait_nodes_ready, KubeApi, KubeCheckConfig,
    KubeWorkloadConfig, ServiceClientConfig, ServiceConfig,
};
use crate::linearizability::{check, CheckResult, History, Limits, Op, Operation, Outcome, Output};
use crate::nemesis::{run_nemesis, FaultFamily, FaultKind, NemesisConfig};
use crate::report::{fill_first_writes, timeline, Check, OpStats, Recovery, RunReport, Verdict};
use crate::watch::{
    check_acknowledged, check_watches, read_event_log, run_txn_writer, run_watchers, Event, EventKind, RunControl,
    TxnRecord, TxnWriterConfig, WatchConfig, Write, EVENTS_MAX,
};
use crate::workload::{run_register_workload, Connect, WorkloadConfig};
use crate::{ChaosError, Result};

/// Masters in a run, at most.
pub const MASTERS_MAX: usize = 7;
/// Longest run, in milliseconds (a day).
pub const DURATION_MAX_MS: u64 = 24 * 3600 * 1000;
/// Where the register workload's keys live.
const KEY_PREFIX: &str = "/capstan-chaos/register/";
/// Where the transaction writer writes and the watchers watch.
const WATCH_PREFIX: &str = "/capstan-chaos/watch/";
/// The namespace of the Kubernetes and Service workloads.
const KUBE_NAMESPACE: &str = "chaos-kube";
/// Deadline of one Kubernetes API request (the client then tries the next master).
const KUBE_TIMEOUT_MS: u64 = 3_000;
/// How long the watchers may take to catch up with the end of the run, and the final
/// logs to be read.
const DRAIN_DEADLINE_MS: u64 = 30_000;

#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The `capstan` binary the members run.
    pub binary: PathBuf,
    pub masters: usize,
    /// Nodes (agent and proxy each); with any, masters run `capstan master` (the
    /// Kubernetes API, controller-manager and scheduler beside the store) and the
    /// Kubernetes and Service workloads run too.
    pub nodes: usize,
    /// How long faults are injected.
    pub duration_ms: u64,
    pub seed: u64,
    pub faults: Vec<FaultKind>,
    /// How long a fault holds; `None`: twice the election timeout, so that a pause
    /// always outlasts an election.
    pub hold_ms: Option<u64>,
    /// Quiet time before each fault.
    pub quiet_ms: u64,
    pub clients: usize,
    pub keys: usize,
    pub key_rotate_ms: u64,
    /// Deadline of each workload request.
    pub op_timeout_ms: u64,
    pub election_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// How long the cluster may take to be healthy after a heal.
    pub recover_deadline_ms: u64,
    /// Bounds of the linearizability search.
    pub limits: Limits,
    /// Where to write the report files; `None`: nowhere.
    pub out_dir: Option<PathBuf>,
    /// Print faults as they happen on stderr.
    pub progress: bool,
}

impl RunConfig {
    pub fn new(binary: PathBuf) -> RunConfig {
        RunConfig {
            binary,
            masters: 3,
            nodes: 0,
            duration_ms: 60_000,
            seed: 1,
            faults: FaultKind::ALL.to_vec(),
            hold_ms: None,
            quiet_ms: 1_000,
            clients: 12,
            keys: 4,
            key_rotate_ms: 5_000,
            op_timeout_ms: 2_000,
            election_timeout_ms: 1_000,
            heartbeat_interval_ms: 100,
            recover_deadline_ms: 30_000,
            limits: Limits::default(),
            out_dir: None,
            progress: false,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(ChaosError::InvalidConfig(what));
        if self.masters == 0 || self.masters > MASTERS_MAX {
            return bad(format!("masters must be 1..={MASTERS_MAX}, not {}", self.masters));
        }
        if self.duration_ms == 0 || self.duration_ms > DURATION_MAX_MS {
            return bad(format!(
                "the duration must be 1 ms..={} h, not {} ms",
                DURATION_MAX_MS / 3_600_000,
                self.duration_ms
            ));
        }
        if self.nodes > NODES_MAX {
            return bad(format!("nodes must be 0..={NODES_MAX}, not {}", self.nodes));
        }
        if self.faults.is_empty() {
            return bad("no fault kind".into());
        }
        if self.nodes == 0 {
            if let Some(kind) = self.faults.iter().find(|k| k.needs_kubernetes()) {
                return bad(format!("the fault {} needs nodes (--nodes)", kind.name()));
            }
        }
        if self.election_timeout_ms < 2 * self.heartbeat_interval_ms {
            return bad(format!(
                "the election timeout ({} ms) must be at least twice the heartbeat interval ({} ms)",
                self.election_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        Ok(())
    }

    /// The command line that replays this run's choices.
    pub fn replay_command(&self) -> String {
        let kinds: Vec<&str> = self.faults.iter().map(|k| k.name()).collect();
        let mut command = format!(
            "capstan chaos --masters {} --nodes {} --duration {}ms --seed {} --faults {} --clients {} --keys {}",
            self.masters,
            self.nodes,
            self.duration_ms,
            self.seed,
            kinds.join(","),
            self.clients,
            self.keys
        );
        if let Some(hold) = self.hold_ms {
            command.push_str(&format!(" --hold {hold}ms"));
        }
        command
    }
}

/// Runs a whole chaos run (see the module doc). `Err` means the harness itself failed
/// (the cluster would not start, a process would not restart); what the cluster did
/// wrong is in the report's checks.
pub async fn run(config: RunConfig) -> Result<RunReport> {
    config.validate()?;
    let started = Instant::now();
    let mut cluster_config = ClusterConfig::new(config.masters, config.binary.clone());
    cluster_config.election_timeout_ms = config.election_timeout_ms;
    cluster_config.heartbeat_interval_ms = config.heartbeat_interval_ms;
    // Link proxies in front of the peer ports, when a network fault may be drawn.
    let network_faults = config.masters > 1 && config.faults.iter().any(|k| k.family() == FaultFamily::Network);
    cluster_config.network_faults = network_faults;
    cluster_config.network_seed = config.seed;
    if config.nodes > 0 {
        cluster_config.kubernetes = Some(KubernetesConfig::new(config.nodes));
    }
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(cluster_config))
        .await
        .map_err(|e| ChaosError::Task(e.to_string()))??;
    cluster.leader(config.recover_deadline_ms).await?;
    let endpoints = cluster.endpoints();
    // With nodes: the API, the nodes Ready, and a Service that answers, before the clock.
    let kube = if config.nodes > 0 {
        let api = KubeApi::new(cluster.api_urls(), KUBE_TIMEOUT_MS)?;
        wait_nodes_ready(&api, config.nodes, config.recover_deadline_ms).await?;
        let target = setup_service(&api, &ServiceConfig::new(KUBE_NAMESPACE)).await?;
        Some((api, target))
    } else {
        None
    };
    let origin = Instant::now();
    if config.progress {
        eprintln!(
            "capstan chaos: {} masters up in {:.1} s (data and logs in {}); faults for {:.1} s, seed {}",
            config.masters,
            started.elapsed().as_secs_f64(),
            cluster.dir().display(),
            config.duration_ms as f64 / 1000.0,
            config.seed
        );
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let register_stop = stop_rx.clone();
    let workload_config = WorkloadConfig {
        clients: config.clients,
        ops_per_client: crate::workload::OPS_PER_CLIENT_MAX,
        keys: config.keys,
        key_prefix: KEY_PREFIX.into(),
        seed: config.seed,
        op_timeout_ms: config.op_timeout_ms,
        connect: Connect::OneEndpointEach,
        stop: Some(register_stop),
        origin: Some(origin),
        key_rotate_ms: config.key_rotate_ms,
        ..WorkloadConfig::default()
    };
    let workload = tokio::spawn(run_register_workload(endpoints.clone(), workload_config));
    // Watchers on every member, and multi-key transactions for them to watch.
    let (writer_control, writer_signal) = RunControl::new();
    let (watch_control, watch_signal) = RunControl::new();
    let watch_config = WatchConfig {
        prefix: WATCH_PREFIX.into(),
        seed: config.seed,
        ..WatchConfig::default()
    };
    let watchers = tokio::spawn(run_watchers(endpoints.clone(), watch_config, watch_signal));
    let writer_config = TxnWriterConfig {
        prefix: WATCH_PREFIX.into(),
        seed: config.seed,
        op_timeout_ms: config.op_timeout_ms,
        ..TxnWriterConfig::default()
    };
    let writer = tokio::spawn(run_txn_writer(endpoints.clone(), writer_config, writer_signal));
    // Deployments scaled and rolled, and a client of the Service, with nodes.
    let kube_tasks = kube.as_ref().map(|(api, target)| {
        let mut workload_config = KubeWorkloadConfig::new(origin);
        workload_config.namespace = KUBE_NAMESPACE.into();
        workload_config.seed = config.seed;
        workload_config.node_roots = cluster.node_roots();
        let workload = tokio::spawn({
            let (api, stop) = (api.clone(), stop_rx.clone());
            async move { run_kube_workload(&api, workload_config, stop).await }
        });
        let client = tokio::spawn({
            let (target, stop) = (target.clone(), stop_rx.clone());
            async move { run_service_client(&target, ServiceClientConfig::default(), origin, stop).await }
        });
        (workload, client)
    });

    let nemesis_config = NemesisConfig {
        kinds: config.faults.clone(),
        seed: config.seed,
        duration_ms: config.duration_ms,
        hold_ms: config.hold_ms.unwrap_or(2 * config.election_timeout_ms),
        quiet_ms: config.quiet_ms,
        recover_deadline_ms: config.recover_deadline_ms,
        progress: config.progress,
    };
    let runtime = tokio::runtime::Handle::current();
    let mut cluster = cluster;
    let nemesis_api = kube.as_ref().map(|(api, _)| api.clone());
    let (cluster, faults) = tokio::task::spawn_blocking(move || {
        let faults = run_nemesis(&mut cluster, &nemesis_config, origin, &runtime, nemesis_api.as_ref());
        (cluster, faults)
    })
    .await
    .map_err(|e| ChaosError::Task(e.to_string()))?;
    let _ = stop_tx.send(true);
    writer_control.stop();
    let kube_histories = match kube_tasks {
        Some((workload, client)) => Some((
            workload.await.map_err(|e| ChaosError::Task(e.to_string()))?,
            client.await.map_err(|e| ChaosError::Task(e.to_string()))?,
        )),
        None => None,
    };
    let history = workload.await.map_err(|e| ChaosError::Task(e.to_string()))?;
    let txns = writer.await.map_err(|e| ChaosError::Task(e.to_string()))?;
    // The watchers catch up to a marker written after everything else.
    let end_revision = match marker(&endpoints, config.op_timeout_ms).await {
        Ok(revision) => revision,
        Err(e) => {
            watch_control.stop();
            return Err(e);
        }
    };
    watch_control.drain(end_revision, DRAIN_DEADLINE_MS);
    let watched = watchers.await.map_err(|e| ChaosError::Task(e.to_string()))?;
    let (mut faults, history, txns, watched) = match (faults, history, txns, watched) {
        (Ok(faults), Ok(history), Ok(txns), Ok(watched)) => (faults, history, txns, watched),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
            if config.progress {
                eprintln!("capstan chaos: the run failed: {e}\n{}", cluster.log_tails(20));
            }
            return Err(e);
        }
    };
    let end_ms = origin.elapsed().as_millis() as u64;

    let mut checks = Vec::new();
    // Recovery: every fault healed and the cluster healthy again in time.
    let unrecovered: Vec<String> = faults
        .iter()
        .filter(|f| f.error.is_some() || f.recovered_ms.is_none())
        .map(|f| f.describe())
        .collect();
    checks.push(Check {
        name: "recovery".into(),
        verdict: if unrecovered.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: if unrecovered.is_empty() {
            format!(
                "the cluster was healthy (all members up, one leader) within {} ms of each of {} heals",
                config.recover_deadline_ms,
                faults.len()
            )
        } else {
            format!("faults the cluster did not recover from:\n{}", unrecovered.join("\n"))
        },
    });

    // The final reads, then linearizability over the whole history.
    let mut history = history;
    match final_reads(&endpoints, &history, origin, config.op_timeout_ms).await {
        Ok(reads) => history.operations.extend(reads),
        Err(e) => checks.push(Check {
            name: "final reads".into(),
            verdict: Verdict::Fail,
            detail: format!("reading the keys after the run failed: {e}"),
        }),
    }
    let limits = config.limits.clone();
    let to_check = history.clone();
    let checked_at = Instant::now();
    let result = tokio::task::spawn_blocking(move || check(&to_check, &limits))
        .await
        .map_err(|e| ChaosError::Task(e.to_string()))??;
    let checked_ms = checked_at.elapsed().as_millis();
    let keys = history
        .operations
        .iter()
        .map(|o| o.key.as_slice())
        .collect::<std::collections::HashSet<_>>()
        .len();
    checks.push(match result {
        CheckResult::Linearizable => Check {
            name: "linearizability".into(),
            verdict: Verdict::Pass,
            detail: format!(
                "{} operations on {keys} keys, final reads included, are linearizable (checked in {checked_ms} ms)",
                history.operations.len()
            ),
        },
        CheckResult::NotLinearizable { key, explanation } => Check {
            name: "linearizability".into(),
            verdict: Verdict::Fail,
            detail: format!(
                "key {} has no linearization:\n{explanation}",
                crate::linearizability::show_bytes(&key)
            ),
        },
        unknown => Check {
            name: "linearizability".into(),
            verdict: Verdict::Unknown,
            detail: match unknown {
                CheckResult::Unknown { key, reason } => format!(
                    "the search gave up on key {}: {reason}",
                    crate::linearizability::show_bytes(&key)
                ),
                other => format!("{other:?}"),
            },
        },
    });

    // Nothing acknowledged lost: every acknowledged register write and transaction is
    // in the final log, at its revision.
    let register_writes: Vec<TxnRecord> = history
        .operations
        .iter()
        .enumerate()
        .filter_map(|(n, op)| {
            let value = match (&op.op, &op.outcome) {
                (Op::Put { value }, Outcome::Ok(Output::Put)) => value,
                (Op::Cas { new, .. }, Outcome::Ok(Output::Cas(true))) => new,
                _ => return None,
            };
            Some(TxnRecord {
                n,
                endpoint: String::new(),
                revision: op.revision?,
                writes: vec![Write {
                    key: op.key.clone(),
                    value: value.clone(),
                    kind: EventKind::Put,
                }],
                call_ns: op.call_ns,
                return_ns: op.return_ns,
            })
        })
        .collect();
    // Each prefix's final log, read once: the register writes are looked for in the
    // first; the transactions and the watchers' streams are checked against the second.
    let register_log = read_event_log(
        &endpoints[0],
        KEY_PREFIX,
        1,
        end_revision,
        EVENTS_MAX,
        DRAIN_DEADLINE_MS,
    )
    .await;
    let watch_log = read_event_log(
        &endpoints[0],
        WATCH_PREFIX,
        1,
        end_revision,
        EVENTS_MAX,
        DRAIN_DEADLINE_MS,
    )
    .await;
    checks.push(acknowledged_check(
        "acknowledged writes",
        KEY_PREFIX,
        &register_log,
        &register_writes,
    ));
    checks.push(acknowledged_check(
        "acknowledged transactions",
        WATCH_PREFIX,
        &watch_log,
        &txns.acknowledged,
    ));
    // The watch guarantees, against the transactions' final log.
    checks.push(match &watch_log {
        Ok(log) => {
            let verdict = check_watches(log, &watched.watchers);
            let events: usize = watched.watchers.iter().map(|w| w.events.len()).sum();
            let disconnects: usize = watched.watchers.iter().map(|w| w.disconnects()).sum();
            Check {
                name: "watches".into(),
                verdict: if verdict.ok() { Verdict::Pass } else { Verdict::Fail },
                detail: if verdict.ok() {
                    format!(
                        "{} watchers (one per member) received {events} events over {disconnects} disconnects: \
                             ordered, unique, complete, atomic per revision, resumed where they left off, \
                             equal to the final log ({} events, {} transactions acknowledged, {} in doubt)",
                        watched.watchers.len(),
                        log.len(),
                        txns.acknowledged.len(),
                        txns.unknown.len()
                    )
                } else {
                    verdict.to_string()
                },
            }
        }
        Err(e) => Check {
            name: "watches".into(),
            verdict: Verdict::Unknown,
            detail: format!("the final log could not be read: {e}"),
        },
    });

    // The Kubernetes workload: converged, nothing lost, duplicated or bound twice.
    let mut service_summary = None;
    if let (Some((api, target)), Some((workload, service))) = (&kube, kube_histories) {
        let verdict = match workload {
            Ok(workload) => {
                let verdict = check_kube(
                    api,
                    &workload,
                    &[target.fixed()],
                    &KubeCheckConfig::new(cluster.node_roots()),
                )
                .await;
                Check {
                    name: "kubernetes".into(),
                    verdict: if verdict.ok { Verdict::Pass } else { Verdict::Fail },
                    detail: verdict.to_string().trim_end().to_string(),
                }
            }
            Err(e) => Check {
                name: "kubernetes".into(),
                verdict: Verdict::Fail,
                detail: format!("the Kubernetes workload failed: {e}"),
            },
        };
        checks.push(verdict);
        match service {
            Ok(service) => service_summary = Some(service.summary()),
            Err(e) => checks.push(Check {
                name: "service".into(),
                verdict: Verdict::Fail,
                detail: format!("the Service client failed: {e}"),
            }),
        }
    }

    fill_first_writes(&mut faults, &history);
    let report = RunReport {
        seed: config.seed,
        masters: config.masters,
        duration_ms: config.duration_ms,
        elapsed_ms: started.elapsed().as_millis() as u64,
        fault_kinds: config.faults.clone(),
        network_faults: if network_faults {
            "TCP link proxies of the harness in front of every member's peer port".into()
        } else {
            "none (no network fault in the schedule)".into()
        },
        replay: config.replay_command(),
        operations: OpStats::of(&history),
        recovery: Recovery {
            service: service_summary,
            ..Recovery::of(&faults, &history)
        },
        checks,
        timeline: timeline(&history, end_ms),
        faults,
    };
    if let Some(dir) = &config.out_dir {
        write_report(dir, &report, &cluster)?;
    }
    Ok(report)
}

/// Whether every acknowledged write in `acknowledged` is in `log`, the final log of
/// `prefix`, at its revision.
fn acknowledged_check(name: &str, prefix: &str, log: &Result<Vec<Event>>, acknowledged: &[TxnRecord]) -> Check {
    let log = match log {
        Ok(log) => log,
        Err(e) => {
            return Check {
                name: name.into(),
                verdict: Verdict::Unknown,
                detail: format!("the final log of {prefix} could not be read: {e}"),
            }
        }
    };
    let verdict = check_acknowledged(log, acknowledged);
    Check {
        name: name.into(),
        verdict: if verdict.ok() { Verdict::Pass } else { Verdict::Fail },
        detail: if verdict.ok() {
            format!(
                "{} acknowledged ({} writes) all in the final log of {} events, each at its revision",
                verdict.txns_checked,
                verdict.writes_checked,
                log.len()
            )
        } else {
            format!(
                "{} problems among {} acknowledged; the first:\n{}",
                verdict.problem_count,
                verdict.txns_checked,
                verdict.problems.join("\n")
            )
        },
    }
}

/// Writes a marker under the watch prefix; returns its revision, the last of the run.
async fn marker(endpoints: &[String], timeout_ms: u64) -> Result<i64> {
    let timeout = Duration::from_millis(timeout_ms);
    let options = ConnectOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(timeout);
    let mut client = Client::connect(endpoints, Some(options)).await?;
    let put = client.put(format!("{WATCH_PREFIX}end"), "end", None);
    let response = tokio::time::timeout(timeout, put)
        .await
        .map_err(|_| ChaosError::Timeout("the end marker's put".into()))??;
    response
        .header()
        .map(|h| h.revision())
        .ok_or_else(|| ChaosError::Timeout("the end marker's put came back without a header".into()))
}

/// A linearizable read of every key in `history`, through the first member that
/// answers, recorded as operations of a client of its own.
async fn final_reads(
    endpoints: &[String],
    history: &History,
    origin: Instant,
    timeout_ms: u64,
) -> Result<Vec<Operation>> {
    let mut keys: Vec<Vec<u8>> = history.operations.iter().map(|o| o.key.clone()).collect();
    keys.sort_unstable();
    keys.dedup();
    let client_id = history.operations.iter().map(|o| o.client_id).max().unwrap_or(0) + 1;
    let timeout = Duration::from_millis(timeout_ms);
    let options = ConnectOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(timeout);
    let mut client = Client::connect(endpoints, Some(options)).await?;
    let now_ns = || origin.elapsed().as_nanos() as u64;
    let mut reads = Vec::with_capacity(keys.len());
    for key in keys {
        let call_ns = now_ns();
        let response = tokio::time::timeout(timeout, client.get(key.clone(), None))
            .await
            .map_err(|_| {
                ChaosError::Timeout(format!("final read of {}", crate::linearizability::show_bytes(&key)))
            })??;
        reads.push(Operation {
            client_id,
            key,
            op: Op::Get,
            call_ns,
            return_ns: now_ns(),
            outcome: Outcome::Ok(Output::Get(response.kvs().first().map(|kv| kv.value().to_vec()))),
            revision: None,
        });
    }
    Ok(reads)
}

fn write_report(dir: &std::path::Path, report: &RunReport, cluster: &Cluster) -> Result<()> {
    let io = |context: String| move |source| ChaosError::Io { context, source };
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let json = serde_json::to_string_pretty(report).expect("a report serializes: plain data");
    let files = [
        ("report.json", json),
        ("report.txt", report.text()),
        ("timeline.svg", report.svg()),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))?;
    }
    // The members' logs: what each said, for a failure's post-mortem.
    for i in 0..cluster.len() {
        let name = format!("{}.log", cluster.name(i));
        let from = cluster.dir().join(&name);
        let to = dir.join(&name);
        if from.is_file() {
            std::fs::copy(&from, &to).map_err(io(format!("copying {}", from.display())))?;
        }
    }
    Ok(())
}
