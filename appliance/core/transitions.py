"""Pure state-transition rules for one execution.

Each function takes the loaded ``Execution`` (mutated in place), a ``Ctx`` with
the time and defaults, and the validated request; it returns an ``Effect``
naming the attempt rows to write and the JSON outcome, or raises a typed error
before changing anything. Backends run one function per atomic operation; the
Lua library mirrors these rules. See spec/state-machine.md for the story.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from .contracts import CancelArgs, ClaimArgs, CreateArgs
from .errors import (
    Conflict,
    ExecutionNotActive,
    InvalidInput,
    LeaseExpired,
    LeaseRevoked,
    StaleLease,
)
from .handle import Fence, Handle
from .policy import ExecutionPolicy, load_policy
from .record import Attempt, Execution
from .state import (
    RECLAIMABLE,
    AttemptState,
    Blocking,
    Eligibility,
    Outcome,
    Ownership,
    Phase,
    derive_public_state,
    is_claimable,
)

PRIORITY_MIN, PRIORITY_MAX = 0, 9000
DEFAULT_RETENTION_MS = 24 * 3600 * 1000
OPERATOR = "operator_override"


@dataclass(slots=True)
class Ctx:
    now: int
    retention_ms: int = DEFAULT_RETENTION_MS
    rng: random.Random | None = None


@dataclass(slots=True)
class Effect:
    """What a backend writes besides the execution row, and what it answers."""

    outcome: dict[str, Any]
    new_attempt: Attempt | None = None
    attempt_update: dict[str, Any] = field(default_factory=dict)
    attempt_update_index: int | None = None
    handle: Handle | None = None
    #: Result bytes to store (b"" clears a stored result); None leaves it alone.
    result: bytes | None = None

    def update_attempt(self, index: int | None, **values: Any) -> None:
        if index is not None:
            self.attempt_update_index = index
            self.attempt_update.update(values)


class CommitThenRaise(Exception):
    """Raised by a rule whose state change must be committed before the error
    is returned (a lease found expired during a worker call is marked so)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


# -- the state vector ---------------------------------------------------------

def set_state(ex: Execution, ctx: Ctx, phase: str, ownership: str, eligibility: str,
              blocking: str, outcome: str, attempt_state: str, detail: str = "") -> None:
    """Write all seven dimensions together, and clear every scanner clock that
    no longer applies, so an index can never point at the wrong state."""
    ex.lifecycle_phase, ex.ownership_state, ex.eligibility_state = phase, ownership, eligibility
    ex.blocking_reason, ex.terminal_outcome, ex.attempt_state = blocking, outcome, attempt_state
    ex.blocking_detail = detail
    ex.public_state = derive_public_state(phase, eligibility, outcome)
    ex.claimable = int(is_claimable(phase, ownership, eligibility))
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


def policy_of(ex: Execution) -> ExecutionPolicy:
    return load_policy(ex.policy)


def _runnable(ex: Execution, ctx: Ctx, attempt_state: str, *, delay_until: int | None,
              blocking_when_delayed: str, detail: str = "") -> None:
    """Runnable and unowned: eligible now, or delayed until ``delay_until``."""
    _clear_lease(ex)
    if delay_until is not None and delay_until > ctx.now:
        set_state(ex, ctx, Phase.RUNNABLE, Ownership.UNOWNED, Eligibility.NOT_ELIGIBLE_UNTIL_TIME,
                  blocking_when_delayed, Outcome.NONE, attempt_state,
                  detail or f"delayed until {delay_until}")
        ex.delay_until = delay_until
    else:
        set_state(ex, ctx, Phase.RUNNABLE, Ownership.UNOWNED, Eligibility.ELIGIBLE_NOW,
                  Blocking.WAITING_FOR_WORKER, Outcome.NONE, attempt_state)


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


def _summary(ex: Execution, variant: str) -> dict[str, Any]:
    return {variant: {"execution_id": ex.execution_id, "public_state": ex.public_state}}


# -- ingress and operator ops -------------------------------------------------

def create(args: CreateArgs, ctx: Ctx) -> Execution:
    """A new record: eligible now, or delayed if ``delay_until`` is in the future."""
    policy = args.policy
    ex = Execution(
        execution_id=args.execution_id, partition_id=args.partition_id,
        namespace=args.namespace, lane_id=args.lane_id, execution_kind=args.execution_kind,
        priority=_clamp_priority(args.priority), creator_identity=args.creator_identity,
        created_at=ctx.now, payload_encoding=args.payload_encoding, policy=policy.to_json(),
        required_capabilities=",".join(policy.required_capabilities),
        tags=_tags_json(args.tags))
    _runnable(ex, ctx, AttemptState.PENDING_FIRST_ATTEMPT, delay_until=args.delay_until,
              blocking_when_delayed=Blocking.WAITING_FOR_DELAY)
    deadlines = [d for d in (args.execution_deadline_at,
                             policy.execution_deadline_ms and ctx.now + policy.execution_deadline_ms)
                 if d]
    ex.execution_deadline_at = min(deadlines) if deadlines else None
    return ex


def _tags_json(tags: dict[str, str]) -> str:
    return json.dumps(tags, separators=(",", ":"), sort_keys=True) if tags else "{}"


def change_priority(ex: Execution, new_priority: int, ctx: Ctx) -> Effect:
    if ex.lifecycle_phase != Phase.RUNNABLE or ex.eligibility_state != Eligibility.ELIGIBLE_NOW:
        raise Conflict(f"execution {ex.execution_id} is {ex.public_state}; only waiting "
                       f"executions can be re-prioritised", kind="execution_not_eligible")
    ex.priority = _clamp_priority(new_priority)
    ex.last_mutation_at = ctx.now
    return Effect({"Changed": {"execution_id": ex.execution_id}})


def replay(ex: Execution, ctx: Ctx) -> Effect:
    if ex.lifecycle_phase != Phase.TERMINAL:
        raise Conflict(f"execution {ex.execution_id} is {ex.public_state}; only terminal "
                       f"executions can be replayed", kind="execution_not_terminal")
    limit = policy_of(ex).max_replay_count
    if ex.replay_count >= limit:
        raise Conflict(f"execution {ex.execution_id} was already replayed {ex.replay_count} "
                       f"times (policy max_replay_count={limit})", kind="max_replays_exhausted")
    ex.replay_count += 1
    _runnable(ex, ctx, AttemptState.PENDING_REPLAY_ATTEMPT, delay_until=None,
              blocking_when_delayed=Blocking.WAITING_FOR_WORKER)
    ex.completed_at = None
    ex.has_result, ex.result_encoding = 0, None
    return Effect({"Replayed": {"public_state": ex.public_state}}, result=b"")


def cancel(ex: Execution, args: CancelArgs, ctx: Ctx) -> Effect:
    """Operator cancel works on anything non-terminal; a lease-bound cancel
    (a fence was given, or a non-operator source on an active execution)
    must hold the current lease."""
    if ex.lifecycle_phase == Phase.TERMINAL:
        if (args.fence and ex.terminal_outcome == Outcome.CANCELLED
                and args.fence.lease_epoch == ex.current_lease_epoch
                and args.fence.attempt_id == ex.current_attempt_id):
            return Effect(_summary(ex, "Cancelled"))
        raise not_active(ex)
    if args.fence is not None:
        _check_lease(ex, args.fence, ctx)
    elif ex.lifecycle_phase == Phase.ACTIVE and args.source != OPERATOR:
        raise InvalidInput(f"fence_required: cancelling an active execution with source "
                           f"{args.source!r} needs the lease handle (or use source "
                           f"'{OPERATOR}')", kind="fence_required")
    effect = Effect({})
    if ex.attempt_state in (AttemptState.RUNNING_ATTEMPT, AttemptState.ATTEMPT_INTERRUPTED):
        effect.update_attempt(ex.current_attempt_index, attempt_state="ended_cancelled",
                              ended_at=ctx.now, failure_reason=f"cancelled: {args.reason}")
    ex.cancellation_reason = args.reason
    ex.cancelled_by = args.source or ex.execution_id
    _terminal(ex, ctx, Outcome.CANCELLED)
    effect.outcome = _summary(ex, "Cancelled")
    return effect


def revoke_lease(ex: Execution, reason: str, ctx: Ctx) -> Effect:
    """Take the lease away; the execution becomes claimable again as a reclaim."""
    if ex.lifecycle_phase != Phase.ACTIVE:
        raise not_active(ex)
    if ex.ownership_state == Ownership.LEASE_REVOKED:
        return Effect({"AlreadySatisfied": {"reason": "already_revoked"}})
    if ex.ownership_state == Ownership.LEASE_EXPIRED_RECLAIMABLE:
        return Effect({"AlreadySatisfied": {"reason": "already_expired"}})
    if ex.ownership_state != Ownership.LEASED:
        return Effect({"AlreadySatisfied": {"reason": "no_active_lease"}})
    outcome = {"Revoked": {"lease_id": ex.current_lease_id,
                           "lease_epoch": str(ex.current_lease_epoch)}}
    set_state(ex, ctx, Phase.ACTIVE, Ownership.LEASE_REVOKED, ex.eligibility_state,
              Blocking.WAITING_FOR_WORKER, Outcome.NONE, AttemptState.ATTEMPT_INTERRUPTED,
              f"lease revoked: {reason}")
    ex.lease_revoked_at, ex.lease_revoke_reason = ctx.now, reason
    return Effect(outcome)


# -- claiming -----------------------------------------------------------------

def capability_match(ex: Execution, worker_caps: tuple[str, ...]) -> bool:
    required = ex.capability_set()
    return not required or set(required).issubset(worker_caps)


def claim(ex: Execution, args: ClaimArgs, ctx: Ctx, *, lease_id: str, attempt_id: str) -> Effect:
    """Lease a claimable execution: a fresh attempt, the same attempt resumed,
    or a reclaim of an attempt whose lease expired or was revoked."""
    if not ex.claimable:
        raise Conflict(f"execution {ex.execution_id} is {ex.public_state}, not claimable",
                       kind="execution_not_eligible")
    effect = Effect({})
    if ex.lifecycle_phase == Phase.ACTIVE:
        if reclaim_cap_reached(ex):
            return _fail_reclaim_cap(ex, ctx, effect)
        index, attempt_type = ex.total_attempt_count, "reclaim"
        previous = ex.current_attempt_index
        effect.update_attempt(previous, attempt_state="interrupted_reclaimed", ended_at=ctx.now,
                              failure_reason=f"{ex.ownership_state}")
        effect.new_attempt = Attempt(ex.execution_id, index, attempt_id, attempt_type, "started",
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
        effect.new_attempt = Attempt(ex.execution_id, index, attempt_id, attempt_type, "started",
                                     ctx.now, previous_attempt_index=previous,
                                     reason=ex.pending_retry_reason)
    if effect.new_attempt is not None:
        ex.total_attempt_count += 1
    epoch = ex.current_lease_epoch + 1
    ttl = args.lease_ttl_ms
    _clear_lease(ex)
    set_state(ex, ctx, Phase.ACTIVE, Ownership.LEASED, Eligibility.NOT_APPLICABLE, Blocking.NONE,
              Outcome.NONE, AttemptState.RUNNING_ATTEMPT)
    ex.current_attempt_index, ex.current_attempt_id = index, attempt_id
    ex.current_lease_id, ex.current_lease_epoch = lease_id, epoch
    ex.current_worker_id, ex.current_worker_instance_id = args.worker_id, args.worker_instance_id
    ex.lease_acquired_at = ex.lease_last_renewed_at = ctx.now
    _set_expiry(ex, ttl, ctx)
    ex.started_at = ex.started_at or ctx.now
    ex.pending_retry_reason = ex.pending_previous_attempt_index = None
    timeout = policy_of(ex).attempt_timeout_ms
    ex.attempt_deadline_at = ctx.now + timeout if timeout else None
    lease = {"lease_id": lease_id, "lease_epoch": epoch, "worker_id": args.worker_id,
             "worker_instance_id": args.worker_instance_id}
    if effect.new_attempt is not None:
        effect.new_attempt.started_at = ctx.now
        for k, v in lease.items():
            setattr(effect.new_attempt, k, v)
    else:
        effect.attempt_update.update(lease)
    effect.handle = Handle(ex.execution_id, index, Fence(lease_id, epoch, attempt_id))
    effect.outcome = claim_answer(ex, attempt_type, ttl)
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
        "execution_kind": ex.execution_kind, "priority": ex.priority,
        "payload_encoding": ex.payload_encoding, "tags": ex.tag_map(),
        "policy": _worker_policy(ex), "attempt_deadline_at": ex.attempt_deadline_at,
        "execution_deadline_at": ex.execution_deadline_at,
    }


def _worker_policy(ex: Execution) -> dict[str, Any]:
    """The policy as the worker sees it: re-read leniently, so stored data from an older
    version never reaches a worker as something its JSON parser rejects."""
    return json.loads(policy_of(ex).to_json())


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
    _terminal(ex, ctx, Outcome.FAILED)
    ex.blocking_detail = (f"lease lost {ex.lease_reclaim_count + 1} times; policy "
                          f"max_reclaim_count={limit}")
    effect.outcome = {"ReclaimCapExceeded": {"execution_id": ex.execution_id,
                                             "reclaim_count": limit}}
    return effect


# -- lease-bound worker ops ---------------------------------------------------

def not_active(ex: Execution) -> ExecutionNotActive:
    return ExecutionNotActive(ex.execution_id, lifecycle_phase=ex.lifecycle_phase,
                              terminal_outcome=ex.terminal_outcome,
                              lease_epoch=ex.current_lease_epoch,
                              attempt_id=ex.current_attempt_id)


def _check_lease(ex: Execution, fence: Fence, ctx: Ctx) -> None:
    """Active, not revoked, not expired (marking it if due), and our fence."""
    if ex.lifecycle_phase != Phase.ACTIVE:
        raise not_active(ex)
    mine = (fence.lease_id == ex.current_lease_id and fence.lease_epoch == ex.current_lease_epoch
            and fence.attempt_id == ex.current_attempt_id)
    if ex.ownership_state == Ownership.LEASE_REVOKED and mine:
        raise LeaseRevoked(f"the lease on {ex.execution_id} was revoked "
                           f"({ex.lease_revoke_reason}); stop working on it")
    if ex.ownership_state == Ownership.LEASE_EXPIRED_RECLAIMABLE and mine:
        raise LeaseExpired(f"the lease on {ex.execution_id} expired at {ex.lease_expires_at}; "
                           f"renew before lease_expires_at")
    if not mine:
        raise StaleLease(f"stale lease for {ex.execution_id}: the handle holds epoch "
                         f"{fence.lease_epoch}, the current lease is epoch "
                         f"{ex.current_lease_epoch}")
    if ex.lease_expires_at is not None and ex.lease_expires_at <= ctx.now:
        mark_lease_expired(ex, ctx)
        raise CommitThenRaise(LeaseExpired(
            f"the lease on {ex.execution_id} expired at {ex.lease_expires_at}; "
            f"renew before lease_expires_at"))


def renew(ex: Execution, fence: Fence, ttl: int | None, ctx: Ctx) -> Effect:
    _check_lease(ex, fence, ctx)
    _set_expiry(ex, ttl or ex.lease_ttl_ms or 30_000, ctx)
    ex.lease_last_renewed_at = ex.last_mutation_at = ctx.now
    return Effect({"lease_expires_at": ex.lease_expires_at, "lease_epoch": ex.current_lease_epoch,
                   "lease_renewal_deadline": ex.lease_renewal_deadline})


def progress(ex: Execution, fence: Fence, pct: int | None, message: str | None,
             ctx: Ctx) -> Effect:
    _check_lease(ex, fence, ctx)
    if pct is not None:
        ex.progress_pct = pct
    if message is not None:
        ex.progress_message = message
    ex.progress_updated_at = ex.last_mutation_at = ctx.now
    return Effect({"progress_pct": ex.progress_pct, "progress_message": ex.progress_message,
                   "progress_updated_at": ex.progress_updated_at})


def _same_holder_finished(ex: Execution, fence: Fence) -> bool:
    return ex.current_lease_epoch == fence.lease_epoch and ex.lifecycle_phase != Phase.ACTIVE


def complete(ex: Execution, fence: Fence, result: bytes | None, encoding: str | None,
             ctx: Ctx) -> Effect:
    if (_same_holder_finished(ex, fence) and ex.terminal_outcome == Outcome.SUCCESS
            and ex.current_attempt_id == fence.attempt_id):
        return Effect(_summary(ex, "Completed"))
    _check_lease(ex, fence, ctx)
    effect = Effect({})
    effect.update_attempt(ex.current_attempt_index, attempt_state="ended_success",
                          ended_at=ctx.now)
    ex.has_result = int(bool(result))
    ex.result_encoding = encoding
    effect.result = result or b""
    _terminal(ex, ctx, Outcome.SUCCESS)
    effect.outcome = _summary(ex, "Completed")
    return effect


def fail(ex: Execution, fence: Fence, reason: str, category: str | None, ctx: Ctx) -> Effect:
    """Retry per policy (delayed re-run) or fail terminally."""
    if _same_holder_finished(ex, fence):
        if (ex.lifecycle_phase == Phase.TERMINAL and ex.terminal_outcome == Outcome.FAILED
                and ex.current_attempt_id == fence.attempt_id):
            return Effect(_summary(ex, "TerminalFailed"))
        if ex.attempt_state == AttemptState.PENDING_RETRY_ATTEMPT:
            return Effect(_retry_outcome(ex))
    _check_lease(ex, fence, ctx)
    effect = Effect({})
    effect.update_attempt(ex.current_attempt_index, attempt_state="ended_failure",
                          ended_at=ctx.now, failure_reason=reason, failure_category=category)
    _fail_attempt(ex, reason, category, ctx, effect, exhausted=Outcome.FAILED)
    return effect


def _fail_attempt(ex: Execution, reason: str, category: str | None, ctx: Ctx, effect: Effect,
                  *, exhausted: str) -> None:
    ex.failure_reason, ex.failure_category = reason, category
    retry = policy_of(ex).retry
    if retry is not None and retry.allows(ex.retry_count, category):
        delay = retry.backoff.delay_for(ex.retry_count, ctx.rng)
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
        variant = "TerminalFailed" if exhausted == Outcome.FAILED else "Expired"
        effect.outcome = _summary(ex, variant)


def _retry_outcome(ex: Execution) -> dict[str, Any]:
    return {"RetryScheduled": {"execution_id": ex.execution_id,
                               "public_state": ex.public_state,
                               "delay_until": ex.delay_until or ex.last_transition_at,
                               "next_attempt_index": ex.total_attempt_count}}


def delay(ex: Execution, fence: Fence, delay_until: int, ctx: Ctx) -> Effect:
    """The worker parks its attempt; the same attempt resumes after the delay."""
    _check_lease(ex, fence, ctx)
    effect = Effect({})
    effect.update_attempt(ex.current_attempt_index, attempt_state="suspended",
                          suspended_at=ctx.now, suspension_id="worker_delay")
    _runnable(ex, ctx, AttemptState.ATTEMPT_INTERRUPTED, delay_until=delay_until,
              blocking_when_delayed=Blocking.WAITING_FOR_DELAY)
    effect.outcome = {"Delayed": {"execution_id": ex.execution_id,
                                  "public_state": ex.public_state,
                                  "delay_until": delay_until}}
    return effect


# -- scanner primitives -------------------------------------------------------

def mark_lease_expired(ex: Execution, ctx: Ctx) -> Effect | None:
    """An expired lease makes the execution claimable as a reclaim, or fails it
    once the reclaim cap is spent. ``None`` when there is nothing to do."""
    if (ex.lifecycle_phase != Phase.ACTIVE or ex.ownership_state != Ownership.LEASED
            or ex.lease_expires_at is None or ex.lease_expires_at > ctx.now):
        return None
    effect = Effect({})
    if reclaim_cap_reached(ex):
        return _fail_reclaim_cap(ex, ctx, effect)
    set_state(ex, ctx, Phase.ACTIVE, Ownership.LEASE_EXPIRED_RECLAIMABLE, ex.eligibility_state,
              Blocking.WAITING_FOR_WORKER, Outcome.NONE, AttemptState.ATTEMPT_INTERRUPTED,
              "lease expired, awaiting reclaim")
    ex.lease_expired_at = ctx.now
    effect.outcome = {"MarkedExpired": {"execution_id": ex.execution_id}}
    return effect


def promote_delayed(ex: Execution, ctx: Ctx) -> Effect | None:
    if (ex.lifecycle_phase != Phase.RUNNABLE
            or ex.eligibility_state != Eligibility.NOT_ELIGIBLE_UNTIL_TIME
            or ex.delay_until is None or ex.delay_until > ctx.now):
        return None
    set_state(ex, ctx, Phase.RUNNABLE, Ownership.UNOWNED, Eligibility.ELIGIBLE_NOW,
              Blocking.WAITING_FOR_WORKER, Outcome.NONE, ex.attempt_state)
    return Effect({"Promoted": {"execution_id": ex.execution_id}})


def expire_attempt(ex: Execution, ctx: Ctx) -> Effect | None:
    """Attempt timeout: the attempt fails with category ``timeout`` and is retried
    per policy; without a retry left the execution ends ``expired``."""
    if (ex.lifecycle_phase != Phase.ACTIVE or ex.attempt_deadline_at is None
            or ex.attempt_deadline_at > ctx.now):
        return None
    effect = Effect({})
    effect.update_attempt(ex.current_attempt_index, attempt_state="ended_failure",
                          ended_at=ctx.now, failure_reason="attempt_timeout",
                          failure_category="timeout")
    _fail_attempt(ex, "attempt_timeout", "timeout", ctx, effect, exhausted=Outcome.EXPIRED)
    return effect


def expire_execution(ex: Execution, ctx: Ctx) -> Effect | None:
    """Execution deadline: final, whatever the phase."""
    if (ex.lifecycle_phase == Phase.TERMINAL or ex.execution_deadline_at is None
            or ex.execution_deadline_at > ctx.now):
        return None
    effect = Effect({})
    if ex.attempt_state in (AttemptState.RUNNING_ATTEMPT, AttemptState.ATTEMPT_INTERRUPTED):
        effect.update_attempt(ex.current_attempt_index, attempt_state="ended_failure",
                              ended_at=ctx.now, failure_reason="execution_deadline")
    ex.failure_reason = "execution_deadline"
    _terminal(ex, ctx, Outcome.EXPIRED)
    effect.outcome = _summary(ex, "Expired")
    return effect


def quarantine(ex: Execution, reason: str, ctx: Ctx) -> Effect | None:
    """A scanner failed on this execution again and again: end it as failed with the
    reason, rather than leave it where nothing moves it. ``None`` once terminal."""
    if ex.lifecycle_phase == Phase.TERMINAL:
        return None
    effect = Effect({})
    if ex.attempt_state in (AttemptState.RUNNING_ATTEMPT, AttemptState.ATTEMPT_INTERRUPTED):
        effect.update_attempt(ex.current_attempt_index, attempt_state="ended_failure",
                              ended_at=ctx.now, failure_reason=reason)
    ex.failure_reason, ex.failure_category = reason, "internal"
    _terminal(ex, ctx, Outcome.FAILED)
    effect.outcome = _summary(ex, "TerminalFailed")
    return effect


__all__ = [
    "Ctx", "Effect", "CommitThenRaise", "RECLAIMABLE", "set_state", "policy_of", "create",
    "change_priority", "replay", "cancel", "revoke_lease", "capability_match", "claim",
    "claim_answer",
    "renew", "progress", "complete", "fail", "delay", "mark_lease_expired", "promote_delayed",
    "expire_attempt", "expire_execution", "not_active", "quarantine", "reclaim_cap_reached",
]
