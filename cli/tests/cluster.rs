//! The scheduler cluster end to end with real processes: an API, scheduler nodes and a worker
//! (process runtime) configured only by the operator contract's variables, against a real
//! Postgres and etcd. Every-second schedules fire exactly once per fire time (I1), none is lost
//! (I2), also when a scheduler is killed with SIGKILL mid-run.

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{check_exactly_once, cluster, settle};

#[tokio::test]
async fn every_fire_of_every_second_schedules_runs_exactly_once_across_two_schedulers() {
    let cluster = cluster(2).await;
    let schedules = cluster.every_second(20, &["true"]).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    cluster.pause_all(&schedules).await;
    let all = settle(&cluster, &schedules, Duration::from_secs(60)).await;
    let mut succeeded = 0;
    for (schedule, runs) in &all {
        succeeded += check_exactly_once(schedule, runs);
        assert!(runs.iter().all(|r| r["state"] != "failed"), "{runs:?}");
    }
    // 20 schedules for ~8 s: well over a hundred runs, none lost, none doubled.
    assert!(
        succeeded >= 20 * 5,
        "only {succeeded} runs succeeded\n{}",
        cluster.logs()
    );
}

#[tokio::test]
async fn a_scheduler_killed_with_sigkill_loses_and_duplicates_nothing() {
    let mut cluster = cluster(2).await;
    let schedules = cluster.every_second(10, &["true"]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.schedulers[0].kill();
    // The lease (3 s) expires, the survivor claims the shards, recovers and catches up.
    tokio::time::sleep(Duration::from_secs(10)).await;
    cluster.pause_all(&schedules).await;
    let all = settle(&cluster, &schedules, Duration::from_secs(60)).await;
    let mut succeeded = 0;
    for (schedule, runs) in &all {
        succeeded += check_exactly_once(schedule, runs);
        // Fires continued after the kill: the last one is recent.
        assert!(
            runs.len() >= 10,
            "schedule {schedule} stopped firing: {} runs\n{}",
            runs.len(),
            cluster.logs()
        );
    }
    assert!(
        succeeded >= 10 * 10,
        "only {succeeded} runs succeeded\n{}",
        cluster.logs()
    );
}
