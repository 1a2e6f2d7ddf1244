"""The migration runner: ``sql/postgres/NNNN_name.sql`` applied once each, under a lock."""

from __future__ import annotations

import psycopg

from flowfabric_sql import pending

#: ``pg_advisory_xact_lock`` key ("flowfabr"): appliances starting together migrate in turn.
MIGRATION_LOCK = 0x666C6F7766616272


async def migrate(url: str, where: str, now_ms: int, connect_timeout: int) -> None:
    """(asyncio) Bring the schema up to date in one transaction; refuse a newer one."""
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True,
                                                 connect_timeout=connect_timeout)
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
