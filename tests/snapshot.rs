//! Snapshot save and restore round trip (issue 7), with real processes: a `capstan store`
//! holding keys with history (overwrites, a delete, a compaction, a lease); its state saved
//! by `capstan snapshot save` (the first endpoint given is dead, so it fails over) and by
//! Debian's `etcdctl snapshot save` (3.4); both files checked with `capstan snapshot
//! status` against the member's HashKV; the first restored into a new 1-member cluster
//! and the second into the three data directories of a new 3-member cluster, each started
//! as `capstan store` with the cluster flags the restore was given. What must hold on
//! every member: every key with its value, create and mod revisions, version and lease,
//! the revision and the compaction, historical reads; writes continue from the old
//! revision; the membership is the new one only. And a restore refuses a corrupt or
//! truncated file and an existing data directory, leaving nothing behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{eventually, free_port, Server};
use etcd_client::{Client, GetOptions, LeaseTimeToLiveOptions, PutOptions};

/// The longest any condition is waited for.
const DEADLINE: Duration = Duration::from_secs(60);
/// The old cluster's member name (`capstan store`'s default), which must not survive.
const OLD_MEMBER: &str = "default";

fn capstan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run capstan")
}

/// `capstan <args>`'s stdout, failing the test if it failed.
fn capstan_ok(args: &[&str]) -> String {
    let out = capstan(args);
    assert!(
        out.status.success(),
        "capstan {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `capstan <args>`'s stderr, failing the test if it succeeded.
fn capstan_fails(args: &[&str]) -> String {
    let out = capstan(args);
    assert!(
        !out.status.success(),
        "capstan {args:?} succeeded where it must fail:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn etcdctl(endpoints: &str, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .output()
        .expect("run etcdctl (Debian's etcd-client; scripts/install-deps.sh test installs it)");
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

/// A key as clients see it.
#[derive(Debug, Clone, PartialEq)]
struct Kv {
    key: String,
    value: String,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
}

/// Every key at `revision` (0: the newest), linearizable, and the revision of the answer.
async fn all_keys(c: &mut Client, revision: i64) -> Result<(Vec<Kv>, i64), etcd_client::Error> {
    let r = c
        .get("", Some(GetOptions::new().with_all_keys().with_revision(revision)))
        .await?;
    let kvs = r
        .kvs()
        .iter()
        .map(|kv| Kv {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: kv.lease(),
        })
        .collect();
    Ok((kvs, r.header().map_or(0, |h| h.revision())))
}

/// A first write to a restored cluster: it gets the snapshot's revision + 1 (the
/// revision it returns).
async fn put_after_restore(c: &mut Client, snapshot_revision: i64) -> i64 {
    let rev = c
        .put("k/new", "after", None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision();
    assert_eq!(rev, snapshot_revision + 1, "writes continue from the old revision");
    rev
}

async fn connect(endpoints: &[String]) -> Client {
    eventually("connect", DEADLINE, || async {
        Client::connect(endpoints.to_vec(), None).await.ok()
    })
    .await
}

/// What the old cluster held, to be found again on every restored member.
struct Expected {
    keys: Vec<Kv>,
    revision: i64,
    compacted: i64,
    /// Every key at the compacted revision (history kept from there).
    at_compacted: Vec<Kv>,
    lease: i64,
}

/// Writes history into the store at `endpoint`: overwrites, a delete, a lease with a key,
/// a compaction and a write after it.
async fn write_history(endpoint: &str) -> Expected {
    let mut c = connect(&[endpoint.to_string()]).await;
    for v in ["1", "2", "3"] {
        c.put("k/a", v, None).await.expect("put k/a");
    }
    c.put("k/b", "b", None).await.expect("put k/b");
    c.put("k/gone", "x", None).await.expect("put k/gone");
    c.delete("k/gone", None).await.expect("delete k/gone");
    let lease = c.lease_grant(600, None).await.expect("grant").id();
    c.put("k/leased", "l", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put with lease");
    let compacted = c
        .put("k/c", "c", None)
        .await
        .expect("put k/c")
        .header()
        .expect("header")
        .revision();
    let (at_compacted, _) = all_keys(&mut c, compacted).await.expect("read at the compaction point");
    c.compact(compacted, None).await.expect("compact");
    c.put("k/a", "4", None).await.expect("put k/a");
    let (keys, revision) = all_keys(&mut c, 0).await.expect("read everything");
    assert_eq!(
        keys.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["k/a", "k/b", "k/c", "k/leased"]
    );
    assert_eq!(keys[0].version, 4, "k/a was written four times");
    Expected {
        keys,
        revision,
        compacted,
        at_compacted,
        lease,
    }
}

/// Checks a restored member (or cluster) behind `endpoints`: keys, revisions, the
/// compaction, the lease, and the membership (exactly `members`, by name).
async fn check_restored(endpoints: &[String], expected: &Expected, members: &[&str]) {
    let mut c = connect(endpoints).await;
    // Linearizable: answered once the new cluster has a leader.
    let (keys, revision) = eventually("the restored cluster answers", DEADLINE, || {
        let mut c = c.clone();
        async move { all_keys(&mut c, 0).await.ok() }
    })
    .await;
    assert_eq!(keys, expected.keys, "every key, value, revision, version and lease");
    assert_eq!(revision, expected.revision, "the revision");
    let (at_compacted, _) = all_keys(&mut c, expected.compacted).await.expect("historical read");
    assert_eq!(at_compacted, expected.at_compacted, "history from the compaction point");
    let below = all_keys(&mut c, expected.compacted - 1).await;
    assert!(
        below.as_ref().is_err_and(|e| e.to_string().contains("compacted")),
        "history before the compaction stays gone: {below:?}"
    );
    let ttl = c
        .lease_time_to_live(expected.lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("lease time to live");
    assert!(ttl.ttl() > 0, "the lease lives: {ttl:?}");
    assert_eq!(ttl.keys(), [b"k/leased".to_vec()], "with its key");
    let list = c.member_list().await.expect("member list");
    let mut names: Vec<&str> = list.members().iter().map(|m| m.name()).collect();
    names.sort();
    assert_eq!(names, members, "only the new members: {:?}", list.members());
}

/// Every member sees the same keys (linearizable reads on each alone).
async fn check_each_member(endpoints: &[String], expected: &[Kv], revision: i64) {
    for e in endpoints {
        let c = connect(std::slice::from_ref(e)).await;
        let (keys, rev) = eventually(&format!("member {e} answers"), DEADLINE, || {
            let mut c = c.clone();
            async move { all_keys(&mut c, 0).await.ok() }
        })
        .await;
        assert_eq!((keys.as_slice(), rev), (expected, revision), "member {e}");
    }
}

/// Starts the members of a new cluster together (a member may wait for its peers).
fn start_members(args: Vec<(PathBuf, PathBuf, Vec<String>)>) -> Vec<Server> {
    std::thread::scope(|s| {
        let handles: Vec<_> = args
            .iter()
            .map(|(data, log, extra)| {
                s.spawn(move || {
                    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                    Server::start_with(data, log, &extra)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a member started"))
            .collect()
    })
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".restore-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_and_restore_round_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let server = Server::start(&d.join("old"), &d.join("old.log"));
    let expected = write_history(&server.url()).await;

    // Save: the first endpoint refuses connections, the second answers.
    let ours = d.join("capstan.db");
    let dead = format!("127.0.0.1:{}", free_port());
    let endpoints = format!("{dead},{}", server.endpoint());
    let out = capstan_ok(&["snapshot", "save", path_str(&ours), "--endpoints", &endpoints]);
    assert!(out.contains(&format!("Snapshot saved at {}", ours.display())), "{out}");
    assert!(out.contains(&format!("revision {}", expected.revision)), "{out}");
    assert!(
        !PathBuf::from(format!("{}.part", ours.display())).exists(),
        "no .part left"
    );
    let theirs = d.join("etcdctl.db");
    etcdctl(&server.endpoint(), &["snapshot", "save", path_str(&theirs)]);

    // Status: the revision, and the hash HashKV gives at that revision.
    let mut c = connect(&[server.url()]).await;
    let hash = c.hash_kv(expected.revision).await.expect("hash kv").hash();
    for file in [&ours, &theirs] {
        let json = capstan_ok(&["snapshot", "status", path_str(file), "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("status JSON");
        assert_eq!(v["revision"], expected.revision, "{json}");
        assert_eq!(v["hash"], hash, "{json}");
        assert!(v["totalKey"].as_u64().is_some_and(|n| n > 0), "{json}");
        assert_eq!(
            v["totalSize"].as_u64(),
            Some(std::fs::metadata(file).expect("size").len()),
            "{json}"
        );
    }
    let table = capstan_ok(&["snapshot", "status", path_str(&ours), "-w", "table"]);
    assert!(
        table.contains("| REVISION |") && table.contains(&format!("{:x}", hash)),
        "{table}"
    );
    drop(c);
    // The old cluster is not needed for a restore.
    drop(server);

    // Refusals, each leaving nothing behind.
    let good = std::fs::read(&ours).expect("read the snapshot");
    let corrupt = d.join("corrupt.db");
    let mut bytes = good.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&corrupt, &bytes).expect("write");
    let truncated = d.join("truncated.db");
    std::fs::write(&truncated, &good[..good.len() / 2]).expect("write");
    let nowhere = d.join("nowhere");
    for bad in [&corrupt, &truncated] {
        let err = capstan_fails(&["snapshot", "restore", path_str(bad), "--data-dir", path_str(&nowhere)]);
        assert!(err.contains(path_str(bad)), "the error names the file: {err}");
        assert!(err.contains("corrupt") || err.contains("truncated"), "{err}");
        assert!(!nowhere.exists(), "no data directory after a refused restore");
        assert!(leftovers(d).is_empty(), "{:?}", leftovers(d));
        capstan_fails(&["snapshot", "status", path_str(bad)]);
    }

    // Our file into a new 1-member cluster.
    let solo = d.join("solo");
    let out = capstan_ok(&[
        "snapshot",
        "restore",
        path_str(&ours),
        "--data-dir",
        path_str(&solo),
        "--name",
        "solo",
    ]);
    assert!(out.contains("Start it with"), "{out}");
    assert!(out.contains(OLD_MEMBER), "the dropped membership is reported: {out}");
    let err = capstan_fails(&["snapshot", "restore", path_str(&ours), "--data-dir", path_str(&solo)]);
    assert!(err.contains("already exists and is not empty"), "{err}");
    let member = Server::start_with(&solo, &d.join("solo.log"), &["--name", "solo"]);
    check_restored(&[member.url()], &expected, &["solo"]).await;
    let mut c = connect(&[member.url()]).await;
    put_after_restore(&mut c, expected.revision).await;
    drop(c);
    drop(member);

    // etcdctl's file into the three data directories of a new 3-member cluster.
    let peers: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let names = ["m1", "m2", "m3"];
    let initial_cluster = names
        .iter()
        .zip(&peers)
        .map(|(n, p)| format!("{n}=http://{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let token = "restored-cluster";
    let mut members = Vec::new();
    for (name, peer) in names.iter().zip(&peers) {
        let data = d.join(name);
        capstan_ok(&[
            "snapshot",
            "restore",
            path_str(&theirs),
            "--data-dir",
            path_str(&data),
            "--name",
            name,
            "--initial-cluster",
            &initial_cluster,
            "--initial-cluster-token",
            token,
        ]);
        let flags = vec![
            "--name".to_string(),
            name.to_string(),
            "--listen-peer".into(),
            peer.clone(),
            "--initial-cluster".into(),
            initial_cluster.clone(),
            "--initial-cluster-token".into(),
            token.into(),
        ];
        members.push((data, d.join(format!("{name}.log")), flags));
    }
    let cluster = start_members(members);
    let urls: Vec<String> = cluster.iter().map(Server::url).collect();
    check_restored(&urls, &expected, &names).await;
    let listed = etcdctl(
        &cluster.iter().map(Server::endpoint).collect::<Vec<_>>().join(","),
        &["member", "list"],
    );
    assert_eq!(listed.lines().count(), 3, "{listed}");
    for (name, peer) in names.iter().zip(&peers) {
        assert!(
            listed.lines().any(|l| l.contains(&format!(", {name}, http://{peer}"))),
            "{name} at {peer}: {listed}"
        );
    }
    assert!(!listed.contains(OLD_MEMBER), "the old member is gone: {listed}");
    let mut c = connect(&urls).await;
    let rev = put_after_restore(&mut c, expected.revision).await;
    let (keys, _) = all_keys(&mut c, 0).await.expect("read");
    check_each_member(&urls, &keys, rev).await;
}
