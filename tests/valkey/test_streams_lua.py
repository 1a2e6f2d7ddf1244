"""Attempt streams on Valkey where the store does it its own way (lua/60_streams.lua,
plugins/valkey/streams.py): ids minted inside the append from the appliance clock, summary
patches merged in Python and committed with a version check, close wake-ups published to
other appliances, stream keys purged with their execution, and reads that look past
expired best-effort frames. (The behaviour itself is the conformance suite's.)"""

from __future__ import annotations

import json
import uuid
from typing import Any

import trio
from redis import Redis

from appliance.core import streams as st
from appliance.core.admission import wake_key
from appliance.core.contracts import ClaimArgs
from appliance.core.partitions import flow_partition
from appliance.testing import eid_path, open_harness

DEADLINE_S = 10.0


def _lane() -> str:
    return f"st{uuid.uuid4().hex[:10]}"


async def _leased(ff, lease_ttl_ms: int = 30_000, **fields: Any) -> tuple[str, dict[str, Any]]:
    lane = _lane()
    eid = await ff.create(lane_id=lane, **fields)
    task = await ff.claim(lane=lane, lease_ttl_ms=lease_ttl_ms)
    assert task is not None and task["execution_id"] == eid
    return eid, task


async def _append(ff, task: dict[str, Any], *frames: dict[str, Any], **body: Any
                  ) -> dict[str, Any]:
    reply = await ff.call("POST", f"/v1/executions/{eid_path(task['execution_id'])}/frames",
                          {"handle": task["handle"], "frames": list(frames), **body})
    assert reply.status == 200, reply
    return reply.body["Appended"]


def _log(text: str) -> dict[str, Any]:
    return {"frame_type": "log", "payload": text}


def _patch(doc: dict[str, Any]) -> dict[str, Any]:
    return {"frame_type": "summary_patch", "payload": json.dumps(doc)}


async def _read(ff, eid: str, idx: int = 0, **query: Any) -> dict[str, Any]:
    reply = await ff.call("GET", f"/v1/executions/{eid_path(eid)}/attempts/{idx}/stream",
                          query=query or None)
    assert reply.status == 200, reply
    return reply.body


class Calls:
    """The library functions the backend's connection calls, by name."""

    def __init__(self, conn: Any) -> None:
        self.names: list[str] = []
        fcall = conn.fcall

        async def counted(name, key, args, *data, read_only=False):
            self.names.append(name)
            return await fcall(name, key, args, *data, read_only=read_only)

        conn.fcall = counted

    def take(self) -> list[str]:
        names, self.names = self.names, []
        return names


def _key(eid: str, suffix: str) -> str:
    return f"ff:x:{eid}:{suffix}"


# -- ids ----------------------------------------------------------------------------------------

async def test_ids_are_minted_in_the_store_from_the_appliance_clock(ff_valkey):
    ff = ff_valkey
    eid, task = await _leased(ff)
    now = ff.clock.now_ms()
    first = await _append(ff, task, _log("a"), _log("b"), _log("c"))
    second = await _append(ff, task, _log("d"))  # the same millisecond: seq goes on
    assert (first["first_id"], first["last_id"]) == (f"{now}-0", f"{now}-2")
    assert (second["first_id"], second["last_id"]) == (f"{now}-3", f"{now}-3")
    ff.clock.advance(5)
    third = await _append(ff, task, _log("e"))
    assert third["first_id"] == f"{now + 5}-0" and third["frame_count"] == 5
    conn = ff.backend.conn
    entries = await conn.command("XRANGE", _key(eid, "st:0"), "-", "+")
    assert [e[0].decode() for e in entries] == [f"{now}-{i}" for i in range(4)] + [f"{now + 5}-0"]


async def test_a_lagging_appliance_clock_never_mints_a_smaller_id(valkey_backend_options):
    async with (open_harness("valkey", valkey_backend_options) as one,
                open_harness("valkey", valkey_backend_options) as two):
        eid, task = await _leased(one)
        one.clock.advance(10_000)
        two.clock.t = one.clock.now_ms() - 7_000  # another appliance, its clock behind
        ahead = await _append(one, task, _log("a"))
        behind = await _append(two, task, _log("b"), _log("c"))
        assert st.parse_frame_id(behind["first_id"]) > st.parse_frame_id(ahead["last_id"])
        assert behind["first_id"] == f"{one.clock.now_ms()}-1"
        assert [f["id"] for f in (await _read(two, eid))["frames"]] == [
            ahead["first_id"], behind["first_id"], behind["last_id"]]


async def test_an_append_is_one_fcall_a_patch_batch_two_a_read_one(ff_valkey):
    ff = ff_valkey
    eid, task = await _leased(ff)
    calls = Calls(ff.backend.conn)
    await _append(ff, task, _log("a"), _log("b"))
    assert calls.take() == ["ff_stream_append"]
    await _append(ff, task, _patch({"n": 1}), _log("c"))
    assert calls.take() == ["ff_stream_state", "ff_stream_append"]
    await _read(ff, eid)
    assert calls.take() == ["ff_stream_read"]


# -- summaries ------------------------------------------------------------------------------------

async def test_concurrent_patchers_both_land_the_loser_merging_again(ff_valkey):
    ff = ff_valkey
    eid, task = await _leased(ff)
    await _append(ff, task, _patch({"base": 0}))
    backend = ff.backend
    plan = backend._plan_patches
    read_once, let_go = trio.Event(), trio.Event()
    planned: list[int] = []

    async def slow_plan(execution_id, args, now):
        found = await plan(execution_id, args, now)
        planned.append(found[1])
        if len(planned) == 1:  # the first patcher read version 1; hold it there
            read_once.set()
            await let_go.wait()
        return found

    backend._plan_patches = slow_plan
    calls = Calls(backend.conn)
    got: dict[str, Any] = {}

    async def first() -> None:
        got["first"] = await _append(ff, task, _patch({"a": 1, "big": 2**70}))

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            await read_once.wait()
            got["second"] = await _append(ff, task, _patch({"b": 2}))
            let_go.set()
    assert planned == [1, 1, 2]  # the first merged on 1, lost to the second, merged on 2
    assert calls.names.count("ff_stream_append") == 3
    assert got["second"]["summary_version"] == 2 and got["first"]["summary_version"] == 3
    reply = await ff.call("GET", f"/v1/executions/{eid_path(eid)}/attempts/0/stream/summary")
    assert reply.status == 200, reply
    assert reply.body["version"] == 3
    assert reply.body["document"] == {"base": 0, "a": 1, "big": 2**70, "b": 2}
    versions = [f["fields"].get("summary_version") for f in (await _read(ff, eid))["frames"]]
    assert versions == ["1", "2", "3"]


async def test_the_summary_document_keeps_large_integers_exactly(ff_valkey):
    ff = ff_valkey
    eid, task = await _leased(ff)
    await _append(ff, task, _patch({"n": 2**64 + 1, "m": -(10**30)}))
    stored = await ff.backend.conn.command("HGET", _key(eid, "st:0:s"), "document")
    assert json.loads(stored) == {"n": 2**64 + 1, "m": -(10**30)}


# -- close wake-ups ------------------------------------------------------------------------------

def _messages(pubsub: Any) -> list[str]:
    found = []
    while (message := pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)):
        found.append(message["data"].decode())
    return found


async def test_appends_and_closes_are_published_only_for_executions_with_streams(
        ff_valkey, valkey_server):
    ff = ff_valkey
    client = Redis(port=valkey_server.port)
    pubsub = client.pubsub()
    pubsub.subscribe("ff:work")
    try:
        _messages(pubsub)
        _, quiet_task = await _leased(ff)
        assert (await ff.worker_op("complete", quiet_task)).status == 200
        assert not [m for m in _messages(pubsub) if "|s:" in m]  # no stream: nothing sent
        eid, task = await _leased(ff)
        await _append(ff, task, _log("a"))
        origin = ff.backend.origin
        assert f"{origin}|s:{eid}" in _messages(pubsub)
        assert (await ff.worker_op("complete", task)).status == 200
        assert f"|s:{eid}" in _messages(pubsub)  # every appliance hears a close
    finally:
        pubsub.close()
        client.close()


async def test_a_lease_marked_expired_wakes_the_tails_of_another_appliance(
        valkey_backend_options):
    async with (open_harness("valkey", valkey_backend_options) as one,
                open_harness("valkey", valkey_backend_options) as two):
        eid, task = await _leased(one, lease_ttl_ms=1_000)
        await _append(one, task, _log("a"))
        got: dict[str, Any] = {}

        async def tailer() -> None:
            reply = await two.call(
                "GET", f"/v1/executions/{eid_path(eid)}/attempts/0/stream/tail",
                query={"after": (await _read(two, eid))["frames"][-1]["id"],
                       "block_ms": 30_000})
            got["page"] = reply.body
            got["at"] = trio.current_time()

        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tailer)
                while not two.service.work.waiting(wake_key("stream", eid)):
                    await trio.sleep(0.002)
                start = trio.current_time()
                one.clock.advance(1_500)
                two.clock.advance(1_500)
                result = await one.tick("lease_expiry")
                assert wake_key("stream", eid) in result.lanes_woken
        assert got["page"]["closed_reason"] == "lease_expired" and got["page"]["count"] == 0
        assert got["at"] - start < 5


async def test_the_close_wake_key_is_not_in_a_claims_woken_list(ff_valkey):
    ff = ff_valkey
    lane = _lane()
    eid = await ff.create(lane_id=lane)
    task = await ff.claim(lane=lane, lease_ttl_ms=1_000)
    await _append(ff, task, _log("a"))
    ff.clock.advance(1_500)
    await ff.tick("lease_expiry")
    claim = await ff.backend.claim(ClaimArgs(lane, "w2", "w2-1", (), 30_000, 1))
    assert [t["execution_id"] for t, _ in claim.tasks] == [eid]
    assert claim.tasks[0][0]["attempt_type"] == "reclaim"
    assert all(not k.startswith("\x1f") for k in claim.woken)
    page = await _read(ff, eid, 0)
    assert page["closed_reason"] == "reclaimed"


# -- purge ----------------------------------------------------------------------------------------

async def test_a_purged_execution_takes_the_streams_of_every_attempt_along(ff_valkey):
    ff = ff_valkey
    policy = {"retry_policy": {"max_retries": 1, "backoff": {"type": "fixed", "delay_ms": 10}},
              "stream_policy": {"retention_ttl_ms": 1_000}}
    eid, task = await _leased(ff, policy=policy)
    await _append(ff, task, _log("a"), _patch({"x": 1}))
    assert (await ff.worker_op("fail", task, failure_reason="boom")).status == 200
    ff.clock.advance(20)
    await ff.tick("delayed_promoter")
    retry = await ff.claim(lane=(await ff.info(eid))["lane_id"])
    assert retry is not None
    await _append(ff, retry, _log("b"))
    assert (await ff.worker_op("complete", retry)).status == 200
    conn = ff.backend.conn
    names = [_key(eid, s) for s in ("sts", "st:0", "st:0:m", "st:0:s", "st:1", "st:1:m")]
    assert await conn.command("EXISTS", *names) == len(names)
    ff.clock.advance(2_000)
    await ff.tick("retention_trimmer")
    assert await conn.command("EXISTS", *names) == 0
    assert (await ff.call("GET", f"/v1/executions/{eid_path(eid)}/attempts/0/stream")
            ).status == 404


# -- reads and retention ----------------------------------------------------------------------------

async def test_expired_best_effort_frames_never_hide_newer_ones(ff_valkey):
    ff = ff_valkey
    eid, task = await _leased(ff)
    await _append(ff, task, *[_log(f"gone{i}") for i in range(250)], mode="best_effort",
                  ttl_ms=100)
    ff.clock.advance(200)
    await _append(ff, task, _log("kept1"), _log("kept2"))
    page = await _read(ff, eid, limit=2)
    assert [f["fields"]["payload"] for f in page["frames"]] == ["kept1", "kept2"]
    page = await _read(ff, eid, limit=1)
    assert [f["fields"]["payload"] for f in page["frames"]] == ["kept1"]


async def test_best_effort_retention_follows_the_python_rate_estimate(ff_valkey):
    ff = ff_valkey
    eid, task = await _leased(ff)
    meta, conn, retained = st.StreamMeta(), ff.backend.conn, 0
    for gap, size in [(0, 100), (1, 30), (3, 200), (1, 1), (40, 150), (2, 300)]:
        ff.clock.advance(gap)
        await _append(ff, task, *[_log("x")] * size, mode="best_effort", ttl_ms=5_000)
        now = ff.clock.now_ms()
        meta.ema_rate_hz = st.ema_update(meta, now, 5_000)
        meta.last_append_ms = now
        stored = await conn.command("HGETALL", _key(eid, "st:0:m"))
        assert float(stored[b"ema_rate_hz"]) == meta.ema_rate_hz
        retained = min(retained + size, st.best_effort_keep(meta.ema_rate_hz, 5_000))
        assert int(stored[b"retained"]) == retained
        assert await conn.command("XLEN", _key(eid, "st:0")) == retained


async def test_durable_retention_follows_the_stored_policy(ff_valkey):
    ff = ff_valkey
    eid, task = await _leased(ff, policy={"stream_policy": {"retention_maxlen": 3}})
    await _append(ff, task, *[_log(str(i)) for i in range(5)])
    out = await _append(ff, task, _log("5"))
    assert out["frame_count"] == 6
    page = await _read(ff, eid)
    assert [f["fields"]["payload"] for f in page["frames"]] == ["3", "4", "5"]
    assert await ff.backend.conn.command("XLEN", _key(eid, "st:0")) == 3


async def test_a_running_member_its_flow_skips_wakes_the_tails_of_this_appliance(ff_valkey):
    """A flow's resolution answers no stream wake keys (as the SQL stores); the close still
    reaches this appliance's tails, through the work channel."""
    ff = ff_valkey
    flow_id = str(uuid.uuid4())
    assert (await ff.call("POST", "/v1/flows", {"flow_id": flow_id})).status == 201
    partition = flow_partition(flow_id, ff.config.partitions.flow)
    lane = _lane()
    up, down = (f"{{fp:{partition}}}:{uuid.uuid4()}" for _ in range(2))
    for eid in (up, down):
        await ff.create(execution_id=eid, lane_id=lane, flow_id=flow_id)
    first = await ff.claim(lane=lane)
    second = await ff.claim(lane=lane)
    tasks = {t["execution_id"]: t for t in (first, second)}
    await _append(ff, tasks[down], _log("a"))
    revision = (await ff.call("GET", f"/v1/flows/{flow_id}")).body["graph_revision"]
    edge = {"flow_id": flow_id, "edge_id": str(uuid.uuid4()), "upstream_execution_id": up,
            "downstream_execution_id": down}
    reply = await ff.call("POST", f"/v1/flows/{flow_id}/edges",
                          {**edge, "expected_graph_revision": revision})
    assert reply.status == 201, reply
    reply = await ff.call("POST", f"/v1/flows/{flow_id}/edges/apply",
                          {**edge, "graph_revision": revision + 1})
    assert reply.status == 200, reply
    got: dict[str, Any] = {}

    async def tailer() -> None:
        reply = await ff.call("GET", f"/v1/executions/{eid_path(down)}/attempts/0/stream/tail",
                              query={"after": (await _read(ff, down))["frames"][-1]["id"],
                                     "block_ms": 30_000})
        got["page"], got["at"] = reply.body, trio.current_time()

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tailer)
            while not ff.service.work.waiting(wake_key("stream", down)):
                await trio.sleep(0.002)
            start = trio.current_time()
            failed = await ff.worker_op("fail", tasks[up], failure_reason="boom")
            assert failed.status == 200, failed
    assert got["page"]["closed_reason"] == "dependency_impossible"
    assert got["at"] - start < 5
