"""Admission over HTTP (spec/http-api.md § Admission): budgets, quotas, claim grants, the
worker registry and ``explain``."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta
from quart import Blueprint, Response

from appliance.core import admission as adm
from appliance.core.contracts import ClaimArgs
from appliance.core.errors import InvalidInput
from appliance.core.handle import decode_handle
from appliance.core.ids import parse_uuid, validate_lane, validate_worker_name
from appliance.core.limits import DURATION_MAX_MS
from appliance.core.policy import parse_capabilities
from appliance.core.schema import Body, Str256, Time
from appliance.service import Service

from .errors import json_response
from .routing import Routes, query
from .workers import LeaseTtl, task_answer

Amount = Annotated[int, Meta(ge=0, le=2**53 - 1)]
Dimension = Annotated[str, Meta(min_length=1, max_length=256)]
GrantTtl = Annotated[int, Meta(ge=1, le=60_000)]
Count31 = Annotated[int, Meta(ge=0, le=2**31)]
MAX_LIST = 1000


class BudgetBody(Body):
    budget_id: Any
    dimensions: Annotated[list[Dimension], Meta(min_length=1, max_length=adm.MAX_DIMENSIONS)]
    hard_limits: Annotated[list[Amount], Meta(max_length=adm.MAX_DIMENSIONS)]
    soft_limits: Annotated[list[Amount], Meta(max_length=adm.MAX_DIMENSIONS)] | None = None
    reset_interval_ms: Annotated[int, Meta(ge=0, le=DURATION_MAX_MS)] = 0
    scope_type: Str256 = ""
    scope_id: Str256 = ""
    enforcement_mode: Any = "strict"
    on_hard_limit: Any = "block"
    on_soft_limit: Any = "warn"
    now: Time | None = None


class UsageBody(Body):
    dimensions: Annotated[dict[Dimension, Amount], Meta(max_length=adm.MAX_DIMENSIONS)]
    dedup_key: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    handle: Any = None
    now: Time | None = None


class QuotaBody(Body):
    quota_policy_id: Any
    window_seconds: Annotated[int, Meta(ge=0, le=31_622_400)]
    max_requests_per_window: Count31
    max_concurrent: Count31
    now: Time | None = None


class GrantBody(Body):
    lane_id: Any
    worker_instance_id: Any
    grant_ttl_ms: GrantTtl
    capabilities: Any = None


class ReclaimBody(Body):
    worker_id: Any
    worker_instance_id: Any
    lane_id: Any
    grant_ttl_ms: GrantTtl
    worker_capabilities: Any = None


class RedeemBody(Body):
    worker_id: Any
    worker_instance_id: Any
    lease_ttl_ms: LeaseTtl | None = None


class RegisterBody(Body):
    worker_instance_id: Any
    lanes: Annotated[list[Any], Meta(max_length=256)] | None = None
    capabilities: Any = None
    liveness_ttl_ms: Annotated[int, Meta(ge=1000, le=86_400_000)] = 30_000


class EmptyBody(Body):
    pass


#: The values of the budget's action fields we carry out (spec/admission.md § Budgets).
ACCEPTED = {"enforcement_mode": ("strict",), "on_hard_limit": ("block",),
            "on_soft_limit": ("warn",)}


def _accepted(field: str, value: Any) -> str:
    if value not in ACCEPTED[field]:
        shown = repr(value)[:80] if not isinstance(value, str) else f'"{value[:80]}"'
        allowed = ", ".join(f'"{v}"' for v in ACCEPTED[field])
        raise InvalidInput(f"{field}: {shown} is not implemented by this build; accepted: "
                           f"{allowed}")
    return value


def _dimension(name: str, where: str) -> str:
    size = len(name.encode("utf-8"))
    if size > 256:
        raise InvalidInput(f"{where}: a dimension name is at most 256 bytes (got {size})")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InvalidInput(f"{where}: dimension names must not contain control characters")
    return name


def budget_of(body: BudgetBody, now: int) -> adm.Budget:
    n = len(body.dimensions)
    soft = body.soft_limits if body.soft_limits is not None else [0] * n
    if len(body.hard_limits) != n or len(soft) != n:
        raise InvalidInput(f"hard_limits/soft_limits: must have one limit per dimension "
                           f"({n}); got {len(body.hard_limits)} and {len(soft)}")
    dims = [_dimension(d, f"dimensions[{i}]") for i, d in enumerate(body.dimensions)]
    if len(set(dims)) != n:
        raise InvalidInput("dimensions: must be distinct")
    created = body.now if body.now is not None else now
    return adm.Budget(
        parse_uuid(body.budget_id, "budget_id"), body.scope_type, body.scope_id,
        _accepted("enforcement_mode", body.enforcement_mode),
        _accepted("on_hard_limit", body.on_hard_limit),
        _accepted("on_soft_limit", body.on_soft_limit), body.reset_interval_ms,
        {d: (h, s) for d, h, s in zip(dims, body.hard_limits, soft, strict=True)},
        next_reset_at=created + body.reset_interval_ms if body.reset_interval_ms else None,
        created_at=created, last_updated_at=created)


def _worker_args(worker_id: str, instance: Any, lane: Any, caps: Any, caps_field: str,
                 **more: Any) -> ClaimArgs:
    return ClaimArgs(lane_id=validate_lane(lane), worker_id=worker_id,
                     worker_instance_id=validate_worker_name(instance, "worker_instance_id"),
                     capabilities=parse_capabilities(caps, "worker", caps_field), **more)


def routes(service: Service, r: Routes) -> Blueprint:
    bp = Blueprint("admission", __name__)
    admission = service.admission
    config = service.config

    # -- budgets ---------------------------------------------------------------------------
    @r.route(bp, "/v1/budgets", ["POST"])
    async def create_budget() -> Response:
        budget = budget_of(await r.body(BudgetBody), config.clock.now_ms())
        created = await admission.create_budget(budget)
        tag = "Created" if created else "AlreadySatisfied"
        return json_response({tag: {"budget_id": budget.budget_id}}, 201 if created else 200)

    @r.route(bp, "/v1/budgets/<budget_id>", ["GET"])
    async def get_budget(budget_id: str) -> Response:
        return json_response((await admission.budget(parse_uuid(budget_id, "budget_id")))
                             .status())

    @r.route(bp, "/v1/budgets/<budget_id>/usage", ["POST"])
    async def report_usage(budget_id: str) -> Response:
        bid = parse_uuid(budget_id, "budget_id")
        body = await r.body(UsageBody)
        dims = tuple((_dimension(d, "dimensions"), n) for d, n in body.dimensions.items())
        lease = None
        if body.handle is not None:
            handle = decode_handle(body.handle)  # it names its execution
            lease = (handle.execution_id, handle.fence)
        answer = await admission.report(bid, adm.UsageReport(dims, body.dedup_key, body.now),
                                        lease)
        return json_response(answer.wire())

    @r.route(bp, "/v1/budgets/<budget_id>/reset", ["POST"])
    async def reset_budget(budget_id: str) -> Response:
        bid = parse_uuid(budget_id, "budget_id")
        await r.body(EmptyBody)
        return json_response({"Reset": {"next_reset_at": await admission.reset(bid)}})

    # -- quotas ----------------------------------------------------------------------------
    @r.route(bp, "/v1/quotas", ["POST"])
    async def create_quota() -> Response:
        body = await r.body(QuotaBody)
        if body.max_requests_per_window > 0 and body.window_seconds < 1:
            raise InvalidInput("window_seconds: must be at least 1 when "
                               "max_requests_per_window is set")
        qid = parse_uuid(body.quota_policy_id, "quota_policy_id")
        created = await admission.create_quota(adm.Quota(
            qid, body.window_seconds, body.max_requests_per_window, body.max_concurrent,
            body.now if body.now is not None else config.clock.now_ms()))
        tag = "Created" if created else "AlreadySatisfied"
        return json_response({tag: {"quota_policy_id": qid}}, 201 if created else 200)

    @r.route(bp, "/v1/quotas/<quota_id>", ["GET"])
    async def get_quota(quota_id: str) -> Response:
        return json_response(await admission.quota(parse_uuid(quota_id, "quota_policy_id")))

    # -- claim grants ------------------------------------------------------------------------
    @r.route(bp, "/v1/workers/<worker_id>/claim", ["POST"])
    async def claim_grant(worker_id: str) -> Response:
        validate_worker_name(worker_id, "worker_id")
        body = await r.body(GrantBody)
        args = _worker_args(worker_id, body.worker_instance_id, body.lane_id,
                            body.capabilities, "capabilities",
                            lease_ttl_ms=config.default_lease_ttl_ms,
                            grant_ttl_ms=body.grant_ttl_ms)
        granted = await admission.grant(args)
        if granted is None:
            return Response("", status=204)
        return json_response(granted.wire())

    @r.route(bp, "/v1/executions/<execution_id>/reclaim", ["POST"])
    async def reclaim(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        body = await r.body(ReclaimBody)
        worker_id = validate_worker_name(body.worker_id, "worker_id")
        args = _worker_args(worker_id, body.worker_instance_id, body.lane_id,
                            body.worker_capabilities, "worker_capabilities",
                            lease_ttl_ms=config.default_lease_ttl_ms,
                            grant_ttl_ms=body.grant_ttl_ms)
        return json_response(await admission.reclaim(eid, args))

    @r.route(bp, "/v1/executions/<execution_id>/claim-grant", ["POST"])
    async def redeem(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        body = await r.body(RedeemBody)
        worker_id = validate_worker_name(body.worker_id, "worker_id")
        record = await service.record(eid)
        args = ClaimArgs(lane_id=record.lane_id, worker_id=worker_id,
                         worker_instance_id=validate_worker_name(body.worker_instance_id,
                                                                 "worker_instance_id"),
                         capabilities=record.capability_set(),
                         lease_ttl_ms=body.lease_ttl_ms or config.default_lease_ttl_ms)
        return json_response(task_answer(*await admission.redeem(eid, args)))

    # -- workers ---------------------------------------------------------------------------
    @r.route(bp, "/v1/workers/<worker_id>/register", ["POST"])
    async def register(worker_id: str) -> Response:
        validate_worker_name(worker_id, "worker_id")
        body = await r.body(RegisterBody)
        instance = validate_worker_name(body.worker_instance_id, "worker_instance_id")
        lanes = tuple(sorted({validate_lane(lane, f"lanes[{i}]")
                              for i, lane in enumerate(body.lanes or ())}))
        now = config.clock.now_ms()
        new = await admission.register(adm.Worker(
            worker_id, instance, lanes, parse_capabilities(body.capabilities, "worker"),
            body.liveness_ttl_ms, now, now))
        answer = {"worker_instance_id": instance, "next_expiry_ms": now + body.liveness_ttl_ms}
        return json_response({"Registered" if new else "Refreshed": answer},
                             201 if new else 200)

    @r.route(bp, "/v1/workers", ["GET"])
    async def list_workers() -> Response:
        found = query({"lane", "after", "limit"})
        raw = found.get("limit") or "100"
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIST:
            raise InvalidInput(f"query.limit: must be an integer in 1..{MAX_LIST}")
        lane = validate_lane(found["lane"], "query.lane") if "lane" in found else None
        after = (validate_worker_name(found["after"], "query.after") if found.get("after")
                 else None)
        workers, cursor = await admission.workers(lane, after, int(raw))
        return json_response({"workers": workers, "next_cursor": cursor})

    # -- explain ---------------------------------------------------------------------------
    @r.route(bp, "/v1/executions/<execution_id>/explain", ["GET"])
    async def explain(execution_id: str) -> Response:
        return json_response(await admission.explain(r.eid(execution_id)))

    return bp
