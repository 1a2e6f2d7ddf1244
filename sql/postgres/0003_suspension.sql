-- Suspension and signals (spec/suspension.md): the execution keeps its current suspension
-- (JSON) and its timeout clock; waitpoints and signals are rows of their own; the
-- waitpoint signing keys are one keystore for the whole store.

ALTER TABLE ff_exec ADD COLUMN suspension TEXT;
ALTER TABLE ff_exec ADD COLUMN suspension_timeout_at BIGINT;
ALTER TABLE ff_exec ADD COLUMN signal_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE ff_exec ADD COLUMN waitpoints_open BIGINT NOT NULL DEFAULT 0;
CREATE INDEX ff_exec_suspension_timeout ON ff_exec (suspension_timeout_at)
    WHERE suspension_timeout_at IS NOT NULL;

CREATE TABLE ff_waitpoint (
    waitpoint_id         TEXT COLLATE "C" PRIMARY KEY,
    execution_id         TEXT COLLATE "C" NOT NULL,
    attempt_index        BIGINT NOT NULL,
    waitpoint_key        TEXT COLLATE "C" NOT NULL,
    token                TEXT NOT NULL,
    state                TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    suspension_id        TEXT,
    activated_at         BIGINT,
    expires_at           BIGINT,
    closed_at            BIGINT,
    close_reason         TEXT,
    signal_count         BIGINT NOT NULL,
    matched_signal_count BIGINT NOT NULL,
    last_signal_at       BIGINT
);
CREATE INDEX ff_waitpoint_by_execution ON ff_waitpoint (execution_id, waitpoint_id);
CREATE INDEX ff_waitpoint_pending_expiry ON ff_waitpoint (expires_at)
    WHERE state = 'pending' AND expires_at IS NOT NULL;

CREATE TABLE ff_signal (
    signal_id        TEXT COLLATE "C" NOT NULL,
    execution_id     TEXT COLLATE "C" NOT NULL,
    waitpoint_id     TEXT COLLATE "C" NOT NULL,
    signal_name      TEXT NOT NULL,
    signal_category  TEXT NOT NULL,
    source_type      TEXT NOT NULL,
    source_identity  TEXT NOT NULL,
    target_scope     TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    accepted_at      BIGINT NOT NULL,
    effect           TEXT NOT NULL,
    correlation_id   TEXT,
    idempotency_key  TEXT COLLATE "C",
    dedup_expires_at BIGINT,
    payload_encoding TEXT,
    payload          BYTEA,
    seq              BIGINT NOT NULL,
    PRIMARY KEY (execution_id, signal_id)
);
CREATE INDEX ff_signal_by_waitpoint ON ff_signal (waitpoint_id, idempotency_key);

CREATE TABLE ff_hmac_key (
    kid        TEXT COLLATE "C" PRIMARY KEY,
    secret_hex TEXT NOT NULL,
    current    BIGINT NOT NULL,
    expires_at BIGINT
);
