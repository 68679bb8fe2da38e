"""Flavors come from configuration; this is their catalog."""

from __future__ import annotations

from agent.errors import FlavorNotFound
from agent.model.flavor import Flavor

DEFAULT_FLAVORS = (
    Flavor(id="1", name="m1.tiny", vcpus=1, ram=256, disk=1),
    Flavor(id="2", name="m1.small", vcpus=1, ram=512, disk=2),
    Flavor(id="3", name="m1.medium", vcpus=2, ram=1024, disk=4),
)


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
