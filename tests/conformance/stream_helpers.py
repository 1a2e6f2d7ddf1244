"""Helpers shared by the attempt-stream conformance tests (tests/conformance/test_streams*.py).

Everything goes through the HTTP API as a worker (appending with its handle) or a reader
(reading, tailing, following events, reading the summary) would: spec/streams.md and
spec/http-api.md § Streams are the contract.
"""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import trio
from flow_helpers import exec_url

from appliance.core.admission import wake_key
from appliance.testing import Reply

#: The keys of a stream read or tail answer; the close keys only once it is closed.
PAGE_KEYS = {"frames", "count"}
CLOSE_KEYS = {"closed_at", "closed_reason"}
#: The keys of a frame as reads answer it, and of its ``fields`` when nothing optional is set.
FRAME_KEYS = {"id", "fields", "payload_b64"}
FIELD_KEYS = {"encoding", "frame_type", "mode", "payload", "source", "ts"}
SUMMARY_KEYS = {"document", "version", "patch_kind", "last_updated_ms", "first_applied_ms"}
#: How long a wait for something the test itself caused may take before the test fails.
DEADLINE_S = 10.0


# -- paths ----------------------------------------------------------------------------------

def frames_url(execution_id: str) -> str:
    return exec_url(execution_id, "/frames")


def stream_url(execution_id: str, idx: int | str = 0, suffix: str = "") -> str:
    """``…/attempts/{idx}/stream`` plus ``suffix`` (``/tail``, ``/events``, ``/summary``)."""
    return exec_url(execution_id, f"/attempts/{idx}/stream{suffix}")


def fresh_lane() -> str:
    return f"s{uuid.uuid4().hex[:12]}"


# -- frames ---------------------------------------------------------------------------------

def frame(frame_type: str = "log", payload: Any = None, **fields: Any) -> dict[str, Any]:
    """One frame of an append body (``payload`` a string or a byte list; omitted if None)."""
    body: dict[str, Any] = {"frame_type": frame_type, **fields}
    if payload is not None:
        body["payload"] = payload
    return body


def texts(*payloads: str, frame_type: str = "log") -> list[dict[str, Any]]:
    return [frame(frame_type, p) for p in payloads]


def patch(document: Any) -> dict[str, Any]:
    """A ``summary_patch`` frame carrying ``document`` as JSON text."""
    return frame("summary_patch", json.dumps(document))


def patch_text(text: str) -> dict[str, Any]:
    """A ``summary_patch`` frame carrying ``text`` exactly (to send 2**64, NaN …)."""
    return frame("summary_patch", text)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def payload_of(wire_frame: Mapping[str, Any]) -> bytes:
    """A read frame's exact bytes."""
    return base64.b64decode(wire_frame["payload_b64"])


def fid(text: str) -> tuple[int, int]:
    """A frame id ``<ms>-<seq>`` as ``(ms, seq)`` (to compare ids numerically)."""
    ms, dash, seq = text.partition("-")
    assert dash and ms.isdigit() and seq.isdigit(), text
    return int(ms), int(seq)


def successor(text: str) -> str:
    """The cursor right after a frame id (``<ms>-<seq+1>``): to page forward."""
    ms, seq = fid(text)
    return f"{ms}-{seq + 1}"


def ids_of(page: Mapping[str, Any]) -> list[str]:
    return [f["id"] for f in page["frames"]]


def payloads(page: Mapping[str, Any]) -> list[bytes]:
    return [payload_of(f) for f in page["frames"]]


def text_payloads(page: Mapping[str, Any]) -> list[str]:
    return [f["fields"]["payload"] for f in page["frames"]]


def assert_increasing(ids: Sequence[str]) -> None:
    keys = [fid(i) for i in ids]
    assert all(a < b for a, b in itertools.pairwise(keys)), ids


# -- the worker side --------------------------------------------------------------------------

async def leased(ff, lane: str | None = None, worker: str = "w1", lease_ttl_ms: int = 30_000,
                 **create_fields: Any) -> tuple[str, dict[str, Any]]:
    """A new execution on a lane of its own, claimed: ``(execution_id, task)``."""
    lane = lane or fresh_lane()
    eid = await ff.create(lane_id=lane, **create_fields)
    task = await ff.claim(lane=lane, worker=worker, lease_ttl_ms=lease_ttl_ms)
    assert task is not None and task["execution_id"] == eid, task
    return eid, task


async def append(ff, task: Mapping[str, Any], frames: Sequence[Mapping[str, Any]],
                 **fields: Any) -> Reply:
    """``POST …/frames`` with the task's handle."""
    body = {"handle": task["handle"], "frames": list(frames), **fields}
    return await ff.call("POST", frames_url(task["execution_id"]), body)


async def appended(ff, task: Mapping[str, Any], frames: Sequence[Mapping[str, Any]],
                   **fields: Any) -> dict[str, Any]:
    """An append that must succeed: its ``Appended`` body."""
    reply = await append(ff, task, frames, **fields)
    assert reply.status == 200, reply
    assert set(reply.body) == {"Appended"}, reply
    return reply.body["Appended"]


# -- readers ----------------------------------------------------------------------------------

async def read_reply(ff, eid: str, idx: int | str = 0, **query: Any) -> Reply:
    return await ff.call("GET", stream_url(eid, idx), query=query or None)


async def read(ff, eid: str, idx: int | str = 0, **query: Any) -> dict[str, Any]:
    """A stream read that must answer 200 (its body, shape checked)."""
    return page_of(await read_reply(ff, eid, idx, **query))


async def tail_reply(ff, eid: str, idx: int | str = 0, **query: Any) -> Reply:
    return await ff.call("GET", stream_url(eid, idx, "/tail"), query=query or None)


async def tail(ff, eid: str, idx: int | str = 0, **query: Any) -> dict[str, Any]:
    return page_of(await tail_reply(ff, eid, idx, **query))


async def summary_reply(ff, eid: str, idx: int | str = 0) -> Reply:
    return await ff.call("GET", stream_url(eid, idx, "/summary"))


async def summary(ff, eid: str, idx: int | str = 0) -> dict[str, Any]:
    reply = await summary_reply(ff, eid, idx)
    assert reply.status == 200, reply
    assert set(reply.body) == SUMMARY_KEYS, reply
    assert reply.body["patch_kind"] == "json-merge-patch", reply
    return reply.body


def page_of(reply: Reply) -> dict[str, Any]:
    """A read/tail answer: 200, ``frames`` + ``count`` (+ both close keys or neither)."""
    assert reply.status == 200, reply
    body = reply.body
    assert set(body) in (PAGE_KEYS, PAGE_KEYS | CLOSE_KEYS), reply
    assert body["count"] == len(body["frames"]), reply
    for f in body["frames"]:
        assert set(f) == FRAME_KEYS, f
        assert set(f["fields"]) >= FIELD_KEYS, f
        assert f["fields"]["ts"] == str(fid(f["id"])[0]), f
    return body


def closed(page: Mapping[str, Any]) -> tuple[int, str] | None:
    """``(closed_at, closed_reason)``, or None while the stream is open."""
    if "closed_at" not in page:
        assert "closed_reason" not in page, page
        return None
    return page["closed_at"], page["closed_reason"]


async def events_reply(ff, eid: str, idx: int | str = 0, *, after: str | None = None,
                       last_event_id: str | None = None,
                       headers: Mapping[str, str] | None = None) -> Reply:
    """``GET …/stream/events``, its body read while it streams (``ff.call`` reads a
    streamed body only once the response ended, and the test client buffers ten chunks,
    so a longer event stream would never end there): status, headers and the whole body
    (parsed when it is JSON)."""
    sent = dict(headers or {})
    if last_event_id is not None:
        sent["Last-Event-ID"] = last_event_id
    return await get_streamed(ff, stream_url(eid, idx, "/events"), sent,
                              {"after": after} if after is not None else None)


async def get_streamed(ff, path: str, headers: Mapping[str, str] | None = None,
                       query: Mapping[str, Any] | None = None) -> Reply:
    """A GET whose body is read chunk by chunk as the app sends it."""
    body = bytearray()
    async with ff.client.request(path, method="GET", headers=dict(headers or {}),
                                 query_string=dict(query) if query else None) as conn:
        await conn.send_complete()
        while True:
            try:
                body += await conn.receive()
            except trio.EndOfChannel:
                break
    answered = conn.headers
    assert conn.status_code is not None and answered is not None
    if (answered.get("content-type") or "").startswith("application/json"):
        return Reply(conn.status_code, json.loads(bytes(body)), answered)
    return Reply(conn.status_code, bytes(body), answered)


def parse_sse(data: bytes) -> list[dict[str, Any]]:
    """Server-Sent Events as ``{"id"?, "event", "data"}`` dicts (``data`` parsed as JSON);
    comments and ``retry:`` lines are skipped. Fails on a line it does not understand."""
    out: list[dict[str, Any]] = []
    for block in data.decode("utf-8").split("\n\n"):
        event: dict[str, Any] = {}
        for line in block.split("\n"):
            if not line or line.startswith((":", "retry:")):
                continue
            name, sep, value = line.partition(": ")
            assert sep and name in ("id", "event", "data"), line
            assert name not in event, block
            event[name] = json.loads(value) if name == "data" else value
        if event:
            assert "event" in event and "data" in event, block
            out.append(event)
    return out


def sse_frames(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The frames of parsed events; each frame event's ``id:`` is its frame's id."""
    frames = []
    for e in events:
        if e["event"] == "frame":
            assert e["id"] == e["data"]["id"], e
            frames.append(e["data"])
    return frames


def sse_closed(events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The one ``closed`` event, which must come last."""
    kinds = [e["event"] for e in events]
    assert kinds.count("closed") == 1 and kinds[-1] == "closed", kinds
    data = events[-1]["data"]
    assert set(data) == CLOSE_KEYS, data
    return data


# -- waiting ----------------------------------------------------------------------------------

def tails_waiting(ff, eid: str) -> int:
    """How many tails (and event streams) of the execution wait for a wake-up now."""
    return ff.service.work.waiting(wake_key("stream", eid))


async def until_waiting(ff, eid: str, n: int = 1) -> None:
    """Until ``n`` readers of the execution's streams wait (no fixed sleeps)."""
    with trio.fail_after(DEADLINE_S):
        while tails_waiting(ff, eid) < n:
            await trio.sleep(0.002)


async def blocked_tail(ff, eid: str, action: Any, idx: int | str = 0, **query: Any
                       ) -> tuple[dict[str, Any], float]:
    """Start a tail that blocks (``block_ms`` 30000 unless given), run ``action`` once it
    waits, and return its page and the seconds from the action's start to the answer (far
    below ``block_ms``: the action woke it, no timeout did)."""
    query.setdefault("block_ms", 30_000)
    got: dict[str, Any] = {}

    async def tailer() -> None:
        got["page"] = await tail(ff, eid, idx, **query)
        got["at"] = trio.current_time()

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tailer)
            await until_waiting(ff, eid)
            assert "page" not in got, got
            start = trio.current_time()
            await action()
    return got["page"], got["at"] - start
