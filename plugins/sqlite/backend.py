"""The embedded SQLite store: one file, one writer thread, durable commits."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from typing import IO, Any

import trio

from appliance.backend import BackendEnv
from appliance.backend.sql.backend import SqlBackend
from appliance.backend.sql.statements import SQLITE, OpFactory, run_blocking
from appliance.core.errors import StartupError
from flowfabric_sql import pending

from .writer import Writer, connect

DEFAULT_PATH = "flowfabric.db"


class SqliteBackend(SqlBackend):
    name = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._writer = Writer(self.path)
        self._lock_file: IO[Any] | None = None

    def describe(self) -> str:
        return f"sqlite file {self.path}"

    async def prepare(self, env: BackendEnv) -> None:
        self.env = env
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise StartupError(f"the SQLite store's folder {folder} does not exist; create it "
                               f"or set FF_SQLITE_PATH / --sqlite-path elsewhere")
        self._lock_file = _lock(self.path)
        await trio.to_thread.run_sync(_migrate, self.path)
        self._writer.start()
        await self._check_partitions()

    async def _run(self, factory: OpFactory) -> Any:
        return await self._writer.call(lambda conn: run_blocking(factory(), conn, SQLITE))

    async def ping(self) -> None:
        await self._writer.call(lambda conn: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self._writer.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def _lock(path: str) -> IO[Any]:
    """One appliance per database file: a second one is refused, not corrupted."""
    handle = open(path + ".lock", "a+")
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
    conn = connect(path)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS ff_schema_version (version INTEGER PRIMARY KEY, "
                     "name TEXT NOT NULL, applied_at INTEGER NOT NULL)")
        applied = {row[0] for row in conn.execute("SELECT version FROM ff_schema_version")}
        for version, name, sql in pending("sqlite", applied, path):
            stamp = int(time.time() * 1000)
            conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nINSERT INTO ff_schema_version VALUES "
                               f"({version}, '{name}', {stamp});\nCOMMIT;")
    except sqlite3.DatabaseError as exc:
        raise StartupError(f"{path} is not a usable SQLite database ({exc}); move it away or "
                           f"set FF_SQLITE_PATH / --sqlite-path") from exc
    finally:
        conn.close()
