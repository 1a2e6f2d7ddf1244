"""Admission benchmarks over HTTP (spec/admission.md), per backend:

    python tests/bench/bench_admission.py [--backend sqlite|valkey|postgres|all]
        [--tasks 2000] [--workers 8] [--json out.json]

1. ``routed`` (the original's scenario 5, capability routing): ``--workers`` workers spread
   round-robin over four pools, capabilities {cpu}, {cpu,gpu}, {cpu,ssd}, {cpu,gpu,ssd,big};
   ``--tasks`` tasks on one lane, each requiring one of [], [cpu], [gpu], [ssd], [gpu,ssd],
   [big] at random (only sets some staffed pool covers), all created first with
   ``POST /v1/executions/batch``. Then every worker at once loops ``claim-task`` (one task,
   ``wait_ms`` 1000, its capabilities) → ``complete`` until all tasks are done. Every task
   a worker gets is checked to be within its capabilities, and each is run exactly once.
   Tasks per second from the first claim to the last complete; claim latency p50/p99 of
   the claims that returned a task (the empty long polls are counted apart).
2. ``overhead`` (what limits cost a claim): ``--tasks`` tasks on a lane of their own with
   no limits (a), and ``--tasks`` on another lane each attached to one budget (a huge hard
   limit) and one quota (1,000,000 admissions per 60 s, 1,000 concurrent) (b); both sets
   are created before either run. One worker claims (``wait_ms`` 0) and completes them
   one at a time, (a) then (b): claim latency p50/p99 and cycles per second, and the
   ratio (b)/(a).

Each backend gets a fresh appliance on a fresh store (appliance.bench.target); the
scenarios run one after the other on it. A scenario that fails (e.g. a backend answering
503 ``unavailable`` on a route it does not have yet) is reported and the next one runs;
the exit code is then 1.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchkit import Refused, client, expect, path, pcts, report

from appliance.bench.target import started

POOLS = [["cpu"], ["cpu", "gpu"], ["cpu", "ssd"], ["cpu", "gpu", "ssd", "big"]]
REQUIREMENTS = [[], ["cpu"], ["gpu"], ["ssd"], ["gpu", "ssd"], ["big"]]
BATCH = 1000


async def create_all(http: httpx.AsyncClient, url: str,
                     bodies: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(bodies), BATCH):
        reply = expect(await http.post(f"{url}/v1/executions/batch",
                                       json={"executions": bodies[start:start + BATCH]}), 200)
        for outcome in reply.json()["outcomes"]:
            if "Created" not in outcome:
                raise Refused(f"batch create item: {json.dumps(outcome)[:300]}")
            ids.append(outcome["Created"]["execution_id"])
    return ids


async def complete(http: httpx.AsyncClient, url: str, task: dict[str, Any]) -> None:
    expect(await http.post(f"{url}/v1/executions/{path(task['execution_id'])}/complete",
                           json={"handle": task["handle"]}), 200)


# --- 1. routed ---------------------------------------------------------------------------


async def routed(url: str, n: int, workers: int, seed: int) -> dict[str, Any]:
    lane = "routed"
    staffed = [POOLS[i % len(POOLS)] for i in range(min(workers, len(POOLS)))]
    choices = [req for req in REQUIREMENTS if any(set(req) <= set(p) for p in staffed)]
    rng = random.Random(seed)
    wanted = [rng.choice(choices) for _ in range(n)]
    async with client() as http:
        ids = await create_all(http, url, [
            {"execution_kind": "bench", "lane_id": lane,
             "policy": {"routing_requirements": {"required_capabilities": req}}}
            for req in wanted])
    required = {eid: set(req) for eid, req in zip(ids, wanted, strict=True)}

    claim_ms: list[float] = []
    empty = [0]
    done = [0]
    got: dict[str, str] = {}  # execution id → worker instance that ran it
    per_pool = {",".join(p): 0 for p in POOLS}
    span = {"first": float("inf"), "last": 0.0}

    async def worker(i: int, cancel: trio.CancelScope) -> None:
        caps = POOLS[i % len(POOLS)]
        pool = ",".join(caps)
        instance = f"routed-{i}"
        body = {"lane_id": lane, "worker_instance_id": instance, "capabilities": caps,
                "wait_ms": 1000}
        claim_url = f"{url}/v1/workers/pool-{i % len(POOLS)}/claim-task"
        async with client() as http:
            while done[0] < n:
                start = time.perf_counter()
                span["first"] = min(span["first"], start)
                reply = expect(await http.post(claim_url, json=body), 200, 204)
                if reply.status_code == 204:
                    empty[0] += 1
                    continue
                claim_ms.append((time.perf_counter() - start) * 1000)
                task = reply.json()
                eid = task["execution_id"]
                assert eid in required, f"{instance} got an execution not of this run: {eid}"
                assert required[eid] <= set(caps), \
                    f"{instance} {caps} got {eid} requiring {sorted(required[eid])}"
                assert eid not in got, f"{eid} ran twice: {got[eid]} and {instance}"
                got[eid] = instance
                await complete(http, url, task)
                per_pool[pool] += 1
                done[0] += 1
                span["last"] = time.perf_counter()
                if done[0] >= n:
                    cancel.cancel()  # the others may be long-polling for nothing

    async with trio.open_nursery() as nursery:
        for i in range(workers):
            nursery.start_soon(worker, i, nursery.cancel_scope)
    assert set(got) == set(required), f"{len(required) - len(got)} tasks never ran"
    elapsed = span["last"] - span["first"]
    return {"tasks": n, "workers": workers, "tasks_per_s": round(n / elapsed, 1),
            "claim": pcts(claim_ms), "empty_claims": empty[0], "tasks_per_pool": per_pool,
            "requirements": [",".join(r) or "-" for r in choices]}


# --- 2. overhead -------------------------------------------------------------------------


async def one_by_one(http: httpx.AsyncClient, url: str, lane: str, n: int) -> dict[str, Any]:
    body = {"lane_id": lane, "worker_instance_id": f"{lane}-1", "wait_ms": 0}
    claim_url = f"{url}/v1/workers/{lane}/claim-task"
    claim_ms: list[float] = []
    complete_ms: list[float] = []
    first = time.perf_counter()
    for _ in range(n):
        start = time.perf_counter()
        reply = expect(await http.post(claim_url, json=body), 200, 204)
        claimed = time.perf_counter()
        if reply.status_code == 204:
            raise Refused(f"claim-task on {lane} found nothing with {n - len(claim_ms)} "
                          "tasks still to run (held back by a limit?)")
        claim_ms.append((claimed - start) * 1000)
        await complete(http, url, reply.json())
        complete_ms.append((time.perf_counter() - claimed) * 1000)
    elapsed = time.perf_counter() - first
    return {"cycles_per_s": round(n / elapsed, 1), "claim": pcts(claim_ms),
            "complete": pcts(complete_ms)}


async def overhead(url: str, n: int) -> dict[str, Any]:
    budget_id, quota_id = str(uuid.uuid4()), str(uuid.uuid4())
    async with client() as http:
        expect(await http.post(f"{url}/v1/budgets", json={
            "budget_id": budget_id, "dimensions": ["tokens"], "hard_limits": [10**15]}), 201)
        expect(await http.post(f"{url}/v1/quotas", json={
            "quota_policy_id": quota_id, "window_seconds": 60,
            "max_requests_per_window": 1_000_000, "max_concurrent": 1000}), 201)
        await create_all(http, url, [{"execution_kind": "bench", "lane_id": "plain"}] * n)
        await create_all(http, url, [
            {"execution_kind": "bench", "lane_id": "limited",
             "policy": {"budget_ids": [budget_id], "quota_policy_id": quota_id}}] * n)
        plain = await one_by_one(http, url, "plain", n)
        limited = await one_by_one(http, url, "limited", n)
        quota = expect(await http.get(f"{url}/v1/quotas/{quota_id}"), 200).json()
    # The limits were really in force: every claim was an admission of the quota.
    assert quota["active"] == 0, quota
    assert 0 < quota["admitted_in_window"] <= n, quota
    ratio = {"claim_p50": round(limited["claim"]["p50_ms"] / plain["claim"]["p50_ms"], 2),
             "claim_p99": round(limited["claim"]["p99_ms"] / plain["claim"]["p99_ms"], 2),
             "cycles_per_s": round(limited["cycles_per_s"] / plain["cycles_per_s"], 2)}
    return {"tasks": n, "none": plain, "budget_quota": limited, "ratio": ratio,
            "quota_admitted_in_window": quota["admitted_in_window"]}


# --- driver ------------------------------------------------------------------------------


def reason(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def row(backend: str, scenario: str, rate: Any, p50: Any, p99: Any, extra: str = "") -> None:
    print(f"{backend:9} {scenario:22} {rate:>10} {p50:>10} {p99:>10}  {extra}", flush=True)


def bench_one(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    try:
        with started(backend) as target:
            try:
                r = result["routed"] = trio.run(routed, target.url, args.tasks, args.workers,
                                                args.seed)
                row(backend, "routed", r["tasks_per_s"], r["claim"]["p50_ms"],
                    r["claim"]["p99_ms"], f"{args.workers} workers, {r['empty_claims']} "
                    f"empty claims, per pool {r['tasks_per_pool']}")
            except Exception as exc:  # noqa: BLE001 — reported, and the next scenario runs
                result["routed"] = {"error": reason(exc)}
                row(backend, "routed", "FAILED", "", "", reason(exc))
            try:
                o = result["overhead"] = trio.run(overhead, target.url, args.tasks)
                for name, key in (("overhead none", "none"),
                                  ("overhead budget+quota", "budget_quota")):
                    row(backend, name, o[key]["cycles_per_s"], o[key]["claim"]["p50_ms"],
                        o[key]["claim"]["p99_ms"])
                row(backend, "  ratio (b)/(a)", o["ratio"]["cycles_per_s"],
                    o["ratio"]["claim_p50"], o["ratio"]["claim_p99"])
            except Exception as exc:  # noqa: BLE001
                result["overhead"] = {"error": reason(exc)}
                row(backend, "overhead", "FAILED", "", "", reason(exc))
    except Exception as exc:  # noqa: BLE001 — the appliance did not start
        result["error"] = reason(exc)
        row(backend, "appliance", "FAILED", "", "", reason(exc))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="all",
                        choices=["sqlite", "valkey", "postgres", "all"])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1, help="for the tasks' requirements")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.tasks < 1 or args.workers < 1:
        parser.error("--tasks and --workers must be at least 1")
    backends = ["sqlite", "valkey", "postgres"] if args.backend == "all" else [args.backend]
    row("backend", "scenario", "per s", "claim p50", "claim p99")
    results = {backend: bench_one(backend, args) for backend in backends}
    return report(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
