"""Attempt output stream benchmarks over HTTP (spec/streams.md), per backend:

    python tests/bench/bench_streams.py [--backend sqlite|valkey|postgres|all]
        [--seconds 8] [--workers 8] [--samples 200] [--json out.json]

1. ``append`` (batches of 1 and of 64 frames): ``--workers`` workers, each holding the lease
   of its own execution (all created with one batch request and claimed first), append
   durable frames of ~100 payload bytes to its attempt's stream with
   ``POST /v1/executions/{id}/frames`` as fast as the appliance answers, for ``--seconds``
   per batch size. Requests and frames per second over the run, append latency p50/p99.
   Every answer is checked (``count`` is the batch, ``frame_count`` grows by it, ids grow).
2. ``tail wake``: a reader blocks on
   ``GET …/attempts/0/stream/tail?after=<last>&block_ms=5000`` (on its own connection);
   once its request is sent and the appliance had a moment to park it, the worker appends
   one frame. The clock runs from just before the append is sent until the tail's answer
   (holding exactly that frame) arrives. p50/p99 over ``--samples``; beside it the append's
   own round trip, the floor a wake-up is compared with.

Each backend gets a fresh appliance on a fresh store (appliance.bench.target): SQLite a
new file, Valkey a private redis-server on a free port, PostgreSQL a new database that is
dropped afterwards. A scenario that fails (e.g. a backend answering 503 ``unavailable``
on a route it does not have yet) is reported and the next one runs; the exit code is
then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchkit import Refused, client, expect, path, pcts, report

from appliance.bench.target import started

BATCHES = (1, 64)
#: Long enough for any run; the executions are completed at the end anyway.
LEASE_TTL_MS = 300_000
#: After the tail's request is on the wire, how long the appliance gets to park it.
PARK_S = 0.02
LOREM = ("lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
         "incididunt ut labore et dolore magna aliqua")


def frame_id(raw: str) -> tuple[int, int]:
    ms, seq = raw.split("-")
    return int(ms), int(seq)


def payload(n: int) -> str:
    """About 100 bytes of text, like a log line or a few tokens."""
    return (f"frame {n:08d} " + LOREM)[:100]


async def claimed(http: httpx.AsyncClient, url: str, lane: str, n: int) -> list[dict[str, Any]]:
    """``n`` new executions on ``lane``, each leased (one task per worker)."""
    reply = expect(await http.post(f"{url}/v1/executions/batch", json={
        "executions": [{"execution_kind": "bench-stream", "lane_id": lane}] * n}), 200)
    for outcome in reply.json()["outcomes"]:
        if "Created" not in outcome:
            raise Refused(f"batch create item: {json.dumps(outcome)[:300]}")
    tasks: list[dict[str, Any]] = []
    while len(tasks) < n:
        reply = expect(await http.post(f"{url}/v1/workers/bench/claim-task", json={
            "lane_id": lane, "worker_instance_id": "bench-1", "wait_ms": 5000,
            "max_tasks": n - len(tasks), "lease_ttl_ms": LEASE_TTL_MS}), 200, 204)
        if reply.status_code == 204:
            raise Refused(f"claim-task on {lane} found nothing with {n - len(tasks)} "
                          "executions still to claim")
        tasks += reply.json()["tasks"]
    return tasks


async def complete_all(http: httpx.AsyncClient, url: str, tasks: list[dict[str, Any]]) -> None:
    reply = expect(await http.post(f"{url}/v1/workers/bench/complete", json={
        "items": [{"execution_id": t["execution_id"], "handle": t["handle"]} for t in tasks]}),
        200)
    for outcome in reply.json()["outcomes"]:
        if "Completed" not in outcome:
            raise Refused(f"complete item: {json.dumps(outcome)[:300]}")


# --- 1. append ---------------------------------------------------------------------------


async def append(url: str, batch: int, workers: int, seconds: float) -> dict[str, Any]:
    async with client() as http:
        tasks = await claimed(http, url, f"append-{batch}", workers)
    latency_ms: list[float] = []
    requests = [0]
    frames = [0]
    span = {"first": float("inf"), "last": 0.0}

    async def worker(task: dict[str, Any]) -> None:
        frames_url = f"{url}/v1/executions/{path(task['execution_id'])}/frames"
        sent = 0
        last = (0, -1)
        async with client() as http:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                body = {"handle": task["handle"],
                        "frames": [{"frame_type": "token", "payload": payload(sent + i)}
                                   for i in range(batch)]}
                start = time.perf_counter()
                span["first"] = min(span["first"], start)
                reply = expect(await http.post(frames_url, json=body), 200)
                done = time.perf_counter()
                span["last"] = max(span["last"], done)
                latency_ms.append((done - start) * 1000)
                appended = reply.json()["Appended"]
                sent += batch
                first, last_id = frame_id(appended["first_id"]), frame_id(appended["last_id"])
                if appended["count"] != batch or appended["frame_count"] != sent \
                        or not last < first <= last_id:
                    raise Refused(f"append answered {appended} after {sent - batch} frames "
                                  f"(last id {last})")
                last = last_id
                requests[0] += 1
                frames[0] += batch

    async with trio.open_nursery() as nursery:
        for task in tasks:
            nursery.start_soon(worker, task)
    async with client() as http:
        await complete_all(http, url, tasks)
    elapsed = span["last"] - span["first"]
    return {"batch": batch, "workers": workers, "requests": requests[0], "frames": frames[0],
            "requests_per_s": round(requests[0] / elapsed, 1),
            "frames_per_s": round(frames[0] / elapsed, 1), "append": pcts(latency_ms)}


# --- 2. tail wake ------------------------------------------------------------------------


async def tail_wake(url: str, samples: int) -> dict[str, Any]:
    async with client() as http:
        [task] = await claimed(http, url, "tail-wake", 1)
    eid = path(task["execution_id"])
    frames_url = f"{url}/v1/executions/{eid}/frames"
    tail_url = f"{url}/v1/executions/{eid}/attempts/0/stream/tail"
    wake_ms: list[float] = []
    append_ms: list[float] = []
    last = "0-0"
    async with client() as worker, client() as reader:
        # Both connections opened, so no sample pays for a connect.
        expect(await reader.get(tail_url, params={"after": "0-0"}), 200)
        expect(await worker.get(f"{url}/healthz"), 200)
        for n in range(samples):
            parked = trio.Event()
            answer: dict[str, Any] = {}

            async def trace(name: str, info: Any, parked: trio.Event = parked) -> None:
                if name == "http11.send_request_body.complete":
                    parked.set()

            async def tail(after: str, answer: dict[str, Any] = answer) -> None:
                reply = expect(await reader.get(tail_url,
                                                params={"after": after, "block_ms": 5000},
                                                extensions={"trace": trace}), 200)
                answer["at"] = time.perf_counter()
                answer["page"] = reply.json()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(tail, last)
                await parked.wait()
                await trio.sleep(PARK_S)
                if answer:
                    raise Refused(f"the tail after {last} answered before any append: "
                                  f"{json.dumps(answer['page'])[:300]}")
                start = time.perf_counter()
                reply = expect(await worker.post(frames_url, json={
                    "handle": task["handle"],
                    "frames": [{"frame_type": "token", "payload": payload(n)}]}), 200)
                append_ms.append((time.perf_counter() - start) * 1000)
            appended = reply.json()["Appended"]
            ids = [f["id"] for f in answer["page"]["frames"]]
            if ids != [appended["last_id"]]:
                raise Refused(f"the tail after {last} answered {ids}, the append "
                              f"{appended['last_id']}")
            wake_ms.append((answer["at"] - start) * 1000)
            last = appended["last_id"]
    async with client() as http:
        await complete_all(http, url, [task])
    return {"samples": samples, "wake": pcts(wake_ms), "append": pcts(append_ms)}


# --- driver ------------------------------------------------------------------------------


def reason(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def row(backend: str, scenario: str, rps: Any, fps: Any, p50: Any, p99: Any,
        extra: str = "") -> None:
    print(f"{backend:9} {scenario:16} {rps:>10} {fps:>10} {p50:>9} {p99:>9}  {extra}",
          flush=True)


def bench_one(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    try:
        with started(backend) as target:
            for batch in BATCHES:
                name = f"append x{batch}"
                try:
                    r = result[name] = trio.run(append, target.url, batch, args.workers,
                                                args.seconds)
                    row(backend, name, r["requests_per_s"], r["frames_per_s"],
                        r["append"]["p50_ms"], r["append"]["p99_ms"],
                        f"{args.workers} workers, {r['frames']} frames")
                except Exception as exc:  # noqa: BLE001 — reported, and the next one runs
                    result[name] = {"error": reason(exc)}
                    row(backend, name, "FAILED", "", "", "", reason(exc))
            try:
                t = result["tail wake"] = trio.run(tail_wake, target.url, args.samples)
                row(backend, "tail wake", "", "", t["wake"]["p50_ms"], t["wake"]["p99_ms"],
                    f"{args.samples} samples; the append alone p50 {t['append']['p50_ms']} "
                    f"p99 {t['append']['p99_ms']} ms")
            except Exception as exc:  # noqa: BLE001
                result["tail wake"] = {"error": reason(exc)}
                row(backend, "tail wake", "FAILED", "", "", "", reason(exc))
    except Exception as exc:  # noqa: BLE001 — the appliance did not start
        result["error"] = reason(exc)
        row(backend, "appliance", "FAILED", "", "", "", reason(exc))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="all",
                        choices=["sqlite", "valkey", "postgres", "all"])
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="how long each append scenario runs")
    parser.add_argument("--workers", type=int, default=8, help="concurrent appenders")
    parser.add_argument("--samples", type=int, default=200, help="tail wake-ups measured")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.seconds <= 0 or args.workers < 1 or args.samples < 1:
        parser.error("--seconds, --workers and --samples must be positive")
    backends = ["sqlite", "valkey", "postgres"] if args.backend == "all" else [args.backend]
    row("backend", "scenario", "req/s", "frames/s", "p50 ms", "p99 ms")
    results = {backend: bench_one(backend, args) for backend in backends}
    return report(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
