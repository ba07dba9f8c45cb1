//! The one way to write: a transaction on the single writer connection, opened with
//! `BEGIN IMMEDIATE` (so it holds SQLite's write lock from its first statement and never fails
//! half-way with `SQLITE_BUSY`), that commits explicitly, rolls back when dropped, and delivers
//! its change hints only once it committed; it must never outlive a single `Store` call.

use kairos_domain::{RunId, ShardId};
use sqlx::{Sqlite, SqliteConnection, Transaction};
use tokio::sync::broadcast;

use super::SqliteStore;
use crate::{ChangeKind, Result, ShardChange};

/// An open write transaction. Dropping it without [`WriteTx::commit`] rolls everything back
/// and drops its hints, so an early `?` return leaves nothing behind (I7).
#[derive(Debug)]
pub(super) struct WriteTx {
    inner: Transaction<'static, Sqlite>,
    hints: Vec<ShardChange>,
    changes: broadcast::Sender<ShardChange>,
    /// The transaction's time (`now()` of Postgres), in its stored form.
    pub(super) now: String,
}

/// A read transaction on a reader connection: every statement in it sees one snapshot.
pub(super) type ReadTx = Transaction<'static, Sqlite>;

impl SqliteStore {
    /// Starts a write transaction, waiting for the writer connection if another call has it.
    pub(super) async fn begin_write(&self) -> Result<WriteTx> {
        let inner = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx {
            inner,
            hints: Vec::new(),
            changes: self.changes.clone(),
            now: super::time::now(),
        })
    }

    /// Starts a read transaction (one snapshot) on a reader connection.
    pub(super) async fn begin_read(&self) -> Result<ReadTx> {
        Ok(self.reader.begin().await?)
    }
}

impl WriteTx {
    /// The transaction's connection, to run statements on.
    pub(super) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.inner
    }

    /// Announces, once the transaction commits, a change to `shard` (Postgres' NOTIFY).
    pub(super) fn hint(&mut self, kind: ChangeKind, shard: ShardId) {
        self.hints.push(ShardChange {
            kind,
            shard,
            run: None,
        });
    }

    /// Announces, once the transaction commits, a change about one run of `shard`, by id and
    /// fire time, so the shard's owner can act on it without a scan (offer a queued run, stop
    /// a run whose cancel was asked).
    pub(super) fn hint_run(
        &mut self,
        kind: ChangeKind,
        shard: ShardId,
        run: RunId,
        fire_time: chrono::DateTime<chrono::Utc>,
    ) {
        self.hints.push(ShardChange {
            kind,
            shard,
            run: Some((run, fire_time)),
        });
    }

    /// Commits, then delivers the hints, identical ones once (as Postgres folds NOTIFYs).
    pub(super) async fn commit(self) -> Result<()> {
        self.inner.commit().await?;
        let mut sent: Vec<ShardChange> = Vec::with_capacity(self.hints.len());
        for hint in self.hints {
            if !sent.contains(&hint) {
                // An error only means nobody follows the hints right now.
                let _ = self.changes.send(hint);
                sent.push(hint);
            }
        }
        Ok(())
    }
}
