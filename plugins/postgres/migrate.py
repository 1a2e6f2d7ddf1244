"""The migration runner: ``sql/postgres/NNNN_name.sql`` applied once each, under a lock."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import Any, TypeVar

import psycopg

from flowfabric_sql import pending

#: ``pg_advisory_xact_lock`` key ("flowfabr"): appliances starting together migrate in turn.
MIGRATION_LOCK = 0x666C6F7766616272

C = TypeVar("C")


async def connect(url: str, timeout_s: float, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
    """(asyncio) A new connection within ``timeout_s``."""
    return await within(timeout_s, psycopg.AsyncConnection.connect(
        url, connect_timeout=libpq_timeout(timeout_s), **kwargs))


async def within(timeout_s: float, connecting: Awaitable[C]) -> C:
    """(asyncio) ``connecting`` done within ``timeout_s``, or a ``ConnectionTimeout``.

    libpq's own ``connect_timeout`` counts whole seconds, at least 2, so the
    deadline is kept here.
    """
    try:
        return await asyncio.wait_for(connecting, timeout_s)
    except TimeoutError:
        raise psycopg.errors.ConnectionTimeout(
            f"connection timeout expired after {timeout_s:g}s") from None


def libpq_timeout(timeout_s: float) -> int:
    return max(2, math.ceil(timeout_s))


async def migrate(url: str, where: str, now_ms: int, connect_timeout_s: float) -> None:
    """(asyncio) Bring the schema up to date in one transaction; refuse a newer one."""
    conn = await connect(url, connect_timeout_s, autocommit=True)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute("CREATE TABLE IF NOT EXISTS ff_schema_version (version INTEGER "
                               "PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)")
            cur = await conn.execute("SELECT version FROM ff_schema_version")
            applied = {row[0] for row in await cur.fetchall()}
            for version, name, sql in pending("postgres", applied, f"PostgreSQL at {where}"):
                await conn.execute(sql)
                await conn.execute("INSERT INTO ff_schema_version (version, name, applied_at) "
                                   "VALUES (%s, %s, %s)", (version, name, now_ms))
    finally:
        await conn.close()
