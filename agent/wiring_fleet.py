"""An agent's fleet mode (issue 12), wired: its broker link, job intake, event relay and
heartbeats. Imported only when [amqp] is configured (agent/app.py), so a single-host
daemon loads none of it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from agent.adapters.fleet_tickets import HttpxJobTickets, read_fleet_token
from agent.adapters.host_facts import read_host_capacity
from agent.core.fleet_events import FleetEventRelay
from agent.core.fleet_heartbeats import heartbeat_reader, send_heartbeats
from agent.core.fleet_jobs import FleetJobIntake
from agent.errors import ConfigError
from agent.model.fleet import Heartbeat
from agent.protocols import FleetPublisher, JobBus
from agent.wiring import Agent


class FleetBus(JobBus, FleetPublisher, Protocol):
    """What the agent's fleet mode needs of the broker (AmqpBus)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...


@dataclass
class FleetLink:
    """An agent's fleet mode (issue 12): jobs from its queue through the intake, its outbox
    relayed as events, heartbeats; started once the runner can take jobs, closed first
    at shutdown (no job comes in while the runner stops; one not yet acked comes again)."""

    host: str
    bus: FleetBus
    tickets: HttpxJobTickets
    intake: FleetJobIntake
    relay: FleetEventRelay
    read_heartbeat: Callable[[], Awaitable[Heartbeat]]
    heartbeat_s: float
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        await self.bus.start()  # connects (and reconnects) in the background
        await self.bus.consume_jobs(self.intake)
        self.tasks = [asyncio.create_task(self.relay.run(), name="fleet-events"),
                      asyncio.create_task(send_heartbeats(self.bus, self.read_heartbeat,
                                                          self.heartbeat_s), name="fleet-heartbeats")]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.bus.close()
        await self.tickets.aclose()


def fleet_link(agent: Agent) -> FleetLink | None:
    """The agent's fleet mode when [amqp] is configured, else None (single-host: nothing of
    the broker is imported). ConfigError when the controller's URL or the fleet token is
    missing: better not to start than to take jobs it cannot fetch."""
    config = agent.config
    if config.amqp is None:
        return None
    if not config.amqp.controller_url:
        raise ConfigError("amqp: an agent in fleet mode needs controller_url (where it fetches "
                          "its jobs' tickets)")
    token = read_fleet_token(config.amqp.fleet_token_file)
    from agent.adapters.amqp_bus import AmqpBus, AmqpSettings  # aio-pika: fleet mode only

    host = config.fleet_host
    bus = AmqpBus(AmqpSettings.from_config(config.amqp, config.host))
    tickets = HttpxJobTickets(config.amqp.controller_url, host, token)
    return FleetLink(
        host=host, bus=bus, tickets=tickets,
        intake=FleetJobIntake(agent.store, tickets, agent.runner.kick, host),
        relay=FleetEventRelay(agent.store, bus, agent.notifier, host),
        read_heartbeat=heartbeat_reader(host, agent.store, agent.images,
                                        partial(read_host_capacity, config.instances_dir),
                                        agent.runner.deps.virt_type, config.amqp.heartbeat_s),
        heartbeat_s=config.amqp.heartbeat_s)
