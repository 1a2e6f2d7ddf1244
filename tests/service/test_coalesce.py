"""The coalescer: concurrent single calls share one batch call, each answered alone."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from appliance.service.coalesce import Coalescer


class Store:
    """A batch call that waits for ``release`` and records each batch it got."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = trio.Event()
        self.fail: Exception | None = None

    async def call(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [i * 10 for i in items]


async def test_calls_that_arrive_while_a_batch_is_in_the_store_share_the_next_one():
    store = Store()
    one = Coalescer(store.call)
    got: dict[int, int] = {}

    async def caller(i: int) -> None:
        got[i] = await one(i)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, 0)
        await trio.testing.wait_all_tasks_blocked()  # 0 is in the store
        for i in range(1, 6):
            nursery.start_soon(caller, i)
        await trio.testing.wait_all_tasks_blocked()
        store.release.set()
    assert [sorted(b) for b in store.batches] == [[0], [1, 2, 3, 4, 5]]
    assert got == {i: i * 10 for i in range(6)}


async def test_a_batch_is_at_most_max_batch_and_the_rest_follow():
    store = Store()
    store.release.set()
    one = Coalescer(store.call, max_batch=2)
    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(one, i)
    assert sorted(i for b in store.batches for i in b) == list(range(5))
    assert max(len(b) for b in store.batches) <= 2


async def test_a_failed_batch_call_fails_each_of_its_callers():
    store = Store()
    store.fail = ValueError("store down")
    one = Coalescer(store.call)
    errors: list[str] = []

    async def caller(i: int) -> None:
        with pytest.raises(ValueError) as caught:
            await one(i)
        errors.append(str(caught.value))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, 0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(caller, 1)
        nursery.start_soon(caller, 2)
        await trio.testing.wait_all_tasks_blocked()
        store.release.set()
    assert errors == ["store down"] * 3


async def test_a_caller_cancelled_while_queued_is_dropped_and_the_next_one_leads():
    store = Store()
    one = Coalescer(store.call)
    got: dict[int, int] = {}

    async def caller(i: int) -> None:
        got[i] = await one(i)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, 0)
        await trio.testing.wait_all_tasks_blocked()
        leaving = trio.CancelScope()  # 1 may lead the next batch, then leaves

        async def leader() -> None:
            with leaving:
                await one(1)
        nursery.start_soon(leader)
        nursery.start_soon(caller, 2)
        await trio.testing.wait_all_tasks_blocked()
        leaving.cancel()
        await trio.testing.wait_all_tasks_blocked()
        store.release.set()
    assert 1 not in [i for b in store.batches for i in b]
    assert got == {0: 0, 2: 20}


async def test_a_caller_cancelled_after_its_batch_was_sent_still_lets_the_others_hear():
    store = Store()
    one = Coalescer(store.call)
    got: dict[int, int] = {}
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def leaving() -> None:
            with scope:
                await one(0)

        async def staying() -> None:
            got[1] = await one(1)
        nursery.start_soon(leaving)
        await trio.testing.wait_all_tasks_blocked()  # 0's batch is in the store
        nursery.start_soon(staying)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        store.release.set()
    assert store.batches == [[0], [1]]
    assert got == {1: 10}
