"""Admission in the service (spec/admission.md): grants, budgets, quotas, the worker
registry and ``explain``. Nothing here knows about HTTP."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from appliance.core import admission as adm
from appliance.core.contracts import ClaimArgs
from appliance.core.errors import BudgetNotFound, QuotaNotFound
from appliance.core.handle import Fence
from appliance.core.outcomes import Outcome
from appliance.core.record import Execution

if TYPE_CHECKING:
    from appliance.backend.protocol import Task

    from .facade import Service


class Admission:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.backend = service.backend
        #: instance id → (written at, worker id, lanes, capabilities) of its registry entry
        self._registered: dict[str, tuple[int, str, frozenset[str], tuple[str, ...]]] = {}

    def now(self) -> int:
        return self.service.config.clock.now_ms()

    # -- the worker registry ---------------------------------------------------------------
    async def seen(self, args: ClaimArgs) -> None:
        """A claim registers its worker, or refreshes it once a third of its TTL passed (so
        claiming stays one store call)."""
        now = self.now()
        ttl = self.service.config.worker_liveness_ttl_ms
        known = self._registered.get(args.worker_instance_id)
        if (known is not None and now - known[0] < ttl // adm.WORKER_REFRESH_FRACTION
                and known[1] == args.worker_id and args.lane_id in known[2]
                and known[3] == args.capabilities):
            return
        lanes = (known[2] if known and known[1] == args.worker_id else frozenset()) | {
            args.lane_id}
        await self.backend.register_worker(
            adm.Worker(args.worker_id, args.worker_instance_id, (args.lane_id,),
                       args.capabilities, ttl, now, now), explicit=False)
        if len(self._registered) > 100_000:
            self._registered.clear()
        self._registered[args.worker_instance_id] = (now, args.worker_id, lanes,
                                                     args.capabilities)

    async def register(self, worker: adm.Worker) -> bool:
        self._registered.pop(worker.worker_instance_id, None)
        return await self.backend.register_worker(worker, explicit=True)

    async def workers(self, lane: str | None, after: str | None,
                      limit: int) -> tuple[list[dict[str, Any]], str | None]:
        found, cursor = await self.backend.list_workers(lane, after, limit)
        now = self.now()
        return [w.view(now) for w in found], cursor

    # -- grants -------------------------------------------------------------------------------
    async def grant(self, args: ClaimArgs) -> adm.Granted | None:
        await self.seen(args)
        claim = await self.backend.claim(args)
        self.service.wake(claim.woken)
        return claim.grants[0] if claim.grants else None

    async def reclaim(self, execution_id: str, args: ClaimArgs) -> dict[str, Any]:
        await self.seen(args)
        return await self.backend.reclaim_grant(execution_id, args)

    async def redeem(self, execution_id: str, args: ClaimArgs) -> Task:
        await self.seen(args)
        task = await self.backend.redeem_grant(execution_id, args)
        [task] = await self.service.resumed([task])
        return task

    # -- budgets and quotas ---------------------------------------------------------------------
    async def create_budget(self, budget: adm.Budget) -> bool:
        return await self.backend.create_budget(budget)

    async def budget(self, budget_id: str) -> adm.Budget:
        found = await self.backend.get_budget(budget_id)
        if found is None:
            raise BudgetNotFound.of(budget_id=budget_id)
        return found

    async def report(self, budget_id: str, report: adm.UsageReport,
                     lease: tuple[str, Fence] | None) -> Outcome:
        return await self.backend.report_usage(budget_id, report, lease)

    async def reset(self, budget_id: str) -> int:
        next_at = await self.backend.reset_budget(budget_id)
        self.service.wake([adm.wake_key("budget", budget_id)])  # attached work may run again
        return next_at

    async def create_quota(self, quota: adm.Quota) -> bool:
        return await self.backend.create_quota(quota)

    async def quota(self, quota_id: str) -> dict[str, Any]:
        found = await self.backend.get_quota(quota_id)
        if found is None:
            raise QuotaNotFound.of(quota_policy_id=quota_id)
        return found

    # -- explain ----------------------------------------------------------------------------------
    async def explain(self, execution_id: str) -> dict[str, Any]:
        ex = await self.service.record(execution_id)
        reason = _state_reason(ex)
        blockers: list[dict[str, Any]] = []
        if reason is None or reason["reason"] == "lease_expired":
            blockers = await self._blockers(ex)
            if reason is None:
                reason = blockers[0] if blockers else {
                    "reason": "waiting_for_worker",
                    "message": "claimable: the next claims on its lane take it in turn",
                    "details": {}}
            if reason["reason"] in ("waiting_for_worker", "lease_expired"):
                ahead = await self._ahead(ex)
                reason["details"].update(ahead=ahead, priority=ex.priority)
                reason["message"] += (f"; {ahead} claimable execution(s) of lane "
                                      f"{ex.lane_id!r} go first")
        admission_blocked = any(b["reason"] not in ("no_live_worker", "no_capable_worker")
                                for b in blockers)
        return {"execution_id": ex.execution_id, "lane_id": ex.lane_id,
                "public_state": ex.public_state,
                "runnable": bool(ex.claimable) and not admission_blocked,
                **reason, "blockers": blockers}

    async def _ahead(self, ex: Execution) -> int:
        """Claimable executions of its lane a claim takes first: those of classes admission
        does not hold back now."""
        total = 0
        for cls, n in (await self.backend.lane_position(ex)).items():
            _caps, budgets, quota = adm.split_class(cls)
            if not await self._held_back(budgets, quota):
                total += n
        return total

    async def _held_back(self, budgets: tuple[str, ...], quota: str) -> bool:
        for budget_id in budgets:
            budget = await self.backend.get_budget(budget_id)
            if budget is not None and budget.breach() is not None:
                return True
        if quota:
            q = await self.backend.get_quota(quota)
            if q is not None and (q["retry_after_ms"] > 0 or (
                    q["max_concurrent"] and q["active"] >= q["max_concurrent"])):
                return True
        return False

    async def _blockers(self, ex: Execution) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        workers, _ = await self.backend.list_workers(ex.lane_id, None, 1000)
        now = self.now()
        live = [w for w in workers if w.view(now)["alive"]]
        required = set(ex.capability_set())
        if not live:
            found.append(_why("no_live_worker", f"no live worker claims on lane "
                              f"{ex.lane_id!r}", lane_id=ex.lane_id))
        elif required and not any(required <= set(w.capabilities) for w in live):
            closest = min((sorted(required - set(w.capabilities)) for w in live), key=len)
            found.append(_why("no_capable_worker",
                              f"no live worker on lane {ex.lane_id!r} has capabilities "
                              f"{','.join(sorted(required))}; the closest lacks "
                              f"{','.join(closest)}",
                              required_capabilities=sorted(required),
                              missing_capabilities=closest, live_workers=len(live)))
        for budget_id in filter(None, ex.budget_ids.split(",")):
            budget = await self.backend.get_budget(budget_id)
            breach = budget.breach() if budget is not None else None
            if budget is not None and breach is not None:
                dim, used, hard = breach
                found.append(_why("budget_exhausted",
                                  f"budget {budget_id}: {dim} reached its hard limit "
                                  f"({used}/{hard}); claims wait for a reset",
                                  budget_id=budget_id, dimension=dim, usage=used,
                                  hard_limit=hard, next_reset_at=budget.next_reset_at))
        if ex.quota_policy_id:
            q = await self.backend.get_quota(ex.quota_policy_id)
            if q is not None and q["max_requests_per_window"] and \
                    q["admitted_in_window"] >= q["max_requests_per_window"]:
                found.append(_why("quota_rate_limited",
                                  f"quota {ex.quota_policy_id}: {q['admitted_in_window']} of "
                                  f"{q['max_requests_per_window']} admissions used in the "
                                  f"{q['window_seconds']}s window; frees in "
                                  f"{q['retry_after_ms']} ms",
                                  quota_policy_id=ex.quota_policy_id,
                                  **{k: q[k] for k in ("admitted_in_window",
                                                       "max_requests_per_window",
                                                       "window_seconds", "retry_after_ms")}))
            elif q is not None and q["max_concurrent"] and q["active"] >= q["max_concurrent"]:
                found.append(_why("quota_concurrency_full",
                                  f"quota {ex.quota_policy_id}: all {q['max_concurrent']} "
                                  f"concurrency slots are held; one frees when an execution "
                                  f"holding it stops running", quota_policy_id=ex.quota_policy_id,
                                  active=q["active"], max_concurrent=q["max_concurrent"]))
        return found


def _why(reason: str, message: str, **details: Any) -> dict[str, Any]:
    return {"reason": reason, "message": message, "details": details}


def _state_reason(ex: Execution) -> dict[str, Any] | None:
    """What the execution's own state says keeps it from running (None: it is claimable
    as far as its record goes; admission decides)."""
    if ex.lifecycle_phase == "terminal":
        return _why("terminal", f"it ended: {ex.terminal_outcome}",
                    terminal_outcome=ex.terminal_outcome)
    if ex.grant_worker_id is not None:
        return _why("granted", f"granted to worker {ex.grant_worker_id} until "
                    f"{ex.grant_expires_at}", worker_id=ex.grant_worker_id,
                    expires_at=ex.grant_expires_at)
    if ex.lifecycle_phase == "active" and ex.ownership_state == "leased":
        return _why("running", f"running on worker {ex.current_worker_id} "
                    f"({ex.current_worker_instance_id})", worker_id=ex.current_worker_id,
                    worker_instance_id=ex.current_worker_instance_id,
                    lease_expires_at=ex.lease_expires_at)
    if ex.lifecycle_phase == "active":
        return _why("lease_expired", f"its lease was lost ({ex.ownership_state}); the next "
                    f"claim takes it as a reclaim", lease_expired_at=ex.lease_expired_at)
    if ex.lifecycle_phase == "suspended":
        s = json.loads(ex.suspension or "{}")
        return _why("suspended", "suspended, waiting for a signal"
                    + (f" (times out at {ex.suspension_timeout_at})"
                       if ex.suspension_timeout_at else ""),
                    suspension_id=s.get("suspension_id"),
                    waitpoint_ids=[w["waitpoint_id"] for w in s.get("waitpoints") or ()],
                    timeout_at=ex.suspension_timeout_at)
    if ex.eligibility_state == "not_eligible_until_time":
        return _why("delayed", f"delayed until {ex.delay_until}", delay_until=ex.delay_until)
    if ex.eligibility_state == "blocked_by_dependencies":
        return _why("waiting_for_dependencies",
                    f"waiting for its upstream in flow {ex.flow_id}: {ex.blocking_detail}",
                    flow_id=ex.flow_id, blocking_detail=ex.blocking_detail)
    if not ex.claimable:
        return _why("not_eligible", f"{ex.eligibility_state}: {ex.blocking_reason} "
                    f"{ex.blocking_detail}".strip(), eligibility_state=ex.eligibility_state,
                    blocking_reason=ex.blocking_reason, blocking_detail=ex.blocking_detail)
    return None
