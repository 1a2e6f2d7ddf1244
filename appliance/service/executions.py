"""The service facade: validates requests, calls the backend, shapes answers.

Inputs are the decoded JSON bodies, path values and query strings of the HTTP
API; outputs are JSON-ready objects. Nothing here knows about HTTP itself.
"""

from __future__ import annotations

import base64
from typing import Any

import trio

from appliance.backend import Backend
from appliance.config import Config
from appliance.core.contracts import CancelArgs, ClaimArgs, CreateArgs
from appliance.core.errors import InvalidInput, NotFound
from appliance.core.fields import MS_MAX, Fields
from appliance.core.handle import Fence, Handle, decode_handle
from appliance.core.ids import (mint_solo, parse_execution_id, validate_lane,
                                validate_worker_name)
from appliance.core.policy import parse_capabilities, parse_policy
from appliance.core.record import Execution
from appliance.core.state import PublicState
from appliance.core.transitions import OPERATOR

from .work import WorkSignal

#: How often a long-polling claim looks again without a wake-up (work made
#: claimable by another appliance, or a delay that just came due).
REPOLL_S = 0.25
MAX_LIST_LIMIT = 1000
TAG_KEY_HINT = "tag keys look like '<caller>.<field>' in lowercase, e.g. 'cairn.task_id'"


class Service:
    def __init__(self, backend: Backend, config: Config) -> None:
        self.backend = backend
        self.config = config
        self.work = WorkSignal()
        self.background: Any = None  # the supervisor's bounded background nursery

    # -- ingress ------------------------------------------------------------------
    async def create_execution(self, body: Any) -> tuple[int, dict[str, Any]]:
        args = self._create_args(body)
        outcome = await self.backend.create_execution(args)
        if "Created" in outcome:
            if outcome["Created"]["public_state"] == PublicState.WAITING:
                self.work.notify(args.lane_id)
            return 201, outcome
        return 200, outcome

    def _create_args(self, body: Any) -> CreateArgs:
        f = Fields(body if body is not None else {}, "")
        lane = validate_lane(f.str("lane_id", "default"))
        partitions = self.config.partitions
        raw_id = f.get("execution_id")
        if raw_id is None:
            eid = parse_execution_id(mint_solo(lane, partitions.flow))
        else:
            eid = parse_execution_id(raw_id)
        partition_id = f.int("partition_id", eid.partition, hi=65535)
        if partition_id != eid.partition:
            raise f.fail("partition_id", f"{partition_id} does not match the partition "
                                         f"{eid.partition} embedded in execution_id")
        policy = parse_policy(f.get("policy"))
        priority = f.int("priority", lo=-(2**31), hi=2**31 - 1)
        if policy.priority is not None and priority is not None and policy.priority != priority:
            raise f.fail("priority", "differs from policy.priority; give one of them")
        delay_until = f.int("delay_until")
        if (policy.delay_until is not None and delay_until is not None
                and policy.delay_until != delay_until):
            raise f.fail("delay_until", "differs from policy.delay_until; give one of them")
        tags = f.str_map("tags")
        for key in tags:
            _check_tag_key(key)
        f.int("now")  # accepted for FlowFabric clients; the appliance clock is authoritative
        args = CreateArgs(
            execution_id=str(eid), partition_id=partition_id,
            namespace=f.str("namespace", "default", max_len=256),  # type: ignore[arg-type]
            lane_id=lane,
            execution_kind=f.str("execution_kind", "default", max_len=256),  # type: ignore[arg-type]
            input_payload=f.bytes("input_payload") or b"",
            payload_encoding=f.str("payload_encoding", max_len=256),
            priority=priority if priority is not None else (policy.priority or 0),
            creator_identity=f.str("creator_identity", "", max_len=256),  # type: ignore[arg-type]
            policy=policy, tags=tags,
            idempotency_key=f.str("idempotency_key", max_len=1024),
            delay_until=delay_until if delay_until is not None else policy.delay_until,
            execution_deadline_at=f.int("execution_deadline_at"),
        )
        f.done()
        return args

    # -- reads ------------------------------------------------------------------------
    async def _record(self, execution_id: str) -> Execution:
        eid = str(parse_execution_id(execution_id))
        ex = await self.backend.get_execution(eid)
        if ex is None:
            raise NotFound(f"execution not found: {eid}", kind="execution_not_found")
        return ex

    async def get_execution(self, execution_id: str) -> dict[str, Any]:
        return execution_info(await self._record(execution_id))

    async def get_state(self, execution_id: str) -> str:
        return (await self._record(execution_id)).public_state

    async def get_result(self, execution_id: str) -> tuple[bytes, str | None]:
        eid = str(parse_execution_id(execution_id))
        found = await self.backend.get_result(eid)
        if found is None:
            raise NotFound(f"execution not found: {eid}", kind="execution_not_found")
        ex, data = found
        if data is None:
            raise NotFound(f"execution result not found: {eid} is {ex.public_state}"
                           + ("" if ex.public_state != "completed" else " with no result bytes"),
                           kind="result_not_found")
        return data, ex.result_encoding

    async def list_executions(self, query: dict[str, str]) -> dict[str, Any]:
        f = Fields(query, "query")
        partition = _query_int(f, "partition", None, 0, 65535)
        limit = min(_query_int(f, "limit", 50, 0, 2**31), MAX_LIST_LIMIT)
        cursor = f.str("cursor") or None
        if cursor is not None:
            try:
                cursor = str(parse_execution_id(cursor, "cursor"))
            except InvalidInput as exc:
                raise InvalidInput(f"invalid cursor: {exc.message}") from None
        f.done()
        page = await self.backend.list_executions(partition, cursor, limit)
        return {"executions": page.executions, "next_cursor": page.next_cursor}

    # -- operator ---------------------------------------------------------------------
    async def cancel(self, execution_id: str, body: Any) -> dict[str, Any]:
        f = Fields(body if body is not None else {}, "")
        eid = _path_matches_body(execution_id, f)
        reason = f.str("reason", "cancelled", max_len=4096)
        source = f.str("source", OPERATOR, max_len=256)
        fence = _fence_from(f)
        f.int("now")  # accepted for FlowFabric clients; the appliance clock is authoritative
        f.done()
        if fence is not None and fence[0] and fence[0] != eid:
            raise InvalidInput("handle names another execution than the path")
        return await self.backend.cancel_execution(CancelArgs(
            eid, reason, source, fence[1] if fence else None))  # type: ignore[arg-type]

    async def change_priority(self, execution_id: str, body: Any) -> dict[str, Any]:
        eid = str(parse_execution_id(execution_id))
        f = Fields(body, "")
        priority = f.int("new_priority", lo=-(2**31), hi=2**31 - 1)
        if priority is None:
            raise f.fail("new_priority", "is required")
        f.done()
        return await self.backend.change_priority(eid, priority)

    async def replay(self, execution_id: str, body: Any) -> dict[str, Any]:
        eid = str(parse_execution_id(execution_id))
        Fields(body if body is not None else {}, "").done()
        outcome = await self.backend.replay_execution(eid)
        await self._wake_for(eid, outcome)
        return outcome

    async def revoke_lease(self, execution_id: str, body: Any) -> dict[str, Any]:
        eid = str(parse_execution_id(execution_id))
        f = Fields(body if body is not None else {}, "")
        reason = f.str("reason", "operator_revoke", max_len=4096)
        f.done()
        outcome = await self.backend.revoke_lease(eid, reason)  # type: ignore[arg-type]
        await self._wake_for(eid, outcome)
        return outcome

    async def _wake_for(self, execution_id: str, outcome: dict[str, Any]) -> None:
        if "Replayed" in outcome or "Revoked" in outcome:
            ex = await self.backend.get_execution(execution_id)
            if ex is not None and ex.claimable:
                self.work.notify(ex.lane_id)

    # -- worker side --------------------------------------------------------------------
    async def claim_task(self, worker_id: str, body: Any) -> dict[str, Any] | None:
        """Lease work, waiting up to ``wait_ms`` for some to arrive (None: nothing came)."""
        validate_worker_name(worker_id, "worker_id")
        f = Fields(body, "")
        args = ClaimArgs(
            lane_id=validate_lane(f.required_str("lane_id")),
            worker_id=worker_id,
            worker_instance_id=validate_worker_name(f.get("worker_instance_id"),
                                                    "worker_instance_id"),
            capabilities=parse_capabilities(f.get("capabilities"), "worker"),
            lease_ttl_ms=f.int("lease_ttl_ms", self.config.default_lease_ttl_ms, lo=1,
                               hi=86_400_000),  # type: ignore[arg-type]
        )
        wait_ms = f.int("wait_ms", 0, hi=self.config.max_claim_wait_ms)
        f.done()
        deadline = trio.current_time() + wait_ms / 1000  # type: ignore[operator]
        while True:
            woken = self.work.waiter(args.lane_id)
            got = None
            try:
                got = await self.backend.claim(args)
                if got is not None:
                    outcome, payload = got
                    return {**outcome, "input_payload": list(payload),
                            "input_payload_b64": base64.b64encode(payload).decode()}
                remaining = deadline - trio.current_time()
                if remaining <= 0 or self.work.closing:
                    return None
                with trio.move_on_after(min(remaining, REPOLL_S)):
                    await woken.wait()
            finally:
                self.work.done(args.lane_id, woken, claimed=got is not None)

    async def renew(self, execution_id: str, body: Any) -> dict[str, Any]:
        f = Fields(body, "")
        handle = _handle_for(execution_id, f)
        ttl = f.int("lease_ttl_ms", lo=1, hi=86_400_000)
        f.done()
        return await self.backend.renew(handle, ttl)

    async def progress(self, execution_id: str, body: Any) -> dict[str, Any]:
        f = Fields(body, "")
        handle = _handle_for(execution_id, f)
        pct = f.int("progress_pct", hi=100)
        message = f.str("progress_message", max_len=4096)
        f.done()
        return await self.backend.progress(handle, pct, message)

    async def complete(self, execution_id: str, body: Any) -> dict[str, Any]:
        f = Fields(body, "")
        handle = _handle_for(execution_id, f)
        result = f.bytes("result")
        encoding = f.str("result_encoding", max_len=256)
        f.done()
        return await self.backend.complete(handle, result, encoding)

    async def fail(self, execution_id: str, body: Any) -> dict[str, Any]:
        f = Fields(body, "")
        handle = _handle_for(execution_id, f)
        reason = f.str("failure_reason", "", max_len=4096)
        category = f.str("failure_category", max_len=256)
        f.done()
        outcome = await self.backend.fail(handle, reason, category)  # type: ignore[arg-type]
        if "RetryScheduled" in outcome and outcome["RetryScheduled"]["public_state"] == "waiting":
            ex = await self.backend.get_execution(handle.execution_id)
            if ex is not None:
                self.work.notify(ex.lane_id)
        return outcome

    async def delay(self, execution_id: str, body: Any) -> dict[str, Any]:
        f = Fields(body, "")
        handle = _handle_for(execution_id, f)
        until, delay_ms = f.int("delay_until"), f.int("delay_ms")
        if (until is None) == (delay_ms is None):
            raise InvalidInput("give exactly one of delay_until (epoch ms) or delay_ms "
                               "(from now)")
        f.done()
        if until is None:
            until = self.config.clock.now_ms() + delay_ms  # type: ignore[operator]
        return await self.backend.delay(handle, until)


# -- shaping answers --------------------------------------------------------------------

def execution_info(ex: Execution) -> dict[str, Any]:
    """ExecutionInfo in the original's shape, plus counters a user wants to see."""
    info: dict[str, Any] = {
        "execution_id": ex.execution_id, "namespace": ex.namespace, "lane_id": ex.lane_id,
        "priority": ex.priority, "execution_kind": ex.execution_kind,
        "state_vector": {"lifecycle_phase": ex.lifecycle_phase,
                         "ownership_state": ex.ownership_state,
                         "eligibility_state": ex.eligibility_state,
                         "blocking_reason": ex.blocking_reason,
                         "terminal_outcome": ex.terminal_outcome,
                         "attempt_state": ex.attempt_state,
                         "public_state": ex.public_state},
        "public_state": ex.public_state,
        "created_at": str(ex.created_at),
        "current_attempt_index": ex.current_attempt_index or 0,
        "flow_id": ex.flow_id,
        "blocking_detail": ex.blocking_detail,
        "partition_id": ex.partition_id,
        "total_attempt_count": ex.total_attempt_count,
        "retry_count": ex.retry_count,
        "replay_count": ex.replay_count,
        "lease_reclaim_count": ex.lease_reclaim_count,
        "lease_epoch": ex.current_lease_epoch,
        "tags": ex.tag_map(),
    }
    if ex.started_at is not None:
        info["started_at"] = str(ex.started_at)
    if ex.completed_at is not None:
        info["completed_at"] = str(ex.completed_at)
    optional = {"delay_until": ex.delay_until, "lease_expires_at": ex.lease_expires_at,
                "current_worker_id": ex.current_worker_id,
                "current_worker_instance_id": ex.current_worker_instance_id,
                "execution_deadline_at": ex.execution_deadline_at,
                "progress_pct": ex.progress_pct, "progress_message": ex.progress_message,
                "failure_reason": ex.failure_reason, "failure_category": ex.failure_category,
                "cancellation_reason": ex.cancellation_reason}
    info.update({k: v for k, v in optional.items() if v is not None})
    return info


# -- request helpers ----------------------------------------------------------------------

def _check_tag_key(key: str) -> None:
    head, dot, rest = key.partition(".")
    ok = (dot and head and head[0].isascii() and head[0].islower()
          and all(c.isascii() and (c.islower() or c.isdigit() or c == "_") for c in head)
          and rest and all(c.isascii() and (c.islower() or c.isdigit() or c in "_.")
                           for c in rest)
          and rest[0] != ".")
    if not ok:
        raise InvalidInput(f"invalid tag key {key!r}: {TAG_KEY_HINT}", kind="invalid_tag_key")


def _query_int(f: Fields, key: str, default: int | None, lo: int, hi: int) -> int:
    raw = f.str(key)
    if raw is None or raw == "":
        if default is None:
            raise f.fail(key, "is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise f.fail(key, f"must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise f.fail(key, f"must be in {lo}..{hi}, got {value}")
    return value


def _path_matches_body(execution_id: str, f: Fields) -> str:
    eid = str(parse_execution_id(execution_id))
    body_id = f.get("execution_id")
    if body_id is not None and str(parse_execution_id(body_id)) != eid:
        raise InvalidInput("path execution_id does not match body execution_id")
    return eid


def _fence_from(f: Fields) -> tuple[str, Fence] | None:
    """A lease fence from ``handle`` or the original's lease_id/lease_epoch/attempt_id."""
    raw_handle = f.get("handle")
    triple = (f.get("lease_id"), f.get("lease_epoch"), f.get("attempt_id"))
    given = [v is not None for v in triple]
    if raw_handle is not None:
        if any(given):
            raise InvalidInput("give either handle or lease_id/lease_epoch/attempt_id, not both")
        handle = decode_handle(raw_handle)
        return handle.execution_id, handle.fence
    if not any(given):
        return None
    if not all(given):
        raise InvalidInput("partial_fence_triple: give all of lease_id, lease_epoch and "
                           "attempt_id (or the handle)", kind="partial_fence_triple")
    lease_id, epoch, attempt_id = triple
    if not isinstance(lease_id, str) or not isinstance(attempt_id, str):
        raise InvalidInput("lease_id and attempt_id must be strings")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= MS_MAX:
        raise InvalidInput("lease_epoch must be a non-negative integer")
    return "", Fence(lease_id, epoch, attempt_id)


def _handle_for(execution_id: str, f: Fields) -> Handle:
    eid = str(parse_execution_id(execution_id))
    raw = f.get("handle")
    if raw is None:
        raise f.fail("handle", "is required: pass the handle returned by claim-task")
    handle = decode_handle(raw)
    if handle.execution_id != eid:
        raise InvalidInput(f"the handle belongs to execution {handle.execution_id}, not {eid}",
                           kind="invalid_handle")
    return handle
