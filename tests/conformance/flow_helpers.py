"""Helpers shared by the flow conformance tests (tests/conformance/test_flow*.py).

Everything here goes through the HTTP API, as a user would: spec/flows.md and
spec/http-api.md § Flows are the contract.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from appliance.core.partitions import flow_partition
from appliance.testing import Reply, eid_path

T = TypeVar("T")
JSON = {"content-type": "application/json"}
#: How long a poll for something done in the background may take before the test fails.
POLL_DEADLINE_S = 10.0
TERMINAL = {"completed", "failed", "cancelled", "expired", "skipped"}


# -- ids and paths --------------------------------------------------------------------------

def new_flow_id() -> str:
    return str(uuid.uuid4())


def new_edge_id() -> str:
    return str(uuid.uuid4())


def flow_url(flow_id: str, suffix: str = "") -> str:
    return f"/v1/flows/{flow_id}{suffix}"


def exec_url(execution_id: str, suffix: str = "") -> str:
    return f"/v1/executions/{eid_path(execution_id)}{suffix}"


def partition_of(ff, flow_id: str) -> int:
    """The flow's partition: CRC16 of its 16 bytes mod FF_FLOW_PARTITIONS."""
    return flow_partition(flow_id, ff.config.partitions.flow)


def partition_in_id(execution_id: str) -> int:
    """N of ``{fp:N}:<uuid>``."""
    assert execution_id.startswith("{fp:"), execution_id
    return int(execution_id[len("{fp:"):execution_id.index("}:")])


def id_on(partition: int) -> str:
    """A fresh execution id on ``partition``."""
    return f"{{fp:{partition}}}:{uuid.uuid4()}"


def other_partition(ff, partition: int) -> int:
    return (partition + 1) % ff.config.partitions.flow


def flow_id_on(ff, partition: int, exclude: Iterable[str] = ()) -> str:
    """A fresh flow id whose partition is ``partition`` (two flows side by side)."""
    taken = set(exclude)
    while True:
        flow_id = new_flow_id()
        if flow_id not in taken and partition_of(ff, flow_id) == partition:
            return flow_id


# -- errors ---------------------------------------------------------------------------------

def assert_error(reply: Reply, status: int, kind: str | Sequence[str], *,
                 retryable: bool | None = None, names: Iterable[str] = ()) -> dict:
    """``reply`` is the JSON error object ``{error, kind, retryable}`` with this status and
    kind (one of ``kind`` when several are acceptable); its message names each of
    ``names`` (what the caller has to fix)."""
    assert reply.status == status, reply
    body = reply.body
    assert isinstance(body, dict), reply
    assert {"error", "kind", "retryable"} <= set(body), reply
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    assert body["kind"] in kinds, reply
    assert isinstance(body["error"], str) and body["error"].strip(), reply
    assert isinstance(body["retryable"], bool), reply
    if retryable is not None:
        assert body["retryable"] is retryable, reply
    for text in names:
        assert text in body["error"], (text, reply)
    return body


def assert_client_error(reply: Reply, *, names: Iterable[str] = ()) -> dict:
    """Any 4xx, as a well-formed JSON error object naming ``names``: never a 500."""
    assert 400 <= reply.status < 500, reply
    return assert_error(reply, reply.status, reply.body["kind"] if isinstance(
        reply.body, dict) and "kind" in reply.body else "<missing kind>", names=names)


def assert_not_500(reply: Reply) -> None:
    """Accepted, or refused with a well-formed 4xx: never a server error."""
    if reply.status >= 300:
        assert_client_error(reply)


# -- building flows -------------------------------------------------------------------------

async def create_flow(ff, flow_id: str | None = None, **fields: Any) -> str:
    body = dict(fields)
    if flow_id is not None:
        body["flow_id"] = flow_id
    reply = await ff.call("POST", "/v1/flows", body)
    assert reply.status == 201, reply
    assert set(reply.body) == {"Created"}, reply
    return reply.body["Created"]["flow_id"]


def node(key: str, **fields: Any) -> dict[str, Any]:
    """A one-call DAG node: its key and any create-execution fields."""
    return {"key": key, **fields}


def laned(key: str, **fields: Any) -> dict[str, Any]:
    """A node on a lane of its own (named as its key), so a test claims exactly it."""
    return {"key": key, "lane_id": key, **fields}


def edge(spec: Any) -> dict[str, Any]:
    """``("a", "b")``, ``("a", "b", {"data_passing_ref": "result"})`` or a dict."""
    if isinstance(spec, Mapping):
        return dict(spec)
    upstream, downstream, *extra = spec
    return {"from": upstream, "to": downstream, **(extra[0] if extra else {})}


def dag_body(nodes: Iterable[Any], edges: Iterable[Any] = (),
             groups: Mapping[str, Any] | None = None, *, flow_id: str | None = None,
             **fields: Any) -> dict[str, Any]:
    """The body of a one-call DAG; a node given as a string is ``{"key": it}``."""
    body: dict[str, Any] = {
        "nodes": [n if isinstance(n, Mapping) else {"key": n} for n in nodes], **fields}
    edge_list = [edge(e) for e in edges]
    if edge_list:
        body["edges"] = edge_list
    if groups:
        body["groups"] = dict(groups)
    if flow_id is not None:
        body["flow_id"] = flow_id
    return body


@dataclass(slots=True)
class Dag:
    """A created one-call DAG: ``dag["a"]`` is node a's execution id."""

    flow_id: str
    ids: dict[str, str]
    graph_revision: int

    def __getitem__(self, key: str) -> str:
        return self.ids[key]

    def keys_of(self, execution_ids: Iterable[str]) -> list[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return [by_id[e] for e in execution_ids]


async def submit_dag(ff, nodes: Iterable[Any], edges: Iterable[Any] = (),
                     groups: Mapping[str, Any] | None = None, *,
                     flow_id: str | None = None, **fields: Any) -> Dag:
    """POST /v1/flows with ``nodes`` (and edges, groups): must be 201 Created."""
    body = dag_body(nodes, edges, groups, flow_id=flow_id, **fields)
    reply = await ff.call("POST", "/v1/flows", body)
    assert reply.status == 201, reply
    created = reply.body["Created"]
    assert set(created) == {"flow_id", "executions", "graph_revision"}, reply
    assert set(created["executions"]) == {n["key"] for n in body["nodes"]}, reply
    return Dag(created["flow_id"], created["executions"], created["graph_revision"])


async def add_member(ff, flow_id: str, execution_id: str) -> Reply:
    return await ff.call("POST", flow_url(flow_id, "/members"),
                         {"flow_id": flow_id, "execution_id": execution_id})


async def stage(ff, flow_id: str, upstream: str, downstream: str, expected: Any, *,
                edge_id: str | None = None, **fields: Any) -> Reply:
    body = {"flow_id": flow_id, "edge_id": edge_id or new_edge_id(),
            "upstream_execution_id": upstream, "downstream_execution_id": downstream,
            "expected_graph_revision": expected, **fields}
    return await ff.call("POST", flow_url(flow_id, "/edges"), body)


async def apply(ff, flow_id: str, edge_id: str, upstream: str, downstream: str,
                revision: Any, **fields: Any) -> Reply:
    body = {"flow_id": flow_id, "edge_id": edge_id, "upstream_execution_id": upstream,
            "downstream_execution_id": downstream, "graph_revision": revision, **fields}
    return await ff.call("POST", flow_url(flow_id, "/edges/apply"), body)


async def stage_ok(ff, flow_id: str, upstream: str, downstream: str, **fields: Any
                   ) -> tuple[str, int]:
    """Stage at the flow's current revision: (edge_id, new_graph_revision)."""
    revision = (await describe(ff, flow_id))["graph_revision"]
    edge_id = new_edge_id()
    reply = await stage(ff, flow_id, upstream, downstream, revision, edge_id=edge_id,
                        **fields)
    assert reply.status == 201, reply
    assert reply.body == {"Staged": {"edge_id": edge_id, "new_graph_revision": revision + 1}}
    return edge_id, revision + 1


async def link(ff, flow_id: str, upstream: str, downstream: str, **fields: Any) -> str:
    """Stage then apply ``upstream → downstream``; the edge id."""
    edge_id, revision = await stage_ok(ff, flow_id, upstream, downstream, **fields)
    reply = await apply(ff, flow_id, edge_id, upstream, downstream, revision, **fields)
    assert reply.status == 200 and "Applied" in reply.body, reply
    return edge_id


async def set_group(ff, flow_id: str, downstream: str, policy: Any, **fields: Any) -> Reply:
    body = {"flow_id": flow_id, "downstream_execution_id": downstream, "policy": policy,
            **fields}
    return await ff.call("POST", flow_url(flow_id, "/edge-groups"), body)


async def cancel_flow(ff, flow_id: str, policy: str = "cancel_all", *,
                      reason: str | None = None, wait: bool = False) -> Reply:
    body: dict[str, Any] = {"flow_id": flow_id, "cancellation_policy": policy}
    if reason is not None:
        body["reason"] = reason
    return await ff.call("POST", flow_url(flow_id, "/cancel"), body,
                         query={"wait": "true"} if wait else None)


# -- reads ----------------------------------------------------------------------------------

async def describe(ff, flow_id: str) -> dict[str, Any]:
    reply = await ff.call("GET", flow_url(flow_id))
    assert reply.status == 200, reply
    return reply.body


async def flow_state(ff, flow_id: str) -> str:
    return (await describe(ff, flow_id))["state"]


async def state_of(ff, execution_id: str) -> str:
    reply = await ff.call("GET", exec_url(execution_id, "/state"))
    assert reply.status == 200, reply
    return reply.body


async def states_of(ff, execution_ids: Iterable[str]) -> list[str]:
    return [await state_of(ff, e) for e in execution_ids]


def nonzero(counts: Mapping[str, int]) -> dict[str, int]:
    """``counts`` without zero entries (whether zeros are listed is not specified)."""
    return {k: v for k, v in counts.items() if v}


def group_of(flow: Mapping[str, Any], downstream: str) -> dict[str, Any]:
    [group] = [g for g in flow["groups"] if g["downstream_execution_id"] == downstream]
    return group


def edges_between(flow: Mapping[str, Any], upstream: str, downstream: str) -> list[dict]:
    return [e for e in flow["edges"] if e["upstream_execution_id"] == upstream
            and e["downstream_execution_id"] == downstream]


def counters(group: Mapping[str, Any]) -> tuple[int, int, int, str]:
    return group["succeeded"], group["failed"], group["skipped"], group["state"]


# -- workers --------------------------------------------------------------------------------

async def claim_one(ff, lane: str = "default", worker: str = "w1", **fields: Any
                    ) -> dict | None:
    """One task of ``lane``, or None when nothing is claimable."""
    return await ff.claim(lane=lane, worker=worker, **fields)


async def claim_many(ff, max_tasks: int = 1000, lane: str = "default", worker: str = "w1",
                     **fields: Any) -> list[dict]:
    body = {"lane_id": lane, "worker_instance_id": f"{worker}-1", "max_tasks": max_tasks,
            **fields}
    reply = await ff.call("POST", f"/v1/workers/{worker}/claim-task", body)
    assert reply.status in (200, 204), reply
    return reply.body["tasks"] if reply.status == 200 else []


async def claimable_ids(ff, lane: str = "default") -> set[str]:
    """Claims everything claimable on ``lane`` now (a probe: the leases are kept)."""
    return {t["execution_id"] for t in await claim_many(ff, lane=lane, worker="probe")}


async def complete(ff, task: Mapping[str, Any], **fields: Any) -> dict:
    reply = await ff.worker_op("complete", task, **fields)
    assert reply.status == 200, reply
    assert reply.body == {"Completed": {"execution_id": task["execution_id"],
                                        "public_state": "completed"}}, reply
    return reply.body


async def complete_all(ff, tasks: Sequence[Mapping[str, Any]], **fields: Any) -> None:
    """One batch complete of every task; each must be Completed."""
    reply = await ff.call("POST", "/v1/workers/w1/complete", {"items": [
        {"execution_id": t["execution_id"], "handle": t["handle"], **fields} for t in tasks]})
    assert reply.status == 200, reply
    for task, outcome in zip(tasks, reply.body["outcomes"], strict=True):
        assert "Completed" in outcome, (task["execution_id"], outcome)


async def fail_terminally(ff, task: Mapping[str, Any], reason: str = "boom") -> None:
    reply = await ff.worker_op("fail", task, failure_reason=reason)
    assert reply.status == 200, reply
    assert "TerminalFailed" in reply.body, reply


async def run_one(ff, lane: str = "default", **complete_fields: Any) -> str:
    """Claim the one claimable task of ``lane`` and complete it; its execution id."""
    task = await claim_one(ff, lane=lane)
    assert task is not None, f"nothing claimable on lane {lane!r}"
    await complete(ff, task, **complete_fields)
    return task["execution_id"]


def payload_of(task: Mapping[str, Any]) -> bytes:
    return base64.b64decode(task["input_payload_b64"])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def replay(ff, execution_id: str) -> Reply:
    return await ff.call("POST", exec_url(execution_id, "/replay"), {})


async def operator_cancel(ff, execution_id: str, reason: str = "operator") -> None:
    reply = await ff.call("POST", exec_url(execution_id, "/cancel"), {"reason": reason})
    assert reply.status == 200, reply


# -- polling --------------------------------------------------------------------------------

async def poll_until(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], *,
                     timeout: float = POLL_DEADLINE_S, what: str = "the condition") -> T:
    """Call ``probe`` until ``done(value)``; fail with the last value after ``timeout``."""
    last: Any = None
    with trio.move_on_after(timeout):
        while True:
            last = await probe()
            if done(last):
                return last
            await trio.sleep(0.01)
    raise AssertionError(f"{what} not reached within {timeout}s; last seen: {last!r}")


def raw(template: Mapping[str, Any], value: str) -> bytes:
    """``template`` as JSON bytes with the string ``"@"`` replaced by the raw JSON text
    ``value`` (to send NaN, 1e309, 2**64 … exactly as written)."""
    text = json.dumps(template)
    assert text.count('"@"') == 1, text
    return text.replace('"@"', value).encode()


# -- more building blocks ---------------------------------------------------------------------

async def new_member(ff, flow_id: str, **fields: Any) -> str:
    """POST /v1/executions with ``flow_id``: an execution minted on the flow's partition,
    a member from the same step."""
    reply = await ff.call("POST", "/v1/executions", {"flow_id": flow_id, **fields})
    assert reply.status == 201, reply
    return reply.body["Created"]["execution_id"]


async def solo_on(ff, partition: int, **fields: Any) -> str:
    """An execution on ``partition`` that belongs to no flow."""
    return await ff.create(execution_id=id_on(partition), **fields)


def edge_states(flow: Mapping[str, Any]) -> list[str]:
    return sorted(e["state"] for e in flow["edges"])


async def woken_by(ff, lane: str, action: Callable[[], Awaitable[Any]], *,
                   deadline_s: float = 5.0, wait_ms: int = 20_000) -> dict | None:
    """Start a claim on ``lane`` that long-polls, run ``action`` once it waits, and return
    what the claim got. Re-polling is off in the harness, so only a wake-up returns the
    claim before ``deadline_s`` (far less than ``wait_ms``)."""
    got: dict[str, Any] = {}

    async def waiter() -> None:
        got["task"] = await ff.claim(lane=lane, worker="sleeper", wait_ms=wait_ms)

    with trio.fail_after(deadline_s):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            while ff.service.work.waiting(lane) == 0:
                await trio.sleep(0.005)
            await action()
    return got["task"]

