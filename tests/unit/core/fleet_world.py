"""A controller's core wired to in-memory fakes (issue 12): its ServerService (quotas,
IPAM on one default network) kicking a FleetDispatcher that places with the scheduler
and publishes to a RecordingBus, and the FleetApplier over the same store."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.core.flavors import FlavorCatalog
from agent.core.fleet_apply import FleetApplier
from agent.core.fleet_dispatch import FleetDispatcher
from agent.core.fleet_tickets import FleetTickets
from agent.core.networks import NetworkCatalog, PortService
from agent.core.placement import Placer
from agent.core.servers import ServerService
from agent.model.fleet import Heartbeat
from agent.model.network import Network
from agent.model.passwords import PasswordPolicy
from agent.model.requests import CreateServer, Limits, RequestContext
from agent.model.server import Server
from tests.unit.fakes.bus import RecordingBus
from tests.unit.fakes.images import FakeImageCatalog, make_image
from tests.unit.fakes.store import MemoryStore

IMAGE = make_image("busybox-test", image_id=uuid.UUID("0b9b6a0e-7c5e-4d43-9b2b-6e2f0c1a7e11"))
ALICE = RequestContext(project_id="alice-project", user_id="alice")
NET = Network(id=uuid.UUID("11111111-1111-4111-8111-111111111111"), name="net-a",
              bridge="brneta", cidr="10.30.0.0/24", default=True)
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at

    def tick(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


def beat(host: str, images: tuple[str, ...] = ("busybox-test",), **kw: Any) -> Heartbeat:
    fields: dict[str, Any] = {
        "host": host, "vcpus": 4, "ram_mb": 8000, "disk_total_gb": 100, "disk_used_gb": 0,
        "running_servers": 0, "virt_type": "qemu", "images": list(images), "sent_at": T0,
        "interval_s": 10}
    fields.update(kw)
    return Heartbeat(**fields)


@dataclass
class Controller:
    store: MemoryStore
    bus: RecordingBus
    clock: Clock
    service: ServerService
    dispatcher: FleetDispatcher
    applier: FleetApplier
    tickets: FleetTickets
    created: list[Server] = field(default_factory=list)

    async def heartbeat(self, host: str, **kw: Any) -> None:
        await self.store.record_heartbeat(beat(host, **kw), self.clock())

    async def create(self, **kw: Any) -> Server:
        req = CreateServer(**{"name": "web", "image_ref": str(IMAGE.uuid), "flavor_ref": "1", **kw})
        server, _ = await self.service.create(ALICE, req)
        await self.dispatcher.dispatch_pending()
        return self.store.get_server(server.id)

    async def fetch_tickets(self, host: str) -> None:
        """The host's agent fetches the ticket of every job published to it."""
        for to, message in self.bus.jobs:
            if to == host:
                await self.tickets.fetch(message.job_id, host)

    def published(self) -> list[tuple[str, str, uuid.UUID]]:
        """(host, kind, server id) of each job published, in order."""
        return [(host, m.kind.value, m.server_id) for host, m in self.bus.jobs]


def controller(store: MemoryStore | None = None, bus: RecordingBus | None = None,
               clock: Clock | None = None) -> Controller:
    store = store or MemoryStore()
    bus = bus or RecordingBus()
    clock = clock or Clock()
    images, flavors = FakeImageCatalog([IMAGE]), FlavorCatalog()
    dispatcher = FleetDispatcher(store, bus, Placer(store, store, flavors, images=images, now=clock),
                                 flavors,
                                 now=clock, retry_s=0.01)
    ports = PortService(store, NetworkCatalog([NET]), limits=Limits())
    service = ServerService(store, images, flavors, Limits(), PasswordPolicy(),
                            kick=dispatcher.kick, ports=ports, now=clock)
    applier = FleetApplier(store, bus, now=clock)
    return Controller(store, bus, clock, service, dispatcher, applier,
                      FleetTickets(store, "t", dispatcher.step_lock))
