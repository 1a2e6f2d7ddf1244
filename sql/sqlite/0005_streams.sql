-- Attempt output streams (spec/streams.md): one row per stream (its last id, lifetime
-- counters, append rate and summary document) and one row per retained frame.

CREATE TABLE ff_stream (
    execution_id       TEXT NOT NULL,
    attempt_index      INTEGER NOT NULL,
    last_ms            INTEGER NOT NULL,
    last_seq           INTEGER NOT NULL,
    frame_count        INTEGER NOT NULL,
    total_bytes        INTEGER NOT NULL,
    retained           INTEGER NOT NULL,
    has_durable        INTEGER NOT NULL,
    ema_rate_hz        REAL NOT NULL,
    last_append_ms     INTEGER NOT NULL,
    summary            TEXT,
    summary_version    INTEGER NOT NULL DEFAULT 0,
    summary_updated_ms INTEGER,
    summary_first_ms   INTEGER,
    PRIMARY KEY (execution_id, attempt_index)
);

CREATE TABLE ff_stream_frame (
    execution_id    TEXT NOT NULL,
    attempt_index   INTEGER NOT NULL,
    ms              INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    frame_type      TEXT NOT NULL,
    payload         BLOB NOT NULL,
    encoding        TEXT NOT NULL,
    source          TEXT NOT NULL,
    correlation_id  TEXT NOT NULL,
    mode            TEXT NOT NULL,
    ttl_ms          INTEGER NOT NULL,
    summary_version INTEGER NOT NULL,
    PRIMARY KEY (execution_id, attempt_index, ms, seq)
) WITHOUT ROWID;
