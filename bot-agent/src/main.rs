//! `bot-agent`: runs one Botline bot until SIGTERM or Ctrl-C (a second one stops it at once).
//! See `bot-agent --help`.

use clap::Parser as _;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// One thread: a bot's tasks mostly wait (on a portal, a service, or a program running as its
/// own process), so one thread serves all its slots, and its messages need no hand-off between
/// worker threads (measured with one slot: less CPU per task than the multi-threaded runtime).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = bot_agent::AgentConfig::parse();
    let shutdown = CancellationToken::new();
    broker_config::signal::stop_on_signals(
        shutdown.clone(),
        "no task.released and no bot.offline are sent: an unacknowledged command goes back to \
         this bot's queue, and the orchestrator takes back the task this bot held when its \
         heartbeats stop",
    );
    bot_agent::run(config, shutdown).await?;
    Ok(())
}
