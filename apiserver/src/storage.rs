//! Where objects live: the etcd v3 API semantics of the store, behind one type with two
//! backends.
//!
//! - [`Storage::local`]: the store member running in this process. Reads go straight to
//!   its MVCC state (after a ReadIndex barrier when they must be linearizable), writes
//!   are proposed to its Raft node, watches register on its watch hub: no network hop
//!   and no encoding.
//! - [`Storage::etcd`]: a remote etcd cluster (or remote Capstan stores) over gRPC, with
//!   the same request and response types.
//!
//! Above the raw calls sit the few operations the apiserver needs: get, list (a page at
//! a revision), create-if-absent, update and delete conditional on the object's
//! `mod_revision` (optimistic concurrency), and watch from a revision.

use std::sync::Arc;

use bytes::Bytes;
use capstan_proto::etcdserverpb::{
    self as pb, cluster_client::ClusterClient, compare, kv_client::KvClient, maintenance_client::MaintenanceClient,
    request_op, response_op, watch_client::WatchClient, WatchCreateRequest,
};
use capstan_proto::store::{command, Command};
use capstan_store::watch::StreamId;
use capstan_store::{CommandResponse, Node, WatchHub};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::error::{ApiError, Result};

/// One stored object: its key, value and revisions.
#[derive(Debug, Clone, PartialEq)]
pub struct Kv {
    pub key: Bytes,
    pub value: Bytes,
    pub create_revision: i64,
    pub mod_revision: i64,
}

impl From<capstan_proto::mvccpb::KeyValue> for Kv {
    fn from(kv: capstan_proto::mvccpb::KeyValue) -> Kv {
        Kv {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        }
    }
}

/// A page of a list.
#[derive(Debug, Clone)]
pub struct Page {
    pub kvs: Vec<Kv>,
    /// More keys follow the last one returned.
    pub more: bool,
    /// The store revision the page was read at.
    pub revision: i64,
}

// The etcd clients are larger than an Arc; one Backend exists per Storage (behind an Arc).
#[allow(clippy::large_enum_variant)]
enum Backend {
    Local(Arc<Node>),
    Etcd {
        kv: KvClient<Channel>,
        watch: WatchClient<Channel>,
        cluster: ClusterClient<Channel>,
        maintenance: MaintenanceClient<Channel>,
    },
}

/// The storage of the apiserver. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    backend: Arc<Backend>,
}

fn status_err(s: tonic::Status) -> ApiError {
    ApiError::from_store(&s)
}

/// A member ID as etcdctl prints it: lower-case hex.
fn hex_id(id: u64) -> String {
    format!("{id:x}")
}

/// The store cluster seen from one member ([`Storage::cluster_status`]), in the JSON
/// the dashboard reads (`GET /ui/api/controlplane`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The member that answered.
    pub member: MemberRef,
    /// Its own state (its fields at the top level of the JSON).
    #[serde(flatten)]
    pub raft: MemberRaft,
    pub db_size_in_use_bytes: i64,
    pub members: Vec<MemberStatus>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MemberRef {
    pub id: String,
    pub name: String,
}

/// One member of the store cluster, as `MemberList` shows it, with its own Status where
/// it was asked.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub id: String,
    pub name: String,
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
    pub is_learner: bool,
    /// The member's own answer (a local store asks every member over its peer
    /// connections); absent against a remote etcd, or when it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<MemberRaft>,
    /// Why the member's own answer is missing, when it was asked and did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A member's raft and storage state, from its own `Status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberRaft {
    /// The leader's ID as that member knows it, empty when it knows of none.
    pub leader: String,
    pub raft_term: u64,
    /// The member's commit index.
    pub raft_index: u64,
    pub raft_applied_index: u64,
    /// The member's MVCC revision.
    pub revision: i64,
    pub db_size_bytes: i64,
}

impl MemberRaft {
    fn of(status: &pb::StatusResponse) -> MemberRaft {
        MemberRaft {
            leader: leader_id(status.leader),
            raft_term: status.raft_term,
            raft_index: status.raft_index,
            raft_applied_index: status.raft_applied_index,
            revision: status.header.as_ref().map_or(0, |h| h.revision),
            db_size_bytes: status.db_size,
        }
    }
}

/// A leader's ID as the dashboard shows it: hex, empty for none (0).
fn leader_id(id: u64) -> String {
    if id == 0 {
        String::new()
    } else {
        hex_id(id)
    }
}

/// The first key after every key starting with `prefix` (etcd's prefix range end).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Storage {
    /// The store member running in this process.
    pub fn local(node: Arc<Node>) -> Storage {
        Storage {
            backend: Arc::new(Backend::Local(node)),
        }
    }

    /// A remote etcd cluster: `endpoints` are URLs (`http://127.0.0.1:2379`); requests
    /// are balanced over them.
    pub async fn etcd(endpoints: &[String]) -> Result<Storage> {
        Storage::etcd_tls(endpoints, None).await
    }

    /// [`Storage::etcd`] over TLS with `tls` for `https://` endpoints (upstream's
    /// `--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`).
    pub async fn etcd_tls(endpoints: &[String], tls: Option<tonic::transport::ClientTlsConfig>) -> Result<Storage> {
        if endpoints.is_empty() {
            return Err(ApiError::BadRequest("no etcd endpoints given".into()));
        }
        let mut list = Vec::new();
        for e in endpoints {
            let ep = Channel::from_shared(e.clone())
                .map_err(|err| ApiError::BadRequest(format!("bad etcd endpoint {e}: {err}")))?
                .connect_timeout(std::time::Duration::from_secs(5))
                .tcp_nodelay(true);
            let ep = match &tls {
                Some(tls) => ep
                    .tls_config(tls.clone())
                    .map_err(|err| ApiError::BadRequest(format!("etcd endpoint {e}: TLS: {err}")))?,
                None => ep,
            };
            list.push(ep);
        }
        let channel = Channel::balance_list(list.into_iter());
        Ok(Storage {
            backend: Arc::new(Backend::Etcd {
                kv: KvClient::new(channel.clone()).max_decoding_message_size(64 << 20),
                watch: WatchClient::new(channel.clone()).max_decoding_message_size(64 << 20),
                cluster: ClusterClient::new(channel.clone()),
                maintenance: MaintenanceClient::new(channel),
            }),
        })
    }

    /// The store cluster as the member this API server reads from sees it: its members,
    /// the leader, and that member's Raft and MVCC progress (etcd's `MemberList` and
    /// `Status`). Against a remote cluster, "that member" is whichever endpoint answered.
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        // The local member answers as its etcd API would (one definition of both).
        // Each member with its own Status (None: not asked) or why it has none.
        type Asked = (pb::Member, Option<std::result::Result<pb::StatusResponse, String>>);
        let (status, members): (pb::StatusResponse, Vec<Asked>) = match &*self.backend {
            Backend::Local(node) => {
                let services = capstan_store::server::EtcdServices::new(node.clone());
                let asked = services.member_statuses().await?;
                // This member's own answer is in the list (taken once); a member no
                // longer in its own list (being removed) answers apart.
                let own = asked
                    .iter()
                    .find(|(m, _)| m.id == node.header.member_id)
                    .and_then(|(_, s)| s.as_ref().ok().cloned())
                    .unwrap_or_else(|| services.status_now());
                let members = asked.into_iter().map(|(m, s)| (m, Some(s))).collect();
                (own, members)
            }
            Backend::Etcd {
                cluster, maintenance, ..
            } => {
                let status = maintenance
                    .clone()
                    .status(pb::StatusRequest {})
                    .await
                    .map_err(status_err)?
                    .into_inner();
                let list = cluster
                    .clone()
                    .member_list(pb::MemberListRequest { linearizable: false })
                    .await
                    .map_err(status_err)?
                    .into_inner();
                (status, list.members.into_iter().map(|m| (m, None)).collect())
            }
        };
        let members: Vec<MemberStatus> = members
            .into_iter()
            .map(|(m, asked)| MemberStatus {
                id: hex_id(m.id),
                name: m.name,
                peer_urls: m.peer_ur_ls,
                client_urls: m.client_ur_ls,
                is_learner: m.is_learner,
                status: asked.as_ref().and_then(|a| a.as_ref().ok()).map(MemberRaft::of),
                error: asked.and_then(|a| a.err()),
            })
            .collect();
        let header = status.header.unwrap_or_default();
        let member_id = hex_id(header.member_id);
        let name = members
            .iter()
            .find(|m| m.id == member_id)
            .map(|m| m.name.clone())
            .unwrap_or_default();
        Ok(ClusterStatus {
            member: MemberRef { id: member_id, name },
            raft: MemberRaft::of(&status),
            db_size_in_use_bytes: status.db_size_in_use,
            members,
        })
    }

    pub async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse> {
        match &*self.backend {
            Backend::Local(node) => {
                if !req.serializable {
                    node.linearizable_barrier().await?;
                }
                if req.range_end.is_empty() {
                    Ok(node.mvcc.range(&req)?)
                } else {
                    // A scan may be long: off the async workers.
                    let node = node.clone();
                    tokio::task::spawn_blocking(move || node.mvcc.range(&req))
                        .await
                        .map_err(|e| ApiError::Internal(format!("range task failed: {e}")))?
                        .map_err(ApiError::from)
                }
            }
            Backend::Etcd { kv, .. } => Ok(kv.clone().range(req).await.map_err(status_err)?.into_inner()),
        }
    }

    pub async fn txn(&self, req: pb::TxnRequest) -> Result<pb::TxnResponse> {
        match &*self.backend {
            Backend::Local(node) => match node
                .propose(Command {
                    op: Some(command::Op::Txn(req)),
                })
                .await?
            {
                CommandResponse::Txn(r) => Ok(r),
                other => Err(ApiError::Internal(format!("store answered a txn with {other:?}"))),
            },
            Backend::Etcd { kv, .. } => Ok(kv.clone().txn(req).await.map_err(status_err)?.into_inner()),
        }
    }

    /// The current value of `key` and the store revision of the read. `consistent`:
    /// linearizable (else whatever this member has applied).
    pub async fn get(&self, key: &str, consistent: bool) -> Result<(Option<Kv>, i64)> {
        let r = self
            .range(pb::RangeRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                serializable: !consistent,
                ..Default::default()
            })
            .await?;
        let rev = r.header.map_or(0, |h| h.revision);
        Ok((r.kvs.into_iter().next().map(Kv::from), rev))
    }

    /// Up to `limit` keys (0: all) from `start` (inclusive) to `end` (exclusive) at
    /// `revision` (0: the newest; consistent or not as `consistent` says).
    pub async fn list(&self, start: &[u8], end: &[u8], limit: i64, revision: i64, consistent: bool) -> Result<Page> {
        let r = self
            .range(pb::RangeRequest {
                key: Bytes::copy_from_slice(start),
                range_end: Bytes::copy_from_slice(end),
                limit,
                revision,
                serializable: !consistent || revision > 0,
                ..Default::default()
            })
            .await?;
        Ok(Page {
            revision: r.header.map_or(0, |h| h.revision),
            more: r.more,
            kvs: r.kvs.into_iter().map(Kv::from).collect(),
        })
    }

    /// Number of keys with `prefix`.
    pub async fn count(&self, prefix: &str) -> Result<i64> {
        let r = self
            .range(pb::RangeRequest {
                key: Bytes::copy_from_slice(prefix.as_bytes()),
                range_end: Bytes::from(prefix_end(prefix.as_bytes())),
                count_only: true,
                serializable: true,
                ..Default::default()
            })
            .await?;
        Ok(r.count)
    }

    /// Writes `key` and every key of `also` only if none of them exists. Returns the
    /// new revision, or the first key that existed.
    pub async fn create(&self, key: &str, value: Bytes, also: &[(String, Bytes)]) -> Result<Result<i64, String>> {
        let mut compares = vec![absent(key)];
        let mut puts = vec![put_op(key, value)];
        for (k, v) in also {
            compares.push(absent(k));
            puts.push(put_op(k, v.clone()));
        }
        // On failure, read the keys back to tell which existed.
        let failure = std::iter::once(key.to_string())
            .chain(also.iter().map(|(k, _)| k.clone()))
            .map(|k| range_op(&k))
            .collect();
        let r = self
            .txn(pb::TxnRequest {
                compare: compares,
                success: puts,
                failure,
            })
            .await?;
        if r.succeeded {
            return Ok(Ok(r.header.map_or(0, |h| h.revision)));
        }
        let keys = std::iter::once(key.to_string()).chain(also.iter().map(|(k, _)| k.clone()));
        for (k, resp) in keys.zip(r.responses) {
            if let Some(response_op::Response::ResponseRange(rr)) = resp.response {
                if !rr.kvs.is_empty() {
                    return Ok(Err(k));
                }
            }
        }
        Ok(Err(key.to_string()))
    }

    /// Replaces `key` if its mod_revision is still `expected`. `Ok(None)`: it changed
    /// (or is gone).
    pub async fn update(&self, key: &str, value: Bytes, expected: i64) -> Result<Option<i64>> {
        self.if_unchanged(key, expected, vec![put_op(key, value)]).await
    }

    /// Deletes `key` (and the keys of `also`) if its mod_revision is still `expected`.
    /// `Ok(None)`: it changed (or is gone).
    pub async fn delete(&self, key: &str, expected: i64, also: &[String]) -> Result<Option<i64>> {
        let mut ops = vec![delete_op(key)];
        ops.extend(also.iter().map(|k| delete_op(k)));
        self.if_unchanged(key, expected, ops).await
    }

    /// Runs `ops` in one transaction if `key`'s mod_revision is still `expected`;
    /// returns the new revision, or None if it was not.
    async fn if_unchanged(&self, key: &str, expected: i64, ops: Vec<pb::RequestOp>) -> Result<Option<i64>> {
        let r = self
            .txn(pb::TxnRequest {
                compare: vec![mod_is(key, expected)],
                success: ops,
                failure: vec![],
            })
            .await?;
        Ok(r.succeeded.then(|| r.header.map_or(0, |h| h.revision)))
    }

    /// Watches keys from `start` to `end` (exclusive), delivering every change after
    /// revision `after`, with the previous value.
    pub async fn watch(&self, start: &[u8], end: &[u8], after: i64) -> Result<WatchStream> {
        let req = WatchCreateRequest {
            key: Bytes::copy_from_slice(start),
            range_end: Bytes::copy_from_slice(end),
            start_revision: after + 1,
            prev_kv: true,
            progress_notify: true,
            ..Default::default()
        };
        match &*self.backend {
            Backend::Local(node) => {
                let hub = node.hub.clone();
                let (sid, rx) = hub.open_stream();
                let stream = WatchStream {
                    inner: WatchInner::Local {
                        hub: hub.clone(),
                        sid,
                        rx,
                    },
                };
                let (id, rev) = hub
                    .reserve(sid, &req)
                    .map_err(|e| ApiError::TooManyRequests(e.to_string()))?;
                hub.register(sid, id, &req, rev);
                Ok(stream)
            }
            Backend::Etcd { watch, .. } => {
                let (tx, rx) = mpsc::channel(4);
                tx.send(pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::CreateRequest(req)),
                })
                .await
                .map_err(|_| ApiError::Internal("watch request channel closed".into()))?;
                let responses = watch
                    .clone()
                    .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                    .map_err(status_err)?
                    .into_inner();
                Ok(WatchStream {
                    inner: WatchInner::Remote {
                        requests: tx,
                        responses,
                    },
                })
            }
        }
    }
}

fn absent(key: &str) -> pb::Compare {
    pb::Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: Bytes::copy_from_slice(key.as_bytes()),
        target_union: Some(compare::TargetUnion::CreateRevision(0)),
        ..Default::default()
    }
}

fn mod_is(key: &str, rev: i64) -> pb::Compare {
    pb::Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: Bytes::copy_from_slice(key.as_bytes()),
        target_union: Some(compare::TargetUnion::ModRevision(rev)),
        ..Default::default()
    }
}

fn put_op(key: &str, value: Bytes) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestPut(pb::PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value,
            ..Default::default()
        })),
    }
}

fn delete_op(key: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            ..Default::default()
        })),
    }
}

fn range_op(key: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestRange(pb::RangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            keys_only: true,
            ..Default::default()
        })),
    }
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Created or updated; `prev` is the value before (None when created).
    Put { kv: Kv, prev: Option<Kv> },
    /// Deleted at `revision`; `prev` is the last value.
    Delete {
        key: Bytes,
        prev: Option<Kv>,
        revision: i64,
    },
    /// Nothing changed up to this revision (a progress notification).
    Progress { revision: i64 },
}

// One per watch; boxing the larger variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum WatchInner {
    Local {
        hub: Arc<WatchHub>,
        sid: StreamId,
        rx: capstan_store::watch::WatchRx,
    },
    Remote {
        requests: mpsc::Sender<pb::WatchRequest>,
        responses: tonic::Streaming<pb::WatchResponse>,
    },
}

/// The changes of one watch, in revision order.
pub struct WatchStream {
    inner: WatchInner,
}

impl WatchStream {
    /// Asks the store for a progress notification: a [`Change::Progress`] with the
    /// store's current revision once this watch has delivered everything before it.
    pub fn request_progress(&self) {
        match &self.inner {
            WatchInner::Local { hub, sid, .. } => hub.request_progress(*sid),
            WatchInner::Remote { requests, .. } => {
                let _ = requests.try_send(pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
                        pb::WatchProgressRequest {},
                    )),
                });
            }
        }
    }

    async fn response(&mut self) -> Option<Result<pb::WatchResponse>> {
        match &mut self.inner {
            WatchInner::Local { rx, .. } => rx.recv().await.map(|out| Ok(out.into_response())),
            WatchInner::Remote { responses, .. } => match responses.message().await {
                Ok(Some(r)) => Some(Ok(r)),
                Ok(None) => None,
                Err(s) => Some(Err(status_err(s))),
            },
        }
    }

    /// The next batch of changes; `None` when the stream ended. A watch that fell
    /// behind compaction ends with `ApiError::Expired`.
    pub async fn next(&mut self) -> Option<Result<Vec<Change>>> {
        loop {
            let r = match self.response().await? {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            if r.compact_revision > 0 {
                return Some(Err(ApiError::Expired(format!(
                    "The resourceVersion for the provided watch is too old: required revision {} has been compacted",
                    r.compact_revision
                ))));
            }
            if r.canceled {
                return Some(Err(ApiError::Unavailable(format!(
                    "watch canceled: {}",
                    r.cancel_reason
                ))));
            }
            if r.events.is_empty() {
                if r.created {
                    continue;
                }
                return Some(Ok(vec![Change::Progress {
                    revision: r.header.map_or(0, |h| h.revision),
                }]));
            }
            let changes = r
                .events
                .into_iter()
                .filter_map(|e| {
                    let kv = e.kv?;
                    let prev = e.prev_kv.map(Kv::from);
                    Some(if e.r#type == capstan_proto::mvccpb::event::EventType::Delete as i32 {
                        Change::Delete {
                            revision: kv.mod_revision,
                            key: kv.key,
                            prev,
                        }
                    } else {
                        Change::Put { kv: Kv::from(kv), prev }
                    })
                })
                .collect();
            return Some(Ok(changes));
        }
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        if let WatchInner::Local { hub, sid, .. } = &self.inner {
            hub.close_stream(*sid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
