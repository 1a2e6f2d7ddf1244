"""PostgreSQL restarting under a running appliance: retryable errors meanwhile, nothing lost.

The server is a private one (``pg_server``): stopping it never disturbs the machine's.
"""

from collections import Counter

import pytest
import trio

from appliance.testing import eid_path, open_harness

pytestmark = pytest.mark.postgres_restart


async def finish(ff, task):
    return await ff.worker_op("complete", task, result=task["input_payload"])


def assert_retryable(reply) -> None:
    assert (reply.status, reply.body["kind"], reply.body["retryable"]) == (
        503, "store_unavailable", True), reply


async def until_ok(ff, method: str, path: str, body=None):
    with trio.fail_after(30):
        while (reply := await ff.call(method, path, body)).status >= 500:
            assert_retryable(reply)
            await trio.sleep(0.1)
    return reply


async def test_requests_fail_retryably_while_postgres_is_down_and_succeed_after(
        pg_server, pg_url):
    async with open_harness("postgres", {"FF_POSTGRES_URL": pg_url}) as ff:
        done_eid = await ff.create(input_payload=[1])
        task = await ff.claim()
        assert (await ff.worker_op("complete", task, result=[7])).status == 200
        waiting_eid = await ff.create(input_payload=[2])

        await trio.to_thread.run_sync(pg_server.stop)
        assert_retryable(await ff.call("POST", "/v1/executions", {}))
        assert_retryable(await ff.call("GET", "/healthz"))
        await trio.to_thread.run_sync(pg_server.start)

        await until_ok(ff, "GET", "/healthz")
        result = await ff.call("GET", f"/v1/executions/{eid_path(done_eid)}/result")
        assert (result.status, result.body) == (200, bytes([7]))
        task = await ff.claim()
        assert (task["execution_id"], task["input_payload"]) == (waiting_eid, [2])
        assert (await ff.worker_op("complete", task)).status == 200


async def test_a_restart_mid_run_loses_nothing_and_fails_only_retryably(pg_server, pg_url):
    async with open_harness("postgres", {"FF_POSTGRES_URL": pg_url}) as ff:
        eids = [await ff.create(input_payload=[i]) for i in range(40)]
        held = [await ff.claim() for _ in range(20)]
        for task in held[:10]:
            assert (await finish(ff, task)).status == 200
        seen: Counter[int] = Counter()
        restarted = trio.Event()

        async def keep_reading() -> None:
            while not restarted.is_set():
                reply = await ff.call("GET", f"/v1/executions/{eid_path(eids[-1])}")
                seen[reply.status] += 1
                if reply.status != 200:
                    assert_retryable(reply)
                await trio.sleep(0.02)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_reading)
            await trio.to_thread.run_sync(pg_server.restart)
            restarted.set()
        assert sum(seen.values()) > 1

        await until_ok(ff, "GET", "/healthz")
        for task in held[10:]:
            assert (await finish(ff, task)).status == 200
        while (task := await ff.claim()) is not None:
            assert (await finish(ff, task)).status == 200
        for i, eid in enumerate(eids):
            result = await ff.call("GET", f"/v1/executions/{eid_path(eid)}/result")
            assert (result.status, result.body) == (200, bytes([i])), eid


async def test_work_announcements_resume_after_a_restart(pg_server, pg_url):
    arrived = trio.Event()

    def notify(lane: str) -> None:
        if lane == "after-restart":
            arrived.set()

    options = {"FF_POSTGRES_URL": pg_url}
    async with open_harness("postgres", options, serve=False) as ff, \
            open_harness("postgres", options) as other:
        async with trio.open_nursery() as nursery:
            await nursery.start(ff.backend.serve, notify)
            await trio.to_thread.run_sync(pg_server.restart)
            with trio.fail_after(20):
                while not arrived.is_set():
                    await until_ok(other, "POST", "/v1/executions", {"lane_id": "after-restart"})
                    with trio.move_on_after(1):
                        await arrived.wait()
            nursery.cancel_scope.cancel()
