//! The watch workload and its checker.
//!
//! - Checker tests on hand-made histories over one small log: a correct history is
//!   accepted; a gap, a duplicate, a reorder (across and within a revision), a revision
//!   split over two responses, an altered value, an invented event, a resume that skips
//!   or starts at the wrong revision, a missing tail after a drain, a compacted watch and
//!   a lost acknowledged write are each rejected, naming the guarantee and the revision.
//! - End to end on the real binary (`$CAPSTAN_BIN` or `target/debug/capstan`): three
//!   members, two watchers on each, the transaction writer; the leader is killed and
//!   restarted, then another member paused and resumed; every watcher is drained to a
//!   final marker revision and checked against the log read from a third member.

use std::time::{Duration, Instant};

use capstan_chaos::watch::{
    check_acknowledged, check_watches, read_event_log, run_txn_writer, run_watchers, Event, EventKind, Guarantee,
    LiveSnapshot, Received, RunControl, Session, SessionEnd, TxnRecord, TxnWriterConfig, WatchConfig, WatcherHistory,
    Write,
};
use capstan_chaos::{capstan_binary, Cluster, ClusterConfig};
use etcd_client::{Client, ConnectOptions};

// ---------------------------------------------------------------------------------------
// Hand-made histories
// ---------------------------------------------------------------------------------------

/// The log every hand-made history is checked against: revisions 2 and 5 hold several
/// events (transactions), 4 a delete and a put.
fn log() -> Vec<Event> {
    vec![
        Event::put(2, "a", "a1"),
        Event::put(2, "b", "b1"),
        Event::put(3, "c", "c1"),
        Event::delete(4, "a"),
        Event::put(4, "b", "b2"),
        Event::put(5, "a", "a3"),
        Event::put(5, "c", "c2"),
        Event::put(5, "d", "d1"),
        Event::put(6, "d", "d2"),
    ]
}

/// The log's events at `revision`, in its order.
fn rev(revision: i64) -> Vec<Event> {
    log().into_iter().filter(|e| e.revision == revision).collect()
}

/// Builds a watcher's record response by response, session by session.
struct Build {
    w: WatcherHistory,
}

impl Build {
    /// A watcher whose first session starts at `start`.
    fn new(start: i64) -> Build {
        let mut w = WatcherHistory::new(0, "http://127.0.0.1:1", start);
        w.sessions.push(session(start, 0));
        Build { w }
    }

    /// One response carrying `events`.
    fn response(mut self, events: Vec<Event>) -> Build {
        let response = self.w.responses;
        self.w.responses += 1;
        self.w
            .events
            .extend(events.into_iter().map(|event| Received { event, response }));
        self
    }

    /// The current session is lost; a new one starts at `start`.
    fn reconnect(mut self, start: i64) -> Build {
        let last = self.w.sessions.last_mut().expect("a session");
        last.end = SessionEnd::Error("connection reset".into());
        self.w.sessions.push(session(start, self.w.events.len()));
        self
    }

    fn drained(mut self, revision: i64) -> Build {
        self.w.drained_to = Some(revision);
        self
    }

    fn build(self) -> WatcherHistory {
        self.w
    }
}

fn session(start_revision: i64, first_event: usize) -> Session {
    Session {
        start_revision,
        first_event,
        started_ns: 0,
        ended_ns: 0,
        end: SessionEnd::Stopped,
    }
}

/// The correct history: every revision in its own response, a disconnect after revision
/// 3 resumed at 4, drained to 6.
fn correct() -> Build {
    Build::new(1)
        .response(rev(2))
        .response(rev(3))
        .reconnect(4)
        .response(rev(4))
        .response(rev(5))
        .response(rev(6))
        .drained(6)
}

/// Checks one watcher; asserts `guarantee` is violated at `revision` and returns the
/// violation's text.
fn rejected(w: WatcherHistory, guarantee: Guarantee, revision: i64) -> String {
    let verdict = check_watches(&log(), &[w]);
    assert!(!verdict.ok(), "accepted:\n{verdict}");
    let v = verdict.watchers[0]
        .violation(guarantee)
        .unwrap_or_else(|| panic!("{} not reported:\n{verdict}", guarantee.name()));
    assert_eq!(v.revision, revision, "{v}");
    assert!(verdict.to_string().contains("VIOLATED"), "{verdict}");
    v.to_string()
}

#[test]
fn a_correct_history_is_accepted() {
    let w = correct().build();
    assert_eq!(w.disconnects(), 1);
    assert_eq!(w.events_after_last_disconnect(), 6);
    let verdict = check_watches(&log(), &[w]);
    assert!(verdict.ok(), "{verdict}");
    assert_eq!(verdict.watchers[0].events, 9);
    assert!(verdict.to_string().contains("drained to 6"), "{verdict}");
    // Several revisions in one response are fine too (etcd batches a catch-up).
    let mut batched = rev(2);
    batched.extend(rev(3));
    batched.extend(rev(4));
    let w = Build::new(2)
        .response(batched)
        .response(rev(5))
        .response(rev(6))
        .build();
    assert!(check_watches(&log(), &[w]).ok());
    // A watcher that started later, or was not drained, owes nothing before or after.
    let w = Build::new(4).response(rev(4)).response(rev(5)).build();
    assert!(check_watches(&log(), &[w]).ok());
}

#[test]
fn a_gap_is_rejected() {
    let w = Build::new(1)
        .response(rev(2))
        .response(rev(4))
        .response(rev(5))
        .response(rev(6))
        .drained(6)
        .build();
    let text = rejected(w, Guarantee::Reliable, 3);
    assert!(text.contains("put c=c1 @3"), "{text}");
}

#[test]
fn a_missing_tail_after_a_drain_is_rejected() {
    let w = Build::new(1)
        .response(rev(2))
        .response(rev(3))
        .response(rev(4))
        .response(rev(5))
        .drained(6)
        .build();
    rejected(w, Guarantee::Reliable, 6);
    // Not drained: the watcher only owes what lies between its start and its last event.
    let w = Build::new(1).response(rev(2)).response(rev(3)).build();
    assert!(check_watches(&log(), &[w]).ok());
}

#[test]
fn a_duplicate_is_rejected() {
    // Revision 3 delivered again in the next response.
    let w = Build::new(1)
        .response(rev(2))
        .response(rev(3))
        .response(rev(3))
        .response(rev(4))
        .build();
    rejected(w, Guarantee::Unique, 3);
    // A resume from before the last event seen delivers it twice.
    let w = Build::new(1)
        .response(rev(2))
        .response(rev(3))
        .reconnect(3)
        .response(rev(3))
        .build();
    rejected(w.clone(), Guarantee::Unique, 3);
    rejected(w, Guarantee::Resumable, 3);
}

#[test]
fn a_reorder_is_rejected() {
    // Revisions backwards.
    let w = Build::new(1)
        .response(rev(2))
        .response(rev(4))
        .response(rev(3))
        .response(rev(5))
        .build();
    let text = rejected(w, Guarantee::Ordered, 3);
    assert!(
        text.contains("after delete a @4") || text.contains("after put b=b2 @4"),
        "{text}"
    );
    // Within a revision, not in the log's order.
    let mut swapped = rev(5);
    swapped.swap(0, 2);
    let w = Build::new(5).response(swapped).build();
    let verdict = check_watches(&log(), std::slice::from_ref(&w));
    rejected(w, Guarantee::Ordered, 5);
    assert!(verdict.watchers[0].violation(Guarantee::Atomic).is_none(), "{verdict}");
}

#[test]
fn a_revision_split_across_two_responses_is_rejected() {
    let five = rev(5);
    let w = Build::new(1)
        .response(rev(2))
        .response(rev(3))
        .response(rev(4))
        .response(five[..1].to_vec())
        .response(five[1..].to_vec())
        .response(rev(6))
        .drained(6)
        .build();
    let verdict = check_watches(&log(), std::slice::from_ref(&w));
    let text = rejected(w, Guarantee::Atomic, 5);
    assert!(text.contains("response 3"), "{text}");
    // Every event arrived, once, in order: only atomicity is broken.
    assert_eq!(verdict.watchers[0].violations.len(), 1, "{verdict}");
    // Part of a revision in one response and the rest never: atomic and reliable.
    let w = Build::new(1)
        .response(rev(2))
        .response(rev(3))
        .response(rev(4))
        .response(five[..2].to_vec())
        .response(rev(6))
        .build();
    let text = rejected(w.clone(), Guarantee::Atomic, 5);
    assert!(text.contains("put d=d1 @5"), "{text}");
    rejected(w, Guarantee::Reliable, 5);
}

#[test]
fn an_altered_or_invented_event_is_rejected() {
    let mut three = rev(3);
    three[0].value = b"c-altered".to_vec();
    let w = Build::new(3).response(three).response(rev(4)).build();
    let text = rejected(w, Guarantee::Valid, 3);
    assert!(
        text.contains("expected put c=c1 @3") && text.contains("c-altered"),
        "{text}"
    );
    // A delete reported as a put.
    let mut four = rev(4);
    four[0].kind = EventKind::Put;
    let w = Build::new(4).response(four).build();
    rejected(w, Guarantee::Valid, 4);
    // An event the log does not have at all.
    let w = Build::new(6)
        .response(rev(6))
        .response(vec![Event::put(7, "e", "e1")])
        .build();
    let text = rejected(w, Guarantee::Valid, 7);
    assert!(text.contains("nothing at revision 7"), "{text}");
}

#[test]
fn a_resume_that_skips_is_rejected() {
    // Disconnected after 3, resumed at 4, but the first event is revision 5.
    let w = Build::new(1)
        .response(rev(2))
        .response(rev(3))
        .reconnect(4)
        .response(rev(5))
        .response(rev(6))
        .build();
    let text = rejected(w.clone(), Guarantee::Resumable, 5);
    assert!(text.contains("session 1") && text.contains("delete a @4"), "{text}");
    rejected(w, Guarantee::Reliable, 4);
    // Resumed at the wrong revision (5, after 3).
    let w = Build::new(1)
        .response(rev(2))
        .response(rev(3))
        .reconnect(5)
        .response(rev(5))
        .build();
    rejected(w, Guarantee::Resumable, 5);
    // The first session's first event must be the log's first at the start revision.
    let w = Build::new(1).response(rev(3)).build();
    rejected(w, Guarantee::Resumable, 3);
}

#[test]
fn a_compacted_watch_is_reported() {
    let mut w = Build::new(1).response(rev(2)).reconnect(3).build();
    w.sessions.last_mut().expect("a session").end = SessionEnd::Compacted {
        compact_revision: 4,
        reason: "required revision has been compacted".into(),
    };
    let text = rejected(w, Guarantee::Reliable, 3);
    assert!(text.contains("compact revision 4"), "{text}");
}

#[test]
fn an_invalid_log_is_refused() {
    let mut bad = log();
    bad.swap(2, 3);
    let verdict = check_watches(&bad, &[correct().build()]);
    assert!(!verdict.ok());
    assert!(verdict.log_problem.is_some(), "{verdict}");
}

fn txn(n: usize, revision: i64, writes: &[(&str, &str)]) -> TxnRecord {
    TxnRecord {
        n,
        endpoint: "http://127.0.0.1:1".into(),
        revision,
        writes: writes
            .iter()
            .map(|(k, v)| Write {
                key: k.as_bytes().to_vec(),
                value: v.as_bytes().to_vec(),
                kind: EventKind::Put,
            })
            .collect(),
        call_ns: 0,
        return_ns: 0,
    }
}

#[test]
fn a_lost_acknowledged_write_is_rejected() {
    let delete_and_put = TxnRecord {
        writes: vec![
            Write {
                key: b"a".to_vec(),
                value: Vec::new(),
                kind: EventKind::Delete,
            },
            Write {
                key: b"b".to_vec(),
                value: b"b2".to_vec(),
                kind: EventKind::Put,
            },
        ],
        ..txn(2, 4, &[])
    };
    let good = vec![
        txn(0, 2, &[("a", "a1"), ("b", "b1")]),
        txn(1, 3, &[("c", "c1")]),
        delete_and_put,
        txn(3, 5, &[("a", "a3"), ("c", "c2"), ("d", "d1")]),
    ];
    let verdict = check_acknowledged(&log(), &good);
    assert!(verdict.ok(), "{verdict:?}");
    assert_eq!((verdict.txns_checked, verdict.writes_checked), (4, 8));

    // Acknowledged at 6, but the log has another value there.
    let mut lost = good.clone();
    lost.push(txn(4, 6, &[("d", "d-lost")]));
    let verdict = check_acknowledged(&log(), &lost);
    assert_eq!(verdict.problem_count, 1, "{verdict:?}");
    assert!(
        verdict.problems[0].contains("lost") && verdict.problems[0].contains("d-lost"),
        "{verdict:?}"
    );
    // Acknowledged at a revision the log does not have.
    let verdict = check_acknowledged(&log(), &[txn(5, 9, &[("e", "e1")])]);
    assert!(
        !verdict.ok() && verdict.problems[0].contains("nothing at revision 9"),
        "{verdict:?}"
    );
    // Part of a transaction: the log's revision 5 holds more than what was acknowledged.
    let verdict = check_acknowledged(&log(), &[txn(3, 5, &[("a", "a3"), ("c", "c2")])]);
    assert!(
        !verdict.ok() && verdict.problems[0].contains("holds 3 events"),
        "{verdict:?}"
    );
}

// ---------------------------------------------------------------------------------------
// End to end
// ---------------------------------------------------------------------------------------

const PREFIX: &str = "/chaos-watch/";

/// Polls `condition` on the two controls' live counters until it holds, or panics after
/// `deadline_ms` with `what` and the last counters.
async fn wait_until(
    what: &str,
    deadline_ms: u64,
    watch: &RunControl,
    writer: &RunControl,
    condition: impl Fn(&LiveSnapshot, &LiveSnapshot) -> bool,
) {
    let deadline = Instant::now() + Duration::from_millis(deadline_ms);
    loop {
        let (w, t) = (watch.live(), writer.live());
        if condition(&w, &t) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not within {deadline_ms} ms: {what}\nwatchers: {:#?}\nwriter: {} acknowledged, {} unknown, last revision {}",
            w.watchers,
            t.acknowledged_txns,
            t.unknown_txns,
            t.last_acknowledged_revision
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Indices of the watchers of `endpoint` in a live snapshot.
fn of<'a>(live: &'a LiveSnapshot, endpoint: &'a str) -> impl Iterator<Item = &'a capstan_chaos::watch::LiveWatcher> {
    live.watchers.iter().filter(move |w| w.endpoint == endpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_through_a_kill_and_a_pause_see_every_event_once_in_order() {
    let started = Instant::now();
    let binary = capstan_binary().unwrap_or_else(|e| panic!("{e}"));
    let mut cluster = Cluster::start(ClusterConfig::new(3, binary)).unwrap_or_else(|e| panic!("{e}"));
    let leader = cluster.leader(20_000).await.unwrap_or_else(|e| panic!("{e}"));
    let endpoints = cluster.endpoints();
    let killed = leader;
    let paused = (leader + 1) % 3;
    let healthy = (leader + 2) % 3;

    let (watch, watch_signal) = RunControl::new();
    let watch_config = WatchConfig {
        prefix: PREFIX.into(),
        watchers_per_endpoint: 2,
        start_revision: 1,
        seed: 11,
        ..WatchConfig::default()
    };
    let watchers = tokio::spawn(run_watchers(endpoints.clone(), watch_config, watch_signal));
    let (writer, writer_signal) = RunControl::new();
    let writer_config = TxnWriterConfig {
        prefix: PREFIX.into(),
        keys: 8,
        seed: 5,
        interval_ms: 5,
        ..TxnWriterConfig::default()
    };
    let writes = tokio::spawn(run_txn_writer(endpoints.clone(), writer_config, writer_signal));

    wait_until(
        "writes flow and every watcher sees them",
        20_000,
        &watch,
        &writer,
        |w, t| t.acknowledged_txns >= 30 && w.watchers.len() == 6 && w.watchers.iter().all(|x| x.events > 0),
    )
    .await;

    // Kill the leader: its watchers lose their streams; the others go on.
    let acked = writer.live().acknowledged_txns;
    tokio::task::block_in_place(|| cluster.kill(killed)).unwrap_or_else(|e| panic!("{e}"));
    let killed_endpoint = endpoints[killed].as_str();
    wait_until(
        "the killed member's watchers noticed and writes go on",
        20_000,
        &watch,
        &writer,
        |w, t| of(w, killed_endpoint).all(|x| x.disconnects > 0) && t.acknowledged_txns >= acked + 60,
    )
    .await;
    tokio::task::block_in_place(|| cluster.restart(killed)).unwrap_or_else(|e| panic!("{e}"));
    let target = writer.live().last_acknowledged_revision;
    wait_until(
        "the restarted member's watchers resumed and caught up",
        30_000,
        &watch,
        &writer,
        |w, _| of(w, killed_endpoint).all(|x| x.connected && x.last_revision >= target),
    )
    .await;

    // Pause another member: its watchers see nothing, detect the stall, and resume after.
    let acked = writer.live().acknowledged_txns;
    let paused_endpoint = endpoints[paused].as_str();
    let disconnects_before: Vec<u64> = of(&watch.live(), paused_endpoint).map(|x| x.disconnects).collect();
    cluster.pause(paused).unwrap_or_else(|e| panic!("{e}"));
    wait_until(
        "the paused member's watchers gave up on their streams and writes go on",
        30_000,
        &watch,
        &writer,
        |w, t| {
            of(w, paused_endpoint)
                .zip(&disconnects_before)
                .all(|(x, before)| x.disconnects > *before)
                && t.acknowledged_txns >= acked + 60
        },
    )
    .await;
    cluster.resume(paused).unwrap_or_else(|e| panic!("{e}"));
    let target = writer.live().last_acknowledged_revision;
    wait_until(
        "the resumed member's watchers caught up",
        30_000,
        &watch,
        &writer,
        |w, _| of(w, paused_endpoint).all(|x| x.connected && x.last_revision >= target),
    )
    .await;

    // Stop writing, write a marker, drain every watcher to it.
    writer.stop();
    let txns = writes.await.expect("the writer task").unwrap_or_else(|e| panic!("{e}"));
    let options = ConnectOptions::new()
        .with_timeout(Duration::from_secs(5))
        .with_connect_timeout(Duration::from_secs(5));
    let mut client = Client::connect([endpoints[healthy].as_str()], Some(options))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let marker = client
        .put(format!("{PREFIX}end"), "end", None)
        .await
        .unwrap_or_else(|e| panic!("the marker put: {e}"));
    let final_revision = marker.header().expect("a header").revision();
    watch.drain(final_revision, 30_000);
    let history = watchers
        .await
        .expect("the watchers' task")
        .unwrap_or_else(|e| panic!("{e}"));
    let log = read_event_log(&endpoints[healthy], PREFIX, 1, final_revision, 1_000_000, 20_000)
        .await
        .unwrap_or_else(|e| panic!("reading the final log: {e}"));

    // The run did what it is meant to exercise.
    let multi_event_revisions = log.windows(2).filter(|p| p[0].revision == p[1].revision).count();
    let deletes = log.iter().filter(|e| e.kind == EventKind::Delete).count();
    eprintln!(
        "final revision {final_revision}: {} events in the log ({multi_event_revisions} shared revisions, {deletes} deletes); \
         {} transactions acknowledged, {} unknown",
        log.len(),
        txns.acknowledged.len(),
        txns.unknown.len()
    );
    assert_eq!(
        log.last().map(|e| (e.revision, e.key.clone())),
        Some((final_revision, format!("{PREFIX}end").into_bytes()))
    );
    assert!(
        txns.acknowledged.len() >= 90,
        "{} transactions",
        txns.acknowledged.len()
    );
    assert!(multi_event_revisions > 100 && deletes > 0);

    let verdict = check_watches(&log, &history.watchers);
    eprintln!("{verdict}");
    assert!(verdict.ok(), "{verdict}\n{}", cluster.log_tails(20));
    let acks = check_acknowledged(&log, &txns.acknowledged);
    assert!(acks.ok(), "{acks:#?}");
    assert_eq!(acks.txns_checked, txns.acknowledged.len());

    assert_eq!(history.watchers.len(), 6);
    for w in &history.watchers {
        assert_eq!(
            w.drained_to,
            Some(final_revision),
            "watcher {} ({}) did not drain",
            w.watcher,
            w.endpoint
        );
        assert_eq!(w.events.len(), log.len(), "watcher {}", w.watcher);
        assert!(!w.truncated);
    }
    for w in history.of_endpoint(killed_endpoint) {
        assert!(
            w.disconnects() > 0,
            "watcher {} of the killed member: {:?}",
            w.watcher,
            w.sessions
        );
        assert!(w.events_after_last_disconnect() > 0, "watcher {}", w.watcher);
        assert!(
            w.connect_failures > 0,
            "watcher {} reconnected to a dead member at once",
            w.watcher
        );
    }
    for w in history.of_endpoint(paused_endpoint) {
        assert!(
            w.sessions.iter().any(|s| s.end == SessionEnd::Stalled),
            "watcher {} of the paused member saw no stall: {:?}",
            w.watcher,
            w.sessions
        );
        assert!(w.events_after_last_disconnect() > 0, "watcher {}", w.watcher);
    }

    // The checker finds a gap and a reorder planted in this real history.
    let mut gap = history.watchers[0].clone();
    let removed = gap.events.remove(gap.events.len() / 2);
    let verdict = check_watches(&log, &[gap]);
    assert_eq!(
        verdict.watchers[0].violation(Guarantee::Reliable).map(|v| v.revision),
        Some(removed.event.revision),
        "{verdict}"
    );
    let mut reordered = history.watchers[1].clone();
    let i = reordered
        .events
        .windows(2)
        .position(|p| p[0].event.revision < p[1].event.revision)
        .expect("two revisions");
    reordered.events.swap(i, i + 1);
    assert!(check_watches(&log, &[reordered]).violated(Guarantee::Ordered));
    eprintln!("took {:?}", started.elapsed());
}

/// A watch may ask for a revision its member has not reached yet: a client resuming on a
/// member that is behind (one replaying its log after a restart, or another endpoint).
/// etcd then starts it at that revision; the events before it must not come (they did,
/// until the watch hub skipped batches below a watch's start revision).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_revision_ahead_of_the_member_starts_there() {
    let binary = capstan_binary().unwrap_or_else(|e| panic!("{e}"));
    let cluster = Cluster::start(ClusterConfig::new(1, binary)).unwrap_or_else(|e| panic!("{e}"));
    cluster.leader(10_000).await.unwrap_or_else(|e| panic!("{e}"));
    let endpoints = cluster.endpoints();
    let mut client = Client::connect(&endpoints, None)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let key = format!("{PREFIX}x");
    let put = |client: &mut Client, value: String| {
        let mut client = client.clone();
        let key = key.clone();
        async move {
            let response = client
                .put(key, value, None)
                .await
                .unwrap_or_else(|e| panic!("put: {e}"));
            response.header().expect("a header").revision()
        }
    };
    let now = put(&mut client, "0".into()).await;
    let (watch, signal) = RunControl::new();
    let config = WatchConfig {
        prefix: PREFIX.into(),
        start_revision: now + 3,
        ..WatchConfig::default()
    };
    let watchers = tokio::spawn(run_watchers(endpoints.clone(), config, signal));
    let (writer, _unused) = RunControl::new();
    wait_until("the watch is open", 10_000, &watch, &writer, |w, _| {
        w.watchers.len() == 1 && w.watchers.iter().all(|x| x.connected)
    })
    .await;
    let mut last = now;
    for i in 1..=4 {
        last = put(&mut client, i.to_string()).await;
    }
    watch.drain(last, 10_000);
    let history = watchers
        .await
        .expect("the watchers' task")
        .unwrap_or_else(|e| panic!("{e}"));
    let log = read_event_log(&endpoints[0], PREFIX, 1, last, 1_000, 10_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let verdict = check_watches(&log, &history.watchers);
    assert!(verdict.ok(), "{verdict}");
    assert_eq!(history.watchers[0].events.len(), 2, "{verdict}");
}
