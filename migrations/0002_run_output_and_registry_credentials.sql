-- How many bytes of output a run has written in all (its live tail while it runs, its final
-- count once it ended). `log_tail` keeps only the end of it; `log_bytes - length(log_tail)` is
-- the offset of the tail's first byte, so a reader can follow the output by offset.
ALTER TABLE runs ADD COLUMN log_bytes bigint NOT NULL DEFAULT 0 CHECK (log_bytes >= 0);

-- A tenant's registry credentials, by name; jobs name the one their image needs. The password
-- is sealed with AES-256-GCM under the servers' KAIROS_SECRET_KEY (12-byte nonce, then the
-- ciphertext and tag; the tenant id and name are its associated data), never stored in clear.
CREATE TABLE registry_credentials (
    tenant_id       uuid        NOT NULL REFERENCES tenants (id),
    name            text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    server          text        NOT NULL CHECK (length(server) BETWEEN 1 AND 260),
    username        text        NOT NULL CHECK (length(username) BETWEEN 1 AND 256),
    password_sealed bytea       NOT NULL CHECK (octet_length(password_sealed) > 28),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

ALTER TABLE jobs ADD COLUMN registry_credential text;
