"""What a rule asks a store to do besides updating the execution record: typed writes.

A rule mutates the loaded ``Execution`` in place (the store writes back what
changed) and returns an ``Effect``: its answer, the other rows to write, and, for
a refusal whose state change must still be committed (a lease found expired
during a worker call is marked so), the error to answer after committing. A rule
that refuses without changing anything raises instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import FlowFabricError
from .outcomes import Outcome
from .record import Attempt


@dataclass(frozen=True, slots=True)
class NewAttempt:
    attempt: Attempt


@dataclass(slots=True)
class UpdateAttempt:
    """Like SQL's UPDATE … WHERE attempt_index = ?: nothing happens if the row is missing.
    A value of None clears the column."""

    index: int
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoreResult:
    """The result bytes; ``None`` clears a stored result."""

    data: bytes | None


@dataclass(frozen=True, slots=True)
class DeleteExecution:
    """Remove the execution and everything stored with it."""


@dataclass(frozen=True, slots=True)
class CloseWaitpoints:
    """Close the execution's open waitpoints (``ids``: only these; None: every one)."""

    ids: tuple[str, ...] | None
    reason: str


Write = NewAttempt | UpdateAttempt | StoreResult | DeleteExecution | CloseWaitpoints


@dataclass(slots=True)
class Effect:
    outcome: Outcome | None = None
    writes: list[Write] = field(default_factory=list)
    #: Commit the writes, then answer this error.
    error: FlowFabricError | None = None

    def update_attempt(self, index: int | None, **values: Any) -> None:
        """Merge into the pending update of attempt ``index`` (none when ``index`` is None)."""
        if index is None:
            return
        for write in self.writes:
            if isinstance(write, UpdateAttempt) and write.index == index:
                write.values.update(values)
                return
        self.writes.append(UpdateAttempt(index, dict(values)))

    def new_attempt(self) -> Attempt | None:
        return next((w.attempt for w in self.writes if isinstance(w, NewAttempt)), None)
