//! Prometheus metrics, served at `GET /metrics` in the text format.
//!
//! Two kinds, named `botline_*` after Prometheus' conventions (base units, `_total` counters):
//! - recorded where things happen, through the `metrics` facade and `metrics-exporter-prometheus`:
//!   task history entries by kind (offers are `assigned`, retries `failed` then `assigned`
//!   again, stale events `stale_event`), wait and run times per system, runs ended per bot,
//!   event batches and their lag, HTTP requests by route, dead letters by queue, ETL records;
//! - read from the database at each scrape (by `http::metrics`), so they are right whichever
//!   orchestrator of a cluster made the change: tasks by status and system, bots by status, open
//!   incidents.
//!
//! Labels are bounded: statuses, systems (the registry's), history kinds, routes as declared
//! (`/api/v1/tasks/:id`, never an id), bot names (the fleet's). No task id is ever a label.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Seconds, for every `_seconds` histogram: from a millisecond (an API call) to an hour (a long
/// run or a deep backlog).
const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
/// Events per consumed batch: 1 idle, up to the prefetch under load.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

/// The process's recorder, installed on first use. A program that installed another recorder
/// first keeps it: then only the scraped gauges appear here.
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(EVENT_BATCH.into()), BATCH_BUCKETS))
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: /metrics shows only the gauges read from the database");
        }
        describe();
        handle
    })
}

/// Installs the recorder, so what follows is counted: call at start.
pub fn install() {
    handle();
}

/// Keeps the recorder's histograms compact between scrapes until `shutdown` fires.
pub async fn keep_up(shutdown: tokio_util::sync::CancellationToken) {
    let handle = handle();
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => handle.run_upkeep(),
        }
    }
}

const TASK_EVENTS: &str = "botline_task_events_total";
const TASK_WAIT: &str = "botline_task_wait_seconds";
const TASK_RUN: &str = "botline_task_run_seconds";
const BOT_RUNS: &str = "botline_bot_runs_total";
const EVENT_BATCH: &str = "botline_event_batch_size";
const EVENT_LAG: &str = "botline_event_lag_seconds";
const HTTP_REQUESTS: &str = "botline_http_requests_total";
const HTTP_DURATION: &str = "botline_http_request_duration_seconds";
const ETL_RECORDS: &str = "botline_etl_records_total";
/// Tasks by status and system, read from the database at each scrape.
pub const TASKS: &str = "botline_tasks";
/// Bots by status, likewise.
pub const BOTS: &str = "botline_bots";
/// Incidents open, likewise.
pub const INCIDENTS_OPEN: &str = "botline_incidents_open";

fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        TASK_EVENTS,
        "Task history entries written, by kind (assigned = an offer, stale_event, offer_expired, …)"
    );
    describe_histogram!(
        TASK_WAIT,
        Unit::Seconds,
        "From a task's creation to its acceptance, by system"
    );
    describe_histogram!(
        TASK_RUN,
        Unit::Seconds,
        "From a run's start to its end, by system and outcome"
    );
    describe_counter!(BOT_RUNS, "Runs a bot ended, by bot and outcome (completed, failed)");
    describe_histogram!(EVENT_BATCH, "Bot events applied per batch of the event consumer");
    describe_histogram!(
        EVENT_LAG,
        Unit::Seconds,
        "From a bot sending an event to its being applied"
    );
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by route, method and status");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request latency, by route and method");
    describe_counter!(
        DEAD_LETTERED,
        "Messages the orchestrator's consumers dead-lettered, by the queue they came from"
    );
    describe_counter!(
        ETL_RECORDS,
        "Attendance records settled, by outcome (loaded: acknowledged; refused: dead-lettered)"
    );
}

/// The dead-letter counter broker-config's consumers increment.
pub const DEAD_LETTERED: &str = broker_config::amqp::DEAD_LETTERED_METRIC;

/// A task history entry written.
pub fn task_event(kind: &'static str) {
    metrics::counter!(TASK_EVENTS, "kind" => kind).increment(1);
}

/// What applying bots' events measured, recorded once their transaction has committed.
#[derive(Debug, Clone)]
pub enum Measure {
    /// A run began (accepted, or its first row reported).
    Started {
        /// The task's system.
        system: String,
        /// Since the task was created.
        waited: Duration,
    },
    /// A run ended.
    Ended {
        /// The task's system.
        system: String,
        /// The bot that ran it.
        bot: String,
        /// `completed` or `failed`.
        outcome: &'static str,
        /// Since the task's first start, when it has one.
        ran: Option<Duration>,
    },
}

impl Measure {
    /// Records it.
    pub fn record(self) {
        match self {
            Measure::Started { system, waited } => {
                metrics::histogram!(TASK_WAIT, "system" => system).record(waited.as_secs_f64());
            }
            Measure::Ended { system, bot, outcome, ran } => {
                if let Some(ran) = ran {
                    metrics::histogram!(TASK_RUN, "system" => system.clone(), "outcome" => outcome)
                        .record(ran.as_secs_f64());
                }
                metrics::counter!(BOT_RUNS, "bot" => bot, "system" => system, "outcome" => outcome)
                    .increment(1);
            }
        }
    }
}

/// One batch of the event consumer: how many events, and how long after their sending.
pub fn event_batch(events: usize, lags: impl Iterator<Item = Duration>) {
    if events == 0 {
        // Every message of the batch was refused before it was read: no events applied.
        return;
    }
    #[allow(clippy::cast_precision_loss)] // a batch is at most the prefetch (u16)
    metrics::histogram!(EVENT_BATCH).record(events as f64);
    let lag = metrics::histogram!(EVENT_LAG);
    for each in lags {
        lag.record(each.as_secs_f64());
    }
}

/// One HTTP request answered.
pub fn http_request(route: String, method: String, status: u16, took: Duration) {
    metrics::histogram!(HTTP_DURATION, "route" => route.clone(), "method" => method.clone())
        .record(took.as_secs_f64());
    metrics::counter!(HTTP_REQUESTS, "route" => route, "method" => method, "status" => status.to_string())
        .increment(1);
}

/// What one batch of the ETL decided: records acknowledged (loaded now, or already loaded) and
/// refused (dead-lettered). Those left in the queue for later are counted when they settle.
pub fn etl_records(decisions: &[broker_config::Decision]) {
    use broker_config::Decision;
    let count = |wanted: fn(&Decision) -> bool| {
        u64::try_from(decisions.iter().filter(|d| wanted(d)).count()).unwrap_or(u64::MAX)
    };
    metrics::counter!(ETL_RECORDS, "outcome" => "loaded")
        .increment(count(|d| matches!(d, Decision::Ack)));
    metrics::counter!(ETL_RECORDS, "outcome" => "refused")
        .increment(count(|d| matches!(d, Decision::DeadLetter(_))));
}

/// What was recorded, in the text format: what `GET /metrics` ends with, after the gauges it
/// reads from the database (`http::metrics`).
pub fn render_recorded() -> String {
    handle().render()
}

/// Appends gauge `name` with its series (labels, value) in the text format.
pub fn gauge(
    text: &mut String,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (String, i64)>,
) {
    use std::fmt::Write as _;
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in series {
        let _ = if labels.is_empty() {
            writeln!(text, "{name} {value}")
        } else {
            writeln!(text, "{name}{{{labels}}} {value}")
        };
    }
}

/// A label value as the text format writes it: backslash, quote and newline escaped.
pub fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_as_the_text_format_wants() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("two\nlines"), r"two\nlines");
        let mut text = String::new();
        gauge(&mut text, "x", "help", [("k=\"v\"".to_owned(), 3), (String::new(), 4)].into_iter());
        assert_eq!(text, "# HELP x help\n# TYPE x gauge\nx{k=\"v\"} 3\nx 4\n");
    }
}
