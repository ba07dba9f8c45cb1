//! `kairos scheduler`: a scheduler node. Claims shards in etcd, fires their schedules, and
//! serves workers over `WorkerService`. Configured by `KAIROS_DATABASE_URL`,
//! `KAIROS_ETCD_ENDPOINTS`, `KAIROS_NODE_ID`, `KAIROS_GRPC_ADDR`, `KAIROS_LEASE_TTL_SECONDS`,
//! `KAIROS_WORKER_TOKEN` and `KAIROS_METRICS_ADDR` (plus tuning: `KAIROS_HORIZON_SECONDS`,
//! `KAIROS_RESCAN_SECONDS`, `KAIROS_WORKER_LOST_SECONDS`, `KAIROS_LOOKAHEAD_MS`).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use kairos_scheduler::{
    coordinator::CoordinatorConfig,
    dispatch::DispatchConfig,
    node::{self, Ownership, SchedulerConfig},
};

use super::{DatabaseOpts, shutdown, worker::default_node_id};

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    pub db: DatabaseOpts,
    /// etcd endpoints (comma-separated URLs).
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
    /// This node's id (default: hostname and a random suffix).
    #[arg(long, env = "KAIROS_NODE_ID")]
    pub node_id: Option<String>,
    /// Worker-facing gRPC address.
    #[arg(long, env = "KAIROS_GRPC_ADDR", default_value = "127.0.0.1:50052")]
    pub grpc_addr: SocketAddr,
    /// Health and metrics address (/healthz, /readyz, /metrics).
    #[arg(long, env = "KAIROS_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Lease time-to-live in seconds: a node that cannot renew stops firing before it ends.
    #[arg(long, env = "KAIROS_LEASE_TTL_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub lease_ttl_seconds: u64,
    /// Shared secret between workers and schedulers.
    #[arg(long, env = "KAIROS_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: String,
    #[command(flatten)]
    pub planning: PlanningOpts,
}

/// Tuning of planning, firing and dispatch, shared by `kairos scheduler` and the scheduler
/// inside `kairos standalone`.
#[derive(Debug, Clone, Args)]
pub struct PlanningOpts {
    /// Fires due within this many seconds are kept in memory.
    #[arg(long, env = "KAIROS_HORIZON_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub horizon_seconds: u64,
    /// Each owned shard is re-planned at least this often (seconds), change hints aside.
    #[arg(long, env = "KAIROS_RESCAN_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub rescan_seconds: u64,
    /// A running run whose worker is silent this long fails with worker_lost (seconds).
    #[arg(long, env = "KAIROS_WORKER_LOST_SECONDS", default_value_t = 15)]
    pub worker_lost_seconds: u64,
    /// Scheduled runs are offered to a worker this long before their fire (milliseconds), so
    /// the worker prepares them (pulls, creates the container) and the fire only starts them;
    /// 0 offers runs only once they are due.
    #[arg(long, env = "KAIROS_LOOKAHEAD_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub lookahead_ms: u64,
}

impl PlanningOpts {
    /// A node's config with these settings: its ownership, worker-facing address, metrics
    /// address and the workers' shared secret.
    pub fn node_config(
        &self,
        ownership: Ownership,
        grpc_addr: SocketAddr,
        metrics_addr: Option<SocketAddr>,
        worker_token: String,
    ) -> SchedulerConfig {
        SchedulerConfig {
            ownership,
            grpc_addr,
            metrics_addr,
            horizon: Duration::from_secs(self.horizon_seconds),
            rescan_every: Duration::from_secs(self.rescan_seconds),
            dispatch: DispatchConfig {
                worker_token,
                lost_after: Duration::from_secs(self.worker_lost_seconds),
                ack_timeout: Duration::from_secs(10),
                lookahead: Duration::from_millis(self.lookahead_ms),
            },
        }
    }
}

pub async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    if args.worker_token.is_empty() {
        bail!("KAIROS_WORKER_TOKEN must not be empty");
    }
    let store = args.db.store().await?;
    let mut coordinator = CoordinatorConfig::new(
        args.etcd_endpoints,
        args.node_id.unwrap_or_else(default_node_id),
    );
    coordinator.prefix = args.etcd_prefix;
    coordinator.lease_ttl = Duration::from_secs(args.lease_ttl_seconds);
    let config = args.planning.node_config(
        Ownership::Etcd(coordinator),
        args.grpc_addr,
        args.metrics_addr,
        args.worker_token,
    );
    let shutdown = shutdown::on_signal().context("cannot install signal handlers")?;
    node::run(config, Arc::new(store), shutdown).await?;
    tracing::info!("scheduler stopped");
    Ok(())
}
