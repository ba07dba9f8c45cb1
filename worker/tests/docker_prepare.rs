//! Ahead of the fire and after a crash, on the real engine over a real `WorkerService`
//! stream: an upcoming run's container is created before its go and started by it; a prepared
//! container that gets start=false or a cancel is removed and never started; a worker killed
//! mid-run and restarted re-attaches what runs, reports what ended, removes what never started.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use kairos_proto::v1::{scheduler_message, worker_message};

fn upcoming(h: &Harness, command: &[&str], in_seconds: i64) -> scheduler_message::Assignment {
    let mut a = h.assignment(command);
    let fire = chrono::Utc::now() + chrono::Duration::seconds(in_seconds);
    a.fire_time = Some(prost_types::Timestamp {
        seconds: fire.timestamp(),
        nanos: fire.timestamp_subsec_nanos() as i32,
    });
    a.upcoming = true;
    a
}

fn never_reported(s: &kairos_testkit::WorkerStream, run_id: &str) -> bool {
    !s.history().iter().any(|k| {
        matches!(k, worker_message::Kind::Report(r) if r.run_id == run_id)
            || matches!(k, worker_message::Kind::LogTail(t) if t.run_id == run_id)
    })
}

/// Waits for a credit granting every slot again.
async fn all_slots_free(s: &mut kairos_testkit::WorkerStream, slots: u32) {
    s.wait_for(WITHIN, |k| match k {
        worker_message::Kind::Credit(c) if c.slots == slots => Some(()),
        _ => None,
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_upcoming_run_is_created_before_its_go_and_started_by_it() {
    let mut h = Harness::start().await.unwrap();
    let (_worker, mut s) = h.worker(h.config()).await.unwrap();
    let a = upcoming(&h, &["sh", "-c", "echo on time"], 30);
    let run_id = a.run_id.clone();
    s.send(scheduler_message::Kind::Assignment(a))
        .await
        .unwrap();
    assert!(s.ack_of(&run_id, WITHIN).await.unwrap());
    let created = container_in_state(&run_id, "created").await.unwrap();
    assert_eq!(
        created["State"]["StartedAt"], "0001-01-01T00:00:00Z",
        "prepared, not started"
    );
    // The fire time: the scheduler's go.
    s.decide(&run_id, true).await.unwrap();
    let report = s.report_of(&run_id, WITHIN).await.unwrap();
    assert_eq!(report.state, "succeeded", "{report:?}");
    assert!(report.log_tail.contains("on time"));
    container_gone(&run_id).await.unwrap();
}

#[tokio::test]
async fn a_prepared_container_withdrawn_by_start_false_is_removed_and_never_started() {
    let mut h = Harness::start().await.unwrap();
    let (_worker, mut s) = h.worker(h.config()).await.unwrap();
    let a = upcoming(&h, &["sh", "-c", "echo must not run"], 30);
    let run_id = a.run_id.clone();
    s.send(scheduler_message::Kind::Assignment(a))
        .await
        .unwrap();
    assert!(s.ack_of(&run_id, WITHIN).await.unwrap());
    container_in_state(&run_id, "created").await.unwrap();
    s.decide(&run_id, false).await.unwrap();
    container_gone(&run_id).await.unwrap();
    all_slots_free(&mut s, 4).await;
    assert!(
        never_reported(&s, &run_id),
        "nothing ran, nothing to report"
    );
}

#[tokio::test]
async fn a_prepared_container_cancelled_before_its_go_is_removed_and_never_started() {
    let mut h = Harness::start().await.unwrap();
    let (_worker, mut s) = h.worker(h.config()).await.unwrap();
    let a = upcoming(&h, &["sh", "-c", "echo must not run"], 30);
    let run_id = a.run_id.clone();
    s.send(scheduler_message::Kind::Assignment(a))
        .await
        .unwrap();
    assert!(s.ack_of(&run_id, WITHIN).await.unwrap());
    container_in_state(&run_id, "created").await.unwrap();
    s.cancel(&run_id).await.unwrap();
    container_gone(&run_id).await.unwrap();
    all_slots_free(&mut s, 4).await;
    // A late go for the cancelled run starts nothing either.
    s.decide(&run_id, true).await.unwrap();
    all_slots_free(&mut s, 4).await;
    assert!(never_reported(&s, &run_id));
    assert!(
        kairos_testkit::docker::containers_labelled(
            kairos_worker::runtime::docker::labels::RUN_ID,
            &run_id
        )
        .await
        .unwrap()
        .is_empty()
    );
}

#[tokio::test]
async fn an_assignment_the_worker_holds_already_is_refused() {
    let mut h = Harness::start().await.unwrap();
    let mut config = h.config();
    config.slots = 1;
    let (_worker, mut s) = h.worker(config).await.unwrap();
    let a = upcoming(&h, &["true"], 30);
    let run_id = a.run_id.clone();
    s.send(scheduler_message::Kind::Assignment(a.clone()))
        .await
        .unwrap();
    assert!(s.ack_of(&run_id, WITHIN).await.unwrap());
    container_in_state(&run_id, "created").await.unwrap();
    s.send(scheduler_message::Kind::Assignment(a))
        .await
        .unwrap();
    assert!(!s.ack_of(&run_id, WITHIN).await.unwrap(), "same run twice");
    let other = h.assignment(&["true"]);
    let other_id = other.run_id.clone();
    s.send(scheduler_message::Kind::Assignment(other))
        .await
        .unwrap();
    assert!(!s.ack_of(&other_id, WITHIN).await.unwrap(), "no free slot");
    s.decide(&run_id, false).await.unwrap();
    container_gone(&run_id).await.unwrap();
}

#[tokio::test]
async fn a_worker_killed_mid_run_re_attaches_reports_and_cleans_up_after_its_restart() {
    let mut h = Harness::start().await.unwrap();
    let (worker, mut s) = h.worker(h.config()).await.unwrap();

    let long = h.assignment(&["sh", "-c", "echo started; sleep 25; echo finished"]);
    let short = h.assignment(&["sh", "-c", "sleep 3; echo bye; exit 7"]);
    let prepared = upcoming(&h, &["sh", "-c", "echo must not run"], 600);
    let (long_id, short_id, prepared_id) = (
        long.run_id.clone(),
        short.run_id.clone(),
        prepared.run_id.clone(),
    );
    assign_and_start(&mut s, long).await.unwrap();
    assign_and_start(&mut s, short).await.unwrap();
    s.send(scheduler_message::Kind::Assignment(prepared))
        .await
        .unwrap();
    assert!(s.ack_of(&prepared_id, WITHIN).await.unwrap());
    container_in_state(&long_id, "running").await.unwrap();
    container_in_state(&short_id, "running").await.unwrap();
    container_in_state(&prepared_id, "created").await.unwrap();

    worker.crash().await.unwrap();
    assert!(never_reported(&s, &short_id));
    // While no worker watches, the short run ends.
    let exited = container_in_state(&short_id, "exited").await.unwrap();
    assert_eq!(exited["State"]["ExitCode"], 7);

    let (_worker, mut s) = h.worker(h.config()).await.unwrap();
    let report = s.report_of(&short_id, WITHIN).await.unwrap();
    assert_eq!(report.state, "failed", "{report:?}");
    assert_eq!(report.reason.as_deref(), Some("exit_code"));
    assert_eq!(report.exit_code, Some(7));
    assert!(report.log_tail.contains("bye"), "{}", report.log_tail);
    container_gone(&short_id).await.unwrap();
    container_gone(&prepared_id).await.unwrap();

    heartbeat_names(&mut s, &long_id).await.unwrap();
    let report = s.report_of(&long_id, WITHIN).await.unwrap();
    assert_eq!(report.state, "succeeded", "{report:?}");
    assert!(report.log_tail.contains("started"), "{}", report.log_tail);
    assert!(report.log_tail.contains("finished"), "{}", report.log_tail);
    container_gone(&long_id).await.unwrap();
    assert!(never_reported(&s, &prepared_id));
}

#[tokio::test]
async fn a_run_whose_report_was_not_confirmed_before_a_crash_is_reported_again_after_the_restart() {
    let mut h = Harness::start().await.unwrap();
    h.scheduler.ack_reports(false);
    let (worker, mut s) = h.worker(h.config()).await.unwrap();
    let a = h.assignment(&["sh", "-c", "echo done; exit 4"]);
    let run_id = assign_and_start(&mut s, a).await.unwrap();
    let first = s.report_of(&run_id, WITHIN).await.unwrap();
    assert_eq!(first.exit_code, Some(4));
    // Unconfirmed: its container is kept, exited, so its end survives a crash.
    container_in_state(&run_id, "exited").await.unwrap();
    worker.crash().await.unwrap();

    h.scheduler.ack_reports(true);
    let (_worker, mut s) = h.worker(h.config()).await.unwrap();
    let again = s.report_of(&run_id, WITHIN).await.unwrap();
    assert_eq!(again.state, "failed");
    assert_eq!(again.reason.as_deref(), Some("exit_code"));
    assert_eq!(again.exit_code, Some(4));
    assert!(again.log_tail.contains("done"), "{}", again.log_tail);
    // Confirmed now: the container goes.
    container_gone(&run_id).await.unwrap();
}

#[tokio::test]
async fn a_re_attached_run_still_gets_killed_at_its_original_timeout() {
    let mut h = Harness::start().await.unwrap();
    let (worker, mut s) = h.worker(h.config()).await.unwrap();
    let mut a = h.assignment(&["sh", "-c", "trap '' TERM; sleep 600"]);
    a.timeout_seconds = 8;
    let run_id = assign_and_start(&mut s, a).await.unwrap();
    container_in_state(&run_id, "running").await.unwrap();
    worker.crash().await.unwrap();
    let (_worker, mut s) = h.worker(h.config()).await.unwrap();
    let report = s.report_of(&run_id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(report.state, "failed", "{report:?}");
    assert_eq!(report.reason.as_deref(), Some("timed_out"));
    container_gone(&run_id).await.unwrap();
}
