"""Ending an attempt: complete, fail, and the retry policy deciding what comes next."""

import base64

import pytest

from appliance.testing import eid_path


def vector(info: dict) -> tuple:
    sv = info["state_vector"]
    return (sv["lifecycle_phase"], sv["ownership_state"], sv["eligibility_state"],
            sv["blocking_reason"], sv["terminal_outcome"], sv["attempt_state"],
            sv["public_state"])


def retry_policy(max_retries: int = 3, **backoff) -> dict:
    backoff = backoff or {"type": "fixed", "delay_ms": 10}
    return {"retry_policy": {"max_retries": max_retries, "backoff": backoff}}


async def leased(ff, **create_fields) -> tuple[str, dict]:
    eid = await ff.create(**create_fields)
    return eid, await ff.claim()


async def fail(ff, task, **fields):
    reply = await ff.worker_op("fail", task, failure_reason="boom", **fields)
    assert reply.status == 200, reply
    return reply.body


async def retry_delays(ff, eid: str, task: dict, failures: int) -> tuple[list[int], dict]:
    """Fail ``failures`` times in a row, re-claiming after each backoff: the delays seen
    and the task of the last claim."""
    delays = []
    for _ in range(failures):
        outcome = await fail(ff, task)
        delay = outcome["RetryScheduled"]["delay_until"] - ff.clock.now_ms()
        delays.append(delay)
        ff.clock.advance(delay)
        task = await ff.claim()
        assert task["execution_id"] == eid
    return delays, task


# -- complete -------------------------------------------------------------------------

async def test_complete_ends_the_execution_with_success(ff):
    eid, task = await leased(ff)
    reply = await ff.worker_op("complete", task, result=[7, 0, 255])
    assert reply.body == {"Completed": {"execution_id": eid, "public_state": "completed"}}
    info = await ff.info(eid)
    assert vector(info) == ("terminal", "unowned", "not_applicable", "none", "success",
                            "attempt_terminal", "completed")
    assert "lease_expires_at" not in info and "current_worker_id" not in info
    assert info["completed_at"] == str(ff.clock.now_ms())


async def test_result_given_as_base64_is_stored_byte_exact(ff):
    eid, task = await leased(ff)
    raw = bytes(range(256))
    reply = await ff.worker_op("complete", task, result_b64=base64.b64encode(raw).decode())
    assert reply.status == 200, reply
    result = await ff.call("GET", f"/v1/executions/{eid_path(eid)}/result")
    assert (result.status, result.body) == (200, raw)


async def test_repeated_complete_by_the_same_holder_returns_the_same_outcome(ff):
    eid, task = await leased(ff)
    first = await ff.worker_op("complete", task, result=[1])
    again = await ff.worker_op("complete", task, result=[1])
    assert (again.status, again.body) == (200, first.body)
    assert (await ff.info(eid))["public_state"] == "completed"


async def test_complete_with_a_handle_older_than_a_reclaim_is_refused(ff):
    eid, old = await leased(ff)
    await ff.call("POST", f"/v1/executions/{eid_path(eid)}/revoke-lease")
    new = await ff.claim(worker="w2")
    reply = await ff.worker_op("complete", old)
    assert (reply.status, reply.body["kind"]) == (409, "stale_lease")
    assert (await ff.worker_op("complete", new)).status == 200


# -- fail without retries -------------------------------------------------------------

async def test_fail_without_retry_policy_is_terminal(ff):
    eid, task = await leased(ff)
    outcome = await fail(ff, task, failure_category="bug")
    assert outcome == {"TerminalFailed": {"execution_id": eid, "public_state": "failed"}}
    info = await ff.info(eid)
    assert vector(info) == ("terminal", "unowned", "not_applicable", "none", "failed",
                            "attempt_terminal", "failed")
    assert (info["failure_reason"], info["failure_category"]) == ("boom", "bug")
    assert await ff.claim() is None


async def test_zero_max_retries_makes_the_first_failure_terminal(ff):
    _, task = await leased(ff, policy=retry_policy(max_retries=0))
    assert "TerminalFailed" in await fail(ff, task)


# -- fail with retries ----------------------------------------------------------------

async def test_fail_with_retry_policy_schedules_a_retry(ff):
    eid, task = await leased(ff, policy=retry_policy())
    outcome = await fail(ff, task)
    scheduled = outcome["RetryScheduled"]
    assert scheduled["delay_until"] == ff.clock.now_ms() + 10
    assert (scheduled["execution_id"], scheduled["public_state"]) == (eid, "delayed")
    info = await ff.info(eid)
    assert vector(info) == ("runnable", "unowned", "not_eligible_until_time",
                            "waiting_for_retry_backoff", "none", "pending_retry_attempt",
                            "delayed")
    assert info["retry_count"] == 1


async def test_retry_is_not_claimable_before_its_backoff(ff):
    _, task = await leased(ff, policy=retry_policy())
    await fail(ff, task)
    ff.clock.advance(9)
    assert await ff.claim() is None


async def test_retry_after_backoff_is_a_new_attempt(ff):
    eid, task = await leased(ff, policy=retry_policy())
    await fail(ff, task)
    ff.clock.advance(10)
    retry = await ff.claim()
    assert retry["execution_id"] == eid
    assert (retry["attempt_index"], retry["attempt_type"], retry["lease_epoch"]) == (1, "retry", 2)
    assert retry["attempt_id"] != task["attempt_id"]
    assert (await ff.info(eid))["total_attempt_count"] == 2


async def test_retries_exhausted_fail_terminally_after_max_retries_plus_one_attempts(ff):
    eid, task = await leased(ff, policy=retry_policy(max_retries=2))
    _, task = await retry_delays(ff, eid, task, failures=2)
    assert await fail(ff, task) == {
        "TerminalFailed": {"execution_id": eid, "public_state": "failed"}}
    info = await ff.info(eid)
    assert (info["public_state"], info["retry_count"], info["total_attempt_count"]) == (
        "failed", 2, 3)


async def test_exponential_backoff_doubles_each_retry(ff):
    backoff = {"type": "exponential", "initial_delay_ms": 1000, "multiplier": 2,
               "max_delay_ms": 60_000}
    eid, task = await leased(ff, policy=retry_policy(max_retries=5, **backoff))
    assert (await retry_delays(ff, eid, task, failures=3))[0] == [1000, 2000, 4000]


async def test_exponential_backoff_is_capped_by_max_delay(ff):
    backoff = {"type": "exponential", "initial_delay_ms": 1000, "multiplier": 10,
               "max_delay_ms": 5000}
    eid, task = await leased(ff, policy=retry_policy(max_retries=5, **backoff))
    assert (await retry_delays(ff, eid, task, failures=3))[0] == [1000, 5000, 5000]


async def test_jitter_keeps_each_delay_between_half_and_the_full_delay(ff):
    backoff = {"type": "exponential", "initial_delay_ms": 1000, "multiplier": 2,
               "max_delay_ms": 60_000, "jitter": True}
    eid, task = await leased(ff, policy=retry_policy(max_retries=5, **backoff))
    delays, _ = await retry_delays(ff, eid, task, failures=4)
    for delay, full in zip(delays, [1000, 2000, 4000, 8000]):
        assert full // 2 <= delay <= full


@pytest.mark.parametrize("category, variant", [("transient", "RetryScheduled"),
                                               ("fatal", "TerminalFailed")])
async def test_only_retryable_categories_are_retried(ff, category, variant):
    policy = retry_policy()
    policy["retry_policy"]["retryable_categories"] = ["transient"]
    _, task = await leased(ff, policy=policy)
    outcome = await fail(ff, task, failure_category=category)
    assert list(outcome) == [variant]


async def test_repeated_fail_that_scheduled_a_retry_returns_it_again(ff):
    eid, task = await leased(ff, policy=retry_policy())
    first = await fail(ff, task)
    assert await fail(ff, task) == first
    assert (await ff.info(eid))["retry_count"] == 1


async def test_repeated_terminal_fail_returns_the_same_outcome(ff):
    _, task = await leased(ff)
    first = await fail(ff, task)
    assert await fail(ff, task) == first
