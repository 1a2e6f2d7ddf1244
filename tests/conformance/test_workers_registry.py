"""The worker registry (spec/admission.md § Worker registry; spec/http-api.md § Admission):
claims register and refresh instances, explicit registration, listing and paging,
liveness. Time moves only by the harness clock."""

from __future__ import annotations

import pytest
from admission_helpers import (
    WORKER_KEYS,
    WORKERS,
    claim,
    complete,
    fresh_lane,
    grant,
    ms,
    register,
    worker_entry,
    workers_page,
)
from flow_helpers import assert_error


async def test_a_claim_registers_its_worker_instance(ff):
    lane = fresh_lane()
    await ff.create(lane_id=lane)
    now = ff.clock.now_ms()
    assert await claim(ff, lane, worker="w1", capabilities=["gpu", "cpu"]) is not None
    entry = await worker_entry(ff, "w1-1")
    assert set(entry) == WORKER_KEYS, entry
    assert (entry["worker_id"], entry["lanes"], sorted(entry["capabilities"]),
            entry["alive"], entry["active_leases"], entry["liveness_ttl_ms"]) == (
        "w1", [lane], ["cpu", "gpu"], True, 1, 30_000)
    assert (ms(entry["registered_at"]), ms(entry["last_seen_at"])) == (now, now)


async def test_a_claim_that_finds_nothing_registers_too(ff):
    lane = fresh_lane()
    assert await claim(ff, lane, worker="idle") is None
    entry = await worker_entry(ff, "idle-1")
    assert (entry["worker_id"], entry["lanes"], entry["alive"], entry["active_leases"]) == (
        "idle", [lane], True, 0)


async def test_a_grant_registers_its_worker(ff):
    lane = fresh_lane()
    await ff.create(lane_id=lane)
    assert await grant(ff, lane, worker="g1") is not None
    entry = await worker_entry(ff, "g1-1")
    assert (entry["worker_id"], entry["lanes"]) == ("g1", [lane])


async def test_claims_on_two_lanes_list_both(ff):
    a, b = sorted([fresh_lane(), fresh_lane()])
    await claim(ff, a)
    await claim(ff, b)
    assert sorted((await worker_entry(ff, "w1-1"))["lanes"]) == [a, b]


async def test_active_leases_counts_the_leases_the_instance_holds(ff):
    lane = fresh_lane()
    for _ in range(3):
        await ff.create(lane_id=lane)
    tasks = [await claim(ff, lane, lease_ttl_ms=5000) for _ in range(3)]
    assert (await worker_entry(ff, "w1-1"))["active_leases"] == 3
    await complete(ff, tasks[0])
    assert (await worker_entry(ff, "w1-1"))["active_leases"] == 2
    ff.clock.advance(5001)
    await ff.tick("lease_expiry")
    assert (await worker_entry(ff, "w1-1"))["active_leases"] == 0


async def test_another_instance_of_the_same_worker_is_listed_apart(ff):
    lane = fresh_lane()
    await ff.create(lane_id=lane)
    await claim(ff, lane, worker="w1", instance="w1-a")
    await claim(ff, lane, worker="w1", instance="w1-b")
    assert (await worker_entry(ff, "w1-a"))["active_leases"] == 1
    assert (await worker_entry(ff, "w1-b"))["active_leases"] == 0


# -- explicit registration ------------------------------------------------------------------

async def test_register_is_201_registered_then_200_refreshed(ff):
    reply = await register(ff, "w1", "i-1", lanes=["a", "b"], capabilities=["gpu"],
                           liveness_ttl_ms=5000)
    assert (reply.status, reply.body) == (201, {"Registered": {
        "worker_instance_id": "i-1", "next_expiry_ms": ff.clock.now_ms() + 5000}})
    entry = await worker_entry(ff, "i-1")
    assert (entry["worker_id"], sorted(entry["lanes"]), entry["capabilities"],
            entry["liveness_ttl_ms"], entry["alive"], entry["active_leases"]) == (
        "w1", ["a", "b"], ["gpu"], 5000, True, 0)
    ff.clock.advance(100)
    reply = await register(ff, "w1", "i-1", lanes=["a"], liveness_ttl_ms=5000)
    assert (reply.status, reply.body) == (200, {"Refreshed": {
        "worker_instance_id": "i-1", "next_expiry_ms": ff.clock.now_ms() + 5000}})
    assert (await worker_entry(ff, "i-1"))["lanes"] == ["a"]


async def test_register_defaults(ff):
    reply = await register(ff, "w1", "i-1")
    assert reply.status == 201, reply
    assert reply.body["Registered"]["next_expiry_ms"] == ff.clock.now_ms() + 30_000
    entry = await worker_entry(ff, "i-1")
    assert (entry["lanes"], entry["capabilities"], entry["liveness_ttl_ms"]) == ([], [], 30_000)


async def test_an_instance_under_another_worker_id_is_409(ff):
    assert (await register(ff, "w1", "i-1")).status == 201
    assert_error(await register(ff, "w2", "i-1"), 409, "instance_id_reassigned")
    assert (await worker_entry(ff, "i-1"))["worker_id"] == "w1"


async def test_an_instance_claimed_under_one_worker_id_cannot_register_under_another(ff):
    lane = fresh_lane()
    await claim(ff, lane, worker="w1", instance="i-1")
    assert_error(await register(ff, "w2", "i-1"), 409, "instance_id_reassigned")


@pytest.mark.parametrize("ttl", [999, 86_400_001, 0])
async def test_a_liveness_ttl_out_of_range_is_400(ff, ttl):
    assert_error(await register(ff, "w1", "i-1", liveness_ttl_ms=ttl), 400, "invalid_input",
                 names=["liveness_ttl_ms"])


@pytest.mark.parametrize("ttl", [1000, 86_400_000])
async def test_the_liveness_ttl_bounds_are_accepted(ff, ttl):
    assert (await register(ff, "w1", "i-1", liveness_ttl_ms=ttl)).status == 201


# -- listing --------------------------------------------------------------------------------

async def test_an_empty_registry(ff):
    assert await workers_page(ff) == {"workers": [], "next_cursor": None}


async def test_paging_with_limit_and_after(ff):
    names = [f"i-{n}" for n in (3, 0, 4, 1, 2)]
    for name in names:
        assert (await register(ff, "w1", name)).status == 201
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        query = {"limit": 2, **({"after": after} if after is not None else {})}
        page = await workers_page(ff, **query)
        pages += 1
        assert len(page["workers"]) <= 2, page
        seen += [w["worker_instance_id"] for w in page["workers"]]
        after = page["next_cursor"]
        if after is None:
            break
        assert pages < 10, seen
    assert seen == sorted(names)
    assert pages == 3
    everything = await workers_page(ff)
    assert [w["worker_instance_id"] for w in everything["workers"]] == sorted(names)
    assert everything["next_cursor"] is None


async def test_the_lane_filter(ff):
    a, b = fresh_lane(), fresh_lane()
    await claim(ff, a, worker="wa")
    await claim(ff, b, worker="wb")
    assert (await register(ff, "wr", "wr-1", lanes=[a, b])).status == 201
    on_a = await workers_page(ff, lane=a)
    assert sorted(w["worker_instance_id"] for w in on_a["workers"]) == ["wa-1", "wr-1"]
    on_b = await workers_page(ff, lane=b)
    assert sorted(w["worker_instance_id"] for w in on_b["workers"]) == ["wb-1", "wr-1"]
    assert (await workers_page(ff, lane=fresh_lane()))["workers"] == []


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "x", "1.5"])
async def test_a_limit_out_of_range_is_400(ff, limit):
    reply = await ff.call("GET", WORKERS, query={"limit": limit})
    assert_error(reply, 400, "invalid_input", names=["limit"])


# -- liveness -------------------------------------------------------------------------------

async def test_a_worker_not_seen_within_its_ttl_is_not_alive(ff):
    lane = fresh_lane()
    await claim(ff, lane)
    ff.clock.advance(29_999)
    assert (await worker_entry(ff, "w1-1"))["alive"] is True
    ff.clock.advance(2)
    assert (await worker_entry(ff, "w1-1"))["alive"] is False


async def test_later_claims_keep_a_worker_alive(ff):
    lane = fresh_lane()
    await claim(ff, lane)
    ff.clock.advance(20_000)
    await claim(ff, lane)
    ff.clock.advance(20_000)
    entry = await worker_entry(ff, "w1-1")
    assert entry["alive"] is True, entry
    assert ms(entry["last_seen_at"]) == ff.clock.now_ms() - 20_000
    ff.clock.advance(10_001)
    assert (await worker_entry(ff, "w1-1"))["alive"] is False


async def test_a_claim_keeps_the_registered_liveness_ttl(ff):
    lane = fresh_lane()
    assert (await register(ff, "w1", "w1-1", lanes=[lane], liveness_ttl_ms=1000)).status == 201
    await ff.create(lane_id=lane)
    assert await claim(ff, lane) is not None
    ff.clock.advance(500)
    assert await claim(ff, lane) is None
    entry = await worker_entry(ff, "w1-1")
    assert entry["liveness_ttl_ms"] == 1000, entry
    ff.clock.advance(1001)
    assert (await worker_entry(ff, "w1-1"))["alive"] is False


async def test_renewing_a_lease_is_a_heartbeat(ff):
    lane = fresh_lane()
    await ff.create(lane_id=lane)
    task = await claim(ff, lane, lease_ttl_ms=120_000)
    ff.clock.advance(20_000)
    assert (await ff.worker_op("renew", task)).status == 200
    ff.clock.advance(20_000)
    entry = await worker_entry(ff, "w1-1")
    assert entry["alive"] is True, entry
    assert ms(entry["last_seen_at"]) == ff.clock.now_ms() - 20_000
    ff.clock.advance(10_001)
    assert (await worker_entry(ff, "w1-1"))["alive"] is False


async def test_a_registered_worker_dies_without_claims(ff):
    assert (await register(ff, "w1", "i-1", liveness_ttl_ms=1000)).status == 201
    ff.clock.advance(1001)
    assert (await worker_entry(ff, "i-1"))["alive"] is False
    assert (await register(ff, "w1", "i-1", liveness_ttl_ms=1000)).status == 200
    assert (await worker_entry(ff, "i-1"))["alive"] is True
