"""The HTTP API: the original's execution routes plus the worker routes."""

from __future__ import annotations

from quart import Response, request
from quart_trio import QuartTrio

from appliance.config import Config
from appliance.service import Service

from . import guards
from .connection import ShieldedSendConnection
from .errors import error_response, json_response
from .guards import CONTROL, LARGE, json_body


def create_app(service: Service, config: Config) -> QuartTrio:
    app = QuartTrio("flowfabric")
    app.asgi_http_class = ShieldedSendConnection
    app.config["MAX_CONTENT_LENGTH"] = LARGE
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.config["BODY_TIMEOUT"] = config.body_timeout_s
    app.url_map.merge_slashes = False  # '//' is not a route (werkzeug would answer HTML 308)
    caps: dict[str, int] = {}

    def route(path: str, methods: list[str], cap: int = CONTROL):
        def register(fn):  # type: ignore[no-untyped-def]
            endpoint = f"{fn.__name__}"
            caps[endpoint] = cap
            app.add_url_rule(path, endpoint, fn, methods=methods)
            return fn
        return register

    @app.before_request
    async def _guard() -> Response | None:
        answer = guards.preflight(config)
        if answer is not None:
            return answer
        guards.check_auth(config)
        guards.check_declared_length(caps.get(request.endpoint or "", CONTROL))
        return None

    @app.after_request
    async def _cors(response: Response) -> Response:
        return guards.add_cors_headers(config, response)

    @app.errorhandler(Exception)
    async def _error(exc: Exception) -> Response:
        return error_response(exc, request.method, request.path)

    async def body() -> object:
        return await json_body(caps.get(request.endpoint or "", CONTROL))

    # -- health ---------------------------------------------------------------------
    @route("/healthz", ["GET"])
    async def healthz() -> Response:
        await service.backend.ping()
        return json_response({"status": "ok"})

    # -- executions -------------------------------------------------------------------
    @route("/v1/executions", ["GET"])
    async def list_executions() -> Response:
        return json_response(await service.list_executions(dict(request.args)))

    @route("/v1/executions", ["POST"], LARGE)
    async def create_execution() -> Response:
        status, outcome = await service.create_execution(await body())
        return json_response(outcome, status)

    @route("/v1/executions/<execution_id>", ["GET"])
    async def get_execution(execution_id: str) -> Response:
        return json_response(await service.get_execution(execution_id))

    @route("/v1/executions/<execution_id>/state", ["GET"])
    async def get_state(execution_id: str) -> Response:
        return json_response(await service.get_state(execution_id))

    @route("/v1/executions/<execution_id>/result", ["GET"])
    async def get_result(execution_id: str) -> Response:
        data, encoding = await service.get_result(execution_id)
        headers = {"X-FlowFabric-Result-Encoding": encoding} if encoding else None
        return Response(data, status=200, content_type="application/octet-stream",
                        headers=headers)

    @route("/v1/executions/<execution_id>/cancel", ["POST"])
    async def cancel_execution(execution_id: str) -> Response:
        return json_response(await service.cancel(execution_id, await body()))

    @route("/v1/executions/<execution_id>/priority", ["PUT"])
    async def change_priority(execution_id: str) -> Response:
        return json_response(await service.change_priority(execution_id, await body()))

    @route("/v1/executions/<execution_id>/replay", ["POST"])
    async def replay_execution(execution_id: str) -> Response:
        return json_response(await service.replay(execution_id, await body()))

    @route("/v1/executions/<execution_id>/revoke-lease", ["POST"])
    async def revoke_lease(execution_id: str) -> Response:
        return json_response(await service.revoke_lease(execution_id, await body()))

    # -- workers --------------------------------------------------------------------------
    @route("/v1/workers/<worker_id>/claim-task", ["POST"])
    async def claim_task(worker_id: str) -> Response:
        task = await service.claim_task(worker_id, await body())
        return json_response(task) if task is not None else Response("", status=204)

    @route("/v1/executions/<execution_id>/renew", ["POST"])
    async def renew_lease(execution_id: str) -> Response:
        return json_response(await service.renew(execution_id, await body()))

    @route("/v1/executions/<execution_id>/progress", ["POST"])
    async def report_progress(execution_id: str) -> Response:
        return json_response(await service.progress(execution_id, await body()))

    @route("/v1/executions/<execution_id>/complete", ["POST"], LARGE)
    async def complete_execution(execution_id: str) -> Response:
        return json_response(await service.complete(execution_id, await body()))

    @route("/v1/executions/<execution_id>/fail", ["POST"])
    async def fail_execution(execution_id: str) -> Response:
        return json_response(await service.fail(execution_id, await body()))

    @route("/v1/executions/<execution_id>/delay", ["POST"])
    async def delay_execution(execution_id: str) -> Response:
        return json_response(await service.delay(execution_id, await body()))

    return app
