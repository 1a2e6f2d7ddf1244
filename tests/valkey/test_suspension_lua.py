"""Suspension in the Lua library, where the Valkey store differs from the SQL ones by design:
a keystore replica on every partition (seeded alike, rotated one result per partition), the
per-partition pending-waitpoint expiry index read across partitions, one FCALL per call, and
the keys a purge takes along. (The behaviour itself is the conformance suite's; the
suspension differential test compares the Lua library with the SQL code step by step.)"""

from __future__ import annotations

import uuid

import pytest
from backend_setups.valkey import redis_cli
from flowfabric_valkey import keys as vkeys

from appliance.core import conditions as cond
from appliance.core import suspension as sp
from appliance.core import tokens
from appliance.core import transitions as rules
from appliance.core.contracts import ClaimArgs, CreateArgs
from appliance.core.errors import RotationConflict, TokenExpired
from appliance.core.handle import Fence
from appliance.core.operations import Mutation
from appliance.core.policy import parse_policy

SECRET = "ab" * 32
OTHER = "cd" * 32
LANE = "susp"


def _eid(partition: int, n: int) -> str:
    return f"{{fp:{partition}}}:{uuid.UUID(int=0x5000 + n)}"


def _wid(n: int) -> str:
    return str(uuid.UUID(int=0x9000 + n))


async def _keystores(ff) -> list[dict[bytes, bytes]]:
    conn = ff.backend.conn
    return [await conn.call(conn.client.hgetall, vkeys.partition(p, "wpkeys"))
            for p in range(ff.config.partitions.flow)]


async def _running(ff, eid: str) -> Fence:
    partition = int(eid[4:eid.index("}")])
    [made] = await ff.backend.create([CreateArgs(eid, partition, "ns", LANE, "k", b"", None, 0,
                                                 "me", parse_policy({}))])
    assert made.error is None, made
    claim = await ff.backend.claim(ClaimArgs(LANE, "w", "w-1", (), 30_000, 1))
    [(task, _)] = claim.tasks
    assert task["execution_id"] == eid
    return Fence(task["lease_id"], task["lease_epoch"], task["attempt_id"])


async def _pending(ff, eid: str, fence: Fence, n: int, key: str, expires_at: int | None,
                   kid: str = "k1", secret: str = SECRET) -> sp.Waitpoint:
    wid = _wid(n)
    return await ff.backend.create_waitpoint(eid, sp.WaitpointArgs(
        fence, wid, key, tokens.mint(kid, secret, eid, wid, key), kid, expires_at))


async def test_every_partition_holds_the_same_keystore_and_a_lost_one_is_copied_back(ff_valkey):
    ff = ff_valkey
    status, keys = await ff.backend.seed_waitpoint_keys("k1", SECRET)
    assert (status, keys.current, keys.secrets) == ("installed", "k1", {"k1": SECRET})
    stores = await _keystores(ff)
    assert len(stores) == ff.config.partitions.flow
    assert all(s == {b"current": b"k1", b"s:k1": SECRET.encode()} for s in stores)
    assert (await ff.backend.seed_waitpoint_keys("k1", SECRET))[0] == "kept"
    assert (await ff.backend.seed_waitpoint_keys("k1", None))[0] == "kept"
    assert (await ff.backend.seed_waitpoint_keys("k1", OTHER))[0] == "differs"
    assert (await ff.backend.seed_waitpoint_keys("k2", SECRET))[0] == "differs"
    # A partition that lost its keystore gets partition 0's back, not a generated one.
    await ff.backend.conn.command("DEL", vkeys.partition(9, "wpkeys"))
    status, _ = await ff.backend.seed_waitpoint_keys("k1", None)
    assert status == "kept"
    assert (await _keystores(ff))[9] == {b"current": b"k1", b"s:k1": SECRET.encode()}
    assert (await ff.backend.waitpoint_keys(_eid(9, 1))).secrets == {"k1": SECRET}


async def test_a_generated_secret_is_the_same_on_every_partition(ff_valkey):
    ff = ff_valkey
    status, keys = await ff.backend.seed_waitpoint_keys("k1", None)
    assert status == "installed" and len(keys.secrets["k1"]) == 64
    assert len({s[b"s:k1"] for s in await _keystores(ff)}) == 1


async def test_rotation_answers_once_per_partition_as_the_python_rule_does(ff_valkey):
    ff = ff_valkey
    await ff.backend.seed_waitpoint_keys("k1", SECRET)
    reference = tokens.Keystore("k1", {"k1": SECRET})
    now = ff.clock.now_ms()
    results = await ff.backend.rotate_waitpoint_secret("k2", OTHER, 1_000)
    expected = tokens.rotate(reference, "k2", OTHER, 1_000, now)
    assert [p for p, _ in results] == list(range(ff.config.partitions.flow))
    assert all(r == expected for _, r in results), results[:3]
    for p in (0, 17, ff.config.partitions.flow - 1):
        assert await ff.backend.waitpoint_keys(_eid(p, 1)) == reference
    # Again: a no-op everywhere; the same kid with another secret: a conflict everywhere.
    assert {r.kind for _, r in await ff.backend.rotate_waitpoint_secret("k2", OTHER, 1_000)
            } == {"noop"}
    refused = await ff.backend.rotate_waitpoint_secret("k2", SECRET, 1_000)
    assert all(isinstance(r, RotationConflict) for _, r in refused)
    assert str(refused[0][1]) == str(RotationConflict.of(kid="k2"))
    # Past k1's grace, a rotation forgets it (gc_count), on every partition alike.
    ff.clock.advance(5_000)
    now = ff.clock.now_ms()
    expected = tokens.rotate(reference, "k3", SECRET, 1_000, now)
    results = await ff.backend.rotate_waitpoint_secret("k3", SECRET, 1_000)
    assert expected.gc_count == 1 and all(r == expected for _, r in results)
    assert await ff.backend.waitpoint_keys(_eid(3, 1)) == reference


async def test_a_partition_that_refuses_does_not_stop_the_others(ff_valkey):
    ff = ff_valkey
    await ff.backend.seed_waitpoint_keys("k1", SECRET)
    await ff.backend.conn.command("HSET", vkeys.partition(5, "wpkeys"), "s:k2", SECRET)
    results = dict(await ff.backend.rotate_waitpoint_secret("k2", OTHER, 1_000))
    assert isinstance(results.pop(5), RotationConflict)
    assert {r.kind for r in results.values()} == {"rotated"}


async def test_a_token_verifies_through_its_partitions_replica_until_its_grace_ends(ff_valkey):
    ff = ff_valkey
    await ff.backend.seed_waitpoint_keys("k1", SECRET)
    eid = _eid(11, 1)
    fence = await _running(ff, eid)
    tree = cond.parse_condition({"Composite": {"kind": "Count", "n": 3,
                                               "count_kind": "DistinctSignals",
                                               "waitpoints": ["a"]}})
    wid = _wid(1)
    token = tokens.mint("k1", SECRET, eid, wid, "a")
    result = await ff.backend.suspend(eid, sp.SuspendArgs(
        fence, "s1", tree, ("a",), (("a", wid, token),), "k1"))
    assert result.kind == "Suspended"
    await ff.backend.rotate_waitpoint_secret("k2", OTHER, 1_000)

    def signal(n: int) -> sp.SignalArgs:
        return sp.SignalArgs(wid, str(uuid.UUID(int=n)), "go", "c", "user", "u", "execution",
                             token)

    answer, _ = await ff.backend.deliver_signal(eid, signal(1))
    assert answer.effect == cond.APPENDED
    ff.clock.advance(1_001)
    with pytest.raises(TokenExpired):
        await ff.backend.deliver_signal(eid, signal(2))


async def test_pending_expiry_reads_every_partition_and_closes_the_earliest(ff_valkey):
    ff = ff_valkey
    await ff.backend.seed_waitpoint_keys("k1", SECRET)
    now = ff.clock.now_ms()
    made = []
    for n, (partition, delay) in enumerate([(3, 300), (200, 100), (3, 200), (77, 400)]):
        eid = _eid(partition, n)
        fence = await _running(ff, eid)
        made.append((eid, await _pending(ff, eid, fence, n, "a", now + delay)))
        index = vkeys.partition(partition, "wp_pending")
        assert float(await ff.backend.conn.command("ZSCORE", index, _wid(n))) == now + delay
    ff.clock.advance(350)
    assert await ff.backend.expire_pending_waitpoints(ff.clock.now_ms(), 2) == 2
    states = {wp.waitpoint_id: (await ff.backend.get_waitpoint(eid, wp.waitpoint_id))
              for eid, wp in made}
    assert {w: (s.state, s.close_reason) for w, s in states.items()} == {
        _wid(0): ("pending", None), _wid(1): ("closed", "never_committed"),
        _wid(2): ("closed", "never_committed"), _wid(3): ("pending", None)}
    assert await ff.backend.expire_pending_waitpoints(ff.clock.now_ms(), 10) == 1
    assert await ff.backend.expire_pending_waitpoints(ff.clock.now_ms(), 10) == 0
    remaining = await ff.backend.conn.command("ZRANGE", vkeys.partition(77, "wp_pending"), 0, -1)
    assert remaining == [_wid(3).encode()]


async def test_a_suspend_takes_the_waitpoint_out_of_the_expiry_index(ff_valkey):
    ff = ff_valkey
    await ff.backend.seed_waitpoint_keys("k1", SECRET)
    eid = _eid(4, 1)
    fence = await _running(ff, eid)
    wp = await _pending(ff, eid, fence, 1, "a", ff.clock.now_ms() + 1_000)
    index = vkeys.partition(4, "wp_pending")
    assert await ff.backend.conn.command("ZCARD", index) == 1
    tree = cond.parse_condition({"Single": {"waitpoint_key": "a"}})
    await ff.backend.suspend(eid, sp.SuspendArgs(fence, "s1", tree, ("a",), (), "k1"))
    assert await ff.backend.conn.command("ZCARD", index) == 0
    assert (await ff.backend.get_waitpoint(eid, wp.waitpoint_id)).state == "active"


async def test_signals_keep_every_byte_and_a_purge_takes_everything_along(ff_valkey,
                                                                         valkey_server):
    ff = ff_valkey
    await ff.backend.seed_waitpoint_keys("k1", SECRET)
    eid = _eid(21, 1)
    fence = await _running(ff, eid)
    tree = cond.parse_condition({"Single": {"waitpoint_key": "a"}})
    wid = _wid(1)
    token = tokens.mint("k1", SECRET, eid, wid, "a")
    await ff.backend.suspend(eid, sp.SuspendArgs(fence, "s1", tree, ("a",),
                                                 (("a", wid, token),), "k1"))
    data = bytes(range(256)) * 3
    answer, woken = await ff.backend.deliver_signal(eid, sp.SignalArgs(
        wid, str(uuid.UUID(int=7)), "go", "c", "user", "u", "execution", token,
        idempotency_key="once", payload=data))
    assert answer.effect == cond.SATISFIED and woken == (LANE,)
    [signal] = await ff.backend.resume_signals(eid)
    assert signal.payload == data
    claim = await ff.backend.claim(ClaimArgs(LANE, "w", "w-1", (), 30_000, 1))
    [(task, _)] = claim.tasks
    fence = Fence(task["lease_id"], task["lease_epoch"], task["attempt_id"])
    [done] = await ff.backend.apply([Mutation(rules.complete, eid, rules.CompleteArgs(fence))])
    assert done.error is None
    ff.clock.advance(ff.config.retention_ms + 1)
    [purged] = await ff.backend.apply([Mutation(rules.purge, eid, rules.NoArgs())])
    assert purged.outcome is not None
    left = redis_cli(valkey_server.port, "KEYS", "*").split()
    assert [k for k in left if eid in k or wid in k] == []


async def test_the_valkey_store_can_suspend(ff_valkey):
    can = ff_valkey.backend.capabilities()
    assert {"suspend", "resume", "expire_suspension"} <= can
