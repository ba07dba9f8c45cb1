//! One scheduler node: registers in etcd and claims shards (or, alone in standalone mode, owns
//! every shard through the local coordinator), serves `WorkerService` to workers, follows the
//! store's change hints, runs the firing engine, and serves health and metrics.
//!
//! Shutdown order matters and is fixed here: stop firing, hand every shard back, stop
//! dispatch, close the worker streams. Nothing is left running when `run` returns.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, http::StatusCode, routing::get};
use kairos_proto::v1::worker_service_server::WorkerServiceServer;
use kairos_store::{ChangeKind, SchedulerStore, ShardChange};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    coordinator::{
        Coordinator, CoordinatorConfig, CoordinatorError, EtcdCoordinator, LocalConfig,
        LocalCoordinator, OwnershipEvent,
    },
    dispatch::{DispatchConfig, Dispatcher},
    engine::{Engine, EngineConfig, Wakers},
    metrics::Metrics,
};

/// How a node comes to own shards.
#[derive(Debug, Clone)]
pub enum Ownership {
    /// Claims in etcd, shared with the other nodes (`kairos scheduler`).
    Etcd(CoordinatorConfig),
    /// Every shard, alone (`kairos standalone`).
    Local(LocalConfig),
}

impl Ownership {
    /// This node's id.
    pub fn node_id(&self) -> &str {
        match self {
            Ownership::Etcd(config) => &config.node_id,
            Ownership::Local(config) => &config.node_id,
        }
    }
}

/// Everything `kairos scheduler` (and the scheduler inside `kairos standalone`) is configured
/// with.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub ownership: Ownership,
    /// Worker-facing gRPC listen address (`KAIROS_GRPC_ADDR`).
    pub grpc_addr: SocketAddr,
    /// Health and metrics listen address (`KAIROS_METRICS_ADDR`).
    pub metrics_addr: Option<SocketAddr>,
    pub horizon: Duration,
    pub rescan_every: Duration,
    pub dispatch: DispatchConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    #[error("worker gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Runs a scheduler node until `shutdown`, then hands its shards off and stops. Listens for
/// workers on `config.grpc_addr`.
pub async fn run(
    config: SchedulerConfig,
    store: Arc<dyn SchedulerStore>,
    shutdown: CancellationToken,
) -> Result<(), SchedulerError> {
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|source| SchedulerError::Bind {
            addr: config.grpc_addr,
            source,
        })?;
    run_on(grpc, config, store, shutdown).await
}

/// [`run`] with the worker-facing listener already bound (standalone mode binds it first, to
/// hand its address to the worker in the same process).
pub async fn run_on(
    grpc: TcpListener,
    mut config: SchedulerConfig,
    store: Arc<dyn SchedulerStore>,
    shutdown: CancellationToken,
) -> Result<(), SchedulerError> {
    // Arms the crash points named in `FAILPOINTS` (only in builds with the `failpoints` feature).
    let _crash_points = fail::FailScenario::setup();
    let grpc_addr = grpc.local_addr().map_err(|source| SchedulerError::Bind {
        addr: config.grpc_addr,
        source,
    })?;
    if let Ownership::Etcd(coordinator) = &mut config.ownership {
        // Workers find this node's stream endpoint in its registration.
        coordinator.advertise = format!("http://{grpc_addr}");
        if grpc_addr.ip().is_unspecified() {
            tracing::warn!(
                advertised = %coordinator.advertise,
                "KAIROS_GRPC_ADDR is an unspecified address: workers on other hosts cannot dial \
                 the advertised endpoint; set it to an address they reach (on Kubernetes, the pod IP)"
            );
        }
    }
    let metrics = Metrics::new();
    let tasks = TaskTracker::new();
    let stop_serving = CancellationToken::new();

    if let Some(addr) = config.metrics_addr {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SchedulerError::Bind { addr, source })?;
        tasks.spawn(serve_health(
            listener,
            metrics.clone(),
            stop_serving.clone(),
        ));
    }

    let dispatcher = Dispatcher::new(store.clone(), config.dispatch.clone(), metrics.clone());
    let grpc_stop = stop_serving.clone();
    let service = WorkerServiceServer::new(dispatcher.clone());
    let grpc_task = tasks.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                // Nagle off: an ack or assignment is a small frame that must not wait for the
                // peer's delayed ACK (40 ms on Linux).
                tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                grpc_stop.cancelled_owned(),
            )
            .await
    });
    let (coordinator, ownership): (Arc<dyn Coordinator>, mpsc::Receiver<OwnershipEvent>) =
        match &config.ownership {
            Ownership::Etcd(etcd) => {
                let (coordinator, events) = EtcdCoordinator::start(etcd.clone()).await?;
                (Arc::new(coordinator), events)
            }
            Ownership::Local(local) => {
                let (coordinator, events) = LocalCoordinator::start(local.clone(), &*store).await?;
                (Arc::new(coordinator), events)
            }
        };
    tasks.spawn(
        dispatcher
            .clone()
            .run(coordinator.clone(), stop_serving.clone()),
    );
    tracing::info!(node_id = %config.ownership.node_id(), grpc = %grpc_addr, "scheduler node started");

    let wakers = Wakers::default();
    let (changes_tx, mut changes) = mpsc::channel::<ShardChange>(4096);
    let listen_stop = stop_serving.clone();
    let listen_store = store.clone();
    tasks.spawn(async move {
        let mut backoff = Duration::from_millis(200);
        while !listen_stop.is_cancelled() {
            if let Err(e) = listen_store.follow_changes(changes_tx.clone(), listen_stop.clone()).await {
                tracing::warn!(error = %e, "change hints lost; re-listening (planning continues on its rescan)");
            }
            tokio::select! {
                _ = listen_stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
    let hint_wakers = wakers.clone();
    let hint_dispatcher = dispatcher.clone();
    tasks.spawn(async move {
        while let Some(change) = changes.recv().await {
            match (change.kind, change.run) {
                (ChangeKind::CancelRequested, Some((run, _))) => {
                    hint_dispatcher.cancel_running(change.shard, run).await;
                }
                // A queued run the API named goes straight to dispatch; anything else re-plans.
                (ChangeKind::RunQueued, Some((run, fire_time)))
                    if hint_dispatcher.enqueue_announced(change.shard, run, fire_time) => {}
                _ => hint_wakers.wake(change.shard),
            }
        }
    });

    let engine = Engine::new(
        EngineConfig {
            node_id: config.ownership.node_id().to_owned(),
            horizon: config.horizon,
            rescan_every: config.rescan_every,
        },
        store.clone(),
        coordinator.clone(),
        dispatcher.clone(),
        metrics.clone(),
        wakers,
    );
    let engine_stop = CancellationToken::new();
    let engine_task = tokio::spawn(engine.run(ownership, engine_stop.clone()));

    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = grpc_task => {
            tracing::error!(result = ?r, "worker gRPC server stopped unexpectedly");
        }
    }
    tracing::info!("scheduler stopping: no more fires, handing shards off");
    engine_stop.cancel();
    let shards = engine_task.await.unwrap_or_default();
    if let Err(e) = coordinator.shutdown().await {
        tracing::warn!(error = %e, "could not release shards cleanly; they free up when the lease expires");
    }
    tracing::info!(shards = shards.len(), "shards handed off");
    stop_serving.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(10), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("scheduler tasks did not stop within 10 s");
    }
    Ok(())
}

async fn serve_health(listener: TcpListener, metrics: Metrics, stop: CancellationToken) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    match metrics.render() {
                        Ok(body) => (StatusCode::OK, body),
                        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, String::new()),
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::warn!(error = %e, "health server stopped");
    }
}
