-- Kairos schema, version 1: tenants and API keys, jobs, schedules, runs and their events,
-- idempotency keys and shard fences.
--
-- `runs` and `run_events` are range-partitioned by `fire_time` into monthly partitions
-- (`runs_pYYYYMM`, `run_events_pYYYYMM`). This migration creates only the parents: the
-- partitions are created and dropped by `PgStore::maintain_partitions`, which
-- `PgStore::migrate` runs right after applying migrations.

CREATE TABLE tenants (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id         uuid        PRIMARY KEY,
    tenant_id  uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- SHA-256 of the secret; the secret itself is never stored.
    key_hash   bytea       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    prefix     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

-- Deletes are soft (deleted_at) so that run history keeps its job.
CREATE TABLE jobs (
    id                            uuid        PRIMARY KEY,
    tenant_id                     uuid        NOT NULL REFERENCES tenants (id),
    name                          text        NOT NULL,
    image                         text        NOT NULL,
    command                       text[]      NOT NULL DEFAULT '{}',
    env                           jsonb       NOT NULL DEFAULT '{}'
                                              CHECK (jsonb_typeof(env) = 'object'),
    memory_mb                     int         NOT NULL CHECK (memory_mb BETWEEN 16 AND 1024),
    timeout_seconds               int         NOT NULL CHECK (timeout_seconds BETWEEN 1 AND 86400),
    retry_max_attempts            int         NOT NULL CHECK (retry_max_attempts >= 1),
    retry_initial_backoff_seconds int         NOT NULL CHECK (retry_initial_backoff_seconds >= 1),
    retry_max_backoff_seconds     int         NOT NULL
                                              CHECK (retry_max_backoff_seconds >= retry_initial_backoff_seconds),
    labels                        jsonb       NOT NULL DEFAULT '{}'
                                              CHECK (jsonb_typeof(labels) = 'object'),
    version                       bigint      NOT NULL DEFAULT 1,
    created_at                    timestamptz NOT NULL DEFAULT now(),
    updated_at                    timestamptz NOT NULL DEFAULT now(),
    deleted_at                    timestamptz
);

CREATE INDEX jobs_tenant_live_idx ON jobs (tenant_id, id) WHERE deleted_at IS NULL;

-- Schedules are deleted for real: their runs keep the schedule id (runs have no foreign keys).
CREATE TABLE schedules (
    id                     uuid        PRIMARY KEY,
    tenant_id              uuid        NOT NULL REFERENCES tenants (id),
    job_id                 uuid        NOT NULL REFERENCES jobs (id),
    shard                  smallint    NOT NULL CHECK (shard BETWEEN 0 AND 1023),
    kind                   text        NOT NULL CHECK (kind IN ('cron', 'interval', 'at')),
    cron                   text,
    interval_seconds       int         CHECK (interval_seconds >= 1),
    interval_anchor        timestamptz,
    at                     timestamptz,
    timezone               text        NOT NULL,
    start_at               timestamptz,
    end_at                 timestamptz,
    overlap_policy         text        NOT NULL
                                       CHECK (overlap_policy IN ('allow', 'skip', 'buffer_one', 'replace')),
    catchup_window_seconds int         NOT NULL CHECK (catchup_window_seconds >= 0),
    jitter_seconds         int         NOT NULL CHECK (jitter_seconds >= 0),
    paused                 boolean     NOT NULL DEFAULT false,
    pause_note             text,
    version                bigint      NOT NULL DEFAULT 1,
    next_fire_at           timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedules_cadence_check CHECK (
        (kind = 'cron' AND cron IS NOT NULL)
        OR (kind = 'interval' AND interval_seconds IS NOT NULL AND interval_anchor IS NOT NULL)
        OR (kind = 'at' AND at IS NOT NULL)
    )
);

-- The scheduler's planning scan: due, unpaused schedules of a shard in fire order.
CREATE INDEX schedules_planning_idx ON schedules (shard, next_fire_at)
    WHERE NOT paused AND next_fire_at IS NOT NULL;
CREATE INDEX schedules_tenant_idx ON schedules (tenant_id, id);
CREATE INDEX schedules_job_idx ON schedules (job_id);

-- One row per execution attempt. No foreign keys: the table is partitioned and its history
-- outlives jobs and schedules.
CREATE TABLE runs (
    id               uuid        NOT NULL,
    tenant_id        uuid        NOT NULL,
    job_id           uuid        NOT NULL,
    schedule_id      uuid,
    schedule_version bigint,
    shard            smallint    NOT NULL CHECK (shard BETWEEN 0 AND 1023),
    trigger          text        NOT NULL CHECK (trigger IN ('schedule', 'manual', 'retry', 'backfill')),
    attempt          int         NOT NULL CHECK (attempt >= 1),
    retry_of         uuid,
    fire_time        timestamptz NOT NULL,
    state            text        NOT NULL CHECK (state IN ('scheduled', 'queued', 'running',
                                                           'succeeded', 'failed', 'cancelled', 'skipped')),
    reason           text,
    exit_code        int,
    worker_id        text,
    cancel_requested boolean     NOT NULL DEFAULT false,
    -- Per-run env overrides (values may be secrets).
    env              jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(env) = 'object'),
    log_tail         text,
    log_truncated    boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    -- Also serves lookups by id alone (its leading column), so there is no separate (id) index.
    PRIMARY KEY (id, fire_time),
    -- I1: at most one run per fire and attempt.
    CONSTRAINT runs_fire_attempt_key UNIQUE (schedule_id, fire_time, attempt)
) PARTITION BY RANGE (fire_time);

CREATE INDEX runs_tenant_idx ON runs (tenant_id, id);
CREATE INDEX runs_job_idx ON runs (job_id, id);
CREATE INDEX runs_schedule_idx ON runs (schedule_id, id);
-- Non-terminal runs of a shard (recovery when a node claims it).
CREATE INDEX runs_shard_active_idx ON runs (shard, state)
    WHERE state IN ('scheduled', 'queued', 'running');
-- Not-yet-started runs of a schedule or job, cancelled by schedule changes and deletes (I4).
CREATE INDEX runs_schedule_pending_idx ON runs (schedule_id, schedule_version)
    WHERE state IN ('scheduled', 'queued');
CREATE INDEX runs_job_pending_idx ON runs (job_id)
    WHERE state IN ('scheduled', 'queued');

-- I3: one row per state transition. `fire_time` is copied from the run so that a run and its
-- events live in partitions of the same month and are dropped together.
CREATE TABLE run_events (
    id         bigint      GENERATED ALWAYS AS IDENTITY,
    run_id     uuid        NOT NULL,
    tenant_id  uuid        NOT NULL,
    fire_time  timestamptz NOT NULL,
    from_state text        CHECK (from_state IN ('scheduled', 'queued', 'running',
                                                 'succeeded', 'failed', 'cancelled', 'skipped')),
    to_state   text        NOT NULL CHECK (to_state IN ('scheduled', 'queued', 'running',
                                                        'succeeded', 'failed', 'cancelled', 'skipped')),
    reason     text,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, fire_time)
) PARTITION BY RANGE (fire_time);

CREATE INDEX run_events_run_idx ON run_events (run_id, id);

-- Execute-now idempotency. A unique index on the partitioned `runs` would have to include
-- `fire_time`, which differs between two calls with the same key, hence this side table.
-- Rows whose run was dropped by retention are removed by partition maintenance.
CREATE TABLE idempotency_keys (
    tenant_id  uuid        NOT NULL,
    job_id     uuid        NOT NULL,
    key        text        NOT NULL,
    run_id     uuid        NOT NULL,
    fire_time  timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, job_id, key)
);

CREATE INDEX idempotency_keys_fire_time_idx ON idempotency_keys (fire_time);

-- The current fence token of each shard (I1, I8): a write for a shard carries its writer's
-- token and fails if a newer owner has claimed the shard since.
CREATE TABLE shard_fences (
    shard      smallint    PRIMARY KEY CHECK (shard BETWEEN 0 AND 1023),
    token      bigint      NOT NULL DEFAULT 0,
    owner      text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO shard_fences (shard)
SELECT s FROM generate_series(0, 1023) AS s;
