"""Hostile input on every admission route, every backend: wrong types, non-finite and huge
numbers, lone surrogates, NUL, over-long strings, bad ids, unknown and missing fields,
65 dimensions, mismatched limit arrays, bodies over the cap. Each answer is a typed 4xx
``{error, kind, retryable}`` (a 400 naming the field where the body is at fault), never a
500, and nothing changes state.

Each test walks its cases inside one harness and reports every bad answer at once."""

from __future__ import annotations

import json
from typing import Any

import trio
from admission_helpers import (
    BUDGETS,
    QUOTAS,
    WORKERS,
    budget,
    budget_body,
    budget_reply,
    budget_status,
    check,
    claim,
    claim_id,
    create_budget,
    explain_reply,
    fresh_lane,
    new_id,
    non_object_bodies,
    post_raw,
    problems_of,
    quota_body,
    quota_reply,
    too_large,
    walk,
    workers_page,
)
from flow_helpers import exec_url

#: Raw JSON texts no integer field of these routes takes.
NUMBERS = ["NaN", "Infinity", "-Infinity", "1e309", str(2**64), str(2**63), "-1",
           "-9223372036854775809", "1.5", "1e400", str(2**53)]
STRINGS = ['"\\ud800"', '"\\udfff tail"', '"a\\u0000b"', json.dumps("x" * 5000)]
#: For a required field (null is not a value); OPT_… for optional ones, where null may
#: mean "not given".
NOT_A_STRING = ["5", "true", "null", "[]", "{}", "1e309"]
OPT_NOT_A_STRING = ["5", "true", "[]", "{}", "1e309"]
NOT_A_NUMBER = ['"5"', "true", "[]", "{}", "null"]
OPT_NOT_A_NUMBER = ['"5"', "true", "[]", "{}"]
NOT_A_LIST = ['"gpu"', "5", "{}", "true"]
BAD_LISTS = ['["a", 5]', '["\\ud800"]', '["a\\u0000b"]', '[null]', '[[]]',
             json.dumps(["x" * 5000])]
BAD_UUIDS = ['"not-a-uuid"', '""', '"00000000000040008000000000000000"',
             '"{fp:0}:00000000-0000-4000-8000-000000000000"', '"\\ud800"', '"a\\u0000b"',
             json.dumps("x" * 5000), "5", "null", "[]"]
BAD_PATH_IDS = ["not-a-uuid", "%00", "x" * 5000, "%F0%9F%98%80", "-1",
                "00000000000040008000000000000000", "00000000-0000-4000-8000-00000000000g",
                "%ED%A0%80"]
#: (Invalid UTF-8 in a path decodes to U+FFFD, a valid worker id, as on claim-task.)
BAD_WORKER_IDS = ["bad%20worker", "%00", "x" * 5000, "a%0Ab"]
DEADLINE_S = 60
ZERO_EID = "{fp:0}:00000000-0000-4000-8000-000000000000"


def dims_body(dims: list[str], limits: list[Any] | None = None, **fields: Any) -> dict:
    return {"budget_id": new_id(), "dimensions": dims,
            "hard_limits": limits if limits is not None else [10] * len(dims), **fields}


# -- budgets --------------------------------------------------------------------------------

async def test_hostile_budget_create_bodies(ff):
    with trio.fail_after(DEADLINE_S):
        base = budget_body(dims={"tokens": 100, "cost": 5}, soft={"tokens": 50})
        found = await walk(ff, BUDGETS, base, {
            "budget_id": BAD_UUIDS,
            "dimensions": NOT_A_LIST + BAD_LISTS + ['[]', '["", "cost"]',
                                                    json.dumps(["x" * 257, "cost"]),
                                                    '["tok\\nens", "cost"]',
                                                    '["tokens", "tokens"]'],
            "hard_limits": NOT_A_LIST + ['[1]', '[1, 2, 3]', '[]', '["1", 2]', '[1, null]']
            + [f"[1, {n}]" for n in NUMBERS],
            "soft_limits": NOT_A_LIST + ['[1]', '[1, 2, 3]', '[]', '[1, "2"]']
            + [f"[{n}, 1]" for n in NUMBERS],
            "reset_interval_ms": NUMBERS + OPT_NOT_A_NUMBER,
            "scope_type": OPT_NOT_A_STRING + STRINGS[:3],
            "scope_id": OPT_NOT_A_STRING + STRINGS[:3],
            "enforcement_mode": OPT_NOT_A_STRING + STRINGS + ['"warn"', '"Strict"', '""'],
            "on_hard_limit": OPT_NOT_A_STRING + STRINGS + ['"fail"', '"Block"', '""'],
            "on_soft_limit": OPT_NOT_A_STRING + STRINGS + ['"block"', '""'],
            "now": NUMBERS + OPT_NOT_A_NUMBER + ["253402300800000"],
            "unknown_field": ["1", '"x"'],
            "budgetId": ['"x"'],
        })
        # 65 dimensions (with 65 limits), and 64 (accepted).
        many = [f"d{i}" for i in range(65)]
        found += problems_of(await create_budget(ff, dims_body(many)), "65 dimensions",
                             ("dimensions",), 400)
        reply = await create_budget(ff, dims_body(many[:64]))
        if reply.status != 201:
            found.append(f"64 dimensions refused: {reply!r:.300}")
        reply = await create_budget(ff, dims_body(["x" * 256]))
        if reply.status != 201:
            found.append(f"a 256-byte dimension refused: {reply!r:.300}")
        # A 129-character dimension of 2-byte characters is 258 bytes.
        found += problems_of(await create_budget(ff, dims_body(["é" * 129])),
                             "258-byte dimension", ("dimensions",), 400)
        for missing in ("budget_id", "dimensions", "hard_limits"):
            body = {**base, "budget_id": new_id()}  # the walk's id stays unused
            del body[missing]
            found += problems_of(await ff.call("POST", BUDGETS, body), f"without {missing}",
                                 (missing,), 400)
        found += await non_object_bodies(ff, BUDGETS)
        found += await too_large(ff, BUDGETS, base)
        found += problems_of(await budget_reply(ff, base["budget_id"]), "nothing created",
                             status=404)
        check(found)


async def test_hostile_budget_ids_in_paths(ff):
    with trio.fail_after(DEADLINE_S):
        found: list[str] = []
        for bad in BAD_PATH_IDS:
            for method, suffix, body in (("GET", "", None), ("POST", "/usage",
                                                              {"dimensions": {"t": 1}}),
                                         ("POST", "/reset", {})):
                reply = await ff.call(method, f"{BUDGETS}/{bad}{suffix}", body)
                found += problems_of(reply, f"{method} budget {bad[:20]}{suffix}",
                                     status=400 if bad != "%ED%A0%80" else None)
        check(found)


async def test_hostile_usage_bodies(ff):
    with trio.fail_after(DEADLINE_S):
        bid = await budget(ff, {"tokens": 100, "cost": 10})
        path = f"{BUDGETS}/{bid}/usage"
        base = {"dimensions": {"tokens": 1}}
        found = await walk(ff, path, base, {
            "dimensions": NOT_A_STRING[:2] + ['[]', '["tokens"]', '"tokens"', "null"]
            + [f'{{"tokens": {n}}}' for n in NUMBERS + NOT_A_NUMBER]
            + ['{"\\ud800": 1}', '{"a\\u0000b": 1}', '{"": 1}', '{"to\\nken": 1}',
               json.dumps({"x" * 257: 1}), json.dumps({"é" * 129: 1}),
               json.dumps({f"d{i}": 1 for i in range(65)})],
            "dedup_key": OPT_NOT_A_STRING + STRINGS + ['""', json.dumps("k" * 257)],
            "handle": OPT_NOT_A_STRING + ['"\\ud800"', '"a\\u0000b"'],
            "now": NUMBERS + OPT_NOT_A_NUMBER,
            "unknown_field": ["1"],
            "dimension": ['"tokens"'],
        })
        found += problems_of(await ff.call("POST", path, {}), "without dimensions",
                             ("dimensions",), 400)
        found += await non_object_bodies(ff, path)
        found += await too_large(ff, path, base)
        status = await budget_status(ff, bid)
        if status["usage"] != {"tokens": 0, "cost": 0} or status["breach_count"]:
            found.append(f"a refused report changed the budget: {status}")
        check(found)


async def test_hostile_reset_bodies(ff):
    with trio.fail_after(DEADLINE_S):
        bid = await budget(ff)
        path = f"{BUDGETS}/{bid}/reset"
        found = await walk(ff, path, {}, {"now": NUMBERS[:5] + OPT_NOT_A_NUMBER[:3],
                                          "unknown_field": ["1"], "budget_id": ['"x"']})
        for data in (b"not json", b"[]", b"5", b'"x"', b"{", b"\xff\xfe"):
            found += problems_of(await post_raw(ff, path, data), f"reset body={data!r}")
        found += await too_large(ff, path, {})
        if (await budget_status(ff, bid))["reset_count"] != 0:
            found.append("a refused reset reset the budget")
        check(found)


async def test_hostile_policy_budget_and_quota_ids(ff):
    with trio.fail_after(DEADLINE_S):
        found: list[str] = []
        lane = fresh_lane()
        cases: list[tuple[str, Any]] = [
            ("budget_ids", "x"), ("budget_ids", 5), ("budget_ids", {}),
            ("budget_ids", ["not-a-uuid"]), ("budget_ids", [new_id(), "nope"]),
            ("budget_ids", [new_id(), 5]), ("budget_ids", [None]),
            ("budget_ids", ["\ud800"]), ("budget_ids", ["a\u0000b"]),
            ("budget_ids", [new_id() for _ in range(17)]),
            ("quota_policy_id", "not-a-uuid"), ("quota_policy_id", 5),
            ("quota_policy_id", []), ("quota_policy_id", "\ud800"),
            ("quota_policy_id", "x" * 5000),
        ]
        for field, value in cases:
            data = json.dumps({"lane_id": lane, "policy": {field: value}}).encode()
            reply = await post_raw(ff, "/v1/executions", data)
            found += problems_of(reply, f"policy.{field}={str(value)[:40]}", (field,), 400)
        reply = await ff.call("POST", "/v1/executions",
                              {"lane_id": lane, "policy": {"budget_ids": [new_id(), "nope"]}})
        if reply.status == 400 and "budget_ids[1]" not in reply.body.get("error", ""):
            found.append(f"the bad item is not named: {reply.body!r:.300}")
        if reply.status == 400 and reply.body.get("kind") != "invalid_policy_json":
            found.append(f"kind {reply.body.get('kind')!r}, not invalid_policy_json")
        reply = await ff.call("POST", "/v1/executions",
                              {"lane_id": lane, "policy": {"budget_ids": [new_id() for _ in range(16)]}})
        if reply.status != 201:
            found.append(f"16 budgets refused: {reply!r:.300}")
        # Nothing refused was created: only the 16-budget execution is claimable.
        if await claim(ff, lane) is None or await claim(ff, lane) is not None:
            found.append("a refused create created an execution")
        check(found)


# -- quotas ---------------------------------------------------------------------------------

async def test_hostile_quota_bodies(ff):
    with trio.fail_after(DEADLINE_S):
        base = quota_body(window_seconds=10, rate=5, concurrent=2)
        found = await walk(ff, QUOTAS, base, {
            "quota_policy_id": BAD_UUIDS,
            "window_seconds": NUMBERS + NOT_A_NUMBER + ["31622401"],
            "max_requests_per_window": NUMBERS + NOT_A_NUMBER + [str(2**31 + 1)],
            "max_concurrent": NUMBERS + NOT_A_NUMBER + [str(2**31 + 1)],
            "now": NUMBERS[:5] + OPT_NOT_A_NUMBER[:3],
            "unknown_field": ["1"],
            "window_ms": ["1000"],
        })
        for missing in ("quota_policy_id", "window_seconds", "max_requests_per_window",
                        "max_concurrent"):
            body = {**base, "quota_policy_id": new_id()}  # the walk's id stays unused
            del body[missing]
            found += problems_of(await ff.call("POST", QUOTAS, body), f"without {missing}",
                                 (missing,), 400)
        found += await non_object_bodies(ff, QUOTAS)
        found += await too_large(ff, QUOTAS, base)
        found += problems_of(await quota_reply(ff, base["quota_policy_id"]), "nothing created",
                             status=404)
        for bad in BAD_PATH_IDS:
            found += problems_of(await ff.call("GET", f"{QUOTAS}/{bad}"), f"GET quota {bad[:20]}",
                                 status=400 if bad != "%ED%A0%80" else None)
        check(found)


# -- grants ---------------------------------------------------------------------------------

async def test_hostile_grant_bodies(ff):
    with trio.fail_after(DEADLINE_S):
        lane = fresh_lane()
        eid = await ff.create(lane_id=lane)
        path = f"{WORKERS}/w1/claim"
        base = {"lane_id": lane, "worker_instance_id": "w1-1", "grant_ttl_ms": 5000}
        found = await walk(ff, path, base, {
            "lane_id": NOT_A_STRING + STRINGS + ['""', json.dumps("l" * 65)],
            "worker_instance_id": NOT_A_STRING + STRINGS + ['""'],
            "capabilities": NOT_A_LIST + BAD_LISTS + ['["a,b"]', '[""]'],
            "grant_ttl_ms": NUMBERS + NOT_A_NUMBER + ["0", "60001"],
            "unknown_field": ["1"],
            "lease_ttl_ms": ["1000"],
            "wait_ms": ["0"],
        })
        for missing in ("lane_id", "worker_instance_id", "grant_ttl_ms"):
            body = {k: v for k, v in base.items() if k != missing}
            found += problems_of(await ff.call("POST", path, body), f"without {missing}",
                                 (missing,), 400)
        for bad in BAD_WORKER_IDS:
            reply = await ff.call("POST", f"{WORKERS}/{bad}/claim", base)
            found += problems_of(reply, f"grant worker {bad[:20]}")
        found += await non_object_bodies(ff, path)
        found += await too_large(ff, path, base)
        if await claim_id(ff, lane) != eid:
            found.append("a refused grant reserved the execution")
        check(found)


async def test_hostile_redeem_bodies(ff):
    with trio.fail_after(DEADLINE_S):
        lane = fresh_lane()
        eid = await ff.create(lane_id=lane)
        reply = await ff.call("POST", f"{WORKERS}/w1/claim", {
            "lane_id": lane, "worker_instance_id": "w1-1", "grant_ttl_ms": 60_000})
        assert reply.status == 200, reply
        path = exec_url(eid, "/claim-grant")
        base = {"worker_id": "w1", "worker_instance_id": "w1-1"}
        found = await walk(ff, path, base, {
            "worker_id": NOT_A_STRING + STRINGS + ['""', '"bad worker"'],
            "worker_instance_id": NOT_A_STRING + STRINGS + ['""'],
            "lease_ttl_ms": NUMBERS + OPT_NOT_A_NUMBER + ["0", "86400001"],
            "unknown_field": ["1"],
            "grant_key": ['"x"'],
        })
        for missing in ("worker_id", "worker_instance_id"):
            body = {k: v for k, v in base.items() if k != missing}
            found += problems_of(await ff.call("POST", path, body), f"without {missing}",
                                 (missing,), 400)
        found += await non_object_bodies(ff, path)
        found += await too_large(ff, path, base)
        for bad in BAD_PATH_IDS[:5] + ["{fp:1}:not-a-uuid", "{fp:-1}:" + new_id()]:
            reply = await ff.call("POST", f"/v1/executions/{bad}/claim-grant", base)
            found += problems_of(reply, f"redeem eid {bad[:20]}", status=400)
        if (await ff.info(eid))["public_state"] != "waiting":
            found.append("a refused redeem claimed the execution")
        reply = await ff.call("POST", path, base)
        if reply.status != 200:
            found.append(f"the grant did not survive the hostile redeems: {reply!r:.300}")
        check(found)


async def test_hostile_reclaim_bodies(ff):
    with trio.fail_after(DEADLINE_S):
        lane = fresh_lane()
        eid = await ff.create(lane_id=lane)
        await claim(ff, lane, lease_ttl_ms=1000)
        ff.clock.advance(1001)
        await ff.tick("lease_expiry")
        path = exec_url(eid, "/reclaim")
        base = {"worker_id": "w2", "worker_instance_id": "w2-1", "lane_id": lane,
                "grant_ttl_ms": 5000}
        found = await walk(ff, path, base, {
            "worker_id": NOT_A_STRING + STRINGS + ['""', '"bad worker"'],
            "worker_instance_id": NOT_A_STRING + STRINGS + ['""'],
            "lane_id": NOT_A_STRING + STRINGS + ['""', json.dumps("l" * 65)],
            "grant_ttl_ms": NUMBERS + NOT_A_NUMBER + ["0", "60001"],
            "worker_capabilities": NOT_A_LIST + BAD_LISTS + ['[""]'],
            "unknown_field": ["1"],
            "capabilities": ['["gpu"]'],
        })
        for missing in ("worker_id", "worker_instance_id", "lane_id", "grant_ttl_ms"):
            body = {k: v for k, v in base.items() if k != missing}
            found += problems_of(await ff.call("POST", path, body), f"without {missing}",
                                 (missing,), 400)
        found += await non_object_bodies(ff, path)
        found += await too_large(ff, path, base)
        for bad in BAD_PATH_IDS[:5] + ["{fp:1}:not-a-uuid", "{fp:-1}:" + new_id()]:
            reply = await ff.call("POST", f"/v1/executions/{bad}/reclaim", base)
            found += problems_of(reply, f"reclaim eid {bad[:20]}", status=400)
        reply = await ff.call("POST", path, base)
        if reply.status != 200 or reply.body.get("status") != "granted":
            found.append(f"a refused reclaim changed the execution: {reply!r:.300}")
        check(found)


# -- workers --------------------------------------------------------------------------------

async def test_hostile_register_bodies(ff):
    with trio.fail_after(DEADLINE_S):
        path = f"{WORKERS}/w1/register"
        base = {"worker_instance_id": "w1-1", "lanes": ["a"], "capabilities": ["gpu"],
                "liveness_ttl_ms": 5000}
        found = await walk(ff, path, base, {
            "worker_instance_id": NOT_A_STRING + STRINGS + ['""'],
            "lanes": NOT_A_LIST + BAD_LISTS + ['[""]', json.dumps(["l" * 65])],
            "capabilities": NOT_A_LIST + BAD_LISTS + ['["a,b"]', '[""]'],
            "liveness_ttl_ms": NUMBERS + OPT_NOT_A_NUMBER + ["0", "999", "86400001"],
            "unknown_field": ["1"],
            "worker_id": ['"w1"'],
        })
        found += problems_of(await ff.call("POST", path, {}), "without worker_instance_id",
                             ("worker_instance_id",), 400)
        for bad in BAD_WORKER_IDS:
            reply = await ff.call("POST", f"{WORKERS}/{bad}/register", base)
            found += problems_of(reply, f"register worker {bad[:20]}")
        found += await non_object_bodies(ff, path)
        found += await too_large(ff, path, base)
        page = await workers_page(ff)
        if page["workers"]:
            found.append(f"a refused registration registered: {page}")
        check(found)


async def test_hostile_worker_list_queries(ff):
    with trio.fail_after(DEADLINE_S):
        found: list[str] = []
        # (An empty ?limit= is the default, as on every listing.)
        for limit in ("0", "1001", "-1", "NaN", "1e309", str(2**64), "1.5", "x"):
            reply = await ff.call("GET", WORKERS, query={"limit": limit})
            found += problems_of(reply, f"limit={limit}", ("limit",), 400)
        for key in ("after", "lane"):
            for value in ("\x00", "x" * 5000, "\ud800", "%", "a\nb"):
                try:
                    reply = await ff.call("GET", WORKERS, query={key: value})
                except UnicodeEncodeError:
                    continue  # the client cannot send it
                if reply.status != 200:
                    found += problems_of(reply, f"{key}={value[:20]!r}")
        check(found)


async def test_hostile_explain_ids(ff):
    with trio.fail_after(DEADLINE_S):
        found: list[str] = []
        for bad in BAD_PATH_IDS + ["{fp:1}:not-a-uuid", "{fp:-1}:" + new_id(),
                                   "{fp:70000}:" + new_id()]:
            reply = await ff.call("GET", f"/v1/executions/{bad}/explain")
            found += problems_of(reply, f"explain {bad[:20]}", status=400)
        found += problems_of(await explain_reply(ff, ZERO_EID), "explain unknown", status=404)
        check(found)


async def test_wrong_methods_on_admission_routes(ff):
    with trio.fail_after(DEADLINE_S):
        found: list[str] = []
        bid = new_id()
        for method, path in (("DELETE", BUDGETS), ("GET", BUDGETS + "/" + bid + "/usage"),
                             ("PUT", BUDGETS + "/" + bid), ("DELETE", QUOTAS + "/" + bid),
                             ("GET", WORKERS + "/w1/claim"), ("POST", WORKERS),
                             ("GET", exec_url(ZERO_EID, "/reclaim")),
                             ("POST", exec_url(ZERO_EID, "/explain"))):
            reply = await ff.call(method, path)
            found += problems_of(reply, f"{method} {path}", status=(404, 405))
        check(found)
