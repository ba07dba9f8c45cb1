//! Dispatch: the scheduler's side of `WorkerService`. Holds the runs of owned shards that wait
//! for a worker, offers them to workers that granted credit (scheduled runs a short look-ahead
//! before their fire, so the worker prepares them; queued runs at once), fires due runs in
//! batches (the fire starts a run a worker holds prepared), turns acks into conditional
//! `queued → running` updates (a lost race means the worker must not start), follows
//! heartbeats, records reports, and fails runs whose worker went silent (`worker_lost`).
//!
//! Hand-written because dispatch is our core. It never decides *when* a run fires (that is the
//! engine's), never writes for a shard without that shard's lease, and never writes at all
//! while the node's lease is not valid (I8). Every store call on the hot path is one batch
//! across shards, so a busy second costs a few transactions, not a few per run.

mod assign;
mod batch;
mod fire;
mod logs;
mod queue;
mod session;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use chrono::{DateTime, Utc};
use kairos_domain::{RunId, ShardId};
use kairos_proto::v1::{SchedulerMessage, scheduler_message};
use kairos_store::{LeasedRun, SchedulerStore, ShardLease};
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::Status;

use crate::{coordinator::Coordinator, metrics::Metrics};

/// Messages buffered toward one worker.
const WORKER_BUFFER: usize = 4096;
/// Acks and reports buffered toward the store batches.
const BATCH_BUFFER: usize = 65_536;

#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Shared secret workers present (`KAIROS_WORKER_TOKEN`).
    pub worker_token: String,
    /// A running run whose worker sent no heartbeat for this long fails with `worker_lost`.
    pub lost_after: Duration,
    /// An assignment not acked within this long (after its fire) goes back to the queue.
    pub ack_timeout: Duration,
    /// How long before its fire a scheduled run is offered, so that a worker prepares it (pulls
    /// the image, creates the container) and the fire only has to start it. Zero turns
    /// offering ahead off.
    pub lookahead: Duration,
}

#[derive(Debug)]
struct Session {
    worker_id: String,
    credit: u32,
    /// Images the worker has (its last credit said so): runs of these images go there first.
    images: HashSet<String>,
    tx: mpsc::Sender<Result<SchedulerMessage, Status>>,
}

/// A run offered to a worker, waiting for its ack (or, offered ahead, for its fire).
#[derive(Debug)]
struct Awaiting {
    run: LeasedRun,
    session: u64,
    sent_at: Instant,
    /// Offered ahead of its fire: the fire starts it on the worker if the worker accepted.
    upcoming: bool,
    /// The worker accepted the upcoming offer: it holds the run prepared.
    accepted: bool,
    /// In the firing batch being written, on this worker: nothing else may decide it.
    firing: bool,
    /// The worker acked and the ack batch decides: neither requeue nor offer it again.
    acking: bool,
}

#[derive(Debug)]
struct Running {
    run: LeasedRun,
    /// The stream of the worker running it; `None` for a run found running on a claim.
    session: Option<u64>,
    last_seen: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// Leases of the shards this node owns, to record reports of runs it did not dispatch.
    leases: HashMap<ShardId, ShardLease>,
    next_session: u64,
    sessions: HashMap<u64, Session>,
    /// Queued runs waiting for a worker with credit.
    ready: queue::RunQueue,
    /// Scheduled runs to offer before their fire.
    upcoming: queue::RunQueue,
    /// Scheduled runs whose fire is due, waiting for the next firing batch.
    due: queue::RunQueue,
    awaiting: HashMap<RunId, Awaiting>,
    running: HashMap<RunId, Running>,
}

/// An ack on its way to the ack batch.
#[derive(Debug)]
struct AckIn {
    session: u64,
    run: RunId,
    accept: bool,
}

/// A report on its way to the report batch.
#[derive(Debug)]
struct ReportIn {
    session: u64,
    report: kairos_proto::v1::worker_message::Report,
}

/// Shared handle to the dispatcher; the gRPC service and the engine both hold one.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    state: Arc<Mutex<State>>,
    /// Wakes the assigner: runs or credit to pair up.
    wake: Arc<Notify>,
    /// Wakes the firer: due runs to write.
    fire_wake: Arc<Notify>,
    acks: mpsc::Sender<AckIn>,
    reports: mpsc::Sender<ReportIn>,
    live_logs: mpsc::Sender<kairos_proto::v1::worker_message::LogTail>,
    inboxes: Arc<Mutex<Option<Inboxes>>>,
    store: Arc<dyn SchedulerStore>,
    config: Arc<DispatchConfig>,
    metrics: Metrics,
}

/// The receiving ends of the ack and report batches, taken once by `run`.
#[derive(Debug)]
struct Inboxes {
    acks: mpsc::Receiver<AckIn>,
    reports: mpsc::Receiver<ReportIn>,
    live_logs: mpsc::Receiver<kairos_proto::v1::worker_message::LogTail>,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn SchedulerStore>, config: DispatchConfig, metrics: Metrics) -> Self {
        let (acks, acks_rx) = mpsc::channel(BATCH_BUFFER);
        let (reports, reports_rx) = mpsc::channel(BATCH_BUFFER);
        let (live_logs, live_logs_rx) = mpsc::channel(BATCH_BUFFER);
        Self {
            state: Arc::default(),
            wake: Arc::default(),
            fire_wake: Arc::default(),
            acks,
            reports,
            live_logs,
            inboxes: Arc::new(Mutex::new(Some(Inboxes {
                acks: acks_rx,
                reports: reports_rx,
                live_logs: live_logs_rx,
            }))),
            store,
            config: Arc::new(config),
            metrics,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The look-ahead at which the engine announces upcoming runs.
    pub fn lookahead(&self) -> Duration {
        self.config.lookahead
    }

    /// Adds queued runs of an owned shard to the ready queue (runs already known are ignored).
    pub fn enqueue(
        &self,
        lease: &ShardLease,
        runs: impl IntoIterator<Item = (RunId, DateTime<Utc>)>,
    ) {
        let mut state = self.state();
        for (id, fire_time) in runs {
            let known = state.awaiting.contains_key(&id)
                || state.running.contains_key(&id)
                || state.ready.contains(&id)
                || state.due.contains(&id);
            if !known {
                state.ready.push_back(leased(lease, id, fire_time));
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    /// A queued run announced by the API (execute now, trigger): offered at once if its shard
    /// is ours. Answers whether it was.
    pub fn enqueue_announced(&self, shard: ShardId, run: RunId, fire_time: DateTime<Utc>) -> bool {
        let lease = self.state().leases.get(&shard).cloned();
        match lease {
            Some(lease) => {
                self.enqueue(&lease, [(run, fire_time)]);
                true
            }
            None => false,
        }
    }

    /// Scheduled runs of an owned shard whose fire is within the look-ahead: offered ahead to
    /// a worker with credit, if there is one before the fire.
    pub fn upcoming(
        &self,
        lease: &ShardLease,
        runs: impl IntoIterator<Item = (RunId, DateTime<Utc>)>,
    ) {
        if self.config.lookahead.is_zero() {
            return;
        }
        let mut state = self.state();
        let mut added = false;
        for (id, fire_time) in runs {
            if !state.awaiting.contains_key(&id) && !state.due.contains(&id) {
                state.upcoming.push_back(leased(lease, id, fire_time));
                added = true;
            }
        }
        drop(state);
        if added {
            self.wake.notify_one();
        }
    }

    /// Due scheduled runs of an owned shard: written by the next firing batch.
    pub fn fire(&self, lease: &ShardLease, runs: impl IntoIterator<Item = (RunId, DateTime<Utc>)>) {
        let mut state = self.state();
        // An entry left in `upcoming` is skipped there once its fire time has passed.
        for (id, fire_time) in runs {
            state.due.push_back(leased(lease, id, fire_time));
        }
        drop(state);
        self.fire_wake.notify_one();
    }

    /// Tracks runs found `running` when a shard was claimed: their worker must heartbeat soon.
    pub fn adopt_running(
        &self,
        lease: &ShardLease,
        runs: impl IntoIterator<Item = (RunId, DateTime<Utc>)>,
    ) {
        let mut state = self.state();
        for (id, fire_time) in runs {
            state.running.entry(id).or_insert(Running {
                run: leased(lease, id, fire_time),
                session: None,
                last_seen: Instant::now(),
            });
        }
    }

    /// A cancel was asked for a running run of an owned shard: its worker is told to stop it
    /// (and reports it `cancelled`). A run found running on a claim, whose worker is not
    /// known yet, is named to every connected worker; the others ignore it.
    pub async fn cancel_running(&self, shard: ShardId, run: RunId) {
        let targets: Vec<mpsc::Sender<Result<SchedulerMessage, Status>>> = {
            let state = self.state();
            if !state.leases.contains_key(&shard) {
                return;
            }
            let Some(running) = state.running.get(&run) else {
                return;
            };
            match running.session {
                Some(session) => state
                    .sessions
                    .get(&session)
                    .map(|s| s.tx.clone())
                    .into_iter()
                    .collect(),
                None => state.sessions.values().map(|s| s.tx.clone()).collect(),
            }
        };
        tracing::info!(run_id = %run, shard = shard.get(), "asking the worker to stop a cancelled run");
        let message = SchedulerMessage {
            kind: Some(scheduler_message::Kind::Cancel(scheduler_message::Cancel {
                run_id: run.to_string(),
            })),
        };
        for tx in targets {
            let _ = tx.send(Ok(message.clone())).await;
        }
    }

    /// A shard this node now owns (its fence is taken).
    pub fn own_shard(&self, lease: &ShardLease) {
        self.state().leases.insert(lease.shard(), lease.clone());
    }

    /// Forgets everything of a shard this node no longer owns. Workers holding its runs
    /// prepared are told to drop them (the next owner offers them again).
    pub fn drop_shard(&self, shard: ShardId) {
        let mut state = self.state();
        state.leases.remove(&shard);
        state.ready.drop_shard(shard);
        state.upcoming.drop_shard(shard);
        state.due.drop_shard(shard);
        let gone: Vec<RunId> = state
            .awaiting
            .iter()
            .filter(|(_, a)| a.run.lease.shard() == shard)
            .map(|(id, _)| *id)
            .collect();
        let mut withdraw = Vec::new();
        for id in gone {
            if let Some(a) = state.awaiting.remove(&id)
                && a.accepted
                && let Some(s) = state.sessions.get(&a.session)
            {
                withdraw.push((s.tx.clone(), id));
            }
        }
        state.running.retain(|_, r| r.run.lease.shard() != shard);
        drop(state);
        for (tx, id) in withdraw {
            // try_send: this runs on the engine's task, which must not wait on a worker.
            let _ = tx.try_send(Ok(ack_result(id, false)));
        }
    }

    /// Assigns, fires, acks and records until `stop`; also sweeps lost runs. The firing batch
    /// writes only while `coordinator` says the node's lease is valid (I8).
    pub async fn run(self, coordinator: Arc<dyn Coordinator>, stop: CancellationToken) {
        let Some(inboxes) = self
            .inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            tracing::error!("dispatcher started twice; the second run does nothing");
            return;
        };
        let tasks = TaskTracker::new();
        tasks.spawn(self.clone().fire_loop(coordinator, stop.clone()));
        tasks.spawn(self.clone().ack_loop(inboxes.acks, stop.clone()));
        tasks.spawn(self.clone().report_loop(inboxes.reports, stop.clone()));
        tasks.spawn(self.clone().log_loop(inboxes.live_logs, stop.clone()));
        tasks.close();
        self.assign_loop(stop).await;
        tasks.wait().await;
    }

    /// Sends `message` to a session, if it is still connected.
    async fn send(&self, session: u64, message: SchedulerMessage) {
        let tx = self.state().sessions.get(&session).map(|s| s.tx.clone());
        if let Some(tx) = tx {
            let _ = tx.send(Ok(message)).await;
        }
    }
}

fn leased(lease: &ShardLease, id: RunId, fire_time: DateTime<Utc>) -> LeasedRun {
    LeasedRun {
        lease: lease.clone(),
        id,
        fire_time: Some(fire_time),
    }
}

/// Whether the worker may start the run it acked (or holds prepared).
fn ack_result(run: RunId, start: bool) -> SchedulerMessage {
    SchedulerMessage {
        kind: Some(scheduler_message::Kind::AckResult(
            scheduler_message::AckResult {
                run_id: run.to_string(),
                start,
            },
        )),
    }
}
