"""The SQLite writer task: callers are served first come first served, a cancelled caller
stops waiting at once (its operation dropped if it had not started), and everything a
caller heard back was committed."""

from __future__ import annotations

import sqlite3

import trio
import trio.testing
from flowfabric_sqlite.writer import Writer


async def started_writer(path: str, nursery: trio.Nursery) -> Writer:
    writer = Writer(path)
    writer.start()
    await writer.call(lambda c: c.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)"))
    await nursery.start(writer.serve)
    return writer


async def test_callers_are_served_in_the_order_they_came(tmp_path):
    order: list[int] = []
    async with trio.open_nursery() as nursery:
        writer = await started_writer(str(tmp_path / "w.db"), nursery)

        async def caller(i: int) -> None:
            await writer.call(lambda c: order.append(i))

        async with trio.open_nursery() as callers:
            for i in range(300):  # more than one group
                callers.start_soon(caller, i)
                await trio.lowlevel.checkpoint()
        nursery.cancel_scope.cancel()
    assert order == list(range(300))


async def test_a_cancelled_caller_stops_waiting_and_its_queued_operation_is_dropped(tmp_path):
    ran: list[str] = []
    async with trio.open_nursery() as nursery:
        writer = await started_writer(str(tmp_path / "w.db"), nursery)

        async def busy(i: int) -> None:
            await writer.call(lambda c: c.execute("INSERT INTO t VALUES (?)", (i,)))

        async with trio.open_nursery() as callers:
            for i in range(200):
                callers.start_soon(busy, i)
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as scope:
                scope.cancel()  # cancelled before its operation could start
                await writer.call(lambda c: ran.append("late"))
            assert scope.cancelled_caught
        nursery.cancel_scope.cancel()
    assert ran == []


async def test_what_a_caller_heard_is_committed(tmp_path):
    path = str(tmp_path / "w.db")
    async with trio.open_nursery() as nursery:
        writer = await started_writer(path, nursery)
        await writer.call(lambda c: c.execute("INSERT INTO t VALUES (42)"))
        nursery.cancel_scope.cancel()
    await writer.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT n FROM t").fetchall() == [(42,)]


async def test_callers_still_queued_when_the_writer_stops_hear_that_it_closed(tmp_path):
    async with trio.open_nursery() as outer:
        writer = await started_writer(str(tmp_path / "w.db"), outer)
        outer.cancel_scope.cancel()
    try:
        await writer.call(lambda c: None)
    except Exception as exc:
        assert getattr(exc, "retryable", False)
    else:
        raise AssertionError("a call after the writer stopped must fail retryably")
