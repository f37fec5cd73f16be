//! `simulators`: runs one of the stand-ins for the systems Botline's bots automate.
//!
//! Prints `listening on <address>` on standard output once bound, so a caller that passes
//! port 0 learns the port; logs go to standard error (`RUST_LOG` filters them). Stops on
//! Ctrl-C or SIGTERM, letting in-flight requests finish; a second signal stops it at once.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use broker_config::https::TlsMaterial;
use clap::{Parser, Subcommand};
use simulators::equipment::{self, EquipmentConfig};
use simulators::notify::{self, NotifyConfig};
use simulators::vivo360::{self, Vivo360Config};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Stand-ins for the systems Botline's bots automate, each with a JSON control API under
/// /_control for failure injection and inspection.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    simulator: Simulator,
}

#[derive(Debug, Subcommand)]
enum Simulator {
    /// The Vivo360 user-administration portal (login, user form, field validation).
    Vivo360 {
        /// Address to listen on; port 0 picks a free one.
        #[arg(long, env = "SIMULATOR_LISTEN", default_value = "127.0.0.1:8091")]
        listen: SocketAddr,
        #[command(flatten)]
        config: Vivo360Config,
    },
    /// The equipment config service ("service A"): configures a CPE, as slowly as a real device.
    Equipment {
        /// Address to listen on; port 0 picks a free one.
        #[arg(long, env = "SIMULATOR_LISTEN", default_value = "127.0.0.1:8092")]
        listen: SocketAddr,
        /// Serve HTTPS, with a self-signed certificate for localhost and 127.0.0.1 made at start
        /// unless --cert and --key are given.
        #[arg(long)]
        tls: bool,
        /// The certificate chain (PEM) to serve HTTPS with; implies --tls.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Write the self-signed certificate made at start to this file, for the bots to trust
        /// (bot-agent --equipment-ca FILE).
        #[arg(long, conflicts_with = "cert")]
        save_cert: Option<PathBuf>,
        #[command(flatten)]
        config: EquipmentConfig,
    },
    /// The notification sink, recording what bots deliver to its webhooks.
    Notify {
        /// Address to listen on; port 0 picks a free one.
        #[arg(long, env = "SIMULATOR_LISTEN", default_value = "127.0.0.1:8093")]
        listen: SocketAddr,
        #[command(flatten)]
        config: NotifyConfig,
    },
    /// Exit 0 when something accepts TCP connections at ADDRESS within 2 s, 1 otherwise: for
    /// container health checks (the image has no shell; the equipment service speaks HTTPS).
    Healthcheck {
        /// The simulator's address, e.g. 127.0.0.1:8091.
        address: SocketAddr,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    broker_config::logging::init_with(broker_config::logging::LogFormat::Text, "info");
    let cli = Cli::parse();
    let shutdown = CancellationToken::new();
    broker_config::signal::stop_on_signals(
        shutdown.clone(),
        "requests in flight are cut off (the bot making one sees a failed call); the stand-in's \
         state lived in memory only",
    );
    match cli.simulator {
        Simulator::Healthcheck { address } => {
            let connect = tokio::net::TcpStream::connect(address);
            tokio::time::timeout(std::time::Duration::from_secs(2), connect)
                .await
                .with_context(|| format!("{address} did not answer within 2 s"))?
                .with_context(|| format!("cannot connect to {address}"))?;
        }
        Simulator::Vivo360 { listen, config } => {
            vivo360::serve(bind(listen).await?, config, shutdown)
                .await
                .context("Vivo360 portal failed")?;
        }
        Simulator::Equipment { listen, tls, cert, key, save_cert, config } => {
            let listener = bind(listen).await?;
            let material = match (cert, key) {
                (Some(cert), Some(key)) => Some(TlsMaterial::from_files(&cert, &key)?),
                _ if tls || save_cert.is_some() => {
                    let material = simulators::tls::self_signed()?;
                    if let Some(path) = save_cert {
                        std::fs::write(&path, &material.cert_pem).with_context(|| {
                            format!("cannot write the certificate to {}", path.display())
                        })?;
                        tracing::info!(path = %path.display(), "self-signed certificate saved");
                    }
                    Some(material)
                }
                _ => None,
            };
            let served = match material {
                Some(material) => equipment::serve_tls(listener, config, material, shutdown).await,
                None => equipment::serve(listener, config, shutdown).await,
            };
            served.context("equipment config service failed")?;
        }
        Simulator::Notify { listen, config } => {
            notify::serve(bind(listen).await?, config, shutdown)
                .await
                .context("notification sink failed")?;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Binds `address` and announces the address actually bound.
async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener =
        TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address}"))?;
    let bound = listener.local_addr().context("listener has no address")?;
    println!("listening on {bound}");
    Ok(listener)
}
