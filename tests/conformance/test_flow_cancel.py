"""Cancelling a flow (spec/flows.md § Cancelling a flow): each policy, in the background
(CancellationScheduled; polled with a deadline) and inline with ``?wait=true``; a second
cancel; the cancel reconciler finishing a backlog left behind.

Reference B §12 cases 7, 32, 35–38."""

from __future__ import annotations

from flow_helpers import (
    assert_error,
    cancel_flow,
    claim_one,
    complete,
    describe,
    flow_url,
    laned,
    new_flow_id,
    node,
    nonzero,
    poll_until,
    run_one,
    state_of,
    states_of,
    submit_dag,
)

REASON = "customer withdrew the order"


async def mixed(ff):
    """done (completed) → gated; running; waiting; delayed; gated behind running.

    Returns the DAG and the running member's task."""
    now = ff.clock.now_ms()
    dag = await submit_dag(ff, [laned("done"), laned("after_done"), laned("running"),
                                laned("waiting"), laned("delayed", delay_until=now + 60_000),
                                laned("gated")],
                           [("running", "gated"), ("done", "after_done"),
                            ("waiting", "after_done")])
    await run_one(ff, "done")
    task = await claim_one(ff, lane="running")
    assert await states_of(ff, [dag[k] for k in ("done", "after_done", "running", "waiting",
                                                 "delayed", "gated")]) == [
        "completed", "waiting_children", "active", "waiting", "delayed", "waiting_children"]
    return dag, task


async def cancelled_members(ff, dag, keys) -> list[str]:
    return await poll_until(lambda: states_of(ff, [dag[k] for k in keys]),
                            lambda states: set(states) == {"cancelled"},
                            what=f"members {keys} cancelled")


async def assert_cancelled_by_flow(ff, dag, keys) -> None:
    for key in keys:
        info = await ff.info(dag[key])
        assert info["public_state"] == "cancelled", (key, info)
        assert info["cancellation_reason"] == REASON, (key, info)


# -- cancel_all ---------------------------------------------------------------------------------


async def test_cancel_all_in_the_background_cancels_every_member_not_ended(ff):
    dag, task = await mixed(ff)
    reply = await cancel_flow(ff, dag.flow_id, "cancel_all", reason=REASON)
    assert reply.status == 200, reply
    assert set(reply.body) == {"CancellationScheduled"}, reply
    scheduled = reply.body["CancellationScheduled"]
    assert scheduled["cancellation_policy"] == "cancel_all"
    assert sorted(scheduled["member_execution_ids"]) == sorted(dag.ids.values())
    assert scheduled["member_count"] == len(dag.ids)
    # the flag is in the same step as the answer
    flow = await describe(ff, dag.flow_id)
    assert (flow["state"], flow["cancellation_policy"], flow["cancel_reason"]) == (
        "cancelled", "cancel_all", REASON)
    owed = ["after_done", "running", "waiting", "delayed", "gated"]
    await cancelled_members(ff, dag, owed)
    await assert_cancelled_by_flow(ff, dag, owed)
    assert await state_of(ff, dag["done"]) == "completed"
    reply = await ff.worker_op("complete", task)
    assert (reply.status, reply.body["kind"]) == (409, "execution_not_active"), reply
    flow = await describe(ff, dag.flow_id)
    assert nonzero(flow["counts"]) == {"completed": 1, "cancelled": 5}
    assert flow["state"] == "cancelled"


async def test_cancel_all_with_wait_answers_once_every_member_is_cancelled(ff):
    dag, task = await mixed(ff)
    reply = await cancel_flow(ff, dag.flow_id, "cancel_all", reason=REASON, wait=True)
    assert reply.status == 200, reply
    assert set(reply.body) == {"Cancelled"}, reply
    assert reply.body["Cancelled"]["cancellation_policy"] == "cancel_all"
    assert sorted(reply.body["Cancelled"]["member_execution_ids"]) == sorted(dag.ids.values())
    owed = ["after_done", "running", "waiting", "delayed", "gated"]
    await assert_cancelled_by_flow(ff, dag, owed)
    assert await state_of(ff, dag["done"]) == "completed"
    for key in owed:
        assert await claim_one(ff, lane=key) is None
    reply = await ff.worker_op("renew", task)
    assert reply.status == 409, reply


async def test_a_flow_cancel_cancels_gated_children_rather_than_skipping_them(ff):
    dag = await submit_dag(ff, [laned("a"), laned("b"), laned("c")], [("a", "b"), ("b", "c")])
    reply = await cancel_flow(ff, dag.flow_id, "cancel_all", reason=REASON, wait=True)
    assert reply.status == 200, reply
    await assert_cancelled_by_flow(ff, dag, "abc")


async def test_cancel_all_of_100_members_in_the_background(ff):
    dag = await submit_dag(ff, [node(f"m{i}", lane_id="many") for i in range(100)])
    reply = await cancel_flow(ff, dag.flow_id, "cancel_all", reason=REASON)
    assert reply.body["CancellationScheduled"]["member_count"] == 100, reply
    await poll_until(lambda: describe(ff, dag.flow_id),
                     lambda flow: nonzero(flow["counts"]) == {"cancelled": 100},
                     what="100 members cancelled")
    assert await claim_one(ff, lane="many") is None


async def test_cancel_all_of_100_members_with_wait(ff):
    dag = await submit_dag(ff, [node(f"m{i}", lane_id="many") for i in range(100)])
    reply = await cancel_flow(ff, dag.flow_id, "cancel_all", reason=REASON, wait=True)
    assert len(reply.body["Cancelled"]["member_execution_ids"]) == 100, reply
    assert nonzero((await describe(ff, dag.flow_id))["counts"]) == {"cancelled": 100}


async def test_wait_1_is_wait_true(ff):
    dag = await submit_dag(ff, [laned("a")])
    reply = await ff.call("POST", flow_url(dag.flow_id, "/cancel"), {
        "flow_id": dag.flow_id, "cancellation_policy": "cancel_all"}, query={"wait": "1"})
    assert set(reply.body) == {"Cancelled"}, reply
    assert await state_of(ff, dag["a"]) == "cancelled"


async def test_a_member_that_already_ended_counts_as_done(ff):
    dag = await submit_dag(ff, [laned("a"), laned("b")])
    await run_one(ff, "a")
    reply = await cancel_flow(ff, dag.flow_id, "cancel_all", reason=REASON, wait=True)
    assert set(reply.body) == {"Cancelled"}, reply
    assert await states_of(ff, [dag["a"], dag["b"]]) == ["completed", "cancelled"]


# -- cancel_pending -----------------------------------------------------------------------------


async def test_cancel_pending_in_the_background_lets_running_members_finish(ff):
    dag, task = await mixed(ff)
    reply = await cancel_flow(ff, dag.flow_id, "cancel_pending", reason=REASON)
    assert reply.status == 200, reply
    scheduled = reply.body["CancellationScheduled"]
    assert scheduled["cancellation_policy"] == "cancel_pending"
    assert sorted(scheduled["member_execution_ids"]) == sorted(dag.ids.values())
    assert scheduled["member_count"] == len(scheduled["member_execution_ids"])
    owed = ["after_done", "waiting", "delayed", "gated"]
    await cancelled_members(ff, dag, owed)
    await assert_cancelled_by_flow(ff, dag, owed)
    assert await state_of(ff, dag["running"]) == "active"
    await complete(ff, task)
    assert await states_of(ff, [dag["running"], dag["gated"]]) == ["completed", "cancelled"]
    assert (await describe(ff, dag.flow_id))["state"] == "cancelled"


async def test_cancel_pending_with_wait(ff):
    dag, task = await mixed(ff)
    reply = await cancel_flow(ff, dag.flow_id, "cancel_pending", reason=REASON, wait=True)
    assert set(reply.body) == {"Cancelled"}, reply
    assert reply.body["Cancelled"]["cancellation_policy"] == "cancel_pending"
    await assert_cancelled_by_flow(ff, dag, ["after_done", "waiting", "delayed", "gated"])
    assert await state_of(ff, dag["running"]) == "active"
    await complete(ff, task)


async def test_cancel_pending_with_only_running_members_owes_nothing(ff):
    dag = await submit_dag(ff, [laned("a")])
    task = await claim_one(ff, lane="a")
    reply = await cancel_flow(ff, dag.flow_id, "cancel_pending")
    assert reply.body == {"Cancelled": {"cancellation_policy": "cancel_pending",
                                        "member_execution_ids": [dag["a"]]}}, reply
    await complete(ff, task)


# -- let_run ------------------------------------------------------------------------------------


async def test_let_run_touches_no_member(ff):
    for wait in (False, True):
        dag = await submit_dag(ff, [laned("a"), laned("b")], [("a", "b")])
        reply = await cancel_flow(ff, dag.flow_id, "let_run", reason=REASON, wait=wait)
        assert set(reply.body) == {"Cancelled"}, reply
        assert reply.body["Cancelled"]["cancellation_policy"] == "let_run"
        assert sorted(reply.body["Cancelled"]["member_execution_ids"]) == sorted(
            dag.ids.values())
        assert await states_of(ff, [dag["a"], dag["b"]]) == ["waiting", "waiting_children"]
        await run_one(ff, "a")  # members still run, and release their children
        await run_one(ff, "b")
        flow = await describe(ff, dag.flow_id)
        assert (flow["state"], nonzero(flow["counts"])) == ("cancelled", {"completed": 2})


# -- a second cancel ----------------------------------------------------------------------------


async def test_a_second_cancel_answers_the_stored_policy_and_changes_nothing(ff):
    dag, task = await mixed(ff)
    first = await cancel_flow(ff, dag.flow_id, "cancel_pending", reason=REASON, wait=True)
    assert first.status == 200, first
    before = await describe(ff, dag.flow_id)
    ff.clock.advance(1000)
    for wait in (False, True):
        again = await cancel_flow(ff, dag.flow_id, "cancel_all", reason="other", wait=wait)
        assert again.status == 200, again
        assert set(again.body) == {"Cancelled"}, again
        assert again.body["Cancelled"]["cancellation_policy"] == "cancel_pending"
        assert sorted(again.body["Cancelled"]["member_execution_ids"]) == sorted(
            dag.ids.values())
    assert await state_of(ff, dag["running"]) == "active"  # cancel_all was not applied
    assert await describe(ff, dag.flow_id) == before
    await complete(ff, task)


async def test_a_second_cancel_lists_at_most_1000_members(ff):
    dag = await submit_dag(ff, [node(f"m{i}", lane_id="big") for i in range(1001)])
    first = await cancel_flow(ff, dag.flow_id, "let_run")
    assert len(first.body["Cancelled"]["member_execution_ids"]) == 1001
    again = await cancel_flow(ff, dag.flow_id, "let_run")
    ids = again.body["Cancelled"]["member_execution_ids"]
    assert len(ids) == 1000 and set(ids) <= set(dag.ids.values())


# -- the cancel reconciler ----------------------------------------------------------------------


async def test_the_cancel_reconciler_finishes_a_backlog_left_behind(ff):
    dag = await submit_dag(ff, [laned("a"), laned("b"), laned("c")], [("a", "b")])
    task = await claim_one(ff, lane="c")
    # flagged as an appliance killed mid-dispatch leaves it: nothing cancelled yet
    header = await ff.backend.cancel_flow(dag.flow_id, REASON, "cancel_all")
    assert sorted(header.owed) == sorted(dag.ids.values())
    assert await states_of(ff, [dag[k] for k in "abc"]) == [
        "waiting", "waiting_children", "active"]
    ff.clock.advance(120_000)
    result = await ff.tick("flow_cancel_reconciler")
    assert result.processed == 3
    await assert_cancelled_by_flow(ff, dag, "abc")
    assert (await ff.tick("flow_cancel_reconciler")).processed == 0  # the backlog is empty
    assert (await ff.worker_op("complete", task)).status == 409


async def test_a_member_that_ended_before_its_owed_cancel_ran_is_done_not_failed(ff):
    dag = await submit_dag(ff, [laned("a"), laned("b")])
    task = await claim_one(ff, lane="a")
    header = await ff.backend.cancel_flow(dag.flow_id, REASON, "cancel_all")
    assert sorted(header.owed) == sorted(dag.ids.values())
    await complete(ff, task)  # its worker got there first
    ff.clock.advance(120_000)
    result = await ff.tick("flow_cancel_reconciler")
    assert (result.processed, dict(result.failed)) == (2, {})
    assert await states_of(ff, [dag["a"], dag["b"]]) == ["completed", "cancelled"]
    assert (await ff.tick("flow_cancel_reconciler")).processed == 0


async def test_the_cancel_reconciler_leaves_a_dispatched_cancel_alone(ff):
    dag = await submit_dag(ff, [laned("a")])
    reply = await cancel_flow(ff, dag.flow_id, "cancel_all", reason=REASON, wait=True)
    assert set(reply.body) == {"Cancelled"}
    ff.clock.advance(120_000)
    assert (await ff.tick("flow_cancel_reconciler")).processed == 0


# -- refusals -----------------------------------------------------------------------------------


async def test_cancelling_a_missing_flow_is_404(ff):
    flow_id = new_flow_id()
    for wait in (False, True):
        assert_error(await cancel_flow(ff, flow_id, wait=wait), 404, "flow_not_found",
                     names=[flow_id])


async def test_a_bad_policy_or_query_is_400_and_cancels_nothing(ff):
    dag = await submit_dag(ff, [laned("a")])
    url = flow_url(dag.flow_id, "/cancel")
    for policy in ("flow_only", "CANCEL_ALL", "", None, 1, ["cancel_all"], {"x": 1}):
        reply = await ff.call("POST", url, {"flow_id": dag.flow_id,
                                            "cancellation_policy": policy})
        assert_error(reply, 400, "invalid_input", names=["cancellation_policy"])
    assert_error(await ff.call("POST", url, {"flow_id": dag.flow_id}), 400, "invalid_input",
                 names=["cancellation_policy"])
    body = {"flow_id": dag.flow_id, "cancellation_policy": "cancel_all"}
    for query, named in [({"wait": "banana"}, "wait"), ({"wiat": "true"}, "wiat")]:
        assert_error(await ff.call("POST", url, body, query=query), 400, "invalid_input",
                     names=[named])
    assert (await describe(ff, dag.flow_id))["state"] == "open"
    assert await state_of(ff, dag["a"]) == "waiting"
