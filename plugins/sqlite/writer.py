"""One thread owns the SQLite connection and commits queued operations in groups.

Every queued job runs inside its own savepoint of a shared transaction; one
COMMIT (one fsync with ``synchronous=FULL``) then makes the whole group durable
before any caller hears back. A failed job rolls back only its savepoint.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import outcome
import trio

from appliance.core.errors import FlowFabricError, StoreUnavailable

log = logging.getLogger("flowfabric.sqlite")

MAX_GROUP = 256
_STOP = object()

Job = tuple[Callable[[sqlite3.Connection], Any], Callable[[outcome.Outcome], None]]


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           cached_statements=512)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


class Writer:
    def __init__(self, path: str) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self.closed = False

    def start(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        conn = connect(self.path)
        self._thread = threading.Thread(target=self._loop, args=(conn,),
                                        name="flowfabric-sqlite-writer", daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn(conn)`` on the writer thread; returns once its group committed.

        The wait is shielded: once queued, the job will commit, so the caller
        stays to hear the answer rather than leave a lease nobody knows about.
        """
        if self.closed:
            raise StoreUnavailable("the SQLite store is closed")
        done = trio.Event()
        box: list[outcome.Outcome] = []
        token = self._token
        assert token is not None

        def deliver(result: outcome.Outcome) -> None:
            def wake() -> None:
                box.append(result)
                done.set()
            try:
                token.run_sync_soon(wake)
            except trio.RunFinishedError:
                pass

        self._queue.put((fn, deliver))
        with trio.CancelScope(shield=True):
            await done.wait()
        return box[0].unwrap()

    async def close(self) -> None:
        if self._thread is None or self.closed:
            return
        self.closed = True
        self._queue.put(_STOP)
        await trio.to_thread.run_sync(self._thread.join)

    # -- the thread ------------------------------------------------------------------
    def _loop(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                job = self._queue.get()
                if job is _STOP:
                    return
                group = [job]
                stop = False
                while len(group) < MAX_GROUP:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is _STOP:
                        stop = True
                        break
                    group.append(job)
                self._run_group(conn, group)
                if stop:
                    return
        finally:
            conn.close()

    def _run_group(self, conn: sqlite3.Connection, group: list[Job]) -> None:
        results: list[outcome.Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, _ in group:
                conn.execute("SAVEPOINT op")
                try:
                    value = fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    results.append(outcome.Error(_translate(exc)))
                else:
                    results.append(outcome.Value(value))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("SQLite transaction failed, %d operations rolled back: %s", len(group), exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            error = StoreUnavailable(f"the SQLite store failed to commit: {exc}")
            results = [outcome.Error(error)] * len(group)
        for (_, deliver), result in zip(group, results, strict=True):
            deliver(result)


def _translate(exc: Exception) -> Exception:
    """Typed errors pass through; driver errors become a retryable StoreUnavailable."""
    if isinstance(exc, FlowFabricError) or not isinstance(exc, sqlite3.Error):
        return exc
    error = StoreUnavailable(f"SQLite error: {exc}")
    error.__cause__ = exc
    return error
