//! One worker ↔ scheduler stream: grants credits, acks assignments, starts a run only when the
//! scheduler confirms the ack (a cancel that won the race means nothing starts), heartbeats
//! running runs, and delivers reports — keeping undelivered reports across reconnects.
//!
//! Dispatch over this stream is the scheduler's; this side never decides what runs, only
//! whether it has room.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use chrono::{DateTime, Utc};
use kairos_proto::v1::{
    SchedulerMessage, WorkerMessage, scheduler_message, worker_message,
    worker_service_client::WorkerServiceClient,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Request, metadata::MetadataValue, transport::Endpoint};

use crate::{
    WorkerConfig,
    runtime::{Finished, Outcome, RunSpec, Runtime, StopSignals},
    slots::{SlotGuard, Slots},
};

/// Messages buffered toward one scheduler before senders wait.
const OUTBOUND_BUFFER: usize = 256;
/// Reports buffered per scheduler while its stream is down.
const REPORT_BUFFER: usize = 1024;

/// What the streams of one worker share.
#[derive(Debug, Clone)]
pub struct Shared {
    pub config: Arc<WorkerConfig>,
    pub runtime: Arc<dyn Runtime>,
    pub slots: Slots,
    /// Runs executing; owned here so shutdown can wait for them.
    pub runs: TaskTracker,
    /// Cancelled when the worker starts draining: no new credits.
    pub draining: CancellationToken,
    /// Cancelled when the drain grace ran out: running runs are abandoned.
    pub abandon: CancellationToken,
    /// Every run executing on this worker, whichever stream started it: heartbeats name them
    /// all on every stream, and a cancel from any scheduler reaches them.
    pub running: Arc<Mutex<HashMap<String, CancellationToken>>>,
    /// The report outbox of every scheduler stream. A run's report goes to all of them: the
    /// shard may have moved to another node since the run started.
    pub outboxes: Arc<Mutex<HashMap<String, mpsc::Sender<Report>>>>,
    /// Reports not yet confirmed by a scheduler (`ReportAck`): named in heartbeats and re-sent
    /// on every heartbeat tick, so a run's end survives handoffs and broken streams.
    pub unacked: Arc<Mutex<HashMap<String, Report>>>,
    /// Runs acked on some stream and waiting for that scheduler's decision: the same run
    /// offered by two nodes (a shard handoff) is accepted on one stream only.
    pub offered: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Shared {
    fn running(&self) -> MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn outboxes(&self) -> MutexGuard<'_, HashMap<String, mpsc::Sender<Report>>> {
        self.outboxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn offered(&self) -> MutexGuard<'_, std::collections::HashSet<String>> {
        self.offered.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unacked(&self) -> MutexGuard<'_, HashMap<String, Report>> {
        self.unacked.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    run_id: String,
    shard: u32,
    finished: Finished,
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
    let free = if shared.draining.is_cancelled() {
        0
    } else {
        shared.slots.free()
    };
    let hello = worker_message::Hello {
        worker_id: config.worker_id.clone(),
        slots: config.slots,
        cached_images: Vec::new(),
        labels: Default::default(),
    };
    // Queued before the stream opens, so they are the first messages the scheduler reads.
    let _ = out_tx
        .send(message(worker_message::Kind::Hello(hello)))
        .await;
    let _ = out_tx
        .send(message(worker_message::Kind::Credit(
            worker_message::Credit {
                slots: free,
                cached_images: Vec::new(),
            },
        )))
        .await;
    let mut request = Request::new(ReceiverStream::new(out_rx));
    let bearer = MetadataValue::try_from(format!("Bearer {}", config.token))
        .map_err(|_| SessionError::Config)?;
    request.metadata_mut().insert("authorization", bearer);
    let mut inbound = WorkerServiceClient::new(channel)
        .connect(request)
        .await?
        .into_inner();
    tracing::info!(scheduler = %url, worker_id = %config.worker_id, "connected to scheduler");

    // Assignments acked and waiting for the scheduler's go, each holding its slot.
    let mut awaiting: HashMap<String, (RunSpec, SlotGuard)> = HashMap::new();
    let mut heartbeat = tokio::time::interval(config.heartbeat_every);
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
                return Ok(());
            }
            inbound_message = inbound.message() => {
                let Some(SchedulerMessage { kind: Some(kind) }) = inbound_message? else {
                    return Err(SessionError::Closed);
                };
                match kind {
                    scheduler_message::Kind::Assignment(a) => {
                        let run_id = a.run_id.clone();
                        let taken = shared.running().contains_key(&run_id) || !shared.offered().insert(run_id.clone());
                        let slot = (!taken && !shared.draining.is_cancelled()).then(|| shared.slots.try_reserve()).flatten();
                        let accept = slot.is_some();
                        match slot {
                            Some(slot) => {
                                awaiting.insert(run_id.clone(), (assignment_spec(a), slot));
                            }
                            None if !taken => {
                                shared.offered().remove(&run_id);
                            }
                            None => {}
                        }
                        tracing::debug!(run_id = %run_id, accept, "assignment received");
                        send(worker_message::Kind::Ack(worker_message::Ack { run_id, accept })).await?;
                    }
                    scheduler_message::Kind::AckResult(result) => {
                        let Some((spec, slot)) = awaiting.remove(&result.run_id) else { continue };
                        shared.offered().remove(&result.run_id);
                        if result.start {
                            let cancel = CancellationToken::new();
                            shared.running().insert(spec.run_id.clone(), cancel.clone());
                            start(shared, spec, slot, cancel);
                        } else {
                            tracing::info!(run_id = %result.run_id, "scheduler withdrew the run (cancelled or changed): not starting");
                            drop(slot);
                            send(worker_message::Kind::Credit(worker_message::Credit { slots: credit(shared), cached_images: Vec::new() })).await?;
                        }
                    }
                    scheduler_message::Kind::ReportAck(ack) => {
                        shared.unacked().remove(&ack.run_id);
                    }
                    scheduler_message::Kind::Cancel(cancel) => {
                        if let Some(token) = shared.running().get(&cancel.run_id) {
                            tracing::info!(run_id = %cancel.run_id, "cancelling run");
                            token.cancel();
                        }
                    }
                }
            }
            Some(report) = report_rx.recv() => {
                send(report_kind(report)).await?;
                send(worker_message::Kind::Credit(worker_message::Credit { slots: credit(shared), cached_images: Vec::new() })).await?;
            }
            _ = heartbeat.tick() => {
                let mut run_ids: Vec<String> = shared.running().keys().cloned().collect();
                let pending: Vec<Report> = shared.unacked().values().cloned().collect();
                run_ids.extend(pending.iter().map(|r| r.run_id.clone()));
                send(worker_message::Kind::Heartbeat(worker_message::Heartbeat { run_ids })).await?;
                for report in pending {
                    send(report_kind(report)).await?;
                }
                send(worker_message::Kind::Credit(worker_message::Credit { slots: credit(shared), cached_images: Vec::new() })).await?;
            }
        }
    }
}

fn credit(shared: &Shared) -> u32 {
    if shared.draining.is_cancelled() {
        0
    } else {
        shared.slots.free()
    }
}

/// Starts a confirmed run; its report goes to every scheduler stream (the owner records it).
fn start(shared: &Shared, spec: RunSpec, slot: SlotGuard, cancel: CancellationToken) {
    let runtime = shared.runtime.clone();
    let stop = StopSignals {
        cancel,
        abandon: shared.abandon.clone(),
    };
    let shared = shared.clone();
    shared.runs.clone().spawn(async move {
        let (run_id, shard) = (spec.run_id.clone(), spec.shard);
        tracing::info!(run_id = %run_id, job_id = %spec.job_id, "run started");
        let finished = runtime.run(spec, stop).await;
        tracing::info!(run_id = %run_id, outcome = ?finished.outcome, "run ended");
        shared.running().remove(&run_id);
        drop(slot);
        let report = Report {
            run_id: run_id.clone(),
            shard,
            finished,
        };
        shared.unacked().insert(run_id.clone(), report.clone());
        let outboxes: Vec<mpsc::Sender<Report>> = shared.outboxes().values().cloned().collect();
        let mut delivered = false;
        for outbox in outboxes {
            delivered |= outbox.send(report.clone()).await.is_ok();
        }
        if !delivered {
            tracing::warn!(run_id = %run_id, "report dropped: no scheduler stream is left");
        }
    });
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
        total_bytes: None,
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
        image: a.image,
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
