//! Fault injection, for tests only: named points in the code where a test can make the process
//! die on purpose, to prove what a crash at that very point leaves behind (the fault tests in
//! `bot-agent/tests/orchestrator_faults.rs`).
//!
//! `BOTLINE_CRASH_AT=dispatch.after_commit orchestrator` aborts the process, as `kill -9` would
//! (no destructor runs, nothing is flushed, no connection is closed politely), the first time it
//! reaches [`hit`]`("dispatch.after_commit")`. Without the variable every point costs a load and
//! a comparison with `None`; the variable is read once.
//!
//! Points:
//! - `dispatch.after_commit`: offers are committed (tasks ASSIGNED, bots BUSY), by a dispatch
//!   pass or by a batch of events that freed bots, and none of them is published.

use std::sync::OnceLock;

/// The environment variable naming the point to crash at.
pub const CRASH_AT: &str = "BOTLINE_CRASH_AT";

/// The point named by [`CRASH_AT`], read on the first [`hit`].
static CRASH_POINT: OnceLock<Option<String>> = OnceLock::new();

/// Aborts the process if [`CRASH_AT`] names `point`; does nothing otherwise.
pub fn hit(point: &str) {
    let armed = CRASH_POINT.get_or_init(|| std::env::var(CRASH_AT).ok());
    if armed.as_deref() == Some(point) {
        // The one line a crash leaves: the test reads it in the process's log.
        eprintln!("failpoint {point}: aborting ({CRASH_AT})");
        std::process::abort();
    }
}
