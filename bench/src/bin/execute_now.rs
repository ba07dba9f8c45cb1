//! Execute-now benchmark: REST `POST /v1/jobs/{id}/runs` → the job's body starts, through the
//! whole stack of real processes (API, one scheduler, a worker with the process runtime), the
//! run durably in Postgres before the call returns. The job body is `stamp`, which prints the
//! instant it started; the latency is that instant minus the instant before the call. Two
//! loads: sequential calls (each waits for its run to end), and concurrent clients.
//!
//! Run: `cargo build --release -p kairos-cli -p kairos-bench &&
//! target/release/execute_now [SEQUENTIAL] [CLIENTS] [CALLS_PER_CLIENT]`
//! A measurement, not a test: it never asserts, and it must never target anything but loopback.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use kairos_bench::{Stack, StackOptions, machine, quantile};
use serde_json::{Value, json};

/// How often a client polls its run for its end. The measurement is the body's own stamp, so
/// this only sets how much load the polling adds: 50 clients polling every 2 ms would be the
/// heaviest load on the API.
const SEQUENTIAL_POLL: Duration = Duration::from_millis(5);
const CONCURRENT_POLL: Duration = Duration::from_millis(50);

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// One execute-now call: (ms from the call to the accepted answer, ms to the body's start).
async fn one(stack: &Stack, job: &str, key: &str, poll: Duration) -> Result<(f64, f64)> {
    let t0 = now_ns();
    let run: Value = stack
        .client
        .post(format!("{}/v1/jobs/{job}/runs", stack.http))
        .bearer_auth(&stack.key)
        .json(&json!({ "idempotency_key": key }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let accepted = now_ns();
    let id = run["id"].as_str().context("run id")?.to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let run: Value = stack
            .client
            .get(format!("{}/v1/runs/{id}", stack.http))
            .bearer_auth(&stack.key)
            .send()
            .await?
            .json()
            .await?;
        match run["state"].as_str() {
            Some("succeeded") => break,
            Some("failed" | "cancelled" | "skipped") => bail!("run {id} ended {run}"),
            _ if tokio::time::Instant::now() > deadline => bail!("run {id} did not end"),
            _ => tokio::time::sleep(poll).await,
        }
    }
    let logs: Value = stack
        .client
        .get(format!("{}/v1/runs/{id}/logs", stack.http))
        .bearer_auth(&stack.key)
        .send()
        .await?
        .json()
        .await?;
    let started: i128 = logs["content"]
        .as_str()
        .context("log content")?
        .trim()
        .parse()
        .context("the stamp")?;
    Ok(((accepted - t0) as f64 / 1e6, (started - t0) as f64 / 1e6))
}

fn line(name: &str, mut accepted: Vec<f64>, mut body: Vec<f64>) -> String {
    accepted.sort_by(f64::total_cmp);
    body.sort_by(f64::total_cmp);
    let f = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.2}"));
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} |",
        body.len(),
        f(quantile(&accepted, 0.5)),
        f(quantile(&accepted, 0.99)),
        f(quantile(&body, 0.5)),
        f(quantile(&body, 0.99)),
        f(body.last().copied()),
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sequential = args.first().copied().unwrap_or(1000);
    let clients = args.get(1).copied().unwrap_or(50);
    let per_client = args.get(2).copied().unwrap_or(20);
    let stamp = std::env::current_exe()?
        .parent()
        .context("bench dir")?
        .join("stamp");
    let stack = Stack::start(&StackOptions {
        worker_slots: 256,
        ..StackOptions::default()
    })
    .await?;
    stack.wait_all_shards_owned(Duration::from_secs(60)).await?;
    let job = stack.job(&[stamp.to_str().context("stamp path")?]).await?;
    // Warm-up: connections, caches, the first process spawns.
    for i in 0..20 {
        one(&stack, &job, &format!("warm-{i}"), SEQUENTIAL_POLL).await?;
    }
    println!("machine: {}", machine());
    println!(
        "| load | runs | accepted p50 ms | accepted p99 ms | body start p50 ms | body start p99 ms | body start max ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");

    let (mut accepted, mut body) = (Vec::new(), Vec::new());
    for i in 0..sequential {
        let (a, b) = one(&stack, &job, &format!("seq-{i}"), SEQUENTIAL_POLL).await?;
        accepted.push(a);
        body.push(b);
    }
    println!("{}", line("sequential", accepted, body));

    let stack = std::sync::Arc::new(stack);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (stack, job) = (stack.clone(), job.clone());
        tasks.spawn(async move {
            let mut out = Vec::new();
            for i in 0..per_client {
                out.push(one(&stack, &job, &format!("c{c}-{i}"), CONCURRENT_POLL).await?);
            }
            anyhow::Ok(out)
        });
    }
    let (mut accepted, mut body) = (Vec::new(), Vec::new());
    while let Some(done) = tasks.join_next().await {
        for (a, b) in done?? {
            accepted.push(a);
            body.push(b);
        }
    }
    println!(
        "{}",
        line(&format!("{clients} concurrent clients"), accepted, body)
    );
    Ok(())
}
