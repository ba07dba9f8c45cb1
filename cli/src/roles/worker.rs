//! `kairos worker`: the worker agent role. Connects its runtime (Docker by default: refuses to
//! start, saying how to fix it, when no engine is reachable), finds schedulers in etcd, runs
//! what they assign, and drains on SIGTERM. Configured by `KAIROS_ETCD_ENDPOINTS`,
//! `KAIROS_WORKER_ID`, `KAIROS_WORKER_SLOTS`, `KAIROS_RUNTIME`, `KAIROS_WORKER_TOKEN` and the
//! Docker runtime's `KAIROS_DOCKER_NETWORK`, `KAIROS_IMAGE_CACHE_BYTES`, `KAIROS_RUN_*`;
//! serves `/healthz`, `/readyz` and `/metrics` on `KAIROS_METRICS_ADDR`.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use kairos_worker::{
    WorkerConfig,
    config::{RuntimeKind, Schedulers},
    runtime::{DockerSettings, NetworkChoice},
};

use super::shutdown;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    /// Docker containers with hard limits (the default; needs a reachable Docker engine).
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
    /// This worker's id (default: the host name). Keep it stable across restarts and unique
    /// per Docker engine: a restarted worker re-attaches the containers labelled with it.
    #[arg(long, env = "KAIROS_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Shared secret between workers and schedulers.
    #[arg(long, env = "KAIROS_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: String,
    #[command(flatten)]
    pub runs: RunOpts,
    /// Health and metrics address (/healthz, /readyz, /metrics).
    #[arg(long, env = "KAIROS_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// How a worker runs what it is assigned, shared by `kairos worker` and the worker inside
/// `kairos standalone`.
#[derive(Debug, Clone, Args)]
pub struct RunOpts {
    /// Runs executed at once.
    #[arg(long, env = "KAIROS_WORKER_SLOTS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub slots: u32,
    /// How runs are started.
    #[arg(long, env = "KAIROS_RUNTIME", value_enum, default_value = "docker")]
    pub runtime: RuntimeArg,
    /// Seconds running runs get to finish after SIGTERM before they are killed (reported
    /// failed/worker_lost).
    #[arg(long, env = "KAIROS_DRAIN_GRACE_SECONDS", default_value_t = 30)]
    pub drain_grace_seconds: u64,
    /// Network of the runs' containers: `isolated` (a bridge the worker creates, with
    /// inter-container traffic disabled), `isolated:NAME` for another bridge name, or `none`.
    #[arg(long, env = "KAIROS_DOCKER_NETWORK", default_value = "isolated")]
    pub docker_network: String,
    /// Bytes of pulled images kept before the least recently used idle one is removed.
    #[arg(long, env = "KAIROS_IMAGE_CACHE_BYTES", default_value_t = 10 * 1024 * 1024 * 1024)]
    pub image_cache_bytes: u64,
    /// CPU quota of one run, in CPUs.
    #[arg(long, env = "KAIROS_RUN_CPUS", default_value_t = 1.0)]
    pub run_cpus: f64,
    /// Most processes one run may have.
    #[arg(long, env = "KAIROS_RUN_PIDS_LIMIT", default_value_t = 256, value_parser = clap::value_parser!(i64).range(16..=1_000_000))]
    pub run_pids_limit: i64,
    /// Size in MiB of a run's writable tmpfs scratch at /tmp (the root filesystem is
    /// read-only).
    #[arg(long, env = "KAIROS_RUN_TMPFS_MB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub run_tmpfs_mb: u32,
    /// Seconds between SIGTERM and SIGKILL when a run times out or is cancelled.
    #[arg(long, env = "KAIROS_STOP_GRACE_SECONDS", default_value_t = 10)]
    pub stop_grace_seconds: u64,
}

impl RunOpts {
    /// A worker's config with these settings, for `worker_id` reaching `schedulers` with
    /// `token`.
    pub fn worker_config(
        &self,
        schedulers: Schedulers,
        worker_id: String,
        token: String,
        metrics_addr: Option<SocketAddr>,
    ) -> anyhow::Result<WorkerConfig> {
        if token.is_empty() {
            bail!("KAIROS_WORKER_TOKEN must not be empty");
        }
        if !(self.run_cpus > 0.0 && self.run_cpus <= 64.0) {
            bail!("KAIROS_RUN_CPUS: {} is outside (0, 64]", self.run_cpus);
        }
        let docker = DockerSettings {
            network: network(&self.docker_network)?,
            image_cache_bytes: self.image_cache_bytes,
            cpus: self.run_cpus,
            pids_limit: self.run_pids_limit,
            tmpfs_mb: self.run_tmpfs_mb,
            stop_grace: Duration::from_secs(self.stop_grace_seconds),
            ..DockerSettings::default()
        };
        Ok(WorkerConfig {
            schedulers,
            worker_id,
            slots: self.slots,
            runtime: match self.runtime {
                RuntimeArg::Process => RuntimeKind::Process,
                RuntimeArg::Docker => RuntimeKind::Docker,
            },
            token,
            heartbeat_every: Duration::from_secs(2),
            drain_grace: Duration::from_secs(self.drain_grace_seconds),
            docker,
            metrics_addr,
        })
    }
}

/// A default worker id: the host name, which stays the same when the worker restarts on the
/// same host (or in the same pod), so it finds its containers again.
pub fn default_worker_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|host| host.trim().replace('/', "-"))
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "kairos-worker".to_owned())
}

/// A default node id: the host name plus a per-process random suffix.
pub fn default_node_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok());
    kairos_scheduler::coordinator::default_node_id(host)
}

fn network(raw: &str) -> anyhow::Result<NetworkChoice> {
    match raw.split_once(':') {
        None if raw == "none" => Ok(NetworkChoice::None),
        None if raw == "isolated" => Ok(NetworkChoice::Isolated(
            DockerSettings::default_network_name().to_owned(),
        )),
        Some(("isolated", name)) if !name.is_empty() => {
            Ok(NetworkChoice::Isolated(name.to_owned()))
        }
        _ => bail!(
            "KAIROS_DOCKER_NETWORK: '{raw}' is not `none`, `isolated` or `isolated:NAME` (the host network is never allowed)"
        ),
    }
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let config = args.runs.worker_config(
        Schedulers::Etcd {
            endpoints: args.etcd_endpoints,
            prefix: args.etcd_prefix,
        },
        args.worker_id.unwrap_or_else(default_worker_id),
        args.worker_token,
        args.metrics_addr,
    )?;
    let shutdown = shutdown::on_signal().context("cannot install signal handlers")?;
    kairos_worker::run(config, shutdown)
        .await
        .context("the worker cannot start")?;
    Ok(())
}
