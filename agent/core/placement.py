"""Placement (issue 12): the controller's scheduler fed with what it knows. Hosts and their
capacity come from the host registry (the last heartbeat of each, whether it is down,
whether /os-services disabled it); what is used on each comes from the controller's own
store: its servers (not deleted) placed on the host, counted by their flavors. So a burst
of creates spreads over the hosts before any heartbeat reports the first of them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import structlog

from agent.core.flavors import FlavorCatalog
from agent.core.scheduler import HostState, NoFittingHost, PlacementRequest, select_host
from agent.errors import ImageNotFound
from agent.model.flavor import Flavor
from agent.model.fleet import HostRecord
from agent.model.scheduling import SchedulerSettings, ServerGroup
from agent.model.server import Server
from agent.protocols import HostRegistry, ImageCatalog, Store

log = structlog.get_logger("agent.scheduler")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class HostUsage:
    """What the controller's servers on one host take (their flavors)."""

    vcpus: int = 0
    ram_mb: int = 0
    disk_gb: int = 0
    servers: int = 0
    busy: int = 0  # servers with a task under way (Nova's current_workload)


def usage_by_host(servers: Iterable[Server], flavors: FlavorCatalog) -> dict[str, HostUsage]:
    """Servers not deleted and placed (host set), summed per host. A server whose flavor
    is gone from the config counts as a server only."""
    by_id = {f.id: f for f in flavors.list()}
    totals: dict[str, list[int]] = {}
    for server in servers:
        if not server.host or server.deleted_at is not None:
            continue
        t = totals.setdefault(server.host, [0, 0, 0, 0, 0])
        flavor = by_id.get(server.flavor_id)
        if flavor is not None:
            t[0] += flavor.vcpus
            t[1] += flavor.ram
            t[2] += flavor.disk
        t[3] += 1
        t[4] += server.task_state is not None
    return {host: HostUsage(*t) for host, t in totals.items()}


def group_of(server: Server) -> str | None:
    """The server group id the server was created in (its hint), or None."""
    group = server.scheduler_hints.get("group")
    return group if isinstance(group, str) else None


class Placer:
    """Chooses the host of a new server: `place(server, flavor) -> host name`, or
    NoValidHost (Nova's fault text). Reads the registry and the store fresh each call:
    the caller records the choice (Server.host) before it places the next server."""

    def __init__(self, hosts: HostRegistry, store: Store, flavors: FlavorCatalog,
                 settings: SchedulerSettings | None = None, *, images: ImageCatalog | None = None,
                 now: Callable[[], datetime] = utcnow) -> None:
        self.hosts = hosts
        self.store = store
        self.flavors = flavors
        self.settings = settings or SchedulerSettings()
        self.images = images
        self.now = now

    def place(self, server: Server, flavor: Flavor) -> str:
        placed = [s for s in self.store.list_servers() if s.host and s.id != server.id]
        usage = usage_by_host(placed, self.flavors)
        group = self._group(server)
        members_on = Counter(s.host for s in placed
                             if group is not None and group_of(s) == str(group.id))
        project_on = Counter(s.host for s in placed if s.project_id == server.project_id)
        now = self.now()
        states = [host_state(record, usage.get(record.name, HostUsage()), now,
                             project_servers=project_on[record.name],
                             group_members=members_on[record.name])
                  for record in self.hosts.list_hosts()]
        image_keys, min_disk = self._image(server)
        request = PlacementRequest(vcpus=flavor.vcpus, ram_mb=flavor.ram,
                                   disk_gb=max(flavor.disk, min_disk), image_keys=image_keys,
                                   group_policy=group.policy if group is not None else None)
        try:
            chosen = select_host(states, request, self.settings)
        except NoFittingHost as e:
            # As Nova logs it: which filter left how many hosts; the user sees the fault only.
            log.warning("scheduler.no_valid_host", server_id=str(server.id),
                        hosts=len(states), filter_results=e.describe())
            raise
        log.info("scheduler.placed", server_id=str(server.id), host=chosen.name,
                 project_servers_there=chosen.project_servers)
        return chosen.name

    def _group(self, server: Server) -> ServerGroup | None:
        group_id = group_of(server)
        if group_id is None:
            return None
        try:
            group = self.store.get_server_group(UUID(group_id))
        except ValueError:
            group = None
        if group is None:  # deleted since the create was accepted: placed as if in none
            log.warning("scheduler.group_gone", server_id=str(server.id), group=group_id[:64])
        return group

    def _image(self, server: Server) -> tuple[frozenset[str], int]:
        """The keys a host's image list may name the server's image by (its id, and its
        name where the catalog knows it), and its min_disk."""
        keys = {str(server.image_id)}
        if self.images is None:
            return frozenset(keys), 0
        try:
            image = self.images.get(str(server.image_id))
        except ImageNotFound:
            return frozenset(keys), 0
        return frozenset(keys | {image.name}), image.min_disk


def host_state(record: HostRecord, used: HostUsage, now: datetime, *, project_servers: int = 0,
               group_members: int = 0) -> HostState:
    """The scheduler's view of a host: capacity from its last heartbeat (none: nothing,
    and down), use from the controller's servers on it (the disk: the larger of that and
    what the host reports used, which includes its image cache)."""
    beat = record.heartbeat
    return HostState(
        name=record.name, up=not record.is_down(now), enabled=record.enabled,
        images=frozenset(beat.images) if beat else frozenset(),
        vcpus=beat.vcpus if beat else 0, ram_mb=beat.ram_mb if beat else 0,
        disk_gb=beat.disk_total_gb if beat else 0,
        vcpus_used=used.vcpus, ram_mb_used=used.ram_mb,
        disk_gb_used=max(used.disk_gb, beat.disk_used_gb if beat else 0),
        project_servers=project_servers, group_members=group_members)
