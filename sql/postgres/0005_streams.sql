-- Attempt output streams (spec/streams.md): one row per stream (its last id, lifetime
-- counters, append rate and summary document) and one row per retained frame.

CREATE TABLE ff_stream (
    execution_id       TEXT COLLATE "C" NOT NULL,
    attempt_index      BIGINT NOT NULL,
    last_ms            BIGINT NOT NULL,
    last_seq           BIGINT NOT NULL,
    frame_count        BIGINT NOT NULL,
    total_bytes        BIGINT NOT NULL,
    retained           BIGINT NOT NULL,
    has_durable        BIGINT NOT NULL,
    ema_rate_hz        DOUBLE PRECISION NOT NULL,
    last_append_ms     BIGINT NOT NULL,
    summary            TEXT,
    summary_version    BIGINT NOT NULL DEFAULT 0,
    summary_updated_ms BIGINT,
    summary_first_ms   BIGINT,
    PRIMARY KEY (execution_id, attempt_index)
);

CREATE TABLE ff_stream_frame (
    execution_id    TEXT COLLATE "C" NOT NULL,
    attempt_index   BIGINT NOT NULL,
    ms              BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    frame_type      TEXT NOT NULL,
    payload         BYTEA NOT NULL,
    encoding        TEXT NOT NULL,
    source          TEXT NOT NULL,
    correlation_id  TEXT NOT NULL,
    mode            TEXT NOT NULL,
    ttl_ms          BIGINT NOT NULL,
    summary_version BIGINT NOT NULL,
    PRIMARY KEY (execution_id, attempt_index, ms, seq)
);
