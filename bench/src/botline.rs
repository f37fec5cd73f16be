//! Botline end to end: the orchestrator and N bot agents of S slots each as separate processes
//! (the release or debug binaries beside this one, started by [`crate::stack`]), M NOOP tasks
//! created through the API, every figure read back from the tasks' own timestamps.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};

use crate::cpu::PerTask;
use crate::stack::{Post, Stack, post_all};
use crate::stats::{Summary, summarize};

/// How long a run's tasks may take to complete once created.
const COMPLETE_WITHIN: Duration = Duration::from_secs(600);

/// Which database the orchestrator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Database {
    /// A SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database on 127.0.0.1.
    Postgres,
}

/// What runs the bots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Agent {
    /// Botline's bot agent (Rust), its built-in NOOP.
    Rust,
    /// A bot of the Python package (`python -m botline.bot`), NOOP as a plain function.
    Python,
}

/// How the tasks are created.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Concurrent API clients.
    pub senders: usize,
    /// A fixed creation rate (tasks/s); `None`: as fast as the API accepts them.
    pub rate: Option<f64>,
    /// Tasks per request: 1 is `POST /api/v1/tasks`, more is `POST /api/v1/tasks/bulk`.
    pub bulk: usize,
}

/// One end-to-end run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// The database.
    pub database: Database,
    /// What runs the bots.
    pub agent: Agent,
    /// Bot agent processes.
    pub bots: usize,
    /// Tasks each bot runs at once (its `--slots`).
    pub slots: u32,
    /// Tasks.
    pub tasks: usize,
    /// Tasks per creation request.
    pub bulk: usize,
    /// Tasks created per second by the API (as fast as it accepts, or the fixed rate asked).
    pub created_per_second: f64,
    /// Tasks completed per second, from the first creation to the last completion.
    pub completed_per_second: f64,
    /// Created → accepted by a bot.
    pub to_accepted: Summary,
    /// Created → COMPLETE.
    pub to_complete: Summary,
    /// The orchestrator's peak resident memory, MiB.
    pub orchestrator_peak_rss_mib: f64,
    /// The largest peak resident memory of the bot agents, MiB.
    pub bot_peak_rss_mib: f64,
    /// CPU milliseconds per task, by process: orchestrator, bots (all), rabbitmq, postgres
    /// (every server process), bench (the client creating tasks and polling).
    pub cpu_ms_per_task: PerTask,
}

/// Runs `tasks` NOOP tasks through `bots` bots of `agent` of `slots` slots each, created as
/// `load` says.
pub async fn run(
    database: Database,
    agent: Agent,
    bots: usize,
    slots: u32,
    tasks: usize,
    load: Load,
) -> anyhow::Result<Run> {
    let python = match agent {
        Agent::Rust => None,
        Agent::Python => Some(crate::python::python().await?),
    };
    let mut stack = Stack::start(database).await?;
    for n in 1..=bots {
        let args =
            ["--name", &format!("bench-{n}"), "--systems", "noop", "--slots", &slots.to_string()];
        let args = args.map(str::to_owned);
        match &python {
            None => stack.spawn_bot(&args)?,
            Some(python) => stack.spawn_python_bot(python, &args)?,
        }
    }
    stack.wait_for_bots(bots).await?;

    // Create the tasks.
    let cpu_before = stack.parts.snapshot();
    let started = Instant::now();
    let bulk = load.bulk.max(1);
    let api = stack.api.clone();
    let task = |n: usize| json!({"description": format!("bench {n}"), "system": "NOOP", "payload": {"duration_ms": 0}});
    let posts = (0..tasks).step_by(bulk).map(|first| {
        let due = load.rate.map(|rate| started + Duration::from_secs_f64(first as f64 / rate));
        if bulk == 1 {
            Post { url: format!("{api}/api/v1/tasks"), body: task(first), due }
        } else {
            let batch: Vec<Value> = (first..tasks.min(first + bulk)).map(task).collect();
            Post { url: format!("{api}/api/v1/tasks/bulk"), body: json!({ "tasks": batch }), due }
        }
    });
    post_all(&stack.client, posts, load.senders, 201).await.context("creating the tasks")?;
    let created_per_second = tasks as f64 / started.elapsed().as_secs_f64();
    stack.wait_for_complete(tasks, COMPLETE_WITHIN, crate::stack::POLL).await?;
    let cpu_ms_per_task = cpu_before.per_task(&stack.parts.snapshot(), tasks);
    let orchestrator_peak_rss_mib = stack.orchestrator_peak_rss_mib();
    let bot_peak_rss_mib = stack.bot_peak_rss_mib();

    let timings = stack.read_back().await?;
    stack.finish().await?;
    Ok(Run {
        database,
        agent,
        bots,
        slots,
        tasks,
        bulk,
        created_per_second,
        completed_per_second: tasks as f64 / timings.span_s.max(1e-9),
        to_accepted: summarize(timings.to_accepted),
        to_complete: summarize(timings.to_complete),
        orchestrator_peak_rss_mib,
        bot_peak_rss_mib,
        cpu_ms_per_task,
    })
}
