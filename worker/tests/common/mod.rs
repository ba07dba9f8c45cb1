//! Harness of the worker's Docker tests: a real worker (its own tokio runtime on a thread, so
//! a test can stop it like SIGTERM or drop it like kill -9) against a fake scheduler node found
//! through etcd, running a local busybox image on the real engine; every container the worker
//! makes is removed when the harness goes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context as _;
use kairos_proto::v1::{
    scheduler_message::{self, Assignment},
    worker_message,
};
use kairos_testkit::{
    ContainerCleanup, FakeScheduler, TestEtcd, TestImage, WorkerStream, docker, etcd,
    require_docker,
};
use kairos_worker::{
    WorkerConfig,
    config::RuntimeKind,
    runtime::{DockerSettings, docker::labels},
};
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "worker-test-token";
/// Generous: the machine is shared with other builds.
pub const WITHIN: Duration = Duration::from_secs(90);

pub struct Harness {
    pub etcd: TestEtcd,
    pub scheduler: FakeScheduler,
    pub worker_id: String,
    pub image: TestImage,
    _cleanup: ContainerCleanup,
}

impl Harness {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_image(TestImage::busybox().await?).await
    }

    pub async fn start_with_image(image: TestImage) -> anyhow::Result<Self> {
        require_docker().await?;
        let etcd = etcd().await?;
        let scheduler = FakeScheduler::start(&etcd, "fake-node", TOKEN).await?;
        let worker_id = format!("test-worker-{}", uuid::Uuid::new_v4().simple());
        let cleanup = ContainerCleanup::labelled(labels::WORKER_ID, &worker_id)?;
        Ok(Self {
            etcd,
            scheduler,
            worker_id,
            image,
            _cleanup: cleanup,
        })
    }

    pub fn config(&self) -> WorkerConfig {
        WorkerConfig {
            schedulers: kairos_worker::config::Schedulers::Etcd {
                endpoints: self.etcd.endpoints(),
                prefix: self.etcd.key_prefix().to_owned(),
            },
            worker_id: self.worker_id.clone(),
            slots: 4,
            runtime: RuntimeKind::Docker,
            token: TOKEN.to_owned(),
            heartbeat_every: Duration::from_millis(500),
            drain_grace: Duration::from_secs(30),
            docker: DockerSettings {
                stop_grace: Duration::from_secs(1),
                ..DockerSettings::default()
            },
            metrics_addr: None,
        }
    }

    /// Starts a worker with `config` and returns it with its stream to the fake scheduler.
    pub async fn worker(
        &mut self,
        config: WorkerConfig,
    ) -> anyhow::Result<(TestWorker, WorkerStream)> {
        let worker = TestWorker::start(config);
        let mut stream = self.scheduler.next_stream(WITHIN).await?;
        stream
            .wait_for(WITHIN, |k| {
                matches!(k, worker_message::Kind::Hello(_)).then_some(())
            })
            .await?;
        Ok((worker, stream))
    }

    /// An assignment of `command` in the harness image: 128 MiB, 60 s, due now.
    pub fn assignment(&self, command: &[&str]) -> Assignment {
        assignment(self.image.reference(), command)
    }
}

pub fn run_id() -> String {
    format!("run_{}", uuid::Uuid::new_v4().simple())
}

pub fn assignment(image: &str, command: &[&str]) -> Assignment {
    let now = chrono::Utc::now();
    Assignment {
        run_id: run_id(),
        job_id: "job_test".into(),
        image: image.to_owned(),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        env: BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]),
        memory_mb: 128,
        timeout_seconds: 60,
        fire_time: Some(prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: now.timestamp_subsec_nanos() as i32,
        }),
        attempt: 1,
        shard: 5,
        upcoming: false,
        registry_auth: None,
        tenant_id: "ten_test".into(),
    }
}

/// Assigns, expects the ack, gives the go; returns the run id.
pub async fn assign_and_start(stream: &mut WorkerStream, a: Assignment) -> anyhow::Result<String> {
    let run_id = a.run_id.clone();
    stream.send(scheduler_message::Kind::Assignment(a)).await?;
    anyhow::ensure!(
        stream.ack_of(&run_id, WITHIN).await?,
        "the worker refused {run_id}"
    );
    stream.decide(&run_id, true).await?;
    Ok(run_id)
}

/// Runs `a` to its end and returns the report.
pub async fn run_to_end(
    stream: &mut WorkerStream,
    a: Assignment,
) -> anyhow::Result<worker_message::Report> {
    let run_id = assign_and_start(stream, a).await?;
    stream.report_of(&run_id, WITHIN).await
}

/// The container of `run_id`, once the engine has one in `state` (`created`, `running`,
/// `exited`).
pub async fn container_in_state(run_id: &str, state: &str) -> anyhow::Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        for id in docker::containers_labelled(labels::RUN_ID, run_id).await? {
            if let Ok(inspect) = docker::inspect(&id).await
                && inspect["State"]["Status"] == state
            {
                return Ok(inspect);
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no container of {run_id} in state {state} within {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no container of `run_id` exists.
pub async fn container_gone(run_id: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !docker::containers_labelled(labels::RUN_ID, run_id)
        .await?
        .is_empty()
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the container of {run_id} was not removed within {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Waits for a heartbeat naming `run_id` (it is running on the worker).
pub async fn heartbeat_names(stream: &mut WorkerStream, run_id: &str) -> anyhow::Result<()> {
    stream
        .wait_for(WITHIN, |k| match k {
            worker_message::Kind::Heartbeat(hb) if hb.run_ids.iter().any(|r| r == run_id) => {
                Some(())
            }
            _ => None,
        })
        .await
}

/// A worker on a tokio runtime of its own.
pub struct TestWorker {
    shutdown: CancellationToken,
    crash: CancellationToken,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl TestWorker {
    pub fn start(config: WorkerConfig) -> Self {
        let shutdown = CancellationToken::new();
        let crash = CancellationToken::new();
        let (run_shutdown, run_crash) = (shutdown.clone(), crash.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let result = runtime.block_on(async move {
                tokio::select! {
                    result = kairos_worker::run(config, run_shutdown) => result.map_err(|e| e.to_string()),
                    () = run_crash.cancelled() => Ok(()),
                }
            });
            // Like kill -9: every task of the worker is dropped where it stands.
            runtime.shutdown_background();
            result
        });
        Self {
            shutdown,
            crash,
            thread: Some(thread),
        }
    }

    /// Stops it as SIGTERM does (drain) and waits until it has exited.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.join().await
    }

    /// Kills it as kill -9 does: no drain, no report, containers left as they are.
    pub async fn crash(mut self) -> anyhow::Result<()> {
        self.crash.cancel();
        self.join().await
    }

    async fn join(&mut self) -> anyhow::Result<()> {
        let thread = self.thread.take().context("already joined")?;
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the worker thread panicked"))?
            .map_err(|e| anyhow::anyhow!("the worker failed: {e}"))
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.crash.cancel();
        // Gone before the harness removes its containers (its runtime stops at once).
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
