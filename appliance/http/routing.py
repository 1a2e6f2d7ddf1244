"""What every resource module's routes share: per-route body caps, typed bodies, ids."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from quart import Blueprint, request

from appliance.core.ids import parse_execution_id
from appliance.core.schema import Body

from . import bodies
from .guards import CONTROL, LARGE

B = TypeVar("B", bound=Body)
F = TypeVar("F", bound=Callable[..., Any])


class Routes:
    """Registers routes on blueprints, remembering each one's body cap."""

    LARGE = LARGE
    CONTROL = CONTROL

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
