"""The simplest Placer (issue 12), until the scheduler (core/placement.py) replaces it:
the first host by name that is up, enabled and has the server's image."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

from agent.errors import ImageNotFound, NoValidHost
from agent.model.flavor import Flavor
from agent.model.server import Server
from agent.protocols import HostRegistry, ImageCatalog


class FirstFitPlacer:
    def __init__(self, hosts: HostRegistry, images: ImageCatalog,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.hosts = hosts
        self.images = images
        self.now = now

    def place(self, server: Server, flavor: Flavor) -> str:
        """A host's name; NoValidHost (Nova's text) when none is up, enabled, with the image.
        A heartbeat names its images by id or by name: either matches."""
        wanted = {str(server.image_id)}
        # An image gone from the catalog since: its id may still be on a host.
        with contextlib.suppress(ImageNotFound):
            wanted.add(self.images.get(str(server.image_id)).name)
        now = self.now()
        for host in self.hosts.list_hosts():  # by name
            beat = host.heartbeat
            if host.enabled and beat is not None and not host.is_down(now) \
                    and wanted & set(beat.images):
                return host.name
        raise NoValidHost()
