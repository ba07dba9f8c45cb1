//! Cleans up after this test process once it has exited, however it exits; never kills or removes anything earlier.
//!
//! Rust never drops statics, and a test process can die from SIGKILL (or a
//! nextest timeout, or Ctrl-C), so what it started cannot always stop itself.
//! Instead a detached `sh` waits for end-of-file on a pipe whose only write
//! end this process holds. The kernel closes that end when the process exits
//! for any reason; the shell then runs the cleanup. It lives in its own
//! process group, so a signal aimed at the test run does not kill it first.
//!
//! Two uses: [`on_exit`] runs a fixed script (stopping the process-wide
//! Postgres), and [`track`] / [`untrack`] keep a list of [`Leftover`]s
//! (process groups of spawned children, temporary directories) that one
//! shared reaper kills and removes at exit unless their owner already did.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, PoisonError};

use anyhow::{Context as _, bail};

/// Write ends of the reapers' pipes, held until the process exits.
static PIPES: Mutex<Vec<ChildStdin>> = Mutex::new(Vec::new());

/// What owners have not cleaned up yet, and the file the shared reaper reads
/// it from at exit.
static LEFTOVERS: Mutex<Option<Tracked>> = Mutex::new(None);

/// Something to clean up if its owner cannot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Leftover {
    /// A process group to SIGKILL. Sorted first: processes die before their
    /// directories go.
    Group(i32),
    /// A directory to remove recursively.
    Dir(PathBuf),
    /// Docker containers with this label (`key=value`) to remove, running or not.
    DockerContainers(String),
    /// A Docker image reference to remove.
    DockerImage(String),
}

#[derive(Debug)]
struct Tracked {
    file: PathBuf,
    leftovers: BTreeSet<Leftover>,
}

impl Tracked {
    fn start() -> anyhow::Result<Self> {
        let file = tempfile::Builder::new()
            .prefix("kairos-testkit-leftovers-")
            .tempfile()
            .context("creating the leftovers list")?
            .into_temp_path()
            .keep()
            .context("keeping the leftovers list")?;
        let quoted = shell_quote(&file.to_string_lossy());
        on_exit(&format!(
            "while read -r kind value; do case $kind in \
               group) kill -KILL \"-$value\" 2>/dev/null;; \
               dir) rm -rf \"$value\";; \
               containers) docker ps -aq --filter \"label=$value\" | xargs -r docker rm -f >/dev/null 2>&1;; \
               image) docker rmi -f \"$value\" >/dev/null 2>&1;; \
             esac; done < {quoted}; rm -f {quoted}"
        ))?;
        Ok(Self {
            file,
            leftovers: BTreeSet::new(),
        })
    }

    fn save(&self) -> anyhow::Result<()> {
        let mut text = String::new();
        for leftover in &self.leftovers {
            match leftover {
                Leftover::Group(pgid) => text.push_str(&format!("group {pgid}\n")),
                Leftover::Dir(path) => {
                    text.push_str(&format!("dir {}\n", path.to_string_lossy()));
                }
                Leftover::DockerContainers(label) => {
                    text.push_str(&format!("containers {label}\n"));
                }
                Leftover::DockerImage(reference) => {
                    text.push_str(&format!("image {reference}\n"));
                }
            }
        }
        std::fs::write(&self.file, text).context("writing the leftovers list")
    }
}

/// Arranges for `leftover` to be cleaned up after this process exits,
/// unless [`untrack`] is called first.
pub(crate) fn track(leftover: Leftover) -> anyhow::Result<()> {
    if let Leftover::Dir(path) = &leftover
        && (!path.is_absolute() || path.to_string_lossy().contains('\n'))
    {
        bail!("refusing to track {} for removal", path.display());
    }
    if let Leftover::DockerContainers(value) | Leftover::DockerImage(value) = &leftover
        && (value.is_empty()
            || value
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '"' | '$' | '`' | '\\')))
    {
        bail!("refusing to track docker leftover {value:?} for removal");
    }
    let mut tracked = LEFTOVERS.lock().unwrap_or_else(PoisonError::into_inner);
    if tracked.is_none() {
        *tracked = Some(Tracked::start()?);
    }
    let tracked = tracked.as_mut().context("leftovers list just created")?;
    tracked.leftovers.insert(leftover);
    tracked.save()
}

/// Forgets `leftover`: its owner has cleaned it up.
pub(crate) fn untrack(leftover: &Leftover) {
    let mut tracked = LEFTOVERS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(tracked) = tracked.as_mut()
        && tracked.leftovers.remove(leftover)
    {
        // A stale list only makes the reaper retry what is already gone.
        let _ = tracked.save();
    }
}

/// Arranges for `script` (POSIX sh) to run after this process exits.
pub(crate) fn on_exit(script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("cat >/dev/null; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("spawning the cleanup shell (sh)")?;
    let stdin = child
        .stdin
        .take()
        .context("cleanup shell was spawned without a stdin pipe")?;
    // The `Child` handle is dropped on purpose: the shell must outlive us.
    PIPES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(stdin);
    Ok(())
}

/// Quotes `value` for a POSIX shell command line.
pub(crate) fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_single_quotes_for_the_shell() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
