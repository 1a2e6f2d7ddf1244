"""Flows through the service: each change one backend call, its woken lanes woken here;
a flow cancel's member cancels dispatched in the background or inline (spec/flows.md)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from appliance.core import flows as f
from appliance.core.errors import FlowNotFound
from appliance.core.outcomes import Outcome

if TYPE_CHECKING:
    from .facade import Service

log = logging.getLogger("flowfabric.flows")

#: Member cancels per store call when a flow cancel is dispatched.
CANCEL_CHUNK = 100


class Flows:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.backend = service.backend

    async def create(self, sub: f.FlowSubmission) -> Outcome:
        outcome, woken = await self.backend.create_flow(sub)
        self.service.wake(woken)
        return outcome

    async def add_member(self, flow_id: str, execution_id: str) -> Outcome:
        return await self.backend.add_flow_member(flow_id, execution_id)

    async def stage_edge(self, args: f.StageArgs) -> Outcome:
        return await self.backend.stage_edge(args)

    async def apply_edge(self, args: f.ApplyEdgeArgs) -> Outcome | str:
        outcome, woken = await self.backend.apply_edge(args)
        self.service.wake(woken)
        return outcome

    async def set_group(self, flow_id: str, downstream: str, spec: f.GroupSpec) -> Outcome | str:
        return await self.backend.set_edge_group(flow_id, downstream, spec)

    async def cancel(self, flow_id: str, reason: str, policy: str,
                     wait: bool) -> dict[str, object]:
        """The answer of ``POST /v1/flows/{id}/cancel``."""
        header = await self.backend.cancel_flow(flow_id, reason, policy)
        answer: dict[str, object] = {"cancellation_policy": header.cancellation_policy,
                                     "member_execution_ids": header.members}
        if header.already or not header.owed:
            return {"Cancelled": answer}
        if not wait:
            self.service.background.start_soon(
                lambda: self.dispatch(flow_id, header.owed, reason))
            return {"CancellationScheduled": {**answer, "member_count": len(header.members)}}
        failed = await self.dispatch(flow_id, header.owed, reason)
        if failed:
            return {"PartiallyCancelled": {**answer, "failed_member_execution_ids": failed}}
        return {"Cancelled": answer}

    async def dispatch(self, flow_id: str, ids: list[str], reason: str) -> list[str]:
        """Cancel ``ids`` (each with its backlog entry); the ones that failed are left to
        the cancel reconciler."""
        failed: list[str] = []
        for start in range(0, len(ids), CANCEL_CHUNK):
            chunk = ids[start:start + CANCEL_CHUNK]
            try:
                failed += await self.backend.cancel_flow_members(flow_id, chunk, reason)
            except Exception as exc:  # noqa: BLE001 - the backlog keeps what failed
                log.warning("cancelling members of flow %s: %s; the cancel reconciler "
                            "finishes them", flow_id, exc)
                failed += chunk
        return failed

    async def describe(self, flow_id: str) -> f.FlowView:
        view = await self.backend.describe_flow(flow_id)
        if view is None:
            raise FlowNotFound.of(flow_id=flow_id)
        return view

    async def list(self, namespace: str | None, cursor: str | None,
                   limit: int) -> tuple[list[f.Flow], str | None]:
        return await self.backend.list_flows(namespace, cursor, limit)
