"""Executions: create, read, list, and the operator's operations (reference E routes).

Each route decodes its typed body, turns it into the operation's args, and calls the
service; the answers are the operations' typed outcomes on the wire.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from msgspec import Meta
from quart import Blueprint, Response, request

from appliance.core.contracts import CreateArgs
from appliance.core.errors import (
    FlowFabricError,
    InvalidInput,
    InvalidPolicyJson,
    InvalidTagKey,
    PartialFenceTriple,
    ResultNotFound,
)
from appliance.core.handle import Fence, decode_handle
from appliance.core.ids import (
    mint_for_flow,
    mint_solo,
    parse_execution_id,
    parse_uuid,
    validate_lane,
)
from appliance.core.limits import BATCH_MAX, MS_MAX
from appliance.core.outcomes import Created
from appliance.core.partitions import flow_partition
from appliance.core.policy import PolicyBody, parse_policy
from appliance.core.record import Execution
from appliance.core.schema import Body, Byte, Int32, Str256, Str1024, Str4096, Time
from appliance.core.suspension import is_open, load_suspension
from appliance.core.transitions import (
    OPERATOR,
    CancelArgs,
    ChangePriorityArgs,
    ReplayArgs,
    RevokeLeaseArgs,
    cancel,
    change_priority,
    replay,
    revoke_lease,
)
from appliance.service import Service

from .errors import json_response
from .routing import Routes, error_object, in_batch, items

MAX_LIST_LIMIT = 1000
TAG_KEY_HINT = "tag keys look like '<caller>.<field>' in lowercase, e.g. 'cairn.task_id'"



# -- request bodies ---------------------------------------------------------------------------

class CreateBody(Body):
    ERRORS: ClassVar[dict[str, type[InvalidInput]]] = {"policy": InvalidPolicyJson}

    execution_id: Any = None
    partition_id: Annotated[int, Meta(ge=0, le=65535)] | None = None
    namespace: Str256 = "default"
    lane_id: Any = "default"
    execution_kind: Str256 = "default"
    input_payload: list[Byte] | None = None
    input_payload_b64: bytes | None = None
    payload_encoding: Str256 | None = None
    priority: Int32 | None = None
    creator_identity: Str256 = ""
    policy: PolicyBody | None = None
    tags: dict[str, str] = {}
    idempotency_key: Str1024 | None = None
    delay_until: Time | None = None
    execution_deadline_at: Time | None = None
    #: The flow it joins (it is minted on the flow's partition).
    flow_id: Any = None
    #: Accepted for the original's clients; the appliance's clock is authoritative.
    now: Time | None = None


class CreateBatchBody(Body):
    executions: Annotated[list[Any], Meta(max_length=BATCH_MAX)]


class CancelBody(Body):
    reason: Str4096 = "cancelled"
    source: Str256 = OPERATOR
    handle: Any = None
    lease_id: str | None = None
    lease_epoch: Annotated[int, Meta(ge=0, le=MS_MAX)] | None = None
    attempt_id: str | None = None
    execution_id: Any = None
    now: Time | None = None


class PriorityBody(Body):
    new_priority: Int32


class ReplayBody(Body):
    pass


class RevokeBody(Body):
    reason: Str4096 = "operator_revoke"


# -- from body to args ------------------------------------------------------------------------

def create_args(body: CreateBody, partitions: int) -> CreateArgs:
    lane = validate_lane(body.lane_id)
    flow_id = None if body.flow_id is None else parse_uuid(body.flow_id, "flow_id")
    if body.execution_id is None:
        eid = parse_execution_id(mint_for_flow(flow_id, partitions) if flow_id
                                 else mint_solo(lane, partitions))
    else:
        eid = parse_execution_id(body.execution_id)
    if flow_id and eid.partition != flow_partition(flow_id, partitions):
        raise InvalidInput(f"execution_id: {eid} is on partition {eid.partition}, but flow "
                           f"{flow_id} lives on partition {flow_partition(flow_id, partitions)};"
                           f" leave execution_id out to have one minted there")
    if body.partition_id is not None and body.partition_id != eid.partition:
        raise InvalidInput(f"partition_id: {body.partition_id} does not match the partition "
                           f"{eid.partition} embedded in execution_id")
    policy = parse_policy(body.policy)
    if policy.priority is not None and body.priority is not None and \
            policy.priority != body.priority:
        raise InvalidInput("priority: differs from policy.priority; give one of them")
    if (policy.delay_until is not None and body.delay_until is not None
            and policy.delay_until != body.delay_until):
        raise InvalidInput("delay_until: differs from policy.delay_until; give one of them")
    for key in body.tags:
        _check_tag_key(key)
    return CreateArgs(
        execution_id=str(eid), partition_id=eid.partition, namespace=body.namespace,
        lane_id=lane, execution_kind=body.execution_kind,
        input_payload=payload(body.input_payload, body.input_payload_b64, "input_payload"),
        payload_encoding=body.payload_encoding,
        priority=body.priority if body.priority is not None else (policy.priority or 0),
        creator_identity=body.creator_identity, policy=policy, tags=body.tags,
        idempotency_key=body.idempotency_key,
        delay_until=body.delay_until if body.delay_until is not None else policy.delay_until,
        execution_deadline_at=body.execution_deadline_at, flow_id=flow_id)


def payload(array: list[int] | None, b64: bytes | None, name: str) -> bytes:
    """Bytes given as the original's integer array or as base64 in the ``_b64`` twin."""
    if array is not None and b64 is not None:
        raise InvalidInput(f"{name}: give either {name} or {name}_b64, not both")
    return bytes(array) if array is not None else (b64 or b"")


def _check_tag_key(key: str) -> None:
    head, dot, rest = key.partition(".")
    ok = (dot and head and head[0].isascii() and head[0].islower()
          and all(c.isascii() and (c.islower() or c.isdigit() or c == "_") for c in head)
          and rest and all(c.isascii() and (c.islower() or c.isdigit() or c in "_.")
                           for c in rest)
          and rest[0] != ".")
    if not ok:
        raise InvalidTagKey(f"tags: invalid tag key {key!r}: {TAG_KEY_HINT}")


def cancel_args(execution_id: str, body: CancelBody) -> CancelArgs:
    if body.execution_id is not None and \
            str(parse_execution_id(body.execution_id)) != execution_id:
        raise InvalidInput("execution_id: does not match the execution id in the path")
    fence = fence_of(body, execution_id)
    return CancelArgs(body.reason, body.source, fence)


def fence_of(body: CancelBody, execution_id: str) -> Fence | None:
    """A lease fence from ``handle`` or the original's lease_id/lease_epoch/attempt_id."""
    triple = (body.lease_id, body.lease_epoch, body.attempt_id)
    if body.handle is not None:
        if any(v is not None for v in triple):
            raise InvalidInput("handle: give either handle or lease_id/lease_epoch/attempt_id, "
                               "not both")
        handle = decode_handle(body.handle)
        if handle.execution_id != execution_id:
            raise InvalidInput("handle: names another execution than the path")
        return handle.fence
    if all(v is None for v in triple):
        return None
    if any(v is None for v in triple):
        raise PartialFenceTriple("partial_fence_triple: give all of lease_id, lease_epoch and "
                                 "attempt_id (or the handle)")
    return Fence(body.lease_id, body.lease_epoch, body.attempt_id)  # type: ignore[arg-type]


# -- answers ------------------------------------------------------------------------------------

#: What ``GET /v1/executions/{id}`` shows of the current or last suspension.
SUSPENSION_SHOWN = ("suspension_id", "reason_code", "requested_by", "created_at", "timeout_at",
                    "timeout_behavior", "closed_at", "close_reason", "resume_trigger",
                    "closer_signal_id")


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
    suspension = load_suspension(ex)
    if suspension is not None:  # the current or last one: never its tokens
        if is_open(suspension):
            info["current_suspension_id"] = suspension["suspension_id"]
            info["current_waitpoint_id"] = suspension["waitpoints"][0]["waitpoint_id"]
            if ex.suspension_timeout_at is not None:
                info["suspension_timeout_at"] = ex.suspension_timeout_at
        info["suspension"] = {k: suspension.get(k) for k in SUSPENSION_SHOWN}
    if ex.signal_count:
        info["signal_count"] = ex.signal_count
    return info


def _query_int(query: dict[str, str], key: str, default: int | None, lo: int, hi: int) -> int:
    raw = query.get(key)
    if raw is None or raw == "":
        if default is None:
            raise InvalidInput(f"query.{key}: is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"query.{key}: must be an integer, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise InvalidInput(f"query.{key}: must be an integer in {lo}..{hi}, got {value}")
    return value


# -- routes -------------------------------------------------------------------------------------

def routes(service: Service, r: Routes) -> Blueprint:
    bp = Blueprint("executions", __name__)
    large = r.LARGE

    @r.route(bp, "/v1/executions", ["POST"], large)
    async def create_execution() -> Response:
        body = await r.body(CreateBody)
        [applied] = await service.create([create_args(body, service.config.partitions.flow)])
        outcome = applied.unwrap()
        assert outcome is not None
        return json_response(outcome.wire(), 201 if isinstance(outcome, Created) else 200)

    @r.route(bp, "/v1/executions/batch", ["POST"], r.BATCH)
    async def create_executions() -> Response:
        """Each item as the single create (its answer or its error), in order; the valid
        ones go to the store together."""
        body = await r.body(CreateBatchBody)
        answers: list[dict[str, Any] | None] = []
        batch, positions = [], []
        for i, item in enumerate(items(body.executions, CreateBody, "executions")):
            try:
                if isinstance(item, Exception):
                    raise item
                batch.append(create_args(item, service.config.partitions.flow))
                positions.append(i)
                answers.append(None)
            except FlowFabricError as exc:
                answers.append(in_batch(exc, f"executions[{i}]"))
        for i, applied in zip(positions, await service.create(batch), strict=True):
            answers[i] = (error_object(applied.error) if applied.error is not None
                          else applied.outcome.wire())  # type: ignore[union-attr]
        return json_response({"outcomes": answers})

    @r.route(bp, "/v1/executions", ["GET"])
    async def list_executions() -> Response:
        query = dict(request.args)
        unknown = sorted(set(query) - {"partition", "cursor", "limit"})
        if unknown:
            raise InvalidInput(f"unknown field {unknown[0]!r} in query; remove it (see the API "
                               f"reference in spec/http-api.md)")
        partition = _query_int(query, "partition", None, 0, 65535)
        limit = min(_query_int(query, "limit", 50, 0, 2**31), MAX_LIST_LIMIT)
        cursor = query.get("cursor") or None
        if cursor is not None:
            try:
                cursor = str(parse_execution_id(cursor, "cursor"))
            except InvalidInput as exc:
                raise InvalidInput(f"invalid cursor: {exc.message}") from None
        page = await service.list_executions(partition, cursor, limit)
        return json_response({"executions": page.executions, "next_cursor": page.next_cursor})

    @r.route(bp, "/v1/executions/<execution_id>", ["GET"])
    async def get_execution(execution_id: str) -> Response:
        return json_response(execution_info(await service.record(r.eid(execution_id))))

    @r.route(bp, "/v1/executions/<execution_id>/state", ["GET"])
    async def get_state(execution_id: str) -> Response:
        return json_response((await service.record(r.eid(execution_id))).public_state)

    @r.route(bp, "/v1/executions/<execution_id>/result", ["GET"])
    async def get_result(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        ex, data = await service.result(eid)
        if data is None:
            raise ResultNotFound(
                f"execution result not found: {eid} is {ex.public_state}"
                + ("" if ex.public_state != "completed" else " with no result bytes"))
        headers = ({"X-FlowFabric-Result-Encoding": ex.result_encoding}
                   if ex.result_encoding else None)
        return Response(data, status=200, content_type="application/octet-stream",
                        headers=headers)

    @r.route(bp, "/v1/executions/<execution_id>/cancel", ["POST"])
    async def cancel_execution(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        args = cancel_args(eid, await r.body(CancelBody))
        return json_response((await service.apply(cancel, eid, args)).wire())

    @r.route(bp, "/v1/executions/<execution_id>/priority", ["PUT"])
    async def change_priority_route(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        body = await r.body(PriorityBody)
        outcome = await service.apply(change_priority, eid, ChangePriorityArgs(body.new_priority))
        return json_response(outcome.wire())

    @r.route(bp, "/v1/executions/<execution_id>/replay", ["POST"])
    async def replay_execution(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        await r.body(ReplayBody)
        return json_response((await service.apply(replay, eid, ReplayArgs())).wire())

    @r.route(bp, "/v1/executions/<execution_id>/revoke-lease", ["POST"])
    async def revoke_lease_route(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        body = await r.body(RevokeBody)
        outcome = await service.apply(revoke_lease, eid, RevokeLeaseArgs(body.reason))
        return json_response(outcome.wire())

    return bp
