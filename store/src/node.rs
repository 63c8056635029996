//! One member of a store cluster: the threads around the Raft [`Replica`] and the MVCC
//! state machine.
//!
//! ```text
//!  clients ──propose/read──▶ inputs (bounded) ──▶ raft thread ──entries──▶ apply thread
//!  peers ───raft messages──▶                      │  Replica::ready         │ Mvcc::apply_entry
//!                                                 │  1. send appends ──▶ transport (followers
//!                                                 │     persist in parallel)│ watch hub notify
//!                                                 │  2. hand out committed ─┤ answer proposers
//!                                                 │  3. persist (fsync)     │
//!                                                 │  4. send what needed 3, hand out the rest
//! ```
//!
//! - The **raft thread** owns the [`Replica`]. It takes every input waiting (up to
//!   `batch_max`: proposals that arrive together share one Ready, hence one fsync), ticks
//!   the Raft clock, and handles Readys in raft-rs's order. It is the only place that reads
//!   a clock for Raft; the [`Replica`] itself gets ticks.
//! - The **apply thread** applies committed entries in order (applying is idempotent: the
//!   applied index is written with the state), notifies the watch hub, and answers the
//!   member's own proposers, recognised by the context of their entries. Persisting the
//!   next entries overlaps with applying the previous ones.
//! - The **lease clock** proposes revokes of expired leases, on the leader only. A member
//!   that becomes leader gives every lease a full TTL, so a leader change expires nothing.
//! - The **compactor** does the physical part of compactions ([`Mvcc::compact_step`]):
//!   applying a Compact entry only records it, and this thread, woken by the apply thread
//!   (and at start, for a compaction a stop interrupted), deletes the superseded versions
//!   in batches of [`COMPACTION_BATCH_ENTRIES_MAX`] index entries with
//!   [`COMPACTION_PAUSE_MS`] between two, so that applies and reads go on. How far it got
//!   is published ([`Node::compacted_physically`]) for a Compact with `physical` set,
//!   which is answered once its revision is reached, as etcd's.
//! - Linearizable reads ask Raft for a read index (batched: one request answers every read
//!   waiting), wait until that index is applied, and read the local state.
//!
//! A single member is a cluster of one; the same code runs it.
//!
//! Metrics ([`crate::metrics`]): the raft thread counts leader changes, the apply thread
//! lease grants and revokes, proposers their pending and failed proposals; the Raft log
//! times its synced writes; a scrape reads the rest ([`Node::metrics_sample`]). The
//! [`Replica`] and the state machine count nothing.
//!
//! Membership: `member add` proposes a conf change carrying the new member's record; the
//! new member, started with `--initial-cluster-state existing`, asks the running members
//! for its ID ([`crate::peer::discover_identity`]) and starts with an empty log, which
//! the leader fills by appends or a snapshot. A member removed from the cluster stops.
//!
//! The leader refuses to promote a learner that has less than 90 % of the committed
//! entries, as etcd does (a promotion asked of a follower goes through unchecked).
//!
//! As etcd's strict reconfiguration check, the leader refuses a change after which the
//! voters it has heard from lately would not be a quorum.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use capstan_proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest, PutRequest};
use capstan_proto::store::{command, Command, Member, MemberAttributes};
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, EntryType, Message, Snapshot};
use raft::StateRole;
use tokio::sync::{oneshot, watch};

use crate::error::{Result, StoreError};
use crate::header::{id_from_name, HeaderSource};
use crate::lease::Lessor;
use crate::metrics::{Sample, StoreMetrics};
use crate::mvcc::{
    check_command, Applied, CommandResponse, CompactionStep, MemberChange, Mvcc, COMPACTION_BATCH_ENTRIES_MAX,
    LEASE_TTL_MAX_S,
};
use crate::raftlog::RaftLog;
use crate::replica::{Committed, Output, ReadySink, Replica, ReplicaConfig};
use crate::transport::Transport;
use crate::watch::{HubConfig, WatchHub};

/// Received snapshot states (files) by snapshot index, until Raft installs one.
type PendingSnapshots = std::collections::BTreeMap<u64, PathBuf>;
/// Received snapshot states kept at most.
const PENDING_SNAPSHOTS_MAX: usize = 3;
/// Linearizable reads waiting for a read index at most; more are refused as etcd
/// refuses requests it cannot keep up with.
const READS_WAITING_MAX: usize = 65_536;

/// Ticks after which an unanswered read-index request is asked again.
const READ_RETRY_TICKS: u64 = 3;

/// Entries the log keeps before the state's durable point when it is truncated, so that
/// a follower a little behind catches up from the log, not by snapshot (etcd: 5,000).
const LOG_CATCHUP_ENTRIES_MAX: u64 = 5_000;

/// etcd's default limit on the size of one request.
pub const REQUEST_BYTES_MAX: usize = 1536 * 1024;

/// The compactor's pause between two batches (etcd: 10 ms): what leaves the apply loop
/// and readers the cores and the write path while a long history is deleted. At
/// [`COMPACTION_BATCH_ENTRIES_MAX`] entries per batch, deleting 200,000 superseded
/// versions takes about 200 batches, some 2 s of pauses.
pub const COMPACTION_PAUSE_MS: u64 = 10;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// The URL clients reach this member at, reported by MemberList.
    pub client_url: String,
    /// The URL peers reach this member at.
    pub peer_url: String,
    /// (name, peer URL) of every member of a new cluster, this one included; empty means
    /// this member alone. Read only when the member has no Raft state yet.
    pub initial_cluster: Vec<(String, String)>,
    pub initial_cluster_token: String,
    /// The Raft tick: etcd's heartbeat interval.
    pub tick: Duration,
    /// Election timeout in ticks (randomized by Raft up to twice this).
    pub election_ticks: usize,
    /// How long a write or linearizable read may wait for Raft before it fails with
    /// "request timed out".
    pub request_timeout: Duration,
    /// Inputs taken into one Ready at most.
    pub batch_max: usize,
    /// Inputs waiting for the raft thread before proposers are refused.
    pub queue_max: usize,
    /// Leases shorter than this are granted this TTL (etcd: 1.5 election timeouts).
    pub lease_ttl_min_s: i64,
    /// How often expired leases are looked for.
    pub lease_check_interval: Duration,
    /// etcd's `--snapshot-count`: once this many applied entries are not yet durable in
    /// the state, it is flushed to disk; the log is then truncated up to the durable
    /// point (less a few entries for followers a little behind).
    pub log_keep_entries: u64,
    pub hub: HubConfig,
    /// (cluster ID, member ID) of a member added at run time that joins a running
    /// cluster (`--initial-cluster-state existing`): it starts with no log and learns
    /// everything from the leader.
    pub join: Option<Join>,
    /// The local address this member's connections to its peers leave from (etcd has no
    /// such flag); `None` lets the system choose. The chaos harness gives each member its
    /// own loopback address so that a proxy in front of the peer ports can tell who dials.
    pub peer_source_ip: Option<std::net::IpAddr>,
    /// Mutual TLS with the peers (their URLs are then `https://`): this member's
    /// certificate, and the CA that issued every member's.
    pub peer_tls: Option<TlsIdentity>,
    /// Where the member counts what it does ([`crate::metrics`]); the default counts for
    /// no registry.
    pub metrics: StoreMetrics,
}

/// A certificate (PEM, the chain), its key (PEM) and the CA (PEM) that the other side's
/// certificates must come from: for the etcd API's and the peers' TLS. The store only
/// uses them; `capstan` makes them.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity")
    }
}

impl TlsIdentity {
    /// The server side: this certificate, and client certificates required from the CA
    /// (etcd's `--client-cert-auth`, `--peer-client-cert-auth`).
    pub fn server_config(&self) -> tonic::transport::ServerTlsConfig {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// The client side: the CA to check servers with, and this certificate to present.
    pub fn client_config(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}

impl NodeConfig {
    pub fn new(name: &str, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            name: name.to_string(),
            data_dir,
            client_url: "http://127.0.0.1:2379".into(),
            peer_url: "http://127.0.0.1:2380".into(),
            initial_cluster: Vec::new(),
            initial_cluster_token: "capstan-cluster".into(),
            tick: Duration::from_millis(100),
            election_ticks: 10,
            request_timeout: Duration::from_secs(7),
            batch_max: 1024,
            queue_max: 16_384,
            lease_ttl_min_s: 2,
            lease_check_interval: Duration::from_millis(250),
            log_keep_entries: 100_000,
            hub: HubConfig::default(),
            join: None,
            peer_source_ip: None,
            peer_tls: None,
            metrics: StoreMetrics::default(),
        }
    }

    /// The initial members, in the order given (this member alone, at `peer_url`, by
    /// default).
    pub fn initial_members(&self) -> Vec<(String, String)> {
        if self.initial_cluster.is_empty() {
            vec![(self.name.clone(), self.peer_url.clone())]
        } else {
            self.initial_cluster.clone()
        }
    }
}

/// What a member joining a running cluster learned from it.
#[derive(Debug, Clone)]
pub struct Join {
    pub cluster_id: u64,
    pub member_id: u64,
    /// The members as the cluster knows them: whom to talk to until the log says more.
    pub members: Vec<Member>,
}

/// A member's ID: a stable hash of its name, peer URL and cluster token. Never 0 (Raft's
/// "nobody").
pub fn member_id(name: &str, peer_url: &str, token: &str) -> u64 {
    id_from_name(&format!("{token}/{name}/{peer_url}")).max(1)
}

/// What a member of a new cluster is, computed from its flags alone (the same on every
/// initial member, and for `capstan snapshot restore`, which must bootstrap a log that a
/// member started with the same flags would have written).
#[derive(Debug, Clone, PartialEq)]
pub struct NewMember {
    pub cluster_id: u64,
    pub member_id: u64,
    /// Every initial member, in the order given (the order of the bootstrap entries).
    pub members: Vec<Member>,
}

/// The IDs of member `name` of a new cluster of `initial` (name, peer URL) members started
/// with `token`: member IDs from name, peer URL and token ([`member_id`]), the cluster ID
/// from the token and the sorted member list. Fails when `initial` does not name `name`.
pub fn new_member(name: &str, initial: &[(String, String)], token: &str) -> Result<NewMember> {
    let members: Vec<Member> = initial
        .iter()
        .map(|(name, url)| Member {
            id: member_id(name, url, token),
            name: name.clone(),
            peer_urls: vec![url.clone()],
            client_urls: Vec::new(),
            is_learner: false,
        })
        .collect();
    let me = members
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| StoreError::InvalidRequest(format!("the initial cluster does not name this member ({name})")))?
        .id;
    let mut names: Vec<String> = members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_urls[0]))
        .collect();
    names.sort();
    let cluster_id = id_from_name(&format!("{token}/{}", names.join(",")));
    Ok(NewMember {
        cluster_id,
        member_id: me,
        members,
    })
}

/// Work for the raft thread.
enum Input {
    /// `answered`: a proposer waits for the answer under `seq` (the lease clock's revokes
    /// are fire and forget).
    Propose {
        seq: u64,
        data: Vec<u8>,
        answered: bool,
    },
    Step(Box<Message>),
    /// New linearizable reads are waiting.
    Read,
    /// A snapshot's state arrived in a file; the message goes to Raft.
    Snapshot {
        msg: Box<Message>,
        path: PathBuf,
    },
    SnapshotSent {
        to: u64,
        ok: bool,
    },
    Unreachable(u64),
    /// A peer refused this member's messages: it was removed from the cluster.
    Removed,
    TransferLeader(u64),
    ConfChange {
        seq: u64,
        cc: Box<ConfChange>,
    },
}

/// Work for the apply thread.
enum ApplyTask {
    Entries(Vec<Committed>),
    Install {
        path: PathBuf,
        done: std::sync::mpsc::SyncSender<Result<()>>,
    },
}

type Reply = oneshot::Sender<Result<CommandResponse>>;

/// A linearizable read waiting for the index it must see applied.
type ReadWaiter = oneshot::Sender<Result<u64>>;

/// Linearizable reads waiting for a read index.
#[derive(Default)]
struct Reads {
    /// Not yet asked of Raft.
    queued: Vec<ReadWaiter>,
    /// Asked, by request context, with the tick they were asked at.
    asked: HashMap<u64, (u64, Vec<ReadWaiter>)>,
    next_ctx: u64,
}

/// State the threads share with request handlers.
struct Shared {
    leader: AtomicU64,
    role_leader: AtomicBool,
    commit_index: AtomicU64,
    last_index: AtomicU64,
    proposals: Mutex<HashMap<u64, Reply>>,
    next_seq: AtomicU64,
    reads: Mutex<Reads>,
}

impl Shared {
    /// Answers the proposer waiting under `seq`, if it still waits.
    fn answer(&self, seq: u64, r: Result<CommandResponse>) {
        let reply = self.proposals.lock().expect("proposals lock poisoned").remove(&seq);
        if let Some(tx) = reply {
            let _ = tx.send(r);
        }
    }
}

/// The answers of one applied batch, on their way to the proposers.
type Answers = Vec<(Reply, Result<CommandResponse>)>;

/// Hands the answers of applied batches to their proposers from a task of the runtime
/// that serves them. A wake from outside the runtime costs a syscall (an eventfd write)
/// each time its thread sleeps, and the apply thread would wake every proposer of a
/// batch on its own; this way it wakes one task per batch, and the proposers, woken from
/// within, run one after the other before their connections write: a connection then
/// sends the batch's responses in one write. Unbounded, but it holds only answers to
/// proposals in flight, which `NodeConfig::queue_max` and the request timeout bound.
async fn deliver_answers(mut rx: tokio::sync::mpsc::UnboundedReceiver<Answers>) {
    while let Some(answers) = rx.recv().await {
        for (tx, r) in answers {
            let _ = tx.send(r);
        }
    }
}

/// A running store member.
pub struct Node {
    pub config: NodeConfig,
    pub mvcc: Arc<Mvcc>,
    pub hub: Arc<WatchHub>,
    pub header: Arc<HeaderSource>,
    pub transport: Arc<Transport>,
    lessor: Arc<Mutex<Lessor>>,
    inputs: SyncSender<Input>,
    shared: Arc<Shared>,
    applied: watch::Receiver<u64>,
    epoch: Instant,
    next_lease_id: AtomicI64,
    stopped: Arc<AtomicBool>,
    /// Synced writes of the Raft log ([`RaftLog::synced_writes`]).
    raft_synced_writes: Arc<AtomicU64>,
    /// Wakes the compactor thread (a compaction to do, or the member stopping).
    compactor_wake: SyncSender<()>,
    /// The revision up to which compaction is physically done, as the compactor
    /// publishes it.
    compacted_physically: watch::Receiver<i64>,
    /// The member's threads, joined by [`Node::stop`].
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Node {
    /// Opens the data directory (bootstrapping a new cluster's log on first start) and
    /// starts the raft, apply and lease threads and the watch hub. Must run inside a
    /// tokio runtime (the transport spawns its tasks there).
    pub fn start(config: NodeConfig) -> Result<Arc<Node>> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StoreError::Storage(format!("{}: {e}", config.data_dir.display())))?;
        let mvcc = Arc::new(Mvcc::open(&config.data_dir.join("db"))?);
        let mut log = RaftLog::open(mvcc.clone(), &config.data_dir.join("raft"))?;
        log.set_metrics(config.metrics.clone());
        let token = &config.initial_cluster_token;
        let (cluster_id, my_id) = match (log.identity()?, &config.join) {
            (Some(ids), _) => ids,
            (None, Some(join)) => {
                log.set_identity(join.cluster_id, join.member_id)?;
                (join.cluster_id, join.member_id)
            }
            (None, None) => {
                if mvcc.applied_index() > 0 {
                    // State without a Raft log: a data directory of a Capstan before
                    // replication (or a log lost on its own). Refuse rather than guess.
                    return Err(StoreError::Corrupt(format!(
                        "{} holds a state but no Raft log; start with an empty --data-dir",
                        config.data_dir.display()
                    )));
                }
                let NewMember {
                    cluster_id,
                    member_id: me,
                    members,
                } = new_member(&config.name, &config.initial_members(), token)?;
                log.set_identity(cluster_id, me)?;
                if !log.initialized() {
                    log.bootstrap(&members)?;
                }
                (cluster_id, me)
            }
        };
        let header = Arc::new(HeaderSource::new(cluster_id, my_id));
        let hub = WatchHub::start(mvcc.clone(), header.clone(), config.hub.clone());
        let epoch = Instant::now();
        let lessor = Arc::new(Mutex::new(Lessor::new()));
        {
            let mut l = lessor.lock().expect("lessor lock poisoned");
            for (id, ttl) in mvcc.leases() {
                l.grant(id, ttl, 0);
            }
        }
        let incarnation = log.next_incarnation()?;
        let raft_synced_writes = log.synced_writes();
        let voters = log.conf_state().voters.len();
        let applied = mvcc
            .applied_index()
            .min(log.hard_state().commit)
            .max(log.first_index_() - 1);
        let mut rc = ReplicaConfig::new(my_id, config.election_ticks.max(2), 1);
        rc.applied = applied;
        let replica = Replica::new(&rc, log)?;
        // A cluster of one need not wait an election timeout.
        let solo = voters == 1 && replica.conf_state().voters.contains(&my_id);
        header.set_term(replica.term());
        let (input_tx, input_rx) = std::sync::mpsc::sync_channel(config.queue_max);
        let (apply_tx, apply_rx) = std::sync::mpsc::sync_channel(64);
        let (applied_tx, applied_rx) = watch::channel(mvcc.applied_index());
        // One slot: wakes coalesce, the compactor looks at the state each time it wakes.
        let (compactor_wake, compactor_wake_rx) = std::sync::mpsc::sync_channel(1);
        let (compacted_tx, compacted_rx) = watch::channel(mvcc.compact_done_revision());
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(1);
        let stopped = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            leader: AtomicU64::new(0),
            role_leader: AtomicBool::new(false),
            commit_index: AtomicU64::new(replica.commit_index()),
            last_index: AtomicU64::new(replica.last_index()),
            proposals: Mutex::new(HashMap::new()),
            // Proposal IDs: this start's number in the high bits, a counter below.
            next_seq: AtomicU64::new(incarnation << 40),
            reads: Mutex::new(Reads::default()),
        });
        let transport = Transport::new(
            my_id,
            mvcc.clone(),
            input_sender(&input_tx),
            config.peer_source_ip,
            config.peer_tls.as_ref().map(TlsIdentity::client_config),
        );
        let known = mvcc.members()?;
        match &config.join {
            // Until its state holds the membership, a joining member talks to the members
            // the cluster told it about.
            Some(join) if known.is_empty() => transport.set_members(&join.members),
            _ => transport.set_members(&known),
        }
        // Lease IDs: the member's ID in the high bits keeps members from colliding, the
        // time in the low bits keeps a restarted member from reusing its own IDs.
        let lease_base = (((my_id & 0xFFFF) as i64) << 46) | ((unix_ms << 4) & ((1i64 << 46) - 1));
        let node = Arc::new(Node {
            config: config.clone(),
            mvcc: mvcc.clone(),
            hub: hub.clone(),
            header: header.clone(),
            transport: transport.clone(),
            lessor: lessor.clone(),
            inputs: input_tx.clone(),
            shared: shared.clone(),
            applied: applied_rx,
            epoch,
            next_lease_id: AtomicI64::new(lease_base.max(1)),
            stopped: stopped.clone(),
            raft_synced_writes,
            compactor_wake: compactor_wake.clone(),
            compacted_physically: compacted_rx,
            threads: Mutex::new(Vec::new()),
        });
        let raft_loop = RaftLoop {
            replica,
            inputs: input_rx,
            apply: apply_tx,
            shared: shared.clone(),
            header,
            transport,
            lessor: lessor.clone(),
            epoch,
            tick: config.tick,
            batch_max: config.batch_max,
            keep: config.log_keep_entries,
            mvcc: mvcc.clone(),
            pending_snapshot: std::collections::BTreeMap::new(),
            waiting: std::collections::VecDeque::new(),
            waiting_max: config.queue_max,
            campaign_when_ready: solo,
            ticks: 0,
            flushing: None,
            durable_checked_at: 0,
            stopped: stopped.clone(),
            metrics: config.metrics.clone(),
        };
        let mut threads = Vec::new();
        threads.push(
            std::thread::Builder::new()
                .name("store-raft".into())
                .spawn(move || raft_loop.run())
                .map_err(|e| StoreError::Storage(format!("spawning the raft thread: {e}")))?,
        );
        let (answers_tx, answers_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(deliver_answers(answers_rx));
        let compactor = Compactor {
            mvcc: mvcc.clone(),
            wake: compactor_wake_rx,
            done: compacted_tx,
            stopped: stopped.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name("store-compactor".into())
                .spawn(move || compactor.run())
                .map_err(|e| StoreError::Storage(format!("spawning the compactor thread: {e}")))?,
        );
        let apply_loop = ApplyLoop {
            mvcc,
            hub,
            lessor: lessor.clone(),
            epoch,
            my_id,
            shared,
            answers: answers_tx,
            transport: node.transport.clone(),
            applied: applied_tx,
            compactor_wake,
            stopped: stopped.clone(),
            metrics: config.metrics.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name("store-apply".into())
                .spawn(move || apply_loop.run(apply_rx))
                .map_err(|e| StoreError::Storage(format!("spawning the apply thread: {e}")))?,
        );
        let interval = config.lease_check_interval;
        let weak = Arc::downgrade(&node);
        threads.push(
            std::thread::Builder::new()
                .name("lease-clock".into())
                .spawn(move || lease_clock(weak, interval))
                .map_err(|e| StoreError::Storage(format!("spawning the lease thread: {e}")))?,
        );
        *node.threads.lock().expect("threads lock poisoned") = threads;
        let weak = Arc::downgrade(&node);
        config
            .metrics
            .attach(move || weak.upgrade().map(|n| n.metrics_sample()));
        node.publish_attributes();
        Ok(node)
    }

    /// Proposes this member's name and client URL once it has a leader, as etcd does.
    fn publish_attributes(self: &Arc<Self>) {
        let node = self.clone();
        tokio::spawn(async move {
            let attrs = MemberAttributes {
                id: node.header.member_id,
                name: node.config.name.clone(),
                client_urls: vec![node.config.client_url.clone()],
            };
            while !node.stopped.load(Ordering::Acquire) {
                let published = node
                    .mvcc
                    .members()
                    .ok()
                    .and_then(|ms| ms.into_iter().find(|m| m.id == attrs.id))
                    .is_some_and(|m| m.name == attrs.name && m.client_urls == attrs.client_urls);
                if published {
                    return;
                }
                let cmd = Command {
                    op: Some(command::Op::MemberAttributes(attrs.clone())),
                };
                if node.propose(cmd).await.is_ok() {
                    return;
                }
                tokio::time::sleep(node.config.tick * 5).await;
            }
        });
    }

    /// Stops the background threads. Pending proposals are answered with `Stopped`.
    /// Stops the member and waits for its threads (a thread must not drop the store while
    /// the process exits: RocksDB aborts on that race).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let _ = self.inputs.try_send(Input::Read);
        let _ = self.compactor_wake.try_send(());
        self.hub.stop();
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock poisoned"));
        let me = std::thread::current().id();
        for t in threads {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        // Applies skip RocksDB's WAL, so closing the database flushes them. Flush now
        // instead: a stopped member's state is on disk when `stop` returns, not whenever
        // the last handle to it is dropped (a test's temporary directory may be gone by
        // then, and RocksDB waits 1 s after a failed flush). Nothing depends on it: the
        // Raft log would apply the entries again.
        if let Err(e) = self.mvcc.persist_applied() {
            tracing::warn!(error = %e, "flushing the state at stop failed");
        }
    }

    /// Resolves once the member has stopped (asked to, removed from the cluster, or after
    /// a storage failure). Looks once per tick.
    pub async fn wait_stopped(&self) {
        while !self.stopped.load(Ordering::Acquire) {
            tokio::time::sleep(self.config.tick).await;
        }
    }

    /// Milliseconds on this node's monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Synced writes (one fsync each) of this member's Raft log since it started: the
    /// group commits, plus the rare writes of conf state, truncation point and identity.
    /// Proposals per fsync = acknowledged writes / the growth of this count.
    pub fn raft_synced_writes(&self) -> u64 {
        self.raft_synced_writes.load(Ordering::Relaxed)
    }

    /// What a metrics scrape reads of this member ([`crate::metrics`]): atomics, RocksDB
    /// properties, the hub's and the lessor's counts, no walk over data.
    pub fn metrics_sample(&self) -> Sample {
        let (synced, unsynced) = self.hub.counts();
        let (db_total_bytes, db_in_use_bytes) = self.mvcc.db_size();
        Sample {
            has_leader: self.leader() != 0,
            is_leader: self.is_leader(),
            term: self.header.term(),
            committed_index: self.commit_index(),
            applied_index: self.mvcc.applied_index(),
            db_total_bytes,
            db_in_use_bytes,
            watchers: synced + unsynced,
            slow_watchers: unsynced,
            leases_live: self.lessor.lock().expect("lessor lock poisoned").len(),
        }
    }

    /// The Raft commit index.
    pub fn commit_index(&self) -> u64 {
        self.shared.commit_index.load(Ordering::Acquire)
    }

    pub fn last_index(&self) -> u64 {
        self.shared.last_index.load(Ordering::Acquire)
    }

    /// The leader's member ID, 0 when there is none.
    pub fn leader(&self) -> u64 {
        self.shared.leader.load(Ordering::Acquire)
    }

    pub fn is_leader(&self) -> bool {
        self.shared.role_leader.load(Ordering::Acquire)
    }

    /// The revision up to which this member has physically compacted (deleted the
    /// versions compactions supersede); it follows [`Mvcc::compact_revision`], which
    /// moves when a Compact entry is applied. Ends (`changed` fails) when the member stops.
    pub fn compacted_physically(&self) -> watch::Receiver<i64> {
        self.compacted_physically.clone()
    }

    /// Waits until this member has physically compacted up to `revision` (etcd's answer
    /// to a Compact with `physical` set), or fails with `Timeout` at `deadline` (with
    /// `Stopped` if the member stops first).
    pub async fn wait_compacted_physically(&self, revision: i64, deadline: tokio::time::Instant) -> Result<()> {
        wait_for_at(self.compacted_physically(), deadline, |d| *d >= revision).await
    }

    /// Validates a write, replicates it through Raft and answers once it is committed
    /// (fsynced on a quorum) and applied here.
    pub async fn propose(&self, mut cmd: Command) -> Result<CommandResponse> {
        check_command(&cmd)?;
        if let Some(command::Op::LeaseGrant(g)) = &mut cmd.op {
            self.prepare_grant(g)?;
        }
        let data = cmd.encode_to_vec();
        if data.len() > REQUEST_BYTES_MAX {
            return Err(StoreError::RequestTooLarge);
        }
        if self.stopped.load(Ordering::Acquire) {
            return Err(StoreError::Stopped);
        }
        self.submit(|seq| Input::Propose {
            seq,
            data,
            answered: true,
        })
        .await
    }

    /// Hands the raft thread an input proposed under a new sequence number and waits,
    /// up to the request timeout, for the answer of the entry it becomes.
    async fn submit(&self, input: impl FnOnce(u64) -> Input) -> Result<CommandResponse> {
        let _pending = self.config.metrics.proposal_pending();
        let r = self.submit_uncounted(input).await;
        // Failures of the path through Raft, not the state machine's answers (a lease
        // not found is an answer): etcd's failed proposals.
        if let Err(
            StoreError::Timeout
            | StoreError::Stopped
            | StoreError::TooManyRequests
            | StoreError::NoLeader
            | StoreError::LeaderChanged,
        ) = &r
        {
            self.config.metrics.proposal_failed();
        }
        r
    }

    /// [`Node::submit`] without its metrics.
    async fn submit_uncounted(&self, input: impl FnOnce(u64) -> Input) -> Result<CommandResponse> {
        let seq = self.shared.next_seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shared
            .proposals
            .lock()
            .expect("proposals lock poisoned")
            .insert(seq, tx);
        let forget = || {
            self.shared
                .proposals
                .lock()
                .expect("proposals lock poisoned")
                .remove(&seq);
        };
        match self.inputs.try_send(input(seq)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                forget();
                return Err(StoreError::TooManyRequests);
            }
            Err(TrySendError::Disconnected(_)) => {
                forget();
                return Err(StoreError::Stopped);
            }
        }
        match tokio::time::timeout(self.config.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(StoreError::Stopped),
            Err(_) => {
                forget();
                Err(StoreError::Timeout)
            }
        }
    }

    /// Waits until this member has applied everything committed before the call (Raft's
    /// ReadIndex), so that a read of the local state afterwards is linearizable.
    pub async fn linearizable_barrier(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut reads = self.shared.reads.lock().expect("reads lock poisoned");
            let asked: usize = reads.asked.values().map(|(_, w)| w.len()).sum();
            if reads.queued.len() + asked >= READS_WAITING_MAX {
                return Err(StoreError::TooManyRequests);
            }
            reads.queued.push(tx);
            reads.queued.len() == 1
        };
        if first {
            // One nudge per batch; the raft thread takes every read queued by then.
            match self.inputs.try_send(Input::Read) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => return Err(StoreError::Stopped),
            }
        }
        let index = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(StoreError::Stopped),
            Err(_) => return Err(StoreError::Timeout),
        };
        wait_for_at(self.applied.clone(), deadline, |a| *a >= index).await
    }

    /// Decisions etcd's leader makes before proposing a grant: the ID and the TTL bounds.
    fn prepare_grant(&self, g: &mut LeaseGrantRequest) -> Result<()> {
        if g.ttl > LEASE_TTL_MAX_S {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        g.ttl = g.ttl.max(self.config.lease_ttl_min_s);
        if g.id == 0 {
            g.id = self.next_lease_id.fetch_add(1, Ordering::Relaxed);
        }
        if g.id < 0 {
            return Err(StoreError::InvalidRequest("lease ID must be positive".into()));
        }
        Ok(())
    }

    /// A keep-alive on this member's lessor: the TTL, or None if the lease is gone or
    /// expired. Only the leader's lessor counts; see [`Node::keep_alive`].
    pub fn keep_alive_local(&self, id: i64) -> Option<i64> {
        self.lessor
            .lock()
            .expect("lessor lock poisoned")
            .renew(id, self.now_ms())
    }

    /// (granted TTL, remaining seconds) of a lease this member's lessor knows.
    pub fn time_to_live_local(&self, id: i64) -> Option<(i64, i64)> {
        self.lessor
            .lock()
            .expect("lessor lock poisoned")
            .time_to_live(id, self.now_ms())
    }

    /// Who answers lease requests: None when this member leads, else the leader's ID.
    fn lease_leader(&self) -> Result<Option<u64>> {
        match (self.is_leader(), self.leader()) {
            (true, _) => Ok(None),
            (false, 0) => Err(StoreError::NoLeader),
            (false, leader) => Ok(Some(leader)),
        }
    }

    /// A keep-alive, answered by the leader (forwarded to it from a follower).
    pub async fn keep_alive(&self, id: i64) -> Result<Option<i64>> {
        match self.lease_leader()? {
            None => Ok(self.keep_alive_local(id)),
            Some(leader) => {
                let timeout = self.config.request_timeout;
                self.transport.lease_renew(leader, id, timeout).await
            }
        }
    }

    /// (granted TTL, remaining seconds), answered by the leader.
    pub async fn time_to_live(&self, id: i64) -> Result<Option<(i64, i64)>> {
        match self.lease_leader()? {
            None => Ok(self.time_to_live_local(id)),
            Some(leader) => {
                let timeout = self.config.request_timeout;
                self.transport.lease_time_to_live(leader, id, timeout).await
            }
        }
    }

    /// Proposes a membership change and waits until it is applied here.
    async fn change_membership(&self, cc: ConfChange) -> Result<()> {
        self.submit(|seq| Input::ConfChange { seq, cc: Box::new(cc) })
            .await
            .map(|_| ())
    }

    /// etcd's MemberAdd: a new voter (or learner) at `peer_urls`; returns its record.
    pub async fn member_add(&self, peer_urls: Vec<String>, is_learner: bool) -> Result<Member> {
        if peer_urls.is_empty()
            || peer_urls
                .iter()
                .any(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Err(StoreError::InvalidRequest(format!("bad peer URLs {peer_urls:?}")));
        }
        let members = self.mvcc.members()?;
        if members
            .iter()
            .any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        {
            return Err(StoreError::PeerUrlExists);
        }
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let id = id_from_name(&format!("{}/{}/{unix_ms}", self.header.cluster_id, peer_urls.join(","))).max(1);
        if members.iter().any(|m| m.id == id) {
            return Err(StoreError::MemberExists);
        }
        let member = Member {
            id,
            name: String::new(),
            peer_urls,
            client_urls: Vec::new(),
            is_learner,
        };
        let mut cc = ConfChange::default();
        cc.set_change_type(if is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        });
        cc.node_id = id;
        cc.context = member.encode_to_vec().into();
        self.change_membership(cc).await?;
        Ok(member)
    }

    /// etcd's MemberRemove.
    pub async fn member_remove(&self, id: u64) -> Result<()> {
        if !self.mvcc.members()?.iter().any(|m| m.id == id) {
            return Err(StoreError::MemberNotFound);
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::RemoveNode);
        cc.node_id = id;
        self.change_membership(cc).await
    }

    /// etcd's MemberPromote: a learner becomes a voter once it has caught up.
    pub async fn member_promote(&self, id: u64) -> Result<()> {
        let m = self
            .mvcc
            .members()?
            .into_iter()
            .find(|m| m.id == id)
            .ok_or(StoreError::MemberNotFound)?;
        if !m.is_learner {
            return Err(StoreError::MemberNotLearner);
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddNode);
        cc.node_id = id;
        cc.context = Member {
            id,
            ..Default::default()
        }
        .encode_to_vec()
        .into();
        self.change_membership(cc).await
    }

    /// Whether this member is a learner.
    pub fn is_learner(&self) -> bool {
        self.mvcc
            .members()
            .ok()
            .and_then(|ms| ms.into_iter().find(|m| m.id == self.header.member_id))
            .is_some_and(|m| m.is_learner)
    }

    /// etcd's MoveLeader: the leader hands leadership to `target`, a voting member, and
    /// the call returns once `target` leads (or fails after the request timeout).
    pub async fn move_leader(&self, target: u64) -> Result<()> {
        if !self.is_leader() {
            return Err(StoreError::NotLeader);
        }
        let members = self.mvcc.members()?;
        if !members.iter().any(|m| m.id == target && !m.is_learner) {
            return Err(StoreError::BadLeaderTransferee);
        }
        if target == self.header.member_id {
            return Ok(());
        }
        self.inputs
            .try_send(Input::TransferLeader(target))
            .map_err(|_| StoreError::TooManyRequests)?;
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        while self.leader() != target {
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Timeout);
            }
            tokio::time::sleep(self.config.tick).await;
        }
        Ok(())
    }

    /// Whether messages from `from` must be refused: a removed member (one this member
    /// does not send to, looked up only then). A failed lookup admits them: Raft ignores
    /// a stranger's messages anyway; refusing would stop a member that may belong.
    pub fn refuses(&self, from: u64) -> bool {
        if self.transport.is_peer(from) {
            return false;
        }
        self.mvcc.is_removed(from).unwrap_or_else(|e| {
            tracing::warn!(peer = from, error = %e, "could not read whether a peer was removed");
            false
        })
    }

    /// A Raft message from a peer. Dropped when the raft thread is behind (Raft resends).
    pub fn step(&self, m: Message) {
        let _ = self.inputs.try_send(Input::Step(Box::new(m)));
    }

    /// A snapshot's state has arrived in `path` (verified); `msg` is its Raft message.
    pub fn snapshot_arrived(&self, msg: Message, path: PathBuf) -> Result<()> {
        self.inputs
            .try_send(Input::Snapshot {
                msg: Box::new(msg),
                path,
            })
            .map_err(|_| StoreError::TooManyRequests)
    }
}

/// How the transport reports back to the raft thread.
fn input_sender(tx: &SyncSender<Input>) -> crate::transport::Reporter {
    let tx = tx.clone();
    Box::new(move |report| {
        let input = match report {
            crate::transport::Report::Unreachable(id) => Input::Unreachable(id),
            crate::transport::Report::SnapshotSent { to, ok } => Input::SnapshotSent { to, ok },
            crate::transport::Report::Removed => Input::Removed,
        };
        let _ = tx.try_send(input);
    })
}

struct RaftLoop {
    replica: Replica,
    inputs: Receiver<Input>,
    apply: SyncSender<ApplyTask>,
    shared: Arc<Shared>,
    header: Arc<HeaderSource>,
    transport: Arc<Transport>,
    lessor: Arc<Mutex<Lessor>>,
    epoch: Instant,
    tick: Duration,
    batch_max: usize,
    keep: u64,
    mvcc: Arc<Mvcc>,
    /// The state file of the snapshot message last stepped.
    pending_snapshot: PendingSnapshots,
    /// Proposals held while there is no leader (as etcd, they wait for one rather than
    /// fail at once); each still times out at its proposer.
    waiting: std::collections::VecDeque<(u64, Vec<u8>)>,
    waiting_max: usize,
    /// A member alone campaigns as soon as its first entries are handed out.
    campaign_when_ready: bool,
    /// Ticks so far (the clock of read retries).
    ticks: u64,
    /// The applied index a memtable flush was asked for at, until it is durable.
    flushing: Option<u64>,
    /// The applied index when the durable applied index was last read.
    durable_checked_at: u64,
    stopped: Arc<AtomicBool>,
    metrics: StoreMetrics,
}

impl RaftLoop {
    fn run(mut self) {
        let mut next_tick = Instant::now() + self.tick;
        loop {
            if self.stopped.load(Ordering::Acquire) {
                self.fail_pending(StoreError::Stopped);
                return;
            }
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.inputs.recv_timeout(wait) {
                Ok(input) => {
                    self.handle(input);
                    for _ in 1..self.batch_max {
                        match self.inputs.try_recv() {
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            if now >= next_tick {
                self.replica.tick();
                self.ticks += 1;
                next_tick += self.tick;
                if next_tick < now {
                    // Far behind (the process was paused): do not tick in a burst.
                    next_tick = now + self.tick;
                }
            }
            self.ask_read_index();
            if let Err(e) = self.process_ready() {
                tracing::error!(error = %e, "the raft loop failed; the member stops");
                self.stopped.store(true, Ordering::Release);
            }
            if self.campaign_when_ready {
                self.campaign_when_ready = false;
                if let Err(e) = self.replica.campaign() {
                    tracing::warn!(error = %e, "campaigning failed");
                }
            }
            if self.replica.leader_id() != 0 && !self.waiting.is_empty() {
                let waiting = std::mem::take(&mut self.waiting);
                for (seq, data) in waiting {
                    self.propose(seq, data, true);
                }
            }
        }
    }

    fn propose(&mut self, seq: u64, data: Vec<u8>, answered: bool) {
        if answered
            && !self
                .shared
                .proposals
                .lock()
                .expect("proposals lock poisoned")
                .contains_key(&seq)
        {
            // Its proposer gave up (timed out): do not apply what it was told failed.
            return;
        }
        if self.replica.leader_id() == 0 {
            self.hold(seq, data, answered);
            return;
        }
        let mut ctx = self.replica.id().to_be_bytes().to_vec();
        ctx.extend_from_slice(&seq.to_be_bytes());
        match self.replica.propose(ctx, data.clone()) {
            Ok(()) => {}
            Err(StoreError::NoLeader) => self.hold(seq, data, answered),
            Err(e) => self.reply_now(seq, Err(e)),
        }
    }

    fn hold(&mut self, seq: u64, data: Vec<u8>, answered: bool) {
        if self.waiting.len() >= self.waiting_max {
            self.reply_now(seq, Err(StoreError::TooManyRequests));
        } else if answered {
            // Revokes are not held: the lease clock proposes them again.
            self.waiting.push_back((seq, data));
        }
    }

    fn reply_now(&self, seq: u64, r: Result<CommandResponse>) {
        self.shared.answer(seq, r);
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Propose { seq, data, answered } => self.propose(seq, data, answered),
            Input::Step(m) => {
                if let Err(e) = self.replica.step(*m) {
                    tracing::debug!(error = %e, "a raft message was refused");
                }
            }
            Input::Read => {}
            Input::Snapshot { msg, path } => {
                let index = msg.get_snapshot().get_metadata().index;
                if let Some(old) = self.pending_snapshot.insert(index, path) {
                    let _ = std::fs::remove_file(old);
                }
                // Raft takes one of them; keep the newest few in case it refuses the last.
                while self.pending_snapshot.len() > PENDING_SNAPSHOTS_MAX {
                    if let Some((_, old)) = self.pending_snapshot.pop_first() {
                        let _ = std::fs::remove_file(old);
                    }
                }
                if let Err(e) = self.replica.step(*msg) {
                    tracing::warn!(error = %e, "a snapshot message was refused");
                }
            }
            Input::SnapshotSent { to, ok } => self.replica.report_snapshot(to, ok),
            Input::Unreachable(id) => self.replica.report_unreachable(id),
            Input::Removed => {
                // As etcd: a member removed from the cluster stops serving, also when it
                // missed the entry that removed it.
                tracing::warn!("this member was removed from the cluster; it stops");
                self.stopped.store(true, Ordering::Release);
            }
            Input::TransferLeader(to) => self.replica.transfer_leader(to),
            Input::ConfChange { seq, cc } => {
                let promotion = cc.get_change_type() == ConfChangeType::AddNode && self.replica.is_learner(cc.node_id);
                if promotion && self.replica.is_leader() && !self.replica.is_caught_up(cc.node_id) {
                    self.reply_now(seq, Err(StoreError::LearnerNotReady));
                    return;
                }
                let (add, remove) = match cc.get_change_type() {
                    ConfChangeType::AddNode => (Some(cc.node_id), None),
                    ConfChangeType::RemoveNode => (None, Some(cc.node_id)),
                    ConfChangeType::AddLearnerNode => (None, None),
                };
                if self.replica.is_leader() && !self.replica.quorum_after(add, remove) {
                    self.reply_now(seq, Err(StoreError::NotEnoughStartedMembers));
                    return;
                }
                let mut ctx = self.replica.id().to_be_bytes().to_vec();
                ctx.extend_from_slice(&seq.to_be_bytes());
                if let Err(e) = self.replica.propose_conf_change(ctx, *cc) {
                    self.reply_now(seq, Err(e));
                }
            }
        }
    }

    /// Asks Raft for one read index for every linearizable read queued.
    fn ask_read_index(&mut self) {
        if self.replica.leader_id() == 0 {
            // Without a leader the request would be dropped: the reads wait for one (or
            // time out at their callers).
            return;
        }
        let ctx = {
            let mut reads = self.shared.reads.lock().expect("reads lock poisoned");
            // Raft drops a read request it cannot serve yet (a new leader that has not
            // committed an entry of its term yet, a message lost on the way): ask again
            // for reads unanswered after a few ticks.
            let stale: Vec<u64> = reads
                .asked
                .iter()
                .filter(|(_, (at, _))| self.ticks >= at + READ_RETRY_TICKS)
                .map(|(ctx, _)| *ctx)
                .collect();
            for ctx in stale {
                if let Some((_, w)) = reads.asked.remove(&ctx) {
                    reads.queued.extend(w);
                }
            }
            if reads.queued.is_empty() {
                return;
            }
            reads.next_ctx += 1;
            let ctx = reads.next_ctx;
            let waiting = std::mem::take(&mut reads.queued);
            reads.asked.insert(ctx, (self.ticks, waiting));
            ctx
        };
        self.replica.read_index(ctx.to_be_bytes().to_vec());
    }

    fn answer_reads(&self, ctx: u64, r: Result<u64>) {
        let waiting = self
            .shared
            .reads
            .lock()
            .expect("reads lock poisoned")
            .asked
            .remove(&ctx);
        for w in waiting.into_iter().flat_map(|(_, w)| w) {
            let _ = w.send(r.clone());
        }
    }

    fn process_ready(&mut self) -> Result<()> {
        loop {
            let mut sink = LoopSink {
                pending_snapshot: &mut self.pending_snapshot,
                apply: &self.apply,
                transport: &self.transport,
            };
            let out = self.replica.ready(&mut sink)?;
            let Some(out) = out else { break };
            self.after_ready(out)?;
        }
        self.header.set_term(self.replica.term());
        self.shared
            .commit_index
            .store(self.replica.commit_index(), Ordering::Release);
        self.shared
            .last_index
            .store(self.replica.last_index(), Ordering::Release);
        self.compact_log()?;
        Ok(())
    }

    fn after_ready(&mut self, out: Output) -> Result<()> {
        if let Some((leader, role)) = out.soft {
            let was_leader = self.shared.role_leader.load(Ordering::Acquire);
            let is_leader = role == StateRole::Leader;
            if leader != 0 && leader != self.shared.leader.load(Ordering::Acquire) {
                self.metrics.leader_changed();
            }
            self.shared.leader.store(leader, Ordering::Release);
            self.shared.role_leader.store(is_leader, Ordering::Release);
            if is_leader && !was_leader {
                // A new leader gives every lease a full TTL: no lease expires because the
                // old leader's clock went away with it.
                let now_ms = self.epoch.elapsed().as_millis() as u64;
                let mut l = self.lessor.lock().expect("lessor lock poisoned");
                for (id, ttl) in self.mvcc.leases() {
                    l.grant(id, ttl, now_ms);
                }
            }
            tracing::info!(leader, ?role, term = self.replica.term(), "raft role changed");
            // Raft forgets read requests across a leader change: ask again.
            let mut reads = self.shared.reads.lock().expect("reads lock poisoned");
            let asked: Vec<_> = reads.asked.drain().flat_map(|(_, (_, w))| w).collect();
            reads.queued.extend(asked);
        }
        self.header.set_term(self.replica.term());
        for rs in out.read_states {
            if let Ok(b) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) {
                self.answer_reads(u64::from_be_bytes(b), Ok(rs.index));
            }
        }
        if out.snapshot_index.is_some() {
            self.transport.set_members(&self.mvcc.members()?);
        }
        Ok(())
    }

    /// Truncates the log behind the state's durable point. Applies bypass RocksDB's WAL,
    /// so the state is durable up to the applied index its last memtable flush carried.
    /// RocksDB flushes on its own when a memtable fills (64 MiB); a flush is asked for
    /// (without waiting) only once `keep` applied entries are not yet durable. Forcing
    /// one every few thousand entries instead made small files whose compaction cost
    /// more CPU than the writes themselves.
    fn compact_log(&mut self) -> Result<()> {
        let first = self.replica.first_index();
        let applied = self.mvcc.applied_index();
        let catchup = self.keep.min(LOG_CATCHUP_ENTRIES_MAX);
        // Cheap checks first: this runs after every Ready.
        if applied < first + self.keep || applied < self.durable_checked_at + self.keep.div_ceil(8) {
            return Ok(());
        }
        self.durable_checked_at = applied;
        let durable = self.mvcc.durable_applied_index()?;
        let to = durable.saturating_sub(catchup);
        if to >= first + self.keep {
            self.replica.compact_log(to)?;
        }
        if self.flushing.is_some_and(|at| durable >= at) {
            self.flushing = None;
        }
        if self.flushing.is_none() && applied - durable >= self.keep {
            self.flushing = Some(self.mvcc.start_persist_applied()?);
        }
        Ok(())
    }

    fn fail_pending(&self, e: StoreError) {
        let pending: Vec<Reply> = self
            .shared
            .proposals
            .lock()
            .expect("proposals lock poisoned")
            .drain()
            .map(|(_, r)| r)
            .collect();
        for r in pending {
            let _ = r.send(Err(e.clone()));
        }
    }
}

/// Where the raft thread's Readys go: the transport and the apply thread.
struct LoopSink<'a> {
    pending_snapshot: &'a mut PendingSnapshots,
    apply: &'a SyncSender<ApplyTask>,
    transport: &'a Transport,
}

impl ReadySink for LoopSink<'_> {
    fn install(&mut self, snap: &Snapshot) -> Result<()> {
        install(snap, self.pending_snapshot, self.apply)
    }

    fn send(&mut self, messages: Vec<Message>) {
        self.transport.send(messages);
    }

    fn apply(&mut self, committed: Vec<Committed>) -> Result<()> {
        if committed.is_empty() {
            return Ok(());
        }
        self.apply
            .send(ApplyTask::Entries(committed))
            .map_err(|_| StoreError::Stopped)
    }
}

/// Has the apply thread replace the state with the snapshot's (after every entry handed
/// to it before), and waits until it is durable.
fn install(snap: &Snapshot, pending: &mut PendingSnapshots, apply: &SyncSender<ApplyTask>) -> Result<()> {
    let index = snap.get_metadata().index;
    let path = pending
        .remove(&index)
        .ok_or_else(|| StoreError::Storage(format!("no state received for the snapshot at {index}")))?;
    // Older states are of no use once a newer one is in.
    while pending.first_key_value().is_some_and(|(i, _)| *i < index) {
        if let Some((_, old)) = pending.pop_first() {
            let _ = std::fs::remove_file(old);
        }
    }
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
    apply
        .send(ApplyTask::Install {
            path: path.clone(),
            done: done_tx,
        })
        .map_err(|_| StoreError::Stopped)?;
    let r = done_rx.recv().map_err(|_| StoreError::Stopped)?;
    let _ = std::fs::remove_file(&path);
    r
}

struct ApplyLoop {
    mvcc: Arc<Mvcc>,
    hub: Arc<WatchHub>,
    lessor: Arc<Mutex<Lessor>>,
    epoch: Instant,
    my_id: u64,
    shared: Arc<Shared>,
    /// To [`deliver_answers`].
    answers: tokio::sync::mpsc::UnboundedSender<Answers>,
    transport: Arc<Transport>,
    applied: watch::Sender<u64>,
    /// Wakes the compactor when a compaction is applied or a snapshot installed.
    compactor_wake: SyncSender<()>,
    stopped: Arc<AtomicBool>,
    metrics: StoreMetrics,
}

impl ApplyLoop {
    fn run(self, rx: Receiver<ApplyTask>) {
        for task in rx {
            let r = match task {
                ApplyTask::Entries(list) => self.apply(list),
                ApplyTask::Install { path, done } => {
                    let r = self.install(&path);
                    let failed = r.is_err();
                    let _ = done.send(r.clone());
                    if failed {
                        r
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(e) = r {
                // The state machine can no longer be trusted: stop taking writes.
                tracing::error!(error = %e, "applying failed; the member stops");
                self.stopped.store(true, Ordering::Release);
                return;
            }
            self.applied.send_replace(self.mvcc.applied_index());
        }
    }

    fn apply(&self, list: Vec<Committed>) -> Result<()> {
        let results = apply_committed_all(&self.mvcc, &list)?;
        let mut answers = Vec::new();
        for (c, result) in list.into_iter().zip(results) {
            let context = &c.entry.context;
            match result {
                AppliedEntry::Command { cmd, applied } => {
                    if applied.compacted.is_some() {
                        let _ = self.compactor_wake.try_send(());
                    }
                    self.after_apply(&cmd, &applied.response);
                    self.hub.notify(applied.revision, applied.events, applied.compacted);
                    self.reply(&mut answers, context, applied.response);
                }
                AppliedEntry::Rejected(e) => self.reply(&mut answers, context, Err(e)),
                AppliedEntry::Member => {
                    let members = self.mvcc.members()?;
                    self.transport.set_members(&members);
                    self.reply(&mut answers, context, Ok(CommandResponse::Member));
                    if matches!(&c.conf, Some((MemberChange::Remove(id), _)) if *id == self.my_id) {
                        // As etcd: a member removed from the cluster stops serving.
                        tracing::warn!("this member was removed from the cluster; it stops");
                        self.stopped.store(true, Ordering::Release);
                    }
                }
                AppliedEntry::Empty | AppliedEntry::Skipped => {}
            }
        }
        if !answers.is_empty() {
            if let Err(tokio::sync::mpsc::error::SendError(answers)) = self.answers.send(answers) {
                // The runtime is gone (shutting down): answer from here.
                for (tx, r) in answers {
                    let _ = tx.send(r);
                }
            }
        }
        Ok(())
    }

    /// Queues the answer for the proposer if the entry was proposed by this member and
    /// its proposer still waits.
    fn reply(&self, answers: &mut Answers, context: &[u8], r: Result<CommandResponse>) {
        if context.len() != 16 {
            return;
        }
        let member = u64::from_be_bytes(context[..8].try_into().expect("8 bytes"));
        if member != self.my_id {
            return;
        }
        let seq = u64::from_be_bytes(context[8..].try_into().expect("8 bytes"));
        let reply = self
            .shared
            .proposals
            .lock()
            .expect("proposals lock poisoned")
            .remove(&seq);
        if let Some(tx) = reply {
            answers.push((tx, r));
        }
    }

    fn after_apply(&self, cmd: &Command, response: &Result<CommandResponse>) {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let mut l = self.lessor.lock().expect("lessor lock poisoned");
        match (&cmd.op, response) {
            (Some(command::Op::LeaseGrant(g)), Ok(_)) => {
                self.metrics.lease_granted();
                l.grant(g.id, g.ttl, now_ms)
            }
            (Some(command::Op::LeaseRevoke(r)), Ok(_)) => {
                self.metrics.lease_revoked();
                l.remove(r.id)
            }
            (Some(command::Op::LeaseRevoke(r)), Err(StoreError::LeaseNotFound)) => l.remove(r.id),
            _ => {}
        }
    }

    fn install(&self, path: &std::path::Path) -> Result<()> {
        let file = std::fs::File::open(path).map_err(|e| StoreError::Storage(format!("snapshot file: {e}")))?;
        let mut reader = crate::snapshot::Reader::new(std::io::BufReader::new(file))?;
        self.mvcc.install(|| reader.next_record())?;
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        {
            let mut l = self.lessor.lock().expect("lessor lock poisoned");
            *l = Lessor::new();
            for (id, ttl) in self.mvcc.leases() {
                l.grant(id, ttl, now_ms);
            }
        }
        self.hub.restored(self.mvcc.revision(), self.mvcc.compact_revision());
        // The installed state has markers of its own (a snapshot goes out compacted, but
        // the compactor publishes the new state's progress and takes up any pending).
        let _ = self.compactor_wake.try_send(());
        tracing::info!(
            applied = self.mvcc.applied_index(),
            revision = self.mvcc.revision(),
            "installed a snapshot from the leader"
        );
        Ok(())
    }
}

/// What applying one committed entry did.
#[derive(Debug)]
pub enum AppliedEntry {
    /// A command, applied (its response may be a deterministic rejection).
    Command { cmd: Box<Command>, applied: Applied },
    /// An entry no member can decode: it takes its index and does nothing.
    Rejected(StoreError),
    /// A membership change (or a refused one).
    Member,
    /// A new leader's empty entry.
    Empty,
    /// Applied before (at or below the applied index).
    Skipped,
}

/// Applies committed entries to the state machine in log order: the apply step every
/// member (and the test harness) runs. Consecutive puts are applied together, in one
/// write ([`Mvcc::apply_puts`]); anything else one entry at a time. Returns what each
/// entry did, in order.
pub fn apply_committed_all(mvcc: &Mvcc, list: &[Committed]) -> Result<Vec<AppliedEntry>> {
    // Puts decoded once up front; any other entry is decoded where it is applied.
    let puts: Vec<Option<Command>> = list
        .iter()
        .map(|c| {
            let e = &c.entry;
            if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
                return None;
            }
            Command::decode(e.data.as_ref())
                .ok()
                .filter(|cmd| matches!(cmd.op, Some(command::Op::Put(_))))
        })
        .collect();
    let mut out = Vec::with_capacity(list.len());
    let mut i = 0;
    while i < list.len() {
        let run = puts[i..].iter().take_while(|p| p.is_some()).count();
        if run < 2 {
            out.push(apply_committed(mvcc, &list[i])?);
            i += 1;
            continue;
        }
        let args: Vec<(u64, u64, &PutRequest)> = (i..i + run)
            .filter_map(|j| match puts[j].as_ref().and_then(|c| c.op.as_ref()) {
                Some(command::Op::Put(p)) => Some((list[j].entry.index, list[j].entry.term, p)),
                _ => None,
            })
            .collect();
        assert_eq!(args.len(), run, "a run holds puts only");
        let applied = mvcc.apply_puts(&args)?;
        for (j, a) in (i..i + run).zip(applied) {
            out.push(match (a, puts[j].clone()) {
                (Some(applied), Some(cmd)) => AppliedEntry::Command {
                    cmd: Box::new(cmd),
                    applied,
                },
                _ => AppliedEntry::Skipped,
            });
        }
        i += run;
    }
    Ok(out)
}

/// Waits until `rx`'s value satisfies `done`: `Timeout` at `deadline`, `Stopped` if the
/// sender (the member) goes first.
async fn wait_for_at<T>(
    mut rx: watch::Receiver<T>,
    deadline: tokio::time::Instant,
    done: impl FnMut(&T) -> bool,
) -> Result<()> {
    match tokio::time::timeout_at(deadline, rx.wait_for(done)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(StoreError::Stopped),
        Err(_) => Err(StoreError::Timeout),
    }
}

/// Applies one committed entry to the state machine: the apply step every member (and
/// the test harness) runs, in log order.
pub fn apply_committed(mvcc: &Mvcc, c: &Committed) -> Result<AppliedEntry> {
    let e = &c.entry;
    if e.index <= mvcc.applied_index() {
        return Ok(AppliedEntry::Skipped);
    }
    match e.get_entry_type() {
        EntryType::EntryNormal if e.data.is_empty() => {
            mvcc.apply_meta(e.index, e.term, None)?;
            Ok(AppliedEntry::Empty)
        }
        EntryType::EntryNormal => match Command::decode(e.data.as_ref()) {
            Ok(cmd) => match mvcc.apply_entry(e.index, e.term, &cmd)? {
                Some(applied) => Ok(AppliedEntry::Command {
                    cmd: Box::new(cmd),
                    applied,
                }),
                None => Ok(AppliedEntry::Skipped),
            },
            Err(err) => {
                mvcc.apply_meta(e.index, e.term, None)?;
                Ok(AppliedEntry::Rejected(StoreError::InvalidRequest(format!(
                    "undecodable entry: {err}"
                ))))
            }
        },
        EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
            let cs;
            let change = match &c.conf {
                Some((change, conf_state)) => {
                    cs = conf_state
                        .write_to_bytes()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    Some((change, cs.as_slice()))
                }
                None => None,
            };
            mvcc.apply_meta(e.index, e.term, change)?;
            Ok(AppliedEntry::Member)
        }
    }
}

/// The member's background compactor: the physical part of compactions, in batches.
struct Compactor {
    mvcc: Arc<Mvcc>,
    wake: Receiver<()>,
    /// Publishes [`Mvcc::compact_done_revision`]; dropped when the thread ends, which
    /// ends the waits of [`Node::wait_compacted_physically`].
    done: watch::Sender<i64>,
    stopped: Arc<AtomicBool>,
}

impl Compactor {
    /// Sleeps until woken while nothing is pending; otherwise runs one batch, publishes
    /// the progress and pauses. Looks at the state each time, so a wake (or a compaction
    /// pending since before a restart) is never missed, and stops within a batch.
    fn run(self) {
        let pause = Duration::from_millis(COMPACTION_PAUSE_MS);
        let mut pass_started: Option<Instant> = None;
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return;
            }
            self.publish();
            if !self.mvcc.compaction_pending() {
                if self.wake.recv().is_err() {
                    return;
                }
                continue;
            }
            let started = *pass_started.get_or_insert_with(Instant::now);
            match self.mvcc.compact_step(COMPACTION_BATCH_ENTRIES_MAX) {
                Ok(CompactionStep::Finished { revision, deleted }) => {
                    pass_started = None;
                    tracing::info!(
                        revision,
                        deleted,
                        took_ms = started.elapsed().as_millis() as u64,
                        "compaction physically done"
                    );
                }
                Ok(CompactionStep::Progress { .. }) => {}
                Ok(CompactionStep::Idle) => {
                    // An install replaced the state the pass walked.
                    pass_started = None;
                    continue;
                }
                Err(e) => {
                    // As a failed apply: the storage can no longer be trusted.
                    tracing::error!(error = %e, "physical compaction failed; the member stops");
                    self.stopped.store(true, Ordering::Release);
                    return;
                }
            }
            self.publish();
            match self.wake.recv_timeout(pause) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn publish(&self) {
        let done = self.mvcc.compact_done_revision();
        self.done.send_if_modified(|d| {
            let changed = *d != done;
            *d = done;
            changed
        });
    }
}

/// Looks for expired leases and proposes their revokes, on the leader only.
fn lease_clock(node: std::sync::Weak<Node>, interval: Duration) {
    loop {
        std::thread::sleep(interval);
        let Some(node) = node.upgrade() else { return };
        if node.stopped.load(Ordering::Acquire) {
            return;
        }
        if !node.is_leader() {
            continue;
        }
        let now_ms = node.now_ms();
        let expired = node.lessor.lock().expect("lessor lock poisoned").expired(now_ms, 1000);
        for id in expired {
            let cmd = Command {
                op: Some(command::Op::LeaseRevoke(LeaseRevokeRequest { id })),
            };
            // Fire and forget: the lessor asks again if the revoke is not applied.
            let seq = node.shared.next_seq.fetch_add(1, Ordering::Relaxed);
            if let Err(TrySendError::Disconnected(_)) = node.inputs.try_send(Input::Propose {
                seq,
                data: cmd.encode_to_vec(),
                answered: false,
            }) {
                return;
            }
        }
    }
}
