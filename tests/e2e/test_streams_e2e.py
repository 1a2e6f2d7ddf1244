"""Attempt output streams against a real appliance process (spec/streams.md): a SIGTERM
answers every blocked tail and ends every event stream, so the drain never waits for them;
an event stream dropped mid-way resumes from ``Last-Event-ID`` with nothing lost or
repeated."""

from __future__ import annotations

import json
import signal
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio

pytestmark = pytest.mark.e2e

TAILS = 20
FOLLOWERS = 20
DEADLINE_S = 20
#: How long a drain may take: the appliance waits up to FF_SHUTDOWN_GRACE_MS (15 s) for
#: in-flight requests; blocked tails and event streams must not make it wait at all.
EXIT_WITHIN_S = 5
GRACE_MS = 15_000


@pytest.fixture(params=["sqlite", "valkey", "postgres"])
def store(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"FF_BACKEND": request.param,
            **request.getfixturevalue(f"{request.param}_backend_options")}


def path(eid: str) -> str:
    return quote(eid, safe="")


async def leased(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """A new execution, claimed: the task with its handle."""
    reply = await client.post(f"{url}/v1/executions",
                              json={"execution_kind": "stream", "lane_id": "streams"})
    assert reply.status_code == 201, reply.text
    reply = await client.post(f"{url}/v1/workers/w/claim-task", json={
        "lane_id": "streams", "worker_instance_id": "w-1", "wait_ms": 5000})
    assert reply.status_code == 200, reply.text
    return reply.json()


async def append(client: httpx.AsyncClient, url: str, task: dict[str, Any],
                 payloads: list[str]) -> str:
    """Append one batch with the task's handle; its last frame id."""
    reply = await client.post(f"{url}/v1/executions/{path(task['execution_id'])}/frames",
                              json={"handle": task["handle"],
                                    "frames": [{"frame_type": "token", "payload": p}
                                               for p in payloads]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["Appended"]["count"] == len(payloads), reply.text
    return reply.json()["Appended"]["last_id"]


async def next_event(lines: Any) -> dict[str, str] | None:
    """The next event of a text/event-stream body (comments skipped), None at its end."""
    event: dict[str, str] = {}
    async for line in lines:
        if line == "":
            if event:
                return event
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")
    assert not event, f"the body ended inside an event: {event}"
    return None


async def next_frame(lines: Any) -> dict[str, str]:
    """The next ``frame`` event (after the ``retry:`` preamble)."""
    while (event := await next_event(lines)) is not None:
        if "event" in event:
            assert event["event"] == "frame", event
            return event
        assert event == {"retry": "1000"}, event
    raise AssertionError("the event stream ended before the next frame")


# --- shutdown ----------------------------------------------------------------------------


async def test_sigterm_answers_blocked_tails_and_ends_event_streams_then_exits_0(
        launch, client: httpx.AsyncClient, store: dict[str, str]) -> None:
    # The stream-op pool holds exactly the tails and followers: once a probe read is
    # refused (429), every one of them is inside the appliance, waiting.
    app = launch(env={**store, "FF_MAX_CONCURRENT_STREAM_OPS": str(TAILS + FOLLOWERS),
                      "FF_SHUTDOWN_GRACE_MS": str(GRACE_MS)})
    task = await leased(client, app.url)
    stream = f"{app.url}/v1/executions/{path(task['execution_id'])}/attempts/0/stream"
    last = await append(client, app.url, task, ["hello"])
    tails: list[tuple[float, httpx.Response]] = []
    followers: list[tuple[float, list[dict[str, str]]]] = []

    async def tail(readers: httpx.AsyncClient) -> None:
        while True:  # 429 while the probe holds a place: retry, as a client would
            reply = await readers.get(f"{stream}/tail",
                                      params={"after": last, "block_ms": 30000})
            if reply.status_code != 429:
                break
            await trio.sleep(0.01)
        tails.append((trio.current_time(), reply))

    async def follow(readers: httpx.AsyncClient) -> None:
        while True:
            async with readers.stream("GET", f"{stream}/events") as response:
                if response.status_code == 429:
                    continue
                assert response.status_code == 200, await response.aread()
                assert response.headers["content-type"].startswith("text/event-stream")
                events = []
                async with aclosing(response.aiter_lines()) as lines:
                    while (event := await next_event(lines)) is not None:
                        events.append(event)
                followers.append((trio.current_time(), events))
                return

    with trio.fail_after(DEADLINE_S):
        async with httpx.AsyncClient(timeout=60) as readers, trio.open_nursery() as nursery:
            for _ in range(TAILS):
                nursery.start_soon(tail, readers)
            for _ in range(FOLLOWERS):
                nursery.start_soon(follow, readers)
            while (await client.get(stream, params={"limit": 1})).status_code != 429:
                await trio.sleep(0.01)
            assert not tails and not followers
            app.signal(signal.SIGTERM)
            signalled = trio.current_time()
        code = await app.wait_exit_async(EXIT_WITHIN_S)
        exited = trio.current_time() - signalled

    assert code == 0, app.log
    assert exited < EXIT_WITHIN_S, exited
    assert len(tails) == TAILS and len(followers) == FOLLOWERS
    for answered, reply in tails:
        assert reply.status_code == 200, reply.text
        # Nothing new, and the stream is not closed: the attempt is still running.
        assert reply.json() == {"frames": [], "count": 0}, reply.text
        assert answered - signalled < EXIT_WITHIN_S
    for ended, events in followers:
        assert events[0] == {"retry": "1000"}, events
        assert [e.get("id") for e in events if e.get("event") == "frame"] == [last], events
        assert all(e.get("event") != "closed" for e in events), events
        assert ended - signalled < EXIT_WITHIN_S


# --- resume ------------------------------------------------------------------------------


async def test_event_stream_resumes_after_a_drop_from_last_event_id_without_loss_or_repeats(
        launch, client: httpx.AsyncClient, store: dict[str, str]) -> None:
    app = launch(env=store)
    task = await leased(client, app.url)
    eid = path(task["execution_id"])
    stream = f"{app.url}/v1/executions/{eid}/attempts/0/stream"
    payloads = [f"token {i}" for i in range(12)]
    await append(client, app.url, task, payloads[0:2])
    seen: list[dict[str, str]] = []
    resumed: list[dict[str, str]] = []
    with trio.fail_after(DEADLINE_S):
        async with httpx.AsyncClient(timeout=30) as browser:
            # 1. follow: two frames already there, two appended live; drop the connection
            #    after the third (the fourth may already be on its way: not seen, not lost)
            async with browser.stream("GET", f"{stream}/events",
                                      params={"after": "0-0"}) as response:
                assert response.status_code == 200, await response.aread()
                async with aclosing(response.aiter_lines()) as lines:
                    seen.append(await next_frame(lines))
                    seen.append(await next_frame(lines))
                    await append(client, app.url, task, payloads[2:4])
                    seen.append(await next_frame(lines))
            # 2. the worker goes on meanwhile
            await append(client, app.url, task, payloads[4:5])
            await append(client, app.url, task, payloads[5:9])
            # 3. reconnect as an EventSource does: the same URL, with Last-Event-ID
            async with browser.stream("GET", f"{stream}/events", params={"after": "0-0"},
                                      headers={"Last-Event-ID": seen[-1]["id"]}) as response:
                assert response.status_code == 200, await response.aread()
                async with aclosing(response.aiter_lines()) as lines:
                    while len(resumed) < 6:
                        resumed.append(await next_frame(lines))
                    await append(client, app.url, task, payloads[9:12])  # live again
                    while len(resumed) < 9:
                        resumed.append(await next_frame(lines))
                    reply = await client.post(f"{app.url}/v1/executions/{eid}/complete",
                                              json={"handle": task["handle"]})
                    assert reply.status_code == 200, reply.text
                    closed = await next_event(lines)
                    assert await next_event(lines) is None  # the response ends

    page = (await client.get(stream, params={"limit": 100})).json()
    every = [f["id"] for f in page["frames"]]
    assert len(every) == len(payloads)
    assert [e["id"] for e in seen] == every[:3]
    assert [e["id"] for e in resumed] == every[3:]  # nothing lost, nothing twice
    frames = [json.loads(e["data"]) for e in seen + resumed]
    assert [f["fields"]["payload"] for f in frames] == payloads
    assert [f["id"] for f in frames] == every
    assert closed is not None and closed["event"] == "closed", closed
    assert json.loads(closed["data"])["closed_reason"] == "attempt_success", closed
    assert json.loads(closed["data"])["closed_at"] == page["closed_at"]


async def test_a_dropped_event_stream_gives_its_pool_place_back_at_once(
        launch, client: httpx.AsyncClient) -> None:
    # One place in the pool: while a follower holds it, reads are refused; once the
    # follower drops its connection, reads are served again (not after the attempt ends).
    app = launch(env={"FF_MAX_CONCURRENT_STREAM_OPS": "1"})
    task = await leased(client, app.url)
    stream = f"{app.url}/v1/executions/{path(task['execution_id'])}/attempts/0/stream"
    await append(client, app.url, task, ["hello"])
    with trio.fail_after(DEADLINE_S):
        async with (httpx.AsyncClient(timeout=30) as browser,
                    browser.stream("GET", f"{stream}/events") as response):
            assert response.status_code == 200, await response.aread()
            async with aclosing(response.aiter_lines()) as lines:
                await next_frame(lines)
                refused = await client.get(stream)
                assert refused.status_code == 429, refused.text
                assert refused.headers["retry-after"] == "1"
        while (reply := await client.get(stream)).status_code == 429:
            await trio.sleep(0.02)
    assert reply.status_code == 200, reply.text
    assert reply.json()["count"] == 1
