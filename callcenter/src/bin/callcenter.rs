//! `callcenter`: the call-center command interpreter.
//!
//! Reads `call <id>`, `answer <operator>`, `reject <operator>` and `hangup <id>` from
//! standard input (with line editing on a terminal) and prints what happens: by talking
//! to `callcenter-server`, or with `--local` against a queue manager in this process.
//! Messages go to standard output, errors to standard error.

use anyhow::Context;
use callcenter::client;
use callcenter::queue::{CallQueue, Operators, RingTimeout};
use clap::Parser;
use tokio::net::TcpStream;

/// Call-center command interpreter: type call, answer, reject and hangup commands.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    // Not a clap conflict with --local: that would also fire when only the environment
    // variable is set, as in the client's container image.
    /// Queue manager to talk to, as HOST:PORT (ignored with --local).
    #[arg(long, env = "CALLCENTER_SERVER", default_value = "127.0.0.1:5678")]
    server: String,
    /// Run a queue manager in this process instead of connecting to one.
    #[arg(long)]
    local: bool,
    /// With --local: operators in the order calls are offered to them, comma-separated.
    #[arg(long, default_value = "A,B", requires = "local")]
    operators: Operators,
    /// With --local: seconds a call may ring before it counts as ignored.
    #[arg(long, default_value = "10", requires = "local")]
    ring_timeout: RingTimeout,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Only warnings: standard output and error are the program's own output.
    broker_config::logging::init_with(broker_config::logging::LogFormat::Text, "warn");
    let args = Args::parse();

    if args.local {
        let (input, mut printer) = client::spawn_stdin_reader()?;
        let queue = CallQueue::new(&args.operators, args.ring_timeout);
        client::run_local(queue, input, printer.as_mut()).await?;
    } else {
        // Connect first: no prompt for a server that is not there.
        let stream = TcpStream::connect(&args.server)
            .await
            .with_context(|| format!("cannot connect to {}", args.server))?;
        let (input, mut printer) = client::spawn_stdin_reader()?;
        client::run(stream, input, printer.as_mut()).await?;
    }
    Ok(())
}
