"""Numbers at every layer: hostile values are 400s naming the field, backoff saturates
at its cap identically on every backend, and a scanner's last resort ends an execution
it cannot move rather than leave it stuck."""

from __future__ import annotations

import json

import pytest

from appliance.core import transitions as rules
from appliance.core.limits import DURATION_MAX_MS, TIME_MAX_MS
from appliance.core.operations import Mutation

JSON = {"content-type": "application/json"}
HOSTILE = ["NaN", "Infinity", "-Infinity", "1e300", "1e400", "9" * 400, "-1", "1.5", "true",
           '"5"', "[]", "{}"]
#: field path → a JSON template holding the value at the marker
CREATE_FIELDS = {
    "priority": '{"priority": %s}',
    "delay_until": '{"delay_until": %s}',
    "execution_deadline_at": '{"execution_deadline_at": %s}',
    "policy.retry_policy.backoff.multiplier":
        '{"policy": {"retry_policy": {"backoff": {"multiplier": %s}}}}',
    "policy.retry_policy.backoff.initial_delay_ms":
        '{"policy": {"retry_policy": {"backoff": {"initial_delay_ms": %s}}}}',
    "policy.retry_policy.max_retries": '{"policy": {"retry_policy": {"max_retries": %s}}}',
    "policy.timeout_policy.attempt_timeout_ms":
        '{"policy": {"timeout_policy": {"attempt_timeout_ms": %s}}}',
    "policy.dedup_window_ms": '{"policy": {"dedup_window_ms": %s}}',
}
#: values that are valid for a given field (so not refused)
VALID = {("priority", "-1"), ("policy.retry_policy.backoff.initial_delay_ms", "0"),
         ("policy.retry_policy.backoff.multiplier", "1.5")}


@pytest.mark.parametrize("field, value", [(f, v) for f in sorted(CREATE_FIELDS)
                                          for v in HOSTILE if (f, v) not in VALID])
async def test_a_hostile_number_at_create_is_a_400_naming_the_field(ff, field, value):
    body = (CREATE_FIELDS[field] % value).encode()
    reply = await ff.call("POST", "/v1/executions", data=body, headers=JSON)
    assert reply.status == 400, reply
    assert field in reply.body["error"], reply.body
    assert reply.body["kind"] in ("invalid_input", "invalid_policy_json", "invalid_json")


@pytest.mark.parametrize("field, body", [
    ("lease_ttl_ms", '{"lane_id": "default", "worker_instance_id": "w", "lease_ttl_ms": %s}'),
    ("wait_ms", '{"lane_id": "default", "worker_instance_id": "w", "wait_ms": %s}'),
])
@pytest.mark.parametrize("value", ["NaN", "1e400", "9" * 400, "-1", "0.5"])
async def test_a_hostile_number_at_claim_is_a_400_naming_the_field(ff, field, body, value):
    eid = await ff.create()
    reply = await ff.call("POST", "/v1/workers/w1/claim-task", data=(body % value).encode(),
                          headers=JSON)
    assert reply.status == 400 and field in reply.body["error"], reply
    assert (await ff.claim())["execution_id"] == eid  # nothing was taken


@pytest.mark.parametrize("field, value", [("progress_pct", "101"), ("progress_pct", "NaN"),
                                          ("lease_ttl_ms", "1e400")])
async def test_a_hostile_number_on_a_lease_is_a_400_and_the_lease_holds(ff, field, value):
    await ff.create()
    task = await ff.claim()
    route = "progress" if field == "progress_pct" else "renew"
    body = f'{{"handle": "{task["handle"]}", "{field}": {value}}}'.encode()
    reply = await ff.call("POST", f"/v1/executions/{task['execution_id']}/{route}", data=body,
                          headers=JSON)
    assert reply.status == 400 and field in reply.body["error"], reply
    assert (await ff.worker_op("complete", task)).status == 200


async def test_the_largest_times_are_accepted_and_stored_exactly(ff):
    eid = await ff.create(delay_until=TIME_MAX_MS, policy={
        "timeout_policy": {"execution_deadline_ms": DURATION_MAX_MS},
        "retry_policy": {"backoff": {"initial_delay_ms": DURATION_MAX_MS,
                                     "max_delay_ms": DURATION_MAX_MS, "multiplier": 1000}}})
    info = await ff.info(eid)
    assert info["delay_until"] == TIME_MAX_MS
    assert info["execution_deadline_at"] == ff.clock.now_ms() + DURATION_MAX_MS


async def test_backoff_saturates_at_its_cap_the_same_on_every_backend(ff):
    """initial × multiplier^n overflows a double long before n reaches max_retries; the
    delay stops at max_delay_ms (Python and the Lua library compute it alike)."""
    policy = {"retry_policy": {"max_retries": 4_000_000_000, "backoff": {
        "type": "exponential", "initial_delay_ms": 7, "multiplier": 1000.0,
        "max_delay_ms": DURATION_MAX_MS}}}
    eid = await ff.create(policy=policy)
    task = await ff.claim()
    delays = []
    for _ in range(6):
        reply = await ff.worker_op("fail", task, failure_reason="boom")
        delay = reply.body["RetryScheduled"]["delay_until"] - ff.clock.now_ms()
        delays.append(delay)
        ff.clock.advance(delay)
        task = await ff.claim()
        assert task["execution_id"] == eid
    assert delays == [7, 7_000, 7_000_000, 7_000_000_000, DURATION_MAX_MS, DURATION_MAX_MS]
    assert json.loads(json.dumps(task["policy"]))["retry_policy"]["backoff"]["multiplier"] == 1000


async def test_a_fractional_multiplier_gives_the_same_delays_on_every_backend(ff):
    policy = {"retry_policy": {"max_retries": 10, "backoff": {
        "type": "exponential", "initial_delay_ms": 333, "multiplier": 1.7,
        "max_delay_ms": 5000}}}
    await ff.create(policy=policy)
    task = await ff.claim()
    delays = []
    for _ in range(7):
        reply = await ff.worker_op("fail", task, failure_reason="boom")
        delay = reply.body["RetryScheduled"]["delay_until"] - ff.clock.now_ms()
        delays.append(delay)
        ff.clock.advance(delay)
        task = await ff.claim()
    assert delays == [int(min(333 * 1.7 ** n, 5000)) for n in range(7)]


async def quarantine(ff, eid: str, reason: str) -> bool:
    [applied] = await ff.backend.apply([Mutation(rules.quarantine, eid,
                                                 rules.QuarantineArgs(reason))])
    return applied.unwrap() is not None


async def test_quarantine_ends_a_running_execution_as_failed_with_the_reason(ff):
    eid = await ff.create()
    task = await ff.claim()
    assert await quarantine(ff, eid, "scanner_error: test") is True
    info = await ff.info(eid)
    assert (info["public_state"], info["failure_category"]) == ("failed", "internal")
    assert info["failure_reason"] == "scanner_error: test"
    reply = await ff.worker_op("complete", task)
    assert (reply.status, reply.body["kind"]) == (409, "execution_not_active")
    assert await quarantine(ff, eid, "again") is False  # terminal: nothing to do
