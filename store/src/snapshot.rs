//! Maintenance.Snapshot: a consistent copy of the state, streamed to the client.
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
use crate::node::Node;

pub const MAGIC: &[u8] = b"CAPSTAN-SNAPSHOT-1\n";
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
    let mut h = Hashing {
        w,
        digest: Sha256::new(),
        written: 0,
    };
    h.put(MAGIC).map_err(io)?;
    let mut err = None;
    let rev = node.mvcc.export(|k, v| match h.record(k, v) {
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
    Ok(rev)
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
