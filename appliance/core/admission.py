"""Admission (spec/admission.md): budgets, quotas, claim classes and grants, declared once.

The records (``Budget``, ``Quota``, ``Worker``) and the pure rules over them — a usage
report, a reset, how much room a quota has, which classes a worker may take — are here;
the stores keep the records and call these rules inside their own atomic step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .effects import Effect
from .errors import (
    CapabilityMismatch,
    ClaimGrantExpired,
    InvalidClaimGrant,
    LaneMismatch,
)
from .operations import Ctx, Missing, operation
from .outcomes import Outcome
from .record import CLASS_SEP, Execution
from .state import RECLAIMABLE, is_claimable
from .transitions import reclaim_cap_reached

#: A dedup key of a usage report is remembered this long.
USAGE_DEDUP_TTL_MS = 24 * 3600 * 1000
MAX_DIMENSIONS = 64
#: A worker registry entry is written again after a third of its liveness TTL.
WORKER_REFRESH_FRACTION = 3
#: A worker not seen for this long after its liveness TTL is dropped from the registry.
WORKER_FORGET_MS = 3600 * 1000


# -- claim classes ----------------------------------------------------------------------

def split_class(cls: str) -> tuple[str, tuple[str, ...], str]:
    """(required capabilities CSV, budget ids, quota id) of a claim class."""
    if CLASS_SEP not in cls:
        return cls, (), ""
    required, budgets, quota = cls.split(CLASS_SEP)
    return required, tuple(b for b in budgets.split(",") if b), quota


def runs(required: str, worker_caps: frozenset[str] | set[str]) -> bool:
    return not required or worker_caps.issuperset(c for c in required.split(",") if c)


def wake_key(kind: str, ident: str) -> str:
    """A wake key: what waiters wait on besides a lane — claims held back by budget or
    quota ``ident``, tails of execution ``ident``'s streams (kind ``stream``). A lane is
    printable ASCII, so this cannot be one."""
    return f"\x1f{kind}:{ident}"


# -- budgets ----------------------------------------------------------------------------

@dataclass(slots=True)
class Budget:
    budget_id: str
    scope_type: str = ""
    scope_id: str = ""
    enforcement_mode: str = "strict"
    on_hard_limit: str = "block"
    on_soft_limit: str = "warn"
    reset_interval_ms: int = 0
    #: dim → (hard, soft); 0 is unlimited
    limits: dict[str, tuple[int, int]] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)
    breach_count: int = 0
    soft_breach_count: int = 0
    reset_count: int = 0
    last_breach_at: int | None = None
    last_breach_dim: str | None = None
    last_reset_at: int | None = None
    next_reset_at: int | None = None
    created_at: int = 0
    last_updated_at: int = 0

    def breach(self) -> tuple[str, int, int] | None:
        """The first dimension that reached its hard limit: (dim, usage, hard)."""
        for dim, (hard, _soft) in sorted(self.limits.items()):
            used = self.usage.get(dim, 0)
            if hard > 0 and used >= hard:
                return dim, used, hard
        return None

    def status(self) -> dict[str, Any]:
        """``GET /v1/budgets/{id}`` (timestamps as decimal strings, as the original's)."""
        def ts(v: int | None) -> str | None:
            return None if v is None else str(v)
        return {
            "budget_id": self.budget_id, "scope_type": self.scope_type,
            "scope_id": self.scope_id, "enforcement_mode": self.enforcement_mode,
            "on_hard_limit": self.on_hard_limit, "on_soft_limit": self.on_soft_limit,
            "reset_interval_ms": self.reset_interval_ms,
            "usage": {d: self.usage.get(d, 0) for d in sorted({*self.limits, *self.usage})},
            "hard_limits": {d: h for d, (h, _s) in sorted(self.limits.items())},
            "soft_limits": {d: s for d, (_h, s) in sorted(self.limits.items())},
            "breached": self.breach() is not None,
            "breach_count": self.breach_count, "soft_breach_count": self.soft_breach_count,
            "reset_count": self.reset_count, "last_breach_at": ts(self.last_breach_at),
            "last_breach_dim": self.last_breach_dim, "next_reset_at": ts(self.next_reset_at),
            "created_at": ts(self.created_at),
        }

    # stored form: the scalar columns plus two JSON documents
    def limits_json(self) -> str:
        return json.dumps({d: list(v) for d, v in self.limits.items()}, sort_keys=True)

    def usage_json(self) -> str:
        return json.dumps(self.usage, sort_keys=True)

    @staticmethod
    def decode_limits(raw: str) -> dict[str, tuple[int, int]]:
        return {d: (int(v[0]), int(v[1])) for d, v in json.loads(raw or "{}").items()}


@dataclass(frozen=True, slots=True)
class UsageReport:
    dimensions: tuple[tuple[str, int], ...]
    dedup_key: str | None = None
    now: int | None = None


@dataclass(frozen=True, slots=True)
class UsageAnswer(Outcome):
    """``"Ok"`` / ``"AlreadyApplied"`` or a breach with its numbers."""

    kind: str
    dimension: str | None = None
    current_usage: int | None = None
    limit: int | None = None

    def wire(self) -> Any:  # type: ignore[override]
        if self.kind in ("Ok", "AlreadyApplied"):
            return self.kind
        key = "soft_limit" if self.kind == "SoftBreach" else "hard_limit"
        return {self.kind: {"dimension": self.dimension, "current_usage": self.current_usage,
                            key: self.limit}}


def report_usage(b: Budget, report: UsageReport, now: int) -> UsageAnswer:
    """Check every dimension, then increment all or none (spec/admission.md § Budgets).
    The caller has already answered ``AlreadyApplied`` for a known dedup key and stamps
    the key only when the answer is not a hard breach."""
    b.last_updated_at = now
    for dim, delta in report.dimensions:
        hard = b.limits.get(dim, (0, 0))[0]
        current = b.usage.get(dim, 0)
        if hard > 0 and current + delta > hard:
            b.breach_count += 1
            b.last_breach_at, b.last_breach_dim = now, dim
            return UsageAnswer("HardBreach", dim, current, hard)
    soft_breach: UsageAnswer | None = None
    for dim, delta in report.dimensions:
        b.usage[dim] = b.usage.get(dim, 0) + delta
        soft = b.limits.get(dim, (0, 0))[1]
        if soft_breach is None and soft > 0 and b.usage[dim] > soft:
            soft_breach = UsageAnswer("SoftBreach", dim, b.usage[dim], soft)
    if soft_breach is not None:
        b.soft_breach_count += 1
        return soft_breach
    return UsageAnswer("Ok")


def reset_budget(b: Budget, now: int) -> int:
    """Zero the usage; the next reset time (0: none)."""
    b.usage = {d: 0 for d in b.usage}
    b.reset_count += 1
    b.last_reset_at = b.last_updated_at = now
    b.last_breach_at = b.last_breach_dim = None
    b.next_reset_at = now + b.reset_interval_ms if b.reset_interval_ms > 0 else None
    return b.next_reset_at or 0


# -- quotas -----------------------------------------------------------------------------

@dataclass(slots=True)
class Quota:
    quota_policy_id: str
    window_seconds: int = 0
    max_requests_per_window: int = 0
    max_concurrent: int = 0
    created_at: int = 0

    @property
    def window_ms(self) -> int:
        return self.window_seconds * 1000

    def room(self, active: int, in_window: int, oldest: int | None, now: int
             ) -> tuple[int, str, int]:
        """How many more may be admitted now, and if none why: (room, reason,
        retry_after_ms); reason is ``rate`` or ``concurrency``."""
        room = 1 << 62
        if self.max_requests_per_window > 0:
            room = self.max_requests_per_window - in_window
            if room <= 0:
                wait = (oldest or now) + self.window_ms - now
                return 0, "rate", max(wait, 1)
        if self.max_concurrent > 0:
            free = self.max_concurrent - active
            if free <= 0:
                return 0, "concurrency", 0
            room = min(room, free)
        return room, "", 0

    def view(self, active: int, in_window: int, oldest: int | None, now: int) -> dict[str, Any]:
        """``GET /v1/quotas/{id}``."""
        _room, reason, retry = self.room(active, in_window, oldest, now)
        return {"quota_policy_id": self.quota_policy_id, "window_seconds": self.window_seconds,
                "max_requests_per_window": self.max_requests_per_window,
                "max_concurrent": self.max_concurrent, "active": active,
                "admitted_in_window": in_window,
                "retry_after_ms": retry if reason == "rate" else 0,
                "created_at": str(self.created_at)}


def holds_slot(ex: Execution) -> bool:
    """Whether the execution holds a slot of its quota: leased, or granted."""
    return bool(ex.quota_policy_id) and (ex.ownership_state == "leased"
                                         or ex.grant_expires_at is not None)


# -- grants -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Granted(Outcome):
    """A claim grant (``POST /v1/workers/{id}/claim``), shaped as the original's."""

    execution_id: str
    partition_key: str
    grant_key: str
    expires_at_ms: int


def grant_of(ex: Execution) -> Granted:
    tag = ex.execution_id[:ex.execution_id.index("}") + 1]
    return Granted(ex.execution_id, tag, f"ff:exec:{tag}:{ex.execution_id}:claim_grant",
                   ex.grant_expires_at or 0)


def grant(ex: Execution, worker_id: str, ttl_ms: int, ctx: Ctx) -> Granted:
    """Reserve a claimable execution for ``worker_id`` until now + ttl: no one else may
    claim it meanwhile (its state vector is unchanged; a state change voids it)."""
    ex.claimable = 0
    ex.grant_worker_id, ex.grant_expires_at = worker_id, ctx.now + ttl_ms
    ex.last_mutation_at = ctx.now
    return grant_of(ex)


def check_grant(ex: Execution, worker_id: str, ctx: Ctx) -> None:
    """Redeeming: the grant must be this worker's and live; it becomes claimable for the
    claim rule that follows (which clears the grant)."""
    if ex.grant_worker_id is None or ex.grant_worker_id != worker_id:
        raise InvalidClaimGrant.of(execution_id=ex.execution_id, worker_id=worker_id)
    if ex.grant_expires_at is not None and ex.grant_expires_at < ctx.now:
        raise ClaimGrantExpired.of(execution_id=ex.execution_id, expires_at=ex.grant_expires_at)
    ex.claimable = int(is_claimable(ex.lifecycle_phase, ex.ownership_state,
                                    ex.eligibility_state))
    ex.grant_worker_id = ex.grant_expires_at = None


@dataclass(frozen=True, slots=True)
class GrantExpired(Outcome):
    TAG = "GrantExpired"
    execution_id: str


@dataclass(frozen=True, slots=True)
class ExpireGrantArgs:
    pass


@operation("expire_grant", ExpireGrantArgs, missing=Missing.IGNORE)
def expire_grant(ex: Execution, a: ExpireGrantArgs, ctx: Ctx) -> Effect | None:
    """An unredeemed grant ran out: the execution is claimable again."""
    if ex.grant_expires_at is None or ex.grant_expires_at > ctx.now:
        return None
    ex.grant_worker_id = ex.grant_expires_at = None
    ex.claimable = int(is_claimable(ex.lifecycle_phase, ex.ownership_state,
                                    ex.eligibility_state))
    ex.last_mutation_at = ctx.now
    return Effect(GrantExpired(ex.execution_id))


def reclaim_refusal(ex: Execution, args: Any) -> dict[str, Any] | None:
    """Why ``ex`` cannot be granted to this worker as a reclaim: a status answer, a typed
    error raised, or None (admission still to be checked)."""
    if args.lane_id != ex.lane_id:
        raise LaneMismatch(f"lane_id: execution {ex.execution_id} is on lane "
                           f"{ex.lane_id!r}, not {args.lane_id!r}")
    if (ex.lifecycle_phase != "active" or ex.ownership_state not in RECLAIMABLE
            or not ex.claimable):
        detail = ("it is granted to another worker" if ex.grant_worker_id else
                  f"it is {ex.public_state} ({ex.lifecycle_phase}/{ex.ownership_state}); only "
                  f"an execution whose lease expired or was revoked can be reclaimed")
        return {"status": "not_reclaimable", "execution_id": ex.execution_id,
                "detail": detail}
    if reclaim_cap_reached(ex):
        return {"status": "reclaim_cap_exceeded", "execution_id": ex.execution_id,
                "reclaim_count": ex.lease_reclaim_count}
    missing = sorted(set(ex.capability_set()) - set(args.capabilities))
    if missing:
        raise CapabilityMismatch.of(missing=",".join(missing), execution_id=ex.execution_id)
    return None


# -- workers ----------------------------------------------------------------------------

@dataclass(slots=True)
class Worker:
    worker_id: str
    worker_instance_id: str
    lanes: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    liveness_ttl_ms: int = 30_000
    registered_at: int = 0
    last_seen_at: int = 0
    active_leases: int = 0

    def view(self, now: int) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "worker_instance_id": self.worker_instance_id,
                "lanes": list(self.lanes), "capabilities": list(self.capabilities),
                "registered_at": self.registered_at, "last_seen_at": self.last_seen_at,
                "liveness_ttl_ms": self.liveness_ttl_ms,
                "alive": self.last_seen_at + self.liveness_ttl_ms >= now,
                "active_leases": self.active_leases}


def merge_worker(stored: Worker | None, seen: Worker, *, explicit: bool) -> tuple[Worker, bool]:
    """The entry to store after ``seen`` (a claim, or an explicit registration), and
    whether it is new. A claim adds its lane; a registration states the lanes."""
    if stored is None:
        return seen, True
    if explicit:
        return Worker(seen.worker_id, seen.worker_instance_id, seen.lanes, seen.capabilities,
                      seen.liveness_ttl_ms, stored.registered_at, seen.last_seen_at), False
    lanes = tuple(sorted({*stored.lanes, *seen.lanes}))  # a claim adds its lane, keeps the TTL
    return Worker(seen.worker_id, seen.worker_instance_id, lanes, seen.capabilities,
                  stored.liveness_ttl_ms, stored.registered_at, seen.last_seen_at), False
