//! Turns any failure of a client command into the one-line report
//! `error: <code>: <message> (field: <field>)` and an exit code; it must never print a
//! credential, and never spread one error over several lines.

use std::{fmt, process::ExitCode};

use tonic::{Code, Status};

/// The gRPC metadata entry in which the server names the offending request field.
pub const FIELD_METADATA: &str = "kairos-error-field";

/// Exit code of bad input and usage mistakes (as clap uses for its own errors).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of every other failure.
pub const EXIT_FAILURE: u8 = 1;

/// A failure as the user sees it: a snake_case code (the REST `error.code`), a message and,
/// for bad input, the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl CliError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// Bad input or usage, caught before anything was sent.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("invalid_argument", message)
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Reads the code, the message and the `kairos-error-field` metadata of a gRPC status.
    /// The server writes the field into the message too (`<field>: <reason>`); that prefix is
    /// dropped so the field is not said twice.
    pub fn from_status(status: &Status) -> Self {
        let field = status
            .metadata()
            .get(FIELD_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .filter(|f| !f.is_empty());
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
        Self {
            code: code_name(status.code()),
            message,
            field,
        }
    }

    /// 2 for invalid argument (bad input or usage), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        if self.code == "invalid_argument" {
            EXIT_USAGE
        } else {
            EXIT_FAILURE
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}: {}", self.code, self.message)?;
        if let Some(field) = &self.field {
            write!(f, " (field: {field})")?;
        }
        Ok(())
    }
}

impl std::error::Error for CliError {}

impl From<Status> for CliError {
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

/// The report of any error a client command returned: a [`CliError`], a gRPC [`Status`]
/// passed up with `?`, or anything else (reported as `unknown`).
pub fn describe(err: &anyhow::Error) -> CliError {
    if let Some(e) = err.downcast_ref::<CliError>() {
        return e.clone();
    }
    if let Some(status) = err.downcast_ref::<Status>() {
        return CliError::from_status(status);
    }
    CliError::new("unknown", one_line(&format!("{err:#}")))
}

/// Prints the one-line report of `err` to stderr and answers the exit code to use.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let e = describe(err);
    eprintln!("{e}");
    ExitCode::from(e.exit_code())
}

/// The message with line breaks folded, so a report is always one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use kairos_domain::ErrorCode;
    use tonic::metadata::MetadataValue;

    use super::*;

    #[test]
    fn the_shared_codes_have_their_rest_names() {
        for code in ErrorCode::ALL {
            assert_eq!(code_name(Code::from(code.grpc_code())), code.as_str());
        }
    }

    #[test]
    fn a_field_error_from_the_server_names_the_field_once() {
        let mut status = Status::invalid_argument("memory_mb: must be at most 1024 (1 GiB)");
        status
            .metadata_mut()
            .insert(FIELD_METADATA, MetadataValue::from_static("memory_mb"));
        let e = CliError::from_status(&status);
        assert_eq!(
            e.to_string(),
            "error: invalid_argument: must be at most 1024 (1 GiB) (field: memory_mb)"
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn other_errors_have_no_field_and_exit_one() {
        let e = CliError::from_status(&Status::not_found("job not found"));
        assert_eq!(e.to_string(), "error: not_found: job not found");
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn a_multi_line_message_is_folded_into_one_line() {
        let e = CliError::from_status(&Status::unavailable("connection\n  refused"));
        assert_eq!(e.to_string(), "error: unavailable: connection refused");
    }

    #[test]
    fn describe_finds_the_error_behind_anyhow() {
        let status: anyhow::Error = Status::permission_denied("nope").into();
        assert_eq!(describe(&status).code, "permission_denied");
        let ours: anyhow::Error = CliError::invalid("bad").with_field("x").into();
        assert_eq!(describe(&ours).field.as_deref(), Some("x"));
        let other = anyhow::anyhow!("disk full");
        assert_eq!(describe(&other).to_string(), "error: unknown: disk full");
    }
}
