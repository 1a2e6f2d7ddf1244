"""Hostile input on every flow route: wrong types, non-finite and huge numbers, 2**64,
unicode edge cases (lone surrogates, NUL, very long strings), bad ids, unknown fields,
a path id that is not the body's flow_id, too many nodes, bodies past the caps.

Never a 500: always a typed 4xx ``{error, kind, retryable}`` whose message names what
to fix; a refused request changes nothing."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import trio
from flow_helpers import (
    JSON,
    add_member,
    assert_client_error,
    assert_error,
    b64,
    create_flow,
    describe,
    flow_url,
    id_on,
    new_edge_id,
    new_flow_id,
    new_member,
    partition_of,
    raw,
    stage_ok,
    submit_dag,
)

#: Raw JSON values put in every field of every flow route.
VALUES = {
    "null": "null", "true": "true", "zero": "0", "minus_one": "-1", "fraction": "1.5",
    "two_53_plus_1": str(2**53 + 1), "two_63": str(2**63), "two_64": str(2**64),
    "huge_digits": "9" * 400, "overflow": "1e309", "nan": "NaN", "infinity": "Infinity",
    "minus_infinity": "-Infinity", "string": '"x"', "empty": '""', "array": "[]",
    "object": "{}", "surrogate": '"\\ud800"', "low_surrogate": '"a\\udfffb"',
    "nul": '"a\\u0000b"', "long": json.dumps("y" * 5000),
    "unicode": json.dumps("ключ-\U0001F680-\u202e-e\u0301"),
}
NOT_FINITE = {"nan", "infinity", "minus_infinity", "overflow", "huge_digits"}
BAD_TEXT = {"surrogate", "low_surrogate", "nul"}
TEXTS = {"string", "empty", "long", "unicode"}


@dataclass(frozen=True)
class Field:
    """How a field takes values: the ones it may accept (others must be a 400 naming
    it); ``None`` accepts anything (only "never a 500" is checked)."""

    name: str
    accepts: frozenset[str] | None


def ids(optional: bool = False) -> frozenset[str]:
    return frozenset({"null"} if optional else set())


def ints(lo: int, hi: int, optional: bool) -> frozenset[str]:
    ok = {v for v in ("zero", "minus_one", "two_53_plus_1", "two_63", "two_64")
          if lo <= {"zero": 0, "minus_one": -1, "two_53_plus_1": 2**53 + 1,
                    "two_63": 2**63, "two_64": 2**64}[v] <= hi}
    return frozenset(ok | ({"null"} if optional else set()))


def texts(optional: bool, *, empty: bool = True, long: bool = False) -> frozenset[str]:
    ok = {"string", "unicode"} | ({"empty"} if empty else set()) | ({"long"} if long else set())
    return frozenset(ok | ({"null"} if optional else set()))


REVISION_MAX = 2**53
TIME_MAX = 253_402_300_799_999


@dataclass
class World:
    flow_id: str
    other_flow_id: str
    a: str
    b: str
    c: str
    edge_id: str
    revision: int


async def world(ff) -> World:
    """A flow with members a, b, c and a staged (not applied) edge a → b; and a second
    flow (for cancels)."""
    flow_id = await create_flow(ff)
    a, b, c = [await new_member(ff, flow_id, lane_id=k) for k in "abc"]
    edge_id, revision = await stage_ok(ff, flow_id, a, b)
    return World(flow_id, await create_flow(ff), a, b, c, edge_id, revision)


def routes(w: World) -> list[tuple[str, dict[str, Any], list[Field]]]:
    """(path, a valid body, its fields) of every flow POST route."""
    flow = [Field("flow_id", ids())]
    return [
        ("/v1/flows", {"flow_kind": "k", "namespace": "n"}, [
            Field("flow_id", ids(optional=True)),
            Field("flow_kind", texts(False, empty=False)),
            Field("namespace", texts(False)),
            Field("nodes", frozenset({"null", "array"})),
            Field("edges", frozenset({"null", "array"})),
            Field("groups", frozenset({"null", "object"})),
            Field("now", ints(0, TIME_MAX, True)),
        ]),
        (flow_url(w.flow_id, "/members"), {"flow_id": w.flow_id, "execution_id": w.c}, [
            *flow, Field("execution_id", ids()), Field("now", ints(0, TIME_MAX, True))]),
        (flow_url(w.flow_id, "/edges"), {
            "flow_id": w.flow_id, "edge_id": str(uuid.uuid4()), "upstream_execution_id": w.a,
            "downstream_execution_id": w.c, "expected_graph_revision": w.revision}, [
            *flow, Field("edge_id", ids()), Field("upstream_execution_id", ids()),
            Field("downstream_execution_id", ids()),
            Field("expected_graph_revision", ints(0, REVISION_MAX, False)),
            Field("dependency_kind", texts(False)), Field("data_passing_ref", texts(True)),
            Field("now", ints(0, TIME_MAX, True))]),
        (flow_url(w.flow_id, "/edges/apply"), {
            "flow_id": w.flow_id, "edge_id": w.edge_id, "upstream_execution_id": w.a,
            "downstream_execution_id": w.b, "graph_revision": w.revision}, [
            *flow, Field("edge_id", ids()), Field("upstream_execution_id", ids()),
            Field("downstream_execution_id", ids()),
            Field("graph_revision", ints(0, REVISION_MAX, True)),
            Field("dependency_kind", texts(True)), Field("data_passing_ref", texts(True)),
            Field("now", ints(0, TIME_MAX, True))]),
        (flow_url(w.flow_id, "/edge-groups"), {
            "flow_id": w.flow_id, "downstream_execution_id": w.c, "policy": "quorum", "k": 2}, [
            *flow, Field("downstream_execution_id", ids()), Field("policy", frozenset()),
            Field("k", frozenset()), Field("on_satisfied", frozenset({"null"}))]),
        (flow_url(w.other_flow_id, "/cancel"), {"flow_id": w.other_flow_id,
                                                "cancellation_policy": "let_run"}, [
            *flow, Field("cancellation_policy", frozenset()),
            Field("reason", texts(False, long=True)), Field("now", ints(0, TIME_MAX, True))]),
    ]


def check(reply, field: Field, value: str) -> None:
    """Never a 500; a value the field cannot take is a 400 naming the field."""
    assert reply.status < 500, (field.name, value, reply)
    if reply.status >= 400:
        assert_client_error(reply)
    if field.accepts is None or value in field.accepts:
        return
    assert reply.status == 400, (field.name, value, reply)
    kinds = (("invalid_json", "invalid_input") if value in NOT_FINITE
             else ("invalid_json",) if value in BAD_TEXT else ("invalid_input",))
    body = assert_error(reply, 400, kinds)
    assert field.name in body["error"], (field.name, value, reply)


async def test_every_field_of_every_flow_route_refuses_what_it_cannot_take(ff):
    w = await world(ff)
    for path, valid, fields in routes(w):
        for field in fields:
            for name, value in VALUES.items():
                body = raw({**valid, field.name: "@"}, value)
                reply = await ff.call("POST", path, data=body, headers=JSON)
                check(reply, field, name)


async def test_refused_requests_change_nothing(ff):
    w = await world(ff)
    before = await describe(ff, w.flow_id)
    for path, valid, fields in routes(w)[1:]:
        for field in fields:
            for name, value in VALUES.items():
                if field.accepts is not None and name not in field.accepts:
                    reply = await ff.call("POST", path, data=raw({**valid, field.name: "@"},
                                                                 value), headers=JSON)
                    assert reply.status == 400, (path, field.name, name, reply)
        assert_error(await ff.call("POST", path, {**valid, "bogus": 1}), 400,
                     "invalid_input", names=["bogus"])
    assert await describe(ff, w.flow_id) == before
    assert (await describe(ff, w.other_flow_id))["state"] == "open"
    assert [e["state"] for e in before["edges"]] == ["staged"]


async def test_unknown_fields_are_refused_on_every_route_and_inside_nodes_edges_groups(ff):
    w = await world(ff)
    for path, valid, _fields in routes(w):
        body = assert_error(await ff.call("POST", path, {**valid, "Flow_Id": w.flow_id}), 400,
                            "invalid_input", names=["Flow_Id"])
        assert "remove" in body["error"]
    dag = {"nodes": [{"key": "a"}, {"key": "b"}], "edges": [{"from": "a", "to": "b"}],
           "groups": {"b": {"policy": "any_of"}}}
    for where, bad in [("nodes[1]", {**dag, "nodes": [{"key": "a"}, {"key": "b", "x": 1}]}),
                       ("edges[0]", {**dag, "edges": [{"from": "a", "to": "b", "x": 1}]}),
                       ("groups", {**dag, "groups": {"b": {"policy": "any_of", "x": 1}}})]:
        assert_error(await ff.call("POST", "/v1/flows", bad), 400, "invalid_input",
                     names=["'x'", where])


async def test_a_path_flow_id_that_is_not_the_bodys_is_refused_on_every_route(ff):
    w = await world(ff)
    before = await describe(ff, w.flow_id)
    for path, valid, _fields in routes(w)[1:]:
        for other in (w.other_flow_id if "cancel" not in path else w.flow_id, new_flow_id()):
            reply = await ff.call("POST", path, {**valid, "flow_id": other})
            assert_error(reply, 400, "invalid_input", names=["flow_id"])
    assert await describe(ff, w.flow_id) == before
    assert (await describe(ff, w.other_flow_id))["state"] == "open"


BAD_PATH_IDS = ["nope", "%00", "%ED%A0%80", "%F0%9F%98%80", "..", "x" * 2000,
                "{00000000-0000-0000-0000-000000000000}", "00000000-0000-0000-0000-00000000000g",
                "00000000-0000-0000-0000-0000000000001", "00000000_0000_0000_0000_000000000000",
                "%7Bfp:1%7D:00000000-0000-0000-0000-000000000000"]


async def test_bad_path_ids_are_typed_4xx_on_every_route(ff):
    w = await world(ff)
    for bad in BAD_PATH_IDS:
        reply = await ff.call("GET", f"/v1/flows/{bad}")
        assert_error(reply, 400, "invalid_input", names=["flow_id"])
        for path, valid, _fields in routes(w)[1:]:
            suffix = path.split(w.flow_id if w.flow_id in path else w.other_flow_id)[1]
            reply = await ff.call("POST", f"/v1/flows/{bad}{suffix}", valid)
            assert_error(reply, 400, "invalid_input", names=["flow_id"])


async def test_bad_execution_and_edge_ids_are_400s_naming_the_field(ff):
    w = await world(ff)
    partition = partition_of(ff, w.flow_id)
    bad_ids = [f"{{fp:{partition}}}:nope", "{fp:65536}:" + str(uuid.uuid4()),
               "{fp:-1}:" + str(uuid.uuid4()), f"{{fp:{partition}}}" + str(uuid.uuid4()),
               str(uuid.uuid4()), f"{{fp:{partition}}}:{uuid.uuid4()}x", "{fp:٣}:" + str(
                   uuid.uuid4())]
    for bad in bad_ids:
        assert_error(await add_member(ff, w.flow_id, bad), 400, "invalid_input",
                     names=["execution_id"])
        reply = await ff.call("POST", flow_url(w.flow_id, "/edges"), {
            "flow_id": w.flow_id, "edge_id": new_edge_id(), "upstream_execution_id": w.a,
            "downstream_execution_id": bad, "expected_graph_revision": w.revision})
        assert_error(reply, 400, "invalid_input", names=["downstream_execution_id"])
    for bad in ["nope", w.a, "", "0" * 36]:
        reply = await ff.call("POST", flow_url(w.flow_id, "/edges/apply"), {
            "flow_id": w.flow_id, "edge_id": bad, "upstream_execution_id": w.a,
            "downstream_execution_id": w.b})
        assert_error(reply, 400, "invalid_input", names=["edge_id"])


async def test_ids_on_another_partition_are_400s_naming_the_partition(ff):
    w = await world(ff)
    elsewhere = id_on((partition_of(ff, w.flow_id) + 1) % ff.config.partitions.flow)
    for path, valid, _fields in routes(w)[1:5]:
        for field in ("execution_id", "upstream_execution_id", "downstream_execution_id"):
            if field in valid:
                reply = await ff.call("POST", path, {**valid, field: elsewhere})
                assert_error(reply, 400, "invalid_input", names=[field, "partition"])


async def test_bodies_that_are_not_objects_or_not_json_are_refused(ff):
    w = await world(ff)
    for path, _valid, _fields in routes(w):
        for data in (b"[]", b'"x"', b"5", b"null", b"{", b"{\"flow_id\": }", b"\xff\xfe",
                     b"[" * 10_000):
            reply = await ff.call("POST", path, data=data, headers=JSON)
            assert_error(reply, 400, ("invalid_json", "invalid_input"))
        reply = await ff.call("POST", path, data=b'{"a": 1}',
                              headers={"content-type": "text/plain"})
        assert_error(reply, 415, "unsupported_media_type", names=["application/json"])
    for path, _valid, _fields in routes(w)[1:]:
        assert_error(await ff.call("POST", path), 400, "invalid_input", names=["is required"])


async def test_wrong_methods_are_405(ff):
    w = await world(ff)
    for method, path in [("GET", flow_url(w.flow_id, "/members")),
                         ("PUT", flow_url(w.flow_id)), ("DELETE", "/v1/flows"),
                         ("GET", flow_url(w.flow_id, "/cancel"))]:
        assert_error(await ff.call(method, path), 405, "method_not_allowed")


# -- sizes ---------------------------------------------------------------------------------------


async def test_10001_nodes_are_refused_naming_the_cap(ff):
    flow_id = new_flow_id()
    reply = await ff.call("POST", "/v1/flows", {
        "flow_id": flow_id, "nodes": [{"key": f"n{i}"} for i in range(10_001)]})
    assert_error(reply, 400, "invalid_input", names=["nodes", "10000"])
    assert (await ff.call("GET", flow_url(flow_id))).status == 404


async def test_the_largest_dag_over_the_normal_body_cap_is_accepted(ff):
    pad = b64(bytes(range(90)))
    nodes = [{"key": f"n{i}", "lane_id": "big", "input_payload_b64": pad}
             for i in range(10_000)]
    edges = [{"from": "n0", "to": f"n{i}"} for i in range(1, 100)]
    body = {"nodes": nodes, "edges": edges}
    data = json.dumps(body).encode()
    assert 1_048_576 < len(data) < 16 * 1_048_576  # over 1 MiB, under the flow route's cap
    reply = await ff.call("POST", "/v1/flows", data=data, headers=JSON)
    assert reply.status == 201, reply
    created = reply.body["Created"]
    assert len(created["executions"]) == 10_000 and created["graph_revision"] == 10_099
    flow = await describe(ff, created["flow_id"])
    assert (flow["node_count"], flow["edge_count"]) == (10_000, 99)


async def test_a_dag_body_over_16_mib_is_413(ff):
    data = json.dumps({"nodes": [{"key": "a", "input_payload_b64": "A" * (17 * 1_048_576)}]})
    reply = await ff.call("POST", "/v1/flows", data=data.encode(), headers=JSON)
    body = assert_error(reply, 413, "payload_too_large")
    assert body.get("limit_bytes", 16 * 1_048_576) == 16 * 1_048_576


async def test_other_flow_routes_keep_the_64_kib_cap(ff):
    w = await world(ff)
    for path, valid, _fields in routes(w)[1:]:
        data = json.dumps({**valid, "reason": "r" * 70_000}).encode()
        reply = await ff.call("POST", path, data=data, headers=JSON)
        body = assert_error(reply, 413, "payload_too_large")
        assert body.get("limit_bytes", 65_536) == 65_536


async def test_the_largest_refused_dags_are_refused_promptly(ff):
    """Checking a submission is linear: a 10,000-node cycle among 100,000 edges, or a key
    repeated at the end of 10,000, is a quick 400 (and blocks no other request long)."""
    n = 10_000
    nodes = [{"key": f"n{i}"} for i in range(n)]
    edges = [{"from": f"n{i}", "to": f"n{(i + 1) % n}"} for i in range(n)]
    edges += [{"from": f"n{i}", "to": f"n{i + k}"} for k in range(2, 11) for i in range(n - k)]
    with trio.fail_after(20):
        reply = await ff.call("POST", "/v1/flows", {"nodes": nodes, "edges": edges})
    body = assert_error(reply, 400, "cycle_detected", names=["10000 in all"])
    assert len(body["error"]) < 1000
    assert sorted(body["nodes"]) == sorted(f"n{i}" for i in range(n))
    with trio.fail_after(20):
        reply = await ff.call("POST", "/v1/flows", {"nodes": [*nodes[1:], {"key": "n1"}]})
    assert_error(reply, 400, "invalid_input", names=["'n1'", "twice"])


async def test_more_edges_than_the_cap_are_refused(ff):
    edges = [{"from": "a", "to": "b"}] * 100_001
    reply = await ff.call("POST", "/v1/flows", {"nodes": [{"key": "a"}, {"key": "b"}],
                                                "edges": edges})
    assert_error(reply, 400, "invalid_input", names=["edges"])


# -- unicode ------------------------------------------------------------------------------------

KEYS = ["\U0001F600" * 256, "ключ", "\u202eevil", "e\u0301", "\u00e9", " spaced key ",
        "a/b?c#d", "{fp:1}:x", "\U0010FFFF", "tab\there", "日本語"]


async def test_unicode_keys_and_labels_round_trip_exactly(ff):
    kind = "\u00e9" * 128  # 256 bytes of UTF-8
    dag = await submit_dag(ff, [{"key": k} for k in KEYS],
                           [(KEYS[0], KEYS[1]), (KEYS[1], KEYS[2])],
                           {KEYS[2]: {"policy": "any_of"}}, flow_kind=kind,
                           namespace="\U0001F680" * 256)
    assert set(dag.ids) == set(KEYS)
    flow = await describe(ff, dag.flow_id)
    assert {m["key"] for m in flow["members"]} == set(KEYS)
    assert (flow["flow_kind"], flow["namespace"]) == (kind, "\U0001F680" * 256)
    listed = await ff.call("GET", "/v1/flows", query={"namespace": "\U0001F680" * 256})
    assert [f["flow_id"] for f in listed.body["flows"]] == [dag.flow_id]


async def test_unstorable_or_too_long_text_is_refused_where_it_is(ff):
    cases = [
        ({"nodes": [{"key": "a\u0000"}]}, "nodes[0].key"),
        ({"nodes": [{"key": "\ud800"}]}, "nodes[0].key"),
        ({"nodes": [{"key": "a"}], "groups": {"\udfff": {"policy": "any_of"}}}, "groups"),
        ({"nodes": [{"key": "k" * 257}]}, "nodes[0].key"),
        ({"flow_kind": "\u00e9" * 129}, "flow_kind"),  # 258 bytes
        ({"flow_kind": ""}, "flow_kind"),
        ({"namespace": "n" * 257}, "namespace"),
        ({"nodes": [{"key": "a", "execution_kind": "\ud83d"}]}, "nodes[0].execution_kind"),
        ({"nodes": [{"key": "a", "lane_id": "l\u00e9"}]}, "lane_id"),
        ({"nodes": [{"key": "a"}, {"key": "b"}], "edges": [{"from": "a", "to": "b",
                                                            "data_passing_ref": "\u0000"}]},
         "edges[0].data_passing_ref"),
    ]
    for body, where in cases:
        flow_id = new_flow_id()
        reply = await ff.call("POST", "/v1/flows", data=json.dumps(
            {"flow_id": flow_id, **body}).encode(), headers=JSON)
        assert_error(reply, 400, ("invalid_json", "invalid_input"), names=[where])
        assert (await ff.call("GET", flow_url(flow_id))).status == 404


async def test_hostile_numbers_inside_nodes_edges_and_groups_name_their_place(ff):
    cases = [
        ('{"nodes": [{"key": "a", "priority": @}]}', ["NaN", "1e309", str(2**64), "1.5"],
         "nodes[0].priority"),
        ('{"nodes": [{"key": "a", "delay_until": @}]}', ["-1", str(2**64), "Infinity"],
         "nodes[0].delay_until"),
        ('{"nodes": [{"key": "a", "input_payload": [@]}]}', ["256", "-1", "NaN", "1.5"],
         "nodes[0].input_payload"),
        ('{"nodes": [{"key": "a"}, {"key": "b"}], "edges": [{"from": @, "to": "b"}]}',
         ["5", "null", "[]", "NaN"], "edges[0]"),
        (('{"nodes": [{"key": "a"}, {"key": "b"}], "edges": [{"from": "a", "to": "b"}], '
          '"groups": {"b": {"policy": "quorum", "k": @}}}'),
         ["0", "-1", "1.5", str(2**63), str(2**64), "NaN", "1e309", "true", '"1"'],
         "groups['b'].k"),
    ]
    for template, values, where in cases:
        for value in values:
            data = template.replace("@", value).encode()
            reply = await ff.call("POST", "/v1/flows", data=data, headers=JSON)
            assert_error(reply, 400, ("invalid_json", "invalid_input"),
                         names=[where if "NaN" != value and "1e309" != value
                                and "Infinity" != value else where.split("[")[0]])


async def test_hostile_list_queries_are_400s(ff):
    for query, named in [({"namespace": "a\u0000b"}, "namespace"),
                         ({"namespace": "n" * 300}, "namespace"),
                         ({"cursor": "\u0000"}, "cursor"), ({"cursor": "x" * 1000}, "cursor"),
                         ({"limit": "\u0000"}, "limit"), ({"limit": str(2**64)}, "limit"),
                         ({"limit": "NaN"}, "limit"), ({"limit": "-0"}, "limit"),
                         ({"limit": "\u00b2"}, "limit"), ({"limit": "\u0663"}, "limit"),
                         ({"limit": " 5"}, "limit")]:
        reply = await ff.call("GET", "/v1/flows", query=query)
        assert_error(reply, 400, "invalid_input", names=[named])
