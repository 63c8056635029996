//! Deterministic Raft harness: several members in one process, each with its real RocksDB
//! store in a temp dir, driven tick by tick with a simulated network (drops, partitions,
//! restarts) from a seed. No threads, no sockets, no clock: a failing seed replays exactly.
//!
//! `HARNESS_SEEDS=n` runs n seeds per test (default 3), `HARNESS_SEED=s` one given seed.
//!
//! Invariants checked: every acknowledged write is present on every member at the
//! revision it was acknowledged with; every member ends with the same history (HashKV);
//! applied revisions never go back.

mod common;

use common::Rng;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use capstan_proto::etcdserverpb::{PutRequest, RangeRequest};
use capstan_proto::store::{command, Command, Member};
use capstan_store::mvcc::{CommandResponse, Mvcc};
use capstan_store::node::{apply_committed_all, AppliedEntry};
use capstan_store::raftlog::RaftLog;
use capstan_store::replica::{Committed, ReadySink, Replica, ReplicaConfig};
use capstan_store::snapshot;
use prost::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, Message, MessageType, Snapshot};

/// Collects a Ready's messages and committed entries; installs snapshots at once.
struct Sink<'a> {
    mvcc: &'a Mvcc,
    pending: &'a mut Option<(u64, PathBuf)>,
    installed: bool,
    messages: Vec<Message>,
    committed: Vec<Committed>,
}

impl ReadySink for Sink<'_> {
    fn install(&mut self, snap: &Snapshot) -> capstan_store::error::Result<()> {
        let index = snap.get_metadata().index;
        let (i, path) = self.pending.take().expect("a snapshot arrives with its state");
        assert_eq!(i, index);
        let f = std::fs::File::open(&path).expect("snapshot file");
        let mut reader = snapshot::Reader::new(std::io::BufReader::new(f))?;
        self.mvcc.install(|| reader.next_record())?;
        self.installed = true;
        Ok(())
    }

    fn send(&mut self, messages: Vec<Message>) {
        self.messages.extend(messages);
    }

    fn apply(&mut self, committed: Vec<Committed>) -> capstan_store::error::Result<()> {
        self.committed.extend(committed);
        Ok(())
    }
}

struct Node {
    id: u64,
    dir: PathBuf,
    mvcc: Option<Arc<Mvcc>>,
    replica: Option<Replica>,
    /// Snapshot state files that arrived, by snapshot index.
    pending_snapshot: Option<(u64, PathBuf)>,
    last_revision: i64,
}

/// An acknowledged write: the member that proposed it saw it applied.
#[derive(Debug, Clone)]
struct Ack {
    key: String,
    value: String,
    revision: i64,
}

struct Cluster {
    nodes: Vec<Node>,
    net: VecDeque<Message>,
    rng: Rng,
    drop_percent: u64,
    /// Members cut off from everyone (by index).
    isolated: Vec<bool>,
    /// (member index, seq) -> proposed (key, value).
    proposed: HashMap<(usize, u64), (String, String)>,
    next_seq: u64,
    acks: Vec<Ack>,
    snapshots_installed: usize,
    seed: u64,
    /// Last, so that it is deleted after the members' stores are closed: a store whose
    /// directory is already gone fails its closing flush, and RocksDB then waits 1 s
    /// before closing (that was 1 s per member per test).
    _tmp: tempfile::TempDir,
}

fn member_record(id: u64) -> Member {
    Member {
        id,
        name: format!("n{id}"),
        peer_urls: vec![format!("http://sim-{id}")],
        client_urls: Vec::new(),
        is_learner: false,
    }
}

fn replica_config(id: u64, applied: u64) -> ReplicaConfig {
    let mut c = ReplicaConfig::new(id, 10, 2);
    // A distinct fixed election timeout per member instead of a random one.
    c.min_election_tick = 10 + 3 * id as usize;
    c.max_election_tick = c.min_election_tick + 1;
    c.applied = applied;
    c.max_size_per_msg = 64 << 10;
    c
}

impl Cluster {
    fn new(n: usize, seed: u64) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let members: Vec<Member> = (1..=n as u64).map(member_record).collect();
        let mut nodes = Vec::new();
        for m in &members {
            let dir = tmp.path().join(format!("n{}", m.id));
            let mvcc = Arc::new(Mvcc::open(&dir.join("db")).expect("open"));
            let mut log = RaftLog::open(mvcc.clone(), &dir.join("raft")).expect("open log");
            log.set_identity(1, m.id).expect("identity");
            log.bootstrap(&members).expect("bootstrap");
            let replica = Replica::new(&replica_config(m.id, 0), log).expect("replica");
            nodes.push(Node {
                id: m.id,
                dir,
                mvcc: Some(mvcc),
                replica: Some(replica),
                pending_snapshot: None,
                last_revision: 1,
            });
        }
        Cluster {
            _tmp: tmp,
            nodes,
            net: VecDeque::new(),
            rng: Rng(seed),
            drop_percent: 0,
            isolated: vec![false; n],
            proposed: HashMap::new(),
            next_seq: 1,
            acks: Vec::new(),
            snapshots_installed: 0,
            seed,
        }
    }

    /// Adds an empty member (no bootstrap) that a conf change will bring in.
    fn add_blank_member(&mut self, id: u64) -> usize {
        let dir = self._tmp.path().join(format!("n{id}"));
        let mvcc = Arc::new(Mvcc::open(&dir.join("db")).expect("open"));
        let mut log = RaftLog::open(mvcc.clone(), &dir.join("raft")).expect("open log");
        log.set_identity(1, id).expect("identity");
        let replica = Replica::new(&replica_config(id, 0), log).expect("replica");
        self.nodes.push(Node {
            id,
            dir,
            mvcc: Some(mvcc),
            replica: Some(replica),
            pending_snapshot: None,
            last_revision: 1,
        });
        self.isolated.push(false);
        self.nodes.len() - 1
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    fn up(&self, i: usize) -> bool {
        self.nodes[i].replica.is_some()
    }

    fn leader(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            self.nodes[i]
                .replica
                .as_ref()
                .is_some_and(|r| r.is_leader() && !self.isolated[i])
        })
    }

    fn tick(&mut self) {
        for n in &mut self.nodes {
            if let Some(r) = n.replica.as_mut() {
                r.tick();
            }
        }
    }

    /// Runs Readys and delivers messages until the network is quiet (bounded).
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut progress = false;
            for i in 0..self.nodes.len() {
                progress |= self.ready(i);
            }
            if let Some(m) = self.net.pop_front() {
                self.deliver(m);
                progress = true;
            }
            if !progress {
                return;
            }
        }
        panic!("seed {}: the cluster did not settle", self.seed);
    }

    fn ready(&mut self, i: usize) -> bool {
        let seed = self.seed;
        let node = &mut self.nodes[i];
        let Some(replica) = node.replica.as_mut() else {
            return false;
        };
        let mvcc = node.mvcc.clone().expect("a running member has its state");
        let mut sink = Sink {
            mvcc: &mvcc,
            pending: &mut node.pending_snapshot,
            installed: false,
            messages: Vec::new(),
            committed: Vec::new(),
        };
        let out = replica
            .ready(&mut sink)
            .unwrap_or_else(|e| panic!("seed {seed}: ready on n{i}: {e}"));
        let Some(_out) = out else { return false };
        let Sink {
            installed,
            messages,
            committed,
            ..
        } = sink;
        if installed {
            node.last_revision = mvcc.revision();
        }
        let node_id = node.id;
        if installed {
            self.snapshots_installed += 1;
        }
        self.net.extend(messages);
        let results = apply_committed_all(&mvcc, &committed).expect("apply");
        for (c, applied) in committed.iter().zip(results) {
            let ctx = &c.entry.context;
            if let AppliedEntry::Command { applied, .. } = applied {
                let node = &mut self.nodes[i];
                assert!(
                    applied.revision >= node.last_revision,
                    "seed {seed}: revision went back on n{node_id}"
                );
                node.last_revision = applied.revision;
                if ctx.len() == 16 && u64::from_be_bytes(ctx[..8].try_into().expect("8")) == node_id {
                    let seq = u64::from_be_bytes(ctx[8..].try_into().expect("8"));
                    if let (Some((k, v)), Ok(CommandResponse::Put(r))) =
                        (self.proposed.remove(&(i, seq)), &applied.response)
                    {
                        let revision = r.header.as_ref().expect("header").revision;
                        self.acks.push(Ack {
                            key: k,
                            value: v,
                            revision,
                        });
                    }
                }
            }
        }
        true
    }

    fn deliver(&mut self, m: Message) {
        let Some(to) = self.index_of(m.to) else { return };
        let from = self.index_of(m.from);
        if self.isolated[to] || from.is_some_and(|f| self.isolated[f]) {
            return;
        }
        if self.drop_percent > 0 && self.rng.chance(self.drop_percent) {
            return;
        }
        if !self.up(to) {
            return;
        }
        if m.get_msg_type() == MessageType::MsgSnapshot {
            // The transport streams the sender's state; here it is a file written now.
            let Some(from) = from.filter(|&f| self.up(f)) else {
                return;
            };
            let mvcc = self.nodes[from].mvcc.clone().expect("state");
            let path = self.nodes[to].dir.join(format!("snap-{}.tmp", self.rng.next()));
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
            snapshot::write_state(&mvcc, &mut f).expect("write state");
            drop(f);
            let index = m.get_snapshot().get_metadata().index;
            self.nodes[to].pending_snapshot = Some((index, path));
            let r = self.nodes[to].replica.as_mut().expect("up").step(m);
            let _ = r;
            return;
        }
        let _ = self.nodes[to].replica.as_mut().expect("up").step(m);
    }

    /// Ticks until there is a leader (bounded).
    fn elect(&mut self) -> usize {
        for _ in 0..2_000 {
            self.tick();
            self.settle();
            if let Some(l) = self.leader() {
                return l;
            }
        }
        panic!("seed {}: no leader elected", self.seed);
    }

    fn propose_put(&mut self, at: usize, key: &str, value: &str) {
        let id = self.nodes[at].id;
        let Some(r) = self.nodes[at].replica.as_mut() else {
            return;
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let cmd = Command {
            op: Some(command::Op::Put(PutRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
                ..Default::default()
            })),
        };
        let mut ctx = id.to_be_bytes().to_vec();
        ctx.extend_from_slice(&seq.to_be_bytes());
        if r.propose(ctx, cmd.encode_to_vec()).is_ok() {
            self.proposed.insert((at, seq), (key.to_string(), value.to_string()));
        }
    }

    /// Proposes a membership change of `id` at member `at` (an added member's record
    /// travels as the context, as `member add` sends it).
    fn propose_conf_change(&mut self, at: usize, kind: ConfChangeType, id: u64) {
        let mut cc = ConfChange::default();
        cc.set_change_type(kind);
        cc.node_id = id;
        if kind != ConfChangeType::RemoveNode {
            cc.context = member_record(id).encode_to_vec().into();
        }
        self.nodes[at]
            .replica
            .as_mut()
            .expect("up")
            .propose_conf_change(Vec::new(), cc)
            .expect("propose conf change");
    }

    fn stop(&mut self, i: usize) {
        self.nodes[i].replica = None;
        self.nodes[i].mvcc = None;
        self.nodes[i].pending_snapshot = None;
        self.proposed.retain(|(at, _), _| *at != i);
    }

    fn start(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.replica.is_none());
        let mvcc = Arc::new(Mvcc::open(&node.dir.join("db")).expect("reopen"));
        let log = RaftLog::open(mvcc.clone(), &node.dir.join("raft")).expect("reopen log");
        let applied = mvcc
            .applied_index()
            .min(log.hard_state().commit)
            .max(log.first_index_() - 1);
        node.last_revision = mvcc.revision();
        node.replica = Some(Replica::new(&replica_config(node.id, applied), log).expect("replica"));
        node.mvcc = Some(mvcc);
    }

    /// Heals the network and runs until every live member has applied the same index.
    fn converge(&mut self) {
        self.drop_percent = 0;
        self.isolated.iter_mut().for_each(|x| *x = false);
        for _ in 0..3_000 {
            self.tick();
            self.settle();
            let Some(l) = self.leader() else { continue };
            let commit = self.nodes[l].replica.as_ref().expect("up").commit_index();
            let all = (0..self.nodes.len())
                .filter(|&i| self.up(i))
                .all(|i| self.nodes[i].mvcc.as_ref().expect("up").applied_index() >= commit);
            if all {
                return;
            }
        }
        panic!("seed {}: members did not converge", self.seed);
    }

    fn check(&self) {
        let live: Vec<&Node> = self.nodes.iter().filter(|n| n.mvcc.is_some()).collect();
        let mvcc0 = live[0].mvcc.as_ref().expect("state");
        let rev = mvcc0.revision();
        for n in &live {
            let m = n.mvcc.as_ref().expect("state");
            assert_eq!(
                m.revision(),
                rev,
                "seed {}: n{} is at another revision",
                self.seed,
                n.id
            );
            assert_eq!(
                m.hash_kv(rev).expect("hash"),
                mvcc0.hash_kv(rev).expect("hash"),
                "seed {}: n{} has another history",
                self.seed,
                n.id
            );
        }
        for a in &self.acks {
            for n in &live {
                let m = n.mvcc.as_ref().expect("state");
                let r = m
                    .range(&RangeRequest {
                        key: Bytes::copy_from_slice(a.key.as_bytes()),
                        revision: a.revision,
                        serializable: true,
                        ..Default::default()
                    })
                    .expect("range");
                let kv = r
                    .kvs
                    .first()
                    .unwrap_or_else(|| panic!("seed {}: acknowledged {a:?} missing on n{}", self.seed, n.id));
                assert_eq!(
                    kv.value.as_ref(),
                    a.value.as_bytes(),
                    "seed {}: {a:?} on n{}",
                    self.seed,
                    n.id
                );
                assert_eq!(kv.mod_revision, a.revision, "seed {}: {a:?} on n{}", self.seed, n.id);
            }
        }
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("HARNESS_SEED") {
        return vec![s.parse().expect("HARNESS_SEED is a number")];
    }
    let n: u64 = std::env::var("HARNESS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    (1..=n).map(|i| i * 7919).collect()
}

#[test]
fn three_members_elect_a_leader_and_replicate() {
    for seed in seeds() {
        let mut c = Cluster::new(3, seed);
        let l = c.elect();
        for i in 0..50 {
            c.propose_put(l, &format!("k{}", i % 7), &format!("v{i}"));
            c.settle();
        }
        // Proposals at followers are forwarded to the leader.
        for i in 0..20 {
            let at = (l + 1 + i % 2) % 3;
            c.propose_put(at, &format!("f{}", i % 5), &format!("w{i}"));
            c.settle();
        }
        c.converge();
        assert_eq!(
            c.acks.len(),
            70,
            "seed {seed}: every proposal is acknowledged on a healthy cluster"
        );
        c.check();
    }
}

#[test]
fn five_members_under_drops_and_partitions() {
    for seed in seeds() {
        let mut c = Cluster::new(5, seed);
        c.elect();
        c.drop_percent = 15;
        for step in 0..400u64 {
            c.tick();
            if step % 3 == 0 {
                let at = c.rng.below(5) as usize;
                let k = format!("k{}", c.rng.below(10));
                c.propose_put(at, &k, &format!("s{step}"));
            }
            if step % 60 == 0 {
                // Cut a random member off (often the leader) for a while.
                let victim = match c.leader() {
                    Some(l) if c.rng.chance(60) => l,
                    _ => c.rng.below(5) as usize,
                };
                c.isolated.iter_mut().for_each(|x| *x = false);
                c.isolated[victim] = true;
            }
            c.settle();
        }
        c.converge();
        assert!(
            c.acks.len() > 20,
            "seed {seed}: writes made progress ({} acks)",
            c.acks.len()
        );
        c.check();
    }
}

#[test]
fn leader_changes_during_proposals_lose_no_acknowledged_write() {
    for seed in seeds() {
        let mut c = Cluster::new(3, seed);
        for round in 0..5 {
            let l = c.elect();
            for i in 0..10 {
                c.propose_put(l, &format!("r{round}"), &format!("{i}"));
            }
            // Some of those are delivered, then the leader goes away mid-flight.
            for _ in 0..3 {
                if let Some(m) = c.net.pop_front() {
                    c.deliver(m);
                }
                let _ = c.ready(l);
            }
            c.isolated[l] = true;
            c.tick();
            c.settle();
            let _ = c.elect();
            c.isolated[l] = false;
        }
        c.converge();
        c.check();
    }
}

#[test]
fn a_member_that_missed_compacted_entries_catches_up_by_snapshot() {
    for seed in seeds() {
        let mut c = Cluster::new(3, seed);
        let l = c.elect();
        let down = (l + 1) % 3;
        c.stop(down);
        for i in 0..200 {
            c.propose_put(l, &format!("s{}", i % 13), &format!("v{i}"));
            c.settle();
        }
        c.converge();
        // Truncate the log of the live members past what the stopped one has.
        for i in 0..3 {
            if c.up(i) {
                let applied = c.nodes[i].mvcc.as_ref().expect("up").persist_applied().expect("flush");
                c.nodes[i]
                    .replica
                    .as_mut()
                    .expect("up")
                    .compact_log(applied)
                    .expect("compact");
            }
        }
        c.start(down);
        c.converge();
        assert!(
            c.snapshots_installed >= 1,
            "seed {seed}: the member caught up by snapshot"
        );
        c.check();
        // And it takes part afterwards.
        let l = c.elect();
        c.propose_put(l, "after", "snapshot");
        c.converge();
        c.check();
    }
}

#[test]
fn every_member_restarts_and_the_cluster_continues() {
    for seed in seeds() {
        let mut c = Cluster::new(3, seed);
        let l = c.elect();
        for i in 0..30 {
            c.propose_put(l, &format!("a{}", i % 4), &format!("{i}"));
        }
        c.converge();
        for i in 0..3 {
            c.stop(i);
        }
        for i in 0..3 {
            c.start(i);
        }
        let l = c.elect();
        for i in 0..30 {
            c.propose_put(l, &format!("b{}", i % 4), &format!("{i}"));
        }
        c.converge();
        assert_eq!(c.acks.len(), 60, "seed {seed}");
        c.check();
        // One at a time, under load.
        for victim in 0..3 {
            c.stop(victim);
            let l = c.elect();
            c.propose_put(l, "rolling", &format!("{victim}"));
            c.settle();
            c.start(victim);
            c.converge();
        }
        c.check();
    }
}

#[test]
fn a_member_is_added_then_another_removed() {
    for seed in seeds() {
        let mut c = Cluster::new(3, seed);
        let l = c.elect();
        for i in 0..20 {
            c.propose_put(l, &format!("m{}", i % 3), &format!("{i}"));
        }
        c.converge();
        let new = c.add_blank_member(4);
        let l = c.elect();
        c.propose_conf_change(l, ConfChangeType::AddNode, 4);
        c.converge();
        assert!(c.nodes[new].mvcc.as_ref().expect("up").applied_index() > 0);
        let members = c.nodes[new].mvcc.as_ref().expect("up").members().expect("members");
        assert_eq!(
            members.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![1, 2, 3, 4],
            "seed {seed}"
        );
        c.check();
        // Remove a follower that is not the leader.
        let l = c.elect();
        let victim = (0..3).find(|&i| i != l).expect("a follower");
        let victim_id = c.nodes[victim].id;
        c.propose_conf_change(l, ConfChangeType::RemoveNode, victim_id);
        c.converge();
        c.stop(victim);
        let l = c.elect();
        c.propose_put(l, "after", "remove");
        c.converge();
        let ids: Vec<u64> = c.nodes[l]
            .mvcc
            .as_ref()
            .expect("up")
            .members()
            .expect("members")
            .iter()
            .map(|m| m.id)
            .collect();
        assert!(!ids.contains(&victim_id), "seed {seed}: {ids:?}");
        c.check();
    }
}

#[test]
fn the_leader_refuses_changes_that_would_leave_no_quorum_of_live_voters() {
    for seed in seeds() {
        let mut c = Cluster::new(3, seed);
        let l = c.elect();
        let down = (l + 1) % 3;
        let other = (l + 2) % 3;
        let (down_id, other_id) = (c.nodes[down].id, c.nodes[other].id);
        assert!(
            c.nodes[l]
                .replica
                .as_ref()
                .expect("up")
                .quorum_after(None, Some(other_id)),
            "seed {seed}: all live"
        );
        c.stop(down);
        // Past an election timeout the leader knows who it has not heard from.
        for _ in 0..60 {
            c.tick();
            c.settle();
        }
        assert!(
            c.nodes[l].replica.as_ref().expect("up").is_leader(),
            "seed {seed}: two of three keep the leader"
        );
        assert!(
            !c.nodes[l]
                .replica
                .as_ref()
                .expect("up")
                .quorum_after(None, Some(other_id)),
            "seed {seed}: removing a live member would leave one live voter of two"
        );
        assert!(
            c.nodes[l]
                .replica
                .as_ref()
                .expect("up")
                .quorum_after(None, Some(down_id)),
            "seed {seed}: removing the dead member is fine"
        );
        assert!(
            !c.nodes[l].replica.as_ref().expect("up").quorum_after(Some(99), None),
            "seed {seed}: two live voters of four are not a quorum"
        );
    }
}

/// raft-rs clears its "recently active" marks at every check-quorum round, until the
/// next heartbeat answers come back; a membership change asked in that window must not
/// be refused while every member is live (the cluster test's `member add` was).
#[test]
fn all_live_voters_count_as_live_at_every_tick() {
    for seed in seeds() {
        let mut c = Cluster::new(3, seed);
        let l = c.elect();
        for tick in 0..60 {
            c.tick();
            // Before this tick's messages are delivered.
            assert!(
                c.nodes[l].replica.as_ref().expect("up").quorum_after(None, None),
                "seed {seed}, tick {tick}: three live voters"
            );
            c.settle();
        }
    }
}

#[test]
fn a_snapshot_install_cut_off_midway_is_detected_and_the_log_reset() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("db");
    let raft = tmp.path().join("raft");
    {
        let mvcc = Arc::new(Mvcc::open(&db).expect("open"));
        let mut log = RaftLog::open(mvcc.clone(), &raft).expect("log");
        log.set_identity(1, 1).expect("identity");
        log.bootstrap(&[member_record(1)]).expect("bootstrap");
        for i in 1..=5u64 {
            let cmd = Command {
                op: Some(command::Op::Put(PutRequest {
                    key: Bytes::from(format!("k{i}")),
                    value: Bytes::from_static(b"v"),
                    ..Default::default()
                })),
            };
            mvcc.apply_entry(i, 1, &cmd)
                .expect("apply")
                .expect("not applied before");
        }
        // The stream breaks after two records: the install fails half way.
        let mut n = 0;
        let r = mvcc.install(|| {
            n += 1;
            match n {
                1 | 2 => Ok(Some((format!("lx{n}").into_bytes(), b"garbage".to_vec()))),
                _ => Err(capstan_store::StoreError::Storage("stream broke".into())),
            }
        });
        assert!(r.is_err());
    }
    // A crash now; on restart the half-installed state is recognised and cleared, and the
    // log is emptied so that the leader sends a whole snapshot again.
    let mvcc = Arc::new(Mvcc::open(&db).expect("reopen"));
    assert!(mvcc.interrupted_install());
    assert_eq!(mvcc.applied_index(), 0);
    assert_eq!(mvcc.revision(), 1);
    let r = mvcc
        .range(&RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            serializable: true,
            ..Default::default()
        })
        .expect("range");
    assert!(r.kvs.is_empty(), "nothing of either state survives: {:?}", r.kvs);
    let log = RaftLog::open(mvcc.clone(), &raft).expect("log");
    assert_eq!(log.first_index_(), 1);
    assert_eq!(log.hard_state().commit, 0);
    assert_eq!(raft::Storage::last_index(&log).expect("last"), 0);
    assert_eq!(log.hard_state().term, 1, "the term (and vote) are kept");
}
