"""Pure state-transition rules for one execution, each registered as an operation.

A rule takes the loaded ``Execution`` (mutated in place), its args and a ``Ctx``
with the time; it returns an ``Effect`` (the typed answer and the other rows to
write), ``None`` when there is nothing to do, or raises a typed error before
changing anything. Backends apply them through ``Backend.apply``; the Lua library
mirrors them rule for rule (a differential test keeps the two equal). See
spec/state-machine.md for the story.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .contracts import ClaimArgs, CreateArgs
from .effects import DeleteExecution, Effect, NewAttempt, StoreResult
from .errors import (
    ExecutionNotActive,
    ExecutionNotEligible,
    ExecutionNotTerminal,
    FenceRequired,
    FlowFabricError,
    LeaseExpired,
    LeaseRevoked,
    MaxReplaysExhausted,
    StaleLease,
)
from .handle import Fence, Handle
from .operations import Ctx, Missing, operation
from .outcomes import (
    AlreadySatisfied,
    Cancelled,
    Changed,
    Claimed,
    Completed,
    Delayed,
    Expired,
    MarkedExpired,
    ProgressReported,
    Promoted,
    Purged,
    ReclaimCapExceeded,
    Renewed,
    Replayed,
    RetryScheduled,
    Revoked,
    TerminalFailed,
)
from .outcomes import Outcome as Answer
from .policy import ExecutionPolicy, load_policy
from .record import Attempt, Execution, claim_class
from .state import (
    RECLAIMABLE,
    AttemptState,
    Blocking,
    Eligibility,
    Ownership,
    Phase,
    TerminalOutcome,
    derive_public_state,
    is_claimable,
)

PRIORITY_MIN, PRIORITY_MAX = 0, 9000
OPERATOR = "operator_override"


# -- the state vector ---------------------------------------------------------

def set_state(ex: Execution, ctx: Ctx, phase: str, ownership: str, eligibility: str,
              blocking: str, outcome: str, attempt_state: str, detail: str = "") -> None:
    """Write all seven dimensions together, and clear every scanner clock that
    no longer applies, so an index can never point at the wrong state."""
    if phase != Phase.SUSPENDED:
        ex.suspension_timeout_at = None
        if ex.lifecycle_phase == Phase.SUSPENDED and ex.suspension:
            _close_suspension(ex, outcome if phase == Phase.TERMINAL else "resumed", ctx.now)
    ex.lifecycle_phase, ex.ownership_state, ex.eligibility_state = phase, ownership, eligibility
    ex.blocking_reason, ex.terminal_outcome, ex.attempt_state = blocking, outcome, attempt_state
    ex.blocking_detail = detail
    ex.public_state = derive_public_state(phase, eligibility, outcome)
    ex.claimable = int(is_claimable(phase, ownership, eligibility))
    ex.grant_worker_id = ex.grant_expires_at = None  # a state change voids a claim grant
    ex.last_transition_at = ex.last_mutation_at = ctx.now
    if eligibility != Eligibility.NOT_ELIGIBLE_UNTIL_TIME:
        ex.delay_until = None
    if phase != Phase.ACTIVE:
        ex.attempt_deadline_at = None
    if phase == Phase.TERMINAL:
        ex.execution_deadline_at = None
        ex.completed_at = ctx.now
        retention = policy_of(ex).retention_ttl_ms or ctx.retention_ms
        ex.purge_at = ctx.now + retention
    else:
        ex.purge_at = None


def _close_suspension(ex: Execution, reason: str, now: int) -> None:
    """An open suspension closes when its execution leaves ``suspended`` another way
    (cancel, deadline): the reason is the outcome."""
    s = json.loads(ex.suspension or "null")
    if s is not None and s.get("closed_at") is None:
        s["closed_at"], s["close_reason"] = now, reason
        ex.suspension = json.dumps(s, separators=(",", ":"))


def policy_of(ex: Execution) -> ExecutionPolicy:
    return load_policy(ex.policy)


def _runnable(ex: Execution, ctx: Ctx, attempt_state: str, *, delay_until: int | None,
              blocking_when_delayed: str, detail: str = "") -> None:
    """Runnable and unowned: eligible now, or delayed until ``delay_until``."""
    _clear_lease(ex)
    if delay_until is not None and delay_until > ctx.now:
        set_state(ex, ctx, Phase.RUNNABLE, Ownership.UNOWNED, Eligibility.NOT_ELIGIBLE_UNTIL_TIME,
                  blocking_when_delayed, TerminalOutcome.NONE, attempt_state,
                  detail or f"delayed until {delay_until}")
        ex.delay_until = delay_until
    else:
        set_state(ex, ctx, Phase.RUNNABLE, Ownership.UNOWNED, Eligibility.ELIGIBLE_NOW,
                  Blocking.WAITING_FOR_WORKER, TerminalOutcome.NONE, attempt_state)


def _terminal(ex: Execution, ctx: Ctx, outcome: str) -> None:
    ran = ex.total_attempt_count > 0
    _clear_lease(ex)
    set_state(ex, ctx, Phase.TERMINAL, Ownership.UNOWNED, Eligibility.NOT_APPLICABLE,
              Blocking.NONE, outcome,
              AttemptState.ATTEMPT_TERMINAL if ran else ex.attempt_state)


def _clear_lease(ex: Execution) -> None:
    ex.current_lease_id = ex.current_worker_id = ex.current_worker_instance_id = None
    ex.lease_acquired_at = ex.lease_expires_at = ex.lease_last_renewed_at = None
    ex.lease_renewal_deadline = ex.lease_ttl_ms = None
    ex.lease_expired_at = ex.lease_revoked_at = ex.lease_revoke_reason = None


def _clamp_priority(p: int) -> int:
    return max(PRIORITY_MIN, min(PRIORITY_MAX, p))


def not_active(ex: Execution) -> FlowFabricError:
    return ExecutionNotActive.of(
        execution_id=ex.execution_id, lifecycle_phase=ex.lifecycle_phase,
        terminal_outcome=ex.terminal_outcome, lease_epoch=ex.current_lease_epoch,
        attempt_id=ex.current_attempt_id)


# -- ingress ------------------------------------------------------------------

def create(args: CreateArgs, ctx: Ctx) -> Execution:
    """A new record: eligible now, or delayed if ``delay_until`` is in the future."""
    policy = args.policy
    ex = Execution(
        execution_id=args.execution_id, partition_id=args.partition_id,
        namespace=args.namespace, lane_id=args.lane_id, execution_kind=args.execution_kind,
        priority=_clamp_priority(args.priority), creator_identity=args.creator_identity,
        created_at=ctx.now, payload_encoding=args.payload_encoding, policy=policy.to_json(),
        required_capabilities=",".join(policy.required_capabilities),
        tags=_tags_json(args.tags), flow_id=args.flow_id,
        budget_ids=",".join(policy.budget_ids), quota_policy_id=policy.quota_policy_id or "")
    ex.claim_class = claim_class(ex.required_capabilities, ex.budget_ids, ex.quota_policy_id)
    _runnable(ex, ctx, AttemptState.PENDING_FIRST_ATTEMPT, delay_until=args.delay_until,
              blocking_when_delayed=Blocking.WAITING_FOR_DELAY)
    deadlines = [d for d in (args.execution_deadline_at,
                             policy.execution_deadline_ms and ctx.now + policy.execution_deadline_ms)
                 if d]
    ex.execution_deadline_at = min(deadlines) if deadlines else None
    return ex


def _tags_json(tags: dict[str, str]) -> str:
    return json.dumps(tags, separators=(",", ":"), sort_keys=True) if tags else "{}"


# -- operator operations --------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ChangePriorityArgs:
    priority: int


@operation("change_priority", ChangePriorityArgs)
def change_priority(ex: Execution, a: ChangePriorityArgs, ctx: Ctx) -> Effect:
    if ex.lifecycle_phase != Phase.RUNNABLE or ex.eligibility_state != Eligibility.ELIGIBLE_NOW:
        raise ExecutionNotEligible.of(execution_id=ex.execution_id,
                                      public_state=ex.public_state)
    ex.priority = _clamp_priority(a.priority)
    ex.last_mutation_at = ctx.now
    return Effect(Changed(ex.execution_id))


@dataclass(frozen=True, slots=True)
class ReplayArgs:
    pass


@operation("replay", ReplayArgs)
def replay(ex: Execution, a: ReplayArgs, ctx: Ctx) -> Effect:
    if ex.lifecycle_phase != Phase.TERMINAL:
        raise ExecutionNotTerminal.of(execution_id=ex.execution_id,
                                      public_state=ex.public_state)
    limit = policy_of(ex).max_replay_count
    if ex.replay_count >= limit:
        raise MaxReplaysExhausted.of(execution_id=ex.execution_id,
                                     replay_count=ex.replay_count, limit=limit)
    ex.replay_count += 1
    _runnable(ex, ctx, AttemptState.PENDING_REPLAY_ATTEMPT, delay_until=None,
              blocking_when_delayed=Blocking.WAITING_FOR_WORKER)
    ex.completed_at = None
    ex.has_result, ex.result_encoding = 0, None
    return Effect(Replayed(ex.public_state), [StoreResult(None)])


@dataclass(frozen=True, slots=True)
class CancelArgs:
    reason: str = "cancelled"
    source: str = OPERATOR
    fence: Fence | None = None


@operation("cancel", CancelArgs)
def cancel(ex: Execution, a: CancelArgs, ctx: Ctx) -> Effect:
    """Operator cancel works on anything non-terminal; a lease-bound cancel
    (a fence was given, or a non-operator source on an active execution)
    must hold the current lease."""
    if ex.lifecycle_phase == Phase.TERMINAL:
        if (a.fence and ex.terminal_outcome == TerminalOutcome.CANCELLED
                and a.fence.lease_epoch == ex.current_lease_epoch
                and a.fence.attempt_id == ex.current_attempt_id):
            return Effect(Cancelled(ex.execution_id, ex.public_state))
        raise not_active(ex)
    if a.fence is not None:
        expired = _check_lease(ex, a.fence, ctx)
        if expired is not None:
            return expired
    elif ex.lifecycle_phase == Phase.ACTIVE and a.source != OPERATOR:
        raise FenceRequired.of(source=a.source)
    effect = Effect()
    if ex.attempt_state in (AttemptState.RUNNING_ATTEMPT, AttemptState.ATTEMPT_INTERRUPTED):
        effect.update_attempt(ex.current_attempt_index, attempt_state="ended_cancelled",
                              ended_at=ctx.now, failure_reason=f"cancelled: {a.reason}")
    ex.cancellation_reason = a.reason
    ex.cancelled_by = a.source or ex.execution_id
    _terminal(ex, ctx, TerminalOutcome.CANCELLED)
    effect.outcome = Cancelled(ex.execution_id, ex.public_state)
    return effect


@dataclass(frozen=True, slots=True)
class RevokeLeaseArgs:
    reason: str = "operator_revoke"


@operation("revoke_lease", RevokeLeaseArgs)
def revoke_lease(ex: Execution, a: RevokeLeaseArgs, ctx: Ctx) -> Effect:
    """Take the lease away; the execution becomes claimable again as a reclaim."""
    if ex.lifecycle_phase != Phase.ACTIVE:
        raise not_active(ex)
    if ex.ownership_state == Ownership.LEASE_REVOKED:
        return Effect(AlreadySatisfied("already_revoked"))
    if ex.ownership_state == Ownership.LEASE_EXPIRED_RECLAIMABLE:
        return Effect(AlreadySatisfied("already_expired"))
    if ex.ownership_state != Ownership.LEASED:
        return Effect(AlreadySatisfied("no_active_lease"))
    answer = Revoked(ex.current_lease_id, str(ex.current_lease_epoch))
    set_state(ex, ctx, Phase.ACTIVE, Ownership.LEASE_REVOKED, ex.eligibility_state,
              Blocking.WAITING_FOR_WORKER, TerminalOutcome.NONE, AttemptState.ATTEMPT_INTERRUPTED,
              f"lease revoked: {a.reason}")
    ex.lease_revoked_at, ex.lease_revoke_reason = ctx.now, a.reason
    return Effect(answer)


# -- claiming -----------------------------------------------------------------

def capability_match(ex: Execution, worker_caps: tuple[str, ...]) -> bool:
    required = ex.capability_set()
    return not required or set(required).issubset(worker_caps)


def claim(ex: Execution, args: ClaimArgs, ctx: Ctx, *, lease_id: str, attempt_id: str) -> Effect:
    """Lease a claimable execution: a fresh attempt, the same attempt resumed, or a
    reclaim of an attempt whose lease expired or was revoked. The answer is
    ``Claimed``, or ``ReclaimCapExceeded`` when the reclaim cap ended it instead."""
    if not ex.claimable:
        raise ExecutionNotEligible(f"execution {ex.execution_id} is {ex.public_state}, not "
                                   f"claimable")
    effect = Effect()
    new_attempt = None
    if ex.lifecycle_phase == Phase.ACTIVE:
        if reclaim_cap_reached(ex):
            return _fail_reclaim_cap(ex, ctx, effect)
        index, attempt_type = ex.total_attempt_count, "reclaim"
        previous = ex.current_attempt_index
        effect.update_attempt(previous, attempt_state="interrupted_reclaimed", ended_at=ctx.now,
                              failure_reason=f"{ex.ownership_state}")
        new_attempt = Attempt(ex.execution_id, index, attempt_id, attempt_type, "started",
                              ctx.now, previous_attempt_index=previous,
                              reason=ex.ownership_state)
        ex.lease_reclaim_count += 1
    elif ex.attempt_state == AttemptState.ATTEMPT_INTERRUPTED:
        index, attempt_type = ex.current_attempt_index or 0, "resumed"
        attempt_id = ex.current_attempt_id or attempt_id
        effect.update_attempt(index, attempt_state="started", resumed_at=ctx.now,
                              suspended_at=None, suspension_id=None)
    else:
        index = ex.total_attempt_count
        attempt_type = {AttemptState.PENDING_RETRY_ATTEMPT: "retry",
                        AttemptState.PENDING_REPLAY_ATTEMPT: "replay"}.get(
                            ex.attempt_state, "initial")  # type: ignore[call-overload]
        previous = ex.pending_previous_attempt_index if attempt_type == "retry" else None
        new_attempt = Attempt(ex.execution_id, index, attempt_id, attempt_type, "started",
                              ctx.now, previous_attempt_index=previous,
                              reason=ex.pending_retry_reason)
    if new_attempt is not None:
        ex.total_attempt_count += 1
    epoch = ex.current_lease_epoch + 1
    _clear_lease(ex)
    set_state(ex, ctx, Phase.ACTIVE, Ownership.LEASED, Eligibility.NOT_APPLICABLE, Blocking.NONE,
              TerminalOutcome.NONE, AttemptState.RUNNING_ATTEMPT)
    ex.current_attempt_index, ex.current_attempt_id = index, attempt_id
    ex.current_lease_id, ex.current_lease_epoch = lease_id, epoch
    ex.current_worker_id, ex.current_worker_instance_id = args.worker_id, args.worker_instance_id
    ex.lease_acquired_at = ex.lease_last_renewed_at = ctx.now
    _set_expiry(ex, args.lease_ttl_ms, ctx)
    ex.started_at = ex.started_at or ctx.now
    ex.pending_retry_reason = ex.pending_previous_attempt_index = None
    timeout = policy_of(ex).attempt_timeout_ms
    ex.attempt_deadline_at = ctx.now + timeout if timeout else None
    lease = {"lease_id": lease_id, "lease_epoch": epoch, "worker_id": args.worker_id,
             "worker_instance_id": args.worker_instance_id}
    if new_attempt is not None:
        new_attempt.started_at = ctx.now
        for k, v in lease.items():
            setattr(new_attempt, k, v)
        effect.writes.append(NewAttempt(new_attempt))
    else:
        effect.update_attempt(index, **lease)
    effect.outcome = Claimed(ex.execution_id, attempt_type)
    return effect


def claim_answer(ex: Execution, attempt_type: str, lease_ttl_ms: int) -> dict[str, Any]:
    """The task a worker receives, from the record as the claim left it (every backend
    answers through this one function)."""
    assert ex.current_attempt_index is not None
    fence = Fence(ex.current_lease_id or "", ex.current_lease_epoch, ex.current_attempt_id or "")
    handle = Handle(ex.execution_id, ex.current_attempt_index, fence)
    return {
        "execution_id": ex.execution_id, "attempt_index": ex.current_attempt_index,
        "attempt_id": ex.current_attempt_id, "attempt_type": attempt_type,
        "lease_id": ex.current_lease_id, "lease_epoch": ex.current_lease_epoch,
        "lease_expires_at": ex.lease_expires_at, "lease_ttl_ms": lease_ttl_ms,
        "handle": handle.encode(), "namespace": ex.namespace, "lane_id": ex.lane_id,
        "execution_kind": ex.execution_kind, "priority": ex.priority, "flow_id": ex.flow_id,
        "payload_encoding": ex.payload_encoding, "tags": ex.tag_map(),
        "policy": _worker_policy(ex.policy),
        "attempt_deadline_at": ex.attempt_deadline_at,
        "execution_deadline_at": ex.execution_deadline_at,
    }


@lru_cache(maxsize=1024)
def _worker_policy(stored: str) -> dict[str, Any]:
    """The policy as the worker sees it, re-read leniently (policies repeat: cached; the
    answer is only serialised, never changed)."""
    return json.loads(load_policy(stored).to_json())


def _set_expiry(ex: Execution, ttl: int, ctx: Ctx) -> None:
    ex.lease_ttl_ms = ttl
    ex.lease_expires_at = ctx.now + ttl
    ex.lease_renewal_deadline = ctx.now + ttl * 2 // 3


def reclaim_cap_reached(ex: Execution) -> bool:
    return ex.lease_reclaim_count >= policy_of(ex).max_reclaim_count


def _fail_reclaim_cap(ex: Execution, ctx: Ctx, effect: Effect) -> Effect:
    limit = policy_of(ex).max_reclaim_count
    effect.update_attempt(ex.current_attempt_index, attempt_state="ended_failure",
                          ended_at=ctx.now, failure_reason="max_reclaims_exceeded")
    ex.failure_reason = "max_reclaims_exceeded"
    ex.failure_category = "lease_lost"
    _terminal(ex, ctx, TerminalOutcome.FAILED)
    ex.blocking_detail = (f"lease lost {ex.lease_reclaim_count + 1} times; policy "
                          f"max_reclaim_count={limit}")
    effect.outcome = ReclaimCapExceeded(ex.execution_id, limit)
    return effect


# -- lease-bound worker operations ----------------------------------------------

def _check_lease(ex: Execution, fence: Fence, ctx: Ctx) -> Effect | None:
    """Active, not revoked, not expired, and our fence: None when the lease holds. A
    lease found expired is marked so and answered as an error after that commits."""
    if ex.lifecycle_phase != Phase.ACTIVE:
        raise not_active(ex)
    mine = (fence.lease_id == ex.current_lease_id and fence.lease_epoch == ex.current_lease_epoch
            and fence.attempt_id == ex.current_attempt_id)
    if ex.ownership_state == Ownership.LEASE_REVOKED and mine:
        raise LeaseRevoked.of(execution_id=ex.execution_id, reason=ex.lease_revoke_reason)
    if ex.ownership_state == Ownership.LEASE_EXPIRED_RECLAIMABLE and mine:
        raise LeaseExpired.of(execution_id=ex.execution_id,
                              lease_expires_at=ex.lease_expires_at)
    if not mine:
        raise StaleLease.of(execution_id=ex.execution_id, held=fence.lease_epoch,
                            lease_epoch=ex.current_lease_epoch)
    if ex.lease_expires_at is not None and ex.lease_expires_at <= ctx.now:
        effect = mark_lease_expired(ex, None, ctx) or Effect()
        effect.outcome = None
        effect.error = LeaseExpired.of(execution_id=ex.execution_id,
                                       lease_expires_at=ex.lease_expires_at)
        return effect
    return None


@dataclass(frozen=True, slots=True)
class RenewArgs:
    fence: Fence
    lease_ttl_ms: int | None = None


@operation("renew", RenewArgs, missing=Missing.INVALID_HANDLE, plain=Renewed)
def renew(ex: Execution, a: RenewArgs, ctx: Ctx) -> Effect:
    expired = _check_lease(ex, a.fence, ctx)
    if expired is not None:
        return expired
    _set_expiry(ex, a.lease_ttl_ms or ex.lease_ttl_ms or 30_000, ctx)
    ex.lease_last_renewed_at = ex.last_mutation_at = ctx.now
    assert ex.lease_expires_at is not None and ex.lease_renewal_deadline is not None
    return Effect(Renewed(ex.lease_expires_at, ex.current_lease_epoch,
                          ex.lease_renewal_deadline))


@dataclass(frozen=True, slots=True)
class ProgressArgs:
    fence: Fence
    progress_pct: int | None = None
    progress_message: str | None = None


@operation("progress", ProgressArgs, missing=Missing.INVALID_HANDLE, plain=ProgressReported)
def progress(ex: Execution, a: ProgressArgs, ctx: Ctx) -> Effect:
    expired = _check_lease(ex, a.fence, ctx)
    if expired is not None:
        return expired
    if a.progress_pct is not None:
        ex.progress_pct = a.progress_pct
    if a.progress_message is not None:
        ex.progress_message = a.progress_message
    ex.progress_updated_at = ex.last_mutation_at = ctx.now
    return Effect(ProgressReported(ex.progress_pct, ex.progress_message, ctx.now))


def _same_holder_finished(ex: Execution, fence: Fence) -> bool:
    return ex.current_lease_epoch == fence.lease_epoch and ex.lifecycle_phase != Phase.ACTIVE


@dataclass(frozen=True, slots=True)
class CompleteArgs:
    fence: Fence
    result: bytes = b""
    result_encoding: str | None = None


@operation("complete", CompleteArgs, missing=Missing.INVALID_HANDLE)
def complete(ex: Execution, a: CompleteArgs, ctx: Ctx) -> Effect:
    if (_same_holder_finished(ex, a.fence) and ex.terminal_outcome == TerminalOutcome.SUCCESS
            and ex.current_attempt_id == a.fence.attempt_id):
        return Effect(Completed(ex.execution_id, ex.public_state))
    expired = _check_lease(ex, a.fence, ctx)
    if expired is not None:
        return expired
    effect = Effect()
    effect.update_attempt(ex.current_attempt_index, attempt_state="ended_success",
                          ended_at=ctx.now)
    ex.has_result = int(bool(a.result))
    ex.result_encoding = a.result_encoding
    effect.writes.append(StoreResult(a.result or None))
    _terminal(ex, ctx, TerminalOutcome.SUCCESS)
    effect.outcome = Completed(ex.execution_id, ex.public_state)
    return effect


@dataclass(frozen=True, slots=True)
class FailArgs:
    fence: Fence
    failure_reason: str = ""
    failure_category: str | None = None
    #: The random draw for a jittered backoff (operations.jitter_draw), in [0, 1).
    u: float = 0.0


@operation("fail", FailArgs, missing=Missing.INVALID_HANDLE)
def fail(ex: Execution, a: FailArgs, ctx: Ctx) -> Effect:
    """Retry per policy (delayed re-run) or fail terminally."""
    if _same_holder_finished(ex, a.fence):
        if (ex.lifecycle_phase == Phase.TERMINAL and ex.terminal_outcome == TerminalOutcome.FAILED
                and ex.current_attempt_id == a.fence.attempt_id):
            return Effect(TerminalFailed(ex.execution_id, ex.public_state))
        if ex.attempt_state == AttemptState.PENDING_RETRY_ATTEMPT:
            return Effect(_retry_outcome(ex))
    expired = _check_lease(ex, a.fence, ctx)
    if expired is not None:
        return expired
    effect = Effect()
    effect.update_attempt(ex.current_attempt_index, attempt_state="ended_failure",
                          ended_at=ctx.now, failure_reason=a.failure_reason,
                          failure_category=a.failure_category)
    _fail_attempt(ex, a.failure_reason, a.failure_category, a.u, ctx, effect,
                  exhausted=TerminalOutcome.FAILED)
    return effect


def _fail_attempt(ex: Execution, reason: str, category: str | None, u: float, ctx: Ctx,
                  effect: Effect, *, exhausted: str) -> None:
    ex.failure_reason, ex.failure_category = reason, category
    retry = policy_of(ex).retry
    if retry is not None and retry.allows(ex.retry_count, category):
        delay = retry.backoff.delay_for(ex.retry_count, u)
        failed_index = ex.current_attempt_index
        ex.pending_retry_reason = reason
        ex.pending_previous_attempt_index = failed_index
        ex.retry_count += 1
        ex.current_attempt_id = None
        _runnable(ex, ctx, AttemptState.PENDING_RETRY_ATTEMPT, delay_until=ctx.now + delay,
                  blocking_when_delayed=Blocking.WAITING_FOR_RETRY_BACKOFF,
                  detail=f"retry backoff until {ctx.now + delay} (attempt {failed_index} "
                         f"failed: {reason})")
        effect.outcome = _retry_outcome(ex)
    else:
        _terminal(ex, ctx, exhausted)
        cls = TerminalFailed if exhausted == TerminalOutcome.FAILED else Expired
        effect.outcome = cls(ex.execution_id, ex.public_state)


def _retry_outcome(ex: Execution) -> RetryScheduled:
    return RetryScheduled(ex.execution_id, ex.public_state,
                          ex.delay_until or ex.last_transition_at or 0, ex.total_attempt_count)


@dataclass(frozen=True, slots=True)
class DelayArgs:
    fence: Fence
    delay_until: int


@operation("delay", DelayArgs, missing=Missing.INVALID_HANDLE)
def delay(ex: Execution, a: DelayArgs, ctx: Ctx) -> Effect:
    """The worker parks its attempt; the same attempt resumes after the delay."""
    expired = _check_lease(ex, a.fence, ctx)
    if expired is not None:
        return expired
    effect = Effect()
    effect.update_attempt(ex.current_attempt_index, attempt_state="suspended",
                          suspended_at=ctx.now, suspension_id="worker_delay")
    _runnable(ex, ctx, AttemptState.ATTEMPT_INTERRUPTED, delay_until=a.delay_until,
              blocking_when_delayed=Blocking.WAITING_FOR_DELAY)
    effect.outcome = Delayed(ex.execution_id, ex.public_state, a.delay_until)
    return effect


# -- scanner operations ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NoArgs:
    pass


@dataclass(frozen=True, slots=True)
class JitterArgs:
    u: float = 0.0


@operation("mark_lease_expired", NoArgs, missing=Missing.IGNORE)
def mark_lease_expired(ex: Execution, a: NoArgs | None, ctx: Ctx) -> Effect | None:
    """An expired lease makes the execution claimable as a reclaim, or fails it
    once the reclaim cap is spent. ``None`` when there is nothing to do."""
    if (ex.lifecycle_phase != Phase.ACTIVE or ex.ownership_state != Ownership.LEASED
            or ex.lease_expires_at is None or ex.lease_expires_at > ctx.now):
        return None
    effect = Effect()
    if reclaim_cap_reached(ex):
        return _fail_reclaim_cap(ex, ctx, effect)
    set_state(ex, ctx, Phase.ACTIVE, Ownership.LEASE_EXPIRED_RECLAIMABLE, ex.eligibility_state,
              Blocking.WAITING_FOR_WORKER, TerminalOutcome.NONE, AttemptState.ATTEMPT_INTERRUPTED,
              "lease expired, awaiting reclaim")
    ex.lease_expired_at = ctx.now
    effect.outcome = MarkedExpired(ex.execution_id)
    return effect


@operation("promote_delayed", NoArgs, missing=Missing.IGNORE)
def promote_delayed(ex: Execution, a: NoArgs, ctx: Ctx) -> Effect | None:
    if (ex.lifecycle_phase != Phase.RUNNABLE
            or ex.eligibility_state != Eligibility.NOT_ELIGIBLE_UNTIL_TIME
            or ex.delay_until is None or ex.delay_until > ctx.now):
        return None
    set_state(ex, ctx, Phase.RUNNABLE, Ownership.UNOWNED, Eligibility.ELIGIBLE_NOW,
              Blocking.WAITING_FOR_WORKER, TerminalOutcome.NONE, ex.attempt_state)
    return Effect(Promoted(ex.execution_id))


@operation("expire_attempt", JitterArgs, missing=Missing.IGNORE)
def expire_attempt(ex: Execution, a: JitterArgs, ctx: Ctx) -> Effect | None:
    """Attempt timeout: the attempt fails with category ``timeout`` and is retried
    per policy; without a retry left the execution ends ``expired``."""
    if (ex.lifecycle_phase != Phase.ACTIVE or ex.attempt_deadline_at is None
            or ex.attempt_deadline_at > ctx.now):
        return None
    effect = Effect()
    effect.update_attempt(ex.current_attempt_index, attempt_state="ended_failure",
                          ended_at=ctx.now, failure_reason="attempt_timeout",
                          failure_category="timeout")
    _fail_attempt(ex, "attempt_timeout", "timeout", a.u, ctx, effect,
                  exhausted=TerminalOutcome.EXPIRED)
    return effect


@operation("expire_execution", NoArgs, missing=Missing.IGNORE)
def expire_execution(ex: Execution, a: NoArgs, ctx: Ctx) -> Effect | None:
    """Execution deadline: final, whatever the phase."""
    if (ex.lifecycle_phase == Phase.TERMINAL or ex.execution_deadline_at is None
            or ex.execution_deadline_at > ctx.now):
        return None
    effect = Effect()
    if ex.attempt_state in (AttemptState.RUNNING_ATTEMPT, AttemptState.ATTEMPT_INTERRUPTED):
        effect.update_attempt(ex.current_attempt_index, attempt_state="ended_failure",
                              ended_at=ctx.now, failure_reason="execution_deadline")
    ex.failure_reason = "execution_deadline"
    _terminal(ex, ctx, TerminalOutcome.EXPIRED)
    effect.outcome = Expired(ex.execution_id, ex.public_state)
    return effect


@operation("purge", NoArgs, missing=Missing.IGNORE)
def purge(ex: Execution, a: NoArgs, ctx: Ctx) -> Effect | None:
    """Retention: delete a terminal execution whose time is up."""
    if ex.purge_at is None or ex.purge_at > ctx.now:
        return None
    return Effect(Purged(ex.execution_id), [DeleteExecution()])


@dataclass(frozen=True, slots=True)
class QuarantineArgs:
    reason: str


@operation("quarantine", QuarantineArgs, missing=Missing.IGNORE)
def quarantine(ex: Execution, a: QuarantineArgs, ctx: Ctx) -> Effect | None:
    """A scanner failed on this execution again and again: end it as failed with the
    reason, rather than leave it where nothing moves it. ``None`` once terminal."""
    if ex.lifecycle_phase == Phase.TERMINAL:
        return None
    effect = Effect()
    if ex.attempt_state in (AttemptState.RUNNING_ATTEMPT, AttemptState.ATTEMPT_INTERRUPTED):
        effect.update_attempt(ex.current_attempt_index, attempt_state="ended_failure",
                              ended_at=ctx.now, failure_reason=a.reason)
    ex.failure_reason, ex.failure_category = a.reason, "internal"
    _terminal(ex, ctx, TerminalOutcome.FAILED)
    effect.outcome = TerminalFailed(ex.execution_id, ex.public_state)
    return effect


def made_claimable(before: int | bool, ex: Execution) -> bool:
    """Whether a change made the execution claimable (a lane to wake)."""
    return bool(ex.claimable) and not before


__all__ = [
    "OPERATOR", "RECLAIMABLE", "Answer", "CancelArgs", "ChangePriorityArgs", "CompleteArgs",
    "DelayArgs", "FailArgs", "JitterArgs", "NoArgs", "ProgressArgs", "QuarantineArgs",
    "RenewArgs", "ReplayArgs", "RevokeLeaseArgs", "cancel", "capability_match",
    "change_priority", "claim", "claim_answer", "complete", "create", "delay",
    "expire_attempt", "expire_execution", "fail", "made_claimable", "mark_lease_expired",
    "not_active", "policy_of", "progress", "promote_delayed", "purge", "quarantine",
    "reclaim_cap_reached", "renew", "replay", "revoke_lease", "set_state",
]
