"""Hostile input on every suspension route, every backend: wrong types, non-finite and
huge numbers, lone surrogates, NUL, over-long strings, bad ids, unknown fields, malformed
conditions, missing or foreign handles, bodies over the cap. Each is a typed 4xx with a
message naming what to fix; none is a 500 and none hangs; nothing changes state.

Each test walks its cases inside one harness and reports every bad answer at once."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import trio
from flow_helpers import JSON, exec_url, raw
from suspension_helpers import (
    ROTATE,
    SECRET_2,
    all_of,
    count,
    nested,
    pending_list,
    pending_waitpoint,
    public_state,
    random_id,
    running,
    signal_body,
    single,
    suspended,
)

#: Raw JSON texts no field of these routes takes.
NUMBERS = ["NaN", "Infinity", "-Infinity", "1e309", str(2**64), str(2**63), "-1",
           "-9223372036854775809", "1.5", "1e400"]
STRINGS = ['"\\ud800"', '"\\udfff tail"', '"a\\u0000b"', json.dumps("x" * 5000)]
SHAPES = ["[]", "{}", '{"a": [1, {"b": null}]}', "[" * 200 + "]" * 200]
NOT_A_STRING = ["5", "true", "null", "[]", "{}", "1e309"]
NOT_A_NUMBER = ['"5"', "true", "[]", "{}"]
DEADLINE_S = 60


def problems_of(reply, what: str, names: tuple[str, ...] = ()) -> list[str]:
    """Why ``reply`` is not a well-formed 4xx naming ``names`` (empty: it is)."""
    if not 400 <= reply.status < 500:
        return [f"{what}: status {reply.status}: {reply.body!r:.300}"]
    body = reply.body
    if not isinstance(body, Mapping) or not {"error", "kind", "retryable"} <= set(body):
        return [f"{what}: not an error object: {body!r:.300}"]
    if not isinstance(body["error"], str) or not body["error"].strip():
        return [f"{what}: empty message"]
    if len(body["error"]) > 2000:
        return [f"{what}: a {len(body['error'])}-character message (echoes the input?)"]
    missing = [n for n in names if n not in body["error"]]
    if missing:
        return [f"{what}: message does not name {missing}: {body['error']!r:.300}"]
    return []


async def post_raw(ff, path: str, data: bytes):
    return await ff.call("POST", path, data=data, headers=JSON)


async def walk(ff, path: str, base: Mapping[str, Any], fields: Mapping[str, list[str]],
               *, name_field: bool = True) -> list[str]:
    """Each ``field`` of ``base`` replaced by each raw JSON text of its list."""
    found: list[str] = []
    for field, values in fields.items():
        for value in values:
            template = {**base, field: "@"}
            reply = await post_raw(ff, path, raw(template, value))
            names = (field,) if name_field and _names_field(value) else ()
            found += problems_of(reply, f"{path} {field}={value[:40]}", names)
    return found


def _names_field(value: str) -> bool:
    """Deeply nested JSON is refused before any field is read."""
    return not value.startswith("[" * 50)


def common_bodies() -> list[bytes]:
    return [b"", b"not json", b"[]", b'"text"', b"5", b"null", b"{", b'{"a":1}{',
            b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000]


async def non_object_bodies(ff, path: str) -> list[str]:
    found: list[str] = []
    for data in common_bodies():
        found += problems_of(await post_raw(ff, path, data), f"{path} body={data[:20]!r}")
    reply = await ff.call("POST", path, data=b'{"x": 1}', headers={"content-type":
                                                                   "text/plain"})
    found += problems_of(reply, f"{path} text/plain")
    return found


def check(found: list[str]) -> None:
    assert not found, "\n".join(found)


# -- the worker routes ------------------------------------------------------------------------

async def test_hostile_suspend_bodies(ff):
    with trio.fail_after(DEADLINE_S):
        eid, task = await running(ff)
        path = exec_url(eid, "/suspend")
        base = {"handle": task["handle"], "resume_condition": single("k", "x")}
        found = await walk(ff, path, base, {
            "resume_condition": NOT_A_STRING[:3] + STRINGS + ['"Single"'],
            "waitpoints": NUMBERS[:2] + STRINGS + ['["k", 5]', '"k"', '[""]',
                                                    json.dumps(["k"] * 300)],
            "reason_code": NOT_A_STRING + STRINGS + ['"made_up"'],
            "requested_by": NOT_A_STRING + STRINGS + ['"someone"'],
            "timeout_at": NUMBERS + NOT_A_NUMBER + STRINGS,
            "timeout_ms": NUMBERS + NOT_A_NUMBER,
            "timeout_behavior": NOT_A_STRING + STRINGS + ['"skip"', '"Fail"'],
            "idempotency_key": NOT_A_STRING[:2] + STRINGS + ['""'],
            "unknown_field": ["1"],
        })
        found += await non_object_bodies(ff, path)
        assert await public_state(ff, eid) == "active"
        check(found)


async def test_hostile_resume_conditions(ff):
    deep = nested(100)
    wide = all_of(*(single(f"k{i}") for i in range(300)))
    many_keys = count(1, "DistinctSignals", [f"k{i}" for i in range(2000)])
    cases: list[Any] = [
        deep, wide, many_keys, [], 5, None, True, "", "AnyOf", {"Single": None},
        {"Single": []}, {"Single": {}}, {"Single": {"waitpoint_key": 5}},
        {"Single": {"waitpoint_key": "a\u0000b"}}, {"Single": {"waitpoint_key": "\n"}},
        {"Single": {"waitpoint_key": "x" * 257}},
        {"Single": {"waitpoint_key": "k", "matcher": "ByName"}},
        {"Single": {"waitpoint_key": "k", "matcher": {"ByName": 5}}},
        {"Single": {"waitpoint_key": "k", "matcher": {"ByName": "x", "Also": 1}}},
        {"Single": {"waitpoint_key": "k", "matcher": {"ByName": "x" * 257}}},
        {"Single": {"waitpoint_key": "k"}, "Composite": {}},
        {"Composite": None}, {"Composite": {}}, {"Composite": {"kind": 5}},
        {"Composite": {"kind": "AllOf"}}, {"Composite": {"kind": "AllOf", "members": {}}},
        {"Composite": {"kind": "AllOf", "members": [5]}},
        {"Composite": {"kind": "AllOf", "members": [single("k")], "n": 1}},
        count(10**6, "DistinctSignals", ["k"]), count(2**64, "DistinctSignals", ["k"]),
        count(-1, "DistinctSignals", ["k"]), count("5", "DistinctSignals", ["k"]),
        count(1.5, "DistinctSignals", ["k"]), count(True, "DistinctSignals", ["k"]),
        count(None, "DistinctSignals", ["k"]), count(1, None, ["k"]),
        count(1, "DistinctSignals", "k"), count(1, "DistinctSignals", [5]),
        count(1, "DistinctSignals", ["k", "k"]), count(1, "DistinctSignals", None),
        {"Composite": {"kind": "Count", "n": 1, "count_kind": "DistinctSignals"}},
        {"Composite": {"kind": "Count", "n": 1, "count_kind": "DistinctSignals",
                       "waitpoints": ["k"], "matcher": []}},
    ]
    with trio.fail_after(DEADLINE_S):
        eid, task = await running(ff)
        path = exec_url(eid, "/suspend")
        found: list[str] = []
        for condition in cases:
            reply = await ff.call("POST", path, {"handle": task["handle"],
                                                 "resume_condition": condition})
            found += problems_of(reply, f"condition {json.dumps(condition)[:60]}",
                                 ("resume_condition",))
        for text in ("NaN", "1e309", str(2**64), "-0.0", "Infinity"):
            body = raw({"handle": task["handle"], "resume_condition": {"Composite": {
                "kind": "Count", "n": "@", "count_kind": "DistinctSignals",
                "waitpoints": ["k"]}}}, text)
            found += problems_of(await post_raw(ff, path, body), f"n={text}")
        assert await public_state(ff, eid) == "active"
        check(found)


async def test_hostile_waitpoint_bodies(ff):
    with trio.fail_after(DEADLINE_S):
        eid, task = await running(ff)
        path = exec_url(eid, "/waitpoints")
        base = {"handle": task["handle"], "waitpoint_key": "k"}
        found = await walk(ff, path, base, {
            "waitpoint_key": NOT_A_STRING + STRINGS + ['""', '"\\n"', json.dumps("x" * 257)],
            "expires_in_ms": NUMBERS + NOT_A_NUMBER + ["0"],
            "unknown_field": ["1"],
        })
        found += await non_object_bodies(ff, path)
        assert (await pending_list(ff, eid)).body == []
        check(found)


async def test_missing_foreign_and_forged_handles(ff):
    with trio.fail_after(DEADLINE_S):
        eid, task = await running(ff)
        other, other_task = await running(ff)
        found: list[str] = []
        routes = {"suspend": {"resume_condition": single("k")},
                  "waitpoints": {"waitpoint_key": "k"}, "wait-children": {}}
        handles: list[Any] = [other_task["handle"], "", "ffh1.", "ffh1.AAAA", "garbage", 5,
                              None, [], {}, task["handle"] + "x", "x" * 5000]
        for route, fields in routes.items():
            path = exec_url(eid, f"/{route}")
            found += problems_of(await ff.call("POST", path, fields), f"{route} no handle",
                                 ("handle",))
            for handle in handles:
                reply = await ff.call("POST", path, {"handle": handle, **fields})
                found += problems_of(reply, f"{route} handle={str(handle)[:30]}", ("handle",))
        assert (await public_state(ff, eid), await public_state(ff, other)) == (
            "active", "active")
        assert (await pending_list(ff, eid)).body == []
        check(found)


async def test_worker_routes_refuse_bad_execution_ids(ff):
    _, task = await running(ff)
    bad = ["not-an-id", f"{{fp:99999}}:{random_id()}", "{fp:1}:not-a-uuid", "%00",
           "x" * 300, "{fp:-1}:" + random_id()]
    with trio.fail_after(DEADLINE_S):
        found: list[str] = []
        for eid in bad:
            for route, body in (("suspend", {"handle": task["handle"],
                                             "resume_condition": single("k")}),
                                ("waitpoints", {"handle": task["handle"],
                                                "waitpoint_key": "k"}),
                                ("wait-children", {"handle": task["handle"]}),
                                ("signal", signal_body({"waitpoint_id": random_id(),
                                                        "token": "k1:" + "0" * 64})),
                                ("approval", {"lane_id": "default",
                                              "waitpoint_id": random_id()}),
                                ("resume", {})):
                reply = await ff.call("POST", f"/v1/executions/{eid}/{route}", body)
                found += problems_of(reply, f"{route} eid={eid[:30]}")
            for suffix in ("/pending-waitpoints", f"/waitpoints/{random_id()}/token"):
                reply = await ff.call("GET", f"/v1/executions/{eid}{suffix}")
                found += problems_of(reply, f"GET {suffix} eid={eid[:30]}")
        check(found)


# -- signals --------------------------------------------------------------------------------

async def test_hostile_signal_bodies(ff):
    with trio.fail_after(DEADLINE_S):
        eid, _, wps = await suspended(ff, count(10_000, "DistinctSignals", ["k"]))
        path = exec_url(eid, "/signal")
        base = signal_body(wps["k"])
        long_name = json.dumps("x" * 257)
        found = await walk(ff, path, base, {
            "waitpoint_id": NOT_A_STRING + STRINGS + ['"not-a-uuid"', '""'],
            "waitpoint_token": NOT_A_STRING[:2] + ['"\\ud800"', '"a\\u0000b"',
                                                   json.dumps("k1:" + "0" * 2000)],
            "signal_name": NOT_A_STRING + STRINGS + ['""', long_name],
            "signal_category": NOT_A_STRING + STRINGS + [long_name],
            "source_type": NOT_A_STRING + STRINGS + [long_name],
            "source_identity": NOT_A_STRING + STRINGS + [long_name],
            "execution_id": ["5", "[]", '"\\ud800"', '"not-an-id"'],
            "signal_id": NOT_A_STRING[:2] + STRINGS + ['"x"', '""', '"00000000-0000"'],
            "target_scope": NOT_A_STRING + STRINGS,
            "payload": NUMBERS[:3] + ['"AQID"', "[256]", "[-1]", "[1.5]", "[NaN]",
                                      "[" + ",".join(["1"] * 10) + ",\"x\"]", "{}"],
            "payload_b64": NOT_A_STRING[:2] + ['"!!"', '"\\ud800"'],
            "payload_encoding": NOT_A_STRING[:2] + STRINGS,
            "correlation_id": NOT_A_STRING[:2] + STRINGS,
            "idempotency_key": NOT_A_STRING[:2] + STRINGS + ['""'],
            "dedup_ttl_ms": NUMBERS + NOT_A_NUMBER + ["0"],
            "created_at": NUMBERS + NOT_A_NUMBER,
            "resume_delay_ms": NUMBERS + NOT_A_NUMBER,
            "max_signals_per_execution": NUMBERS + NOT_A_NUMBER + ["1000001"],
            "now": NUMBERS[:5] + NOT_A_NUMBER,
            "signal_maxlen": ["1000"],
            "resume_policy": ["{}"],
        })
        found += await non_object_bodies(ff, path)
        for missing in ("waitpoint_id", "signal_name", "signal_category", "source_type",
                        "source_identity"):
            body = {k: v for k, v in base.items() if k != missing}
            found += problems_of(await ff.call("POST", path, body), f"without {missing}",
                                 (missing,))
        # Over the signal route's cap (256 KiB): 413 before the body is read whole.
        big = json.dumps({**base, "payload_b64": "A" * 270_000}).encode()
        reply = await post_raw(ff, path, big)
        found += problems_of(reply, "signal over 256 KiB")
        if reply.status != 413 or reply.body.get("kind") != "payload_too_large":
            found.append(f"signal over 256 KiB: {reply!r:.200}")
        # Nothing was accepted: the one real signal still appends.
        reply = await ff.call("POST", path, base)
        if reply.status != 200 or reply.body["Accepted"]["effect"] != "appended_to_waitpoint":
            found.append(f"the state changed: {reply!r:.200}")
        check(found)


async def test_a_control_route_body_over_64_kib_is_413(ff):
    eid, task = await running(ff)
    for route, body in (("suspend", {"handle": task["handle"], "resume_condition":
                                     single("k"), "idempotency_key": "x" * 70_000}),
                        ("waitpoints", {"handle": task["handle"], "waitpoint_key": "k",
                                        "pad": "x" * 70_000})):
        reply = await ff.call("POST", exec_url(eid, f"/{route}"), body)
        assert (reply.status, reply.body["kind"]) == (413, "payload_too_large"), reply
    reply = await ff.call("POST", ROTATE, {"new_kid": "k2", "new_secret_hex": "ab" * 40_000})
    assert (reply.status, reply.body["kind"]) == (413, "payload_too_large"), reply


# -- the operator routes ----------------------------------------------------------------------

async def test_hostile_approval_bodies(ff):
    with trio.fail_after(DEADLINE_S):
        eid, task, wps = await suspended(ff, single("k"))
        path = exec_url(eid, "/approval")
        base = {"lane_id": task["lane_id"], "waitpoint_id": wps["k"]["waitpoint_id"]}
        found = await walk(ff, path, base, {
            "lane_id": NOT_A_STRING + STRINGS + ['""'],
            "waitpoint_id": NOT_A_STRING + STRINGS + ['"nope"'],
            "signal_name": NOT_A_STRING + STRINGS + ['""'],
            "idempotency_suffix": NOT_A_STRING[:2] + STRINGS + ['""'],
            "signal_dedup_ttl_ms": NUMBERS + NOT_A_NUMBER + ["0"],
            "max_signals_per_execution": NUMBERS + NOT_A_NUMBER,
            "unknown_field": ["1"],
        })
        found += await non_object_bodies(ff, path)
        assert await public_state(ff, eid) == "suspended"
        check(found)


async def test_hostile_resume_bodies(ff):
    with trio.fail_after(DEADLINE_S):
        eid, _, _ = await suspended(ff)
        path = exec_url(eid, "/resume")
        found = await walk(ff, path, {}, {
            "trigger_type": NOT_A_STRING + STRINGS + ['"magic"', '""'],
            "resume_delay_ms": NUMBERS + NOT_A_NUMBER,
            "unknown_field": ["1"],
        })
        for data in common_bodies()[1:]:  # an empty body is an empty resume
            found += problems_of(await post_raw(ff, path, data), f"body={data[:20]!r}")
        assert await public_state(ff, eid) == "suspended"
        check(found)


async def test_hostile_rotation_bodies(ff):
    with trio.fail_after(DEADLINE_S):
        base = {"new_kid": "k2", "new_secret_hex": SECRET_2}
        found = await walk(ff, ROTATE, base, {
            "new_kid": NOT_A_STRING + STRINGS + ['""', '"a:b"', '"k 2"'],
            "new_secret_hex": NOT_A_STRING + STRINGS + ['""', '"abc"', '"zz" '],
            "grace_ms": ["5"],
        })
        found += await non_object_bodies(ff, ROTATE)
        _, _, wps = await suspended(ff)
        if not wps["k"]["token"].startswith("k1:"):
            found.append(f"a hostile rotation rotated: {wps['k']['token'][:4]}")
        check(found)


async def test_hostile_read_paths(ff):
    with trio.fail_after(DEADLINE_S):
        eid, task = await running(ff)
        await pending_waitpoint(ff, task, "k")
        found: list[str] = []
        for wid in ("not-a-uuid", "%00", "x" * 5000, "%F0%9F%98%80", "..", "-1"):
            reply = await ff.call("GET", exec_url(eid, f"/waitpoints/{wid}/token"))
            found += problems_of(reply, f"token wid={wid[:20]}")
        reply = await ff.call("GET", exec_url(eid, "/pending-waitpoints"),
                              query={"after": "\x00", "limit": "NaN"})
        if reply.status != 200 and problems_of(reply, "pending with query"):
            found += problems_of(reply, "pending with query")
        check(found)
