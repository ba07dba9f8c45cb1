//! `kairos api`: the REST and gRPC API role. Migrates at start (unless `--no-migrate`), serves
//! until SIGTERM, then drains in-flight requests.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Args;
use kairos_api::{ApiConfig, TenantLimits, config::Secret};

use super::{DatabaseOpts, shutdown};

#[derive(Debug, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub db: DatabaseOpts,
    /// REST listen address.
    #[arg(long, env = "KAIROS_HTTP_ADDR", default_value = ApiConfig::DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,
    /// gRPC listen address.
    #[arg(long, env = "KAIROS_GRPC_ADDR", default_value = ApiConfig::DEFAULT_GRPC_ADDR)]
    pub grpc_addr: SocketAddr,
    /// Do not apply migrations at start (run `kairos migrate` separately).
    #[arg(long, env = "KAIROS_NO_MIGRATE")]
    pub no_migrate: bool,
    /// Days of run history kept before its partitions are dropped.
    #[arg(long, env = "KAIROS_RETENTION_DAYS", default_value_t = ApiConfig::DEFAULT_RETENTION_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub retention_days: u32,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "KAIROS_SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,
    /// Live schedules a tenant may have (not completed; paused ones count): a create past it
    /// is refused with resource_exhausted (HTTP 429).
    #[arg(long, env = "KAIROS_MAX_SCHEDULES_PER_TENANT",
          default_value_t = TenantLimits::DEFAULT_MAX_LIVE_SCHEDULES,
          value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    pub max_schedules_per_tenant: u32,
}

/// Runs the API role; `admin_token` comes from the global `--admin-token` / `KAIROS_ADMIN_TOKEN`.
pub async fn run(args: ApiArgs, admin_token: Option<String>) -> anyhow::Result<()> {
    let store = args.db.store().await?;
    if !args.no_migrate {
        store.migrate().await.context("migrations failed")?;
    }
    let config = ApiConfig {
        http_addr: args.http_addr,
        grpc_addr: args.grpc_addr,
        admin_token: admin_token.filter(|t| !t.is_empty()).map(Secret::new),
        retention_days: args.retention_days,
        maintenance_interval: Duration::from_secs(3600),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
        limits: TenantLimits {
            max_live_schedules: args.max_schedules_per_tenant,
        },
    };
    if config.admin_token.is_none() {
        tracing::warn!("KAIROS_ADMIN_TOKEN is not set: tenants cannot be created through this API");
    }
    let shutdown = shutdown::on_signal().context("cannot install signal handlers")?;
    kairos_api::serve(config, Arc::new(store), shutdown).await?;
    tracing::info!("api stopped");
    Ok(())
}
