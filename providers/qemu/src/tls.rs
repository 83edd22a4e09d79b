//! TLS for QMP and NBD over TCP (QEMU's `tls-creds-x509` on the other end),
//! with rustls. The server's certificate is always verified against the
//! given CA and the server name; a client certificate is sent when given
//! (for QEMU's `verify-peer=on`).

use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::error::{Error, Result};
use crate::wire::Sock;

/// How to reach a TLS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file of the CA(s) that sign the server's certificate.
    pub ca: PathBuf,
    /// The name the server's certificate must carry (DNS name or IP).
    pub server_name: String,
    /// PEM certificate chain and private key of this client, if the server
    /// verifies its peers.
    pub client: Option<(PathBuf, PathBuf)>,
}

fn tls_err(peer: &str, detail: impl Into<String>) -> Error {
    Error::Tls {
        peer: peer.to_string(),
        detail: detail.into(),
    }
}

impl TlsConfig {
    fn client_config(&self, peer: &str) -> Result<Arc<ClientConfig>> {
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(&self.ca)
            .map_err(|e| tls_err(peer, format!("reading CA file {}: {e}", self.ca.display())))?;
        for c in certs {
            let c = c.map_err(|e| tls_err(peer, format!("CA file {}: {e}", self.ca.display())))?;
            roots
                .add(c)
                .map_err(|e| tls_err(peer, format!("CA file {}: {e}", self.ca.display())))?;
        }
        if roots.is_empty() {
            return Err(tls_err(
                peer,
                format!("CA file {} holds no certificate", self.ca.display()),
            ));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(peer, e.to_string()))?
            .with_root_certificates(roots);
        let config = match &self.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect())
                    .map_err(|e| {
                        tls_err(peer, format!("client certificate {}: {e}", cert.display()))
                    })?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| tls_err(peer, format!("client key {}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_err(peer, format!("client certificate: {e}")))?
            }
        };
        Ok(Arc::new(config))
    }

    /// Runs the TLS handshake over `tcp` and returns the secured socket.
    /// Errors name the peer and why verification failed (unknown issuer,
    /// name mismatch, expired, ...).
    pub(crate) fn wrap(&self, tcp: TcpStream, peer: &str) -> Result<Sock> {
        let config = self.client_config(peer)?;
        let name = ServerName::try_from(self.server_name.clone()).map_err(|e| {
            tls_err(
                peer,
                format!("{:?} is not a valid server name: {e}", self.server_name),
            )
        })?;
        let conn = ClientConnection::new(config, name).map_err(|e| tls_err(peer, e.to_string()))?;
        // Small JSON lines, each answered before the next: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        // A server that never answers the handshake (a chardev busy with
        // another client) fails here instead of hanging.
        let _ = tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)));
        let mut stream = StreamOwned::new(conn, tcp);
        // Finish the handshake now, so a bad certificate fails here, named.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).map_err(|e| {
                tls_err(
                    peer,
                    format!(
                        "handshake (server name {:?}, CA {}): {e}",
                        self.server_name,
                        self.ca.display()
                    ),
                )
            })?;
        }
        Ok(Sock::Tls(Box::new(stream)))
    }
}
