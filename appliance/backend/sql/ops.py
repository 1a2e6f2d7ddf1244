"""Execution operations for SQL stores, written once for every dialect.

Each public function is an operation generator (see ``statements``) that a
backend runs inside one transaction. Rules come from ``core.transitions``;
this module only loads rows, applies a rule and writes back what changed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from appliance.core import transitions as rules
from appliance.core.contracts import CancelArgs, ClaimArgs, CreateArgs, ListPage
from appliance.core.errors import ExecutionNotFound, InvalidHandle
from appliance.core.handle import Handle
from appliance.core.record import ATTEMPT_COLUMNS, EXECUTION_COLUMNS, Execution
from appliance.core.transitions import CommitThenRaise, Ctx, Effect

from .statements import Deferred, Op, all_, exec_, notify, one

IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
CLAIM_WINDOW = 64
PROMOTE_ON_CLAIM = 16

_INSERT_EXEC = (f"INSERT INTO ff_exec ({', '.join(EXECUTION_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(EXECUTION_COLUMNS))}) ON CONFLICT DO NOTHING")
_INSERT_ATTEMPT = (f"INSERT INTO ff_attempt ({', '.join(ATTEMPT_COLUMNS)}) VALUES "
                   f"({', '.join('?' * len(ATTEMPT_COLUMNS))})")


# -- rows -------------------------------------------------------------------------

def load(execution_id: str, lock: str = "{lock}") -> Op:
    row = yield one(f"SELECT * FROM ff_exec WHERE execution_id = ?{lock}", execution_id)
    return Execution.from_row(row) if row else None


def _save(ex: Execution, before: dict[str, Any]) -> Op:
    changed = {k: v for k, v in ex.to_row().items() if before[k] != v}
    if changed:
        sets = ", ".join(f"{k} = ?" for k in changed)
        yield exec_(f"UPDATE ff_exec SET {sets} WHERE execution_id = ?",
                    *changed.values(), ex.execution_id)


def _write(ex: Execution, before: dict[str, Any], effect: Effect) -> Op:
    yield from _save(ex, before)
    if effect.attempt_update and effect.attempt_update_index is not None:
        sets = ", ".join(f"{k} = ?" for k in effect.attempt_update)
        yield exec_(f"UPDATE ff_attempt SET {sets} WHERE execution_id = ? AND attempt_index = ?",
                    *effect.attempt_update.values(), ex.execution_id,
                    effect.attempt_update_index)
    if effect.new_attempt is not None:
        row = effect.new_attempt.to_row()
        yield exec_(_INSERT_ATTEMPT, *(row[c] for c in ATTEMPT_COLUMNS))
    if effect.result is not None:
        yield exec_("UPDATE ff_exec_data SET result = ? WHERE execution_id = ?",
                    effect.result or None, ex.execution_id)


def mutate(execution_id: str, rule: Callable[[Execution], Effect],
           missing: Callable[[], Exception] | None = None) -> Op:
    """Load, apply one rule, write back; the rule's outcome is the answer."""
    ex = yield from load(execution_id)
    if ex is None:
        raise missing() if missing else ExecutionNotFound(execution_id)
    before = ex.to_row()
    try:
        effect = rule(ex)
    except CommitThenRaise as deferred:
        yield from _save(ex, before)
        return Deferred(deferred.error)
    yield from _write(ex, before, effect)
    if ex.claimable and not before["claimable"]:
        yield notify(ex.lane_id)
    return effect.outcome


def _by_handle(handle: Handle, rule: Callable[[Execution], Effect]) -> Op:
    def missing() -> Exception:
        return InvalidHandle(f"handle names execution {handle.execution_id}, which does not "
                             f"exist (or was purged after retention)")
    return (yield from mutate(handle.execution_id, rule, missing))


# -- ingress and operator -----------------------------------------------------------

def create(args: CreateArgs, ctx: Ctx) -> Op:
    ex = rules.create(args, ctx)
    if args.idempotency_key is not None:
        ttl = args.policy.dedup_window_ms or IDEMPOTENCY_TTL_MS
        key = (args.partition_id, args.namespace, args.idempotency_key)
        claimed = yield exec_("INSERT INTO ff_idem (partition_id, namespace, idem_key, "
                              "execution_id, expires_at) VALUES (?, ?, ?, ?, ?) "
                              "ON CONFLICT DO NOTHING", *key, args.execution_id, ctx.now + ttl)
        if not claimed:
            row = yield one("SELECT execution_id, expires_at FROM ff_idem WHERE partition_id = ? "
                            "AND namespace = ? AND idem_key = ?{lock}", *key)
            if row["expires_at"] > ctx.now:
                return {"Duplicate": {"execution_id": row["execution_id"]}}
            yield exec_("UPDATE ff_idem SET execution_id = ?, expires_at = ? WHERE "
                        "partition_id = ? AND namespace = ? AND idem_key = ?",
                        args.execution_id, ctx.now + ttl, *key)
    row = ex.to_row()
    inserted = yield exec_(_INSERT_EXEC, *(row[c] for c in EXECUTION_COLUMNS))
    if not inserted:
        return {"Duplicate": {"execution_id": args.execution_id}}
    yield exec_("INSERT INTO ff_exec_data (execution_id, input_payload) VALUES (?, ?)",
                args.execution_id, args.input_payload)
    if ex.claimable:
        yield notify(ex.lane_id)
    return {"Created": {"execution_id": ex.execution_id, "public_state": ex.public_state}}


def get(execution_id: str) -> Op:
    return (yield from load(execution_id, lock=""))


def get_result(execution_id: str) -> Op:
    ex = yield from load(execution_id, lock="")
    if ex is None:
        return None
    if not ex.has_result:
        return ex, None
    row = yield one("SELECT result FROM ff_exec_data WHERE execution_id = ?", execution_id)
    data = row["result"] if row else None
    return ex, (bytes(data) if data is not None else None)


def list_page(partition: int, cursor: str | None, limit: int) -> Op:
    if limit <= 0:
        return ListPage([], None)
    rows = yield all_("SELECT execution_id FROM ff_exec WHERE partition_id = ? AND "
                      "execution_id > ? ORDER BY execution_id LIMIT ?",
                      partition, cursor or "", limit + 1)
    ids = [r["execution_id"] for r in rows]
    more = len(ids) > limit
    ids = ids[:limit]
    return ListPage(ids, ids[-1] if more else None)


def cancel(args: CancelArgs, ctx: Ctx) -> Op:
    return (yield from mutate(args.execution_id, lambda ex: rules.cancel(ex, args, ctx)))


def change_priority(execution_id: str, priority: int, ctx: Ctx) -> Op:
    return (yield from mutate(execution_id, lambda ex: rules.change_priority(ex, priority, ctx)))


def replay(execution_id: str, ctx: Ctx) -> Op:
    return (yield from mutate(execution_id, lambda ex: rules.replay(ex, ctx)))


def revoke_lease(execution_id: str, reason: str, ctx: Ctx) -> Op:
    return (yield from mutate(execution_id, lambda ex: rules.revoke_lease(ex, reason, ctx)))


# -- worker side ----------------------------------------------------------------------

#: The distinct capability requirements among a lane's claimable work, read as
#: a loose index scan (one index seek per distinct set, whatever the backlog).
_REQUIREMENT_SETS = (
    "WITH RECURSIVE sets(caps) AS ("
    " SELECT MIN(required_capabilities) FROM ff_exec WHERE lane_id = ? AND claimable = 1"
    " UNION ALL"
    " SELECT (SELECT MIN(required_capabilities) FROM ff_exec WHERE lane_id = ? AND"
    " claimable = 1 AND required_capabilities > sets.caps) FROM sets WHERE sets.caps IS NOT NULL"
    ") SELECT caps FROM sets WHERE caps IS NOT NULL")
_HEAD = ("FROM ff_exec WHERE lane_id = ? AND claimable = 1 AND required_capabilities = ? "
         "ORDER BY priority DESC, created_at, execution_id LIMIT 1")


def claim(args: ClaimArgs, ctx: Ctx) -> Op:
    """Promote the lane's due delays, then lease the best execution this worker can run.

    Only requirement sets the worker satisfies are looked at, so work it cannot
    run never hides work it can, however much of it is queued ahead.
    """
    due = yield all_("SELECT execution_id FROM ff_exec WHERE lane_id = ? AND delay_until IS NOT "
                     "NULL AND delay_until <= ? ORDER BY delay_until LIMIT ?",
                     args.lane_id, ctx.now, PROMOTE_ON_CLAIM)
    for row in due:
        yield from _apply_if_due(row["execution_id"], rules.promote_delayed, ctx)
    worker_caps = set(args.capabilities)
    sets = yield all_(_REQUIREMENT_SETS, args.lane_id, args.lane_id)
    heads = []
    for row in sets:
        caps = row["caps"]
        if caps and not worker_caps.issuperset(caps.split(",")):
            continue
        head = yield one(f"SELECT priority, created_at, execution_id {_HEAD}", args.lane_id, caps)
        if head is not None:
            heads.append(((-head["priority"], head["created_at"], head["execution_id"]), caps))
    for _, caps in sorted(heads):
        for _attempt in range(CLAIM_WINDOW):
            row = yield one(f"SELECT * {_HEAD}{{skip_locked}}", args.lane_id, caps)
            if row is None:
                break  # drained (or every candidate is being claimed by someone else)
            ex = Execution.from_row(row)
            before = ex.to_row()
            effect = rules.claim(ex, args, ctx, lease_id=str(uuid.uuid4()),
                                 attempt_id=str(uuid.uuid4()))
            yield from _write(ex, before, effect)
            if effect.handle is None:
                continue  # the reclaim cap ended it instead; look again
            data = yield one("SELECT input_payload FROM ff_exec_data WHERE execution_id = ?",
                             ex.execution_id)
            payload = data["input_payload"] if data else None
            return effect.outcome, bytes(payload) if payload is not None else b""
    return None


def renew(handle: Handle, ttl: int | None, ctx: Ctx) -> Op:
    return (yield from _by_handle(handle, lambda ex: rules.renew(ex, handle.fence, ttl, ctx)))


def progress(handle: Handle, pct: int | None, message: str | None, ctx: Ctx) -> Op:
    return (yield from _by_handle(
        handle, lambda ex: rules.progress(ex, handle.fence, pct, message, ctx)))


def complete(handle: Handle, result: bytes | None, encoding: str | None, ctx: Ctx) -> Op:
    return (yield from _by_handle(
        handle, lambda ex: rules.complete(ex, handle.fence, result, encoding, ctx)))


def fail(handle: Handle, reason: str, category: str | None, ctx: Ctx) -> Op:
    return (yield from _by_handle(
        handle, lambda ex: rules.fail(ex, handle.fence, reason, category, ctx)))


def delay(handle: Handle, delay_until: int, ctx: Ctx) -> Op:
    return (yield from _by_handle(
        handle, lambda ex: rules.delay(ex, handle.fence, delay_until, ctx)))


# -- scanners -----------------------------------------------------------------------

_DUE = {
    "lease_expiry": ("SELECT execution_id FROM ff_exec WHERE ownership_state = 'leased' AND "
                     "lease_expires_at <= ? ORDER BY lease_expires_at LIMIT ?",
                     rules.mark_lease_expired),
    "delayed_promoter": ("SELECT execution_id FROM ff_exec WHERE delay_until IS NOT NULL AND "
                         "delay_until <= ? ORDER BY delay_until LIMIT ?", rules.promote_delayed),
    "attempt_timeout": ("SELECT execution_id FROM ff_exec WHERE attempt_deadline_at IS NOT NULL "
                        "AND attempt_deadline_at <= ? ORDER BY attempt_deadline_at LIMIT ?",
                        rules.expire_attempt),
    "execution_deadline": ("SELECT execution_id FROM ff_exec WHERE execution_deadline_at IS NOT "
                           "NULL AND execution_deadline_at <= ? ORDER BY execution_deadline_at "
                           "LIMIT ?", rules.expire_execution),
}


def due(scanner: str, now: int, limit: int) -> Op:
    rows = yield all_(_DUE[scanner][0], now, limit)
    return [r["execution_id"] for r in rows]


def _apply_if_due(execution_id: str, rule: Callable[[Execution, Ctx], Effect | None],
                  ctx: Ctx) -> Op:
    ex = yield from load(execution_id, lock="{skip_locked}")
    if ex is None:
        return None
    before = ex.to_row()
    effect = rule(ex, ctx)
    if effect is None:
        return None
    yield from _write(ex, before, effect)
    if ex.claimable and not before["claimable"]:
        yield notify(ex.lane_id)
        return ex.lane_id
    return ""


def apply_scanner(scanner: str, execution_id: str, ctx: Ctx) -> Op:
    """Re-check and apply one scanner rule; returns the lane it made claimable, "" or None."""
    return (yield from _apply_if_due(execution_id, _DUE[scanner][1], ctx))


def quarantine(execution_id: str, reason: str, ctx: Ctx) -> Op:
    """End an execution a scanner keeps failing on; True if it was changed."""
    changed = yield from _apply_if_due(execution_id,
                                       lambda ex, c: rules.quarantine(ex, reason, c), ctx)
    return changed is not None


def purge(now: int, limit: int) -> Op:
    """Delete terminal executions past retention, and expired idempotency keys."""
    rows = yield all_("SELECT execution_id FROM ff_exec WHERE purge_at IS NOT NULL AND "
                      "purge_at <= ? ORDER BY purge_at LIMIT ?", now, limit)
    for row in rows:
        eid = row["execution_id"]
        yield exec_("DELETE FROM ff_attempt WHERE execution_id = ?", eid)
        yield exec_("DELETE FROM ff_exec_data WHERE execution_id = ?", eid)
        yield exec_("DELETE FROM ff_exec WHERE execution_id = ?", eid)
    yield exec_("DELETE FROM ff_idem WHERE (partition_id, namespace, idem_key) IN (SELECT "
                "partition_id, namespace, idem_key FROM ff_idem WHERE expires_at <= ? LIMIT ?)",
                now, limit)
    return len(rows)
