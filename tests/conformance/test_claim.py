"""Claiming work: the task a worker gets, which work it gets, long-polling and bad requests."""

import trio
import trio.testing

from appliance.testing import eid_path


async def claim_reply(ff, body, worker: str = "w1"):
    return await ff.call("POST", f"/v1/workers/{worker}/claim-task", body)


def vector(info: dict) -> tuple:
    sv = info["state_vector"]
    return (sv["lifecycle_phase"], sv["ownership_state"], sv["eligibility_state"],
            sv["blocking_reason"], sv["terminal_outcome"], sv["attempt_state"],
            sv["public_state"])


async def created_in_order(ff, *priorities: int) -> list[str]:
    """One execution per priority, each a millisecond after the previous one."""
    ids = []
    for p in priorities:
        ids.append(await ff.create(priority=p))
        ff.clock.advance(1)
    return ids


async def with_caps(ff, *caps: str, **fields) -> str:
    policy = {"routing_requirements": {"required_capabilities": list(caps)}}
    return await ff.create(policy=policy, **fields)


# -- the task -------------------------------------------------------------------------

async def test_claim_returns_a_first_attempt_with_a_fresh_lease(ff):
    eid = await ff.create(execution_kind="resize", namespace="media", lane_id="images",
                          tags={"app.job": "j-1"}, input_payload=[0, 1, 255])
    task = await ff.claim(lane="images")
    assert task["execution_id"] == eid
    assert (task["attempt_index"], task["attempt_type"], task["lease_epoch"]) == (0, "initial", 1)
    assert task["lease_id"] and task["attempt_id"] and task["handle"]
    assert task["lease_expires_at"] == ff.clock.now_ms() + 30_000
    assert (task["execution_kind"], task["namespace"], task["lane_id"]) == (
        "resize", "media", "images")
    assert task["tags"] == {"app.job": "j-1"}
    assert task["input_payload"] == [0, 1, 255]
    assert task["input_payload_b64"] == "AAH/"


async def test_claim_honours_a_custom_lease_ttl(ff):
    await ff.create()
    task = await ff.claim(lease_ttl_ms=5000)
    assert task["lease_expires_at"] == ff.clock.now_ms() + 5000


async def test_claimed_execution_reads_as_active_and_leased(ff):
    eid = await ff.create()
    await ff.claim()
    info = await ff.info(eid)
    assert vector(info) == ("active", "leased", "not_applicable", "none", "none",
                            "running_attempt", "active")
    assert info["started_at"] == str(ff.clock.now_ms())
    assert info["current_worker_id"] == "w1"


async def test_claim_with_nothing_to_do_is_204(ff):
    reply = await claim_reply(ff, {"lane_id": "default", "worker_instance_id": "w1-1"})
    assert reply.status == 204
    assert await ff.claim() is None


async def test_claim_takes_only_the_named_lanes_work(ff):
    eid = await ff.create(lane_id="gpu")
    assert await ff.claim(lane="cpu") is None
    assert (await ff.claim(lane="gpu"))["execution_id"] == eid


# -- order ----------------------------------------------------------------------------

async def test_higher_priority_is_claimed_first(ff):
    low, high, mid = await created_in_order(ff, 1, 100, 50)
    claimed = [(await ff.claim())["execution_id"] for _ in range(3)]
    assert claimed == [high, mid, low]


async def test_equal_priorities_are_claimed_first_in_first_out(ff):
    ids = await created_in_order(ff, 5, 5, 5, 5)
    claimed = [(await ff.claim())["execution_id"] for _ in range(4)]
    assert claimed == ids


# -- capabilities ---------------------------------------------------------------------

async def test_worker_with_a_superset_of_capabilities_claims(ff):
    eid = await with_caps(ff, "gpu", "cuda")
    task = await ff.claim(capabilities=["cuda", "gpu", "fp16"])
    assert task["execution_id"] == eid


async def test_worker_with_exactly_the_required_capabilities_claims(ff):
    eid = await with_caps(ff, "gpu")
    assert (await ff.claim(capabilities=["gpu"]))["execution_id"] == eid


async def test_execution_without_requirements_is_claimed_by_any_worker(ff):
    eid = await ff.create()
    assert (await ff.claim(capabilities=["gpu"]))["execution_id"] == eid


async def test_worker_missing_one_capability_does_not_claim_and_execution_waits(ff):
    eid = await with_caps(ff, "gpu", "cuda")
    assert await ff.claim(capabilities=["gpu"]) is None
    assert await ff.claim() is None
    info = await ff.info(eid)
    assert info["public_state"] == "waiting"
    assert info["state_vector"]["attempt_state"] == "pending_first_attempt"


async def test_worker_skips_work_it_cannot_run_for_lower_priority_work_it_can(ff):
    await with_caps(ff, "gpu", priority=100)
    plain = await ff.create(priority=1)
    task = await ff.claim(capabilities=["cpu"])
    assert task["execution_id"] == plain


async def test_worker_walks_past_more_unrunnable_work_than_one_scan_window(ff):
    for _ in range(70):
        await with_caps(ff, "gpu", priority=100)
    plain = await ff.create(priority=1)
    task = await ff.claim(capabilities=["cpu"])
    assert task is not None and task["execution_id"] == plain


# -- long-poll ------------------------------------------------------------------------

async def test_long_poll_claim_returns_work_created_while_waiting(ff):
    got = {}

    async def waiter():
        got["task"] = await ff.claim(wait_ms=5000)

    with trio.fail_after(3):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert "task" not in got
            eid = await ff.create()
    assert got["task"]["execution_id"] == eid


async def test_long_poll_claim_with_no_work_ends_in_204(ff):
    with trio.fail_after(3):
        reply = await claim_reply(ff, {"lane_id": "default", "worker_instance_id": "w1-1",
                                       "wait_ms": 200})
    assert reply.status == 204


# -- bad requests ---------------------------------------------------------------------

async def test_worker_id_with_a_space_is_rejected(ff):
    reply = await claim_reply(ff, {"lane_id": "default", "worker_instance_id": "i"},
                              worker="bad%20worker")
    assert (reply.status, reply.body["kind"]) == (400, "invalid_input")


async def test_claim_without_lane_is_rejected(ff):
    reply = await claim_reply(ff, {"worker_instance_id": "w1-1"})
    assert reply.status == 400


async def test_claim_with_a_65_byte_lane_is_rejected(ff):
    reply = await claim_reply(ff, {"lane_id": "a" * 65, "worker_instance_id": "w1-1"})
    assert reply.status == 400


async def test_claim_without_worker_instance_id_is_rejected(ff):
    reply = await claim_reply(ff, {"lane_id": "default"})
    assert reply.status == 400


async def test_claim_wait_above_the_maximum_is_rejected(ff):
    reply = await claim_reply(ff, {"lane_id": "default", "worker_instance_id": "w1-1",
                                   "wait_ms": 30_001})
    assert reply.status == 400


async def test_claim_with_zero_lease_ttl_is_rejected(ff):
    reply = await claim_reply(ff, {"lane_id": "default", "worker_instance_id": "w1-1",
                                   "lease_ttl_ms": 0})
    assert reply.status == 400


async def test_claim_with_capabilities_not_an_array_is_rejected(ff):
    eid = await ff.create()
    reply = await claim_reply(ff, {"lane_id": "default", "worker_instance_id": "w1-1",
                                   "capabilities": "gpu"})
    assert reply.status == 400
    assert (await ff.call("GET", f"/v1/executions/{eid_path(eid)}/state")).body == "waiting"


# -- exclusivity ----------------------------------------------------------------------

async def test_each_execution_is_claimed_once_across_two_workers(ff):
    ids = {await ff.create() for _ in range(20)}
    claimed: dict[str, list[str]] = {"w1": [], "w2": []}

    async def drain(worker: str):
        while (task := await ff.claim(worker=worker)) is not None:
            claimed[worker].append(task["execution_id"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain, "w1")
        nursery.start_soon(drain, "w2")
    everything = claimed["w1"] + claimed["w2"]
    assert sorted(everything) == sorted(ids)
