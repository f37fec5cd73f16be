//! `migrations`: applies or inspects Botline's schema without starting the orchestrator.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use migrations::{DEFAULT_DATABASE_URL, Migrator, MigratorTrait as _};

/// Applies Botline's database migrations (the orchestrator also applies them at start).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Database to migrate: sqlite://FILE?mode=rwc or postgres://USER@HOST/DB.
    #[arg(long, env = "BOTLINE_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    database_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply every pending migration.
    Up,
    /// Roll back the last N migrations.
    Down {
        /// How many to roll back.
        #[arg(default_value_t = 1)]
        steps: u32,
    },
    /// List the migrations and whether each is applied.
    Status,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let db = migrations::connect(&cli.database_url)
        .await
        .with_context(|| format!("cannot open the database {}", cli.database_url))?;
    match cli.command {
        Command::Up => Migrator::up(&db, None).await?,
        Command::Down { steps } => Migrator::down(&db, Some(steps)).await?,
        Command::Status => Migrator::status(&db).await?,
    }
    Ok(())
}
