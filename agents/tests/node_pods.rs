//! The node agent running real pods (each container a local process) against Capstan's
//! Kubernetes API in this process, over real HTTP and the mesh API: status as the
//! kubelet reports it, restart policies and crash back-off, init containers, probes,
//! graceful termination with preStop, and an agent restart that adopts its containers.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use capstan_agents::node::agent::{self, Config};
use capstan_agents::node::pods::Context;
use capstan_agents::node::process::LogLimits;
use capstan_agents::node::registration::{Capacity, Heartbeat, NodeIdentity};
use common::{eventually, start, Cluster};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{json, Value};

/// Starts an agent for node `node` with pods in `cidr`; returns its task and context.
async fn agent(
    cluster: &Cluster,
    dir: &Path,
    node: &str,
    cidr: &str,
    backoff_initial: Duration,
) -> (tokio::task::JoinHandle<()>, Arc<Context>) {
    agent_with(cluster, dir, node, cidr, backoff_initial, Extras::default()).await
}

/// What some tests give [`agent_with`] beyond the defaults.
#[derive(Default)]
struct Extras {
    metrics: Option<capstan_agents::metrics::NodeMetrics>,
    /// The agent's HTTP port.
    listener: Option<tokio::net::TcpListener>,
    /// Usage sampling (default: the agent's default).
    usage_interval: Option<Duration>,
}

/// [`agent`], with `extras`.
async fn agent_with(
    cluster: &Cluster,
    dir: &Path,
    node: &str,
    cidr: &str,
    backoff_initial: Duration,
    extras: Extras,
) -> (tokio::task::JoinHandle<()>, Arc<Context>) {
    let Extras {
        metrics,
        listener,
        usage_interval,
    } = extras;
    let usage_interval = usage_interval.unwrap_or(capstan_agents::node::usage::USAGE_INTERVAL_DEFAULT);
    let config = Config {
        identity: NodeIdentity {
            name: node.into(),
            address: "127.0.0.1".parse().expect("ip"),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            capacity: Capacity {
                cpu_millis: 2000,
                memory_bytes: 4 << 30,
                pods: 110,
            },
            agent_port: 0,
        },
        heartbeat: Heartbeat::default(),
        data_dir: dir.to_path_buf(),
        pod_cidr: Some(cidr.parse().expect("cidr")),
        log_limits: LogLimits::default(),
        backoff_initial,
        backoff_max: backoff_initial * 4,
        listener,
        init_program: None,
        dns: None,
        runtime: capstan_agents::node::runtime::RuntimeKind::Process,
        usage_interval,
        port_metrics: None,
    };
    let mesh = agent::mesh_client(&cluster.url).expect("mesh client");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let client = cluster.client.clone();
    let task = tokio::spawn(async move {
        let r = agent::run_with_metrics(client, mesh, config, None, metrics, move |a| {
            let _ = tx.send(a.context.clone());
        })
        .await;
        if let Err(e) = r {
            panic!("the agent failed: {e}");
        }
    });
    let ctx = tokio::time::timeout(common::DEADLINE, rx)
        .await
        .expect("the agent starts in time")
        .expect("the agent starts");
    (task, ctx)
}

/// Kills what the test's agents left running under `dir` (containers outlive agents).
struct Reaper(std::path::PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for root in [self.0.join("containers"), self.0.join("agent/containers")] {
            if let Ok(runtime) = capstan_agents::node::process::ProcessRuntime::new(root, LogLimits::default()) {
                runtime.kill_all();
            }
        }
    }
}

async fn create(pods: &Api<Pod>, pod: Value) -> Pod {
    let pod: Pod = serde_json::from_value(pod).expect("a pod");
    pods.create(&PostParams::default(), &pod).await.expect("create the pod")
}

async fn status(pods: &Api<Pod>, name: &str) -> Result<PodStatus, String> {
    pods.get(name)
        .await
        .map_err(|e| e.to_string())?
        .status
        .ok_or_else(|| "no status yet".to_owned())
}

fn container<'a>(s: &'a PodStatus, name: &str) -> Result<&'a ContainerStatus, String> {
    s.container_statuses
        .iter()
        .flatten()
        .chain(s.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
        .ok_or_else(|| format!("no status for container {name}: {s:?}"))
}

fn condition(s: &PodStatus, type_: &str) -> Option<String> {
    s.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

fn shell(node: &str, name: &str, script: &str, extra: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{
            "name": name, "image": "busybox", "command": ["sh", "-c", script],
        }]},
    });
    merge(&mut pod, extra);
    pod
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (into, from) => *into = from,
    }
}

#[tokio::test]
async fn a_pod_runs_with_its_address_and_environment_and_stops_gracefully_in_order() {
    let cluster = start().await;
    let dir = tempfile::tempdir().expect("dir");
    let _reaper = Reaper(dir.path().to_path_buf());
    let (_agent, ctx) = agent(
        &cluster,
        &dir.path().join("agent"),
        "n1",
        "127.201.0.0/24",
        Duration::from_secs(10),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let trail = dir.path().join("trail");
    let script = format!(
        "echo ip=$POD_IP node=$NODE name=$NAME; trap 'echo term >> {t}; exit 0' TERM; while :; do sleep 0.05; done",
        t = trail.display()
    );
    let pod = create(
        &pods,
        shell(
            "n1",
            "web",
            &script,
            json!({"spec": {"terminationGracePeriodSeconds": 20, "containers": [{
                "name": "web", "image": "busybox", "command": ["sh", "-c", script],
                "env": [
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ],
                "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", format!("echo prestop >> {}", trail.display())]}}},
            }]}}),
        ),
    )
    .await;
    let uid = pod.metadata.uid.clone().expect("uid");
    let s = eventually("the pod runs and is ready", || async {
        let s = status(&pods, "web").await?;
        let c = container(&s, "web")?;
        if s.phase.as_deref() == Some("Running") && c.ready && condition(&s, "Ready").as_deref() == Some("True") {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    assert_eq!(
        s.pod_ip.as_deref(),
        Some("127.201.0.2"),
        "the first address of the node's block"
    );
    assert_eq!(s.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(s.start_time.is_some());
    let c = container(&s, "web").expect("status");
    assert_eq!(c.restart_count, 0);
    assert_eq!(c.started, Some(true));
    assert!(c.state.as_ref().and_then(|s| s.running.as_ref()).is_some());
    let log = ctx.runtime.log_path(&uid, "web", false);
    eventually("the container logs its environment", || async {
        let text = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
        if text.contains("ip=127.201.0.2 node=n1 name=web") {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
    pods.delete("web", &DeleteParams::default()).await.expect("delete");
    eventually("the agent stops the pod and deletes it for good", || async {
        match pods.get_opt("web").await {
            Ok(None) => Ok(()),
            Ok(Some(p)) => Err(format!("still there: {:?}", p.status)),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    let trail = std::fs::read_to_string(&trail).expect("the trail");
    assert_eq!(trail, "prestop\nterm\n", "preStop runs before SIGTERM");
    assert!(
        !dir.path().join("agent/pods").join(&uid).exists(),
        "the pod's files are removed"
    );
    assert_eq!(ctx.ips.lock().expect("lock").used(), 0, "the address is given back");
}

#[tokio::test]
async fn restart_policies_decide_the_phase_and_crashes_back_off() {
    let cluster = start().await;
    let dir = tempfile::tempdir().expect("dir");
    let _reaper = Reaper(dir.path().to_path_buf());
    let (_agent, _ctx) = agent(&cluster, dir.path(), "n2", "127.202.0.0/24", Duration::from_secs(1)).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    create(
        &pods,
        shell("n2", "ok", "exit 0", json!({"spec": {"restartPolicy": "Never"}})),
    )
    .await;
    create(
        &pods,
        shell("n2", "bad", "exit 2", json!({"spec": {"restartPolicy": "Never"}})),
    )
    .await;
    create(
        &pods,
        shell("n2", "retry", "exit 0", json!({"spec": {"restartPolicy": "OnFailure"}})),
    )
    .await;
    create(&pods, shell("n2", "crash", "echo crashing; exit 3", json!({}))).await;
    for (name, phase, code, reason) in [
        ("ok", "Succeeded", 0, "Completed"),
        ("bad", "Failed", 2, "Error"),
        ("retry", "Succeeded", 0, "Completed"),
    ] {
        let s = eventually(&format!("pod {name} is {phase}"), || async {
            let s = status(&pods, name).await?;
            (s.phase.as_deref() == Some(phase))
                .then_some(s.clone())
                .ok_or(format!("{s:?}"))
        })
        .await;
        let c = container(&s, name).expect("status");
        let t = c
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("terminated");
        assert_eq!((t.exit_code, t.reason.as_deref()), (code, Some(reason)), "{name}");
        assert_eq!(c.restart_count, 0, "{name} ran once");
        assert_eq!(condition(&s, "Ready").as_deref(), Some("False"));
    }
    // Always: restarted at once the first time, then with a growing back-off, shown as
    // CrashLoopBackOff with the kubelet's message and the last exit.
    let s = eventually("the crashing container backs off", || async {
        let s = status(&pods, "crash").await?;
        let c = container(&s, "crash")?;
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        if c.restart_count >= 1 && waiting.and_then(|w| w.reason.as_deref()) == Some("CrashLoopBackOff") {
            Ok(s.clone())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    assert_eq!(
        s.phase.as_deref(),
        Some("Running"),
        "a crash-looping pod under Always stays Running"
    );
    let c = container(&s, "crash").expect("status");
    let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref()).expect("waiting");
    let message = waiting.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("back-off ") && message.contains(" restarting failed container=crash pod=crash_default("),
        "{message}"
    );
    let last = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("lastState");
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    eventually("it keeps being restarted", || async {
        let s = status(&pods, "crash").await?;
        let c = container(&s, "crash")?;
        (c.restart_count >= 3).then_some(()).ok_or(format!("{c:?}"))
    })
    .await;
}

#[tokio::test]
async fn init_containers_run_in_order_before_the_containers() {
    let cluster = start().await;
    let dir = tempfile::tempdir().expect("dir");
    let _reaper = Reaper(dir.path().to_path_buf());
    let (_agent, _ctx) = agent(&cluster, dir.path(), "n3", "127.203.0.0/24", Duration::from_secs(1)).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let out = dir.path().join("order");
    let step = |word: &str| json!(["sh", "-c", format!("echo {word} >> {}", out.display())]);
    create(
        &pods,
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "init"},
            "spec": {"nodeName": "n3", "restartPolicy": "Never",
                "initContainers": [
                    {"name": "first", "image": "busybox", "command": step("first")},
                    {"name": "second", "image": "busybox", "command": step("second")},
                ],
                "containers": [{"name": "main", "image": "busybox", "command": step("main")}]},
        }),
    )
    .await;
    let s = eventually("the pod succeeds", || async {
        let s = status(&pods, "init").await?;
        (s.phase.as_deref() == Some("Succeeded"))
            .then_some(s.clone())
            .ok_or(format!("{s:?}"))
    })
    .await;
    assert_eq!(std::fs::read_to_string(&out).expect("out"), "first\nsecond\nmain\n");
    assert_eq!(condition(&s, "Initialized").as_deref(), Some("True"));
    let first = container(&s, "first").expect("init status");
    assert!(first.state.as_ref().and_then(|s| s.terminated.as_ref()).is_some());
    // A failing init container under Never fails the pod; the main container never runs.
    create(
        &pods,
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "init-fails"},
            "spec": {"nodeName": "n3", "restartPolicy": "Never",
                "initContainers": [{"name": "setup", "image": "busybox", "command": ["sh", "-c", "exit 1"]}],
                "containers": [{"name": "main", "image": "busybox", "command": step("never")}]},
        }),
    )
    .await;
    let s = eventually("the pod fails", || async {
        let s = status(&pods, "init-fails").await?;
        (s.phase.as_deref() == Some("Failed"))
            .then_some(s.clone())
            .ok_or(format!("{s:?}"))
    })
    .await;
    assert_eq!(condition(&s, "Initialized").as_deref(), Some("False"));
    let main = container(&s, "main").expect("status");
    assert!(
        main.state.as_ref().and_then(|s| s.waiting.as_ref()).is_some(),
        "{main:?}"
    );
    assert!(!std::fs::read_to_string(&out).expect("out").contains("never"));
}

#[tokio::test]
async fn probes_decide_readiness_and_restart_an_unhealthy_container() {
    let cluster = start().await;
    let dir = tempfile::tempdir().expect("dir");
    let _reaper = Reaper(dir.path().to_path_buf());
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = capstan_agents::metrics::NodeMetrics::new(&mut registry);
    let extras = Extras {
        metrics: Some(metrics),
        ..Extras::default()
    };
    let (_agent, _ctx) = agent_with(
        &cluster,
        dir.path(),
        "n4",
        "127.204.0.0/24",
        Duration::from_secs(1),
        extras,
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let ready = dir.path().join("ready");
    let alive = dir.path().join("alive");
    std::fs::write(&alive, "").expect("alive");
    let check = |f: &Path| json!({"exec": {"command": ["test", "-f", f.display().to_string()]}, "periodSeconds": 1, "failureThreshold": 1});
    create(
        &pods,
        shell(
            "n4",
            "probed",
            "while :; do sleep 0.05; done",
            json!({"spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "probed", "image": "busybox", "command": ["sh", "-c", "while :; do sleep 0.05; done"],
                "readinessProbe": check(&ready),
                "livenessProbe": check(&alive),
            }]}}),
        ),
    )
    .await;
    let is_ready = |want: bool| {
        let pods = pods.clone();
        async move {
            let s = status(&pods, "probed").await?;
            let c = container(&s, "probed")?;
            let ok = c.ready == want
                && condition(&s, "Ready").as_deref() == Some(if want { "True" } else { "False" })
                && c.state.as_ref().and_then(|s| s.running.as_ref()).is_some();
            ok.then_some(c.clone()).ok_or(format!("{s:?}"))
        }
    };
    eventually("running but not ready while the readiness probe fails", || {
        is_ready(false)
    })
    .await;
    std::fs::write(&ready, "").expect("ready");
    eventually("ready once it succeeds", || is_ready(true)).await;
    std::fs::remove_file(&ready).expect("unready");
    eventually("unready again", || is_ready(false)).await;
    std::fs::write(&ready, "").expect("ready");
    // Liveness: the container is killed and started again.
    std::fs::remove_file(&alive).expect("dead");
    let c = eventually("restarted for failing its liveness probe", || async {
        let s = status(&pods, "probed").await?;
        let c = container(&s, "probed")?;
        (c.restart_count >= 1).then_some(c.clone()).ok_or(format!("{c:?}"))
    })
    .await;
    std::fs::write(&alive, "").expect("alive");
    let last = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("lastState");
    assert!(
        last.message
            .as_deref()
            .is_some_and(|m| m.starts_with("Liveness probe failed")),
        "{last:?}"
    );
    eventually("running and ready again", || is_ready(true)).await;
    let text = capstan_agents::metrics::encode(&registry);
    let series = |name: &str| common::metric(&text, name).unwrap_or_else(|| panic!("{name} missing from:\n{text}"));
    assert_eq!(
        series("kubelet_pod_start_duration_seconds_count"),
        1.0,
        "one pod started, once"
    );
    assert_eq!(series("kubelet_running_pods"), 1.0);
    assert_eq!(
        series("kubelet_running_containers"),
        1.0,
        "the restart is not counted twice"
    );
    for (probe, result) in [
        ("Readiness", "successful"),
        ("Readiness", "failed"),
        ("Liveness", "failed"),
    ] {
        let name = format!(r#"prober_probe_total{{probe_type="{probe}",result="{result}"}}"#);
        assert!(series(&name) >= 1.0, "{name}");
    }
}

#[tokio::test]
async fn a_restarted_agent_adopts_its_running_containers() {
    let cluster = start().await;
    let dir = tempfile::tempdir().expect("dir");
    let _reaper = Reaper(dir.path().to_path_buf());
    let (first, ctx) = agent(&cluster, dir.path(), "n5", "127.205.0.0/24", Duration::from_secs(1)).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let pod = create(&pods, shell("n5", "long", "while :; do sleep 0.05; done", json!({}))).await;
    let uid = pod.metadata.uid.clone().expect("uid");
    let before = eventually("the pod runs", || async {
        let s = status(&pods, "long").await?;
        let c = container(&s, "long")?;
        c.ready.then_some(c.clone()).ok_or(format!("{s:?}"))
    })
    .await;
    let pid = ctx.runtime.state(&uid, "long").expect("state").expect("a state").pid;
    first.abort();
    let _ = first.await;
    drop(ctx);
    let (_second, ctx) = agent(&cluster, dir.path(), "n5", "127.205.0.0/24", Duration::from_secs(1)).await;
    // The same process goes on: same pid, same container ID, no restart.
    let state = ctx.runtime.state(&uid, "long").expect("state").expect("a state");
    assert_eq!(state.pid, pid, "the container was not started again");
    let s = status(&pods, "long").await.expect("status");
    assert_eq!(s.pod_ip.as_deref(), Some("127.205.0.2"));
    let after = container(&s, "long").expect("status");
    assert_eq!(after.container_id, before.container_id);
    assert_eq!(after.restart_count, 0);
    // The new agent stops it when the pod is deleted.
    pods.delete("long", &DeleteParams::default()).await.expect("delete");
    eventually("the adopted container is stopped and the pod deleted", || async {
        match pods.get_opt("long").await {
            Ok(None) => Ok(()),
            Ok(Some(p)) => Err(format!("{:?}", p.status)),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z ")),
        "the process is gone"
    );
}

/// `GET path` on the agent's plain HTTP port: (status code, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const EXCHANGE_MAX: Duration = Duration::from_secs(10);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(response)
    };
    let response = tokio::time::timeout(EXCHANGE_MAX, exchange)
        .await
        .map_err(|_| format!("GET {path}: no answer within {EXCHANGE_MAX:?}"))??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no end of head")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Err("a chunked answer; the test expects a length".into());
    }
    Ok((code, body.to_owned()))
}

#[tokio::test]
async fn the_agent_serves_its_containers_cpu_and_memory_usage() {
    let cluster = start().await;
    let dir = tempfile::tempdir().expect("dir");
    let _reaper = Reaper(dir.path().to_path_buf());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let interval = Duration::from_millis(200);
    let extras = Extras {
        listener: Some(listener),
        usage_interval: Some(interval),
        ..Extras::default()
    };
    let (_agent, _ctx) = agent_with(
        &cluster,
        dir.path(),
        "n8",
        "127.208.0.0/24",
        Duration::from_secs(1),
        extras,
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let pod = create(&pods, shell("n8", "busy", "while :; do :; done", json!({}))).await;
    let uid = pod.metadata.uid.clone().expect("uid");
    let summary = eventually("the busy pod has a CPU rate in the summary", || async {
        let (code, body) = http_get(addr, "/stats/summary").await?;
        if code != 200 {
            return Err(format!("{code}: {body}"));
        }
        let summary: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        let pod = summary["pods"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["podRef"]["name"] == "busy").cloned())
            .ok_or(format!("no pod busy: {summary}"))?;
        let rate = pod["cpu"]["usageNanoCores"]
            .as_u64()
            .ok_or(format!("no rate yet: {pod}"))?;
        (rate > 0).then_some(()).ok_or(format!("no CPU used: {pod}"))?;
        Ok(summary)
    })
    .await;
    assert_eq!(summary["node"]["nodeName"], "n8");
    assert!(
        summary["node"]["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0),
        "{summary}"
    );
    assert!(
        summary["node"]["memory"]["workingSetBytes"].as_u64() > Some(0),
        "{summary}"
    );
    let pod = summary["pods"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["podRef"]["name"] == "busy"))
        .expect("the pod");
    assert_eq!(
        pod["podRef"],
        json!({"name": "busy", "namespace": "default", "uid": uid})
    );
    assert!(pod["memory"]["workingSetBytes"].as_u64() > Some(0), "{pod}");
    let c = &pod["containers"][0];
    assert_eq!(c["name"], "busy");
    assert!(c["cpu"]["usageNanoCores"].as_u64() > Some(0), "{pod}");
    assert!(c["memory"]["workingSetBytes"].as_u64() > Some(0), "{pod}");
    assert!(c["cpu"]["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{pod}");
    pods.delete("busy", &DeleteParams::default()).await.expect("delete");
}

#[tokio::test]
async fn a_container_over_its_memory_limit_is_oom_killed() {
    let cluster = start().await;
    let dir = tempfile::tempdir().expect("dir");
    let _reaper = Reaper(dir.path().to_path_buf());
    let (_agent, ctx) = agent(&cluster, dir.path(), "n6", "127.206.0.0/24", Duration::from_secs(1)).await;
    if !ctx.runtime.memory_limits_enforced() {
        println!("skipped: memory limits are not enforced on this machine (see the process runtime's docs)");
        return;
    }
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let hog = "import time; b = bytearray(200 * 1024 * 1024); time.sleep(30)";
    create(
        &pods,
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hog"},
            "spec": {"nodeName": "n6", "restartPolicy": "Never", "containers": [{
                "name": "hog", "image": "python:3", "command": ["python3", "-c", hog],
                "resources": {"limits": {"memory": "32Mi"}},
            }]},
        }),
    )
    .await;
    let s = eventually("the pod fails", || async {
        let s = status(&pods, "hog").await?;
        (s.phase.as_deref() == Some("Failed"))
            .then_some(s.clone())
            .ok_or(format!("{s:?}"))
    })
    .await;
    let c = container(&s, "hog").expect("status");
    let t = c
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("OOMKilled")), "{t:?}");
}
