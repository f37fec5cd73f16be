//! How a connection reaches RabbitMQ: the broker URL taken apart ([`Endpoint`]), then a TCP
//! connection, wrapped in TLS (rustls with ring) for `amqps://`, handed to lapin as its stream.
//!
//! Why not lapin's own TLS features: they bring rustls-connector, p12-keystore and a dozen crypto
//! crates, pick aws-lc-rs (which needs cmake) unless told otherwise, and add a CA file to the
//! system's roots rather than trusting it alone. lapin's `Connection::connector` takes a function
//! that opens the stream; the stream's type comes from the runtime's reactor, so
//! [`TransportReactor`] is tokio's with a stream that is either plain TCP or TLS.
//!
//! Taking the URL apart here also fixes a quirk of lapin's URI parser: it keeps a host only when
//! the `url` crate calls it a domain, so `amqp://[::1]:5672/` (an IPv6 literal) would connect to
//! `localhost`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_rs::traits::Reactor;
use async_rs::util::RuntimeParts;
use async_rs::{Runtime, Tokio};
use futures_util::Stream;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{AsyncTcpStream, Connection, ConnectionProperties};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt as _};
use tokio_util::either::Either;

use crate::tls::TlsFiles;

/// A connection's byte stream: plain TCP, or TLS over it.
type Transport = Either<TcpStream, TlsStream<TcpStream>>;

/// The runtime lapin runs a connection on: tokio, with [`TransportReactor`] for its streams.
type Kit = RuntimeParts<Tokio, TransportReactor>;

/// Where and how to reach a broker, from its URL.
pub(crate) struct Endpoint {
    /// The URL as lapin wants it (its host put right).
    uri: AMQPUri,
    host: url::Host<String>,
    port: u16,
    /// For `amqps://`: the TLS client and the name the server's certificate must bear.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The URL's `connection_timeout` (milliseconds), for the TCP connection and TLS handshake.
    timeout: Option<Duration>,
}

impl Endpoint {
    /// Takes `url` apart, and for `amqps://` reads its TLS files. Errors never show the URL's
    /// password.
    pub(crate) fn parse(url: &str) -> io::Result<Endpoint> {
        let redacted = crate::amqp::redact_url(url);
        let invalid = |reason: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                // lapin's parser quotes the URL in some of its errors.
                format!("invalid AMQP URL {redacted}: {}", reason.replace(url, &redacted)),
            )
        };
        let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        if parsed.cannot_be_a_base() {
            return Err(invalid("expected amqp://USER:PASSWORD@HOST:PORT/VHOST"));
        }
        let mut uri: AMQPUri = url.parse().map_err(|e: String| invalid(&e))?;
        let host = match parsed.host() {
            Some(url::Host::Domain(_)) => url::Host::Domain(uri.authority.host.clone()),
            Some(url::Host::Ipv4(ip)) => url::Host::Ipv4(ip),
            Some(url::Host::Ipv6(ip)) => url::Host::Ipv6(ip),
            None => return Err(invalid("no host")),
        };
        uri.authority.host = host.to_string();
        let files = TlsFiles::from_url(&parsed);
        let tls = match uri.scheme {
            AMQPScheme::AMQPS => {
                let config = files.client_config().map_err(io::Error::other)?;
                let server_name = match &host {
                    url::Host::Domain(name) => ServerName::try_from(name.clone())
                        .map_err(|e| invalid(&format!("host {name}: {e}")))?,
                    url::Host::Ipv4(ip) => ServerName::IpAddress(IpAddr::V4(*ip).into()),
                    url::Host::Ipv6(ip) => ServerName::IpAddress(IpAddr::V6(*ip).into()),
                };
                Some((TlsConnector::from(config), server_name))
            }
            // Files for a plain connection mean a mistake that would send the password in clear.
            AMQPScheme::AMQP if files.any() => {
                return Err(invalid(
                    "TLS files are given but the URL is amqp://, which does not use TLS: use amqps://",
                ));
            }
            AMQPScheme::AMQP => None,
        };
        let timeout = uri.query.connection_timeout.map(Duration::from_millis);
        Ok(Endpoint { port: uri.authority.port, uri, host, tls, timeout })
    }

    /// Whether connections use TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Opens a connection (TCP, then the TLS handshake for `amqps://`), lapin's AMQP handshake
    /// and all.
    pub(crate) async fn connect(
        self,
        properties: ConnectionProperties,
    ) -> Result<Connection, lapin::Error> {
        let runtime =
            Runtime::new(RuntimeParts::new(Tokio::current(), TransportReactor(Tokio::current())));
        let uri = self.uri.clone();
        let endpoint = Arc::new(self);
        let open = async move |_uri: AMQPUri, _runtime: Runtime<Kit>| {
            let transport = match endpoint.timeout {
                Some(limit) => {
                    tokio::time::timeout(limit, endpoint.open()).await.unwrap_or_else(|_elapsed| {
                        Err(io::Error::new(io::ErrorKind::TimedOut, "connection timed out"))
                    })
                }
                None => endpoint.open().await,
            };
            Ok(AsyncTcpStream::Plain(transport?.compat()))
        };
        Connection::connector(uri, runtime, open, properties).await
    }

    async fn open(&self) -> io::Result<Transport> {
        let tcp = match &self.host {
            url::Host::Domain(name) => TcpStream::connect((name.as_str(), self.port)).await?,
            url::Host::Ipv4(ip) => TcpStream::connect(SocketAddr::from((*ip, self.port))).await?,
            url::Host::Ipv6(ip) => TcpStream::connect(SocketAddr::from((*ip, self.port))).await?,
        };
        tcp.set_nodelay(true)?;
        let Some((connector, server_name)) = &self.tls else {
            return Ok(Either::Left(tcp));
        };
        match connector.connect(server_name.clone(), tcp).await {
            Ok(stream) => Ok(Either::Right(stream)),
            Err(error) => Err(io::Error::new(
                error.kind(),
                format!("TLS handshake with {}:{} failed: {error}", self.host, self.port),
            )),
        }
    }
}

/// Tokio's reactor, with [`Transport`] as its stream type.
#[derive(Debug, Clone)]
struct TransportReactor(Tokio);

impl Reactor for TransportReactor {
    type TcpStream = Compat<Transport>;
    type Sleep = <Tokio as Reactor>::Sleep;

    /// Unused by lapin, and unsupported: async-rs keeps the bound its own reactors need private.
    fn register<H: io::Read + io::Write + Send + 'static>(
        &self,
        _socket: H,
    ) -> io::Result<impl futures_util::AsyncRead + futures_util::AsyncWrite + Send + Unpin + 'static>
    {
        Err::<Self::TcpStream, _>(io::Error::new(
            io::ErrorKind::Unsupported,
            "registering a raw socket is not supported; connections open their own streams",
        ))
    }

    fn sleep(&self, duration: Duration) -> Self::Sleep {
        self.0.sleep(duration)
    }

    fn interval(&self, period: Duration) -> impl Stream<Item = Instant> + Send + 'static {
        self.0.interval(period)
    }

    fn tcp_connect_addr(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::TcpStream>> + Send + 'static {
        let plain = self.0.tcp_connect_addr(addr);
        async move { Ok(Either::Left(plain.await?.into_inner()).compat()) }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_host_is_kept_where_lapins_parser_says_localhost() {
        let url = "amqp://bot:pw@[::1]:5673/%2f";
        let lapins: AMQPUri = url.parse().unwrap();
        assert_eq!(lapins.authority.host, "localhost", "lapin's parser changed: simplify Endpoint");
        let endpoint = Endpoint::parse(url).unwrap();
        assert_eq!(endpoint.host, url::Host::<String>::Ipv6(std::net::Ipv6Addr::LOCALHOST));
        assert_eq!((endpoint.uri.authority.host.as_str(), endpoint.port), ("[::1]", 5673));
        assert!(!endpoint.is_tls());

        // An IPv4 address in a non-special URL is an opaque host name, which connects (and
        // makes a TLS server name) all the same.
        let endpoint = Endpoint::parse("amqp://bot:pw@10.0.0.5/%2f").unwrap();
        assert_eq!(endpoint.host, url::Host::Domain("10.0.0.5".to_owned()));
        assert_eq!(endpoint.port, 5672);
    }
}
