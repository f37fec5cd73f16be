//! `orchestrator`: the API, dispatcher and event consumer on the configured database and broker;
//! `orchestrator demo`: the same plus the simulators, three bots and sample tasks.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use orchestrator::demo::{DemoAddresses, run_demo};
use orchestrator::{Config, Orchestrator};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Botline's orchestrator: REST API, dispatcher and event consumer.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the orchestrator (the default).
    Serve,
    /// Run everything in one process: the orchestrator, the Vivo360 portal and notification sink
    /// stand-ins, three bot agents and a few sample tasks, against the local RabbitMQ.
    Demo,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,sea_orm=warn,lapin=warn".into()),
        )
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line, causes included, no backtrace: this is for the person at the terminal.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(Cli { config, command }: Cli) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    match command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let orchestrator = Orchestrator::start(&config).await?;
            let listener = TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            orchestrator.serve(listener, shutdown).await?;
        }
        Command::Demo => run_demo(config, shutdown, print_banner).await?,
    }
    tracing::info!("stopped");
    Ok(())
}

fn print_banner(at: &DemoAddresses) {
    println!(
        "\nBotline demo running. Ctrl-C stops it.\n\
         \n  API             http://{api}/api/v1/tasks   (OpenAPI: http://{api}/api/v1/openapi.json)\
         \n  bots            http://{api}/api/v1/bots    (bot-1, bot-2: VIVO360+NOOP; bot-3: NOOP)\
         \n  Vivo360 portal  http://{portal}/_control/users   (users the bots created)\
         \n  RabbitMQ UI     http://127.0.0.1:15672   (guest/guest: queues botline.bot.*, exchanges botline.*)\
         \n\nSample tasks were submitted; watch them go WAITING -> ASSIGNED -> RUNNING -> COMPLETE:\
         \n  curl -s 'http://{api}/api/v1/tasks?order=oldest' | python3 -m json.tool\n",
        api = at.api,
        portal = at.portal
    );
}

/// Cancels `token` on Ctrl-C or SIGTERM, so in-flight work finishes before the process exits.
async fn stop_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
    token.cancel();
}
