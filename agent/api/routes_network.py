"""Neutron-shaped /v2.0: the host's networks (and their one subnet each) and the port
registry. Networks come from configuration and are shared by every project; ports belong
to the project that made them (an admin sees all). Error bodies are the same fault bodies
as the compute API's."""

from __future__ import annotations

from typing import Annotated, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent.api import models, models_network, views_network
from agent.api.auth import Ctx, deps_of
from agent.api.errors import ApiFault
from agent.api.routing import Query, Router
from agent.core.networks import NetworkCatalog, PortService
from agent.errors import InvalidInput, NetworkNotFound
from agent.model.network import Network

router = Router(tags=["networks"])

QueryStr = Annotated[str | None, Query()]


def port_service(request: Request) -> PortService:
    return deps_of(request).ports


def _matches(view: dict[str, Any], **filters: str | None) -> bool:
    return all(value is None or str(view.get(key)) == value for key, value in filters.items())


def _network_of_subnet(catalog: NetworkCatalog, subnet_id: str) -> Network:
    for network in catalog.list():
        if str(network.subnet_id) == subnet_id:
            return network
    raise NetworkNotFound(f"Subnet {subnet_id[:64]} could not be found.")


def _version(request: Request) -> JSONResponse:
    href = f"{str(request.base_url).rstrip('/')}/v2.0/"
    return JSONResponse({"version": {"id": "v2.0", "status": "CURRENT",
                                     "links": [{"rel": "self", "href": href}]}})


# Version discovery (keystoneauth asks the endpoint it is given what version it is).
@router.get("", response_model=models_network.NetworkVersionShow, responses=models.READ_ERRORS,
            summary="Show the networking API version (v2.0)")
async def show_network_version(request: Request, ctx: Ctx) -> JSONResponse:
    return _version(request)


@router.get("/", response_model=models_network.NetworkVersionShow, responses=models.READ_ERRORS,
            summary="Show the networking API version (v2.0)")
async def show_network_version_slash(request: Request, ctx: Ctx) -> JSONResponse:
    return _version(request)


@router.get("/networks", response_model=models_network.NetworkIndex, responses=models.READ_ERRORS)
async def list_networks(request: Request, ctx: Ctx, id: QueryStr = None,
                        name: QueryStr = None) -> JSONResponse:
    views = [views_network.network_view(n) for n in port_service(request).catalog.list()]
    return JSONResponse({"networks": [v for v in views if _matches(v, id=id, name=name)]})


@router.get("/networks/{network_id}", response_model=models_network.NetworkShow,
            responses=models.READ_ERRORS)
async def show_network(request: Request, ctx: Ctx, network_id: str) -> JSONResponse:
    network = port_service(request).catalog.get(network_id)
    return JSONResponse({"network": views_network.network_view(network)})


@router.get("/subnets", response_model=models_network.SubnetIndex, responses=models.READ_ERRORS)
async def list_subnets(request: Request, ctx: Ctx, id: QueryStr = None,
                       name: QueryStr = None, network_id: QueryStr = None) -> JSONResponse:
    views = [views_network.subnet_view(n) for n in port_service(request).catalog.list()]
    return JSONResponse({"subnets": [v for v in views
                                     if _matches(v, id=id, name=name, network_id=network_id)]})


@router.get("/subnets/{subnet_id}", response_model=models_network.SubnetShow,
            responses=models.READ_ERRORS)
async def show_subnet(request: Request, ctx: Ctx, subnet_id: str) -> JSONResponse:
    network = _network_of_subnet(port_service(request).catalog, subnet_id)
    return JSONResponse({"subnet": views_network.subnet_view(network)})


@router.get("/ports", response_model=models_network.PortIndex, responses=models.READ_ERRORS)
async def list_ports(request: Request, ctx: Ctx, id: QueryStr = None,
                     name: QueryStr = None, network_id: QueryStr = None,
                     device_id: QueryStr = None, mac_address: QueryStr = None,
                     status: QueryStr = None) -> JSONResponse:
    service = port_service(request)
    ports = service.list_ports(ctx, network_id=network_id, device_id=device_id)
    views = [views_network.port_view(p, service.catalog.find(p.network_id)) for p in ports]
    mac = mac_address.lower() if mac_address is not None else None
    return JSONResponse({"ports": [v for v in views if _matches(v, id=id, name=name,
                                                                mac_address=mac, status=status)]})


@router.post("/ports", status_code=201, response_model=models_network.PortShow,
             responses=models.WRITE_ERRORS)
async def create_port(request: Request, ctx: Ctx,
                      body: models_network.PortCreateBody) -> JSONResponse:
    req = body.port
    owner = req.project_id or req.tenant_id
    if owner is not None and owner != ctx.project_id:
        if not ctx.is_admin:
            raise ApiFault(403, "Only an admin may create a port for another project.")
        ctx = ctx.model_copy(update={"project_id": owner})
    service = port_service(request)
    network = service.catalog.get(req.network_id)
    fixed_ip = None
    if req.fixed_ips:
        wanted = req.fixed_ips[0]
        if wanted.subnet_id is not None and wanted.subnet_id != str(network.subnet_id):
            raise InvalidInput(f"Subnet {wanted.subnet_id[:64]} is not a subnet of network "
                               f"{network.id}.", "fixed_ips")
        fixed_ip = wanted.ip_address
    port = await service.create_port(ctx, str(network.id), fixed_ip=fixed_ip, mac=req.mac_address,
                               name=req.name)
    return JSONResponse({"port": views_network.port_view(port, network)}, status_code=201)


@router.get("/ports/{port_id}", response_model=models_network.PortShow, responses=models.READ_ERRORS)
async def show_port(request: Request, ctx: Ctx, port_id: str) -> JSONResponse:
    service = port_service(request)
    port = service.get_port(ctx, port_id)
    return JSONResponse({"port": views_network.port_view(port, service.catalog.find(port.network_id))})


@router.delete("/ports/{port_id}", status_code=204, response_class=Response,
               responses=models.WRITE_ERRORS)
async def delete_port(request: Request, ctx: Ctx, port_id: str) -> Response:
    await port_service(request).delete_port(ctx, port_id)
    return Response(status_code=204)
