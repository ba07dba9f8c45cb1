//! Runs the API role: binds the REST and gRPC listeners, runs partition maintenance in the
//! background, and drains everything on shutdown.
//!
//! Every task started here is owned by a `TaskTracker` and stops on the shared cancellation
//! token; nothing is left running after `serve` returns.

use std::{sync::Arc, time::Duration};

use axum::serve::ListenerExt;
use kairos_store::Store;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    ApiConfig, Service,
    clock::{Clock, SystemClock},
    grpc,
    metrics::Metrics,
    rest,
};

/// Why the API could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("REST server failed: {0}")]
    Http(std::io::Error),
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Serves REST and gRPC until `shutdown` is cancelled, then drains in-flight requests for at
/// most `config.shutdown_grace`.
pub async fn serve(
    config: ApiConfig,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (http, grpc) = bind(&config).await?;
    serve_on(http, grpc, config, store, shutdown).await
}

/// Binds the REST and gRPC listeners of `config` (so a caller can tell they are up before it
/// hands them to [`serve_on`]).
pub async fn bind(config: &ApiConfig) -> Result<(TcpListener, TcpListener), ServeError> {
    let http = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.http_addr,
            source,
        })?;
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.grpc_addr,
            source,
        })?;
    Ok((http, grpc))
}

/// [`serve`] on listeners already bound by [`bind`].
pub async fn serve_on(
    http: TcpListener,
    grpc: TcpListener,
    config: ApiConfig,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let service = Service::new(
        store.clone(),
        clock.clone(),
        config.admin_token.clone(),
        Metrics::new(),
    )
    .with_limits(config.limits);
    tracing::info!(http = %config.http_addr, grpc = %config.grpc_addr, admin_api = config.admin_token.is_some(), "api listening");

    let tasks = TaskTracker::new();
    tasks.spawn(maintain_partitions(
        store,
        clock,
        config.retention_days,
        config.maintenance_interval,
        shutdown.clone(),
    ));

    // Nagle off: small answers must not wait for the client's delayed ACK.
    let http = http.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot turn Nagle off on a REST connection");
        }
    });
    let http_server = axum::serve(http, rest::router(service.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let grpc_server = grpc::serve(service, grpc, shutdown.clone());

    let result = tokio::select! {
        r = http_server => r.map_err(ServeError::Http),
        r = grpc_server => r.map_err(ServeError::from),
    };
    // One server stopping (error or shutdown) stops the other and the background tasks.
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(config.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?config.shutdown_grace, "background tasks did not stop within the grace period");
    }
    result
}

/// Creates run partitions ahead and drops those past retention, hourly by default.
async fn maintain_partitions(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    retention_days: u32,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.maintain_partitions(clock.now(), retention_days).await {
            Ok(report) if !report.created.is_empty() || !report.dropped.is_empty() => {
                tracing::info!(created = ?report.created, dropped = ?report.dropped, "run partitions maintained");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "partition maintenance failed; retrying next period")
            }
        }
    }
}
