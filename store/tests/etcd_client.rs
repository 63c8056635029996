//! Interoperability with the `etcd-client` crate, an unmodified etcd v3 client library.

mod common;

use common::*;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, WatchOptions,
};

async fn client(s: &Server) -> Client {
    Client::connect([s.endpoint.trim_start_matches("http://")], None)
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_txn_and_errors() {
    let s = start().await;
    let mut c = client(&s).await;
    let r = c.put("a", "1", None).await.expect("put");
    assert_eq!(
        r.header().expect("header").revision(),
        2,
        "a new store is at 1, as etcd"
    );
    c.put("b", "2", None).await.expect("put");
    let r = c
        .put("a", "3", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put");
    assert_eq!(r.prev_key().map(|kv| kv.value()), Some(&b"1"[..]));

    let r = c.get("a", None).await.expect("get");
    let kv = &r.kvs()[0];
    assert_eq!(
        (kv.value(), kv.create_revision(), kv.mod_revision(), kv.version()),
        (&b"3"[..], 2, 4, 2)
    );
    let r = c
        .get("a", Some(GetOptions::new().with_revision(2)))
        .await
        .expect("get at revision");
    assert_eq!(r.kvs()[0].value(), b"1");
    let r = c
        .get("", Some(GetOptions::new().with_all_keys().with_limit(1)))
        .await
        .expect("get all");
    assert_eq!((r.kvs().len(), r.count(), r.more()), (1, 2, true));
    let r = c
        .get(
            "",
            Some(
                GetOptions::new()
                    .with_all_keys()
                    .with_sort(SortTarget::Value, SortOrder::Descend),
            ),
        )
        .await
        .expect("sorted");
    let values: Vec<&[u8]> = r.kvs().iter().map(|kv| kv.value()).collect();
    assert_eq!(values, vec![&b"3"[..], &b"2"[..]]);

    // Compare-and-swap on mod revision, as kube-apiserver does.
    let txn = Txn::new()
        .when([Compare::mod_revision("a", CompareOp::Equal, 4)])
        .and_then([TxnOp::put("a", "4", None), TxnOp::get("a", None)])
        .or_else([TxnOp::get("a", None)]);
    let r = c.txn(txn).await.expect("txn");
    assert!(r.succeeded());
    let stale = Txn::new()
        .when([Compare::mod_revision("a", CompareOp::Equal, 4)])
        .and_then([TxnOp::put("a", "5", None)])
        .or_else([TxnOp::get("a", None)]);
    assert!(!c.txn(stale).await.expect("txn").succeeded());

    // etcd's errors, with etcd's messages.
    let e = c
        .get("a", Some(GetOptions::new().with_revision(100)))
        .await
        .expect_err("future revision");
    assert!(e.to_string().contains("required revision is a future revision"), "{e}");
    let dup = Txn::new().and_then([TxnOp::put("x", "1", None), TxnOp::put("x", "2", None)]);
    let e = c.txn(dup).await.expect_err("duplicate key");
    assert!(e.to_string().contains("duplicate key given in txn request"), "{e}");
    let e = c.put("big", vec![0u8; 2 << 20], None).await.expect_err("too large");
    assert!(e.to_string().contains("request is too large"), "{e}");
    let e = c.put("", "v", None).await.expect_err("empty key");
    assert!(e.to_string().contains("key is not provided"), "{e}");
    let ops: Vec<TxnOp> = (0..129).map(|i| TxnOp::put(format!("k{i}"), "v", None)).collect();
    let e = c.txn(Txn::new().and_then(ops)).await.expect_err("too many ops");
    assert!(e.to_string().contains("too many operations in txn request"), "{e}");

    c.compact(5, None).await.expect("compact");
    let e = c
        .get("a", Some(GetOptions::new().with_revision(3)))
        .await
        .expect_err("compacted");
    assert!(e.to_string().contains("required revision has been compacted"), "{e}");

    let r = c
        .delete(
            "",
            Some(etcd_client::DeleteOptions::new().with_all_keys().with_prev_key()),
        )
        .await
        .expect("delete all");
    assert_eq!(r.deleted(), 2);
    assert_eq!(r.prev_kvs().len(), 2);
    assert_eq!(
        c.get("", Some(GetOptions::new().with_all_keys().with_count_only()))
            .await
            .expect("count")
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_leases() {
    let s = start().await;
    let mut c = client(&s).await;
    let mut stream = c
        .watch("w", Some(WatchOptions::new().with_prefix().with_prev_key()))
        .await
        .expect("watch");
    let created = stream.message().await.expect("created").expect("open");
    assert!(created.created());
    c.put("w1", "a", None).await.expect("put");
    c.put("w1", "b", None).await.expect("put");
    c.delete("w1", None).await.expect("delete");
    let mut got = Vec::new();
    while got.len() < 3 {
        let r = stream.message().await.expect("watch message").expect("watch open");
        for e in r.events() {
            let kv = e.kv().expect("kv");
            got.push((
                e.event_type(),
                kv.value().to_vec(),
                e.prev_kv().map(|p| p.value().to_vec()),
            ));
        }
    }
    assert_eq!(
        got,
        vec![
            (EventType::Put, b"a".to_vec(), None),
            (EventType::Put, b"b".to_vec(), Some(b"a".to_vec())),
            (EventType::Delete, Vec::new(), Some(b"b".to_vec())),
        ]
    );
    stream.cancel(created.watch_id()).await.expect("cancel");
    let canceled = stream.message().await.expect("canceled").expect("open");
    assert!(canceled.canceled());

    let lease = c.lease_grant(60, None).await.expect("grant");
    let id = lease.id();
    assert_eq!(lease.ttl(), 60);
    c.put("leased", "v", Some(PutOptions::new().with_lease(id)))
        .await
        .expect("put with lease");
    let ttl = c
        .lease_time_to_live(id, Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("ttl");
    assert_eq!(ttl.granted_ttl(), 60);
    assert!(ttl.ttl() > 0 && ttl.ttl() <= 60);
    assert_eq!(ttl.keys(), &[b"leased".to_vec()]);
    let (mut keeper, mut responses) = c.lease_keep_alive(id).await.expect("keep alive");
    keeper.keep_alive().await.expect("send keep-alive");
    let r = responses.message().await.expect("keep-alive response").expect("open");
    assert_eq!(r.ttl(), 60);
    assert_eq!(c.leases().await.expect("leases").leases().len(), 1);
    c.lease_revoke(id).await.expect("revoke");
    assert_eq!(
        c.get("leased", None).await.expect("get").count(),
        0,
        "revoking deletes attached keys"
    );
    let e = c
        .put("x", "v", Some(PutOptions::new().with_lease(id)))
        .await
        .expect_err("lease gone");
    assert!(e.to_string().contains("requested lease not found"), "{e}");
    let ttl = c.lease_time_to_live(id, None).await.expect("ttl of revoked lease");
    assert_eq!(ttl.ttl(), -1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_by_the_clock() {
    let s = start_with(|c| c.lease_ttl_min_s = 1).await;
    let mut c = client(&s).await;
    let lease = c.lease_grant(1, None).await.expect("grant");
    c.put("short", "v", Some(PutOptions::new().with_lease(lease.id())))
        .await
        .expect("put");
    let mut stream = c.watch("short", None).await.expect("watch");
    assert!(stream.message().await.expect("created").expect("open").created());
    // The expiry is a revoke proposed by the node's clock: it shows up as a delete event.
    let r = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("expiry before the deadline")
        .expect("message")
        .expect("open");
    assert_eq!(r.events()[0].event_type(), EventType::Delete);
    assert_eq!(c.leases().await.expect("leases").leases().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_and_cluster() {
    let s = start().await;
    let mut c = client(&s).await;
    c.put("m", "1", None).await.expect("put");
    let st = c.status().await.expect("status");
    assert_eq!(st.version(), "3.5.17");
    assert!(st.db_size() > 0);
    assert_eq!(st.leader(), st.header().expect("header").member_id());
    let members = c.member_list().await.expect("members");
    assert_eq!(members.members().len(), 1);
    // Without the scheme: see wire_member in store/src/server.rs.
    let bare = s.endpoint.trim_start_matches("http://").to_string();
    assert_eq!(members.members()[0].client_urls(), std::slice::from_ref(&bare));
    let h1 = c.hash_kv(0).await.expect("hash");
    let h2 = c.hash_kv(0).await.expect("hash");
    assert_eq!(h1.hash(), h2.hash());
    c.put("m", "2", None).await.expect("put");
    assert_ne!(c.hash_kv(0).await.expect("hash").hash(), h1.hash());
    assert!(c
        .alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None)
        .await
        .expect("alarms")
        .alarms()
        .is_empty());
    c.defragment().await.expect("defragment");
    let mut snap = c.snapshot().await.expect("snapshot");
    let mut bytes = Vec::new();
    while let Some(r) = snap.message().await.expect("chunk") {
        bytes.extend_from_slice(r.blob());
    }
    assert!(bytes.starts_with(capstan_store::snapshot::MAGIC));
    assert_eq!(bytes.len() % 512, 32, "etcdctl's size rule: padded body plus a SHA-256");
}
