"""SIGKILL the appliance: acknowledged work survives and leases are reclaimed after restart."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import trio

pytestmark = pytest.mark.e2e


def eid_path(eid: str) -> str:
    return quote(eid, safe="")


async def create(client, url: str, **fields) -> str:
    reply = await client.post(f"{url}/v1/executions", json=fields)
    assert reply.status_code == 201, reply.text
    return reply.json()["Created"]["execution_id"]


async def claim(client, url: str, worker: str, **fields):
    reply = await client.post(f"{url}/v1/workers/{worker}/claim-task",
                              json={"lane_id": "default", "worker_instance_id": f"{worker}-1",
                                    **fields})
    assert reply.status_code in (200, 204), reply.text
    return reply.json() if reply.status_code == 200 else None


async def test_lease_held_at_a_crash_is_reclaimed_after_restart(launch, client):
    app = launch()
    eid = await create(client, app.url, input_payload_b64="aW5wdXQ=")
    task_a = await claim(client, app.url, "worker-a", lease_ttl_ms=1000)
    assert task_a["execution_id"] == eid
    app.kill()

    app = launch()
    with trio.fail_after(15):
        while (task_b := await claim(client, app.url, "worker-b", wait_ms=500)) is None:
            pass
    assert task_b["execution_id"] == eid
    assert (task_b["attempt_index"], task_b["attempt_type"], task_b["lease_epoch"]) == (
        1, "reclaim", 2)

    done = await client.post(f"{app.url}/v1/executions/{eid_path(eid)}/complete",
                             json={"handle": task_b["handle"], "result_b64": "ZG9uZQ=="})
    assert done.status_code == 200, done.text
    result = await client.get(f"{app.url}/v1/executions/{eid_path(eid)}/result")
    assert (result.status_code, result.content) == (200, b"done")
    info = (await client.get(f"{app.url}/v1/executions/{eid_path(eid)}")).json()
    assert info["lease_reclaim_count"] == 1
    stale = await client.post(f"{app.url}/v1/executions/{eid_path(eid)}/complete",
                              json={"handle": task_a["handle"]})
    assert stale.status_code == 409, stale.text


async def test_every_acknowledged_create_survives_a_crash(launch, client):
    app = launch()
    eids = [await create(client, app.url, input_payload_b64="eA==") for _ in range(50)]
    app.kill()

    app = launch()
    for eid in eids:
        reply = await client.get(f"{app.url}/v1/executions/{eid_path(eid)}")
        assert reply.status_code == 200, (eid, reply.text)
