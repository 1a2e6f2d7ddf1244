"""An in-process appliance for tests: a real backend, the real HTTP app, a fake clock.

Scanners do not run on their own; a test moves the clock and ticks them::

    async with open_harness("sqlite", {"FF_SQLITE_PATH": str(tmp_path / "t.db")}) as h:
        eid = await h.create()
        task = await h.claim()
        h.clock.advance(31_000)
        await h.tick("lease_expiry")
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import trio
import trio_asyncio

from appliance.backend import Backend, BackendEnv
from appliance.backend.plugins import get_plugin_manager
from appliance.config import Config, load_config
from appliance.core.clock import FakeClock
from appliance.engine import Engine, ScanResult
from appliance.http import create_app
from appliance.http.app import RESOURCES
from appliance.service import Service
from appliance.supervisor import Background


@dataclass(slots=True)
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body!r})"


def eid_path(execution_id: str) -> str:
    """An execution id escaped for a URL path."""
    return quote(execution_id, safe="")


@dataclass(slots=True)
class Harness:
    config: Config
    clock: FakeClock
    backend: Backend
    service: Service
    engine: Engine
    client: Any

    async def call(self, method: str, path: str, json: Any = None, *,
                   headers: dict[str, str] | None = None, data: bytes | None = None,
                   query: dict[str, Any] | None = None) -> Reply:
        kwargs: dict[str, Any] = {"headers": headers or {}}
        if json is not None:
            kwargs["json"] = json
        if data is not None:
            kwargs["data"] = data
        if query is not None:
            kwargs["query_string"] = query
        response = await self.client.open(path, method=method, **kwargs)
        raw = await response.get_data()
        body: Any = raw
        if response.mimetype == "application/json":
            body = jsonlib.loads(raw)
        return Reply(response.status_code, body, response.headers)

    # -- shortcuts the conformance suite leans on ------------------------------------------
    async def create(self, **fields: Any) -> str:
        reply = await self.call("POST", "/v1/executions", fields)
        assert reply.status == 201, reply
        return reply.body["Created"]["execution_id"]

    async def claim(self, lane: str = "default", worker: str = "w1", **fields: Any) -> Any:
        body = {"lane_id": lane, "worker_instance_id": f"{worker}-1", **fields}
        reply = await self.call("POST", f"/v1/workers/{worker}/claim-task", body)
        assert reply.status in (200, 204), reply
        return reply.body if reply.status == 200 else None

    async def worker_op(self, op: str, task: dict[str, Any], **fields: Any) -> Reply:
        path = f"/v1/executions/{eid_path(task['execution_id'])}/{op}"
        return await self.call("POST", path, {"handle": task["handle"], **fields})

    async def info(self, execution_id: str) -> dict[str, Any]:
        reply = await self.call("GET", f"/v1/executions/{eid_path(execution_id)}")
        assert reply.status == 200, reply
        return reply.body

    async def tick(self, scanner: str) -> ScanResult:
        return await self.engine.run_once(scanner)


@asynccontextmanager
async def open_harness(backend: str, options: Mapping[str, str] | None = None, *,
                       serve: bool = True, resources: Sequence[Any] = ()
                       ) -> AsyncIterator[Harness]:
    """Prepare ``backend`` with ``options`` (FF_* settings), run its own task as the
    supervisor does, and serve the app in-process.

    ``resources`` add routes (see ``appliance.http.create_app``). ``serve=False`` leaves
    starting ``backend.serve`` to the test (to hear the
    notifications itself). Long-polling claims look again only when woken (``FF_CLAIM_REPOLL_MS=0`` unless the
    options say otherwise), so a lost wake-up fails a test instead of costing a re-poll.
    """
    clock = FakeClock()
    config = load_config({"FF_BACKEND": backend, "FF_CLAIM_REPOLL_MS": "0", **(options or {})},
                         clock=clock)
    instance = get_plugin_manager(config.plugin_path).make_backend(backend, config)
    async with trio_asyncio.open_loop():
        await instance.prepare(BackendEnv(config.partitions, clock, config.retention_ms))
        try:
            service = Service(instance, config)
            engine = Engine(instance, config.scanner_intervals_s, service.wake, clock.now_ms)
            app = create_app(service, config, (*RESOURCES, *resources))
            async with trio.open_nursery() as nursery:
                service.background = Background(nursery)
                if serve:
                    await nursery.start(instance.serve, service.work.notify)
                yield Harness(config, clock, instance, service, engine, app.test_client())
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await instance.close()
