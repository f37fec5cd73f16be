//! `callcenter-server`: the call-center queue manager, serving its JSON protocol over TCP
//! (`docs/callcenter.md`).
//!
//! Prints `listening on <address>` on standard output once bound, so a caller that passes
//! `--port 0` learns the port; logs go to standard error (`RUST_LOG` filters them).
//! Stops on Ctrl-C or SIGTERM; a second one stops it at once.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use callcenter::queue::{CallQueue, Operators, RingTimeout};
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Call-center queue manager: offers incoming calls to operators, over TCP.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; 0.0.0.0 accepts connections from other hosts and containers.
    #[arg(long, env = "CALLCENTER_HOST", default_value = "0.0.0.0")]
    host: IpAddr,
    /// TCP port to listen on; 0 picks a free one.
    #[arg(long, env = "CALLCENTER_PORT", default_value_t = 5678)]
    port: u16,
    /// Operators in the order calls are offered to them, comma-separated.
    #[arg(long, env = "CALLCENTER_OPERATORS", default_value = "A,B")]
    operators: Operators,
    /// Seconds a call may ring before it counts as ignored; fractions allowed.
    #[arg(long, env = "CALLCENTER_RING_TIMEOUT", default_value = "10")]
    ring_timeout: RingTimeout,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    broker_config::logging::init_with(broker_config::logging::LogFormat::Text, "info");
    let args = Args::parse();

    let listener = TcpListener::bind(SocketAddr::new(args.host, args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let address = listener.local_addr().context("listener has no address")?;
    println!("listening on {address}");

    let shutdown = CancellationToken::new();
    broker_config::signal::stop_on_signals(
        shutdown.clone(),
        "connected clients are cut off, and the calls in the queue are lost (held in memory only)",
    );
    callcenter::server::run(listener, CallQueue::new(&args.operators, args.ring_timeout), shutdown)
        .await;
    Ok(())
}
