//! Incidents: monitoring platforms report failing services (a service and a return code); a
//! report that matches an action's trigger opens an incident for it, or counts one more
//! occurrence on the open one; the incident then owes communications — to customers once its
//! occurrences reach a minimum, to each internal escalation level once its volume or its
//! minutes are reached, and "service restored" when it is resolved — and each goes out as a
//! NOTIFY task through the same pipeline as any other work.
//!
//! - [`engine`]: the engine, [`Incidents`]. [`Incidents::report`] counts a request's reports
//!   (one occurrence per action the request matches, as the original counts them),
//!   [`Incidents::check_incidents`] escalates by minutes and resolves quiet incidents,
//!   and [`Incidents::resolve`] resolves on request; the app runs the timer and the consumer
//!   as two watched loops.
//! - [`timer`]: the timer that calls [`Incidents::check_incidents`] (tests call it with a clock
//!   of their own).
//! - [`consumer`]: the consumer of `botline.monitoring.incidents`, and what the broker is told of
//!   each message.
//! - [`store`]: the rows: incidents read for the API and locked for a change, communications
//!   stored with their NOTIFY tasks.
//! - [`views`]: what the API shows ([`Incident`], [`IncidentDetail`], [`ReportOutcome`], …).
//! - [`rules`]: what is due, when an incident is quiet, whether levels rise (pure, `now` in).
//! - [`report`]: the two input shapes, checked into [`Trigger`](report::Trigger)s.
//! - [`actions`]: actions (CRUD), checked into [`ActionSpec`](actions::ActionSpec).
//! - [`entity`]: the tables.
//! - [`sample`]: the classic action the demo loads.
//!
//! Exactly once, under concurrency, on both databases: every change to an incident happens in a
//! transaction that first takes the incident's lock — on PostgreSQL the action's row
//! (`SELECT … FOR UPDATE`) for a report, the incident's row (a guarded `UPDATE … RETURNING`)
//! for the timer and resolution; on SQLite the database's write lock, taken by making a write
//! the transaction's first statement — and the communications owed are recorded, with their
//! NOTIFY tasks, in that same transaction.

pub mod actions;
pub mod consumer;
pub mod engine;
pub mod entity;
pub mod report;
pub mod rules;
pub mod sample;
pub mod store;
pub mod timer;
pub mod views;

pub use self::engine::{CheckSummary, INTERNAL_CHANNEL, IncidentSettings, Incidents, Source};
pub use self::rules::{DEFAULT_RESTORED_MESSAGE, DEFAULT_RESTORED_MESSAGE_PT};
pub use self::store::{
    NOTIFY_MAX_ATTEMPTS, NOTIFY_PRIORITY, get_incident, list_incidents, list_unclassified,
};
pub use self::views::{
    ActionRef, Communication, CommunicationKind, Incident, IncidentDetail, IncidentStatus,
    ReportOutcome, ReportResult, SentItem, SentSummary, UnclassifiedReport, summarize,
};
