//! Turns any failure of a client command into the one-line report
//! `error: <code>: <message> (field: <field>)`, with the fix where there is one, and an exit
//! code; it must never print a credential, and never spread one error over several lines.

use std::{fmt, process::ExitCode};

/// Exit code of bad input and usage mistakes (as clap uses for its own errors).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of every other failure.
pub const EXIT_FAILURE: u8 = 1;

/// A failure as the user sees it: a snake_case code (the REST `error.code`), a message, for
/// bad input the field at fault, and where one helps, what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// What to do about it, said after the message.
    pub hint: Option<&'static str>,
    /// An exit code other than the code's usual one (`runs wait` timing out).
    pub exit: Option<u8>,
}

impl CliError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            hint: None,
            exit: None,
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

    pub fn with_exit(mut self, code: u8) -> Self {
        self.exit = Some(code);
        self
    }

    /// The report of an SDK error: its code, message and field, and the fix for the failures
    /// a person at a terminal can fix.
    pub fn from_sdk(err: &kairos_sdk::Error) -> Self {
        use kairos_sdk::Error as E;
        let message = match err {
            E::Api { message, .. } => message.clone(),
            E::Config { reason, .. } => reason.clone(),
            E::Credentials(e) => one_line(&e.to_string()),
            // The rest print as `<code>: <message>`; keep the message only.
            other => {
                let text = other.to_string();
                text.strip_prefix(other.code_name())
                    .and_then(|t| t.strip_prefix(": "))
                    .map_or(text.clone(), str::to_owned)
            }
        };
        let hint = match err {
            E::Connect { .. } => {
                Some("is the API running there? set --endpoint or KAIROS_ENDPOINT")
            }
            E::Api { code, .. } if *code == kairos_sdk::Code::Unauthenticated => Some(
                "check the key: --api-key, KAIROS_API_KEY or the credentials file (the admin token for tenants)",
            ),
            _ => None,
        };
        Self {
            code: err.code_name(),
            message,
            field: err.field().map(str::to_owned),
            hint,
            exit: None,
        }
    }

    /// 2 for invalid argument (bad input or usage), 1 for everything else, unless told.
    pub fn exit_code(&self) -> u8 {
        match self.exit {
            Some(code) => code,
            None if self.code == "invalid_argument" => EXIT_USAGE,
            None => EXIT_FAILURE,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}: {}", self.code, self.message)?;
        if let Some(field) = &self.field {
            write!(f, " (field: {field})")?;
        }
        if let Some(hint) = self.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CliError {}

impl From<kairos_sdk::Error> for CliError {
    fn from(err: kairos_sdk::Error) -> Self {
        Self::from_sdk(&err)
    }
}

/// The report of any error a client command returned: a [`CliError`], an SDK error passed
/// up with `?`, or anything else (reported as `unknown`).
pub fn describe(err: &anyhow::Error) -> CliError {
    if let Some(e) = err.downcast_ref::<CliError>() {
        return e.clone();
    }
    if let Some(e) = err.downcast_ref::<kairos_sdk::Error>() {
        return CliError::from_sdk(e);
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
    use kairos_sdk::{Code, Error};

    use super::*;

    fn api(code: Code, message: &str, field: Option<&str>) -> Error {
        Error::Api {
            code,
            message: message.into(),
            field: field.map(str::to_owned),
        }
    }

    #[test]
    fn a_field_error_from_the_server_names_the_field_once() {
        let e = CliError::from_sdk(&api(
            Code::InvalidArgument,
            "must be at most 1024 (1 GiB)",
            Some("memory_mb"),
        ));
        assert_eq!(
            e.to_string(),
            "error: invalid_argument: must be at most 1024 (1 GiB) (field: memory_mb)"
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn other_errors_have_no_field_and_exit_one() {
        let e = CliError::from_sdk(&api(Code::NotFound, "job not found", None));
        assert_eq!(e.to_string(), "error: not_found: job not found");
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn failures_a_person_can_fix_say_how() {
        let e = CliError::from_sdk(&api(
            Code::Unauthenticated,
            "unknown or revoked API key",
            None,
        ));
        assert!(e.to_string().contains("--api-key, KAIROS_API_KEY"), "{e}");
        let e = CliError::from_sdk(&Error::Connect {
            endpoint: "http://127.0.0.1:1".into(),
            reason: "tcp connect error".into(),
        });
        assert_eq!(
            e.to_string(),
            "error: unavailable: cannot connect to http://127.0.0.1:1: tcp connect error; is the API running there? set --endpoint or KAIROS_ENDPOINT"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn a_timeout_keeps_its_message_and_can_carry_its_own_exit_code() {
        let e = CliError::from_sdk(&Error::Timeout {
            run_id: "run_1".into(),
            waited: std::time::Duration::from_secs(3),
        })
        .with_exit(6);
        assert_eq!(
            e.to_string(),
            "error: deadline_exceeded: run run_1 had not ended after 3s"
        );
        assert_eq!(e.exit_code(), 6);
    }

    #[test]
    fn describe_finds_the_error_behind_anyhow() {
        let sdk: anyhow::Error = api(Code::PermissionDenied, "nope", None).into();
        assert_eq!(describe(&sdk).code, "permission_denied");
        let ours: anyhow::Error = CliError::invalid("bad").with_field("x").into();
        assert_eq!(describe(&ours).field.as_deref(), Some("x"));
        let other = anyhow::anyhow!("disk\nfull");
        assert_eq!(describe(&other).to_string(), "error: unknown: disk full");
    }
}
