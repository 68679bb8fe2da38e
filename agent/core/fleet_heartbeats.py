"""The agent's heartbeats to the fleet (issue 12): every interval, what this host has.

The controller marks a host down after three intervals without one
(agent.model.fleet.host_is_down), so a beat that cannot be read is skipped and logged,
never the end of the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from agent.model.fleet import Heartbeat
from agent.protocols import FleetPublisher

log = structlog.get_logger("agent.fleet")


async def send_heartbeats(publisher: FleetPublisher, read: Callable[[], Awaitable[Heartbeat]],
                          interval_s: float,
                          sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Until cancelled: read the host's capacity and publish it, once per `interval_s`
    (counted from the start of each beat). A publish waits through a lost broker
    connection, so at most one beat is ever pending."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await publisher.publish_heartbeat(await read())
        except asyncio.CancelledError:
            raise
        except Exception as e:  # one missed beat; the next interval tries again
            log.warning("fleet.heartbeat_failed", error=type(e).__name__)
        await sleep(max(0.0, interval_s - (loop.time() - started)))
