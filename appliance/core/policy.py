"""ExecutionPolicy: validated at create, frozen, stored as normalised JSON.

Only fields the engine honours are accepted; fields of features this build
does not have yet are refused with a message rather than stored and ignored.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .errors import InvalidInput
from .fields import DURATION_MAX_MS, U32_MAX, Fields

MULTIPLIER_MAX = 1000.0
log = logging.getLogger("flowfabric.policy")

CAPS_MAX_TOKENS = 256
CAPS_MAX_BYTES = 4096


def _fields(obj: object, path: str, lenient: bool) -> Fields:
    return Fields(obj, path, kind="invalid_policy_json", lenient=lenient)


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

    def delay_for(self, retry_count: int, rng: random.Random | None = None) -> int:
        """Delay before the retry that follows ``retry_count`` earlier retries.

        With ``jitter`` the delay is drawn uniformly from [d/2, d] ("equal jitter").
        """
        if self.type == "fixed":
            delay = self.delay_ms
        else:
            delay = grow(self.initial_delay_ms, self.multiplier, retry_count, self.max_delay_ms)
        if self.jitter and delay > 1:
            delay = (rng or random).randint(delay // 2, delay)
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
    fallback_tiers: tuple[dict[str, Any], ...] = ()
    priority: int | None = None
    delay_until: int | None = None

    def to_json(self) -> str:
        """Normalised form stored with the execution (defaults filled in)."""
        doc: dict[str, Any] = {"max_reclaim_count": self.max_reclaim_count,
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
        if self.retention_ttl_ms is not None:
            doc["stream_policy"] = {"retention_ttl_ms": self.retention_ttl_ms}
        if self.fallback_tiers:
            doc["fallback_policy"] = {"tiers": list(self.fallback_tiers)}
        return json.dumps(doc, separators=(",", ":"), sort_keys=True, allow_nan=False)


def parse_policy(obj: object, *, lenient: bool = False) -> ExecutionPolicy:
    """Validate a client-supplied policy object (``None`` → all defaults); ``lenient``
    reads one we stored (see ``Fields``)."""
    if obj is None:
        return ExecutionPolicy()
    r = _fields(obj, "policy", lenient)
    retry = _parse_retry(r.get("retry_policy"), lenient)
    attempt_timeout = deadline = None
    max_reclaim = r.int("max_reclaim_count", 100, hi=U32_MAX)
    timeout = r.get("timeout_policy")
    if timeout is not None:
        t = _fields(timeout, "policy.timeout_policy", lenient)
        attempt_timeout = t.int("attempt_timeout_ms", lo=1, hi=DURATION_MAX_MS)
        deadline = t.int("execution_deadline_ms", lo=1, hi=DURATION_MAX_MS)
        max_reclaim = t.int("max_reclaim_count", max_reclaim, hi=U32_MAX)
        t.done()
    caps: tuple[str, ...] = ()
    routing = r.get("routing_requirements")
    if routing is not None:
        if not isinstance(routing, dict):
            raise InvalidInput("policy.routing_requirements: must be a JSON object "
                               "(routing_requirements:not_object)", kind="invalid_policy_json")
        rr = _fields(routing, "policy.routing_requirements", lenient)
        caps = parse_capabilities(rr.get("required_capabilities"), "required")
        for unsupported in ("preferred_locality", "isolation_level"):
            if rr.get(unsupported) is not None:
                raise rr.fail(unsupported, "is not supported by this build; remove it")
        rr.done()
    for future in ("suspension_policy",):
        if r.get(future) is not None:
            raise r.fail(future, "is not supported by this build yet; remove it")
    budgets = r.get("budget_ids")
    if budgets not in (None, []):
        raise r.fail("budget_ids", "budgets are not supported by this build yet; remove it")
    retention = None
    stream = r.get("stream_policy")
    if stream is not None:
        s = _fields(stream, "policy.stream_policy", lenient)
        retention = s.int("retention_ttl_ms", lo=1, hi=DURATION_MAX_MS)
        if s.str("durability_mode", "buffered") != "buffered":
            raise s.fail("durability_mode", "only 'buffered' is supported by this build")
        if s.int("retention_maxlen", 10_000) != 10_000:
            raise s.fail("retention_maxlen", "is not supported by this build yet; remove it")
        s.done()
    policy = ExecutionPolicy(
        retry=retry,
        attempt_timeout_ms=attempt_timeout,
        execution_deadline_ms=deadline,
        max_reclaim_count=max_reclaim,  # type: ignore[arg-type]
        max_replay_count=r.int("max_replay_count", 10, hi=U32_MAX),  # type: ignore[arg-type]
        max_signals_per_execution=r.int("max_signals_per_execution", 10_000, lo=1,
                                        hi=U32_MAX),  # type: ignore[arg-type]
        required_capabilities=caps,
        dedup_window_ms=r.int("dedup_window_ms", lo=1, hi=DURATION_MAX_MS),
        retention_ttl_ms=retention,
        fallback_tiers=_parse_fallback(r.get("fallback_policy"), lenient),
        priority=r.int("priority", lo=-(2**31), hi=2**31 - 1),
        delay_until=r.int("delay_until"),
    )
    r.done()
    return policy


def _parse_retry(obj: object, lenient: bool) -> RetryPolicy | None:
    if obj is None:
        return None
    r = _fields(obj, "policy.retry_policy", lenient)
    max_retries = r.int("max_retries", 3, hi=U32_MAX)
    backoff = Backoff()
    raw = r.get("backoff")
    if raw is not None:
        b = _fields(raw, "policy.retry_policy.backoff", lenient)
        kind = b.str("type", "exponential")
        if kind == "fixed":
            backoff = Backoff(type="fixed", delay_ms=b.int("delay_ms", 1000,  # type: ignore[arg-type]
                                                           hi=DURATION_MAX_MS),
                              jitter=b.bool("jitter", False))
        elif kind == "exponential":
            initial = b.int("initial_delay_ms", 1000, hi=DURATION_MAX_MS)
            max_delay = b.int("max_delay_ms", 60_000, hi=DURATION_MAX_MS)
            multiplier = b.number("multiplier", 2.0, lo=1.0, hi=MULTIPLIER_MAX)
            backoff = Backoff(type="exponential", initial_delay_ms=initial,  # type: ignore[arg-type]
                              max_delay_ms=max_delay, multiplier=multiplier,  # type: ignore[arg-type]
                              jitter=b.bool("jitter", False))
        else:
            raise b.fail("type", f"must be 'fixed' or 'exponential', got {kind!r}")
        b.done()
    cats = r.get("retryable_categories")
    if cats is None:
        cats = []
    if not isinstance(cats, list) or not all(isinstance(c, str) and c for c in cats):
        raise r.fail("retryable_categories", "must be an array of non-empty strings")
    r.done()
    return RetryPolicy(max_retries=max_retries, backoff=backoff,  # type: ignore[arg-type]
                       retryable_categories=tuple(sorted(set(cats))))


def _parse_fallback(obj: object, lenient: bool) -> tuple[dict[str, Any], ...]:
    """Fallback tiers are data for the worker; validated and handed back at claim."""
    if obj is None:
        return ()
    r = _fields(obj, "policy.fallback_policy", lenient)
    tiers = r.get("tiers")
    r.done()
    if not isinstance(tiers, list):
        raise r.fail("tiers", "must be an array of {provider, model, timeout_ms?}")
    out = []
    for i, tier in enumerate(tiers):
        t = _fields(tier, f"policy.fallback_policy.tiers[{i}]", lenient)
        entry: dict[str, Any] = {"provider": t.str("provider"), "model": t.str("model")}
        if entry["provider"] is None or entry["model"] is None:
            raise t.fail("provider", "provider and model are required strings")
        timeout = t.int("timeout_ms", lo=1, hi=DURATION_MAX_MS)
        if timeout is not None:
            entry["timeout_ms"] = timeout
        t.done()
        out.append(entry)
    return tuple(out)


def parse_capabilities(obj: object, side: str, field: str | None = None) -> tuple[str, ...]:
    """A sorted, de-duplicated capability set; ``side`` is ``required`` or ``worker``
    (the original's error codes), ``field`` the request field it came from."""
    if obj is None:
        return ()
    field = field or ("policy.routing_requirements.required_capabilities"
                      if side == "required" else "capabilities")

    def bad(code: str) -> InvalidInput:
        return InvalidInput(f"{field}: {side}:{code}", kind="invalid_capabilities")

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
        return parse_policy(json.loads(stored) if stored else None, lenient=True)
    except (InvalidInput, ValueError, TypeError, RecursionError):
        log.error("a stored execution policy could not be read; using the defaults: %.200s",
                  stored)
        return ExecutionPolicy()
