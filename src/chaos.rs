//! `capstan chaos`: start a cluster of real processes on this machine, run workloads
//! against it while killing, pausing and cutting off its masters (and, with nodes,
//! killing agents and proxies) on a schedule drawn from a seed, check the histories, and
//! report (the harness is the `capstan-chaos` crate; this is its
//! command line).
//!
//! Progress (each fault as it happens) goes to stderr, the summary to stdout; with
//! `--out DIR`, also `report.json`, `report.txt`, `timeline.svg` and the members' logs.
//! The exit status is 0 when every check passed, 1 when one failed or could not decide,
//! and 2 when the harness itself could not run.

use std::path::PathBuf;
use std::time::Duration;

use capstan_chaos::{FaultKind, RunConfig};

#[derive(clap::Args)]
pub struct ChaosArgs {
    /// Store members (masters) in the cluster under test.
    #[arg(long, default_value_t = 3)]
    masters: usize,
    /// Nodes (an agent and a proxy each). With nodes, the masters also run the Kubernetes
    /// API, controller-manager and scheduler, Deployments are scaled and rolled and a
    /// Service is called through the node proxies during the faults.
    #[arg(long, default_value_t = 0)]
    nodes: usize,
    /// How long faults are injected (as 60s, 5m, 1h30m); the run takes a few seconds
    /// more to start, heal and check.
    #[arg(long, default_value = "60s", value_parser = super::parse_duration)]
    duration: Duration,
    /// Seed of every random choice (fault kinds and targets, workload operations).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Faults to draw from, comma-separated: kill-leader, kill-member, kill-minority,
    /// pause-leader, pause-member, partition, isolate-leader, lossy-links, slow-links,
    /// and with nodes kill-lease-holder, kill-agent, kill-proxy; or the groups kills,
    /// pauses, network, nodes, all (without nodes, `all` leaves out what needs them).
    #[arg(long, default_value = "all")]
    faults: String,
    /// How long each fault holds before it is healed (default: twice the election
    /// timeout, so that a pause outlasts an election).
    #[arg(long, value_parser = super::parse_duration)]
    hold: Option<Duration>,
    /// Quiet time before each fault.
    #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
    quiet: Duration,
    /// Register workload: concurrent etcd clients, each bound to one master.
    #[arg(long, default_value_t = 12)]
    clients: usize,
    /// Register workload: keys in use at a time.
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// The members' Raft election timeout.
    #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
    election_timeout: Duration,
    /// Where to write the report files and the members' logs.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs the chaos run; `Ok(passed)`.
pub async fn run(args: ChaosArgs) -> Result<bool, String> {
    let binary = std::env::current_exe().map_err(|e| format!("cannot find the capstan binary: {e}"))?;
    let mut config = RunConfig::new(binary);
    config.masters = args.masters;
    config.duration_ms = millis(args.duration);
    config.seed = args.seed;
    config.nodes = args.nodes;
    config.faults = FaultKind::parse_list(&args.faults).map_err(|e| e.to_string())?;
    if args.nodes == 0 && args.faults.split(',').any(|w| w.trim() == "all") {
        config.faults.retain(|k| !k.needs_kubernetes());
    }
    config.hold_ms = args.hold.map(millis);
    config.quiet_ms = millis(args.quiet);
    config.clients = args.clients;
    config.keys = args.keys;
    config.election_timeout_ms = millis(args.election_timeout);
    config.heartbeat_interval_ms = (config.election_timeout_ms / 10).max(1);
    config.out_dir = args.out.clone();
    config.progress = true;
    let report = capstan_chaos::run(config).await.map_err(|e| e.to_string())?;
    print!("{}", report.text());
    if let Some(dir) = &args.out {
        println!("report: {}", dir.display());
    }
    Ok(report.passed())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
