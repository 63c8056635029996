//! `capstan-bench`: load over the etcd v3 gRPC API, so one tool measures Capstan and etcd
//! alike.
//!
//! - `kv put` / `kv range`: single-key request throughput and latency percentiles.
//! - `watch-fanout`: delivery latency and rate of events to many watchers, and the
//!   server's memory per idle watcher.
//! - `status`: each member's Status and the agreed leader (optionally waiting for one).
//! - `failover`: SIGKILL a cluster's leader under put load; time to the first
//!   acknowledged put.
//! - `kube`: create/get/update/list latency on a Kubernetes API server (over HTTP).
//! - `scheduler throughput` / `scheduler failover`: pods bound per second and scheduling
//!   latency; time from killing the active scheduler to the next binding.
//! - `pods`: pod startup latency through the whole cluster (create → scheduled → running
//!   and ready, seen in a watch), pods per second, then the deletion.
//! - `http-echo`: a small fast HTTP server answering `200 ok`, the pods behind a Service
//!   when the node proxy's overhead is measured (it serves; it generates no load).
//!
//! Every run is bounded by a request or event count and by `--timeout-s`, and only
//! loopback endpoints are accepted.

mod cluster;
mod common;
mod compaction;
mod failover;
mod http_echo;
mod kube;
mod kubeapi;
mod kv;
mod pods;
mod rawgrpc;
mod report;
mod scheduler;
mod watch;

use clap::{Parser, Subcommand};

/// mimalloc, as the `capstan` binary: the load tool shares the machine with the servers
/// it measures, and glibc's malloc and free were about 8 % of its CPU samples (64
/// clients putting).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "capstan-bench",
    version,
    about = "Load tool for etcd v3 API servers (Capstan, etcd) on this machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Tokio worker threads (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Key-value request workloads.
    Kv {
        #[command(subcommand)]
        op: KvOp,
    },
    /// Put load while the history is compacted: throughput and latency before, during and after.
    Compaction(compaction::CompactionArgs),
    /// Many watchers on one key or prefix; delivery latency, rate and memory.
    WatchFanout(watch::WatchArgs),
    /// Each endpoint's Maintenance.Status and the leader they agree on.
    Status(cluster::StatusArgs),
    /// Kill a cluster's leader (SIGKILL) under put load and time the recovery.
    Failover(failover::FailoverArgs),
    /// Create/get/update/list load on a Kubernetes API server.
    Kube(kube::KubeArgs),
    /// The scheduler through the Kubernetes API: throughput and latency, failover.
    Scheduler {
        #[command(subcommand)]
        op: scheduler::SchedulerCommand,
    },
    /// Pod startup latency: create pods, time them to scheduled and to running and ready.
    Pods(pods::PodsArgs),
    /// Serve `200 ok` to every HTTP request (a fast pod for the proxy benchmark).
    HttpEcho(http_echo::HttpEchoArgs),
    /// Write docs/BENCHMARKS.md and its plots from the results of `make bench`.
    Report(report::ReportArgs),
}

#[derive(Subcommand)]
enum KvOp {
    /// Single-key puts.
    Put(kv::KvArgs),
    /// Single-key gets after writing the key space once.
    Range(kv::RangeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = cli.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("capstan-bench: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Kv { op: KvOp::Put(a) } => kv::run_put(a).await,
            Command::Kv { op: KvOp::Range(a) } => kv::run_range(a).await,
            Command::Compaction(a) => compaction::run(a).await,
            Command::WatchFanout(a) => watch::run(a).await,
            Command::Status(a) => cluster::run_status(a).await,
            Command::Failover(a) => failover::run(a).await,
            Command::Kube(a) => kube::run(a).await,
            Command::Scheduler { op } => scheduler::run(op).await,
            Command::Pods(a) => pods::run(a).await,
            Command::HttpEcho(a) => http_echo::run(a).await,
            Command::Report(a) => report::run(a),
        }
    });
    // Do not wait for tasks left blocked on a dead server.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capstan-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
