//! `broker-config`: prints Botline's RabbitMQ topology as a definitions file.

use broker_config::{BotName, Topology};
use clap::Parser;

/// Prints Botline's RabbitMQ topology as a definitions file, to import in the management UI
/// (Overview → Import definitions) or with `rabbitmqctl import_definitions FILE`.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The vhost the definitions are for.
    #[arg(long, default_value = "/")]
    vhost: String,
    /// Also define the queue of this bot (repeatable); bots otherwise declare their own.
    #[arg(long = "bot", value_parser = |s: &str| BotName::parse(s).map_err(|e| e.to_string()))]
    bots: Vec<BotName>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let topology = cli.bots.iter().fold(Topology::core(), |t, bot| t.merge(Topology::bot(bot)));
    println!("{}", serde_json::to_string_pretty(&topology.to_definitions(&cli.vhost))?);
    Ok(())
}
