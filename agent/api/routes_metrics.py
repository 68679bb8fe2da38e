"""GET /metrics: the agent's Prometheus metrics in the text exposition format.

Server counts span every project, so on TCP only an admin token may read them. On the
unix socket a request without a token gets the listener's default context: the socket
is 0660 for an operator group, and being able to connect is the authorization there (a
token that is sent still has to be an admin's). Not in the OpenAPI document: it is no
part of the Compute API, and no OpenStack client calls it."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.api.auth import TOKEN_HEADER, Ctx, deps_of
from agent.api.errors import ApiFault
from agent.api.routing import Router
from agent.core.metrics import Metrics

router = Router()

# Any other method a client makes up is "other": a label value per made-up method would
# let one client grow the series without bound.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

ADMIN_ONLY = "Metrics need an admin token."
METRICS_PATH = "/metrics"


@router.get(METRICS_PATH, include_in_schema=False)
async def metrics(request: Request, ctx: Ctx) -> Response:
    deps = deps_of(request)
    local = deps.default_context is not None and TOKEN_HEADER not in request.headers
    if not (ctx.is_admin or local):
        raise ApiFault(403, ADMIN_ONLY)
    body, content_type = deps.metrics.exposition()
    return Response(content=body, media_type=content_type)


def route_template(scope: Scope) -> str:
    """The template of the route that served this request ("/v2.1/{project_id}/servers/
    {server_id}"), or "unmatched": every route is served at its whole template
    (agent/api/routing.py's ApiRoute; it used to be rebuilt from the path, which took a
    prefix segment for any parameter of the same value). Only templates can appear, so
    the label values are bounded whatever paths clients send."""
    template = getattr(scope.get("route"), "path", None)
    return template if isinstance(template, str) else "unmatched"


class RequestMetrics:
    """Times every request that reaches the routes into
    compute_agent_api_request_duration_seconds, labelled by method, route template (never
    the raw path: ids would make a series per server) and status class. Sits inside
    ApiMiddleware, so requests refused before (401, 406, 413) are not counted."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before answering

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        began = time.monotonic()
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            template = route_template(scope)
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.api_request_duration.labels(
                method, template, f"{status // 100}xx").observe(time.monotonic() - began)
