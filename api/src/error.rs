//! The API's error: an error code from the shared table, a message for the client, and the
//! field at fault for bad input. REST and gRPC render this one type, never their own.
//!
//! Internal details (SQL, driver messages) are logged here and never sent to clients.

use kairos_domain::{ErrorCode, FieldError};
use kairos_store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError::new(field, reason).into()
    }

    /// The answer for a missing resource, and for another tenant's (I6): the same words.
    pub fn not_found(kind: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{kind} not found"))
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self {
            code: ErrorCode::InvalidArgument,
            message: e.to_string(),
            field: Some(e.field),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(kind) => Self::not_found(kind),
            StoreError::Invalid(field) => field.into(),
            StoreError::Conflict(m) => Self::new(ErrorCode::AlreadyExists, m),
            StoreError::FailedPrecondition(m) => Self::new(ErrorCode::FailedPrecondition, m),
            StoreError::LimitReached { what, limit } => Self::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "the tenant already has {limit} {what}, its quota: delete or let some \
                     complete first (completed schedules do not count)"
                ),
            ),
            other => {
                let code = other.code();
                tracing::error!(error = %other, "store call failed");
                let message = match code {
                    ErrorCode::Unavailable => "the database is unavailable; retry later",
                    _ => "internal error",
                };
                Self::new(code, message)
            }
        }
    }
}
