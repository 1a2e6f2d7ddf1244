"""Differential test of admission: random sequences of claims, grants, redeems, reclaims,
usage reports, resets and scanner ticks over work attached to budgets and quotas give the
same answers and end in the same records, budgets, quotas, registry and explanations whether
the SQL toolkit runs them (the memory store) or the Valkey backend does (the Lua library and
plugins/valkey/admission.py, on a real Redis). Ids drawn at random are compared by the order
they appear in (test_differential.Normaliser)."""

from __future__ import annotations

import os
import uuid
from typing import Any

import trio
from backend_setups.valkey import redis_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_differential import Normaliser

from appliance.testing import eid_path, open_harness

LANE = "adm"
#: One partition: across partitions the Valkey store orders a lane's work per partition.
EIDS = [f"{{fp:9}}:{uuid.UUID(int=k + 1)}" for k in range(4)]
BUDGET = str(uuid.UUID(int=0xB0))
QUOTA_SLOTS = str(uuid.UUID(int=0xC1))
QUOTA_RATE = str(uuid.UUID(int=0xC2))
LIMITS = {
    "none": {},
    "budget": {"budget_ids": [BUDGET]},
    "slots": {"quota_policy_id": QUOTA_SLOTS},
    "rate": {"quota_policy_id": QUOTA_RATE},
    "both": {"budget_ids": [BUDGET], "quota_policy_id": QUOTA_SLOTS},
    "caps": {"routing_requirements": {"required_capabilities": ["gpu"]},
             "quota_policy_id": QUOTA_RATE},
}
SCANNERS = ("lease_expiry", "grant_expiry", "budget_reset", "quota_reconciler",
            "delayed_promoter")

k = st.integers(0, len(EIDS) - 1)
worker = st.sampled_from(["w1", "w2"])
create = st.tuples(st.just("create"), k, st.integers(0, 3), st.sampled_from(sorted(LIMITS)))
steps = st.lists(create, min_size=3, max_size=6).flatmap(lambda first: st.lists(st.one_of(
    create,
    st.tuples(st.just("claim"), worker, st.sampled_from([(), ("gpu",)]), st.integers(1, 3)),
    st.tuples(st.just("grant"), worker, st.sampled_from([500, 3000])),
    st.tuples(st.just("redeem"), worker, k),
    st.tuples(st.just("reclaim"), worker, k),
    st.tuples(st.just("worker"), st.sampled_from(["complete", "fail", "delay", "renew"]), k),
    st.tuples(st.just("operator"), st.sampled_from(["cancel", "revoke-lease"]), k),
    st.tuples(st.just("usage"), st.integers(0, 4), st.sampled_from([None, "d1", "d2"]),
              st.booleans()),
    st.tuples(st.just("reset")),
    st.tuples(st.just("advance"), st.sampled_from([1, 300, 1000, 2500])),
    st.tuples(st.just("tick"), st.sampled_from(SCANNERS)),
), min_size=5, max_size=35).map(lambda rest: first + rest))


async def run(backend: str, options: dict[str, str], plan: list[tuple]) -> list[Any]:
    seen: list[Any] = []
    norm = Normaliser()
    tasks: dict[str, dict[str, Any]] = {}
    async with open_harness(backend, options) as ff:
        for body in ({"budget_id": BUDGET, "dimensions": ["tokens"], "hard_limits": [5],
                      "soft_limits": [3], "reset_interval_ms": 2000},):
            assert (await ff.call("POST", "/v1/budgets", body)).status == 201
        for qid, window, rate, slots in ((QUOTA_SLOTS, 0, 0, 1), (QUOTA_RATE, 1, 2, 0)):
            reply = await ff.call("POST", "/v1/quotas", {
                "quota_policy_id": qid, "window_seconds": window,
                "max_requests_per_window": rate, "max_concurrent": slots})
            assert reply.status == 201, reply
        for step in plan:
            kind = step[0]
            if kind == "create":
                _, i, priority, limits = step
                reply = await ff.call("POST", "/v1/executions", {
                    "execution_id": EIDS[i], "lane_id": LANE, "priority": priority,
                    "policy": {**LIMITS[limits], "max_reclaim_count": 2}})
            elif kind == "claim":
                _, who, caps, n = step
                reply = await ff.call("POST", f"/v1/workers/{who}/claim-task", {
                    "lane_id": LANE, "worker_instance_id": f"{who}-1", "max_tasks": n,
                    "capabilities": list(caps), "lease_ttl_ms": 1000})
                if reply.status == 200:
                    for task in reply.body.get("tasks", [reply.body]):
                        tasks[task["execution_id"]] = task
            elif kind == "grant":
                _, who, ttl = step
                reply = await ff.call("POST", f"/v1/workers/{who}/claim", {
                    "lane_id": LANE, "worker_instance_id": f"{who}-1", "grant_ttl_ms": ttl})
            elif kind in ("redeem", "reclaim"):
                _, who, i = step
                body = {"worker_id": who, "worker_instance_id": f"{who}-1"}
                if kind == "reclaim":
                    body.update(lane_id=LANE, grant_ttl_ms=1000)
                else:
                    body.update(lease_ttl_ms=1000)
                path = "claim-grant" if kind == "redeem" else "reclaim"
                reply = await ff.call("POST", f"/v1/executions/{eid_path(EIDS[i])}/{path}",
                                      body)
                if kind == "redeem" and reply.status == 200:
                    tasks[EIDS[i]] = reply.body
            elif kind == "worker":
                _, op, i = step
                task = tasks.get(EIDS[i])
                if task is None:
                    continue
                fields = {"complete": {}, "fail": {"failure_reason": "x"},
                          "delay": {"delay_ms": 300}, "renew": {"lease_ttl_ms": 2000}}[op]
                reply = await ff.worker_op(op, task, **fields)
            elif kind == "operator":
                _, op, i = step
                reply = await ff.call("POST", f"/v1/executions/{eid_path(EIDS[i])}/{op}",
                                      {"reason": "test"})
            elif kind == "usage":
                _, amount, dedup, with_lease = step
                body = {"dimensions": {"tokens": amount}}
                if dedup:
                    body["dedup_key"] = dedup
                leased = [t for t in tasks.values()]
                if with_lease and leased:
                    body["handle"] = leased[-1]["handle"]
                reply = await ff.call("POST", f"/v1/budgets/{BUDGET}/usage", body)
            elif kind == "reset":
                reply = await ff.call("POST", f"/v1/budgets/{BUDGET}/reset")
            elif kind == "advance":
                ff.clock.advance(step[1])
                continue
            else:
                result = await ff.tick(step[1])
                # the quota reconciler's housekeeping differs by design (SQL: window rows;
                # Valkey: window entries, dead reservations, stale holders): not compared
                processed = None if step[1] == "quota_reconciler" else result.processed
                seen.append((step, processed, sorted(result.failed)))
                continue
            seen.append((step, reply.status, norm(reply.body)))
        for eid in EIDS:
            reply = await ff.call("GET", f"/v1/executions/{eid_path(eid)}")
            seen.append(("final", eid, reply.status, norm(reply.body)))
            if reply.status == 200:
                reply = await ff.call("GET", f"/v1/executions/{eid_path(eid)}/explain")
                seen.append(("explain", eid, reply.status, norm(reply.body)))
        for path in (f"/v1/budgets/{BUDGET}", f"/v1/quotas/{QUOTA_SLOTS}",
                     f"/v1/quotas/{QUOTA_RATE}", "/v1/workers"):
            reply = await ff.call("GET", path)
            seen.append(("final", path, reply.status, norm(reply.body)))
    return seen


@settings(max_examples=int(os.environ.get("FF_TEST_PROPERTY_EXAMPLES", "30")), deadline=None,
          derandomize=not os.environ.get("FF_TEST_PROPERTY_RANDOM"),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=steps)
def test_sql_and_valkey_admission_agree(valkey_server, plan):
    redis_cli(valkey_server.port, "FLUSHALL")
    python = trio.run(run, "memory", {}, plan)
    lua = trio.run(run, "valkey", {"FF_VALKEY_URL": valkey_server.url}, plan)
    for one, other in zip(python, lua, strict=True):
        assert one == other, f"\npython: {one}\nlua:    {other}"
