//! Serving HTTPS, the same way for the orchestrator's API, an HTTP bot and the simulators: PEM
//! material read from files, a rustls server configuration with the ring provider, and serving
//! a router over it until a cancellation token fires. (Self-signed certificates are made by the
//! test doubles: `simulators::tls`.)

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A certificate chain and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// The certificate chain, leaf first; for a self-signed certificate, also what clients trust.
    pub cert_pem: String,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs.
        f.debug_struct("TlsMaterial").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The certificate PEM holds no certificate, or a broken one.
    #[error("no usable certificate in the certificate PEM: {0}")]
    Certificate(String),
    /// The key PEM holds no private key, or a broken one.
    #[error("no usable private key in the key PEM: {0}")]
    Key(String),
    /// The certificate and key do not make a TLS configuration (a key that does not match).
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

impl From<TlsError> for io::Error {
    fn from(error: TlsError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, error)
    }
}

impl TlsMaterial {
    /// The certificate chain and key in these PEM files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<TlsMaterial, TlsError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|source| TlsError::Read { path: path.to_owned(), source })
        };
        Ok(TlsMaterial { cert_pem: read(cert)?, key_pem: read(key)? })
    }

    /// The certificates of the chain, leaf first.
    pub fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        certificates(&self.cert_pem)
    }

    /// A rustls server configuration (ring; TLS 1.2 and 1.3; HTTP/2 and HTTP/1.1 by ALPN).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let chain = self.certificates()?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|error| TlsError::Key(error.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The certificates in `pem`, in order; at least one.
pub fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Certificate(error.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate("no CERTIFICATE block".to_owned()));
    }
    Ok(chain)
}

/// How long in-flight requests may take to finish once `shutdown` fires.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `router` over HTTPS on `listener` until `shutdown` is cancelled, then lets in-flight
/// requests finish (for up to 30 seconds).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stopper.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(
        axum_server::tls_rustls::RustlsConfig::from_config(config),
    );
    axum_server::Server::<std::net::SocketAddr>::from_listener(listener)
        .acceptor(acceptor)
        .handle(handle)
        .serve(router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh self-signed certificate for the loopback, with its key (rcgen is a
    /// dev-dependency only: production material comes from files).
    fn self_signed() -> TlsMaterial {
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("generated");
        TlsMaterial {
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
        }
    }

    #[test]
    fn a_self_signed_certificate_makes_a_server_configuration() {
        let material = self_signed();
        assert!(material.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(material.certificates().expect("parses").len(), 1);
        assert!(material.server_config().is_ok());
        assert!(!format!("{material:?}").contains("PRIVATE KEY"), "keys stay out of logs");
    }

    #[test]
    fn broken_or_mismatched_material_is_refused() {
        let one = self_signed();
        let other = self_signed();
        let no_cert = TlsMaterial { cert_pem: "nothing".into(), ..one.clone() };
        assert!(matches!(no_cert.server_config(), Err(TlsError::Certificate(_))));
        let no_key = TlsMaterial { key_pem: one.cert_pem.clone(), ..one.clone() };
        assert!(matches!(no_key.server_config(), Err(TlsError::Key(_))));
        let mismatched = TlsMaterial { key_pem: other.key_pem, ..one };
        assert!(matches!(mismatched.server_config(), Err(TlsError::Config(_))));
        let missing = TlsMaterial::from_files(Path::new("/nonexistent.pem"), Path::new("/x"));
        assert!(matches!(missing, Err(TlsError::Read { .. })));
    }
}
