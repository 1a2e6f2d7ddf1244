"""``SqlBackend``: every execution operation for a store that can run one
operation generator per transaction. A concrete store supplies ``_run``."""

from __future__ import annotations

import json
from typing import Any

from appliance.core.contracts import CancelArgs, ClaimArgs, CreateArgs, ListPage
from appliance.core.errors import StartupError
from appliance.core.handle import Handle
from appliance.core.record import Execution
from appliance.core.transitions import Ctx

from ..protocol import BackendBase, BackendEnv, Outcome, ScanResult
from . import ops
from .statements import Deferred, Op, OpFactory, all_, exec_, one


class SqlBackend(BackendBase):
    env: BackendEnv

    async def _run(self, factory: OpFactory) -> Any:
        """Run the operation ``factory()`` builds in one transaction and return its value."""
        raise NotImplementedError

    async def _call(self, factory: OpFactory) -> Any:
        result = await self._run(factory)
        if isinstance(result, Deferred):
            raise result.error
        return result

    def _ctx(self) -> Ctx:
        return Ctx(now=self.env.clock.now_ms(), retention_ms=self.env.retention_ms)

    # -- boot -----------------------------------------------------------------------
    async def _check_partitions(self) -> None:
        wanted = self.env.partitions.as_dict()
        stored = await self._call(lambda: _claim_partition_config(json.dumps(wanted,
                                                                               sort_keys=True)))
        stored = json.loads(stored)
        if stored != wanted:
            diffs = ", ".join(f"{k}: stored={stored.get(k)}, config={v}"
                              for k, v in wanted.items() if stored.get(k) != v)
            raise StartupError(
                f"partition_mismatch: {diffs}. Partition counts are fixed when the store is "
                f"first used; set FF_FLOW_PARTITIONS/FF_BUDGET_PARTITIONS/FF_QUOTA_PARTITIONS "
                f"to the stored values or use a new store")

    # -- operations -------------------------------------------------------------------
    async def create_execution(self, args: CreateArgs) -> Outcome:
        return await self._call(lambda: ops.create(args, self._ctx()))

    async def get_execution(self, execution_id: str) -> Execution | None:
        return await self._call(lambda: ops.get(execution_id))

    async def get_result(self, execution_id: str) -> tuple[Execution, bytes | None] | None:
        return await self._call(lambda: ops.get_result(execution_id))

    async def list_executions(self, partition: int, cursor: str | None, limit: int) -> ListPage:
        return await self._call(lambda: ops.list_page(partition, cursor, limit))

    async def cancel_execution(self, args: CancelArgs) -> Outcome:
        return await self._call(lambda: ops.cancel(args, self._ctx()))

    async def change_priority(self, execution_id: str, priority: int) -> Outcome:
        return await self._call(lambda: ops.change_priority(execution_id, priority, self._ctx()))

    async def replay_execution(self, execution_id: str) -> Outcome:
        return await self._call(lambda: ops.replay(execution_id, self._ctx()))

    async def revoke_lease(self, execution_id: str, reason: str) -> Outcome:
        return await self._call(lambda: ops.revoke_lease(execution_id, reason, self._ctx()))

    async def claim(self, args: ClaimArgs) -> tuple[Outcome, bytes] | None:
        return await self._call(lambda: ops.claim(args, self._ctx()))

    async def renew(self, handle: Handle, lease_ttl_ms: int | None) -> Outcome:
        return await self._call(lambda: ops.renew(handle, lease_ttl_ms, self._ctx()))

    async def progress(self, handle: Handle, pct: int | None, message: str | None) -> Outcome:
        return await self._call(lambda: ops.progress(handle, pct, message, self._ctx()))

    async def complete(self, handle: Handle, result: bytes | None,
                       encoding: str | None) -> Outcome:
        return await self._call(lambda: ops.complete(handle, result, encoding, self._ctx()))

    async def fail(self, handle: Handle, reason: str, category: str | None) -> Outcome:
        return await self._call(lambda: ops.fail(handle, reason, category, self._ctx()))

    async def delay(self, handle: Handle, delay_until: int) -> Outcome:
        return await self._call(lambda: ops.delay(handle, delay_until, self._ctx()))

    async def quarantine(self, execution_id: str, reason: str) -> bool:
        return await self._call(lambda: ops.quarantine(execution_id, reason, self._ctx()))

    async def run_scanner(self, scanner: str, limit: int, skip: frozenset[str]) -> ScanResult:
        result = ScanResult()
        if scanner == "retention_trimmer":
            result.processed = await self._call(lambda: ops.purge(self.env.clock.now_ms(), limit))
            return result
        now = self.env.clock.now_ms()
        ids = await self._call(lambda: ops.due(scanner, now, limit + len(skip)))
        for eid in [i for i in ids if i not in skip][:limit]:
            try:
                lane = await self._call(lambda eid=eid: ops.apply_scanner(scanner, eid,
                                                                          self._ctx()))
            except Exception as exc:  # one bad row must not stop the batch
                result.failed[eid] = exc
                continue
            if lane is not None:
                result.processed += 1
                if lane:
                    result.lanes_woken.add(lane)
        return result


def _claim_partition_config(wanted: str) -> Op:
    """Record the partition counts on first boot; return what the store holds."""
    yield exec_("INSERT INTO ff_meta (key, value) VALUES ('partitions', ?) "
                "ON CONFLICT DO NOTHING", wanted)
    row = yield one("SELECT value FROM ff_meta WHERE key = 'partitions'")
    return row["value"]


def applied_versions() -> Op:
    rows = yield all_("SELECT version FROM ff_schema_version")
    return {r["version"] for r in rows}
