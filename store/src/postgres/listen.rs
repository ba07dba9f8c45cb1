//! Follows the API's change hints: LISTEN on the schedule and queued-run channels and forward
//! each committed NOTIFY as a `ShardChange`. Hints only: losing one delays work until the next
//! rescan, never loses it, so this module never retries on its own.

use kairos_domain::ShardId;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::PgStore;
use crate::{ChangeKind, RUNS_QUEUED_CHANNEL, Result, SCHEDULE_CHANGES_CHANNEL, ShardChange};

pub(super) async fn follow_changes(
    store: &PgStore,
    changes: mpsc::Sender<ShardChange>,
    stop: CancellationToken,
) -> Result<()> {
    let mut listener = PgListener::connect_with(store.pool()).await?;
    listener
        .listen_all([SCHEDULE_CHANGES_CHANNEL, RUNS_QUEUED_CHANNEL])
        .await?;
    loop {
        let notification = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            n = listener.recv() => n?,
        };
        let kind = match notification.channel() {
            SCHEDULE_CHANGES_CHANNEL => ChangeKind::Schedule,
            RUNS_QUEUED_CHANNEL => ChangeKind::RunQueued,
            _ => continue,
        };
        let Some(shard) = notification
            .payload()
            .parse::<u16>()
            .ok()
            .and_then(ShardId::new)
        else {
            tracing::warn!(
                channel = notification.channel(),
                "change hint with an unreadable shard; ignored"
            );
            continue;
        };
        if changes.send(ShardChange { kind, shard }).await.is_err() {
            return Ok(());
        }
    }
}
