"""``GET /v1/executions/{id}/explain`` (spec/http-api.md § Admission, its table of
reasons): one test per reason, the blockers list, and bad ids. Time moves only by the
harness clock."""

from __future__ import annotations

from admission_helpers import (
    blocker_reasons,
    budget,
    claim,
    complete,
    exhaust,
    explain,
    explain_reply,
    fresh_lane,
    grant,
    in_order,
    limited,
    live_worker,
    ms,
    quota,
    register,
)
from flow_helpers import assert_error, submit_dag
from suspension_helpers import single, suspended


async def test_terminal(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    await complete(ff, await claim(ff, lane))
    explained = await explain(ff, eid)
    assert (explained["reason"], explained["runnable"], explained["public_state"],
            explained["lane_id"]) == ("terminal", False, "completed", lane)
    info = await ff.info(eid)
    assert explained["details"]["terminal_outcome"] == \
        info["state_vector"]["terminal_outcome"] == "success"


async def test_running(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    task = await claim(ff, lane, worker="w7", lease_ttl_ms=9000)
    explained = await explain(ff, eid)
    assert (explained["reason"], explained["runnable"], explained["public_state"]) == (
        "running", False, "active")
    details = explained["details"]
    assert (details["worker_id"], details["worker_instance_id"],
            ms(details["lease_expires_at"])) == ("w7", "w7-1", task["lease_expires_at"])


async def test_granted(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    granted = await grant(ff, lane, worker="w3", grant_ttl_ms=4000)
    explained = await explain(ff, eid)
    assert (explained["reason"], explained["runnable"]) == ("granted", False)
    assert (explained["details"]["worker_id"], ms(explained["details"]["expires_at"])) == (
        "w3", granted["expires_at_ms"])


async def test_suspended(ff):
    eid, _, wps = await suspended(ff, single("k", "x"), timeout_ms=60_000)
    explained = await explain(ff, eid)
    assert (explained["reason"], explained["runnable"], explained["public_state"]) == (
        "suspended", False, "suspended")
    details = explained["details"]
    info = await ff.info(eid)
    assert details["suspension_id"] == info["current_suspension_id"]
    assert list(details["waitpoint_ids"]) == [wps["k"]["waitpoint_id"]]
    assert ms(details["timeout_at"]) == ff.clock.now_ms() + 60_000


async def test_delayed(ff):
    at = ff.clock.now_ms() + 5000
    eid = await ff.create(lane_id=fresh_lane(), delay_until=at)
    explained = await explain(ff, eid)
    assert (explained["reason"], explained["runnable"], explained["public_state"]) == (
        "delayed", False, "delayed")
    assert ms(explained["details"]["delay_until"]) == at


async def test_waiting_for_dependencies(ff):
    dag = await submit_dag(ff, [{"key": "up", "lane_id": fresh_lane()},
                                {"key": "down", "lane_id": fresh_lane()}], [("up", "down")])
    explained = await explain(ff, dag["down"])
    assert (explained["reason"], explained["runnable"]) == ("waiting_for_dependencies", False)
    assert explained["details"]["flow_id"] == dag.flow_id
    assert "blocking_detail" in explained["details"]
    assert (await explain(ff, dag["up"]))["reason"] != "waiting_for_dependencies"


async def test_no_live_worker(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    explained = await explain(ff, eid)
    assert (explained["reason"], explained["public_state"]) == ("no_live_worker", "waiting")
    assert explained["details"]["lane_id"] == lane
    assert explained["runnable"] is True  # a capable worker's claim would take it now


async def test_a_dead_worker_is_no_live_worker(ff):
    lane = fresh_lane()
    assert (await register(ff, "w1", "w1-1", lanes=[lane], liveness_ttl_ms=1000)).status == 201
    eid = await ff.create(lane_id=lane)
    assert (await explain(ff, eid))["reason"] == "waiting_for_worker"
    ff.clock.advance(1001)
    assert (await explain(ff, eid))["reason"] == "no_live_worker"


async def test_a_worker_on_another_lane_is_no_live_worker(ff):
    lane = fresh_lane()
    await live_worker(ff, fresh_lane())
    eid = await ff.create(lane_id=lane)
    assert (await explain(ff, eid))["reason"] == "no_live_worker"


async def test_no_capable_worker(ff):
    lane = fresh_lane()
    await live_worker(ff, lane, worker="cpu", caps=["cpu"])
    await live_worker(ff, lane, worker="gpu", caps=["gpu"])
    eid = await limited(ff, lane, caps=["gpu", "cuda"])
    explained = await explain(ff, eid)
    # runnable: a capable worker's claim would take it now (none is live).
    assert (explained["reason"], explained["runnable"]) == ("no_capable_worker", True)
    details = explained["details"]
    assert sorted(details["required_capabilities"]) == ["cuda", "gpu"]
    assert list(details["missing_capabilities"]) == ["cuda"]  # what the closest lacks
    assert "live_workers" in details
    assert "no_capable_worker" in blocker_reasons(explained)
    await live_worker(ff, lane, worker="both", caps=["gpu", "cuda"])
    explained = await explain(ff, eid)
    assert (explained["reason"], explained["runnable"]) == ("waiting_for_worker", True)
    assert explained["blockers"] == []


async def test_budget_exhausted(ff):
    lane = fresh_lane()
    await live_worker(ff, lane)
    bid = await budget(ff, {"tokens": 100, "cost": 7}, reset_interval_ms=60_000)
    eid = await limited(ff, lane, [bid])
    assert (await explain(ff, eid))["reason"] == "waiting_for_worker"
    await exhaust(ff, bid, "cost", 7)
    explained = await explain(ff, eid)
    assert (explained["reason"], explained["runnable"]) == ("budget_exhausted", False)
    details = explained["details"]
    assert (details["budget_id"], details["dimension"], details["usage"],
            details["hard_limit"], ms(details["next_reset_at"])) == (
        bid, "cost", 7, 7, ff.clock.now_ms() + 60_000)
    assert blocker_reasons(explained) == ["budget_exhausted"]


async def test_every_blocker_is_listed(ff):
    lane = fresh_lane()
    await live_worker(ff, lane, caps=["cpu"])
    spent_a, spent_b = await budget(ff, {"tokens": 1}), await budget(ff, {"tokens": 1})
    qid = await quota(ff, concurrent=1)
    holder_lane = fresh_lane()
    await limited(ff, holder_lane, quota_id=qid)
    assert await claim(ff, holder_lane, worker="holder") is not None  # the one slot
    eid = await limited(ff, lane, [spent_a, spent_b], qid, caps=["gpu"])
    await exhaust(ff, spent_a, hard=1)
    await exhaust(ff, spent_b, hard=1)
    explained = await explain(ff, eid)
    assert explained["runnable"] is False
    reasons = blocker_reasons(explained)
    assert sorted(reasons) == sorted(["no_capable_worker", "budget_exhausted",
                                      "budget_exhausted", "quota_concurrency_full"]), reasons
    assert explained["reason"] in reasons


async def test_quota_rate_limited(ff):
    lane = fresh_lane()
    qid = await quota(ff, window_seconds=10, rate=1)
    _, eid = await in_order(ff, 2, lane, quota_id=qid)
    assert await claim(ff, lane) is not None
    ff.clock.advance(4000)
    explained = await explain(ff, eid)
    assert (explained["reason"], explained["runnable"]) == ("quota_rate_limited", False)
    assert explained["details"] == {"quota_policy_id": qid, "admitted_in_window": 1,
                                    "max_requests_per_window": 1, "window_seconds": 10,
                                    "retry_after_ms": 6000}
    ff.clock.advance(6000)
    explained = await explain(ff, eid)
    assert (explained["reason"], explained["runnable"]) == ("waiting_for_worker", True)


async def test_quota_concurrency_full(ff):
    lane = fresh_lane()
    qid = await quota(ff, concurrent=1)
    _, eid = await in_order(ff, 2, lane, quota_id=qid)
    task = await claim(ff, lane)
    explained = await explain(ff, eid)
    assert (explained["reason"], explained["runnable"]) == ("quota_concurrency_full", False)
    assert explained["details"] == {"quota_policy_id": qid, "active": 1, "max_concurrent": 1}
    await complete(ff, task)
    assert (await explain(ff, eid))["reason"] == "waiting_for_worker"


async def test_waiting_for_worker_counts_what_a_claim_takes_first(ff):
    lane = fresh_lane()
    await live_worker(ff, lane)
    ids = {}
    for name, priority in (("a", 5), ("b", 10), ("c", 5), ("d", 1), ("e", 10)):
        ids[name] = await ff.create(lane_id=lane, priority=priority)
        ff.clock.advance(1)
    expected = {"b": 0, "e": 1, "a": 2, "c": 3, "d": 4}
    for name, ahead in expected.items():
        explained = await explain(ff, ids[name])
        assert (explained["reason"], explained["runnable"]) == ("waiting_for_worker", True)
        assert (explained["details"]["ahead"], explained["details"]["priority"]) == (
            ahead, {"a": 5, "b": 10, "c": 5, "d": 1, "e": 10}[name]), (name, explained)
    assert (await claim(ff, lane))["execution_id"] == ids["b"]
    assert (await explain(ff, ids["d"]))["details"]["ahead"] == 3


async def test_ahead_leaves_out_work_a_claim_would_not_take(ff):
    lane = fresh_lane()
    await live_worker(ff, lane)
    bid = await budget(ff, {"tokens": 1})
    await exhaust(ff, bid, hard=1)
    await limited(ff, lane, [bid], priority=100)  # blocked
    granted = await ff.create(lane_id=lane, priority=100)
    assert (await grant(ff, lane, worker="g"))["execution_id"] == granted
    await ff.create(lane_id=lane, priority=50)
    ff.clock.advance(1)
    eid = await ff.create(lane_id=lane, priority=50)
    explained = await explain(ff, eid)
    assert (explained["reason"], explained["details"]["ahead"]) == ("waiting_for_worker", 1)


async def test_lease_expired(ff):
    lane = fresh_lane()
    eid = await ff.create(lane_id=lane)
    await claim(ff, lane, lease_ttl_ms=1000)
    ff.clock.advance(1001)
    await ff.tick("lease_expiry")
    explained = await explain(ff, eid)
    assert (explained["reason"], explained["runnable"], explained["public_state"]) == (
        "lease_expired", True, "active")
    assert ms(explained["details"]["lease_expired_at"]) == ff.clock.now_ms()
    assert explained["details"]["ahead"] == 0


async def test_an_unknown_execution_is_404(ff):
    reply = await explain_reply(ff, "{fp:0}:00000000-0000-4000-8000-000000000000")
    assert_error(reply, 404, "execution_not_found")


async def test_a_malformed_id_is_400(ff):
    for bad in ("not-an-id", "{fp:0}:not-a-uuid", "%00",
                "{fp:-1}:00000000-0000-4000-8000-000000000000"):
        reply = await ff.call("GET", f"/v1/executions/{bad}/explain")
        assert_error(reply, 400, "invalid_input")
    reply = await ff.call("GET", "/v1/executions/{fp:99999}:00000000-0000-4000-8000-"
                          "000000000000/explain")
    assert reply.status in (400, 404), reply
