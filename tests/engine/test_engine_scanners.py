"""The scanner loop: bounded batches, failures counted not fatal, repeat offenders
quarantined (or skipped when even that fails), wake-ups from what was applied."""

import logging

import trio
import trio.testing

from appliance.backend import Applied, BackendBase
from appliance.core.errors import StoreUnavailable
from appliance.core.outcomes import Promoted, TerminalFailed
from appliance.engine import Engine, FailureTracker, ScannerSpec, ScanResult


class ScriptedBackend(BackendBase):
    """Answers ``due`` from a script of id lists (or exceptions); ``apply`` answers each
    id from ``results`` (an exception, or lanes it made claimable)."""

    name = "scripted"

    def __init__(self, script, results=None, quarantine=None):
        self.script = list(script)
        self.results = results or {}
        self.due_calls = []
        self.quarantined = []
        self._quarantine = quarantine

    async def due(self, scanner, now, limit):
        self.due_calls.append((scanner.name, limit))
        step = self.script.pop(0) if self.script else []
        if isinstance(step, Exception):
            raise step
        return step

    async def apply(self, mutations):
        out = []
        for m in mutations:
            if m.op.name == "quarantine":
                self.quarantined.append((m.execution_id, m.args.reason))
                if isinstance(self._quarantine, Exception):
                    raise self._quarantine
                out.append(Applied(TerminalFailed(m.execution_id, "failed")
                                   if self._quarantine else None))
                continue
            result = self.results.get(m.execution_id, ())
            if isinstance(result, Exception):
                out.append(Applied(error=result))
            else:
                out.append(Applied(Promoted(m.execution_id), woken=tuple(result)))
        return out


def engine_for(backend, intervals, woken=None):
    return Engine(backend, intervals, (woken if woken is not None else []).extend,
                  lambda: 1_700_000_000_000)


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
    backend = ScriptedBackend([["bad"]] * 3, {"bad": OverflowError("math")}, quarantine=True)
    engine = engine_for(backend, {"attempt_timeout": 1.0})
    with caplog.at_level(logging.ERROR, logger="flowfabric.engine"):
        for _ in range(3):
            await engine.run_once("attempt_timeout")
    assert [eid for eid, _ in backend.quarantined] == ["bad"]
    assert "OverflowError" in backend.quarantined[0][1] and "attempt_timeout" in \
        backend.quarantined[0][1]
    assert "bad" in caplog.text and "ended it as failed" in caplog.text
    assert engine.stats["attempt_timeout"].quarantined == 1


async def test_an_execution_that_cannot_be_quarantined_is_skipped_and_lanes_are_woken():
    woken = []
    backend = ScriptedBackend([["bad"]] * 3 + [["bad", "ok"]],
                              {"bad": RuntimeError(), "ok": ["gpu"]},
                              quarantine=RuntimeError("cannot either"))
    engine = engine_for(backend, {"lease_expiry": 1.0}, woken)
    for _ in range(4):
        await engine.run_once("lease_expiry")
    assert backend.due_calls[-1] == ("lease_expiry", 51)  # one more, for the skipped id
    assert woken == ["gpu"]


async def test_every_execution_made_claimable_wakes_its_own_waiter():
    woken = []
    backend = ScriptedBackend([["a", "b", "c"]], {"a": ["q"], "b": ["q"], "c": ["r"]})
    await engine_for(backend, {"delayed_promoter": 1.0}, woken).run_once("delayed_promoter")
    assert sorted(woken) == ["q", "q", "r"]


async def test_a_failing_cycle_is_logged_and_the_loop_goes_on(autojump_clock, caplog):
    backend = ScriptedBackend([RuntimeError("store hiccup"), ["a", "b"]])
    engine = engine_for(backend, {"delayed_promoter": 1.0})
    spec = ScannerSpec("delayed_promoter", 1.0)
    with caplog.at_level(logging.ERROR, logger="flowfabric.engine"):
        with trio.move_on_after(2.5):
            await engine.serve_scanner(spec)
    stats = engine.stats["delayed_promoter"]
    assert stats.errors == 1 and stats.processed == 2
    assert "store hiccup" in caplog.text
    assert len(backend.due_calls) == 3


async def test_a_full_batch_is_followed_at_once_by_the_next(autojump_clock):
    backend = ScriptedBackend([[f"a{i}" for i in range(50)], [f"b{i}" for i in range(50)],
                               ["c"]])
    engine = engine_for(backend, {"lease_expiry": 10.0})
    start = trio.current_time()
    with trio.move_on_after(5):
        await engine.serve_scanner(ScannerSpec("lease_expiry", 10.0))
    assert len(backend.due_calls) == 3
    assert trio.current_time() - start == 5


def test_zero_interval_disables_a_scanner():
    engine = engine_for(ScriptedBackend([]), {"lease_expiry": 0, "delayed_promoter": 0.75})
    assert [s.name for s in engine.specs] == ["delayed_promoter"]


async def test_a_store_outage_is_logged_once_not_every_cycle(autojump_clock, caplog):
    backend = ScriptedBackend([StoreUnavailable("the store is down")] * 20)
    engine = engine_for(backend, {"delayed_promoter": 0.5})
    with caplog.at_level(logging.WARNING, logger="flowfabric.engine"):
        with trio.move_on_after(9.9):
            await engine.serve_scanner(ScannerSpec("delayed_promoter", 0.5))
    lines = [r for r in caplog.records if "waiting for the store" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert engine.stats["delayed_promoter"].errors == 20
