//! Settings of `kairos worker`, as the operator contract names them (`KAIROS_*` variables).
//! The worker token is a secret: its `Debug` output never shows it.

use std::{fmt, net::SocketAddr, time::Duration};

use crate::runtime::DockerSettings;

/// Which runtime starts the runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Runs the job's image in a hardened container on the local Docker engine (the default).
    Docker,
    /// Runs the job's `command` directly on this host; for trusted installs and benchmarks.
    Process,
}

/// Where the worker finds scheduler nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedulers {
    /// The nodes registered in etcd (`kairos worker`), followed as they come and go.
    Etcd {
        /// etcd endpoints where scheduler nodes register (`KAIROS_ETCD_ENDPOINTS`).
        endpoints: Vec<String>,
        /// Key prefix of the registry (default `/kairos/v1/`).
        prefix: String,
    },
    /// These worker-facing URLs (`http://host:port`), always: the one scheduler of
    /// `kairos standalone`, in the same process.
    Fixed(Vec<String>),
}

#[derive(Clone)]
pub struct WorkerConfig {
    /// Where scheduler nodes are found.
    pub schedulers: Schedulers,
    /// This worker's id (`KAIROS_WORKER_ID`).
    pub worker_id: String,
    /// How many runs may execute at once (`KAIROS_WORKER_SLOTS`).
    pub slots: u32,
    pub runtime: RuntimeKind,
    /// Shared secret presented to schedulers (`KAIROS_WORKER_TOKEN`).
    pub token: String,
    /// How often running runs are heartbeated.
    pub heartbeat_every: Duration,
    /// How long running runs may take to finish after SIGTERM before they are killed.
    pub drain_grace: Duration,
    /// Settings of the Docker runtime (also its stop grace for the process runtime).
    pub docker: DockerSettings,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (`KAIROS_METRICS_ADDR`); none if
    /// unset.
    pub metrics_addr: Option<SocketAddr>,
}

impl fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("schedulers", &self.schedulers)
            .field("worker_id", &self.worker_id)
            .field("slots", &self.slots)
            .field("runtime", &self.runtime)
            .field("token", &"***")
            .field("heartbeat_every", &self.heartbeat_every)
            .field("drain_grace", &self.drain_grace)
            .field("docker", &self.docker)
            .field("metrics_addr", &self.metrics_addr)
            .finish()
    }
}
