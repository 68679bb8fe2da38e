"""The API's routes, served on Starlette without FastAPI (issue 15: an idle daemon's memory;
FastAPI's import alone is ~11 MiB RSS, and it is needed only to write /openapi.json).

Route modules declare their routes as they would with FastAPI:

    router = Router(tags=["servers"])

    @router.get("/servers/{server_id}", response_model=models.ServerShow, responses=...)
    async def show_server(request: Request, ctx: Ctx, server_id: str) -> JSONResponse: ...

A `Router` records each route with everything its decorator got (for the document,
agent/api/openapi_doc.py, which declares the same routes to FastAPI on the first GET
/openapi.json), and `ApiRoute` serves it: the endpoint is called with what its signature
asks for, found as FastAPI finds it, so that requests get the same answers as they did
when FastAPI served them:
- `Request`; a parameter named in the path; `Annotated[T, Query(...)]`, `Path(...)`,
  `Header(...)` (alias and pydantic constraints as FastAPI's markers take them); a plain
  scalar is a query parameter, a pydantic model (or `Annotated[T, Body()]`) the JSON body;
- `Annotated[T, Depends(fn)]`: fn's own parameters solved the same way, fn called once per
  request (route dependencies first, then the signature's, in order);
- `Annotated[str | None, Security(ApiKeyHeader(...))]`: that header's value.
Every value is validated as FastAPI validates it (pydantic, in python mode); failures are
collected in FastAPI's order (dependencies', then path, query, header, body) into one
RequestValidationError with FastAPI's error locations ("query", "limit"), ("body", ...)."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, compile_path

_MISSING: Any = object()
# pydantic constraints a marker may carry; its other keywords (alias aside) document only.
_CONSTRAINTS = frozenset({"gt", "ge", "lt", "le", "multiple_of", "allow_inf_nan", "strict",
                          "min_length", "max_length", "pattern"})


class RequestValidationError(Exception):
    """A request that does not fit its route's parameters (FastAPI's error list)."""

    def __init__(self, errors: Sequence[dict[str, Any]]) -> None:
        super().__init__(errors)
        self._errors = list(errors)

    def errors(self) -> list[dict[str, Any]]:
        return self._errors


# -- markers: what FastAPI's Query/Path/Header/Body/Depends/Security say, no more ----------

class Param:
    """A parameter's source and its keywords (FastAPI's, passed on as they are to the
    documented twin)."""

    source = ""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class Query(Param):
    source = "query"


class Path(Param):
    source = "path"


class Header(Param):
    source = "header"


class Body(Param):
    source = "body"


@dataclass(frozen=True)
class Depends:
    dependency: Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class ApiKeyHeader:
    """An API key in a header, documented as a security scheme (FastAPI's APIKeyHeader
    with auto_error=False: the middleware does the real check)."""

    name: str
    scheme_name: str
    description: str


@dataclass(frozen=True)
class Security:
    scheme: ApiKeyHeader


# -- declaring ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mount:
    """Routers served under one prefix, as FastAPI's include_router took them: with the
    dependencies every route under it runs first, and how its operations are named in the
    document (None: FastAPI's default; else the route's name and this suffix). `grouped`:
    included through one router (the compute API, under two prefixes) or each on its own."""

    prefix: str
    routers: tuple[Router, ...]
    operation_id_suffix: str | None = None
    dependencies: tuple[Callable[..., Awaitable[Any]], ...] = ()
    grouped: bool = False


@dataclass(frozen=True, eq=False)
class RouteSpec:
    """A declared route: its path under its router, and the decorator's keywords."""

    path: str
    methods: frozenset[str]
    endpoint: Callable[..., Awaitable[Response]]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.endpoint.__name__


class Router:
    def __init__(self, **options: Any) -> None:
        self.options = options  # FastAPI APIRouter's keywords (tags)
        self.routes: list[RouteSpec] = []

    def api_route(self, path: str, methods: Iterable[str], **options: Any) -> Callable[[Any], Any]:
        def record(endpoint: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
            self.routes.append(RouteSpec(path, frozenset(m.upper() for m in methods), endpoint, options))
            return endpoint
        return record

    def get(self, path: str, **options: Any) -> Callable[[Any], Any]:
        return self.api_route(path, ["GET"], **options)

    def post(self, path: str, **options: Any) -> Callable[[Any], Any]:
        return self.api_route(path, ["POST"], **options)

    def put(self, path: str, **options: Any) -> Callable[[Any], Any]:
        return self.api_route(path, ["PUT"], **options)

    def delete(self, path: str, **options: Any) -> Callable[[Any], Any]:
        return self.api_route(path, ["DELETE"], **options)


def type_hints(call: Callable[..., Any]) -> dict[str, Any]:
    return get_type_hints(call, include_extras=True)


def split_annotated(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    """(the type, its Annotated metadata)."""
    if get_origin(annotation) is Annotated:
        return annotation.__origin__, annotation.__metadata__
    return annotation, ()


# -- solving --------------------------------------------------------------------------------

def _is_sequence(annotation: Any) -> bool:
    """A list (or a list | None): read with getlist, as FastAPI reads it."""
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        return any(_is_sequence(a) for a in get_args(annotation) if a is not NoneType)
    return origin in (list, set, tuple, frozenset) or annotation in (list, set, tuple, frozenset)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


@dataclass(eq=False)
class _Field:
    """One parameter read from the request and validated."""

    name: str
    source: str  # path, query, header, body
    alias: str
    annotation: Any  # with its Annotated metadata (a union's discriminator)
    constraints: dict[str, Any]
    default: Any

    @functools.cached_property
    def adapter(self) -> TypeAdapter[Any] | None:
        """Built on first use: an idle daemon holds none. None: a plain str takes the
        value as it is (nothing to validate)."""
        if self.annotation in (str, str | None) and not self.constraints:
            return None
        extra = (Field(**self.constraints),) if self.constraints else ()
        return TypeAdapter(Annotated[(self.annotation, *extra)] if extra else self.annotation)

    def validate(self, value: Any, loc: tuple[Any, ...]) -> tuple[Any, list[dict[str, Any]]]:
        if value is _MISSING:
            if self.default is _MISSING:
                return None, [{"type": "missing", "loc": loc, "msg": "Field required", "input": None}]
            return deepcopy(self.default), []
        if self.adapter is None:
            return value, []
        try:
            return self.adapter.validate_python(value, from_attributes=True), []
        except ValidationError as e:
            return None, [{**err, "loc": loc + tuple(err.get("loc", ()))}
                          for err in e.errors(include_url=False)]

    def read(self, request: Request) -> Any:
        values: Any = {"path": request.path_params, "query": request.query_params,
                       "header": request.headers}[self.source]
        value = values.getlist(self.alias) if _is_sequence(self.annotation) and self.source != "path" \
            else values.get(self.alias)
        return _MISSING if value is None or (isinstance(value, list) and not value) else value


@dataclass(eq=False)
class Plan:
    """How to call one function (an endpoint or a dependency) from a request."""

    call: Callable[..., Awaitable[Any]]
    dependencies: list[tuple[str | None, Plan]] = field(default_factory=list)
    fields: list[_Field] = field(default_factory=list)  # path, query, header, body
    request_name: str | None = None
    header_keys: list[tuple[str, str]] = field(default_factory=list)  # Security: (name, header)

    @property
    def body(self) -> _Field | None:
        return next((f for f in self.fields if f.source == "body"), None)

    def wants_body(self) -> bool:
        return self.body is not None or any(p.wants_body() for _, p in self.dependencies)


@functools.cache
def plan_of(call: Callable[..., Awaitable[Any]], path_names: frozenset[str]) -> Plan:
    """Which of the request's parts each parameter of `call` takes, as FastAPI decides it."""
    if not inspect.iscoroutinefunction(call):
        raise TypeError(f"{call.__qualname__}: endpoints and dependencies must be async")
    plan = Plan(call)
    hints = type_hints(call)
    for param in inspect.signature(call).parameters.values():
        annotation = hints.get(param.name, Any)
        base, metadata = split_annotated(annotation)
        markers = [m for m in metadata if isinstance(m, Param | Depends | Security)]
        marker = markers[-1] if markers else None
        default = _MISSING if param.default is inspect.Parameter.empty else param.default
        if isinstance(marker, Depends):
            plan.dependencies.append((param.name, plan_of(marker.dependency, path_names)))
        elif isinstance(marker, Security):
            plan.header_keys.append((param.name, marker.scheme.name))
        elif marker is None and isinstance(base, type) and issubclass(base, Request):
            plan.request_name = param.name
        else:
            kept = tuple(m for m in metadata if not isinstance(m, Param))
            typed = Annotated[(base, *kept)] if kept else base
            kwargs = marker.kwargs if marker is not None else {}
            if marker is not None:
                source = marker.source
            elif param.name in path_names:
                source = "path"
            else:
                source = "body" if _is_model(base) else "query"
            plan.fields.append(_Field(
                param.name, source, kwargs.get("alias") or param.name, typed,
                {k: v for k, v in kwargs.items() if k in _CONSTRAINTS}, default))
    order = {"path": 0, "query": 1, "header": 2, "body": 3}
    plan.fields.sort(key=lambda f: order[f.source])  # FastAPI's order of errors; stable
    return plan


def _json_body(request: Request, raw: bytes) -> Any:
    """The body as FastAPI reads it: JSON when the content type says so, else the bytes."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    main, _, sub = media.partition("/")
    if main != "application" or not (sub == "json" or sub.endswith("+json")):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", e.pos),
                                       "msg": "JSON decode error", "input": {},
                                       "ctx": {"error": e.msg}}]) from None
    except Exception:
        raise HTTPException(400, "There was an error parsing the body") from None


async def _solve(plan: Plan, request: Request, body: Any,
                 cache: dict[Any, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for name, sub in plan.dependencies:
        sub_values, sub_errors = await _solve(sub, request, body, cache)
        if sub_errors:
            errors.extend(sub_errors)
            continue
        if sub.call not in cache:
            cache[sub.call] = await sub.call(**sub_values)
        if name is not None:
            values[name] = cache[sub.call]
    for name, header in plan.header_keys:
        values[name] = request.headers.get(header) or None
    for f in plan.fields:
        if f.source == "body":
            value, field_errors = f.validate(body, ("body",))
        else:
            value, field_errors = f.validate(f.read(request), (f.source, f.alias))
        if field_errors:
            errors.extend(field_errors)
        else:
            values[f.name] = value
    if plan.request_name is not None:
        values[plan.request_name] = request
    return values, errors


class ApiRoute(Route):
    """A declared route served at its full path (the router's prefix included), with the
    dependencies of the prefix it is served under (the project id check) run first."""

    def __init__(self, path: str, spec: RouteSpec,
                 dependencies: Sequence[Callable[..., Awaitable[Any]]] = ()) -> None:
        super().__init__(path, self._serve, methods=spec.methods, name=spec.name)
        self.methods = set(spec.methods)  # as FastAPI's routes: no HEAD added to a GET
        self.spec = spec
        path_names = frozenset(compile_path(path)[2])
        self.plan = plan_of(spec.endpoint, path_names)
        self.route_plans = [plan_of(d, path_names) for d in dependencies]

    async def _serve(self, request: Request) -> Response:
        body: Any = _MISSING
        if self.plan.wants_body():
            raw = await request.body()
            if raw:
                body = _json_body(request, raw)
        cache: dict[Any, Any] = {}
        errors: list[dict[str, Any]] = []
        for plan in self.route_plans:
            values, route_errors = await _solve(plan, request, body, cache)
            if route_errors:
                errors.extend(route_errors)
            elif plan.call not in cache:
                cache[plan.call] = await plan.call(**values)
        values, endpoint_errors = await _solve(self.plan, request, body, cache)
        errors.extend(endpoint_errors)
        if errors:
            raise RequestValidationError(errors)
        response = await self.spec.endpoint(**values)
        if not isinstance(response, Response):
            raise TypeError(f"{self.spec.name} returned {type(response).__name__}, not a Response")
        return response
