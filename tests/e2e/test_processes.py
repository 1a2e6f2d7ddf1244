"""``serve --processes N``: several processes on one port and one shared store."""

from __future__ import annotations

import os
import signal
from urllib.parse import quote

import httpx
import pytest
import trio

pytestmark = pytest.mark.e2e

SHARED = ["valkey", "postgres"]
TWO = ("serve", "--listen", "127.0.0.1:0", "--processes", "2")
LANE = "multi"
DEADLINE_S = 60


@pytest.fixture(params=SHARED)
def shared_store(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"FF_BACKEND": request.param,
            **request.getfixturevalue(f"{request.param}_backend_options")}


def children_of(pid: int) -> list[int]:
    kids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry))
        except OSError:
            continue
    return kids


async def create_batch(client: httpx.AsyncClient, url: str, n: int) -> list[str]:
    reply = await client.post(f"{url}/v1/executions/batch",
                              json={"executions": [{"lane_id": LANE}] * n})
    assert reply.status_code == 200, reply.text
    return [o["Created"]["execution_id"] for o in reply.json()["outcomes"]]


async def work(url: str, name: str, claimed: list[str], completed: list[str],
               done: trio.Event, lease_ttl_ms: int = 30_000) -> None:
    """Claim batches and complete them until ``done``; a request a dying process drops
    is given up (the lease expires and the work comes back)."""
    async with httpx.AsyncClient(timeout=30) as client:
        while not done.is_set():
            try:
                reply = await client.post(
                    f"{url}/v1/workers/{name}/claim-task",
                    json={"lane_id": LANE, "worker_instance_id": f"{name}-1", "wait_ms": 200,
                          "max_tasks": 8, "lease_ttl_ms": lease_ttl_ms})
                if reply.status_code == 204:
                    continue
                assert reply.status_code == 200, reply.text
                tasks = reply.json()["tasks"]
                claimed += [t["execution_id"] for t in tasks]
                reply = await client.post(f"{url}/v1/workers/{name}/complete", json={
                    "items": [{"execution_id": t["execution_id"], "handle": t["handle"]}
                              for t in tasks]})
                assert reply.status_code == 200, reply.text
                for task, outcome in zip(tasks, reply.json()["outcomes"], strict=True):
                    if "Completed" in outcome:
                        completed.append(task["execution_id"])
            except httpx.TransportError:
                await trio.sleep(0.05)  # the process serving it died; another serves next


async def all_completed(client: httpx.AsyncClient, url: str, ids: list[str]) -> bool:
    for eid in ids:
        reply = await client.get(f"{url}/v1/executions/{quote(eid, safe='')}/state")
        assert reply.status_code == 200, reply.text
        if reply.json() != "completed":
            return False
    return True


async def test_two_processes_complete_every_task_exactly_once(launch, client, shared_store):
    app = launch(TWO, env=shared_store)
    await app.wait_for_log_async("listening on")
    assert len(children_of(app.pid)) == 2
    claimed: list[str] = []
    completed: list[str] = []
    done = trio.Event()
    ids: list[str] = []
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(work, app.url, f"w{i}", claimed, completed, done)
            for _ in range(10):
                ids += await create_batch(client, app.url, 30)
            while len(completed) < len(ids):
                await trio.sleep(0.05)
            done.set()
    assert sorted(completed) == sorted(ids) == sorted(claimed)  # each once, none lost
    assert app.log.count(" listening on http") == 2

    assert app.stop() == 0
    assert children_of(app.pid) == []


async def test_a_process_killed_mid_batch_is_replaced_and_its_work_comes_back(
        launch, client, shared_store):
    app = launch(TWO, env=shared_store)
    await app.wait_for_log_async("listening on")
    ids = []
    for _ in range(10):
        ids += await create_batch(client, app.url, 40)
    claimed: list[str] = []
    completed: list[str] = []
    done = trio.Event()
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(work, app.url, f"w{i}", claimed, completed, done, 1000)
            while len(completed) < len(ids) // 4:
                await trio.sleep(0.01)
            victim = children_of(app.pid)[0]
            os.kill(victim, signal.SIGKILL)  # mid-claim or mid-complete, as it falls
            await app.wait_for_log_async("starting it again", timeout=10)
            while not await all_completed(client, app.url, ids):
                await trio.sleep(0.2)
            done.set()
            while app.log.count(" listening on http") < 3:  # the replacement serves too
                await trio.sleep(0.05)
    assert len(set(completed)) == len(completed)  # no task completed twice
    assert len(children_of(app.pid)) == 2
    assert app.stop() == 0


async def test_a_store_one_process_locks_refuses_several(launch):
    app = launch(TWO, wait=False)
    assert app.wait_exit() == 1
    assert "the sqlite backend serves from one process" in app.log
    assert "use --processes 1" in app.log


async def test_children_drain_when_the_parent_is_killed(launch, valkey_backend_options):
    app = launch(TWO, env={"FF_BACKEND": "valkey", **valkey_backend_options})
    await app.wait_for_log_async("listening on")
    kids = children_of(app.pid)
    assert len(kids) == 2
    app.kill()
    with trio.fail_after(10):
        while any(os.path.exists(f"/proc/{kid}") and "Z" not in state(kid) for kid in kids):
            await trio.sleep(0.05)


def state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
