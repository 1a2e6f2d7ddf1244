"""Flows through the HTTP API: the records, membership, edges staged and applied, edge
groups, reads and the flow errors (spec/flows.md, spec/http-api.md § Flows).

Reference B §12 cases 1–11, 21, 22, 40, 41 and the derived flow state."""

from __future__ import annotations

import uuid

from flow_helpers import (
    TERMINAL,
    add_member,
    apply,
    assert_error,
    cancel_flow,
    claim_one,
    complete,
    counters,
    create_flow,
    dag_body,
    describe,
    edge_states,
    exec_url,
    fail_terminally,
    flow_id_on,
    flow_state,
    flow_url,
    group_of,
    id_on,
    laned,
    link,
    new_edge_id,
    new_flow_id,
    new_member,
    nonzero,
    other_partition,
    partition_in_id,
    partition_of,
    replay,
    run_one,
    set_group,
    solo_on,
    stage,
    stage_ok,
    state_of,
    states_of,
    submit_dag,
    woken_by,
)

# -- the flow record ----------------------------------------------------------------------------


async def test_a_new_flow_is_open_at_revision_0_and_creating_it_again_changes_nothing(ff):
    flow_id = new_flow_id()
    reply = await ff.call("POST", "/v1/flows", {"flow_id": flow_id, "flow_kind": "pipeline",
                                                "namespace": "tenant-a"})
    assert (reply.status, reply.body) == (201, {"Created": {"flow_id": flow_id}})
    flow = await describe(ff, flow_id)
    assert flow == {
        "flow_id": flow_id, "flow_kind": "pipeline", "namespace": "tenant-a", "state": "open",
        "graph_revision": 0, "node_count": 0, "edge_count": 0,
        "created_at": ff.clock.now_ms(), "last_mutation_at": ff.clock.now_ms(),
        "cancelled_at": None, "cancel_reason": None, "cancellation_policy": None,
        "counts": flow["counts"], "members": [], "edges": [], "groups": []}
    assert nonzero(flow["counts"]) == {}

    ff.clock.advance(1000)
    again = await ff.call("POST", "/v1/flows", {"flow_id": flow_id, "flow_kind": "other",
                                                "namespace": "tenant-b"})
    assert (again.status, again.body) == (200, {"AlreadySatisfied": {"flow_id": flow_id}})
    after = await describe(ff, flow_id)
    assert (after["flow_kind"], after["namespace"], after["created_at"]) == (
        "pipeline", "tenant-a", flow["created_at"])


async def test_a_flow_without_fields_gets_a_minted_id_kind_dag_and_namespace_default(ff):
    reply = await ff.call("POST", "/v1/flows")
    assert reply.status == 201, reply
    flow_id = reply.body["Created"]["flow_id"]
    assert str(uuid.UUID(flow_id)) == flow_id
    flow = await describe(ff, flow_id)
    assert (flow["flow_kind"], flow["namespace"], flow["state"]) == ("dag", "default", "open")


async def test_an_uppercase_flow_id_names_the_same_flow(ff):
    flow_id = await create_flow(ff, new_flow_id())
    assert (await describe(ff, flow_id.upper()))["flow_id"] == flow_id
    again = await ff.call("POST", "/v1/flows", {"flow_id": flow_id.upper()})
    assert (again.status, again.body) == (200, {"AlreadySatisfied": {"flow_id": flow_id}})


# -- membership ---------------------------------------------------------------------------------


async def test_members_are_added_counted_and_stamped_and_adding_again_changes_nothing(ff):
    flow_id = await create_flow(ff)
    partition = partition_of(ff, flow_id)
    ids = [await solo_on(ff, partition) for _ in range(3)]
    for n, eid in enumerate(ids, start=1):
        ff.clock.advance(10)
        reply = await add_member(ff, flow_id, eid)
        assert (reply.status, reply.body) == (201, {"Added": {"execution_id": eid,
                                                              "new_node_count": n}})
    flow = await describe(ff, flow_id)
    assert (flow["node_count"], flow["graph_revision"], flow["edge_count"]) == (3, 3, 0)
    assert flow["last_mutation_at"] == ff.clock.now_ms()
    assert sorted(m["execution_id"] for m in flow["members"]) == sorted(ids)
    assert {m["key"] for m in flow["members"]} == {None}
    assert nonzero(flow["counts"]) == {"waiting": 3}
    for eid in ids:
        assert (await ff.info(eid))["flow_id"] == flow_id
        assert await state_of(ff, eid) == "waiting"  # joining does not gate

    again = await add_member(ff, flow_id, ids[0])
    assert (again.status, again.body) == (200, {"AlreadyMember": {"execution_id": ids[0],
                                                                  "node_count": 3}})
    assert (await describe(ff, flow_id))["graph_revision"] == 3


async def test_adding_to_a_missing_flow_or_a_missing_execution_is_404_and_writes_nothing(ff):
    flow_id = await create_flow(ff)
    partition = partition_of(ff, flow_id)
    eid = await solo_on(ff, partition)
    missing_flow = flow_id_on(ff, partition, exclude=[flow_id])
    assert_error(await add_member(ff, missing_flow, eid), 404, "flow_not_found",
                 names=[missing_flow])
    assert (await ff.info(eid))["flow_id"] is None

    ghost = id_on(partition)
    assert_error(await add_member(ff, flow_id, ghost), 404, "execution_not_found",
                 names=[ghost])
    flow = await describe(ff, flow_id)
    assert (flow["node_count"], flow["graph_revision"], flow["members"]) == (0, 0, [])


async def test_an_execution_on_another_partition_cannot_join(ff):
    flow_id = await create_flow(ff)
    partition = partition_of(ff, flow_id)
    elsewhere = await solo_on(ff, other_partition(ff, partition))
    body = assert_error(await add_member(ff, flow_id, elsewhere), 400, "invalid_input",
                        names=["partition"])
    assert "flow_id" in body["error"]  # says how to fix it: create it with flow_id
    assert (await ff.info(elsewhere))["flow_id"] is None
    assert (await describe(ff, flow_id))["node_count"] == 0


async def test_a_member_of_another_flow_cannot_join(ff):
    first = await create_flow(ff)
    partition = partition_of(ff, first)
    second = await create_flow(ff, flow_id_on(ff, partition, exclude=[first]))
    eid = await new_member(ff, first)
    body = assert_error(await add_member(ff, second, eid), 409, "execution_in_other_flow",
                        names=[first])
    assert body.get("other_flow_id", first) == first
    assert (await ff.info(eid))["flow_id"] == first
    assert (await describe(ff, second))["node_count"] == 0


async def test_create_with_flow_id_mints_on_the_flows_partition_and_joins_in_one_step(ff):
    flow_id = await create_flow(ff)
    eid = await new_member(ff, flow_id, lane_id="members")
    assert partition_in_id(eid) == partition_of(ff, flow_id)
    info = await ff.info(eid)
    assert (info["flow_id"], info["partition_id"], info["public_state"]) == (
        flow_id, partition_of(ff, flow_id), "waiting")
    flow = await describe(ff, flow_id)
    assert (flow["node_count"], flow["graph_revision"]) == (1, 1)
    assert [m["execution_id"] for m in flow["members"]] == [eid]
    task = await claim_one(ff, lane="members")
    assert (task["execution_id"], task["flow_id"]) == (eid, flow_id)
    # a given id on the flow's partition is taken as is
    given = id_on(partition_of(ff, flow_id))
    assert await new_member(ff, flow_id, execution_id=given) == given


async def test_create_with_an_unknown_flow_is_404_and_creates_nothing(ff):
    flow_id = new_flow_id()
    partition = partition_of(ff, flow_id)
    reply = await ff.call("POST", "/v1/executions", {"flow_id": flow_id})
    assert_error(reply, 404, "flow_not_found", names=[flow_id])
    listed = await ff.call("GET", "/v1/executions", query={"partition": partition})
    assert listed.body["executions"] == []


async def test_create_with_flow_id_and_an_id_on_another_partition_is_refused(ff):
    flow_id = await create_flow(ff)
    elsewhere = id_on(other_partition(ff, partition_of(ff, flow_id)))
    reply = await ff.call("POST", "/v1/executions", {"flow_id": flow_id,
                                                     "execution_id": elsewhere})
    assert_error(reply, 400, "invalid_input", names=["partition"])
    assert (await describe(ff, flow_id))["node_count"] == 0


async def test_a_duplicate_create_with_flow_id_joins_only_once(ff):
    flow_id = await create_flow(ff)
    first = await new_member(ff, flow_id, idempotency_key="order-1")
    again = await ff.call("POST", "/v1/executions", {"flow_id": flow_id,
                                                     "idempotency_key": "order-1"})
    assert (again.status, again.body) == (200, {"Duplicate": {"execution_id": first}})
    same_id = await ff.call("POST", "/v1/executions", {"flow_id": flow_id,
                                                       "execution_id": first})
    assert (same_id.status, same_id.body) == (200, {"Duplicate": {"execution_id": first}})
    flow = await describe(ff, flow_id)
    assert (flow["node_count"], flow["graph_revision"], len(flow["members"])) == (1, 1, 1)


async def test_a_batch_create_with_flow_ids_joins_each_item(ff):
    flow_id = await create_flow(ff)
    reply = await ff.call("POST", "/v1/executions/batch", {"executions": [
        {"flow_id": flow_id}, {"lane_id": "solo"}, {"flow_id": new_flow_id()},
        {"flow_id": flow_id}]})
    assert reply.status == 200, reply
    outcomes = reply.body["outcomes"]
    assert "Created" in outcomes[0] and "Created" in outcomes[1] and "Created" in outcomes[3]
    assert outcomes[2]["kind"] == "flow_not_found"
    flow = await describe(ff, flow_id)
    assert sorted(m["execution_id"] for m in flow["members"]) == sorted(
        [outcomes[0]["Created"]["execution_id"], outcomes[3]["Created"]["execution_id"]])
    assert (flow["node_count"], flow["graph_revision"]) == (2, 2)


async def test_get_execution_shows_flow_id_and_null_for_a_solo_execution(ff):
    dag = await submit_dag(ff, ["a"])
    assert (await ff.info(dag["a"]))["flow_id"] == dag.flow_id
    solo = await ff.create()
    assert (await ff.info(solo))["flow_id"] is None


# -- staging edges ------------------------------------------------------------------------------


async def abc(ff) -> tuple[str, list[str]]:
    flow_id = await create_flow(ff)
    return flow_id, [await new_member(ff, flow_id, lane_id=k) for k in "abc"]


async def test_staging_threads_the_revision_and_refuses_cycles_self_edges_and_repeats(ff):
    flow_id, (a, b, c) = await abc(ff)
    ab = new_edge_id()
    reply = await stage(ff, flow_id, a, b, 3, edge_id=ab)
    assert (reply.status, reply.body) == (201, {"Staged": {"edge_id": ab,
                                                           "new_graph_revision": 4}})
    bc = new_edge_id()
    reply = await stage(ff, flow_id, b, c, 4, edge_id=bc)
    assert (reply.status, reply.body) == (201, {"Staged": {"edge_id": bc,
                                                           "new_graph_revision": 5}})

    assert_error(await stage(ff, flow_id, c, a, 5), 409, "cycle_detected", names=[c, a])
    assert_error(await stage(ff, flow_id, b, a, 5), 409, "cycle_detected")
    assert_error(await stage(ff, flow_id, a, a, 5), 400, "self_referencing_edge", names=[a])
    body = assert_error(await stage(ff, flow_id, a, c, 99), 409, "stale_graph_revision",
                        retryable=True, names=["5", "99"])
    assert body.get("graph_revision", 5) == 5
    # a successful stage retried with its (now stale) revision: stale, not a duplicate
    assert_error(await stage(ff, flow_id, a, b, 3, edge_id=ab), 409, "stale_graph_revision")
    assert_error(await stage(ff, flow_id, a, c, 5, edge_id=ab), 409,
                 "dependency_already_exists", names=[ab])

    outsider = await solo_on(ff, partition_of(ff, flow_id))
    assert_error(await stage(ff, flow_id, a, outsider, 5), 409, "execution_not_in_flow",
                 names=[outsider])
    assert_error(await stage(ff, flow_id, outsider, a, 5), 409, "execution_not_in_flow")

    flow = await describe(ff, flow_id)
    assert (flow["graph_revision"], flow["edge_count"]) == (5, 2)
    assert {(e["edge_id"], e["upstream_execution_id"], e["downstream_execution_id"],
             e["state"], e["dependency_kind"], e["data_passing_ref"]) for e in flow["edges"]} == {
        (ab, a, b, "staged", "success_only", None), (bc, b, c, "staged", "success_only", None)}
    assert flow["groups"] == []
    # staging does not gate
    assert await state_of(ff, b) == "waiting"


async def test_two_edge_ids_between_the_same_pair_both_count(ff):
    flow_id, (a, b, _c) = await abc(ff)
    await link(ff, flow_id, a, b)
    await link(ff, flow_id, a, b)
    flow = await describe(ff, flow_id)
    assert group_of(flow, b)["n"] == 2
    await run_one(ff, "a")
    assert await state_of(ff, b) == "waiting"
    assert counters(group_of(await describe(ff, flow_id), b)) == (2, 0, 0, "satisfied")


async def test_a_diamond_is_built_with_threaded_revisions(ff):
    flow_id = await create_flow(ff)
    a, b, c, d = [await new_member(ff, flow_id, lane_id=k) for k in "abcd"]
    revision = 4
    for up, down in [(a, b), (a, c), (b, d), (c, d)]:
        reply = await stage(ff, flow_id, up, down, revision)
        assert reply.status == 201, reply
        revision += 1
        assert reply.body["Staged"]["new_graph_revision"] == revision
    assert (await describe(ff, flow_id))["graph_revision"] == 8


async def test_staging_between_flows_or_with_a_mismatched_path_is_refused(ff):
    flow_id, (a, b, _c) = await abc(ff)
    reply = await ff.call("POST", flow_url(flow_id, "/edges"), {
        "flow_id": new_flow_id(), "edge_id": new_edge_id(), "upstream_execution_id": a,
        "downstream_execution_id": b, "expected_graph_revision": 3})
    assert_error(reply, 400, "invalid_input", names=["flow_id"])
    missing = flow_id_on(ff, partition_of(ff, flow_id), exclude=[flow_id])
    assert_error(await stage(ff, missing, a, b, 0), 404, "flow_not_found")


# -- applying edges -----------------------------------------------------------------------------


async def test_applying_gates_the_child_counts_unresolved_and_is_idempotent(ff):
    flow_id = await create_flow(ff)
    a, b, c, d = [await new_member(ff, flow_id, lane_id=k) for k in "abcd"]
    staged = {}
    for up, down in [(a, b), (a, c), (b, d), (c, d)]:
        staged[(up, down)] = await stage_ok(ff, flow_id, up, down)
    answers = []
    for (up, down), (edge_id, revision) in staged.items():
        reply = await apply(ff, flow_id, edge_id, up, down, revision)
        assert reply.status == 200, reply
        answers.append(reply.body)
    assert answers == [{"Applied": {"unsatisfied_count": n}} for n in (1, 1, 1, 2)]
    assert [await state_of(ff, e) for e in (a, b, c, d)] == [
        "waiting", "waiting_children", "waiting_children", "waiting_children"]
    info = await ff.info(d)
    assert info["state_vector"]["eligibility_state"] == "blocked_by_dependencies"
    assert info["state_vector"]["blocking_reason"] == "waiting_for_children"
    assert await claim_one(ff, lane="b") is None

    (edge_id, revision) = staged[(a, b)]
    again = await apply(ff, flow_id, edge_id, a, b, revision)
    assert (again.status, again.body) == (200, "AlreadyApplied")
    flow = await describe(ff, flow_id)
    assert edge_states(flow) == ["unsatisfied"] * 4
    assert {g["downstream_execution_id"]: (g["policy"], g["n"], g["state"])
            for g in flow["groups"]} == {b: ("all_of", 1, "pending"),
                                         c: ("all_of", 1, "pending"),
                                         d: ("all_of", 2, "pending")}
    assert flow["graph_revision"] == 8  # applying does not move the revision


async def test_applying_an_edge_that_was_not_staged_is_404(ff):
    flow_id, (a, b, c) = await abc(ff)
    assert_error(await apply(ff, flow_id, new_edge_id(), a, b, 3), 404, "edge_not_found")
    edge_id, revision = await stage_ok(ff, flow_id, a, b)
    # other ends than the staged ones
    assert_error(await apply(ff, flow_id, edge_id, a, c, revision), 404, "edge_not_found")
    assert_error(await apply(ff, flow_id, edge_id, b, a, revision), 404, "edge_not_found")
    missing = flow_id_on(ff, partition_of(ff, flow_id), exclude=[flow_id])
    assert_error(await apply(ff, missing, edge_id, a, b, revision), 404, "flow_not_found")
    assert await state_of(ff, b) == "waiting"


async def test_applying_checks_what_the_caller_states_about_the_edge(ff):
    flow_id, (a, b, _c) = await abc(ff)
    edge_id, revision = await stage_ok(ff, flow_id, a, b, data_passing_ref="result")
    assert_error(await apply(ff, flow_id, edge_id, a, b, revision + 1), 400, "invalid_input",
                 names=["graph_revision"])
    assert_error(await apply(ff, flow_id, edge_id, a, b, revision, data_passing_ref="other"),
                 400, "invalid_input", names=["data_passing_ref"])
    assert_error(await apply(ff, flow_id, edge_id, a, b, revision,
                             dependency_kind="something_else"),
                 400, "invalid_input", names=["dependency_kind"])
    assert await state_of(ff, b) == "waiting"
    reply = await apply(ff, flow_id, edge_id, a, b, revision, data_passing_ref="result",
                        dependency_kind="success_only")
    assert (reply.status, reply.body) == (200, {"Applied": {"unsatisfied_count": 1}})


async def test_an_edge_applied_to_a_running_child_does_not_regate_it_but_counts(ff):
    flow_id, (a, b, _c) = await abc(ff)
    task_b = await claim_one(ff, lane="b")
    await link(ff, flow_id, a, b)
    assert await state_of(ff, b) == "active"
    await run_one(ff, "a")
    assert counters(group_of(await describe(ff, flow_id), b)) == (1, 0, 0, "satisfied")
    await complete(ff, task_b)


async def test_an_edge_applied_after_its_upstream_completed_resolves_at_once(ff):
    flow_id, (a, b, _c) = await abc(ff)
    await run_one(ff, "a")
    edge_id, revision = await stage_ok(ff, flow_id, a, b)
    reply = await apply(ff, flow_id, edge_id, a, b, revision)
    assert (reply.status, reply.body) == (200, {"Applied": {"unsatisfied_count": 0}})
    assert await state_of(ff, b) == "waiting"
    flow = await describe(ff, flow_id)
    assert edge_states(flow) == ["satisfied"]
    assert counters(group_of(flow, b)) == (1, 0, 0, "satisfied")
    assert (await claim_one(ff, lane="b"))["execution_id"] == b


async def test_an_edge_applied_after_its_upstream_failed_skips_the_child_at_once(ff):
    flow_id, (a, b, c) = await abc(ff)
    await link(ff, flow_id, b, c)
    await fail_terminally(ff, await claim_one(ff, lane="a"))
    edge_id, revision = await stage_ok(ff, flow_id, a, b)
    reply = await apply(ff, flow_id, edge_id, a, b, revision)
    assert (reply.status, reply.body) == (200, {"Applied": {"unsatisfied_count": 0}})
    assert [await state_of(ff, e) for e in (b, c)] == ["skipped", "skipped"]
    flow = await describe(ff, flow_id)
    assert counters(group_of(flow, b)) == (0, 1, 0, "impossible")
    assert counters(group_of(flow, c)) == (0, 0, 1, "impossible")


async def test_an_edge_applied_after_its_upstream_completed_wakes_a_waiting_claim(ff):
    flow_id, (a, b, c) = await abc(ff)
    assert (await set_group(ff, flow_id, b, "any_of")).status == 200
    await link(ff, flow_id, c, b)  # b is held by c
    await run_one(ff, "a")
    edge_id, revision = await stage_ok(ff, flow_id, a, b)

    async def apply_it() -> None:
        reply = await apply(ff, flow_id, edge_id, a, b, revision)
        assert reply.status == 200, reply
    assert (await woken_by(ff, "b", apply_it))["execution_id"] == b


async def test_a_released_child_wakes_a_waiting_long_poll_claim(ff):
    dag = await submit_dag(ff, [laned("a"), laned("b")], [("a", "b")])
    task = await claim_one(ff, lane="a")

    async def complete_upstream() -> None:
        await complete(ff, task)
    got = await woken_by(ff, "b", complete_upstream)
    assert (got["execution_id"], got["flow_id"]) == (dag["b"], dag.flow_id)


# -- edge groups --------------------------------------------------------------------------------


async def test_an_edge_group_policy_is_set_once_and_fixed_after_the_first_apply(ff):
    flow_id, (a, b, c) = await abc(ff)
    policy = {"policy": "quorum", "k": 2, "on_satisfied": "cancel_remaining"}
    reply = await set_group(ff, flow_id, c, **policy)
    assert (reply.status, reply.body) == (200, {"Set": {"downstream_execution_id": c}})
    again = await set_group(ff, flow_id, c, **policy)
    assert (again.status, again.body) == (200, "AlreadySet")
    changed = await set_group(ff, flow_id, c, "any_of")
    assert (changed.status, changed.body) == (200, {"Set": {"downstream_execution_id": c}})
    reply = await set_group(ff, flow_id, c, **policy)
    assert reply.status == 200 and "Set" in reply.body, reply

    await link(ff, flow_id, a, c)
    assert_error(await set_group(ff, flow_id, c, "any_of"), 409, "edge_group_policy_fixed",
                 names=[c])
    assert_error(await set_group(ff, flow_id, c, **policy), 409, "edge_group_policy_fixed")
    await link(ff, flow_id, b, c)
    group = group_of(await describe(ff, flow_id), c)
    assert {k: group[k] for k in ("policy", "k", "on_satisfied", "n", "state")} == {
        "policy": "quorum", "k": 2, "on_satisfied": "cancel_remaining", "n": 2,
        "state": "pending"}


async def test_an_implicit_group_is_all_of_let_run(ff):
    flow_id, (a, b, _c) = await abc(ff)
    await link(ff, flow_id, a, b)
    group = group_of(await describe(ff, flow_id), b)
    assert {k: group[k] for k in ("policy", "k", "on_satisfied", "n", "succeeded", "failed",
                                  "skipped", "state")} == {
        "policy": "all_of", "k": None, "on_satisfied": "let_run", "n": 1, "succeeded": 0,
        "failed": 0, "skipped": 0, "state": "pending"}


async def test_bad_edge_group_policies_are_400s_naming_what_to_fix(ff):
    flow_id, (_a, _b, c) = await abc(ff)
    cases = [
        ({"policy": "quorum"}, "k"),
        ({"policy": "quorum", "k": 0}, "k"),
        ({"policy": "quorum", "k": -1}, "k"),
        ({"policy": "quorum", "k": 1.5}, "k"),
        ({"policy": "quorum", "k": "2"}, "k"),
        ({"policy": "quorum", "k": True}, "k"),
        ({"policy": "any_of", "k": 1}, "k"),
        ({"policy": "all_of", "on_satisfied": "cancel_remaining"}, "on_satisfied"),
        ({"policy": "any_of", "on_satisfied": "cancel_some"}, "on_satisfied"),
        ({"policy": "first_of"}, "policy"),
        ({"policy": None}, "policy"),
        ({"policy": ["any_of"]}, "policy"),
    ]
    for fields, named in cases:
        reply = await set_group(ff, flow_id, c, **fields)
        assert_error(reply, 400, "invalid_input", names=[named])
    assert (await describe(ff, flow_id))["groups"] == []


async def test_an_edge_group_needs_a_member_and_an_existing_flow(ff):
    flow_id, (_a, _b, c) = await abc(ff)
    outsider = await solo_on(ff, partition_of(ff, flow_id))
    assert_error(await set_group(ff, flow_id, outsider, "any_of"), 409,
                 "execution_not_in_flow", names=[outsider])
    missing = flow_id_on(ff, partition_of(ff, flow_id), exclude=[flow_id])
    assert_error(await set_group(ff, missing, c, "any_of"), 404, "flow_not_found")


# -- a cancelled flow takes nothing new ---------------------------------------------------------


async def test_a_cancelled_flow_refuses_new_members_and_edges(ff):
    flow_id, (a, b, _c) = await abc(ff)
    reply = await cancel_flow(ff, flow_id, "let_run")
    assert reply.status == 200, reply
    newcomer = await solo_on(ff, partition_of(ff, flow_id))
    assert_error(await add_member(ff, flow_id, newcomer), 409, "flow_already_terminal",
                 names=[flow_id])
    assert (await ff.info(newcomer))["flow_id"] is None
    reply = await ff.call("POST", "/v1/executions", {"flow_id": flow_id})
    assert_error(reply, 409, "flow_already_terminal")
    flow = await describe(ff, flow_id)
    assert_error(await stage(ff, flow_id, a, b, flow["graph_revision"]), 409,
                 "flow_already_terminal")
    after = await describe(ff, flow_id)
    assert (after["node_count"], after["edge_count"], after["graph_revision"]) == (
        3, 0, flow["graph_revision"])


async def test_an_edge_staged_before_a_flow_cancel_cannot_be_applied_after_it(ff):
    flow_id, (a, b, _c) = await abc(ff)
    edge_id, revision = await stage_ok(ff, flow_id, a, b)
    assert (await cancel_flow(ff, flow_id, "let_run")).status == 200
    assert_error(await apply(ff, flow_id, edge_id, a, b, revision), 409,
                 "flow_already_terminal", names=[flow_id])
    assert edge_states(await describe(ff, flow_id)) == ["staged"]
    assert await state_of(ff, b) == "waiting"


async def test_a_delayed_execution_cannot_be_held_by_an_edge(ff):
    flow_id = await create_flow(ff)
    a = await new_member(ff, flow_id, lane_id="a")
    b = await new_member(ff, flow_id, lane_id="b", delay_until=ff.clock.now_ms() + 60_000)
    edge_id, revision = await stage_ok(ff, flow_id, a, b)
    assert_error(await apply(ff, flow_id, edge_id, a, b, revision), 400, "invalid_input",
                 names=["downstream_execution_id", "delay"])
    assert await state_of(ff, b) == "delayed"
    reply = await ff.call("POST", "/v1/flows", dag_body(
        ["a", {"key": "b", "delay_until": ff.clock.now_ms() + 60_000}], [("a", "b")]))
    assert_error(reply, 400, "invalid_input", names=["nodes[1].delay_until"])


async def test_an_empty_flow_cancelled_answers_cancelled_with_no_members(ff):
    flow_id = await create_flow(ff)
    reply = await cancel_flow(ff, flow_id, "cancel_all")
    assert (reply.status, reply.body) == (200, {"Cancelled": {
        "cancellation_policy": "cancel_all", "member_execution_ids": []}})
    assert await flow_state(ff, flow_id) == "cancelled"


# -- reads --------------------------------------------------------------------------------------


async def test_describing_a_missing_flow_is_404(ff):
    flow_id = new_flow_id()
    assert_error(await ff.call("GET", flow_url(flow_id)), 404, "flow_not_found",
                 names=[flow_id])


async def test_members_edges_and_counts_are_described(ff):
    dag = await submit_dag(ff, [laned("a"), laned("b"), laned("c")],
                           [("a", "b"), ("a", "c", {"data_passing_ref": "result"})])
    flow = await describe(ff, dag.flow_id)
    assert {m["execution_id"]: (m["key"], m["public_state"]) for m in flow["members"]} == {
        dag["a"]: ("a", "waiting"), dag["b"]: ("b", "waiting_children"),
        dag["c"]: ("c", "waiting_children")}
    assert nonzero(flow["counts"]) == {"waiting": 1, "waiting_children": 2}
    assert sorted((e["upstream_execution_id"], e["downstream_execution_id"],
                   e["data_passing_ref"], e["state"]) for e in flow["edges"]) == sorted([
        (dag["a"], dag["b"], None, "unsatisfied"),
        (dag["a"], dag["c"], "result", "unsatisfied")])
    assert all(str(uuid.UUID(e["edge_id"])) == e["edge_id"] for e in flow["edges"])
    task = await claim_one(ff, lane="a")
    assert nonzero((await describe(ff, dag.flow_id))["counts"]) == {
        "active": 1, "waiting_children": 2}
    await complete(ff, task)
    flow = await describe(ff, dag.flow_id)
    assert nonzero(flow["counts"]) == {"completed": 1, "waiting": 2}
    assert edge_states(flow) == ["satisfied", "satisfied"]


async def test_the_flow_state_is_derived_from_its_members(ff):
    flow_id = await create_flow(ff)
    assert await flow_state(ff, flow_id) == "open"  # no members
    a = await new_member(ff, flow_id, lane_id="a")
    b = await new_member(ff, flow_id, lane_id="b")
    assert await flow_state(ff, flow_id) == "open"
    await run_one(ff, "a")
    assert await flow_state(ff, flow_id) == "open"  # b has not ended
    await run_one(ff, "b")
    assert await flow_state(ff, flow_id) == "completed"
    # adding a member reopens it
    c = await new_member(ff, flow_id, lane_id="c")
    assert await flow_state(ff, flow_id) == "open"
    await fail_terminally(ff, await claim_one(ff, lane="c"))
    assert await flow_state(ff, flow_id) == "failed"
    assert (await replay(ff, c)).status == 200
    assert await flow_state(ff, flow_id) == "open"
    await run_one(ff, "c")
    assert await flow_state(ff, flow_id) == "completed"
    assert {a, b, c} == {m["execution_id"] for m in (await describe(ff, flow_id))["members"]}


async def test_skipped_members_count_as_done_and_cancelled_ones_as_failed(ff):
    dag = await submit_dag(ff, [laned("s1"), laned("s2")], [("s1", "s2")])
    await fail_terminally(ff, await claim_one(ff, lane="s1"))
    assert await states_of(ff, [dag["s1"], dag["s2"]]) == ["failed", "skipped"]
    assert await flow_state(ff, dag.flow_id) == "failed"
    # the failed upstream runs again and completes: the skipped child stays skipped,
    # and skipped counts as done
    assert (await replay(ff, dag["s1"])).status == 200
    assert await flow_state(ff, dag.flow_id) == "open"
    await run_one(ff, "s1")
    assert await states_of(ff, [dag["s1"], dag["s2"]]) == ["completed", "skipped"]
    assert await flow_state(ff, dag.flow_id) == "completed"

    cancelled = await submit_dag(ff, [laned("c1"), laned("c2")])
    await run_one(ff, "c2")
    assert (await ff.call("POST", exec_url(cancelled["c1"], "/cancel"), {})).status == 200
    assert await flow_state(ff, cancelled.flow_id) == "failed"


async def test_a_cancelled_flow_reads_cancelled_with_its_cancel_fields(ff):
    dag = await submit_dag(ff, [laned("a")])
    ff.clock.advance(500)
    reply = await cancel_flow(ff, dag.flow_id, "let_run", reason="operator stop")
    assert reply.status == 200
    await run_one(ff, "a")
    flow = await describe(ff, dag.flow_id)
    assert (flow["state"], flow["cancelled_at"], flow["cancel_reason"],
            flow["cancellation_policy"]) == ("cancelled", ff.clock.now_ms(), "operator stop",
                                             "let_run")


async def test_flows_are_listed_in_id_order_by_namespace_with_a_cursor(ff):
    mine = sorted([await create_flow(ff, namespace="list-ns", flow_kind=f"k{i}")
                   for i in range(5)])
    others = [await create_flow(ff, namespace="other-ns") for _ in range(2)]
    seen: list[dict] = []
    cursor = None
    for _ in range(10):
        query = {"namespace": "list-ns", "limit": "2"}
        if cursor:
            query["cursor"] = cursor
        reply = await ff.call("GET", "/v1/flows", query=query)
        assert reply.status == 200, reply
        assert len(reply.body["flows"]) <= 2
        seen += reply.body["flows"]
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
    assert [f["flow_id"] for f in seen] == mine
    assert all(set(f) == {"flow_id", "flow_kind", "namespace", "created_at"} for f in seen)
    assert {f["namespace"] for f in seen} == {"list-ns"}
    assert sorted(f["flow_kind"] for f in seen) == [f"k{i}" for i in range(5)]

    everything = await ff.call("GET", "/v1/flows", query={"limit": "1000"})
    ids = [f["flow_id"] for f in everything.body["flows"]]
    assert ids == sorted(mine + others) and everything.body["next_cursor"] is None
    default = await ff.call("GET", "/v1/flows")
    assert [f["flow_id"] for f in default.body["flows"]] == ids  # limit 50 by default

    empty = await ff.call("GET", "/v1/flows", query={"limit": "0"})
    assert (empty.status, empty.body["flows"]) == (200, [])
    after_last = await ff.call("GET", "/v1/flows", query={"cursor": ids[-1]})
    assert after_last.body == {"flows": [], "next_cursor": None}
    nobody = await ff.call("GET", "/v1/flows", query={"namespace": "nobody"})
    assert nobody.body == {"flows": [], "next_cursor": None}


async def test_listing_refuses_bad_queries(ff):
    for query, named in [({"limit": "-1"}, "limit"), ({"limit": "1001"}, "limit"),
                         ({"limit": "abc"}, "limit"), ({"limit": "1e3"}, "limit"),
                         ({"limit": "9" * 40}, "limit"), ({"cursor": "nope"}, "cursor"),
                         ({"page": "2"}, "page")]:
        assert_error(await ff.call("GET", "/v1/flows", query=query), 400, "invalid_input",
                     names=[named])


async def test_every_member_of_a_finished_flow_is_terminal(ff):
    dag = await submit_dag(ff, [laned("a"), laned("b")], [("a", "b")])
    await run_one(ff, "a")
    await run_one(ff, "b")
    flow = await describe(ff, dag.flow_id)
    assert {m["public_state"] for m in flow["members"]} <= TERMINAL
    assert flow["state"] == "completed"
