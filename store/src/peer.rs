//! The peer service a member serves on its peer port: Raft messages in, snapshots in,
//! the lease requests followers forward to the leader, and this member's own Status for
//! a member that shows them all.
//!
//! A snapshot is written to a file in the data directory as it arrives (at most
//! [`SNAPSHOT_BYTES_MAX`]), its digest is checked, and only then is it handed to the raft
//! thread, so a cut-off or corrupted stream never touches the state.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use capstan_proto::peer::peer_server::{Peer, PeerServer};
use capstan_proto::peer::{
    LeaseRenewRequest, LeaseRenewResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, MembersRequest,
    MembersResponse, PeerAck, RaftBatch, SnapshotChunk,
};
use raft::prelude::MessageType;
use tonic::{Request, Response, Status, Streaming};

use crate::error::StoreError;
use crate::node::Node;
use crate::replica::decode_message;

/// The largest snapshot a member accepts.
pub const SNAPSHOT_BYTES_MAX: u64 = 64 << 30;

pub struct PeerService {
    node: Arc<Node>,
    next_file: AtomicU64,
}

impl PeerService {
    pub fn new(node: Arc<Node>) -> PeerServer<PeerService> {
        PeerServer::new(PeerService {
            node,
            next_file: AtomicU64::new(1),
        })
        .max_decoding_message_size(crate::server::GRPC_MESSAGE_MAX_BYTES)
    }
}

fn io(e: std::io::Error) -> Status {
    Status::internal(format!("snapshot file: {e}"))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(&self, req: Request<Streaming<RaftBatch>>) -> Result<Response<PeerAck>, Status> {
        let mut inbound = req.into_inner();
        // One stream carries one peer's messages: its sender is checked once.
        let mut admitted = None;
        while let Some(batch) = inbound.message().await? {
            for b in batch.messages {
                match decode_message(&b) {
                    Ok(m) if admitted != Some(m.from) && self.node.refuses(m.from) => {
                        return Err(Status::failed_precondition(crate::transport::MEMBER_REMOVED))
                    }
                    Ok(m) if m.get_msg_type() != MessageType::MsgSnapshot => {
                        admitted = Some(m.from);
                        self.node.step(m)
                    }
                    Ok(_) => tracing::warn!("a snapshot message outside a snapshot stream is dropped"),
                    Err(e) => return Err(Status::invalid_argument(e.to_string())),
                }
            }
        }
        Ok(Response::new(PeerAck {}))
    }

    async fn snapshot(&self, req: Request<Streaming<SnapshotChunk>>) -> Result<Response<PeerAck>, Status> {
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let msg = decode_message(&first.message).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if msg.get_msg_type() != MessageType::MsgSnapshot {
            return Err(Status::invalid_argument(
                "the first chunk must carry a snapshot message",
            ));
        }
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        let path = self.node.config.data_dir.join(format!("snapshot-in-{n}.tmp"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io)?);
        let mut total = 0u64;
        let result: Result<(), Status> = async {
            while let Some(chunk) = inbound.message().await? {
                total += chunk.data.len() as u64;
                if total > SNAPSHOT_BYTES_MAX {
                    return Err(Status::resource_exhausted("snapshot too large"));
                }
                file.write_all(&chunk.data).map_err(io)?;
            }
            let file = file.into_inner().map_err(|e| io(e.into_error()))?;
            file.sync_all().map_err(io)?;
            Ok(())
        }
        .await;
        let checked = match result {
            Ok(()) => {
                let p = path.clone();
                tokio::task::spawn_blocking(move || {
                    let f = std::fs::File::open(&p).map_err(|e| StoreError::Storage(e.to_string()))?;
                    crate::snapshot::verify(std::io::BufReader::new(f))
                })
                .await
                .map_err(|e| Status::internal(e.to_string()))
                .and_then(|r| r.map_err(Status::from))
            }
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        tracing::info!(
            bytes = total,
            index = msg.get_snapshot().get_metadata().index,
            "received a snapshot"
        );
        if let Err(e) = self.node.snapshot_arrived(msg, path.clone()) {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        Ok(Response::new(PeerAck {}))
    }

    async fn lease_renew(&self, req: Request<LeaseRenewRequest>) -> Result<Response<LeaseRenewResponse>, Status> {
        if !self.node.is_leader() {
            return Err(StoreError::NotLeader.into());
        }
        match self.node.keep_alive_local(req.into_inner().id) {
            Some(ttl) => Ok(Response::new(LeaseRenewResponse { ttl })),
            None => Err(StoreError::LeaseNotFound.into()),
        }
    }

    async fn status(
        &self,
        _: Request<capstan_proto::etcdserverpb::StatusRequest>,
    ) -> Result<Response<capstan_proto::etcdserverpb::StatusResponse>, Status> {
        Ok(Response::new(
            crate::server::EtcdServices::new(self.node.clone()).status_now(),
        ))
    }

    async fn members(&self, _: Request<MembersRequest>) -> Result<Response<MembersResponse>, Status> {
        Ok(Response::new(MembersResponse {
            cluster_id: self.node.header.cluster_id,
            members: self.node.mvcc.members()?,
        }))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        if !self.node.is_leader() {
            return Err(StoreError::NotLeader.into());
        }
        match self.node.time_to_live_local(req.into_inner().id) {
            Some((granted_ttl, ttl)) => Ok(Response::new(LeaseTimeToLiveResponse { ttl, granted_ttl })),
            None => Err(StoreError::LeaseNotFound.into()),
        }
    }
}

/// Asks the members at `peer_urls` who this member (at `my_peer_url`) is, until one
/// answers with a member record carrying that URL: its identity and the members. How a member
/// added with `member add` and started with `--initial-cluster-state existing` joins.
pub async fn discover_identity(
    peer_urls: &[String],
    my_peer_url: &str,
    tls: Option<&crate::node::TlsIdentity>,
    deadline: std::time::Duration,
) -> Result<crate::node::Join, StoreError> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        for url in peer_urls.iter().filter(|u| u.as_str() != my_peer_url) {
            let Ok(endpoint) = tonic::transport::Endpoint::from_shared(url.clone()) else {
                continue;
            };
            let endpoint = endpoint.connect_timeout(std::time::Duration::from_secs(1));
            let endpoint = match tls {
                Some(t) => match endpoint.tls_config(t.client_config()) {
                    Ok(e) => e,
                    Err(_) => continue,
                },
                None => endpoint,
            };
            let Ok(channel) = endpoint.connect().await else {
                continue;
            };
            let mut client = capstan_proto::peer::peer_client::PeerClient::new(channel);
            let Ok(r) = client.members(MembersRequest {}).await else {
                continue;
            };
            let r = r.into_inner();
            if let Some(m) = r.members.iter().find(|m| m.peer_urls.iter().any(|u| u == my_peer_url)) {
                return Ok(crate::node::Join {
                    cluster_id: r.cluster_id,
                    member_id: m.id,
                    members: r.members.clone(),
                });
            }
        }
        if tokio::time::Instant::now() >= until {
            return Err(StoreError::MemberNotFound);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Serves the peer service on `listener` until `shutdown` resolves; over mutual TLS when
/// the member has `peer_tls` (only members with the cluster CA's certificates get in).
pub async fn serve_peer(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &node.config.peer_tls {
        builder = builder.tls_config(tls.server_config())?;
    }
    builder
        .tcp_nodelay(true)
        .add_service(PeerService::new(node))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
