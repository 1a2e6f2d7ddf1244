"""Attempt output streams on Valkey (spec/streams.md): the appliance side of
lua/60_streams.lua, which lists the keys. The rules are ``appliance.core.streams``; the SQL
stores' implementation (appliance/backend/sql/streams.py) is the reference behaviour.

An append without summary patches is one FCALL: the lease check, the ids, the caps, the
retention trim and the tails' wake-up all happen inside it. A batch with ``summary_patch``
frames first reads the stream (one read-only FCALL) and merges the document here with the
core rules (Lua's cjson would round numbers), then appends naming the version it merged
on; when another patch won meanwhile the library refuses and the batch is merged again.
A read is one read-only FCALL that also answers what the close marker is derived from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from msgspec import json as _json

from appliance.core import streams as st
from appliance.core.admission import wake_key
from appliance.core.errors import (
    ExecutionNotFound,
    InvalidHandle,
    ResourceExhausted,
    error_from,
)
from appliance.core.record import ATTEMPT_COLUMNS, Attempt

from . import codec, keys

if TYPE_CHECKING:
    from appliance.backend import BackendEnv

    from .connection import Connection

#: Appends of one patch batch before giving up on a summary other patches keep changing.
SUMMARY_ROUNDS = 8


class StreamsMixin:
    """The attempt-stream methods of ``ValkeyBackend``."""

    if TYPE_CHECKING:
        env: BackendEnv

        def _conn(self) -> Connection: ...
        def _args(self, **values: Any) -> dict[str, Any]: ...

    async def append_frames(self, execution_id: str, args: st.AppendArgs
                            ) -> tuple[st.Appended, tuple[str, ...]]:
        patched = any(f.frame_type == st.PATCH_FRAME for f in args.frames)
        for _ in range(SUMMARY_ROUNDS):
            now = self.env.clock.now_ms()
            versions: Sequence[int] = [0] * len(args.frames)
            document: list[bytes] = []
            call = self._args(now=now, fence={"lease_id": args.fence.lease_id,
                                              "lease_epoch": args.fence.lease_epoch,
                                              "attempt_id": args.fence.attempt_id},
                              attempt_index=args.attempt_index, mode=args.mode,
                              ttl_ms=args.ttl_ms, max_bytes=args.max_stream_bytes)
            if patched:
                plan, base = await self._plan_patches(execution_id, args, now)
                assert plan.summary is not None
                versions = [f.summary_version for f in plan.frames]
                call["summary"] = {"base": base, "version": plan.summary.version}
                document = [plan.summary.document.encode()]
            call["frames"] = [[f.frame_type, f.encoding, f.correlation_id, f.source, v]
                              for f, v in zip(args.frames, versions, strict=True)]
            raw = await self._conn().fcall("ff_stream_append", keys.record(execution_id), call,
                                           *(f.payload for f in args.frames), *document)
            answer = codec.decode_answer(raw)
            if "moved" in answer:  # another patch changed the summary: merge again
                continue
            return _appended(execution_id, args, answer), (wake_key("stream", execution_id),)
        raise ResourceExhausted(
            f"the summary of attempt {args.attempt_index} of {execution_id} kept changing "
            f"under concurrent patches ({SUMMARY_ROUNDS} merges); retry the append")

    async def _plan_patches(self, execution_id: str, args: st.AppendArgs, now: int
                            ) -> tuple[st.AppendPlan, int]:
        """The plan of a patch batch on the stream as it is now (refusals raised in the
        order the SQL stores raise them), and the summary version it merged on."""
        raw = await self._conn().fcall("ff_stream_state", keys.record(execution_id),
                                       {"index": args.attempt_index}, read_only=True)
        ex = codec.execution_from(raw[0]) if raw else None
        if ex is None:
            raise InvalidHandle.of(execution_id=execution_id)
        st.check_writer(ex, args.fence, args.attempt_index, now)
        summary = _summary(_hash(raw[2]))
        plan = st.plan_append(_meta(_hash(raw[1])), summary, args, st.retention_maxlen(ex), now)
        return plan, summary.version if summary else 0

    async def read_frames(self, execution_id: str, index: int, lo: st.FrameId, hi: st.FrameId,
                          limit: int) -> st.StreamPage:
        raw = await self._conn().fcall("ff_stream_read", keys.record(execution_id), {
            "index": index, "lo": str(lo), "hi": str(hi), "limit": limit,
            "now": self.env.clock.now_ms()}, read_only=True)
        ex = codec.execution_from(raw[0]) if raw else None
        if ex is None:
            raise ExecutionNotFound.of(execution_id=execution_id)
        frames = tuple(_frame(raw[i], raw[i + 1]) for i in range(2, len(raw), 2))
        return st.StreamPage(frames, st.closed(ex, _attempt(raw[1]), index))

    async def stream_summary(self, execution_id: str, index: int) -> st.Summary | None:
        raw = await self._conn().fcall("ff_stream_summary", keys.record(execution_id),
                                       {"index": index}, read_only=True)
        if raw is None:
            raise ExecutionNotFound.of(execution_id=execution_id)
        return _summary(dict(zip((b"document", b"version", b"last_updated_ms",
                                  b"first_applied_ms"), raw[1], strict=True)))


def _appended(execution_id: str, args: st.AppendArgs, answer: dict[str, Any]) -> st.Appended:
    if answer.get("missing"):
        raise InvalidHandle.of(execution_id=execution_id)
    if "err" in answer:
        raise error_from(answer["err"], answer.get("d") or {})
    if "too_large" in answer:  # worded by the rule itself, from the stream's lifetime bytes
        st.plan_append(st.StreamMeta(total_bytes=int(answer["too_large"])), None, args, 1, 0)
        raise AssertionError("the library and streams.plan_append disagree on the byte cap")
    ok = answer["ok"]
    return st.Appended(st.parse_frame_id(ok["first_id"]), st.parse_frame_id(ok["last_id"]),
                       int(ok["count"]), int(ok["frame_count"]), int(ok["summary_version"]))


def _hash(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    """HGETALL as a function answers it (a flat list)."""
    pairs = iter(flat)
    return dict(zip(pairs, pairs, strict=False))


def _meta(found: dict[bytes, bytes]) -> st.StreamMeta | None:
    if not found:
        return None
    return st.StreamMeta(st.FrameId(int(found[b"last_ms"]), int(found[b"last_seq"])),
                         int(found[b"frame_count"]), int(found[b"total_bytes"]),
                         int(found[b"retained"]), found[b"has_durable"] == b"1",
                         float(found[b"ema_rate_hz"]), int(found[b"last_append_ms"]))


def _summary(found: dict[bytes, Any]) -> st.Summary | None:
    if not found.get(b"version"):
        return None
    return st.Summary(found[b"document"].decode(),
                      int(found[b"version"]), int(found[b"last_updated_ms"]),
                      int(found[b"first_applied_ms"]))


def _frame(raw_id: bytes, flat: Sequence[bytes]) -> st.Frame:
    fields = _hash(flat)

    def text(name: bytes, default: str = "") -> str:
        value = fields.get(name)
        return default if value is None else codec.text(value)

    return st.Frame(st.parse_frame_id(raw_id.decode()), text(b"frame_type"),
                    bytes(fields.get(b"payload", b"")), text(b"encoding", "utf8"),
                    text(b"source", "worker"), text(b"mode", "durable"),
                    text(b"correlation_id"), int(fields.get(b"ttl_ms", 0)),
                    int(fields.get(b"summary_version", 0)))


def _attempt(raw: bytes | None) -> Attempt | None:
    if raw is None:
        return None
    row = _json.decode(raw)
    return Attempt(**{c: row.get(c) for c in ATTEMPT_COLUMNS})

