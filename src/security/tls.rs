//! Mutual TLS material for the gRPC server and the peer channels.

use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use super::certs::common_name;
use crate::config::TlsFiles;

/// The cluster CA and this node's certificate, loaded and checked at start.
#[derive(Clone)]
pub struct Tls {
    ca: Certificate,
    identity: Identity,
    server_name: String,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// The common name of this node's own certificate: its node id.
    pub node_id: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{key} = {path:?}: {why}")]
pub struct TlsError {
    pub key: &'static str,
    pub path: String,
    pub why: String,
}

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

impl Tls {
    pub fn load(files: &TlsFiles, server_name: &str) -> Result<Tls, TlsError> {
        let read = |key: &'static str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| TlsError {
                key,
                path: path.display().to_string(),
                why: e.to_string(),
            })
        };
        let ca = read("tls.ca_file", &files.ca_file)?;
        let cert = read("tls.cert_file", &files.cert_file)?;
        let key = read("tls.key_file", &files.key_file)?;
        let bad = |key: &'static str, path: &std::path::Path, why: &str| TlsError {
            key,
            path: path.display().to_string(),
            why: format!("{why} (create the files with `iarnet cert`)"),
        };
        first_der(&ca)
            .ok_or_else(|| bad("tls.ca_file", &files.ca_file, "no PEM certificate in it"))?;
        let der = first_der(&cert).ok_or_else(|| {
            bad(
                "tls.cert_file",
                &files.cert_file,
                "no PEM certificate in it",
            )
        })?;
        let node_id = common_name(&der).ok_or_else(|| {
            bad(
                "tls.cert_file",
                &files.cert_file,
                "the certificate has no common name (the node id)",
            )
        })?;
        if !String::from_utf8_lossy(&key).contains("PRIVATE KEY-----") {
            return Err(bad(
                "tls.key_file",
                &files.key_file,
                "no PEM private key in it",
            ));
        }
        Ok(Tls {
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(&cert, &key),
            server_name: server_name.to_string(),
            cert_pem: cert,
            key_pem: key,
            node_id,
        })
    }

    /// The server side: a client certificate is verified when presented and
    /// one that does not chain to the CA fails the handshake. It is optional
    /// at this layer so management clients can use tokens; peer calls
    /// without one are refused by the guard.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
            .client_auth_optional(true)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The client side of a peer channel: verify the cluster name, present our certificate.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(self.server_name.clone())
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

fn first_der(pem: &[u8]) -> Option<Vec<u8>> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    (p.label == "CERTIFICATE").then_some(p.contents)
}

impl Tls {
    /// The HTTP API's TLS: the node's certificate, no client certificate
    /// (management callers use tokens). HTTP/1.1 and h2 by ALPN.
    pub fn http_acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, String> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls.cert_file: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| format!("tls.key_file: {e}"))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("tls.cert_file / tls.key_file: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
    }
}
