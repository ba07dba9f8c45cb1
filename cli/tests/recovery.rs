//! The cluster riding out the loss of what it depends on, with real processes: an etcd restart,
//! a Postgres restart, and one scheduler cut off from etcd by a partition. In each case every
//! fire of every-second schedules runs exactly once (I1) and none is lost (I2); the cut-off node
//! stops firing on its own before another node takes its shards (I8).

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Cluster, Options, check_exactly_once, cluster_with, settle};
use kairos_testkit::{TcpProxy, database, dedicated_postgres, etcd, owned_etcd};
use tokio::time::{Instant, sleep};

/// Pauses the schedules, waits for their runs to end and checks I1 and I2 on each; returns
/// the fires per schedule.
async fn check_all(cluster: &Cluster, schedules: &[String]) -> Vec<usize> {
    // The API may still be reconnecting to a restarted database: retry the first pause.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = cluster
            .client
            .post(format!(
                "{}/v1/schedules/{}/pause",
                cluster.http, schedules[0]
            ))
            .bearer_auth(&cluster.key)
            .json(&serde_json::json!({}))
            .send()
            .await;
        if response.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cannot pause\n{}",
            cluster.logs()
        );
        sleep(Duration::from_millis(500)).await;
    }
    cluster.pause_all(&schedules[1..]).await;
    let all = settle(cluster, schedules, Duration::from_secs(90)).await;
    all.iter()
        .map(|(schedule, runs)| {
            check_exactly_once(schedule, runs);
            runs.len()
        })
        .collect()
}

#[tokio::test]
async fn an_etcd_restart_loses_and_duplicates_nothing() {
    let db = database().await.unwrap();
    let etcd = owned_etcd().await.unwrap();
    let mut cluster = cluster_with(2, db, etcd, Options::default()).await;
    let schedules = cluster.every_second(10, &["true"]).await;
    sleep(Duration::from_secs(3)).await;

    // Down for longer than the lease TTL (3 s): both nodes stop firing (I8) and lose their
    // shards; when etcd is back they register again, claim, recover and catch up.
    cluster.etcd.stop().await.unwrap();
    sleep(Duration::from_secs(5)).await;
    cluster.etcd.start().await.unwrap();
    cluster.wait_all_shards_owned().await;
    sleep(Duration::from_secs(4)).await;

    let fires = check_all(&cluster, &schedules).await;
    // About 3 s before, 5 s during and 4+ s after the outage: the fires of the outage ran late.
    assert!(
        fires.iter().all(|&n| n >= 11),
        "fires per schedule {fires:?}\n{}",
        cluster.logs()
    );
}

#[tokio::test]
async fn a_postgres_restart_loses_and_duplicates_nothing() {
    let postgres = dedicated_postgres().await.unwrap();
    let db = postgres.database().await.unwrap();
    let cluster = cluster_with(2, db, etcd().await.unwrap(), Options::default()).await;
    let schedules = cluster.every_second(10, &["true"]).await;
    sleep(Duration::from_secs(3)).await;

    // Fires due while the database is down stay `scheduled` and are queued once it is back.
    postgres.stop().await.unwrap();
    sleep(Duration::from_secs(4)).await;
    postgres.start().await.unwrap();
    sleep(Duration::from_secs(5)).await;

    let fires = check_all(&cluster, &schedules).await;
    assert!(
        fires.iter().all(|&n| n >= 11),
        "fires per schedule {fires:?}\n{}",
        cluster.logs()
    );
}

#[tokio::test]
async fn a_scheduler_cut_off_from_etcd_stops_firing_before_its_shards_move() {
    let db = database().await.unwrap();
    let etcd = etcd().await.unwrap();
    // Scheduler 0 reaches etcd only through a proxy the test can cut; scheduler 1 directly.
    let proxy = TcpProxy::for_url(&etcd.endpoints()[0]).await.unwrap();
    let options = Options {
        scheduler_etcd: vec![Some(proxy.url()), None],
        ..Options::default()
    };
    let cluster = cluster_with(2, db, etcd, options).await;
    let schedules = cluster.every_second(10, &["true"]).await;
    sleep(Duration::from_secs(3)).await;
    let before = cluster.shards_owned(0).await;
    assert!(before > 0, "scheduler 0 owns no shard\n{}", cluster.logs());

    proxy.cut();
    let cut_at = Instant::now();
    // I8: scheduler 0 gives up its shards on its own clock, without hearing from etcd...
    let mut stopped_at = None;
    let mut taken_at = None;
    while stopped_at.is_none() || taken_at.is_none() {
        let now = Instant::now();
        if stopped_at.is_none() && cluster.shards_owned(0).await == 0 {
            stopped_at = Some(now);
        }
        if taken_at.is_none() && cluster.shards_owned(1).await == 1024 {
            taken_at = Some(now);
        }
        assert!(
            now - cut_at < Duration::from_secs(30),
            "stopped {stopped_at:?}, taken {taken_at:?}\n{}",
            cluster.logs()
        );
        sleep(Duration::from_millis(50)).await;
    }
    let (stopped_at, taken_at) = (stopped_at.unwrap(), taken_at.unwrap());
    // ...within the lease TTL (3 s), and before scheduler 1 holds all of them.
    assert!(
        stopped_at - cut_at <= Duration::from_secs(3),
        "scheduler 0 still owned shards {:?} after the cut\n{}",
        stopped_at - cut_at,
        cluster.logs()
    );
    assert!(
        stopped_at < taken_at,
        "scheduler 1 held every shard before scheduler 0 stopped\n{}",
        cluster.logs()
    );
    let queued_then = cluster
        .metric(0, "kairos_scheduler_runs_queued_total")
        .await
        .unwrap();
    sleep(Duration::from_secs(3)).await;
    let queued_later = cluster
        .metric(0, "kairos_scheduler_runs_queued_total")
        .await
        .unwrap();
    assert_eq!(
        queued_then,
        queued_later,
        "scheduler 0 fired while cut off\n{}",
        cluster.logs()
    );

    // Healed, scheduler 0 joins again and takes its share back.
    proxy.heal();
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.shards_owned(0).await == 0 {
        assert!(
            Instant::now() < deadline,
            "scheduler 0 never rejoined\n{}",
            cluster.logs()
        );
        sleep(Duration::from_millis(250)).await;
    }
    cluster.wait_all_shards_owned().await;
    sleep(Duration::from_secs(3)).await;

    let fires = check_all(&cluster, &schedules).await;
    assert!(
        fires.iter().all(|&n| n >= 10),
        "fires per schedule {fires:?}\n{}",
        cluster.logs()
    );
}
