"""/openapi.json, written by FastAPI from the declared routes: the only module of the agent
that imports FastAPI, on the first GET /openapi.json (agent/api/app.py), so that a daemon
that is never asked for its document never loads it (issue 15: ~11 MiB of an idle daemon).

The routes are declared to a FastAPI "documented twin" exactly as they were declared when
FastAPI also served them (the same routers, prefixes, dependencies, operation ids, response
models and fault responses): the document is unchanged byte for byte
(tests/unit/api/test_openapi_golden.py). Each endpoint and dependency stands in the twin
as a function of the same name, docstring and signature, with agent/api/routing.py's
markers swapped for FastAPI's; the twin never serves a request."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

import fastapi
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader as FastApiKeyHeader

from agent.api import routing


class _Twins:
    """FastAPI's view of our endpoints and dependencies, one twin per function (FastAPI
    tells a dependency shared by several routes by its identity)."""

    def __init__(self) -> None:
        self._calls: dict[Callable[..., Any], Callable[..., Any]] = {}
        self._schemes: dict[routing.ApiKeyHeader, FastApiKeyHeader] = {}

    def _marker(self, marker: Any) -> Any:
        if isinstance(marker, routing.Param):
            kinds = {"query": fastapi.Query, "path": fastapi.Path, "header": fastapi.Header,
                     "body": fastapi.Body}
            return kinds[marker.source](**marker.kwargs)
        if isinstance(marker, routing.Depends):
            return fastapi.Depends(self.call(marker.dependency))
        if isinstance(marker, routing.Security):
            scheme = marker.scheme
            if scheme not in self._schemes:
                self._schemes[scheme] = FastApiKeyHeader(
                    name=scheme.name, auto_error=False, scheme_name=scheme.scheme_name,
                    description=scheme.description)
            return fastapi.Security(self._schemes[scheme])
        return marker

    def _annotation(self, annotation: Any) -> Any:
        base, metadata = routing.split_annotated(annotation)
        if not metadata:
            return annotation
        return Annotated[(base, *(self._marker(m) for m in metadata))]

    def call(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        if fn not in self._calls:
            hints = routing.type_hints(fn)
            signature = inspect.signature(fn)
            parameters = [p.replace(annotation=self._annotation(hints[p.name]))
                          if p.name in hints else p for p in signature.parameters.values()]

            async def twin(**_: Any) -> Any:
                raise NotImplementedError("a documented twin serves no request")

            twin.__name__, twin.__qualname__ = fn.__name__, fn.__qualname__
            twin.__doc__, twin.__module__ = fn.__doc__, fn.__module__
            twin.__signature__ = signature.replace(  # type: ignore[attr-defined]
                parameters=parameters, return_annotation=hints.get("return", signature.empty))
            self._calls[fn] = twin
        return self._calls[fn]

    def router(self, router: routing.Router) -> APIRouter:
        twin = APIRouter(**router.options)
        for spec in router.routes:
            twin.add_api_route(spec.path, self.call(spec.endpoint), methods=sorted(spec.methods),
                               **spec.options)
        return twin


def _operation_ids(suffix: str) -> Callable[[APIRoute], str]:
    def operation_id(route: APIRoute) -> str:
        return f"{route.name}{suffix}"
    return operation_id


def document(mounts: Sequence[routing.Mount], info: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document of the routes of `mounts`, in their order."""
    twins = _Twins()
    app = FastAPI(**info)
    grouped: dict[tuple[routing.Router, ...], APIRouter] = {}
    for mount in mounts:
        options: dict[str, Any] = {}
        if mount.prefix:
            options["prefix"] = mount.prefix
        if mount.dependencies:
            options["dependencies"] = [fastapi.Depends(twins.call(d)) for d in mount.dependencies]
        if mount.operation_id_suffix is not None:
            options["generate_unique_id_function"] = _operation_ids(mount.operation_id_suffix)
        if mount.grouped:
            if mount.routers not in grouped:
                group = grouped[mount.routers] = APIRouter()
                for router in mount.routers:
                    group.include_router(twins.router(router))
            app.include_router(grouped[mount.routers], **options)
        else:
            for router in mount.routers:
                app.include_router(twins.router(router), **options)
    return app.openapi()
