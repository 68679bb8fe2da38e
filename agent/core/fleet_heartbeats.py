"""The agent's heartbeats to the fleet (issue 12): every interval, what this host has.

The controller marks a host down after three intervals without one
(agent.model.fleet.host_is_down), so a beat that cannot be read is skipped and logged,
never the end of the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog

from agent.model.fleet import Heartbeat
from agent.model.host import HostCapacity, VirtType
from agent.protocols import FleetPublisher, ImageCatalog, Store

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


def heartbeat_reader(host: str, store: Store, images: ImageCatalog,
                     capacity: Callable[[], HostCapacity], virt_type: VirtType,
                     interval_s: float) -> Callable[[], Awaitable[Heartbeat]]:
    """What send_heartbeats reads each beat: the machine's capacity (read off the loop:
    it touches the filesystem), the servers this host holds (not deleted: what Nova's
    running_vms counts) and the images present."""

    async def read() -> Heartbeat:
        have = await asyncio.to_thread(capacity)
        image_ids = await asyncio.to_thread(lambda: sorted(str(i.uuid) for i in images.list()))
        return Heartbeat(host=host, vcpus=have.vcpus, ram_mb=have.ram_mb,
                         disk_total_gb=have.disk_total_gb, disk_used_gb=have.disk_used_gb,
                         running_servers=sum(store.server_state_counts().values()),
                         virt_type=virt_type, images=image_ids, sent_at=datetime.now(UTC),
                         interval_s=interval_s)

    return read
