"""Routes whose OpenAPI-only parts are built when the document is first asked for.

A route's `response_model` and its documented fault `responses` serve /openapi.json only:
every handler here returns a Response it built itself (views.py), which FastAPI sends as
it is. Yet FastAPI builds a serialising field (a pydantic TypeAdapter) for each of them
when the route is declared, ~1.7 MiB kept by an idle daemon for a document that is
rarely fetched (issue 15: its memory). A `DocRouter` declares its routes without them
and keeps them aside; `documented()` gives a plain APIRouter declared with everything,
from which the app builds its document on the first GET /openapi.json (agent/api/app.py).

A route whose endpoint does not return a Response keeps its `response_model` (FastAPI
would serialise the returned value through it): only documentation is deferred.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.dependencies.utils import get_typed_return_annotation
from starlette.responses import Response


def _returns_response(endpoint: Callable[..., Any]) -> bool:
    annotation = get_typed_return_annotation(endpoint)
    return isinstance(annotation, type) and issubclass(annotation, Response)


class DocRouter(APIRouter):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_kwargs = kwargs
        self._declared: list[tuple[str, Callable[..., Any], dict[str, Any]]] = []

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        self._declared.append((path, endpoint, dict(kwargs)))
        kwargs["responses"] = None
        if _returns_response(endpoint):
            kwargs["response_model"] = None
        super().add_api_route(path, endpoint, **kwargs)

    def documented(self) -> APIRouter:
        """The same routes, declared with their response models and fault responses."""
        twin = APIRouter(**self._init_kwargs)
        for path, endpoint, kwargs in self._declared:
            twin.add_api_route(path, endpoint, **kwargs)
        return twin
