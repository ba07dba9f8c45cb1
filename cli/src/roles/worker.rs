//! `kairos worker`: the worker agent role. Finds schedulers in etcd, runs what they assign,
//! and drains on SIGTERM. Configured by `KAIROS_ETCD_ENDPOINTS`, `KAIROS_WORKER_ID`,
//! `KAIROS_WORKER_SLOTS`, `KAIROS_RUNTIME` and `KAIROS_WORKER_TOKEN`.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use kairos_worker::{
    WorkerConfig,
    config::{RuntimeKind, Schedulers},
};

use super::shutdown;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    /// Docker containers with hard limits (the default; arrives with the worker issue).
    Docker,
    /// Runs the job's command directly on this host: trusted installs and benchmarks only.
    Process,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// etcd endpoints where schedulers register (comma-separated URLs).
    #[arg(
        long,
        env = "KAIROS_ETCD_ENDPOINTS",
        value_delimiter = ',',
        required = true
    )]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix of the cluster in etcd.
    #[arg(long, env = "KAIROS_ETCD_PREFIX", default_value = "/kairos/v1/")]
    pub etcd_prefix: String,
    /// This worker's id (default: hostname and a random suffix).
    #[arg(long, env = "KAIROS_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Runs executed at once.
    #[arg(long, env = "KAIROS_WORKER_SLOTS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub slots: u32,
    /// How runs are started.
    #[arg(long, env = "KAIROS_RUNTIME", value_enum, default_value = "docker")]
    pub runtime: RuntimeArg,
    /// Shared secret between workers and schedulers.
    #[arg(long, env = "KAIROS_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: String,
    /// Seconds running runs get to finish after SIGTERM before they are abandoned.
    #[arg(long, env = "KAIROS_DRAIN_GRACE_SECONDS", default_value_t = 30)]
    pub drain_grace_seconds: u64,
}

/// A default node or worker id: the host name plus a per-process random suffix.
pub fn default_node_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok());
    kairos_scheduler::coordinator::default_node_id(host)
}

/// The runtime `arg` names, or why it cannot run here with the fix (shared by `kairos worker`
/// and `kairos standalone`, so both say the same).
pub fn runtime_kind(arg: RuntimeArg) -> anyhow::Result<RuntimeKind> {
    match arg {
        RuntimeArg::Process => Ok(RuntimeKind::Process),
        RuntimeArg::Docker => Err(crate::client::CliError::new(
            "failed_precondition",
            "the docker runtime is not available in this build yet; start with KAIROS_RUNTIME=process (or --runtime process) to run job commands directly on this machine (trusted commands only)",
        )
        .into()),
    }
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let runtime = runtime_kind(args.runtime)?;
    if args.worker_token.is_empty() {
        bail!("KAIROS_WORKER_TOKEN must not be empty");
    }
    let config = WorkerConfig {
        schedulers: Schedulers::Etcd {
            endpoints: args.etcd_endpoints,
            prefix: args.etcd_prefix,
        },
        worker_id: args.worker_id.unwrap_or_else(default_node_id),
        slots: args.slots,
        runtime,
        token: args.worker_token,
        heartbeat_every: Duration::from_secs(2),
        drain_grace: Duration::from_secs(args.drain_grace_seconds),
    };
    let shutdown = shutdown::on_signal().context("cannot install signal handlers")?;
    kairos_worker::run(config, shutdown).await;
    Ok(())
}
