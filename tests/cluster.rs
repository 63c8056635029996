//! Real 3- and 5-member clusters of the `capstan` binary on loopback, with members killed
//! (SIGKILL) under load. What must hold: a new leader is elected and writes resume; every
//! acknowledged write is afterwards on every member at the revision it was acknowledged
//! with; all members end with the same history (HashKV at one revision); a restarted
//! member catches up by log (also when it is behind by more than fits one peer message)
//! and, after the log was truncated, by snapshot; a register
//! workload stays linearizable while leaders are killed; the dashboard's control plane
//! view shows every member's own raft state, and why a member that does not answer has
//! none.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_chaos::cluster::{Cluster, ClusterConfig};
use capstan_chaos::linearizability::{check, CheckResult, Limits};
use capstan_chaos::workload::{run_register_workload, WorkloadConfig};
use etcd_client::{Client, ConnectOptions, GetOptions};

/// The longest any condition is waited for before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_capstan"))
}

fn start(members: usize, extra: &[&str]) -> Cluster {
    let mut config = ClusterConfig::new(members, binary());
    config.extra_args = extra.iter().map(|s| s.to_string()).collect();
    Cluster::start(config).expect("start the cluster")
}

async fn connect(endpoints: &[String]) -> Client {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
    let deadline = Instant::now() + DEADLINE;
    loop {
        match Client::connect(endpoints.to_vec(), Some(opts.clone())).await {
            Ok(c) => return c,
            // Poll, not spin: another connection attempt shortly.
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("cannot connect to {endpoints:?}: {e}"),
        }
    }
}

/// Runs Debian's etcdctl (3.4; `make test` installs it) against `endpoints`
/// (comma separated host:port).
fn etcdctl_at(endpoints: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .output()
        .expect("run etcdctl (Debian etcd-client; make test installs it)")
}

/// etcdctl's standard output, failing the test if it failed.
fn etcdctl_ok(endpoints: &str, args: &[&str]) -> String {
    let out = etcdctl_at(endpoints, args);
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The members' client endpoints as etcdctl takes them (host:port).
fn bare_endpoints(cluster: &Cluster) -> Vec<String> {
    cluster
        .endpoints()
        .iter()
        .map(|e| e.trim_start_matches("http://").to_string())
        .collect()
}

/// Waits until `f` holds, polling, or fails the test with `what`.
async fn wait_until<F, Fut>(what: &str, cluster: &Cluster, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !f().await {
        if Instant::now() > deadline {
            panic!("timed out waiting until {what}; logs:\n{}", cluster.log_tails(30));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writers putting unique keys until stopped; every acknowledged put is recorded with the
/// revision it was acknowledged at.
struct Writers {
    acked: Arc<Mutex<Vec<(String, i64)>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    async fn start(endpoints: &[String], n: usize) -> Writers {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..n {
            // Each writer talks to one member, so killing one stops only its writers
            // until they fail over to the next member in their list.
            let mut eps = endpoints.to_vec();
            eps.rotate_left(w % endpoints.len());
            let mut client = connect(&eps).await;
            let acked = acked.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let key = format!("/w/{w}/{n}");
                    n += 1;
                    if let Ok(r) = client.put(key.clone(), format!("v{n}"), None).await {
                        let rev = r.header().expect("a put has a header").revision();
                        acked.lock().expect("acked lock").push((key, rev));
                    }
                }
            }));
        }
        Writers { acked, stop, tasks }
    }

    fn count(&self) -> usize {
        self.acked.lock().expect("acked lock").len()
    }

    async fn stop(self) -> Vec<(String, i64)> {
        self.stop.store(true, Ordering::Release);
        for t in self.tasks {
            let _ = t.await;
        }
        let acked = self.acked.lock().expect("acked lock").clone();
        acked
    }
}

/// (applied index, revision) of every member, when all answer.
async fn positions(cluster: &Cluster) -> Option<Vec<(u64, i64)>> {
    let mut out = Vec::new();
    for ep in cluster.endpoints() {
        let mut c = Client::connect([ep], None).await.ok()?;
        let s = c.status().await.ok()?;
        out.push((s.raft_applied_index(), s.header()?.revision()));
    }
    Some(out)
}

/// Waits until every member has applied the same index, then checks that all have the
/// same history and every acknowledged put at its revision.
async fn check_converged(cluster: &Cluster, acked: &[(String, i64)]) {
    let deadline = Instant::now() + DEADLINE;
    let rev = loop {
        match positions(cluster).await {
            Some(p) if p.windows(2).all(|w| w[0] == w[1]) => break p[0].1,
            _ if Instant::now() > deadline => panic!(
                "members did not converge: {:?}; logs:\n{}",
                positions(cluster).await,
                cluster.log_tails(30)
            ),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let mut hashes = Vec::new();
    for ep in cluster.endpoints() {
        let mut c = connect(std::slice::from_ref(&ep)).await;
        let h = c.hash_kv(rev).await.expect("hash_kv");
        hashes.push((ep, h.hash()));
    }
    assert!(
        hashes.windows(2).all(|w| w[0].1 == w[1].1),
        "members differ at revision {rev}: {hashes:?}"
    );
    for ep in cluster.endpoints() {
        let mut c = connect(std::slice::from_ref(&ep)).await;
        for (key, rev) in acked {
            let r = c
                .get(key.as_str(), Some(GetOptions::new().with_serializable()))
                .await
                .expect("get");
            let kv = r
                .kvs()
                .first()
                .unwrap_or_else(|| panic!("acknowledged {key} (revision {rev}) is missing on {ep}"));
            assert_eq!(kv.mod_revision(), *rev, "{key} on {ep}");
        }
    }
}

async fn kill_leader_under_writes(members: usize, kills: usize) {
    let mut cluster = start(members, &[]);
    let leader = cluster.leader(DEADLINE.as_millis() as u64).await.expect("a leader");
    let _ = leader;
    let writers = Writers::start(&cluster.endpoints(), 8).await;
    for round in 0..kills {
        let before = writers.count();
        wait_until("writes are acknowledged", &cluster, || async {
            writers.count() >= before + 100
        })
        .await;
        let leader = cluster.leader(DEADLINE.as_millis() as u64).await.expect("a leader");
        cluster.kill(leader).expect("kill the leader");
        let at_kill = writers.count();
        let new_leader = cluster.leader(DEADLINE.as_millis() as u64).await.expect("a new leader");
        assert_ne!(new_leader, leader, "round {round}: a killed member cannot lead");
        wait_until("writes resume after the leader was killed", &cluster, || async {
            writers.count() >= at_kill + 100
        })
        .await;
        cluster.restart(leader).expect("restart the old leader");
    }
    let acked = writers.stop().await;
    assert!(acked.len() >= 200 * kills, "only {} puts acknowledged", acked.len());
    check_converged(&cluster, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_lose_no_acknowledged_write_when_the_leader_is_killed() {
    kill_leader_under_writes(3, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_lose_no_acknowledged_write_when_leaders_are_killed() {
    kill_leader_under_writes(5, 2).await;
}

/// Puts `/c/{i}` for each i, recording each acknowledged key with its revision.
async fn put_keys(client: &mut Client, range: std::ops::Range<usize>, acked: &mut Vec<(String, i64)>) {
    for i in range {
        let key = format!("/c/{i}");
        let r = client.put(key.clone(), format!("v{i}"), None).await.expect("put");
        acked.push((key, r.header().expect("header").revision()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_catches_up_by_log_and_by_snapshot() {
    // A short log: a member 100 entries behind needs a snapshot.
    let mut cluster = start(3, &["--snapshot-count", "50"]);
    let leader = cluster.leader(DEADLINE.as_millis() as u64).await.expect("a leader");
    let follower = (leader + 1) % 3;
    // The leader stays up throughout; a client of it never meets a killed member.
    let mut client = connect(&[cluster.endpoint(leader)]).await;
    let mut acked = Vec::new();
    // By log: a few entries behind.
    cluster.kill(follower).expect("kill");
    put_keys(&mut client, 0..30, &mut acked).await;
    cluster.restart(follower).expect("restart");
    check_converged(&cluster, &acked).await;
    // By snapshot: far behind a truncated log.
    cluster.kill(follower).expect("kill");
    put_keys(&mut client, 30..400, &mut acked).await;
    cluster.restart(follower).expect("restart");
    check_converged(&cluster, &acked).await;
    let log = cluster.member_log_tail(follower, 2000);
    assert!(
        log.contains("installed a snapshot from the leader"),
        "the member should have caught up by snapshot; its log:\n{log}"
    );
    // Caught up, it takes part: with the other follower down, writes need it.
    let other = (0..3).find(|&i| i != leader && i != follower).expect("another member");
    cluster.kill(other).expect("kill");
    let r = client
        .put("/c/after", "snapshot", None)
        .await
        .expect("a write needing the restored member");
    acked.push(("/c/after".into(), r.header().expect("header").revision()));
    cluster.restart(other).expect("restart");
    check_converged(&cluster, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_entries_replicate_together_and_to_a_member_behind() {
    // Entries of 1 MiB, 16 proposed at once: the appends that carry them to a follower,
    // and the messages queued for a follower that was away, can hold more than one peer
    // message may (8 MiB). The transport cuts them up; a message over the limit would
    // fail the peer stream, and the follower would get the entries only after a
    // reconnect and Raft's probing.
    let mut cluster = start(3, &[]);
    let leader = cluster.leader(DEADLINE.as_millis() as u64).await.expect("a leader");
    let follower = (leader + 1) % 3;
    let endpoint = cluster.endpoint(leader);
    let value = vec![b'x'; 1 << 20];
    let puts = |round: usize| {
        let endpoint = endpoint.clone();
        let value = value.clone();
        async move {
            let mut tasks = Vec::new();
            for i in 0..16 {
                let endpoint = endpoint.clone();
                let value = value.clone();
                tasks.push(tokio::spawn(async move {
                    let mut client = connect(&[endpoint]).await;
                    let key = format!("/large/{round}/{i}");
                    let r = client.put(key.clone(), value, None).await.expect("put 1 MiB");
                    (key, r.header().expect("header").revision())
                }));
            }
            let mut acked = Vec::new();
            for t in tasks {
                acked.push(t.await.expect("put task"));
            }
            acked
        }
    };
    // All members up: a write needs a follower to take the large appends.
    let mut acked = puts(0).await;
    check_converged(&cluster, &acked).await;
    // A member behind by all of them, caught up by log.
    cluster.kill(follower).expect("kill");
    acked.extend(puts(1).await);
    cluster.restart(follower).expect("restart");
    check_converged(&cluster, &acked).await;
    // A member paused while the appends for it queue up, then resumed: the queue goes
    // out in batches that each fit a peer message.
    cluster.pause(follower).expect("pause");
    acked.extend(puts(2).await);
    cluster.resume(follower).expect("resume");
    check_converged(&cluster, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_workload_stays_linearizable_while_leaders_are_killed() {
    let mut cluster = start(3, &[]);
    cluster.leader(DEADLINE.as_millis() as u64).await.expect("a leader");
    let config = WorkloadConfig {
        clients: 6,
        ops_per_client: 150,
        keys: 3,
        seed: 42,
        ..WorkloadConfig::default()
    };
    let prefix = config.key_prefix.clone();
    let workload = tokio::spawn(run_register_workload(cluster.endpoints(), config));
    // Faults start once the workload is under way (its set-up must not meet them).
    let observer = connect(&cluster.endpoints()).await;
    wait_until("the workload has written", &cluster, || {
        let prefix = prefix.clone();
        let mut observer = observer.clone();
        async move {
            observer
                .get(prefix, Some(GetOptions::new().with_prefix().with_count_only()))
                .await
                .is_ok_and(|r| r.count() > 0)
        }
    })
    .await;
    for _ in 0..3 {
        if workload.is_finished() {
            break;
        }
        let leader = cluster.leader(DEADLINE.as_millis() as u64).await.expect("a leader");
        cluster.kill(leader).expect("kill the leader");
        cluster.leader(DEADLINE.as_millis() as u64).await.expect("a new leader");
        cluster.restart(leader).expect("restart");
    }
    let history = workload.await.expect("workload task").expect("workload");
    let done = history.operations.len() - history.unknown_count();
    assert!(done > 100, "too few operations completed: {done}");
    match check(&history, &Limits::default()).expect("check") {
        CheckResult::Linearizable => {}
        other => panic!("the history is not shown linearizable: {other:?}"),
    }
}

/// `GET /ui/api/controlplane` of one member's API (the dashboard's control plane view)
/// asks every member for its own raft state over the peer connections; a member that does
/// not answer (paused) gets why instead, and its state again once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_view_has_every_members_own_state() {
    let mut config = ClusterConfig::new(3, binary());
    config.apiserver = true;
    let mut cluster = Cluster::start(config).expect("start the cluster");
    cluster.leader(DEADLINE.as_millis() as u64).await.expect("a leader");
    let api: std::net::SocketAddr = cluster.api_url(0)["http://".len()..].parse().expect("API address");
    let names: Vec<String> = (0..3).map(|i| cluster.name(i).to_owned()).collect();
    // The members by name: Some(raft index) for one that answered, None for one with an
    // error instead (a row with both or neither is no answer yet, and the wait goes on
    // to its deadline); no answer at all while the API does not answer. The GET blocks,
    // so it runs apart from the runtime's workers.
    let rows = move || async move {
        let body = tokio::task::spawn_blocking(move || common::http_get_path(api, "/ui/api/controlplane"))
            .await
            .ok()?
            .ok()?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        let row = |m: &serde_json::Value| {
            let index = m["status"]["raftIndex"].as_u64();
            let error = m["error"].as_str().filter(|e| !e.is_empty());
            (index.is_some() != error.is_some()).then(|| (m["name"].as_str().unwrap_or_default().to_owned(), index))
        };
        json["members"]
            .as_array()?
            .iter()
            .map(row)
            .collect::<Option<std::collections::BTreeMap<String, Option<u64>>>>()
    };
    let all_answer = |rows: &std::collections::BTreeMap<String, Option<u64>>| {
        rows.len() == 3
            && names
                .iter()
                .all(|n| rows.get(n).copied().flatten().is_some_and(|i| i > 0))
    };
    wait_until("every member's own raft index", &cluster, || async {
        rows().await.is_some_and(|r| all_answer(&r))
    })
    .await;

    let paused = names[2].clone();
    cluster.pause(2).expect("pause a member");
    wait_until(&format!("{paused} shown as not answering"), &cluster, || async {
        rows()
            .await
            .is_some_and(|r| r.get(&paused) == Some(&None) && r.values().filter(|i| i.is_some()).count() == 2)
    })
    .await;
    cluster.resume(2).expect("resume it");
    wait_until("every member answering again", &cluster, || async {
        rows().await.is_some_and(|r| all_answer(&r))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_sees_the_whole_cluster() {
    let cluster = start(3, &[]);
    cluster.leader(DEADLINE.as_millis() as u64).await.expect("a leader");
    let endpoints = bare_endpoints(&cluster);
    let etcdctl = |args: &[&str]| etcdctl_ok(&endpoints[0], args);
    let list = etcdctl(&["member", "list"]);
    assert_eq!(list.lines().count(), 3, "{list}");
    for (i, ep) in endpoints.iter().enumerate() {
        assert!(list.contains(&format!(", started, {}, ", cluster.name(i))), "{list}");
        assert!(list.contains(&format!(", {ep}, ")), "{list}");
    }
    let status = etcdctl(&["endpoint", "status", "--cluster"]);
    assert_eq!(status.lines().count(), 3, "{status}");
    assert_eq!(status.matches(", true, false, ").count(), 1, "one leader: {status}");
    etcdctl(&["put", "k", "v"]);
    // move-leader, asked of the leader (etcdctl finds it among the endpoints given).
    let leader = cluster.leader(DEADLINE.as_millis() as u64).await.expect("a leader");
    let target = (leader + 1) % 3;
    let target_id = {
        let mut c = connect(&[cluster.endpoint(target)]).await;
        c.status().await.expect("status").header().expect("header").member_id()
    };
    let all = endpoints.join(",");
    let out = etcdctl_at(&all, &["move-leader", &format!("{target_id:x}")]);
    assert!(
        out.status.success(),
        "move-leader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Leadership transferred"),
        "{out:?}"
    );
    assert_eq!(
        cluster.leader(DEADLINE.as_millis() as u64).await.expect("a leader"),
        target
    );
    for ep in &endpoints {
        let out = etcdctl_at(ep, &["get", "k", "--print-value-only"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v", "read on {ep}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_promoted_and_removed_with_etcdctl() {
    // A short log, so the new member needs a snapshot to catch up.
    let cluster = start(3, &["--snapshot-count", "20"]);
    cluster.leader(DEADLINE.as_millis() as u64).await.expect("a leader");
    let endpoints = bare_endpoints(&cluster);
    let all = endpoints.join(",");
    let etcdctl = |args: &[&str]| etcdctl_at(&all, args);
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "etcdctl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    ok(etcdctl(&["put", "k", "v"]));
    let mut client = connect(&cluster.endpoints()).await;
    for i in 0..100 {
        client.put(format!("/fill/{i}"), "x", None).await.expect("put");
    }
    let mut initial: Vec<String> = client
        .member_list()
        .await
        .expect("member list")
        .members()
        .iter()
        .map(|m| format!("{}={}", m.name(), m.peer_urls()[0]))
        .collect();
    let free_port = || capstan_chaos::ports::free_port(std::net::Ipv4Addr::LOCALHOST).expect("a free port");
    let (client_port, peer_port) = (free_port(), free_port());
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let added = ok(etcdctl(&[
        "member",
        "add",
        "n4",
        "--learner",
        &format!("--peer-urls={peer_url}"),
    ]));
    let id = added
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no member ID in {added:?}"))
        .to_string();
    initial.push(format!("n4={peer_url}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let log = std::fs::File::create(dir.path().join("n4.log")).expect("log");
    let n4 = std::process::Command::new(binary())
        .args([
            "store",
            "--name",
            "n4",
            "--initial-cluster-state",
            "existing",
            "--insecure",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("n4"))
        .args(["--listen-client", &format!("127.0.0.1:{client_port}")])
        .args(["--listen-peer", &format!("127.0.0.1:{peer_port}")])
        .args(["--initial-cluster", &initial.join(",")])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start n4");
    // Killed however the test ends: a failed assertion must not leave it running.
    let mut n4 = KillOnDrop(n4);
    // The learner catches up: it serves the data written before it joined.
    let n4_endpoint = format!("http://127.0.0.1:{client_port}");
    wait_until("the new learner has the data", &cluster, || {
        let ep = n4_endpoint.clone();
        async move {
            let Ok(mut c) = Client::connect([ep], None).await else {
                return false;
            };
            c.get("k", Some(GetOptions::new().with_serializable()))
                .await
                .is_ok_and(|r| r.kvs().first().is_some_and(|kv| kv.value() == b"v"))
        }
    })
    .await;
    let n4_log = std::fs::read_to_string(dir.path().join("n4.log")).expect("n4 log");
    assert!(
        n4_log.contains("installed a snapshot from the leader"),
        "the new member should catch up by snapshot:\n{n4_log}"
    );
    let list = ok(etcdctl(&["member", "list"]));
    assert!(
        list.contains(&format!("{id}, started, n4, {peer_url}")) && list.contains(", true\n"),
        "{list}"
    );
    ok(etcdctl(&["member", "promote", &id]));
    let list = ok(etcdctl(&["member", "list"]));
    assert_eq!(list.matches(", false\n").count(), 4, "four voters: {list}");
    // Promoting a voter again is refused as etcd refuses it.
    let again = etcdctl(&["member", "promote", &id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("can only promote a learner member"));
    // The new voter takes writes.
    let mut c4 = connect(std::slice::from_ref(&n4_endpoint)).await;
    c4.put("k4", "from-n4", None)
        .await
        .expect("a write through the new member");
    ok(etcdctl(&["member", "remove", &id]));
    let list = ok(etcdctl(&["member", "list"]));
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(!list.contains(&id), "{list}");
    let gone = etcdctl(&["member", "remove", &id]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("member not found"));
    // As etcd, the removed member's process exits.
    let deadline = Instant::now() + DEADLINE;
    while n4.0.try_wait().expect("n4 status").is_none() {
        assert!(Instant::now() < deadline, "the removed member did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = client.get("k4", None).await.expect("get");
    assert_eq!(r.kvs()[0].value(), b"from-n4");
    // A learner that has not caught up (never started) cannot be promoted (asked of the
    // leader, which knows how far each member is).
    let leader = cluster.leader(DEADLINE.as_millis() as u64).await.expect("a leader");
    let added = ok(etcdctl(&[
        "member",
        "add",
        "n5",
        "--learner",
        "--peer-urls=http://127.0.0.1:9",
    ]));
    let id5 = added.split_whitespace().nth(1).expect("member ID").to_string();
    let refused = etcdctl_at(&endpoints[leader], &["member", "promote", &id5]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("can only promote a learner member which is in sync with leader"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    ok(etcdctl(&["member", "remove", &id5]));
}

/// A child process killed (and reaped) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
