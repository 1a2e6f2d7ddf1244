"""Scanners move executions whose time has come: leases, delays, timeouts, deadlines, retention."""

import pytest
import trio
import trio.testing

from appliance.testing import eid_path

DAY_MS = 86_400_000


def vector(info: dict) -> tuple:
    sv = info["state_vector"]
    return (sv["lifecycle_phase"], sv["ownership_state"], sv["eligibility_state"],
            sv["blocking_reason"], sv["terminal_outcome"], sv["attempt_state"],
            sv["public_state"])


async def expired_lease(ff, **create_fields) -> tuple[str, dict]:
    eid = await ff.create(**create_fields)
    task = await ff.claim(lease_ttl_ms=1000)
    ff.clock.advance(1001)
    await ff.tick("lease_expiry")
    return eid, task


async def status(ff, eid: str) -> int:
    return (await ff.call("GET", f"/v1/executions/{eid_path(eid)}")).status


# -- lease expiry ---------------------------------------------------------------------

async def test_expired_lease_is_marked_reclaimable(ff):
    eid, _ = await expired_lease(ff)
    info = await ff.info(eid)
    assert info["state_vector"]["ownership_state"] == "lease_expired_reclaimable"
    assert info["state_vector"]["blocking_reason"] == "waiting_for_worker"
    assert info["public_state"] == "active"


async def test_expired_lease_is_reclaimed_as_a_new_attempt(ff):
    eid, _ = await expired_lease(ff)
    second = await ff.claim(worker="w2")
    assert second["execution_id"] == eid
    assert (second["attempt_type"], second["attempt_index"], second["lease_epoch"]) == (
        "reclaim", 1, 2)
    info = await ff.info(eid)
    assert info["lease_reclaim_count"] == 1
    assert info["current_worker_id"] == "w2"


async def test_after_reclaim_the_first_worker_is_fenced_out(ff):
    eid, first = await expired_lease(ff)
    second = await ff.claim(worker="w2")
    late = await ff.worker_op("complete", first)
    assert (late.status, late.body["kind"]) == (409, "stale_lease")
    done = await ff.worker_op("complete", second, result=[2])
    assert done.body == {"Completed": {"execution_id": eid, "public_state": "completed"}}


async def test_worker_whose_lease_the_scanner_expired_is_told_lease_expired(ff):
    _, first = await expired_lease(ff)
    reply = await ff.worker_op("renew", first)
    assert (reply.status, reply.body["kind"]) == (409, "lease_expired")


@pytest.mark.parametrize("policy", [{"max_reclaim_count": 1},
                                    {"timeout_policy": {"max_reclaim_count": 1}}])
async def test_reclaim_cap_fails_the_execution(ff, policy):
    eid, _ = await expired_lease(ff, policy=policy)
    await ff.claim(worker="w2", lease_ttl_ms=1000)
    ff.clock.advance(1001)
    await ff.tick("lease_expiry")
    info = await ff.info(eid)
    assert vector(info) == ("terminal", "unowned", "not_applicable", "none", "failed",
                            "attempt_terminal", "failed")
    assert info["failure_reason"] == "max_reclaims_exceeded"
    assert await ff.claim(worker="w3") is None


async def test_lease_not_yet_due_is_left_alone(ff):
    short = await ff.create()
    await ff.claim(lease_ttl_ms=1000)
    long = await ff.create()
    await ff.claim(lease_ttl_ms=5000)
    ff.clock.advance(1001)
    await ff.tick("lease_expiry")
    assert (await ff.info(short))["state_vector"]["ownership_state"] == "lease_expired_reclaimable"
    assert (await ff.info(long))["state_vector"]["ownership_state"] == "leased"


async def test_lease_expiry_drains_a_backlog_larger_than_one_batch(ff):
    ids = [await ff.create() for _ in range(120)]
    for _ in ids:
        assert await ff.claim(lease_ttl_ms=1000) is not None
    ff.clock.advance(1001)
    processed = sum([(await ff.tick("lease_expiry")).processed for _ in range(3)])
    assert processed == 120
    for eid in ids:
        assert (await ff.info(eid))["state_vector"]["ownership_state"] == \
            "lease_expired_reclaimable"


async def test_long_polling_claim_is_woken_by_a_lease_expiry(ff):
    eid = await ff.create()
    await ff.claim(lease_ttl_ms=1000)
    got = {}

    async def waiter():
        got["task"] = await ff.claim(worker="w2", wait_ms=5000)

    with trio.fail_after(3):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert "task" not in got
            ff.clock.advance(1001)
            await ff.tick("lease_expiry")
    assert (got["task"]["execution_id"], got["task"]["attempt_type"]) == (eid, "reclaim")


# -- delayed promoter -----------------------------------------------------------------

async def test_due_delayed_execution_is_promoted_to_waiting(ff):
    eid = await ff.create(delay_until=ff.clock.now_ms() + 5000)
    ff.clock.advance(4999)
    await ff.tick("delayed_promoter")
    assert (await ff.info(eid))["public_state"] == "delayed"
    ff.clock.advance(1)
    await ff.tick("delayed_promoter")
    info = await ff.info(eid)
    assert vector(info) == ("runnable", "unowned", "eligible_now", "waiting_for_worker", "none",
                            "pending_first_attempt", "waiting")
    assert "delay_until" not in info


# -- attempt timeout ------------------------------------------------------------------

async def test_attempt_timeout_without_retries_expires_the_execution(ff):
    eid = await ff.create(policy={"timeout_policy": {"attempt_timeout_ms": 1000}})
    task = await ff.claim()
    ff.clock.advance(1001)
    await ff.tick("attempt_timeout")
    info = await ff.info(eid)
    assert vector(info) == ("terminal", "unowned", "not_applicable", "none", "expired",
                            "attempt_terminal", "expired")
    assert info["failure_reason"] == "attempt_timeout"
    late = await ff.worker_op("complete", task)
    assert late.status == 409


async def test_attempt_not_yet_timed_out_is_left_alone(ff):
    eid = await ff.create(policy={"timeout_policy": {"attempt_timeout_ms": 1000}})
    await ff.claim(lease_ttl_ms=60_000)
    ff.clock.advance(999)
    await ff.tick("attempt_timeout")
    assert (await ff.info(eid))["public_state"] == "active"


async def test_attempt_timeout_with_retries_left_schedules_a_retry(ff):
    policy = {"timeout_policy": {"attempt_timeout_ms": 1000},
              "retry_policy": {"max_retries": 1}}
    eid = await ff.create(policy=policy)
    task = await ff.claim()
    ff.clock.advance(1001)
    await ff.tick("attempt_timeout")
    info = await ff.info(eid)
    assert vector(info) == ("runnable", "unowned", "not_eligible_until_time",
                            "waiting_for_retry_backoff", "none", "pending_retry_attempt",
                            "delayed")
    assert info["retry_count"] == 1
    late = await ff.worker_op("complete", task)
    assert late.status == 409


async def test_attempt_timeout_is_armed_again_for_the_retry(ff):
    policy = {"timeout_policy": {"attempt_timeout_ms": 1000},
              "retry_policy": {"max_retries": 1, "backoff": {"type": "fixed", "delay_ms": 10}}}
    eid = await ff.create(policy=policy)
    await ff.claim(lease_ttl_ms=60_000)
    ff.clock.advance(1001)
    await ff.tick("attempt_timeout")
    ff.clock.advance(10)
    assert (await ff.claim(lease_ttl_ms=60_000))["attempt_type"] == "retry"
    ff.clock.advance(1001)
    await ff.tick("attempt_timeout")
    info = await ff.info(eid)
    assert (info["public_state"], info["failure_reason"]) == ("expired", "attempt_timeout")


# -- execution deadline ---------------------------------------------------------------

async def test_deadline_expires_a_never_claimed_execution(ff):
    eid = await ff.create(execution_deadline_at=ff.clock.now_ms() + 1000)
    ff.clock.advance(1000)
    await ff.tick("execution_deadline")
    info = await ff.info(eid)
    assert vector(info) == ("terminal", "unowned", "not_applicable", "none", "expired",
                            "pending_first_attempt", "expired")
    assert info["failure_reason"] == "execution_deadline"
    assert await ff.claim() is None


async def test_deadline_not_yet_reached_is_left_alone(ff):
    eid = await ff.create(execution_deadline_at=ff.clock.now_ms() + 1000)
    ff.clock.advance(999)
    await ff.tick("execution_deadline")
    assert (await ff.info(eid))["public_state"] == "waiting"


async def test_deadline_expires_an_active_execution_and_fences_out_its_worker(ff):
    eid = await ff.create(execution_deadline_at=ff.clock.now_ms() + 1000)
    task = await ff.claim(lease_ttl_ms=60_000)
    ff.clock.advance(1001)
    await ff.tick("execution_deadline")
    info = await ff.info(eid)
    assert (info["public_state"], info["failure_reason"]) == ("expired", "execution_deadline")
    late = await ff.worker_op("complete", task)
    assert (late.status, late.body["kind"]) == (409, "execution_not_active")
    assert late.body["terminal_outcome"] == "expired"


async def test_deadline_is_final_even_with_retries_left(ff):
    eid = await ff.create(execution_deadline_at=ff.clock.now_ms() + 1000,
                          policy={"retry_policy": {"max_retries": 3}})
    await ff.claim(lease_ttl_ms=60_000)
    ff.clock.advance(1000)
    await ff.tick("execution_deadline")
    info = await ff.info(eid)
    assert (info["public_state"], info["retry_count"]) == ("expired", 0)
    ff.clock.advance(DAY_MS - 1)
    assert await ff.claim() is None


async def test_deadline_scanner_drains_a_backlog_larger_than_one_batch(ff):
    due = ff.clock.now_ms() + 1000
    ids = [await ff.create(execution_deadline_at=due) for _ in range(120)]
    ff.clock.advance(1000)
    processed = sum([(await ff.tick("execution_deadline")).processed for _ in range(3)])
    assert processed == 120
    for eid in ids:
        assert (await ff.info(eid))["public_state"] == "expired"


async def test_policy_deadline_counts_from_create(ff):
    eid = await ff.create(policy={"timeout_policy": {"execution_deadline_ms": 1000}})
    assert (await ff.info(eid))["execution_deadline_at"] == ff.clock.now_ms() + 1000
    ff.clock.advance(999)
    await ff.tick("execution_deadline")
    assert (await ff.info(eid))["public_state"] == "waiting"
    ff.clock.advance(1)
    await ff.tick("execution_deadline")
    info = await ff.info(eid)
    assert (info["public_state"], info["failure_reason"]) == ("expired", "execution_deadline")


# -- retention ------------------------------------------------------------------------

async def completed(ff, **create_fields) -> str:
    eid = await ff.create(**create_fields)
    assert (await ff.worker_op("complete", await ff.claim())).status == 200
    return eid


async def test_terminal_execution_is_kept_for_the_default_retention(ff):
    eid = await completed(ff)
    ff.clock.advance(DAY_MS - 1)
    await ff.tick("retention_trimmer")
    assert await status(ff, eid) == 200


async def test_terminal_execution_is_purged_after_the_default_retention(ff):
    eid = await completed(ff)
    ff.clock.advance(DAY_MS)
    await ff.tick("retention_trimmer")
    assert await status(ff, eid) == 404
    result = await ff.call("GET", f"/v1/executions/{eid_path(eid)}/result")
    assert result.status == 404


async def test_non_terminal_execution_is_never_purged(ff):
    eid = await ff.create()
    ff.clock.advance(2 * DAY_MS)
    await ff.tick("retention_trimmer")
    assert await status(ff, eid) == 200


async def test_policy_retention_ttl_purges_sooner(ff):
    eid = await completed(ff, policy={"stream_policy": {"retention_ttl_ms": 1000}})
    ff.clock.advance(999)
    await ff.tick("retention_trimmer")
    assert await status(ff, eid) == 200
    ff.clock.advance(1)
    await ff.tick("retention_trimmer")
    assert await status(ff, eid) == 404


async def test_failed_and_expired_executions_are_purged_too(ff):
    failed = await ff.create()
    assert (await ff.worker_op("fail", await ff.claim())).status == 200
    expired = await ff.create(execution_deadline_at=ff.clock.now_ms() + 1)
    ff.clock.advance(1)
    await ff.tick("execution_deadline")
    ff.clock.advance(DAY_MS)
    await ff.tick("retention_trimmer")
    assert (await status(ff, failed), await status(ff, expired)) == (404, 404)


async def test_replayed_execution_is_no_longer_due_for_purge(ff):
    eid = await completed(ff)
    replay = await ff.call("POST", f"/v1/executions/{eid_path(eid)}/replay")
    assert replay.status == 200, replay
    ff.clock.advance(2 * DAY_MS)
    await ff.tick("retention_trimmer")
    assert (await ff.info(eid))["public_state"] == "waiting"
