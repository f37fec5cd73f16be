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
//!
//! `BOTLINE_END_LOOP=dispatcher orchestrator` makes one loop of
//! [`Orchestrator::serve`](crate::app::Orchestrator::serve) panic as it starts
//! (`dispatcher:return`: return instead), to prove that the orchestrator then stops with an
//! error naming it (`orchestrator/tests/loops.rs`). The names are those of [`crate::app`]'s
//! constants: `dispatcher`, `event-consumer`, `incident-timer`, `monitoring-consumer`,
//! `attendance-etl`.

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

/// The environment variable naming a loop to end early, and how: `NAME` (panic) or
/// `NAME:return`.
pub const END_LOOP: &str = "BOTLINE_END_LOOP";

/// How [`END_LOOP`] ends a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopEnd {
    /// It panics.
    Panic,
    /// It returns, as if its work were done.
    Return,
}

/// The loop [`END_LOOP`] names and how, read on the first [`loop_end`].
static END_LOOP_AT: OnceLock<Option<(String, LoopEnd)>> = OnceLock::new();

/// How the loop `name` is to end at once, if [`END_LOOP`] names it.
pub fn loop_end(name: &str) -> Option<LoopEnd> {
    let armed = END_LOOP_AT.get_or_init(|| std::env::var(END_LOOP).ok().map(|v| parse_end(&v)));
    match armed {
        Some((armed, end)) if armed == name => Some(*end),
        _ => None,
    }
}

/// `NAME` or `NAME:return`.
fn parse_end(value: &str) -> (String, LoopEnd) {
    match value.trim().split_once(':') {
        Some((name, "return")) => (name.to_owned(), LoopEnd::Return),
        Some((name, _)) => (name.to_owned(), LoopEnd::Panic),
        None => (value.trim().to_owned(), LoopEnd::Panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_is_named_alone_or_with_how_it_ends() {
        assert_eq!(parse_end("dispatcher"), ("dispatcher".to_owned(), LoopEnd::Panic));
        assert_eq!(
            parse_end(" attendance-etl:return "),
            ("attendance-etl".into(), LoopEnd::Return)
        );
        assert_eq!(parse_end("event-consumer:panic"), ("event-consumer".into(), LoopEnd::Panic));
    }
}
