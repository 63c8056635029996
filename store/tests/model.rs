//! Model test: random sequences of put / delete / txn / compact / range, with restarts in
//! between, applied to the real RocksDB-backed state machine and checked against a simple
//! in-memory model of etcd's semantics that keeps every revision's full state.
//!
//! Entries are applied as a member applies them (`apply_entry`: a compaction is only
//! recorded), and the physical compaction runs in small batches at random points between
//! them, restarts included: the ranges, the final replay and HashKV must not tell how far
//! it got.
//!
//! Seeded: a failure prints its seed; `MODEL_SEED=<n> cargo test -p capstan-store --test
//! model` replays it. `MODEL_SEEDS=<n>` runs more seeds.

mod common;

use common::Rng;
use std::collections::BTreeMap;

use bytes::Bytes;
use capstan_proto::etcdserverpb::{
    compare, request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use capstan_proto::mvccpb::event::EventType;
use capstan_proto::store::{command, Command};
use capstan_store::mvcc::{check_command, CommandResponse, Mvcc};
use capstan_store::StoreError;

const KEYS: &[&[u8]] = &[b"a", b"ab", b"abc", b"b", b"b\x00", b"ba", b"c", b"d\xff", b"\x00"];

#[derive(Clone, Debug, PartialEq)]
struct Kv {
    value: Vec<u8>,
    create: i64,
    modr: i64,
    version: i64,
}

#[derive(Default)]
struct Model {
    /// states[r] = the whole store at revision r (states[0] is empty).
    states: Vec<BTreeMap<Vec<u8>, Kv>>,
    compacted: i64,
    /// events[r] = (is_put, key) of revision r.
    events: Vec<Vec<(bool, Vec<u8>)>>,
}

impl Model {
    fn new() -> Model {
        Model {
            states: vec![BTreeMap::new(), BTreeMap::new()],
            compacted: 0,
            events: vec![Vec::new(), Vec::new()],
        }
    }
    fn rev(&self) -> i64 {
        (self.states.len() - 1) as i64
    }
    fn cur(&self) -> &BTreeMap<Vec<u8>, Kv> {
        self.states.last().expect("state")
    }
}

/// (is a put, key) of each event, the shape the model records.
fn event_keys(events: &[capstan_proto::mvccpb::Event]) -> Vec<(bool, Vec<u8>)> {
    events
        .iter()
        .map(|e| {
            (
                e.r#type == EventType::Put as i32,
                e.kv.as_ref().map(|kv| kv.key.to_vec()).unwrap_or_default(),
            )
        })
        .collect()
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else if end == [0] {
        k >= key
    } else {
        k >= key && k < end
    }
}

fn rand_range(rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let key = rng.pick(KEYS).to_vec();
    let end = match rng.below(4) {
        0 => Vec::new(),
        1 => vec![0],
        _ => rng.pick(KEYS).to_vec(),
    };
    (key, end)
}

/// A write op of a txn branch: (is_put, key, end-or-value).
fn rand_write(rng: &mut Rng, used: &mut Vec<Vec<u8>>) -> Option<RequestOp> {
    let key = rng.pick(KEYS).to_vec();
    if used.contains(&key) {
        return None;
    }
    used.push(key.clone());
    if rng.below(3) == 0 {
        Some(RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.into(),
                prev_kv: true,
                ..Default::default()
            })),
        })
    } else {
        let value = format!("v{}", rng.below(1000)).into_bytes();
        Some(RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.into(),
                value: value.into(),
                prev_kv: true,
                ..Default::default()
            })),
        })
    }
}

/// Applies a write set to the model as one revision; returns whether anything changed.
fn model_writes(m: &mut Model, ops: &[(bool, Vec<u8>, Vec<u8>)]) {
    let mut next = m.cur().clone();
    let rev = m.rev() + 1;
    let mut evs = Vec::new();
    for (is_put, key, arg) in ops {
        if *is_put {
            let prev = next.get(key).cloned();
            next.insert(
                key.clone(),
                Kv {
                    value: arg.clone(),
                    create: prev.as_ref().map_or(rev, |p| p.create),
                    modr: rev,
                    version: prev.map_or(1, |p| p.version + 1),
                },
            );
            evs.push((true, key.clone()));
        } else {
            let doomed: Vec<Vec<u8>> = next.keys().filter(|k| in_range(k, key, arg)).cloned().collect();
            for k in doomed {
                next.remove(&k);
                evs.push((false, k));
            }
        }
    }
    if !evs.is_empty() {
        m.states.push(next);
        m.events.push(evs);
    }
}

fn check_range(m: &Model, mvcc: &Mvcc, rng: &mut Rng, seed: u64, step: usize) {
    let (key, end) = rand_range(rng);
    let rev = match rng.below(3) {
        0 => 0,
        _ => rng.below(m.rev() as u64 + 2) as i64,
    };
    let limit = rng.below(4) as i64;
    let req = RangeRequest {
        key: key.clone().into(),
        range_end: end.clone().into(),
        revision: rev,
        limit,
        ..Default::default()
    };
    let got = mvcc.range(&req);
    let at = if rev <= 0 { m.rev() } else { rev };
    if at > m.rev() {
        assert_eq!(
            got,
            Err(StoreError::FutureRevision),
            "seed {seed} step {step}: range at future {rev}"
        );
        return;
    }
    if at < m.compacted {
        assert_eq!(
            got,
            Err(StoreError::Compacted),
            "seed {seed} step {step}: range at compacted {rev}"
        );
        return;
    }
    let got = got.unwrap_or_else(|e| panic!("seed {seed} step {step}: range failed: {e}"));
    let want: Vec<(Vec<u8>, Kv)> = m.states[at as usize]
        .iter()
        .filter(|(k, _)| in_range(k, &key, &end))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        got.count,
        want.len() as i64,
        "seed {seed} step {step}: count of {key:?}..{end:?} at {at}"
    );
    let shown = if limit > 0 {
        want.len().min(limit as usize)
    } else {
        want.len()
    };
    assert_eq!(got.more, shown < want.len(), "seed {seed} step {step}: more");
    let got_kvs: Vec<(Vec<u8>, Kv)> = got
        .kvs
        .iter()
        .map(|kv| {
            (
                kv.key.to_vec(),
                Kv {
                    value: kv.value.to_vec(),
                    create: kv.create_revision,
                    modr: kv.mod_revision,
                    version: kv.version,
                },
            )
        })
        .collect();
    assert_eq!(
        got_kvs,
        want[..shown].to_vec(),
        "seed {seed} step {step}: range {key:?}..{end:?} at {at} limit {limit}"
    );
    assert_eq!(
        got.header.map(|h| h.revision),
        Some(m.rev()),
        "seed {seed} step {step}: header revision"
    );
}

/// The default bound of the writer's cache of newest versions, or a tiny one (a few
/// entries: most lookups miss, entries are shed all the time).
#[derive(Clone, Copy)]
enum Cache {
    Default,
    Tiny,
}

fn open(dir: &std::path::Path, cache: Cache) -> Mvcc {
    match cache {
        Cache::Default => Mvcc::open(dir),
        // Room for about seven entries of these keys (~260 bytes each, counted), fewer
        // than the keys: entries are cached, then shed.
        Cache::Tiny => Mvcc::open_with_cache_bytes(dir, 2048),
    }
    .expect("open")
}

fn run(seed: u64, steps: usize, cache: Cache) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mvcc = open(dir.path(), cache);
    let mut m = Model::new();
    let mut rng = Rng(seed);
    let mut index = 0u64;
    for step in 0..steps {
        // The background compactor's batches, at random points between entries.
        if mvcc.compaction_pending() && rng.chance(30) {
            let hash = mvcc.hash_kv(0).expect("hash");
            for _ in 0..=rng.below(3) {
                mvcc.compact_step(1 + rng.below(4) as usize)
                    .unwrap_or_else(|e| panic!("seed {seed} step {step}: compaction batch: {e}"));
            }
            assert_eq!(
                mvcc.hash_kv(0).expect("hash"),
                hash,
                "seed {seed} step {step}: HashKV after compaction batches"
            );
        }
        // The range that ends the chosen branch of a txn, which must see the txn's writes.
        let mut txn_range: Option<(Vec<u8>, Vec<u8>)> = None;
        let choice = rng.below(100);
        let cmd = if choice < 35 {
            let key = rng.pick(KEYS).to_vec();
            let value = format!("v{}", rng.below(1000)).into_bytes();
            model_writes(&mut m, &[(true, key.clone(), value.clone())]);
            Command {
                op: Some(command::Op::Put(PutRequest {
                    key: key.into(),
                    value: value.into(),
                    ..Default::default()
                })),
            }
        } else if choice < 45 {
            let (key, end) = rand_range(&mut rng);
            model_writes(&mut m, &[(false, key.clone(), end.clone())]);
            Command {
                op: Some(command::Op::DeleteRange(DeleteRangeRequest {
                    key: key.into(),
                    range_end: end.into(),
                    ..Default::default()
                })),
            }
        } else if choice < 65 {
            // A compare-and-swap txn on mod_revision, as kube-apiserver does, with a range.
            let ckey = rng.pick(KEYS).to_vec();
            let cur_mod = m.cur().get(&ckey).map_or(0, |kv| kv.modr);
            let expect = if rng.below(2) == 0 { cur_mod } else { cur_mod + 1 };
            let holds = expect == cur_mod;
            let mut used = Vec::new();
            let mut branch = |rng: &mut Rng| -> Vec<RequestOp> {
                let mut ops = Vec::new();
                for _ in 0..rng.below(3) + 1 {
                    if let Some(op) = rand_write(rng, &mut used) {
                        ops.push(op);
                    }
                }
                let (key, end) = rand_range(rng);
                ops.push(RequestOp {
                    request: Some(request_op::Request::RequestRange(RangeRequest {
                        key: key.into(),
                        range_end: end.into(),
                        ..Default::default()
                    })),
                });
                ops
            };
            let success = branch(&mut rng);
            let failure = branch(&mut rng);
            let chosen = if holds { success.clone() } else { failure.clone() };
            let writes: Vec<(bool, Vec<u8>, Vec<u8>)> = chosen
                .iter()
                .filter_map(|op| match &op.request {
                    Some(request_op::Request::RequestPut(p)) => Some((true, p.key.to_vec(), p.value.to_vec())),
                    Some(request_op::Request::RequestDeleteRange(d)) => {
                        Some((false, d.key.to_vec(), d.range_end.to_vec()))
                    }
                    _ => None,
                })
                .collect();
            let t = TxnRequest {
                compare: vec![Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Mod as i32,
                    key: ckey.into(),
                    target_union: Some(compare::TargetUnion::ModRevision(expect)),
                    range_end: Bytes::new(),
                }],
                success,
                failure,
            };
            let cmd = Command {
                op: Some(command::Op::Txn(t)),
            };
            if check_command(&cmd).is_err() {
                // A put and a delete range that overlap: etcd refuses it before proposing.
                continue;
            }
            if let Some(RequestOp {
                request: Some(request_op::Request::RequestRange(r)),
            }) = chosen.last()
            {
                txn_range = Some((r.key.to_vec(), r.range_end.to_vec()));
            }
            model_writes(&mut m, &writes);
            cmd
        } else if choice < 70 && m.rev() > m.compacted {
            let at = m.compacted + 1 + rng.below((m.rev() - m.compacted) as u64) as i64;
            m.compacted = at;
            Command {
                op: Some(command::Op::Compaction(CompactionRequest {
                    revision: at,
                    physical: true,
                })),
            }
        } else if choice < 75 {
            drop(mvcc);
            mvcc = open(dir.path(), cache);
            assert_eq!(
                mvcc.revision(),
                m.rev(),
                "seed {seed} step {step}: revision after restart"
            );
            assert_eq!(
                mvcc.compact_revision(),
                m.compacted,
                "seed {seed} step {step}: compaction after restart"
            );
            continue;
        } else {
            check_range(&m, &mvcc, &mut rng, seed, step);
            continue;
        };
        index += 1;
        check_command(&cmd).unwrap_or_else(|e| panic!("seed {seed} step {step}: rejected: {e}"));
        let applied = mvcc
            .apply_entry(index, 1, &cmd)
            .unwrap_or_else(|e| panic!("seed {seed} step {step}: storage: {e}"))
            .unwrap_or_else(|| panic!("seed {seed} step {step}: entry {index} taken as applied before"));
        let resp = applied
            .response
            .unwrap_or_else(|e| panic!("seed {seed} step {step}: apply: {e}"));
        assert_eq!(
            applied.revision,
            m.rev(),
            "seed {seed} step {step}: revision after {cmd:?}"
        );
        let want_events = if applied.events.is_empty() {
            Vec::new()
        } else {
            m.events[m.rev() as usize].clone()
        };
        assert_eq!(
            event_keys(&applied.events),
            want_events,
            "seed {seed} step {step}: events"
        );
        if let (CommandResponse::Txn(t), Some((key, end))) = (&resp, &txn_range) {
            let Some(response_op::Response::ResponseRange(rr)) = t.responses.last().and_then(|r| r.response.as_ref())
            else {
                panic!("seed {seed} step {step}: txn did not answer its range last: {t:?}");
            };
            let want = m.cur().keys().filter(|k| in_range(k, key, end)).count() as i64;
            assert_eq!(
                rr.count, want,
                "seed {seed} step {step}: a range inside a txn sees the txn's writes"
            );
        }
    }
    // The replay and HashKV are the same before the compactor finishes and after.
    let from = m.compacted.max(1);
    let replay_pending = mvcc.events(from, m.rev(), true, usize::MAX).expect("events");
    let hash_pending = mvcc.hash_kv(0).expect("hash");
    mvcc.compact_physically().expect("compaction");
    assert!(!mvcc.compaction_pending());
    assert_eq!(
        mvcc.events(from, m.rev(), true, usize::MAX).expect("events"),
        replay_pending,
        "seed {seed}: replay once compaction is done"
    );
    assert_eq!(
        mvcc.hash_kv(0).expect("hash"),
        hash_pending,
        "seed {seed}: HashKV once compaction is done"
    );
    // Compaction is physical: what survives is one version per key live at the compaction
    // revision, the deletions at exactly that revision, and everything after it.
    let c = m.compacted as usize;
    let want_entries: usize = if c == 0 {
        m.events.iter().map(Vec::len).sum()
    } else {
        m.states[c].len()
            + m.events[c].iter().filter(|(put, _)| !put).count()
            + m.events[c + 1..].iter().map(Vec::len).sum::<usize>()
    };
    assert_eq!(
        mvcc.history_entries().expect("history"),
        want_entries as u64,
        "seed {seed}: history entries after compaction at {c}"
    );
    // The whole uncompacted history replays as events, revision by revision.
    let replay = mvcc.events(from, m.rev(), true, usize::MAX).expect("events");
    let want: Vec<i64> = (from..=m.rev()).filter(|r| !m.events[*r as usize].is_empty()).collect();
    let mut got: Vec<i64> = replay.iter().map(|(r, _)| *r).collect();
    // At the compaction revision itself only the surviving versions remain.
    if m.compacted > 0 {
        got.retain(|r| *r > m.compacted);
    }
    let want: Vec<i64> = want
        .into_iter()
        .filter(|r| *r > m.compacted || m.compacted == 0)
        .collect();
    assert_eq!(got, want, "seed {seed}: replayed revisions");
    for (r, evs) in &replay {
        if *r > m.compacted {
            assert_eq!(
                event_keys(evs),
                m.events[*r as usize],
                "seed {seed}: replayed events of {r}"
            );
        }
    }
}

#[test]
fn random_histories_match_the_model() {
    run_seeds(Cache::Default);
}

#[test]
fn random_histories_match_the_model_with_a_tiny_writer_cache() {
    run_seeds(Cache::Tiny);
}

fn run_seeds(cache: Cache) {
    if let Ok(seed) = std::env::var("MODEL_SEED") {
        run(seed.parse().expect("MODEL_SEED is a number"), 2000, cache);
        return;
    }
    let seeds: u64 = std::env::var("MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    for seed in 1..=seeds {
        run(seed, 600, cache);
    }
}
