//! `http-echo`: a small, fast HTTP/1.1 server that answers every request `200 ok`, to run
//! as the pods behind a Service when the proxy's overhead is measured
//! (`scripts/bench-proxy.sh`). What is measured must be the path to the pod, so the pod
//! must cost little per request: `python3 -m http.server` is single-threaded and would
//! measure Python.
//!
//! hyper's HTTP/1.1 server on the tool's tokio runtime (`--threads` sets its workers),
//! keep-alive, every method and path answered alike with a two-byte body (request bodies
//! are read and dropped by hyper). The line `capstan-bench http-echo listening on ADDR` on
//! stdout says it is serving; SIGTERM or Ctrl-C ends it at once (open connections are
//! dropped: a benchmark's server needs no graceful drain).
//!
//! Bounds: at most `--connections-max` connections at once (the next is accepted only when
//! one closes, so the kernel's backlog holds the rest), and a request's headers must arrive
//! within `--header-timeout-ms`. Left out: TLS, HTTP/2, any routing or content.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::common::BenchResult;

/// The most connections `--connections-max` may allow.
pub const CONNECTIONS_MAX_LIMIT: usize = 100_000;

#[derive(clap::Args, Debug, Clone)]
pub struct HttpEchoArgs {
    /// Address to listen on, `IP:PORT` (port 0 picks a free one).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Connections served at once; further ones wait in the listen backlog.
    #[arg(long, default_value_t = 10_000)]
    pub connections_max: usize,
    /// A request's headers must arrive within this many milliseconds of the connection
    /// being idle, or the connection is closed.
    #[arg(long, default_value_t = 30_000)]
    pub header_timeout_ms: u64,
}

pub async fn run(a: HttpEchoArgs) -> BenchResult<()> {
    if a.connections_max == 0 || a.connections_max > CONNECTIONS_MAX_LIMIT {
        return Err(format!("--connections-max must be in 1..={CONNECTIONS_MAX_LIMIT}"));
    }
    if a.header_timeout_ms == 0 {
        return Err("--header-timeout-ms must be above 0".into());
    }
    let listener = TcpListener::bind(a.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
    let bound = listener.local_addr().map_err(|e| format!("the bound address: {e}"))?;
    // The line scripts and tests wait for.
    println!("capstan-bench http-echo listening on {bound}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot catch SIGTERM: {e}"))?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    serve(
        listener,
        a.connections_max,
        Duration::from_millis(a.header_timeout_ms),
        stop,
    )
    .await
}

/// Serves `200 ok` on `listener` until `stop` completes.
pub async fn serve(
    listener: TcpListener,
    connections_max: usize,
    header_timeout: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> BenchResult<()> {
    let slots = Arc::new(Semaphore::new(connections_max));
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            () = &mut stop => return Ok(()),
            slot = slots.clone().acquire_owned() => {
                slot.map_err(|_| "invariant: the connection semaphore is never closed".to_string())?
            }
        };
        let (stream, _) = tokio::select! {
            () = &mut stop => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of descriptors and the like: the next accept may work.
                Err(e) => {
                    eprintln!("capstan-bench http-echo: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(answer);
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
    }
}

async fn answer(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(30);

    /// Sends one keep-alive GET on `conn` and reads one whole answer.
    async fn get(conn: &mut TcpStream) -> String {
        conn.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            let n = conn.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "the server closed the connection: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                if head.to_ascii_lowercase().contains("content-length: 2") && body.len() >= 2 {
                    return text.into_owned();
                }
            }
        }
    }

    #[tokio::test]
    async fn answers_ok_on_a_kept_alive_connection_and_bounds_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, 1, Duration::from_secs(30), async move {
            let _ = stop_rx.await;
        }));

        let mut first = TcpStream::connect(addr).await.expect("connect");
        for _ in 0..3 {
            let answer = get(&mut first).await;
            assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
            assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
        }

        // The only slot is taken: a second connection is not served until the first goes.
        let mut second = TcpStream::connect(addr).await.expect("connect");
        second
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
        assert!(early.is_err(), "a connection beyond --connections-max was served");
        drop(first);
        let start = Instant::now();
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).ends_with("ok") {
            assert!(start.elapsed() < DEADLINE, "the second connection was never served");
            let n = tokio::time::timeout(DEADLINE, second.read(&mut buf))
                .await
                .expect("an answer within the deadline")
                .expect("read");
            assert!(n > 0, "closed without an answer");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200 OK"));

        let _ = stop_tx.send(());
        tokio::time::timeout(DEADLINE, server)
            .await
            .expect("the server stops when told")
            .expect("the server task")
            .expect("serve");
    }
}
