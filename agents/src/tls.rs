//! TLS for the components' connections to the API: the cluster CA they trust and the
//! client certificate they authenticate with, as a kubeconfig gives them.
//!
//! [`ClientTls`] holds two rustls configurations over the same roots and certificate:
//! one offering HTTP/1.1 by ALPN (kube's client: its watches are one request a
//! connection) and one offering HTTP/2 (tonic's mesh channel). The
//! [`crate::client::FailoverConnector`] makes the TLS connection after the TCP one, and
//! checks the server's certificate against the host of the URL it dialled (an IP address
//! or a DNS name, as the API server's certificate lists them).
//!
//! Left out: bearer tokens and exec plugins in kubeconfigs (the components authenticate
//! by certificate), and the system's root certificates (a cluster has its own CA).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::error::{AgentError, Result};

/// The longest certificate, key or kubeconfig file read, in bytes.
pub const FILE_BYTES_MAX: usize = 1 << 20;

/// What a component needs to reach the API over TLS (see the module docs).
#[derive(Clone)]
pub struct ClientTls {
    http1: Arc<rustls::ClientConfig>,
    http2: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// Trusts the CA certificates of `ca_pem`; presents the certificate chain and key of
    /// `identity` (both PEM) when given.
    pub fn from_pem(ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<ClientTls> {
        let bad = |what: &str, e: &dyn std::fmt::Display| AgentError::Config(format!("{what}: {e}"));
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem) {
            let ca = ca.map_err(|e| bad("the CA certificate", &e))?;
            roots.add(ca).map_err(|e| bad("the CA certificate", &e))?;
        }
        if roots.is_empty() {
            return Err(AgentError::Config("the CA certificate: no certificate found".into()));
        }
        // ring, as the API server's side (capstan_apiserver::tls) uses.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("TLS", &e))?
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert_pem, key_pem)) => {
                let chain = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| bad("the client certificate", &e))?;
                if chain.is_empty() {
                    return Err(AgentError::Config("the client certificate: none found".into()));
                }
                let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad("the client key", &e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad("the client certificate and key", &e))?
            }
        };
        let mut http1 = config.clone();
        http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut http2 = config;
        http2.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ClientTls {
            http1: Arc::new(http1),
            http2: Arc::new(http2),
        })
    }

    /// The configuration for HTTP/2 (`true`) or HTTP/1.1 connections.
    pub(crate) fn config(&self, http2: bool) -> Arc<rustls::ClientConfig> {
        if http2 {
            self.http2.clone()
        } else {
            self.http1.clone()
        }
    }
}

/// What a kubeconfig file says of its current context: the server's URL, and TLS when
/// it names a CA (with the user's client certificate, if it has one).
#[derive(Debug, Clone)]
pub struct KubeconfigAccess {
    pub server: String,
    pub tls: Option<ClientTls>,
    /// The cluster's CA (PEM), if it names one: the node agent's port accepts the client
    /// certificates it issued unless told another CA (`--client-ca-file`).
    pub ca_pem: Option<Vec<u8>>,
}

/// Reads the current context of the kubeconfig at `path` (certificates inline as
/// `*-data`, or as file paths relative to the kubeconfig's directory).
pub fn read_kubeconfig(path: &std::path::Path) -> Result<KubeconfigAccess> {
    let bad = |e: &dyn std::fmt::Display| AgentError::Config(format!("the kubeconfig {}: {e}", path.display()));
    let size = std::fs::metadata(path).map_err(|e| bad(&e))?.len();
    if size > FILE_BYTES_MAX as u64 {
        return Err(bad(&format!("over {FILE_BYTES_MAX} bytes")));
    }
    let config = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(&e))?;
    // Through JSON: the key is a secret kube's type keeps behind an accessor of another
    // crate; its serialization writes it out.
    let v = serde_json::to_value(&config).map_err(|e| bad(&e))?;
    let current = v["current-context"].as_str().unwrap_or_default();
    let named = |list: &str, name: &str, field: &str| -> serde_json::Value {
        v[list]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["name"] == name))
            .map(|i| i[field].clone())
            .unwrap_or(serde_json::Value::Null)
    };
    let context = named("contexts", current, "context");
    let cluster_name = context["cluster"].as_str().unwrap_or_default();
    let user_name = context["user"].as_str().unwrap_or_default();
    let cluster = named("clusters", cluster_name, "cluster");
    let user = named("users", user_name, "user");
    let server = cluster["server"]
        .as_str()
        .ok_or_else(|| bad(&format!("the context {current:?} names no cluster with a server")))?
        .to_owned();
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let load = |data: &serde_json::Value, file: &serde_json::Value, what: &str| -> Result<Option<Vec<u8>>> {
        use base64::Engine;
        if let Some(b64) = data.as_str() {
            return base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map(Some)
                .map_err(|e| bad(&format!("{what}: {e}")));
        }
        match file.as_str() {
            None => Ok(None),
            Some(f) => {
                let p = dir.join(f);
                read_bounded(&p)
                    .map(Some)
                    .map_err(|e| bad(&format!("{what} {}: {e}", p.display())))
            }
        }
    };
    let ca = load(
        &cluster["certificate-authority-data"],
        &cluster["certificate-authority"],
        "the CA",
    )?;
    let cert = load(
        &user["client-certificate-data"],
        &user["client-certificate"],
        "the client certificate",
    )?;
    let key = load(&user["client-key-data"], &user["client-key"], "the client key")?;
    let tls = match (&ca, cert, key) {
        (None, _, _) => None,
        (Some(ca), Some(cert), Some(key)) => Some(ClientTls::from_pem(ca, Some((&cert, &key)))?),
        (Some(ca), None, None) => Some(ClientTls::from_pem(ca, None)?),
        (Some(_), _, _) => return Err(bad(&"a client certificate needs its key, and a key its certificate")),
    };
    Ok(KubeconfigAccess {
        server,
        tls,
        ca_pem: ca,
    })
}

/// A file of at most [`FILE_BYTES_MAX`] bytes.
pub fn read_bounded(path: &std::path::Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(FILE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut out)?;
    if out.len() > FILE_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("over {FILE_BYTES_MAX} bytes"),
        ));
    }
    Ok(out)
}

/// A connection to an API server: plain TCP, or TLS over it.
#[derive(Debug)]
pub enum ApiStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl ApiStream {
    /// TLS over `tcp` to `host` (the URL's host: an IP address or a DNS name).
    pub(crate) async fn tls(tcp: TcpStream, host: &str, config: Arc<rustls::ClientConfig>) -> io::Result<ApiStream> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("server name {host:?}: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
        Ok(ApiStream::Tls(Box::new(stream)))
    }

    /// The TCP connection under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ApiStream::Plain(s) => s,
            ApiStream::Tls(s) => s.get_ref().0,
        }
    }
}

impl Connection for ApiStream {
    fn connected(&self) -> Connected {
        let connected = self.tcp().connected();
        match self {
            ApiStream::Tls(s) if s.get_ref().1.alpn_protocol() == Some(b"h2") => connected.negotiated_h2(),
            _ => connected,
        }
    }
}

impl AsyncRead for ApiStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ApiStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ApiStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ApiStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ApiStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ApiStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ApiStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ApiStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ApiStream::Plain(s) => s.is_write_vectored(),
            ApiStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ApiStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ApiStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ApiStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ApiStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
