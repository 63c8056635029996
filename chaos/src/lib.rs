//! Capstan's fault injection harness: the pieces a Jepsen-style test is made of.
//!
//! - [`cluster`]: runs N members of the real `capstan store` binary as OS processes on
//!   loopback, and kills, restarts, pauses and resumes them; finds the leader. With
//!   `network_faults`, every peer port sits behind a link proxy ([`netproxy`]) that can
//!   partition, isolate, delay and break links between members.
//! - [`workload`]: concurrent etcd clients doing random puts, linearizable gets and
//!   compare-and-sets on a few keys, recording a [`History`] of what each client asked
//!   for, when, and what it learned.
//! - [`linearizability`]: decides whether such a history could have come from one
//!   register per key that took each operation atomically at some instant between its
//!   call and its return.
//! - [`watch`]: watchers on every member that reconnect and resume through faults, a
//!   multi-key transaction writer, and a checker of etcd's watch guarantees (ordered,
//!   unique, atomic, reliable, resumable, valid) against the final event log, and of
//!   acknowledged writes against it.
//! - [`nemesis`]: a fault schedule drawn from a seed (kills, pauses, partitions, lossy
//!   and slow links), applied one fault at a time, with the election and recovery time
//!   of each.
//! - [`run`]: all of the above as one run (`capstan chaos`), and [`report`]: its
//!   verdicts, recovery figures and timeline as text, JSON and SVG.
//! - [`kube`]: for clusters in the Kubernetes mode (masters and nodes, see [`cluster`]):
//!   a small Kubernetes API client that fails over between the masters, a workload of
//!   Deployments scaled and rolled during faults with a checker of the end state (every
//!   Deployment exactly its replicas Running, no pod bound twice, nothing lost or
//!   duplicated), a Service client sending requests through the node proxies (success
//!   rate, longest gap), and the scheduler's and controller-manager's Lease holders.
//! - [`ports`]: loopback ports picked outside the kernel's ephemeral range and reserved
//!   among pickers, for processes told their port before they start (also used by the
//!   root package's tests).
//!
//! The crate depends on no other Capstan crate: it talks to the store only over the etcd
//! API, the Kubernetes API and the command line, as an operator would, so the same tests
//! can run against etcd itself.
//!
//! Left out, for now: clock skew, membership changes, and disk
//! faults beyond the store's slow-fsync failpoint (`CAPSTAN_FAILPOINT_FSYNC_DELAY_MS`,
//! test builds only), which is set per process at start.

pub mod cluster;
pub mod kube;
pub mod linearizability;
pub mod nemesis;
pub mod netproxy;
pub mod ports;
pub mod report;
pub mod run;
pub mod watch;
pub mod workload;

use std::path::PathBuf;

pub use cluster::{
    live_containers, Cluster, ClusterConfig, KubernetesConfig, MemberState, NodeContainer, NodeProcess, NodeRoot,
};
pub use kube::{
    check_kube, judge_kube, lease_holders, read_snapshot, run_kube_workload, run_service_client, setup_service,
    wait_lease_takeover, wait_nodes_ready, FixedDeployment, KubeApi, KubeCheckConfig, KubeHistory, KubeLive,
    KubeSnapshot, KubeVerdict, KubeViolation, KubeWorkloadConfig, LeaseHolders, ServiceClientConfig, ServiceConfig,
    ServiceHistory, ServiceLive, ServiceSummary, ServiceTarget, ViolationKind,
};
pub use linearizability::{check, CheckResult, History, Limits, Op, Operation, Outcome, Output};
pub use nemesis::{FaultKind, FaultRecord, NemesisConfig};
pub use netproxy::{LinkFault, LinkStats, NetProxy, NetProxyConfig};
pub use report::{RunReport, Verdict};
pub use run::{run, RunConfig};
pub use watch::{
    check_acknowledged, check_watches, read_event_log, run_txn_writer, run_watchers, AckVerdict, Guarantee, RunControl,
    RunSignal, TxnHistory, TxnWriterConfig, WatchConfig, WatchHistory, WatchVerdict,
};
pub use workload::{run_register_workload, Connect, WorkloadConfig};

/// Everything that can go wrong in this crate. A history that is not linearizable is not
/// an error: it is a [`CheckResult`].
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The history given to the checker is malformed (a return before its call, an
    /// output of the wrong kind, too many operations on one key).
    #[error("invalid history: {0}")]
    InvalidHistory(String),
    /// A configuration is out of its documented bounds.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The `capstan` binary is not where it was looked for.
    #[error("the capstan binary is not at {path}: {hint}")]
    BinaryMissing { path: PathBuf, hint: String },
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A cluster member did something other than what was expected of it (exited, did
    /// not become ready in time, was asked to resume while running...).
    #[error("member {member}: {message}")]
    Member { member: usize, message: String },
    /// An etcd request failed.
    #[error("etcd request failed: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A condition did not hold before its deadline.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A network fault was asked of a cluster started without
    /// [`ClusterConfig::network_faults`] (or of one member, which has no peer links).
    #[error("network faults are off for this cluster: {0}")]
    NetworkFaultsOff(String),
    /// A workload task panicked or was cancelled.
    #[error("workload task failed: {0}")]
    Task(String),
    /// A watch ended or was canceled where it had to go on (reading the final log).
    #[error("watch failed: {0}")]
    Watch(String),
    /// A node's process (agent or proxy) did something other than what was expected of
    /// it (exited, did not become ready in time...).
    #[error("node {node} {process}: {message}")]
    Node {
        node: usize,
        process: &'static str,
        message: String,
    },
    /// A Kubernetes API request failed (no master answered, or the answer was an error
    /// where none was expected).
    #[error("Kubernetes API: {0}")]
    Kube(String),
    /// A watch needed a revision that is compacted.
    #[error("revision {revision} is compacted (compact revision {compact_revision})")]
    Compacted { revision: i64, compact_revision: i64 },
}

pub type Result<T> = std::result::Result<T, ChaosError>;

/// The environment variable naming the `capstan` binary the tests run.
pub const CAPSTAN_BIN_ENV: &str = "CAPSTAN_BIN";

/// The `capstan` binary to test: `$CAPSTAN_BIN` if set, otherwise `target/debug/capstan`
/// in this workspace. Fails, saying how to build it, when the file does not exist. The
/// crate deliberately does not build the binary itself: it would be a second cargo
/// invocation inside the test, on the same target directory.
pub fn capstan_binary() -> Result<PathBuf> {
    let (path, hint) = match std::env::var_os(CAPSTAN_BIN_ENV) {
        Some(path) => (
            PathBuf::from(path),
            format!("${CAPSTAN_BIN_ENV} names a file that does not exist"),
        ),
        None => (
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/capstan"),
            format!("build it with `cargo build --bin capstan`, or set ${CAPSTAN_BIN_ENV} to a capstan binary"),
        ),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(ChaosError::BinaryMissing { path, hint })
    }
}

/// SplitMix64 (Steele, Lea and Flood 2014): a tiny, fast, seeded generator, good enough to
/// choose operations and to hash; every random choice in this crate goes through one, so a
/// seed reproduces a run's choices (not its timing).
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// Uniform in `0..bound` (`bound` > 0), by multiply-shift: no modulo bias worth
    /// measuring at the bounds used here.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "SplitMix64::below needs a positive bound");
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// SplitMix64's finalizer: a bijective mix of 64 bits.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_seeded_and_bounded() {
        let a: Vec<u64> = (0..8).scan(SplitMix64::new(7), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..8).scan(SplitMix64::new(7), |r, _| Some(r.next_u64())).collect();
        let c: Vec<u64> = (0..8).scan(SplitMix64::new(8), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // The first outputs of the reference C implementation (splitmix64.c) for seed 1234567.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        let mut r = SplitMix64::new(1);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let x = r.below(5);
            assert!(x < 5);
            seen[x as usize] = true;
        }
        assert!(seen.iter().all(|s| *s), "every value in 0..5 drawn in 1000 tries");
    }
}
