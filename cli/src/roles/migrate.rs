//! `kairos migrate`: applies `migrations/` to the database under Postgres' advisory lock, so
//! concurrent starts are safe, then creates the run partitions ahead of time.

use anyhow::Context;
use clap::Args;

use super::DatabaseOpts;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub db: DatabaseOpts,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let store = args.db.store().await?;
    store.migrate().await.context("migrations failed")?;
    tracing::info!("migrations applied");
    Ok(())
}
