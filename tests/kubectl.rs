//! kubectl against Capstan's Kubernetes API: the scenario of tests/kubectl.sh, run with
//! every kubectl this machine has: Debian's kubectl 1.20 (unpacked into .tools/ by
//! `scripts/install-deps.sh test`) and the kubectl on PATH (on some machines a
//! dispatcher that runs the kubectl matching the server's version).
//!
//! - Over a single store member serving the API from the same process.
//! - `capstan apiserver` over a real etcd (Debian's etcd-server), with `capstan
//!   controller-manager` beside it.
//! - Three store members, each with its own API replica: a write through one replica is
//!   seen by watches on the others, also after the Raft leader is killed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use capstan_chaos::cluster::{Cluster, ClusterConfig};
use common::Server;

/// The scenario takes about ten seconds; this only bounds a hang.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);
/// The longest any condition is waited for before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs tests/kubectl.sh with `kubectl` against the API of `kubeconfig`.
fn run_scenario(kubectl: &Path, kubeconfig: &Path, work: &Path, server: &Server) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kubectl.sh");
    let bin = kubectl.to_str().expect("utf-8 path");
    let kc = kubeconfig.to_str().expect("utf-8 path");
    let result = common::run_script(&script, &[bin, kc], &work.join("script.out"), SCRIPT_DEADLINE);
    common::assert_script(&format!("tests/kubectl.sh with {bin}"), result, SCRIPT_DEADLINE, server);
}

#[test]
fn kubectl_drives_the_kubernetes_api() {
    for k in &common::kubectls_or_fail() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (server, kubeconfig) = Server::with_api(dir.path(), &[]);
        run_scenario(k, &kubeconfig, dir.path(), &server);
    }
}

/// A real etcd (Debian's etcd-server) on free loopback ports; killed on drop.
struct Etcd {
    child: std::process::Child,
    client: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_etcd(dir: &Path) -> Etcd {
    let (client, peer) = (common::free_port(), common::free_port());
    let log = std::fs::File::create(dir.join("etcd.log")).expect("etcd log");
    let child = Command::new("etcd")
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
        .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-cluster", &format!("default=http://127.0.0.1:{peer}")])
        .stdout(log.try_clone().expect("clone"))
        .stderr(log)
        .spawn()
        .expect("start etcd (Debian etcd-server; scripts/install-deps.sh test installs it)");
    let etcd = Etcd {
        child,
        client: format!("127.0.0.1:{client}"),
    };
    let deadline = Instant::now() + DEADLINE;
    loop {
        let healthy = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &etcd.client, "endpoint", "health"])
            .output()
            .is_ok_and(|o| o.status.success());
        if healthy {
            return etcd;
        }
        assert!(
            Instant::now() < deadline,
            "etcd did not become healthy within {DEADLINE:?}: {}",
            std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default()
        );
        // Poll, not spin.
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kubectl_drives_the_api_over_a_real_etcd() {
    let found = common::kubectls_or_fail();
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(dir.path());
    let kubeconfig = dir.path().join("kubeconfig");
    let server = Server::apiserver(
        &format!("http://{}", etcd.client),
        &kubeconfig,
        &dir.path().join("apiserver.log"),
    );
    // The scenario expects controllers (the store runs them in its process; a separate
    // apiserver, as upstream's, does not).
    let (_controllers, _) = Server::component(
        "controller-manager",
        &server.url(),
        &[],
        &dir.path().join("controller-manager.log"),
    );
    // One kubectl is enough here: the wire is the same, the storage is what differs.
    run_scenario(&found[0], &kubeconfig, dir.path(), &server);

    // The dashboard's control plane view over etcd: its Status and MemberList, and no
    // member's own columns (they are asked over a local store's peer connections only).
    let raw = common::kubectl(&found[0], &kubeconfig, &["get", "--raw", "/ui/api/controlplane"]);
    assert!(raw.status.success(), "{}", String::from_utf8_lossy(&raw.stderr));
    let view: serde_json::Value = serde_json::from_slice(&raw.stdout).expect("JSON");
    assert!(view["leader"].as_str().is_some_and(|l| !l.is_empty()), "{view}");
    assert!(view["raftIndex"].as_u64().is_some_and(|i| i > 0), "{view}");
    let members = view["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "{view}");
    assert_eq!(members[0]["id"], view["member"]["id"], "{view}");
    assert!(
        members[0].get("status").is_none() && members[0].get("error").is_none(),
        "{view}"
    );
}

/// `kubectl get cm -w` against one replica, its output in a file; killed on drop.
struct Watcher {
    child: std::process::Child,
    out: PathBuf,
}

impl Watcher {
    fn start(kubectl: &Path, kubeconfig: &Path, work: &Path, name: &str) -> Watcher {
        let out = work.join(format!("{name}.watch"));
        let f = std::fs::File::create(&out).expect("watch output");
        let child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(work.join(format!("{name}.cache")))
            .args(["get", "configmaps", "-w", "--output-watch-events"])
            .stdout(f.try_clone().expect("clone"))
            .stderr(f)
            .spawn()
            .expect("run kubectl get -w");
        Watcher { child, out }
    }

    /// Waits until the watch has printed `text`.
    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let seen = std::fs::read_to_string(&self.out).unwrap_or_default();
            if seen.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never showed {text:?}; it shows:\n{seen}",
                self.out.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a ConfigMap through the replica of `kubeconfig`, retrying while the store
/// has no leader (right after a kill).
fn create_configmap(kubectl: &Path, kubeconfig: &Path, work: &Path, name: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(work.join("create.cache"))
            .args(["create", "configmap", name, "--from-literal=k=v"])
            .output()
            .expect("run kubectl create");
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl create configmap {name} kept failing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn api_replicas_over_a_three_member_store_see_each_others_writes() {
    let kubectl = common::kubectls_or_fail().remove(0);
    let mut config = ClusterConfig::new(3, PathBuf::from(env!("CARGO_BIN_EXE_capstan")));
    config.apiserver = true;
    let mut cluster = Cluster::start(config).expect("start the cluster");
    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();
    create_configmap(&kubectl, &cluster.kubeconfig(0), w, "before");
    let watchers: Vec<Watcher> = (1..3)
        .map(|i| Watcher::start(&kubectl, &cluster.kubeconfig(i), w, &format!("n{i}")))
        .collect();
    for watcher in &watchers {
        watcher.wait_for("before");
    }
    create_configmap(&kubectl, &cluster.kubeconfig(0), w, "through-n1");
    for watcher in &watchers {
        watcher.wait_for("through-n1");
    }
    drop(watchers);
    // Without the Raft leader, the other two replicas go on.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let leader = rt
        .block_on(cluster.leader(DEADLINE.as_millis() as u64))
        .expect("a leader");
    cluster.kill(leader).expect("kill the leader");
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let watcher = Watcher::start(&kubectl, &cluster.kubeconfig(survivors[1]), w, "survivor");
    watcher.wait_for("through-n1");
    create_configmap(&kubectl, &cluster.kubeconfig(survivors[0]), w, "after-failover");
    watcher.wait_for("after-failover");
}
