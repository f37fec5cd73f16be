//! NOOP: does nothing for a configurable time, for tests and benchmarks.
//!
//! Payload (optional JSON object): `{"duration_ms": 0, "fail": "retryable" | "fatal" | "crash"}`.
//! With a CSV attachment it sleeps `duration_ms` per row and records each row DONE; without one
//! it sleeps once and outputs `{"slept_ms": N}`. With `fail` it fails at the end, as told.
//!
//! `"fail": "crash"` is a fault-injection aid: at the end the bot process aborts
//! (`std::process::abort()`, as a segfault or an out-of-memory kill would end it), after it has
//! accepted the task and done its rows (those not reported yet die with it). Every run of such
//! a task kills its bot, so it is the "poison assignment" of the chaos tests
//! (`bot-agent/tests/chaos.rs`): the orchestrator must end it FAILED after `max_attempts` runs
//! while the other tasks keep flowing. The whole agent stops, not just the task, so the mode is
//! off unless the process runs with `BOTLINE_FAULT_INJECTION=1` (the chaos tests set it on the
//! bot processes they start): elsewhere, e.g. the bots `botline-demo` runs inside its own
//! process, such a task fails (not retryable) instead of taking the process down.

use std::time::Duration;

use broker_config::{Assignment, Attachment, RowOutcome, RowStatus, System};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{NO_SIZE_LIMIT, Outcome, row_number, rows_to_do};
use crate::progress::ProgressSink;

/// The environment variable that lets `"fail": "crash"` abort the process (value `1`).
pub const FAULT_INJECTION: &str = "BOTLINE_FAULT_INJECTION";

/// The error of a task told to crash a bot whose fault injection is off.
pub const CRASH_REFUSED: &str =
    "NOOP told to crash, but fault injection is off here (BOTLINE_FAULT_INJECTION=1 turns it on)";

/// Whether `"fail": "crash"` may abort the process, given [`FAULT_INJECTION`]'s value.
pub fn crash_allowed(value: Option<&str>) -> bool {
    value == Some("1")
}

/// How a NOOP task ends when told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// `task.failed` with `retryable: true`.
    Retryable,
    /// `task.failed` with `retryable: false`.
    Fatal,
    /// No report at all: the bot process aborts (fault injection; see the module docs).
    Crash,
}

/// A NOOP task's payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NoopPayload {
    /// How long to sleep (per row, with a CSV).
    #[serde(default)]
    pub duration_ms: u64,
    /// Fail at the end, this way.
    #[serde(default)]
    pub fail: Option<FailMode>,
}

impl NoopPayload {
    /// Reads the payload; none (or `null`) means every default.
    pub fn parse(payload: Option<&Value>) -> Result<NoopPayload, String> {
        match payload {
            None | Some(Value::Null) => Ok(NoopPayload::default()),
            // A derived struct would also take an array of its fields: only objects are payloads.
            Some(value) if !value.is_object() => {
                Err(format!("bad NOOP payload: expected a JSON object, got {value}"))
            }
            Some(value) => NoopPayload::deserialize(value)
                .map_err(|error| format!("bad NOOP payload: {error}")),
        }
    }
}

/// Runs a NOOP task.
pub async fn run(
    assignment: &Assignment,
    sink: &mut ProgressSink,
    cancel: &CancellationToken,
) -> Outcome {
    let payload = match NoopPayload::parse(assignment.payload.as_ref()) {
        Ok(payload) => payload,
        Err(error) => return Outcome::fatal(error),
    };
    let duration = Duration::from_millis(payload.duration_ms);
    let output = match assignment.attachment.as_deref() {
        Some(encoded) => {
            let attachment =
                match Attachment::from_base64(encoded, &System::NOOP, &[], NO_SIZE_LIMIT) {
                    Ok(attachment) => attachment,
                    Err(error) => return Outcome::fatal(error.to_string()),
                };
            for index in rows_to_do(assignment, attachment.row_count()) {
                if !sleep(duration, cancel).await {
                    return Outcome::Cancelled;
                }
                let row = row_number(index);
                sink.record(RowOutcome {
                    row,
                    status: RowStatus::Done,
                    message: format!("row {row} done"),
                });
            }
            None
        }
        None => {
            if !sleep(duration, cancel).await {
                return Outcome::Cancelled;
            }
            Some(json!({ "slept_ms": payload.duration_ms }))
        }
    };
    match payload.fail {
        Some(FailMode::Crash) if crash_allowed(std::env::var(FAULT_INJECTION).ok().as_deref()) => {
            crash(assignment)
        }
        Some(FailMode::Crash) => Outcome::fatal(CRASH_REFUSED),
        Some(mode) => Outcome::Failed {
            error: "NOOP told to fail".to_owned(),
            retryable: mode == FailMode::Retryable,
        },
        None => Outcome::Completed { output },
    }
}

/// Ends the whole process at once, as a crash would: no unwinding, no final event, no ack for
/// anything in flight. The orchestrator learns of it from the bot's silence or its restart.
fn crash(assignment: &Assignment) -> ! {
    tracing::error!(task_id = %assignment.task.task_id, attempt = assignment.task.attempt, "NOOP told to crash: aborting the bot process");
    std::process::abort()
}

/// Sleeps for `duration` unless cancelled first; whether it slept.
async fn sleep(duration: Duration, cancel: &CancellationToken) -> bool {
    if cancel.is_cancelled() {
        return false;
    }
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(duration) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_config::TaskRef;

    #[test]
    fn payloads_default_and_refuse_bad_shapes() {
        assert_eq!(NoopPayload::parse(None), Ok(NoopPayload::default()));
        assert_eq!(NoopPayload::parse(Some(&Value::Null)), Ok(NoopPayload::default()));
        assert_eq!(
            NoopPayload::parse(Some(&json!({"duration_ms": 25, "fail": "retryable"}))),
            Ok(NoopPayload { duration_ms: 25, fail: Some(FailMode::Retryable) })
        );
        assert_eq!(
            NoopPayload::parse(Some(&json!({"fail": "fatal"}))).map(|p| p.fail),
            Ok(Some(FailMode::Fatal))
        );
        assert_eq!(
            NoopPayload::parse(Some(&json!({"duration_ms": 0, "fail": "crash"}))),
            Ok(NoopPayload { duration_ms: 0, fail: Some(FailMode::Crash) })
        );
        // Only the lowercase word: a typo must not turn a task into a poison one, or back.
        assert!(NoopPayload::parse(Some(&json!({"fail": "Crash"}))).is_err());
        assert!(NoopPayload::parse(Some(&json!({"fail": "abort"}))).is_err());
        let bad = NoopPayload::parse(Some(&json!({"fail": "sometimes"}))).expect_err("bad");
        assert!(bad.starts_with("bad NOOP payload"), "{bad}");
        assert!(NoopPayload::parse(Some(&json!({"duration_ms": -1}))).is_err());
        assert!(NoopPayload::parse(Some(&json!([1]))).is_err());
    }

    fn assignment(attachment: Option<&str>, payload: Value, resume: u32) -> Assignment {
        Assignment {
            task: TaskRef { task_id: uuid::Uuid::new_v4(), attempt: 1 },
            system: System::NOOP,
            description: "test".into(),
            attachment: attachment.map(|csv| {
                Attachment::parse(csv.to_owned(), &System::NOOP, &[]).expect("csv").to_base64()
            }),
            payload: Some(payload),
            resume_after_row: resume,
            offer_expires_at: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn rows_after_the_resume_point_are_done_then_the_failure_told() {
        let (mut sink, mut rows) = ProgressSink::channel();
        let task = assignment(Some("a\n1\n2\n3\n4\n"), json!({"fail": "fatal"}), 2);
        let outcome = run(&task, &mut sink, &CancellationToken::new()).await;
        assert_eq!(outcome, Outcome::fatal("NOOP told to fail"));
        drop(sink);
        let mut done = Vec::new();
        while let Some(row) = rows.recv().await {
            done.push((row.row, row.status, row.message));
        }
        assert_eq!(
            done,
            [
                (3, RowStatus::Done, "row 3 done".to_owned()),
                (4, RowStatus::Done, "row 4 done".to_owned())
            ]
        );
    }

    #[test]
    fn crashing_needs_fault_injection_turned_on() {
        assert!(crash_allowed(Some("1")));
        assert!(!crash_allowed(None));
        assert!(!crash_allowed(Some("0")));
        assert!(!crash_allowed(Some("yes")));
    }

    #[tokio::test]
    async fn a_crash_without_fault_injection_is_a_fatal_failure() {
        // The unit tests never set BOTLINE_FAULT_INJECTION (or this would abort them all).
        assert_eq!(std::env::var(FAULT_INJECTION).ok(), None);
        let (mut sink, _rows) = ProgressSink::channel();
        let task = assignment(None, json!({"fail": "crash"}), 0);
        let outcome = run(&task, &mut sink, &CancellationToken::new()).await;
        assert_eq!(outcome, Outcome::fatal(CRASH_REFUSED));
    }

    #[tokio::test]
    async fn without_a_csv_it_sleeps_once_and_says_how_long() {
        let (mut sink, _rows) = ProgressSink::channel();
        let task = assignment(None, json!({"duration_ms": 1}), 0);
        let outcome = run(&task, &mut sink, &CancellationToken::new()).await;
        assert_eq!(outcome, Outcome::Completed { output: Some(json!({"slept_ms": 1})) });
        let cancel = CancellationToken::new();
        cancel.cancel();
        let long = assignment(None, json!({"duration_ms": 600_000}), 0);
        assert_eq!(run(&long, &mut sink, &cancel).await, Outcome::Cancelled);
    }
}
