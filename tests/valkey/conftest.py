"""Servers of our own for the Valkey-specific tests: a fresh one per test, and a cluster."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_setups.valkey import RedisServer, free_port, need_redis_server, redis_cli

from appliance.testing import open_harness

CLUSTER_NODES = 3
CLUSTER_TIMEOUT_S = 20.0


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server for a test that restarts it or needs it empty of libraries."""
    server = RedisServer(need_redis_server(), free_port(), tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def cluster_ports(count: int) -> list[int]:
    """Ports whose cluster-bus port (+10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port + 10000 <= 65535 and port not in ports:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            ports.append(port)
    return ports


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    """Three masters, no replicas, every slot covered."""
    binary = need_redis_server()
    folder = tmp_path_factory.mktemp("cluster")
    nodes = [RedisServer(binary, port, folder / str(port),
                         extra=("--cluster-enabled", "yes", "--cluster-config-file",
                                str(folder / f"nodes-{port}.conf")))
             for port in cluster_ports(CLUSTER_NODES)]
    try:
        for node in nodes:
            node.start()
        cli = shutil.which("redis-cli") or shutil.which("valkey-cli") or "redis-cli"
        subprocess.run([cli, "--cluster", "create",
                        *(f"127.0.0.1:{n.port}" for n in nodes),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=CLUSTER_TIMEOUT_S)
        deadline = time.monotonic() + CLUSTER_TIMEOUT_S
        while not all("cluster_state:ok" in redis_cli(n.port, "CLUSTER", "INFO") for n in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
async def ff_valkey(valkey_backend_options):
    """A harness on the session's server, for behaviour only the Valkey backend has."""
    async with open_harness("valkey", valkey_backend_options) as harness:
        yield harness
