"""Every change that makes work claimable wakes a waiting claim at once, on every backend.

The harness runs with re-polling off (FF_CLAIM_REPOLL_MS=0): a claim looks again only when
woken, so a lost wake-up shows as a claim that waits out its whole ``wait_ms``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from appliance.testing import eid_path

LANE = "wake"
WAIT_MS = 20_000
DEADLINE_S = 5  # far less than WAIT_MS: only a wake-up returns the claim in time


async def woken_by(ff, action: Callable[[], Awaitable[None]]) -> dict | None:
    """Start a claim on LANE that waits, run ``action``, and return what the claim got."""
    got: dict = {}

    async def waiter() -> None:
        got["task"] = await ff.claim(lane=LANE, worker="sleeper", wait_ms=WAIT_MS)

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            while ff.service.work.waiting(LANE) == 0:
                await trio.sleep(0.005)
            await action()
    return got["task"]


async def leased(ff, **fields) -> dict:
    await ff.create(lane_id=LANE, **fields)
    return await ff.claim(lane=LANE)


async def test_create_wakes_a_waiting_claim(ff):
    async def create() -> None:
        await ff.create(lane_id=LANE)
    assert (await woken_by(ff, create)) is not None


async def test_a_delay_into_the_past_wakes_a_waiting_claim(ff):
    task = await leased(ff)

    async def delay_into_the_past() -> None:
        reply = await ff.worker_op("delay", task, delay_until=ff.clock.now_ms() - 1)
        assert reply.status == 200, reply
    got = await woken_by(ff, delay_into_the_past)
    assert (got["execution_id"], got["attempt_type"]) == (task["execution_id"], "resumed")


async def test_a_lease_found_expired_by_its_worker_wakes_a_waiting_claim(ff):
    task = await leased(ff, )
    ff.clock.advance(31_000)

    async def renew_too_late() -> None:
        reply = await ff.worker_op("renew", task)
        assert (reply.status, reply.body["kind"]) == (409, "lease_expired")
    got = await woken_by(ff, renew_too_late)
    assert (got["execution_id"], got["attempt_type"]) == (task["execution_id"], "reclaim")


async def test_a_revoked_lease_wakes_a_waiting_claim(ff):
    task = await leased(ff)

    async def revoke() -> None:
        path = f"/v1/executions/{eid_path(task['execution_id'])}/revoke-lease"
        assert (await ff.call("POST", path, {})).status == 200
    got = await woken_by(ff, revoke)
    assert got["attempt_type"] == "reclaim"


async def test_a_replay_wakes_a_waiting_claim(ff):
    task = await leased(ff)
    assert (await ff.worker_op("complete", task)).status == 200

    async def replay() -> None:
        path = f"/v1/executions/{eid_path(task['execution_id'])}/replay"
        assert (await ff.call("POST", path, {})).status == 200
    assert (await woken_by(ff, replay))["attempt_type"] == "replay"


async def test_a_retry_without_backoff_wakes_a_waiting_claim(ff):
    policy = {"retry_policy": {"max_retries": 1, "backoff": {"type": "fixed", "delay_ms": 0}}}
    task = await leased(ff, policy=policy)

    async def fail() -> None:
        assert (await ff.worker_op("fail", task, failure_reason="x")).status == 200
    assert (await woken_by(ff, fail))["attempt_type"] == "retry"


async def test_a_scanner_promotion_wakes_a_waiting_claim(ff):
    await ff.create(lane_id=LANE, delay_until=ff.clock.now_ms() + 1000)

    async def promote() -> None:
        ff.clock.advance(1000)
        await ff.tick("delayed_promoter")
    assert (await woken_by(ff, promote)) is not None


async def test_a_scanner_lease_expiry_wakes_a_waiting_claim(ff):
    task = await leased(ff)

    async def expire() -> None:
        ff.clock.advance(31_000)
        await ff.tick("lease_expiry")
    assert (await woken_by(ff, expire))["execution_id"] == task["execution_id"]


async def test_each_execution_a_scanner_promotes_wakes_its_own_waiter(ff):
    for _ in range(3):
        await ff.create(lane_id=LANE, delay_until=ff.clock.now_ms() + 1000)
    got: list[dict] = []

    async def waiter(i: int) -> None:
        got.append(await ff.claim(lane=LANE, worker=f"sleeper{i}", wait_ms=WAIT_MS))

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(waiter, i)
            while ff.service.work.waiting(LANE) < 3:
                await trio.sleep(0.005)
            ff.clock.advance(1000)
            await ff.tick("delayed_promoter")
    assert len({t["execution_id"] for t in got}) == 3
