"""Helpers for PostgreSQL-only tests: backends built from FF_* options, a restartable server."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import trio_asyncio

from appliance.backend import BackendEnv
from appliance.backend.plugins import get_plugin_manager
from appliance.config import load_config
from appliance.core.clock import FakeClock
from flowfabric_postgres import PostgresBackend


def make_backend(options: Mapping[str, str]) -> PostgresBackend:
    config = load_config({"FF_BACKEND": "postgres", **options})
    backend = get_plugin_manager().make_backend("postgres", config)
    assert isinstance(backend, PostgresBackend)
    return backend


def env(**partitions: int) -> BackendEnv:
    config = load_config({f"FF_{k.upper()}_PARTITIONS": str(v) for k, v in partitions.items()})
    return BackendEnv(config.partitions, FakeClock(), config.retention_ms)


@asynccontextmanager
async def prepared(url: str, **partitions: int) -> AsyncIterator[PostgresBackend]:
    """A prepared backend on ``url``; must be used inside ``trio_asyncio.open_loop()``."""
    backend = make_backend({"FF_POSTGRES_URL": url})
    await backend.prepare(env(**partitions))
    try:
        yield backend
    finally:
        await backend.close()


@asynccontextmanager
async def asyncio_loop() -> AsyncIterator[None]:
    async with trio_asyncio.open_loop():
        yield


class Cluster:
    """The local Debian cluster behind 127.0.0.1:5432, driven with pg_ctlcluster."""

    def __init__(self, version: str) -> None:
        self.version = version

    def ctl(self, action: str) -> None:
        subprocess.run(["pg_ctlcluster", self.version, "main", action], check=True,
                       capture_output=True, timeout=60)

    def is_online(self) -> bool:
        out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
        return any(line.split()[:2] == [self.version, "main"] and "online" in line
                   for line in out.splitlines())
