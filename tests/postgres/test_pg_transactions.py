"""One transaction per operation: contention retried, typed errors roll back, an error
answered after its writes commit."""

import psycopg
import pytest
from flowfabric_postgres.backend import MAX_TRIES
from pg_support import asyncio_loop, prepared

from appliance.backend.sql.statements import exec_, one
from appliance.core.errors import ExecutionNotFound, StoreUnavailable
from appliance.core.operations import Applied


def rolled_back_by_server(times: int, sqlstate: str):
    """An operation factory whose first ``times`` runs the server aborts with ``sqlstate``."""
    runs = []

    def op():
        runs.append(1)
        if len(runs) <= times:
            yield exec_("DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = "
                        f"'{sqlstate}'; END $$")
        row = yield one("SELECT 41 + 1 AS answer")
        return row["answer"]
    return op, runs


def meta(url: str, key: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT value FROM ff_meta WHERE key = %s", (key,)).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
async def test_serialization_failure_or_deadlock_is_run_again(postgres_backend_options, sqlstate):
    op, runs = rolled_back_by_server(2, sqlstate)
    async with asyncio_loop(), prepared(postgres_backend_options["FF_POSTGRES_URL"]) as backend:
        assert await backend.run(op) == 42
    assert len(runs) == 3


async def test_contention_that_never_clears_ends_in_a_retryable_error(postgres_backend_options):
    op, runs = rolled_back_by_server(99, "40P01")
    async with asyncio_loop(), prepared(postgres_backend_options["FF_POSTGRES_URL"]) as backend:
        with pytest.raises(StoreUnavailable) as raised:
            await backend.run(op)
        assert not backend.circuit.is_open  # a busy database is not an unreachable one
    assert raised.value.retryable and raised.value.status == 503
    assert len(runs) == MAX_TRIES


async def test_typed_error_passes_through_and_rolls_back_the_writes(postgres_backend_options):
    url = postgres_backend_options["FF_POSTGRES_URL"]

    def op():
        yield exec_("INSERT INTO ff_meta (key, value) VALUES ('probe', 'written')")
        raise ExecutionNotFound("nope")

    async with asyncio_loop(), prepared(url) as backend:
        with pytest.raises(ExecutionNotFound):
            await backend.run(op)
        assert not backend.circuit.is_open and backend.circuit.last_success is not None
    assert meta(url, "probe") is None


async def test_an_error_answered_after_its_writes_commits_them(postgres_backend_options):
    url = postgres_backend_options["FF_POSTGRES_URL"]

    def op():
        yield exec_("INSERT INTO ff_meta (key, value) VALUES ('probe', 'written')")
        return Applied(error=ExecutionNotFound("after commit"))

    async with asyncio_loop(), prepared(url) as backend:
        answer = await backend.run(op)
        assert isinstance(answer.error, ExecutionNotFound)
    assert meta(url, "probe") == "written"


async def test_ping_answers_while_the_store_is_open_and_fails_retryably_once_closed(
        postgres_backend_options):
    async with asyncio_loop(), prepared(postgres_backend_options["FF_POSTGRES_URL"]) as backend:
        await backend.ping()
        await backend.close()
        with pytest.raises(StoreUnavailable):
            await backend.ping()
