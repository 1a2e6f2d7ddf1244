"""Attempt streams for SQL stores (spec/streams.md): ``ff_stream`` holds a stream's
bookkeeping and summary, ``ff_stream_frame`` its retained frames. An append is one
transaction with the execution row locked, so it cannot interleave with the step that
ends the attempt; the rules are ``appliance.core.streams``."""

from __future__ import annotations

from typing import Any

from appliance.core import admission as adm
from appliance.core import streams as st
from appliance.core.errors import ExecutionNotFound, InvalidHandle
from appliance.core.operations import Ctx
from appliance.core.record import ATTEMPT_COLUMNS, EXECUTION_COLUMNS, Attempt, Execution

from .statements import Op, all_, exec_, later, many, notify, one

_FRAME_COLUMNS = ("ms, seq, frame_type, payload, encoding, source, correlation_id, mode, "
                  "ttl_ms, summary_version")
_INSERT_FRAME = (f"INSERT INTO ff_stream_frame (execution_id, attempt_index, {_FRAME_COLUMNS}) "
                 f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_UPSERT_STREAM = (
    "INSERT INTO ff_stream (execution_id, attempt_index, last_ms, last_seq, frame_count, "
    "total_bytes, retained, has_durable, ema_rate_hz, last_append_ms, summary, "
    "summary_version, summary_updated_ms, summary_first_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (execution_id, attempt_index) DO UPDATE SET last_ms = excluded.last_ms, "
    "last_seq = excluded.last_seq, frame_count = excluded.frame_count, "
    "total_bytes = excluded.total_bytes, retained = excluded.retained, "
    "has_durable = excluded.has_durable, ema_rate_hz = excluded.ema_rate_hz, "
    "last_append_ms = excluded.last_append_ms, summary = excluded.summary, "
    "summary_version = excluded.summary_version, "
    "summary_updated_ms = excluded.summary_updated_ms, "
    "summary_first_ms = excluded.summary_first_ms")
_STREAM_COLUMNS = ("last_ms", "last_seq", "frame_count", "total_bytes", "retained",
                   "has_durable", "ema_rate_hz", "last_append_ms", "summary", "summary_version",
                   "summary_updated_ms", "summary_first_ms")
#: The execution (locked) and the stream's row, if any, in one statement.
_EXEC_AND_STREAM = (
    f"SELECT ex.*, {', '.join(f's.{c}' for c in _STREAM_COLUMNS)} FROM ff_exec ex "
    f"LEFT JOIN ff_stream s ON s.execution_id = ex.execution_id AND s.attempt_index = ? "
    f"WHERE ex.execution_id = ?{{lock_ex}}")
_STREAM = "FROM ff_stream WHERE execution_id = ? AND attempt_index = ?"
_RANGE = ("FROM ff_stream_frame WHERE execution_id = ? AND attempt_index = ? "
          "AND (ms, seq) >= (?, ?) AND (ms, seq) <= (?, ?)")


def _load(execution_id: str, lock: str) -> Op:
    row = yield one(f"SELECT * FROM ff_exec WHERE execution_id = ?{lock}", execution_id)
    return Execution.from_row(row) if row else None


def append(execution_id: str, args: st.AppendArgs, ctx: Ctx) -> Op:
    row = yield one(_EXEC_AND_STREAM, args.attempt_index, execution_id)
    if row is None:
        raise InvalidHandle.of(execution_id=execution_id)
    ex = Execution(*(row[c] for c in EXECUTION_COLUMNS))
    st.check_writer(ex, args.fence, args.attempt_index, ctx.now)
    meta, summary = _stream(row if row["last_ms"] is not None else None)
    plan = st.plan_append(meta, summary, args, st.retention_maxlen(ex), ctx.now)
    key = (execution_id, args.attempt_index)
    yield many(_INSERT_FRAME, [(*key, f.id.ms, f.id.seq, f.frame_type, f.payload, f.encoding,
                                f.source, f.correlation_id, f.mode, f.ttl_ms,
                                f.summary_version) for f in plan.frames])
    excess = plan.meta.retained - plan.keep
    if excess > 0:  # the oldest frames past the mode's retention
        plan.meta.retained -= yield exec_(
            "DELETE FROM ff_stream_frame WHERE execution_id = ? AND attempt_index = ? AND "
            "(ms, seq) <= (SELECT ms, seq FROM ff_stream_frame WHERE execution_id = ? AND "
            "attempt_index = ? ORDER BY ms, seq LIMIT 1 OFFSET ?)", *key, *key, excess - 1)
    m, s = plan.meta, plan.summary or summary
    yield later(_UPSERT_STREAM, *key, m.last.ms, m.last.seq, m.frame_count, m.total_bytes,
                m.retained, int(m.has_durable), m.ema_rate_hz, m.last_append_ms,
                s.document if s else None, s.version if s else 0,
                s.last_updated_ms if s else None, s.first_applied_ms if s else None)
    wake = adm.wake_key("stream", execution_id)
    yield notify(wake)
    return plan.outcome, (wake,)


def _stream(row: Any) -> tuple[st.StreamMeta | None, st.Summary | None]:
    if row is None:
        return None, None
    meta = st.StreamMeta(st.FrameId(row["last_ms"], row["last_seq"]), row["frame_count"],
                         row["total_bytes"], row["retained"], bool(row["has_durable"]),
                         row["ema_rate_hz"], row["last_append_ms"])
    summary = (st.Summary(row["summary"], row["summary_version"], row["summary_updated_ms"],
                          row["summary_first_ms"]) if row["summary_version"] else None)
    return meta, summary


def read(execution_id: str, index: int, lo: st.FrameId, hi: st.FrameId, limit: int,
         now: int) -> Op:
    ex = yield from _load(execution_id, "")
    if ex is None:
        raise ExecutionNotFound.of(execution_id=execution_id)
    attempt = yield one("SELECT * FROM ff_attempt WHERE execution_id = ? AND "
                        "attempt_index = ?", execution_id, index)
    rows = yield all_(f"SELECT {_FRAME_COLUMNS} {_RANGE} AND NOT (mode = 'best_effort' AND "
                      f"ms + ttl_ms <= ?) ORDER BY ms, seq LIMIT ?", execution_id, index,
                      lo.ms, lo.seq, hi.ms, hi.seq, now, limit)
    frames = tuple(st.Frame(st.FrameId(r["ms"], r["seq"]), r["frame_type"], bytes(r["payload"]),
                            r["encoding"], r["source"], r["mode"], r["correlation_id"],
                            r["ttl_ms"], r["summary_version"]) for r in rows)
    found = None if attempt is None else Attempt(**{c: attempt[c] for c in ATTEMPT_COLUMNS})
    return st.StreamPage(frames, st.closed(ex, found, index))


def summary(execution_id: str, index: int) -> Op:
    ex = yield from _load(execution_id, "")
    if ex is None:
        raise ExecutionNotFound.of(execution_id=execution_id)
    row = yield one(f"SELECT * {_STREAM}", execution_id, index)
    return _stream(row)[1]


def closing(execution_id: str) -> Op:
    """Tails of the execution look again: a stream of it closed (``streams.closes``)."""
    wake = adm.wake_key("stream", execution_id)
    yield notify(wake)
    return wake


def delete_all(execution_id: str) -> Op:
    yield later("DELETE FROM ff_stream_frame WHERE execution_id = ?", execution_id)
    yield later("DELETE FROM ff_stream WHERE execution_id = ?", execution_id)
