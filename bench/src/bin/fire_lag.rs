//! Fire-lag benchmark of the whole path with real processes: an API, one scheduler node and a
//! worker (process runtime, command `true`) against a throwaway Postgres and etcd. For each rate
//! R it creates R every-second schedules (R fires/s), lets them fire, and reads back from
//! Postgres: lag from fire time to the worker holding the run (`started_at - fire_time`) p50,
//! p99 and max, missed and duplicated fires, and the scheduler's CPU and RSS.
//!
//! Run: `cargo build --release -p kairos-cli -p kairos-bench && target/release/fire_lag [RATE...]`
//! A measurement, not a test: it never asserts, and it must never target anything but loopback.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use kairos_testkit::{KairosProcess, database, etcd, free_port};
use serde_json::{Value, json};

const WORKER_TOKEN: &str = "bench-worker-token";
const ADMIN: &str = "bench-admin";
/// Seconds of fires measured per rate, after a warm-up.
const MEASURE_SECONDS: i64 = 20;
const WARMUP_SECONDS: u64 = 8;

fn kairos() -> PathBuf {
    std::env::var_os("KAIROS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/kairos"))
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// utime + stime of a process in seconds, and its RSS in MiB.
fn cpu_and_rss(pid: u32) -> (f64, f64) {
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

async fn measure(rate: usize) -> Result<String> {
    let db = database().await?;
    let etcd = etcd().await?;
    let (http_port, sched_metrics) = (free_port(), free_port());
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
    let scheduler = KairosProcess::spawn(
        &kairos(),
        &["scheduler"],
        &env(&[
            ("KAIROS_DATABASE_URL", db.url().to_owned()),
            ("KAIROS_ETCD_ENDPOINTS", etcd.endpoints().join(",")),
            ("KAIROS_ETCD_PREFIX", etcd.key_prefix().to_owned()),
            ("KAIROS_NODE_ID", "bench-sched".to_owned()),
            ("KAIROS_GRPC_ADDR", format!("127.0.0.1:{}", free_port())),
            ("KAIROS_METRICS_ADDR", format!("127.0.0.1:{sched_metrics}")),
            ("KAIROS_WORKER_TOKEN", WORKER_TOKEN.to_owned()),
            ("KAIROS_HORIZON_SECONDS", "10".to_owned()),
            ("KAIROS_RESCAN_SECONDS", "2".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ]),
    )?;
    scheduler
        .wait_http_ready(
            &format!("http://127.0.0.1:{sched_metrics}/readyz"),
            Duration::from_secs(60),
        )
        .await?;
    let _worker = KairosProcess::spawn(
        &kairos(),
        &["worker"],
        &env(&[
            ("KAIROS_ETCD_ENDPOINTS", etcd.endpoints().join(",")),
            ("KAIROS_ETCD_PREFIX", etcd.key_prefix().to_owned()),
            ("KAIROS_WORKER_ID", "bench-worker".to_owned()),
            ("KAIROS_WORKER_SLOTS", "512".to_owned()),
            ("KAIROS_RUNTIME", "process".to_owned()),
            ("KAIROS_WORKER_TOKEN", WORKER_TOKEN.to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ]),
    )?;
    // Let the node claim and fence all 1024 shards.
    tokio::time::sleep(Duration::from_secs(5)).await;

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
    let job: Value = client
        .post(format!("{http}/v1/jobs"))
        .bearer_auth(&key)
        .json(&json!({ "name": "tick", "image": "busybox:1.36", "command": ["true"] }))
        .send()
        .await?
        .json()
        .await?;
    let job_id = job["id"].as_str().context("job id")?.to_owned();
    for _ in 0..rate {
        client
            .post(format!("{http}/v1/jobs/{job_id}/schedules"))
            .bearer_auth(&key)
            .json(&json!({ "cron": "* * * * * *", "overlap_policy": "allow" }))
            .send()
            .await?
            .error_for_status()?;
    }
    let pid = scheduler.pid().context("scheduler pid")?;
    tokio::time::sleep(Duration::from_secs(WARMUP_SECONDS)).await;
    let pool = sqlx::PgPool::connect(db.url()).await?;
    let from: chrono_like::Ts = sqlx::query_scalar("SELECT date_trunc('second', now())")
        .fetch_one(&pool)
        .await?;
    let (cpu0, _) = cpu_and_rss(pid);
    tokio::time::sleep(Duration::from_secs(MEASURE_SECONDS as u64 + 5)).await;
    let (cpu1, rss) = cpu_and_rss(pid);
    // The window's fires: expected rate × seconds; lag of every run the worker took.
    let row: (i64, i64, Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "WITH w AS (
             SELECT schedule_id, fire_time, started_at FROM runs
             WHERE trigger = 'schedule' AND fire_time >= $1 AND fire_time < $1 + make_interval(secs => $2))
         SELECT count(*),
                count(*) - count(DISTINCT (schedule_id, fire_time)),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - fire_time)),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - fire_time)),
                max(extract(epoch FROM started_at - fire_time))::float8
         FROM w",
    )
    .bind(from)
    .bind(MEASURE_SECONDS as f64)
    .fetch_one(&pool)
    .await?;
    let (runs, duplicates, p50, p99, max) = row;
    let expected = rate as i64 * MEASURE_SECONDS;
    let missed = (expected - (runs - duplicates)).max(0);
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{:.1}", s * 1000.0));
    Ok(format!(
        "| {rate} | {expected} | {runs} | {missed} | {duplicates} | {} | {} | {} | {:.0} % | {:.0} |",
        ms(p50),
        ms(p99),
        ms(max),
        (cpu1 - cpu0) / (MEASURE_SECONDS as f64 + 5.0) * 100.0,
        rss
    ))
}

/// Postgres `timestamptz` read back as text-free value for re-binding.
mod chrono_like {
    pub type Ts = sqlx::types::chrono::DateTime<sqlx::types::chrono::Utc>;
}

#[tokio::main]
async fn main() -> Result<()> {
    let rates: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rates = if rates.is_empty() {
        vec![100, 1000]
    } else {
        rates
    };
    println!(
        "| fires/s | expected | runs | missed | duplicates | lag p50 ms | lag p99 ms | lag max ms | scheduler CPU | scheduler RSS MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for rate in rates {
        match measure(rate).await {
            Ok(line) => println!("{line}"),
            Err(e) => println!("| {rate} | failed: {e:#} |"),
        }
    }
    Ok(())
}
