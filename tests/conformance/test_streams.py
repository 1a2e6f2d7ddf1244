"""Attempt output streams (spec/streams.md; spec/http-api.md § Streams), on every backend:
frames byte-exact, ids, paging, tails, close markers, per-attempt scoping, summary
documents, durability modes, caps, the bounded pool and Server-Sent Events. Time moves
only by the harness clock; waits are woken, never slept through."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from flow_helpers import assert_error, exec_url
from stream_helpers import (
    DEADLINE_S,
    append,
    appended,
    assert_increasing,
    b64,
    blocked_tail,
    closed,
    events_reply,
    fid,
    frame,
    ids_of,
    leased,
    parse_sse,
    patch,
    patch_text,
    payload_of,
    payloads,
    read,
    read_reply,
    sse_closed,
    sse_frames,
    stream_url,
    successor,
    summary,
    summary_reply,
    tail,
    tail_reply,
    texts,
    until_waiting,
)
from suspension_helpers import resume, suspended

from appliance.testing import open_harness

ALL_BYTES = bytes(range(256))
RETRY_ONCE = {"retry_policy": {"max_retries": 1,
                               "backoff": {"type": "fixed", "delay_ms": 10}}}


def nested(depth: int) -> dict[str, Any]:
    """``{"k": {"k": … {"k": 1}}}`` with ``depth`` objects."""
    doc: Any = 1
    for _ in range(depth):
        doc = {"k": doc}
    return doc


async def closed_page(ff, eid: str, idx: int = 0) -> tuple[int, str] | None:
    return closed(await read(ff, eid, idx))


# -- frames are byte-exact ----------------------------------------------------------------------

@pytest.mark.parametrize("form", ["array", "b64"])
async def test_a_frame_of_every_byte_value_reads_back_exactly(ff, form):
    eid, task = await leased(ff)
    sent = (frame("blob", list(ALL_BYTES)) if form == "array"
            else {"frame_type": "blob", "payload_b64": b64(ALL_BYTES)})
    out = await appended(ff, task, [sent])
    page = await read(ff, eid)
    [got] = page["frames"]
    assert got["id"] == out["first_id"] == out["last_id"]
    assert payload_of(got) == ALL_BYTES
    assert got["fields"]["payload"] == ALL_BYTES.decode("utf-8", "replace")
    assert (await tail(ff, eid))["frames"] == [got]


async def test_a_text_payload_round_trips_as_its_utf8_bytes(ff):
    text = "héllo — 日本語 😀 \u00a0✓ \U0001f680"
    eid, task = await leased(ff)
    await appended(ff, task, [frame("delta", text, encoding="text/plain",
                                    correlation_id="req-7", source="tool")])
    [got] = (await read(ff, eid))["frames"]
    assert payload_of(got) == text.encode()
    assert got["fields"] == {"correlation_id": "req-7", "encoding": "text/plain",
                             "frame_type": "delta", "mode": "durable", "payload": text,
                             "source": "tool", "ts": str(ff.clock.now_ms())}


async def test_a_frame_without_payload_is_empty_with_the_defaults(ff):
    eid, task = await leased(ff)
    await appended(ff, task, [{"frame_type": "tick"}])
    [got] = (await read(ff, eid))["frames"]
    assert got == {"id": f"{ff.clock.now_ms()}-0", "payload_b64": "",
                   "fields": {"encoding": "utf8", "frame_type": "tick", "mode": "durable",
                              "payload": "", "source": "worker",
                              "ts": str(ff.clock.now_ms())}}


# -- ids and ordering ---------------------------------------------------------------------------

async def test_ids_grow_within_a_millisecond_and_across_batches(ff):
    eid, task = await leased(ff)
    t0 = ff.clock.now_ms()
    assert await appended(ff, task, texts("a1", "a2", "a3")) == {
        "first_id": f"{t0}-0", "last_id": f"{t0}-2", "count": 3, "frame_count": 3}
    assert await appended(ff, task, texts("b1")) == {
        "first_id": f"{t0}-3", "last_id": f"{t0}-3", "count": 1, "frame_count": 4}
    assert await appended(ff, task, texts("c1", "c2")) == {
        "first_id": f"{t0}-4", "last_id": f"{t0}-5", "count": 2, "frame_count": 6}
    ff.clock.advance(7)
    assert await appended(ff, task, texts("d1", "d2")) == {
        "first_id": f"{t0 + 7}-0", "last_id": f"{t0 + 7}-1", "count": 2, "frame_count": 8}
    page = await read(ff, eid)
    assert ids_of(page) == [f"{t0}-{i}" for i in range(6)] + [f"{t0 + 7}-0", f"{t0 + 7}-1"]
    assert [p.decode() for p in payloads(page)] == ["a1", "a2", "a3", "b1", "c1", "c2",
                                                    "d1", "d2"]
    assert [f["fields"]["ts"] for f in page["frames"]] == [str(t0)] * 6 + [str(t0 + 7)] * 2


async def test_ids_never_go_down_when_the_clock_does(ff):
    eid, task = await leased(ff)
    ff.clock.advance(10)
    first = await appended(ff, task, texts("x", "y"))
    ff.clock.t -= 5
    second = await appended(ff, task, texts("z"))
    assert fid(second["first_id"]) > fid(first["last_id"])
    assert_increasing(ids_of(await read(ff, eid)))


# -- reading and paging -------------------------------------------------------------------------

async def seven_frames(ff) -> tuple[str, dict[str, Any], int, list[str]]:
    """Frames f0–f2 at t0, f3–f4 at t0+1, f5–f6 at t0+5: ``(eid, task, t0, ids)``."""
    eid, task = await leased(ff)
    t0 = ff.clock.now_ms()
    await appended(ff, task, texts("f0", "f1", "f2"))
    ff.clock.advance(1)
    await appended(ff, task, texts("f3", "f4"))
    ff.clock.advance(4)
    await appended(ff, task, texts("f5", "f6"))
    ids = ids_of(await read(ff, eid))
    assert len(ids) == 7
    assert_increasing(ids)
    return eid, task, t0, ids


async def test_a_read_is_inclusive_of_from_and_to(ff):
    eid, _, _, ids = await seven_frames(ff)
    assert ids_of(await read(ff, eid, **{"from": ids[1], "to": ids[4]})) == ids[1:5]
    assert ids_of(await read(ff, eid, **{"from": ids[3], "to": ids[3]})) == [ids[3]]
    assert ids_of(await read(ff, eid, **{"from": "start", "to": "end"})) == ids
    assert ids_of(await read(ff, eid, **{"from": ids[5], "to": ids[2]})) == []
    assert ids_of(await read(ff, eid, **{"from": successor(ids[6])})) == []


async def test_a_read_pages_forward_from_the_successor_of_the_last_id(ff):
    eid, _, _, ids = await seven_frames(ff)
    seen: list[str] = []
    cursor = "start"
    for expected in (3, 3, 1, 0):
        page = await read(ff, eid, **{"from": cursor, "limit": 3})
        assert page["count"] == expected, page
        seen += ids_of(page)
        if page["frames"]:
            cursor = successor(page["frames"][-1]["id"])
    assert seen == ids


async def test_a_bare_millisecond_cursor(ff):
    eid, _, t0, ids = await seven_frames(ff)
    assert ids_of(await read(ff, eid, to=str(t0))) == ids[:3]
    assert ids_of(await read(ff, eid, **{"from": str(t0 + 1), "to": str(t0 + 1)})) == ids[3:5]
    assert ids_of(await read(ff, eid, **{"from": str(t0 + 2), "to": str(t0 + 4)})) == []
    assert ids_of(await read(ff, eid, **{"from": str(t0 + 1)})) == ids[3:]


async def test_reads_default_to_100_frames_and_tails_to_50(ff):
    eid, task = await leased(ff)
    await appended(ff, task, texts(*(str(i) for i in range(150))))
    page = await read(ff, eid)
    assert [p.decode() for p in payloads(page)] == [str(i) for i in range(100)]
    assert [p.decode() for p in payloads(await tail(ff, eid))] == [str(i) for i in range(50)]
    assert (await read(ff, eid, limit=1000))["count"] == 150
    assert (await tail(ff, eid, limit=1000))["count"] == 150


async def test_an_open_stream_has_no_close_keys(ff):
    eid, task = await leased(ff)
    page = await read(ff, eid)
    assert (page["frames"], closed(page)) == ([], None)
    await appended(ff, task, texts("x"))
    assert closed(await read(ff, eid)) is None
    assert closed(await tail(ff, eid)) is None
    waiting = await ff.create(lane_id="never-claimed-lane")
    assert await read(ff, waiting) == {"frames": [], "count": 0}
    assert await read(ff, eid, 1) == {"frames": [], "count": 0}  # an attempt still to come


# -- tails --------------------------------------------------------------------------------------

async def test_a_tail_is_exclusive_of_after(ff):
    eid, _, _, ids = await seven_frames(ff)
    assert ids_of(await tail(ff, eid, after="0-0")) == ids
    assert ids_of(await tail(ff, eid, after=ids[2])) == ids[3:]
    assert ids_of(await tail(ff, eid, after=ids[2], limit=2)) == ids[3:5]
    assert ids_of(await tail(ff, eid, after=ids[6])) == []


async def test_a_tail_with_block_ms_0_answers_at_once(ff):
    eid, task = await leased(ff)
    out = await appended(ff, task, texts("x"))
    start = trio.current_time()
    with trio.fail_after(DEADLINE_S):
        page = await tail(ff, eid, after=out["last_id"], block_ms=0)
        plain = await tail(ff, eid, after=out["last_id"])
    assert trio.current_time() - start < 1.0
    assert page == plain == {"frames": [], "count": 0}


async def test_a_blocked_tail_is_woken_by_an_append(ff):
    eid, task = await leased(ff)
    first = await appended(ff, task, texts("before"))
    out: dict[str, Any] = {}

    async def write() -> None:
        out.update(await appended(ff, task, texts("after", "more")))

    page, took = await blocked_tail(ff, eid, write, after=first["last_id"])
    assert took < 1.0
    assert ids_of(page) == [out["first_id"], out["last_id"]]
    assert [p.decode() for p in payloads(page)] == ["after", "more"]
    assert closed(page) is None


async def end_by(ff, how: str, eid: str, task: dict[str, Any]) -> None:
    """End the attempt (or its lease) ``how``."""
    if how == "complete":
        reply = await ff.worker_op("complete", task)
    elif how == "fail":
        reply = await ff.worker_op("fail", task, failure_reason="boom")
    elif how == "cancel":
        reply = await ff.call("POST", exec_url(eid, "/cancel"), {"reason": "stop"})
    elif how == "revoke":
        reply = await ff.call("POST", exec_url(eid, "/revoke-lease"), {})
    else:
        raise AssertionError(how)
    assert reply.status == 200, reply


ENDS = [("complete", "attempt_success"), ("fail", "attempt_failure"),
        ("cancel", "attempt_cancelled"), ("revoke", "lease_revoked")]


@pytest.mark.parametrize("how, reason", ENDS)
async def test_a_blocked_tail_is_woken_by_the_attempt_end(ff, how, reason):
    eid, task = await leased(ff)
    first = await appended(ff, task, texts("x"))
    ff.clock.advance(3)

    async def end() -> None:
        await end_by(ff, how, eid, task)

    page, took = await blocked_tail(ff, eid, end, after=first["last_id"])
    assert took < 1.0
    assert page["frames"] == []
    assert closed(page) == (ff.clock.now_ms(), reason)


async def test_a_blocked_tail_is_woken_by_the_lease_expiry_scanner(ff):
    eid, _ = await leased(ff, lease_ttl_ms=1000)
    ff.clock.advance(1001)

    async def expire() -> None:
        await ff.tick("lease_expiry")

    page, took = await blocked_tail(ff, eid, expire)
    assert took < 1.0
    assert closed(page) == (ff.clock.now_ms(), "lease_expired")


async def test_a_blocked_tail_times_out_with_200_and_no_frames(ff):
    eid, task = await leased(ff)
    out = await appended(ff, task, texts("x"))
    start = trio.current_time()
    with trio.fail_after(DEADLINE_S):
        page = await tail(ff, eid, after=out["last_id"], block_ms=60)
    assert trio.current_time() - start >= 0.05
    assert page == {"frames": [], "count": 0}


# -- close markers ------------------------------------------------------------------------------

@pytest.mark.parametrize("how, reason", ENDS)
async def test_the_end_of_an_attempt_closes_its_stream(ff, how, reason):
    eid, task = await leased(ff)
    await appended(ff, task, texts("one", "two"))
    ff.clock.advance(3)
    await end_by(ff, how, eid, task)
    closed_at = ff.clock.now_ms()
    page = await read(ff, eid)
    assert [p.decode() for p in payloads(page)] == ["one", "two"]
    assert closed(page) == (closed_at, reason)
    assert closed(await tail(ff, eid, block_ms=30_000)) == (closed_at, reason)  # at once
    ff.clock.advance(5)
    refused = await append(ff, task, texts("late"))
    assert_error(refused, 409, "lease_revoked" if how == "revoke" else "execution_not_active")
    after = await read(ff, eid)
    assert (after["frames"], closed(after)) == (page["frames"], (closed_at, reason))


async def test_an_attempt_timeout_closes_the_stream_as_expired(ff):
    eid, task = await leased(ff, lease_ttl_ms=60_000,
                             policy={"timeout_policy": {"attempt_timeout_ms": 1000}})
    await appended(ff, task, texts("x"))
    ff.clock.advance(1001)
    await ff.tick("attempt_timeout")
    page = await read(ff, eid)
    assert closed(page) == (ff.clock.now_ms(), "expired")
    assert_error(await append(ff, task, texts("late")), 409, "execution_not_active")


async def test_lease_expiry_then_a_reclaim_closes_the_old_stream_and_opens_a_new_one(ff):
    eid, old = await leased(ff, lease_ttl_ms=1000)
    await appended(ff, old, texts("mine"))
    ff.clock.advance(1001)
    await ff.tick("lease_expiry")
    expired_at = ff.clock.now_ms()
    assert closed(await read(ff, eid)) == (expired_at, "lease_expired")
    assert_error(await append(ff, old, texts("late")), 409, "lease_expired")
    ff.clock.advance(10)
    new = await ff.claim(lane=old["lane_id"], worker="w2")
    assert (new["execution_id"], new["attempt_index"], new["attempt_type"]) == (
        eid, 1, "reclaim")
    old_page = await read(ff, eid, 0)
    assert [p.decode() for p in payloads(old_page)] == ["mine"]
    assert closed(old_page) == (ff.clock.now_ms(), "reclaimed")
    assert await read(ff, eid, 1) == {"frames": [], "count": 0}
    out = await appended(ff, new, texts("theirs"))
    assert out["frame_count"] == 1
    assert_error(await append(ff, old, texts("stale")), 409, "stale_lease")
    assert [p.decode() for p in payloads(await read(ff, eid, 1))] == ["theirs"]
    assert [p.decode() for p in payloads(await read(ff, eid, 0))] == ["mine"]


async def test_a_never_started_attempt_of_a_cancelled_execution_reads_closed(ff):
    eid = await ff.create(lane_id="never-started")
    ff.clock.advance(4)
    reply = await ff.call("POST", exec_url(eid, "/cancel"), {"reason": "no"})
    assert reply.status == 200, reply
    cancelled_at = ff.clock.now_ms()
    for idx in (0, 1, 2147483647):
        page = await read(ff, eid, idx)
        assert (page["frames"], closed(page)) == ([], (cancelled_at, "never_started")), idx
    start = trio.current_time()
    page = await tail(ff, eid, block_ms=30_000)
    assert trio.current_time() - start < 1.0
    assert closed(page) == (cancelled_at, "never_started")
    assert_error(await summary_reply(ff, eid), 404, "summary_not_found")
    events = parse_sse((await events_reply(ff, eid)).body)
    assert events == [{"event": "closed",
                       "data": {"closed_at": cancelled_at, "closed_reason": "never_started"}}]


async def test_attempts_after_the_last_of_a_completed_execution_never_start(ff):
    eid, task = await leased(ff)
    ff.clock.advance(2)
    await end_by(ff, "complete", eid, task)
    assert closed(await read(ff, eid, 0)) == (ff.clock.now_ms(), "attempt_success")
    assert closed(await read(ff, eid, 1)) == (ff.clock.now_ms(), "never_started")


async def test_a_suspension_keeps_the_stream_open_and_the_resume_writes_on(ff):
    eid, task = await leased(ff)
    await appended(ff, task, texts("before"))
    await suspended(ff, task=task)
    assert closed(await read(ff, eid)) is None
    reply = await resume(ff, eid)
    assert reply.status == 200, reply
    again = await ff.claim(lane=task["lane_id"])
    assert (again["attempt_index"], again["resumed"]) == (0, True)
    assert (await appended(ff, again, texts("after")))["frame_count"] == 2
    assert [p.decode() for p in payloads(await read(ff, eid))] == ["before", "after"]
    assert_error(await append(ff, task, texts("old")), 409, "stale_lease")


# -- one stream per attempt ---------------------------------------------------------------------

async def test_a_retry_writes_a_stream_of_its_own(ff):
    eid, first = await leased(ff, policy=RETRY_ONCE)
    await appended(ff, first, texts("a0", "b0"))
    reply = await ff.worker_op("fail", first, failure_reason="boom")
    assert reply.status == 200 and "RetryScheduled" in reply.body, reply
    failed_at = ff.clock.now_ms()
    assert reply.body["RetryScheduled"]["next_attempt_index"] == 1
    ff.clock.advance(10)
    second = await ff.claim(lane=first["lane_id"])
    assert (second["attempt_index"], second["attempt_type"]) == (1, "retry")
    assert (await appended(ff, second, texts("a1")))["frame_count"] == 1
    page0, page1 = await read(ff, eid, 0), await read(ff, eid, 1)
    assert [p.decode() for p in payloads(page0)] == ["a0", "b0"]
    assert [p.decode() for p in payloads(page1)] == ["a1"]
    assert closed(page0) == (failed_at, "attempt_failure")
    assert closed(page1) is None
    assert_error(await append(ff, first, texts("late")), 409, "stale_lease")


async def test_a_replay_writes_a_new_attempt_and_keeps_the_old_stream(ff):
    eid, task = await leased(ff)
    await appended(ff, task, texts("first run"))
    await end_by(ff, "complete", eid, task)
    done_at = ff.clock.now_ms()
    ff.clock.advance(5)
    reply = await ff.call("POST", exec_url(eid, "/replay"), {})
    assert reply.status == 200, reply
    assert await read(ff, eid, 1) == {"frames": [], "count": 0}  # may start now: open
    again = await ff.claim(lane=task["lane_id"])
    assert (again["attempt_index"], again["attempt_type"]) == (1, "replay")
    await appended(ff, again, texts("second run"))
    assert [p.decode() for p in payloads(await read(ff, eid, 1))] == ["second run"]
    old = await read(ff, eid, 0)
    assert [p.decode() for p in payloads(old)] == ["first run"]
    assert closed(old) == (done_at, "attempt_success")


# -- summary documents --------------------------------------------------------------------------

async def test_summary_patches_merge_as_json_merge_patch(ff):
    eid, task = await leased(ff)
    t0 = ff.clock.now_ms()
    out = await appended(ff, task, [patch({"a": 1, "b": {"c": 2}, "arr": [1, 2], "s": 5,
                                           "keep": "k"})])
    assert (out["summary_version"], out["count"]) == (1, 1)
    assert await summary(ff, eid) == {
        "document": {"a": 1, "b": {"c": 2}, "arr": [1, 2], "s": 5, "keep": "k"},
        "version": 1, "patch_kind": "json-merge-patch", "last_updated_ms": t0,
        "first_applied_ms": t0}
    ff.clock.advance(10)
    out = await appended(ff, task, [patch({"a": None, "b": {"d": 3}, "arr": [3],
                                           "s": {"t": 1}, "new": {"x": None, "y": 1},
                                           "gone": None})])
    assert out["summary_version"] == 2
    got = await summary(ff, eid)
    assert got["document"] == {"b": {"c": 2, "d": 3}, "arr": [3], "s": {"t": 1},
                               "keep": "k", "new": {"y": 1}}
    assert (got["version"], got["first_applied_ms"], got["last_updated_ms"]) == (
        2, t0, t0 + 10)
    ff.clock.advance(10)
    await appended(ff, task, [patch({"keep": "__ff_null__", "b": {"c": "__ff_null__"}})])
    got = await summary(ff, eid)
    assert got["document"] == {"b": {"c": None, "d": 3}, "arr": [3], "s": {"t": 1},
                               "keep": None, "new": {"y": 1}}
    assert (got["version"], got["last_updated_ms"]) == (3, t0 + 20)
    await appended(ff, task, [patch({"b": {"c": 7}, "s": "scalar"})])
    got = await summary(ff, eid)
    assert got["document"] == {"b": {"c": 7, "d": 3}, "arr": [3], "s": "scalar",
                               "keep": None, "new": {"y": 1}}
    assert "__ff_null__" not in json.dumps(got)
    frames = (await read(ff, eid))["frames"]
    assert [f["fields"]["frame_type"] for f in frames] == ["summary_patch"] * 4
    assert [f["fields"]["summary_version"] for f in frames] == ["1", "2", "3", "4"]


async def test_each_patch_of_a_batch_is_a_version_and_other_frames_are_not(ff):
    eid, task = await leased(ff)
    out = await appended(ff, task, [frame("log", "x"), patch({"n": 1}), frame("log", "y"),
                                    patch({"m": 2})])
    assert (out["count"], out["frame_count"], out["summary_version"]) == (4, 4, 2)
    frames = (await read(ff, eid))["frames"]
    assert [f["fields"].get("summary_version") for f in frames] == [None, "1", None, "2"]
    assert (await summary(ff, eid))["document"] == {"n": 1, "m": 2}
    assert "summary_version" not in await appended(ff, task, texts("z"))


async def test_summary_numbers_are_kept_exactly(ff):
    eid, task = await leased(ff)
    big, neg, odd = 2**64 + 1, -(2**70) - 3, 2**53 + 1
    await appended(ff, task, [patch_text(
        f'{{"big": {big}, "neg": {neg}, "odd": {odd}, "half": 0.5, "tenth": 0.1}}')])
    doc = (await summary(ff, eid))["document"]
    assert doc == {"big": big, "neg": neg, "odd": odd, "half": 0.5, "tenth": 0.1}
    assert type(doc["big"]) is int and type(doc["odd"]) is int
    await appended(ff, task, [patch_text(f'{{"more": {big * 3}}}')])
    doc = (await summary(ff, eid))["document"]
    assert (doc["big"], doc["more"]) == (big, big * 3)


async def test_summary_decimals_are_kept_as_written(ff):
    """No float rounding: the digits of a patch's numbers are the digits read back."""
    eid, task = await leased(ff)
    digits = ["3.141592653589793238462643", "123456789012345678901234567890.5",
              "0.1000000000000000055511151231257827"]
    text = "{" + ", ".join(f'"n{i}": {d}' for i, d in enumerate(digits)) + "}"
    await appended(ff, task, [patch_text(text)])
    response = await ff.client.get(stream_url(eid, 0, "/summary"))
    assert response.status_code == 200
    body = (await response.get_data()).decode()
    missing = [d for d in digits if d not in body]
    assert not missing, body


async def test_no_summary_before_the_first_patch(ff):
    eid, task = await leased(ff)
    assert_error(await summary_reply(ff, eid), 404, "summary_not_found")
    await appended(ff, task, texts("plain"))
    assert_error(await summary_reply(ff, eid), 404, "summary_not_found")
    await appended(ff, task, [patch({"a": 1})])
    assert (await summary(ff, eid))["version"] == 1
    assert_error(await summary_reply(ff, eid, 1), 404, "summary_not_found")


BAD_PATCHES = {
    "not json": frame("summary_patch", "not json"),
    "an array": frame("summary_patch", "[1, 2]"),
    "a string": frame("summary_patch", '"text"'),
    "a number": frame("summary_patch", "5"),
    "null": frame("summary_patch", "null"),
    "empty": frame("summary_patch", ""),
    "NaN": frame("summary_patch", '{"a": NaN}'),
    "Infinity": frame("summary_patch", '{"a": -Infinity}'),
    "17 deep": patch(nested(17)),
    "17 deep via arrays": patch({"k": [nested(15)]}),
    "not utf-8": {"frame_type": "summary_patch", "payload_b64": b64(b'{"a": "\xff"}')},
}


@pytest.mark.parametrize("case", list(BAD_PATCHES))
async def test_an_invalid_patch_is_400_and_its_batch_appends_nothing(ff, case):
    eid, task = await leased(ff)
    await appended(ff, task, [patch({"ok": 1})])
    before, before_summary = await read(ff, eid), await summary(ff, eid)
    reply = await append(ff, task, [frame("log", "fine"), patch({"ok": 2}), BAD_PATCHES[case]])
    assert_error(reply, 400, "invalid_summary_patch", names=["frames[2]"])
    assert await read(ff, eid) == before
    assert await summary(ff, eid) == before_summary
    assert (await appended(ff, task, texts("next")))["frame_count"] == 2


async def test_a_patch_16_deep_is_accepted(ff):
    eid, task = await leased(ff)
    await appended(ff, task, [patch(nested(16))])
    assert (await summary(ff, eid))["document"] == nested(16)


# -- durability modes ---------------------------------------------------------------------------

async def test_summary_mode_takes_only_summary_patches(ff):
    eid, task = await leased(ff)
    reply = await append(ff, task, [patch({"a": 1}), frame("log", "x")], mode="summary")
    assert_error(reply, 400, "invalid_input", names=["frame_type"])
    assert await read(ff, eid) == {"frames": [], "count": 0}
    assert_error(await summary_reply(ff, eid), 404, "summary_not_found")


async def test_summary_mode_keeps_the_newest_64_frames(ff):
    eid, task = await leased(ff)
    await appended(ff, task, texts("d0", "d1", "d2"))
    out = await appended(ff, task, [patch({"n": i}) for i in range(70)], mode="summary")
    assert (out["count"], out["frame_count"], out["summary_version"]) == (70, 73, 70)
    page = await read(ff, eid, limit=1000)
    assert page["count"] == 64
    assert [json.loads(p) for p in payloads(page)] == [{"n": i} for i in range(6, 70)]
    assert {f["fields"]["mode"] for f in page["frames"]} == {"summary"}
    assert (await summary(ff, eid))["document"] == {"n": 69}


async def test_durable_frames_keep_the_policy_retention_maxlen(ff):
    eid, task = await leased(ff, policy={"stream_policy": {"retention_maxlen": 5}})
    await appended(ff, task, texts("f0", "f1", "f2"))
    out = await appended(ff, task, texts("f3", "f4", "f5", "f6"))
    assert out["frame_count"] == 7
    page = await read(ff, eid)
    assert [p.decode() for p in payloads(page)] == ["f2", "f3", "f4", "f5", "f6"]
    assert (await appended(ff, task, texts("f7")))["frame_count"] == 8
    assert [p.decode() for p in payloads(await read(ff, eid))] == ["f3", "f4", "f5", "f6",
                                                                   "f7"]
    assert [p.decode() for p in payloads(await tail(ff, eid))] == ["f3", "f4", "f5", "f6",
                                                                   "f7"]


async def test_best_effort_frames_leave_reads_after_their_ttl(ff):
    eid, task = await leased(ff)
    await appended(ff, task, texts("durable-1"))
    await appended(ff, task, texts("live-1", "live-2"), mode="best_effort", ttl_ms=1000)
    ff.clock.advance(500)
    await appended(ff, task, texts("default-ttl"), mode="best_effort")
    await appended(ff, task, texts("durable-2"))
    page = await read(ff, eid)
    assert [p.decode() for p in payloads(page)] == ["durable-1", "live-1", "live-2",
                                                    "default-ttl", "durable-2"]
    assert [(f["fields"]["mode"], f["fields"].get("ttl_ms")) for f in page["frames"]] == [
        ("durable", None), ("best_effort", "1000"), ("best_effort", "1000"),
        ("best_effort", "10000"), ("durable", None)]
    ff.clock.advance(499)
    assert (await read(ff, eid))["count"] == 5
    ff.clock.advance(1)
    want = ["durable-1", "default-ttl", "durable-2"]
    assert [p.decode() for p in payloads(await read(ff, eid))] == want
    assert [p.decode() for p in payloads(await tail(ff, eid))] == want
    ff.clock.advance(10_000)
    assert [p.decode() for p in payloads(await read(ff, eid))] == ["durable-1", "durable-2"]


async def test_a_best_effort_patch_outlives_its_frame_in_the_summary(ff):
    eid, task = await leased(ff)
    out = await appended(ff, task, [patch({"live": 1})], mode="best_effort", ttl_ms=100)
    assert out["summary_version"] == 1
    ff.clock.advance(100)
    assert await read(ff, eid) == {"frames": [], "count": 0}
    got = await summary(ff, eid)
    assert (got["document"], got["version"]) == ({"live": 1}, 1)


@pytest.mark.parametrize("mode", [None, "durable", "summary"])
async def test_ttl_ms_without_best_effort_is_400(ff, mode):
    eid, task = await leased(ff)
    fields: dict[str, Any] = {"ttl_ms": 1000}
    if mode is not None:
        fields["mode"] = mode
    frames = [patch({"a": 1})] if mode == "summary" else texts("x")
    assert_error(await append(ff, task, frames, **fields), 400, "invalid_input",
                 names=["ttl_ms"])
    assert await read(ff, eid) == {"frames": [], "count": 0}


# -- caps ---------------------------------------------------------------------------------------

async def test_a_frame_over_the_frame_cap_is_413_and_nothing_is_appended(ff):
    eid, task = await leased(ff)
    limit = 65_536
    big = {"frame_type": "blob", "payload_b64": b64(b"x" * (limit + 1))}
    body = assert_error(await append(ff, task, [frame("log", "ok"), big]), 413,
                        "frame_too_large")
    assert (body["index"], body["limit_bytes"]) == (1, limit)
    assert await read(ff, eid) == {"frames": [], "count": 0}
    at_cap = {"frame_type": "blob", "payload_b64": b64(b"y" * limit)}
    assert (await appended(ff, task, [at_cap]))["count"] == 1
    assert payloads(await read(ff, eid)) == [b"y" * limit]


async def test_a_stream_over_its_lifetime_cap_is_413(backend_name, backend_options):
    options = {**backend_options, "FF_STREAM_MAX_BYTES": "100",
               "FF_STREAM_MAX_FRAME_BYTES": "64"}
    async with open_harness(backend_name, options) as ff:
        eid, task = await leased(ff)
        body = assert_error(await append(ff, task, [frame("b", "x" * 65)]), 413,
                            "frame_too_large")
        assert (body["index"], body["limit_bytes"]) == (0, 64)
        await appended(ff, task, [frame("b", "x" * 60)])
        body = assert_error(await append(ff, task, [frame("b", "y" * 20), frame("b", "y" * 21)]),
                            413, "stream_too_large")
        assert body["limit_bytes"] == 100
        assert (await appended(ff, task, [frame("b", "z" * 40)]))["frame_count"] == 2
        assert_error(await append(ff, task, [frame("b", "!")]), 413, "stream_too_large")
        assert (await appended(ff, task, [{"frame_type": "empty"}]))["frame_count"] == 3
        assert [len(p) for p in payloads(await read(ff, eid))] == [60, 40, 0]


async def test_a_batch_holds_1_to_1000_frames(ff):
    eid, task = await leased(ff)
    assert_error(await append(ff, task, texts(*["x"] * 1001)), 400, "invalid_input",
                 names=["frames"])
    assert_error(await append(ff, task, []), 400, "invalid_input", names=["frames"])
    assert await read(ff, eid) == {"frames": [], "count": 0}
    out = await appended(ff, task, texts(*["x"] * 1000))
    assert (out["count"], out["frame_count"]) == (1000, 1000)
    ms = ff.clock.now_ms()
    assert (out["first_id"], out["last_id"]) == (f"{ms}-0", f"{ms}-999")


# -- the bounded pool ---------------------------------------------------------------------------

async def test_stream_reads_past_the_pool_are_429_with_retry_after(backend_name,
                                                                   backend_options):
    options = {**backend_options, "FF_MAX_CONCURRENT_STREAM_OPS": "2"}
    async with open_harness(backend_name, options) as ff:
        eid, task = await leased(ff)
        replies: list[Any] = []

        async def one() -> None:
            replies.append(await tail_reply(ff, eid, block_ms=30_000, limit=10))

        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(one)
                while len(replies) < 3:
                    await trio.sleep(0.002)
                await until_waiting(ff, eid, 2)
                also_refused = [await read_reply(ff, eid), await events_reply(ff, eid)]
                out = await appended(ff, task, texts("wake"))  # appends are not pooled
        assert sorted(r.status for r in replies) == [200, 200, 429, 429, 429], replies
        for reply in [r for r in replies if r.status == 429] + also_refused:
            assert_error(reply, 429, "resource_exhausted", retryable=True)
            assert reply.headers.get("retry-after") == "1", reply.headers
        for reply in replies:
            if reply.status == 200:
                assert ids_of(reply.body) == [out["first_id"]]
        assert (await read(ff, eid))["count"] == 1  # the places were given back


# -- Server-Sent Events -------------------------------------------------------------------------

async def ended_with_frames(ff) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """A completed attempt with four frames: ``(eid, frames as read, close keys)``."""
    eid, task = await leased(ff)
    await appended(ff, task, texts("one", "two"))
    ff.clock.advance(1)
    await appended(ff, task, [frame("log", "three"), patch({"p": 1})])
    ff.clock.advance(1)
    await end_by(ff, "complete", eid, task)
    page = await read(ff, eid)
    assert page["count"] == 4
    return eid, page["frames"], {"closed_at": page["closed_at"],
                                 "closed_reason": page["closed_reason"]}


async def test_events_of_an_ended_attempt_are_every_frame_then_closed(ff):
    eid, frames, close = await ended_with_frames(ff)
    reply = await events_reply(ff, eid)
    assert reply.status == 200, reply
    assert reply.headers["content-type"].startswith("text/event-stream"), reply.headers
    assert reply.headers.get("cache-control") == "no-cache", reply.headers
    assert b"retry: 1000\n" in reply.body
    events = parse_sse(reply.body)
    assert sse_frames(events) == frames
    assert [e["event"] for e in events] == ["frame"] * 4 + ["closed"]
    assert sse_closed(events) == close == {"closed_at": ff.clock.now_ms(),
                                           "closed_reason": "attempt_success"}


@pytest.mark.parametrize("how", ["last_event_id", "after", "header_wins"])
async def test_events_resume_after_the_last_event_id(ff, how):
    eid, frames, close = await ended_with_frames(ff)
    second = frames[1]["id"]
    kwargs = {"last_event_id": {"last_event_id": second}, "after": {"after": second},
              "header_wins": {"after": "0-0", "last_event_id": second}}[how]
    events = parse_sse((await events_reply(ff, eid, **kwargs)).body)
    assert sse_frames(events) == frames[2:]
    assert sse_closed(events) == close
    events = parse_sse((await events_reply(ff, eid, last_event_id=frames[-1]["id"])).body)
    assert [e["event"] for e in events] == ["closed"]


async def test_events_follow_a_live_attempt_without_loss_or_duplicates(ff):
    eid, task = await leased(ff)
    got: dict[str, Any] = {}

    async def follow() -> None:
        got["reply"] = await events_reply(ff, eid)

    sent: list[str] = []
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            for batch in (["a"], ["b", "c"], [f"d{i}" for i in range(150)]):
                await until_waiting(ff, eid)
                await appended(ff, task, texts(*batch))
                sent += batch
                ff.clock.advance(1)
            await end_by(ff, "complete", eid, task)
    assert got["reply"].status == 200, got["reply"]
    events = parse_sse(got["reply"].body)
    frames = sse_frames(events)
    assert [payload_of(f).decode() for f in frames] == sent
    assert_increasing([f["id"] for f in frames])
    assert frames == (await read(ff, eid, limit=1000))["frames"]
    assert sse_closed(events)["closed_reason"] == "attempt_success"
