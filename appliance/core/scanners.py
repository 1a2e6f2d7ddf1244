"""The scanners, declared once: config, the engine, the SQL and Valkey stores and the Lua
library all derive theirs from ``SCANNERS``.

A scanner finds the executions whose ``clock`` field has come (and, if ``only``
is set, whose field equals a value), in bounded batches, and applies its
operation to each; the operation re-checks due-ness under the store's own
atomicity, so several appliances may scan one store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .admission import ExpireGrantArgs, expire_grant
from .operations import Operation, jitter_draw
from .settings import Setting
from .suspension import expire_suspension
from .transitions import (
    JitterArgs,
    NoArgs,
    expire_attempt,
    expire_execution,
    mark_lease_expired,
    promote_delayed,
    purge,
)


@dataclass(frozen=True, slots=True)
class Periodic:
    """A task the engine runs every interval, in bounded batches."""

    name: str
    #: The interval setting, its default, and whether it counts milliseconds or seconds.
    setting: str
    default: int
    millis: bool
    batch: int

    @property
    def declaration(self) -> Setting:
        unit = "ms" if self.millis else "s"
        return Setting(self.setting, str(self.default),
                       f"{self.name.replace('_', '-')} scanner interval ({unit}); 0 disables")

    def interval_s(self, raw: int) -> float:
        return raw / 1000 if self.millis else float(raw)


@dataclass(frozen=True, slots=True)
class Scanner(Periodic):
    """A per-execution scanner: the store finds the due executions, the engine applies
    ``op`` to them."""

    op: Operation[Any]
    #: The Execution field holding the time this scanner waits for.
    clock: str
    #: The short name of its index in a store that keeps one per scanner (Valkey).
    index: str
    #: (field, value): only executions with this field value are due.
    only: tuple[str, str] | None = None
    args: Callable[[], Any] = NoArgs


SCANNERS: tuple[Scanner, ...] = (
    Scanner("lease_expiry", "FF_LEASE_EXPIRY_INTERVAL_MS", 1500, True, 50, mark_lease_expired,
            "lease_expires_at", "lease", only=("ownership_state", "leased")),
    Scanner("delayed_promoter", "FF_DELAYED_PROMOTER_INTERVAL_MS", 750, True, 50,
            promote_delayed, "delay_until", "delayed"),
    Scanner("attempt_timeout", "FF_ATTEMPT_TIMEOUT_INTERVAL_S", 2, False, 50, expire_attempt,
            "attempt_deadline_at", "adl", args=lambda: JitterArgs(jitter_draw())),
    Scanner("execution_deadline", "FF_EXECUTION_DEADLINE_INTERVAL_S", 5, False, 50,
            expire_execution, "execution_deadline_at", "edl"),
    Scanner("suspension_timeout", "FF_SUSPENSION_TIMEOUT_INTERVAL_S", 2, False, 50,
            expire_suspension, "suspension_timeout_at", "susp"),
    Scanner("grant_expiry", "FF_GRANT_EXPIRY_INTERVAL_MS", 1000, True, 50, expire_grant,
            "grant_expires_at", "grant", args=ExpireGrantArgs),
    Scanner("retention_trimmer", "FF_RETENTION_TRIMMER_INTERVAL_S", 60, False, 20, purge,
            "purge_at", "purge"),
)

#: Store-wide scans, each one backend call per batch: edges left unresolved although their
#: upstream ended, flow cancels still owed to members (spec/flows.md), expired pending
#: waitpoints.
STORE_SCANNERS: tuple[Periodic, ...] = (
    Periodic("dependency_reconciler", "FF_DEPENDENCY_RECONCILER_INTERVAL_S", 15, False, 50),
    Periodic("flow_cancel_reconciler", "FF_FLOW_CANCEL_RECONCILER_INTERVAL_MS", 15_000, True,
             100),
    # Pending waitpoints past their expires_at close as never_committed (spec/suspension.md).
    Periodic("pending_waitpoint_expiry", "FF_PENDING_WP_EXPIRY_INTERVAL_S", 5, False, 100),
    # Budgets whose next_reset_at came are reset; quota windows trimmed, drift repaired
    # (spec/admission.md).
    Periodic("budget_reset", "FF_BUDGET_RESET_INTERVAL_S", 15, False, 20),
    Periodic("quota_reconciler", "FF_QUOTA_RECONCILER_INTERVAL_S", 30, False, 500),
)

BY_NAME = {s.name: s for s in SCANNERS}
#: Every periodic task the engine runs, by name.
PERIODIC: dict[str, Periodic] = {**BY_NAME, **{s.name: s for s in STORE_SCANNERS}}
