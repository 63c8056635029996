//! The API over TLS: rustls (ring) on the listener, HTTP/2 or HTTP/1.1 by ALPN (kubectl
//! and client-go speak HTTP/2), the same routes and filters as in plain HTTP.
//!
//! The certificate file is PEM, the server's certificate first and then its chain; the
//! key file a PEM private key (PKCS#8, PKCS#1 or SEC1). `capstan certs` writes such a
//! pair, with the cluster CA last in the chain, and the kubeconfig the server writes then
//! trusts that last certificate ([`ca_of_chain`]).
//!
//! Bounds: a TLS handshake that has not finished within [`HANDSHAKE_TIMEOUT`] is dropped
//! (a client that connects and says nothing holds no task for long); connections are
//! otherwise as in plain HTTP (hyper's limits, the request timeout of the routes).
//!
//! Left out so far (issue 10): client certificates (`--client-ca-file`), and TLS for the
//! etcd API and the Raft peers.

use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use tokio_rustls::rustls::ServerConfig;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest certificate or key file read, in bytes.
pub const PEM_FILE_BYTES_MAX: usize = 1 << 20;

/// A server configuration from a PEM certificate chain and key, offering HTTP/2 and
/// HTTP/1.1.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, String> {
    if cert_pem.len() > PEM_FILE_BYTES_MAX || key_pem.len() > PEM_FILE_BYTES_MAX {
        return Err(format!("a certificate or key file is over {PEM_FILE_BYTES_MAX} bytes"));
    }
    let chain = certificates(cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("reading the private key: {e}"))?;
    // ring, which the workspace builds already (hickory-proto); rustls marks it deprecated
    // for want of post-quantum key exchange, which only its aws-lc-rs provider (a large C
    // build) offers.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a PEM file, in order; an error if there is none.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("reading the certificates: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the certificate file".into());
    }
    Ok(chain)
}

/// The last certificate of a PEM chain, as PEM: the CA a client should trust when the
/// chain ends with its issuer (as `capstan certs` writes it).
pub fn ca_of_chain(cert_pem: &[u8]) -> Result<String, String> {
    let chain = certificates(cert_pem)?;
    let last = chain.last().expect("invariant: certificates() returns at least one");
    Ok(pem_encode("CERTIFICATE", last.as_ref()))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("invariant: base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Serves `app` over TLS on `listener` until `shutdown` completes; then stops accepting
/// and waits for the open connections to finish (watches end when the caller's stop
/// signal tells them to).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let builder = auto::Builder::new(TokioExecutor::new());
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
        // No Nagle, as in plain HTTP: watch events go out at once.
        let _ = tcp.set_nodelay(true);
        let (acceptor, builder, app) = (acceptor.clone(), builder.clone(), app.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
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
            let service = TowerToHyperService::new(app);
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let refused = |cert: &[u8], key: &[u8]| server_config(cert, key).expect_err("refused");
        assert!(refused(b"", b"").contains("no certificate"));
        assert!(refused(b"not pem", b"").contains("no certificate"));
        let big = vec![b'a'; PEM_FILE_BYTES_MAX + 1];
        assert!(refused(&big, b"").contains("over"));
        assert!(ca_of_chain(b"").is_err());
    }

    #[test]
    fn pem_encoding_wraps_at_64_columns() {
        let pem = pem_encode("CERTIFICATE", &[0u8; 100]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last().copied(), Some("-----END CERTIFICATE-----"));
        let back = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("parses back");
        assert_eq!(back[0].as_ref(), &[0u8; 100][..]);
    }
}
