//! The API's listener: one accept loop for plain HTTP and for TLS, with the bounds a
//! server facing untrusted clients needs on its connections.
//!
//! Every connection is served by hyper (HTTP/1.1 or HTTP/2, by ALPN over TLS and by the
//! client's first bytes in plain text) with the router and its filters. What bounds it:
//!
//! - [`Limits::connections_max`]: open connections at most; one over that is closed as
//!   soon as it is accepted (the listen backlog would otherwise fill and hold clients
//!   in the kernel, unanswered).
//! - [`Limits::header_read_timeout`]: a client has that long to send a request's head,
//!   from the moment it connects or its previous request ended (slowloris: a client
//!   that trickles a header a byte at a time, or connects and says nothing, holds a
//!   connection and a task only that long). Upstream's Go server uses 32 s
//!   (`ReadHeaderTimeout`). An HTTP/2 client must start within it too; its idle
//!   connection is then kept, as upstream keeps it, with pings to find dead peers.
//! - A TLS handshake ends within the same timeout.
//!
//! Each request carries its connection's [`Peer`] (the flow control of [`crate::flow`]
//! tells clients apart by it when there is no authentication), and over TLS the
//! [`crate::tls::ClientIdentity`] of a verified client certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::tls;

/// Bounds on the listener's connections (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub connections_max: usize,
    pub header_read_timeout: Duration,
}

/// Open connections at most, by default: far above what a cluster's clients open (a
/// node's agent and proxy share one HTTP/2 connection), below the file descriptors a
/// server is usually given.
pub const CONNECTIONS_MAX_DEFAULT: usize = 30_000;
/// Upstream's `ReadHeaderTimeout`.
pub const HEADER_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(32);
/// How often an HTTP/2 connection that has been quiet is pinged, and how long the
/// answer may take before the connection is dropped.
const HTTP2_KEEPALIVE: Duration = Duration::from_secs(30);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_max: CONNECTIONS_MAX_DEFAULT,
            header_read_timeout: HEADER_READ_TIMEOUT_DEFAULT,
        }
    }
}

/// The client address of a request's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` completes; then
/// stops accepting and waits for the open connections to finish (watches end when the
/// caller's stop signal tells them to).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<tls::ServerConfig>>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    assert!(limits.connections_max > 0, "connections_max must be positive");
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEPALIVE)
        .keep_alive_timeout(HTTP2_KEEPALIVE);
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.connections_max));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, connections_max = limits.connections_max, "too many connections: closing a new one");
            drop(tcp);
            continue;
        };
        // No Nagle: a watch event or a response written in pieces goes out at once
        // instead of waiting for the client's delayed ACK (tens of milliseconds).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let (acceptor, builder) = (acceptor.clone(), builder.clone());
        let app = app.clone();
        let watcher = graceful.watcher();
        let timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            // A client that connects and sends nothing: hyper's header timeout starts
            // only once it knows the protocol, which it learns from the first bytes.
            // (`readable` may wake without data: peek for a byte.)
            let mut first = [0u8; 1];
            if tokio::time::timeout(timeout, tcp.peek(&mut first)).await.is_err() {
                tracing::debug!(%peer, "the client sent nothing in time");
                return;
            }
            let Some(acceptor) = acceptor else {
                serve_connection(builder, tcp, app, watcher, peer, None).await;
                return;
            };
            let stream = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // A verified client certificate is who every request of the connection comes
            // from (unless a request brings a token).
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| tls::client_identity(leaf.as_ref()));
            serve_connection(builder, stream, app, watcher, peer, identity).await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn serve_connection<S>(
    builder: auto::Builder<TokioExecutor>,
    stream: S,
    app: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
    identity: Option<tls::ClientIdentity>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The connection's facts go into each request's extensions (a `Router::layer` per
    // connection would wrap every route anew).
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        if let Some(id) = &identity {
            req.extensions_mut().insert(id.clone());
        }
        let mut app = app.clone();
        // A Router is always ready: no poll_ready needed.
        async move { tower_service::Service::call(&mut app, req.map(axum::body::Body::new)).await }
    });
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
