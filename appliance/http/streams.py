"""Attempt streams: the worker appends frames with its handle; readers page, tail
(long-poll), follow as Server-Sent Events, and read the summary document."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta
from quart import Blueprint, Response, request

from appliance.core import streams as st
from appliance.core.errors import FrameTooLarge, InvalidInput, SummaryNotFound
from appliance.core.schema import Body, Byte, Str256
from appliance.service import Service

from .errors import json_response
from .executions import payload
from .routing import Routes, query
from .workers import handle_for

ATTEMPT_MAX = 2_147_483_647


class FrameBody(Body):
    frame_type: Annotated[str, Meta(min_length=1, max_length=256)]
    payload: str | list[Byte] | None = None
    payload_b64: bytes | None = None
    encoding: Annotated[str, Meta(min_length=1, max_length=64)] = "utf8"
    correlation_id: Str256 = ""
    source: Annotated[str, Meta(min_length=1, max_length=256)] = "worker"


class AppendBody(Body):
    handle: Any
    frames: Annotated[list[FrameBody], Meta(min_length=1, max_length=1000)]
    mode: Literal["durable", "summary", "best_effort"] = "durable"
    ttl_ms: Annotated[int, Meta(ge=1, le=st.BEST_EFFORT_TTL_MAX_MS)] | None = None


def frames_of(body: AppendBody, max_bytes: int) -> tuple[st.FrameIn, ...]:
    out = []
    for i, f in enumerate(body.frames):
        if isinstance(f.payload, str):
            if f.payload_b64 is not None:
                raise InvalidInput(f"frames[{i}].payload: give either payload or payload_b64, "
                                   f"not both")
            data = f.payload.encode()
        else:
            data = payload(f.payload, f.payload_b64, f"frames[{i}].payload")
        if len(data) > max_bytes:
            raise FrameTooLarge(
                f"frames[{i}].payload: {len(data)} bytes is more than a frame may hold "
                f"({max_bytes}, FF_STREAM_MAX_FRAME_BYTES); split it",
                details={"limit_bytes": max_bytes, "index": i})
        if body.mode == "summary" and f.frame_type != st.PATCH_FRAME:
            raise InvalidInput(f"frames[{i}].frame_type: mode 'summary' takes only "
                               f"'{st.PATCH_FRAME}' frames")
        out.append(st.FrameIn(f.frame_type, data, f.encoding, f.correlation_id, f.source))
    return tuple(out)


def attempt_index(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10) or int(raw) > ATTEMPT_MAX:
        raise InvalidInput(f"attempt index: must be an integer in 0..{ATTEMPT_MAX}, got "
                           f"{raw[:40]!r}")
    return int(raw)


def limit_of(found: dict[str, str], default: int, paging: str) -> int:
    raw = found.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidInput(f"query.limit: must be an integer in 1..{st.LIMIT_CEILING}, got "
                           f"{raw[:40]!r}")
    value = int(raw)
    if value == 0:
        raise InvalidInput("limit must be >= 1")
    if value > st.LIMIT_CEILING:
        raise InvalidInput(f"limit exceeds REST ceiling {st.LIMIT_CEILING}; paginate via "
                           f"{paging} for larger spans")
    return value


def block_ms_of(found: dict[str, str]) -> int:
    raw = found.get("block_ms", "0")
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidInput(f"query.block_ms: must be an integer in 0..{st.BLOCK_MS_CEILING}, "
                           f"got {raw[:40]!r}")
    if int(raw) > st.BLOCK_MS_CEILING:
        raise InvalidInput(f"block_ms exceeds {st.BLOCK_MS_CEILING}ms ceiling")
    return int(raw)


def routes(service: Service, r: Routes) -> Blueprint:
    bp = Blueprint("streams", __name__)
    streams = service.streams
    config = service.config
    base = "/v1/executions/<execution_id>/attempts/<idx>/stream"

    @r.route(bp, "/v1/executions/<execution_id>/frames", ["POST"], r.BATCH)
    async def append_frames(execution_id: str) -> Response:
        eid = r.eid(execution_id)
        body = await r.body(AppendBody)
        handle = handle_for(eid, body.handle)
        if body.ttl_ms is not None and body.mode != "best_effort":
            raise InvalidInput("ttl_ms: only best_effort frames expire; drop ttl_ms or set "
                               "mode 'best_effort'")
        ttl = (body.ttl_ms or st.BEST_EFFORT_TTL_MS) if body.mode == "best_effort" else 0
        args = st.AppendArgs(handle.fence, handle.attempt_index,
                             frames_of(body, config.stream_max_frame_bytes), body.mode, ttl,
                             config.stream_max_bytes)
        return json_response((await streams.append(eid, args)).wire())

    @r.route(bp, base, ["GET"])
    async def read_stream(execution_id: str, idx: str) -> Response:
        found = query({"from", "to", "limit"})
        limit = limit_of(found, st.READ_LIMIT, "from/to")
        lo = st.parse_cursor(found.get("from"), "from", "start")
        hi = st.parse_cursor(found.get("to"), "to", "end", upper=True)
        page = await streams.read(r.eid(execution_id), attempt_index(idx), lo, hi, limit)
        return json_response(page.wire())

    @r.route(bp, f"{base}/tail", ["GET"])
    async def tail_stream(execution_id: str, idx: str) -> Response:
        found = query({"after", "block_ms", "limit"})
        block_ms = block_ms_of(found)
        limit = limit_of(found, st.TAIL_LIMIT, "after")
        after = st.parse_cursor(found.get("after"), "after", "0-0", concrete=True)
        page = await streams.tail(r.eid(execution_id), attempt_index(idx), after, limit,
                                  block_ms)
        return json_response(page.wire())

    @r.route(bp, f"{base}/events", ["GET"])
    async def stream_events(execution_id: str, idx: str) -> Response:
        found = query({"after"})
        resume = request.headers.get("Last-Event-ID")
        if resume is not None and resume.strip():
            after = st.parse_cursor(resume.strip(), "Last-Event-ID", "0-0", concrete=True)
        else:
            after = st.parse_cursor(found.get("after"), "after", "0-0", concrete=True)
        events = await streams.events(r.eid(execution_id), attempt_index(idx), after)
        response = Response(events, content_type="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        response.timeout = None  # as long as the attempt runs
        response.on_disconnect = events.stop  # type: ignore[attr-defined]
        return response

    @r.route(bp, f"{base}/summary", ["GET"])
    async def stream_summary(execution_id: str, idx: str) -> Response:
        query(set())
        eid, index = r.eid(execution_id), attempt_index(idx)
        summary = await streams.summary(eid, index)
        if summary is None:
            raise SummaryNotFound(f"attempt {index} of {eid} has no summary document yet (a "
                                  f"'{st.PATCH_FRAME}' frame starts it)")
        return json_response(summary.wire())

    return bp

