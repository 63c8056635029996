//! The API over TLS: rustls (ring) on the listener, HTTP/2 or HTTP/1.1 by ALPN (kubectl
//! and client-go speak HTTP/2), the same routes and filters as in plain HTTP.
//!
//! The certificate file is PEM, the server's certificate first and then its chain; the
//! key file a PEM private key (PKCS#8, PKCS#1 or SEC1). `capstan certs` writes such a
//! pair, with the cluster CA last in the chain, and the kubeconfig the server writes then
//! trusts that last certificate ([`ca_of_chain`]).
//!
//! The connections are served by [`crate::listen`], as in plain HTTP, with the same
//! bounds (a handshake too ends within the header read timeout).
//!
//! Client certificates (`--client-ca-file`): a client may present one issued by that CA;
//! its subject's common name is the user and each organization a group
//! ([`client_identity`]), as upstream's x509 authenticator reads them, and the requests of
//! the connection carry that [`ClientIdentity`] for [`crate::auth`].
//!
//! The other direction, the API server as a client of the node agents' ports
//! ([`KubeletClientTls`], upstream's `--kubelet-client-certificate`, `--kubelet-client-key`
//! and `--kubelet-certificate-authority`): it presents its client certificate, and checks
//! an agent's certificate against that CA when it has one, else not at all (upstream's
//! default: an agent's certificate is often self-signed).
//!
//! Left out so far (issue 10): certificate revocation.

use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use tokio_rustls::rustls::ServerConfig;

/// The longest certificate or key file read, in bytes.
pub const PEM_FILE_BYTES_MAX: usize = 1 << 20;

/// A server configuration from a PEM certificate chain and key, offering HTTP/2 and
/// HTTP/1.1. With `client_ca_pem`, a client may present a certificate issued by one of
/// those CAs (one it cannot verify fails the handshake); clients without one are let in
/// (they may still bring a token).
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    if cert_pem.len() > PEM_FILE_BYTES_MAX
        || key_pem.len() > PEM_FILE_BYTES_MAX
        || client_ca_pem.is_some_and(|c| c.len() > PEM_FILE_BYTES_MAX)
    {
        return Err(format!("a certificate or key file is over {PEM_FILE_BYTES_MAX} bytes"));
    }
    let chain = certificates(cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("reading the private key: {e}"))?;
    // ring, which the workspace builds already (hickory-proto); rustls marks it deprecated
    // for want of post-quantum key exchange, which only its aws-lc-rs provider (a large C
    // build) offers.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates(pem).map_err(|e| format!("the client CA file: {e}"))? {
                roots.add(ca).map_err(|e| format!("the client CA file: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("the client CA file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The API server's TLS to the node agents (see the module docs): a configuration that
/// verifies an agent's certificate against `--kubelet-certificate-authority` when there is
/// one, and one that does not (for no CA, and for a request's
/// `insecureSkipTLSVerifyBackend`). Both present the client certificate and offer
/// HTTP/1.1 only (a log stream is one request a connection).
#[derive(Clone)]
pub struct KubeletClientTls {
    verifying: Option<Arc<rustls::ClientConfig>>,
    unverified: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for KubeletClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletClientTls")
            .field("verifies", &self.verifying.is_some())
            .finish()
    }
}

impl KubeletClientTls {
    /// From the client certificate chain and key (PEM), and the CA (PEM) agents'
    /// certificates are verified against, if any.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], ca_pem: Option<&[u8]>) -> Result<KubeletClientTls, String> {
        if cert_pem.len() > PEM_FILE_BYTES_MAX
            || key_pem.len() > PEM_FILE_BYTES_MAX
            || ca_pem.is_some_and(|c| c.len() > PEM_FILE_BYTES_MAX)
        {
            return Err(format!("a certificate or key file is over {PEM_FILE_BYTES_MAX} bytes"));
        }
        let chain = certificates(cert_pem).map_err(|e| format!("the kubelet client certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("the kubelet client key: {e}"))?;
        #[allow(deprecated)] // ring: see server_config
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = || {
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())
        };
        let finish = |config: Result<rustls::ClientConfig, rustls::Error>| {
            let mut config = config.map_err(|e| format!("the kubelet client certificate and key: {e}"))?;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok::<_, String>(Arc::new(config))
        };
        let unverified = finish(
            builder()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider.clone())))
                .with_client_auth_cert(chain.clone(), key.clone_key()),
        )?;
        let verifying = match ca_pem {
            None => None,
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in certificates(pem).map_err(|e| format!("the kubelet certificate authority: {e}"))? {
                    roots
                        .add(ca)
                        .map_err(|e| format!("the kubelet certificate authority: {e}"))?;
                }
                Some(finish(
                    builder()?
                        .with_root_certificates(roots)
                        .with_client_auth_cert(chain, key),
                )?)
            }
        };
        Ok(KubeletClientTls { verifying, unverified })
    }

    /// Whether agents' certificates are verified (a CA was given).
    pub fn verifies(&self) -> bool {
        self.verifying.is_some()
    }

    /// The configuration for one connection: verifying, unless there is no CA or
    /// `skip_verify` (a request's `insecureSkipTLSVerifyBackend`).
    pub fn config(&self, skip_verify: bool) -> Arc<rustls::ClientConfig> {
        match &self.verifying {
            Some(v) if !skip_verify => v.clone(),
            _ => self.unverified.clone(),
        }
    }
}

/// Takes any server certificate, as Go's `InsecureSkipVerify`; the handshake's signatures
/// are still checked (the server holds the key of the certificate it sent), which only
/// keeps a broken handshake from passing for a good one.
#[derive(Debug)]
struct AnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
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

/// Who a verified client certificate names, as upstream reads it: the subject's common
/// name is the user, each organization a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

/// The subject's CN and O values of a DER certificate; None when it has no CN or does not
/// parse (a certificate rustls verified always parses).
pub fn client_identity(der: &[u8]) -> Option<ClientIdentity> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    // serialNumber, signature, issuer, validity, subject, ... }, ... }
    let (_, cert, _) = der_tlv(der)?;
    let (_, mut tbs, _) = der_tlv(cert)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_tlv(tbs)?.2; // the explicit version
    }
    // serialNumber, signature, issuer, validity; then the subject.
    for _ in 0..4 {
        tbs = der_tlv(tbs)?.2;
    }
    subject_identity(der_tlv(tbs)?.1)
}

/// Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value string }.
fn subject_identity(mut name: &[u8]) -> Option<ClientIdentity> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const O: &[u8] = &[0x55, 0x04, 0x0a];
    let (mut user, mut groups) = (None, Vec::new());
    while !name.is_empty() {
        let (_, mut set, rest) = der_tlv(name)?;
        name = rest;
        while !set.is_empty() {
            let (_, attribute, rest) = der_tlv(set)?;
            set = rest;
            let (oid_tag, oid, value) = der_tlv(attribute)?;
            let (_, text, _) = der_tlv(value)?;
            if oid_tag != 0x06 {
                return None;
            }
            let text = String::from_utf8(text.to_vec()).ok()?;
            if oid == CN {
                user = Some(text);
            } else if oid == O {
                groups.push(text);
            }
        }
    }
    Some(ClientIdentity {
        user: user.filter(|u| !u.is_empty())?,
        groups,
    })
}

/// One DER element: its tag, its contents and what follows it.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let refused = |cert: &[u8], key: &[u8]| server_config(cert, key, None).expect_err("refused");
        assert!(refused(b"", b"").contains("no certificate"));
        assert!(refused(b"not pem", b"").contains("no certificate"));
        let big = vec![b'a'; PEM_FILE_BYTES_MAX + 1];
        assert!(refused(&big, b"").contains("over"));
        assert!(ca_of_chain(b"").is_err());
        let client = |cert: &[u8], key: &[u8], ca: Option<&[u8]>| {
            KubeletClientTls::from_pem(cert, key, ca).expect_err("refused")
        };
        assert!(client(b"", b"", None).contains("no certificate"));
        assert!(client(&big, b"", None).contains("over"));
    }

    /// DER: tag, length, contents.
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if body.len() < 0x80 {
            out.push(body.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(body);
        out
    }

    fn rdn(oid: &[u8], value: &str) -> Vec<u8> {
        tlv(
            0x31,
            &tlv(0x30, &[tlv(0x06, oid), tlv(0x0c, value.as_bytes())].concat()),
        )
    }

    #[test]
    fn the_subject_names_the_user_and_every_organization_a_group() {
        let (cn, o, ou) = ([0x55, 0x04, 0x03], [0x55, 0x04, 0x0a], [0x55, 0x04, 0x0b]);
        let subject = tlv(
            0x30,
            &[rdn(&o, "devs"), rdn(&ou, "ignored"), rdn(&cn, "bob"), rdn(&o, "qa")].concat(),
        );
        let tbs = tlv(
            0x30,
            &[
                tlv(0xa0, &tlv(0x02, &[2])),        // version 3
                tlv(0x02, &[1]),                    // serial
                tlv(0x30, &tlv(0x06, &[1, 2])),     // signature algorithm
                tlv(0x30, &rdn(&cn, "capstan-ca")), // issuer
                tlv(0x30, &[]),                     // validity
                subject,
            ]
            .concat(),
        );
        let cert = tlv(0x30, &[tbs, tlv(0x30, &[]), tlv(0x03, &[0])].concat());
        assert_eq!(
            client_identity(&cert),
            Some(ClientIdentity {
                user: "bob".into(),
                groups: vec!["devs".into(), "qa".into()]
            })
        );
        // No CN: nobody. Cut short anywhere: nothing, and no panic.
        assert_eq!(subject_identity(&rdn(&o, "devs")), None);
        for n in 0..cert.len() {
            assert_eq!(client_identity(&cert[..n]), None, "cut at {n}");
        }
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
