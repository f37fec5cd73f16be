//! `bot-agent`: runs one Botline bot until SIGTERM or Ctrl-C (a second one stops it at once).
//! See `bot-agent --help`.

use clap::Parser as _;
use tokio_util::sync::CancellationToken;

// The agent's settings, and how it logs (a plain comment: a doc comment would become the
// program's description in --help).
#[derive(clap::Parser)]
#[command(name = "bot-agent", version, about = bot_agent::config::ABOUT)]
struct Cli {
    #[command(flatten)]
    config: bot_agent::AgentConfig,
    #[command(flatten)]
    log: broker_config::logging::LogArgs,
}

/// One thread: a bot's tasks mostly wait (on a portal, a service, or a program running as its
/// own process), so one thread serves all its slots, and its messages need no hand-off between
/// worker threads (measured with one slot: less CPU per task than the multi-threaded runtime).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let Cli { config, log } = Cli::parse();
    broker_config::logging::init(log.log_format);
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
