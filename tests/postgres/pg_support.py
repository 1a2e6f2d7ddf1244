"""Helpers for PostgreSQL-only tests: backends built from FF_* options, a server of our own."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest
import trio_asyncio
from flowfabric_postgres import PostgresBackend

from appliance.backend import BackendEnv
from appliance.backend.plugins import get_plugin_manager
from appliance.config import load_config
from appliance.core.clock import FakeClock


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


def postgres_bindir() -> Path:
    """Where initdb and pg_ctl are (the newest installed version); skips without them."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    initdb = found[-1] if found else shutil.which("initdb")
    if initdb is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return Path(initdb).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateServer:
    """A throwaway PostgreSQL server (initdb in a temporary folder, a free port) that tests
    may stop, hang and restart; the machine's shared server is never touched. As root, the
    server runs as the ``postgres`` user (it refuses to run as root)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="ff-pg-"))
        self.data = self.folder / "data"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self._as, str(self.bindir / tool), *args], capture_output=True,
                              text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {done.stderr or done.stdout}")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                   f"-c fsync=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-o",
                  options, "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` is an operator's stop (sessions told, then closed); ``immediate`` a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def is_online(self) -> bool:
        done = subprocess.run([*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.data),
                               "status"], capture_output=True, timeout=30)
        return done.returncode == 0

    def freeze(self, frozen: bool) -> None:
        """Stop (SIGSTOP) or resume every server process: a server that accepts TCP
        connections but never answers, as behind a dead network path."""
        main = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(main)], capture_output=True,
                                  text=True).stdout.split()
        for pid in [main, *map(int, children)]:
            os.kill(pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        if self.is_online():
            try:
                self.freeze(False)
            except (OSError, ValueError):
                pass
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
