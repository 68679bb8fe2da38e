"""/servers/{id}/metadata: the server's key/value metadata, whole or item by item."""

from __future__ import annotations

from typing import Annotated

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent.api import models
from agent.api.auth import Ctx, deps_of
from agent.api.routes_servers import parse_server_id
from agent.api.routing import Path, Router
from agent.api.schemas import MetadataBody, MetaItemBody
from agent.errors import InvalidInput, MetadataItemNotFound

router = Router(tags=["server metadata"])

Key = Annotated[str, Path(description="A metadata key")]


@router.get("/servers/{server_id}/metadata", response_model=models.Metadata,
            responses=models.READ_ERRORS)
async def list_metadata(request: Request, ctx: Ctx, server_id: str) -> JSONResponse:
    server = deps_of(request).servers.get_live(ctx, parse_server_id(server_id))
    return JSONResponse({"metadata": dict(server.metadata)})


@router.post("/servers/{server_id}/metadata", response_model=models.Metadata,
             responses=models.WRITE_ERRORS, summary="Merge metadata into the server's")
async def merge_metadata(request: Request, ctx: Ctx, server_id: str, body: MetadataBody) -> JSONResponse:
    merged = await deps_of(request).servers.set_metadata(ctx, parse_server_id(server_id), body.metadata,
                                                   replace=False)
    return JSONResponse({"metadata": dict(merged)})


@router.put("/servers/{server_id}/metadata", response_model=models.Metadata,
            responses=models.WRITE_ERRORS, summary="Replace the server's metadata")
async def replace_metadata(request: Request, ctx: Ctx, server_id: str, body: MetadataBody) -> JSONResponse:
    result = await deps_of(request).servers.set_metadata(ctx, parse_server_id(server_id), body.metadata,
                                                   replace=True)
    return JSONResponse({"metadata": dict(result)})


@router.get("/servers/{server_id}/metadata/{key}", response_model=models.MetaItem,
            responses=models.READ_ERRORS)
async def show_metadata_item(request: Request, ctx: Ctx, server_id: str, key: Key) -> JSONResponse:
    server = deps_of(request).servers.get_live(ctx, parse_server_id(server_id))
    if key not in server.metadata:
        raise MetadataItemNotFound(f"Metadata item was not found: {key[:255]}")
    return JSONResponse({"meta": {key: server.metadata[key]}})


@router.put("/servers/{server_id}/metadata/{key}", response_model=models.MetaItem,
            responses=models.WRITE_ERRORS, summary="Set one metadata item")
async def set_metadata_item(request: Request, ctx: Ctx, server_id: str, key: Key,
                            body: MetaItemBody) -> JSONResponse:
    if len(body.meta) > 1:
        raise InvalidInput("Request body contains too many items", "meta")
    if key not in body.meta:
        raise InvalidInput("Request body and URI mismatch", "meta")
    await deps_of(request).servers.set_metadata(ctx, parse_server_id(server_id), {key: body.meta[key]},
                                          replace=False)
    return JSONResponse({"meta": {key: body.meta[key]}})


@router.delete("/servers/{server_id}/metadata/{key}", status_code=204, response_class=Response,
               responses=models.WRITE_ERRORS)
async def delete_metadata_item(request: Request, ctx: Ctx, server_id: str, key: Key) -> Response:
    await deps_of(request).servers.delete_metadata_item(ctx, parse_server_id(server_id), key)
    return Response(status_code=204)
