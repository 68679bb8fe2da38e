"""Flavors come from configuration; this is their catalog."""

from __future__ import annotations

from agent.errors import FlavorNotFound
from agent.model.flavor import DEFAULT_FLAVORS, Flavor


class FlavorCatalog:
    def __init__(self, flavors: tuple[Flavor, ...] | list[Flavor] = DEFAULT_FLAVORS) -> None:
        self._by_id = {f.id: f for f in flavors}

    def list(self) -> list[Flavor]:
        return list(self._by_id.values())

    def get(self, flavor_id: str) -> Flavor:
        try:
            return self._by_id[flavor_id]
        except KeyError:
            raise FlavorNotFound(f"Flavor {flavor_id} could not be found.") from None
