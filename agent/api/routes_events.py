"""/os-server-events: the ordered feed of server status changes (the store's events),
at once, by long poll (`wait`), or as server-sent events (`Accept: text/event-stream`).

A caller sees its own project's events; an admin sees every project's. Streams and long
polls are capped in all and per token (429 past a cap), and end once their token is no
longer configured as it was (a reload that revoked it)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from agent.api import models_events
from agent.api.auth import TOKEN_HEADER, Ctx, deps_of
from agent.api.errors import fault_response
from agent.api.routing import Header, Query, Router
from agent.core.event_feed import MAX_LIMIT, MAX_WAIT_S, EventFeed, StreamSlots, event_view

router = Router(tags=["events"])

MAX_SEQ = 2**63 - 1  # SQLite's largest integer
DEFAULT_LIMIT = 100
SSE_MEDIA_TYPE = "text/event-stream"
RETRY_AFTER_S = 5
TOO_MANY = ("Too many event streams and long polls are open ({scope}); close one, or poll "
            "without wait.")


class _HeldStream(StreamingResponse):
    """A stream that gives its slot back however it ends (done, client gone, cancelled)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(content, media_type=SSE_MEDIA_TYPE,
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _caller(request: Request) -> tuple[str, Callable[[], bool]]:
    """The caller's slot key (a digest of its token: the slots never hold a secret) and
    whether its token still stands for what it did when the request came in."""
    token = request.headers.get(TOKEN_HEADER)
    if token is None:  # the unix socket's default context: nothing to revoke
        return "local", lambda: True
    tokens = deps_of(request).tokens
    info = tokens.get(token)
    return hashlib.sha256(token.encode()).hexdigest()[:32], lambda: tokens.get(token) == info


def _too_many(slots: StreamSlots) -> Response:
    scope = "in all" if slots.total >= slots.max_total else "for this token"
    return fault_response(429, TOO_MANY.format(scope=scope),
                          headers={"Retry-After": str(RETRY_AFTER_S)})


def _wants_stream(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == SSE_MEDIA_TYPE for part in accept.split(","))


async def _sse(feed: EventFeed, since: int, project_id: str | None,
               allowed: Callable[[], bool]) -> AsyncIterator[bytes]:
    yield b"retry: 1000\n\n"  # EventSource: reconnect after 1 s (with Last-Event-ID)
    async for event in feed.stream(since, project_id, allowed=allowed):
        if event is None:
            yield b": keep-alive\n\n"
            continue
        data = json.dumps(event_view(event), sort_keys=True)
        yield f"id: {event.seq}\nevent: status\ndata: {data}\n\n".encode()


@router.get("/os-server-events", response_model=models_events.ServerEventPage,
            responses=models_events.FEED_RESPONSES)
async def list_server_events(
    request: Request,
    ctx: Ctx,
    since: Annotated[int, Query(ge=0, le=MAX_SEQ, description="Only events after this seq")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many events")] = DEFAULT_LIMIT,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, allow_inf_nan=False, description=(
        "Long poll: with no event yet, wait up to this many seconds for the first"))] = 0.0,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0, le=MAX_SEQ, description=(
        "Resume after this seq (an EventSource reconnecting); takes the place of since"))] = None,
) -> Response:
    deps = deps_of(request)
    feed = deps.events
    after = since if last_event_id is None else last_event_id
    project_id = None if ctx.is_admin else ctx.project_id
    key, allowed = _caller(request)
    if _wants_stream(request):
        if not feed.slots.acquire(key):
            return _too_many(feed.slots)
        return _HeldStream(_sse(feed, after, project_id, allowed), lambda: feed.slots.release(key))
    if wait <= 0:
        events = await feed.page(after, project_id, limit)
    elif not feed.slots.acquire(key):
        return _too_many(feed.slots)
    else:
        try:
            events = await feed.page(after, project_id, limit, wait, allowed)
        finally:
            feed.slots.release(key)
    return JSONResponse({"events": [event_view(e) for e in events],
                         "last_seq": events[-1].seq if events else after})
