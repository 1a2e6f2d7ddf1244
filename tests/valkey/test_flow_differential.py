"""Differential test of flows: random DAGs and random steps on them (workers ending members,
operator cancels and replays, revoked leases the reclaim cap ends, batch completes, edges
linked later, flow cancels, the flow scanners) give the same answers and end in the same
flow, edges, groups and records whether the SQL flow code applies them (the memory store)
or the Lua library does (a real Redis)."""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

import trio
from backend_setups.valkey import redis_cli
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from appliance.core.partitions import PartitionConfig, flow_partition
from appliance.testing import eid_path, open_harness

FLOW_ID = str(uuid.UUID(int=0xF10))
PARTITION = flow_partition(FLOW_ID, PartitionConfig().flow)
NODES = 5
EXTRAS = 2
#: Node i's execution id (its lane is "l<i>"); the extras (joined later) follow.
EIDS = [f"{{fp:{PARTITION}}}:{uuid.UUID(int=k + 1)}" for k in range(NODES + EXTRAS)]
POLICIES = {"none": None, "no_reclaim": {"max_reclaim_count": 0},
            "one_replay": {"max_replay_count": 1},
            "timeout": {"timeout_policy": {"attempt_timeout_ms": 1000}},
            "retry": {"retry_policy": {"max_retries": 1, "backoff": {"type": "fixed",
                                                                     "delay_ms": 100}}}}
SCANNERS = ("lease_expiry", "dependency_reconciler", "flow_cancel_reconciler",
            "retention_trimmer", "attempt_timeout", "delayed_promoter")

node = st.integers(0, NODES - 1)
member = st.integers(0, NODES + EXTRAS - 1)
ref = st.sampled_from([None, "result"])


@st.composite
def dags(draw: Any) -> dict[str, Any]:
    pairs = draw(st.lists(st.tuples(node, node, ref), max_size=8))
    edges, seen, inbound = [], set(), {}
    for a, b, r in pairs:
        a, b = min(a, b), max(a, b)
        if a == b or (a, b) in seen:
            continue
        seen.add((a, b))
        inbound[b] = inbound.get(b, 0) + 1
        edges.append({"from": f"n{a}", "to": f"n{b}",
                      **({"data_passing_ref": r} if r else {})})
    groups = {}
    for b, m in inbound.items():
        kind = draw(st.sampled_from(["default", "all_of", "any_of", "quorum"]))
        if kind == "default":
            continue
        group: dict[str, Any] = {"policy": kind}
        if kind == "quorum":
            group["k"] = draw(st.integers(1, m))
        if kind != "all_of":
            group["on_satisfied"] = draw(st.sampled_from(["cancel_remaining", "let_run"]))
        groups[f"n{b}"] = group
    nodes = [{"key": f"n{i}", "execution_id": EIDS[i], "lane_id": f"l{i}",
              **({"policy": POLICIES[p]} if POLICIES[p] else {})}
             for i, p in enumerate(draw(st.lists(st.sampled_from(sorted(POLICIES)),
                                                 min_size=NODES, max_size=NODES)))]
    body: dict[str, Any] = {"flow_id": FLOW_ID, "nodes": nodes}
    if edges:
        body["edges"] = edges
    if groups:
        body["groups"] = groups
    return body


steps = st.lists(st.one_of(
    st.tuples(st.just("claim"), member),
    st.tuples(st.just("complete"), member, st.sampled_from([None, "aGk=", "eW8="])),
    st.tuples(st.just("fail"), member),
    st.tuples(st.just("delay"), member),
    st.tuples(st.just("cancel"), member),
    st.tuples(st.just("replay"), member),
    st.tuples(st.just("revoke"), member),
    st.tuples(st.just("batch"), st.sampled_from(["complete", "fail"])),
    st.tuples(st.just("join"), st.integers(NODES, NODES + EXTRAS - 1)),
    st.tuples(st.just("adopt"), st.integers(NODES, NODES + EXTRAS - 1)),
    st.tuples(st.just("link"), member, member, ref),
    st.tuples(st.just("group"), member, st.sampled_from(["any_of", "all_of"])),
    st.tuples(st.just("cancel_flow"), st.sampled_from(["cancel_all", "cancel_pending",
                                                       "let_run"]), st.booleans()),
    st.tuples(st.just("advance"), st.sampled_from([1, 6_000, 40_000, 90_000_000])),
    st.tuples(st.just("tick"), st.sampled_from(SCANNERS)),
), min_size=3, max_size=30)

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
HANDLE = re.compile(r"ffh1\.[A-Za-z0-9_-]+")


class Normaliser:
    """Random ids in the order they first appear (execution ids are fixed: kept)."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {FLOW_ID: "flow"}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: self(v) for key, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, str) and not value.startswith("{fp:"):
            value = HANDLE.sub("handle", value)
            return UUID.sub(lambda m: self.seen.setdefault(m.group(0), f"id-{len(self.seen)}"),
                            value)
        return value


def _lane(i: int) -> str:
    return f"l{i}"


async def run(backend: str, options: dict[str, str], dag: dict[str, Any],
              plan: list[tuple]) -> list[Any]:
    seen: list[Any] = []
    norm = Normaliser()
    handles: dict[str, dict[str, Any]] = {}
    edge_seq = 0
    async with open_harness(backend, options) as ff:
        reply = await ff.call("POST", "/v1/flows", dag)
        seen.append(("dag", reply.status, norm(reply.body)))
        for step in plan:
            kind = step[0]
            if kind == "claim":
                reply = await ff.call("POST", "/v1/workers/w/claim-task", {
                    "lane_id": _lane(step[1]), "worker_instance_id": "w-1",
                    "lease_ttl_ms": 5_000})
                if reply.status == 200:
                    handles[reply.body["execution_id"]] = reply.body
            elif kind in ("complete", "fail", "delay", "cancel", "revoke", "replay"):
                eid = EIDS[step[1]]
                task = handles.get(eid)
                if kind == "complete":
                    if task is None:
                        continue
                    fields = {"result_b64": step[2]} if step[2] else {}
                    reply = await ff.worker_op("complete", task, **fields)
                elif kind == "fail":
                    if task is None:
                        continue
                    reply = await ff.worker_op("fail", task, failure_reason="boom")
                elif kind == "delay":
                    if task is None:
                        continue
                    reply = await ff.worker_op("delay", task, delay_ms=500)
                else:
                    route = {"revoke": "revoke-lease"}.get(kind, kind)
                    reply = await ff.call("POST", f"/v1/executions/{eid_path(eid)}/{route}",
                                          {})
            elif kind == "batch":
                if not handles:
                    continue
                fields = {"complete": {}, "fail": {"failure_reason": "boom"}}[step[1]]
                reply = await ff.call("POST", f"/v1/workers/w/{step[1]}", {"items": [
                    {"execution_id": e, "handle": t["handle"], **fields}
                    for e, t in sorted(handles.items())]})
            elif kind == "join":
                reply = await ff.call("POST", "/v1/executions", {
                    "flow_id": FLOW_ID, "execution_id": EIDS[step[1]],
                    "lane_id": _lane(step[1])})
            elif kind == "adopt":  # made outside the flow, then added
                made = await ff.call("POST", "/v1/executions", {
                    "execution_id": EIDS[step[1]], "lane_id": _lane(step[1])})
                seen.append((step, "create", made.status, norm(made.body)))
                reply = await ff.call("POST", f"/v1/flows/{FLOW_ID}/members",
                                      {"flow_id": FLOW_ID, "execution_id": EIDS[step[1]]})
            elif kind == "link":
                _, a, b, r = step
                edge_seq += 1
                edge_id = str(uuid.UUID(int=0xE000 + edge_seq))
                flow = await ff.call("GET", f"/v1/flows/{FLOW_ID}")
                revision = flow.body["graph_revision"] if flow.status == 200 else 0
                body = {"flow_id": FLOW_ID, "edge_id": edge_id, "upstream_execution_id": EIDS[a],
                        "downstream_execution_id": EIDS[b], "expected_graph_revision": revision,
                        **({"data_passing_ref": r} if r else {})}
                staged = await ff.call("POST", f"/v1/flows/{FLOW_ID}/edges", body)
                seen.append((step, "stage", staged.status, norm(staged.body)))
                body.pop("expected_graph_revision")
                reply = await ff.call("POST", f"/v1/flows/{FLOW_ID}/edges/apply", body)
            elif kind == "group":
                reply = await ff.call("POST", f"/v1/flows/{FLOW_ID}/edge-groups", {
                    "flow_id": FLOW_ID, "downstream_execution_id": EIDS[step[1]],
                    "policy": step[2]})
            elif kind == "cancel_flow":
                _, policy, wait = step
                reply = await ff.call("POST", f"/v1/flows/{FLOW_ID}/cancel",
                                      {"flow_id": FLOW_ID, "cancellation_policy": policy},
                                      query={"wait": "true"} if wait else None)
                with trio.fail_after(10):
                    await ff.service.background.wait_idle()
            elif kind == "advance":
                ff.clock.advance(step[1])
                continue
            else:
                result = await ff.tick(step[1])
                seen.append((step, result.processed, sorted(result.lanes_woken),
                             sorted(result.failed)))
                continue
            seen.append((step, reply.status, norm(reply.body)))
        flow = await ff.call("GET", f"/v1/flows/{FLOW_ID}")
        body = flow.body
        if flow.status == 200:  # edge ids minted at random: compare edges by their ends
            body["edges"] = sorted((e["upstream_execution_id"], e["downstream_execution_id"],
                                    e["state"], e["data_passing_ref"] or "")
                                   for e in body["edges"])
        seen.append(("flow", flow.status, norm(body)))
        for eid in EIDS:
            reply = await ff.call("GET", f"/v1/executions/{eid_path(eid)}")
            seen.append(("final", eid, reply.status, norm(reply.body)))
            reply = await ff.call("GET", f"/v1/executions/{eid_path(eid)}/result")
            seen.append(("result", eid, reply.status, norm(reply.body)))
        for lane in sorted({_lane(i) for i in range(NODES + EXTRAS)}):  # inputs passed on
            reply = await ff.call("POST", "/v1/workers/w2/claim-task", {
                "lane_id": lane, "worker_instance_id": "w2-1", "max_tasks": 10})
            seen.append(("claimable", lane, reply.status, norm(reply.body)))
    return seen


def _dag(edges: list[tuple[int, int]], groups: dict[int, dict[str, Any]] | None = None,
         policies: dict[int, str] | None = None, ref_on: tuple[int, int] | None = None
         ) -> dict[str, Any]:
    policies = policies or {}
    return {"flow_id": FLOW_ID,
            "nodes": [{"key": f"n{i}", "execution_id": EIDS[i], "lane_id": f"l{i}",
                       **({"policy": POLICIES[policies[i]]} if i in policies else {})}
                      for i in range(NODES)],
            "edges": [{"from": f"n{a}", "to": f"n{b}",
                       **({"data_passing_ref": "result"} if (a, b) == ref_on else {})}
                      for a, b in edges],
            **({"groups": {f"n{b}": g for b, g in groups.items()}} if groups else {})}


@example(dag=_dag([(0, 1), (1, 2)], policies={0: "no_reclaim"}),  # the claim's reclaim cap
         plan=[("claim", 0), ("revoke", 0), ("claim", 0), ("claim", 1), ("claim", 2)])
@example(dag=_dag([(0, 2), (1, 2), (2, 3)], ref_on=(1, 2),
                  groups={2: {"policy": "any_of", "on_satisfied": "cancel_remaining"}}),
         plan=[("claim", 0), ("claim", 1), ("batch", "complete"), ("claim", 2),
               ("replay", 2), ("claim", 2)])
@example(dag=_dag([(0, 1), (2, 1)], groups={1: {"policy": "quorum", "k": 2}}),
         plan=[("claim", 0), ("fail", 0), ("replay", 1), ("replay", 0), ("claim", 0),
               ("complete", 0, "aGk="), ("claim", 2), ("complete", 2, None), ("replay", 1),
               ("claim", 1)])
@example(dag=_dag([(0, 1), (1, 2), (0, 3)]),
         plan=[("claim", 0), ("cancel_flow", "cancel_pending", True),
               ("tick", "dependency_reconciler"), ("complete", 0, None),
               ("tick", "dependency_reconciler")])
@example(dag=_dag([(0, 1)]),
         plan=[("cancel_flow", "cancel_all", False), ("advance", 6_000),
               ("tick", "flow_cancel_reconciler"), ("tick", "dependency_reconciler"),
               ("cancel_flow", "let_run", True)])
@settings(max_examples=int(os.environ.get("FF_TEST_PROPERTY_EXAMPLES", "40")), deadline=None,
          derandomize=not os.environ.get("FF_TEST_PROPERTY_RANDOM"),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(dag=dags(), plan=steps)
def test_sql_flows_and_the_lua_library_agree(valkey_server, dag, plan):
    redis_cli(valkey_server.port, "FLUSHALL")
    python = trio.run(run, "memory", {}, dag, plan)
    lua = trio.run(run, "valkey", {"FF_VALKEY_URL": valkey_server.url}, dag, plan)
    for one, other in zip(python, lua, strict=True):
        assert one == other, f"\nsql: {one}\nlua: {other}"
