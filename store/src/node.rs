//! A single-member store node: the durable log, the apply loop and the lease clock.
//!
//! The loop follows raft-rs's Ready order, so that Raft (the next step) slots in without
//! changing the state machine:
//!
//! 1. take every proposal waiting (group commit, up to `batch_max`),
//! 2. **persist** them as log entries in one RocksDB write with `sync` — one fsync for the
//!    whole group,
//! 3. **apply** each entry to the [`Mvcc`] state machine (unsynced writes: the log is the
//!    durability), notify the watch hub, and answer the proposer.
//!
//! A client is answered only after its entry is fsynced and applied, so an acknowledged
//! write survives a crash; on restart every logged entry after the applied index is
//! applied again. Reads go to the state machine directly and only ever see applied
//! (hence durable) data.
//!
//! The node owns the clock: it decides lease expiry in the [`Lessor`] and proposes the
//! revokes, and it picks IDs for leases granted without one. Everything the state machine
//! sees arrives inside a command.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use capstan_proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
use capstan_proto::store::{command, Command};
use prost::Message;
use rocksdb::{WriteBatch, WriteOptions};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, StoreError};
use crate::header::{id_from_name, HeaderSource};
use crate::keys;
use crate::lease::Lessor;
use crate::mvcc::{check_command, CommandResponse, Mvcc, LEASE_TTL_MAX_S};
use crate::watch::{HubConfig, WatchHub};

/// etcd's default limit on the size of one request.
pub const REQUEST_BYTES_MAX: usize = 1536 * 1024;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// The URL clients reach this member at, reported by MemberList.
    pub client_url: String,
    pub peer_url: String,
    /// Proposals persisted with one fsync.
    pub batch_max: usize,
    /// Proposals waiting for the apply loop before proposers wait.
    pub queue_max: usize,
    /// Leases shorter than this are granted this TTL (etcd: 1.5 election timeouts).
    pub lease_ttl_min_s: i64,
    /// How often expired leases are looked for.
    pub lease_check_interval: Duration,
    /// Applied entries kept in the log before it is truncated.
    pub log_keep_entries: u64,
    pub hub: HubConfig,
}

impl NodeConfig {
    pub fn new(name: &str, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            name: name.to_string(),
            data_dir,
            client_url: "http://127.0.0.1:2379".into(),
            peer_url: "http://127.0.0.1:2380".into(),
            batch_max: 1024,
            queue_max: 16_384,
            lease_ttl_min_s: 2,
            lease_check_interval: Duration::from_millis(250),
            log_keep_entries: 10_000,
            hub: HubConfig::default(),
        }
    }
}

struct Proposal {
    cmd: Command,
    reply: Option<oneshot::Sender<Result<CommandResponse>>>,
}

/// A running single-member store.
pub struct Node {
    pub config: NodeConfig,
    pub mvcc: Arc<Mvcc>,
    pub hub: Arc<WatchHub>,
    pub header: Arc<HeaderSource>,
    lessor: Arc<Mutex<Lessor>>,
    proposals: mpsc::Sender<Proposal>,
    epoch: Instant,
    next_lease_id: AtomicI64,
    last_index: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
}

impl Node {
    /// Opens the data directory, replays the log, and starts the apply loop, the lease
    /// clock and the watch hub.
    pub fn start(config: NodeConfig) -> Result<Arc<Node>> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StoreError::Storage(format!("{}: {e}", config.data_dir.display())))?;
        let mvcc = Arc::new(Mvcc::open(&config.data_dir.join("db"))?);
        let (first_index, last_index) = replay_log(&mvcc)?;
        let header = Arc::new(HeaderSource::new(
            id_from_name(&format!("cluster:{}", config.name)),
            id_from_name(&config.name),
        ));
        let hub = WatchHub::start(mvcc.clone(), header.clone(), config.hub.clone());
        let epoch = Instant::now();
        let lessor = Arc::new(Mutex::new(Lessor::new()));
        {
            // A member that starts gives every lease a full TTL again, as etcd does.
            let mut l = lessor.lock().expect("lessor lock poisoned");
            for (id, ttl) in mvcc.leases() {
                l.grant(id, ttl, 0);
            }
        }
        let (tx, rx) = mpsc::channel(config.queue_max);
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(1);
        let last_index = Arc::new(AtomicU64::new(last_index));
        let stopped = Arc::new(AtomicBool::new(false));
        let node = Arc::new(Node {
            config: config.clone(),
            mvcc: mvcc.clone(),
            hub: hub.clone(),
            header,
            lessor: lessor.clone(),
            proposals: tx.clone(),
            epoch,
            // Time-based so IDs from before a restart are not handed out again.
            next_lease_id: AtomicI64::new(((unix_ms << 12) & (i64::MAX >> 1)).max(1)),
            last_index: last_index.clone(),
            stopped: stopped.clone(),
        });
        let apply = ApplyLoop {
            mvcc,
            hub,
            lessor: lessor.clone(),
            epoch,
            batch_max: config.batch_max,
            keep: config.log_keep_entries,
            first_index,
            last_index,
            stopped: stopped.clone(),
        };
        std::thread::Builder::new()
            .name("store-apply".into())
            .spawn(move || apply.run(rx))
            .map_err(|e| StoreError::Storage(format!("spawning apply thread: {e}")))?;
        let interval = config.lease_check_interval;
        std::thread::Builder::new()
            .name("lease-clock".into())
            .spawn(move || lease_clock(lessor, tx, epoch, interval, stopped))
            .map_err(|e| StoreError::Storage(format!("spawning lease thread: {e}")))?;
        Ok(node)
    }

    /// Stops the background threads. Pending proposals are answered with `Stopped`.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.hub.stop();
    }

    /// Milliseconds on this node's monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Index of the last entry in the log.
    pub fn last_index(&self) -> u64 {
        self.last_index.load(Ordering::Acquire)
    }

    /// Validates, logs and applies a write; answers once it is durable and applied.
    pub async fn propose(&self, mut cmd: Command) -> Result<CommandResponse> {
        check_command(&cmd)?;
        if let Some(command::Op::LeaseGrant(g)) = &mut cmd.op {
            self.prepare_grant(g)?;
        }
        if cmd.encoded_len() > REQUEST_BYTES_MAX {
            return Err(StoreError::RequestTooLarge);
        }
        if self.stopped.load(Ordering::Acquire) {
            return Err(StoreError::Stopped);
        }
        let (tx, rx) = oneshot::channel();
        self.proposals
            .send(Proposal { cmd, reply: Some(tx) })
            .await
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Decisions etcd's leader makes before proposing a grant: the ID and the TTL bounds.
    fn prepare_grant(&self, g: &mut LeaseGrantRequest) -> Result<()> {
        if g.ttl > LEASE_TTL_MAX_S {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        g.ttl = g.ttl.max(self.config.lease_ttl_min_s);
        if g.id == 0 {
            g.id = self.next_lease_id.fetch_add(1, Ordering::Relaxed);
        }
        if g.id < 0 {
            return Err(StoreError::InvalidRequest("lease ID must be positive".into()));
        }
        Ok(())
    }

    /// A keep-alive: the TTL, or None if the lease is gone or expired.
    pub fn keep_alive(&self, id: i64) -> Option<i64> {
        self.lessor
            .lock()
            .expect("lessor lock poisoned")
            .renew(id, self.now_ms())
    }

    /// (granted TTL, remaining seconds) of a lease the lessor knows.
    pub fn time_to_live(&self, id: i64) -> Option<(i64, i64)> {
        self.lessor
            .lock()
            .expect("lessor lock poisoned")
            .time_to_live(id, self.now_ms())
    }
}

/// Applies the log entries after the applied index (left by a crash between persist and
/// apply). Returns the first and last index in the log.
fn replay_log(mvcc: &Mvcc) -> Result<(u64, u64)> {
    let applied = mvcc.applied_index();
    let mut first = None;
    let mut last = applied;
    let entries: Vec<(u64, Command)> = {
        let db = mvcc.db();
        let mut out = Vec::new();
        for item in db.iterator(rocksdb::IteratorMode::From(&[keys::LOG], rocksdb::Direction::Forward)) {
            let (k, v) = item?;
            if k.first() != Some(&keys::LOG) {
                break;
            }
            let idx: [u8; 8] = k
                .get(1..9)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| StoreError::Corrupt("log key".into()))?;
            let idx = u64::from_be_bytes(idx);
            first.get_or_insert(idx);
            last = last.max(idx);
            if idx > applied {
                out.push((idx, Command::decode(v.as_ref())?));
            }
        }
        out
    };
    for (idx, cmd) in entries {
        mvcc.apply(idx, &cmd)?;
    }
    if last > applied {
        tracing::info!(from = applied + 1, to = last, "replayed log entries");
    }
    Ok((first.unwrap_or(applied + 1), last))
}

struct ApplyLoop {
    mvcc: Arc<Mvcc>,
    hub: Arc<WatchHub>,
    lessor: Arc<Mutex<Lessor>>,
    epoch: Instant,
    batch_max: usize,
    keep: u64,
    first_index: u64,
    last_index: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
}

impl ApplyLoop {
    fn run(mut self, mut rx: mpsc::Receiver<Proposal>) {
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        let mut batch: Vec<Proposal> = Vec::with_capacity(self.batch_max);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < self.batch_max {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            if self.stopped.load(Ordering::Acquire) {
                fail_all(&mut batch, StoreError::Stopped);
                continue;
            }
            // 1. Persist: all entries of the group, one fsync.
            let base = self.last_index.load(Ordering::Acquire);
            let mut wb = WriteBatch::default();
            for (i, p) in batch.iter().enumerate() {
                wb.put(keys::log(base + 1 + i as u64), p.cmd.encode_to_vec());
            }
            if let Err(e) = self.mvcc.db().write_opt(wb, &sync) {
                tracing::error!(error = %e, "persisting log entries failed");
                fail_all(&mut batch, StoreError::Storage(e.into_string()));
                continue;
            }
            self.last_index.store(base + batch.len() as u64, Ordering::Release);
            // 2. Apply and answer.
            for (i, p) in batch.drain(..).enumerate() {
                let index = base + 1 + i as u64;
                match self.mvcc.apply(index, &p.cmd) {
                    Ok(applied) => {
                        self.after_apply(&p.cmd, &applied.response);
                        self.hub.notify(applied.revision, applied.events, applied.compacted);
                        if let Some(r) = p.reply {
                            let _ = r.send(applied.response);
                        }
                    }
                    Err(e) => {
                        // The state machine can no longer be trusted: stop taking writes.
                        tracing::error!(error = %e, index, "applying a log entry failed; the store stops");
                        self.stopped.store(true, Ordering::Release);
                        if let Some(r) = p.reply {
                            let _ = r.send(Err(e.clone()));
                        }
                    }
                }
            }
            self.truncate_log();
        }
    }

    fn after_apply(&self, cmd: &Command, response: &Result<CommandResponse>) {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let mut l = self.lessor.lock().expect("lessor lock poisoned");
        match (&cmd.op, response) {
            (Some(command::Op::LeaseGrant(g)), Ok(_)) => l.grant(g.id, g.ttl, now_ms),
            (Some(command::Op::LeaseRevoke(r)), Ok(_) | Err(StoreError::LeaseNotFound)) => l.remove(r.id),
            _ => {}
        }
    }

    /// Drops applied entries beyond the ones kept. Not synced: it is ordered after the
    /// applies it follows in RocksDB's write-ahead log.
    fn truncate_log(&mut self) {
        let applied = self.mvcc.applied_index();
        if applied < self.first_index + 2 * self.keep {
            return;
        }
        let upto = applied - self.keep;
        let mut wb = WriteBatch::default();
        wb.delete_range(keys::log(self.first_index), keys::log(upto + 1));
        if self.mvcc.db().write(wb).is_ok() {
            self.first_index = upto + 1;
        }
    }
}

fn fail_all(batch: &mut Vec<Proposal>, e: StoreError) {
    for p in batch.drain(..) {
        if let Some(r) = p.reply {
            let _ = r.send(Err(e.clone()));
        }
    }
}

/// Looks for expired leases and proposes their revokes.
fn lease_clock(
    lessor: Arc<Mutex<Lessor>>,
    proposals: mpsc::Sender<Proposal>,
    epoch: Instant,
    interval: Duration,
    stopped: Arc<AtomicBool>,
) {
    while !stopped.load(Ordering::Acquire) {
        std::thread::sleep(interval);
        let now_ms = epoch.elapsed().as_millis() as u64;
        let expired = lessor.lock().expect("lessor lock poisoned").expired(now_ms, 1000);
        for id in expired {
            let cmd = Command {
                op: Some(command::Op::LeaseRevoke(LeaseRevokeRequest { id })),
            };
            // A full queue means the revoke is retried later (the lessor remembers).
            if let Err(mpsc::error::TrySendError::Closed(_)) = proposals.try_send(Proposal { cmd, reply: None }) {
                return;
            }
        }
    }
}
