//! HTTPS ports of the cluster's own processes, with client certificates: the node
//! agent's port (container logs, `/stats/summary`, `/metrics`), a store's
//! `--listen-metrics-urls https://…`, and a separate scheduler's or controller-manager's
//! `--secure-port`.
//!
//! [`serve`] with a [`ServingTls`] serves HTTPS (HTTP/1.1 or HTTP/2 by ALPN), as the
//! kubelet with `--tls-cert-file` and `--client-ca-file` and anonymous requests refused:
//!
//! - A client may present a certificate; one the client CA did not issue fails the
//!   handshake. Its subject names the requester (CN the user, each O a group), read by
//!   [`ServingTls::identify`].
//! - A request without one: `401` `Unauthorized`.
//! - A requester in `system:masters` may do anything the port serves; one in
//!   `system:monitoring` may also `GET /metrics`, as the API server's default
//!   `system:monitoring` binding lets it read the API's. Anyone else: `403`, worded as the
//!   upstream component that port stands for words it ([`Policy`]):
//!   - [`Policy::Kubelet`], the agent's port:
//!     `Forbidden (user=<name>, verb=get, resource=nodes, subresource=proxy)`, the
//!     attributes upstream's kubelet checks for a path (`stats` for `/stats/summary`,
//!     `metrics`, `log`, `spec`, and `proxy` for the rest, `containerLogs` among them);
//!   - [`Policy::Component`], a store's, scheduler's or controller-manager's metrics:
//!     `forbidden: User "<name>" cannot get path "/metrics"`, the API server's words for
//!     a non-resource URL, which the scheduler and controller-manager answer with.
//!
//!   Upstream asks the API server (a SubjectAccessReview) whether the user may; these
//!   ports decide alone, by the group, so that reading logs or metrics needs no round
//!   trip to the API and works while it is away.
//! - Bounds: the handshake must end within [`HANDSHAKE_TIMEOUT`] of the connection (a
//!   client that connects and says nothing holds a task only that long), a request's head
//!   within it after that, a connection without a client certificate is closed that long
//!   after its handshake, and at most [`CONNECTIONS_MAX`] connections are open at once
//!   (one more is closed when accepted).
//!
//! Without a [`ServingTls`], [`serve`] is plain HTTP and anyone who reaches the port is
//! served (the caller decides where that is allowed).
//!
//! Left out, on purpose: authorization through the API server (SubjectAccessReview,
//! the kubelet's `--authorization-mode Webhook`, the scheduler's delegated
//! authorization), bearer tokens, and anonymous requests (upstream lets anonymous
//! requests read `/healthz` on the scheduler's port; here every request needs a
//! certificate).

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio_rustls::rustls;

/// How long a client has for its TLS handshake from the moment it connects, and then for
/// each request's head (Go's `TLSHandshakeTimeout` is the same 10 s).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once over TLS, per port: the API servers' log streams (one
/// each) and then some.
pub const CONNECTIONS_MAX: usize = 1024;
/// The group whose members may do anything a port serves: `kube-apiserver-kubelet-client`,
/// the API server's certificate for the agents, is in it (as kubeadm issues it).
pub const MASTERS_GROUP: &str = "system:masters";
/// The group that may also read `/metrics` (a Prometheus certificate), as the API
/// server's default `system:monitoring` binding lets it read the API's.
pub const MONITORING_GROUP: &str = "system:monitoring";

/// Who a verified client certificate names: its subject's CN and O values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub user: String,
    pub groups: Vec<String>,
}

/// Which upstream component a port stands for: whose answers its refusals give (see the
/// module docs). Who is allowed is the same for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The node agent's port: the kubelet's `nodes/<subresource>` attributes.
    Kubelet,
    /// A store's, scheduler's or controller-manager's metrics and health: non-resource
    /// paths, as the API server names them.
    Component,
}

/// The port over TLS (see the module docs).
#[derive(Clone)]
pub struct ServingTls {
    /// The serving certificate, and a client verifier of the cluster CA that lets clients
    /// without a certificate finish the handshake (they get `401`, as upstream answers
    /// them). ALPN may offer `h2` and `http/1.1`.
    pub config: Arc<rustls::ServerConfig>,
    /// The requester a verified client certificate (DER) names; None for one without a
    /// common name. The binary passes the API server's parser
    /// (`capstan_apiserver::tls::client_identity`): this crate does not depend on that
    /// one, and a certificate is read one way in the whole cluster.
    pub identify: fn(&[u8]) -> Option<Requester>,
}

impl std::fmt::Debug for ServingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServingTls")
    }
}

/// Serves `router` on `listener`: plain HTTP without `tls` (as `axum::serve`), HTTPS with
/// client certificates and [`authorize`]'s answers for `policy` with it; `port` names it
/// in the logs. Returns only if accepting fails for good (plain HTTP) or never (TLS:
/// accept errors are waited out).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<ServingTls>,
    policy: Policy,
    port: &'static str,
) -> io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(listener, router).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
    let connections = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, say: wait a moment rather than spin.
                tracing::warn!(error = %e, port, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, port, connections_max = CONNECTIONS_MAX, "too many connections: closing a new one");
            continue;
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let (acceptor, builder, app, identify) = (acceptor.clone(), builder.clone(), router.clone(), tls.identify);
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, port, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, port, "TLS handshake timed out");
                    return;
                }
            };
            let requester = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| identify(leaf.as_ref()));
            let anonymous = requester.is_none();
            let service = hyper_util::service::TowerToHyperService::new(Authorized {
                app,
                requester: requester.map(Arc::new),
                policy,
                port,
            });
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            // Without a certificate nothing is served but `401`: such a connection gets no
            // longer than its handshake had, so that idle ones (an HTTP/2 connection has
            // no header timeout) cannot hold the connection slots.
            let served = match anonymous {
                false => connection.await,
                true => match tokio::time::timeout(HANDSHAKE_TIMEOUT, connection).await {
                    Ok(served) => served,
                    Err(_) => {
                        tracing::debug!(%peer, "closed a connection without a client certificate");
                        return;
                    }
                },
            };
            if let Err(e) = served {
                tracing::debug!(%peer, port, error = %e, "a connection ended with an error");
            }
        });
    }
}

/// The kubelet's verb for an HTTP method (`GetRequestAttributes`): others have none.
fn verb(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::GET => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
}

/// The subresource of `nodes` the kubelet checks for a path (`GetRequestAttributes`):
/// `/stats` is `stats`, `/metrics` `metrics`, `/logs` `log`, `/spec` `spec`, anything
/// else (`/containerLogs` among them) `proxy`.
fn subresource(path: &str) -> &'static str {
    let under = |prefix: &str| path == prefix || path.strip_prefix(prefix).is_some_and(|r| r.starts_with('/'));
    if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        "log"
    } else if under("/spec") {
        "spec"
    } else {
        "proxy"
    }
}

/// Whether `requester` (None: no client certificate) may make a request with `method`
/// on `path`, and if not the answer of the component `policy` names (see the module
/// docs).
pub fn authorize(
    requester: Option<&Requester>,
    method: &Method,
    path: &str,
    policy: Policy,
) -> Result<(), (StatusCode, String)> {
    let Some(requester) = requester else {
        return Err((StatusCode::UNAUTHORIZED, "Unauthorized".into()));
    };
    let member = |group: &str| requester.groups.iter().any(|g| g == group);
    if member(MASTERS_GROUP) || (member(MONITORING_GROUP) && *method == Method::GET && subresource(path) == "metrics") {
        return Ok(());
    }
    let text = match policy {
        Policy::Kubelet => format!(
            "Forbidden (user={}, verb={}, resource=nodes, subresource={})",
            requester.user,
            verb(method),
            subresource(path)
        ),
        Policy::Component => format!(
            "forbidden: User \"{}\" cannot {} path \"{}\"",
            requester.user,
            verb(method),
            path
        ),
    };
    Err((StatusCode::FORBIDDEN, text))
}

/// The router behind [`authorize`], for one connection's requester.
#[derive(Clone)]
struct Authorized {
    app: Router,
    requester: Option<Arc<Requester>>,
    policy: Policy,
    port: &'static str,
}

impl<B> tower_service::Service<Request<B>> for Authorized
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = futures::future::Either<
        axum::routing::future::RouteFuture<Infallible>,
        futures::future::Ready<Result<Response, Infallible>>,
    >;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        // A Router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match authorize(
            self.requester.as_deref(),
            request.method(),
            request.uri().path(),
            self.policy,
        ) {
            Ok(()) => futures::future::Either::Left(tower_service::Service::call(&mut self.app, request)),
            Err((code, text)) => {
                if let Some(r) = &self.requester {
                    let port = self.port;
                    tracing::info!(user = %r.user, path = %request.uri().path(), port, "a request refused: {text}");
                }
                futures::future::Either::Right(futures::future::ready(Ok(refusal(code, text))))
            }
        }
    }
}

/// An error answer: plain text, as the kubelet and the scheduler write theirs.
fn refusal(code: StatusCode, text: String) -> Response {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_port_answers_as_the_kubelet() {
        let who = |user: &str, groups: &[&str]| Requester {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert_eq!(
            authorize(None, &Method::GET, "/containerLogs/ns/p/c", Policy::Kubelet),
            Err((StatusCode::UNAUTHORIZED, "Unauthorized".into()))
        );
        let apiserver = who("kube-apiserver-kubelet-client", &["system:masters"]);
        assert_eq!(
            authorize(Some(&apiserver), &Method::GET, "/stats/summary", Policy::Kubelet),
            Ok(())
        );
        assert_eq!(
            authorize(
                Some(&who("alice", &["devs", "system:authenticated"])),
                &Method::GET,
                "/containerLogs/ns/p/c",
                Policy::Kubelet
            ),
            Err((
                StatusCode::FORBIDDEN,
                "Forbidden (user=alice, verb=get, resource=nodes, subresource=proxy)".into()
            ))
        );
        assert_eq!(
            authorize(
                Some(&who("alice", &[])),
                &Method::GET,
                "/stats/summary",
                Policy::Kubelet
            )
            .map_err(|e| e.1),
            Err("Forbidden (user=alice, verb=get, resource=nodes, subresource=stats)".into())
        );
        let prometheus = who("prometheus", &["system:monitoring"]);
        assert_eq!(
            authorize(Some(&prometheus), &Method::GET, "/metrics", Policy::Kubelet),
            Ok(())
        );
        assert!(authorize(Some(&prometheus), &Method::GET, "/stats/summary", Policy::Kubelet).is_err());
        assert!(authorize(
            Some(&prometheus),
            &Method::GET,
            "/containerLogs/ns/p/c",
            Policy::Kubelet
        )
        .is_err());
        for (path, sub) in [
            ("/stats", "stats"),
            ("/metrics/cadvisor", "metrics"),
            ("/logs/", "log"),
            ("/spec", "spec"),
            ("/statsx", "proxy"),
        ] {
            assert_eq!(subresource(path), sub, "{path}");
        }
        // A node's own certificate is no key to the logs either.
        let node = who("system:node:n2", &["system:nodes"]);
        assert_eq!(
            authorize(Some(&node), &Method::POST, "/containerLogs/ns/p/c", Policy::Kubelet).map_err(|e| e.1),
            Err("Forbidden (user=system:node:n2, verb=create, resource=nodes, subresource=proxy)".into())
        );
        for (method, v) in [
            (Method::PUT, "update"),
            (Method::PATCH, "patch"),
            (Method::DELETE, "delete"),
            (Method::HEAD, ""),
        ] {
            assert_eq!(verb(&method), v, "{method}");
        }
    }

    #[test]
    fn component_ports_answer_as_the_api_server_for_a_path() {
        let who = |user: &str, groups: &[&str]| Requester {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        let c = Policy::Component;
        assert_eq!(
            authorize(None, &Method::GET, "/metrics", c).map_err(|e| e.0),
            Err(StatusCode::UNAUTHORIZED)
        );
        let root = who("root", &["system:masters"]);
        assert_eq!(authorize(Some(&root), &Method::GET, "/healthz", c), Ok(()));
        let prometheus = who("prometheus", &["system:monitoring"]);
        assert_eq!(authorize(Some(&prometheus), &Method::GET, "/metrics", c), Ok(()));
        assert_eq!(
            authorize(Some(&prometheus), &Method::GET, "/healthz", c),
            Err((
                StatusCode::FORBIDDEN,
                "forbidden: User \"prometheus\" cannot get path \"/healthz\"".into()
            ))
        );
        assert_eq!(
            authorize(Some(&who("alice", &[])), &Method::GET, "/metrics", c).map_err(|e| e.1),
            Err("forbidden: User \"alice\" cannot get path \"/metrics\"".into())
        );
    }
}
