"""The stored shape of an execution and of its attempts (one row each in SQL stores)."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any


@dataclass(slots=True)
class Execution:
    """One execution's authoritative record. ``None`` means "empty"."""

    execution_id: str
    partition_id: int
    namespace: str
    lane_id: str
    execution_kind: str
    priority: int
    creator_identity: str
    created_at: int
    # state vector (all seven written together, see transitions.set_state)
    lifecycle_phase: str = ""
    ownership_state: str = ""
    eligibility_state: str = ""
    blocking_reason: str = ""
    blocking_detail: str = ""
    terminal_outcome: str = ""
    attempt_state: str = ""
    public_state: str = ""
    claimable: int = 0
    flow_id: str | None = None
    payload_encoding: str | None = None
    result_encoding: str | None = None
    has_result: int = 0
    policy: str = "{}"
    required_capabilities: str = ""
    tags: str = "{}"
    # counters and current-attempt pointers
    total_attempt_count: int = 0
    current_attempt_index: int | None = None
    current_attempt_id: str | None = None
    current_lease_id: str | None = None
    current_lease_epoch: int = 0
    current_worker_id: str | None = None
    current_worker_instance_id: str | None = None
    retry_count: int = 0
    replay_count: int = 0
    lease_reclaim_count: int = 0
    # timestamps (ms)
    started_at: int | None = None
    completed_at: int | None = None
    last_transition_at: int | None = None
    last_mutation_at: int | None = None
    # the current lease
    lease_acquired_at: int | None = None
    lease_expires_at: int | None = None
    lease_last_renewed_at: int | None = None
    lease_renewal_deadline: int | None = None
    lease_ttl_ms: int | None = None
    lease_expired_at: int | None = None
    lease_revoked_at: int | None = None
    lease_revoke_reason: str | None = None
    # scheduling clocks; each is non-null only while its scanner must look
    delay_until: int | None = None
    attempt_deadline_at: int | None = None
    execution_deadline_at: int | None = None
    purge_at: int | None = None
    # bookkeeping
    pending_retry_reason: str | None = None
    pending_previous_attempt_index: int | None = None
    progress_pct: int | None = None
    progress_message: str | None = None
    progress_updated_at: int | None = None
    failure_reason: str | None = None
    failure_category: str | None = None
    cancellation_reason: str | None = None
    cancelled_by: str | None = None
    # suspension (spec/suspension.md): the current or last suspension as JSON, its
    # timeout (a scanner clock), signals ever accepted, whether waitpoints may be open
    suspension: str | None = None
    suspension_timeout_at: int | None = None
    signal_count: int = 0
    waitpoints_open: int = 0
    # admission (spec/admission.md): the attached budgets (sorted CSV) and quota, the class
    # claims group by, and a claim grant (a scanner clock while it lives)
    budget_ids: str = ""
    quota_policy_id: str = ""
    claim_class: str = ""
    grant_worker_id: str | None = None
    grant_expires_at: int | None = None

    @classmethod
    def from_row(cls, row: Any) -> Execution:
        """From a row holding exactly the record's columns, in order (``SELECT *`` of
        ``ff_exec``): a dict, or a sequence such as ``sqlite3.Row`` (read by position,
        which is far cheaper than by name)."""
        return cls(**row) if isinstance(row, dict) else cls(*row)

    def to_row(self) -> dict[str, Any]:
        return dict(zip(EXECUTION_COLUMNS, _EXECUTION_VALUES(self), strict=True))

    def snapshot(self) -> tuple[Any, ...]:
        """The column values in ``EXECUTION_COLUMNS`` order (cheap to compare)."""
        return _EXECUTION_VALUES(self)

    def tag_map(self) -> dict[str, str]:
        return json.loads(self.tags) if self.tags else {}

    def capability_set(self) -> tuple[str, ...]:
        return tuple(self.required_capabilities.split(",")) if self.required_capabilities else ()


@dataclass(slots=True)
class Attempt:
    execution_id: str
    attempt_index: int
    attempt_id: str
    attempt_type: str
    attempt_state: str
    created_at: int
    started_at: int | None = None
    ended_at: int | None = None
    lease_id: str | None = None
    lease_epoch: int | None = None
    worker_id: str | None = None
    worker_instance_id: str | None = None
    previous_attempt_index: int | None = None
    reason: str | None = None
    failure_reason: str | None = None
    failure_category: str | None = None
    suspended_at: int | None = None
    suspension_id: str | None = None
    resumed_at: int | None = None

    def to_row(self) -> dict[str, Any]:
        return dict(zip(ATTEMPT_COLUMNS, _ATTEMPT_VALUES(self), strict=True))


#: Claim classes join the required capabilities, budgets and quota with this byte, which a
#: capability may not hold (spec/admission.md § Admission classes).
CLASS_SEP = "\n"


def claim_class(required: str, budget_ids: str, quota_policy_id: str) -> str:
    """The class a claim groups executions by: what it takes to run one."""
    if not budget_ids and not quota_policy_id:
        return required
    return CLASS_SEP.join((required, budget_ids, quota_policy_id))


EXECUTION_COLUMNS = tuple(f.name for f in fields(Execution))
ATTEMPT_COLUMNS = tuple(f.name for f in fields(Attempt))
_EXECUTION_VALUES = attrgetter(*EXECUTION_COLUMNS)
_ATTEMPT_VALUES = attrgetter(*ATTEMPT_COLUMNS)
CLAIMABLE = EXECUTION_COLUMNS.index("claimable")
