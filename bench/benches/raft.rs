//! Writes through Raft on one member: how many proposals one fsync of the Raft log
//! carries as concurrency grows (group commit), and what the batch bound does to it.
//!
//! ```text
//! cargo bench -p capstan-bench --bench raft
//! ```
//!
//! A single-member [`Node`] in this process (its raft, apply and lease threads, real
//! RocksDB for the log and the state, every write of the log fsynced), on a temporary
//! directory under the target directory (never /tmp, which may be a tmpfs and make an
//! fsync free). Proposals go straight to [`Node::propose`]: no gRPC. The unit is time
//! per iteration; one iteration is one acknowledged put (proposed, committed, fsynced,
//! applied, answered) of a 256-byte value to one of 10,000 keys, and every group's
//! throughput is `Throughput::Elements(1)`: puts.
//!
//! # Groups
//!
//! - `raft_proposals`: id = the number of concurrent proposers P (1, 16, 64, 256): P
//!   tasks share the iterations of a sample and each waits for its put's answer before
//!   it proposes the next; the sample's time runs until the last is answered. The
//!   member's batch bound is the default (1,024 inputs per turn of the raft loop).
//! - `raft_batch_max`: id = the batch bound B (1: no group commit, 1,024: the default),
//!   64 concurrent proposers, otherwise as above.
//!
//! After each id, a line on stdout tells the group commit it got, over every put of that
//! id (warm-up included), from [`Node::raft_synced_writes`] (the count of synced writes
//! of the Raft log):
//!
//! ```text
//! raft_proposals/64: 169115 proposals in 5078 fsyncs (33.30 per fsync)
//! ```
//!
//! Every synced write of the log counts (the rare writes of conf state or truncation
//! point too). With one proposer a put costs one fsync (1.00 per fsync): a member alone
//! commits an entry once it has persisted it, and the log writes a hard state that only
//! moves the commit index without an fsync (see `RaftLog::append`).
//!
//! # Left out
//!
//! - Replication: peers, the network and their fsyncs (`capstan-bench kv` against a
//!   3-member cluster measures those).
//! - gRPC and clients (see the `watch_fanout` suite for the wire; `capstan-bench kv` for
//!   a whole write path).
//! - Watchers, leases, reads, values and key counts other than the ones above.
//!
//! Each group is short: 10 samples, flat sampling, a second of warm-up, three of
//! measurement.

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use capstan_proto::etcdserverpb::PutRequest;
use capstan_proto::store::{command, Command};
use capstan_store::{Node, NodeConfig};
use common::DEADLINE;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: u64 = 10_000;
const VALUE_BYTES: usize = 256;
/// Proposers of `raft_batch_max`.
const BATCH_PROPOSERS: u64 = 64;

/// A single member, leader, with proposals counted.
struct Rig {
    node: Arc<Node>,
    value: Bytes,
    seq: Arc<AtomicU64>,
    /// Puts answered since the rig started.
    puts: Arc<AtomicU64>,
    fsyncs_at_start: u64,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// Starts a member with batch bound `batch_max` (inside a runtime) and waits until it
    /// leads.
    async fn start(batch_max: usize) -> Rig {
        let dir = common::tempdir("raft-");
        let node = Node::start(NodeConfig {
            batch_max,
            ..NodeConfig::new("bench", dir.path().to_path_buf())
        })
        .expect("starting the member");
        let deadline = Instant::now() + DEADLINE;
        while !node.is_leader() {
            assert!(Instant::now() < deadline, "the member did not become leader");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Its own write at start (the member's attributes) is done.
        while !node
            .mvcc
            .members()
            .expect("reading the membership")
            .iter()
            .any(|m| m.name == "bench")
        {
            assert!(Instant::now() < deadline, "the member did not publish its attributes");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let fsyncs_at_start = node.raft_synced_writes();
        Rig {
            node,
            value: Bytes::from(vec![b'v'; VALUE_BYTES]),
            seq: Arc::new(AtomicU64::new(0)),
            puts: Arc::new(AtomicU64::new(0)),
            fsyncs_at_start,
            _dir: dir,
        }
    }

    /// `iters` puts from `proposers` tasks at once; the time until the last is answered.
    async fn puts(&self, proposers: u64, iters: u64) -> Duration {
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity(proposers as usize);
        for p in 0..proposers {
            let n = iters / proposers + u64::from(p < iters % proposers);
            if n == 0 {
                continue;
            }
            let (node, value, seq, puts) = (
                self.node.clone(),
                self.value.clone(),
                self.seq.clone(),
                self.puts.clone(),
            );
            tasks.push(tokio::spawn(async move {
                for _ in 0..n {
                    let k = seq.fetch_add(1, Ordering::Relaxed) % KEYS;
                    let cmd = Command {
                        op: Some(command::Op::Put(PutRequest {
                            key: Bytes::from(format!("/bench/{k:08}")),
                            value: value.clone(),
                            ..Default::default()
                        })),
                    };
                    node.propose(cmd).await.expect("put");
                    puts.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.expect("a proposer task");
        }
        t0.elapsed()
    }

    /// The line that tells the group commit, for benchmark `name`.
    fn report(&self, name: &str) -> String {
        let proposals = self.puts.load(Ordering::Relaxed);
        let fsyncs = self.node.raft_synced_writes() - self.fsyncs_at_start;
        let ratio = proposals as f64 / fsyncs.max(1) as f64;
        format!("{name}: {proposals} proposals in {fsyncs} fsyncs ({ratio:.2} per fsync)")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.node.stop();
    }
}

fn bench(c: &mut Criterion, group: &str, runs: &[(u64, u64, usize)]) {
    let rt = common::runtime();
    let mut g = c.benchmark_group(group);
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    for &(id, proposers, batch_max) in runs {
        let rig = rt.block_on(Rig::start(batch_max));
        g.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter_custom(|iters| rt.block_on(rig.puts(proposers, iters)))
        });
        println!("{}", rig.report(&format!("{group}/{id}")));
        drop(rig);
    }
    g.finish();
}

fn proposals(c: &mut Criterion) {
    let runs: Vec<(u64, u64, usize)> = [1, 16, 64, 256].iter().map(|&p| (p, p, 1024)).collect();
    bench(c, "raft_proposals", &runs);
}

fn batch_max(c: &mut Criterion) {
    let runs: Vec<(u64, u64, usize)> = [1, 1024].iter().map(|&b| (b as u64, BATCH_PROPOSERS, b)).collect();
    bench(c, "raft_batch_max", &runs);
}

criterion_group!(benches, proposals, batch_max);
criterion_main!(benches);
