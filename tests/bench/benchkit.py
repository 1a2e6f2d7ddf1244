"""What the benchmark scripts share: an httpx client that drops idle connections before
the appliance does, answers checked, ids in paths, percentiles."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import httpx

#: Idle connections are dropped before the appliance closes them (its keep-alive is 5 s).
KEEPALIVE_S = 2


class Refused(Exception):
    """An answer the bench did not expect (status and body)."""


def path(eid: str) -> str:
    return eid.replace("{", "%7B").replace("}", "%7D")


def pcts(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2)}


def client(connections: int = 1) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, keepalive_expiry=KEEPALIVE_S)
    return httpx.AsyncClient(timeout=60, limits=limits)


def expect(reply: httpx.Response, *statuses: int) -> httpx.Response:
    if reply.status_code not in statuses:
        raise Refused(f"{reply.request.method} {reply.request.url.path} → "
                      f"{reply.status_code} {reply.text[:300]}")
    return reply


def report(results: dict[str, Any], json_path: Path | None) -> int:
    """Write the results as JSON when asked; the exit status (1: a scenario failed)."""
    if json_path:
        json_path.write_text(json.dumps(results, indent=2))
    failed = any("error" in r or any("error" in s for s in r.values() if isinstance(s, dict))
                 for r in results.values())
    return 1 if failed else 0
