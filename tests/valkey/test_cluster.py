"""The same backend, unchanged, on a three-master Redis Cluster."""

import uuid

import pytest
from backend_setups.valkey import redis_cli

from appliance.testing import eid_path, open_harness

PARTITIONS = range(12)  # {fp:0}…{fp:11} hash to slots on every node


@pytest.fixture
def cluster_options(cluster):
    for node in cluster:
        redis_cli(node.port, "FLUSHALL")
    return {"FF_VALKEY_URL": f"redis://127.0.0.1:{cluster[0].port}/0?cluster=true"}


@pytest.fixture
async def ff(cluster_options):
    async with open_harness("valkey", cluster_options) as harness:
        yield harness


async def test_lifecycle_across_partitions_on_every_node(ff, cluster):
    ids = {f"{{fp:{p}}}:{uuid.uuid4()}" for p in PARTITIONS}
    for eid in ids:
        await ff.create(execution_id=eid, input_payload=[7])
    for node in cluster:
        assert redis_cli(node.port, "--scan", "--pattern", "ff:x:*"), f"no records on {node.port}"
    claimed = set()
    while (task := await ff.claim()) is not None:
        assert task["input_payload"] == [7]
        assert (await ff.worker_op("complete", task, result=[1, 2])).status == 200
        claimed.add(task["execution_id"])
    assert claimed == ids
    for eid in ids:
        result = await ff.call("GET", f"/v1/executions/{eid_path(eid)}/result")
        assert (result.status, result.body) == (200, bytes([1, 2]))


async def test_failed_attempt_is_retried_after_its_backoff(ff):
    policy = {"retry_policy": {"max_retries": 1, "backoff": {"type": "fixed", "delay_ms": 500}}}
    eid = await ff.create(policy=policy)
    first = await ff.claim()
    failed = await ff.worker_op("fail", first, failure_reason="boom")
    assert failed.body["RetryScheduled"]["public_state"] == "delayed"
    ff.clock.advance(500)
    await ff.tick("delayed_promoter")
    retry = await ff.claim()
    assert (retry["execution_id"], retry["attempt_type"]) == (eid, "retry")
    assert retry["attempt_index"] == 1


async def test_delayed_attempt_resumes_once_due(ff):
    await ff.create()
    task = await ff.claim()
    assert (await ff.worker_op("delay", task, delay_ms=1000)).status == 200
    assert await ff.claim() is None
    ff.clock.advance(1000)
    resumed = await ff.claim()
    assert (resumed["attempt_type"], resumed["attempt_id"]) == ("resumed", task["attempt_id"])


async def test_expired_lease_is_reclaimed(ff):
    eid = await ff.create()
    await ff.claim(lease_ttl_ms=1000)
    ff.clock.advance(1000)
    assert (await ff.tick("lease_expiry")).processed == 1
    again = await ff.claim(worker="w2")
    assert (again["execution_id"], again["attempt_type"]) == (eid, "reclaim")
    assert again["lease_epoch"] == 2


async def test_listing_a_partition(ff):
    ids = sorted(f"{{fp:5}}:{uuid.uuid4()}" for _ in range(3))
    for eid in ids:
        await ff.create(execution_id=eid)
    reply = await ff.call("GET", "/v1/executions", query={"partition": 5, "limit": 2})
    assert reply.body == {"executions": ids[:2], "next_cursor": ids[1]}


async def test_flows_on_every_node(ff, cluster):
    """DAGs whose partitions live on different nodes: submitted, released with their data
    passed on, listed together, cancelled (backlog and reconcilers included)."""
    flows = {}
    while len({p % 3 for p in flows.values()}) < 3 or len(flows) < 6:
        reply = await ff.call("POST", "/v1/flows", {
            "nodes": [{"key": "a", "lane_id": "a"}, {"key": "b", "lane_id": "b"},
                      {"key": "c", "lane_id": "c"}],
            "edges": [{"from": "a", "to": "b", "data_passing_ref": "result"},
                      {"from": "a", "to": "c"}]})
        assert reply.status == 201, reply
        created = reply.body["Created"]
        flows[created["flow_id"]] = int(created["executions"]["a"][4:].split("}")[0])
    assert await ff.claim(lane="b") is None
    while (task := await ff.claim(lane="a")) is not None:
        assert (await ff.worker_op("complete", task, result=[9])).status == 200
    passed = 0
    while (task := await ff.claim(lane="b")) is not None:
        assert task["input_payload"] == [9]
        passed += 1
    assert passed == len(flows)
    listed = await ff.call("GET", "/v1/flows", query={"limit": "1000"})
    assert sorted(f["flow_id"] for f in listed.body["flows"]) == sorted(flows)
    for flow_id in flows:
        reply = await ff.call("POST", f"/v1/flows/{flow_id}/cancel",
                              {"flow_id": flow_id, "cancellation_policy": "cancel_pending"})
        assert reply.status in (200, 202), reply
    await ff.service.background.wait_idle()
    ff.clock.advance(10_000)
    await ff.tick("flow_cancel_reconciler")
    await ff.tick("dependency_reconciler")
    for flow_id in flows:
        flow = (await ff.call("GET", f"/v1/flows/{flow_id}")).body
        assert flow["state"] == "cancelled"
        assert {k: v for k, v in flow["counts"].items() if v} == {
            "completed": 1, "active": 1, "cancelled": 1}
