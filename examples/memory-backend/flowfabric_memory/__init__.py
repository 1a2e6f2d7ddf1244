"""``FF_BACKEND=memory``: executions kept in memory, for tests and demos."""

from __future__ import annotations

import sqlite3
from typing import Any

from appliance.backend import BackendEnv, Setting, hookimpl
from appliance.backend.sql import SQLITE, OpFactory, SqlBackend, run_blocking
from flowfabric_sql import migrations

__all__ = ["MemoryBackend"]


class MemoryBackend(SqlBackend):
    """The shared SQL operations on a private in-memory SQLite database.

    Every operation runs start to finish on the Trio thread with no await in
    between, so each is atomic without any locking.
    """

    name = "memory"

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None

    def describe(self) -> str:
        return "memory (nothing survives a restart)"

    async def prepare(self, env: BackendEnv) -> None:
        self.env = env
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        for _version, _name, sql in migrations("sqlite"):
            conn.executescript(sql)
        self._conn = conn
        await self.check_partitions()

    async def run(self, factory: OpFactory) -> Any:
        conn = self._conn
        assert conn is not None, "prepare() first"
        conn.execute("BEGIN")
        try:
            result = run_blocking(factory(), conn, SQLITE)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def ping(self) -> None:
        if self._conn is None:
            raise RuntimeError("the memory backend is not prepared")

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@hookimpl
def flowfabric_backend_names() -> list[str]:
    return ["memory"]


@hookimpl
def flowfabric_settings() -> list[Setting]:
    """Nothing to configure. A backend that reads ``FF_*`` settings declares them here, e.g.
    ``[Setting("FF_MEMORY_LIMIT", "10000", "most executions kept")]``; the appliance refuses
    any ``FF_*`` name nobody declares."""
    return []


@hookimpl
def flowfabric_backend(name: str, config: Any) -> MemoryBackend | None:
    return MemoryBackend() if name == "memory" else None
