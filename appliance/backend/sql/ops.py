"""Execution operations for SQL stores, written once for every dialect.

Each public function is an operation generator (see ``statements``) that a
backend runs inside one transaction. Rules come from the core registry; this
module only loads rows, applies a rule and writes back what changed — the
execution's changed columns and the rule's typed writes — and derives the lanes
made claimable (announced to other appliances with ``notify``, returned for the
local wake-up).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from appliance.core import admission as adm
from appliance.core import streams as st
from appliance.core import transitions as rules
from appliance.core.contracts import ClaimArgs, CreateArgs, ListPage
from appliance.core.effects import (
    CloseWaitpoints,
    DeleteExecution,
    Effect,
    NewAttempt,
    StoreResult,
    UpdateAttempt,
)
from appliance.core.errors import ExecutionNotFound, FlowFabricError
from appliance.core.flows import FLOW_CANCEL
from appliance.core.ids import fresh_uuids
from appliance.core.operations import Applied, Ctx, Missing, Mutation
from appliance.core.outcomes import Claimed, Created, Duplicate, Purged, Replayed
from appliance.core.record import (
    ATTEMPT_COLUMNS,
    CLAIMABLE,
    EXECUTION_COLUMNS,
    Execution,
)
from appliance.core.scanners import Scanner
from appliance.core.state import Phase
from appliance.core.suspension import leftover_waitpoints
from appliance.core.transitions import NoArgs, promote_delayed

from ..protocol import Claim
from . import admission, flows, streams, suspension
from .statements import Op, Stmt, all_, exec_, grouped, held_writes, later, notify, one

IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
ATTEMPT_INDEX = EXECUTION_COLUMNS.index("current_attempt_index")
PHASE = EXECUTION_COLUMNS.index("lifecycle_phase")
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


def write(ex: Execution, before: tuple[Any, ...], effect: Effect) -> Op:
    """The changed columns (``before``: the record's snapshot when loaded) and the
    effect's writes; returns the lanes made claimable."""
    if any(isinstance(w, DeleteExecution) for w in effect.writes):
        yield from _delete(ex.execution_id)
        return ()
    leftover = leftover_waitpoints(ex, before[ATTEMPT_INDEX])
    changed = {k: v for k, old, v in zip(EXECUTION_COLUMNS, before, ex.snapshot(), strict=True)
               if old != v}
    if changed:
        sets = ", ".join(f"{k} = ?" for k in changed)
        yield later(f"UPDATE ff_exec SET {sets} WHERE execution_id = ?",
                    *changed.values(), ex.execution_id)
    for w in effect.writes:
        if isinstance(w, UpdateAttempt):
            sets = ", ".join(f"{k} = ?" for k in w.values)
            yield later(f"UPDATE ff_attempt SET {sets} WHERE execution_id = ? AND "
                        f"attempt_index = ?", *w.values.values(), ex.execution_id, w.index)
        elif isinstance(w, NewAttempt):
            row = w.attempt.to_row()
            yield later(_INSERT_ATTEMPT, *(row[c] for c in ATTEMPT_COLUMNS))
        elif isinstance(w, StoreResult):
            yield later("UPDATE ff_exec_data SET result = ? WHERE execution_id = ?", w.data,
                        ex.execution_id)
        elif isinstance(w, CloseWaitpoints):
            yield from suspension.close_waitpoints(ex.execution_id, w, ex.last_mutation_at or 0)
    if leftover is not None:
        yield from suspension.close_waitpoints(ex.execution_id, leftover,
                                               ex.last_mutation_at or 0)
    woken: tuple[str, ...] = ()
    if rules.made_claimable(before[CLAIMABLE], ex):
        yield notify(ex.lane_id)
        woken = (ex.lane_id,)
    if _held_slot(before) and not adm.holds_slot(ex):  # its quota has a slot free
        key = adm.wake_key("quota", ex.quota_policy_id)
        yield notify(key)
        woken += (key,)
    if st.closes(before[_OWNER], ex, any(isinstance(w, UpdateAttempt) and "ended_at" in w.values
                                         for w in effect.writes)):
        woken += ((yield from streams.closing(ex.execution_id)),)
    return woken


_QUOTA, _OWNER, _GRANT = (EXECUTION_COLUMNS.index(c) for c in
                          ("quota_policy_id", "ownership_state", "grant_expires_at"))


def _held_slot(before: tuple[Any, ...]) -> bool:
    return bool(before[_QUOTA]) and (before[_OWNER] == "leased" or before[_GRANT] is not None)


def _delete(execution_id: str) -> Op:
    yield from suspension.delete_all(execution_id)
    yield from streams.delete_all(execution_id)
    yield later("DELETE FROM ff_attempt WHERE execution_id = ?", execution_id)
    yield later("DELETE FROM ff_exec_data WHERE execution_id = ?", execution_id)
    yield later("DELETE FROM ff_exec WHERE execution_id = ?", execution_id)


def apply(m: Mutation, ctx: Ctx) -> Op:
    """Load, apply the operation's rule, write back: one mutation, one ``Applied``.

    Scanner-style operations (a missing execution is nothing to do) pass over a row
    another appliance holds; the others wait for it."""
    lock = "{skip_locked}" if m.op.missing is Missing.IGNORE else "{lock}"
    ex = yield from load(m.execution_id, lock)
    moved = FlowMoves()
    applied = yield from _apply_to(m, ex, ctx, moved)
    applied = yield from moved.resolve(applied, ctx)
    [applied] = yield from moved.restate([m], [applied])
    return applied


class FlowMoves:
    """Flow members a transaction ended, or brought back from an end (a replay): their
    edges are resolved (``flows.resolve``) once the transaction's own writes are out."""

    __slots__ = ("back", "ended")

    def __init__(self) -> None:
        self.ended: list[Execution] = []
        self.back: list[Execution] = []

    def note(self, ex: Execution, was_terminal: bool) -> None:
        if not ex.flow_id:
            return
        now_terminal = ex.lifecycle_phase == Phase.TERMINAL
        if now_terminal and not was_terminal and ex.cancelled_by != FLOW_CANCEL:
            self.ended.append(ex)
        elif was_terminal and not now_terminal:
            self.back.append(ex)

    def resolve(self, applied: Applied, ctx: Ctx) -> Op:
        """``applied`` with the lanes the resolution made claimable added."""
        if not (self.ended or self.back):
            return applied
        woken = yield from flows.resolve(self.ended, self.back, ctx)
        return Applied(applied.outcome, applied.error, (*applied.woken, *woken))

    def restate(self, mutations: list[Mutation], answers: list[Applied]) -> Op:
        """``answers`` with each replay of a member answering the state its flow left it
        in (held again, or skipped again), read once the resolution is written."""
        back = {ex.execution_id for ex in self.back}
        out = []
        for m, answer in zip(mutations, answers, strict=True):
            if m.execution_id in back and isinstance(answer.outcome, Replayed):
                ex = yield from load(m.execution_id, lock="")
                if ex is not None:
                    answer = Applied(Replayed(ex.public_state), answer.error, answer.woken)
            out.append(answer)
        return out


def _apply_to(m: Mutation, ex: Execution | None, ctx: Ctx,
              moved: FlowMoves | None = None) -> Op:
    if ex is None:
        return Applied(error=m.op.missing_error(m.execution_id))
    before = ex.snapshot()
    was_terminal = ex.lifecycle_phase == Phase.TERMINAL
    effect = m.op.rule(ex, m.args, ctx)
    if effect is None:
        return Applied()
    woken = yield from write(ex, before, effect)
    if moved is not None:
        moved.note(ex, was_terminal)
    return Applied(effect.outcome, effect.error, woken)


def apply_many(mutations: list[Mutation], ctx: Ctx) -> Op:
    """Each mutation as ``apply`` does, the records loaded with one statement (in id
    order, so two transactions lock overlapping sets in the same order), the writes
    sent together (``grouped`` when no execution appears twice)."""
    loaded: dict[str, Execution] = {}
    for lock in ("{lock}", "{skip_locked}"):
        ids = sorted({m.execution_id for m in mutations
                      if (m.op.missing is Missing.IGNORE) == (lock == "{skip_locked}")})
        if ids:
            rows = yield all_(f"SELECT * FROM ff_exec WHERE execution_id IN "
                              f"({', '.join('?' * len(ids))}) ORDER BY execution_id{lock}", *ids)
            loaded.update((row["execution_id"], Execution.from_row(row)) for row in rows)
    answers: list[Applied] = []
    writes: list[Stmt] = []
    moved = FlowMoves()
    for m in mutations:
        try:
            stmts, answer = held_writes(_apply_to(m, loaded.get(m.execution_id), ctx, moved))
            writes += stmts
        except FlowFabricError as exc:
            answer = Applied(error=exc)
        if isinstance(answer.outcome, Purged):
            loaded.pop(m.execution_id, None)  # gone: a later item finds nothing
        answers.append(answer)
    distinct = len({m.execution_id for m in mutations}) == len(mutations)
    yield from grouped(writes) if distinct else writes
    if answers:
        answers[0] = yield from moved.resolve(answers[0], ctx)
    return (yield from moved.restate(mutations, answers))


def each(items: list[Callable[[], Op]]) -> Op:
    """Several operations in one transaction, each atomic on its own: a typed refusal
    becomes that item's answer. (Rules refuse before anything is written — writes follow
    the rule's answer — so a refused item has nothing to roll back.)"""
    answers: list[Applied] = []
    for item in items:
        try:
            answer = yield from item()
        except FlowFabricError as exc:
            answer = Applied(error=exc)
        answers.append(answer)
    return answers


# -- ingress ------------------------------------------------------------------------

def create(args: CreateArgs, ctx: Ctx) -> Op:
    ex = rules.create(args, ctx)
    flow = None
    if args.flow_id is not None:  # refused before anything is written
        flow = yield from flows.open_flow(args.flow_id)
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
                return Applied(Duplicate(row["execution_id"]))
            yield exec_("UPDATE ff_idem SET execution_id = ?, expires_at = ? WHERE "
                        "partition_id = ? AND namespace = ? AND idem_key = ?",
                        args.execution_id, ctx.now + ttl, *key)
    row = ex.to_row()
    inserted = yield exec_(_INSERT_EXEC, *(row[c] for c in EXECUTION_COLUMNS))
    if not inserted:
        return Applied(Duplicate(args.execution_id))
    if flow is not None:  # joins only when created: a duplicate does not count again
        yield from flows.join_on_create(flow, ctx)
    yield later("INSERT INTO ff_exec_data (execution_id, input_payload) VALUES (?, ?)",
                args.execution_id, args.input_payload)
    woken: tuple[str, ...] = ()
    if ex.claimable:
        yield notify(ex.lane_id)
        woken = (ex.lane_id,)
    return Applied(Created(ex.execution_id, ex.public_state), woken=woken)


def create_many(batch: list[CreateArgs], ctx: Ctx) -> Op:
    """Each create as ``create`` does, in order; a run of creates without an
    idempotency key inserts with one statement per ``_ROWS_PER_INSERT``."""
    answers: list[Applied] = []
    run: list[CreateArgs] = []
    for args in [*batch, None]:
        if args is not None and args.idempotency_key is None and args.flow_id is None:
            run.append(args)
            continue
        for start in range(0, len(run), _ROWS_PER_INSERT):
            answers += yield from _insert_run(run[start:start + _ROWS_PER_INSERT], ctx)
        run = []
        if args is not None:
            answers += yield from each([partial(create, args, ctx)])
    return answers


#: Rows per multi-row INSERT: within SQLite's 32,766 bound parameters.
_ROWS_PER_INSERT = 32_000 // len(EXECUTION_COLUMNS)


def _insert_run(run: list[CreateArgs], ctx: Ctx) -> Op:
    made: list[Execution | FlowFabricError] = []
    for args in run:
        try:
            made.append(rules.create(args, ctx))
        except FlowFabricError as exc:
            made.append(exc)
    rows = [ex.to_row() for ex in made if isinstance(ex, Execution)]
    if not rows:
        return [Applied(error=exc) for exc in made]
    values = ", ".join(["(" + ", ".join("?" * len(EXECUTION_COLUMNS)) + ")"] * len(rows))
    inserted = yield all_(f"INSERT INTO ff_exec ({', '.join(EXECUTION_COLUMNS)}) VALUES "
                          f"{values} ON CONFLICT DO NOTHING RETURNING execution_id",
                          *(row[c] for row in rows for c in EXECUTION_COLUMNS))
    fresh = {row["execution_id"] for row in inserted}
    answers, data = [], []
    for args, ex in zip(run, made, strict=True):
        if not isinstance(ex, Execution):
            answers.append(Applied(error=ex))
        elif ex.execution_id in fresh:  # the first of the run with this id made it
            fresh.discard(ex.execution_id)
            data += [ex.execution_id, args.input_payload]
            woken = (ex.lane_id,) if ex.claimable else ()
            if woken:
                yield notify(ex.lane_id)
            answers.append(Applied(Created(ex.execution_id, ex.public_state), woken=woken))
        else:
            answers.append(Applied(Duplicate(ex.execution_id)))
    if data:
        yield later("INSERT INTO ff_exec_data (execution_id, input_payload) VALUES "
                    + ", ".join(["(?, ?)"] * (len(data) // 2)), *data)
    return answers


# -- reads --------------------------------------------------------------------------

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


# -- claiming -----------------------------------------------------------------------

#: The distinct claim classes among a lane's claimable work, read as a loose index scan
#: (one index seek per distinct class, whatever the backlog).
_CLASSES = (
    "WITH RECURSIVE sets(cls) AS ("
    " SELECT MIN(claim_class) FROM ff_exec WHERE lane_id = ? AND claimable = 1"
    " UNION ALL"
    " SELECT (SELECT MIN(claim_class) FROM ff_exec WHERE lane_id = ? AND"
    " claimable = 1 AND claim_class > sets.cls) FROM sets WHERE sets.cls IS NOT NULL"
    ") SELECT cls FROM sets WHERE cls IS NOT NULL")
_CANDIDATES = ("SELECT * FROM ff_exec WHERE lane_id = ? AND claimable = 1 AND "
               "claim_class = ? ORDER BY priority DESC, created_at, execution_id "
               "LIMIT ?{skip_locked}")


def claim(args: ClaimArgs, ctx: Ctx) -> Op:
    """Promote the lane's due delays, then lease (or grant) the best executions this
    worker may take (spec/admission.md § One pipeline).

    Only classes the worker can run and whose budgets and quota admit it are looked at,
    so work it may not take never hides work it may, however much of it is queued ahead:
    each gives its best candidates, the best of all are taken. Rows another appliance
    holds are passed over; a candidate the reclaim cap ends instead makes the claim look
    again.
    """
    due = yield all_("SELECT execution_id FROM ff_exec WHERE lane_id = ? AND delay_until IS NOT "
                     "NULL AND delay_until <= ? ORDER BY delay_until LIMIT ?",
                     args.lane_id, ctx.now, PROMOTE_ON_CLAIM)
    woken: list[str] = []
    for row in due:
        promoted = yield from apply(Mutation(promote_delayed, row["execution_id"], NoArgs()), ctx)
        woken.extend(promoted.woken)
    worker_caps = frozenset(args.capabilities)
    classes = yield all_(_CLASSES, args.lane_id, args.lane_id)
    runnable = [r["cls"] for r in classes if adm.runs(adm.split_class(r["cls"])[0], worker_caps)]
    gate = yield from admission.Gate.load(runnable, ctx.now)
    taken: list[tuple[Execution, str]] = []
    grants: list[adm.Granted] = []
    writes: list[Stmt] = []
    moved = FlowMoves()
    for _round in range(CLAIM_WINDOW):
        want = args.max_tasks - len(taken) - len(grants)
        candidates = []
        for cls in runnable:
            room = min(want, gate.limit(cls))
            if room > 0 and gate.blocked(cls) is None:
                candidates += (yield all_(_CANDIDATES, args.lane_id, cls, room))
        candidates.sort(key=lambda r: (-r["priority"], r["created_at"], r["execution_id"]))
        ended = False
        for row in candidates:
            if len(taken) + len(grants) >= args.max_tasks:
                break
            if gate.limit(row["claim_class"]) <= 0:
                continue
            ex = Execution.from_row(row)
            before = ex.snapshot()
            if args.grant_ttl_ms is not None:
                grants.append(adm.grant(ex, args.worker_id, args.grant_ttl_ms, ctx))
                effect = Effect()
            else:
                lease_id, attempt_id = fresh_uuids(2)
                effect = rules.claim(ex, args, ctx, lease_id=lease_id, attempt_id=attempt_id)
            writes += held_writes(write(ex, before, effect))[0]
            if args.grant_ttl_ms is not None or isinstance(effect.outcome, Claimed):
                writes += held_writes(gate.admit(ex))[0]
                if effect.outcome is not None:
                    taken.append((ex, effect.outcome.attempt_type))
            else:
                ended = True  # the reclaim cap ended it instead
                moved.note(ex, was_terminal=False)
        yield from grouped(writes)
        writes.clear()
        if not ended or len(taken) + len(grants) >= args.max_tasks:
            break
    woken += (yield from moved.resolve(Applied(), ctx)).woken
    tasks = yield from _tasks(taken, args.lease_ttl_ms)
    return Claim(tuple(tasks), tuple(woken), tuple(grants), gate.retry_at(),
                 gate.gated(runnable))


def _tasks(taken: list[tuple[Execution, str]], lease_ttl_ms: int) -> Op:
    payloads = yield from _payloads([ex.execution_id for ex, _ in taken])
    tasks = []
    for ex, kind in taken:
        task = rules.claim_answer(ex, kind, lease_ttl_ms)
        if kind == "resumed":  # the signals that resumed it, in the same transaction
            task["signals"] = [s.for_worker() for s in
                               (yield from suspension.resumed_signals(ex))]
        tasks.append((task, payloads[ex.execution_id]))
    return tasks


def redeem_grant(execution_id: str, args: ClaimArgs, ctx: Ctx) -> Op:
    """Lease the execution a grant reserved for this worker (admitted when granted)."""
    ex = yield from load(execution_id)
    if ex is None:
        raise ExecutionNotFound.of(execution_id=execution_id)
    before = ex.snapshot()
    adm.check_grant(ex, args.worker_id, ctx)
    lease_id, attempt_id = fresh_uuids(2)
    effect = rules.claim(ex, args, ctx, lease_id=lease_id, attempt_id=attempt_id)
    yield from write(ex, before, effect)
    if not isinstance(effect.outcome, Claimed):  # the reclaim cap ended it
        moved = FlowMoves()
        moved.note(ex, was_terminal=False)
        yield from moved.resolve(Applied(), ctx)
        raise rules.not_active(ex)
    [task] = yield from _tasks([(ex, effect.outcome.attempt_type)], args.lease_ttl_ms)
    return task


def reclaim_grant(execution_id: str, args: ClaimArgs, ctx: Ctx) -> Op:
    """Grant a reclaimable execution to this worker, through the same admission."""
    ex = yield from load(execution_id)
    if ex is None:
        raise ExecutionNotFound.of(execution_id=execution_id)
    answer = adm.reclaim_refusal(ex, args)
    if answer is not None:
        return answer
    gate = yield from admission.Gate.load([ex.claim_class], ctx.now)
    gate.refuse(ex)
    before = ex.snapshot()
    granted = adm.grant(ex, args.worker_id, args.grant_ttl_ms or 1, ctx)
    yield from write(ex, before, Effect())
    yield from gate.admit(ex)
    return {"status": "granted", **granted.wire(), "lane_id": ex.lane_id}


def _payloads(ids: list[str]) -> Op:
    if not ids:
        return {}
    rows = yield all_(f"SELECT execution_id, input_payload FROM ff_exec_data WHERE "
                      f"execution_id IN ({', '.join('?' * len(ids))})", *ids)
    found = {r["execution_id"]: r["input_payload"] for r in rows}
    return {eid: bytes(found[eid]) if found.get(eid) is not None else b"" for eid in ids}


# -- scanners -----------------------------------------------------------------------

def due(scanner: Scanner, now: int, limit: int) -> Op:
    only = f" AND {scanner.only[0]} = ?" if scanner.only else ""
    params = (scanner.only[1],) if scanner.only else ()
    rows = yield all_(f"SELECT execution_id FROM ff_exec WHERE {scanner.clock} IS NOT NULL AND "
                      f"{scanner.clock} <= ?{only} ORDER BY {scanner.clock} LIMIT ?",
                      now, *params, limit)
    return [r["execution_id"] for r in rows]


def sweep(now: int, limit: int) -> Op:
    """Delete expired idempotency keys and forgotten workers."""
    yield from admission.forget_workers(now, limit)
    gone = yield exec_("DELETE FROM ff_idem WHERE (partition_id, namespace, idem_key) IN "
                       "(SELECT partition_id, namespace, idem_key FROM ff_idem WHERE "
                       "expires_at <= ? LIMIT ?)", now, limit)
    return gone
