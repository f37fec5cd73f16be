//! The peer: the same no-op workload through Celery, on the same RabbitMQ, with the same number of
//! worker processes. Celery is installed from PyPI into a virtual environment the benchmark makes
//! itself (target/bench/venv). Figures come from the tasks: each worker records, per task, when it
//! was sent and when it started.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::bail;
use broker_config::testing::TestVhost;
use serde::Serialize;
use tokio::process::Command;

use crate::cpu::{Parts, PerTask};
use crate::stats::{Summary, summarize};

/// One Celery run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// `none` (fire and forget) or `rpc` (results sent back, as Botline keeps every result).
    pub backend: &'static str,
    /// Worker processes (pool "solo": one task at a time each, like a bot).
    pub workers: usize,
    /// Tasks.
    pub tasks: usize,
    /// Tasks started per second, from the first send to the last start.
    pub per_second: f64,
    /// Enqueue → start.
    pub enqueue_to_start: Summary,
    /// CPU per task of RabbitMQ and the workers, from the first send until every task ran (the
    /// senders, gone by then, are not counted, as Botline's run does not count its API client).
    pub cpu_ms_per_task: PerTask,
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("celery")
}

/// Makes (once) the virtual environment with Celery in it; returns its python.
async fn python() -> anyhow::Result<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let requirements = scripts().join("requirements.txt");
        crate::python::make_venv(&venv, "celery", &["-r".as_ref(), requirements.as_os_str()])
            .await?;
    }
    Ok(python)
}

/// Runs `tasks` no-op tasks through `workers` Celery workers, sent by `senders` processes.
pub async fn run(workers: usize, tasks: usize, senders: usize, rpc: bool) -> anyhow::Result<Run> {
    let python = python().await?;
    let vhost = TestVhost::create("celery").await?;
    let out =
        std::env::temp_dir().join(format!("botline-celery-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&out)?;
    let backend = if rpc { "rpc://" } else { "" };
    let env = |command: &mut Command| {
        command
            .current_dir(scripts())
            .env("BENCH_BROKER", vhost.amqp_url())
            .env("BENCH_BACKEND", backend)
            .env("BENCH_OUT", &out)
            // Celery warns at length when run as root (CI is root); the workers run no pickle.
            .env("C_FORCE_ROOT", "1")
            .env("PYTHONWARNINGS", "ignore:You're running the worker with superuser privileges")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
    };
    let mut parts = Parts::default();
    parts.add_rabbitmq();
    let mut children = Vec::new();
    for n in 0..workers {
        let mut worker = Command::new(&python);
        worker.args([
            "-m",
            "celery",
            "-A",
            "botbench",
            "worker",
            "--pool=solo",
            "--loglevel=WARNING",
        ]);
        worker.args([
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            &format!("w{n}@bench"),
        ]);
        env(&mut worker);
        let child = worker.spawn()?;
        parts.add("workers", child.id());
        children.push(child);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let consumers =
            vhost.queue("celery").await.ok().and_then(|q| q["consumers"].as_u64()).unwrap_or(0);
        if consumers as usize >= workers {
            break;
        }
        if Instant::now() > deadline {
            bail!("the Celery workers did not start");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu_before = parts.snapshot();
    let mut producers = Vec::new();
    for n in 0..senders {
        let share = tasks / senders + usize::from(n < tasks % senders);
        let mut producer = Command::new(&python);
        producer.arg("produce.py").arg(share.to_string());
        if rpc {
            producer.arg("--wait");
        }
        env(&mut producer);
        producers.push(producer.spawn()?);
    }
    for mut producer in producers {
        anyhow::ensure!(producer.wait().await?.success(), "a Celery producer failed");
    }
    let lines = loop {
        let lines = read_lines(&out)?;
        if lines.len() >= tasks {
            break lines;
        }
        if Instant::now() > deadline + Duration::from_secs(600) {
            bail!("only {} of {tasks} Celery tasks ran", lines.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cpu_ms_per_task = cpu_before.per_task(&parts.snapshot(), tasks);
    drop(children);
    let _ = std::fs::remove_dir_all(&out);
    vhost.delete().await?;
    let first_sent = lines.iter().map(|(sent, _)| *sent).fold(f64::INFINITY, f64::min);
    let last_start = lines.iter().map(|(_, start)| *start).fold(0.0, f64::max);
    let latencies = lines.iter().map(|(sent, start)| (start - sent) * 1000.0).collect();
    Ok(Run {
        backend: if rpc { "rpc" } else { "none" },
        workers,
        tasks,
        per_second: tasks as f64 / (last_start - first_sent).max(1e-9),
        enqueue_to_start: summarize(latencies),
        cpu_ms_per_task,
    })
}

fn read_lines(dir: &Path) -> anyhow::Result<Vec<(f64, f64)>> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let text = std::fs::read_to_string(entry?.path())?;
        for line in text.lines() {
            let mut parts = line.split_whitespace().map(str::parse::<f64>);
            if let (Some(Ok(sent)), Some(Ok(start))) = (parts.next(), parts.next()) {
                lines.push((sent, start));
            }
        }
    }
    Ok(lines)
}
