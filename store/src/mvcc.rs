//! The MVCC state machine: etcd's key-value semantics on RocksDB.
//!
//! [`Mvcc::apply`] takes one log entry (a [`Command`]) and applies it as one atomic
//! RocksDB write batch: every write transaction gets exactly one new revision, each key
//! carries `create_revision`, `mod_revision`, `version` and `lease`, and the history of
//! every key stays on disk until compaction removes superseded revisions. The function is
//! deterministic: it reads no clock and makes no random choice, so replicas that apply the
//! same log end in the same state. Reads ([`Mvcc::range`] and friends) run concurrently
//! with apply on a RocksDB snapshot, so they never see half of a transaction.
//!
//! Memory does not grow with history: the only in-memory state is the current and
//! compacted revision, the applied log index, the table of leases, and the writer's
//! bounded cache of recently written keys' newest versions (`latest`), which spares most
//! puts a lookup in RocksDB.
//!
//! # Compaction
//!
//! Compaction has a logical and a physical part, as etcd's. Applying a Compact entry is
//! the logical part, cheap and deterministic: it checks the revision (`Compacted`,
//! `FutureRevision`) and records it (`META_COMPACT`), so reads and watches below it are
//! refused from that entry on. No scan runs in the apply. The physical part, deleting the
//! versions the compaction supersedes, is [`Mvcc::compact_step`]: one bounded batch (at
//! most [`COMPACTION_BATCH_ENTRIES_MAX`] entries of the per-key index examined, one
//! RocksDB write), resuming where the previous batch stopped. A member's node runs the
//! steps on a thread of their own with a pause in between, so the apply loop and readers
//! go on while a long history is deleted. `META_COMPACT_DONE` holds the revision up to
//! which the deletion has finished: the batch that reaches the end of the index writes
//! it, and compaction is pending while it is below `META_COMPACT`. It survives restarts:
//! a member that stopped mid-way begins the pass again (the in-memory position is lost;
//! what was deleted stays deleted). A store without the marker (older layouts, whose
//! compactions ran inside the apply) is complete.
//!
//! The rule is etcd's: for every key, the versions at or below the compaction revision go
//! except the newest one, which goes too if it is a deletion older than that revision.
//! Reads only ever look at revisions at or above the compacted one, where every key's
//! newest version at or below it is kept, so a batch changes no answer: a range at a
//! revision, a watch replay (the `prev_kv` of an event at the compaction revision itself
//! is never given, deleted or not), the writer's cache of newest versions. The one order
//! that matters: a deletion that is a key's newest version at or below the compaction
//! revision is deleted only after every older version of the key, in the batch that
//! leaves the key, so no read ever sees an older version through its gap. What depends on
//! the physical progress is hidden from the rest: [`Mvcc::hash_kv`] hashes only what a
//! finished compaction keeps (as etcd's HashKV does), and [`Mvcc::export`] hands out the
//! state as a finished compaction leaves it (with `META_COMPACT_DONE` equal to
//! `META_COMPACT`), so snapshots, their hashes and the members that install them agree
//! whatever each member's progress.
//!
//! A pass compacts to the revision recorded when it began. A newer Compact applied while
//! a pass runs is taken up by the next pass, once this one has finished and recorded its
//! revision: as etcd's compactions, one after the other, so that every pass ends and
//! `META_COMPACT_DONE` advances however often compactions come (restarting the scan at
//! each newer revision would cost as much as the second pass and could starve).
//!
//! Deliberately left out here: quotas (NoSpace), auth, the log itself (see `node`), and
//! the compactor's thread and pacing (see `node`: the state machine reads no clock).
//! [`Mvcc::apply`], the entry point for tools and tests without a node, finishes the
//! physical part of a compaction it applies before it returns.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use bytes::Bytes;
use capstan_proto::etcdserverpb::{
    compare, range_request, request_op, response_op, CompactionRequest, CompactionResponse, Compare,
    DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp,
    TxnRequest, TxnResponse,
};
use capstan_proto::mvccpb::{event::EventType, Event, KeyValue};
use capstan_proto::store::{command, Command, LeaseRecord, Member, MemberAttributes};
use prost::Message;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBRawIterator, Direction, IteratorMode, Options, ReadOptions, WriteBatch,
    WriteOptions, DB,
};

use crate::error::{Result, StoreError};
use crate::keys;
use crate::latest::{LatestCache, LATEST_CACHE_BYTES_MAX};

/// etcd's default limit on operations in one transaction.
pub const TXN_OPS_MAX: usize = 128;
/// etcd's largest lease TTL, in seconds.
pub const LEASE_TTL_MAX_S: i64 = 9_000_000_000;

/// The response to one applied command.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    /// A membership change or a member's published attributes were applied.
    Member,
}

/// What applying one log entry produced.
#[derive(Debug)]
pub struct Applied {
    /// The answer for the client: a deterministic rejection (lease not found, ...) is an
    /// answer too; the entry is still consumed.
    pub response: Result<CommandResponse>,
    /// The store revision after the entry.
    pub revision: i64,
    /// The events of the new revision, in order, each with its `prev_kv`; empty when the
    /// entry wrote nothing.
    pub events: Vec<Event>,
    /// Set when the entry compacted the store.
    pub compacted: Option<i64>,
}

/// A key range as etcd defines it by (key, range_end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Bytes,
    /// None: every key >= start.
    pub end: Option<Bytes>,
    pub single: bool,
}

impl KeyRange {
    pub fn new(key: &Bytes, range_end: &Bytes) -> KeyRange {
        if range_end.is_empty() {
            KeyRange {
                start: key.clone(),
                end: Some(key.clone()),
                single: true,
            }
        } else if range_end.as_ref() == [0] {
            KeyRange {
                start: key.clone(),
                end: None,
                single: false,
            }
        } else {
            KeyRange {
                start: key.clone(),
                end: Some(range_end.clone()),
                single: false,
            }
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        if self.single {
            return k == self.start.as_ref();
        }
        k >= self.start.as_ref() && self.end.as_ref().is_none_or(|e| k < e.as_ref())
    }

    fn is_empty(&self) -> bool {
        !self.single && self.end.as_ref().is_some_and(|e| e.as_ref() <= self.start.as_ref())
    }
}

/// A consistent read view: the live database (for the single writer) or a snapshot.
struct View<'a> {
    db: &'a DB,
    snapshot: Option<rocksdb::Snapshot<'a>>,
    /// The writer's cache of newest versions: only on the writer's live view.
    cache: Option<&'a RefCell<LatestCache>>,
}

impl<'a> View<'a> {
    fn opts(&self) -> ReadOptions {
        let mut o = ReadOptions::default();
        if let Some(s) = &self.snapshot {
            o.set_snapshot(s);
        }
        o
    }

    fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_opt(k, &self.opts())?)
    }

    fn iter(&self, upper: Vec<u8>) -> DBRawIterator<'a> {
        let mut o = self.opts();
        o.set_iterate_upper_bound(upper);
        self.db.raw_iterator_opt(o)
    }

    /// An iterator over the history by revision (`r` keys, in their own column family).
    fn history_iter(&self, upper: Vec<u8>) -> DBRawIterator<'a> {
        let mut o = self.opts();
        o.set_iterate_upper_bound(upper);
        self.db.raw_iterator_cf_opt(history_cf(self.db), o)
    }

    /// The store revision; a new store is at 1, as in etcd.
    fn revision(&self) -> Result<i64> {
        Ok(self.meta(keys::META_REVISION)?.max(1))
    }

    fn meta(&self, name: &[u8]) -> Result<i64> {
        match self.get(name)? {
            None => Ok(0),
            Some(v) => {
                let b: [u8; 8] = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("meta value".into()))?;
                Ok(i64::from_be_bytes(b))
            }
        }
    }

    /// The revision up to which compaction has physically finished (see the module docs):
    /// the compacted revision when the store has no record of it.
    fn compact_done(&self) -> Result<i64> {
        match self.get(keys::META_COMPACT_DONE)? {
            None => self.meta(keys::META_COMPACT),
            Some(_) => self.meta(keys::META_COMPACT_DONE),
        }
    }

    fn latest(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        if let Some(cache) = self.cache {
            if let Some(v) = cache.borrow().get(key) {
                return Ok(v.clone());
            }
        }
        let found = self.newest_version(key)?;
        if let Some(cache) = self.cache {
            cache.borrow_mut().insert(Bytes::copy_from_slice(key), found.clone());
        }
        Ok(found)
    }

    /// The key's newest version in the database: the first of its index entries.
    fn newest_version(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let prefix = keys::keyrev_prefix(key);
        let mut upper = prefix.clone();
        upper.extend_from_slice(&[0xFF; 9]);
        let mut it = self.iter(upper);
        it.seek(&prefix);
        match (it.key(), it.value()) {
            (Some(k), Some(v)) => self.version_of_entry(k, v),
            _ => {
                it.status()?;
                Ok(None)
            }
        }
    }

    /// The version an index entry records: a put's `KeyValue`, None for a deletion.
    /// Entries written before the index carried the value hold only the sub-revision;
    /// their version is read from the history.
    fn version_of_entry(&self, k: &[u8], v: &[u8]) -> Result<Option<KeyValue>> {
        if v.first() != Some(&keys::KIND_PUT) {
            return Ok(None);
        }
        if v.len() > INDEX_HEADER_BYTES {
            return Ok(Some(KeyValue::decode(&v[INDEX_HEADER_BYTES..])?));
        }
        let rev = keys::keyrev_revision(k).ok_or_else(|| StoreError::Corrupt("index key".into()))?;
        Ok(Some(self.kv_at(rev, index_sub(v)?)?))
    }

    /// Every live key in `r` at the newest revision, in key order, calling `f` for each;
    /// `f` returns false to stop. Walks the per-key index: the first entry of each key is
    /// its newest version, and the older ones are stepped over (a few by `next`, a long
    /// history not yet compacted by one seek).
    fn scan_latest(&self, r: &KeyRange, mut f: impl FnMut(KeyValue) -> bool) -> Result<()> {
        if r.single {
            if let Some(kv) = self.latest(&r.start)? {
                f(kv);
            }
            return Ok(());
        }
        if r.is_empty() {
            return Ok(());
        }
        let upper = match &r.end {
            Some(e) => keys::keyrev_prefix(e),
            None => vec![keys::KEYREVS + 1],
        };
        let mut it = self.iter(upper);
        it.seek(keys::keyrev_prefix(&r.start));
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if k.len() < 11 {
                return Err(StoreError::Corrupt("index key".into()));
            }
            // The key's escaped form, terminator included: no other key's entries start
            // with it (the terminator cannot occur inside an escaped key).
            let group = k[..k.len() - 8].to_vec();
            if let Some(kv) = self.version_of_entry(k, v)? {
                if !f(kv) {
                    return Ok(());
                }
            }
            let mut steps = 0;
            it.next();
            while it.key().is_some_and(|k| k.starts_with(&group)) {
                steps += 1;
                if steps == OLDER_VERSIONS_STEPPED_MAX {
                    let mut past = group;
                    past.extend_from_slice(&[0xFF; 9]);
                    it.seek(past);
                    break;
                }
                it.next();
            }
        }
        it.status()?;
        Ok(())
    }

    /// The newest version of every key in `r` at revision `rev` (a past revision), calling
    /// `f` for each live one.
    fn scan_at(&self, r: &KeyRange, rev: i64, mut f: impl FnMut(KeyValue) -> bool) -> Result<()> {
        if r.is_empty() {
            return Ok(());
        }
        let upper = match (&r.end, r.single) {
            (_, true) => {
                let mut p = keys::keyrev_prefix(&r.start);
                p.extend_from_slice(&[0xFF; 9]);
                p
            }
            (Some(e), false) => keys::keyrev_prefix(e),
            (None, false) => vec![keys::KEYREVS + 1],
        };
        let mut it = self.iter(upper);
        it.seek(keys::keyrev(&r.start, rev));
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            let (ukey, krev) = keys::parse_keyrev(k).ok_or_else(|| StoreError::Corrupt("index key".into()))?;
            if krev > rev {
                it.seek(keys::keyrev(&ukey, rev));
                continue;
            }
            if let Some(kv) = self.version_of_entry(k, v)? {
                if !f(kv) {
                    return Ok(());
                }
            }
            let mut past = keys::keyrev_prefix(&ukey);
            past.extend_from_slice(&[0xFF; 9]);
            it.seek(past);
        }
        it.status()?;
        Ok(())
    }

    fn event_at(&self, rev: i64, sub: u32) -> Result<Event> {
        let v = self
            .db
            .get_cf_opt(history_cf(self.db), keys::rev(rev, sub), &self.opts())?
            .ok_or_else(|| StoreError::Corrupt(format!("missing history entry {rev}.{sub}")))?;
        Ok(Event::decode(v.as_slice())?)
    }

    fn kv_at(&self, rev: i64, sub: u32) -> Result<KeyValue> {
        self.event_at(rev, sub)?
            .kv
            .ok_or_else(|| StoreError::Corrupt("event without kv".into()))
    }

    /// The version of `key` live just before revision `rev`, if any and not compacted
    /// (`compacted`: the compacted revision; the version before it is never given, as
    /// etcd's range below it fails, whether or not compaction has deleted it yet).
    fn prev_version(&self, key: &[u8], rev: i64, compacted: i64) -> Result<Option<KeyValue>> {
        if rev - 1 < compacted {
            return Ok(None);
        }
        let mut out = None;
        let r = KeyRange {
            start: Bytes::copy_from_slice(key),
            end: None,
            single: true,
        };
        self.scan_at(&r, rev - 1, |kv| {
            out = Some(kv);
            false
        })?;
        Ok(out)
    }
}

/// Records in the writer's cache the newest versions an applied entry (or run) wrote or
/// looked up, once its batch is written: from then on they are the database's.
fn remember(cache: &RefCell<LatestCache>, versions: BTreeMap<Bytes, Option<KeyValue>>) {
    let mut cache = cache.borrow_mut();
    for (key, v) in versions {
        cache.insert(key, v);
    }
}

/// An index entry's value starts with the kind (1 byte) and the sub-revision (4 bytes);
/// a put's `KeyValue` follows.
const INDEX_HEADER_BYTES: usize = 5;

/// Older versions of a key that a scan of the newest ones steps over one by one before
/// it seeks past them all: a step is cheaper than a seek, but a long history not yet
/// compacted must cost one seek, not a step per version.
const OLDER_VERSIONS_STEPPED_MAX: usize = 4;

fn index_sub(v: &[u8]) -> Result<u32> {
    let b: [u8; 4] = v
        .get(1..5)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("index value".into()))?;
    Ok(u32::from_be_bytes(b))
}

/// Index entries the physical compaction examines at most per RocksDB write (one
/// [`Mvcc::compact_step`]): etcd deletes 1,000 revisions per batch. A batch deletes at
/// most this many versions (two records each); on two busy cores one took about 6 ms
/// (the `capstan-bench compaction` run of 200,000 revisions, pauses subtracted).
pub const COMPACTION_BATCH_ENTRIES_MAX: usize = 1_000;

/// Whether a compaction at `at` keeps the version of `key` at revision `rev` (at most
/// `at`): it must be the key's newest version at or below `at`, and not a deletion older
/// than `at`. `it` iterates the per-key index of a consistent view.
fn kept_at(it: &mut DBRawIterator<'_>, key: &[u8], rev: i64, at: i64) -> Result<bool> {
    let prefix = keys::keyrev_prefix(key);
    // The key's first entry at or below `at` (revisions sort newest first).
    it.seek(keys::keyrev(key, at));
    match (it.key(), it.value()) {
        (Some(k), Some(v)) if k.len() == prefix.len() + 8 && k.starts_with(&prefix) => {
            let newest = keys::keyrev_revision(k).ok_or_else(|| StoreError::Corrupt("index key".into()))?;
            Ok(newest == rev && (v.first() != Some(&keys::KIND_DELETE) || rev == at))
        }
        _ => {
            it.status()?;
            Ok(false)
        }
    }
}

/// The records of the state a finished compaction at `at` keeps, for an export taken
/// while the compaction is pending: index entries are judged key by key in the order the
/// export hands them out (newest first), history entries at or below `at` by a look at
/// their key's index entries.
struct CompactedExport<'a> {
    at: i64,
    index: DBRawIterator<'a>,
    group: Vec<u8>,
    kept_newest: bool,
}

impl CompactedExport<'_> {
    fn keep(&mut self, k: &[u8], v: &[u8]) -> Result<bool> {
        match k.first() {
            Some(&keys::KEYREVS) => {
                if k.len() < 11 {
                    return Err(StoreError::Corrupt("index key".into()));
                }
                let group = &k[..k.len() - 8];
                if group != self.group.as_slice() {
                    self.group = group.to_vec();
                    self.kept_newest = false;
                }
                let rev = keys::keyrev_revision(k).ok_or_else(|| StoreError::Corrupt("index key".into()))?;
                if rev > self.at {
                    return Ok(true);
                }
                if self.kept_newest {
                    return Ok(false);
                }
                self.kept_newest = true;
                Ok(v.first() != Some(&keys::KIND_DELETE) || rev == self.at)
            }
            Some(&keys::REVS) => {
                let (rev, _) = keys::parse_rev(k).ok_or_else(|| StoreError::Corrupt("history key".into()))?;
                if rev > self.at {
                    return Ok(true);
                }
                let key = Event::decode(v)?
                    .kv
                    .ok_or_else(|| StoreError::Corrupt("event without kv".into()))?
                    .key;
                kept_at(&mut self.index, &key, rev, self.at)
            }
            _ => Ok(true),
        }
    }
}

/// Where the physical compaction stands between two of its batches. In memory only: a
/// restart begins the pass again, and finds what was deleted gone.
#[derive(Debug, Default)]
struct CompactionPass {
    /// The revision this pass compacts to; 0 while no pass is under way.
    at: i64,
    /// The first index entry not yet examined; None: the start of the index.
    from: Option<Vec<u8>>,
    /// The key (its index entries' common prefix) of the last entry examined.
    group: Vec<u8>,
    /// Whether that key's newest version at or below `at` was seen (it is kept).
    kept_newest: bool,
    /// That key's newest version at or below `at` when it is a deletion older than `at`
    /// (index key, revision, sub-revision): deleted in the batch that leaves the key,
    /// after every older version, so that no read at or above `at` sees an older version
    /// through it.
    tombstone: Option<(Vec<u8>, i64, u32)>,
    /// Versions this pass deleted so far.
    deleted: u64,
}

/// What one [`Mvcc::compact_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionStep {
    /// No compaction is pending.
    Idle,
    /// One batch written; the pass goes on.
    Progress { examined: usize, deleted: usize },
    /// The batch that ended a pass: compaction is physically complete up to `revision`
    /// (`deleted`: versions deleted over the whole pass).
    Finished { revision: i64, deleted: u64 },
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// A change of membership, as a conf change entry carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberChange {
    /// A new voter or learner (`is_learner`), or a learner promoted to voter (same ID).
    Add(Member),
    Remove(u64),
}

/// Where a snapshot of the state stands: the applied log position and the Raft conf
/// state as of it, all read from one consistent view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPoint {
    pub index: u64,
    pub term: u64,
    pub conf_state: Vec<u8>,
}

/// The MVCC key-value store.
pub struct Mvcc {
    db: Arc<DB>,
    /// Held shared by every read and exclusively while a snapshot from the leader replaces
    /// the state, so that no read sees a half-installed state.
    install: RwLock<()>,
    revision: AtomicI64,
    compact_revision: AtomicI64,
    /// The revision up to which compaction has physically finished (`META_COMPACT_DONE`).
    compact_done: AtomicI64,
    /// The physical compaction's position; held for a whole batch, and by an install
    /// (taken before the install lock) to start the next pass afresh on the new state.
    compaction: Mutex<CompactionPass>,
    applied_index: AtomicU64,
    /// Lease ID -> granted TTL in seconds. Bounded by the number of granted leases.
    leases: Mutex<BTreeMap<i64, i64>>,
    /// Serializes apply: the state machine has one writer, which alone uses the cache
    /// of newest versions it guards.
    apply_lock: Mutex<RefCell<LatestCache>>,
    interrupted_install: bool,
}

/// The in-memory part of the state, loaded from the database.
struct MemoryState {
    revision: i64,
    compact: i64,
    compact_done: i64,
    applied: u64,
    leases: BTreeMap<i64, i64>,
}

/// The state database's block cache: data, index and filter blocks.
pub const BLOCK_CACHE_BYTES: usize = 64 << 20;

fn block_cache_options() -> rocksdb::LruCacheOptions {
    let mut o = rocksdb::LruCacheOptions::default();
    o.set_capacity(BLOCK_CACHE_BYTES);
    // 16 shards of 4 MiB: few enough that one shard holds many partitions.
    o.set_num_shard_bits(4);
    o
}

/// Applies skip RocksDB's write-ahead log: the Raft log, fsynced before anything is
/// applied, already makes every entry durable, and after a crash the entries beyond the
/// state's durable applied index are applied again (applying is idempotent). Writing the
/// state to the WAL too would write every change twice. Closing the database flushes;
/// the log is truncated only after [`Mvcc::persist_applied`].
fn apply_write_options() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(false);
    wo.disable_wal(true);
    wo
}

fn load_memory_state(db: &DB) -> Result<MemoryState> {
    let view = View {
        db,
        snapshot: None,
        cache: None,
    };
    // As etcd, a new store is at revision 1: its first write makes revision 2, and
    // revision 0 keeps meaning "newest" / "unset" everywhere in the API.
    let revision = view.revision()?;
    let compact = view.meta(keys::META_COMPACT)?;
    let compact_done = view.compact_done()?;
    let applied = view.meta(keys::META_APPLIED)? as u64;
    let mut leases = BTreeMap::new();
    let mut it = view.iter(vec![keys::LEASE + 1]);
    it.seek([keys::LEASE]);
    while it.valid() {
        let Some(v) = it.value() else { break };
        let rec = LeaseRecord::decode(v)?;
        leases.insert(rec.id, rec.ttl_s);
        it.next();
    }
    it.status()?;
    Ok(MemoryState {
        revision,
        compact,
        compact_done,
        applied,
        leases,
    })
}

/// The column family of the history by revision (`r` keys).
const HISTORY_CF: &str = "history";

/// Memtable size of each of the two column families.
const MEMTABLE_BYTES_PER_FAMILY: usize = 32 << 20;

fn history_cf(db: &DB) -> &ColumnFamily {
    db.cf_handle(HISTORY_CF)
        .expect("the history column family is created when the store opens")
}

/// Stages the deletion of the whole state (both column families).
fn clear_state(wb: &mut WriteBatch, history: &ColumnFamily) {
    for (lo, hi) in keys::STATE_SPANS {
        wb.delete_range(lo, hi);
    }
    wb.delete_range_cf(history, [keys::REVS], [keys::REVS + 1]);
}

/// Moves the history an older store kept in the default column family into its own,
/// in batches; a crash in between repeats the copy (idempotent) before the deletion.
fn move_history_out_of_default(db: &DB) -> Result<()> {
    let history = history_cf(db);
    let upper = vec![keys::REVS + 1];
    let mut o = ReadOptions::default();
    o.set_iterate_upper_bound(upper.clone());
    let mut it = db.raw_iterator_opt(o);
    it.seek([keys::REVS]);
    if !it.valid() {
        it.status()?;
        return Ok(());
    }
    tracing::info!("moving the history of an older store layout into its own column family");
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    let mut wb = WriteBatch::default();
    let mut batch_bytes = 0usize;
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        batch_bytes += k.len() + v.len();
        wb.put_cf(history, k, v);
        if batch_bytes >= 4 << 20 {
            db.write_opt(std::mem::take(&mut wb), &wo)?;
            batch_bytes = 0;
        }
        it.next();
    }
    it.status()?;
    drop(it);
    wb.delete_range([keys::REVS], [keys::REVS + 1]);
    db.write_opt(wb, &wo)?;
    Ok(())
}

/// Deletes the newest-version records (`l`) an older store kept: nothing reads them, and
/// nothing would keep them current.
fn drop_obsolete_latest(db: &DB) -> Result<()> {
    let lo = [keys::OBSOLETE_LATEST];
    let hi = [keys::OBSOLETE_LATEST + 1];
    let mut o = ReadOptions::default();
    o.set_iterate_upper_bound(hi.to_vec());
    let mut it = db.raw_iterator_opt(o);
    it.seek(lo);
    let found = it.valid();
    it.status()?;
    drop(it);
    if found {
        tracing::info!("dropping the newest-version records of an older store layout");
        let mut wb = WriteBatch::default();
        wb.delete_range(lo, hi);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        db.write_opt(wb, &wo)?;
    }
    Ok(())
}

/// Fills the writer's cache with every live key's newest version, if they all fit: then
/// it is complete (see `latest`), and writes of new keys need no lookup. Stops at the
/// first entry that does not fit.
fn fill_latest_cache(db: &DB, cache: &mut LatestCache) -> Result<()> {
    cache.clear();
    let view = View {
        db,
        snapshot: None,
        cache: None,
    };
    let everything = KeyRange {
        start: Bytes::new(),
        end: None,
        single: false,
    };
    view.scan_latest(&everything, |kv| {
        cache.insert(kv.key.clone(), Some(kv));
        !cache.dropped()
    })?;
    if !cache.mark_complete() {
        tracing::info!(
            cached_keys = cache.len(),
            "the live keys do not fit the writer's cache; writes of keys it lacks look them up"
        );
    }
    Ok(())
}

fn snapshot_point(view: &View<'_>) -> Result<SnapshotPoint> {
    Ok(SnapshotPoint {
        index: view.meta(keys::META_APPLIED)? as u64,
        term: view.meta(keys::META_APPLIED_TERM)? as u64,
        conf_state: view.get(keys::META_CONF_STATE)?.unwrap_or_default(),
    })
}

impl Mvcc {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Mvcc> {
        Mvcc::open_with_cache_bytes(dir, LATEST_CACHE_BYTES_MAX)
    }

    /// [`Mvcc::open`] with another bound on the writer's cache of newest versions (tests
    /// use a tiny one to exercise its misses and evictions).
    pub fn open_with_cache_bytes(dir: &Path, cache_bytes_max: usize) -> Result<Mvcc> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        // No Bloom filters, in the memtable or the files: a key's newest version is found
        // by a seek in the per-key index, which whole-key filters cannot answer, and the
        // few point reads left (metadata, the history by revision) hit the memtable or
        // recent files. A filter would cost hashing on every insert and at every flush.
        let mut table = rocksdb::BlockBasedOptions::default();
        // Index blocks live in the block cache, so memory stays bounded however large the
        // history grows. Unpartitioned, one table's index is hundreds of KiB: bigger than
        // a cache shard's share, so it was evicted by data blocks and read back (and
        // decompressed) on every lookup, which made applying a put ~30x slower once the
        // state outgrew the memtable. Partitioned, it is read in 4 KiB pieces that stay
        // cached; the small top level of each is pinned.
        table.set_block_cache(&rocksdb::Cache::new_lru_cache_opts(&block_cache_options()));
        table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_metadata_block_size(4096);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_top_level_index_and_filter(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        opts.set_block_based_table_factory(&table);
        // The history by revision lives in a column family of its own: its keys only
        // ever grow, so its files never overlap and move down the levels without being
        // rewritten, where mixed with the per-key index (random keys) every file was
        // rewritten at every level. Applies skip the WAL, so the two must be flushed
        // together: the applied index (in the default family) may only become durable
        // with the history it covers.
        opts.create_missing_column_families(true);
        opts.set_atomic_flush(true);
        // Half of RocksDB's default memtable each: the two fill together (a put adds to
        // both), so they hold what one memtable of the default size held before.
        opts.set_write_buffer_size(MEMTABLE_BYTES_PER_FAMILY);
        let families = vec![
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, opts.clone()),
            ColumnFamilyDescriptor::new(HISTORY_CF, opts.clone()),
        ];
        let db = DB::open_cf_descriptors(&opts, dir, families)?;
        let interrupted = db.get(keys::META_INSTALLING)?.is_some();
        if interrupted {
            // A snapshot install was cut off: what is there is neither the old state nor
            // the new one. Start empty; the Raft layer asks for a snapshot again.
            tracing::warn!("an interrupted snapshot install left the state incomplete; clearing it");
            let mut wb = WriteBatch::default();
            clear_state(&mut wb, history_cf(&db));
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            db.write_opt(wb, &wo)?;
        }
        drop_obsolete_latest(&db)?;
        move_history_out_of_default(&db)?;
        let loaded = load_memory_state(&db)?;
        let mut cache = LatestCache::new(cache_bytes_max);
        fill_latest_cache(&db, &mut cache)?;
        Ok(Mvcc {
            db: Arc::new(db),
            install: RwLock::new(()),
            revision: AtomicI64::new(loaded.revision),
            compact_revision: AtomicI64::new(loaded.compact),
            compact_done: AtomicI64::new(loaded.compact_done),
            compaction: Mutex::new(CompactionPass::default()),
            applied_index: AtomicU64::new(loaded.applied),
            leases: Mutex::new(loaded.leases),
            apply_lock: Mutex::new(RefCell::new(cache)),
            interrupted_install: interrupted,
        })
    }

    /// Whether opening found (and cleared) the remains of an interrupted snapshot install.
    pub fn interrupted_install(&self) -> bool {
        self.interrupted_install
    }

    fn read_guard(&self) -> RwLockReadGuard<'_, ()> {
        self.install.read().expect("install lock poisoned")
    }

    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact_revision.load(Ordering::Acquire)
    }

    /// The revision up to which compaction has physically finished: the superseded
    /// versions at or below it are deleted. At most [`Mvcc::compact_revision`].
    pub fn compact_done_revision(&self) -> i64 {
        self.compact_done.load(Ordering::Acquire)
    }

    /// Whether a compaction waits for (or is in) its physical part.
    pub fn compaction_pending(&self) -> bool {
        self.compact_done_revision() < self.compact_revision()
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    fn snapshot_view(&self) -> View<'_> {
        View {
            db: &self.db,
            snapshot: Some(self.db.snapshot()),
            cache: None,
        }
    }

    /// The writer's view: the live database, with the cache of newest versions that the
    /// apply lock guards.
    fn writer_view<'a>(&'a self, cache: &'a RefCell<LatestCache>) -> View<'a> {
        View {
            db: &self.db,
            snapshot: None,
            cache: Some(cache),
        }
    }

    // ---- reads ----------------------------------------------------------------------

    /// A Range request outside a transaction, on a consistent snapshot.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        check_range(req)?;
        let _g = self.read_guard();
        let view = self.snapshot_view();
        let current = view.revision()?;
        let compacted = view.meta(keys::META_COMPACT)?;
        range_on(&view, req, current, compacted, None)
    }

    /// Leases known to the state machine, with their granted TTL (seconds).
    pub fn leases(&self) -> Vec<(i64, i64)> {
        self.leases
            .lock()
            .expect("lease table lock poisoned")
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    pub fn lease_ttl(&self, id: i64) -> Option<i64> {
        self.leases.lock().expect("lease table lock poisoned").get(&id).copied()
    }

    /// Keys attached to a lease, at most `max` of them.
    pub fn lease_keys(&self, id: i64, max: usize) -> Result<Vec<Bytes>> {
        let _g = self.read_guard();
        let view = self.snapshot_view();
        let prefix = keys::attach_prefix(id);
        let upper = keys::prefix_end(&prefix).unwrap_or_else(|| vec![keys::ATTACH + 1]);
        let mut it = view.iter(upper);
        it.seek(&prefix);
        let mut out = Vec::new();
        while it.valid() && out.len() < max {
            let Some(k) = it.key() else { break };
            out.push(Bytes::copy_from_slice(&k[prefix.len()..]));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// The events of revisions `from..=to`, in order, grouped by revision, with prev_kv
    /// when `with_prev` (and not compacted). Stops after `events_max` events, at a revision
    /// boundary. Fails with Compacted if `from` is below the compacted revision.
    pub fn events(&self, from: i64, to: i64, with_prev: bool, events_max: usize) -> Result<Vec<(i64, Vec<Event>)>> {
        let _g = self.read_guard();
        let view = self.snapshot_view();
        let compacted = view.meta(keys::META_COMPACT)?;
        if from < compacted {
            return Err(StoreError::Compacted);
        }
        let mut out: Vec<(i64, Vec<Event>)> = Vec::new();
        let mut count = 0usize;
        let mut it = view.history_iter(keys::rev(to.saturating_add(1), 0));
        it.seek(keys::rev(from, 0));
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            let (rev, _) = keys::parse_rev(k).ok_or_else(|| StoreError::Corrupt("history key".into()))?;
            if count >= events_max && out.last().is_some_and(|(r, _)| *r != rev) {
                break;
            }
            let mut ev = Event::decode(v)?;
            if with_prev {
                if let Some(kv) = &ev.kv {
                    ev.prev_kv = view.prev_version(&kv.key, rev, compacted)?;
                }
            }
            match out.last_mut() {
                Some((r, evs)) if *r == rev => evs.push(ev),
                _ => out.push((rev, vec![ev])),
            }
            count += 1;
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// etcd's HashKV: a hash of the history up to `rev` (0 = newest), the records of the
    /// history by revision in order. Returns (hash, compact revision, hashed revision).
    ///
    /// As etcd's, it hashes what a finished compaction keeps: every version above the
    /// compacted revision, and at or below it only each key's newest version (not a
    /// deletion older than the compacted revision). So members agree whatever their
    /// compactor has deleted so far; once compaction is complete that is everything
    /// there, and the check of each older version against the index is skipped.
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64, i64)> {
        let _g = self.read_guard();
        let view = self.snapshot_view();
        let current = view.revision()?;
        let compacted = view.meta(keys::META_COMPACT)?;
        let rev = if rev <= 0 { current } else { rev };
        if rev > current {
            return Err(StoreError::FutureRevision);
        }
        if rev < compacted {
            return Err(StoreError::Compacted);
        }
        let pending = view.compact_done()? < compacted;
        let mut index = view.iter(vec![keys::KEYREVS + 1]);
        let mut h = crc32fast::Hasher::new();
        let mut it = view.history_iter(keys::rev(rev.saturating_add(1), 0));
        it.seek([keys::REVS]);
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if pending {
                let (r, _) = keys::parse_rev(k).ok_or_else(|| StoreError::Corrupt("history key".into()))?;
                if r <= compacted {
                    let key = Event::decode(v)?
                        .kv
                        .ok_or_else(|| StoreError::Corrupt("event without kv".into()))?
                        .key;
                    if !kept_at(&mut index, &key, r, compacted)? {
                        it.next();
                        continue;
                    }
                }
            }
            h.update(k);
            h.update(v);
            it.next();
        }
        it.status()?;
        Ok((h.finalize(), compacted, rev))
    }

    /// How many versions of keys the history holds (what compaction shrinks).
    pub fn history_entries(&self) -> Result<u64> {
        let view = self.snapshot_view();
        let mut it = view.history_iter(vec![keys::REVS + 1]);
        it.seek([keys::REVS]);
        let mut n = 0;
        while it.valid() {
            n += 1;
            it.next();
        }
        it.status()?;
        Ok(n)
    }

    /// Physical size of the database files, and the estimate of live data, in bytes.
    pub fn db_size(&self) -> (i64, i64) {
        let history = history_cf(&self.db);
        let prop = |name: &str| {
            let default = self.db.property_int_value(name).ok().flatten().unwrap_or(0);
            let history = self.db.property_int_value_cf(history, name).ok().flatten().unwrap_or(0);
            (default + history) as i64
        };
        let total = prop("rocksdb.total-sst-files-size") + prop("rocksdb.size-all-mem-tables");
        let live = prop("rocksdb.estimate-live-data-size") + prop("rocksdb.cur-size-all-mem-tables");
        (total, live)
    }

    /// Compacts RocksDB's files (etcd's Defragment).
    pub fn defragment(&self) {
        self.db.compact_range::<&[u8], &[u8]>(None, None);
        self.db
            .compact_range_cf::<&[u8], &[u8]>(history_cf(&self.db), None, None);
    }

    /// A consistent export of the state (everything but the log), as (key, value) records
    /// handed to `f` in key order, and the revision it was taken at.
    pub fn export(&self, f: impl FnMut(&[u8], &[u8]) -> bool) -> Result<i64> {
        self.export_at(f).map(|(rev, _)| rev)
    }

    /// [`Mvcc::export`], also returning where the exported state stands in the log.
    ///
    /// The state goes out as a finished compaction leaves it: while one is pending, the
    /// versions it supersedes are left out and `META_COMPACT_DONE` goes out equal to the
    /// compacted revision. So a snapshot's content (and its hash) does not depend on how
    /// far this member's compactor got, and the member installing it has nothing left to
    /// delete.
    pub fn export_at(&self, mut f: impl FnMut(&[u8], &[u8]) -> bool) -> Result<(i64, SnapshotPoint)> {
        let _g = self.read_guard();
        let view = self.snapshot_view();
        let rev = view.revision()?;
        let point = snapshot_point(&view)?;
        let compacted = view.meta(keys::META_COMPACT)?;
        let mut pending = (view.compact_done()? < compacted).then(|| CompactedExport {
            at: compacted,
            index: view.iter(vec![keys::KEYREVS + 1]),
            group: Vec::new(),
            kept_newest: false,
        });
        let compacted_bytes = compacted.to_be_bytes();
        // In key order: the default column family below the history's prefix, the
        // history, then the rest of the default column family.
        let reading = || {
            let mut o = view.opts();
            o.fill_cache(false);
            o
        };
        let below = self
            .db
            .iterator_opt(IteratorMode::From(&[keys::ATTACH], Direction::Forward), reading())
            .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.first() < Some(&keys::REVS)));
        let history = self.db.iterator_cf_opt(
            history_cf(&self.db),
            reading(),
            IteratorMode::From(&[keys::REVS], Direction::Forward),
        );
        let above = self
            .db
            .iterator_opt(IteratorMode::From(&[keys::REVS + 1], Direction::Forward), reading());
        for item in below.chain(history).chain(above) {
            let (k, v) = item?;
            if !keys::is_state(&k) {
                continue;
            }
            let v: &[u8] = match &mut pending {
                Some(p) => {
                    if !p.keep(&k, &v)? {
                        continue;
                    }
                    if k.as_ref() == keys::META_COMPACT_DONE {
                        &compacted_bytes
                    } else {
                        &v
                    }
                }
                None => &v,
            };
            if !f(&k, v) {
                break;
            }
        }
        Ok((rev, point))
    }

    /// Where the state stands now, for the metadata of a Raft snapshot.
    pub fn snapshot_point(&self) -> Result<SnapshotPoint> {
        let _g = self.read_guard();
        snapshot_point(&self.snapshot_view())
    }

    /// Whether `id` was a member and was removed from the cluster.
    pub fn is_removed(&self, id: u64) -> Result<bool> {
        Ok(self.db.get(keys::removed(id))?.is_some())
    }

    /// The members of the cluster, in ID order.
    pub fn members(&self) -> Result<Vec<Member>> {
        let _g = self.read_guard();
        let view = self.snapshot_view();
        let mut it = view.iter(keys::prefix_end(keys::MEMBER_PREFIX).expect("the member prefix has an end"));
        it.seek(keys::MEMBER_PREFIX);
        let mut out = Vec::new();
        while it.valid() {
            let Some(v) = it.value() else { break };
            out.push(Member::decode(v)?);
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Replaces the whole state with the records of a snapshot (as [`Mvcc::export`] hands
    /// them out), atomically as far as readers and crashes are concerned: readers wait,
    /// and a crash in the middle leaves a state marked incomplete, which
    /// [`Mvcc::open`] refuses (the member then needs a fresh snapshot).
    pub fn install(&self, mut next: impl FnMut() -> Result<Option<(Vec<u8>, Vec<u8>)>>) -> Result<()> {
        let apply = self.apply_lock.lock().expect("apply lock poisoned");
        // Whatever happens below, the cached versions are of the state being replaced,
        // and a compaction pass under way walked it: the next one starts on the new state.
        apply.borrow_mut().clear();
        let mut compaction = self.compaction.lock().expect("compaction lock poisoned");
        *compaction = CompactionPass::default();
        let _g = self.install.write().expect("install lock poisoned");
        let history = history_cf(&self.db);
        let mut wb = WriteBatch::default();
        clear_state(&mut wb, history);
        wb.put(keys::META_INSTALLING, [1]);
        self.db.write(wb)?;
        let mut wb = WriteBatch::default();
        let mut batch_bytes = 0usize;
        while let Some((k, v)) = next()? {
            if !keys::is_state(&k) || k.as_slice() == keys::META_INSTALLING {
                return Err(StoreError::Corrupt("a snapshot record outside the state".into()));
            }
            if k.first() == Some(&keys::OBSOLETE_LATEST) {
                // From a member of an older layout (see `keys`).
                continue;
            }
            batch_bytes += k.len() + v.len();
            if k.first() == Some(&keys::REVS) {
                wb.put_cf(history, k, v);
            } else {
                wb.put(k, v);
            }
            if batch_bytes >= 4 << 20 {
                self.db.write(std::mem::take(&mut wb))?;
                batch_bytes = 0;
            }
        }
        wb.delete(keys::META_INSTALLING);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(wb, &wo)?;
        let loaded = load_memory_state(&self.db)?;
        fill_latest_cache(&self.db, &mut apply.borrow_mut())?;
        self.revision.store(loaded.revision, Ordering::Release);
        self.compact_revision.store(loaded.compact, Ordering::Release);
        self.compact_done.store(loaded.compact_done, Ordering::Release);
        self.applied_index.store(loaded.applied, Ordering::Release);
        *self.leases.lock().expect("lease table lock poisoned") = loaded.leases;
        drop(compaction);
        Ok(())
    }

    // ---- apply ----------------------------------------------------------------------

    /// Applies log entry `index` (of Raft term 0: for tests and tools without Raft). A
    /// compaction it applies is also finished physically ([`Mvcc::compact_physically`])
    /// before it returns, since no compactor runs beside such a caller.
    pub fn apply(&self, index: u64, cmd: &Command) -> Result<Applied> {
        let applied = self
            .apply_entry(index, 0, cmd)?
            .ok_or_else(|| StoreError::InvalidRequest(format!("log entry {index} was applied before")))?;
        if applied.compacted.is_some() {
            self.compact_physically()?;
        }
        Ok(applied)
    }

    // ---- physical compaction --------------------------------------------------------

    /// One batch of the physical compaction (see the module docs): examines at most
    /// `entries_max` entries of the per-key index from where the previous batch stopped,
    /// and deletes in one RocksDB write the versions the pass's compaction supersedes.
    /// The batch that reaches the end of the index records the pass's revision as done.
    /// Runs beside apply and reads (it holds neither the apply lock nor a snapshot: what
    /// it deletes is invisible to both); batches must not run concurrently with each
    /// other, which the compaction lock ensures.
    pub fn compact_step(&self, entries_max: usize) -> Result<CompactionStep> {
        let mut pass = self.compaction.lock().expect("compaction lock poisoned");
        let _g = self.read_guard();
        if pass.at == 0 {
            let compact = self.compact_revision();
            if self.compact_done_revision() >= compact {
                return Ok(CompactionStep::Idle);
            }
            *pass = CompactionPass {
                at: compact,
                ..CompactionPass::default()
            };
        }
        let at = pass.at;
        let history = history_cf(&self.db);
        let mut o = ReadOptions::default();
        // A walk over the whole index: it should not push the hot blocks out of the cache.
        o.fill_cache(false);
        o.set_iterate_upper_bound(vec![keys::KEYREVS + 1]);
        let mut it = self.db.raw_iterator_opt(o);
        match &pass.from {
            Some(from) => it.seek(from),
            None => it.seek([keys::KEYREVS]),
        }
        let mut wb = WriteBatch::default();
        let (mut examined, mut deleted) = (0usize, 0usize);
        let entries_max = entries_max.max(1);
        while examined < entries_max {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if k.len() < 11 {
                return Err(StoreError::Corrupt("index key".into()));
            }
            let group = &k[..k.len() - 8];
            if group != pass.group.as_slice() {
                if let Some((key, rev, sub)) = pass.tombstone.take() {
                    wb.delete(key);
                    wb.delete_cf(history, keys::rev(rev, sub));
                    deleted += 1;
                }
                pass.group = group.to_vec();
                pass.kept_newest = false;
            }
            let rev = keys::keyrev_revision(k).ok_or_else(|| StoreError::Corrupt("index key".into()))?;
            if rev <= at {
                let sub = index_sub(v)?;
                if !pass.kept_newest {
                    pass.kept_newest = true;
                    if v.first() == Some(&keys::KIND_DELETE) && rev < at {
                        pass.tombstone = Some((k.to_vec(), rev, sub));
                    }
                } else {
                    wb.delete(k);
                    wb.delete_cf(history, keys::rev(rev, sub));
                    deleted += 1;
                }
            }
            examined += 1;
            it.next();
        }
        let finished = match it.key() {
            Some(next) => {
                pass.from = Some(next.to_vec());
                false
            }
            None => {
                it.status()?;
                true
            }
        };
        drop(it);
        if finished {
            if let Some((key, rev, sub)) = pass.tombstone.take() {
                wb.delete(key);
                wb.delete_cf(history, keys::rev(rev, sub));
                deleted += 1;
            }
            wb.put(keys::META_COMPACT_DONE, at.to_be_bytes());
        }
        // As applies: without the WAL. A crash loses a suffix of the batches, the marker
        // with them (flushes are atomic and in order), and the pass is done again.
        self.db.write_opt(wb, &apply_write_options())?;
        pass.deleted += deleted as u64;
        if !finished {
            return Ok(CompactionStep::Progress { examined, deleted });
        }
        let total = pass.deleted;
        *pass = CompactionPass::default();
        self.compact_done.store(at, Ordering::Release);
        Ok(CompactionStep::Finished {
            revision: at,
            deleted: total,
        })
    }

    /// Runs [`Mvcc::compact_step`] until no compaction is pending: for tools and tests,
    /// and [`Mvcc::apply`]. A member's node paces the steps on a thread of its own.
    pub fn compact_physically(&self) -> Result<()> {
        while self.compact_step(COMPACTION_BATCH_ENTRIES_MAX)? != CompactionStep::Idle {}
        Ok(())
    }

    /// Applies log entry `index` of Raft term `term`. An `Err` is a storage failure, after
    /// which the store must not be used; a rejected command is an `Ok` with an error
    /// response. An entry at or below the applied index was applied before (the applied
    /// index is written atomically with the state) and is skipped: `Ok(None)`.
    pub fn apply_entry(&self, index: u64, term: u64, cmd: &Command) -> Result<Option<Applied>> {
        let cache = self.apply_lock.lock().expect("apply lock poisoned");
        if index <= self.applied_index() {
            return Ok(None);
        }
        let view = self.writer_view(&cache);
        let begin = self.revision();
        let mut tx = WriteTxn::new(&view, begin, self.compact_revision());
        let mut compacted = None;
        let mut lease_change: Option<(i64, Option<i64>)> = None;
        let response = match &cmd.op {
            None => Err(StoreError::InvalidRequest("empty command".into())),
            Some(command::Op::Put(p)) => self
                .check_put(&view, p)
                .and_then(|()| tx.put(p))
                .map(CommandResponse::Put),
            Some(command::Op::DeleteRange(d)) => tx.delete_range(d).map(CommandResponse::DeleteRange),
            Some(command::Op::Txn(t)) => self.apply_txn(&view, &mut tx, t).map(CommandResponse::Txn),
            Some(command::Op::Compaction(c)) => match tx.compact(c) {
                Ok(r) => {
                    compacted = Some(c.revision);
                    Ok(CommandResponse::Compaction(r))
                }
                Err(e) => Err(e),
            },
            Some(command::Op::LeaseGrant(g)) => match self.lease_grant(&mut tx, g) {
                Ok(r) => {
                    lease_change = Some((g.id, Some(r.ttl)));
                    Ok(CommandResponse::LeaseGrant(r))
                }
                Err(e) => Err(e),
            },
            Some(command::Op::LeaseRevoke(r)) => match self.lease_revoke(&view, &mut tx, r) {
                Ok(resp) => {
                    lease_change = Some((r.id, None));
                    Ok(CommandResponse::LeaseRevoke(resp))
                }
                Err(e) => Err(e),
            },
            Some(command::Op::MemberAttributes(a)) => member_attributes(&view, &mut tx, a),
        };
        // A rejected command writes nothing but still consumes its log index.
        let (mut batch, changed, events, revision) = match response {
            Ok(_) => tx.finish(),
            Err(_) => (WriteBatch::default(), BTreeMap::new(), Vec::new(), begin),
        };
        batch.put(keys::META_APPLIED, (index as i64).to_be_bytes());
        batch.put(keys::META_APPLIED_TERM, (term as i64).to_be_bytes());
        self.db.write_opt(batch, &apply_write_options())?;
        remember(&cache, changed);
        self.revision.store(revision, Ordering::Release);
        self.applied_index.store(index, Ordering::Release);
        if let Some(c) = compacted {
            self.compact_revision.store(c, Ordering::Release);
        }
        if let Some((id, ttl)) = lease_change {
            let mut leases = self.leases.lock().expect("lease table lock poisoned");
            match ttl {
                Some(ttl) => leases.insert(id, ttl),
                None => leases.remove(&id),
            };
        }
        Ok(Some(Applied {
            response,
            revision,
            events,
            compacted,
        }))
    }

    /// Applies a run of consecutive log entries that are all puts, `(index, term, put)`
    /// in log order, as one atomic RocksDB write. The result is the same as applying each
    /// with [`Mvcc::apply_entry`] (one revision per accepted put, a rejected one consumes
    /// its index only), but the keys' newest versions are looked up in one batched read
    /// and the run costs one write instead of one per entry: under load most of what the
    /// log commits together is puts. Entries at or below the applied index give `None`.
    pub fn apply_puts(&self, entries: &[(u64, u64, &PutRequest)]) -> Result<Vec<Option<Applied>>> {
        let cache = self.apply_lock.lock().expect("apply lock poisoned");
        let applied_before = self.applied_index();
        let begin = self.revision();
        let compacted = self.compact_revision();
        let view = self.writer_view(&cache);
        // The overlay holds every key's newest version as the run goes: looked up once
        // (most often in the writer's cache), then replaced by each put.
        let mut overlay = BTreeMap::new();
        for (_, _, p) in entries.iter().filter(|(index, ..)| *index > applied_before) {
            if !overlay.contains_key(&p.key) {
                overlay.insert(p.key.clone(), view.latest(&p.key)?);
            }
        }
        let mut batch = WriteBatch::default();
        let mut revision = begin;
        let mut last = None;
        let mut out = Vec::with_capacity(entries.len());
        for &(index, term, p) in entries {
            if index <= applied_before {
                out.push(None);
                continue;
            }
            assert!(
                last.is_none_or(|(l, _)| index > l),
                "apply_puts: entries out of log order"
            );
            let mut tx = WriteTxn::resume(&view, revision, compacted, batch, overlay);
            let response = self
                .check_put_with(p, |k| tx.latest(k))
                .and_then(|()| tx.put(p))
                .map(CommandResponse::Put);
            let (b, o, events, rev) = tx.into_parts();
            (batch, overlay, revision) = (b, o, rev);
            out.push(Some(Applied {
                response,
                revision,
                events,
                compacted: None,
            }));
            last = Some((index, term));
        }
        let Some((index, term)) = last else {
            return Ok(out);
        };
        if revision != begin {
            batch.put(keys::META_REVISION, revision.to_be_bytes());
        }
        batch.put(keys::META_APPLIED, (index as i64).to_be_bytes());
        batch.put(keys::META_APPLIED_TERM, (term as i64).to_be_bytes());
        self.db.write_opt(batch, &apply_write_options())?;
        remember(&cache, overlay);
        self.revision.store(revision, Ordering::Release);
        self.applied_index.store(index, Ordering::Release);
        Ok(out)
    }

    /// Applies a log entry that carries no command (a new leader's empty entry) or a
    /// membership change with the Raft conf state after it (opaque bytes here). Skipped
    /// when applied before, like [`Mvcc::apply_entry`].
    pub fn apply_meta(&self, index: u64, term: u64, change: Option<(&MemberChange, &[u8])>) -> Result<()> {
        let _guard = self.apply_lock.lock().expect("apply lock poisoned");
        if index <= self.applied_index() {
            return Ok(());
        }
        let mut wb = WriteBatch::default();
        if let Some((change, conf_state)) = change {
            match change {
                MemberChange::Add(m) => {
                    let mut m = m.clone();
                    // A promotion keeps what the member published about itself.
                    if let Some(old) = self.db.get(keys::member(m.id))? {
                        let old = Member::decode(old.as_slice())?;
                        if m.name.is_empty() {
                            m.name = old.name;
                        }
                        if m.client_urls.is_empty() {
                            m.client_urls = old.client_urls;
                        }
                        if m.peer_urls.is_empty() {
                            m.peer_urls = old.peer_urls;
                        }
                    }
                    wb.put(keys::member(m.id), m.encode_to_vec());
                    wb.delete(keys::removed(m.id));
                }
                MemberChange::Remove(id) => {
                    wb.delete(keys::member(*id));
                    wb.put(keys::removed(*id), b"");
                }
            }
            wb.put(keys::META_CONF_STATE, conf_state);
        }
        wb.put(keys::META_APPLIED, (index as i64).to_be_bytes());
        wb.put(keys::META_APPLIED_TERM, (term as i64).to_be_bytes());
        self.db.write_opt(wb, &apply_write_options())?;
        self.applied_index.store(index, Ordering::Release);
        Ok(())
    }

    /// Makes everything applied so far durable (flushes the memtable, which applies
    /// bypass the write-ahead log for); returns the applied index that is now durable.
    /// Called before the log is truncated, since entries after the durable applied index
    /// are what a restart replays.
    pub fn persist_applied(&self) -> Result<u64> {
        let applied = self.applied_index();
        self.flush(true)?;
        Ok(applied)
    }

    /// Starts making everything applied so far durable without waiting; returns the
    /// applied index that will be durable once [`Mvcc::flushes_done`] says so. Lets the
    /// raft thread truncate the log without stalling on a memtable flush.
    pub fn start_persist_applied(&self) -> Result<u64> {
        let applied = self.applied_index();
        self.flush(false)?;
        Ok(applied)
    }

    /// Flushes both column families' memtables together (atomic flush).
    fn flush(&self, wait: bool) -> Result<()> {
        let mut fo = rocksdb::FlushOptions::default();
        fo.set_wait(wait);
        let default = self
            .db
            .cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
            .expect("the default column family always exists");
        self.db.flush_cfs_opt(&[default, history_cf(&self.db)], &fo)?;
        Ok(())
    }

    /// The applied index that is on disk: the one the last memtable flush carried.
    /// Entries after it are applied again from the log after a crash.
    pub fn durable_applied_index(&self) -> Result<u64> {
        let mut o = ReadOptions::default();
        // Applies bypass the WAL, so the persisted tier is exactly what flushes wrote.
        o.set_read_tier(rocksdb::ReadTier::Persisted);
        let v = self.db.get_opt(keys::META_APPLIED, &o)?;
        Ok(match v {
            None => 0,
            Some(v) => {
                let b: [u8; 8] = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("applied index".into()))?;
                i64::from_be_bytes(b) as u64
            }
        })
    }

    fn check_put(&self, view: &View<'_>, p: &PutRequest) -> Result<()> {
        self.check_put_with(p, |k| view.latest(k))
    }

    /// Rejects a put that needs the key to exist (`ignore_value`, `ignore_lease`) when it
    /// does not, or that names a lease that does not exist. `latest` looks a key up.
    fn check_put_with(&self, p: &PutRequest, latest: impl FnOnce(&[u8]) -> Result<Option<KeyValue>>) -> Result<()> {
        if (p.ignore_value || p.ignore_lease) && latest(&p.key)?.is_none() {
            return Err(StoreError::KeyNotFound);
        }
        if p.lease != 0 && !p.ignore_lease && self.lease_ttl(p.lease).is_none() {
            return Err(StoreError::LeaseNotFound);
        }
        Ok(())
    }

    fn apply_txn(&self, view: &View<'_>, tx: &mut WriteTxn<'_, '_>, t: &TxnRequest) -> Result<TxnResponse> {
        // As etcd: every compare, nested ones included, is evaluated on the state before
        // the transaction; then the chosen path is checked, then executed.
        let path = txn_path(view, t)?;
        self.check_path(view, t, &path, &mut 0)?;
        tx.txn(t, &path, &mut 0)
    }

    fn check_path(&self, view: &View<'_>, t: &TxnRequest, path: &[bool], at: &mut usize) -> Result<()> {
        let ok = path[*at];
        *at += 1;
        for op in if ok { &t.success } else { &t.failure } {
            match &op.request {
                Some(request_op::Request::RequestPut(p)) => self.check_put(view, p)?,
                Some(request_op::Request::RequestTxn(n)) => self.check_path(view, n, path, at)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn lease_grant(&self, tx: &mut WriteTxn<'_, '_>, g: &LeaseGrantRequest) -> Result<LeaseGrantResponse> {
        if g.id == 0 {
            return Err(StoreError::InvalidRequest(
                "lease ID must be chosen before proposing".into(),
            ));
        }
        if g.ttl > LEASE_TTL_MAX_S {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        if self.lease_ttl(g.id).is_some() {
            return Err(StoreError::LeaseExists);
        }
        let rec = LeaseRecord { id: g.id, ttl_s: g.ttl };
        tx.batch.put(keys::lease(g.id), rec.encode_to_vec());
        Ok(LeaseGrantResponse {
            header: header(tx.begin),
            id: g.id,
            ttl: g.ttl,
            error: String::new(),
        })
    }

    fn lease_revoke(
        &self,
        view: &View<'_>,
        tx: &mut WriteTxn<'_, '_>,
        r: &LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse> {
        if self.lease_ttl(r.id).is_none() {
            return Err(StoreError::LeaseNotFound);
        }
        let prefix = keys::attach_prefix(r.id);
        let upper = keys::prefix_end(&prefix).unwrap_or_else(|| vec![keys::ATTACH + 1]);
        let mut it = view.iter(upper);
        it.seek(&prefix);
        let mut attached = Vec::new();
        while it.valid() {
            let Some(k) = it.key() else { break };
            attached.push(Bytes::copy_from_slice(&k[prefix.len()..]));
            it.next();
        }
        it.status()?;
        for key in attached {
            tx.delete_key(&key)?;
        }
        tx.batch.delete(keys::lease(r.id));
        let rev = tx.current_rev();
        Ok(LeaseRevokeResponse { header: header(rev) })
    }
}

/// Records what a member published about itself; a member no longer in the cluster is
/// ignored. Answers like an empty put (no revision is made).
fn member_attributes(view: &View<'_>, tx: &mut WriteTxn<'_, '_>, a: &MemberAttributes) -> Result<CommandResponse> {
    if let Some(old) = view.get(&keys::member(a.id))? {
        let mut m = Member::decode(old.as_slice())?;
        m.name = a.name.clone();
        m.client_urls = a.client_urls.clone();
        tx.batch.put(keys::member(a.id), m.encode_to_vec());
    }
    Ok(CommandResponse::Member)
}

/// Evaluates every compare of `t` and its nested transactions, depth first in the order
/// they would execute, on the pre-transaction state.
fn txn_path(view: &View<'_>, t: &TxnRequest) -> Result<Vec<bool>> {
    let mut path = Vec::new();
    fn walk(view: &View<'_>, t: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
        let mut ok = true;
        for c in &t.compare {
            if !compare_holds(view, c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let Some(request_op::Request::RequestTxn(n)) = &op.request {
                walk(view, n, path)?;
            }
        }
        Ok(())
    }
    walk(view, t, &mut path)?;
    Ok(path)
}

fn compare_holds(view: &View<'_>, c: &Compare) -> Result<bool> {
    let r = KeyRange::new(&c.key, &c.range_end);
    let mut kvs = Vec::new();
    view.scan_latest(&r, |kv| {
        kvs.push(kv);
        true
    })?;
    if kvs.is_empty() {
        if c.target() == compare::CompareTarget::Value {
            return Ok(false);
        }
        return Ok(compare_kv(c, &KeyValue::default()));
    }
    Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let ord = match c.target() {
        CompareTarget::Value => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_ref().cmp(want)
        }
        t => {
            let (have, want) = match (t, &c.target_union) {
                (CompareTarget::Version, Some(TargetUnion::Version(v))) => (kv.version, *v),
                (CompareTarget::Version, _) => (kv.version, 0),
                (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => (kv.create_revision, *v),
                (CompareTarget::Create, _) => (kv.create_revision, 0),
                (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => (kv.mod_revision, *v),
                (CompareTarget::Mod, _) => (kv.mod_revision, 0),
                (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => (kv.lease, *v),
                (CompareTarget::Lease, _) => (kv.lease, 0),
                (CompareTarget::Value, _) => unreachable!("value handled above"),
            };
            have.cmp(&want)
        }
    };
    match c.result() {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}

/// Request checks etcd makes before a Range reaches the store.
fn check_range(req: &RangeRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    Ok(())
}

/// The checks etcd makes on a write request before proposing it: sizes of transactions,
/// empty keys, conflicting options, and the same key written twice in one transaction.
pub fn check_command(cmd: &Command) -> Result<()> {
    match &cmd.op {
        Some(command::Op::Put(p)) => check_put_request(p),
        Some(command::Op::DeleteRange(d)) if d.key.is_empty() => Err(StoreError::EmptyKey),
        Some(command::Op::Txn(t)) => {
            check_txn_request(t)?;
            for ops in [&t.success, &t.failure] {
                check_intervals(ops)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn check_put_request(p: &PutRequest) -> Result<()> {
    if p.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(StoreError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(StoreError::LeaseProvided);
    }
    Ok(())
}

fn check_txn_request(t: &TxnRequest) -> Result<()> {
    if t.compare.len() > TXN_OPS_MAX || t.success.len() > TXN_OPS_MAX || t.failure.len() > TXN_OPS_MAX {
        return Err(StoreError::TooManyOps);
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) => check_range(r)?,
            Some(request_op::Request::RequestPut(p)) => check_put_request(p)?,
            Some(request_op::Request::RequestDeleteRange(d)) if d.key.is_empty() => return Err(StoreError::EmptyKey),
            Some(request_op::Request::RequestTxn(n)) => check_txn_request(n)?,
            Some(_) => {}
            None => return Err(StoreError::InvalidRequest("empty request op in txn".into())),
        }
    }
    Ok(())
}

/// Returns the delete ranges and put keys of a branch, failing on a key written twice.
fn check_intervals(ops: &[RequestOp]) -> Result<(Vec<KeyRange>, HashSet<Bytes>)> {
    let mut dels = Vec::new();
    let mut puts = HashSet::new();
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestDeleteRange(d)) => dels.push(KeyRange::new(&d.key, &d.range_end)),
            Some(request_op::Request::RequestPut(p)) if !puts.insert(p.key.clone()) => {
                return Err(StoreError::DuplicateKey);
            }
            _ => {}
        }
    }
    for op in ops {
        if let Some(request_op::Request::RequestTxn(n)) = &op.request {
            let (sd, sp) = check_intervals(&n.success)?;
            let (fd, fp) = check_intervals(&n.failure)?;
            for p in sp.iter().chain(&fp) {
                if puts.contains(p) || dels.iter().any(|d| d.contains(p)) {
                    return Err(StoreError::DuplicateKey);
                }
            }
            for d in sd.iter().chain(&fd) {
                if puts.iter().any(|p| d.contains(p)) {
                    return Err(StoreError::DuplicateKey);
                }
            }
            puts.extend(sp);
            puts.extend(fp);
            dels.extend(sd);
            dels.extend(fd);
        }
    }
    for p in &puts {
        if dels.iter().any(|d| d.contains(p)) {
            return Err(StoreError::DuplicateKey);
        }
    }
    Ok((dels, puts))
}

/// Answers a Range on `view` whose newest revision is `current`. `overlay` holds the
/// writes of the enclosing transaction, which reads at the newest revision must see.
fn range_on(
    view: &View<'_>,
    req: &RangeRequest,
    current: i64,
    compacted: i64,
    overlay: Option<&BTreeMap<Bytes, Option<KeyValue>>>,
) -> Result<RangeResponse> {
    let rev = if req.revision <= 0 { current } else { req.revision };
    if rev > current {
        return Err(StoreError::FutureRevision);
    }
    if rev < compacted {
        return Err(StoreError::Compacted);
    }
    use range_request::{SortOrder, SortTarget};
    let mut order = req.sort_order();
    let target = req.sort_target();
    if target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    } else if target == SortTarget::Key && order == SortOrder::Ascend {
        order = SortOrder::None;
    }
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // Fetch one more than the limit to know whether there are more; sorting and filters
    // need everything.
    let fetch = if order != SortOrder::None || filtered || req.limit <= 0 {
        usize::MAX
    } else {
        req.limit as usize + 1
    };
    let r = KeyRange::new(&req.key, &req.range_end);
    let mut kvs: Vec<KeyValue> = Vec::new();
    let mut count: i64 = 0;
    let mut collect = |kv: KeyValue| {
        count += 1;
        if !req.count_only && kvs.len() < fetch {
            kvs.push(kv);
        }
        true
    };
    match overlay {
        Some(ov) if rev == current && !ov.is_empty() => {
            let mut merged: BTreeMap<Bytes, KeyValue> = BTreeMap::new();
            view.scan_latest(&r, |kv| {
                merged.insert(kv.key.clone(), kv);
                true
            })?;
            for (k, v) in ov.iter().filter(|(k, _)| r.contains(k)) {
                match v {
                    Some(kv) => merged.insert(k.clone(), kv.clone()),
                    None => merged.remove(k),
                };
            }
            merged.into_values().for_each(|kv| {
                collect(kv);
            });
        }
        _ if rev == current => view.scan_latest(&r, collect)?,
        _ => view.scan_at(&r, rev, collect)?,
    }
    if filtered {
        kvs.retain(|kv| {
            (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        });
    }
    if order != SortOrder::None {
        match target {
            SortTarget::Key => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
            SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
            SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
            SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
            SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
        }
        if order == SortOrder::Descend {
            kvs.reverse();
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    Ok(RangeResponse {
        header: header(current),
        kvs,
        more,
        count,
    })
}

/// One write transaction: the changes of one revision, staged in a write batch, with an
/// overlay of the keys it changed so later operations of the same transaction see them.
struct WriteTxn<'v, 'db> {
    view: &'v View<'db>,
    begin: i64,
    compacted: i64,
    batch: WriteBatch,
    /// Changes so far; each is one sub-revision.
    sub: u32,
    overlay: BTreeMap<Bytes, Option<KeyValue>>,
    events: Vec<Event>,
}

impl<'v, 'db> WriteTxn<'v, 'db> {
    fn new(view: &'v View<'db>, begin: i64, compacted: i64) -> Self {
        WriteTxn {
            view,
            begin,
            compacted,
            batch: WriteBatch::default(),
            sub: 0,
            overlay: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    fn rev(&self) -> i64 {
        self.begin + 1
    }

    /// The revision a read inside this transaction sees as newest.
    fn current_rev(&self) -> i64 {
        if self.sub > 0 {
            self.begin + 1
        } else {
            self.begin
        }
    }

    fn latest(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.view.latest(key),
        }
    }

    fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        range_on(self.view, req, self.current_rev(), self.compacted, Some(&self.overlay))
    }

    fn put(&mut self, p: &PutRequest) -> Result<PutResponse> {
        let prev = self.latest(&p.key)?;
        let rev = self.rev();
        let value = if p.ignore_value {
            prev.as_ref().map(|kv| kv.value.clone()).unwrap_or_default()
        } else {
            p.value.clone()
        };
        let lease = if p.ignore_lease {
            prev.as_ref().map(|kv| kv.lease).unwrap_or_default()
        } else {
            p.lease
        };
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(rev, |kv| kv.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |kv| kv.version + 1),
            value,
            lease,
        };
        let sub = self.sub;
        let stored = Event {
            r#type: EventType::Put as i32,
            kv: Some(kv.clone()),
            prev_kv: None,
        };
        self.batch
            .put_cf(history_cf(self.view.db), keys::rev(rev, sub), stored.encode_to_vec());
        let mut idx = Vec::with_capacity(INDEX_HEADER_BYTES + kv.encoded_len());
        idx.push(keys::KIND_PUT);
        idx.extend_from_slice(&sub.to_be_bytes());
        kv.encode(&mut idx).expect("a Vec grows to hold the encoding");
        self.batch.put(keys::keyrev(&p.key, rev), idx);
        let prev_lease = prev.as_ref().map_or(0, |kv| kv.lease);
        if prev_lease != 0 && prev_lease != lease {
            self.batch.delete(keys::attach(prev_lease, &p.key));
        }
        if lease != 0 {
            self.batch.put(keys::attach(lease, &p.key), Vec::new());
        }
        self.overlay.insert(p.key.clone(), Some(kv.clone()));
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev.clone(),
        });
        self.sub += 1;
        Ok(PutResponse {
            header: header(rev),
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    /// Deletes one live key; returns its previous version.
    fn delete_key(&mut self, key: &Bytes) -> Result<Option<KeyValue>> {
        let Some(prev) = self.latest(key)? else {
            return Ok(None);
        };
        let rev = self.rev();
        let sub = self.sub;
        let tomb = KeyValue {
            key: key.clone(),
            mod_revision: rev,
            ..Default::default()
        };
        let stored = Event {
            r#type: EventType::Delete as i32,
            kv: Some(tomb.clone()),
            prev_kv: None,
        };
        self.batch
            .put_cf(history_cf(self.view.db), keys::rev(rev, sub), stored.encode_to_vec());
        let mut idx = vec![keys::KIND_DELETE];
        idx.extend_from_slice(&sub.to_be_bytes());
        self.batch.put(keys::keyrev(key, rev), idx);
        if prev.lease != 0 {
            self.batch.delete(keys::attach(prev.lease, key));
        }
        self.overlay.insert(key.clone(), None);
        self.events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(tomb),
            prev_kv: Some(prev.clone()),
        });
        self.sub += 1;
        Ok(Some(prev))
    }

    fn delete_range(&mut self, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let req = RangeRequest {
            key: d.key.clone(),
            range_end: d.range_end.clone(),
            keys_only: true,
            ..Default::default()
        };
        let live = self.range(&req)?.kvs;
        let mut prev_kvs = Vec::new();
        let mut deleted = 0;
        for kv in live {
            if let Some(prev) = self.delete_key(&kv.key)? {
                deleted += 1;
                if d.prev_kv {
                    prev_kvs.push(prev);
                }
            }
        }
        Ok(DeleteRangeResponse {
            header: header(self.current_rev()),
            deleted,
            prev_kvs,
        })
    }

    fn txn(&mut self, t: &TxnRequest, path: &[bool], at: &mut usize) -> Result<TxnResponse> {
        let succeeded = path[*at];
        *at += 1;
        let mut responses = Vec::new();
        for op in if succeeded { &t.success } else { &t.failure } {
            let resp = match &op.request {
                Some(request_op::Request::RequestRange(r)) => response_op::Response::ResponseRange(self.range(r)?),
                Some(request_op::Request::RequestPut(p)) => response_op::Response::ResponsePut(self.put(p)?),
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    response_op::Response::ResponseDeleteRange(self.delete_range(d)?)
                }
                Some(request_op::Request::RequestTxn(n)) => response_op::Response::ResponseTxn(self.txn(n, path, at)?),
                None => return Err(StoreError::InvalidRequest("empty request op in txn".into())),
            };
            responses.push(ResponseOp { response: Some(resp) });
        }
        Ok(TxnResponse {
            header: header(self.current_rev()),
            succeeded,
            responses,
        })
    }

    /// Compaction at `c.revision`, its logical part: records the compacted revision,
    /// below which reads and watches are refused from now on. The versions it supersedes
    /// (for every key, those at or below it but the newest one, and that one too if it is
    /// a deletion older than the compaction revision: a deletion at exactly that revision
    /// stays, so a watch starting there still sees it) are deleted later, in batches
    /// ([`Mvcc::compact_step`]); this entry only marks that work pending.
    fn compact(&mut self, c: &CompactionRequest) -> Result<CompactionResponse> {
        let at = c.revision;
        if at <= self.compacted {
            return Err(StoreError::Compacted);
        }
        if at > self.begin {
            return Err(StoreError::FutureRevision);
        }
        if self.view.get(keys::META_COMPACT_DONE)?.is_none() {
            // A store without the marker is complete up to its compacted revision (see
            // `keys`); from now on the marker says how far deletion got.
            self.batch.put(keys::META_COMPACT_DONE, self.compacted.to_be_bytes());
        }
        self.batch.put(keys::META_COMPACT, at.to_be_bytes());
        Ok(CompactionResponse {
            header: header(self.begin),
        })
    }

    /// A transaction that continues a run of them in one write batch: `overlay` holds
    /// the newest versions the run has written (or already looked up).
    fn resume(
        view: &'v View<'db>,
        begin: i64,
        compacted: i64,
        batch: WriteBatch,
        overlay: BTreeMap<Bytes, Option<KeyValue>>,
    ) -> Self {
        WriteTxn {
            batch,
            overlay,
            ..WriteTxn::new(view, begin, compacted)
        }
    }

    /// The batch and overlay to carry on with, the events and the revision after this
    /// transaction; the revision itself is not written (the run writes it once).
    fn into_parts(self) -> (WriteBatch, BTreeMap<Bytes, Option<KeyValue>>, Vec<Event>, i64) {
        let rev = self.current_rev();
        (self.batch, self.overlay, self.events, rev)
    }

    /// The batch to write, the newest versions of the keys it changed (or looked up),
    /// the events and the revision after this transaction.
    fn finish(mut self) -> (WriteBatch, BTreeMap<Bytes, Option<KeyValue>>, Vec<Event>, i64) {
        let rev = self.current_rev();
        if self.sub > 0 {
            self.batch.put(keys::META_REVISION, rev.to_be_bytes());
        }
        (self.batch, self.overlay, self.events, rev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Command {
        Command {
            op: Some(command::Op::Put(PutRequest {
                key: Bytes::from(k.to_string()),
                value: Bytes::from(v.to_string()),
                ..Default::default()
            })),
        }
    }

    fn get(m: &Mvcc, k: &str, rev: i64) -> Result<RangeResponse> {
        m.range(&RangeRequest {
            key: Bytes::from(k.to_string()),
            revision: rev,
            ..Default::default()
        })
    }

    #[test]
    fn removed_members_are_remembered_until_added_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mvcc::open(dir.path()).expect("open");
        let member = Member {
            id: 7,
            name: "n7".into(),
            peer_urls: vec!["http://127.0.0.1:1".into()],
            ..Default::default()
        };
        m.apply_meta(1, 1, Some((&MemberChange::Add(member.clone()), b"")))
            .expect("add");
        assert!(!m.is_removed(7).expect("read"));
        m.apply_meta(2, 1, Some((&MemberChange::Remove(7), b"")))
            .expect("remove");
        assert!(m.is_removed(7).expect("read"), "a removed member is remembered");
        assert!(m.members().expect("members").is_empty());
        assert!(!m.is_removed(8).expect("read"), "one never seen is not removed");
        m.apply_meta(3, 1, Some((&MemberChange::Add(member), b"")))
            .expect("add again");
        assert!(!m.is_removed(7).expect("read"));
    }

    #[test]
    fn revisions_versions_and_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mvcc::open(dir.path()).expect("open");
        m.apply(1, &put("a", "1")).expect("apply");
        m.apply(2, &put("a", "2")).expect("apply");
        let r = get(&m, "a", 0).expect("get");
        assert_eq!(r.kvs[0].value.as_ref(), b"2");
        assert_eq!(
            (r.kvs[0].create_revision, r.kvs[0].mod_revision, r.kvs[0].version),
            (2, 3, 2)
        );
        let r = get(&m, "a", 2).expect("get");
        assert_eq!(r.kvs[0].value.as_ref(), b"1");
        assert_eq!(get(&m, "a", 4), Err(StoreError::FutureRevision));
        let c = Command {
            op: Some(command::Op::Compaction(CompactionRequest {
                revision: 3,
                physical: true,
            })),
        };
        m.apply(3, &c).expect("apply").response.expect("compact");
        assert_eq!(get(&m, "a", 2), Err(StoreError::Compacted));
        assert_eq!(get(&m, "a", 3).expect("get").kvs[0].value.as_ref(), b"2");
        drop(m);
        let m = Mvcc::open(dir.path()).expect("reopen");
        assert_eq!((m.revision(), m.compact_revision(), m.applied_index()), (3, 3, 3));
    }

    fn op_put(k: &str, v: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: Bytes::from(k.to_string()),
                value: Bytes::from(v.to_string()),
                ..Default::default()
            })),
        }
    }

    fn apply_checked(m: &Mvcc, index: u64, cmd: &Command) -> Result<CommandResponse> {
        check_command(cmd)?;
        m.apply(index, cmd).expect("storage").response
    }

    #[test]
    fn ignore_value_and_lease_follow_etcd() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mvcc::open(dir.path()).expect("open");
        let with = |p: PutRequest| Command {
            op: Some(command::Op::Put(p)),
        };
        let key = Bytes::from("k");
        let ignore_value = PutRequest {
            key: key.clone(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(
            apply_checked(&m, 1, &with(ignore_value.clone())),
            Err(StoreError::KeyNotFound)
        );
        let grant = Command {
            op: Some(command::Op::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 7 })),
        };
        apply_checked(&m, 2, &grant).expect("grant");
        let leased = PutRequest {
            key: key.clone(),
            value: Bytes::from("v1"),
            lease: 7,
            ..Default::default()
        };
        apply_checked(&m, 3, &with(leased)).expect("put");
        // ignore_value keeps the value and, without ignore_lease, drops the lease.
        apply_checked(&m, 4, &with(ignore_value)).expect("put ignoring value");
        let kv = get(&m, "k", 0).expect("get").kvs.remove(0);
        assert_eq!((kv.value.as_ref(), kv.lease, kv.version), (&b"v1"[..], 0, 2));
        let both = PutRequest {
            key: key.clone(),
            value: Bytes::from("x"),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(apply_checked(&m, 5, &with(both)), Err(StoreError::ValueProvided));
        let both = PutRequest {
            key: key.clone(),
            lease: 7,
            ignore_lease: true,
            ..Default::default()
        };
        assert_eq!(apply_checked(&m, 5, &with(both)), Err(StoreError::LeaseProvided));
        let no_lease = PutRequest {
            key,
            value: Bytes::from("v"),
            lease: 99,
            ..Default::default()
        };
        assert_eq!(apply_checked(&m, 5, &with(no_lease)), Err(StoreError::LeaseNotFound));
        assert_eq!(m.revision(), 3, "rejected commands write nothing");
        assert_eq!(m.applied_index(), 5, "but consume their log index");
    }

    #[test]
    fn nested_txn_compares_see_the_state_before_the_txn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mvcc::open(dir.path()).expect("open");
        m.apply(1, &put("a", "1")).expect("apply");
        // Outer: put a=2, then a nested txn comparing a == "1": true on the pre-txn state.
        let nested = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Value as i32,
                key: Bytes::from("a"),
                target_union: Some(compare::TargetUnion::Value(Bytes::from("1"))),
                range_end: Bytes::new(),
            }],
            success: vec![op_put("b", "yes")],
            failure: vec![op_put("b", "no")],
        };
        let outer = TxnRequest {
            compare: vec![],
            success: vec![
                op_put("a", "2"),
                RequestOp {
                    request: Some(request_op::Request::RequestTxn(nested)),
                },
            ],
            failure: vec![],
        };
        let resp = apply_checked(
            &m,
            2,
            &Command {
                op: Some(command::Op::Txn(outer)),
            },
        )
        .expect("txn");
        let CommandResponse::Txn(t) = resp else {
            panic!("txn response expected")
        };
        assert!(t.succeeded);
        assert_eq!(get(&m, "b", 0).expect("get").kvs[0].value.as_ref(), b"yes");
        assert_eq!(
            m.revision(),
            3,
            "one revision for the whole txn, nested writes included"
        );
        // A nested txn may not write a key the outer one writes.
        let clash = TxnRequest {
            compare: vec![],
            success: vec![
                op_put("a", "3"),
                RequestOp {
                    request: Some(request_op::Request::RequestTxn(TxnRequest {
                        compare: vec![],
                        success: vec![op_put("a", "4")],
                        failure: vec![],
                    })),
                },
            ],
            failure: vec![],
        };
        assert_eq!(
            check_command(&Command {
                op: Some(command::Op::Txn(clash))
            }),
            Err(StoreError::DuplicateKey)
        );
    }

    #[test]
    fn revoking_a_lease_deletes_its_keys_in_one_revision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mvcc::open(dir.path()).expect("open");
        let grant = Command {
            op: Some(command::Op::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 3 })),
        };
        apply_checked(&m, 1, &grant).expect("grant");
        for (i, k) in ["x", "y", "z"].iter().enumerate() {
            let p = PutRequest {
                key: Bytes::from(k.to_string()),
                lease: 3,
                ..Default::default()
            };
            apply_checked(
                &m,
                2 + i as u64,
                &Command {
                    op: Some(command::Op::Put(p)),
                },
            )
            .expect("put");
        }
        assert_eq!(m.lease_keys(3, 10).expect("keys").len(), 3);
        let revoke = Command {
            op: Some(command::Op::LeaseRevoke(LeaseRevokeRequest { id: 3 })),
        };
        let applied = m.apply(5, &revoke).expect("apply");
        applied.response.expect("revoke");
        assert_eq!(applied.revision, 5);
        assert_eq!(applied.events.len(), 3);
        assert!(m.leases().is_empty());
        assert_eq!(m.lease_keys(3, 10).expect("keys").len(), 0);
        drop(m);
        let m = Mvcc::open(dir.path()).expect("reopen");
        assert!(m.leases().is_empty(), "the revoke is durable");
    }

    #[test]
    fn a_run_of_puts_applied_together_equals_one_at_a_time() {
        // Puts with repeated keys, ignore_value / ignore_lease on missing and present keys,
        // leases that exist and that do not, prev_kv: the grouped path must answer and store
        // exactly what entry-by-entry application does.
        let one = tempfile::tempdir().expect("tempdir");
        let grouped = tempfile::tempdir().expect("tempdir");
        let a = Mvcc::open(one.path()).expect("open");
        // A cache of about seven entries (of 40 keys): the grouped side also takes the
        // paths of its misses and evictions.
        let b = Mvcc::open_with_cache_bytes(grouped.path(), 2048).expect("open");
        let grant = Command {
            op: Some(command::Op::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 7 })),
        };
        apply_checked(&a, 1, &grant).expect("grant");
        apply_checked(&b, 1, &grant).expect("grant");
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut puts = Vec::new();
        for i in 0..400 {
            puts.push(PutRequest {
                key: Bytes::from(format!("k{}", next(40))),
                value: Bytes::from(format!("v{i}")),
                lease: [0, 0, 7, 8][next(4) as usize],
                prev_kv: next(2) == 0,
                ignore_value: next(8) == 0,
                ignore_lease: next(8) == 0,
            });
        }
        let mut index = 2;
        let mut at = 0;
        while at < puts.len() {
            let run = (1 + next(70) as usize).min(puts.len() - at);
            let args: Vec<(u64, u64, &PutRequest)> = puts[at..at + run]
                .iter()
                .enumerate()
                .map(|(j, p)| (index + j as u64, 3, p))
                .collect();
            // The first entry of every other run was applied before: it must be skipped.
            let skip_first = at % 2 == 1;
            if skip_first {
                let cmd = Command {
                    op: Some(command::Op::Put(puts[at].clone())),
                };
                a.apply_entry(index, 3, &cmd).expect("apply");
                b.apply_entry(index, 3, &cmd).expect("apply");
            }
            let got = b.apply_puts(&args).expect("apply_puts");
            assert_eq!(got.len(), run);
            for (j, g) in got.into_iter().enumerate() {
                let cmd = Command {
                    op: Some(command::Op::Put(puts[at + j].clone())),
                };
                let want = a.apply_entry(index + j as u64, 3, &cmd).expect("apply");
                match (want, g) {
                    (None, None) => assert!(skip_first && j == 0),
                    (Some(w), Some(g)) => {
                        assert_eq!(w.response, g.response, "put {}", at + j);
                        assert_eq!(w.revision, g.revision, "put {}", at + j);
                        assert_eq!(w.events, g.events, "put {}", at + j);
                    }
                    (w, g) => panic!("put {}: {:?} vs {:?}", at + j, w.is_some(), g.is_some()),
                }
            }
            index += run as u64;
            at += run;
        }
        assert_eq!(a.revision(), b.revision());
        assert_eq!(a.applied_index(), b.applied_index());
        let all = |m: &Mvcc| {
            let mut v = Vec::new();
            m.export(|k, val| {
                v.push((k.to_vec(), val.to_vec()));
                true
            })
            .expect("export");
            v
        };
        assert_eq!(all(&a), all(&b), "the stored state differs");
        {
            let cache = b.apply_lock.lock().expect("apply lock");
            let cache = cache.borrow();
            assert!(
                !cache.is_empty() && !cache.is_complete(),
                "the tiny cache held nothing, or everything"
            );
        }
        drop(b);
        let b = Mvcc::open(grouped.path()).expect("reopen");
        assert_eq!(b.revision(), a.revision(), "the run's revision is durable");
    }

    #[test]
    fn a_store_of_the_older_layout_reads_the_same() {
        // Older stores kept `l` records and index entries without the KeyValue: opening
        // one drops the former and reads the latter through the history.
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mvcc::open(dir.path()).expect("open");
        m.apply(1, &put("a", "1")).expect("apply");
        m.apply(2, &put("a", "2")).expect("apply");
        m.apply(3, &put("b", "1")).expect("apply");
        let mut wb = WriteBatch::default();
        for (key, rev) in [("a", 2), ("a", 3), ("b", 4)] {
            wb.put(keys::keyrev(key.as_bytes(), rev), [keys::KIND_PUT, 0, 0, 0, 0]);
        }
        wb.put([keys::OBSOLETE_LATEST, b'a'], b"stale");
        // Older stores also kept the history by revision in the default column family.
        let history = history_cf(&m.db);
        let mut it = m.db.raw_iterator_cf(history);
        it.seek([keys::REVS]);
        let mut moved = 0;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            wb.put(k, v);
            wb.delete_cf(history, k);
            moved += 1;
            it.next();
        }
        drop(it);
        assert_eq!(moved, 3);
        m.db.write(wb).expect("rewrite as the older layout");
        drop(m);
        let m = Mvcc::open(dir.path()).expect("reopen");
        let mut it = m.db.raw_iterator();
        it.seek([keys::OBSOLETE_LATEST]);
        assert!(it.key().is_none_or(|k| k[0] != keys::OBSOLETE_LATEST), "l records left");
        drop(it);
        assert_eq!(m.history_entries().expect("history"), 3, "the history was not moved");
        let mut it = m.db.raw_iterator();
        it.seek([keys::REVS]);
        assert!(
            it.key().is_none_or(|k| k[0] != keys::REVS),
            "history left in the default family"
        );
        drop(it);
        let evs = m.events(2, 4, true, 100).expect("events");
        assert_eq!(evs.iter().map(|(r, _)| *r).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(
            evs[1].1[0].prev_kv.as_ref().map(|kv| kv.value.as_ref()),
            Some(&b"1"[..])
        );
        let r = get(&m, "a", 0).expect("get");
        assert_eq!(
            (r.kvs[0].value.as_ref(), r.kvs[0].version, r.kvs[0].create_revision),
            (&b"2"[..], 2, 2)
        );
        assert_eq!(get(&m, "a", 2).expect("get").kvs[0].value.as_ref(), b"1");
        let all = m
            .range(&RangeRequest {
                key: Bytes::from_static(b"a"),
                range_end: Bytes::from_static(b"c"),
                ..Default::default()
            })
            .expect("range");
        assert_eq!(all.kvs.iter().map(|kv| kv.mod_revision).collect::<Vec<_>>(), vec![3, 4]);
        let applied = m.apply(4, &put("a", "3")).expect("apply");
        let kv = applied.events[0].kv.as_ref().expect("kv");
        assert_eq!((kv.create_revision, kv.version), (2, 3));
    }

    #[test]
    fn a_scan_steps_over_long_histories() {
        // Keys with many versions (more than a scan steps over before seeking), keys whose
        // escaped forms are prefixes of each other, deleted keys in between.
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mvcc::open(dir.path()).expect("open");
        let mut index = 0;
        let mut apply = |cmd: Command| {
            index += 1;
            m.apply(index, &cmd).expect("apply").response.expect("accepted");
        };
        for i in 0..10 {
            apply(put("a", &format!("a{i}")));
            apply(put("a\0", &format!("z{i}")));
        }
        apply(put("a\0b", "x"));
        apply(put("b", "1"));
        apply(put("a\0\0", "y"));
        apply(Command {
            op: Some(command::Op::DeleteRange(DeleteRangeRequest {
                key: Bytes::from_static(b"b"),
                ..Default::default()
            })),
        });
        apply(put("c", "1"));
        apply(put("c", "2"));
        let r = m
            .range(&RangeRequest {
                key: Bytes::from_static(b"\0"),
                range_end: Bytes::from_static(b"\0"),
                ..Default::default()
            })
            .expect("range");
        let got: Vec<(&[u8], &[u8], i64)> = r
            .kvs
            .iter()
            .map(|kv| (kv.key.as_ref(), kv.value.as_ref(), kv.version))
            .collect();
        assert_eq!(
            got,
            vec![
                (&b"a"[..], &b"a9"[..], 10),
                (&b"a\0"[..], &b"z9"[..], 10),
                (&b"a\0\0"[..], &b"y"[..], 1),
                (&b"a\0b"[..], &b"x"[..], 1),
                (&b"c"[..], &b"2"[..], 2),
            ]
        );
        assert_eq!(r.count, 5);
    }

    #[test]
    fn the_writers_cache_never_answers_for_a_replaced_state() {
        // The writer caches the newest versions it wrote; installing a snapshot replaces
        // them all, so a put afterwards must build on the installed versions.
        let here = tempfile::tempdir().expect("tempdir");
        let there = tempfile::tempdir().expect("tempdir");
        let m = Mvcc::open(here.path()).expect("open");
        let other = Mvcc::open(there.path()).expect("open");
        for i in 1..=3 {
            m.apply(i, &put("a", &format!("here{i}"))).expect("apply");
        }
        m.apply(4, &put("b", "here")).expect("apply");
        other.apply(1, &put("c", "there")).expect("apply");
        other.apply(2, &put("a", "there")).expect("apply");
        let mut records = Vec::new();
        other
            .export(|k, v| {
                records.push((k.to_vec(), v.to_vec()));
                true
            })
            .expect("export");
        let mut records = records.into_iter();
        m.install(|| Ok(records.next())).expect("install");
        assert_eq!(m.revision(), 3);

        // One put alone and a run of puts: both paths look the key up.
        let applied = m.apply(3, &put("a", "after")).expect("apply");
        let ev = &applied.events[0];
        let kv = ev.kv.as_ref().expect("kv");
        assert_eq!((kv.create_revision, kv.version), (3, 2), "built on a replaced version");
        assert_eq!(ev.prev_kv.as_ref().map(|p| p.value.as_ref()), Some(&b"there"[..]));
        let b = PutRequest {
            key: Bytes::from_static(b"b"),
            value: Bytes::from_static(b"after"),
            prev_kv: true,
            ..Default::default()
        };
        let a = PutRequest {
            key: Bytes::from_static(b"a"),
            value: Bytes::from_static(b"again"),
            ..Default::default()
        };
        let got = m.apply_puts(&[(4, 1, &b), (5, 1, &a)]).expect("apply_puts");
        let ev = &got[0].as_ref().expect("applied").events[0];
        assert_eq!(ev.kv.as_ref().map(|kv| (kv.create_revision, kv.version)), Some((5, 1)));
        assert_eq!(ev.prev_kv, None, "b does not exist in the installed state");
        let ev = &got[1].as_ref().expect("applied").events[0];
        assert_eq!(ev.kv.as_ref().map(|kv| (kv.create_revision, kv.version)), Some((3, 3)));
        assert_eq!(get(&m, "a", 0).expect("get").kvs[0].version, 3);
    }

    // ---- compaction in the background ------------------------------------------------

    fn compact_cmd(at: i64) -> Command {
        Command {
            op: Some(command::Op::Compaction(CompactionRequest {
                revision: at,
                physical: true,
            })),
        }
    }

    fn delete(k: &str) -> Command {
        Command {
            op: Some(command::Op::DeleteRange(DeleteRangeRequest {
                key: Bytes::from(k.to_string()),
                ..Default::default()
            })),
        }
    }

    /// Applies entries as a member does (a compaction only recorded), numbering them.
    struct Log<'a> {
        m: &'a Mvcc,
        index: u64,
    }

    impl Log<'_> {
        fn apply(&mut self, cmd: &Command) -> Applied {
            self.index += 1;
            let a = self
                .m
                .apply_entry(self.index, 1, cmd)
                .expect("apply")
                .expect("a new entry");
            assert!(a.response.is_ok(), "rejected: {:?}", a.response);
            a
        }

        /// `n` puts to `keys` keys in turn (`k0000`, ...), in runs as the apply loop makes.
        fn puts(&mut self, n: usize, keys: usize) {
            let reqs: Vec<PutRequest> = (0..n)
                .map(|i| PutRequest {
                    key: Bytes::from(format!("k{:04}", i % keys)),
                    value: Bytes::from(format!("v{i}")),
                    ..Default::default()
                })
                .collect();
            for run in reqs.chunks(1_000) {
                let entries: Vec<(u64, u64, &PutRequest)> = run
                    .iter()
                    .map(|p| {
                        self.index += 1;
                        (self.index, 1, p)
                    })
                    .collect();
                for a in self.m.apply_puts(&entries).expect("apply puts") {
                    assert!(a.expect("a new entry").response.is_ok());
                }
            }
        }
    }

    /// What reads at or above `from` answer: every key at each of `revs`, and the replay
    /// of the events from `from` with their previous versions.
    type Reads = (Vec<RangeResponse>, Vec<(i64, Vec<Event>)>);

    fn reads(m: &Mvcc, from: i64, revs: impl IntoIterator<Item = i64>) -> Reads {
        let ranges = revs
            .into_iter()
            .map(|rev| {
                m.range(&RangeRequest {
                    key: Bytes::from_static(b"\0"),
                    range_end: Bytes::from_static(b"\0"),
                    revision: rev,
                    ..Default::default()
                })
                .expect("range")
            })
            .collect();
        let events = m.events(from, m.revision(), true, usize::MAX).expect("events");
        (ranges, events)
    }

    fn exported(m: &Mvcc) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        m.export(|k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })
        .expect("export");
        out
    }

    #[test]
    fn applying_a_compaction_deletes_nothing_and_the_compactor_deletes_in_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mvcc::open(dir.path()).expect("open");
        let mut log = Log { m: &m, index: 0 };
        log.puts(50_000, 1_000);
        for k in 0..10 {
            log.apply(&delete(&format!("k{k:04}")));
        }
        let at = log.apply(&put("k0500", "at")).revision;
        for i in 0..5 {
            log.apply(&put(&format!("k{:04}", 600 + i), "after"));
        }
        let entries = m.history_entries().expect("history");
        assert_eq!(entries, 50_000 + 10 + 1 + 5);
        let revs = || (at..=m.revision()).chain([0]);
        let uncompacted = reads(&m, at, revs());
        assert_eq!(uncompacted.0[0].count, 990, "1,000 keys less 10 deleted");

        let applied = log.apply(&compact_cmd(at));
        assert_eq!(applied.compacted, Some(at));
        assert_eq!(
            m.history_entries().expect("history"),
            entries,
            "the apply deleted nothing"
        );
        assert_eq!((m.compact_revision(), m.compact_done_revision()), (at, 0));
        assert!(m.compaction_pending());
        assert_eq!(get(&m, "k0001", at - 1), Err(StoreError::Compacted), "refused at once");
        let before = reads(&m, at, revs());
        assert_eq!(before.0, uncompacted.0, "ranges at and above the compaction");
        // The event at the compaction revision loses its previous version (below the
        // compaction, as etcd's), deleted or not.
        assert_eq!(before.1[1..], uncompacted.1[1..]);
        assert_eq!(before.1[0].1[0].prev_kv, None);

        // The compactor's batches, each within its bound, until it is done (at most one
        // batch per bound's worth of index entries, and one more).
        let steps_max = entries as usize / COMPACTION_BATCH_ENTRIES_MAX + 2;
        let mut steps = 0;
        let finished = loop {
            assert!(
                steps < steps_max,
                "the compaction did not end within {steps_max} batches"
            );
            steps += 1;
            match m.compact_step(COMPACTION_BATCH_ENTRIES_MAX).expect("compact step") {
                CompactionStep::Progress { examined, .. } => {
                    assert!(examined <= COMPACTION_BATCH_ENTRIES_MAX);
                    assert!(m.compaction_pending(), "done only at the end");
                }
                CompactionStep::Finished { revision, deleted } => break (revision, deleted),
                CompactionStep::Idle => panic!("idle while a compaction is pending"),
            }
        };
        assert!(steps > 40, "batches, not one write: {steps}");
        // Left: the 990 keys' newest versions at `at` and the 5 puts after it.
        assert_eq!(m.history_entries().expect("history"), 995);
        assert_eq!(finished, (at, entries - 995));
        assert_eq!((m.compact_done_revision(), m.compaction_pending()), (at, false));
        assert_eq!(m.compact_step(10).expect("compact step"), CompactionStep::Idle);
        assert_eq!(reads(&m, at, revs()), before, "reads at and above the compaction");
    }

    #[test]
    fn a_compaction_interrupted_by_a_restart_resumes_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mvcc::open(dir.path()).expect("open");
        let mut log = Log { m: &m, index: 0 };
        log.puts(5_000, 100);
        let at = m.revision();
        log.apply(&compact_cmd(at));
        let entries = m.history_entries().expect("history");
        let before = reads(&m, at, [at, 0]);
        drop(m);

        // Stopped before the compactor ran: pending after the restart.
        let m = Mvcc::open(dir.path()).expect("reopen");
        assert_eq!((m.compact_revision(), m.compact_done_revision()), (at, 0));
        assert!(m.compaction_pending());
        assert_eq!(m.history_entries().expect("history"), entries);
        // Stopped in the middle of a pass: still pending, part of it deleted.
        for _ in 0..3 {
            assert!(matches!(
                m.compact_step(500).expect("compact step"),
                CompactionStep::Progress { .. }
            ));
        }
        let part = m.history_entries().expect("history");
        assert!(part < entries, "{part} of {entries}");
        drop(m);

        let m = Mvcc::open(dir.path()).expect("reopen");
        assert!(m.compaction_pending());
        assert_eq!(m.history_entries().expect("history"), part);
        assert_eq!(reads(&m, at, [at, 0]), before);
        m.compact_physically().expect("compact");
        assert_eq!(m.history_entries().expect("history"), 100);
        assert_eq!(reads(&m, at, [at, 0]), before);
        drop(m);

        let m = Mvcc::open(dir.path()).expect("reopen");
        assert_eq!((m.compact_done_revision(), m.compaction_pending()), (at, false));
    }

    /// A history with what compaction treats apart: keys deleted before the compaction
    /// revision (their deletion goes too), one deleted at it (stays), one deleted and
    /// created again, keys with versions after it; every key with several versions.
    fn tricky_history(m: &Mvcc) -> i64 {
        let mut log = Log { m, index: 0 };
        for round in 0..6 {
            for k in ["a", "b", "c", "d", "e", "f"] {
                log.apply(&put(k, &format!("{k}{round}")));
            }
        }
        log.apply(&delete("a"));
        log.apply(&delete("b"));
        log.apply(&put("b", "again"));
        log.apply(&put("c", "c-last"));
        let at = log.apply(&delete("d")).revision;
        log.apply(&put("e", "after"));
        log.apply(&delete("f"));
        log.apply(&compact_cmd(at));
        at
    }

    #[test]
    fn no_read_hash_or_export_tells_how_far_compaction_got() {
        let pending_dir = tempfile::tempdir().expect("tempdir");
        let done_dir = tempfile::tempdir().expect("tempdir");
        let m = Mvcc::open(pending_dir.path()).expect("open");
        let at = tricky_history(&m);
        // The same log on a store that finished its compaction at once.
        let finished = Mvcc::open(done_dir.path()).expect("open");
        assert_eq!(tricky_history(&finished), at);
        finished.compact_physically().expect("compact");
        assert!(m.compaction_pending() && !finished.compaction_pending());
        assert!(m.history_entries().expect("history") > finished.history_entries().expect("history"));

        let revs: Vec<i64> = (at..=m.revision()).chain([0]).collect();
        let want_reads = reads(&finished, at, revs.clone());
        let want_hashes = (finished.hash_kv(0).expect("hash"), finished.hash_kv(at).expect("hash"));
        let want_export = exported(&finished);
        // One index entry per batch: every point a batch can stop at, one after another.
        let mut steps = 0;
        loop {
            assert_eq!(reads(&m, at, revs.clone()), want_reads, "reads after {steps} batches");
            assert_eq!(
                (m.hash_kv(0).expect("hash"), m.hash_kv(at).expect("hash")),
                want_hashes,
                "HashKV after {steps} batches"
            );
            assert_eq!(exported(&m), want_export, "export after {steps} batches");
            if m.compact_step(1).expect("compact step") == CompactionStep::Idle {
                break;
            }
            steps += 1;
        }
        assert!(steps > 40, "{steps}");
        assert_eq!(
            m.history_entries().expect("history"),
            finished.history_entries().expect("history")
        );
        // Deleted before the compaction: gone, history and all; deleted at it: kept.
        assert_eq!(get(&m, "a", at).expect("get").kvs, vec![]);
        assert_eq!(
            m.events(at, at, false, 10).expect("events")[0].1[0].r#type,
            EventType::Delete as i32
        );
    }

    #[test]
    fn a_snapshot_of_a_pending_compaction_installs_complete() {
        let here = tempfile::tempdir().expect("tempdir");
        let there = tempfile::tempdir().expect("tempdir");
        let m = Mvcc::open(here.path()).expect("open");
        let at = tricky_history(&m);
        m.compact_step(5).expect("compact step");
        assert!(m.compaction_pending());
        let other = Mvcc::open(there.path()).expect("open");
        let mut records = exported(&m).into_iter();
        other.install(|| Ok(records.next())).expect("install");
        assert_eq!(
            (other.compact_revision(), other.compact_done_revision()),
            (at, at),
            "both markers, the compaction complete"
        );
        m.compact_physically().expect("compact");
        assert_eq!(
            other.history_entries().expect("history"),
            m.history_entries().expect("history")
        );
        assert_eq!(other.hash_kv(0).expect("hash"), m.hash_kv(0).expect("hash"));
    }

    #[test]
    fn a_store_without_the_done_marker_is_complete_and_a_new_compaction_pends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mvcc::open(dir.path()).expect("open");
        let mut log = Log { m: &m, index: 0 };
        log.puts(300, 10);
        let first = m.revision() - 100;
        log.apply(&compact_cmd(first));
        m.compact_physically().expect("compact");
        // As an older store: compacted inside the apply, no marker.
        m.db.delete(keys::META_COMPACT_DONE).expect("delete the marker");
        drop(m);
        let m = Mvcc::open(dir.path()).expect("reopen");
        assert_eq!((m.compact_revision(), m.compact_done_revision()), (first, first));
        assert!(!m.compaction_pending());
        assert_eq!(m.compact_step(10).expect("compact step"), CompactionStep::Idle);

        let mut log = Log { m: &m, index: 400 };
        let second = m.revision();
        log.apply(&compact_cmd(second));
        assert_eq!(m.compact_done_revision(), first, "done up to the older compaction");
        drop(m);
        let m = Mvcc::open(dir.path()).expect("reopen");
        assert_eq!((m.compact_revision(), m.compact_done_revision()), (second, first));
        m.compact_physically().expect("compact");
        assert_eq!(m.history_entries().expect("history"), 10);
    }

    #[test]
    fn a_newer_compaction_during_a_pass_is_taken_up_by_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mvcc::open(dir.path()).expect("open");
        let mut log = Log { m: &m, index: 0 };
        log.puts(2_000, 20);
        let first = m.revision() - 500;
        log.apply(&compact_cmd(first));
        assert!(matches!(
            m.compact_step(100).expect("compact step"),
            CompactionStep::Progress { .. }
        ));
        let second = m.revision();
        log.apply(&compact_cmd(second));
        let finished = loop {
            if let CompactionStep::Finished { revision, .. } = m.compact_step(100).expect("compact step") {
                break revision;
            }
        };
        assert_eq!(finished, first, "the pass ends at the revision it began with");
        assert_eq!(m.compact_done_revision(), first);
        assert!(m.compaction_pending());
        m.compact_physically().expect("compact");
        assert_eq!(m.compact_done_revision(), second);
        assert_eq!(m.history_entries().expect("history"), 20);
    }

    #[test]
    fn the_compactor_runs_beside_applies_and_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mvcc::open(dir.path()).expect("open");
        let mut log = Log { m: &m, index: 0 };
        log.puts(5_000, 50);
        let at = m.revision();
        log.apply(&compact_cmd(at));
        let kvs_at = |m: &Mvcc| reads(m, at, [at]).0.remove(0).kvs;
        let at_compaction = kvs_at(&m);
        std::thread::scope(|s| {
            let compactor = s.spawn(
                || {
                    while m.compact_step(10).expect("compact step") != CompactionStep::Idle {}
                },
            );
            // Whatever the compactor has done meanwhile, the writer and readers see the
            // same state.
            for i in 0..200 {
                let k = format!("k{:04}", i % 50);
                let prev = get(&m, &k, 0).expect("get").kvs[0].clone();
                let a = log.apply(&put(&k, "new"));
                let kv = a.events[0].kv.as_ref().expect("kv");
                assert_eq!(
                    (kv.create_revision, kv.version),
                    (prev.create_revision, prev.version + 1)
                );
                assert_eq!(kvs_at(&m), at_compaction);
            }
            compactor.join().expect("the compactor thread");
        });
        assert!(!m.compaction_pending());
        assert_eq!(m.history_entries().expect("history"), 50 + 200);
        assert_eq!(kvs_at(&m), at_compaction);
    }
}
