"""What an operation answers, typed: one class per answer, shaped for the wire in one place.

Most answers are tagged as the original's are (``{"Completed": {...}}``); a few are
plain objects (``TAG = None``). ``from_wire`` reads an answer a store computed
elsewhere (the Lua library) back into its class.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar


class Outcome:
    """Base of every answer."""

    TAG: ClassVar[str | None] = None

    def wire(self) -> dict[str, Any]:
        body = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        return {self.TAG: body} if self.TAG else body


@dataclass(frozen=True, slots=True)
class Created(Outcome):
    TAG = "Created"
    execution_id: str
    public_state: str


@dataclass(frozen=True, slots=True)
class Duplicate(Outcome):
    TAG = "Duplicate"
    execution_id: str


@dataclass(frozen=True, slots=True)
class Changed(Outcome):
    TAG = "Changed"
    execution_id: str


@dataclass(frozen=True, slots=True)
class Replayed(Outcome):
    TAG = "Replayed"
    public_state: str


@dataclass(frozen=True, slots=True)
class Cancelled(Outcome):
    TAG = "Cancelled"
    execution_id: str
    public_state: str


@dataclass(frozen=True, slots=True)
class Revoked(Outcome):
    TAG = "Revoked"
    lease_id: str | None
    lease_epoch: str  # a string, as in the original


@dataclass(frozen=True, slots=True)
class AlreadySatisfied(Outcome):
    TAG = "AlreadySatisfied"
    reason: str


@dataclass(frozen=True, slots=True)
class Renewed(Outcome):
    lease_expires_at: int
    lease_epoch: int
    lease_renewal_deadline: int


@dataclass(frozen=True, slots=True)
class ProgressReported(Outcome):
    progress_pct: int | None
    progress_message: str | None
    progress_updated_at: int


@dataclass(frozen=True, slots=True)
class Completed(Outcome):
    TAG = "Completed"
    execution_id: str
    public_state: str


@dataclass(frozen=True, slots=True)
class RetryScheduled(Outcome):
    TAG = "RetryScheduled"
    execution_id: str
    public_state: str
    delay_until: int
    next_attempt_index: int


@dataclass(frozen=True, slots=True)
class TerminalFailed(Outcome):
    TAG = "TerminalFailed"
    execution_id: str
    public_state: str


@dataclass(frozen=True, slots=True)
class Expired(Outcome):
    TAG = "Expired"
    execution_id: str
    public_state: str


@dataclass(frozen=True, slots=True)
class Delayed(Outcome):
    TAG = "Delayed"
    execution_id: str
    public_state: str
    delay_until: int


@dataclass(frozen=True, slots=True)
class MarkedExpired(Outcome):
    TAG = "MarkedExpired"
    execution_id: str


@dataclass(frozen=True, slots=True)
class Promoted(Outcome):
    TAG = "Promoted"
    execution_id: str


@dataclass(frozen=True, slots=True)
class ReclaimCapExceeded(Outcome):
    TAG = "ReclaimCapExceeded"
    execution_id: str
    reclaim_count: int


@dataclass(frozen=True, slots=True)
class Purged(Outcome):
    TAG = "Purged"
    execution_id: str


@dataclass(frozen=True, slots=True)
class Claimed(Outcome):
    """A claim leased the execution (the worker's task is built by ``claim_answer``)."""

    TAG = "Claimed"
    execution_id: str
    attempt_type: str


def _tagged(cls: type[Outcome]) -> dict[str, type[Outcome]]:
    found = {cls.TAG: cls} if cls.TAG else {}
    for sub in cls.__subclasses__():
        found.update(_tagged(sub))
    return found


TAGGED: dict[str, type[Outcome]] = _tagged(Outcome)


def from_wire(doc: dict[str, Any], plain: type[Outcome] | None = None) -> Outcome:
    """The answer ``doc`` as its class; ``plain`` reads an untagged one."""
    if len(doc) == 1:
        tag, body = next(iter(doc.items()))
        cls = TAGGED.get(tag)
        if cls is None:  # an answer declared in another core module (a tag here wins)
            for known, sub in _tagged(Outcome).items():
                TAGGED.setdefault(known, sub)
            cls = TAGGED.get(tag)
        if cls is not None and isinstance(body, dict):
            return cls(**body)
    if plain is None:
        raise ValueError(f"not an answer this appliance knows: {str(doc)[:200]}")
    return plain(**doc)
