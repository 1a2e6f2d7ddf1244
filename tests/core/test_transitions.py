"""Direct rule tests of appliance.core.transitions on an in-memory Execution."""

import uuid

import pytest

from appliance.core import outcomes as o
from appliance.core import transitions as t
from appliance.core.contracts import ClaimArgs, CreateArgs
from appliance.core.effects import NewAttempt, UpdateAttempt
from appliance.core.errors import Conflict, LeaseExpired, LeaseRevoked, StaleLease
from appliance.core.handle import Fence
from appliance.core.ids import mint_solo
from appliance.core.operations import DEFAULT_RETENTION_MS, Ctx
from appliance.core.policy import parse_policy
from appliance.core.state import derive_public_state, is_claimable

T0 = 1_700_000_000_000
TTL = 30_000


def new(now=T0, policy=None, **fields):
    args = CreateArgs(execution_id=mint_solo("default", 256), partition_id=86,
                      namespace="default", lane_id="default", execution_kind="demo",
                      input_payload=b"", payload_encoding=None, priority=fields.pop("priority", 0),
                      creator_identity="", policy=parse_policy(policy), **fields)
    return t.create(args, Ctx(now))


def claim(ex, now=T0, worker="w1", ttl=TTL):
    """The claim's effect, the task it answers and its fence (None if the reclaim cap
    ended the execution instead)."""
    effect = t.claim(ex, ClaimArgs("default", worker, f"{worker}-i", (), ttl), Ctx(now),
                     lease_id=str(uuid.uuid4()), attempt_id=str(uuid.uuid4()))
    if not isinstance(effect.outcome, o.Claimed):
        return effect, None, None
    task = t.claim_answer(ex, effect.outcome.attempt_type, ttl)
    fence = Fence(task["lease_id"], task["lease_epoch"], task["attempt_id"])
    return effect, task, fence


def new_attempt(effect):
    return next((w.attempt for w in effect.writes if isinstance(w, NewAttempt)), None)


def attempt_update(effect):
    return next(w.values for w in effect.writes if isinstance(w, UpdateAttempt))


def complete(ex, fence, now, result=b""):
    return t.complete(ex, t.CompleteArgs(fence, result), Ctx(now))


def cancel(ex, now, reason="stop", **ctx):
    return t.cancel(ex, t.CancelArgs(reason, t.OPERATOR), Ctx(now, **ctx))


def assert_consistent(ex):
    assert ex.public_state == derive_public_state(ex.lifecycle_phase, ex.eligibility_state,
                                                  ex.terminal_outcome)
    assert ex.claimable == int(is_claimable(ex.lifecycle_phase, ex.ownership_state,
                                            ex.eligibility_state))
    for dim in ("lifecycle_phase", "ownership_state", "eligibility_state", "blocking_reason",
                "terminal_outcome", "attempt_state", "public_state"):
        assert getattr(ex, dim), dim


def vector(ex):
    return (ex.lifecycle_phase, ex.ownership_state, ex.eligibility_state, ex.blocking_reason,
            ex.terminal_outcome, ex.attempt_state, ex.public_state)


def test_create_is_waiting_for_a_worker():
    ex = new()
    assert vector(ex) == ("runnable", "unowned", "eligible_now", "waiting_for_worker", "none",
                          "pending_first_attempt", "waiting")
    assert ex.claimable == 1
    assert_consistent(ex)


@pytest.mark.parametrize("given, stored", [(10_000, 9000), (-5, 0), (50, 50)])
def test_create_clamps_priority(given, stored):
    assert new(priority=given).priority == stored


def test_create_with_future_delay_is_delayed_and_not_claimable():
    ex = new(delay_until=T0 + 5000)
    assert vector(ex)[2:] == ("not_eligible_until_time", "waiting_for_delay", "none",
                              "pending_first_attempt", "delayed")
    assert (ex.delay_until, ex.claimable) == (T0 + 5000, 0)
    assert_consistent(ex)


def test_create_with_past_delay_is_eligible_now():
    ex = new(delay_until=T0 - 1)
    assert (ex.public_state, ex.delay_until) == ("waiting", None)


def test_create_takes_the_earlier_of_the_two_deadlines():
    ex = new(policy={"timeout_policy": {"execution_deadline_ms": 1000}},
             execution_deadline_at=T0 + 5000)
    assert ex.execution_deadline_at == T0 + 1000


def test_promote_delayed_clears_delay_until_and_keeps_attempt_state():
    ex = new(delay_until=T0 + 5000)
    assert t.promote_delayed(ex, t.NoArgs(), Ctx(T0 + 4999)) is None
    assert t.promote_delayed(ex, t.NoArgs(), Ctx(T0 + 5000)) is not None
    assert (ex.public_state, ex.delay_until, ex.attempt_state) == (
        "waiting", None, "pending_first_attempt")
    assert_consistent(ex)


def test_claim_sets_lease_and_attempt_deadline():
    ex = new(policy={"timeout_policy": {"attempt_timeout_ms": 2000}})
    _, task, fence = claim(ex)
    assert vector(ex) == ("active", "leased", "not_applicable", "none", "none",
                          "running_attempt", "active")
    assert (fence.lease_epoch, task["attempt_index"], task["attempt_type"]) == (1, 0, "initial")
    assert (ex.lease_expires_at, ex.attempt_deadline_at) == (T0 + TTL, T0 + 2000)
    assert ex.claimable == 0
    assert_consistent(ex)


def test_claim_of_a_non_claimable_execution_is_refused():
    ex = new()
    claim(ex)
    with pytest.raises(Conflict) as err:
        claim(ex)
    assert err.value.kind == "execution_not_eligible"


def test_terminal_state_clears_scanner_clocks_and_sets_purge_at():
    ex = new(policy={"timeout_policy": {"attempt_timeout_ms": 2000,
                                        "execution_deadline_ms": 9000}})
    _, _, fence = claim(ex)
    complete(ex, fence, T0 + 100, b"r")
    assert vector(ex) == ("terminal", "unowned", "not_applicable", "none", "success",
                          "attempt_terminal", "completed")
    assert (ex.attempt_deadline_at, ex.execution_deadline_at, ex.delay_until) == (
        None, None, None)
    assert (ex.completed_at, ex.purge_at) == (T0 + 100, T0 + 100 + DEFAULT_RETENTION_MS)
    assert ex.current_lease_id is None and ex.lease_expires_at is None
    assert ex.current_lease_epoch == 1
    assert_consistent(ex)


def test_policy_retention_overrides_the_default_purge_time():
    ex = new(policy={"stream_policy": {"retention_ttl_ms": 500}})
    cancel(ex, T0 + 1)
    assert ex.purge_at == T0 + 1 + 500


def test_ctx_retention_applies_without_a_policy_ttl():
    ex = new()
    cancel(ex, T0, retention_ms=42)
    assert ex.purge_at == T0 + 42


def test_set_state_leaving_terminal_clears_purge_at():
    ex = new()
    _, _, fence = claim(ex)
    complete(ex, fence, T0)
    t.replay(ex, t.ReplayArgs(), Ctx(T0 + 1))
    assert (ex.purge_at, ex.completed_at, ex.public_state) == (None, None, "waiting")
    assert_consistent(ex)


def test_claim_complete_replay_claim_attempt_types():
    ex = new()
    _, first, fence = claim(ex)
    complete(ex, fence, T0 + 1)
    replayed = t.replay(ex, t.ReplayArgs(), Ctx(T0 + 2))
    assert replayed.outcome.wire() == {"Replayed": {"public_state": "waiting"}}
    assert ex.attempt_state == "pending_replay_attempt"
    effect, second, fence2 = claim(ex, now=T0 + 3)
    assert [(x["attempt_index"], x["attempt_type"]) for x in (first, second)] \
        == [(0, "initial"), (1, "replay")]
    assert (fence2.lease_epoch, ex.total_attempt_count, ex.replay_count) == (2, 2, 1)
    assert new_attempt(effect).attempt_type == "replay"


def test_replay_of_a_non_terminal_execution_is_refused():
    with pytest.raises(Conflict) as err:
        t.replay(new(), t.ReplayArgs(), Ctx(T0))
    assert err.value.kind == "execution_not_terminal"


def test_replay_stops_at_max_replay_count():
    ex = new(policy={"max_replay_count": 1})
    cancel(ex, T0)
    t.replay(ex, t.ReplayArgs(), Ctx(T0))
    cancel(ex, T0)
    with pytest.raises(Conflict) as err:
        t.replay(ex, t.ReplayArgs(), Ctx(T0))
    assert err.value.kind == "max_replays_exhausted"


def test_stale_fence_after_reclaim_raises_stale_lease():
    ex = new()
    _, _, old = claim(ex, worker="w1")
    t.revoke_lease(ex, t.RevokeLeaseArgs("operator"), Ctx(T0 + 1))
    _, reclaim, new_fence = claim(ex, now=T0 + 2, worker="w2")
    assert reclaim["attempt_type"] == "reclaim"
    assert new_fence.lease_epoch == old.lease_epoch + 1
    before = vector(ex)
    with pytest.raises(StaleLease):
        complete(ex, old, T0 + 3)
    assert vector(ex) == before


def test_wrong_lease_id_is_stale_without_a_state_change():
    ex = new()
    _, _, fence = claim(ex)
    forged = Fence("not-the-lease", fence.lease_epoch, fence.attempt_id)
    with pytest.raises(StaleLease):
        t.renew(ex, t.RenewArgs(forged), Ctx(T0))
    assert ex.public_state == "active"
    complete(ex, fence, T0)
    assert ex.public_state == "completed"


def test_expired_lease_during_complete_commits_the_mark_then_raises():
    ex = new()
    _, _, fence = claim(ex, ttl=1000)
    effect = complete(ex, fence, T0 + 1000)
    assert isinstance(effect.error, LeaseExpired) and effect.outcome is None
    assert (ex.lifecycle_phase, ex.ownership_state, ex.attempt_state, ex.public_state) == (
        "active", "lease_expired_reclaimable", "attempt_interrupted", "active")
    assert (ex.claimable, ex.lease_expired_at) == (1, T0 + 1000)
    assert_consistent(ex)


def test_marked_expired_lease_refuses_its_holder_with_lease_expired():
    ex = new()
    _, _, fence = claim(ex, ttl=1000)
    assert t.mark_lease_expired(ex, t.NoArgs(), Ctx(T0 + 999)) is None
    t.mark_lease_expired(ex, t.NoArgs(), Ctx(T0 + 1000))
    with pytest.raises(LeaseExpired):
        t.renew(ex, t.RenewArgs(fence), Ctx(T0 + 1001))


def test_revoked_lease_refuses_its_holder_and_revoke_is_idempotent():
    ex = new()
    _, _, fence = claim(ex)
    assert isinstance(t.revoke_lease(ex, t.RevokeLeaseArgs("ops"), Ctx(T0)).outcome, o.Revoked)
    assert (ex.ownership_state, ex.public_state, ex.claimable) == ("lease_revoked", "active", 1)
    again = t.revoke_lease(ex, t.RevokeLeaseArgs("ops"), Ctx(T0))
    assert again.outcome.wire() == {"AlreadySatisfied": {"reason": "already_revoked"}}
    with pytest.raises(LeaseRevoked):
        t.renew(ex, t.RenewArgs(fence), Ctx(T0))


def test_renew_extends_the_lease_and_keeps_the_epoch():
    ex = new()
    _, _, fence = claim(ex, ttl=1000)
    out = t.renew(ex, t.RenewArgs(fence, 5000), Ctx(T0 + 500)).outcome.wire()
    assert (out["lease_expires_at"], out["lease_epoch"]) == (T0 + 5500, 1)


def test_fail_with_retry_schedules_a_delayed_retry_attempt():
    ex = new(policy={"retry_policy": {"max_retries": 3,
                                      "backoff": {"type": "fixed", "delay_ms": 10}}})
    _, _, fence = claim(ex)
    effect = t.fail(ex, t.FailArgs(fence, "boom"), Ctx(T0 + 5))
    assert effect.outcome.delay_until == T0 + 15
    assert vector(ex)[2:] == ("not_eligible_until_time", "waiting_for_retry_backoff", "none",
                              "pending_retry_attempt", "delayed")
    assert (ex.retry_count, ex.delay_until) == (1, T0 + 15)
    assert_consistent(ex)
    t.promote_delayed(ex, t.NoArgs(), Ctx(T0 + 15))
    effect, retry, fence2 = claim(ex, now=T0 + 16)
    assert (retry["attempt_index"], retry["attempt_type"], fence2.lease_epoch) == (1, "retry", 2)
    assert new_attempt(effect).previous_attempt_index == 0


def test_fail_without_retry_policy_is_terminal():
    ex = new()
    _, _, fence = claim(ex)
    effect = t.fail(ex, t.FailArgs(fence, "boom", "bad_input"), Ctx(T0))
    assert isinstance(effect.outcome, o.TerminalFailed)
    assert (ex.public_state, ex.failure_category) == ("failed", "bad_input")


def test_worker_delay_resumes_the_same_attempt():
    ex = new()
    _, _, fence = claim(ex)
    t.delay(ex, t.DelayArgs(fence, T0 + 60_000), Ctx(T0))
    assert vector(ex)[2:] == ("not_eligible_until_time", "waiting_for_delay", "none",
                              "attempt_interrupted", "delayed")
    assert ex.current_lease_id is None
    t.promote_delayed(ex, t.NoArgs(), Ctx(T0 + 60_000))
    effect, resumed, fence2 = claim(ex, now=T0 + 60_001)
    assert resumed["attempt_type"] == "resumed"
    assert (fence2.attempt_id, fence2.lease_epoch) == (fence.attempt_id, 2)
    assert new_attempt(effect) is None
    assert ex.total_attempt_count == 1


def test_operator_cancel_of_an_active_execution_ends_the_attempt():
    ex = new()
    claim(ex)
    effect = cancel(ex, T0)
    assert attempt_update(effect)["attempt_state"] == "ended_cancelled"
    assert (ex.public_state, ex.current_lease_id) == ("cancelled", None)


def test_change_priority_only_while_waiting():
    ex = new()
    t.change_priority(ex, t.ChangePriorityArgs(20_000), Ctx(T0))
    assert ex.priority == 9000
    claim(ex)
    with pytest.raises(Conflict) as err:
        t.change_priority(ex, t.ChangePriorityArgs(1), Ctx(T0))
    assert err.value.kind == "execution_not_eligible"


def test_reclaim_cap_fails_the_execution():
    ex = new(policy={"max_reclaim_count": 1})
    claim(ex)
    t.revoke_lease(ex, t.RevokeLeaseArgs("x"), Ctx(T0))
    claim(ex, worker="w2")
    t.revoke_lease(ex, t.RevokeLeaseArgs("x"), Ctx(T0))
    effect, _, _ = claim(ex, worker="w3")
    assert effect.outcome.wire() == {"ReclaimCapExceeded": {"execution_id": ex.execution_id,
                                                            "reclaim_count": 1}}
    assert (ex.public_state, ex.failure_reason) == ("failed", "max_reclaims_exceeded")


def test_expire_execution_keeps_pending_first_attempt_for_a_never_claimed_one():
    ex = new(execution_deadline_at=T0 + 1)
    t.expire_execution(ex, t.NoArgs(), Ctx(T0 + 1))
    assert (ex.public_state, ex.attempt_state, ex.failure_reason) == (
        "expired", "pending_first_attempt", "execution_deadline")
