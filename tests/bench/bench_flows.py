"""Flow benchmarks over HTTP, per backend:

    python tests/bench/bench_flows.py [--backend sqlite|valkey|postgres|all] [--chains 200]
        [--steps 10] [--workers 16] [--rounds 30] [--json out.json]

1. ``chains``: ``--chains`` chains of ``--steps`` steps, each one ``POST /v1/flows`` with
   its nodes and edges, all submitted at once; ``--workers`` workers claim one task at a
   time (long-poll) and complete it. Chains per second, from the first submit to the
   last step's completion. Run again with workers claiming up to ``--batch`` tasks and
   completing them in one batch call.
2. ``chain latency``: one chain alone, one worker: submit → last step completed, p50/p99
   over ``--rounds`` chains.
3. ``cancel``: ``POST /v1/flows/{id}/cancel?wait=true`` of a 100-member flow, p50/p99 over
   ``--rounds`` flows.

Each backend gets a fresh appliance on a fresh store (appliance.bench.target).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from appliance.bench.target import started


def chain_body(lane: str, steps: int) -> dict[str, Any]:
    return {"flow_kind": "bench",
            "nodes": [{"key": f"s{i}", "lane_id": lane} for i in range(steps)],
            "edges": [{"from": f"s{i}", "to": f"s{i + 1}"} for i in range(steps - 1)]}


async def submit(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = await client.post(f"{url}/v1/flows", json=body)
    assert reply.status_code == 201, reply.text
    return reply.json()["Created"]


async def work(client: httpx.AsyncClient, url: str, lane: str, worker: str,
               batch: int = 1) -> int:
    """Claim up to ``batch`` tasks of ``lane`` (waiting up to 1 s) and complete them (one
    batch call when several); how many."""
    body = {"lane_id": lane, "worker_instance_id": f"{worker}-1", "wait_ms": 1000}
    if batch > 1:
        body["max_tasks"] = batch
    reply = await client.post(f"{url}/v1/workers/{worker}/claim-task", json=body)
    if reply.status_code == 204:
        return 0
    assert reply.status_code == 200, reply.text
    if batch == 1:
        task = reply.json()
        eid = task["execution_id"].replace("{", "%7B").replace("}", "%7D")
        done = await client.post(f"{url}/v1/executions/{eid}/complete",
                                 json={"handle": task["handle"]})
        assert done.status_code == 200, done.text
        return 1
    tasks = reply.json()["tasks"]
    done = await client.post(f"{url}/v1/workers/{worker}/complete", json={"items": [
        {"execution_id": t["execution_id"], "handle": t["handle"]} for t in tasks]})
    assert done.status_code == 200 and all("Completed" in o for o in done.json()["outcomes"])
    return len(tasks)


async def chains(client: httpx.AsyncClient, url: str, n: int, steps: int,
                 workers: int, batch: int) -> dict[str, Any]:
    total, done = n * steps, 0
    finished = trio.Event()

    async def worker(i: int) -> None:
        nonlocal done
        while not finished.is_set():
            got = await work(client, url, f"chains{batch}", f"w{i}", batch)
            done += got  # not `done += await …`: that reads done before the await
            if done == total:
                finished.set()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(workers):
            nursery.start_soon(worker, i)
        async with trio.open_nursery() as submitters:
            for _ in range(n):
                submitters.start_soon(submit, client, url, chain_body(f"chains{batch}", steps))
        await finished.wait()
        nursery.cancel_scope.cancel()
    wall = time.perf_counter() - start
    return {"chains": n, "steps": steps, "workers": workers, "batch": batch,
            "wall_s": round(wall, 3),
            "chains_per_s": round(n / wall, 1), "steps_per_s": round(total / wall, 1)}


def pcts(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2)}


async def chain_latency(client: httpx.AsyncClient, url: str, steps: int,
                        rounds: int) -> dict[str, Any]:
    samples = []
    for r in range(rounds):
        lane = f"alone{r}"
        start = time.perf_counter()
        await submit(client, url, chain_body(lane, steps))
        for _ in range(steps):
            while not await work(client, url, lane, "solo"):
                pass
        samples.append((time.perf_counter() - start) * 1000)
    return {"steps": steps, "rounds": rounds, **pcts(samples)}


async def cancel_latency(client: httpx.AsyncClient, url: str, members: int,
                         rounds: int) -> dict[str, Any]:
    samples = []
    for _ in range(rounds):
        flow = await submit(client, url, {"flow_kind": "bench", "nodes": [
            {"key": f"m{i}", "lane_id": "cancel"} for i in range(members)]})
        start = time.perf_counter()
        reply = await client.post(f"{url}/v1/flows/{flow['flow_id']}/cancel",
                                  params={"wait": "true"},
                                  json={"flow_id": flow["flow_id"],
                                        "cancellation_policy": "cancel_all"})
        samples.append((time.perf_counter() - start) * 1000)
        assert reply.status_code == 200 and "Cancelled" in reply.json(), reply.text
    return {"members": members, "rounds": rounds, **pcts(samples)}


async def bench_one(url: str, args: argparse.Namespace) -> dict[str, Any]:
    # Idle connections are dropped before the appliance closes them (its keep-alive is 5 s).
    limits = httpx.Limits(max_connections=args.workers + args.chains + 8, keepalive_expiry=2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        return {"chains": await chains(client, url, args.chains, args.steps, args.workers, 1),
                "chains_batch": await chains(client, url, args.chains, args.steps,
                                             args.workers, args.batch),
                "chain_latency": await chain_latency(client, url, args.steps, args.rounds),
                "cancel_100": await cancel_latency(client, url, 100, args.rounds)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="all")
    parser.add_argument("--chains", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16,
                        help="tasks per claim in the batch run of the chains scenario")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    backends = ["sqlite", "valkey", "postgres"] if args.backend == "all" else [args.backend]
    results = {}
    for backend in backends:
        with started(backend) as target:
            results[backend] = trio.run(bench_one, target.url, args)
        r = results[backend]
        print(f"{backend:9} {r['chains']['chains_per_s']:7.1f} chains/s "
              f"({r['chains']['steps_per_s']:.0f} steps/s); batch workers "
              f"{r['chains_batch']['chains_per_s']:.1f} | one chain of {args.steps}: "
              f"p50 {r['chain_latency']['p50_ms']} ms p99 {r['chain_latency']['p99_ms']} ms "
              f"| cancel 100 ?wait=true: p50 {r['cancel_100']['p50_ms']} ms "
              f"p99 {r['cancel_100']['p99_ms']} ms", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
