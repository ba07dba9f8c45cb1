//! Workers' acks and reports, gathered into store batches: whatever arrived while the previous
//! batch was being written goes into the next one, so the cost per run falls as load rises
//! (group commit) and an idle system still answers at once. An ack is answered only after its
//! conditional update committed (start) or lost its race (do not start); a report is
//! acknowledged only after its end is recorded, so the worker re-sends it until then. It
//! never answers start for a run the store did not move to `running`.

use std::collections::HashSet;

use kairos_domain::{FailureReason, RunId, ShardId};
use kairos_proto::v1::{SchedulerMessage, scheduler_message};
use kairos_store::{LeasedRun, RunAck, RunOutcome, RunReport, TerminalState};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{AckIn, Dispatcher, ReportIn, Running, ack_result};

/// Most acks or reports written in one transaction.
const BATCH: usize = 2048;

/// Waits for the first message, then takes whatever else is already there (up to `BATCH`).
async fn gather<T>(rx: &mut mpsc::Receiver<T>, stop: &CancellationToken) -> Option<Vec<T>> {
    let first = tokio::select! {
        _ = stop.cancelled() => return None,
        m = rx.recv() => m?,
    };
    let mut batch = vec![first];
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(m) => batch.push(m),
            Err(_) => break,
        }
    }
    Some(batch)
}

impl Dispatcher {
    pub(super) async fn ack_loop(self, mut rx: mpsc::Receiver<AckIn>, stop: CancellationToken) {
        while let Some(batch) = gather(&mut rx, &stop).await {
            self.acks_batch(batch).await;
        }
    }

    pub(super) async fn report_loop(
        self,
        mut rx: mpsc::Receiver<ReportIn>,
        stop: CancellationToken,
    ) {
        while let Some(batch) = gather(&mut rx, &stop).await {
            self.reports_batch(batch).await;
        }
    }

    async fn acks_batch(&self, batch: Vec<AckIn>) {
        let mut replies: Vec<(u64, RunId, bool)> = Vec::new();
        let mut to_store: Vec<(u64, RunAck)> = Vec::new();
        let mut requeued = false;
        {
            let mut state = self.state();
            for ack in batch {
                let worker_id = state
                    .sessions
                    .get(&ack.session)
                    .map(|s| s.worker_id.clone());
                let Some(a) = state.awaiting.get_mut(&ack.run) else {
                    // Not ours any more (its shard moved, or the offer was withdrawn): tell the
                    // worker not to start it, so its slot frees and a new offer can be taken.
                    replies.push((ack.session, ack.run, false));
                    continue;
                };
                if a.session != ack.session {
                    replies.push((ack.session, ack.run, false));
                    continue;
                }
                if a.acking || a.firing {
                    continue; // a repeated ack: the decision under way answers it
                }
                if !ack.accept {
                    if let Some(a) = state.awaiting.remove(&ack.run)
                        && !a.upcoming
                    {
                        state.ready.push_front(a.run);
                        requeued = true;
                    }
                    continue;
                }
                if a.upcoming {
                    a.accepted = true; // held prepared: the fire starts it
                    continue;
                }
                let Some(worker_id) = worker_id else {
                    continue; // the session closed: its offers went back in line
                };
                a.acking = true;
                to_store.push((
                    ack.session,
                    RunAck {
                        run: a.run.clone(),
                        worker_id,
                    },
                ));
            }
        }
        if requeued {
            self.wake.notify_one();
        }
        if !to_store.is_empty() {
            let acks: Vec<RunAck> = to_store.iter().map(|(_, a)| a.clone()).collect();
            let started: HashSet<RunId> = match self.store.ack_runs(&acks).await {
                Ok(acked) => {
                    if !acked.started.is_empty() {
                        // Crash point for tests: runs are `running`, their workers were never
                        // told to start.
                        fail::fail_point!("scheduler::after_ack", |_| std::process::abort());
                    }
                    acked.started.into_iter().collect()
                }
                Err(e) => {
                    tracing::warn!(acks = acks.len(), error = %e, "acks failed; their workers will not start the runs");
                    HashSet::new()
                }
            };
            let now = Instant::now();
            let mut state = self.state();
            for (session, ack) in to_store {
                let id = ack.run.id;
                state.awaiting.remove(&id);
                let start = started.contains(&id);
                if start {
                    state.running.insert(
                        id,
                        Running {
                            run: ack.run,
                            session: Some(session),
                            last_seen: now,
                        },
                    );
                    self.metrics.runs_started.inc();
                }
                replies.push((session, id, start));
            }
        }
        for (session, run, start) in replies {
            self.send(session, ack_result(run, start)).await;
        }
    }

    async fn reports_batch(&self, batch: Vec<ReportIn>) {
        let mut reports: Vec<(u64, RunReport)> = Vec::new();
        {
            let mut state = self.state();
            for ReportIn { session, report } in batch {
                let Ok(id) = report.run_id.parse::<RunId>() else {
                    continue;
                };
                let shard = u16::try_from(report.shard).ok().and_then(ShardId::new);
                let run = state.running.remove(&id).map(|r| r.run).or_else(|| {
                    shard
                        .and_then(|s| state.leases.get(&s).cloned())
                        .map(|lease| LeasedRun {
                            lease,
                            id,
                            fire_time: None,
                        })
                });
                let Some(run) = run else {
                    // Reports go to every node; the one owning the run's shard records it.
                    tracing::debug!(run_id = %id, "report for a shard this node does not own; ignored");
                    continue;
                };
                let state = match (report.state.as_str(), report.reason.as_deref()) {
                    ("succeeded", _) => TerminalState::Succeeded,
                    ("cancelled", _) => TerminalState::Cancelled,
                    (_, reason) => TerminalState::Failed(failure_reason(reason)),
                };
                let outcome = RunOutcome {
                    state,
                    exit_code: report.exit_code,
                    log_tail: report.log_tail,
                    log_truncated: report.log_truncated,
                    total_bytes: report.total_bytes,
                };
                reports.push((session, RunReport { run, outcome }));
            }
        }
        if reports.is_empty() {
            return;
        }
        let asked: Vec<RunReport> = reports.iter().map(|(_, r)| r.clone()).collect();
        let finished = match self.store.finish_runs(&asked).await {
            Ok(finished) => finished,
            Err(e) => {
                // Not acked: the workers re-send, to whichever node owns the shard then.
                tracing::warn!(reports = asked.len(), error = %e, "cannot record run ends yet; the workers will re-send them");
                return;
            }
        };
        // Crash point for tests: the ends are recorded, the workers still hold their reports.
        fail::fail_point!("scheduler::after_finish", |_| std::process::abort());
        let mut recorded = HashSet::new();
        for (id, result) in finished.results {
            match result {
                Ok(done) => {
                    if done.applied {
                        self.metrics.runs_finished.inc();
                        tracing::debug!(run_id = %id, state = %done.state, "run finished");
                    }
                    recorded.insert(id);
                }
                Err(e) => {
                    tracing::warn!(run_id = %id, error = %e, "cannot record a run's end; the worker will re-send it");
                }
            }
        }
        for (session, report) in reports {
            if recorded.contains(&report.run.id) {
                self.send(session, report_ack(report.run.id)).await;
            }
        }
    }
}

fn report_ack(run: RunId) -> SchedulerMessage {
    SchedulerMessage {
        kind: Some(scheduler_message::Kind::ReportAck(
            scheduler_message::ReportAck {
                run_id: run.to_string(),
            },
        )),
    }
}

fn failure_reason(reason: Option<&str>) -> FailureReason {
    match reason {
        Some("oom_killed") => FailureReason::OomKilled,
        Some("timed_out") => FailureReason::TimedOut,
        Some("image_pull_failed") => FailureReason::ImagePullFailed,
        Some("start_failed") => FailureReason::StartFailed,
        Some("worker_lost") => FailureReason::WorkerLost,
        _ => FailureReason::ExitCode,
    }
}
