"""Hostile input on every stream route, every backend: wrong types and bounds in append
bodies, bad handles, bad execution ids and attempt indices, bad query values and cursors,
unknown fields and query parameters, NUL and lone surrogates. Each answer is a typed 4xx
``{error, kind, retryable}`` (a 400 naming what is at fault where the input is), never a
500, and nothing is appended.

Each test walks its cases inside one harness and reports every bad answer at once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import trio
from admission_helpers import check, non_object_bodies, post_raw, problems_of, too_large
from flow_helpers import assert_error, raw
from stream_helpers import (
    appended,
    events_reply,
    frames_url,
    get_streamed,
    leased,
    read,
    read_reply,
    stream_url,
    summary_reply,
    tail_reply,
    texts,
)

from appliance.testing import Reply

DEADLINE_S = 60
ZERO_EID = "{fp:0}:00000000-0000-4000-8000-000000000000"
STRINGS = ['"\\ud800"', '"\\udfff tail"', '"a\\u0000b"']
NOT_A_STRING = ["5", "true", "[]", "{}", "1e309"]
#: Execution ids in a path (percent-escaped as sent): each a 400 (or 404).
BAD_PATH_IDS = ["not-a-uuid", "%00", "x" * 5000, "-1", "%F0%9F%98%80", "%ED%A0%80",
                "00000000000040008000000000000000", "{fp:0}:not-a-uuid",
                "{fp:0}:00000000-0000-4000-8000-00000000000g", "{fp:999999}:" + str(uuid.UUID(
                    int=0, version=4)), "%7Bfp%3A0%7D%3A%00"]
#: Attempt indices in a path: each a 400 naming the attempt index.
BAD_IDX = ["-1", "2147483648", "99999999999", "99999999999999999999999", "abc", "%D9%A3",
           "%EF%BC%91", "1.0", "+1", "%201", "0x1", "1e3", "%00", "%ED%A0%80", "0-0"]
#: Cursor query values no route takes.
BAD_CURSORS = ["-", "+", "abc", "1-2-3", "99999999999999999999999", "1-99999999999999999999",
               "9223372036854775808", "", "1-", "-1", "٣", "１", "0x1", " 1", "1 ", "1--2",
               "1-٣", "\x00", "1\x00", "start-0", "1.5", "START", "0-0 "]
BAD_LIMITS = ["0", "1001", "abc", "1e3", "-1", "", " 1", "1.0", "٣", "99999999999999999999999",
              "\x00", "+5"]
BAD_BLOCK_MS = ["30001", "-1", "abc", "1.5", "", "1e3", str(2**64), "٣", " 5", "+5"]


async def running(ff) -> tuple[str, dict[str, Any]]:
    """A claimed execution with one frame appended."""
    eid, task = await leased(ff)
    await appended(ff, task, texts("seed"))
    return eid, task


async def ended(ff) -> str:
    """A completed execution with one frame: its event stream ends (an accepted request
    on an open one would follow it for as long as it runs)."""
    eid, task = await running(ff)
    reply = await ff.worker_op("complete", task)
    assert reply.status == 200, reply
    return eid


async def unchanged(ff, eid: str, what: str) -> list[str]:
    """Problems if the stream holds more than its one seed frame, or has a summary."""
    found: list[str] = []
    page = await read(ff, eid, limit=1000)
    if page["count"] != 1:
        found.append(f"{what}: the stream now holds {page['count']} frames")
    reply = await summary_reply(ff, eid)
    if reply.status != 404:
        found.append(f"{what}: a summary appeared: {reply!r:.300}")
    return found


async def bad_appends(ff, eid: str, template: Mapping[str, Any], values: Sequence[str],
                      what: str, names: Sequence[str] = (),
                      status: int | Sequence[int] | None = 400) -> list[str]:
    """``template`` (its ``"@"`` replaced by each raw JSON text) posted to ``…/frames``:
    each must be refused."""
    found: list[str] = []
    for value in values:
        reply = await post_raw(ff, frames_url(eid), raw(template, value))
        found += problems_of(reply, f"{what}={value[:40]}", names, status)
    return found


def body(handle: str, frame_fields: Mapping[str, Any] | None = None,
         **fields: Any) -> dict[str, Any]:
    """An append body with one frame (``frame_type`` ``log`` unless given)."""
    return {"handle": handle, "frames": [{"frame_type": "log", **(frame_fields or {})}],
            **fields}


# -- append bodies ----------------------------------------------------------------------------

async def test_hostile_frame_fields(ff):
    with trio.fail_after(DEADLINE_S):
        eid, task = await running(ff)
        h = task["handle"]
        found: list[str] = []
        cases: dict[str, list[str]] = {
            "frame_type": ['""', json.dumps("x" * 257), "null", *NOT_A_STRING, *STRINGS],
            "payload": ["[256]", "[-1]", "[1.5]", '["a"]', "[null]", "[true]", "5", "true",
                        "{}", "[[1]]", "[1e309]", f"[{2**64}]", *STRINGS],
            "payload_b64": ['"!!!"', '"Y"', "5", "[]", "{}", "true", '"\\ud800"',
                            '"YQ==\\u0000"'],
            "encoding": ['""', json.dumps("x" * 65), *NOT_A_STRING, *STRINGS],
            "correlation_id": [json.dumps("x" * 257), *NOT_A_STRING, *STRINGS],
            "source": ['""', json.dumps("x" * 257), *NOT_A_STRING, *STRINGS],
        }
        for name, values in cases.items():
            fields = {name: "@"} if name != "frame_type" else {"frame_type": "@"}
            found += await bad_appends(ff, eid, body(h, fields), values, f"frames[0].{name}",
                                       (name,))
        found += await bad_appends(ff, eid, body(h, {"extra": "@"}), ["1", '"x"'],
                                   "frames[0].extra", ("extra",))
        for both in ({"payload": "a", "payload_b64": "YQ=="},
                     {"payload": [1], "payload_b64": "YQ=="}):
            reply = await ff.call("POST", frames_url(eid), body(h, both))
            found += problems_of(reply, f"both payloads {both}", ("payload",), 400)
        found += await bad_appends(ff, eid, {"handle": h, "frames": ["@"]},
                                   ["5", '"x"', "null", "[]", "true"], "frames[0]",
                                   ("frames",))
        found += await bad_appends(ff, eid, {"handle": h, "frames": [{"payload": "@"}]},
                                   ['"no type"'], "frames[0] without frame_type",
                                   ("frame_type",))
        found += await unchanged(ff, eid, "after the frame fields")
        check(found)


async def test_frame_field_bounds_are_accepted(ff):
    with trio.fail_after(DEADLINE_S):
        eid, task = await running(ff)
        edge = {"frame_type": "é" * 256, "encoding": "e" * 64, "correlation_id": "c" * 256,
                "source": "s" * 256, "payload": [97, 0, 98]}
        await appended(ff, task, [edge])
        got = (await read(ff, eid))["frames"][-1]
        assert got["fields"] == {"frame_type": "é" * 256, "encoding": "e" * 64,
                                 "correlation_id": "c" * 256, "source": "s" * 256,
                                 "payload": "a\u0000b", "mode": "durable",
                                 "ts": str(ff.clock.now_ms())}
        assert got["payload_b64"] == "YQBi"


async def test_hostile_append_fields(ff):
    with trio.fail_after(DEADLINE_S):
        eid, task = await running(ff)
        h = task["handle"]
        found = await bad_appends(ff, eid, {"handle": h, "frames": "@"},
                                  ['"x"', "5", "{}", "null", "[]", "true"], "frames",
                                  ("frames",))
        found += await bad_appends(ff, eid, body(h, mode="@"),
                                   ['"fast"', '""', '"DURABLE"', '"best-effort"', "5", "[]",
                                    *STRINGS], "mode", ("mode",))
        found += await bad_appends(ff, eid, body(h, mode="best_effort", ttl_ms="@"),
                                   ["0", "3600001", "1.5", "1e3", '"10"', '"NaN"', "NaN",
                                    "Infinity", "-1", str(2**64), "1e309", "true", "[]"],
                                   "ttl_ms", ("ttl_ms",))
        found += await bad_appends(ff, eid, body(h, ttl_ms="@"), ["1000"],
                                   "ttl_ms without best_effort", ("ttl_ms",))
        found += await bad_appends(ff, eid, body(h, extra="@"), ["1", "null"], "extra",
                                   ("extra",))
        found += await non_object_bodies(ff, frames_url(eid))
        found += await too_large(ff, frames_url(eid), body(h), size=16 * 1_048_576)
        found += await unchanged(ff, eid, "after the append fields")
        check(found)


async def test_hostile_handles(ff):
    with trio.fail_after(DEADLINE_S):
        eid, task = await running(ff)
        _, other = await leased(ff)
        found: list[str] = []
        reply = await ff.call("POST", frames_url(eid), {"frames": [{"frame_type": "x"}]})
        found += problems_of(reply, "no handle", ("handle",), 400)
        found += await bad_appends(ff, eid, {"handle": "@", "frames": [{"frame_type": "x"}]},
                                   ['"garbage"', '""', '"ffh1."', '"ffh1.!!!not-base64"',
                                    "5", "[]", "{}", "null", "true", *STRINGS,
                                    json.dumps("ffh1." + "A" * 5000)], "handle", (), 400)
        reply = await ff.call("POST", frames_url(eid), body(other["handle"]))
        if reply.status != 400 or reply.body.get("kind") != "invalid_handle":
            found.append(f"another execution's handle: {reply!r:.300}")
        reply = await ff.call("POST", frames_url(other["execution_id"]), body(task["handle"]))
        if reply.status != 400 or reply.body.get("kind") != "invalid_handle":
            found.append(f"a handle posted to another execution: {reply!r:.300}")
        found += await unchanged(ff, eid, "after the handles")
        other_page = await read(ff, other["execution_id"])
        if other_page["count"]:
            found.append(f"the other execution's stream took frames: {other_page!r:.300}")
        check(found)


# -- paths ------------------------------------------------------------------------------------

def read_routes(eid: str, idx: str = "0") -> list[tuple[str, str]]:
    return [(name, stream_url(eid, idx, suffix)) for name, suffix in
            (("read", ""), ("tail", "/tail"), ("events", "/events"), ("summary", "/summary"))]


async def get(ff, name: str, path: str, query: Mapping[str, Any] | None = None,
              headers: Mapping[str, str] | None = None) -> Reply:
    """A GET; event streams are read as they stream."""
    if name == "events":
        return await get_streamed(ff, path, headers, query)
    return await ff.call("GET", path, query=dict(query) if query else None,
                         headers=dict(headers) if headers else None)


async def test_hostile_execution_ids_in_paths(ff):
    with trio.fail_after(DEADLINE_S):
        eid, task = await running(ff)
        found: list[str] = []
        for bad in BAD_PATH_IDS:
            base = f"/v1/executions/{bad}"
            for name, path in [("append", f"{base}/frames")] + [
                    (n, f"{base}/attempts/0/stream{s}") for n, s in
                    (("read", ""), ("tail", "/tail"), ("events", "/events"),
                     ("summary", "/summary"))]:
                if name == "append":
                    reply = await ff.call("POST", path, body(task["handle"]))
                else:
                    reply = await get(ff, name, path)
                found += problems_of(reply, f"{name} {bad[:30]}", status=(400, 404))
        found += await unchanged(ff, eid, "after the path ids")
        check(found)


async def test_an_unknown_execution_is_404_on_every_read_route(ff):
    with trio.fail_after(DEADLINE_S):
        found: list[str] = []
        for eid in (ZERO_EID, f"{{fp:7}}:{uuid.uuid4()}"):
            for name, path in read_routes(eid):
                query = {"block_ms": "30000"} if name == "tail" else None
                start = trio.current_time()
                reply = await get(ff, name, path, query)
                if reply.status != 404 or reply.body.get("kind") != "execution_not_found":
                    found.append(f"{name} of an unknown execution: {reply!r:.300}")
                if trio.current_time() - start > 1.0:
                    found.append(f"{name} of an unknown execution waited")
        check(found)


async def test_hostile_attempt_indices(ff):
    with trio.fail_after(DEADLINE_S):
        eid = await ended(ff)
        found: list[str] = []
        for bad in BAD_IDX:
            for name, path in read_routes(eid, bad):
                found += problems_of(await get(ff, name, path), f"{name} idx={bad}",
                                     ("attempt",), 400)
        page = await read(ff, eid, 2147483647)
        if (page["frames"], page.get("closed_reason")) != ([], "never_started"):
            found.append(f"the largest attempt index: {page!r:.300}")
        check(found)


# -- queries ----------------------------------------------------------------------------------

async def test_hostile_read_queries(ff):
    with trio.fail_after(DEADLINE_S):
        eid, _ = await running(ff)
        found: list[str] = []
        for value in BAD_LIMITS:
            found += problems_of(await read_reply(ff, eid, limit=value), f"read limit={value!r}",
                                 ("limit",), 400)
        for name in ("from", "to"):
            for value in BAD_CURSORS:
                reply = await read_reply(ff, eid, **{name: value})
                found += problems_of(reply, f"read {name}={value!r}", (name,), 400)
        for unknown in ({"after": "0-0"}, {"block_ms": "0"}, {"foo": "1"}, {"From": "start"},
                        {"\x00": "1"}):
            reply = await read_reply(ff, eid, **unknown)
            found += problems_of(reply, f"read with {unknown}", status=400)
        check(found)


async def test_hostile_tail_queries(ff):
    with trio.fail_after(DEADLINE_S):
        eid, _ = await running(ff)
        found: list[str] = []
        for value in BAD_LIMITS:
            found += problems_of(await tail_reply(ff, eid, limit=value), f"tail limit={value!r}",
                                 ("limit",), 400)
        for value in BAD_BLOCK_MS:
            found += problems_of(await tail_reply(ff, eid, block_ms=value),
                                 f"tail block_ms={value!r}", ("block_ms",), 400)
        for value in [*BAD_CURSORS, "start", "end"]:
            found += problems_of(await tail_reply(ff, eid, after=value),
                                 f"tail after={value!r}", ("after",), 400)
        for unknown in ({"from": "start"}, {"to": "end"}, {"foo": "1"}):
            reply = await tail_reply(ff, eid, **unknown)
            found += problems_of(reply, f"tail with {unknown}", status=400)
        check(found)


async def test_hostile_event_and_summary_queries(ff):
    with trio.fail_after(DEADLINE_S):
        eid = await ended(ff)
        found: list[str] = []
        for value in [*BAD_CURSORS, "start", "end"]:
            found += problems_of(await events_reply(ff, eid, after=value),
                                 f"events after={value!r}", ("after",), 400)
        for value in ["abc", "start", "end", "-", "+", "1-2-3", "99999999999999999999999",
                      "1-"]:
            found += problems_of(await events_reply(ff, eid, last_event_id=value),
                                 f"events Last-Event-ID={value!r}", ("Last-Event-ID",), 400)
        for unknown in ({"limit": "5"}, {"block_ms": "1"}, {"from": "start"}):
            reply = await get(ff, "events", stream_url(eid, 0, "/events"), unknown)
            found += problems_of(reply, f"events with {unknown}", status=400)
        for unknown in ({"limit": "1"}, {"x": ""}, {"after": "0-0"}):
            reply = await get(ff, "summary", stream_url(eid, 0, "/summary"), unknown)
            found += problems_of(reply, f"summary with {unknown}", status=400)
        check(found)


async def test_query_errors_answer_the_originals_messages(ff):
    eid, _ = await running(ff)
    cases = [
        (read_reply, {"limit": "0"}, "limit must be >= 1"),
        (read_reply, {"limit": "1001"},
         "limit exceeds REST ceiling 1000; paginate via from/to for larger spans"),
        (read_reply, {"from": "-"}, "bare marker '-' is not a valid stream cursor"),
        (read_reply, {"to": "+"}, "bare marker '+' is not a valid stream cursor"),
        (read_reply, {"from": "abc"}, "invalid stream cursor"),
        (tail_reply, {"block_ms": "30001", "limit": "0"}, "block_ms exceeds 30000ms ceiling"),
        (tail_reply, {"limit": "0", "after": "start"}, "limit must be >= 1"),
        (tail_reply, {"limit": "1001"},
         "limit exceeds REST ceiling 1000; paginate via after for larger spans"),
        (tail_reply, {"after": "start"},
         "XREAD cursor must be a concrete entry id; pass '0-0' to start from the beginning"),
    ]
    for route, query, message in cases:
        assert_error(await route(ff, eid, **query), 400, "invalid_input", names=[message])


async def test_the_query_bounds_are_accepted(ff):
    eid = await ended(ff)
    for route, query in ((read_reply, {"limit": "1"}), (read_reply, {"limit": "1000"}),
                         (tail_reply, {"limit": "1000", "block_ms": "0"}),
                         (read_reply, {"from": "0", "to": "9223372036854775807"}),
                         (read_reply, {"from": "0-0", "to": "9223372036854775807-"
                                                          "9223372036854775807"}),
                         (tail_reply, {"after": "9223372036854775807-9223372036854775807"}),
                         (events_reply, {"after": "9223372036854775807-9223372036854775807"})):
        reply = await route(ff, eid, **query)
        assert reply.status == 200, (route.__name__, query, reply)



async def test_raw_query_strings(ff):
    """Escapes a client library would not produce: invalid UTF-8, NUL, repeated names."""
    with trio.fail_after(DEADLINE_S):
        eid = await ended(ff)
        found: list[str] = []
        for name, path in read_routes(eid):
            raws = {"read": ["from=%ED%A0%80", "to=%FF", "limit=%00", "from=%00&to=end"],
                    "tail": ["after=%ED%A0%80", "block_ms=%FF", "limit=1%00", "after=1-%00"],
                    "events": ["after=%ED%A0%80", "after=%00", "after=%FF"],
                    "summary": ["%00=1", "%ED%A0%80="]}[name]
            for query in raws + ["%00=1", "x=%ED%A0%80"]:
                found += problems_of(await get(ff, name, f"{path}?{query}"),
                                     f"{name}?{query}", status=400)
        check(found)


async def test_hostile_summary_patches(ff):
    """Patches that are JSON text but hold what no store keeps exactly: 400, never 500."""
    with trio.fail_after(DEADLINE_S):
        eid, task = await running(ff)
        found: list[str] = []
        for text in ['{"a": "\\ud800"}', '{"\\udfff": 1}', '{"a": ["x\\udc00y"]}',
                     '{"a": 1e400}', '{"a": -1e309}', '{"a": {"b": 1E999}}', '{"a": NaN}',
                     '{"a": Infinity}', '{"a": 1}x', "\ufeff{}", "{} {}"]:
            reply = await ff.call("POST", frames_url(eid), body(task["handle"], {
                "frame_type": "summary_patch", "payload": text}))
            found += problems_of(reply, f"patch {text!r}", ("frames[0]",), 400)
            if reply.status == 400 and reply.body.get("kind") != "invalid_summary_patch":
                found.append(f"patch {text!r}: kind {reply.body.get('kind')!r}")
        found += await unchanged(ff, eid, "after the patches")
        check(found)
