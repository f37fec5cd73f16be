//! Progress reporting: automations record row outcomes in a [`ProgressSink`]; a reporter loop
//! publishes them as `task.progress`, throttled by [`Throttle`] so that slow rows are reported
//! one by one as soon as they finish and fast rows in batches (leading and trailing edge).

use std::time::Duration;

use broker_config::{BotName, Event, RowOutcome, TaskRef};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::reporter::Reporter;

/// Where an automation records its row outcomes. Recording never waits: the rows are reported
/// by a loop of their own, so a slow broker does not slow the work down.
#[derive(Debug)]
pub struct ProgressSink {
    rows: mpsc::UnboundedSender<RowOutcome>,
}

impl ProgressSink {
    /// A sink and the receiving end of what is recorded in it (the reporter loop, or a test).
    pub fn channel() -> (ProgressSink, mpsc::UnboundedReceiver<RowOutcome>) {
        let (rows, receiver) = mpsc::unbounded_channel();
        (ProgressSink { rows }, receiver)
    }

    /// Records one row's outcome.
    pub fn record(&mut self, outcome: RowOutcome) {
        // The receiver is gone only when the task was cancelled: nobody wants the row any more.
        let _ = self.rows.send(outcome);
    }
}

/// What the throttle says to do with the buffered rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Nothing is buffered.
    Idle,
    /// Report the buffered rows now.
    Now,
    /// Report them at this time, unless more rows finish first (they join the batch).
    At(Instant),
}

/// The progress throttle: at most one report per interval, sent as soon as the interval allows.
#[derive(Debug, Clone)]
pub struct Throttle {
    interval: Duration,
    last_report: Option<Instant>,
}

impl Throttle {
    /// A throttle allowing one report per `interval`.
    pub fn new(interval: Duration) -> Throttle {
        Throttle { interval, last_report: None }
    }

    /// What to do at `now`, with rows buffered (`pending`) or not.
    pub fn decide(&self, now: Instant, pending: bool) -> Flush {
        if !pending {
            return Flush::Idle;
        }
        match self.last_report {
            Some(last) if now < last + self.interval => Flush::At(last + self.interval),
            _ => Flush::Now,
        }
    }

    /// A report was made (or tried: a failed one waits for the next interval too) at `now`.
    pub fn reported(&mut self, now: Instant) {
        self.last_report = Some(now);
    }
}

/// Reports the rows coming out of `rows` as `task.progress` events, throttled, until the sink
/// is dropped (the automation ended); returns the rows it could not report, for the final
/// event. Once `silence` is cancelled (the orchestrator cancelled the task) it reports nothing.
pub(crate) async fn report_progress(
    reporter: &Reporter,
    bot: &BotName,
    task: TaskRef,
    interval: Duration,
    mut rows: mpsc::UnboundedReceiver<RowOutcome>,
    silence: &CancellationToken,
) -> Vec<RowOutcome> {
    let mut throttle = Throttle::new(interval);
    let mut buffered: Vec<RowOutcome> = Vec::new();
    loop {
        let next = match throttle.decide(Instant::now(), !buffered.is_empty()) {
            Flush::Now => {
                let event = Event::TaskProgress {
                    task,
                    bot: bot.clone(),
                    rows: buffered.clone(),
                    at: chrono::Utc::now(),
                };
                if !silence.is_cancelled() {
                    match reporter.report(&event).await {
                        Ok(()) => buffered.clear(),
                        // Kept for the next report or the final event.
                        Err(error) => {
                            tracing::warn!(task_id = %task.task_id, %error, "progress not reported; keeping the rows")
                        }
                    }
                }
                throttle.reported(Instant::now());
                continue;
            }
            Flush::At(when) => Some(when),
            Flush::Idle => None,
        };
        tokio::select! {
            row = rows.recv() => match row {
                Some(row) => {
                    crate::metrics::row(bot, row.status);
                    buffered.push(row);
                }
                None => return buffered,
            },
            () = sleep_until(next), if next.is_some() => {}
        }
    }
}

async fn sleep_until(when: Option<Instant>) {
    if let Some(when) = when {
        tokio::time::sleep_until(when).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays rows finishing at `finish_ms` (sorted) through the throttle as the reporter loop
    /// does, with reports taking no time; returns the row numbers (1-based) of each report.
    fn batches(finish_ms: &[u64], interval_ms: u64) -> Vec<Vec<usize>> {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut throttle = Throttle::new(Duration::from_millis(interval_ms));
        let mut buffered = Vec::new();
        let mut sent = Vec::new();
        let mut flush = |throttle: &mut Throttle, buffered: &mut Vec<usize>, now| {
            sent.push(std::mem::take(buffered));
            throttle.reported(now);
        };
        // The time the reporter loop would wake up for a trailing report, if it sleeps.
        let mut wake_at = None;
        for (index, &ms) in finish_ms.iter().enumerate() {
            if let Some(when) = wake_at.take()
                && when <= at(ms)
            {
                flush(&mut throttle, &mut buffered, when);
            }
            buffered.push(index + 1);
            match throttle.decide(at(ms), true) {
                Flush::Now => flush(&mut throttle, &mut buffered, at(ms)),
                Flush::At(when) => wake_at = Some(when),
                Flush::Idle => {}
            }
        }
        if let Some(when) = wake_at {
            flush(&mut throttle, &mut buffered, when);
        }
        sent
    }

    #[test]
    fn slow_rows_are_reported_one_by_one() {
        assert_eq!(batches(&[300, 600, 900], 250), [vec![1], vec![2], vec![3]]);
    }

    #[test]
    fn fast_rows_are_batched_with_the_first_one_reported_at_once() {
        // Row 1 at 0 ms goes at once (leading edge); 2..=5 wait for the end of the interval
        // (trailing edge, at 250 ms); 6 and 7 finish less than an interval after that report,
        // so they wait for the next one (500 ms); row 8 comes after a quiet spell: at once.
        assert_eq!(
            batches(&[0, 50, 100, 150, 200, 300, 320, 900], 250),
            [vec![1], vec![2, 3, 4, 5], vec![6, 7], vec![8]]
        );
    }

    #[test]
    fn nothing_buffered_means_nothing_to_do_and_the_interval_counts_from_the_last_report() {
        let start = Instant::now();
        let mut throttle = Throttle::new(Duration::from_millis(100));
        assert_eq!(throttle.decide(start, false), Flush::Idle);
        assert_eq!(throttle.decide(start, true), Flush::Now);
        throttle.reported(start);
        let later = start + Duration::from_millis(40);
        assert_eq!(throttle.decide(later, true), Flush::At(start + Duration::from_millis(100)));
        assert_eq!(throttle.decide(start + Duration::from_millis(100), true), Flush::Now);
    }
}
