//! Fire-lag benchmark of the whole path with real processes: an API, one scheduler node and a
//! worker (process runtime, command `true`) against a throwaway Postgres and etcd. For each rate
//! R it creates R every-second schedules (R fires/s), lets them fire, and reads back from
//! Postgres: lag from fire time to the worker holding the run (`started_at - fire_time`) p50,
//! p99 and max, missed and duplicated fires, and the scheduler's CPU and RSS.
//!
//! With `--synthetic`, an in-process synthetic worker takes every run and reports it at once
//! instead of `kairos worker` starting processes: the scheduler and the store alone.
//!
//! Run: `cargo build --release -p kairos-cli -p kairos-bench &&
//! target/release/fire_lag [--synthetic] [RATE...]`
//! A measurement, not a test: it never asserts, and it must never target anything but loopback.

use std::time::Duration;

use anyhow::{Context, Result};
use kairos_bench::{Stack, StackOptions, cpu_and_rss, machine};
use serde_json::json;

/// Seconds of fires measured per rate, after a warm-up.
const MEASURE_SECONDS: i64 = 20;
const WARMUP_SECONDS: u64 = 8;

type Ts = sqlx::types::chrono::DateTime<sqlx::types::chrono::Utc>;

async fn measure(rate: usize, synthetic_worker: bool) -> Result<String> {
    let stack = Stack::start(&StackOptions {
        // Runs offered ahead hold a slot from the look-ahead (1 s) on.
        worker_slots: (rate * 2).max(512),
        synthetic_worker,
        ..StackOptions::default()
    })
    .await?;
    stack.wait_all_shards_owned(Duration::from_secs(60)).await?;
    let job = stack.job(&["true"]).await?;
    stack
        .schedules(
            &job,
            rate,
            json!({ "cron": "* * * * * *", "overlap_policy": "allow" }),
        )
        .await?;
    let pid = stack.schedulers[0].pid().context("scheduler pid")?;
    tokio::time::sleep(Duration::from_secs(WARMUP_SECONDS)).await;
    let from: Ts = sqlx::query_scalar("SELECT date_trunc('second', now())")
        .fetch_one(&stack.pool)
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
    .fetch_one(&stack.pool)
    .await?;
    let (runs, duplicates, p50, p99, max) = row;
    let started: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runs WHERE trigger = 'schedule' AND started_at IS NOT NULL
           AND fire_time >= $1 AND fire_time < $1 + make_interval(secs => $2)",
    )
    .bind(from)
    .bind(MEASURE_SECONDS as f64)
    .fetch_one(&stack.pool)
    .await?;
    if std::env::var_os("KAIROS_BENCH_RUST_LOG").is_some() {
        eprintln!("--- scheduler output ---\n{}", stack.schedulers[0].output());
    }
    let expected = rate as i64 * MEASURE_SECONDS;
    let missed = (expected - (runs - duplicates)).max(0);
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{:.1}", s * 1000.0));
    let worker = if synthetic_worker {
        "synthetic"
    } else {
        "process"
    };
    Ok(format!(
        "| {rate} | {worker} | {expected} | {runs} | {started} | {missed} | {duplicates} | {} | {} | {} | {:.0} % | {:.0} |",
        ms(p50),
        ms(p99),
        ms(max),
        (cpu1 - cpu0) / (MEASURE_SECONDS as f64 + 5.0) * 100.0,
        rss
    ))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let synthetic = args.iter().any(|a| a == "--synthetic");
    let rates: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let rates = if rates.is_empty() {
        vec![100, 1000]
    } else {
        rates
    };
    println!("machine: {}", machine());
    println!(
        "| fires/s | worker | expected | runs | started | missed | duplicates | lag p50 ms | lag p99 ms | lag max ms | scheduler CPU | scheduler RSS MiB |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for rate in rates {
        match measure(rate, synthetic).await {
            Ok(line) => println!("{line}"),
            Err(e) => println!("| {rate} | failed: {e:#} |"),
        }
    }
    Ok(())
}
