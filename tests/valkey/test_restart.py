"""The store restarts mid-run: requests in flight fail retryably, the backend recovers by
itself, and everything acknowledged before the restart is still there."""

import trio

from appliance.testing import Reply, eid_path, open_harness

TASKS = 300
WORKERS = 4
RESTART_AFTER = 60
DEADLINE_S = 30
BACKOFF_S = 0.02
LEASE_TTL_MS = 30_000


def unavailable(reply: Reply) -> bool:
    return (reply.status == 503 and reply.body["kind"] == "store_unavailable"
            and reply.body["retryable"] is True)


async def test_restart_of_the_store_mid_run_loses_nothing_acknowledged(own_server):
    acknowledged: set[str] = set()
    completed: set[str] = set()
    failures: list[Reply] = []
    others: list[Reply] = []
    state = {"produced": False, "holding": 0}

    async with open_harness("valkey", {"FF_VALKEY_URL": own_server.url}) as ff:

        async def call(method, path, body):
            """Retry while the store is away; anything but 503 is the answer."""
            while True:
                reply = await ff.call(method, path, body)
                if not unavailable(reply):
                    return reply
                failures.append(reply)
                await trio.sleep(BACKOFF_S)

        async def produce():
            for _ in range(TASKS):
                reply = await ff.call("POST", "/v1/executions", {"input_payload": [9]})
                if reply.status == 201:
                    acknowledged.add(reply.body["Created"]["execution_id"])
                elif unavailable(reply):
                    failures.append(reply)
                else:
                    others.append(reply)
            state["produced"] = True

        async def work(name):
            body = {"lane_id": "default", "worker_instance_id": name,
                    "lease_ttl_ms": LEASE_TTL_MS}
            while not (state["produced"] and acknowledged <= completed):
                reply = await call("POST", f"/v1/workers/{name}/claim-task", body)
                if reply.status == 204:
                    if state["holding"] == 0 and state["produced"]:
                        ff.clock.advance(LEASE_TTL_MS)  # leases whose claim reply was lost
                        await ff.tick("lease_expiry")
                    await trio.sleep(BACKOFF_S)
                    continue
                state["holding"] += 1
                task = reply.body
                path = f"/v1/executions/{eid_path(task['execution_id'])}/complete"
                done = await call("POST", path, {"handle": task["handle"]})
                state["holding"] -= 1
                if done.status == 200:
                    completed.add(task["execution_id"])
                else:
                    others.append(done)

        async def restart_midway():
            while len(completed) < RESTART_AFTER:
                await trio.sleep(BACKOFF_S)
            await trio.to_thread.run_sync(own_server.restart)

        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                nursery.start_soon(restart_midway)
                for i in range(WORKERS):
                    nursery.start_soon(work, f"w{i}")
        for eid in acknowledged:
            assert (await ff.info(eid))["public_state"] == "completed"
    assert failures, "the restart should have failed some requests"
    assert others == []
    assert len(acknowledged) > RESTART_AFTER

