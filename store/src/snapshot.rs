//! Maintenance.Snapshot: a consistent copy of the state, streamed to the client.
//!
//! Format (Capstan's own; etcd's is a bbolt file, which no etcd client parses on save):
//! the magic `CAPSTAN-SNAPSHOT-1\n`, then records `u32 key length ‖ key ‖ u32 value
//! length ‖ value` (big-endian) for every state key in order, then the CRC-32 of all
//! preceding bytes. The log is not included: the state is complete without it.
//!
//! The snapshot is first spooled to a file in the data directory so that the stream can
//! announce exact `remaining_bytes` and the RocksDB snapshot is released quickly even
//! when the client reads slowly.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};

use capstan_proto::etcdserverpb::SnapshotResponse;
use tokio::sync::mpsc;
use tonic::Status;

use crate::error::{Result, StoreError};
use crate::node::Node;

pub const MAGIC: &[u8] = b"CAPSTAN-SNAPSHOT-1\n";
const CHUNK_BYTES: usize = 64 * 1024;

fn io(e: std::io::Error) -> StoreError {
    StoreError::Storage(format!("snapshot: {e}"))
}

/// Writes the snapshot to `w`; returns the revision it was taken at.
pub fn write_snapshot(node: &Node, w: &mut impl Write) -> Result<i64> {
    let mut crc = crc32fast::Hasher::new();
    let mut put = |b: &[u8], w: &mut dyn Write| -> std::io::Result<()> {
        crc.update(b);
        w.write_all(b)
    };
    put(MAGIC, w).map_err(io)?;
    let mut err = None;
    let rev = node.mvcc.export(|k, v| {
        let r = put(&(k.len() as u32).to_be_bytes(), w)
            .and_then(|()| put(k, w))
            .and_then(|()| put(&(v.len() as u32).to_be_bytes(), w))
            .and_then(|()| put(v, w));
        match r {
            Ok(()) => true,
            Err(e) => {
                err = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = err {
        return Err(io(e));
    }
    let sum = crc.finalize();
    w.write_all(&sum.to_be_bytes()).map_err(io)?;
    Ok(rev)
}

/// Spools a snapshot and sends it as a stream of chunks.
pub fn stream_snapshot(
    node: &Node,
    tx: &mpsc::Sender<Result<SnapshotResponse, Status>>,
) -> Result<()> {
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
