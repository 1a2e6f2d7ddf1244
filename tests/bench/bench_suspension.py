"""Human-in-the-loop benchmarks over HTTP, per backend:

    python tests/bench/bench_suspension.py [--backend sqlite|valkey|postgres|all]
        [--rounds 200] [--executions 2000] [--senders 16] [--json out.json]

1. ``resume``: an execution is claimed and suspended on ``Single{approval, "approved"}``; a
   worker long-polls ``claim-task``; the clock runs from sending the signal to that
   ``claim-task`` returning the resumed task (with its signal). p50/p99 over ``--rounds``.
   Beside it, the same measure for an ordinary create (``create`` request sent → the waiting
   worker's claim returns), the baseline a signal is compared with.
2. ``signals``: ``--executions`` executions suspended, one waitpoint each; ``--senders``
   concurrent senders signal them all (each signal resumes its execution). Signals per
   second, from the first send to the last answer.

Each backend gets a fresh appliance on a fresh store (appliance.bench.target).
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
from benchkit import path, pcts

from appliance.bench.target import started

CONDITION = {"Single": {"waitpoint_key": "approval", "matcher": {"ByName": "approved"}}}


async def create(client: httpx.AsyncClient, url: str, lane: str) -> str:
    reply = await client.post(f"{url}/v1/executions",
                              json={"execution_kind": "bench", "lane_id": lane})
    assert reply.status_code == 201, reply.text
    return reply.json()["Created"]["execution_id"]


async def claim(client: httpx.AsyncClient, url: str, lane: str, wait_ms: int = 5000,
                max_tasks: int | None = None) -> Any:
    body: dict[str, Any] = {"lane_id": lane, "worker_instance_id": "w-1", "wait_ms": wait_ms}
    if max_tasks:
        body["max_tasks"] = max_tasks
    reply = await client.post(f"{url}/v1/workers/w/claim-task", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()


async def suspend(client: httpx.AsyncClient, url: str, task: dict[str, Any]) -> dict[str, str]:
    reply = await client.post(f"{url}/v1/executions/{path(task['execution_id'])}/suspend",
                              json={"handle": task["handle"], "resume_condition": CONDITION})
    assert reply.status_code == 200, reply.text
    return reply.json()["Suspended"]["waitpoints"][0]


async def signal(client: httpx.AsyncClient, url: str, eid: str, wp: dict[str, str]) -> None:
    reply = await client.post(f"{url}/v1/executions/{path(eid)}/signal", json={
        "waitpoint_id": wp["waitpoint_id"], "waitpoint_token": wp["token"],
        "signal_name": "approved", "signal_category": "approval", "source_type": "user",
        "source_identity": "bench", "payload_b64": "b2s="})
    assert reply.status_code == 200 and "Accepted" in reply.json(), reply.text


async def complete(client: httpx.AsyncClient, url: str, task: dict[str, Any]) -> None:
    reply = await client.post(f"{url}/v1/executions/{path(task['execution_id'])}/complete",
                              json={"handle": task["handle"]})
    assert reply.status_code == 200, reply.text


async def waiting_claim(client: httpx.AsyncClient, url: str, lane: str,
                        trigger: Any) -> float:
    """ms from ``trigger()`` being sent to a claim that was already waiting returning."""
    got: dict[str, Any] = {}

    async def worker() -> None:
        got["task"] = await claim(client, url, lane)
        got["at"] = time.perf_counter()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker)
        await trio.sleep(0.02)  # the claim is registered and waiting
        start = time.perf_counter()
        await trigger()
    await complete(client, url, got["task"])
    if got["task"]["resumed"]:
        assert got["task"]["signals"][0]["payload_b64"] == "b2s="
    return (got["at"] - start) * 1000


async def resume_latency(client: httpx.AsyncClient, url: str, rounds: int) -> dict[str, Any]:
    samples, baseline = [], []
    for r in range(rounds):
        lane = f"resume{r}"
        eid = await create(client, url, lane)
        wp = await suspend(client, url, await claim(client, url, lane))
        samples.append(await waiting_claim(client, url, lane,
                                           lambda eid=eid, wp=wp: signal(client, url, eid, wp)))
        lane = f"create{r}"
        baseline.append(await waiting_claim(client, url, lane,
                                            lambda lane=lane: create(client, url, lane)))
    return {"rounds": rounds, **pcts(samples), "create_baseline": pcts(baseline)}


async def signal_rate(client: httpx.AsyncClient, url: str, n: int,
                      senders: int) -> dict[str, Any]:
    lane = "signals"
    for start in range(0, n, 1000):
        reply = await client.post(f"{url}/v1/executions/batch", json={"executions": [
            {"execution_kind": "bench", "lane_id": lane} for _ in range(min(1000, n - start))]})
        assert reply.status_code == 200, reply.text
    tasks: list[dict[str, Any]] = []
    while len(tasks) < n:
        tasks += (await claim(client, url, lane, max_tasks=1000))["tasks"]
    targets: list[tuple[str, dict[str, str]]] = []

    async def suspender(chunk: list[dict[str, Any]]) -> None:
        for task in chunk:
            targets.append((task["execution_id"], await suspend(client, url, task)))

    async with trio.open_nursery() as nursery:
        for i in range(senders):
            nursery.start_soon(suspender, tasks[i::senders])
    start = time.perf_counter()

    async def sender(chunk: list[tuple[str, dict[str, str]]]) -> None:
        for eid, wp in chunk:
            await signal(client, url, eid, wp)

    async with trio.open_nursery() as nursery:
        for i in range(senders):
            nursery.start_soon(sender, targets[i::senders])
    elapsed = time.perf_counter() - start
    return {"signals": n, "senders": senders, "signals_per_s": round(n / elapsed, 1)}


async def bench_one(url: str, args: argparse.Namespace) -> dict[str, Any]:
    # Idle connections are dropped before the appliance closes them (its keep-alive is 5 s).
    limits = httpx.Limits(max_connections=args.senders + 8, keepalive_expiry=2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        return {"resume": await resume_latency(client, url, args.rounds),
                "signals": await signal_rate(client, url, args.executions, args.senders)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="all")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--executions", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    backends = ["sqlite", "valkey", "postgres"] if args.backend == "all" else [args.backend]
    results = {}
    for backend in backends:
        with started(backend) as target:
            results[backend] = trio.run(bench_one, target.url, args)
        r = results[backend]
        print(f"{backend:9} signal → resumed claim p50 {r['resume']['p50_ms']} ms "
              f"p99 {r['resume']['p99_ms']} ms (create → claim p50 "
              f"{r['resume']['create_baseline']['p50_ms']} ms p99 "
              f"{r['resume']['create_baseline']['p99_ms']} ms) | "
              f"{r['signals']['signals_per_s']} signals/s with {args.senders} senders",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
