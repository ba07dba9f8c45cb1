//! The `Runtime` seam: how a run's job is started, limited, stopped and reported. The process
//! runtime runs commands on this host; the Docker runtime (worker issue) will run images.
//!
//! A runtime turns every failure into an `Outcome` with a reason; it never panics and never
//! reports success for a run it did not see exit 0.

mod process;

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kairos_domain::FailureReason;
use tokio_util::sync::CancellationToken;

pub use process::ProcessRuntime;

/// Everything needed to run one assignment.
#[derive(Clone)]
pub struct RunSpec {
    pub run_id: String,
    pub job_id: String,
    pub image: String,
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
            .field("image", &self.image)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("memory_mb", &self.memory_mb)
            .field("timeout", &self.timeout)
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

/// The end of a run with the tail of its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub outcome: Outcome,
    pub log_tail: String,
    pub log_truncated: bool,
}

/// Why a run is being stopped early.
#[derive(Debug, Clone, Default)]
pub struct StopSignals {
    /// The customer cancelled the run: report `cancelled`.
    pub cancel: CancellationToken,
    /// The worker is going away and cannot wait: report `failed/worker_lost`.
    pub abandon: CancellationToken,
}

#[async_trait]
pub trait Runtime: Send + Sync + std::fmt::Debug + 'static {
    /// Runs `spec` to its end: exit, timeout (terminate, grace, kill), cancel or abandon.
    async fn run(&self, spec: RunSpec, stop: StopSignals) -> Finished;
}
