"""Two appliances on one store (PostgreSQL, Valkey) and human in the loop: tokens minted by
one verify on the other, a rotation through one is picked up by the other (one stale_kid
retry, invisible to its client), the timeout and expiry scanners of both apply each timeout
once, and concurrent signals through both satisfy a condition once."""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

import pytest
import trio

from appliance.testing import Harness, eid_path, open_harness

SHARED = ["postgres", "valkey"]
SINGLE = {"Single": {"waitpoint_key": "approval", "matcher": {"ByName": "approved"}}}
GRACE_MS = 600_000
NEW_SECRET = "ab" * 32


@pytest.fixture(params=SHARED)
def shared(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    return request.param, {**request.getfixturevalue(f"{request.param}_backend_options"),
                           "FF_WAITPOINT_HMAC_GRACE_MS": str(GRACE_MS)}


def advance(ms: int, *appliances: Harness) -> None:
    """Each harness has its own fake clock: move them together."""
    for ff in appliances:
        ff.clock.advance(ms)


async def running(ff: Harness, lane: str = "hitl") -> dict[str, Any]:
    """A new execution on ``lane``, claimed through ``ff``."""
    eid = await ff.create(lane_id=lane)
    task = await ff.claim(lane=lane)
    assert task is not None and task["execution_id"] == eid, task
    return task


async def suspend(ff: Harness, task: dict[str, Any], condition: Any = SINGLE,
                  **fields: Any) -> dict[str, Any]:
    reply = await ff.worker_op("suspend", task, resume_condition=condition, **fields)
    assert reply.status == 200 and "Suspended" in reply.body, reply
    return reply.body["Suspended"]


async def signal(ff: Harness, eid: str, waitpoint_id: str, token: str,
                 name: str = "approved", identity: str = "jane", **fields: Any) -> Any:
    return await ff.call("POST", f"/v1/executions/{eid_path(eid)}/signal", {
        "waitpoint_id": waitpoint_id, "waitpoint_token": token, "signal_name": name,
        "signal_category": "approval", "source_type": "user", "source_identity": identity,
        **fields})


def effect(reply: Any) -> str:
    assert reply.status == 200 and "Accepted" in reply.body, reply
    return reply.body["Accepted"]["effect"]


def kid(token: str) -> str:
    return token.split(":")[0]


async def resumed(ff: Harness, eid: str, lane: str = "hitl") -> dict[str, Any]:
    task = await ff.claim(lane=lane)
    assert task is not None and task["execution_id"] == eid, task
    assert task["resumed"] is True, task
    return task


async def test_tokens_minted_through_one_appliance_verify_on_the_other(shared):
    backend, options = shared
    async with (open_harness(backend, options) as one,
                open_harness(backend, options) as two):
        # A pending waitpoint created through A, signalled through B before the suspend
        # (buffered), then bound by A's suspend: the buffered signal satisfies it at once.
        task = await running(one)
        eid = task["execution_id"]
        reply = await one.worker_op("waitpoints", task, waitpoint_key="approval")
        assert reply.status == 201, reply
        early = reply.body["Created"]
        assert effect(await signal(two, eid, early["waitpoint_id"], early["token"],
                                   payload_b64="ZWFybHk=")) == "buffered_for_pending_waitpoint"
        reply = await one.worker_op("suspend", task, resume_condition=SINGLE)
        assert reply.status == 200, reply
        [sig] = reply.body["AlreadySatisfied"]["signals"]
        assert sig["payload_b64"] == "ZWFybHk="
        assert (await one.worker_op("complete", task)).status == 200

        # A pending waitpoint created through A and bound by A's suspend, then a suspend
        # with a fresh waitpoint through B: each token is signalled through the other one.
        task = await running(one)
        eid = task["execution_id"]
        reply = await one.worker_op("waitpoints", task, waitpoint_key="approval")
        created = reply.body["Created"]
        [wp] = (await suspend(one, task))["waitpoints"]
        assert (wp["waitpoint_id"], wp["token"]) == (created["waitpoint_id"],
                                                     created["token"])
        assert effect(await signal(two, eid, wp["waitpoint_id"], wp["token"])) == (
            "resume_condition_satisfied")
        again = await resumed(two, eid)
        assert [s["signal_name"] for s in again["signals"]] == ["approved"]
        assert (await two.worker_op("complete", again)).status == 200

        task = await running(two)
        [wp] = (await suspend(two, task))["waitpoints"]
        assert kid(wp["token"]) == kid(created["token"]) == "k1"
        assert effect(await signal(one, task["execution_id"], wp["waitpoint_id"],
                                   wp["token"])) == "resume_condition_satisfied"
        assert (await one.worker_op("complete", await resumed(one, task["execution_id"]))
                ).status == 200


async def test_a_rotation_through_one_appliance_is_picked_up_by_the_other(shared, monkeypatch):
    backend, options = shared
    async with (open_harness(backend, options) as one,
                open_harness(backend, options) as two):
        # Both appliances hold k1 (a suspend through each caches the keystore).
        old: list[tuple[str, dict[str, str]]] = []
        for ff in (one, two) * 3:
            task = await running(ff)
            [wp] = (await suspend(ff, task))["waitpoints"]
            assert kid(wp["token"]) == "k1"
            old.append((task["execution_id"], wp))

        reply = await one.call("POST", "/v1/admin/rotate-waitpoint-secret",
                               {"new_kid": "k2", "new_secret_hex": NEW_SECRET})
        assert reply.status == 200, reply
        assert reply.body["new_kid"] == "k2" and reply.body["failed"] == [], reply

        rereads = Counter[str]()
        real = two.backend.waitpoint_keys

        async def counted(execution_id: str) -> Any:
            rereads["keys"] += 1
            return await real(execution_id)

        monkeypatch.setattr(two.backend, "waitpoint_keys", counted)
        # B still caches k1: its first mint is refused as stale, re-read, minted again —
        # the client sees a plain 200 with a k2 token.
        task = await running(two)
        [wp] = (await suspend(two, task))["waitpoints"]
        assert kid(wp["token"]) == "k2"
        assert rereads["keys"] == 1
        fresh = [(task["execution_id"], wp)]
        # From now on B mints with k2 at once (create_waitpoint and suspend alike).
        task = await running(two)
        reply = await two.worker_op("waitpoints", task, waitpoint_key="approval")
        assert reply.status == 201 and kid(reply.body["Created"]["token"]) == "k2", reply
        [wp] = (await suspend(two, task))["waitpoints"]
        assert wp["token"] == reply.body["Created"]["token"]
        fresh.append((task["execution_id"], wp))
        for ff in (one, one, two):  # A re-read its keystore when it rotated
            task = await running(ff)
            [wp] = (await suspend(ff, task))["waitpoints"]
            assert kid(wp["token"]) == "k2"
            fresh.append((task["execution_id"], wp))
        assert rereads["keys"] == 1

        # Old tokens (k1, inside the grace) and new ones (k2) verify on both appliances.
        for i, (eid, wp) in enumerate(old[:4] + fresh[:3]):
            ff = (one, two)[i % 2]
            assert effect(await signal(ff, eid, wp["waitpoint_id"], wp["token"])) == (
                "resume_condition_satisfied"), (i, wp)

        # Past the grace, k1 tokens are refused as expired by both; k2 ones still verify.
        advance(GRACE_MS + 1, one, two)
        for ff in (one, two):
            for eid, wp in old[4:]:
                reply = await signal(ff, eid, wp["waitpoint_id"], wp["token"])
                assert (reply.status, reply.body["kind"]) == (403, "token_expired"), reply
        for i, (eid, wp) in enumerate(fresh[3:]):
            assert effect(await signal((two, one)[i], eid, wp["waitpoint_id"],
                                       wp["token"])) == "resume_condition_satisfied"


async def _drain(scanner: str, *appliances: Harness) -> int:
    """Run ``scanner`` on every appliance at once, round after round, until a round moves
    nothing; the number of executions (or waitpoints) moved in all."""
    total = 0
    while True:
        results: list[Any] = []

        async def once(ff: Harness, into: list[Any]) -> None:
            into.append(await ff.tick(scanner))

        async with trio.open_nursery() as nursery:
            for ff in appliances:
                nursery.start_soon(once, ff, results)
        assert all(not r.failed for r in results), results
        moved = sum(r.processed for r in results)
        if not moved:
            return total
        total += moved


async def test_both_suspension_timeout_scanners_resume_each_suspension_once(shared):
    backend, options = shared
    n = 30
    async with (open_harness(backend, options) as one,
                open_harness(backend, options) as two):
        eids = [await one.create(lane_id="timeouts") for _ in range(n)]
        tasks = (await one.claim(lane="timeouts", max_tasks=n))["tasks"]
        assert sorted(t["execution_id"] for t in tasks) == sorted(eids)
        epochs = {t["execution_id"]: t["lease_epoch"] for t in tasks}
        for i, task in enumerate(tasks):
            await suspend((one, two)[i % 2], task, timeout_ms=10_000,
                          timeout_behavior="auto_resume_with_timeout_signal")
        assert await _drain("suspension_timeout", one, two) == 0  # not due yet
        advance(10_001, one, two)
        assert await _drain("suspension_timeout", one, two) == n
        states = Counter()
        for eid in eids:
            info = await two.info(eid)
            sv = info["state_vector"]
            states[(sv["lifecycle_phase"], sv["eligibility_state"], sv["attempt_state"],
                    info["current_attempt_index"], info["lease_epoch"] - epochs[eid])] += 1
        # Each one resumed once: runnable, same attempt, lease not yet taken again.
        assert states == {("runnable", "eligible_now", "attempt_interrupted", 0, 0): n}
        again = (await two.claim(lane="timeouts", max_tasks=n))["tasks"]
        assert sorted(t["execution_id"] for t in again) == sorted(eids)
        for task in again:
            # Resumed once: the same attempt, one lease later, no signals.
            assert (task["resumed"], task["signals"], task["lease_epoch"]) == (
                True, [], epochs[task["execution_id"]] + 1), task
            assert (await two.worker_op("complete", task)).status == 200
        assert await _drain("suspension_timeout", one, two) == 0


async def test_both_pending_waitpoint_expiry_scanners_close_each_waitpoint_once(shared):
    backend, options = shared
    n = 30
    async with (open_harness(backend, options) as one,
                open_harness(backend, options) as two):
        for _ in range(n):
            await one.create(lane_id="pending")
        tasks = (await one.claim(lane="pending", max_tasks=n))["tasks"]
        created = []
        for i, task in enumerate(tasks):
            reply = await (one, two)[i % 2].worker_op("waitpoints", task,
                                                      waitpoint_key="approval",
                                                      expires_in_ms=5_000)
            assert reply.status == 201, reply
            created.append((task, reply.body["Created"]))
        assert await _drain("pending_waitpoint_expiry", one, two) == 0
        task, wp = created[0]
        reply = await two.call("GET", f"/v1/executions/{eid_path(task['execution_id'])}"
                                      f"/pending-waitpoints")
        assert [(w["waitpoint_id"], w["state"]) for w in reply.body] == [
            (wp["waitpoint_id"], "pending")], reply
        advance(5_001, one, two)
        moved = await _drain("pending_waitpoint_expiry", one, two)
        assert moved == n, f"{moved} waitpoints closed by two scanners for {n} expired"
        for i, (task, wp) in enumerate(created):
            ff = (one, two)[i % 2]
            reply = await ff.call("GET", f"/v1/executions/{eid_path(task['execution_id'])}"
                                         f"/pending-waitpoints")
            assert reply.status == 200 and reply.body == [], reply  # closed: not listed
            refused = await signal(ff, task["execution_id"], wp["waitpoint_id"], wp["token"])
            assert (refused.status, refused.body["kind"]) == (409, "waitpoint_closed"), refused
        assert await _drain("pending_waitpoint_expiry", one, two) == 0


async def test_concurrent_signals_through_both_appliances_satisfy_a_count_once(shared):
    backend, options = shared
    n, extra = 20, 4
    condition = {"Composite": {"kind": "Count", "n": n, "count_kind": "DistinctSignals",
                               "matcher": {"ByName": "vote"}, "waitpoints": ["votes"]}}
    async with (open_harness(backend, options) as one,
                open_harness(backend, options) as two):
        task = await running(one, "votes")
        eid = task["execution_id"]
        [wp] = (await suspend(one, task, condition))["waitpoints"]
        effects: Counter[str] = Counter()
        statuses: Counter[tuple[int, str]] = Counter()

        async def vote(i: int) -> None:
            reply = await signal((one, two)[i % 2], eid, wp["waitpoint_id"], wp["token"],
                                 name="vote", identity=f"voter{i}",
                                 payload_b64=base64.b64encode(f"v{i}".encode()).decode())
            if reply.status == 200:
                effects[reply.body["Accepted"]["effect"]] += 1
            else:
                statuses[(reply.status, reply.body["kind"])] += 1

        # n + extra at once: exactly n are accepted (the n-th satisfies), the rest find
        # the waitpoint closed.
        async with trio.open_nursery() as nursery:
            for i in range(n + extra):
                nursery.start_soon(vote, i)
        assert effects == {"resume_condition_satisfied": 1, "appended_to_waitpoint": n - 1}
        assert statuses == {(409, "waitpoint_closed"): extra}
        again = await resumed(two, eid, "votes")
        assert again["lease_epoch"] == task["lease_epoch"] + 1
        assert len(again["signals"]) == n
        assert len({s["signal_id"] for s in again["signals"]}) == n
        assert await one.claim(lane="votes") is None
        assert (await one.worker_op("complete", again)).status == 200
        assert (await two.info(eid))["public_state"] == "completed"
