"""The HTTP surface's factory: an OpenStack Compute API v2.1-compatible Starlette app
(served by agent/api/routing.py; FastAPI writes /openapi.json only, agent/api/openapi_doc.py).

    app = create_api(ApiDeps(servers=..., flavors=..., images=..., quotas=..., ports=...,
                             events=..., keypairs=..., consoles=...,
                             host_id=socket.gethostname(), tokens={...}))

Every dependency is a core service built once (agent/app.py); the routes call those only,
never the store or an adapter.

Every route is served under /v2.1/... and under /v2.1/{project_id}/... (Nova accepts
both; a project id in the URL must be the token's, as in Nova, even for an admin)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute

from agent.api import (
    routes_actions,
    routes_catalog,
    routes_console,
    routes_events,
    routes_keypairs,
    routes_metadata,
    routes_metrics,
    routes_network,
    routes_quotas,
    routes_server_groups,
    routes_server_info,
    routes_servers,
    versions,
)
from agent.api.auth import TokenInfo, check_project_in_path
from agent.api.errors import install_error_handlers
from agent.api.middleware import ApiMiddleware
from agent.api.routing import ApiRoute, Mount
from agent.api.view_cache import DetailFragments, ListAnswers
from agent.core.console import Consoles
from agent.core.event_feed import EventFeed
from agent.core.flavors import FlavorCatalog
from agent.core.images import ImageService
from agent.core.keypairs import KeypairService
from agent.core.metrics import Metrics
from agent.core.networks import PortService
from agent.core.quotas import Quotas
from agent.core.servers import ServerService
from agent.model.requests import RequestContext

if TYPE_CHECKING:  # the controller's: their modules load only where they are used (_mounts)
    from agent.core.fleet_tickets import FleetTickets
    from agent.core.host_admin import HostAdmin

NOVA_MAX_BODY_BYTES = 114688  # oslo.middleware sizelimit's default, as Nova runs it


@dataclass
class ApiDeps:
    servers: ServerService
    flavors: FlavorCatalog
    images: ImageService
    quotas: Quotas  # the limits, and a project's usage (/limits, /os-quota-sets)
    ports: PortService  # networks and ports (/v2.0); a host without networks has an empty catalog
    events: EventFeed
    keypairs: KeypairService
    consoles: Consoles  # guests' serial consoles
    host_id: str  # this hypervisor's host name; hashed per project into hostId
    tokens: dict[str, TokenInfo] = field(default_factory=dict, repr=False)
    # Used when a request has no token: only the local unix-socket listener sets it.
    default_context: RequestContext | None = None
    max_body_bytes: int = NOVA_MAX_BODY_BYTES
    body_timeout_s: float = 30.0  # a body not in by then is a 408 (a slow-body client)
    metrics: Metrics = field(default_factory=Metrics)  # the daemon's, shared by its listeners
    # Servers' detail views rendered before, for GET /servers/detail (views.DetailFragments).
    fragments: DetailFragments = field(default_factory=DetailFragments, repr=False)
    # Whole list answers while the store has not changed (views.ListAnswers).
    answers: ListAnswers = field(default_factory=ListAnswers, repr=False)
    # Fleet mode (issue 12): the controller's URL; writes are refused with a 409 naming it.
    fleet_controller: str | None = None
    # The fleet's hosts (/os-services, /os-hypervisors): the controller's; None on a single
    # agent, which then has no such routes.
    hosts: HostAdmin | None = None
    # The controller's job tickets for its agents (/fleet/v1, issue 12); None on an agent.
    tickets: FleetTickets | None = None


COMPUTE_ROUTERS = (routes_servers.router, routes_actions.router, routes_metadata.router,
                   routes_server_info.router, routes_catalog.router, routes_events.router,
                   routes_keypairs.router, routes_quotas.router, routes_server_groups.router)
NETWORK_ROUTERS = (routes_network.router, routes_quotas.network_router)
NETWORK_PREFIX = "/v2.0"  # Neutron's API, beside the compute API (no project id in its paths)
CONSOLE_PATH = "/v2.1/servers/{server_id}/console"  # a WebSocket, not in OpenAPI


def _mounts(deps: ApiDeps) -> tuple[Mount, ...]:
    """Every router and the prefix it is served under, in the order requests are matched
    (and the document lists them); the serial console's WebSocket follows the /v2.1 mount."""
    compute = COMPUTE_ROUTERS
    if deps.hosts is not None:  # the controller's /os-services and /os-hypervisors
        from agent.api import routes_host_admin
        compute += (routes_host_admin.router,)
    fleet: tuple[Mount, ...] = ()
    if deps.tickets is not None:  # the controller's agents' route (not in the document)
        from agent.api import routes_fleet
        fleet = (Mount("", (routes_fleet.router,)),)
    return (Mount("", (versions.router,)), Mount("", (routes_metrics.router,)),
            Mount("/v2.1", compute, operation_id_suffix="", grouped=True),
            *(Mount(NETWORK_PREFIX, (r,), operation_id_suffix="") for r in NETWORK_ROUTERS),
            Mount("/v2.1/{project_id}", compute, operation_id_suffix="_in_project",
                  dependencies=(check_project_in_path,), grouped=True),
            *fleet)


def _routes(mounts: tuple[Mount, ...]) -> list[BaseRoute]:
    routes: list[BaseRoute] = [Route("/openapi.json", _openapi)]  # first, as FastAPI had it
    for mount in mounts:
        routes += [ApiRoute(mount.prefix + spec.path, spec, mount.dependencies)
                   for router in mount.routers for spec in router.routes]
        if mount.prefix == "/v2.1":
            routes.append(WebSocketRoute(CONSOLE_PATH, routes_console.serial_console))
    return routes


def _route_methods(routes: list[BaseRoute]) -> list[tuple[re.Pattern[str], frozenset[str]]]:
    """(path regex, methods) of every declared route, for the Allow header of a 405."""
    return [(r.path_regex, frozenset(r.methods)) for r in routes if isinstance(r, ApiRoute)]


_APP_INFO: dict[str, Any] = {
    "title": "compute-agent Compute API",
    "version": versions.MICROVERSION,
    "description": "OpenStack Compute API v2.1 (no microversions) for the servers of one host.",
}


async def _openapi(request: Request) -> JSONResponse:
    """The document, written on first request by FastAPI, imported only then
    (agent/api/openapi_doc.py), and kept."""
    state = request.app.state
    if state.openapi_document is None:
        from agent.api.openapi_doc import document

        state.openapi_document = document(state.mounts, _APP_INFO)
    return JSONResponse(state.openapi_document)


def create_api(deps: ApiDeps) -> Starlette:
    mounts = _mounts(deps)
    routes = _routes(mounts)
    app = Starlette(routes=routes)
    app.router.redirect_slashes = False
    app.state.deps = deps
    app.state.mounts = mounts
    app.state.openapi_document = None
    app.state.route_methods = _route_methods(routes)
    install_error_handlers(app)
    app.add_middleware(routes_metrics.RequestMetrics, metrics=deps.metrics)  # inside ApiMiddleware
    app.add_middleware(ApiMiddleware, deps=deps)
    return app


__all__ = ["ApiDeps", "TokenInfo", "create_api"]
