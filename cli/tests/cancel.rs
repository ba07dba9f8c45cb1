//! Cancelling a running run, end to end with real processes: the API records the request, the
//! shard's scheduler tells the run's worker, the worker stops the process (SIGTERM, grace,
//! SIGKILL) and reports it, and the run ends `cancelled` with one event per transition.

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::cluster;
use serde_json::{Value, json};

#[tokio::test]
async fn a_running_run_that_is_cancelled_is_stopped_and_ends_cancelled() {
    let cluster = cluster(1).await;
    let job = cluster
        .post(
            "/v1/jobs",
            json!({ "name": "long", "image": "busybox:1.36", "command": ["sleep", "300"] }),
        )
        .await;
    let job = job["id"].as_str().unwrap().to_owned();
    let run = cluster
        .post(&format!("/v1/jobs/{job}/runs"), json!({}))
        .await;
    let run = run["id"].as_str().unwrap().to_owned();
    let get = |run: String| {
        let (client, http, key) = (
            cluster.client.clone(),
            cluster.http.clone(),
            cluster.key.clone(),
        );
        async move {
            client
                .get(format!("{http}/v1/runs/{run}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while get(run.clone()).await["state"] != "running" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never started\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let asked = cluster
        .post(&format!("/v1/runs/{run}/cancel"), json!({}))
        .await;
    assert_eq!(
        asked["state"], "running",
        "the cancel is a request: {asked}"
    );

    // `sleep` ends on SIGTERM: well within the grace, the run is stopped and recorded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let ended = loop {
        let r = get(run.clone()).await;
        if r["state"] != "running" {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the running run was never stopped\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ended["state"], "cancelled", "{ended}");
    let events: Value = cluster
        .client
        .get(format!("{}/v1/runs/{run}/events", cluster.http))
        .bearer_auth(&cluster.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let steps: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to_state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(steps, ["queued", "running", "cancelled"], "{events}");
}
