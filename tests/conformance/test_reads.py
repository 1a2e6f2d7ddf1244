"""Reading executions back: info, state and result, and how bad ids are answered."""

import uuid

import pytest

from appliance.testing import eid_path


def url(eid: str, suffix: str = "") -> str:
    return f"/v1/executions/{eid_path(eid)}{suffix}"


async def test_info_of_a_new_execution_has_the_documented_shape(ff):
    eid = await ff.create(priority=42)
    info = await ff.info(eid)
    assert info["execution_id"] == eid
    assert isinstance(info["created_at"], str) and int(info["created_at"]) == ff.clock.now_ms()
    assert info["current_attempt_index"] == 0
    assert info["flow_id"] is None
    assert isinstance(info["blocking_detail"], str)
    assert info["priority"] == 42
    assert (info["total_attempt_count"], info["retry_count"], info["replay_count"],
            info["lease_reclaim_count"]) == (0, 0, 0, 0)
    assert info["tags"] == {}
    assert "started_at" not in info and "completed_at" not in info


async def test_state_is_a_bare_json_string(ff):
    eid = await ff.create()
    reply = await ff.call("GET", url(eid, "/state"))
    assert (reply.status, reply.body) == (200, "waiting")
    assert reply.headers["Content-Type"].startswith("application/json")


async def test_state_follows_the_lifecycle(ff):
    eid = await ff.create()
    task = await ff.claim()
    assert (await ff.call("GET", url(eid, "/state"))).body == "active"
    await ff.worker_op("complete", task)
    assert (await ff.call("GET", url(eid, "/state"))).body == "completed"


@pytest.mark.parametrize("suffix", ["", "/state", "/result"])
async def test_unknown_well_formed_id_is_execution_not_found(ff, suffix):
    reply = await ff.call("GET", url(f"{{fp:86}}:{uuid.uuid4()}", suffix))
    assert reply.status == 404, reply
    assert reply.body["kind"] == "execution_not_found"
    assert reply.body["retryable"] is False


@pytest.mark.parametrize("bad", [
    "not-an-id",
    "bee426d0-0682-4fdc-965c-09d169ebae2f",
    "{fp:xx}:3fc76d56-d2ab-4e0b-8eeb-7f667f7a9e0b",
    "{fp:65536}:1e4c09a0-e048-40d2-b948-49eafeca2abd",
    "{fp:0}:not-a-uuid",
])
@pytest.mark.parametrize("suffix", ["", "/state", "/result"])
async def test_malformed_id_is_a_400(ff, bad, suffix):
    reply = await ff.call("GET", url(bad, suffix))
    assert reply.status == 400, reply
    assert reply.body["kind"] == "invalid_input"


async def test_result_before_completion_is_result_not_found(ff):
    eid = await ff.create()
    reply = await ff.call("GET", url(eid, "/result"))
    assert (reply.status, reply.body["kind"]) == (404, "result_not_found")
    await ff.claim()
    reply = await ff.call("GET", url(eid, "/result"))
    assert (reply.status, reply.body["kind"]) == (404, "result_not_found")


async def test_result_is_byte_exact_for_every_byte_value(ff):
    eid = await ff.create()
    task = await ff.claim()
    done = await ff.worker_op("complete", task, result=list(range(256)))
    assert done.status == 200, done
    reply = await ff.call("GET", url(eid, "/result"))
    assert (reply.status, reply.body) == (200, bytes(range(256)))
    assert reply.headers["Content-Type"] == "application/octet-stream"


async def test_result_given_as_base64_is_byte_exact(ff):
    eid = await ff.create()
    task = await ff.claim()
    assert (await ff.worker_op("complete", task, result_b64="/wCAwQ==")).status == 200
    assert (await ff.call("GET", url(eid, "/result"))).body == bytes([0xFF, 0x00, 0x80, 0xC1])


async def test_repeated_complete_keeps_the_first_result(ff):
    eid = await ff.create()
    task = await ff.claim()
    assert (await ff.worker_op("complete", task, result=[1])).status == 200
    again = await ff.worker_op("complete", task, result=[2])
    assert again.body == {"Completed": {"execution_id": eid, "public_state": "completed"}}
    assert (await ff.call("GET", url(eid, "/result"))).body == bytes([1])


async def test_result_encoding_is_returned_as_a_header(ff):
    eid = await ff.create()
    task = await ff.claim()
    await ff.worker_op("complete", task, result=[123, 125], result_encoding="json")
    reply = await ff.call("GET", url(eid, "/result"))
    assert (reply.status, reply.body) == (200, b"{}")
    assert reply.headers["X-FlowFabric-Result-Encoding"] == "json"


async def test_completed_without_a_result_is_result_not_found(ff):
    eid = await ff.create()
    task = await ff.claim()
    assert (await ff.worker_op("complete", task)).status == 200
    reply = await ff.call("GET", url(eid, "/result"))
    assert (reply.status, reply.body["kind"]) == (404, "result_not_found")


async def test_cancelled_execution_has_no_result(ff):
    eid = await ff.create()
    assert (await ff.call("POST", url(eid, "/cancel"), {})).status == 200
    reply = await ff.call("GET", url(eid, "/result"))
    assert (reply.status, reply.body["kind"]) == (404, "result_not_found")


async def test_started_at_and_completed_at_appear_as_strings_once_set(ff):
    eid = await ff.create()
    ff.clock.advance(10)
    task = await ff.claim()
    started = await ff.info(eid)
    assert started["started_at"] == str(ff.clock.now_ms())
    assert "completed_at" not in started
    ff.clock.advance(10)
    await ff.worker_op("complete", task)
    done = await ff.info(eid)
    assert done["started_at"] == started["started_at"]
    assert done["completed_at"] == str(ff.clock.now_ms())


async def test_info_of_an_active_execution_names_the_worker(ff):
    eid = await ff.create()
    task = await ff.claim(worker="w7", lease_ttl_ms=20_000)
    info = await ff.info(eid)
    assert info["public_state"] == "active"
    assert (info["current_worker_id"], info["current_worker_instance_id"]) == ("w7", "w7-1")
    assert info["lease_expires_at"] == ff.clock.now_ms() + 20_000
    assert info["lease_epoch"] == task["lease_epoch"] == 1
    assert info["total_attempt_count"] == 1
