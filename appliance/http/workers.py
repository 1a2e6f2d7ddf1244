"""The worker side: claim-task (a lease, long-polling for work) and the lease-bound
operations renew, progress, complete, fail and delay, each carrying the ``handle``."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Annotated, Any

from msgspec import Meta
from quart import Blueprint, Response

from appliance.core.contracts import ClaimArgs
from appliance.core.errors import FlowFabricError, InvalidHandle, InvalidInput
from appliance.core.handle import Handle, decode_handle
from appliance.core.ids import parse_execution_id, validate_lane, validate_worker_name
from appliance.core.limits import BATCH_MAX
from appliance.core.operations import Mutation, Operation, jitter_draw
from appliance.core.policy import parse_capabilities
from appliance.core.schema import Body, Byte, Duration, Str256, Str4096, Time
from appliance.core.transitions import (
    CompleteArgs,
    DelayArgs,
    FailArgs,
    ProgressArgs,
    RenewArgs,
    complete,
    delay,
    fail,
    progress,
    renew,
)
from appliance.service import Service

from .errors import json_response
from .executions import payload
from .routing import Routes, error_object, in_batch, items

LeaseTtl = Annotated[int, Meta(ge=1, le=86_400_000)]


Items = Annotated[list[Any], Meta(max_length=BATCH_MAX)]


class ClaimBody(Body):
    lane_id: Any
    worker_instance_id: Any
    capabilities: Any = None
    lease_ttl_ms: LeaseTtl | None = None
    wait_ms: Annotated[int, Meta(ge=0)] = 0
    #: Given, the answer is {"tasks": [...]} holding up to this many leases.
    max_tasks: Annotated[int, Meta(ge=1, le=BATCH_MAX)] | None = None


class RenewBody(Body):
    handle: Any
    lease_ttl_ms: LeaseTtl | None = None


class ProgressBody(Body):
    handle: Any
    progress_pct: Annotated[int, Meta(ge=0, le=100)] | None = None
    progress_message: Str4096 | None = None


class CompleteBody(Body):
    handle: Any
    result: list[Byte] | None = None
    result_b64: bytes | None = None
    result_encoding: Str256 | None = None


class FailBody(Body):
    handle: Any
    failure_reason: Str4096 = ""
    failure_category: Str256 | None = None


class BatchBody(Body):
    items: Items


class RenewItem(RenewBody, kw_only=True):
    execution_id: Any


class CompleteItem(CompleteBody, kw_only=True):
    execution_id: Any


class FailItem(FailBody, kw_only=True):
    execution_id: Any


class DelayBody(Body):
    handle: Any
    delay_until: Time | None = None
    delay_ms: Duration | None = None


def handle_for(execution_id: str, raw: Any) -> Handle:
    """The lease handle of a lease-bound call; it must name the path's execution."""
    if raw is None:
        raise InvalidInput("handle: is required: pass the handle returned by claim-task")
    handle = decode_handle(raw)
    if handle.execution_id != execution_id:
        raise InvalidHandle(f"handle: belongs to execution {handle.execution_id}, not "
                            f"{execution_id}")
    return handle


def task_answer(task: dict[str, Any], data: bytes) -> dict[str, Any]:
    return {**task, "input_payload": list(data),
            "input_payload_b64": base64.b64encode(data).decode()}


def routes(service: Service, r: Routes) -> Blueprint:
    bp = Blueprint("workers", __name__)
    config = service.config

    @r.route(bp, "/v1/workers/<worker_id>/claim-task", ["POST"])
    async def claim_task(worker_id: str) -> Response:
        validate_worker_name(worker_id, "worker_id")
        body = await r.body(ClaimBody)
        if body.wait_ms > config.max_claim_wait_ms:
            raise InvalidInput(f"wait_ms: must be an integer in 0..{config.max_claim_wait_ms} "
                               f"(FF_MAX_CLAIM_WAIT_MS), got {body.wait_ms}")
        args = ClaimArgs(
            lane_id=validate_lane(body.lane_id), worker_id=worker_id,
            worker_instance_id=validate_worker_name(body.worker_instance_id,
                                                    "worker_instance_id"),
            capabilities=parse_capabilities(body.capabilities, "worker"),
            lease_ttl_ms=body.lease_ttl_ms or config.default_lease_ttl_ms,
            max_tasks=body.max_tasks or 1)
        tasks = await service.claim(args, body.wait_ms)
        if not tasks:
            return Response("", status=204)
        if body.max_tasks is None:
            return json_response(task_answer(*tasks[0]))
        return json_response({"tasks": [task_answer(task, data) for task, data in tasks]})

    # -- batches: each item as its single route, the batch one store round trip ----------
    async def batch(kind: type[Body], op: Operation[Any],
                    to_args: Callable[[Any, str], Any]) -> Response:
        body = await r.body(BatchBody)
        decoded = items(body.items, kind, "items")
        answers: list[dict[str, Any] | None] = [None] * len(decoded)
        mutations, positions = [], []
        for i, item in enumerate(decoded):
            try:
                if isinstance(item, Exception):
                    raise item
                eid = str(parse_execution_id(item.execution_id))
                mutations.append(Mutation(op, eid, to_args(item, eid)))
                positions.append(i)
            except FlowFabricError as exc:
                answers[i] = in_batch(exc, f"items[{i}]")
        for i, applied in zip(positions, await service.apply_many(mutations), strict=True):
            answers[i] = (error_object(applied.error) if applied.error is not None
                          else applied.outcome.wire())  # type: ignore[union-attr]
        return json_response({"outcomes": answers})

    @r.route(bp, "/v1/workers/<worker_id>/renew", ["POST"], r.BATCH)
    async def renew_batch(worker_id: str) -> Response:
        validate_worker_name(worker_id, "worker_id")
        return await batch(RenewItem, renew, lambda b, eid: RenewArgs(
            handle_for(eid, b.handle).fence, b.lease_ttl_ms))

    @r.route(bp, "/v1/workers/<worker_id>/complete", ["POST"], r.BATCH)
    async def complete_batch(worker_id: str) -> Response:
        validate_worker_name(worker_id, "worker_id")
        return await batch(CompleteItem, complete, lambda b, eid: CompleteArgs(
            handle_for(eid, b.handle).fence, payload(b.result, b.result_b64, "result"),
            b.result_encoding))

    @r.route(bp, "/v1/workers/<worker_id>/fail", ["POST"], r.BATCH)
    async def fail_batch(worker_id: str) -> Response:
        validate_worker_name(worker_id, "worker_id")
        return await batch(FailItem, fail, lambda b, eid: FailArgs(
            handle_for(eid, b.handle).fence, b.failure_reason, b.failure_category,
            jitter_draw()))

    @r.route(bp, "/v1/executions/<execution_id>/renew", ["POST"])
    async def renew_lease(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        body = await r.body(RenewBody)
        args = RenewArgs(handle_for(eid, body.handle).fence, body.lease_ttl_ms)
        return json_response((await service.apply(renew, eid, args)).wire())

    @r.route(bp, "/v1/executions/<execution_id>/progress", ["POST"])
    async def report_progress(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        body = await r.body(ProgressBody)
        args = ProgressArgs(handle_for(eid, body.handle).fence, body.progress_pct,
                            body.progress_message)
        return json_response((await service.apply(progress, eid, args)).wire())

    @r.route(bp, "/v1/executions/<execution_id>/complete", ["POST"], r.LARGE)
    async def complete_execution(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        body = await r.body(CompleteBody)
        args = CompleteArgs(handle_for(eid, body.handle).fence,
                            payload(body.result, body.result_b64, "result"), body.result_encoding)
        return json_response((await service.apply(complete, eid, args)).wire())

    @r.route(bp, "/v1/executions/<execution_id>/fail", ["POST"])
    async def fail_execution(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        body = await r.body(FailBody)
        args = FailArgs(handle_for(eid, body.handle).fence, body.failure_reason,
                        body.failure_category, jitter_draw())
        return json_response((await service.apply(fail, eid, args)).wire())

    @r.route(bp, "/v1/executions/<execution_id>/delay", ["POST"])
    async def delay_execution(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        body = await r.body(DelayBody)
        fence = handle_for(eid, body.handle).fence
        if (body.delay_until is None) == (body.delay_ms is None):
            raise InvalidInput("delay_until: give exactly one of delay_until (epoch ms) or "
                               "delay_ms (from now)")
        until = body.delay_until
        if until is None:
            until = config.clock.now_ms() + body.delay_ms  # type: ignore[operator]
        return json_response((await service.apply(delay, eid, DelayArgs(fence, until))).wire())

    return bp
