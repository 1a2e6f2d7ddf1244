"""The README flow over a real socket: create → claim-task → complete → result."""

import base64

import trio

from appliance.testing import eid_path


async def test_binds_an_ephemeral_loopback_port(server):
    assert server.url.startswith("http://127.0.0.1:")
    assert not server.url.endswith(":0")


async def test_healthz(server):
    reply = await server.client.get("/healthz")
    assert (reply.status_code, reply.json()) == (200, {"status": "ok"})
    assert reply.headers["content-type"] == "application/json"


async def _run_flow(server, path_of):
    created = await server.client.post("/v1/executions", json={
        "execution_kind": "demo", "input_payload_b64": base64.b64encode(b"hi").decode()})
    assert created.status_code == 201, created.text
    eid = created.json()["Created"]["execution_id"]
    assert created.json()["Created"]["public_state"] == "waiting"

    task = await server.claim()
    assert task["execution_id"] == eid
    assert base64.b64decode(task["input_payload_b64"]) == b"hi"

    done = await server.client.post(f"/v1/executions/{path_of(eid)}/complete",
                                    json={"handle": task["handle"], "result": [1, 2, 254]})
    assert done.status_code == 200, done.text
    assert done.json() == {"Completed": {"execution_id": eid, "public_state": "completed"}}

    state = await server.client.get(f"/v1/executions/{path_of(eid)}/state")
    assert state.json() == "completed"
    info = await server.client.get(f"/v1/executions/{path_of(eid)}")
    assert info.json()["execution_id"] == eid

    result = await server.client.get(f"/v1/executions/{path_of(eid)}/result")
    assert result.status_code == 200
    assert result.headers["content-type"] == "application/octet-stream"
    assert result.content == bytes([1, 2, 254])


async def test_flow_with_raw_braces_in_the_path(server):
    await _run_flow(server, lambda eid: eid)


async def test_flow_with_manually_percent_encoded_braces(server):
    await _run_flow(server, lambda eid: eid.replace("{", "%7B").replace("}", "%7D"))


async def test_flow_with_fully_escaped_ids(server):
    await _run_flow(server, eid_path)


async def test_result_before_completion_is_404(server):
    eid = await server.create()
    reply = await server.client.get(f"/v1/executions/{eid}/result")
    assert reply.status_code == 404
    assert reply.json()["kind"] == "result_not_found"


async def test_claim_with_nothing_to_do_is_204(server):
    reply = await server.client.post("/v1/workers/w1/claim-task",
                                     json={"lane_id": "default", "worker_instance_id": "i1"})
    assert (reply.status_code, reply.content) == (204, b"")


async def test_long_poll_claim_gets_work_created_concurrently(server):
    got = {}

    async def wait_for_work():
        got["reply"] = await server.client.post(
            "/v1/workers/w1/claim-task",
            json={"lane_id": "default", "worker_instance_id": "i1", "wait_ms": 5000})

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_work)
            eid = await server.create()
    assert got["reply"].status_code == 200
    assert got["reply"].json()["execution_id"] == eid


async def test_unknown_execution_is_404(server):
    reply = await server.client.get(
        "/v1/executions/{fp:1}:550e8400-e29b-41d4-a716-446655440000")
    assert reply.status_code == 404
    assert reply.json()["kind"] == "execution_not_found"
