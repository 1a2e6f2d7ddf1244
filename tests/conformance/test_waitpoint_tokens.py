"""Waitpoint tokens and their rotation (spec/suspension.md § Tokens; reference C §3, §15
cases 1–21): the shape, every way a token is wrong answered with its own kind and no
state oracle, the grace window of a rotated key, and the admin rotation route."""

from __future__ import annotations

import trio
from flow_helpers import assert_error, exec_url
from suspension_helpers import (
    ROTATE,
    SATISFIED,
    SECRET_2,
    SECRET_3,
    TOKEN,
    accepted,
    all_of,
    altered,
    pending_list,
    pending_waitpoint,
    public_state,
    random_id,
    rotate,
    running,
    signal,
    single,
    suspended,
)

from appliance.service import suspension as service_suspension

ZEROS = "0" * 64


# -- shape and the happy path ------------------------------------------------------------------

async def test_a_suspend_mints_a_kid_and_64_hex_token_that_resumes(ff):
    eid, _, wps = await suspended(ff, single("k", "x"))
    token = wps["k"]["token"]
    match = TOKEN.match(token)
    assert match is not None, token
    assert match.group(1) == ff.config.hmac_kid == "k1"
    signal_id, effect = await accepted(ff, eid, wps["k"], "x")
    assert effect == SATISFIED
    vector = (await ff.info(eid))["state_vector"]
    assert (vector["lifecycle_phase"], vector["public_state"]) == ("runnable", "waiting")
    task = await ff.claim(lane=(await ff.info(eid))["lane_id"])
    assert task is not None and task["resumed"] is True, task
    assert [s["signal_id"] for s in task["signals"]] == [signal_id]


async def test_tokens_differ_per_waitpoint_and_execution(ff):
    _, _, a = await suspended(ff, all_of(single("k1"), single("k2")))
    _, _, b = await suspended(ff, all_of(single("k1"), single("k2")))
    tokens = {a["k1"]["token"], a["k2"]["token"], b["k1"]["token"], b["k2"]["token"]}
    assert len(tokens) == 4


# -- a wrong token: each its own kind ---------------------------------------------------------

async def test_an_empty_or_absent_token_is_missing_token(ff):
    eid, _, wps = await suspended(ff)
    assert_error(await signal(ff, eid, wps["k"], waitpoint_token=""), 400, "missing_token",
                 names=["waitpoint_token"])
    body = {"waitpoint_id": wps["k"]["waitpoint_id"], "signal_name": "x",
            "signal_category": "c", "source_type": "t", "source_identity": "i"}
    reply = await ff.call("POST", exec_url(eid, "/signal"), body)
    assert_error(reply, 400, "missing_token")
    assert await public_state(ff, eid) == "suspended"


async def test_an_altered_token_is_invalid_and_changes_nothing(ff):
    eid, _, wps = await suspended(ff)
    token = wps["k"]["token"]
    for bad in (altered(token), token.upper().replace("K1:", "k1:"), token + "0",
                token[:-1], "k1" + token[2:].replace(":", ";"), "nocolon", ":" + token[3:],
                "k1:", "k1:" + "g" * 64, " " + token):
        reply = await signal(ff, eid, wps["k"], waitpoint_token=bad)
        assert_error(reply, 400, "invalid_token")
        assert token[3:] not in reply.body["error"]  # the token is never echoed
    assert await public_state(ff, eid) == "suspended"
    assert (await accepted(ff, eid, wps["k"]))[1] == SATISFIED


async def test_a_kid_the_store_does_not_know_is_unknown_kid(ff):
    eid, _, wps = await suspended(ff)
    reply = await signal(ff, eid, wps["k"], waitpoint_token=f"k9:{ZEROS}")
    assert_error(reply, 400, "unknown_kid", names=["k9"])
    assert await public_state(ff, eid) == "suspended"


async def test_a_token_of_another_waitpoint_of_the_same_execution_is_invalid(ff):
    eid, _, wps = await suspended(ff, all_of(single("a"), single("b")))
    reply = await signal(ff, eid, wps["a"], waitpoint_token=wps["b"]["token"])
    assert_error(reply, 400, "invalid_token")
    assert await public_state(ff, eid) == "suspended"


async def test_a_token_of_another_execution_is_invalid(ff):
    a, _, wa = await suspended(ff)
    b, _, wb = await suspended(ff)
    # A's token on B's waitpoint, and A's waitpoint (with its own token) named on B's path.
    assert_error(await signal(ff, b, wb["k"], waitpoint_token=wa["k"]["token"]), 400,
                 "invalid_token")
    assert_error(await signal(ff, b, wa["k"]), 400, "invalid_token")
    assert (await public_state(ff, a), await public_state(ff, b)) == ("suspended", "suspended")


async def test_no_state_oracle_without_a_token(ff):
    """Without the right token a caller cannot tell an unknown waitpoint from a closed one,
    a pending one, or one of a terminal execution: all are the same invalid_token."""
    eid, task = await running(ff)
    pending = await pending_waitpoint(ff, task, "p")
    bogus = f"k1:{ZEROS}"
    probes = [{"waitpoint_id": random_id(), "waitpoint_token": bogus},
              {"waitpoint_id": pending["waitpoint_id"], "waitpoint_token": bogus}]
    closed_eid, _, closed = await suspended(ff)
    await accepted(ff, closed_eid, closed["k"])
    answers = []
    for probe in probes:
        reply = await signal(ff, eid, {"waitpoint_id": probe["waitpoint_id"],
                                       "token": probe["waitpoint_token"]})
        answers.append(assert_error(reply, 400, "invalid_token"))
    reply = await signal(ff, closed_eid, {**closed["k"], "token": bogus})
    answers.append(assert_error(reply, 400, "invalid_token"))
    cancelled_eid, _, cw = await suspended(ff)
    assert (await ff.call("POST", exec_url(cancelled_eid, "/cancel"), {})).status == 200
    reply = await signal(ff, cancelled_eid, {**cw["k"], "token": bogus})
    answers.append(assert_error(reply, 400, "invalid_token"))
    assert all(a == answers[0] for a in answers), answers


async def test_a_signal_to_an_unknown_execution_is_404(ff):
    reply = await signal(ff, f"{{fp:3}}:{random_id()}",
                         {"waitpoint_id": random_id(), "token": f"k1:{ZEROS}"})
    assert_error(reply, 404, "execution_not_found")


# -- rotation -------------------------------------------------------------------------------------

async def test_rotation_answers_every_keystore_and_new_suspends_mint_the_new_kid(ff):
    eid, _, old = await suspended(ff)
    reply = await rotate(ff, "k2")
    assert reply.status == 200, reply
    body = reply.body
    assert (body["new_kid"], body["failed"]) == ("k2", [])
    assert body["rotated"] == len(body["partitions"]) >= 1
    assert all(p["outcome"] == "rotated" and p["previous_kid"] == "k1" and p["gc_count"] == 0
               for p in body["partitions"]), body
    new_eid, _, new = await suspended(ff)
    assert new["k"]["token"].startswith("k2:")
    # Inside the grace window the k1 token still signals.
    assert (await accepted(ff, eid, old["k"]))[1] == SATISFIED
    assert (await accepted(ff, new_eid, new["k"]))[1] == SATISFIED


async def test_a_previous_kid_verifies_until_its_grace_ends_then_token_expired(ff):
    grace = ff.config.hmac_grace_ms
    eid, _, wps = await suspended(ff, single("k", "x"))
    assert (await rotate(ff, "k2")).status == 200
    ff.clock.advance(grace)  # the last moment of the grace window
    assert (await accepted(ff, eid, wps["k"], "other"))[1] == "signal_ignored_matcher_failed"
    ff.clock.advance(1)
    reply = await signal(ff, eid, wps["k"], "x")
    assert_error(reply, 403, "token_expired", names=["k1"])
    assert await public_state(ff, eid) == "suspended"
    # The waitpoint's token is still readable for a client to learn it must re-issue.
    listed = (await pending_list(ff, eid)).body
    assert [w["token_kid"] for w in listed] == ["k1"]
    # An operator can still resume it.
    assert (await ff.call("POST", exec_url(eid, "/resume"), {})).status == 200


async def test_a_kid_past_its_grace_is_forgotten_at_the_next_rotation(ff):
    eid, _, wps = await suspended(ff)
    assert (await rotate(ff, "k2")).status == 200
    ff.clock.advance(ff.config.hmac_grace_ms + 1)
    reply = await rotate(ff, "k3", SECRET_3)
    assert reply.status == 200, reply
    assert all(p["gc_count"] == 1 and p["previous_kid"] == "k2"
               for p in reply.body["partitions"]), reply
    assert_error(await signal(ff, eid, wps["k"]), 400, "unknown_kid")


async def test_rapid_rotations_keep_every_kid_inside_its_own_grace(ff):
    eid, _, wps = await suspended(ff)
    assert (await rotate(ff, "k2")).status == 200
    ff.clock.advance(1000)
    assert (await rotate(ff, "k3", SECRET_3)).status == 200
    ff.clock.advance(ff.config.hmac_grace_ms - 1000)  # k1's grace ends exactly now
    assert (await accepted(ff, eid, wps["k"]))[1] == SATISFIED


async def test_the_same_kid_and_secret_again_is_a_noop(ff):
    assert (await rotate(ff, "k2")).status == 200
    reply = await rotate(ff, "k2")
    assert reply.status == 200, reply
    assert reply.body["failed"] == []
    assert {p["outcome"] for p in reply.body["partitions"]} == {"noop"}
    _, _, wps = await suspended(ff)
    assert wps["k"]["token"].startswith("k2:")


async def test_the_same_kid_with_another_secret_is_rotation_conflict(ff):
    assert (await rotate(ff, "k2", SECRET_2)).status == 200
    assert_error(await rotate(ff, "k2", SECRET_3), 409, "rotation_conflict", names=["k2"])
    # The secret of a kid is for ever, also for a retired one.
    assert (await rotate(ff, "k3", SECRET_3)).status == 200
    assert_error(await rotate(ff, "k2", SECRET_3), 409, "rotation_conflict")
    _, _, wps = await suspended(ff)
    assert wps["k"]["token"].startswith("k3:")


async def test_a_secret_given_in_uppercase_is_the_same_secret(ff):
    assert (await rotate(ff, "k2", SECRET_2)).status == 200
    reply = await rotate(ff, "k2", SECRET_2.upper())
    assert reply.status == 200 and {p["outcome"] for p in reply.body["partitions"]} == {
        "noop"}, reply


async def test_rotation_input_is_validated(ff):
    bad_kids = ["", "kid:with:colon", "a b", "x" * 65, 7, None, ["k"], "\u00e9", "k\u0000",
                "k2\n"]
    for kid in bad_kids:
        assert_error(await rotate(ff, kid), 400, ("invalid_input", "invalid_json"),
                     names=["new_kid"])
    bad_secrets = ["", "abc", "zz11", "1234567", "ab" * 8, "0x" + "ab" * 32, "ab" * 513, 12,
                   None, {"hex": SECRET_2}]
    for secret in bad_secrets:
        assert_error(await rotate(ff, "k2", secret), 400, ("invalid_input", "invalid_json"),
                     names=["new_secret_hex"])
    for body in ({}, {"new_kid": "k2"}, {"new_secret_hex": SECRET_2},
                 {"new_kid": "k2", "new_secret_hex": SECRET_2, "grace_ms": 5}, [], "k2"):
        reply = await ff.call("POST", ROTATE, body)
        assert reply.status == 400, (body, reply)
        assert_error(reply, 400, reply.body["kind"])
    # Nothing rotated.
    _, _, wps = await suspended(ff)
    assert wps["k"]["token"].startswith("k1:")


async def test_a_concurrent_second_rotation_is_429_retryable(ff, monkeypatch):
    entered, release = trio.Event(), trio.Event()
    original = ff.backend.rotate_waitpoint_secret

    async def slow(*args, **kwargs):
        entered.set()
        await release.wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(ff.backend, "rotate_waitpoint_secret", slow)
    first = {}

    async def rotate_first() -> None:
        first["reply"] = await rotate(ff, "k2")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rotate_first)
            await entered.wait()
            second = await rotate(ff, "k3", SECRET_3)
            assert_error(second, 429, "rotation_in_progress", retryable=True)
            release.set()
    assert first["reply"].status == 200, first
    monkeypatch.setattr(ff.backend, "rotate_waitpoint_secret", original)
    assert (await rotate(ff, "k3", SECRET_3)).status == 200  # retrying later works


async def test_a_rotation_past_the_server_timeout_is_504_retryable(ff, monkeypatch):
    async def stuck(*args, **kwargs):
        await trio.sleep_forever()

    monkeypatch.setattr(service_suspension, "ROTATION_TIMEOUT_S", 0.05)
    original = ff.backend.rotate_waitpoint_secret
    monkeypatch.setattr(ff.backend, "rotate_waitpoint_secret", stuck)
    with trio.fail_after(10):
        assert_error(await rotate(ff, "k2"), 504, "rotation_timeout", retryable=True)
    monkeypatch.setattr(ff.backend, "rotate_waitpoint_secret", original)
    reply = await rotate(ff, "k2")  # the retry the message promises is safe
    assert reply.status == 200, reply


async def test_pending_waitpoint_tokens_survive_a_rotation(ff):
    eid, task = await running(ff)
    wp = await pending_waitpoint(ff, task, "k")
    assert wp["token"].startswith("k1:")
    assert (await rotate(ff, "k2")).status == 200
    _, effect = await accepted(ff, eid, {**wp}, "x")
    assert effect == "buffered_for_pending_waitpoint"
    # The suspend binds the pending waitpoint: its k1 token stays (the store does not re-mint).
    reply = await ff.worker_op("suspend", task, resume_condition=single("k", "y"))
    assert reply.status == 200 and "Suspended" in reply.body, reply
    [bound] = reply.body["Suspended"]["waitpoints"]
    assert (bound["waitpoint_id"], bound["token"]) == (wp["waitpoint_id"], wp["token"])
    assert (await accepted(ff, eid, wp, "y"))[1] == SATISFIED
