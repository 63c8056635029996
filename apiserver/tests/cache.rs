//! The watch cache over a real single-member store (RocksDB, Raft) in this process:
//! consistent lists see every acknowledged write, watches replay from a resourceVersion,
//! resume without gaps or duplicates, and a watcher that stops reading is dropped
//! without holding anyone up.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use capstan_apiserver::cache::{Initial, Message, WatchCache, WATCHER_QUEUE_MAX, WINDOW_EVENTS_DEFAULT};
use capstan_apiserver::resources::ResourceType;
use capstan_apiserver::Storage;
use capstan_store::{Node, NodeConfig};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);

async fn store(dir: &std::path::Path) -> (Arc<Node>, Storage) {
    let node = Node::start(NodeConfig::new("cache-test", dir.to_path_buf())).expect("start the store");
    let storage = Storage::local(node.clone());
    (node, storage)
}

async fn put(storage: &Storage, rt: &ResourceType, name: &str) -> i64 {
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns"}});
    let key = rt.key(Some("ns"), name);
    loop {
        let (cur, _) = storage.get(&key, true).await.expect("get");
        let value = Bytes::from(obj.to_string());
        match cur {
            None => {
                if let Ok(rev) = storage.create(&key, value, &[]).await.expect("create") {
                    return rev;
                }
            }
            Some(kv) => {
                if let Some(rev) = storage.update(&key, value, kv.mod_revision).await.expect("update") {
                    return rev;
                }
            }
        }
    }
}

fn names(objs: &[Arc<serde_json::Value>]) -> Vec<String> {
    objs.iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_serves_fresh_lists_and_gapless_watches() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, storage) = store(dir.path()).await;
    let rt = ResourceType::by_kind("ConfigMap").expect("configmaps");
    put(&storage, rt, "a").await;
    let cache = WatchCache::start(storage.clone(), rt, WINDOW_EVENTS_DEFAULT);
    let prefix = rt.namespace_prefix("ns");

    // A consistent list right after a write sees it.
    let rev_b = put(&storage, rt, "b").await;
    tokio::time::timeout(DEADLINE, cache.wait_fresh(&storage))
        .await
        .expect("in time")
        .expect("fresh");
    let (objs, rev) = cache.list(prefix.as_bytes(), 0).await.expect("list");
    assert_eq!(names(&objs), ["a", "b"]);
    assert!(rev >= rev_b, "the list is at {rev}, before the write at {rev_b}");

    // A watch from the current state starts with it; then live changes follow.
    let mut all = cache.subscribe(prefix.as_bytes(), None).await.expect("subscribe");
    match &all.initial {
        Initial::Objects(objs) => assert_eq!(names(objs), ["a", "b"]),
        Initial::Events(_) => panic!("a watch without resourceVersion starts with the objects"),
    }
    let rev_c = put(&storage, rt, "c").await;
    let got = loop {
        match tokio::time::timeout(DEADLINE, all.rx.recv()).await.expect("in time") {
            Some(Message::Event(ev)) => break ev,
            Some(Message::Progress(_)) => continue,
            None => panic!("the watch ended"),
        }
    };
    assert_eq!((got.rev, got.deleted), (rev_c, false));

    // A watch from a resourceVersion replays exactly what came after it.
    let replay = cache
        .subscribe(prefix.as_bytes(), Some(rev_b))
        .await
        .expect("subscribe");
    match &replay.initial {
        Initial::Events(evs) => {
            let revs: Vec<i64> = evs.iter().map(|e| e.rev).collect();
            assert_eq!(revs, [rev_c], "replay from {rev_b}");
        }
        Initial::Objects(_) => panic!("a watch from a resourceVersion replays events"),
    }
    // One from before the cache started replays the history the cache read at start.
    let early = cache.subscribe(prefix.as_bytes(), Some(1)).await.expect("subscribe");
    match &early.initial {
        Initial::Events(evs) => {
            let revs: Vec<i64> = evs.iter().map(|e| e.rev).collect();
            assert_eq!(revs.last(), Some(&rev_c), "replay from 1: {revs:?}");
            assert_eq!(revs.len(), 3, "a, b and c were created: {revs:?}");
        }
        Initial::Objects(_) => panic!("a watch from a resourceVersion replays events"),
    }
    drop(early);
    // Once that history is compacted, a cache started afresh cannot replay it: 410.
    node.propose(capstan_proto::store::Command {
        op: Some(capstan_proto::store::command::Op::Compaction(
            capstan_proto::etcdserverpb::CompactionRequest {
                revision: rev_c,
                physical: true,
            },
        )),
    })
    .await
    .expect("compact");
    let fresh = WatchCache::start(storage.clone(), rt, WINDOW_EVENTS_DEFAULT);
    match fresh.subscribe(prefix.as_bytes(), Some(1)).await {
        Err(capstan_apiserver::ApiError::Expired(_)) => {}
        Err(e) => panic!("expected Expired, got {e}"),
        Ok(_) => panic!("expected Expired, got a subscription"),
    }
    drop(fresh);

    // A watcher that stops reading is dropped once its queue is full; others go on.
    let stalled = cache.subscribe(prefix.as_bytes(), None).await.expect("subscribe");
    let mut live = cache.subscribe(prefix.as_bytes(), None).await.expect("subscribe");
    // Twice what its queue holds, so that it overflows whatever the channel's slack.
    let puts = 2 * WATCHER_QUEUE_MAX;
    let mut last = 0;
    let mut live_seen = 0;
    for i in 0..puts {
        last = put(&storage, rt, &format!("k{}", i % 8)).await;
        // The live watcher keeps up.
        while let Ok(m) = live.rx.try_recv() {
            if let Message::Event(ev) = m {
                live_seen = ev.rev;
            }
        }
    }
    while live_seen < last {
        match tokio::time::timeout(DEADLINE, live.rx.recv()).await.expect("in time") {
            Some(Message::Event(ev)) => live_seen = ev.rev,
            Some(Message::Progress(_)) => {}
            None => panic!("the live watcher was dropped"),
        }
    }
    let mut stalled = stalled;
    let mut queued = 0;
    loop {
        match tokio::time::timeout(DEADLINE, stalled.rx.recv()).await {
            Ok(Some(_)) => queued += 1,
            Ok(None) => break,
            Err(_) => panic!("the stalled watcher was not dropped; it had {queued} messages queued"),
        }
    }
    assert!(
        queued < puts,
        "the stalled watcher got {queued} messages of {puts}: it was not cut off when its queue filled"
    );
    drop((all, replay, stalled, live, cache));
    node.stop();
}
