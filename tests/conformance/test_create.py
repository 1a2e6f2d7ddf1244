"""Creating executions: defaults, ids and partitions, dedup, delays, payloads, validation."""

import base64
import uuid

import pytest

DEFAULT_LANE_PARTITION = 86  # crc16("default") % 256


def an_id(partition: int = DEFAULT_LANE_PARTITION) -> str:
    return f"{{fp:{partition}}}:{uuid.uuid4()}"


async def post(ff, **fields):
    return await ff.call("POST", "/v1/executions", fields)


async def listed(ff, partition: int = DEFAULT_LANE_PARTITION) -> list[str]:
    reply = await ff.call("GET", "/v1/executions", query={"partition": partition})
    assert reply.status == 200, reply
    return reply.body["executions"]


async def test_create_with_defaults_is_created_and_waiting(ff):
    reply = await post(ff)
    assert reply.status == 201, reply
    assert reply.body["Created"]["public_state"] == "waiting"


async def test_new_execution_has_every_state_dimension_set(ff):
    info = await ff.info(await ff.create())
    assert info["state_vector"] == {
        "lifecycle_phase": "runnable", "ownership_state": "unowned",
        "eligibility_state": "eligible_now", "blocking_reason": "waiting_for_worker",
        "terminal_outcome": "none", "attempt_state": "pending_first_attempt",
        "public_state": "waiting"}
    assert info["public_state"] == "waiting"


async def test_create_echoes_namespace_lane_kind_and_priority(ff):
    eid = await ff.create(namespace="tenant-a", lane_id="gpu-lane", execution_kind="render",
                          priority=42)
    info = await ff.info(eid)
    assert (info["namespace"], info["lane_id"], info["execution_kind"], info["priority"]) == (
        "tenant-a", "gpu-lane", "render", 42)


async def test_defaults_are_echoed(ff):
    info = await ff.info(await ff.create())
    assert (info["namespace"], info["lane_id"], info["execution_kind"], info["priority"]) == (
        "default", "default", "default", 0)


@pytest.mark.parametrize("lane, partition", [("default", 86), ("gpu-lane", 15)])
async def test_minted_id_lives_on_the_lanes_partition(ff, lane, partition):
    eid = await ff.create(lane_id=lane)
    prefix, _, rest = eid.partition("}:")
    assert prefix == f"{{fp:{partition}"
    assert str(uuid.UUID(rest)) == rest
    assert (await ff.info(eid))["partition_id"] == partition


async def test_client_supplied_execution_id_is_honoured(ff):
    eid = an_id(7)
    assert await ff.create(execution_id=eid) == eid
    assert (await ff.info(eid))["partition_id"] == 7


async def test_matching_partition_id_is_accepted(ff):
    eid = an_id(7)
    assert await ff.create(execution_id=eid, partition_id=7) == eid


async def test_partition_id_mismatch_is_rejected(ff):
    eid = an_id(7)
    reply = await post(ff, execution_id=eid, partition_id=8)
    assert reply.status == 400, reply
    assert "partition_id" in reply.body["error"]
    assert await listed(ff, 7) == []


async def test_client_now_is_accepted_but_the_server_clock_wins(ff):
    eid = await ff.create(now=1)
    assert (await ff.info(eid))["created_at"] == str(ff.clock.now_ms())


async def test_policy_priority_applies_when_no_top_level_priority(ff):
    eid = await ff.create(policy={"priority": 10000})
    assert (await ff.info(eid))["priority"] == 9000


async def test_conflicting_priority_and_policy_priority_is_rejected(ff):
    reply = await post(ff, priority=1, policy={"priority": 2})
    assert reply.status == 400, reply
    assert "priority" in reply.body["error"]


@pytest.mark.parametrize("given, stored", [(10000, 9000), (-5, 0), (50, 50)])
async def test_priority_is_clamped_to_0_9000(ff, given, stored):
    eid = await ff.create(priority=given)
    assert (await ff.info(eid))["priority"] == stored


async def test_same_execution_id_twice_is_a_duplicate(ff):
    eid = an_id()
    await ff.create(execution_id=eid, priority=1)
    reply = await post(ff, execution_id=eid, priority=2)
    assert (reply.status, reply.body) == (200, {"Duplicate": {"execution_id": eid}})
    assert (await ff.info(eid))["priority"] == 1


async def test_same_idempotency_key_returns_the_first_id(ff):
    first = await ff.create(idempotency_key="order-1")
    reply = await post(ff, idempotency_key="order-1", execution_id=an_id())
    assert (reply.status, reply.body) == (200, {"Duplicate": {"execution_id": first}})
    assert await listed(ff) == [first]


async def test_same_idempotency_key_with_minted_ids_is_a_duplicate(ff):
    first = await ff.create(idempotency_key="order-1")
    reply = await post(ff, idempotency_key="order-1")
    assert (reply.status, reply.body) == (200, {"Duplicate": {"execution_id": first}})


async def test_idempotency_key_is_scoped_to_the_namespace(ff):
    first = await ff.create(idempotency_key="order-1", namespace="alpha")
    reply = await post(ff, idempotency_key="order-1", namespace="beta")
    assert reply.status == 201, reply
    assert reply.body["Created"]["execution_id"] != first


async def test_idempotency_key_is_scoped_to_the_partition(ff):
    first = await ff.create(idempotency_key="order-1")
    reply = await post(ff, idempotency_key="order-1", execution_id=an_id(7))
    assert reply.status == 201, reply
    assert reply.body["Created"]["execution_id"] != first


async def test_idempotency_key_is_forgotten_after_the_dedup_window(ff):
    policy = {"dedup_window_ms": 1000}
    first = await ff.create(idempotency_key="order-1", policy=policy)
    ff.clock.advance(500)
    assert (await post(ff, idempotency_key="order-1", policy=policy)).status == 200
    ff.clock.advance(501)
    reply = await post(ff, idempotency_key="order-1", policy=policy)
    assert reply.status == 201, reply
    assert reply.body["Created"]["execution_id"] != first


async def test_future_delay_until_creates_a_delayed_execution(ff):
    until = ff.clock.now_ms() + 60_000
    reply = await post(ff, delay_until=until)
    assert reply.status == 201, reply
    assert reply.body["Created"]["public_state"] == "delayed"
    info = await ff.info(reply.body["Created"]["execution_id"])
    vector = info["state_vector"]
    assert (vector["eligibility_state"], vector["blocking_reason"]) == (
        "not_eligible_until_time", "waiting_for_delay")
    assert info["delay_until"] == until


async def test_delayed_execution_is_claimable_only_once_due(ff):
    eid = await ff.create(delay_until=ff.clock.now_ms() + 60_000)
    assert await ff.claim() is None
    ff.clock.advance(59_999)
    await ff.tick("delayed_promoter")
    assert await ff.claim() is None
    ff.clock.advance(1)
    await ff.tick("delayed_promoter")
    assert (await ff.info(eid))["public_state"] == "waiting"
    task = await ff.claim()
    assert task is not None and task["execution_id"] == eid
    assert task["attempt_type"] == "initial"


async def test_past_delay_until_is_waiting_and_claimable_at_once(ff):
    reply = await post(ff, delay_until=ff.clock.now_ms() - 1000)
    assert reply.status == 201, reply
    assert reply.body["Created"]["public_state"] == "waiting"
    task = await ff.claim()
    assert task is not None and task["execution_id"] == reply.body["Created"]["execution_id"]


async def test_execution_deadline_at_is_echoed(ff):
    deadline = ff.clock.now_ms() + 600_000
    eid = await ff.create(execution_deadline_at=deadline)
    assert (await ff.info(eid))["execution_deadline_at"] == deadline
    task = await ff.claim()
    assert task["execution_deadline_at"] == deadline


NON_UTF8 = bytes([0, 1, 127, 128, 192, 193, 254, 255, 0xED, 0xA0, 0x80])


async def test_input_payload_int_array_is_byte_exact(ff):
    await ff.create(input_payload=list(NON_UTF8))
    task = await ff.claim()
    assert bytes(task["input_payload"]) == NON_UTF8
    assert base64.b64decode(task["input_payload_b64"]) == NON_UTF8


async def test_input_payload_b64_is_byte_exact(ff):
    await ff.create(input_payload_b64=base64.b64encode(NON_UTF8).decode())
    task = await ff.claim()
    assert bytes(task["input_payload"]) == NON_UTF8
    assert base64.b64decode(task["input_payload_b64"]) == NON_UTF8


async def test_payload_in_both_forms_is_rejected(ff):
    reply = await post(ff, input_payload=[1], input_payload_b64="AQ==")
    assert reply.status == 400, reply
    assert "input_payload" in reply.body["error"]
    assert await listed(ff) == []


async def test_required_capabilities_gate_the_claim(ff):
    eid = await ff.create(policy={"routing_requirements": {"required_capabilities":
                                                           ["gpu", "cuda"]}})
    assert await ff.claim(capabilities=["gpu"]) is None
    task = await ff.claim(capabilities=["cuda", "gpu", "avx"])
    assert task["execution_id"] == eid
    assert task["policy"]["routing_requirements"]["required_capabilities"] == ["cuda", "gpu"]


@pytest.mark.parametrize("caps, reason", [
    (["a,b"], "required:comma_in_token"),
    (["gpu", 42], "required:non_string_token"),
    ("gpu", "required:not_array"),
    (["has space"], "required:control_or_whitespace"),
    (["new\nline"], "required:control_or_whitespace"),
    ([""], "required:empty_token"),
])
async def test_invalid_capabilities_are_rejected_and_nothing_is_created(ff, caps, reason):
    reply = await post(ff, policy={"routing_requirements": {"required_capabilities": caps}})
    assert reply.status == 400, reply
    assert reply.body["kind"] == "invalid_capabilities"
    assert reason in reply.body["error"]
    assert await listed(ff) == []


@pytest.mark.parametrize("policy, field", [
    ("not-an-object", "policy"),
    ([1, 2], "policy"),
    ({"bogus": 1}, "bogus"),
    ({"retry_policy": {"backoff": {"type": "linear"}}}, "type"),
    ({"retry_policy": {"backoff": {"type": 5}}}, "type"),
    ({"retry_policy": {"max_retries": -1}}, "max_retries"),
    ({"suspension_policy": {}}, "suspension_policy"),
    ({"budget_ids": ["b-1"]}, "budget_ids"),
    ({"routing_requirements": "gpu"}, "routing_requirements"),
])
async def test_malformed_policy_is_rejected_naming_the_field(ff, policy, field):
    reply = await post(ff, policy=policy)
    assert reply.status == 400, reply
    assert reply.body["kind"] == "invalid_policy_json"
    assert field in reply.body["error"]
    assert await listed(ff) == []


async def test_empty_budget_ids_is_accepted(ff):
    assert (await post(ff, policy={"budget_ids": []})).status == 201


async def test_valid_tags_are_stored(ff):
    tags = {"cairn.task_id": "t-001", "my_app.run_id": "r-42"}
    eid = await ff.create(tags=tags)
    assert (await ff.info(eid))["tags"] == tags


@pytest.mark.parametrize("key", ["no_dot_here", "Cairn.x", ".x", "cairn."])
async def test_bad_tag_keys_are_rejected(ff, key):
    reply = await post(ff, tags={key: "v"})
    assert reply.status == 400, reply
    assert reply.body["kind"] == "invalid_tag_key"
    assert key in reply.body["error"]
    assert await listed(ff) == []


async def test_unknown_top_level_field_is_rejected_by_name(ff):
    reply = await post(ff, lane_id="default", colour="blue")
    assert reply.status == 400, reply
    assert reply.body["kind"] == "invalid_input"
    assert "colour" in reply.body["error"]
    assert await listed(ff) == []


@pytest.mark.parametrize("fields, named", [
    ({"priority": "high"}, "priority"),
    ({"priority": 1.5}, "priority"),
    ({"lane_id": "a" * 65}, "lane_id"),
    ({"lane_id": "bad\nlane"}, "lane_id"),
    ({"lane_id": ""}, "lane_id"),
    ({"namespace": 7}, "namespace"),
    ({"input_payload": [256]}, "input_payload"),
    ({"input_payload_b64": "not base64!"}, "input_payload_b64"),
    ({"delay_until": "soon"}, "delay_until"),
    ({"execution_id": "not-an-id"}, "execution_id"),
])
async def test_wrongly_typed_fields_are_rejected(ff, fields, named):
    reply = await post(ff, **fields)
    assert reply.status == 400, reply
    assert reply.body["kind"] == "invalid_input"
    assert named in reply.body["error"]


async def test_lane_of_64_bytes_is_accepted(ff):
    assert (await post(ff, lane_id="a" * 64)).status == 201


async def test_body_that_is_not_an_object_is_rejected(ff):
    reply = await ff.call("POST", "/v1/executions", [1, 2])
    assert reply.status == 400, reply
