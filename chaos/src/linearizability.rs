//! A linearizability checker for histories of registers, one register per key.
//!
//! # The question
//!
//! A history lists operations as clients saw them: what was asked (`Put`, `Get`, `Cas`),
//! when the call was made, when the answer came back and what it was. The history is
//! *linearizable* if there is a total order of all the operations that (1) respects real
//! time: if `a` returned before `b` was called, `a` comes first; and (2) is a legal
//! sequential execution of the model: each `Get` returns the value the last preceding
//! write left, each `Cas` succeeds exactly when the register held its expected value.
//! This is the consistency etcd promises for its KV API (and so Capstan must keep through
//! crashes, restarts and leader changes).
//!
//! # The model
//!
//! One register per key, initially absent. `Put{value}` sets it; `Get` returns it
//! (`None` when absent); `Cas{expected, new}` sets it to `new` if it currently equals
//! `expected` (`None` meaning "absent") and reports whether it did.
//!
//! # Operations with unknown outcomes
//!
//! A client that timed out or lost its connection does not know whether its write took
//! effect. Such an operation has [`Outcome::Unknown`]: it may take effect at any instant
//! after its call, or never. We give it a return time of +infinity, which lets the search
//! place it anywhere after its call, including after every other operation, where it
//! cannot be observed: that is "never". An unknown `Cas` takes effect (or not) by the
//! model's rule at the point it is placed. An unknown `Get` tells nothing and is dropped.
//!
//! # Unknown writes nobody saw
//!
//! Each unknown operation stays concurrent with everything after its call, so k of them
//! on one key multiply the configurations to explore by up to 2^k: a run with many faults
//! (every fault leaves a few writes in doubt) is out of reach of the plain search. But
//! an unknown operation may also never take effect, so a history with some unknown
//! operations removed that is linearizable proves the whole history linearizable (put
//! the removed ones at "never"). The checker therefore first checks each key without the
//! unknown writes whose value no acknowledged read returned and no successful
//! compare-and-set expected (values are unique per write in the workloads, so such a
//! write, if it took effect, was overwritten unseen); only if that fails does it search
//! the key's full history. The reduction can only turn a pass into a fail (an unseen
//! write may be what explains a refused compare-and-set), never the reverse, and the
//! fallback catches exactly those cases: verdicts are the same, only cheaper.
//!
//! # The algorithm
//!
//! Wing and Gong's search (1993) with Lowe's memoization (2017), as in Porcupine
//! (Athalye, 2017):
//!
//! 1. *P-compositionality*: linearizability is local (Herlihy and Wing), and a register
//!    per key is a product of independent objects, so the history is split by key and
//!    each key checked alone; a search over k keys of n/k operations is exponentially
//!    cheaper than one over n. Keys are checked on at most two threads.
//! 2. Each operation becomes two entries, its call and its return, sorted by time (a call
//!    sorts before a return at the same instant: operations that touch are concurrent,
//!    the lenient reading). The entries form a doubly linked list.
//! 3. The search walks the list from its head. At a call entry it tries to linearize that
//!    operation now: if the model accepts it in the current state, it *lifts* the call and
//!    its return out of the list, pushes (entry, previous state) on a stack and restarts
//!    from the head. Reaching a return entry means the operation it belongs to was not
//!    linearized before its own return: dead end, so pop the last choice, *unlift* it (the
//!    links of a lifted node still point at its old neighbours, so reinsertion is O(1))
//!    and try the next call after it. An empty list means every operation is placed.
//! 4. *Memoization*: the configuration after a step is fully described by the set of
//!    linearized operations and the model state. A configuration already explored is not
//!    explored again: it failed before (or is on the current path). The cache holds
//!    (bitset, state) pairs, keyed by a Zobrist hash of the set (one random word per
//!    operation, XORed in and out as operations are placed and removed, so the hash costs
//!    O(1) per step) mixed with the state.
//!
//! Values are interned per key (0 is "absent"), so the model state is a `u32` and a step
//! compares integers. Bitsets are `ceil(n/64)` words for n operations on the key.
//!
//! # Bounds
//!
//! The problem is NP-complete in general; the bounds make it a decision procedure that
//! can also say "don't know". Per key: at most [`Limits::steps_max`] search steps and
//! [`Limits::cache_bytes_max`] bytes of memo cache; exceeding either gives
//! [`CheckResult::Unknown`] (never a wrong verdict). Histories whose clients run one
//! operation at a time are cheap (the concurrency window is the number of clients); what
//! makes a search expensive is many unknown-outcome operations (each stays concurrent
//! with everything after it) and, when the history is not linearizable, the need to
//! exhaust every order before the violation.
//!
//! # Explanations
//!
//! When a key fails, the explanation gives the longest linearizable prefix the search
//! found (its length, its last operations and the register's value after it) and the
//! operations that were candidates to come next, each with why the model refused it. The
//! prefix is tracked at O(1) amortized cost per step: only the part of the stack above
//! the lowest point popped since the last snapshot is copied.
//!
//! Left out: other models (deletes, ranges, leases; a delete would be a `Put` of
//! "absent"), visualization, and the P-compositionality of Cas across keys (a multi-key
//! transaction would need a product model).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::{mix64, ChaosError, Result};

/// Threads the checker may use, at most: the machines this runs on are small.
pub const THREADS_MAX: usize = 2;

/// Operations on one key, at most: entries are indexed by `u32` in the search.
pub const OPS_PER_KEY_MAX: usize = 1 << 24;

/// Candidates listed in an explanation, at most.
const EXPLAIN_CANDIDATES_MAX: usize = 8;
/// Operations of the linearizable prefix listed in an explanation, at most.
const EXPLAIN_PREFIX_TAIL_MAX: usize = 6;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Set the register to `value`.
    Put { value: Vec<u8> },
    /// Read the register.
    Get,
    /// If the register equals `expected` (`None`: absent), set it to `new`.
    Cas { expected: Option<Vec<u8>>, new: Vec<u8> },
}

/// What a client learned, matching its [`Op`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    Put,
    /// The value read; `None` when the key was absent.
    Get(Option<Vec<u8>>),
    /// Whether the compare held (and so the write happened).
    Cas(bool),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The operation completed and the client learned its result.
    Ok(Output),
    /// The client did not learn the result (timeout, lost connection, error): the
    /// operation may take effect at any instant after its call, or never.
    Unknown,
}

/// One operation as one client saw it. Times are nanoseconds from any origin common to
/// the whole history; `return_ns` is ignored when the outcome is unknown.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation {
    pub client_id: u64,
    pub key: Vec<u8>,
    pub op: Op,
    pub call_ns: u64,
    pub return_ns: u64,
    pub outcome: Outcome,
    /// The store revision an acknowledged write created (the response header's
    /// revision), when the client recorded it; the checker ignores it, the lost-write
    /// check looks for the write at this revision in the final log.
    pub revision: Option<i64>,
}

impl Operation {
    /// A completed put. (These constructors take `&str` for brevity in tests and
    /// examples; build the struct directly for binary keys or values.)
    pub fn put(client_id: u64, key: &str, value: &str, call_ns: u64, return_ns: u64) -> Operation {
        Operation {
            client_id,
            key: key.into(),
            op: Op::Put { value: value.into() },
            call_ns,
            return_ns,
            outcome: Outcome::Ok(Output::Put),
            revision: None,
        }
    }

    /// A completed get that read `result` (`None`: absent).
    pub fn get(client_id: u64, key: &str, result: Option<&str>, call_ns: u64, return_ns: u64) -> Operation {
        Operation {
            client_id,
            key: key.into(),
            op: Op::Get,
            call_ns,
            return_ns,
            outcome: Outcome::Ok(Output::Get(result.map(Vec::from))),
            revision: None,
        }
    }

    /// A completed compare-and-set.
    pub fn cas(
        client_id: u64,
        key: &str,
        expected: Option<&str>,
        new: &str,
        succeeded: bool,
        call_ns: u64,
        return_ns: u64,
    ) -> Operation {
        Operation {
            client_id,
            key: key.into(),
            op: Op::Cas {
                expected: expected.map(Vec::from),
                new: new.into(),
            },
            call_ns,
            return_ns,
            outcome: Outcome::Ok(Output::Cas(succeeded)),
            revision: None,
        }
    }

    /// The same operation, with its outcome unknown to the client.
    pub fn unknown(mut self) -> Operation {
        self.outcome = Outcome::Unknown;
        self
    }
}

/// A list of operations, in any order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub operations: Vec<Operation>,
}

impl History {
    pub fn new(operations: Vec<Operation>) -> History {
        History { operations }
    }

    /// Operations whose outcome the client did not learn.
    pub fn unknown_count(&self) -> usize {
        self.operations.iter().filter(|o| o.outcome == Outcome::Unknown).count()
    }
}

/// Bounds on the search, per key.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Search steps (one entry visited) per key before giving up with `Unknown`.
    pub steps_max: u64,
    /// Bytes of memo cache per key before giving up with `Unknown`.
    pub cache_bytes_max: u64,
    /// Threads checking keys in parallel, 1..=[`THREADS_MAX`].
    pub threads: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            steps_max: 5_000_000,
            cache_bytes_max: 256 << 20,
            threads: THREADS_MAX,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    Linearizable,
    /// No valid order exists for `key`'s operations.
    NotLinearizable {
        key: Vec<u8>,
        explanation: String,
    },
    /// A bound was hit on `key` before the search could decide (and no key failed).
    Unknown {
        key: Vec<u8>,
        reason: String,
    },
}

impl CheckResult {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, CheckResult::Linearizable)
    }
}

/// Checks one key's operations: first without the unknown-outcome writes whose value no
/// acknowledged operation observed, then, only if that fails, all of them (see "Unknown
/// writes nobody saw" in the module doc).
fn check_key(ops: &[&Operation], limits: &Limits) -> Verdict {
    let mut observed: HashSet<&[u8]> = HashSet::new();
    for op in ops {
        match (&op.op, &op.outcome) {
            (_, Outcome::Ok(Output::Get(Some(value)))) => {
                observed.insert(value);
            }
            (
                Op::Cas {
                    expected: Some(value), ..
                },
                Outcome::Ok(Output::Cas(true)),
            ) => {
                observed.insert(value);
            }
            _ => {}
        }
    }
    let unobserved = |op: &&Operation| {
        op.outcome == Outcome::Unknown
            && match &op.op {
                Op::Put { value } | Op::Cas { new: value, .. } => !observed.contains(value.as_slice()),
                Op::Get => false,
            }
    };
    if !ops.iter().any(unobserved) {
        return Search::new(ops).run(limits);
    }
    let reduced: Vec<&Operation> = ops.iter().filter(|op| !unobserved(op)).copied().collect();
    match Search::new(&reduced).run(limits) {
        Verdict::Linearizable => Verdict::Linearizable,
        _ => Search::new(ops).run(limits),
    }
}

/// Checks `history` against a register per key. Errors only on a malformed history;
/// when one key is not linearizable, the result names the first such key in key order.
pub fn check(history: &History, limits: &Limits) -> Result<CheckResult> {
    if limits.threads == 0 || limits.threads > THREADS_MAX {
        return Err(ChaosError::InvalidConfig(format!(
            "threads must be 1..={THREADS_MAX}, not {}",
            limits.threads
        )));
    }
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for (i, operation) in history.operations.iter().enumerate() {
        validate(i, operation)?;
        if operation.op == Op::Get && operation.outcome == Outcome::Unknown {
            continue; // A read whose result is unknown constrains nothing.
        }
        by_key.entry(&operation.key).or_default().push(operation);
    }
    if let Some((key, ops)) = by_key.iter().find(|(_, ops)| ops.len() > OPS_PER_KEY_MAX) {
        return Err(ChaosError::InvalidHistory(format!(
            "key {} has {} operations, more than {OPS_PER_KEY_MAX}",
            show_bytes(key),
            ops.len()
        )));
    }
    let partitions: Vec<(&[u8], Vec<&Operation>)> = by_key.into_iter().collect();

    // Workers take keys from a shared counter; verdicts land in their key's slot, so the
    // reported key does not depend on which thread finished first.
    let verdicts: Vec<Mutex<Option<Verdict>>> = partitions.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let worker = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some((_, ops)) = partitions.get(i) else { break };
        let verdict = check_key(ops, limits);
        *verdicts[i]
            .lock()
            .expect("a checker thread panicked while holding a verdict") = Some(verdict);
    };
    let threads = limits.threads.min(partitions.len()).max(1);
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(worker);
        }
        worker();
    });

    let mut unknown = None;
    for ((key, _), verdict) in partitions.iter().zip(verdicts) {
        let verdict = verdict
            .into_inner()
            .expect("a checker thread panicked while holding a verdict")
            .expect("every key was checked: the workers drain the counter");
        match verdict {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable(explanation) => {
                return Ok(CheckResult::NotLinearizable {
                    key: key.to_vec(),
                    explanation: format!("key {}: {explanation}", show_bytes(key)),
                })
            }
            Verdict::Unknown(reason) => {
                unknown.get_or_insert((key.to_vec(), reason));
            }
        }
    }
    Ok(match unknown {
        Some((key, reason)) => CheckResult::Unknown { key, reason },
        None => CheckResult::Linearizable,
    })
}

fn validate(i: usize, operation: &Operation) -> Result<()> {
    let bad = |what: &str| {
        Err(ChaosError::InvalidHistory(format!(
            "operation {i} ({operation:?}): {what}"
        )))
    };
    if let Outcome::Ok(output) = &operation.outcome {
        let matches = matches!(
            (&operation.op, output),
            (Op::Put { .. }, Output::Put) | (Op::Get, Output::Get(_)) | (Op::Cas { .. }, Output::Cas(_))
        );
        if !matches {
            return bad("its output is for another kind of operation");
        }
        if operation.return_ns < operation.call_ns {
            return bad("it returns before it is called");
        }
        if operation.return_ns == u64::MAX {
            return bad("a completed operation needs a finite return time (u64::MAX means unknown)");
        }
    }
    Ok(())
}

enum Verdict {
    Linearizable,
    NotLinearizable(String),
    Unknown(String),
}

/// The model's inputs and outputs with values interned: 0 is "absent".
#[derive(Clone, Copy, Debug)]
enum Input {
    Put { value: u32 },
    Get,
    Cas { expected: u32, new: u32 },
}

#[derive(Clone, Copy, Debug)]
enum Out {
    Put,
    Get(u32),
    Cas(bool),
    Unknown,
}

/// The register model: the state after `input` with output `out` from `state`, or `None`
/// if that output is impossible in that state.
fn step(state: u32, input: Input, out: Out) -> Option<u32> {
    match (input, out) {
        (Input::Put { value }, _) => Some(value),
        (Input::Get, Out::Get(read)) => (read == state).then_some(state),
        (Input::Get, _) => Some(state),
        (Input::Cas { expected, new }, Out::Cas(succeeded)) => {
            if state == expected {
                succeeded.then_some(new)
            } else {
                (!succeeded).then_some(state)
            }
        }
        (Input::Cas { expected, new }, _) => Some(if state == expected { new } else { state }),
    }
}

const NIL: u32 = u32::MAX;
const HEAD: u32 = 0;

/// The search over one key's operations.
struct Search<'h> {
    ops: &'h [&'h Operation],
    inputs: Vec<Input>,
    outs: Vec<Out>,
    /// Interned values; index 0 is "absent" (an empty placeholder).
    values: Vec<&'h [u8]>,
    /// The entry list: node 0 is the head; node k + 1 is the k-th entry in time order.
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Per node: the operation and whether this is its call entry.
    node_op: Vec<u32>,
    node_is_call: Vec<bool>,
    /// Per operation: its return node.
    return_node: Vec<u32>,
    /// Per operation: its Zobrist word.
    zobrist: Vec<u64>,
}

impl<'h> Search<'h> {
    fn new(ops: &'h [&'h Operation]) -> Search<'h> {
        let mut interned: HashMap<&'h [u8], u32> = HashMap::new();
        let mut values: Vec<&'h [u8]> = vec![&[]];
        let mut intern = |v: Option<&'h [u8]>| -> u32 {
            match v {
                None => 0,
                Some(v) => *interned.entry(v).or_insert_with(|| {
                    values.push(v);
                    u32::try_from(values.len() - 1).expect("values per key are bounded by OPS_PER_KEY_MAX")
                }),
            }
        };
        let mut inputs = Vec::with_capacity(ops.len());
        let mut outs = Vec::with_capacity(ops.len());
        for operation in ops {
            let input = match &operation.op {
                Op::Put { value } => Input::Put {
                    value: intern(Some(value)),
                },
                Op::Get => Input::Get,
                Op::Cas { expected, new } => Input::Cas {
                    expected: intern(expected.as_deref()),
                    new: intern(Some(new)),
                },
            };
            let out = match &operation.outcome {
                Outcome::Unknown => Out::Unknown,
                Outcome::Ok(Output::Put) => Out::Put,
                Outcome::Ok(Output::Get(read)) => Out::Get(intern(read.as_deref())),
                Outcome::Ok(Output::Cas(succeeded)) => Out::Cas(*succeeded),
            };
            inputs.push(input);
            outs.push(out);
        }

        // Entries: (time, 0 = call / 1 = return, operation). Calls sort before returns at
        // the same instant; the operation index makes the order total and deterministic.
        let mut entries: Vec<(u64, u8, u32)> = Vec::with_capacity(2 * ops.len());
        for (i, operation) in ops.iter().enumerate() {
            let i = u32::try_from(i).expect("operations per key are bounded by OPS_PER_KEY_MAX");
            let return_ns = if operation.outcome == Outcome::Unknown {
                u64::MAX
            } else {
                operation.return_ns
            };
            entries.push((operation.call_ns, 0, i));
            entries.push((return_ns, 1, i));
        }
        entries.sort_unstable();

        let nodes = entries.len() + 1;
        let mut next = vec![NIL; nodes];
        let mut prev = vec![NIL; nodes];
        let mut node_op = vec![NIL; nodes];
        let mut node_is_call = vec![false; nodes];
        let mut return_node = vec![NIL; ops.len()];
        for (k, &(_, kind, op)) in entries.iter().enumerate() {
            let node = u32::try_from(k + 1).expect("nodes are bounded by 2 * OPS_PER_KEY_MAX + 1");
            prev[node as usize] = node - 1;
            next[node as usize - 1] = node;
            node_op[node as usize] = op;
            node_is_call[node as usize] = kind == 0;
            if kind == 1 {
                return_node[op as usize] = node;
            }
        }
        let zobrist = (0..ops.len() as u64)
            .map(|i| mix64(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED))
            .collect();
        Search {
            ops,
            inputs,
            outs,
            values,
            next,
            prev,
            node_op,
            node_is_call,
            return_node,
            zobrist,
        }
    }

    /// Removes a call node and its return node from the list.
    fn lift(&mut self, call: u32) {
        let ret = self.return_node[self.node_op[call as usize] as usize];
        let (p, n) = (self.prev[call as usize], self.next[call as usize]);
        self.next[p as usize] = n;
        self.prev[n as usize] = p; // A call is always followed by at least its return.
        let (p, n) = (self.prev[ret as usize], self.next[ret as usize]);
        self.next[p as usize] = n;
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }

    /// Puts back what `lift(call)` removed, in reverse order.
    fn unlift(&mut self, call: u32) {
        let ret = self.return_node[self.node_op[call as usize] as usize];
        let (p, n) = (self.prev[ret as usize], self.next[ret as usize]);
        self.next[p as usize] = ret;
        if n != NIL {
            self.prev[n as usize] = ret;
        }
        let (p, n) = (self.prev[call as usize], self.next[call as usize]);
        self.next[p as usize] = call;
        self.prev[n as usize] = call;
    }

    fn run(mut self, limits: &Limits) -> Verdict {
        let op_count = self.ops.len();
        let words = op_count.div_ceil(64);
        let mut linearized = vec![0u64; words];
        let mut linearized_hash = 0u64;
        let mut state = 0u32;
        let mut cache = Cache::new(words);
        // (call node, state before it) for each operation placed, in order.
        let mut stack: Vec<(u32, u32)> = Vec::with_capacity(op_count);
        // The longest prefix seen; stack[..best_stable_len] has not changed since it was
        // copied into `best`.
        let mut best: Vec<u32> = Vec::new();
        let mut best_stable_len = 0usize;

        let mut node = self.next[HEAD as usize];
        let mut steps = 0u64;
        while self.next[HEAD as usize] != NIL {
            steps += 1;
            if steps > limits.steps_max {
                return Verdict::Unknown(format!(
                    "gave up after {} search steps (steps_max) over {op_count} operations; \
                     longest linearizable prefix so far: {} operations",
                    limits.steps_max,
                    best.len()
                ));
            }
            if cache.bytes() > limits.cache_bytes_max {
                return Verdict::Unknown(format!(
                    "the memo cache outgrew {} bytes (cache_bytes_max) after {steps} steps over {op_count} \
                     operations; longest linearizable prefix so far: {} operations",
                    limits.cache_bytes_max,
                    best.len()
                ));
            }
            // The list always ends with a return entry and a return entry either makes us
            // backtrack or stop, so the walk never runs off the end.
            assert!(node != NIL, "the search walked past the last entry");
            let op = self.node_op[node as usize];
            if self.node_is_call[node as usize] {
                if let Some(new_state) = step(state, self.inputs[op as usize], self.outs[op as usize]) {
                    let hash = linearized_hash ^ self.zobrist[op as usize];
                    match cache.insert(&linearized, op, new_state, hash) {
                        Insert::New => {
                            stack.push((node, state));
                            state = new_state;
                            linearized[op as usize / 64] |= 1 << (op % 64);
                            linearized_hash = hash;
                            self.lift(node);
                            if stack.len() > best.len() {
                                best.truncate(best_stable_len);
                                best.extend(stack[best_stable_len..].iter().map(|&(n, _)| self.node_op[n as usize]));
                                best_stable_len = stack.len();
                            }
                            node = self.next[HEAD as usize];
                            continue;
                        }
                        Insert::Seen => {}
                        Insert::Full => {
                            return Verdict::Unknown(format!(
                                "the memo cache holds 2^32 - 1 entries after {steps} steps over {op_count} \
                                 operations"
                            ))
                        }
                    }
                }
                node = self.next[node as usize];
            } else {
                // The operation returning here was not placed before its return: undo the
                // last choice and try the next candidate after it.
                let Some((call, previous_state)) = stack.pop() else {
                    return Verdict::NotLinearizable(self.explain(&best));
                };
                best_stable_len = best_stable_len.min(stack.len());
                let op = self.node_op[call as usize];
                linearized[op as usize / 64] &= !(1 << (op % 64));
                linearized_hash ^= self.zobrist[op as usize];
                state = previous_state;
                self.unlift(call);
                node = self.next[call as usize];
            }
        }
        Verdict::Linearizable
    }

    /// Describes the failure from the longest linearizable prefix found.
    fn explain(&self, best: &[u32]) -> String {
        let mut placed = vec![false; self.ops.len()];
        let mut state = 0u32;
        for &op in best {
            placed[op as usize] = true;
            state = step(state, self.inputs[op as usize], self.outs[op as usize])
                .expect("the best prefix was built from accepted steps");
        }
        let origin_ns = self.ops.iter().map(|o| o.call_ns).min().unwrap_or(0);
        let mut text = format!(
            "no linearization of its {} operations exists; the longest linearizable prefix found has {} \
             operations",
            self.ops.len(),
            best.len()
        );
        if best.is_empty() {
            text.push_str(" (not even the first can be placed)");
        } else {
            let shown = best.len().min(EXPLAIN_PREFIX_TAIL_MAX);
            let _ = write!(text, ", ending with:");
            for &op in &best[best.len() - shown..] {
                let _ = write!(text, "\n    {}", self.show_op(op, origin_ns));
            }
        }
        let _ = write!(text, "\n  after which the register holds {}.", self.show_value(state));

        // The candidates to come next: unplaced operations called before the earliest
        // return among the unplaced ones.
        let unplaced = || (0..self.ops.len()).filter(|&i| !placed[i]);
        let earliest_return_ns = unplaced()
            .map(|i| {
                if self.outs[i].is_unknown() {
                    u64::MAX
                } else {
                    self.ops[i].return_ns
                }
            })
            .min()
            .unwrap_or(u64::MAX);
        let mut candidates: Vec<usize> = unplaced()
            .filter(|&i| self.ops[i].call_ns <= earliest_return_ns)
            .collect();
        // The ones the model refuses outright first: they are usually the culprits.
        candidates.sort_by_key(|&i| step(state, self.inputs[i], self.outs[i]).is_some());
        let _ = write!(text, "\n  None of these {} operations can come next:", candidates.len());
        for &i in candidates.iter().take(EXPLAIN_CANDIDATES_MAX) {
            let why = match step(state, self.inputs[i], self.outs[i]) {
                None => match (self.inputs[i], self.outs[i]) {
                    (Input::Get, Out::Get(read)) => {
                        format!(
                            "it read {} but the register holds {}",
                            self.show_value(read),
                            self.show_value(state)
                        )
                    }
                    (Input::Cas { .. }, Out::Cas(true)) => "it succeeded but its expected value is not held".into(),
                    (Input::Cas { .. }, Out::Cas(false)) => "it failed but its expected value is held".into(),
                    _ => "the model refuses it".into(),
                },
                Some(_) => "the model accepts it here, but no order of the rest then works".into(),
            };
            let _ = write!(text, "\n    {}: {why}", self.show_op(i as u32, origin_ns));
        }
        if candidates.len() > EXPLAIN_CANDIDATES_MAX {
            let _ = write!(text, "\n    ... and {} more", candidates.len() - EXPLAIN_CANDIDATES_MAX);
        }
        text
    }

    fn show_value(&self, value: u32) -> String {
        if value == 0 {
            "nothing (absent)".into()
        } else {
            show_bytes(self.values[value as usize])
        }
    }

    fn show_op(&self, op: u32, origin_ns: u64) -> String {
        let operation = self.ops[op as usize];
        let what = match (&operation.op, &operation.outcome) {
            (Op::Put { value }, _) => format!("put {}", show_bytes(value)),
            (Op::Get, Outcome::Ok(Output::Get(read))) => {
                format!(
                    "get -> {}",
                    read.as_deref().map_or_else(|| "absent".to_string(), show_bytes)
                )
            }
            (Op::Get, _) => "get".to_string(),
            (Op::Cas { expected, new }, outcome) => {
                let result = match outcome {
                    Outcome::Ok(Output::Cas(true)) => " -> ok",
                    Outcome::Ok(_) => " -> failed",
                    Outcome::Unknown => "",
                };
                format!(
                    "cas {} => {}{result}",
                    expected.as_deref().map_or_else(|| "absent".to_string(), show_bytes),
                    show_bytes(new)
                )
            }
        };
        let ms = |ns: u64| (ns - origin_ns) as f64 / 1e6;
        let returned = match operation.outcome {
            Outcome::Unknown => "outcome unknown".to_string(),
            Outcome::Ok(_) => format!("{:.3} ms", ms(operation.return_ns)),
        };
        format!(
            "client {}: {what} [called {:.3} ms, {returned}]",
            operation.client_id,
            ms(operation.call_ns)
        )
    }
}

impl Out {
    fn is_unknown(&self) -> bool {
        matches!(self, Out::Unknown)
    }
}

/// Bytes as a quoted string when they are UTF-8, else as hex.
pub fn show_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => format!("{s:?}"),
        Err(_) => {
            let mut out = String::from("0x");
            for b in bytes {
                let _ = write!(out, "{b:02x}");
            }
            out
        }
    }
}

enum Insert {
    New,
    Seen,
    Full,
}

/// The memo cache: a set of (linearized bitset, state) pairs. Bitsets are stored flat, one
/// after another; a map from the combined hash to the newest entry with that hash and a
/// per-entry `chain` link make the buckets, so an entry costs its words plus three u32s
/// and a map slot, with no allocation per entry.
struct Cache {
    words: usize,
    sets: Vec<u64>,
    states: Vec<u32>,
    chain: Vec<u32>,
    heads: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
}

impl Cache {
    fn new(words: usize) -> Cache {
        Cache {
            words,
            sets: Vec::new(),
            states: Vec::new(),
            chain: Vec::new(),
            heads: HashMap::default(),
        }
    }

    fn bytes(&self) -> u64 {
        (self.sets.capacity() * 8 + self.states.capacity() * 4 + self.chain.capacity() * 4 + self.heads.capacity() * 16)
            as u64
    }

    /// Inserts `linearized ∪ {op}` with `state` unless present. `set_hash` is the Zobrist
    /// hash of `linearized ∪ {op}`.
    fn insert(&mut self, linearized: &[u64], op: u32, state: u32, set_hash: u64) -> Insert {
        let key = set_hash ^ mix64(u64::from(state) ^ 0xC0FF_EE00_0000_0000);
        let (op_word, op_bit) = (op as usize / 64, 1u64 << (op % 64));
        let head = self.heads.get(&key).copied().unwrap_or(NIL);
        let mut entry = head;
        while entry != NIL {
            let e = entry as usize;
            if self.states[e] == state {
                let stored = &self.sets[e * self.words..(e + 1) * self.words];
                let same = stored.iter().zip(linearized).enumerate().all(|(w, (&s, &l))| {
                    let l = if w == op_word { l | op_bit } else { l };
                    s == l
                });
                if same {
                    return Insert::Seen;
                }
            }
            entry = self.chain[e];
        }
        let Ok(index) = u32::try_from(self.states.len()) else {
            return Insert::Full;
        };
        if index == NIL {
            return Insert::Full;
        }
        self.sets.extend_from_slice(linearized);
        self.sets[index as usize * self.words + op_word] |= op_bit;
        self.states.push(state);
        self.chain.push(head);
        self.heads.insert(key, index);
        Insert::New
    }
}

/// The cache keys are already well-mixed hashes: hashing them again is wasted work.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
