//! The server roles of the `kairos` binary (`migrate`, `api`, `scheduler`, `worker`,
//! `standalone`): each parses its settings from flags and `KAIROS_*` variables, wires the
//! crates together, and runs until a signal.
//!
//! This is the only place where the store, the API, the scheduler and the worker are put
//! together; no business logic lives here.

pub mod api;
pub mod migrate;
pub mod scheduler;
pub mod shutdown;
pub mod standalone;
pub mod telemetry;
pub mod worker;

use clap::Args;

/// Settings every server role shares.
#[derive(Debug, Clone, Args)]
pub struct DatabaseOpts {
    /// Postgres URL of the store, e.g. postgres://kairos@127.0.0.1:5432/kairos.
    #[arg(long, env = "KAIROS_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Key (64 hex digits) sealing registry passwords at rest; the same on every API and
    /// scheduler server. Without it, registry credentials cannot be stored or used.
    #[arg(long, env = "KAIROS_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
}

impl DatabaseOpts {
    /// Connects to the store, with the secret key if one is set.
    pub async fn store(&self) -> anyhow::Result<kairos_store::PgStore> {
        use anyhow::Context;
        let store = kairos_store::PgStore::connect(&self.database_url)
            .await
            .context("cannot connect to the database")?;
        Ok(match self.secret_key.as_deref().filter(|k| !k.is_empty()) {
            Some(key) => store.with_secret_key(kairos_store::SecretKey::from_hex(key)?),
            None => store,
        })
    }
}
