"""Body caps (1 MiB create/complete, 64 KiB control routes), chunked bodies included."""

import base64
import json

import pytest

LARGE, CONTROL = 1_048_576, 65_536


def create_body(size: int) -> bytes:
    """A valid create body of exactly ``size`` bytes (payload, then trailing spaces)."""
    skeleton = len(b'{"input_payload_b64":""}')
    b64_len = (size - skeleton) // 4 * 4
    raw = base64.b64encode(b"\x00" * (b64_len // 4 * 3))
    body = b'{"input_payload_b64":"' + raw + b'"}'
    return body + b" " * (size - len(body))


def cancel_body(size: int) -> bytes:
    body = b'{"reason":"too big?"}'
    return body + b" " * (size - len(body))


async def chunks(data: bytes, step: int = 65_536):
    for i in range(0, len(data), step):
        yield data[i:i + step]


JSON = {"Content-Type": "application/json"}


def assert_too_large(reply, route, limit):
    assert reply.status_code == 413, reply.text[:200]
    body = reply.json()
    assert (body["kind"], body["retryable"]) == ("payload_too_large", False)
    assert (body["limit_bytes"], body["route"]) == (limit, route)


@pytest.mark.parametrize("size", [LARGE - 1, LARGE])
async def test_create_at_the_cap_is_accepted(server, size):
    data = create_body(size)
    assert len(data) == size
    reply = await server.client.post("/v1/executions", content=data, headers=JSON)
    assert reply.status_code == 201, reply.text[:200]


async def test_create_over_the_cap_is_413(server):
    reply = await server.client.post("/v1/executions", content=create_body(LARGE + 1),
                                     headers=JSON)
    assert_too_large(reply, "/v1/executions", LARGE)


async def test_cancel_at_the_cap_is_accepted(server):
    eid = await server.create()
    reply = await server.client.post(f"/v1/executions/{eid}/cancel",
                                     content=cancel_body(CONTROL), headers=JSON)
    assert reply.status_code == 200, reply.text[:200]
    assert "Cancelled" in reply.json()


async def test_cancel_over_the_cap_is_413(server):
    eid = await server.create()
    reply = await server.client.post(f"/v1/executions/{eid}/cancel",
                                     content=cancel_body(CONTROL + 1), headers=JSON)
    assert_too_large(reply, "/v1/executions/{execution_id}/cancel", CONTROL)
    state = await server.client.get(f"/v1/executions/{eid}/state")
    assert state.json() == "waiting"


async def test_complete_shares_the_large_cap(server):
    await server.create()
    task = await server.claim()
    body = json.dumps({"handle": task["handle"]}).encode()
    padded = body + b" " * (CONTROL * 2 - len(body))
    reply = await server.client.post(f"/v1/executions/{task['execution_id']}/complete",
                                     content=padded, headers=JSON)
    assert reply.status_code == 200, reply.text[:200]


async def test_chunked_create_under_the_cap_is_accepted(server):
    reply = await server.client.post("/v1/executions", content=chunks(create_body(LARGE)),
                                     headers=JSON)
    assert reply.status_code == 201, reply.text[:200]


async def test_chunked_create_over_the_cap_is_413(server):
    reply = await server.client.post("/v1/executions",
                                     content=chunks(create_body(LARGE + 1)), headers=JSON)
    assert "content-length" not in reply.request.headers
    assert reply.status_code == 413
    assert reply.json()["kind"] == "payload_too_large"


async def test_chunked_413_names_the_limit_and_route_like_a_declared_one(server):
    reply = await server.client.post("/v1/executions",
                                     content=chunks(create_body(LARGE + 1)), headers=JSON)
    assert_too_large(reply, "/v1/executions", LARGE)


async def test_chunked_cancel_over_the_cap_is_413(server):
    eid = await server.create()
    reply = await server.client.post(f"/v1/executions/{eid}/cancel",
                                     content=chunks(cancel_body(CONTROL + 1), 4096),
                                     headers=JSON)
    assert_too_large(reply, "/v1/executions/{execution_id}/cancel", CONTROL)


async def test_far_over_the_cap_chunked_is_413(server):
    reply = await server.client.post("/v1/executions",
                                     content=chunks(b" " * (4 * LARGE)), headers=JSON)
    assert reply.status_code == 413
    assert reply.json()["kind"] == "payload_too_large"
