//! A scheduler process crashing (abort, as abrupt as SIGKILL) at the instants where a crash
//! hurts most, armed through the `fail` crate's `FAILPOINTS` variable (the test build of the
//! binary compiles the crash points in):
//! - right after materializing fires, before anything in memory knows them;
//! - right after acking a run (`running` in the store) before telling its worker to start;
//! - right after recording a run's end, before acknowledging the worker's report.
//!
//! The surviving node takes the shards over; every fire still ends exactly once (I1), none is
//! lost (I2), and a run whose worker was never told to start ends `failed/worker_lost` rather
//! than hanging in `running`.

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Options, check_exactly_once, cluster_with, settle};
use kairos_testkit::{database, etcd};
use tokio::time::{Instant, sleep};

/// Crashes scheduler 0 at `point` (after `skip` passes through it), then checks every fire.
async fn crash_at(point: &str, skip: u32) -> Vec<serde_json::Value> {
    let failpoints = format!("{point}={skip}*off->return");
    let options = Options {
        scheduler_env: vec![vec![("FAILPOINTS".to_owned(), failpoints)]],
        ..Options::default()
    };
    let mut cluster =
        cluster_with(2, database().await.unwrap(), etcd().await.unwrap(), options).await;
    let schedules = cluster.every_second(10, &["true"]).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.schedulers[0].try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "{point} was never reached\n{}",
            cluster.logs()
        );
        sleep(Duration::from_millis(100)).await;
    }
    // The survivor claims the shards once the dead node's lease (3 s) expires.
    cluster.wait_all_shards_owned().await;
    sleep(Duration::from_secs(4)).await;
    cluster.pause_all(&schedules).await;
    let all = settle(&cluster, &schedules, Duration::from_secs(90)).await;
    for (schedule, runs) in &all {
        check_exactly_once(schedule, runs);
    }
    // Keep the crashed node's output out of the way of the assertion messages.
    cluster.schedulers[0].kill();
    all.into_values().flatten().collect()
}

#[tokio::test]
async fn a_crash_right_after_materializing_loses_no_fire() {
    let runs = crash_at("scheduler::after_materialize", 0).await;
    assert!(runs.iter().filter(|r| r["state"] == "succeeded").count() >= 10 * 4);
}

#[tokio::test]
async fn a_crash_right_after_the_ack_fails_that_run_as_worker_lost() {
    let runs = crash_at("scheduler::after_ack", 3).await;
    assert!(
        runs.iter()
            .any(|r| r["state"] == "failed" && r["reason"] == "worker_lost"),
        "the acked run did not end worker_lost: {runs:?}"
    );
    assert!(runs.iter().filter(|r| r["state"] == "succeeded").count() >= 10 * 4);
}

#[tokio::test]
async fn a_crash_right_after_recording_a_run_end_keeps_that_end() {
    let runs = crash_at("scheduler::after_finish", 3).await;
    // The worker re-sends the unacknowledged report to the shard's new owner, which finds the
    // end already recorded: nothing ends twice, nothing ends worker_lost.
    assert!(
        runs.iter().all(|r| r["reason"] != "worker_lost"),
        "a recorded run was failed afterwards: {runs:?}"
    );
    assert!(runs.iter().filter(|r| r["state"] == "succeeded").count() >= 10 * 4);
}
