"""The store circuit breaker: opens on "unreachable", fails fast, probes with backoff, closes."""

import pytest
import trio
import trio.testing

from appliance.backend.circuit import PROBE_MAX_S, PROBE_MIN_S, Circuit
from appliance.core.errors import StoreUnavailable


class Store:
    """A fake store whose probe answers while ``up``; records when it was probed."""

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.hang = False
        self.probed_at: list[float] = []
        self.closed_at: list[float] = []

    async def probe(self) -> None:
        self.probed_at.append(trio.current_time())
        if self.hang:
            await trio.sleep_forever()
        if not self.up:
            raise ConnectionRefusedError("connection refused")

    async def on_close(self) -> None:
        self.closed_at.append(trio.current_time())


def circuit_for(store: Store) -> Circuit:
    return Circuit("the test store", store.probe, on_close=store.on_close, probe_timeout_s=1.0)


async def test_closed_circuit_lets_operations_through_and_records_the_last_success():
    circuit = circuit_for(Store())
    circuit.check()
    assert circuit.last_success is None
    circuit.succeeded()
    assert circuit.last_success is not None and not circuit.is_open


async def test_open_circuit_fails_at_once_with_a_retryable_store_unavailable(nursery):
    circuit = circuit_for(Store(up=False))
    await nursery.start(circuit.run)
    circuit.open("connection refused")
    with pytest.raises(StoreUnavailable) as raised:
        circuit.check()
    error = raised.value
    assert (error.kind, error.retryable, error.status) == ("store_unavailable", True, 503)
    assert "the test store is down since 20" in error.message
    assert "connection refused" in error.message and "probed" in error.message


async def test_probe_backs_off_from_250ms_to_2s_and_closes_once_the_store_answers(
        nursery, autojump_clock):
    store = Store(up=False)
    circuit = circuit_for(store)
    await nursery.start(circuit.run)
    opened = trio.current_time()
    circuit.open("connection refused")
    while len(store.probed_at) < 6:
        await trio.sleep(0.01)
    gaps = [round(b - a, 2) for a, b in zip([opened, *store.probed_at], store.probed_at)]
    assert gaps == [PROBE_MIN_S, 0.5, 1.0, PROBE_MAX_S, PROBE_MAX_S, PROBE_MAX_S]
    store.up = True
    with trio.fail_after(PROBE_MAX_S + 0.1):
        await circuit.wait_closed()
    assert not circuit.is_open and len(store.closed_at) == 1
    circuit.check()


async def test_a_hanging_probe_counts_as_no_answer_after_its_timeout(nursery, autojump_clock):
    store = Store()
    store.hang = True
    circuit = circuit_for(store)
    await nursery.start(circuit.run)
    circuit.suspect()
    await trio.sleep(0.99)
    assert not circuit.is_open
    await trio.sleep(0.02)
    assert circuit.is_open and "no answer within 1s" in circuit.reason


async def test_suspicion_opens_the_circuit_only_if_the_probe_gets_no_answer(
        nursery, autojump_clock):
    store = Store(up=True)
    circuit = circuit_for(store)
    await nursery.start(circuit.run)
    circuit.suspect()
    await trio.sleep(0.01)
    assert store.probed_at and not circuit.is_open
    store.up = False
    await trio.sleep(PROBE_MIN_S)  # one suspicion probe per 250 ms at most
    circuit.suspect()
    await trio.sleep(0.01)
    assert circuit.is_open and circuit.reason == "connection refused"


async def test_waits_under_way_end_at_once_when_the_circuit_opens(nursery, autojump_clock):
    circuit = circuit_for(Store(up=False))
    await nursery.start(circuit.run)
    ended: list[float] = []

    async def wait_for_a_connection() -> None:
        with pytest.raises(StoreUnavailable, match="down since"):
            with circuit.failing_fast():
                await trio.sleep(5)  # e.g. a pool's acquire timeout
        ended.append(trio.current_time())

    start = trio.current_time()
    nursery.start_soon(wait_for_a_connection)
    await trio.sleep(0.1)
    circuit.open("connection refused")
    await trio.sleep(0.01)
    assert [round(t - start, 2) for t in ended] == [0.1]


async def test_a_wait_that_finished_keeps_its_result_when_the_circuit_opens_late():
    circuit = circuit_for(Store())
    with circuit.failing_fast():
        result = 42
    circuit.open("connection refused")
    assert result == 42
    with pytest.raises(StoreUnavailable):
        with circuit.failing_fast():
            pass


async def test_an_error_from_on_close_keeps_the_circuit_open(nursery, autojump_clock):
    store = Store(up=True)
    refreshes: list[float] = []

    async def refresh() -> None:
        refreshes.append(trio.current_time())
        if len(refreshes) == 1:
            raise OSError("pool refused to open")

    circuit = Circuit("the test store", store.probe, on_close=refresh, probe_timeout_s=1.0)
    await nursery.start(circuit.run)
    circuit.open("connection refused")
    await trio.sleep(PROBE_MIN_S + 0.01)
    assert circuit.is_open and circuit.reason == "pool refused to open"
    with trio.fail_after(1):
        await circuit.wait_closed()
    assert len(refreshes) == 2


async def test_without_a_probe_loop_one_operation_in_a_while_is_let_through_as_the_probe(
        autojump_clock):
    circuit = circuit_for(Store())
    circuit.open("connection refused")
    with pytest.raises(StoreUnavailable):
        circuit.check()
    await trio.sleep(PROBE_MIN_S)
    circuit.check()  # the trial
    with pytest.raises(StoreUnavailable):
        circuit.check()  # only one
    await trio.sleep(2 * PROBE_MIN_S)
    circuit.check()  # the next trial, after a longer wait
    circuit.succeeded()  # it got an answer
    assert not circuit.is_open
    circuit.check()


async def test_with_a_probe_loop_an_operation_answered_late_does_not_close_the_circuit(
        nursery, autojump_clock):
    store = Store(up=False)
    circuit = circuit_for(store)
    await nursery.start(circuit.run)
    circuit.open("connection refused")
    circuit.succeeded()  # e.g. a commit heard just before the outage
    assert circuit.is_open and not store.closed_at


async def test_reopening_after_recovery_starts_the_backoff_again(nursery, autojump_clock):
    store = Store(up=False)
    circuit = circuit_for(store)
    await nursery.start(circuit.run)
    circuit.open("first outage")
    await trio.sleep(5)
    store.up = True
    await circuit.wait_closed()
    store.up, store.probed_at = False, []
    opened = trio.current_time()
    circuit.open("second outage")
    while not store.probed_at:
        await trio.sleep(0.01)
    assert round(store.probed_at[0] - opened, 2) == PROBE_MIN_S
