//! Compaction over real gRPC: a Compact is recorded by its apply and its old versions are
//! deleted by the member's background compactor; `physical: true` is answered only once
//! they are gone, `physical: false` as soon as the compaction is recorded.

mod common;

use bytes::Bytes;
use capstan_proto::etcdserverpb::kv_client::KvClient;
use capstan_proto::etcdserverpb::{request_op, CompactionRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
use common::*;
use tonic::transport::Channel;

/// Keys of the history, each written once per round.
const KEYS: usize = 100;

/// `rounds` transactions, each a new version of every key (one revision each); returns
/// the revision after the last.
async fn write_rounds(kv: &mut KvClient<Channel>, rounds: usize) -> i64 {
    let mut rev = 0;
    for round in 0..rounds {
        let success = (0..KEYS)
            .map(|k| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: Bytes::from(format!("h/{k:03}")),
                    value: Bytes::from(format!("{round}")),
                    ..Default::default()
                })),
            })
            .collect();
        let r = kv
            .txn(TxnRequest {
                success,
                ..Default::default()
            })
            .await
            .expect("txn")
            .into_inner();
        rev = r.header.expect("header").revision;
    }
    rev
}

async fn all_at(kv: &mut KvClient<Channel>, revision: i64) -> Vec<(Bytes, Bytes, i64)> {
    kv.range(RangeRequest {
        key: Bytes::from_static(b"h/"),
        range_end: Bytes::from_static(b"h0"),
        revision,
        ..Default::default()
    })
    .await
    .expect("range")
    .into_inner()
    .kvs
    .into_iter()
    .map(|kv| (kv.key, kv.value, kv.mod_revision))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_physical_compact_is_answered_once_the_old_versions_are_gone() {
    let s = start().await;
    let mut kv = kv(&s).await;
    // 10,000 versions: ten batches of the compactor, with its pauses between them.
    let at = write_rounds(&mut kv, 100).await;
    let entries = s.node.mvcc.history_entries().expect("history");
    assert_eq!(entries, 100 * KEYS as u64);
    let before = all_at(&mut kv, at).await;
    kv.compact(CompactionRequest {
        revision: at,
        physical: true,
    })
    .await
    .expect("compact");
    // Answered: deleted already, nothing left to wait for.
    assert_eq!(s.node.mvcc.history_entries().expect("history"), KEYS as u64);
    assert!(s.node.mvcc.compact_done_revision() >= at);
    assert!(*s.node.compacted_physically().borrow() >= at);
    assert_eq!(all_at(&mut kv, at).await, before);
    assert_eq!(all_at(&mut kv, 0).await, before);
    let below = kv
        .range(RangeRequest {
            key: Bytes::from_static(b"h/000"),
            revision: at - 1,
            ..Default::default()
        })
        .await
        .expect_err("compacted");
    assert!(
        below.message().contains("required revision has been compacted"),
        "{below}"
    );
    let again = kv
        .compact(CompactionRequest {
            revision: at,
            physical: true,
        })
        .await
        .expect_err("compacted already");
    assert!(
        again.message().contains("required revision has been compacted"),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compact_that_is_not_physical_is_answered_once_recorded_and_completes_later() {
    let s = start().await;
    let mut kv = kv(&s).await;
    let at = write_rounds(&mut kv, 50).await;
    let mut done = s.node.compacted_physically();
    kv.compact(CompactionRequest {
        revision: at,
        physical: false,
    })
    .await
    .expect("compact");
    assert_eq!(s.node.mvcc.compact_revision(), at, "recorded when answered");
    tokio::time::timeout(DEADLINE, done.wait_for(|d| *d >= at))
        .await
        .expect("the compactor finishes before the deadline")
        .expect("the member runs");
    assert_eq!(s.node.mvcc.history_entries().expect("history"), KEYS as u64);
    // Writes go on afterwards as before.
    let next = put(&mut kv, "h/000", "after").await;
    assert_eq!(next, at + 1);
}
