//! `broker-config`: prints Botline's RabbitMQ topology as a definitions file; `broker-config users`
//! adds least-privilege users for the orchestrator, each bot and each publisher.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use broker_config::access::{UserPlan, parse_passwords};
use broker_config::topology::QueueType;
use broker_config::{BotName, Topology};
use clap::Parser;

/// Prints Botline's RabbitMQ topology as a definitions file, to import in the management UI
/// (Overview → Import definitions) or with `rabbitmqctl import_definitions FILE`.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The vhost the definitions are for.
    #[arg(long, default_value = "/", global = true)]
    vhost: String,
    /// Also define the queue of this bot (repeatable); bots otherwise declare their own. With
    /// `users`: a user for this bot too.
    #[arg(long = "bot", global = true, value_parser = |s: &str| BotName::parse(s).map_err(|e| e.to_string()))]
    bots: Vec<BotName>,
    /// The queues' type: quorum for a RabbitMQ cluster (the orchestrator and bots must then be
    /// started with the same --queue-type, or with --no-declare).
    #[arg(long, value_enum, default_value_t = QueueType::Classic, global = true)]
    queue_type: QueueType,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Prints the topology with least-privilege users: one for the orchestrator and one per
    /// --bot (user bot-<name>: reads only its own queue, writes only botline.events and
    /// botline.dlx, configures nothing; run the agent with --no-declare), and one per
    /// --publisher. Passwords not in --passwords are generated and printed once, to stderr, as
    /// user:password lines (the format --passwords reads); the definitions hold only salted
    /// hashes.
    Users {
        /// The orchestrator's user name (it may not start with "bot-").
        #[arg(long, default_value = "orchestrator")]
        orchestrator: String,
        /// A publisher's user name (repeatable, or comma-separated): an attendance or monitoring
        /// platform, which may publish to botline.attendance and botline.monitoring, and to
        /// amq.topic with the attendance routing keys (STOMP's /topic/attendance), and do
        /// nothing else.
        #[arg(long = "publisher", env = "BOTLINE_BROKER_PUBLISHERS", value_delimiter = ',')]
        publishers: Vec<String>,
        /// A file of user:password lines (# comments) with the passwords to use.
        #[arg(long, env = "BOTLINE_BROKER_PASSWORDS")]
        passwords: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => {
            let core = Topology::core().with_queue_type(cli.queue_type);
            let topology = cli.bots.iter().fold(core, |t, bot| t.merge(Topology::bot(bot)));
            print(&topology.to_definitions(&cli.vhost))
        }
        Some(Command::Users { orchestrator, publishers, passwords }) => {
            let given = match &passwords {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    parse_passwords(&text)?
                }
                None => Default::default(),
            };
            let plan = UserPlan::with_publishers(&orchestrator, &publishers, &cli.bots, given)?
                .with_queue_type(cli.queue_type);
            // The definitions first: the passwords are shown only once they are written.
            print(&plan.to_definitions(&cli.vhost))?;
            let generated: Vec<_> =
                plan.users().into_iter().map(|(c, _)| c).filter(|c| c.generated()).collect();
            if !generated.is_empty() {
                // The only time these passwords are shown: on the terminal, not in any log.
                let mut stderr = std::io::stderr().lock();
                writeln!(stderr, "# generated broker passwords (user:password), shown once")?;
                for credentials in generated {
                    writeln!(stderr, "{}:{}", credentials.user(), credentials.password())?;
                }
            }
            Ok(())
        }
    }
}

/// Writes `definitions` to stdout; an error (a closed pipe) rather than a panic when it cannot.
fn print(definitions: &serde_json::Value) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string_pretty(definitions)?)?;
    stdout.flush()?;
    Ok(())
}
