//! Botline's orchestrator: it keeps bots and tasks in the database and serves the REST API.
//!
//! Layout (docs/architecture.md has the schema, the topology and the task life):
//! - [`config`]: flags with environment variables behind them.
//! - [`startup`]: opening and migrating the database, checking the broker, [`StartError`].
//! - [`app`]: [`Orchestrator::start`] gets ready under one cancellation token;
//!   [`Orchestrator::serve`] runs the API on a given listener (tests bind port 0) and the loops
//!   beside it, watched, until the token fires.
//! - [`http`]: routes and handlers, thin shells over the modules below.
//! - [`tasks`], [`bots`]: what clients send and are shown, and the status changes they may ask
//!   for; pure. [`systems`]: the registered systems, their input contracts and the registry a
//!   task is checked against; pure.
//! - [`pipeline`]: the dispatcher, the event consumer and the sweeps (the task life).
//! - [`incidents`]: monitoring reports counted into incidents, escalated and communicated as
//!   NOTIFY tasks; actions (the rules), the timer and the `botline.monitoring` consumer.
//! - [`etl`]: the attendance ETL (records from `botline.attendance` into the database), its
//!   synthetic producer and its reports.
//! - [`store`]: tasks, bots and history as stored, and the transaction rule; [`entity`]: the
//!   sea-orm rows under it.
//! - [`changes`]: notices of committed changes, streamed to the dashboard.
//! - [`pagination`]: limit/offset and cursor paging shared by the lists.
//! - [`error`]: [`ApiError`](error::ApiError), the one error type mapped to HTTP; [`failure`]:
//!   [`Failure`](failure::Failure), what the consumers make of an error, and the one classifier
//!   of database errors; [`clock`]: timestamps as stored; [`failpoint`]: failures on purpose,
//!   for the fault tests; [`defaults`]: the flags' defaults.
//!
//! Modules point down this list, never up: `http` → `pipeline`, `incidents` → `store` →
//! `entity`; `tasks` and `bots` are read by all of them and read only `entity`, `error` and
//! (`tasks`) `systems`.

pub mod app;
pub mod bots;
pub mod changes;
pub mod clock;
pub mod config;
pub mod defaults;
pub mod entity;
pub mod error;
pub mod etl;
pub mod failpoint;
pub mod failure;
pub mod http;
pub mod incidents;
pub mod metrics;
pub mod monitoring;
pub mod pagination;
pub mod pipeline;
pub mod startup;
pub mod store;
pub mod systems;
pub mod tasks;

pub use app::{Orchestrator, ServeError};
pub use config::Config;
pub use startup::StartError;
