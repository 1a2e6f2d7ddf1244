"""The dependency reconciler is a safety net: an upstream ended in the store without its
edges resolving (a hand edit here) gets them resolved, and the child released."""

from __future__ import annotations

from appliance.backend.sql.statements import exec_
from appliance.testing import open_harness


async def test_an_edge_left_unresolved_is_resolved_by_the_reconciler(sqlite_backend_options):
    async with open_harness("sqlite", sqlite_backend_options) as ff:
        reply = await ff.call("POST", "/v1/flows", {
            "nodes": [{"key": "a", "lane_id": "a"}, {"key": "b", "lane_id": "b"}],
            "edges": [{"from": "a", "to": "b"}]})
        ids = reply.body["Created"]["executions"]

        def ended_by_hand():
            yield exec_("UPDATE ff_exec SET lifecycle_phase = 'terminal', terminal_outcome = "
                        "'success', public_state = 'completed', claimable = 0 "
                        "WHERE execution_id = ?", ids["a"])

        await ff.backend.run(ended_by_hand)
        assert await ff.claim(lane="b") is None
        result = await ff.tick("dependency_reconciler")
        assert result.processed == 1
        task = await ff.claim(lane="b")
        assert task is not None and task["execution_id"] == ids["b"]
        assert (await ff.tick("dependency_reconciler")).processed == 0
