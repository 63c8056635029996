//! The `raft_message` target: what a member's peer service decodes from the bytes peers
//! send it (a Raft stream's batches, a snapshot stream's first chunk and its file), and
//! raft-rs stepping the decoded messages.

use capstan_proto::peer::{RaftBatch, SnapshotChunk};
use capstan_store::replica::{check_message, decode_message};
use capstan_store::snapshot;
use capstan_store::transport::split_append;
use prost::Message as _;
use raft::prelude::{ConfChange, ConfState, Entry, EntryType, HardState, Message, MessageType};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};

/// Messages of one batch stepped at most.
const MESSAGES_MAX: usize = 64;
/// Readies handled after a step at most.
const READIES_MAX: usize = 4;
/// The receiving member, and the members of its configuration.
const ME: u64 = 1;
const VOTERS: [u64; 3] = [1, 2, 3];
/// Its log: entries 1..=3 (terms 1, 1, 2), term 2, entries up to 2 committed.
const LOG: [(u64, u64); 3] = [(1, 1), (2, 1), (3, 2)];
const TERM: u64 = 2;
const COMMIT: u64 = 2;
/// The entry size at which `split_append` is checked to cut appends (small, so that
/// fuzzed appends are cut).
const SPLIT_BYTES: usize = 64;

/// Input: one mode byte, then its bytes.
///
/// - mode % 4 == 0: a `RaftBatch` as the `Raft` stream of the peer service receives it:
///   each message decoded with `replica::decode_message` and, as `PeerService::raft`
///   does, dropped if it is a snapshot message (those come by the snapshot stream) and
///   else stepped, all into one fresh member (the stream ends at the first message that
///   does not decode, as the service's does).
/// - 1: one Raft message, decoded and stepped; an append is also cut by
///   `transport::split_append`, whose pieces must be the same entries, in consecutive
///   appends.
/// - 2: the first `SnapshotChunk` of a snapshot stream with the whole file in it: the
///   message must be a snapshot message and the file must pass `snapshot::verify`, as
///   `PeerService::snapshot` requires, and the message is then stepped.
/// - 3: a snapshot file alone, through `snapshot::verify`.
///
/// Bit 2 of the mode byte makes the receiving member its cluster's leader before the
/// messages arrive (else it is a follower). The member is raft-rs's `RawNode` with the
/// options `replica::Replica` gives it, over raft-rs's in-memory storage (the member's
/// `RaftLog` fsyncs every write to RocksDB, far too slow here); each Ready is handled in
/// `Replica::ready`'s order.
pub fn raft_message(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let leader = mode & 4 != 0;
    match mode % 4 {
        0 => {
            let Ok(batch) = RaftBatch::decode(rest) else {
                return;
            };
            let mut node = None;
            for b in batch.messages.iter().take(MESSAGES_MAX) {
                let Ok(m) = decode_message(b) else {
                    return;
                };
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    continue;
                }
                let Some(node) = node.get_or_insert_with(|| member(leader)) else {
                    return;
                };
                step(node, m);
            }
        }
        1 => {
            let Ok(m) = decode_message(rest) else {
                return;
            };
            check_split(&m);
            if m.get_msg_type() == MessageType::MsgSnapshot {
                return;
            }
            if let Some(mut node) = member(leader) {
                step(&mut node, m);
            }
        }
        2 => {
            let Ok(chunk) = SnapshotChunk::decode(rest) else {
                return;
            };
            let Ok(m) = decode_message(&chunk.message) else {
                return;
            };
            if m.get_msg_type() != MessageType::MsgSnapshot || snapshot::verify(chunk.data.as_ref()).is_err() {
                return;
            }
            if let Some(mut node) = member(leader) {
                step(&mut node, m);
            }
        }
        _ => {
            let _ = snapshot::verify(rest);
        }
    }
}

/// A fresh member [`ME`] of [`VOTERS`] with [`LOG`], as a follower or made leader by an
/// election it wins (its pre-vote and vote answered by member 2, which then takes the
/// leader's first entry). None if the set-up fails, which would be a bug of this
/// target, not of the input.
fn member(leader: bool) -> Option<RawNode<MemStorage>> {
    let storage = MemStorage::new_with_conf_state(ConfState::from((VOTERS.to_vec(), Vec::new())));
    {
        let mut core = storage.wl();
        let entries: Vec<Entry> = LOG
            .iter()
            .map(|&(index, term)| Entry {
                index,
                term,
                ..Default::default()
            })
            .collect();
        core.append(&entries).ok()?;
        core.set_hardstate(HardState {
            term: TERM,
            commit: COMMIT,
            ..Default::default()
        });
    }
    // `Replica::new`'s options; the raft thread ticks with an election timeout of 10.
    let config = raft::Config {
        id: ME,
        election_tick: 10,
        heartbeat_tick: 1,
        applied: COMMIT,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        batch_append: true,
        max_uncommitted_size: 64 << 20,
        ..Default::default()
    };
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut node = RawNode::new(&config, storage, &logger).ok()?;
    if leader {
        node.campaign().ok()?;
        ready(&mut node);
        let answer = |ty, term| {
            let mut m = Message::default();
            m.set_msg_type(ty);
            m.from = 2;
            m.to = ME;
            m.term = term;
            m
        };
        node.step(answer(MessageType::MsgRequestPreVoteResponse, TERM + 1))
            .ok()?;
        ready(&mut node);
        node.step(answer(MessageType::MsgRequestVoteResponse, TERM + 1)).ok()?;
        ready(&mut node);
        if node.raft.state != StateRole::Leader {
            return None;
        }
        // Member 2 acknowledges the new leader's empty entry: the leader has committed
        // an entry of its term, so it serves read index requests.
        let mut ack = answer(MessageType::MsgAppendResponse, TERM + 1);
        ack.index = node.raft.raft_log.last_index();
        node.step(ack).ok()?;
        ready(&mut node);
    }
    Some(node)
}

/// `Replica::step` (its check of the message, then raft-rs's; a refused message is
/// dropped), then the Readies it makes. Messages that break what raft-rs trusts a peer
/// with (see [`trusted`]) are left out.
fn step(node: &mut RawNode<MemStorage>, m: Message) {
    if check_message(&m, node.raft.state == StateRole::Leader).is_err() || !trusted(node, &m) {
        return;
    }
    if node.step(m).is_ok() {
        ready(node);
    }
}

/// What raft-rs takes for granted in a message from a member of its cluster, and
/// panics on (its `fatal!`) when it does not hold, and the server does not check: such
/// a message stops the receiving member's raft thread. A member of the cluster never
/// sends one unless its log or the receiver's was lost or corrupted (raft-rs panics
/// then on purpose, as etcd does); anyone who can reach the peer port can send one.
/// The target leaves them out so that fuzzing goes on past them:
///
/// - a heartbeat whose commit index is past the receiver's last entry (`commit_to`:
///   "to_commit N is out of range");
/// - a snapshot whose configuration raft-rs cannot restore as it is ("invalid restore",
///   "unable to restore config"): a joint configuration half-formed, a member twice or
///   both voter and learner. Capstan changes membership one member at a time (never a
///   joint configuration), so the target takes only a simple one: distinct voters, at
///   least one, and learners that are not voters.
fn trusted(node: &RawNode<MemStorage>, m: &Message) -> bool {
    let log = &node.raft.raft_log;
    match m.get_msg_type() {
        MessageType::MsgHeartbeat => m.commit <= log.last_index(),
        MessageType::MsgSnapshot => {
            let cs = m.get_snapshot().get_metadata().get_conf_state();
            let mut members: Vec<u64> = cs.voters.iter().chain(&cs.learners).copied().collect();
            members.sort_unstable();
            members.dedup();
            cs.voters_outgoing.is_empty()
                && cs.learners_next.is_empty()
                && !cs.auto_leave
                && !cs.voters.is_empty()
                && members.len() == cs.voters.len() + cs.learners.len()
        }
        _ => true,
    }
}

/// `Replica::ready`, the network and the state machine left out: install a snapshot,
/// persist entries and hard state, advance, make committed conf changes effective.
fn ready(node: &mut RawNode<MemStorage>) {
    for _ in 0..READIES_MAX {
        if !node.has_ready() {
            return;
        }
        let mut rd = node.ready();
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            if node.mut_store().wl().apply_snapshot(snap).is_err() {
                return;
            }
        }
        let _ = rd.take_messages();
        let committed = rd.take_committed_entries();
        conf_changes(node, &committed);
        if node.mut_store().wl().append(rd.entries()).is_err() {
            return;
        }
        if let Some(hs) = rd.hs() {
            node.mut_store().wl().set_hardstate(hs.clone());
        }
        let _ = rd.take_persisted_messages();
        let mut light = node.advance(rd);
        if let Some(commit) = light.commit_index() {
            node.mut_store().wl().mut_hard_state().commit = commit;
        }
        let _ = light.take_messages();
        let committed = light.take_committed_entries();
        conf_changes(node, &committed);
        node.advance_apply();
    }
}

/// `Replica::conf_change` for each committed conf change entry: one that does not decode
/// is corrupt data (the member fails), one Raft refuses is applied as nothing.
fn conf_changes(node: &mut RawNode<MemStorage>, committed: &[Entry]) {
    use protobuf::Message as _;
    for e in committed {
        if e.get_entry_type() != EntryType::EntryConfChange || e.data.is_empty() {
            continue;
        }
        let Ok(cc) = ConfChange::parse_from_bytes(&e.data) else {
            continue;
        };
        if let Ok(cs) = node.apply_conf_change(&cc) {
            node.mut_store().wl().set_conf_state(cs);
        }
    }
}

/// `transport::split_append`'s promise: the pieces of an append carry its entries in
/// order, each piece at least one, each piece's (index, log_term) the last entry of the
/// piece before it, every other field unchanged.
fn check_split(m: &Message) {
    let pieces = split_append(m.clone(), SPLIT_BYTES);
    if m.get_msg_type() != MessageType::MsgAppend {
        assert!(pieces.len() == 1 && pieces[0] == *m, "only appends are cut");
        return;
    }
    let entries: Vec<&Entry> = pieces.iter().flat_map(|p| p.entries.iter()).collect();
    assert!(
        entries.len() == m.entries.len() && entries.iter().zip(m.entries.iter()).all(|(a, b)| *a == b),
        "the pieces of an append carry its entries"
    );
    let (mut index, mut log_term) = (m.index, m.log_term);
    for p in &pieces {
        assert!(
            pieces.len() == 1 || !p.entries.is_empty(),
            "every piece of a cut append carries entries"
        );
        assert_eq!((p.index, p.log_term), (index, log_term), "the pieces are consecutive");
        let mut same = p.clone();
        same.index = m.index;
        same.log_term = m.log_term;
        same.set_entries(m.entries.clone());
        assert!(
            same == *m,
            "a piece differs from its append only in its entries and position"
        );
        if let Some(last) = p.entries.last() {
            (index, log_term) = (last.index, last.term);
        }
    }
}
