//! HTTP over TLS between Botline's programs (feature `https`), with rustls and the ring provider
//! everywhere: the client the orchestrator POSTs offers to bots with and the CPE automation calls
//! the equipment config service with ([`HttpsClient`]), and the serving of a router over HTTPS
//! that the orchestrator's API, an HTTP bot and the simulators share ([`TlsMaterial`],
//! [`serve`]).
//!
//! AMQP over TLS is [`crate::tls`]; self-signed certificates for tests and the demo are made by
//! the test doubles (`simulators::tls`), so no production binary carries a certificate generator.

mod client;
mod server;

pub use client::{
    HttpsClient, MAX_RESPONSE_BYTES, Method, RequestError, Response, TlsSetupError, check_url,
};
pub use server::{TlsError, TlsMaterial, certificates, serve};
