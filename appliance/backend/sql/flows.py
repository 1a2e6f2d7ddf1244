"""Flow operations for SQL stores (spec/flows.md), written once for every dialect.

Each public function is an operation generator run in one transaction. ``resolve``
is what the execution operations call, in their own transaction, when flow members
end (or a replay brings one back): the members' edges resolve, children are released,
skipped or their siblings cancelled, to any depth.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from appliance.core import flows as f
from appliance.core import transitions as rules
from appliance.core.effects import Effect
from appliance.core.errors import (
    CycleDetected,
    DependencyAlreadyExists,
    EdgeGroupPolicyFixed,
    EdgeNotFound,
    ExecutionInOtherFlow,
    ExecutionNotFound,
    ExecutionNotInFlow,
    FlowAlreadyTerminal,
    FlowFabricError,
    FlowNotFound,
    InvalidInput,
    SelfReferencingEdge,
    StaleGraphRevision,
)
from appliance.core.ids import fresh_uuids
from appliance.core.operations import Ctx
from appliance.core.record import EXECUTION_COLUMNS, Execution
from appliance.core.state import Phase

from .statements import Op, all_, exec_, later, notify, one

#: A cancel owed by a flow cancel is left to the live dispatch this long before the
#: cancel reconciler takes it over.
CANCEL_GRACE_MS = 5_000
#: Most steps one resolution takes (a bound on a pathological cascade; the dependency
#: reconciler finishes what is left).
RESOLVE_MAX_STEPS = 100_000


# -- rows -------------------------------------------------------------------------------------

def _insert(table: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> Op:
    """Multi-row INSERTs (within SQLite's bound-parameter limit)."""
    per = max(1, 32_000 // len(columns))
    for start in range(0, len(rows), per):
        chunk = rows[start:start + per]
        values = ", ".join(["(" + ", ".join("?" * len(columns)) + ")"] * len(chunk))
        yield later(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}",
                    *(row[c] for row in chunk for c in columns))


def _update(table: str, key: tuple[str, ...], record: Any, before: dict[str, Any]) -> Op:
    after = f.row_of(record)
    changed = {k: v for k, v in after.items() if before.get(k) != v}
    if changed:
        sets = ", ".join(f"{k} = ?" for k in changed)
        where = " AND ".join(f"{k} = ?" for k in key)
        yield later(f"UPDATE {table} SET {sets} WHERE {where}", *changed.values(),
                    *(after[k] for k in key))


def load_flow(flow_id: str, lock: str = "{lock}") -> Op:
    row = yield one(f"SELECT * FROM ff_flow WHERE flow_id = ?{lock}", flow_id)
    return f.Flow(**dict(row)) if row else None


def open_flow(flow_id: str) -> Op:
    flow = yield from load_flow(flow_id)
    if flow is None:
        raise FlowNotFound.of(flow_id=flow_id)
    if f.is_terminal(flow):
        raise FlowAlreadyTerminal.of(flow_id=flow_id, state=flow.state)
    return flow


def _load_ex(execution_id: str) -> Op:
    row = yield one("SELECT * FROM ff_exec WHERE execution_id = ?{lock}", execution_id)
    return Execution.from_row(row) if row else None


def _group(downstream: str) -> Op:
    row = yield one("SELECT * FROM ff_edge_group WHERE downstream_execution_id = ?{lock}",
                    downstream)
    return f.EdgeGroup(**dict(row)) if row else None


def _write_ex(ex: Execution, before: tuple[Any, ...], effect: Any = None) -> Op:
    from .ops import write  # ops imports this module

    return (yield from write(ex, before, effect or Effect()))


# -- creating ---------------------------------------------------------------------------------

def create_flow(sub: f.FlowSubmission, ctx: Ctx) -> Op:
    """A flow, and with nodes the whole DAG, all or nothing: ``(answer, woken lanes)``."""
    existing = yield from load_flow(sub.flow_id)
    if existing is not None:
        if not sub.dag:
            return f.FlowAlreadySatisfied(sub.flow_id), ()
        rows = yield all_("SELECT node_key, execution_id FROM ff_flow_node WHERE flow_id = ?",
                          sub.flow_id)
        return f.DagAlreadySatisfied(sub.flow_id, {r["node_key"]: r["execution_id"]
                                                   for r in rows},
                                     existing.graph_revision), ()
    flow = f.Flow(sub.flow_id, sub.partition_id, sub.flow_kind, sub.namespace, f.FlowState.OPEN,
                  graph_revision=len(sub.nodes) + len(sub.edges), node_count=len(sub.nodes),
                  edge_count=len(sub.edges), created_at=ctx.now, last_mutation_at=ctx.now)
    yield later(f"INSERT INTO ff_flow ({', '.join(f.FLOW_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(f.FLOW_COLUMNS))})", *f.row_of(flow).values())
    if not sub.dag:
        return f.FlowCreated(sub.flow_id), ()
    made, inbound = f.dag_records(sub, ctx)
    ids = [ex.execution_id for ex in made.values()]
    taken = (yield all_(f"SELECT execution_id FROM ff_exec WHERE execution_id IN "
                        f"({', '.join('?' * len(ids))})", *ids)) if ids else []
    if taken:
        raise InvalidInput(f"nodes: execution {taken[0]['execution_id']} already exists; "
                           f"leave execution_id out to have one minted")
    yield from _insert("ff_exec", EXECUTION_COLUMNS, [ex.to_row() for ex in made.values()])
    yield from _insert("ff_exec_data", ("execution_id", "input_payload"),
                       [{"execution_id": made[k].execution_id, "input_payload": a.input_payload}
                        for k, a in sub.nodes])
    yield from _insert("ff_flow_node", ("flow_id", "node_key", "execution_id"),
                       [{"flow_id": sub.flow_id, "node_key": k, "execution_id": ex.execution_id}
                        for k, ex in made.items()])
    edge_ids = iter(fresh_uuids(len(sub.edges)))
    yield from _insert("ff_edge", f.EDGE_COLUMNS, [f.row_of(f.Edge(
        next(edge_ids), sub.flow_id, made[e.upstream].execution_id,
        made[e.downstream].execution_id, e.dependency_kind, e.data_passing_ref,
        f.EdgeState.UNSATISFIED, ctx.now, applied_at=ctx.now)) for e in sub.edges])
    specs = dict(sub.groups)
    yield from _insert("ff_edge_group", f.GROUP_COLUMNS, [f.row_of(f.EdgeGroup(
        made[key].execution_id, sub.flow_id, spec.policy, spec.k, spec.on_satisfied, n=count))
        for key, count in inbound.items()
        for spec in [specs.get(key, f.GroupSpec())]])
    woken = []
    for ex in made.values():
        if ex.claimable:
            yield notify(ex.lane_id)
            woken.append(ex.lane_id)
    return f.DagCreated(sub.flow_id, {k: ex.execution_id for k, ex in made.items()},
                        flow.graph_revision), tuple(woken)


def join_on_create(flow: f.Flow, ctx: Ctx) -> Op:
    """An execution just created with ``flow_id`` joins ``flow`` (``open_flow``, read
    first in the same transaction)."""
    before = f.row_of(flow)
    flow.node_count += 1
    flow.graph_revision += 1
    flow.last_mutation_at = ctx.now
    yield from _update("ff_flow", ("flow_id",), flow, before)


def add_member(flow_id: str, execution_id: str, ctx: Ctx) -> Op:
    flow = yield from open_flow(flow_id)
    ex = yield from _load_ex(execution_id)
    if ex is None:
        raise ExecutionNotFound.of(execution_id=execution_id)
    if ex.partition_id != flow.partition_id:
        raise InvalidInput(f"execution_id: {execution_id} is on partition {ex.partition_id}, "
                           f"flow {flow_id} on {flow.partition_id}; a member must be created "
                           f"on its flow's partition (create it with flow_id)")
    if ex.flow_id == flow_id:
        return f.AlreadyMember(execution_id, flow.node_count)
    if ex.flow_id:
        raise ExecutionInOtherFlow.of(execution_id=execution_id, other_flow_id=ex.flow_id)
    before_ex = ex.snapshot()
    ex.flow_id = flow_id
    ex.last_mutation_at = ctx.now
    yield from _write_ex(ex, before_ex)
    before = f.row_of(flow)
    flow.node_count += 1
    flow.graph_revision += 1
    flow.last_mutation_at = ctx.now
    yield from _update("ff_flow", ("flow_id",), flow, before)
    return f.Added(execution_id, flow.node_count)


# -- edges ------------------------------------------------------------------------------------

def stage_edge(a: f.StageArgs, ctx: Ctx) -> Op:
    if a.upstream_execution_id == a.downstream_execution_id:
        raise SelfReferencingEdge.of(execution_id=a.upstream_execution_id)
    flow = yield from open_flow(a.flow_id)
    if flow.graph_revision != a.expected_graph_revision:
        raise StaleGraphRevision.of(flow_id=a.flow_id, graph_revision=flow.graph_revision,
                                    expected=a.expected_graph_revision)
    ends = (a.upstream_execution_id, a.downstream_execution_id)
    rows = yield all_("SELECT execution_id, flow_id FROM ff_exec WHERE execution_id IN (?, ?)",
                      *ends)
    members = {r["execution_id"] for r in rows if r["flow_id"] == a.flow_id}
    for eid in ends:
        if eid not in members:
            raise ExecutionNotInFlow.of(execution_id=eid, flow_id=a.flow_id)
    edges = yield all_("SELECT edge_id, upstream_execution_id, downstream_execution_id "
                       "FROM ff_edge WHERE flow_id = ?", a.flow_id)
    if any(e["edge_id"] == a.edge_id for e in edges):
        raise DependencyAlreadyExists.of(edge_id=a.edge_id, flow_id=a.flow_id)
    if _reaches(edges, a.downstream_execution_id, a.upstream_execution_id):
        raise CycleDetected.of(upstream=a.upstream_execution_id,
                               downstream=a.downstream_execution_id, flow_id=a.flow_id)
    edge = f.Edge(a.edge_id, a.flow_id, *ends, a.dependency_kind, a.data_passing_ref,
                  f.EdgeState.STAGED, ctx.now)
    yield from _insert("ff_edge", f.EDGE_COLUMNS, [f.row_of(edge)])
    before = f.row_of(flow)
    flow.graph_revision += 1
    flow.edge_count += 1
    flow.last_mutation_at = ctx.now
    yield from _update("ff_flow", ("flow_id",), flow, before)
    return f.Staged(a.edge_id, flow.graph_revision)


def _reaches(edges: list[Any], start: str, target: str) -> bool:
    out: dict[str, list[str]] = {}
    for e in edges:
        out.setdefault(e["upstream_execution_id"], []).append(e["downstream_execution_id"])
    seen, todo = {start}, [start]
    while todo:
        node = todo.pop()
        if node == target:
            return True
        for nxt in out.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def apply_edge(a: f.ApplyEdgeArgs, ctx: Ctx) -> Op:
    """Apply a staged edge: the child is held (unless running or finished); an upstream
    that already ended resolves it at once. ``(answer, woken lanes)``."""
    flow = yield from load_flow(a.flow_id)
    if flow is None:
        raise FlowNotFound.of(flow_id=a.flow_id)
    row = yield one("SELECT * FROM ff_edge WHERE flow_id = ? AND edge_id = ?{lock}",
                    a.flow_id, a.edge_id)
    edge = f.Edge(**dict(row)) if row else None
    if edge is None or (edge.upstream_execution_id, edge.downstream_execution_id) != (
            a.upstream_execution_id, a.downstream_execution_id):
        raise EdgeNotFound.of(edge_id=a.edge_id, flow_id=a.flow_id)
    f.check_apply(a, flow, edge)
    if edge.state != f.EdgeState.STAGED:
        return "AlreadyApplied", ()
    if f.is_terminal(flow):
        raise FlowAlreadyTerminal.of(flow_id=a.flow_id, state=flow.state)
    child = yield from _load_ex(edge.downstream_execution_id)
    if child is None:
        raise ExecutionNotFound.of(execution_id=edge.downstream_execution_id)
    f.check_not_delayed(child)
    group = yield from _group(child.execution_id)
    group_before = f.row_of(group) if group else None
    if group is None:
        group = f.new_group(child.execution_id, a.flow_id, f.GroupSpec())
    group.n += 1
    edge_before = f.row_of(edge)
    edge.state, edge.applied_at = f.EdgeState.UNSATISFIED, ctx.now
    yield from _update("ff_edge", ("flow_id", "edge_id"), edge, edge_before)
    yield from _save_group(group, group_before)
    unresolved = yield from _unresolved(child.execution_id)
    if group.state == f.GroupState.PENDING:
        before = child.snapshot()
        if f.gate(child, ctx, unresolved):
            yield from _write_ex(child, before)
    woken: list[str] = []
    upstream = yield from _load_ex(edge.upstream_execution_id)
    if upstream is not None and upstream.lifecycle_phase == Phase.TERMINAL:
        woken += yield from _resolve(deque([(upstream, [edge])]), ctx)
        unresolved = yield from _unresolved(child.execution_id)
    return f.EdgeApplied(unresolved), tuple(woken)


def _unresolved(downstream: str) -> Op:
    row = yield one("SELECT COUNT(*) AS n FROM ff_edge WHERE downstream_execution_id = ? "
                    "AND state = 'unsatisfied'", downstream)
    return int(row["n"])


def _save_group(group: f.EdgeGroup, before: dict[str, Any] | None) -> Op:
    if before is None:
        yield from _insert("ff_edge_group", f.GROUP_COLUMNS, [f.row_of(group)])
    else:
        yield from _update("ff_edge_group", ("downstream_execution_id",), group, before)


def set_group(flow_id: str, downstream: str, spec: f.GroupSpec, ctx: Ctx) -> Op:
    flow = yield from load_flow(flow_id)
    if flow is None:
        raise FlowNotFound.of(flow_id=flow_id)
    ex = yield from _load_ex(downstream)
    if ex is None or ex.flow_id != flow_id:
        raise ExecutionNotInFlow.of(execution_id=downstream, flow_id=flow_id)
    group = yield from _group(downstream)
    if group is not None and group.n > 0:
        raise EdgeGroupPolicyFixed.of(execution_id=downstream)
    if group is not None and (group.policy, group.k, group.on_satisfied) == (
            spec.policy, spec.k, spec.on_satisfied):
        return "AlreadySet"
    if group is not None:
        yield exec_("DELETE FROM ff_edge_group WHERE downstream_execution_id = ?", downstream)
    yield from _save_group(f.new_group(downstream, flow_id, spec), None)
    return f.GroupSet(downstream)


# -- resolution ---------------------------------------------------------------------------------

def resolve(ended: list[Execution], back: list[Execution], ctx: Ctx) -> Op:
    """Members that just ended resolve their outgoing edges; members a replay brought back
    are held again on their inbound edges. The lanes made claimable."""
    woken: list[str] = []
    for ex in back:
        woken += yield from _regate(ex, ctx)
    if ended:
        woken += yield from _resolve(deque((ex, None) for ex in ended), ctx)
    return woken


def _resolve(work: deque[tuple[Execution, list[f.Edge] | None]], ctx: Ctx) -> Op:
    woken: list[str] = []
    steps = 0
    while work and steps < RESOLVE_MAX_STEPS:
        upstream, edges = work.popleft()
        if edges is None:
            rows = yield all_("SELECT * FROM ff_edge WHERE upstream_execution_id = ? AND "
                              "state = 'unsatisfied'", upstream.execution_id)
            edges = [f.Edge(**dict(r)) for r in rows]
        for edge in edges:
            steps += 1
            woken += yield from _resolve_one(upstream, edge, work, ctx)
    return woken


def _resolve_one(upstream: Execution, edge: f.Edge,
                 work: deque[tuple[Execution, list[f.Edge] | None]], ctx: Ctx) -> Op:
    group = yield from _group(edge.downstream_execution_id)
    if group is None:  # applied edges always have one; a hand-edited store may not
        return []
    group_before, edge_before = f.row_of(group), f.row_of(edge)
    was_pending = group.state == f.GroupState.PENDING
    verdict = f.resolve_edge(edge, group, upstream.terminal_outcome, ctx.now)
    yield from _update("ff_edge", ("flow_id", "edge_id"), edge, edge_before)
    yield from _save_group(group, group_before)
    child = yield from _load_ex(edge.downstream_execution_id)
    if child is None:
        return []
    woken: list[str] = []
    if (was_pending and edge.state == f.EdgeState.SATISFIED and edge.data_passing_ref
            and upstream.has_result and child.lifecycle_phase != Phase.TERMINAL):
        yield later("UPDATE ff_exec_data SET input_payload = (SELECT result FROM ff_exec_data "
                    "WHERE execution_id = ?) WHERE execution_id = ?", upstream.execution_id,
                    child.execution_id)
    if verdict is None:
        return woken
    before = child.snapshot()
    if verdict == f.GroupState.SATISFIED:
        if f.release(child, ctx):
            woken += yield from _write_ex(child, before)
    else:
        effect = f.skip(child, ctx)
        if effect is not None:
            yield from _write_ex(child, before, effect)
            work.append((child, None))
    if group.on_satisfied == f.OnSatisfied.CANCEL_REMAINING:
        yield from _cancel_siblings(child.execution_id, f.sibling_reason(verdict), work, ctx)
    return woken


def _cancel_siblings(downstream: str, reason: str,
                     work: deque[tuple[Execution, list[f.Edge] | None]], ctx: Ctx) -> Op:
    rows = yield all_("SELECT * FROM ff_exec WHERE execution_id IN (SELECT "
                      "upstream_execution_id FROM ff_edge WHERE downstream_execution_id = ? AND "
                      "state <> 'staged') AND lifecycle_phase <> 'terminal' ORDER BY "
                      "execution_id{lock}", downstream)
    for row in rows:
        sibling = Execution.from_row(row)
        before = sibling.snapshot()
        effect = rules.cancel(sibling, rules.CancelArgs(reason=reason), ctx)
        yield from _write_ex(sibling, before, effect)
        work.append((sibling, None))


def _regate(ex: Execution, ctx: Ctx) -> Op:
    """A replayed member with inbound edges: its impossible edges are unsatisfied again,
    its group recounted and pending, the member held; edges whose upstream still has not
    succeeded resolve again at once."""
    group = yield from _group(ex.execution_id)
    if group is None or group.n == 0:
        return []
    rows = yield all_("SELECT * FROM ff_edge WHERE downstream_execution_id = ? AND state <> "
                      "'staged'", ex.execution_id)
    edges = [f.Edge(**dict(r)) for r in rows]
    for edge in edges:
        if edge.state == f.EdgeState.IMPOSSIBLE:
            before = f.row_of(edge)
            edge.state, edge.resolved_at = f.EdgeState.UNSATISFIED, None
            yield from _update("ff_edge", ("flow_id", "edge_id"), edge, before)
    group_before = f.row_of(group)
    f.recount(group, edges)
    yield from _save_group(group, group_before)
    before = ex.snapshot()
    if f.evaluate(group) == f.GroupState.SATISFIED or not f.gate(
            ex, ctx, sum(e.state == f.EdgeState.UNSATISFIED for e in edges)):
        return []
    yield from _write_ex(ex, before)
    work: deque[tuple[Execution, list[f.Edge] | None]] = deque()
    for edge in edges:
        if edge.state == f.EdgeState.UNSATISFIED:
            upstream = yield from _load_ex(edge.upstream_execution_id)
            if upstream is not None and upstream.lifecycle_phase == Phase.TERMINAL:
                work.append((upstream, [edge]))
    return (yield from _resolve(work, ctx))


def reconcile_dependencies(ctx: Ctx, limit: int) -> Op:
    """The safety net: applied edges still unresolved whose upstream has ended."""
    rows = yield all_("SELECT d.* FROM ff_edge d JOIN ff_exec u ON u.execution_id = "
                      "d.upstream_execution_id WHERE d.state = 'unsatisfied' AND "
                      "u.lifecycle_phase = 'terminal' LIMIT ?", limit)
    work: deque[tuple[Execution, list[f.Edge] | None]] = deque()
    for row in rows:
        edge = f.Edge(**dict(row))
        upstream = yield from _load_ex(edge.upstream_execution_id)
        if upstream is not None and upstream.lifecycle_phase == Phase.TERMINAL:
            work.append((upstream, [edge]))
    woken = yield from _resolve(work, ctx)
    return len(rows), woken


# -- cancelling a flow ----------------------------------------------------------------------

def cancel_flow(flow_id: str, reason: str, policy: str, ctx: Ctx) -> Op:
    """Flag the flow cancelled and write the cancels it owes to its backlog."""
    flow = yield from load_flow(flow_id)
    if flow is None:
        raise FlowNotFound.of(flow_id=flow_id)
    rows = yield all_("SELECT * FROM ff_exec WHERE flow_id = ? ORDER BY execution_id", flow_id)
    members = [Execution.from_row(r) for r in rows]
    if f.is_terminal(flow):
        return f.CancelHeader(flow.cancellation_policy or policy,
                              [m.execution_id for m in members][:f.CANCEL_ANSWER_MAX], [], True)
    before = f.row_of(flow)
    flow.state, flow.cancelled_at = f.FlowState.CANCELLED, ctx.now
    flow.cancel_reason, flow.cancellation_policy = reason, policy
    flow.last_mutation_at = ctx.now
    yield from _update("ff_flow", ("flow_id",), flow, before)
    owed = [m.execution_id for m in members if f.owes_cancel(policy, m)]
    yield from _insert("ff_flow_cancel", ("flow_id", "execution_id", "due_at"), [
        {"flow_id": flow_id, "execution_id": eid, "due_at": ctx.now + CANCEL_GRACE_MS}
        for eid in owed])
    return f.CancelHeader(policy, [m.execution_id for m in members], owed, False)


def cancel_members(flow_id: str, ids: list[str], reason: str, ctx: Ctx) -> Op:
    """Cancel members a flow cancel owes, each in the same step as its backlog entry goes;
    a member that already ended is done. The ids whose cancel failed."""
    failed: list[str] = []
    for eid in sorted(ids):
        ex = yield from _load_ex(eid)
        if ex is not None and ex.lifecycle_phase != Phase.TERMINAL:
            before = ex.snapshot()
            try:
                effect = rules.cancel(ex, rules.CancelArgs(reason=reason), ctx)
            except FlowFabricError:
                failed.append(eid)
                continue
            ex.cancelled_by = f.FLOW_CANCEL  # its end resolves nothing (spec/flows.md)
            yield from _write_ex(ex, before, effect)
        yield later("DELETE FROM ff_flow_cancel WHERE flow_id = ? AND execution_id = ?",
                    flow_id, eid)
    return failed


def owed_cancels(now: int, limit: int) -> Op:
    """Backlog entries past their grace: ``{flow_id: (reason, [ids])}``."""
    rows = yield all_("SELECT c.flow_id, c.execution_id, f.cancel_reason FROM ff_flow_cancel c "
                      "LEFT JOIN ff_flow f ON f.flow_id = c.flow_id WHERE c.due_at <= ? "
                      "ORDER BY c.due_at LIMIT ?", now, limit)
    owed: dict[str, tuple[str, list[str]]] = {}
    for r in rows:
        reason = r["cancel_reason"] or f.DEFAULT_CANCEL_REASON
        owed.setdefault(r["flow_id"], (reason, []))[1].append(r["execution_id"])
    return owed


# -- reads ------------------------------------------------------------------------------------

def describe(flow_id: str) -> Op:
    flow = yield from load_flow(flow_id, lock="")
    if flow is None:
        return None
    members = yield all_("SELECT execution_id, public_state FROM ff_exec WHERE flow_id = ? "
                         "ORDER BY execution_id", flow_id)
    # Keys apart and matched here: a join on execution_id would search the flow's nodes
    # once per member (ff_flow_node is keyed by node_key), quadratic in a large DAG.
    nodes = yield all_("SELECT node_key, execution_id FROM ff_flow_node WHERE flow_id = ?",
                       flow_id)
    keys = {n["execution_id"]: n["node_key"] for n in nodes}
    edges = yield all_("SELECT * FROM ff_edge WHERE flow_id = ? ORDER BY edge_id", flow_id)
    groups = yield all_("SELECT * FROM ff_edge_group WHERE flow_id = ? "
                        "ORDER BY downstream_execution_id", flow_id)
    return f.FlowView(flow, [{**dict(m), "node_key": keys.get(m["execution_id"])}
                             for m in members], [f.Edge(**dict(e)) for e in edges],
                      [f.EdgeGroup(**dict(g)) for g in groups])


def list_flows(namespace: str | None, cursor: str | None, limit: int) -> Op:
    where, params = "flow_id > ?", [cursor or ""]
    if namespace is not None:
        where += " AND namespace = ?"
        params.append(namespace)
    rows = yield all_(f"SELECT * FROM ff_flow WHERE {where} ORDER BY flow_id LIMIT ?",
                      *params, limit + 1)
    flows = [f.Flow(**dict(r)) for r in rows]
    more = len(flows) > limit
    flows = flows[:limit]
    return flows, (flows[-1].flow_id if more and flows else None)

