"""Bench scenarios, driven over HTTP exactly as workers and clients use the appliance.

S1: submit → claim → complete N no-op tasks with 16 workers, ``batch`` (creates,
claims and completes of up to ``batch`` items per request) or ``single`` (one per
request), ``split`` (one producer, the workers only claim and complete) or
``inline`` (each worker creates, claims and completes). S3: a steady rate of single
creates for a while, 16 workers: latency under load. ``latency``: one task at a
time with one worker already long-polling.
"""

from __future__ import annotations

import base64
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import trio

from .client import Client, Connection
from .target import Target

LANE = "bench"
CLAIM_WAIT_MS = 1000


@dataclass
class Result:
    scenario: str
    backend: str
    mode: str
    shape: str
    tasks: int
    workers: int
    batch: int
    wall_s: float = 0.0
    throughput_per_s: float = 0.0
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    server_cpu_us_per_task: float | None = None
    store_cpu_us_per_task: float | None = None
    client_cpu_us_per_task: float | None = None
    requests: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q))], 3)
    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99)}


class Progress:
    """A one-line progress bar on stderr (only on a terminal)."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done = total, label, 0
        self.shown = 0.0
        self.tty = sys.stderr.isatty()

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and (now - self.shown > 0.1 or self.done >= self.total):
            self.shown = now
            filled = int(30 * self.done / max(self.total, 1))
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] "
                             f"{self.done}/{self.total}")
            sys.stderr.flush()

    def end(self) -> None:
        if self.tty:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()


@dataclass
class Tally:
    """When each task's create was sent and its completion acknowledged, by id."""

    total: int
    progress: Progress
    created: dict[str, float] = field(default_factory=dict)
    completed: dict[str, float] = field(default_factory=dict)
    first_sent: float = 0.0
    requests: int = 0
    finished: trio.Event = field(default_factory=trio.Event)

    def mark_done(self, ids: list[str]) -> None:
        now = time.perf_counter()
        for eid in ids:
            self.completed.setdefault(eid, now)
        self.progress.add(len(ids))
        if len(self.completed) >= self.total:
            self.finished.set()


def _expect(status: int, body: Any, what: str) -> None:
    if status >= 300:
        raise RuntimeError(f"{what} answered {status}: {body}")


async def _create(conn: Connection, tally: Tally, n: int, payload: str, batch: bool) -> None:
    """Create ``n`` tasks; their latency counts from the create's send."""
    sent = time.perf_counter()
    if not tally.first_sent:
        tally.first_sent = sent
    items = [{"lane_id": LANE, "execution_kind": "bench", "input_payload_b64": payload}
             for _ in range(n)]
    tally.requests += 1
    if batch:
        status, body = await conn.request("POST", "/v1/executions/batch", {"executions": items})
        _expect(status, body, "create batch")
        ids = [o["Created"]["execution_id"] for o in body["outcomes"]]
    else:
        status, body = await conn.request("POST", "/v1/executions", items[0])
        _expect(status, body, "create")
        ids = [body["Created"]["execution_id"]]
    for eid in ids:
        tally.created[eid] = sent


async def _claim_and_complete(conn: Connection, worker: str, tally: Tally, batch: int,
                              wait_ms: int) -> int:
    """One claim (of up to ``batch``) and the completes; how many were done."""
    body: dict[str, Any] = {"lane_id": LANE, "worker_instance_id": f"{worker}-1",
                            "wait_ms": wait_ms}
    if batch > 1:
        body["max_tasks"] = batch
    tally.requests += 1
    status, answer = await conn.request("POST", f"/v1/workers/{worker}/claim-task", body)
    if status == 204:
        return 0
    _expect(status, answer, "claim-task")
    tasks = answer["tasks"] if batch > 1 else [answer]
    if batch > 1:
        tally.requests += 1
        status, done = await conn.request("POST", f"/v1/workers/{worker}/complete", {"items": [
            {"execution_id": t["execution_id"], "handle": t["handle"]} for t in tasks]})
        _expect(status, done, "complete batch")
        failed = [o for o in done["outcomes"] if "Completed" not in o]
        if failed:
            raise RuntimeError(f"complete batch: {failed[:3]}")
    else:
        task = tasks[0]
        tally.requests += 1
        status, done = await conn.request(
            "POST", f"/v1/executions/{_quote(task['execution_id'])}/complete",
            {"handle": task["handle"]})
        _expect(status, done, "complete")
    tally.mark_done([t["execution_id"] for t in tasks])
    return len(tasks)


def _quote(eid: str) -> str:
    return eid.replace("{", "%7B").replace("}", "%7D")


async def s1(target: Target, *, tasks: int = 5000, workers: int = 16, batch: int = 32,
             mode: str = "batch", shape: str = "split", payload_bytes: int = 8,
             token: str | None = None) -> Result:
    """S1: submit → claim → complete ``tasks`` no-op tasks."""
    size = batch if mode == "batch" else 1
    payload = base64.b64encode(os.urandom(payload_bytes)).decode()
    client = Client(target.url, token)
    tally = Tally(tasks, Progress(tasks, f"S1 {mode}/{shape} on {target.backend}"))

    async def producer() -> None:
        conn = await client.connect()
        left = tasks
        while left > 0:
            n = min(size, left)
            await _create(conn, tally, n, payload, mode == "batch")
            left -= n

    async def worker(i: int, share: int) -> None:
        conn = await client.connect()
        name = f"bench-{i}"
        if shape == "inline":
            while share > 0:
                n = min(size, share)
                await _create(conn, tally, n, payload, mode == "batch")
                share -= n
                got = 0
                while got < n:
                    got += await _claim_and_complete(conn, name, tally, n - got,
                                                     CLAIM_WAIT_MS)
            return
        while not tally.finished.is_set():
            await _claim_and_complete(conn, name, tally, size, CLAIM_WAIT_MS)

    result = Result("S1", target.backend, mode, shape, tasks, workers, size)
    await _measured(target, result, tally, lambda nursery: _start_s1(
        nursery, producer, worker, shape, workers, tasks))
    return result


def _start_s1(nursery: trio.Nursery, producer: Callable[[], Awaitable[None]],
              worker: Callable[[int, int], Awaitable[None]], shape: str, workers: int,
              tasks: int) -> None:
    shares = [tasks // workers + (1 if i < tasks % workers else 0) for i in range(workers)]
    for i in range(workers):
        nursery.start_soon(worker, i, shares[i])
    if shape == "split":
        nursery.start_soon(producer)


async def _measured(target: Target, result: Result, tally: Tally,
                    start: Callable[[trio.Nursery], None]) -> None:
    """Run the scenario; fill in wall time, throughput, latency and CPU per task."""
    server0, store0 = target.cpu()
    client0 = _own_cpu()
    async with trio.open_nursery() as nursery:
        start(nursery)
        await tally.finished.wait()
        nursery.cancel_scope.cancel()
    tally.progress.end()
    server1, store1 = target.cpu()
    client1 = _own_cpu()
    last = max(tally.completed.values())
    result.wall_s = round(last - tally.first_sent, 3)
    result.throughput_per_s = round(len(tally.completed) / result.wall_s, 1)
    result.latency_ms = percentiles([(tally.completed[e] - tally.created[e]) * 1000
                                     for e in tally.completed if e in tally.created])
    result.requests = tally.requests
    n = len(tally.completed)
    result.client_cpu_us_per_task = round((client1 - client0) / n * 1e6, 1)
    if server0 is not None and server1 is not None:
        result.server_cpu_us_per_task = round((server1 - server0) / n * 1e6, 1)
    if store0 is not None and store1 is not None:
        result.store_cpu_us_per_task = round((store1 - store0) / n * 1e6, 1)
    result.notes += target.notes


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def s3(target: Target, *, rate: float = 200.0, duration_s: float = 20.0,
             workers: int = 16, payload_bytes: int = 8, token: str | None = None) -> Result:
    """S3: single creates at a fixed rate for ``duration_s``; latency under that load."""
    total = int(rate * duration_s)
    payload = base64.b64encode(os.urandom(payload_bytes)).decode()
    client = Client(target.url, token)
    tally = Tally(total, Progress(total, f"S3 {rate:g}/s on {target.backend}"))

    async def producer() -> None:
        idle = [await client.connect() for _ in range(4)]

        async def send() -> None:
            # A connection carries one request at a time: a slow answer takes a new one.
            conn = idle.pop() if idle else await client.connect()
            await _create(conn, tally, 1, payload, False)
            idle.append(conn)

        start = trio.current_time()
        async with trio.open_nursery() as sends:
            for i in range(total):
                await trio.sleep_until(start + i / rate)
                sends.start_soon(send)

    async def worker(i: int) -> None:
        conn = await client.connect()
        while not tally.finished.is_set():
            await _claim_and_complete(conn, f"bench-{i}", tally, 1, CLAIM_WAIT_MS)

    def start(nursery: trio.Nursery) -> None:
        for i in range(workers):
            nursery.start_soon(worker, i)
        nursery.start_soon(producer)

    result = Result("S3", target.backend, "single", f"{rate:g}/s", total, workers, 1)
    await _measured(target, result, tally, start)
    return result


async def latency(target: Target, *, samples: int = 200, token: str | None = None) -> Result:
    """One task at a time, one worker already long-polling: create → completion."""
    client = Client(target.url, token)
    tally = Tally(samples, Progress(samples, f"latency on {target.backend}"))
    turn = trio.Semaphore(0)

    async def producer() -> None:
        conn = await client.connect()
        for _ in range(samples):
            await _create(conn, tally, 1, "", False)
            await turn.acquire()

    async def worker() -> None:
        conn = await client.connect()
        while not tally.finished.is_set():
            if await _claim_and_complete(conn, "bench-0", tally, 1, 5000):
                turn.release()

    def start(nursery: trio.Nursery) -> None:
        nursery.start_soon(worker)
        nursery.start_soon(producer)

    result = Result("latency", target.backend, "single", "one at a time", samples, 1, 1)
    await _measured(target, result, tally, start)
    return result
