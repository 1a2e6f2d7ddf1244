"""The embedded SQLite store: one file, one writer task, durable group commits."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Callable
from typing import IO, Any
from urllib.parse import quote

import trio

from appliance.backend import BackendEnv
from appliance.backend.sql import SQLITE, OpFactory, SqlBackend, run_blocking
from appliance.core.errors import StartupError, StoreUnavailable
from flowfabric_sql import pending

from .writer import Writer, connect

DEFAULT_PATH = "flowfabric.db"
#: How startup errors name the setting to change.
SETTING = "FF_SQLITE_PATH (--sqlite-path)"
ELSEWHERE = "set FF_SQLITE_PATH / --sqlite-path to another file"


class SqliteBackend(SqlBackend):
    name = "sqlite"
    shared = False  # one process holds the file's lock

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._writer = Writer(self.path)
        #: Reads run here, on the Trio thread, never queued behind the writer's groups
        #: (WAL: they see every committed write).
        self._reader: sqlite3.Connection | None = None
        self._lock_file: IO[Any] | None = None

    def describe(self) -> str:
        return f"sqlite file {self.path}"

    async def prepare(self, env: BackendEnv) -> None:
        self.env = env
        _check_path(self.path)
        _check_contents(self.path)
        self._lock_file = _lock(self.path)
        await trio.to_thread.run_sync(_migrate, self.path)
        try:
            self._writer.start()
            self._reader = connect(self.path)
            self._reader.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise _unusable(self.path, exc) from exc
        await self.check_partitions()

    async def run(self, factory: OpFactory) -> Any:
        return await self._writer.call(lambda conn: run_blocking(factory(), conn, SQLITE))

    async def read(self, factory: OpFactory) -> Any:
        await trio.lowlevel.checkpoint()
        if self._reader is None:
            raise StoreUnavailable("the SQLite store is closed")
        try:
            return run_blocking(factory(), self._reader, SQLITE)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite error: {exc}") from exc

    async def serve(self, notify: Callable[[str], None], *,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task (one appliance per file: no other appliance to hear from)."""
        await self._writer.serve(task_status=task_status)

    async def ping(self) -> None:
        """At once: the writer is open and its last commit succeeded (an embedded store has
        no network to fail; a failing disk fails the next commit, and ping then says so)."""
        self._writer.check()

    async def close(self) -> None:
        await self._writer.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def _check_path(path: str) -> None:
    """Refuse, before creating anything, a path the store cannot live at."""
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise StartupError(f"{SETTING} names a folder: {path}; give a file path such as "
                           f"{os.path.join(path, DEFAULT_PATH)}")
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise StartupError(f"{SETTING} is {path}, but {folder} {what}; create the folder or "
                           f"set FF_SQLITE_PATH / --sqlite-path to a file in an existing folder")
    if os.path.exists(path) and not os.path.isfile(path):
        raise StartupError(f"{SETTING} {path} is not a regular file; {ELSEWHERE}")
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise StartupError(f"{SETTING} {path} is not readable and writable by this user; "
                           f"give it read and write permission (chmod u+rw) or {ELSEWHERE}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StartupError(f"{SETTING} is {path}, but this user cannot create files in "
                           f"{folder} (the store keeps its -wal, -shm and .lock files there); "
                           f"give it write permission or {ELSEWHERE} in another folder")


def _check_contents(path: str) -> None:
    """Refuse a file that is not a SQLite database, or is another program's database:
    FlowFabric adds its tables only to a new, empty or FlowFabric database."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return
    try:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
        try:
            tables = [row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                "'sqlite\\_%' ESCAPE '\\' ORDER BY name")]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED"):
            raise StartupError(f"{SETTING} {path} is locked by another program ({exc}); stop "
                               f"it or {ELSEWHERE}") from None
        raise StartupError(f"{SETTING} {path} is not a SQLite database ({exc}); move it away "
                           f"or {ELSEWHERE}") from None
    if tables and "ff_schema_version" not in tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise StartupError(f"{SETTING} {path} is another program's SQLite database (tables "
                           f"{shown}; no ff_schema_version); FlowFabric will not add its tables "
                           f"to it: {ELSEWHERE}")


def _unusable(path: str, exc: Exception) -> StartupError:
    return StartupError(f"{SETTING} {path} is not a usable SQLite database ({exc}); move it "
                        f"away or {ELSEWHERE}")


def _lock(path: str) -> IO[Any]:
    """One appliance per database file: a second one is refused, not corrupted."""
    try:
        handle = open(path + ".lock", "a+")
    except OSError as exc:
        raise StartupError(f"{SETTING} is {path}, but its lock file {path}.lock cannot be "
                           f"opened ({exc.strerror}); fix its permissions or {ELSEWHERE}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise StartupError(f"another FlowFabric appliance (pid {owner}) is using {path}; stop "
                           f"it or point FF_SQLITE_PATH / --sqlite-path at another file") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _migrate(path: str) -> None:
    try:
        conn = connect(path)
    except sqlite3.Error as exc:
        raise _unusable(path, exc) from exc
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS ff_schema_version (version INTEGER PRIMARY KEY, "
                     "name TEXT NOT NULL, applied_at INTEGER NOT NULL)")
        applied = {row[0] for row in conn.execute("SELECT version FROM ff_schema_version")}
        for version, name, sql in pending("sqlite", applied, path):
            stamp = int(time.time() * 1000)
            conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nINSERT INTO ff_schema_version VALUES "
                               f"({version}, '{name}', {stamp});\nCOMMIT;")
    except sqlite3.Error as exc:
        raise _unusable(path, exc) from exc
    finally:
        conn.close()
