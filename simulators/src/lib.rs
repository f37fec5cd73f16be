//! Stand-ins for the systems Botline's bots automate, so the pipeline can be run, demonstrated
//! and tested without the real ones.
//!
//! # Layout
//!
//! - [`vivo360`]: the Vivo360 user-administration portal (login, a user form validated field by
//!   field, submission), with failure injection. Its pure parts live in submodules: `user`
//!   (field validation into types), `portal` (the state machine: sessions, form tokens, drafts,
//!   users; randomness and `now` come in as arguments) and `pages` (HTML). The module itself is
//!   the HTTP shell.
//! - [`equipment`]: the equipment config service ("service A") that configures a CPE
//!   synchronously, as slowly as a real device, with failure injection; over HTTP or HTTPS.
//! - [`notify`]: the notification sink that records the incident communications bots deliver
//!   to webhooks, honouring `Idempotency-Key`.
//! - `control`: what the simulators share: the `down` / `delay_ms` failure injection in front
//!   of their public routes and the JSON error shape of their control APIs.
//! - [`tls`]: self-signed certificates made at start (serving HTTPS is `broker_config::https`,
//!   shared with the orchestrator and the agent).
//! - `src/main.rs`: the thin `simulators` binary, one subcommand per stand-in.
//!
//! Every simulator exposes a `…Config` (with `Default`), a `router(state)` and
//! `serve(listener, config, shutdown)`, so tests and the demo (`botline-demo`) start them
//! in-process on port 0 and stop them with a cancellation token. Each has a JSON control API
//! under `/_control` that failure injection never touches.

mod control;
pub mod equipment;
pub mod notify;
pub mod tls;
pub mod vivo360;
