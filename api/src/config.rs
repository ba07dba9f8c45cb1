//! Configuration of the API role, as the operator contract names it (`KAIROS_*` variables).
//!
//! It holds the admin token as a secret: its `Debug` output never shows the value.

use std::{fmt, net::SocketAddr, time::Duration};

/// A secret string whose value never reaches logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Settings of `kairos api` (database settings belong to the binary that opens the store).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// REST listen address (`KAIROS_HTTP_ADDR`, default `127.0.0.1:8080`).
    pub http_addr: SocketAddr,
    /// gRPC listen address (`KAIROS_GRPC_ADDR`, default `127.0.0.1:50051`).
    pub grpc_addr: SocketAddr,
    /// Bearer token of the admin API (`KAIROS_ADMIN_TOKEN`); without it, no admin API.
    pub admin_token: Option<Secret>,
    /// How long run history is kept before its partitions are dropped.
    pub retention_days: u32,
    /// How often partition maintenance runs.
    pub maintenance_interval: Duration,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// The quotas every tenant gets.
    pub limits: TenantLimits,
}

/// Quotas every tenant gets, so one tenant cannot crowd out the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantLimits {
    /// Live schedules per tenant (`KAIROS_MAX_SCHEDULES_PER_TENANT`): those not completed (a
    /// fire left, or the last one still ahead); paused ones count, completed one-offs and
    /// schedules past their `end_at` or `max_runs` do not. Checked when a schedule is created
    /// and when an edit gives a completed one a fire again.
    pub max_live_schedules: u32,
}

impl TenantLimits {
    pub const DEFAULT_MAX_LIVE_SCHEDULES: u32 = 10_000;
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            max_live_schedules: Self::DEFAULT_MAX_LIVE_SCHEDULES,
        }
    }
}

impl ApiConfig {
    pub const DEFAULT_HTTP_ADDR: &'static str = "127.0.0.1:8080";
    pub const DEFAULT_GRPC_ADDR: &'static str = "127.0.0.1:50051";
    pub const DEFAULT_RETENTION_DAYS: u32 = 365;
}
