//! Snapshots of the state: Maintenance.Snapshot for clients, and the state a leader
//! streams to a member that needs it (same format).
//!
//! Format (Capstan's own; etcd's is a bbolt file): the magic `CAPSTAN-SNAPSHOT-1\n`, then
//! records `u32 key length ‖ key ‖ u32 value length ‖ value` (big-endian) for every state
//! key in order, then `u32::MAX` as the end mark, zero padding to a multiple of 512 bytes,
//! and the SHA-256 of everything before it. The padding and trailing digest are what
//! etcdctl checks when it saves a snapshot (its size must be 32 more than a multiple of
//! 512, as for a bbolt file with etcd's digest). The log is not included: the state is
//! complete without it.
//!
//! The snapshot is first spooled to a file in the data directory so that the stream can
//! announce exact `remaining_bytes` and the RocksDB snapshot is released quickly even
//! when the client reads slowly.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};

use capstan_proto::etcdserverpb::SnapshotResponse;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tonic::Status;

use crate::error::{Result, StoreError};
use crate::mvcc::{Mvcc, SnapshotPoint};
use crate::node::Node;

pub const MAGIC: &[u8] = b"CAPSTAN-SNAPSHOT-1\n";
/// No key or value in the state is larger than a request can make it.
const RECORD_BYTES_MAX: usize = 64 << 20;
const CHUNK_BYTES: usize = 64 * 1024;
const PAD_BYTES: u64 = 512;

fn io(e: std::io::Error) -> StoreError {
    StoreError::Storage(format!("snapshot: {e}"))
}

/// A writer that hashes and counts what passes through it.
struct Hashing<'a, W: Write> {
    w: &'a mut W,
    digest: Sha256,
    written: u64,
}

impl<W: Write> Hashing<'_, W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.digest.update(b);
        self.written += b.len() as u64;
        self.w.write_all(b)
    }

    fn record(&mut self, k: &[u8], v: &[u8]) -> std::io::Result<()> {
        self.put(&(k.len() as u32).to_be_bytes())?;
        self.put(k)?;
        self.put(&(v.len() as u32).to_be_bytes())?;
        self.put(v)
    }
}

/// Writes the snapshot to `w`; returns the revision it was taken at.
pub fn write_snapshot(node: &Node, w: &mut impl Write) -> Result<i64> {
    write_state(&node.mvcc, w).map(|(rev, _)| rev)
}

/// Writes a snapshot of `mvcc` to `w`; returns its revision and log position.
pub fn write_state(mvcc: &Mvcc, w: &mut impl Write) -> Result<(i64, SnapshotPoint)> {
    let mut h = Hashing {
        w,
        digest: Sha256::new(),
        written: 0,
    };
    h.put(MAGIC).map_err(io)?;
    let mut err = None;
    let (rev, point) = mvcc.export_at(|k, v| match h.record(k, v) {
        Ok(()) => true,
        Err(e) => {
            err = Some(e);
            false
        }
    })?;
    if let Some(e) = err {
        return Err(io(e));
    }
    h.put(&u32::MAX.to_be_bytes()).map_err(io)?;
    let pad = (PAD_BYTES - h.written % PAD_BYTES) % PAD_BYTES;
    h.put(&vec![0u8; pad as usize]).map_err(io)?;
    let sum = h.digest.finalize();
    h.w.write_all(&sum).map_err(io)?;
    Ok((rev, point))
}

/// Reads a snapshot record by record, checking its digest at the end.
pub struct Reader<R: Read> {
    r: R,
    digest: Sha256,
    read: u64,
    done: bool,
}

impl<R: Read> Reader<R> {
    pub fn new(mut r: R) -> Result<Reader<R>> {
        let mut magic = vec![0u8; MAGIC.len()];
        r.read_exact(&mut magic).map_err(io)?;
        if magic != MAGIC {
            return Err(StoreError::Corrupt("not a Capstan snapshot".into()));
        }
        let mut digest = Sha256::new();
        digest.update(&magic);
        Ok(Reader {
            r,
            digest,
            read: magic.len() as u64,
            done: false,
        })
    }

    fn take(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.r.read_exact(&mut b).map_err(io)?;
        self.digest.update(&b);
        self.read += n as u64;
        Ok(b)
    }

    fn len(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }

    /// The next (key, value), or None at the end (after the digest was checked).
    pub fn next_record(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        if self.done {
            return Ok(None);
        }
        let klen = self.len()?;
        if klen == u32::MAX {
            let pad = (PAD_BYTES - self.read % PAD_BYTES) % PAD_BYTES;
            self.take(pad as usize)?;
            let mut sum = [0u8; 32];
            self.r.read_exact(&mut sum).map_err(io)?;
            let expect = std::mem::take(&mut self.digest).finalize();
            if sum[..] != expect[..] {
                return Err(StoreError::Corrupt("snapshot digest mismatch".into()));
            }
            self.done = true;
            return Ok(None);
        }
        if klen as usize > RECORD_BYTES_MAX {
            return Err(StoreError::Corrupt("snapshot record too large".into()));
        }
        let k = self.take(klen as usize)?;
        let vlen = self.len()?;
        if vlen as usize > RECORD_BYTES_MAX {
            return Err(StoreError::Corrupt("snapshot record too large".into()));
        }
        let v = self.take(vlen as usize)?;
        Ok(Some((k, v)))
    }
}

/// Reads a whole snapshot to check it (the digest at its end) before it replaces anything.
pub fn verify(r: impl Read) -> Result<u64> {
    let mut reader = Reader::new(r)?;
    let mut records = 0;
    while reader.next_record()?.is_some() {
        records += 1;
    }
    Ok(records)
}

/// Spools a snapshot and sends it as a stream of chunks.
pub fn stream_snapshot(node: &Node, tx: &mpsc::Sender<Result<SnapshotResponse, Status>>) -> Result<()> {
    let path = node
        .config
        .data_dir
        .join(format!("snapshot-{}.tmp", std::process::id()));
    let file = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    // The name is only needed while writing: unlink now so nothing is left behind.
    let _ = std::fs::remove_file(&path);
    let mut w = BufWriter::new(file);
    let rev = write_snapshot(node, &mut w)?;
    let mut file = w.into_inner().map_err(|e| io(e.into_error()))?;
    let total = file.seek(SeekFrom::End(0)).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut sent = 0u64;
    let mut buf = vec![0u8; CHUNK_BYTES];
    while sent < total {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Err(StoreError::Storage("snapshot file shrank".into()));
        }
        sent += n as u64;
        let resp = SnapshotResponse {
            header: Some(node.header.make(rev)),
            remaining_bytes: total - sent,
            blob: bytes::Bytes::copy_from_slice(&buf[..n]),
            version: crate::server::ETCD_VERSION.into(),
        };
        if tx.blocking_send(Ok(resp)).is_err() {
            break;
        }
    }
    Ok(())
}
