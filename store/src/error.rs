//! Typed storage errors, each mapped onto the shared error-code table.
//!
//! Database driver errors are classified here once; callers never inspect SQLSTATE codes.

use kairos_domain::{ErrorCode, FieldError};

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
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::Conflict(_) => ErrorCode::AlreadyExists,
            StoreError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            StoreError::Invalid(_) => ErrorCode::InvalidArgument,
            StoreError::Unavailable(_) => ErrorCode::Unavailable,
            StoreError::Database(_) | StoreError::Corrupt(_) | StoreError::Migrate(_) => ErrorCode::Internal,
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
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("08") || c == "57P01") => {
                StoreError::Unavailable(e)
            }
            _ => StoreError::Database(e),
        }
    }
}
