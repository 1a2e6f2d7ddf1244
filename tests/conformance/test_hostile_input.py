"""Hostile bodies are typed 400s on every backend, never a 500 from the store."""

import json

import pytest

JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("body", [
    {"namespace": "a\u0000b"},
    {"tags": {"app.x": "a\u0000"}},
    {"execution_kind": "\ud800"},
    {"idempotency_key": "\udfff"},
    {"policy": {"retry_policy": {"retryable_categories": ["\ud800"]}}},
], ids=["nul-namespace", "nul-tag-value", "surrogate-kind", "surrogate-key",
        "surrogate-in-policy"])
async def test_unstorable_strings_are_refused(ff, body):
    reply = await ff.call("POST", "/v1/executions", data=json.dumps(body).encode(),
                          headers=JSON)
    assert (reply.status, reply.body["kind"]) == (400, "invalid_json")


async def test_a_worker_name_with_a_lone_surrogate_is_refused(ff):
    await ff.create()
    body = json.dumps({"lane_id": "default", "worker_instance_id": "\ud800"}).encode()
    reply = await ff.call("POST", "/v1/workers/w1/claim-task", data=body, headers=JSON)
    assert reply.status == 400
    assert await ff.claim() is not None  # the execution is still there to claim


async def test_deeply_nested_json_is_refused(ff):
    deep = b"[" * 100_000 + b"]" * 100_000
    reply = await ff.call("POST", "/v1/executions", data=deep, headers=JSON)
    assert (reply.status, reply.body["kind"]) == (400, "invalid_json")


async def test_an_astral_character_in_a_string_is_stored_exactly(ff):
    eid = await ff.create(execution_kind="emoji-\U0001F600", tags={"app.note": "\U0001F680"})
    info = await ff.info(eid)
    assert (info["execution_kind"], info["tags"]) == ("emoji-\U0001F600", {"app.note": "\U0001F680"})
