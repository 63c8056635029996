//! The etcd `Watch` service on the wire, with an encoder that sends a revision's events
//! to many watchers without copying or re-encoding them per watcher.
//!
//! tonic's generated `WatchServer` would need every queued [`Outbound`] turned into a
//! `WatchResponse` first: a vector of events per watcher, then a protobuf encoding of
//! each. Here one revision's events are encoded once (see [`RevEvents::encoded`]) and each
//! response is its few header fields followed by those bytes. The bytes are the same as
//! prost's encoding of the same `WatchResponse`: fields in tag order, `events` (tag 11)
//! last; a test checks it.
//!
//! Requests are decoded with prost as usual. The service answers only
//! `/etcdserverpb.Watch/Watch`; any other path of the service is `UNIMPLEMENTED`, as the
//! generated server does.
//!
//! [`RevEvents::encoded`]: crate::watch::RevEvents::encoded

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::BufMut;
use capstan_proto::etcdserverpb::{WatchRequest, WatchResponse};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use crate::server::{EtcdServices, GRPC_MESSAGE_MAX_BYTES};
use crate::watch::Outbound;

const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";

/// The Watch service for tonic's router.
#[derive(Clone)]
pub struct WatchService {
    services: EtcdServices,
}

impl WatchService {
    pub fn new(services: EtcdServices) -> Self {
        WatchService { services }
    }
}

impl NamedService for WatchService {
    const NAME: &'static str = "etcdserverpb.Watch";
}

impl<B> Service<http::Request<B>> for WatchService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != WATCH_PATH {
            return Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(Status::GRPC_STATUS, (tonic::Code::Unimplemented as i32).into());
                headers.insert(http::header::CONTENT_TYPE, tonic::metadata::GRPC_CONTENT_TYPE);
                Ok(response)
            });
        }
        let method = WatchMethod(self.services.clone());
        Box::pin(async move {
            let mut grpc = Grpc::new(WatchCodec).apply_max_message_size_config(Some(GRPC_MESSAGE_MAX_BYTES), None);
            Ok(grpc.streaming(method, req).await)
        })
    }
}

struct WatchMethod(EtcdServices);

impl StreamingService<WatchRequest> for WatchMethod {
    type Response = Outbound;
    type ResponseStream = crate::server::BoxStream<Outbound>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<WatchRequest>>) -> Self::Future {
        let services = self.0.clone();
        Box::pin(async move { services.watch(request).await })
    }
}

/// Decodes requests with prost; encodes [`Outbound`] with [`Outbound::encode`].
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = Outbound;
    type Decode = WatchRequest;
    type Encoder = WatchCodec;
    type Decoder = WatchCodec;

    fn encoder(&mut self) -> Self::Encoder {
        WatchCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        WatchCodec
    }
}

impl Encoder for WatchCodec {
    type Item = Outbound;
    type Error = Status;

    fn encode(&mut self, item: Outbound, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
    }
}

impl Decoder for WatchCodec {
    type Item = WatchRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<WatchRequest>, Status> {
        WatchRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding a watch request: {e}")))
    }
}

impl Outbound {
    /// Writes the response as protobuf: exactly the bytes prost writes for
    /// [`Outbound::into_response`], without building that response.
    pub fn encode(&self, buf: &mut impl BufMut) -> Result<(), Status> {
        let no_room = |e: prost::EncodeError| Status::internal(format!("encoding a watch response: {e}"));
        match self {
            Outbound::Response(r) => r.encode(buf).map_err(no_room),
            Outbound::Events(e) => {
                let head = WatchResponse {
                    header: Some(e.batch.header),
                    watch_id: e.watch_id,
                    ..Default::default()
                };
                head.encode(buf).map_err(no_room)?;
                let events = e.batch.encoded(e.prev_kv);
                if buf.remaining_mut() < events.len() {
                    return Err(Status::internal("encoding a watch response: no room for its events"));
                }
                buf.put_slice(events);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use capstan_proto::etcdserverpb::ResponseHeader;
    use capstan_proto::mvccpb::{event::EventType, Event, KeyValue};

    use super::*;
    use crate::watch::{RevEvents, SharedEvents};

    fn kv(key: &str, value: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: 2,
            mod_revision: rev,
            version: 3,
            lease: 0,
        }
    }

    fn encoded(out: &Outbound) -> Vec<u8> {
        let mut buf = Vec::new();
        out.encode(&mut buf).expect("a Vec grows");
        buf
    }

    #[test]
    fn shared_events_encode_as_prost_encodes_the_response() {
        let header = ResponseHeader {
            cluster_id: 7,
            member_id: 9,
            revision: 12,
            raft_term: 3,
        };
        let events = vec![
            Event {
                r#type: EventType::Put as i32,
                kv: Some(kv("/a", "new", 12)),
                prev_kv: Some(kv("/a", "old", 11)),
            },
            Event {
                r#type: EventType::Delete as i32,
                kv: Some(kv("/b", "", 12)),
                prev_kv: Some(kv("/b", "gone", 5)),
            },
        ];
        let batch = Arc::new(RevEvents::new(12, header, events));
        for prev_kv in [false, true] {
            for watch_id in [0, 1, -1, i64::MAX] {
                let out = Outbound::Events(SharedEvents {
                    watch_id,
                    prev_kv,
                    batch: batch.clone(),
                });
                let want = Outbound::Events(SharedEvents {
                    watch_id,
                    prev_kv,
                    batch: batch.clone(),
                })
                .into_response();
                assert_eq!(want.events.len(), 2);
                assert_eq!(want.events[0].prev_kv.is_some(), prev_kv);
                assert_eq!(
                    encoded(&out),
                    want.encode_to_vec(),
                    "watch {watch_id}, prev_kv {prev_kv}"
                );
                assert_eq!(WatchResponse::decode(encoded(&out).as_slice()).expect("decodes"), want);
            }
        }
        // Any other response is prost's encoding as it is.
        let canceled = WatchResponse {
            header: Some(header),
            watch_id: 4,
            canceled: true,
            compact_revision: 10,
            cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
            ..Default::default()
        };
        assert_eq!(encoded(&Outbound::from(canceled.clone())), canceled.encode_to_vec());
    }
}
