"""/os-services and /os-hypervisors as Nova 2.1 answers them, over the controller's hosts
(each one nova-compute service and one QEMU hypervisor). Admin only, as Nova's default
policy. Served where a host registry is wired (the controller); a single agent has no
such routes (404): it schedules nothing, so there is no host to disable or pool to show.

Nova's fields that the fleet does not know are answered as Nova's types allow:
hypervisor_version 0, cpu_info "{}" (JSON text at 2.1), host_ip ""."""

from __future__ import annotations

from typing import Annotated, Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from agent.api import models, models_fleet, views
from agent.api.auth import Ctx, deps_of
from agent.api.errors import ApiFault
from agent.api.routing import Query, Router
from agent.api.schemas_fleet import ServiceUpdateBody
from agent.core.host_admin import COMPUTE_BINARY, HostAdmin, HostView
from agent.errors import HostNotFound, InvalidInput, PolicyForbidden
from agent.model.requests import RequestContext

router = Router(tags=["hosts"])

HYPERVISOR_TYPE = "QEMU"  # what libvirt's getType() names both KVM and TCG hosts


def admin_of(request: Request, ctx: RequestContext, rule: str) -> HostAdmin:
    if not ctx.is_admin:
        raise PolicyForbidden(f"Policy doesn't allow os_compute_api:{rule} to be performed.")
    admin = deps_of(request).hosts
    if admin is None:  # the routes are only mounted with one; kept for a clear failure
        raise ApiFault(404, "The resource could not be found.")
    return admin


# -- /os-services -------------------------------------------------------------------------

def service_view(host: HostView) -> dict[str, Any]:
    record = host.record
    return {"id": host.id, "binary": COMPUTE_BINARY, "host": record.name,
            "zone": views.AVAILABILITY_ZONE, "status": "enabled" if record.enabled else "disabled",
            "state": "up" if host.up else "down",
            "updated_at": views.usage_time(record.heartbeat_at),
            "disabled_reason": record.disabled_reason}


@router.get("/os-services", response_model=models_fleet.ServiceIndex,
            responses=models.READ_ERRORS, summary="List the compute services (hosts)")
async def list_services(request: Request, ctx: Ctx,
                        host: Annotated[str | None, Query()] = None,
                        binary: Annotated[str | None, Query()] = None) -> JSONResponse:
    hosts = admin_of(request, ctx, "os-services:list").hosts()
    services = [service_view(h) for h in hosts]
    services = [s for s in services if (not host or s["host"] == host)
                and (not binary or s["binary"] == binary)]
    return JSONResponse({"services": services})


@router.put("/os-services/{action}", response_model=models_fleet.ServiceUpdateShow,
            responses=models.WRITE_ERRORS,
            summary="Enable or disable a host: enable, disable, disable-log-reason")
async def update_service(request: Request, ctx: Ctx, action: str,
                         body: ServiceUpdateBody) -> JSONResponse:
    admin = admin_of(request, ctx, "os-services:update")
    if action not in ("enable", "disable", "disable-log-reason"):
        raise ApiFault(404, "Unknown action")
    reason = None
    if action == "disable-log-reason":
        if body.disabled_reason is None:
            raise InvalidInput("Missing disabled reason field", "disabled_reason")
        reason = body.disabled_reason
    enabled = action == "enable"
    await admin.set_enabled(body.host, body.binary, enabled, reason)
    answer: dict[str, Any] = {"host": body.host, "binary": body.binary,
                              "status": "enabled" if enabled else "disabled"}
    if reason:
        answer["disabled_reason"] = reason
    return JSONResponse({"service": answer})


# -- /os-hypervisors ----------------------------------------------------------------------

def hypervisor_summary(host: HostView) -> dict[str, Any]:
    return {"id": host.id, "hypervisor_hostname": host.name,
            "state": "up" if host.up else "down",
            "status": "enabled" if host.record.enabled else "disabled"}


def capacity(host: HostView) -> dict[str, int]:
    """Nova's compute node figures: totals from the last heartbeat, use from the
    controller's servers (the disk: the larger of that and what the host reports used)."""
    beat = host.record.heartbeat
    vcpus, ram, disk = (beat.vcpus, beat.ram_mb, beat.disk_total_gb) if beat else (0, 0, 0)
    reported_disk = beat.disk_used_gb if beat else 0
    disk_used = max(host.used.disk_gb, reported_disk)
    return {"vcpus": vcpus, "memory_mb": ram, "local_gb": disk,
            "vcpus_used": host.used.vcpus, "memory_mb_used": host.used.ram_mb,
            "local_gb_used": disk_used, "free_ram_mb": ram - host.used.ram_mb,
            "free_disk_gb": disk - disk_used, "current_workload": host.used.busy,
            "running_vms": host.used.servers, "disk_available_least": disk - reported_disk}


def hypervisor_detail(host: HostView) -> dict[str, Any]:
    return {**hypervisor_summary(host), **capacity(host), "hypervisor_type": HYPERVISOR_TYPE,
            "hypervisor_version": 0, "cpu_info": "{}", "host_ip": "",
            "service": {"id": host.id, "host": host.name,
                        "disabled_reason": host.record.disabled_reason}}


@router.get("/os-hypervisors", response_model=models_fleet.HypervisorIndex,
            responses=models.READ_ERRORS, summary="List the hypervisors (hosts)")
async def list_hypervisors(request: Request, ctx: Ctx) -> JSONResponse:
    hosts = admin_of(request, ctx, "os-hypervisors:list").hosts()
    return JSONResponse({"hypervisors": [hypervisor_summary(h) for h in hosts]})


@router.get("/os-hypervisors/detail", response_model=models_fleet.HypervisorDetailIndex,
            responses=models.READ_ERRORS, summary="List the hypervisors with their capacity")
async def list_hypervisors_detail(request: Request, ctx: Ctx) -> JSONResponse:
    hosts = admin_of(request, ctx, "os-hypervisors:list-detail").hosts()
    return JSONResponse({"hypervisors": [hypervisor_detail(h) for h in hosts]})


@router.get("/os-hypervisors/statistics", response_model=models_fleet.HypervisorStatisticsShow,
            responses=models.READ_ERRORS, summary="The enabled hypervisors' capacity, summed")
async def hypervisor_statistics(request: Request, ctx: Ctx) -> JSONResponse:
    hosts = admin_of(request, ctx, "os-hypervisors:statistics").hosts()
    enabled = [h for h in hosts if h.record.enabled]  # Nova sums enabled services only
    totals = dict.fromkeys(models_fleet.HypervisorStatistics.model_fields, 0)
    totals["count"] = len(enabled)
    for host in enabled:
        for key, value in capacity(host).items():
            totals[key] += value
    return JSONResponse({"hypervisor_statistics": totals})


def _matching(admin: HostAdmin, pattern: str) -> list[HostView]:
    found = admin.matching(pattern)
    if not found:
        raise ApiFault(404, f"No hypervisor matching '{pattern[:64]}' could be found.")
    return found


@router.get("/os-hypervisors/{hypervisor_hostname_pattern}/search",
            response_model=models_fleet.HypervisorIndex, responses=models.READ_ERRORS,
            summary="The hypervisors whose name contains the pattern")
async def search_hypervisors(request: Request, ctx: Ctx,
                             hypervisor_hostname_pattern: str) -> JSONResponse:
    admin = admin_of(request, ctx, "os-hypervisors:search")
    return JSONResponse({"hypervisors": [
        hypervisor_summary(h) for h in _matching(admin, hypervisor_hostname_pattern)]})


@router.get("/os-hypervisors/{hypervisor_hostname_pattern}/servers",
            response_model=models_fleet.HypervisorServersIndex, responses=models.READ_ERRORS,
            summary="The servers on the hypervisors whose name contains the pattern")
async def hypervisor_servers(request: Request, ctx: Ctx,
                             hypervisor_hostname_pattern: str) -> JSONResponse:
    admin = admin_of(request, ctx, "os-hypervisors:servers")
    out = []
    for host in _matching(admin, hypervisor_hostname_pattern):
        view = hypervisor_summary(host)
        servers = admin.servers_on(host.name)
        if servers:  # as Nova's view: the key only when there are some
            view["servers"] = [{"name": s.name, "uuid": str(s.id)} for s in servers]
        out.append(view)
    return JSONResponse({"hypervisors": out})


@router.get("/os-hypervisors/{hypervisor_id}", response_model=models_fleet.HypervisorShow,
            responses=models.READ_ERRORS, summary="Show a hypervisor")
async def show_hypervisor(request: Request, ctx: Ctx, hypervisor_id: str) -> JSONResponse:
    admin = admin_of(request, ctx, "os-hypervisors:show")
    try:
        host = admin.host(int(hypervisor_id))
    except (ValueError, HostNotFound):
        raise ApiFault(404, f"Hypervisor with ID '{hypervisor_id[:64]}' could not be "
                            "found.") from None
    return JSONResponse({"hypervisor": hypervisor_detail(host)})
