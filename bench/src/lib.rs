//! Shared harness of the whole-path benchmarks (`fire_lag`, `failover`, `execute_now`): a Kairos
//! stack of real release processes (an API, scheduler nodes, a worker with the process runtime)
//! on a throwaway Postgres and etcd, plus the readings the benchmarks report. A measuring tool:
//! it never asserts, and it must never target anything but loopback.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use kairos_testkit::{KairosProcess, TestDatabase, TestEtcd, database, etcd, free_port};
use serde_json::{Value, json};

pub const WORKER_TOKEN: &str = "bench-worker-token";
pub const ADMIN: &str = "bench-admin";

/// The `kairos` binary under test: `KAIROS_BIN`, else the release build.
pub fn kairos() -> PathBuf {
    std::env::var_os("KAIROS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/kairos"))
}

/// Environment pairs for a process of the stack, owned. The processes log at `warn`, or at
/// `KAIROS_BENCH_RUST_LOG` when set (to see what a slow run did; `fire_lag` then prints the
/// scheduler's output at the end).
pub fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(
            |(k, v)| match (*k, std::env::var("KAIROS_BENCH_RUST_LOG")) {
                ("RUST_LOG", Ok(level)) => ((*k).to_owned(), level),
                _ => ((*k).to_owned(), v.clone()),
            },
        )
        .collect()
}

/// utime + stime of a process in seconds, and its RSS in MiB.
pub fn cpu_and_rss(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / 100.0; // fields 14 and 15 of /proc/pid/stat, USER_HZ = 100
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, rss_kib / 1024.0)
}

/// How to start a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub schedulers: usize,
    pub worker_slots: usize,
    pub lease_ttl_seconds: u64,
    pub lookahead_ms: u64,
    pub horizon_seconds: u64,
    /// Instead of a `kairos worker`, an in-process synthetic worker that takes every run and
    /// reports it succeeded at once: measures the scheduler and the store without the cost of
    /// starting processes.
    pub synthetic_worker: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            schedulers: 1,
            worker_slots: 512,
            lease_ttl_seconds: 10,
            lookahead_ms: 1000,
            horizon_seconds: 10,
            synthetic_worker: false,
        }
    }
}

/// A running stack and a tenant on it.
#[derive(Debug)]
pub struct Stack {
    pub http: String,
    pub key: String,
    pub client: reqwest::Client,
    pub api: KairosProcess,
    pub schedulers: Vec<KairosProcess>,
    pub worker: Option<KairosProcess>,
    /// Stops the synthetic workers, if any.
    pub synthetic: tokio_util::sync::CancellationToken,
    pub pool: sqlx::PgPool,
    pub db: TestDatabase,
    pub etcd: TestEtcd,
}

impl Stack {
    pub async fn start(options: &StackOptions) -> Result<Self> {
        let db = database().await?;
        let etcd = etcd().await?;
        let http_port = free_port();
        let http = format!("http://127.0.0.1:{http_port}");
        let api = KairosProcess::spawn(
            &kairos(),
            &["api"],
            &env(&[
                ("KAIROS_DATABASE_URL", db.url().to_owned()),
                ("KAIROS_HTTP_ADDR", format!("127.0.0.1:{http_port}")),
                ("KAIROS_GRPC_ADDR", format!("127.0.0.1:{}", free_port())),
                ("KAIROS_ADMIN_TOKEN", ADMIN.to_owned()),
                ("RUST_LOG", "warn".to_owned()),
            ]),
        )?;
        api.wait_http_ready(&format!("{http}/readyz"), Duration::from_secs(60))
            .await?;
        let mut schedulers = Vec::new();
        let mut grpc_urls = Vec::new();
        for i in 0..options.schedulers {
            let metrics = free_port();
            let grpc_port = free_port();
            grpc_urls.push(format!("http://127.0.0.1:{grpc_port}"));
            let node = KairosProcess::spawn(
                &kairos(),
                &["scheduler"],
                &env(&[
                    ("KAIROS_DATABASE_URL", db.url().to_owned()),
                    ("KAIROS_ETCD_ENDPOINTS", etcd.endpoints().join(",")),
                    ("KAIROS_ETCD_PREFIX", etcd.key_prefix().to_owned()),
                    ("KAIROS_NODE_ID", format!("bench-sched-{i}")),
                    ("KAIROS_GRPC_ADDR", format!("127.0.0.1:{grpc_port}")),
                    ("KAIROS_METRICS_ADDR", format!("127.0.0.1:{metrics}")),
                    ("KAIROS_WORKER_TOKEN", WORKER_TOKEN.to_owned()),
                    (
                        "KAIROS_LEASE_TTL_SECONDS",
                        options.lease_ttl_seconds.to_string(),
                    ),
                    (
                        "KAIROS_HORIZON_SECONDS",
                        options.horizon_seconds.to_string(),
                    ),
                    ("KAIROS_RESCAN_SECONDS", "2".to_owned()),
                    ("KAIROS_LOOKAHEAD_MS", options.lookahead_ms.to_string()),
                    ("RUST_LOG", "warn".to_owned()),
                ]),
            )?;
            node.wait_http_ready(
                &format!("http://127.0.0.1:{metrics}/readyz"),
                Duration::from_secs(60),
            )
            .await?;
            schedulers.push(node);
        }
        let synthetic = tokio_util::sync::CancellationToken::new();
        let worker = if options.synthetic_worker {
            for url in grpc_urls {
                tokio::spawn(synthetic::worker(
                    url,
                    options.worker_slots as u32,
                    synthetic.clone(),
                ));
            }
            None
        } else {
            Some(KairosProcess::spawn(
                &kairos(),
                &["worker"],
                &env(&[
                    ("KAIROS_ETCD_ENDPOINTS", etcd.endpoints().join(",")),
                    ("KAIROS_ETCD_PREFIX", etcd.key_prefix().to_owned()),
                    ("KAIROS_WORKER_ID", "bench-worker".to_owned()),
                    ("KAIROS_WORKER_SLOTS", options.worker_slots.to_string()),
                    ("KAIROS_RUNTIME", "process".to_owned()),
                    ("KAIROS_WORKER_TOKEN", WORKER_TOKEN.to_owned()),
                    ("RUST_LOG", "warn".to_owned()),
                ]),
            )?)
        };
        let client = reqwest::Client::new();
        let tenant: Value = client
            .post(format!("{http}/v1/tenants"))
            .bearer_auth(ADMIN)
            .json(&json!({ "name": "bench" }))
            .send()
            .await?
            .json()
            .await?;
        let key = tenant["api_key"].as_str().context("api_key")?.to_owned();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(db.url())
            .await?;
        Ok(Self {
            http,
            key,
            client,
            api,
            schedulers,
            worker,
            synthetic,
            pool,
            db,
            etcd,
        })
    }

    /// Waits until the scheduler nodes own all 1024 shards between them (fenced in Postgres).
    pub async fn wait_all_shards_owned(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let owned: i64 =
                sqlx::query_scalar("SELECT count(*) FROM shard_fences WHERE token > 0")
                    .fetch_one(&self.pool)
                    .await?;
            if owned >= 1024 {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "only {owned} of 1024 shards claimed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A job running `command` on the worker (process runtime).
    pub async fn job(&self, command: &[&str]) -> Result<String> {
        let job: Value = self
            .client
            .post(format!("{}/v1/jobs", self.http))
            .bearer_auth(&self.key)
            .json(&json!({ "name": "bench", "image": "busybox:1.36", "command": command }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(job["id"].as_str().context("job id")?.to_owned())
    }

    /// `n` schedules with `body` on `job`, created by 16 concurrent clients.
    pub async fn schedules(&self, job: &str, n: usize, body: Value) -> Result<()> {
        let url = format!("{}/v1/jobs/{job}/schedules", self.http);
        let per = n.div_ceil(16);
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..16 {
            let count = per.min(n.saturating_sub(c * per));
            let (client, url, key, body) = (
                self.client.clone(),
                url.clone(),
                self.key.clone(),
                body.clone(),
            );
            tasks.spawn(async move {
                for _ in 0..count {
                    client
                        .post(&url)
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await?
                        .error_for_status()?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.synthetic.cancel();
    }
}

/// The synthetic worker: speaks `WorkerService` like `kairos worker`, but takes every offer and
/// reports each started run succeeded at once, without starting anything.
mod synthetic {
    use std::collections::HashMap;

    use kairos_proto::v1::{
        SchedulerMessage, WorkerMessage, scheduler_message, worker_message,
        worker_service_client::WorkerServiceClient,
    };
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tokio_util::sync::CancellationToken;

    use super::WORKER_TOKEN;

    fn message(kind: worker_message::Kind) -> WorkerMessage {
        WorkerMessage { kind: Some(kind) }
    }

    pub(super) async fn worker(url: String, slots: u32, stop: CancellationToken) {
        while !stop.is_cancelled() {
            if let Err(e) = session(&url, slots, &stop).await {
                eprintln!("synthetic worker: {url}: {e:#}; reconnecting");
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    async fn session(url: &str, slots: u32, stop: &CancellationToken) -> anyhow::Result<()> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
            .connect()
            .await?;
        let mut client = WorkerServiceClient::new(channel);
        let (tx, rx) = mpsc::channel::<WorkerMessage>(65_536);
        tx.send(message(worker_message::Kind::Hello(
            worker_message::Hello {
                worker_id: "synthetic".to_owned(),
                slots,
                ..Default::default()
            },
        )))
        .await?;
        tx.send(message(worker_message::Kind::Credit(
            worker_message::Credit {
                slots,
                cached_images: Vec::new(),
            },
        )))
        .await?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {WORKER_TOKEN}").parse()?);
        let mut inbound = client.connect(request).await?.into_inner();
        // Runs offered and not yet ended, with their shard.
        let mut held: HashMap<String, u32> = HashMap::new();
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                m = inbound.message() => m?,
            };
            let Some(SchedulerMessage { kind: Some(kind) }) = next else {
                anyhow::bail!("stream closed");
            };
            match kind {
                scheduler_message::Kind::Assignment(a) => {
                    held.insert(a.run_id.clone(), a.shard);
                    tx.send(message(worker_message::Kind::Ack(worker_message::Ack {
                        run_id: a.run_id,
                        accept: true,
                    })))
                    .await?;
                }
                scheduler_message::Kind::AckResult(r) => {
                    let Some(shard) = held.remove(&r.run_id) else {
                        continue;
                    };
                    if r.start {
                        tx.send(message(worker_message::Kind::Report(
                            worker_message::Report {
                                run_id: r.run_id,
                                state: "succeeded".to_owned(),
                                exit_code: Some(0),
                                shard,
                                ..Default::default()
                            },
                        )))
                        .await?;
                    }
                    let free = slots.saturating_sub(held.len() as u32);
                    tx.send(message(worker_message::Kind::Credit(
                        worker_message::Credit {
                            slots: free,
                            cached_images: Vec::new(),
                        },
                    )))
                    .await?;
                }
                scheduler_message::Kind::ReportAck(_) | scheduler_message::Kind::Cancel(_) => {}
            }
        }
    }
}

/// The `q` quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

/// Machine facts for a benchmark's heading: cores, CPU model, memory.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    format!(
        "{cores} cores, {model}, {:.1} GiB",
        mem_kib / 1024.0 / 1024.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[3.0], 0.99), Some(3.0));
    }
}
