-- Executions, their attempts, payloads and idempotency keys.
-- Every scanner looks through a partial index on a column the transition
-- rules clear when the execution leaves that state, so an index entry can
-- never outlive the state it stands for.

CREATE TABLE ff_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE ff_exec (
    execution_id                   TEXT PRIMARY KEY,
    partition_id                   INTEGER NOT NULL,
    namespace                      TEXT NOT NULL,
    lane_id                        TEXT NOT NULL,
    execution_kind                 TEXT NOT NULL,
    priority                       INTEGER NOT NULL,
    creator_identity               TEXT NOT NULL,
    created_at                     INTEGER NOT NULL,
    lifecycle_phase                TEXT NOT NULL,
    ownership_state                TEXT NOT NULL,
    eligibility_state              TEXT NOT NULL,
    blocking_reason                TEXT NOT NULL,
    blocking_detail                TEXT NOT NULL,
    terminal_outcome               TEXT NOT NULL,
    attempt_state                  TEXT NOT NULL,
    public_state                   TEXT NOT NULL,
    claimable                      INTEGER NOT NULL,
    flow_id                        TEXT,
    payload_encoding               TEXT,
    result_encoding                TEXT,
    has_result                     INTEGER NOT NULL,
    policy                         TEXT NOT NULL,
    required_capabilities          TEXT NOT NULL,
    tags                           TEXT NOT NULL,
    total_attempt_count            INTEGER NOT NULL,
    current_attempt_index          INTEGER,
    current_attempt_id             TEXT,
    current_lease_id               TEXT,
    current_lease_epoch            INTEGER NOT NULL,
    current_worker_id              TEXT,
    current_worker_instance_id     TEXT,
    retry_count                    INTEGER NOT NULL,
    replay_count                   INTEGER NOT NULL,
    lease_reclaim_count            INTEGER NOT NULL,
    started_at                     INTEGER,
    completed_at                   INTEGER,
    last_transition_at             INTEGER,
    last_mutation_at               INTEGER,
    lease_acquired_at              INTEGER,
    lease_expires_at               INTEGER,
    lease_last_renewed_at          INTEGER,
    lease_renewal_deadline         INTEGER,
    lease_ttl_ms                   INTEGER,
    lease_expired_at               INTEGER,
    lease_revoked_at               INTEGER,
    lease_revoke_reason            TEXT,
    delay_until                    INTEGER,
    attempt_deadline_at            INTEGER,
    execution_deadline_at          INTEGER,
    purge_at                       INTEGER,
    pending_retry_reason           TEXT,
    pending_previous_attempt_index INTEGER,
    progress_pct                   INTEGER,
    progress_message               TEXT,
    progress_updated_at            INTEGER,
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
    execution_id  TEXT PRIMARY KEY,
    input_payload BLOB,
    result        BLOB
);

CREATE TABLE ff_attempt (
    execution_id           TEXT NOT NULL,
    attempt_index          INTEGER NOT NULL,
    attempt_id             TEXT NOT NULL,
    attempt_type           TEXT NOT NULL,
    attempt_state          TEXT NOT NULL,
    created_at             INTEGER NOT NULL,
    started_at             INTEGER,
    ended_at               INTEGER,
    lease_id               TEXT,
    lease_epoch            INTEGER,
    worker_id              TEXT,
    worker_instance_id     TEXT,
    previous_attempt_index INTEGER,
    reason                 TEXT,
    failure_reason         TEXT,
    failure_category       TEXT,
    suspended_at           INTEGER,
    suspension_id          TEXT,
    resumed_at             INTEGER,
    PRIMARY KEY (execution_id, attempt_index)
);

CREATE TABLE ff_idem (
    partition_id INTEGER NOT NULL,
    namespace    TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (partition_id, namespace, idem_key)
);
CREATE INDEX ff_idem_expiry ON ff_idem (expires_at);
