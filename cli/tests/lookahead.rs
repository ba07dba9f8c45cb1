//! Runs offered ahead of their fire, end to end with real processes: the scheduler offers a
//! scheduled run to the worker a look-ahead (2 s by default) before its fire, the worker holds
//! it prepared, and the fire starts it. A cancel or a pause that commits while the worker holds
//! the run means it never starts (I4); an untouched one starts on time through the same path.

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::{path::Path, time::Duration};

use chrono::{DateTime, SubsecRound, Utc};
use common::{Cluster, cluster};
use serde_json::{Value, json};

/// A job whose body appends to `marker`, and a one-off schedule of it firing at `at`.
async fn one_off(cluster: &Cluster, marker: &Path, at: DateTime<Utc>) -> (String, String) {
    let job = cluster
        .post(
            "/v1/jobs",
            json!({
                "name": "marker",
                "image": "busybox:1.36",
                "command": ["sh", "-c", format!("echo started >> {}", marker.display())],
            }),
        )
        .await;
    let job = job["id"].as_str().unwrap().to_owned();
    let schedule = cluster
        .post(
            &format!("/v1/jobs/{job}/schedules"),
            json!({ "at": at.to_rfc3339() }),
        )
        .await;
    (job, schedule["id"].as_str().unwrap().to_owned())
}

/// Waits for the schedule's one run to be materialized; returns it.
async fn materialized(cluster: &Cluster, schedule: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(run) = cluster.runs_of(schedule).await.into_iter().next() {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fire was never materialized\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sleep_until(t: DateTime<Utc>) {
    if let Ok(d) = (t - Utc::now()).to_std() {
        tokio::time::sleep(d).await;
    }
}

async fn run_state(cluster: &Cluster, run: &str) -> Value {
    cluster
        .client
        .get(format!("{}/v1/runs/{run}", cluster.http))
        .bearer_auth(&cluster.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_run_cancelled_or_paused_while_held_ahead_never_starts_and_the_others_start_on_time() {
    let cluster = cluster(1).await;
    let dir = tempfile::tempdir().unwrap();
    let fire = (Utc::now() + chrono::Duration::seconds(6)).trunc_subsecs(0);
    let (cancelled_marker, paused_marker, kept_marker) = (
        dir.path().join("cancelled"),
        dir.path().join("paused"),
        dir.path().join("kept"),
    );
    let (_, cancelled) = one_off(&cluster, &cancelled_marker, fire).await;
    let (_, paused) = one_off(&cluster, &paused_marker, fire).await;
    let (_, kept) = one_off(&cluster, &kept_marker, fire).await;
    let cancelled_run = materialized(&cluster, &cancelled).await;
    materialized(&cluster, &paused).await;
    materialized(&cluster, &kept).await;

    // One second before the fire: inside the 2 s look-ahead, the worker holds all three.
    sleep_until(fire - chrono::Duration::seconds(1)).await;
    let run_id = cancelled_run["id"].as_str().unwrap();
    cluster
        .post(&format!("/v1/runs/{run_id}/cancel"), json!({}))
        .await;
    cluster
        .post(&format!("/v1/schedules/{paused}/pause"), json!({}))
        .await;

    sleep_until(fire + chrono::Duration::seconds(3)).await;
    let kept_run = materialized(&cluster, &kept).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while run_state(&cluster, kept_run["id"].as_str().unwrap()).await["state"] != "succeeded" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the untouched run did not succeed\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(kept_marker.exists(), "the untouched run's body ran");
    assert!(
        cluster
            .metric(0, "kairos_scheduler_runs_started_ahead_total")
            .await
            .unwrap_or(0.0)
            >= 1.0,
        "the untouched run started through the look-ahead path\n{}",
        cluster.logs()
    );

    let c = run_state(&cluster, run_id).await;
    assert_eq!(c["state"], "cancelled", "{c}");
    let p = cluster.runs_of(&paused).await;
    assert_eq!(p.len(), 1);
    assert_eq!(p[0]["state"], "cancelled", "{p:?}");
    assert_eq!(p[0]["reason"], "schedule_paused", "{p:?}");
    assert!(
        !cancelled_marker.exists(),
        "a run cancelled while held ahead started\n{}",
        cluster.logs()
    );
    assert!(
        !paused_marker.exists(),
        "a run paused while held ahead started (I4)\n{}",
        cluster.logs()
    );
}
