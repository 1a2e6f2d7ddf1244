"""Between Python and the Lua library: records, call arguments, answers and typed errors."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, fields
from typing import Any

from appliance.core.errors import (Conflict, ExecutionNotActive, ExecutionNotFound,
                                   InvalidHandle, InvalidInput, LeaseExpired, LeaseRevoked,
                                   StaleLease)
from appliance.core.handle import Fence
from appliance.core.record import Execution
from appliance.core.transitions import OPERATOR

_FIELDS = {f.name: f for f in fields(Execution)}
_INTS = {name for name, f in _FIELDS.items() if str(f.type).startswith("int")}
_REQUIRED = [name for name, f in _FIELDS.items()
             if f.default is MISSING and f.default_factory is MISSING]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def execution_from(stored: Mapping[Any, Any] | Sequence[Any]) -> Execution | None:
    """An ``Execution`` from HGETALL (a dict, or the flat list a function returns)."""
    pairs: Iterable[tuple[Any, Any]] = (
        stored.items() if isinstance(stored, Mapping)
        else zip(stored[::2], stored[1::2], strict=True))
    values: dict[str, Any] = {}
    for raw_key, raw_value in pairs:
        key = _text(raw_key)
        if key in _FIELDS:
            text = _text(raw_value)
            values[key] = int(text) if key in _INTS else text
    if not values:
        return None
    missing = [k for k in _REQUIRED if k not in values]
    if missing:
        raise ValueError(f"stored execution record lacks {', '.join(missing)}")
    return Execution(**values)


def row_of(ex: Execution) -> dict[str, Any]:
    """The record as the library stores it: None fields are absent."""
    return {k: v for k, v in ex.to_row().items() if v is not None}


def fence_args(fence: Fence) -> dict[str, Any]:
    return {"lease_id": fence.lease_id, "lease_epoch": fence.lease_epoch,
            "attempt_id": fence.attempt_id}


def encode_args(args: Mapping[str, Any]) -> str:
    """ARGV[1]: JSON without nulls (cjson's null is truthy in Lua; absent means None)."""
    return json.dumps({k: v for k, v in args.items() if v is not None}, separators=(",", ":"))


def decode_answer(raw: bytes | str) -> dict[str, Any]:
    return json.loads(_text(raw))


def outcome_of(answer: dict[str, Any], execution_id: str, *, fence: Fence | None = None,
               by_handle: bool = False) -> dict[str, Any]:
    """The outcome of ``{"ok": ...}``, or the typed error of ``{"err": ...}`` raised."""
    if "err" in answer:
        raise error_of(answer["err"], answer.get("d") or {}, execution_id, fence=fence,
                       by_handle=by_handle)
    return answer["ok"]


def error_of(kind: str, d: dict[str, Any], eid: str, *, fence: Fence | None = None,
             by_handle: bool = False) -> Exception:
    """The library's error kinds as the typed errors (and messages) of core.transitions."""
    if kind == "not_found":
        if by_handle:
            return InvalidHandle(f"handle names execution {eid}, which does not exist (or was "
                                 f"purged after retention)")
        return ExecutionNotFound(eid)
    if kind == "execution_not_active":
        return ExecutionNotActive(eid, lifecycle_phase=d["lifecycle_phase"],
                                  terminal_outcome=d["terminal_outcome"],
                                  lease_epoch=d["lease_epoch"], attempt_id=d.get("attempt_id"))
    if kind == "stale_lease":
        held = fence.lease_epoch if fence is not None else None
        return StaleLease(f"stale lease for {eid}: the handle holds epoch {held}, the current "
                          f"lease is epoch {d['lease_epoch']}")
    if kind == "lease_expired":
        return LeaseExpired(f"the lease on {eid} expired at {d.get('lease_expires_at')}; "
                            f"renew before lease_expires_at")
    if kind == "lease_revoked":
        return LeaseRevoked(f"the lease on {eid} was revoked ({d.get('reason')}); stop working "
                            f"on it")
    if kind == "execution_not_eligible":
        return Conflict(f"execution {eid} is {d['public_state']}; only waiting executions can "
                        f"be re-prioritised", kind=kind)
    if kind == "execution_not_terminal":
        return Conflict(f"execution {eid} is {d['public_state']}; only terminal executions can "
                        f"be replayed", kind=kind)
    if kind == "max_replays_exhausted":
        return Conflict(f"execution {eid} was already replayed {d['replay_count']} times "
                        f"(policy max_replay_count={d['limit']})", kind=kind)
    if kind == "fence_required":
        return InvalidInput(f"fence_required: cancelling an active execution with source "
                            f"{d['source']!r} needs the lease handle (or use source "
                            f"'{OPERATOR}')", kind="fence_required")
    return RuntimeError(f"the flowfabric function library answered an unknown error {kind!r}")
