"""Two appliances on one store: 16 workers, 2,000 tasks, each completed exactly once.

Each appliance hears the other's work notifications, as a served appliance does."""

from collections import Counter

import trio

from appliance.testing import open_harness

TASKS = 2000
WORKERS_PER_APPLIANCE = 8
DEADLINE_S = 50
PRODUCERS_PER_APPLIANCE = 4
IDLE_BACKOFF_S = 0.05


async def test_two_appliances_complete_every_task_exactly_once(valkey_backend_options):
    completed: Counter[str] = Counter()
    created: list[str] = []
    async with (open_harness("valkey", valkey_backend_options) as one,
                open_harness("valkey", valkey_backend_options) as two):

        async def produce(ff, count):
            for _ in range(count):
                created.append(await ff.create(input_payload=[1]))

        async def work(ff, name):
            while len(completed) < TASKS:
                task = await ff.claim(worker=name)
                if task is None:
                    await trio.sleep(IDLE_BACKOFF_S)
                    continue
                reply = await ff.worker_op("complete", task)
                assert reply.status == 200, reply
                completed[task["execution_id"]] += 1

        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:
                    for ff in (one, two):
                        for _ in range(PRODUCERS_PER_APPLIANCE):
                            nursery.start_soon(produce, ff,
                                               TASKS // 2 // PRODUCERS_PER_APPLIANCE)
                        for i in range(WORKERS_PER_APPLIANCE):
                            nursery.start_soon(work, ff, f"{id(ff)}-{i}")
        states = {(await two.info(eid))["public_state"] for eid in created[::50]}
    assert len(created) == TASKS
    assert set(completed) == set(created)
    assert set(completed.values()) == {1}
    assert states == {"completed"}


async def test_work_made_claimable_by_one_appliance_wakes_the_other(valkey_backend_options):
    async with (open_harness("valkey", valkey_backend_options) as one,
                open_harness("valkey", valkey_backend_options, serve=False) as two):
        heard: list[str] = []
        arrived = trio.Event()

        def notify(lane: str) -> None:
            heard.append(lane)
            arrived.set()

        async with trio.open_nursery() as nursery:
            await nursery.start(two.backend.serve, notify)
            with trio.fail_after(5):
                while not arrived.is_set():
                    await one.create(lane_id="reports")
                    with trio.move_on_after(0.2):
                        await arrived.wait()
            nursery.cancel_scope.cancel()
    assert set(heard) == {"reports"}
