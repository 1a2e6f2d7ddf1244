"""Admission on Valkey where it differs from the SQL stores by design (spec/admission.md;
plugins/valkey/admission.py, lua/50_admission.lua): budgets and quotas in slots of their own,
quota room reserved before a claim and committed after it (provisional entries that expire
when a claim dies in between), slot holders reconciled against the records (compare-and-
remove), the worker registry's lease counters kept by the library, and claims of work without
limits staying one FCALL per partition. (The behaviour itself is the conformance suite's.)"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from backend_setups.valkey import redis_cli
from flowfabric_valkey import keys as vkeys
from flowfabric_valkey.admission import RESERVATION_GRACE_MS, ClaimGate

from appliance.core.contracts import ClaimArgs
from appliance.testing import eid_path, open_harness


def _id() -> str:
    return str(uuid.uuid4())


def _lane() -> str:
    return f"adm{uuid.uuid4().hex[:10]}"


class FcallCounter:
    """The library functions called through the backend's connection, in order (a pipeline
    of several counts each)."""

    def __init__(self, conn: Any) -> None:
        self.names: list[str] = []
        self._inside = 0
        fcall, many = conn.fcall, conn.fcall_many

        async def counted(name, key, args, *data, read_only=False):
            if not self._inside:
                self.names.append(name)
            return await fcall(name, key, args, *data, read_only=read_only)

        async def counted_many(calls):
            self.names += [call[0] for call in calls]
            self._inside += 1
            try:
                return await many(calls)
            finally:
                self._inside -= 1

        conn.fcall, conn.fcall_many = counted, counted_many

    def take(self) -> list[str]:
        names, self.names = self.names, []
        return names


async def _budget(ff, dims: dict[str, int], soft: dict[str, int] | None = None) -> str:
    bid = _id()
    body = {"budget_id": bid, "dimensions": list(dims), "hard_limits": list(dims.values())}
    if soft is not None:
        body["soft_limits"] = [soft.get(d, 0) for d in dims]
    reply = await ff.call("POST", "/v1/budgets", body)
    assert reply.status == 201, reply
    return bid


async def _quota(ff, *, window_seconds: int = 0, rate: int = 0, concurrent: int = 0) -> str:
    qid = _id()
    reply = await ff.call("POST", "/v1/quotas", {
        "quota_policy_id": qid, "window_seconds": window_seconds,
        "max_requests_per_window": rate, "max_concurrent": concurrent})
    assert reply.status == 201, reply
    return qid


async def _limited(ff, lane: str, *, budgets: tuple[str, ...] = (), quota: str | None = None,
                   **fields: Any) -> str:
    policy: dict[str, Any] = {}
    if budgets:
        policy["budget_ids"] = list(budgets)
    if quota:
        policy["quota_policy_id"] = quota
    return await ff.create(lane_id=lane, policy=policy, **fields)


def _args(lane: str, instance: str = "w-1", max_tasks: int = 1) -> ClaimArgs:
    return ClaimArgs(lane, "w", instance, (), 30_000, max_tasks)


async def _holders(ff, qid: str) -> dict[str, float]:
    conn = ff.backend.conn
    rows = await conn.call(conn.client.zrange, ff.backend._quota_key(qid) + ":hold", 0, -1,
                           withscores=True)
    return {member.decode(): score for member, score in rows}


async def _status(ff, qid: str) -> dict[str, Any]:
    reply = await ff.call("GET", f"/v1/quotas/{qid}")
    assert reply.status == 200, reply
    return reply.body


# -- one FCALL per partition for work without limits ----------------------------------------

async def test_a_claim_of_work_without_limits_is_one_fcall(ff_valkey):
    ff = ff_valkey
    lane = _lane()
    ids = [await ff.create(lane_id=lane) for _ in range(3)]
    counter = FcallCounter(ff.backend.conn)
    claim = await ff.backend.claim(_args(lane, max_tasks=2))
    assert len(claim.tasks) == 2 and claim.retry_at is None
    assert counter.take() == ["ff_claim"]
    claim = await ff.backend.claim(_args(lane))
    assert len(claim.tasks) == 1
    assert counter.take() == ["ff_claim"]
    assert (await ff.backend.claim(_args(lane))).tasks == ()
    assert counter.take() == []  # the last answer said the partition has no more
    assert len(ids) == 3


async def test_work_without_limits_ahead_of_limited_work_is_still_one_fcall(ff_valkey):
    ff = ff_valkey
    lane = _lane()
    bid = await _budget(ff, {"tokens": 10})
    qid = await _quota(ff, concurrent=5)
    limited = await _limited(ff, lane, budgets=(bid,), quota=qid, priority=1)
    free = await ff.create(lane_id=lane, priority=100)
    counter = FcallCounter(ff.backend.conn)
    claim = await ff.backend.claim(_args(lane))
    assert [t["execution_id"] for t, _ in claim.tasks] == [free]
    assert counter.take() == ["ff_claim"]
    # the limited head is next: its verdicts are asked for, room reserved, then committed
    claim = await ff.backend.claim(_args(lane))
    assert [t["execution_id"] for t, _ in claim.tasks] == [limited]
    assert counter.take() == ["ff_claim", "ff_budget_get", "ff_quota_reserve", "ff_claim",
                              "ff_quota_commit"]
    assert list(await _holders(ff, qid)) == [limited]


async def test_a_lane_whose_best_work_is_limited_decides_admission_first(ff_valkey):
    """The next claim of a lane whose last claim had to decide admission decides it before
    its first FCALL (the budget read and the reservation in one pipeline); once a claim
    takes no limited work the lane is back to one FCALL."""
    ff = ff_valkey
    lane = _lane()
    bid = await _budget(ff, {"tokens": 10})
    qid = await _quota(ff, concurrent=5)
    ids = [await _limited(ff, lane, budgets=(bid,), quota=qid) for _ in range(3)]
    counter = FcallCounter(ff.backend.conn)
    got = [(await ff.backend.claim(_args(lane))).tasks[0][0]["execution_id"]]
    assert counter.take() == ["ff_claim", "ff_budget_get", "ff_quota_reserve", "ff_claim",
                              "ff_quota_commit"]
    got.append((await ff.backend.claim(_args(lane))).tasks[0][0]["execution_id"])
    assert counter.take() == ["ff_budget_get", "ff_quota_reserve", "ff_claim",
                              "ff_quota_commit"]
    free = await ff.create(lane_id=lane, priority=100)
    counter.take()
    [(task, _)] = (await ff.backend.claim(_args(lane))).tasks
    assert task["execution_id"] == free  # the guess cost a reservation, released at once
    assert counter.take() == ["ff_budget_get", "ff_quota_reserve", "ff_claim",
                              "ff_quota_commit"]
    assert sorted(await _holders(ff, qid)) == sorted(got)
    await ff.create(lane_id=lane, priority=100)
    counter.take()
    assert len((await ff.backend.claim(_args(lane))).tasks) == 1
    assert counter.take() == ["ff_claim"]
    assert set(got) <= set(ids) and len(set(got)) == 2


async def test_a_breached_budget_is_decided_with_one_read(ff_valkey):
    ff = ff_valkey
    lane = _lane()
    bid = await _budget(ff, {"tokens": 1})
    reply = await ff.call("POST", f"/v1/budgets/{bid}/usage", {"dimensions": {"tokens": 1}})
    assert reply.status == 200, reply
    await _limited(ff, lane, budgets=(bid,))
    counter = FcallCounter(ff.backend.conn)
    claim = await ff.backend.claim(_args(lane))
    assert claim.tasks == ()
    assert counter.take() == ["ff_claim", "ff_budget_get", "ff_claim"]


# -- reservations ---------------------------------------------------------------------------

async def test_a_reservation_never_committed_expires_after_the_grace(ff_valkey):
    """A claim that died between reserving and committing holds the room only for the grace."""
    ff = ff_valkey
    lane = _lane()
    qid = await _quota(ff, window_seconds=3600, rate=1, concurrent=1)
    eid = await _limited(ff, lane, quota=qid)
    dead = ClaimGate(ff.backend, ff.clock.now_ms(), lane)
    await dead.resolve([], {qid: 1}, 1)  # reserved, never committed: its appliance died
    assert dead.quotas[qid].reserved == 1
    assert (await ff.backend.claim(_args(lane))).tasks == ()
    status = await _status(ff, qid)
    assert (status["active"], status["admitted_in_window"]) == (0, 1)
    ff.clock.advance(RESERVATION_GRACE_MS - 1)
    assert (await ff.backend.claim(_args(lane))).tasks == ()
    ff.clock.advance(1)
    [(task, _)] = (await ff.backend.claim(_args(lane))).tasks
    assert task["execution_id"] == eid
    status = await _status(ff, qid)
    assert (status["active"], status["admitted_in_window"]) == (1, 1)
    assert list(await _holders(ff, qid)) == [eid]


async def test_the_reconciler_drops_dead_reservations(ff_valkey):
    ff = ff_valkey
    qid = await _quota(ff, concurrent=3)
    dead = ClaimGate(ff.backend, ff.clock.now_ms(), _lane())
    await dead.resolve([], {qid: 2}, 2)
    assert len(await _holders(ff, qid)) == 2
    ff.clock.advance(RESERVATION_GRACE_MS + 1)
    assert (await ff.tick("quota_reconciler")).processed >= 1
    assert await _holders(ff, qid) == {}


async def test_unused_room_is_released_at_once(ff_valkey):
    ff = ff_valkey
    lane = _lane()
    qid = await _quota(ff, window_seconds=60, rate=10, concurrent=10)
    ids = [await _limited(ff, lane, quota=qid) for _ in range(2)]
    claim = await ff.backend.claim(_args(lane, max_tasks=5))
    assert sorted(t["execution_id"] for t, _ in claim.tasks) == sorted(ids)
    holders = await _holders(ff, qid)
    assert sorted(holders) == sorted(ids) and all(score > 0 for score in holders.values())
    status = await _status(ff, qid)
    assert (status["active"], status["admitted_in_window"]) == (2, 2)


# -- holders --------------------------------------------------------------------------------

async def test_a_stale_holder_is_dropped_only_while_its_admission_is_the_one_seen(ff_valkey):
    ff = ff_valkey
    lane = _lane()
    qid = await _quota(ff, concurrent=1)
    eid = await _limited(ff, lane, quota=qid)
    first = await ff.claim(lane)
    assert first["execution_id"] == eid
    seen = (await _holders(ff, qid))[eid]
    revoked = await ff.call("POST", f"/v1/executions/{eid_path(eid)}/revoke-lease",
                            {"reason": "test"})
    assert revoked.status == 200, revoked
    assert (await _holders(ff, qid)) == {eid: seen}  # the record no longer holds: stale
    again = await ff.claim(lane, worker="w2")  # the cap is reached: the stale one is dropped
    assert (again["execution_id"], again["attempt_type"]) == (eid, "reclaim")
    readmitted = (await _holders(ff, qid))[eid]
    assert readmitted != seen
    # a reconciler that judged the first admission stale must not drop the second
    assert await ff.backend._drop({qid: [[eid, int(seen)]]}) == 0
    assert (await _holders(ff, qid)) == {eid: readmitted}
    assert (await _status(ff, qid))["active"] == 1


async def test_the_reconciler_drops_holders_whose_record_ended(ff_valkey):
    ff = ff_valkey
    lane = _lane()
    qid = await _quota(ff, concurrent=5)
    for _ in range(3):
        await _limited(ff, lane, quota=qid)
    tasks = [await ff.claim(lane) for _ in range(3)]
    for task in tasks[:2]:
        assert (await ff.worker_op("complete", task)).status == 200
    assert len(await _holders(ff, qid)) == 3  # records cannot reach the quota's slot
    assert (await ff.tick("quota_reconciler")).processed == 2
    assert list(await _holders(ff, qid)) == [tasks[2]["execution_id"]]


async def test_reading_a_quota_counts_only_holders_that_hold(ff_valkey):
    ff = ff_valkey
    lane = _lane()
    qid = await _quota(ff)
    for _ in range(2):
        await _limited(ff, lane, quota=qid)
    task = await ff.claim(lane)
    await ff.claim(lane)
    assert (await ff.worker_op("complete", task)).status == 200
    assert (await _status(ff, qid))["active"] == 1
    assert len(await _holders(ff, qid)) == 1  # the read dropped the stale one


# -- budgets --------------------------------------------------------------------------------

async def test_usage_stays_exact_beyond_a_double(ff_valkey):
    ff = ff_valkey
    big = 2**53 - 1
    bid = await _budget(ff, {"tokens": 0, "cost": 10}, {"tokens": 5})
    answers = []
    for _ in range(3):
        reply = await ff.call("POST", f"/v1/budgets/{bid}/usage",
                              {"dimensions": {"tokens": big}})
        answers.append(reply.body)
    assert answers[-1] == {"SoftBreach": {"dimension": "tokens", "current_usage": 3 * big,
                                          "soft_limit": 5}}
    status = (await ff.call("GET", f"/v1/budgets/{bid}")).body
    assert status["usage"] == {"tokens": 3 * big, "cost": 0}
    reply = await ff.call("POST", f"/v1/budgets/{bid}/usage", {"dimensions": {"cost": big}})
    assert reply.body == {"HardBreach": {"dimension": "cost", "current_usage": 0,
                                         "hard_limit": 10}}


async def test_a_dedup_key_lives_in_the_budget_slot(ff_valkey):
    ff = ff_valkey
    bid = await _budget(ff, {"tokens": 100})
    body = {"dimensions": {"tokens": 1}, "dedup_key": "k:with:colons"}
    assert (await ff.call("POST", f"/v1/budgets/{bid}/usage", body)).body == "Ok"
    assert (await ff.call("POST", f"/v1/budgets/{bid}/usage", body)).body == "AlreadyApplied"
    conn = ff.backend.conn
    key = ff.backend._budget_key(bid) + ":dd:k:with:colons"
    ttl = await conn.command("PTTL", key)
    assert 24 * 3600 * 1000 < ttl <= 24 * 3600 * 1000 + 60_000
    ff.clock.advance(24 * 3600 * 1000)  # forgotten by the appliance clock, whatever PX says
    assert (await ff.call("POST", f"/v1/budgets/{bid}/usage", body)).body == "Ok"


# -- the worker registry ----------------------------------------------------------------------

async def test_the_library_counts_each_instances_leases_per_partition(ff_valkey):
    ff = ff_valkey
    lane = _lane()
    for _ in range(2):
        await ff.create(lane_id=lane)
    claim = await ff.backend.claim(_args(lane, "counted-1", max_tasks=2))
    assert len(claim.tasks) == 2
    partition = int(claim.tasks[0][0]["execution_id"][4:].split("}")[0])
    conn = ff.backend.conn
    wleases = vkeys.partition(partition, "wleases")
    assert await conn.command("HGET", wleases, "counted-1") == b"2"
    assert await conn.command("HGET", vkeys.partition(partition, "wseen"), "counted-1") == \
        str(ff.clock.now_ms()).encode()
    for task, _ in claim.tasks:
        assert (await ff.worker_op("complete", task)).status == 200
    assert await conn.command("HGET", wleases, "counted-1") is None
    assert await conn.command("HGET", vkeys.partition(partition, "wseen"), "counted-1") is None


# -- a cluster ----------------------------------------------------------------------------------

@pytest.fixture
def cluster_options(cluster):
    for node in cluster:
        redis_cli(node.port, "FLUSHALL")
    return {"FF_VALKEY_URL": f"redis://127.0.0.1:{cluster[0].port}/0?cluster=true"}


async def test_admission_on_a_cluster(cluster_options):
    """Budgets, quotas, grants and the registry each in their own slots, on three nodes."""
    async with open_harness("valkey", cluster_options) as ff:
        lane = _lane()
        bids = [await _budget(ff, {"tokens": 1}) for _ in range(4)]
        qids = [await _quota(ff, window_seconds=60, rate=2, concurrent=1) for _ in range(4)]
        ids = [await _limited(ff, lane, budgets=(b,), quota=q) for b, q in zip(bids, qids,
                                                                              strict=True)]
        free = await ff.create(lane_id=lane, priority=-5)
        reply = await ff.call("POST", f"/v1/budgets/{bids[0]}/usage",
                              {"dimensions": {"tokens": 1}})
        assert reply.body == "Ok"
        got = []
        while (task := await ff.claim(lane)) is not None:
            got.append(task["execution_id"])
        assert sorted(got) == sorted(ids[1:] + [free])
        assert [(await _status(ff, q))["active"] for q in qids] == [0, 1, 1, 1]
        assert (await ff.call("POST", f"/v1/budgets/{bids[0]}/reset")).status == 200
        grant = await ff.call("POST", "/v1/workers/g/claim",
                              {"lane_id": lane, "worker_instance_id": "g-1",
                               "grant_ttl_ms": 5000})
        assert (grant.status, grant.body["execution_id"]) == (200, ids[0])
        redeemed = await ff.call("POST", f"/v1/executions/{eid_path(ids[0])}/claim-grant",
                                 {"worker_id": "g", "worker_instance_id": "g-1"})
        assert redeemed.status == 200, redeemed
        workers = await ff.call("GET", "/v1/workers")
        leases = {w["worker_instance_id"]: w["active_leases"] for w in workers.body["workers"]}
        assert leases == {"w1-1": len(got), "g-1": 1}
        assert (await ff.tick("quota_reconciler")).processed == 0
        assert (await ff.tick("budget_reset")).processed == 0


async def test_a_reservation_made_late_still_counts_its_whole_window(ff_valkey):
    """Claims reserve with the time they started at: one that started earlier may reserve
    after one that started later, and must still see every admission of its own window."""
    ff = ff_valkey
    qid = await _quota(ff, window_seconds=1, rate=2)
    t = ff.clock.now_ms()

    async def reserve(at: int) -> int:
        gate = ClaimGate(ff.backend, at, _lane())
        await gate.resolve([], {qid: 1}, 1)
        return gate.quotas[qid].reserved

    assert [await reserve(t), await reserve(t)] == [1, 1]
    assert await reserve(t + 1500) == 1  # its window no longer holds t
    assert await reserve(t + 600) == 0  # its window holds both admissions at t
