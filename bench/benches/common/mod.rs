//! What the criterion suites of `capstan-bench` share: where their data goes, the sizes
//! they run at (default or `CAPSTAN_BENCH_FULL=1`), the runtime, and waiting with a
//! deadline.
//!
//! Data goes to temporary directories under the target directory (`CARGO_TARGET_DIR`, or
//! the workspace's `target/`), never /tmp: /tmp may be a tmpfs, where an fsync costs
//! nothing and RocksDB measures memory instead of a disk.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The environment variable that turns on the full sizes.
pub const FULL_ENV: &str = "CAPSTAN_BENCH_FULL";

/// The longest anything waits for a condition before the benchmark fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// True when `CAPSTAN_BENCH_FULL=1`: the large sizes too.
pub fn full() -> bool {
    std::env::var(FULL_ENV).is_ok_and(|v| v == "1")
}

/// Watcher counts of the fan-out groups: 1 to 10,000, and 100,000 with the full sizes.
pub fn watchers() -> Vec<usize> {
    let mut n = vec![1, 100, 1_000, 10_000];
    if full() {
        n.push(100_000);
    }
    n
}

/// Where benchmark data goes: the target directory, on the build's file system.
pub fn scratch_root() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("bench-data");
    std::fs::create_dir_all(&dir).expect("creating the benchmark data directory");
    dir
}

/// A fresh directory under [`scratch_root`], removed when dropped.
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(scratch_root())
        .expect("creating a temporary directory")
}

/// A multi-threaded runtime with one worker per core (two on the reference machine).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the runtime")
}

/// A count that tasks raise and one waiter waits on. Raising it wakes the waiter only
/// once the count reaches what it waits for, so ten thousand deliveries cost one wake,
/// not ten thousand.
pub struct Counter {
    count: AtomicU64,
    target: AtomicU64,
    reached: Notify,
}

impl Default for Counter {
    fn default() -> Self {
        Counter {
            count: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            reached: Notify::new(),
        }
    }
}

impl Counter {
    pub fn add(&self, n: u64) {
        // SeqCst with the waiter's store of the target and load of the count: either this
        // sees the new target, or the waiter sees this count.
        let now = self.count.fetch_add(n, Ordering::SeqCst) + n;
        if now >= self.target.load(Ordering::SeqCst) {
            self.reached.notify_waiters();
        }
    }

    pub fn get(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until the count reaches `target`; panics after [`DEADLINE`] (a lost
    /// delivery is a broken benchmark, not a slow sample). One waiter at a time.
    pub async fn wait_for(&self, target: u64, what: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let reached = self.reached.notified();
            tokio::pin!(reached);
            reached.as_mut().enable();
            self.target.store(target, Ordering::SeqCst);
            let now = self.get();
            if now >= target {
                self.target.store(u64::MAX, Ordering::SeqCst);
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{what}: {now} of {target} before the deadline");
            let _ = tokio::time::timeout(left, reached).await;
        }
    }
}
