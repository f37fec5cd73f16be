//! Why the pipeline could not handle something, classified once: [`Failure`] is what the
//! consumers (events, monitoring reports, attendance records) turn into a broker
//! [`Decision`], and [`is_transient`] is the one place that says whether a database error will
//! pass by itself. [`ApiError`](crate::error::ApiError) keeps its own statuses for HTTP; its 503 is this module's
//! transient.
//!
//! - [`Failure::Invalid`]: the message can never be handled: dead-lettered at once, with the
//!   reason.
//! - [`Failure::Transient`]: the database is unreachable, busy or asks for a retry: the message
//!   waits in its queue, however long that takes, uncounted.
//! - [`Failure::Internal`]: anything else (a bug, a corrupt row, a constraint the data breaks):
//!   retried behind the queue, counted, and dead-lettered with the last error after
//!   `--max-message-failures` tries.

use broker_config::Decision;
use sea_orm::sqlx;
use sea_orm::sqlx::error::DatabaseError as _;
use sea_orm::{DbErr, RuntimeErr};

/// Why something could not be handled, as far as retrying it is concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// It can never be handled as it is (malformed, refused by a rule); the reason says why.
    #[error("{0}")]
    Invalid(String),
    /// It can be handled once the database is back or free again.
    #[error("{0}")]
    Transient(String),
    /// It failed for a reason it may fail for again (a bug, a corrupt row); the reason is the
    /// error's.
    #[error("{0}")]
    Internal(String),
}

impl Failure {
    /// What the consumer does with the message: the one mapping from a failure to a
    /// [`Decision`].
    pub fn decision(self) -> Decision {
        match self {
            Failure::Invalid(reason) => Decision::DeadLetter(reason),
            Failure::Transient(_) => Decision::Requeue,
            Failure::Internal(reason) => Decision::Retry(reason),
        }
    }
}

impl From<DbErr> for Failure {
    fn from(err: DbErr) -> Failure {
        if is_transient(&err) {
            Failure::Transient(err.to_string())
        } else {
            Failure::Internal(err.to_string())
        }
    }
}

/// Whether `err` will likely pass if the same work is tried again later: the connection is lost
/// or the pool cannot hand one out, PostgreSQL aborted the transaction for a serialization
/// failure or a deadlock (or is shutting down), SQLite is busy or locked. Everything else is
/// not.
pub fn is_transient(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(err)) | DbErr::Query(RuntimeErr::SqlxError(err)) => {
            sqlx_transient(err)
        }
        _ => false,
    }
}

fn sqlx_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(err) => {
            if let Some(err) = err.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                postgres_transient(err.code())
            } else if let Some(err) = err.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                err.code().and_then(|code| code.parse().ok()).is_some_and(sqlite_transient)
            } else {
                false
            }
        }
        _ => false,
    }
}

/// Whether a PostgreSQL SQLSTATE says "try again": `40001` serialization failure, `40P01`
/// deadlock, class `08` connection exceptions, and `57P01`–`57P03` (the server shutting down or
/// starting).
pub fn postgres_transient(sqlstate: &str) -> bool {
    matches!(sqlstate, "40001" | "40P01" | "57P01" | "57P02" | "57P03")
        || (sqlstate.len() == 5 && sqlstate.starts_with("08"))
}

/// Whether a SQLite result code (extended or primary) is `SQLITE_BUSY` (5) or `SQLITE_LOCKED`
/// (6): another connection holds the lock.
pub fn sqlite_transient(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6)
}

#[cfg(test)]
mod tests {
    use sea_orm::ConnAcquireErr;

    use super::*;
    use crate::error::ApiError;

    #[test]
    fn postgres_retry_codes_are_transient_and_data_errors_are_not() {
        for code in ["40001", "40P01", "08006", "08003", "57P01", "57P03"] {
            assert!(postgres_transient(code), "{code}");
        }
        // unique violation, insufficient privilege, undefined table, invalid text, check.
        for code in ["23505", "42501", "42P01", "22P02", "23514", "08", "080000", ""] {
            assert!(!postgres_transient(code), "{code}");
        }
    }

    #[test]
    fn sqlite_busy_and_locked_are_transient_with_their_extended_codes() {
        // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_BUSY_RECOVERY, SQLITE_BUSY_SNAPSHOT,
        // SQLITE_LOCKED_SHAREDCACHE.
        for code in [5, 6, 261, 517, 262] {
            assert!(sqlite_transient(code), "{code}");
        }
        // SQLITE_ERROR, SQLITE_CORRUPT, SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_CHECK.
        for code in [1, 11, 2067, 275] {
            assert!(!sqlite_transient(code), "{code}");
        }
    }

    #[test]
    fn lost_connections_are_transient_and_other_database_errors_internal() {
        let transient = [
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
            DbErr::Conn(RuntimeErr::Internal("connection reset".into())),
            DbErr::Exec(RuntimeErr::SqlxError(sqlx::Error::PoolTimedOut.into())),
            DbErr::Query(RuntimeErr::SqlxError(
                sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()).into(),
            )),
        ];
        for err in transient {
            assert!(is_transient(&err), "{err}");
            assert_eq!(Failure::from(err).decision(), Decision::Requeue);
        }
        let internal = [
            DbErr::Type("task 1: stored status is invalid".into()),
            DbErr::RecordNotFound("tasks".into()),
            DbErr::Exec(RuntimeErr::Internal("connection".into())),
            DbErr::Query(RuntimeErr::SqlxError(sqlx::Error::RowNotFound.into())),
        ];
        for err in internal {
            let text = err.to_string();
            assert!(!is_transient(&err), "{text}");
            assert_eq!(Failure::from(err).decision(), Decision::Retry(text));
        }
    }

    #[test]
    fn api_errors_map_by_what_they_say_about_the_message() {
        let invalid = ApiError::invalid("status", "unknown status");
        assert_eq!(
            Failure::from(invalid).decision(),
            Decision::DeadLetter("unknown status".into())
        );
        let unavailable = ApiError::from(DbErr::Conn(RuntimeErr::Internal("refused".into())));
        assert_eq!(unavailable.status_code(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(Failure::from(unavailable).decision(), Decision::Requeue);
        let internal = ApiError::from(DbErr::Type("stored status".into()));
        assert_eq!(internal.status_code(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            Failure::from(internal).decision(),
            Decision::Retry("Type Error: stored status".into())
        );
        let conflict = ApiError::conflict("bot_running_task", None, "the bot runs a task");
        assert_eq!(
            Failure::from(conflict).decision(),
            Decision::Retry("the bot runs a task".into())
        );
    }
}
