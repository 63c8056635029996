//! The nemesis: a fault schedule, drawn from a seed, applied to a running [`Cluster`]
//! while workloads run, and a record of what each fault did to the cluster.
//!
//! # The schedule
//!
//! One fault at a time, in rounds. A round:
//!
//! 1. leaves the cluster alone for `quiet_ms` (a baseline for the workloads), then
//!    waits until it is healthy: every member running and answering, all agreeing on
//!    one leader;
//! 2. draws a fault kind from the enabled ones and its targets (the leader, a random
//!    member, a random minority) from the seeded generator, and applies it;
//! 3. while the fault holds (`hold_ms`), polls the members it left reachable for a new
//!    leader when the fault took the old one away, and records the election time: from
//!    the fault (the instant it was wholly in effect: every target killed and reaped,
//!    stopped, or cut off) to a leader agreed by a quorum of members;
//! 4. heals it (restarts killed members on their data, resumes paused ones) and waits
//!    until the cluster is healthy again: the recovery time.
//!
//! Rounds go on until `duration_ms` has passed since the nemesis started; the fault in
//! progress then is healed normally, so a run always ends with every member running.
//!
//! The seed fixes the sequence of kinds and targets given the same leaders; which member
//! leads after an election, and so the targets of leader faults, depends on timing. The
//! record names the members each fault hit, which is what a replay needs to compare.
//!
//! # Time
//!
//! Fault times are milliseconds from the run's origin, the instant the workloads' times
//! count from, so a fault can be laid over the operations it disturbed ("first write
//! after a fault" is computed from the history afterwards, not here).
//!
//! # Threads
//!
//! [`Cluster`]'s process control is synchronous and may block for a deadline, so the
//! nemesis runs on a thread of its own (tokio's blocking pool) and polls the members
//! over gRPC through the runtime's handle.
//!
//! # Network faults
//!
//! Partitions, isolation and lossy or slow links act on the link proxies in front of
//! every member's peer port ([`crate::netproxy`]; the cluster must be started with
//! `network_faults`). Only peer traffic is affected: clients still reach a cut-off
//! member, which is the interesting case (it must not answer linearizable reads or
//! acknowledge writes it cannot commit).
//!
//! Left out: clock skew, membership changes, disk faults at runtime (the slow-fsync
//! failpoint is set per process at start).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::{Cluster, MemberState, NodeProcess};
use crate::kube::{
    lease_holders, wait_lease_takeover, KubeApi, LeaseHolders, CONTROLLER_MANAGER_LEASE, SCHEDULER_LEASE,
};
use crate::netproxy::LinkFault;
use crate::{ChaosError, Result, SplitMix64};

/// Interval between two polls of the members' status.
const POLL_INTERVAL_MS: u64 = 20;
/// Fault rounds in one run, at most (bounds the record).
pub const ROUNDS_MAX: usize = 100_000;

/// A kind of fault the nemesis can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL the leader; restart it after the hold.
    KillLeader,
    /// SIGKILL a random member (which may be the leader).
    KillMember,
    /// SIGKILL a random minority, (n-1)/2 members, at once.
    KillMinority,
    /// SIGSTOP the leader for the hold (longer than an election timeout), then SIGCONT.
    PauseLeader,
    /// SIGSTOP a random member for the hold.
    PauseMember,
    /// Cut a random minority off from the majority (both directions) for the hold.
    Partition,
    /// Cut the leader off from every other member for the hold.
    IsolateLeader,
    /// Every peer link resets its connection on [`LOSSY_PERCENT`]% of the chunks it
    /// carries, for the hold.
    LossyLinks,
    /// Every peer link delays what it carries by [`SLOW_LINK_DELAY_MS`], for the hold.
    SlowLinks,
    /// SIGKILL the master whose scheduler replica holds the scheduler's Lease, wait
    /// until another replica takes the Lease over (and the controller-manager's, if the
    /// same master held it), then restart it. Needs nodes (the Kubernetes mode).
    KillLeaseHolder,
    /// SIGKILL a random node's agent; restart it after the hold (it adopts the
    /// containers it left running). Needs nodes.
    KillAgent,
    /// SIGKILL a random node's proxy; restart it after the hold. Needs nodes.
    KillProxy,
}

/// How long a Lease takeover may take before the fault is recorded as failed: the
/// Lease's 15 s duration plus retries, with room.
const LEASE_TAKEOVER_DEADLINE_MS: u64 = 60_000;

/// Share of chunks a lossy link loses (with the connection they were on).
pub const LOSSY_PERCENT: u64 = 10;
/// Delay of a slow link, each way.
pub const SLOW_LINK_DELAY_MS: u64 = 100;

/// What a fault does to its targets: the three families the report tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultFamily {
    Kill,
    Pause,
    Network,
    /// A node's process: the data plane's side.
    Node,
}

impl FaultKind {
    pub const ALL: [FaultKind; 12] = [
        FaultKind::KillLeader,
        FaultKind::KillMember,
        FaultKind::KillMinority,
        FaultKind::PauseLeader,
        FaultKind::PauseMember,
        FaultKind::Partition,
        FaultKind::IsolateLeader,
        FaultKind::LossyLinks,
        FaultKind::SlowLinks,
        FaultKind::KillLeaseHolder,
        FaultKind::KillAgent,
        FaultKind::KillProxy,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillMember => "kill-member",
            FaultKind::KillMinority => "kill-minority",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::PauseMember => "pause-member",
            FaultKind::Partition => "partition",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::LossyLinks => "lossy-links",
            FaultKind::SlowLinks => "slow-links",
            FaultKind::KillLeaseHolder => "kill-lease-holder",
            FaultKind::KillAgent => "kill-agent",
            FaultKind::KillProxy => "kill-proxy",
        }
    }

    pub fn family(self) -> FaultFamily {
        match self {
            FaultKind::KillLeader | FaultKind::KillMember | FaultKind::KillMinority | FaultKind::KillLeaseHolder => {
                FaultFamily::Kill
            }
            FaultKind::KillAgent | FaultKind::KillProxy => FaultFamily::Node,
            FaultKind::PauseLeader | FaultKind::PauseMember => FaultFamily::Pause,
            FaultKind::Partition | FaultKind::IsolateLeader | FaultKind::LossyLinks | FaultKind::SlowLinks => {
                FaultFamily::Network
            }
        }
    }

    /// Parses a comma-separated list of names; `all` is every kind, `kills`, `pauses`,
    /// `network` and `nodes` the kinds of one family.
    pub fn parse_list(list: &str) -> Result<Vec<FaultKind>> {
        let mut kinds = Vec::new();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let add: Vec<FaultKind> = match word {
                "all" => FaultKind::ALL.to_vec(),
                "kills" => FaultKind::of_family(FaultFamily::Kill),
                "pauses" => FaultKind::of_family(FaultFamily::Pause),
                "network" => FaultKind::of_family(FaultFamily::Network),
                "nodes" => FaultKind::of_family(FaultFamily::Node),
                name => match FaultKind::ALL.iter().find(|k| k.name() == name) {
                    Some(kind) => vec![*kind],
                    None => {
                        let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                        return Err(ChaosError::InvalidConfig(format!(
                            "unknown fault {name:?}; the faults are all, kills, pauses, network, nodes, {}",
                            names.join(", ")
                        )));
                    }
                },
            };
            for kind in add {
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
        }
        if kinds.is_empty() {
            return Err(ChaosError::InvalidConfig("no fault kind given".into()));
        }
        Ok(kinds)
    }

    /// Whether this fault needs the Kubernetes mode (masters with the API, and nodes).
    pub fn needs_kubernetes(self) -> bool {
        matches!(
            self,
            FaultKind::KillLeaseHolder | FaultKind::KillAgent | FaultKind::KillProxy
        )
    }

    fn of_family(family: FaultFamily) -> Vec<FaultKind> {
        FaultKind::ALL.into_iter().filter(|k| k.family() == family).collect()
    }

    /// Whether this fault takes the current leader away (so an election is expected).
    fn targets_leader(self) -> bool {
        matches!(
            self,
            FaultKind::KillLeader | FaultKind::PauseLeader | FaultKind::IsolateLeader
        )
    }
}

#[derive(Clone, Debug)]
pub struct NemesisConfig {
    /// The kinds drawn from, uniformly.
    pub kinds: Vec<FaultKind>,
    pub seed: u64,
    /// No new fault starts after this many milliseconds from the nemesis's start.
    pub duration_ms: u64,
    /// How long a fault holds before it is healed. Pauses must outlast an election
    /// timeout to be faults at all; the run's default is twice the election timeout.
    pub hold_ms: u64,
    /// Quiet time between a recovery and the next fault.
    pub quiet_ms: u64,
    /// How long the cluster may take to be healthy again after a heal before the run is
    /// declared failed (the cluster did not recover: an availability failure).
    pub recover_deadline_ms: u64,
    /// Print each fault as it happens on stderr.
    pub progress: bool,
}

/// What one fault did, as measured by the nemesis. Times are milliseconds from the run's
/// origin; durations are milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub round: usize,
    pub kind: FaultKind,
    /// Names of the members hit.
    pub targets: Vec<String>,
    pub leader_before: Option<String>,
    pub start_ms: f64,
    /// When the fault was healed (members restarted or resumed).
    pub heal_ms: Option<f64>,
    /// When the cluster was healthy again after the heal.
    pub recovered_ms: Option<f64>,
    /// For faults that took the leader away: from the fault to a new leader agreed by a
    /// quorum, if one was elected while the fault held.
    pub election_ms: Option<f64>,
    pub leader_after: Option<String>,
    /// From the fault to the first acknowledged write the workload called after it
    /// (filled in from the history after the run).
    pub first_write_ms: Option<f64>,
    /// For a kill of a Lease holder: from the fault until another replica held the
    /// scheduler's Lease, and the controller-manager's (when the same master held it).
    pub scheduler_takeover_ms: Option<f64>,
    pub controller_manager_takeover_ms: Option<f64>,
    /// What went wrong applying or healing the fault, if anything.
    pub error: Option<String>,
}

impl FaultRecord {
    /// A fault of round `round` before anything about it is known.
    pub fn new(round: usize, kind: FaultKind, targets: Vec<String>, leader_before: Option<String>) -> FaultRecord {
        FaultRecord {
            round,
            kind,
            targets,
            leader_before,
            start_ms: 0.0,
            heal_ms: None,
            recovered_ms: None,
            election_ms: None,
            leader_after: None,
            first_write_ms: None,
            scheduler_takeover_ms: None,
            controller_manager_takeover_ms: None,
            error: None,
        }
    }

    /// Whether this fault took the leader away: a leader kill, or a member kill or
    /// pause that happened to hit the leader, or a minority that included it.
    pub fn hit_leader(&self) -> bool {
        self.leader_before
            .as_ref()
            .is_some_and(|leader| self.targets.contains(leader))
    }

    /// The fault as one line of progress.
    pub fn describe(&self) -> String {
        let targets = if self.targets.is_empty() {
            "all links".to_string()
        } else {
            self.targets.join(",")
        };
        let mut line = format!(
            "[{:>8.1}s] #{:<4} {:<14} {targets}",
            self.start_ms / 1000.0,
            self.round,
            self.kind.name(),
        );
        if let Some(leader) = &self.leader_before {
            line.push_str(&format!(" (leader {leader})"));
        }
        if let Some(ms) = self.scheduler_takeover_ms {
            line.push_str(&format!("; scheduler Lease taken over after {ms:.0} ms"));
        }
        if let Some(ms) = self.controller_manager_takeover_ms {
            line.push_str(&format!("; controller-manager Lease after {ms:.0} ms"));
        }
        if let Some(ms) = self.election_ms {
            line.push_str(&format!(
                "; new leader {} after {ms:.0} ms",
                self.leader_after.as_deref().unwrap_or("?")
            ));
        }
        if let (Some(heal), Some(recovered)) = (self.heal_ms, self.recovered_ms) {
            line.push_str(&format!(
                "; healed at {:.1}s, healthy {:.0} ms later",
                heal / 1000.0,
                recovered - heal
            ));
        }
        if let Some(error) = &self.error {
            line.push_str(&format!("; ERROR: {error}"));
        }
        line
    }
}

/// One member's answer to a Status request.
#[derive(Clone, Copy, Debug)]
struct Status {
    member: usize,
    id: u64,
    leader: u64,
}

/// Runs the schedule on `cluster` until `config.duration_ms` has passed, and returns
/// the cluster (every member running) with the record of every fault. Call from a
/// blocking thread; `runtime` polls the members. An `Err` means the harness could not
/// act (a process would not start); a cluster that did not recover in time ends the
/// schedule with the error in the last record.
pub fn run_nemesis(
    cluster: &mut Cluster,
    config: &NemesisConfig,
    origin: Instant,
    runtime: &tokio::runtime::Handle,
    kube: Option<&KubeApi>,
) -> Result<Vec<FaultRecord>> {
    if config.kinds.is_empty() {
        return Err(ChaosError::InvalidConfig("the nemesis has no fault kind".into()));
    }
    let started = Instant::now();
    let mut rng = SplitMix64::new(config.seed);
    let mut records = Vec::new();
    let ms = |at: Instant| at.saturating_duration_since(origin).as_secs_f64() * 1000.0;
    let endpoints = cluster.endpoints();
    loop {
        // Quiet first: the workloads get a baseline before the first fault.
        std::thread::sleep(Duration::from_millis(config.quiet_ms));
        if started.elapsed() >= Duration::from_millis(config.duration_ms) || records.len() >= ROUNDS_MAX {
            break;
        }
        let round = records.len() + 1;
        let statuses = match runtime.block_on(wait_healthy(cluster, &endpoints, config.recover_deadline_ms)) {
            Ok(statuses) => statuses,
            Err(e) => {
                let now = ms(Instant::now());
                let record = FaultRecord {
                    start_ms: now,
                    error: Some(format!("the cluster was not healthy before the fault: {e}")),
                    ..FaultRecord::new(round, config.kinds[0], Vec::new(), None)
                };
                if config.progress {
                    eprintln!("{}", record.describe());
                }
                records.push(record);
                break;
            }
        };
        let leader_id = statuses[0].leader;
        let leader = statuses
            .iter()
            .find(|s| s.id == leader_id)
            .map(|s| s.member)
            .expect("wait_healthy returns only when the leader answered");
        let kind = config.kinds[rng.below(config.kinds.len() as u64) as usize];
        let n = cluster.len();
        // The Lease holders before a Lease holder's kill, and the node process hit.
        let mut holders: Option<LeaseHolders> = None;
        let mut node_target: Option<(usize, NodeProcess)> = None;
        let targets: Vec<usize> = match kind {
            FaultKind::KillLeader | FaultKind::PauseLeader | FaultKind::IsolateLeader => vec![leader],
            FaultKind::KillLeaseHolder => {
                let found = kube.and_then(|api| runtime.block_on(lease_holders(api)).ok());
                let holder = found
                    .as_ref()
                    .and_then(|h| h.scheduler.as_deref())
                    .and_then(|id| cluster.member_of_identity(id));
                holders = found;
                // No holder known (no Lease yet): the leader, so that the round is not lost.
                vec![holder.unwrap_or(leader)]
            }
            FaultKind::KillAgent | FaultKind::KillProxy => {
                if cluster.nodes() > 0 {
                    let process = if kind == FaultKind::KillAgent {
                        NodeProcess::Agent
                    } else {
                        NodeProcess::Proxy
                    };
                    node_target = Some((rng.below(cluster.nodes() as u64) as usize, process));
                }
                Vec::new()
            }
            FaultKind::KillMember | FaultKind::PauseMember => vec![rng.below(n as u64) as usize],
            // Every link: no member is the target.
            FaultKind::LossyLinks | FaultKind::SlowLinks => Vec::new(),
            FaultKind::KillMinority | FaultKind::Partition => {
                let mut members: Vec<usize> = (0..n).collect();
                // A seeded partial Fisher-Yates shuffle: the first (n-1)/2 are the minority.
                let minority = (n - 1) / 2;
                for i in 0..minority {
                    let j = i + rng.below((n - i) as u64) as usize;
                    members.swap(i, j);
                }
                members.truncate(minority.max(1));
                members.sort_unstable();
                members
            }
        };
        let targets_named = targets
            .iter()
            .map(|&i| cluster.name(i).to_string())
            .chain(node_target.map(|(j, p)| format!("{}-{}", cluster.node_name(j), p.name())))
            .collect();
        let mut record = FaultRecord::new(round, kind, targets_named, Some(cluster.name(leader).to_string()));
        let applied: Result<()> = match kind {
            FaultKind::KillLeader | FaultKind::KillMember | FaultKind::KillMinority | FaultKind::KillLeaseHolder => {
                targets.iter().try_for_each(|&i| cluster.kill(i))
            }
            FaultKind::KillAgent | FaultKind::KillProxy => match node_target {
                Some((j, process)) => cluster.kill_node_process(j, process),
                None => Err(ChaosError::InvalidConfig(format!("{} needs nodes", kind.name()))),
            },
            FaultKind::PauseLeader | FaultKind::PauseMember => targets.iter().try_for_each(|&i| cluster.pause(i)),
            FaultKind::Partition => cluster.partition(&[&targets]),
            FaultKind::IsolateLeader => cluster.isolate(leader),
            FaultKind::LossyLinks => cluster.set_all_links(LinkFault::Lossy { percent: LOSSY_PERCENT }),
            FaultKind::SlowLinks => cluster.set_all_links(LinkFault::Delay {
                delay_ms: SLOW_LINK_DELAY_MS,
            }),
        };
        // The fault counts from when it is wholly in effect: a minority is killed one
        // member after another (each waited for), and until the last is gone the
        // others may still serve.
        let fault_at = Instant::now();
        record.start_ms = ms(fault_at);
        if let Err(e) = applied {
            record.error = Some(format!("applying the fault: {e}"));
        }
        let hold_until = fault_at + Duration::from_millis(config.hold_ms);
        if kind.targets_leader() || targets.contains(&leader) {
            // Members cut off by the network still answer Status (an isolated leader
            // even goes on naming itself until check-quorum deposes it): they are
            // polled too, and the quorum rule ignores their dissent.
            let reachable: Vec<usize> = (0..n).filter(|i| cluster.state(*i) == MemberState::Running).collect();
            if let Some((new_leader, at)) =
                runtime.block_on(wait_new_leader(&endpoints, &reachable, leader_id, n, hold_until))
            {
                record.election_ms = Some(at.duration_since(fault_at).as_secs_f64() * 1000.0);
                record.leader_after = Some(cluster.name(new_leader).to_string());
            }
        }
        if let (FaultKind::KillLeaseHolder, Some(api), Some(holders)) = (kind, kube, &holders) {
            // The fault holds until the Leases moved (or their deadline passed).
            let victim = targets.first().copied();
            let takeover = |lease: &str, from: &str| {
                runtime
                    .block_on(wait_lease_takeover(api, lease, from, LEASE_TAKEOVER_DEADLINE_MS))
                    .map(|_| fault_at.elapsed().as_secs_f64() * 1000.0)
            };
            if let Some(from) = holders.scheduler.as_deref() {
                match takeover(SCHEDULER_LEASE, from) {
                    Ok(ms) => record.scheduler_takeover_ms = Some(ms),
                    Err(e) => record.error = Some(format!("the scheduler's Lease: {e}")),
                }
            }
            if let Some(from) = holders
                .controller_manager
                .as_deref()
                .filter(|id| cluster.member_of_identity(id) == victim)
            {
                match takeover(CONTROLLER_MANAGER_LEASE, from) {
                    Ok(ms) => record.controller_manager_takeover_ms = Some(ms),
                    Err(e) => record.error = Some(format!("the controller-manager's Lease: {e}")),
                }
            }
        }
        // The rest of the hold: the fault's length is part of the schedule.
        std::thread::sleep(hold_until.saturating_duration_since(Instant::now()));
        let healed: Result<()> = if kind.family() == FaultFamily::Network {
            cluster.heal()
        } else if let Some((j, process)) = node_target {
            cluster.restart_node_process(j, process)
        } else {
            targets.iter().try_for_each(|&i| match cluster.state(i) {
                MemberState::Paused => cluster.resume(i),
                MemberState::Stopped => cluster.restart(i),
                MemberState::Running => Ok(()),
            })
        };
        record.heal_ms = Some(ms(Instant::now()));
        if let Err(e) = healed {
            record.error = Some(format!("healing the fault: {e}"));
            if config.progress {
                eprintln!("{}", record.describe());
            }
            records.push(record);
            return Err(e);
        }
        match runtime.block_on(wait_healthy(cluster, &endpoints, config.recover_deadline_ms)) {
            Ok(_) => record.recovered_ms = Some(ms(Instant::now())),
            Err(e) => record.error = Some(format!("not healthy after the heal: {e}")),
        }
        let failed = record.error.is_some();
        if config.progress {
            eprintln!("{}", record.describe());
        }
        records.push(record);
        if failed {
            break;
        }
    }
    Ok(records)
}

/// Polls until every member is running, answers Status, and all name the same leader
/// among them; returns the answers (leader's first is not guaranteed, each carries the
/// agreed leader ID).
async fn wait_healthy(cluster: &Cluster, endpoints: &[String], deadline_ms: u64) -> Result<Vec<Status>> {
    let deadline = Instant::now() + Duration::from_millis(deadline_ms);
    let all: Vec<usize> = (0..cluster.len()).collect();
    let mut last: String;
    loop {
        let not_running: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| cluster.state(i) != MemberState::Running)
            .collect();
        if not_running.is_empty() {
            let (answers, errors) = poll_status(endpoints, &all).await;
            let leader = answers.first().map(|s| s.leader).unwrap_or(0);
            let agreed = answers.len() == all.len()
                && leader != 0
                && answers.iter().all(|s| s.leader == leader)
                && answers.iter().any(|s| s.id == leader);
            if agreed {
                return Ok(answers);
            }
            last = format!(
                "answers (member, id, leader): {:?}; errors: {errors:?}",
                answers.iter().map(|s| (s.member, s.id, s.leader)).collect::<Vec<_>>()
            );
        } else {
            last = format!("members not running: {not_running:?}");
        }
        if Instant::now() >= deadline {
            return Err(ChaosError::Timeout(format!(
                "cluster not healthy within {deadline_ms} ms; last look: {last}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

/// Polls the `reachable` members until a quorum of the cluster's `members` (counting
/// the leader itself) names one leader other than `old_leader`; returns its index and
/// when that was seen, or `None` if `until` passes first.
async fn wait_new_leader(
    endpoints: &[String],
    reachable: &[usize],
    old_leader: u64,
    members: usize,
    until: Instant,
) -> Option<(usize, Instant)> {
    let quorum = members / 2 + 1;
    while Instant::now() < until {
        let (answers, _) = poll_status(endpoints, reachable).await;
        let seen = Instant::now();
        for candidate in answers.iter().filter(|s| s.leader != 0 && s.leader != old_leader) {
            let votes = answers.iter().filter(|s| s.leader == candidate.leader).count();
            if votes >= quorum {
                if let Some(leader) = answers.iter().find(|s| s.id == candidate.leader) {
                    return Some((leader.member, seen));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
    None
}

/// Asks `members` for their Status concurrently; returns the answers in member order
/// and the errors.
async fn poll_status(endpoints: &[String], members: &[usize]) -> (Vec<Status>, Vec<String>) {
    let mut polls = tokio::task::JoinSet::new();
    for &member in members {
        let endpoint = endpoints[member].clone();
        polls.spawn(async move { (member, crate::cluster::status(endpoint).await) });
    }
    let mut answers = Vec::new();
    let mut errors = Vec::new();
    while let Some(joined) = polls.join_next().await {
        match joined {
            Ok((member, Ok((id, leader)))) => answers.push(Status { member, id, leader }),
            Ok((member, Err(e))) => errors.push(format!("member {member}: {e}")),
            Err(e) => errors.push(format!("status task: {e}")),
        }
    }
    answers.sort_unstable_by_key(|s| s.member);
    (answers, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lists_parse_names_and_groups() {
        assert_eq!(FaultKind::parse_list("all").expect("all"), FaultKind::ALL.to_vec());
        assert_eq!(
            FaultKind::parse_list("kill-leader, pauses,kill-leader").expect("list"),
            vec![FaultKind::KillLeader, FaultKind::PauseLeader, FaultKind::PauseMember]
        );
        let unknown = FaultKind::parse_list("kills,nuke").expect_err("unknown").to_string();
        assert!(unknown.contains("unknown fault \"nuke\""), "{unknown}");
        assert!(FaultKind::parse_list(" , ").is_err());
        for kind in FaultKind::ALL {
            assert_eq!(FaultKind::parse_list(kind.name()).expect("own name"), vec![kind]);
        }
    }

    #[test]
    fn a_fault_hit_the_leader_when_it_was_among_the_targets() {
        let mut record = FaultRecord {
            start_ms: 12_345.0,
            heal_ms: Some(14_345.0),
            recovered_ms: Some(14_845.0),
            election_ms: Some(1_234.0),
            leader_after: Some("n1".into()),
            ..FaultRecord::new(
                3,
                FaultKind::KillMinority,
                vec!["n2".into(), "n4".into()],
                Some("n4".into()),
            )
        };
        assert!(record.hit_leader());
        let line = record.describe();
        assert!(
            line.contains("#3") && line.contains("kill-minority") && line.contains("n2,n4"),
            "{line}"
        );
        assert!(
            line.contains("new leader n1 after 1234 ms") && line.contains("healthy 500 ms later"),
            "{line}"
        );
        record.leader_before = Some("n1".into());
        assert!(!record.hit_leader());
    }
}
