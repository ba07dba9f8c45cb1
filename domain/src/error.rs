//! The one table of error codes, mapped to both HTTP and gRPC, plus the field error of bad input.
//!
//! REST and gRPC adapters must translate through this table and never pick statuses themselves,
//! so the two protocols cannot disagree about what an error is.

use std::fmt;

/// A failure class a client can act on; names follow gRPC's canonical codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unauthenticated,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, for exhaustive tests of the table.
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::FailedPrecondition,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::ResourceExhausted,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The snake_case name used in the REST error body (`error.code`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status of the REST adapter.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists => 409,
            ErrorCode::FailedPrecondition => 409,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::ResourceExhausted => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// The numeric gRPC status code (`google.rpc.Code`) of the gRPC adapter.
    pub const fn grpc_code(self) -> i32 {
        match self {
            ErrorCode::InvalidArgument => 3,
            ErrorCode::NotFound => 5,
            ErrorCode::AlreadyExists => 6,
            ErrorCode::FailedPrecondition => 9,
            ErrorCode::Unauthenticated => 16,
            ErrorCode::PermissionDenied => 7,
            ErrorCode::ResourceExhausted => 8,
            ErrorCode::Unavailable => 14,
            ErrorCode::Internal => 13,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bad input: which field (dotted path as the client spelled it) and why, in words a client
/// can act on. Always maps to [`ErrorCode::InvalidArgument`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error under a parent field, e.g. `max_attempts` → `retry.max_attempts`.
    pub fn within(self, parent: &str) -> Self {
        Self {
            field: format!("{parent}.{}", self.field),
            reason: self.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_an_http_error_status_and_a_non_ok_grpc_code() {
        for code in ErrorCode::ALL {
            assert!((400..600).contains(&code.http_status()), "{code}");
            assert!((1..=16).contains(&code.grpc_code()), "{code}");
        }
    }

    #[test]
    fn codes_have_distinct_names_and_grpc_codes() {
        let names: std::collections::HashSet<_> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let grpc: std::collections::HashSet<_> =
            ErrorCode::ALL.iter().map(|c| c.grpc_code()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        assert_eq!(grpc.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn a_nested_field_error_names_its_full_path() {
        let e = FieldError::new("max_attempts", "must be at least 1").within("retry");
        assert_eq!(e.field, "retry.max_attempts");
        assert_eq!(e.to_string(), "retry.max_attempts: must be at least 1");
    }
}
