//! Where the CLI and `kairos standalone` keep the endpoint and API key between commands: a
//! small private file. It must never write the file readable by anyone but its owner, never
//! read one that is, and never show the key in `Debug` or an error.
//!
//! # Where
//! The first of:
//! 1. `$KAIROS_CREDENTIALS_FILE`, when set and not empty;
//! 2. `$XDG_CONFIG_HOME/kairos/credentials`, when `XDG_CONFIG_HOME` is an absolute path;
//! 3. `$HOME/.config/kairos/credentials`.
//!
//! # Format
//! UTF-8 text, one `key = value` per line; blank lines and lines starting with `#` are
//! ignored; spaces around the key and the value are dropped; the value runs to the end of the
//! line (no quotes). The keys are `endpoint` (the gRPC URL, e.g. `http://127.0.0.1:50051`) and
//! `api_key`; both are optional, any other key or a repeated key is an error naming its line.
//!
//! ```text
//! # Kairos credentials (keep private: mode 0600)
//! endpoint = http://127.0.0.1:50051
//! api_key = kairos_3f9c…
//! ```
//!
//! # Permissions
//! [`Credentials::save`] creates missing directories with mode 0700 and writes the file with
//! mode 0600, atomically (a temporary file in the same directory, then a rename), so a reader
//! never sees half a file. [`Credentials::load`] refuses a file that its group or others may
//! read or write, as `ssh` does for keys.
//!
//! The hand-written format is two flat string keys that `cat`, `grep` and a shell script can
//! read; a TOML dependency would buy nothing for it.

use std::{
    ffi::OsString,
    fs, io,
    io::Write,
    path::{Path, PathBuf},
};

use crate::ApiKey;

/// The environment variable that names the credentials file.
pub const FILE_ENV: &str = "KAIROS_CREDENTIALS_FILE";

/// Why the credentials file could not be found, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// No variable says where the file is.
    #[error("cannot place the credentials file: set {FILE_ENV} (or HOME, or XDG_CONFIG_HOME)")]
    NoLocation,
    /// Reading or writing failed.
    #[error("cannot {action} the credentials file {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// `read` or `write`.
        action: &'static str,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A line is not `key = value` with a known key.
    #[error("credentials file {} line {line}: {reason}", .path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The file may be read or written by others than its owner.
    #[error(
        "credentials file {} is accessible by other users (mode {mode:04o}): run chmod 600 {}",
        .path.display(),
        .path.display()
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// The endpoint and API key kept in the credentials file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The gRPC endpoint of the API.
    pub endpoint: Option<String>,
    /// The tenant's API key.
    pub api_key: Option<ApiKey>,
}

/// A syntax error of the format: the line (from 1) and why.
type SyntaxError = (usize, String);

impl Credentials {
    /// Credentials with both an endpoint and a key (what `kairos standalone` saves).
    pub fn new(endpoint: impl Into<String>, api_key: impl Into<ApiKey>) -> Self {
        Self {
            endpoint: Some(endpoint.into()),
            api_key: Some(api_key.into()),
        }
    }

    /// Parses the file's text (see the module docs for the format).
    fn parse(text: &str) -> Result<Self, SyntaxError> {
        let mut credentials = Credentials::default();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((key, value)) = trimmed.split_once('=') else {
                return Err((line, "expected `key = value`".to_owned()));
            };
            let (key, value) = (key.trim(), value.trim());
            if value.is_empty() {
                return Err((line, format!("`{key}` has no value")));
            }
            let repeated = match key {
                "endpoint" => credentials.endpoint.replace(value.to_owned()).is_some(),
                "api_key" => credentials.api_key.replace(ApiKey::new(value)).is_some(),
                other => {
                    return Err((
                        line,
                        format!("unknown key `{other}` (expected endpoint or api_key)"),
                    ));
                }
            };
            if repeated {
                return Err((line, format!("`{key}` is given twice")));
            }
        }
        Ok(credentials)
    }

    /// The file's text.
    fn render(&self) -> String {
        let mut text = String::from(
            "# Kairos credentials (keep private: mode 0600). Read by the kairos CLI and SDK.\n",
        );
        if let Some(endpoint) = &self.endpoint {
            text.push_str(&format!("endpoint = {}\n", endpoint.trim()));
        }
        if let Some(key) = &self.api_key {
            text.push_str(&format!("api_key = {}\n", key.expose()));
        }
        text
    }

    /// Reads the file at `path`; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, CredentialsError> {
        let io_error = |source| CredentialsError::Io {
            path: path.to_owned(),
            action: "read",
            source,
        };
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e)),
        };
        check_private(path)?;
        Self::parse(&text)
            .map(Some)
            .map_err(|(line, reason)| CredentialsError::Syntax {
                path: path.to_owned(),
                line,
                reason,
            })
    }

    /// Reads the file at [`default_path`]; `Ok(None)` when there is none.
    pub fn load_default() -> Result<Option<Self>, CredentialsError> {
        Self::load(&default_path()?)
    }

    /// Writes the file at `path` (mode 0600, directories 0700, atomically), replacing any.
    pub fn save(&self, path: &Path) -> Result<(), CredentialsError> {
        let io_error = |source| CredentialsError::Io {
            path: path.to_owned(),
            action: "write",
            source,
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        private_dir(dir).map_err(io_error)?;
        let name = path
            .file_name()
            .map_or_else(|| OsString::from("credentials"), |n| n.to_os_string());
        let mut temp_name = OsString::from(".");
        temp_name.push(&name);
        temp_name.push(format!(".tmp{}", std::process::id()));
        let temp = dir.join(temp_name);
        let written =
            write_private(&temp, self.render().as_bytes()).and_then(|()| fs::rename(&temp, path));
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written.map_err(io_error)
    }

    /// Writes the file at [`default_path`].
    pub fn save_default(&self) -> Result<PathBuf, CredentialsError> {
        let path = default_path()?;
        self.save(&path)?;
        Ok(path)
    }
}

/// The endpoint and key to use: those given (`endpoint`, `api_key`: a flag or a variable,
/// already merged by the caller), and for what is missing, the credentials file at `file`.
/// The file is read only when something is missing; a missing file is no error. The endpoint
/// may still be `None` (then [`DEFAULT_ENDPOINT`](crate::DEFAULT_ENDPOINT) applies).
pub fn resolve(
    endpoint: Option<String>,
    api_key: Option<ApiKey>,
    file: &Path,
) -> Result<Credentials, CredentialsError> {
    let endpoint = endpoint.filter(|e| !e.trim().is_empty());
    let api_key = api_key.filter(|k| !k.is_empty());
    if endpoint.is_some() && api_key.is_some() {
        return Ok(Credentials { endpoint, api_key });
    }
    let stored = Credentials::load(file)?.unwrap_or_default();
    Ok(Credentials {
        endpoint: endpoint.or(stored.endpoint),
        api_key: api_key.or(stored.api_key),
    })
}

/// [`resolve`] from this process's environment: `KAIROS_ENDPOINT`, `KAIROS_API_KEY`, then the
/// file at [`default_path`] (which is not needed when both variables are set).
pub fn from_env() -> Result<Credentials, CredentialsError> {
    let var = |name| std::env::var(name).ok();
    let (endpoint, api_key) = (
        var("KAIROS_ENDPOINT"),
        var("KAIROS_API_KEY").map(ApiKey::new),
    );
    if endpoint.is_some() && api_key.is_some() {
        return Ok(Credentials { endpoint, api_key });
    }
    resolve(endpoint, api_key, &default_path()?)
}

/// The credentials file's path from this process's environment (see the module docs).
pub fn default_path() -> Result<PathBuf, CredentialsError> {
    path_from(|name| std::env::var_os(name))
}

/// The credentials file's path from an environment given as a lookup function, so callers
/// and tests can resolve it without touching the process environment.
pub fn path_from(env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, CredentialsError> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(file) = set(FILE_ENV) {
        return Ok(PathBuf::from(file));
    }
    if let Some(config) = set("XDG_CONFIG_HOME").map(PathBuf::from)
        && config.is_absolute()
    {
        return Ok(config.join("kairos").join("credentials"));
    }
    set("HOME")
        .map(|home| {
            PathBuf::from(home)
                .join(".config")
                .join("kairos")
                .join("credentials")
        })
        .ok_or(CredentialsError::NoLocation)
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), CredentialsError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)
        .map_err(|source| CredentialsError::Io {
            path: path.to_owned(),
            action: "read",
            source,
        })?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CredentialsError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), CredentialsError> {
    Ok(())
}

#[cfg(unix)]
fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

/// Creates `path` (which must not exist) readable and writable by its owner only, writes
/// `bytes` and flushes them to disk.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_path_comes_from_the_override_then_xdg_then_home() {
        let all = [
            (FILE_ENV, "/run/k/creds"),
            ("XDG_CONFIG_HOME", "/cfg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(path_from(env(&all)).unwrap(), Path::new("/run/k/creds"));
        assert_eq!(
            path_from(env(&all[1..])).unwrap(),
            Path::new("/cfg/kairos/credentials")
        );
        assert_eq!(
            path_from(env(&[("XDG_CONFIG_HOME", "relative"), ("HOME", "/home/u")])).unwrap(),
            Path::new("/home/u/.config/kairos/credentials")
        );
        assert_eq!(
            path_from(env(&[(FILE_ENV, ""), ("HOME", "/home/u")])).unwrap(),
            Path::new("/home/u/.config/kairos/credentials")
        );
        assert!(matches!(
            path_from(env(&[])),
            Err(CredentialsError::NoLocation)
        ));
    }

    #[test]
    fn saved_credentials_load_back_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/kairos/credentials");
        let creds = Credentials::new("http://127.0.0.1:50051", "kairos_secret");
        creds.save(&path).unwrap();
        assert_eq!(Credentials::load(&path).unwrap(), Some(creds.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
        // Saving again replaces the file and leaves no temporary behind.
        let other = Credentials::new("http://10.0.0.1:50051", "kairos_other");
        other.save(&path).unwrap();
        assert_eq!(Credentials::load(&path).unwrap(), Some(other));
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_file_is_none_and_debug_hides_the_key() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Credentials::load(&dir.path().join("none")).unwrap(), None);
        let creds = Credentials::new("http://x", "kairos_secret");
        assert!(!format!("{creds:?}").contains("kairos_secret"));
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        fs::write(&path, "api_key = kairos_secret\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Credentials::load(&path).unwrap_err();
        assert!(
            matches!(e, CredentialsError::Exposed { mode: 0o644, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");
        assert!(!e.to_string().contains("kairos_secret"));
    }

    #[test]
    fn the_format_takes_comments_spaces_and_either_key() {
        let c = Credentials::parse("# c\n\n  api_key =  kairos_k  \n").unwrap();
        assert_eq!(c.api_key, Some(ApiKey::new("kairos_k")));
        assert_eq!(c.endpoint, None);
        let c = Credentials::parse("endpoint=http://h:1\n").unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://h:1"));
        assert_eq!(Credentials::parse(&c.render()).unwrap(), c);
    }

    #[test]
    fn given_values_win_and_the_file_fills_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        Credentials::new("http://stored:1", "kairos_stored")
            .save(&path)
            .unwrap();
        let both = resolve(Some("http://given:2".into()), Some("k_given".into()), &path).unwrap();
        assert_eq!(both, Credentials::new("http://given:2", "k_given"));
        let key_only = resolve(None, Some("k_given".into()), &path).unwrap();
        assert_eq!(key_only, Credentials::new("http://stored:1", "k_given"));
        let neither = resolve(Some(" ".into()), None, &path).unwrap();
        assert_eq!(
            neither,
            Credentials::new("http://stored:1", "kairos_stored")
        );
        // No file: what was given, nothing more.
        let none = resolve(None, Some("k".into()), &dir.path().join("absent")).unwrap();
        assert_eq!(none.endpoint, None);
        // Both given: a broken file is never read.
        fs::write(&path, "garbage\n").unwrap();
        assert!(resolve(Some("http://g:1".into()), Some("k".into()), &path).is_ok());
        assert!(resolve(None, None, &path).is_err());
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, line, needle) in [
            ("endpoint = http://h\nnonsense\n", 2, "key = value"),
            ("api_kee = k\n", 1, "unknown key `api_kee`"),
            ("api_key = a\napi_key = b\n", 2, "twice"),
            ("api_key =\n", 1, "no value"),
        ] {
            let (at, reason) = Credentials::parse(text).unwrap_err();
            assert_eq!(at, line, "{text}");
            assert!(reason.contains(needle), "{reason}");
        }
    }
}
