//! Hands each test an etcd endpoint and a unique key prefix, starting a throwaway etcd when none is shared; never stops or restarts an etcd it did not start.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::ETCD_ENDPOINTS_ENV;
use crate::ports::free_port;
use crate::reaper::{self, Leftover};
use crate::shutdown;

/// How long a starting etcd may take to report healthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`TestEtcd::stop`] waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How many port pairs to try when another process grabs the ones picked.
const START_ATTEMPTS: usize = 5;
/// How many log lines an error message quotes.
const LOG_TAIL_LINES: usize = 40;
/// Name of the single cluster member.
const MEMBER: &str = "kairos-test";

/// An etcd to test against: shared (from `KAIROS_TEST_ETCD_ENDPOINTS`) or
/// owned (a throwaway process, killed and its data removed on drop).
#[derive(Debug)]
pub struct TestEtcd {
    endpoints: Vec<String>,
    key_prefix: String,
    owned: Option<OwnedEtcd>,
}

/// A throwaway single-member etcd and everything needed to restart it.
#[derive(Debug)]
struct OwnedEtcd {
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    /// Process group of the running etcd, tracked by the reaper.
    group: Option<i32>,
}

impl Drop for OwnedEtcd {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // Fails only when it was already reaped.
            let _ = child.start_kill();
            self.forget_group();
        }
        // The TempDir field removes the directory right after this; should
        // the just-killed etcd still be writing to it, the reaper, which
        // keeps tracking it, removes what is left when the process exits.
    }
}

/// Returns an etcd and a key prefix no other call gets.
///
/// With `KAIROS_TEST_ETCD_ENDPOINTS` set (comma-separated URLs), those
/// endpoints are used; otherwise a throwaway etcd starts on free loopback
/// ports with its data in a temporary directory, and this waits until it
/// reports healthy.
pub async fn etcd() -> anyhow::Result<TestEtcd> {
    let key_prefix = format!("/kairos-test/{}/", uuid::Uuid::new_v4().simple());
    if let Ok(shared) = std::env::var(ETCD_ENDPOINTS_ENV) {
        let endpoints: Vec<String> = shared
            .split(',')
            .map(str::trim)
            .filter(|endpoint| !endpoint.is_empty())
            .map(str::to_owned)
            .collect();
        if !endpoints.is_empty() {
            return Ok(TestEtcd {
                endpoints,
                key_prefix,
                owned: None,
            });
        }
    }
    let owned = OwnedEtcd::start_fresh().await?;
    Ok(TestEtcd {
        endpoints: vec![owned.client_url()],
        key_prefix,
        owned: Some(owned),
    })
}

/// Returns an etcd of the caller's own (never the shared one), which it may
/// [`stop`](TestEtcd::stop) and [`start`](TestEtcd::start) again.
pub async fn owned_etcd() -> anyhow::Result<TestEtcd> {
    let owned = OwnedEtcd::start_fresh().await?;
    Ok(TestEtcd {
        endpoints: vec![owned.client_url()],
        key_prefix: format!("/kairos-test/{}/", uuid::Uuid::new_v4().simple()),
        owned: Some(owned),
    })
}

impl TestEtcd {
    /// Client URLs (`http://127.0.0.1:PORT`).
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.clone()
    }

    /// A prefix (`/kairos-test/<uuid>/`) unique to this value; keep every key under it.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// True when this value started (and so can stop and restart) the etcd process.
    pub fn is_owned(&self) -> bool {
        self.owned.is_some()
    }

    /// Connects a client to [`endpoints`](Self::endpoints).
    pub async fn client(&self) -> anyhow::Result<etcd_client::Client> {
        etcd_client::Client::connect(&self.endpoints, None)
            .await
            .with_context(|| format!("connecting to etcd at {:?}", self.endpoints))
    }

    /// Stops the owned etcd (SIGTERM, then SIGKILL after a grace period),
    /// keeping its ports and data for [`start`](Self::start).
    ///
    /// Errors when the etcd is shared, since a test must never stop that one.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let owned = self.owned_mut()?;
        if let Some(mut child) = owned.child.take() {
            shutdown::terminate(&mut child, STOP_GRACE).await?;
            owned.forget_group();
        }
        Ok(())
    }

    /// Starts the owned etcd again on the same ports and data directory and
    /// waits until it is healthy; does nothing when it is running.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let owned = self.owned_mut()?;
        if owned.child.is_some() {
            return Ok(());
        }
        owned.spawn()?;
        owned.wait_healthy().await
    }

    fn owned_mut(&mut self) -> anyhow::Result<&mut OwnedEtcd> {
        self.owned.as_mut().with_context(|| {
            format!("this etcd is shared through {ETCD_ENDPOINTS_ENV}: only an owned one can stop or start")
        })
    }
}

impl OwnedEtcd {
    async fn start_fresh() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kairos-etcd-")
            .tempdir()
            .context("creating a temporary directory for etcd")?;
        reaper::track(Leftover::Dir(dir.path().to_path_buf()))?;
        let mut owned = Self {
            dir,
            client_port: 0,
            peer_port: 0,
            child: None,
            group: None,
        };
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            owned.client_port = free_port();
            owned.peer_port = free_port();
            if owned.client_port == owned.peer_port {
                continue;
            }
            let _ = std::fs::remove_dir_all(owned.data_dir());
            owned.spawn()?;
            match owned.wait_healthy().await {
                Ok(()) => return Ok(owned),
                Err(error) => {
                    if let Some(mut child) = owned.child.take() {
                        let _ = child.kill().await;
                        owned.forget_group();
                    }
                    let log = owned.log();
                    if !log.contains("address already in use") {
                        return Err(error);
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow::anyhow!("no free port pair found"))
            .context(format!(
                "etcd did not start after {START_ATTEMPTS} port pairs"
            )))
    }

    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The last lines of the etcd log, for error messages.
    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Starts etcd in a process group of its own, which the reaper kills
    /// should this test process die without dropping it.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening the etcd log file")?;
        let log_err = log
            .try_clone()
            .context("cloning the etcd log file handle")?;
        let client_url = self.client_url();
        let peer_url = self.peer_url();
        let child = Command::new("etcd")
            .arg("--name")
            .arg(MEMBER)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("{MEMBER}={peer_url}"))
            .arg("--initial-cluster-state")
            .arg("new")
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .context("spawning etcd (is etcd-server installed? run scripts/deps)")?;
        self.group = shutdown::pid_of(&child)?;
        if let Some(group) = self.group {
            reaper::track(Leftover::Group(group))?;
        }
        self.child = Some(child);
        Ok(())
    }

    /// Stops tracking the group of an etcd that was killed or stopped.
    fn forget_group(&mut self) {
        if let Some(group) = self.group.take() {
            reaper::untrack(&Leftover::Group(group));
        }
    }

    /// Polls `/health` until etcd reports healthy, failing early if it exits.
    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .context("building an HTTP client")?;
        let url = format!("{}/health", self.client_url());
        let deadline = tokio::time::Instant::now() + HEALTH_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("polling etcd")?
            {
                bail!(
                    "etcd exited with {status} before becoming healthy; log:\n{}",
                    self.log()
                );
            }
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
                && response
                    .text()
                    .await
                    .is_ok_and(|body| body.contains("true"))
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "etcd at {} not healthy after {HEALTH_TIMEOUT:?}; log:\n{}",
                    self.client_url(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
