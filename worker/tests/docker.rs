//! The worker's Docker runtime against the real engine, driven over a real `WorkerService`
//! stream by a fake scheduler: end states (success with logs, exit code, OOM kill, timeout,
//! cancel, drain), the hardening read back from `docker inspect` while a run runs, and the
//! live output tail. Needs a Docker engine: fails, never skips, without one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use kairos_proto::v1::worker_message;
use kairos_testkit::docker;
use kairos_worker::runtime::docker::labels;

#[tokio::test]
async fn a_successful_run_reports_its_stdout_and_stderr_and_its_container_is_removed() {
    let mut h = Harness::start().await.unwrap();
    let mut config = h.config();
    let metrics_addr = format!("127.0.0.1:{}", kairos_testkit::free_port());
    config.metrics_addr = Some(metrics_addr.parse().unwrap());
    let (_worker, mut s) = h.worker(config).await.unwrap();
    let a = h.assignment(&[
        "sh",
        "-c",
        "echo $GREETING from $KAIROS_RUN_ID; echo oops >&2",
    ]);
    let run_id = a.run_id.clone();
    let report = run_to_end(&mut s, a).await.unwrap();
    assert_eq!(report.state, "succeeded", "{report:?}");
    assert_eq!(report.exit_code, Some(0));
    assert_eq!(report.shard, 5);
    assert!(
        report.log_tail.contains(&format!("hello from {run_id}")),
        "{}",
        report.log_tail
    );
    assert!(report.log_tail.contains("oops"), "{}", report.log_tail);
    assert!(!report.log_truncated);
    container_gone(&run_id).await.unwrap();

    let http = reqwest::Client::new();
    let health = http
        .get(format!("http://{metrics_addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
    let metrics = http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"kairos_worker_runs_finished_total{state="succeeded",reason=""} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("kairos_worker_runs_started_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_non_zero_exit_is_failed_with_its_exit_code() {
    let mut h = Harness::start().await.unwrap();
    let (_worker, mut s) = h.worker(h.config()).await.unwrap();
    let a = h.assignment(&["sh", "-c", "echo about to fail; exit 3"]);
    let report = run_to_end(&mut s, a).await.unwrap();
    assert_eq!(report.state, "failed");
    assert_eq!(report.reason.as_deref(), Some("exit_code"));
    assert_eq!(report.exit_code, Some(3));
    assert!(report.log_tail.contains("about to fail"));
}

#[tokio::test]
async fn a_run_that_eats_more_than_its_128_mib_is_oom_killed() {
    let mut h = Harness::start().await.unwrap();
    let (_worker, mut s) = h.worker(h.config()).await.unwrap();
    // dd allocates (and touches) one 300 MiB buffer: past the cap, and no swap to escape to.
    let mut a = h.assignment(&["dd", "if=/dev/zero", "of=/dev/null", "bs=300M", "count=1"]);
    a.memory_mb = 128;
    let report = run_to_end(&mut s, a).await.unwrap();
    assert_eq!(report.state, "failed", "{report:?}");
    assert_eq!(report.reason.as_deref(), Some("oom_killed"), "{report:?}");
    assert!(report.log_tail.contains("more memory than its limit"));

    // The same eater under the cap succeeds: the limit is the job's, not lower.
    let a = h.assignment(&["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]);
    let report = run_to_end(&mut s, a).await.unwrap();
    assert_eq!(report.state, "succeeded", "{report:?}");
}

#[tokio::test]
async fn a_run_past_its_timeout_is_killed_even_if_it_ignores_sigterm() {
    let mut h = Harness::start().await.unwrap();
    let (_worker, mut s) = h.worker(h.config()).await.unwrap();
    let mut a = h.assignment(&["sh", "-c", "trap '' TERM; echo waiting; sleep 300"]);
    a.timeout_seconds = 2;
    let run_id = a.run_id.clone();
    let report = run_to_end(&mut s, a).await.unwrap();
    assert_eq!(report.state, "failed", "{report:?}");
    assert_eq!(report.reason.as_deref(), Some("timed_out"));
    assert!(report.log_tail.contains("waiting"));
    assert!(report.log_tail.contains("exceeded the timeout of 2 s"));
    container_gone(&run_id).await.unwrap();
}

#[tokio::test]
async fn a_running_run_that_is_cancelled_is_killed_and_reported_cancelled() {
    let mut h = Harness::start().await.unwrap();
    let (_worker, mut s) = h.worker(h.config()).await.unwrap();
    let a = h.assignment(&["sh", "-c", "echo started; sleep 300"]);
    let run_id = assign_and_start(&mut s, a).await.unwrap();
    container_in_state(&run_id, "running").await.unwrap();
    heartbeat_names(&mut s, &run_id).await.unwrap();
    s.cancel(&run_id).await.unwrap();
    let report = s.report_of(&run_id, WITHIN).await.unwrap();
    assert_eq!(report.state, "cancelled", "{report:?}");
    assert!(report.log_tail.contains("started"));
    container_gone(&run_id).await.unwrap();
}

#[tokio::test]
async fn a_running_container_is_hardened_as_inspect_shows() {
    let mut h = Harness::start().await.unwrap();
    let (_worker, mut s) = h.worker(h.config()).await.unwrap();
    // From inside: the root is read-only, /tmp is writable, no capability, no new privileges.
    let a = h.assignment(&[
        "sh",
        "-c",
        "touch /probe 2>/dev/null && echo root-writable || echo root-readonly; \
         echo x > /tmp/probe && echo tmp-writable; \
         grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; echo probed; sleep 300",
    ]);
    let run_id = assign_and_start(&mut s, a).await.unwrap();
    let inspect = container_in_state(&run_id, "running").await.unwrap();
    let host = &inspect["HostConfig"];
    let mib128 = 128 * 1024 * 1024;
    assert_eq!(host["Memory"], mib128, "{host}");
    assert_eq!(host["MemorySwap"], mib128, "memory-swap = memory: no swap");
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    assert!(host["CapAdd"].is_null(), "{}", host["CapAdd"]);
    assert_eq!(
        host["SecurityOpt"],
        serde_json::json!(["no-new-privileges"])
    );
    assert_eq!(host["Privileged"], false);
    assert_eq!(host["ReadonlyRootfs"], true);
    assert!(
        host["Tmpfs"]["/tmp"]
            .as_str()
            .is_some_and(|o| o.contains("size=64m")),
        "{}",
        host["Tmpfs"]
    );
    assert_eq!(host["PidsLimit"], 256);
    assert_eq!(host["CpuQuota"], 100_000);
    assert_eq!(host["CpuPeriod"], 100_000);
    assert!(host["Binds"].is_null(), "no host binds: {}", host["Binds"]);
    assert_eq!(inspect["Mounts"], serde_json::json!([]), "no mounts at all");
    assert!(host["Devices"].as_array().is_none_or(|d| d.is_empty()));
    assert_eq!(host["IpcMode"], "private");
    let network = host["NetworkMode"].as_str().unwrap().to_owned();
    assert_ne!(network, "host");
    let net = docker::inspect(&network).await.unwrap();
    assert_eq!(net["Name"], "kairos-isolated");
    assert_eq!(net["Driver"], "bridge");
    assert_eq!(
        net["Options"]["com.docker.network.bridge.enable_icc"],
        "false"
    );
    assert_eq!(inspect["Config"]["User"], "", "runs as the image's user");
    let container_labels = &inspect["Config"]["Labels"];
    assert_eq!(container_labels[labels::RUN_ID], run_id.as_str());
    assert_eq!(container_labels[labels::JOB_ID], "job_test");
    assert_eq!(container_labels[labels::TENANT_ID], "ten_test");
    assert_eq!(container_labels[labels::SHARD], "5");
    assert_eq!(container_labels[labels::ATTEMPT], "1");
    assert_eq!(container_labels[labels::WORKER_ID], h.worker_id.as_str());

    // The live tail shows what it printed while it still runs.
    let tail = s
        .wait_for(WITHIN, |k| match k {
            worker_message::Kind::LogTail(t) if t.run_id == run_id && t.tail.contains("probed") => {
                Some(t.clone())
            }
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(tail.shard, 5);
    assert_eq!(tail.total_bytes, tail.tail.len() as u64);
    assert!(tail.tail.contains("root-readonly"), "{}", tail.tail);
    assert!(tail.tail.contains("tmp-writable"), "{}", tail.tail);
    assert!(
        tail.tail.contains("CapEff:\t0000000000000000"),
        "{}",
        tail.tail
    );
    assert!(tail.tail.contains("NoNewPrivs:\t1"), "{}", tail.tail);

    s.cancel(&run_id).await.unwrap();
    let report = s.report_of(&run_id, WITHIN).await.unwrap();
    assert_eq!(report.state, "cancelled");
    container_gone(&run_id).await.unwrap();
}

#[tokio::test]
async fn a_run_uses_the_images_user_and_its_volumes_are_tmpfs() {
    let image = kairos_testkit::TestImage::busybox_with(&["USER 65534", "VOLUME /data"])
        .await
        .unwrap();
    let mut h = Harness::start_with_image(image).await.unwrap();
    let (_worker, mut s) = h.worker(h.config()).await.unwrap();
    let a = h.assignment(&[
        "sh",
        "-c",
        "id -u; echo x > /data/probe && echo data-writable; sleep 300",
    ]);
    let run_id = assign_and_start(&mut s, a).await.unwrap();
    let inspect = container_in_state(&run_id, "running").await.unwrap();
    assert!(
        inspect["HostConfig"]["Tmpfs"]["/data"].is_string(),
        "{}",
        inspect["HostConfig"]["Tmpfs"]
    );
    assert_eq!(
        inspect["Mounts"],
        serde_json::json!([]),
        "no anonymous volume"
    );
    s.wait_for(WITHIN, |k| match k {
        worker_message::Kind::LogTail(t)
            if t.run_id == run_id && t.tail.contains("data-writable") =>
        {
            Some(())
        }
        _ => None,
    })
    .await
    .unwrap();
    s.cancel(&run_id).await.unwrap();
    let report = s.report_of(&run_id, WITHIN).await.unwrap();
    assert!(
        report.log_tail.starts_with("65534\n"),
        "{}",
        report.log_tail
    );
}

#[tokio::test]
async fn the_process_keeps_printing_and_the_live_tail_follows_it() {
    let mut h = Harness::start().await.unwrap();
    let (_worker, mut s) = h.worker(h.config()).await.unwrap();
    let a = h.assignment(&[
        "sh",
        "-c",
        "echo first; sleep 3; echo second; sleep 3; echo third",
    ]);
    let run_id = assign_and_start(&mut s, a).await.unwrap();
    let report = s.report_of(&run_id, WITHIN).await.unwrap();
    assert_eq!(report.state, "succeeded");
    let tails: Vec<_> = s
        .history()
        .iter()
        .filter_map(|k| match k {
            worker_message::Kind::LogTail(t) if t.run_id == run_id => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert!(
        tails.iter().any(|t| t.tail == "first\n"),
        "a tail while it ran: {tails:?}"
    );
    assert!(
        tails
            .windows(2)
            .all(|w| w[0].total_bytes < w[1].total_bytes),
        "sent only when it changed, growing: {tails:?}"
    );
}

#[tokio::test]
async fn draining_kills_runs_that_outlive_the_grace_and_reports_them_worker_lost() {
    let mut h = Harness::start().await.unwrap();
    let mut config = h.config();
    config.drain_grace = Duration::from_secs(1);
    let (worker, mut s) = h.worker(config).await.unwrap();
    let a = h.assignment(&["sleep", "300"]);
    let run_id = assign_and_start(&mut s, a).await.unwrap();
    container_in_state(&run_id, "running").await.unwrap();
    heartbeat_names(&mut s, &run_id).await.unwrap();
    let stopping = tokio::spawn(worker.stop());
    let report = s.report_of(&run_id, WITHIN).await.unwrap();
    assert_eq!(report.state, "failed", "{report:?}");
    assert_eq!(report.reason.as_deref(), Some("worker_lost"));
    stopping.await.unwrap().unwrap();
    container_gone(&run_id).await.unwrap();
}

#[tokio::test]
async fn limits_past_the_platform_caps_fail_to_start_without_a_container() {
    let mut h = Harness::start().await.unwrap();
    let (_worker, mut s) = h.worker(h.config()).await.unwrap();
    let mut a = h.assignment(&["true"]);
    a.memory_mb = 4096;
    let run_id = a.run_id.clone();
    let report = run_to_end(&mut s, a).await.unwrap();
    assert_eq!(report.state, "failed");
    assert_eq!(report.reason.as_deref(), Some("start_failed"));
    assert!(
        report.log_tail.contains("memory limit"),
        "{}",
        report.log_tail
    );
    assert!(
        docker::containers_labelled(labels::RUN_ID, &run_id)
            .await
            .unwrap()
            .is_empty()
    );

    let a = h.assignment(&["/no/such/program"]);
    let report = run_to_end(&mut s, a).await.unwrap();
    assert_eq!(report.state, "failed");
    assert_eq!(report.reason.as_deref(), Some("start_failed"), "{report:?}");
}
