"""Group commit by a dedicated writer task: one connection, one transaction per group.

Callers queue their operation on a memory channel and wait, first come first
served. The writer task (run in the backend's own nursery, see
``SqliteBackend.serve``) takes whatever has queued, runs each operation in its own SAVEPOINT of one
transaction and commits once — one fsync (``synchronous=FULL``) for the whole
group — all on the Trio thread (a group is short: handing it to a worker thread
cost more than it saved, spec/backends.md); callers queued meanwhile form the
next group. Nobody hears back before their operation is durable; a failing
operation rolls back only its savepoint. A caller that is cancelled stops
waiting at once: an operation not yet started is dropped, one already in a
group commits or not with it, atomically either way.

Before the task runs (while the backend prepares) operations run inline.
"""

from __future__ import annotations

import logging
import math
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
    __slots__ = ("fn", "result", "done", "abandoned")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn
        self.result: outcome.Outcome | None = None
        self.done = trio.Event()
        self.abandoned = False


class Writer:
    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._send, self._receive = trio.open_memory_channel[_Job](math.inf)
        self._running = False
        self._stopped = False
        self._inline = trio.Lock()
        self.closed = False
        #: Why the last group failed to commit (None once a group commits again).
        self.failure: str | None = None

    def start(self) -> None:
        self._conn = connect(self.path)

    async def call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn(conn)`` in the next group; returns once that group committed."""
        if self.closed or self._conn is None or self._stopped:
            raise StoreUnavailable("the SQLite store is closed")
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled caller never queues
        job = _Job(fn)
        if not self._running:  # preparing: no writer task yet
            async with self._inline:
                await self._run_group([job])
        else:
            self._send.send_nowait(job)
            try:
                await job.done.wait()
            except trio.Cancelled:
                job.abandoned = True
                raise
        assert job.result is not None
        return job.result.unwrap()

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: groups until cancelled; queued jobs then fail as closed."""
        self._running = True
        task_status.started()
        try:
            async for first in self._receive:
                group = [first]
                while len(group) < MAX_GROUP:
                    try:
                        group.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self._run_group([job for job in group if not job.abandoned])
        finally:
            self._running, self._stopped = False, True
            closed = StoreUnavailable("the SQLite store is closing; retry the request")
            while True:
                try:
                    job = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                job.result = outcome.Error(closed)
                job.done.set()

    async def _run_group(self, group: list[_Job]) -> None:
        if not group:
            return
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
            # On the Trio thread: a COMMIT's fsync takes ~0.15 ms on this machine's disk,
            # less than handing it to a worker thread costs (~0.15 ms of CPU, measured:
            # spec/backends.md); the group commits or not, whole.
            conn.execute("COMMIT")
            self.failure = None
        except sqlite3.Error as exc:
            log.error("SQLite transaction failed, %d operations rolled back: %s", len(group), exc)
            self.failure = str(exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            error = StoreUnavailable(f"the SQLite store failed to commit: {exc}")
            for job in group:
                job.result = outcome.Error(error)
        for job in group:
            job.done.set()

    def check(self) -> None:
        """Raise ``StoreUnavailable`` when writes cannot succeed now (no I/O: for ping)."""
        if self.closed or self._conn is None:
            raise StoreUnavailable("the SQLite store is closed")
        if self.failure is not None:
            raise StoreUnavailable(f"the SQLite store failed its last commit: {self.failure}")

    async def close(self) -> None:
        """After the writer task ended (the backend's nursery is gone)."""
        if self._conn is None or self.closed:
            return
        self.closed = True
        self._conn.close()


def _translate(exc: Exception) -> Exception:
    """Typed errors pass through; driver errors become a retryable StoreUnavailable."""
    if isinstance(exc, FlowFabricError) or not isinstance(exc, sqlite3.Error):
        return exc
    error = StoreUnavailable(f"SQLite error: {exc}")
    error.__cause__ = exc
    return error
