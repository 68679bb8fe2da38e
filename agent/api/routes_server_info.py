"""/servers/{id}/ips (a server's addresses, all or one network's) and
/servers/{id}/os-server-password, answered as Nova answers them at 2.1."""

from __future__ import annotations

from typing import Annotated, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent.api import models
from agent.api.auth import Ctx, deps_of
from agent.api.routes_servers import addresses, parse_server_id
from agent.api.routing import Path, Router
from agent.errors import NotFound
from agent.model.requests import RequestContext

router = Router(tags=["server addresses and password"])

NetworkLabel = Annotated[str, Path(description="A network's name, as `addresses` keys it")]


def _addresses(request: Request, ctx: RequestContext, server_id: str) -> dict[str, list[dict[str, Any]]]:
    """A live server's addresses by network name, without the extended attributes."""
    server = deps_of(request).servers.get_live(ctx, parse_server_id(server_id))
    return addresses(request, [server], extended=False)[server.id]


@router.get("/servers/{server_id}/ips", response_model=models.ServerAddresses,
            responses=models.READ_ERRORS, summary="A server's addresses by network")
async def list_ips(request: Request, ctx: Ctx, server_id: str) -> JSONResponse:
    return JSONResponse({"addresses": _addresses(request, ctx, server_id)})


@router.get("/servers/{server_id}/ips/{network_label}", response_model=models.NetworkAddresses,
            responses=models.READ_ERRORS, summary="A server's addresses on one network")
async def show_ips(request: Request, ctx: Ctx, server_id: str,
                   network_label: NetworkLabel) -> JSONResponse:
    found = _addresses(request, ctx, server_id)
    if network_label not in found:
        raise NotFound("Instance is not a member of specified network")
    return JSONResponse({network_label: found[network_label]})


@router.get("/servers/{server_id}/os-server-password", response_model=models.ServerPassword,
            responses=models.READ_ERRORS, summary="The encrypted password a guest posted")
async def show_password(request: Request, ctx: Ctx, server_id: str) -> JSONResponse:
    """Nova keeps a password a guest posted to its metadata service, encrypted with the
    guest's key; this host has no metadata service, so there is never one: "" as Nova
    answers for a server without one. (The adminPass is never stored: only its hash.)"""
    deps_of(request).servers.get_live(ctx, parse_server_id(server_id))
    return JSONResponse({"password": ""})


@router.delete("/servers/{server_id}/os-server-password", status_code=204,
               response_class=Response, responses=models.WRITE_ERRORS,
               summary="Clear the encrypted password (the guest's password is unchanged)")
async def clear_password(request: Request, ctx: Ctx, server_id: str) -> Response:
    deps_of(request).servers.get_live(ctx, parse_server_id(server_id))
    return Response(status_code=204)
