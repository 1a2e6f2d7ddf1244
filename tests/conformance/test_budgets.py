"""Budgets (spec/admission.md § Budgets; spec/http-api.md § Admission): create, status,
usage reports (check-before-increment), dedup, resets, the reset scanner, reports bound
to a lease, and what a budget's hard limit does to claims of the work attached to it.
Time moves only by the harness clock."""

from __future__ import annotations

from admission_helpers import (
    BUDGET_STATUS_KEYS,
    LEASE_KINDS,
    budget,
    budget_body,
    budget_reply,
    budget_status,
    claim,
    claim_id,
    complete,
    create_budget,
    create_many,
    exhaust,
    fresh_lane,
    limited,
    limits_policy,
    new_id,
    report,
    reported,
    reset,
)
from flow_helpers import assert_error, woken_by

# -- create and status ----------------------------------------------------------------------

async def test_create_is_201_then_200_already_satisfied_keeping_the_first_definition(ff):
    body = budget_body(dims={"tokens": 100, "cost": 5}, soft={"tokens": 80})
    reply = await create_budget(ff, body)
    assert (reply.status, reply.body) == (201, {"Created": {"budget_id": body["budget_id"]}})
    again = budget_body(body["budget_id"], dims={"tokens": 1, "other": 2}, scope_type="x")
    reply = await create_budget(ff, again)
    assert (reply.status, reply.body) == (
        200, {"AlreadySatisfied": {"budget_id": body["budget_id"]}})
    status = await budget_status(ff, body["budget_id"])
    assert status["hard_limits"] == {"tokens": 100, "cost": 5}
    assert status["soft_limits"] == {"tokens": 80, "cost": 0}
    assert status["scope_type"] == ""


async def test_status_shape_of_a_fresh_budget(ff):
    bid = await budget(ff, {"tokens": 100, "cost": 0}, {"tokens": 50},
                       scope_type="tenant", scope_id="acme")
    status = await budget_status(ff, bid)
    assert set(status) == BUDGET_STATUS_KEYS, status
    assert status == {
        "budget_id": bid, "scope_type": "tenant", "scope_id": "acme",
        "enforcement_mode": "strict", "on_hard_limit": "block", "on_soft_limit": "warn",
        "reset_interval_ms": 0, "usage": {"tokens": 0, "cost": 0},
        "hard_limits": {"tokens": 100, "cost": 0}, "soft_limits": {"tokens": 50, "cost": 0},
        "breached": False, "breach_count": 0, "soft_breach_count": 0, "reset_count": 0,
        "last_breach_at": None, "last_breach_dim": None, "next_reset_at": None,
        "created_at": str(ff.clock.now_ms()),
    }


async def test_the_default_modes_may_be_given_explicitly(ff):
    bid = await budget(ff, enforcement_mode="strict", on_hard_limit="block",
                       on_soft_limit="warn", reset_interval_ms=0, now=ff.clock.now_ms())
    assert (await budget_status(ff, bid))["on_hard_limit"] == "block"


async def test_a_budget_with_an_interval_shows_its_first_reset(ff):
    bid = await budget(ff, reset_interval_ms=60_000)
    status = await budget_status(ff, bid)
    assert status["reset_interval_ms"] == 60_000
    assert status["next_reset_at"] == str(ff.clock.now_ms() + 60_000)


async def test_on_hard_limit_fail_is_refused_naming_it(ff):
    reply = await create_budget(ff, budget_body(on_hard_limit="fail"))
    assert_error(reply, 400, "invalid_input", names=["on_hard_limit", "fail", "block"])


async def test_enforcement_mode_warn_is_refused_naming_it(ff):
    reply = await create_budget(ff, budget_body(enforcement_mode="warn"))
    assert_error(reply, 400, "invalid_input", names=["enforcement_mode", "warn", "strict"])


async def test_on_soft_limit_other_than_warn_is_refused(ff):
    reply = await create_budget(ff, budget_body(on_soft_limit="block"))
    assert_error(reply, 400, "invalid_input", names=["on_soft_limit", "block", "warn"])


async def test_a_refused_create_creates_nothing(ff):
    body = budget_body(on_hard_limit="fail")
    await create_budget(ff, body)
    assert_error(await budget_reply(ff, body["budget_id"]), 404, "budget_not_found")


async def test_unknown_budget_is_404_on_every_route(ff):
    bid = new_id()
    assert_error(await budget_reply(ff, bid), 404, "budget_not_found")
    assert_error(await reset(ff, bid), 404, "budget_not_found")
    assert_error(await report(ff, bid, {"tokens": 1}), 404, "budget_not_found")


# -- usage reports --------------------------------------------------------------------------

async def test_a_report_under_the_limits_is_ok(ff):
    bid = await budget(ff, {"tokens": 100}, {"tokens": 50})
    assert await reported(ff, bid, {"tokens": 10}) == "Ok"
    assert await reported(ff, bid, {"tokens": 40}) == "Ok"  # 50: at soft, not over it
    assert (await budget_status(ff, bid))["usage"] == {"tokens": 50}


async def test_soft_breach_answers_the_usage_after_the_increment(ff):
    bid = await budget(ff, {"tokens": 100}, {"tokens": 50})
    assert await reported(ff, bid, {"tokens": 45}) == "Ok"
    answer = await reported(ff, bid, {"tokens": 10})
    assert answer == {"SoftBreach": {"dimension": "tokens", "current_usage": 55,
                                     "soft_limit": 50}}
    status = await budget_status(ff, bid)
    assert (status["usage"], status["soft_breach_count"], status["breach_count"],
            status["breached"]) == ({"tokens": 55}, 1, 0, False)


async def test_hard_breach_answers_the_usage_before_and_increments_nothing(ff):
    bid = await budget(ff, {"tokens": 100}, {"tokens": 50})
    assert await reported(ff, bid, {"tokens": 90}) != "Ok"  # a soft breach
    answer = await reported(ff, bid, {"tokens": 11})
    assert answer == {"HardBreach": {"dimension": "tokens", "current_usage": 90,
                                     "hard_limit": 100}}
    status = await budget_status(ff, bid)
    assert status["usage"] == {"tokens": 90}
    assert (status["breach_count"], status["last_breach_dim"], status["last_breach_at"]) == (
        1, "tokens", str(ff.clock.now_ms()))
    assert status["breached"] is False  # 90 < 100: the refused report used nothing


async def test_a_hard_breach_in_one_dimension_increments_no_dimension(ff):
    bid = await budget(ff, {"tokens": 1000, "cost": 10})
    assert await reported(ff, bid, {"tokens": 5, "cost": 4}) == "Ok"
    answer = await reported(ff, bid, {"tokens": 5, "cost": 7})
    assert answer == {"HardBreach": {"dimension": "cost", "current_usage": 4,
                                     "hard_limit": 10}}
    assert (await budget_status(ff, bid))["usage"] == {"tokens": 5, "cost": 4}
    answer = await reported(ff, bid, {"cost": 7, "tokens": 5})  # order does not matter
    assert answer == {"HardBreach": {"dimension": "cost", "current_usage": 4,
                                     "hard_limit": 10}}
    assert (await budget_status(ff, bid))["usage"] == {"tokens": 5, "cost": 4}


async def test_exactly_the_hard_limit_is_allowed_and_then_breached(ff):
    bid = await budget(ff, {"tokens": 100})
    assert await reported(ff, bid, {"tokens": 100}) == "Ok"
    status = await budget_status(ff, bid)
    assert (status["usage"], status["breached"], status["breach_count"]) == (
        {"tokens": 100}, True, 0)
    assert await reported(ff, bid, {"tokens": 1}) == {"HardBreach": {
        "dimension": "tokens", "current_usage": 100, "hard_limit": 100}}
    assert await reported(ff, bid, {"tokens": 0}) == "Ok"


async def test_a_zero_limit_is_unlimited(ff):
    bid = await budget(ff, {"tokens": 0, "cost": 5})
    assert await reported(ff, bid, {"tokens": 10**12}) == "Ok"
    assert (await budget_status(ff, bid))["usage"]["tokens"] == 10**12


async def test_a_dedup_key_is_applied_once(ff):
    bid = await budget(ff, {"tokens": 100})
    assert await reported(ff, bid, {"tokens": 5}, dedup_key="call-1") == "Ok"
    assert await reported(ff, bid, {"tokens": 5}, dedup_key="call-1") == "AlreadyApplied"
    assert await reported(ff, bid, {"tokens": 7}, dedup_key="call-1") == "AlreadyApplied"
    assert await reported(ff, bid, {"tokens": 5}, dedup_key="call-2") == "Ok"
    assert (await budget_status(ff, bid))["usage"] == {"tokens": 10}


async def test_a_dedup_key_is_per_budget(ff):
    a, b = await budget(ff), await budget(ff)
    assert await reported(ff, a, {"tokens": 5}, dedup_key="k") == "Ok"
    assert await reported(ff, b, {"tokens": 5}, dedup_key="k") == "Ok"
    assert (await budget_status(ff, b))["usage"] == {"tokens": 5}


async def test_a_soft_breach_is_stamped_like_ok(ff):
    bid = await budget(ff, {"tokens": 100}, {"tokens": 1})
    assert "SoftBreach" in await reported(ff, bid, {"tokens": 5}, dedup_key="k")
    assert await reported(ff, bid, {"tokens": 5}, dedup_key="k") == "AlreadyApplied"
    status = await budget_status(ff, bid)
    assert (status["usage"], status["soft_breach_count"]) == ({"tokens": 5}, 1)


async def test_a_hard_breach_is_never_stamped(ff):
    bid = await budget(ff, {"tokens": 10})
    assert await reported(ff, bid, {"tokens": 5}) == "Ok"
    assert "HardBreach" in await reported(ff, bid, {"tokens": 6}, dedup_key="k")
    assert "HardBreach" in await reported(ff, bid, {"tokens": 6}, dedup_key="k")
    assert (await budget_status(ff, bid))["breach_count"] == 2
    assert (await reset(ff, bid)).status == 200
    assert await reported(ff, bid, {"tokens": 6}, dedup_key="k") == "Ok"
    assert await reported(ff, bid, {"tokens": 6}, dedup_key="k") == "AlreadyApplied"
    assert (await budget_status(ff, bid))["usage"] == {"tokens": 6}


async def test_breach_counters(ff):
    bid = await budget(ff, {"tokens": 100, "cost": 10}, {"tokens": 10})
    assert "SoftBreach" in await reported(ff, bid, {"tokens": 20})
    assert "SoftBreach" in await reported(ff, bid, {"tokens": 1})
    assert "HardBreach" in await reported(ff, bid, {"cost": 11})
    ff.clock.advance(5)
    assert "HardBreach" in await reported(ff, bid, {"tokens": 80})
    status = await budget_status(ff, bid)
    assert (status["soft_breach_count"], status["breach_count"], status["last_breach_dim"],
            status["last_breach_at"]) == (2, 2, "tokens", str(ff.clock.now_ms()))


# -- reset ----------------------------------------------------------------------------------

async def test_reset_zeroes_usage_and_clears_the_last_breach(ff):
    bid = await budget(ff, {"tokens": 100, "cost": 10})
    assert await reported(ff, bid, {"tokens": 100, "cost": 3}) == "Ok"
    assert "HardBreach" in await reported(ff, bid, {"cost": 8})
    reply = await reset(ff, bid)
    assert (reply.status, reply.body) == (200, {"Reset": {"next_reset_at": 0}})
    status = await budget_status(ff, bid)
    assert (status["usage"], status["reset_count"], status["last_breach_at"],
            status["last_breach_dim"], status["breached"], status["next_reset_at"]) == (
        {"tokens": 0, "cost": 0}, 1, None, None, False, None)
    assert status["breach_count"] == 1  # a count of what happened, not reset
    assert (await reset(ff, bid, {})).status == 200
    assert (await budget_status(ff, bid))["reset_count"] == 2


async def test_reset_with_an_interval_moves_the_next_reset(ff):
    bid = await budget(ff, reset_interval_ms=60_000)
    ff.clock.advance(10_000)
    reply = await reset(ff, bid)
    assert (reply.status, reply.body) == (
        200, {"Reset": {"next_reset_at": ff.clock.now_ms() + 60_000}})
    assert (await budget_status(ff, bid))["next_reset_at"] == str(ff.clock.now_ms() + 60_000)


async def test_the_reset_scanner_resets_a_due_budget(ff):
    lane = fresh_lane()
    bid = await budget(ff, {"tokens": 100}, reset_interval_ms=60_000)
    first_due = ff.clock.now_ms() + 60_000
    eid = await limited(ff, lane, [bid])
    await exhaust(ff, bid)
    assert await claim(ff, lane) is None
    ff.clock.advance(59_999)
    await ff.tick("budget_reset")
    status = await budget_status(ff, bid)
    assert (status["usage"], status["reset_count"]) == ({"tokens": 100}, 0)
    assert await claim(ff, lane) is None
    ff.clock.advance(1)
    await ff.tick("budget_reset")
    status = await budget_status(ff, bid)
    assert (status["usage"], status["reset_count"], status["next_reset_at"]) == (
        {"tokens": 0}, 1, str(first_due + 60_000))
    assert await claim_id(ff, lane) == eid


async def test_the_reset_scanner_leaves_budgets_without_an_interval(ff):
    bid = await budget(ff, {"tokens": 100})
    await exhaust(ff, bid)
    ff.clock.advance(10 * 86_400_000)
    await ff.tick("budget_reset")
    status = await budget_status(ff, bid)
    assert (status["usage"], status["reset_count"]) == ({"tokens": 100}, 0)


async def test_the_reset_scanner_wakes_a_waiting_claim(ff):
    lane = fresh_lane()
    bid = await budget(ff, {"tokens": 10}, reset_interval_ms=1000)
    eid = await limited(ff, lane, [bid])
    await exhaust(ff, bid, hard=10)

    async def due_reset() -> None:
        ff.clock.advance(1000)
        await ff.tick("budget_reset")

    task = await woken_by(ff, lane, due_reset)
    assert task is not None and task["execution_id"] == eid


# -- budgets and claims ---------------------------------------------------------------------

async def test_a_reached_hard_limit_stops_claims_of_attached_work_only(ff):
    lane = fresh_lane()
    bid = await budget(ff, {"tokens": 10})
    attached = await limited(ff, lane, [bid], priority=100)
    free = await limited(ff, lane, priority=1)
    assert await reported(ff, bid, {"tokens": 10}) == "Ok"
    assert await claim_id(ff, lane) == free
    assert await claim(ff, lane) is None
    assert (await ff.info(attached))["public_state"] == "waiting"
    reply = await reset(ff, bid)
    assert reply.status == 200
    assert await claim_id(ff, lane) == attached


async def test_a_refused_report_does_not_block_claims(ff):
    lane = fresh_lane()
    bid = await budget(ff, {"tokens": 10})
    eid = await limited(ff, lane, [bid])
    assert await reported(ff, bid, {"tokens": 9}) == "Ok"
    assert "HardBreach" in await reported(ff, bid, {"tokens": 5})
    assert await claim_id(ff, lane) == eid


async def test_one_exhausted_budget_of_several_blocks(ff):
    lane = fresh_lane()
    ok, spent = await budget(ff), await budget(ff, {"tokens": 1})
    eid = await limited(ff, lane, [ok, spent])
    assert await reported(ff, spent, {"tokens": 1}) == "Ok"
    assert await claim(ff, lane) is None
    assert (await reset(ff, spent)).status == 200
    assert await claim_id(ff, lane) == eid


async def test_fifty_blocked_executions_never_hide_claimable_work(ff):
    lane = fresh_lane()
    bid = await budget(ff, {"tokens": 1})
    assert await reported(ff, bid, {"tokens": 1}) == "Ok"
    blocked = await create_many(ff, [
        {"lane_id": lane, "priority": 9000, "policy": limits_policy([bid])}
        for _ in range(50)])
    ff.clock.advance(1)
    free = await limited(ff, lane, priority=0)
    assert await claim_id(ff, lane) == free
    assert await claim(ff, lane) is None
    assert (await reset(ff, bid)).status == 200
    task = await claim(ff, lane)
    assert task is not None and task["execution_id"] in blocked


async def test_blocked_work_on_a_batch_claim_is_skipped_too(ff):
    lane = fresh_lane()
    bid = await budget(ff, {"tokens": 1})
    await reported(ff, bid, {"tokens": 1})
    await create_many(ff, [{"lane_id": lane, "priority": 100, "policy": limits_policy([bid])}
                           for _ in range(20)])
    free = set(await create_many(ff, [{"lane_id": lane} for _ in range(3)]))
    reply = await ff.call("POST", "/v1/workers/w1/claim-task",
                          {"lane_id": lane, "worker_instance_id": "w1-1", "max_tasks": 10})
    assert reply.status == 200, reply
    assert {t["execution_id"] for t in reply.body["tasks"]} == free


async def test_a_reset_wakes_a_long_polling_claim(ff):
    lane = fresh_lane()
    bid = await budget(ff, {"tokens": 5})
    eid = await limited(ff, lane, [bid])
    await exhaust(ff, bid, hard=5)

    async def do_reset() -> None:
        assert (await reset(ff, bid)).status == 200

    task = await woken_by(ff, lane, do_reset)
    assert task is not None and task["execution_id"] == eid


async def test_a_budget_that_does_not_exist_limits_nothing(ff):
    lane = fresh_lane()
    eid = await limited(ff, lane, [new_id()])
    assert await claim_id(ff, lane) == eid


async def test_a_budget_created_after_the_execution_limits_it(ff):
    lane = fresh_lane()
    bid = new_id()
    eid = await limited(ff, lane, [bid])
    reply = await create_budget(ff, budget_body(bid, {"tokens": 3}))
    assert reply.status == 201, reply
    assert await reported(ff, bid, {"tokens": 3}) == "Ok"
    assert await claim(ff, lane) is None
    assert (await reset(ff, bid)).status == 200
    assert await claim_id(ff, lane) == eid


# -- reports bound to a lease ---------------------------------------------------------------

async def test_a_report_with_a_current_lease_of_attached_work(ff):
    lane = fresh_lane()
    bid = await budget(ff, {"tokens": 100})
    await limited(ff, lane, [bid])
    task = await claim(ff, lane)
    assert await reported(ff, bid, {"tokens": 7}, handle=task["handle"]) == "Ok"
    assert (await budget_status(ff, bid))["usage"] == {"tokens": 7}


async def test_a_report_with_the_lease_of_work_not_attached_is_409(ff):
    lane = fresh_lane()
    attached, other = await budget(ff), await budget(ff)
    await limited(ff, lane, [attached])
    task = await claim(ff, lane)
    reply = await report(ff, other, {"tokens": 7}, handle=task["handle"])
    assert_error(reply, 409, "budget_not_attached")
    assert (await budget_status(ff, other))["usage"] == {"tokens": 0}


async def test_a_report_with_an_expired_or_superseded_lease_is_409(ff):
    lane = fresh_lane()
    bid = await budget(ff, {"tokens": 100})
    await limited(ff, lane, [bid])
    task = await claim(ff, lane, lease_ttl_ms=1000)
    ff.clock.advance(1001)
    await ff.tick("lease_expiry")
    assert_error(await report(ff, bid, {"tokens": 1}, handle=task["handle"]), 409, LEASE_KINDS)
    second = await claim(ff, lane, worker="w2")
    assert second is not None and second["attempt_type"] == "reclaim"
    assert_error(await report(ff, bid, {"tokens": 1}, handle=task["handle"]), 409,
                 "stale_lease")
    assert (await budget_status(ff, bid))["usage"] == {"tokens": 0}
    assert await reported(ff, bid, {"tokens": 1}, handle=second["handle"]) == "Ok"


async def test_a_report_with_the_lease_of_a_completed_execution_is_409(ff):
    lane = fresh_lane()
    bid = await budget(ff, {"tokens": 100})
    await limited(ff, lane, [bid])
    task = await claim(ff, lane)
    await complete(ff, task)
    assert_error(await report(ff, bid, {"tokens": 1}, handle=task["handle"]), 409, LEASE_KINDS)
    assert (await budget_status(ff, bid))["usage"] == {"tokens": 0}


async def test_a_report_with_a_forged_handle_is_400(ff):
    bid = await budget(ff)
    assert_error(await report(ff, bid, {"tokens": 1}, handle="ffh1.garbage"), 400,
                 "invalid_handle")
