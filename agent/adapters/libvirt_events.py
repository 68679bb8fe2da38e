"""The PowerEvents port on libvirt: lifecycle events and the connection's life.

One connection is kept for events only. Its close callback (libvirtd stopped, killed or
restarted) and keepalive (a hung libvirtd) report the loss; then it reconnects with
backoff and reports the connection back, so the monitor can resync.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from uuid import UUID

import libvirt
import structlog

log = structlog.get_logger("agent.libvirt_events")

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
KEEPALIVE_INTERVAL_S = 2
KEEPALIVE_COUNT = 3

_EVENTS = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined", libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started", libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed", libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown", libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}


class LibvirtEventSource:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.connected = False

    async def run(self, on_domain: Callable[[UUID, str], None],
                  on_connection: Callable[[bool], Awaitable[None]]) -> None:
        """Deliver lifecycle events until cancelled, reconnecting whenever libvirtd goes."""
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_FIRST_S
        while True:
            try:
                conn = await asyncio.to_thread(libvirt.open, self.uri)
            except libvirt.libvirtError as e:
                await self._set(False, on_connection, e.get_error_message())
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            lost = asyncio.Event()

            def on_close(_conn: object, reason: int, _opaque: object, lost: asyncio.Event = lost) -> None:
                loop.call_soon_threadsafe(lost.set)

            def on_event(_conn: object, dom: libvirt.virDomain, event: int, _detail: int,
                         _opaque: object) -> None:
                uuid = UUID(dom.UUIDString())
                loop.call_soon_threadsafe(on_domain, uuid, _EVENTS.get(event, str(event)))

            try:
                conn.registerCloseCallback(on_close, None)
                conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event,
                                            None)
                conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
            except libvirt.libvirtError as e:
                await self._set(False, on_connection, e.get_error_message())
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()
                await asyncio.sleep(backoff)
                continue
            backoff = BACKOFF_FIRST_S
            await self._set(True, on_connection, "connected")
            try:
                await lost.wait()
            finally:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.unregisterCloseCallback()
                    conn.close()
            await self._set(False, on_connection, "connection closed")

    async def _set(self, up: bool, on_connection: Callable[[bool], Awaitable[None]], why: str) -> None:
        if up != self.connected:
            log.info("libvirt.connection", up=up, uri=self.uri, reason=why)
            self.connected = up
            await on_connection(up)
