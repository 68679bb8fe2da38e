"""/os-keypairs, as Nova 2.1 answers: create (200; a generated key's private_key in that
answer only) or import, list ({"keypairs": [{"keypair": {...}}]}), show, delete (202).
Every call acts on the caller's own keypairs (the token's user)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent.api import models, views
from agent.api.auth import Ctx, deps_of
from agent.api.routing import Router
from agent.api.schemas import KeypairCreateBody
from agent.core.keypairs import KeypairService

router = Router(tags=["keypairs"])


def keypairs_of(request: Request) -> KeypairService:
    return deps_of(request).keypairs


@router.post("/os-keypairs", response_model=models.CreatedKeypairShow,
             responses=models.WRITE_ERRORS, summary="Create (generate) or import a keypair")
async def create_keypair(request: Request, ctx: Ctx, body: KeypairCreateBody) -> JSONResponse:
    service = keypairs_of(request)
    args = body.keypair
    if args.public_key is not None:
        return JSONResponse(views.created_keypair(
            await service.import_public_key(ctx, args.name, args.public_key), None))
    keypair, private_key = await service.generate(ctx, args.name)
    return JSONResponse(views.created_keypair(keypair, private_key))


@router.get("/os-keypairs", response_model=models.KeypairIndex, responses=models.READ_ERRORS)
async def list_keypairs(request: Request, ctx: Ctx) -> JSONResponse:
    return JSONResponse({"keypairs": [{"keypair": views.keypair_summary(k)}
                                      for k in keypairs_of(request).list(ctx)]})


@router.get("/os-keypairs/{keypair_name}", response_model=models.KeypairShow,
            responses=models.READ_ERRORS)
async def show_keypair(request: Request, ctx: Ctx, keypair_name: str) -> JSONResponse:
    return JSONResponse(views.keypair_detail(keypairs_of(request).get(ctx, keypair_name)))


@router.delete("/os-keypairs/{keypair_name}", status_code=202, response_class=Response,
               responses=models.WRITE_ERRORS)
async def delete_keypair(request: Request, ctx: Ctx, keypair_name: str) -> Response:
    await keypairs_of(request).delete(ctx, keypair_name)
    return Response(status_code=202)
