//! Live output of running runs: the tails workers send while runs run, gathered per run (the
//! latest wins) and written at most every half second in one batch across shards, so the API
//! can serve a running run's output by offset. Best effort by design: a tail dropped under
//! load is superseded by the next one, and the run's report carries the final output. It never
//! writes the tail of a run whose shard this node does not own.

use std::{collections::HashMap, time::Duration};

use kairos_domain::{RunId, ShardId};
use kairos_proto::v1::worker_message::LogTail;
use kairos_store::{LeasedRun, LiveLog};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Dispatcher;

/// How often gathered tails are written.
const WRITE_EVERY: Duration = Duration::from_millis(500);

impl Dispatcher {
    pub(super) async fn log_loop(self, mut rx: mpsc::Receiver<LogTail>, stop: CancellationToken) {
        let mut pending: HashMap<RunId, LogTail> = HashMap::new();
        let mut tick = tokio::time::interval(WRITE_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                tail = rx.recv() => match tail {
                    Some(tail) => {
                        if let Ok(id) = tail.run_id.parse::<RunId>() {
                            pending.insert(id, tail);
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    if !pending.is_empty() {
                        self.write_live_logs(std::mem::take(&mut pending)).await;
                    }
                }
            }
        }
    }

    async fn write_live_logs(&self, pending: HashMap<RunId, LogTail>) {
        let logs: Vec<LiveLog> = {
            let state = self.state();
            pending
                .into_iter()
                .filter_map(|(id, tail)| {
                    let run = state.running.get(&id).map(|r| r.run.clone()).or_else(|| {
                        let shard = u16::try_from(tail.shard).ok().and_then(ShardId::new)?;
                        state.leases.get(&shard).map(|lease| LeasedRun {
                            lease: lease.clone(),
                            id,
                            fire_time: None,
                        })
                    })?;
                    Some(LiveLog {
                        run,
                        tail: tail.tail,
                        total_bytes: tail.total_bytes,
                    })
                })
                .collect()
        };
        if logs.is_empty() {
            return;
        }
        if let Err(e) = self.store.record_live_logs(&logs).await {
            tracing::debug!(runs = logs.len(), error = %e, "live tails not stored; the next ones will be");
        }
    }
}
