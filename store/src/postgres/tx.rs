//! The one way to write more than one statement: a transaction that commits explicitly and
//! rolls back when dropped; it must never commit implicitly or outlive a single `Store` call.

use chrono::{DateTime, Utc};
use kairos_domain::{RunId, ShardId};
use sqlx::{PgConnection, Postgres, Transaction};

use super::PgStore;
use crate::Result;

/// An open transaction. Dropping it without [`Tx::commit`] rolls everything back, so an early
/// `?` return leaves nothing behind (I7).
#[derive(Debug)]
pub(crate) struct Tx {
    inner: Transaction<'static, Postgres>,
}

impl PgStore {
    /// Starts a transaction (read committed) on a pooled connection.
    pub(crate) async fn begin(&self) -> Result<Tx> {
        Tx::begin(&self.pool).await
    }
}

impl Tx {
    /// Starts a transaction (read committed) on a connection of `pool`.
    pub(crate) async fn begin(pool: &sqlx::PgPool) -> Result<Tx> {
        Ok(Tx {
            inner: pool.begin().await?,
        })
    }

    /// The transaction's connection, to run statements on.
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        &mut self.inner
    }

    /// Queues a NOTIFY on `channel` with the shard as payload. Postgres delivers it only if
    /// the transaction commits, and folds identical ones within a transaction.
    pub(crate) async fn notify(&mut self, channel: &str, shard: ShardId) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(shard.get().to_string())
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Queues a NOTIFY on `channel` naming one run: `<shard> <run id> <fire time in
    /// microseconds>`, so the shard's owner can act on it without a scan (offer a queued run,
    /// stop a run whose cancel was asked). Delivered only if the transaction commits.
    pub(crate) async fn notify_run(
        &mut self,
        channel: &str,
        shard: ShardId,
        run: RunId,
        fire_time: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(format!(
                "{} {} {}",
                shard.get(),
                run,
                fire_time.timestamp_micros()
            ))
            .execute(self.conn())
            .await?;
        Ok(())
    }

    pub(crate) async fn commit(self) -> Result<()> {
        self.inner.commit().await?;
        Ok(())
    }
}
