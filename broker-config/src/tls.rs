//! AMQP over TLS (`amqps://`): which certificates a connection trusts and presents, and the
//! rustls (ring) client configuration made from them.
//!
//! The TLS files travel inside the broker URL, as the query parameters RabbitMQ's own URI
//! specification names them (`cacertfile`, `certfile`, `keyfile`), so one string still says
//! everything about a broker, from a flag to a child process's environment, and through every
//! function that takes an AMQP URL. Each program's flags (`--amqp-ca-file`,
//! `--amqp-cert-file`, `--amqp-key-file`, [`AmqpTlsArgs`]) are written into its URL with
//! [`AmqpTlsArgs::apply`].
//!
//! Without `cacertfile` the server is verified against the system's root certificates; with it,
//! against the certificates in that file only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// The query parameter naming the CA certificates (PEM) that verify the server.
pub const CA_FILE_PARAM: &str = "cacertfile";
/// The query parameter naming the client's certificate chain (PEM).
pub const CERT_FILE_PARAM: &str = "certfile";
/// The query parameter naming the client certificate's private key (PEM).
pub const KEY_FILE_PARAM: &str = "keyfile";

/// The TLS flags every program that speaks AMQP takes (flatten them into its clap config).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct AmqpTlsArgs {
    /// For amqps:// URLs: a PEM file of the CA certificates that verify RabbitMQ's certificate
    /// [default: the system's root certificates]. Same as ?cacertfile=FILE in the URL.
    #[arg(long, env = "BOTLINE_AMQP_CA_FILE")]
    pub amqp_ca_file: Option<PathBuf>,

    /// For amqps:// URLs: a client certificate chain (PEM) to present to RabbitMQ, for its peer
    /// verification; needs --amqp-key-file. Same as ?certfile=FILE in the URL.
    #[arg(long, env = "BOTLINE_AMQP_CERT_FILE", requires = "amqp_key_file")]
    pub amqp_cert_file: Option<PathBuf>,

    /// The private key (PEM) of --amqp-cert-file. Same as ?keyfile=FILE in the URL.
    #[arg(long, env = "BOTLINE_AMQP_KEY_FILE", requires = "amqp_cert_file")]
    pub amqp_key_file: Option<PathBuf>,
}

impl AmqpTlsArgs {
    /// `url` with these files written into its query (replacing the same parameters there); the
    /// URL as it is when no file is given.
    pub fn apply(&self, url: &str) -> String {
        let files = [
            (CA_FILE_PARAM, self.amqp_ca_file.as_deref()),
            (CERT_FILE_PARAM, self.amqp_cert_file.as_deref()),
            (KEY_FILE_PARAM, self.amqp_key_file.as_deref()),
        ];
        let given: Vec<(&str, &Path)> =
            files.into_iter().filter_map(|(name, path)| Some((name, path?))).collect();
        if given.is_empty() {
            return url.to_owned();
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut serializer = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if !given.iter().any(|(name, _)| *name == key) {
                serializer.append_pair(&key, &value);
            }
        }
        for (name, path) in given {
            serializer.append_pair(name, &path.to_string_lossy());
        }
        format!("{base}?{}", serializer.finish())
    }
}

/// The TLS files a broker URL names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificates that verify the server; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The client's certificate chain.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// The files named in `url`'s query.
    pub fn from_url(url: &url::Url) -> TlsFiles {
        let mut files = TlsFiles::default();
        for (key, value) in url.query_pairs() {
            let path = Some(PathBuf::from(value.into_owned()));
            match key.as_ref() {
                CA_FILE_PARAM => files.ca_file = path,
                CERT_FILE_PARAM => files.cert_file = path,
                KEY_FILE_PARAM => files.key_file = path,
                _ => {}
            }
        }
        files
    }

    /// Whether any file is named.
    pub fn any(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// The rustls client configuration these files give (ring as the crypto provider), read
    /// from disk now.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(TlsError::HalfIdentity);
        }
        let roots = match &self.ca_file {
            Some(path) => roots_from_file(path)?,
            None => system_roots()?,
        };
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots);
        let config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let chain = certificates_from_file(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| TlsError::Key { path: key.clone(), reason: e.to_string() })?;
                builder.with_client_auth_cert(chain, key)?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// Why a TLS client configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate file cannot be read or holds no certificate.
    #[error("AMQP TLS: no usable certificate in {}: {reason}", path.display())]
    Certificates {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The private key file cannot be read or holds no key.
    #[error("AMQP TLS: no usable private key in {}: {reason}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error(
        "AMQP TLS: a client certificate needs both certfile and keyfile (--amqp-cert-file and --amqp-key-file)"
    )]
    HalfIdentity,
    /// No CA file was given and the system has no root certificate.
    #[error(
        "AMQP TLS: the system has no root certificates to verify RabbitMQ with; give a CA file (--amqp-ca-file or ?cacertfile=)"
    )]
    NoSystemRoots,
    /// rustls refused the configuration (a key that does not fit its certificate, say).
    #[error("AMQP TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn certificates_from_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let failed = |reason: String| TlsError::Certificates { path: path.to_owned(), reason };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| failed(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(e.to_string()))?;
    if certificates.is_empty() {
        return Err(failed("the file holds no PEM certificate".to_owned()));
    }
    Ok(certificates)
}

fn roots_from_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates_from_file(path)?);
    if added == 0 {
        return Err(TlsError::Certificates {
            path: path.to_owned(),
            reason: "no certificate in it can be a trust anchor".to_owned(),
        });
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "a system root certificate could not be loaded");
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(TlsError::NoSystemRoots);
    }
    Ok(roots)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn flags_go_into_the_url_query_and_replace_the_same_parameters() {
        let args = AmqpTlsArgs {
            amqp_ca_file: Some("/etc/botline/ca cert.pem".into()),
            amqp_cert_file: None,
            amqp_key_file: None,
        };
        assert_eq!(
            args.apply("amqps://bot:pw@rabbit/%2f?heartbeat=10&cacertfile=/old.pem"),
            "amqps://bot:pw@rabbit/%2f?heartbeat=10&cacertfile=%2Fetc%2Fbotline%2Fca+cert.pem"
        );
        let url = url::Url::parse(&args.apply("amqps://rabbit/%2f")).unwrap();
        assert_eq!(
            TlsFiles::from_url(&url),
            TlsFiles { ca_file: Some("/etc/botline/ca cert.pem".into()), ..TlsFiles::default() }
        );
        assert_eq!(AmqpTlsArgs::default().apply("amqp://rabbit/%2f"), "amqp://rabbit/%2f");
    }

    #[test]
    fn missing_or_empty_files_are_named_in_the_error() {
        let files = TlsFiles { ca_file: Some("/nonexistent/ca.pem".into()), ..TlsFiles::default() };
        let error = files.client_config().unwrap_err().to_string();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");

        let empty =
            std::env::temp_dir().join(format!("botline-empty-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let files = TlsFiles { ca_file: Some(empty.clone()), ..TlsFiles::default() };
        let error = files.client_config().unwrap_err().to_string();
        let _ = std::fs::remove_file(&empty);
        assert!(error.contains("no PEM certificate"), "{error}");

        let half = TlsFiles { cert_file: Some("/tmp/c.pem".into()), ..TlsFiles::default() };
        assert!(matches!(half.client_config(), Err(TlsError::HalfIdentity)));
    }
}
