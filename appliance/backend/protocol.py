"""The Backend protocol every storage plugin implements.

Methods are async and called from Trio. Each operation is atomic (one
transaction, one FCALL). An operation a backend cannot do raises
``Unavailable(op)``; ``BackendBase`` supplies that default for every method,
and ``capabilities()`` lists what a subclass overrides. Outcomes are the JSON
objects of the HTTP API (e.g. ``{"Completed": {...}}``), so every backend
answers alike. See spec/plugins.md for the guide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from appliance.core.clock import Clock, SystemClock
from appliance.core.contracts import CancelArgs, ClaimArgs, CreateArgs, ListPage
from appliance.core.errors import Unavailable
from appliance.core.handle import Handle
from appliance.core.partitions import PartitionConfig
from appliance.core.record import Execution

Outcome = dict[str, Any]

#: Scanner names a backend serves through ``run_scanner``.
SCANNERS = ("lease_expiry", "delayed_promoter", "attempt_timeout", "execution_deadline",
            "retention_trimmer")


@dataclass(slots=True)
class BackendEnv:
    """What the appliance hands a backend at ``prepare``."""

    partitions: PartitionConfig = field(default_factory=PartitionConfig)
    clock: Clock = field(default_factory=SystemClock)
    retention_ms: int = 24 * 3600 * 1000


@dataclass(slots=True)
class ScanResult:
    processed: int = 0
    failed: dict[str, Exception] = field(default_factory=dict)
    lanes_woken: set[str] = field(default_factory=set)


class BackendBase:
    """Base class for backends: every operation defaults to ``Unavailable``."""

    #: The name users select with ``FF_BACKEND``.
    name: str = "unknown"
    #: File descriptors the backend may hold open at once (connections, files); the
    #: appliance keeps them free when it sizes its HTTP connection limit.
    store_connections: int = 8

    # -- lifecycle ------------------------------------------------------------
    def describe(self) -> str:
        """Where the data lives, for the startup log (never includes secrets)."""
        return self.name

    async def prepare(self, env: BackendEnv) -> None:
        """Migrate / load scripts / check partition counts. Refuse with ``StartupError``."""
        raise Unavailable("prepare", self.name)

    async def ping(self) -> None:
        raise Unavailable("ping", self.name)

    async def shutdown_prepare(self, grace_s: float) -> None:
        """Stop taking new long operations; in-flight ones may finish."""

    async def close(self) -> None:
        """Release connections and threads. Called once, last."""

    async def serve_work_notifications(self, notify: Callable[[str], None], *,
                                       task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Call ``notify(lane)`` when another appliance made work claimable.

        A single-process store has nothing to listen to and returns at once.
        """
        task_status.started()

    def capabilities(self) -> frozenset[str]:
        """The operations this backend implements (those it overrides)."""
        return frozenset(op for op in OPERATIONS
                         if getattr(type(self), op) is not getattr(BackendBase, op))

    # -- ingress and operator -------------------------------------------------
    async def create_execution(self, args: CreateArgs) -> Outcome:
        raise Unavailable("create_execution", self.name)

    async def get_execution(self, execution_id: str) -> Execution | None:
        raise Unavailable("get_execution", self.name)

    async def get_result(self, execution_id: str) -> tuple[Execution, bytes | None] | None:
        raise Unavailable("get_result", self.name)

    async def list_executions(self, partition: int, cursor: str | None, limit: int) -> ListPage:
        raise Unavailable("list_executions", self.name)

    async def cancel_execution(self, args: CancelArgs) -> Outcome:
        raise Unavailable("cancel_execution", self.name)

    async def change_priority(self, execution_id: str, priority: int) -> Outcome:
        raise Unavailable("change_priority", self.name)

    async def replay_execution(self, execution_id: str) -> Outcome:
        raise Unavailable("replay_execution", self.name)

    async def revoke_lease(self, execution_id: str, reason: str) -> Outcome:
        raise Unavailable("revoke_lease", self.name)

    # -- worker side ------------------------------------------------------------
    async def claim(self, args: ClaimArgs) -> tuple[Outcome, bytes] | None:
        """Lease the best claimable execution of the lane for this worker, or None."""
        raise Unavailable("claim", self.name)

    async def renew(self, handle: Handle, lease_ttl_ms: int | None) -> Outcome:
        raise Unavailable("renew", self.name)

    async def progress(self, handle: Handle, pct: int | None, message: str | None) -> Outcome:
        raise Unavailable("progress", self.name)

    async def complete(self, handle: Handle, result: bytes | None,
                       encoding: str | None) -> Outcome:
        raise Unavailable("complete", self.name)

    async def fail(self, handle: Handle, reason: str, category: str | None) -> Outcome:
        raise Unavailable("fail", self.name)

    async def delay(self, handle: Handle, delay_until: int) -> Outcome:
        raise Unavailable("delay", self.name)

    # -- scanners ---------------------------------------------------------------
    async def run_scanner(self, scanner: str, limit: int, skip: frozenset[str]) -> ScanResult:
        """One bounded batch of ``scanner`` (see ``SCANNERS``); ids in ``skip`` are passed over."""
        raise Unavailable("run_scanner", self.name)

    async def quarantine(self, execution_id: str, reason: str) -> bool:
        """End an execution a scanner keeps failing on (``transitions.quarantine``);
        True if it changed."""
        raise Unavailable("quarantine", self.name)


OPERATIONS = ("prepare", "ping", "create_execution", "get_execution", "get_result",
              "list_executions", "cancel_execution", "change_priority", "replay_execution",
              "revoke_lease", "claim", "renew", "progress", "complete", "fail", "delay",
              "run_scanner", "quarantine")

#: Type alias used in signatures: anything shaped like BackendBase.
Backend = BackendBase
