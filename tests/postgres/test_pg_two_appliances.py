"""Two appliances on one database: every task runs exactly once, every due item is handled once."""

from collections import Counter

import sniffio
import trio

from appliance.testing import open_harness

TASKS = 2_000
WORKERS_EACH = 8


async def create_many(ff, count: int) -> None:
    for i in range(count):
        await ff.create(input_payload=[i % 256])


async def test_sixteen_workers_on_two_appliances_complete_each_task_exactly_once(
        postgres_backend_options):
    claims: Counter[str] = Counter()
    completions: Counter[str] = Counter()

    async def worker(ff, name: str) -> None:
        while (task := await ff.claim(worker=name)) is not None:
            claims[task["execution_id"]] += 1
            assert task["attempt_index"] == 0
            done = await ff.worker_op("complete", task, result=task["input_payload"])
            assert done.status == 200, done
            completions[task["execution_id"]] += 1

    async with (open_harness("postgres", postgres_backend_options) as a,
                open_harness("postgres", postgres_backend_options) as b):
        async with trio.open_nursery() as nursery:
            for i in range(WORKERS_EACH):
                nursery.start_soon(create_many, (a, b)[i % 2], TASKS // WORKERS_EACH)
        with trio.fail_after(120):  # a hang guard; the run takes ~15-30 s
            async with trio.open_nursery() as nursery:
                for i in range(WORKERS_EACH):
                    nursery.start_soon(worker, a, f"a{i}")
                    nursery.start_soon(worker, b, f"b{i}")
        assert await a.claim() is None and await b.claim() is None
    assert len(claims) == TASKS and set(claims.values()) == {1}
    assert len(completions) == TASKS and set(completions.values()) == {1}


async def test_scanners_on_two_appliances_expire_each_lease_once(postgres_backend_options):
    async with (open_harness("postgres", postgres_backend_options) as a,
                open_harness("postgres", postgres_backend_options) as b):
        eids = [await a.create() for _ in range(40)]
        for _ in eids:
            await a.claim(lease_ttl_ms=1000)
        a.clock.advance(1001)
        b.clock.advance(1001)
        results = []

        async def tick(ff) -> None:
            results.append(await ff.tick("lease_expiry"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick, a)
            nursery.start_soon(tick, b)
        assert sum(r.processed for r in results) == len(eids)
        assert not any(r.failed for r in results)
        for eid in eids:
            info = await b.info(eid)
            assert info["state_vector"]["ownership_state"] == "lease_expired_reclaimable"
            assert info["lease_reclaim_count"] == 0


async def test_work_made_claimable_on_one_appliance_is_announced_to_the_other(
        postgres_backend_options):
    heard: list[tuple[str, str]] = []
    arrived = trio.Event()

    def notify(lane: str) -> None:
        heard.append((lane, sniffio.current_async_library()))
        if lane == "announced":
            arrived.set()

    async with (open_harness("postgres", postgres_backend_options, serve=False) as a,
                open_harness("postgres", postgres_backend_options) as b):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.backend.serve, notify)
            await b.create(lane_id="announced")
            with trio.fail_after(5):
                await arrived.wait()
            nursery.cancel_scope.cancel()
    assert ("announced", "trio") in heard


async def test_an_appliance_is_not_told_about_work_it_announced_itself(postgres_backend_options):
    heard: list[str] = []
    arrived = trio.Event()

    def notify(lane: str) -> None:
        heard.append(lane)
        if lane == "theirs":
            arrived.set()

    async with (open_harness("postgres", postgres_backend_options, serve=False) as a,
                open_harness("postgres", postgres_backend_options) as b):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.backend.serve, notify)
            await a.create(lane_id="ours")
            await b.create(lane_id="theirs")
            with trio.fail_after(5):
                await arrived.wait()
            nursery.cancel_scope.cancel()
    assert heard == ["theirs"]
