"""Suspension, waitpoints and signals: records and the pure rules every store applies.

An execution suspends on a resume condition (``conditions``) over waitpoints it names
by key; each waitpoint has a token (``tokens``) an outside caller presents to signal
it. The open suspension lives on the execution record (``Execution.suspension``, JSON)
so every rule that ends or moves an execution sees it; waitpoints and signals are rows
of their own. The SQL stores call these rules; the Lua library mirrors them (a
differential test keeps the two equal). See spec/suspension.md.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

from . import conditions as cond
from .effects import CloseWaitpoints, Effect
from .errors import (
    AlreadySuspended,
    ExecutionNotSuspended,
    InvalidInput,
    LaneMismatch,
    PendingWaitpointExpired,
    SignalLimitExceeded,
    StaleKid,
    TargetNotSignalable,
    WaitpointAlreadyExists,
    WaitpointClosed,
)
from .handle import Fence
from .operations import Ctx, Missing, operation
from .outcomes import AlreadySatisfied, Outcome
from .record import Execution
from .state import (
    AttemptState,
    Blocking,
    Eligibility,
    Ownership,
    Phase,
    TerminalOutcome,
)
from .tokens import Keystore, verify
from .transitions import (
    NoArgs,
    _check_lease,
    _clear_lease,
    _runnable,
    _terminal,
    set_state,
)

#: reason_code → the blocking reason a suspended execution shows.
REASONS = {
    "waiting_for_signal": Blocking.WAITING_FOR_SIGNAL,
    "waiting_for_approval": Blocking.WAITING_FOR_APPROVAL,
    "waiting_for_callback": Blocking.WAITING_FOR_CALLBACK,
    "waiting_for_tool_result": Blocking.WAITING_FOR_TOOL_RESULT,
    "waiting_for_operator_review": Blocking.PAUSED_BY_OPERATOR,
    "paused_by_policy": Blocking.PAUSED_BY_POLICY,
    "paused_by_budget": Blocking.WAITING_FOR_BUDGET,
    "step_boundary": Blocking.WAITING_FOR_SIGNAL,
    "manual_pause": Blocking.PAUSED_BY_OPERATOR,
}
TIMEOUT_BEHAVIORS = ("fail", "cancel", "expire", "auto_resume_with_timeout_signal", "escalate")
REQUESTERS = ("worker", "operator", "policy", "system_timeout_policy")
#: A timeout this far in the past is refused (clock skew between caller and store).
TIMEOUT_SKEW_MS = 600_000
DEFAULT_MAX_SIGNALS = 10_000
DEFAULT_DEDUP_TTL_MS = 86_400_000
DEDUP_TTL_MAX_MS = 30 * 86_400_000
WAITING_CHILDREN = "waiting_children"


# -- records ----------------------------------------------------------------------------------

@dataclass(slots=True)
class Waitpoint:
    waitpoint_id: str
    execution_id: str
    attempt_index: int
    waitpoint_key: str
    token: str
    state: str  # pending | active | closed
    created_at: int
    suspension_id: str | None = None
    activated_at: int | None = None
    expires_at: int | None = None
    closed_at: int | None = None
    close_reason: str | None = None
    signal_count: int = 0
    matched_signal_count: int = 0
    last_signal_at: int | None = None

    def to_row(self) -> dict[str, Any]:
        return dict(zip(WAITPOINT_COLUMNS, _WP_VALUES(self), strict=True))


@dataclass(slots=True)
class Signal:
    signal_id: str
    execution_id: str
    waitpoint_id: str
    signal_name: str
    signal_category: str
    source_type: str
    source_identity: str
    target_scope: str
    created_at: int
    accepted_at: int
    effect: str
    #: Its place among the execution's signals (0, 1, ...): the order they count in.
    seq: int = 0
    correlation_id: str | None = None
    idempotency_key: str | None = None
    dedup_expires_at: int | None = None
    payload_encoding: str | None = None
    payload: bytes | None = None

    def to_row(self) -> dict[str, Any]:
        return dict(zip(SIGNAL_COLUMNS, _SIG_VALUES(self), strict=True))

    def for_worker(self) -> dict[str, Any]:
        """As a resumed task lists it."""
        data = self.payload
        return {"signal_id": self.signal_id, "signal_name": self.signal_name,
                "signal_category": self.signal_category, "source_type": self.source_type,
                "source_identity": self.source_identity, "correlation_id": self.correlation_id,
                "target_scope": self.target_scope, "created_at": self.created_at,
                "accepted_at": self.accepted_at, "payload_encoding": self.payload_encoding,
                "payload": list(data) if data is not None else None,
                "payload_b64": base64.b64encode(data).decode() if data is not None else None}


WAITPOINT_COLUMNS = tuple(f.name for f in fields(Waitpoint))
SIGNAL_COLUMNS = tuple(f.name for f in fields(Signal))
_WP_VALUES = attrgetter(*WAITPOINT_COLUMNS)
_SIG_VALUES = attrgetter(*SIGNAL_COLUMNS)


def load_suspension(ex: Execution) -> dict[str, Any] | None:
    return json.loads(ex.suspension) if ex.suspension else None


def store_suspension(ex: Execution, s: dict[str, Any] | None) -> None:
    ex.suspension = json.dumps(s, separators=(",", ":")) if s is not None else None


def is_open(s: dict[str, Any] | None) -> bool:
    return s is not None and s.get("closed_at") is None


def close_suspension(s: dict[str, Any], reason: str, now: int) -> None:
    s["closed_at"], s["close_reason"] = now, reason


# -- creating a pending waitpoint -------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class WaitpointArgs:
    fence: Fence
    waitpoint_id: str
    waitpoint_key: str
    token: str
    kid: str
    expires_at: int | None = None


def create_waitpoint(ex: Execution, a: WaitpointArgs, same_key: Waitpoint | None,
                     keys: Keystore, ctx: Ctx) -> Effect | Waitpoint:
    """A pending waitpoint for the current attempt; the worker keeps its lease.
    ``same_key``: the open waitpoint of this attempt with the same key, if any. An
    ``Effect`` comes back only when the lease was found expired (commit it, answer its
    error)."""
    expired = _check_lease(ex, a.fence, ctx)
    if expired is not None:
        return expired
    if a.kid != keys.current:
        raise StaleKid.of(current=keys.current)
    if same_key is not None:
        raise WaitpointAlreadyExists.of(execution_id=ex.execution_id,
                                        waitpoint_key=a.waitpoint_key,
                                        waitpoint_id=same_key.waitpoint_id)
    ex.waitpoints_open = 1
    ex.last_mutation_at = ctx.now
    return Waitpoint(a.waitpoint_id, ex.execution_id, ex.current_attempt_index or 0,
                     a.waitpoint_key, a.token, "pending", ctx.now, expires_at=a.expires_at)


# -- suspending -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SuspendArgs:
    fence: Fence
    suspension_id: str
    condition: cond.Tree
    #: The keys to bind, in order (the first is the primary waitpoint).
    keys: tuple[str, ...]
    #: ``(key, waitpoint_id, token)`` minted for each key, used when no pending waitpoint
    #: of this attempt has the key.
    fresh: tuple[tuple[str, str, str], ...]
    kid: str
    reason_code: str = "waiting_for_signal"
    requested_by: str = "worker"
    timeout_at: int | None = None
    timeout_behavior: str = "fail"
    idempotency_key: str | None = None


@dataclass(slots=True)
class SuspendResult:
    """``kind``: ``Suspended`` (lease released) or ``AlreadySatisfied`` (signals buffered
    before the suspend already satisfy it: the lease is kept and the worker goes on)."""

    kind: str
    suspension_id: str
    waitpoints: list[dict[str, str]]
    #: The satisfying signals' ids (AlreadySatisfied only).
    signal_ids: list[str] = field(default_factory=list)
    #: Filled by the store for the answer: the signals themselves.
    signals: list[Signal] = field(default_factory=list)

    def wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"suspension_id": self.suspension_id,
                                "waitpoints": self.waitpoints}
        if self.kind == "AlreadySatisfied":
            body["signals"] = [s.for_worker() for s in self.signals]
        return {self.kind: body}


@dataclass(slots=True)
class Suspension:
    """What ``suspend`` changed besides the execution: waitpoints to write (new or
    activated, closed when already satisfied) and the answer."""

    effect: Effect
    result: SuspendResult | None = None
    waitpoints: list[Waitpoint] = field(default_factory=list)


def replayed_suspend(ex: Execution, key: str | None) -> SuspendResult | None:
    """The stored answer of a suspend retried with the same idempotency key."""
    s = load_suspension(ex)
    if key is None or s is None or s.get("idempotency_key") != key:
        return None
    answer = s["answer"]
    return SuspendResult(answer["kind"], s["suspension_id"], answer["waitpoints"],
                         s.get("satisfiers", []) if answer["kind"] == "AlreadySatisfied" else [])


def suspend(ex: Execution, a: SuspendArgs, pending: list[Waitpoint], buffered: list[Signal],
            keys: Keystore, ctx: Ctx) -> Suspension:
    """Suspend the lease holder on ``a.condition``. ``pending``: the open waitpoints of the
    execution; ``buffered``: the signals they hold, in the order they came."""
    again = replayed_suspend(ex, a.idempotency_key)
    if again is not None:
        return Suspension(Effect(), again)
    expired = _check_lease(ex, a.fence, ctx)
    if expired is not None:
        return Suspension(expired)
    if is_open(load_suspension(ex)):
        raise AlreadySuspended.of(execution_id=ex.execution_id)
    by_key = {w.waitpoint_key: w for w in pending
              if w.state == "pending" and w.attempt_index == ex.current_attempt_index}
    fresh = {key: (wid, token) for key, wid, token in a.fresh}
    bound: list[Waitpoint] = []
    for key in a.keys:
        wp = by_key.get(key)
        if wp is not None:
            if wp.expires_at is not None and wp.expires_at <= ctx.now:
                raise PendingWaitpointExpired.of(waitpoint_id=wp.waitpoint_id,
                                                 waitpoint_key=key, expires_at=wp.expires_at)
        else:
            if a.kid != keys.current:
                raise StaleKid.of(current=keys.current)
            wid, token = fresh[key]
            wp = Waitpoint(wid, ex.execution_id, ex.current_attempt_index or 0, key, token,
                           "pending", ctx.now)
        wp.state, wp.suspension_id, wp.activated_at = "active", a.suspension_id, ctx.now
        wp.expires_at = a.timeout_at
        bound.append(wp)
    listed = [{"waitpoint_id": w.waitpoint_id, "waitpoint_key": w.waitpoint_key,
               "token": w.token} for w in bound]
    s: dict[str, Any] = {
        "suspension_id": a.suspension_id, "attempt_index": ex.current_attempt_index,
        "waitpoints": [{"waitpoint_id": w.waitpoint_id, "waitpoint_key": w.waitpoint_key}
                       for w in bound],
        "reason_code": a.reason_code, "requested_by": a.requested_by, "created_at": ctx.now,
        "timeout_at": a.timeout_at, "timeout_behavior": a.timeout_behavior,
        "condition": a.condition, "satisfied": [], "satisfiers": [],
        "closed_at": None, "close_reason": None, "closer_signal_id": None,
        "idempotency_key": a.idempotency_key, "answer": None}
    keys_of = {w.waitpoint_id: w.waitpoint_key for w in bound}
    for sig in buffered:
        key = keys_of.get(sig.waitpoint_id)
        if key is None:
            continue
        effect, added = cond.offer(a.condition, s["satisfied"], key, sig.waitpoint_id,
                                   sig.signal_id, sig.signal_name,
                                   f"{sig.source_type}:{sig.source_identity}")
        if added:
            s["satisfied"] += added
            s["satisfiers"].append(sig.signal_id)
        if effect == cond.SATISFIED:
            for w in bound:
                w.state, w.closed_at, w.close_reason = "closed", ctx.now, "resumed"
            close_suspension(s, "resumed", ctx.now)
            s["closer_signal_id"] = sig.signal_id
            s["answer"] = {"kind": "AlreadySatisfied", "waitpoints": listed}
            store_suspension(ex, s)
            ex.last_mutation_at = ctx.now
            result = SuspendResult("AlreadySatisfied", a.suspension_id, listed,
                                   list(s["satisfiers"]))
            return Suspension(Effect(), result, bound)
    s["answer"] = {"kind": "Suspended", "waitpoints": listed}
    store_suspension(ex, s)
    reason = REASONS.get(a.reason_code, Blocking.WAITING_FOR_SIGNAL)
    _clear_lease(ex)
    set_state(ex, ctx, Phase.SUSPENDED, Ownership.UNOWNED, Eligibility.NOT_APPLICABLE, reason,
              TerminalOutcome.NONE, AttemptState.ATTEMPT_INTERRUPTED,
              f"suspended: waitpoint {bound[0].waitpoint_id} awaiting {a.reason_code}")
    ex.suspension_timeout_at = a.timeout_at
    ex.waitpoints_open = 1
    effect = Effect()
    effect.update_attempt(ex.current_attempt_index, attempt_state="suspended",
                          suspended_at=ctx.now, suspension_id=a.suspension_id)
    return Suspension(effect, SuspendResult("Suspended", a.suspension_id, listed), bound)


# -- signals ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SignalArgs:
    waitpoint_id: str
    signal_id: str
    signal_name: str
    signal_category: str
    source_type: str
    source_identity: str
    target_scope: str
    token: str
    correlation_id: str | None = None
    idempotency_key: str | None = None
    dedup_ttl_ms: int = DEFAULT_DEDUP_TTL_MS
    created_at: int | None = None
    payload: bytes | None = None
    payload_encoding: str | None = None
    resume_delay_ms: int = 0
    max_signals_per_execution: int = DEFAULT_MAX_SIGNALS
    #: The operator approval path names the lane it expects the execution on.
    lane_id: str | None = None


@dataclass(frozen=True, slots=True)
class SignalAnswer(Outcome):
    """``Accepted`` (with the effect) or ``Duplicate`` (the first signal's id)."""

    kind: str
    signal_id: str
    effect: str | None = None

    def wire(self) -> dict[str, Any]:
        if self.kind == "Duplicate":
            return {"Duplicate": {"existing_signal_id": self.signal_id}}
        return {"Accepted": {"signal_id": self.signal_id, "effect": self.effect}}


@dataclass(slots=True)
class Delivery:
    """What ``deliver`` changed: the answer, the signal row (None for a duplicate), the
    waitpoint and the execution's effect (waitpoints closed on a resume)."""

    answer: SignalAnswer
    signal: Signal | None = None
    effect: Effect = field(default_factory=Effect)


def deliver(ex: Execution, wp: Waitpoint | None, first: str | None, keys: Keystore,
            a: SignalArgs, ctx: Ctx) -> Delivery:
    """A signal for waitpoint ``wp`` (None: unknown). ``first``: the id of an earlier
    signal with the same idempotency key on this waitpoint, still inside its window.

    Token first (a caller without one learns nothing), then the retry, then state."""
    verify(keys, a.token, wp.token if wp is not None and wp.execution_id == ex.execution_id
           else None, ctx.now)
    assert wp is not None
    if a.lane_id is not None and a.lane_id != ex.lane_id:
        raise LaneMismatch.of(execution_id=ex.execution_id, lane_id=ex.lane_id, given=a.lane_id)
    if first is not None:
        return Delivery(SignalAnswer("Duplicate", first))
    if ex.lifecycle_phase == Phase.TERMINAL:
        raise TargetNotSignalable.of(execution_id=ex.execution_id, public_state=ex.public_state)
    if wp.state == "closed":
        raise WaitpointClosed.of(waitpoint_id=wp.waitpoint_id, close_reason=wp.close_reason)
    if a.max_signals_per_execution and ex.signal_count >= a.max_signals_per_execution:
        raise SignalLimitExceeded.of(execution_id=ex.execution_id, count=ex.signal_count,
                                     limit=a.max_signals_per_execution)
    s = load_suspension(ex)
    if wp.state == "pending":
        effect_name, added = cond.BUFFERED, []
    elif (ex.lifecycle_phase == Phase.SUSPENDED and is_open(s) and s is not None
          and s["suspension_id"] == wp.suspension_id):
        effect_name, added = cond.offer(s["condition"], s["satisfied"], wp.waitpoint_key,
                                        wp.waitpoint_id, a.signal_id, a.signal_name,
                                        f"{a.source_type}:{a.source_identity}")
    else:
        raise TargetNotSignalable.of(execution_id=ex.execution_id, public_state=ex.public_state)
    signal = Signal(a.signal_id, ex.execution_id, wp.waitpoint_id, a.signal_name,
                    a.signal_category, a.source_type, a.source_identity, a.target_scope,
                    a.created_at if a.created_at is not None else ctx.now, ctx.now, effect_name,
                    ex.signal_count, a.correlation_id, a.idempotency_key,
                    ctx.now + a.dedup_ttl_ms if a.idempotency_key else None,
                    a.payload_encoding, a.payload)
    ex.signal_count += 1
    ex.last_mutation_at = ctx.now
    wp.signal_count += 1
    wp.last_signal_at = ctx.now
    if effect_name not in (cond.NOT_IN_CONDITION, cond.MATCHER_FAILED, cond.BUFFERED):
        wp.matched_signal_count += 1
    delivery = Delivery(SignalAnswer("Accepted", a.signal_id, effect_name), signal)
    if s is not None and added:
        s["satisfied"] += added
        s["satisfiers"].append(a.signal_id)
        if effect_name == cond.SATISFIED:
            s["closer_signal_id"] = a.signal_id
            wp.state, wp.closed_at, wp.close_reason = "closed", ctx.now, "resumed"
            delivery.effect = _resume(ex, s, ctx, "resumed", a.resume_delay_ms,
                                      f"resume delay {a.resume_delay_ms}ms after signal "
                                      f"{a.signal_name}")
        store_suspension(ex, s)
    return delivery


def _resume(ex: Execution, s: dict[str, Any], ctx: Ctx, reason: str, delay_ms: int,
            detail: str) -> Effect:
    """The suspended attempt becomes claimable again (after ``delay_ms``); the suspension
    and its waitpoints close with ``reason``."""
    close_suspension(s, reason, ctx.now)
    store_suspension(ex, s)
    _runnable(ex, ctx, AttemptState.ATTEMPT_INTERRUPTED,
              delay_until=ctx.now + delay_ms if delay_ms > 0 else None,
              blocking_when_delayed=Blocking.WAITING_FOR_RESUME_DELAY, detail=detail)
    return Effect(writes=[CloseWaitpoints(_ids(s), reason)])


def _ids(s: dict[str, Any]) -> tuple[str, ...]:
    return tuple(w["waitpoint_id"] for w in s["waitpoints"])


def leftover_waitpoints(ex: Execution, attempt_before: int | None) -> CloseWaitpoints | None:
    """Open waitpoints outlive neither their attempt nor the execution: the write that
    ends either closes them (stores call this as they write a changed record back)."""
    if not ex.waitpoints_open:
        return None
    if ex.lifecycle_phase == Phase.TERMINAL:
        reason = ex.terminal_outcome
    elif (ex.current_attempt_index != attempt_before
          or ex.attempt_state == AttemptState.PENDING_RETRY_ATTEMPT):
        # A failure that schedules a retry ends the attempt before the next one starts.
        reason = "attempt_ended"
    else:
        return None
    ex.waitpoints_open = 0
    return CloseWaitpoints(None, reason)


def satisfiers(ex: Execution) -> list[str]:
    """The ids of the signals that resumed the current attempt (none unless its last
    suspension closed by being satisfied)."""
    s = load_suspension(ex)
    if (s is None or s.get("close_reason") != "resumed"
            or s.get("attempt_index") != ex.current_attempt_index):
        return []
    return list(s.get("satisfiers", []))


# -- operator resume and the suspension timeout ------------------------------------------------

@dataclass(frozen=True, slots=True)
class ResumeArgs:
    trigger_type: str = "operator"
    resume_delay_ms: int = 0


@dataclass(frozen=True, slots=True)
class Resumed(Outcome):
    TAG = "Resumed"
    public_state: str


@operation("resume", ResumeArgs)
def resume(ex: Execution, a: ResumeArgs, ctx: Ctx) -> Effect:
    """An operator resumes a suspended execution, whatever its condition."""
    s = load_suspension(ex)
    if ex.lifecycle_phase != Phase.SUSPENDED or not is_open(s):
        raise ExecutionNotSuspended.of(execution_id=ex.execution_id, public_state=ex.public_state)
    assert s is not None
    s["resume_trigger"] = a.trigger_type
    effect = _resume(ex, s, ctx, "resumed", a.resume_delay_ms,
                     f"resume delay {a.resume_delay_ms}ms")
    effect.outcome = Resumed(ex.public_state)
    return effect


@dataclass(frozen=True, slots=True)
class SuspensionTimedOut(Outcome):
    TAG = "SuspensionTimedOut"
    behavior_applied: str


@operation("expire_suspension", NoArgs, missing=Missing.IGNORE)
def expire_suspension(ex: Execution, a: NoArgs, ctx: Ctx) -> Effect | None:
    """The suspension timeout: apply the suspension's ``timeout_behavior``."""
    s = load_suspension(ex)
    if (ex.lifecycle_phase != Phase.SUSPENDED or not is_open(s)
            or ex.suspension_timeout_at is None or ex.suspension_timeout_at > ctx.now):
        return None
    assert s is not None
    behavior = s.get("timeout_behavior") or "fail"
    if behavior == "escalate":
        s["reason_code"], s["timeout_at"], s["timeout_behavior"] = (
            "waiting_for_operator_review", None, None)
        store_suspension(ex, s)
        set_state(ex, ctx, Phase.SUSPENDED, Ownership.UNOWNED, Eligibility.NOT_APPLICABLE,
                  Blocking.PAUSED_BY_OPERATOR, TerminalOutcome.NONE, ex.attempt_state,
                  f"suspension escalated: timeout at {ex.suspension_timeout_at}")
        ex.suspension_timeout_at = None
        return Effect(SuspensionTimedOut("escalate"))
    if behavior == "auto_resume_with_timeout_signal":
        effect = _resume(ex, s, ctx, "timed_out_auto_resume", 0, "")
        effect.outcome = SuspensionTimedOut("auto_resume")
        return effect
    reason = f"timed_out_{behavior}"
    close_suspension(s, reason, ctx.now)
    store_suspension(ex, s)
    outcome = {"cancel": TerminalOutcome.CANCELLED,
               "expire": TerminalOutcome.EXPIRED}.get(behavior, TerminalOutcome.FAILED)
    effect = Effect(SuspensionTimedOut(behavior), [CloseWaitpoints(_ids(s), reason)])
    effect.update_attempt(ex.current_attempt_index,
                          attempt_state="ended_cancelled" if behavior == "cancel"
                          else "ended_failure", ended_at=ctx.now,
                          failure_reason=f"suspension_timeout:{behavior}")
    ex.failure_reason = f"suspension_timeout:{behavior}"
    if outcome == TerminalOutcome.CANCELLED:
        ex.cancellation_reason, ex.cancelled_by = "suspension_timeout", "system_timeout_policy"
    _terminal(ex, ctx, outcome)
    return effect


# -- waiting for children -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class WaitingChildren(Outcome):
    TAG = "WaitingChildren"
    unresolved: int


def wait_children(ex: Execution, fence: Fence, pending: bool, unresolved: int,
                  ctx: Ctx) -> Effect:
    """Release the lease until the execution's inbound dependencies resolve (``pending``:
    its edge group is undecided); nothing to wait for keeps the lease."""
    expired = _check_lease(ex, fence, ctx)
    if expired is not None:
        return expired
    if not pending:
        return Effect(AlreadySatisfied("no_pending_dependencies"))
    _clear_lease(ex)
    set_state(ex, ctx, Phase.RUNNABLE, Ownership.UNOWNED, Eligibility.BLOCKED_BY_DEPENDENCIES,
              Blocking.WAITING_FOR_CHILDREN, TerminalOutcome.NONE,
              AttemptState.ATTEMPT_INTERRUPTED, "waiting for child executions to complete")
    store_suspension(ex, None)
    effect = Effect(WaitingChildren(unresolved))
    effect.update_attempt(ex.current_attempt_index, attempt_state="suspended",
                          suspended_at=ctx.now, suspension_id=WAITING_CHILDREN)
    return effect


# -- checks of what enters ------------------------------------------------------------------------

def check_timeout(timeout_at: int | None, tree: cond.Tree, now: int) -> None:
    if cond.is_timeout_only(tree) and timeout_at is None:
        raise InvalidInput("timeout_only_without_deadline: a TimeoutOnly condition needs "
                           "timeout_at or timeout_ms")
    if timeout_at is not None and timeout_at + TIMEOUT_SKEW_MS < now:
        raise InvalidInput(f"timeout_at_in_past: timeout_at {timeout_at} is more than 10 "
                           f"minutes before now ({now})")


def binding_keys(tree: cond.Tree, given: list[str] | None) -> list[str]:
    """The waitpoint keys a suspend binds: those the condition names (``given`` may list
    them in another order, and must name them all and no other); a condition that names
    none (OperatorOnly / TimeoutOnly) binds ``given`` or one fresh key."""
    named = cond.referenced_keys(tree)
    if given is None:
        return named
    if len(set(given)) != len(given):
        raise InvalidInput("waitpoints: a key is named twice")
    if named:
        for key in named:
            if key not in given:
                raise InvalidInput(f"waitpoints: referenced_waitpoint_key_missing_binding: "
                                   f"{key!r} is in the resume condition")
        for key in given:
            if key not in named:
                raise InvalidInput(f"waitpoints: extra_binding_not_referenced_by_condition: "
                                   f"{key!r}")
    return list(given)


__all__ = [
    "REASONS",
    "REQUESTERS",
    "SIGNAL_COLUMNS",
    "TIMEOUT_BEHAVIORS",
    "WAITPOINT_COLUMNS",
    "Delivery",
    "ResumeArgs",
    "Resumed",
    "Signal",
    "SignalAnswer",
    "SignalArgs",
    "SuspendArgs",
    "SuspendResult",
    "Suspension",
    "SuspensionTimedOut",
    "WaitingChildren",
    "Waitpoint",
    "WaitpointArgs",
    "binding_keys",
    "check_timeout",
    "create_waitpoint",
    "deliver",
    "expire_suspension",
    "load_suspension",
    "replayed_suspend",
    "resume",
    "satisfiers",
    "suspend",
    "wait_children",
]
