"""The host's image catalog as the API serves it: read, and removed by an admin unless a
server was built from the image."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from agent.core.image_import import delete_image
from agent.errors import ImageNotFound
from agent.model.image import Image
from agent.model.server import Server
from agent.protocols import ImageWriter, Store


class ImageService:
    def __init__(self, catalog: ImageWriter, store: Store) -> None:
        self.catalog = catalog
        self.store = store

    def list(self) -> list[Image]:
        return self.catalog.list()

    def get(self, image_id: str) -> Image:
        """By uuid only (not by name, as the catalog also allows): Nova's GET /images/{id}."""
        try:
            return self.catalog.get(str(UUID(image_id)))
        except (ValueError, ImageNotFound):
            raise ImageNotFound("Image not found.") from None

    def delete(self, image_id: str) -> Image:
        """Conflict while a server (of any project, deleted ones aside) uses it."""
        image = self.get(image_id)
        users = [str(s.id) for s in self.store.list_servers() if s.image_id == image.uuid]
        return delete_image(self.catalog, users, str(image.uuid))


def images_to_warm(images: list[Image], servers: list[Server], count: int) -> list[Image]:
    """The `count` images to warm the appliance for at start: the images built from last
    (those never built before them, in catalog order), the most recent last. The warm-up
    mounts the root of the last one's spare ahead, so a first build after a restart from
    the image built last skips that mount."""
    last_built: dict[UUID, datetime] = {}
    for server in servers:
        seen = last_built.get(server.image_id)
        if seen is None or server.created_at > seen:
            last_built[server.image_id] = server.created_at
    never = [i for i in images if i.uuid not in last_built]
    built = sorted((i for i in images if i.uuid in last_built), key=lambda i: last_built[i.uuid])
    return (never + built)[-count:] if count > 0 else []
