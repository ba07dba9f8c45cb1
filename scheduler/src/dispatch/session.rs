//! One worker's `WorkerService` stream: authenticates it with the shared worker token, reads
//! its hello, credits, acks, heartbeats and reports, and hands them to the dispatcher (acks
//! and reports go to the batches). When the stream ends, offers it had not answered go back in
//! line. It never trusts a worker's message for more than the run ids it names.

use std::collections::HashSet;

use futures::Stream;
use kairos_domain::RunId;
use kairos_proto::v1::{
    SchedulerMessage, WorkerMessage, worker_message, worker_service_server::WorkerService,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{AckIn, Dispatcher, ReportIn, Session, WORKER_BUFFER};

impl Dispatcher {
    fn heartbeat(&self, run_ids: &[String]) {
        let now = tokio::time::Instant::now();
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

    fn set_credit(&self, session: u64, credit: worker_message::Credit) {
        if let Some(s) = self.state().sessions.get_mut(&session) {
            s.credit = credit.slots;
            s.images = credit.cached_images.into_iter().collect();
        }
        self.wake.notify_one();
    }

    fn close_session(&self, session: u64) {
        let mut state = self.state();
        state.sessions.remove(&session);
        let back: Vec<RunId> = state
            .awaiting
            .iter()
            .filter(|(_, a)| a.session == session && !a.acking && !a.firing)
            .map(|(id, _)| *id)
            .collect();
        for id in back {
            // Offered ahead: still scheduled, the fire queues it. Queued: back to the front.
            if let Some(a) = state.awaiting.remove(&id)
                && !a.upcoming
            {
                state.ready.push_front(a.run);
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
                            worker_id: hello.worker_id,
                            credit: 0,
                            images: hello.cached_images.into_iter().collect::<HashSet<_>>(),
                            tx: tx.clone(),
                        },
                    );
                }
                worker_message::Kind::Credit(credit) => self.set_credit(session, credit),
                worker_message::Kind::Ack(ack) => {
                    let Ok(run) = ack.run_id.parse::<RunId>() else {
                        continue;
                    };
                    let ack = AckIn {
                        session,
                        run,
                        accept: ack.accept,
                    };
                    if self.acks.send(ack).await.is_err() {
                        break; // the dispatcher is stopping
                    }
                }
                worker_message::Kind::Heartbeat(hb) => self.heartbeat(&hb.run_ids),
                worker_message::Kind::Report(report) => {
                    if self
                        .reports
                        .send(ReportIn { session, report })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                worker_message::Kind::LogTail(tail) => self.live_log(tail),
            }
        }
        tracing::info!(worker_id = %worker_id, "worker disconnected");
        self.close_session(session);
    }

    /// The live output of a running run, for the log batch. Never waits: under load a tail is
    /// dropped, and the next one (or the report) supersedes it.
    fn live_log(&self, tail: worker_message::LogTail) {
        if self.live_logs.try_send(tail).is_err() {
            tracing::trace!("live log tail dropped: the log batch is behind");
        }
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
