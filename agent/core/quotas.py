"""What a project uses of its quota (servers, cores, RAM): counted in one place for the
create and resize checks, /limits and /os-quota-sets."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from agent.core.flavors import FlavorCatalog
from agent.model.requests import Limits
from agent.protocols import Store


@dataclass(frozen=True)
class Usage:
    instances: int
    cores: int
    ram: int  # MiB
    server_groups: int = 0


class Quotas:
    """The configured limits (the same for every project) and a project's usage."""

    def __init__(self, store: Store, flavors: FlavorCatalog, limits: Limits) -> None:
        self.store = store
        self.flavors = flavors
        self.limits = limits

    def usage(self, project_id: str, *, without: UUID | None = None) -> Usage:
        """The project's servers not deleted (but `without`, e.g. the one being resized);
        a server whose flavor is gone from the config counts as an instance only."""
        by_id = {f.id: f for f in self.flavors.list()}
        live = [s for s in self.store.list_servers(project_id) if s.id != without]
        sized = [by_id[s.flavor_id] for s in live if s.flavor_id in by_id]
        return Usage(instances=len(live), cores=sum(f.vcpus for f in sized),
                     ram=sum(f.ram for f in sized),
                     server_groups=len(self.store.list_server_groups(project_id)))
