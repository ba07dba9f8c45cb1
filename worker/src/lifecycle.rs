//! The life of one run on this worker, from the accepted assignment to the delivered report:
//! hold a slot, prepare in the background (pull, create), start only on the scheduler's go
//! (for an upcoming run that comes at its fire time), follow it, report its end to every
//! scheduler stream. Also re-attaches runs found running after a restart.
//!
//! A run that gets no go — `start=false`, a cancel before the go, a broken stream, drain
//! abandonment, or no answer in time — is discarded: nothing of it ever runs, and nothing is
//! reported for it (the scheduler decided it, or will find it silent).

use std::time::Duration;

use chrono::Utc;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::{
    connection::{Report, Running, Shared},
    logs::LiveLog,
    metrics::EndLabels,
    runtime::{Finished, Prepared, RunSpec, StopSignals},
    slots::SlotGuard,
};

/// How long past its fire time (or past the ack, for a due run) an accepted run waits for the
/// scheduler's go before the worker drops it and frees its slot.
const GO_WAIT: Duration = Duration::from_secs(60);

/// Takes an assignment if this worker has room and does not hold the run already: reserves a
/// slot, starts preparing, and returns where the scheduler's go (or no-go) is to be sent.
/// `None` means "ack with accept=false".
pub fn offer(shared: &Shared, spec: RunSpec, upcoming: bool) -> Option<oneshot::Sender<bool>> {
    if shared.draining.is_cancelled() {
        return None;
    }
    let cancel = CancellationToken::new();
    let slot = {
        let running = shared.running();
        let mut offered = shared.offered();
        if running.contains_key(&spec.run_id) || offered.contains_key(&spec.run_id) {
            return None;
        }
        let slot = shared.slots.try_reserve()?;
        offered.insert(spec.run_id.clone(), cancel.clone());
        slot
    };
    let (go_tx, go_rx) = oneshot::channel();
    let wait = go_wait(&spec, upcoming);
    let task_shared = shared.clone();
    shared
        .runs
        .spawn(accepted(task_shared, spec, slot, go_rx, cancel, wait));
    Some(go_tx)
}

/// How long to wait for the go: until the fire time of an upcoming run, plus [`GO_WAIT`].
fn go_wait(spec: &RunSpec, upcoming: bool) -> Duration {
    let until_fire = spec
        .fire_time
        .filter(|_| upcoming)
        .and_then(|t| (t - Utc::now()).to_std().ok())
        .unwrap_or_default();
    until_fire + GO_WAIT
}

async fn accepted(
    shared: Shared,
    spec: RunSpec,
    slot: SlotGuard,
    go: oneshot::Receiver<bool>,
    cancel: CancellationToken,
    wait: Duration,
) {
    let (run_id, shard) = (spec.run_id.clone(), spec.shard);
    let runtime = shared.runtime.clone();
    let stop = StopSignals {
        cancel: cancel.clone(),
        abandon: shared.abandon.clone(),
    };
    let prepare = runtime.prepare(spec, &stop);
    tokio::pin!(prepare);
    let mut prepared: Option<Result<Prepared, Finished>> = None;
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    let mut go = go;
    let start = loop {
        tokio::select! {
            ready = &mut prepare, if prepared.is_none() => {
                if let Err(finished) = &ready {
                    tracing::debug!(run_id = %run_id, outcome = ?finished.outcome, "preparation failed; reporting it if the run gets its go");
                }
                prepared = Some(ready);
            }
            decision = &mut go => break decision.unwrap_or(false),
            _ = cancel.cancelled() => break false,
            _ = shared.abandon.cancelled() => break false,
            _ = &mut deadline => {
                tracing::warn!(run_id = %run_id, waited = ?wait, "no go from the scheduler in time; dropping the prepared run");
                break false;
            }
        }
    };

    if !start {
        shared.offered().remove(&run_id);
        // Stops a pull still in progress; a create in progress finishes and is discarded.
        cancel.cancel();
        let prepared = match prepared {
            Some(prepared) => prepared,
            None => prepare.await,
        };
        if let Ok(prepared) = prepared {
            runtime.discard(prepared).await;
        }
        tracing::info!(run_id = %run_id, "run withdrawn before its start: nothing ran");
        shared.metrics.runs_withdrawn.inc();
        drop(slot);
        return;
    }

    let log = LiveLog::default();
    {
        let mut running = shared.running();
        running.insert(
            run_id.clone(),
            Running {
                cancel: cancel.clone(),
                log: log.clone(),
                shard,
            },
        );
        shared.offered().remove(&run_id);
    }
    tracing::info!(run_id = %run_id, shard, "run started");
    shared.metrics.runs_started.inc();
    let prepared = match prepared {
        Some(prepared) => prepared,
        // The go came first: start as soon as the preparation is done.
        None => prepare.await,
    };
    let finished = match prepared {
        Ok(prepared) => runtime.start(prepared, stop.clone(), log).await,
        Err(finished) => finished,
    };
    finish(&shared, run_id, shard, finished, slot).await;
}

/// Follows a run a previous start of this worker left running, found by reconcile.
pub fn resume(shared: &Shared, prepared: Prepared) {
    let (run_id, shard) = (prepared.spec.run_id.clone(), prepared.spec.shard);
    // It runs whether or not the slots were since reduced: a slot is held for it regardless.
    let slot = shared.slots.reserve_even_if_full();
    let cancel = CancellationToken::new();
    let log = LiveLog::default();
    shared.running().insert(
        run_id.clone(),
        Running {
            cancel: cancel.clone(),
            log: log.clone(),
            shard,
        },
    );
    let stop = StopSignals {
        cancel,
        abandon: shared.abandon.clone(),
    };
    let task_shared = shared.clone();
    shared.runs.spawn(async move {
        tracing::info!(run_id = %run_id, shard, "run re-attached");
        task_shared.metrics.runs_reattached.inc();
        let finished = task_shared.runtime.resume(prepared, stop, log).await;
        finish(&task_shared, run_id, shard, finished, slot).await;
    });
}

/// Queues the report of a run that ended while no worker watched it (found by reconcile):
/// sent on every stream at its next heartbeat until a scheduler acknowledges it.
pub fn ended_while_away(shared: &Shared, run_id: String, shard: u32, finished: Finished) {
    shared.unacked().insert(
        run_id.clone(),
        Report {
            run_id,
            shard,
            finished,
        },
    );
}

/// Frees the run's slot and sends its report to every scheduler stream (the owner of its
/// shard records it); it stays unacknowledged, and is re-sent, until one confirms it.
async fn finish(shared: &Shared, run_id: String, shard: u32, finished: Finished, slot: SlotGuard) {
    tracing::info!(run_id = %run_id, shard, outcome = ?finished.outcome, "run ended");
    shared
        .metrics
        .runs_finished
        .get_or_create(&EndLabels::of(finished.outcome))
        .inc();
    shared.running().remove(&run_id);
    drop(slot);
    let report = Report {
        run_id: run_id.clone(),
        shard,
        finished,
    };
    shared.unacked().insert(run_id.clone(), report.clone());
    let outboxes: Vec<_> = shared.outboxes().values().cloned().collect();
    let mut delivered = false;
    for outbox in outboxes {
        delivered |= outbox.send(report.clone()).await.is_ok();
    }
    if !delivered {
        tracing::warn!(run_id = %run_id, "report queued: no scheduler stream is up; it is re-sent when one connects");
    }
}
