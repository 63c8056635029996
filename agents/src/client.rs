//! Clients of the Kubernetes API and of the mesh API for a component given several
//! apiservers (`--master http://m1:6443,http://m2:6443,http://m3:6443`), failing over
//! between them.
//!
//! # How failover works
//!
//! Failover is done where connections are made, not per request: both clients (kube's
//! over hyper, and tonic's channel for the mesh API) get a [`FailoverConnector`], which
//! connects to the apiserver that last worked and, when that one refuses or does not
//! answer within [`CONNECT_TIMEOUT`], tries the others in turn. So a request never has to
//! be replayed (its body is sent only once a connection exists), and a client sticks to
//! one apiserver while it works, which keeps its watch streams and their caches on one
//! server. When a master dies its connections close: requests then in flight fail (the
//! caller retries, as it would on any transport error; watchers re-list or resume), and
//! the next request connects to the next apiserver, so a client is away for at most one
//! connect timeout plus its own retry delay.
//!
//! The apiservers serve the same cluster (each over its local store member, see
//! `docs/ARCHITECTURE.md`), so any of them answers any request; resourceVersions are the
//! store's revisions and mean the same on every one, so a watch resumed on another
//! apiserver goes on from where it stopped.
//!
//! Left out: health checking of idle apiservers (a dead one is found when a connect to
//! it fails), spreading load across them (a component uses one at a time), and a paused
//! apiserver whose kernel still accepts connections (requests then wait for their own
//! timeouts).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::transport::Channel;
use tower_service::Service;

use crate::error::{AgentError, Result};
use crate::tls::{ApiStream, ClientTls};

/// How long one connection attempt to one apiserver may take before the next is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Apiservers in one list, at most (clusters have 1, 3 or 5 masters; 7 and 9 are rare).
pub const ENDPOINTS_MAX: usize = 9;

/// The apiservers of a `--master` list: comma separated `http://host:port` or
/// `https://host:port` URLs (all of one scheme), in the order to try them; a host and a
/// port, no path.
pub fn parse_endpoints(text: &str) -> Result<Vec<Uri>> {
    let mut out: Vec<Uri> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let uri: Uri = part
            .parse()
            .map_err(|e| AgentError::Config(format!("the API's URL {part:?}: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(AgentError::Config(format!(
                "the API's URL {part:?}: expected https://host:port or http://host:port"
            )));
        }
        if out.first().is_some_and(|first| first.scheme() != uri.scheme()) {
            return Err(AgentError::Config(format!(
                "the API's URL {part:?}: all of a list's URLs have one scheme"
            )));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(AgentError::Config(format!(
                "the API's URL {part:?}: no path is allowed"
            )));
        }
        if !out.contains(&uri) {
            out.push(uri);
        }
    }
    if out.is_empty() {
        return Err(AgentError::Config("no API server URL given".into()));
    }
    if out.len() > ENDPOINTS_MAX {
        return Err(AgentError::Config(format!(
            "{} API server URLs given; at most {ENDPOINTS_MAX}",
            out.len()
        )));
    }
    Ok(out)
}

/// Connects to the first of its apiservers that accepts, starting from the one that
/// accepted last (see the module doc). Cloning shares that memory.
#[derive(Clone)]
pub struct FailoverConnector {
    endpoints: Arc<[Uri]>,
    /// The index of the endpoint the last connection went to.
    current: Arc<AtomicUsize>,
    inner: HttpConnector,
    /// TLS over each connection (for `https://` endpoints).
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
}

impl FailoverConnector {
    /// # Panics
    ///
    /// When `endpoints` is empty (an invariant: [`parse_endpoints`] never returns that).
    pub fn new(endpoints: Vec<Uri>) -> FailoverConnector {
        FailoverConnector::with_tls(endpoints, None)
    }

    /// [`FailoverConnector::new`], speaking TLS with `tls` over each connection.
    pub fn with_tls(endpoints: Vec<Uri>, tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>) -> FailoverConnector {
        assert!(!endpoints.is_empty(), "a failover connector needs an endpoint");
        let mut inner = HttpConnector::new();
        inner.set_connect_timeout(Some(CONNECT_TIMEOUT));
        inner.set_nodelay(true);
        // tonic hands the connector the channel's URI, which is plain HTTP too.
        inner.enforce_http(false);
        FailoverConnector {
            endpoints: endpoints.into(),
            current: Arc::new(AtomicUsize::new(0)),
            inner,
            tls,
        }
    }

    /// The endpoint new connections try first.
    pub fn current(&self) -> &Uri {
        &self.endpoints[self.current.load(Ordering::Relaxed) % self.endpoints.len()]
    }
}

impl Service<Uri> for FailoverConnector {
    type Response = TokioIo<ApiStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<ApiStream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The URI asked for is ignored: every connection goes to one of the apiservers.
    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let n = this.endpoints.len();
            let first = this.current.load(Ordering::Relaxed) % n;
            let mut errors = Vec::with_capacity(n);
            for k in 0..n {
                let i = (first + k) % n;
                let mut inner = this.inner.clone();
                let endpoint = this.endpoints[i].clone();
                let connected = match inner.call(endpoint.clone()).await {
                    Err(e) => Err(std::io::Error::other(e)),
                    Ok(io) => match &this.tls {
                        None => Ok(ApiStream::Plain(io.into_inner())),
                        Some(config) => {
                            let host = endpoint.host().unwrap_or_default();
                            // The handshake is bounded as the connect is.
                            match tokio::time::timeout(
                                CONNECT_TIMEOUT,
                                ApiStream::tls(io.into_inner(), host, config.clone()),
                            )
                            .await
                            {
                                Ok(r) => r,
                                Err(_) => Err(std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    "the TLS handshake timed out",
                                )),
                            }
                        }
                    },
                };
                match connected {
                    Ok(io) => {
                        if i != first {
                            tracing::info!(apiserver = %this.endpoints[i], "connected to another API server");
                        }
                        this.current.store(i, Ordering::Relaxed);
                        return Ok(TokioIo::new(io));
                    }
                    Err(e) => {
                        tracing::debug!(apiserver = %this.endpoints[i], error = %e, "cannot connect to an API server");
                        errors.push(format!("{}: {e}", this.endpoints[i]));
                    }
                }
            }
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!("no API server could be reached ({})", errors.join("; ")),
            ))
        })
    }
}

/// Gives every request the one logical base URI (the first endpoint's); the connector
/// decides which apiserver it really goes to.
#[derive(Clone)]
struct Based<S> {
    base: Uri,
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Based<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> S::Future {
        let (mut parts, body) = req.into_parts();
        let mut uri = http::uri::Parts::from(self.base.clone());
        uri.path_and_query = parts.uri.path_and_query().cloned();
        if let Ok(u) = Uri::from_parts(uri) {
            parts.uri = u;
        }
        self.inner.call(http::Request::from_parts(parts, body))
    }
}

/// A client of the Kubernetes API at `masters` (see [`parse_endpoints`]), failing over
/// between them.
pub fn api_client(masters: &str) -> Result<kube::Client> {
    api_client_tls(masters, None)
}

/// [`api_client`] over TLS with `tls` (for `https://` URLs).
pub fn api_client_tls(masters: &str, tls: Option<&ClientTls>) -> Result<kube::Client> {
    let endpoints = parse_endpoints(masters)?;
    let base = endpoints[0].clone();
    let connector = FailoverConnector::with_tls(endpoints, tls_for(&base, tls, false)?);
    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    Ok(kube::Client::new(Based { base, inner: http }, "default"))
}

/// A channel to the mesh API of `masters` (served on the same ports as the Kubernetes
/// API), failing over between them. Connects lazily: the first call connects.
pub fn mesh_channel(masters: &str) -> Result<Channel> {
    mesh_channel_tls(masters, None)
}

/// [`mesh_channel`] over TLS with `tls` (for `https://` URLs).
pub fn mesh_channel_tls(masters: &str, tls: Option<&ClientTls>) -> Result<Channel> {
    let endpoints = parse_endpoints(masters)?;
    let tls = tls_for(&endpoints[0], tls, true)?;
    // tonic sees plain HTTP/2: the connector does the TLS.
    let uri = format!("http://{}", endpoints[0].authority().map_or("", |a| a.as_str()));
    let endpoint =
        Channel::from_shared(uri).map_err(|e| AgentError::Config(format!("the API's URL {}: {e}", endpoints[0])))?;
    Ok(endpoint.connect_with_connector_lazy(FailoverConnector::with_tls(endpoints, tls)))
}

/// The TLS configuration for a list whose first URL is `first`: https needs one, http
/// takes none.
fn tls_for(
    first: &Uri,
    tls: Option<&ClientTls>,
    http2: bool,
) -> Result<Option<Arc<tokio_rustls::rustls::ClientConfig>>> {
    match (first.scheme_str(), tls) {
        (Some("https"), Some(tls)) => Ok(Some(tls.config(http2))),
        (Some("https"), None) => Err(AgentError::Config(format!(
            "the API's URL {first}: https needs the cluster's CA (a kubeconfig with certificate-authority-data)"
        ))),
        (_, Some(_)) => Err(AgentError::Config(format!(
            "the API's URL {first}: TLS settings were given for a plain http:// URL"
        ))),
        (_, None) => Ok(None),
    }
}

/// The socket address of an `http://host:port` URL whose host is an IP address (the
/// form `capstan up` and the tests use); `None` for a host name.
pub fn socket_addr(uri: &Uri) -> Option<SocketAddr> {
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(ip, uri.port_u16().unwrap_or(80)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_list_is_parsed_in_order_without_repeats() {
        let list = parse_endpoints("http://127.0.1.1:6443, http://127.0.1.2:6443,,http://127.0.1.1:6443")
            .expect("a valid list");
        let strings: Vec<String> = list.iter().map(|u| u.to_string()).collect();
        assert_eq!(strings, ["http://127.0.1.1:6443/", "http://127.0.1.2:6443/"]);
        assert!(parse_endpoints("https://a:6443,https://b:6443").is_ok());
        for bad in [
            "",
            ",",
            "https://a:6443,http://b:6443",
            "ftp://a:6443",
            "127.0.0.1:6443",
            "http://a:6443/api",
            "http://",
        ] {
            assert!(parse_endpoints(bad).is_err(), "{bad:?} should be refused");
        }
        let many: Vec<String> = (0..=ENDPOINTS_MAX)
            .map(|i| format!("http://127.0.0.1:{}", 1000 + i))
            .collect();
        assert!(parse_endpoints(&many.join(",")).is_err());
    }

    #[tokio::test]
    async fn connections_go_to_the_first_apiserver_that_accepts_and_stay_there() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let dead_addr = dead.local_addr().expect("addr");
        drop(dead); // nothing listens there now: connects are refused
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let live_addr = live.local_addr().expect("addr");
        let list = parse_endpoints(&format!("http://{dead_addr},http://{live_addr}")).expect("list");
        let mut connector = FailoverConnector::new(list);
        assert_eq!(connector.current().port_u16(), Some(dead_addr.port()));
        let io = connector
            .call(Uri::from_static("http://ignored"))
            .await
            .expect("connects");
        let (_accepted, from) = live.accept().await.expect("the live one is reached");
        assert_eq!(io.inner().tcp().local_addr().expect("local"), from);
        assert_eq!(connector.current().port_u16(), Some(live_addr.port()), "remembered");
        // Once the live one is gone too, the error names both.
        drop(live);
        let err = connector
            .call(Uri::from_static("http://ignored"))
            .await
            .expect_err("none left");
        assert!(err.to_string().contains(&dead_addr.to_string()), "{err}");
        assert!(err.to_string().contains(&live_addr.to_string()), "{err}");
    }
}
