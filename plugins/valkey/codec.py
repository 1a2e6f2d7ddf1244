"""Between Python and the Lua library: records, call arguments and answers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, fields
from typing import Any

from msgspec import json as _json

from appliance.core.flows import (
    EDGE_COLUMNS,
    FLOW_COLUMNS,
    GROUP_COLUMNS,
    Edge,
    EdgeGroup,
    Flow,
)
from appliance.core.record import Execution

_FIELDS = {f.name: f for f in fields(Execution)}
_INTS = {name for name, f in _FIELDS.items() if str(f.type).startswith("int")}
_REQUIRED = [name for name, f in _FIELDS.items()
             if f.default is MISSING and f.default_factory is MISSING]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


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
