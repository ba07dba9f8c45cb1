-- Kairos schema for the SQLite store of standalone mode, version 1: the same tables as the
-- Postgres schema one directory up (its 0001 and 0002: tenants and API keys, registry
-- credentials, jobs, schedules, runs and their events, idempotency keys and shard fences), in
-- SQLite's types:
--
-- * ids are 16-byte BLOBs (UUIDs; BLOBs compare bytewise, so they sort as Postgres' uuid);
-- * times are TEXT in one fixed-width form, `YYYY-MM-DDTHH:MM:SS.ffffff+00:00` (UTC, to the
--   microsecond, as Postgres keeps them), so comparing the text compares the instants;
-- * JSON objects and arrays (env, labels, command) are TEXT holding JSON;
-- * booleans are INTEGER 0 or 1.
--
-- There is no partitioning: `SqliteStore::maintain_partitions` deletes the runs (and events
-- and idempotency keys) of the months past the retention instead of dropping partitions.
-- Tables are STRICT, so a value of the wrong type is refused rather than stored.

CREATE TABLE tenants (
    id         BLOB    PRIMARY KEY CHECK (length(id) = 16),
    name       TEXT    NOT NULL,
    created_at TEXT    NOT NULL
) STRICT;

CREATE TABLE api_keys (
    id         BLOB    PRIMARY KEY CHECK (length(id) = 16),
    tenant_id  BLOB    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- SHA-256 of the secret; the secret itself is never stored.
    key_hash   BLOB    NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    prefix     TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    revoked_at TEXT
) STRICT;

CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

-- Deletes are soft (deleted_at) so that run history keeps its job.
CREATE TABLE jobs (
    id                            BLOB    PRIMARY KEY CHECK (length(id) = 16),
    tenant_id                     BLOB    NOT NULL REFERENCES tenants (id),
    name                          TEXT    NOT NULL,
    image                         TEXT    NOT NULL,
    command                       TEXT    NOT NULL DEFAULT '[]'
                                          CHECK (json_valid(command) AND json_type(command) = 'array'),
    env                           TEXT    NOT NULL DEFAULT '{}'
                                          CHECK (json_valid(env) AND json_type(env) = 'object'),
    memory_mb                     INTEGER NOT NULL CHECK (memory_mb BETWEEN 16 AND 1024),
    timeout_seconds               INTEGER NOT NULL CHECK (timeout_seconds BETWEEN 1 AND 86400),
    retry_max_attempts            INTEGER NOT NULL CHECK (retry_max_attempts >= 1),
    retry_initial_backoff_seconds INTEGER NOT NULL CHECK (retry_initial_backoff_seconds >= 1),
    retry_max_backoff_seconds     INTEGER NOT NULL
                                          CHECK (retry_max_backoff_seconds >= retry_initial_backoff_seconds),
    labels                        TEXT    NOT NULL DEFAULT '{}'
                                          CHECK (json_valid(labels) AND json_type(labels) = 'object'),
    -- The registry credential (of the tenant, by name) its image is pulled with, if any.
    registry_credential           TEXT,
    version                       INTEGER NOT NULL DEFAULT 1,
    created_at                    TEXT    NOT NULL,
    updated_at                    TEXT    NOT NULL,
    deleted_at                    TEXT
) STRICT;

CREATE INDEX jobs_tenant_live_idx ON jobs (tenant_id, id) WHERE deleted_at IS NULL;

-- Schedules are deleted for real: their runs keep the schedule id (runs have no foreign keys).
CREATE TABLE schedules (
    id                     BLOB    PRIMARY KEY CHECK (length(id) = 16),
    tenant_id              BLOB    NOT NULL REFERENCES tenants (id),
    job_id                 BLOB    NOT NULL REFERENCES jobs (id),
    shard                  INTEGER NOT NULL CHECK (shard BETWEEN 0 AND 1023),
    kind                   TEXT    NOT NULL CHECK (kind IN ('cron', 'interval', 'at')),
    cron                   TEXT,
    interval_seconds       INTEGER CHECK (interval_seconds >= 1),
    interval_anchor        TEXT,
    at                     TEXT,
    timezone               TEXT    NOT NULL,
    start_at               TEXT,
    end_at                 TEXT,
    overlap_policy         TEXT    NOT NULL
                                   CHECK (overlap_policy IN ('allow', 'skip', 'buffer_one', 'replace')),
    catchup_window_seconds INTEGER NOT NULL CHECK (catchup_window_seconds >= 0),
    jitter_seconds         INTEGER NOT NULL CHECK (jitter_seconds >= 0),
    paused                 INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    pause_note             TEXT,
    version                INTEGER NOT NULL DEFAULT 1,
    next_fire_at           TEXT,
    created_at             TEXT    NOT NULL,
    updated_at             TEXT    NOT NULL,
    CONSTRAINT schedules_cadence_check CHECK (
        (kind = 'cron' AND cron IS NOT NULL)
        OR (kind = 'interval' AND interval_seconds IS NOT NULL AND interval_anchor IS NOT NULL)
        OR (kind = 'at' AND at IS NOT NULL)
    )
) STRICT;

-- The scheduler's planning scan: due, unpaused schedules of a shard in fire order.
CREATE INDEX schedules_planning_idx ON schedules (shard, next_fire_at)
    WHERE NOT paused AND next_fire_at IS NOT NULL;
CREATE INDEX schedules_tenant_idx ON schedules (tenant_id, id);
CREATE INDEX schedules_job_idx ON schedules (job_id);

-- One row per execution attempt. No foreign keys: its history outlives jobs and schedules.
CREATE TABLE runs (
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
    state            TEXT    NOT NULL CHECK (state IN ('scheduled', 'queued', 'running',
                                                       'succeeded', 'failed', 'cancelled', 'skipped')),
    reason           TEXT,
    exit_code        INTEGER,
    worker_id        TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    -- Per-run env overrides (values may be secrets).
    env              TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(env) AND json_type(env) = 'object'),
    log_tail         TEXT,
    log_truncated    INTEGER NOT NULL DEFAULT 0 CHECK (log_truncated IN (0, 1)),
    -- How many bytes of output the run has written in all (its live tail while it runs, its
    -- final count once it ended); `log_bytes - length(log_tail)` is the offset of the tail.
    log_bytes        INTEGER NOT NULL DEFAULT 0 CHECK (log_bytes >= 0),
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    -- I1: at most one run per fire and attempt.
    CONSTRAINT runs_fire_attempt_key UNIQUE (schedule_id, fire_time, attempt)
) STRICT;

CREATE INDEX runs_tenant_idx ON runs (tenant_id, id);
CREATE INDEX runs_job_idx ON runs (job_id, id);
CREATE INDEX runs_schedule_idx ON runs (schedule_id, id);
CREATE INDEX runs_fire_time_idx ON runs (fire_time);
-- Non-terminal runs of a shard (recovery when a node claims it, dispatch).
CREATE INDEX runs_shard_active_idx ON runs (shard, state, fire_time)
    WHERE state IN ('scheduled', 'queued', 'running');
-- Not-yet-started runs of a schedule or job, cancelled by schedule changes and deletes (I4).
CREATE INDEX runs_schedule_pending_idx ON runs (schedule_id, schedule_version)
    WHERE state IN ('scheduled', 'queued');
CREATE INDEX runs_job_pending_idx ON runs (job_id)
    WHERE state IN ('scheduled', 'queued');

-- I3: one row per state transition, numbered in the order they were written (AUTOINCREMENT
-- never reuses a number, also after deletes).
CREATE TABLE run_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     BLOB    NOT NULL,
    tenant_id  BLOB    NOT NULL,
    fire_time  TEXT    NOT NULL,
    from_state TEXT    CHECK (from_state IN ('scheduled', 'queued', 'running',
                                             'succeeded', 'failed', 'cancelled', 'skipped')),
    to_state   TEXT    NOT NULL CHECK (to_state IN ('scheduled', 'queued', 'running',
                                                    'succeeded', 'failed', 'cancelled', 'skipped')),
    reason     TEXT,
    at         TEXT    NOT NULL
) STRICT;

CREATE INDEX run_events_run_idx ON run_events (run_id, id);
CREATE INDEX run_events_fire_time_idx ON run_events (fire_time);

-- Execute-now idempotency: the run a key was first used for.
CREATE TABLE idempotency_keys (
    tenant_id  BLOB    NOT NULL,
    job_id     BLOB    NOT NULL,
    key        TEXT    NOT NULL,
    run_id     BLOB    NOT NULL,
    fire_time  TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, job_id, key)
) STRICT;

CREATE INDEX idempotency_keys_fire_time_idx ON idempotency_keys (fire_time);

-- A tenant's registry credentials, by name; jobs name the one their image needs. The password
-- is sealed with AES-256-GCM under the server's secret key (12-byte nonce, then the
-- ciphertext and tag; the tenant id and name are its associated data), never stored in clear.
-- The name's form is checked by the domain (SQLite has no regular expressions built in).
CREATE TABLE registry_credentials (
    tenant_id       BLOB    NOT NULL REFERENCES tenants (id),
    name            TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 63),
    server          TEXT    NOT NULL CHECK (length(server) BETWEEN 1 AND 260),
    username        TEXT    NOT NULL CHECK (length(username) BETWEEN 1 AND 256),
    password_sealed BLOB    NOT NULL CHECK (length(password_sealed) > 28),
    created_at      TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT;

-- The current fence token of each shard (I1, I8): a write for a shard carries its writer's
-- token and fails if a newer owner has claimed the shard since.
CREATE TABLE shard_fences (
    shard      INTEGER PRIMARY KEY CHECK (shard BETWEEN 0 AND 1023),
    token      INTEGER NOT NULL DEFAULT 0,
    owner      TEXT,
    updated_at TEXT
) STRICT;

INSERT INTO shard_fences (shard)
WITH RECURSIVE s (n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < 1023)
SELECT n FROM s;
