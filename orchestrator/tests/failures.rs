//! The one classifier of database errors, [`orchestrator::failure::is_transient`], on errors
//! from the real databases: PostgreSQL's serialization failures and deadlocks and SQLite's busy
//! lock are transient (503 over HTTP, waited for by the consumers), a closed pool too, and the
//! errors the data causes are not.
#![allow(clippy::unwrap_used)]

use axum::http::StatusCode;
use orchestrator::error::ApiError;
use orchestrator::failure::is_transient;
use sea_orm::{ConnectOptions, ConnectionTrait as _, Database, TransactionTrait as _};

fn postgres_admin_url() -> String {
    std::env::var("BOTLINE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[tokio::test]
async fn postgres_retry_errors_are_transient_and_data_errors_are_not() {
    let db = Database::connect(postgres_admin_url()).await.expect("PostgreSQL (scripts/services)");
    // Raised by the server itself, so the error comes through the driver as any other would.
    for (sqlstate, transient) in
        [("40001", true), ("40P01", true), ("23505", false), ("22P02", false)]
    {
        let sql =
            format!("DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{sqlstate}'; END $$");
        let err = db.execute_unprepared(&sql).await.expect_err(sqlstate);
        assert_eq!(is_transient(&err), transient, "{sqlstate}: {err:?}");
        let expected = if transient {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        assert_eq!(ApiError::from(err).status_code(), expected, "{sqlstate}");
    }
    let err = db.execute_unprepared("SELECT * FROM no_such_table").await.expect_err("42P01");
    assert!(!is_transient(&err), "{err:?}");
    let pool = db.clone();
    db.close().await.unwrap();
    let err = pool.execute_unprepared("SELECT 1").await.expect_err("the pool is closed");
    assert!(is_transient(&err), "{err:?}");
}

#[tokio::test]
async fn sqlite_busy_is_transient_and_a_missing_table_is_not() {
    let path = std::env::temp_dir().join(format!("botline-failures-{}.db", uuid::Uuid::new_v4()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let holder = Database::connect(&url).await.unwrap();
    holder.execute_unprepared("CREATE TABLE t (x INTEGER)").await.unwrap();
    let txn = holder.begin().await.unwrap();
    txn.execute_unprepared("INSERT INTO t VALUES (1)").await.unwrap();
    // One connection that does not wait for the lock the transaction holds.
    let mut options = ConnectOptions::new(&url);
    options.max_connections(1);
    let other = Database::connect(options).await.unwrap();
    other.execute_unprepared("PRAGMA busy_timeout = 0").await.unwrap();
    let err = other.execute_unprepared("INSERT INTO t VALUES (2)").await.expect_err("busy");
    assert!(is_transient(&err), "{err:?}");
    assert_eq!(ApiError::from(err).status_code(), StatusCode::SERVICE_UNAVAILABLE);
    let err = other.execute_unprepared("SELECT * FROM missing").await.expect_err("no table");
    assert!(!is_transient(&err), "{err:?}");
    txn.rollback().await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
