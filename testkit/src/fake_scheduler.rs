//! A scripted scheduler node for worker tests: a real tonic `WorkerService` server on a free
//! 127.0.0.1 port, registered in etcd where workers look for schedulers, that hands each
//! worker stream to the test to read (`WorkerMessage`s) and write (`SchedulerMessage`s).
//!
//! It acknowledges every report (`ReportAck`) itself unless told not to, and decides nothing
//! else: assignments, go/no-go and cancels are the test's. It never serves beyond loopback.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};
use futures::Stream;
use kairos_proto::v1::{
    SchedulerMessage, WorkerMessage, scheduler_message, worker_message,
    worker_service_server::{WorkerService, WorkerServiceServer},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::TestEtcd;

/// Messages from one worker held for the test before the worker's sends wait.
const INBOUND_BUFFER: usize = 16_384;

/// A fake scheduler node; stops serving when dropped.
#[derive(Debug)]
pub struct FakeScheduler {
    url: String,
    streams: mpsc::Receiver<WorkerStream>,
    stop: CancellationToken,
    ack_reports: Arc<AtomicBool>,
}

/// One worker's stream as the fake scheduler sees it.
#[derive(Debug)]
pub struct WorkerStream {
    inbound: mpsc::Receiver<WorkerMessage>,
    outbound: mpsc::Sender<Result<SchedulerMessage, Status>>,
    /// Every message read so far, in order.
    history: Vec<worker_message::Kind>,
}

#[derive(Debug, Clone)]
struct Service {
    token: String,
    streams: mpsc::Sender<WorkerStream>,
    ack_reports: Arc<AtomicBool>,
}

type OutStream = Pin<Box<dyn Stream<Item = Result<SchedulerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerService for Service {
    type ConnectStream = OutStream;

    async fn connect(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_owned();
        if presented != self.token {
            return Err(Status::unauthenticated("bad worker token"));
        }
        let mut from_worker = request.into_inner();
        let (out_tx, out_rx) = mpsc::channel(1024);
        let (in_tx, in_rx) = mpsc::channel(INBOUND_BUFFER);
        let acks = out_tx.clone();
        let ack_reports = self.ack_reports.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = from_worker.message().await {
                if let Some(worker_message::Kind::Report(report)) = &message.kind
                    && ack_reports.load(Ordering::SeqCst)
                {
                    let ack = scheduler_message::Kind::ReportAck(scheduler_message::ReportAck {
                        run_id: report.run_id.clone(),
                    });
                    let _ = acks.send(Ok(SchedulerMessage { kind: Some(ack) })).await;
                }
                if in_tx.send(message).await.is_err() {
                    break;
                }
            }
        });
        self.streams
            .send(WorkerStream {
                inbound: in_rx,
                outbound: out_tx,
                history: Vec::new(),
            })
            .await
            .map_err(|_| Status::unavailable("the test is gone"))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}

impl FakeScheduler {
    /// Serves on a free loopback port and registers as node `node_id` under `etcd`'s prefix
    /// (`{prefix}nodes/{node_id}`), where a worker with that prefix finds it.
    pub async fn start(etcd: &TestEtcd, node_id: &str, token: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fake scheduler")?;
        let url = format!("http://{}", listener.local_addr()?);
        let (streams_tx, streams_rx) = mpsc::channel(16);
        let ack_reports = Arc::new(AtomicBool::new(true));
        let service = Service {
            token: token.to_owned(),
            streams: streams_tx,
            ack_reports: ack_reports.clone(),
        };
        let stop = CancellationToken::new();
        let serve_stop = stop.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(WorkerServiceServer::new(service))
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    serve_stop.cancelled_owned(),
                )
                .await;
        });
        let mut client = etcd.client().await?;
        client
            .put(
                format!("{}nodes/{node_id}", etcd.key_prefix()),
                url.clone(),
                None,
            )
            .await
            .context("registering the fake scheduler in etcd")?;
        Ok(Self {
            url,
            streams: streams_rx,
            stop,
            ack_reports,
        })
    }

    /// Whether reports are acknowledged (`ReportAck`) from now on (they are by default).
    pub fn ack_reports(&self, ack: bool) {
        self.ack_reports.store(ack, Ordering::SeqCst);
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next worker stream to connect (after its first message, normally `Hello`).
    pub async fn next_stream(&mut self, within: Duration) -> anyhow::Result<WorkerStream> {
        tokio::time::timeout(within, self.streams.recv())
            .await
            .context("no worker connected in time")?
            .context("the fake scheduler stopped")
    }
}

impl Drop for FakeScheduler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl WorkerStream {
    /// Sends one message to the worker.
    pub async fn send(&self, kind: scheduler_message::Kind) -> anyhow::Result<()> {
        self.outbound
            .send(Ok(SchedulerMessage { kind: Some(kind) }))
            .await
            .map_err(|_| anyhow::anyhow!("the worker stream is closed"))
    }

    /// The next message from the worker.
    pub async fn recv(&mut self, within: Duration) -> anyhow::Result<worker_message::Kind> {
        loop {
            let message = tokio::time::timeout(within, self.inbound.recv())
                .await
                .context("no message from the worker in time")?
                .context("the worker closed the stream")?;
            if let Some(kind) = message.kind {
                self.history.push(kind.clone());
                return Ok(kind);
            }
        }
    }

    /// Every message read from this stream so far (also those `wait_for` passed over).
    pub fn history(&self) -> &[worker_message::Kind] {
        &self.history
    }

    /// Reads messages until `pick` returns something (the rest are dropped), or fails after
    /// `within`.
    pub async fn wait_for<T>(
        &mut self,
        within: Duration,
        mut pick: impl FnMut(&worker_message::Kind) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                bail!("the awaited worker message did not come within {within:?}");
            }
            let kind = self.recv(left).await?;
            if let Some(found) = pick(&kind) {
                return Ok(found);
            }
        }
    }

    /// Waits for the worker's `Ack` of `run_id` and returns whether it accepted.
    pub async fn ack_of(&mut self, run_id: &str, within: Duration) -> anyhow::Result<bool> {
        self.wait_for(within, |kind| match kind {
            worker_message::Kind::Ack(ack) if ack.run_id == run_id => Some(ack.accept),
            _ => None,
        })
        .await
    }

    /// Waits for the `Report` of `run_id`.
    pub async fn report_of(
        &mut self,
        run_id: &str,
        within: Duration,
    ) -> anyhow::Result<worker_message::Report> {
        self.wait_for(within, |kind| match kind {
            worker_message::Kind::Report(report) if report.run_id == run_id => Some(report.clone()),
            _ => None,
        })
        .await
    }

    /// Tells the worker whether acked run `run_id` may start.
    pub async fn decide(&self, run_id: &str, start: bool) -> anyhow::Result<()> {
        self.send(scheduler_message::Kind::AckResult(
            scheduler_message::AckResult {
                run_id: run_id.to_owned(),
                start,
            },
        ))
        .await
    }

    /// Asks the worker to cancel `run_id`.
    pub async fn cancel(&self, run_id: &str) -> anyhow::Result<()> {
        self.send(scheduler_message::Kind::Cancel(scheduler_message::Cancel {
            run_id: run_id.to_owned(),
        }))
        .await
    }
}
