//! Follows the change hints committed write transactions deliver in process (the SQLite
//! stand-in for LISTEN/NOTIFY) and forwards each as a `ShardChange`. Hints only: one lost to a
//! slow follower delays work until the next rescan, never loses it, so nothing here retries.

use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_util::sync::CancellationToken;

use super::SqliteStore;
use crate::{Result, ShardChange};

pub(super) async fn follow(
    store: &SqliteStore,
    changes: mpsc::Sender<ShardChange>,
    stop: CancellationToken,
) -> Result<()> {
    let mut hints = store.changes.subscribe();
    loop {
        let hint = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            hint = hints.recv() => hint,
        };
        match hint {
            Ok(change) => {
                if changes.send(change).await.is_err() {
                    return Ok(());
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(
                    missed,
                    "change hints dropped for a slow follower; planning rescans"
                );
            }
            // Only when every store handle is gone: nothing can commit any more.
            Err(RecvError::Closed) => return Ok(()),
        }
    }
}
