"""Validated arguments the service hands to a backend."""

from __future__ import annotations

from dataclasses import dataclass, field

from .handle import Fence
from .policy import ExecutionPolicy


@dataclass(frozen=True, slots=True)
class CreateArgs:
    execution_id: str
    partition_id: int
    namespace: str
    lane_id: str
    execution_kind: str
    input_payload: bytes
    payload_encoding: str | None
    priority: int
    creator_identity: str
    policy: ExecutionPolicy
    tags: dict[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    delay_until: int | None = None
    execution_deadline_at: int | None = None
    #: The flow it joins, in the same step (it must be minted on the flow's partition).
    flow_id: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimArgs:
    lane_id: str
    worker_id: str
    worker_instance_id: str
    capabilities: tuple[str, ...]
    lease_ttl_ms: int
    #: Lease up to this many executions in one claim.
    max_tasks: int = 1
    #: Given, the claim grants (``admission.grant``) instead of leasing.
    grant_ttl_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CancelArgs:
    execution_id: str
    reason: str
    source: str
    fence: Fence | None = None


@dataclass(frozen=True, slots=True)
class ListPage:
    executions: list[str]
    next_cursor: str | None
