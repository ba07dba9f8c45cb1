//! Spawns, watches, signals and restarts a real `kairos` binary for end-to-end tests; never leaves it or its children running after its owner is gone.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::line_buffer::{LineBuffer, MAX_LINE_BYTES};
use crate::reaper::{self, Leftover};
use crate::shutdown::{self, Ended};

/// How often readiness and output waits poll.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a restart lets the old output readers drain before moving on.
const DRAIN_OLD_OUTPUT: Duration = Duration::from_millis(500);

/// A child process (normally `kairos <role>`) with its output captured.
///
/// Stdout and stderr lines are collected, interleaved, into one bounded
/// buffer that survives restarts. Each start runs in a process group of its
/// own: [`kill`](Self::kill) and [`terminate`](Self::terminate) signal the
/// process itself (children it started live on, as after a real crash),
/// while dropping this value SIGKILLs every group it started, and a reaper
/// does the same if the test process dies without dropping it. If the
/// dropping thread is panicking (a failed test), the captured output is
/// printed to stderr first. Must be created inside a tokio runtime.
#[derive(Debug)]
pub struct KairosProcess {
    bin: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    child: Mutex<Option<Child>>,
    /// Process groups of every start, killed on drop.
    groups: Vec<i32>,
    output: Arc<Mutex<LineBuffer>>,
    readers: Vec<JoinHandle<()>>,
}

impl KairosProcess {
    /// Spawns `bin args…` with `envs` added to the inherited environment.
    pub fn spawn(bin: &Path, args: &[&str], envs: &[(String, String)]) -> anyhow::Result<Self> {
        tokio::runtime::Handle::try_current()
            .context("KairosProcess::spawn must be called inside a tokio runtime")?;
        let mut process = Self {
            bin: bin.to_path_buf(),
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            envs: envs.to_vec(),
            child: Mutex::new(None),
            groups: Vec::new(),
            output: Arc::new(Mutex::new(LineBuffer::default())),
            readers: Vec::new(),
        };
        process.launch()?;
        Ok(process)
    }

    /// The OS process id, while the process has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.lock_child().as_ref().and_then(Child::id)
    }

    /// Everything captured so far (stdout and stderr interleaved, one line per line).
    pub fn output(&self) -> String {
        self.buffer().render()
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_wait(&self) -> anyhow::Result<Option<ExitStatus>> {
        match self.lock_child().as_mut() {
            Some(child) => child.try_wait().context("polling the process"),
            None => bail!("process is not running (it was reaped)"),
        }
    }

    /// Polls `url` until it answers 200, failing if `timeout` passes or the
    /// process exits first. Errors quote the captured output.
    pub async fn wait_http_ready(&self, url: &str, timeout: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .context("building an HTTP client")?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match http.get(url).send().await {
                Ok(response) if response.status() == reqwest::StatusCode::OK => return Ok(()),
                Ok(response) => format!("status {}", response.status()),
                Err(error) => error.to_string(),
            };
            if let Some(status) = self.exit_status() {
                // Let the readers catch the last lines it printed.
                tokio::time::sleep(POLL_INTERVAL).await;
                bail!(
                    "{} exited ({status}) before {url} was ready (last: {last}); output:\n{}",
                    self.bin.display(),
                    self.output()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{url} not ready after {timeout:?} (last: {last}); output:\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until a captured line contains `needle`, failing if `timeout`
    /// passes or the process exits without printing it.
    pub async fn wait_for_output(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.buffer().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.exit_status() {
                tokio::time::sleep(POLL_INTERVAL).await;
                if self.buffer().contains(needle) {
                    return Ok(());
                }
                bail!(
                    "process exited ({status}) without printing {needle:?}; output:\n{}",
                    self.output()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{needle:?} not printed after {timeout:?}; output:\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Sends SIGKILL to the process, without waiting: a crash, as far as it
    /// can tell. Children it started keep running until this value is dropped.
    pub fn kill(&mut self) {
        if let Some(child) = self.child_mut().as_mut() {
            // Fails only when the process was already reaped: nothing to kill.
            let _ = child.start_kill();
        }
    }

    /// Sends SIGTERM and waits up to `grace` for the exit status.
    ///
    /// If the process still runs after `grace`, its whole process group is
    /// SIGKILLed and this returns an error quoting its output: a clean
    /// shutdown was expected.
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        let mut child = self.child_mut().take().context("process is not running")?;
        let pgid = shutdown::pid_of(&child)?;
        let ended = shutdown::terminate(&mut child, grace).await?;
        match ended {
            Ended::Gracefully(status) => Ok(status),
            Ended::Killed(status) => {
                if let Some(pgid) = pgid {
                    shutdown::kill_group(pgid)?;
                }
                bail!(
                    "{} ignored SIGTERM for {grace:?} and was killed ({status}); output:\n{}",
                    self.bin.display(),
                    self.output()
                )
            }
        }
    }

    /// Waits for the process to exit by itself and returns its status.
    pub async fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child_mut().take().context("process is not running")?;
        child.wait().await.context("waiting for the process")
    }

    /// SIGKILLs the process if it still runs, then spawns it again with the
    /// same binary, arguments and environment. Captured output is kept, with
    /// a marker line between the runs.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child_mut().take() {
            let _ = child.start_kill();
            child
                .wait()
                .await
                .context("waiting for the killed process")?;
        }
        // The old run's group goes now, while its number still names it: once every member is
        // gone the kernel hands the number out again (pids wrap at 32768 here), and a kill at
        // drop time could hit whatever process group got it.
        for pgid in self.groups.drain(..) {
            if shutdown::kill_group(pgid).is_ok() {
                reaper::untrack(&Leftover::Group(pgid));
            }
        }
        // Children of the old run may still hold the pipes open: give the
        // readers a moment to take what was printed, then leave them be.
        let _ = tokio::time::timeout(DRAIN_OLD_OUTPUT, async {
            for reader in self.readers.drain(..) {
                let _ = reader.await;
            }
        })
        .await;
        self.readers.clear();
        self.buffer()
            .push("--- kairos-testkit: process restarted ---".to_owned());
        self.launch()
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let mut child = Command::new(&self.bin)
            .args(&self.args)
            .envs(self.envs.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        if let Some(pgid) = shutdown::pid_of(&child)? {
            self.groups.push(pgid);
            reaper::track(Leftover::Group(pgid))?;
        }
        let stdout = child.stdout.take().context("child has no stdout pipe")?;
        let stderr = child.stderr.take().context("child has no stderr pipe")?;
        self.readers = vec![
            tokio::spawn(collect_lines(stdout, Arc::clone(&self.output))),
            tokio::spawn(collect_lines(stderr, Arc::clone(&self.output))),
        ];
        *self.child_mut() = Some(child);
        Ok(())
    }

    /// The exit status if the process exited (or was reaped), else `None`.
    fn exit_status(&self) -> Option<String> {
        match self.lock_child().as_mut().map(Child::try_wait) {
            None => Some("reaped".to_owned()),
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Ok(None)) => None,
            Some(Err(error)) => Some(format!("unknown: {error}")),
        }
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn child_mut(&mut self) -> &mut Option<Child> {
        self.child.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    fn buffer(&self) -> MutexGuard<'_, LineBuffer> {
        self.output.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for KairosProcess {
    fn drop(&mut self) {
        self.kill();
        for pgid in self.groups.drain(..) {
            // Best effort: the reaper still has the group if this fails.
            if shutdown::kill_group(pgid).is_ok() {
                reaper::untrack(&Leftover::Group(pgid));
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- output of {} {} ---\n{}--- end of output ---",
                self.bin.display(),
                self.args.join(" "),
                self.output()
            );
        }
    }
}

/// Reads lines from `reader` into `buffer` until end-of-file, never holding
/// more than one capped line in memory.
async fn collect_lines(reader: impl AsyncRead + Unpin, buffer: Arc<Mutex<LineBuffer>>) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_capped_line(&mut reader, &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                while line
                    .last()
                    .is_some_and(|byte| matches!(byte, b'\n' | b'\r'))
                {
                    line.pop();
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                buffer
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(text);
            }
        }
    }
}

/// Reads one line (through `\n` or end-of-file), storing at most
/// `MAX_LINE_BYTES + 1` bytes of it so the buffer can mark it truncated.
/// Returns the number of bytes consumed; 0 means end-of-file.
async fn read_capped_line(
    reader: &mut BufReader<impl AsyncRead + Unpin>,
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(consumed);
        }
        let (take, done) = match available.iter().position(|byte| *byte == b'\n') {
            Some(newline) => (newline + 1, true),
            None => (available.len(), false),
        };
        let room = (MAX_LINE_BYTES + 1).saturating_sub(line.len());
        line.extend_from_slice(&available[..take.min(room)]);
        reader.consume(take);
        consumed += take;
        if done {
            return Ok(consumed);
        }
    }
}
