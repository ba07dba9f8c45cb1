//! One worker ↔ scheduler stream: grants credits (free slots and cached images), acks
//! assignments, passes the scheduler's go or no-go to the run's lifecycle, heartbeats running
//! runs, sends their live output tail, and delivers reports — keeping undelivered reports
//! across reconnects.
//!
//! Dispatch over this stream is the scheduler's; this side never decides what runs, only
//! whether it has room, and it never starts a run the scheduler did not confirm.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use chrono::{DateTime, Utc};
use kairos_proto::v1::{
    SchedulerMessage, WorkerMessage, scheduler_message, worker_message,
    worker_service_client::WorkerServiceClient,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Request, metadata::MetadataValue, transport::Endpoint};

use crate::{
    WorkerConfig, lifecycle,
    logs::LiveLog,
    metrics::Metrics,
    runtime::{Finished, Outcome, RegistryAuth, RunSpec, Runtime},
    slots::Slots,
};

/// Messages buffered toward one scheduler before senders wait.
const OUTBOUND_BUFFER: usize = 256;
/// Reports buffered per scheduler while its stream is down.
const REPORT_BUFFER: usize = 1024;
/// How long a stopping stream waits for the scheduler to confirm the final reports (within
/// the agent's flush time).
const FINAL_ACK_WAIT: Duration = Duration::from_secs(4);
/// How often a running run's live output tail is sent, when it changed.
const LIVE_TAIL_EVERY: Duration = Duration::from_secs(1);

/// A run executing on this worker (the scheduler confirmed it, or it was re-attached).
#[derive(Debug, Clone)]
pub struct Running {
    pub cancel: CancellationToken,
    pub log: LiveLog,
    pub shard: u32,
}

/// What the streams of one worker share.
#[derive(Debug, Clone)]
pub struct Shared {
    pub config: Arc<WorkerConfig>,
    pub runtime: Arc<dyn Runtime>,
    pub slots: Slots,
    pub metrics: Metrics,
    /// Runs being prepared or executing; owned here so shutdown can wait for them.
    pub runs: TaskTracker,
    /// Cancelled when the worker starts draining: no new credits.
    pub draining: CancellationToken,
    /// Cancelled when the drain grace ran out: running runs are abandoned.
    pub abandon: CancellationToken,
    /// Every run executing on this worker, whichever stream started it: heartbeats and live
    /// tails name them all on every stream, and a cancel from any scheduler reaches them.
    /// Lock order: `running` before `offered`.
    pub running: Arc<Mutex<HashMap<String, Running>>>,
    /// The report outbox of every scheduler stream. A run's report goes to all of them: the
    /// shard may have moved to another node since the run started.
    pub outboxes: Arc<Mutex<HashMap<String, mpsc::Sender<Report>>>>,
    /// Reports not yet confirmed by a scheduler (`ReportAck`): named in heartbeats and re-sent
    /// on every heartbeat tick, so a run's end survives handoffs and broken streams.
    pub unacked: Arc<Mutex<HashMap<String, Report>>>,
    /// Runs acked on some stream and waiting for that scheduler's go (being prepared or
    /// prepared), with the token a `Cancel` fires: the same run offered by two nodes (a
    /// shard handoff) is accepted on one stream only.
    pub offered: Arc<Mutex<HashMap<String, CancellationToken>>>,
}

impl Shared {
    pub(crate) fn running(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn outboxes(&self) -> MutexGuard<'_, HashMap<String, mpsc::Sender<Report>>> {
        self.outboxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn offered(&self) -> MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.offered.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn unacked(&self) -> MutexGuard<'_, HashMap<String, Report>> {
        self.unacked.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub run_id: String,
    pub shard: u32,
    pub finished: Finished,
}

/// Keeps a stream to the scheduler at `url` until `stop`, reconnecting with backoff.
pub async fn maintain(url: String, shared: Shared, stop: CancellationToken) {
    let (report_tx, mut report_rx) = mpsc::channel::<Report>(REPORT_BUFFER);
    shared.outboxes().insert(url.clone(), report_tx);
    let mut backoff = Duration::from_millis(100);
    loop {
        match session(&url, &shared, &stop, &mut report_rx).await {
            Ok(()) => {
                shared.outboxes().remove(&url);
                return;
            }
            Err(e) => {
                tracing::warn!(scheduler = %url, error = %e, retry_in = ?backoff, "scheduler stream broke")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {
                shared.outboxes().remove(&url);
                return;
            }
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream: {0}")]
    Stream(#[from] tonic::Status),
    #[error("the scheduler closed the stream")]
    Closed,
    #[error("invalid endpoint or token")]
    Config,
}

fn message(kind: worker_message::Kind) -> WorkerMessage {
    WorkerMessage { kind: Some(kind) }
}

async fn session(
    url: &str,
    shared: &Shared,
    stop: &CancellationToken,
    report_rx: &mut mpsc::Receiver<Report>,
) -> Result<(), SessionError> {
    let channel = Endpoint::from_shared(url.to_owned())
        .map_err(|_| SessionError::Config)?
        .connect()
        .await?;
    let (out_tx, out_rx) = mpsc::channel::<WorkerMessage>(OUTBOUND_BUFFER);
    let config = &shared.config;
    let hello = worker_message::Hello {
        worker_id: config.worker_id.clone(),
        slots: config.slots,
        cached_images: shared.runtime.cached_images(),
        labels: Default::default(),
    };
    // Queued before the stream opens, so they are the first messages the scheduler reads.
    let _ = out_tx
        .send(message(worker_message::Kind::Hello(hello)))
        .await;
    let _ = out_tx.send(message(credit(shared))).await;
    let mut request = Request::new(ReceiverStream::new(out_rx));
    let bearer = MetadataValue::try_from(format!("Bearer {}", config.token))
        .map_err(|_| SessionError::Config)?;
    request.metadata_mut().insert("authorization", bearer);
    let mut inbound = WorkerServiceClient::new(channel)
        .connect(request)
        .await?
        .into_inner();
    tracing::info!(scheduler = %url, worker_id = %config.worker_id, "connected to scheduler");

    // Assignments acked on this stream, waiting for this scheduler's go. Dropped with the
    // stream: a lifecycle whose go can no longer come drops its run without starting it.
    let mut awaiting: HashMap<String, oneshot::Sender<bool>> = HashMap::new();
    // Output bytes of each running run as of the live tail last sent on this stream.
    let mut tails_sent: HashMap<String, u64> = HashMap::new();
    let mut heartbeat = tokio::time::interval(config.heartbeat_every);
    let mut live_tail = tokio::time::interval(LIVE_TAIL_EVERY);
    live_tail.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let send = |kind| {
        let out_tx = out_tx.clone();
        async move {
            out_tx
                .send(message(kind))
                .await
                .map_err(|_| SessionError::Closed)
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                // Deliver what already ended before leaving: those reports are final states.
                while let Ok(report) = report_rx.try_recv() {
                    send(report_kind(report)).await?;
                }
                let pending: Vec<Report> = shared.unacked().values().cloned().collect();
                for report in pending {
                    send(report_kind(report)).await?;
                }
                // Leaving at once would drop the stream, which can reset it before those
                // messages are on the wire: wait (bounded) until some scheduler confirmed them.
                let flush = tokio::time::sleep(FINAL_ACK_WAIT);
                tokio::pin!(flush);
                while !shared.unacked().is_empty() {
                    tokio::select! {
                        message = inbound.message() => match message {
                            Ok(Some(SchedulerMessage { kind: Some(scheduler_message::Kind::ReportAck(ack)) })) => {
                                if shared.unacked().remove(&ack.run_id).is_some() {
                                    // Inline: the worker is about to exit.
                                    shared.runtime.release(&ack.run_id).await;
                                }
                            }
                            Ok(Some(_)) => {}
                            Ok(None) | Err(_) => break,
                        },
                        () = &mut flush => {
                            tracing::warn!(scheduler = %url, unconfirmed = shared.unacked().len(), "final reports not confirmed in time");
                            break;
                        }
                    }
                }
                return Ok(());
            }
            inbound_message = inbound.message() => {
                let Some(SchedulerMessage { kind: Some(kind) }) = inbound_message? else {
                    return Err(SessionError::Closed);
                };
                match kind {
                    scheduler_message::Kind::Assignment(a) => {
                        let upcoming = a.upcoming;
                        let spec = assignment_spec(a);
                        let run_id = spec.run_id.clone();
                        let go = lifecycle::offer(shared, spec, upcoming);
                        let accept = go.is_some();
                        if let Some(go) = go {
                            awaiting.insert(run_id.clone(), go);
                        }
                        tracing::debug!(run_id = %run_id, accept, upcoming, "assignment received");
                        send(worker_message::Kind::Ack(worker_message::Ack { run_id, accept })).await?;
                    }
                    scheduler_message::Kind::AckResult(result) => {
                        let Some(go) = awaiting.remove(&result.run_id) else { continue };
                        if !result.start {
                            tracing::info!(run_id = %result.run_id, "scheduler withdrew the run (cancelled or changed): not starting");
                        }
                        // A closed receiver means the lifecycle already gave up on the run.
                        let _ = go.send(result.start);
                    }
                    scheduler_message::Kind::ReportAck(ack) => {
                        if shared.unacked().remove(&ack.run_id).is_some() {
                            let runtime = shared.runtime.clone();
                            shared.runs.spawn(async move { runtime.release(&ack.run_id).await });
                        }
                    }
                    scheduler_message::Kind::Cancel(cancel) => {
                        let running = shared.running().get(&cancel.run_id).map(|r| r.cancel.clone());
                        let token = running.or_else(|| shared.offered().get(&cancel.run_id).cloned());
                        if let Some(token) = token {
                            tracing::info!(run_id = %cancel.run_id, "cancelling run");
                            token.cancel();
                        }
                    }
                }
            }
            Some(report) = report_rx.recv() => {
                send(report_kind(report)).await?;
                send(credit(shared)).await?;
            }
            () = shared.slots.freed() => {
                send(credit(shared)).await?;
            }
            _ = live_tail.tick() => {
                let running: Vec<(String, Running)> = shared.running().iter().map(|(id, r)| (id.clone(), r.clone())).collect();
                tails_sent.retain(|id, _| running.iter().any(|(r, _)| r == id));
                for (run_id, run) in running {
                    let total_bytes = run.log.total_bytes();
                    if tails_sent.get(&run_id).copied().unwrap_or(0) == total_bytes {
                        continue;
                    }
                    tails_sent.insert(run_id.clone(), total_bytes);
                    let (tail, _) = run.log.snapshot();
                    send(worker_message::Kind::LogTail(worker_message::LogTail {
                        run_id,
                        shard: run.shard,
                        tail,
                        total_bytes,
                    })).await?;
                }
            }
            _ = heartbeat.tick() => {
                let mut run_ids: Vec<String> = shared.running().keys().cloned().collect();
                let pending: Vec<Report> = shared.unacked().values().cloned().collect();
                let mut named: HashSet<String> = run_ids.iter().cloned().collect();
                run_ids.extend(pending.iter().map(|r| r.run_id.clone()).filter(|id| named.insert(id.clone())));
                send(worker_message::Kind::Heartbeat(worker_message::Heartbeat { run_ids })).await?;
                for report in pending {
                    send(report_kind(report)).await?;
                }
                send(credit(shared)).await?;
            }
        }
    }
}

/// Free slots (none while draining) and the images present here.
fn credit(shared: &Shared) -> worker_message::Kind {
    let slots = if shared.draining.is_cancelled() {
        0
    } else {
        shared.slots.free()
    };
    let cached_images = shared.runtime.cached_images();
    let metrics = &shared.metrics;
    metrics
        .images_cached
        .set(i64::try_from(cached_images.len()).unwrap_or(i64::MAX));
    metrics.runs_running.set(i64::from(shared.slots.running()));
    worker_message::Kind::Credit(worker_message::Credit {
        slots,
        cached_images,
    })
}

fn report_kind(report: Report) -> worker_message::Kind {
    let (state, reason, exit_code) = report_fields(report.finished.outcome);
    worker_message::Kind::Report(worker_message::Report {
        run_id: report.run_id,
        state: state.to_owned(),
        reason: reason.map(str::to_owned),
        exit_code,
        log_tail: report.finished.log_tail,
        log_truncated: report.finished.log_truncated,
        shard: report.shard,
        total_bytes: Some(report.finished.total_bytes),
    })
}

fn report_fields(outcome: Outcome) -> (&'static str, Option<&'static str>, Option<i32>) {
    match outcome {
        Outcome::Succeeded => ("succeeded", None, Some(0)),
        Outcome::Failed { reason, exit_code } => ("failed", Some(reason.as_str()), exit_code),
        Outcome::Cancelled => ("cancelled", None, None),
    }
}

fn assignment_spec(a: scheduler_message::Assignment) -> RunSpec {
    RunSpec {
        run_id: a.run_id,
        job_id: a.job_id,
        tenant_id: a.tenant_id,
        image: a.image,
        registry_auth: a.registry_auth.map(|auth| RegistryAuth {
            server: auth.server,
            username: auth.username,
            password: auth.password,
        }),
        command: a.command,
        env: a.env,
        memory_mb: u32::try_from(a.memory_mb).unwrap_or(0),
        timeout: Duration::from_secs(u64::try_from(a.timeout_seconds).unwrap_or(0)),
        fire_time: a.fire_time.and_then(|t| {
            DateTime::<Utc>::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        }),
        attempt: u32::try_from(a.attempt).unwrap_or(1),
        shard: a.shard,
    }
}
