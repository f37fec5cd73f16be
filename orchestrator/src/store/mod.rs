//! The storage layer: tasks, bots and task history as stored, and the rule every transaction
//! that changes a task and its bot together follows ([`begin_in_line`]). The pipeline, the
//! incident engine and the HTTP handlers all point down to it; it points to nothing above it.

pub mod bots;
pub mod history;
pub mod systems;
pub mod tasks;

use sea_orm::{ConnectionTrait as _, DbBackend, TransactionTrait};

use crate::error::ApiError;

/// The advisory lock key of the pipeline's transactions on PostgreSQL ("botline" in ASCII).
const PIPELINE_LOCK: i64 = 0x0062_6f74_6c69_6e65;

/// Begins a transaction that waits its turn: on PostgreSQL every transaction that changes a task
/// and its bot together (the pipeline's dispatch passes and batches of events, the API's cancel
/// and delete) takes one advisory lock first, so two of them never deadlock. SQLite has one
/// writer anyway.
pub async fn begin_in_line<D: TransactionTrait>(db: &D) -> Result<D::Transaction, ApiError> {
    let txn = db.begin().await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({PIPELINE_LOCK})")).await?;
    }
    Ok(txn)
}
