"""The operation registry: every state change is declared once, here in core.

An ``Operation`` names its args type, its pure rule (``rule(ex, args, ctx)``
mutates the execution and returns an ``Effect``, or ``None`` when there is
nothing to do, or raises a typed error), the Lua function that mirrors it, and
what a missing execution means. Stores apply ``Mutation``s through
``Backend.apply``; the service and HTTP layers dispatch through the registry.
Adding an operation is: args type, rule (registered with ``@operation``), Lua
function, route — see spec/plugins.md § Adding an operation.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from .effects import Effect
from .errors import ExecutionNotFound, FlowFabricError, InvalidHandle
from .handle import Fence
from .outcomes import Outcome
from .record import Execution

A = TypeVar("A")

DEFAULT_RETENTION_MS = 24 * 3600 * 1000


@dataclass(slots=True)
class Ctx:
    """What a rule may know besides the record and its args: the store's clock."""

    now: int
    retention_ms: int = DEFAULT_RETENTION_MS


class Missing(StrEnum):
    """What it means when the target execution does not exist."""

    NOT_FOUND = "not_found"  # 404 execution_not_found
    INVALID_HANDLE = "invalid_handle"  # 400: the handle names an execution that is gone
    IGNORE = "ignore"  # nothing to do (scanners, housekeeping)


@dataclass(frozen=True, slots=True)
class Operation(Generic[A]):
    name: str
    args: type[A]
    rule: Callable[[Execution, A, Ctx], Effect | None]
    lua: str
    missing: Missing = Missing.NOT_FOUND
    #: The answer's class when it is a plain (untagged) object.
    plain: type[Outcome] | None = None
    #: Lua source defining ``RULES.<name>``, for an operation whose mirror is not in the
    #: in-tree library (a plugin's own operation).
    lua_source: str | None = None

    def __call__(self, ex: Execution, args: A, ctx: Ctx) -> Effect | None:
        return self.rule(ex, args, ctx)

    def missing_error(self, execution_id: str) -> FlowFabricError | None:
        if self.missing is Missing.NOT_FOUND:
            return ExecutionNotFound.of(execution_id=execution_id)
        if self.missing is Missing.INVALID_HANDLE:
            return InvalidHandle.of(execution_id=execution_id)
        return None


#: Every operation by name.
OPERATIONS: dict[str, Operation[Any]] = {}


def operation(name: str, args: type[A], *, lua: str | None = None,
              missing: Missing = Missing.NOT_FOUND, plain: type[Outcome] | None = None,
              lua_source: str | None = None
              ) -> Callable[[Callable[[Execution, A, Ctx], Effect | None]], Operation[A]]:
    """Register ``rule`` as the operation ``name`` (its Lua function: ``ff_<name>``)."""
    def register(rule: Callable[[Execution, A, Ctx], Effect | None]) -> Operation[A]:
        if name in OPERATIONS:
            raise ValueError(f"operation {name!r} is already registered")
        op = Operation(name, args, rule, lua or f"ff_{name}", missing, plain, lua_source)
        OPERATIONS[name] = op
        return op
    return register


@dataclass(frozen=True, slots=True)
class Mutation:
    """One operation on one execution."""

    op: Operation[Any]
    execution_id: str
    args: Any


@dataclass(slots=True)
class Applied:
    """What applying one mutation did: its answer or its error, and the lanes it made
    claimable (wake-ups are derived from these, in one place)."""

    outcome: Outcome | None = None
    error: FlowFabricError | None = None
    woken: tuple[str, ...] = ()

    def unwrap(self) -> Outcome | None:
        if self.error is not None:
            raise self.error
        return self.outcome


def args_to_dict(args: Any) -> dict[str, Any]:
    """An args value as plain data (fences nested), for a store that runs the rule
    elsewhere; bytes fields are left to the caller."""
    out: dict[str, Any] = {}
    for f in fields(args):
        value = getattr(args, f.name)
        if isinstance(value, Fence):
            value = {"lease_id": value.lease_id, "lease_epoch": value.lease_epoch,
                     "attempt_id": value.attempt_id}
        elif is_dataclass(value):
            value = args_to_dict(value)
        out[f.name] = value
    return out


def jitter_draw() -> float:
    """The random draw a jittered backoff uses, taken by the caller so every store (and a
    replay of the same mutation) computes the same delay."""
    return random.random()


def unregister(name: str) -> None:
    """Remove an operation (tests that register their own)."""
    OPERATIONS.pop(name, None)


__all__ = ["OPERATIONS", "Applied", "Ctx", "Missing", "Mutation", "Operation", "args_to_dict",
           "jitter_draw", "operation", "unregister"]
