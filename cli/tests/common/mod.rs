//! A whole Kairos cluster of real processes for the tests in this folder: an API, scheduler
//! nodes and a worker (process runtime), configured only by the operator contract's variables,
//! and the checks of I1 (exactly once) and I2 (nothing lost) over the runs of its schedules.

// Each test file uses part of this module.
#![allow(dead_code)]

use std::{collections::BTreeMap, path::Path, time::Duration};

use kairos_testkit::{KairosProcess, TestDatabase, TestEtcd, database, etcd, free_port};
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_kairos");
pub const ADMIN: &str = "cluster-admin";
pub const WORKER_TOKEN: &str = "cluster-worker-token";
/// The key sealing registry passwords, the same on the API and every scheduler.
pub const SECRET_KEY: &str = "8f1e0a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7";

pub struct Cluster {
    pub http: String,
    /// The API's gRPC URL (what the CLI and the SDK call).
    pub grpc: String,
    /// `/metrics` URL of each scheduler, by index.
    pub metrics: Vec<String>,
    pub key: String,
    pub client: reqwest::Client,
    pub api: KairosProcess,
    pub schedulers: Vec<KairosProcess>,
    pub worker: KairosProcess,
    pub db: TestDatabase,
    pub etcd: TestEtcd,
}

/// How to start a cluster beyond its defaults.
#[derive(Default)]
pub struct Options {
    /// Extra environment of scheduler `i` (such as `FAILPOINTS`).
    pub scheduler_env: Vec<Vec<(String, String)>>,
    /// The etcd endpoints scheduler `i` uses instead of the cluster's (such as a proxy).
    pub scheduler_etcd: Vec<Option<String>>,
    /// Extra environment of the worker, overriding its defaults (such as `KAIROS_RUNTIME`).
    pub worker_env: Vec<(String, String)>,
}

pub fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// An API, `schedulers` scheduler nodes and a worker against a fresh database and etcd prefix.
pub async fn cluster(schedulers: usize) -> Cluster {
    let db = database().await.unwrap();
    let etcd = etcd().await.unwrap();
    cluster_with(schedulers, db, etcd, Options::default()).await
}

/// Like [`cluster`] on the given database and etcd, with `options`.
pub async fn cluster_with(
    schedulers: usize,
    db: TestDatabase,
    etcd: TestEtcd,
    options: Options,
) -> Cluster {
    let endpoints = etcd.endpoints().join(",");
    let prefix = etcd.key_prefix().to_owned();
    let (http_port, grpc_port) = (free_port(), free_port());
    let api_env = env(&[
        ("KAIROS_DATABASE_URL", db.url().to_owned()),
        ("KAIROS_HTTP_ADDR", format!("127.0.0.1:{http_port}")),
        ("KAIROS_GRPC_ADDR", format!("127.0.0.1:{grpc_port}")),
        ("KAIROS_ADMIN_TOKEN", ADMIN.to_owned()),
        ("KAIROS_SECRET_KEY", SECRET_KEY.to_owned()),
    ]);
    let api = KairosProcess::spawn(Path::new(BIN), &["api"], &api_env).unwrap();
    let http = format!("http://127.0.0.1:{http_port}");
    api.wait_http_ready(&format!("{http}/readyz"), Duration::from_secs(60))
        .await
        .unwrap();

    let mut nodes = Vec::new();
    let mut metrics_urls = Vec::new();
    for i in 0..schedulers {
        let metrics = free_port();
        let node_etcd = options
            .scheduler_etcd
            .get(i)
            .cloned()
            .flatten()
            .unwrap_or_else(|| endpoints.clone());
        let mut node_env = env(&[
            ("KAIROS_DATABASE_URL", db.url().to_owned()),
            ("KAIROS_ETCD_ENDPOINTS", node_etcd),
            ("KAIROS_ETCD_PREFIX", prefix.clone()),
            ("KAIROS_NODE_ID", format!("sched-{i}")),
            ("KAIROS_GRPC_ADDR", format!("127.0.0.1:{}", free_port())),
            ("KAIROS_METRICS_ADDR", format!("127.0.0.1:{metrics}")),
            ("KAIROS_LEASE_TTL_SECONDS", "3".to_owned()),
            ("KAIROS_WORKER_TOKEN", WORKER_TOKEN.to_owned()),
            ("KAIROS_HORIZON_SECONDS", "5".to_owned()),
            ("KAIROS_RESCAN_SECONDS", "1".to_owned()),
            ("KAIROS_WORKER_LOST_SECONDS", "6".to_owned()),
            ("KAIROS_SECRET_KEY", SECRET_KEY.to_owned()),
        ]);
        node_env.extend(options.scheduler_env.get(i).cloned().unwrap_or_default());
        let node = KairosProcess::spawn(Path::new(BIN), &["scheduler"], &node_env).unwrap();
        node.wait_http_ready(
            &format!("http://127.0.0.1:{metrics}/readyz"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        metrics_urls.push(format!("http://127.0.0.1:{metrics}/metrics"));
        nodes.push(node);
    }
    let mut worker_env = env(&[
        ("KAIROS_ETCD_ENDPOINTS", endpoints),
        ("KAIROS_ETCD_PREFIX", prefix),
        ("KAIROS_WORKER_ID", "worker-1".to_owned()),
        ("KAIROS_WORKER_SLOTS", "32".to_owned()),
        ("KAIROS_RUNTIME", "process".to_owned()),
        ("KAIROS_WORKER_TOKEN", WORKER_TOKEN.to_owned()),
    ]);
    worker_env.retain(|(k, _)| !options.worker_env.iter().any(|(o, _)| o == k));
    worker_env.extend(options.worker_env.iter().cloned());
    let worker = KairosProcess::spawn(Path::new(BIN), &["worker"], &worker_env).unwrap();

    let client = reqwest::Client::new();
    let tenant: Value = client
        .post(format!("{http}/v1/tenants"))
        .bearer_auth(ADMIN)
        .json(&json!({ "name": "acme" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = tenant["api_key"].as_str().unwrap().to_owned();
    let cluster = Cluster {
        http,
        grpc: format!("http://127.0.0.1:{grpc_port}"),
        metrics: metrics_urls,
        key,
        client,
        api,
        schedulers: nodes,
        worker,
        db,
        etcd,
    };
    cluster.wait_all_shards_owned().await;
    cluster
}

impl Cluster {
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .client
            .post(format!("{}{path}", self.http))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    pub async fn runs_of(&self, schedule: &str) -> Vec<Value> {
        let mut runs = Vec::new();
        let mut token = String::new();
        loop {
            let url = format!(
                "{}/v1/runs?schedule_id={schedule}&page_size=1000&page_token={token}",
                self.http
            );
            let page: Value = self
                .client
                .get(url)
                .bearer_auth(&self.key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            runs.extend(page["runs"].as_array().unwrap().iter().cloned());
            match page["next_page_token"].as_str().filter(|t| !t.is_empty()) {
                Some(t) => token = t.to_owned(),
                None => return runs,
            }
        }
    }

    /// Creates a job and `n` every-second schedules; returns the schedule ids.
    pub async fn every_second(&self, n: usize, command: &[&str]) -> Vec<String> {
        let job = self
            .post(
                "/v1/jobs",
                json!({ "name": "tick", "image": "busybox:1.36", "command": command }),
            )
            .await;
        let job = job["id"].as_str().unwrap().to_owned();
        let mut ids = Vec::new();
        for _ in 0..n {
            let s = self
                .post(
                    &format!("/v1/jobs/{job}/schedules"),
                    json!({ "cron": "* * * * * *", "overlap_policy": "allow" }),
                )
                .await;
            ids.push(s["id"].as_str().unwrap().to_owned());
        }
        ids
    }

    pub async fn pause_all(&self, schedules: &[String]) {
        for s in schedules {
            self.post(&format!("/v1/schedules/{s}/pause"), json!({}))
                .await;
        }
    }

    /// Scheduler `node`'s value of the metric `name` (a full name, such as
    /// `kairos_scheduler_shards_owned`); `None` while the node does not answer.
    pub async fn metric(&self, node: usize, name: &str) -> Option<f64> {
        let response = self.client.get(&self.metrics[node]).send().await.ok()?;
        let text = response.text().await.ok()?;
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
    }

    /// Shards scheduler `node` owns by its metrics; 0 while it does not answer.
    pub async fn shards_owned(&self, node: usize) -> u64 {
        self.metric(node, "kairos_scheduler_shards_owned")
            .await
            .unwrap_or(0.0) as u64
    }

    /// Waits until the nodes' `shards_owned` add up to every shard (the cluster has settled).
    pub async fn wait_all_shards_owned(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let mut owned = 0u64;
            for node in 0..self.metrics.len() {
                owned += self.shards_owned(node).await;
            }
            if owned == 1024 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {owned} of 1024 shards owned\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub fn logs(&self) -> String {
        let mut all = format!(
            "--- api ---\n{}\n--- worker ---\n{}\n",
            self.api.output(),
            self.worker.output()
        );
        for (i, s) in self.schedulers.iter().enumerate() {
            all.push_str(&format!("--- scheduler {i} ---\n{}\n", s.output()));
        }
        all
    }
}

/// Waits until no run of the schedules is scheduled, queued or running.
pub async fn settle(
    cluster: &Cluster,
    schedules: &[String],
    timeout: Duration,
) -> BTreeMap<String, Vec<Value>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut all = BTreeMap::new();
        let mut pending = 0;
        for s in schedules {
            let runs = cluster.runs_of(s).await;
            pending += runs
                .iter()
                .filter(|r| {
                    matches!(
                        r["state"].as_str(),
                        Some("scheduled" | "queued" | "running")
                    )
                })
                .count();
            all.insert(s.clone(), runs);
        }
        if pending == 0 {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pending} runs still pending\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// I1 and I2 for one schedule: fire times are unique, whole seconds without gaps, and each
/// ended with a recorded state. Returns how many succeeded.
pub fn check_exactly_once(schedule: &str, runs: &[Value]) -> usize {
    let mut fires: Vec<i64> = runs
        .iter()
        .map(|r| {
            chrono::DateTime::parse_from_rfc3339(r["fire_time"].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        })
        .collect();
    let total = fires.len();
    fires.sort_unstable();
    fires.dedup();
    assert_eq!(
        fires.len(),
        total,
        "schedule {schedule}: a fire ran twice (I1)"
    );
    for pair in fires.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            1000,
            "schedule {schedule}: a fire is missing between {} and {} (I2)",
            pair[0],
            pair[1]
        );
    }
    for r in runs {
        let state = r["state"].as_str().unwrap();
        let ok = state == "succeeded"
            || (state == "cancelled" && r["reason"] == "schedule_paused")
            || (state == "failed" && r["reason"] == "worker_lost");
        assert!(ok, "schedule {schedule}: unexpected end {r}");
    }
    runs.iter().filter(|r| r["state"] == "succeeded").count()
}
