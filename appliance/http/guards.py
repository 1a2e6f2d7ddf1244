"""What runs before a handler: CORS preflights, Bearer auth, body caps, JSON decoding."""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

from quart import Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from appliance.config import Config
from appliance.core.errors import (InvalidInput, PayloadTooLarge, Unauthorized,
                                   UnsupportedMediaType)

LARGE = 1_048_576
MEDIUM = 262_144
CONTROL = 65_536
OPEN_PATHS = frozenset({"/healthz"})


def route_template() -> str:
    rule = request.url_rule
    if rule is None:
        return request.path
    return rule.rule.replace("<", "{").replace(">", "}")


def check_auth(config: Config) -> None:
    if not config.api_token or request.path in OPEN_PATHS:
        return
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(  # schemes are case-insensitive
            token.strip().encode(), config.api_token.encode()):
        raise Unauthorized("missing or invalid Authorization header; send "
                           "'Authorization: Bearer <FF_API_TOKEN>'")


def check_declared_length(cap: int) -> None:
    length = request.content_length
    if length is not None and length > cap:
        raise too_large(cap)


def too_large(cap: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body exceeds {cap} bytes for {request.method} "
                           f"{route_template()}",
                           details={"limit_bytes": cap, "route": route_template()})


async def json_body(cap: int) -> Any:
    """The decoded JSON body, or None when there is none."""
    try:
        data = await request.get_data(cache=False)
    except RequestEntityTooLarge:  # a chunked body past the global cap
        raise too_large(cap) from None
    if len(data) > cap:
        raise too_large(cap)
    if not data.strip():
        return None
    ctype = (request.mimetype or "").lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaType(f"send the body as JSON with 'Content-Type: "
                                   f"application/json' (got {ctype or 'no content type'!r})")
    body = decode_json(data)
    _check_text(body)
    return body


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
        raise InvalidInput(f"invalid JSON: {exc}", kind="invalid_json") from None
    except RecursionError:
        raise InvalidInput("invalid JSON: nested too deeply", kind="invalid_json") from None
    if refused:
        where = _path_of(body, lambda item: isinstance(item, _NotFinite)) or "the request body"
        raise InvalidInput(f"{where}: {refused[0].text[:40]} is not a finite JSON number; send "
                           f"a number a 64-bit float can hold", kind="invalid_json")
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


def _check_text(body: Any) -> None:
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


def _unstorable(body: Any) -> InvalidInput:
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


def _text_error(where: str, text: str) -> InvalidInput:
    why = ("must not contain NUL (\\u0000) characters" if "\x00" in text
           else "holds a lone UTF-16 surrogate (not valid UTF-8)")
    return InvalidInput(f"{where}: strings {why}: {text[:40]!r}", kind="invalid_json")


def preflight(config: Config) -> Response | None:
    """Answer a CORS preflight for a configured origin before auth sees it."""
    origin = request.headers.get("Origin")
    if (request.method != "OPTIONS" or origin is None
            or "Access-Control-Request-Method" not in request.headers):
        return None
    response = Response("", status=204)
    if origin_allowed(config, origin):
        headers = "content-type, authorization" if config.api_token else "content-type"
        response.headers.update({
            "Access-Control-Allow-Origin": "*" if "*" in config.cors_origins else origin,
            "Access-Control-Allow-Methods": "GET, POST, PUT",
            "Access-Control-Allow-Headers": headers,
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        })
    return response


def origin_allowed(config: Config, origin: str) -> bool:
    return "*" in config.cors_origins or origin in config.cors_origins


def add_cors_headers(config: Config, response: Response) -> Response:
    origin = request.headers.get("Origin")
    if origin is not None and config.cors_origins and origin_allowed(config, origin):
        response.headers["Access-Control-Allow-Origin"] = (
            "*" if "*" in config.cors_origins else origin)
        response.headers["Vary"] = "Origin"
    return response
