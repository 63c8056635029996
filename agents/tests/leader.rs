//! Leader election against Capstan's Kubernetes API (a store member and the API server in
//! this process, over real HTTP): candidates for one Lease, the holder killed (its task
//! aborted, so it neither renews nor releases), another taking over, and at no moment two
//! acting, checked from the actions each one records.

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use capstan_agents::leader::{Attempt, LeaderElector, LeaseTiming};
use common::{start, Cluster, DEADLINE};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::time::Instant;

const NAMESPACE: &str = "kube-system";
const LOCK: &str = "test-controller";

/// Short settings (client-go's own tests use this shape): 3 s / 2 s / 0.5 s.
fn timing() -> LeaseTiming {
    LeaseTiming {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(500),
    }
}

fn leases(c: &Cluster) -> Api<Lease> {
    Api::namespaced(c.client.clone(), NAMESPACE)
}

/// Tries until `elector` holds the Lease (the API may still be creating its namespaces).
async fn hold(elector: &mut LeaderElector) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match elector.try_acquire_or_renew().await {
            Attempt::Held => return,
            other => assert!(Instant::now() < deadline, "never held the lease: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lease_is_refused_to_others_and_a_released_one_taken_at_once() {
    let cluster = start().await;
    let mut a = LeaderElector::new(leases(&cluster), LOCK, "a", timing()).expect("a");
    let mut b = LeaderElector::new(leases(&cluster), LOCK, "b", timing()).expect("b");
    hold(&mut a).await;
    assert_eq!(b.try_acquire_or_renew().await, Attempt::HeldBy("a".into()));
    assert_eq!(a.try_acquire_or_renew().await, Attempt::Held, "the holder renews");
    assert_eq!(b.try_acquire_or_renew().await, Attempt::HeldBy("a".into()));

    let lease = leases(&cluster).get(LOCK).await.expect("the lease");
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_duration_seconds, Some(3));
    assert_eq!(spec.lease_transitions, Some(0));
    assert!(spec.renew_time.is_some() && spec.acquire_time.is_some());

    a.release().await.expect("release");
    assert_eq!(
        b.try_acquire_or_renew().await,
        Attempt::Held,
        "a released lease needs no wait"
    );
    let spec = leases(&cluster).get(LOCK).await.expect("the lease").spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(a.try_acquire_or_renew().await, Attempt::HeldBy("b".into()));
}

/// (candidate, its term as leader, when it acted)
type Actions = Arc<Mutex<Vec<(usize, u32, Instant)>>>;

fn candidate(cluster: &Cluster, i: usize, actions: Actions) -> tokio::task::JoinHandle<()> {
    let mut elector = LeaderElector::new(leases(cluster), LOCK, &format!("c{i}"), timing()).expect("elector");
    tokio::spawn(async move {
        let mut term = 0;
        elector
            .run(|| {
                term += 1;
                let (term, actions) = (term, actions.clone());
                async move {
                    loop {
                        actions.lock().expect("actions").push((i, term, Instant::now()));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
            .await;
    })
}

/// Waits until the Lease's renewTime has changed twice.
async fn renewed_twice(leases: &Api<Lease>) {
    let renew_time = || async {
        leases
            .get(LOCK)
            .await
            .ok()
            .and_then(|l| l.spec)
            .and_then(|s| s.renew_time)
            .map(|t| t.0)
    };
    let deadline = Instant::now() + DEADLINE;
    let mut seen = vec![renew_time().await];
    while seen.len() < 3 {
        assert!(Instant::now() < deadline, "the lease was not renewed twice");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = renew_time().await;
        if now.is_some() && seen.last() != Some(&now) {
            seen.push(now);
        }
    }
}

fn last_actor(actions: &Actions) -> Option<usize> {
    actions.lock().expect("actions").last().map(|a| a.0)
}

/// Waits until someone other than `not` acts; returns who.
async fn next_actor(actions: &Actions, not: Option<usize>) -> usize {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(i) = last_actor(actions).filter(|i| Some(*i) != not) {
            return i;
        }
        assert!(Instant::now() < deadline, "nobody took over from {not:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_dies_another_takes_over_and_two_never_act_at_once() {
    let cluster = start().await;
    let actions: Actions = Arc::default();
    let mut tasks: Vec<Option<tokio::task::JoinHandle<()>>> =
        (0..3).map(|i| Some(candidate(&cluster, i, actions.clone()))).collect();

    let mut leader = next_actor(&actions, None).await;
    let mut takeovers = Vec::new();
    for _ in 0..2 {
        // Let the holder renew twice while the others keep trying.
        renewed_twice(&leases(&cluster)).await;
        // (On a slow machine the lease may have changed hands meanwhile: kill whoever acts.)
        leader = last_actor(&actions).unwrap_or(leader);
        let killed = Instant::now();
        tasks[leader].take().expect("a live candidate").abort();
        let next = next_actor(&actions, Some(leader)).await;
        takeovers.push(killed.elapsed());
        assert!(tasks[next].is_some(), "a killed candidate acted");
        leader = next;
    }
    for t in tasks.iter().flatten() {
        t.abort();
    }

    // Each (candidate, term) acted over one interval; the intervals must not overlap.
    let actions = actions.lock().expect("actions").clone();
    let mut intervals: Vec<(Instant, Instant, usize, u32)> = Vec::new();
    for &(i, term, at) in &actions {
        match intervals.iter_mut().find(|iv| iv.2 == i && iv.3 == term) {
            Some(iv) => iv.1 = at,
            None => intervals.push((at, at, i, term)),
        }
    }
    intervals.sort_by_key(|iv| iv.0);
    assert!(intervals.len() >= 3, "three leaders at least: {intervals:?}");
    for pair in intervals.windows(2) {
        assert!(
            pair[1].0 > pair[0].1,
            "c{} (term {}) acted before c{} (term {}) stopped",
            pair[1].2,
            pair[1].3,
            pair[0].2,
            pair[0].3
        );
    }
    eprintln!("takeovers after a kill: {takeovers:?}");
}
