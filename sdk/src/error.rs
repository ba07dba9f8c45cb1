//! The SDK's one error type: what the server answered (code, message, the field at fault) or
//! why no answer could be had; it must never carry a credential.

use std::time::Duration;

use kairos_domain::ErrorCode;
use tonic::{Code, Status};

use crate::credentials::CredentialsError;

/// The gRPC metadata entry in which the API names the request field at fault
/// (`INVALID_ARGUMENT` answers).
pub const FIELD_METADATA: &str = "kairos-error-field";

/// Everything a call of this crate can fail with.
///
/// Every variant has a gRPC [`code`](Error::code) and its snake_case
/// [`code_name`](Error::code_name) (the REST API's `error.code`), so a caller can branch on the
/// class of failure without matching variants; bad input also names its
/// [`field`](Error::field).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server refused or failed the call.
    #[error("{}: {message}{}", code_name(*.code), field_suffix(.field.as_deref()))]
    Api {
        /// The gRPC status code.
        code: Code,
        /// The server's reason, without the `<field>: ` prefix it also writes.
        message: String,
        /// The request field at fault, from the `kairos-error-field` metadata.
        field: Option<String>,
    },
    /// The server could not be reached (nothing was sent), after every retry.
    #[error("unavailable: cannot connect to {endpoint}: {reason}")]
    Connect {
        /// The URL the client was built for.
        endpoint: String,
        /// The transport's reason, such as `tcp connect error: Connection refused`.
        reason: String,
    },
    /// The client was given something it cannot use; nothing was sent.
    #[error("invalid_argument: {reason}{}", field_suffix(Some(.field)))]
    Config {
        /// What was wrong: `endpoint`, `api_key`, `admin_token`, …
        field: &'static str,
        /// Why, in words that say how to fix it.
        reason: String,
    },
    /// A wait ([`Client::wait_for_run`](crate::Client::wait_for_run)) gave up before the run
    /// ended. The run goes on.
    #[error("deadline_exceeded: run {run_id} had not ended after {}s", .waited.as_secs())]
    Timeout {
        /// The run waited for.
        run_id: String,
        /// How long the wait lasted.
        waited: Duration,
    },
    /// The server's answer lacks something the API contract promises.
    #[error("internal: unexpected answer from the server: {0}")]
    Protocol(String),
    /// The credentials file could not be read or written.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

impl Error {
    /// The gRPC code of the failure (a timeout of a wait is `DeadlineExceeded`, a bad client
    /// setting `InvalidArgument`, an unreachable server `Unavailable`).
    pub fn code(&self) -> Code {
        match self {
            Error::Api { code, .. } => *code,
            Error::Connect { .. } => Code::Unavailable,
            Error::Config { .. } => Code::InvalidArgument,
            Error::Timeout { .. } => Code::DeadlineExceeded,
            Error::Protocol(_) => Code::Internal,
            Error::Credentials(_) => Code::FailedPrecondition,
        }
    }

    /// The snake_case name of [`code`](Error::code): for the codes of the shared table it is the
    /// REST API's `error.code` (`invalid_argument`, `not_found`, …).
    pub fn code_name(&self) -> &'static str {
        code_name(self.code())
    }

    /// The entry of the API's error-code table, when the code is one of its codes.
    pub fn error_code(&self) -> Option<ErrorCode> {
        let grpc = self.code() as i32;
        ErrorCode::ALL.into_iter().find(|c| c.grpc_code() == grpc)
    }

    /// The request field (or client setting) at fault, when the failure names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Api { field, .. } => field.as_deref(),
            Error::Config { field, .. } => Some(field),
            Error::Credentials(_) => Some("credentials_file"),
            _ => None,
        }
    }

    /// True when the failure is the server's answer that the caller lacks or has a bad
    /// credential (`UNAUTHENTICATED` or `PERMISSION_DENIED`).
    pub fn is_auth(&self) -> bool {
        matches!(self.code(), Code::Unauthenticated | Code::PermissionDenied)
    }

    /// True for `NOT_FOUND` (which is also how another tenant's resource answers).
    pub fn is_not_found(&self) -> bool {
        self.code() == Code::NotFound
    }

    /// Reads the code, the message and the `kairos-error-field` metadata of a status. The API
    /// writes the field into the message too (`<field>: <reason>`); that prefix is dropped so
    /// the field is not said twice.
    pub fn from_status(status: &Status) -> Self {
        let field = status
            .metadata()
            .get(FIELD_METADATA)
            .and_then(|v| v.to_str().ok())
            .filter(|f| !f.is_empty())
            .map(str::to_owned);
        let mut message = one_line(status.message());
        if let Some(rest) = field
            .as_deref()
            .and_then(|f| message.strip_prefix(f))
            .and_then(|rest| rest.strip_prefix(": "))
        {
            message = rest.to_owned();
        }
        if message.is_empty() {
            message = "the server gave no message".to_owned();
        }
        Error::Api {
            code: status.code(),
            message,
            field,
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Self::from_status(&status)
    }
}

/// The snake_case name of a gRPC code; for the codes of the shared table it is the REST
/// `error.code` (`kairos_domain::ErrorCode::as_str`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

fn field_suffix(field: Option<&str>) -> String {
    field.map(|f| format!(" (field: {f})")).unwrap_or_default()
}

/// The message with line breaks folded, so an error always prints on one line.
pub(crate) fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An error and its sources on one line (`transport error: tcp connect error: refused`),
/// each cause said once.
pub(crate) fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    one_line(&text)
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    #[test]
    fn the_shared_codes_have_their_rest_names() {
        for code in ErrorCode::ALL {
            let e = Error::Api {
                code: Code::from(code.grpc_code()),
                message: "m".into(),
                field: None,
            };
            assert_eq!(e.code_name(), code.as_str());
            assert_eq!(e.error_code(), Some(code));
        }
    }

    #[test]
    fn a_field_error_names_the_field_once() {
        let mut status = Status::invalid_argument("memory_mb: must be at most 1024 (1 GiB)");
        status
            .metadata_mut()
            .insert(FIELD_METADATA, MetadataValue::from_static("memory_mb"));
        let e = Error::from(status);
        assert_eq!(e.field(), Some("memory_mb"));
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(
            e.to_string(),
            "invalid_argument: must be at most 1024 (1 GiB) (field: memory_mb)"
        );
    }

    #[test]
    fn other_errors_have_no_field_and_one_line() {
        let e = Error::from(Status::not_found("job not found"));
        assert_eq!(e.to_string(), "not_found: job not found");
        assert!(e.field().is_none() && e.is_not_found());
        let e = Error::from(Status::unavailable("connection\n  refused"));
        assert_eq!(e.to_string(), "unavailable: connection refused");
        assert_eq!(e.error_code(), Some(ErrorCode::Unavailable));
        let e = Error::from(Status::deadline_exceeded(""));
        assert_eq!(e.error_code(), None);
        assert_eq!(
            e.to_string(),
            "deadline_exceeded: the server gave no message"
        );
    }

    #[test]
    fn client_side_errors_have_codes_too() {
        let e = Error::Config {
            field: "api_key",
            reason: "must not be empty".into(),
        };
        assert_eq!(e.code_name(), "invalid_argument");
        assert_eq!(e.field(), Some("api_key"));
        assert_eq!(
            e.to_string(),
            "invalid_argument: must not be empty (field: api_key)"
        );
        let e = Error::Timeout {
            run_id: "run_1".into(),
            waited: Duration::from_secs(5),
        };
        assert_eq!(e.code_name(), "deadline_exceeded");
        assert_eq!(
            e.to_string(),
            "deadline_exceeded: run run_1 had not ended after 5s"
        );
    }
}
