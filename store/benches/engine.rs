//! Criterion benchmarks of the store's engine, without gRPC in the way.
//!
//! - `watch_fanout/N`: one event notified to N watchers of one key through the
//!   [`WatchHub`], timed until every watcher's response has been taken off its stream
//!   queue (notify, then drain, on one thread). Throughput is in deliveries.
//! - `put/batch_max_B`: 64 tasks proposing puts concurrently to a [`Node`] whose apply
//!   loop groups at most B proposals per fsync (1: no group commit, 1024: the default).
//!   Throughput is in puts; each iteration is one acknowledged put.
//!
//! Defaults keep `cargo bench -p capstan-store --bench engine` to a few minutes on two
//! cores (10 samples, short warm-up and measurement). Data lives in temporary directories
//! under the target directory, on the same file system as the build, so fsync is real.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use capstan_proto::etcdserverpb::{PutRequest, WatchCreateRequest};
use capstan_proto::mvccpb::{event::EventType, Event, KeyValue};
use capstan_proto::store::{command, Command};
use capstan_store::header::HeaderSource;
use capstan_store::watch::{StreamId, WatchRx};
use capstan_store::{HubConfig, Mvcc, Node, NodeConfig, WatchHub};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};

/// Where benchmark data goes: the target directory (never /tmp, which may be tmpfs).
fn scratch_root() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("bench-data");
    std::fs::create_dir_all(&dir).expect("creating the benchmark data directory");
    dir
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("engine-")
        .tempdir_in(scratch_root())
        .expect("creating a temporary directory")
}

const WATCH_KEY: &[u8] = b"/registry/pods/default/bench";

struct FanoutRig {
    hub: Arc<WatchHub>,
    receivers: Vec<(StreamId, WatchRx, usize)>,
    rev: i64,
    value: Bytes,
    _dir: tempfile::TempDir,
}

impl FanoutRig {
    /// A hub with `n` synced watchers of one key over a few streams.
    fn new(n: usize) -> FanoutRig {
        let dir = tempdir();
        let mvcc = Arc::new(Mvcc::open(&dir.path().join("db")).expect("opening the store"));
        let header = Arc::new(HeaderSource::new(1, 1));
        let streams = n.clamp(1, 4);
        let per_stream = n.div_ceil(streams);
        let config = HubConfig {
            // Room for one revision to every watcher of a stream, twice over: nothing parks.
            stream_queue_max: 2 * per_stream + 16,
            watchers_per_stream_max: per_stream + 1,
            watchers_max: n + 1,
            ..HubConfig::default()
        };
        let hub = WatchHub::start(mvcc, header, config);
        let req = WatchCreateRequest {
            key: Bytes::from_static(WATCH_KEY),
            ..Default::default()
        };
        let mut receivers = Vec::with_capacity(streams);
        let mut left = n;
        for _ in 0..streams {
            let (sid, rx) = hub.open_stream();
            let count = per_stream.min(left);
            left -= count;
            for _ in 0..count {
                let (id, created) = hub.reserve(sid, &req).expect("reserving a watcher");
                hub.register(sid, id, &req, created);
            }
            receivers.push((sid, rx, count));
        }
        assert_eq!(hub.counts(), (n, 0), "every watcher is synced");
        let rev = hub.revision();
        FanoutRig {
            hub,
            receivers,
            rev,
            value: Bytes::from(vec![b'v'; 256]),
            _dir: dir,
        }
    }

    /// Notifies one revision and takes every response off the queues; returns the time.
    fn one_event(&mut self) -> Duration {
        self.rev += 1;
        let events = vec![Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: Bytes::from_static(WATCH_KEY),
                create_revision: 2,
                mod_revision: self.rev,
                version: self.rev,
                value: self.value.clone(),
                lease: 0,
            }),
            prev_kv: None,
        }];
        let t0 = Instant::now();
        self.hub.notify(self.rev, events, None);
        for (sid, rx, count) in &mut self.receivers {
            for _ in 0..*count {
                match rx.try_recv() {
                    Ok(resp) => {
                        black_box(resp);
                    }
                    Err(e) => panic!("stream {sid}: a watcher did not get the event: {e}"),
                }
            }
        }
        t0.elapsed()
    }
}

fn watch_fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("watch_fanout");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for n in [1usize, 100, 1_000, 10_000, 100_000] {
        let mut rig = FanoutRig::new(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| (0..iters).map(|_| rig.one_event()).sum())
        });
        rig.hub.stop();
    }
    g.finish();
}

const PUT_CLIENTS: u64 = 64;
const PUT_KEYS: u64 = 10_000;

fn put_batching(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the runtime");
    // The node starts its transport on the current runtime.
    let _rt_guard = rt.enter();
    let mut g = c.benchmark_group("put");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    for batch_max in [1usize, 1024] {
        let dir = tempdir();
        let node = Node::start(NodeConfig {
            batch_max,
            ..NodeConfig::new("bench", dir.path().to_path_buf())
        })
        .expect("starting the node");
        let value = Bytes::from(vec![b'v'; 256]);
        let seq = Arc::new(AtomicU64::new(0));
        g.bench_function(BenchmarkId::new("batch_max", batch_max), |b| {
            b.iter_custom(|iters| rt.block_on(put_concurrently(&node, &value, &seq, iters)))
        });
        node.stop();
        drop(node);
    }
    g.finish();
}

/// `iters` puts from 64 tasks at once; the time until the last is acknowledged.
async fn put_concurrently(node: &Arc<Node>, value: &Bytes, seq: &Arc<AtomicU64>, iters: u64) -> Duration {
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(PUT_CLIENTS as usize);
    for c in 0..PUT_CLIENTS {
        // Client c does puts c, c + 64, c + 128, ... below iters.
        let n = iters / PUT_CLIENTS + u64::from(c < iters % PUT_CLIENTS);
        let node = node.clone();
        let value = value.clone();
        let seq = seq.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                let k = seq.fetch_add(1, Ordering::Relaxed) % PUT_KEYS;
                let cmd = Command {
                    op: Some(command::Op::Put(PutRequest {
                        key: Bytes::from(format!("/bench/{k:08}")),
                        value: value.clone(),
                        ..Default::default()
                    })),
                };
                node.propose(cmd).await.expect("put");
            }
        }));
    }
    for t in tasks {
        t.await.expect("put task");
    }
    t0.elapsed()
}

criterion_group!(benches, watch_fanout, put_batching);
criterion_main!(benches);
