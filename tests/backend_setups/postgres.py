"""A throwaway PostgreSQL database for the session; every test starts from empty tables.

The server is 127.0.0.1:5432 as user postgres (trust auth) unless
FF_TEST_POSTGRES_ADMIN_URL names another (a postgresql:// URL of a role that
may create databases). Unreachable: skipped locally, a failure when CI is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg
import pytest

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    return os.environ.get("FF_TEST_POSTGRES_ADMIN_URL") or DEFAULT_ADMIN_URL


def database_url(name: str) -> str:
    return urlsplit(admin_url())._replace(path=f"/{name}").geturl()


def create_database() -> str:
    """A new empty database with a unique name; skips (or fails on CI) without a server."""
    try:
        conn = psycopg.connect(admin_url(), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL is not reachable at {admin_url()}: {str(exc).strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"ff_test_{uuid.uuid4().hex[:12]}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(admin_url(), autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def empty_tables(url: str) -> None:
    """Empty every ff_* table but the schema ledger, so the next appliance starts fresh.

    DELETE, not TRUNCATE: the tables hold a handful of rows, and TRUNCATE's new
    files cost tens of milliseconds per test.
    """
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = "
                            "current_schema() AND tablename LIKE 'ff\\_%' AND tablename <> "
                            "'ff_schema_version'").fetchall()
        with conn.transaction():
            for (table,) in rows:
                conn.execute(f"DELETE FROM {table}")


@contextmanager
def scratch_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped on exit."""
    name = create_database()
    try:
        yield database_url(name)
    finally:
        drop_database(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of this session's database, dropped at the end."""
    with scratch_database() as url:
        yield url


@pytest.fixture
def postgres_backend_options(postgres_server: str) -> dict[str, str]:
    empty_tables(postgres_server)
    return {"FF_POSTGRES_URL": postgres_server}
