"""Fixtures for PostgreSQL-only tests: fresh databases, and a server of our own to stop."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from backend_setups.postgres import scratch_database
from pg_support import PrivateServer, postgres_bindir


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres_restart: stops and restarts a private "
                            "PostgreSQL server of its own (initdb); skipped without the binaries")


@pytest.fixture
def fresh_url() -> Iterator[str]:
    """A database no appliance has touched yet (on the shared test server)."""
    with scratch_database() as url:
        yield url


@pytest.fixture(scope="module")
def private_server() -> Iterator[PrivateServer]:
    server = PrivateServer(postgres_bindir())
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_server(private_server: PrivateServer) -> Iterator[PrivateServer]:
    """The private server, which this test may stop, freeze or restart; running afterwards."""
    yield private_server
    try:
        private_server.freeze(False)
    except (OSError, ValueError):
        pass
    if not private_server.is_online():
        private_server.start()


@pytest.fixture
def pg_url(pg_server: PrivateServer) -> str:
    """A new database on the private server."""
    return pg_server.create_database(f"ff_{uuid.uuid4().hex[:12]}")
