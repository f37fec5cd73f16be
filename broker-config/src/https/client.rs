//! A small HTTP/1.1 client over rustls (ring), with a trust policy of the caller's choosing: the
//! system's roots, a CA file, or (for a self-signed test service only) any certificate. The
//! agent's CPE automation calls the equipment config service with it; the orchestrator POSTs
//! offers to HTTP and HTTPS bots with it.
//!
//! Why not reqwest, which the rest of Botline uses: its rustls features apply to every reqwest
//! client of a build (Cargo unifies features), and without aws-lc-rs, which needs cmake to
//! build, they leave every other client without a crypto provider. Each request here opens its
//! own connection, which suits calls that take seconds to minutes each.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
pub use hyper::Method;
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The largest response body read; a bigger one is an error.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Why a client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA file cannot be read.
    #[error("cannot read the CA file {path}: {source}")]
    ReadCa {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The CA PEM holds no usable certificate.
    #[error("no usable CA certificate: {0}")]
    BadCa(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The URL is not `http(s)://host[:port]/path`.
    #[error("bad URL {0}")]
    BadUrl(String),
    /// No TCP connection (refused, unreachable, unknown host).
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// Host and port.
        address: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed (an untrusted certificate, a name that does not match).
    #[error("TLS handshake with {address} failed: {reason}")]
    Tls {
        /// Host and port.
        address: String,
        /// Why.
        reason: String,
    },
    /// No complete response within the timeout.
    #[error("no answer within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The connection broke, or the response is not HTTP or is too large.
    #[error("HTTP exchange failed: {0}")]
    Protocol(String),
}

/// A response: its status and whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// An HTTP and HTTPS client. Cheap to clone.
#[derive(Clone)]
pub struct HttpsClient {
    tls: TlsConnector,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient").finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl HttpsClient {
    /// A client trusting the operating system's root certificates.
    pub fn with_system_roots() -> Result<HttpsClient, TlsSetupError> {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "a system root certificate could not be loaded");
        }
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(found.certs);
        HttpsClient::with_roots(roots)
    }

    /// A client trusting only the certificates in `pem`: a private CA, or a service's
    /// self-signed certificate.
    pub fn with_ca_pem(pem: &[u8]) -> Result<HttpsClient, TlsSetupError> {
        let certificates = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| TlsSetupError::BadCa(error.to_string()))?;
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(certificates);
        if added == 0 {
            return Err(TlsSetupError::BadCa("the PEM holds no certificate".to_owned()));
        }
        HttpsClient::with_roots(roots)
    }

    /// A client trusting only the certificates in the PEM file at `path`.
    pub fn with_ca_file(path: &Path) -> Result<HttpsClient, TlsSetupError> {
        let pem = std::fs::read(path)
            .map_err(|source| TlsSetupError::ReadCa { path: path.display().to_string(), source })?;
        HttpsClient::with_ca_pem(&pem)
    }

    /// A client that accepts any certificate (signatures are still checked, the identity is
    /// not): only for a self-signed service in a test or a demo.
    pub fn insecure() -> Result<HttpsClient, TlsSetupError> {
        let provider = provider();
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth();
        Ok(HttpsClient::from_config(config))
    }

    fn with_roots(roots: RootCertStore) -> Result<HttpsClient, TlsSetupError> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpsClient::from_config(config))
    }

    fn from_config(mut config: rustls::ClientConfig) -> HttpsClient {
        // This client speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        HttpsClient { tls: TlsConnector::from(Arc::new(config)) }
    }

    /// `GET url`.
    pub async fn get(&self, url: &str, timeout: Duration) -> Result<Response, RequestError> {
        self.request(Method::GET, url, None, timeout).await
    }

    /// `POST url` with a JSON body.
    pub async fn post_json(
        &self,
        url: &str,
        body: &impl serde::Serialize,
        timeout: Duration,
    ) -> Result<Response, RequestError> {
        let body = serde_json::to_vec(body).map_err(|e| RequestError::Protocol(e.to_string()))?;
        self.request(Method::POST, url, Some(body), timeout).await
    }

    /// Sends one request (`body` as JSON) on a connection of its own and reads the whole
    /// response, all within `timeout`.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Response, RequestError> {
        self.request_with(method, url, body, &[], timeout).await
    }

    /// [`HttpsClient::request`] with more headers (`name`, value).
    pub async fn request_with(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
        timeout: Duration,
    ) -> Result<Response, RequestError> {
        let target = Target::parse(url)?;
        tokio::time::timeout(timeout, self.exchange(method, &target, body, headers))
            .await
            .map_err(|_| RequestError::Timeout(timeout))?
    }

    async fn exchange(
        &self,
        method: Method,
        target: &Target,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
    ) -> Result<Response, RequestError> {
        let address = format!("{}:{}", target.host, target.port);
        let tcp = TcpStream::connect((target.host.as_str(), target.port)).await.map_err(|e| {
            RequestError::Connect { address: address.clone(), reason: e.to_string() }
        })?;
        let _ = tcp.set_nodelay(true);
        let mut request = Request::builder()
            .method(method)
            .uri(target.path.as_str())
            .header(HOST, target.authority.as_str())
            .header(USER_AGENT, concat!("botline/", env!("CARGO_PKG_VERSION")))
            .header(ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| RequestError::BadUrl(e.to_string()))?;
        if target.tls {
            let name = ServerName::try_from(target.host.clone()).map_err(|_| {
                RequestError::BadUrl(format!("'{}' is not a host name", target.host))
            })?;
            let stream = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| RequestError::Tls { address, reason: e.to_string() })?;
            send(TokioIo::new(stream), request).await
        } else {
            send(TokioIo::new(tcp), request).await
        }
    }
}

/// Sends `request` over `io` with HTTP/1.1 and reads the response.
async fn send<I>(io: I, request: Request<Full<Bytes>>) -> Result<Response, RequestError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let protocol = |e: hyper::Error| RequestError::Protocol(e.to_string());
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(protocol)?;
    // Drives the connection; it ends when the response is read and the sender dropped.
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "HTTP connection ended with an error");
        }
    });
    let response = sender.send_request(request).await.map_err(protocol)?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| RequestError::Protocol(format!("reading the body: {e}")))?
        .to_bytes();
    // Without a sender the connection closes (TLS close_notify included) and `driver` ends.
    drop(sender);
    drop(driver);
    Ok(Response { status, body })
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    tls: bool,
    /// The host, without the brackets of an IPv6 address.
    host: String,
    port: u16,
    /// `host[:port]`, as the Host header has it.
    authority: String,
    /// Path and query.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, RequestError> {
        let bad = || RequestError::BadUrl(url.to_owned());
        let uri: Uri = url.parse().map_err(|_| bad())?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?;
        if authority.as_str().contains('@') {
            return Err(bad());
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(bad());
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Ok(Target { tls, host, port, authority: authority.as_str().to_owned(), path })
    }
}

/// Checks URLs up front, so a bad one is a configuration error rather than a failed task.
pub fn check_url(url: &str) -> Result<(), RequestError> {
    Target::parse(url).map(|_| ())
}

/// A verifier that accepts any certificate but still checks the handshake's signatures.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_for_the_connection_and_the_request() {
        let target =
            Target::parse("https://127.0.0.1:8092/api/v1/equipment/cpe/ABC123?x=1").expect("valid");
        assert_eq!(
            target,
            Target {
                tls: true,
                host: "127.0.0.1".into(),
                port: 8092,
                authority: "127.0.0.1:8092".into(),
                path: "/api/v1/equipment/cpe/ABC123?x=1".into(),
            }
        );
        let v6 = Target::parse("http://[::1]/").expect("valid");
        assert_eq!((v6.host.as_str(), v6.port, v6.tls), ("::1", 80, false));
        assert_eq!(Target::parse("https://devices.example").expect("valid").port, 443);
        for bad in ["ftp://host/", "not a url", "/relative", "https://u:p@host/", "https:///x"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        assert!(matches!(HttpsClient::with_ca_pem(b"nothing here"), Err(TlsSetupError::BadCa(_))));
        assert!(matches!(
            HttpsClient::with_ca_file(Path::new("/nonexistent/ca.pem")),
            Err(TlsSetupError::ReadCa { .. })
        ));
        assert!(HttpsClient::insecure().is_ok());
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connection_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        let client = HttpsClient::insecure().expect("client");
        let error = client
            .get(&format!("https://127.0.0.1:{port}/"), Duration::from_secs(5))
            .await
            .expect_err("refused");
        assert!(matches!(error, RequestError::Connect { .. }), "{error}");
    }
}
