//! The agent's Prometheus metrics, served at `http://<--metrics-listen>/metrics` when that flag
//! is given (off by default: a bot on a desktop should open no port it was not asked to).
//!
//! Labelled by `bot` (one process is one bot, but the demo runs three in one), system, and
//! outcomes from fixed lists: no task id is ever a label.
//! - `botline_agent_offers_total{bot,answer}`: offers and how they were answered (`accepted`,
//!   `rejected`, `expired`, `already_running`, `ended`);
//! - `botline_agent_runs_total{bot,system,outcome}` and `botline_agent_run_seconds{bot,system}`:
//!   runs that ended here (`completed`, `failed`, `released`), and how long they took;
//! - `botline_agent_rows_total{bot,status}`: CSV rows done, by outcome;
//! - `botline_agent_slots{bot}` and `botline_agent_tasks_running{bot}`: capacity and use;
//! - `botline_dead_lettered_total{queue}` (broker-config): offers the agent dead-lettered.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use broker_config::{BotName, RowStatus, System};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::error::AgentError;

const OFFERS: &str = "botline_agent_offers_total";
const RUNS: &str = "botline_agent_runs_total";
const RUN_SECONDS: &str = "botline_agent_run_seconds";
const ROWS: &str = "botline_agent_rows_total";
const SLOTS: &str = "botline_agent_slots";
const RUNNING: &str = "botline_agent_tasks_running";

/// Seconds, for run times: from a tenth of a second (a NOOP) to an hour (a long CSV).
const SECONDS_BUCKETS: &[f64] =
    &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0];

/// An offer's answer.
pub(crate) fn offer(bot: &BotName, answer: &'static str) {
    metrics::counter!(OFFERS, "bot" => bot.as_str().to_owned(), "answer" => answer).increment(1);
}

/// A run that ended here, with how it ended and how long it took.
pub(crate) fn run(bot: &BotName, system: &System, outcome: &'static str, took: Duration) {
    let (bot, system) = (bot.as_str().to_owned(), system.as_str().to_owned());
    metrics::counter!(RUNS, "bot" => bot.clone(), "system" => system.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!(RUN_SECONDS, "bot" => bot, "system" => system).record(took.as_secs_f64());
}

/// A CSV row done.
pub(crate) fn row(bot: &BotName, status: RowStatus) {
    let status = match status {
        RowStatus::Created => "created",
        RowStatus::Rejected => "rejected",
        RowStatus::Failed => "failed",
        RowStatus::Done => "done",
    };
    metrics::counter!(ROWS, "bot" => bot.as_str().to_owned(), "status" => status).increment(1);
}

/// The bot's slots, and how many run a task now.
pub(crate) fn slots(bot: &BotName, slots: u32, running: usize) {
    metrics::gauge!(SLOTS, "bot" => bot.as_str().to_owned()).set(f64::from(slots));
    metrics::gauge!(RUNNING, "bot" => bot.as_str().to_owned()).set(running as f64);
}

/// Installs the process's recorder; `None` when another was installed first (the demo's
/// orchestrator, in the same process: the agent's series are then in its `/metrics`).
fn install() -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(RUN_SECONDS.into()), SECONDS_BUCKETS)
        .map(PrometheusBuilder::build_recorder)
        .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    metrics::describe_counter!(OFFERS, "Offers received, by answer");
    metrics::describe_counter!(RUNS, "Runs that ended here, by system and outcome");
    metrics::describe_histogram!(RUN_SECONDS, metrics::Unit::Seconds, "Run times, by system");
    metrics::describe_counter!(ROWS, "CSV rows done, by outcome");
    metrics::describe_gauge!(SLOTS, "Tasks the bot runs at once");
    metrics::describe_gauge!(RUNNING, "Tasks the bot runs now");
    Some(handle)
}

/// Binds `listen` (an error now, not later, if it cannot) and serves `/metrics` there until
/// `shutdown`.
pub(crate) async fn serve(
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, AgentError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| AgentError::MetricsListen { address: listen, source })?;
    let Some(handle) = install() else {
        tracing::warn!(
            "another metrics recorder is installed in this process: --metrics-listen serves nothing of the agent's"
        );
        return Ok(tokio::spawn(async {}));
    };
    tracing::info!(address = %listen, "metrics at /metrics");
    let upkeep = handle.clone();
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    Ok(tokio::spawn(async move {
        // Keeps the histograms compact between scrapes.
        let keep_up = async {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                upkeep.run_upkeep();
            }
        };
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
        tokio::select! {
            served = server => if let Err(err) = served {
                tracing::error!(%err, "the metrics listener stopped");
            },
            () = keep_up => {}
        }
    }))
}
