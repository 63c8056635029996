//! Bad input gets an error, never a crash: malformed messages on the wire, and requests
//! over etcd's limits.

mod common;

use bytes::Bytes;
use capstan_proto::etcdserverpb::{LeaseGrantRequest, RangeRequest, RangeResponse};
use common::*;
use tonic::codegen::http::uri::PathAndQuery;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_refused_and_the_server_keeps_serving() {
    let s = start().await;
    let channel = tonic::transport::Endpoint::from_shared(s.endpoint.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    // A LeaseGrantRequest's field 1 is a varint where RangeRequest's is bytes: the server
    // cannot decode it as a RangeRequest.
    let codec = tonic_prost::ProstCodec::<LeaseGrantRequest, RangeResponse>::default();
    let path = PathAndQuery::from_static("/etcdserverpb.KV/Range");
    let err = grpc
        .unary(tonic::Request::new(LeaseGrantRequest { ttl: 5, id: 1 }), path, codec)
        .await
        .expect_err("a malformed request is refused");
    assert_ne!(err.code(), tonic::Code::Ok);
    // An unknown method answers UNIMPLEMENTED.
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<RangeRequest, RangeResponse>::default();
    let err = grpc
        .unary(
            tonic::Request::new(RangeRequest::default()),
            PathAndQuery::from_static("/etcdserverpb.Auth/AuthStatus"),
            codec,
        )
        .await
        .expect_err("auth is not served");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    // And the server still answers.
    let mut kv = kv(&s).await;
    assert_eq!(put(&mut kv, "still", "here").await, 2);
    let err = kv
        .range(RangeRequest {
            key: Bytes::new(),
            ..Default::default()
        })
        .await
        .expect_err("empty key");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "etcdserver: key is not provided");
}
