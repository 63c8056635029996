//! A slow disk under the Raft log, through the store's slow-fsync failpoint
//! (`capstan_store::failpoint`, compiled into the dev-profile binary these tests run):
//! with every fsync of the log slowed well below the election timeout, writes get slower
//! but all succeed, and the leader keeps its place and its term.
//!
//! The failpoint is set through the members' environment: `CAPSTAN_FAILPOINT_FSYNC_DELAY_MS`
//! for the whole run, or `CAPSTAN_FAILPOINT_FSYNC_DELAY_FILE`, a file the test writes and
//! removes while the members run. That each put took at least the delay shows the
//! failpoint is on the write path (a lower bound, which a slow machine cannot break); the
//! members' logs show when each saw the file change.
//!
//! Not tested here: a delay past the election timeout on the leader alone (the followers
//! then elect another, as they should; `ClusterConfig::env` is the same for every
//! member, so one member cannot be slowed alone yet), nor the timing of elections.

use std::time::{Duration, Instant};

use capstan_chaos::{capstan_binary, Cluster, ClusterConfig};
use etcd_client::{Client, ConnectOptions};

const FSYNC_DELAY_MS_ENV: &str = "CAPSTAN_FAILPOINT_FSYNC_DELAY_MS";
const FSYNC_DELAY_FILE_ENV: &str = "CAPSTAN_FAILPOINT_FSYNC_DELAY_FILE";
/// What a member logs when the delay file's delay changes (`capstan_store::failpoint::
/// FSYNC_DELAY_CHANGED`), with a `delay_ms=` field.
const FSYNC_DELAY_CHANGED: &str = "fsync delay failpoint changed";

const ELECTION_TIMEOUT_MS: u64 = 1_000;
const HEARTBEAT_MS: u64 = 100;
/// Deadline of one request; far above what a put takes under the delays used here.
const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Deadline for the cluster to agree on a leader, and for members to see a file change.
const WAIT_MS: u64 = 30_000;

fn config(env: Vec<(String, String)>) -> ClusterConfig {
    let binary = capstan_binary().unwrap_or_else(|e| panic!("{e}"));
    let mut config = ClusterConfig::new(3, binary);
    config.election_timeout_ms = ELECTION_TIMEOUT_MS;
    config.heartbeat_interval_ms = HEARTBEAT_MS;
    config.env = env;
    config
}

async fn client(endpoints: Vec<String>) -> Client {
    let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
    let options = ConnectOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(timeout);
    Client::connect(endpoints, Some(options))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

/// (leader ID, Raft term) as every member reports it; panics unless all agree.
async fn agreed_leader_and_term(cluster: &Cluster) -> (u64, u64) {
    let mut seen = Vec::new();
    for endpoint in cluster.endpoints() {
        let mut c = client(vec![endpoint.clone()]).await;
        let status = c.status().await.unwrap_or_else(|e| panic!("status of {endpoint}: {e}"));
        seen.push((endpoint, status.leader(), status.raft_term()));
    }
    let (_, leader, term) = seen[0].clone();
    assert!(
        leader != 0 && seen.iter().all(|(_, l, t)| (*l, *t) == (leader, term)),
        "the members do not agree on leader and term: {seen:?}"
    );
    (leader, term)
}

/// One put, and how long it took; panics (with the members' logs) if it failed.
async fn timed_put(c: &mut Client, key: &str) -> Duration {
    let start = Instant::now();
    c.put(key, "v", None).await.unwrap_or_else(|e| panic!("put {key}: {e}"));
    start.elapsed()
}

/// The delay in the last change of the delay file member `i` logged, if any.
fn last_logged_delay_ms(cluster: &Cluster, i: usize) -> Option<u64> {
    let log = cluster.member_log_tail(i, 100_000);
    let line = log.lines().rev().find(|l| l.contains(FSYNC_DELAY_CHANGED))?;
    let digits: String = line
        .split("delay_ms=")
        .nth(1)?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Puts until every member logged that the delay file now says `delay_ms` (members read
/// the file at their synced writes, which puts cause).
async fn put_until_every_member_logged(cluster: &Cluster, c: &mut Client, delay_ms: u64, key: &str) {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    let mut n = 0;
    loop {
        let seen: Vec<Option<u64>> = (0..cluster.len()).map(|i| last_logged_delay_ms(cluster, i)).collect();
        if seen.iter().all(|d| *d == Some(delay_ms)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "within {WAIT_MS} ms, not every member logged a delay of {delay_ms} ms: {seen:?}"
        );
        timed_put(c, &format!("{key}/{n}")).await;
        n += 1;
    }
}

/// Writes the delay file as a harness should: another file renamed over it.
fn write_delay_file(path: &std::path::Path, delay_ms: u64) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{delay_ms}\n")).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_fsync_below_the_election_timeout_keeps_the_leader() {
    const DELAY_MS: u64 = 100;
    const SEQUENTIAL: usize = 40;
    const WRITERS: usize = 4;
    const PUTS_PER_WRITER: usize = 10;
    let cluster = Cluster::start(config(vec![(FSYNC_DELAY_MS_ENV.into(), DELAY_MS.to_string())]))
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..cluster.len() {
        let log = cluster.member_log_tail(i, 100_000);
        assert!(
            log.contains(&format!("failpoint {FSYNC_DELAY_MS_ENV} active")),
            "member {i} did not log the active failpoint (a release binary?):\n{log}"
        );
    }
    cluster.leader(WAIT_MS).await.unwrap_or_else(|e| panic!("{e}"));
    let (leader, term) = agreed_leader_and_term(&cluster).await;
    let delay = Duration::from_millis(DELAY_MS);

    let mut c = client(cluster.endpoints()).await;
    let mut took = Vec::with_capacity(SEQUENTIAL);
    for n in 0..SEQUENTIAL {
        took.push(timed_put(&mut c, &format!("slow/seq/{n}")).await);
    }
    let mut sorted = took.clone();
    sorted.sort_unstable();
    eprintln!(
        "{SEQUENTIAL} sequential puts under a {DELAY_MS} ms fsync delay: min {:?}, median {:?}, max {:?}",
        sorted[0],
        sorted[SEQUENTIAL / 2],
        sorted[SEQUENTIAL - 1]
    );
    let fast: Vec<(usize, Duration)> = took.iter().copied().enumerate().filter(|(_, t)| *t < delay).collect();
    assert!(
        fast.is_empty(),
        "puts faster than the {DELAY_MS} ms fsync delay: {fast:?}"
    );

    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let mut c = c.clone();
        writers.spawn(async move {
            let mut took = Vec::with_capacity(PUTS_PER_WRITER);
            for n in 0..PUTS_PER_WRITER {
                took.push(timed_put(&mut c, &format!("slow/w{w}/{n}")).await);
            }
            took
        });
    }
    let mut concurrent = Vec::new();
    while let Some(joined) = writers.join_next().await {
        concurrent.extend(joined.unwrap_or_else(|e| panic!("a writer failed: {e}")));
    }
    assert_eq!(concurrent.len(), WRITERS * PUTS_PER_WRITER);
    assert!(
        concurrent.iter().all(|t| *t >= delay),
        "concurrent puts faster than the delay: {concurrent:?}"
    );

    assert_eq!(
        agreed_leader_and_term(&cluster).await,
        (leader, term),
        "the leader or the term changed under a {DELAY_MS} ms fsync (election timeout \
         {ELECTION_TIMEOUT_MS} ms); sequential puts took {took:?}"
    );
    // Every write is there.
    let all = c
        .get(
            "slow/",
            Some(etcd_client::GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap_or_else(|e| panic!("count: {e}"));
    assert_eq!(all.count(), (SEQUENTIAL + WRITERS * PUTS_PER_WRITER) as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_fsync_switched_on_and_off_at_run_time() {
    const DELAY_MS: u64 = 200;
    const PUTS: usize = 10;
    let files = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = files.path().join("fsync-delay-ms");
    let cluster = Cluster::start(config(vec![(FSYNC_DELAY_FILE_ENV.into(), path.display().to_string())]))
        .unwrap_or_else(|e| panic!("{e}"));
    cluster.leader(WAIT_MS).await.unwrap_or_else(|e| panic!("{e}"));
    let (leader, term) = agreed_leader_and_term(&cluster).await;
    let mut c = client(cluster.endpoints()).await;
    assert!(
        (0..cluster.len()).all(|i| last_logged_delay_ms(&cluster, i).is_none()),
        "a delay changed before the file was written"
    );

    // On: once every member has read the file, each put waits for it.
    write_delay_file(&path, DELAY_MS);
    put_until_every_member_logged(&cluster, &mut c, DELAY_MS, "file/on").await;
    let delay = Duration::from_millis(DELAY_MS);
    for n in 0..PUTS {
        let took = timed_put(&mut c, &format!("file/slow/{n}")).await;
        assert!(took >= delay, "put {n} took {took:?}, under the {DELAY_MS} ms delay");
    }

    // Off: the file removed, every member goes back to no delay.
    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    put_until_every_member_logged(&cluster, &mut c, 0, "file/off").await;
    for n in 0..PUTS {
        timed_put(&mut c, &format!("file/fast/{n}")).await;
    }

    assert_eq!(
        agreed_leader_and_term(&cluster).await,
        (leader, term),
        "the leader or the term changed while the disk was slowed and healed"
    );
}

#[test]
fn an_invalid_failpoint_setting_stops_the_member_at_start() {
    let binary = capstan_binary().unwrap_or_else(|e| panic!("{e}"));
    let mut config = ClusterConfig::new(1, binary);
    config.env = vec![(FSYNC_DELAY_MS_ENV.into(), "soon".into())];
    match Cluster::start(config) {
        Ok(_) => panic!("a member with an unparsable fsync delay started"),
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("exited before it was ready"), "{message}");
            assert!(
                message.contains(FSYNC_DELAY_MS_ENV) && message.contains("soon"),
                "the member's log names the variable and its value: {message}"
            );
        }
    }
}
