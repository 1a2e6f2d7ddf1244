"""Statements as values, and the two drivers that run a statement generator.

An operation is a generator that yields ``Stmt`` values and receives their
results (``one`` → a row or None, ``all`` → a list of rows, ``exec`` → the row
count, ``later`` and ``many`` → nothing; a row is a mapping by column name). A ``later`` write
and a ``notify`` may be held back until the operation's next read or its end: the
async driver sends what it held in one pipeline, one round trip. The same operation then runs on a blocking DB-API connection
(``run_blocking``) or an async one (``run_async``); SQL text uses ``?``
placeholders plus ``{lock}`` / ``{skip_locked}`` / ``{lock_ex}`` markers the dialect renders.
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
    mode: str  # "one" | "all" | "exec" | "later" | "many" | "notify"


def one(sql: str, *params: Any) -> Stmt:
    return Stmt(sql, params, "one")


def all_(sql: str, *params: Any) -> Stmt:
    return Stmt(sql, params, "all")


def exec_(sql: str, *params: Any) -> Stmt:
    return Stmt(sql, params, "exec")


def later(sql: str, *params: Any) -> Stmt:
    """A write whose row count the operation does not need (it may be sent later)."""
    return Stmt(sql, params, "later")


def many(sql: str, rows: list[tuple[Any, ...]]) -> Stmt:
    """One write run once per parameter row (``executemany``), sent like ``later``."""
    return Stmt(sql, tuple(rows), "many")


def held_writes(op: Op) -> tuple[list[Stmt], Any]:
    """Run an operation that only writes (``later``/``notify``), without a connection:
    its statements and its value, to be sent together with others (``grouped``)."""
    stmts: list[Stmt] = []
    try:
        while True:
            stmt = op.send(None)
            assert stmt.mode in ("later", "notify"), stmt
            stmts.append(stmt)
    except StopIteration as stop:
        return stmts, stop.value


def grouped(stmts: list[Stmt]) -> list[Stmt]:
    """Held writes of rows that are each written by one item only, as one ``many`` per
    statement text (in the order texts first appear: a row's writes keep their order)."""
    texts: dict[str, list[tuple[Any, ...]]] = {}
    notifies = []
    for stmt in stmts:
        if stmt.mode == "notify":
            notifies.append(stmt)
        else:
            texts.setdefault(stmt.sql, []).append(stmt.params)
    return [Stmt(sql, rows[0], "later") if len(rows) == 1 else many(sql, rows)
            for sql, rows in texts.items()] + notifies


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
        # the execution row only, in a join whose other side may be missing
        sql = sql.replace("{lock_ex}", f"{self._lock} OF ex" if self._lock else "")
        if self._placeholder == "$n":  # numbered: $1, $2, ...
            parts = sql.split("?")
            return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], 1)) + parts[-1]
        return sql.replace("?", self._placeholder) if self._placeholder != "?" else sql


SQLITE = Dialect("sqlite", placeholder="?", lock="", skip_locked="")
#: For psycopg's raw cursors (``AsyncRawCursor``): server-side ``$n`` parameters, so
#: psycopg does not parse each query's text for ``%s``.
POSTGRES = Dialect("postgres", placeholder="$n", lock=" FOR UPDATE",
                   skip_locked=" FOR UPDATE SKIP LOCKED",
                   notify_sql="SELECT pg_notify('ff_work', lane) FROM unnest($1::text[]) AS lane")


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
                    conn.execute(dialect.notify_sql, ([stmt.params[0]],))
                continue
            if stmt.mode == "many":
                conn.executemany(dialect.render(stmt.sql), stmt.params)
                result = None
                continue
            cur = conn.execute(dialect.render(stmt.sql), stmt.params)
            if stmt.mode == "one":
                result = cur.fetchone()
            elif stmt.mode == "all":
                result = cur.fetchall()
            else:
                result = cur.rowcount if stmt.mode == "exec" else None
    except StopIteration as stop:
        return stop.value


async def run_async(op: Op, conn: Any, dialect: Dialect) -> Any:
    """Drive ``op`` on an async psycopg connection; ``later`` writes and notifications
    wait for the next statement that answers something, or the end, and then go in one
    pipeline (one notification per lane)."""
    held: list[Stmt] = []
    lanes: dict[str, None] = {}

    async def flush() -> None:
        if lanes and dialect.notify_sql:
            held.append(Stmt(dialect.notify_sql, (list(lanes),), "notify"))
        lanes.clear()
        if len(held) > 1 or (held and held[0].mode == "many"):
            async with conn.pipeline():
                for stmt in held:
                    if stmt.mode == "many":
                        await conn.cursor().executemany(dialect.render(stmt.sql), stmt.params)
                    else:
                        await conn.execute(_text(stmt, dialect), stmt.params)
        elif held:
            await conn.execute(_text(held[0], dialect), held[0].params)
        held.clear()

    result: Any = None
    try:
        while True:
            stmt = op.send(result)
            result = None
            if stmt.mode == "notify":
                lanes[stmt.params[0]] = None
                continue
            if stmt.mode in ("later", "many"):
                held.append(stmt)
                continue
            await flush()
            cur = await conn.execute(dialect.render(stmt.sql), stmt.params)
            if stmt.mode == "one":
                result = await cur.fetchone()
            elif stmt.mode == "all":
                result = await cur.fetchall()
            else:
                result = cur.rowcount
    except StopIteration as stop:
        await flush()
        return stop.value


def _text(stmt: Stmt, dialect: Dialect) -> str:
    return stmt.sql if stmt.mode == "notify" else dialect.render(stmt.sql)
