//! The Raft log, hard state and conf state of one member, in a RocksDB of their own.
//!
//! [`RaftLog`] is raft-rs's [`Storage`]: the log entries live under the `w` prefix (one
//! key per index) and Raft's own records under `h` (see [`crate::keys`]). Appends and the
//! hard state of one Ready go into one write batch, fsynced: that is the group commit of
//! the Raft layer. Terms of the entries in the log are also kept in memory (8 bytes per
//! entry, and the log is truncated to a bounded length), because raft-rs asks for terms
//! far more often than for entries, and so is the newest tail of the log (bounded), from
//! which committed entries are handed out and appends to followers are made without
//! reading back what was just written.
//!
//! The log has its own database, as TiKV separates its Raft engine from its KV engine:
//! its writes are all fsynced, the state's are not (see `mvcc`), and in one database the
//! state's writes would queue behind the log's fsyncs in RocksDB's single write path.
//!
//! Inside it, the entries have the default column family to themselves and Raft's own
//! records are in [`RAFT_STATE_CF`] (both share the write-ahead log, so one batch still
//! writes both atomically). That keeps every file of entries a narrow, contiguous range
//! of indexes: RocksDB moves such files down a level without rewriting them, and a
//! truncation drops the files wholly below it ([`RaftLog::compact`]) instead of writing
//! range deletions that compactions must merge. When the hard state, rewritten at every
//! Ready, was in every file, every file's range spanned the whole log, so each
//! compaction rewrote the whole log: the log's database wrote about ten times the bytes
//! the state's did, and its compactions cost more CPU than applying (measured,
//! docs/benchmarks-history.md, 2026-12-06 (later)).
//!
//! Snapshots: the log does not hold the state. [`Storage::snapshot`] answers with the
//! *position* of the state machine (applied index, its term and the conf state as of it,
//! read from one consistent view of the state); the transport streams the state itself,
//! which may by then be a little newer. That is safe because applying is idempotent: a
//! member that installs a state at index J > I skips the entries up to J.
//!
//! Every synced write goes through `RaftLog::write_synced`, where the slow-fsync
//! failpoint of test builds sits ([`crate::failpoint`]: read from the environment when
//! the log opens; it sleeps before the write, on the raft thread that writes the log),
//! and where it is timed for `etcd_disk_wal_fsync_duration_seconds` ([`crate::metrics`]).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use capstan_proto::store::Member;
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

use crate::error::{Result, StoreError};
use crate::failpoint::FsyncDelay;
use crate::keys;
use crate::metrics::StoreMetrics;
use crate::mvcc::Mvcc;

pub struct RaftLog {
    db: Arc<DB>,
    mvcc: Arc<Mvcc>,
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the entry just before the first one in the log.
    truncated: (u64, u64),
    /// Terms of the entries `truncated.0 + 1 ..= last_index`.
    terms: VecDeque<u64>,
    /// The newest entries, ending at `last_index` (a contiguous tail).
    cache: VecDeque<Entry>,
    cache_bytes: usize,
    /// The slow-fsync failpoint (off, and compiled out of release builds).
    fsync_delay: FsyncDelay,
    /// Synced (fsynced) writes since the log opened, for benchmarks and metrics.
    synced_writes: Arc<AtomicU64>,
    /// Where the synced writes' durations go (`etcd_disk_wal_fsync_duration_seconds`).
    metrics: StoreMetrics,
}

/// Write-ahead log files kept for reuse, and the memtable size that rotates them.
const WAL_RECYCLE_FILES: usize = 4;
const MEMTABLE_BYTES: usize = 2 << 20;

/// The column family of Raft's own records (the `h` keys: hard state, conf state,
/// truncation point, identity, incarnation); the entries are in the default one.
pub const RAFT_STATE_CF: &str = "raftstate";

fn state_cf(db: &DB) -> &ColumnFamily {
    db.cf_handle(RAFT_STATE_CF)
        .expect("the raft state column family is created when the log opens")
}

/// Logs written before the column families split kept Raft's own records with the
/// entries: move them (one synced batch, so a crash leaves them in one place or the
/// other, and reading looks in the new place only once the move is durable).
fn move_raft_records_out_of_entries(db: &DB, fsync_delay: &mut FsyncDelay) -> Result<()> {
    let mut wb = WriteBatch::default();
    let mut it = db.raw_iterator();
    it.seek([keys::RAFT]);
    while it.valid() {
        let (Some(k), Some(v)) = (it.key(), it.value()) else {
            break;
        };
        if k.first() != Some(&keys::RAFT) {
            break;
        }
        wb.put_cf(state_cf(db), k, v);
        it.next();
    }
    it.status()?;
    if wb.is_empty() {
        return Ok(());
    }
    tracing::info!(
        records = wb.len(),
        "moving the Raft records into their own column family"
    );
    wb.delete_range([keys::RAFT], [keys::RAFT + 1]);
    fsync_delay.before_synced_write();
    db.write_opt(wb, &synced())?;
    Ok(())
}

/// Bounds of the in-memory tail of the log.
const CACHE_ENTRIES_MAX: usize = 8192;
const CACHE_BYTES_MAX: usize = 32 << 20;

fn storage_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

fn decode_pair(v: &[u8]) -> Result<(u64, u64)> {
    if v.len() != 16 {
        return Err(StoreError::Corrupt("truncated-log record".into()));
    }
    let a = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
    let b = u64::from_be_bytes(v[8..].try_into().expect("8 bytes"));
    Ok((a, b))
}

fn encode_pair(a: u64, b: u64) -> Vec<u8> {
    let mut v = a.to_be_bytes().to_vec();
    v.extend_from_slice(&b.to_be_bytes());
    v
}

fn synced() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}

impl RaftLog {
    /// Opens (or creates) the log in `dir` of the member whose state is `mvcc`, with the
    /// failpoints the environment sets (an invalid setting is an error).
    pub fn open(mvcc: Arc<Mvcc>, dir: &Path) -> Result<RaftLog> {
        RaftLog::open_with(mvcc, dir, FsyncDelay::from_env()?)
    }

    fn open_with(mvcc: Arc<Mvcc>, dir: &Path, mut fsync_delay: FsyncDelay) -> Result<RaftLog> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_keep_log_file_num(4);
        opts.set_max_background_jobs(2);
        // Entries are read back rarely and deleted soon: not worth compressing.
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        // Every append is fsynced, and an fsync of a file that grew must also write its
        // inode: a second disk round trip. A recycled write-ahead log file is overwritten
        // in place, so its fsync writes the data only. Files are recycled once their
        // memtable is flushed: small memtables let that start after a few MiB of log
        // (the entries are deleted soon after anyway). Measured: raft thread CPU per put
        // 15.0-15.7 us before, 11.5-12.7 us after (docs/benchmarks-history.md, 2026-12-03).
        opts.set_recycle_log_file_num(WAL_RECYCLE_FILES);
        opts.set_write_buffer_size(MEMTABLE_BYTES);
        opts.create_missing_column_families(true);
        let families = vec![
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, opts.clone()),
            ColumnFamilyDescriptor::new(RAFT_STATE_CF, opts.clone()),
        ];
        let db = Arc::new(DB::open_cf_descriptors(&opts, dir, families)?);
        move_raft_records_out_of_entries(&db, &mut fsync_delay)?;
        let hard_state = match db.get_cf(state_cf(&db), keys::RAFT_HARD_STATE)? {
            Some(v) => HardState::parse_from_bytes(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            None => HardState::default(),
        };
        let conf_state = match db.get_cf(state_cf(&db), keys::RAFT_CONF_STATE)? {
            Some(v) => ConfState::parse_from_bytes(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            None => ConfState::default(),
        };
        let truncated = match db.get_cf(state_cf(&db), keys::RAFT_TRUNCATED)? {
            Some(v) => decode_pair(&v)?,
            None => (0, 0),
        };
        let mut log = RaftLog {
            db,
            mvcc,
            hard_state,
            conf_state,
            truncated,
            terms: VecDeque::new(),
            cache: VecDeque::new(),
            cache_bytes: 0,
            fsync_delay,
            synced_writes: Arc::new(AtomicU64::new(0)),
            metrics: StoreMetrics::default(),
        };
        {
            let db = log.db.clone();
            let mut it = db.raw_iterator();
            it.seek(keys::log(truncated.0 + 1));
            let mut expect = truncated.0 + 1;
            while it.valid() {
                let (Some(k), Some(v)) = (it.key(), it.value()) else {
                    break;
                };
                if k.first() != Some(&keys::LOG) {
                    break;
                }
                let e = Entry::parse_from_bytes(v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                if e.index != expect {
                    return Err(StoreError::Corrupt(format!(
                        "log entry {} where {expect} was expected",
                        e.index
                    )));
                }
                log.terms.push_back(e.term);
                expect += 1;
                it.next();
            }
            it.status()?;
        }
        if log.mvcc.interrupted_install() {
            log.reset_for_snapshot()?;
        }
        Ok(log)
    }

    /// After the state was lost (an interrupted snapshot install), forget the log too, so
    /// that the leader sends a snapshot; the term and vote stay, so no vote is cast twice.
    fn reset_for_snapshot(&mut self) -> Result<()> {
        let mut wb = WriteBatch::default();
        wb.delete_range(keys::log(0), keys::log(u64::MAX));
        self.hard_state.commit = 0;
        self.truncated = (0, 0);
        self.terms.clear();
        self.clear_cache();
        wb.put_cf(
            state_cf(&self.db),
            keys::RAFT_HARD_STATE,
            self.hard_state
                .write_to_bytes()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        );
        wb.put_cf(state_cf(&self.db), keys::RAFT_TRUNCATED, encode_pair(0, 0));
        self.write_synced(wb)?;
        self.drop_files_up_to(u64::MAX)?;
        Ok(())
    }

    /// (cluster ID, member ID), fixed when the member first started.
    pub fn identity(&self) -> Result<Option<(u64, u64)>> {
        match self.db.get_cf(state_cf(&self.db), keys::RAFT_IDENTITY)? {
            Some(v) => Ok(Some(decode_pair(&v)?)),
            None => Ok(None),
        }
    }

    pub fn set_identity(&mut self, cluster_id: u64, member_id: u64) -> Result<()> {
        let mut wb = WriteBatch::default();
        wb.put_cf(
            state_cf(&self.db),
            keys::RAFT_IDENTITY,
            encode_pair(cluster_id, member_id),
        );
        self.write_synced(wb)?;
        Ok(())
    }

    /// Counts the starts of this member (durably). Proposal IDs include it, so that an
    /// entry proposed before a restart is never taken for one proposed after it when the
    /// log is replayed.
    pub fn next_incarnation(&mut self) -> Result<u64> {
        let n = match self.db.get_cf(state_cf(&self.db), keys::RAFT_INCARNATION)? {
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("incarnation record".into()))?,
            ),
            None => 0,
        } + 1;
        let mut wb = WriteBatch::default();
        wb.put_cf(state_cf(&self.db), keys::RAFT_INCARNATION, n.to_be_bytes());
        self.write_synced(wb)?;
        Ok(n)
    }

    /// Whether this member has ever been part of a cluster (it has Raft state).
    pub fn initialized(&self) -> bool {
        !self.conf_state.voters.is_empty() || !self.conf_state.learners.is_empty() || self.last_index_() > 0
    }

    /// Writes the first entries of a new cluster, the same on every initial member: one
    /// conf change per member (carrying its record), committed at term 1, as etcd does.
    pub fn bootstrap(&mut self, members: &[Member]) -> Result<()> {
        assert!(!self.initialized(), "bootstrap only a member without Raft state");
        let mut entries = Vec::with_capacity(members.len());
        for (i, m) in members.iter().enumerate() {
            let mut cc = ConfChange::default();
            cc.set_change_type(ConfChangeType::AddNode);
            cc.node_id = m.id;
            cc.context = m.encode_to_vec().into();
            let mut e = Entry::default();
            e.set_entry_type(EntryType::EntryConfChange);
            e.term = 1;
            e.index = i as u64 + 1;
            e.data = cc
                .write_to_bytes()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?
                .into();
            entries.push(e);
        }
        let hs = HardState {
            term: 1,
            commit: members.len() as u64,
            ..Default::default()
        };
        let cs = ConfState {
            voters: members.iter().map(|m| m.id).collect(),
            ..Default::default()
        };
        self.append(&entries, Some(&hs))?;
        self.set_conf_state(cs)?;
        Ok(())
    }

    fn last_index_(&self) -> u64 {
        self.truncated.0 + self.terms.len() as u64
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Appends entries (replacing any conflicting tail) and the new hard state, in one
    /// write batch, fsynced when there are entries or the term or vote changed.
    ///
    /// A hard state that only moves the commit index is written without an fsync
    /// (raft-rs's `Ready::must_sync` is false then, and etcd does the same): a crash may
    /// lose it, and the member then restarts with an older commit index, which Raft
    /// learns again from the leader; the state machine's applied index is clamped to the
    /// recovered commit index on start. The write still goes through the same write-ahead
    /// log, so a later synced write makes it durable in order. Without this a leader
    /// under sequential puts paid two fsyncs per put: its entries, then its commit.
    pub fn append(&mut self, entries: &[Entry], hs: Option<&HardState>) -> Result<()> {
        let term_vote_before = (self.hard_state.term, self.hard_state.vote);
        let mut wb = WriteBatch::default();
        if let Some(first) = entries.first() {
            assert!(first.index > self.truncated.0, "appending below the truncated log");
            let last = self.last_index_();
            assert!(first.index <= last + 1, "a gap in the log at {}", first.index);
            if first.index <= last {
                wb.delete_range(keys::log(first.index), keys::log(last + 1));
                self.terms.truncate((first.index - self.truncated.0 - 1) as usize);
                while self.cache.back().is_some_and(|e| e.index >= first.index) {
                    if let Some(e) = self.cache.pop_back() {
                        self.cache_bytes -= e.data.len() + e.context.len();
                    }
                }
            }
            if self.cache.back().is_some_and(|e| e.index + 1 != first.index) {
                self.clear_cache();
            }
            for e in entries {
                wb.put(
                    keys::log(e.index),
                    e.write_to_bytes().map_err(|e| StoreError::Corrupt(e.to_string()))?,
                );
                self.terms.push_back(e.term);
                self.cache_bytes += e.data.len() + e.context.len();
                self.cache.push_back(e.clone());
            }
            while self.cache.len() > CACHE_ENTRIES_MAX || (self.cache_bytes > CACHE_BYTES_MAX && self.cache.len() > 1) {
                if let Some(e) = self.cache.pop_front() {
                    self.cache_bytes -= e.data.len() + e.context.len();
                }
            }
        }
        if let Some(hs) = hs {
            self.hard_state = hs.clone();
            wb.put_cf(
                state_cf(&self.db),
                keys::RAFT_HARD_STATE,
                hs.write_to_bytes().map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
        }
        if wb.is_empty() {
            return Ok(());
        }
        let must_sync = !entries.is_empty() || hs.is_some_and(|hs| (hs.term, hs.vote) != term_vote_before);
        if must_sync {
            self.write_synced(wb)?;
        } else {
            self.db.write(wb)?;
        }
        Ok(())
    }

    /// Records a new commit index. Not synced: Raft learns it again from the leader.
    pub fn set_commit(&mut self, commit: u64) -> Result<()> {
        self.hard_state.commit = commit;
        let v = self
            .hard_state
            .write_to_bytes()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.db.put_cf(state_cf(&self.db), keys::RAFT_HARD_STATE, v)?;
        Ok(())
    }

    pub fn set_conf_state(&mut self, cs: ConfState) -> Result<()> {
        let v = cs.write_to_bytes().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conf_state = cs;
        let mut wb = WriteBatch::default();
        wb.put_cf(state_cf(&self.db), keys::RAFT_CONF_STATE, v);
        self.write_synced(wb)
    }

    /// Writes `wb` fsynced: every synced write of the log comes here, behind the
    /// slow-fsync failpoint. Timed here, the failpoint's delay included (a simulated slow
    /// disk should look like one on the dashboards).
    fn write_synced(&mut self, wb: WriteBatch) -> Result<()> {
        let started = Instant::now();
        self.fsync_delay.before_synced_write();
        self.db.write_opt(wb, &synced())?;
        self.metrics.wal_fsynced(started.elapsed());
        self.synced_writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Reports the synced writes' durations to `metrics` from now on.
    pub fn set_metrics(&mut self, metrics: StoreMetrics) {
        self.metrics = metrics;
    }

    /// The count of synced writes (one fsync each) since the log opened, shared: it
    /// stays readable after the log moves into the raft thread.
    pub fn synced_writes(&self) -> Arc<AtomicU64> {
        self.synced_writes.clone()
    }

    /// After the state machine installed a snapshot's state: the log restarts after it.
    pub fn apply_snapshot(&mut self, snap: &Snapshot) -> Result<()> {
        let meta = snap.get_metadata();
        let mut wb = WriteBatch::default();
        wb.delete_range(keys::log(0), keys::log(u64::MAX));
        self.truncated = (meta.index, meta.term);
        self.terms.clear();
        self.clear_cache();
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.conf_state = meta.get_conf_state().clone();
        wb.put_cf(
            state_cf(&self.db),
            keys::RAFT_TRUNCATED,
            encode_pair(meta.index, meta.term),
        );
        wb.put_cf(
            state_cf(&self.db),
            keys::RAFT_HARD_STATE,
            self.hard_state
                .write_to_bytes()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        );
        wb.put_cf(
            state_cf(&self.db),
            keys::RAFT_CONF_STATE,
            self.conf_state
                .write_to_bytes()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        );
        self.write_synced(wb)?;
        self.drop_files_up_to(u64::MAX)?;
        Ok(())
    }

    /// Drops the entries before `index` (which must be applied).
    ///
    /// No range deletion: nothing reads below the truncation point (opening starts at
    /// it, [`Storage::entries`] answers `Compacted` below it), so the entries there only
    /// take space until the files holding them go whole. The new truncation point is
    /// synced before any file goes, so a restart never starts reading below it and finds
    /// a gap.
    pub fn compact(&mut self, index: u64) -> Result<()> {
        if index <= self.truncated.0 + 1 {
            return Ok(());
        }
        assert!(index <= self.last_index_() + 1, "compacting beyond the log");
        let term = self
            .term_of(index - 1)
            .ok_or_else(|| StoreError::Corrupt("term of a logged entry".into()))?;
        let mut wb = WriteBatch::default();
        wb.put_cf(state_cf(&self.db), keys::RAFT_TRUNCATED, encode_pair(index - 1, term));
        self.write_synced(wb)?;
        self.drop_files_up_to(index - 1)?;
        let drop = (index - 1 - self.truncated.0) as usize;
        self.terms.drain(..drop);
        self.truncated = (index - 1, term);
        while self.cache.front().is_some_and(|e| e.index < index) {
            if let Some(e) = self.cache.pop_front() {
                self.cache_bytes -= e.data.len() + e.context.len();
            }
        }
        Ok(())
    }

    /// Deletes the files of entries that hold nothing past `last` (an index at or below
    /// the durable truncation point). RocksDB leaves level-0 files alone here; they
    /// reach level 1 by trivial moves, since files of entries do not overlap.
    fn drop_files_up_to(&self, last: u64) -> Result<()> {
        self.db.delete_file_in_range(keys::log(0), keys::log(last))?;
        Ok(())
    }

    fn clear_cache(&mut self) {
        self.cache.clear();
        self.cache_bytes = 0;
    }

    pub fn first_index_(&self) -> u64 {
        self.truncated.0 + 1
    }

    fn term_of(&self, idx: u64) -> Option<u64> {
        if idx == self.truncated.0 {
            return Some(self.truncated.1);
        }
        if idx < self.truncated.0 {
            return None;
        }
        self.terms.get((idx - self.truncated.0 - 1) as usize).copied()
    }
}

impl Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(high <= self.last_index_() + 1, "entries asked beyond the log");
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        let mut size = 0u64;
        let cache_first = self.cache.front().map_or(u64::MAX, |e| e.index);
        let mut idx = low;
        if low < cache_first {
            // What the cache does not hold comes from the database.
            let mut it = self.db.raw_iterator();
            it.seek(keys::log(low));
            while idx < high.min(cache_first) && it.valid() {
                let Some(v) = it.value() else { break };
                let e = Entry::parse_from_bytes(v).map_err(storage_err)?;
                if e.index != idx {
                    return Err(storage_err(format!("log entry {} where {idx} was expected", e.index)));
                }
                size += u64::from(e.compute_size());
                if !out.is_empty() && size > max_size {
                    return Ok(out);
                }
                out.push(e);
                idx += 1;
                it.next();
            }
            it.status().map_err(storage_err)?;
        }
        if idx >= cache_first && idx < high {
            for e in self.cache.range((idx - cache_first) as usize..) {
                if e.index >= high {
                    break;
                }
                size += u64::from(e.compute_size());
                if !out.is_empty() && size > max_size {
                    break;
                }
                out.push(e.clone());
            }
        }
        if out.is_empty() && low < high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(idx).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_index_())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let point = self.mvcc.snapshot_point().map_err(storage_err)?;
        if point.index < request_index || point.index < self.truncated.0 {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        let mut snap = Snapshot::default();
        let meta = snap.mut_metadata();
        meta.index = point.index;
        meta.term = point.term;
        let cs = ConfState::parse_from_bytes(&point.conf_state).map_err(storage_err)?;
        meta.set_conf_state(cs);
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![b'x'; 100].into(),
            ..Default::default()
        }
    }

    fn hard_state(term: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote: 1,
            commit,
            ..Default::default()
        }
    }

    fn files_of_entries(db: &DB) -> usize {
        let files = db.live_files().expect("live files");
        files
            .iter()
            .filter(|f| f.column_family_name == rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
            .count()
    }

    /// Appends `first..=last` and writes them into a file of their own at level 1 or
    /// below (as RocksDB's trivial moves put them).
    fn append_as_a_file(log: &mut RaftLog, first: u64, last: u64) {
        let entries: Vec<Entry> = (first..=last).map(|i| entry(i, 2)).collect();
        log.append(&entries, Some(&hard_state(2, last))).expect("append");
        log.db.flush().expect("flush");
        log.db.compact_range(Some(keys::log(first)), Some(keys::log(last)));
    }

    #[test]
    fn truncation_drops_the_files_wholly_below_it_and_a_restart_reads_from_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mvcc = Arc::new(Mvcc::open(&dir.path().join("db")).expect("mvcc"));
        let mut log = RaftLog::open(mvcc.clone(), &dir.path().join("raft")).expect("open");
        append_as_a_file(&mut log, 1, 100);
        append_as_a_file(&mut log, 101, 200);
        assert_eq!(files_of_entries(&log.db), 2);
        // 1..=150 go: the first file holds nothing past 150, the second does.
        log.compact(151).expect("compact");
        assert_eq!(files_of_entries(&log.db), 1, "the file of 1..=100 is gone");
        assert_eq!(log.first_index_(), 151);
        drop(log);

        let log = RaftLog::open(mvcc, &dir.path().join("raft")).expect("reopen");
        assert_eq!((log.first_index_(), log.last_index_()), (151, 200));
        assert_eq!(log.hard_state().commit, 200);
        assert_eq!(log.term(150).expect("term at the truncation point"), 2);
        assert!(matches!(
            log.entries(150, 160, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let read = log
            .entries(151, 201, None, GetEntriesContext::empty(false))
            .expect("entries");
        assert_eq!(
            read.iter().map(|e| e.index).collect::<Vec<_>>(),
            (151..=200).collect::<Vec<_>>()
        );
    }

    /// Entries and a new term or vote are synced; a hard state that only moves the
    /// commit index is written without an fsync, and survives a clean reopen.
    #[test]
    fn only_commit_index_moves_are_written_without_an_fsync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mvcc = Arc::new(Mvcc::open(&dir.path().join("db")).expect("mvcc"));
        let mut log = RaftLog::open(mvcc.clone(), &dir.path().join("raft")).expect("open");
        let synced = log.synced_writes();
        let at = |synced: &Arc<AtomicU64>| synced.load(Ordering::Relaxed);
        let start = at(&synced);
        log.append(&[entry(1, 2)], Some(&hard_state(2, 0))).expect("append");
        assert_eq!(at(&synced), start + 1, "entries are synced");
        log.append(&[], Some(&hard_state(2, 1))).expect("commit");
        assert_eq!(at(&synced), start + 1, "a commit index alone is not synced");
        log.append(&[], Some(&hard_state(3, 1))).expect("term");
        assert_eq!(at(&synced), start + 2, "a new term is synced");
        let mut voted = hard_state(3, 1);
        voted.vote = 2;
        log.append(&[], Some(&voted)).expect("vote");
        assert_eq!(at(&synced), start + 3, "a new vote is synced");
        log.append(
            &[],
            Some(&HardState {
                commit: 1,
                ..voted.clone()
            }),
        )
        .expect("same");
        drop(log);
        let log = RaftLog::open(mvcc, &dir.path().join("raft")).expect("reopen");
        assert_eq!(log.hard_state(), &voted);
    }

    /// The slow-fsync failpoint: each synced write takes at least the delay (a lower
    /// bound: it says the sleep is on the path, whatever the machine's speed).
    #[cfg(debug_assertions)]
    #[test]
    fn synced_writes_wait_for_the_fsync_delay_failpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mvcc = Arc::new(Mvcc::open(&dir.path().join("db")).expect("mvcc"));
        let delay = FsyncDelay::from_settings(Some("40".into()), None).expect("a valid delay");
        let mut log = RaftLog::open_with(mvcc, &dir.path().join("raft"), delay).expect("open");
        for i in 1..=3 {
            let start = std::time::Instant::now();
            log.append(&[entry(i, 2)], Some(&hard_state(2, i))).expect("append");
            let took = start.elapsed();
            assert!(took >= std::time::Duration::from_millis(40), "append {i} took {took:?}");
        }
        let start = std::time::Instant::now();
        log.set_identity(7, 1).expect("identity");
        assert!(start.elapsed() >= std::time::Duration::from_millis(40));
        assert_eq!(log.last_index_(), 3);
    }

    #[test]
    fn a_log_with_its_records_among_the_entries_opens_with_them_moved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mvcc = Arc::new(Mvcc::open(&dir.path().join("db")).expect("mvcc"));
        let raft = dir.path().join("raft");
        {
            // As logs were written before the column families split.
            let mut opts = Options::default();
            opts.create_if_missing(true);
            let db = DB::open(&opts, &raft).expect("old log");
            let mut wb = WriteBatch::default();
            for i in 6..=9 {
                wb.put(keys::log(i), entry(i, 3).write_to_bytes().expect("encode"));
            }
            let hs = hard_state(3, 9).write_to_bytes().expect("encode");
            wb.put(keys::RAFT_HARD_STATE, hs);
            wb.put(keys::RAFT_TRUNCATED, encode_pair(5, 3));
            wb.put(keys::RAFT_IDENTITY, encode_pair(77, 1));
            db.write_opt(wb, &synced()).expect("write");
        }
        let log = RaftLog::open(mvcc.clone(), &raft).expect("open");
        assert_eq!(log.hard_state(), &hard_state(3, 9));
        assert_eq!((log.first_index_(), log.last_index_()), (6, 9));
        assert_eq!(log.identity().expect("identity"), Some((77, 1)));
        let mut it = log.db.raw_iterator();
        it.seek([keys::RAFT]);
        assert!(
            !it.valid() || it.key().is_some_and(|k| k.first() != Some(&keys::RAFT)),
            "no Raft record is left among the entries"
        );
        drop(it);
        drop(log);
        let log = RaftLog::open(mvcc, &raft).expect("reopen");
        assert_eq!(log.hard_state(), &hard_state(3, 9));
        assert_eq!(log.identity().expect("identity"), Some((77, 1)));
    }
}
