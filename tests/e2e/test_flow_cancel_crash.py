"""SIGKILL during an async cancel_flow: after a restart every member still ends cancelled
(the cancel backlog is written with the flag; the cancel reconciler finishes it)."""

from __future__ import annotations

import httpx
import pytest
import trio

pytestmark = pytest.mark.e2e

MEMBERS = 500
#: The backlog's grace (5 s) plus a few reconciler cycles and a slow machine.
DEADLINE_S = 60


@pytest.fixture(params=["sqlite", "valkey", "postgres"])
def store(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"FF_BACKEND": request.param,
            **request.getfixturevalue(f"{request.param}_backend_options"),
            "FF_FLOW_CANCEL_RECONCILER_INTERVAL_MS": "200"}


async def test_members_of_a_flow_cancel_cut_short_by_sigkill_end_cancelled(
        launch, client: httpx.AsyncClient, store: dict[str, str]) -> None:
    app = launch(env=store)
    nodes = [{"key": f"n{i}", "lane_id": "crash"} for i in range(MEMBERS)]
    reply = await client.post(f"{app.url}/v1/flows", json={"flow_kind": "crash",
                                                            "nodes": nodes})
    assert reply.status_code == 201, reply.text
    flow_id = reply.json()["Created"]["flow_id"]
    claimed = await client.post(f"{app.url}/v1/workers/w/claim-task", json={
        "lane_id": "crash", "worker_instance_id": "w-1", "max_tasks": 20})
    assert claimed.status_code == 200, claimed.text

    reply = await client.post(f"{app.url}/v1/flows/{flow_id}/cancel",
                              json={"flow_id": flow_id, "cancellation_policy": "cancel_all",
                                    "reason": "shutting down"})
    app.kill()
    assert reply.status_code == 200, reply.text
    assert set(reply.json()) == {"CancellationScheduled"}, reply.text

    app = launch(env=store)
    counts: dict[str, int] = {}
    with trio.move_on_after(DEADLINE_S):
        while True:
            flow = (await client.get(f"{app.url}/v1/flows/{flow_id}")).json()
            counts = {k: v for k, v in flow["counts"].items() if v}
            if counts == {"cancelled": MEMBERS}:
                break
            await trio.sleep(0.1)
    assert counts == {"cancelled": MEMBERS}
    assert flow["state"] == "cancelled"
    one = (await client.get(f"{app.url}/v1/executions/{flow['members'][0]['execution_id']}"
                            .replace("{", "%7B").replace("}", "%7D"))).json()
    assert one["cancellation_reason"] == "shutting down"
