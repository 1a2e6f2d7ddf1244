"""Typed errors shared by every layer: one class per ``kind``.

Every error a client can cause or see is a ``FlowFabricError`` carrying a
stable ``kind`` string, the HTTP ``status`` it maps to and whether the same
request may succeed if ``retryable``::

    FlowFabricError
    ├── InvalidInput          400  the request is wrong; the message says how
    │   ├── InvalidJson, InvalidPolicyJson, InvalidCapabilities, InvalidTagKey,
    │   │   InvalidHandle, FenceRequired, PartialFenceTriple
    ├── Unauthorized          401
    ├── NotFound              404  ExecutionNotFound, ResultNotFound
    ├── Conflict              409  the request is valid but the state forbids it
    │   ├── StaleLease, LeaseExpired, LeaseRevoked
    │   ├── ExecutionNotActive     (carries the terminal outcome details)
    │   └── ExecutionNotEligible, ExecutionNotTerminal, MaxReplaysExhausted
    ├── PayloadTooLarge       413
    ├── UnsupportedMediaType  415
    ├── ResourceExhausted     429  retryable
    ├── Unavailable           503  the backend cannot do this operation at all
    └── StoreUnavailable      503  retryable: the store went away (not "we closed it")
        └── ShuttingDown      503  retryable: this appliance is draining

A rule refusal that a store computes elsewhere (the Lua library) travels as
``(kind, details)`` and becomes the same error, with the same message, through
``error_from``: each class with a ``template`` builds its message from its
details, in one place for every backend. ``StartupError`` is separate: it
stops the appliance before it serves.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FlowFabricError(Exception):
    """Base of every typed error; ``kind`` is stable, the message is for humans."""

    status: ClassVar[int] = 500
    kind: ClassVar[str] = "internal"
    retryable: ClassVar[bool] = False
    #: ``str.format`` template of the message from the details (rule errors only).
    template: ClassVar[str] = ""
    #: Details that are part of the JSON answer, beside error/kind/retryable.
    exposed: ClassVar[tuple[str, ...]] = ()

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    @classmethod
    def of(cls, **details: Any) -> FlowFabricError:
        """The error of this kind, its message built from ``details`` by ``template``."""
        return cls(cls.template.format_map(_Shown(details)), details=details)

    def headers(self) -> dict[str, str]:
        """Headers the HTTP answer carries besides the body (e.g. ``retry-after``)."""
        return {}

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "kind": self.kind,
                                "retryable": self.retryable}
        body.update({k: self.details.get(k) for k in self.exposed})
        return body


class _Shown(dict):  # type: ignore[type-arg]
    """Details as a template sees them: a missing or None value reads as ``None``."""

    def __missing__(self, key: str) -> str:
        return "None"


# -- 400 ------------------------------------------------------------------------------------

class InvalidInput(FlowFabricError):
    status = 400
    kind = "invalid_input"


class InvalidSummaryPatch(InvalidInput):
    kind = "invalid_summary_patch"


class InvalidJson(InvalidInput):
    kind = "invalid_json"


class InvalidPolicyJson(InvalidInput):
    kind = "invalid_policy_json"


class InvalidCapabilities(InvalidInput):
    kind = "invalid_capabilities"


class CapabilityMismatch(InvalidInput):
    kind = "capability_mismatch"
    template = ("the worker lacks capabilities {missing} that execution {execution_id} "
                "requires")
    exposed = ("missing",)


class InvalidTagKey(InvalidInput):
    kind = "invalid_tag_key"


class InvalidHandle(InvalidInput):
    kind = "invalid_handle"
    template = ("handle names execution {execution_id}, which does not exist (or was purged "
                "after retention)")


class FenceRequired(InvalidInput):
    kind = "fence_required"
    template = ("fence_required: cancelling an active execution with source {source!r} needs "
                "the lease handle (or use source 'operator_override')")


class PartialFenceTriple(InvalidInput):
    kind = "partial_fence_triple"


class SelfReferencingEdge(InvalidInput):
    kind = "self_referencing_edge"
    template = ("an edge cannot go from execution {execution_id} to itself; name two different "
                "members")


class CycleInDag(InvalidInput):
    """A one-call DAG whose edges close a cycle: nothing was created."""

    kind = "cycle_detected"
    template = "the edges close a cycle through nodes {shown}; nothing was created"
    exposed = ("nodes",)
    #: The message names at most this many of the cycle's nodes (``nodes`` has them all).
    SHOWN = 20

    @classmethod
    def through(cls, nodes: list[str]) -> FlowFabricError:
        shown = repr(nodes[:cls.SHOWN])
        if len(nodes) > cls.SHOWN:
            shown = f"{shown[:-1]}, … ({len(nodes)} in all)]"
        return cls.of(nodes=nodes, shown=shown)


# -- waitpoint tokens (spec/suspension.md § Tokens): distinct kinds, never the token --------

class MissingToken(InvalidInput):
    kind = "missing_token"
    template = ("waitpoint_token: is required: pass the token the worker received when it "
                "created the waitpoint or suspended")


class InvalidToken(InvalidInput):
    kind = "invalid_token"
    template = ("waitpoint_token: is not a valid token for this waitpoint of this execution "
                "(the token is '<kid>:<64 hex>', exactly as minted)")


class UnknownKid(InvalidInput):
    kind = "unknown_kid"
    template = ("waitpoint_token: signed with key {kid!r}, which this store does not know (the "
                "token is forged, or its key was retired long ago)")


class TokenExpired(FlowFabricError):
    status = 403
    kind = "token_expired"
    template = ("waitpoint_token: signed with key {kid!r}, whose grace period after a rotation "
                "has ended; ask for a new token")


class LaneMismatch(InvalidInput):
    kind = "lane_mismatch"
    template = "lane_mismatch: execution {execution_id} is on lane {lane_id!r}, not {given!r}"


class InvalidResumeCondition(InvalidInput):
    kind = "invalid_resume_condition"


# -- 401, 404 -------------------------------------------------------------------------------

class Unauthorized(FlowFabricError):
    status = 401
    kind = "unauthorized"


class NotFound(FlowFabricError):
    status = 404
    kind = "not_found"


class ExecutionNotFound(NotFound):
    kind = "execution_not_found"
    template = "execution not found: {execution_id}"


class ResultNotFound(NotFound):
    kind = "result_not_found"


class BudgetNotFound(NotFound):
    kind = "budget_not_found"
    template = "budget {budget_id} not found"


class QuotaNotFound(NotFound):
    kind = "quota_not_found"
    template = "quota policy {quota_policy_id} not found"


class FlowNotFound(NotFound):
    kind = "flow_not_found"
    template = "flow not found: {flow_id}"


class EdgeNotFound(NotFound):
    kind = "edge_not_found"
    template = ("edge {edge_id} was not staged in flow {flow_id} between these executions; "
                "stage it first (POST /v1/flows/{flow_id}/edges)")


class WaitpointNotFound(NotFound):
    kind = "waitpoint_not_found"
    template = ("waitpoint {waitpoint_id} of execution {execution_id} not found (unknown, "
                "consumed or expired)")


class SummaryNotFound(NotFound):
    kind = "summary_not_found"


# -- 409 ------------------------------------------------------------------------------------

class Conflict(FlowFabricError):
    status = 409
    kind = "conflict"


class StaleLease(Conflict):
    kind = "stale_lease"
    template = ("stale lease for {execution_id}: the handle holds epoch {held}, the current "
                "lease is epoch {lease_epoch}")


class LeaseExpired(Conflict):
    kind = "lease_expired"
    template = ("the lease on {execution_id} expired at {lease_expires_at}; renew before "
                "lease_expires_at")


class LeaseRevoked(Conflict):
    kind = "lease_revoked"
    template = "the lease on {execution_id} was revoked ({reason}); stop working on it"


class ExecutionNotActive(Conflict):
    """The execution moved on; details say where, so a worker can reconcile."""

    kind = "execution_not_active"
    template = ("execution {execution_id} is not active (lifecycle_phase={lifecycle_phase}, "
                "terminal_outcome={terminal_outcome}); the lease this request names is no "
                "longer held")
    exposed = ("lifecycle_phase", "terminal_outcome", "lease_epoch", "attempt_id")


class InvalidClaimGrant(Conflict):
    kind = "invalid_claim_grant"
    retryable = True
    template = "execution {execution_id} holds no claim grant for worker {worker_id}"


class ClaimGrantExpired(Conflict):
    kind = "claim_grant_expired"
    retryable = True
    template = "the claim grant of execution {execution_id} expired at {expires_at}"


class BudgetNotAttached(Conflict):
    kind = "budget_not_attached"
    template = ("execution {execution_id} does not name budget {budget_id} in its "
                "policy.budget_ids")


class InstanceIdReassigned(Conflict):
    kind = "instance_id_reassigned"
    template = ("worker instance {worker_instance_id} is registered under worker "
                "{registered_worker_id}, not {worker_id}; use a new instance id")


class ExecutionNotEligible(Conflict):
    kind = "execution_not_eligible"
    template = ("execution {execution_id} is {public_state}; only waiting executions can be "
                "re-prioritised")


class ExecutionNotTerminal(Conflict):
    kind = "execution_not_terminal"
    template = ("execution {execution_id} is {public_state}; only terminal executions can be "
                "replayed")


class MaxReplaysExhausted(Conflict):
    kind = "max_replays_exhausted"
    template = ("execution {execution_id} was already replayed {replay_count} times (policy "
                "max_replay_count={limit})")


class FlowAlreadyTerminal(Conflict):
    kind = "flow_already_terminal"
    template = "flow {flow_id} is {state}: it takes no new members or edges"


class StaleGraphRevision(Conflict):
    kind = "stale_graph_revision"
    retryable = True
    template = ("flow {flow_id} is at graph_revision {graph_revision}, not {expected}; read it "
                "again (GET /v1/flows/{flow_id}) and retry")
    exposed = ("graph_revision",)


class ExecutionNotInFlow(Conflict):
    kind = "execution_not_in_flow"
    template = "execution {execution_id} is not a member of flow {flow_id}; add it first"


class ExecutionInOtherFlow(Conflict):
    kind = "execution_in_other_flow"
    template = ("execution {execution_id} is a member of flow {other_flow_id}; an execution "
                "belongs to one flow")
    exposed = ("other_flow_id",)


class CycleDetected(Conflict):
    kind = "cycle_detected"
    template = ("the edge {upstream} -> {downstream} would close a cycle in flow {flow_id}")


class DependencyAlreadyExists(Conflict):
    kind = "dependency_already_exists"
    template = "edge {edge_id} already exists in flow {flow_id}; choose a new edge_id"


class EdgeGroupPolicyFixed(Conflict):
    kind = "edge_group_policy_fixed"
    template = ("the edge group of {execution_id} already has applied edges; its policy is "
                "set before the first edge is applied")


class RotationConflict(Conflict):
    kind = "rotation_conflict"
    template = ("kid {kid!r} is already installed with a different secret; choose a new kid "
                "(a kid names one secret for ever)")


class AlreadySuspended(Conflict):
    kind = "already_suspended"
    template = "execution {execution_id} is already suspended"


class WaitpointClosed(Conflict):
    kind = "waitpoint_closed"
    template = "waitpoint {waitpoint_id} is closed ({close_reason}); it takes no more signals"
    exposed = ("close_reason",)


class TargetNotSignalable(Conflict):
    kind = "target_not_signalable"
    template = ("execution {execution_id} is {public_state}; it takes no signals")
    exposed = ("public_state",)


class SignalLimitExceeded(Conflict):
    kind = "signal_limit_exceeded"
    template = ("execution {execution_id} already holds {count} signals (limit "
                "max_signals_per_execution={limit})")


class SignalIdInUse(Conflict):
    kind = "signal_id_in_use"
    template = ("signal_id: {signal_id} was already used for another signal to execution "
                "{execution_id}; leave it out to have one minted")


class ExecutionNotSuspended(Conflict):
    kind = "execution_not_suspended"
    template = "execution {execution_id} is {public_state}, not suspended"
    exposed = ("public_state",)


class WaitpointAlreadyExists(Conflict):
    kind = "waitpoint_already_exists"
    template = ("execution {execution_id} already has an open waitpoint with key "
                "{waitpoint_key!r} in this attempt ({waitpoint_id}); use it, or choose "
                "another key")
    exposed = ("waitpoint_id",)


class PendingWaitpointExpired(Conflict):
    kind = "pending_waitpoint_expired"
    template = ("waitpoint {waitpoint_id} (key {waitpoint_key!r}) expired at {expires_at} "
                "before the suspend; create a new one")


class StaleKid(Conflict):
    """The appliance minted with a kid the store has since rotated away (the service
    re-reads the keystore and retries once)."""

    kind = "stale_kid"
    retryable = True
    template = "the waitpoint signing key rotated (now {current!r}); retry"


# -- 413 … 503 ------------------------------------------------------------------------------

class PayloadTooLarge(FlowFabricError):
    status = 413
    kind = "payload_too_large"
    exposed = ("limit_bytes", "route")


class FrameTooLarge(PayloadTooLarge):
    kind = "frame_too_large"
    exposed = ("limit_bytes", "index")


class StreamTooLarge(PayloadTooLarge):
    kind = "stream_too_large"
    exposed = ("limit_bytes",)


class SummaryTooLarge(StreamTooLarge):
    kind = "summary_too_large"


class UnsupportedMediaType(FlowFabricError):
    status = 415
    kind = "unsupported_media_type"


class ResourceExhausted(FlowFabricError):
    status = 429
    kind = "resource_exhausted"
    retryable = True


class StreamOpsExhausted(ResourceExhausted):
    """The pool of stream reads, tails and event streams is full."""

    def headers(self) -> dict[str, str]:
        return {"retry-after": "1"}


class BudgetExhausted(ResourceExhausted):
    kind = "budget_exhausted"
    retryable = True
    template = ("budget {budget_id}: {dimension} reached its hard limit ({usage}/{hard_limit});"
                " attached work waits for a reset")
    exposed = ("budget_id", "dimension")


class QuotaExceeded(ResourceExhausted):
    kind = "quota_exceeded"
    retryable = True
    template = "quota {quota_policy_id}: {why}"
    exposed = ("quota_policy_id", "retry_after_ms")


class RotationBusy(ResourceExhausted):
    kind = "rotation_in_progress"


class RotationTimeout(FlowFabricError):
    status = 504
    kind = "rotation_timeout"
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


def _kinds(cls: type[FlowFabricError]) -> dict[str, type[FlowFabricError]]:
    found = {cls.kind: cls}
    for sub in cls.__subclasses__():
        found.update(_kinds(sub))
    return found


#: Every kind an answer can carry, to its class (besides the HTTP layer's own kinds).
KINDS: dict[str, type[FlowFabricError]] = _kinds(FlowFabricError)


def error_from(kind: str, details: dict[str, Any]) -> FlowFabricError:
    """The typed error a store reported as ``(kind, details)``, worded as the Python rules
    word it."""
    cls = KINDS.get(kind)
    if cls is None or not cls.template:
        return FlowFabricError(f"the store answered an unknown error {kind!r}")
    return cls.of(**details)
