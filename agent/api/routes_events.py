"""/os-server-events: the ordered feed of server status changes (the store's events),
at once, by long poll (`wait`), or as server-sent events (`Accept: text/event-stream`).

A caller sees its own project's events; an admin sees every project's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from agent.api import models_events
from agent.api.auth import Ctx, deps_of
from agent.core.event_feed import MAX_LIMIT, MAX_WAIT_S, EventFeed, event_view

router = APIRouter(tags=["events"])

MAX_SEQ = 2**63 - 1  # SQLite's largest integer
DEFAULT_LIMIT = 100
SSE_MEDIA_TYPE = "text/event-stream"


def _wants_stream(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == SSE_MEDIA_TYPE for part in accept.split(","))


async def _sse(feed: EventFeed, since: int, project_id: str | None) -> AsyncIterator[bytes]:
    yield b"retry: 1000\n\n"  # EventSource: reconnect after 1 s (with Last-Event-ID)
    async for event in feed.stream(since, project_id):
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
    feed = deps.events or EventFeed(deps.store, None)
    after = since if last_event_id is None else last_event_id
    project_id = None if ctx.is_admin else ctx.project_id
    if _wants_stream(request):
        return StreamingResponse(_sse(feed, after, project_id), media_type=SSE_MEDIA_TYPE,
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    events = await feed.page(after, project_id, limit, wait)
    return JSONResponse({"events": [event_view(e) for e in events],
                         "last_seq": events[-1].seq if events else after})
