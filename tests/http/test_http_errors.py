"""Malformed requests get typed JSON errors over the socket."""

import pytest

JSON = {"Content-Type": "application/json"}


def assert_error(reply, status, kind):
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert set(body) >= {"error", "kind", "retryable"}
    assert body["kind"] == kind
    return body


@pytest.mark.parametrize("data", [b"{", b'{"lane_id": }', b"\xff\xfe", b"nul"])
async def test_malformed_json_is_400_invalid_json(server, data):
    reply = await server.client.post("/v1/executions", content=data, headers=JSON)
    assert_error(reply, 400, "invalid_json")


async def test_text_plain_body_is_415(server):
    reply = await server.client.post("/v1/executions", content=b"{}",
                                     headers={"Content-Type": "text/plain"})
    body = assert_error(reply, 415, "unsupported_media_type")
    assert "application/json" in body["error"]


async def test_vendor_json_content_type_is_accepted(server):
    reply = await server.client.post("/v1/executions", content=b"{}",
                                     headers={"Content-Type": "application/vnd.ff+json"})
    assert reply.status_code == 201


async def test_json_array_body_is_400(server):
    reply = await server.client.post("/v1/executions", json=[1, 2])
    body = assert_error(reply, 400, "invalid_input")
    assert "JSON object" in body["error"]


async def test_unknown_field_is_400_naming_it(server):
    reply = await server.client.post("/v1/executions", json={"lane": "x"})
    assert "'lane'" in assert_error(reply, 400, "invalid_input")["error"]


async def test_bad_execution_id_in_path_is_400_naming_execution_id(server):
    reply = await server.client.get("/v1/executions/not-an-id")
    assert "execution_id" in assert_error(reply, 400, "invalid_input")["error"]


async def test_bad_execution_id_on_a_worker_route_is_400(server):
    reply = await server.client.post("/v1/executions/not-an-id/complete",
                                     json={"handle": "ffh1.x"})
    assert "execution_id" in assert_error(reply, 400, "invalid_input")["error"]


async def test_garbage_handle_is_400_invalid_handle(server):
    eid = await server.create()
    await server.claim()
    reply = await server.client.post(f"/v1/executions/{eid}/complete",
                                     json={"handle": "garbage"})
    assert_error(reply, 400, "invalid_handle")


async def test_handle_of_another_execution_is_400_invalid_handle(server):
    await server.create()
    task = await server.claim()
    other = await server.create()
    reply = await server.client.post(f"/v1/executions/{other}/complete",
                                     json={"handle": task["handle"]})
    assert_error(reply, 400, "invalid_handle")


async def test_stale_epoch_after_reclaim_is_409_stale_lease(server):
    eid = await server.create()
    old = await server.claim(worker="w1")
    revoked = await server.client.post(f"/v1/executions/{eid}/revoke-lease")
    assert revoked.status_code == 200 and "Revoked" in revoked.json(), revoked.text
    new = await server.claim(worker="w2")
    assert (new["execution_id"], new["attempt_type"], new["lease_epoch"]) == (eid, "reclaim", 2)

    reply = await server.client.post(f"/v1/executions/{eid}/complete",
                                     json={"handle": old["handle"]})
    body = assert_error(reply, 409, "stale_lease")
    assert body["retryable"] is False

    done = await server.client.post(f"/v1/executions/{eid}/complete",
                                    json={"handle": new["handle"]})
    assert done.status_code == 200


async def test_revoked_holder_is_409_lease_revoked(server):
    eid = await server.create()
    task = await server.claim()
    await server.client.post(f"/v1/executions/{eid}/revoke-lease")
    reply = await server.client.post(f"/v1/executions/{eid}/renew",
                                     json={"handle": task["handle"]})
    assert_error(reply, 409, "lease_revoked")


async def test_completing_twice_with_the_same_handle_is_idempotent(server):
    eid = await server.create()
    task = await server.claim()
    first = await server.client.post(f"/v1/executions/{eid}/complete",
                                     json={"handle": task["handle"]})
    again = await server.client.post(f"/v1/executions/{eid}/complete",
                                     json={"handle": task["handle"]})
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()


async def test_claim_with_bad_worker_id_is_400(server):
    reply = await server.client.post("/v1/workers/w%201/claim-task",
                                     json={"lane_id": "default", "worker_instance_id": "i"})
    assert "worker_id" in assert_error(reply, 400, "invalid_input")["error"]


async def test_claim_without_a_body_is_400(server):
    reply = await server.client.post("/v1/workers/w1/claim-task")
    assert_error(reply, 400, "invalid_input")
