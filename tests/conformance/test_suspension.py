"""Suspend, resume, approval, wait-children and the read routes (spec/suspension.md;
reference C §4, §7, §9–§12, §15 cases 23–30, 44–57)."""

from __future__ import annotations

from flow_helpers import (
    assert_error,
    claimable_ids,
    complete,
    create_flow,
    exec_url,
    link,
    new_member,
    replay,
    set_group,
)
from suspension_helpers import (
    SATISFIED,
    TOKEN,
    accepted,
    all_of,
    approval,
    count,
    nested,
    pending_list,
    public_state,
    random_id,
    resume,
    running,
    signal,
    single,
    suspend,
    suspended,
    token_route,
    vector,
)

# -- suspend --------------------------------------------------------------------------------

async def test_a_fresh_suspend_releases_the_lease(ff):
    eid, task = await running(ff)
    reply = await suspend(ff, task, single("k", "x"), reason_code="waiting_for_approval")
    assert reply.status == 200, reply
    assert reply.headers.get("Cache-Control") == "no-store"
    body = reply.body["Suspended"]
    [wp] = body["waitpoints"]
    assert wp["waitpoint_key"] == "k" and TOKEN.match(wp["token"]), body
    v = await vector(ff, eid)
    assert v == {"lifecycle_phase": "suspended", "ownership_state": "unowned",
                 "eligibility_state": "not_applicable",
                 "blocking_reason": "waiting_for_approval", "terminal_outcome": "none",
                 "attempt_state": "attempt_interrupted", "public_state": "suspended"}
    # The old handle no longer holds a lease: the worker cannot complete or renew.
    for op in ("complete", "renew"):
        reply = await ff.worker_op(op, task)
        assert 400 <= reply.status < 500, (op, reply)
    # Nothing to claim on its lane while suspended.
    assert await claimable_ids(ff, task["lane_id"]) == set()


async def test_the_execution_shows_its_suspension_but_no_reader_sees_a_token(ff):
    eid, task = await running(ff)
    reply = await suspend(ff, task, all_of(single("a", "x"), single("b")), timeout_ms=60_000)
    body = reply.body["Suspended"]
    tokens = [w["token"] for w in body["waitpoints"]]
    info = await ff.call("GET", exec_url(eid))
    assert info.status == 200
    assert (info.body["current_suspension_id"], info.body["current_waitpoint_id"],
            info.body["suspension_timeout_at"]) == (
        body["suspension_id"], body["waitpoints"][0]["waitpoint_id"], ff.clock.now_ms() + 60_000)
    await accepted(ff, eid, body["waitpoints"][0], "x")
    for path in (exec_url(eid), exec_url(eid, "/pending-waitpoints"), exec_url(eid, "/state")):
        read = await ff.call("GET", path)
        assert read.status == 200 and not any(t in str(read.body) for t in tokens), path
        assert not any(t.split(":")[1] in str(read.body) for t in tokens), path
    info = (await ff.call("GET", exec_url(eid))).body
    assert info["signal_count"] == 1
    assert info["suspension"]["reason_code"] == "waiting_for_signal"
    assert info["suspension"]["close_reason"] is None
    await resume(ff, eid, trigger_type="auto_resume")
    info = (await ff.call("GET", exec_url(eid))).body
    assert "current_suspension_id" not in info and "suspension_timeout_at" not in info
    assert (info["suspension"]["suspension_id"], info["suspension"]["close_reason"],
            info["suspension"]["resume_trigger"], info["suspension"]["requested_by"]) == (
        body["suspension_id"], "resumed", "auto_resume", "worker")


async def test_reason_codes_show_as_blocking_reasons(ff):
    for code, shown in (("manual_pause", "paused_by_operator"),
                        ("waiting_for_operator_review", "paused_by_operator"),
                        ("paused_by_budget", "waiting_for_budget"),
                        ("step_boundary", "waiting_for_signal")):
        eid, _, _ = await suspended(ff, reason_code=code, requested_by="operator")
        assert (await vector(ff, eid))["blocking_reason"] == shown, code


async def test_a_suspend_retried_with_its_idempotency_key_answers_the_first_answer(ff):
    eid, task = await running(ff)
    first = await suspend(ff, task, single("k", "x"), idempotency_key="s-1")
    assert first.status == 200, first
    # The retry (another condition even) answers the stored answer, though the lease is gone.
    again = await suspend(ff, task, single("other", "y"), idempotency_key="s-1")
    assert (again.status, again.body) == (200, first.body)
    assert await public_state(ff, eid) == "suspended"


async def test_a_second_suspend_without_the_key_is_refused(ff):
    eid, task = await running(ff)
    assert (await suspend(ff, task, single("k"))).status == 200
    for key in (None, "other-key"):
        fields = {"idempotency_key": key} if key else {}
        reply = await suspend(ff, task, single("k"), **fields)
        assert_error(reply, 409, ("already_suspended", "execution_not_active",
                                  "lease_released", "stale_lease", "lease_expired"))
    assert await public_state(ff, eid) == "suspended"


async def test_bindings_must_name_exactly_the_keys_of_the_condition(ff):
    _, task = await running(ff)
    cases = [(["other"], "referenced_waitpoint_key_missing_binding"),
             (["k", "extra"], "extra_binding_not_referenced_by_condition"),
             (["k", "k"], "named twice")]
    for keys, text in cases:
        reply = await suspend(ff, task, single("k"), waitpoints=keys)
        assert_error(reply, 400, "invalid_input", names=[text])
    reply = await suspend(ff, task, all_of(single("a"), single("b")), waitpoints=["b", "a"])
    assert reply.status == 200, reply
    assert [w["waitpoint_key"] for w in reply.body["Suspended"]["waitpoints"]] == ["b", "a"]


async def test_timeout_rules(ff):
    eid, task = await running(ff)
    now = ff.clock.now_ms()
    assert_error(await suspend(ff, task, "TimeoutOnly"), 400, "invalid_input",
                 names=["timeout_only_without_deadline"])
    assert_error(await suspend(ff, task, single("k"), timeout_at=now - 660_000), 400,
                 "invalid_input", names=["timeout_at_in_past"])
    assert_error(await suspend(ff, task, single("k"), timeout_at=now + 1, timeout_ms=5),
                 400, "invalid_input", names=["timeout_at"])
    assert await public_state(ff, eid) == "active"
    # Inside the 10-minute skew tolerance the past timeout is accepted (and due at once).
    reply = await suspend(ff, task, "TimeoutOnly", timeout_at=now - 540_000,
                          timeout_behavior="cancel")
    assert reply.status == 200, reply
    await ff.tick("suspension_timeout")
    assert await public_state(ff, eid) == "cancelled"


async def test_composites_nest_four_deep_not_five(ff):
    _, task = await running(ff)
    reply = await suspend(ff, task, nested(5))
    assert_error(reply, 400, "invalid_resume_condition", names=["exceeds cap 4"])
    reply = await suspend(ff, task, nested(4))
    assert reply.status == 200, reply


async def test_malformed_composites_name_the_rule_and_the_path(ff):
    _, task = await running(ff)
    cases = [
        (count(0, "DistinctSignals", ["k"]), ["count_n_zero", "resume_condition.n"]),
        (count(1, "DistinctSignals", []), ["count_waitpoints_empty"]),
        (count(3, "DistinctWaitpoints", ["a", "b"]), ["count_exceeds_waitpoint_set"]),
        (count(1, "DistinctThings", ["k"]), ["count_kind"]),
        (all_of(), ["allof_empty_members"]),
        (all_of(single("a"), count(0, "DistinctSources", ["b"])),
         ["resume_condition.members[1].n"]),
        ({"Composite": {"kind": "AnyOf", "members": [single("a")]}}, ["kind"]),
        ({"Single": {"waitpoint_key": "k", "matcher": {"ByName": ""}}}, ["ByName"]),
        ({"Single": {"waitpoint_key": ""}}, ["waitpoint_key"]),
        ({"Single": {"waitpoint_key": "k", "extra": 1}}, ["extra"]),
        ("Nothing", ["resume_condition"]),
    ]
    for condition, names in cases:
        assert_error(await suspend(ff, task, condition), 400, "invalid_resume_condition",
                     names=names)


async def test_operator_only_binds_one_fresh_waitpoint_no_signal_satisfies(ff):
    eid, _, wps = await suspended(ff, "OperatorOnly")
    [(key, wp)] = wps.items()
    assert key == f"wpk:{wp['waitpoint_id']}"
    assert (await accepted(ff, eid, wp, "approved"))[1] == "signal_ignored_not_in_condition"
    assert await public_state(ff, eid) == "suspended"
    reply = await resume(ff, eid)
    assert (reply.status, reply.body) == (200, {"Resumed": {"public_state": "waiting"}})


# -- resuming and the resumed claim ----------------------------------------------------------

async def test_a_resumed_claim_is_the_same_attempt_with_the_next_epoch(ff):
    eid, task, wps = await suspended(ff, single("k", "approve"))
    signal_id, effect = await accepted(ff, eid, wps["k"], "approve",
                                       payload_b64="YXBwcm92ZWQgYnkgamFuZQ==",
                                       source_identity="jane", correlation_id="c-1",
                                       payload_encoding="text")
    assert effect == SATISFIED
    again = await ff.claim(lane=task["lane_id"])
    assert again is not None, "the resumed execution is claimable"
    assert (again["execution_id"], again["attempt_type"], again["resumed"],
            again["attempt_index"], again["attempt_id"], again["lease_epoch"]) == (
        eid, "resumed", True, task["attempt_index"], task["attempt_id"],
        task["lease_epoch"] + 1)
    [sig] = again["signals"]
    assert sig["signal_id"] == signal_id
    assert (sig["signal_name"], sig["source_identity"], sig["correlation_id"],
            sig["payload_encoding"]) == ("approve", "jane", "c-1", "text")
    assert bytes(sig["payload"]) == b"approved by jane"
    assert sig["payload_b64"] == "YXBwcm92ZWQgYnkgamFuZQ=="
    assert sig["accepted_at"] == ff.clock.now_ms()
    await complete(ff, again)


async def test_a_signal_without_payload_resumes_with_payload_none(ff):
    eid, task, wps = await suspended(ff)
    await accepted(ff, eid, wps["k"], "x")
    again = await ff.claim(lane=task["lane_id"])
    [sig] = again["signals"]
    assert (sig["payload"], sig["payload_b64"]) == (None, None)


async def test_a_first_claim_has_no_signals(ff):
    _, task = await running(ff)
    assert (task["attempt_type"], task["resumed"], task["signals"]) == ("initial", False, [])


async def test_operator_resume_of_a_suspended_execution(ff):
    eid, task, wps = await suspended(ff, single("k", "x"))
    reply = await resume(ff, eid, trigger_type="operator")
    assert (reply.status, reply.body) == (200, {"Resumed": {"public_state": "waiting"}})
    again = await ff.claim(lane=task["lane_id"])
    assert (again["attempt_type"], again["resumed"], again["signals"]) == (
        "resumed", True, [])
    # Its waitpoints closed: the token is gone and a signal is refused.
    assert_error(await token_route(ff, eid, wps["k"]["waitpoint_id"]), 404,
                 "waitpoint_not_found")
    assert_error(await signal(ff, eid, wps["k"]), 409, "waitpoint_closed")


async def test_operator_resume_with_a_delay(ff):
    eid, task, _ = await suspended(ff)
    reply = await resume(ff, eid, resume_delay_ms=5000)
    assert (reply.status, reply.body) == (200, {"Resumed": {"public_state": "delayed"}})
    assert await ff.claim(lane=task["lane_id"]) is None
    ff.clock.advance(5000)
    await ff.tick("delayed_promoter")
    again = await ff.claim(lane=task["lane_id"])
    assert again is not None and again["attempt_type"] == "resumed"


async def test_resume_of_an_execution_that_is_not_suspended_is_409(ff):
    eid, _ = await running(ff)
    assert_error(await resume(ff, eid), 409, "execution_not_suspended", names=["active"])
    waiting = await ff.create(lane_id="other")
    assert_error(await resume(ff, waiting), 409, "execution_not_suspended")
    assert_error(await resume(ff, f"{{fp:1}}:{random_id()}"), 404, "execution_not_found")
    for bad in ({"trigger_type": "magic"}, {"resume_delay_ms": -1},
                {"resume_delay_ms": "soon"}, {"whatever": 1}):
        reply = await resume(ff, eid, **bad)
        assert reply.status == 400, (bad, reply)


# -- operator approval ------------------------------------------------------------------------

async def test_approval_signals_with_the_stored_token(ff):
    for name in ("approved", "rejected"):
        eid, task, wps = await suspended(ff, single("k"))
        reply = await approval(ff, eid, lane_id=task["lane_id"],
                               waitpoint_id=wps["k"]["waitpoint_id"], signal_name=name)
        assert reply.status == 200, reply
        assert reply.body["Accepted"]["effect"] == SATISFIED
        again = await ff.claim(lane=task["lane_id"])
        [sig] = again["signals"]
        assert (sig["signal_name"], sig["signal_category"], sig["source_type"]) == (
            name, "approval", "operator")


async def test_approval_on_the_wrong_lane_or_an_unknown_waitpoint(ff):
    eid, task, wps = await suspended(ff, single("k"))
    wid = wps["k"]["waitpoint_id"]
    assert_error(await approval(ff, eid, lane_id="elsewhere", waitpoint_id=wid), 400,
                 "lane_mismatch", names=["elsewhere"])
    assert_error(await approval(ff, eid, lane_id=task["lane_id"], waitpoint_id=random_id()),
                 404, "waitpoint_not_found")
    never, other = await running(ff)
    assert_error(await approval(ff, never, lane_id=other["lane_id"], waitpoint_id=wid), 404,
                 "waitpoint_not_found")
    assert_error(await approval(ff, f"{{fp:2}}:{random_id()}", lane_id="default",
                                waitpoint_id=wid), 404, ("execution_not_found",
                                                         "waitpoint_not_found"))
    assert await public_state(ff, eid) == "suspended"


async def test_approval_replayed_with_its_suffix_is_a_duplicate(ff):
    eid, task, wps = await suspended(ff, count(2, "DistinctSignals", ["k"]))
    body = {"lane_id": task["lane_id"], "waitpoint_id": wps["k"]["waitpoint_id"],
            "idempotency_suffix": "ticket-7"}
    first = await approval(ff, eid, **body)
    assert first.body["Accepted"]["effect"] == "appended_to_waitpoint", first
    again = await approval(ff, eid, **body)
    assert again.body == {"Duplicate": {"existing_signal_id":
                                        first.body["Accepted"]["signal_id"]}}
    assert await public_state(ff, eid) == "suspended"


async def test_operator_approvals_are_one_source(ff):
    eid, task, wps = await suspended(ff, count(2, "DistinctSources", ["k"]))
    body = {"lane_id": task["lane_id"], "waitpoint_id": wps["k"]["waitpoint_id"]}
    assert (await approval(ff, eid, **body)).body["Accepted"]["effect"] == (
        "appended_to_waitpoint")
    assert (await approval(ff, eid, **body)).body["Accepted"]["effect"] == (
        "appended_to_waitpoint_duplicate")


# -- cancel, deadline, replay -------------------------------------------------------------------

async def test_cancelling_a_suspended_execution_closes_its_waitpoints(ff):
    eid, _, wps = await suspended(ff, all_of(single("a"), single("b"), single("c")))
    reply = await ff.call("POST", exec_url(eid, "/cancel"), {"reason": "no longer needed"})
    assert reply.status == 200, reply
    assert await public_state(ff, eid) == "cancelled"
    for wp in wps.values():
        assert_error(await token_route(ff, eid, wp["waitpoint_id"]), 404,
                     "waitpoint_not_found")
        assert_error(await signal(ff, eid, wp), 409, "target_not_signalable",
                     names=["cancelled"])
    assert (await pending_list(ff, eid)).body == []
    assert_error(await resume(ff, eid), 409, "execution_not_suspended")


async def test_the_execution_deadline_ends_a_suspended_execution(ff):
    now = ff.clock.now_ms()
    eid, task = await running(ff, execution_deadline_at=now + 1000)
    eid, _, wps = await suspended(ff, single("k"), task=task)
    ff.clock.advance(1001)
    await ff.tick("execution_deadline")
    assert await public_state(ff, eid) == "expired"
    assert_error(await signal(ff, eid, wps["k"]), 409, "target_not_signalable")
    assert_error(await token_route(ff, eid, wps["k"]["waitpoint_id"]), 404,
                 "waitpoint_not_found")
    assert (await pending_list(ff, eid)).body == []


async def test_replay_of_a_cancelled_while_suspended_execution(ff):
    eid, task, wps = await suspended(ff)
    assert (await ff.call("POST", exec_url(eid, "/cancel"), {})).status == 200
    reply = await replay(ff, eid)
    assert (reply.status, reply.body) == (200, {"Replayed": {"public_state": "waiting"}})
    again = await ff.claim(lane=task["lane_id"])
    assert (again["attempt_type"], again["resumed"], again["signals"],
            again["attempt_index"]) == ("replay", False, [], task["attempt_index"] + 1)
    # The old waitpoint stays closed; the new attempt suspends on fresh ones.
    assert_error(await signal(ff, eid, wps["k"]), 409, "waitpoint_closed")
    _, _, fresh = await suspended(ff, single("k"), task=again)
    assert fresh["k"]["waitpoint_id"] != wps["k"]["waitpoint_id"]
    assert (await accepted(ff, eid, fresh["k"]))[1] == SATISFIED
    resumed = await ff.claim(lane=task["lane_id"])
    assert (resumed["attempt_index"], len(resumed["signals"])) == (again["attempt_index"], 1)


# -- reads ------------------------------------------------------------------------------------

async def test_pending_waitpoints_lists_no_token(ff):
    eid, task, wps = await suspended(ff, all_of(single("a", "pwp_signal"), single("b")),
                                     timeout_ms=60_000)
    reply = await pending_list(ff, eid)
    assert reply.status == 200, reply
    assert "Deprecation" not in reply.headers
    listed = {w["waitpoint_key"]: w for w in reply.body}
    assert set(listed) == {"a", "b"}
    for key, entry in listed.items():
        assert "token" not in entry and "waitpoint_token" not in entry, entry
        minted = wps[key]["token"]
        assert entry["token_kid"] == "k1"
        assert entry["token_fingerprint"] == minted.split(":")[1][:16]
        assert entry["waitpoint_id"] == wps[key]["waitpoint_id"]
        assert (entry["state"], entry["execution_id"], entry["attempt_index"]) == (
            "active", eid, task["attempt_index"])
        assert entry["activated_at"] == ff.clock.now_ms()
        assert entry["expires_at"] == ff.clock.now_ms() + 60_000
        for value in entry.values():
            assert minted.split(":")[1] not in str(value)
    assert listed["a"]["required_signal_names"] == ["pwp_signal"]
    assert listed["b"]["required_signal_names"] == []


async def test_pending_waitpoints_empty_and_unknown(ff):
    eid, _ = await running(ff)
    assert (await pending_list(ff, eid)).body == []
    assert_error(await pending_list(ff, f"{{fp:4}}:{random_id()}"), 404,
                 "execution_not_found")


async def test_the_token_route_is_no_store_on_200_and_404(ff):
    eid, _, wps = await suspended(ff)
    reply = await token_route(ff, eid, wps["k"]["waitpoint_id"])
    assert (reply.status, reply.body) == (200, {"token": wps["k"]["token"]})
    assert reply.headers.get("Cache-Control") == "no-store"
    reply = await token_route(ff, eid, random_id())
    assert_error(reply, 404, "waitpoint_not_found")
    assert reply.headers.get("Cache-Control") == "no-store"
    # A waitpoint of another execution is not this one's.
    other, _ = await running(ff)
    assert_error(await token_route(ff, other, wps["k"]["waitpoint_id"]), 404,
                 "waitpoint_not_found")
    assert_error(await token_route(ff, eid, "not-a-uuid"), 400, "invalid_input",
                 names=["waitpoint_id"])


# -- waiting for children -----------------------------------------------------------------------

async def test_a_parent_waits_for_its_child_and_resumes(ff):
    flow_id = await create_flow(ff)
    parent = await new_member(ff, flow_id, lane_id="parents")
    child = await new_member(ff, flow_id, lane_id="children")
    task = await ff.claim(lane="parents")
    assert task["execution_id"] == parent
    await link(ff, flow_id, child, parent)
    reply = await ff.worker_op("wait-children", task)
    assert (reply.status, reply.body) == (200, {"WaitingChildren": {"unresolved": 1}})
    v = await vector(ff, parent)
    assert (v["public_state"], v["blocking_reason"], v["eligibility_state"]) == (
        "waiting_children", "waiting_for_children", "blocked_by_dependencies")
    assert await ff.claim(lane="parents") is None
    child_task = await ff.claim(lane="children")
    await complete(ff, child_task)
    again = await ff.claim(lane="parents")
    assert again is not None, "the parent is released when its child completes"
    assert (again["execution_id"], again["attempt_type"], again["resumed"],
            again["signals"], again["attempt_index"], again["lease_epoch"]) == (
        parent, "resumed", True, [], task["attempt_index"], task["lease_epoch"] + 1)
    await complete(ff, again)


async def test_a_group_without_applied_edges_waits_for_nothing(ff):
    flow_id = await create_flow(ff)
    parent = await new_member(ff, flow_id, lane_id="parents")
    assert (await set_group(ff, flow_id, parent, "all_of")).status == 200
    task = await ff.claim(lane="parents")
    reply = await ff.worker_op("wait-children", task)
    assert (reply.status, reply.body) == (
        200, {"AlreadySatisfied": {"reason": "no_pending_dependencies"}})
    assert await public_state(ff, parent) == "active"
    await complete(ff, task)


async def test_a_lease_found_expired_at_create_waitpoint_resolves_the_flow_at_once(ff):
    """The reclaim cap ends the member in the worker call that finds its lease expired:
    its child is skipped in the same step, as with renew."""
    flow_id = await create_flow(ff)
    up = await new_member(ff, flow_id, lane_id="up", policy={"max_reclaim_count": 0})
    down = await new_member(ff, flow_id, lane_id="down")
    await link(ff, flow_id, up, down)
    task = await ff.claim(lane="up", lease_ttl_ms=1000)
    ff.clock.advance(1001)
    reply = await ff.worker_op("waitpoints", task, waitpoint_key="k")
    assert_error(reply, 409, "lease_expired")
    assert await public_state(ff, up) == "failed"
    assert await public_state(ff, down) == "skipped"


async def test_wait_children_with_nothing_pending_keeps_the_lease(ff):
    eid, task = await running(ff)
    reply = await ff.worker_op("wait-children", task)
    assert (reply.status, reply.body) == (
        200, {"AlreadySatisfied": {"reason": "no_pending_dependencies"}})
    assert await public_state(ff, eid) == "active"
    await complete(ff, task)
