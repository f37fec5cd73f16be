//! `orchestrator`: the API, dispatcher and event consumer on the configured database and broker.
//! The demo (the same plus the simulators, three bots and sample tasks) is `botline-demo`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use orchestrator::etl::produce::{ProduceOptions, produce};
use orchestrator::{Config, Orchestrator};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Botline's orchestrator: REST API, dispatcher and event consumer.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(flatten)]
    log: broker_config::logging::LogArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the orchestrator (the default).
    Serve,
    /// Moved: the demo is its own program, `botline-demo` (`cargo run -p botline-demo`); this
    /// only says so and exits with status 2.
    Demo,
    /// Exit 0 when the orchestrator answers /readyz (its database and broker are up), 1 otherwise:
    /// for container health checks (the image has no shell or curl).
    Healthcheck {
        /// What to GET (default: /readyz on the configured listen port, over loopback when it
        /// listens on every address).
        #[arg(long)]
        url: Option<String>,
    },
    /// Run only the attendance ETL (no API); `etl produce` publishes synthetic records.
    Etl {
        #[command(subcommand)]
        action: Option<EtlAction>,
    },
}

#[derive(Subcommand)]
enum EtlAction {
    /// Publish realistic synthetic attendance records (some broken on purpose) to
    /// botline.attendance, as fast as the broker confirms them.
    Produce {
        /// How many records.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// The share of broken records, 0 to 1 (spread evenly).
        #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
        bad_ratio: f64,
        /// The generator's seed, to publish the same records again (random by default).
        #[arg(long)]
        seed: Option<u64>,
        /// Concurrent publishers.
        #[arg(long, default_value_t = 4)]
        publishers: usize,
    },
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| format!("'{text}' is not a ratio between 0 and 1"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    orchestrator::startup::init_logging(cli.log.log_format);
    if let Some(Command::Demo) = cli.command {
        eprintln!("error: {DEMO_MOVED}");
        return std::process::ExitCode::from(2);
    }
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line, causes included, no backtrace: this is for the person at the terminal.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What `orchestrator demo` says: the demo links the bot agent and the simulators, which the
/// orchestrator's binary does not.
const DEMO_MOVED: &str = "`orchestrator demo` has moved to its own program: run `botline-demo` \
     (from the repository: `cargo run -p botline-demo`), with the same flags";

/// What a stop forced by a second signal leaves behind, and who takes it back.
const HAND_BACK: &str = "unacknowledged messages go back to their queues, and the offers and runs \
     this orchestrator held are taken back by the sweeps of the next orchestrator";

async fn run(Cli { config, command, .. }: Cli) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    broker_config::signal::stop_on_signals(shutdown.clone(), HAND_BACK);
    match command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let orchestrator = Orchestrator::start(&config, shutdown).await?;
            let listener = TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            // A loop that ended early is an error too: the process exits 1, naming it.
            orchestrator.serve(listener).await?;
        }
        // Answered in `main`, before anything starts.
        Command::Demo => anyhow::bail!(DEMO_MOVED),
        Command::Healthcheck { url } => {
            // The client here speaks plain HTTP only (HTTPS is checked from outside: curl -k).
            anyhow::ensure!(
                url.is_some() || config.tls_cert.is_none(),
                "healthcheck speaks plain HTTP; this orchestrator serves HTTPS"
            );
            let url = url.unwrap_or_else(|| readyz_url(&config));
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(3))
                .build()
                .context("cannot make an HTTP client")?;
            let response = client.get(&url).send().await.with_context(|| format!("GET {url}"))?;
            anyhow::ensure!(response.status().is_success(), "GET {url}: {}", response.status());
            return Ok(());
        }
        Command::Etl { action: None } => {
            orchestrator::app::run_etl_alone(&config, shutdown).await?
        }
        Command::Etl {
            action: Some(EtlAction::Produce { count, bad_ratio, seed, publishers }),
        } => {
            let seed = seed.unwrap_or_else(rand::random);
            let options = ProduceOptions {
                count,
                bad_ratio,
                seed,
                publishers,
                timezone: config.timezone,
                queue_type: config.queue_type,
            };
            let report = produce(&config.broker_url(), &options, shutdown).await?;
            println!(
                "published {} attendance records ({} good, {} bad) in {:.2} s: {:.0} records/s (--seed {seed})",
                report.good + report.bad,
                report.good,
                report.bad,
                report.elapsed.as_secs_f64(),
                report.rate()
            );
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// `/readyz` on the port the orchestrator listens on, over loopback when it listens everywhere.
fn readyz_url(config: &Config) -> String {
    let mut address = config.listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{address}/readyz")
}
