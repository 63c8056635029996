//! The MVCC state machine ([`Mvcc`]) alone, against the length of its history: no Raft,
//! no threads, no network, real RocksDB.
//!
//! ```text
//! cargo bench -p capstan-bench --bench mvcc                       # 10,000 and 100,000
//! CAPSTAN_BENCH_FULL=1 cargo bench -p capstan-bench --bench mvcc  # and 1,000,000 (~1.5 min more)
//! ```
//!
//! # Groups
//!
//! Every group's benchmark id is the history length H: the number of revisions in the
//! store (10,000 and 100,000; 1,000,000 with `CAPSTAN_BENCH_FULL=1`). The history is H
//! puts of 256-byte values, round-robin over 1,000 keys shaped like Kubernetes object
//! keys (`/registry/pods/bench/pod-000123`), so every key has H / 1,000 versions,
//! applied in runs of 1,000 as the apply loop applies a batch of puts
//! ([`Mvcc::apply_puts`]). The unit is time per iteration.
//!
//! - `mvcc_put`: one iteration is one [`Mvcc::apply`] of a put of 256 bytes to the next
//!   key in turn (its newest version found in the writer's cache, one RocksDB write
//!   batch, no fsync: the state machine writes without its WAL, the Raft log is the
//!   durability). `Throughput::Elements(1)`: puts.
//! - `mvcc_range`: one iteration is one [`Mvcc::range`] of 100 consecutive keys at the
//!   newest revision (a list page; the start rotates over the keys), on a RocksDB
//!   snapshot. `Throughput::Elements(1)`: range requests.
//! - `mvcc_txn`: one iteration is one apply of the transaction every Kubernetes update
//!   is: compare the key's `mod_revision` with the one last written, then put.
//!   `Throughput::Elements(1)`: transactions (all succeed).
//! - `mvcc_compact`: one iteration is one apply of a compaction at the newest revision of
//!   a fresh store of H revisions (everything but each key's newest version goes: H -
//!   1,000 revisions deleted from the per-key index and the history). Only the
//!   compaction is timed; the store is built before the clock starts and removed after
//!   it stops. `Throughput::Elements(H)`: revisions compacted.
//!
//! Writes add revisions, so `mvcc_put` and `mvcc_txn` keep the history near H the way a
//! cluster does, by compacting: whenever their writes bring it to 1.1 H they compact it
//! (untimed) back to the newest H revisions, so the history stays between H and 1.1 H,
//! with the deletions RocksDB has not yet compacted away, as in a real store.
//!
//! # Left out
//!
//! - Raft, fsync and the watch hub (see the `raft` and `watch_fanout` suites).
//! - Historical reads, deletes, leases, keys counts other than 1,000, values other than
//!   256 bytes, and the writer's cache missing (the cache holds 64 MiB of newest
//!   versions: 1,000 keys always fit).
//! - RocksDB's background work is not waited for: a flush or a compaction of its own
//!   that falls inside a sample is counted in it.
//!
//! Data lives in temporary directories under the target directory (never /tmp, which
//! may be a tmpfs). Each group is short: 10 samples, half a second of warm-up (a
//! millisecond for `mvcc_compact`, whose every iteration builds a store), a second or
//! two of measurement.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use capstan_proto::etcdserverpb::{
    compare, request_op, CompactionRequest, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use capstan_proto::store::{command, Command};
use capstan_store::{CommandResponse, Mvcc};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keys the history is spread over.
const KEYS: usize = 1_000;
const VALUE_BYTES: usize = 256;
/// Puts applied together while a history is built.
const FILL_RUN: usize = 1_000;
/// Keys per range request.
const RANGE_KEYS: usize = 100;

/// History lengths: 10,000 and 100,000, and 1,000,000 with the full sizes.
fn histories() -> Vec<usize> {
    let mut h = vec![10_000, 100_000];
    if common::full() {
        h.push(1_000_000);
    }
    h
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("/registry/pods/bench/pod-{i:06}"))
}

/// A store, its next log index and the newest `mod_revision` of each key.
struct Store {
    mvcc: Mvcc,
    index: u64,
    next_key: usize,
    mods: Vec<i64>,
    value: Bytes,
    _dir: tempfile::TempDir,
}

impl Store {
    /// A fresh store holding `history` revisions.
    fn new(history: usize) -> Store {
        let dir = common::tempdir("mvcc-");
        let mvcc = Mvcc::open(&dir.path().join("db")).expect("opening the store");
        let mut s = Store {
            mvcc,
            index: 0,
            next_key: 0,
            mods: vec![0; KEYS],
            value: Bytes::from(vec![b'v'; VALUE_BYTES]),
            _dir: dir,
        };
        s.fill(history);
        s
    }

    /// Applies `revisions` puts, round-robin over the keys, in runs of [`FILL_RUN`].
    fn fill(&mut self, revisions: usize) {
        let mut left = revisions;
        while left > 0 {
            let run = left.min(FILL_RUN);
            let puts: Vec<(u64, PutRequest)> = (0..run)
                .map(|_| {
                    self.index += 1;
                    let k = self.take_key();
                    (
                        self.index,
                        PutRequest {
                            key: key(k),
                            value: self.value.clone(),
                            ..Default::default()
                        },
                    )
                })
                .collect();
            let entries: Vec<(u64, u64, &PutRequest)> = puts.iter().map(|(i, p)| (*i, 1, p)).collect();
            let applied = self.mvcc.apply_puts(&entries).expect("applying puts");
            for ((_, p), a) in puts.iter().zip(applied) {
                let a = a.expect("a new entry is applied");
                assert!(a.response.is_ok(), "a put was rejected: {:?}", a.response);
                let k = key_number(&p.key);
                self.mods[k] = a.revision;
            }
            left -= run;
        }
    }

    fn take_key(&mut self) -> usize {
        let k = self.next_key;
        self.next_key = (self.next_key + 1) % KEYS;
        k
    }

    fn apply(&mut self, cmd: &Command) -> i64 {
        self.index += 1;
        let a = self.mvcc.apply(self.index, cmd).expect("applying");
        assert!(a.response.is_ok(), "rejected: {:?}", a.response);
        a.revision
    }

    /// One put to the next key.
    fn put(&mut self) {
        let k = self.take_key();
        let cmd = Command {
            op: Some(command::Op::Put(PutRequest {
                key: key(k),
                value: self.value.clone(),
                ..Default::default()
            })),
        };
        self.mods[k] = self.apply(&cmd);
    }

    /// One update of the next key as Kubernetes writes it: the put holds only if the
    /// key's `mod_revision` is the one last written.
    fn txn(&mut self) {
        let k = self.take_key();
        let cmd = Command {
            op: Some(command::Op::Txn(TxnRequest {
                compare: vec![Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Mod as i32,
                    key: key(k),
                    target_union: Some(compare::TargetUnion::ModRevision(self.mods[k])),
                    ..Default::default()
                }],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: key(k),
                        value: self.value.clone(),
                        ..Default::default()
                    })),
                }],
                failure: Vec::new(),
            })),
        };
        self.index += 1;
        let a = self.mvcc.apply(self.index, &cmd).expect("applying");
        match a.response {
            Ok(CommandResponse::Txn(t)) => assert!(t.succeeded, "the compare failed"),
            other => panic!("unexpected answer to a txn: {other:?}"),
        }
        self.mods[k] = a.revision;
    }

    /// One range of [`RANGE_KEYS`] keys from the next key (wrapping at the last).
    fn range(&mut self) {
        let k = self.take_key() % (KEYS - RANGE_KEYS + 1);
        let req = RangeRequest {
            key: key(k),
            range_end: key(k + RANGE_KEYS),
            ..Default::default()
        };
        let resp = self.mvcc.range(&req).expect("range");
        assert_eq!(resp.kvs.len(), RANGE_KEYS, "a range found {} keys", resp.kvs.len());
        std::hint::black_box(resp);
    }

    /// Compacts at `revision`; returns the time the apply took.
    fn compact(&mut self, revision: i64) -> Duration {
        let cmd = Command {
            op: Some(command::Op::Compaction(CompactionRequest {
                revision,
                ..Default::default()
            })),
        };
        let t0 = Instant::now();
        self.apply(&cmd);
        t0.elapsed()
    }

    /// Compacts so that the newest `history` revisions stay (untimed upkeep).
    fn keep_newest(&mut self, history: usize) {
        let at = self.mvcc.revision() - history as i64;
        if at > self.mvcc.compact_revision() {
            self.compact(at);
        }
    }

    /// Revisions since the last compaction: the history length.
    fn history_len(&self) -> usize {
        (self.mvcc.revision() - self.mvcc.compact_revision()).max(0) as usize
    }
}

fn key_number(k: &[u8]) -> usize {
    std::str::from_utf8(&k[k.len() - 6..])
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("a key of this benchmark")
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g
}

/// `iters` writes, timed in runs that stop where the history reaches 1.1 H; there it is
/// compacted back to H revisions, untimed. So a compaction comes every H / 10 writes
/// however criterion splits the iterations.
fn timed_writes(s: &mut Store, history: usize, iters: u64, mut write: impl FnMut(&mut Store)) -> Duration {
    let bound = history + (history / 10).max(1);
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let len = s.history_len();
        if len >= bound {
            s.keep_newest(history);
            continue;
        }
        let run = ((bound - len) as u64).min(iters - done);
        let t0 = Instant::now();
        for _ in 0..run {
            write(s);
        }
        total += t0.elapsed();
        done += run;
    }
    total
}

fn writes(c: &mut Criterion) {
    for (name, write) in [("mvcc_put", Store::put as fn(&mut Store)), ("mvcc_txn", Store::txn)] {
        let mut g = group(c, name);
        g.throughput(Throughput::Elements(1));
        for h in histories() {
            let mut s = Store::new(h);
            g.bench_function(BenchmarkId::from_parameter(h), |b| {
                b.iter_custom(|iters| timed_writes(&mut s, h, iters, write))
            });
        }
        g.finish();
    }
}

fn range(c: &mut Criterion) {
    let mut g = group(c, "mvcc_range");
    g.throughput(Throughput::Elements(1));
    for h in histories() {
        let mut s = Store::new(h);
        g.bench_function(BenchmarkId::from_parameter(h), |b| b.iter(|| s.range()));
    }
    g.finish();
}

fn compact(c: &mut Criterion) {
    let mut g = group(c, "mvcc_compact");
    g.sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    for h in histories() {
        g.throughput(Throughput::Elements(h as u64));
        g.bench_function(BenchmarkId::from_parameter(h), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut s = Store::new(h);
                    let at = s.mvcc.revision();
                    total += s.compact(at);
                    assert_eq!(s.mvcc.compact_revision(), at, "the compaction took effect");
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, writes, range, compact);
criterion_main!(benches);
