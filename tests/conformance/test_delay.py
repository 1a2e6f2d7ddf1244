"""A worker parks its attempt with delay; the same attempt resumes when the delay is due."""

import pytest

from appliance.testing import eid_path


def vector(info: dict) -> tuple:
    sv = info["state_vector"]
    return (sv["lifecycle_phase"], sv["ownership_state"], sv["eligibility_state"],
            sv["blocking_reason"], sv["terminal_outcome"], sv["attempt_state"],
            sv["public_state"])


async def delayed(ff, **delay_fields) -> tuple[str, dict]:
    eid = await ff.create()
    task = await ff.claim()
    reply = await ff.worker_op("delay", task, **(delay_fields or {"delay_ms": 60_000}))
    assert reply.status == 200, reply
    return eid, task


async def test_delay_parks_the_attempt(ff):
    eid = await ff.create()
    task = await ff.claim()
    reply = await ff.worker_op("delay", task, delay_ms=60_000)
    due = ff.clock.now_ms() + 60_000
    assert reply.body == {"Delayed": {"execution_id": eid, "public_state": "delayed",
                                      "delay_until": due}}
    info = await ff.info(eid)
    assert vector(info) == ("runnable", "unowned", "not_eligible_until_time",
                            "waiting_for_delay", "none", "attempt_interrupted", "delayed")
    assert info["delay_until"] == due
    assert "lease_expires_at" not in info


async def test_delayed_attempt_is_not_claimable_before_due(ff):
    await delayed(ff, delay_ms=60_000)
    ff.clock.advance(59_999)
    assert await ff.claim() is None


async def test_due_delay_resumes_the_same_attempt_under_a_new_lease(ff):
    eid, first = await delayed(ff, delay_ms=60_000)
    ff.clock.advance(60_000)
    resumed = await ff.claim()
    assert resumed["execution_id"] == eid
    assert resumed["attempt_type"] == "resumed"
    assert (resumed["attempt_index"], resumed["attempt_id"]) == (0, first["attempt_id"])
    assert resumed["lease_epoch"] == 2
    info = await ff.info(eid)
    assert info["total_attempt_count"] == 1
    assert info["public_state"] == "active"


async def test_delay_promoted_by_the_scanner_resumes_too(ff):
    eid, _ = await delayed(ff, delay_ms=1000)
    ff.clock.advance(1000)
    await ff.tick("delayed_promoter")
    info = await ff.info(eid)
    assert (info["public_state"], info["state_vector"]["attempt_state"]) == (
        "waiting", "attempt_interrupted")
    assert (await ff.claim())["attempt_type"] == "resumed"


async def test_delay_until_in_the_past_is_eligible_at_once(ff):
    eid, _ = await delayed(ff, delay_until=ff.clock.now_ms() - 5000)
    assert (await ff.info(eid))["public_state"] == "waiting"
    assert (await ff.claim())["attempt_type"] == "resumed"


@pytest.mark.parametrize("fields", [{}, {"delay_ms": 1000, "delay_until": 1_800_000_000_000}])
async def test_delay_needs_exactly_one_of_delay_until_and_delay_ms(ff, fields):
    eid = await ff.create()
    task = await ff.claim()
    reply = await ff.worker_op("delay", task, **fields)
    assert reply.status == 400
    assert (await ff.call("GET", f"/v1/executions/{eid_path(eid)}/state")).body == "active"


async def test_handle_from_before_the_resume_is_stale(ff):
    _, old = await delayed(ff, delay_ms=1000)
    ff.clock.advance(1000)
    new = await ff.claim()
    reply = await ff.worker_op("complete", old)
    assert (reply.status, reply.body["kind"]) == (409, "stale_lease")
    assert (await ff.worker_op("complete", new)).status == 200
