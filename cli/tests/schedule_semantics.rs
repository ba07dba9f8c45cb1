//! The schedule semantics end to end, as a customer sees them through the REST API of a real
//! cluster (API, scheduler, worker with the process runtime): overlap policies on busy
//! schedules and on manual triggers, retries with backoff, jitter, one-offs and run limits,
//! pause and resume (with and without catch-up), edits and deletes racing fires in flight
//! (I4), the catch-up cap after an outage, and backfill.
//!
//! Every wait has a generous deadline and every check is on recorded facts (states, reasons,
//! recorded times), never on how fast the machine is.

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Cluster, Options, cluster, cluster_with, env, settle};
use kairos_testkit::{database, etcd};
use serde_json::{Value, json};

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

fn opt_time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().map(|s| s.parse().unwrap())
}

async fn job(cluster: &Cluster, command: &str, extra: Value) -> String {
    let mut body = json!({
        "name": "semantics",
        "image": "busybox:1.36",
        "command": ["sh", "-c", command],
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    cluster.post("/v1/jobs", body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn schedule(cluster: &Cluster, job: &str, body: Value) -> Value {
    cluster
        .post(&format!("/v1/jobs/{job}/schedules"), body)
        .await
}

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

async fn patch(cluster: &Cluster, path: &str, body: Value) -> Value {
    let response = cluster
        .client
        .patch(format!("{}{path}", cluster.http))
        .bearer_auth(&cluster.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

async fn runs_of_job(cluster: &Cluster, job: &str) -> Vec<Value> {
    get(cluster, &format!("/v1/runs?job_id={job}&page_size=1000")).await["runs"]
        .as_array()
        .unwrap()
        .clone()
}

/// Polls `probe` until it answers `Some`, for at most `secs` seconds.
async fn eventually<T, F, Fut>(cluster: &Cluster, secs: u64, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {secs} s\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn count(runs: &[Value], state: &str, reason: Option<&str>) -> usize {
    runs.iter()
        .filter(|r| r["state"] == state && reason.is_none_or(|why| r["reason"] == why))
        .count()
}

/// Asserts that no two of the runs that started were running at the same time.
fn never_two_at_once(name: &str, runs: &[Value]) {
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>, &Value)> = runs
        .iter()
        .filter_map(|r| Some((opt_time(&r["started_at"])?, opt_time(&r["finished_at"])?, r)))
        .collect();
    spans.sort_by_key(|(start, _, _)| *start);
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "{name}: two runs overlapped:\n{}\n{}",
            pair[0].2,
            pair[1].2
        );
    }
}

#[tokio::test]
async fn overlap_policies_decide_every_fire_of_a_busy_schedule() {
    let cluster = cluster(1).await;
    // Every fire comes while the previous run (2.5 s) is still going.
    let slow = job(&cluster, "sleep 2.5", json!({})).await;
    let mut ids = Vec::new();
    for policy in ["skip", "buffer_one"] {
        let s = schedule(
            &cluster,
            &slow,
            json!({ "cron": "* * * * * *", "overlap_policy": policy }),
        )
        .await;
        ids.push(s["id"].as_str().unwrap().to_owned());
    }
    // `replace`: every fire stops the run before it.
    let long = job(&cluster, "sleep 6", json!({})).await;
    let replace = schedule(
        &cluster,
        &long,
        json!({ "interval_seconds": 2, "overlap_policy": "replace" }),
    )
    .await;
    ids.push(replace["id"].as_str().unwrap().to_owned());

    // Let each see a few overlapping fires, then stop them and let the last runs end.
    eventually(&cluster, 60, "replaced runs", || async {
        let runs = cluster.runs_of(&ids[2]).await;
        (count(&runs, "cancelled", Some("replaced")) >= 2).then_some(())
    })
    .await;
    eventually(
        &cluster,
        60,
        "two runs of each buffered schedule",
        || async {
            let runs = cluster.runs_of(&ids[1]).await;
            (count(&runs, "succeeded", None) >= 2).then_some(())
        },
    )
    .await;
    cluster.pause_all(&ids).await;
    let all = settle(&cluster, &ids, Duration::from_secs(60)).await;

    let skip = &all[&ids[0]];
    assert!(count(skip, "succeeded", None) >= 1, "{skip:?}");
    assert!(
        count(skip, "skipped", Some("overlap")) >= 1,
        "fires during a run are skipped: {skip:?}"
    );
    assert!(skip.iter().all(|r| r["blocked_by"].is_null()));
    never_two_at_once("skip", skip);

    let buffered = &all[&ids[1]];
    never_two_at_once("buffer_one", buffered);
    assert!(
        count(buffered, "skipped", Some("overlap")) >= 1,
        "a second waiting fire is skipped: {buffered:?}"
    );
    // A held fire started only once the run it waited for had ended.
    let by_id = |id: &Value| buffered.iter().find(|r| r["id"] == *id);
    let held: Vec<&Value> = buffered
        .iter()
        .filter(|r| r["state"] == "succeeded" && !r["blocked_by"].is_null())
        .collect();
    let events_show_holds = {
        let mut any = false;
        for r in buffered.iter().filter(|r| r["state"] == "succeeded") {
            let events = get(
                &cluster,
                &format!("/v1/runs/{}/events", r["id"].as_str().unwrap()),
            )
            .await;
            if events["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["reason"] == "overlap_held")
            {
                any = true;
            }
        }
        any
    };
    assert!(
        events_show_holds,
        "some fire waited behind a running one: {buffered:?}"
    );
    for h in held {
        if let Some(blocker) = by_id(&h["blocked_by"]) {
            assert!(
                time(&h["started_at"]) >= time(&blocker["finished_at"]),
                "{h}"
            );
        }
    }

    let replaced = &all[&ids[2]];
    never_two_at_once("replace", replaced);
    assert!(
        count(replaced, "cancelled", Some("replaced")) >= 2,
        "{replaced:?}"
    );
    for r in replaced
        .iter()
        .filter(|r| r["reason"] == "replaced" && !r["started_at"].is_null())
    {
        // A replaced run was stopped well before its 6 s were up.
        let ran = time(&r["finished_at"]) - time(&r["started_at"]);
        assert!(ran < chrono::Duration::seconds(6), "{r}");
    }
}

#[tokio::test]
async fn a_manual_trigger_obeys_the_overlap_policy_unless_the_request_overrides_it() {
    let cluster = cluster(1).await;
    let slow = job(&cluster, "sleep 4", json!({})).await;
    let s = schedule(
        &cluster,
        &slow,
        json!({ "cron": "0 0 1 1 *", "overlap_policy": "skip" }),
    )
    .await;
    let trigger = format!("/v1/schedules/{}/trigger", s["id"].as_str().unwrap());
    let first = cluster.post(&trigger, json!({})).await;
    assert_eq!(first["trigger"], "manual");
    let first_id = first["id"].as_str().unwrap().to_owned();
    eventually(&cluster, 30, "the first trigger running", || async {
        (get(&cluster, &format!("/v1/runs/{first_id}")).await["state"] == "running").then_some(())
    })
    .await;

    let skipped = cluster.post(&trigger, json!({})).await;
    assert_eq!(skipped["state"], "skipped", "{skipped}");
    assert_eq!(skipped["reason"], "overlap");
    let allowed = cluster
        .post(&trigger, json!({ "overlap_policy": "allow" }))
        .await;
    assert_eq!(allowed["state"], "queued", "{allowed}");
    let held = cluster
        .post(&trigger, json!({ "overlap_policy": "buffer_one" }))
        .await;
    assert_eq!(held["state"], "queued", "{held}");
    assert!(!held["blocked_by"].is_null(), "{held}");

    let ids = [s["id"].as_str().unwrap().to_owned()];
    let runs = settle(&cluster, &ids, Duration::from_secs(60)).await;
    let runs = &runs[&ids[0]];
    let find = |id: &Value| runs.iter().find(|r| r["id"] == *id).unwrap().clone();
    let (ran_first, ran_allowed, ran_held) =
        (find(&first["id"]), find(&allowed["id"]), find(&held["id"]));
    for r in [&ran_first, &ran_allowed, &ran_held] {
        assert_eq!(r["state"], "succeeded", "{r}");
    }
    assert_eq!(
        ran_held["blocked_by"],
        Value::Null,
        "released once nothing else ran"
    );
    // The override ran alongside the first; the held one only after both had ended.
    assert!(
        time(&ran_allowed["started_at"]) < time(&ran_first["finished_at"]),
        "{ran_allowed}"
    );
    for before in [&ran_first, &ran_allowed] {
        assert!(
            time(&ran_held["started_at"]) >= time(&before["finished_at"]),
            "{ran_held}"
        );
    }
}

#[tokio::test]
async fn failures_are_retried_with_backoff_as_new_runs_of_the_same_fire_and_cancels_are_not() {
    let cluster = cluster(1).await;
    let retry = json!({ "retry": { "max_attempts": 3, "initial_backoff_seconds": 1, "max_backoff_seconds": 2 } });
    let failing = job(&cluster, "exit 3", retry.clone()).await;
    let first = cluster
        .post(&format!("/v1/jobs/{failing}/runs"), json!({}))
        .await;
    let attempts = eventually(&cluster, 60, "three failed attempts", || async {
        let runs = runs_of_job(&cluster, &failing).await;
        (runs.len() == 3 && count(&runs, "failed", None) == 3).then_some(runs)
    })
    .await;
    let mut attempts = attempts;
    attempts.sort_by_key(|r| r["attempt"].as_u64());
    for (i, r) in attempts.iter().enumerate() {
        assert_eq!(r["attempt"], i as u64 + 1, "{r}");
        assert_eq!(r["reason"], "exit_code");
        assert_eq!(r["exit_code"], 3);
        assert_eq!(r["fire_time"], first["fire_time"], "one fire, three runs");
    }
    for pair in attempts.windows(2) {
        let (failed, next) = (&pair[0], &pair[1]);
        assert_eq!(next["trigger"], "retry");
        assert_eq!(next["retry_of"], failed["id"]);
        let backoff = time(&next["due_at"]) - time(&failed["finished_at"]);
        assert!(
            backoff >= chrono::Duration::milliseconds(900),
            "due at least the initial backoff after the failure: {backoff}"
        );
        assert!(time(&next["started_at"]) >= time(&next["due_at"]), "{next}");
    }

    // A timeout is a failure; a scheduled fire's retries stay with its schedule.
    let timing_out = job(
        &cluster,
        "sleep 20",
        json!({ "timeout_seconds": 1, "retry": { "max_attempts": 2, "initial_backoff_seconds": 1 } }),
    )
    .await;
    let at = Utc::now() + chrono::Duration::seconds(3);
    let once = schedule(&cluster, &timing_out, json!({ "at": at.to_rfc3339() })).await;
    let sid = once["id"].as_str().unwrap().to_owned();
    let timed_out = eventually(&cluster, 90, "two timed-out attempts", || async {
        let runs = cluster.runs_of(&sid).await;
        (count(&runs, "failed", Some("timed_out")) == 2).then_some(runs)
    })
    .await;
    assert!(
        timed_out
            .iter()
            .any(|r| r["trigger"] == "retry" && r["attempt"] == 2)
    );
    assert!(timed_out.iter().all(|r| r["schedule_id"] == sid.as_str()));

    // A cancelled run is not retried.
    let long = job(&cluster, "sleep 30", retry).await;
    let run = cluster
        .post(&format!("/v1/jobs/{long}/runs"), json!({}))
        .await;
    let id = run["id"].as_str().unwrap().to_owned();
    eventually(&cluster, 30, "the long run running", || async {
        (get(&cluster, &format!("/v1/runs/{id}")).await["state"] == "running").then_some(())
    })
    .await;
    cluster
        .post(&format!("/v1/runs/{id}/cancel"), json!({}))
        .await;
    eventually(&cluster, 30, "the cancel carried out", || async {
        (get(&cluster, &format!("/v1/runs/{id}")).await["state"] == "cancelled").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        runs_of_job(&cluster, &long).await.len(),
        1,
        "no retry of a cancel"
    );
}

#[tokio::test]
async fn jitter_one_offs_and_run_limits_hold_through_the_scheduler_and_backfill_reruns_fires() {
    let cluster = cluster(1).await;
    let quick = job(&cluster, "true", json!({})).await;

    // Jitter: the runs fire at the previewed, shifted times.
    let jittered = schedule(
        &cluster,
        &quick,
        json!({ "interval_seconds": 4, "jitter_seconds": 3, "overlap_policy": "allow" }),
    )
    .await;
    let jid = jittered["id"].as_str().unwrap().to_owned();
    let previewed: Vec<DateTime<Utc>> = jittered["next_fire_times"]
        .as_array()
        .unwrap()
        .iter()
        .map(time)
        .collect();
    let offset = jittered["jitter_offset_ms"].as_i64().unwrap();
    assert!((0..3000).contains(&offset), "{jittered}");

    // One-off: fires once, then the schedule is completed.
    let at = (Utc::now() + chrono::Duration::seconds(3)).to_rfc3339();
    let once = schedule(&cluster, &quick, json!({ "at": at })).await;
    let oid = once["id"].as_str().unwrap().to_owned();

    // A run limit: exactly three fires, then completed.
    let limited = schedule(
        &cluster,
        &quick,
        json!({ "cron": "* * * * * *", "max_runs": 3, "overlap_policy": "allow" }),
    )
    .await;
    let lid = limited["id"].as_str().unwrap().to_owned();

    eventually(&cluster, 60, "both limited schedules completed", || async {
        let a = get(&cluster, &format!("/v1/schedules/{oid}")).await;
        let b = get(&cluster, &format!("/v1/schedules/{lid}")).await;
        (a["state"] == "completed" && b["state"] == "completed").then_some(())
    })
    .await;
    let fired = eventually(&cluster, 60, "two jittered fires", || async {
        let runs = cluster.runs_of(&jid).await;
        (count(&runs, "succeeded", None) >= 2).then_some(runs)
    })
    .await;
    cluster.pause_all(std::slice::from_ref(&jid)).await;
    let mut times: Vec<DateTime<Utc>> = fired
        .iter()
        .filter(|r| r["trigger"] == "schedule" && r["state"] == "succeeded")
        .map(|r| time(&r["fire_time"]))
        .collect();
    times.sort();
    assert_eq!(times[..2], previewed[..2], "the preview was the truth");
    // Every fire sits on the 4 s grid shifted by the offset: the offset's milliseconds.
    for t in &times {
        assert_eq!(
            (*t - previewed[0]).num_milliseconds() % 4000,
            0,
            "{t} on the shifted grid"
        );
        assert_eq!(
            i64::from(t.timestamp_subsec_millis()),
            offset % 1000,
            "{t} carries the offset"
        );
    }

    let settled = settle(
        &cluster,
        &[oid.clone(), lid.clone()],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(settled[&oid].len(), 1);
    assert_eq!(settled[&oid][0]["state"], "succeeded");
    assert_eq!(settled[&lid].len(), 3, "{:?}", settled[&lid]);
    let done = get(&cluster, &format!("/v1/schedules/{lid}")).await;
    assert_eq!(done["fire_count"], 3);
    assert_eq!(done["next_fire_at"], Value::Null);
    assert_eq!(done["next_fire_times"], json!([]));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        cluster.runs_of(&lid).await.len(),
        3,
        "nothing after the limit"
    );

    // Backfill: the past fires of a minute schedule run once each; a repeat leaves them.
    let minutely = schedule(&cluster, &quick, json!({ "cron": "* * * * *" })).await;
    let mid = minutely["id"].as_str().unwrap().to_owned();
    let now = Utc::now();
    let range = json!({
        "from": (now - chrono::Duration::minutes(4)).to_rfc3339(),
        "to": (now - chrono::Duration::seconds(61)).to_rfc3339(),
    });
    let mut dry = range.clone();
    dry["dry_run"] = json!(true);
    let preview = cluster
        .post(&format!("/v1/schedules/{mid}/backfill"), dry)
        .await;
    assert_eq!(
        preview["fire_times"].as_array().unwrap().len(),
        3,
        "{preview}"
    );
    assert_eq!(preview["runs"], json!([]));
    let done = cluster
        .post(&format!("/v1/schedules/{mid}/backfill"), range.clone())
        .await;
    assert_eq!(done["runs"].as_array().unwrap().len(), 3, "{done}");
    eventually(&cluster, 60, "the backfill runs succeeded", || async {
        let runs = cluster.runs_of(&mid).await;
        (count(&runs, "succeeded", None) >= 3).then_some(())
    })
    .await;
    let repeat = cluster
        .post(&format!("/v1/schedules/{mid}/backfill"), range)
        .await;
    assert_eq!(repeat["runs"], json!([]));
    assert_eq!(repeat["left_alone"], preview["fire_times"]);
}

/// Some run of the schedule that fired after `after` succeeded.
async fn succeeded_after(cluster: &Cluster, schedule: &str, after: DateTime<Utc>) -> Option<()> {
    let runs = cluster.runs_of(schedule).await;
    runs.iter()
        .any(|r| r["state"] == "succeeded" && time(&r["fire_time"]) > after)
        .then_some(())
}

/// The runs of `schedule` whose version is below `version` and that started after `at`.
fn started_after(runs: &[Value], version: i64, at: DateTime<Utc>) -> Vec<&Value> {
    runs.iter()
        .filter(|r| r["schedule_version"].as_i64().is_some_and(|v| v < version))
        .filter(|r| opt_time(&r["started_at"]).is_some_and(|s| s > at))
        .collect()
}

#[tokio::test]
async fn pause_resume_edits_and_deletes_racing_fires_never_start_a_stale_or_surprise_run() {
    // A long horizon: fires are planned a minute ahead, so a change inside it must re-plan
    // them at the new version instead of losing them.
    let db = database().await.unwrap();
    let etcd = etcd().await.unwrap();
    let options = Options {
        scheduler_env: vec![env(&[("KAIROS_HORIZON_SECONDS", "60".to_owned())])],
        ..Options::default()
    };
    let cluster = cluster_with(1, db, etcd, options).await;
    let quick = job(&cluster, "true", json!({})).await;
    let s = schedule(
        &cluster,
        &quick,
        json!({ "cron": "* * * * * *", "overlap_policy": "allow" }),
    )
    .await;
    let id = s["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/schedules/{id}");
    eventually(&cluster, 60, "the schedule firing", || {
        succeeded_after(&cluster, &id, Utc::now() - chrono::Duration::hours(1))
    })
    .await;

    // Edits race the fires in flight: after each, no run of an older version starts.
    let mut changes: Vec<(i64, DateTime<Utc>)> = Vec::new();
    for zone in ["Europe/Paris", "Asia/Tokyo", "UTC"] {
        let edited = patch(&cluster, &path, json!({ "timezone": zone })).await;
        changes.push((edited["version"].as_i64().unwrap(), Utc::now()));
        let after = Utc::now();
        eventually(&cluster, 20, "a fire of the edited version", || {
            succeeded_after(&cluster, &id, after)
        })
        .await;
    }

    // Pause: nothing fires for the pause; resume fires again within moments, no surprise.
    let paused = cluster
        .post(&format!("{path}/pause"), json!({ "note": "deploy" }))
        .await;
    let paused_at = Utc::now();
    assert_eq!(paused["state"], "paused");
    changes.push((paused["version"].as_i64().unwrap(), paused_at));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resumed = cluster.post(&format!("{path}/resume"), json!({})).await;
    let resumed_at = Utc::now();
    changes.push((resumed["version"].as_i64().unwrap(), resumed_at));
    eventually(&cluster, 20, "a fire after the resume", || {
        succeeded_after(&cluster, &id, resumed_at)
    })
    .await;
    let runs = cluster.runs_of(&id).await;
    let during: Vec<&Value> = runs
        .iter()
        .filter(|r| {
            let t = time(&r["fire_time"]);
            r["state"] != "cancelled"
                && t > paused_at + chrono::Duration::milliseconds(1500)
                && t < resumed_at - chrono::Duration::milliseconds(1500)
        })
        .collect();
    assert!(during.is_empty(), "a fire ran for the pause: {during:?}");
    assert!(
        runs.iter()
            .any(|r| r["state"] == "cancelled" && r["reason"] == "schedule_paused"),
        "the pause cancelled the fires planned ahead"
    );

    // Resume with catch-up: the fires of a short pause run late (they are within the
    // tolerance, so the cap does not apply).
    cluster.post(&format!("{path}/pause"), json!({})).await;
    let second_pause = Utc::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let caught_up = cluster
        .post(&format!("{path}/resume"), json!({ "catch_up": true }))
        .await;
    changes.push((caught_up["version"].as_i64().unwrap(), Utc::now()));
    let late = eventually(&cluster, 30, "the missed fires run late", || async {
        let runs = cluster.runs_of(&id).await;
        let late: Vec<Value> = runs
            .into_iter()
            .filter(|r| {
                r["state"] == "succeeded"
                    && r["schedule_version"] == caught_up["version"]
                    && time(&r["fire_time"]) > second_pause + chrono::Duration::milliseconds(1500)
                    && time(&r["fire_time"]) < second_pause + chrono::Duration::milliseconds(2500)
            })
            .collect();
        (!late.is_empty()).then_some(late)
    })
    .await;
    assert!(time(&late[0]["started_at"]) > time(&late[0]["fire_time"]));

    // A delete racing the fires: nothing of the schedule starts after it returned.
    let response = cluster
        .client
        .delete(format!("{}{path}", cluster.http))
        .bearer_auth(&cluster.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT);
    let deleted_at = Utc::now();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let runs = cluster.runs_of(&id).await;
    for (version, at) in &changes {
        let stale = started_after(&runs, *version, *at);
        assert!(
            stale.is_empty(),
            "runs of a version below {version} started after its change (I4): {stale:?}"
        );
    }
    let after_delete: Vec<&Value> = runs
        .iter()
        .filter(|r| opt_time(&r["started_at"]).is_some_and(|s| s > deleted_at))
        .collect();
    assert!(after_delete.is_empty(), "{after_delete:?}");
    assert!(
        runs.iter()
            .any(|r| r["state"] == "cancelled" && r["reason"] == "schedule_updated"),
        "edits cancelled the old version's planned fires"
    );
    assert!(
        runs.iter()
            .any(|r| r["state"] == "cancelled" && r["reason"] == "schedule_deleted"),
        "the delete cancelled the planned fires"
    );
}

#[tokio::test]
async fn after_an_outage_only_the_latest_late_fires_up_to_the_cap_run_and_the_rest_are_recorded_missed()
 {
    let mut cluster = cluster(1).await;
    let quick = job(&cluster, "true", json!({})).await;
    let s = schedule(
        &cluster,
        &quick,
        json!({ "cron": "* * * * * *", "overlap_policy": "allow",
                "catchup_window_seconds": 900, "catchup_max_runs": 2 }),
    )
    .await;
    let id = s["id"].as_str().unwrap().to_owned();
    eventually(&cluster, 60, "the schedule firing", || async {
        (count(&cluster.runs_of(&id).await, "succeeded", None) >= 2).then_some(())
    })
    .await;

    // Nobody owns the shard for 40 s: longer than the 30 s a fire may be late and still be
    // on time.
    cluster.schedulers[0].kill();
    let down = Utc::now();
    tokio::time::sleep(Duration::from_secs(40)).await;
    let restarted = Utc::now();
    cluster.schedulers[0].restart().await.unwrap();
    eventually(&cluster, 60, "fires after the restart", || async {
        let runs = cluster.runs_of(&id).await;
        runs.iter()
            .any(|r| r["state"] == "succeeded" && time(&r["fire_time"]) > restarted)
            .then_some(())
    })
    .await;
    cluster.pause_all(std::slice::from_ref(&id)).await;
    let all = settle(&cluster, std::slice::from_ref(&id), Duration::from_secs(90)).await;
    let runs = &all[&id];

    // I2: every fire of the outage is recorded, none twice.
    let mut fires: Vec<i64> = runs
        .iter()
        .filter(|r| r["reason"] != "schedule_paused")
        .map(|r| time(&r["fire_time"]).timestamp())
        .collect();
    let total = fires.len();
    fires.sort_unstable();
    fires.dedup();
    assert_eq!(fires.len(), total, "a fire recorded twice");
    for pair in fires.windows(2) {
        assert_eq!(pair[1] - pair[0], 1, "a fire of the outage was lost (I2)");
    }
    // Fires more than 30 s late when the node came back: at most 2 ran, the rest were missed.
    let beyond: Vec<&Value> = runs
        .iter()
        .filter(|r| {
            let t = time(&r["fire_time"]);
            t > down + chrono::Duration::seconds(1) && t < restarted - chrono::Duration::seconds(30)
        })
        .collect();
    assert!(beyond.len() >= 5, "{beyond:?}");
    let ran = beyond.iter().filter(|r| r["state"] != "skipped").count();
    assert!(ran <= 2, "{ran} late fires ran with a cap of 2: {beyond:?}");
    assert!(
        beyond
            .iter()
            .filter(|r| r["state"] == "skipped")
            .all(|r| r["reason"] == "missed")
    );
    assert!(count(runs, "skipped", Some("missed")) >= beyond.len() - 2);
    // Fires only a little late ran (the node takes a few seconds to start and claim).
    let recent = runs
        .iter()
        .filter(|r| {
            let t = time(&r["fire_time"]);
            t > restarted - chrono::Duration::seconds(15) && t < restarted
        })
        .filter(|r| r["state"] == "succeeded")
        .count();
    assert!(recent >= 10, "fires a little late run: {recent}");
}
