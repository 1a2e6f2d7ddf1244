"""A lane's work on partitions other than its solo one is found by claims like any other."""

import uuid

import trio

from appliance.testing import open_harness

OTHER = 7  # the "default" lane's solo partition is 86


def elsewhere() -> str:
    return f"{{fp:{OTHER}}}:{uuid.uuid4()}"


async def test_work_on_several_partitions_is_all_claimed(ff_valkey):
    ids = {f"{{fp:{p}}}:{uuid.uuid4()}" for p in (3, OTHER, 86, 200)}
    for eid in ids:
        await ff_valkey.create(execution_id=eid)
    claimed = set()
    while (task := await ff_valkey.claim()) is not None:
        claimed.add(task["execution_id"])
    assert claimed == ids


async def test_retry_due_on_another_partition_is_claimed_without_a_scanner(ff_valkey):
    policy = {"retry_policy": {"max_retries": 1, "backoff": {"type": "fixed", "delay_ms": 500}}}
    eid = await ff_valkey.create(execution_id=elsewhere(), policy=policy)
    task = await ff_valkey.claim()
    await ff_valkey.worker_op("fail", task, failure_reason="boom")
    assert await ff_valkey.claim() is None
    ff_valkey.clock.advance(500)
    retry = await ff_valkey.claim()
    assert (retry["execution_id"], retry["attempt_type"]) == (eid, "retry")


async def test_lease_found_expired_on_another_partition_is_reclaimed_at_once(ff_valkey):
    eid = await ff_valkey.create(execution_id=elsewhere())
    task = await ff_valkey.claim(lease_ttl_ms=1000)
    ff_valkey.clock.advance(1000)
    renewed = await ff_valkey.worker_op("renew", task)
    assert renewed.body["kind"] == "lease_expired"
    again = await ff_valkey.claim(worker="w2")
    assert (again["execution_id"], again["attempt_type"]) == (eid, "reclaim")


async def test_work_another_appliance_creates_elsewhere_reaches_a_waiting_claim(
        valkey_backend_options):
    async with (open_harness("valkey", valkey_backend_options) as one,
                open_harness("valkey", valkey_backend_options) as two):
        got = {}

        async def wait_for_work():
            got["task"] = await one.claim(wait_ms=2000)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_for_work)
                eid = await two.create(execution_id=elsewhere())
    assert got["task"]["execution_id"] == eid
