"""Two appliances on one store (PostgreSQL, Valkey): flow resolution, wake-ups across
appliances and the flow scanners stay exactly-once."""

from __future__ import annotations

from collections import Counter

import pytest
import trio

from appliance.testing import open_harness

SHARED = ["postgres", "valkey"]
CHAINS, STEPS = 40, 3
DEADLINE_S = 60


@pytest.fixture(params=SHARED)
def shared(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    return request.param, request.getfixturevalue(f"{request.param}_backend_options")


async def test_chains_run_in_order_exactly_once_across_two_appliances(shared):
    backend, options = shared
    done: Counter[str] = Counter()
    order: dict[str, list[str]] = {}
    async with (open_harness(backend, options) as one,
                open_harness(backend, options) as two):
        for c in range(CHAINS):
            reply = await (one, two)[c % 2].call("POST", "/v1/flows", {
                "flow_kind": "chain",
                "nodes": [{"key": f"s{i}", "lane_id": "chains"} for i in range(STEPS)],
                "edges": [{"from": f"s{i}", "to": f"s{i + 1}"} for i in range(STEPS - 1)]})
            assert reply.status == 201, reply
            created = reply.body["Created"]
            order[created["flow_id"]] = [created["executions"][f"s{i}"] for i in range(STEPS)]
        step_of = {eid: (flow, i) for flow, ids in order.items() for i, eid in enumerate(ids)}
        ran: dict[str, list[str]] = {flow: [] for flow in order}

        async def worker(ff, name: str) -> None:
            # Long-polls only: a child released on the other appliance must wake this one.
            while sum(done.values()) < CHAINS * STEPS:
                task = await ff.claim(lane="chains", worker=name, wait_ms=500)
                if task is None:
                    continue
                flow, i = step_of[task["execution_id"]]
                assert task["flow_id"] == flow
                assert ran[flow] == order[flow][:i], "a step ran before its upstream"
                ran[flow].append(task["execution_id"])  # before its child can be released
                reply = await ff.worker_op("complete", task)
                assert reply.status == 200, reply
                done[task["execution_id"]] += 1

        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:
                for i in range(4):
                    nursery.start_soon(worker, (one, two)[i % 2], f"w{i}")
        for flow in list(order)[:5]:
            reply = await two.call("GET", f"/v1/flows/{flow}")
            assert reply.body["state"] == "completed", reply
    assert set(done.values()) == {1} and len(done) == CHAINS * STEPS
    assert ran == order


async def test_both_appliances_reconciling_one_cancel_backlog_cancel_each_member_once(shared):
    backend, options = shared
    async with (open_harness(backend, options) as one,
                open_harness(backend, options) as two):
        reply = await one.call("POST", "/v1/flows", {
            "flow_kind": "big", "nodes": [{"key": f"m{i}"} for i in range(300)]})
        flow_id = reply.body["Created"]["flow_id"]
        # Flag the flow as a crashed appliance would have: backlog written, nothing cancelled.
        header = await one.backend.cancel_flow(flow_id, "stop", "cancel_all")
        assert len(header.owed) == 300
        for ff in (one, two):
            ff.clock.advance(60_000)
        results = []

        async def reconcile(ff) -> None:
            while (result := await ff.tick("flow_cancel_reconciler")).processed:
                results.append(result)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reconcile, one)
            nursery.start_soon(reconcile, two)
        assert all(not r.failed for r in results)
        flow = (await two.call("GET", f"/v1/flows/{flow_id}")).body
        assert {k: v for k, v in flow["counts"].items() if v} == {"cancelled": 300}
        assert await one.backend.owed_flow_cancels(one.clock.now_ms(), 1000) == {}
        # A repeated cancel changes nothing and answers the stored policy.
        again = await two.call("POST", f"/v1/flows/{flow_id}/cancel",
                               {"flow_id": flow_id, "cancellation_policy": "let_run"})
        assert again.body["Cancelled"]["cancellation_policy"] == "cancel_all"
