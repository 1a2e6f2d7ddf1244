"""Typed structures, read two ways: request bodies strictly, stored data leniently.

Request bodies are ``msgspec.Struct`` types (``Body``: unknown fields refused)
that decode and validate in one step; ``invalid`` turns msgspec's error into a
typed 400 that names the field and says what to fix. Data this appliance stored
itself (perhaps under older, looser rules) is read with ``lenient`` from the
same declarations: a number outside its range is clamped into it, a value of the
wrong type reads as the field's default, unknown fields are ignored — tightening
a request field never makes an operation on stored data fail.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta
from msgspec import inspect as mi

from .errors import InvalidInput
from .limits import DURATION_MAX_MS, INT32_MAX, INT32_MIN, TIME_MAX_MS

S = TypeVar("S", bound=msgspec.Struct)

#: Field types request bodies share (their ranges are spec/http-api.md § Numbers).
Time = Annotated[int, Meta(ge=0, le=TIME_MAX_MS)]
Duration = Annotated[int, Meta(ge=0, le=DURATION_MAX_MS)]
Int32 = Annotated[int, Meta(ge=INT32_MIN, le=INT32_MAX)]
Byte = Annotated[int, Meta(ge=0, le=255)]
Str256 = Annotated[str, Meta(max_length=256)]
Str1024 = Annotated[str, Meta(max_length=1024)]
Str4096 = Annotated[str, Meta(max_length=4096)]


class Body(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base of every request body: unknown fields are an error, not ignored."""


# -- strict: msgspec's errors as ours --------------------------------------------------------

_WHERE = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_TYPES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
          "object": "a JSON object", "array": "an array", "null": "null",
          "bytes": "a base64 string"}


def _friendly(types: str) -> str:
    names = [t.strip() for t in types.split("|") if t.strip() != "null"]
    return " or ".join(_TYPES.get(t, t) for t in names) or "null"


def field_path(raw: str) -> str:
    """msgspec's ``$.a.b[0]`` / ``$.tags[...]`` as ``a.b[0]`` / ``tags``."""
    return raw.replace("[...]", "").lstrip(".")


def invalid(exc: msgspec.ValidationError, kind: type[Any] | None = None,
            where: str = "") -> InvalidInput:
    """A typed 400 naming the field, from msgspec's validation error; the class is the one
    ``kind.ERRORS`` gives the part of the body it is about (default ``InvalidInput``)."""
    match = _WHERE.match(str(exc))
    assert match is not None
    what, path = match["what"], field_path(match["path"] or "")
    error = next((cls for prefix, cls in getattr(kind, "ERRORS", {}).items()
                  if path.startswith(prefix)), InvalidInput)
    if where:
        path = f"{where}.{path}" if path else where
    if m := re.match(r"Object contains unknown field `(.*)`$", what):
        inside = f" in {path}" if path else ""
        return error(f"unknown field {m[1]!r}{inside}; remove it (see the API reference in "
                     f"spec/http-api.md)")
    if m := re.match(r"Object missing required field `(.*)`$", what):
        return error(f"{path + '.' if path else ''}{m[1]}: is required")
    name = path or "the request body"
    if m := re.match(r"Expected `(.*?)`, got `(.*?)`$", what):
        return error(f"{name}: must be {_friendly(m[1])}, got {_friendly(m[2])}")
    if m := re.match(r"Expected `(\w+)` (<=|>=|<|>) (\S+)$", what):
        bound = {"<=": "at most", ">=": "at least", "<": "less than", ">": "more than"}[m[2]]
        return error(f"{name}: must be {_friendly(m[1])} {bound} {m[3]}")
    if m := re.match(r"Expected `(\w+)` of length (<=|>=) (\d+)$", what):
        unit = "characters" if m[1] == "str" else "items"
        bound = "at most" if m[2] == "<=" else "at least"
        return error(f"{name}: must hold {bound} {m[3]} {unit}")
    if what == "Number out of range":
        return error(f"{name}: the number is out of range (see spec/http-api.md § Numbers)")
    if what == "Invalid base64 encoded string":
        return error(f"{name}: is not valid base64")
    if m := re.match(r"Invalid enum value (.*)$", what):
        shown = m[1] if len(m[1]) <= 80 else m[1][:60] + "…"
        return error(f"{name}: {shown} is not one of the allowed values (see spec/http-api.md)")
    return error(f"{name}: {what}")


def convert(doc: Any, kind: type[S], where: str = "") -> S:
    """Validate already-decoded JSON against ``kind`` (errors name ``where.<field>``)."""
    try:
        return msgspec.convert(doc, kind)
    except msgspec.ValidationError as exc:
        raise invalid(exc, kind, where) from None


# -- lenient: stored data never fails to read -------------------------------------------------

def lenient(doc: Any, kind: type[S]) -> S:
    """Read ``doc`` as ``kind`` without failing on values (see the module docstring).

    Raises ``ValueError`` only when a required field is missing or unreadable.
    """
    info = mi.type_info(kind)
    assert isinstance(info, mi.StructType)
    values: dict[str, Any] = {}
    source = doc if isinstance(doc, dict) else {}
    for f in info.fields:
        if f.encode_name not in source:
            if f.required:
                raise ValueError(f"stored data lacks {f.name}")
            continue
        value = _value(source[f.encode_name], f.type)
        if value is not _UNREADABLE:
            values[f.name] = value
        elif f.required:
            raise ValueError(f"stored data has an unreadable {f.name}")
    return kind(**values)


class _Unreadable:
    pass


_UNREADABLE: Any = _Unreadable()


def _value(raw: Any, t: mi.Type) -> Any:
    """``raw`` read as type ``t``, or ``_UNREADABLE``."""
    if isinstance(t, mi.UnionType):
        if raw is None and any(isinstance(x, mi.NoneType) for x in t.types):
            return None
        for option in t.types:
            if not isinstance(option, mi.NoneType):
                value = _value(raw, option)
                if value is not _UNREADABLE:
                    return value
        return _UNREADABLE
    if isinstance(t, mi.NoneType):
        return None if raw is None else _UNREADABLE
    if isinstance(t, (mi.IntType, mi.FloatType)):
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            return _UNREADABLE
        if isinstance(raw, float) and not math.isfinite(raw):
            return _UNREADABLE
        low = t.ge if t.ge is not None else t.gt
        high = t.le if t.le is not None else t.lt
        number = min(max(raw, low if low is not None else raw), high if high is not None else raw)
        return int(number) if isinstance(t, mi.IntType) else float(number)
    if isinstance(t, mi.StrType):
        return raw if isinstance(raw, str) else _UNREADABLE
    if isinstance(t, mi.BoolType):
        return raw if isinstance(raw, bool) else _UNREADABLE
    if isinstance(t, mi.LiteralType):
        return raw if raw in t.values else _UNREADABLE
    if isinstance(t, mi.ListType):
        if not isinstance(raw, list):
            return _UNREADABLE
        items = [_value(item, t.item_type) for item in raw]
        return [item for item in items if item is not _UNREADABLE]
    if isinstance(t, mi.DictType):
        if not isinstance(raw, dict):
            return _UNREADABLE
        pairs = ((k, _value(v, t.value_type)) for k, v in raw.items() if isinstance(k, str))
        return {k: v for k, v in pairs if v is not _UNREADABLE}
    if isinstance(t, mi.StructType):
        try:
            return lenient(raw, t.cls)
        except ValueError:
            return _UNREADABLE
    if isinstance(t, mi.AnyType):
        return raw
    return _UNREADABLE
