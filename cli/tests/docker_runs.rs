//! What a new user sees, end to end with real processes and the real Docker engine: an API, a
//! scheduler and a worker with the Docker runtime (the default), and jobs on a local busybox
//! image that print, exit 3, eat memory past their 128 MiB, sleep past their timeout, and get
//! cancelled while running — each ending as the REST API then reports it, with its output.
//! Needs a Docker engine: fails, never skips, without one.

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Cluster, Options, cluster_with};
use kairos_testkit::{ContainerCleanup, TestImage, TestRegistry, database, etcd, require_docker};
use serde_json::{Value, json};

async fn get(cluster: &Cluster, path: &str) -> Value {
    cluster
        .client
        .get(format!("{}{path}", cluster.http))
        .bearer_auth(&cluster.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Creates a job of `command` (128 MiB, `timeout` s) and executes it now; returns the run id.
async fn execute(cluster: &Cluster, image: &str, command: &[&str], timeout: u32) -> String {
    let job = cluster
        .post(
            "/v1/jobs",
            json!({
                "name": "docker e2e",
                "image": image,
                "command": command,
                "memory_mb": 128,
                "timeout_seconds": timeout,
            }),
        )
        .await;
    let job = job["id"].as_str().unwrap().to_owned();
    let run = cluster
        .post(&format!("/v1/jobs/{job}/runs"), json!({}))
        .await;
    run["id"].as_str().unwrap().to_owned()
}

async fn wait_state(cluster: &Cluster, run: &str, done: impl Fn(&str) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let r = get(cluster, &format!("/v1/runs/{run}")).await;
        if r["state"].as_str().is_some_and(&done) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run} stuck at {r}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn terminal(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled" | "skipped")
}

#[tokio::test]
async fn jobs_on_the_docker_runtime_end_as_a_new_user_expects() {
    require_docker().await.unwrap();
    let image = TestImage::busybox().await.unwrap();
    let worker_id = format!("e2e-worker-{}", uuid_like());
    let _containers = ContainerCleanup::labelled("kairos.worker_id", &worker_id).unwrap();
    let options = Options {
        worker_env: vec![
            ("KAIROS_RUNTIME".to_owned(), "docker".to_owned()),
            ("KAIROS_WORKER_ID".to_owned(), worker_id),
            ("KAIROS_STOP_GRACE_SECONDS".to_owned(), "1".to_owned()),
        ],
        ..Options::default()
    };
    let cluster = cluster_with(1, database().await.unwrap(), etcd().await.unwrap(), options).await;
    let image = image.reference();

    let prints = execute(&cluster, image, &["sh", "-c", "echo hello from kairos"], 60).await;
    let exits = execute(&cluster, image, &["sh", "-c", "echo failing; exit 3"], 60).await;
    let eats = execute(
        &cluster,
        image,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=300M", "count=1"],
        60,
    )
    .await;
    let sleeps = execute(&cluster, image, &["sleep", "300"], 2).await;
    let cancelled = execute(
        &cluster,
        image,
        &["sh", "-c", "echo working; sleep 300"],
        60,
    )
    .await;

    let r = wait_state(&cluster, &prints, terminal).await;
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(r["exit_code"], 0);
    let logs = get(&cluster, &format!("/v1/runs/{prints}/logs")).await;
    assert!(
        logs["content"]
            .as_str()
            .unwrap()
            .contains("hello from kairos"),
        "{logs}"
    );

    let r = wait_state(&cluster, &exits, terminal).await;
    assert_eq!(
        (&r["state"], &r["reason"], &r["exit_code"]),
        (&json!("failed"), &json!("exit_code"), &json!(3)),
        "{r}"
    );

    let r = wait_state(&cluster, &eats, terminal).await;
    assert_eq!(
        (&r["state"], &r["reason"]),
        (&json!("failed"), &json!("oom_killed")),
        "{r}"
    );

    let r = wait_state(&cluster, &sleeps, terminal).await;
    assert_eq!(
        (&r["state"], &r["reason"]),
        (&json!("failed"), &json!("timed_out")),
        "{r}"
    );
    let logs = get(&cluster, &format!("/v1/runs/{sleeps}/logs")).await;
    assert!(
        logs["content"].as_str().unwrap().contains("timeout"),
        "{logs}"
    );

    wait_state(&cluster, &cancelled, |s| s == "running").await;
    cluster
        .post(&format!("/v1/runs/{cancelled}/cancel"), json!({}))
        .await;
    let r = wait_state(&cluster, &cancelled, terminal).await;
    assert_eq!(r["state"], "cancelled", "{r}");
}

#[tokio::test]
async fn a_private_image_is_pulled_with_the_tenants_registry_credential_and_only_with_it() {
    require_docker().await.unwrap();
    const PASSWORD: &str = "pull-s3cret-9f2";
    let registry = TestRegistry::start_with_auth("kairos-bot", PASSWORD)
        .await
        .unwrap();
    let busybox = TestImage::busybox().await.unwrap();
    let private = registry.push(&busybox, "team/private", "1").await.unwrap();
    let worker_id = format!("e2e-pull-{}", uuid_like());
    let _containers = ContainerCleanup::labelled("kairos.worker_id", &worker_id).unwrap();
    let options = Options {
        worker_env: vec![
            ("KAIROS_RUNTIME".to_owned(), "docker".to_owned()),
            ("KAIROS_WORKER_ID".to_owned(), worker_id),
        ],
        ..Options::default()
    };
    let cluster = cluster_with(1, database().await.unwrap(), etcd().await.unwrap(), options).await;

    let created = cluster
        .post(
            "/v1/registry-credentials",
            json!({
                "name": "team-registry",
                "server": registry.host(),
                "username": "kairos-bot",
                "password": PASSWORD,
            }),
        )
        .await;
    assert!(created.get("password").is_none(), "{created}");

    // Without the credential the pull is refused and the run says so.
    let anonymous = execute(&cluster, private.reference(), &["echo", "never"], 60).await;
    let r = wait_state(&cluster, &anonymous, terminal).await;
    assert_eq!(
        (&r["state"], &r["reason"]),
        (&json!("failed"), &json!("image_pull_failed")),
        "{r}"
    );

    let job = cluster
        .post(
            "/v1/jobs",
            json!({
                "name": "private image",
                "image": private.reference(),
                "command": ["echo", "pulled with the credential"],
                "registry_credential": "team-registry",
            }),
        )
        .await;
    let job = job["id"].as_str().unwrap().to_owned();
    let run = cluster
        .post(&format!("/v1/jobs/{job}/runs"), json!({}))
        .await;
    let run = run["id"].as_str().unwrap().to_owned();
    let r = wait_state(&cluster, &run, terminal).await;
    assert_eq!(r["state"], "succeeded", "{r}\n{}", cluster.logs());
    let logs = get(&cluster, &format!("/v1/runs/{run}/logs")).await;
    assert!(
        logs["content"]
            .as_str()
            .unwrap()
            .contains("pulled with the credential"),
        "{logs}"
    );
    assert!(
        !cluster.logs().contains(PASSWORD),
        "the registry password appears in a process's logs"
    );
}

/// A unique suffix without another dependency: the process id and the clock.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}
