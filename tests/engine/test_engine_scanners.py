"""The scanner loop: bounded batches, failures counted not fatal, repeat offenders
quarantined (or skipped when even that fails)."""

import logging

import trio
import trio.testing

from appliance.backend import BackendBase, ScanResult
from appliance.core.errors import StoreUnavailable
from appliance.engine import Engine, FailureTracker, ScannerSpec


class ScriptedBackend(BackendBase):
    """Answers run_scanner from a script of results or exceptions."""

    name = "scripted"

    def __init__(self, script, quarantine=None):
        self.script = list(script)
        self.calls = []
        self.quarantined = []
        self._quarantine = quarantine

    async def quarantine(self, execution_id, reason):
        self.quarantined.append((execution_id, reason))
        if isinstance(self._quarantine, Exception):
            raise self._quarantine
        return bool(self._quarantine)

    async def run_scanner(self, scanner, limit, skip):
        self.calls.append((scanner, limit, skip))
        step = self.script.pop(0) if self.script else ScanResult()
        if isinstance(step, Exception):
            raise step
        return step


def test_failure_tracker_names_an_execution_after_three_failures_and_can_skip_it():
    tracker = FailureTracker()
    for _ in range(2):
        assert tracker.record(ScanResult(failed={"e1": RuntimeError("boom")})) == {}
    assert list(tracker.record(ScanResult(failed={"e1": RuntimeError("boom")}))) == ["e1"]
    tracker.skip("e1")
    assert "e1" in tracker.skipped()
    for _ in range(9):
        tracker.record(ScanResult())
    assert "e1" in tracker.skipped()
    tracker.record(ScanResult())
    assert "e1" not in tracker.skipped()


def test_failure_tracker_resets_the_streak_is_per_id():
    tracker = FailureTracker()
    tracker.record(ScanResult(failed={"a": RuntimeError()}))
    tracker.record(ScanResult(failed={"b": RuntimeError()}))
    tracker.record(ScanResult(failed={"a": RuntimeError()}))
    assert tracker.skipped() == frozenset()


def test_failure_tracker_does_not_count_a_store_outage_against_an_execution():
    tracker = FailureTracker()
    for _ in range(5):
        assert tracker.record(ScanResult(failed={"e1": StoreUnavailable("down")})) == {}


async def test_an_execution_failing_three_times_is_quarantined_and_logged(caplog):
    backend = ScriptedBackend([ScanResult(failed={"bad": OverflowError("math")})] * 3,
                              quarantine=True)
    engine = Engine(backend, {"attempt_timeout": 1.0}, lambda lane: None)
    with caplog.at_level(logging.ERROR, logger="flowfabric.engine"):
        for _ in range(3):
            await engine.run_once("attempt_timeout")
    assert [eid for eid, _ in backend.quarantined] == ["bad"]
    assert "OverflowError" in backend.quarantined[0][1] and "attempt_timeout" in \
        backend.quarantined[0][1]
    assert "bad" in caplog.text and "ended it as failed" in caplog.text
    assert engine.stats["attempt_timeout"].quarantined == 1


async def test_run_once_passes_skipped_ids_and_wakes_lanes():
    woken = []
    backend = ScriptedBackend([ScanResult(failed={"bad": RuntimeError()})] * 3
                              + [ScanResult(processed=1, lanes_woken={"gpu"})],
                              quarantine=RuntimeError("cannot either"))
    engine = Engine(backend, {"lease_expiry": 1.0}, woken.append)
    for _ in range(4):
        await engine.run_once("lease_expiry")
    assert backend.calls[-1][2] == frozenset({"bad"})
    assert woken == ["gpu"]


async def test_a_failing_cycle_is_logged_and_the_loop_goes_on(autojump_clock, caplog):
    backend = ScriptedBackend([RuntimeError("store hiccup"), ScanResult(processed=2)])
    engine = Engine(backend, {"delayed_promoter": 1.0}, lambda lane: None)
    spec = ScannerSpec("delayed_promoter", 1.0)
    with caplog.at_level(logging.ERROR, logger="flowfabric.engine"):
        with trio.move_on_after(2.5):
            await engine.serve_scanner(spec)
    stats = engine.stats["delayed_promoter"]
    assert stats.errors == 1 and stats.processed == 2
    assert "store hiccup" in caplog.text
    assert len(backend.calls) == 3


async def test_a_full_batch_is_followed_at_once_by_the_next(autojump_clock):
    backend = ScriptedBackend([ScanResult(processed=50), ScanResult(processed=50),
                               ScanResult(processed=3)])
    engine = Engine(backend, {"lease_expiry": 10.0}, lambda lane: None)
    start = trio.current_time()
    with trio.move_on_after(5):
        await engine.serve_scanner(ScannerSpec("lease_expiry", 10.0))
    assert len(backend.calls) == 3
    assert trio.current_time() - start == 5


def test_zero_interval_disables_a_scanner():
    engine = Engine(ScriptedBackend([]), {"lease_expiry": 0, "delayed_promoter": 0.75},
                    lambda lane: None)
    assert [s.name for s in engine.specs] == ["delayed_promoter"]


async def test_a_store_outage_is_logged_once_not_every_cycle(autojump_clock, caplog):
    backend = ScriptedBackend([StoreUnavailable("the store is down")] * 20)
    engine = Engine(backend, {"delayed_promoter": 0.5}, lambda lane: None)
    with caplog.at_level(logging.WARNING, logger="flowfabric.engine"):
        with trio.move_on_after(9.9):
            await engine.serve_scanner(ScannerSpec("delayed_promoter", 0.5))
    lines = [r for r in caplog.records if "waiting for the store" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert engine.stats["delayed_promoter"].errors == 20
