"""``SqlBackend``: every operation for a store that can run one operation generator per
transaction. A concrete store supplies ``run``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from appliance.core import flows as fl
from appliance.core.contracts import ClaimArgs, CreateArgs, ListPage
from appliance.core.errors import StartupError
from appliance.core.operations import Applied, Ctx, Mutation
from appliance.core.outcomes import Outcome
from appliance.core.record import Execution
from appliance.core.scanners import Scanner

from ..protocol import BackendBase, BackendEnv, Claim
from . import flows, ops
from .statements import Op, OpFactory, all_, exec_, one


class SqlBackend(BackendBase):
    """The shared operations; subclasses implement ``run`` (and ``prepare`` etc.)."""

    env: BackendEnv

    async def run(self, factory: OpFactory) -> Any:
        """Run the operation ``factory()`` builds in one transaction and return its value
        (or raise the typed error it raised, with nothing written)."""
        raise NotImplementedError

    async def read(self, factory: OpFactory) -> Any:
        """Run a read-only ``factory()``; by default as ``run`` does (a store with a
        separate read path, like SQLite's reader connection, overrides it)."""
        return await self.run(factory)

    def ctx(self) -> Ctx:
        return Ctx(now=self.env.clock.now_ms(), retention_ms=self.env.retention_ms)

    async def check_partitions(self) -> None:
        """Record the partition counts on first boot; refuse other counts later."""
        wanted = self.env.partitions.as_dict()
        stored = json.loads(await self.run(lambda: claim_partition_config(
            json.dumps(wanted, sort_keys=True))))
        if stored != wanted:
            diffs = ", ".join(f"{k}: stored={stored.get(k)}, config={v}"
                              for k, v in wanted.items() if stored.get(k) != v)
            raise StartupError(
                f"partition_mismatch: {diffs}. Partition counts are fixed when the store is "
                f"first used; set FF_FLOW_PARTITIONS/FF_BUDGET_PARTITIONS/FF_QUOTA_PARTITIONS "
                f"to the stored values or use a new store")

    # -- state changes ----------------------------------------------------------------
    async def apply(self, mutations: Sequence[Mutation]) -> list[Applied]:
        """All of them in one transaction, each atomic on its own (``ops.apply_many``)."""
        if not mutations:
            return []
        ctx = self.ctx()
        return await self.run(lambda: ops.apply_many(list(mutations), ctx))

    async def create(self, batch: Sequence[CreateArgs]) -> list[Applied]:
        if not batch:
            return []
        ctx = self.ctx()
        return await self.run(lambda: ops.create_many(list(batch), ctx))

    async def claim(self, args: ClaimArgs) -> Claim:
        return await self.run(lambda: ops.claim(args, self.ctx()))

    # -- reads --------------------------------------------------------------------------
    async def get_execution(self, execution_id: str) -> Execution | None:
        return await self.read(lambda: ops.get(execution_id))

    async def get_result(self, execution_id: str) -> tuple[Execution, bytes | None] | None:
        return await self.read(lambda: ops.get_result(execution_id))

    async def list_executions(self, partition: int, cursor: str | None, limit: int) -> ListPage:
        return await self.read(lambda: ops.list_page(partition, cursor, limit))

    # -- flows ------------------------------------------------------------------------------
    async def create_flow(self, sub: fl.FlowSubmission) -> tuple[Outcome, tuple[str, ...]]:
        ctx = self.ctx()
        return await self.run(lambda: flows.create_flow(sub, ctx))

    async def add_flow_member(self, flow_id: str, execution_id: str) -> Outcome:
        ctx = self.ctx()
        return await self.run(lambda: flows.add_member(flow_id, execution_id, ctx))

    async def stage_edge(self, args: fl.StageArgs) -> Outcome:
        ctx = self.ctx()
        return await self.run(lambda: flows.stage_edge(args, ctx))

    async def apply_edge(self, args: fl.ApplyEdgeArgs) -> tuple[Outcome | str, tuple[str, ...]]:
        ctx = self.ctx()
        return await self.run(lambda: flows.apply_edge(args, ctx))

    async def set_edge_group(self, flow_id: str, downstream: str,
                             spec: fl.GroupSpec) -> Outcome | str:
        ctx = self.ctx()
        return await self.run(lambda: flows.set_group(flow_id, downstream, spec, ctx))

    async def cancel_flow(self, flow_id: str, reason: str, policy: str) -> fl.CancelHeader:
        ctx = self.ctx()
        return await self.run(lambda: flows.cancel_flow(flow_id, reason, policy, ctx))

    async def cancel_flow_members(self, flow_id: str, ids: list[str], reason: str) -> list[str]:
        ctx = self.ctx()
        return await self.run(lambda: flows.cancel_members(flow_id, ids, reason, ctx))

    async def owed_flow_cancels(self, now: int, limit: int) -> dict[str, tuple[str, list[str]]]:
        return await self.read(lambda: flows.owed_cancels(now, limit))

    async def reconcile_dependencies(self, limit: int) -> tuple[int, list[str]]:
        ctx = self.ctx()
        return await self.run(lambda: flows.reconcile_dependencies(ctx, limit))

    async def describe_flow(self, flow_id: str) -> fl.FlowView | None:
        return await self.read(lambda: flows.describe(flow_id))

    async def list_flows(self, namespace: str | None, cursor: str | None,
                         limit: int) -> tuple[list[fl.Flow], str | None]:
        return await self.read(lambda: flows.list_flows(namespace, cursor, limit))

    # -- scanners -------------------------------------------------------------------------
    async def due(self, scanner: Scanner, now: int, limit: int) -> list[str]:
        return await self.run(lambda: ops.due(scanner, now, limit))

    async def sweep(self, now: int, limit: int) -> int:
        return await self.run(lambda: ops.sweep(now, limit))


def claim_partition_config(wanted: str) -> Op:
    """Record the partition counts on first boot; return what the store holds."""
    yield exec_("INSERT INTO ff_meta (key, value) VALUES ('partitions', ?) "
                "ON CONFLICT DO NOTHING", wanted)
    row = yield one("SELECT value FROM ff_meta WHERE key = 'partitions'")
    return row["value"]


def applied_versions() -> Op:
    rows = yield all_("SELECT version FROM ff_schema_version")
    return {r["version"] for r in rows}
