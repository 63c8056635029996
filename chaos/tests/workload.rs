//! The register workload against a real single-member `capstan store` (the binary from
//! `$CAPSTAN_BIN`, or `target/debug/capstan`): its history must be linearizable, and the
//! same history with one read corrupted must not be (so this test can fail).

use capstan_chaos::linearizability::{check, CheckResult, Limits, Op, Outcome, Output};
use capstan_chaos::workload::{run_register_workload, Connect, WorkloadConfig};
use capstan_chaos::{capstan_binary, Cluster, ClusterConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_workload_on_one_member_is_linearizable() {
    let binary = capstan_binary().unwrap_or_else(|e| panic!("{e}"));
    let cluster = Cluster::start(ClusterConfig::new(1, binary)).unwrap_or_else(|e| panic!("{e}"));
    // Ready means serving, not leading: wait for the member to elect itself.
    assert_eq!(cluster.leader(10_000).await.unwrap_or_else(|e| panic!("{e}")), 0);
    let config = WorkloadConfig {
        clients: 8,
        ops_per_client: 200,
        keys: 4,
        seed: 7,
        connect: Connect::OneEndpointEach,
        ..WorkloadConfig::default()
    };
    let history = run_register_workload(cluster.endpoints(), config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // The history is what the clients did: every operation recorded (a healthy member
    // answers every request), each kind present, and CAS both succeeding and failing.
    assert_eq!(history.operations.len(), 8 * 200, "{} unknown", history.unknown_count());
    assert_eq!(
        history.unknown_count(),
        0,
        "a healthy member timed out or failed requests"
    );
    let count = |f: &dyn Fn(&Op, &Outcome) -> bool| history.operations.iter().filter(|o| f(&o.op, &o.outcome)).count();
    let gets_present = count(&|op, out| *op == Op::Get && matches!(out, Outcome::Ok(Output::Get(Some(_)))));
    let puts = count(&|op, _| matches!(op, Op::Put { .. }));
    let cas_ok = count(&|_, out| *out == Outcome::Ok(Output::Cas(true)));
    let cas_failed = count(&|_, out| *out == Outcome::Ok(Output::Cas(false)));
    eprintln!("gets that found a value: {gets_present}, puts: {puts}, cas ok: {cas_ok}, cas failed: {cas_failed}");
    assert!(gets_present > 100 && puts > 100 && cas_ok > 20 && cas_failed > 20);

    let started = std::time::Instant::now();
    let result = check(&history, &Limits::default()).expect("a well-formed history");
    eprintln!(
        "checked {} operations in {:?}",
        history.operations.len(),
        started.elapsed()
    );
    assert_eq!(
        result,
        CheckResult::Linearizable,
        "{result:#?}\n{}",
        cluster.log_tails(20)
    );

    // Corrupt the last read that found a value: it now returns an older value of its key
    // that some earlier put or CAS wrote (a stale read), which should be caught. Older
    // values can be legal if writes were concurrent, so try the reads from the last one
    // back until one is caught; on a history of 1600 operations one is, right away.
    let mut corrupted_verdict = None;
    let reads: Vec<usize> = (0..history.operations.len())
        .rev()
        .filter(|&i| matches!(history.operations[i].outcome, Outcome::Ok(Output::Get(Some(_)))))
        .take(20)
        .collect();
    for i in reads {
        let mut corrupted = history.clone();
        let target = &corrupted.operations[i];
        // The first value ever written to this key that the read did not return.
        let Some(stale) = history.operations.iter().find_map(|o| match (&o.op, &o.outcome) {
            (Op::Put { value }, Outcome::Ok(_)) | (Op::Cas { new: value, .. }, Outcome::Ok(Output::Cas(true)))
                if o.key == target.key
                    && o.return_ns < target.call_ns
                    && target.outcome != Outcome::Ok(Output::Get(Some(value.clone()))) =>
            {
                Some(value.clone())
            }
            _ => None,
        }) else {
            continue;
        };
        corrupted.operations[i].outcome = Outcome::Ok(Output::Get(Some(stale)));
        if let CheckResult::NotLinearizable { key, explanation } = check(&corrupted, &Limits::default()).expect("ok") {
            assert_eq!(key, history.operations[i].key);
            corrupted_verdict = Some(explanation);
            break;
        }
    }
    let explanation = corrupted_verdict.expect("no stale read planted in the history was caught");
    eprintln!("the corrupted history, as the checker explains it:\n{explanation}");

    // And a read of a value never written is always caught.
    let mut ghost = history.clone();
    let i = ghost
        .operations
        .iter()
        .position(|o| o.op == Op::Get)
        .expect("the history has gets");
    ghost.operations[i].outcome = Outcome::Ok(Output::Get(Some(b"never-written".to_vec())));
    match check(&ghost, &Limits::default()).expect("well-formed") {
        CheckResult::NotLinearizable { key, .. } => assert_eq!(key, ghost.operations[i].key),
        other => panic!("a read of a value never written was judged {other:?}"),
    }
}
