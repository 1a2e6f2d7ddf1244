"""Between Python and the Lua library: records, call arguments and answers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, fields
from typing import Any

from msgspec import json as _json

from appliance.core.admission import Budget, Worker
from appliance.core.flows import (
    EDGE_COLUMNS,
    FLOW_COLUMNS,
    GROUP_COLUMNS,
    Edge,
    EdgeGroup,
    Flow,
)
from appliance.core.record import Execution
from appliance.core.suspension import (
    SIGNAL_COLUMNS,
    WAITPOINT_COLUMNS,
    Signal,
    Waitpoint,
)
from appliance.core.tokens import Keystore

_FIELDS = {f.name: f for f in fields(Execution)}
_INTS = {name for name, f in _FIELDS.items() if str(f.type).startswith("int")}
_REQUIRED = [name for name, f in _FIELDS.items()
             if f.default is MISSING and f.default_factory is MISSING]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


text = _text


#: field name (bytes and str) -> (name, how to read its stored value; int() reads digits
#: from bytes as from str).
_READ: dict[bytes | str, tuple[str, Any]] = {}
for _name in _FIELDS:
    _READ[_name] = _READ[_name.encode()] = (_name, int if _name in _INTS else _text)


def execution_from(stored: Mapping[Any, Any] | Sequence[Any]) -> Execution | None:
    """An ``Execution`` from HGETALL (a dict, or the flat list a function returns)."""
    if isinstance(stored, Mapping):
        pairs: Iterable[tuple[Any, Any]] = stored.items()
    else:
        if len(stored) % 2:
            raise ValueError("stored execution record is not a list of field/value pairs")
        flat = iter(stored)
        pairs = zip(flat, flat)
    values: dict[str, Any] = {}
    for raw_key, raw_value in pairs:
        known = _READ.get(raw_key)
        if known is not None:
            values[known[0]] = known[1](raw_value)
    if not values:
        return None
    missing = [k for k in _REQUIRED if k not in values]
    if missing:
        raise ValueError(f"stored execution record lacks {', '.join(missing)}")
    return Execution(**values)


def row_of(ex: Execution) -> dict[str, Any]:
    """The record as the library stores it: None fields are absent."""
    return {k: v for k, v in ex.to_row().items() if v is not None}


def without_nulls(args: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments as Lua reads them: cjson's null is truthy there, absent means None."""
    return {k: v for k, v in args.items() if v is not None}


def encode_args(args: Mapping[str, Any]) -> str:
    """ARGV[1]: JSON without top-level nulls."""
    return _json.encode(without_nulls(args))


def decode_answer(raw: bytes | str) -> dict[str, Any]:
    return _json.decode(raw)


# -- flows ----------------------------------------------------------------------------------

_FLOW_INTS = {f.name for f in fields(Flow) if str(f.type).startswith("int")}


def flow_from(stored: Mapping[Any, Any]) -> Flow | None:
    """A ``Flow`` from its record (HGETALL, or the JSON object the library answers)."""
    values: dict[str, Any] = {}
    for raw_key, raw_value in stored.items():
        name = _text(raw_key)
        if name in FLOW_COLUMNS and raw_value is not None:
            values[name] = int(raw_value) if name in _FLOW_INTS else _text(raw_value)
    return Flow(**values) if values else None


def edge_from(raw: bytes | str) -> Edge:
    doc = _json.decode(raw)
    return Edge(**{c: doc.get(c) for c in EDGE_COLUMNS})


def group_from(raw: bytes | str) -> EdgeGroup:
    doc = _json.decode(raw)
    return EdgeGroup(**{c: doc[c] for c in GROUP_COLUMNS if c in doc})


def listed(value: Any) -> list[Any]:
    """A list the library answered (an empty one reads as ``{}`` in its JSON)."""
    return list(value) if isinstance(value, list) else []


# -- suspension ------------------------------------------------------------------------------

_WP_INTS = {f.name for f in fields(Waitpoint) if str(f.type).startswith("int")}
_SIG_INTS = {f.name for f in fields(Signal) if str(f.type).startswith("int")}


def _pairs(stored: Mapping[Any, Any] | Sequence[Any]) -> Iterable[tuple[Any, Any]]:
    """Field/value pairs of HGETALL (a dict) or of a flat list a function returns."""
    if isinstance(stored, Mapping):
        return stored.items()
    flat = iter(stored)
    return zip(flat, flat, strict=False)


def waitpoint_from(stored: Mapping[Any, Any] | Sequence[Any]) -> Waitpoint | None:
    """A ``Waitpoint`` from its hash (or the JSON object the library answers)."""
    values: dict[str, Any] = {}
    for raw_key, raw_value in _pairs(stored):
        name = _text(raw_key)
        if name in WAITPOINT_COLUMNS and raw_value is not None:
            values[name] = int(raw_value) if name in _WP_INTS else _text(raw_value)
    return Waitpoint(**values) if values else None


def signal_from(stored: Mapping[Any, Any] | Sequence[Any]) -> Signal:
    """A ``Signal`` from its hash; the payload as stored, byte for byte."""
    values: dict[str, Any] = {}
    for raw_key, raw_value in _pairs(stored):
        name = _text(raw_key)
        if name == "payload":
            values[name] = bytes(raw_value)
        elif name in SIGNAL_COLUMNS:
            values[name] = int(raw_value) if name in _SIG_INTS else _text(raw_value)
    return Signal(**values)


def keystore_from(doc: Mapping[str, Any]) -> Keystore:
    """The keystore the library answers: {current, secrets, expires} (expiries as text)."""
    return Keystore(doc.get("current"), dict(doc.get("secrets") or {}),
                    {kid: int(at) for kid, at in dict(doc.get("expires") or {}).items()})


def keystore_from_hash(stored: Mapping[Any, Any]) -> Keystore:
    """A partition's keystore replica (HGETALL: current, s:<kid>, e:<kid>)."""
    keys = Keystore()
    for raw_key, raw_value in stored.items():
        name, value = _text(raw_key), _text(raw_value)
        if name == "current":
            keys.current = value
        elif name.startswith("s:"):
            keys.secrets[name[2:]] = value
        elif name.startswith("e:"):
            keys.expires[name[2:]] = int(value)
    return keys


# -- admission -------------------------------------------------------------------------------

_BUDGET_FIELDS = {f.name: f for f in fields(Budget)}
_BUDGET_INTS = {name for name, f in _BUDGET_FIELDS.items() if str(f.type).startswith("int")}


def budget_fields(b: Budget) -> list[str]:
    """A new budget as the library stores it (HSET field/value pairs): the scalar columns
    (None absent), limits as JSON, u:<dim> -> usage."""
    flat: list[str] = []
    for name in _BUDGET_FIELDS:
        if name == "limits":
            flat += [name, b.limits_json()]
        elif name == "usage":
            for dim, used in b.usage.items():
                flat += ["u:" + dim, str(used)]
        else:
            value = getattr(b, name)
            if value is not None:
                flat += [name, str(value)]
    return flat


def budget_from(stored: Mapping[Any, Any] | Sequence[Any]) -> Budget | None:
    """A ``Budget`` from its hash (HGETALL, or the flat list a function returns)."""
    values: dict[str, Any] = {}
    usage: dict[str, int] = {}
    for raw_key, raw_value in _pairs(stored):
        name, value = _text(raw_key), _text(raw_value)
        if name.startswith("u:"):
            usage[name[2:]] = int(value)
        elif name == "limits":
            values[name] = Budget.decode_limits(value)
        elif name in _BUDGET_FIELDS and name != "usage":
            values[name] = int(value) if name in _BUDGET_INTS else value
    if "budget_id" not in values:
        return None
    return Budget(**values, usage=usage)


def worker_from(stored: Mapping[Any, Any]) -> Worker | None:
    """A registry entry from its hash."""
    doc = {_text(k): _text(v) for k, v in stored.items()}
    if "worker_id" not in doc:
        return None
    return Worker(doc["worker_id"], doc["worker_instance_id"],
                  tuple(_json.decode(doc.get("lanes") or "[]")),
                  tuple(_json.decode(doc.get("capabilities") or "[]")),
                  int(doc.get("liveness_ttl_ms") or 30_000), int(doc.get("registered_at") or 0),
                  int(doc.get("last_seen_at") or 0))
