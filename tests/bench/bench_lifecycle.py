"""Lifecycle throughput: create → claim → complete over HTTP, with latency percentiles.

    python tests/bench/bench_lifecycle.py [--url URL] [--workers 16] [--tasks 2000]
        [--payload-bytes 4096] [--backend sqlite] [--mode inline|split|both] [--json out.json]

Without --url it starts its own appliance (``python -m appliance serve`` on a free port,
store in a temporary directory) and stops it afterwards.

Modes: ``inline`` — every worker creates a task, claims one and completes it, in a loop;
``split`` — one producer creates all tasks while the workers only claim and complete.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.serve_process import ApplianceProcess  # noqa: E402

LANE = "bench"


@dataclass
class Run:
    client: httpx.AsyncClient
    url: str
    tasks: int
    payload_b64: str
    created_at: dict[str, float] = field(default_factory=dict)
    task_ms: list[float] = field(default_factory=list)
    request_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    issued: int = 0
    finished: trio.Event = field(default_factory=trio.Event)
    ended_at: float = 0.0

    async def request(self, op: str, path: str, body: dict[str, Any]) -> httpx.Response:
        start = time.perf_counter()
        reply = await self.client.post(f"{self.url}{path}", json=body)
        if reply.status_code == 204:
            op = f"{op}-empty"
        self.request_ms[op].append((time.perf_counter() - start) * 1000)
        if reply.status_code not in (200, 201, 204):
            raise RuntimeError(f"{op} {path} -> {reply.status_code} {reply.text}")
        return reply

    async def create(self) -> None:
        # Client-minted ids (spread over partitions, as the original's bench does), so the
        # start time is known before a fast worker can claim the execution.
        eid = f"{{fp:{random.randrange(256)}}}:{uuid.uuid4()}"
        self.created_at[eid] = time.perf_counter()
        await self.request("create", "/v1/executions", {"execution_id": eid, "lane_id": LANE,
                                                        "input_payload_b64": self.payload_b64})

    async def claim_and_complete(self, worker: int) -> bool:
        reply = await self.request("claim", f"/v1/workers/bench-{worker}/claim-task",
                                   {"lane_id": LANE, "worker_instance_id": f"bench-{worker}-0",
                                    "wait_ms": 1000})
        if reply.status_code == 204:
            return False
        task = reply.json()
        eid = task["execution_id"]
        await self.request("complete", f"/v1/executions/{quote(eid, safe='')}/complete",
                           {"handle": task["handle"], "result_b64": "b2s="})
        self.task_ms.append((time.perf_counter() - self.created_at.pop(eid)) * 1000)
        if len(self.task_ms) == self.tasks:
            self.ended_at = time.perf_counter()
            self.finished.set()
        return True


async def inline_worker(run: Run, worker: int) -> None:
    while run.issued < run.tasks:
        run.issued += 1
        await run.create()
        while not await run.claim_and_complete(worker):
            pass


async def claiming_worker(run: Run, worker: int) -> None:
    while not run.finished.is_set():
        await run.claim_and_complete(worker)


async def producer(run: Run) -> None:
    for _ in range(run.tasks):
        await run.create()


async def measure(url: str, mode: str, workers: int, tasks: int, payload_bytes: int
                  ) -> tuple[float, Run]:
    limits = httpx.Limits(max_connections=workers + 4, max_keepalive_connections=workers + 4)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        payload = base64.b64encode(os.urandom(payload_bytes)).decode()
        run = Run(client, url, tasks, payload)
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            if mode == "split":
                nursery.start_soon(producer, run)
            for worker in range(workers):
                nursery.start_soon(inline_worker if mode == "inline" else claiming_worker,
                                   run, worker)
            await run.finished.wait()
            nursery.cancel_scope.cancel()
        return run.ended_at - start, run


def percentiles(samples: list[float]) -> dict[str, float]:
    if len(samples) < 2:
        samples = samples * 2 or [0.0, 0.0]
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": round(cuts[49], 2), "p95": round(cuts[94], 2), "p99": round(cuts[98], 2)}


def host() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count()}


def report(mode: str, args: argparse.Namespace, wall_s: float, run: Run) -> dict[str, Any]:
    result = {
        "scenario": f"lifecycle-{mode}",
        "system": "flowfabric-python",
        "backend": args.backend,
        "workers": args.workers,
        "tasks": args.tasks,
        "payload_bytes": args.payload_bytes,
        "wall_s": round(wall_s, 3),
        "throughput_tasks_per_sec": round(args.tasks / wall_s, 1),
        "latency_ms": percentiles(run.task_ms),
        "request_latency_ms": {op: percentiles(ms) for op, ms in run.request_ms.items()},
        "host": host(),
        "timestamp_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(f"{result['scenario']}: {args.tasks} tasks, {args.workers} workers, "
          f"{args.payload_bytes} B payload, backend {args.backend}")
    print(f"  wall {wall_s:.2f} s   throughput {result['throughput_tasks_per_sec']} tasks/s")
    print("  task create→complete ms  " + fmt(result["latency_ms"]))
    for op, pct in result["request_latency_ms"].items():
        print(f"  {op:<11} request ms    " + fmt(pct) + f"   (n={len(run.request_ms[op])})")
    return result


def fmt(pct: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:8.2f}" for k, v in pct.items())


async def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    modes = ["inline", "split"] if args.mode == "both" else [args.mode]
    results = []
    for mode in modes:
        wall_s, run = await measure(args.url, mode, args.workers, args.tasks,
                                    args.payload_bytes)
        results.append(report(mode, args, wall_s, run))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running appliance (default: start one)")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--payload-bytes", type=int, default=4096)
    parser.add_argument("--backend", default="sqlite")
    parser.add_argument("--mode", choices=("inline", "split", "both"), default="inline")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args()

    appliance = None
    with tempfile.TemporaryDirectory(prefix="ff-bench-") as folder:
        if args.url is None:
            appliance = ApplianceProcess(Path(folder), ["serve", "--listen", "127.0.0.1:0",
                                                        "--backend", args.backend])
            args.url = appliance.wait_listening()
        try:
            results = trio.run(bench, args)
        finally:
            if appliance is not None:
                code = appliance.stop(timeout=30)
                if code != 0:
                    print(f"appliance exited {code}; its log:\n{appliance.log}",
                          file=sys.stderr)
    if args.json:
        out = results[0] if len(results) == 1 else results
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
