"""A real appliance on an ephemeral port, driven over the socket with httpx."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from appliance.config import load_config
from appliance.supervisor import Running, serve

SHUTDOWN_DEADLINE_S = 15


@dataclass
class Server:
    url: str
    token: str | None
    running: Running
    client: httpx.AsyncClient

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def create(self, **fields: Any) -> str:
        reply = await self.client.post("/v1/executions", json=fields, headers=self.auth())
        assert reply.status_code == 201, reply.text
        return reply.json()["Created"]["execution_id"]

    async def claim(self, worker: str = "w1", lane: str = "default",
                    **fields: Any) -> dict[str, Any]:
        body = {"lane_id": lane, "worker_instance_id": f"{worker}-1", **fields}
        reply = await self.client.post(f"/v1/workers/{worker}/claim-task", json=body,
                                       headers=self.auth())
        assert reply.status_code == 200, reply.text
        return reply.json()


StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[StartServer]:
    """``await start_server(FF_API_TOKEN="t", FF_CORS_ORIGINS="…")`` → a running Server."""
    servers: list[Server] = []
    with trio.fail_after(SHUTDOWN_DEADLINE_S + 30):
        async with trio.open_nursery() as nursery:

            async def start(**env: str) -> Server:
                config = load_config({
                    "FF_LISTEN_ADDR": "127.0.0.1:0",
                    "FF_SQLITE_PATH": str(tmp_path / f"http{len(servers)}.db"),
                    "FF_SHUTDOWN_GRACE_MS": "2000",
                    **env,
                })
                running = await nursery.start(functools.partial(serve, config,
                                                                handle_signals=False))
                url = running.binds[0]
                server = Server(url, config.api_token, running,
                                httpx.AsyncClient(base_url=url, timeout=10))
                servers.append(server)
                return server

            try:
                yield start
            finally:
                for server in servers:
                    await server.client.aclose()
                    server.running.stop()


@pytest.fixture
async def server(start_server: StartServer) -> Server:
    return await start_server()


@pytest.fixture
async def secured(start_server: StartServer) -> Server:
    return await start_server(FF_API_TOKEN="tok")
