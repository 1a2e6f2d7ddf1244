"""Admission for SQL stores (spec/admission.md): the claim pipeline's gate, budgets,
quotas, claim grants and the worker registry, each an operation generator run in one
transaction.

A claim asks ``Gate`` which claim classes it may take from and how many: the attached
budgets are read once, each attached quota is locked (``{lock}``: claims of one quota
take turns on PostgreSQL) and its room counted from the records themselves — executions
holding a slot, admissions in the window — so there is no counter to drift.
"""

from __future__ import annotations

import json
from typing import Any

from appliance.core import admission as adm
from appliance.core.errors import (
    BudgetExhausted,
    BudgetNotAttached,
    BudgetNotFound,
    InstanceIdReassigned,
    InvalidHandle,
    QuotaExceeded,
)
from appliance.core.handle import Fence
from appliance.core.operations import Ctx
from appliance.core.record import Execution
from appliance.core.transitions import _check_lease

from .statements import Op, all_, exec_, later, notify, one

#: Window entries are kept this long past their window (clocks of appliances differ).
TRIM_GRACE_MS = 5_000
_ACTIVE = ("SELECT COUNT(*) AS n FROM ff_exec WHERE quota_policy_id = ? AND "
           "quota_policy_id <> '' AND (ownership_state = 'leased' OR grant_expires_at IS NOT "
           "NULL)")
_WINDOW = ("SELECT COUNT(*) AS n, MIN(admitted_at) AS oldest FROM ff_quota_admission "
           "WHERE quota_policy_id = ? AND admitted_at > ?")


# -- the gate -----------------------------------------------------------------------------

class Gate:
    """Which classes a claim may take from now: budgets breached, quota room left."""

    __slots__ = ("budgets", "now", "quotas", "room", "why")

    def __init__(self, now: int) -> None:
        self.now = now
        self.budgets: dict[str, adm.Budget] = {}
        self.quotas: dict[str, adm.Quota] = {}
        #: quota id → (admissions left, reason when none, retry_after_ms)
        self.room: dict[str, list[Any]] = {}
        self.why: dict[str, str] = {}

    @classmethod
    def load(cls, classes: list[str], now: int) -> Op:
        gate = cls(now)
        budget_ids = sorted({b for c in classes for b in adm.split_class(c)[1]})
        quota_ids = sorted({q for c in classes if (q := adm.split_class(c)[2])})
        if budget_ids:
            gate.budgets = yield from load_budgets(budget_ids)
        if quota_ids:
            rows = yield all_(f"SELECT * FROM ff_quota WHERE quota_policy_id IN "
                              f"({', '.join('?' * len(quota_ids))}) ORDER BY "
                              f"quota_policy_id{{lock}}", *quota_ids)
            for row in rows:
                quota = _quota(row)
                gate.quotas[quota.quota_policy_id] = quota
                room, reason, retry = yield from _room(quota, now)
                gate.room[quota.quota_policy_id] = [room, reason, retry]
        return gate

    def blocked(self, cls: str) -> adm.Budget | adm.Quota | None:
        """What keeps a class from being claimed now (None: nothing)."""
        _caps, budgets, quota = adm.split_class(cls)
        for b in budgets:
            budget = self.budgets.get(b)
            if budget is not None and budget.breach() is not None:
                return budget
        if quota and quota in self.room and self.room[quota][0] <= 0:
            return self.quotas[quota]
        return None

    def limit(self, cls: str) -> int:
        quota = adm.split_class(cls)[2]
        return self.room[quota][0] if quota in self.room else 1 << 30

    def admit(self, ex: Execution) -> Op:
        """Count one admission of ``ex`` (a lease or a grant) against its quota."""
        quota = ex.quota_policy_id
        if quota in self.room:
            self.room[quota][0] -= 1
            if self.quotas[quota].max_requests_per_window > 0:
                yield later("INSERT INTO ff_quota_admission (quota_policy_id, admitted_at, "
                            "execution_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", quota,
                            self.now, ex.execution_id)

    def gated(self, classes: list[str]) -> tuple[str, ...]:
        """The wake keys of the limits holding back any of ``classes`` now."""
        keys = set()
        for cls in classes:
            found = self.blocked(cls)
            if isinstance(found, adm.Budget):
                keys.add(adm.wake_key("budget", found.budget_id))
            elif isinstance(found, adm.Quota):
                keys.add(adm.wake_key("quota", found.quota_policy_id))
        return tuple(sorted(keys))

    def retry_at(self) -> int | None:
        """When a class held back by a rate window may be claimed again."""
        times = [self.now + r[2] for r in self.room.values() if r[0] <= 0 and r[1] == "rate"]
        return min(times) if times else None

    def refuse(self, ex: Execution) -> None:
        """Raise what keeps ``ex``'s class from being admitted (a reclaim grant)."""
        found = self.blocked(ex.claim_class)
        if isinstance(found, adm.Budget):
            dim, used, hard = found.breach()  # type: ignore[misc]
            raise BudgetExhausted.of(budget_id=found.budget_id, dimension=dim, usage=used,
                                     hard_limit=hard)
        if isinstance(found, adm.Quota):
            _room, reason, retry = self.room[found.quota_policy_id]
            why = (f"rate limit {found.max_requests_per_window} per {found.window_seconds}s "
                   f"window reached; retry in {retry} ms" if reason == "rate" else
                   f"all {found.max_concurrent} concurrency slots are held")
            raise QuotaExceeded.of(quota_policy_id=found.quota_policy_id, why=why,
                                   retry_after_ms=retry)


def _room(quota: adm.Quota, now: int) -> Op:
    active = 0
    in_window, oldest = 0, None
    if quota.max_concurrent > 0:
        active = (yield one(_ACTIVE, quota.quota_policy_id))["n"]
    if quota.max_requests_per_window > 0:
        row = yield one(_WINDOW, quota.quota_policy_id, now - quota.window_ms)
        in_window, oldest = row["n"], row["oldest"]
    return quota.room(active, in_window, oldest, now)


# -- budgets ------------------------------------------------------------------------------

_BUDGET_COLUMNS = ("budget_id", "scope_type", "scope_id", "enforcement_mode", "on_hard_limit",
                   "on_soft_limit", "reset_interval_ms", "limits", "usage", "breach_count",
                   "soft_breach_count", "reset_count", "last_breach_at", "last_breach_dim",
                   "last_reset_at", "next_reset_at", "created_at", "last_updated_at")


def _budget(row: Any) -> adm.Budget:
    doc = {k: row[k] for k in _BUDGET_COLUMNS}
    doc["limits"] = adm.Budget.decode_limits(doc["limits"])
    doc["usage"] = {k: int(v) for k, v in json.loads(doc["usage"] or "{}").items()}
    return adm.Budget(**doc)


def _budget_row(b: adm.Budget) -> tuple[Any, ...]:
    values = {**{k: getattr(b, k) for k in _BUDGET_COLUMNS}, "limits": b.limits_json(),
              "usage": b.usage_json()}
    return tuple(values[k] for k in _BUDGET_COLUMNS)


def load_budgets(ids: list[str], lock: str = "") -> Op:
    rows = yield all_(f"SELECT * FROM ff_budget WHERE budget_id IN "
                      f"({', '.join('?' * len(ids))}) ORDER BY budget_id{lock}", *ids)
    return {row["budget_id"]: _budget(row) for row in rows}


def create_budget(b: adm.Budget) -> Op:
    made = yield exec_(f"INSERT INTO ff_budget ({', '.join(_BUDGET_COLUMNS)}) VALUES "
                       f"({', '.join('?' * len(_BUDGET_COLUMNS))}) ON CONFLICT DO NOTHING",
                       *_budget_row(b))
    return bool(made)


def _save_budget(b: adm.Budget) -> Op:
    sets = ", ".join(f"{k} = ?" for k in _BUDGET_COLUMNS[1:])
    yield later(f"UPDATE ff_budget SET {sets} WHERE budget_id = ?", *_budget_row(b)[1:],
                b.budget_id)


def get_budget(budget_id: str) -> Op:
    found = yield from load_budgets([budget_id])
    return found.get(budget_id)


def report_usage(budget_id: str, report: adm.UsageReport, lease: tuple[str, Fence] | None,
                 ctx: Ctx) -> Op:
    """Check-before-increment, with the dedup key and (a worker's report) its lease."""
    if lease is not None:
        row = yield one("SELECT * FROM ff_exec WHERE execution_id = ?", lease[0])
        if row is None:
            raise InvalidHandle.of(execution_id=lease[0])
        ex = Execution.from_row(row)
        expired = _check_lease(ex, lease[1], ctx)
        if expired is not None and expired.error is not None:
            raise expired.error
        if budget_id not in ex.budget_ids.split(","):
            raise BudgetNotAttached.of(execution_id=ex.execution_id, budget_id=budget_id)
    found = yield from load_budgets([budget_id], "{lock}")
    b = found.get(budget_id)
    if b is None:
        raise BudgetNotFound.of(budget_id=budget_id)
    now = report.now if report.now is not None else ctx.now
    if report.dedup_key:
        seen = yield one("SELECT expires_at FROM ff_budget_dedup WHERE budget_id = ? AND "
                         "dedup_key = ?", budget_id, report.dedup_key)
        if seen is not None and seen["expires_at"] > ctx.now:
            return adm.UsageAnswer("AlreadyApplied")
    answer = adm.report_usage(b, report, now)
    yield from _save_budget(b)
    if report.dedup_key and answer.kind != "HardBreach":
        yield later("INSERT INTO ff_budget_dedup (budget_id, dedup_key, expires_at) VALUES "
                    "(?, ?, ?) ON CONFLICT (budget_id, dedup_key) DO UPDATE SET expires_at = "
                    "excluded.expires_at", budget_id, report.dedup_key,
                    ctx.now + adm.USAGE_DEDUP_TTL_MS)
    return answer


def reset_budget(budget_id: str, ctx: Ctx) -> Op:
    found = yield from load_budgets([budget_id], "{lock}")
    b = found.get(budget_id)
    if b is None:
        raise BudgetNotFound.of(budget_id=budget_id)
    next_at = adm.reset_budget(b, ctx.now)
    yield from _save_budget(b)
    yield notify(adm.wake_key("budget", budget_id))
    return next_at


def reset_due_budgets(ctx: Ctx, limit: int) -> Op:
    """The reset scanner: budgets whose ``next_reset_at`` came, earliest first; their
    ids."""
    rows = yield all_("SELECT * FROM ff_budget WHERE next_reset_at IS NOT NULL AND "
                      "next_reset_at <= ? ORDER BY next_reset_at LIMIT ?{skip_locked}",
                      ctx.now, limit)
    for row in rows:
        b = _budget(row)
        adm.reset_budget(b, ctx.now)
        yield from _save_budget(b)
        yield notify(adm.wake_key("budget", b.budget_id))
    return [row["budget_id"] for row in rows]


# -- quotas -------------------------------------------------------------------------------

def _quota(row: Any) -> adm.Quota:
    return adm.Quota(row["quota_policy_id"], row["window_seconds"],
                     row["max_requests_per_window"], row["max_concurrent"], row["created_at"])


def create_quota(q: adm.Quota) -> Op:
    made = yield exec_("INSERT INTO ff_quota (quota_policy_id, window_seconds, "
                       "max_requests_per_window, max_concurrent, created_at) VALUES "
                       "(?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", q.quota_policy_id,
                       q.window_seconds, q.max_requests_per_window, q.max_concurrent,
                       q.created_at)
    return bool(made)


def get_quota(quota_id: str, now: int) -> Op:
    row = yield one("SELECT * FROM ff_quota WHERE quota_policy_id = ?", quota_id)
    if row is None:
        return None
    quota = _quota(row)
    active = (yield one(_ACTIVE, quota_id))["n"]
    window = yield one(_WINDOW, quota_id, now - quota.window_ms)
    in_window = window["n"] if quota.max_requests_per_window > 0 else 0
    return quota.view(active, in_window, window["oldest"], now)


def trim_quota_windows(now: int, limit: int) -> Op:
    """The quota reconciler: drop admissions a grace past their quota's window (a claim
    whose clock lags this one's still counts them; the counts themselves are read from
    the records, so nothing else can drift)."""
    gone = yield exec_("DELETE FROM ff_quota_admission WHERE (quota_policy_id, admitted_at, "
                       "execution_id) IN (SELECT a.quota_policy_id, a.admitted_at, "
                       "a.execution_id FROM ff_quota_admission a JOIN ff_quota q ON "
                       "q.quota_policy_id = a.quota_policy_id WHERE a.admitted_at <= ? - "
                       "q.window_seconds * 1000 LIMIT ?)", now - TRIM_GRACE_MS, limit)
    yield exec_("DELETE FROM ff_budget_dedup WHERE (budget_id, dedup_key) IN (SELECT "
                "budget_id, dedup_key FROM ff_budget_dedup WHERE expires_at <= ? LIMIT ?)",
                now, limit)
    return gone


# -- workers ------------------------------------------------------------------------------

def _worker(row: Any) -> adm.Worker:
    return adm.Worker(row["worker_id"], row["worker_instance_id"],
                      tuple(json.loads(row["lanes"])), tuple(json.loads(row["capabilities"])),
                      row["liveness_ttl_ms"], row["registered_at"], row["last_seen_at"])


def register_worker(seen: adm.Worker, explicit: bool) -> Op:
    row = yield one("SELECT * FROM ff_worker WHERE worker_instance_id = ?{lock}",
                    seen.worker_instance_id)
    stored = _worker(row) if row else None
    if explicit and stored is not None and stored.worker_id != seen.worker_id:
        raise InstanceIdReassigned.of(worker_instance_id=seen.worker_instance_id,
                                      registered_worker_id=stored.worker_id,
                                      worker_id=seen.worker_id)
    w, new = adm.merge_worker(stored, seen, explicit=explicit)
    yield later("INSERT INTO ff_worker (worker_instance_id, worker_id, lanes, capabilities, "
                "liveness_ttl_ms, registered_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (worker_instance_id) DO UPDATE SET worker_id = excluded.worker_id, "
                "lanes = excluded.lanes, capabilities = excluded.capabilities, "
                "liveness_ttl_ms = excluded.liveness_ttl_ms, last_seen_at = "
                "excluded.last_seen_at", w.worker_instance_id, w.worker_id,
                json.dumps(list(w.lanes)), json.dumps(list(w.capabilities)), w.liveness_ttl_ms,
                w.registered_at, w.last_seen_at)
    return new


def list_workers(lane: str | None, after: str | None, limit: int) -> Op:
    """Registry entries by instance id, each with its leases counted and its latest lease
    renewal as a sighting."""
    bound = "" if lane is not None else f" LIMIT {int(limit) + 1}"
    rows = yield all_(f"SELECT * FROM ff_worker WHERE worker_instance_id > ? ORDER BY "
                      f"worker_instance_id{bound}", after or "")
    workers = [w for w in map(_worker, rows) if lane is None or lane in w.lanes]
    page, more = workers[:limit], len(workers) > limit
    if page:
        ids = [w.worker_instance_id for w in page]
        leases = yield all_(f"SELECT current_worker_instance_id AS id, COUNT(*) AS n, "
                            f"MAX(lease_last_renewed_at) AS seen FROM ff_exec WHERE "
                            f"ownership_state = 'leased' AND current_worker_instance_id IN "
                            f"({', '.join('?' * len(ids))}) GROUP BY "
                            f"current_worker_instance_id", *ids)
        by_id = {r["id"]: r for r in leases}
        for w in page:
            r = by_id.get(w.worker_instance_id)
            if r is not None:
                w.active_leases = r["n"]
                w.last_seen_at = max(w.last_seen_at, r["seen"] or 0)
    return page, (page[-1].worker_instance_id if more else None)


def forget_workers(now: int, limit: int) -> Op:
    """Drop entries not seen for ``WORKER_FORGET_MS`` past their liveness TTL."""
    return (yield exec_("DELETE FROM ff_worker WHERE worker_instance_id IN (SELECT "
                        "worker_instance_id FROM ff_worker WHERE last_seen_at + "
                        "liveness_ttl_ms + ? < ? AND worker_instance_id NOT IN (SELECT "
                        "current_worker_instance_id FROM ff_exec WHERE ownership_state = "
                        "'leased' AND current_worker_instance_id IS NOT NULL) LIMIT ?)", adm.WORKER_FORGET_MS, now, limit))


# -- explain ------------------------------------------------------------------------------

def lane_position(ex: Execution) -> Op:
    """How many claimable executions of its lane a claim takes before ``ex``."""
    rows = yield all_("SELECT claim_class, COUNT(*) AS n FROM ff_exec WHERE lane_id = ? AND "
                      "claimable = 1 AND (priority > ? OR (priority = ? AND (created_at < ? OR "
                      "(created_at = ? AND execution_id < ?)))) GROUP BY claim_class",
                      ex.lane_id, ex.priority, ex.priority, ex.created_at, ex.created_at,
                      ex.execution_id)
    return {r["claim_class"]: r["n"] for r in rows}
