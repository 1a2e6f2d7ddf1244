"""A whole DAG in one call (POST /v1/flows with nodes, edges, groups), and DAGs running:
a diamond, a 100-member fan-out/fan-in, a chain of 10 in order, data passed byte-exact.

Reference B §12 cases 10–16, 19."""

from __future__ import annotations

import os
from itertools import pairwise

from flow_helpers import (
    assert_error,
    b64,
    claim_many,
    claim_one,
    complete,
    complete_all,
    counters,
    describe,
    edge_states,
    fail_terminally,
    flow_state,
    group_of,
    id_on,
    laned,
    new_flow_id,
    node,
    nonzero,
    other_partition,
    partition_in_id,
    partition_of,
    payload_of,
    run_one,
    state_of,
    states_of,
    submit_dag,
    woken_by,
)

# -- the one-call DAG ---------------------------------------------------------------------------


async def test_a_dag_is_created_in_one_call_children_held_roots_waiting(ff):
    dag = await submit_dag(ff, [laned("a"), laned("b", execution_kind="render", priority=5),
                                laned("c")],
                           [("a", "b"), ("a", "c"), ("b", "c")], flow_kind="etl",
                           namespace="tenant-x")
    assert dag.graph_revision == 3 + 3
    flow = await describe(ff, dag.flow_id)
    assert (flow["flow_kind"], flow["namespace"], flow["node_count"], flow["edge_count"],
            flow["graph_revision"], flow["state"]) == ("etl", "tenant-x", 3, 3, 6, "open")
    assert {m["execution_id"]: m["key"] for m in flow["members"]} == {
        dag[k]: k for k in "abc"}
    assert edge_states(flow) == ["unsatisfied"] * 3
    assert {g["downstream_execution_id"]: (g["policy"], g["n"]) for g in flow["groups"]} == {
        dag["b"]: ("all_of", 1), dag["c"]: ("all_of", 2)}
    for key in "abc":
        info = await ff.info(dag[key])
        assert (info["flow_id"], info["partition_id"]) == (dag.flow_id,
                                                           partition_of(ff, dag.flow_id))
        assert partition_in_id(dag[key]) == partition_of(ff, dag.flow_id)
        assert info["namespace"] == "default"  # a node's own field, not the flow's
    assert await states_of(ff, [dag["a"], dag["b"], dag["c"]]) == [
        "waiting", "waiting_children", "waiting_children"]
    info = await ff.info(dag["b"])
    assert (info["execution_kind"], info["priority"], info["lane_id"]) == ("render", 5, "b")
    # no child is ever claimable before its edges exist
    assert await claim_one(ff, lane="b") is None and await claim_one(ff, lane="c") is None


async def test_submitting_the_same_dag_again_answers_the_first_and_changes_nothing(ff):
    flow_id = new_flow_id()
    nodes, edges = [laned("a"), laned("b")], [("a", "b")]
    dag = await submit_dag(ff, nodes, edges, flow_id=flow_id)
    await run_one(ff, "a")
    before = await describe(ff, flow_id)
    reply = await ff.call("POST", "/v1/flows", {"flow_id": flow_id,
                                                "nodes": [{"key": "a"}, {"key": "x"}]})
    assert (reply.status, reply.body) == (200, {"AlreadySatisfied": {
        "flow_id": flow_id, "executions": dag.ids, "graph_revision": dag.graph_revision}})
    assert await describe(ff, flow_id) == before
    plain = await ff.call("POST", "/v1/flows", {"flow_id": flow_id})
    assert (plain.status, plain.body) == (200, {"AlreadySatisfied": {"flow_id": flow_id}})


async def test_a_cycle_is_refused_naming_its_nodes_and_nothing_is_created(ff):
    flow_id = new_flow_id()
    reply = await ff.call("POST", "/v1/flows", {
        "flow_id": flow_id, "nodes": [{"key": k} for k in ("root", "x", "y", "z")],
        "edges": [{"from": "root", "to": "x"}, {"from": "x", "to": "y"},
                  {"from": "y", "to": "z"}, {"from": "z", "to": "x"}]})
    body = assert_error(reply, 400, "cycle_detected", names=["x", "y", "z"])
    assert "root" not in body["error"]
    assert sorted(body.get("nodes", ["x", "y", "z"])) == ["x", "y", "z"]
    assert_error(await ff.call("GET", f"/v1/flows/{flow_id}"), 404, "flow_not_found")
    listed = await ff.call("GET", "/v1/executions",
                           query={"partition": partition_of(ff, flow_id)})
    assert listed.body["executions"] == []


async def test_a_two_node_cycle_is_refused(ff):
    reply = await ff.call("POST", "/v1/flows", {
        "nodes": [{"key": "p"}, {"key": "q"}],
        "edges": [{"from": "p", "to": "q"}, {"from": "q", "to": "p"}]})
    assert_error(reply, 400, "cycle_detected", names=["p", "q"])


async def refused(ff, body: dict, status: int, kind: str, names: list[str]) -> None:
    """``body`` is refused and creates nothing: no flow, no execution."""
    flow_id = new_flow_id()
    reply = await ff.call("POST", "/v1/flows", {"flow_id": flow_id, **body})
    assert_error(reply, status, kind, names=names)
    assert (await ff.call("GET", f"/v1/flows/{flow_id}")).status == 404
    listed = await ff.call("GET", "/v1/executions",
                           query={"partition": partition_of(ff, flow_id)})
    assert listed.body["executions"] == [], body


async def test_any_bad_node_edge_or_group_refuses_the_whole_dag(ff):
    two = [{"key": "a"}, {"key": "b"}]
    ab = [{"from": "a", "to": "b"}]
    cases = [
        ({"nodes": [{"key": "a"}, {"key": "b", "priority": 1.5}]}, "nodes[1].priority"),
        ({"nodes": [{"key": "a"}, {"key": "b", "lane_id": ""}]}, "nodes[1]"),
        ({"nodes": [{"key": "a"}, {"key": "a"}]}, "'a'"),
        ({"nodes": [{"key": ""}]}, "nodes[0].key"),
        ({"nodes": [{"key": "k" * 257}]}, "nodes[0].key"),
        ({"nodes": [{"lane_id": "x"}]}, "key"),
        ({"nodes": [{"key": "a", "flow_id": new_flow_id()}]}, "nodes[0].flow_id"),
        ({"nodes": [{"key": "a", "idempotency_key": "i"}]}, "nodes[0].idempotency_key"),
        ({"nodes": [{"key": "a", "bogus": 1}]}, "bogus"),
        ({"nodes": two, "edges": [{"from": "a", "to": "nope"}]}, "'nope'"),
        ({"nodes": two, "edges": [{"from": "a"}]}, "edges[0].to"),
        ({"nodes": two, "edges": [{"from": "a", "to": "b", "weight": 2}]}, "weight"),
        ({"nodes": two, "edges": ab + ab}, "edges[1]"),
        ({"nodes": two, "edges": ab, "groups": {"a": {"policy": "any_of"}}}, "'a'"),
        ({"nodes": two, "edges": ab, "groups": {"zz": {"policy": "any_of"}}}, "'zz'"),
        ({"nodes": two, "edges": ab, "groups": {"b": {"policy": "quorum", "k": 2}}}, "k"),
        ({"nodes": two, "edges": ab, "groups": {"b": {"policy": "quorum"}}}, "k"),
        ({"nodes": two, "edges": ab, "groups": {"b": {"policy": "most_of"}}}, "policy"),
        ({"nodes": two, "edges": ab, "groups": {"b": {"policy": "any_of", "x": 1}}}, "x"),
        ({"edges": ab}, "nodes"),
        ({"nodes": [{"key": "a", "partition_id": 65535}]}, "partition_id"),
        ({"nodes": [{"key": "a", "input_payload": [1], "input_payload_b64": "AQ=="}]},
         "input_payload"),
        ({"nodes": two, "edges": ab, "groups": {"b": "any_of"}}, "groups"),
    ]
    for body, named in cases:
        await refused(ff, body, 400, "invalid_input", [named])


async def test_a_bad_tag_key_on_a_node_is_refused(ff):
    await refused(ff, {"nodes": [{"key": "a", "tags": {"Bad Key": "v"}}]}, 400,
                  "invalid_tag_key", ["nodes[0]", "Bad Key"])


async def test_a_self_edge_in_a_dag_is_refused(ff):
    await refused(ff, {"nodes": [{"key": "a"}], "edges": [{"from": "a", "to": "a"}]}, 400,
                  "self_referencing_edge", ["'a'"])


async def test_a_node_id_on_another_partition_or_taken_is_refused(ff):
    flow_id = new_flow_id()
    elsewhere = id_on(other_partition(ff, partition_of(ff, flow_id)))
    reply = await ff.call("POST", "/v1/flows", {"flow_id": flow_id, "nodes": [
        {"key": "a"}, {"key": "b", "execution_id": elsewhere}]})
    assert_error(reply, 400, "invalid_input", names=["nodes[1]", "partition"])
    assert (await ff.call("GET", f"/v1/flows/{flow_id}")).status == 404

    taken = await ff.create(execution_id=id_on(partition_of(ff, flow_id)))
    reply = await ff.call("POST", "/v1/flows", {"flow_id": flow_id, "nodes": [
        {"key": "a"}, {"key": "b", "execution_id": taken}]})
    assert_error(reply, 400, "invalid_input", names=[taken])
    assert (await ff.call("GET", f"/v1/flows/{flow_id}")).status == 404
    assert (await ff.info(taken))["flow_id"] is None
    listed = await ff.call("GET", "/v1/executions",
                           query={"partition": partition_of(ff, flow_id)})
    assert listed.body["executions"] == [taken]


async def test_a_node_id_on_the_flows_partition_is_used(ff):
    flow_id = new_flow_id()
    given = id_on(partition_of(ff, flow_id))
    dag = await submit_dag(ff, [node("a", execution_id=given)], flow_id=flow_id)
    assert dag["a"] == given
    assert (await ff.info(given))["flow_id"] == flow_id


async def test_a_dag_with_nodes_only_or_no_nodes_is_fine(ff):
    dag = await submit_dag(ff, [laned("solo")])
    assert (dag.graph_revision, await state_of(ff, dag["solo"])) == (1, "waiting")
    empty = await ff.call("POST", "/v1/flows", {"nodes": []})
    assert empty.status == 201, empty
    assert empty.body["Created"]["executions"] == {}
    assert empty.body["Created"]["graph_revision"] == 0
    flow_id = empty.body["Created"]["flow_id"]
    again = await ff.call("POST", "/v1/flows", {"flow_id": flow_id, "nodes": []})
    assert (again.status, again.body) == (200, {"AlreadySatisfied": {
        "flow_id": flow_id, "executions": {}, "graph_revision": 0}})


async def test_creating_a_dag_wakes_a_waiting_claim_for_its_roots(ff):
    async def submit() -> None:
        await submit_dag(ff, [laned("root"), laned("leaf")], [("root", "leaf")])
    assert (await woken_by(ff, "root", submit)) is not None


# -- running DAGs -------------------------------------------------------------------------------


async def test_a_diamond_runs_b_and_c_after_a_and_d_after_both(ff):
    dag = await submit_dag(ff, [laned("a"), node("b", lane_id="mid"), node("c", lane_id="mid"),
                                laned("d")],
                           [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    assert await claim_many(ff, lane="mid") == []
    await run_one(ff, "a")
    mids = await claim_many(ff, lane="mid")
    assert sorted(t["execution_id"] for t in mids) == sorted([dag["b"], dag["c"]])
    assert all(t["flow_id"] == dag.flow_id for t in mids)
    await complete(ff, mids[0])
    assert await state_of(ff, dag["d"]) == "waiting_children"
    assert await claim_one(ff, lane="d") is None
    ff.clock.advance(20_000)  # d holds: time and the safety net release nothing
    assert (await ff.tick("dependency_reconciler")).processed == 0
    assert await state_of(ff, dag["d"]) == "waiting_children"
    assert counters(group_of(await describe(ff, dag.flow_id), dag["d"])) == (
        1, 0, 0, "pending")
    await complete(ff, mids[1])
    assert await state_of(ff, dag["d"]) == "waiting"
    await run_one(ff, "d")
    flow = await describe(ff, dag.flow_id)
    assert (flow["state"], nonzero(flow["counts"])) == ("completed", {"completed": 4})
    assert edge_states(flow) == ["satisfied"] * 4
    assert {g["state"] for g in flow["groups"]} == {"satisfied"}


async def test_a_diamond_whose_b_fails_skips_d_though_c_completes(ff):
    dag = await submit_dag(ff, [laned("a"), laned("b"), laned("c"), laned("d")],
                           [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    await run_one(ff, "a")
    await fail_terminally(ff, await claim_one(ff, lane="b"))
    assert await state_of(ff, dag["d"]) == "skipped"  # at the first non-success
    await run_one(ff, "c")
    assert await states_of(ff, [dag[k] for k in "abcd"]) == [
        "completed", "failed", "completed", "skipped"]
    flow = await describe(ff, dag.flow_id)
    assert counters(group_of(flow, dag["d"])) == (1, 1, 0, "impossible")
    assert flow["state"] == "failed"
    info = await ff.info(dag["d"])
    assert info["state_vector"]["terminal_outcome"] == "skipped"
    assert info["state_vector"]["lifecycle_phase"] == "terminal"
    assert "completed_at" in info


async def test_a_fan_out_of_100_runs_together_and_the_fan_in_waits_for_all(ff):
    nodes = [laned("root"), laned("sink")] + [node(f"m{i}", lane_id="fan") for i in range(100)]
    edges = ([("root", f"m{i}") for i in range(100)]
             + [(f"m{i}", "sink") for i in range(100)])
    dag = await submit_dag(ff, nodes, edges)
    assert dag.graph_revision == 102 + 200
    assert await claim_many(ff, lane="fan") == []
    await run_one(ff, "root")
    tasks = await claim_many(ff, lane="fan")
    assert sorted(t["execution_id"] for t in tasks) == sorted(dag[f"m{i}"] for i in range(100))
    await complete_all(ff, tasks[:99])
    assert await state_of(ff, dag["sink"]) == "waiting_children"
    assert counters(group_of(await describe(ff, dag.flow_id), dag["sink"])) == (
        99, 0, 0, "pending")
    assert await claim_one(ff, lane="sink") is None
    await complete_all(ff, tasks[99:])
    await run_one(ff, "sink")
    flow = await describe(ff, dag.flow_id)
    assert (flow["state"], nonzero(flow["counts"])) == ("completed", {"completed": 102})


async def test_a_chain_of_10_completes_in_order(ff):
    keys = [f"s{i}" for i in range(10)]
    dag = await submit_dag(ff, [node(k, lane_id="chain") for k in keys],
                           list(pairwise(keys)))
    ran = []
    for _ in keys:
        tasks = await claim_many(ff, lane="chain")
        assert len(tasks) == 1, [t["execution_id"] for t in tasks]  # exactly the next step
        await complete(ff, tasks[0])
        ran.append(tasks[0]["execution_id"])
    assert ran == [dag[k] for k in keys]
    assert await claim_many(ff, lane="chain") == []
    assert await flow_state(ff, dag.flow_id) == "completed"


async def test_a_failure_mid_chain_skips_the_rest(ff):
    keys = [f"s{i}" for i in range(5)]
    dag = await submit_dag(ff, [node(k, lane_id="chain") for k in keys], list(pairwise(keys)))
    await run_one(ff, "chain")
    await fail_terminally(ff, await claim_one(ff, lane="chain"))
    assert await states_of(ff, [dag[k] for k in keys]) == [
        "completed", "failed", "skipped", "skipped", "skipped"]
    assert await claim_one(ff, lane="chain") is None


# -- data passing -------------------------------------------------------------------------------

EVERY_BYTE = bytes(range(256)) + b"\x00\xff\xc3\x28" + "\U0001F600".encode()


async def test_a_result_is_passed_byte_exact_to_the_child_input(ff):
    dag = await submit_dag(ff, [laned("a"), laned("b", input_payload_b64=b64(b"original")),
                                laned("c", input_payload_b64=b64(b"kept"))],
                           [("a", "b", {"data_passing_ref": "result"}), ("a", "c")])
    await run_one(ff, "a", result_b64=b64(EVERY_BYTE), result_encoding="bin")
    task = await claim_one(ff, lane="b")
    assert task["execution_id"] == dag["b"]
    assert payload_of(task) == EVERY_BYTE
    result = await ff.call("GET", f"/v1/executions/{dag['a']}/result")
    assert (result.status, result.body) == (200, EVERY_BYTE)
    assert task["input_payload"] == list(EVERY_BYTE)
    assert payload_of(await claim_one(ff, lane="c")) == b"kept"  # no ref: untouched


async def test_a_large_random_result_is_passed_byte_exact(ff):
    data = os.urandom(200_000)
    await submit_dag(ff, [laned("a"), laned("b")], [("a", "b", {"data_passing_ref": "result"})])
    await run_one(ff, "a", result_b64=b64(data))
    assert payload_of(await claim_one(ff, lane="b")) == data


async def test_a_void_result_passes_nothing(ff):
    await submit_dag(ff, [laned("a"), laned("b", input_payload=[1, 2, 3])],
                     [("a", "b", {"data_passing_ref": "result"})])
    await run_one(ff, "a")
    assert payload_of(await claim_one(ff, lane="b")) == bytes([1, 2, 3])


async def test_with_several_passing_edges_the_last_to_resolve_wins(ff):
    await submit_dag(ff, [laned("a"), laned("b"), laned("c", input_payload=[9])],
                     [("a", "c", {"data_passing_ref": "result"}),
                      ("b", "c", {"data_passing_ref": "result"})])
    await run_one(ff, "b", result_b64=b64(b"from b"))
    await run_one(ff, "a", result_b64=b64(b"from a"))
    assert payload_of(await claim_one(ff, lane="c")) == b"from a"


async def test_any_of_passes_the_result_of_the_edge_that_satisfied_it(ff):
    await submit_dag(ff, [laned("a"), laned("b"), laned("c")],
                     [("a", "c", {"data_passing_ref": "result"}),
                      ("b", "c", {"data_passing_ref": "result"})],
                     {"c": {"policy": "any_of"}})
    await run_one(ff, "b", result_b64=b64(b"winner"))
    await run_one(ff, "a", result_b64=b64(b"late"))  # the group already fired
    assert payload_of(await claim_one(ff, lane="c")) == b"winner"


async def test_a_result_is_not_passed_to_a_child_that_already_ended(ff):
    dag = await submit_dag(ff, [laned("a"), laned("b", input_payload=[7, 7])],
                           [("a", "b", {"data_passing_ref": "result"})])
    reply = await ff.call("POST", f"/v1/executions/{dag['b']}/cancel", {})
    assert reply.status == 200, reply
    await run_one(ff, "a", result_b64=b64(b"too late"))
    assert (await ff.call("POST", f"/v1/executions/{dag['b']}/replay", {})).status == 200
    assert await state_of(ff, dag["b"]) == "waiting"  # its edge is satisfied: not held
    assert payload_of(await claim_one(ff, lane="b")) == bytes([7, 7])


async def test_a_batch_complete_of_the_fan_in_wakes_a_waiting_claim_for_the_sink(ff):
    dag = await submit_dag(ff, [node(f"m{i}", lane_id="fan") for i in range(3)]
                           + [laned("sink")], [(f"m{i}", "sink") for i in range(3)])
    tasks = await claim_many(ff, lane="fan")

    async def complete_them() -> None:
        await complete_all(ff, tasks)
    assert (await woken_by(ff, "sink", complete_them))["execution_id"] == dag["sink"]


async def test_resolution_happens_in_the_upstreams_step_leaving_the_safety_net_idle(ff):
    await submit_dag(ff, [laned("a"), laned("b"), laned("c"), laned("d")],
                     [("a", "b"), ("b", "c"), ("a", "d")])
    await run_one(ff, "a")
    await fail_terminally(ff, await claim_one(ff, lane="b"))
    ff.clock.advance(60_000)
    assert (await ff.tick("dependency_reconciler")).processed == 0
