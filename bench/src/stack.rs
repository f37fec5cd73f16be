//! The processes of an end-to-end run, shared by `bench botline` and `bench cpe`: a RabbitMQ
//! vhost, a database (a SQLite file or a fresh PostgreSQL database), the orchestrator as a
//! process of its own (the binary beside this one), and whatever else the run starts beside it
//! (bot agents, a simulator). Everything is read back through the orchestrator's API, and every
//! process started is killed when the run ends or fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use broker_config::testing::TestVhost;
use sea_orm::ConnectionTrait as _;
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

use crate::botline::Database;
use crate::cpu::Parts;

/// The PostgreSQL server the benchmark makes its databases on (trust auth on this machine).
const POSTGRES_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long the orchestrator may take to answer `/readyz` after it is started.
const ORCHESTRATOR_START: Duration = Duration::from_secs(60);

/// How long bot agents may take to register and show as AVAILABLE.
const BOTS_ONLINE: Duration = Duration::from_secs(60);

/// The binaries beside this one (the same build profile).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the bench binary's own path")?;
    let dir = exe.parent().map(PathBuf::from).context("the bench binary is in no directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it first (cargo build --release --workspace --bins)",
            path.display()
        );
    }
    Ok(path)
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a port on 127.0.0.1")?;
    Ok(listener.local_addr().context("the bound port has no address")?.port())
}

/// The peak resident memory (VmHWM) of process `pid`, MiB; NaN when it cannot be read (no
/// process id, or the process is gone).
pub fn peak_rss_mib(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return f64::NAN };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    parse_peak_rss_mib(&status)
}

/// The `VmHWM:` line of a `/proc/<pid>/status` text, in MiB; NaN without one.
fn parse_peak_rss_mib(status: &str) -> f64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// The largest peak resident memory of `pids`, MiB; NaN when none can be read.
pub fn max_peak_rss_mib(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|&pid| peak_rss_mib(Some(pid)))
        .filter(|m| m.is_finite())
        .fold(f64::NAN, f64::max)
}

/// Processes that die with the run, each with the name of its part (for errors).
#[derive(Default)]
struct Processes(Vec<(&'static str, Child)>);

impl Processes {
    /// Fails, naming it, if one of the processes has exited.
    fn ensure_running(&mut self, waiting_for: &str) -> anyhow::Result<()> {
        for (part, child) in &mut self.0 {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "a process of the run ({part}) exited ({status}) while waiting for {waiting_for}"
                );
            }
        }
        Ok(())
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.start_kill();
        }
    }
}

/// A directory removed when dropped.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The latencies and span of every task of a run, read back from the tasks' timestamps.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Created → accepted by a bot (`started_at`), ms, one per task.
    pub to_accepted: Vec<f64>,
    /// Created → COMPLETE (`finished_at`), ms, one per task.
    pub to_complete: Vec<f64>,
    /// From the first creation to the last completion, seconds.
    pub span_s: f64,
    /// Tasks that failed at least once before completing (retried).
    pub retried: usize,
}

/// One run's orchestrator and the processes beside it. Fields drop in order: the processes are
/// killed before the work directory and the vhost go.
pub struct Stack {
    /// Every process started (the orchestrator first).
    processes: Processes,
    /// Where the SQLite file and any other file of the run live.
    workdir: WorkDir,
    /// The RabbitMQ vhost of the run.
    vhost: TestVhost,
    /// The PostgreSQL database made for the run, dropped at the end.
    pg_name: Option<String>,
    /// The orchestrator's process id.
    orchestrator_pid: Option<u32>,
    /// The bot agents' process ids.
    bot_pids: Vec<u32>,
    /// `http://127.0.0.1:PORT`: the orchestrator's API.
    pub api: String,
    /// A client of the API (and of anything else the run calls).
    pub client: reqwest::Client,
    /// The processes whose CPU time the run measures, by part: the orchestrator, this process
    /// (`bench`), RabbitMQ, PostgreSQL's servers when used, and what is started later.
    pub parts: Parts,
}

impl Stack {
    /// Makes a vhost and a database, starts the orchestrator on them and waits until it is
    /// ready.
    pub async fn start(database: Database) -> anyhow::Result<Stack> {
        let vhost = TestVhost::create("bench").await.context(
            "cannot make a RabbitMQ vhost (RabbitMQ with the management plugin on 127.0.0.1: \
             scripts/services)",
        )?;
        let workdir =
            std::env::temp_dir().join(format!("botline-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&workdir)
            .with_context(|| format!("cannot make {}", workdir.display()))?;
        let workdir = WorkDir(workdir);
        let (database_url, pg_name) = match database {
            Database::Sqlite => {
                (format!("sqlite://{}?mode=rwc", workdir.0.join("botline.db").display()), None)
            }
            Database::Postgres => {
                let name = format!("botline_test_bench_{}", uuid::Uuid::new_v4().simple());
                let admin = migrations::connect(POSTGRES_ADMIN)
                    .await
                    .with_context(|| format!("cannot connect to PostgreSQL at {POSTGRES_ADMIN}"))?;
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .with_context(|| format!("cannot create the database {name}"))?;
                let server =
                    POSTGRES_ADMIN.rsplit_once('/').map_or(POSTGRES_ADMIN, |(server, _)| server);
                (format!("{server}/{name}"), Some(name))
            }
        };
        let port = free_port()?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .context("cannot build the HTTP client")?;
        let mut stack = Stack {
            processes: Processes::default(),
            workdir,
            vhost,
            pg_name,
            orchestrator_pid: None,
            bot_pids: Vec::new(),
            api: format!("http://127.0.0.1:{port}"),
            client,
            parts: Parts::default(),
        };
        let mut orchestrator = Command::new(sibling("orchestrator")?);
        orchestrator
            .env("BOTLINE_DATABASE_URL", &database_url)
            .env("BOTLINE_AMQP_URL", stack.vhost.amqp_url())
            .env("BOTLINE_LISTEN", format!("127.0.0.1:{port}"))
            .env("BOTLINE_SWEEP_INTERVAL", "1")
            .env("RUST_LOG", "warn");
        stack.orchestrator_pid = stack.spawn("orchestrator", &mut orchestrator)?;
        stack.parts.add("bench", Some(std::process::id()));
        stack.parts.add_rabbitmq();
        let (client, ready) = (stack.client.clone(), format!("{}/readyz", stack.api));
        stack
            .wait_until("the orchestrator to be ready", ORCHESTRATOR_START, POLL, || async {
                client.get(&ready).send().await.is_ok_and(|r| r.status().is_success())
            })
            .await?;
        // PostgreSQL serves each connection from a process of its own: those of the
        // orchestrator's pool exist once it is ready (taken before, only the server's own
        // processes were counted, about nothing per task).
        if database == Database::Postgres {
            stack.parts.add_by_name("postgres", "postgres");
        }
        Ok(stack)
    }

    /// The run's own directory (removed at the end).
    pub fn workdir(&self) -> &Path {
        &self.workdir.0
    }

    /// Starts `command` as a process of the run, counted in `part` (standard output discarded,
    /// standard error shown); its process id.
    pub fn spawn(
        &mut self,
        part: &'static str,
        command: &mut Command,
    ) -> anyhow::Result<Option<u32>> {
        command.stdout(Stdio::null()).stderr(Stdio::inherit()).kill_on_drop(true);
        let child = command.spawn().with_context(|| {
            format!("cannot start the {part} process {}", command.as_std().get_program().display())
        })?;
        let pid = child.id();
        self.parts.add(part, pid);
        self.processes.0.push((part, child));
        Ok(pid)
    }

    /// Starts a bot agent (the binary beside this one) with `args`, on the run's vhost,
    /// counted in the part `bots`.
    pub fn spawn_bot(&mut self, args: &[String]) -> anyhow::Result<()> {
        let mut bot = Command::new(sibling("bot-agent")?);
        bot.args(args)
            .env("BOTLINE_AMQP_URL", self.vhost.amqp_url())
            .env("BOTLINE_BOT_IP", "127.0.0.1")
            .env("RUST_LOG", "warn");
        if let Some(pid) = self.spawn("bots", &mut bot)? {
            self.bot_pids.push(pid);
        }
        Ok(())
    }

    /// Starts a bot of the Python package (`python -m botline.bot`, see [`crate::python`]) with
    /// `args`, on the run's vhost, counted in the part `bots`.
    pub fn spawn_python_bot(&mut self, python: &Path, args: &[String]) -> anyhow::Result<()> {
        let (args, path) = crate::python::noop_bot_args(args);
        let mut bot = Command::new(python);
        bot.args(args)
            .env("PYTHONPATH", path)
            .env("BOTLINE_AMQP_URL", self.vhost.amqp_url())
            .env("BOTLINE_BOT_IP", "127.0.0.1");
        if let Some(pid) = self.spawn("bots", &mut bot)? {
            self.bot_pids.push(pid);
        }
        Ok(())
    }

    /// Waits until `bots` bots are AVAILABLE.
    pub async fn wait_for_bots(&mut self, bots: usize) -> anyhow::Result<()> {
        let (client, url) =
            (self.client.clone(), format!("{}/api/v1/bots?status=AVAILABLE&limit=1", self.api));
        self.wait_until(&format!("{bots} bots to be AVAILABLE"), BOTS_ONLINE, POLL, || async {
            get(&client, &url).await.is_ok_and(|b| b["total"] == bots)
        })
        .await
    }

    /// Waits up to `limit`, asking every `interval`, until `tasks` tasks are COMPLETE; fails at
    /// once when one has FAILED or was CANCELLED (it would never complete).
    pub async fn wait_for_complete(
        &mut self,
        tasks: usize,
        limit: Duration,
        interval: Duration,
    ) -> anyhow::Result<()> {
        let (client, url) = (self.client.clone(), format!("{}/api/v1/tasks/stats", self.api));
        let ended = std::sync::Mutex::new(Value::Null);
        let what = format!("{tasks} tasks to be COMPLETE");
        self.wait_until(&what, limit, interval, || async {
            let Ok(stats) = get(&client, &url).await else { return false };
            let done = stats["COMPLETE"] == tasks
                || stats["FAILED"].as_u64().unwrap_or(0) > 0
                || stats["CANCELLED"].as_u64().unwrap_or(0) > 0;
            if let Ok(mut last) = ended.lock() {
                *last = stats;
            }
            done
        })
        .await?;
        let stats = ended.into_inner().unwrap_or_default();
        if stats["COMPLETE"] != tasks {
            let failed =
                get(&self.client, &format!("{}/api/v1/tasks?status=FAILED&limit=1", self.api))
                    .await
                    .ok()
                    .and_then(|page| page["items"][0]["error"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "(none read)".to_owned());
            bail!("not every task completed: {stats}; a failure: {failed}");
        }
        Ok(())
    }

    /// The orchestrator's peak resident memory so far, MiB.
    pub fn orchestrator_peak_rss_mib(&self) -> f64 {
        peak_rss_mib(self.orchestrator_pid)
    }

    /// The largest peak resident memory of the bot agents so far, MiB.
    pub fn bot_peak_rss_mib(&self) -> f64 {
        max_peak_rss_mib(&self.bot_pids)
    }

    /// Reads every task back (500 a page, oldest first): each one's latencies, and the span
    /// from the first creation to the last completion. Fails on a task not yet finished.
    pub async fn read_back(&self) -> anyhow::Result<Timings> {
        let mut timings = Timings::default();
        let (mut first_created, mut last_finished) = (None::<i64>, None::<i64>);
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/api/v1/tasks?limit=500&order=oldest", self.api);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page = get(&self.client, &url).await.context("reading the tasks back")?;
            for task in page["items"].as_array().context("a page of tasks without items")? {
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
                timings.to_accepted.push((accepted - created) as f64 / 1000.0);
                timings.to_complete.push((finished - created) as f64 / 1000.0);
                if task["failures"].as_u64().unwrap_or(0) > 0 {
                    timings.retried += 1;
                }
                first_created = Some(first_created.map_or(created, |f| f.min(created)));
                last_finished = Some(last_finished.map_or(finished, |l| l.max(finished)));
            }
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        timings.span_s =
            (last_finished.unwrap_or_default() - first_created.unwrap_or_default()) as f64 / 1e6;
        Ok(timings)
    }

    /// Waits up to `limit`, checking every `interval`, until `check` holds; fails early if a
    /// process of the run has exited.
    pub async fn wait_until<F, Fut>(
        &mut self,
        what: &str,
        limit: Duration,
        interval: Duration,
        check: F,
    ) -> anyhow::Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + limit;
        while !check().await {
            self.processes.ensure_running(what)?;
            if Instant::now() > deadline {
                bail!("timed out after {} s waiting for {what}", limit.as_secs_f64());
            }
            tokio::time::sleep(interval).await;
        }
        Ok(())
    }

    /// Ends the run: kills its processes, drops its PostgreSQL database, removes its directory
    /// and deletes its vhost.
    pub async fn finish(self) -> anyhow::Result<()> {
        let Stack { processes, workdir, vhost, pg_name, .. } = self;
        drop(processes);
        if let Some(name) = pg_name {
            let admin = migrations::connect(POSTGRES_ADMIN)
                .await
                .with_context(|| format!("cannot connect to PostgreSQL to drop {name}"))?;
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .with_context(|| format!("cannot drop the database {name}"))?;
        }
        drop(workdir);
        vhost.delete().await.context("cannot delete the run's RabbitMQ vhost")?;
        Ok(())
    }
}

/// One creation request of a run.
#[derive(Debug, Clone)]
pub struct Post {
    /// Where to POST.
    pub url: String,
    /// The JSON body.
    pub body: Value,
    /// Not sent before this moment (a fixed creation rate); `None`: at once.
    pub due: Option<Instant>,
}

/// Sends every request of `posts`, at most `senders` at once, and fails unless each is
/// answered `expected`.
pub async fn post_all(
    client: &reqwest::Client,
    posts: impl IntoIterator<Item = Post>,
    senders: usize,
    expected: u16,
) -> anyhow::Result<()> {
    let gate = Arc::new(Semaphore::new(senders.max(1)));
    let mut handles = Vec::new();
    for post in posts {
        if let Some(due) = post.due {
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = gate.clone().acquire_owned().await.context("the senders' gate closed")?;
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let sent = client.post(&post.url).json(&post.body).send().await;
            drop(permit);
            let response = sent.with_context(|| format!("POST {}", post.url))?;
            let status = response.status().as_u16();
            if status != expected {
                let text = response.text().await.unwrap_or_default();
                bail!("POST {}: HTTP {status} (not {expected}): {text}", post.url);
            }
            Ok(())
        }));
    }
    for handle in handles {
        handle.await.context("a sender panicked")??;
    }
    Ok(())
}

/// How often a wait asks again, unless told otherwise.
pub const POLL: Duration = Duration::from_millis(50);

/// GETs `url` and reads its JSON; fails on an error status.
pub async fn get(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .error_for_status()
        .with_context(|| format!("GET {url}"))?
        .json()
        .await
        .with_context(|| format!("GET {url}: not JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_resident_memory_is_read_from_vmhwm_in_mib() {
        let status = "Name:\tbot-agent\nVmPeak:\t  999 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_peak_rss_mib(status), 2.0);
        assert!(parse_peak_rss_mib("Name:\tgone\n").is_nan());
        assert!(peak_rss_mib(Some(std::process::id())) > 0.0);
        assert!(max_peak_rss_mib(&[]).is_nan());
        assert!(max_peak_rss_mib(&[std::process::id()]) > 0.0);
    }
}
