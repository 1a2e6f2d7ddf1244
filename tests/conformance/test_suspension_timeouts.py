"""The suspension timeout scanner and each timeout behaviour (spec/suspension.md § Timeouts
and expiry; reference C §8, §15 cases 51–52). Time moves only by the harness clock."""

from __future__ import annotations

import pytest
from flow_helpers import assert_error, complete, create_flow, link, new_member
from suspension_helpers import (
    SATISFIED,
    accepted,
    effect_of,
    pending_list,
    public_state,
    resume,
    signal,
    single,
    suspended,
    token_route,
    vector,
)

TIMEOUT_MS = 10_000


async def timed(ff, behavior: str, condition=None, **fields):
    return await suspended(ff, condition or single("k", "x"), timeout_ms=TIMEOUT_MS,
                           timeout_behavior=behavior, **fields)


@pytest.mark.parametrize(("behavior", "outcome", "attempt_reason"), [
    ("fail", "failed", "suspension_timeout:fail"),
    ("cancel", "cancelled", "suspension_timeout:cancel"),
    ("expire", "expired", "suspension_timeout:expire"),
])
async def test_a_terminal_timeout_behaviour_ends_the_execution(ff, behavior, outcome,
                                                               attempt_reason):
    eid, _, wps = await timed(ff, behavior)
    ff.clock.advance(TIMEOUT_MS - 1)
    await ff.tick("suspension_timeout")
    assert await public_state(ff, eid) == "suspended"  # not yet due
    ff.clock.advance(1)  # due at timeout_at exactly
    await ff.tick("suspension_timeout")
    info = await ff.info(eid)
    assert (info["public_state"], info["state_vector"]["terminal_outcome"]) == (
        outcome, outcome)
    assert info.get("failure_reason") == attempt_reason, info
    assert_error(await signal(ff, eid, wps["k"], "x"), 409, "target_not_signalable")
    assert_error(await token_route(ff, eid, wps["k"]["waitpoint_id"]), 404,
                 "waitpoint_not_found")
    assert (await pending_list(ff, eid)).body == []
    assert_error(await resume(ff, eid), 409, "execution_not_suspended")


async def test_auto_resume_makes_it_claimable_without_signals(ff):
    eid, task, wps = await timed(ff, "auto_resume_with_timeout_signal")
    ff.clock.advance(TIMEOUT_MS)
    await ff.tick("suspension_timeout")
    v = await vector(ff, eid)
    assert (v["public_state"], v["eligibility_state"]) == ("waiting", "eligible_now")
    assert_error(await signal(ff, eid, wps["k"], "x"), 409, "waitpoint_closed",
                 names=["timed_out_auto_resume"])
    again = await ff.claim(lane=task["lane_id"])
    assert (again["attempt_type"], again["resumed"], again["signals"],
            again["attempt_index"]) == ("resumed", True, [], task["attempt_index"])
    await complete(ff, again)


async def test_escalate_keeps_it_suspended_for_an_operator(ff):
    eid, task, wps = await timed(ff, "escalate")
    ff.clock.advance(TIMEOUT_MS)
    await ff.tick("suspension_timeout")
    v = await vector(ff, eid)
    assert (v["public_state"], v["blocking_reason"]) == ("suspended", "paused_by_operator")
    # No further timeout: a day later it is still there.
    ff.clock.advance(86_400_000)
    await ff.tick("suspension_timeout")
    assert await public_state(ff, eid) == "suspended"
    # Its waitpoint still takes signals (the condition still resumes it).
    assert await effect_of(ff, eid, wps["k"], "x") == SATISFIED
    again = await ff.claim(lane=task["lane_id"])
    assert again["resumed"] is True and len(again["signals"]) == 1


async def test_escalated_then_operator_resume(ff):
    eid, task, _ = await timed(ff, "escalate")
    ff.clock.advance(TIMEOUT_MS)
    await ff.tick("suspension_timeout")
    reply = await resume(ff, eid)
    assert (reply.status, reply.body) == (200, {"Resumed": {"public_state": "waiting"}})
    assert (await ff.claim(lane=task["lane_id"]))["resumed"] is True


async def test_a_resumed_execution_is_not_timed_out_later(ff):
    eid, task, wps = await timed(ff, "fail")
    assert (await accepted(ff, eid, wps["k"], "x"))[1] == SATISFIED
    ff.clock.advance(TIMEOUT_MS * 2)
    await ff.tick("suspension_timeout")
    assert await public_state(ff, eid) == "waiting"
    assert (await ff.claim(lane=task["lane_id"]))["resumed"] is True


async def test_timeout_only_resolves_by_its_timeout(ff):
    _, task, _ = await suspended(ff, "TimeoutOnly", timeout_ms=TIMEOUT_MS,
                                   timeout_behavior="auto_resume_with_timeout_signal")
    ff.clock.advance(TIMEOUT_MS)
    await ff.tick("suspension_timeout")
    assert (await ff.claim(lane=task["lane_id"]))["resumed"] is True


async def test_an_absolute_timeout_at(ff):
    at = ff.clock.now_ms() + 3000
    eid, _, _ = await suspended(ff, single("k"), timeout_at=at, timeout_behavior="expire")
    listed = (await pending_list(ff, eid)).body
    assert [w["expires_at"] for w in listed] == [at]
    ff.clock.advance(3000)
    await ff.tick("suspension_timeout")
    assert await public_state(ff, eid) == "expired"


async def test_many_due_timeouts_are_all_handled(ff):
    ids = [(await timed(ff, "cancel"))[0] for _ in range(60)]
    ff.clock.advance(TIMEOUT_MS)
    for _ in range(5):  # batches of 50; nothing is left behind
        await ff.tick("suspension_timeout")
    assert {await public_state(ff, e) for e in ids} == {"cancelled"}


async def test_a_flow_member_timing_out_resolves_its_dependants(ff):
    flow_id = await create_flow(ff)
    parent = await new_member(ff, flow_id, lane_id="up")
    child = await new_member(ff, flow_id, lane_id="down")
    await link(ff, flow_id, parent, child)
    task = await ff.claim(lane="up")
    await timed(ff, "fail", task=task)
    ff.clock.advance(TIMEOUT_MS)
    await ff.tick("suspension_timeout")
    assert await public_state(ff, parent) == "failed"
    # The failed upstream makes the child's dependency impossible.
    for _ in range(3):
        await ff.tick("dependency_reconciler")
    assert await public_state(ff, child) == "skipped"
