"""Helpers shared by the suspension conformance tests (tests/conformance/test_suspension*.py,
test_signals.py, test_waitpoint_tokens.py).

Everything goes through the HTTP API, as a worker, an outside caller or an operator would:
spec/suspension.md and spec/http-api.md § Suspension and signals are the contract.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from flow_helpers import assert_error, exec_url

from appliance.testing import Reply

#: A token as minted: ``<kid>:<64 lowercase hex>``.
TOKEN = re.compile(r"^([A-Za-z0-9._\-]{1,64}):([0-9a-f]{64})$")
SECRET_2 = "ab" * 32
SECRET_3 = "cd" * 32
ROTATE = "/v1/admin/rotate-waitpoint-secret"
SATISFIED = "resume_condition_satisfied"
APPENDED = "appended_to_waitpoint"
DUPLICATE = "appended_to_waitpoint_duplicate"
NOT_IN_CONDITION = "signal_ignored_not_in_condition"
MATCHER_FAILED = "signal_ignored_matcher_failed"
BUFFERED = "buffered_for_pending_waitpoint"


# -- conditions (the wire forms) ------------------------------------------------------------

def single(key: str, name: str | None = None) -> dict[str, Any]:
    return {"Single": {"waitpoint_key": key,
                       "matcher": {"ByName": name} if name is not None else "Wildcard"}}


def all_of(*members: Any) -> dict[str, Any]:
    return {"Composite": {"kind": "AllOf", "members": list(members)}}


def count(n: Any, count_kind: str, keys: list[str], name: str | None = None) -> dict:
    body: dict[str, Any] = {"kind": "Count", "n": n, "count_kind": count_kind,
                            "waitpoints": keys}
    if name is not None:
        body["matcher"] = {"ByName": name}
    return {"Composite": body}


def nested(depth: int, key: str = "k") -> dict[str, Any]:
    """A condition whose composites nest ``depth`` deep around one Single."""
    condition: dict[str, Any] = single(key)
    for _ in range(depth):
        condition = all_of(condition)
    return condition


# -- workers --------------------------------------------------------------------------------

async def running(ff, **create: Any) -> tuple[str, dict[str, Any]]:
    """A fresh execution on its own lane, claimed: ``(execution_id, task)``."""
    lane = create.pop("lane_id", None) or f"l{uuid.uuid4().hex[:12]}"
    eid = await ff.create(lane_id=lane, **create)
    task = await ff.claim(lane=lane)
    assert task is not None and task["execution_id"] == eid, task
    return eid, task


async def suspend(ff, task: Mapping[str, Any], condition: Any, **fields: Any) -> Reply:
    return await ff.worker_op("suspend", task, resume_condition=condition, **fields)


async def suspended(ff, condition: Any = None, task: Mapping[str, Any] | None = None,
                    **fields: Any) -> tuple[str, dict[str, Any], dict[str, dict[str, str]]]:
    """Suspend (a fresh claimed execution unless ``task`` is given) on ``condition``
    (default: ``Single k ByName x``): ``(execution_id, task, {key: waitpoint})``, each
    waitpoint ``{waitpoint_id, waitpoint_key, token}``."""
    if task is None:
        _, task = await running(ff)
    reply = await suspend(ff, task, condition if condition is not None else single("k", "x"),
                          **fields)
    assert reply.status == 200 and "Suspended" in reply.body, reply
    body = reply.body["Suspended"]
    assert set(body) == {"suspension_id", "waitpoints"}, reply
    return task["execution_id"], dict(task), {w["waitpoint_key"]: w for w in body["waitpoints"]}


async def create_waitpoint(ff, task: Mapping[str, Any], key: str, **fields: Any) -> Reply:
    return await ff.worker_op("waitpoints", task, waitpoint_key=key, **fields)


async def pending_waitpoint(ff, task: Mapping[str, Any], key: str, **fields: Any
                            ) -> dict[str, Any]:
    reply = await create_waitpoint(ff, task, key, **fields)
    assert reply.status == 201, reply
    assert reply.headers.get("Cache-Control") == "no-store", reply.headers
    return reply.body["Created"]


async def claim_lane(ff, lane: str) -> dict[str, Any] | None:
    return await ff.claim(lane=lane)


# -- signals --------------------------------------------------------------------------------

def signal_body(wp: Mapping[str, str], name: str = "x", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"waitpoint_id": wp["waitpoint_id"], "waitpoint_token": wp["token"],
                            "signal_name": name, "signal_category": "external",
                            "source_type": "test", "source_identity": "alice"}
    body.update(fields)
    return body


async def signal(ff, target: str, wp: Mapping[str, str], name: str = "x",
                 **fields: Any) -> Reply:
    """POST …/signal to execution ``target`` (``fields`` may hold a body execution_id)."""
    return await ff.call("POST", exec_url(target, "/signal"),
                         signal_body(wp, name, **fields))


async def accepted(ff, target: str, wp: Mapping[str, str], name: str = "x",
                   **fields: Any) -> tuple[str, str]:
    """Signal, which must be Accepted: ``(signal_id, effect)``."""
    reply = await signal(ff, target, wp, name, **fields)
    assert reply.status == 200 and set(reply.body) == {"Accepted"}, reply
    return reply.body["Accepted"]["signal_id"], reply.body["Accepted"]["effect"]


async def effect_of(ff, target: str, wp: Mapping[str, str], name: str = "x",
                    **fields: Any) -> str:
    return (await accepted(ff, target, wp, name, **fields))[1]


# -- operator and reads ---------------------------------------------------------------------

async def resume(ff, execution_id: str, **fields: Any) -> Reply:
    return await ff.call("POST", exec_url(execution_id, "/resume"), fields)


async def approval(ff, execution_id: str, **fields: Any) -> Reply:
    return await ff.call("POST", exec_url(execution_id, "/approval"), fields)


async def rotate(ff, kid: Any, secret: Any = SECRET_2) -> Reply:
    return await ff.call("POST", ROTATE, {"new_kid": kid, "new_secret_hex": secret})


async def pending_list(ff, execution_id: str) -> Reply:
    return await ff.call("GET", exec_url(execution_id, "/pending-waitpoints"))


async def token_route(ff, execution_id: str, waitpoint_id: str) -> Reply:
    return await ff.call("GET", exec_url(execution_id, f"/waitpoints/{waitpoint_id}/token"))


async def public_state(ff, execution_id: str) -> str:
    return (await ff.info(execution_id))["public_state"]


async def vector(ff, execution_id: str) -> dict[str, str]:
    return (await ff.info(execution_id))["state_vector"]


def expect(reply: Reply, status: int, kind: str, **kw: Any) -> dict:
    return assert_error(reply, status, kind, **kw)


def altered(token: str) -> str:
    """``token`` with its last hex digit changed."""
    return token[:-1] + ("0" if token[-1] != "0" else "1")


def random_id() -> str:
    return str(uuid.uuid4())
