"""Attempt output streams: frames, their ids and cursors, durability modes, the summary
document (JSON Merge Patch) and when a stream is closed. Pure rules every store shares;
the long story is spec/streams.md."""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import msgspec

from .errors import (
    InvalidInput,
    InvalidSummaryPatch,
    StaleLease,
    StreamTooLarge,
    SummaryTooLarge,
)
from .handle import Fence
from .record import Attempt, Execution
from .state import Ownership, Phase

#: Query bounds (the original's REST ceilings).
READ_LIMIT, TAIL_LIMIT, LIMIT_CEILING = 100, 50, 1000
BLOCK_MS_CEILING = 30_000
#: A stream keeps at most this many frames after a summary-mode append.
SUMMARY_MAXLEN = 64
#: Best-effort frames: how long they live by default, and the bounds of the retained count.
BEST_EFFORT_TTL_MS, BEST_EFFORT_TTL_MAX_MS = 10_000, 3_600_000
BEST_EFFORT_FLOOR, BEST_EFFORT_CEILING, EMA_ALPHA = 64, 16_384, 0.2
#: ``policy.stream_policy.retention_maxlen``: the durable frames a stream keeps.
RETENTION_MAXLEN = 10_000
PATCH_KIND, PATCH_FRAME, PATCH_DEPTH = "json-merge-patch", "summary_patch", 16
NULL_SENTINEL = "__ff_null__"
SUMMARY_MAX_BYTES = 1_048_576
MODES = ("durable", "summary", "best_effort")
#: The largest sequence number (the cursor ``<ms>`` as an upper bound means ``<ms>-MAX``).
SEQ_MAX = 2**63 - 1


# -- ids and cursors ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, order=True)
class FrameId:
    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    def next(self) -> FrameId:
        """The smallest id after this one (exclusive cursors become inclusive ones); the
        largest id stays itself (no frame is ever minted there)."""
        if self.seq < SEQ_MAX:
            return FrameId(self.ms, self.seq + 1)
        return FrameId(self.ms + 1, 0) if self.ms < SEQ_MAX else self


FIRST, LAST = FrameId(0, 0), FrameId(SEQ_MAX, SEQ_MAX)
_CURSOR = re.compile(r"([0-9]{1,19})(?:-([0-9]{1,19}))?")


def parse_cursor(raw: str | None, name: str, default: str, *, upper: bool = False,
                 concrete: bool = False) -> FrameId:
    """A query cursor: ``start``, ``end``, ``<ms>`` or ``<ms>-<seq>`` (ASCII digits). A bare
    ``<ms>`` as an upper bound covers the whole millisecond. ``concrete``: only ids."""
    text = default if raw is None else raw
    if text in ("start", "end"):
        if concrete:
            raise InvalidInput(f"{name}: XREAD cursor must be a concrete entry id; pass '0-0' "
                               f"to start from the beginning")
        return FIRST if text == "start" else LAST
    if text in ("-", "+"):
        raise InvalidInput(f"{name}: bare marker {text!r} is not a valid stream cursor; use "
                           f"'start' or 'end'")
    m = _CURSOR.fullmatch(text)
    ms = int(m.group(1)) if m else -1
    seq = int(m.group(2)) if m and m.group(2) is not None else (SEQ_MAX if upper else 0)
    if not m or ms > SEQ_MAX or seq > SEQ_MAX:
        raise InvalidInput(f"{name}: invalid stream cursor {text[:64]!r} (expected 'start', "
                           f"'end', '<ms>', or '<ms>-<seq>')")
    return FrameId(ms, seq)


def parse_frame_id(text: str) -> FrameId:
    ms, _, seq = text.partition("-")
    return FrameId(int(ms), int(seq or 0))


# -- appending ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FrameIn:
    """One frame as a worker sends it."""

    frame_type: str
    payload: bytes
    encoding: str = "utf8"
    correlation_id: str = ""
    source: str = "worker"


@dataclass(frozen=True, slots=True)
class AppendArgs:
    fence: Fence
    attempt_index: int
    frames: tuple[FrameIn, ...]
    mode: str = "durable"
    ttl_ms: int = 0  # best-effort only
    #: Lifetime payload bytes a stream may take (FF_STREAM_MAX_BYTES), checked by the store.
    max_stream_bytes: int = 256 * 1_048_576


@dataclass(frozen=True, slots=True)
class Frame:
    """A stored frame as reads answer it."""

    id: FrameId
    frame_type: str
    payload: bytes
    encoding: str
    source: str
    mode: str
    correlation_id: str = ""
    ttl_ms: int = 0
    summary_version: int = 0

    def expired(self, now: int) -> bool:
        return self.mode == "best_effort" and self.ttl_ms > 0 and self.id.ms + self.ttl_ms <= now

    def wire(self) -> dict[str, Any]:
        """The original's ``{id, fields}`` (string values, the payload as text) and the
        exact bytes in ``payload_b64``."""
        fields = {"encoding": self.encoding, "frame_type": self.frame_type,
                  "mode": self.mode, "payload": self.payload.decode("utf-8", "replace"),
                  "source": self.source, "ts": str(self.id.ms)}
        if self.correlation_id:
            fields["correlation_id"] = self.correlation_id
        if self.summary_version:
            fields["summary_version"] = str(self.summary_version)
        if self.ttl_ms:
            fields["ttl_ms"] = str(self.ttl_ms)
        return {"id": str(self.id), "fields": dict(sorted(fields.items())),
                "payload_b64": base64.b64encode(self.payload).decode()}


@dataclass(slots=True)
class StreamMeta:
    """A stream's bookkeeping (one row, or one hash)."""

    last: FrameId = FIRST
    frame_count: int = 0  # lifetime
    total_bytes: int = 0  # lifetime payload bytes
    retained: int = 0
    has_durable: bool = False
    ema_rate_hz: float = 0.0
    last_append_ms: int = 0


@dataclass(frozen=True, slots=True)
class Summary:
    document: str  # JSON text
    version: int
    last_updated_ms: int
    first_applied_ms: int

    def wire(self) -> dict[str, Any]:
        return {"document": msgspec.Raw(self.document.encode()), "version": self.version,
                "patch_kind": PATCH_KIND, "last_updated_ms": self.last_updated_ms,
                "first_applied_ms": self.first_applied_ms}


@dataclass(frozen=True, slots=True)
class Appended:
    first_id: FrameId
    last_id: FrameId
    count: int
    frame_count: int
    summary_version: int = 0

    def wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"first_id": str(self.first_id), "last_id": str(self.last_id),
                                "count": self.count, "frame_count": self.frame_count}
        if self.summary_version:
            body["summary_version"] = self.summary_version
        return {"Appended": body}


@dataclass(slots=True)
class AppendPlan:
    """What an append writes: the frames, the stream's new bookkeeping, the summary if
    patched, and how many frames the stream keeps afterwards (oldest trimmed)."""

    frames: list[Frame]
    meta: StreamMeta
    keep: int
    summary: Summary | None
    outcome: Appended


def check_writer(ex: Execution, fence: Fence, attempt_index: int, now: int) -> None:
    """The append's lease check: the caller holds the live lease of this attempt."""
    from .operations import Ctx
    from .transitions import _check_lease  # the lease rule every worker call shares

    expired = _check_lease(ex, fence, Ctx(now=now))
    if expired is not None:
        assert expired.error is not None
        raise expired.error
    if ex.current_attempt_index != attempt_index:
        raise StaleLease.of(execution_id=ex.execution_id, held=fence.lease_epoch,
                            lease_epoch=ex.current_lease_epoch)


def retention_maxlen(ex: Execution) -> int:
    try:
        value = json.loads(ex.policy or "{}").get("stream_policy", {}).get("retention_maxlen")
    except (ValueError, AttributeError):
        value = None
    return value if isinstance(value, int) and 1 <= value <= RETENTION_MAXLEN else \
        RETENTION_MAXLEN


def plan_append(meta: StreamMeta | None, summary: Summary | None, args: AppendArgs,
                maxlen: int, now: int) -> AppendPlan:
    """The append of ``args`` to a stream in state ``meta`` (None: never written), at the
    store's clock ``now``; raises the typed error that refuses it."""
    meta = replace(meta) if meta is not None else StreamMeta()
    size = sum(len(f.payload) for f in args.frames)
    if meta.total_bytes + size > args.max_stream_bytes:
        raise StreamTooLarge(
            f"the stream of attempt {args.attempt_index} would exceed "
            f"{args.max_stream_bytes} payload bytes (FF_STREAM_MAX_BYTES); summarise, or "
            f"start a new attempt", details={"limit_bytes": args.max_stream_bytes})
    ms = max(now, meta.last.ms)
    seq = meta.last.seq + 1 if ms == meta.last.ms and meta.frame_count else 0
    frames: list[Frame] = []
    version = summary.version if summary else 0
    document = load_document(summary.document) if summary else {}
    patched = False
    for i, f in enumerate(args.frames):
        frame_version = 0
        if f.frame_type == PATCH_FRAME:
            document = merge_patch(document, parse_patch(f.payload, i))
            version += 1
            frame_version = version
            patched = True
        frames.append(Frame(FrameId(ms, seq + i), f.frame_type, f.payload, f.encoding,
                            f.source, args.mode, f.correlation_id,
                            args.ttl_ms if args.mode == "best_effort" else 0, frame_version))
    new_summary = summary
    if patched:
        text = dump_document(strip_sentinels(document))
        if len(text) > SUMMARY_MAX_BYTES:
            raise SummaryTooLarge(f"the summary document would exceed {SUMMARY_MAX_BYTES} "
                                  f"bytes", details={"limit_bytes": SUMMARY_MAX_BYTES})
        new_summary = Summary(text, version, now,
                              summary.first_applied_ms if summary else now)
    meta.last = frames[-1].id
    meta.frame_count += len(frames)
    meta.total_bytes += size
    meta.retained += len(frames)
    if args.mode == "durable":
        meta.has_durable, keep = True, maxlen
    elif args.mode == "summary":
        meta.has_durable, keep = True, min(maxlen, SUMMARY_MAXLEN)
    else:
        meta.ema_rate_hz = ema_update(meta, now, args.ttl_ms)
        keep = best_effort_keep(meta.ema_rate_hz, args.ttl_ms)
    meta.last_append_ms = now
    outcome = Appended(frames[0].id, frames[-1].id, len(frames), meta.frame_count,
                       version if patched else 0)
    return AppendPlan(frames, meta, keep, new_summary if patched else None, outcome)


def ema_update(meta: StreamMeta, now: int, ttl_ms: int) -> float:
    """The append-rate estimate (Hz) a best-effort stream sizes its retention by: seeded so
    the first retention is the floor, then an exponential moving average."""
    if meta.last_append_ms == 0 or meta.ema_rate_hz == 0.0:
        return BEST_EFFORT_FLOOR / (2 * max(ttl_ms, 1) / 1000)
    inst = 1000 / max(now - meta.last_append_ms, 1)
    return EMA_ALPHA * inst + (1 - EMA_ALPHA) * meta.ema_rate_hz


def best_effort_keep(ema_rate_hz: float, ttl_ms: int) -> int:
    k = math.ceil(ema_rate_hz * ttl_ms / 1000 * 2)
    return min(max(k, BEST_EFFORT_FLOOR), BEST_EFFORT_CEILING)


# -- the summary document -----------------------------------------------------------------

def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_document(text: str | bytes) -> Any:
    """JSON with its decimals as ``Decimal`` (so they are written back as written)."""
    return json.loads(text, parse_float=Decimal, parse_constant=_no_constants)


def dump_document(value: Any) -> str:
    """Compact ASCII JSON (escapes keep NUL and the like storable), decimals as written."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump_document(v)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump_document(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value)


def _problem(value: Any) -> str | None:
    """What makes a parsed patch unstorable or unreadable by JSON clients, if anything."""
    if isinstance(value, dict):
        return next((p for k, v in value.items() for p in (_problem(k), _problem(v)) if p),
                    None)
    if isinstance(value, list):
        return next((p for v in value if (p := _problem(v))), None)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return ("a string holds a lone UTF-16 surrogate (a '\\ud800'-style escape); "
                    "send valid Unicode")
    elif isinstance(value, (Decimal, int)) and not isinstance(value, bool):
        try:
            finite = math.isfinite(float(value))
        except OverflowError:
            finite = False
        if not finite:
            return f"the number {str(value)[:40]} is too large for a 64-bit float"
    return None


def parse_patch(payload: bytes, index: int) -> dict[str, Any]:
    where = f"frames[{index}].payload"
    try:
        patch = load_document(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidSummaryPatch(f"{where}: a summary_patch frame must hold a JSON object "
                                  f"(RFC 7396 merge patch): {exc}") from None
    if not isinstance(patch, dict):
        raise InvalidSummaryPatch(f"{where}: a summary_patch must be a JSON object, got "
                                  f"{type(patch).__name__}")
    if _depth(patch) > PATCH_DEPTH:
        raise InvalidSummaryPatch(f"{where}: patch nests deeper than {PATCH_DEPTH} levels")
    problem = _problem(patch)
    if problem is not None:
        raise InvalidSummaryPatch(f"{where}: {problem}")
    return patch


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: null deletes, objects merge recursively, everything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strip_sentinels(value: Any) -> Any:
    """``"__ff_null__"`` leaves mean "set to JSON null" (a merge patch's null deletes)."""
    if isinstance(value, dict):
        return {k: strip_sentinels(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_sentinels(v) for v in value]
    return None if value == NULL_SENTINEL else value


# -- closing ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Closed:
    at: int
    reason: str


_ENDED = {"ended_success": "attempt_success", "ended_cancelled": "attempt_cancelled",
          "interrupted_reclaimed": "reclaimed"}
_EXPIRED_REASONS = frozenset({"attempt_timeout", "execution_deadline"})


def closed(ex: Execution, attempt: Attempt | None, index: int) -> Closed | None:
    """Whether attempt ``index``'s stream is closed, derived from the records (so it
    closes in the same step that ends the attempt): ended, its lease lost, or never to
    start (the execution ended first)."""
    if attempt is not None and attempt.ended_at is not None:
        state, why = attempt.attempt_state, attempt.failure_reason or ""
        if state == "ended_failure":
            reason = "expired" if why in _EXPIRED_REASONS else "attempt_failure"
        elif state == "ended_cancelled" and why == "dependency_impossible":
            reason = "dependency_impossible"
        else:
            reason = _ENDED.get(state, "attempt_failure")
        return Closed(attempt.ended_at, reason)
    if attempt is not None:
        if ex.current_attempt_index == index and ex.lifecycle_phase == Phase.ACTIVE:
            if ex.ownership_state == Ownership.LEASE_EXPIRED_RECLAIMABLE:
                return Closed(ex.lease_expired_at or ex.last_transition_at or 0,
                              "lease_expired")
            if ex.ownership_state == Ownership.LEASE_REVOKED:
                return Closed(ex.lease_revoked_at or ex.last_transition_at or 0,
                              "lease_revoked")
        return None
    if ex.lifecycle_phase == Phase.TERMINAL and index >= ex.total_attempt_count:
        return Closed(ex.completed_at or ex.last_transition_at or 0, "never_started")
    return None


def closes(before_owner: str, ex: Execution, ended_attempt: bool) -> bool:
    """Whether a state change closed a stream: an attempt ended or its lease was lost
    (tails of the execution must look again)."""
    return ended_attempt or (before_owner == Ownership.LEASED
                             and ex.ownership_state in (Ownership.LEASE_EXPIRED_RECLAIMABLE,
                                                        Ownership.LEASE_REVOKED))


@dataclass(frozen=True, slots=True)
class StreamPage:
    frames: tuple[Frame, ...]
    closed: Closed | None = None

    def wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"frames": [f.wire() for f in self.frames],
                                "count": len(self.frames)}
        if self.closed is not None:
            body["closed_at"] = self.closed.at
            body["closed_reason"] = self.closed.reason
        return body


def visible(frames: list[Frame], now: int) -> tuple[Frame, ...]:
    """Frames a read answers: best-effort frames past their ttl are gone."""
    return tuple(f for f in frames if not f.expired(now))
