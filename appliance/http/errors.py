"""The one place errors become HTTP responses: ``{error, kind, retryable}``."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from quart import Response
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import RoutingException

from appliance.core.errors import FlowFabricError

log = logging.getLogger("flowfabric.http")

_HTTP_KINDS = {400: "invalid_input", 404: "route_not_found", 405: "method_not_allowed",
               408: "body_timeout", 413: "payload_too_large", 415: "unsupported_media_type"}


_encode = msgspec.json.Encoder().encode


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    """Strict JSON: msgspec never writes ``NaN``/``Infinity`` (which a JavaScript client
    cannot parse); a non-finite float, which validation keeps out, would be ``null``."""
    return Response(_encode(body), status=status, content_type="application/json",
                    headers=headers)


def error_response(exc: BaseException, method: str = "", path: str = "") -> Response:
    if isinstance(exc, FlowFabricError):
        return json_response(exc.to_json(), exc.status, exc.headers() or None)
    if isinstance(exc, RoutingException) and (not isinstance(exc, HTTPException)
                                              or 300 <= (exc.code or 0) < 400):
        exc = NotFound()  # werkzeug's redirects (a trailing or doubled slash): not a route
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        if status == 404:
            message = f"no route for {method} {path}; see spec/http-api.md for the routes"
        elif status == 408:
            message = ("the request body did not arrive within FF_BODY_TIMEOUT_MS; send the "
                       "whole body promptly")
        elif status == 405:
            allowed = ", ".join(sorted(getattr(exc, "valid_methods", None) or []))
            message = f"method {method} is not allowed on {path}; allowed: {allowed}"
        else:
            message = exc.description or exc.name
        body = {"error": message, "kind": _HTTP_KINDS.get(status, "http_error"),
                "retryable": False}
        headers = {"Connection": "close"} if status == 408 else {}
        if status == 405 and getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))  # type: ignore[attr-defined]
        return json_response(body, status, headers)
    log.error("unhandled error on %s %s", method, path, exc_info=exc)
    return json_response({"error": "internal error; the appliance log has the details",
                          "kind": "internal", "retryable": False}, 500)
