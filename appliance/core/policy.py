"""ExecutionPolicy: declared once as a typed body, validated at create, stored as
normalised JSON and read back leniently.

``PolicyBody`` is what a client may send (strict: ranges, unknown fields refused);
``parse_policy`` checks it and builds the frozen ``ExecutionPolicy``. Only fields
the engine honours are accepted; fields of features this build does not have yet
are refused with a message rather than stored and ignored. ``load_policy`` reads
a stored policy from the same declaration, leniently (``schema.lenient``).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from .errors import InvalidCapabilities, InvalidInput, InvalidPolicyJson
from .ids import parse_uuid
from .limits import DURATION_MAX_MS, TIME_MAX_MS, U32_MAX
from .schema import Body, convert, lenient

CAPS_MAX_TOKENS = 256
CAPS_MAX_BYTES = 4096
MAX_BUDGETS = 16
MULTIPLIER_MAX = 1000.0
#: The version of the stored form (``v``); ``load_policy`` reads every version leniently.
POLICY_VERSION = 1
log = logging.getLogger("flowfabric.policy")

Count = Annotated[int, Meta(ge=0, le=U32_MAX)]
Duration = Annotated[int, Meta(ge=1, le=DURATION_MAX_MS)]
Backoff_ms = Annotated[int, Meta(ge=0, le=DURATION_MAX_MS)]
Short = Annotated[str, Meta(max_length=256)]


# -- the client's shape ---------------------------------------------------------------------

class BackoffBody(Body):
    type: Literal["fixed", "exponential"] = "exponential"
    delay_ms: Backoff_ms | None = None
    initial_delay_ms: Backoff_ms | None = None
    max_delay_ms: Backoff_ms | None = None
    multiplier: Annotated[float, Meta(ge=1.0, le=MULTIPLIER_MAX)] | None = None
    jitter: bool = False


class RetryPolicyBody(Body):
    max_retries: Count = 3
    backoff: BackoffBody | None = None
    retryable_categories: list[Annotated[str, Meta(min_length=1, max_length=256)]] = []


class TimeoutPolicyBody(Body):
    attempt_timeout_ms: Duration | None = None
    execution_deadline_ms: Duration | None = None
    max_reclaim_count: Count | None = None


class RoutingBody(Body):
    required_capabilities: Any = None  # checked by parse_capabilities (its own error codes)
    preferred_locality: Any = None
    isolation_level: Any = None


class StreamPolicyBody(Body):
    retention_ttl_ms: Duration | None = None
    durability_mode: Literal["buffered"] = "buffered"
    #: The durable frames an attempt's stream keeps (spec/streams.md).
    retention_maxlen: Annotated[int, Meta(ge=1, le=10_000)] | None = None


class TierBody(Body):
    provider: Short
    model: Short
    timeout_ms: Duration | None = None


class FallbackBody(Body):
    tiers: list[TierBody]


class PolicyBody(Body):
    ERRORS: ClassVar[dict[str, type[InvalidPolicyJson]]] = {"": InvalidPolicyJson}

    retry_policy: RetryPolicyBody | None = None
    timeout_policy: TimeoutPolicyBody | None = None
    max_reclaim_count: Count = 100
    max_replay_count: Count = 10
    max_signals_per_execution: Annotated[int, Meta(ge=1, le=U32_MAX)] = 10_000
    routing_requirements: RoutingBody | None = None
    suspension_policy: Any = None
    budget_ids: Any = None  # checked by _budget_ids (each a UUID)
    quota_policy_id: Any = None
    dedup_window_ms: Duration | None = None
    stream_policy: StreamPolicyBody | None = None
    fallback_policy: FallbackBody | None = None
    priority: Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)] | None = None
    delay_until: Annotated[int, Meta(ge=0, le=TIME_MAX_MS)] | None = None


# -- what the engine reads -------------------------------------------------------------------

def grow(initial: int, multiplier: float, n: int, cap: int) -> int:
    """``initial × multiplier^n`` capped at ``cap``, saturating instead of overflowing.

    The Lua library computes the same (its ``^`` gives inf where Python raises).
    """
    try:
        grown = initial * multiplier ** n
    except OverflowError:
        return cap
    return int(min(grown, cap))


@dataclass(frozen=True, slots=True)
class Backoff:
    """``fixed`` waits ``delay_ms``; ``exponential`` waits initial × multiplier^n, capped."""

    type: str = "exponential"
    delay_ms: int = 1000
    initial_delay_ms: int = 1000
    max_delay_ms: int = 60_000
    multiplier: float = 2.0
    jitter: bool = False

    def delay_for(self, retry_count: int, u: float = 0.0) -> int:
        """Delay before the retry that follows ``retry_count`` earlier retries.

        With ``jitter`` the delay is drawn from [d/2, d] ("equal jitter") by ``u``, a
        uniform draw in [0, 1) the caller makes (so every store computes the same).
        """
        if self.type == "fixed":
            delay = self.delay_ms
        else:
            delay = grow(self.initial_delay_ms, self.multiplier, retry_count, self.max_delay_ms)
        if self.jitter and delay > 1:
            low = delay // 2
            delay = min(delay, low + math.floor(u * (delay - low + 1)))
        return delay

    def to_json(self) -> dict[str, Any]:
        if self.type == "fixed":
            return {"type": "fixed", "delay_ms": self.delay_ms, "jitter": self.jitter}
        return {"type": "exponential", "initial_delay_ms": self.initial_delay_ms,
                "max_delay_ms": self.max_delay_ms, "multiplier": self.multiplier,
                "jitter": self.jitter}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    retryable_categories: tuple[str, ...] = ()

    def allows(self, retry_count: int, category: str | None) -> bool:
        """Retry while budget remains and the category is retryable (empty list = all)."""
        if retry_count >= self.max_retries:
            return False
        return not self.retryable_categories or category in self.retryable_categories


@dataclass(frozen=True, slots=True)
class ExecutionPolicy:
    retry: RetryPolicy | None = None
    attempt_timeout_ms: int | None = None
    execution_deadline_ms: int | None = None
    max_reclaim_count: int = 100
    max_replay_count: int = 10
    max_signals_per_execution: int = 10_000
    required_capabilities: tuple[str, ...] = ()
    dedup_window_ms: int | None = None
    retention_ttl_ms: int | None = None
    retention_maxlen: int | None = None
    fallback_tiers: tuple[dict[str, Any], ...] = ()
    priority: int | None = None
    delay_until: int | None = None
    budget_ids: tuple[str, ...] = ()
    quota_policy_id: str | None = None

    def to_json(self) -> str:
        """Normalised form stored with the execution (defaults filled in)."""
        doc: dict[str, Any] = {"v": POLICY_VERSION, "max_reclaim_count": self.max_reclaim_count,
                               "max_replay_count": self.max_replay_count,
                               "max_signals_per_execution": self.max_signals_per_execution}
        if self.retry is not None:
            doc["retry_policy"] = {"max_retries": self.retry.max_retries,
                                   "backoff": self.retry.backoff.to_json(),
                                   "retryable_categories": list(self.retry.retryable_categories)}
        timeout = {k: v for k, v in (("attempt_timeout_ms", self.attempt_timeout_ms),
                                     ("execution_deadline_ms", self.execution_deadline_ms))
                   if v is not None}
        if timeout:
            doc["timeout_policy"] = timeout
        if self.required_capabilities:
            doc["routing_requirements"] = {"required_capabilities": list(self.required_capabilities)}
        if self.dedup_window_ms is not None:
            doc["dedup_window_ms"] = self.dedup_window_ms
        stream = {k: v for k, v in (("retention_ttl_ms", self.retention_ttl_ms),
                                    ("retention_maxlen", self.retention_maxlen))
                  if v is not None}
        if stream:
            doc["stream_policy"] = stream
        if self.fallback_tiers:
            doc["fallback_policy"] = {"tiers": list(self.fallback_tiers)}
        if self.budget_ids:
            doc["budget_ids"] = list(self.budget_ids)
        if self.quota_policy_id:
            doc["quota_policy_id"] = self.quota_policy_id
        return json.dumps(doc, separators=(",", ":"), sort_keys=True, allow_nan=False)


# -- from body to policy ----------------------------------------------------------------------

def _refuse(field_path: str, why: str) -> InvalidPolicyJson:
    return InvalidPolicyJson(f"policy.{field_path}: {why}")


def parse_policy(obj: Any) -> ExecutionPolicy:
    """Validate a client-supplied policy (a decoded JSON object; ``None`` → defaults)."""
    if obj is None:
        return ExecutionPolicy()
    if isinstance(obj, PolicyBody):
        return from_body(obj, strict=True)
    return from_body(convert(obj, PolicyBody, "policy"), strict=True)


def from_body(body: PolicyBody, *, strict: bool) -> ExecutionPolicy:
    """The policy a body describes; ``strict`` refuses what this build cannot honour (a
    stored policy is taken as it is)."""
    caps: tuple[str, ...] = ()
    routing = body.routing_requirements
    if routing is not None:
        caps = parse_capabilities(routing.required_capabilities, "required") if strict else \
            tuple(c for c in _list(routing.required_capabilities) if isinstance(c, str))
        for unsupported in ("preferred_locality", "isolation_level"):
            if strict and getattr(routing, unsupported) is not None:
                raise _refuse(f"routing_requirements.{unsupported}",
                              "is not supported by this build; remove it")
    if strict and body.suspension_policy is not None:
        raise _refuse("suspension_policy", "is not supported by this build yet; remove it")
    budgets = _budget_ids(body.budget_ids, strict)
    quota = _uuid_or_none(body.quota_policy_id, "quota_policy_id", strict)
    timeout = body.timeout_policy
    max_reclaim = body.max_reclaim_count
    if timeout is not None and timeout.max_reclaim_count is not None:
        max_reclaim = timeout.max_reclaim_count
    return ExecutionPolicy(
        retry=_retry(body.retry_policy, strict),
        attempt_timeout_ms=timeout.attempt_timeout_ms if timeout else None,
        execution_deadline_ms=timeout.execution_deadline_ms if timeout else None,
        max_reclaim_count=max_reclaim,
        max_replay_count=body.max_replay_count,
        max_signals_per_execution=body.max_signals_per_execution,
        required_capabilities=caps,
        dedup_window_ms=body.dedup_window_ms,
        retention_ttl_ms=body.stream_policy.retention_ttl_ms if body.stream_policy else None,
        retention_maxlen=body.stream_policy.retention_maxlen if body.stream_policy else None,
        fallback_tiers=tuple({k: v for k, v in msgspec.structs.asdict(t).items()
                              if v is not None}
                             for t in (body.fallback_policy.tiers if body.fallback_policy
                                       else ())),
        priority=body.priority,
        delay_until=body.delay_until,
        budget_ids=budgets,
        quota_policy_id=quota,
    )


def _uuid_or_none(raw: Any, where: str, strict: bool) -> str | None:
    if raw is None or (not strict and not isinstance(raw, str)):
        return None
    try:
        return parse_uuid(raw, f"policy.{where}")
    except InvalidInput as exc:
        if strict:
            raise InvalidPolicyJson(exc.message) from None
        return None


def _budget_ids(raw: Any, strict: bool) -> tuple[str, ...]:
    """Sorted, distinct budget UUIDs (at most ``MAX_BUDGETS``)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        if strict:
            raise _refuse("budget_ids", "must be an array of budget ids (UUIDs)")
        return ()
    if strict and len(raw) > MAX_BUDGETS:
        raise _refuse("budget_ids", f"names {len(raw)} budgets; at most {MAX_BUDGETS}")
    if strict:
        for i, b in enumerate(raw):
            if not isinstance(b, str):
                raise _refuse(f"budget_ids[{i}]", "must be a budget id (a UUID string)")
    ids = (_uuid_or_none(b, f"budget_ids[{i}]", strict) for i, b in enumerate(raw))
    return tuple(sorted({b for b in ids if b is not None}))[:MAX_BUDGETS]


def _retry(body: RetryPolicyBody | None, strict: bool) -> RetryPolicy | None:
    if body is None:
        return None
    backoff = Backoff()
    b = body.backoff
    if b is not None:
        if b.type == "fixed":
            for other in ("initial_delay_ms", "max_delay_ms", "multiplier"):
                if strict and getattr(b, other) is not None:
                    raise _refuse(f"retry_policy.backoff.{other}",
                                  "is not a field of a fixed backoff (it takes delay_ms); "
                                  "remove it")
            backoff = Backoff(type="fixed", delay_ms=_or(b.delay_ms, 1000), jitter=b.jitter)
        else:
            if strict and b.delay_ms is not None:
                raise _refuse("retry_policy.backoff.delay_ms",
                              "is not a field of an exponential backoff (it takes "
                              "initial_delay_ms, max_delay_ms, multiplier); remove it")
            backoff = Backoff(type="exponential", initial_delay_ms=_or(b.initial_delay_ms, 1000),
                              max_delay_ms=_or(b.max_delay_ms, 60_000),
                              multiplier=_or(b.multiplier, 2.0), jitter=b.jitter)
    return RetryPolicy(max_retries=body.max_retries, backoff=backoff,
                       retryable_categories=tuple(sorted(set(body.retryable_categories))))


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def parse_capabilities(obj: object, side: str, field: str | None = None) -> tuple[str, ...]:
    """A sorted, de-duplicated capability set; ``side`` is ``required`` or ``worker``
    (the original's error codes), ``field`` the request field it came from."""
    if obj is None:
        return ()
    field = field or ("policy.routing_requirements.required_capabilities"
                      if side == "required" else "capabilities")

    def bad(code: str) -> InvalidCapabilities:
        return InvalidCapabilities(f"{field}: {side}:{code}")

    if not isinstance(obj, list):
        raise bad("not_array (capabilities must be an array of strings)")
    for token in obj:
        if not isinstance(token, str):
            raise bad(f"non_string_token ({json.dumps(token)[:40]})")
        if not token:
            raise bad("empty_token")
        if "," in token:
            raise bad(f"comma_in_token ({token[:40]!r})")
        if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in token):
            raise bad(f"control_or_whitespace ({token[:40]!r})")
    caps = tuple(sorted(set(obj)))
    if len(caps) > CAPS_MAX_TOKENS:
        raise bad(f"too_many_tokens (max {CAPS_MAX_TOKENS})")
    if len(",".join(caps).encode()) > CAPS_MAX_BYTES:
        raise bad(f"too_many_bytes (max {CAPS_MAX_BYTES})")
    return caps


@lru_cache(maxsize=1024)
def load_policy(stored: str) -> ExecutionPolicy:
    """Decode a stored policy (cached: policies repeat). Never fails: numbers are clamped
    into today's ranges, and a policy that cannot be read at all reads as the defaults,
    so no stored value can leave an execution stuck."""
    try:
        return from_body(lenient(json.loads(stored) if stored else {}, PolicyBody),
                         strict=False)
    except (ValueError, TypeError, RecursionError):
        log.error("a stored execution policy could not be read; using the defaults: %.200s",
                  stored)
        return ExecutionPolicy()
