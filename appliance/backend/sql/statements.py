"""Statements as values, and the two drivers that run a statement generator.

An operation is a generator that yields ``Stmt`` values and receives their
results (``one`` → a row or None, ``all`` → a list of rows, ``exec`` → the row
count; a row is a mapping by column name). The same operation then runs on a blocking DB-API connection
(``run_blocking``) or an async one (``run_async``); SQL text uses ``?``
placeholders plus ``{lock}`` / ``{skip_locked}`` markers the dialect renders.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

Op = Generator["Stmt", Any, Any]
OpFactory = Callable[[], Op]


@dataclass(frozen=True, slots=True)
class Stmt:
    sql: str
    params: tuple[Any, ...]
    mode: str  # "one" | "all" | "exec" | "notify"


def one(sql: str, *params: Any) -> Stmt:
    return Stmt(sql, params, "one")


def all_(sql: str, *params: Any) -> Stmt:
    return Stmt(sql, params, "all")


def exec_(sql: str, *params: Any) -> Stmt:
    return Stmt(sql, params, "exec")


def notify(lane: str) -> Stmt:
    """Tell other appliances on this store that ``lane`` has claimable work
    (delivered after commit; a no-op on a single-process store)."""
    return Stmt("", (lane,), "notify")


class Dialect:
    """How one SQL engine spells the few things that differ."""

    def __init__(self, name: str, *, placeholder: str, lock: str, skip_locked: str,
                 notify_sql: str | None = None) -> None:
        self.name = name
        self.notify_sql = notify_sql
        self._placeholder, self._lock, self._skip_locked = placeholder, lock, skip_locked
        self.render = lru_cache(maxsize=4096)(self._render)

    def _render(self, sql: str) -> str:
        sql = sql.replace("{lock}", self._lock).replace("{skip_locked}", self._skip_locked)
        return sql.replace("?", self._placeholder) if self._placeholder != "?" else sql


SQLITE = Dialect("sqlite", placeholder="?", lock="", skip_locked="")
POSTGRES = Dialect("postgres", placeholder="%s", lock=" FOR UPDATE",
                   skip_locked=" FOR UPDATE SKIP LOCKED",
                   notify_sql="SELECT pg_notify('ff_work', %s)")


def run_blocking(op: Op, conn: Any, dialect: Dialect) -> Any:
    """Drive ``op`` on a DB-API connection whose rows are mappings by column name
    (``sqlite3.Row``)."""
    result: Any = None
    try:
        while True:
            stmt = op.send(result)
            if stmt.mode == "notify":
                result = None
                if dialect.notify_sql:
                    conn.execute(dialect.notify_sql, stmt.params)
                continue
            cur = conn.execute(dialect.render(stmt.sql), stmt.params)
            if stmt.mode == "one":
                result = cur.fetchone()
            elif stmt.mode == "all":
                result = cur.fetchall()
            else:
                result = cur.rowcount
    except StopIteration as stop:
        return stop.value


async def run_async(op: Op, conn: Any, dialect: Dialect) -> Any:
    """Drive ``op`` on an async connection (psycopg with ``dict_row``)."""
    result: Any = None
    try:
        while True:
            stmt = op.send(result)
            if stmt.mode == "notify":
                result = None
                if dialect.notify_sql:
                    await conn.execute(dialect.notify_sql, stmt.params)
                continue
            cur = await conn.execute(dialect.render(stmt.sql), stmt.params)
            if stmt.mode == "one":
                result = await cur.fetchone()
            elif stmt.mode == "all":
                result = await cur.fetchall()
            else:
                result = cur.rowcount
    except StopIteration as stop:
        return stop.value
