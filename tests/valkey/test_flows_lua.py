"""Flows in the Lua library: a 10,000-node DAG is one FCALL to submit and one to cascade
through, and the flow keys keep to their flow's hash tag. (The behaviour itself is the
conformance suite's, tests/conformance/test_flow*.py, on every backend; the flow
differential test compares the Lua library with the SQL stores step by step.)"""

from __future__ import annotations

import time
from itertools import pairwise

import pytest
from backend_setups.valkey import redis_cli

from appliance.core.flows import DAG_MAX_NODES
from appliance.core.partitions import flow_partition
from appliance.testing import eid_path

#: Generous bounds for a slow CI machine (locally each takes well under a second).
SUBMIT_MAX_S = 30.0
CASCADE_MAX_S = 20.0


async def _submit(ff, nodes, edges) -> dict:
    started = time.monotonic()
    reply = await ff.call("POST", "/v1/flows", {"nodes": nodes, "edges": edges})
    took = time.monotonic() - started
    assert reply.status == 201, reply
    assert took < SUBMIT_MAX_S, f"submitting {len(nodes)} nodes took {took:.1f}s"
    return reply.body["Created"]


async def _calls(ff) -> int:
    info = await ff.backend.conn.command("INFO", "commandstats")
    return int(info.get("cmdstat_fcall", {}).get("calls", 0))


@pytest.mark.parametrize("shape", ["chain", "fan"])
async def test_a_10000_node_dag_cascades_in_the_one_fcall_of_its_root(ff_valkey, shape):
    """chain: the root fails and every node after it is skipped; fan: the root completes
    and releases every other node. Either way the FCALL of the root's end does it all."""
    ff = ff_valkey
    n = DAG_MAX_NODES
    nodes = [{"key": "root", "lane_id": "root"}] + [{"key": f"n{i}", "lane_id": "rest"}
                                                    for i in range(1, n)]
    if shape == "chain":
        keys = ["root"] + [f"n{i}" for i in range(1, n)]
        edges = [{"from": a, "to": b} for a, b in pairwise(keys)]
    else:
        edges = [{"from": "root", "to": f"n{i}"} for i in range(1, n)]
    created = await _submit(ff, nodes, edges)
    assert created["graph_revision"] == n + len(edges)
    assert await ff.claim(lane="rest") is None  # every child is held
    task = await ff.claim(lane="root")
    assert task is not None
    before = await _calls(ff)
    started = time.monotonic()
    if shape == "chain":
        reply = await ff.worker_op("fail", task, failure_reason="boom")
    else:
        reply = await ff.worker_op("complete", task)
    took = time.monotonic() - started
    assert reply.status == 200, reply
    assert await _calls(ff) - before == 1, "the cascade took more than the root's FCALL"
    assert took < CASCADE_MAX_S, f"the cascade over {n} nodes took {took:.1f}s"
    last = created["executions"][f"n{n - 1}"]
    state = await ff.call("GET", f"/v1/executions/{eid_path(last)}/state")
    assert state.body == ("skipped" if shape == "chain" else "waiting")
    flow = await ff.call("GET", f"/v1/flows/{created['flow_id']}")
    counts = {k: v for k, v in flow.body["counts"].items() if v}
    if shape == "chain":
        assert counts == {"failed": 1, "skipped": n - 1}
        assert flow.body["state"] == "failed"
    else:
        assert counts == {"completed": 1, "waiting": n - 1}
        tasks = await ff.call("POST", "/v1/workers/w/claim-task",
                              {"lane_id": "rest", "worker_instance_id": "w-1",
                               "max_tasks": 1000})
        assert len(tasks.body["tasks"]) == 1000


async def test_every_key_of_a_flow_carries_its_partitions_hash_tag(ff_valkey, valkey_server):
    ff = ff_valkey
    reply = await ff.call("POST", "/v1/flows", {
        "nodes": [{"key": "a"}, {"key": "b"}, {"key": "c"}],
        "edges": [{"from": "a", "to": "b", "data_passing_ref": "result"},
                  {"from": "b", "to": "c"}],
        "groups": {"c": {"policy": "any_of"}}})
    created = reply.body["Created"]
    flow_id = created["flow_id"]
    tag = f"{{fp:{flow_partition(flow_id, ff.config.partitions.flow)}}}"
    reply = await ff.call("POST", f"/v1/flows/{flow_id}/cancel",
                          {"flow_id": flow_id, "cancellation_policy": "cancel_all"})
    assert reply.status in (200, 202), reply
    found = redis_cli(valkey_server.port, "--scan", "--pattern", "ff:*").split()
    flow_keys = [k for k in found if flow_id in k or k.startswith("ff:f:") or "flow" in k]
    assert flow_keys
    for key in flow_keys:
        assert tag in key, key
