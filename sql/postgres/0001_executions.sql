-- Executions, their attempts, payloads and idempotency keys.
-- Every scanner looks through a partial index on a column the transition
-- rules clear when the execution leaves that state, so an index entry can
-- never outlive the state it stands for.
-- The same tables and columns as sqlite/0001_executions.sql: integers are
-- BIGINT (milliseconds), blobs BYTEA, and ids compare in byte order
-- (COLLATE "C") so listing and tie-breaks sort exactly as on SQLite.

CREATE TABLE ff_meta (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE ff_exec (
    execution_id                   TEXT COLLATE "C" PRIMARY KEY,
    partition_id                   BIGINT NOT NULL,
    namespace                      TEXT COLLATE "C" NOT NULL,
    lane_id                        TEXT COLLATE "C" NOT NULL,
    execution_kind                 TEXT NOT NULL,
    priority                       BIGINT NOT NULL,
    creator_identity               TEXT NOT NULL,
    created_at                     BIGINT NOT NULL,
    lifecycle_phase                TEXT NOT NULL,
    ownership_state                TEXT NOT NULL,
    eligibility_state              TEXT NOT NULL,
    blocking_reason                TEXT NOT NULL,
    blocking_detail                TEXT NOT NULL,
    terminal_outcome               TEXT NOT NULL,
    attempt_state                  TEXT NOT NULL,
    public_state                   TEXT NOT NULL,
    claimable                      BIGINT NOT NULL,
    flow_id                        TEXT COLLATE "C",
    payload_encoding               TEXT,
    result_encoding                TEXT,
    has_result                     BIGINT NOT NULL,
    policy                         TEXT NOT NULL,
    required_capabilities          TEXT NOT NULL,
    tags                           TEXT NOT NULL,
    total_attempt_count            BIGINT NOT NULL,
    current_attempt_index          BIGINT,
    current_attempt_id             TEXT COLLATE "C",
    current_lease_id               TEXT COLLATE "C",
    current_lease_epoch            BIGINT NOT NULL,
    current_worker_id              TEXT,
    current_worker_instance_id     TEXT,
    retry_count                    BIGINT NOT NULL,
    replay_count                   BIGINT NOT NULL,
    lease_reclaim_count            BIGINT NOT NULL,
    started_at                     BIGINT,
    completed_at                   BIGINT,
    last_transition_at             BIGINT,
    last_mutation_at               BIGINT,
    lease_acquired_at              BIGINT,
    lease_expires_at               BIGINT,
    lease_last_renewed_at          BIGINT,
    lease_renewal_deadline         BIGINT,
    lease_ttl_ms                   BIGINT,
    lease_expired_at               BIGINT,
    lease_revoked_at               BIGINT,
    lease_revoke_reason            TEXT,
    delay_until                    BIGINT,
    attempt_deadline_at            BIGINT,
    execution_deadline_at          BIGINT,
    purge_at                       BIGINT,
    pending_retry_reason           TEXT,
    pending_previous_attempt_index BIGINT,
    progress_pct                   BIGINT,
    progress_message               TEXT,
    progress_updated_at            BIGINT,
    failure_reason                 TEXT,
    failure_category               TEXT,
    cancellation_reason            TEXT,
    cancelled_by                   TEXT
);

CREATE INDEX ff_exec_by_partition ON ff_exec (partition_id, execution_id);
CREATE INDEX ff_exec_claimable
    ON ff_exec (lane_id, required_capabilities, priority DESC, created_at, execution_id)
    WHERE claimable = 1;
CREATE INDEX ff_exec_delayed_lane ON ff_exec (lane_id, delay_until) WHERE delay_until IS NOT NULL;
CREATE INDEX ff_exec_delayed ON ff_exec (delay_until) WHERE delay_until IS NOT NULL;
CREATE INDEX ff_exec_leased ON ff_exec (lease_expires_at) WHERE ownership_state = 'leased';
CREATE INDEX ff_exec_attempt_deadline ON ff_exec (attempt_deadline_at)
    WHERE attempt_deadline_at IS NOT NULL;
CREATE INDEX ff_exec_deadline ON ff_exec (execution_deadline_at)
    WHERE execution_deadline_at IS NOT NULL;
CREATE INDEX ff_exec_purge ON ff_exec (purge_at) WHERE purge_at IS NOT NULL;

CREATE TABLE ff_exec_data (
    execution_id  TEXT COLLATE "C" PRIMARY KEY,
    input_payload BYTEA,
    result        BYTEA
);

CREATE TABLE ff_attempt (
    execution_id           TEXT COLLATE "C" NOT NULL,
    attempt_index          BIGINT NOT NULL,
    attempt_id             TEXT COLLATE "C" NOT NULL,
    attempt_type           TEXT NOT NULL,
    attempt_state          TEXT NOT NULL,
    created_at             BIGINT NOT NULL,
    started_at             BIGINT,
    ended_at               BIGINT,
    lease_id               TEXT COLLATE "C",
    lease_epoch            BIGINT,
    worker_id              TEXT,
    worker_instance_id     TEXT,
    previous_attempt_index BIGINT,
    reason                 TEXT,
    failure_reason         TEXT,
    failure_category       TEXT,
    suspended_at           BIGINT,
    suspension_id          TEXT,
    resumed_at             BIGINT,
    PRIMARY KEY (execution_id, attempt_index)
);

CREATE TABLE ff_idem (
    partition_id BIGINT NOT NULL,
    namespace    TEXT COLLATE "C" NOT NULL,
    idem_key     TEXT COLLATE "C" NOT NULL,
    execution_id TEXT COLLATE "C" NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (partition_id, namespace, idem_key)
);
CREATE INDEX ff_idem_expiry ON ff_idem (expires_at);
