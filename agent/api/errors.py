"""OpenStack fault bodies, and the mapping of every error to one.

Messages are safe to show: the core's errors never carry secrets, and validation
messages never echo the value of a secret field (nor any object or list value)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from agent.api.routing import RequestValidationError
from agent.api.schemas import SECRET_FIELDS
from agent.errors import (
    AgentError,
    Conflict,
    InvalidInput,
    NotFound,
    OverLimit,
    PolicyForbidden,
    QuotaExceeded,
    StaleServer,
    StoreError,
)
from agent.model.transitions import IllegalTransition

log = structlog.get_logger("agent.api")

# nova.api.openstack.wsgi.Fault._fault_names; anything else is a computeFault.
FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}
UNAUTHORIZED_MESSAGE = "The request you have made requires authentication."
MALFORMED_BODY = "Malformed request body"
TOO_LARGE = "Request is too large."
STORE_UNAVAILABLE = "The state store is unavailable; try again later."
STORE_FULL = "The state store cannot be written: the host is out of disk space; try again later."
STALE = "Server changed, try again."


class ApiFault(Exception):
    """Raised by the API layer itself: a status and a message that is safe to show."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


def fault_body(status: int, message: str) -> dict[str, Any]:
    return {FAULT_NAMES.get(status, "computeFault"): {"code": status, "message": message}}


def fault_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(fault_body(status, message), status_code=status, headers=dict(headers or {}))


def unauthorized_response() -> JSONResponse:
    body = {"error": {"code": 401, "title": "Unauthorized", "message": UNAUTHORIZED_MESSAGE}}
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": 'Keystone uri=""'})


def internal_error_message(request_id: str) -> str:
    return ("Unexpected API Error. Please report this to the operator of this host, with "
            f"the request id {request_id}.")


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def agent_error_status(error: Exception) -> tuple[int, str]:
    """The status and message for an error of the core (or the state machine)."""
    if isinstance(error, IllegalTransition):
        return 409, str(error)
    if isinstance(error, StaleServer):
        return 409, STALE
    if isinstance(error, Conflict):
        return 409, str(error)
    if isinstance(error, NotFound):
        return 404, str(error)
    if isinstance(error, InvalidInput):
        message = str(error)
        if error.field and error.field not in message:
            message = f"Invalid input for field/attribute {error.field}. {message}"
        return 400, message
    if isinstance(error, QuotaExceeded | PolicyForbidden):
        return 403, str(error)
    if isinstance(error, OverLimit):
        return 413, str(error)
    if isinstance(error, StoreError):
        # SQLite's SQLITE_FULL ("database or disk is full"), as the store adapter reports
        # it: the operator's fix differs (free space), so say so.
        return 503, STORE_FULL if "disk is full" in str(error) else STORE_UNAVAILABLE
    return 500, ""


async def _agent_error(request: Request, error: Exception) -> JSONResponse:
    if isinstance(error, ApiFault):
        if error.status == 401:
            return unauthorized_response()
        return fault_response(error.status, error.message)
    status, message = agent_error_status(error)
    if status >= 500:
        log.error("api.failed", error_type=type(error).__name__, status=status,
                  path=request.url.path)
        if status == 500:
            message = internal_error_message(_request_id(request))
    return fault_response(status, message)


def _allowed_methods(request: Request) -> set[str]:
    """Every method some route serves at this path (Starlette names the first route's only).
    app.state.route_methods is [(path regex, methods)], set by create_api."""
    path = request.url.path
    return {m for regex, methods in getattr(request.app.state, "route_methods", ())
            if regex.match(path) for m in methods}


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    status = error.status_code
    headers = dict(error.headers or {})
    if status == 404:
        message = "The resource could not be found."
    elif status == 405:
        message = f"The method {request.method} is not allowed for this resource."
        headers["Allow"] = ", ".join(sorted(_allowed_methods(request)))
    elif status == 400:
        message = MALFORMED_BODY
    elif status >= 500:
        message = internal_error_message(_request_id(request))
    else:
        message = str(error.detail)
    return fault_response(status, message, headers)


# Parts of a pydantic error location that name a union member or a dict key, not a field.
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "bytes", "[key]", "constrained-str"})
_DICT_FIELDS = ("metadata", "meta")  # their keys are data, not field names


def _field_of(loc: Sequence[Any]) -> str:
    """The field an error is about: the innermost field name in the location."""
    names = [str(p) for p in loc[1:]
             if not isinstance(p, int) and str(p) not in _TYPE_TAGS and "[" not in str(p)]
    for dict_field in _DICT_FIELDS:
        if dict_field in names:
            return dict_field
    return names[-1] if names else "body"


def _is_secret(loc: Sequence[Any]) -> bool:
    return any(str(p) in SECRET_FIELDS for p in loc)


def validation_message(error: Mapping[str, Any]) -> str:
    """One pydantic error as a Nova-style message naming the field. The value is shown
    only when it is a short scalar and no part of a secret field."""
    kind = error.get("type", "")
    loc = tuple(error.get("loc", ()))
    if kind == "json_invalid" or loc in ((), ("body",)):
        return MALFORMED_BODY
    field = _field_of(loc)
    if kind == "extra_forbidden":
        return f"Additional properties are not allowed ('{field}' was unexpected)"
    if kind == "missing":
        return f"'{field}' is a required property"
    msg = str(error.get("msg", "is invalid"))
    value = error.get("input")
    if _is_secret(loc) or not isinstance(value, str | int | float | bool) or len(str(value)) > 100:
        return f"Invalid input for field/attribute {field}. {msg}"
    return f"Invalid input for field/attribute {field}. Value: {value}. {msg}"


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors = error.errors()
    # The deepest error: of a union's branches, the one that got furthest into the value.
    deepest = max(errors, key=lambda e: len(e.get("loc", ())), default=None)
    message = validation_message(deepest) if deepest is not None else MALFORMED_BODY
    return fault_response(400, message)


def install_error_handlers(app: Starlette) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ApiFault, _agent_error)
    app.add_exception_handler(AgentError, _agent_error)
    app.add_exception_handler(IllegalTransition, _agent_error)
