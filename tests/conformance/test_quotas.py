"""Quota policies (spec/admission.md § Quotas; spec/http-api.md § Admission): create,
status, the sliding rate window, the concurrency cap and what frees a slot.

Time moves by the harness clock, except in the rate tests that put many workers on one
quota: there the clock follows real time (``real_time``) so the window slides under load."""

from __future__ import annotations

import pytest
import trio
from admission_helpers import (
    QUOTA_STATUS_KEYS,
    claim,
    claim_id,
    claimed_at,
    create_many,
    create_quota,
    explain,
    fresh_lane,
    in_order,
    limited,
    limits_policy,
    max_in_window,
    new_id,
    quota,
    quota_body,
    quota_reply,
    quota_status,
    real_time,
    revoke,
    wait_for_waiters,
)
from flow_helpers import assert_error, exec_url, woken_by
from suspension_helpers import single, suspend

# -- create and status ----------------------------------------------------------------------

async def test_create_is_201_then_200_keeping_the_first_definition(ff):
    body = quota_body(window_seconds=60, rate=10, concurrent=3)
    reply = await create_quota(ff, body)
    assert (reply.status, reply.body) == (
        201, {"Created": {"quota_policy_id": body["quota_policy_id"]}})
    again = quota_body(body["quota_policy_id"], window_seconds=1, rate=1, concurrent=1)
    reply = await create_quota(ff, again)
    assert (reply.status, reply.body) == (
        200, {"AlreadySatisfied": {"quota_policy_id": body["quota_policy_id"]}})
    status = await quota_status(ff, body["quota_policy_id"])
    assert (status["window_seconds"], status["max_requests_per_window"],
            status["max_concurrent"]) == (60, 10, 3)


async def test_status_shape_of_a_fresh_quota(ff):
    qid = await quota(ff, window_seconds=30, rate=7, concurrent=2)
    status = await quota_status(ff, qid)
    assert set(status) == QUOTA_STATUS_KEYS, status
    created_at = status.pop("created_at")
    assert int(created_at) == ff.clock.now_ms(), created_at
    assert status == {"quota_policy_id": qid, "window_seconds": 30,
                      "max_requests_per_window": 7, "max_concurrent": 2, "active": 0,
                      "admitted_in_window": 0, "retry_after_ms": 0}


async def test_unknown_quota_is_404(ff):
    assert_error(await quota_reply(ff, new_id()), 404, "quota_not_found")


async def test_a_rate_needs_a_window(ff):
    reply = await create_quota(ff, quota_body(window_seconds=0, rate=5))
    assert_error(reply, 400, "invalid_input", names=["window_seconds"])


@pytest.mark.parametrize(("field", "value"), [
    ("window_seconds", 31_622_401), ("max_requests_per_window", 2**31 + 1),
    ("max_concurrent", 2**31 + 1), ("window_seconds", -1), ("max_concurrent", -1)])
async def test_limits_out_of_range_are_400_naming_them(ff, field, value):
    body = quota_body(window_seconds=10, rate=1, concurrent=1)
    body[field] = value
    assert_error(await create_quota(ff, body), 400, "invalid_input", names=[field])
    assert_error(await quota_reply(ff, body["quota_policy_id"]), 404, "quota_not_found")


async def test_the_largest_limits_are_accepted(ff):
    reply = await create_quota(ff, quota_body(window_seconds=31_622_400, rate=2**31,
                                              concurrent=2**31))
    assert reply.status == 201, reply


async def test_both_limits_zero_is_unlimited(ff):
    lane = fresh_lane()
    qid = await quota(ff)
    ids = await create_many(ff, [{"lane_id": lane, "policy": limits_policy(quota_id=qid)}
                                 for _ in range(20)])
    got = [await claim_id(ff, lane) for _ in range(20)]
    assert sorted(got) == sorted(ids)
    assert (await quota_status(ff, qid))["active"] == 20


async def test_a_quota_that_does_not_exist_limits_nothing(ff):
    lane = fresh_lane()
    eid = await limited(ff, lane, quota_id=new_id())
    assert await claim_id(ff, lane) == eid


# -- the rate window ------------------------------------------------------------------------

async def test_the_rate_admits_its_maximum_then_waits_for_the_window(ff):
    lane = fresh_lane()
    qid = await quota(ff, window_seconds=1, rate=2)
    ids = await in_order(ff, 3, lane, quota_id=qid)
    assert [await claim_id(ff, lane) for _ in range(2)] == ids[:2]
    assert await claim(ff, lane) is None
    explained = await explain(ff, ids[2])
    assert (explained["reason"], explained["runnable"]) == ("quota_rate_limited", False)
    details = explained["details"]
    assert (details["quota_policy_id"], details["admitted_in_window"],
            details["max_requests_per_window"], details["window_seconds"]) == (qid, 2, 2, 1)
    assert 0 < details["retry_after_ms"] <= 1000, details
    status = await quota_status(ff, qid)
    assert (status["admitted_in_window"], status["retry_after_ms"], status["active"]) == (
        2, 1000, 2)
    ff.clock.advance(status["retry_after_ms"] - 1)
    assert await claim(ff, lane) is None
    ff.clock.advance(1)
    assert (await quota_status(ff, qid))["retry_after_ms"] == 0
    assert await claim_id(ff, lane) == ids[2]


async def test_the_window_slides(ff):
    lane = fresh_lane()
    qid = await quota(ff, window_seconds=1, rate=2)
    ids = await create_many(ff, [{"lane_id": lane, "policy": limits_policy(quota_id=qid)}
                                 for _ in range(5)])
    assert await claim(ff, lane) is not None  # t = 0
    ff.clock.advance(600)
    assert await claim(ff, lane) is not None  # t = 600
    assert await claim(ff, lane) is None
    assert (await quota_status(ff, qid))["retry_after_ms"] == 400
    ff.clock.advance(400)  # t = 1000: the first entry left the window, the second did not
    assert await claim(ff, lane) is not None
    assert await claim(ff, lane) is None
    assert (await quota_status(ff, qid))["retry_after_ms"] == 600
    ff.clock.advance(600)
    assert await claim(ff, lane) is not None
    assert len(ids) == 5


async def test_completing_work_does_not_give_back_rate(ff):
    lane = fresh_lane()
    qid = await quota(ff, window_seconds=10, rate=1)
    await limited(ff, lane, quota_id=qid)
    await limited(ff, lane, quota_id=qid)
    task = await claim(ff, lane)
    reply = await ff.worker_op("complete", task)
    assert reply.status == 200
    assert await claim(ff, lane) is None
    assert (await quota_status(ff, qid))["admitted_in_window"] == 1


async def test_a_quota_is_shared_by_every_lane_that_names_it(ff):
    a, b = fresh_lane(), fresh_lane()
    qid = await quota(ff, window_seconds=60, rate=1)
    await limited(ff, a, quota_id=qid)
    eid_b = await limited(ff, b, quota_id=qid)
    assert await claim(ff, a) is not None
    assert await claim(ff, b) is None
    ff.clock.advance(60_000)
    assert await claim_id(ff, b) == eid_b


async def test_rate_limited_work_never_hides_other_work(ff):
    lane = fresh_lane()
    qid = await quota(ff, window_seconds=60, rate=1)
    await create_many(ff, [{"lane_id": lane, "priority": 9000,
                            "policy": limits_policy(quota_id=qid)} for _ in range(30)])
    free = await limited(ff, lane)
    assert await claim(ff, lane) is not None  # one of the quota's
    assert await claim_id(ff, lane) == free
    assert await claim(ff, lane) is None


async def test_a_long_polling_claim_sleeps_until_the_window_frees(ff):
    lane = fresh_lane()
    qid = await quota(ff, window_seconds=1, rate=1)
    ids = await in_order(ff, 2, lane, quota_id=qid)
    with trio.fail_after(10):
        async with real_time(ff):
            first = await claim(ff, lane)
            assert first["execution_id"] == ids[0]
            start = trio.current_time()
            second = await claim(ff, lane, worker="w2", wait_ms=5000)
            elapsed = trio.current_time() - start
    print(f"rate-limited long poll answered after {elapsed * 1000:.0f} ms")
    assert second is not None and second["execution_id"] == ids[1]
    assert claimed_at(second) - claimed_at(first) >= 1000
    assert elapsed < 3.0, elapsed


async def test_sixteen_greedy_workers_never_exceed_five_per_second(ff):
    """Real time: ~5 s of 16 workers long-polling one lane whose work shares a quota of
    5 per second; no 1-second window (sliding) holds more than 5 claims."""
    lane = fresh_lane()
    qid = await quota(ff, window_seconds=1, rate=5)
    await create_many(ff, [{"lane_id": lane, "policy": limits_policy(quota_id=qid)}
                           for _ in range(80)])
    times: list[int] = []
    stop = trio.Event()

    async def greedy(i: int) -> None:
        while not stop.is_set():
            task = await claim(ff, lane, worker=f"g{i}", wait_ms=300)
            if task is not None:
                times.append(claimed_at(task))

    with trio.fail_after(20):
        async with real_time(ff), trio.open_nursery() as nursery:
            for i in range(16):
                nursery.start_soon(greedy, i)
            await trio.sleep(5.0)
            stop.set()
    worst, at = max_in_window(times, 1000)
    print(f"{len(times)} claims; at most {worst} in a 1 s window (from {at})")
    assert worst <= 5, (worst, at, sorted(times))
    assert len(times) >= 20, sorted(times)  # the window goes on admitting
    assert (await quota_status(ff, qid))["admitted_in_window"] <= 5


# -- concurrency ----------------------------------------------------------------------------

async def leased_count(ff, ids: list[str]) -> int:
    return sum([(await ff.info(e))["state_vector"]["ownership_state"] == "leased"
                for e in ids])


async def test_max_concurrent_holds_while_workers_claim_crash_and_complete(ff):
    lane = fresh_lane()
    qid = await quota(ff, concurrent=2)
    ids = await create_many(ff, [{"lane_id": lane, "policy": limits_policy(quota_id=qid)}
                                 for _ in range(10)])
    seen = 0

    async def worker(i: int, got: list[dict]) -> None:
        task = await claim(ff, lane, worker=f"c{i}", lease_ttl_ms=1000)
        if task is not None:
            got.append(task)

    for _ in range(40):
        got: list[dict] = []
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(worker, i, got)
        status = await quota_status(ff, qid)
        leased = await leased_count(ff, ids)
        assert len(got) <= 2 and leased <= 2 and status["active"] == leased, (
            len(got), leased, status)
        for task in got:
            seen += 1
            if seen % 3 == 1:
                continue  # this worker crashes: its lease expires below
            reply = await ff.worker_op("complete", task)
            assert reply.status == 200, reply
        assert await leased_count(ff, ids) <= 2
        ff.clock.advance(1001)
        await ff.tick("lease_expiry")
        states = {(await ff.info(e))["public_state"] for e in ids}
        if states == {"completed"}:
            break
    assert {(await ff.info(e))["public_state"] for e in ids} == {"completed"}
    assert (await quota_status(ff, qid))["active"] == 0


async def _complete(ff, task):
    assert (await ff.worker_op("complete", task)).status == 200


async def _fail(ff, task):
    reply = await ff.worker_op("fail", task, failure_reason="boom")
    assert reply.status == 200 and "TerminalFailed" in reply.body, reply


async def _fail_with_retry(ff, task):
    reply = await ff.worker_op("fail", task, failure_reason="boom")
    assert reply.status == 200 and "RetryScheduled" in reply.body, reply


async def _cancel(ff, task):
    reply = await ff.call("POST", exec_url(task["execution_id"], "/cancel"), {"reason": "x"})
    assert reply.status == 200, reply


async def _delay(ff, task):
    reply = await ff.worker_op("delay", task, delay_ms=60_000)
    assert reply.status == 200 and "Delayed" in reply.body, reply


async def _suspend(ff, task):
    reply = await suspend(ff, task, single("k", "x"))
    assert reply.status == 200 and "Suspended" in reply.body, reply


async def _revoke(ff, task):
    reply = await revoke(ff, task["execution_id"])
    assert reply.status == 200 and "Revoked" in reply.body, reply


async def _expire(ff, task):
    ff.clock.advance(task["lease_ttl_ms"] + 1)
    await ff.tick("lease_expiry")
    assert (await ff.info(task["execution_id"]))["state_vector"]["ownership_state"] == \
        "lease_expired_reclaimable"


FREES = {"complete": _complete, "fail": _fail, "fail_with_retry": _fail_with_retry,
         "cancel": _cancel, "delay": _delay, "suspend": _suspend, "revoke": _revoke,
         "lease_expiry": _expire}


@pytest.mark.parametrize("action", list(FREES))
async def test_ending_a_lease_frees_its_slot(ff, action):
    lane = fresh_lane()
    qid = await quota(ff, concurrent=2)
    retry = {"retry_policy": {"max_retries": 3, "backoff": {
        "type": "fixed", "delay_ms": 60_000}}} if action == "fail_with_retry" else {}
    ids = await in_order(ff, 3, lane, quota_id=qid, policy=retry)
    first = await claim(ff, lane, lease_ttl_ms=5000)
    second = await claim(ff, lane, worker="w2")
    assert (first["execution_id"], second["execution_id"]) == tuple(ids[:2])
    assert await claim(ff, lane, worker="w3") is None
    explained = await explain(ff, ids[2])
    assert explained["reason"] == "quota_concurrency_full", explained
    assert (explained["details"]["quota_policy_id"], explained["details"]["active"],
            explained["details"]["max_concurrent"]) == (qid, 2, 2)
    assert (await quota_status(ff, qid))["active"] == 2
    await FREES[action](ff, first)
    assert (await quota_status(ff, qid))["active"] == 1
    third = await claim(ff, lane, worker="w3")
    assert third is not None
    # After an expiry or a revoke the reclaim comes first (created first); else the third.
    expected = ids[0] if action in ("revoke", "lease_expiry") else ids[2]
    assert third["execution_id"] == expected
    assert await claim(ff, lane, worker="w4") is None
    assert (await quota_status(ff, qid))["active"] == 2


async def test_a_freed_slot_wakes_a_long_polling_claim(ff):
    lane = fresh_lane()
    qid = await quota(ff, concurrent=1)
    first_id, waiting_id = await in_order(ff, 2, lane, quota_id=qid)
    first = await claim(ff, lane)
    assert first["execution_id"] == first_id

    async def finish() -> None:
        await _complete(ff, first)

    task = await woken_by(ff, lane, finish)
    assert task is not None and task["execution_id"] == waiting_id


async def test_a_freed_slot_wakes_a_claim_waiting_on_another_lane(ff):
    a, b = fresh_lane(), fresh_lane()
    qid = await quota(ff, concurrent=1)
    await limited(ff, a, quota_id=qid)
    on_b = await limited(ff, b, quota_id=qid)
    first = await claim(ff, a)
    got: dict = {}

    async def waiter() -> None:
        got["task"] = await claim(ff, b, worker="w2", wait_ms=20_000)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await wait_for_waiters(ff, b, 1)
            await _complete(ff, first)
    assert got["task"] is not None and got["task"]["execution_id"] == on_b


async def test_concurrency_full_work_never_hides_other_work(ff):
    lane = fresh_lane()
    qid = await quota(ff, concurrent=1)
    await create_many(ff, [{"lane_id": lane, "priority": 9000,
                            "policy": limits_policy(quota_id=qid)} for _ in range(30)])
    free = await limited(ff, lane)
    assert await claim(ff, lane) is not None
    assert await claim_id(ff, lane) == free
    assert await claim(ff, lane) is None


async def batch_claim(ff, lane: str, max_tasks: int) -> list[dict]:
    reply = await ff.call("POST", "/v1/workers/w1/claim-task",
                          {"lane_id": lane, "worker_instance_id": "w1-1",
                           "max_tasks": max_tasks})
    assert reply.status in (200, 204), reply
    return reply.body["tasks"] if reply.status == 200 else []


async def test_a_batch_claim_takes_no_more_than_the_rate_allows(ff):
    lane = fresh_lane()
    qid = await quota(ff, window_seconds=60, rate=3)
    await create_many(ff, [{"lane_id": lane, "policy": limits_policy(quota_id=qid)}
                           for _ in range(10)])
    free = set(await create_many(ff, [{"lane_id": lane} for _ in range(2)]))
    tasks = await batch_claim(ff, lane, 10)
    quota_tasks = [t for t in tasks if t["execution_id"] not in free]
    assert len(quota_tasks) == 3 and len(tasks) == 5, [t["execution_id"] for t in tasks]
    assert (await quota_status(ff, qid))["admitted_in_window"] == 3
    assert await batch_claim(ff, lane, 10) == []


async def test_a_batch_claim_takes_no_more_than_the_free_slots(ff):
    lane = fresh_lane()
    qid = await quota(ff, concurrent=2)
    await create_many(ff, [{"lane_id": lane, "policy": limits_policy(quota_id=qid)}
                           for _ in range(10)])
    tasks = await batch_claim(ff, lane, 10)
    assert len(tasks) == 2
    assert (await quota_status(ff, qid))["active"] == 2
    await _complete(ff, tasks[0])
    assert len(await batch_claim(ff, lane, 10)) == 1
