//! `bench`: Botline's speed as measured facts. Prints a table and writes JSON.
//!
//! Build the release binaries first: `cargo build --release --workspace --bins`, then
//! `target/release/bench all`. `bench smoke` (what CI runs, in debug) only checks the benchmark
//! still works: its figures mean nothing.

use std::path::PathBuf;

use anyhow::Context as _;
use broker_config::testing::TestVhost;
use clap::{Parser, Subcommand};
use serde_json::json;

mod botline;
mod ceiling;
mod celery;
mod cpu;
mod growth;
mod stats;

use botline::{Database, Load};

/// Botline's benchmarks.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Where to write the results as JSON.
    #[arg(long, default_value = "target/bench/results.json")]
    json: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The broker's own confirmed round trip (the ceiling).
    Ceiling {
        /// Round trips in flight at once (comma separated runs).
        #[arg(long, value_delimiter = ',', default_value = "1,8")]
        pipelines: Vec<usize>,
        /// Round trips per run.
        #[arg(long, default_value_t = 5000)]
        round_trips: usize,
    },
    /// Botline end to end: bot agent processes running NOOP tasks created through the API.
    Botline {
        /// Databases (comma separated).
        #[arg(long, value_delimiter = ',', default_value = "sqlite")]
        database: Vec<Database>,
        /// Bot agent processes (comma separated runs).
        #[arg(long, value_delimiter = ',', default_value = "4")]
        bots: Vec<usize>,
        /// Tasks per run (comma separated runs).
        #[arg(long, value_delimiter = ',', default_value = "1000")]
        tasks: Vec<usize>,
        /// Concurrent API clients creating tasks.
        #[arg(long, default_value_t = 16)]
        senders: usize,
        /// A fixed creation rate (tasks/s) instead of as fast as the API accepts.
        #[arg(long)]
        rate: Option<f64>,
        /// Tasks per creation request: more than 1 uses `POST /api/v1/tasks/bulk`.
        #[arg(long, default_value_t = 1)]
        bulk: usize,
    },
    /// The same no-op workload through Celery on the same RabbitMQ (with and without a result
    /// backend).
    Celery {
        /// Worker processes.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Tasks.
        #[arg(long, default_value_t = 2000)]
        tasks: usize,
        /// Sender processes.
        #[arg(long, default_value_t = 4)]
        senders: usize,
        /// Runs of each backend (Celery's figures move a lot from run to run).
        #[arg(long, default_value_t = 1)]
        runs: usize,
    },
    /// One dispatch pass's time and the memory with many bots and waiting tasks.
    Growth {
        /// Registered bots (comma separated runs).
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        bots: Vec<usize>,
        /// Waiting tasks (comma separated runs).
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        waiting: Vec<usize>,
    },
    /// The ceiling with 1 and 8 pipelines, then Botline on SQLite and PostgreSQL with 1, 4 and 16
    /// bots (and 16 with bulk creation), Botline at half its best throughput (the steady-load
    /// latency), Celery three times per backend (the ratios use its best), and growth.
    All {
        /// Tasks per Botline run.
        #[arg(long, default_value_t = 2000)]
        tasks: usize,
    },
    /// A tiny run of each part, to check the benchmark works (CI); the figures mean nothing.
    Smoke,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Results go to standard output; only warnings, and what a signal does, are logged.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,broker_config::signal=info".into()),
        )
        .init();
    let cli = Cli::parse();
    let shutdown = tokio_util::sync::CancellationToken::new();
    broker_config::signal::stop_on_signals(
        shutdown.clone(),
        "the orchestrator and bot processes it started are left running, and its RabbitMQ vhosts \
         (botline-test-*) and PostgreSQL databases (botline_test_bench_*) are left behind",
    );
    // A stopped benchmark measures nothing: the run is dropped, which kills the processes it
    // started and deletes its RabbitMQ vhost.
    let finished = tokio::select! {
        finished = run(cli) => finished,
        () = shutdown.cancelled() => Err(anyhow::anyhow!("stopped by a signal; no results written")),
    };
    match finished {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn ceilings(
    pipelines: &[usize],
    round_trips: usize,
) -> anyhow::Result<Vec<ceiling::Ceiling>> {
    let mut results = Vec::new();
    for &n in pipelines {
        let vhost = TestVhost::create("ceiling").await?;
        let result = ceiling::measure(&vhost.amqp_url(), n, round_trips).await?;
        println!(
            "ceiling   pipelines={:<3} {:>8.0} round trips/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
            n, result.per_second, result.latency.p50_ms, result.latency.p99_ms
        );
        println!("          CPU ms/round trip {}", result.cpu_ms_per_round_trip);
        vhost.delete().await?;
        results.push(result);
    }
    Ok(results)
}

fn print_run(run: &botline::Run) {
    println!(
        "botline   {:<8} bots={:<3} tasks={:<6} bulk={:<4} created {:>6.0}/s  completed {:>6.0}/s   accepted p50 {:>7.1} p95 {:>7.1} p99 {:>7.1} ms   complete p50 {:>7.1} p99 {:>7.1} ms   rss {:>5.0} MiB",
        format!("{:?}", run.database).to_lowercase(),
        run.bots,
        run.tasks,
        run.bulk,
        run.created_per_second,
        run.completed_per_second,
        run.to_accepted.p50_ms,
        run.to_accepted.p95_ms,
        run.to_accepted.p99_ms,
        run.to_complete.p50_ms,
        run.to_complete.p99_ms,
        run.orchestrator_peak_rss_mib
    );
    println!("          CPU ms/task {}", run.cpu_ms_per_task);
}

async fn botline_runs(
    databases: &[Database],
    bots: &[usize],
    tasks: &[usize],
    load: Load,
) -> anyhow::Result<Vec<botline::Run>> {
    let mut runs = Vec::new();
    for &database in databases {
        for &b in bots {
            for &t in tasks {
                let run = botline::run(database, b, t, load).await?;
                print_run(&run);
                runs.push(run);
            }
        }
    }
    Ok(runs)
}

async fn growth_points(bots: &[usize], waiting: &[usize]) -> anyhow::Result<Vec<growth::Point>> {
    let mut points = Vec::new();
    for &b in bots {
        for &w in waiting {
            let point = growth::measure(b, w, 3).await?;
            println!(
                "growth    bots={:<5} waiting={:<7} pass {:>8.2} ms   {:>7.1} µs per task offered   rss {:>5.0} MiB",
                point.bots, point.waiting, point.pass_ms, point.per_task_us, point.rss_mib
            );
            points.push(point);
        }
    }
    Ok(points)
}

/// `repeat` runs without a backend and with rpc://, alternating.
async fn celery_runs(
    workers: usize,
    tasks: usize,
    senders: usize,
    repeat: usize,
) -> anyhow::Result<Vec<celery::Run>> {
    let mut runs = Vec::new();
    for rpc in std::iter::repeat_n([false, true], repeat.max(1)).flatten() {
        let run = celery::run(workers, tasks, senders, rpc).await?;
        println!(
            "celery    backend={:<4} workers={:<3} tasks={:<6} {:>6.0} tasks/s   enqueue->start p50 {:>7.1} p99 {:>7.1} ms",
            run.backend,
            run.workers,
            run.tasks,
            run.per_second,
            run.enqueue_to_start.p50_ms,
            run.enqueue_to_start.p99_ms
        );
        println!("          CPU ms/task {}", run.cpu_ms_per_task);
        runs.push(run);
    }
    Ok(runs)
}

fn write(path: &PathBuf, value: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("results written to {}", path.display());
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let machine = json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "at": chrono::Utc::now(),
    });
    let results = match cli.command {
        Command::Ceiling { pipelines, round_trips } => {
            json!({ "ceiling": ceilings(&pipelines, round_trips).await? })
        }
        Command::Botline { database, bots, tasks, senders, rate, bulk } => {
            let load = Load { senders, rate, bulk };
            json!({ "botline": botline_runs(&database, &bots, &tasks, load).await? })
        }
        Command::Celery { workers, tasks, senders, runs } => {
            json!({ "celery": celery_runs(workers, tasks, senders, runs).await? })
        }
        Command::Growth { bots, waiting } => {
            json!({ "growth": growth_points(&bots, &waiting).await? })
        }
        Command::All { tasks } => {
            let ceiling = ceilings(&[1, 8], 5000).await?;
            let fast = Load { senders: 16, rate: None, bulk: 1 };
            let mut runs =
                botline_runs(&[Database::Sqlite, Database::Postgres], &[1, 4, 16], &[tasks], fast)
                    .await?;
            let bulk = Load { bulk: 100, senders: 4, ..fast };
            runs.extend(
                botline_runs(&[Database::Sqlite, Database::Postgres], &[16], &[tasks], bulk)
                    .await?,
            );
            let best = runs.iter().map(|r| r.completed_per_second).fold(0.0, f64::max);
            let half = Load { rate: Some(best / 2.0), ..fast };
            let steady = botline_runs(&[Database::Sqlite], &[16], &[tasks], half).await?;
            let ceiling8 =
                ceiling.iter().find(|c| c.pipelines == 8).map_or(f64::NAN, |c| c.per_second);
            // Celery's best of three per backend: one of its runs can stall (rpc:// especially),
            // and the ratios are meant against what it can do.
            let celery = celery_runs(4, tasks, 4, 3).await?;
            let celery_best = |backend: &str| {
                celery
                    .iter()
                    .filter(|r| r.backend == backend)
                    .map(|r| r.per_second)
                    .fold(f64::NAN, f64::max)
            };
            let (celery_none, celery_rpc) = (celery_best("none"), celery_best("rpc"));
            let growth = growth_points(&[10, 100, 1000], &[1000, 10_000, 100_000]).await?;
            let botline4 = runs
                .iter()
                .filter(|r| r.bots == 4 && r.database == Database::Sqlite)
                .map(|r| r.completed_per_second)
                .fold(0.0, f64::max);
            let ratios = json!({
                "botline_best_over_ceiling_8": best / ceiling8,
                "botline_4_over_celery_none": botline4 / celery_none,
                "botline_4_over_celery_rpc": botline4 / celery_rpc,
                "botline_best_over_celery_none": best / celery_none,
                "botline_best_over_celery_rpc": best / celery_rpc,
            });
            println!("ratios    {ratios}");
            json!({ "ceiling": ceiling, "botline": runs, "steady_half_load": steady, "celery": celery, "growth": growth, "ratios": ratios })
        }
        Command::Smoke => {
            let ceiling = ceilings(&[2], 200).await?;
            let one = Load { senders: 4, rate: None, bulk: 1 };
            let mut runs = botline_runs(&[Database::Sqlite], &[2], &[30], one).await?;
            runs.extend(
                botline_runs(&[Database::Sqlite], &[2], &[30], Load { bulk: 7, ..one }).await?,
            );
            anyhow::ensure!(
                runs.iter().all(|r| r.to_complete.count == 30),
                "not every smoke task completed"
            );
            let growth = growth_points(&[5], &[50]).await?;
            json!({ "ceiling": ceiling, "botline": runs, "growth": growth })
        }
    };
    write(&cli.json, &json!({ "machine": machine, "results": results }))
}
