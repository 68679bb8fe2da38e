"""The fleet's hosts as an operator sees and steers them (/os-services, /os-hypervisors,
issue 12): each host is one nova-compute service and one hypervisor. Capacity comes from
its last heartbeat, use from the controller's own servers on it (as the scheduler counts
it), up/down from the heartbeats' age; disabling a host stops new placements on it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.core.flavors import FlavorCatalog
from agent.core.placement import HostUsage, usage_by_host
from agent.errors import HostNotFound, InvalidInput
from agent.model.fleet import HostRecord
from agent.model.server import Server
from agent.protocols import HostRegistry, Store

COMPUTE_BINARY = "nova-compute"  # what every host of the fleet is, in Nova's words


def host_number(name: str) -> int:
    """A host's id at 2.1 (an integer there): stable for its name, whatever other hosts
    come and go (Nova's is a database row id)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") & 0x7FFFFFFF


def binary_not_found_message(host: str, binary: str) -> str:
    return f"Could not find binary {binary} on host {host}."  # Nova's HostBinaryNotFound


@dataclass(frozen=True)
class HostView:
    """One host with what the API shows of it."""

    record: HostRecord
    up: bool
    used: HostUsage

    @property
    def id(self) -> int:
        return host_number(self.record.name)

    @property
    def name(self) -> str:
        return self.record.name


class HostAdmin:
    def __init__(self, registry: HostRegistry, store: Store, flavors: FlavorCatalog,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.registry = registry
        self.store = store
        self.flavors = flavors
        self.now = now

    def hosts(self) -> list[HostView]:
        """Every host ever heard of, by name."""
        usage = usage_by_host(self.store.list_servers(), self.flavors)
        now = self.now()
        return [HostView(record=r, up=not r.is_down(now), used=usage.get(r.name, HostUsage()))
                for r in self.registry.list_hosts()]

    def host(self, host_id: int) -> HostView:
        """HostNotFound unless a host has this id."""
        for view in self.hosts():
            if view.id == host_id:
                return view
        raise HostNotFound(f"Hypervisor with ID '{host_id}' could not be found.")

    def matching(self, pattern: str) -> list[HostView]:
        """Hosts whose name contains `pattern` (Nova's hypervisor search: LIKE %pattern%)."""
        return [h for h in self.hosts() if pattern in h.name]

    def servers_on(self, host: str) -> list[Server]:
        """The controller's servers (not deleted) placed on the host, oldest first."""
        return sorted((s for s in self.store.list_servers() if s.host == host),
                      key=lambda s: (s.created_at, str(s.id)))

    async def set_enabled(self, host: str, binary: str, enabled: bool,
                          reason: str | None = None) -> HostRecord:
        """Enable a host, or disable it (no new placement on it) with a reason or none.
        Only nova-compute services can be changed (400), of a known host (404)."""
        if binary != COMPUTE_BINARY:
            raise InvalidInput(f"Updating a {binary[:255]} service is not supported. Only "
                               f"{COMPUTE_BINARY} services can be updated.", "binary")
        if self.registry.get_host(host) is None:
            raise HostNotFound(binary_not_found_message(host[:255], binary))
        return await self.registry.set_host_enabled(host, enabled, None if enabled else reason)
