"""The execution state vector: seven stored dimensions plus the derived public state."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    SUBMITTED = "submitted"
    RUNNABLE = "runnable"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINAL = "terminal"


class Ownership(StrEnum):
    UNOWNED = "unowned"
    LEASED = "leased"
    LEASE_EXPIRED_RECLAIMABLE = "lease_expired_reclaimable"
    LEASE_REVOKED = "lease_revoked"


class Eligibility(StrEnum):
    ELIGIBLE_NOW = "eligible_now"
    NOT_ELIGIBLE_UNTIL_TIME = "not_eligible_until_time"
    BLOCKED_BY_DEPENDENCIES = "blocked_by_dependencies"
    BLOCKED_BY_BUDGET = "blocked_by_budget"
    BLOCKED_BY_QUOTA = "blocked_by_quota"
    BLOCKED_BY_ROUTE = "blocked_by_route"
    BLOCKED_BY_LANE_STATE = "blocked_by_lane_state"
    BLOCKED_BY_OPERATOR = "blocked_by_operator"
    NOT_APPLICABLE = "not_applicable"


class Blocking(StrEnum):
    NONE = "none"
    WAITING_FOR_WORKER = "waiting_for_worker"
    WAITING_FOR_RETRY_BACKOFF = "waiting_for_retry_backoff"
    WAITING_FOR_RESUME_DELAY = "waiting_for_resume_delay"
    WAITING_FOR_DELAY = "waiting_for_delay"
    WAITING_FOR_SIGNAL = "waiting_for_signal"
    WAITING_FOR_APPROVAL = "waiting_for_approval"
    WAITING_FOR_CALLBACK = "waiting_for_callback"
    WAITING_FOR_TOOL_RESULT = "waiting_for_tool_result"
    WAITING_FOR_CHILDREN = "waiting_for_children"
    WAITING_FOR_BUDGET = "waiting_for_budget"
    WAITING_FOR_QUOTA = "waiting_for_quota"
    WAITING_FOR_CAPABLE_WORKER = "waiting_for_capable_worker"
    WAITING_FOR_LOCALITY_MATCH = "waiting_for_locality_match"
    PAUSED_BY_OPERATOR = "paused_by_operator"
    PAUSED_BY_POLICY = "paused_by_policy"
    PAUSED_BY_FLOW_CANCEL = "paused_by_flow_cancel"


class TerminalOutcome(StrEnum):
    NONE = "none"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    SKIPPED = "skipped"


class AttemptState(StrEnum):
    NONE = "none"
    PENDING_FIRST_ATTEMPT = "pending_first_attempt"
    RUNNING_ATTEMPT = "running_attempt"
    ATTEMPT_INTERRUPTED = "attempt_interrupted"
    PENDING_RETRY_ATTEMPT = "pending_retry_attempt"
    PENDING_REPLAY_ATTEMPT = "pending_replay_attempt"
    ATTEMPT_TERMINAL = "attempt_terminal"


class PublicState(StrEnum):
    WAITING = "waiting"
    DELAYED = "delayed"
    RATE_LIMITED = "rate_limited"
    WAITING_CHILDREN = "waiting_children"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    RESUMABLE = "resumable"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    SKIPPED = "skipped"


_TERMINAL_PUBLIC = {
    TerminalOutcome.SUCCESS: PublicState.COMPLETED,
    TerminalOutcome.FAILED: PublicState.FAILED,
    TerminalOutcome.CANCELLED: PublicState.CANCELLED,
    TerminalOutcome.EXPIRED: PublicState.EXPIRED,
    TerminalOutcome.SKIPPED: PublicState.SKIPPED,
}

_RUNNABLE_PUBLIC = {
    Eligibility.ELIGIBLE_NOW: PublicState.WAITING,
    Eligibility.NOT_ELIGIBLE_UNTIL_TIME: PublicState.DELAYED,
    Eligibility.BLOCKED_BY_DEPENDENCIES: PublicState.WAITING_CHILDREN,
    Eligibility.BLOCKED_BY_BUDGET: PublicState.RATE_LIMITED,
    Eligibility.BLOCKED_BY_QUOTA: PublicState.RATE_LIMITED,
}


def derive_public_state(phase: str, eligibility: str, outcome: str) -> PublicState:
    """The user-facing state; never fails (unknown combinations read as waiting/failed)."""
    if phase == Phase.TERMINAL:
        return _TERMINAL_PUBLIC.get(outcome, PublicState.FAILED)  # type: ignore[call-overload]
    if phase == Phase.SUSPENDED:
        return PublicState.SUSPENDED
    if phase == Phase.ACTIVE:
        return PublicState.ACTIVE
    if phase == Phase.RUNNABLE:
        return _RUNNABLE_PUBLIC.get(eligibility, PublicState.WAITING)  # type: ignore[call-overload]
    return PublicState.WAITING


RECLAIMABLE = frozenset({Ownership.LEASE_EXPIRED_RECLAIMABLE, Ownership.LEASE_REVOKED})


def is_claimable(phase: str, ownership: str, eligibility: str) -> bool:
    """Whether the scheduler may hand this execution to a worker now.

    Eligible runnable work, and active work whose lease expired or was revoked
    (claimed again as a reclaim: nothing is left stranded).
    """
    if phase == Phase.RUNNABLE:
        return eligibility == Eligibility.ELIGIBLE_NOW
    return phase == Phase.ACTIVE and ownership in RECLAIMABLE
