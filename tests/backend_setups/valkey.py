"""A private redis-server for the session; each test gets it flushed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_redis_server() -> str:
    """The redis-server binary, or a loud failure in CI / a skip elsewhere."""
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        message = ("redis-server (or valkey-server) is not installed; the valkey backend "
                   "cannot be tested (apt-get install redis-server)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def redis_cli(port: int, *args: str, timeout: float = 10.0) -> str:
    cli = shutil.which("redis-cli") or shutil.which("valkey-cli") or "redis-cli"
    done = subprocess.run([cli, "-p", str(port), *args], capture_output=True, text=True,
                          timeout=timeout)
    return done.stdout.strip()


@dataclass
class RedisServer:
    """One redis-server process on 127.0.0.1; ``restart()`` keeps its port and data."""

    binary: str
    port: int
    folder: Path
    extra: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--dir", str(self.folder), "--daemonize", "no",
             *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while redis_cli(self.port, "PING") != "PONG":
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        """Stop as an operator's restart does (SIGTERM: the AOF is flushed), then start."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
            self.process = None
        self.start()


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(need_redis_server(), free_port(), tmp_path_factory.mktemp("valkey"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def valkey_backend_options(valkey_server: RedisServer) -> dict[str, str]:
    redis_cli(valkey_server.port, "FLUSHALL")
    return {"FF_VALKEY_URL": valkey_server.url}
