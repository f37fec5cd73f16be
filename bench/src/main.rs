//! `bench`: Botline's speed as measured facts. Prints a table and writes JSON.
//!
//! Build the release binaries first: `cargo build --release --workspace --bins`, then
//! `target/release/bench all`. The parts, each a subcommand:
//!
//! - `ceiling`: the broker's own confirmed round trip, what Botline cannot beat;
//! - `botline`: Botline end to end, bot agent processes (of one or more slots each) running NOOP
//!   tasks created through the API, on SQLite or PostgreSQL; `--agent python` runs bots of the
//!   Python package (sdk/python) instead;
//! - `cpe`: equipment activations end to end, IO-bound work: bots of many slots each waiting on
//!   the equipment config service stand-in, which takes a device's time to answer;
//! - `celery`: the same no-op workload through Celery on the same RabbitMQ;
//! - `growth`: the time to offer a task to every bot (passes of up to 1,000 offers) and the
//!   memory as bots and waiting tasks grow;
//! - `all`: the ceiling, Botline (with Rust and Python bots), Celery and growth, with the ratios
//!   between them (not `cpe`, whose run takes a device's delay).
//!
//! `bench smoke` (what CI runs, in debug) only checks the benchmark still works, `cpe` included:
//! its figures mean nothing.

use std::path::PathBuf;

use anyhow::Context as _;
use broker_config::testing::TestVhost;
use clap::{Parser, Subcommand};
use serde_json::json;

mod botline;
mod ceiling;
mod celery;
mod cpe;
mod cpu;
mod growth;
mod python;
mod stack;
mod stats;

use botline::{Agent, Database, Load};

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

/// The benchmarks, one subcommand each.
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
    /// Botline end to end: bot agent processes running NOOP tasks created through the API. Runs
    /// every combination of database × bots × slots × tasks.
    Botline {
        /// Databases (comma separated).
        #[arg(long, value_delimiter = ',', default_value = "sqlite")]
        database: Vec<Database>,
        /// What runs the bots: `rust` (the bot agent), `python` (the Python package), or both
        /// (`rust,python`: the same runs with each, one after the other).
        #[arg(long, value_delimiter = ',', default_value = "rust")]
        agent: Vec<Agent>,
        /// Bot agent processes (comma separated runs).
        #[arg(long, value_delimiter = ',', default_value = "4")]
        bots: Vec<usize>,
        /// Tasks each bot agent runs at once, its `--slots` (comma separated runs, 1 to 10000).
        #[arg(long, value_delimiter = ',', default_value = "1", value_parser = clap::value_parser!(u32).range(1..=10_000))]
        slots: Vec<u32>,
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
    /// Equipment activations end to end: the equipment config service stand-in (HTTPS, answering
    /// after a device's delay), the orchestrator on SQLite and CPE bot agents of many slots each,
    /// activations created through `POST /api/v1/equipment/cpe/{id}`. Takes at least the device
    /// delay (a minute by default).
    Cpe {
        /// Activations.
        #[arg(long, default_value_t = 1000)]
        activations: usize,
        /// Bot agent processes.
        #[arg(long, default_value_t = 2)]
        bots: usize,
        /// Activations each bot agent runs at once, its `--slots` (1 to 10000).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        slots: u32,
        /// Milliseconds the stand-in takes to configure a device (a real one takes about a
        /// minute); the bots wait at least a minute longer than this for its answer.
        #[arg(long, default_value_t = 60_000)]
        device_delay_ms: u64,
        /// Concurrent API clients creating the activations.
        #[arg(long, default_value_t = 16)]
        senders: usize,
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
    /// bots of one slot (and 16 with bulk creation), Botline on SQLite with 4 bots of 16 slots and
    /// 2 of 64 (each with bulk creation and one task per request), Botline at half the best
    /// one-slot throughput (the steady-load latency), Celery three times per backend (the ratios
    /// use its best), and growth. Not `cpe`.
    All {
        /// Tasks per Botline run.
        #[arg(long, default_value_t = 2000)]
        tasks: usize,
    },
    /// A tiny run of each part but Celery, to check the benchmark works (CI), every task checked
    /// complete: bots of one slot and of four, Python bots of four, and 10 activations with a 200 ms device; the
    /// figures mean nothing.
    Smoke,
}

/// Runs the subcommand asked for; a signal stops it, with no results written.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Results go to standard output; only warnings, and what a signal does, are logged.
    broker_config::logging::init_with(
        broker_config::logging::LogFormat::Text,
        "warn,broker_config::signal=info",
    );
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

/// Measures and prints the ceiling with each number of `pipelines`.
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

/// Prints one Botline run: its shape, throughput, latencies and memory, then its CPU by part.
fn print_run(run: &botline::Run) {
    println!(
        "botline   {:<8} {:<6} bots={:<3} slots={:<4} tasks={:<6} bulk={:<4} created {:>6.0}/s  completed {:>6.0}/s   accepted p50 {:>7.1} p95 {:>7.1} p99 {:>7.1} ms   complete p50 {:>7.1} p99 {:>7.1} ms   rss {:>5.0} MiB  bot rss {:>5.0} MiB",
        format!("{:?}", run.database).to_lowercase(),
        format!("{:?}", run.agent).to_lowercase(),
        run.bots,
        run.slots,
        run.tasks,
        run.bulk,
        run.created_per_second,
        run.completed_per_second,
        run.to_accepted.p50_ms,
        run.to_accepted.p95_ms,
        run.to_accepted.p99_ms,
        run.to_complete.p50_ms,
        run.to_complete.p99_ms,
        run.orchestrator_peak_rss_mib,
        run.bot_peak_rss_mib
    );
    println!("          CPU ms/task {}", run.cpu_ms_per_task);
}

/// Runs and prints every combination of `databases` × `bots` × `slots` × `tasks`, created as
/// `load` says.
async fn botline_runs(
    agent: Agent,
    databases: &[Database],
    bots: &[usize],
    slots: &[u32],
    tasks: &[usize],
    load: Load,
) -> anyhow::Result<Vec<botline::Run>> {
    let mut runs = Vec::new();
    for &database in databases {
        for &b in bots {
            for &s in slots {
                for &t in tasks {
                    let run = botline::run(database, agent, b, s, t, load).await?;
                    print_run(&run);
                    runs.push(run);
                }
            }
        }
    }
    Ok(runs)
}

/// Runs and prints one CPE run, on one line.
async fn cpe_run(shape: cpe::Shape) -> anyhow::Result<cpe::Run> {
    let run = cpe::run(shape).await?;
    println!(
        "cpe       bots={:<3} slots={:<5} activations={:<6} device {:>6} ms   wall {:>7.1} s  {:>7.1} activations/s   accepted p50 {:>8.1} p99 {:>8.1} ms   complete p50 {:>8.1} p99 {:>8.1} ms   retried {}   rss {:>5.0} MiB  bot rss {:>5.0} MiB   CPU ms/activation {}",
        run.bots,
        run.slots,
        run.activations,
        run.device_delay_ms,
        run.wall_s,
        run.per_second,
        run.to_accepted.p50_ms,
        run.to_accepted.p99_ms,
        run.to_complete.p50_ms,
        run.to_complete.p99_ms,
        run.retried,
        run.orchestrator_peak_rss_mib,
        run.bot_peak_rss_mib,
        run.cpu_ms_per_activation
    );
    Ok(run)
}

/// Measures and prints growth at every combination of `bots` × `waiting`.
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

/// Writes `value` to `path` as pretty JSON, making its directory.
fn write(path: &PathBuf, value: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("results written to {}", path.display());
    Ok(())
}

/// Runs `cli`'s subcommand and writes its results, with the machine they were measured on.
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
        Command::Botline { database, agent, bots, slots, tasks, senders, rate, bulk } => {
            let load = Load { senders, rate, bulk };
            let mut runs = Vec::new();
            for agent in agent {
                runs.extend(botline_runs(agent, &database, &bots, &slots, &tasks, load).await?);
            }
            json!({ "botline": runs })
        }
        Command::Cpe { activations, bots, slots, device_delay_ms, senders } => {
            let shape = cpe::Shape { bots, slots, activations, senders, device_delay_ms };
            json!({ "cpe": cpe_run(shape).await? })
        }
        Command::Celery { workers, tasks, senders, runs } => {
            json!({ "celery": celery_runs(workers, tasks, senders, runs).await? })
        }
        Command::Growth { bots, waiting } => {
            json!({ "growth": growth_points(&bots, &waiting).await? })
        }
        Command::All { tasks } => {
            let ceiling = ceilings(&[1, 8], 5000).await?;
            let both = [Database::Sqlite, Database::Postgres];
            let fast = Load { senders: 16, rate: None, bulk: 1 };
            let mut runs =
                botline_runs(Agent::Rust, &both, &[1, 4, 16], &[1], &[tasks], fast).await?;
            let bulk = Load { bulk: 100, senders: 4, ..fast };
            runs.extend(botline_runs(Agent::Rust, &both, &[16], &[1], &[tasks], bulk).await?);
            // The best and the half load are those of bots of one slot, as before slots; the
            // runs of several slots have ratios of their own.
            let best = runs.iter().map(|r| r.completed_per_second).fold(0.0, f64::max);
            for (bots, slots) in [(4, 16), (2, 64)] {
                for load in [fast, bulk] {
                    let sqlite = [Database::Sqlite];
                    runs.extend(
                        botline_runs(Agent::Rust, &sqlite, &[bots], &[slots], &[tasks], load)
                            .await?,
                    );
                }
            }
            let slots_best_run = runs
                .iter()
                .filter(|r| r.slots > 1)
                .max_by(|a, b| a.completed_per_second.total_cmp(&b.completed_per_second))
                .cloned();
            let slots_best = slots_best_run.as_ref().map_or(0.0, |r| r.completed_per_second);
            let half = Load { rate: Some(best / 2.0), ..fast };
            let mut steady =
                botline_runs(Agent::Rust, &[Database::Sqlite], &[16], &[1], &[tasks], half).await?;
            // And at half the best of bots of several slots, with that run's bots and slots.
            if let Some(run) = &slots_best_run {
                let half = Load { rate: Some(slots_best / 2.0), ..fast };
                let sqlite = [Database::Sqlite];
                steady.extend(
                    botline_runs(Agent::Rust, &sqlite, &[run.bots], &[run.slots], &[tasks], half)
                        .await?,
                );
            }
            // Bots of the Python package beside the bot agent, in the same shapes: one slot
            // each (what a Selenium script is), and many (bulk creation).
            let mut python = Vec::new();
            for (bots, slots, load) in [(4, 1, fast), (2, 64, bulk)] {
                let sqlite = [Database::Sqlite];
                python.extend(
                    botline_runs(Agent::Python, &sqlite, &[bots], &[slots], &[tasks], load).await?,
                );
            }
            let rust_like = |p: &botline::Run| {
                runs.iter()
                    .filter(|r| {
                        (r.database, r.bots, r.slots, r.bulk)
                            == (p.database, p.bots, p.slots, p.bulk)
                    })
                    .map(|r| r.completed_per_second)
                    .fold(f64::NAN, f64::max)
            };
            let python_ratios: Vec<serde_json::Value> = python
                .iter()
                .map(|p| {
                    let rust = rust_like(p);
                    json!({
                        "bots": p.bots, "slots": p.slots, "bulk": p.bulk,
                        "python_per_second": p.completed_per_second, "rust_per_second": rust,
                        "python_over_rust": p.completed_per_second / rust,
                        "python_bot_cpu_ms_per_task": p.cpu_ms_per_task.0.get("bots"),
                    })
                })
                .collect();
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
                .filter(|r| r.bots == 4 && r.slots == 1 && r.database == Database::Sqlite)
                .map(|r| r.completed_per_second)
                .fold(0.0, f64::max);
            let ratios = json!({
                "botline_best_over_ceiling_8": best / ceiling8,
                "botline_4_over_celery_none": botline4 / celery_none,
                "botline_4_over_celery_rpc": botline4 / celery_rpc,
                "botline_best_over_celery_none": best / celery_none,
                "botline_best_over_celery_rpc": best / celery_rpc,
                "botline_slots_best_over_celery_none": slots_best / celery_none,
                "botline_slots_best_over_celery_rpc": slots_best / celery_rpc,
                "python_agent": python_ratios,
            });
            println!("ratios    {ratios}");
            json!({ "ceiling": ceiling, "botline": runs, "steady_half_load": steady, "python": python, "celery": celery, "growth": growth, "ratios": ratios })
        }
        Command::Smoke => {
            let ceiling = ceilings(&[2], 200).await?;
            let sqlite = [Database::Sqlite];
            let one = Load { senders: 4, rate: None, bulk: 1 };
            let mut runs = botline_runs(Agent::Rust, &sqlite, &[2], &[1], &[30], one).await?;
            runs.extend(
                botline_runs(Agent::Rust, &sqlite, &[2], &[1], &[30], Load { bulk: 7, ..one })
                    .await?,
            );
            runs.extend(botline_runs(Agent::Rust, &sqlite, &[2], &[4], &[30], one).await?);
            runs.extend(botline_runs(Agent::Python, &sqlite, &[2], &[4], &[30], one).await?);
            anyhow::ensure!(
                runs.iter().all(|r| r.to_complete.count == 30),
                "not every smoke task completed"
            );
            let shape =
                cpe::Shape { bots: 2, slots: 4, activations: 10, senders: 4, device_delay_ms: 200 };
            let cpe = cpe_run(shape).await?;
            anyhow::ensure!(cpe.to_complete.count == 10, "not every smoke activation completed");
            let growth = growth_points(&[5], &[50]).await?;
            json!({ "ceiling": ceiling, "botline": runs, "cpe": cpe, "growth": growth })
        }
    };
    write(&cli.json, &json!({ "machine": machine, "results": results }))
}
