"""SIGKILL the appliance around a suspension: a suspended execution, its waitpoint token and
an accepted signal survive the crash, and the resumed attempt runs to completion on the
restarted appliance (same store). With FF_WAITPOINT_HMAC_SECRET unset, the secret the first
appliance generated is the store's: tokens minted before the crash still verify."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio

pytestmark = pytest.mark.e2e

CONDITION = {"Single": {"waitpoint_key": "approval", "matcher": {"ByName": "approved"}}}
#: Every byte value, and some more: the payload must come back byte for byte.
PAYLOAD = bytes(range(256)) + b"\x00\xff approved \xe2\x9c\x93\r\n" * 40
DEADLINE_S = 20


@pytest.fixture(params=["sqlite", "valkey", "postgres"])
def store(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"FF_BACKEND": request.param,
            **request.getfixturevalue(f"{request.param}_backend_options")}


def path(eid: str) -> str:
    return quote(eid, safe="")


async def create(client: httpx.AsyncClient, url: str) -> str:
    reply = await client.post(f"{url}/v1/executions",
                              json={"lane_id": "hitl", "input_payload_b64": "aW4="})
    assert reply.status_code == 201, reply.text
    return reply.json()["Created"]["execution_id"]


async def claim(client: httpx.AsyncClient, url: str, wait_ms: int = 500) -> Any:
    """One task, or None (204) once ``wait_ms`` passed."""
    reply = await client.post(f"{url}/v1/workers/w/claim-task", json={
        "lane_id": "hitl", "worker_instance_id": "w-1", "wait_ms": wait_ms})
    assert reply.status_code in (200, 204), reply.text
    return reply.json() if reply.status_code == 200 else None


async def claim_within(client: httpx.AsyncClient, url: str) -> Any:
    with trio.fail_after(DEADLINE_S):
        while (task := await claim(client, url)) is None:
            pass
    return task


async def suspend(client: httpx.AsyncClient, url: str, task: dict[str, Any]) -> dict[str, str]:
    reply = await client.post(f"{url}/v1/executions/{path(task['execution_id'])}/suspend",
                              json={"handle": task["handle"], "resume_condition": CONDITION})
    assert reply.status_code == 200, reply.text
    [wp] = reply.json()["Suspended"]["waitpoints"]
    assert wp["waitpoint_key"] == "approval" and wp["token"], wp
    return wp


async def signal(client: httpx.AsyncClient, url: str, eid: str,
                 wp: dict[str, str]) -> httpx.Response:
    return await client.post(f"{url}/v1/executions/{path(eid)}/signal", json={
        "waitpoint_id": wp["waitpoint_id"], "waitpoint_token": wp["token"],
        "signal_name": "approved", "signal_category": "approval", "source_type": "user",
        "source_identity": "jane", "payload_b64": base64.b64encode(PAYLOAD).decode()})


def accepted(reply: httpx.Response) -> str:
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["Accepted"]["effect"] == "resume_condition_satisfied", body
    return body["Accepted"]["signal_id"]


async def state(client: httpx.AsyncClient, url: str, eid: str) -> dict[str, Any]:
    reply = await client.get(f"{url}/v1/executions/{path(eid)}")
    assert reply.status_code == 200, reply.text
    return reply.json()


async def resume_and_complete(client: httpx.AsyncClient, url: str, eid: str,
                              before: dict[str, Any], signal_id: str) -> None:
    """The resumed attempt is claimed with its signal (payload byte-exact) and completes."""
    task = await claim_within(client, url)
    assert task["execution_id"] == eid
    assert task["resumed"] is True and task["attempt_type"] == "resumed", task
    assert task["attempt_index"] == before["attempt_index"]
    assert task["lease_epoch"] == before["lease_epoch"] + 1
    [sig] = task["signals"]
    assert (sig["signal_id"], sig["signal_name"], sig["source_identity"]) == (
        signal_id, "approved", "jane")
    assert base64.b64decode(sig["payload_b64"]) == PAYLOAD
    assert bytes(sig["payload"]) == PAYLOAD
    done = await client.post(f"{url}/v1/executions/{path(eid)}/complete",
                             json={"handle": task["handle"], "result_b64": "ZG9uZQ=="})
    assert done.status_code == 200, done.text
    result = await client.get(f"{url}/v1/executions/{path(eid)}/result")
    assert (result.status_code, result.content) == (200, b"done")
    # The stale handle of the first attempt's lease is refused.
    stale = await client.post(f"{url}/v1/executions/{path(eid)}/complete",
                              json={"handle": before["handle"]})
    assert stale.status_code == 409, stale.text


async def test_a_token_from_before_a_crash_resumes_the_suspension_after_restart(
        launch, client: httpx.AsyncClient, store: dict[str, str]) -> None:
    app = launch(env=store)
    eid = await create(client, app.url)
    first = await claim_within(client, app.url)
    wp = await suspend(client, app.url, first)
    assert (await state(client, app.url, eid))["public_state"] == "suspended"
    app.kill()

    app = launch(env=store)
    assert (await state(client, app.url, eid))["public_state"] == "suspended"
    assert await claim(client, app.url, wait_ms=0) is None  # nothing runnable yet
    signal_id = accepted(await signal(client, app.url, eid, wp))
    await resume_and_complete(client, app.url, eid, first, signal_id)
    assert (await state(client, app.url, eid))["public_state"] == "completed"


async def test_a_signal_accepted_just_before_a_crash_leaves_the_task_claimable(
        launch, client: httpx.AsyncClient, store: dict[str, str]) -> None:
    app = launch(env=store)
    eid = await create(client, app.url)
    first = await claim_within(client, app.url)
    wp = await suspend(client, app.url, first)
    reply = await signal(client, app.url, eid, wp)
    app.kill()
    signal_id = accepted(reply)

    app = launch(env=store)
    await resume_and_complete(client, app.url, eid, first, signal_id)
    # The waitpoint closed with the resume: the same signal again is a plain refusal.
    again = await signal(client, app.url, eid, wp)
    assert again.status_code == 409, again.text
    assert again.json()["kind"] in ("target_not_signalable", "waitpoint_closed"), again.text


async def test_a_generated_secret_survives_the_restart(
        launch, client: httpx.AsyncClient, store: dict[str, str]) -> None:
    assert "FF_WAITPOINT_HMAC_SECRET" not in store  # the children get no FF_* but these
    app = launch(env=store)
    await app.wait_for_log_async("(generated;")
    eids = [await create(client, app.url) for _ in range(3)]
    tasks = {}
    while len(tasks) < 3:
        task = await claim_within(client, app.url)
        tasks[task["execution_id"]] = task
    waitpoints = {eid: await suspend(client, app.url, tasks[eid]) for eid in eids}
    app.kill()

    app = launch(env=store)
    # The second appliance finds the key and generates none.
    assert "(generated;" not in app.log
    for eid in eids:
        signal_id = accepted(await signal(client, app.url, eid, waitpoints[eid]))
        await resume_and_complete(client, app.url, eid, tasks[eid], signal_id)
    # A token minted after the restart is under the same kid as one from before.
    eid = await create(client, app.url)
    wp = await suspend(client, app.url, await claim_within(client, app.url))
    assert wp["token"].split(":")[0] == waitpoints[eids[0]]["token"].split(":")[0]
    forged = {**wp, "token": waitpoints[eids[0]]["token"]}  # another waitpoint's token
    reply = await signal(client, app.url, eid, forged)
    assert (reply.status_code, reply.json()["kind"]) == (400, "invalid_token"), reply.text
