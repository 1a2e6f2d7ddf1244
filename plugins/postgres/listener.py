"""Cross-appliance wake-ups: ``LISTEN ff_work`` on a dedicated connection.

The shared operations send ``pg_notify('ff_work', lane)`` when they make work
claimable; each notification from another appliance reaches ``notify(lane)``
in Trio, so long-polling claims there look again at once (the service already
wakes its own). A dropped connection is
re-established with backoff (or as soon as the store's circuit closes after an
outage); a missed wake-up only delays a claim until its next re-poll.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Container
from typing import Any

import psycopg
import trio

from appliance.backend.circuit import Circuit

from .migrate import connect

log = logging.getLogger("flowfabric.postgres")

CHANNEL = "ff_work"
IDLE_CHECK_S = 10.0
CONNECT_TIMEOUT_S = 1.0
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.2, 5.0

Aio = Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]


async def listen_for_work(url: str, where: str, aio: Aio, notify: Callable[[str], None], *,
                          ignore: Container[int] = (),
                          connect_timeout_s: float = CONNECT_TIMEOUT_S,
                          circuit: Circuit | None = None,
                          task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Deliver notifications until cancelled, except those sent by server pids in ``ignore``.

    ``started`` is reported after the first try, failed or not. A lost connection
    makes ``circuit`` suspect the store (it is often the first to notice an outage).
    """
    started = False
    delay = RECONNECT_MIN_S
    while True:
        conn = None
        try:
            with trio.fail_after(connect_timeout_s * 2):
                conn = await aio(_connect)(url, connect_timeout_s)
            if delay > RECONNECT_MIN_S:
                log.info("listening for work on PostgreSQL at %s again", where)
            delay = RECONNECT_MIN_S
            if not started:
                started = True
                task_status.started()
            while True:
                with trio.fail_after(IDLE_CHECK_S * 2):
                    received = await aio(_next_notifications)(conn)
                for lane, pid in received:
                    if pid not in ignore:
                        notify(lane)
        except (psycopg.Error, OSError, trio.TooSlowError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            if circuit is not None:
                circuit.suspect()
            log.warning("LISTEN %s on PostgreSQL at %s failed (%s); retrying in %.1fs",
                        CHANNEL, where, reason, delay)
        finally:
            if conn is not None:
                with trio.CancelScope(shield=True):
                    await aio(conn.close)()
        if not started:
            started = True
            task_status.started()
        await _pause(delay, circuit)
        delay = min(delay * 2, RECONNECT_MAX_S)


async def _pause(delay: float, circuit: Circuit | None) -> None:
    """Until the next try: ``delay``; while the store is known down, until it answers again."""
    if circuit is not None and circuit.is_open:
        await circuit.wait_closed()
    else:
        await trio.sleep(delay)


async def _connect(url: str, timeout_s: float) -> psycopg.AsyncConnection[Any]:
    conn = await connect(url, timeout_s, autocommit=True)
    try:
        await conn.execute(f"LISTEN {CHANNEL}")
    except BaseException:
        await conn.close()
        raise
    return conn


async def _next_notifications(conn: psycopg.AsyncConnection[Any]) -> list[tuple[str, int]]:
    """(asyncio) The next (lane, sender pid)s; after a quiet spell, prove the link still works."""
    received = [(n.payload, n.pid)
                async for n in conn.notifies(timeout=IDLE_CHECK_S, stop_after=1)]
    if not received:
        await conn.execute("SELECT 1")
    return received
