"""/servers: create, list (index and detail), show, update, delete.

Handlers are async and call the (quick, synchronous) core directly, on the event loop,
so the core's check-then-commit steps (quota) never race each other."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent.api import models, views, views_network
from agent.api.auth import Ctx, deps_of
from agent.api.routing import Depends, Query, Router
from agent.api.schemas import CreateServerBody, UpdateServerBody
from agent.errors import InvalidInput, ServerNotFound
from agent.model.requests import RequestContext, ServerQuery
from agent.model.server import Server
from agent.model.states import Status

router = Router(tags=["servers"])


def parse_server_id(server_id: str) -> UUID:
    """A path's server id; one that is not a UUID names no server (404, as Nova)."""
    try:
        return UUID(server_id)
    except ValueError:
        raise ServerNotFound(f"Instance {server_id[:64]} could not be found.") from None


def parse_changes_since(value: str) -> datetime:
    """An ISO 8601 time, in UTC (naive means UTC). One whose UTC time falls outside years
    1-9999 (0001-01-01T00:00:00+01:00) is refused like a malformed one, not a 500."""
    try:
        when = datetime.fromisoformat(value)
        return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput("Invalid filter field: changes-since.", "changes-since") from None


def parse_statuses(values: list[str]) -> tuple[frozenset[Status], bool]:
    """The statuses asked for (any case, as in Nova), and whether a status filter was
    given that names no status at all: Nova 2.1 then answers an empty list (a 400 came
    only with 2.38). Unknown values beside known ones are ignored, as Nova ignores them."""
    known = frozenset(Status(v.strip().upper()) for v in values
                      if v.strip().upper() in Status.__members__.values())
    return known, bool(values) and not known


_TRUE = frozenset({"", "1", "t", "true", "on", "y", "yes"})
_FALSE = frozenset({"0", "f", "false", "off", "n", "no"})


def parse_all_tenants(value: str | None) -> bool:
    """oslo's bool_from_string, as Nova reads all_tenants; present but empty means true."""
    if value is None:
        return False
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise InvalidInput("Invalid value for all_tenants: expected a boolean.", "all_tenants")


def parse_marker(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise InvalidInput(f"marker [{value[:64]}] not found", "marker") from None


async def server_query(
    image: Annotated[str | None, Query(description="Image id (or URL)")] = None,
    flavor: Annotated[str | None, Query(description="Flavor id (or URL)")] = None,
    name: Annotated[str | None, Query(description="A regular expression searched in names")] = None,
    status: Annotated[list[str] | None, Query(
        description="Server status (any case); repeated: any of them",
        json_schema_extra={"items": {"type": "string", "enum": [s.value for s in Status]}})] = None,
    changes_since: Annotated[str | None, Query(alias="changes-since", json_schema_extra={
        "format": "date-time"}, description="ISO 8601; includes deleted servers")] = None,
    limit: Annotated[int | None, Query(ge=0)] = None,
    marker: Annotated[str | None, Query(description="Id of the last server of the page before")] = None,
    all_tenants: Annotated[str | None, Query(description="Admin only: every project's servers")] = None,
    # Named apart from the {project_id} of versioned paths, which FastAPI would bind instead.
    project_filter: Annotated[str | None, Query(alias="project_id",
                                                description="With all_tenants: this project only")] = None,
    tenant_filter: Annotated[str | None, Query(alias="tenant_id", description="Same as project_id")] = None,
    reservation_id: Annotated[str | None, Query(
        description="The servers of one create (its return_reservation_id answer)")] = None,
) -> ServerQuery:
    """The list filters; unknown query parameters are ignored, as Nova ignores them."""
    statuses, matches_nothing = parse_statuses(status or [])
    return ServerQuery(
        image=image, flavor=flavor, name=name, limit=limit,
        statuses=statuses, status_matches_nothing=matches_nothing,
        all_tenants=parse_all_tenants(all_tenants), project_id=project_filter or tenant_filter,
        changes_since=None if changes_since is None else parse_changes_since(changes_since),
        marker=None if marker is None else parse_marker(marker),
        reservation_id=reservation_id,
    )


Filters = Annotated[ServerQuery, Depends(server_query)]


def addresses(request: Request, servers: list[Server], *,
              extended: bool = True) -> dict[UUID, dict[str, list[dict[str, Any]]]]:
    """Each server's `addresses` (its ports' fixed IPs by network name)."""
    ports = deps_of(request).ports
    return {i: views_network.addresses_view(nics, extended=extended)
            for i, nics in ports.nics(s.id for s in servers).items()}


def server_view(request: Request, ctx: RequestContext, server: Server, *,
                extended_addresses: bool = True) -> dict[str, Any]:
    """One server's detail with its addresses (and, for admins, the host attributes).
    Nova's update and rebuild answers show addresses without OS-EXT-IPS attributes."""
    return views.server_detail(server, views.Urls(request), deps_of(request).host_id,
                               addresses(request, [server], extended=extended_addresses)[server.id],
                               admin=ctx.is_admin)


def list_answer(request: Request, ctx: RequestContext, query: ServerQuery,
                render: Callable[[list[Server], views.Urls], str]) -> Response:
    """A list's answer: `render` of one page of servers, with a next link when another
    page follows; the same bytes again while the store has not changed."""
    deps = deps_of(request)
    revision = deps.servers.revision()  # first: what is read after is at least this new
    key = (str(request.url), ctx.project_id, ctx.is_admin)
    body = deps.answers.get(revision, key)
    if body is None:
        servers, has_more = deps.servers.list(ctx, query)
        urls = views.Urls(request)
        body = '{"servers":[' + render(servers, urls) + "]"
        if has_more and servers:
            body += ',"servers_links":' + views.to_json(urls.next_link(servers[-1].id))
        body += "}"
        deps.answers.put(revision, key, body)
    return Response(body, media_type="application/json")


@router.get("/servers", response_model=models.ServerIndex, responses=models.READ_ERRORS)
async def list_servers(request: Request, ctx: Ctx, query: Filters) -> Response:
    return list_answer(request, ctx, query, lambda servers, urls: ",".join(
        views.to_json(views.server_summary(s, urls)) for s in servers))


@router.get("/servers/detail", response_model=models.ServerDetailIndex, responses=models.READ_ERRORS)
async def list_servers_detail(request: Request, ctx: Ctx, query: Filters) -> Response:
    deps = deps_of(request)
    return list_answer(request, ctx, query, lambda servers, urls: deps.fragments.render(
        servers, urls, deps.host_id, addresses(request, servers), admin=ctx.is_admin))


@router.post("/servers", status_code=202,
             response_model=models.CreatedServerShow | models.CreatedReservation,
             responses=models.WRITE_ERRORS)
async def create_server(request: Request, ctx: Ctx, body: CreateServerBody) -> JSONResponse:
    """One server, or min_count..max_count of them: the answer is the first one's (with
    the admin password they share), or their reservation id if asked for, as Nova's."""
    made = await deps_of(request).servers.create_many(ctx, body.to_core())
    if body.server.return_reservation_id:
        return JSONResponse({"reservation_id": made.reservation_id}, status_code=202)
    server = made.servers[0]
    urls = views.Urls(request)
    asked = body.server.security_groups
    shown = views.created_server(server, urls, made.admin_pass,
                                 None if asked is None else [g.name for g in asked])
    return JSONResponse(shown, status_code=202,
                        headers={"Location": urls.self_href("servers", server.id)})


@router.get("/servers/{server_id}", response_model=models.ServerShow, responses=models.READ_ERRORS)
async def show_server(request: Request, ctx: Ctx, server_id: str) -> JSONResponse:
    deps = deps_of(request)
    server = deps.servers.get_live(ctx, parse_server_id(server_id))
    return JSONResponse({"server": server_view(request, ctx, server)})


@router.put("/servers/{server_id}", response_model=models.ServerShow, responses=models.WRITE_ERRORS)
async def update_server(request: Request, ctx: Ctx, server_id: str, body: UpdateServerBody) -> JSONResponse:
    deps = deps_of(request)
    change = body.server
    server = await deps.servers.update(ctx, parse_server_id(server_id), name=change.name,
                                 access_ipv4=change.access_ipv4, access_ipv6=change.access_ipv6)
    return JSONResponse({"server": server_view(request, ctx, server, extended_addresses=False)})


@router.delete("/servers/{server_id}", status_code=204, response_class=Response,
               responses=models.WRITE_ERRORS)
async def delete_server(request: Request, ctx: Ctx, server_id: str) -> Response:
    await deps_of(request).servers.delete(ctx, parse_server_id(server_id))
    return Response(status_code=204)
