//! The Docker runtime: runs a run's image through the local engine (bollard, API version
//! negotiated) — image pulled if absent, container created ahead of its start by the one
//! hardened constructor, started on the scheduler's go, its timeout enforced, stopped on cancel,
//! its end read from the engine, and the container removed once that end is captured.
//!
//! It never creates a container outside `container.rs`, never mounts a host path, never uses
//! the host network, and never logs a credential or an env value.

mod container;
mod follow;
mod images;
pub mod labels;
mod network;
mod reconcile;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use bollard::{Docker, query_parameters::RemoveContainerOptions};
use chrono::{DateTime, Utc};
use kairos_domain::FailureReason;

pub use container::{MAX_MEMORY_MB, MAX_TIMEOUT, SCRATCH_DIR, container_name};

use self::images::{ImageCache, ImageLease};
use super::{Finished, Handle, Outcome, Prepared, Recovered, RunSpec, Runtime, StopSignals};
use crate::logs::LiveLog;

/// The network runs get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkChoice {
    /// No network interface but loopback.
    None,
    /// A bridge of this name (created if absent) with inter-container traffic disabled.
    Isolated(String),
}

/// Settings of the Docker runtime (`KAIROS_DOCKER_*`, `KAIROS_IMAGE_CACHE_BYTES`, …).
#[derive(Debug, Clone)]
pub struct DockerSettings {
    pub network: NetworkChoice,
    /// Bytes of images this worker pulled that it keeps before evicting the least recently
    /// used idle one.
    pub image_cache_bytes: u64,
    /// CPU quota of one run, in CPUs.
    pub cpus: f64,
    /// Most processes one run may have.
    pub pids_limit: i64,
    /// Size of the writable tmpfs scratch (`/tmp`) of one run, in MiB.
    pub tmpfs_mb: u32,
    /// Time between SIGTERM and SIGKILL when a run is stopped.
    pub stop_grace: Duration,
    /// Longest an image pull may take.
    pub pull_timeout: Duration,
}

impl DockerSettings {
    /// The isolated bridge's name unless configured otherwise.
    pub const fn default_network_name() -> &'static str {
        "kairos-isolated"
    }
}

impl Default for DockerSettings {
    fn default() -> Self {
        Self {
            network: NetworkChoice::Isolated(Self::default_network_name().to_owned()),
            image_cache_bytes: 10 * 1024 * 1024 * 1024,
            cpus: 1.0,
            pids_limit: 256,
            tmpfs_mb: 64,
            stop_grace: Duration::from_secs(10),
            pull_timeout: Duration::from_secs(600),
        }
    }
}

/// Why the Docker runtime cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach a Docker engine ({0}). Start Docker (e.g. `systemctl start docker`) or point DOCKER_HOST=unix:///path/to/docker.sock at a running engine; for trusted local commands only, KAIROS_RUNTIME=process runs jobs without containers"
    )]
    Unreachable(bollard::errors::Error),
    #[error("docker network '{name}': {reason}")]
    Network { name: String, reason: String },
    #[error("docker: {0}")]
    Engine(#[from] bollard::errors::Error),
}

/// A created container of a prepared or re-attached run.
#[derive(Debug)]
pub struct Container {
    id: String,
    /// Keeps the image from eviction while the container exists.
    #[allow(
        dead_code,
        reason = "held for its Drop: the image is in use until the container goes"
    )]
    lease: ImageLease,
    /// When the engine started it (re-attached runs): the timeout counts from here.
    started_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    docker: Docker,
    settings: DockerSettings,
    worker_id: String,
    /// `HostConfig.NetworkMode` of every run: `none` or the isolated bridge's id.
    network_mode: String,
    images: ImageCache,
    /// Containers of runs that ended, kept until a scheduler confirms the report: a restart
    /// before that finds them exited and reports them again.
    ended: Mutex<HashMap<String, Container>>,
}

impl DockerRuntime {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket), negotiates the API
    /// version, makes sure the runs' network exists and loads the image cache.
    pub async fn connect(settings: DockerSettings, worker_id: &str) -> Result<Self, DockerError> {
        let docker = Docker::connect_with_local_defaults().map_err(DockerError::Unreachable)?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(DockerError::Unreachable)?;
        let network_mode = network::ensure(&docker, &settings.network).await?;
        let images = ImageCache::load(
            docker.clone(),
            settings.image_cache_bytes,
            settings.pull_timeout,
        )
        .await?;
        tracing::info!(api_version = %docker.client_version(), network = %network_mode, "connected to the Docker engine");
        Ok(Self {
            inner: Arc::new(Inner {
                docker,
                settings,
                worker_id: worker_id.to_owned(),
                network_mode,
                images,
                ended: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The `NetworkMode` runs get: `none` or the isolated bridge's id.
    pub fn network_mode(&self) -> &str {
        &self.inner.network_mode
    }

    async fn remove(&self, id: &str) {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.inner.docker.remove_container(id, Some(options)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => tracing::warn!(container = %id, error = %e, "cannot remove container"),
        }
    }

    /// Keeps the container of an ended run until its report is confirmed.
    fn keep_until_confirmed(&self, run_id: &str, container: Container) {
        self.inner
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run_id.to_owned(), container);
    }

    /// Follows a started container to its end; it is removed once the report is confirmed.
    async fn follow_to_end(
        &self,
        spec: &RunSpec,
        container: Container,
        time_left: Duration,
        stop: StopSignals,
        log: LiveLog,
    ) -> Finished {
        let outcome = follow::follow(
            &self.inner.docker,
            &container.id,
            time_left,
            spec.timeout,
            self.inner.settings.stop_grace,
            &stop,
            &log,
        )
        .await;
        self.keep_until_confirmed(&spec.run_id, container);
        Finished::from_log(outcome, &log)
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    async fn prepare(&self, spec: RunSpec, stop: &StopSignals) -> Result<Prepared, Finished> {
        if let Err(e) = container::check(&spec) {
            return Err(Finished::with_note(
                Outcome::failed(FailureReason::StartFailed),
                &e.to_string(),
            ));
        }
        let ensured = tokio::select! {
            ensured = self.inner.images.ensure(&spec.image, spec.registry_auth.as_ref()) => ensured,
            outcome = stop.fired() => {
                return Err(Finished::with_note(outcome, "stopped while its image was being pulled"));
            }
        };
        let (lease, info) = ensured.map_err(|e| {
            tracing::warn!(run_id = %spec.run_id, image = %spec.image, error = %e, "image pull failed");
            Finished::with_note(
                Outcome::failed(FailureReason::ImagePullFailed),
                &format!("cannot pull image '{}': {e}", spec.image),
            )
        })?;
        if let Some(outcome) = stop.stopped() {
            return Err(Finished::with_note(
                outcome,
                "stopped before its container was created",
            ));
        }
        // Not raced with the stop signals: an interrupted create could leave a container
        // behind. A stop that fires during it is seen by `start` or leads to `discard`.
        let inner = &self.inner;
        match container::create(
            &inner.docker,
            &spec,
            &info,
            &inner.settings,
            &inner.worker_id,
            &inner.network_mode,
        )
        .await
        {
            Ok(id) => {
                tracing::debug!(run_id = %spec.run_id, container = %id, "container created");
                Ok(Prepared {
                    spec,
                    handle: Handle::Container(Container {
                        id,
                        lease,
                        started_at: None,
                    }),
                })
            }
            Err(e) => {
                tracing::warn!(run_id = %spec.run_id, error = %e, "container create failed");
                Err(Finished::with_note(
                    Outcome::failed(FailureReason::StartFailed),
                    &format!("cannot create the container: {e}"),
                ))
            }
        }
    }

    async fn start(&self, prepared: Prepared, stop: StopSignals, log: LiveLog) -> Finished {
        let Prepared { spec, handle } = prepared;
        let Handle::Container(container) = handle else {
            log.note("the docker runtime was handed a run it did not prepare");
            return Finished::from_log(Outcome::failed(FailureReason::StartFailed), &log);
        };
        if let Some(outcome) = stop.stopped() {
            self.remove(&container.id).await;
            log.note("stopped before its container started");
            return Finished::from_log(outcome, &log);
        }
        if let Err(e) = self.inner.docker.start_container(&container.id, None).await {
            tracing::warn!(run_id = %spec.run_id, error = %e, "container start failed");
            log.note(&format!("cannot start the container: {e}"));
            self.remove(&container.id).await;
            return Finished::from_log(Outcome::failed(FailureReason::StartFailed), &log);
        }
        self.follow_to_end(&spec, container, spec.timeout, stop, log)
            .await
    }

    async fn discard(&self, prepared: Prepared) {
        if let Handle::Container(container) = prepared.handle {
            tracing::debug!(run_id = %prepared.spec.run_id, container = %container.id, "removing a prepared container that will not start");
            self.remove(&container.id).await;
        }
    }

    async fn recover(&self) -> Vec<Recovered> {
        reconcile::recover(self).await
    }

    async fn resume(&self, prepared: Prepared, stop: StopSignals, log: LiveLog) -> Finished {
        let Prepared { spec, handle } = prepared;
        let Handle::Container(container) = handle else {
            log.note("the docker runtime was handed a run it did not find");
            return Finished::from_log(Outcome::failed(FailureReason::WorkerLost), &log);
        };
        let elapsed = container
            .started_at
            .map(|t| (Utc::now() - t).to_std().unwrap_or_default())
            .unwrap_or_default();
        let time_left = spec.timeout.saturating_sub(elapsed);
        self.follow_to_end(&spec, container, time_left, stop, log)
            .await
    }

    async fn release(&self, run_id: &str) {
        let kept = self
            .inner
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(run_id);
        if let Some(container) = kept {
            self.remove(&container.id).await;
        }
    }

    fn cached_images(&self) -> Vec<String> {
        self.inner.images.cached()
    }
}
