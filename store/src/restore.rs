//! Rebuilding a member's data directory from a snapshot file (`capstan snapshot restore`,
//! as `etcdctl snapshot restore`), and reading what a snapshot file holds
//! (`capstan snapshot status`).
//!
//! A snapshot ([`crate::snapshot`]) is the whole state of one member: every key with its
//! kept revisions (the history by revision and the per-key index), the current and the
//! compacted revision, the leases and the keys attached to them, and the cluster's
//! membership and the Raft position the state was applied to. What a restore keeps and
//! what it replaces:
//!
//! - **Kept, byte for byte**: the key space and its history, the revision and compacted
//!   revision (so every key keeps its create and mod revisions and version, and the first
//!   write after the restore makes the old revision + 1), the leases (a restored member
//!   gives each a full TTL once it leads, as any new leader does).
//! - **Dropped**: the old membership (the `mmember/` and `mremoved/` records) and the Raft
//!   position (applied index and term, conf state). A restore makes a *new* cluster from
//!   the data, as etcd's does: the old members' IDs mean nothing to it, and a removed-member
//!   record could make it refuse a new member that happens to have an old ID.
//! - **New**: a Raft log bootstrapped exactly as a member of a new cluster started with
//!   the same flags bootstraps its own ([`Node::start`](crate::node::Node::start) through
//!   [`crate::node::new_member`]): the identity (cluster ID, member ID) and one `AddNode`
//!   conf change per initial member at term 1, indexes 1..=n, committed. The state's
//!   applied index is 0, so when the member starts it applies those entries like any new
//!   member, and applying them writes the new membership into the state. Every restored
//!   member of a cluster is restored from the same file with the same `--initial-cluster`
//!   and token, so their logs and states are the same, as a new cluster's are.
//!
//! Safety: the file is read through once and its digest checked before anything is
//! created (a corrupt, truncated or foreign file is refused with nothing left behind); a
//! data directory that exists and is not empty is refused (a restore never overwrites a
//! member's data). The new data directory is built in a temporary directory beside the
//! target (`.<name>.restore-<pid>`) and renamed into place only once complete and
//! synced, so a crash leaves either no data directory or a whole one (and, at worst, the
//! temporary directory, which can be deleted). While installing, the file is read a
//! second time and its digest checked again, so a file changed in between is refused too.
//!
//! Left out: restoring into a running member (a restore is offline, by design), carrying
//! the old cluster's identity over (the cluster ID is computed from the new flags, as any
//! new cluster's), and etcd's bbolt snapshots (an etcd snapshot is recognised and refused
//! with a clear message).
//! `--skip-hash-check` does not exist: every Capstan snapshot carries its digest.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use capstan_proto::etcdserverpb::RangeRequest;
use capstan_proto::store::{LeaseRecord, Member};
use prost::Message as _;

use crate::error::{Result, StoreError};
use crate::keys;
use crate::mvcc::Mvcc;
use crate::node::{new_member, NodeConfig};
use crate::raftlog::RaftLog;
use crate::snapshot::{Reader, MAGIC};

/// The digest that ends every snapshot (SHA-256).
const DIGEST_BYTES: u64 = 32;
/// Snapshots are padded to a multiple of this before the digest (see [`crate::snapshot`]).
const PAD_BYTES: u64 = 512;
/// Read buffer for the snapshot file.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// Where and as what a restored member starts: the flags of `capstan store` that decide a
/// new member's identity, with the same defaults ([`NodeConfig::new`]).
#[derive(Debug, Clone)]
pub struct RestoreConfig {
    /// The member's name (`--name`).
    pub name: String,
    /// The data directory to create (`--data-dir`); must not exist, or be empty.
    pub data_dir: PathBuf,
    /// (name, peer URL) of every member of the new cluster, this one included
    /// (`--initial-cluster`); empty means this member alone, at `peer_url`.
    pub initial_cluster: Vec<(String, String)>,
    /// This member's peer URL (`--initial-advertise-peer-urls`), used only when
    /// `initial_cluster` is empty.
    pub peer_url: String,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
}

impl RestoreConfig {
    /// A single member `name` restored into `data_dir`, with `capstan store`'s defaults.
    pub fn new(name: &str, data_dir: PathBuf) -> RestoreConfig {
        let defaults = NodeConfig::new(name, data_dir);
        RestoreConfig {
            name: defaults.name,
            data_dir: defaults.data_dir,
            initial_cluster: defaults.initial_cluster,
            peer_url: defaults.peer_url,
            initial_cluster_token: defaults.initial_cluster_token,
        }
    }

    /// The initial members, exactly as [`NodeConfig::initial_members`] computes them for a
    /// member started with the same flags.
    pub fn initial_members(&self) -> Vec<(String, String)> {
        let mut node = NodeConfig::new(&self.name, self.data_dir.clone());
        node.initial_cluster = self.initial_cluster.clone();
        node.peer_url = self.peer_url.clone();
        node.initial_members()
    }
}

/// What a snapshot file holds, read from it (its digest checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// CRC-32 (IEEE) of the history's records, the same value `HashKV` (`etcdctl endpoint
    /// hashkv`) gives at the snapshot's revision on the member it was taken from, and on a
    /// member restored from it until the next write.
    pub hash: u32,
    /// The revision the snapshot was taken at.
    pub revision: i64,
    /// The compacted revision (history before it is gone).
    pub compact_revision: i64,
    /// Versions of keys kept in the history (puts and deletes; etcd's "total keys"
    /// counts its database's keys, most of which are these).
    pub total_keys: u64,
    /// Leases granted and not yet revoked.
    pub leases: u64,
    /// The members of the cluster the snapshot was taken from.
    pub members: Vec<Member>,
    /// Members once removed from that cluster.
    pub removed_members: u64,
    /// Records in the file.
    pub records: u64,
    /// The file's size.
    pub size_bytes: u64,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSummary {
    /// The snapshot restored (its revision is the restored state's revision).
    pub snapshot: SnapshotStatus,
    /// Live keys in the restored state.
    pub live_keys: u64,
    /// The new cluster's ID and this member's, as the member will report them.
    pub cluster_id: u64,
    pub member_id: u64,
    /// The new cluster's members, in bootstrap order.
    pub members: Vec<Member>,
    /// The data directory created.
    pub data_dir: PathBuf,
}

/// Counts the bytes read through it (to find bytes after the digest).
struct Counting<R: Read> {
    r: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

fn refused(path: &Path, why: impl std::fmt::Display) -> StoreError {
    StoreError::Snapshot(format!("{}: {why}", path.display()))
}

/// Opens a snapshot file, checking what can be checked before reading it through: that
/// it is a regular file, starts with the magic, and has the size of a snapshot.
fn open_checked(path: &Path) -> Result<(File, u64)> {
    let mut file = File::open(path).map_err(|e| refused(path, format!("cannot open: {e}")))?;
    let meta = file.metadata().map_err(|e| refused(path, e))?;
    if !meta.is_file() {
        return Err(refused(path, "not a file"));
    }
    let size = meta.len();
    let mut head = [0u8; 20];
    let head_len = read_up_to(&mut file, &mut head).map_err(|e| refused(path, e))?;
    let head = &head[..head_len];
    if !head.starts_with(MAGIC) {
        // bbolt's meta page: a 16-byte page header, then its magic (little-endian).
        if head.len() >= 20 && head[16..20] == 0xED0C_DAEDu32.to_le_bytes() {
            return Err(refused(
                path,
                "an etcd (bbolt) snapshot, not a Capstan one: Capstan restores only snapshots \
                 saved from Capstan (capstan or etcdctl `snapshot save` against a Capstan cluster)",
            ));
        }
        return Err(refused(
            path,
            "not a Capstan snapshot (it does not start with the snapshot magic)",
        ));
    }
    let smallest = PAD_BYTES + DIGEST_BYTES;
    if size < smallest || !(size - DIGEST_BYTES).is_multiple_of(PAD_BYTES) {
        return Err(refused(
            path,
            format!(
                "truncated or damaged: {size} bytes, where a snapshot is a multiple of \
                 {PAD_BYTES} bytes plus its {DIGEST_BYTES}-byte digest"
            ),
        ));
    }
    file.seek(SeekFrom::Start(0)).map_err(|e| refused(path, e))?;
    Ok((file, size))
}

/// Reads into `buf` until it is full or the file ends; returns how much was read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Reads the snapshot at `path` record by record, handing each to `f`, and checks its
/// digest at the end and that nothing follows it. An `Err` from `f` stops the reading.
fn read_records(path: &Path, mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<u64> {
    let (file, size) = open_checked(path)?;
    let mut counting = Counting {
        r: BufReader::with_capacity(READ_BUFFER_BYTES, file),
        read: 0,
    };
    let bad = |e: StoreError| match e {
        StoreError::Snapshot(_) => e,
        e => refused(path, format!("corrupt or truncated: {e}")),
    };
    let mut records = 0u64;
    {
        let mut reader = Reader::new(&mut counting).map_err(bad)?;
        while let Some((k, v)) = reader.next_record().map_err(bad)? {
            f(&k, &v)?;
            records += 1;
        }
    }
    if counting.read != size {
        return Err(refused(
            path,
            format!("{} bytes follow the snapshot's digest", size - counting.read),
        ));
    }
    Ok(records)
}

fn meta_value(path: &Path, k: &[u8], v: &[u8]) -> Result<i64> {
    let b: [u8; 8] = v
        .try_into()
        .map_err(|_| refused(path, format!("a bad value for {}", String::from_utf8_lossy(k))))?;
    Ok(i64::from_be_bytes(b))
}

/// Reads a whole snapshot file, checking its digest, and says what it holds.
pub fn inspect(path: &Path) -> Result<SnapshotStatus> {
    let mut hash = crc32fast::Hasher::new();
    // As a store with no revision record reads (see `mvcc`): a new store is at revision 1.
    let mut revision = 1;
    let mut compact_revision = 0;
    let mut total_keys = 0;
    let mut leases = 0;
    let mut members = Vec::new();
    let mut removed_members = 0;
    let mut size_bytes = 0;
    let records = read_records(path, |k, v| {
        match k.first() {
            Some(&keys::REVS) => {
                // In revision order, as HashKV reads them.
                hash.update(k);
                hash.update(v);
                total_keys += 1;
            }
            Some(&keys::LEASE) => {
                LeaseRecord::decode(v).map_err(|e| refused(path, format!("a bad lease record: {e}")))?;
                leases += 1;
            }
            _ if k == keys::META_REVISION => revision = meta_value(path, k, v)?.max(1),
            _ if k == keys::META_COMPACT => compact_revision = meta_value(path, k, v)?,
            _ if k.starts_with(keys::MEMBER_PREFIX) => {
                members.push(Member::decode(v).map_err(|e| refused(path, format!("a bad member record: {e}")))?)
            }
            _ if k.starts_with(keys::REMOVED_PREFIX) => removed_members += 1,
            _ => {}
        }
        Ok(())
    })?;
    if let Ok(meta) = std::fs::metadata(path) {
        size_bytes = meta.len();
    }
    Ok(SnapshotStatus {
        hash: hash.finalize(),
        revision,
        compact_revision,
        total_keys,
        leases,
        members,
        removed_members,
        records,
        size_bytes,
    })
}

/// Whether a record of a snapshot belongs to the old cluster rather than to the data: its
/// membership and the Raft position of its state (see the module's documentation).
fn old_cluster_record(k: &[u8]) -> bool {
    k.starts_with(keys::MEMBER_PREFIX)
        || k.starts_with(keys::REMOVED_PREFIX)
        || k == keys::META_APPLIED
        || k == keys::META_APPLIED_TERM
        || k == keys::META_CONF_STATE
}

/// Refuses a data directory that holds anything (or is not a directory).
fn check_target(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(refused(dir, e)),
        Ok(meta) if !meta.is_dir() => Err(refused(dir, "exists and is not a directory")),
        Ok(_) => {
            let mut entries = std::fs::read_dir(dir).map_err(|e| refused(dir, e))?;
            if entries.next().is_some() {
                return Err(refused(
                    dir,
                    "the data directory already exists and is not empty: a restore never \
                     overwrites a member's data (move it away, or restore into another --data-dir)",
                ));
            }
            Ok(())
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| refused(dir, format!("cannot sync: {e}")))
}

/// Restores the snapshot file `snapshot` into a new data directory for the member
/// `config` describes (see the module's documentation for what is kept and what is new).
pub fn restore(snapshot: &Path, config: &RestoreConfig) -> Result<RestoreSummary> {
    let identity = new_member(&config.name, &config.initial_members(), &config.initial_cluster_token)?;
    check_target(&config.data_dir)?;
    // Read through and checked before anything is created.
    let status = inspect(snapshot)?;
    let target = &config.data_dir;
    let name = target
        .file_name()
        .ok_or_else(|| refused(target, "not a directory name"))?
        .to_string_lossy()
        .into_owned();
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| refused(&parent, format!("cannot create: {e}")))?;
    let tmp = parent.join(format!(".{name}.restore-{}", std::process::id()));
    if tmp.exists() {
        // Ours: the name carries this process's ID; a crashed run of the same ID left it.
        std::fs::remove_dir_all(&tmp).map_err(|e| refused(&tmp, format!("cannot remove: {e}")))?;
    }
    let built = build(snapshot, &tmp, &identity, &status).and_then(|live_keys| {
        sync_dir(&tmp)?;
        std::fs::rename(&tmp, target).map_err(|e| {
            refused(
                target,
                format!("cannot move the restored data from {} into place: {e}", tmp.display()),
            )
        })?;
        sync_dir(&parent)?;
        Ok(live_keys)
    });
    let live_keys = match built {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    tracing::info!(
        data_dir = %target.display(),
        revision = status.revision,
        live_keys,
        member_id = format_args!("{:x}", identity.member_id),
        cluster_id = format_args!("{:x}", identity.cluster_id),
        "restored a snapshot"
    );
    Ok(RestoreSummary {
        snapshot: status,
        live_keys,
        cluster_id: identity.cluster_id,
        member_id: identity.member_id,
        members: identity.members,
        data_dir: target.clone(),
    })
}

/// Builds the whole data directory in `dir`: the state from the snapshot, then the new
/// Raft log. Returns the number of live keys.
fn build(snapshot: &Path, dir: &Path, identity: &crate::node::NewMember, status: &SnapshotStatus) -> Result<u64> {
    std::fs::create_dir_all(dir).map_err(|e| refused(dir, format!("cannot create: {e}")))?;
    // The layout `Node::start` opens.
    let mvcc = Arc::new(Mvcc::open(&dir.join("db"))?);
    // `Mvcc::install` pulls records; the file is read on a thread of its own and its
    // records come through a bounded channel, so the digest check at the end of the
    // file decides whether the install succeeds.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(Vec<u8>, Vec<u8>)>>(1024);
    let path = snapshot.to_path_buf();
    let reading = std::thread::Builder::new()
        .name("snapshot-restore".into())
        .spawn(move || {
            let sent = read_records(&path, |k, v| {
                if old_cluster_record(k) {
                    return Ok(());
                }
                tx.send(Ok((k.to_vec(), v.to_vec())))
                    .map_err(|_| StoreError::Storage("the restore stopped reading".into()))
            });
            if let Err(e) = sent {
                let _ = tx.send(Err(e));
            }
        })
        .map_err(|e| StoreError::Storage(format!("spawning the reading thread: {e}")))?;
    let installed = mvcc.install(|| match rx.recv() {
        Ok(Ok(record)) => Ok(Some(record)),
        Ok(Err(e)) => Err(e),
        // The reader finished: every record was sent and the digest held.
        Err(_) => Ok(None),
    });
    drop(rx);
    let _ = reading.join();
    installed?;
    if mvcc.revision() != status.revision {
        return Err(refused(
            snapshot,
            format!(
                "changed while it was restored (revision {} then {})",
                status.revision,
                mvcc.revision()
            ),
        ));
    }
    debug_assert_eq!(mvcc.applied_index(), 0, "the old Raft position was dropped");
    let live_keys = mvcc
        .range(&RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            count_only: true,
            ..Default::default()
        })?
        .count as u64;
    let mut log = RaftLog::open(mvcc.clone(), &dir.join("raft"))?;
    log.set_identity(identity.cluster_id, identity.member_id)?;
    log.bootstrap(&identity.members)?;
    drop(log);
    mvcc.persist_applied()?;
    Ok(live_keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::MemberChange;
    use crate::snapshot::write_state;
    use capstan_proto::etcdserverpb::{
        CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeResponse,
    };
    use capstan_proto::store::{command, Command};
    use raft::Storage as _;

    fn put(k: &str, v: &str, lease: i64) -> Command {
        Command {
            op: Some(command::Op::Put(PutRequest {
                key: Bytes::from(k.to_string()),
                value: Bytes::from(v.to_string()),
                lease,
                ..Default::default()
            })),
        }
    }

    fn all(m: &Mvcc, rev: i64) -> RangeResponse {
        m.range(&RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            revision: rev,
            ..Default::default()
        })
        .expect("range")
    }

    fn member(id: u64, name: &str) -> Member {
        Member {
            id,
            name: name.into(),
            peer_urls: vec![format!("http://10.0.0.{id}:2380")],
            ..Default::default()
        }
    }

    /// A state with history, a delete, a compaction, a lease with a key, three members
    /// (one of them removed), written as a snapshot into `dir/snap.db`.
    fn snapshot_file(dir: &Path) -> (PathBuf, Mvcc) {
        let m = Mvcc::open(&dir.join("source")).expect("open");
        let mut index = 0;
        let mut next = || {
            index += 1;
            index
        };
        for (id, name) in [(11, "old1"), (12, "old2"), (13, "old3")] {
            m.apply_meta(next(), 1, Some((&MemberChange::Add(member(id, name)), b"cs")))
                .expect("add member");
        }
        m.apply_meta(next(), 1, Some((&MemberChange::Remove(13), b"cs")))
            .expect("remove member");
        let grant = Command {
            op: Some(command::Op::LeaseGrant(LeaseGrantRequest { ttl: 600, id: 77 })),
        };
        m.apply(next(), &grant).expect("grant").response.expect("granted");
        for i in 0..5 {
            m.apply(next(), &put("a", &format!("a{i}"), 0)).expect("put");
        }
        m.apply(next(), &put("b", "b0", 0)).expect("put");
        m.apply(next(), &put("gone", "x", 0)).expect("put");
        let del = Command {
            op: Some(command::Op::DeleteRange(DeleteRangeRequest {
                key: Bytes::from_static(b"gone"),
                ..Default::default()
            })),
        };
        m.apply(next(), &del).expect("delete").response.expect("deleted");
        let compact = Command {
            op: Some(command::Op::Compaction(CompactionRequest {
                revision: 3,
                physical: true,
            })),
        };
        m.apply(next(), &compact).expect("compact").response.expect("compacted");
        m.apply(next(), &put("leased", "l", 77))
            .expect("put")
            .response
            .expect("put with lease");
        m.apply(next(), &put("b", "b1", 0)).expect("put");
        assert!(m.applied_index() > 0 && m.members().expect("members").len() == 2);
        let path = dir.join("snap.db");
        let mut f = std::fs::File::create(&path).expect("create");
        write_state(&m, &mut f).expect("write snapshot");
        (path, m)
    }

    #[test]
    fn a_restore_keeps_every_key_and_revision_and_makes_a_new_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, source) = snapshot_file(dir.path());
        let status = inspect(&path).expect("inspect");
        assert_eq!(status.revision, source.revision());
        assert_eq!(status.compact_revision, 3);
        assert_eq!(status.leases, 1);
        assert_eq!(status.members.len(), 2);
        assert_eq!(status.removed_members, 1);
        let (hash, _, _) = source.hash_kv(0).expect("hash kv");
        assert_eq!(
            status.hash, hash,
            "the status hash is HashKV's at the snapshot's revision"
        );

        let data = dir.path().join("restored");
        let mut config = RestoreConfig::new("n2", data.clone());
        config.initial_cluster = vec![
            ("n1".into(), "http://127.0.0.1:12380".into()),
            ("n2".into(), "http://127.0.0.1:22380".into()),
            ("n3".into(), "http://127.0.0.1:32380".into()),
        ];
        config.initial_cluster_token = "restored".into();
        let summary = restore(&path, &config).expect("restore");
        let expect = new_member("n2", &config.initial_cluster, "restored").expect("identity");
        assert_eq!(
            (summary.cluster_id, summary.member_id),
            (expect.cluster_id, expect.member_id)
        );
        assert_eq!(summary.members, expect.members);
        assert_eq!(summary.live_keys, 3, "a, b, leased");
        assert_eq!(summary.snapshot, status);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".restore-"))
            .collect();
        assert!(leftovers.is_empty(), "temporary directories left: {leftovers:?}");

        let restored = Arc::new(Mvcc::open(&data.join("db")).expect("open restored"));
        assert_eq!(restored.revision(), source.revision());
        assert_eq!(restored.compact_revision(), 3);
        assert_eq!(restored.applied_index(), 0, "the old Raft position is dropped");
        assert!(
            restored.members().expect("members").is_empty(),
            "the old members are dropped"
        );
        assert!(!restored.is_removed(13).expect("removed"), "and the removed ones");
        assert_eq!(restored.leases(), vec![(77, 600)]);
        assert_eq!(
            restored.lease_keys(77, 10).expect("lease keys"),
            vec![Bytes::from_static(b"leased")]
        );
        for rev in [0, 3, 5, source.revision() - 1] {
            assert_eq!(all(&restored, rev).kvs, all(&source, rev).kvs, "keys at revision {rev}");
        }
        assert_eq!(
            restored.range(&RangeRequest {
                key: Bytes::from_static(b"a"),
                revision: 2,
                ..Default::default()
            }),
            Err(StoreError::Compacted),
            "the compaction holds"
        );
        assert_eq!(restored.hash_kv(0).expect("hash kv").0, status.hash);

        let log = RaftLog::open(restored.clone(), &data.join("raft")).expect("open log");
        assert_eq!(
            log.identity().expect("identity"),
            Some((expect.cluster_id, expect.member_id))
        );
        assert_eq!(log.last_index().expect("last index"), 3, "one AddNode per new member");
        assert_eq!(log.hard_state().commit, 3);
        let mut voters = log.conf_state().voters.clone();
        voters.sort();
        let mut ids: Vec<u64> = expect.members.iter().map(|m| m.id).collect();
        ids.sort();
        assert_eq!(voters, ids);
    }

    #[tokio::test]
    async fn a_restored_member_starts_with_the_new_members_and_writes_on_from_the_old_revision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, source) = snapshot_file(dir.path());
        let data = dir.path().join("member");
        let summary = restore(&path, &RestoreConfig::new("solo", data.clone())).expect("restore");
        let config = NodeConfig::new("solo", data);
        let node = crate::node::Node::start(config).expect("start the restored member");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let written = loop {
            match node.propose(put("after", "x", 0)).await {
                Ok(crate::mvcc::CommandResponse::Put(r)) => break r,
                other => {
                    assert!(std::time::Instant::now() < deadline, "no write accepted: {other:?}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        };
        assert_eq!(
            written.header.map(|h| h.revision),
            Some(source.revision() + 1),
            "the first write after the restore makes the old revision + 1"
        );
        let members = node.mvcc.members().expect("members");
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].id, summary.member_id);
        assert_eq!(members[0].name, "solo");
        assert_eq!(node.header.member_id, summary.member_id);
        assert_eq!(all(&node.mvcc, source.revision()).kvs, all(&source, 0).kvs);
        node.stop();
    }

    #[test]
    fn a_corrupt_or_truncated_file_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _source) = snapshot_file(dir.path());
        let good = std::fs::read(&path).expect("read");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("a flipped byte", {
                let mut b = good.clone();
                let i = b.len() / 2;
                b[i] ^= 0x40;
                b
            }),
            ("truncated", good[..good.len() - 100].to_vec()),
            ("one pad block short", {
                let mut b = good[..good.len() - 512 - 32].to_vec();
                b.extend_from_slice(&good[good.len() - 32..]);
                b
            }),
            ("trailing bytes", {
                let mut b = good.clone();
                b.extend_from_slice(&[0u8; 512]);
                b
            }),
            ("not a snapshot", b"hello".to_vec()),
            ("empty", Vec::new()),
        ];
        for (what, bytes) in cases {
            let bad = dir.path().join("bad.db");
            std::fs::write(&bad, &bytes).expect("write");
            let data = dir.path().join("data");
            let e = restore(&bad, &RestoreConfig::new("n1", data.clone())).expect_err(what);
            assert!(matches!(e, StoreError::Snapshot(_)), "{what}: {e:?}");
            assert!(
                e.to_string().contains("bad.db"),
                "{what}: the error names the file: {e}"
            );
            assert!(!data.exists(), "{what}: no data directory");
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .expect("list")
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .filter(|n| n.to_string_lossy().contains(".restore-"))
                .collect();
            assert!(left.is_empty(), "{what}: nothing left behind: {left:?}");
            assert!(inspect(&bad).is_err(), "{what}: status refuses it too");
        }
        // bbolt's magic where etcd's snapshot has it.
        let mut bolt = vec![0u8; 4096];
        bolt[16..20].copy_from_slice(&0xED0C_DAEDu32.to_le_bytes());
        let etcd = dir.path().join("etcd.db");
        std::fs::write(&etcd, &bolt).expect("write");
        let e = inspect(&etcd).expect_err("an etcd snapshot");
        assert!(e.to_string().contains("etcd (bbolt) snapshot"), "{e}");
    }

    #[test]
    fn an_existing_data_directory_is_refused_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _source) = snapshot_file(dir.path());
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("db")).expect("mkdir");
        std::fs::write(data.join("db/CURRENT"), b"precious").expect("write");
        let e = restore(&path, &RestoreConfig::new("n1", data.clone())).expect_err("refused");
        assert!(e.to_string().contains("already exists and is not empty"), "{e}");
        assert_eq!(std::fs::read(data.join("db/CURRENT")).expect("kept"), b"precious");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let e = restore(&path, &RestoreConfig::new("n1", file)).expect_err("refused");
        assert!(e.to_string().contains("not a directory"), "{e}");
        // An empty directory is taken (as a directory made ready for the member).
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        restore(&path, &RestoreConfig::new("n1", empty.clone())).expect("restore into an empty directory");
        assert!(empty.join("db").is_dir() && empty.join("raft").is_dir());
        // A member the initial cluster does not name.
        let mut config = RestoreConfig::new("n9", dir.path().join("other"));
        config.initial_cluster = vec![("n1".into(), "http://127.0.0.1:2380".into())];
        let e = restore(&path, &config).expect_err("refused");
        assert!(e.to_string().contains("does not name this member"), "{e}");
        assert!(!dir.path().join("other").exists());
    }
}
