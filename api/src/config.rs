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
}

impl ApiConfig {
    pub const DEFAULT_HTTP_ADDR: &'static str = "127.0.0.1:8080";
    pub const DEFAULT_GRPC_ADDR: &'static str = "127.0.0.1:50051";
    pub const DEFAULT_RETENTION_DAYS: u32 = 365;
}
