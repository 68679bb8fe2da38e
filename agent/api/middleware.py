"""Everything a request goes through before and after its route, as one ASGI middleware:

1. a request id (req-<uuid4>), bound into structlog's contextvars for the request;
2. a declared body larger than max_body_bytes is refused (413) before anything is read;
   (answers given before the whole body was read close the connection, so its rest is
   never waited for);
3. authentication (401), except for version discovery and the OpenAPI document, and, on
   the controller, its agents' /fleet/ routes (they check the fleet's own token);
4. the microversion check (406, or 400 for a malformed version); in fleet mode, a write
   (any method but GET/HEAD/OPTIONS) is refused (409, naming the controller);
5. the body is read, counting, and refused (413) as soon as it is too large, or (408)
   when it is not all in within body_timeout_s (a client trickling a body); a body is
   JSON whatever its Content-Type says (Nova reads it as JSON too), and JSON whose strings
   hold a lone UTF-16 surrogate ("\\ud800": no Unicode text) is refused (400) off the
   public paths (which read no body), as nothing downstream could encode such a string
   again (to hash, store or answer it);
6. every response gets the request id and version headers; an unexpected exception
   becomes a 500 computeFault that shows neither a traceback nor the request.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import TYPE_CHECKING

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.api.auth import TOKEN_HEADER, authenticate
from agent.api.errors import (
    MALFORMED_BODY,
    TOO_LARGE,
    fault_response,
    internal_error_message,
    unauthorized_response,
)
from agent.api.routes_fleet import FLEET_PREFIX
from agent.api.versions import VARY, VERSION_HEADERS, microversion_error

if TYPE_CHECKING:
    from agent.api.app import ApiDeps

log = structlog.get_logger("agent.api")

PUBLIC_PATHS = frozenset({"/", "/v2.1", "/v2.1/", "/openapi.json"})
CLOSE = {"Connection": "close"}  # the unread rest of a body must not be waited for
BODY_TIMEOUT = "The request body did not arrive in time."
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def fleet_write_refused(controller_url: str) -> str:
    return (f"This host is part of a fleet: its API answers reads only. Send this request "
            f"to the fleet's controller at {controller_url}.")


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _has_lone_surrogate(body: bytes) -> bool:
    """Whether the body parses as JSON and some string in it (key or value) is no Unicode
    text. A body that does not parse is left to the route to refuse."""
    try:
        json.dumps(json.loads(body), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):
        return False
    return False


class ApiMiddleware:
    def __init__(self, app: ASGIApp, deps: ApiDeps) -> None:
        self.app = app
        self.deps = deps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req-{uuid.uuid4()}"
        scope.setdefault("state", {})["request_id"] = request_id
        started = False
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-openstack-request-id"] = request_id
                headers["x-compute-request-id"] = request_id
                for name, value in VERSION_HEADERS.items():
                    headers[name] = value
                vary = headers.get("vary")
                headers["vary"] = f"{vary}, {VARY}" if vary else VARY
            await send(message)

        begun = time.monotonic()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self._handle(scope, receive, send_with_headers)
            except _ClientGone:
                log.info("api.client_gone", method=scope["method"], path=scope["path"])
                return
            except Exception:
                log.exception("api.unexpected_error", method=scope["method"], path=scope["path"])
                if started:
                    raise
                response = fault_response(500, internal_error_message(request_id))
                await response(scope, receive, send_with_headers)
            log.info("api.request", method=scope["method"], path=scope["path"], status=status,
                     ms=round((time.monotonic() - begun) * 1000, 1))

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        limit = self.deps.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await fault_response(400, MALFORMED_BODY)(scope, receive, send)
                return
            if int(declared) > limit:
                await fault_response(413, TOO_LARGE, CLOSE)(scope, receive, send)
                return

        root = scope.get("root_path", "")
        path = scope["path"][len(root):] if root and scope["path"].startswith(root) else scope["path"]
        public = path in PUBLIC_PATHS or (self.deps.tickets is not None
                                          and path.startswith(FLEET_PREFIX))
        if not public:
            ctx = authenticate(self.deps.tokens, self.deps.default_context,
                               headers.get(TOKEN_HEADER), scope["state"]["request_id"])
            if ctx is None:
                await unauthorized_response()(scope, receive, send)
                return
            scope["state"]["context"] = ctx
            refused = microversion_error(headers)
            if refused is not None:
                await fault_response(*refused)(scope, receive, send)
                return
            # Fleet mode: the controller owns every change (an agent's own write would
            # fork its store from the controller's); reads stay for debugging.
            if self.deps.fleet_controller and scope["method"] not in READ_METHODS:
                await fault_response(409, fleet_write_refused(self.deps.fleet_controller),
                                     CLOSE)(scope, receive, send)
                return

        try:
            async with asyncio.timeout(self.deps.body_timeout_s):
                body = await _read_body(receive, limit)
        except _BodyTooLarge:
            await fault_response(413, TOO_LARGE, CLOSE)(scope, receive, send)
            return
        except TimeoutError:
            await fault_response(408, BODY_TIMEOUT, CLOSE)(scope, receive, send)
            return
        if body and not public and _has_lone_surrogate(body):
            await fault_response(400, MALFORMED_BODY)(scope, receive, send)
            return
        if body:
            scope = dict(scope)
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
            scope["headers"].append((b"content-type", b"application/json"))

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
