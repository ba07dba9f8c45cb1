-- Kairos schema, version 3: the schedule semantics of issue 5 — catch-up cap, run limit and
-- fire count, pause time, retries due after their backoff, fires held by the overlap policy,
-- and the keys that keep fires unique per schedule version.

ALTER TABLE schedules
    -- Of the fires more than 30 s late but within the catch-up window, at most this many
    -- (the latest) run late; older ones are recorded skipped/missed.
    ADD COLUMN catchup_max_runs int NOT NULL DEFAULT 1 CHECK (catchup_max_runs >= 0),
    -- The schedule ends after this many fires (NULL: no limit).
    ADD COLUMN max_runs int CHECK (max_runs >= 1),
    -- Fires the planner recorded (run or skipped); fires a change cancelled before they were
    -- due are given back.
    ADD COLUMN fire_count bigint NOT NULL DEFAULT 0 CHECK (fire_count >= 0),
    -- The latest fire the planner recorded.
    ADD COLUMN last_fire_at timestamptz,
    -- When the schedule was paused (NULL while it is not): resume with catch-up starts here.
    ADD COLUMN paused_at timestamptz;

UPDATE schedules SET paused_at = updated_at WHERE paused;

ALTER TABLE runs
    -- When a retry is due (its backoff after the failure); NULL: at its fire time.
    ADD COLUMN due_at timestamptz,
    -- A queued fire held by the overlap policy until the schedule's other runs end: the run
    -- it waited for when it was held. NULL: not held.
    ADD COLUMN blocked_by uuid,
    -- Why a cancel was requested for a running run (recorded when its worker stops it).
    ADD COLUMN cancel_reason text;

-- I1. A fire of a schedule version is materialized once (trigger `schedule` runs are always
-- attempt 1), and a failed run is retried once. The version is part of the fire: a change
-- cancels the old version's pending runs in its own transaction (I4), and the new version
-- may fire the same instants again (an edit or a resume inside the planning horizon).
-- Backfill and manual runs are checked under the schedule's lock instead.
ALTER TABLE runs DROP CONSTRAINT runs_fire_attempt_key;
CREATE UNIQUE INDEX runs_fire_key ON runs (schedule_id, fire_time, schedule_version)
    WHERE trigger = 'schedule';
CREATE UNIQUE INDEX runs_retry_key ON runs (retry_of, fire_time)
    WHERE retry_of IS NOT NULL;

-- A schedule's runs in progress, read by every overlap decision and release.
CREATE INDEX runs_schedule_active_idx ON runs (schedule_id)
    WHERE state IN ('queued', 'running') OR (state = 'scheduled' AND trigger = 'retry');

-- Retries waiting for their backoff, by shard and due time (the planner arms them).
CREATE INDEX runs_retry_due_idx ON runs (shard, due_at)
    WHERE state = 'scheduled' AND trigger = 'retry';

-- A schedule's runs at given fire times, of any trigger (backfill leaves alone the fires
-- that already ran or are in progress). Takes over from the (schedule_id, fire_time,
-- attempt) index of the dropped constraint.
CREATE INDEX runs_schedule_fire_idx ON runs (schedule_id, fire_time);
