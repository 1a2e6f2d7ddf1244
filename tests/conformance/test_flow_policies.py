"""Edge-group policies (all_of, any_of, quorum; cancel_remaining / let_run), skip
propagation, and a skipped member replayed (spec/flows.md § Resolution).

Reference B §12 cases 15–18, 20, 23–29."""

from __future__ import annotations

import trio
from flow_helpers import (
    claim_many,
    claim_one,
    complete,
    complete_all,
    counters,
    create_flow,
    describe,
    exec_url,
    fail_terminally,
    flow_state,
    group_of,
    laned,
    link,
    new_member,
    node,
    replay,
    run_one,
    state_of,
    states_of,
    submit_dag,
    woken_by,
)


def fan_in(n: int, policy: dict, *, lane: str = "up") -> tuple[list, list, dict]:
    """``n`` upstreams u0.. (on ``lane``) into a child on lane "child"."""
    nodes = [node(f"u{i}", lane_id=lane) for i in range(n)] + [laned("child")]
    edges = [(f"u{i}", "child") for i in range(n)]
    return nodes, edges, {"child": policy}


async def up_tasks(ff, dag, n: int, lane: str = "up") -> dict[str, dict]:
    """Claim the ``n`` upstreams: key → task."""
    tasks = await claim_many(ff, lane=lane)
    assert len(tasks) == n
    by_id = {t["execution_id"]: t for t in tasks}
    return {f"u{i}": by_id[dag[f"u{i}"]] for i in range(n)}


async def cancellation_reason(ff, execution_id: str) -> str | None:
    return (await ff.info(execution_id)).get("cancellation_reason")


# -- any_of -------------------------------------------------------------------------------------


async def test_any_of_cancel_remaining_releases_at_the_first_success_and_cancels_the_rest(ff):
    dag = await submit_dag(ff, *fan_in(3, {"policy": "any_of",
                                           "on_satisfied": "cancel_remaining"}))
    up = await up_tasks(ff, dag, 3)
    await complete(ff, up["u1"])
    # the same step: child released, siblings cancelled
    assert await states_of(ff, [dag[k] for k in ("u0", "u1", "u2", "child")]) == [
        "cancelled", "completed", "cancelled", "waiting"]
    for key in ("u0", "u2"):
        assert await cancellation_reason(ff, dag[key]) == "sibling_quorum_satisfied"
        reply = await ff.worker_op("complete", up[key])
        assert (reply.status, reply.body["kind"]) == (409, "execution_not_active"), reply
    flow = await describe(ff, dag.flow_id)
    assert counters(group_of(flow, dag["child"])) == (1, 2, 0, "satisfied")
    group = group_of(flow, dag["child"])
    assert (group["policy"], group["on_satisfied"], group["n"]) == (
        "any_of", "cancel_remaining", 3)
    task = await claim_one(ff, lane="child")
    assert task["execution_id"] == dag["child"]  # a sibling cancel does not touch the child
    await complete(ff, task)
    assert await flow_state(ff, dag.flow_id) == "failed"  # two members ended cancelled


async def test_any_of_let_run_releases_at_the_first_success_and_leaves_the_rest(ff):
    dag = await submit_dag(ff, *fan_in(3, {"policy": "any_of", "on_satisfied": "let_run"}))
    up = await up_tasks(ff, dag, 3)
    await complete(ff, up["u0"])
    assert await states_of(ff, [dag[k] for k in ("u1", "u2", "child")]) == [
        "active", "active", "waiting"]
    # once fired, a group only counts
    await fail_terminally(ff, up["u1"])
    await complete(ff, up["u2"])
    assert await state_of(ff, dag["child"]) == "waiting"
    assert counters(group_of(await describe(ff, dag.flow_id), dag["child"])) == (
        2, 1, 0, "satisfied")
    assert (await claim_one(ff, lane="child"))["execution_id"] == dag["child"]


async def test_any_of_without_on_satisfied_lets_the_rest_run(ff):
    dag = await submit_dag(ff, *fan_in(2, {"policy": "any_of"}))
    up = await up_tasks(ff, dag, 2)
    await complete(ff, up["u0"])
    assert await states_of(ff, [dag["u1"], dag["child"]]) == ["active", "waiting"]
    assert group_of(await describe(ff, dag.flow_id), dag["child"])["on_satisfied"] == "let_run"


async def test_any_of_is_impossible_only_when_every_upstream_failed(ff):
    dag = await submit_dag(ff, *fan_in(3, {"policy": "any_of"}))
    up = await up_tasks(ff, dag, 3)
    await fail_terminally(ff, up["u0"])
    await fail_terminally(ff, up["u1"])
    assert await state_of(ff, dag["child"]) == "waiting_children"
    assert counters(group_of(await describe(ff, dag.flow_id), dag["child"])) == (
        0, 2, 0, "pending")
    await fail_terminally(ff, up["u2"])
    assert await state_of(ff, dag["child"]) == "skipped"
    assert counters(group_of(await describe(ff, dag.flow_id), dag["child"])) == (
        0, 3, 0, "impossible")


async def test_any_of_released_after_failures_wakes_a_waiting_claim(ff):
    dag = await submit_dag(ff, *fan_in(2, {"policy": "any_of"}))
    up = await up_tasks(ff, dag, 2)
    await fail_terminally(ff, up["u0"])

    async def succeed() -> None:
        await complete(ff, up["u1"])
    assert (await woken_by(ff, "child", succeed))["execution_id"] == dag["child"]


# -- quorum -------------------------------------------------------------------------------------


async def test_quorum_3_of_5_is_satisfied_by_the_third_success(ff):
    dag = await submit_dag(ff, *fan_in(5, {"policy": "quorum", "k": 3,
                                           "on_satisfied": "cancel_remaining"}))
    up = await up_tasks(ff, dag, 5)
    await complete_all(ff, [up["u0"], up["u1"]])
    await fail_terminally(ff, up["u2"])
    assert await state_of(ff, dag["child"]) == "waiting_children"
    assert counters(group_of(await describe(ff, dag.flow_id), dag["child"])) == (
        2, 1, 0, "pending")
    await complete(ff, up["u3"])
    assert await states_of(ff, [dag["u4"], dag["child"]]) == ["cancelled", "waiting"]
    assert await cancellation_reason(ff, dag["u4"]) == "sibling_quorum_satisfied"
    group = group_of(await describe(ff, dag.flow_id), dag["child"])
    assert (group["policy"], group["k"], group["n"]) == ("quorum", 3, 5)
    assert counters(group) == (3, 2, 0, "satisfied")


async def test_quorum_3_of_5_with_three_failures_is_impossible_and_cancels_the_rest(ff):
    dag = await submit_dag(ff, *fan_in(5, {"policy": "quorum", "k": 3,
                                           "on_satisfied": "cancel_remaining"}))
    up = await up_tasks(ff, dag, 5)
    await complete(ff, up["u0"])
    await fail_terminally(ff, up["u1"])
    await fail_terminally(ff, up["u2"])
    assert await state_of(ff, dag["child"]) == "waiting_children"
    await fail_terminally(ff, up["u3"])  # 3 failures > n - k = 2
    assert await states_of(ff, [dag["u4"], dag["child"]]) == ["cancelled", "skipped"]
    assert await cancellation_reason(ff, dag["u4"]) == "sibling_quorum_impossible"
    assert counters(group_of(await describe(ff, dag.flow_id), dag["child"])) == (
        1, 4, 0, "impossible")


async def test_quorum_3_of_5_impossible_with_let_run_leaves_the_rest_running(ff):
    dag = await submit_dag(ff, *fan_in(5, {"policy": "quorum", "k": 3,
                                           "on_satisfied": "let_run"}))
    up = await up_tasks(ff, dag, 5)
    for key in ("u0", "u1", "u2"):
        await fail_terminally(ff, up[key])
    assert await states_of(ff, [dag["u3"], dag["u4"], dag["child"]]) == [
        "active", "active", "skipped"]
    await complete_all(ff, [up["u3"], up["u4"]])
    assert await state_of(ff, dag["child"]) == "skipped"
    assert counters(group_of(await describe(ff, dag.flow_id), dag["child"])) == (
        2, 3, 0, "impossible")


async def test_quorum_3_of_3_is_impossible_at_the_first_failure(ff):
    dag = await submit_dag(ff, *fan_in(3, {"policy": "quorum", "k": 3}))
    up = await up_tasks(ff, dag, 3)
    await fail_terminally(ff, up["u0"])
    assert await state_of(ff, dag["child"]) == "skipped"


async def test_quorum_1_of_50_cancel_remaining_cancels_49_siblings(ff):
    dag = await submit_dag(ff, *fan_in(50, {"policy": "quorum", "k": 1,
                                            "on_satisfied": "cancel_remaining"}))
    up = await up_tasks(ff, dag, 50)
    await complete(ff, up["u7"])
    flow = await describe(ff, dag.flow_id)
    states = {m["execution_id"]: m["public_state"] for m in flow["members"]}
    assert states[dag["child"]] == "waiting"
    assert sorted(states[dag[f"u{i}"]] for i in range(50)) == ["cancelled"] * 49 + [
        "completed"]
    assert counters(group_of(flow, dag["child"])) == (1, 49, 0, "satisfied")


async def test_a_quorum_with_k_above_its_applied_edges_is_impossible_at_the_first_end(ff):
    flow_id = await create_flow(ff)
    a, b, child = [await new_member(ff, flow_id, lane_id=k) for k in ("a", "b", "child")]
    reply = await ff.call("POST", f"/v1/flows/{flow_id}/edge-groups", {
        "flow_id": flow_id, "downstream_execution_id": child, "policy": "quorum", "k": 3})
    assert reply.status == 200, reply
    await link(ff, flow_id, a, child)
    await link(ff, flow_id, b, child)
    await run_one(ff, "a")
    assert await state_of(ff, child) == "skipped"
    assert counters(group_of(await describe(ff, flow_id), child)) == (1, 0, 0, "impossible")


async def test_cancel_remaining_ends_a_running_sibling_whose_worker_then_sees_it_gone(ff):
    dag = await submit_dag(ff, *fan_in(2, {"policy": "any_of",
                                           "on_satisfied": "cancel_remaining"}))
    up = await up_tasks(ff, dag, 2)
    await complete(ff, up["u0"])
    for op, fields in [("renew", {}), ("progress", {"progress_pct": 5}), ("complete", {})]:
        reply = await ff.worker_op(op, up["u1"], **fields)
        assert reply.status == 409, reply
        assert reply.body["kind"] == "execution_not_active", reply
        assert reply.body.get("terminal_outcome", "cancelled") == "cancelled"


# -- skips --------------------------------------------------------------------------------------


async def test_a_skip_propagates_through_three_levels_in_the_same_step(ff):
    dag = await submit_dag(ff, [laned(k) for k in ("a", "b", "c", "d", "side")],
                           [("a", "b"), ("b", "c"), ("c", "d"), ("side", "d")])
    await fail_terminally(ff, await claim_one(ff, lane="a"))
    assert await states_of(ff, [dag[k] for k in "abcd"]) == [
        "failed", "skipped", "skipped", "skipped"]
    flow = await describe(ff, dag.flow_id)
    assert counters(group_of(flow, dag["b"])) == (0, 1, 0, "impossible")
    assert counters(group_of(flow, dag["c"])) == (0, 0, 1, "impossible")
    assert counters(group_of(flow, dag["d"])) == (0, 0, 1, "impossible")
    for key in "bcd":
        info = await ff.info(dag[key])
        assert info["state_vector"]["terminal_outcome"] == "skipped"
        assert info["total_attempt_count"] == 0
    for key in "bcd":
        assert await claim_one(ff, lane=key) is None
    await run_one(ff, "side")  # d already ended: it only counts
    flow = await describe(ff, dag.flow_id)
    assert counters(group_of(flow, dag["d"])) == (1, 0, 1, "impossible")
    assert await state_of(ff, dag["d"]) == "skipped"
    assert flow["state"] == "failed"


async def test_a_skipped_upstream_counts_as_skipped_in_a_quorum(ff):
    dag = await submit_dag(
        ff, [laned("root"), laned("mid"), laned("p"), laned("q"), laned("child")],
        [("root", "mid"), ("mid", "child"), ("p", "child"), ("q", "child")],
        {"child": {"policy": "quorum", "k": 2}})
    await fail_terminally(ff, await claim_one(ff, lane="root"))
    assert await states_of(ff, [dag["mid"], dag["child"]]) == ["skipped", "waiting_children"]
    assert counters(group_of(await describe(ff, dag.flow_id), dag["child"])) == (
        0, 0, 1, "pending")
    await run_one(ff, "p")
    await run_one(ff, "q")
    assert await state_of(ff, dag["child"]) == "waiting"
    assert counters(group_of(await describe(ff, dag.flow_id), dag["child"])) == (
        2, 0, 1, "satisfied")


async def test_a_cancelled_upstream_skips_its_child(ff):
    dag = await submit_dag(ff, [laned("a"), laned("b")], [("a", "b")])
    reply = await ff.call("POST", exec_url(dag["a"], "/cancel"), {"reason": "no longer needed"})
    assert reply.status == 200
    assert await state_of(ff, dag["b"]) == "skipped"
    assert counters(group_of(await describe(ff, dag.flow_id), dag["b"])) == (
        0, 1, 0, "impossible")


async def test_an_expired_upstream_skips_its_child(ff):
    now = ff.clock.now_ms()
    dag = await submit_dag(ff, [laned("a", execution_deadline_at=now + 1000), laned("b")],
                           [("a", "b")])
    ff.clock.advance(1001)
    await ff.tick("execution_deadline")
    assert await states_of(ff, [dag["a"], dag["b"]]) == ["expired", "skipped"]


async def test_a_gated_child_that_expires_resolves_its_own_children(ff):
    now = ff.clock.now_ms()
    dag = await submit_dag(ff, [laned("a"), laned("b", execution_deadline_at=now + 1000),
                                laned("c")], [("a", "b"), ("b", "c")])
    ff.clock.advance(1001)
    await ff.tick("execution_deadline")
    assert await states_of(ff, [dag["a"], dag["b"], dag["c"]]) == [
        "waiting", "expired", "skipped"]
    await run_one(ff, "a")  # b ended: the satisfied edge releases nothing
    assert await states_of(ff, [dag["b"], dag["c"]]) == ["expired", "skipped"]


async def test_a_running_member_is_skipped_when_its_group_becomes_impossible(ff):
    flow_id = await create_flow(ff)
    a, b = [await new_member(ff, flow_id, lane_id=k) for k in ("a", "b")]
    task_b = await claim_one(ff, lane="b")
    await link(ff, flow_id, a, b)
    assert await state_of(ff, b) == "active"  # running: not held
    await fail_terminally(ff, await claim_one(ff, lane="a"))
    assert await state_of(ff, b) == "skipped"
    info = await ff.info(b)
    assert info["state_vector"]["terminal_outcome"] == "skipped"
    assert "current_worker_id" not in info and "lease_expires_at" not in info
    reply = await ff.worker_op("complete", task_b)
    assert (reply.status, reply.body["kind"]) == (409, "execution_not_active"), reply
    assert reply.body.get("terminal_outcome", "skipped") == "skipped"
    assert (await ff.worker_op("renew", task_b)).status == 409


# -- replaying a skipped member -----------------------------------------------------------------


async def test_a_replayed_skipped_member_is_skipped_again_while_its_upstream_failed(ff):
    dag = await submit_dag(ff, [laned("a"), laned("b"), laned("c")], [("a", "b"), ("b", "c")])
    await fail_terminally(ff, await claim_one(ff, lane="a"))
    assert await state_of(ff, dag["b"]) == "skipped"
    reply = await replay(ff, dag["b"])
    assert (reply.status, reply.body) == (200, {"Replayed": {"public_state": "skipped"}})
    assert await state_of(ff, dag["b"]) == "skipped"
    info = await ff.info(dag["b"])
    assert info["replay_count"] == 1
    assert await claim_one(ff, lane="b") is None
    assert counters(group_of(await describe(ff, dag.flow_id), dag["b"])) == (
        0, 1, 0, "impossible")


async def test_a_replayed_skipped_member_is_released_once_its_upstream_was_replayed(ff):
    dag = await submit_dag(ff, [laned("a"), laned("b"), laned("c")], [("a", "b"), ("b", "c")])
    await fail_terminally(ff, await claim_one(ff, lane="a"))
    assert await states_of(ff, [dag["b"], dag["c"]]) == ["skipped", "skipped"]
    assert (await replay(ff, dag["a"])).status == 200
    await run_one(ff, "a")
    assert await state_of(ff, dag["b"]) == "skipped"  # a skip stays until replayed
    reply = await replay(ff, dag["b"])
    assert (reply.status, reply.body) == (200, {"Replayed": {"public_state": "waiting"}})
    assert await state_of(ff, dag["b"]) == "waiting"
    flow = await describe(ff, dag.flow_id)
    assert counters(group_of(flow, dag["b"])) == (1, 0, 0, "satisfied")
    task = await claim_one(ff, lane="b")
    assert (task["execution_id"], task["attempt_type"]) == (dag["b"], "replay")
    await complete(ff, task)
    assert await state_of(ff, dag["c"]) == "skipped"  # c was not replayed
    assert (await replay(ff, dag["c"])).status == 200
    await run_one(ff, "c")
    assert await flow_state(ff, dag.flow_id) == "completed"


async def test_a_replayed_skipped_member_waits_for_an_upstream_running_again(ff):
    dag = await submit_dag(ff, [laned("a"), laned("b")], [("a", "b")])
    await fail_terminally(ff, await claim_one(ff, lane="a"))
    assert (await replay(ff, dag["a"])).status == 200
    reply = await replay(ff, dag["b"])
    assert (reply.status, reply.body) == (200, {"Replayed": {"public_state":
                                                             "waiting_children"}})
    assert await state_of(ff, dag["b"]) == "waiting_children"
    info = await ff.info(dag["b"])
    assert info["state_vector"]["eligibility_state"] == "blocked_by_dependencies"
    assert info["state_vector"]["attempt_state"] == "pending_replay_attempt"
    assert counters(group_of(await describe(ff, dag.flow_id), dag["b"])) == (
        0, 0, 0, "pending")
    assert await claim_one(ff, lane="b") is None
    task = await claim_one(ff, lane="a")

    async def complete_upstream() -> None:
        await complete(ff, task)
    got = await woken_by(ff, "b", complete_upstream)
    assert (got["execution_id"], got["attempt_type"]) == (dag["b"], "replay")


async def test_a_replayed_skipped_member_keeps_its_satisfied_edges(ff):
    dag = await submit_dag(ff, [laned("p"), laned("q"), laned("child")],
                           [("p", "child"), ("q", "child")])
    await run_one(ff, "p")
    await fail_terminally(ff, await claim_one(ff, lane="q"))
    assert await state_of(ff, dag["child"]) == "skipped"
    assert (await replay(ff, dag["q"])).status == 200
    assert (await replay(ff, dag["child"])).status == 200
    assert await state_of(ff, dag["child"]) == "waiting_children"
    assert counters(group_of(await describe(ff, dag.flow_id), dag["child"])) == (
        1, 0, 0, "pending")
    await run_one(ff, "q")
    assert await state_of(ff, dag["child"]) == "waiting"


async def test_an_upstream_retrying_resolves_nothing_until_its_final_failure(ff):
    retry = {"retry_policy": {"max_retries": 1, "backoff": {"type": "fixed", "delay_ms": 0}}}
    dag = await submit_dag(ff, [laned("a", policy=retry), laned("b")], [("a", "b")])
    reply = await ff.worker_op("fail", await claim_one(ff, lane="a"), failure_reason="x")
    assert "RetryScheduled" in reply.body, reply
    assert await state_of(ff, dag["b"]) == "waiting_children"
    assert counters(group_of(await describe(ff, dag.flow_id), dag["b"])) == (
        0, 0, 0, "pending")
    await fail_terminally(ff, await claim_one(ff, lane="a"))
    assert await state_of(ff, dag["b"]) == "skipped"


async def test_a_replayed_completed_child_is_not_held_by_its_satisfied_edges(ff):
    dag = await submit_dag(ff, [laned("a"), laned("b")], [("a", "b")])
    await run_one(ff, "a")
    await run_one(ff, "b")
    assert (await replay(ff, dag["b"])).status == 200
    assert await state_of(ff, dag["b"]) == "waiting"
    assert counters(group_of(await describe(ff, dag.flow_id), dag["b"])) == (
        1, 0, 0, "satisfied")
    task = await claim_one(ff, lane="b")
    assert (task["execution_id"], task["attempt_type"]) == (dag["b"], "replay")


async def test_replaying_a_skipped_member_whose_upstream_now_succeeded_wakes_a_claim(ff):
    dag = await submit_dag(ff, [laned("a"), laned("b")], [("a", "b")])
    await fail_terminally(ff, await claim_one(ff, lane="a"))
    assert (await replay(ff, dag["a"])).status == 200
    await run_one(ff, "a")

    async def replay_child() -> None:
        assert (await replay(ff, dag["b"])).status == 200
    got = await woken_by(ff, "b", replay_child)
    assert (got["execution_id"], got["attempt_type"]) == (dag["b"], "replay")


# -- upstreams ending concurrently --------------------------------------------------------------


async def complete_concurrently(ff, tasks: list[dict]) -> list:
    replies: list = []

    async def one(task: dict) -> None:
        replies.append(await ff.worker_op("complete", task))

    async with trio.open_nursery() as nursery:
        for task in tasks:
            nursery.start_soon(one, task)
    return replies


async def test_upstreams_completing_concurrently_release_the_fan_in_once(ff):
    dag = await submit_dag(ff, *fan_in(30, {"policy": "all_of"}))
    up = await up_tasks(ff, dag, 30)
    replies = await complete_concurrently(ff, list(up.values()))
    assert [r.status for r in replies] == [200] * 30, replies
    assert counters(group_of(await describe(ff, dag.flow_id), dag["child"])) == (
        30, 0, 0, "satisfied")
    assert (await claim_one(ff, lane="child"))["execution_id"] == dag["child"]


async def test_siblings_completing_concurrently_with_cancel_remaining_all_end_once(ff):
    dag = await submit_dag(ff, *fan_in(10, {"policy": "any_of",
                                            "on_satisfied": "cancel_remaining"}))
    up = await up_tasks(ff, dag, 10)
    replies = await complete_concurrently(ff, list(up.values()))
    for reply in replies:
        assert reply.status == 200 or reply.body["kind"] == "execution_not_active", reply
    won = sum(r.status == 200 for r in replies)
    flow = await describe(ff, dag.flow_id)
    states = [m["public_state"] for m in flow["members"] if m["execution_id"] != dag["child"]]
    assert sorted(states) == ["cancelled"] * (10 - won) + ["completed"] * won
    assert counters(group_of(flow, dag["child"])) == (won, 10 - won, 0, "satisfied")
    assert won >= 1
    assert await state_of(ff, dag["child"]) == "waiting"
