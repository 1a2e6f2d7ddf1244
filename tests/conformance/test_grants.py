"""Claim grants (spec/admission.md § Claim grants; spec/http-api.md § Admission):
``POST /v1/workers/{id}/claim``, redeeming with ``…/claim-grant``, grant expiry and
``…/reclaim``. Time moves only by the harness clock."""

from __future__ import annotations

import pytest
from admission_helpers import (
    GRANT_KEYS,
    budget,
    claim,
    claim_id,
    complete,
    exhaust,
    fresh_lane,
    grant,
    grant_reply,
    in_order,
    limited,
    quota,
    quota_status,
    reclaim,
    redeem,
    revoke,
)
from flow_helpers import assert_error, exec_url, partition_in_id, woken_by

# -- the grant ------------------------------------------------------------------------------

async def test_a_grant_answers_exactly_its_four_fields(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    reply = await grant_reply(ff, lane, grant_ttl_ms=5000)
    assert reply.status == 200, reply
    assert set(reply.body) == GRANT_KEYS, reply
    assert reply.body["execution_id"] == eid
    assert reply.body["partition_key"] == f"{{fp:{partition_in_id(eid)}}}"
    assert isinstance(reply.body["grant_key"], str) and reply.body["grant_key"]
    assert reply.body["expires_at_ms"] == ff.clock.now_ms() + 5000


async def test_no_work_is_204(ff):
    reply = await grant_reply(ff, fresh_lane())
    assert reply.status == 204, reply


@pytest.mark.parametrize("ttl", [0, 60_001, -1])
async def test_a_grant_ttl_out_of_range_is_400(ff, ttl):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    assert_error(await grant_reply(ff, lane, grant_ttl_ms=ttl), 400, "invalid_input",
                 names=["grant_ttl_ms"])
    assert await claim_id(ff, lane) == eid  # nothing was granted


@pytest.mark.parametrize("ttl", [1, 60_000])
async def test_the_grant_ttl_bounds_are_accepted(ff, ttl):
    lane = fresh_lane()
    await ff.create(lane_id=lane)
    body = await grant(ff, lane, grant_ttl_ms=ttl)
    assert body is not None and body["expires_at_ms"] == ff.clock.now_ms() + ttl


async def test_a_grant_without_its_ttl_is_400(ff):
    lane = fresh_lane()
    await ff.create(lane_id=lane)
    reply = await ff.call("POST", "/v1/workers/w1/claim",
                          {"lane_id": lane, "worker_instance_id": "w1-1"})
    assert_error(reply, 400, "invalid_input", names=["grant_ttl_ms"])


async def test_a_grant_follows_priority_and_capabilities(ff):
    lane = fresh_lane()
    await limited(ff, lane, caps=["gpu"], priority=100)
    low = await ff.create(lane_id=lane, priority=1)
    ff.clock.advance(1)
    high = await ff.create(lane_id=lane, priority=50)
    assert (await grant(ff, lane, capabilities=["cpu"]))["execution_id"] == high
    assert (await grant(ff, lane, capabilities=["cpu"]))["execution_id"] == low
    assert await grant(ff, lane, capabilities=["cpu"]) is None


async def test_a_grant_respects_an_exhausted_budget(ff):
    lane = fresh_lane()
    bid = await budget(ff, {"tokens": 1})
    await limited(ff, lane, [bid])
    await exhaust(ff, bid, hard=1)
    assert await grant(ff, lane) is None


# -- redeeming ------------------------------------------------------------------------------

async def test_redeeming_answers_the_task_whose_handle_completes_it(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane, input_payload=[1, 2])
    granted = await grant(ff, lane, worker="w1")
    reply = await redeem(ff, eid, "w1", lease_ttl_ms=7000)
    assert reply.status == 200, reply
    task = reply.body
    other_lane = fresh_lane()
    await ff.create(lane_id=other_lane)
    plain = await claim(ff, other_lane)
    assert set(task) == set(plain), set(task) ^ set(plain)  # what claim-task answers
    assert (task["execution_id"], task["attempt_type"], task["lease_epoch"],
            task["input_payload"]) == (granted["execution_id"], "initial", 1, [1, 2])
    assert task["lease_expires_at"] == ff.clock.now_ms() + 7000
    info = await ff.info(eid)
    assert (info["public_state"], info["current_worker_id"]) == ("active", "w1")
    await complete(ff, task)


async def test_a_granted_execution_is_not_claimed_by_anyone_else(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane, priority=100)
    others = [await ff.create(lane_id=lane) for _ in range(3)]
    assert (await grant(ff, lane, worker="w1"))["execution_id"] == eid
    got = [await claim_id(ff, lane, worker="w2") for _ in range(3)]
    assert sorted(got) == sorted(others)
    assert await claim(ff, lane, worker="w2") is None
    assert await grant(ff, lane, worker="w3") is None
    assert (await redeem(ff, eid, "w1")).status == 200


async def test_redeeming_by_another_worker_is_409_invalid_claim_grant(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    await grant(ff, lane, worker="w1")
    assert_error(await redeem(ff, eid, "w2"), 409, "invalid_claim_grant", retryable=True)
    assert (await redeem(ff, eid, "w1")).status == 200


async def test_redeeming_without_a_grant_is_409(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    assert_error(await redeem(ff, eid, "w1"), 409, "invalid_claim_grant", retryable=True)
    assert await claim_id(ff, lane) == eid


async def test_a_grant_is_redeemed_once(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    await grant(ff, lane, worker="w1")
    assert (await redeem(ff, eid, "w1")).status == 200
    assert_error(await redeem(ff, eid, "w1"), 409, "invalid_claim_grant")


async def test_redeeming_an_unknown_execution_is_404(ff):
    reply = await redeem(ff, "{fp:0}:00000000-0000-4000-8000-000000000000", "w1")
    assert_error(reply, 404, "execution_not_found")


async def test_redeeming_after_expiry_is_409_claim_grant_expired(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    await grant(ff, lane, worker="w1", grant_ttl_ms=1000)
    ff.clock.advance(1000)  # at expires_at_ms: still good
    ff.clock.advance(1)
    assert_error(await redeem(ff, eid, "w1"), 409, "claim_grant_expired", retryable=True)


async def test_redeeming_at_the_expiry_instant_is_allowed(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    await grant(ff, lane, worker="w1", grant_ttl_ms=1000)
    ff.clock.advance(1000)
    assert (await redeem(ff, eid, "w1")).status == 200


async def test_a_state_change_voids_a_grant(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    await grant(ff, lane, worker="w1")
    reply = await ff.call("POST", exec_url(eid, "/cancel"), {"reason": "changed my mind"})
    assert reply.status == 200, reply
    reply = await redeem(ff, eid, "w1")
    assert reply.status == 409, reply
    assert (await ff.info(eid))["public_state"] == "cancelled"


# -- expiry ---------------------------------------------------------------------------------

async def test_an_unredeemed_grant_expires_and_the_execution_is_claimable_again(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    await grant(ff, lane, worker="w1", grant_ttl_ms=2000)
    assert await claim(ff, lane, worker="w2") is None
    ff.clock.advance(1999)
    await ff.tick("grant_expiry")
    assert await claim(ff, lane, worker="w2") is None
    ff.clock.advance(2)
    await ff.tick("grant_expiry")
    task = await claim(ff, lane, worker="w2")
    assert task is not None and task["execution_id"] == eid
    assert task["attempt_type"] == "initial"
    assert_error(await redeem(ff, eid, "w1"), 409, "invalid_claim_grant")


async def test_a_pending_grant_never_stalls_its_lane(ff):
    lane = fresh_lane()
    granted = [await ff.create(lane_id=lane, priority=9000) for _ in range(5)]
    for _ in granted:
        assert await grant(ff, lane, worker="w1", grant_ttl_ms=60_000) is not None
    later = [await ff.create(lane_id=lane) for _ in range(5)]
    got = {await claim_id(ff, lane, worker="w2") for _ in later}
    assert got == set(later)
    assert await claim(ff, lane, worker="w2") is None
    ff.clock.advance(60_001)
    await ff.tick("grant_expiry")
    got = {await claim_id(ff, lane, worker="w3") for _ in granted}
    assert got == set(granted)


async def test_an_expiring_grant_wakes_a_long_polling_claim(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    await grant(ff, lane, worker="w1", grant_ttl_ms=1000)

    async def expire() -> None:
        ff.clock.advance(1001)
        await ff.tick("grant_expiry")

    task = await woken_by(ff, lane, expire)
    assert task is not None and task["execution_id"] == eid


# -- grants and quotas ----------------------------------------------------------------------

async def test_a_grant_holds_a_quota_slot_until_it_expires(ff):
    lane = fresh_lane()
    qid = await quota(ff, concurrent=1)
    first, second = await in_order(ff, 2, lane, quota_id=qid)
    assert (await grant(ff, lane, worker="w1", grant_ttl_ms=1000))["execution_id"] == first
    assert (await quota_status(ff, qid))["active"] == 1
    assert await claim(ff, lane, worker="w2") is None
    ff.clock.advance(1001)
    await ff.tick("grant_expiry")
    assert (await quota_status(ff, qid))["active"] == 0
    assert await claim_id(ff, lane, worker="w2") == first
    assert await claim(ff, lane, worker="w2") is None
    assert second


async def test_a_grant_is_one_rate_admission_and_redeems_within_it(ff):
    lane = fresh_lane()
    qid = await quota(ff, window_seconds=60, rate=1)
    eid, _ = await in_order(ff, 2, lane, quota_id=qid)
    assert (await grant(ff, lane, worker="w1"))["execution_id"] == eid
    assert (await quota_status(ff, qid))["admitted_in_window"] == 1
    assert await claim(ff, lane, worker="w2") is None
    reply = await redeem(ff, eid, "w1")
    assert reply.status == 200, reply
    status = await quota_status(ff, qid)
    assert (status["admitted_in_window"], status["active"]) == (1, 1)


# -- reclaim --------------------------------------------------------------------------------

async def expired_lease(ff, lane: str, **create) -> tuple[str, dict]:
    eid = await ff.create(lane_id=lane, **create)
    task = await claim(ff, lane, worker="w1", lease_ttl_ms=1000)
    assert task["execution_id"] == eid
    ff.clock.advance(1001)
    await ff.tick("lease_expiry")
    return eid, task


async def test_reclaim_of_a_waiting_execution_is_not_reclaimable(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    reply = await reclaim(ff, eid, lane)
    assert reply.status == 200, reply
    assert set(reply.body) == {"status", "execution_id", "detail"}, reply
    assert (reply.body["status"], reply.body["execution_id"]) == ("not_reclaimable", eid)
    assert isinstance(reply.body["detail"], str) and reply.body["detail"]
    assert await claim_id(ff, lane) == eid


async def test_reclaim_of_a_running_execution_is_not_reclaimable(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    task = await claim(ff, lane)
    reply = await reclaim(ff, eid, lane)
    assert (reply.status, reply.body["status"]) == (200, "not_reclaimable"), reply
    await complete(ff, task)


async def test_reclaim_of_an_expired_lease_is_granted_and_redeemed_as_a_reclaim(ff):
    lane = fresh_lane()
    eid, first = await expired_lease(ff, lane)
    reply = await reclaim(ff, eid, lane, worker="w2", grant_ttl_ms=4000)
    assert reply.status == 200, reply
    body = reply.body
    assert set(body) == {"status", *GRANT_KEYS, "lane_id"}, reply
    assert (body["status"], body["execution_id"], body["lane_id"], body["partition_key"],
            body["expires_at_ms"]) == ("granted", eid, lane,
                                       f"{{fp:{partition_in_id(eid)}}}",
                                       ff.clock.now_ms() + 4000)
    assert await claim(ff, lane, worker="w3") is None  # reserved for w2
    again = await reclaim(ff, eid, lane, worker="w3")
    assert (again.status, again.body["status"]) == (200, "not_reclaimable"), again
    task = (await redeem(ff, eid, "w2")).body
    assert (task["execution_id"], task["attempt_type"], task["lease_epoch"]) == (
        eid, "reclaim", 2)
    assert (await ff.worker_op("complete", first)).status == 409
    await complete(ff, task)


async def test_reclaim_of_a_revoked_lease_is_granted(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    await claim(ff, lane)
    assert (await revoke(ff, eid)).status == 200
    reply = await reclaim(ff, eid, lane, worker="w2")
    assert (reply.status, reply.body["status"]) == (200, "granted"), reply
    assert (await redeem(ff, eid, "w2")).body["attempt_type"] == "reclaim"


async def test_reclaim_past_the_cap_is_reclaim_cap_exceeded(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane, policy={"max_reclaim_count": 1})
    await claim(ff, lane)
    assert (await revoke(ff, eid)).status == 200
    again = await claim(ff, lane, worker="w2")
    assert again["attempt_type"] == "reclaim"
    assert (await revoke(ff, eid)).status == 200
    reply = await reclaim(ff, eid, lane, worker="w3")
    assert reply.status == 200, reply
    assert reply.body == {"status": "reclaim_cap_exceeded", "execution_id": eid,
                          "reclaim_count": 1}


async def test_an_unredeemed_reclaim_grant_expires(ff):
    lane = fresh_lane()
    eid, _ = await expired_lease(ff, lane)
    assert (await reclaim(ff, eid, lane, grant_ttl_ms=1000)).body["status"] == "granted"
    ff.clock.advance(1001)
    await ff.tick("grant_expiry")
    task = await claim(ff, lane, worker="w3")
    assert task is not None and (task["execution_id"], task["attempt_type"]) == (
        eid, "reclaim")


async def test_reclaim_on_another_lane_is_400_lane_mismatch(ff):
    lane = fresh_lane()
    eid, _ = await expired_lease(ff, lane)
    assert_error(await reclaim(ff, eid, fresh_lane()), 400, "lane_mismatch")


async def test_reclaim_by_a_worker_lacking_capabilities_is_400_naming_them(ff):
    lane = fresh_lane()
    eid = await limited(ff, lane, caps=["gpu", "cuda"])
    await claim(ff, lane, capabilities=["gpu", "cuda"], lease_ttl_ms=1000)
    ff.clock.advance(1001)
    await ff.tick("lease_expiry")
    reply = await reclaim(ff, eid, lane, worker_capabilities=["gpu"])
    assert_error(reply, 400, "capability_mismatch", names=["cuda"])
    reply = await reclaim(ff, eid, lane, worker_capabilities=["cuda", "gpu", "x"])
    assert (reply.status, reply.body["status"]) == (200, "granted"), reply


async def test_reclaim_held_back_by_a_budget_is_429(ff):
    lane = fresh_lane()
    bid = await budget(ff, {"tokens": 5})
    eid, _ = await expired_lease(ff, lane, policy={"budget_ids": [bid]})
    await exhaust(ff, bid, hard=5)
    assert_error(await reclaim(ff, eid, lane), 429, "budget_exhausted", retryable=True)


async def test_reclaim_held_back_by_a_quota_rate_is_429_with_retry_after(ff):
    lane = fresh_lane()
    qid = await quota(ff, window_seconds=10, rate=1)
    eid, _ = await expired_lease(ff, lane, policy={"quota_policy_id": qid})
    body = assert_error(await reclaim(ff, eid, lane), 429, "quota_exceeded", retryable=True)
    assert 0 < body["retry_after_ms"] <= 10_000, body
    ff.clock.advance(10_000)
    assert (await reclaim(ff, eid, lane)).body["status"] == "granted"


async def test_reclaim_held_back_by_quota_concurrency_is_429(ff):
    lane = fresh_lane()
    qid = await quota(ff, concurrent=1)
    eid, _ = await expired_lease(ff, lane, policy={"quota_policy_id": qid})
    other = await limited(ff, lane, quota_id=qid, priority=100)
    assert await claim_id(ff, lane, worker="w9") == other  # takes the one slot
    assert_error(await reclaim(ff, eid, lane), 429, "quota_exceeded", retryable=True)


async def test_reclaim_of_an_unknown_execution_is_404(ff):
    reply = await reclaim(ff, "{fp:0}:00000000-0000-4000-8000-000000000000", "default")
    assert_error(reply, 404, "execution_not_found")
