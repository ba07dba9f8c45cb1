//! Typed storage errors, each mapped onto the shared error-code table.
//!
//! Database driver errors (Postgres and SQLite) are classified here once; callers never
//! inspect SQLSTATE or SQLite result codes.

use kairos_domain::{ErrorCode, FieldError, ShardId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The resource does not exist for this tenant (it may exist for another: I6).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A concurrent writer won (version moved) or a unique key is taken.
    #[error("{0}")]
    Conflict(String),
    /// The operation does not apply to the resource's current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A shard write carried a fence token a newer claim superseded, or a claim was not newer
    /// than the shard's current token: the caller does not own the shard (I1, I8).
    #[error("shard {} is fenced: token {token} is not the current one", .shard.get())]
    Fenced { shard: ShardId, token: i64 },
    /// The tenant already has `limit` of `what` (a quota); nothing was written.
    #[error("the tenant already has {limit} {what}, its limit")]
    LimitReached { what: &'static str, limit: u32 },
    /// A value was refused by storage rules not expressible in the domain types.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The database could not be reached or the connection broke; the call may be retried.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A stored row does not parse into its domain type (a bug or a manual edit).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// `Err(LimitReached)` when `live` schedules already fill a quota of `limit`.
    pub(crate) fn check_live_schedules(live: i64, limit: u32) -> Result<(), StoreError> {
        if live >= i64::from(limit) {
            return Err(StoreError::LimitReached {
                what: "live schedules",
                limit,
            });
        }
        Ok(())
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::Conflict(_) => ErrorCode::AlreadyExists,
            StoreError::FailedPrecondition(_) | StoreError::Fenced { .. } => {
                ErrorCode::FailedPrecondition
            }
            StoreError::Invalid(_) => ErrorCode::InvalidArgument,
            StoreError::LimitReached { .. } => ErrorCode::ResourceExhausted,
            StoreError::Unavailable(_) => ErrorCode::Unavailable,
            StoreError::Database(_) | StoreError::Corrupt(_) | StoreError::Migrate(_) => {
                ErrorCode::Internal
            }
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(e),
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c == "57P01" || sqlite_busy(&c)) =>
            {
                StoreError::Unavailable(e)
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(
                duplicate_message(db.table().or_else(|| sqlite_table(db.message()))),
            ),
            // A run or event whose fire time has no partition: older than the kept history or
            // further ahead than maintenance has prepared.
            sqlx::Error::Database(db)
                if db.code().as_deref() == Some("23514")
                    && db.message().starts_with("no partition of relation") =>
            {
                StoreError::Invalid(FieldError::new(
                    "fire_time",
                    "is outside the stored run history (older than the retention or too far ahead)",
                ))
            }
            _ => StoreError::Database(e),
        }
    }
}

/// SQLite's (extended) result codes of a lock held elsewhere: `SQLITE_BUSY` and `SQLITE_LOCKED`
/// with their variants. The call may be retried. (Postgres codes are five characters.)
fn sqlite_busy(code: &str) -> bool {
    matches!(code, "5" | "261" | "517" | "773" | "6" | "262")
}

/// The table SQLite names in a constraint message (`UNIQUE constraint failed: runs.schedule_id,
/// …`); SQLite reports no table otherwise.
fn sqlite_table(message: &str) -> Option<&str> {
    let columns = message.strip_prefix("UNIQUE constraint failed: ")?;
    columns.split_once('.').map(|(table, _)| table)
}

/// Words for a unique violation on `table` (a partition reports its own name, `runs_p202601`).
fn duplicate_message(table: Option<&str>) -> String {
    let table = table.unwrap_or("row");
    let base = match table.rsplit_once("_p") {
        Some((base, month)) if month.len() == 6 && month.bytes().all(|b| b.is_ascii_digit()) => {
            base
        }
        _ => table,
    };
    match base {
        "runs" => "a run of this schedule for this fire time and attempt already exists".to_owned(),
        "api_keys" => "an api key with this hash already exists".to_owned(),
        other => format!("a {other} row with the same id already exists"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_constraint_messages_name_their_table() {
        assert_eq!(
            sqlite_table(
                "UNIQUE constraint failed: runs.schedule_id, runs.fire_time, runs.attempt"
            ),
            Some("runs")
        );
        assert_eq!(sqlite_table("NOT NULL constraint failed: jobs.name"), None);
        assert_eq!(
            duplicate_message(sqlite_table("UNIQUE constraint failed: api_keys.key_hash")),
            "an api key with this hash already exists"
        );
        assert_eq!(
            duplicate_message(Some("runs_p202601")),
            "a run of this schedule for this fire time and attempt already exists"
        );
    }

    #[test]
    fn a_busy_sqlite_is_unavailable_not_a_bug() {
        assert!(sqlite_busy("5") && sqlite_busy("517") && sqlite_busy("6"));
        assert!(!sqlite_busy("2067"), "a unique violation is not a lock");
        assert!(!sqlite_busy("08006"));
    }
}
