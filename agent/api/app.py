"""The HTTP surface's factory: an OpenStack Compute API v2.1-compatible FastAPI app.

    app = create_api(ApiDeps(servers=..., flavors=..., images=..., quotas=..., ports=...,
                             events=..., keypairs=..., consoles=...,
                             host_id=socket.gethostname(), tokens={...}))

Every dependency is a core service built once (agent/app.py); the routes call those only,
never the store or an adapter.

Every route is served under /v2.1/... and under /v2.1/{project_id}/... (Nova accepts
both; a project id in the URL must be the token's, as in Nova, even for an admin)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from starlette.routing import compile_path

from agent.api import (
    routes_actions,
    routes_catalog,
    routes_console,
    routes_events,
    routes_fleet,
    routes_host_admin,
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
from agent.api.doc_router import DocRouter
from agent.api.errors import install_error_handlers
from agent.api.middleware import ApiMiddleware
from agent.api.view_cache import DetailFragments, ListAnswers
from agent.core.console import Consoles
from agent.core.event_feed import EventFeed
from agent.core.flavors import FlavorCatalog
from agent.core.fleet_tickets import FleetTickets
from agent.core.host_admin import HostAdmin
from agent.core.images import ImageService
from agent.core.keypairs import KeypairService
from agent.core.metrics import Metrics
from agent.core.networks import PortService
from agent.core.quotas import Quotas
from agent.core.servers import ServerService
from agent.model.requests import RequestContext

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


def _operation_id(route: APIRoute) -> str:
    return route.name


def _operation_id_with_project(route: APIRoute) -> str:
    return f"{route.name}_in_project"


COMPUTE_ROUTERS = (routes_servers.router, routes_actions.router, routes_metadata.router,
                   routes_server_info.router, routes_catalog.router, routes_events.router,
                   routes_keypairs.router, routes_quotas.router, routes_server_groups.router)
HOST_ADMIN_ROUTERS = (routes_host_admin.router,)  # only with ApiDeps.hosts (the controller)
NETWORK_ROUTERS = (routes_network.router, routes_quotas.network_router)
NETWORK_PREFIX = "/v2.0"  # Neutron's API, beside the compute API (no project id in its paths)


def _compute_routers(deps: ApiDeps) -> tuple[APIRouter, ...]:
    return COMPUTE_ROUTERS + (HOST_ADMIN_ROUTERS if deps.hosts is not None else ())


def _route_methods(compute_routers: tuple[APIRouter, ...]) -> list[tuple[re.Pattern[str], frozenset[str]]]:
    """(path regex, methods) of every route, for the Allow header of a 405."""
    out = [(compile_path(r.path)[0], frozenset(r.methods))
           for r in (*versions.router.routes, *routes_metrics.router.routes) if isinstance(r, APIRoute)]
    for prefix in ("/v2.1", "/v2.1/{project_id}"):
        out += [(compile_path(prefix + r.path)[0], frozenset(r.methods))
                for router in compute_routers for r in router.routes if isinstance(r, APIRoute)]
    out += [(compile_path(NETWORK_PREFIX + r.path)[0], frozenset(r.methods))
            for router in NETWORK_ROUTERS for r in router.routes if isinstance(r, APIRoute)]
    return out


_APP_INFO: dict[str, Any] = {
    "title": "compute-agent Compute API",
    "version": versions.MICROVERSION,
    "description": "OpenStack Compute API v2.1 (no microversions) for the servers of one host.",
}


def _include_routers(app: FastAPI, compute_routers: tuple[APIRouter, ...],
                     router: Callable[[APIRouter], APIRouter]) -> None:
    """Every route, each router passed through `router` (the documented twins for the
    OpenAPI document, the routers themselves for serving)."""
    compute = APIRouter()
    for r in compute_routers:
        compute.include_router(router(r))
    app.include_router(router(versions.router))
    app.include_router(router(routes_metrics.router))
    app.include_router(compute, prefix="/v2.1", generate_unique_id_function=_operation_id)
    app.include_router(routes_console.router, prefix="/v2.1")  # a WebSocket, not in OpenAPI
    for r in NETWORK_ROUTERS:
        app.include_router(router(r), prefix=NETWORK_PREFIX, generate_unique_id_function=_operation_id)
    app.include_router(compute, prefix="/v2.1/{project_id}",
                       dependencies=[Depends(check_project_in_path)],
                       generate_unique_id_function=_operation_id_with_project)


def _documented(r: APIRouter) -> APIRouter:
    return r.documented() if isinstance(r, DocRouter) else r


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The document, built once on first request from a twin of the app whose routes are
    declared with their response models and fault responses (agent/api/doc_router.py)."""
    if app.openapi_schema is None:
        twin = FastAPI(**_APP_INFO)
        _include_routers(twin, _compute_routers(app.state.deps), _documented)
        app.openapi_schema = twin.openapi()
    return app.openapi_schema


def create_api(deps: ApiDeps) -> FastAPI:
    app = FastAPI(**_APP_INFO, docs_url=None, redoc_url=None, openapi_url="/openapi.json",
                  redirect_slashes=False)
    app.openapi = partial(_openapi, app)  # type: ignore[method-assign]
    app.state.deps = deps
    install_error_handlers(app)
    compute_routers = _compute_routers(deps)
    _include_routers(app, compute_routers, lambda r: r)
    if deps.tickets is not None:  # the controller's agents' route: not in the document
        app.include_router(routes_fleet.router)
    app.state.route_methods = _route_methods(compute_routers)
    app.add_middleware(routes_metrics.RequestMetrics, metrics=deps.metrics)  # inside ApiMiddleware
    app.add_middleware(ApiMiddleware, deps=deps)
    return app


__all__ = ["ApiDeps", "TokenInfo", "create_api"]
