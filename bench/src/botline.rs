//! Botline end to end: the orchestrator and N bot agents as separate processes (the release or
//! debug binaries beside this one), M NOOP tasks created through the API, every figure read back
//! from the tasks' own timestamps.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use broker_config::testing::TestVhost;
use sea_orm::ConnectionTrait as _;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

use crate::cpu::{Parts, PerTask};
use crate::stats::{Summary, summarize};

/// The PostgreSQL server the benchmark makes its databases on (trust auth on this machine).
const POSTGRES_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which database the orchestrator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Database {
    /// A SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database on 127.0.0.1.
    Postgres,
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
    /// Bot agent processes.
    pub bots: usize,
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
    /// CPU milliseconds per task, by process: orchestrator, bots (all), rabbitmq, postgres
    /// (every server process), bench (the client creating tasks and polling).
    pub cpu_ms_per_task: PerTask,
}

/// The binaries beside this one (the same build profile).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::current_exe()?.parent().map(PathBuf::from).context("no directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it first (cargo build --release --workspace --bins)",
            path.display()
        );
    }
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn peak_rss_mib(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return f64::NAN };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Processes that die with the run.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.start_kill();
        }
    }
}

/// Runs `tasks` NOOP tasks through `bots` bot agents, created as `load` says.
pub async fn run(database: Database, bots: usize, tasks: usize, load: Load) -> anyhow::Result<Run> {
    let vhost = TestVhost::create("bench").await?;
    let workdir =
        std::env::temp_dir().join(format!("botline-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&workdir)?;
    let (database_url, pg_name) = match database {
        Database::Sqlite => {
            (format!("sqlite://{}?mode=rwc", workdir.join("botline.db").display()), None)
        }
        Database::Postgres => {
            let name = format!("botline_test_bench_{}", uuid::Uuid::new_v4().simple());
            let admin = migrations::connect(POSTGRES_ADMIN).await?;
            admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await?;
            let server =
                POSTGRES_ADMIN.rsplit_once('/').map_or(POSTGRES_ADMIN, |(server, _)| server);
            (format!("{server}/{name}"), Some(name))
        }
    };
    let port = free_port()?;
    let api = format!("http://127.0.0.1:{port}");
    let mut processes = Processes(Vec::new());
    let orchestrator = Command::new(sibling("orchestrator")?)
        .env("BOTLINE_DATABASE_URL", &database_url)
        .env("BOTLINE_AMQP_URL", vhost.amqp_url())
        .env("BOTLINE_LISTEN", format!("127.0.0.1:{port}"))
        .env("BOTLINE_SWEEP_INTERVAL", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let orchestrator_pid = orchestrator.id();
    processes.0.push(orchestrator);
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    wait_until("the orchestrator is ready", Duration::from_secs(60), || async {
        client.get(format!("{api}/readyz")).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await?;
    let mut parts = Parts::default();
    parts.add("orchestrator", orchestrator_pid);
    parts.add("bench", Some(std::process::id()));
    parts.add_rabbitmq();
    if database == Database::Postgres {
        parts.add_by_name("postgres", "postgres");
    }
    for n in 1..=bots {
        processes.0.push(
            Command::new(sibling("bot-agent")?)
                .args(["--name", &format!("bench-{n}"), "--systems", "noop"])
                .env("BOTLINE_AMQP_URL", vhost.amqp_url())
                .env("BOTLINE_BOT_IP", "127.0.0.1")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?,
        );
        parts.add("bots", processes.0.last().and_then(Child::id));
    }
    wait_until("every bot online", Duration::from_secs(60), || async {
        get(&client, &format!("{api}/api/v1/bots?status=AVAILABLE&limit=1"))
            .await
            .is_ok_and(|b| b["total"] == bots)
    })
    .await?;

    // Create the tasks.
    let cpu_before = parts.snapshot();
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(load.senders.max(1)));
    let bulk = load.bulk.max(1);
    let mut handles = Vec::with_capacity(tasks.div_ceil(bulk));
    for first in (0..tasks).step_by(bulk) {
        if let Some(rate) = load.rate {
            let due = started + Duration::from_secs_f64(first as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = gate.clone().acquire_owned().await?;
        let client = client.clone();
        let task = |n: usize| json!({"description": format!("bench {n}"), "system": "NOOP", "payload": {"duration_ms": 0}});
        let (url, body) = if bulk == 1 {
            (format!("{api}/api/v1/tasks"), task(first))
        } else {
            let batch: Vec<Value> = (first..tasks.min(first + bulk)).map(task).collect();
            (format!("{api}/api/v1/tasks/bulk"), json!({ "tasks": batch }))
        };
        handles.push(tokio::spawn(async move {
            let response = client.post(url).json(&body).send().await;
            drop(permit);
            response.map(|r| r.status().as_u16())
        }));
    }
    for handle in handles {
        let status = handle.await??;
        if status != 201 {
            bail!("the API refused a task: HTTP {status}");
        }
    }
    let created_per_second = tasks as f64 / started.elapsed().as_secs_f64();
    wait_until("every task COMPLETE", Duration::from_secs(600), || async {
        get(&client, &format!("{api}/api/v1/tasks/stats"))
            .await
            .is_ok_and(|s| s["COMPLETE"] == tasks)
    })
    .await?;
    let cpu_ms_per_task = cpu_before.per_task(&parts.snapshot(), tasks);
    let orchestrator_peak_rss_mib = peak_rss_mib(orchestrator_pid);

    // Read every task back.
    let (mut to_accepted, mut to_complete) = (Vec::with_capacity(tasks), Vec::with_capacity(tasks));
    let (mut first_created, mut last_finished) = (None::<i64>, None::<i64>);
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{api}/api/v1/tasks?limit=500&order=oldest");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = get(&client, &url).await?;
        for task in page["items"].as_array().context("items")? {
            let micros = |field: &str| -> Option<i64> {
                chrono::DateTime::parse_from_rfc3339(task[field].as_str()?)
                    .ok()
                    .map(|t| t.timestamp_micros())
            };
            let (Some(created), Some(accepted), Some(finished)) =
                (micros("created_at"), micros("started_at"), micros("finished_at"))
            else {
                bail!("task without timestamps: {task}");
            };
            to_accepted.push((accepted - created) as f64 / 1000.0);
            to_complete.push((finished - created) as f64 / 1000.0);
            first_created = Some(first_created.map_or(created, |f| f.min(created)));
            last_finished = Some(last_finished.map_or(finished, |l| l.max(finished)));
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    let span = (last_finished.unwrap_or_default() - first_created.unwrap_or_default()) as f64 / 1e6;
    drop(processes);
    if let Some(name) = pg_name {
        let admin = migrations::connect(POSTGRES_ADMIN).await?;
        admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
    }
    let _ = std::fs::remove_dir_all(&workdir);
    vhost.delete().await?;
    Ok(Run {
        database,
        bots,
        tasks,
        bulk,
        created_per_second,
        completed_per_second: tasks as f64 / span.max(1e-9),
        to_accepted: summarize(to_accepted),
        to_complete: summarize(to_complete),
        orchestrator_peak_rss_mib,
        cpu_ms_per_task,
    })
}

async fn get(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    Ok(client.get(url).send().await?.error_for_status()?.json().await?)
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, check: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
