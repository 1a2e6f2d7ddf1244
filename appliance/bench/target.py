"""The appliance under test: one the bench starts (with a fresh store of the chosen
backend) or one already running (``--url``), and the CPU its process used."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

DEFAULT_POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU a process, its live children (``--processes``) and its reaped
    children used so far."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    own = sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks
    return own + sum(cpu_seconds(kid) or 0.0 for kid in _children(pid))


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return kids


@dataclass
class Target:
    url: str
    backend: str
    pid: int | None = None
    notes: list[str] = field(default_factory=list)
    store_pid: int | None = None

    def cpu(self) -> tuple[float | None, float | None]:
        return cpu_seconds(self.pid), cpu_seconds(self.store_pid)


def appliance_command() -> list[str]:
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "appliance"]


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the appliance exited with code {proc.returncode} at start-up")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the appliance did not answer {url}/healthz within {timeout:g}s")


@contextmanager
def redis_store(url: str | None) -> Iterator[tuple[str, int | None, str]]:
    """A Valkey/Redis URL: the one given, or a private non-persistent redis-server."""
    if url:
        yield url, None, f"store {url} (given)"
        return
    binary = shutil.which("valkey-server") or shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("no redis-server or valkey-server on the PATH: install one or "
                           "give --valkey-url")
    port = free_port()
    folder = tempfile.mkdtemp(prefix="ffbench-redis-")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", folder],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the private redis-server did not start") from None
                time.sleep(0.05)
        yield (f"redis://127.0.0.1:{port}/0", proc.pid,
               f"store: private {os.path.basename(binary)} (no persistence, as the peers' Redis)")
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def postgres_store(admin_url: str | None) -> Iterator[tuple[str, int | None, str]]:
    """A new, empty database on the server of ``admin_url``, dropped afterwards."""
    import psycopg

    admin = admin_url or DEFAULT_POSTGRES_ADMIN
    name = f"ffbench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base, _, _ = admin.rpartition("/")
        yield f"{base}/{name}", None, f"store: new database {name} (stock configuration)"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def started(backend: str, *, valkey_url: str | None = None, postgres_url: str | None = None,
            extra_env: dict[str, str] | None = None, processes: int = 1) -> Iterator[Target]:
    """A fresh appliance on a fresh store of ``backend``, stopped afterwards."""
    folder = tempfile.mkdtemp(prefix="ffbench-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FF_")}
    env.update({"FF_BACKEND": backend, "FF_LOG_LEVEL": "warning", **(extra_env or {})})
    store: Any = _no_store(folder)
    if backend == "valkey":
        store = redis_store(valkey_url)
    elif backend == "postgres":
        store = postgres_store(postgres_url)
    with store as (store_url, store_pid, note):
        if backend == "valkey":
            env["FF_VALKEY_URL"] = store_url
        elif backend == "postgres":
            env["FF_POSTGRES_URL"] = store_url
        elif backend == "sqlite":
            env["FF_SQLITE_PATH"] = store_url
        port = free_port()
        proc = subprocess.Popen([*appliance_command(), "serve", "--listen",
                                 f"127.0.0.1:{port}", "--processes", str(processes)],
                                cwd=folder, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc)
            yield Target(url, backend, proc.pid, [note], store_pid)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _no_store(folder: str) -> Iterator[tuple[str, None, str]]:
    yield os.path.join(folder, "flowfabric.db"), None, "store: new SQLite file"
