"""The batch worker protocol on every backend: each item answered as its single route
would answer it, in order, atomic on its own; caps named when exceeded."""

from __future__ import annotations

import json
import uuid

import pytest
import trio

from appliance.testing import eid_path

JSON = {"content-type": "application/json"}
GONE = "{fp:3}:00000000-0000-4000-8000-000000000000"


def eid(partition: int = 5) -> str:
    return f"{{fp:{partition}}}:{uuid.uuid4()}"


async def create_batch(ff, executions) -> list:
    reply = await ff.call("POST", "/v1/executions/batch", {"executions": executions})
    assert reply.status == 200, reply
    return reply.body["outcomes"]


async def claim_many(ff, max_tasks: int, **fields) -> list:
    body = {"lane_id": "default", "worker_instance_id": "w1-1", "max_tasks": max_tasks,
            **fields}
    reply = await ff.call("POST", "/v1/workers/w1/claim-task", body)
    assert reply.status in (200, 204), reply
    return reply.body["tasks"] if reply.status == 200 else []


# -- create --------------------------------------------------------------------------------

async def test_a_create_batch_answers_each_item_in_order(ff):
    first, second = eid(), eid()
    outcomes = await create_batch(ff, [
        {"execution_id": first, "execution_kind": "a"},
        {"priority": "high"},
        {"execution_id": second},
        {"execution_id": first},
        {"lane_id": ""},
        "not an object",
        {"idempotency_key": "k1"},
        {"idempotency_key": "k1"},
    ])
    assert outcomes[0] == {"Created": {"execution_id": first, "public_state": "waiting"}}
    assert outcomes[1]["kind"] == "invalid_input" and "executions[1].priority" in \
        outcomes[1]["error"]
    assert outcomes[2]["Created"]["execution_id"] == second
    assert outcomes[3] == {"Duplicate": {"execution_id": first}}
    assert outcomes[4]["kind"] == "invalid_input" and "executions[4]" in outcomes[4]["error"]
    assert "executions[5]" in outcomes[5]["error"]
    minted = outcomes[6]["Created"]["execution_id"]
    assert outcomes[7] == {"Duplicate": {"execution_id": minted}}
    assert (await ff.info(first))["execution_kind"] == "a"
    assert len(await claim_many(ff, 10)) == 3


async def test_a_create_batch_over_the_item_cap_is_refused_naming_it(ff):
    reply = await ff.call("POST", "/v1/executions/batch", {"executions": [{}] * 1001})
    assert (reply.status, reply.body["kind"]) == (400, "invalid_input")
    assert "executions" in reply.body["error"] and "1000" in reply.body["error"]
    assert await claim_many(ff, 10) == []


async def test_a_create_batch_over_the_body_cap_is_413_naming_it(ff):
    big = "a" * 200_000
    reply = await ff.call("POST", "/v1/executions/batch",
                          {"executions": [{"input_payload_b64": big}] * 90})
    assert (reply.status, reply.body["kind"]) == (413, "payload_too_large")
    assert reply.body["limit_bytes"] == 16 * 1_048_576


@pytest.mark.parametrize("body", [b'{"executions": {}}', b'{"executions": [{"priority": NaN}]}',
                                  b'{"executions": [], "extra": 1}', b"[]"])
async def test_a_malformed_batch_is_one_400(ff, body):
    reply = await ff.call("POST", "/v1/executions/batch", data=body, headers=JSON)
    assert reply.status == 400, reply


async def test_an_empty_batch_answers_no_outcomes(ff):
    assert await create_batch(ff, []) == []


# -- claim ---------------------------------------------------------------------------------

async def test_claim_with_max_tasks_leases_the_best_ones_in_order(ff):
    low = await create_batch(ff, [{"priority": 1}] * 2)
    high = await create_batch(ff, [{"priority": 9}] * 2)
    ids = {o["Created"]["execution_id"]: "high" for o in high}
    ids.update({o["Created"]["execution_id"]: "low" for o in low})
    tasks = await claim_many(ff, 3)  # in one millisecond: by priority, then by id
    assert [ids[t["execution_id"]] for t in tasks] == ["high", "high", "low"]
    assert [t["execution_id"] for t in tasks[:2]] == sorted(t["execution_id"] for t in tasks[:2])
    assert {t["lease_epoch"] for t in tasks} == {1} and len({t["handle"] for t in tasks}) == 3
    rest = await claim_many(ff, 3)
    assert len(rest) == 1 and ids[rest[0]["execution_id"]] == "low"
    assert rest[0]["execution_id"] > tasks[2]["execution_id"]
    assert await claim_many(ff, 3) == []


async def test_claim_with_max_tasks_one_still_answers_a_list(ff):
    await ff.create()
    tasks = await claim_many(ff, 1)
    assert len(tasks) == 1 and tasks[0]["input_payload_b64"] == ""


async def test_claim_with_max_tasks_respects_capabilities(ff):
    await create_batch(ff, [{"policy": {"routing_requirements": {"required_capabilities":
                                                                  ["gpu"]}}}] * 2 + [{}])
    assert len(await claim_many(ff, 5)) == 1
    assert len(await claim_many(ff, 5, capabilities=["gpu"])) == 2


async def test_a_long_polling_batch_claim_returns_once_work_arrives(ff):
    got = {}

    async def waiter():
        got["tasks"] = await claim_many(ff, 5, wait_ms=10_000)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            while ff.service.work.waiting("default") == 0:
                await trio.sleep(0.005)
            await create_batch(ff, [{}] * 3)
    assert 1 <= len(got["tasks"]) <= 3


@pytest.mark.parametrize("value", [0, 1001, "3", 2.5])
async def test_claim_with_a_bad_max_tasks_is_a_400_naming_it(ff, value):
    reply = await ff.call("POST", "/v1/workers/w1/claim-task",
                          {"lane_id": "default", "worker_instance_id": "w", "max_tasks": value})
    assert reply.status == 400 and "max_tasks" in reply.body["error"]


# -- complete, fail, renew -----------------------------------------------------------------

async def leased(ff, n: int, **fields) -> list[dict]:
    await create_batch(ff, [fields] * n)
    return await claim_many(ff, n)


async def test_a_complete_batch_answers_each_item_with_the_single_routes_answer(ff):
    one, two, three = await leased(ff, 3)
    other = (await leased(ff, 1))[0]
    reply = await ff.call("POST", "/v1/workers/w1/complete", {"items": [
        {"execution_id": one["execution_id"], "handle": one["handle"], "result_b64": "aGk="},
        {"execution_id": two["execution_id"], "handle": "garbage"},
        {"execution_id": three["execution_id"], "handle": other["handle"]},
        {"execution_id": GONE, "handle": one["handle"]},
        {"execution_id": one["execution_id"], "handle": one["handle"], "result_b64": "aGk="},
        {"execution_id": three["execution_id"], "handle": three["handle"], "bogus": 1},
        {"execution_id": "nope", "handle": three["handle"]},
        {"execution_id": two["execution_id"], "handle": two["handle"], "result": [256]},
    ]})
    assert reply.status == 200, reply
    out = reply.body["outcomes"]
    assert out[0] == {"Completed": {"execution_id": one["execution_id"],
                                    "public_state": "completed"}}
    assert out[1]["kind"] == "invalid_handle"
    assert out[2]["kind"] == "invalid_handle"  # the handle of another execution
    assert out[3]["kind"] == "invalid_handle"
    assert out[4] == out[0]  # the same holder repeating itself: the same answer
    assert out[5]["kind"] == "invalid_input" and "items[5]" in out[5]["error"] and \
        "bogus" in out[5]["error"]
    assert out[6]["kind"] == "invalid_input" and "items[6]" in out[6]["error"]
    assert "items[7].result" in out[7]["error"]
    result = await ff.call("GET", f"/v1/executions/{eid_path(one['execution_id'])}/result")
    assert result.body == b"hi"
    for task in (two, three):
        assert (await ff.info(task["execution_id"]))["public_state"] == "active"


async def test_a_stale_handle_in_a_batch_fails_only_its_item(ff):
    [task] = await leased(ff, 1)
    revoke = f"/v1/executions/{eid_path(task['execution_id'])}/revoke-lease"
    assert (await ff.call("POST", revoke, {})).status == 200
    [again] = await claim_many(ff, 1)
    [fresh] = await leased(ff, 1)
    reply = await ff.call("POST", "/v1/workers/w1/complete", {"items": [
        {"execution_id": task["execution_id"], "handle": task["handle"]},
        {"execution_id": fresh["execution_id"], "handle": fresh["handle"]},
        {"execution_id": again["execution_id"], "handle": again["handle"]},
    ]})
    kinds = [next(iter(o)) if "kind" not in o else o["kind"] for o in reply.body["outcomes"]]
    assert kinds == ["stale_lease", "Completed", "Completed"]


async def test_a_fail_batch_retries_per_policy_item_by_item(ff):
    policy = {"retry_policy": {"max_retries": 1, "backoff": {"type": "fixed", "delay_ms": 10}}}
    retried = await leased(ff, 1, policy=policy)
    final = await leased(ff, 1)
    reply = await ff.call("POST", "/v1/workers/w1/fail", {"items": [
        {"execution_id": t["execution_id"], "handle": t["handle"], "failure_reason": "x"}
        for t in retried + final]})
    variants = [next(iter(o)) for o in reply.body["outcomes"]]
    assert variants == ["RetryScheduled", "TerminalFailed"]


async def test_a_renew_batch_extends_each_lease(ff):
    tasks = await leased(ff, 2)
    ff.clock.advance(1000)
    reply = await ff.call("POST", "/v1/workers/w1/renew", {"items": [
        {"execution_id": t["execution_id"], "handle": t["handle"], "lease_ttl_ms": 60_000}
        for t in tasks]})
    assert [o["lease_expires_at"] for o in reply.body["outcomes"]] == \
        [ff.clock.now_ms() + 60_000] * 2


@pytest.mark.parametrize("route", ["complete", "fail", "renew"])
@pytest.mark.parametrize("body", [{"items": {}}, {"items": [{}] * 1001}, {"items": [], "x": 1},
                                  {}])
async def test_a_malformed_worker_batch_is_one_400(ff, route, body):
    reply = await ff.call("POST", f"/v1/workers/w1/{route}", body)
    assert reply.status == 400, reply


async def test_a_worker_batch_with_a_bad_worker_id_is_a_400(ff):
    reply = await ff.call("POST", "/v1/workers/%20/complete", {"items": []})
    assert reply.status == 400 and "worker_id" in reply.body["error"]


async def test_items_that_are_not_objects_are_refused_one_by_one(ff):
    [task] = await leased(ff, 1)
    reply = await ff.call("POST", "/v1/workers/w1/complete", data=json.dumps({"items": [
        5, None, {"execution_id": task["execution_id"], "handle": task["handle"]}]}).encode(),
        headers=JSON)
    out = reply.body["outcomes"]
    assert [o.get("kind") for o in out[:2]] == ["invalid_input", "invalid_input"]
    assert "Completed" in out[2]
