"""What runs before a handler: CORS preflights, Bearer auth, body caps."""

from __future__ import annotations

import hmac

from quart import Response, request

from appliance.config import Config
from appliance.core.errors import PayloadTooLarge, Unauthorized

#: Body caps: batch routes, routes carrying payloads, everything else.
BATCH = 16 * 1_048_576
LARGE = 1_048_576
CONTROL = 65_536
SIGNAL = 262_144  # a signal's body: its payload (the original's cap)
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
