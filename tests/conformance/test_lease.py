"""Holding a lease: renew, progress, expiry seen by the worker, and handle fencing."""

import pytest

from appliance.testing import eid_path


async def leased(ff, **claim_fields) -> tuple[str, dict]:
    eid = await ff.create()
    return eid, await ff.claim(**claim_fields)


async def test_renew_extends_the_lease_from_now_and_keeps_the_epoch(ff):
    eid, task = await leased(ff, lease_ttl_ms=10_000)
    ff.clock.advance(4000)
    reply = await ff.worker_op("renew", task)
    assert reply.status == 200, reply
    assert reply.body["lease_expires_at"] == ff.clock.now_ms() + 10_000
    assert reply.body["lease_epoch"] == 1
    assert (await ff.info(eid))["lease_expires_at"] == ff.clock.now_ms() + 10_000


async def test_renew_with_a_new_ttl_uses_it(ff):
    _, task = await leased(ff)
    reply = await ff.worker_op("renew", task, lease_ttl_ms=2000)
    assert reply.body["lease_expires_at"] == ff.clock.now_ms() + 2000


async def test_renew_after_expiry_is_lease_expired_and_marks_it_reclaimable(ff):
    eid, task = await leased(ff, lease_ttl_ms=1000)
    ff.clock.advance(1001)
    reply = await ff.worker_op("renew", task)
    assert (reply.status, reply.body["kind"]) == (409, "lease_expired")
    info = await ff.info(eid)
    assert info["state_vector"]["ownership_state"] == "lease_expired_reclaimable"
    assert info["public_state"] == "active"


@pytest.mark.parametrize("op, fields", [
    ("complete", {}),
    ("fail", {"failure_reason": "boom"}),
    ("progress", {"progress_pct": 10}),
    ("delay", {"delay_ms": 1000}),
])
async def test_worker_ops_after_expiry_are_lease_expired(ff, op, fields):
    eid, task = await leased(ff, lease_ttl_ms=1000)
    ff.clock.advance(1000)
    reply = await ff.worker_op(op, task, **fields)
    assert (reply.status, reply.body["kind"]) == (409, "lease_expired")
    assert (await ff.info(eid))["public_state"] == "active"


async def test_progress_is_visible_in_execution_info(ff):
    eid, task = await leased(ff)
    reply = await ff.worker_op("progress", task, progress_pct=42, progress_message="halfway")
    assert reply.status == 200, reply
    info = await ff.info(eid)
    assert (info["progress_pct"], info["progress_message"]) == (42, "halfway")


async def test_progress_above_100_percent_is_rejected(ff):
    eid, task = await leased(ff)
    reply = await ff.worker_op("progress", task, progress_pct=101)
    assert reply.status == 400
    assert "progress_pct" not in await ff.info(eid)


async def test_handle_of_another_execution_is_invalid_handle(ff):
    _, task = await leased(ff)
    other = await ff.create()
    reply = await ff.call("POST", f"/v1/executions/{eid_path(other)}/complete",
                          {"handle": task["handle"]})
    assert (reply.status, reply.body["kind"]) == (400, "invalid_handle")
    assert (await ff.info(other))["public_state"] == "waiting"


@pytest.mark.parametrize("handle", ["garbage", "ffh1.!!!not-base64", "ffh1.", 42])
async def test_garbage_handle_is_invalid_handle(ff, handle):
    eid, _ = await leased(ff)
    reply = await ff.call("POST", f"/v1/executions/{eid_path(eid)}/renew", {"handle": handle})
    assert (reply.status, reply.body["kind"]) == (400, "invalid_handle")


async def test_missing_handle_is_rejected(ff):
    eid, _ = await leased(ff)
    reply = await ff.call("POST", f"/v1/executions/{eid_path(eid)}/complete", {})
    assert reply.status == 400
    assert (await ff.info(eid))["public_state"] == "active"


async def test_handle_from_a_revoked_and_reclaimed_lease_is_stale(ff):
    eid, old = await leased(ff)
    revoke = await ff.call("POST", f"/v1/executions/{eid_path(eid)}/revoke-lease")
    assert revoke.status == 200, revoke
    new = await ff.claim(worker="w2")
    assert (new["execution_id"], new["lease_epoch"]) == (eid, 2)
    before = await ff.info(eid)
    for op in ("renew", "progress", "complete", "fail", "delay"):
        fields = {"delay_ms": 1000} if op == "delay" else {}
        reply = await ff.worker_op(op, old, **fields)
        assert (reply.status, reply.body["kind"]) == (409, "stale_lease"), op
    assert await ff.info(eid) == before
