"""``SqlBackend``: every operation for a store that can run one operation generator per
transaction. A concrete store supplies ``run``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from appliance.core import admission as adm
from appliance.core import flows as fl
from appliance.core import streams as st
from appliance.core import suspension as sp
from appliance.core import tokens
from appliance.core.contracts import ClaimArgs, CreateArgs, ListPage
from appliance.core.errors import FlowFabricError, StartupError
from appliance.core.handle import Fence
from appliance.core.operations import Applied, Ctx, Mutation
from appliance.core.outcomes import Outcome
from appliance.core.record import Execution
from appliance.core.scanners import Scanner

from ..protocol import BackendBase, BackendEnv, Claim, Task
from . import admission, flows, ops, streams
from . import suspension as sus
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

    # -- attempt streams ------------------------------------------------------------------------
    async def append_frames(self, execution_id: str, args: st.AppendArgs
                            ) -> tuple[st.Appended, tuple[str, ...]]:
        ctx = self.ctx()
        return await self.run(lambda: streams.append(execution_id, args, ctx))

    async def read_frames(self, execution_id: str, index: int, lo: st.FrameId, hi: st.FrameId,
                          limit: int) -> st.StreamPage:
        now = self.env.clock.now_ms()
        return await self.read(lambda: streams.read(execution_id, index, lo, hi, limit, now))

    async def stream_summary(self, execution_id: str, index: int) -> st.Summary | None:
        return await self.read(lambda: streams.summary(execution_id, index))

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

    # -- suspension and signals ---------------------------------------------------------------
    async def seed_waitpoint_keys(self, kid: str,
                                  secret_hex: str | None) -> tuple[str, tokens.Keystore]:
        return await self.run(lambda: sus.seed_keys(kid, secret_hex))

    async def waitpoint_keys(self, execution_id: str) -> tokens.Keystore:
        return await self.read(sus.load_keys)

    async def rotate_waitpoint_secret(self, kid: str, secret_hex: str, grace_ms: int
                                      ) -> list[tuple[int, tokens.Rotation | FlowFabricError]]:
        ctx = self.ctx()
        try:
            rotation, _keys = await self.run(lambda: sus.rotate_keys(kid, secret_hex, grace_ms,
                                                                     ctx))
        except FlowFabricError as exc:
            return [(0, exc)]
        return [(0, rotation)]

    async def create_waitpoint(self, execution_id: str, args: sp.WaitpointArgs) -> sp.Waitpoint:
        ctx = self.ctx()
        made, error = await self.run(lambda: sus.create_waitpoint(execution_id, args, ctx))
        if error is not None:
            raise error
        return made

    async def suspend(self, execution_id: str, args: sp.SuspendArgs) -> sp.SuspendResult:
        ctx = self.ctx()
        result, error = await self.run(lambda: sus.suspend(execution_id, args, ctx))
        if error is not None:
            raise error
        return result

    async def wait_children(self, execution_id: str, fence: Fence) -> Outcome:
        ctx = self.ctx()
        outcome, error = await self.run(lambda: sus.wait_children(execution_id, fence, ctx))
        if error is not None:
            raise error
        return outcome

    async def deliver_signal(self, execution_id: str, args: sp.SignalArgs
                             ) -> tuple[sp.SignalAnswer, tuple[str, ...]]:
        ctx = self.ctx()
        return await self.run(lambda: sus.deliver(execution_id, args, ctx))

    async def list_waitpoints(self, execution_id: str
                              ) -> tuple[Execution, list[sp.Waitpoint]] | None:
        return await self.read(lambda: sus.list_waitpoints(execution_id))

    async def get_waitpoint(self, execution_id: str, waitpoint_id: str) -> sp.Waitpoint | None:
        return await self.read(lambda: sus.get_waitpoint(execution_id, waitpoint_id))

    async def resume_signals(self, execution_id: str) -> list[sp.Signal]:
        return await self.read(lambda: sus.resume_signals(execution_id))

    async def expire_pending_waitpoints(self, now: int, limit: int) -> int:
        return await self.run(lambda: sus.expire_pending(now, limit))

    # -- admission ----------------------------------------------------------------------------
    async def redeem_grant(self, execution_id: str, args: ClaimArgs) -> Task:
        return await self.run(lambda: ops.redeem_grant(execution_id, args, self.ctx()))

    async def reclaim_grant(self, execution_id: str, args: ClaimArgs) -> dict[str, Any]:
        return await self.run(lambda: ops.reclaim_grant(execution_id, args, self.ctx()))

    async def create_budget(self, budget: adm.Budget) -> bool:
        return await self.run(lambda: admission.create_budget(budget))

    async def get_budget(self, budget_id: str) -> adm.Budget | None:
        return await self.read(lambda: admission.get_budget(budget_id))

    async def report_usage(self, budget_id: str, report: adm.UsageReport,
                           lease: tuple[str, Fence] | None) -> adm.UsageAnswer:
        return await self.run(lambda: admission.report_usage(budget_id, report, lease,
                                                             self.ctx()))

    async def reset_budget(self, budget_id: str) -> int:
        return await self.run(lambda: admission.reset_budget(budget_id, self.ctx()))

    async def reset_due_budgets(self, now: int, limit: int) -> list[str]:
        return await self.run(lambda: admission.reset_due_budgets(self.ctx(), limit))

    async def create_quota(self, quota: adm.Quota) -> bool:
        return await self.run(lambda: admission.create_quota(quota))

    async def get_quota(self, quota_id: str) -> dict[str, Any] | None:
        return await self.read(lambda: admission.get_quota(quota_id, self.ctx().now))

    async def reconcile_quotas(self, now: int, limit: int) -> int:
        return await self.run(lambda: admission.trim_quota_windows(now, limit))

    async def register_worker(self, worker: adm.Worker, explicit: bool) -> bool:
        return await self.run(lambda: admission.register_worker(worker, explicit))

    async def list_workers(self, lane: str | None, after: str | None,
                           limit: int) -> tuple[list[adm.Worker], str | None]:
        return await self.read(lambda: admission.list_workers(lane, after, limit))

    async def lane_position(self, ex: Execution) -> dict[str, int]:
        return await self.read(lambda: admission.lane_position(ex))

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
