//! High availability, as a user gets it: `capstan up --masters 3 --nodes 2` starts three
//! masters and two nodes as separate processes, and each master in turn is killed
//! (SIGKILL) while a Deployment serves behind a Service. What must hold:
//!
//! - the API stays available through the other masters (kubectl's address, the front
//!   door of `capstan up`, and the agents' own failover);
//! - the active scheduler and controller-manager move when their master dies (their
//!   Leases get another holder);
//! - a Deployment scaled up while a master is down converges;
//! - the pods keep serving through the node proxies throughout (not one request fails);
//! - the killed master is started again by `capstan up` and rejoins (its own API answers
//!   reads, which need its store member to reach the leader);
//! - Ctrl-C (SIGINT to `capstan up`) stops the whole cluster and `up` exits cleanly, and
//!   `capstan up` on the same directory starts the same cluster again, adopting the
//!   containers that ran on;
//! - `capstan status` shows the members, the leader, the active replicas and the nodes
//!   while the cluster is up, and fails once it is down.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, http_get, ready_pods, web, Reaper};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// The longest any one condition is waited for.
const DEADLINE: Duration = Duration::from_secs(120);
/// The loopback nets of this file's clusters (127.9.0.0/16, 127.10.0.0/16): no other
/// test uses them.
const NET_KILLS: u8 = 9;
const NET_DRILL: u8 = 10;
const MASTERS: usize = 3;
const NODES: usize = 2;
/// The processes `capstan up` runs for this shape.
const PROCESSES: [&str; 7] = [
    "m1",
    "m2",
    "m3",
    "node1-agent",
    "node1-proxy",
    "node2-agent",
    "node2-proxy",
];

/// A running `capstan up`: dropping it kills it, every process it started and the
/// containers the nodes left.
struct Up {
    child: Option<Child>,
    dir: PathBuf,
    /// Whether dropping it kills the nodes' containers (not when the cluster is to be
    /// started again and adopt them).
    reap: bool,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Up {
    fn start(dir: &Path, api: SocketAddr, net: u8) -> Up {
        let mut child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args([
                "up",
                "--insecure",
                "--masters",
                &MASTERS.to_string(),
                "--nodes",
                &NODES.to_string(),
            ])
            .args(["--loopback-net", &net.to_string(), "--api-listen", &api.to_string()])
            .arg("--data-dir")
            .arg(dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn capstan up");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("capstan up ready") {
                    let _ = tx.send(());
                }
                kept.lock().expect("lines").push(line);
            }
        });
        let mut up = Up {
            child: Some(child),
            dir: dir.to_path_buf(),
            reap: true,
            lines,
        };
        if rx.recv_timeout(Duration::from_secs(180)).is_err() {
            let status = up.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            panic!("capstan up did not come up (exit status {status:?}):\n{}", up.output());
        }
        up
    }

    fn output(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// The pid of process `name` (`m1`, `node1-agent`) now, from `up`'s pid file.
    fn pid(&self, name: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir.join(format!("{name}.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    fn signal(pid: u32, signal: &str) {
        let ok = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {pid}");
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The processes up started (each in a group of its own), from their pid files,
        // which a killed up leaves behind.
        for name in PROCESSES {
            if let Some(pid) = self.pid(name) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
        for j in (1..=NODES).filter(|_| self.reap) {
            drop(Reaper(self.dir.join("nodes").join(format!("node{j}"))));
        }
        if std::thread::panicking() {
            eprintln!("capstan up said:\n{}", self.output());
            for name in ["m1", "m2", "m3", "node1-agent", "node2-agent"] {
                let log = std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                eprintln!("--- {name}.log (last lines) ---");
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

fn master_api(net: u8, i: usize) -> String {
    format!("http://127.{net}.1.{i}:6443")
}

/// Every master's API URL, comma separated (what agents are given).
fn all_masters(net: u8) -> String {
    (1..=MASTERS).map(|i| master_api(net, i)).collect::<Vec<_>>().join(",")
}

/// A client of one URL only (no failover).
fn client_of(url: &str) -> kube::Client {
    kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client")
}

/// The holder of Lease `kube-system/<name>`, if it can be read.
async fn holder(client: &kube::Client, name: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    leases.get(name).await.ok()?.spec?.holder_identity
}

/// The master a replica identity belongs to (identities are `m<i>_<host>_<pid>_…`).
fn master_of(identity: &str) -> usize {
    identity
        .strip_prefix('m')
        .and_then(|rest| rest.split('_').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{identity:?} is not a master's replica"))
}

/// Reads that go through master `i`'s own store member: it answers once it has rejoined.
async fn master_serves(net: u8, i: usize) -> bool {
    let namespaces: Api<Namespace> = Api::all(client_of(&master_api(net, i)));
    namespaces.get("default").await.is_ok()
}

async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    common::eventually(what, DEADLINE, f).await
}

async fn scale(client: &kube::Client, replicas: i32) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let patch = json!({"spec": {"replicas": replicas}});
    eventually(&format!("scaling to {replicas}"), || async {
        deployments
            .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .ok()
    })
    .await;
}

/// The web Deployment with 2 replicas behind its Service, once both serve through the
/// proxies: the Service's address.
async fn serve_web(client: &kube::Client) -> SocketAddr {
    let service = web(client, 2).await;
    eventually("2 replicas serving", || async {
        converged(client, 2).await.then_some(())
    })
    .await;
    eventually("the Service answering through the proxies", || async {
        http_get(service).ok()
    })
    .await;
    service
}

async fn converged(client: &kube::Client, replicas: i32) -> bool {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let Ok(d) = deployments.get("web").await else {
        return false;
    };
    let status = d.status.unwrap_or_default();
    status.ready_replicas.unwrap_or(0) == replicas
        && status.replicas.unwrap_or(0) == replicas
        && ready_pods(client).await.len() == replicas as usize
}

/// Requests to the Service, one after another, until stopped: counts of successes and
/// failures (with the first failure's error).
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(to: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                match http_get(to) {
                    Ok(body) if body.trim().starts_with("web-") => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(body) => f.lock().expect("failed").push(format!("unexpected body {body:?}")),
                    Err(e) => f.lock().expect("failed").push(e),
                }
                // Paced, so that the proxies and pods are not what is measured.
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Traffic {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().expect("traffic thread");
        }
        let failed = self.failed.lock().expect("failed").clone();
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_survive_each_being_killed_in_turn() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("up");
    let front_door: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut up = Up::start(&dir, front_door, NET_KILLS);
    let out = up.output();
    assert!(out.contains("The cluster is up"), "{out}");
    for i in 1..=MASTERS {
        assert!(
            out.contains(&format!("m{i} ready: etcd http://127.{NET_KILLS}.1.{i}:2379")),
            "{out}"
        );
    }
    assert!(out.contains("node1 Ready") && out.contains("node2 Ready"), "{out}");
    let kubeconfig = std::fs::read_to_string(dir.join("kubeconfig")).expect("the kubeconfig");
    assert!(
        kubeconfig.contains(&format!("server: http://{front_door}")),
        "{kubeconfig}"
    );

    // capstan status sees the whole cluster healthy.
    let status = capstan_status(&dir);
    assert!(status.status.success(), "capstan status failed:\n{}", text(&status));
    let said = text(&status);
    for part in [
        "3 of 3 voting members answer; a quorum is 2",
        "Leader: m",
        "active: m",
        "Nodes (2 registered, 2 Ready)",
    ] {
        assert!(said.contains(part), "capstan status lacks {part:?}:\n{said}");
    }

    // kubectl's way in (the front door) and the agents' (every master, failing over).
    let client = client_of(&format!("http://{front_door}"));
    let failover = capstan_agents::client::api_client(&all_masters(NET_KILLS)).expect("failover client");

    let service = serve_web(&client).await;
    let traffic = Traffic::start(service);

    // The scheduler's master first, so that its Lease has to move.
    let scheduler = eventually("a scheduler holding its Lease", || holder(&client, "kube-scheduler")).await;
    let first = master_of(&scheduler);
    let order: Vec<usize> = std::iter::once(first)
        .chain((1..=MASTERS).filter(|&i| i != first))
        .collect();
    let mut replicas = 2;
    for victim in order {
        let scheduler = eventually("the scheduler's Lease", || holder(&client, "kube-scheduler")).await;
        let controllers = eventually("the controllers' Lease", || holder(&client, "kube-controller-manager")).await;
        let pid = up.pid(&format!("m{victim}")).expect("the master's pid file");
        Up::signal(pid, "KILL");
        let killed = Instant::now();

        // The API, through the front door and through the agents' failover.
        eventually("the API through the front door", || async {
            let ns: Api<Namespace> = Api::all(client.clone());
            ns.get("default").await.ok()
        })
        .await;
        eventually("the API through the failover client", || async {
            let ns: Api<Namespace> = Api::all(failover.clone());
            ns.get("default").await.ok()
        })
        .await;
        eprintln!("m{victim} killed; the API answered again after {:?}", killed.elapsed());

        // Scaled during the outage (or just after it, if up has restarted it already); up
        // only, since a pod stopped on a scale-down may drop the request it is answering.
        replicas += 1;
        scale(&client, replicas).await;

        // A Lease held on the dead master goes to a replica of another process.
        for (lease, was) in [
            ("kube-scheduler", &scheduler),
            ("kube-controller-manager", &controllers),
        ] {
            if master_of(was) == victim {
                let now = eventually(&format!("{lease} taken over"), || async {
                    holder(&client, lease).await.filter(|h| h != was)
                })
                .await;
                eprintln!("{lease}: {was} -> {now} ({:?} after the kill)", killed.elapsed());
            }
        }
        eventually(&format!("{replicas} replicas serving"), || async {
            converged(&client, replicas).await.then_some(())
        })
        .await;

        // Started again by up, with another pid, and rejoined.
        eventually(&format!("m{victim} started again"), || async {
            up.pid(&format!("m{victim}")).filter(|&p| p != pid)
        })
        .await;
        eventually(&format!("m{victim} rejoined"), || async {
            master_serves(NET_KILLS, victim).await.then_some(())
        })
        .await;
        eprintln!("m{victim} rejoined {:?} after the kill", killed.elapsed());
    }
    let out = up.output();
    for i in 1..=MASTERS {
        assert!(
            out.contains(&format!("m{i} was killed (SIGKILL); starting it again")),
            "{out}"
        );
    }

    let (ok, failed) = traffic.finish();
    assert!(ok > 0, "no request went through");
    assert!(
        failed.is_empty(),
        "{} of {} requests through the proxies failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );

    // Ctrl-C: up stops everything and exits cleanly.
    let child = up.child.as_mut().expect("up runs");
    Up::signal(child.id(), "INT");
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for up") {
            break status;
        }
        assert!(Instant::now() < deadline, "capstan up did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "capstan up exited with {status}:\n{}", up.output());
    let out = up.output();
    assert!(out.contains("Stopped."), "{out}");
    for name in PROCESSES {
        assert!(up.pid(name).is_none(), "{name} still has a pid file after the stop");
    }
    // With every master gone, status says so and fails.
    let status = capstan_status(&dir);
    assert!(
        !status.status.success(),
        "capstan status succeeded without a cluster:\n{}",
        text(&status)
    );
    assert!(text(&status).contains("No member answered"), "{}", text(&status));

    // Started again on the same directory: the same cluster, its pods adopted (the
    // containers ran on while it was stopped).
    let before = pod_runs(&failover).await;
    assert!(before.is_empty(), "the API answered while the cluster was stopped");
    up.reap = false;
    drop(up);
    let up = Up::start(&dir, front_door, NET_KILLS);
    assert!(
        up.output().contains("Restarting a cluster of 3 masters and 2 nodes"),
        "{}",
        up.output()
    );
    eventually(&format!("{replicas} replicas serving after the restart"), || async {
        converged(&client, replicas).await.then_some(())
    })
    .await;
    let runs = pod_runs(&client).await;
    assert!(
        runs.iter().all(|(_, restarts, _)| *restarts == 0),
        "containers were restarted instead of adopted: {runs:?}"
    );
    // The proxies serve their first table before up calls them ready; the endpoints'
    // readiness reaches them through their streams, so the answer is waited for.
    eventually("the Service answering after the restart", || async {
        http_get(service).ok()
    })
    .await;
}

fn capstan_status(dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["status", "--data-dir"])
        .arg(dir)
        .output()
        .expect("run capstan status")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Each pod's uid with its container's restart count and start time.
async fn pod_runs(client: &kube::Client) -> Vec<(String, i32, String)> {
    let mut runs: Vec<(String, i32, String)> = ready_pods(client)
        .await
        .into_iter()
        .map(|p| {
            let uid = p.metadata.uid.clone().expect("uid");
            let c = p
                .status
                .and_then(|s| s.container_statuses)
                .and_then(|cs| cs.into_iter().next())
                .expect("a container status");
            let started = c
                .state
                .and_then(|s| s.running)
                .and_then(|r| r.started_at)
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            (uid, c.restart_count, started)
        })
        .collect();
    runs.sort();
    runs
}

/// The seeds' fire drill with every master: all of them killed at once (and kept down:
/// `capstan up` is paused so that it cannot start them again). The pods keep serving
/// through the node proxies; once the masters are back, the cluster converges without
/// restarting a healthy pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_keep_serving_while_every_master_is_down_and_are_not_restarted_after() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("up");
    let front_door: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let up = Up::start(&dir, front_door, NET_DRILL);
    let client = capstan_agents::client::api_client(&all_masters(NET_DRILL)).expect("failover client");
    let service = serve_web(&client).await;
    let before = pod_runs(&client).await;
    assert_eq!(before.len(), 2, "{before:?}");

    // Every master down, and kept down.
    let up_pid = up.child.as_ref().expect("up runs").id();
    Up::signal(up_pid, "STOP");
    let pids: Vec<u32> = (1..=MASTERS)
        .map(|i| up.pid(&format!("m{i}")).expect("a master's pid file"))
        .collect();
    for &pid in &pids {
        Up::signal(pid, "KILL");
    }
    for i in 1..=MASTERS {
        let gone = eventually(&format!("m{i} down"), || async {
            (!master_serves(NET_DRILL, i).await).then_some(true)
        })
        .await;
        assert!(gone);
    }
    // Requests keep being answered by the pods through the proxies.
    let mut answered = 0;
    for n in 0..100 {
        match http_get(service) {
            Ok(body) if body.trim().starts_with("web-") => answered += 1,
            other => panic!("request {n} through the proxy with every master down: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(answered, 100);
    // The masters are still down (nothing brought them back behind the test's back).
    assert!(!master_serves(NET_DRILL, 1).await, "m1 answered while up was paused");

    // Back: up starts the masters again, and the cluster converges.
    Up::signal(up_pid, "CONT");
    for i in 1..=MASTERS {
        eventually(&format!("m{i} back"), || async {
            master_serves(NET_DRILL, i).await.then_some(())
        })
        .await;
    }
    eventually("2 replicas serving again", || async {
        converged(&client, 2).await.then_some(())
    })
    .await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    eventually("both nodes Ready", || async {
        let list = nodes.list(&Default::default()).await.ok()?;
        let ready = list
            .items
            .iter()
            .filter(|n| capstan_agents::nodelifecycle::ready_status(n) == Some("True"))
            .count();
        (ready == NODES).then_some(())
    })
    .await;
    let after = pod_runs(&client).await;
    assert_eq!(after, before, "the pods were restarted or replaced after the outage");
    assert!(after.iter().all(|(_, restarts, _)| *restarts == 0), "{after:?}");
    http_get(service).expect("the Service answers after the drill");
}
