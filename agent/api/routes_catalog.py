"""What a caller may ask for and how much: /flavors, /images, /limits."""

from __future__ import annotations

from typing import Annotated

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent.api import models, models_catalog, views
from agent.api.auth import Ctx, deps_of
from agent.api.routing import Query, Router
from agent.errors import PolicyForbidden
from agent.model.flavor import Flavor

router = Router()

MinRam = Annotated[int | None, Query(alias="minRam", ge=0, description="At least this RAM (MiB)")]
MinDisk = Annotated[int | None, Query(alias="minDisk", ge=0, description="At least this disk (GiB)")]


def _flavors(request: Request, min_ram: int | None, min_disk: int | None) -> list[Flavor]:
    return deps_of(request).flavors.list(min_ram=min_ram, min_disk=min_disk)


@router.get("/flavors", tags=["flavors"], response_model=models_catalog.FlavorIndex,
            responses=models.READ_ERRORS)
async def list_flavors(request: Request, ctx: Ctx, min_ram: MinRam = None,
                       min_disk: MinDisk = None) -> JSONResponse:
    urls = views.Urls(request)
    return JSONResponse({"flavors": [views.flavor_summary(f, urls)
                                     for f in _flavors(request, min_ram, min_disk)]})


@router.get("/flavors/detail", tags=["flavors"], response_model=models_catalog.FlavorDetailIndex,
            responses=models.READ_ERRORS)
async def list_flavors_detail(request: Request, ctx: Ctx, min_ram: MinRam = None,
                              min_disk: MinDisk = None) -> JSONResponse:
    urls = views.Urls(request)
    return JSONResponse({"flavors": [views.flavor_detail(f, urls)
                                     for f in _flavors(request, min_ram, min_disk)]})


@router.get("/flavors/{flavor_id}", tags=["flavors"], response_model=models_catalog.FlavorShow,
            responses=models.READ_ERRORS)
async def show_flavor(request: Request, ctx: Ctx, flavor_id: str) -> JSONResponse:
    flavor = deps_of(request).flavors.get(flavor_id)
    return JSONResponse({"flavor": views.flavor_detail(flavor, views.Urls(request))})


@router.get("/images", tags=["images"], response_model=models_catalog.ImageIndex,
            responses=models.READ_ERRORS)
async def list_images(request: Request, ctx: Ctx) -> JSONResponse:
    urls = views.Urls(request)
    return JSONResponse({"images": [views.image_summary(i, urls) for i in deps_of(request).images.list()]})


@router.get("/images/detail", tags=["images"], response_model=models_catalog.ImageDetailIndex,
            responses=models.READ_ERRORS)
async def list_images_detail(request: Request, ctx: Ctx) -> JSONResponse:
    urls = views.Urls(request)
    return JSONResponse({"images": [views.image_detail(i, urls) for i in deps_of(request).images.list()]})


@router.get("/images/{image_id}", tags=["images"], response_model=models_catalog.ImageShow,
            responses=models.READ_ERRORS)
async def show_image(request: Request, ctx: Ctx, image_id: str) -> JSONResponse:
    image = deps_of(request).images.get(image_id)
    return JSONResponse({"image": views.image_detail(image, views.Urls(request))})


@router.delete("/images/{image_id}", tags=["images"], status_code=204, response_class=Response,
               responses=models.WRITE_ERRORS)
async def remove_image(request: Request, ctx: Ctx, image_id: str) -> Response:
    """Take an image out of this host's catalog (admin only: images are the host's, not
    a project's). 409 while a server (of any project) was built from it."""
    if not ctx.is_admin:
        raise PolicyForbidden("Policy doesn't allow os_compute_api:image-delete to be performed.")
    deps_of(request).images.delete(image_id)
    return Response(status_code=204)


@router.get("/limits", tags=["limits"], response_model=models_catalog.LimitsShow,
            responses=models.READ_ERRORS)
async def show_limits(request: Request, ctx: Ctx) -> JSONResponse:
    quotas = deps_of(request).quotas
    return JSONResponse(views.limits_view(quotas.limits, quotas.usage(ctx.project_id)))
