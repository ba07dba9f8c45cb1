//! The worker's lifecycle: connect the runtime (for Docker: reach the engine, or fail with a
//! clear error), reconcile what a previous start left behind, start discovery and the scheduler
//! streams, run until shutdown, then drain — no new credits, running runs get `drain_grace` to
//! finish, the rest are abandoned (killed, reported `failed/worker_lost`) — and deliver the
//! final reports before exiting.

use std::{sync::Arc, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    WorkerConfig,
    config::RuntimeKind,
    connection::Shared,
    discovery, lifecycle,
    metrics::{self, Metrics},
    runtime::{DockerRuntime, ProcessRuntime, Recovered, Runtime, docker::DockerError},
    slots::Slots,
};

/// How long final reports may take to reach the schedulers after the runs ended.
const REPORT_FLUSH: Duration = Duration::from_secs(5);

/// Builds the runtime `config` names: for Docker, connects to the engine.
pub async fn connect_runtime(config: &WorkerConfig) -> Result<Arc<dyn Runtime>, DockerError> {
    Ok(match config.runtime {
        RuntimeKind::Process => Arc::new(ProcessRuntime {
            grace: config.docker.stop_grace,
        }),
        RuntimeKind::Docker => {
            Arc::new(DockerRuntime::connect(config.docker.clone(), &config.worker_id).await?)
        }
    })
}

/// Why the worker cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the worker until `shutdown` is cancelled, then drains. Fails before doing anything if
/// the runtime cannot start (no Docker engine reachable) or the metrics address is taken.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> Result<(), StartError> {
    let runtime = connect_runtime(&config).await?;
    run_with(config, runtime, shutdown).await
}

/// Runs the worker with a runtime built by the caller until `shutdown`, then drains.
pub async fn run_with(
    config: WorkerConfig,
    runtime: Arc<dyn Runtime>,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let drain_grace = config.drain_grace;
    let metrics = Metrics::new();
    let health = TaskTracker::new();
    let health_stop = CancellationToken::new();
    if let Some(addr) = config.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Metrics { addr, source })?;
        health.spawn(metrics::serve(
            listener,
            metrics.clone(),
            health_stop.clone(),
        ));
    }
    let shared = Shared {
        metrics,
        slots: Slots::new(config.slots),
        config: Arc::new(config),
        runtime,
        runs: TaskTracker::new(),
        draining: CancellationToken::new(),
        abandon: CancellationToken::new(),
        running: Default::default(),
        outboxes: Default::default(),
        unacked: Default::default(),
        offered: Default::default(),
    };
    tracing::info!(worker_id = %shared.config.worker_id, slots = shared.config.slots, runtime = ?shared.config.runtime, "worker starting");
    // Before any stream: a re-attached run is known (heartbeated, never accepted twice) from
    // the first message on.
    for recovered in shared.runtime.recover().await {
        match recovered {
            Recovered::Running(prepared) => lifecycle::resume(&shared, *prepared),
            Recovered::Ended {
                run_id,
                shard,
                finished,
            } => lifecycle::ended_while_away(&shared, run_id, shard, finished),
        }
    }
    let connections = TaskTracker::new();
    let streams_stop = CancellationToken::new();
    let discovery_task = tokio::spawn(discovery::run(
        shared.clone(),
        connections.clone(),
        streams_stop.clone(),
    ));

    shutdown.cancelled().await;
    tracing::info!(running = shared.slots.running(), grace = ?drain_grace, "worker draining");
    shared.draining.cancel();
    shared.runs.close();
    if tokio::time::timeout(drain_grace, shared.runs.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            running = shared.slots.running(),
            "drain grace ran out; abandoning running runs"
        );
        shared.abandon.cancel();
        shared.runs.wait().await;
    }
    // Every run has ended and queued its report; each stream delivers what is queued on stop.
    streams_stop.cancel();
    connections.close();
    if tokio::time::timeout(REPORT_FLUSH, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "scheduler streams did not close in time; some reports may be redelivered as worker_lost"
        );
    }
    let _ = discovery_task.await;
    // Removals of containers whose reports were just confirmed.
    if tokio::time::timeout(REPORT_FLUSH, shared.runs.wait())
        .await
        .is_err()
    {
        tracing::warn!("cleanup of ended runs did not finish in time; a restart finishes it");
    }
    health_stop.cancel();
    health.close();
    health.wait().await;
    tracing::info!("worker stopped");
    Ok(())
}
