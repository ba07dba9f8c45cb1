//! Registry credentials a tenant keeps so its jobs can pull private images: a name the job
//! refers to, the registry they are for, a username and a password. Checked here; encrypted
//! at rest by the store; handed only to the worker pulling the job's image, and only for the
//! registry they name. The password never appears in `Debug` output or an error message.

use std::fmt;

use crate::{FieldError, ImageRef};

/// The name a tenant gives a credential, unique per tenant; jobs refer to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialName(String);

impl CredentialName {
    pub const MAX_LEN: usize = 63;

    /// `field` is where the name came from (`name` on the credential, `registry_credential`
    /// on a job).
    pub fn parse_as(field: &str, raw: &str) -> Result<Self, FieldError> {
        let ok_start = raw
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let ok_rest = raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !ok_start || !ok_rest {
            return Err(FieldError::new(
                field,
                format!(
                    "must be 1 to {} characters of a-z, 0-9, '-', '_' or '.', starting with a letter or digit",
                    Self::MAX_LEN
                ),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CredentialName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A registry's host, with its port if it has one (`registry.example.com`,
/// `127.0.0.1:5000`), in lower case, as an image reference names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost(String);

impl RegistryHost {
    pub const MAX_LEN: usize = 253;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let field = |reason: String| FieldError::new("server", reason);
        let lower = raw.to_ascii_lowercase();
        let (host, port) = match lower.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (lower.as_str(), None),
        };
        let host_ok = !host.is_empty()
            && host.len() <= Self::MAX_LEN
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !host_ok {
            return Err(field(format!(
                "'{raw}' is not a registry host; expected e.g. 'registry.example.com' or '127.0.0.1:5000' (no scheme, no path)"
            )));
        }
        if let Some(port) = port
            && port.parse::<u16>().map_or(true, |p| p == 0)
        {
            return Err(field(format!("'{port}' is not a port (1 to 65535)")));
        }
        Ok(Self(lower))
    }

    /// The registry an image is pulled from (`docker.io` when the reference names none).
    pub fn of_image(image: &ImageRef) -> Self {
        Self(image.registry().to_ascii_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A secret string: shown as `***` by `Debug` and `Display`; `expose` is the only way to it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that must use it (encryption, the pull).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A registry credential as a client sent it; unchecked.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CredentialDraft {
    pub name: Option<String>,
    pub server: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for CredentialDraft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialDraft")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A checked registry credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSpec {
    pub name: CredentialName,
    pub server: RegistryHost,
    pub username: String,
    pub password: Secret,
}

impl CredentialSpec {
    pub const MAX_USERNAME_LEN: usize = 256;
    pub const MAX_PASSWORD_LEN: usize = 4096;
}

impl CredentialDraft {
    /// Checks every field; all four are required. Errors never quote the password.
    pub fn parse(self) -> Result<CredentialSpec, FieldError> {
        let required =
            |field: &str, v: Option<String>| v.ok_or_else(|| FieldError::new(field, "is required"));
        let name = CredentialName::parse_as("name", &required("name", self.name)?)?;
        let server = RegistryHost::parse(&required("server", self.server)?)?;
        let username = required("username", self.username)?;
        if username.is_empty()
            || username.len() > CredentialSpec::MAX_USERNAME_LEN
            || username.chars().any(char::is_control)
        {
            return Err(FieldError::new(
                "username",
                format!(
                    "must be 1 to {} bytes without control characters",
                    CredentialSpec::MAX_USERNAME_LEN
                ),
            ));
        }
        let password = required("password", self.password)?;
        if password.is_empty() || password.len() > CredentialSpec::MAX_PASSWORD_LEN {
            return Err(FieldError::new(
                "password",
                format!("must be 1 to {} bytes", CredentialSpec::MAX_PASSWORD_LEN),
            ));
        }
        Ok(CredentialSpec {
            name,
            server,
            username,
            password: Secret::new(password),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> CredentialDraft {
        CredentialDraft {
            name: Some("ghcr-acme".into()),
            server: Some("GHCR.io".into()),
            username: Some("acme-bot".into()),
            password: Some("s3cr3t-token".into()),
        }
    }

    #[test]
    fn a_complete_credential_is_accepted_with_the_host_in_lower_case() {
        let c = draft().parse().expect("valid");
        assert_eq!(c.name.as_str(), "ghcr-acme");
        assert_eq!(c.server.as_str(), "ghcr.io");
        assert_eq!(c.password.expose(), "s3cr3t-token");
    }

    #[test]
    fn each_bad_field_is_named_and_the_password_never_shown() {
        let cases: Vec<(CredentialDraft, &str)> = vec![
            (
                CredentialDraft {
                    name: None,
                    ..draft()
                },
                "name",
            ),
            (
                CredentialDraft {
                    name: Some("Bad Name".into()),
                    ..draft()
                },
                "name",
            ),
            (
                CredentialDraft {
                    name: Some("-x".into()),
                    ..draft()
                },
                "name",
            ),
            (
                CredentialDraft {
                    server: Some("https://ghcr.io".into()),
                    ..draft()
                },
                "server",
            ),
            (
                CredentialDraft {
                    server: Some("ghcr.io/acme".into()),
                    ..draft()
                },
                "server",
            ),
            (
                CredentialDraft {
                    server: Some("host:0".into()),
                    ..draft()
                },
                "server",
            ),
            (
                CredentialDraft {
                    server: Some("host:99999".into()),
                    ..draft()
                },
                "server",
            ),
            (
                CredentialDraft {
                    username: Some(String::new()),
                    ..draft()
                },
                "username",
            ),
            (
                CredentialDraft {
                    password: Some(String::new()),
                    ..draft()
                },
                "password",
            ),
            (
                CredentialDraft {
                    password: Some("x".repeat(5000)),
                    ..draft()
                },
                "password",
            ),
        ];
        for (d, field) in cases {
            let shown = format!("{d:?}");
            assert!(!shown.contains("s3cr3t"), "{shown}");
            let err = d.parse().expect_err(field);
            assert_eq!(err.field, field);
            assert!(!err.reason.contains("s3cr3t"));
        }
    }

    #[test]
    fn hosts_with_ports_and_ips_are_registry_hosts() {
        for ok in [
            "127.0.0.1:5000",
            "localhost:5000",
            "registry.example.com",
            "docker.io",
        ] {
            assert!(RegistryHost::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn the_registry_of_an_image_is_its_host_or_docker_hub() {
        let of = |image: &str| {
            RegistryHost::of_image(&ImageRef::parse(image).expect("image"))
                .as_str()
                .to_owned()
        };
        assert_eq!(of("busybox:1.36"), "docker.io");
        assert_eq!(of("127.0.0.1:5000/team/app:1"), "127.0.0.1:5000");
        assert_eq!(of("ghcr.io/acme/etl:2"), "ghcr.io");
    }

    #[test]
    fn secrets_hide_in_debug_and_display() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?} {s}"), "*** ***");
    }
}
