"""Capability routing and priority under the admission pipeline (spec/admission.md § One
pipeline, § Admission classes): work needing a capability goes only to a worker that has
it, promptly, however many other workers poll; priority then FIFO across every class of
work that passes. Latencies are measured with trio.current_time (loose bounds; printed)."""

from __future__ import annotations

import random

import trio
from admission_helpers import (
    budget,
    claim,
    claim_id,
    create_many,
    fresh_lane,
    limited,
    limits_policy,
    quota,
    wait_for_waiters,
)

GPU = ["gpu"]
CPU = ["cpu"]


async def test_existing_gpu_work_is_never_given_to_cpu_workers_and_a_gpu_worker_gets_it(ff):
    lane = fresh_lane()
    eid = await limited(ff, lane, caps=GPU, priority=100)
    for i in range(8):
        assert await claim(ff, lane, worker=f"cpu{i}", capabilities=CPU) is None
        assert await claim(ff, lane, worker=f"none{i}") is None
    start = trio.current_time()
    task = await claim(ff, lane, worker="gpu", capabilities=["cpu", "gpu"])
    elapsed = trio.current_time() - start
    print(f"gpu claim of existing work: {elapsed * 1000:.1f} ms")
    assert task is not None and task["execution_id"] == eid
    assert elapsed < 1.0


async def test_many_cpu_workers_polling_never_take_gpu_work(ff):
    lane = fresh_lane()
    gpu_ids = set(await create_many(ff, [{"lane_id": lane, "priority": 9000,
                                          "policy": limits_policy(caps=GPU)}
                                         for _ in range(10)]))
    cpu_ids = set(await create_many(ff, [{"lane_id": lane} for _ in range(20)]))
    taken: dict[str, list[str]] = {}

    async def cpu_worker(i: int) -> None:
        while (task := await claim(ff, lane, worker=f"cpu{i}", capabilities=CPU)) is not None:
            taken.setdefault("cpu", []).append(task["execution_id"])

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(cpu_worker, i)
    assert sorted(taken["cpu"]) == sorted(cpu_ids)
    got = {await claim_id(ff, lane, worker="gpu", capabilities=GPU) for _ in gpu_ids}
    assert got == gpu_ids


async def test_a_long_polling_gpu_worker_gets_new_gpu_work_while_cpu_workers_wait(ff):
    lane = fresh_lane()
    got: dict[str, dict | None] = {}
    created_at: dict[str, float] = {}
    answered_at: dict[str, float] = {}

    async def worker(name: str, caps: list[str]) -> None:
        got[name] = await claim(ff, lane, worker=name, capabilities=caps, wait_ms=20_000)
        answered_at[name] = trio.current_time()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            # The CPU workers wait first: a wake-up for the oldest waiter reaches them first.
            for i in range(8):
                nursery.start_soon(worker, f"cpu{i}", CPU)
            await wait_for_waiters(ff, lane, 8)
            nursery.start_soon(worker, "gpu", GPU)
            await wait_for_waiters(ff, lane, 9)
            created_at["gpu"] = trio.current_time()
            eid = await limited(ff, lane, caps=GPU)
            while "gpu" not in answered_at:
                await trio.sleep(0.001)
            elapsed = answered_at["gpu"] - created_at["gpu"]
            print(f"long-polling gpu worker got new gpu work after {elapsed * 1000:.1f} ms")
            # No CPU worker got anything; they are still waiting.
            assert not any(got.get(f"cpu{i}") for i in range(8)), got
            assert ff.service.work.waiting(lane) == 8
            nursery.cancel_scope.cancel()
    assert got["gpu"] is not None and got["gpu"]["execution_id"] == eid
    assert elapsed < 1.0, elapsed


async def test_a_long_polling_cpu_worker_gets_plain_work_while_gpu_work_waits(ff):
    lane = fresh_lane()
    gpu_eid = await limited(ff, lane, caps=GPU, priority=100)
    got: dict = {}

    async def worker() -> None:
        got["task"] = await claim(ff, lane, worker="cpu", capabilities=CPU, wait_ms=20_000)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
            await wait_for_waiters(ff, lane, 1)
            plain = await ff.create(lane_id=lane)
    assert got["task"]["execution_id"] == plain
    assert (await ff.info(gpu_eid))["public_state"] == "waiting"


async def test_capabilities_are_exact_and_case_sensitive(ff):
    lane = fresh_lane()
    eid = await limited(ff, lane, caps=["GPU"])
    assert await claim(ff, lane, capabilities=["gpu"]) is None
    assert await claim(ff, lane, capabilities=["gpu", "Gpu"]) is None
    assert await claim_id(ff, lane, capabilities=["GPU"]) == eid


async def test_capabilities_are_never_a_union_across_workers(ff):
    lane = fresh_lane()
    await limited(ff, lane, caps=["gpu", "cuda"])
    assert await claim(ff, lane, worker="a", capabilities=["gpu"]) is None
    assert await claim(ff, lane, worker="b", capabilities=["cuda"]) is None
    assert await claim(ff, lane, worker="a", capabilities=["gpu"]) is None


# -- priority -------------------------------------------------------------------------------

async def test_higher_priority_is_claimed_first_under_concurrent_claimers(ff):
    lane = fresh_lane()
    priorities = [p for p in range(40)]
    random.Random(7).shuffle(priorities)
    ids = await create_many(ff, [{"lane_id": lane, "priority": p} for p in priorities])
    by_priority = dict(zip(ids, priorities, strict=True))
    taken: list[str] = []

    async def claimer(i: int) -> None:
        for _ in range(5):
            task = await claim(ff, lane, worker=f"c{i}")
            assert task is not None
            taken.append(task["execution_id"])

    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(claimer, i)
    # 20 claims, whatever their interleaving, took the 20 highest priorities.
    assert sorted(by_priority[e] for e in taken) == list(range(20, 40))
    rest = [await claim_id(ff, lane) for _ in range(20)]
    assert [by_priority[e] for e in rest] == list(range(19, -1, -1))


async def test_priority_then_fifo_across_admission_classes(ff):
    lane = fresh_lane()
    bid = await budget(ff, {"tokens": 1000})
    qid = await quota(ff, concurrent=100)
    order = []
    for priority, kind in ((1, "plain"), (50, "budget"), (100, "quota"), (50, "gpu"),
                           (75, "plain"), (50, "plain"), (100, "budget")):
        policy = {"plain": {}, "budget": limits_policy([bid]),
                  "quota": limits_policy(quota_id=qid), "gpu": limits_policy(caps=GPU)}[kind]
        order.append((priority, await ff.create(lane_id=lane, priority=priority,
                                                policy=policy)))
        ff.clock.advance(1)
    expected = [eid for _, eid in sorted(order, key=lambda pe: -pe[0])]  # stable: FIFO
    got = [await claim_id(ff, lane, capabilities=GPU) for _ in order]
    assert got == expected
    assert await claim(ff, lane, capabilities=GPU) is None


async def test_a_worker_without_the_capability_takes_the_best_of_the_rest(ff):
    lane = fresh_lane()
    bid = await budget(ff, {"tokens": 1000})
    await limited(ff, lane, caps=GPU, priority=100)
    low = await ff.create(lane_id=lane, priority=10)
    ff.clock.advance(1)
    mid = await limited(ff, lane, [bid], priority=20)
    assert [await claim_id(ff, lane, capabilities=CPU) for _ in range(2)] == [mid, low]
    assert await claim(ff, lane, capabilities=CPU) is None
