"""Operator actions: cancel, change priority, replay and revoke-lease."""

import uuid

from appliance.testing import eid_path


async def op(ff, eid: str, name: str, body=None, method: str = "POST"):
    return await ff.call(method, f"/v1/executions/{eid_path(eid)}/{name}", body)


async def priority(ff, eid: str, value):
    return await op(ff, eid, "priority", {"new_priority": value}, method="PUT")


async def completed(ff, **fields) -> tuple[str, dict]:
    eid = await ff.create(**fields)
    task = await ff.claim()
    assert (await ff.worker_op("complete", task)).status == 200
    return eid, task


# -- cancel ---------------------------------------------------------------------------

async def test_operator_cancels_a_waiting_execution(ff):
    eid = await ff.create()
    reply = await op(ff, eid, "cancel", {"reason": "not needed"})
    assert (reply.status, reply.body) == (
        200, {"Cancelled": {"execution_id": eid, "public_state": "cancelled"}})
    info = await ff.info(eid)
    assert info["public_state"] == "cancelled"
    assert info["cancellation_reason"] == "not needed"
    assert info["state_vector"]["attempt_state"] == "pending_first_attempt"
    assert await ff.claim() is None


async def test_cancelled_delayed_execution_is_never_promoted(ff):
    eid = await ff.create(delay_until=ff.clock.now_ms() + 1000)
    assert (await op(ff, eid, "cancel", {})).status == 200
    ff.clock.advance(2000)
    await ff.tick("delayed_promoter")
    assert await ff.claim() is None
    assert (await ff.info(eid))["public_state"] == "cancelled"


async def test_cancel_without_a_body_uses_the_defaults(ff):
    eid = await ff.create()
    reply = await op(ff, eid, "cancel")
    assert reply.status == 200, reply
    assert (await ff.call("GET", f"/v1/executions/{eid_path(eid)}/state")).body == "cancelled"


async def test_operator_cancel_of_an_active_execution_fences_out_the_worker(ff):
    eid = await ff.create()
    task = await ff.claim()
    reply = await op(ff, eid, "cancel", {"reason": "stop"})
    assert reply.body == {"Cancelled": {"execution_id": eid, "public_state": "cancelled"}}
    late = await ff.worker_op("complete", task)
    assert (late.status, late.body["kind"]) == (409, "execution_not_active")
    assert late.body["terminal_outcome"] == "cancelled"
    assert (await ff.info(eid))["public_state"] == "cancelled"


async def test_cancel_of_a_terminal_execution_is_execution_not_active(ff):
    eid, _ = await completed(ff)
    reply = await op(ff, eid, "cancel", {})
    assert (reply.status, reply.body["kind"]) == (409, "execution_not_active")
    assert reply.body["terminal_outcome"] == "success"
    assert (await ff.info(eid))["public_state"] == "completed"


async def test_cancel_body_naming_another_execution_is_a_400(ff):
    eid = await ff.create()
    reply = await op(ff, eid, "cancel", {"execution_id": f"{{fp:86}}:{uuid.uuid4()}"})
    assert reply.status == 400, reply
    assert (await ff.info(eid))["public_state"] == "waiting"


async def test_cancel_body_repeating_the_path_id_is_accepted(ff):
    eid = await ff.create()
    assert (await op(ff, eid, "cancel", {"execution_id": eid})).status == 200


async def test_cancel_of_an_unknown_execution_is_a_404(ff):
    reply = await op(ff, f"{{fp:86}}:{uuid.uuid4()}", "cancel", {})
    assert (reply.status, reply.body["kind"]) == (404, "execution_not_found")


async def test_lease_holder_cancel_is_idempotent_for_the_same_handle(ff):
    eid = await ff.create()
    task = await ff.claim()
    body = {"source": "lease_holder", "handle": task["handle"], "reason": "gave up"}
    first = await op(ff, eid, "cancel", body)
    assert (first.status, first.body) == (
        200, {"Cancelled": {"execution_id": eid, "public_state": "cancelled"}})
    again = await op(ff, eid, "cancel", body)
    assert (again.status, again.body) == (first.status, first.body)


async def test_lease_holder_cancel_with_the_fence_triple(ff):
    eid = await ff.create()
    task = await ff.claim()
    reply = await op(ff, eid, "cancel", {
        "source": "lease_holder", "lease_id": task["lease_id"],
        "lease_epoch": task["lease_epoch"], "attempt_id": task["attempt_id"]})
    assert reply.status == 200, reply
    assert reply.body["Cancelled"]["public_state"] == "cancelled"


async def test_lease_holder_cancel_with_a_stale_fence_is_refused(ff):
    eid = await ff.create()
    task = await ff.claim()
    reply = await op(ff, eid, "cancel", {
        "source": "lease_holder", "lease_id": str(uuid.uuid4()),
        "lease_epoch": task["lease_epoch"], "attempt_id": task["attempt_id"]})
    assert (reply.status, reply.body["kind"]) == (409, "stale_lease")
    assert (await ff.info(eid))["public_state"] == "active"


async def test_non_operator_cancel_of_an_active_execution_needs_a_fence(ff):
    eid = await ff.create()
    await ff.claim()
    reply = await op(ff, eid, "cancel", {"source": "worker"})
    assert (reply.status, reply.body["kind"]) == (400, "fence_required")
    assert (await ff.info(eid))["public_state"] == "active"


async def test_partial_fence_triple_is_refused(ff):
    eid = await ff.create()
    task = await ff.claim()
    reply = await op(ff, eid, "cancel", {"lease_id": task["lease_id"]})
    assert (reply.status, reply.body["kind"]) == (400, "partial_fence_triple")
    assert (await ff.info(eid))["public_state"] == "active"


# -- change priority --------------------------------------------------------------------

async def test_change_priority_of_a_waiting_execution(ff):
    eid = await ff.create()
    reply = await priority(ff, eid, 500)
    assert (reply.status, reply.body) == (200, {"Changed": {"execution_id": eid}})
    assert (await ff.info(eid))["priority"] == 500


async def test_changed_priority_is_clamped(ff):
    eid = await ff.create()
    await priority(ff, eid, 10_000)
    assert (await ff.info(eid))["priority"] == 9000
    await priority(ff, eid, -3)
    assert (await ff.info(eid))["priority"] == 0


async def test_higher_priority_is_claimed_first_then_fifo(ff):
    low = await ff.create(priority=1)
    ff.clock.advance(1)
    high_first = await ff.create(priority=5)
    ff.clock.advance(1)
    high_second = await ff.create(priority=5)
    order = [(await ff.claim())["execution_id"] for _ in range(3)]
    assert order == [high_first, high_second, low]


async def test_raised_priority_overtakes_older_work(ff):
    older = await ff.create()
    ff.clock.advance(1)
    newer = await ff.create()
    await priority(ff, newer, 10)
    assert [(await ff.claim())["execution_id"] for _ in range(2)] == [newer, older]


async def test_change_priority_of_an_active_execution_is_not_eligible(ff):
    eid = await ff.create()
    await ff.claim()
    reply = await priority(ff, eid, 500)
    assert (reply.status, reply.body["kind"]) == (409, "execution_not_eligible")


async def test_change_priority_of_a_delayed_execution_is_not_eligible(ff):
    eid = await ff.create(delay_until=ff.clock.now_ms() + 60_000)
    reply = await priority(ff, eid, 500)
    assert (reply.status, reply.body["kind"]) == (409, "execution_not_eligible")


async def test_change_priority_of_an_unknown_execution_is_a_404(ff):
    reply = await priority(ff, f"{{fp:86}}:{uuid.uuid4()}", 500)
    assert (reply.status, reply.body["kind"]) == (404, "execution_not_found")


async def test_change_priority_needs_an_integer(ff):
    eid = await ff.create()
    for body in ({}, {"new_priority": "high"}, {"new_priority": 5, "lane_id": "x"}):
        reply = await op(ff, eid, "priority", body, method="PUT")
        assert reply.status == 400, (body, reply)


# -- replay ----------------------------------------------------------------------------

async def test_replay_of_a_completed_execution_runs_it_again(ff):
    eid, _ = await completed(ff)
    reply = await op(ff, eid, "replay")
    assert (reply.status, reply.body) == (200, {"Replayed": {"public_state": "waiting"}})
    info = await ff.info(eid)
    assert (info["public_state"], info["replay_count"]) == ("waiting", 1)
    assert info["state_vector"]["attempt_state"] == "pending_replay_attempt"
    assert "completed_at" not in info
    task = await ff.claim()
    assert (task["execution_id"], task["attempt_type"], task["attempt_index"],
            task["lease_epoch"]) == (eid, "replay", 1, 2)


async def test_replay_of_a_cancelled_execution_is_allowed(ff):
    eid = await ff.create()
    await op(ff, eid, "cancel", {})
    reply = await op(ff, eid, "replay", {})
    assert (reply.status, reply.body) == (200, {"Replayed": {"public_state": "waiting"}})


async def test_replay_of_a_non_terminal_execution_is_refused(ff):
    eid = await ff.create()
    reply = await op(ff, eid, "replay")
    assert (reply.status, reply.body["kind"]) == (409, "execution_not_terminal")
    await ff.claim()
    reply = await op(ff, eid, "replay")
    assert (reply.status, reply.body["kind"]) == (409, "execution_not_terminal")


async def test_replays_stop_at_the_policy_limit(ff):
    eid, _ = await completed(ff, policy={"max_replay_count": 1})
    assert (await op(ff, eid, "replay")).status == 200
    task = await ff.claim()
    assert (await ff.worker_op("complete", task)).status == 200
    reply = await op(ff, eid, "replay")
    assert (reply.status, reply.body["kind"]) == (409, "max_replays_exhausted")
    assert (await ff.info(eid))["public_state"] == "completed"


async def test_replay_body_with_an_unknown_field_is_a_400(ff):
    eid, _ = await completed(ff)
    reply = await op(ff, eid, "replay", {"force": True})
    assert reply.status == 400, reply
    assert "force" in reply.body["error"]
    assert (await ff.info(eid))["public_state"] == "completed"


async def test_replay_of_an_unknown_execution_is_a_404(ff):
    reply = await op(ff, f"{{fp:86}}:{uuid.uuid4()}", "replay")
    assert (reply.status, reply.body["kind"]) == (404, "execution_not_found")


# -- revoke lease ------------------------------------------------------------------------

async def test_revoke_takes_the_lease_and_keeps_the_execution_active(ff):
    eid = await ff.create()
    task = await ff.claim()
    reply = await op(ff, eid, "revoke-lease")
    assert (reply.status, reply.body) == (
        200, {"Revoked": {"lease_id": task["lease_id"], "lease_epoch": "1"}})
    info = await ff.info(eid)
    assert info["state_vector"]["ownership_state"] == "lease_revoked"
    assert info["public_state"] == "active"


async def test_second_revoke_is_already_satisfied(ff):
    eid = await ff.create()
    await ff.claim()
    await op(ff, eid, "revoke-lease")
    reply = await op(ff, eid, "revoke-lease")
    assert (reply.status, reply.body) == (
        200, {"AlreadySatisfied": {"reason": "already_revoked"}})


async def test_revoke_of_a_waiting_execution_is_not_active(ff):
    eid = await ff.create()
    reply = await op(ff, eid, "revoke-lease")
    assert (reply.status, reply.body["kind"]) == (409, "execution_not_active")


async def test_revoked_worker_can_no_longer_renew(ff):
    eid = await ff.create()
    task = await ff.claim()
    await op(ff, eid, "revoke-lease", {"reason": "rebalancing"})
    reply = await ff.worker_op("renew", task)
    assert (reply.status, reply.body["kind"]) == (409, "lease_revoked")


async def test_revoked_execution_is_reclaimed_by_another_worker(ff):
    eid = await ff.create()
    old = await ff.claim(worker="w1")
    await op(ff, eid, "revoke-lease")
    new = await ff.claim(worker="w2")
    assert (new["execution_id"], new["attempt_type"], new["attempt_index"],
            new["lease_epoch"]) == (eid, "reclaim", 1, 2)
    stale = await ff.worker_op("complete", old)
    assert (stale.status, stale.body["kind"]) == (409, "stale_lease")
    info = await ff.info(eid)
    assert (info["current_worker_id"], info["lease_reclaim_count"]) == ("w2", 1)
    assert (await ff.worker_op("complete", new)).status == 200


async def test_revoke_of_an_unknown_execution_is_a_404(ff):
    reply = await op(ff, f"{{fp:86}}:{uuid.uuid4()}", "revoke-lease")
    assert (reply.status, reply.body["kind"]) == (404, "execution_not_found")
