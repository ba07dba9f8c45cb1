//! Dispatch: the scheduler's side of `WorkerService`. Holds the ready queue of `queued` runs
//! of owned shards, hands them to workers that granted credit, turns a worker's ack into the
//! conditional `queued → running` update (a lost race means the worker must not start),
//! follows heartbeats, records reports, and fails runs whose worker went silent
//! (`worker_lost`).
//!
//! Hand-written because dispatch is our core. It never decides *when* a run fires (that is the
//! engine's), and it never writes for a shard without that shard's lease.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::Stream;
use kairos_domain::{FailureReason, RunId, ShardId};
use kairos_proto::v1::{
    SchedulerMessage, WorkerMessage, scheduler_message, worker_message,
    worker_service_server::WorkerService,
};
use kairos_store::{Offer, RunOutcome, SchedulerStore, ShardLease, TerminalState};
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;

/// Messages buffered toward one worker.
const WORKER_BUFFER: usize = 1024;
/// Most assignments loaded from the store in one round trip.
const ASSIGN_BATCH: usize = 256;

#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Shared secret workers present (`KAIROS_WORKER_TOKEN`).
    pub worker_token: String,
    /// A running run whose worker sent no heartbeat for this long fails with `worker_lost`.
    pub lost_after: Duration,
    /// An assignment not acked within this long goes back to the ready queue.
    pub ack_timeout: Duration,
}

#[derive(Debug)]
struct Session {
    credit: u32,
    tx: mpsc::Sender<Result<SchedulerMessage, Status>>,
}

#[derive(Debug)]
struct Awaiting {
    lease: ShardLease,
    session: u64,
    sent_at: Instant,
    /// The worker acked and the store decides: neither requeue nor offer it again.
    acking: bool,
}

#[derive(Debug)]
struct Running {
    lease: ShardLease,
    last_seen: Instant,
}

/// The `queued` runs waiting for a worker, in order, with an id set so that adding a run
/// already waiting costs O(1) instead of a scan (the planner re-offers every queued run it sees).
#[derive(Debug, Default)]
struct ReadyQueue {
    order: VecDeque<(ShardLease, RunId)>,
    ids: HashSet<RunId>,
}

impl ReadyQueue {
    fn contains(&self, run: &RunId) -> bool {
        self.ids.contains(run)
    }

    fn push_back(&mut self, lease: ShardLease, run: RunId) {
        if self.ids.insert(run) {
            self.order.push_back((lease, run));
        }
    }

    fn push_front(&mut self, lease: ShardLease, run: RunId) {
        if self.ids.insert(run) {
            self.order.push_front((lease, run));
        }
    }

    fn pop_front(&mut self) -> Option<(ShardLease, RunId)> {
        let entry = self.order.pop_front()?;
        self.ids.remove(&entry.1);
        Some(entry)
    }

    fn drop_shard(&mut self, shard: ShardId) {
        let ids = &mut self.ids;
        self.order.retain(|(lease, run)| {
            let keep = lease.shard() != shard;
            if !keep {
                ids.remove(run);
            }
            keep
        });
    }
}

#[derive(Debug, Default)]
struct State {
    /// Leases of the shards this node owns, to record reports of runs it did not dispatch.
    leases: HashMap<ShardId, ShardLease>,
    next_session: u64,
    sessions: HashMap<u64, Session>,
    ready: ReadyQueue,
    awaiting: HashMap<RunId, Awaiting>,
    running: HashMap<RunId, Running>,
}

/// Shared handle to the dispatcher; the gRPC service and the engine both hold one.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    store: Arc<dyn SchedulerStore>,
    config: Arc<DispatchConfig>,
    metrics: Metrics,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn SchedulerStore>, config: DispatchConfig, metrics: Metrics) -> Self {
        Self {
            state: Arc::default(),
            wake: Arc::default(),
            store,
            config: Arc::new(config),
            metrics,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds queued runs of an owned shard to the ready queue (duplicates are ignored).
    pub fn enqueue(&self, lease: &ShardLease, runs: impl IntoIterator<Item = RunId>) {
        let mut state = self.state();
        for run in runs {
            let known = state.awaiting.contains_key(&run)
                || state.running.contains_key(&run)
                || state.ready.contains(&run);
            if !known {
                state.ready.push_back(lease.clone(), run);
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Tracks runs found `running` when a shard was claimed: their worker must heartbeat soon.
    pub fn adopt_running(&self, lease: &ShardLease, runs: impl IntoIterator<Item = RunId>) {
        let mut state = self.state();
        for run in runs {
            state.running.entry(run).or_insert(Running {
                lease: lease.clone(),
                last_seen: Instant::now(),
            });
        }
    }

    /// A shard this node now owns (its fence is taken).
    pub fn own_shard(&self, lease: &ShardLease) {
        self.state().leases.insert(lease.shard(), lease.clone());
    }

    /// Forgets everything of a shard this node no longer owns.
    pub fn drop_shard(&self, shard: ShardId) {
        let mut state = self.state();
        state.leases.remove(&shard);
        state.ready.drop_shard(shard);
        state.awaiting.retain(|_, a| a.lease.shard() != shard);
        state.running.retain(|_, r| r.lease.shard() != shard);
    }

    /// Assigns ready runs to workers with credit until `stop`; also sweeps lost runs.
    pub async fn run(self, stop: CancellationToken) {
        let mut sweep = tokio::time::interval(Duration::from_millis(500));
        loop {
            self.assign_round().await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = sweep.tick() => self.sweep().await,
            }
        }
    }

    /// Pairs ready runs with credited sessions, loads their details in batches, and sends them.
    async fn assign_round(&self) {
        loop {
            let picked: Vec<(ShardLease, RunId, u64)> = {
                let mut state = self.state();
                let mut picked = Vec::new();
                let sessions: Vec<u64> = state
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.credit > 0)
                    .map(|(id, _)| *id)
                    .collect();
                'outer: for id in sessions {
                    while picked.len() < ASSIGN_BATCH {
                        let Some(session) = state.sessions.get_mut(&id) else {
                            continue 'outer;
                        };
                        if session.credit == 0 {
                            continue 'outer;
                        }
                        let Some((lease, run)) = state.ready.pop_front() else {
                            break 'outer;
                        };
                        if let Some(session) = state.sessions.get_mut(&id) {
                            session.credit -= 1;
                        }
                        // Awaiting from the moment it is picked: neither a planner scan nor an
                        // early ack can see it in between.
                        let entry = Awaiting {
                            lease: lease.clone(),
                            session: id,
                            sent_at: Instant::now(),
                            acking: false,
                        };
                        state.awaiting.insert(run, entry);
                        picked.push((lease, run, id));
                    }
                }
                picked
            };
            if picked.is_empty() {
                return;
            }
            self.send_assignments(picked).await;
        }
    }

    async fn send_assignments(&self, picked: Vec<(ShardLease, RunId, u64)>) {
        let mut by_shard: HashMap<ShardId, (ShardLease, Vec<(RunId, u64)>)> = HashMap::new();
        for (lease, run, session) in picked {
            by_shard
                .entry(lease.shard())
                .or_insert_with(|| (lease.clone(), Vec::new()))
                .1
                .push((run, session));
        }
        for (_, (lease, runs)) in by_shard {
            let ids: Vec<RunId> = runs.iter().map(|(r, _)| *r).collect();
            let details = match self.store.run_offers(&lease, &ids).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(shard = lease.shard().get(), error = %e, "cannot load assignments; requeueing");
                    let mut state = self.state();
                    for (run, session) in &runs {
                        state.awaiting.remove(run);
                        state.ready.push_back(lease.clone(), *run);
                        if let Some(s) = state.sessions.get_mut(session) {
                            s.credit += 1;
                        }
                    }
                    continue;
                }
            };
            let details: HashMap<RunId, Offer> =
                details.into_iter().map(|a| (a.run_id, a)).collect();
            for (run, session) in runs {
                let Some(assignment) = details.get(&run) else {
                    // No longer queued (cancelled, skipped, or taken): nothing to hand out.
                    let mut state = self.state();
                    state.awaiting.remove(&run);
                    if let Some(s) = state.sessions.get_mut(&session) {
                        s.credit += 1;
                    }
                    continue;
                };
                let tx = self.state().sessions.get(&session).map(|s| s.tx.clone());
                let sent = match tx {
                    Some(tx) => tx
                        .send(Ok(assignment_message(assignment, lease.shard())))
                        .await
                        .is_ok(),
                    None => false,
                };
                if !sent {
                    let mut state = self.state();
                    if state.awaiting.get(&run).is_some_and(|a| !a.acking) {
                        state.awaiting.remove(&run);
                        state.ready.push_front(lease.clone(), run);
                    }
                }
            }
        }
    }

    /// Fails runs whose worker went silent; requeues assignments never acked.
    async fn sweep(&self) {
        let now = Instant::now();
        let (lost, unacked) = {
            let mut state = self.state();
            let lost_after = self.config.lost_after;
            let lost: Vec<(RunId, ShardLease)> = state
                .running
                .iter()
                .filter(|(_, r)| now.duration_since(r.last_seen) > lost_after)
                .map(|(id, r)| (*id, r.lease.clone()))
                .collect();
            for (id, _) in &lost {
                state.running.remove(id);
            }
            let ack_timeout = self.config.ack_timeout;
            let unacked: Vec<RunId> = state
                .awaiting
                .iter()
                .filter(|(_, a)| !a.acking && now.duration_since(a.sent_at) > ack_timeout)
                .map(|(id, _)| *id)
                .collect();
            for id in &unacked {
                if let Some(a) = state.awaiting.remove(id) {
                    state.ready.push_back(a.lease, *id);
                }
            }
            (lost, unacked)
        };
        if !unacked.is_empty() {
            self.wake.notify_one();
        }
        let mut by_shard: HashMap<ShardId, (ShardLease, Vec<RunId>)> = HashMap::new();
        for (id, lease) in lost {
            by_shard
                .entry(lease.shard())
                .or_insert_with(|| (lease.clone(), Vec::new()))
                .1
                .push(id);
        }
        for (_, (lease, ids)) in by_shard {
            match self.store.fail_lost_runs(&lease, &ids).await {
                Ok(failed) => {
                    self.metrics.runs_lost.inc_by(failed.len() as u64);
                    tracing::warn!(
                        shard = lease.shard().get(),
                        runs = failed.len(),
                        "runs failed: their worker stopped heartbeating"
                    );
                }
                Err(e) => {
                    tracing::warn!(shard = lease.shard().get(), error = %e, "cannot fail lost runs")
                }
            }
        }
    }

    async fn on_ack(&self, session: u64, worker_id: &str, ack: worker_message::Ack) {
        let Ok(run) = ack.run_id.parse::<RunId>() else {
            return;
        };
        // The entry stays in `awaiting` until the ack is decided, so a planner scan that still
        // sees the run `queued` cannot offer it again meanwhile.
        let lease = {
            let mut state = self.state();
            match state.awaiting.get_mut(&run) {
                Some(awaiting) => {
                    awaiting.acking = true;
                    Some(awaiting.lease.clone())
                }
                None => None,
            }
        };
        let Some(lease) = lease else {
            // Not ours any more (its shard moved): tell the worker not to start it, so its
            // slot frees and the new owner's offer can be accepted.
            self.reply(session, &ack.run_id, false).await;
            return;
        };
        if !ack.accept {
            let mut state = self.state();
            state.awaiting.remove(&run);
            state.ready.push_front(lease, run);
            drop(state);
            self.wake.notify_one();
            return;
        }
        let start = match self.store.ack_run(&lease, run, worker_id).await {
            Ok(Some(_)) => {
                // Crash point for tests: the run is `running`, its worker was never told to start.
                fail::fail_point!("scheduler::after_ack", |_| std::process::abort());
                let mut state = self.state();
                state.awaiting.remove(&run);
                state.running.insert(
                    run,
                    Running {
                        lease: lease.clone(),
                        last_seen: Instant::now(),
                    },
                );
                self.metrics.runs_started.inc();
                true
            }
            Ok(None) => {
                self.state().awaiting.remove(&run);
                false
            }
            Err(e) => {
                tracing::warn!(run_id = %run, error = %e, "ack failed; the worker will not start the run");
                self.state().awaiting.remove(&run);
                false
            }
        };
        self.reply(session, &ack.run_id, start).await;
    }

    async fn reply(&self, session: u64, run_id: &str, start: bool) {
        let message = SchedulerMessage {
            kind: Some(scheduler_message::Kind::AckResult(
                scheduler_message::AckResult {
                    run_id: run_id.to_owned(),
                    start,
                },
            )),
        };
        let tx = self.state().sessions.get(&session).map(|s| s.tx.clone());
        if let Some(tx) = tx {
            let _ = tx.send(Ok(message)).await;
        }
    }

    async fn on_report(&self, session: u64, report: worker_message::Report) {
        let Ok(run) = report.run_id.parse::<RunId>() else {
            return;
        };
        let lease = {
            let mut state = self.state();
            let shard = u16::try_from(report.shard).ok().and_then(ShardId::new);
            state
                .running
                .remove(&run)
                .map(|r| r.lease)
                .or_else(|| shard.and_then(|s| state.leases.get(&s).cloned()))
        };
        let Some(lease) = lease else {
            // Reports go to every node; the one owning the run's shard records it.
            tracing::debug!(run_id = %run, "report for a shard this node does not own; ignored");
            return;
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
        };
        match self.store.finish_run(&lease, run, &outcome).await {
            Ok(done) => {
                // Crash point for tests: the end is recorded, the worker still holds its report.
                fail::fail_point!("scheduler::after_finish", |_| std::process::abort());
                if done.applied {
                    self.metrics.runs_finished.inc();
                    tracing::info!(run_id = %run, shard = lease.shard().get(), state = %done.state, "run finished");
                }
                let ack = SchedulerMessage {
                    kind: Some(scheduler_message::Kind::ReportAck(
                        scheduler_message::ReportAck {
                            run_id: run.to_string(),
                        },
                    )),
                };
                let tx = self.state().sessions.get(&session).map(|s| s.tx.clone());
                if let Some(tx) = tx {
                    let _ = tx.send(Ok(ack)).await;
                }
            }
            Err(e) => {
                // Not acked: the worker re-sends the report, to whichever node owns the shard then.
                tracing::warn!(run_id = %run, error = %e, "cannot record a run's end yet; the worker will re-send it");
            }
        }
    }

    fn heartbeat(&self, run_ids: &[String]) {
        let now = Instant::now();
        let mut state = self.state();
        for id in run_ids {
            if let Some(r) = id
                .parse::<RunId>()
                .ok()
                .and_then(|id| state.running.get_mut(&id))
            {
                r.last_seen = now;
            }
        }
    }

    fn set_credit(&self, session: u64, slots: u32) {
        if let Some(s) = self.state().sessions.get_mut(&session) {
            s.credit = slots;
        }
        self.wake.notify_one();
    }

    fn close_session(&self, session: u64) {
        let mut state = self.state();
        state.sessions.remove(&session);
        let back: Vec<RunId> = state
            .awaiting
            .iter()
            .filter(|(_, a)| a.session == session && !a.acking)
            .map(|(id, _)| *id)
            .collect();
        for id in back {
            if let Some(a) = state.awaiting.remove(&id) {
                state.ready.push_front(a.lease, id);
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    async fn serve_session(
        self,
        mut inbound: Streaming<WorkerMessage>,
        tx: mpsc::Sender<Result<SchedulerMessage, Status>>,
    ) {
        let session = {
            let mut state = self.state();
            state.next_session += 1;
            state.next_session
        };
        let mut worker_id = String::new();
        while let Ok(Some(message)) = inbound.message().await {
            let Some(kind) = message.kind else { continue };
            match kind {
                worker_message::Kind::Hello(hello) => {
                    worker_id = hello.worker_id.clone();
                    tracing::info!(worker_id = %worker_id, slots = hello.slots, "worker connected");
                    self.state().sessions.insert(
                        session,
                        Session {
                            credit: 0,
                            tx: tx.clone(),
                        },
                    );
                }
                worker_message::Kind::Credit(credit) => self.set_credit(session, credit.slots),
                worker_message::Kind::Ack(ack) => {
                    let this = self.clone();
                    let id = worker_id.clone();
                    tokio::spawn(async move { this.on_ack(session, &id, ack).await });
                }
                worker_message::Kind::Heartbeat(hb) => self.heartbeat(&hb.run_ids),
                worker_message::Kind::Report(report) => {
                    let this = self.clone();
                    tokio::spawn(async move { this.on_report(session, report).await });
                }
                // The live tail of a running run: not stored yet (the lead's scheduler side).
                worker_message::Kind::LogTail(_) => {}
            }
        }
        tracing::info!(worker_id = %worker_id, "worker disconnected");
        self.close_session(session);
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

fn assignment_message(a: &Offer, shard: ShardId) -> SchedulerMessage {
    let assignment = scheduler_message::Assignment {
        run_id: a.run_id.to_string(),
        job_id: a.job_id.to_string(),
        image: a.image.as_str().to_owned(),
        command: a.command.args().to_vec(),
        env: a.env.vars().clone(),
        memory_mb: a.memory.mb() as i32,
        timeout_seconds: a.timeout.seconds() as i32,
        fire_time: Some(prost_types::Timestamp {
            seconds: a.fire_time.timestamp(),
            nanos: a.fire_time.timestamp_subsec_nanos() as i32,
        }),
        attempt: a.attempt as i32,
        shard: u32::from(shard.get()),
        // Ahead-of-fire assignments, registry credentials and the tenant id are not offered yet.
        upcoming: false,
        registry_auth: None,
        tenant_id: String::new(),
    };
    SchedulerMessage {
        kind: Some(scheduler_message::Kind::Assignment(assignment)),
    }
}

/// Compares the presented worker token with the configured one in constant time.
fn token_matches(configured: &str, presented: &str) -> bool {
    configured.len() == presented.len()
        && configured
            .bytes()
            .zip(presented.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

type OutStream = std::pin::Pin<Box<dyn Stream<Item = Result<SchedulerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerService for Dispatcher {
    type ConnectStream = OutStream;

    async fn connect(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<OutStream>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !token_matches(&self.config.worker_token, presented) {
            return Err(Status::unauthenticated("a valid worker token is required"));
        }
        let (tx, rx) = mpsc::channel(WORKER_BUFFER);
        tokio::spawn(self.clone().serve_session(request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
