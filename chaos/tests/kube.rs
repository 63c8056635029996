//! The Kubernetes and Service workloads on a real cluster in the Kubernetes mode: 3
//! masters (`capstan master`) and 2 nodes (`capstan agent` and `capstan proxy` each), all
//! processes of the real binary.
//!
//! While Deployments are scaled and rolled and a client sends requests to a Service
//! through the node proxies:
//! 1. node 1's agent is killed, then the master holding the scheduler's Lease; the Lease
//!    must move to another master; the master and the agent are started again;
//! 2. node 2's proxy is killed, then the Raft leader; a new leader must be elected and the
//!    workload must get writes acknowledged again; both are started again.
//!
//! Then: the Kubernetes verdict is OK (every Deployment exactly its replicas Running and
//! Ready, nothing lost, duplicated or bound twice); the Service answered during every
//! fault (the data plane needs no master, and each proxy is one of two listeners on the
//! ClusterIP) and more than half of all requests succeeded (the faults here take down no
//! path for long: a floor that only a broken data plane misses, not a timing target);
//! and the checker rejects a doctored history and a doctored snapshot (a pod bound
//! twice, a missing Deployment, a wrong replica count).
//!
//! Needs `cargo build --bin capstan` first (see `capstan_chaos::capstan_binary`) and
//! python3 for the pods.

use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_chaos::kube::{
    check_kube, judge_kube, lease_holders, read_snapshot, run_kube_workload, run_service_client, setup_service,
    wait_lease_takeover, wait_nodes_ready, KubeAction, KubeApi, KubeCheckConfig, KubeLive, KubeOp, KubeOutcome,
    KubeWorkloadConfig, ObservationSource, ServiceClientConfig, ServiceConfig, ServiceLive, ViolationKind,
    CONTROLLER_MANAGER_LEASE, SCHEDULER_LEASE,
};
use capstan_chaos::{capstan_binary, Cluster, ClusterConfig, KubernetesConfig, NodeProcess};

/// The longest any one condition is waited for.
const DEADLINE_MS: u64 = 60_000;
const NAMESPACE: &str = "chaos-kube";

/// Cluster operations block (they wait for exits and ready lines).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_millis(DEADLINE_MS);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE_MS} ms");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ms(origin: Instant) -> u64 {
    origin.elapsed().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_and_a_service_survive_master_agent_and_proxy_kills() {
    let began = Instant::now();
    let binary = capstan_binary().unwrap_or_else(|e| panic!("{e}"));
    let mut config = ClusterConfig::new(3, binary);
    config.kubernetes = Some(KubernetesConfig::new(2));
    let mut cluster = blocking(|| Cluster::start(config)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cluster.nodes(), 2);
    assert_eq!(cluster.node_ip(1).to_string(), "127.40.2.2");
    let api = KubeApi::new(cluster.api_urls(), 3_000).unwrap_or_else(|e| panic!("{e}"));
    let nodes = wait_nodes_ready(&api, 2, DEADLINE_MS)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        nodes.contains(&"node1".to_string()) && nodes.contains(&"node2".to_string()),
        "{nodes:?}"
    );
    eprintln!("cluster up, nodes Ready after {:?}", began.elapsed());

    let origin = Instant::now();
    let target = setup_service(&api, &ServiceConfig::new(NAMESPACE))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(target.addr.ip().to_string().starts_with("127.104."), "{target:?}");
    eprintln!("Service {} answers after {:?}", target.addr, began.elapsed());

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let kube_live = Arc::new(KubeLive::default());
    let service_live = Arc::new(ServiceLive::default());
    let mut workload_config = KubeWorkloadConfig::new(origin);
    workload_config.namespace = NAMESPACE.into();
    workload_config.seed = 7;
    workload_config.interval_ms = 700;
    workload_config.node_roots = cluster.node_roots();
    workload_config.live = Some(kube_live.clone());
    let workload = tokio::spawn({
        let (api, stopped) = (api.clone(), stopped.clone());
        async move { run_kube_workload(&api, workload_config, stopped).await }
    });
    let client = tokio::spawn({
        let target = target.clone();
        let config = ServiceClientConfig {
            live: Some(service_live.clone()),
            ..ServiceClientConfig::default()
        };
        async move { run_service_client(&target, config, origin, stopped).await }
    });
    let acknowledged_after = |t: u64| kube_live.last_acknowledged_ms().is_some_and(|a| a > t);
    let served_after = |t: u64| service_live.last_success_ms().is_some_and(|s| s > t);
    until("the workload's first operations", || kube_live.acknowledged() >= 5).await;

    // (name, start, end) of each fault, ms from the origin.
    let mut faults: Vec<(&str, u64, u64)> = Vec::new();

    // 1. Node 1's agent, then the master holding the scheduler's Lease.
    let holders = lease_holders(&api).await.unwrap_or_else(|e| panic!("{e}"));
    let scheduler = holders.scheduler.clone().expect("a scheduler holds its Lease");
    let victim = cluster
        .member_of_identity(&scheduler)
        .unwrap_or_else(|| panic!("{scheduler} is no master's"));
    blocking(|| cluster.kill_node_process(0, NodeProcess::Agent)).unwrap_or_else(|e| panic!("{e}"));
    let agent_down = ms(origin);
    blocking(|| cluster.kill(victim)).unwrap_or_else(|e| panic!("{e}"));
    let master_down = ms(origin);
    let killed = Instant::now();
    let next = wait_lease_takeover(&api, SCHEDULER_LEASE, &scheduler, DEADLINE_MS)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let next_member = cluster.member_of_identity(&next);
    assert!(next_member.is_some_and(|m| m != victim), "{scheduler} -> {next}");
    eprintln!(
        "scheduler Lease: {scheduler} -> {next} {:?} after the kill",
        killed.elapsed()
    );
    if let Some(controllers) = holders
        .controller_manager
        .filter(|c| cluster.member_of_identity(c) == Some(victim))
    {
        let next = wait_lease_takeover(&api, CONTROLLER_MANAGER_LEASE, &controllers, DEADLINE_MS)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "controller-manager Lease: {controllers} -> {next} {:?} after the kill",
            killed.elapsed()
        );
    }
    until("a Service answer with the master and the agent down", || {
        served_after(master_down)
    })
    .await;
    until("an acknowledged operation with the master down", || {
        acknowledged_after(master_down)
    })
    .await;
    blocking(|| cluster.restart(victim)).unwrap_or_else(|e| panic!("{e}"));
    faults.push(("master with the scheduler Lease", master_down, ms(origin)));
    blocking(|| cluster.restart_node_process(0, NodeProcess::Agent)).unwrap_or_else(|e| panic!("{e}"));
    faults.push(("node 1's agent", agent_down, ms(origin)));

    // 2. Node 2's proxy, then the Raft leader.
    blocking(|| cluster.kill_node_process(1, NodeProcess::Proxy)).unwrap_or_else(|e| panic!("{e}"));
    let proxy_down = ms(origin);
    until("a Service answer with node 2's proxy down", || served_after(proxy_down)).await;
    let leader = cluster.leader(DEADLINE_MS).await.unwrap_or_else(|e| panic!("{e}"));
    blocking(|| cluster.kill(leader)).unwrap_or_else(|e| panic!("{e}"));
    let leader_down = ms(origin);
    let killed = Instant::now();
    let next = cluster.leader(DEADLINE_MS).await.unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(next, leader);
    eprintln!(
        "leader n{} -> n{} {:?} after the kill",
        leader + 1,
        next + 1,
        killed.elapsed()
    );
    until("an acknowledged operation with the leader down", || {
        acknowledged_after(leader_down)
    })
    .await;
    eprintln!(
        "the workload's first write acknowledged {:?} after the kill",
        killed.elapsed()
    );
    until("a Service answer with the leader and a proxy down", || {
        served_after(leader_down)
    })
    .await;
    blocking(|| cluster.restart(leader)).unwrap_or_else(|e| panic!("{e}"));
    faults.push(("the Raft leader", leader_down, ms(origin)));
    blocking(|| cluster.restart_node_process(1, NodeProcess::Proxy)).unwrap_or_else(|e| panic!("{e}"));
    faults.push(("node 2's proxy", proxy_down, ms(origin)));

    // Healed: both workloads get through once more, then stop.
    let healed = ms(origin);
    until("an acknowledged operation after the heal", || {
        acknowledged_after(healed)
    })
    .await;
    until("a Service answer after the heal", || served_after(healed)).await;
    stop.send_replace(true);
    let history = workload.await.expect("workload task").unwrap_or_else(|e| panic!("{e}"));
    let service = client.await.expect("client task").unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "workload: {} operations ({} acknowledged, {} in doubt, {} failed), {} pod sightings in {} API and {} node polls",
        history.ops.len(),
        history.acknowledged(),
        history.unknown(),
        history.failed(),
        history.observations.len(),
        history.api_polls,
        history.runtime_polls
    );
    assert!(history
        .ops
        .iter()
        .any(|o| matches!(o.action, KubeAction::Roll { .. }) && o.outcome == KubeOutcome::Acknowledged));
    assert!(history
        .ops
        .iter()
        .any(|o| matches!(o.action, KubeAction::Scale { .. }) && o.outcome == KubeOutcome::Acknowledged));
    assert!(history.runtime_polls > 0 && history.api_polls > 0);
    assert!(
        history
            .observations
            .iter()
            .any(|o| o.source == ObservationSource::Runtime),
        "the observer saw containers on the nodes"
    );

    // The Kubernetes verdict.
    let fixed = [target.fixed()];
    let verdict = check_kube(&api, &history, &fixed, &KubeCheckConfig::new(cluster.node_roots())).await;
    eprintln!("{verdict}");
    if !verdict.ok {
        // The cluster's directory goes with the cluster: keep a copy (logs, the pods'
        // address files, the containers' logs and state) for whoever reads the failure.
        let kept = std::env::temp_dir().join(format!("capstan-chaos-kube-failed-{}", std::process::id()));
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(cluster.dir())
            .arg(&kept)
            .status();
        eprintln!("cluster directory copied to {} ({copied:?})", kept.display());
        for c in cluster.live_containers() {
            eprintln!("running: {c:?}");
        }
    }
    assert!(verdict.ok, "{verdict}; all: {:#?}", verdict.violations);
    assert_eq!(verdict.deployments_checked, 4, "3 of the workload and the Service's");

    // The Service's.
    let summary = service.summary();
    eprintln!(
        "service: {} requests, {:.1}% answered, longest gap {} ms ({}..{} ms); faults {faults:?}",
        summary.requests,
        100.0 * summary.success_rate,
        summary.longest_gap_ms,
        summary.longest_gap_from_ms,
        summary.longest_gap_to_ms
    );
    assert!(summary.success_rate > 0.5, "{summary:?}");
    for (what, from, to) in &faults {
        assert!(
            service.successes_between(*from, *to) > 0,
            "no Service answer while {what} was down ({from}..{to} ms)"
        );
    }

    // The checker rejects planted violations.
    let roots = cluster.node_roots();
    let snapshot = read_snapshot(&api, NAMESPACE, &roots)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        judge_kube(&history, &fixed, &snapshot),
        vec![],
        "the undoctored state passes"
    );
    let first_kind = |h, f: &[_], s| judge_kube(h, f, s).first().map(|v| v.kind);

    let mut twice = history.clone();
    let mut seen = twice
        .observations
        .iter()
        .find(|o| o.source == ObservationSource::Api)
        .expect("a pod seen in the API")
        .clone();
    seen.node = if seen.node == "node1" { "node2" } else { "node1" }.into();
    seen.at_ms += 1;
    twice.observations.push(seen);
    assert_eq!(first_kind(&twice, &fixed, &snapshot), Some(ViolationKind::BoundTwice));

    let mut missing = history.clone();
    missing.ops.push(KubeOp {
        deployment: "ghost".into(),
        action: KubeAction::Create { replicas: 1 },
        start_ms: 0,
        end_ms: 1,
        outcome: KubeOutcome::Acknowledged,
        attempts: 1,
        in_doubt_attempts: 0,
        error: None,
    });
    let v = judge_kube(&missing, &fixed, &snapshot);
    assert_eq!(
        v.first().map(|v| (v.kind, v.deployment.as_deref())),
        Some((ViolationKind::MissingDeployment, Some("ghost"))),
        "{v:?}"
    );

    let mut wrong = fixed.clone();
    wrong[0].replicas += 1;
    assert_eq!(first_kind(&history, &wrong, &snapshot), Some(ViolationKind::WrongSpec));
    let mut fewer = snapshot.clone();
    let web_pod = fewer
        .pods
        .iter()
        .position(|p| p["metadata"]["labels"]["app"] == "web")
        .expect("a pod of the Service's Deployment");
    fewer.pods.remove(web_pod);
    let kinds: Vec<ViolationKind> = judge_kube(&history, &fixed, &fewer).iter().map(|v| v.kind).collect();
    assert!(kinds.contains(&ViolationKind::WrongReplicas), "{kinds:?}");

    blocking(|| drop(cluster));
    eprintln!("the whole test took {:?}", began.elapsed());
}
