//! What a store call can fail with, what that means for the caller (retry, refuse, fail fast), and the API
//! error a failed call becomes.

use crate::error::{ApiError, ErrorKind};
use actix_web::http::StatusCode;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct StoreError {
    pub(super) what: String,
    #[source]
    pub(super) source: Cause,
}

/// What failed underneath: sqlx (everything but the SQLite spend log), or the SQLite spend log's own
/// connection (`store/sqlite_spend_log.rs`).
#[derive(Debug, thiserror::Error)]
pub(super) enum Cause {
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Other(String),
    #[error("the spend-log writer has stopped")]
    Closed,
    #[error("no answer within {0:?} (general_settings.database_timeout)")]
    Timeout(Duration),
    #[error("a call in the last second could not reach it")]
    Down,
}

impl StoreError {
    pub(super) fn sqlite(what: &str, e: rusqlite::Error) -> StoreError {
        StoreError {
            what: what.to_owned(),
            source: Cause::Sqlite(e),
        }
    }

    pub(super) fn other(what: &str, message: String) -> StoreError {
        StoreError {
            what: what.to_owned(),
            source: Cause::Other(message),
        }
    }

    pub(super) fn closed() -> StoreError {
        StoreError {
            what: "cannot write the spend log".to_owned(),
            source: Cause::Closed,
        }
    }

    /// Whether the database refused the data itself (a value it cannot store, a constraint), as opposed to
    /// being unreachable, busy or slow: the same rows would be refused again, so they must not be retried
    /// forever ahead of the rows behind them.
    pub fn is_refusal(&self) -> bool {
        match &self.source {
            Cause::Sqlx(sqlx::Error::Database(db)) => db.code().is_some_and(|c| {
                // PostgreSQL SQLSTATE classes: 22 data exception (e.g. a NUL in text), 23 integrity
                // constraint violation, 54 program limit exceeded.
                c.starts_with("22") || c.starts_with("23") || c.starts_with("54")
            }),
            Cause::Sqlx(sqlx::Error::Encode(_)) => true,
            Cause::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::ConstraintViolation
                    | rusqlite::ErrorCode::TooBig
                    | rusqlite::ErrorCode::TypeMismatch
            ),
            Cause::Sqlite(rusqlite::Error::ToSqlConversionFailure(_)) => true,
            _ => false,
        }
    }

    /// Whether the database could not be reached or did not answer in time (as opposed to answering with an
    /// error): calls fail fast for a moment after one of these.
    pub fn is_unreachable(&self) -> bool {
        match &self.source {
            Cause::Sqlx(e) => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
            ),
            Cause::Timeout(_) | Cause::Down => true,
            _ => false,
        }
    }

    /// The `error_class` label value: the kind of database error.
    pub fn class(&self) -> &'static str {
        let e = match &self.source {
            Cause::Sqlx(e) => e,
            Cause::Sqlite(rusqlite::Error::SqliteFailure(..)) => return "DatabaseError",
            Cause::Sqlite(_) | Cause::Other(_) => return "OtherError",
            Cause::Closed => return "PoolClosed",
            Cause::Timeout(_) => return "Timeout",
            Cause::Down => return "Unavailable",
        };
        match e {
            sqlx::Error::Database(_) => "DatabaseError",
            sqlx::Error::Io(_) => "IoError",
            sqlx::Error::PoolTimedOut => "PoolTimedOut",
            sqlx::Error::PoolClosed => "PoolClosed",
            sqlx::Error::RowNotFound => "RowNotFound",
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => "DecodeError",
            sqlx::Error::Protocol(_) => "ProtocolError",
            sqlx::Error::Tls(_) => "TlsError",
            _ => "OtherError",
        }
    }
}

pub(super) fn err(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
    let what = what.into();
    move |source| StoreError {
        what,
        source: Cause::Sqlx(source),
    }
}

impl ApiError {
    /// A store call that failed: 503 with `retry-after` while the database is unreachable or slow (the
    /// caller may try again), 500 when it refused the data.
    pub fn store(e: &StoreError) -> Self {
        tracing::error!("store error: {e}");
        if e.is_refusal() {
            return Self::internal(format!("the database refused the change: {e}"));
        }
        let mut err = Self::new(
            ErrorKind::ServiceUnavailableError,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the database is unavailable, nothing was changed; try again shortly ({e})"),
        );
        err.retry_after = Some(1);
        err
    }
}
