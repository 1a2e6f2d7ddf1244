"""Flows in core: the records, the edge-group policy, and the rules every store applies
when a member's dependencies change (spec/flows.md).

A store loads the rows, calls these pure functions, and writes back what changed, in
the same atomic step as the transition that caused it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from .effects import Effect
from .errors import InvalidInput
from .limits import U32_MAX
from .operations import Ctx
from .outcomes import Outcome
from .record import Execution
from .state import (
    AttemptState,
    Blocking,
    Eligibility,
    Ownership,
    Phase,
    PublicState,
    TerminalOutcome,
)
from .transitions import _clear_lease, _terminal, create, set_state

#: Most nodes in one flow submission.
DAG_MAX_NODES = 10_000
#: At most this many member ids in the answer to a repeated cancel.
CANCEL_ANSWER_MAX = 1000
#: A stored cancel reason for members of a flow cancel when the caller gave none.
DEFAULT_CANCEL_REASON = "flow_cancelled"
#: ``cancelled_by`` of members cancelled by a flow cancel (their ends resolve nothing:
#: every gated child is itself being cancelled).
FLOW_CANCEL = "flow_cancel"


class FlowState(StrEnum):
    OPEN = "open"
    CANCELLED = "cancelled"
    # derived on read only
    COMPLETED = "completed"
    FAILED = "failed"


class EdgeState(StrEnum):
    STAGED = "staged"
    UNSATISFIED = "unsatisfied"
    SATISFIED = "satisfied"
    IMPOSSIBLE = "impossible"


class GroupPolicy(StrEnum):
    ALL_OF = "all_of"
    ANY_OF = "any_of"
    QUORUM = "quorum"


class OnSatisfied(StrEnum):
    CANCEL_REMAINING = "cancel_remaining"
    LET_RUN = "let_run"


class GroupState(StrEnum):
    PENDING = "pending"
    SATISFIED = "satisfied"
    IMPOSSIBLE = "impossible"


class CancelPolicy(StrEnum):
    CANCEL_ALL = "cancel_all"
    CANCEL_PENDING = "cancel_pending"
    LET_RUN = "let_run"


SIBLING_SATISFIED = "sibling_quorum_satisfied"
SIBLING_IMPOSSIBLE = "sibling_quorum_impossible"


# -- records ------------------------------------------------------------------------------

@dataclass(slots=True)
class Flow:
    flow_id: str
    partition_id: int
    flow_kind: str
    namespace: str
    state: str
    graph_revision: int
    node_count: int
    edge_count: int
    created_at: int
    last_mutation_at: int
    cancelled_at: int | None = None
    cancel_reason: str | None = None
    cancellation_policy: str | None = None


@dataclass(slots=True)
class Edge:
    edge_id: str
    flow_id: str
    upstream_execution_id: str
    downstream_execution_id: str
    dependency_kind: str
    data_passing_ref: str | None
    state: str
    created_at: int
    applied_at: int | None = None
    resolved_at: int | None = None


@dataclass(slots=True)
class EdgeGroup:
    downstream_execution_id: str
    flow_id: str
    policy: str
    k: int
    on_satisfied: str
    n: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    state: str = GroupState.PENDING
    satisfied_at: int | None = None


FLOW_COLUMNS = tuple(f.name for f in fields(Flow))
EDGE_COLUMNS = tuple(f.name for f in fields(Edge))
GROUP_COLUMNS = tuple(f.name for f in fields(EdgeGroup))


def row_of(record: Flow | Edge | EdgeGroup) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in fields(record)}


# -- answers --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FlowCreated(Outcome):
    TAG = "Created"
    flow_id: str


@dataclass(frozen=True, slots=True)
class FlowAlreadySatisfied(Outcome):
    TAG = "AlreadySatisfied"
    flow_id: str


@dataclass(frozen=True, slots=True)
class Added(Outcome):
    TAG = "Added"
    execution_id: str
    new_node_count: int


@dataclass(frozen=True, slots=True)
class AlreadyMember(Outcome):
    TAG = "AlreadyMember"
    execution_id: str
    node_count: int


@dataclass(frozen=True, slots=True)
class Staged(Outcome):
    TAG = "Staged"
    edge_id: str
    new_graph_revision: int


@dataclass(frozen=True, slots=True)
class EdgeApplied(Outcome):
    TAG = "Applied"
    unsatisfied_count: int


# -- the edge-group policy -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class GroupSpec:
    policy: str = GroupPolicy.ALL_OF
    k: int = 0
    on_satisfied: str = OnSatisfied.LET_RUN


def group_spec(policy: Any, k: Any, on_satisfied: Any, where: str) -> GroupSpec:
    """A policy as a client wrote it, checked (``where`` names it in errors)."""
    if not isinstance(policy, str) or policy not in set(GroupPolicy):
        raise InvalidInput(f"{where}.policy: {policy!r} is not one of all_of, any_of, quorum")
    if on_satisfied is not None and (not isinstance(on_satisfied, str)
                                     or on_satisfied not in set(OnSatisfied)):
        raise InvalidInput(f"{where}.on_satisfied: {on_satisfied!r} is not one of "
                           f"cancel_remaining, let_run")
    if policy == GroupPolicy.QUORUM:
        if k is None:
            raise InvalidInput(f"{where}.k: a quorum needs k, the successes that release "
                               f"the node (1 or more)")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= U32_MAX:
            raise InvalidInput(f"{where}.k: must be an integer in 1..{U32_MAX}")
    elif k is not None:
        raise InvalidInput(f"{where}.k: only a quorum takes k")
    if policy == GroupPolicy.ALL_OF and on_satisfied not in (None, OnSatisfied.LET_RUN):
        raise InvalidInput(f"{where}.on_satisfied: all_of releases the node when every "
                           f"upstream succeeded; there is nothing left to cancel")
    return GroupSpec(policy, int(k or 0), on_satisfied or OnSatisfied.LET_RUN)


def new_group(downstream: str, flow_id: str, spec: GroupSpec) -> EdgeGroup:
    return EdgeGroup(downstream, flow_id, spec.policy, spec.k, spec.on_satisfied)


def needed(group: EdgeGroup) -> int:
    """The successes that satisfy the group."""
    if group.policy == GroupPolicy.ANY_OF:
        return 1
    if group.policy == GroupPolicy.QUORUM:
        return max(group.k, 1)
    return group.n


def evaluate(group: EdgeGroup) -> str:
    k = needed(group)
    if group.succeeded >= k:
        return GroupState.SATISFIED
    if group.failed + group.skipped > group.n - k:
        return GroupState.IMPOSSIBLE
    return GroupState.PENDING


def resolve_edge(edge: Edge, group: EdgeGroup, upstream_outcome: str, now: int) -> str | None:
    """Resolve ``edge`` by its upstream's end: the edge and the group's counters change;
    answers the group's new state when this edge made it fire, else None."""
    success = upstream_outcome == TerminalOutcome.SUCCESS
    edge.state = EdgeState.SATISFIED if success else EdgeState.IMPOSSIBLE
    edge.resolved_at = now
    if success:
        group.succeeded += 1
    elif upstream_outcome == TerminalOutcome.SKIPPED:
        group.skipped += 1
    else:
        group.failed += 1
    if group.state != GroupState.PENDING:
        return None  # once fired, a group only counts
    verdict = evaluate(group)
    if verdict == GroupState.PENDING:
        return None
    group.state = verdict
    if verdict == GroupState.SATISFIED:
        group.satisfied_at = now
    return verdict


def recount(group: EdgeGroup, edges: list[Edge]) -> None:
    """Counters from the group's applied edges, the group pending again (or still
    satisfied if every edge it needs is): after a replay turned the node's impossible
    edges back to unsatisfied."""
    group.succeeded = group.failed = group.skipped = 0
    group.n = len(edges)
    satisfied_at = group.satisfied_at
    group.state, group.satisfied_at = GroupState.PENDING, None
    for edge in edges:
        if edge.state == EdgeState.SATISFIED:
            group.succeeded += 1
    if evaluate(group) == GroupState.SATISFIED:  # e.g. a completed child replayed
        group.state, group.satisfied_at = GroupState.SATISFIED, satisfied_at


def sibling_reason(verdict: str) -> str:
    return SIBLING_SATISFIED if verdict == GroupState.SATISFIED else SIBLING_IMPOSSIBLE


# -- member transitions ----------------------------------------------------------------------

def gate(ex: Execution, ctx: Ctx, unresolved: int) -> bool:
    """Hold a runnable, unclaimed member until its dependencies resolve; True if it
    changed (a member running or finished is not held)."""
    if ex.lifecycle_phase != Phase.RUNNABLE or ex.ownership_state != Ownership.UNOWNED:
        return False
    set_state(ex, ctx, Phase.RUNNABLE, Ownership.UNOWNED, Eligibility.BLOCKED_BY_DEPENDENCIES,
              Blocking.WAITING_FOR_CHILDREN, TerminalOutcome.NONE,
              ex.attempt_state or AttemptState.PENDING_FIRST_ATTEMPT,
              f"{unresolved} dependenc{'y' if unresolved == 1 else 'ies'} unresolved")
    return True


def release(ex: Execution, ctx: Ctx) -> bool:
    """A held member whose group is satisfied becomes eligible; True if it changed."""
    if (ex.lifecycle_phase != Phase.RUNNABLE
            or ex.eligibility_state != Eligibility.BLOCKED_BY_DEPENDENCIES):
        return False
    attempt = ex.attempt_state
    if attempt in ("", AttemptState.NONE):
        attempt = AttemptState.PENDING_FIRST_ATTEMPT
    set_state(ex, ctx, Phase.RUNNABLE, Ownership.UNOWNED, Eligibility.ELIGIBLE_NOW,
              Blocking.WAITING_FOR_WORKER, TerminalOutcome.NONE, attempt)
    return True


def skip(ex: Execution, ctx: Ctx) -> Effect | None:
    """A member whose dependencies cannot be met ends ``skipped``; a running attempt
    ends with it (its worker's next call sees the execution gone)."""
    if ex.lifecycle_phase == Phase.TERMINAL:
        return None
    effect = Effect()
    if ex.attempt_state in (AttemptState.RUNNING_ATTEMPT, AttemptState.ATTEMPT_INTERRUPTED):
        effect.update_attempt(ex.current_attempt_index, attempt_state="ended_cancelled",
                              ended_at=ctx.now, failure_reason="dependency_impossible")
    _clear_lease(ex)
    _terminal(ex, ctx, TerminalOutcome.SKIPPED)
    if ex.total_attempt_count == 0:
        ex.attempt_state = AttemptState.NONE
    ex.blocking_detail = "a dependency can no longer be met"
    return effect


def check_apply(a: ApplyEdgeArgs, flow: Flow, edge: Edge) -> None:
    """What an apply call states about the edge must be true."""
    if a.graph_revision is not None and a.graph_revision > flow.graph_revision:
        raise InvalidInput(f"graph_revision: {a.graph_revision} is ahead of flow "
                           f"{flow.flow_id}'s revision {flow.graph_revision}")
    if a.dependency_kind is not None and a.dependency_kind != edge.dependency_kind:
        raise InvalidInput(f"dependency_kind: edge {edge.edge_id} was staged with "
                           f"{edge.dependency_kind!r}")
    if a.data_passing_ref is not None and a.data_passing_ref != edge.data_passing_ref:
        raise InvalidInput(f"data_passing_ref: edge {edge.edge_id} was staged with "
                           f"{edge.data_passing_ref!r}")


def check_not_delayed(child: Execution) -> None:
    """A delayed child cannot be held by an edge: holding it would drop its delay."""
    if child.eligibility_state == Eligibility.NOT_ELIGIBLE_UNTIL_TIME:
        raise InvalidInput(f"downstream_execution_id: {child.execution_id} is delayed until "
                           f"{child.delay_until}; an edge cannot hold it without losing the delay "
                           f"(create the downstream without delay_until)")


def owes_cancel(policy: str, ex: Execution) -> bool:
    """Whether a flow cancel with ``policy`` cancels this member."""
    if ex.lifecycle_phase == Phase.TERMINAL or policy == CancelPolicy.LET_RUN:
        return False
    if policy == CancelPolicy.CANCEL_PENDING:
        return ex.lifecycle_phase == Phase.RUNNABLE
    return True


# -- reads -------------------------------------------------------------------------------------

_FAILED = {PublicState.FAILED, PublicState.CANCELLED, PublicState.EXPIRED}
_ENDED = _FAILED | {PublicState.COMPLETED, PublicState.SKIPPED}


def derived_state(stored: str, counts: dict[str, int]) -> str:
    """``cancelled`` as stored; else ``completed``/``failed`` once every member ended."""
    if stored == FlowState.CANCELLED:
        return FlowState.CANCELLED
    total = sum(counts.values())
    if total and all(state in _ENDED for state, n in counts.items() if n):
        return FlowState.FAILED if any(counts.get(s) for s in _FAILED) else FlowState.COMPLETED
    return FlowState.OPEN


def is_terminal(flow: Flow) -> bool:
    return flow.state == FlowState.CANCELLED


# -- what the service hands a store ----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DagEdge:
    upstream: str  # node keys
    downstream: str
    dependency_kind: str = "success_only"
    data_passing_ref: str | None = None


@dataclass(frozen=True, slots=True)
class FlowSubmission:
    """A flow, and for a one-call DAG its nodes (key → create args, each minted on the
    flow's partition with ``flow_id`` set), edges and groups (by downstream key)."""

    flow_id: str
    partition_id: int
    flow_kind: str
    namespace: str
    nodes: tuple[tuple[str, Any], ...] = ()
    edges: tuple[DagEdge, ...] = ()
    groups: tuple[tuple[str, GroupSpec], ...] = ()
    #: A one-call DAG (``nodes`` given, even empty): answered with its executions map.
    dag: bool = False


@dataclass(frozen=True, slots=True)
class StageArgs:
    flow_id: str
    edge_id: str
    upstream_execution_id: str
    downstream_execution_id: str
    dependency_kind: str
    data_passing_ref: str | None
    expected_graph_revision: int


@dataclass(frozen=True, slots=True)
class ApplyEdgeArgs:
    flow_id: str
    edge_id: str
    upstream_execution_id: str
    downstream_execution_id: str
    #: What the caller believes (checked when given): the revision it staged against
    #: (not ahead of the flow's), and the staged edge's fields.
    graph_revision: int | None = None
    dependency_kind: str | None = None
    data_passing_ref: str | None = None


@dataclass(frozen=True, slots=True)
class DagCreated(Outcome):
    TAG = "Created"
    flow_id: str
    executions: dict[str, str]
    graph_revision: int


@dataclass(frozen=True, slots=True)
class DagAlreadySatisfied(Outcome):
    TAG = "AlreadySatisfied"
    flow_id: str
    executions: dict[str, str]
    graph_revision: int


@dataclass(frozen=True, slots=True)
class GroupSet(Outcome):
    TAG = "Set"
    downstream_execution_id: str


@dataclass(frozen=True, slots=True)
class CancelHeader:
    """What flagging a flow cancelled found: the policy in force (the stored one if the
    flow was already cancelled), every member, and the members owed a cancel now."""

    cancellation_policy: str
    members: list[str]
    owed: list[str]
    already: bool


@dataclass(frozen=True, slots=True)
class FlowView:
    """A flow as read: its record, members (``{execution_id, public_state, node_key}``,
    in id order), edges and groups."""

    flow: Flow
    members: list[dict[str, Any]]
    edges: list[Edge]
    groups: list[EdgeGroup]


def dag_records(sub: FlowSubmission, ctx: Ctx) -> tuple[dict[str, Execution], dict[str, int]]:
    """A one-call DAG's executions by node key, as every store writes them (members of the
    flow, held when they have inbound edges), and each node's inbound edge count."""
    made = {key: create(args, ctx) for key, args in sub.nodes}
    inbound: dict[str, int] = {}
    for e in sub.edges:
        inbound[e.downstream] = inbound.get(e.downstream, 0) + 1
    for key, ex in made.items():
        ex.flow_id = sub.flow_id
        if inbound.get(key):
            gate(ex, ctx, inbound[key])
    return made, inbound


def dag_order(keys: list[str], edges: tuple[DagEdge, ...]) -> list[str] | None:
    """The nodes of one cycle of the DAG, in edge order, or None if it has none."""
    inbound = {k: 0 for k in keys}
    out: dict[str, list[str]] = {k: [] for k in keys}
    for e in edges:
        inbound[e.downstream] += 1
        out[e.upstream].append(e.downstream)
    ready = [k for k in keys if inbound[k] == 0]
    seen = 0
    while ready:
        node = ready.pop()
        seen += 1
        for child in out[node]:
            inbound[child] -= 1
            if inbound[child] == 0:
                ready.append(child)
    if seen == len(keys):
        return None
    # Every node left has a predecessor left: walk back until one repeats.
    left = {k for k in keys if inbound[k] > 0}
    before: dict[str, list[str]] = {k: [] for k in left}
    for e in edges:  # one pass: a hostile DAG has up to 100,000 edges
        if e.downstream in left and e.upstream in left:
            before[e.downstream].append(e.upstream)
    path: dict[str, int] = {}  # node → its place on the walk
    node = min(left)
    while node not in path:
        path[node] = len(path)
        node = before[node][0]
    cycle = list(path)[path[node]:]
    cycle.reverse()
    return cycle
