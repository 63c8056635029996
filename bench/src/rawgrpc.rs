//! A minimal unary gRPC client straight on `h2`, for the load loops.
//!
//! Why: the load tool shares the machine's two cores with the server it measures. With
//! tonic's `Channel` a put cost the tool about 25 µs of CPU (a tower `Buffer` task hop,
//! the layered service stack, per-call header maps), nearly as much as the server's own
//! work, so the faster server was held back most and ratios between servers were
//! compressed toward 1. This client does only what a unary call needs: one HEADERS frame
//! built from pre-made parts, one DATA frame with the length-prefixed message, and a read
//! of the answer and its trailers. Both servers are driven by the same client, so it
//! favours neither.
//!
//! Left out: compression, deadlines on the wire (`grpc-timeout`; the caller times out
//! locally), TLS, retries, and streaming calls.

use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderValue, Method, Request, Uri};
use tokio::net::TcpStream;

use crate::common::{BenchResult, Deadline};

/// Largest answer accepted, as for the tonic clients (`max_decoding_message_size`).
const RESPONSE_BYTES_MAX: usize = 64 << 20;

/// One HTTP/2 connection; cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct RawChannel {
    send: SendRequest<Bytes>,
    authority: String,
}

/// Opens a connection to `addr` and runs its I/O on a spawned task.
pub async fn connect(addr: SocketAddr, deadline: Deadline) -> BenchResult<RawChannel> {
    let limit = deadline.min_after(std::time::Duration::from_secs(10));
    let open = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| format!("{addr}: TCP_NODELAY: {e}"))?;
        let (send, conn) = h2::client::Builder::new()
            // Room for many answers in flight without waiting for window updates.
            .initial_window_size(1 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
        // A connection that breaks shows up as failed calls; nothing to do here.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok::<_, String>(RawChannel {
            send,
            authority: addr.to_string(),
        })
    };
    match tokio::time::timeout(limit, open).await {
        Ok(r) => r,
        Err(_) => Err(format!("connecting to {addr}: timed out")),
    }
}

/// A prepared method: the request URI is parsed once.
#[derive(Clone)]
pub struct RawMethod {
    uri: Uri,
}

impl RawChannel {
    /// Prepares calls of `path` (e.g. `/etcdserverpb.KV/Put`) on this connection.
    pub fn method(&self, path: &str) -> BenchResult<RawMethod> {
        let uri = format!("http://{}{}", self.authority, path)
            .parse::<Uri>()
            .map_err(|e| format!("{path}: {e}"))?;
        Ok(RawMethod { uri })
    }

    /// One unary call: `req` out, the decoded answer back, or the gRPC status as text.
    pub async fn unary<Req, Resp>(&mut self, method: &RawMethod, req: &Req) -> Result<Resp, String>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let len = req.encoded_len();
        let mut frame = BytesMut::with_capacity(5 + len);
        frame.put_u8(0);
        frame.put_u32(u32::try_from(len).map_err(|_| "request too large".to_string())?);
        req.encode(&mut frame).map_err(|e| format!("encoding: {e}"))?;

        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = method.uri.clone();
        let h = request.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert(http::header::TE, HeaderValue::from_static("trailers"));

        // Waits while the server's concurrent-stream limit is reached.
        std::future::poll_fn(|cx| self.send.poll_ready(cx))
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let (answer, mut body) = self
            .send
            .send_request(request, false)
            .map_err(|e| format!("sending: {e}"))?;
        body.send_data(frame.freeze(), true)
            .map_err(|e| format!("sending: {e}"))?;

        let answer = answer.await.map_err(|e| format!("answer: {e}"))?;
        let (parts, mut recv) = answer.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(format!("HTTP status {}", parts.status));
        }
        // A trailers-only answer (an error) carries grpc-status in the headers.
        if let Some(status) = grpc_error(&parts.headers) {
            return Err(status);
        }
        let mut data = BytesMut::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(|e| format!("answer body: {e}"))?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            if data.len() + chunk.len() > RESPONSE_BYTES_MAX + 5 {
                return Err("answer larger than 64 MiB".into());
            }
            data.extend_from_slice(&chunk);
        }
        let trailers = recv.trailers().await.map_err(|e| format!("trailers: {e}"))?;
        if let Some(status) = trailers.as_ref().and_then(grpc_error) {
            return Err(status);
        }
        let mut data = data.freeze();
        if data.len() < 5 {
            return Err(format!("answer of {} bytes has no message", data.len()));
        }
        if data.get_u8() != 0 {
            return Err("compressed answers are not supported".into());
        }
        let n = data.get_u32() as usize;
        if n != data.len() {
            return Err(format!("answer frame says {n} bytes, carries {}", data.len()));
        }
        Resp::decode(data).map_err(|e| format!("decoding the answer: {e}"))
    }
}

/// `Some("status N: message")` when `headers` carry a non-zero `grpc-status`.
fn grpc_error(headers: &http::HeaderMap) -> Option<String> {
    let code = headers.get("grpc-status")?.to_str().unwrap_or("?");
    if code == "0" {
        return None;
    }
    let message = headers.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or("");
    Some(format!("status: {code}, message: {message:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_status_zero_is_not_an_error() {
        let mut h = http::HeaderMap::new();
        assert_eq!(grpc_error(&h), None);
        h.insert("grpc-status", HeaderValue::from_static("0"));
        assert_eq!(grpc_error(&h), None);
        h.insert("grpc-status", HeaderValue::from_static("9"));
        h.insert("grpc-message", HeaderValue::from_static("too old"));
        assert_eq!(grpc_error(&h).as_deref(), Some("status: 9, message: \"too old\""));
    }
}
