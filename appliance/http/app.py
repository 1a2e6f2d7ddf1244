"""The HTTP API: the resource modules' routes, behind one set of guards and one error
mapping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from appliance.config import Config
from appliance.service import Service

from . import admission, executions, flows, guards, streams, suspension, workers
from .connection import ShieldedSendConnection
from .errors import error_response, json_response
from .guards import BATCH
from .routing import Routes

#: Each resource module contributes ``routes(service, r) -> Blueprint``.
RESOURCES = (executions, workers, flows, suspension, admission, streams)


def create_app(service: Service, config: Config, resources: Sequence[Any] = RESOURCES
               ) -> QuartTrio:
    """The app; ``resources`` are modules (or objects) with ``routes(service, r)``."""
    app = QuartTrio("flowfabric")
    app.asgi_http_class = ShieldedSendConnection
    app.config["MAX_CONTENT_LENGTH"] = BATCH  # each route's own cap is checked by the guard
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.config["BODY_TIMEOUT"] = config.body_timeout_s
    app.url_map.merge_slashes = False  # '//' is not a route (werkzeug would answer HTML 308)
    r = Routes()

    @app.before_request
    async def _guard() -> Response | None:
        answer = guards.preflight(config)
        if answer is not None:
            return answer
        guards.check_auth(config)
        guards.check_declared_length(r.cap())
        return None

    @app.after_request
    async def _cors(response: Response) -> Response:
        return guards.add_cors_headers(config, response)

    @app.errorhandler(Exception)
    async def _error(exc: Exception) -> Response:
        return error_response(exc, request.method, request.path)

    @app.route("/healthz", methods=["GET"])
    async def healthz() -> Response:
        await service.backend.ping()
        return json_response({"status": "ok"})

    for resource in resources:
        app.register_blueprint(resource.routes(service, r))
    return app
