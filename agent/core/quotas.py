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
        counts = self.store.flavor_counts(project_id, without=without)  # in SQL: no rows read
        sized = [(by_id[f], n) for f, n in counts.items() if f in by_id]
        return Usage(instances=sum(counts.values()), cores=sum(f.vcpus * n for f, n in sized),
                     ram=sum(f.ram * n for f, n in sized),
                     server_groups=len(self.store.list_server_groups(project_id)))
