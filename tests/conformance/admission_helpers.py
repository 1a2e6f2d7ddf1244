"""Helpers shared by the admission conformance tests (tests/conformance/test_budgets.py,
test_quotas.py, test_grants.py, test_workers_registry.py, test_explain.py,
test_admission_routing.py, test_admission_hostile.py).

Everything goes through the HTTP API, as a worker, a producer or an operator would:
spec/admission.md and spec/http-api.md § Admission are the contract.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from flow_helpers import JSON, exec_url, raw

from appliance.testing import Reply

BUDGETS = "/v1/budgets"
QUOTAS = "/v1/quotas"
WORKERS = "/v1/workers"

BUDGET_STATUS_KEYS = {
    "budget_id", "scope_type", "scope_id", "enforcement_mode", "on_hard_limit",
    "on_soft_limit", "reset_interval_ms", "usage", "hard_limits", "soft_limits", "breached",
    "breach_count", "soft_breach_count", "reset_count", "last_breach_at", "last_breach_dim",
    "next_reset_at", "created_at"}
QUOTA_STATUS_KEYS = {"quota_policy_id", "window_seconds", "max_requests_per_window",
                     "max_concurrent", "active", "admitted_in_window", "retry_after_ms",
                     "created_at"}
GRANT_KEYS = {"execution_id", "partition_key", "grant_key", "expires_at_ms"}
WORKER_KEYS = {"worker_id", "worker_instance_id", "lanes", "capabilities", "registered_at",
               "last_seen_at", "liveness_ttl_ms", "alive", "active_leases"}
EXPLAIN_KEYS = {"execution_id", "lane_id", "public_state", "runnable", "reason", "message",
                "details", "blockers"}
#: The lease-bound refusals a stale handle may get (spec/http-api.md, 409s).
LEASE_KINDS = ("stale_lease", "lease_expired", "lease_revoked", "execution_not_active")


# -- ids ------------------------------------------------------------------------------------

def new_id() -> str:
    return str(uuid.uuid4())


def fresh_lane(prefix: str = "l") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def ms(value: Any) -> int | None:
    """A time as answered: an integer or a decimal string (the original's), or null."""
    if value is None:
        return None
    assert not isinstance(value, bool), f"a time, not a bool: {value!r}"
    if isinstance(value, int):
        return value
    assert isinstance(value, str) and value.isdigit(), value
    return int(value)


# -- budgets --------------------------------------------------------------------------------

def budget_body(budget_id: str | None = None, dims: Mapping[str, int] | None = None,
                soft: Mapping[str, int] | None = None, **fields: Any) -> dict[str, Any]:
    """A create body: ``dims`` maps each dimension to its hard limit, ``soft`` to its soft
    limit (dimensions missing from ``soft`` get 0)."""
    dims = dict(dims if dims is not None else {"tokens": 100})
    body: dict[str, Any] = {"budget_id": budget_id or new_id(), "dimensions": list(dims),
                            "hard_limits": list(dims.values())}
    if soft is not None:
        body["soft_limits"] = [soft.get(d, 0) for d in dims]
    body.update(fields)
    return body


async def create_budget(ff, body: Mapping[str, Any]) -> Reply:
    return await ff.call("POST", BUDGETS, dict(body))


async def budget(ff, dims: Mapping[str, int] | None = None,
                 soft: Mapping[str, int] | None = None, **fields: Any) -> str:
    """A new budget (must be 201 Created): its id."""
    body = budget_body(None, dims, soft, **fields)
    reply = await create_budget(ff, body)
    assert reply.status == 201, reply
    assert reply.body == {"Created": {"budget_id": body["budget_id"]}}, reply
    return body["budget_id"]


async def budget_reply(ff, budget_id: str) -> Reply:
    return await ff.call("GET", f"{BUDGETS}/{budget_id}")


async def budget_status(ff, budget_id: str) -> dict[str, Any]:
    reply = await budget_reply(ff, budget_id)
    assert reply.status == 200, reply
    return reply.body


async def report(ff, budget_id: str, dims: Mapping[str, Any], **fields: Any) -> Reply:
    return await ff.call("POST", f"{BUDGETS}/{budget_id}/usage",
                         {"dimensions": dict(dims), **fields})


async def reported(ff, budget_id: str, dims: Mapping[str, Any], **fields: Any) -> Any:
    """A usage report that must be answered 200: its answer."""
    reply = await report(ff, budget_id, dims, **fields)
    assert reply.status == 200, reply
    return reply.body


async def reset(ff, budget_id: str, body: Any = None) -> Reply:
    return await ff.call("POST", f"{BUDGETS}/{budget_id}/reset", body)


async def exhaust(ff, budget_id: str, dim: str = "tokens", hard: int = 100) -> None:
    """Use ``dim`` up to its hard limit exactly (claims of attached work stop)."""
    answer = await reported(ff, budget_id, {dim: hard})
    assert answer == "Ok" or "SoftBreach" in answer, answer
    assert (await budget_status(ff, budget_id))["breached"] is True


# -- quotas ---------------------------------------------------------------------------------

def quota_body(quota_id: str | None = None, *, window_seconds: int = 0, rate: int = 0,
               concurrent: int = 0, **fields: Any) -> dict[str, Any]:
    return {"quota_policy_id": quota_id or new_id(), "window_seconds": window_seconds,
            "max_requests_per_window": rate, "max_concurrent": concurrent, **fields}


async def create_quota(ff, body: Mapping[str, Any]) -> Reply:
    return await ff.call("POST", QUOTAS, dict(body))


async def quota(ff, *, window_seconds: int = 0, rate: int = 0, concurrent: int = 0) -> str:
    """A new quota policy (must be 201 Created): its id."""
    body = quota_body(window_seconds=window_seconds, rate=rate, concurrent=concurrent)
    reply = await create_quota(ff, body)
    assert reply.status == 201, reply
    assert reply.body == {"Created": {"quota_policy_id": body["quota_policy_id"]}}, reply
    return body["quota_policy_id"]


async def quota_reply(ff, quota_id: str) -> Reply:
    return await ff.call("GET", f"{QUOTAS}/{quota_id}")


async def quota_status(ff, quota_id: str) -> dict[str, Any]:
    reply = await quota_reply(ff, quota_id)
    assert reply.status == 200, reply
    return reply.body


# -- executions with limits -----------------------------------------------------------------

def limits_policy(budgets: Sequence[str] = (), quota_id: str | None = None,
                  caps: Sequence[str] = (), **policy: Any) -> dict[str, Any]:
    out = dict(policy)
    if budgets:
        out["budget_ids"] = list(budgets)
    if quota_id is not None:
        out["quota_policy_id"] = quota_id
    if caps:
        out["routing_requirements"] = {"required_capabilities": list(caps)}
    return out


async def limited(ff, lane: str, budgets: Sequence[str] = (), quota_id: str | None = None,
                  caps: Sequence[str] = (), policy: Mapping[str, Any] | None = None,
                  **fields: Any) -> str:
    """An execution on ``lane`` naming these budgets, this quota and these capabilities."""
    return await ff.create(lane_id=lane, policy=limits_policy(budgets, quota_id, caps,
                                                               **(policy or {})), **fields)


async def in_order(ff, n: int, lane: str, budgets: Sequence[str] = (),
                   quota_id: str | None = None, **fields: Any) -> list[str]:
    """``n`` executions as ``limited`` makes them, a millisecond apart (FIFO among equal
    priorities is by ``created_at``, then id): their ids in claim order."""
    ids = []
    for _ in range(n):
        ids.append(await limited(ff, lane, budgets, quota_id, **fields))
        ff.clock.advance(1)
    return ids


async def create_many(ff, bodies: Sequence[Mapping[str, Any]]) -> list[str]:
    """One batch create (each item must be Created): the ids in order."""
    ids: list[str] = []
    for start in range(0, len(bodies), 500):
        reply = await ff.call("POST", "/v1/executions/batch",
                              {"executions": [dict(b) for b in bodies[start:start + 500]]})
        assert reply.status == 200, reply
        for outcome in reply.body["outcomes"]:
            assert "Created" in outcome, outcome
            ids.append(outcome["Created"]["execution_id"])
    return ids


# -- claims ---------------------------------------------------------------------------------

async def claim_reply(ff, lane: str, worker: str = "w1", instance: str | None = None,
                      **fields: Any) -> Reply:
    body = {"lane_id": lane, "worker_instance_id": instance or f"{worker}-1", **fields}
    return await ff.call("POST", f"/v1/workers/{worker}/claim-task", body)


async def claim(ff, lane: str, worker: str = "w1", instance: str | None = None,
                **fields: Any) -> dict[str, Any] | None:
    """claim-task: the task, or None on 204."""
    reply = await claim_reply(ff, lane, worker, instance, **fields)
    assert reply.status in (200, 204), reply
    return reply.body if reply.status == 200 else None


async def claim_id(ff, lane: str, worker: str = "w1", **fields: Any) -> str | None:
    task = await claim(ff, lane, worker, **fields)
    return None if task is None else task["execution_id"]


def claimed_at(task: Mapping[str, Any]) -> int:
    """The store's time of the claim (its lease started then)."""
    return task["lease_expires_at"] - task["lease_ttl_ms"]


async def complete(ff, task: Mapping[str, Any]) -> None:
    reply = await ff.worker_op("complete", dict(task))
    assert reply.status == 200 and "Completed" in reply.body, reply


# -- grants ---------------------------------------------------------------------------------

async def grant_reply(ff, lane: str, worker: str = "w1", instance: str | None = None,
                      grant_ttl_ms: Any = 5000, **fields: Any) -> Reply:
    body = {"lane_id": lane, "worker_instance_id": instance or f"{worker}-1",
            "grant_ttl_ms": grant_ttl_ms, **fields}
    return await ff.call("POST", f"{WORKERS}/{worker}/claim", body)


async def grant(ff, lane: str, worker: str = "w1", **fields: Any) -> dict[str, Any] | None:
    """A claim grant (200), or None (204)."""
    reply = await grant_reply(ff, lane, worker, **fields)
    assert reply.status in (200, 204), reply
    return reply.body if reply.status == 200 else None


async def redeem(ff, execution_id: str, worker: str = "w1", instance: str | None = None,
                 **fields: Any) -> Reply:
    body = {"worker_id": worker, "worker_instance_id": instance or f"{worker}-1", **fields}
    return await ff.call("POST", exec_url(execution_id, "/claim-grant"), body)


async def reclaim(ff, execution_id: str, lane: str, worker: str = "w2",
                  instance: str | None = None, grant_ttl_ms: Any = 5000,
                  **fields: Any) -> Reply:
    body = {"worker_id": worker, "worker_instance_id": instance or f"{worker}-1",
            "lane_id": lane, "grant_ttl_ms": grant_ttl_ms, **fields}
    return await ff.call("POST", exec_url(execution_id, "/reclaim"), body)


async def revoke(ff, execution_id: str) -> Reply:
    return await ff.call("POST", exec_url(execution_id, "/revoke-lease"), {"reason": "test"})


# -- workers --------------------------------------------------------------------------------

async def register(ff, worker: str, instance: str | None = None, **fields: Any) -> Reply:
    body = {"worker_instance_id": instance or f"{worker}-1", **fields}
    return await ff.call("POST", f"{WORKERS}/{worker}/register", body)


async def workers_page(ff, **query: Any) -> dict[str, Any]:
    reply = await ff.call("GET", WORKERS, query={k: str(v) for k, v in query.items()}
                          if query else None)
    assert reply.status == 200, reply
    assert set(reply.body) == {"workers", "next_cursor"}, reply
    return reply.body


async def worker_entry(ff, instance: str) -> dict[str, Any]:
    """The registry entry of ``instance`` (walking every page)."""
    after: str | None = None
    while True:
        page = await workers_page(ff, limit=1000, **({"after": after} if after else {}))
        for entry in page["workers"]:
            if entry["worker_instance_id"] == instance:
                return entry
        after = page["next_cursor"]
        if after is None:
            raise AssertionError(f"worker instance {instance!r} is not listed")


async def live_worker(ff, lane: str, worker: str = "live", caps: Sequence[str] = ()) -> None:
    """A live worker instance on ``lane`` (registered explicitly)."""
    reply = await register(ff, worker, lanes=[lane], capabilities=list(caps))
    assert reply.status in (200, 201), reply


# -- explain --------------------------------------------------------------------------------

async def explain_reply(ff, execution_id: str) -> Reply:
    return await ff.call("GET", exec_url(execution_id, "/explain"))


async def explain(ff, execution_id: str) -> dict[str, Any]:
    """``GET …/explain`` (200, its shape checked)."""
    reply = await explain_reply(ff, execution_id)
    assert reply.status == 200, reply
    body = reply.body
    assert set(body) == EXPLAIN_KEYS, reply
    assert body["execution_id"] == execution_id, reply
    assert isinstance(body["runnable"], bool), reply
    assert isinstance(body["message"], str) and body["message"].strip(), reply
    assert isinstance(body["details"], dict), reply
    assert isinstance(body["blockers"], list), reply
    for blocker in body["blockers"]:
        assert set(blocker) == {"reason", "message", "details"}, reply
    return body


def blocker_reasons(explained: Mapping[str, Any]) -> list[str]:
    return [b["reason"] for b in explained["blockers"]]


# -- time -----------------------------------------------------------------------------------

@asynccontextmanager
async def real_time(ff, step_s: float = 0.002) -> AsyncIterator[None]:
    """Move the harness's fake clock along with real time while inside (for tests that
    need a window to slide under concurrent load)."""
    base_ms = ff.clock.now_ms()
    start = trio.current_time()

    async def follow() -> None:
        while True:
            target = base_ms + int((trio.current_time() - start) * 1000)
            if target > ff.clock.now_ms():
                ff.clock.t = target
            await trio.sleep(step_s)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow)
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()


async def wait_for_waiters(ff, lane: str, n: int, timeout: float = 5.0) -> None:
    """Until ``n`` claims long-poll on ``lane``."""
    with trio.fail_after(timeout):
        while ff.service.work.waiting(lane) < n:
            await trio.sleep(0.002)


def max_in_window(times: Iterable[int], window_ms: int) -> tuple[int, int]:
    """The most entries in any half-open window [t, t + window_ms), and its start."""
    ts = sorted(times)
    best, at = 0, 0
    j = 0
    for i, t in enumerate(ts):
        while ts[j] <= t - window_ms:
            j += 1
        if i - j + 1 > best:
            best, at = i - j + 1, ts[j]
    return best, at


# -- hostile input ----------------------------------------------------------------------------

def problems_of(reply: Reply, what: str, names: Sequence[str] = (),
                status: int | Sequence[int] | None = None) -> list[str]:
    """Why ``reply`` is not a well-formed 4xx (of ``status`` when given) naming ``names``
    (empty: it is)."""
    if not 400 <= reply.status < 500:
        return [f"{what}: status {reply.status}: {reply.body!r:.300}"]
    wanted = (status,) if isinstance(status, int) else status
    if wanted is not None and reply.status not in wanted:
        return [f"{what}: status {reply.status}, expected {wanted}: {reply.body!r:.300}"]
    body = reply.body
    if not isinstance(body, Mapping) or not {"error", "kind", "retryable"} <= set(body):
        return [f"{what}: not an error object: {body!r:.300}"]
    if not isinstance(body["kind"], str) or not body["kind"]:
        return [f"{what}: no kind: {body!r:.300}"]
    if not isinstance(body["retryable"], bool):
        return [f"{what}: retryable is not a bool: {body!r:.300}"]
    if not isinstance(body["error"], str) or not body["error"].strip():
        return [f"{what}: empty message"]
    if len(body["error"]) > 2000:
        return [f"{what}: a {len(body['error'])}-character message (echoes the input?)"]
    missing = [n for n in names if n not in body["error"]]
    if missing:
        return [f"{what}: message does not name {missing}: {body['error']!r:.300}"]
    return []


async def post_raw(ff, path: str, data: bytes) -> Reply:
    return await ff.call("POST", path, data=data, headers=JSON)


async def walk(ff, path: str, base: Mapping[str, Any], fields: Mapping[str, list[str]],
               *, status: int | Sequence[int] | None = 400,
               name_field: bool = True) -> list[str]:
    """Each ``field`` of ``base`` replaced by each raw JSON text of its list; each must be
    refused (a 400 naming the field unless told otherwise)."""
    found: list[str] = []
    for field, values in fields.items():
        for value in values:
            template = {**base, field: "@"}
            reply = await post_raw(ff, path, raw(template, value))
            names = (field.split(".")[-1],) if name_field else ()
            found += problems_of(reply, f"{path} {field}={value[:40]}", names, status)
    return found


def common_bodies() -> list[bytes]:
    return [b"not json", b"[]", b'"text"', b"5", b"null", b"{", b'{"a":1}{', b"\xff\xfe",
            b"[" * 100_000 + b"]" * 100_000]


async def non_object_bodies(ff, path: str, *, empty_ok: bool = False) -> list[str]:
    """Bodies that are not a JSON object (and a non-JSON media type): each a 4xx."""
    found: list[str] = []
    bodies = common_bodies() + ([] if empty_ok else [b""])
    for data in bodies:
        found += problems_of(await post_raw(ff, path, data), f"{path} body={data[:20]!r}")
    reply = await ff.call("POST", path, data=b'{"x": 1}',
                          headers={"content-type": "text/plain"})
    found += problems_of(reply, f"{path} text/plain")
    return found


async def too_large(ff, path: str, base: Mapping[str, Any], size: int = 70_000) -> list[str]:
    """A body over the 64 KiB cap: 413 payload_too_large."""
    body = json.dumps({**base, "pad": "x" * size}).encode()
    reply = await post_raw(ff, path, body)
    found = problems_of(reply, f"{path} {size}-byte body", status=413)
    if not found and reply.body.get("kind") != "payload_too_large":
        found.append(f"{path} {size}-byte body: kind {reply.body.get('kind')!r}")
    return found


def check(found: list[str]) -> None:
    assert not found, f"{len(found)} problems:\n" + "\n".join(found)
