"""/os-server-groups as Nova 2.1 answers: list (the caller's project's; every project's for
an admin with all_projects; limit/offset), show, create (200), delete (204). A group's
members are its servers not deleted; metadata is always {} (Nova's too)."""

from __future__ import annotations

from typing import Annotated, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent.api import models, models_fleet
from agent.api.auth import Ctx, deps_of
from agent.api.routing import Query, Router
from agent.api.schemas_fleet import ServerGroupCreateBody
from agent.core.server_groups import ServerGroupService
from agent.model.scheduling import ServerGroup

router = Router(tags=["server groups"])


def groups_of(request: Request) -> ServerGroupService:
    return deps_of(request).servers.groups


def server_group_view(group: ServerGroup) -> dict[str, Any]:
    """Nova's _format_server_group before 2.13 (no project_id/user_id)."""
    return {"id": str(group.id), "name": group.name, "policies": [group.policy.value],
            "members": [str(m) for m in group.members], "metadata": {}}


@router.get("/os-server-groups", response_model=models_fleet.ServerGroupIndex,
            responses=models.READ_ERRORS, summary="List server groups")
async def list_server_groups(
        request: Request, ctx: Ctx,
        all_projects: Annotated[str | None, Query(description="Admins: every project's")] = None,
        limit: Annotated[int | None, Query(ge=0)] = None,
        offset: Annotated[int, Query(ge=0)] = 0) -> JSONResponse:
    groups = groups_of(request).list(ctx, all_projects=all_projects is not None)
    end = None if limit is None else offset + limit
    return JSONResponse({"server_groups": [server_group_view(g) for g in groups[offset:end]]})


@router.post("/os-server-groups", response_model=models_fleet.ServerGroupShow,
             responses=models.WRITE_ERRORS, summary="Create a server group")
async def create_server_group(request: Request, ctx: Ctx,
                              body: ServerGroupCreateBody) -> JSONResponse:
    args = body.server_group
    group = await groups_of(request).create(ctx, args.name, args.policies[0])
    return JSONResponse({"server_group": server_group_view(group)})


@router.get("/os-server-groups/{server_group_id}", response_model=models_fleet.ServerGroupShow,
            responses=models.READ_ERRORS, summary="Show a server group")
async def show_server_group(request: Request, ctx: Ctx, server_group_id: str) -> JSONResponse:
    return JSONResponse({"server_group": server_group_view(
        groups_of(request).get(ctx, server_group_id))})


@router.delete("/os-server-groups/{server_group_id}", status_code=204, response_class=Response,
               responses=models.WRITE_ERRORS, summary="Delete a server group")
async def delete_server_group(request: Request, ctx: Ctx, server_group_id: str) -> Response:
    await groups_of(request).delete(ctx, server_group_id)
    return Response(status_code=204)
