"""The data part of the Lua library, generated from the Python definitions at load time.

Record fields, state tables, policy defaults and limits, error kinds, scanners and
the operation list come from ``appliance.core`` into a Lua prelude, so the two
cannot drift; the rules themselves are code, kept equal by the differential test
(tests/valkey/test_differential.py).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from appliance.backend.sql.flows import CANCEL_GRACE_MS, RESOLVE_MAX_STEPS
from appliance.core import conditions, flows, streams
from appliance.core import suspension as sp
from appliance.core.admission import wake_key
from appliance.core.errors import KINDS
from appliance.core.limits import DURATION_MAX_MS, U32_MAX
from appliance.core.operations import OPERATIONS
from appliance.core.policy import MULTIPLIER_MAX, Backoff, ExecutionPolicy, RetryPolicy
from appliance.core.record import Execution
from appliance.core.scanners import SCANNERS
from appliance.core.state import (
    _RUNNABLE_PUBLIC,
    _TERMINAL_PUBLIC,
    RECLAIMABLE,
    Blocking,
)
from appliance.core.transitions import PRIORITY_MAX, PRIORITY_MIN

HEADER = "-- Generated from appliance.core by flowfabric_valkey.generated: do not edit."


def lua(value: Any) -> str:
    """A Python value as a Lua literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        text = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + "".join(f"\\{ord(c):03d}" if ord(c) < 0x20 else c for c in text) + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua(str(k))}] = {lua(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(lua(v) for v in value) + "}"
    raise TypeError(f"no Lua literal for {value!r}")


def int_fields(record: type = Execution) -> list[str]:
    return [f.name for f in fields(record) if str(f.type).startswith("int")]


def prelude() -> str:
    """The generated definitions, as local variables the library's files use."""
    policy, retry, backoff = ExecutionPolicy(), RetryPolicy(), Backoff()
    tables: dict[str, Any] = {
        "INT_FIELDS": {name: True for name in int_fields()},
        "TERMINAL_PUBLIC": {str(k): str(v) for k, v in _TERMINAL_PUBLIC.items()},
        "RUNNABLE_PUBLIC": {str(k): str(v) for k, v in _RUNNABLE_PUBLIC.items()},
        "RECLAIMABLE": {str(k): True for k in sorted(RECLAIMABLE)},
        "ERROR_KINDS": {kind: True for kind, cls in sorted(KINDS.items()) if cls.template},
        "DEFAULTS": {
            "max_reclaim_count": policy.max_reclaim_count,
            "max_replay_count": policy.max_replay_count,
            "max_retries": retry.max_retries, "delay_ms": backoff.delay_ms,
            "initial_delay_ms": backoff.initial_delay_ms,
            "max_delay_ms": backoff.max_delay_ms, "multiplier": backoff.multiplier,
        },
        "LIMITS": {"u32_max": U32_MAX, "duration_max_ms": DURATION_MAX_MS,
                   "multiplier_min": 1.0, "multiplier_max": MULTIPLIER_MAX,
                   "priority_min": PRIORITY_MIN, "priority_max": PRIORITY_MAX},
        "SCANNERS": [{"name": s.name, "index": s.index, "clock": s.clock,
                      "only_field": s.only[0] if s.only else "",
                      "only_value": s.only[1] if s.only else ""} for s in SCANNERS],
        "OPERATIONS": [[op.name, op.lua] for op in OPERATIONS.values()],
        "WAKE_KEYS": {"quota": wake_key("quota", ""), "budget": wake_key("budget", ""),
                      "stream": wake_key("stream", "")},
        "FLOW_INT_FIELDS": {name: True for name in int_fields(flows.Flow)},
        "FLOWS": {"cancel_grace_ms": CANCEL_GRACE_MS, "resolve_max_steps": RESOLVE_MAX_STEPS,
                  "flow_cancel": flows.FLOW_CANCEL,
                  "cancel_answer_max": flows.CANCEL_ANSWER_MAX,
                  "sibling_satisfied": flows.SIBLING_SATISFIED,
                  "sibling_impossible": flows.SIBLING_IMPOSSIBLE},
        "SUSPENSION": {
            "wp_int_fields": {name: True for name in int_fields(sp.Waitpoint)},
            "sig_int_fields": {name: True for name in int_fields(sp.Signal)},
            "reasons": {k: str(v) for k, v in sp.REASONS.items()},
            "satisfied": conditions.SATISFIED, "appended": conditions.APPENDED,
            "duplicate": conditions.DUPLICATE,
            "not_in_condition": conditions.NOT_IN_CONDITION,
            "matcher_failed": conditions.MATCHER_FAILED, "buffered": conditions.BUFFERED,
            "waiting_for_signal": str(Blocking.WAITING_FOR_SIGNAL),
            "paused_by_operator": str(Blocking.PAUSED_BY_OPERATOR),
            "resume_delay": str(Blocking.WAITING_FOR_RESUME_DELAY),
            "waiting_for_children": str(Blocking.WAITING_FOR_CHILDREN),
            "waiting_children": sp.WAITING_CHILDREN},
        "STREAMS": {"retention_maxlen": streams.RETENTION_MAXLEN,
                    "summary_maxlen": streams.SUMMARY_MAXLEN,
                    "best_effort_floor": streams.BEST_EFFORT_FLOOR,
                    "best_effort_ceiling": streams.BEST_EFFORT_CEILING,
                    "ema_alpha": streams.EMA_ALPHA},
    }
    lines = [HEADER] + [f"local {name} = {lua(value)}" for name, value in tables.items()]
    return "\n".join(lines) + "\n"


def extra_rules() -> str:
    """Lua rules shipped by operations registered outside the in-tree library."""
    return "\n".join(op.lua_source for op in OPERATIONS.values() if op.lua_source)


def assemble(files: list[tuple[str, str]]) -> str:
    """The library: the first file's shebang line, the prelude, the files, the extra rules
    before the registration file (``90_register.lua``)."""
    names = [name for name, _ in files]
    register = names.index("90_register.lua")
    first = files[0][1]
    shebang, _, rest = first.partition("\n")
    parts = [shebang, prelude(), rest] + [text for _, text in files[1:register]]
    parts += [extra_rules()] + [text for _, text in files[register:]]
    return "\n".join(parts)
