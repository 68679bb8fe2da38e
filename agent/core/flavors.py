"""Flavors come from configuration; this is their catalog."""

from __future__ import annotations

from agent.errors import FlavorNotFound
from agent.model.flavor import DEFAULT_FLAVORS, Flavor


class FlavorCatalog:
    def __init__(self, flavors: tuple[Flavor, ...] | list[Flavor] = DEFAULT_FLAVORS) -> None:
        self._by_id = {f.id: f for f in flavors}

    def list(self, *, min_ram: int | None = None, min_disk: int | None = None) -> list[Flavor]:
        """All flavors, or those with at least `min_ram` MiB and `min_disk` GiB (Nova's
        minRam/minDisk filters)."""
        return [f for f in self._by_id.values()
                if (min_ram is None or f.ram >= min_ram) and (min_disk is None or f.disk >= min_disk)]

    def get(self, flavor_id: str) -> Flavor:
        try:
            return self._by_id[flavor_id]
        except KeyError:
            raise FlavorNotFound(f"Flavor {flavor_id} could not be found.") from None
