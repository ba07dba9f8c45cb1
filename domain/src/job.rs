//! What to run: the checked job spec (image, command, env, limits, retry policy, labels).
//!
//! A `JobSpec` is valid by construction; the only way to build one is from a `JobDraft`, which
//! holds the unchecked values as a client sent them. Limits here are product promises (I5):
//! memory never above 1 GiB, timeout never above 24 h.

use std::collections::BTreeMap;

use crate::{CredentialName, FieldError, ImageRef};

/// A job's display name: 1–200 characters, no control characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobName(String);

impl JobName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(FieldError::new("name", "must not be empty"));
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                "name",
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(FieldError::new(
                "name",
                "must not contain control characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The container's memory cap in MiB; memory and memory+swap are both set to it, so no swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemoryLimit(u32);

impl MemoryLimit {
    pub const MIN_MB: u32 = 16;
    pub const MAX_MB: u32 = 1024;
    pub const DEFAULT: MemoryLimit = MemoryLimit(256);

    pub fn from_mb(mb: i64) -> Result<Self, FieldError> {
        if mb > i64::from(Self::MAX_MB) {
            return Err(FieldError::new(
                "memory_mb",
                format!("must be at most {} (1 GiB), got {mb}", Self::MAX_MB),
            ));
        }
        if mb < i64::from(Self::MIN_MB) {
            return Err(FieldError::new(
                "memory_mb",
                format!("must be at least {}, got {mb}", Self::MIN_MB),
            ));
        }
        Ok(Self(mb as u32))
    }

    pub const fn mb(self) -> u32 {
        self.0
    }

    pub const fn bytes(self) -> u64 {
        self.0 as u64 * 1024 * 1024
    }
}

/// The wall-clock limit of one run, in seconds, at most 24 hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RunTimeout(u32);

impl RunTimeout {
    pub const MAX_SECONDS: u32 = 86_400;
    pub const DEFAULT: RunTimeout = RunTimeout(3_600);

    pub fn from_seconds(seconds: i64) -> Result<Self, FieldError> {
        if seconds > i64::from(Self::MAX_SECONDS) {
            return Err(FieldError::new(
                "timeout_seconds",
                format!(
                    "must be at most {} (24 hours), got {seconds}",
                    Self::MAX_SECONDS
                ),
            ));
        }
        if seconds < 1 {
            return Err(FieldError::new(
                "timeout_seconds",
                format!("must be at least 1, got {seconds}"),
            ));
        }
        Ok(Self(seconds as u32))
    }

    pub const fn seconds(self) -> u32 {
        self.0
    }
}

/// The container's argv; empty means "the image's default command".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command(Vec<String>);

impl Command {
    pub const MAX_ARGS: usize = 256;
    pub const MAX_TOTAL_BYTES: usize = 64 * 1024;

    pub fn parse(args: Vec<String>) -> Result<Self, FieldError> {
        if args.len() > Self::MAX_ARGS {
            return Err(FieldError::new(
                "command",
                format!(
                    "must have at most {} arguments, got {}",
                    Self::MAX_ARGS,
                    args.len()
                ),
            ));
        }
        if let Some(i) = args.iter().position(|a| a.contains('\0')) {
            return Err(FieldError::new(
                format!("command[{i}]"),
                "must not contain NUL bytes",
            ));
        }
        let total: usize = args.iter().map(String::len).sum();
        if total > Self::MAX_TOTAL_BYTES {
            return Err(FieldError::new(
                "command",
                format!(
                    "must total at most {} bytes, got {total}",
                    Self::MAX_TOTAL_BYTES
                ),
            ));
        }
        Ok(Self(args))
    }

    pub fn args(&self) -> &[String] {
        &self.0
    }
}

/// Environment variables passed to the container. Values may be secrets: nothing may log them.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Env(BTreeMap<String, String>);

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values may hold credentials.
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Env {
    pub const MAX_VARS: usize = 128;
    pub const MAX_NAME_LEN: usize = 256;
    pub const MAX_TOTAL_BYTES: usize = 32 * 1024;
    /// Names the platform sets itself (`KAIROS_RUN_ID`, …); customers may not override them.
    pub const RESERVED_PREFIX: &'static str = "KAIROS_";

    pub fn parse(vars: BTreeMap<String, String>) -> Result<Self, FieldError> {
        Self::parse_as("env", vars)
    }

    /// Like [`Env::parse`], reporting errors under `field` (e.g. the execute-now `env` override).
    pub fn parse_as(field: &str, vars: BTreeMap<String, String>) -> Result<Self, FieldError> {
        if vars.len() > Self::MAX_VARS {
            return Err(FieldError::new(
                field,
                format!(
                    "must have at most {} variables, got {}",
                    Self::MAX_VARS,
                    vars.len()
                ),
            ));
        }
        let mut total = 0usize;
        for (name, value) in &vars {
            let at = format!("{field}.{name}");
            let valid_name = name.len() <= Self::MAX_NAME_LEN
                && name
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid_name {
                return Err(FieldError::new(
                    field,
                    format!(
                        "'{name}' is not a valid variable name (letters, digits and '_', not starting with a digit, at most {} characters)",
                        Self::MAX_NAME_LEN
                    ),
                ));
            }
            if name.starts_with(Self::RESERVED_PREFIX) {
                return Err(FieldError::new(
                    at,
                    format!("names starting with {} are reserved", Self::RESERVED_PREFIX),
                ));
            }
            if value.contains('\0') {
                return Err(FieldError::new(at, "must not contain NUL bytes"));
            }
            total += name.len() + value.len();
        }
        if total > Self::MAX_TOTAL_BYTES {
            return Err(FieldError::new(
                field,
                format!(
                    "must total at most {} bytes of names and values, got {total}",
                    Self::MAX_TOTAL_BYTES
                ),
            ));
        }
        Ok(Self(vars))
    }

    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

/// Free-form key/value labels for the customer's own bookkeeping and filtering.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    pub const MAX_LABELS: usize = 64;
    pub const MAX_KEY_LEN: usize = 63;
    pub const MAX_VALUE_LEN: usize = 256;

    pub fn parse(labels: BTreeMap<String, String>) -> Result<Self, FieldError> {
        if labels.len() > Self::MAX_LABELS {
            return Err(FieldError::new(
                "labels",
                format!(
                    "must have at most {} labels, got {}",
                    Self::MAX_LABELS,
                    labels.len()
                ),
            ));
        }
        for (key, value) in &labels {
            let valid_key = !key.is_empty()
                && key.len() <= Self::MAX_KEY_LEN
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_./".contains(&b));
            if !valid_key {
                return Err(FieldError::new(
                    "labels",
                    format!(
                        "'{key}' is not a valid label key (1-{} characters of a-z, 0-9, '-', '_', '.', '/')",
                        Self::MAX_KEY_LEN
                    ),
                ));
            }
            if value.chars().count() > Self::MAX_VALUE_LEN || value.chars().any(char::is_control) {
                return Err(FieldError::new(
                    format!("labels.{key}"),
                    format!(
                        "must be at most {} printable characters",
                        Self::MAX_VALUE_LEN
                    ),
                ));
            }
        }
        Ok(Self(labels))
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

/// How often and how patiently a failed run is retried. Each attempt is a new run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff_seconds: u32,
    max_backoff_seconds: u32,
}

impl RetryPolicy {
    pub const MAX_ATTEMPTS: u32 = 100;
    pub const MAX_BACKOFF_SECONDS: u32 = 86_400;
    /// One attempt: no retries unless the customer asks.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        initial_backoff_seconds: 10,
        max_backoff_seconds: 300,
    };

    pub const fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    pub const fn initial_backoff_seconds(&self) -> u32 {
        self.initial_backoff_seconds
    }

    pub const fn max_backoff_seconds(&self) -> u32 {
        self.max_backoff_seconds
    }
}

/// Unchecked retry settings; absent fields take the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryDraft {
    pub max_attempts: Option<i64>,
    pub initial_backoff_seconds: Option<i64>,
    pub max_backoff_seconds: Option<i64>,
}

impl RetryDraft {
    pub fn parse(self) -> Result<RetryPolicy, FieldError> {
        let d = RetryPolicy::DEFAULT;
        let max_attempts = bounded(
            "max_attempts",
            self.max_attempts.unwrap_or(i64::from(d.max_attempts)),
            1,
            RetryPolicy::MAX_ATTEMPTS,
        )?;
        let initial = bounded(
            "initial_backoff_seconds",
            self.initial_backoff_seconds
                .unwrap_or(i64::from(d.initial_backoff_seconds)),
            1,
            RetryPolicy::MAX_BACKOFF_SECONDS,
        )?;
        let max = bounded(
            "max_backoff_seconds",
            self.max_backoff_seconds
                .unwrap_or(i64::from(d.max_backoff_seconds.max(initial))),
            1,
            RetryPolicy::MAX_BACKOFF_SECONDS,
        )?;
        if max < initial {
            return Err(FieldError::new(
                "max_backoff_seconds",
                format!("must be at least initial_backoff_seconds ({initial}), got {max}"),
            ));
        }
        Ok(RetryPolicy {
            max_attempts,
            initial_backoff_seconds: initial,
            max_backoff_seconds: max,
        })
    }
}

fn bounded(field: &str, value: i64, min: u32, max: u32) -> Result<u32, FieldError> {
    if value < i64::from(min) || value > i64::from(max) {
        return Err(FieldError::new(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(value as u32)
}

/// A checked job: every field is valid, every limit within the product's promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub name: JobName,
    pub image: ImageRef,
    pub command: Command,
    pub env: Env,
    pub memory: MemoryLimit,
    pub timeout: RunTimeout,
    pub retry: RetryPolicy,
    pub labels: Labels,
    /// The tenant's registry credential used to pull `image`, if the image is private.
    pub registry_credential: Option<CredentialName>,
}

/// A job as a client sent it (create) or the fields it wants changed (patch); unchecked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobDraft {
    pub name: Option<String>,
    pub image: Option<String>,
    pub command: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub memory_mb: Option<i64>,
    pub timeout_seconds: Option<i64>,
    pub retry: Option<RetryDraft>,
    pub labels: Option<BTreeMap<String, String>>,
    /// The name of the tenant's registry credential for the image; in a patch, `""` removes it.
    pub registry_credential: Option<String>,
}

impl JobDraft {
    /// Checks a complete job; `name` and `image` are required, the rest take defaults.
    /// Fields are checked in the order a reader scans the request, so the first error
    /// reported is the first bad field.
    pub fn parse(self) -> Result<JobSpec, FieldError> {
        let name = JobName::parse(
            self.name
                .as_deref()
                .ok_or_else(|| FieldError::new("name", "is required"))?,
        )?;
        let image = ImageRef::parse(
            self.image
                .as_deref()
                .ok_or_else(|| FieldError::new("image", "is required"))?,
        )?;
        Ok(JobSpec {
            name,
            image,
            command: Command::parse(self.command.unwrap_or_default())?,
            env: Env::parse(self.env.unwrap_or_default())?,
            memory: self
                .memory_mb
                .map_or(Ok(MemoryLimit::DEFAULT), MemoryLimit::from_mb)?,
            timeout: self
                .timeout_seconds
                .map_or(Ok(RunTimeout::DEFAULT), RunTimeout::from_seconds)?,
            retry: self.retry.map_or(Ok(RetryPolicy::DEFAULT), |r| {
                r.parse().map_err(|e| e.within("retry"))
            })?,
            labels: Labels::parse(self.labels.unwrap_or_default())?,
            registry_credential: self
                .registry_credential
                .as_deref()
                .filter(|name| !name.is_empty())
                .map(|name| CredentialName::parse_as("registry_credential", name))
                .transpose()?,
        })
    }

    /// Applies this draft as a patch over `current`: present fields replace, absent ones keep.
    /// A present `retry` replaces the whole policy (absent sub-fields take defaults).
    pub fn patch(self, current: &JobSpec) -> Result<JobSpec, FieldError> {
        Ok(JobSpec {
            name: self
                .name
                .as_deref()
                .map_or(Ok(current.name.clone()), JobName::parse)?,
            image: self
                .image
                .as_deref()
                .map_or(Ok(current.image.clone()), ImageRef::parse)?,
            command: self
                .command
                .map_or(Ok(current.command.clone()), Command::parse)?,
            env: self.env.map_or(Ok(current.env.clone()), Env::parse)?,
            memory: self
                .memory_mb
                .map_or(Ok(current.memory), MemoryLimit::from_mb)?,
            timeout: self
                .timeout_seconds
                .map_or(Ok(current.timeout), RunTimeout::from_seconds)?,
            retry: self.retry.map_or(Ok(current.retry), |r| {
                r.parse().map_err(|e| e.within("retry"))
            })?,
            labels: self
                .labels
                .map_or(Ok(current.labels.clone()), Labels::parse)?,
            registry_credential: match self.registry_credential.as_deref() {
                None => current.registry_credential.clone(),
                Some("") => None,
                Some(name) => Some(CredentialName::parse_as("registry_credential", name)?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> JobDraft {
        JobDraft {
            name: Some("nightly report".into()),
            image: Some("busybox:1.36".into()),
            ..JobDraft::default()
        }
    }

    fn field_of(d: JobDraft) -> String {
        d.parse().unwrap_err().field
    }

    #[test]
    fn a_minimal_job_takes_the_documented_defaults() {
        let spec = draft().parse().unwrap();
        assert_eq!(spec.memory.mb(), 256);
        assert_eq!(spec.timeout.seconds(), 3600);
        assert_eq!(spec.retry, RetryPolicy::DEFAULT);
        assert!(spec.command.args().is_empty());
    }

    #[test]
    fn memory_is_capped_at_one_gibibyte() {
        assert_eq!(MemoryLimit::from_mb(1024).unwrap().bytes(), 1 << 30);
        let err = MemoryLimit::from_mb(1025).unwrap_err();
        assert_eq!(err.field, "memory_mb");
        assert!(err.reason.contains("1024"));
        assert_eq!(
            field_of(JobDraft {
                memory_mb: Some(4096),
                ..draft()
            }),
            "memory_mb"
        );
        assert_eq!(
            field_of(JobDraft {
                memory_mb: Some(-1),
                ..draft()
            }),
            "memory_mb"
        );
    }

    #[test]
    fn timeout_is_capped_at_twenty_four_hours() {
        assert!(RunTimeout::from_seconds(86_400).is_ok());
        assert_eq!(
            field_of(JobDraft {
                timeout_seconds: Some(86_401),
                ..draft()
            }),
            "timeout_seconds"
        );
        assert_eq!(
            field_of(JobDraft {
                timeout_seconds: Some(0),
                ..draft()
            }),
            "timeout_seconds"
        );
    }

    #[test]
    fn required_and_empty_fields_are_named() {
        assert_eq!(
            field_of(JobDraft {
                name: None,
                ..draft()
            }),
            "name"
        );
        assert_eq!(
            field_of(JobDraft {
                name: Some(" ".into()),
                ..draft()
            }),
            "name"
        );
        assert_eq!(
            field_of(JobDraft {
                image: None,
                ..draft()
            }),
            "image"
        );
        assert_eq!(
            field_of(JobDraft {
                image: Some("Not An Image".into()),
                ..draft()
            }),
            "image"
        );
    }

    #[test]
    fn env_is_bounded_and_names_are_checked() {
        let big: BTreeMap<_, _> = [("BLOB".to_string(), "x".repeat(40 * 1024))].into();
        assert_eq!(
            field_of(JobDraft {
                env: Some(big),
                ..draft()
            }),
            "env"
        );
        let many: BTreeMap<_, _> = (0..200).map(|i| (format!("V{i}"), String::new())).collect();
        assert_eq!(
            field_of(JobDraft {
                env: Some(many),
                ..draft()
            }),
            "env"
        );
        let bad_name: BTreeMap<_, _> = [("1X".to_string(), "v".to_string())].into();
        assert_eq!(
            field_of(JobDraft {
                env: Some(bad_name),
                ..draft()
            }),
            "env"
        );
        let reserved: BTreeMap<_, _> = [("KAIROS_RUN_ID".to_string(), "v".to_string())].into();
        assert_eq!(
            field_of(JobDraft {
                env: Some(reserved),
                ..draft()
            }),
            "env.KAIROS_RUN_ID"
        );
        let ok: BTreeMap<_, _> = [("DATABASE_URL".to_string(), "postgres://x".to_string())].into();
        assert!(
            JobDraft {
                env: Some(ok),
                ..draft()
            }
            .parse()
            .is_ok()
        );
    }

    #[test]
    fn env_debug_output_never_shows_values() {
        let env = Env::parse([("TOKEN".to_string(), "s3cr3t".to_string())].into()).unwrap();
        let shown = format!("{env:?}");
        assert!(
            shown.contains("TOKEN") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }

    #[test]
    fn retry_errors_name_the_nested_field() {
        let retry = RetryDraft {
            max_attempts: Some(0),
            ..RetryDraft::default()
        };
        assert_eq!(
            field_of(JobDraft {
                retry: Some(retry),
                ..draft()
            }),
            "retry.max_attempts"
        );
        let inverted = RetryDraft {
            initial_backoff_seconds: Some(60),
            max_backoff_seconds: Some(10),
            ..RetryDraft::default()
        };
        assert_eq!(
            field_of(JobDraft {
                retry: Some(inverted),
                ..draft()
            }),
            "retry.max_backoff_seconds"
        );
        let only_initial = RetryDraft {
            initial_backoff_seconds: Some(600),
            ..RetryDraft::default()
        };
        let policy = only_initial.parse().unwrap();
        assert_eq!(policy.max_backoff_seconds(), 600);
    }

    #[test]
    fn a_patch_changes_only_the_fields_it_names() {
        let current = draft().parse().unwrap();
        let patched = JobDraft {
            memory_mb: Some(512),
            ..JobDraft::default()
        }
        .patch(&current)
        .unwrap();
        assert_eq!(patched.memory.mb(), 512);
        assert_eq!(patched.name, current.name);
        let bad = JobDraft {
            memory_mb: Some(2048),
            ..JobDraft::default()
        }
        .patch(&current);
        assert_eq!(bad.unwrap_err().field, "memory_mb");
    }

    #[test]
    fn labels_are_checked() {
        let bad: BTreeMap<_, _> = [("Team".to_string(), "x".to_string())].into();
        assert_eq!(
            field_of(JobDraft {
                labels: Some(bad),
                ..draft()
            }),
            "labels"
        );
        let ok: BTreeMap<_, _> = [("team".to_string(), "data".to_string())].into();
        assert!(
            JobDraft {
                labels: Some(ok),
                ..draft()
            }
            .parse()
            .is_ok()
        );
    }
}
