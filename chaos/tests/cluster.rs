//! The cluster harness with one member (the binary does not form clusters yet): start,
//! write and read through etcd-client, kill, restart on the same data and endpoint,
//! pause and resume, leader discovery.
//!
//! A member prints its ready line when it serves, which may be before it has a leader
//! (Raft elects even a lone member after an election timeout), so requests wait for
//! `leader()` first.

use std::time::Duration;

use capstan_chaos::cluster::START_MARKER;
use capstan_chaos::{capstan_binary, Cluster, ClusterConfig, MemberState};
use etcd_client::{Client, ConnectOptions};

async fn client(cluster: &Cluster) -> Client {
    let options = ConnectOptions::new()
        .with_timeout(Duration::from_secs(5))
        .with_connect_timeout(Duration::from_secs(5));
    Client::connect(cluster.endpoints(), Some(options))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

async fn get(client: &mut Client, key: &str) -> Option<Vec<u8>> {
    let response = client.get(key, None).await.unwrap_or_else(|e| panic!("get {key}: {e}"));
    response.kvs().first().map(|kv| kv.value().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_start_kill_restart_pause() {
    let binary = capstan_binary().unwrap_or_else(|e| panic!("{e}"));
    let mut cluster = Cluster::start(ClusterConfig::new(1, binary)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cluster.len(), 1);
    assert_eq!(cluster.state(0), MemberState::Running);
    let endpoint = cluster.endpoint(0);
    assert!(
        endpoint.starts_with("http://127.0.0.1:") && !endpoint.ends_with(":0"),
        "{endpoint}"
    );
    assert_eq!(cluster.leader(10_000).await.unwrap_or_else(|e| panic!("{e}")), 0);

    let mut c = client(&cluster).await;
    c.put("chaos/a", "1", None).await.unwrap_or_else(|e| panic!("put: {e}"));
    assert_eq!(get(&mut c, "chaos/a").await.as_deref(), Some(&b"1"[..]));

    // Kill: the process is gone and the endpoint refuses.
    let pid = cluster.pid(0).expect("a running member has a process");
    cluster.kill(0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cluster.state(0), MemberState::Stopped);
    assert_eq!(cluster.pid(0), None);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} still exists"
    );
    let mut dead = client(&cluster).await;
    let refused = tokio::time::timeout(Duration::from_secs(10), dead.get("chaos/a", None)).await;
    assert!(!matches!(refused, Ok(Ok(_))), "a killed member answered");
    assert!(
        cluster.leader(300).await.is_err(),
        "a killed member cannot be the leader"
    );

    // Restart: same endpoint, it leads again, the acknowledged write is still there (a
    // linearizable read, the first request after the restart).
    cluster.restart(0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cluster.state(0), MemberState::Running);
    assert_eq!(cluster.endpoint(0), endpoint);
    assert_eq!(cluster.leader(10_000).await.unwrap_or_else(|e| panic!("{e}")), 0);
    let mut c = client(&cluster).await;
    assert_eq!(get(&mut c, "chaos/a").await.as_deref(), Some(&b"1"[..]));

    // Pause: requests hang (no answer within a second); resume: they are answered.
    cluster.pause(0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cluster.state(0), MemberState::Paused);
    assert!(cluster.pause(0).is_err(), "pausing a paused member is refused");
    let hung = tokio::time::timeout(Duration::from_secs(1), c.put("chaos/b", "2", None)).await;
    assert!(hung.is_err(), "a paused member answered: {hung:?}");
    cluster.resume(0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cluster.state(0), MemberState::Running);
    let mut c = client(&cluster).await;
    c.put("chaos/b", "3", None)
        .await
        .unwrap_or_else(|e| panic!("put after resume: {e}"));
    assert_eq!(get(&mut c, "chaos/b").await.as_deref(), Some(&b"3"[..]));

    // Its log collects every run (two so far), each headed by the harness's marker and
    // followed by what the member wrote.
    let log = cluster.member_log_tail(0, 10_000);
    assert_eq!(log.matches(START_MARKER).count(), 2, "log:\n{log}");
    assert!(log.lines().count() > 2, "the member wrote nothing to its log:\n{log}");

    // Kill a paused member, then restart it.
    cluster.pause(0).unwrap_or_else(|e| panic!("{e}"));
    cluster.kill(0).unwrap_or_else(|e| panic!("{e}"));
    assert!(cluster.resume(0).is_err(), "resuming a stopped member is refused");
    cluster.restart(0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cluster.leader(10_000).await.unwrap_or_else(|e| panic!("{e}")), 0);
    let mut c = client(&cluster).await;
    assert_eq!(get(&mut c, "chaos/b").await.as_deref(), Some(&b"3"[..]));

    // Drop kills the process and removes the directory.
    let dir = cluster.dir().to_path_buf();
    let pid = cluster.pid(0).expect("running");
    drop(cluster);
    assert!(!dir.exists(), "{} survived the cluster", dir.display());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} survived the cluster"
    );
}

#[test]
fn a_member_that_cannot_start_is_reported_with_its_log() {
    let binary = capstan_binary().unwrap_or_else(|e| panic!("{e}"));
    let mut config = ClusterConfig::new(1, binary);
    config.extra_args = vec!["--no-such-flag".into()];
    match Cluster::start(config) {
        Ok(_) => panic!("a member with an unknown flag started"),
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("exited before it was ready"), "{message}");
            assert!(
                message.contains("--no-such-flag"),
                "the log tail (clap's complaint) is in: {message}"
            );
        }
    }
}

#[test]
fn missing_binary_is_a_clear_error() {
    let config = ClusterConfig::new(1, "/nonexistent/capstan".into());
    let message = Cluster::start(config).err().expect("no binary, no cluster").to_string();
    assert!(message.contains("cargo build --bin capstan"), "{message}");
}
