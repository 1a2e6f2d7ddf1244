"""Differential test: random sequences of operations give the same answers and end in the
same records whether the Python rules apply them (the memory store, built on the SQL
toolkit) or the Lua library does (a real Redis). Ids a store draws at random (leases,
attempts, handles) are compared by the order they appear in."""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

import trio
from backend_setups.valkey import redis_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.testing import eid_path, open_harness

LANES = ("a", "b")
#: One partition: across partitions the Valkey store orders a lane's work per partition
#: (spec/backends.md), which is not what this test is about.
EIDS = [f"{{fp:7}}:{uuid.UUID(int=k + 1)}" for k in range(4)]
POLICIES = {
    "none": None,
    "fixed": {"retry_policy": {"max_retries": 2, "backoff": {"type": "fixed", "delay_ms": 50}}},
    "exponential": {"retry_policy": {"max_retries": 5, "backoff": {
        "type": "exponential", "initial_delay_ms": 7, "multiplier": 3.5, "max_delay_ms": 900}},
        "timeout_policy": {"attempt_timeout_ms": 400}},
    "strict": {"max_reclaim_count": 1, "max_replay_count": 1,
               "retry_policy": {"max_retries": 1, "retryable_categories": ["net"]},
               "timeout_policy": {"execution_deadline_ms": 3000}},
}
SCANNERS = ("lease_expiry", "delayed_promoter", "attempt_timeout", "execution_deadline",
            "retention_trimmer")

k = st.integers(0, len(EIDS) - 1)
steps = st.lists(st.one_of(
    st.tuples(st.just("create"), k, st.sampled_from(LANES), st.integers(-5, 9005),
              st.sampled_from(sorted(POLICIES)), st.sampled_from([None, 100, 5000])),
    st.tuples(st.just("claim"), st.sampled_from(LANES), st.sampled_from([100, 1000, 30000])),
    st.tuples(st.just("worker"), st.sampled_from(["complete", "fail", "fail-net", "delay",
                                                  "delay-past", "renew", "progress"]), k),
    st.tuples(st.just("operator"), st.sampled_from(["cancel", "revoke-lease", "replay",
                                                    "priority"]), k),
    st.tuples(st.just("advance"), st.sampled_from([1, 60, 450, 1000, 4000, 90_000_000])),
    st.tuples(st.just("tick"), st.sampled_from(SCANNERS)),
), min_size=5, max_size=40)

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
HANDLE = re.compile(r"ffh1\.[A-Za-z0-9_-]+")


class Normaliser:
    """Random ids in the order they first appear: id-0, id-1, …"""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: self(v) for key, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, str):
            value = HANDLE.sub(lambda m: "handle", value)
            return UUID.sub(self._id, value) if not value.startswith("{fp:") else value
        return value

    def _id(self, match: re.Match[str]) -> str:
        return self.seen.setdefault(match.group(0), f"id-{len(self.seen)}")


async def run(backend: str, options: dict[str, str], plan: list[tuple]) -> list[Any]:
    seen: list[Any] = []
    norm = Normaliser()
    handles: dict[str, dict[str, Any]] = {}
    async with open_harness(backend, options) as ff:
        for step in plan:
            kind = step[0]
            if kind == "create":
                _, i, lane, priority, policy, delay = step
                body: dict[str, Any] = {"execution_id": EIDS[i], "lane_id": lane,
                                        "priority": priority}
                if POLICIES[policy] is not None:
                    body["policy"] = POLICIES[policy]
                if delay is not None:
                    body["delay_until"] = ff.clock.now_ms() + delay
                reply = await ff.call("POST", "/v1/executions", body)
            elif kind == "claim":
                _, lane, ttl = step
                reply = await ff.call("POST", "/v1/workers/w/claim-task",
                                      {"lane_id": lane, "worker_instance_id": "w-1",
                                       "lease_ttl_ms": ttl})
                if reply.status == 200:
                    handles[reply.body["execution_id"]] = reply.body
            elif kind == "worker":
                _, op, i = step
                task = handles.get(EIDS[i])
                if task is None:
                    continue
                fields: dict[str, Any] = {
                    "complete": {"result_b64": "aGk="}, "fail": {"failure_reason": "x"},
                    "fail-net": {"failure_reason": "y", "failure_category": "net"},
                    "delay": {"delay_ms": 300}, "delay-past": {"delay_until": 5},
                    "renew": {"lease_ttl_ms": 2000}, "progress": {"progress_pct": 40},
                }[op]
                route = op.split("-")[0]
                reply = await ff.worker_op(route, task, **fields)
            elif kind == "operator":
                _, op, i = step
                path = f"/v1/executions/{eid_path(EIDS[i])}/{op}"
                if op == "priority":
                    reply = await ff.call("PUT", path, {"new_priority": 3})
                else:
                    reply = await ff.call("POST", path, {})
            elif kind == "advance":
                ff.clock.advance(step[1])
                continue
            else:
                result = await ff.tick(step[1])
                seen.append((step, result.processed, sorted(result.lanes_woken),
                             sorted(result.failed)))
                continue
            seen.append((step, reply.status, norm(reply.body)))
        for eid in EIDS:
            reply = await ff.call("GET", f"/v1/executions/{eid_path(eid)}")
            seen.append(("final", eid, reply.status, norm(reply.body)))
    return seen


@settings(max_examples=int(os.environ.get("FF_TEST_PROPERTY_EXAMPLES", "30")), deadline=None,
          derandomize=not os.environ.get("FF_TEST_PROPERTY_RANDOM"),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=steps)
def test_python_rules_and_the_lua_library_agree(valkey_server, plan):
    redis_cli(valkey_server.port, "FLUSHALL")
    python = trio.run(run, "memory", {}, plan)
    lua = trio.run(run, "valkey", {"FF_VALKEY_URL": valkey_server.url}, plan)
    for one, other in zip(python, lua, strict=True):
        assert one == other, f"\npython: {one}\nlua:    {other}"
