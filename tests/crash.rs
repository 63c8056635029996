//! Crash safety: a real `capstan store` under concurrent put load is killed with SIGKILL
//! and restarted on the same data directory, three times. Every acknowledged put must be
//! there with the revision it was acknowledged with and its value, revisions never go
//! back, and the first put after a restart gets a revision above everything before.
//!
//! Also here, as it needs only a store process that has taken writes: the store's
//! Prometheus metrics at `--listen-metrics-urls`.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_proto::etcdserverpb::kv_client::KvClient;
use capstan_proto::etcdserverpb::{PutRequest, RangeRequest};
use common::Server;
use tonic::transport::Channel;

/// Concurrent writers, each with its own connection.
const WRITERS: usize = 8;
/// Keys per writer, overwritten in turn, so that keys have history.
const KEYS_PER_WRITER: u64 = 16;
/// Acknowledged puts after which each cycle's server is killed (load still running).
const KILL_AFTER_ACKS: [usize; 3] = [200, 1000, 3000];
/// Bound on waiting for a condition (acks, writers stopping); only reached on a hang.
const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
struct Ack {
    key: String,
    value: String,
    rev: i64,
}

/// What one writer did: its acknowledged puts in order, and the put in flight when the
/// connection broke (which may or may not have been applied).
struct WriterLog {
    acks: Vec<Ack>,
    unacked: Option<(String, String)>,
}

async fn connect(server: &Server) -> KvClient<Channel> {
    let channel = Channel::from_shared(server.url())
        .expect("url")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", server.url()));
    KvClient::new(channel)
}

async fn put(c: &mut KvClient<Channel>, key: &str, value: &str) -> Result<i64, tonic::Status> {
    let resp = c
        .put(PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(resp.header.expect("put response header").revision)
}

/// One writer: puts until the first error (the server being killed).
async fn writer(mut c: KvClient<Channel>, cycle: usize, w: usize, acked: Arc<AtomicUsize>) -> WriterLog {
    let mut log = WriterLog {
        acks: Vec::new(),
        unacked: None,
    };
    for i in 0u64.. {
        let key = format!("crash/w{w}/k{:02}", i % KEYS_PER_WRITER);
        let value = format!("cycle{cycle}-w{w}-put{i}");
        match put(&mut c, &key, &value).await {
            Ok(rev) => {
                log.acks.push(Ack { key, value, rev });
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                log.unacked = Some((key, value));
                break;
            }
        }
    }
    log
}

/// Everything the clients were told, across cycles.
#[derive(Default)]
struct History {
    acks: Vec<Ack>,
    /// Puts whose answer never came: each may or may not be in the store.
    unacked: HashSet<(String, String)>,
}

impl History {
    fn max_rev(&self) -> i64 {
        self.acks.iter().map(|a| a.rev).max().unwrap_or(0)
    }

    fn add(&mut self, ack: Ack) {
        self.acks.push(ack);
    }
}

async fn header_revision(c: &mut KvClient<Channel>) -> i64 {
    let r = c
        .range(RangeRequest {
            key: b"crash/none".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    r.header.expect("range header").revision
}

/// Checks the restarted store against everything acknowledged so far.
async fn verify(c: &mut KvClient<Channel>, h: &History, when: &str) {
    let head = header_revision(c).await;
    let max = h.max_rev();
    assert!(
        head >= max,
        "{when}: the store is at revision {head}, below the highest acknowledged revision {max}"
    );

    // Each acknowledged put, read at the revision it was acknowledged with.
    for a in &h.acks {
        let r = c
            .range(RangeRequest {
                key: a.key.as_bytes().to_vec().into(),
                revision: a.rev,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{when}: range {} at revision {}: {e}", a.key, a.rev))
            .into_inner();
        assert_eq!(
            r.kvs.len(),
            1,
            "{when}: acknowledged put {a:?} is missing (read at its revision)"
        );
        let kv = &r.kvs[0];
        assert_eq!(
            (kv.mod_revision, String::from_utf8_lossy(&kv.value).into_owned()),
            (a.rev, a.value.clone()),
            "{when}: acknowledged put of {} (mod_revision, value)",
            a.key
        );
    }

    // The newest value of every key: the last acknowledged put, or a later one whose
    // answer was lost in the crash.
    let mut last: HashMap<&str, &Ack> = HashMap::new();
    for a in &h.acks {
        let e = last.entry(a.key.as_str()).or_insert(a);
        if a.rev > e.rev {
            *e = a;
        }
    }
    for (key, a) in last {
        let r = c
            .range(RangeRequest {
                key: key.as_bytes().to_vec().into(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        assert_eq!(r.kvs.len(), 1, "{when}: key {key} is gone (last acknowledged: {a:?})");
        let kv = &r.kvs[0];
        let value = String::from_utf8_lossy(&kv.value).into_owned();
        if kv.mod_revision == a.rev {
            assert_eq!(
                value, a.value,
                "{when}: value of {key} at its last acknowledged revision"
            );
        } else {
            assert!(
                kv.mod_revision > a.rev && h.unacked.contains(&(key.to_string(), value.clone())),
                "{when}: {key} is {value:?} at revision {}, but its last acknowledged put is {a:?} \
                 and no unacknowledged put of that value was made",
                kv.mod_revision
            );
        }
    }
}

/// Runs the writers until `kill_after` puts are acknowledged, then SIGKILLs the server
/// while they are still writing; returns what the writers saw.
async fn load_and_kill(server: Server, cycle: usize, kill_after: usize) -> Vec<WriterLog> {
    let acked = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let c = connect(&server).await;
        handles.push(tokio::spawn(writer(c, cycle, w, acked.clone())));
    }
    let deadline = Instant::now() + DEADLINE;
    while acked.load(Ordering::Relaxed) < kill_after {
        if Instant::now() >= deadline || handles.iter().all(|h| h.is_finished()) {
            panic!(
                "cycle {cycle}: only {} puts acknowledged (waiting for {kill_after}); log:\n{}",
                acked.load(Ordering::Relaxed),
                server.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        handles.iter().all(|h| !h.is_finished()),
        "cycle {cycle}: a writer stopped before the kill"
    );
    server.kill(); // SIGKILL, then reaped
    let mut logs = Vec::new();
    for h in handles {
        let log = tokio::time::timeout(DEADLINE, h)
            .await
            .unwrap_or_else(|_| panic!("cycle {cycle}: a writer did not stop after the kill"))
            .expect("writer task");
        logs.push(log);
    }
    logs
}

fn record(h: &mut History, logs: Vec<WriterLog>, cycle: usize) {
    for (w, log) in logs.into_iter().enumerate() {
        for pair in log.acks.windows(2) {
            assert!(
                pair[1].rev > pair[0].rev,
                "cycle {cycle}: writer {w}'s sequential puts got revisions {} then {}",
                pair[0].rev,
                pair[1].rev
            );
        }
        h.acks.extend(log.acks);
        h.unacked.extend(log.unacked);
    }
    let mut seen = HashMap::new();
    for a in &h.acks {
        if let Some(other) = seen.insert(a.rev, a) {
            panic!("two acknowledged puts share revision {}: {other:?} and {a:?}", a.rev);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_puts_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let start = |d: &Path, l: &Path| {
        let (d, l) = (d.to_path_buf(), l.to_path_buf());
        tokio::task::spawn_blocking(move || Server::start(&d, &l))
    };

    let mut h = History::default();
    let mut server = start(&data, &log).await.expect("start");
    for (cycle, &kill_after) in KILL_AFTER_ACKS.iter().enumerate() {
        let logs = load_and_kill(server, cycle, kill_after).await;
        let before = h.acks.len();
        record(&mut h, logs, cycle);
        assert!(
            h.acks.len() - before >= kill_after,
            "cycle {cycle}: the writers saw fewer acknowledgements than counted"
        );

        server = start(&data, &log).await.expect("restart");
        let mut c = connect(&server).await;
        let when = format!("after kill {}", cycle + 1);
        verify(&mut c, &h, &when).await;
        println!(
            "{when}: {} puts acknowledged in this cycle, {} in all (highest revision {}), {} unanswered; \
             restarted at revision {}",
            h.acks.len() - before,
            h.acks.len(),
            h.max_rev(),
            h.unacked.len(),
            header_revision(&mut c).await
        );

        // A new write goes above everything the store had, acknowledged or not.
        let head = header_revision(&mut c).await;
        let key = format!("crash/after-restart-{cycle}");
        let rev = put(&mut c, &key, "fresh").await.expect("put after restart");
        assert!(
            rev > head && rev > h.max_rev(),
            "{when}: put after restart got revision {rev}; store was at {head}, highest acknowledged {}",
            h.max_rev()
        );
        h.add(Ack {
            key,
            value: "fresh".into(),
            rev,
        });
    }
    // The last restart's put, and everything else, once more after a clean check.
    let mut c = connect(&server).await;
    verify(&mut c, &h, "at the end").await;
    drop(server);
}

/// `GET path` at `addr` over HTTP/1.1: (head, body), or what went wrong.
async fn http_get_path(addr: std::net::SocketAddr, path: &str) -> Result<(String, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut response = String::new();
        s.read_to_string(&mut response).await.map_err(|e| e.to_string())?;
        response
            .split_once("\r\n\r\n")
            .map(|(h, b)| (h.to_owned(), b.to_owned()))
            .ok_or_else(|| format!("not an HTTP response: {response:?}"))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// The value of the unlabelled sample `name` in a Prometheus text exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `--listen-metrics-urls`: the store's metrics under etcd's names, in the Prometheus
/// text format, and etcd's /health, from a real `capstan store` that has taken writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_under_etcd_names() {
    use capstan_proto::etcdserverpb::lease_client::LeaseClient;
    use capstan_proto::etcdserverpb::LeaseGrantRequest;
    let dir = tempfile::tempdir().expect("temp dir");
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port()).parse().expect("addr");
    let (data, log) = (dir.path().join("data"), dir.path().join("server.log"));
    let url = format!("http://{metrics_addr}");
    let server =
        tokio::task::spawn_blocking(move || Server::start_with(&data, &log, &["--listen-metrics-urls", url.as_str()]))
            .await
            .expect("start");
    let mut c = connect(&server).await;
    for i in 0..20 {
        put(&mut c, &format!("metrics/k{i}"), "v").await.expect("put");
    }
    let channel = Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    LeaseClient::new(channel)
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("lease grant");

    // The values are read at scrape or counted as the member goes: wait for them all.
    let (head, text) = common::eventually("the metrics after 20 puts", DEADLINE, || async {
        let (head, text) = http_get_path(metrics_addr, "/metrics").await.ok()?;
        let at_least = |name: &str, v: f64| sample(&text, name).is_some_and(|x| x >= v);
        let ready = sample(&text, "etcd_server_has_leader") == Some(1.0)
            && sample(&text, "etcd_server_is_leader") == Some(1.0)
            && at_least("etcd_server_proposals_committed_total", 21.0)
            && at_least("etcd_server_proposals_applied_total", 21.0)
            && at_least("etcd_disk_wal_fsync_duration_seconds_count", 1.0)
            && at_least("etcd_mvcc_db_total_size_in_bytes", 1.0)
            && at_least("etcd_debugging_lease_granted_total", 1.0)
            && at_least("capstan_lease_live", 1.0);
        ready.then_some((head, text))
    })
    .await;
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(
        text.contains("# TYPE etcd_disk_wal_fsync_duration_seconds histogram"),
        "{text}"
    );
    assert!(at_least_once(&text, "etcd_server_leader_changes_seen_total"), "{text}");
    assert_eq!(sample(&text, "etcd_server_proposals_failed_total"), Some(0.0), "{text}");

    let (head, body) = http_get_path(metrics_addr, "/health").await.expect("GET /health");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, r#"{"health":"true","reason":""}"#);
    drop(server);
}

fn at_least_once(text: &str, name: &str) -> bool {
    sample(text, name).is_some_and(|v| v >= 1.0)
}
