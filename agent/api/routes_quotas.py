"""A project's quotas as Nova (GET /os-quota-sets/{project_id}[/detail]) and Neutron
(GET /v2.0/quotas/{project_id}[/details]) show them. The limits are the config's
[limits], the same for every project; usage is counted by the core (agent/core/quotas.py). Each port has one
fixed IP, so Nova's `fixed_ips` quota is the port quota."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from agent.api import models, models_catalog
from agent.api.auth import Ctx, deps_of
from agent.api.errors import ApiFault
from agent.api.routing import Router
from agent.model.requests import RequestContext

if TYPE_CHECKING:
    from agent.api.app import ApiDeps

router = Router(tags=["quotas"])
network_router = Router(tags=["networks"])

INJECTED_FILE_PATH_BYTES = 255  # Nova's default; personality paths are checked on their own
KEY_PAIRS = 100  # as /limits shows it
UNLIMITED = -1


def _project(ctx: RequestContext, project_id: str) -> str:
    """Nova's policy: a project's own quotas, or any project's for an admin."""
    if project_id != ctx.project_id and not ctx.is_admin:
        raise ApiFault(403, f"Policy doesn't allow os_compute_api:os-quota-sets:show to be "
                            f"performed for project {project_id[:64]}.")
    return project_id


def _usage(deps: ApiDeps, project_id: str) -> dict[str, tuple[int, int]]:
    """Nova's quota names -> (limit, in use)."""
    limits = deps.quotas.limits
    usage = deps.quotas.usage(project_id)
    return {
        "instances": (limits.max_total_instances, usage.instances),
        "cores": (limits.max_total_cores, usage.cores),
        "ram": (limits.max_total_ram, usage.ram),
        "fixed_ips": (limits.max_total_ports, deps.ports.ports_used(project_id)),
        "floating_ips": (UNLIMITED, 0),
        "metadata_items": (limits.max_server_meta, 0),
        "injected_files": (limits.max_personality, 0),
        "injected_file_content_bytes": (limits.max_personality_size, 0),
        "injected_file_path_bytes": (INJECTED_FILE_PATH_BYTES, 0),
        "key_pairs": (KEY_PAIRS, 0),
        "security_groups": (UNLIMITED, 0),
        "security_group_rules": (UNLIMITED, 0),
        "server_groups": (limits.max_server_groups, usage.server_groups),
        # per group: no one figure of a project's use
        "server_group_members": (limits.max_server_group_members, 0),
    }


@router.get("/os-quota-sets/{tenant_id}", response_model=models_catalog.QuotaSetShow,
            responses=models.READ_ERRORS, summary="Show a project's quotas")
async def show_quota_set(request: Request, ctx: Ctx, tenant_id: str) -> JSONResponse:
    usage = _usage(deps_of(request), _project(ctx, tenant_id))
    body: dict[str, Any] = {"id": tenant_id, **{k: limit for k, (limit, _) in usage.items()}}
    return JSONResponse({"quota_set": body})


@router.get("/os-quota-sets/{tenant_id}/detail", response_model=models_catalog.QuotaSetDetailShow,
            responses=models.READ_ERRORS, summary="Show a project's quotas and their usage")
async def show_quota_set_detail(request: Request, ctx: Ctx, tenant_id: str) -> JSONResponse:
    usage = _usage(deps_of(request), _project(ctx, tenant_id))
    body: dict[str, Any] = {"id": tenant_id, **{
        k: {"limit": limit, "in_use": used, "reserved": 0} for k, (limit, used) in usage.items()}}
    return JSONResponse({"quota_set": body})


@network_router.get("/quotas/{tenant_id}", response_model=models_catalog.NetworkQuotaShow,
                    responses=models.READ_ERRORS, summary="Show a project's port quota")
async def show_network_quota(request: Request, ctx: Ctx, tenant_id: str) -> JSONResponse:
    limit, _ = _usage(deps_of(request), _project(ctx, tenant_id))["fixed_ips"]
    return JSONResponse({"quota": {"port": limit}})


@network_router.get("/quotas/{tenant_id}/details", response_model=models_catalog.NetworkQuotaDetailShow,
                    responses=models.READ_ERRORS, summary="Show a project's port quota and usage")
async def show_network_quota_details(request: Request, ctx: Ctx, tenant_id: str) -> JSONResponse:
    limit, used = _usage(deps_of(request), _project(ctx, tenant_id))["fixed_ips"]
    return JSONResponse({"quota": {"port": {"limit": limit, "used": used, "reserved": 0}}})
