-- Kairos standalone schema, version 3: the schedule semantics of issue 5, as in the Postgres
-- migration 0003 — catch-up cap, run limit and fire count, pause time, retries due after
-- their backoff, fires held by the overlap policy, and the keys that keep fires unique per
-- schedule version.

ALTER TABLE schedules ADD COLUMN catchup_max_runs INTEGER NOT NULL DEFAULT 1
    CHECK (catchup_max_runs >= 0);
ALTER TABLE schedules ADD COLUMN max_runs INTEGER CHECK (max_runs >= 1);
ALTER TABLE schedules ADD COLUMN fire_count INTEGER NOT NULL DEFAULT 0 CHECK (fire_count >= 0);
ALTER TABLE schedules ADD COLUMN last_fire_at TEXT;
ALTER TABLE schedules ADD COLUMN paused_at TEXT;

UPDATE schedules SET paused_at = updated_at WHERE paused = 1;

-- SQLite cannot drop the table's inline unique constraint: the table is rebuilt with the new
-- columns (`due_at`, `blocked_by`, `cancel_reason`) and without it.
CREATE TABLE runs_v3 (
    id               BLOB    PRIMARY KEY CHECK (length(id) = 16),
    tenant_id        BLOB    NOT NULL,
    job_id           BLOB    NOT NULL,
    schedule_id      BLOB,
    schedule_version INTEGER,
    shard            INTEGER NOT NULL CHECK (shard BETWEEN 0 AND 1023),
    trigger          TEXT    NOT NULL CHECK (trigger IN ('schedule', 'manual', 'retry', 'backfill')),
    attempt          INTEGER NOT NULL CHECK (attempt >= 1),
    retry_of         BLOB,
    fire_time        TEXT    NOT NULL,
    -- When a retry is due (its backoff after the failure); NULL: at its fire time.
    due_at           TEXT,
    state            TEXT    NOT NULL CHECK (state IN ('scheduled', 'queued', 'running',
                                                       'succeeded', 'failed', 'cancelled', 'skipped')),
    reason           TEXT,
    exit_code        INTEGER,
    worker_id        TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    -- Why a cancel was requested for a running run (recorded when its worker stops it).
    cancel_reason    TEXT,
    -- A queued fire held by the overlap policy: the run it waited for. NULL: not held.
    blocked_by       BLOB,
    -- Per-run env overrides (values may be secrets).
    env              TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(env) AND json_type(env) = 'object'),
    log_tail         TEXT,
    log_truncated    INTEGER NOT NULL DEFAULT 0 CHECK (log_truncated IN (0, 1)),
    log_bytes        INTEGER NOT NULL DEFAULT 0 CHECK (log_bytes >= 0),
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    started_at       TEXT,
    finished_at      TEXT
) STRICT;

INSERT INTO runs_v3 (id, tenant_id, job_id, schedule_id, schedule_version, shard, trigger,
    attempt, retry_of, fire_time, state, reason, exit_code, worker_id, cancel_requested, env,
    log_tail, log_truncated, log_bytes, created_at, updated_at, started_at, finished_at)
SELECT id, tenant_id, job_id, schedule_id, schedule_version, shard, trigger,
    attempt, retry_of, fire_time, state, reason, exit_code, worker_id, cancel_requested, env,
    log_tail, log_truncated, log_bytes, created_at, updated_at, started_at, finished_at
FROM runs;

DROP TABLE runs;
ALTER TABLE runs_v3 RENAME TO runs;

CREATE INDEX runs_tenant_idx ON runs (tenant_id, id);
CREATE INDEX runs_job_idx ON runs (job_id, id);
CREATE INDEX runs_schedule_idx ON runs (schedule_id, id);
CREATE INDEX runs_fire_time_idx ON runs (fire_time);
CREATE INDEX runs_shard_active_idx ON runs (shard, state, fire_time)
    WHERE state IN ('scheduled', 'queued', 'running');
CREATE INDEX runs_schedule_pending_idx ON runs (schedule_id, schedule_version)
    WHERE state IN ('scheduled', 'queued');
CREATE INDEX runs_job_pending_idx ON runs (job_id)
    WHERE state IN ('scheduled', 'queued');

-- I1: a fire of a schedule version is materialized once; a failed run is retried once.
CREATE UNIQUE INDEX runs_fire_key ON runs (schedule_id, fire_time, schedule_version)
    WHERE trigger = 'schedule';
CREATE UNIQUE INDEX runs_retry_key ON runs (retry_of) WHERE retry_of IS NOT NULL;
-- A schedule's runs at given fire times, of any trigger (backfill).
CREATE INDEX runs_schedule_fire_idx ON runs (schedule_id, fire_time);
-- A schedule's runs in progress (overlap decisions, releases).
CREATE INDEX runs_schedule_active_idx ON runs (schedule_id)
    WHERE state IN ('queued', 'running') OR (state = 'scheduled' AND trigger = 'retry');
-- Retries waiting for their backoff (the planner arms them).
CREATE INDEX runs_retry_due_idx ON runs (shard, due_at)
    WHERE state = 'scheduled' AND trigger = 'retry';
