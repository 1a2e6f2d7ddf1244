"""The Backend protocol every storage plugin implements.

Methods are async and called from Trio. State changes are ``Mutation``s of the
operations registered in ``appliance.core`` (``appliance.core.operations``):
``apply`` takes a sequence of them, so a store can run a group in one round trip,
each item atomic on its own. Besides ``apply`` there are the few operations that
are not rule-shaped: ``create`` (inserts), ``claim`` (selects, then applies the
claim rule), reads and scanner lookups. ``BackendBase`` answers ``Unavailable``
for everything; ``capabilities()`` lists what a subclass supports. See
spec/plugins.md for the guide.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from appliance.core import admission as adm
from appliance.core import streams as st
from appliance.core.admission import Granted
from appliance.core.clock import Clock, SystemClock
from appliance.core.contracts import ClaimArgs, CreateArgs, ListPage
from appliance.core.errors import FlowFabricError, Unavailable
from appliance.core.flows import (
    ApplyEdgeArgs,
    CancelHeader,
    Flow,
    FlowSubmission,
    FlowView,
    GroupSpec,
    StageArgs,
)
from appliance.core.handle import Fence
from appliance.core.operations import OPERATIONS, Applied, Mutation, Operation
from appliance.core.outcomes import Outcome
from appliance.core.partitions import PartitionConfig
from appliance.core.record import Execution
from appliance.core.scanners import Scanner
from appliance.core.suspension import (
    Signal,
    SignalAnswer,
    SignalArgs,
    SuspendArgs,
    SuspendResult,
    Waitpoint,
    WaitpointArgs,
)
from appliance.core.tokens import Keystore, Rotation

#: The operations that are not rule-shaped, as ``capabilities()`` names them.
BASIC = ("create", "claim", "get_execution", "get_result", "list_executions", "due",
         "create_flow", "suspend", "create_budget", "append_frames")


@dataclass(slots=True)
class BackendEnv:
    """What the appliance hands a backend at ``prepare``."""

    partitions: PartitionConfig = field(default_factory=PartitionConfig)
    clock: Clock = field(default_factory=SystemClock)
    retention_ms: int = 24 * 3600 * 1000


#: A leased task as the worker receives it (``transitions.claim_answer``) and its input.
Task = tuple[dict[str, Any], bytes]


@dataclass(frozen=True, slots=True)
class Claim:
    tasks: tuple[Task, ...] = ()
    #: The lane once per execution the claim made claimable, the ones it took included.
    woken: tuple[str, ...] = ()
    #: A grant claim's grants (``ClaimArgs.grant_ttl_ms``).
    grants: tuple[Granted, ...] = ()
    #: When work held back by a quota's rate window may be claimed (None: none is).
    retry_at: int | None = None
    #: Wake keys (``admission.wake_key``) of the budgets and quotas that held work back: a
    #: waiting claim is woken by them too.
    gated: tuple[str, ...] = ()


class BackendBase:
    """Base class for backends: every operation defaults to ``Unavailable``."""

    #: The name users select with ``FF_BACKEND``.
    name: str = "unknown"
    #: File descriptors the backend may hold open at once (connections, files); the
    #: appliance keeps them free when it sizes its HTTP connection limit.
    store_connections: int = 8
    #: Whether several appliance processes may share the store (``--processes N``): a
    #: store only one process may open (a file it locks) says False.
    shared: bool = True

    # -- lifecycle ------------------------------------------------------------
    def describe(self) -> str:
        """Where the data lives, for the startup log (never includes secrets)."""
        return self.name

    async def prepare(self, env: BackendEnv) -> None:
        """Migrate / load scripts / check partition counts. Refuse with ``StartupError``."""
        raise Unavailable("prepare", self.name)

    async def serve(self, notify: Callable[[str], None], *,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The backend's own task, for as long as the appliance runs: its background work
        (a writer, a probe) and ``notify(lane)`` when another appliance made work of
        ``lane`` claimable. Report ``task_status.started()`` once operations may run.

        The default has nothing to do and returns at once.
        """
        task_status.started()

    async def ping(self) -> None:
        """Return (or raise ``StoreUnavailable``) within 100 ms, whatever the store does."""
        raise Unavailable("ping", self.name)

    async def shutdown_prepare(self, grace_s: float) -> None:
        """Stop taking new long operations; in-flight ones may finish."""

    async def close(self) -> None:
        """Release connections and threads. Called once, last."""

    def supports(self, op: Operation[Any]) -> bool:
        """Whether ``apply`` can run ``op`` (a store whose rules live elsewhere, like the
        Lua library, answers for its own)."""
        return type(self).apply is not BackendBase.apply

    def capabilities(self) -> frozenset[str]:
        """The registered operations this backend applies, and the basic ones it has."""
        ops = {name for name, op in OPERATIONS.items() if self.supports(op)}
        basic = {name for name in BASIC
                 if getattr(type(self), name) is not getattr(BackendBase, name)}
        return frozenset(ops | basic)

    # -- state changes --------------------------------------------------------
    async def apply(self, mutations: Sequence[Mutation]) -> list[Applied]:
        """Apply each mutation atomically (each on its own; a group may share one round
        trip), in order; one ``Applied`` per mutation."""
        raise Unavailable("apply", self.name)

    async def create(self, batch: Sequence[CreateArgs]) -> list[Applied]:
        """Insert executions (``Created``, or ``Duplicate`` for a known id or idempotency
        key); ``woken`` names the lane of each one claimable at once."""
        raise Unavailable("create", self.name)

    async def claim(self, args: ClaimArgs) -> Claim:
        """Lease up to ``args.max_tasks`` of the best claimable executions of the lane for
        this worker, best first (promoting the lane's due delays first): each task
        (``transitions.claim_answer``) with its input payload."""
        raise Unavailable("claim", self.name)

    # -- reads ----------------------------------------------------------------
    async def get_execution(self, execution_id: str) -> Execution | None:
        raise Unavailable("get_execution", self.name)

    async def get_result(self, execution_id: str) -> tuple[Execution, bytes | None] | None:
        raise Unavailable("get_result", self.name)

    async def list_executions(self, partition: int, cursor: str | None, limit: int) -> ListPage:
        raise Unavailable("list_executions", self.name)

    # -- scanners -------------------------------------------------------------
    async def due(self, scanner: Scanner, now: int, limit: int) -> list[str]:
        """Up to ``limit`` ids whose ``scanner.clock`` is at or before ``now``, earliest
        first (the engine applies ``scanner.op`` to each)."""
        raise Unavailable("due", self.name)

    async def sweep(self, now: int, limit: int) -> int:
        """Housekeeping beside retention (e.g. expired idempotency keys); how many went."""
        return 0

    # -- flows (spec/flows.md): each call one atomic step; ``woken``: lanes made claimable
    async def create_flow(self, sub: FlowSubmission) -> tuple[Outcome, tuple[str, ...]]:
        raise Unavailable("create_flow", self.name)

    async def add_flow_member(self, flow_id: str, execution_id: str) -> Outcome:
        raise Unavailable("add_flow_member", self.name)

    async def stage_edge(self, args: StageArgs) -> Outcome:
        raise Unavailable("stage_edge", self.name)

    async def apply_edge(self, args: ApplyEdgeArgs) -> tuple[Outcome | str, tuple[str, ...]]:
        """``"AlreadyApplied"``, or the edge applied (resolved at once if its upstream ended)."""
        raise Unavailable("apply_edge", self.name)

    async def set_edge_group(self, flow_id: str, downstream: str,
                             spec: GroupSpec) -> Outcome | str:
        raise Unavailable("set_edge_group", self.name)

    async def cancel_flow(self, flow_id: str, reason: str, policy: str) -> CancelHeader:
        """Flag the flow cancelled and put the cancels it owes in its backlog."""
        raise Unavailable("cancel_flow", self.name)

    async def cancel_flow_members(self, flow_id: str, ids: list[str], reason: str) -> list[str]:
        """Cancel backlog members, each with its backlog entry; the ids that failed."""
        raise Unavailable("cancel_flow_members", self.name)

    async def owed_flow_cancels(self, now: int, limit: int) -> dict[str, tuple[str, list[str]]]:
        """Backlog entries past their grace, by flow: ``(reason, ids)``."""
        raise Unavailable("owed_flow_cancels", self.name)

    async def reconcile_dependencies(self, limit: int) -> tuple[int, list[str]]:
        """Resolve applied edges whose upstream ended but that are still unresolved."""
        raise Unavailable("reconcile_dependencies", self.name)

    async def describe_flow(self, flow_id: str) -> FlowView | None:
        raise Unavailable("describe_flow", self.name)

    async def list_flows(self, namespace: str | None, cursor: str | None,
                         limit: int) -> tuple[list[Flow], str | None]:
        raise Unavailable("list_flows", self.name)


    # -- suspension and signals (spec/suspension.md): each call one atomic step ------------
    async def seed_waitpoint_keys(self, kid: str, secret_hex: str | None) -> tuple[str, Keystore]:
        """At boot: install the signing key if the store has none (``tokens.seed``); the
        status (``differs`` if any keystore holds another) and the keystore read."""
        raise Unavailable("seed_waitpoint_keys", self.name)

    async def waitpoint_keys(self, execution_id: str) -> Keystore:
        """The keystore that verifies the waitpoints of ``execution_id``."""
        raise Unavailable("waitpoint_keys", self.name)

    async def rotate_waitpoint_secret(self, kid: str, secret_hex: str, grace_ms: int
                                      ) -> list[tuple[int, Rotation | FlowFabricError]]:
        """Rotate every keystore (one per partition on a store that keeps replicas): one
        result per keystore, by partition."""
        raise Unavailable("rotate_waitpoint_secret", self.name)

    async def create_waitpoint(self, execution_id: str, args: WaitpointArgs) -> Waitpoint:
        raise Unavailable("create_waitpoint", self.name)

    async def suspend(self, execution_id: str, args: SuspendArgs) -> SuspendResult:
        raise Unavailable("suspend", self.name)

    async def wait_children(self, execution_id: str, fence: Fence) -> Outcome:
        raise Unavailable("wait_children", self.name)

    async def deliver_signal(self, execution_id: str,
                             args: SignalArgs) -> tuple[SignalAnswer, tuple[str, ...]]:
        raise Unavailable("deliver_signal", self.name)

    async def list_waitpoints(self, execution_id: str
                              ) -> tuple[Execution, list[Waitpoint]] | None:
        """The execution and its open waitpoints by id (None: no such execution)."""
        raise Unavailable("list_waitpoints", self.name)

    async def get_waitpoint(self, execution_id: str, waitpoint_id: str) -> Waitpoint | None:
        raise Unavailable("get_waitpoint", self.name)

    async def resume_signals(self, execution_id: str) -> list[Signal]:
        """The signals that resumed the current attempt, with their payloads."""
        raise Unavailable("resume_signals", self.name)

    async def expire_pending_waitpoints(self, now: int, limit: int) -> int:
        """Close pending waitpoints whose ``expires_at`` passed (``never_committed``)."""
        raise Unavailable("expire_pending_waitpoints", self.name)

    # -- admission (spec/admission.md) ------------------------------------------------------
    async def redeem_grant(self, execution_id: str, args: ClaimArgs) -> Task:
        """Lease the execution a grant reserved for ``args.worker_id``."""
        raise Unavailable("redeem_grant", self.name)

    async def reclaim_grant(self, execution_id: str, args: ClaimArgs) -> dict[str, Any]:
        """Grant a reclaimable execution (lease expired or revoked) to ``args.worker_id``
        after admission: the original's status-tagged answer."""
        raise Unavailable("reclaim_grant", self.name)

    async def create_budget(self, budget: adm.Budget) -> bool:
        """Store a new budget; False when the id is taken (the stored one is kept)."""
        raise Unavailable("create_budget", self.name)

    async def get_budget(self, budget_id: str) -> adm.Budget | None:
        raise Unavailable("get_budget", self.name)

    async def report_usage(self, budget_id: str, report: adm.UsageReport,
                           lease: tuple[str, Fence] | None) -> adm.UsageAnswer:
        """Check-before-increment (``admission.report_usage``); ``lease``: a worker's
        report, refused unless its lease holds and the execution names the budget."""
        raise Unavailable("report_usage", self.name)

    async def reset_budget(self, budget_id: str) -> int:
        """Zero the usage; the next reset time (0: none)."""
        raise Unavailable("reset_budget", self.name)

    async def reset_due_budgets(self, now: int, limit: int) -> list[str]:
        """Reset budgets whose ``next_reset_at`` came; their ids."""
        raise Unavailable("reset_due_budgets", self.name)

    async def create_quota(self, quota: adm.Quota) -> bool:
        raise Unavailable("create_quota", self.name)

    async def get_quota(self, quota_id: str) -> dict[str, Any] | None:
        """``Quota.view``: the policy with its slots held and window counted now."""
        raise Unavailable("get_quota", self.name)

    async def reconcile_quotas(self, now: int, limit: int) -> int:
        """Housekeeping of quota state (expired window entries, stale holders)."""
        raise Unavailable("reconcile_quotas", self.name)

    async def register_worker(self, worker: adm.Worker, explicit: bool) -> bool:
        """Upsert a registry entry (``admission.merge_worker``); True when new."""
        raise Unavailable("register_worker", self.name)

    async def list_workers(self, lane: str | None, after: str | None,
                           limit: int) -> tuple[list[adm.Worker], str | None]:
        raise Unavailable("list_workers", self.name)

    async def lane_position(self, ex: Execution) -> dict[str, int]:
        """The claimable executions of its lane a claim takes before ``ex``, counted by
        claim class (the service leaves out the classes admission holds back)."""
        raise Unavailable("lane_position", self.name)

    # -- attempt streams (spec/streams.md) ------------------------------------------------------
    async def append_frames(self, execution_id: str, args: st.AppendArgs
                            ) -> tuple[st.Appended, tuple[str, ...]]:
        """Append a batch in one atomic step, the lease checked in it (``streams.check_writer``,
        ``streams.plan_append``); the answer and the wake keys it notified."""
        raise Unavailable("append_frames", self.name)

    async def read_frames(self, execution_id: str, index: int, lo: st.FrameId, hi: st.FrameId,
                          limit: int) -> st.StreamPage:
        """Up to ``limit`` frames of attempt ``index`` with ids in ``lo..hi`` (inclusive), oldest
        first, expired best-effort ones left out, and the close marker (``streams.closed``),
        read together. Raises ``ExecutionNotFound``."""
        raise Unavailable("read_frames", self.name)

    async def stream_summary(self, execution_id: str, index: int) -> st.Summary | None:
        """The attempt's summary document (None: never patched). Raises ``ExecutionNotFound``."""
        raise Unavailable("stream_summary", self.name)


#: Type alias used in signatures: anything shaped like BackendBase.
Backend = BackendBase
