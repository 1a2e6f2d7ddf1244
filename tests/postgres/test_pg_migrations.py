"""Schema migrations: applied once, safe when appliances start together, never downgraded."""

import psycopg
import pytest
import trio
from flowfabric_sql import migrations
from pg_support import asyncio_loop, env, make_backend, prepared

from appliance.core.errors import StartupError
from appliance.testing import open_harness

KNOWN = [(version, name) for version, name, _ in migrations("postgres")]


def ledger(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT version, name FROM ff_schema_version ORDER BY version"
                            ).fetchall()


async def test_first_start_applies_every_migration_once(fresh_url):
    async with asyncio_loop(), prepared(fresh_url):
        pass
    assert ledger(fresh_url) == KNOWN


async def test_restarting_on_a_migrated_database_keeps_schema_and_data(fresh_url):
    options = {"FF_POSTGRES_URL": fresh_url}
    async with open_harness("postgres", options) as first:
        eid = await first.create()
    async with open_harness("postgres", options) as second:
        assert (await second.info(eid))["public_state"] == "waiting"
    assert ledger(fresh_url) == KNOWN


async def test_appliances_starting_at_once_migrate_in_turn(fresh_url):
    backends = [make_backend({"FF_POSTGRES_URL": fresh_url}) for _ in range(4)]
    async with asyncio_loop():
        try:
            async with trio.open_nursery() as nursery:
                for backend in backends:
                    nursery.start_soon(backend.prepare, env())
        finally:
            for backend in backends:
                await backend.close()
    assert ledger(fresh_url) == KNOWN


async def test_database_written_by_a_newer_flowfabric_is_refused(fresh_url):
    async with asyncio_loop(), prepared(fresh_url):
        pass
    with psycopg.connect(fresh_url) as conn:
        conn.execute("INSERT INTO ff_schema_version VALUES (9999, 'future', 0)")
    async with asyncio_loop():
        with pytest.raises(StartupError, match=r"newer FlowFabric \(schema 9999 > \d+\)"):
            async with prepared(fresh_url):
                pass


async def test_partition_counts_differing_from_the_stored_ones_are_refused(fresh_url):
    async with asyncio_loop():
        async with prepared(fresh_url, flow=16):
            pass
        mismatch = "partition_mismatch: num_flow_partitions: stored=16, config=8"
        with pytest.raises(StartupError, match=mismatch):
            async with prepared(fresh_url, flow=8):
                pass
        async with prepared(fresh_url, flow=16):
            pass
