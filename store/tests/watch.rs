//! Watch tests over real gRPC: ordering and completeness under concurrent writers, many
//! watchers per stream and across streams, a stalled client, resuming from a revision,
//! compaction of a lagging watcher, and progress notifications.

mod common;

use bytes::Bytes;
use capstan_proto::etcdserverpb::{
    watch_request, CompactionRequest, PutRequest, RangeRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use capstan_proto::mvccpb::event::EventType;
use common::*;

/// Collects (revision, key, type) of events from a stream until `n` events arrived,
/// checking that revisions strictly increase between responses.
async fn collect(ws: &mut WatchStream, id: i64, n: usize) -> Vec<(i64, String, i32)> {
    let mut out = Vec::new();
    let mut last_rev = 0;
    while out.len() < n {
        let r = ws.next().await;
        if r.watch_id != id || r.events.is_empty() {
            continue;
        }
        let rev = r.header.as_ref().expect("header").revision;
        assert!(
            rev > last_rev,
            "revision {rev} after {last_rev}: out of order or duplicated"
        );
        last_rev = rev;
        for e in &r.events {
            let kv = e.kv.as_ref().expect("kv");
            assert_eq!(
                kv.mod_revision, rev,
                "every event of a response belongs to its revision"
            );
            out.push((kv.mod_revision, String::from_utf8_lossy(&kv.key).into_owned(), e.r#type));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_and_complete_with_concurrent_writers() {
    let s = start().await;
    let mut ws = WatchStream::open(&s).await;
    let all = ws.create(watch_req("w/", &prefix_end("w/"), 0)).await;
    let writers = 4;
    let per_writer = 150;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut kv = kv(&s).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                put(&mut kv, &format!("w/{w}/{}", i % 10), &format!("{i}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let got = collect(&mut ws, all, writers * per_writer).await;
    // Exactly the history: one event per revision, revisions 2..=N+1 (a new store is at 1), nothing missing.
    let revs: Vec<i64> = got.iter().map(|e| e.0).collect();
    let want: Vec<i64> = (2..=(writers * per_writer) as i64 + 1).collect();
    assert_eq!(revs, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_events_arrive_together() {
    use capstan_proto::etcdserverpb::{request_op, RequestOp, TxnRequest};
    let s = start().await;
    let mut ws = WatchStream::open(&s).await;
    let id = ws.create(watch_req("t/", &prefix_end("t/"), 0)).await;
    let mut kv = kv(&s).await;
    let ops = (0..5)
        .map(|i| RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: Bytes::from(format!("t/{i}")),
                value: Bytes::from("v"),
                ..Default::default()
            })),
        })
        .collect();
    kv.txn(TxnRequest {
        compare: vec![],
        success: ops,
        failure: vec![],
    })
    .await
    .expect("txn");
    let r = loop {
        let r = ws.next().await;
        if r.watch_id == id && !r.events.is_empty() {
            break r;
        }
    };
    assert_eq!(r.events.len(), 5, "all events of one revision in one response");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_watchers_on_one_stream() {
    let s = start().await;
    let mut ws = WatchStream::open(&s).await;
    let n = 10_000;
    // Send every create first, then read the created responses: the stream pipelines.
    for i in 0..n {
        ws.send(watch_req(&format!("k{}", i % 100), "", 0)).await;
    }
    let mut ids = std::collections::HashSet::new();
    while ids.len() < n {
        let r = ws.next().await;
        assert!(r.created && !r.canceled, "{r:?}");
        ids.insert(r.watch_id);
    }
    let mut kv = kv(&s).await;
    for k in 0..100 {
        put(&mut kv, &format!("k{k}"), "x").await;
    }
    let mut seen = std::collections::HashMap::new();
    while seen.len() < n {
        let r = ws.next().await;
        assert_eq!(r.events.len(), 1, "{r:?}");
        assert!(ids.contains(&r.watch_id));
        assert!(
            seen.insert(r.watch_id, r.header.expect("header").revision).is_none(),
            "watcher {} got an event twice",
            r.watch_id
        );
    }
    wait_until("all watchers synced", || s.node.hub.counts() == (n, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_watchers_across_one_hundred_streams() {
    let s = start().await;
    let mut streams = Vec::new();
    for _ in 0..100 {
        let mut ws = WatchStream::open(&s).await;
        for _ in 0..100 {
            ws.create(watch_req("fan/", &prefix_end("fan/"), 0)).await;
        }
        streams.push(ws);
    }
    let mut kv = kv(&s).await;
    let rev = put(&mut kv, "fan/x", "1").await;
    for ws in &mut streams {
        let mut got = std::collections::HashSet::new();
        while got.len() < 100 {
            let r = ws.next().await;
            assert_eq!(r.header.as_ref().expect("header").revision, rev);
            assert!(got.insert(r.watch_id), "duplicate delivery");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_delays_nobody_and_catches_up() {
    // A short ring of recent revisions: most of the catch-up reads history from disk.
    let s = start_with(|c| {
        c.hub.stream_queue_max = 64;
        c.hub.recent_revisions_max = 32;
    })
    .await;
    // The stalled client: its watcher exists, it never reads until the end.
    let mut stalled = WatchStream::open(&s).await;
    let stalled_id = stalled.create(watch_req("s/", &prefix_end("s/"), 0)).await;
    let mut live = WatchStream::open(&s).await;
    let live_id = live.create(watch_req("s/", &prefix_end("s/"), 0)).await;
    // Enough data to fill the stalled stream's queue and its HTTP/2 window many times over.
    let n = 3000;
    let value = "v".repeat(3000);
    let mut kv = kv(&s).await;
    let reader = tokio::spawn(async move {
        let got = collect(&mut live, live_id, n).await;
        (live, got)
    });
    for i in 0..n {
        put(&mut kv, &format!("s/{}", i % 50), &value).await;
    }
    // Every write was acknowledged and the live watcher got every event, while the
    // stalled one has not read anything.
    let (_live, got) = reader.await.expect("live reader");
    assert_eq!(got.len(), n);
    assert!(s.node.hub.counts().1 >= 1, "the stalled watcher is parked");
    // Now it reads: it gets everything, in order, exactly once.
    let got = collect(&mut stalled, stalled_id, n).await;
    let revs: Vec<i64> = got.iter().map(|e| e.0).collect();
    assert_eq!(revs, (2..=n as i64 + 1).collect::<Vec<_>>());
    wait_until("the stalled watcher synced again", || s.node.hub.counts().1 == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_a_revision_with_prev_kv() {
    // The ring of recent revisions holds less than the replay: it comes from disk.
    let s = start_with(|c| c.hub.recent_revisions_max = 4).await;
    let mut kv = kv(&s).await;
    for i in 1..=20 {
        put(&mut kv, &format!("r/{}", i % 3), &format!("{i}")).await;
    }
    kv.delete_range(capstan_proto::etcdserverpb::DeleteRangeRequest {
        key: Bytes::from("r/1"),
        ..Default::default()
    })
    .await
    .expect("delete");
    let mut ws = WatchStream::open(&s).await;
    let mut req = watch_req("r/", &prefix_end("r/"), 11);
    req.prev_kv = true;
    let id = ws.create(req).await;
    let mut events = Vec::new();
    while events.len() < 12 {
        let r = ws.next().await;
        assert_eq!(r.watch_id, id);
        events.extend(r.events);
    }
    let revs: Vec<i64> = events.iter().map(|e| e.kv.as_ref().expect("kv").mod_revision).collect();
    assert_eq!(
        revs,
        (11..=22).collect::<Vec<_>>(),
        "events from the start revision on, inclusive"
    );
    // prev_kv is the version before each event, replayed from disk.
    let e = &events[1]; // revision 12: "r/2" = "11", previously "8" at revision 9
    assert_eq!(
        e.prev_kv.as_ref().map(|p| (p.value.clone(), p.mod_revision)),
        Some((Bytes::from("8"), 9))
    );
    let del = events.last().expect("delete event");
    assert_eq!(del.r#type, EventType::Delete as i32);
    assert_eq!(del.prev_kv.as_ref().map(|p| p.value.clone()), Some(Bytes::from("19")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_cancels_a_lagging_watcher() {
    let s = start_with(|c| c.hub.stream_queue_max = 16).await;
    let mut lagging = WatchStream::open(&s).await;
    let id = lagging.create(watch_req("c/", &prefix_end("c/"), 0)).await;
    let mut kv = kv(&s).await;
    // 8 MB: more than the client's HTTP/2 buffers, so the server's queue fills.
    let value = "v".repeat(4000);
    let n = 2000;
    let mut last = 0;
    for i in 0..n {
        last = put(&mut kv, &format!("c/{}", i % 7), &value).await;
    }
    wait_until("the lagging watcher is parked", || s.node.hub.counts().1 == 1).await;
    kv.compact(CompactionRequest {
        revision: last,
        physical: true,
    })
    .await
    .expect("compact");
    // It reads what was queued, then learns it was canceled, with the compaction revision.
    let mut seen_rev = 0;
    let canceled = loop {
        let r = lagging.next().await;
        if r.canceled {
            break r;
        }
        assert_eq!(r.watch_id, id);
        let rev = r.header.expect("header").revision;
        assert!(rev > seen_rev);
        seen_rev = rev;
    };
    assert_eq!(canceled.watch_id, id);
    assert_eq!(canceled.compact_revision, last);
    assert!(seen_rev < last, "it really lagged");

    // A new watch from a compacted revision is created, then canceled the same way.
    let mut ws = WatchStream::open(&s).await;
    ws.send(watch_req("c/", &prefix_end("c/"), 5)).await;
    let created = ws.next().await;
    assert!(created.created);
    let r = ws.next().await;
    assert!(r.canceled, "{r:?}");
    assert_eq!(r.compact_revision, last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_on_request_and_duplicate_ids() {
    let s = start().await;
    let mut kv = kv(&s).await;
    let rev = put(&mut kv, "p/a", "1").await;
    let mut ws = WatchStream::open(&s).await;
    let mut req = watch_req("p/b", "", 0);
    req.watch_id = 7;
    assert_eq!(ws.create(req.clone()).await, 7, "client-chosen watch ID");
    ws.send(req).await;
    let dup = ws.next().await;
    assert!(dup.created && dup.canceled, "a duplicate ID is refused: {dup:?}");
    ws.tx
        .send(WatchRequest {
            request_union: Some(watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {})),
        })
        .await
        .expect("send");
    let p: WatchResponse = ws.next().await;
    assert_eq!(p.watch_id, -1);
    assert!(p.events.is_empty());
    assert_eq!(p.header.expect("header").revision, rev);
    // The hub's revision is what Range reports too.
    let r = kv
        .range(RangeRequest {
            key: Bytes::from("p/a"),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(r.header.expect("header").revision, rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_progress_for_watchers_that_ask() {
    let s = start_with(|c| c.hub.progress_interval = std::time::Duration::from_millis(50)).await;
    let mut kv = kv(&s).await;
    let rev = put(&mut kv, "q/a", "1").await;
    let mut ws = WatchStream::open(&s).await;
    let quiet = ws.create(watch_req("q/", &prefix_end("q/"), 0)).await;
    let mut req = watch_req("q/", &prefix_end("q/"), 0);
    req.progress_notify = true;
    let asked = ws.create(req).await;
    let r = ws.next().await;
    assert_eq!(
        r.watch_id, asked,
        "only the watcher that asked gets progress notifications"
    );
    assert_ne!(r.watch_id, quiet);
    assert!(r.events.is_empty());
    assert_eq!(r.header.expect("header").revision, rev);
}
