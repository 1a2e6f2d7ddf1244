"""What the benchmark scripts share: an httpx client that drops idle connections before
the appliance does, answers checked, ids in paths, percentiles."""

from __future__ import annotations

import statistics

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
