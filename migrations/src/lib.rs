//! Botline's database schema, as sea-orm migrations that run unchanged on SQLite and PostgreSQL.
//!
//! The orchestrator applies them at start ([`Migrator::up`]); the `migrations` binary runs them on
//! their own (`migrations up`). [`connect`] opens a database the way every Botline program must:
//! SQLite in WAL mode with a busy timeout, so the API, the dispatcher and the consumers never meet
//! "database is locked".

use std::time::Duration;

pub use sea_orm_migration::MigratorTrait;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm_migration::sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

mod m20261122_070000_create_bots;
mod m20261122_070100_create_tasks;
mod m20261122_070200_create_task_events;
mod m20261122_090000_create_attendances;
mod m20261122_100000_create_incidents;
mod m20261122_140000_add_session_to_bots;
mod m20261202_150000_add_rotation_to_bots;
mod m20261202_150100_add_run_limits_to_tasks;
mod m20261202_160000_add_tls_to_bots;
mod m20261203_070000_create_systems;
mod m20261203_100000_add_slots_to_bots;
mod m20261203_140000_index_tasks_by_bot_and_status;
mod m20261204_090000_add_rows_failed_to_tasks;

pub use m20261203_070000_create_systems::BUILTIN_SYSTEMS;

/// The default database: a SQLite file in the working directory, created when missing.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://botline.db?mode=rwc";

/// Every migration, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_070000_create_bots::Migration),
            Box::new(m20261122_070100_create_tasks::Migration),
            Box::new(m20261122_070200_create_task_events::Migration),
            Box::new(m20261122_090000_create_attendances::Migration),
            Box::new(m20261122_100000_create_incidents::Migration),
            Box::new(m20261122_140000_add_session_to_bots::Migration),
            Box::new(m20261202_150000_add_rotation_to_bots::Migration),
            Box::new(m20261202_150100_add_run_limits_to_tasks::Migration),
            Box::new(m20261202_160000_add_tls_to_bots::Migration),
            Box::new(m20261203_070000_create_systems::Migration),
            Box::new(m20261203_100000_add_slots_to_bots::Migration),
            Box::new(m20261203_140000_index_tasks_by_bot_and_status::Migration),
            Box::new(m20261204_090000_add_rows_failed_to_tasks::Migration),
        ]
    }
}

/// Opens a connection pool to `url` (`sqlite://…` or `postgres://…`).
///
/// SQLite gets WAL (readers never wait for the writer), `synchronous=NORMAL` (safe with WAL, one
/// fsync per checkpoint instead of per commit) and a 10 s busy timeout, so concurrent writers
/// queue instead of failing with "database is locked".
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url);
    options.sqlx_logging(false).acquire_timeout(Duration::from_secs(10)).map_sqlx_sqlite_opts(
        |o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        },
    );
    Database::connect(options).await
}
