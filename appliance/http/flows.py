"""Flow routes (spec/http-api.md § Flows): creation (a whole DAG in one call), members,
edges, edge groups, cancel, reads. Every input is checked here, before the store."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta
from quart import Blueprint, Response, request

from appliance.core import flows as f
from appliance.core.errors import (
    CycleInDag,
    FlowFabricError,
    InvalidInput,
    SelfReferencingEdge,
)
from appliance.core.ids import fresh_uuid, parse_execution_id, parse_uuid
from appliance.core.limits import MS_MAX
from appliance.core.partitions import flow_partition
from appliance.core.schema import Body, Str256, Str4096, Time, convert
from appliance.service import Service

from .errors import json_response
from .executions import CreateBody, create_args
from .routing import Routes

Revision = Annotated[int, Meta(ge=0, le=MS_MAX)]
#: Most edges in one flow submission.
DAG_MAX_EDGES = 100_000
MAX_LIST_LIMIT = 1000
FLOW_KIND_MAX_BYTES = 256
NAMESPACE_MAX = 256


class FlowBody(Body):
    flow_id: Any = None
    flow_kind: Annotated[str, Meta(min_length=1, max_length=256)] = "dag"
    namespace: Str256 = "default"
    nodes: Annotated[list[Any], Meta(max_length=f.DAG_MAX_NODES)] | None = None
    edges: Annotated[list[Any], Meta(max_length=DAG_MAX_EDGES)] | None = None
    groups: dict[str, Any] | None = None
    now: Time | None = None


class NodeBody(CreateBody, kw_only=True):
    key: Annotated[str, Meta(min_length=1, max_length=256)]


class EdgeItem(Body):
    upstream: str = msgspec.field(name="from")
    downstream: str = msgspec.field(name="to")
    dependency_kind: Str256 = "success_only"
    data_passing_ref: Str256 | None = None


class GroupItem(Body):
    policy: Any
    k: Any = None
    on_satisfied: Any = None


class MemberBody(Body):
    flow_id: Any
    execution_id: Any
    now: Time | None = None


class StageBody(Body):
    flow_id: Any
    edge_id: Any
    upstream_execution_id: Any
    downstream_execution_id: Any
    expected_graph_revision: Revision
    dependency_kind: Str256 = "success_only"
    data_passing_ref: Str256 | None = None
    now: Time | None = None


class ApplyBody(Body):
    flow_id: Any
    edge_id: Any
    upstream_execution_id: Any
    downstream_execution_id: Any
    #: The revision the caller staged against: it cannot be ahead of the flow's.
    graph_revision: Revision | None = None
    #: If given, must be the staged edge's.
    dependency_kind: Str256 | None = None
    data_passing_ref: Str256 | None = None
    now: Time | None = None


class GroupBody(Body):
    flow_id: Any
    downstream_execution_id: Any
    policy: Any
    k: Any = None
    on_satisfied: Any = None


class CancelFlowBody(Body):
    flow_id: Any
    cancellation_policy: Any
    reason: Str4096 = f.DEFAULT_CANCEL_REASON
    now: Time | None = None


def _flow_id(path_id: str, body_id: Any = ...) -> str:
    """The path's flow id; a body's ``flow_id`` (required where the body has one) must
    name the same flow."""
    flow_id = parse_uuid(path_id, "flow_id")
    if body_id is not ... and parse_uuid(body_id, "flow_id") != flow_id:
        raise InvalidInput("flow_id: the body's flow_id does not match the path's")
    return flow_id


def submission(body: FlowBody, partitions: int) -> f.FlowSubmission:
    """A flow submission, every node, edge and group checked (nothing reaches the store
    unless all of it is valid)."""
    flow_id = parse_uuid(body.flow_id, "flow_id") if body.flow_id is not None else fresh_uuid()
    if len(body.flow_kind.encode()) > FLOW_KIND_MAX_BYTES:
        raise InvalidInput(f"flow_kind: must be 1..{FLOW_KIND_MAX_BYTES} bytes of UTF-8, got "
                           f"{len(body.flow_kind.encode())}")
    partition = flow_partition(flow_id, partitions)
    if body.nodes is None:
        if body.edges or body.groups:
            raise InvalidInput("edges/groups: need the nodes they connect (nodes is missing)")
        return f.FlowSubmission(flow_id, partition, body.flow_kind, body.namespace)
    nodes: list[tuple[str, Any]] = []
    for i, raw in enumerate(body.nodes):
        where = f"nodes[{i}]"
        node = convert(raw, NodeBody, where)
        if node.flow_id is not None:
            raise InvalidInput(f"{where}.flow_id: nodes join the flow being submitted; leave "
                               f"it out")
        if node.idempotency_key is not None:
            raise InvalidInput(f"{where}.idempotency_key: not taken in a flow submission; "
                               f"submitting the same flow_id again is idempotent")
        try:
            args = create_args(msgspec.structs.replace(node, flow_id=flow_id), partitions)
        except FlowFabricError as exc:
            raise type(exc)(f"{where}: {exc.message}", details=exc.details) from None
        nodes.append((node.key, args))
    keys = [key for key, _ in nodes]
    known: set[str] = set()
    for key in keys:
        if key in known:
            raise InvalidInput(f"nodes: the key {key!r} is used twice; keys name nodes "
                               f"uniquely")
        known.add(key)
    edges: list[f.DagEdge] = []
    pairs: set[tuple[str, str]] = set()
    inbound: dict[str, int] = {}
    for i, raw in enumerate(body.edges or []):
        where = f"edges[{i}]"
        edge = convert(raw, EdgeItem, where)
        for end in (edge.upstream, edge.downstream):
            if end not in known:
                raise InvalidInput(f"{where}: {end!r} is not the key of a node")
        if edge.upstream == edge.downstream:
            raise SelfReferencingEdge(f"{where}: an edge cannot go from {edge.upstream!r} to "
                                      f"itself")
        if (edge.upstream, edge.downstream) in pairs:
            raise InvalidInput(f"{where}: the edge {edge.upstream!r} -> {edge.downstream!r} "
                               f"is given twice")
        pairs.add((edge.upstream, edge.downstream))
        inbound[edge.downstream] = inbound.get(edge.downstream, 0) + 1
        edges.append(f.DagEdge(edge.upstream, edge.downstream, edge.dependency_kind,
                               edge.data_passing_ref))
    for i, (key, args) in enumerate(nodes):
        if args.delay_until is not None and inbound.get(key):
            raise InvalidInput(f"nodes[{i}].delay_until: node {key!r} has inbound edges and "
                               f"runs when they allow; only a node without any can be delayed")
    groups: list[tuple[str, f.GroupSpec]] = []
    for key, raw in (body.groups or {}).items():
        where = f"groups[{key!r}]"
        if key not in known:
            raise InvalidInput(f"{where}: {key!r} is not the key of a node")
        if not inbound.get(key):
            raise InvalidInput(f"{where}: node {key!r} has no inbound edges to group")
        item = convert(raw, GroupItem, where)
        spec = f.group_spec(item.policy, item.k, item.on_satisfied, where)
        if spec.policy == f.GroupPolicy.QUORUM and spec.k > inbound[key]:
            raise InvalidInput(f"{where}.k: {spec.k} is more than the {inbound[key]} inbound "
                               f"edges of {key!r}; it could never be met")
        groups.append((key, spec))
    cycle = f.dag_order(keys, tuple(edges))
    if cycle is not None:
        raise CycleInDag.through(cycle)
    return f.FlowSubmission(flow_id, partition, body.flow_kind, body.namespace, tuple(nodes),
                            tuple(edges), tuple(groups), dag=True)


def _member_id(raw: Any, field: str, flow_id: str, partitions: int) -> str:
    eid = parse_execution_id(raw, field)
    expected = flow_partition(flow_id, partitions)
    if eid.partition != expected:
        raise InvalidInput(f"{field}: {eid} is on partition {eid.partition}, but flow {flow_id} "
                           f"lives on partition {expected}; a member is created on its "
                           f"flow's partition (create it with flow_id)")
    return str(eid)


def _cancel_policy(raw: Any) -> str:
    if not isinstance(raw, str) or raw not in set(f.CancelPolicy):
        raise InvalidInput(f"cancellation_policy: {raw!r} is not one of cancel_all, "
                           f"cancel_pending, let_run")
    return str(raw)


def _wait(query: dict[str, str]) -> bool:
    unknown = sorted(set(query) - {"wait"})
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r} in query; remove it")
    raw = query.get("wait", "false").lower()
    if raw not in ("true", "1", "false", "0", ""):
        raise InvalidInput(f"query.wait: {raw[:20]!r} is not true, false, 1 or 0")
    return raw in ("true", "1")


def view_answer(view: f.FlowView) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for m in view.members:
        counts[m["public_state"]] = counts.get(m["public_state"], 0) + 1
    flow = view.flow
    return {
        "flow_id": flow.flow_id, "flow_kind": flow.flow_kind, "namespace": flow.namespace,
        "state": f.derived_state(flow.state, counts), "graph_revision": flow.graph_revision,
        "node_count": flow.node_count, "edge_count": flow.edge_count,
        "created_at": flow.created_at, "last_mutation_at": flow.last_mutation_at,
        "cancelled_at": flow.cancelled_at, "cancel_reason": flow.cancel_reason,
        "cancellation_policy": flow.cancellation_policy, "counts": counts,
        "members": [{"execution_id": m["execution_id"], "public_state": m["public_state"],
                     "key": m.get("node_key")} for m in view.members],
        "edges": [{"edge_id": e.edge_id, "upstream_execution_id": e.upstream_execution_id,
                   "downstream_execution_id": e.downstream_execution_id,
                   "dependency_kind": e.dependency_kind, "data_passing_ref": e.data_passing_ref,
                   "state": e.state} for e in view.edges],
        "groups": [{"downstream_execution_id": g.downstream_execution_id, "policy": g.policy,
                    "k": g.k if g.policy == f.GroupPolicy.QUORUM else None,
                    "on_satisfied": g.on_satisfied, "n": g.n, "succeeded": g.succeeded,
                    "failed": g.failed, "skipped": g.skipped, "state": g.state}
                   for g in view.groups],
    }


def _answer(outcome: Any, status: int = 200) -> Response:
    return json_response(outcome if isinstance(outcome, str) else outcome.wire(), status)


def routes(service: Service, r: Routes) -> Blueprint:
    bp = Blueprint("flows", __name__)
    flows = service.flows
    partitions = service.config.partitions.flow

    @r.route(bp, "/v1/flows", ["POST"], r.BATCH)
    async def create_flow() -> Response:
        outcome = await flows.create(submission(await r.body(FlowBody), partitions))
        created = isinstance(outcome, (f.FlowCreated, f.DagCreated))
        return _answer(outcome, 201 if created else 200)

    @r.route(bp, "/v1/flows/<flow_id>/members", ["POST"])
    async def add_member(flow_id: str) -> Response:
        body = await r.body(MemberBody)
        fid = _flow_id(flow_id, body.flow_id)
        outcome = await flows.add_member(fid, _member_id(body.execution_id, "execution_id",
                                                         fid, partitions))
        return _answer(outcome, 201 if isinstance(outcome, f.Added) else 200)

    @r.route(bp, "/v1/flows/<flow_id>/edges", ["POST"])
    async def stage_edge(flow_id: str) -> Response:
        body = await r.body(StageBody)
        fid = _flow_id(flow_id, body.flow_id)
        up = _member_id(body.upstream_execution_id, "upstream_execution_id", fid, partitions)
        down = _member_id(body.downstream_execution_id, "downstream_execution_id", fid,
                          partitions)
        outcome = await flows.stage_edge(f.StageArgs(
            fid, parse_uuid(body.edge_id, "edge_id"), up, down, body.dependency_kind,
            body.data_passing_ref, body.expected_graph_revision))
        return _answer(outcome, 201)

    @r.route(bp, "/v1/flows/<flow_id>/edges/apply", ["POST"])
    async def apply_edge(flow_id: str) -> Response:
        body = await r.body(ApplyBody)
        fid = _flow_id(flow_id, body.flow_id)
        outcome = await flows.apply_edge(f.ApplyEdgeArgs(
            fid, parse_uuid(body.edge_id, "edge_id"),
            _member_id(body.upstream_execution_id, "upstream_execution_id", fid, partitions),
            _member_id(body.downstream_execution_id, "downstream_execution_id", fid,
                       partitions),
            body.graph_revision, body.dependency_kind, body.data_passing_ref))
        return _answer(outcome)

    @r.route(bp, "/v1/flows/<flow_id>/edge-groups", ["POST"])
    async def set_group(flow_id: str) -> Response:
        body = await r.body(GroupBody)
        fid = _flow_id(flow_id, body.flow_id)
        down = _member_id(body.downstream_execution_id, "downstream_execution_id", fid,
                          partitions)
        spec = f.group_spec(body.policy, body.k, body.on_satisfied, "edge group")
        return _answer(await flows.set_group(fid, down, spec))

    @r.route(bp, "/v1/flows/<flow_id>/cancel", ["POST"])
    async def cancel_flow(flow_id: str) -> Response:
        wait = _wait(dict(request.args))
        body = await r.body(CancelFlowBody)
        fid = _flow_id(flow_id, body.flow_id)
        return json_response(await flows.cancel(fid, body.reason,
                                                _cancel_policy(body.cancellation_policy), wait))

    @r.route(bp, "/v1/flows/<flow_id>", ["GET"])
    async def describe_flow(flow_id: str) -> Response:
        return json_response(view_answer(await flows.describe(_flow_id(flow_id))))

    @r.route(bp, "/v1/flows", ["GET"])
    async def list_flows() -> Response:
        query = dict(request.args)
        unknown = sorted(set(query) - {"namespace", "cursor", "limit"})
        if unknown:
            raise InvalidInput(f"unknown field {unknown[0]!r} in query; remove it")
        raw_limit = query.get("limit") or "50"
        if not (raw_limit.isascii() and raw_limit.isdigit()) or int(raw_limit) > MAX_LIST_LIMIT:
            raise InvalidInput(f"query.limit: must be an integer in 0..{MAX_LIST_LIMIT}")
        cursor = parse_uuid(query["cursor"], "cursor") if query.get("cursor") else None
        namespace = query.get("namespace")
        if namespace is not None and ("\x00" in namespace or len(namespace) > NAMESPACE_MAX):
            raise InvalidInput(f"query.namespace: must be at most {NAMESPACE_MAX} characters "
                               f"without NUL (\\u0000)")
        page, next_cursor = await flows.list(namespace, cursor, int(raw_limit))
        return json_response({"flows": [{"flow_id": fl.flow_id, "flow_kind": fl.flow_kind,
                                         "namespace": fl.namespace, "created_at": fl.created_at}
                                        for fl in page], "next_cursor": next_cursor})

    return bp
