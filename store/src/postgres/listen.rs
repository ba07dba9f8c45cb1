//! Follows the API's change hints: LISTEN on the schedule, queued-run and cancel channels and forward
//! each committed NOTIFY as a `ShardChange`. Hints only: losing one delays work until the next
//! rescan, never loses it, so this module never retries on its own.

use chrono::{DateTime, Utc};
use kairos_domain::{RunId, ShardId};
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::PgStore;
use crate::{
    ChangeKind, RUNS_CANCEL_CHANNEL, RUNS_QUEUED_CHANNEL, Result, SCHEDULE_CHANGES_CHANNEL,
    ShardChange,
};

pub(super) async fn follow_changes(
    store: &PgStore,
    changes: mpsc::Sender<ShardChange>,
    stop: CancellationToken,
) -> Result<()> {
    let mut listener = PgListener::connect_with(store.pool()).await?;
    listener
        .listen_all([
            SCHEDULE_CHANGES_CHANNEL,
            RUNS_QUEUED_CHANNEL,
            RUNS_CANCEL_CHANNEL,
        ])
        .await?;
    loop {
        let notification = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            n = listener.recv() => n?,
        };
        let kind = match notification.channel() {
            SCHEDULE_CHANGES_CHANNEL => ChangeKind::Schedule,
            RUNS_QUEUED_CHANNEL => ChangeKind::RunQueued,
            RUNS_CANCEL_CHANNEL => ChangeKind::CancelRequested,
            _ => continue,
        };
        let Some((shard, run)) = parse_payload(notification.payload()) else {
            tracing::warn!(
                channel = notification.channel(),
                "change hint with an unreadable payload; ignored"
            );
            continue;
        };
        if changes
            .send(ShardChange { kind, shard, run })
            .await
            .is_err()
        {
            return Ok(());
        }
    }
}

/// A run a hint names, with its fire time.
type NamedRun = (RunId, DateTime<Utc>);

/// `<shard>` or `<shard> <run id> <fire time in microseconds>` (see `Tx::notify_queued_run`).
fn parse_payload(payload: &str) -> Option<(ShardId, Option<NamedRun>)> {
    let mut parts = payload.split(' ');
    let shard = parts.next()?.parse::<u16>().ok().and_then(ShardId::new)?;
    let run = match (parts.next(), parts.next()) {
        (Some(id), Some(micros)) => {
            let id = id.parse::<RunId>().ok()?;
            let fire_time = DateTime::<Utc>::from_timestamp_micros(micros.parse().ok()?)?;
            Some((id, fire_time))
        }
        _ => None,
    };
    Some((shard, run))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_a_shard_and_maybe_a_run() {
        let shard = ShardId::new(7).expect("shard");
        assert_eq!(parse_payload("7"), Some((shard, None)));
        let run = RunId::generate();
        let at = DateTime::<Utc>::from_timestamp_micros(1_790_000_000_123_456).expect("time");
        assert_eq!(
            parse_payload(&format!("7 {run} 1790000000123456")),
            Some((shard, Some((run, at))))
        );
        assert_eq!(parse_payload("x"), None);
        assert_eq!(parse_payload("7 not-a-run 1"), None);
        assert_eq!(parse_payload("5000"), None, "out of range");
    }
}
