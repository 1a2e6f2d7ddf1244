"""Typed errors shared by every layer.

Every error a client can cause or see is a ``FlowFabricError`` carrying a
stable ``kind`` string, the HTTP ``status`` it maps to and whether the same
request may succeed if ``retryable``::

    FlowFabricError
    ├── InvalidInput          400  the request is wrong; the message says how
    │   └── InvalidHandle     400  a lease handle that does not decode
    ├── Unauthorized          401
    ├── NotFound              404
    ├── Conflict              409  the request is valid but the state forbids it
    │   ├── ExecutionNotActive     (carries the terminal outcome details)
    │   ├── StaleLease / LeaseExpired / LeaseRevoked
    │   └── Duplicate-free kinds: execution_not_eligible, execution_not_terminal, …
    ├── PayloadTooLarge       413
    ├── UnsupportedMediaType  415
    ├── ResourceExhausted     429  retryable
    ├── Unavailable           503  the backend cannot do this operation at all
    └── StoreUnavailable      503  retryable: the store went away (not "we closed it")
        └── ShuttingDown      503  retryable: this appliance is draining

``StartupError`` is separate: it stops the appliance before it serves.
"""

from __future__ import annotations

from typing import Any


class FlowFabricError(Exception):
    """Base of every typed error; ``kind`` is stable, the message is for humans."""

    status: int = 500
    kind: str = "internal"
    retryable: bool = False

    def __init__(self, message: str, *, kind: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        self.details = details or {}

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "kind": self.kind,
                                "retryable": self.retryable}
        body.update(self.details)
        return body


class InvalidInput(FlowFabricError):
    status = 400
    kind = "invalid_input"


class InvalidHandle(InvalidInput):
    kind = "invalid_handle"


class Unauthorized(FlowFabricError):
    status = 401
    kind = "unauthorized"


class NotFound(FlowFabricError):
    status = 404
    kind = "not_found"


class ExecutionNotFound(NotFound):
    kind = "execution_not_found"

    def __init__(self, execution_id: str) -> None:
        super().__init__(f"execution not found: {execution_id}")
        self.execution_id = execution_id


class Conflict(FlowFabricError):
    status = 409
    kind = "conflict"


class StaleLease(Conflict):
    kind = "stale_lease"


class LeaseExpired(Conflict):
    kind = "lease_expired"


class LeaseRevoked(Conflict):
    kind = "lease_revoked"


class ExecutionNotActive(Conflict):
    """The execution moved on; details say where, so a worker can reconcile."""

    kind = "execution_not_active"

    def __init__(self, execution_id: str, *, lifecycle_phase: str, terminal_outcome: str,
                 lease_epoch: int, attempt_id: str | None) -> None:
        super().__init__(
            f"execution {execution_id} is not active (lifecycle_phase={lifecycle_phase}, "
            f"terminal_outcome={terminal_outcome}); the lease this request names is no longer held",
            details={"lifecycle_phase": lifecycle_phase, "terminal_outcome": terminal_outcome,
                     "lease_epoch": lease_epoch, "attempt_id": attempt_id})


class PayloadTooLarge(FlowFabricError):
    status = 413
    kind = "payload_too_large"


class UnsupportedMediaType(FlowFabricError):
    status = 415
    kind = "unsupported_media_type"


class ResourceExhausted(FlowFabricError):
    status = 429
    kind = "resource_exhausted"
    retryable = True


class Unavailable(FlowFabricError):
    """The backend does not implement ``op``; ``capabilities()`` says so up front."""

    status = 503
    kind = "unavailable"

    def __init__(self, op: str, backend: str = "backend") -> None:
        super().__init__(f"{backend} does not support the operation {op!r}")
        self.op = op


class StoreUnavailable(FlowFabricError):
    """The store could not be reached or failed mid-operation; safe to retry."""

    status = 503
    kind = "store_unavailable"
    retryable = True


class ShuttingDown(StoreUnavailable):
    kind = "shutting_down"


class StartupError(Exception):
    """Refuses to start; the message names what to change."""
