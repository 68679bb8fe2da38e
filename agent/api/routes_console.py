"""The guest's serial console as a WebSocket: `compute-agent server console ID` attaches a
terminal to it (as Nova's serial console proxy does, without the proxy).

    GET /v2.1/servers/{server_id}/console   (Upgrade: websocket; X-Auth-Token)

Binary frames both ways: what the client sends is typed into the guest's ttyS0, what the
guest prints comes back. The token is checked as for any request (the local unix socket's
default context applies without one); another project's server, a deleted one or one
with no console yet is refused right after the handshake with close code 4404 (4401 for
a bad token) and a reason.
QEMU serves one client at a time: a second attach waits until the first leaves."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from uuid import UUID

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from agent.api.auth import TOKEN_HEADER, authenticate
from agent.errors import NotFound

log = structlog.get_logger("agent.api.console")

CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
_CHUNK = 4096


async def _guest_to_client(reader: asyncio.StreamReader, ws: WebSocket) -> None:
    while data := await reader.read(_CHUNK):
        await ws.send_bytes(data)


async def _client_to_guest(ws: WebSocket, writer: asyncio.StreamWriter) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes") or (message.get("text") or "").encode()
        writer.write(data)
        await writer.drain()


async def _refuse(ws: WebSocket, code: int, reason: str) -> None:
    """Accept, then close with the reason: a close before accepting would reach the client
    as a bare HTTP 403, whatever the reason."""
    await ws.accept()
    await ws.close(code, reason[:120])


async def serial_console(ws: WebSocket) -> None:
    """Served at /v2.1/servers/{server_id}/console (agent/api/app.py)."""
    server_id: str = ws.path_params["server_id"]
    deps = ws.app.state.deps
    ctx = authenticate(deps.tokens, deps.default_context, ws.headers.get(TOKEN_HEADER),
                       f"req-{uuid.uuid4()}")
    if ctx is None:
        await _refuse(ws, CLOSE_UNAUTHORIZED, "Authentication required")
        return
    try:
        server = deps.servers.get_live(ctx, UUID(server_id))
        path = deps.consoles.socket_path(server.id)
        reader, writer = await asyncio.open_unix_connection(str(path))
    except (ValueError, NotFound, OSError) as e:
        reason = str(e) if isinstance(e, NotFound) else "Guest does not have a console available."
        await _refuse(ws, CLOSE_NOT_FOUND, reason)
        return
    await ws.accept()
    log.info("console.attached", server_id=str(server.id), project_id=ctx.project_id)
    pumps = [asyncio.create_task(_guest_to_client(reader, ws)),
             asyncio.create_task(_client_to_guest(ws, writer))]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in pumps:
            task.cancel()
        for task in pumps:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError,
                                     RuntimeError):
                await task
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await ws.close()  # the client may have gone first (Ctrl-])
        log.info("console.detached", server_id=str(server.id))
