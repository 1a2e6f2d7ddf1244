"""Human in the loop over HTTP: a worker creates waitpoints, suspends, waits for its
children; an outside caller signals with the waitpoint's token; an operator reads pending
waitpoints and tokens, approves, resumes, rotates the signing key (spec/http-api.md §
Suspension and signals)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta
from quart import Blueprint, Response

from appliance.core import conditions as cond
from appliance.core import suspension as sp
from appliance.core import tokens
from appliance.core.errors import InvalidInput, WaitpointNotFound
from appliance.core.ids import fresh_uuids, parse_uuid, validate_lane
from appliance.core.limits import DURATION_MAX_MS, TIME_MAX_MS
from appliance.core.schema import Body, Byte, Duration, Str256, Str1024, Time
from appliance.service import Service

from .errors import json_response
from .executions import payload
from .routing import Routes
from .workers import handle_for

WaitpointKey = Annotated[str, Meta(min_length=1, max_length=256)]
SignalName = Annotated[str, Meta(min_length=1, max_length=256)]
MaxSignals = Annotated[int, Meta(ge=0, le=1_000_000)]
#: A signal's retry window: at most 30 days (a longer one is refused, not shortened).
DedupTtl = Annotated[int, Meta(ge=1, le=sp.DEDUP_TTL_MAX_MS)]
NO_STORE = {"Cache-Control": "no-store"}


class WaitpointBody(Body):
    handle: Any
    waitpoint_key: WaitpointKey
    expires_in_ms: Annotated[int, Meta(ge=1, le=DURATION_MAX_MS)] | None = None


class SuspendBody(Body):
    handle: Any
    resume_condition: Any
    waitpoints: Annotated[list[WaitpointKey], Meta(max_length=256)] | None = None
    reason_code: Literal[tuple(sp.REASONS)] = "waiting_for_signal"  # type: ignore[valid-type]
    requested_by: Literal[sp.REQUESTERS] = "worker"  # type: ignore[valid-type]
    timeout_at: Time | None = None
    timeout_ms: Duration | None = None
    timeout_behavior: Literal[sp.TIMEOUT_BEHAVIORS] = "fail"  # type: ignore[valid-type]
    idempotency_key: Annotated[str, Meta(min_length=1, max_length=1024)] | None = None


class HandleBody(Body):
    handle: Any


class SignalBody(Body):
    waitpoint_id: Any
    signal_name: SignalName
    signal_category: Str256
    source_type: Str256
    source_identity: Str256
    waitpoint_token: Annotated[str, Meta(max_length=1024)] = ""
    execution_id: Any = None
    signal_id: Any = None
    target_scope: Str256 = "execution"
    payload: list[Byte] | None = None
    payload_b64: bytes | None = None
    payload_encoding: Str256 | None = None
    correlation_id: Str1024 | None = None
    idempotency_key: Annotated[str, Meta(min_length=1, max_length=1024)] | None = None
    dedup_ttl_ms: DedupTtl | None = None
    created_at: Time | None = None
    resume_delay_ms: Duration = 0
    max_signals_per_execution: MaxSignals | None = None
    #: Accepted for the original's clients; the store's clock is authoritative.
    now: Time | None = None


class ApprovalBody(Body):
    lane_id: Any
    waitpoint_id: Any
    signal_name: SignalName = "approved"
    idempotency_suffix: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    signal_dedup_ttl_ms: DedupTtl | None = None
    max_signals_per_execution: MaxSignals | None = None


class ResumeBody(Body):
    trigger_type: Annotated[str, Meta(pattern="^(operator|signal|auto_resume)$")] = "operator"
    resume_delay_ms: Duration = 0


class RotateBody(Body):
    new_kid: Any
    new_secret_hex: Any


def routes(service: Service, r: Routes) -> Blueprint:
    bp = Blueprint("suspension", __name__)
    sus = service.suspensions
    clock = service.config.clock

    @r.route(bp, "/v1/executions/<execution_id>/waitpoints", ["POST"])
    async def create_waitpoint(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        body = await r.body(WaitpointBody)
        fence = handle_for(eid, body.handle).fence
        key = cond.check_key(body.waitpoint_key, "waitpoint_key")
        expires_at = None
        if body.expires_in_ms is not None:
            expires_at = min(clock.now_ms() + body.expires_in_ms, TIME_MAX_MS)
        wp = await sus.create_waitpoint(eid, fence, key, expires_at)
        return json_response({"Created": {
            "waitpoint_id": wp.waitpoint_id, "waitpoint_key": wp.waitpoint_key,
            "token": wp.token, "expires_at": wp.expires_at}}, 201, NO_STORE)

    @r.route(bp, "/v1/executions/<execution_id>/suspend", ["POST"])
    async def suspend(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        body = await r.body(SuspendBody)
        fence = handle_for(eid, body.handle).fence
        tree = cond.parse_condition(body.resume_condition)
        keys = sp.binding_keys(tree, [cond.check_key(k, f"waitpoints[{i}]")
                                      for i, k in enumerate(body.waitpoints)]
                               if body.waitpoints is not None else None)
        if body.timeout_at is not None and body.timeout_ms is not None:
            raise InvalidInput("timeout_at: give timeout_at (epoch ms) or timeout_ms (from "
                               "now), not both")
        now = clock.now_ms()
        timeout_at = body.timeout_at
        if body.timeout_ms is not None:
            timeout_at = now + body.timeout_ms
        sp.check_timeout(timeout_at, tree, now)
        result = await sus.suspend(
            eid, fence, tree, keys,
            reason_code=body.reason_code, requested_by=body.requested_by,
            timeout_at=timeout_at,
            timeout_behavior=body.timeout_behavior,
            idempotency_key=body.idempotency_key)
        return json_response(result.wire(), headers=NO_STORE)

    @r.route(bp, "/v1/executions/<execution_id>/wait-children", ["POST"])
    async def wait_children(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        body = await r.body(HandleBody)
        fence = handle_for(eid, body.handle).fence
        return json_response((await sus.wait_children(eid, fence)).wire())

    @r.route(bp, "/v1/executions/<execution_id>/signal", ["POST"], r.SIGNAL)
    async def signal(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        body = await r.body(SignalBody)
        if body.execution_id is not None and body.execution_id != eid:
            raise InvalidInput("execution_id: path execution_id does not match body "
                               "execution_id")
        signal_id = (parse_uuid(body.signal_id, "signal_id") if body.signal_id is not None
                     else fresh_uuids(1)[0])
        data = payload(body.payload, body.payload_b64, "payload")
        given = body.payload is not None or body.payload_b64 is not None
        args = sp.SignalArgs(
            parse_uuid(body.waitpoint_id, "waitpoint_id"), signal_id, body.signal_name,
            body.signal_category, body.source_type, body.source_identity, body.target_scope,
            body.waitpoint_token, body.correlation_id, body.idempotency_key,
            body.dedup_ttl_ms or sp.DEFAULT_DEDUP_TTL_MS, body.created_at, data if given else None,
            body.payload_encoding, body.resume_delay_ms,
            sp.DEFAULT_MAX_SIGNALS if body.max_signals_per_execution is None
            else body.max_signals_per_execution)
        return json_response((await sus.deliver(eid, args)).wire())

    @r.route(bp, "/v1/executions/<execution_id>/pending-waitpoints", ["GET"])
    async def pending_waitpoints(execution_id: str) -> Response:
        return json_response(await sus.pending_waitpoints(r.eid(execution_id)))

    @r.route(bp, "/v1/executions/<execution_id>/waitpoints/<waitpoint_id>/token", ["GET"])
    async def waitpoint_token(execution_id: str, waitpoint_id: str) -> Response:
        eid = r.eid(execution_id)
        wid = parse_uuid(waitpoint_id, "waitpoint_id")
        try:
            token = await sus.token(eid, wid)
        except WaitpointNotFound as exc:  # the 404 is not cached either
            return json_response(exc.to_json(), exc.status, NO_STORE)
        return json_response({"token": token}, headers=NO_STORE)

    @r.route(bp, "/v1/executions/<execution_id>/approval", ["POST"])
    async def approval(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        body = await r.body(ApprovalBody)
        answer = await sus.approve(
            eid, parse_uuid(body.waitpoint_id, "waitpoint_id"),
            signal_name=body.signal_name,
            idempotency_suffix=body.idempotency_suffix or fresh_uuids(1)[0],
            lane_id=validate_lane(body.lane_id),
            dedup_ttl_ms=body.signal_dedup_ttl_ms or sp.DEFAULT_DEDUP_TTL_MS,
            max_signals_per_execution=sp.DEFAULT_MAX_SIGNALS
            if body.max_signals_per_execution is None else body.max_signals_per_execution)
        return json_response(answer.wire())

    @r.route(bp, "/v1/executions/<execution_id>/resume", ["POST"])
    async def resume(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        body = await r.body(ResumeBody)
        args = sp.ResumeArgs(body.trigger_type, body.resume_delay_ms)
        return json_response((await service.apply(sp.resume, eid, args)).wire())

    @r.route(bp, "/v1/admin/rotate-waitpoint-secret", ["POST"])
    async def rotate() -> Response:
        body = await r.body(RotateBody)
        kid = tokens.check_kid(body.new_kid)
        secret = tokens.check_secret_hex(body.new_secret_hex)
        return json_response(await sus.rotate(kid, secret))

    return bp
