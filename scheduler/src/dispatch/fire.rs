//! The firing batch: every due run the engine hands over, across all owned shards, is written
//! in one fenced transaction per batch (while one batch is written the next one gathers, so a
//! busy instant costs a few transactions, not one per shard). A run a worker holds prepared
//! starts in that same transaction and the worker is told at once; the others are queued and
//! offered. A failed write is retried while the shard stays ours: those runs are `scheduled`
//! and no planner round looks at them again (I2). It never writes while the node's lease is
//! not valid (I8): the shard's next owner, or this node after re-claiming, recovers them.

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::Utc;
use kairos_domain::RunId;
use kairos_store::{DueRun, FiredRuns, LeasedRun};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Dispatcher, Running, ack_result};
use crate::coordinator::Coordinator;

/// Most runs written by one firing transaction.
const FIRE_BATCH: usize = 4096;

impl Dispatcher {
    pub(super) async fn fire_loop(
        self,
        coordinator: Arc<dyn Coordinator>,
        stop: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let batch = self.take_due();
            if batch.is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.fire_wake.notified() => continue,
                }
            }
            if !coordinator.lease_valid() {
                // I8: the lease may be expiring. The shards are lost and re-claimed (by this
                // node or another), and the claim's recovery fires these runs.
                tracing::warn!(fires = batch.len(), "lease not valid; not firing");
                self.release_firing(&batch);
                continue;
            }
            match self.store.fire_runs(&batch).await {
                Ok(fired) => {
                    backoff = Duration::from_millis(100);
                    self.apply_fired(&batch, fired).await;
                }
                Err(e) => {
                    tracing::warn!(runs = batch.len(), error = %e, retry_in = ?backoff, "cannot fire due runs; retrying");
                    self.put_back(batch);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// The next batch of due runs of shards still ours, each with the worker holding it
    /// prepared, if one accepted it ahead.
    fn take_due(&self) -> Vec<DueRun> {
        let mut state = self.state();
        let mut batch = Vec::new();
        let now = Instant::now();
        while batch.len() < FIRE_BATCH {
            let Some(run) = state.due.pop_front() else {
                break;
            };
            if state.leases.get(&run.lease.shard()) != Some(&run.lease) {
                continue; // the shard moved: its next owner fires it
            }
            let mut worker_id = None;
            if let Some(a) = state.awaiting.get_mut(&run.id)
                && a.upcoming
                && !a.acking
            {
                if a.accepted {
                    a.firing = true;
                    let session = a.session;
                    worker_id = state.sessions.get(&session).map(|s| s.worker_id.clone());
                } else {
                    // Offered but not answered yet: once queued, its ack decides as usual.
                    a.upcoming = false;
                    a.sent_at = now;
                }
            }
            batch.push(DueRun { run, worker_id });
        }
        batch
    }

    /// A batch that will not be written now: its runs are no longer marked as being fired.
    fn release_firing(&self, batch: &[DueRun]) {
        let mut state = self.state();
        for d in batch {
            if let Some(a) = state.awaiting.get_mut(&d.run.id) {
                a.firing = false;
            }
        }
    }

    /// A failed batch goes back to the front of the due queue, for the shards still ours.
    fn put_back(&self, batch: Vec<DueRun>) {
        self.release_firing(&batch);
        let mut state = self.state();
        for d in batch.into_iter().rev() {
            if state.leases.get(&d.run.lease.shard()) == Some(&d.run.lease) {
                state.due.push_front(d.run);
            }
        }
    }

    async fn apply_fired(&self, batch: &[DueRun], fired: FiredRuns) {
        if !fired.started.is_empty() {
            // Crash point for tests: runs are `running`, their workers were never told to start.
            fail::fail_point!("scheduler::after_ack", |_| std::process::abort());
        }
        let started: HashSet<RunId> = fired.started.iter().copied().collect();
        let queued: HashSet<RunId> = fired.queued.iter().copied().collect();
        let now = Instant::now();
        let now_utc = Utc::now();
        let mut replies = Vec::new();
        {
            let mut state = self.state();
            for d in batch {
                let run: &LeasedRun = &d.run;
                let lag = run
                    .fire_time
                    .map(|t| (now_utc - t).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6);
                if started.contains(&run.id) {
                    let held = state.awaiting.remove(&run.id);
                    state.running.insert(
                        run.id,
                        Running {
                            run: run.clone(),
                            session: held.as_ref().map(|a| a.session),
                            last_seen: now,
                        },
                    );
                    if let Some(tx) = held
                        .and_then(|a| state.sessions.get(&a.session))
                        .map(|s| s.tx.clone())
                    {
                        replies.push((tx, ack_result(run.id, true)));
                    }
                    self.metrics.runs_started.inc();
                    self.metrics.runs_started_ahead.inc();
                    if let Some(lag) = lag {
                        self.metrics.fire_lag_seconds.observe(lag);
                    }
                    continue;
                }
                let firing = state.awaiting.get(&run.id).is_some_and(|a| a.firing);
                if firing {
                    // Held prepared, but it may not start (cancelled, changed, not scheduled any
                    // more, or its shard moved): the worker drops it.
                    if let Some(a) = state.awaiting.remove(&run.id)
                        && let Some(s) = state.sessions.get(&a.session)
                    {
                        replies.push((s.tx.clone(), ack_result(run.id, false)));
                    }
                    continue;
                }
                if queued.contains(&run.id) {
                    self.metrics.runs_queued.inc();
                    if let Some(lag) = lag {
                        self.metrics.fire_lag_seconds.observe(lag);
                    }
                    if !state.awaiting.contains_key(&run.id) {
                        state.ready.push_back(run.clone());
                    }
                }
            }
        }
        if !fired.fenced.is_empty() {
            tracing::info!(
                shards = fired.fenced.len(),
                "due runs fenced off: their shards have a newer owner, which fires them"
            );
        }
        for (tx, message) in replies {
            let _ = tx.send(Ok(message)).await;
        }
        if !queued.is_empty() {
            self.wake.notify_one();
        }
    }
}
