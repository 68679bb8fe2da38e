"""Response shapes of the event feed (/os-server-events), for the OpenAPI document."""

from __future__ import annotations

from typing import Any

from agent.api.models import READ_ERRORS, OverLimit, _Out


class ServerEvent(_Out):
    seq: int
    server_id: str
    project_id: str
    old_status: str | None
    new_status: str
    power_state: int
    cause: str
    at: str


class ServerEventPage(_Out):
    events: list[ServerEvent]
    last_seq: int  # the `since` of the next call: the last event's seq, or this call's since


SSE_DESCRIPTION = (
    "The events after `since`, oldest first. With `Accept: text/event-stream`, a server-sent "
    "event stream instead: one `status` event per change (`id:` its seq, `data:` the event as "
    "JSON), as they happen, until the client goes away; a reconnect with `Last-Event-ID` "
    "resumes after that seq.")

FEED_RESPONSES: dict[int | str, dict[str, Any]] = {
    **READ_ERRORS,
    429: {"model": OverLimit, "description": "Too many event streams and long polls open "
                                             "(in all, or for this token)"},
    200: {"description": SSE_DESCRIPTION,
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
}
