"""Every request body field of every route, given any JSON value of any type (or
removed, or joined by an unknown field), either passes validation or is a 400 whose
message names the field — never a 5xx — on each backend; every answer is strict JSON."""

from __future__ import annotations

import copy
import itertools
import json
import os
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.http_fuzz import strict_json

pytestmark = pytest.mark.e2e

POLICY = {
    "retry_policy": {"max_retries": 2, "retryable_categories": ["net"],
                     "backoff": {"type": "exponential", "initial_delay_ms": 10,
                                 "max_delay_ms": 100, "multiplier": 2.0, "jitter": True}},
    "timeout_policy": {"attempt_timeout_ms": 60_000, "execution_deadline_ms": 600_000,
                       "max_reclaim_count": 5},
    "max_replay_count": 3, "max_signals_per_execution": 10, "dedup_window_ms": 1000,
    "routing_requirements": {"required_capabilities": ["gpu"]},
    "stream_policy": {"retention_ttl_ms": 100_000},
    "fallback_policy": {"tiers": [{"provider": "p", "model": "m", "timeout_ms": 5}]},
}
CREATE = {"execution_kind": "props", "lane_id": "props", "input_payload_b64": "aGk=",
          "priority": 5, "namespace": "ns", "tags": {"app.key": "v"},
          "payload_encoding": "json", "creator_identity": "me", "delay_until": 0,
          "execution_deadline_at": 253_402_300_000_000, "policy": POLICY,
          "idempotency_key": "idem"}
CLAIM = {"lane_id": "props-claim", "worker_instance_id": "w1-a", "capabilities": ["gpu"],
         "lease_ttl_ms": 30_000, "wait_ms": 0}

#: route → (method, path template, base body, what the path needs)
ROUTES: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "create": ("POST", "/v1/executions", CREATE, ""),
    "claim": ("POST", "/v1/workers/w1/claim-task", CLAIM, ""),
    "renew": ("POST", "/v1/executions/{eid}/renew", {"lease_ttl_ms": 30_000}, "lease"),
    "progress": ("POST", "/v1/executions/{eid}/progress",
                 {"progress_pct": 5, "progress_message": "m"}, "lease"),
    "complete": ("POST", "/v1/executions/{eid}/complete",
                 {"result_b64": "aGk=", "result_encoding": "json"}, "lease"),
    "fail": ("POST", "/v1/executions/{eid}/fail",
             {"failure_reason": "r", "failure_category": "net"}, "lease"),
    "delay": ("POST", "/v1/executions/{eid}/delay", {"delay_ms": 10}, "lease"),
    "cancel": ("POST", "/v1/executions/{eid}/cancel",
               {"reason": "r", "source": "operator_override"}, "execution"),
    "priority": ("PUT", "/v1/executions/{eid}/priority", {"new_priority": 3}, "execution"),
    "replay": ("POST", "/v1/executions/{eid}/replay", {}, "execution"),
    "revoke": ("POST", "/v1/executions/{eid}/revoke-lease", {"reason": "r"}, "execution"),
}

LANES = itertools.count()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**400),
                                                             max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(codec="utf-8") | st.sampled_from(["\x00", "\ud800", "\u202e"]),
              max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and list index below ``doc``, as paths."""
    found: list[tuple[Any, ...]] = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(
        doc, list) else ()
    for key, value in items:
        found.append(prefix + (key,))
        found += paths(value, prefix + (key,))
    return found


def dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def named(path: tuple[Any, ...]) -> list[str]:
    """Names a 400 may use for the field at ``path``: the field or its containing field."""
    keys = [p for p in path if isinstance(p, str)]
    return keys[-2:] or ["body"]


class Session:
    """Executions and leases the handle- and id-based routes act on."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def execution(self, lane: str = "props-target") -> str:
        reply = self.client.post("/v1/executions", json={"lane_id": lane,
                                                         "execution_kind": "target"})
        assert reply.status_code == 201, reply.text
        return reply.json()["Created"]["execution_id"]

    def lease(self) -> tuple[str, str]:
        lane = f"props-lease-{next(LANES)}"
        eid = self.execution(lane)
        reply = self.client.post("/v1/workers/w9/claim-task",
                                 json={"lane_id": lane, "worker_instance_id": "w9-a"})
        assert reply.status_code == 200, reply.text
        return eid, reply.json()["handle"]


def mutate(body: dict[str, Any], path: tuple[Any, ...], action: str, value: Any) -> None:
    parent = body
    for part in path[:-1]:
        parent = parent[part]
    if action == "remove" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


@settings(max_examples=int(os.environ.get("FF_TEST_PROPERTY_EXAMPLES", "150")), deadline=None,
          derandomize=not os.environ.get("FF_TEST_PROPERTY_RANDOM"),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_json_in_any_field_is_accepted_or_a_400_naming_it(live, data):
    with live.client() as client:
        session = Session(client)
        route = data.draw(st.sampled_from(sorted(ROUTES)), label="route")
        method, template, base, needs = ROUTES[route]
        body = copy.deepcopy(base)
        eid = None
        if needs == "lease":
            eid, handle = session.lease()
            body["handle"] = handle
        elif needs == "execution":
            eid = session.execution()
        candidates = paths(body)
        action = data.draw(st.sampled_from(["replace", "remove", "unknown"]
                                           if candidates else ["unknown"]), label="action")
        value = data.draw(json_values, label="value")
        if action == "unknown":
            path: tuple[Any, ...] = (data.draw(st.sampled_from(["zzz", "éé", "", "policy2"])),)
            if path[0] in body:
                path = ("zzz_unknown",)
            body[path[0]] = value
        else:
            path = data.draw(st.sampled_from(candidates), label="path")
            mutate(body, path, action, value)
        raw = json.dumps(body, allow_nan=True).encode()
        url = template.format(eid=quote(eid or "", safe=""))
        reply = client.request(method, url, content=raw,
                               headers={"content-type": "application/json"})
        assert reply.status_code < 500, (route, dotted(path), action, reply.status_code,
                                         reply.text)
        if reply.status_code == 204:
            return
        answer = strict_json(reply.content) if reply.headers.get(
            "content-type", "").startswith("application/json") else None
        if reply.status_code == 400:
            message = answer["error"]  # type: ignore[index]
            assert any(name in message for name in named(path)), (
                route, dotted(path), action, message)
