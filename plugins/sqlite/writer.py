"""Group commit on the Trio thread: one connection, one transaction per group.

Operations are short, bounded SQL; running them on the event-loop thread
avoids a thread hand-off (and a wait for the GIL) per operation. The first
caller to find no group running becomes the leader: it runs every queued
operation, each in its own SAVEPOINT of one transaction, and commits once —
one fsync (``synchronous=FULL``) for the whole group. The COMMIT runs on a
worker thread so a slow disk does not stall the event loop; callers queued
meanwhile form the next group. Nobody hears back before their operation is
durable; a failing operation rolls back only its savepoint.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

import outcome
import trio

from appliance.core.errors import FlowFabricError, StoreUnavailable

log = logging.getLogger("flowfabric.sqlite")

MAX_GROUP = 256


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           cached_statements=512)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


class _Job:
    __slots__ = ("fn", "result", "done")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn
        self.result: outcome.Outcome | None = None
        self.done = trio.Event()


class Writer:
    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._queue: list[_Job] = []
        self._leading = False
        self._idle = trio.Event()
        self.closed = False

    def start(self) -> None:
        self._conn = connect(self.path)

    async def call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn(conn)`` in the next group; returns once that group committed.

        Shielded: a queued operation will commit, so its caller stays to hear
        the answer rather than leave, say, a lease nobody knows was granted.
        """
        if self.closed or self._conn is None:
            raise StoreUnavailable("the SQLite store is closed")
        job = _Job(fn)
        self._queue.append(job)
        with trio.CancelScope(shield=True):
            if not self._leading:
                await self._lead()
            await job.done.wait()
        assert job.result is not None
        return job.result.unwrap()

    async def _lead(self) -> None:
        self._leading = True
        self._idle = trio.Event()
        try:
            while self._queue:
                group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                await self._run_group(group)
        finally:
            self._leading = False
            self._idle.set()

    async def _run_group(self, group: list[_Job]) -> None:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in group:
                conn.execute("SAVEPOINT op")
                try:
                    job.result = outcome.Value(job.fn(conn))
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    job.result = outcome.Error(_translate(exc))
                conn.execute("RELEASE op")
            await trio.to_thread.run_sync(conn.execute, "COMMIT")
        except sqlite3.Error as exc:
            log.error("SQLite transaction failed, %d operations rolled back: %s", len(group), exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            error = StoreUnavailable(f"the SQLite store failed to commit: {exc}")
            for job in group:
                job.result = outcome.Error(error)
        for job in group:
            job.done.set()

    async def close(self) -> None:
        if self._conn is None or self.closed:
            return
        self.closed = True
        if self._leading:
            with trio.CancelScope(shield=True):
                await self._idle.wait()  # the group in flight commits first
        self._conn.close()


def _translate(exc: Exception) -> Exception:
    """Typed errors pass through; driver errors become a retryable StoreUnavailable."""
    if isinstance(exc, FlowFabricError) or not isinstance(exc, sqlite3.Error):
        return exc
    error = StoreUnavailable(f"SQLite error: {exc}")
    error.__cause__ = exc
    return error
