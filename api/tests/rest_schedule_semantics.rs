//! The schedule semantics through the REST router on a real Postgres, with the API's clock held
//! still: DST notes and jitter in previews, run limits and completion, catch-up settings, the
//! overlap policy of manual triggers and its override, resume with and without catch-up, and
//! what a backfill leaves alone. The scheduler's side runs in `cli/tests/schedule_semantics.rs`.

// Test harness code may panic on anything unexpected: that is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Duration, Utc};
use common::{App, app_at, app_with_limits, assert_invalid};
use kairos_domain::{ScheduleId, SkipReason};
use kairos_store::{FireState, Materialize, SchedulerStore, Store};
use serde_json::{Value, json};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

async fn create(app: &App, key: &str, job: &str, body: Value) -> Value {
    let (status, schedule) = app
        .post(&format!("/v1/jobs/{job}/schedules"), key, body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{schedule}");
    schedule
}

/// Records the schedule's next fire as the planner would (through the store).
async fn plan_next(app: &App, key: &str, schedule: &Value, state: FireState) {
    let id: ScheduleId = schedule["id"].as_str().unwrap().parse().unwrap();
    let tenant = app
        .store
        .tenant_for_key(&kairos_api::auth::hash_key(key))
        .await
        .unwrap()
        .unwrap();
    let s = app.store.get_schedule(tenant, id).await.unwrap();
    let lease = app
        .store
        .claim_shard(s.shard, 1, "test-node")
        .await
        .unwrap();
    let at = s.next_fire_at.unwrap();
    app.store
        .materialize(
            &lease,
            &[Materialize {
                schedule_id: s.id,
                schedule_version: s.version,
                fire_time: at,
                state,
                next_fire_at: s.timeline().after_fire().next_after(at),
            }],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn previews_name_the_dst_rule_of_each_fire_and_show_the_jittered_times() {
    let app = app_at(t("2027-03-13T12:00:00Z")).await;
    let key = app.tenant("acme").await;
    let job = app.job(&key).await;
    let gap = create(
        &app,
        &key,
        &job,
        json!({ "cron": "30 2 * * *", "timezone": "America/New_York" }),
    )
    .await;
    let first = &gap["next_fires"][0];
    assert_eq!(first["utc"], "2027-03-14T07:00:00Z");
    assert_eq!(first["local"], "2027-03-14T03:00:00-04:00");
    assert_eq!(first["dst"], "spring_forward");
    assert!(
        first["dst_note"]
            .as_str()
            .unwrap()
            .contains("first instant after the gap"),
        "{first}"
    );
    assert!(gap["next_fires"][1].get("dst").is_none(), "{gap}");

    app.clock.as_ref().unwrap().set(t("2027-11-06T12:00:00Z"));
    let hourly = create(
        &app,
        &key,
        &job,
        json!({ "cron": "30 * * * *", "timezone": "America/New_York",
                "start_at": "2027-11-07T05:00:00Z" }),
    )
    .await;
    let notes: Vec<(&str, Option<&str>)> = hourly["next_fires"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["local"].as_str().unwrap(), f["dst"].as_str()))
        .collect();
    assert_eq!(
        notes[..2],
        [
            ("2027-11-07T01:30:00-04:00", Some("fall_back_first")),
            ("2027-11-07T01:30:00-05:00", Some("fall_back_second")),
        ]
    );

    let jittered = create(
        &app,
        &key,
        &job,
        json!({ "cron": "0 * * * *", "jitter_seconds": 600 }),
    )
    .await;
    let offset = jittered["jitter_offset_ms"].as_i64().unwrap();
    assert!((0..600_000).contains(&offset), "{jittered}");
    let fires = jittered["next_fire_times"].as_array().unwrap();
    // The 12:00 fire, shifted, is still ahead of 12:00:00.
    assert_eq!(
        time(&fires[0]),
        t("2027-11-06T12:00:00Z") + Duration::milliseconds(offset)
    );
    assert_eq!(time(&fires[1]) - time(&fires[0]), Duration::hours(1));
    assert_eq!(jittered["next_fire_at"], fires[0]);
    // Stable: the same schedule reads back with the same offset and fires.
    let (_, again) = app
        .get(
            &format!("/v1/schedules/{}", jittered["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(again["jitter_offset_ms"], offset);
    assert_eq!(again["next_fire_times"], jittered["next_fire_times"]);
}

#[tokio::test]
async fn a_one_off_completes_after_its_fire_and_max_runs_bounds_the_preview() {
    let now = t("2026-06-10T12:00:00Z");
    let app = app_at(now).await;
    let key = app.tenant("acme").await;
    let job = app.job(&key).await;

    let limited = create(
        &app,
        &key,
        &job,
        json!({ "cron": "0 * * * *", "max_runs": 3 }),
    )
    .await;
    assert_eq!(limited["max_runs"], 3);
    assert_eq!(limited["fire_count"], 0);
    assert_eq!(limited["state"], "active");
    assert_eq!(limited["next_fire_times"].as_array().unwrap().len(), 3);

    let once = create(&app, &key, &job, json!({ "at": "2026-06-10T12:30:00Z" })).await;
    assert_eq!(once["state"], "active");
    assert_eq!(once["next_fire_times"], json!(["2026-06-10T12:30:00Z"]));
    // Planned: no fire left to plan, but the one planned is still ahead.
    plan_next(&app, &key, &once, FireState::Scheduled).await;
    let path = format!("/v1/schedules/{}", once["id"].as_str().unwrap());
    let (_, planned) = app.get(&path, &key).await;
    assert_eq!(planned["next_fire_at"], Value::Null);
    assert_eq!(planned["fire_count"], 1);
    assert_eq!(planned["state"], "active");
    assert_eq!(planned["next_fire_times"], json!(["2026-06-10T12:30:00Z"]));
    // Its time passed: completed, with nothing left to preview.
    app.clock.as_ref().unwrap().set(t("2026-06-10T12:31:00Z"));
    let (_, done) = app.get(&path, &key).await;
    assert_eq!(done["state"], "completed");
    assert_eq!(done["last_fire_at"], "2026-06-10T12:30:00Z");
    assert_eq!(done["next_fire_times"], json!([]));
    // An edit can give it a new fire.
    let (status, again) = app
        .patch(&path, &key, json!({ "at": "2026-06-11T08:00:00Z" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["state"], "active");
    assert_eq!(again["next_fire_at"], "2026-06-11T08:00:00Z");

    // A planned fire counts against the limit; the preview shows it and the one left.
    let two = create(
        &app,
        &key,
        &job,
        json!({ "cron": "0 * * * *", "max_runs": 2 }),
    )
    .await;
    plan_next(&app, &key, &two, FireState::Scheduled).await;
    let path = format!("/v1/schedules/{}", two["id"].as_str().unwrap());
    let (_, one_left) = app.get(&path, &key).await;
    assert_eq!(one_left["fire_count"], 1);
    assert_eq!(
        one_left["next_fire_times"],
        json!(["2026-06-10T13:00:00Z", "2026-06-10T14:00:00Z"])
    );
    // Recorded missed instead, the same fire still counts (whatever became of it).
    let three = create(
        &app,
        &key,
        &job,
        json!({ "cron": "0 * * * *", "max_runs": 1 }),
    )
    .await;
    plan_next(&app, &key, &three, FireState::Skipped(SkipReason::Missed)).await;
    let (_, spent) = app
        .get(
            &format!("/v1/schedules/{}", three["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(spent["fire_count"], 1);
    assert_eq!(spent["next_fire_at"], Value::Null);
}

#[tokio::test]
async fn catch_up_and_run_limits_round_trip_and_are_checked() {
    let app = app_at(t("2026-06-10T12:00:00Z")).await;
    let key = app.tenant("acme").await;
    let job = app.job(&key).await;
    let s = create(&app, &key, &job, json!({ "cron": "@hourly" })).await;
    assert_eq!(s["catchup_window_seconds"], 900);
    assert_eq!(s["catchup_max_runs"], 1, "one late fire runs by default");
    assert_eq!(s["max_runs"], Value::Null);
    let path = format!("/v1/schedules/{}", s["id"].as_str().unwrap());
    let (status, patched) = app
        .patch(
            &path,
            &key,
            json!({ "catchup_max_runs": 5, "catchup_window_seconds": 3600, "max_runs": 10 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["catchup_max_runs"], 5);
    assert_eq!(patched["max_runs"], 10);
    for (body, field) in [
        (json!({ "catchup_max_runs": 1001 }), "catchup_max_runs"),
        (json!({ "catchup_max_runs": -1 }), "catchup_max_runs"),
        (json!({ "max_runs": 0 }), "max_runs"),
        (json!({ "max_runs": "many" }), "max_runs"),
    ] {
        let (status, err) = app.patch(&path, &key, body).await;
        assert_invalid(status, &err, field);
    }
    let (_, unchanged) = app.get(&path, &key).await;
    assert_eq!(unchanged["version"], patched["version"], "nothing written");
}

#[tokio::test]
async fn a_trigger_follows_the_overlap_policy_unless_the_request_overrides_it() {
    let app = app_at(t("2026-06-10T12:00:00Z")).await;
    let key = app.tenant("acme").await;
    let job = app.job(&key).await;
    let s = create(
        &app,
        &key,
        &job,
        json!({ "cron": "@daily", "overlap_policy": "skip" }),
    )
    .await;
    let path = format!("/v1/schedules/{}/trigger", s["id"].as_str().unwrap());
    let (status, first) = app.call(Method::POST, &path, Some(&key), None).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["state"], "queued");
    assert_eq!(first["due_at"], first["fire_time"]);

    // The first is still queued: under `skip` the next trigger is recorded skipped.
    let (status, second) = app.post(&path, &key, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["state"], "skipped");
    assert_eq!(second["reason"], "overlap");
    let (_, events) = app
        .get(
            &format!("/v1/runs/{}/events", second["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(events["events"][0]["to_state"], "skipped");
    assert_eq!(events["events"][0]["reason"], "overlap");

    // An explicit override.
    let (_, allowed) = app
        .post(&path, &key, json!({ "overlap_policy": "allow" }))
        .await;
    assert_eq!(allowed["state"], "queued");
    let (_, held) = app
        .post(&path, &key, json!({ "overlap_policy": "buffer_one" }))
        .await;
    assert_eq!(held["state"], "queued");
    assert_eq!(held["blocked_by"], first["id"], "{held}");

    let (status, err) = app
        .post(&path, &key, json!({ "overlap_policy": "queue" }))
        .await;
    assert_invalid(status, &err, "overlap_policy");
    let (status, err) = app.post(&path, &key, json!({ "policy": "allow" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let (_, runs) = app
        .get(
            &format!("/v1/runs?schedule_id={}", s["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        4,
        "refusals write nothing"
    );
}

#[tokio::test]
async fn a_resume_fires_nothing_for_the_pause_unless_it_asks_for_catch_up() {
    let app = app_at(t("2026-06-10T12:00:30Z")).await;
    let clock = app.clock.as_ref().unwrap();
    let key = app.tenant("acme").await;
    let job = app.job(&key).await;
    let s = create(&app, &key, &job, json!({ "cron": "0 * * * * *" })).await;
    let id = s["id"].as_str().unwrap();

    let (_, paused) = app
        .post(
            &format!("/v1/schedules/{id}/pause"),
            &key,
            json!({ "note": "deploy" }),
        )
        .await;
    assert_eq!(paused["state"], "paused");
    assert_eq!(paused["pause_note"], "deploy");
    assert!(paused["paused_at"].is_string(), "{paused}");

    clock.set(t("2026-06-10T12:10:30Z"));
    let (status, resumed) = app
        .call(
            Method::POST,
            &format!("/v1/schedules/{id}/resume"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["state"], "active");
    assert_eq!(resumed["paused_at"], Value::Null);
    assert_eq!(
        resumed["next_fire_at"], "2026-06-10T12:11:00Z",
        "no fire for the ten minutes it was paused"
    );

    app.post(&format!("/v1/schedules/{id}/pause"), &key, json!({}))
        .await;
    clock.set(t("2026-06-10T12:20:30Z"));
    let (status, caught_up) = app
        .post(
            &format!("/v1/schedules/{id}/resume"),
            &key,
            json!({ "catch_up": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{caught_up}");
    assert_eq!(
        time(&caught_up["next_fire_at"]),
        t("2026-06-10T12:11:00Z"),
        "the fires missed while paused are planned; the catch-up rule decides which run"
    );
    let (status, err) = app
        .post(
            &format!("/v1/schedules/{id}/resume"),
            &key,
            json!({ "catch_up": "yes" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
}

#[tokio::test]
async fn a_backfill_lists_the_fires_it_leaves_alone() {
    let app = app_at(t("2026-06-10T12:00:00Z")).await;
    let key = app.tenant("acme").await;
    let job = app.job(&key).await;
    let s = create(&app, &key, &job, json!({ "cron": "0 * * * *" })).await;
    let path = format!("/v1/schedules/{}/backfill", s["id"].as_str().unwrap());
    let range = json!({ "from": "2026-06-10T06:00:00Z", "to": "2026-06-10T09:00:00Z" });
    let (status, first) = app.post(&path, &key, range.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["left_alone"], json!([]));
    let mut dry = range.clone();
    dry["dry_run"] = json!(true);
    let (status, preview) = app.post(&path, &key, dry).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(
        preview["fire_times"], preview["left_alone"],
        "all in progress"
    );
    assert_eq!(preview["runs"], json!([]));

    // Too many fires: a dry run lists the first 1000 and says so; a real one is refused.
    let big =
        json!({ "from": "2026-04-01T00:00:00Z", "to": "2026-06-10T00:00:00Z", "dry_run": true });
    let (status, truncated) = app.post(&path, &key, big).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(truncated["truncated"], true);
    assert_eq!(truncated["fire_times"].as_array().unwrap().len(), 1000);
    let every_second = create(&app, &key, &job, json!({ "cron": "* * * * * *" })).await;
    let (status, err) = app
        .post(
            &format!(
                "/v1/schedules/{}/backfill",
                every_second["id"].as_str().unwrap()
            ),
            &key,
            json!({ "from": "2026-06-10T10:00:00Z", "to": "2026-06-10T11:00:00Z" }),
        )
        .await;
    assert_invalid(status, &err, "to");
}

#[tokio::test]
async fn the_live_schedule_quota_refuses_past_it_and_a_fired_one_off_stops_counting() {
    let app = app_with_limits(kairos_api::TenantLimits {
        max_live_schedules: 2,
    })
    .await;
    let key = app.tenant("acme").await;
    let job = app.job(&key).await;
    create(&app, &key, &job, json!({ "cron": "0 * * * *" })).await;
    // A one-off due in two seconds (whole seconds: `at` is kept to the second).
    let at = (Utc::now() + Duration::seconds(3))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let once = create(&app, &key, &job, json!({ "at": at })).await;

    let path = format!("/v1/jobs/{job}/schedules");
    let (status, refused) = app.post(&path, &key, json!({ "cron": "0 9 * * *" })).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{refused}");
    assert_eq!(refused["error"]["code"], "resource_exhausted", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("2 live schedules"), "{message}");
    let (_, listed) = app.get(&format!("/v1/schedules?job_id={job}"), &key).await;
    assert_eq!(
        listed["schedules"].as_array().unwrap().len(),
        2,
        "nothing written: {listed}"
    );
    // Another tenant has a quota of its own.
    let other = app.tenant("globex").await;
    let other_job = app.job(&other).await;
    create(&app, &other, &other_job, json!({ "cron": "0 9 * * *" })).await;

    // The one-off fires (planned as the scheduler would) and its time passes: it completes
    // and no longer counts.
    plan_next(&app, &key, &once, FireState::Scheduled).await;
    let once_path = format!("/v1/schedules/{}", once["id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, s) = app.get(&once_path, &key).await;
        if s["state"] == "completed" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never completed: {s}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    create(&app, &key, &job, json!({ "cron": "0 9 * * *" })).await;
    let (status, refused) = app.post(&path, &key, json!({ "cron": "0 10 * * *" })).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{refused}");
    // Giving the completed one-off a new time would make it live again: past the quota too.
    let later = (Utc::now() + Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let (status, refused) = app.patch(&once_path, &key, json!({ "at": later })).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{refused}");
    let (_, still) = app.get(&once_path, &key).await;
    assert_eq!(still["state"], "completed", "nothing written: {still}");
}
