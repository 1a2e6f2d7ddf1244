"""Scanners: periodic, bounded batches that move executions whose time has come.

Each scanner of ``core.scanners.SCANNERS`` is its own task: it asks the store
which executions are due, applies the scanner's operation to them (one
``apply`` call, so a store can group them) and wakes the lanes that became
claimable. A failing batch is logged and counted and the loop goes on. An
execution the scanner fails on three times in a row (for a reason other than
the store being unreachable) is logged with its id and quarantined: ended as
failed with the reason, so no stored value can leave it stuck; if even that
fails it is passed over for ten cycles so it cannot starve the rest. A full
batch is followed at once by the next one, so a backlog drains without waiting
an interval per batch.

The store scanners (``core.scanners.STORE_SCANNERS``) are safety nets over flows that
are one backend call per batch: the dependency reconciler resolves edges whose
upstream ended without resolving them, the flow cancel reconciler finishes the
member cancels a flow cancel still owes (an appliance killed mid-dispatch).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import trio

from appliance.backend import Backend
from appliance.core.admission import wake_key
from appliance.core.operations import Applied, Mutation
from appliance.core.scanners import BY_NAME, PERIODIC, Scanner
from appliance.core.transitions import QuarantineArgs, quarantine

log = logging.getLogger("flowfabric.engine")

FAILURES_BEFORE_SKIP = 3
OUTAGE_LOG_EVERY_S = 30.0
SKIP_CYCLES = 10


@dataclass(frozen=True, slots=True)
class ScannerSpec:
    name: str
    interval_s: float
    batch: int = 50


@dataclass(slots=True)
class ScanResult:
    """One batch: how many executions moved, which failed and why, the lanes woken."""

    processed: int = 0
    failed: dict[str, Exception] = field(default_factory=dict)
    #: One entry per execution made claimable (a lane may repeat).
    lanes_woken: list[str] = field(default_factory=list)


@dataclass(slots=True)
class FailureTracker:
    cycle: int = 0
    streak: dict[str, int] = field(default_factory=dict)
    skip_until: dict[str, int] = field(default_factory=dict)

    def skipped(self) -> frozenset[str]:
        return frozenset(eid for eid, until in self.skip_until.items() if until > self.cycle)

    def record(self, result: ScanResult) -> dict[str, Exception]:
        """Count this batch's failures; the executions that just failed too often."""
        self.cycle += 1
        for eid in list(self.skip_until):
            if self.skip_until[eid] <= self.cycle:
                del self.skip_until[eid]
        hopeless = {}
        for eid, exc in result.failed.items():
            if getattr(exc, "retryable", False):
                continue  # the store is unreachable: no fault of this execution's
            self.streak[eid] = self.streak.get(eid, 0) + 1
            if self.streak[eid] >= FAILURES_BEFORE_SKIP:
                del self.streak[eid]
                hopeless[eid] = exc
        return hopeless

    def skip(self, eid: str) -> None:
        self.skip_until[eid] = self.cycle + SKIP_CYCLES


@dataclass(slots=True)
class ScannerStats:
    cycles: int = 0
    processed: int = 0
    errors: int = 0
    quarantined: int = 0
    outage_logged_at: float = float("-inf")


class Engine:
    """Owns the scanner specs and runs them; ``wake(lanes)`` (the service's) hears about
    the work they made claimable."""

    def __init__(self, backend: Backend, intervals_s: dict[str, float],
                 wake: Callable[[Iterable[str]], None], now_ms: Callable[[], int]) -> None:
        self.backend = backend
        self.wake = wake
        self.now_ms = now_ms
        can = backend.capabilities()  # a store scan runs only if the store has its feature
        self.specs = [ScannerSpec(name, interval, PERIODIC[name].batch)
                      for name, interval in intervals_s.items()
                      if interval > 0 and STORE_SCAN_NEEDS.get(name, "apply") in can | {"apply"}]
        self.stats = {spec.name: ScannerStats() for spec in self.specs}
        self._trackers = {spec.name: FailureTracker() for spec in self.specs}

    async def run_once(self, name: str, batch: int | None = None) -> ScanResult:
        """One batch of one scanner (what each loop iteration does)."""
        if name in STORE_SCANS:
            result = await STORE_SCANS[name](self.backend, self.now_ms(),
                                             batch or PERIODIC[name].batch)
            self.wake(result.lanes_woken)
            return result
        scanner = BY_NAME[name]
        tracker = self._trackers.setdefault(name, FailureTracker())
        result = await self.scan(scanner, batch or scanner.batch, tracker.skipped())
        self.wake(result.lanes_woken)
        for eid, exc in tracker.record(result).items():
            await self._quarantine(name, eid, exc, tracker)
        return result

    async def scan(self, scanner: Scanner, limit: int, skip: frozenset[str]) -> ScanResult:
        now = self.now_ms()
        ids = [eid for eid in await self.backend.due(scanner, now, limit + len(skip))
               if eid not in skip][:limit]
        result = ScanResult()
        applied = await self.backend.apply([Mutation(scanner.op, eid, scanner.args())
                                            for eid in ids]) if ids else []
        for eid, outcome in zip(ids, applied, strict=True):
            _count(result, eid, outcome)
        if scanner.name == "retention_trimmer":
            await self.backend.sweep(now, limit)
        return result

    async def _quarantine(self, name: str, eid: str, exc: Exception,
                          tracker: FailureTracker) -> None:
        reason = (f"scanner_error: {name} failed {FAILURES_BEFORE_SKIP} times: "
                  f"{type(exc).__name__}: {exc}")[:1000]
        stats = self.stats.setdefault(name, ScannerStats())
        try:
            [done] = await self.backend.apply([Mutation(quarantine, eid,
                                                        QuarantineArgs(reason))])
            changed = done.unwrap() is not None
        except Exception as again:
            tracker.skip(eid)
            log.error("scanner %s failed %d times on execution %s (%r) and could not end it "
                      "(%r); passing it over for %d cycles", name, FAILURES_BEFORE_SKIP, eid,
                      exc, again, SKIP_CYCLES)
            return
        stats.quarantined += int(changed)
        self.wake(done.woken)
        log.error("scanner %s failed %d times on execution %s (%r); %s", name,
                  FAILURES_BEFORE_SKIP, eid, exc,
                  "ended it as failed (failure_category internal)" if changed
                  else "it is already terminal")
        if not changed:
            tracker.skip(eid)

    async def serve(self) -> None:
        async with trio.open_nursery() as nursery:
            for spec in self.specs:
                nursery.start_soon(self.serve_scanner, spec, name=f"scanner:{spec.name}")

    async def serve_scanner(self, spec: ScannerSpec) -> None:
        stats = self.stats.setdefault(spec.name, ScannerStats())
        while True:
            full = False
            try:
                result = await self.run_once(spec.name, spec.batch)
            except Exception as exc:
                stats.errors += 1
                if getattr(exc, "retryable", False):  # the store is down: say so, briefly
                    if trio.current_time() - stats.outage_logged_at >= OUTAGE_LOG_EVERY_S:
                        stats.outage_logged_at = trio.current_time()
                        log.warning("scanner %s is waiting for the store: %s", spec.name, exc)
                else:
                    log.exception("scanner %s failed a cycle; retrying in %.1fs", spec.name,
                                  spec.interval_s)
            else:
                stats.cycles += 1
                stats.processed += result.processed
                stats.errors += len(result.failed)
                full = result.processed + len(result.failed) >= spec.batch
                if result.processed:
                    log.debug("scanner %s processed %d", spec.name, result.processed)
            await trio.sleep(0 if full else spec.interval_s)


async def _reconcile_dependencies(backend: Backend, now: int, limit: int) -> ScanResult:
    resolved, woken = await backend.reconcile_dependencies(limit)
    return ScanResult(processed=resolved, lanes_woken=list(woken))


async def _reconcile_flow_cancels(backend: Backend, now: int, limit: int) -> ScanResult:
    result = ScanResult()
    for flow_id, (reason, ids) in (await backend.owed_flow_cancels(now, limit)).items():
        failed = await backend.cancel_flow_members(flow_id, ids, reason)
        result.processed += len(ids) - len(failed)
        for eid in failed:
            result.failed[eid] = RuntimeError(f"cancel owed by flow {flow_id} failed")
        if failed:
            log.warning("flow %s: %d member cancels failed; retrying next cycle", flow_id,
                        len(failed))
    return result


async def _expire_pending_waitpoints(backend: Backend, now: int, limit: int) -> ScanResult:
    return ScanResult(processed=await backend.expire_pending_waitpoints(now, limit))


async def _reset_budgets(backend: Backend, now: int, limit: int) -> ScanResult:
    reset = await backend.reset_due_budgets(now, limit)
    return ScanResult(processed=len(reset),
                      lanes_woken=[wake_key("budget", b) for b in reset])


async def _reconcile_quotas(backend: Backend, now: int, limit: int) -> ScanResult:
    return ScanResult(processed=await backend.reconcile_quotas(now, limit))


STORE_SCANS: dict[str, Callable[[Backend, int, int], Awaitable[ScanResult]]] = {
    "dependency_reconciler": _reconcile_dependencies,
    "flow_cancel_reconciler": _reconcile_flow_cancels,
    "pending_waitpoint_expiry": _expire_pending_waitpoints,
    "budget_reset": _reset_budgets,
    "quota_reconciler": _reconcile_quotas,
}
#: The capability each store scan needs.
STORE_SCAN_NEEDS = {"dependency_reconciler": "create_flow",
                    "flow_cancel_reconciler": "create_flow",
                    "pending_waitpoint_expiry": "suspend",
                    "budget_reset": "create_budget",
                    "quota_reconciler": "create_budget"}


def _count(result: ScanResult, eid: str, applied: Applied) -> None:
    if applied.error is not None:
        result.failed[eid] = applied.error
    elif applied.outcome is not None:
        result.processed += 1
    result.lanes_woken.extend(applied.woken)
