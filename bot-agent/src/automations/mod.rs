//! The automations: what a bot does for each system. Each one is
//! `run(assignment, &mut ProgressSink, cancel) -> Outcome`: it records every row's outcome in
//! the sink as soon as the row is done, checks `cancel` between rows (and steps), and never
//! panics on what the network or the input can do.

pub mod cpe;
pub mod noop;
pub mod notify;
pub mod program;
pub mod vivo360;

use std::collections::BTreeMap;

use broker_config::{Assignment, Builtin, System};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::progress::ProgressSink;

/// The size limit the agent gives [`broker_config::Attachment::from_base64`]: none, as the API
/// limited the attachment when the task was created.
pub const NO_SIZE_LIMIT: usize = usize::MAX;

/// How an automation ended. Row outcomes are not here: they went through the [`ProgressSink`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done: `task.completed`.
    Completed {
        /// The output, for systems without rows.
        output: Option<Value>,
    },
    /// The attempt failed: `task.failed`.
    Failed {
        /// What went wrong.
        error: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
    /// Stopped by its cancellation token before the end.
    Cancelled,
}

impl Outcome {
    /// A failure that another attempt would meet again (bad input).
    pub fn fatal(error: impl Into<String>) -> Outcome {
        Outcome::Failed { error: error.into(), retryable: false }
    }

    /// A failure another attempt may not meet (a system that is down).
    pub fn retryable(error: impl Into<String>) -> Outcome {
        Outcome::Failed { error: error.into(), retryable: true }
    }
}

/// Every automation of this build, with what they need (clients, settings).
#[derive(Debug, Clone)]
pub struct Automations {
    /// The Vivo360 user creation.
    pub vivo360: vivo360::Vivo360,
    /// The equipment activation, for a bot that runs CPE.
    pub cpe: Option<cpe::Cpe>,
    /// The delivery of incident communications to webhooks.
    pub notify: notify::Notify,
    /// The systems run by programs (--automation, --automations); one may replace a built-in.
    pub programs: BTreeMap<System, program::Program>,
}

impl Automations {
    /// Runs `assignment` with the automation of its system: how it ended, and the end of its
    /// log (external programs only).
    pub async fn run(
        &self,
        assignment: &Assignment,
        sink: &mut ProgressSink,
        cancel: &CancellationToken,
    ) -> (Outcome, Option<String>) {
        match self.programs.get(&assignment.system) {
            Some(program) => {
                let ran = program.run(assignment, sink, cancel).await;
                if let Some((done, total)) = ran.progress {
                    tracing::info!(done, total, "the program's last progress");
                }
                (ran.outcome, Some(ran.log).filter(|log| !log.is_empty()))
            }
            None => (self.run_builtin(assignment, sink, cancel).await, None),
        }
    }

    /// Runs `assignment` with a built-in automation.
    async fn run_builtin(
        &self,
        assignment: &Assignment,
        sink: &mut ProgressSink,
        cancel: &CancellationToken,
    ) -> Outcome {
        // The agent refuses offers for systems it does not run; the refusals here are for a
        // caller that did not ask.
        match assignment.system.builtin() {
            Some(Builtin::Noop) => noop::run(assignment, sink, cancel).await,
            Some(Builtin::Vivo360) => self.vivo360.run(assignment, sink, cancel).await,
            Some(Builtin::Cpe) => match &self.cpe {
                Some(cpe) => cpe.run(assignment, cancel).await,
                None => Outcome::fatal("this bot does not run CPE"),
            },
            Some(Builtin::Notify) => self.notify.run(assignment, cancel).await,
            None => Outcome::fatal(format!("this bot has no automation for {}", assignment.system)),
        }
    }
}

/// The 0-based indexes of the rows an attempt still has to do: rows `1..=resume_after_row`
/// (1-based) were done by an earlier attempt.
pub fn rows_to_do(assignment: &Assignment, row_count: usize) -> std::ops::Range<usize> {
    let skip = usize::try_from(assignment.resume_after_row).unwrap_or(usize::MAX);
    skip.min(row_count)..row_count
}

/// The 1-based row number of the row at `index`, as reported.
pub fn row_number(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}
