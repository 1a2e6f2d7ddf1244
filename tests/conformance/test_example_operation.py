"""A new operation is four steps — args type, rule, Lua function, route — and then works
on every backend (spec/plugins.md § Adding an operation). This one renames an
execution's kind while it waits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from quart import Blueprint, Response

from appliance.core.effects import Effect
from appliance.core.errors import ExecutionNotEligible
from appliance.core.operations import Ctx, Operation, operation, unregister
from appliance.core.outcomes import Changed
from appliance.core.record import Execution
from appliance.core.schema import Body, Str256
from appliance.http.errors import json_response
from appliance.http.routing import Routes
from appliance.testing import eid_path, open_harness


# 1. the args type
@dataclass(frozen=True, slots=True)
class RenameArgs:
    execution_kind: str


# 2. the rule (pure: the record in, the answer out, typed errors for refusals)
def rename(ex: Execution, a: RenameArgs, ctx: Ctx) -> Effect:
    if ex.public_state != "waiting":
        raise ExecutionNotEligible.of(execution_id=ex.execution_id,
                                      public_state=ex.public_state)
    ex.execution_kind = a.execution_kind
    ex.last_mutation_at = ctx.now
    return Effect(Changed(ex.execution_id))


# 3. the Lua function, for the Valkey store (in-tree operations keep theirs in lua/)
RENAME_LUA = """
RULES.rename_kind = function(ex, c, a)
  if ex.public_state ~= 'waiting' then
    return nil, fail_with('execution_not_eligible', {execution_id = ex.execution_id,
                                                     public_state = ex.public_state})
  end
  ex.execution_kind = a.execution_kind
  ex.last_mutation_at = c.now
  return {Changed = {execution_id = ex.execution_id}}
end
"""


# 4. the route: its typed body, turned into the args, through the service
class RenameBody(Body):
    execution_kind: Str256


class RenameRoutes:
    def __init__(self, op: Operation[RenameArgs]) -> None:
        self.op = op

    def routes(self, service: Any, r: Routes) -> Blueprint:
        bp = Blueprint("rename", __name__)

        @r.route(bp, "/v1/executions/<execution_id>/kind", ["POST"])
        async def rename_kind(execution_id: str) -> Response:
            eid = r.eid(execution_id)
            body = await r.body(RenameBody)
            outcome = await service.apply(self.op, eid, RenameArgs(body.execution_kind))
            return json_response(outcome.wire())

        return bp


@pytest.fixture
def rename_op() -> Iterator[Operation[RenameArgs]]:
    op = operation("rename_kind", RenameArgs, lua_source=RENAME_LUA)(rename)
    try:
        yield op
    finally:
        unregister("rename_kind")


async def test_an_operation_added_in_four_steps_works_on_every_backend(
        rename_op, backend_name, backend_options):
    async with open_harness(backend_name, backend_options,
                            resources=[RenameRoutes(rename_op)]) as ff:
        assert "rename_kind" in ff.backend.capabilities()
        eid = await ff.create(execution_kind="before")
        path = f"/v1/executions/{eid_path(eid)}/kind"
        reply = await ff.call("POST", path, {"execution_kind": "after"})
        assert (reply.status, reply.body) == (200, {"Changed": {"execution_id": eid}})
        assert (await ff.info(eid))["execution_kind"] == "after"

        bad = await ff.call("POST", path, {"execution_kind": 5})
        assert (bad.status, bad.body["kind"]) == (400, "invalid_input")
        assert "execution_kind" in bad.body["error"]

        await ff.claim()
        refused = await ff.call("POST", path, {"execution_kind": "late"})
        assert (refused.status, refused.body["kind"]) == (409, "execution_not_eligible")
        assert refused.body["error"] == (f"execution {eid} is active; only waiting executions "
                                         f"can be re-prioritised")

        missing = await ff.call("POST", f"/v1/executions/{eid_path(eid[:-4] + '0000')}/kind",
                                {"execution_kind": "x"})
        assert (missing.status, missing.body["kind"]) == (404, "execution_not_found")
