"""Request bodies: read under the route's cap, decoded and validated into their typed
structure in one step, with errors that name the field.

The fast path is msgspec straight from the bytes. When msgspec refuses the bytes
themselves (malformed JSON, ``NaN``, a lone surrogate) or they hold a NUL, the slow
path decodes them with the standard library to say precisely what is wrong and where;
every string must be storable by every backend.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import msgspec
from quart import request
from werkzeug.exceptions import RequestEntityTooLarge

from appliance.core.errors import InvalidJson, UnsupportedMediaType
from appliance.core.schema import Body, convert, invalid

from .guards import too_large

B = TypeVar("B", bound=Body)


async def read(cap: int) -> bytes:
    """The raw body (no more than ``cap`` bytes), checked to be JSON if not empty."""
    try:
        data = await request.get_data(cache=False)
    except RequestEntityTooLarge:  # a chunked body past the global cap
        raise too_large(cap) from None
    if len(data) > cap:
        raise too_large(cap)
    if data.strip():
        ctype = (request.mimetype or "").lower()
        if ctype != "application/json" and not ctype.endswith("+json"):
            raise UnsupportedMediaType(f"send the body as JSON with 'Content-Type: "
                                       f"application/json' (got {ctype or 'no content type'!r})")
    return data


def decode(data: bytes, kind: type[B]) -> B:
    """``data`` as ``kind`` (an empty body reads as ``{}``)."""
    if not data.strip():
        data = b"{}"
    if b"\\u0000" not in data:
        try:
            return msgspec.json.decode(data, type=kind)
        except msgspec.ValidationError as exc:
            if " - at `$" in str(exc):
                raise invalid(exc, kind) from None
            # Not an object at all: first say if it is not even JSON (e.g. nested too deep).
        except msgspec.DecodeError:
            pass  # say precisely what is wrong, below
    doc = decode_json(data)
    check_text(doc)
    return convert(doc, kind)


def decode_json(data: bytes) -> Any:
    """Strict JSON: ``NaN``, ``Infinity`` and numbers too large for a double are refused
    with an error that names the field holding them."""
    refused: list[_NotFinite] = []

    def constant(text: str) -> _NotFinite:
        refused.append(_NotFinite(text))
        return refused[-1]

    def number(text: str) -> float | _NotFinite:
        value = float(text)
        return value if math.isfinite(value) else constant(text)

    try:
        body = json.loads(data, parse_constant=constant, parse_float=number)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJson(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise InvalidJson("invalid JSON: nested too deeply") from None
    if refused:
        where = _path_of(body, lambda item: isinstance(item, _NotFinite)) or "the request body"
        raise InvalidJson(f"{where}: {refused[0].text[:40]} is not a finite JSON number; send "
                          f"a number a 64-bit float can hold")
    return body


class _NotFinite:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _path_of(body: Any, bad: Callable[[Any], bool]) -> str | None:
    """Where in ``body`` the first value (or field name) ``bad`` picks out is."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, item = stack.pop()
        if bad(item):
            return path or None
        if isinstance(item, dict):
            for key, value in item.items():
                if bad(key):
                    return path or "the request body"
                stack.append((f"{path}.{key}" if path else key, value))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item))
    return None


def check_text(body: Any) -> None:
    """Every string must be storable by every backend: UTF-8 encodable (no lone
    surrogates from ``\\ud800``-style escapes) and free of NUL characters. The error
    names where the string is (``tags.app.key``, ``policy.fallback_policy.tiers[0]``)."""
    stack = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(v for v in item if not isinstance(v, int))
        elif isinstance(item, str) and not _storable(item):
            raise _unstorable(body)


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unstorable(body: Any) -> InvalidJson:
    """The error for the first unstorable string in ``body`` (a slow walk, taken only
    once we know there is one)."""
    def bad(item: Any) -> bool:
        return isinstance(item, str) and not _storable(item)
    where = _path_of(body, bad) or "the request body"
    text = next(s for s in _strings(body) if not _storable(s))
    return _text_error(where, text)


def _strings(body: Any) -> Iterator[str]:
    stack = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _text_error(where: str, text: str) -> InvalidJson:
    why = ("must not contain NUL (\\u0000) characters" if "\x00" in text
           else "holds a lone UTF-16 surrogate (not valid UTF-8)")
    return InvalidJson(f"{where}: strings {why}: {text[:40]!r}")


