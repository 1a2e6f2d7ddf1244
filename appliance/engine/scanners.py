"""Scanners: periodic, bounded batches that move executions whose time has come.

Each scanner is its own task. A failing batch is logged and counted and the
loop goes on. An execution the scanner fails on three times in a row (for a
reason other than the store being unreachable) is logged with its id and
quarantined: ended as failed with the reason, so no stored value can leave it
stuck; if even that fails it is passed over for ten cycles so it cannot starve
the rest. A full batch is followed at once by the next one, so a backlog
drains without waiting an interval per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from appliance.backend import Backend, ScanResult

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


DEFAULT_BATCH = {"retention_trimmer": 20}


class Engine:
    """Owns the scanner specs and runs them; ``wake(lane)`` hears about new work."""

    def __init__(self, backend: Backend, intervals_s: dict[str, float],
                 wake: Callable[[str], None]) -> None:
        self.backend = backend
        self.wake = wake
        self.specs = [ScannerSpec(name, interval, DEFAULT_BATCH.get(name, 50))
                      for name, interval in intervals_s.items() if interval > 0]
        self.stats = {spec.name: ScannerStats() for spec in self.specs}
        self._trackers = {spec.name: FailureTracker() for spec in self.specs}

    async def run_once(self, name: str, batch: int = 50) -> ScanResult:
        """One batch of one scanner (what each loop iteration does)."""
        tracker = self._trackers.setdefault(name, FailureTracker())
        result = await self.backend.run_scanner(name, batch, tracker.skipped())
        for eid, exc in tracker.record(result).items():
            await self._quarantine(name, eid, exc, tracker)
        for lane in result.lanes_woken:
            self.wake(lane)
        return result

    async def _quarantine(self, name: str, eid: str, exc: Exception,
                          tracker: FailureTracker) -> None:
        reason = (f"scanner_error: {name} failed {FAILURES_BEFORE_SKIP} times: "
                  f"{type(exc).__name__}: {exc}")[:1000]
        stats = self.stats.setdefault(name, ScannerStats())
        try:
            changed = await self.backend.quarantine(eid, reason)
        except Exception as again:
            tracker.skip(eid)
            log.error("scanner %s failed %d times on execution %s (%r) and could not end it "
                      "(%r); passing it over for %d cycles", name, FAILURES_BEFORE_SKIP, eid,
                      exc, again, SKIP_CYCLES)
            return
        stats.quarantined += int(changed)
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
