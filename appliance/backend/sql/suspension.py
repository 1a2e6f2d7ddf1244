"""Suspension, waitpoints and signals for SQL stores (spec/suspension.md), each call one
transaction: load the execution (locked) and the rows the rule needs, apply the core
rule, write back what changed."""

from __future__ import annotations

from typing import Any

from appliance.core import suspension as sp
from appliance.core import tokens
from appliance.core.effects import CloseWaitpoints, Effect
from appliance.core.errors import (
    ExecutionNotFound,
    FlowFabricError,
    InvalidHandle,
    SignalIdInUse,
)
from appliance.core.handle import Fence
from appliance.core.operations import Applied, Ctx
from appliance.core.record import Execution
from appliance.core.state import Phase

from .statements import Op, all_, exec_, later, one

_WP_INSERT = (f"INSERT INTO ff_waitpoint ({', '.join(sp.WAITPOINT_COLUMNS)}) VALUES "
              f"({', '.join('?' * len(sp.WAITPOINT_COLUMNS))})")
_SIG_INSERT = (f"INSERT INTO ff_signal ({', '.join(sp.SIGNAL_COLUMNS)}) VALUES "
               f"({', '.join('?' * len(sp.SIGNAL_COLUMNS))})")


def _load(execution_id: str, missing: type[FlowFabricError] = ExecutionNotFound) -> Op:
    row = yield one("SELECT * FROM ff_exec WHERE execution_id = ?{lock}", execution_id)
    if row is None:
        raise missing.of(execution_id=execution_id)
    return Execution.from_row(row)


def _write(ex: Execution, before: tuple[Any, ...], effect: Effect, ctx: Ctx) -> Op:
    """Write the execution back; a flow member this ended (a lease found expired past the
    reclaim cap) resolves its edges in the same transaction. The lanes made claimable."""
    from .ops import PHASE, FlowMoves, write  # ops imports this module

    moved = FlowMoves()
    woken = yield from write(ex, before, effect)
    moved.note(ex, was_terminal=before[PHASE] == Phase.TERMINAL)
    return (yield from moved.resolve(Applied(woken=woken), ctx)).woken


def _waitpoint(row: Any) -> sp.Waitpoint:
    return sp.Waitpoint(**{c: row[c] for c in sp.WAITPOINT_COLUMNS})


def _signal(row: Any) -> sp.Signal:
    values = {c: row[c] for c in sp.SIGNAL_COLUMNS}
    if values["payload"] is not None:
        values["payload"] = bytes(values["payload"])
    return sp.Signal(**values)


def _save_waitpoint(wp: sp.Waitpoint, before: dict[str, Any] | None) -> Op:
    row = wp.to_row()
    if before is None:
        yield later(_WP_INSERT, *(row[c] for c in sp.WAITPOINT_COLUMNS))
        return
    changed = {k: v for k, v in row.items() if before.get(k) != v}
    if changed:
        yield later(f"UPDATE ff_waitpoint SET {', '.join(f'{k} = ?' for k in changed)} "
                    f"WHERE waitpoint_id = ?", *changed.values(), wp.waitpoint_id)


def close_waitpoints(execution_id: str, w: CloseWaitpoints, now: int) -> Op:
    """The ``CloseWaitpoints`` write (ops.write runs it)."""
    only = ""
    if w.ids is not None:
        if not w.ids:
            return
        only = f" AND waitpoint_id IN ({', '.join('?' * len(w.ids))})"
    yield later(f"UPDATE ff_waitpoint SET state = 'closed', closed_at = ?, close_reason = ? "
                f"WHERE execution_id = ? AND state <> 'closed'{only}", now, w.reason,
                execution_id, *(w.ids or ()))


def delete_all(execution_id: str) -> Op:
    yield later("DELETE FROM ff_signal WHERE execution_id = ?", execution_id)
    yield later("DELETE FROM ff_waitpoint WHERE execution_id = ?", execution_id)


# -- the keystore -------------------------------------------------------------------------------

def load_keys() -> Op:
    rows = yield all_("SELECT kid, secret_hex, current, expires_at FROM ff_hmac_key")
    keys = tokens.Keystore()
    for r in rows:
        keys.secrets[r["kid"]] = r["secret_hex"]
        if r["current"]:
            keys.current = r["kid"]
        if r["expires_at"] is not None:
            keys.expires[r["kid"]] = r["expires_at"]
    return keys


def _save_keys(keys: tokens.Keystore) -> Op:
    yield exec_("DELETE FROM ff_hmac_key")
    for kid, secret in keys.secrets.items():
        yield later("INSERT INTO ff_hmac_key (kid, secret_hex, current, expires_at) VALUES "
                    "(?, ?, ?, ?)", kid, secret, int(kid == keys.current),
                    keys.expires.get(kid))


def _lock_keys() -> Op:
    """Serialise keystore changes (two appliances booting or rotating at once)."""
    yield one("SELECT value FROM ff_meta WHERE key = 'partitions'{lock}")


def seed_keys(kid: str, secret_hex: str | None) -> Op:
    yield from _lock_keys()
    keys = yield from load_keys()
    status = tokens.seed(keys, kid, secret_hex)
    if status == "installed" or (status == "kept" and secret_hex is not None):
        yield from _save_keys(keys)
    return status, keys


def rotate_keys(kid: str, secret_hex: str, grace_ms: int, ctx: Ctx) -> Op:
    yield from _lock_keys()
    keys = yield from load_keys()
    rotation = tokens.rotate(keys, kid, secret_hex, grace_ms, ctx.now)
    yield from _save_keys(keys)
    return rotation, keys


# -- worker calls --------------------------------------------------------------------------------

def _open_with_key(execution_id: str, attempt_index: int | None, key: str) -> Op:
    row = yield one("SELECT * FROM ff_waitpoint WHERE execution_id = ? AND waitpoint_key = ? "
                    "AND attempt_index = ? AND state <> 'closed'", execution_id, key,
                    attempt_index)
    return _waitpoint(row) if row else None


def create_waitpoint(execution_id: str, a: sp.WaitpointArgs, ctx: Ctx) -> Op:
    """``(waitpoint, None)``, or ``(None, error)`` to answer once the transaction (which
    marked the lease expired) commits."""
    ex = yield from _load(execution_id, InvalidHandle)
    keys = yield from load_keys()
    before = ex.snapshot()
    same = yield from _open_with_key(execution_id, ex.current_attempt_index, a.waitpoint_key)
    made = sp.create_waitpoint(ex, a, same, keys, ctx)
    if isinstance(made, Effect):
        yield from _write(ex, before, made, ctx)
        return None, made.error
    yield from _write(ex, before, Effect(), ctx)
    yield from _save_waitpoint(made, None)
    return made, None


def _open_waitpoints(execution_id: str) -> Op:
    rows = yield all_("SELECT * FROM ff_waitpoint WHERE execution_id = ? AND state <> 'closed' "
                      "ORDER BY waitpoint_id{lock}", execution_id)  # not closed under us
    return [_waitpoint(r) for r in rows]


def _signals(execution_id: str, where: str, *params: Any) -> Op:
    rows = yield all_(f"SELECT * FROM ff_signal WHERE execution_id = ? AND {where} ORDER BY seq",
                      execution_id, *params)
    return [_signal(r) for r in rows]


def suspend(execution_id: str, a: sp.SuspendArgs, ctx: Ctx) -> Op:
    ex = yield from _load(execution_id, InvalidHandle)
    again = sp.replayed_suspend(ex, a.idempotency_key)
    if again is not None:
        return (yield from _with_signals(execution_id, again)), None
    keys = yield from load_keys()
    before = ex.snapshot()
    pending = yield from _open_waitpoints(execution_id)
    ids = [w.waitpoint_id for w in pending if w.state == "pending"]
    buffered = []
    if ids:
        buffered = yield from _signals(execution_id, f"waitpoint_id IN "
                                       f"({', '.join('?' * len(ids))})", *ids)
    known = {w.waitpoint_id: w.to_row() for w in pending}
    done = sp.suspend(ex, a, pending, buffered, keys, ctx)
    yield from _write(ex, before, done.effect, ctx)
    if done.result is None:
        return None, done.effect.error
    for wp in done.waitpoints:
        yield from _save_waitpoint(wp, known.get(wp.waitpoint_id))
    return (yield from _with_signals(execution_id, done.result)), None


def _with_signals(execution_id: str, result: sp.SuspendResult) -> Op:
    if result.signal_ids:
        found = yield from _signals(execution_id, f"signal_id IN "
                                    f"({', '.join('?' * len(result.signal_ids))})",
                                    *result.signal_ids)
        result.signals = found
    return result


def wait_children(execution_id: str, fence: Fence, ctx: Ctx) -> Op:
    ex = yield from _load(execution_id, InvalidHandle)
    before = ex.snapshot()
    group = yield one("SELECT state FROM ff_edge_group WHERE downstream_execution_id = ?",
                      execution_id)
    row = yield one("SELECT COUNT(*) AS n FROM ff_edge WHERE downstream_execution_id = ? AND "
                    "state = 'unsatisfied'", execution_id)
    unresolved = int(row["n"])  # a group set before any edge applied waits for nothing
    pending = group is not None and group["state"] == "pending" and unresolved > 0
    effect = sp.wait_children(ex, fence, pending, unresolved, ctx)
    yield from _write(ex, before, effect, ctx)
    return effect.outcome, effect.error


# -- signals -------------------------------------------------------------------------------------

#: The waitpoint, the first signal with the call's idempotency key inside its window, and
#: whether the signal id is taken: one statement.
_SIGNAL_TARGET = (
    "SELECT w.*, (SELECT signal_id FROM ff_signal WHERE execution_id = ? AND waitpoint_id = ? "
    "AND idempotency_key = ? AND dedup_expires_at > ?) AS first_signal_id, "
    "(SELECT 1 FROM ff_signal WHERE execution_id = ? AND signal_id = ?) AS id_taken "
    "FROM (SELECT 1 AS one) AS o LEFT JOIN ff_waitpoint w ON w.waitpoint_id = ?")


def deliver(execution_id: str, a: sp.SignalArgs, ctx: Ctx) -> Op:
    """``(answer, woken lanes)``."""
    ex = yield from _load(execution_id)
    keys = yield from load_keys()
    row = yield one(_SIGNAL_TARGET, execution_id, a.waitpoint_id, a.idempotency_key, ctx.now,
                    execution_id, a.signal_id, a.waitpoint_id)
    wp = _waitpoint(row) if row["waitpoint_id"] is not None else None
    first = row["first_signal_id"] if wp is not None and a.idempotency_key is not None else None
    wp_before = wp.to_row() if wp else None
    before = ex.snapshot()
    done = sp.deliver(ex, wp, first, keys, a, ctx)
    if done.signal is None:
        return done.answer, ()
    assert wp is not None
    if row["id_taken"]:
        raise SignalIdInUse.of(signal_id=a.signal_id, execution_id=execution_id)
    row = done.signal.to_row()
    yield later(_SIG_INSERT, *(row[c] for c in sp.SIGNAL_COLUMNS))
    yield from _save_waitpoint(wp, wp_before)
    woken = yield from _write(ex, before, done.effect, ctx)
    return done.answer, woken


def resumed_signals(ex: Execution) -> Op:
    """The signals that resumed ``ex``'s current attempt, in the order they counted."""
    ids = sp.satisfiers(ex)
    if not ids:
        return []
    found = yield from _signals(ex.execution_id, f"signal_id IN "
                                f"({', '.join('?' * len(ids))})", *ids)
    return found


# -- reads ---------------------------------------------------------------------------------------

def list_waitpoints(execution_id: str) -> Op:
    """The execution and its open waitpoints by id, or None when it does not exist."""
    row = yield one("SELECT * FROM ff_exec WHERE execution_id = ?", execution_id)
    if row is None:
        return None
    rows = yield all_("SELECT * FROM ff_waitpoint WHERE execution_id = ? AND state <> 'closed' "
                      "ORDER BY waitpoint_id", execution_id)
    return Execution.from_row(row), [_waitpoint(r) for r in rows]


def get_waitpoint(execution_id: str, waitpoint_id: str) -> Op:
    row = yield one("SELECT * FROM ff_waitpoint WHERE waitpoint_id = ? AND execution_id = ?",
                    waitpoint_id, execution_id)
    return _waitpoint(row) if row else None


def resume_signals(execution_id: str) -> Op:
    row = yield one("SELECT * FROM ff_exec WHERE execution_id = ?", execution_id)
    if row is None:
        return []
    return (yield from resumed_signals(Execution.from_row(row)))


# -- the pending-waitpoint expiry scanner -----------------------------------------------------------

def expire_pending(now: int, limit: int) -> Op:
    gone = yield exec_("UPDATE ff_waitpoint SET state = 'closed', closed_at = ?, close_reason = "
                       "'never_committed' WHERE state = 'pending' AND waitpoint_id IN (SELECT "
                       "waitpoint_id FROM ff_waitpoint WHERE state = 'pending' AND expires_at IS "
                       "NOT NULL AND expires_at <= ? ORDER BY expires_at LIMIT ?{skip_locked})",
                       now, now, limit)
    return gone
