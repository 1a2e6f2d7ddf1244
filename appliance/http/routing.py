"""What every resource module's routes share: per-route body caps, typed bodies, ids."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from quart import Blueprint, request

from appliance.core.errors import FlowFabricError, InvalidInput
from appliance.core.ids import parse_execution_id
from appliance.core.schema import Body, convert

from . import bodies
from .guards import BATCH, CONTROL, LARGE, SIGNAL

log = logging.getLogger("flowfabric.http")

B = TypeVar("B", bound=Body)
F = TypeVar("F", bound=Callable[..., Any])


class Routes:
    """Registers routes on blueprints, remembering each one's body cap."""

    BATCH = BATCH
    LARGE = LARGE
    CONTROL = CONTROL
    SIGNAL = SIGNAL

    def __init__(self) -> None:
        self.caps: dict[str, int] = {}

    def route(self, bp: Blueprint, path: str, methods: list[str],
              cap: int = CONTROL) -> Callable[[F], F]:
        def register(fn: F) -> F:
            self.caps[f"{bp.name}.{fn.__name__}"] = cap
            bp.add_url_rule(path, fn.__name__, fn, methods=methods)
            return fn
        return register

    def cap(self) -> int:
        """The body cap of the route this request matched."""
        return self.caps.get(request.endpoint or "", CONTROL)

    async def body(self, kind: type[B]) -> B:
        return bodies.decode(await bodies.read(self.cap()), kind)

    @staticmethod
    def eid(raw: str) -> str:
        """An execution id from the path, checked."""
        return str(parse_execution_id(raw))


def query(allowed: set[str]) -> dict[str, str]:
    """The query string's fields; one the route does not know is a 400."""
    found = dict(request.args)
    unknown = sorted(set(found) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0][:64]!r} in query; remove it")
    return found


def items(raw: list[Any], kind: type[B], where: str) -> list[B | FlowFabricError]:
    """Each item of a batch decoded on its own: the item, or the 400 its errors name
    (``executions[3].priority: …``)."""
    out: list[B | FlowFabricError] = []
    for i, item in enumerate(raw):
        try:
            out.append(convert(item, kind, where=f"{where}[{i}]"))
        except FlowFabricError as exc:
            out.append(exc)
    return out


def error_object(exc: Exception) -> dict[str, Any]:
    """A batch item's failure as the single route's error answer."""
    if isinstance(exc, FlowFabricError):
        return exc.to_json()
    log.error("a batch item failed", exc_info=exc)
    return {"error": "internal error; the appliance log has the details", "kind": "internal",
            "retryable": False}


def in_batch(exc: FlowFabricError, where: str) -> dict[str, Any]:
    """An item's 400 as its error object, saying which item (msgspec's already do)."""
    body = exc.to_json()
    if not body["error"].startswith(where):
        body["error"] = f"{where}: {body['error']}"
    return body
