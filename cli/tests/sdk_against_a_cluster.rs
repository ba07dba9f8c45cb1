//! The SDK (`kairos-sdk`) against a whole cluster of real processes (API, scheduler, worker with
//! the process runtime): `wait_for_run` and `watch_run` reach the real terminal states a worker
//! reports, `follow_logs` hands out the run's output, and a retry policy carries a client across
//! a restart of the API process. It lives here because it needs the `kairos` binary.

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::cluster;
use futures::TryStreamExt;
use kairos_sdk::{Client, NewJob, RetryPolicy, RunFilter};

#[tokio::test]
async fn runs_are_watched_waited_for_and_followed_to_their_real_end() {
    let mut c = cluster(1).await;
    let client = Client::builder(c.grpc.clone())
        .api_key(c.key.clone())
        .retry(RetryPolicy {
            max_attempts: 40,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        })
        .build()
        .unwrap();

    let ok = client
        .create_job(NewJob::new("ok", "busybox:1.36").command([
            "sh",
            "-c",
            "echo one; sleep 1; echo two",
        ]))
        .await
        .unwrap();
    let run = client
        .execute_now(&ok.id, Some("sdk-ok"))
        .await
        .unwrap()
        .run;
    let events: Vec<_> = client
        .watch_run(&run.id)
        .map_ok(|e| e.to_state)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events, ["queued", "running", "succeeded"], "{}", c.logs());
    let ended = client
        .wait_for_run(&run.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        (ended.state.as_str(), ended.exit_code),
        ("succeeded", Some(0))
    );
    assert!(ended.worker_id.is_some() && ended.started_at.is_some());
    assert_eq!(
        client.run_logs(&run.id).await.unwrap().content,
        "one\ntwo\n"
    );

    // A failing run: wait answers it failed, with the reason and the exit code.
    let bad = client
        .create_job(NewJob::new("bad", "busybox:1.36").command(["sh", "-c", "echo no >&2; exit 3"]))
        .await
        .unwrap();
    let run = client.execute_now(&bad.id, None).await.unwrap().run;
    let mut seen = Vec::new();
    let ended = client
        .wait_for_run_with(&run.id, Duration::from_secs(60), |e| {
            seen.push(e.to_state.clone())
        })
        .await
        .unwrap();
    assert_eq!(ended.state, "failed");
    assert_eq!(
        (ended.reason.as_deref(), ended.exit_code),
        (Some("exit_code"), Some(3))
    );
    assert_eq!(seen.last().map(String::as_str), Some("failed"));

    // Following the output of a fresh run ends with the run and hands out all of it once.
    let run = client.execute_now(&ok.id, None).await.unwrap().run;
    let chunks: Vec<_> = client
        .follow_logs(&run.id, Duration::from_millis(200))
        .try_collect()
        .await
        .unwrap();
    let text: String = chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(text, "one\ntwo\n");
    assert!(chunks.iter().all(|c| !c.gap));

    // The API process restarts while a run is being waited for: the wait carries on.
    let slow = client
        .create_job(NewJob::new("slow", "busybox:1.36").command(["sh", "-c", "sleep 4; echo late"]))
        .await
        .unwrap();
    let run = client
        .execute_now(&slow.id, Some("sdk-slow"))
        .await
        .unwrap()
        .run;
    let waiter = tokio::spawn({
        let (client, id) = (client.clone(), run.id.clone());
        async move { client.wait_for_run(id, Duration::from_secs(90)).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.api.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.api.restart().await.unwrap();
    let ended = waiter.await.unwrap().unwrap();
    assert_eq!(ended.state, "succeeded", "{}", c.logs());
    // And the same key after the restart still answers the same run.
    let again = client
        .execute_now(&slow.id, Some("sdk-slow"))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.run.id, run.id);
    let all: Vec<_> = client
        .runs(RunFilter::new().job(&slow.id), 1)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
}
