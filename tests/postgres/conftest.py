"""Fixtures for PostgreSQL-only tests: fresh databases, a restartable server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from backend_setups.postgres import admin_url, scratch_database
from pg_support import Cluster


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres_restart: restarts the local PostgreSQL server "
                            "(pg_ctlcluster); skipped where that is not possible")


@pytest.fixture
def fresh_url() -> Iterator[str]:
    """A database no appliance has touched yet."""
    with scratch_database() as url:
        yield url


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """The server, restartable by this test; running again afterwards whatever happens."""
    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*"))
    where = urlsplit(admin_url())
    if (not versions or shutil.which("pg_ctlcluster") is None or os.geteuid() != 0
            or where.hostname not in ("127.0.0.1", "localhost") or (where.port or 5432) != 5432):
        pytest.skip("restart tests need root and a local pg_ctlcluster-managed server on "
                    "127.0.0.1:5432")
    cluster = Cluster(versions[-1])
    try:
        yield cluster
    finally:
        if not cluster.is_online():
            cluster.ctl("start")
