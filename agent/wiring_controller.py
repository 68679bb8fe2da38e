"""The controller's composition root (issue 12): `compute-agent controller serve`.

The same Compute API over the controller's own store (`<state_dir>/controller.db`): the
same ServerService (validation, quotas, IPAM over the configured networks: an address is
given once across the fleet), whose kick goes to the FleetDispatcher instead of a job
runner; the FleetApplier takes the hosts' events and heartbeats from the broker; the
job-ticket route serves the agents. No libvirt, libguestfs, netlink or dnsmasq here: the
controller owns no guest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from agent.adapters.console_files import LocalConsoleFiles
from agent.adapters.image_catalog import WritableImageCatalog
from agent.adapters.sqlite_store import SqliteStore
from agent.adapters.ssh_keys import CryptographySshKeys
from agent.adapters.webhook_http import HttpxWebhookSender
from agent.api.auth import TokenInfo
from agent.config import Config
from agent.core.console import Consoles, console_log, console_socket
from agent.core.event_feed import EventFeed, EventNotifier, StreamSlots
from agent.core.flavors import FlavorCatalog
from agent.core.fleet_apply import FleetApplier
from agent.core.fleet_dispatch import FleetDispatcher, Placer
from agent.core.fleet_tickets import FleetTickets
from agent.core.host_admin import HostAdmin
from agent.core.images import ImageService
from agent.core.keypairs import KeypairService
from agent.core.metrics import Metrics
from agent.core.networks import NetworkCatalog, PortService
from agent.core.placement import Placer as SchedulerPlacer
from agent.core.servers import ServerService
from agent.core.webhooks import WebhookDispatcher
from agent.errors import ConfigError
from agent.wiring import ApiServices, ServesApi

if TYPE_CHECKING:
    from agent.adapters.amqp_bus import AmqpBus

log = structlog.get_logger("agent.controller")


def read_fleet_token(path: Path) -> str:
    """The fleet's shared secret from its file; ConfigError (naming the file, never the
    content) when it cannot be read or is empty."""
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"amqp: cannot read fleet_token_file {path}: {e.strerror}") from None
    if not token:
        raise ConfigError(f"amqp: fleet_token_file {path} is empty")
    return token


@dataclass
class Controller(ServesApi):
    """Everything the controller is made of, wired."""

    config: Config
    store: SqliteStore
    bus: AmqpBus
    service: ServerService
    dispatcher: FleetDispatcher
    applier: FleetApplier
    tickets: FleetTickets
    flavors: FlavorCatalog
    notifier: EventNotifier
    webhooks: WebhookDispatcher
    metrics: Metrics
    api_services: ApiServices
    hosts: HostAdmin
    tokens: dict[str, TokenInfo] = field(default_factory=dict)

    def api_extra(self) -> dict[str, Any]:
        return {"tickets": self.tickets, "hosts": self.hosts}

    def close(self) -> None:
        self.store.close()


def build_controller(config: Config, placer: Placer | None = None,
                     bus: AmqpBus | None = None) -> Controller:
    """`placer`: the scheduler (agent/core/placement.py) with the `[scheduler]` ratios
    unless given; `bus`: the broker from `[amqp]` unless given (tests)."""
    if config.amqp is None:
        raise ConfigError("controller: the config has no [amqp] section (the fleet's broker)")
    config.state_dir.mkdir(parents=True, exist_ok=True)
    tickets_secret = read_fleet_token(config.amqp.fleet_token_file)
    store = SqliteStore(config.controller_database_path)
    if bus is None:
        from agent.adapters.amqp_bus import AmqpBus, AmqpSettings  # aio-pika: a controller's

        bus = AmqpBus(AmqpSettings.from_config(config.amqp, config.fleet_host))
    # The catalog of images the fleet knows: the controller's image_dirs, the same images
    # the agents hold (each heartbeat names the ones a host has; placement checks it).
    images = WritableImageCatalog(*config.image_dirs)
    flavors = FlavorCatalog(config.flavors)
    placer = placer or SchedulerPlacer(store, store, flavors, config.scheduler, images=images)
    dispatcher = FleetDispatcher(store, bus, placer, flavors)
    service = ServerService(store, images, flavors, config.limits, config.password_policy,
                            kick=dispatcher.kick,
                            ports=PortService(store, NetworkCatalog(config.networks),
                                              limits=config.limits),
                            name_template=config.multi_instance_display_name_template)
    metrics = Metrics()
    metrics.watch_servers(store)
    notifier = EventNotifier()
    store.set_event_listener(notifier.poke)
    webhooks = WebhookDispatcher(store, HttpxWebhookSender(), notifier,
                                 message_id_prefix=f"evt-{config.fleet_host}-")
    # No guest runs here: the console routes find no console (404), as for a guest that
    # has not run yet.
    consoles = Consoles(LocalConsoleFiles(partial(console_socket, config.instances_dir),
                                          partial(console_log, config.instances_dir)))
    api_services = ApiServices(
        images=ImageService(images, store),
        events=EventFeed(store, notifier, slots=StreamSlots(config.event_streams_max,
                                                            config.event_streams_per_token)),
        keypairs=KeypairService(store, CryptographySshKeys(), config.limits), consoles=consoles)
    return Controller(config, store, bus, service, dispatcher, FleetApplier(store, bus),
                      FleetTickets(store, tickets_secret, dispatcher.step_lock), flavors, notifier,
                      webhooks, metrics, api_services, HostAdmin(store, store, flavors))
