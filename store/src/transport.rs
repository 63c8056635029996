//! Sending to peers: Raft messages, snapshots and forwarded lease requests, over
//! Capstan's own tonic peer service (`capstan.peer.v1.Peer`).
//!
//! Each peer has one task and one bounded queue. The task keeps a client-streaming `Raft`
//! call open and writes the queue into it in batches; when the call fails it reports the
//! peer unreachable (Raft then probes it gently) and reconnects after a short pause.
//! Nothing here ever blocks the raft thread: a full queue drops the message, which Raft
//! tolerates (it resends what matters).
//!
//! A snapshot message goes its own way: a task exports the state from a consistent
//! RocksDB view on a blocking thread, in chunks of [`SNAPSHOT_CHUNK_BYTES`] through a
//! queue of [`SNAPSHOT_CHUNKS_QUEUED`] (back-pressure: the export waits for the network),
//! and reports the outcome to Raft.
//!
//! Every connection to a peer may leave from one chosen local address
//! (`NodeConfig::peer_source_ip`, `--peer-source-ip`): tonic's `Endpoint::local_address`
//! binds the socket before it connects. Nothing else changes; the chaos harness uses it
//! to give each member its own loopback address, from which a fault-injecting proxy in
//! front of the peer ports learns which member a connection comes from.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_proto::peer::peer_client::PeerClient;
use capstan_proto::peer::{LeaseRenewRequest, LeaseTimeToLiveRequest, RaftBatch, SnapshotChunk};
use capstan_proto::store::Member;
use raft::prelude::{Message, MessageType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Result, StoreError};
use crate::mvcc::Mvcc;
use crate::replica::encode_message;

/// Raft messages queued per peer before new ones are dropped.
pub const PEER_QUEUE_MAX: usize = 4096;
/// Raft messages per batch on the wire, and the bytes after which a batch takes no more.
/// The receiver takes batches of up to [`crate::server::GRPC_MESSAGE_MAX_BYTES`] (8 MiB):
/// one message is at most [`APPEND_BYTES_MAX`] plus one entry of at most
/// [`crate::node::REQUEST_BYTES_MAX`] (1.5 MiB), and a batch at most this plus one message.
const BATCH_MESSAGES_MAX: usize = 256;
const BATCH_BYTES_MAX: usize = 1 << 20;
/// Entry bytes after which an append is cut in two. raft-rs's `batch_append` merges
/// every append to a follower made within one Ready into one message, whatever its size
/// (a follower catching up gets up to `max_size_per_msg` per acknowledgement merged).
pub const APPEND_BYTES_MAX: usize = 4 << 20;
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
pub const SNAPSHOT_CHUNKS_QUEUED: usize = 4;
/// Pause before reconnecting to a peer whose stream failed.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// What the transport tells the raft thread.
pub enum Report {
    Unreachable(u64),
    SnapshotSent {
        to: u64,
        ok: bool,
    },
    /// A peer refused this member's messages: it was removed from the cluster.
    Removed,
}

/// The status message peers answer a removed member's messages with (etcd's words).
pub const MEMBER_REMOVED: &str = "the member has been permanently removed from the cluster";

pub type Reporter = Box<dyn Fn(Report) + Send + Sync>;

struct Peer {
    url: String,
    queue: mpsc::Sender<Message>,
    channel: Channel,
}

pub struct Transport {
    my_id: u64,
    mvcc: Arc<Mvcc>,
    report: Arc<Reporter>,
    peers: Mutex<HashMap<u64, Peer>>,
    runtime: tokio::runtime::Handle,
    /// The local address connections to peers are bound to (`None`: the system's choice).
    source_ip: Option<IpAddr>,
    /// TLS to `https://` peers.
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Transport {
    /// Must be called inside a tokio runtime, where the peer tasks will run. Connections
    /// to peers leave from `source_ip` when it is given.
    pub fn new(
        my_id: u64,
        mvcc: Arc<Mvcc>,
        report: Reporter,
        source_ip: Option<IpAddr>,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Arc<Transport> {
        Arc::new(Transport {
            my_id,
            mvcc,
            report: Arc::new(report),
            peers: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
            source_ip,
            tls,
        })
    }

    /// Whether `id` is one of the members this member sends to.
    pub fn is_peer(&self, id: u64) -> bool {
        self.peers.lock().expect("peers lock poisoned").contains_key(&id)
    }

    /// Makes the peer set match the members (their first peer URL each).
    pub fn set_members(&self, members: &[Member]) {
        let mut peers = self.peers.lock().expect("peers lock poisoned");
        peers.retain(|id, p| {
            members
                .iter()
                .any(|m| m.id == *id && m.peer_urls.first() == Some(&p.url))
        });
        for m in members {
            if m.id == self.my_id || peers.contains_key(&m.id) {
                continue;
            }
            let Some(url) = m.peer_urls.first() else { continue };
            match self.connect(m.id, url) {
                Ok(p) => {
                    peers.insert(m.id, p);
                }
                Err(e) => tracing::warn!(peer = m.id, %url, error = %e, "bad peer URL"),
            }
        }
    }

    fn connect(&self, id: u64, url: &str) -> Result<Peer> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| StoreError::InvalidRequest(format!("peer URL {url}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .local_address(self.source_ip)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let endpoint = match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .map_err(|e| StoreError::InvalidRequest(format!("peer URL {url}: TLS: {e}")))?,
            None => endpoint,
        };
        let _guard = self.runtime.enter();
        let channel = endpoint.connect_lazy();
        let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
        let report = self.report.clone();
        self.runtime
            .spawn(peer_loop(id, PeerClient::new(channel.clone()), rx, report));
        Ok(Peer {
            url: url.to_string(),
            queue: tx,
            channel,
        })
    }

    /// Queues messages for their peers; never blocks.
    pub fn send(&self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let peers = self.peers.lock().expect("peers lock poisoned");
        for m in messages.into_iter().flat_map(|m| split_append(m, APPEND_BYTES_MAX)) {
            let Some(p) = peers.get(&m.to) else {
                tracing::debug!(to = m.to, "a raft message for an unknown peer");
                continue;
            };
            if m.get_msg_type() == MessageType::MsgSnapshot {
                let client = PeerClient::new(p.channel.clone());
                let mvcc = self.mvcc.clone();
                let report = self.report.clone();
                self.runtime.spawn(async move {
                    let to = m.to;
                    let ok = match send_snapshot(client, mvcc, m).await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(to, error = %e, "sending a snapshot failed");
                            false
                        }
                    };
                    report(Report::SnapshotSent { to, ok });
                });
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(m)) = p.queue.try_send(m) {
                tracing::debug!(to = m.to, "peer queue full; a raft message is dropped");
            }
        }
    }

    fn client(&self, id: u64) -> Result<PeerClient<Channel>> {
        let peers = self.peers.lock().expect("peers lock poisoned");
        let p = peers.get(&id).ok_or(StoreError::NoLeader)?;
        Ok(PeerClient::new(p.channel.clone()))
    }

    /// A keep-alive answered by the leader `leader`.
    pub async fn lease_renew(&self, leader: u64, id: i64, timeout: Duration) -> Result<Option<i64>> {
        let mut client = self.client(leader)?;
        let call = client.lease_renew(LeaseRenewRequest { id });
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(StoreError::Timeout),
            Ok(Ok(r)) => Ok(Some(r.into_inner().ttl)),
            Ok(Err(s)) if s.code() == tonic::Code::NotFound => Ok(None),
            Ok(Err(s)) => Err(forwarded_error(s)),
        }
    }

    /// Member `member`'s own etcd Status, asked on its peer port within `timeout`; or why
    /// there is none, in words for an operator (this is no forwarded request: its errors
    /// are not the leader's).
    pub async fn status(
        &self,
        member: u64,
        timeout: Duration,
    ) -> std::result::Result<capstan_proto::etcdserverpb::StatusResponse, String> {
        let Ok(mut client) = self.client(member) else {
            return Err("not connected".to_owned());
        };
        let call = client.status(capstan_proto::etcdserverpb::StatusRequest {});
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        }
    }

    pub async fn lease_time_to_live(&self, leader: u64, id: i64, timeout: Duration) -> Result<Option<(i64, i64)>> {
        let mut client = self.client(leader)?;
        let call = client.lease_time_to_live(LeaseTimeToLiveRequest { id });
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(StoreError::Timeout),
            Ok(Ok(r)) => {
                let r = r.into_inner();
                Ok(Some((r.granted_ttl, r.ttl)))
            }
            Ok(Err(s)) if s.code() == tonic::Code::NotFound => Ok(None),
            Ok(Err(s)) => Err(forwarded_error(s)),
        }
    }
}

/// Cuts an append whose entries hold more than `bytes_max` bytes of data into
/// consecutive appends, each the entries after the previous one's last (at least one
/// entry each). A follower takes them one after the other as it would the whole, and
/// answers each; the leader's progress of that follower moves on with every answer.
pub fn split_append(mut m: Message, bytes_max: usize) -> Vec<Message> {
    let size = |e: &raft::prelude::Entry| e.data.len() + e.context.len();
    if m.get_msg_type() != MessageType::MsgAppend || m.entries.iter().map(size).sum::<usize>() <= bytes_max {
        return vec![m];
    }
    let entries: Vec<raft::prelude::Entry> = m.take_entries().into();
    let (mut index, mut log_term) = (m.index, m.log_term);
    let mut out = Vec::new();
    let mut part = Vec::new();
    let mut part_bytes = 0;
    for e in entries {
        if !part.is_empty() && part_bytes + size(&e) > bytes_max {
            let last: &raft::prelude::Entry = part.last().expect("a part has entries");
            let (next_index, next_term) = (last.index, last.term);
            let mut piece = m.clone();
            (piece.index, piece.log_term) = (index, log_term);
            piece.set_entries(std::mem::take(&mut part).into());
            out.push(piece);
            (index, log_term, part_bytes) = (next_index, next_term, 0);
        }
        part_bytes += size(&e);
        part.push(e);
    }
    (m.index, m.log_term) = (index, log_term);
    m.set_entries(part.into());
    out.push(m);
    out
}

fn forwarded_error(s: tonic::Status) -> StoreError {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::FailedPrecondition => StoreError::LeaderChanged,
        _ => StoreError::Storage(format!("forwarding to the leader: {}", s.message())),
    }
}

/// Keeps one `Raft` stream open to a peer and feeds it from the queue.
async fn peer_loop(id: u64, client: PeerClient<Channel>, mut rx: mpsc::Receiver<Message>, report: Arc<Reporter>) {
    loop {
        let (btx, brx) = mpsc::channel::<RaftBatch>(16);
        let mut client = client.clone();
        let mut call = Box::pin(async move { client.raft(ReceiverStream::new(brx)).await });
        let failed = loop {
            tokio::select! {
                r = &mut call => {
                    if let Err(e) = r {
                        if e.code() == tonic::Code::FailedPrecondition && e.message() == MEMBER_REMOVED {
                            // Reported at every refusal (the report may be dropped when
                            // the raft thread is behind), one reconnect pause apart.
                            tracing::warn!(peer = id, "the peer says this member was removed from the cluster");
                            report(Report::Removed);
                        } else {
                            tracing::debug!(peer = id, error = %e, "raft stream to peer ended");
                        }
                    }
                    break true;
                }
                m = rx.recv() => {
                    let Some(first) = m else { return };
                    let mut batch = RaftBatch { messages: Vec::new() };
                    let mut bytes = 0;
                    let mut next = Some(first);
                    while let Some(m) = next.take() {
                        match encode_message(&m) {
                            Ok(b) => {
                                bytes += b.len();
                                batch.messages.push(b.into());
                            }
                            Err(e) => tracing::error!(error = %e, "encoding a raft message failed"),
                        }
                        if batch.messages.len() < BATCH_MESSAGES_MAX && bytes < BATCH_BYTES_MAX {
                            next = rx.try_recv().ok();
                        }
                    }
                    if btx.send(batch).await.is_err() {
                        break true;
                    }
                }
            }
        };
        if failed {
            report(Report::Unreachable(id));
            tokio::time::sleep(RECONNECT_PAUSE).await;
            // Drop what queued up while the peer was away: Raft resends from its progress.
            while rx.try_recv().is_ok() {}
        }
    }
}

/// Streams the state to a peer: the Raft message first, then the state in chunks.
async fn send_snapshot(mut client: PeerClient<Channel>, mvcc: Arc<Mvcc>, msg: Message) -> Result<()> {
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(SNAPSHOT_CHUNKS_QUEUED);
    let first = SnapshotChunk {
        message: encode_message(&msg)?.into(),
        data: Default::default(),
    };
    tx.send(first).await.map_err(|_| StoreError::Stopped)?;
    let export = tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter {
            tx,
            buf: Vec::with_capacity(SNAPSHOT_CHUNK_BYTES),
        };
        crate::snapshot::write_state(&mvcc, &mut w)?;
        w.flush_chunk().map_err(|e| StoreError::Storage(e.to_string()))?;
        Ok::<(), StoreError>(())
    });
    let call = client.snapshot(ReceiverStream::new(rx));
    let (sent, exported) = tokio::join!(call, export);
    exported.map_err(|e| StoreError::Storage(e.to_string()))??;
    sent.map_err(|s| StoreError::Storage(format!("snapshot stream: {}", s.message())))?;
    Ok(())
}

/// Cuts what the snapshot writer writes into chunks and queues them (blocking when the
/// queue is full: that is the back-pressure).
struct ChunkWriter {
    tx: mpsc::Sender<SnapshotChunk>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(SNAPSHOT_CHUNK_BYTES));
        self.tx
            .blocking_send(SnapshotChunk {
                message: Default::default(),
                data: data.into(),
            })
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "snapshot stream closed"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= SNAPSHOT_CHUNK_BYTES {
            self.flush_chunk()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::Entry;

    fn append(first: u64, sizes: &[usize]) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        (m.to, m.term, m.index, m.log_term, m.commit) = (2, 7, first - 1, 6, first + 1);
        let entries: Vec<Entry> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let mut e = Entry::default();
                (e.index, e.term, e.data) = (first + i as u64, 7, vec![0u8; n].into());
                e
            })
            .collect();
        m.set_entries(entries.into());
        m
    }

    #[test]
    fn an_append_within_the_limit_goes_whole() {
        let m = append(10, &[100, 100, 100]);
        assert_eq!(split_append(m.clone(), 300), vec![m]);
        let mut hb = Message::default();
        hb.set_msg_type(MessageType::MsgHeartbeat);
        assert_eq!(split_append(hb.clone(), 0), vec![hb]);
    }

    #[test]
    fn a_large_append_is_cut_into_consecutive_appends() {
        let m = append(10, &[100, 250, 100, 100, 400, 50]);
        let parts = split_append(m.clone(), 300);
        // Entries in order, each part at most 300 bytes unless it is one entry.
        let sizes: Vec<Vec<usize>> = parts
            .iter()
            .map(|p| p.entries.iter().map(|e| e.data.len()).collect())
            .collect();
        assert_eq!(sizes, vec![vec![100], vec![250], vec![100, 100], vec![400], vec![50]]);
        let (mut index, mut log_term) = (m.index, m.log_term);
        for p in &parts {
            // Each continues where the one before ended, as Raft's log-matching needs.
            assert_eq!((p.index, p.log_term), (index, log_term));
            assert_eq!(
                (p.to, p.term, p.commit, p.get_msg_type()),
                (m.to, m.term, m.commit, MessageType::MsgAppend)
            );
            assert_eq!(p.entries[0].index, index + 1);
            let last = p.entries.last().expect("every part holds entries");
            (index, log_term) = (last.index, last.term);
        }
        assert_eq!(index, 15);
    }
}
