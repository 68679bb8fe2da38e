"""uvicorn's httptools protocol with the bounds it lacks, so that no client, with or without
a token, can take the daemon's memory, event loop or file descriptors from the others:

- the request line (414) and the header block (431) are bounded: uvicorn appends a URL and
  httptools a header value for as long as bytes come, so a streamed URL grew the daemon by
  hundreds of MiB;
- a request's headers must be in within `header_timeout_s` of the connection (or of the
  previous answer): else 408 and the connection is closed (slowloris); idle keep-alive
  connections are closed after `keep_alive_s` by uvicorn;
- a listener holds at most `max_connections` connections (503 past it) and a TCP peer
  address at most `max_connections_per_client` (429 past it); one past a cap gets its
  answer and is closed at once, so its descriptor is given back.

Answers are OpenStack fault bodies with `Connection: close`; nothing of the request shows.
Refusals are logged once per status and then counted (a line per status at most every
REFUSAL_LOG_INTERVAL_S): a flood of them must not become a flood of log lines.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import httptools
import structlog

from agent.adapters.uvicorn_core import HttpToolsProtocol
from agent.config import HttpLimits

log = structlog.get_logger("agent.api.http")

FAULT_NAMES = {408: "computeFault", 413: "overLimit", 414: "computeFault", 429: "overLimit",
               431: "computeFault", 503: "serviceUnavailable", 400: "badRequest"}
RETRY_AFTER_S = 5
REFUSAL_LOG_INTERVAL_S = 10.0


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


def refusal_bytes(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 answer with an OpenStack fault body, closing the connection."""
    body = json.dumps({FAULT_NAMES.get(status, "computeFault"): {"code": status,
                                                                  "message": message}}).encode()
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Connection: close"]
    if status in (429, 503):
        head.append(f"Retry-After: {RETRY_AFTER_S}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class RefusalLog:
    """Logs the first refusal of each status, then how many more came, at most once every
    `interval_s` per status."""

    def __init__(self, interval_s: float = REFUSAL_LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._next: dict[int, float] = {}
        self._unlogged: dict[int, int] = {}

    def refused(self, status: int, reason: str) -> None:
        now = self._clock()
        if now < self._next.get(status, 0.0):
            self._unlogged[status] = self._unlogged.get(status, 0) + 1
            return
        count = self._unlogged.pop(status, 0) + 1
        self._next[status] = now + self.interval_s
        log.warning("http.refused", status=status, reason=reason, count=count)


class _PeerCounts:
    """Admitted connections of one listener, in all and per peer address (refused ones are
    not counted: a burst of them must not crowd out the next admitted client)."""

    def __init__(self) -> None:
        self.total = 0
        self.by_peer: dict[str, int] = {}
        self.refusals = RefusalLog()


def guarded_protocol(limits: HttpLimits) -> type[HttpToolsProtocol]:
    """A protocol class for one listener (its own per-peer counts), for uvicorn's `http=`."""
    counts = _PeerCounts()
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,),
                {"limits": limits, "peer_counts": counts})


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: HttpLimits
    peer_counts: _PeerCounts

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._admitted = False
        self._peer: str | None = None  # counted under this address while open
        self._refused = False
        self._reading_head = True  # between a request's first byte (or its wait) and its headers' end
        self._head_bytes = 0
        self._header_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    # -- connections ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        counts = self.peer_counts
        if counts.total >= self.limits.max_connections:
            self._refuse(503, "This listener has too many connections open; try again later.")
            return
        peer = self.client[0] if self.client else None  # None on the unix socket
        if peer is not None:
            held = counts.by_peer.get(peer, 0)
            if held >= self.limits.max_connections_per_client:
                self._refuse(429, "Too many connections open from this address.")
                return
            counts.by_peer[peer] = held + 1
            self._peer = peer
        counts.total += 1
        self._admitted = True
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        """The serial console's WebSocket: the connection moves to uvicorn's WebSocket
        protocol (its own frame-size bound, pings) and keeps this one's slot in the
        counts until it ends."""
        self._cancel_head_timer()
        super().handle_websocket_upgrade()
        ws = self.transport.get_protocol()
        ws_lost = ws.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            try:
                ws_lost(exc)
            finally:
                self._release()

        ws.connection_lost = connection_lost  # type: ignore[method-assign]

    def _release(self) -> None:
        """Give this connection's place in the listener's and its peer's counts back."""
        self._cancel_head_timer()
        if self._admitted:
            self.peer_counts.total -= 1
            self._admitted = False
        if self._peer is not None:
            left = self.peer_counts.by_peer.get(self._peer, 1) - 1
            if left > 0:
                self.peer_counts.by_peer[self._peer] = left
            else:
                self.peer_counts.by_peer.pop(self._peer, None)
            self._peer = None

    def _refuse(self, status: int, message: str) -> None:
        if self._refused:
            return
        self._refused = True
        self._cancel_head_timer()
        self.peer_counts.refusals.refused(status, message)
        if not self.transport.is_closing():
            self.transport.write(refusal_bytes(status, message))
            self.transport.close()

    # -- the head: its size and its time ---------------------------------------------------
    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_bytes:
            self._refuse(408, "The request's headers did not arrive in time.")
        elif not self.transport.is_closing():
            self.transport.close()  # nothing asked: nothing to answer

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._reading_head:
            self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            if isinstance(e.__context__, _Refusal):
                self._refuse(e.__context__.status, e.__context__.message)
            else:
                self._refuse(400, "Invalid HTTP request received.")
            return
        except httptools.HttpParserError:
            self._refuse(400, "Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():  # a WebSocket (only the serial console serves one)
                self.handle_websocket_upgrade()
                return
            self._unsupported_upgrade_warning()
        # Still in the head after this chunk: a head that large is refused (a chunk that
        # ends the head may carry body bytes too, so only an unfinished head is judged).
        head_limit = self.limits.max_request_line + self.limits.max_header_bytes
        if self._reading_head and self._head_bytes > head_limit:
            self._refuse(431, "Request header fields too large.")

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.limits.max_request_line:
            raise _Refusal(414, f"Request URI too long (at most {self.limits.max_request_line} bytes).")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.limits.max_header_bytes:
            raise _Refusal(431, "Request header fields too large.")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True  # the next bytes are the next request's head
        self._head_bytes = 0
        self._header_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._arm_head_timer()  # the next request's headers have this long from now


def websocket_protocol(**kwargs: Any) -> asyncio.Protocol:
    """uvicorn's WebSocket protocol (websockets), imported on the first upgrade: only the
    serial console route serves one, and a daemon whose console is never opened then never
    loads the websockets library (~1 MiB). Given to uvicorn as `ws`, in place of the class."""
    from uvicorn.protocols.websockets.websockets_impl import WebSocketProtocol
    return WebSocketProtocol(**kwargs)
