"""Signals: effects on single and composite conditions, idempotency, state refusals,
pending waitpoints and buffering, concurrency and byte-exact payloads (spec/suspension.md
§ Conditions, § Signals; reference C §5, §6, §15 cases 11–12, 31–43)."""

from __future__ import annotations

import base64

import trio
from flow_helpers import assert_error, complete, exec_url
from suspension_helpers import (
    APPENDED,
    BUFFERED,
    DUPLICATE,
    MATCHER_FAILED,
    SATISFIED,
    accepted,
    all_of,
    count,
    create_waitpoint,
    effect_of,
    pending_list,
    pending_waitpoint,
    public_state,
    random_id,
    running,
    signal,
    single,
    suspend,
    suspended,
    token_route,
    vector,
)

ALL_BYTES = bytes(range(256))


async def resumed_task(ff, task):
    again = await ff.claim(lane=task["lane_id"])
    assert again is not None and again["resumed"] is True, again
    return again


# -- effects ----------------------------------------------------------------------------------

async def test_a_single_by_name_ignores_other_names(ff):
    eid, _, wps = await suspended(ff, single("k", "x"))
    assert await effect_of(ff, eid, wps["k"], "y") == MATCHER_FAILED
    assert await public_state(ff, eid) == "suspended"
    assert await effect_of(ff, eid, wps["k"], "x") == SATISFIED


async def test_all_of_two_waitpoints(ff):
    eid, task, wps = await suspended(ff, all_of(single("a", "reviewer_a"),
                                                single("b", "reviewer_b")))
    first, effect = await accepted(ff, eid, wps["a"], "reviewer_a")
    assert effect == APPENDED
    assert await public_state(ff, eid) == "suspended"
    second, effect = await accepted(ff, eid, wps["b"], "reviewer_b")
    assert effect == SATISFIED
    again = await resumed_task(ff, task)
    assert [s["signal_id"] for s in again["signals"]] == [first, second]


async def test_all_of_two_names_on_one_waitpoint(ff):
    eid, _, wps = await suspended(ff, all_of(single("k", "alpha"), single("k", "beta")))
    assert await effect_of(ff, eid, wps["k"], "alpha") == APPENDED
    assert await effect_of(ff, eid, wps["k"], "alpha", source_identity="bob") == DUPLICATE
    assert await effect_of(ff, eid, wps["k"], "gamma") == MATCHER_FAILED
    assert await effect_of(ff, eid, wps["k"], "beta") == SATISFIED


async def test_count_distinct_waitpoints(ff):
    eid, _, wps = await suspended(ff, count(2, "DistinctWaitpoints", ["a", "b", "c"]))
    assert await effect_of(ff, eid, wps["a"]) == APPENDED
    assert await effect_of(ff, eid, wps["a"], source_identity="zed") == DUPLICATE
    assert await effect_of(ff, eid, wps["c"]) == SATISFIED
    eid, _, wps = await suspended(ff, count(1, "DistinctWaitpoints", ["k"]))
    assert await effect_of(ff, eid, wps["k"]) == SATISFIED


async def test_count_distinct_signals_and_a_retry(ff):
    eid, _, wps = await suspended(ff, count(2, "DistinctSignals", ["k"]))
    first, effect = await accepted(ff, eid, wps["k"], idempotency_key="i-1")
    assert effect == APPENDED
    reply = await signal(ff, eid, wps["k"], idempotency_key="i-1")
    assert (reply.status, reply.body) == (200, {"Duplicate": {"existing_signal_id": first}})
    assert await public_state(ff, eid) == "suspended"
    assert await effect_of(ff, eid, wps["k"], idempotency_key="i-2") == SATISFIED


async def test_count_distinct_sources(ff):
    eid, _, wps = await suspended(ff, count(2, "DistinctSources", ["k"]))
    assert await effect_of(ff, eid, wps["k"], source_identity="alice") == APPENDED
    assert await effect_of(ff, eid, wps["k"], source_identity="alice") == DUPLICATE
    # Same identity, another source type: another source.
    assert await effect_of(ff, eid, wps["k"], source_type="other",
                           source_identity="alice") == SATISFIED


async def test_count_with_a_matcher(ff):
    eid, _, wps = await suspended(ff, count(1, "DistinctSignals", ["k"], name="approve"))
    assert await effect_of(ff, eid, wps["k"], "reject") == MATCHER_FAILED
    assert await effect_of(ff, eid, wps["k"], "approve") == SATISFIED


async def test_nested_composites_count_per_node(ff):
    condition = all_of(count(2, "DistinctSources", ["a"]),
                       all_of(single("b", "ok"), count(1, "DistinctWaitpoints", ["a", "c"])))
    eid, task, wps = await suspended(ff, condition)
    assert await effect_of(ff, eid, wps["a"], source_identity="p") == APPENDED
    assert await effect_of(ff, eid, wps["b"], "ok") == APPENDED
    assert await effect_of(ff, eid, wps["a"], source_identity="q") == SATISFIED
    again = await resumed_task(ff, task)
    assert len(again["signals"]) == 3


async def test_timeout_only_and_operator_only_are_never_satisfied_by_signals(ff):
    for condition, fields in (("OperatorOnly", {}), ("TimeoutOnly", {"timeout_ms": 60_000})):
        eid, _, wps = await suspended(ff, condition, **fields)
        [wp] = wps.values()
        for name in ("__operator_only__", "__timeout_only__", "timeout", "approved"):
            assert await effect_of(ff, eid, wp, name) == "signal_ignored_not_in_condition"
        assert await public_state(ff, eid) == "suspended"


# -- after satisfaction, terminal, limits ---------------------------------------------------------

async def test_a_signal_after_satisfaction_is_closed_but_its_retry_is_a_duplicate(ff):
    eid, _, wps = await suspended(ff)
    first, effect = await accepted(ff, eid, wps["k"], idempotency_key="done")
    assert effect == SATISFIED
    assert_error(await signal(ff, eid, wps["k"]), 409, "waitpoint_closed")
    reply = await signal(ff, eid, wps["k"], idempotency_key="done")
    assert (reply.status, reply.body) == (200, {"Duplicate": {"existing_signal_id": first}})
    assert_error(await signal(ff, eid, wps["k"], idempotency_key="other"), 409,
                 "waitpoint_closed")


async def test_the_retry_window_is_dedup_ttl_ms(ff):
    eid, _, wps = await suspended(ff, count(3, "DistinctSignals", ["k"]))
    first, _ = await accepted(ff, eid, wps["k"], idempotency_key="i", dedup_ttl_ms=1000)
    ff.clock.advance(999)
    reply = await signal(ff, eid, wps["k"], idempotency_key="i")
    assert reply.body == {"Duplicate": {"existing_signal_id": first}}
    ff.clock.advance(1)
    assert await effect_of(ff, eid, wps["k"], idempotency_key="i") == APPENDED


async def test_a_terminal_execution_is_not_signalable(ff):
    eid, task = await running(ff)
    wp = await pending_waitpoint(ff, task, "k")
    await complete(ff, task)
    assert_error(await signal(ff, eid, wp), 409, "target_not_signalable", names=["completed"])


async def test_max_signals_per_execution(ff):
    eid, _, wps = await suspended(ff, count(3, "DistinctSignals", ["k"]))
    assert await effect_of(ff, eid, wps["k"], max_signals_per_execution=1) == APPENDED
    assert_error(await signal(ff, eid, wps["k"], max_signals_per_execution=1), 409,
                 "signal_limit_exceeded", names=["max_signals_per_execution=1"])
    # 0 is no limit; every signal accepted counts (also ignored ones).
    assert await effect_of(ff, eid, wps["k"], max_signals_per_execution=0) == APPENDED
    assert_error(await signal(ff, eid, wps["k"], max_signals_per_execution=2), 409,
                 "signal_limit_exceeded")
    assert await effect_of(ff, eid, wps["k"], max_signals_per_execution=3) == SATISFIED


async def test_a_resume_delay_delays_the_resumed_claim(ff):
    eid, task, wps = await suspended(ff)
    assert await effect_of(ff, eid, wps["k"], resume_delay_ms=5000) == SATISFIED
    v = await vector(ff, eid)
    assert (v["public_state"], v["eligibility_state"], v["blocking_reason"]) == (
        "delayed", "not_eligible_until_time", "waiting_for_resume_delay")
    assert await ff.claim(lane=task["lane_id"]) is None
    ff.clock.advance(4999)
    await ff.tick("delayed_promoter")
    assert await ff.claim(lane=task["lane_id"]) is None
    ff.clock.advance(1)
    await ff.tick("delayed_promoter")
    again = await resumed_task(ff, task)
    assert len(again["signals"]) == 1


async def test_a_given_signal_id_is_used_and_cannot_be_reused(ff):
    eid, _, wps = await suspended(ff, count(3, "DistinctSignals", ["k"]))
    sid = random_id()
    assert await accepted(ff, eid, wps["k"], signal_id=sid) == (sid, APPENDED)
    assert_error(await signal(ff, eid, wps["k"], signal_id=sid), 409, "signal_id_in_use",
                 names=[sid])


async def test_the_body_execution_id_must_match_the_path(ff):
    eid, _, wps = await suspended(ff)
    other = f"{{fp:5}}:{random_id()}"
    assert_error(await signal(ff, eid, wps["k"], execution_id=other), 400, "invalid_input",
                 names=["execution_id"])
    assert await effect_of(ff, eid, wps["k"], execution_id=eid) == SATISFIED


# -- pending waitpoints and buffering -------------------------------------------------------------

async def test_a_buffered_signal_satisfies_at_suspend_and_the_lease_is_kept(ff):
    eid, task = await running(ff)
    wp = await pending_waitpoint(ff, task, "k")
    assert wp["waitpoint_key"] == "k" and wp["expires_at"] is None
    listed = (await pending_list(ff, eid)).body
    assert [(w["waitpoint_id"], w["state"]) for w in listed] == [(wp["waitpoint_id"],
                                                                  "pending")]
    sid, effect = await accepted(ff, eid, wp, "x", payload_b64=base64.b64encode(
        ALL_BYTES).decode())
    assert effect == BUFFERED
    assert await public_state(ff, eid) == "active"
    reply = await suspend(ff, task, single("k", "x"))
    assert reply.status == 200 and set(reply.body) == {"AlreadySatisfied"}, reply
    body = reply.body["AlreadySatisfied"]
    assert [w["waitpoint_id"] for w in body["waitpoints"]] == [wp["waitpoint_id"]]
    [sig] = body["signals"]
    assert sig["signal_id"] == sid and bytes(sig["payload"]) == ALL_BYTES
    assert await public_state(ff, eid) == "active"
    # The waitpoint is closed, the worker still holds its lease.
    assert_error(await signal(ff, eid, wp, "x"), 409, "waitpoint_closed")
    await complete(ff, task)


async def test_a_buffered_signal_that_does_not_satisfy_counts_later(ff):
    eid, task = await running(ff)
    wp = await pending_waitpoint(ff, task, "k")
    first, effect = await accepted(ff, eid, wp, "x", payload=[0, 255])
    assert effect == BUFFERED
    assert await effect_of(ff, eid, wp, "nope") == BUFFERED
    eid, _, wps = await suspended(ff, count(2, "DistinctSignals", ["k"], name="x"), task=task)
    assert wps["k"]["token"] == wp["token"] and wps["k"]["waitpoint_id"] == wp["waitpoint_id"]
    second, effect = await accepted(ff, eid, wp, "x")
    assert effect == SATISFIED
    again = await resumed_task(ff, task)
    assert [s["signal_id"] for s in again["signals"]] == [first, second]
    assert again["signals"][0]["payload"] == [0, 255]


async def test_buffered_signals_feed_composites(ff):
    eid, task = await running(ff)
    a = await pending_waitpoint(ff, task, "a")
    b = await pending_waitpoint(ff, task, "b")
    assert await effect_of(ff, eid, a) == BUFFERED
    assert await effect_of(ff, eid, b) == BUFFERED
    reply = await suspend(ff, task, all_of(single("a"), single("b")))
    assert set(reply.body) == {"AlreadySatisfied"}, reply
    assert len(reply.body["AlreadySatisfied"]["signals"]) == 2
    # A suspend that binds a pending waitpoint and a fresh one.
    eid, task = await running(ff)
    a = await pending_waitpoint(ff, task, "a")
    assert await effect_of(ff, eid, a) == BUFFERED
    eid, _, wps = await suspended(ff, all_of(single("a"), single("fresh")), task=task)
    assert wps["a"]["waitpoint_id"] == a["waitpoint_id"]
    assert await effect_of(ff, eid, wps["fresh"]) == SATISFIED


async def test_a_pending_waitpoint_key_is_one_per_attempt(ff):
    _, task = await running(ff)
    first = await pending_waitpoint(ff, task, "k")
    reply = await create_waitpoint(ff, task, "k")
    body = assert_error(reply, 409, "waitpoint_already_exists")
    assert body["waitpoint_id"] == first["waitpoint_id"]
    assert (await create_waitpoint(ff, task, "other")).status == 201


async def test_a_pending_waitpoint_with_a_wrong_token(ff):
    eid, task = await running(ff)
    wp = await pending_waitpoint(ff, task, "k")
    assert_error(await signal(ff, eid, {**wp, "token": "k9:" + "0" * 64}), 400,
                 "unknown_kid")
    assert_error(await signal(ff, eid, {**wp, "token": wp["token"][:-1] + "x"}), 400,
                 "invalid_token")


async def test_an_expired_pending_waitpoint(ff):
    eid, task = await running(ff)
    wp = await pending_waitpoint(ff, task, "k", expires_in_ms=1000)
    assert wp["expires_at"] == ff.clock.now_ms() + 1000
    assert await effect_of(ff, eid, wp) == BUFFERED
    ff.clock.advance(1000)
    # Past expires_at, before the scanner: the suspend refuses it.
    reply = await suspend(ff, task, single("k"))
    assert_error(reply, 409, "pending_waitpoint_expired", names=[wp["waitpoint_id"]])
    assert await public_state(ff, eid) == "active"
    await ff.tick("pending_waitpoint_expiry")
    assert_error(await signal(ff, eid, wp), 409, "waitpoint_closed")
    assert_error(await token_route(ff, eid, wp["waitpoint_id"]), 404, "waitpoint_not_found")
    assert (await pending_list(ff, eid)).body == []
    # The key is free again: the suspend binds a fresh waitpoint (the old signal does not count).
    _, _, wps = await suspended(ff, single("k"), task=task)
    assert wps["k"]["waitpoint_id"] != wp["waitpoint_id"]
    assert await public_state(ff, eid) == "suspended"


async def test_a_pending_waitpoint_not_yet_expired_is_left_alone(ff):
    eid, task = await running(ff)
    wp = await pending_waitpoint(ff, task, "k", expires_in_ms=1000)
    ff.clock.advance(999)
    await ff.tick("pending_waitpoint_expiry")
    assert await effect_of(ff, eid, wp) == BUFFERED


async def test_pending_waitpoints_do_not_outlive_their_attempt(ff):
    eid, task = await running(ff, policy={"retry_policy": {"max_retries": 1}})
    wp = await pending_waitpoint(ff, task, "k")
    reply = await ff.worker_op("fail", task, failure_reason="boom",
                               failure_category="transient")
    assert reply.status == 200, reply
    # The failed attempt ended: its waitpoint closed with it, before the retry starts.
    assert (await pending_list(ff, eid)).body == []
    assert_error(await signal(ff, eid, wp), 409, "waitpoint_closed")


# -- concurrency ------------------------------------------------------------------------------

async def _concurrently(ff, eid, deliveries):
    """Deliver every ``(waitpoint, fields)`` at once (one task each): the replies."""
    replies: list = [None] * len(deliveries)

    async def one(i, wp, fields):
        replies[i] = await signal(ff, eid, wp, **fields)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i, (wp, fields) in enumerate(deliveries):
                nursery.start_soon(one, i, wp, fields)
    for reply in replies:
        assert reply.status == 200 and "Accepted" in reply.body, reply
    return [r.body["Accepted"]["effect"] for r in replies]


async def test_fifty_concurrent_signals_to_a_count_of_fifty_resume_once(ff):
    eid, task, wps = await suspended(ff, count(50, "DistinctSignals", ["k"]))
    effects = await _concurrently(ff, eid, [(wps["k"], {"signal_name": f"s{i}"})
                                            for i in range(50)])
    assert effects.count(SATISFIED) == 1 and effects.count(APPENDED) == 49, effects
    again = await resumed_task(ff, task)
    assert len(again["signals"]) == 50
    assert await ff.claim(lane=task["lane_id"]) is None


async def test_fifty_concurrent_signals_to_an_all_of_fifty_waitpoints_resume_once(ff):
    keys = [f"w{i}" for i in range(50)]
    eid, task, wps = await suspended(ff, all_of(*(single(k) for k in keys)))
    assert len({w["token"] for w in wps.values()}) == 50
    effects = await _concurrently(ff, eid, [(wps[k], {}) for k in keys])
    assert effects.count(SATISFIED) == 1 and effects.count(APPENDED) == 49, effects
    again = await resumed_task(ff, task)
    assert len({s["signal_id"] for s in again["signals"]}) == 50
    assert await ff.claim(lane=task["lane_id"]) is None


async def test_concurrent_retries_of_one_signal_count_once(ff):
    eid, _, wps = await suspended(ff, count(2, "DistinctSignals", ["k"]))
    replies: list = []

    async def one():
        replies.append(await signal(ff, eid, wps["k"], idempotency_key="same"))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(one)
    accepted_ = [r for r in replies if "Accepted" in r.body]
    assert len(accepted_) == 1, replies
    first = accepted_[0].body["Accepted"]["signal_id"]
    assert all(r.body == {"Duplicate": {"existing_signal_id": first}}
               for r in replies if r is not accepted_[0]), replies
    assert await public_state(ff, eid) == "suspended"


# -- payload bytes ------------------------------------------------------------------------------

async def test_signal_payloads_arrive_byte_exact(ff):
    eid, task, wps = await suspended(ff, all_of(single("ints"), single("b64"),
                                                single("empty")))
    assert await effect_of(ff, eid, wps["ints"], payload=list(ALL_BYTES)) == APPENDED
    assert await effect_of(ff, eid, wps["b64"], payload_b64=base64.b64encode(
        ALL_BYTES[::-1]).decode()) == APPENDED
    assert await effect_of(ff, eid, wps["empty"], payload=[]) == SATISFIED
    again = await resumed_task(ff, task)
    got = [(bytes(s["payload"]), base64.b64decode(s["payload_b64"]))
           for s in again["signals"]]
    assert got == [(ALL_BYTES, ALL_BYTES), (ALL_BYTES[::-1], ALL_BYTES[::-1]), (b"", b"")]


async def test_a_payload_given_both_ways_or_out_of_range_is_refused(ff):
    eid, _, wps = await suspended(ff)
    for fields in ({"payload": [1], "payload_b64": "AQ=="}, {"payload": [256]},
                   {"payload": [-1]}, {"payload": [1.5]}, {"payload": "AQ=="},
                   {"payload_b64": "not base64!"}, {"payload": [True]}):
        reply = await signal(ff, eid, wps["k"], **fields)
        assert reply.status == 400, (fields, reply)
        assert_error(reply, 400, reply.body["kind"], names=["payload"])
    assert await public_state(ff, eid) == "suspended"


async def test_a_payload_near_the_body_cap_is_accepted(ff):
    eid, task, wps = await suspended(ff)
    data = bytes(range(256)) * 700  # 179 200 bytes, ~239 KiB of base64
    assert await effect_of(ff, eid, wps["k"], payload_b64=base64.b64encode(data).decode()
                           ) == SATISFIED
    again = await resumed_task(ff, task)
    assert base64.b64decode(again["signals"][0]["payload_b64"]) == data


async def test_an_empty_signal_route_body_is_400(ff):
    eid, _, _ = await suspended(ff)
    reply = await ff.call("POST", exec_url(eid, "/signal"), {})
    assert reply.status == 400, reply


async def test_an_already_satisfied_suspend_retried_answers_the_same_signals(ff):
    eid, task = await running(ff)
    wp = await pending_waitpoint(ff, task, "k")
    assert await effect_of(ff, eid, wp, payload=[7]) == BUFFERED
    first = await suspend(ff, task, single("k"), idempotency_key="once")
    assert set(first.body) == {"AlreadySatisfied"}, first
    again = await suspend(ff, task, single("k"), idempotency_key="once")
    assert (again.status, again.body) == (200, first.body)
    assert await public_state(ff, eid) == "active"


async def test_a_second_suspension_in_one_attempt_resumes_with_its_own_signals(ff):
    eid, task, wps = await suspended(ff, single("k"))
    await accepted(ff, eid, wps["k"], "first")
    again = await resumed_task(ff, task)
    _, _, second = await suspended(ff, single("k"), task=again)
    assert second["k"]["waitpoint_id"] != wps["k"]["waitpoint_id"]
    assert_error(await signal(ff, eid, wps["k"]), 409, "waitpoint_closed")
    sid, _ = await accepted(ff, eid, second["k"], "second")
    third = await resumed_task(ff, task)
    assert [s["signal_id"] for s in third["signals"]] == [sid]
    assert (third["attempt_index"], third["lease_epoch"]) == (
        task["attempt_index"], task["lease_epoch"] + 2)
