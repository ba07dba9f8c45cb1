//! Failover benchmark: two scheduler nodes share the 1024 shards under a steady load of
//! every-second schedules (process runtime, command `true`); one node is killed with SIGKILL,
//! the other takes its shards over once the dead node's etcd lease expires. Reported from
//! Postgres over the fires due from 5 s before the kill to 25 s after: missed and duplicated
//! fires, the worst lateness (`started_at - fire_time`) before and after the kill, and how long
//! until every shard was fenced by the survivor.
//!
//! With `--synthetic`, an in-process synthetic worker takes every run at once instead of
//! `kairos worker` starting processes: the scheduler's own failover, without the worker's
//! backlog of process starts.
//!
//! Run: `cargo build --release -p kairos-cli -p kairos-bench &&
//! target/release/failover [--synthetic] [RATE] [LEASE_TTL_SECONDS]`
//! A measurement, not a test: it never asserts, and it must never target anything but loopback.

use std::time::Duration;

use anyhow::Result;
use kairos_bench::{Stack, StackOptions, machine};
use serde_json::json;

type Ts = sqlx::types::chrono::DateTime<sqlx::types::chrono::Utc>;

#[tokio::main]
async fn main() -> Result<()> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let synthetic_worker = raw.iter().any(|a| a == "--synthetic");
    let args: Vec<u64> = raw.iter().filter_map(|a| a.parse().ok()).collect();
    let rate = args.first().copied().unwrap_or(500) as usize;
    let ttl = args.get(1).copied().unwrap_or(10);
    let mut stack = Stack::start(&StackOptions {
        schedulers: 2,
        worker_slots: (rate * 2).max(512),
        lease_ttl_seconds: ttl,
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
    // Both nodes balanced and firing.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let owned_by_victim: i64 =
        sqlx::query_scalar("SELECT count(*) FROM shard_fences WHERE owner = 'bench-sched-0'")
            .fetch_one(&stack.pool)
            .await?;
    let killed_at: Ts = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&stack.pool)
        .await?;
    stack.schedulers[0].kill();
    // Until the survivor has fenced every shard.
    let started = tokio::time::Instant::now();
    let mut takeover = None;
    while started.elapsed() < Duration::from_secs(60) {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM shard_fences WHERE owner <> 'bench-sched-1'")
                .fetch_one(&stack.pool)
                .await?;
        if left == 0 {
            takeover = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    let row: (i64, i64, Option<f64>, Option<f64>, Option<f64>, i64) = sqlx::query_as(
        "WITH w AS (
             SELECT schedule_id, fire_time, started_at, state FROM runs
             WHERE trigger = 'schedule'
               AND fire_time >= date_trunc('second', $1) - interval '5 seconds'
               AND fire_time < date_trunc('second', $1) + interval '25 seconds')
         SELECT count(*),
                count(*) - count(DISTINCT (schedule_id, fire_time)),
                max(extract(epoch FROM started_at - fire_time)) FILTER (WHERE fire_time < $1)::float8,
                max(extract(epoch FROM started_at - fire_time)) FILTER (WHERE fire_time >= $1)::float8,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - fire_time)),
                count(*) FILTER (WHERE state = 'skipped')
         FROM w",
    )
    .bind(killed_at)
    .fetch_one(&stack.pool)
    .await?;
    let (runs, duplicates, worst_before, worst_after, p99, skipped) = row;
    let expected = rate as i64 * 30;
    let missed = (expected - (runs - duplicates)).max(0);
    let s = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.2}"));
    println!("machine: {}", machine());
    println!(
        "| fires/s | worker | lease TTL s | shards of the killed node | takeover s | expected | runs | missed | skipped | duplicates | worst lateness before kill s | worst lateness after kill s | lateness p99 s |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {rate} | {} | {ttl} | {owned_by_victim} | {} | {expected} | {runs} | {missed} | {skipped} | {duplicates} | {} | {} | {} |",
        if synthetic_worker {
            "synthetic"
        } else {
            "process"
        },
        takeover.map_or("-".to_owned(), |d| format!("{:.2}", d.as_secs_f64())),
        s(worst_before),
        s(worst_after),
        s(p99),
    );
    Ok(())
}
