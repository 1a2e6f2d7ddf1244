-- Admission (spec/admission.md): executions name their budgets and quota and are claimed
-- by class (required capabilities + limits); a claim grant reserves one for a worker.
-- Budgets, quotas (with their rate window) and the worker registry are rows of their own.

ALTER TABLE ff_exec ADD COLUMN budget_ids TEXT NOT NULL DEFAULT '';
ALTER TABLE ff_exec ADD COLUMN quota_policy_id TEXT NOT NULL DEFAULT '';
ALTER TABLE ff_exec ADD COLUMN claim_class TEXT NOT NULL DEFAULT '';
ALTER TABLE ff_exec ADD COLUMN grant_worker_id TEXT;
ALTER TABLE ff_exec ADD COLUMN grant_expires_at INTEGER;
UPDATE ff_exec SET claim_class = required_capabilities;
DROP INDEX ff_exec_claimable;
CREATE INDEX ff_exec_claimable
    ON ff_exec (lane_id, claim_class, priority DESC, created_at, execution_id)
    WHERE claimable = 1;
CREATE INDEX ff_exec_grant ON ff_exec (grant_expires_at) WHERE grant_expires_at IS NOT NULL;
-- the executions holding a slot of their quota (leased or granted)
CREATE INDEX ff_exec_quota_slot ON ff_exec (quota_policy_id)
    WHERE quota_policy_id <> '' AND (ownership_state = 'leased' OR grant_expires_at IS NOT NULL);
CREATE INDEX ff_exec_leased_by ON ff_exec (current_worker_instance_id)
    WHERE ownership_state = 'leased';

CREATE TABLE ff_budget (
    budget_id         TEXT PRIMARY KEY,
    scope_type        TEXT NOT NULL,
    scope_id          TEXT NOT NULL,
    enforcement_mode  TEXT NOT NULL,
    on_hard_limit     TEXT NOT NULL,
    on_soft_limit     TEXT NOT NULL,
    reset_interval_ms INTEGER NOT NULL,
    limits            TEXT NOT NULL,
    usage             TEXT NOT NULL,
    breach_count      INTEGER NOT NULL,
    soft_breach_count INTEGER NOT NULL,
    reset_count       INTEGER NOT NULL,
    last_breach_at    INTEGER,
    last_breach_dim   TEXT,
    last_reset_at     INTEGER,
    next_reset_at     INTEGER,
    created_at        INTEGER NOT NULL,
    last_updated_at   INTEGER NOT NULL
);
CREATE INDEX ff_budget_reset ON ff_budget (next_reset_at) WHERE next_reset_at IS NOT NULL;

CREATE TABLE ff_budget_dedup (
    budget_id  TEXT NOT NULL,
    dedup_key  TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (budget_id, dedup_key)
);
CREATE INDEX ff_budget_dedup_expiry ON ff_budget_dedup (expires_at);

CREATE TABLE ff_quota (
    quota_policy_id         TEXT PRIMARY KEY,
    window_seconds          INTEGER NOT NULL,
    max_requests_per_window INTEGER NOT NULL,
    max_concurrent          INTEGER NOT NULL,
    created_at              INTEGER NOT NULL
);

-- one row per admission (a lease or a grant), for the sliding rate window
CREATE TABLE ff_quota_admission (
    quota_policy_id TEXT NOT NULL,
    admitted_at     INTEGER NOT NULL,
    execution_id    TEXT NOT NULL,
    PRIMARY KEY (quota_policy_id, admitted_at, execution_id)
);

CREATE TABLE ff_worker (
    worker_instance_id TEXT PRIMARY KEY,
    worker_id          TEXT NOT NULL,
    lanes              TEXT NOT NULL,
    capabilities       TEXT NOT NULL,
    liveness_ttl_ms    INTEGER NOT NULL,
    registered_at      INTEGER NOT NULL,
    last_seen_at       INTEGER NOT NULL
);
CREATE INDEX ff_worker_seen ON ff_worker (last_seen_at);
