//! The linearizability checker on hand-written histories (each a known verdict) and on
//! seeded random histories generated from a real sequential execution (always
//! linearizable) and then corrupted (never linearizable).

use capstan_chaos::linearizability::{check, CheckResult, History, Limits, Op, Operation, Outcome, Output};
use capstan_chaos::SplitMix64;

fn verdict(ops: Vec<Operation>) -> CheckResult {
    check(&History::new(ops), &Limits::default()).expect("a well-formed history")
}

#[track_caller]
fn assert_linearizable(ops: Vec<Operation>) {
    let result = verdict(ops);
    assert_eq!(
        result,
        CheckResult::Linearizable,
        "expected linearizable, got {result:#?}"
    );
}

/// Asserts the verdict names `key` and returns the explanation.
#[track_caller]
fn assert_not_linearizable(ops: Vec<Operation>, key: &str) -> String {
    match verdict(ops) {
        CheckResult::NotLinearizable { key: k, explanation } => {
            assert_eq!(k, key.as_bytes(), "wrong key; explanation: {explanation}");
            explanation
        }
        other => panic!("expected not linearizable on {key:?}, got {other:#?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(vec![]);
}

#[test]
fn sequential_history_passes() {
    assert_linearizable(vec![
        Operation::get(1, "k", None, 0, 10),
        Operation::put(1, "k", "a", 20, 30),
        Operation::get(2, "k", Some("a"), 40, 50),
        Operation::cas(2, "k", Some("a"), "b", true, 60, 70),
        Operation::cas(1, "k", Some("a"), "c", false, 80, 90),
        Operation::cas(1, "k", None, "c", false, 100, 110),
        Operation::get(1, "k", Some("b"), 120, 130),
        Operation::put(3, "other", "x", 0, 200),
        Operation::get(3, "other", Some("x"), 210, 220),
    ]);
}

#[test]
fn concurrent_writes_may_land_in_either_order() {
    // Two overlapping puts, then a read: either value is fine, since either put may be
    // linearized last.
    for last in ["x", "y"] {
        assert_linearizable(vec![
            Operation::put(1, "k", "x", 0, 10),
            Operation::put(2, "k", "y", 5, 15),
            Operation::get(3, "k", Some(last), 20, 30),
        ]);
    }
    // A read overlapping a put may see before or after it; two sequential reads by one
    // client overlapping the same put may go from old to new but not back.
    assert_linearizable(vec![
        Operation::put(1, "k", "old", 0, 1),
        Operation::put(2, "k", "new", 10, 100),
        Operation::get(3, "k", Some("old"), 20, 30),
        Operation::get(3, "k", Some("new"), 40, 50),
    ]);
    assert_not_linearizable(
        vec![
            Operation::put(1, "k", "old", 0, 1),
            Operation::put(2, "k", "new", 10, 100),
            Operation::get(3, "k", Some("new"), 20, 30),
            Operation::get(3, "k", Some("old"), 40, 50),
        ],
        "k",
    );
}

#[test]
fn operations_that_touch_are_concurrent() {
    // The put returns at the instant the get is called: the lenient reading lets the get
    // come first.
    assert_linearizable(vec![
        Operation::put(1, "k", "a", 0, 10),
        Operation::get(2, "k", None, 10, 20),
    ]);
    assert_not_linearizable(
        vec![Operation::put(1, "k", "a", 0, 10), Operation::get(2, "k", None, 11, 20)],
        "k",
    );
}

#[test]
fn stale_read_fails() {
    let explanation = assert_not_linearizable(
        vec![
            Operation::put(1, "k", "1", 0, 10),
            Operation::put(1, "k", "2", 20, 30),
            Operation::get(2, "k", Some("1"), 40, 50),
        ],
        "k",
    );
    // The explanation places the two puts and blames the read.
    assert!(explanation.contains("prefix found has 2 operations"), "{explanation}");
    assert!(
        explanation.contains("it read \"1\" but the register holds \"2\""),
        "{explanation}"
    );
}

#[test]
fn lost_write_fails() {
    // An acknowledged put that a later read does not see.
    assert_not_linearizable(
        vec![Operation::put(1, "k", "a", 0, 10), Operation::get(2, "k", None, 20, 30)],
        "k",
    );
    // Also when another key's history is fine: the violation is reported on its key.
    assert_not_linearizable(
        vec![
            Operation::put(1, "a", "1", 0, 10),
            Operation::get(1, "a", Some("1"), 20, 30),
            Operation::put(1, "b", "1", 0, 10),
            Operation::get(2, "b", None, 20, 30),
        ],
        "b",
    );
}

#[test]
fn read_of_a_value_never_written_fails() {
    let explanation = assert_not_linearizable(vec![Operation::get(1, "k", Some("ghost"), 0, 10)], "k");
    assert!(explanation.contains("not even the first"), "{explanation}");
}

#[test]
fn cas_semantics() {
    // Creating an absent key: only one of two concurrent creators can win.
    assert_linearizable(vec![
        Operation::cas(1, "k", None, "a", true, 0, 10),
        Operation::cas(2, "k", None, "b", false, 0, 10),
        Operation::get(3, "k", Some("a"), 20, 30),
    ]);
    assert_not_linearizable(
        vec![
            Operation::cas(1, "k", None, "a", true, 0, 10),
            Operation::cas(2, "k", None, "b", true, 0, 10),
        ],
        "k",
    );
    // A failed cas must not change the value.
    assert_not_linearizable(
        vec![
            Operation::put(1, "k", "a", 0, 10),
            Operation::cas(1, "k", Some("x"), "b", false, 20, 30),
            Operation::get(1, "k", Some("b"), 40, 50),
        ],
        "k",
    );
    // A cas that failed although its expected value was held (and nothing was concurrent).
    let explanation = assert_not_linearizable(
        vec![
            Operation::put(1, "k", "a", 0, 10),
            Operation::cas(1, "k", Some("a"), "b", false, 20, 30),
        ],
        "k",
    );
    assert!(
        explanation.contains("it failed but its expected value is held"),
        "{explanation}"
    );
    // A cas that succeeded although its expected value was not held.
    assert_not_linearizable(
        vec![
            Operation::put(1, "k", "a", 0, 10),
            Operation::cas(1, "k", Some("z"), "b", true, 20, 30),
        ],
        "k",
    );
    // A cas expecting absence fails on a present key; a concurrent put explains a failure.
    assert_linearizable(vec![
        Operation::put(1, "k", "a", 0, 10),
        Operation::cas(2, "k", None, "b", false, 20, 30),
        Operation::cas(2, "k", Some("a"), "c", false, 40, 50),
        Operation::put(1, "k", "d", 35, 60),
        Operation::get(1, "k", Some("d"), 70, 80),
    ]);
}

#[test]
fn unknown_write_may_or_may_not_take_effect() {
    // Observed later: it took effect.
    assert_linearizable(vec![
        Operation::put(1, "k", "a", 0, 10),
        Operation::put(2, "k", "b", 20, 0).unknown(),
        Operation::get(3, "k", Some("b"), 1_000, 1_010),
    ]);
    // Never observed: it did not (or was overwritten unseen).
    assert_linearizable(vec![
        Operation::put(1, "k", "a", 0, 10),
        Operation::put(2, "k", "b", 20, 0).unknown(),
        Operation::get(3, "k", Some("a"), 1_000, 1_010),
        Operation::get(3, "k", Some("a"), 2_000, 2_010),
    ]);
    // Observed, then not: it took effect at most once, so the old value cannot return.
    assert_not_linearizable(
        vec![
            Operation::put(1, "k", "a", 0, 10),
            Operation::put(2, "k", "b", 20, 0).unknown(),
            Operation::get(3, "k", Some("b"), 1_000, 1_010),
            Operation::get(3, "k", Some("a"), 2_000, 2_010),
        ],
        "k",
    );
    // It cannot take effect before it was called.
    assert_not_linearizable(
        vec![
            Operation::get(3, "k", Some("b"), 0, 10),
            Operation::put(2, "k", "b", 20, 0).unknown(),
        ],
        "k",
    );
    // An unknown cas takes effect by the model's rule wherever it is placed.
    assert_linearizable(vec![
        Operation::put(1, "k", "a", 0, 10),
        Operation::cas(2, "k", Some("a"), "b", false, 20, 0).unknown(),
        Operation::get(3, "k", Some("b"), 100, 110),
    ]);
    assert_not_linearizable(
        vec![
            Operation::put(1, "k", "a", 0, 10),
            Operation::cas(2, "k", Some("x"), "b", false, 20, 0).unknown(),
            Operation::get(3, "k", Some("b"), 100, 110),
        ],
        "k",
    );
    // An unknown get constrains nothing, whatever it claims.
    assert_linearizable(vec![Operation::get(1, "k", Some("ghost"), 0, 10).unknown()]);
}

#[test]
fn malformed_histories_are_errors() {
    let backwards = History::new(vec![Operation::put(1, "k", "a", 10, 5)]);
    assert!(check(&backwards, &Limits::default()).is_err());
    let mut mismatched = Operation::put(1, "k", "a", 0, 5);
    mismatched.outcome = Outcome::Ok(Output::Cas(true));
    assert!(check(&History::new(vec![mismatched]), &Limits::default()).is_err());
    let bad_limits = Limits {
        threads: 3,
        ..Limits::default()
    };
    assert!(check(&History::new(vec![]), &bad_limits).is_err());
}

#[test]
fn binary_keys_and_values() {
    let op = |value: &[u8], call_ns, return_ns, get: bool| Operation {
        client_id: 1,
        key: vec![0xff, 0x00],
        op: if get {
            Op::Get
        } else {
            Op::Put { value: value.to_vec() }
        },
        call_ns,
        return_ns,
        outcome: if get {
            Outcome::Ok(Output::Get(Some(value.to_vec())))
        } else {
            Outcome::Ok(Output::Put)
        },
        revision: None,
    };
    assert_eq!(
        verdict(vec![op(&[1, 2], 0, 1, false), op(&[1, 2], 2, 3, true)]),
        CheckResult::Linearizable
    );
    // The empty value is a value, not absence.
    assert_eq!(
        verdict(vec![op(&[], 0, 1, false), op(&[], 2, 3, true)]),
        CheckResult::Linearizable
    );
    match verdict(vec![op(&[1, 2], 0, 1, false), op(&[0xfe], 2, 3, true)]) {
        CheckResult::NotLinearizable { key, explanation } => {
            assert_eq!(key, vec![0xff, 0x00]);
            assert!(
                explanation.contains("read 0xfe but the register holds \"\\u{1}\\u{2}\""),
                "{explanation}"
            );
        }
        other => panic!("expected not linearizable, got {other:?}"),
    }
}

#[test]
fn step_limit_gives_unknown() {
    let history = generate(&Gen {
        seed: 5,
        keys: 1,
        ops: 200,
        clients: 4,
        unknown_percent: 0,
    });
    let limits = Limits {
        steps_max: 10,
        ..Limits::default()
    };
    match check(&history, &limits).expect("well-formed") {
        CheckResult::Unknown { key, reason } => {
            assert_eq!(key, b"k0");
            assert!(reason.contains("steps_max"), "{reason}");
        }
        other => panic!("expected unknown, got {other:?}"),
    }
    // The same history within the default bounds.
    assert_eq!(
        check(&history, &Limits::default()).expect("well-formed"),
        CheckResult::Linearizable
    );
}

/// Parameters of a random history.
struct Gen {
    seed: u64,
    keys: u64,
    ops: u64,
    clients: u64,
    unknown_percent: u64,
}

/// A history from a real sequential execution: operations take effect one at a time at
/// increasing instants `t`, on a register per key, and each gets a random interval
/// around its instant (calls up to 50 ns before, returns up to 50 ns after), one
/// operation at a time per client. So the instants are a witness: linearizable by
/// construction. Some writes have unknown outcomes; half of those took effect, half not.
fn generate(g: &Gen) -> History {
    let mut rng = SplitMix64::new(g.seed);
    let mut registers: Vec<Option<String>> = vec![None; g.keys as usize];
    let mut busy_until_ns = vec![0u64; g.clients as usize];
    let mut ops = Vec::new();
    let mut t = 1_000u64;
    for n in 0..g.ops {
        t += 1 + rng.below(20);
        let mut client = rng.below(g.clients) as usize;
        if busy_until_ns[client] >= t {
            // Take the client that is free soonest, and wait for it if need be.
            client = (0..busy_until_ns.len())
                .min_by_key(|&c| busy_until_ns[c])
                .expect("clients > 0");
            t = t.max(busy_until_ns[client] + 1);
        }
        let call_ns = t - rng.below((t - busy_until_ns[client]).min(50));
        let return_ns = t + rng.below(50);
        busy_until_ns[client] = return_ns;
        let k = rng.below(g.keys) as usize;
        let key = format!("k{k}");
        let unknown = rng.percent(g.unknown_percent);
        let applied = !unknown || rng.percent(50);
        let c = client as u64;
        let op = match rng.below(3) {
            0 => Operation::get(c, &key, registers[k].as_deref(), call_ns, return_ns),
            1 => {
                let value = format!("v{n}");
                if applied {
                    registers[k] = Some(value.clone());
                }
                Operation::put(c, &key, &value, call_ns, return_ns)
            }
            _ => {
                let expected = match rng.below(3) {
                    0 => registers[k].clone(),
                    1 => None,
                    _ => Some(format!("v{}", rng.below(n + 1))),
                };
                let new = format!("v{n}");
                let succeeded = expected == registers[k];
                if succeeded && applied {
                    registers[k] = Some(new.clone());
                }
                Operation::cas(c, &key, expected.as_deref(), &new, succeeded, call_ns, return_ns)
            }
        };
        ops.push(if unknown && !matches!(op.op, Op::Get) {
            op.unknown()
        } else {
            op
        });
    }
    // The checker must not depend on the order operations are listed in.
    for i in (1..ops.len()).rev() {
        ops.swap(i, rng.below(i as u64 + 1) as usize);
    }
    History::new(ops)
}

/// Replaces the result of one completed get (chosen by `pick`) with a value nobody wrote.
fn corrupt_one_get(history: &mut History, pick: u64) -> Option<String> {
    let gets: Vec<usize> = (0..history.operations.len())
        .filter(|&i| matches!(history.operations[i].outcome, Outcome::Ok(Output::Get(_))))
        .collect();
    if gets.is_empty() {
        return None;
    }
    let operation = &mut history.operations[gets[(pick % gets.len() as u64) as usize]];
    operation.outcome = Outcome::Ok(Output::Get(Some(b"never-written".to_vec())));
    Some(String::from_utf8(operation.key.clone()).expect("generated keys are UTF-8"))
}

#[test]
fn random_histories_pass_and_corrupted_ones_fail() {
    let mut checked = 0;
    for seed in 0..150u64 {
        let g = Gen {
            seed,
            keys: 1 + seed % 3,
            ops: 120,
            clients: 2 + seed % 5,
            unknown_percent: 5 * (seed % 3),
        };
        let mut history = generate(&g);
        let result = check(&history, &Limits::default()).expect("well-formed");
        assert_eq!(result, CheckResult::Linearizable, "seed {seed}: {result:#?}");
        let Some(key) = corrupt_one_get(&mut history, seed) else {
            continue;
        };
        match check(&history, &Limits::default()).expect("well-formed") {
            CheckResult::NotLinearizable { key: k, explanation } => {
                assert_eq!(k, key.as_bytes(), "seed {seed}");
                assert!(explanation.contains("never-written"), "seed {seed}: {explanation}");
            }
            other => panic!("seed {seed}: corrupted history judged {other:#?}"),
        }
        checked += 1;
    }
    assert!(checked > 140, "most histories have a get to corrupt, got {checked}");
}

/// Replaces the result of the completed get called last with a value nobody wrote: the
/// search must place nearly everything before finding it impossible.
fn corrupt_last_get(history: &mut History) -> String {
    let operation = history
        .operations
        .iter_mut()
        .filter(|o| matches!(o.outcome, Outcome::Ok(Output::Get(_))))
        .max_by_key(|o| o.call_ns)
        .expect("the history has gets");
    operation.outcome = Outcome::Ok(Output::Get(Some(b"never-written".to_vec())));
    String::from_utf8(operation.key.clone()).expect("generated keys are UTF-8")
}

#[test]
fn thousands_of_operations_on_one_key() {
    // 8 clients, 4000 operations on one key: the search must stay near-linear, and a
    // read corrupted at the very end must still be found.
    let mut history = generate(&Gen {
        seed: 42,
        keys: 1,
        ops: 4000,
        clients: 8,
        unknown_percent: 0,
    });
    let started = std::time::Instant::now();
    assert_eq!(
        check(&history, &Limits::default()).expect("well-formed"),
        CheckResult::Linearizable
    );
    let key = corrupt_last_get(&mut history);
    match check(&history, &Limits::default()).expect("well-formed") {
        CheckResult::NotLinearizable { key: k, explanation } => {
            assert_eq!(k, key.as_bytes());
            assert!(explanation.contains("never-written"), "{explanation}");
        }
        other => panic!("corrupted history judged {other:#?}"),
    }
    eprintln!("4000 operations checked twice in {:?}", started.elapsed());
}

#[test]
fn unknown_outcomes_are_cheap_to_accept_and_expensive_to_refute() {
    // With 1% unknown outcomes (about 27 writes that stay concurrent with everything
    // after them), a linearizable history is accepted quickly: the search places them
    // late. Refuting a corrupted one means ruling out every subset of the unknown writes
    // still pending at the violation, 2^k configurations: the bounds turn that into
    // Unknown, never into a verdict.
    let mut history = generate(&Gen {
        seed: 42,
        keys: 1,
        ops: 4000,
        clients: 8,
        unknown_percent: 1,
    });
    assert!(
        history.unknown_count() > 20,
        "the history exercises unknown outcomes: {}",
        history.unknown_count()
    );
    assert_eq!(
        check(&history, &Limits::default()).expect("well-formed"),
        CheckResult::Linearizable
    );
    corrupt_last_get(&mut history);
    let limits = Limits {
        cache_bytes_max: 32 << 20,
        ..Limits::default()
    };
    match check(&history, &limits).expect("well-formed") {
        CheckResult::Unknown { reason, .. } => assert!(reason.contains("cache_bytes_max"), "{reason}"),
        CheckResult::NotLinearizable { .. } => {}
        CheckResult::Linearizable => panic!("a read of a value never written was accepted"),
    }
}

#[test]
fn one_and_two_threads_agree() {
    for seed in 0..20u64 {
        let mut history = generate(&Gen {
            seed,
            keys: 4,
            ops: 200,
            clients: 4,
            unknown_percent: 3,
        });
        if seed % 2 == 0 {
            corrupt_one_get(&mut history, seed);
        }
        let one = check(
            &history,
            &Limits {
                threads: 1,
                ..Limits::default()
            },
        )
        .expect("well-formed");
        let two = check(
            &history,
            &Limits {
                threads: 2,
                ..Limits::default()
            },
        )
        .expect("well-formed");
        assert_eq!(one, two, "seed {seed}");
        assert_eq!(one.is_linearizable(), seed % 2 == 1, "seed {seed}: {one:#?}");
    }
}

/// Many writes in doubt that nobody read: each may or may not have taken effect, so a
/// plain search would explore up to 2^n subsets; the checker proves the history
/// linearizable without them, within a step bound far below that.
#[test]
fn many_unseen_unknown_writes_stay_cheap() {
    let mut ops = vec![Operation::put(0, "k", "first", 0, 10)];
    // 40 clients each leave a write in doubt, all concurrent with what follows.
    for c in 1..=40u64 {
        ops.push(Operation::put(c, "k", &format!("lost-{c}"), 20 + c, 30 + c).unknown());
    }
    // Then a known sequence of writes and reads, none of which sees a doubtful value.
    for i in 0..200u64 {
        let t = 1_000 + 20 * i;
        ops.push(Operation::put(100, "k", &format!("v{i}"), t, t + 5));
        ops.push(Operation::get(101, "k", Some(&format!("v{i}")), t + 10, t + 15));
    }
    let limits = Limits {
        steps_max: 100_000,
        ..Limits::default()
    };
    assert_eq!(
        check(&History::new(ops.clone()), &limits).expect("well-formed"),
        CheckResult::Linearizable
    );
    // A read of a doubtful value makes that write one to place, and the history stays
    // linearizable.
    ops.push(Operation::get(102, "k", Some("lost-7"), 30, 35));
    assert_eq!(
        check(&History::new(ops), &limits).expect("well-formed"),
        CheckResult::Linearizable
    );
}

/// Leaving out unseen writes in doubt is only a shortcut: when the history needs one of
/// them (to explain a refused compare-and-set), the full search still finds it; and a
/// history that is wrong with or without them is still rejected.
#[test]
fn an_unseen_write_in_doubt_can_still_explain_a_refused_cas() {
    // The register holds "a"; a CAS expecting "a" is refused: only the write of "b",
    // in doubt and never read, explains that.
    assert_linearizable(vec![
        Operation::put(1, "k", "a", 0, 10),
        Operation::put(2, "k", "b", 20, 30).unknown(),
        Operation::cas(3, "k", Some("a"), "c", false, 40, 50),
    ]);
    // Without the write in doubt the same refusal is a violation.
    assert_not_linearizable(
        vec![
            Operation::put(1, "k", "a", 0, 10),
            Operation::cas(3, "k", Some("a"), "c", false, 40, 50),
        ],
        "k",
    );
    // A stale read is a violation whatever the writes in doubt did: the write of "b"
    // was acknowledged before the read began, and no write in doubt was of "a".
    assert_not_linearizable(
        vec![
            Operation::put(1, "k", "a", 0, 10),
            Operation::put(1, "k", "b", 20, 30),
            Operation::put(2, "k", "x", 5, 6).unknown(),
            Operation::put(3, "k", "y", 40, 41).unknown(),
            Operation::get(4, "k", Some("a"), 50, 60),
        ],
        "k",
    );
}
