//! The etcd v3 gRPC services over a [`Node`]: KV, Watch, Lease, Cluster and Maintenance.
//!
//! Handlers translate between the wire and the node and add the header identity fields;
//! every decision about data lives in the node and the state machine. Requests the store
//! does not implement answer `UNIMPLEMENTED`, never a wrong answer.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use capstan_proto::etcdserverpb as pb;
use capstan_proto::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use capstan_proto::etcdserverpb::kv_server::{Kv, KvServer};
use capstan_proto::etcdserverpb::lease_server::{Lease, LeaseServer};
use capstan_proto::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use capstan_proto::store::{command, Command};
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::StoreError;
use crate::mvcc::CommandResponse;
use crate::node::{Node, REQUEST_BYTES_MAX};
use crate::watch::{CreateError, Outbound};
use crate::watch_service::WatchService;

/// The version reported by Maintenance.Status. Kubernetes enables consistent reads from
/// its cache and RequestWatchProgress only for etcd >= 3.5.13, whose semantics we serve.
pub const ETCD_VERSION: &str = "3.5.17";

/// Largest gRPC message accepted. Larger than etcd's request limit so that an oversized
/// request gets etcd's "request is too large" answer instead of a transport error.
pub const GRPC_MESSAGE_MAX_BYTES: usize = 8 << 20;

/// Keys listed by LeaseTimeToLive at most.
const LEASE_KEYS_MAX: usize = 100_000;

pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// How long [`EtcdServices::member_statuses`] waits for another member's Status.
pub const MEMBER_STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1_000);

#[derive(Clone)]
pub struct EtcdServices {
    node: Arc<Node>,
}

impl EtcdServices {
    pub fn new(node: Arc<Node>) -> Self {
        EtcdServices { node }
    }

    async fn write(&self, op: command::Op) -> Result<CommandResponse, Status> {
        Ok(self.node.propose(Command { op: Some(op) }).await?)
    }

    fn header(&self, rev: i64) -> Option<pb::ResponseHeader> {
        Some(self.node.header.make(rev))
    }

    /// The members as `MemberList` answers them (also for callers in this process).
    pub fn members(&self) -> Result<Vec<pb::Member>, StoreError> {
        Ok(self.node.mvcc.members()?.into_iter().map(wire_member).collect())
    }

    /// Every member's own `Status`, in the member list's order: this member's at once, the
    /// others' asked on their peer ports (connections the member keeps anyway), all at
    /// once, each within [`MEMBER_STATUS_TIMEOUT`]. A member that does not answer in
    /// time, or is not connected, gets why instead; a slow one delays the answer by that
    /// timeout at most.
    pub async fn member_statuses(&self) -> Result<Vec<(pb::Member, Result<pb::StatusResponse, String>)>, StoreError> {
        let members = self.members()?;
        let me = self.node.header.member_id;
        let asks = members.iter().map(|m| {
            let id = m.id;
            async move {
                if id == me {
                    return Ok(self.status_now());
                }
                self.node.transport.status(id, MEMBER_STATUS_TIMEOUT).await
            }
        });
        let answers = futures::future::join_all(asks).await;
        Ok(members.into_iter().zip(answers).collect())
    }

    /// This member's answer to `Status` (also for callers in this process).
    pub fn status_now(&self) -> pb::StatusResponse {
        let (db_size, in_use) = self.node.mvcc.db_size();
        pb::StatusResponse {
            header: self.header(self.node.mvcc.revision()),
            version: ETCD_VERSION.into(),
            db_size,
            leader: self.node.leader(),
            raft_index: self.node.commit_index(),
            raft_term: self.node.header.term(),
            raft_applied_index: self.node.mvcc.applied_index(),
            errors: Vec::new(),
            db_size_in_use: in_use,
            is_learner: self.node.is_learner(),
            storage_version: String::new(),
            db_size_quota: 0,
            downgrade_info: None,
        }
    }
}

/// A member record as the etcd API shows it.
///
/// Client URLs go out without their `http://` scheme. etcdctl 3.4 dials the client URLs
/// of `endpoint status --cluster` with gRPC's passthrough resolver, which sends the whole
/// URL as the HTTP/2 `:authority`; Rust's HTTP/2 server (h2) rejects an authority with a
/// scheme as malformed (`PROTOCOL_ERROR`), where etcd's Go server lets it pass. A bare
/// `host:port` is what those clients need and is accepted by every etcd client as an
/// endpoint.
fn wire_member(m: capstan_proto::store::Member) -> pb::Member {
    let bare = |u: String| match u.strip_prefix("http://") {
        Some(rest) => rest.to_string(),
        None => u,
    };
    pb::Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls.into_iter().map(bare).collect(),
        is_learner: m.is_learner,
    }
}

fn unexpected(r: CommandResponse) -> Status {
    Status::internal(format!("unexpected response kind: {r:?}"))
}

/// How long a physical Compact waits for this member's deletion at most.
pub const PHYSICAL_COMPACTION_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(300);

#[tonic::async_trait]
impl Kv for EtcdServices {
    async fn range(&self, req: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let req = req.into_inner();
        if req.encoded_len() > REQUEST_BYTES_MAX {
            return Err(StoreError::RequestTooLarge.into());
        }
        if !req.serializable {
            self.node.linearizable_barrier().await?;
        }
        // A single key is read in place; a scan may take long, so it runs off the async
        // workers (there may be only one) and cannot hold up other requests.
        let mut resp = if req.range_end.is_empty() {
            self.node.mvcc.range(&req)?
        } else {
            let node = self.node.clone();
            tokio::task::spawn_blocking(move || node.mvcc.range(&req))
                .await
                .map_err(|e| Status::internal(format!("range task failed: {e}")))??
        };
        self.node.header.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        match self.write(command::Op::Put(req.into_inner())).await? {
            CommandResponse::Put(mut r) => {
                self.node.header.fill(&mut r.header);
                Ok(Response::new(r))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        match self.write(command::Op::DeleteRange(req.into_inner())).await? {
            CommandResponse::DeleteRange(mut r) => {
                self.node.header.fill(&mut r.header);
                Ok(Response::new(r))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        match self.write(command::Op::Txn(req.into_inner())).await? {
            CommandResponse::Txn(mut r) => {
                self.node.header.fill(&mut r.header);
                Ok(Response::new(r))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Answered once the compaction is applied here (reads below it refused from then
    /// on); with `physical`, as etcd, only once this member has also deleted the versions
    /// it supersedes, which its compactor does in the background: at about 50,000
    /// versions a second, a long history takes longer than the request timeout, so that
    /// wait is bounded by [`PHYSICAL_COMPACTION_WAIT_MAX`] instead (the client's own
    /// deadline ends the call earlier if shorter; the wait holds no resources but a
    /// watch receiver).
    async fn compact(&self, req: Request<pb::CompactionRequest>) -> Result<Response<pb::CompactionResponse>, Status> {
        let deadline = tokio::time::Instant::now() + self.node.config.request_timeout.max(PHYSICAL_COMPACTION_WAIT_MAX);
        let req = req.into_inner();
        let (physical, revision) = (req.physical, req.revision);
        match self.write(command::Op::Compaction(req)).await? {
            CommandResponse::Compaction(mut r) => {
                if physical {
                    self.node.wait_compacted_physically(revision, deadline).await?;
                }
                self.node.header.fill(&mut r.header);
                Ok(Response::new(r))
            }
            other => Err(unexpected(other)),
        }
    }
}

/// The Watch service's one method; served by [`crate::watch_service::WatchService`], which
/// encodes the queued responses itself.
impl EtcdServices {
    pub(crate) async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<BoxStream<Outbound>>, Status> {
        let mut inbound = req.into_inner();
        let hub = self.node.hub.clone();
        let header = self.node.header.clone();
        let (sid, rx) = hub.open_stream();
        let tx = hub
            .stream_tx(sid)
            .ok_or_else(|| Status::unavailable("watch stream closed"))?;
        tokio::spawn(async move {
            use pb::watch_request::RequestUnion;
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => break,
                };
                match msg.request_union {
                    Some(RequestUnion::CreateRequest(c)) => match hub.reserve(sid, &c) {
                        Ok((id, rev)) => {
                            let created = pb::WatchResponse {
                                header: Some(header.make(rev)),
                                watch_id: id,
                                created: true,
                                ..Default::default()
                            };
                            if tx.send(Outbound::from(created)).await.is_err() {
                                hub.unreserve(sid, id);
                                break;
                            }
                            hub.register(sid, id, &c, rev);
                        }
                        Err(e) => {
                            let resp = pb::WatchResponse {
                                header: Some(header.make(hub.revision())),
                                watch_id: if e == CreateError::DuplicateId { c.watch_id } else { -1 },
                                created: true,
                                canceled: true,
                                cancel_reason: e.to_string(),
                                ..Default::default()
                            };
                            if tx.send(Outbound::from(resp)).await.is_err() {
                                break;
                            }
                        }
                    },
                    Some(RequestUnion::CancelRequest(c)) if hub.cancel(sid, c.watch_id) => {
                        let resp = pb::WatchResponse {
                            header: Some(header.make(hub.revision())),
                            watch_id: c.watch_id,
                            canceled: true,
                            ..Default::default()
                        };
                        if tx.send(Outbound::from(resp)).await.is_err() {
                            break;
                        }
                    }
                    Some(RequestUnion::CancelRequest(_)) => {}
                    Some(RequestUnion::ProgressRequest(_)) => hub.request_progress(sid),
                    None => {}
                }
            }
            hub.close_stream(sid);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok::<_, Status>))))
    }
}

#[tonic::async_trait]
impl Lease for EtcdServices {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        match self.write(command::Op::LeaseGrant(req.into_inner())).await? {
            CommandResponse::LeaseGrant(mut r) => {
                self.node.header.fill(&mut r.header);
                Ok(Response::new(r))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        match self.write(command::Op::LeaseRevoke(req.into_inner())).await? {
            CommandResponse::LeaseRevoke(mut r) => {
                self.node.header.fill(&mut r.header);
                Ok(Response::new(r))
            }
            other => Err(unexpected(other)),
        }
    }

    type LeaseKeepAliveStream = BoxStream<pb::LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let node = self.node.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Ok(Some(r)) = inbound.message().await {
                // An unknown or expired lease answers TTL 0, as etcd does.
                let ttl = match node.keep_alive(r.id).await {
                    Ok(ttl) => ttl.unwrap_or(0),
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        break;
                    }
                };
                let resp = pb::LeaseKeepAliveResponse {
                    header: Some(node.header.make(node.mvcc.revision())),
                    id: r.id,
                    ttl,
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        let rev = self.node.mvcc.revision();
        let ttl = self.node.time_to_live(req.id).await?;
        let resp = match (self.node.mvcc.lease_ttl(req.id), ttl) {
            (Some(granted), ttl) => {
                let remaining = ttl.map_or(-1, |(_, r)| r);
                let keys = if req.keys {
                    self.node.mvcc.lease_keys(req.id, LEASE_KEYS_MAX)?
                } else {
                    Vec::new()
                };
                pb::LeaseTimeToLiveResponse {
                    header: self.header(rev),
                    id: req.id,
                    ttl: remaining,
                    granted_ttl: granted,
                    keys,
                }
            }
            (None, _) => pb::LeaseTimeToLiveResponse {
                header: self.header(rev),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let leases = self
            .node
            .mvcc
            .leases()
            .into_iter()
            .map(|(id, _)| pb::LeaseStatus { id })
            .collect();
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: self.header(self.node.mvcc.revision()),
            leases,
        }))
    }
}

#[tonic::async_trait]
impl Cluster for EtcdServices {
    async fn member_add(&self, req: Request<pb::MemberAddRequest>) -> Result<Response<pb::MemberAddResponse>, Status> {
        let req = req.into_inner();
        let member = self.node.member_add(req.peer_ur_ls, req.is_learner).await?;
        Ok(Response::new(pb::MemberAddResponse {
            header: self.header(self.node.mvcc.revision()),
            member: Some(wire_member(member)),
            members: self.members()?,
        }))
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.node.member_remove(req.into_inner().id).await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.header(self.node.mvcc.revision()),
            members: self.members()?,
        }))
    }

    async fn member_update(
        &self,
        _: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(Status::unimplemented(
            "membership changes at run time are not implemented yet",
        ))
    }

    async fn member_list(
        &self,
        req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        if req.into_inner().linearizable {
            self.node.linearizable_barrier().await?;
        }
        let members = self.members()?;
        Ok(Response::new(pb::MemberListResponse {
            header: self.header(self.node.mvcc.revision()),
            members,
        }))
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.node.member_promote(req.into_inner().id).await?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.header(self.node.mvcc.revision()),
            members: self.members()?,
        }))
    }
}

#[tonic::async_trait]
impl Maintenance for EtcdServices {
    async fn alarm(&self, _: Request<pb::AlarmRequest>) -> Result<Response<pb::AlarmResponse>, Status> {
        // No quota yet, so no alarm is ever raised.
        Ok(Response::new(pb::AlarmResponse {
            header: self.header(self.node.mvcc.revision()),
            alarms: Vec::new(),
        }))
    }

    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(self.status_now()))
    }

    async fn defragment(&self, _: Request<pb::DefragmentRequest>) -> Result<Response<pb::DefragmentResponse>, Status> {
        let mvcc = self.node.mvcc.clone();
        tokio::task::spawn_blocking(move || mvcc.defragment())
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::DefragmentResponse {
            header: self.header(self.node.mvcc.revision()),
        }))
    }

    async fn hash(&self, _: Request<pb::HashRequest>) -> Result<Response<pb::HashResponse>, Status> {
        Err(Status::unimplemented("Hash is not implemented; use HashKV"))
    }

    async fn hash_kv(&self, req: Request<pb::HashKvRequest>) -> Result<Response<pb::HashKvResponse>, Status> {
        let (hash, compact_revision, hash_revision) = self.node.mvcc.hash_kv(req.into_inner().revision)?;
        Ok(Response::new(pb::HashKvResponse {
            header: self.header(self.node.mvcc.revision()),
            hash,
            compact_revision,
            hash_revision,
        }))
    }

    type SnapshotStream = BoxStream<pb::SnapshotResponse>;

    async fn snapshot(&self, _: Request<pb::SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        let node = self.node.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = crate::snapshot::stream_snapshot(&node, &tx) {
                let _ = tx.blocking_send(Err(Status::from(e)));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.node.move_leader(req.into_inner().target_id).await?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: self.header(self.node.mvcc.revision()),
        }))
    }

    async fn downgrade(&self, _: Request<pb::DowngradeRequest>) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(Status::unimplemented("Downgrade is not supported"))
    }
}

/// Connections served at once; further ones wait in the listen backlog.
pub const CONNECTIONS_MAX: usize = 4096;

/// Serves the etcd API for `node` on `listener` until `shutdown` resolves.
pub async fn serve(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_with(node, listener, None, shutdown).await
}

/// [`serve`], over TLS with `tls` when given: clients must present a certificate from
/// its CA (etcd's `--client-cert-auth`).
pub async fn serve_with(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    tls: Option<&crate::node::TlsIdentity>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let svc = EtcdServices::new(node);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls.server_config())?;
    }
    builder
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(10_000))
        .concurrency_limit_per_connection(1024)
        .add_service(KvServer::new(svc.clone()).max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES))
        .add_service(WatchService::new(svc.clone()))
        .add_service(LeaseServer::new(svc.clone()))
        .add_service(ClusterServer::new(svc.clone()))
        .add_service(MaintenanceServer::new(svc).max_encoding_message_size(usize::MAX))
        .serve_with_incoming_shutdown(limited_incoming(listener, CONNECTIONS_MAX), shutdown)
        .await
}

/// Accepted connections, at most `max` open at once, with Nagle off.
pub fn limited_incoming(
    listener: tokio::net::TcpListener,
    max: usize,
) -> impl Stream<Item = std::io::Result<LimitedConn>> + Send + 'static {
    let permits = Arc::new(tokio::sync::Semaphore::new(max));
    futures::stream::unfold((listener, permits), |(listener, permits)| async move {
        let permit = permits.clone().acquire_owned().await.ok()?;
        let item = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            LimitedConn {
                stream,
                _permit: permit,
            }
        });
        Some((item, (listener, permits)))
    })
}

/// A TCP connection holding one of the server's connection permits until it closes.
pub struct LimitedConn {
    stream: tokio::net::TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for LimitedConn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl tokio::io::AsyncRead for LimitedConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for LimitedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
