//! The `Runtime` seam: how a run's job is prepared (image pulled, container created), started,
//! limited, stopped and reported. The Docker runtime runs images in hardened containers; the
//! process runtime runs commands on this host for trusted installs and benchmarks.
//!
//! A runtime turns every failure into an `Outcome` with a reason; it never panics, never
//! reports success for a run it did not see exit 0, and never logs a secret.

pub mod docker;
mod process;

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kairos_domain::FailureReason;
use tokio_util::sync::CancellationToken;

use crate::logs::LiveLog;
pub use docker::{DockerRuntime, DockerSettings, NetworkChoice};
pub use process::ProcessRuntime;

/// Basic-auth credentials for pulling a run's image. Secret: `Debug` shows no password.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// Registry host[:port].
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Everything needed to run one assignment.
#[derive(Clone)]
pub struct RunSpec {
    pub run_id: String,
    pub job_id: String,
    /// The run's tenant, for the container's labels (may be empty if the scheduler sent none).
    pub tenant_id: String,
    pub image: String,
    /// Credentials for pulling `image`, when the job names a registry credential. Secret.
    pub registry_auth: Option<RegistryAuth>,
    pub command: Vec<String>,
    /// Job env merged with the run's overrides; values may be secrets and are never logged.
    pub env: BTreeMap<String, String>,
    pub memory_mb: u32,
    pub timeout: Duration,
    pub fire_time: Option<DateTime<Utc>>,
    pub attempt: u32,
    /// The run's shard, echoed in its report so the shard's current owner can record it.
    pub shard: u32,
}

impl std::fmt::Debug for RunSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSpec")
            .field("run_id", &self.run_id)
            .field("job_id", &self.job_id)
            .field("tenant_id", &self.tenant_id)
            .field("image", &self.image)
            .field("registry_auth", &self.registry_auth)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("memory_mb", &self.memory_mb)
            .field("timeout", &self.timeout)
            .field("attempt", &self.attempt)
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed {
        reason: FailureReason,
        exit_code: Option<i32>,
    },
    Cancelled,
}

impl Outcome {
    pub const fn failed(reason: FailureReason) -> Self {
        Outcome::Failed {
            reason,
            exit_code: None,
        }
    }
}

/// The end of a run with the tail of its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub outcome: Outcome,
    pub log_tail: String,
    pub log_truncated: bool,
    /// Bytes of output the run wrote in all; the tail is the last of them.
    pub total_bytes: u64,
}

impl Finished {
    /// The end `outcome` with the output captured in `log`.
    pub fn from_log(outcome: Outcome, log: &LiveLog) -> Self {
        let (log_tail, log_truncated) = log.snapshot();
        Finished {
            outcome,
            log_tail,
            log_truncated,
            total_bytes: log.total_bytes(),
        }
    }

    /// An end with only the worker's own explanation as output.
    pub fn with_note(outcome: Outcome, note: &str) -> Self {
        let log = LiveLog::default();
        log.note(note);
        Self::from_log(outcome, &log)
    }
}

/// Why a run is being stopped early.
#[derive(Debug, Clone, Default)]
pub struct StopSignals {
    /// The customer cancelled the run: report `cancelled`.
    pub cancel: CancellationToken,
    /// The worker is going away and cannot wait: report `failed/worker_lost`.
    pub abandon: CancellationToken,
}

impl StopSignals {
    /// The outcome to report if the run is stopped now, before it could start.
    pub fn stopped(&self) -> Option<Outcome> {
        if self.cancel.is_cancelled() {
            Some(Outcome::Cancelled)
        } else if self.abandon.is_cancelled() {
            Some(Outcome::failed(FailureReason::WorkerLost))
        } else {
            None
        }
    }

    /// Resolves when either signal fires, with the outcome it stands for.
    pub async fn fired(&self) -> Outcome {
        tokio::select! {
            _ = self.cancel.cancelled() => Outcome::Cancelled,
            _ = self.abandon.cancelled() => Outcome::failed(FailureReason::WorkerLost),
        }
    }
}

/// A run made ready to start: for Docker its image is present and its container created.
#[derive(Debug)]
pub struct Prepared {
    pub spec: RunSpec,
    pub(crate) handle: Handle,
}

/// What a runtime keeps about a prepared run.
#[derive(Debug)]
pub(crate) enum Handle {
    /// The process runtime: nothing to prepare.
    Process,
    Container(docker::Container),
}

/// A run a previous incarnation of this worker left behind, found at start-up.
#[derive(Debug)]
pub enum Recovered {
    /// Still running: re-attach with [`Runtime::resume`], which follows it to its end.
    Running(Box<Prepared>),
    /// Ended while no worker watched it: report this end.
    Ended {
        run_id: String,
        shard: u32,
        finished: Finished,
    },
}

#[async_trait]
pub trait Runtime: Send + Sync + std::fmt::Debug + 'static {
    /// Gets `spec` ready to start (Docker: pull the image if absent, create the container).
    /// A failure, or a stop signal while it waits for a pull, is the run's end.
    async fn prepare(&self, spec: RunSpec, stop: &StopSignals) -> Result<Prepared, Finished>;

    /// Starts a prepared run and follows it to its end: exit, timeout (terminate, grace,
    /// kill), cancel or abandon. Its output goes to `log` as it comes.
    async fn start(&self, prepared: Prepared, stop: StopSignals, log: LiveLog) -> Finished;

    /// Drops a prepared run that must not start (the scheduler withdrew it, or it was
    /// cancelled before its start). Nothing of it ever runs.
    async fn discard(&self, prepared: Prepared);

    /// Runs this worker left behind before a restart: running ones to re-attach, ended ones
    /// to report. Leftovers that never started are removed here.
    async fn recover(&self) -> Vec<Recovered> {
        Vec::new()
    }

    /// Follows a run found still running by [`Runtime::recover`] to its end, enforcing what is
    /// left of its timeout.
    async fn resume(&self, prepared: Prepared, _stop: StopSignals, log: LiveLog) -> Finished {
        log.note(&format!(
            "this runtime cannot re-attach run {}",
            prepared.spec.run_id
        ));
        Finished::from_log(Outcome::failed(FailureReason::WorkerLost), &log)
    }

    /// Removes what is left of a run whose report a scheduler confirmed (Docker: its exited
    /// container, kept until then so a crash before the confirmation reports it again).
    async fn release(&self, _run_id: &str) {}

    /// Images present on this worker, advertised in credits.
    fn cached_images(&self) -> Vec<String> {
        Vec::new()
    }

    /// Prepares and starts `spec` in one go.
    async fn run(&self, spec: RunSpec, stop: StopSignals, log: LiveLog) -> Finished {
        match self.prepare(spec, &stop).await {
            Ok(prepared) => self.start(prepared, stop, log).await,
            Err(finished) => finished,
        }
    }
}
