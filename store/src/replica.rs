//! One member's Raft core: raft-rs's `RawNode` over the [`RaftLog`], driven by inputs.
//!
//! A [`Replica`] does no network I/O, reads no clock and starts no thread: ticks,
//! messages from peers and proposals come in as method calls, and [`Replica::ready`]
//! hands back what to send and what to apply. The only I/O is its RocksDB log, which is
//! the point of a Ready: it is persisted (fsynced) before anything that depends on it
//! leaves. The member's threads ([`crate::node`]) and the deterministic test harness
//! (`store/tests/raft_harness.rs`) drive the same code.
//!
//! The Ready order is raft-rs's (see [`Replica::ready`]): install a snapshot if one came,
//! send what may go before persisting (a leader's appends, so followers persist in
//! parallel), hand out what was committed before, persist entries and hard state in one
//! fsynced write (the group commit: every proposal of the Ready shares it), then send
//! what needed them persisted and hand out what became committed.
//! Conf changes are applied to Raft here, when they are handed out as committed, and the
//! resulting conf state goes out with the entry so the state machine records the same.
//!
//! Election timeouts are randomized by raft-rs within `[min_election_tick,
//! max_election_tick)`; the harness pins a distinct fixed timeout per member instead, so
//! that a run is reproducible from its seed.

use capstan_proto::store::Member;
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, ReadState, StateRole};

use crate::error::{Result, StoreError};
use crate::mvcc::MemberChange;
use crate::raftlog::RaftLog;

/// The Raft settings of one member, in ticks.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub id: u64,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// Randomized election timeout range; both 0 means raft-rs's default
    /// `[election_tick, 2 * election_tick)`.
    pub min_election_tick: usize,
    pub max_election_tick: usize,
    /// The state machine's applied index: entries after it are handed out again.
    pub applied: u64,
    /// Bytes of entries per append message.
    pub max_size_per_msg: u64,
    /// Append messages in flight to one follower.
    pub max_inflight_msgs: usize,
}

impl ReplicaConfig {
    pub fn new(id: u64, election_tick: usize, heartbeat_tick: usize) -> ReplicaConfig {
        ReplicaConfig {
            id,
            election_tick,
            heartbeat_tick,
            min_election_tick: 0,
            max_election_tick: 0,
            applied: 0,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
        }
    }
}

/// A committed entry to apply, in log order.
#[derive(Debug)]
pub struct Committed {
    pub entry: Entry,
    /// For a conf change that took effect: the member change and the conf state after it.
    pub conf: Option<(MemberChange, ConfState)>,
}

/// Where a Ready's work goes: the member's transport and applier, or a test harness.
pub trait ReadySink {
    /// Durably replaces the state with the snapshot's, before the log moves past it.
    fn install(&mut self, snap: &Snapshot) -> Result<()>;
    /// Messages to peers, in order; never blocks on the network.
    fn send(&mut self, messages: Vec<Message>);
    /// Committed entries, in log order (possibly none).
    fn apply(&mut self, committed: Vec<Committed>) -> Result<()>;
}

/// What one Ready produced besides messages and committed entries.
#[derive(Debug, Default)]
pub struct Output {
    /// Answers to read-index requests: (context, index to wait for before reading).
    pub read_states: Vec<ReadState>,
    /// Set when the leader or role changed: (leader ID or 0, role).
    pub soft: Option<(u64, StateRole)>,
    /// The index of a snapshot that was installed in this Ready.
    pub snapshot_index: Option<u64>,
}

pub struct Replica {
    raw: RawNode<RaftLog>,
    /// Ticks so far, and the tick at which each member was last heard from (a message
    /// stepped from it): what "heard from lately" means for the reconfiguration check.
    /// Only members of the configuration are recorded, so the map stays bounded.
    ticks: u64,
    heard: std::collections::HashMap<u64, u64>,
    election_tick: u64,
}

impl Replica {
    pub fn new(config: &ReplicaConfig, log: RaftLog) -> Result<Replica> {
        let cfg = raft::Config {
            id: config.id,
            election_tick: config.election_tick,
            heartbeat_tick: config.heartbeat_tick,
            min_election_tick: config.min_election_tick,
            max_election_tick: config.max_election_tick,
            applied: config.applied,
            max_size_per_msg: config.max_size_per_msg,
            max_inflight_msgs: config.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            // Appends to one follower made within one Ready go out as one message (one
            // step, one persist and one response there) instead of one per proposal.
            batch_append: true,
            // Proposals beyond this many bytes not yet committed are refused, which bounds
            // the leader's memory when followers are slow.
            max_uncommitted_size: 64 << 20,
            ..Default::default()
        };
        cfg.validate()
            .map_err(|e| StoreError::InvalidRequest(format!("raft config: {e}")))?;
        let logger = slog::Logger::root(TracingDrain, slog::o!("raft_id" => config.id));
        let raw = RawNode::new(&cfg, log, &logger).map_err(|e| StoreError::Storage(format!("raft: {e}")))?;
        Ok(Replica {
            raw,
            ticks: 0,
            heard: std::collections::HashMap::new(),
            election_tick: u64::try_from(config.election_tick).unwrap_or(u64::MAX),
        })
    }

    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    pub fn tick(&mut self) {
        self.ticks += 1;
        self.raw.tick();
    }

    /// A message from a peer. Messages for another member or from an unknown term are
    /// Raft's to judge; a malformed one is dropped with an error.
    pub fn step(&mut self, m: Message) -> Result<()> {
        check_message(&m, self.is_leader())?;
        if self.raw.raft.prs().get(m.from).is_some() {
            self.heard.insert(m.from, self.ticks);
        }
        self.raw
            .step(m)
            .map_err(|e| StoreError::InvalidRequest(format!("raft step: {e}")))
    }

    /// Proposes a command; `context` identifies the proposal to its proposer.
    pub fn propose(&mut self, context: Vec<u8>, data: Vec<u8>) -> Result<()> {
        self.raw.propose(context, data).map_err(proposal_error)
    }

    pub fn propose_conf_change(&mut self, context: Vec<u8>, cc: ConfChange) -> Result<()> {
        self.raw.propose_conf_change(context, cc).map_err(proposal_error)
    }

    /// Asks for a read index; the answer comes in a later Ready's `read_states`.
    pub fn read_index(&mut self, context: Vec<u8>) {
        self.raw.read_index(context);
    }

    pub fn transfer_leader(&mut self, to: u64) {
        self.raw.transfer_leader(to);
    }

    pub fn campaign(&mut self) -> Result<()> {
        self.raw
            .campaign()
            .map_err(|e| StoreError::Storage(format!("raft campaign: {e}")))
    }

    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    pub fn report_snapshot(&mut self, id: u64, ok: bool) {
        let status = if ok {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw.report_snapshot(id, status);
    }

    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn role(&self) -> StateRole {
        self.raw.raft.state
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    pub fn conf_state(&self) -> &ConfState {
        self.raw.store().conf_state()
    }

    /// Whether the leader knows `id` to have caught up with its log: etcd's rule for
    /// promoting a learner (it has at least 90 % of the committed entries).
    pub fn is_caught_up(&self, id: u64) -> bool {
        let commit = self.commit_index();
        self.raw
            .raft
            .prs()
            .get(id)
            .is_some_and(|p| p.matched.saturating_mul(10) >= commit.saturating_mul(9))
    }

    /// Whether the voters after a membership change would still have a quorum of members
    /// the leader has heard from lately (etcd's strict reconfiguration check): `add`
    /// joins a voter (not yet heard from unless it is a learner being promoted), `remove`
    /// takes one away.
    pub fn quorum_after(&self, add: Option<u64>, remove: Option<u64>) -> bool {
        let me = self.id();
        let mut voters: Vec<u64> = self.conf_state().voters.clone();
        if voters.len() == 1 && remove.is_none() {
            // As etcd: a member alone may always take a second.
            return true;
        }
        voters.retain(|v| Some(*v) != remove);
        if let Some(a) = add {
            if !voters.contains(&a) {
                voters.push(a);
            }
        }
        // Heard from within the last election timeout. raft-rs's own `recent_active` is
        // cleared at every check-quorum round (each election timeout) until the next
        // heartbeat answer, so alone it refused a change that came in that window.
        let prs = self.raw.raft.prs();
        let heard_lately = |v: u64| {
            self.heard
                .get(&v)
                .is_some_and(|&t| self.ticks.saturating_sub(t) <= self.election_tick)
        };
        let active = voters
            .iter()
            .filter(|v| **v == me || prs.get(**v).is_some_and(|p| p.recent_active) || heard_lately(**v))
            .count();
        active > voters.len() / 2
    }

    /// Whether `id` is a learner now.
    pub fn is_learner(&self, id: u64) -> bool {
        self.conf_state().learners.contains(&id)
    }

    /// Drops log entries before `index` (all applied).
    pub fn compact_log(&mut self, index: u64) -> Result<()> {
        self.raw.mut_store().compact(index)
    }

    pub fn first_index(&self) -> u64 {
        self.raw.store().first_index_()
    }

    /// Handles one Ready if there is one, in raft-rs's order, through `sink`:
    ///
    /// 1. install a snapshot that came (the sink must make the state durable first);
    /// 2. send the messages that do not depend on this Ready's entries being persisted
    ///    (a leader's appends and heartbeats: followers persist in parallel with it);
    /// 3. hand out entries committed earlier (already persisted), so applying overlaps
    ///    with the fsync below;
    /// 4. persist the new entries and the hard state, one fsync (group commit);
    /// 5. send the messages that needed them persisted (votes, append responses);
    /// 6. advance, then send and hand out what that made ready.
    ///
    /// Returns what the caller needs besides: read states, role change, snapshot.
    pub fn ready(&mut self, sink: &mut impl ReadySink) -> Result<Option<Output>> {
        if !self.raw.has_ready() {
            return Ok(None);
        }
        let mut rd = self.raw.ready();
        let mut out = Output {
            read_states: rd.take_read_states(),
            soft: rd.ss().map(|ss| (ss.leader_id, ss.raft_state)),
            ..Default::default()
        };
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            sink.install(&snap)?;
            self.raw.mut_store().apply_snapshot(&snap)?;
            out.snapshot_index = Some(snap.get_metadata().index);
        }
        sink.send(rd.take_messages());
        let committed = rd.take_committed_entries();
        let committed = self.hand_out(committed)?;
        sink.apply(committed)?;
        self.raw.mut_store().append(rd.entries(), rd.hs())?;
        sink.send(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        sink.send(light.take_messages());
        let committed = light.take_committed_entries();
        let committed = self.hand_out(committed)?;
        sink.apply(committed)?;
        // Everything committed is handed to the applier, which applies it in order.
        self.raw.advance_apply();
        Ok(Some(out))
    }

    fn hand_out(&mut self, entries: Vec<Entry>) -> Result<Vec<Committed>> {
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let conf = if entry.get_entry_type() == EntryType::EntryConfChange && !entry.data.is_empty() {
                self.conf_change(&entry)?
            } else {
                None
            };
            out.push(Committed { entry, conf });
        }
        Ok(out)
    }

    /// Makes a committed conf change effective in Raft. A change Raft refuses (every
    /// member refuses it alike) is applied as nothing.
    fn conf_change(&mut self, entry: &Entry) -> Result<Option<(MemberChange, ConfState)>> {
        let cc = ConfChange::parse_from_bytes(&entry.data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let change = match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let mut m = Member::decode(cc.context.as_ref()).unwrap_or_default();
                m.id = cc.node_id;
                m.is_learner = cc.get_change_type() == ConfChangeType::AddLearnerNode;
                MemberChange::Add(m)
            }
            ConfChangeType::RemoveNode => MemberChange::Remove(cc.node_id),
        };
        match self.raw.apply_conf_change(&cc) {
            Ok(cs) => {
                self.raw.mut_store().set_conf_state(cs.clone())?;
                Ok(Some((change, cs)))
            }
            Err(e) => {
                tracing::warn!(index = entry.index, error = %e, "a committed conf change was refused");
                Ok(None)
            }
        }
    }
}

fn proposal_error(e: raft::Error) -> StoreError {
    match e {
        raft::Error::ProposalDropped => StoreError::NoLeader,
        e => StoreError::InvalidRequest(format!("raft: {e}")),
    }
}

/// Refuses a peer's message that no raft-rs member sends and that raft-rs would panic on
/// instead of refusing (found by the `raft_message` fuzz target):
///
/// - a message without a term, but for a forwarded proposal or read index: raft-rs takes
///   those for this member's own input and trusts them (a read-index answer or an append
///   without a term "matched" term 0 past the end of the log and committed beyond it; a
///   vote request without one was answered with that term, which raft-rs refuses to
///   send); every message raft-rs sends to a peer carries its term;
/// - a proposal or a read-index request without entries (a leader takes the first entry
///   as given), or with a term (raft-rs forwards them without one, and a follower that
///   forwards one with a term panics);
/// - an append that is not a leader's log after its index (see `append_follows`), and
///   a snapshot without an index and a term (up to the message's), whose term 0 matched
///   past the end of the log as well;
/// - a leader transfer request at a member that is not the leader (`leader`): a follower
///   forwards it to its leader, and raft-rs refuses to send it on with the term it came
///   with. Followers forward theirs to the leader, which alone takes them from peers.
pub fn check_message(m: &Message, leader: bool) -> Result<()> {
    use raft::prelude::MessageType;
    let malformed = |what: &str| Err(StoreError::InvalidRequest(format!("raft message: {what}")));
    match m.get_msg_type() {
        MessageType::MsgPropose | MessageType::MsgReadIndex if m.entries.is_empty() || m.term != 0 => {
            malformed("a proposal or read index without entries, or with a term")
        }
        MessageType::MsgPropose | MessageType::MsgReadIndex => Ok(()),
        _ if m.term == 0 => malformed("a message without a term"),
        MessageType::MsgAppend if !append_follows(m) => malformed("an append whose entries do not follow its index"),
        MessageType::MsgSnapshot
            if {
                let meta = m.get_snapshot().get_metadata();
                meta.index == 0 || meta.term == 0 || meta.term > m.term
            } =>
        {
            malformed("a snapshot without an index and a term")
        }
        MessageType::MsgTransferLeader if !leader => {
            malformed("a leader transfer request at a member that does not lead")
        }
        _ => Ok(()),
    }
}

/// Whether an append is a leader's log after its `(index, log_term)`: a term for every
/// entry but the log's start (index 0, term 0), up to the message's term, and entries
/// with indexes one after the other from `index + 1`, terms never going down. (raft-rs
/// reads term 0 at an index past its log's end as a match, and commits by the count of
/// entries: either way, past the end of its log.)
fn append_follows(m: &Message) -> bool {
    if (m.index == 0) != (m.log_term == 0) || m.log_term > m.term {
        return false;
    }
    let mut term = m.log_term.max(1);
    m.entries.iter().zip(1u64..).all(|(e, i)| {
        let ok = m.index.checked_add(i) == Some(e.index) && e.term >= term && e.term <= m.term;
        term = e.term;
        ok
    })
}

/// Encodes a Raft message for the wire (raft-rs's protobuf codec).
pub fn encode_message(m: &Message) -> Result<Vec<u8>> {
    m.write_to_bytes().map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub fn decode_message(b: &[u8]) -> Result<Message> {
    Message::parse_from_bytes(b).map_err(|e| StoreError::InvalidRequest(format!("raft message: {e}")))
}

/// raft-rs logs through slog; this forwards its records to `tracing`.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let mut kv = KvText(String::new());
        let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
        let _ = slog::KV::serialize(values, record, &mut kv);
        let msg = record.msg();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Warning => tracing::warn!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Info => tracing::info!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Debug | slog::Level::Trace => tracing::debug!(target: "raft", "{msg}{}", kv.0),
        }
        Ok(())
    }
}

struct KvText(String);

impl slog::Serializer for KvText {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        use std::fmt::Write;
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}
