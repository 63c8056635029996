//! The `etcd_request` target: etcd v3 requests as the gRPC services decode them, through
//! the checks `Node::propose` makes and the apply step every member runs, on a real
//! state machine (RocksDB in a temporary directory) shared by the inputs of a process.

use std::sync::{Mutex, MutexGuard, OnceLock};

use capstan_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, HashKvRequest, LeaseGrantRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest, TxnRequest, WatchCreateRequest,
};
use capstan_proto::store::{command, Command};
use capstan_store::mvcc::{check_command, Mvcc, LEASE_TTL_MAX_S};
use capstan_store::node::{apply_committed_all, AppliedEntry, NodeConfig, REQUEST_BYTES_MAX};
use capstan_store::replica::Committed;
use capstan_store::StoreError;
use prost::Message as _;
use raft::prelude::{Entry, EntryType};

use crate::input::Frames;

/// The requests of one input at most.
pub const FRAMES_MAX: usize = 16;
/// Log entries applied to one state machine before it is replaced by an empty one, and
/// the bytes of entries: what bounds the disk and memory a long fuzzing run uses.
const ENTRIES_PER_STORE: u64 = 20_000;
const BYTES_PER_STORE: u64 = 64 << 20;
/// The writer's cache of newest versions (the member's is 64 MiB): small, so that its
/// evictions and misses are exercised too.
const LATEST_CACHE_BYTES: usize = 1 << 20;
/// Events one watch catch-up step reads at most (the hub's `catchup_events_max`).
const CATCHUP_EVENTS_MAX: usize = 1_000;
/// Keys LeaseTimeToLive lists at most (as `server.rs`).
const LEASE_KEYS_MAX: usize = 100_000;

/// What a frame's tag asks for (the tag modulo the count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// KV.Range (serializable: the linearizable barrier is Raft's, not this target's).
    Range = 0,
    Put = 1,
    DeleteRange = 2,
    Txn = 3,
    Compaction = 4,
    LeaseGrant = 5,
    LeaseRevoke = 6,
    /// The payload is a log entry's data as a follower applies it (a `Command`, or not).
    LogEntry = 7,
    HashKv = 8,
    LeaseTimeToLive = 9,
    /// Watch's create request: the hub's range check, then the catch-up read from disk.
    WatchCreate = 10,
    LeaseLeases = 11,
}

const OPS: [Op; 12] = [
    Op::Range,
    Op::Put,
    Op::DeleteRange,
    Op::Txn,
    Op::Compaction,
    Op::LeaseGrant,
    Op::LeaseRevoke,
    Op::LogEntry,
    Op::HashKv,
    Op::LeaseTimeToLive,
    Op::WatchCreate,
    Op::LeaseLeases,
];

struct Store {
    _dir: tempfile::TempDir,
    mvcc: Mvcc,
    next_lease: i64,
    lease_ttl_min_s: i64,
    entries: u64,
    bytes: u64,
}

/// The temporary directories' prefix; the process ID follows it.
const DIR_PREFIX: &str = "capstan-fuzz-etcd-";

impl Store {
    fn open() -> Store {
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("a temporary directory for the fuzzed store");
        let mvcc = Mvcc::open_with_cache_bytes(dir.path(), LATEST_CACHE_BYTES).expect("open the fuzzed store");
        let lease_ttl_min_s = NodeConfig::new("fuzz", dir.path().to_path_buf()).lease_ttl_min_s;
        Store {
            _dir: dir,
            mvcc,
            next_lease: 1 << 32,
            lease_ttl_min_s,
            entries: 0,
            bytes: 0,
        }
    }
}

/// Removes the directories of processes that are gone: a fuzzing process ends without
/// dropping its store (its statics are not dropped). Only where `/proc` tells.
fn remove_stale_dirs() {
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn store() -> MutexGuard<'static, Option<Store>> {
    static STORE: OnceLock<Mutex<Option<Store>>> = OnceLock::new();
    let lock = STORE.get_or_init(|| Mutex::new(None));
    match lock.lock() {
        Ok(g) => g,
        Err(poisoned) => {
            // A panic left the store in an unknown state (the replay test goes on after
            // one to report them all): start again from an empty one.
            let mut g = poisoned.into_inner();
            *g = None;
            lock.clear_poison();
            g
        }
    }
}

/// A failure of the store itself (not a refused request): a bug when a request causes it.
fn storage_failure(e: &StoreError) -> bool {
    matches!(e, StoreError::Storage(_) | StoreError::Corrupt(_))
}

/// Input: up to 16 frames (`FRAMES_MAX`), `tag ‖ u16 LE length ‖ payload` (see
/// [`crate::input::Frames`]); the tag picks an [`Op`], the payload is its request in
/// protobuf. Writes are checked and encoded as `Node::propose` does and queued as log
/// entries; a read, or the end of the input, applies what is queued with
/// `node::apply_committed_all` (consecutive puts in one batch, as a member applies
/// them), then the compaction's physical part runs as the member's compactor would.
///
/// Panics (a finding) when a request makes the store fail rather than answer, when the
/// revision goes back or when an entry is not applied in order.
pub fn etcd_request(data: &[u8]) {
    let mut guard = store();
    let s = guard.get_or_insert_with(Store::open);
    let mut pending: Vec<Vec<u8>> = Vec::new();
    for (tag, payload) in Frames::new(data, FRAMES_MAX) {
        let op = OPS[usize::from(tag) % OPS.len()];
        let write = match op {
            Op::Put => PutRequest::decode(payload).ok().map(command::Op::Put),
            Op::DeleteRange => DeleteRangeRequest::decode(payload).ok().map(command::Op::DeleteRange),
            Op::Txn => TxnRequest::decode(payload).ok().map(command::Op::Txn),
            Op::Compaction => CompactionRequest::decode(payload).ok().map(command::Op::Compaction),
            Op::LeaseGrant => LeaseGrantRequest::decode(payload).ok().map(command::Op::LeaseGrant),
            Op::LeaseRevoke => LeaseRevokeRequest::decode(payload).ok().map(command::Op::LeaseRevoke),
            Op::LogEntry => {
                pending.push(payload.to_vec());
                continue;
            }
            _ => {
                apply(s, &mut pending);
                read(&s.mvcc, op, payload);
                continue;
            }
        };
        if let Some(data) = write.and_then(|op| propose(s, op)) {
            pending.push(data);
        }
    }
    apply(s, &mut pending);
    if s.entries > ENTRIES_PER_STORE || s.bytes > BYTES_PER_STORE {
        *guard = None;
    }
}

/// `Node::propose` before Raft: the request checks, the leader's lease decisions, the
/// size bound; the entry's data, or None for a refused request.
fn propose(s: &mut Store, op: command::Op) -> Option<Vec<u8>> {
    let mut cmd = Command { op: Some(op) };
    check_command(&cmd).ok()?;
    if let Some(command::Op::LeaseGrant(g)) = &mut cmd.op {
        // Node::prepare_grant.
        if g.ttl > LEASE_TTL_MAX_S {
            return None;
        }
        g.ttl = g.ttl.max(s.lease_ttl_min_s);
        if g.id == 0 {
            g.id = s.next_lease;
            s.next_lease += 1;
        }
        if g.id < 0 {
            return None;
        }
    }
    let data = cmd.encode_to_vec();
    (data.len() <= REQUEST_BYTES_MAX).then_some(data)
}

/// Applies the queued entries as the next log entries, in one call, as the apply thread
/// does with what one Ready committed.
fn apply(s: &mut Store, pending: &mut Vec<Vec<u8>>) {
    if pending.is_empty() {
        return;
    }
    let first = s.mvcc.applied_index() + 1;
    let revision = s.mvcc.revision();
    let list: Vec<Committed> = pending
        .drain(..)
        .zip(first..)
        .map(|(data, index)| {
            s.bytes += data.len() as u64;
            let mut entry = Entry::default();
            entry.set_entry_type(EntryType::EntryNormal);
            entry.index = index;
            entry.term = 1;
            entry.data = data.into();
            Committed { entry, conf: None }
        })
        .collect();
    s.entries += list.len() as u64;
    let last = first + list.len() as u64 - 1;
    let applied = match apply_committed_all(&s.mvcc, &list) {
        Ok(applied) => applied,
        Err(e) => panic!("applying fuzzed entries failed the store: {e}"),
    };
    assert_eq!(applied.len(), list.len(), "one result per entry");
    for a in &applied {
        match a {
            AppliedEntry::Command { applied, .. } => {
                if let Err(e) = &applied.response {
                    assert!(!storage_failure(e), "a fuzzed command failed the store: {e}");
                }
            }
            AppliedEntry::Skipped => panic!("an entry after the applied index was skipped"),
            AppliedEntry::Rejected(_) | AppliedEntry::Member | AppliedEntry::Empty => {}
        }
    }
    assert_eq!(s.mvcc.applied_index(), last, "every entry applied, in order");
    assert!(s.mvcc.revision() >= revision, "the revision went back");
    if s.mvcc.compaction_pending() {
        if let Err(e) = s.mvcc.compact_physically() {
            panic!("the physical compaction failed: {e}");
        }
    }
}

/// The read-only requests, as the services answer them from the state machine.
fn read(mvcc: &Mvcc, op: Op, payload: &[u8]) {
    let result = match op {
        Op::Range => match RangeRequest::decode(payload) {
            Ok(req) if req.encoded_len() <= REQUEST_BYTES_MAX => mvcc.range(&req).map(drop),
            _ => Ok(()),
        },
        Op::HashKv => match HashKvRequest::decode(payload) {
            Ok(req) => mvcc.hash_kv(req.revision).map(drop),
            Err(_) => Ok(()),
        },
        Op::LeaseTimeToLive => match LeaseTimeToLiveRequest::decode(payload) {
            Ok(req) if req.keys && mvcc.lease_ttl(req.id).is_some() => {
                mvcc.lease_keys(req.id, LEASE_KEYS_MAX).map(drop)
            }
            _ => Ok(()),
        },
        Op::LeaseLeases => {
            mvcc.leases();
            Ok(())
        }
        Op::WatchCreate => match WatchCreateRequest::decode(payload) {
            Ok(req) => watch_catch_up(mvcc, &req),
            Err(_) => Ok(()),
        },
        _ => Ok(()),
    };
    if let Err(e) = result {
        assert!(!storage_failure(&e), "a fuzzed {op:?} failed the store: {e}");
    }
}

/// `WatchHub::reserve`'s check of the range, then the catch-up read a watcher starting
/// at `start_revision` makes from disk.
fn watch_catch_up(mvcc: &Mvcc, req: &WatchCreateRequest) -> Result<(), StoreError> {
    if !req.range_end.is_empty() && req.range_end.as_ref() != [0] && req.key >= req.range_end {
        return Ok(());
    }
    let current = mvcc.revision();
    let start = if req.start_revision > 0 {
        req.start_revision
    } else {
        current + 1
    };
    if start > current {
        return Ok(());
    }
    match mvcc.events(start, current, req.prev_kv, CATCHUP_EVENTS_MAX) {
        Ok(_) | Err(StoreError::Compacted) => Ok(()),
        Err(e) => Err(e),
    }
}
